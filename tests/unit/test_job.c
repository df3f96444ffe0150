/* qlun — the block job runner (block/job.c) with a test driver: states,
 * pause/resume, cancel, complete, speed, events, errors, listing,
 * dismissing, and cancelling a LUN's jobs when it closes.
 *
 * The test driver "copies" chunks by calling job_yield; it records what it
 * saw so that the test can tell the runner's requests from its own
 * behaviour.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/job.h"
#include "check.h"

#define CHUNK 65536u

struct test_job {
    struct job job;
    unsigned chunks;      /* run copies this many, then ... */
    bool waits;           /* ... becomes ready and waits for complete */
    int fail_at;          /* chunk at which run fails -EIO (-1: never) */
    int run_ret, finish_ret_seen;
    bool finished, destroyed_ok;
};

static _Atomic int destroyed;

static int t_start(struct job *job, const struct job_params *p, char *err,
                   size_t errlen)
{
    struct test_job *t = (struct test_job *)job;
    /* The test passes its settings through granularity (unused here). */
    t->chunks = p->granularity & 0xffff;
    t->waits = p->granularity & 0x10000;
    t->fail_at = p->granularity & 0x20000 ? 3 : -1;
    if (p->granularity & 0x40000) {
        snprintf(err, errlen, "refused by the test driver");
        return -EINVAL;
    }
    job_set_total(job, (uint64_t)t->chunks * CHUNK);
    return 0;
}

static int t_run(struct job *job)
{
    struct test_job *t = (struct test_job *)job;
    for (unsigned i = 0;; i++) {
        if ((int)i == t->fail_at) {
            job_set_error(job, "test driver failed at chunk %u", i);
            return -EIO;
        }
        if (i >= t->chunks) {
            if (!t->waits)
                return 0;
            job_ready(job);
        }
        int r = job_yield(job, i < t->chunks ? CHUNK : 0);
        if (r < 0)
            return r;
        if (r == 1)
            return 0;
        if (i >= t->chunks)
            usleep(1000); /* ready: wait for new writes */
    }
}

static int t_finish(struct job *job, int run_ret)
{
    struct test_job *t = (struct test_job *)job;
    t->finished = true;
    t->finish_ret_seen = run_ret;
    return 0;
}

static void t_destroy(struct job *job)
{
    (void)job;
    destroyed++;
}

static const struct job_driver test_driver = {
    .type = "test",
    .instance_size = sizeof(struct test_job),
    .start = t_start,
    .run = t_run,
    .finish = t_finish,
    .destroy = t_destroy,
};

/* The owner: a LUN with no commands. */
static _Atomic int concluded_calls;
static unsigned no_commands(void *o) { (void)o; return 0; }
static void nothing(void *o) { (void)o; }
static struct image *no_top(void *o) { (void)o; return NULL; }
static void on_concluded(void *o, struct job *j)
{
    (void)o;
    (void)j;
    concluded_calls++;
}
static const struct job_owner owner = {
    .lun = "lun-a",
    .drain_begin = nothing,
    .drain_end = nothing,
    .in_flight = no_commands,
    .top = no_top,
    .concluded = on_concluded,
};

/* Events, as the hook saw them. */
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static char events[64][128];
static int nevents;
static void hook(const char *event, const struct job_info *info)
{
    pthread_mutex_lock(&ev_lock);
    if (nevents < 64)
        snprintf(events[nevents++], sizeof(events[0]), "%s:%s", info->id,
                 event);
    pthread_mutex_unlock(&ev_lock);
}
static bool saw(const char *id, const char *event)
{
    char want[128];
    snprintf(want, sizeof(want), "%s:%s", id, event);
    bool found = false;
    pthread_mutex_lock(&ev_lock);
    for (int i = 0; i < nevents; i++)
        found |= strcmp(events[i], want) == 0;
    pthread_mutex_unlock(&ev_lock);
    return found;
}

static bool info_of(const char *id, struct job_info *out)
{
    struct job_info *all;
    size_t n;
    if (job_list(NULL, &all, &n) != 0)
        return false;
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].id, id) == 0) {
            *out = all[i];
            found = true;
        }
    free(all);
    return found;
}

/* Wait (up to 20 s) until the job is in status s. */
static bool wait_status(const char *id, enum job_status s)
{
    struct job_info info;
    for (int i = 0; i < 20000; i++) {
        if (info_of(id, &info) && info.status == s)
            return true;
        usleep(1000);
    }
    return false;
}

static int start(const char *id, uint32_t settings, uint64_t speed)
{
    char err[256];
    struct job_params p = { .type = "test", .id = id, .speed = speed,
                            .granularity = settings };
    return job_start_with_driver(&test_driver, &p, &owner, err, sizeof(err));
}

static void runs_to_completion(void)
{
    struct job_info info;
    CHECK_EQ(start("a", 8, 0), 0);
    CHECK(wait_status("a", JOB_CONCLUDED));
    CHECK(info_of("a", &info));
    CHECK_EQ(info.result, JOB_RESULT_COMPLETED);
    CHECK_EQ(info.done, 8 * CHUNK);
    CHECK_EQ(info.total, 8 * CHUNK);
    CHECK(strcmp(info.type, "test") == 0 && strcmp(info.lun, "lun-a") == 0);
    CHECK(saw("a", JOB_EVENT_STARTED) && saw("a", JOB_EVENT_COMPLETED));
    CHECK(!saw("a", JOB_EVENT_ERROR));
    /* The id is taken until dismissed. */
    CHECK_EQ(start("a", 1, 0), -EEXIST);
    char err[256];
    CHECK_EQ(job_dismiss("a", err, sizeof(err)), 0);
    CHECK(!info_of("a", &info));
    CHECK_EQ(job_dismiss("a", err, sizeof(err)), -ENOENT);
}

