/* qlun — the management socket and the throttle filter: the command
 * lun-set-throttle, and what query-luns shows of a throttle node. */
#include <errno.h>
#include <string.h>

#include "block/driver.h"
#include "block/throttle.h"
#include "handler/ctl-internal.h"
#include "handler/registry.h"

/* The arguments, each with where its value goes. */
static uint64_t *limit_field(struct throttle_limits *l, size_t i)
{
    uint64_t *kinds[] = { l->iops, l->bps, l->iops_max, l->bps_max };
    return &kinds[i / THROTTLE_DIRS][i % THROTTLE_DIRS];
}

static const char *const limit_args[4 * THROTTLE_DIRS] = {
    "iops-total", "iops-read", "iops-write",
    "bps-total", "bps-read", "bps-write",
    "iops-total-max", "iops-read-max", "iops-write-max",
    "bps-total-max", "bps-read-max", "bps-write-max",
};

/* The limits the arguments give; false if they give none (and no burst
 * length): with a group, the LUN then joins it as it is. */
static bool limits_from_args(JsonObject *args, struct throttle_limits *l)
{
    bool any = false;
    memset(l, 0, sizeof(*l));
    for (size_t i = 0; i < G_N_ELEMENTS(limit_args); i++) {
        if (!json_object_has_member(args, limit_args[i]))
            continue;
        *limit_field(l, i) = (uint64_t)json_object_get_int_member(
            args, limit_args[i]);
        any = true;
    }
    if (json_object_has_member(args, "burst-seconds")) {
        gint64 s = json_object_get_int_member(args, "burst-seconds");
        l->burst_seconds = s > THROTTLE_BURST_SECONDS_MAX
            ? THROTTLE_BURST_SECONDS_MAX + 1 : (unsigned)s;
        any = true;
    }
    return any;
}

JsonNode *ctl_lun_set_throttle(JsonObject *args, struct ctl_error *e)
{
    struct throttle_limits l;
    bool have_limits = limits_from_args(args, &l);
    const char *group = json_object_get_string_member_with_default(
        args, "group", NULL);
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    char err[512] = "";
    bool persisted;
    /* Only a group named without limits keeps the group's. */
    int ret = qlun_dev_set_throttle(d, have_limits || !group ? &l : NULL,
                                    group, &persisted, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0) {
        ctl_set_errno_error(e, ret, err);
        return NULL;
    }
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "persisted");
    json_builder_add_boolean_value(b, persisted);
    if (!persisted) {
        json_builder_set_member_name(b, "warning");
        json_builder_add_string_value(b, err);
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static void add_uint(JsonBuilder *b, const char *name, uint64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, (gint64)v);
}

void ctl_describe_throttle(JsonBuilder *b, struct image *img)
{
    if (img->drv != &throttle_driver)
        return;
    struct throttle_limits l;
    struct throttle_stats s;
    char group[THROTTLE_GROUP_NAME_MAX + 1];
    throttle_node_get(img, &l, group, sizeof(group));
    throttle_node_stats(img, &s);
    json_builder_set_member_name(b, "throttle");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "group");
    if (group[0])
        json_builder_add_string_value(b, group);
    else
        json_builder_add_null_value(b);
    for (size_t i = 0; i < G_N_ELEMENTS(limit_args); i++)
        add_uint(b, limit_args[i], *limit_field(&l, i));
    add_uint(b, "burst-seconds", l.burst_seconds ? l.burst_seconds : 1);
    add_uint(b, "requests", s.requests);
    add_uint(b, "delayed", s.delayed);
    add_uint(b, "wait-us", s.wait_ns / 1000);
    json_builder_end_object(b);
}
