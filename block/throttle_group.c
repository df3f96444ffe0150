/* qlun — throttle groups: the leaky buckets, the queues of waiting
 * requests, and the process-wide registry of named groups.
 *
 * Every request counts against up to four buckets: iops and bps, each
 * total and for its direction.  A bucket's level is what was admitted and
 * has not yet drained at the rate (levels are doubles: a rate of 3/s
 * drains a third of an operation in 111 ms).  All of a group's state is
 * under its mutex; a request that must wait queues on its direction's
 * list with a condition variable of its own, so that admitting the head
 * of a queue wakes only the next one (not all of the LUN's 64 workers).
 * Only the head of a queue sleeps with a timeout (until the buckets have
 * drained enough, at most WAIT_SLICE_NS, so that it looks again at
 * limits that changed); the others sleep until they become the head.
 */
#include "block/throttle_group.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The longest a waiting head sleeps before it looks again. */
#define WAIT_SLICE_NS 10000000ull
#define NS_PER_S 1e9

enum { METRIC_IOPS, METRIC_BPS, METRICS };

struct bucket {
    double level;        /* admitted, not yet drained at the rate */
    double burst_level;  /* the same at the burst rate (burst_seconds > 1) */
};

struct waiter {
    struct waiter *next;
    pthread_cond_t cond;
    bool write;
    uint64_t bytes;
    const void *owner;
    const _Atomic bool *release;
};

