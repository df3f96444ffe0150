/* qlun — flush generations: flushes skipped when nothing was written,
 * merged when they run concurrently, never acknowledging a write that
 * completed after the fdatasync began; the flush error stays sticky.
 *
 * fdatasync calls are counted through the host_sys table (block/host.h).
 * Checked on a raw image, on the host layer directly, and on qcow2 (an
 * allocating write, then in-place overwrites: the data-only flush).
 *
 * "Can it fail?"  With host_flush() issuing fdatasync unconditionally,
 * the "no write → no fdatasync" and "N flushers → few fdatasyncs" checks
 * fail; with a waiting flush treating the running one as enough (return
 * when it ends), the "write during a flush" check fails; with the
 * generation check before the flush_error check, the sticky check fails.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "block/host.h"
#include "qtest.h"

static int (*real_fdatasync)(int fd);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static atomic_int n_sync;
static atomic_int n_pwritev;
static atomic_int sync_delay_ms;     /* sleep inside each fdatasync */
static atomic_int sync_fail_next;    /* fail the next fdatasync with EIO */
/* Gate: the next fdatasync waits inside until released. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_armed, gate_inside, gate_open;
/* pwritev calls completed when each fdatasync started (first 16). */
static int writes_at_sync[16];

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

static int hook_fdatasync(int fd)
{
    int i = atomic_fetch_add(&n_sync, 1);
    if (i < 16)
        writes_at_sync[i] = atomic_load(&n_pwritev);
    pthread_mutex_lock(&gate_lock);
    if (gate_armed) {
        gate_armed = false;
        gate_inside = true;
        pthread_cond_broadcast(&gate_cond);
        while (!gate_open)
            pthread_cond_wait(&gate_cond, &gate_lock);
    }
    pthread_mutex_unlock(&gate_lock);
    int ms = atomic_load(&sync_delay_ms);
    if (ms)
        sleep_ms(ms);
    if (atomic_exchange(&sync_fail_next, 0)) {
        errno = EIO;
        return -1;
    }
    return real_fdatasync(fd);
}

static ssize_t hook_pwritev(int fd, const struct iovec *iov, int cnt,
                            off_t off)
{
    ssize_t n = real_pwritev(fd, iov, cnt, off);
    atomic_fetch_add(&n_pwritev, 1);
    return n;
}

static int syncs(void)
{
    return atomic_load(&n_sync);
}

/* ---- N threads flush at once ---- */

struct flusher {
    struct image *img;
    pthread_barrier_t *start;
    int ret;
};

static void *flush_thread(void *arg)
{
    struct flusher *f = arg;
    pthread_barrier_wait(f->start);
    f->ret = image_flush(f->img);
    return NULL;
}

enum { FLUSHERS = 8 };

/* After one write, FLUSHERS threads flush together: they must share
 * fdatasyncs.  One is needed; a second may start for a thread that came in
 * while the first was running (it cannot know the first covers it only
 * if nothing was written in between, and that is what generations tell). */
static void check_concurrent_flushes(struct image *img, const char *what)
{
    pthread_t t[FLUSHERS];
    struct flusher f[FLUSHERS];
    pthread_barrier_t start;
    uint8_t buf[4096];

    memset(buf, 0x5c, sizeof(buf));
    QT_CHECK(image_write(img, buf, sizeof(buf), 0, 0) == 0);
    pthread_barrier_init(&start, NULL, FLUSHERS);
    atomic_store(&sync_delay_ms, 100);
    int before = syncs();
    for (int i = 0; i < FLUSHERS; i++) {
        f[i] = (struct flusher){ img, &start, -1 };
        pthread_create(&t[i], NULL, flush_thread, &f[i]);
    }
    for (int i = 0; i < FLUSHERS; i++) {
        pthread_join(t[i], NULL);
        QT_CHECK(f[i].ret == 0);
    }
    atomic_store(&sync_delay_ms, 0);
    pthread_barrier_destroy(&start);
    int n = syncs() - before;
    printf("%s: %d concurrent flushes after one write: %d fdatasync\n", what,
           FLUSHERS, n);
    if (n < 1 || n > 2)
        QT_FAIL("%s: %d concurrent flushes made %d fdatasyncs (want 1-2)",
                what, FLUSHERS, n);
}

/* Flush without writes: no fdatasync.  One write: exactly one more (for a
 * format whose write changes no metadata: raw, in-place qcow2). */
static void check_skip(struct image *img, const char *what, uint64_t off)
{
    uint8_t buf[4096];
    memset(buf, 0xa7, sizeof(buf));
    QT_CHECK(image_flush(img) == 0);
    int before = syncs();
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(image_flush(img) == 0);
    if (syncs() != before)
        QT_FAIL("%s: flush with nothing written made %d fdatasync(s)", what,
                syncs() - before);
    QT_CHECK(image_write(img, buf, sizeof(buf), off, 0) == 0);
    QT_CHECK(image_flush(img) == 0);
    if (syncs() != before + 1)
        QT_FAIL("%s: write + flush made %d fdatasyncs, want 1", what,
                syncs() - before);
    QT_CHECK(image_flush(img) == 0);
    if (syncs() != before + 1)
        QT_FAIL("%s: second flush after one write made an fdatasync", what);
}

/* ---- a write completing during a running flush ---- */

