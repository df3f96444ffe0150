/* qlun — block jobs: long copies that run in the background on a live LUN
 * (stream, commit, mirror).
 *
 * A job is one thread running its driver's run() (block/stream.c,
 * block/commit.c, block/mirror.c).  The runner (block/job.c) gives every
 * job the same things: its states and the requests that change them
 * (pause, resume, cancel, complete), a speed limit, yielding to the
 * initiator's commands, progress, and events.  A driver works on the image
 * graph only through block/image.h; what it needs from the LUN it belongs
 * to (the drain, the LUN's job filter slot, switching the LUN's top, the
 * LUN's open options) it asks through struct job_owner, which the handler
 * implements (handler/jobs.c) and unit tests fake.
 *
 * States:
 *   running <-> paused          (pause / resume; a pause takes effect at
 *                                the driver's next job_yield)
 *   running -> ready            (job_ready: a job that pivots has caught
 *                                up; it keeps copying new writes)
 *   ready -> completing         (complete: the driver's run returns and
 *                                its finish pivots)
 *   any -> concluded            (finish returned; result: completed,
 *                                cancelled or failed, with an error line)
 * A concluded job stays listed (job_list) until dismissed, so that a
 * caller that missed the event still learns how it ended.
 *
 * Threads: the control functions (job_start, job_pause, ...) are called
 * from the management socket's thread; run() and finish() run in the
 * job's own thread.  The runner's lock guards the state and is never held
 * while a driver function runs.  Lock order: docs/locking.md (the owner's
 * drain_begin takes the LUN's control lock, then its drain).
 */
#ifndef QLUN_BLOCK_JOB_H
#define QLUN_BLOCK_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"

struct job;
struct block_driver;

enum job_status {
    JOB_CREATED,     /* started by job_start, thread not yet running */
    JOB_RUNNING,
    JOB_PAUSED,
    JOB_READY,       /* caught up; waits for complete or cancel */
    JOB_COMPLETING,  /* complete asked; finishing (pivot) */
    JOB_CONCLUDED,   /* done: see result */
};

enum job_result {
    JOB_RESULT_NONE,       /* not concluded */
    JOB_RESULT_COMPLETED,
    JOB_RESULT_CANCELLED,
    JOB_RESULT_FAILED,
};

/* What a job may ask of the LUN it runs on.  Every function is required.
 * All are called from the job's thread (start: from the caller's). */
struct job_owner {
    void *opaque;
    /* The LUN's serial (for listing and events). */
    const char *lun;
    /* Hold off the initiator's commands and wait for those in flight
     * (takes the LUN's control lock, then its drain); drain_end lets
     * them go.  Between the two the job may change graph edges. */
    void (*drain_begin)(void *opaque);
    void (*drain_end)(void *opaque);
    /* The initiator's commands in flight on the LUN now (a job yields to
     * them). */
    unsigned (*in_flight)(void *opaque);
    /* The LUN's top format node.  Only a job changes it while the job
     * runs (the owner refuses snapshots and resizes meanwhile). */
    struct image *(*top)(void *opaque);
    /* Under the drain: put a new filter node of drv in the LUN's job slot
     * (right above the top; *node gets it), or take it out and close it. */
    int (*filter_insert)(void *opaque, const struct block_driver *drv,
                         struct image **node, char *err, size_t errlen);
    void (*filter_remove)(void *opaque);
    /* Under the drain: the LUN serves new_top (with its filters above it)
     * from now on; returns the old top, which the job closes after
     * drain_end (having detached from it what new_top still uses).  The
     * owner stores that the LUN's cfgstring now names new_top (its
     * filename and format) once the drain has ended. */
    struct image *(*switch_top)(void *opaque, struct image *new_top);
    /* The options the LUN opens images with (cache mode, cache sizes,
     * backing root; path, format and read_only left for the job to set).
     * Strings point into the owner and stay valid while the job runs. */
    void (*open_opts)(void *opaque, struct image_open_opts *opts);
    /* The job concluded (from its thread, once, after its last event):
     * the owner no longer counts it as the LUN's job. */
    void (*concluded)(void *opaque, struct job *job);
};

