/* qlun — asynchronous events on the management socket.
 *
 * Events about a LUN's state (corrupt, writes lost, soft threshold) come
 * from a poll on the server's thread, once a second, rather than from the
 * I/O paths: the bits they report are sticky (set once, never cleared
 * while the LUN is open), so a poll cannot miss one, and the I/O paths
 * stay free of anything the socket does. */
#include "handler/ctl-internal.h"
#include "handler/registry.h"

#define SEEN_CORRUPT     (1u << 0)
#define SEEN_WRITES_LOST (1u << 1)
#define SEEN_THRESHOLD   (1u << 2)

/* serial -> the SEEN_* bits reported; only the poll's thread uses it. */
static GHashTable *seen;

char *ctl_event_line(const char *name, JsonNode *data)
{
    gint64 now = g_get_real_time();
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "event");
    json_builder_add_string_value(b, name);
    json_builder_set_member_name(b, "data");
    if (data)
        json_builder_add_value(b, data);
    else
        json_builder_add_null_value(b);
    /* as QMP stamps its events */
    json_builder_set_member_name(b, "timestamp");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "seconds");
    json_builder_add_int_value(b, now / G_USEC_PER_SEC);
    json_builder_set_member_name(b, "microseconds");
    json_builder_add_int_value(b, now % G_USEC_PER_SEC);
    json_builder_end_object(b);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    return json_to_string(root, FALSE);
}

void ctl_emit_event(const char *name, JsonNode *data)
{
    ctl_server_broadcast(ctl_event_line(name, data));
}

static JsonNode *lun_event_data(struct qlun_dev *d)
{
    struct scsi_lun_info li;
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "lun");
    json_builder_add_string_value(b, d->serial);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, d->name);
    pthread_mutex_lock(&d->control_lock);
    json_builder_set_member_name(b, "filename");
    json_builder_add_string_value(b, d->img->filename);
    int64_t allocated = image_allocated_bytes(d->img);
    pthread_mutex_unlock(&d->control_lock);
    scsi_lun_get_info(d->lun, &li);
    if (li.soft_threshold) {
        json_builder_set_member_name(b, "threshold");
        json_builder_add_int_value(b, (gint64)li.soft_threshold);
        json_builder_set_member_name(b, "allocated");
        json_builder_add_int_value(b, allocated);
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static unsigned lun_seen_bits(struct qlun_dev *d)
{
    struct scsi_lun_info li;
    pthread_mutex_lock(&d->control_lock);
    unsigned state = image_state(d->img), bits = 0;
    pthread_mutex_unlock(&d->control_lock);
    scsi_lun_get_info(d->lun, &li);
    if (state & IMAGE_STATE_CORRUPT)
        bits |= SEEN_CORRUPT;
    if (state & IMAGE_STATE_WRITES_LOST)
        bits |= SEEN_WRITES_LOST;
    if (li.soft_threshold_reached)
        bits |= SEEN_THRESHOLD;
    return bits;
}

static void emit_new_bits(struct qlun_dev *d, unsigned fresh)
{
    static const struct { unsigned bit; const char *event; } names[] = {
        { SEEN_CORRUPT, "LUN_CORRUPT" },
        { SEEN_WRITES_LOST, "LUN_WRITES_LOST" },
        { SEEN_THRESHOLD, "SOFT_THRESHOLD_REACHED" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
        if (fresh & names[i].bit)
            ctl_emit_event(names[i].event, lun_event_data(d));
}

void ctl_events_poll(void)
{
    struct qlun_dev **luns;
    size_t n = lun_registry_get_all(&luns);
    /* A fresh table each time: LUNs closed since drop out, and one opened
     * again under the same serial reports its state anew. */
    GHashTable *now = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            NULL);
    for (size_t i = 0; i < n; i++) {
        unsigned bits = lun_seen_bits(luns[i]);
        unsigned before = seen ? GPOINTER_TO_UINT(g_hash_table_lookup(
                                     seen, luns[i]->serial)) : 0;
        emit_new_bits(luns[i], bits & ~before);
        g_hash_table_insert(now, g_strdup(luns[i]->serial),
                            GUINT_TO_POINTER(bits | before));
        lun_registry_put(luns[i]);
    }
    g_free(luns);
    if (seen)
        g_hash_table_unref(seen);
    seen = now;
}

void ctl_events_reset(void)
{
    if (seen)
        g_hash_table_unref(seen);
    seen = NULL;
}