static void pause_resume_cancel(void)
{
    char err[256];
    struct job_info info;
    /* Slow enough (64 KiB at 256 KiB/s) to be caught running. */
    CHECK_EQ(start("p", 1000, 256 * 1024), 0);
    CHECK(wait_status("p", JOB_RUNNING));
    CHECK_EQ(job_resume("p", err, sizeof(err)), -EBUSY); /* not paused */
    CHECK_EQ(job_pause("p", err, sizeof(err)), 0);
    CHECK(wait_status("p", JOB_PAUSED));
    CHECK(info_of("p", &info));
    uint64_t done = info.done;
    usleep(300000);
    CHECK(info_of("p", &info));
    CHECK_EQ(info.done, done); /* paused: nothing copied */
    CHECK_EQ(job_complete("p", err, sizeof(err)), -EBUSY); /* not ready */
    CHECK_EQ(job_resume("p", err, sizeof(err)), 0);
    CHECK(wait_status("p", JOB_RUNNING));
    CHECK_EQ(job_cancel("p", err, sizeof(err)), 0);
    CHECK(wait_status("p", JOB_CONCLUDED));
    CHECK(info_of("p", &info));
    CHECK_EQ(info.result, JOB_RESULT_CANCELLED);
    CHECK(info.done < 1000ull * CHUNK);
    CHECK_EQ(job_cancel("p", err, sizeof(err)), -EBUSY); /* concluded */
    CHECK_EQ(job_dismiss("p", err, sizeof(err)), 0);
    /* A paused job can be cancelled. */
    CHECK_EQ(start("p2", 1000, 256 * 1024), 0);
    CHECK_EQ(job_pause("p2", err, sizeof(err)), 0);
    CHECK(wait_status("p2", JOB_PAUSED));
    CHECK_EQ(job_cancel("p2", err, sizeof(err)), 0);
    CHECK(wait_status("p2", JOB_CONCLUDED));
    CHECK(info_of("p2", &info) && info.result == JOB_RESULT_CANCELLED);
    CHECK_EQ(job_dismiss("p2", err, sizeof(err)), 0);
}

static void ready_and_complete(void)
{
    char err[256];
    struct job_info info;
    CHECK_EQ(start("r", 4 | 0x10000, 0), 0);
    CHECK(wait_status("r", JOB_READY));
    CHECK(saw("r", JOB_EVENT_READY));
    usleep(50000);
    CHECK(info_of("r", &info) && info.status == JOB_READY); /* it waits */
    /* Paused while ready, it comes back ready. */
    CHECK_EQ(job_pause("r", err, sizeof(err)), 0);
    CHECK(wait_status("r", JOB_PAUSED));
    CHECK_EQ(job_resume("r", err, sizeof(err)), 0);
    CHECK(wait_status("r", JOB_READY));
    CHECK_EQ(job_complete("r", err, sizeof(err)), 0);
    CHECK(wait_status("r", JOB_CONCLUDED));
    CHECK(info_of("r", &info) && info.result == JOB_RESULT_COMPLETED);
    CHECK_EQ(job_dismiss("r", err, sizeof(err)), 0);
}

static void failures(void)
{
    char err[256];
    struct job_info info;
    CHECK_EQ(start("f", 10 | 0x20000, 0), 0);
    CHECK(wait_status("f", JOB_CONCLUDED));
    CHECK(info_of("f", &info));
    CHECK_EQ(info.result, JOB_RESULT_FAILED);
    CHECK(strstr(info.error, "test driver failed at chunk 3") != NULL);
    CHECK(saw("f", JOB_EVENT_ERROR) && saw("f", JOB_EVENT_COMPLETED));
    CHECK_EQ(job_dismiss("f", err, sizeof(err)), 0);
    /* A start the driver refuses leaves nothing listed. */
    CHECK_EQ(start("g", 0x40000, 0), -EINVAL);
    CHECK(!info_of("g", &info));
    CHECK_EQ(job_pause("nope", err, sizeof(err)), -ENOENT);
}

/* The speed limit is an upper bound on what is copied in a time (never a
 * lower one: a busy machine may copy less). */
static void speed_limit(void)
{
    char err[256];
    struct job_info info;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(start("s", 10000, 1024 * 1024), 0);
    usleep(1500000);
    CHECK(info_of("s", &info));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* At most one window's overshoot: one chunk. */
    CHECK(info.done <= (uint64_t)(secs * 1024 * 1024) + CHUNK);
    CHECK(info.done > 0);
    /* Raising the speed takes effect at once. */
    CHECK_EQ(job_set_speed("s", 0, err, sizeof(err)), 0);
    CHECK(wait_status("s", JOB_CONCLUDED));
    CHECK(info_of("s", &info) && info.done == 10000ull * CHUNK);
    CHECK_EQ(job_dismiss("s", err, sizeof(err)), 0);
}

static void cancel_all_of_a_lun(void)
{
    int before = destroyed, concluded_before = concluded_calls;
    CHECK_EQ(start("c1", 10000, 64 * 1024), 0);
    CHECK(wait_status("c1", JOB_RUNNING));
    job_cancel_all("lun-a");
    struct job_info info;
    CHECK(!info_of("c1", &info));
    CHECK_EQ(destroyed, before + 1);
    CHECK_EQ(concluded_calls, concluded_before + 1);
}

int main(void)
{
    job_set_event_hook(hook);
    runs_to_completion();
    pause_resume_cancel();
    ready_and_complete();
    failures();
    speed_limit();
    cancel_all_of_a_lun();
    return check_summary("test_job");
}