/* What job_start is asked to do (the management socket's job-start). */
struct job_params {
    const char *type;      /* a driver's type: "stream", "commit", "mirror" */
    const char *id;        /* unique among listed jobs; NULL: "job<N>" */
    uint64_t speed;        /* bytes per second; 0: unlimited */
    /* Nodes of the LUN's backing chain, named by path (as query-luns
     * shows their filename; compared after realpath). */
    /* stream: into `top` (NULL: the LUN's top) copy every range that a
     * reader of top sees from a layer above `base` (NULL: from any layer
     * below top), then top's backing file becomes base (NULL: none).
     * commit: the data of `top` (NULL: the LUN's top: an active commit,
     * which becomes ready and pivots the LUN onto base on complete) and
     * of every layer between it and `base` (NULL: the bottom of the
     * chain) goes into base; then they are dropped from the chain. */
    const char *top;
    const char *base;
    /* mirror: a copy of the LUN at `target`. */
    const char *target;    /* path of the new image, or of an existing one
                            * (a block device, a pre-made image) */
    const char *format;    /* the target's format; NULL: the top's */
    bool sync_top;         /* only the top layer; the target's backing file
                            * is the top's (qcow2 target).  Else: all of it */
    bool existing;         /* open target as it is; else create it (never
                            * clobbering a file) */
    uint32_t granularity;  /* dirty tracking unit in bytes, a power of two
                            * >= 4096; 0: 64 KiB */
};

struct job_driver {
    const char *type;
    /* Bytes job_start allocates: the driver's state, struct job first. */
    size_t instance_size;
    /* From job_start, in the caller's thread: check p against the graph,
     * open or create what the job needs, set the expected total
     * (job_set_total), insert filters (under the owner's drain).  On
     * failure undo everything, write one line into err; the graph is as
     * it was and the job is never listed. */
    int (*start)(struct job *job, const struct job_params *p, char *err,
                 size_t errlen);
    /* In the job's thread: the copying.  Call job_yield between chunks
     * (pause, speed, cancel, yielding to the initiator) and report copied
     * bytes through it.  A job that pivots calls job_ready once caught up
     * and goes on copying new writes until job_yield says complete was
     * asked (returns 1).  Returns 0 when done, -ECANCELED when job_yield
     * said so, or another negative errno after job_set_error. */
    int (*run)(struct job *job);
    /* In the job's thread, after run, with run's return: on 0 make the
     * change (rewrite backing links, pivot), else undo what start set up
     * (filters out, target closed; a cancelled mirror leaves its target
     * file).  Either way the LUN's graph is consistent and serving after
     * it.  Returns 0, or a negative errno after job_set_error (then the
     * job fails). */
    int (*finish)(struct job *job, int run_ret);
    /* Free what start took and finish did not (optional). */
    void (*destroy)(struct job *job);
};

/* The common part of every job.  Drivers read owner, and may read the
 * atomics; everything else is the runner's. */
struct job {
    const struct job_driver *drv;
    struct job_owner owner;
    char id[64];
    char lun[128];
    _Atomic uint64_t done;    /* bytes copied so far */
    _Atomic uint64_t total;   /* bytes expected (may grow: new writes) */
    _Atomic uint64_t speed;   /* bytes per second; 0: unlimited */
    /* The runner's state (block/job.c). */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    enum job_status status;
    enum job_result result;
    bool pause_requested, cancel_requested, complete_requested;
    bool has_thread;                         /* thread to join */
    char error[512];
    uint64_t window_start_ns, window_bytes;  /* speed limit */
    uint64_t last_progress_ns;               /* progress events */
    uint64_t last_progress_done, rate;       /* bytes/s, last interval */
    struct job *next;                        /* the list of jobs */
};

