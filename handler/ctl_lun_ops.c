/* qlun — the management commands that change a LUN: resize and
 * snapshots.  Arguments arrive checked by type (ctl_commands.c); here the
 * values are checked, then handler/device.h's operation runs with the LUN
 * referenced, and its errno and line become the error reply. */
#include <errno.h>
#include <string.h>

#include "handler/ctl-internal.h"
#include "handler/registry.h"

JsonNode *ctl_lun_resize(JsonObject *args, struct ctl_error *e)
{
    uint64_t size = (uint64_t)json_object_get_int_member(args, "size");
    bool force = json_object_get_boolean_member_with_default(args, "force",
                                                             false);
    if (size == 0) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER,
                      "lun-resize: 'size' must be > 0");
        return NULL;
    }
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    char err[512] = "";
    int ret = qlun_dev_resize(d, size, force, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0)
        ctl_set_errno_error(e, ret, err);
    return NULL;
}

JsonNode *ctl_snapshot_create(JsonObject *args, struct ctl_error *e)
{
    const char *overlay = json_object_get_string_member(args, "overlay");
    gint64 cs = json_object_get_int_member_with_default(args, "cluster-size",
                                                        0);
    /* qcow2 clusters: a power of two from 512 bytes to 2 MiB */
    if (cs && (cs < 512 || cs > (2 << 20) || (cs & (cs - 1)))) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "snapshot-create: "
                      "'cluster-size' must be a power of two from 512 to "
                      "2097152");
        return NULL;
    }
    if (overlay[0] != '/') {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "snapshot-create: "
                      "'overlay' must be an absolute path");
        return NULL;
    }
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    char err[512] = "";
    int ret = qlun_dev_snapshot_create(d, overlay, (uint32_t)cs, err,
                                       sizeof(err));
    uint64_t drain_us = d->last_drain_ns / 1000;
    lun_registry_put(d);
    if (ret < 0) {
        ctl_set_errno_error(e, ret, err);
        return NULL;
    }
    /* How long the LUN's commands were held: what a snapshot costs the
     * initiator. */
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "overlay");
    json_builder_add_string_value(b, overlay);
    json_builder_set_member_name(b, "drain-us");
    json_builder_add_int_value(b, (gint64)drain_us);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

/* qcow2 limits a snapshot's name to 65535 bytes; we keep it to what
 * struct image_snapshot_info holds. */
static bool check_snapshot_name(const char *cmd, const char *name,
                                struct ctl_error *e)
{
    if (strlen(name) >= sizeof(((struct image_snapshot_info *)0)->name)) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "%s: 'name' is longer "
                      "than %zu bytes", cmd,
                      sizeof(((struct image_snapshot_info *)0)->name) - 1);
        return false;
    }
    return true;
}

static JsonNode *snapshot_internal(JsonObject *args, bool create,
                                   struct ctl_error *e)
{
    const char *name = json_object_get_string_member(args, "name");
    if (!check_snapshot_name(create ? "snapshot-internal-create"
                                    : "snapshot-internal-delete", name, e))
        return NULL;
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    char err[512] = "";
    int ret = qlun_dev_snapshot_internal(d, create, name, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0)
        ctl_set_errno_error(e, ret, err);
    return NULL;
}

JsonNode *ctl_snapshot_internal_create(JsonObject *args, struct ctl_error *e)
{
    return snapshot_internal(args, true, e);
}

JsonNode *ctl_snapshot_internal_delete(JsonObject *args, struct ctl_error *e)
{
    return snapshot_internal(args, false, e);
}

static void add_snapshot(JsonBuilder *b, const struct image_snapshot_info *s)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, s->id);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, s->name);
    json_builder_set_member_name(b, "date-sec");
    json_builder_add_int_value(b, (gint64)s->date_sec);
    json_builder_set_member_name(b, "date-nsec");
    json_builder_add_int_value(b, s->date_nsec);
    json_builder_set_member_name(b, "vm-clock-nsec");
    json_builder_add_int_value(b, (gint64)s->vm_clock_nsec);
    json_builder_set_member_name(b, "vm-state-size");
    json_builder_add_int_value(b, (gint64)s->vm_state_size);
    json_builder_set_member_name(b, "disk-size");
    json_builder_add_int_value(b, (gint64)s->disk_size);
    json_builder_end_object(b);
}

JsonNode *ctl_snapshot_internal_list(JsonObject *args, struct ctl_error *e)
{
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    struct image_snapshot_info *snaps = NULL;
    size_t count = 0;
    char err[512] = "";
    int ret = qlun_dev_snapshot_list(d, &snaps, &count, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0) {
        ctl_set_errno_error(e, ret, err);
        return NULL;
    }
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < count; i++)
        add_snapshot(b, &snaps[i]);
    json_builder_end_array(b);
    free(snaps);
    return json_builder_get_root(b);
}
