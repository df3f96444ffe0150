/* qlun — the LUN's throttle: the filter in its QLUN_FILTER_THROTTLE slot
 * (block/throttle.h), set up at open from the cfgstring and changed live.
 *
 * Limits change without a drain (the group swaps them under its lock and
 * waiting requests look again at once).  Putting the filter in, taking it
 * out and moving it to another group change what commands follow, so
 * they happen under the drain; before such a drain the filter's waiting
 * requests are let through (throttle_node_release), or the drain would
 * last as long as the queue takes to pass at the old rate.
 */
#include "device.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/driver.h"
#include "block/throttle.h"

static const char *name_or_none(const char *group)
{
    return group && group[0] ? group : NULL;
}

/* Join the group and take the limits (NULL: the group's as they are). */
static void configure(struct image *node, const struct throttle_limits *l,
                      const char *group)
{
    throttle_node_join(node, name_or_none(group));
    if (l)
        throttle_node_set_limits(node, l);
}

int qlun_dev_throttle_open(struct qlun_dev *d, char *err, size_t errlen)
{
    const struct qlun_config *c = &d->cfg;
    if (!throttle_limits_any(&c->throttle) && !c->throttle_group[0])
        return 0;
    struct image *node;
    int ret = qlun_dev_filter_insert(d, QLUN_FILTER_THROTTLE,
                                     &throttle_driver, &node, err, errlen);
    if (ret < 0)
        return ret;
    /* A LUN that names a group but no limit joins the group as it is. */
    bool limits = throttle_limits_any(&c->throttle) || !c->throttle_group[0];
    configure(node, limits ? &c->throttle : NULL, c->throttle_group);
    return 0;
}

/* Under control_lock: change the graph and the limits. */
static int set_locked(struct qlun_dev *d, const struct throttle_limits *l,
                      const char *group, char *err, size_t errlen)
{
    struct image *node = d->filters[QLUN_FILTER_THROTTLE];
    bool want = (l && throttle_limits_any(l)) || name_or_none(group);
    int ret = 0;
    if (!node && want) {
        scsi_lun_drain_begin(d->lun);
        ret = qlun_dev_filter_insert(d, QLUN_FILTER_THROTTLE,
                                     &throttle_driver, &node, err, errlen);
        if (ret == 0)
            configure(node, l, group);
        scsi_lun_drain_end(d->lun);
    } else if (node && !want) {
        throttle_node_release(node, true);
        scsi_lun_drain_begin(d->lun);
        qlun_dev_filter_remove(d, QLUN_FILTER_THROTTLE);
        scsi_lun_drain_end(d->lun);
    } else if (node) {
        char now[THROTTLE_GROUP_NAME_MAX + 1];
        struct throttle_limits old;
        throttle_node_get(node, &old, now, sizeof(now));
        if (strcmp(now, group ? group : "") != 0) {
            throttle_node_release(node, true);
            scsi_lun_drain_begin(d->lun);
            throttle_node_join(node, name_or_none(group));
            throttle_node_release(node, false);
            scsi_lun_drain_end(d->lun);
        }
        if (l)
            throttle_node_set_limits(node, l);
    }
    return ret;
}

/* Under control_lock: the cfgstring with the throttle as it is now. */
static int compose_cfgstring(struct qlun_dev *d, char *out, size_t outlen)
{
    struct image *node = d->filters[QLUN_FILTER_THROTTLE];
    struct throttle_limits l = { 0 };
    char group[THROTTLE_GROUP_NAME_MAX + 1] = "";
    if (node)
        throttle_node_get(node, &l, group, sizeof(group));
    return qlun_config_with_throttle(d->cfgstring, &l, group, out, outlen);
}

int qlun_dev_set_throttle(struct qlun_dev *d, const struct throttle_limits *l,
                          const char *group, bool *persisted, char *err,
                          size_t errlen)
{
    *persisted = false;
    if (l && throttle_limits_check(l, err, errlen) < 0)
        return -EINVAL;
    if (group && group[0] && !throttle_group_name_ok(group)) {
        snprintf(err, errlen, "bad throttle group name '%s' (1 to %d of "
                 "A-Z a-z 0-9 _ - .)", group, THROTTLE_GROUP_NAME_MAX);
        return -EINVAL;
    }
    char cfgstring[QLUN_CFGSTRING_MAX + 1];
    pthread_mutex_lock(&d->control_lock);
    int ret = set_locked(d, l, group, err, errlen);
    int cret = ret < 0 ? ret : compose_cfgstring(d, cfgstring,
                                                 sizeof(cfgstring));
    if (cret == 0)
        snprintf(d->cfgstring, sizeof(d->cfgstring), "%s", cfgstring);
    pthread_mutex_unlock(&d->control_lock);
    if (ret < 0)
        return ret;
    if (cret < 0) {
        /* The limits are in force; only a restart would lose them. */
        snprintf(err, errlen, "the new limits are in force but not kept "
                 "for a restart: the cfgstring would be longer than LIO "
                 "keeps (%d bytes)", QLUN_CFGSTRING_MAX);
        return 0;
    }
    if (!d->persist) {
        *persisted = true;   /* nothing to persist to (tests) */
        return 0;
    }
    /* Outside control_lock: the kernel hands the write to our reconfig. */
    char why[256] = "";
    if (d->persist(d->persist_opaque, "dev_config", cfgstring, why,
                   sizeof(why)) < 0) {
        snprintf(err, errlen, "the new limits are in force but not kept "
                 "for a restart: %s", why);
        return 0;
    }
    *persisted = true;
    return 0;
}
