/* qlun — writes in place share the guest range lock.
 *
 * 1. Concurrency proof: THREADS threads each write 4 KiB into one 64 KiB
 *    cluster we own (fully allocated).  A host_sys pwritev hook holds each
 *    such write until THREADS of them are inside at once; if that does not
 *    happen within a few seconds, the writes were serialised: failure.
 *    The same with extended L2 (every subcluster allocated).
 * 2. The lock is not shared when it must not be: an allocating write
 *    (extended L2 subcluster not yet allocated) must not run alongside an
 *    in-place write of the same cluster (checked with the same hook: the
 *    second writer must not get in while the first is held).
 * 3. Mixed workload, checked against a model: threads own byte slices of
 *    the same clusters and do in-place writes, allocating writes, zeroes,
 *    partial discards and reads there; a discarder thread frees whole
 *    clusters (while no worker is inside that cluster, so the model stays
 *    exact) so that the next writes allocate again.  At the end: every
 *    byte against the model, `qemu-img check` clean.
 *
 * "Can it fail?"  With qcow2_writev taking the range lock exclusively for
 * every write (as before), part 1 times out; with write_cluster not
 * refusing (-EAGAIN) a non-owned cluster under the shared lock, part 2
 * sees two writers inside one cluster and part 3's model check or
 * `qemu-img check` fails.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "block/host.h"
#include "common/util.h"
#include "qtest.h"

enum { THREADS = 8, CS = 65536, WSIZE = 4096 };

static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);

/* The hook holds pwritevs of exactly hold_len bytes while armed. */
static pthread_mutex_t hk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hk_cond = PTHREAD_COND_INITIALIZER;
static bool hk_armed;
static size_t hk_len;
static int hk_want;      /* release when this many are inside at once */
static int hk_inside, hk_max;
static int hk_timeout_ms;

static ssize_t hook_pwritev(int fd, const struct iovec *iov, int cnt,
                            off_t off)
{
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&hk_lock);
    if (hk_armed && len == hk_len) {
        hk_inside++;
        hk_max = MAX(hk_max, hk_inside);
        pthread_cond_broadcast(&hk_cond);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += hk_timeout_ms / 1000;
        until.tv_nsec += (long)(hk_timeout_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        while (hk_inside < hk_want &&
               pthread_cond_timedwait(&hk_cond, &hk_lock, &until) == 0)
            ;
        /* Once THREADS were in together, let everyone through. */
        if (hk_inside >= hk_want)
            hk_armed = false;
        hk_inside--;
    }
    pthread_mutex_unlock(&hk_lock);
    return real_pwritev(fd, iov, cnt, off);
}

static void hook_arm(size_t len, int want, int timeout_ms)
{
    pthread_mutex_lock(&hk_lock);
    hk_armed = true;
    hk_len = len;
    hk_want = want;
    hk_inside = hk_max = 0;
    hk_timeout_ms = timeout_ms;
    pthread_mutex_unlock(&hk_lock);
}

static int hook_disarm(void)
{
    pthread_mutex_lock(&hk_lock);
    hk_armed = false;
    int m = hk_max;
    pthread_mutex_unlock(&hk_lock);
    return m;
}

struct writer {
    struct image *img;
    uint64_t off;
    size_t len;
    uint8_t fill;
    int ret;
};

static void *write_thread(void *arg)
{
    struct writer *w = arg;
    uint8_t buf[WSIZE];
    memset(buf, w->fill, sizeof(buf));
    w->ret = image_write(w->img, buf, w->len, w->off, 0);
    return NULL;
}

/* THREADS 4 KiB writes into cluster 0 at once: all inside pwritev
 * together, so none waited for another's range lock. */
static void check_parallel_in_place(const char *dir, const char *opts)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/par.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' 1M && qemu-io -c "
                 "'write -P 1 0 64k' '%s'", opts, path, path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    pthread_t t[THREADS];
    struct writer w[THREADS];
    hook_arm(WSIZE, THREADS, 10000);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer){ img, (uint64_t)i * WSIZE, WSIZE,
                                (uint8_t)(0x40 + i), -1 };
        pthread_create(&t[i], NULL, write_thread, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        QT_CHECK(w[i].ret == 0);
    }
    int most = hook_disarm();
    printf("%s: %d in-place writes to one cluster, at most %d at once\n",
           opts, THREADS, most);
    if (most < THREADS)
        QT_FAIL("%s: in-place writes into one owned cluster serialised "
                "(%d of %d at once)", opts, most, THREADS);
    uint8_t buf[WSIZE];
    for (int i = 0; i < THREADS; i++) {
        QT_CHECK(image_read(img, buf, sizeof(buf), (uint64_t)i * WSIZE) == 0);
        QT_CHECK(buf[0] == 0x40 + i && buf[WSIZE - 1] == 0x40 + i);
    }
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
}

