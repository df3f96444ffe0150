/* qlun — the qcow2 engine under concurrent load.
 *
 * 8 worker threads on one image over a raw backing file:
 *  - owned region: each thread owns 1/8 of it and does random reads,
 *    writes, zeroes and discards there (multi-cluster, unaligned);
 *  - interleaved region: every cluster is split in 8 slices, thread t owns
 *    slice t of every cluster — so threads allocate (copy-on-write from the
 *    backing file) the same clusters at the same time, and none may lose
 *    another's bytes;
 *  - shared region: never written; every thread reads it and checks it
 *    against the backing data while the others allocate.
 * A ninth thread flushes and queries block status.  Each thread keeps its
 * own bytes of the model, so the model stays exact.  At the end: a full
 * comparison, `qemu-img check` clean, `qemu-img compare` identical.
 */
#include <pthread.h>

#include "common/iov.h"
#include "common/util.h"
#include "qtest.h"

#define THREADS 8

struct config {
    const char *name;
    const char *opts;
    uint32_t cs;
    unsigned ops; /* per thread */
};

static const struct config configs[] = {
    { "64k", "cluster_size=64k", 65536, 1500 },
    { "extl2-64k", "extended_l2=on", 65536, 1500 },
    { "4k-v2", "compat=0.10,cluster_size=4k", 4096, 1500 },
    { "lazy-16k", "cluster_size=16k,lazy_refcounts=on", 16384, 1500 },
};

static const uint64_t SIZE = 32 << 20;
static const uint64_t OWNED = 0, OWNED_LEN = 16 << 20;
static const uint64_t INTER = 16 << 20, INTER_LEN = 8 << 20;
static const uint64_t SHARED = 24 << 20, SHARED_LEN = 8 << 20;

struct shared_state {
    const struct config *c;
    struct image *img;
    uint8_t *model;
    uint64_t seed;
    volatile int stop;
    pthread_mutex_t fail_lock;
    char failure[512];
};

struct worker {
    struct shared_state *s;
    int id;
    pthread_t thread;
};

