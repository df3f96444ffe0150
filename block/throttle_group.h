/* qlun — throttle groups: leaky buckets shared by throttle nodes
 * (block/throttle.h says what they mean; block/throttle.c is the filter
 * that uses them). */
#ifndef QLUN_BLOCK_THROTTLE_GROUP_H
#define QLUN_BLOCK_THROTTLE_GROUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/throttle.h"

struct throttle_group;

/* The group called name, made (without limits) if none lives; NULL or ""
 * makes a new group of its own (unnamed, never shared).  Referenced. */
struct throttle_group *throttle_group_get(const char *name);
/* Drop a reference; the last one frees the group (no request may wait
 * in it then). */
void throttle_group_put(struct throttle_group *g);
const char *throttle_group_name(const struct throttle_group *g);

void throttle_group_set_limits(struct throttle_group *g,
                               const struct throttle_limits *l);
void throttle_group_get_limits(struct throttle_group *g,
                               struct throttle_limits *l);

/* Wait until a request (a write or a read of bytes) is admitted, or until
 * *release is set for its owner (throttle_group_wake_owner); then count
 * it.  Returns how long it waited, in ns (0: admitted at once). */
uint64_t throttle_group_admit(struct throttle_group *g, bool write,
                              uint64_t bytes, const void *owner,
                              const _Atomic bool *release);
/* Make owner's waiting requests look at their *release again. */
void throttle_group_wake_owner(struct throttle_group *g, const void *owner);

#endif