/* What job_list reports of one job. */
struct job_info {
    char id[64];
    char type[16];
    char lun[128];
    enum job_status status;
    enum job_result result;
    char error[512];          /* "" unless failed */
    uint64_t done, total, speed;
    uint64_t rate;            /* bytes/s copied over the last second or so */
};

/* Events the runner emits (names as on the management socket). */
#define JOB_EVENT_STARTED   "JOB_STARTED"
#define JOB_EVENT_PROGRESS  "JOB_PROGRESS"   /* at most once a second */
#define JOB_EVENT_READY     "JOB_READY"
#define JOB_EVENT_ERROR     "JOB_ERROR"      /* before COMPLETED, failed */
#define JOB_EVENT_COMPLETED "JOB_COMPLETED"  /* concluded, any result */
/* Who hears them (the management socket); NULL: nobody.  Called from the
 * thread that caused the event, without the runner's locks held. */
void job_set_event_hook(void (*hook)(const char *event,
                                     const struct job_info *info));

/* ---- control (the management socket) ---- */

/* The driver that does p on the LUN owner describes (block/job_drivers.c):
 * by p->type, and for "commit" by whether p->top is the LUN's top (an
 * active commit) or below it; NULL if none. */
const struct job_driver *job_driver_for(const struct job_params *p,
                                        const struct job_owner *owner);
/* The types job_driver_for knows, for messages: "stream, commit, ...". */
const char *job_driver_types(void);
/* Start a job on the LUN owner describes: driver start, then its thread.
 * The caller makes sure the LUN has no other job.  On failure nothing
 * changed and err says why (-EINVAL bad parameters, -EEXIST id taken,
 * -ENOENT no such node, ...). */
int job_start(const struct job_params *p, const struct job_owner *owner,
              char *err, size_t errlen);
/* The same with the driver given (tests). */
int job_start_with_driver(const struct job_driver *drv,
                          const struct job_params *p,
                          const struct job_owner *owner, char *err,
                          size_t errlen);
/* By id: -ENOENT no such job; -EBUSY the request makes no sense in the
 * job's status now (err says which). */
int job_pause(const char *id, char *err, size_t errlen);
int job_resume(const char *id, char *err, size_t errlen);
int job_cancel(const char *id, char *err, size_t errlen);
int job_complete(const char *id, char *err, size_t errlen);
int job_set_speed(const char *id, uint64_t speed, char *err, size_t errlen);
/* Forget a concluded job (-EBUSY if it is not concluded). */
int job_dismiss(const char *id, char *err, size_t errlen);
/* Every listed job (of lun, or all for NULL), in start order, in a
 * malloc'd array the caller frees. */
int job_list(const char *lun, struct job_info **out, size_t *n);
/* The LUN is closing: cancel its jobs, wait until they have concluded,
 * and forget them. */
void job_cancel_all(const char *lun);
const char *job_status_name(enum job_status s);
const char *job_result_name(enum job_result r);

/* ---- for drivers (the job's thread) ---- */

/* Between chunks: account bytes just copied (progress, speed), wait while
 * paused, sleep to keep under the speed, and give way to the initiator's
 * commands in flight (a wait of at most a few milliseconds).  Returns
 * -ECANCELED once the job is cancelled, 1 once complete has been asked of
 * a ready job, else 0. */
int job_yield(struct job *job, uint64_t bytes);
/* The bytes the job now expects to copy in all. */
void job_set_total(struct job *job, uint64_t total);
/* Caught up (status ready, event once); the driver goes on copying new
 * writes until job_yield returns 1. */
void job_ready(struct job *job);
/* Why the job fails: one line (first call wins). */
void job_set_error(struct job *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The drivers (block/stream.c, commit.c, mirror.c). */
extern const struct job_driver stream_job_driver;
extern const struct job_driver commit_job_driver;
extern const struct job_driver mirror_job_driver;
extern const struct job_driver active_commit_job_driver;

#endif
