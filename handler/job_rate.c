/* qlun — a block job's copy rate over the last few seconds (job_rate.h). */
#include "job_rate.h"

#include <glib.h>
#include <string.h>
#include <time.h>

/* Enough samples for the window at the spacing kept (one per
 * JOB_RATE_MIN_SPAN_NS at most: 25 in 5 s), with room to spare. */
#define SAMPLES 32

struct rate_samples {
    uint64_t t[SAMPLES], done[SAMPLES];
    unsigned n, newest;   /* valid samples; index of the newest */
};

static GMutex lock;
static GHashTable *jobs;   /* id (owned) -> struct rate_samples (owned) */

uint64_t job_rate_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct rate_samples *samples_of(const char *id)
{
    if (!jobs)
        jobs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    struct rate_samples *s = g_hash_table_lookup(jobs, id);
    if (!s) {
        s = g_new0(struct rate_samples, 1);
        g_hash_table_insert(jobs, g_strdup(id), s);
    }
    return s;
}

/* A sample less than the minimum span after the one before the newest
 * replaces the newest, so that a burst of queries does not push the
 * window's start out of the ring, while the newest stays current. */
static void add(struct rate_samples *s, uint64_t done, uint64_t now)
{
    unsigned prev = (s->newest + SAMPLES - 1) % SAMPLES;
    if (s->n > 1 && now - s->t[prev] < JOB_RATE_MIN_SPAN_NS) {
        s->done[s->newest] = done;
        s->t[s->newest] = now;
        return;
    }
    s->newest = s->n ? (s->newest + 1) % SAMPLES : 0;
    s->t[s->newest] = now;
    s->done[s->newest] = done;
    if (s->n < SAMPLES)
        s->n++;
}

/* The oldest sample within the window, measured from the newest. */
static unsigned window_start(const struct rate_samples *s)
{
    unsigned oldest = s->newest;
    for (unsigned k = 1; k < s->n; k++) {
        unsigned i = (s->newest + SAMPLES - k) % SAMPLES;
        if (s->t[s->newest] - s->t[i] > JOB_RATE_WINDOW_NS)
            break;
        oldest = i;
    }
    return oldest;
}

uint64_t job_rate_sample(const char *id, uint64_t done, uint64_t now_ns)
{
    uint64_t rate = 0;
    g_mutex_lock(&lock);
    struct rate_samples *s = samples_of(id);
    add(s, done, now_ns);
    unsigned o = window_start(s);
    uint64_t span = s->t[s->newest] - s->t[o];
    if (span >= JOB_RATE_MIN_SPAN_NS && s->done[s->newest] >= s->done[o])
        rate = (uint64_t)((double)(s->done[s->newest] - s->done[o]) * 1e9 /
                          (double)span);
    g_mutex_unlock(&lock);
    return rate;
}

void job_rate_forget(const char *id)
{
    g_mutex_lock(&lock);
    if (jobs)
        g_hash_table_remove(jobs, id);
    g_mutex_unlock(&lock);
}