struct host_flusher {
    struct host *h;
    int ret;
};

static void *host_flush_thread(void *arg)
{
    struct host_flusher *f = arg;
    f->ret = host_flush(f->h);
    return NULL;
}

/* Flush A is inside fdatasync when write 2 completes and flush B starts.
 * B must not return on A's fdatasync (it began before write 2): it must
 * make its own, one that began after write 2 returned. */
static void check_write_during_flush(const char *dir)
{
    char path[4200], err[256];
    struct host h;
    snprintf(path, sizeof(path), "%s/during.raw", dir);
    QT_CHECK(qt_write_file(path, "", 0));
    if (host_open(&h, path, 0, err, sizeof(err)) < 0) {
        QT_FAIL("host_open: %s", err);
        return;
    }
    uint8_t buf[512];
    memset(buf, 1, sizeof(buf));
    QT_CHECK(host_pwrite(&h, buf, sizeof(buf), 0) == 0);
    atomic_store(&n_sync, 0);

    pthread_mutex_lock(&gate_lock);
    gate_armed = true;
    gate_inside = gate_open = false;
    pthread_mutex_unlock(&gate_lock);
    struct host_flusher a = { &h, -1 }, b = { &h, -1 };
    pthread_t ta, tb;
    pthread_create(&ta, NULL, host_flush_thread, &a);
    pthread_mutex_lock(&gate_lock);
    while (!gate_inside)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);

    int writes_before = atomic_load(&n_pwritev);
    QT_CHECK(host_pwrite(&h, buf, sizeof(buf), 512) == 0); /* write 2 */
    pthread_create(&tb, NULL, host_flush_thread, &b);
    sleep_ms(50); /* let B find A running and wait */
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    QT_CHECK(a.ret == 0 && b.ret == 0);
    int n = syncs();
    if (n != 2)
        QT_FAIL("write during a flush: %d fdatasyncs, want 2 (the second "
                "covering the write)", n);
    else if (writes_at_sync[1] <= writes_before)
        QT_FAIL("the second fdatasync started before write 2 completed");
    /* And A's flush alone did not count as covering write 2. */
    QT_CHECK(host_flush(&h) == 0);
    QT_CHECK(syncs() == n);
    host_close(&h);
}

/* ---- sticky error ---- */

static void check_sticky(struct image *img, const char *what)
{
    uint8_t buf[4096] = { 0 };
    QT_CHECK(image_write(img, buf, sizeof(buf), 8192, 0) == 0);
    atomic_store(&sync_fail_next, 1);
    int r = image_flush(img);
    if (r != -EIO)
        QT_FAIL("%s: failing fdatasync: flush returned %d", what, r);
    /* Nothing written since: a generation check alone would say "clean". */
    r = image_flush(img);
    if (r != -EIO)
        QT_FAIL("%s: flush after a failed fdatasync returned %d, want -EIO",
                what, r);
    r = image_write(img, buf, sizeof(buf), 0, 0);
    if (r != -EIO)
        QT_FAIL("%s: write after a failed fdatasync returned %d", what, r);
}

static struct image *open_fmt(const char *path, const char *fmt)
{
    char err[512];
    struct image *img = NULL;
    struct image_open_opts o = { .path = path, .format = fmt,
                                 .backing_root = "/" };
    if (image_open(&o, &img, err, sizeof(err)) < 0) {
        QT_FAIL("open %s: %s", path, err);
        return NULL;
    }
    return img;
}

static void test_raw(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/a.raw", dir);
    if (!qt_must("truncate -s 4M '%s'", path))
        return;
    struct image *img = open_fmt(path, "raw");
    if (!img)
        return;
    check_skip(img, "raw", 4096);
    check_concurrent_flushes(img, "raw");
    check_sticky(img, "raw");
    image_close(img);
}

static void test_qcow2(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/a.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 4M", path))
        return;
    struct image *img = open_fmt(path, "qcow2");
    if (!img)
        return;
    uint8_t buf[65536];
    memset(buf, 0x11, sizeof(buf));
    /* Allocate cluster 0 and make it durable: later writes are in place. */
    QT_CHECK(image_write(img, buf, sizeof(buf), 0, 0) == 0);
    int before = syncs();
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(syncs() > before);
    check_skip(img, "qcow2 in place", 4096);
    check_concurrent_flushes(img, "qcow2 in place");
    /* An allocating write then needs its metadata flushed, once. */
    QT_CHECK(image_write(img, buf, 4096, 1 << 20, 0) == 0);
    before = syncs();
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(syncs() > before);
    before = syncs();
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(syncs() == before);
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    if (!(img = open_fmt(path, "qcow2")))
        return;
    uint8_t back[4096];
    QT_CHECK(image_read(img, back, sizeof(back), 1 << 20) == 0);
    QT_CHECK(memcmp(back, buf, sizeof(back)) == 0);
    check_sticky(img, "qcow2");
    image_close(img);
}

int main(void)
{
    qt_require_qemu();
    real_fdatasync = host_sys.fdatasync;
    real_pwritev = host_sys.pwritev;
    host_sys.fdatasync = hook_fdatasync;
    host_sys.pwritev = hook_pwritev;
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "flushgen");
    test_raw(dir);
    test_qcow2(dir);
    check_write_during_flush(dir);
    qt_rmtree(dir);
    printf("%s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