/* Extended L2, subcluster 1 unallocated: a write there updates the L2
 * bitmap, so it must hold the cluster alone: it never shares pwritev time
 * with an in-place write to subcluster 0 of the same cluster. */
static void check_allocating_excludes(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/excl.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o extended_l2=on '%s' 1M && "
                 "qemu-io -c 'write -P 1 0 2k' '%s'", path, path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    /* Subclusters are 2 KiB: write 2 KiB into subcluster 0 (in place, it
     * is allocated... but the cluster is not fully allocated, so this one
     * is exclusive too) and subcluster 5 (allocating). */
    pthread_t t[2];
    struct writer w[2] = { { img, 0, 2048, 0x21, -1 },
                           { img, 5 * 2048, 2048, 0x22, -1 } };
    hook_arm(2048, 2, 1000);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, write_thread, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    int most = hook_disarm();
    QT_CHECK(w[0].ret == 0 && w[1].ret == 0);
    if (most != 1)
        QT_FAIL("writes needing an L2 update ran together (%d at once)",
                most);
    uint8_t buf[2048];
    QT_CHECK(image_read(img, buf, 2048, 5 * 2048) == 0 && buf[7] == 0x22);
    QT_CHECK(image_read(img, buf, 2048, 0) == 0 && buf[7] == 0x21);
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
}

/* ---- mixed workload against a model ---- */

enum { MIX_CLUSTERS = 16, MIX_OPS = 1500 };

struct mix {
    struct image *img;
    uint8_t *model;                 /* MIX_CLUSTERS * CS */
    uint32_t cs;
    pthread_rwlock_t cl_lock[MIX_CLUSTERS]; /* test side: whole-cluster
                                             * discards vs slice owners */
    uint64_t seed;
    atomic_int stop;
    pthread_mutex_t fail_lock;
    char failure[256];
};

static void mix_fail(struct mix *m, const char *what, uint64_t off, int ret)
{
    pthread_mutex_lock(&m->fail_lock);
    if (!m->failure[0])
        snprintf(m->failure, sizeof(m->failure), "%s at %" PRIu64 ": %d",
                 what, off, ret);
    atomic_store(&m->stop, 1);
    pthread_mutex_unlock(&m->fail_lock);
}

struct mix_worker {
    struct mix *m;
    int id;
};

/* One operation on [off, off+len), inside this thread's slice. */
static void mix_op(struct mix *m, struct qt_rng *r, int id, uint8_t *buf,
                   uint64_t off, uint64_t len)
{
    unsigned k = (unsigned)qt_below(r, 10);
    int ret;
    if (k < 5) {
        for (uint64_t i = 0; i < len; i++)
            buf[i] = (uint8_t)(id * 37 + i + qt_rand(r) % 5 + 1);
        ret = image_write(m->img, buf, len, off, 0);
        memcpy(m->model + off, buf, len);
    } else if (k < 7) {
        ret = image_zero(m->img, off, len, k == 5 ? IMAGE_MAY_UNMAP : 0);
        memset(m->model + off, 0, len);
    } else if (k < 8) {
        ret = image_discard(m->img, off, len);
        memset(m->model + off, 0, len);
    } else {
        ret = image_read(m->img, buf, len, off);
        if (ret == 0 && memcmp(buf, m->model + off, len) != 0)
            ret = -EILSEQ;
    }
    if (ret < 0)
        mix_fail(m, k < 8 ? "modify" : "read", off, ret);
}

