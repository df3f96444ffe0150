/* qlun tests — a fake LUN for block job tests: a struct job_owner over a
 * plain image graph, a pthread rwlock as the drain, writer threads that
 * write the LUN while a job runs, and a model of what the LUN must read.
 *
 *   struct job_harness h;
 *   jh_open(&h, "lun-a", top_path, "qcow2", root);   the LUN's graph
 *   jh_writers_start(&h, 2, seed);                   guest writes...
 *   job_start(&params, &h.owner, err, sizeof(err));
 *   jh_wait(&h, "id", &info, 30);                    ...until concluded
 *   jh_writers_stop(&h);
 *   jh_check_content(&h);                            LUN reads == model
 *   jh_close(&h);
 *
 * Guest I/O (jh_io_begin/end) holds the drain's read side; the job's
 * drain_begin takes the write side, so edges change with no request in
 * flight, as the handler's drain does.  Each writer owns a disjoint slice
 * of the LUN, so the model (what the LUN must read) is exact whatever the
 * interleaving.  The LUN serves h.served: the top, or the filters in the
 * job slot above it.
 */
#ifndef QLUN_TESTS_UNIT_JOB_HARNESS_H
#define QLUN_TESTS_UNIT_JOB_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/driver.h"
#include "block/image.h"
#include "block/job.h"
#include "tests/qcow2/qtest.h"

#define JH_MAX_WRITERS 4
#define JH_WRITE_SIZE 4096u

struct job_harness;

struct jh_writer {
    struct job_harness *h;
    pthread_t thread;
    uint64_t slice_off, slice_len;
    uint64_t seed;
    unsigned writes;
};

struct job_harness {
    char lun[64];
    char root[4096];
    struct image *top;       /* the LUN's top format node */
    struct image *served;    /* what the LUN serves: top or filters above */
    pthread_rwlock_t drain;
    _Atomic unsigned in_flight;
    _Atomic int concluded;
    struct job_owner owner;
    uint8_t *model;          /* what the LUN must read */
    struct jh_writer writers[JH_MAX_WRITERS];
    int nwriters;
    _Atomic bool stop;
    _Atomic int write_errors;
};

static void jh_drain_begin(void *o)
{
    pthread_rwlock_wrlock(&((struct job_harness *)o)->drain);
}

static void jh_drain_end(void *o)
{
    pthread_rwlock_unlock(&((struct job_harness *)o)->drain);
}

static unsigned jh_in_flight(void *o)
{
    return atomic_load(&((struct job_harness *)o)->in_flight);
}

static struct image *jh_top(void *o)
{
    return ((struct job_harness *)o)->top;
}

static int jh_filter_insert(void *o, const struct block_driver *drv,
                            struct image **node, char *err, size_t errlen)
{
    struct job_harness *h = o;
    /* The job slot: right above the top, below other filters. */
    struct image **e = &h->served;
    while (*e != h->top)
        e = &(*e)->file;
    int ret = image_insert_filter(e, drv, err, errlen);
    if (ret == 0)
        *node = *e;
    return ret;
}

static void jh_filter_remove(void *o)
{
    struct job_harness *h = o;
    struct image **e = &h->served;
    while (*e != h->top && (*e)->file != h->top)
        e = &(*e)->file;
    if (*e != h->top)
        image_remove_filter(e);
}

static struct image *jh_switch_top(void *o, struct image *new_top)
{
    struct job_harness *h = o;
    struct image **e = &h->served;
    while (*e != h->top)
        e = &(*e)->file;
    struct image *old = h->top;
    *e = new_top;
    h->top = new_top;
    return old;
}

static void jh_open_opts(void *o, struct image_open_opts *opts)
{
    struct job_harness *h = o;
    memset(opts, 0, sizeof(*opts));
    opts->backing_root = h->root;
}

static void jh_concluded(void *o, struct job *job)
{
    (void)job;
    atomic_fetch_add(&((struct job_harness *)o)->concluded, 1);
}

/* Open the LUN's graph (top read-write) and read its content into the
 * model.  Returns 0 or the open's error (printed). */
QT_FN int jh_open(struct job_harness *h, const char *lun, const char *path,
                  const char *format, const char *root)
{
    memset(h, 0, sizeof(*h));
    snprintf(h->lun, sizeof(h->lun), "%s", lun);
    snprintf(h->root, sizeof(h->root), "%s", root);
    struct image_open_opts o = { .path = path, .format = format,
                                 .backing_root = h->root };
    char err[512];
    int ret = image_open(&o, &h->top, err, sizeof(err));
    if (ret < 0) {
        QT_FAIL("open %s: %s", path, err);
        return ret;
    }
    h->served = h->top;
    pthread_rwlock_init(&h->drain, NULL);
    h->owner = (struct job_owner){
        .opaque = h, .lun = h->lun,
        .drain_begin = jh_drain_begin, .drain_end = jh_drain_end,
        .in_flight = jh_in_flight, .top = jh_top,
        .filter_insert = jh_filter_insert, .filter_remove = jh_filter_remove,
        .switch_top = jh_switch_top, .open_opts = jh_open_opts,
        .concluded = jh_concluded,
    };
    h->model = malloc(h->top->size);
    if (!h->model || image_read(h->top, h->model, h->top->size, 0) < 0) {
        QT_FAIL("cannot read %s", path);
        return -EIO;
    }
    return 0;
}

