/* qlun — a byte-range lock with shared and exclusive holders, for nodes
 * (filters) that must keep one kind of request off a range while another
 * runs: the copy-on-read filter holds the initiator's writes shared and a
 * copy-up exclusive, so that a copy-up never writes old data over a newer
 * write (block/copy_on_read.c).
 *
 * Shared holders of overlapping ranges run together; an exclusive holder
 * runs alone on its range.  A request that conflicts with a held range
 * waits on its own condition variable, queued on that holder; a release
 * wakes only the requests it blocked, and each looks again (another
 * conflicting range may still be held).  No fairness: a stream of shared
 * holders can keep an exclusive one waiting (acceptable for copy-ups,
 * which are an optimisation; the initiator's I/O is never held off by
 * anything but an exclusive holder).
 *
 * Lock order: docs/locking.md (a node's range lock, parent before child).
 */
#ifndef QLUN_BLOCK_RANGE_LOCK_H
#define QLUN_BLOCK_RANGE_LOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct range_lock_holder;

/* The ranges held on one node. */
struct range_lock {
    pthread_mutex_t mutex;
    struct range_lock_holder *held;
};

/* One held (or wanted) range; lives on its holder's stack. */
struct range_lock_holder {
    uint64_t start, end;                 /* bytes [start, end) */
    bool exclusive;
    struct range_lock_holder *next;      /* in range_lock.held */
    struct range_lock_holder *waiters;   /* requests blocked on this one */
    struct range_lock_holder *next_waiter;
    bool blocked;                        /* queued, not yet woken */
    pthread_cond_t wake;
};

void range_lock_init(struct range_lock *rl);
/* No range may be held. */
void range_lock_destroy(struct range_lock *rl);
/* Wait until [off, off+len) (len > 0) can be held as asked, then hold it
 * with h (the caller's, until range_unlock). */
void range_lock(struct range_lock *rl, struct range_lock_holder *h,
                uint64_t off, uint64_t len, bool exclusive);
void range_unlock(struct range_lock *rl, struct range_lock_holder *h);

#endif
