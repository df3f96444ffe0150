/* qlun — the throttle filter (block/throttle.h): a node that makes each
 * request wait in its group (block/throttle_group.c) until admitted, then
 * passes it to its child.  It keeps no lock across the child's call: a
 * request admitted runs as if the filter were not there. */
#include "block/throttle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "block/driver.h"
#include "block/image.h"
#include "block/throttle_group.h"
#include "common/iov.h"

struct throttle_node {
    struct image img;
    /* Changed only with no request in flight (throttle_node_join). */
    struct throttle_group *group;
    _Atomic bool release;
    _Atomic uint64_t requests, delayed, wait_ns;
};

static struct throttle_node *tn(struct image *img)
{
    return (struct throttle_node *)img;
}

bool throttle_limits_any(const struct throttle_limits *l)
{
    for (int d = 0; d < THROTTLE_DIRS; d++)
        if (l->iops[d] || l->bps[d])
            return true;
    return false;
}

static const char *const dir_names[THROTTLE_DIRS] = { "total", "read",
                                                      "write" };

/* One kind of limit (iops or bps) and its burst rates. */
static int check_kind(const char *kind, const uint64_t *avg,
                      const uint64_t *max, char *err, size_t errlen)
{
    for (int d = 0; d < THROTTLE_DIRS; d++) {
        if (avg[d] > THROTTLE_VALUE_MAX || max[d] > THROTTLE_VALUE_MAX) {
            snprintf(err, errlen, "%s %s limit above %llu", dir_names[d],
                     kind, THROTTLE_VALUE_MAX);
            return -EINVAL;
        }
        if (max[d] && !avg[d]) {
            snprintf(err, errlen, "a %s %s burst needs a %s %s limit",
                     dir_names[d], kind, dir_names[d], kind);
            return -EINVAL;
        }
        if (max[d] && max[d] < avg[d]) {
            snprintf(err, errlen, "the %s %s burst (%" PRIu64 ") is below "
                     "its limit (%" PRIu64 ")", dir_names[d], kind, max[d],
                     avg[d]);
            return -EINVAL;
        }
    }
    /* As QEMU: a total and a per-direction limit of one kind contradict
     * each other about which one the operator meant. */
    if (avg[THROTTLE_TOTAL] && (avg[THROTTLE_READ] || avg[THROTTLE_WRITE])) {
        snprintf(err, errlen, "a total %s limit cannot be combined with a "
                 "read or write %s limit", kind, kind);
        return -EINVAL;
    }
    return 0;
}

int throttle_limits_check(const struct throttle_limits *l, char *err,
                          size_t errlen)
{
    int ret = check_kind("iops", l->iops, l->iops_max, err, errlen);
    if (ret == 0)
        ret = check_kind("bps", l->bps, l->bps_max, err, errlen);
    if (ret < 0)
        return ret;
    if (l->burst_seconds > THROTTLE_BURST_SECONDS_MAX) {
        snprintf(err, errlen, "burst seconds above %d",
                 THROTTLE_BURST_SECONDS_MAX);
        return -EINVAL;
    }
    bool any_max = false;
    for (int d = 0; d < THROTTLE_DIRS; d++)
        any_max = any_max || l->iops_max[d] || l->bps_max[d];
    if (l->burst_seconds > 1 && !any_max) {
        snprintf(err, errlen, "a burst length needs a burst rate (a *-max "
                 "limit)");
        return -EINVAL;
    }
    return 0;
}

bool throttle_group_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > THROTTLE_GROUP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Wait for admission, and count it. */
static void admit(struct image *img, bool write, uint64_t bytes)
{
    struct throttle_node *t = tn(img);
    uint64_t waited = throttle_group_admit(t->group, write, bytes, t,
                                           &t->release);
    atomic_fetch_add_explicit(&t->requests, 1, memory_order_relaxed);
    if (waited) {
        atomic_fetch_add_explicit(&t->delayed, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->wait_ns, waited, memory_order_relaxed);
    }
}

static int throttle_readv(struct image *img, const struct iovec *iov,
                          int iovcnt, uint64_t off)
{
    admit(img, false, iov_size(iov, iovcnt));
    return image_readv(img->file, iov, iovcnt, off);
}

static int throttle_writev(struct image *img, const struct iovec *iov,
                           int iovcnt, uint64_t off, unsigned flags)
{
    admit(img, true, iov_size(iov, iovcnt));
    return image_writev(img->file, iov, iovcnt, off, flags);
}

/* Zero and discard move no data: an operation, no bytes (throttle.h). */
static int throttle_zero(struct image *img, uint64_t off, uint64_t len,
                         unsigned flags)
{
    admit(img, true, 0);
    return image_zero(img->file, off, len, flags);
}

static int throttle_discard(struct image *img, uint64_t off, uint64_t len)
{
    admit(img, true, 0);
    return image_discard(img->file, off, len);
}

static int throttle_close(struct image *img)
{
    throttle_group_put(tn(img)->group);
    return 0;
}

static const struct image_ops throttle_ops = {
    .name = "throttle",
    .readv = throttle_readv,
    .writev = throttle_writev,
    .zero = throttle_zero,
    .discard = throttle_discard,
    .close = throttle_close,
};

/* A new node is alone in its own group, without limits. */
static int throttle_open(struct image *img, const struct image_open_opts *o,
                         char *err, size_t errlen)
{
    (void)o, (void)err, (void)errlen;
    tn(img)->group = throttle_group_get(NULL);
    return 0;
}

const struct block_driver throttle_driver = {
    .name = "throttle",
    .instance_size = sizeof(struct throttle_node),
    .open = throttle_open,
    .ops = &throttle_ops,
    .is_filter = true,
};

void throttle_node_join(struct image *node, const char *name)
{
    struct throttle_node *t = tn(node);
    const char *now = throttle_group_name(t->group);
    if (strcmp(now, name ? name : "") == 0)
        return;
    struct throttle_group *g = throttle_group_get(name);
    throttle_group_put(t->group);
    t->group = g;
}

void throttle_node_set_limits(struct image *node,
                              const struct throttle_limits *l)
{
    throttle_group_set_limits(tn(node)->group, l);
}

void throttle_node_get(struct image *node, struct throttle_limits *l,
                       char *group, size_t grouplen)
{
    struct throttle_node *t = tn(node);
    throttle_group_get_limits(t->group, l);
    if (group)
        snprintf(group, grouplen, "%s", throttle_group_name(t->group));
}

void throttle_node_release(struct image *node, bool release)
{
    struct throttle_node *t = tn(node);
    atomic_store(&t->release, release);
    if (release)
        throttle_group_wake_owner(t->group, t);
}

void throttle_node_stats(struct image *node, struct throttle_stats *s)
{
    struct throttle_node *t = tn(node);
    s->requests = atomic_load(&t->requests);
    s->delayed = atomic_load(&t->delayed);
    s->wait_ns = atomic_load(&t->wait_ns);
}