/* Guest I/O: held off while a job has the LUN drained. */
QT_FN void jh_io_begin(struct job_harness *h)
{
    pthread_rwlock_rdlock(&h->drain);
    atomic_fetch_add(&h->in_flight, 1);
}

QT_FN void jh_io_end(struct job_harness *h)
{
    atomic_fetch_sub(&h->in_flight, 1);
    pthread_rwlock_unlock(&h->drain);
}

static void *jh_writer_main(void *arg)
{
    struct jh_writer *w = arg;
    struct job_harness *h = w->h;
    struct qt_rng rng;
    qt_rng_seed(&rng, w->seed);
    uint8_t *buf = malloc(JH_WRITE_SIZE);
    while (buf && !atomic_load(&h->stop)) {
        uint64_t off = w->slice_off +
                       qt_below(&rng, w->slice_len / JH_WRITE_SIZE) *
                           JH_WRITE_SIZE;
        memset(buf, (int)(1 + qt_below(&rng, 255)), JH_WRITE_SIZE);
        jh_io_begin(h);
        int ret = image_write(h->served, buf, JH_WRITE_SIZE, off, 0);
        jh_io_end(h);
        if (ret < 0) {
            atomic_fetch_add(&h->write_errors, 1);
            break;
        }
        /* Only this writer writes its slice: the model is exact. */
        memcpy(h->model + off, buf, JH_WRITE_SIZE);
        w->writes++;
        usleep(200);
    }
    free(buf);
    return NULL;
}

/* n writer threads, each over its own slice of the LUN. */
QT_FN void jh_writers_start(struct job_harness *h, int n, uint64_t seed)
{
    if (n > JH_MAX_WRITERS)
        n = JH_MAX_WRITERS;
    uint64_t slice = h->top->size / (uint64_t)n / JH_WRITE_SIZE *
                     JH_WRITE_SIZE;
    atomic_store(&h->stop, false);
    h->nwriters = n;
    for (int i = 0; i < n; i++) {
        struct jh_writer *w = &h->writers[i];
        *w = (struct jh_writer){ .h = h, .slice_off = slice * (uint64_t)i,
                                 .slice_len = slice, .seed = seed + i };
        pthread_create(&w->thread, NULL, jh_writer_main, w);
    }
}

/* Stop the writers; returns the writes they did. */
QT_FN unsigned jh_writers_stop(struct job_harness *h)
{
    atomic_store(&h->stop, true);
    unsigned writes = 0;
    for (int i = 0; i < h->nwriters; i++) {
        pthread_join(h->writers[i].thread, NULL);
        writes += h->writers[i].writes;
    }
    h->nwriters = 0;
    QT_CHECK(atomic_load(&h->write_errors) == 0);
    return writes;
}

/* The job id's info once concluded (within timeout_s); false if it did
 * not conclude in time. */
QT_FN bool jh_wait(struct job_harness *h, const char *id,
                   struct job_info *out, int timeout_s)
{
    for (int i = 0; i < timeout_s * 100; i++) {
        struct job_info *list;
        size_t n;
        bool done = false;
        if (job_list(h->lun, &list, &n) == 0) {
            for (size_t k = 0; k < n; k++)
                if (strcmp(list[k].id, id) == 0 &&
                    list[k].status == JOB_CONCLUDED) {
                    *out = list[k];
                    done = true;
                }
            free(list);
        }
        if (done)
            return true;
        usleep(10000);
    }
    QT_FAIL("job %s did not conclude within %d s", id, timeout_s);
    return false;
}

/* The status of job id now (JOB_CONCLUDED if it is not listed). */
QT_FN enum job_status jh_status(struct job_harness *h, const char *id)
{
    struct job_info *list;
    size_t n;
    enum job_status s = JOB_CONCLUDED;
    if (job_list(h->lun, &list, &n) == 0) {
        for (size_t k = 0; k < n; k++)
            if (strcmp(list[k].id, id) == 0)
                s = list[k].status;
        free(list);
    }
    return s;
}

/* The LUN reads what the model says. */
QT_FN bool jh_check_content(struct job_harness *h, const char *what)
{
    return qt_compare_image(h->served, h->model, what);
}

/* Write the model to path (a raw file, for qemu-img compare). */
QT_FN bool jh_save_model(struct job_harness *h, const char *path)
{
    return qt_write_file(path, h->model, h->top->size);
}

QT_FN int jh_close(struct job_harness *h)
{
    int ret = image_close(h->served);
    h->served = h->top = NULL;
    free(h->model);
    h->model = NULL;
    pthread_rwlock_destroy(&h->drain);
    return ret;
}

#endif
