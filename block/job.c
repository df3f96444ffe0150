/* qlun — the block job runner (block/job.h).
 *
 * One thread per job runs the driver's run() then finish().  The control
 * side (the management socket's thread) only sets request flags under the
 * job's lock and wakes the job; the job acts on them at its next
 * job_yield, so a driver never sees its state change in the middle of a
 * chunk.  The list of jobs has its own lock (jobs_lock), taken before a
 * job's lock and never held while a driver function or the event hook
 * runs.
 */
#include "block/job.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Concluded jobs kept for job_list beyond which the oldest are dropped
 * (a caller that never dismisses must not grow the list forever). */
#define KEEP_CONCLUDED 16
/* Giving way to the initiator: while its commands are in flight, wait up
 * to this many 1 ms naps before the next chunk.  Bounded, so a LUN that is
 * never idle still sees its job progress. */
#define YIELD_NAPS 4
#define PROGRESS_INTERVAL_NS 1000000000ull

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;        /* in start order */
static unsigned next_job_number;
static void (*event_hook)(const char *, const struct job_info *);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *job_status_name(enum job_status s)
{
    static const char *const names[] = {
        [JOB_CREATED] = "created",     [JOB_RUNNING] = "running",
        [JOB_PAUSED] = "paused",       [JOB_READY] = "ready",
        [JOB_COMPLETING] = "completing", [JOB_CONCLUDED] = "concluded",
    };
    return names[s];
}

const char *job_result_name(enum job_result r)
{
    static const char *const names[] = {
        [JOB_RESULT_NONE] = NULL,           [JOB_RESULT_COMPLETED] = "completed",
        [JOB_RESULT_CANCELLED] = "cancelled", [JOB_RESULT_FAILED] = "failed",
    };
    return names[r];
}

void job_set_event_hook(void (*hook)(const char *, const struct job_info *))
{
    event_hook = hook;
}

/* Under job->lock. */
static void fill_info(struct job *job, struct job_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->id, sizeof(info->id), "%s", job->id);
    snprintf(info->type, sizeof(info->type), "%s", job->drv->type);
    snprintf(info->lun, sizeof(info->lun), "%s", job->lun);
    info->status = job->status;
    info->result = job->result;
    snprintf(info->error, sizeof(info->error), "%s", job->error);
    info->done = atomic_load(&job->done);
    info->total = atomic_load(&job->total);
    if (info->total < info->done)
        info->total = info->done;
    info->speed = atomic_load(&job->speed);
    info->rate = job->rate;
}

/* Without job->lock. */
static void emit(struct job *job, const char *event)
{
    if (!event_hook)
        return;
    struct job_info info;
    pthread_mutex_lock(&job->lock);
    fill_info(job, &info);
    pthread_mutex_unlock(&job->lock);
    event_hook(event, &info);
}

/* ---- the job's thread ---- */

