/* qlun — a byte-range lock with shared and exclusive holders
 * (block/range_lock.h). */
#include "range_lock.h"

#include <assert.h>

void range_lock_init(struct range_lock *rl)
{
    pthread_mutex_init(&rl->mutex, NULL);
    rl->held = NULL;
}

void range_lock_destroy(struct range_lock *rl)
{
    assert(!rl->held);
    pthread_mutex_destroy(&rl->mutex);
}

/* A held range that h may not run alongside, or NULL.  Mutex held. */
static struct range_lock_holder *conflict(struct range_lock *rl,
                                          const struct range_lock_holder *h)
{
    for (struct range_lock_holder *r = rl->held; r; r = r->next)
        if (r->start < h->end && h->start < r->end &&
            (h->exclusive || r->exclusive))
            return r;
    return NULL;
}

void range_lock(struct range_lock *rl, struct range_lock_holder *h,
                uint64_t off, uint64_t len, bool exclusive)
{
    assert(len > 0 && off + len > off);
    h->start = off;
    h->end = off + len;
    h->exclusive = exclusive;
    h->waiters = NULL;
    h->blocked = false;
    pthread_cond_init(&h->wake, NULL);
    pthread_mutex_lock(&rl->mutex);
    struct range_lock_holder *holder;
    while ((holder = conflict(rl, h))) {
        h->blocked = true;
        h->next_waiter = holder->waiters;
        holder->waiters = h;
        while (h->blocked)
            pthread_cond_wait(&h->wake, &rl->mutex);
    }
    h->next = rl->held;
    rl->held = h;
    pthread_mutex_unlock(&rl->mutex);
}

void range_unlock(struct range_lock *rl, struct range_lock_holder *h)
{
    pthread_mutex_lock(&rl->mutex);
    struct range_lock_holder **p = &rl->held;
    while (*p != h)
        p = &(*p)->next;
    *p = h->next;
    /* Unlinked before woken: a waiter may return (and its holder go out
     * of scope) as soon as it runs. */
    for (struct range_lock_holder *w = h->waiters, *next; w; w = next) {
        next = w->next_waiter;
        w->blocked = false;
        pthread_cond_signal(&w->wake);
    }
    h->waiters = NULL;
    pthread_mutex_unlock(&rl->mutex);
    pthread_cond_destroy(&h->wake);
}