struct throttle_group {
    char name[THROTTLE_GROUP_NAME_MAX + 1];   /* "" = a node's own */
    int refs;                  /* under registry_lock (named) */
    struct throttle_group *next_named;
    pthread_mutex_t lock;
    _Atomic bool active;       /* any limit set: else nothing waits */
    struct throttle_limits limits;
    struct bucket buckets[METRICS][THROTTLE_DIRS];
    uint64_t drained_at_ns;    /* when the levels were last drained */
    struct waiter *queue[2];   /* [write]: FIFO, head first */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct throttle_group *named_groups;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct throttle_group *group_new(const char *name)
{
    struct throttle_group *g = calloc(1, sizeof(*g));
    if (!g)
        abort();   /* a few hundred bytes: as the rest of the I/O path */
    snprintf(g->name, sizeof(g->name), "%s", name ? name : "");
    g->refs = 1;
    pthread_mutex_init(&g->lock, NULL);
    g->drained_at_ns = now_ns();
    return g;
}

struct throttle_group *throttle_group_get(const char *name)
{
    if (!name || !name[0])
        return group_new(NULL);
    pthread_mutex_lock(&registry_lock);
    struct throttle_group *g = named_groups;
    while (g && strcmp(g->name, name) != 0)
        g = g->next_named;
    if (g) {
        g->refs++;
    } else {
        g = group_new(name);
        g->next_named = named_groups;
        named_groups = g;
    }
    pthread_mutex_unlock(&registry_lock);
    return g;
}

void throttle_group_put(struct throttle_group *g)
{
    if (!g)
        return;
    if (g->name[0]) {
        pthread_mutex_lock(&registry_lock);
        bool last = --g->refs == 0;
        if (last) {
            struct throttle_group **p = &named_groups;
            while (*p != g)
                p = &(*p)->next_named;
            *p = g->next_named;
        }
        pthread_mutex_unlock(&registry_lock);
        if (!last)
            return;
    }
    pthread_mutex_destroy(&g->lock);
    free(g);
}

const char *throttle_group_name(const struct throttle_group *g)
{
    return g->name;
}

/* The rate and burst rate of one bucket. */
static void bucket_rates(const struct throttle_limits *l, int m, int d,
                         double *avg, double *max)
{
    *avg = (double)(m == METRIC_IOPS ? l->iops[d] : l->bps[d]);
    *max = (double)(m == METRIC_IOPS ? l->iops_max[d] : l->bps_max[d]);
}

static unsigned burst_seconds(const struct throttle_limits *l)
{
    return l->burst_seconds ? l->burst_seconds : 1;
}

/* Let every bucket drain for the time since the last drain.  A bucket
 * without a rate is empty: a limit set later starts from nothing. */
static void drain_buckets(struct throttle_group *g, uint64_t now)
{
    double dt = (double)(now - g->drained_at_ns) / NS_PER_S;
    g->drained_at_ns = now;
    for (int m = 0; m < METRICS; m++) {
        for (int d = 0; d < THROTTLE_DIRS; d++) {
            struct bucket *b = &g->buckets[m][d];
            double avg, max;
            bucket_rates(&g->limits, m, d, &avg, &max);
            b->level = avg ? fmax(0, b->level - avg * dt) : 0;
            b->burst_level = max ? fmax(0, b->burst_level - max * dt) : 0;
        }
    }
}

/* Seconds until cost fits in a bucket of capacity cap holding level and
 * draining at rate: until level + cost <= cap, or, for a cost larger than
 * the bucket, until it is empty. */
static double time_to_fit(double level, double cost, double cap, double rate)
{
    double excess = cost <= cap ? level + cost - cap : level;
    return excess > 0 ? excess / rate : 0;
}

/* What a bucket holds before requests wait: rate/10, or a burst. */
static double capacity(const struct throttle_limits *l, double avg,
                       double max)
{
    return max ? max * burst_seconds(l) : avg / 10;
}

/* Seconds until the request (cost in metric m, direction d) fits in
 * that bucket. */
static double bucket_wait(const struct throttle_group *g, int m, int d,
                          double cost)
{
    const struct bucket *b = &g->buckets[m][d];
    double avg, max;
    bucket_rates(&g->limits, m, d, &avg, &max);
    if (avg == 0)
        return 0;
    unsigned burst = burst_seconds(&g->limits);
    double cap = capacity(&g->limits, avg, max);
    double wait = time_to_fit(b->level, cost, cap, avg);
    /* A burst longer than a second runs at the burst rate, not at once. */
    if (max && burst > 1)
        wait = fmax(wait, time_to_fit(b->burst_level, cost, max / 10, max));
    return wait;
}

/* ns until w fits in every bucket it counts against (0: now). */
static uint64_t wait_ns(const struct throttle_group *g, const struct waiter *w)
{
    int dir = w->write ? THROTTLE_WRITE : THROTTLE_READ;
    double s = 0;
    for (int d = THROTTLE_TOTAL; d <= dir; d += dir) {
        s = fmax(s, bucket_wait(g, METRIC_IOPS, d, 1));
        s = fmax(s, bucket_wait(g, METRIC_BPS, d, (double)w->bytes));
    }
    /* Below a microsecond: rounding of the levels, not a wait. */
    return s * NS_PER_S < 1000 ? 0 : (uint64_t)ceil(s * NS_PER_S);
}

/* Fill the buckets w counts against; those without a rate stay empty
 * (a limit set later starts from nothing). */
static void charge(struct throttle_group *g, const struct waiter *w)
{
    int dir = w->write ? THROTTLE_WRITE : THROTTLE_READ;
    for (int d = THROTTLE_TOTAL; d <= dir; d += dir) {
        for (int m = 0; m < METRICS; m++) {
            struct bucket *b = &g->buckets[m][d];
            double avg, max;
            bucket_rates(&g->limits, m, d, &avg, &max);
            double cost = m == METRIC_IOPS ? 1 : (double)w->bytes;
            if (avg)
                b->level += cost;
            if (max)
                b->burst_level += cost;
        }
    }
}

/* A smaller limit forgives what the old, larger bucket held beyond the
 * new one's room: else lowering a limit would first stop all I/O until
 * that excess drained at the new rate, and "takes effect at once" would
 * mean a stall. */
static void clamp_levels(struct throttle_group *g)
{
    for (int m = 0; m < METRICS; m++) {
        for (int d = 0; d < THROTTLE_DIRS; d++) {
            struct bucket *b = &g->buckets[m][d];
            double avg, max;
            bucket_rates(&g->limits, m, d, &avg, &max);
            b->level = fmin(b->level, capacity(&g->limits, avg, max));
            b->burst_level = fmin(b->burst_level, max / 10);
        }
    }
}

/* Wake the heads of both queues: they look at the buckets again. */
static void wake_heads(struct throttle_group *g)
{
    for (int q = 0; q < 2; q++)
        if (g->queue[q])
            pthread_cond_signal(&g->queue[q]->cond);
}

void throttle_group_set_limits(struct throttle_group *g,
                               const struct throttle_limits *l)
{
    pthread_mutex_lock(&g->lock);
    /* What drained under the old rates drained: drain before the swap. */
    drain_buckets(g, now_ns());
    g->limits = *l;
    clamp_levels(g);
    atomic_store(&g->active, throttle_limits_any(l));
    wake_heads(g);
    pthread_mutex_unlock(&g->lock);
}

void throttle_group_get_limits(struct throttle_group *g,
                               struct throttle_limits *l)
{
    pthread_mutex_lock(&g->lock);
    *l = g->limits;
    pthread_mutex_unlock(&g->lock);
}

void throttle_group_wake_owner(struct throttle_group *g, const void *owner)
{
    pthread_mutex_lock(&g->lock);
    for (int q = 0; q < 2; q++)
        for (struct waiter *w = g->queue[q]; w; w = w->next)
            if (w->owner == owner)
                pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&g->lock);
}