void job_set_error(struct job *job, const char *fmt, ...)
{
    pthread_mutex_lock(&job->lock);
    if (!job->error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(job->error, sizeof(job->error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&job->lock);
}

void job_set_total(struct job *job, uint64_t total)
{
    atomic_store(&job->total, total);
}

void job_ready(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    bool first = job->status == JOB_RUNNING;
    if (first)
        job->status = JOB_READY;
    pthread_mutex_unlock(&job->lock);
    if (first)
        emit(job, JOB_EVENT_READY);
}

/* Sleep until deadline (CLOCK_MONOTONIC ns) or a control request wakes
 * the job.  Under job->lock. */
static void wait_until(struct job *job, uint64_t deadline)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = now_ns();
    uint64_t wait = deadline > now ? deadline - now : 0;
    uint64_t t = (uint64_t)ts.tv_nsec + wait % 1000000000u;
    ts.tv_sec += (time_t)(wait / 1000000000u + t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    pthread_cond_timedwait(&job->cond, &job->lock, &ts);
}

/* Pause while asked to, in the status the job had (running or ready).
 * Under job->lock. */
static void pause_point(struct job *job)
{
    if (!job->pause_requested || job->cancel_requested)
        return;
    enum job_status was = job->status;
    job->status = JOB_PAUSED;
    pthread_mutex_unlock(&job->lock);
    emit(job, JOB_EVENT_PROGRESS);
    pthread_mutex_lock(&job->lock);
    while (job->pause_requested && !job->cancel_requested)
        pthread_cond_wait(&job->cond, &job->lock);
    job->status = was;
    job->window_start_ns = now_ns(); /* a pause is not credit for speed */
    job->window_bytes = 0;
}

/* Keep the copy under job->speed bytes per second: the bytes copied since
 * the window opened may not come before the time they would take at that
 * speed.  The window restarts every second so that a changed speed takes
 * effect at once and an idle spell is not saved up.  Under job->lock. */
static void speed_point(struct job *job, uint64_t bytes)
{
    uint64_t now = now_ns();
    if (now - job->window_start_ns > 1000000000u) {
        job->window_start_ns = now;
        job->window_bytes = 0;
    }
    job->window_bytes += bytes;
    uint64_t speed;
    while ((speed = atomic_load(&job->speed)) != 0 &&
           !job->cancel_requested && !job->pause_requested) {
        uint64_t due = job->window_start_ns +
                       (uint64_t)((double)job->window_bytes * 1e9 / speed);
        if (now_ns() >= due)
            break;
        wait_until(job, due);
    }
}

static void progress_point(struct job *job, bool *report)
{
    uint64_t now = now_ns(), done = atomic_load(&job->done);
    if (now - job->last_progress_ns < PROGRESS_INTERVAL_NS)
        return;
    job->rate = (uint64_t)((double)(done - job->last_progress_done) * 1e9 /
                           (double)(now - job->last_progress_ns));
    job->last_progress_ns = now;
    job->last_progress_done = done;
    *report = true;
}

int job_yield(struct job *job, uint64_t bytes)
{
    atomic_fetch_add(&job->done, bytes);
    for (int i = 0; i < YIELD_NAPS && job->owner.in_flight(job->owner.opaque);
         i++)
        nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);

    bool report = false;
    pthread_mutex_lock(&job->lock);
    progress_point(job, &report);
    speed_point(job, bytes);
    pause_point(job);
    int ret = job->cancel_requested ? -ECANCELED
              : job->complete_requested && job->status == JOB_READY ? 1 : 0;
    pthread_mutex_unlock(&job->lock);
    if (report)
        emit(job, JOB_EVENT_PROGRESS);
    return ret;
}

static enum job_result result_of(int run_ret, int finish_ret)
{
    if (finish_ret < 0)
        return JOB_RESULT_FAILED;
    if (run_ret == 0)
        return JOB_RESULT_COMPLETED;
    return run_ret == -ECANCELED ? JOB_RESULT_CANCELLED : JOB_RESULT_FAILED;
}

static void *job_thread(void *arg)
{
    struct job *job = arg;
    pthread_mutex_lock(&job->lock);
    job->status = JOB_RUNNING;
    job->last_progress_ns = job->window_start_ns = now_ns();
    pthread_mutex_unlock(&job->lock);

    int ret = job->drv->run(job);
    assert(ret <= 0);
    if (ret < 0 && ret != -ECANCELED)
        job_set_error(job, "%s", strerror(-ret)); /* if run said nothing */
    pthread_mutex_lock(&job->lock);
    job->status = JOB_COMPLETING;
    pthread_mutex_unlock(&job->lock);
    int fret = job->drv->finish(job, ret);
    if (fret < 0)
        job_set_error(job, "finishing failed: %s", strerror(-fret));

    pthread_mutex_lock(&job->lock);
    job->result = result_of(ret, fret);
    if (job->result != JOB_RESULT_FAILED)
        job->error[0] = 0;
    pthread_mutex_unlock(&job->lock);
    if (job->result == JOB_RESULT_FAILED)
        emit(job, JOB_EVENT_ERROR);
    job->owner.concluded(job->owner.opaque, job);
    pthread_mutex_lock(&job->lock);
    job->status = JOB_CONCLUDED;
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
    emit(job, JOB_EVENT_COMPLETED);
    return NULL;
}

/* ---- control ---- */

static struct job *find_locked(const char *id)
{
    for (struct job *j = jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

static void unlink_locked(struct job *job)
{
    for (struct job **p = &jobs; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            return;
        }
}

/* A concluded job's thread has nothing left to do but return. */
static void destroy(struct job *job)
{
    if (job->has_thread)
        pthread_join(job->thread, NULL);
    if (job->drv->destroy)
        job->drv->destroy(job);
    pthread_cond_destroy(&job->cond);
    pthread_mutex_destroy(&job->lock);
    free(job);
}

/* Drop the oldest concluded jobs beyond KEEP_CONCLUDED; returns the first
 * one dropped (chained by next) for the caller to destroy unlocked. */
static struct job *trim_locked(void)
{
    unsigned n = 0;
    struct job *dropped = NULL, **tail = &dropped;
    for (struct job *j = jobs; j; j = j->next)
        n += j->status == JOB_CONCLUDED;
    for (struct job **p = &jobs; *p && n > KEEP_CONCLUDED;) {
        struct job *j = *p;
        if (j->status != JOB_CONCLUDED) {
            p = &j->next;
            continue;
        }
        *p = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
        n--;
    }
    return dropped;
}

static void destroy_chain(struct job *j)
{
    while (j) {
        struct job *next = j->next;
        destroy(j);
        j = next;
    }
}

static int reserve_id(struct job *job, const struct job_params *p, char *err,
                      size_t errlen)
{
    if (p->id && (!p->id[0] || strlen(p->id) >= sizeof(job->id))) {
        snprintf(err, errlen, "a job id must be 1 to %zu characters",
                 sizeof(job->id) - 1);
        return -EINVAL;
    }
    pthread_mutex_lock(&jobs_lock);
    if (p->id)
        snprintf(job->id, sizeof(job->id), "%s", p->id);
    else
        do
            snprintf(job->id, sizeof(job->id), "job%u", next_job_number++);
        while (find_locked(job->id));
    int ret = 0;
    if (p->id && find_locked(job->id)) {
        snprintf(err, errlen, "a job called %s exists already (dismiss it "
                 "first if it has concluded)", job->id);
        ret = -EEXIST;
    } else {
        /* Listed from now on (status created), so that the id is taken;
         * job_start unlinks it again if the driver's start fails. */
        job->next = NULL;
        struct job **p2 = &jobs;
        while (*p2)
            p2 = &(*p2)->next;
        *p2 = job;
    }
    pthread_mutex_unlock(&jobs_lock);
    return ret;
}

int job_start_with_driver(const struct job_driver *drv,
                          const struct job_params *p,
                          const struct job_owner *owner, char *err,
                          size_t errlen)
{
    assert(drv->instance_size >= sizeof(struct job));
    struct job *job = calloc(1, drv->instance_size);
    if (!job) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    job->drv = drv;
    job->owner = *owner;
    snprintf(job->lun, sizeof(job->lun), "%s", owner->lun ? owner->lun : "");
    atomic_store(&job->speed, p->speed);
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->cond, NULL);
    job->status = JOB_CREATED;
    int ret = reserve_id(job, p, err, errlen);
    if (ret < 0)
        goto fail;
    ret = drv->start(job, p, err, errlen);
    if (ret == 0) {
        ret = -pthread_create(&job->thread, NULL, job_thread, job);
        job->has_thread = ret == 0;
        if (ret < 0) {
            snprintf(err, errlen, "cannot start the job's thread: %s",
                     strerror(-ret));
            drv->finish(job, ret);
        }
    }
    if (ret < 0) {
        pthread_mutex_lock(&jobs_lock);
        unlink_locked(job);
        pthread_mutex_unlock(&jobs_lock);
        if (drv->destroy)
            drv->destroy(job);
        goto fail;
    }
    emit(job, JOB_EVENT_STARTED);
    return 0;

fail:
    pthread_cond_destroy(&job->cond);
    pthread_mutex_destroy(&job->lock);
    free(job);
    return ret;
}

int job_start(const struct job_params *p, const struct job_owner *owner,
              char *err, size_t errlen)
{
    const struct job_driver *drv = job_driver_for(p, owner);
    if (!drv) {
        snprintf(err, errlen, "no job type \"%s\" (types: %s)",
                 p->type ? p->type : "", job_driver_types());
        return -EINVAL;
    }
    return job_start_with_driver(drv, p, owner, err, errlen);
}

/* Run op on the job called id with its lock held (and jobs_lock, so that
 * it cannot be dismissed meanwhile). */
static int with_job(const char *id, int (*op)(struct job *, void *, char *,
                                              size_t),
                    void *arg, char *err, size_t errlen)
{
    pthread_mutex_lock(&jobs_lock);
    struct job *job = find_locked(id);
    int ret;
    if (!job) {
        snprintf(err, errlen, "no job called %s", id);
        ret = -ENOENT;
    } else {
        pthread_mutex_lock(&job->lock);
        ret = op(job, arg, err, errlen);
        pthread_cond_broadcast(&job->cond);
        pthread_mutex_unlock(&job->lock);
    }
    pthread_mutex_unlock(&jobs_lock);
    return ret;
}

static bool finished(const struct job *job, char *err, size_t errlen)
{
    if (job->status < JOB_COMPLETING)
        return false;
    snprintf(err, errlen, "job %s is %s", job->id,
             job_status_name(job->status));
    return true;
}

static int do_pause(struct job *job, void *arg, char *err, size_t errlen)
{
    (void)arg;
    if (finished(job, err, errlen) || job->cancel_requested)
        return -EBUSY;
    job->pause_requested = true;
    return 0;
}

static int do_resume(struct job *job, void *arg, char *err, size_t errlen)
{
    (void)arg;
    if (!job->pause_requested) {
        snprintf(err, errlen, "job %s is not paused", job->id);
        return -EBUSY;
    }
    job->pause_requested = false;
    return 0;
}

static int do_cancel(struct job *job, void *arg, char *err, size_t errlen)
{
    (void)arg;
    if (finished(job, err, errlen))
        return -EBUSY;
    job->cancel_requested = true;
    return 0;
}

static int do_complete(struct job *job, void *arg, char *err, size_t errlen)
{
    (void)arg;
    if (job->status != JOB_READY || job->cancel_requested) {
        snprintf(err, errlen, "job %s is %s, not ready: only a job that "
                 "waits to pivot and has caught up can be completed",
                 job->id, job_status_name(job->status));
        return -EBUSY;
    }
    job->complete_requested = true;
    return 0;
}

static int do_set_speed(struct job *job, void *arg, char *err, size_t errlen)
{
    if (finished(job, err, errlen))
        return -EBUSY;
    atomic_store(&job->speed, *(uint64_t *)arg);
    job->window_start_ns = now_ns();
    job->window_bytes = 0;
    return 0;
}

int job_pause(const char *id, char *err, size_t errlen)
{
    return with_job(id, do_pause, NULL, err, errlen);
}

int job_resume(const char *id, char *err, size_t errlen)
{
    return with_job(id, do_resume, NULL, err, errlen);
}

int job_cancel(const char *id, char *err, size_t errlen)
{
    return with_job(id, do_cancel, NULL, err, errlen);
}

int job_complete(const char *id, char *err, size_t errlen)
{
    return with_job(id, do_complete, NULL, err, errlen);
}

int job_set_speed(const char *id, uint64_t speed, char *err, size_t errlen)
{
    return with_job(id, do_set_speed, &speed, err, errlen);
}

int job_dismiss(const char *id, char *err, size_t errlen)
{
    pthread_mutex_lock(&jobs_lock);
    struct job *job = find_locked(id);
    int ret = 0;
    if (!job) {
        snprintf(err, errlen, "no job called %s", id);
        ret = -ENOENT;
    } else if (job->status != JOB_CONCLUDED) {
        snprintf(err, errlen, "job %s is %s: only a concluded job can be "
                 "dismissed", id, job_status_name(job->status));
        ret = -EBUSY;
    } else {
        unlink_locked(job);
    }
    pthread_mutex_unlock(&jobs_lock);
    if (ret == 0)
        destroy(job);
    return ret;
}

int job_list(const char *lun, struct job_info **out, size_t *n)
{
    pthread_mutex_lock(&jobs_lock);
    struct job *dropped = trim_locked();
    size_t count = 0;
    for (struct job *j = jobs; j; j = j->next)
        count++;
    struct job_info *infos = calloc(count ? count : 1, sizeof(*infos));
    size_t k = 0;
    for (struct job *j = jobs; infos && j; j = j->next) {
        if (lun && strcmp(j->lun, lun) != 0)
            continue;
        pthread_mutex_lock(&j->lock);
        fill_info(j, &infos[k++]);
        pthread_mutex_unlock(&j->lock);
    }
    pthread_mutex_unlock(&jobs_lock);
    destroy_chain(dropped);
    if (!infos)
        return -ENOMEM;
    *out = infos;
    *n = k;
    return 0;
}

void job_cancel_all(const char *lun)
{
    pthread_mutex_lock(&jobs_lock);
    struct job *mine = NULL, **tail = &mine;
    for (struct job **p = &jobs; *p;) {
        struct job *j = *p;
        if (strcmp(j->lun, lun) != 0) {
            p = &j->next;
            continue;
        }
        *p = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
        pthread_mutex_lock(&j->lock);
        j->cancel_requested = true;
        pthread_cond_broadcast(&j->cond);
        pthread_mutex_unlock(&j->lock);
    }
    pthread_mutex_unlock(&jobs_lock);
    /* Unlisted now, so no control request reaches them; each concludes
     * (its finish undoes what it set up) before it is freed. */
    destroy_chain(mine);
}