static void *mix_work(void *arg)
{
    struct mix_worker *w = arg;
    struct mix *m = w->m;
    const uint64_t slice = m->cs / THREADS;
    uint8_t *buf = malloc(m->cs);
    struct qt_rng r;
    qt_rng_seed(&r, m->seed * 131 + (uint64_t)w->id);
    for (int i = 0; i < MIX_OPS && !atomic_load(&m->stop); i++) {
        uint64_t cl = qt_below(&r, MIX_CLUSTERS);
        uint64_t a = qt_below(&r, slice);
        uint64_t len = 1 + qt_below(&r, slice - a);
        uint64_t off = cl * m->cs + (uint64_t)w->id * slice + a;
        pthread_rwlock_rdlock(&m->cl_lock[cl]);
        mix_op(m, &r, w->id, buf, off, len);
        pthread_rwlock_unlock(&m->cl_lock[cl]);
    }
    free(buf);
    return NULL;
}

/* Frees whole clusters (discard) and rewrites whole clusters (allocating
 * writes over two clusters: write_run), each while the test keeps the
 * workers out of them, so the model stays exact; the engine still sees
 * them next to the workers' requests on the neighbouring clusters. */
static void *mix_discarder(void *arg)
{
    struct mix *m = arg;
    struct qt_rng r;
    uint8_t *buf = malloc(2 * (size_t)m->cs);
    qt_rng_seed(&r, m->seed + 7);
    while (!atomic_load(&m->stop)) {
        uint64_t cl = qt_below(&r, MIX_CLUSTERS - 1);
        bool two = qt_below(&r, 2);
        uint64_t n = two ? 2 : 1, off = cl * m->cs, len = n * m->cs;
        for (uint64_t i = 0; i < n; i++)
            pthread_rwlock_wrlock(&m->cl_lock[cl + i]);
        int ret;
        if (two) {
            memset(buf, (int)(0x80 | qt_below(&r, 64)), len);
            ret = image_discard(m->img, off, len);
            if (ret == 0)
                ret = image_write(m->img, buf, len, off, 0);
            memcpy(m->model + off, buf, len);
        } else {
            ret = image_discard(m->img, off, len);
            memset(m->model + off, 0, len);
        }
        for (uint64_t i = 0; i < n; i++)
            pthread_rwlock_unlock(&m->cl_lock[cl + i]);
        if (ret < 0)
            mix_fail(m, "discarder", off, ret);
        if (qt_below(&r, 4) == 0 && (ret = image_flush(m->img)) < 0)
            mix_fail(m, "flush", 0, ret);
        usleep(500);
    }
    free(buf);
    return NULL;
}

static void check_mixed(const char *dir, const char *opts, uint32_t cs)
{
    char path[4200];
    struct mix m = { .cs = cs, .seed = qt_seed() };
    const uint64_t size = (uint64_t)MIX_CLUSTERS * cs;
    snprintf(path, sizeof(path), "%s/mix.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts,
                 path, size))
        return;
    m.model = calloc(1, size);
    pthread_mutex_init(&m.fail_lock, NULL);
    for (int i = 0; i < MIX_CLUSTERS; i++)
        pthread_rwlock_init(&m.cl_lock[i], NULL);
    if (qt_open(path, false, NULL, &m.img) < 0) {
        QT_FAIL("open");
        free(m.model);
        return;
    }
    pthread_t t[THREADS], d;
    struct mix_worker w[THREADS];
    pthread_create(&d, NULL, mix_discarder, &m);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct mix_worker){ &m, i };
        pthread_create(&t[i], NULL, mix_work, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&m.stop, 1);
    pthread_join(d, NULL);
    if (m.failure[0])
        QT_FAIL("%s seed %" PRIu64 ": %s", opts, m.seed, m.failure);
    qt_compare_image(m.img, m.model, opts);
    QT_CHECK(image_close(m.img) == 0);
    int st = qt_check(path);
    if (st != 0)
        QT_FAIL("%s: qemu-img check exit %d", opts, st);
    printf("mixed %s seed %" PRIu64 ": %s\n", opts, m.seed,
           m.failure[0] || st ? "FAIL" : "ok");
    free(m.model);
}

int main(void)
{
    qt_require_qemu();
    real_pwritev = host_sys.pwritev;
    host_sys.pwritev = hook_pwritev;
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "sharedwrite");
    check_parallel_in_place(dir, "cluster_size=64k");
    check_parallel_in_place(dir, "extended_l2=on");
    check_allocating_excludes(dir);
    check_mixed(dir, "cluster_size=64k", 65536);
    check_mixed(dir, "extended_l2=on", 65536);
    check_mixed(dir, "compat=0.10,cluster_size=4k", 4096);
    qt_rmtree(dir);
    printf("%s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