static void enqueue(struct throttle_group *g, struct waiter *w)
{
    struct waiter **p = &g->queue[w->write];
    while (*p)
        p = &(*p)->next;
    *p = w;
}

/* Take w out of its queue; if it was the head, the next one is. */
static void dequeue(struct throttle_group *g, struct waiter *w)
{
    struct waiter **p = &g->queue[w->write];
    while (*p != w)
        p = &(*p)->next;
    *p = w->next;
    if (g->queue[w->write])
        pthread_cond_signal(&g->queue[w->write]->cond);
}

static void sleep_until(struct waiter *w, pthread_mutex_t *lock,
                        uint64_t deadline_ns)
{
    struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
                           .tv_nsec = (long)(deadline_ns % 1000000000ull) };
    pthread_cond_timedwait(&w->cond, lock, &ts);
}

/* Under g->lock: wait in the queue until w is its head and fits (or is
 * released). */
static void wait_turn(struct throttle_group *g, struct waiter *w)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    enqueue(g, w);
    for (;;) {
        if (atomic_load(w->release))
            break;
        if (g->queue[w->write] != w) {
            pthread_cond_wait(&w->cond, &g->lock);
            continue;
        }
        uint64_t now = now_ns();
        drain_buckets(g, now);
        uint64_t wait = wait_ns(g, w);
        if (wait == 0)
            break;
        sleep_until(w, &g->lock, now + (wait < WAIT_SLICE_NS ? wait
                                                            : WAIT_SLICE_NS));
    }
    dequeue(g, w);
    pthread_cond_destroy(&w->cond);
}

uint64_t throttle_group_admit(struct throttle_group *g, bool write,
                              uint64_t bytes, const void *owner,
                              const _Atomic bool *release)
{
    if (!atomic_load(&g->active))
        return 0;
    struct waiter w = { .write = write, .bytes = bytes, .owner = owner,
                        .release = release };
    uint64_t waited = 0;
    pthread_mutex_lock(&g->lock);
    uint64_t now = now_ns();
    drain_buckets(g, now);
    /* Those queued before it go first, whatever room there is now. */
    if (g->queue[write] || (wait_ns(g, &w) && !atomic_load(release))) {
        wait_turn(g, &w);
        waited = now_ns() - now;
        if (waited == 0)
            waited = 1;   /* it did wait, if for less than a tick */
    }
    charge(g, &w);
    pthread_mutex_unlock(&g->lock);
    return waited;
}
