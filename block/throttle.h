/* qlun — the throttle filter: I/O limits on a node, and throttle groups.
 *
 * A throttle node (throttle_driver, a filter: image_insert_filter) admits
 * each read, write, zero and discard only when its limits allow; flushes
 * and everything else pass.  A request that must wait sleeps in the
 * thread that issued it (the I/O path is synchronous: in the handler,
 * one of tcmu-runner's worker threads) until it is admitted.
 *
 * Limits, as QEMU's throttling means them: operations per second and
 * bytes per second, each for the total, reads and writes.  Each limit is
 * a leaky bucket that drains at the limit's rate; a request is admitted
 * when its cost fits in every bucket it counts against (an operation in
 * the iops buckets, its bytes in the bps buckets; zero and discard count
 * as write operations of no bytes: they move no data, and a 1 GiB UNMAP
 * charged as 1 GiB of bandwidth would hold the LUN for minutes), and then
 * fills them.  A bucket holds rate/10 (so a request may start while the
 * one before it drains), or, with a burst rate `max`, max * burst_seconds:
 * after an idle spell that much passes at once, then the rate rules; with
 * burst_seconds > 1 a second bucket of max/10 keeps the burst itself to
 * the rate max.  A request larger than a bucket is admitted when the
 * bucket is empty (it never waits forever).  Waiting requests are served
 * first come, first served, reads and writes in their own queue (a read
 * waiting for the read limit does not hold up writes).
 *
 * A throttle group is a set of buckets and limits; every throttle node is
 * in one.  A node is alone in its own (unnamed) group unless it joins a
 * named one, which every node of that name shares (process-wide,
 * refcounted: the group lives while a node is in it).  Limits are the
 * group's: setting them through one node sets them for all of its group.
 */
#ifndef QLUN_BLOCK_THROTTLE_H
#define QLUN_BLOCK_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct image;

/* A group's name: 1..THROTTLE_GROUP_NAME_MAX of [A-Za-z0-9_.-]. */
#define THROTTLE_GROUP_NAME_MAX 32
/* The largest limit accepted (QEMU's too): more is a typo. */
#define THROTTLE_VALUE_MAX 1000000000000000ull
/* burst_seconds at most this (an hour). */
#define THROTTLE_BURST_SECONDS_MAX 3600

enum throttle_dir { THROTTLE_TOTAL, THROTTLE_READ, THROTTLE_WRITE,
                    THROTTLE_DIRS };

struct throttle_limits {
    uint64_t iops[THROTTLE_DIRS];     /* operations/s; 0 = no limit */
    uint64_t bps[THROTTLE_DIRS];      /* bytes/s; 0 = no limit */
    uint64_t iops_max[THROTTLE_DIRS]; /* burst rate; 0 = none */
    uint64_t bps_max[THROTTLE_DIRS];
    unsigned burst_seconds;           /* how long a burst lasts; 0 = 1 */
};

/* Whether any rate is set. */
bool throttle_limits_any(const struct throttle_limits *l);
/* 0, or -EINVAL with one line in err: a value above THROTTLE_VALUE_MAX, a
 * total limit together with a read or write one of the same kind, a
 * burst rate without its rate or below it, burst_seconds above the
 * maximum or above 1 without any burst rate. */
int throttle_limits_check(const struct throttle_limits *l, char *err,
                          size_t errlen);
bool throttle_group_name_ok(const char *name);

extern const struct block_driver throttle_driver;

/* The node's group is now the one called name (NULL or "": a group of its
 * own), made if no node is in it yet; a new group has no limits.  Only
 * while no request is in flight on node (the LUN's drain). */
void throttle_node_join(struct image *node, const char *name);
/* Set the limits of the node's group (and so of every node in it).  Any
 * time: waiting requests re-evaluate at once. */
void throttle_node_set_limits(struct image *node,
                              const struct throttle_limits *l);
/* The node's group's limits, and its name ("" if its own). */
void throttle_node_get(struct image *node, struct throttle_limits *l,
                       char *group, size_t grouplen);
/* While released, the node's requests pass without waiting (they still
 * count): set before draining the LUN to change the node's group or to
 * remove it, so that the drain does not wait for the limit (the waiters
 * would hold it for as long as the queue takes to drain at the rate). */
void throttle_node_release(struct image *node, bool release);

struct throttle_stats {
    uint64_t requests;  /* admitted (read, write, zero, discard) */
    uint64_t delayed;   /* of those, how many had to wait */
    uint64_t wait_ns;   /* total time they waited */
};
/* The node's own counters (not its group's). */
void throttle_node_stats(struct image *node, struct throttle_stats *s);

#endif
