/* qlun — the management commands that describe LUNs: query-luns and
 * query-stats. */
#include <errno.h>

#include "block/driver.h"
#include "handler/ctl-internal.h"
#include "handler/registry.h"

static void add_uint(JsonBuilder *b, const char *name, uint64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, (gint64)v);
}

static void add_bool(JsonBuilder *b, const char *name, bool v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_boolean_value(b, v);
}

static void add_string(JsonBuilder *b, const char *name, const char *v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, v);
}

/* A node and, nested under "children", the nodes below it by their edge
 * name (file, backing), as QEMU's query-named-block-nodes would show them
 * as a tree. */
void ctl_describe_node(JsonBuilder *b, struct image *img)
{
    unsigned state = image_state(img);
    int64_t allocated = image_allocated_bytes(img);

    json_builder_begin_object(b);
    add_string(b, "driver", img->drv ? img->drv->name : img->info.format);
    add_string(b, "filename", img->filename ? img->filename : "");
    int64_t size = image_current_size(img);
    add_uint(b, "virtual-size", size >= 0 ? (uint64_t)size : img->size);
    add_uint(b, "cluster-size", img->info.cluster_size);
    /* null when the host cannot tell (not an error of the command) */
    json_builder_set_member_name(b, "allocated");
    if (allocated >= 0)
        json_builder_add_int_value(b, allocated);
    else
        json_builder_add_null_value(b);
    json_builder_set_member_name(b, "state");
    json_builder_begin_object(b);
    add_bool(b, "corrupt", state & IMAGE_STATE_CORRUPT);
    add_bool(b, "writes-lost", state & IMAGE_STATE_WRITES_LOST);
    add_bool(b, "read-only", img->info.read_only);
    json_builder_end_object(b);
    ctl_describe_throttle(b, img);
    json_builder_set_member_name(b, "children");
    json_builder_begin_object(b);
    if (img->file) {
        json_builder_set_member_name(b, "file");
        ctl_describe_node(b, img->file);
    }
    if (img->backing) {
        json_builder_set_member_name(b, "backing");
        ctl_describe_node(b, img->backing);
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
}

static void describe_lun(JsonBuilder *b, struct qlun_dev *d)
{
    struct scsi_lun_info li;
    scsi_lun_get_info(d->lun, &li);

    json_builder_begin_object(b);
    add_string(b, "serial", d->serial);
    add_string(b, "name", d->name);
    add_string(b, "cfgstring", d->cfgstring);
    add_uint(b, "size", li.num_blocks * li.block_size);
    add_uint(b, "block-size", li.block_size);
    add_bool(b, "read-only", li.read_only);
    /* The graph changes with a snapshot (under control_lock). */
    pthread_mutex_lock(&d->control_lock);
    json_builder_set_member_name(b, "graph");
    ctl_describe_node(b, qlun_dev_served(d));
    pthread_mutex_unlock(&d->control_lock);
    json_builder_end_object(b);
}

/* The LUN args name, or every LUN; each referenced.  false with e set
 * if the one named is not served. */
static bool get_luns(JsonObject *args, struct qlun_dev ***luns, size_t *n,
                     struct ctl_error *e)
{
    if (!json_object_has_member(args, "lun")) {
        *n = lun_registry_get_all(luns);
        return true;
    }
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return false;
    *luns = g_new0(struct qlun_dev *, 1);
    (*luns)[0] = d;
    *n = 1;
    return true;
}

/* An array of describe(LUN) for the LUN args name, or for every LUN. */
static JsonNode *describe_each(JsonObject *args, struct ctl_error *e,
                               void (*describe)(JsonBuilder *,
                                                struct qlun_dev *))
{
    struct qlun_dev **luns;
    size_t n;
    if (!get_luns(args, &luns, &n, e))
        return NULL;
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++) {
        describe(b, luns[i]);
        lun_registry_put(luns[i]);
    }
    g_free(luns);
    json_builder_end_array(b);
    return json_builder_get_root(b);
}

JsonNode *ctl_query_luns(JsonObject *args, struct ctl_error *e)
{
    return describe_each(args, e, describe_lun);
}

/* scsi_lun_stats_json()'s object: what /run/qlun/<serial>.json holds. */
static JsonNode *stats_object(struct qlun_dev *d)
{
    char json[16384];
    int n = scsi_lun_stats_json(d->lun, json, sizeof(json));
    g_autoptr(JsonParser) p = json_parser_new();
    if (n < 0 || (size_t)n >= sizeof(json) ||
        !json_parser_load_from_data(p, json, n, NULL))
        return json_node_init_null(json_node_alloc());
    return json_node_copy(json_parser_get_root(p));
}

static void describe_stats(JsonBuilder *b, struct qlun_dev *d)
{
    struct scsi_lun_info li;
    scsi_lun_get_info(d->lun, &li);
    pthread_mutex_lock(&d->control_lock);
    int64_t allocated = image_allocated_bytes(d->img);
    pthread_mutex_unlock(&d->control_lock);

    json_builder_begin_object(b);
    add_string(b, "serial", d->serial);
    add_string(b, "name", d->name);
    json_builder_set_member_name(b, "stats");
    json_builder_add_value(b, stats_object(d));
    json_builder_set_member_name(b, "soft-threshold");
    json_builder_begin_object(b);
    add_uint(b, "bytes", li.soft_threshold);
    add_bool(b, "reached", li.soft_threshold_reached);
    json_builder_set_member_name(b, "allocated");
    if (allocated >= 0)
        json_builder_add_int_value(b, allocated);
    else
        json_builder_add_null_value(b);
    json_builder_end_object(b);
    json_builder_end_object(b);
}

JsonNode *ctl_query_stats(JsonObject *args, struct ctl_error *e)
{
    return describe_each(args, e, describe_stats);
}
