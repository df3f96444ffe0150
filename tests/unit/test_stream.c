/* The stream job (block/stream.c) on qemu-img-made 3-deep chains
 * (raw and qcow2 bases), run by the job runner over a stand-in LUN (an
 * owner with a drain and a job slot) while threads write stamped blocks
 * through what the LUN serves:
 *  - into the LUN's top without a base (the chain ends at top) and with
 *    one (top's backing file becomes base); into an intermediate layer;
 *  - pause/resume and cancel at random points (cancel: chain unchanged);
 *  - ENOSPC (streaming into the top) or EIO (into an intermediate) on
 *    every host write mid-way: the job fails with the error, the chain
 *    is unchanged and checks clean.
 * After each: content = the model (what the chain read before, with the
 * acknowledged writes on top), qemu-img info --backing-chain shows the
 * expected chain, qemu-img check clean on every image.
 * Needs qemu-img (77 = skip). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/host.h"
#include "block/image.h"
#include "block/job.h"
#include "tests/qcow2/qtest.h"

#define SIZE (8u << 20)
#define BLOCK 4096u
#define WRITERS 2

/* ---- a stand-in LUN ---- */
struct lun {
    pthread_rwlock_t drain;      /* commands shared, the drain exclusive */
    struct image *top, *slot;    /* slot: the job's filter, or NULL */
    char dir[4096];
    _Atomic int concluded;
};

static struct image *served(struct lun *l) { return l->slot ? l->slot : l->top; }
static void drain_begin(void *o) { pthread_rwlock_wrlock(&((struct lun *)o)->drain); }
static void drain_end(void *o) { pthread_rwlock_unlock(&((struct lun *)o)->drain); }
static unsigned in_flight(void *o) { (void)o; return 0; }
static struct image *lun_top(void *o) { return ((struct lun *)o)->top; }
static int filter_insert(void *o, const struct block_driver *drv,
                         struct image **node, char *err, size_t errlen)
{
    struct lun *l = o;
    struct image *edge = l->top;
    int ret = image_insert_filter(&edge, drv, err, errlen);
    if (ret == 0)
        *node = l->slot = edge;
    return ret;
}
static void filter_remove(void *o)
{
    struct lun *l = o;
    struct image *edge = l->slot;
    l->slot = NULL;
    image_remove_filter(&edge);
}
static struct image *switch_top(void *o, struct image *t)
{
    struct lun *l = o;
    struct image *old = l->top;
    l->top = t;
    return old;
}
static void open_opts(void *o, struct image_open_opts *opts)
{
    opts->backing_root = ((struct lun *)o)->dir;
}
static void concluded(void *o, struct job *j)
{
    (void)j;
    atomic_store(&((struct lun *)o)->concluded, 1);
}

/* ---- the model and the writers ---- */
static uint8_t *model;                 /* what the LUN must read */
static _Atomic int stop_writers;
static struct lun *the_lun;

static void *writer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id * 31337u + 1;
    uint8_t buf[BLOCK];
    for (uint32_t r = 1; !atomic_load(&stop_writers); r++) {
        /* Writer id owns blocks b with b % WRITERS == id. */
        uint64_t b = (uint64_t)(rand_r(&seed) % (SIZE / BLOCK / WRITERS)) *
                     WRITERS + id;
        memset(buf, (int)(0x80 + id * 16 + r % 16), BLOCK);
        pthread_rwlock_rdlock(&the_lun->drain);
        int ret = image_write(served(the_lun), buf, BLOCK, b * BLOCK, 0);
        pthread_rwlock_unlock(&the_lun->drain);
        if (ret == 0)
            memcpy(model + b * BLOCK, buf, BLOCK);
        else
            QT_FAIL("writer: %s", strerror(-ret));
        usleep(300);
    }
    return NULL;
}

/* ---- fixtures ---- */
/* base (raw or qcow2): 0x11 over [0, 3M); mid: 0x22 over [2M, 5M), zeros
 * over [6M, 7M); top: 0x33 over [4M, 4.5M). */
static bool make_chain(const char *dir, bool raw_base)
{
    const char *bf = raw_base ? "raw" : "qcow2";
    return qt_must("cd '%s' && qemu-img create -q -f %s base.img 8M && "
                   "qemu-io -f %s -c 'write -P 0x11 0 3M' base.img && "
                   "qemu-img create -q -f qcow2 -b base.img -F %s mid.qcow2 "
                   "8M && qemu-io -f qcow2 -c 'write -P 0x22 2M 3M' "
                   "-c 'write -z 6M 1M' mid.qcow2 && qemu-img create -q -f "
                   "qcow2 -b mid.qcow2 -F qcow2 top.qcow2 8M && qemu-io -f "
                   "qcow2 -c 'write -P 0x33 4M 512k' top.qcow2", dir, bf, bf,
                   bf);
}