static void fail(struct shared_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fail(struct shared_state *s, const char *fmt, ...)
{
    pthread_mutex_lock(&s->fail_lock);
    if (!s->failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
        va_end(ap);
    }
    s->stop = 1;
    pthread_mutex_unlock(&s->fail_lock);
}

static void verify(struct shared_state *s, int id, uint8_t *buf,
                   uint64_t off, uint64_t len, const char *where)
{
    int ret = image_read(s->img, buf, len, off);
    if (ret < 0) {
        fail(s, "thread %d: read %s %" PRIu64 "+%" PRIu64 ": %s", id, where,
             off, len, strerror(-ret));
        return;
    }
    long d = qt_first_diff(buf, s->model + off, len);
    if (d >= 0)
        fail(s, "thread %d: %s read %" PRIu64 "+%" PRIu64 " differs at %"
             PRIu64 " (0x%02x, model 0x%02x)", id, where, off, len,
             off + (uint64_t)d, buf[d], s->model[off + d]);
}

/* Apply one random modification to [off, off+len), which this thread
 * owns.  whole: the range is whole clusters owned by this thread, so
 * discard and unmapping zero are allowed to act on clusters. */
static void modify(struct shared_state *s, struct qt_rng *r, int id,
                   uint8_t *buf, uint64_t off, uint64_t len)
{
    unsigned k = (unsigned)qt_below(r, 10);
    int ret;
    if (k < 6) {
        for (uint64_t i = 0; i < len; i++)
            buf[i] = (uint8_t)(id * 31 + i + qt_rand(r) % 3);
        ret = image_write(s->img, buf, len, off, 0);
        memcpy(s->model + off, buf, len);
    } else if (k < 8) {
        ret = image_zero(s->img, off, len, k == 6 ? IMAGE_MAY_UNMAP : 0);
        memset(s->model + off, 0, len);
    } else {
        ret = image_discard(s->img, off, len);
        memset(s->model + off, 0, len);
    }
    if (ret < 0)
        fail(s, "thread %d: op %u at %" PRIu64 "+%" PRIu64 ": %s", id, k, off,
             len, strerror(-ret));
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct shared_state *s = w->s;
    const uint64_t cs = s->c->cs;
    const uint64_t slice = cs / THREADS;
    const uint64_t mine = OWNED + w->id * (OWNED_LEN / THREADS);
    const uint64_t mine_len = OWNED_LEN / THREADS;
    uint8_t *buf = malloc(1 << 20);
    struct qt_rng r;
    qt_rng_seed(&r, s->seed * 977 + (uint64_t)w->id);

    for (unsigned i = 0; i < s->c->ops && !s->stop; i++) {
        unsigned where = (unsigned)qt_below(&r, 10);
        if (where < 4) {
            /* Own region: anything, unaligned, multi-cluster. */
            uint64_t off = mine + qt_below(&r, mine_len);
            uint64_t len = 1 + qt_below(&r, MIN(4 * cs, 256u << 10));
            if (len > mine + mine_len - off)
                len = mine + mine_len - off;
            if (qt_below(&r, 3) == 0)
                verify(s, w->id, buf, off, len, "own");
            else
                modify(s, &r, w->id, buf, off, len);
        } else if (where < 8) {
            /* Own slice of a cluster every thread is writing into. */
            uint64_t cl = qt_below(&r, INTER_LEN / cs);
            uint64_t a = qt_below(&r, slice);
            uint64_t len = 1 + qt_below(&r, slice - a);
            uint64_t off = INTER + cl * cs + w->id * slice + a;
            if (qt_below(&r, 3) == 0)
                verify(s, w->id, buf, off, len, "slice");
            else
                modify(s, &r, w->id, buf, off, len);
        } else {
            uint64_t off = SHARED + qt_below(&r, SHARED_LEN - 1);
            uint64_t len = 1 + qt_below(&r, MIN(SHARED + SHARED_LEN - off,
                                                (uint64_t)(1 << 20)));
            verify(s, w->id, buf, off, len, "shared");
        }
    }
    free(buf);
    return NULL;
}

static void *flusher(void *arg)
{
    struct shared_state *s = arg;
    struct qt_rng r;
    qt_rng_seed(&r, s->seed + 99);
    while (!s->stop) {
        int ret = image_flush(s->img);
        if (ret < 0)
            fail(s, "flush: %s", strerror(-ret));
        /* The shared region is backing data, never zero. */
        enum image_extent_kind k;
        uint64_t n, off = SHARED + qt_below(&r, SHARED_LEN - 4096);
        ret = image_block_status_above(s->img, NULL, off, 4096, &k, &n,
                                       NULL);
        if (ret < 0 || k != IMAGE_EXTENT_DATA)
            fail(s, "block status in the shared region: %d kind %d", ret,
                 (int)k);
        usleep(2000);
    }
    return NULL;
}

static void run(const struct config *c, uint64_t seed)
{
    char dir[4096], top[4200];
    int failed_before = qt_failed;
    size_t n;
    struct shared_state s = { .c = c, .seed = seed };
    pthread_mutex_init(&s.fail_lock, NULL);

    qt_mkdtemp(dir, sizeof(dir), c->name);
    snprintf(top, sizeof(top), "%s/top.qcow2", dir);
    qt_must("cd '%s' && qemu-img create -q -f raw base.raw %" PRIu64
            " && qemu-io -f raw -c 'write -P 0x5a 0 %" PRIu64 "' "
            "-c 'write -P 0xa7 %" PRIu64 " %" PRIu64 "' base.raw", dir, SIZE,
            SIZE, SHARED + 12345, (uint64_t)1 << 20);
    qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s -b base.raw -F raw "
            "top.qcow2 %" PRIu64, dir, c->opts, SIZE);
    s.model = qt_qemu_raw(top, dir, &n, NULL);
    if (!s.model || n != SIZE || qt_open(top, false, NULL, &s.img) < 0) {
        QT_FAIL("%s: setup", c->name);
        goto out;
    }

    struct worker w[THREADS];
    pthread_t ft;
    pthread_create(&ft, NULL, flusher, &s);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ .s = &s, .id = i };
        pthread_create(&w[i].thread, NULL, work, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(w[i].thread, NULL);
    s.stop = 1;
    pthread_join(ft, NULL);
    if (s.failure[0])
        QT_FAIL("%s: %s", c->name, s.failure);

    qt_compare_image(s.img, s.model, c->name);
    if (image_close(s.img) != 0)
        QT_FAIL("%s: close", c->name);
    int st = qt_check(top);
    if (st != 0)
        QT_FAIL("%s: qemu-img check exit %d", c->name, st);
    char model_path[4200], out[4096];
    snprintf(model_path, sizeof(model_path), "%s/model.raw", dir);
    qt_write_file(model_path, s.model, SIZE);
    st = qt_run_out(out, sizeof(out), "qemu-img compare -f qcow2 -F raw "
                    "'%s' '%s'", top, model_path);
    if (st != 0 || !strstr(out, "identical"))
        QT_FAIL("%s: qemu-img compare exit %d: %s", c->name, st, out);
out:
    printf("%-12s seed %" PRIu64 ", %d threads x %u ops: %s\n", c->name, seed,
           THREADS, c->ops, qt_failed == failed_before ? "ok" : "FAIL");
    fflush(stdout);
    free(s.model);
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

int main(int argc, char **argv)
{
    qt_require_qemu();
    uint64_t seed = qt_seed();
    printf("seed %" PRIu64 " (set QLUN_SEED to change)\n", seed);
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        if (argc < 2 || strstr(configs[i].name, argv[1]))
            run(&configs[i], seed);
    return qt_summary("qcow2 concurrency");
}
