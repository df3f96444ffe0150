/* qlun — TEMPORARY stand-in for block/job.c (the lead's runner), linked
 * into the mirror test only while block/job.c is absent: just enough of
 * block/job.h for the mirror and active commit drivers (start, a thread
 * running run then finish, pause/resume/cancel/complete, the driver
 * helpers, a list).  No speed limit, no events. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/job.h"

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;
static unsigned next_id;

const struct job_driver *job_driver_find(const char *type)
{
    if (strcmp(type, "mirror") == 0)
        return &mirror_job_driver;
    if (strcmp(type, "commit") == 0)
        return &active_commit_job_driver;
    return NULL;
}

static void *job_thread(void *arg)
{
    struct job *job = arg;
    int ret = job->drv->run(job);
    pthread_mutex_lock(&job->lock);
    if (job->status != JOB_CONCLUDED && ret == 0)
        job->status = JOB_COMPLETING;
    pthread_mutex_unlock(&job->lock);
    int fret = job->drv->finish(job, ret);
    pthread_mutex_lock(&job->lock);
    job->status = JOB_CONCLUDED;
    job->result = ret == -ECANCELED ? JOB_RESULT_CANCELLED
                  : (ret < 0 || fret < 0) ? JOB_RESULT_FAILED
                                          : JOB_RESULT_COMPLETED;
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
    job->owner.concluded(job->owner.opaque, job);
    return NULL;
}

int job_start(const struct job_params *p, const struct job_owner *owner,
              char *err, size_t errlen)
{
    const struct job_driver *drv = job_driver_find(p->type);
    if (!drv) {
        snprintf(err, errlen, "no job type %s", p->type);
        return -EINVAL;
    }
    struct job *job = calloc(1, drv->instance_size);
    job->drv = drv;
    job->owner = *owner;
    pthread_mutex_lock(&list_lock);
    if (p->id)
        snprintf(job->id, sizeof(job->id), "%s", p->id);
    else
        snprintf(job->id, sizeof(job->id), "job%u", next_id++);
    pthread_mutex_unlock(&list_lock);
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->cond, NULL);
    job->status = JOB_CREATED;
    int ret = drv->start(job, p, err, errlen);
    if (ret < 0) {
        free(job);
        return ret;
    }
    job->status = JOB_RUNNING;
    pthread_mutex_lock(&list_lock);
    job->next = jobs;
    jobs = job;
    pthread_mutex_unlock(&list_lock);
    pthread_create(&job->thread, NULL, job_thread, job);
    return 0;
}

static struct job *find(const char *id)
{
    pthread_mutex_lock(&list_lock);
    struct job *j = jobs;
    while (j && strcmp(j->id, id) != 0)
        j = j->next;
    pthread_mutex_unlock(&list_lock);
    return j;
}

#define REQUEST(name, field, value)                                        \
    int name(const char *id, char *err, size_t errlen)                     \
    {                                                                      \
        struct job *j = find(id);                                          \
        if (!j) {                                                          \
            snprintf(err, errlen, "no job %s", id);                        \
            return -ENOENT;                                                \
        }                                                                  \
        pthread_mutex_lock(&j->lock);                                      \
        j->field = value;                                                  \
        pthread_cond_broadcast(&j->cond);                                  \
        pthread_mutex_unlock(&j->lock);                                    \
        return 0;                                                          \
    }
REQUEST(job_pause, pause_requested, true)
REQUEST(job_resume, pause_requested, false)
REQUEST(job_cancel, cancel_requested, true)
REQUEST(job_complete, complete_requested, true)

int job_dismiss(const char *id, char *err, size_t errlen)
{
    struct job *j = find(id);
    if (!j) {
        snprintf(err, errlen, "no job %s", id);
        return -ENOENT;
    }
    pthread_join(j->thread, NULL);
    pthread_mutex_lock(&list_lock);
    for (struct job **pp = &jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_mutex_unlock(&list_lock);
    if (j->drv->destroy)
        j->drv->destroy(j);
    free(j);
    return 0;
}

int job_list(const char *lun, struct job_info **out, size_t *n)
{
    (void)lun;
    pthread_mutex_lock(&list_lock);
    size_t k = 0;
    for (struct job *j = jobs; j; j = j->next)
        k++;
    *out = calloc(k ? k : 1, sizeof(**out));
    *n = k;
    k = 0;
    for (struct job *j = jobs; j; j = j->next, k++) {
        struct job_info *i = &(*out)[k];
        pthread_mutex_lock(&j->lock);
        snprintf(i->id, sizeof(i->id), "%s", j->id);
        snprintf(i->type, sizeof(i->type), "%s", j->drv->type);
        i->status = j->status;
        i->result = j->result;
        snprintf(i->error, sizeof(i->error), "%s", j->error);
        i->done = atomic_load(&j->done);
        i->total = atomic_load(&j->total);
        pthread_mutex_unlock(&j->lock);
    }
    pthread_mutex_unlock(&list_lock);
    return 0;
}

int job_yield(struct job *job, uint64_t bytes)
{
    atomic_fetch_add(&job->done, bytes);
    pthread_mutex_lock(&job->lock);
    while (job->pause_requested && !job->cancel_requested) {
        enum job_status was = job->status;
        job->status = JOB_PAUSED;
        pthread_cond_broadcast(&job->cond);
        pthread_cond_wait(&job->cond, &job->lock);
        job->status = was;
    }
    int ret = job->cancel_requested ? -ECANCELED
              : (job->complete_requested && job->status == JOB_READY) ? 1
                                                                      : 0;
    pthread_mutex_unlock(&job->lock);
    return ret;
}

void job_set_total(struct job *job, uint64_t total)
{
    atomic_store(&job->total, total);
}

void job_ready(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    job->status = JOB_READY;
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
}

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