static struct image *open_image(const char *dir, const char *name)
{
    char path[4200], err[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct image_open_opts o = { .path = path, .format = "qcow2",
                                 .backing_root = dir };
    struct image *img = NULL;
    if (image_open(&o, &img, err, sizeof(err)) < 0)
        QT_FAIL("open %s: %s", path, err);
    return img;
}

/* The chain as qemu-img sees it, file names from the top down. */
static void expect_chain(const char *dir, const char *want)
{
    char out[8192], got[512] = "";
    if (qt_run_out(out, sizeof(out), "cd '%s' && qemu-img info "
                   "--backing-chain --output=json top.qcow2 | python3 -c "
                   "'import json,sys,os; print(\" \".join(os.path.basename("
                   "i[\"filename\"]) for i in json.load(sys.stdin)))'",
                   dir) != 0) {
        QT_FAIL("qemu-img info: %s", out);
        return;
    }
    sscanf(out, "%511[^\n]", got);
    if (strcmp(got, want) != 0)
        QT_FAIL("chain is '%s', want '%s'", got, want);
}

static void expect_clean(const char *dir)
{
    QT_CHECK(qt_run("cd '%s' && for f in *.qcow2 base.img; do "
                    "qemu-img info $f | grep -q 'file format: raw' || "
                    "qemu-img check -q $f || exit 1; done", dir) == 0);
}

static void expect_model(const char *dir)
{
    struct image *img = open_image(dir, "top.qcow2");
    if (!img)
        return;
    uint8_t *buf = malloc(SIZE);
    QT_CHECK(image_read(img, buf, SIZE, 0) == 0);
    if (memcmp(buf, model, SIZE) != 0) {
        uint64_t i = 0;
        while (buf[i] == model[i])
            i++;
        QT_FAIL("content differs from the model at %" PRIu64
                " (0x%02x, want 0x%02x)", i, buf[i], model[i]);
    }
    free(buf);
    image_close(img);
}

static struct job_info wait_concluded(const char *id)
{
    struct job_info r = { 0 };
    for (int i = 0; i < 6000; i++) {
        struct job_info *list;
        size_t n;
        job_list(NULL, &list, &n);
        for (size_t k = 0; k < n; k++)
            if (strcmp(list[k].id, id) == 0)
                r = list[k];
        free(list);
        if (r.status == JOB_CONCLUDED)
            break;
        usleep(10000);
    }
    return r;
}

enum action { RUN, CANCEL, PAUSE_RESUME, FAIL_ENOSPC, FAIL_EIO };

static _Atomic int fail_writes;
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t failing_pwritev(int fd, const struct iovec *iov, int cnt,
                               off_t off)
{
    int e = atomic_load(&fail_writes);
    if (e) {
        errno = e;
        return -1;
    }
    return real_pwritev(fd, iov, cnt, off);
}

/* One stream on a fresh chain; returns the job's end. */
static struct job_info stream_case(const char *name, bool raw_base,
                                   const char *top, const char *base,
                                   enum action act, const char *want_chain)
{
    static int serial;
    struct lun l = { .concluded = 0 };
    struct job_info info = { 0 };
    qt_mkdtemp(l.dir, sizeof(l.dir), "stream");
    if (!make_chain(l.dir, raw_base))
        return info;
    pthread_rwlock_init(&l.drain, NULL);
    l.top = open_image(l.dir, "top.qcow2");
    if (!l.top)
        return info;
    model = malloc(SIZE);
    QT_CHECK(image_read(l.top, model, SIZE, 0) == 0);
    the_lun = &l;
    struct job_owner owner = {
        .opaque = &l, .lun = "lun0", .drain_begin = drain_begin,
        .drain_end = drain_end, .in_flight = in_flight, .top = lun_top,
        .filter_insert = filter_insert, .filter_remove = filter_remove,
        .switch_top = switch_top, .open_opts = open_opts,
        .concluded = concluded,
    };
    char id[32], topp[4200], basep[4200], err[512];
    snprintf(id, sizeof(id), "s%d", serial++);
    snprintf(topp, sizeof(topp), "%s/%s", l.dir, top ? top : "");
    snprintf(basep, sizeof(basep), "%s/%s", l.dir, base ? base : "");
    struct job_params p = { .type = "stream", .id = id,
                            .top = top ? topp : NULL,
                            .base = base ? basep : NULL,
                            /* slow enough to be caught mid-way */
                            .speed = act == RUN ? 0 : 2u << 20 };
    atomic_store(&stop_writers, 0);
    pthread_t th[WRITERS];
    bool fails = act == FAIL_ENOSPC || act == FAIL_EIO;
    int nw = fails ? 0 : WRITERS;
    for (uintptr_t i = 0; i < (uintptr_t)nw; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    int ret = job_start(&p, &owner, err, sizeof(err));
    if (ret < 0)
        QT_FAIL("%s: job_start: %s", name, err);
    usleep((useconds_t)(100000 + rand() % 300000));
    if (ret == 0 && act == CANCEL)
        QT_CHECK(job_cancel(id, err, sizeof(err)) == 0);
    if (ret == 0 && act == PAUSE_RESUME) {
        if (job_pause(id, err, sizeof(err)) != 0)
            QT_FAIL("job_pause: %s", err);
        usleep(200000);
        struct job_info *list;
        size_t n;
        job_list("lun0", &list, &n);
        QT_CHECK(n == 1 && list[0].status == JOB_PAUSED);
        uint64_t done = n ? list[0].done : 0;
        free(list);
        usleep(100000);
        job_list("lun0", &list, &n);
        QT_CHECK(n == 1 && list[0].done == done); /* nothing while paused */
        free(list);
        QT_CHECK(job_resume(id, err, sizeof(err)) == 0);
    }
    if (ret == 0 && fails)
        atomic_store(&fail_writes, act == FAIL_EIO ? EIO : ENOSPC);
    if (ret == 0)
        info = wait_concluded(id);
    atomic_store(&fail_writes, 0);
    atomic_store(&stop_writers, 1);
    for (int i = 0; i < nw; i++)
        pthread_join(th[i], NULL);
    if (ret == 0) {
        QT_CHECK(info.status == JOB_CONCLUDED && atomic_load(&l.concluded));
        QT_CHECK(job_dismiss(id, err, sizeof(err)) == 0);
    }
    QT_CHECK(l.slot == NULL);
    QT_CHECK(image_close(l.top) == 0);
    expect_chain(l.dir, want_chain);
    expect_clean(l.dir);
    expect_model(l.dir);
    free(model);
    pthread_rwlock_destroy(&l.drain);
    if (qt_failed)
        fprintf(stderr, "(case %s in %s)\n", name, l.dir);
    else
        qt_rmtree(l.dir);
    return info;
}

int main(void)
{
    qt_require_qemu();
    if (qt_run("command -v python3") != 0)
        return SKIP_CODE;
    srand((unsigned)time(NULL));
    real_pwritev = host_sys.pwritev;
    host_sys.pwritev = failing_pwritev;
    struct job_info r;
    for (int raw = 0; raw < 2; raw++) {
        r = stream_case("all into top", raw, NULL, NULL, RUN, "top.qcow2");
        QT_CHECK(r.result == JOB_RESULT_COMPLETED);
        QT_CHECK(r.total > 0 && r.done <= r.total);
        r = stream_case("above base", raw, NULL, "base.img", RUN,
                        "top.qcow2 base.img");
        QT_CHECK(r.result == JOB_RESULT_COMPLETED);
        r = stream_case("into mid", raw, "mid.qcow2", NULL, RUN,
                        "top.qcow2 mid.qcow2");
        QT_CHECK(r.result == JOB_RESULT_COMPLETED);
    }
    r = stream_case("pause/resume", false, NULL, "base.img", PAUSE_RESUME,
                    "top.qcow2 base.img");
    QT_CHECK(r.result == JOB_RESULT_COMPLETED);
    r = stream_case("cancel", false, NULL, NULL, CANCEL,
                    "top.qcow2 mid.qcow2 base.img");
    QT_CHECK(r.result == JOB_RESULT_CANCELLED);
    r = stream_case("ENOSPC", true, NULL, NULL, FAIL_ENOSPC,
                    "top.qcow2 mid.qcow2 base.img");
    QT_CHECK(r.result == JOB_RESULT_FAILED);
    QT_CHECK(strstr(r.error, "No space left") != NULL);
    r = stream_case("EIO", false, "mid.qcow2", NULL, FAIL_EIO,
                    "top.qcow2 mid.qcow2 base.img");
    QT_CHECK(r.result == JOB_RESULT_FAILED);
    QT_CHECK(strstr(r.error, "Input/output error") != NULL);
    printf("test_stream: %s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
