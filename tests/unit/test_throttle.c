/* Unit tests: the throttle filter (block/throttle.h) over in-memory
 * images.
 *
 * A rate limiter's accuracy is its function, so these tests measure
 * achieved rates: threads hammer a throttled image, and the rate over a
 * window of a couple of seconds must be within 10 % of the limit (the
 * issue's own tolerance).  The limits are low (100 to 2000 operations a
 * second, a few MiB/s of memory copies), so a busy 2-core machine under
 * ASan reaches them many times over: what is measured is the limiter,
 * not the machine.  The windows start after a warm-up, so that the
 * bucket's initial room (a tenth of a second of the rate) does not count.
 */
#include "block/throttle.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "block/image.h"
#include "check.h"
#include "memimage.h"

#define IMG_SIZE (16u << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

/* A thin in-memory image under a throttle node. */
static struct image *throttled(void)
{
    struct image *img = &memimage_new_thin(IMG_SIZE, 65536)->img;
    img->filename = (char *)"mem";   /* the filter copies its child's */
    char err[128];
    CHECK_EQ(image_insert_filter(&img, &throttle_driver, err, sizeof(err)), 0);
    return img;
}

/* Threads doing one kind of request as fast as they are admitted. */
struct hammer {
    struct image *img;
    bool write;
    size_t len;
    int count;             /* stop after this many (0: at stop) */
    _Atomic bool *stop;
    _Atomic uint64_t ops, bytes;
    pthread_t th[8];
    int n;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    uint8_t *buf = calloc(1, h->len);
    unsigned seed = (unsigned)(uintptr_t)&buf;
    for (int i = 0; !atomic_load(h->stop); i++) {
        if (h->count && atomic_fetch_add(&h->ops, 1) >= (uint64_t)h->count) {
            atomic_fetch_sub(&h->ops, 1);
            break;
        }
        uint64_t off = (uint64_t)(rand_r(&seed) % (IMG_SIZE / h->len)) * h->len;
        int ret = h->write ? image_write(h->img, buf, h->len, off, 0)
                           : image_read(h->img, buf, h->len, off);
        CHECK_EQ(ret, 0);
        if (!h->count)
            atomic_fetch_add(&h->ops, 1);
        atomic_fetch_add(&h->bytes, h->len);
    }
    free(buf);
    return NULL;
}

static void hammer_start(struct hammer *h, struct image *img, bool write,
                         size_t len, int threads, _Atomic bool *stop)
{
    h->img = img;
    h->write = write;
    h->len = len;
    h->stop = stop;
    h->n = threads;
    atomic_store(&h->ops, 0);
    atomic_store(&h->bytes, 0);
    for (int i = 0; i < threads; i++)
        pthread_create(&h->th[i], NULL, hammer_run, h);
}

static void hammer_join(struct hammer *h)
{
    for (int i = 0; i < h->n; i++)
        pthread_join(h->th[i], NULL);
}

/* The rate of *counter over [start + warmup, start + warmup + window). */
static double rate_over(_Atomic uint64_t *counter, double warmup,
                        double window)
{
    sleep_s(warmup);
    uint64_t a = atomic_load(counter);
    double t0 = now_s();
    sleep_s(window);
    uint64_t b = atomic_load(counter);
    return (double)(b - a) / (now_s() - t0);
}

#define CHECK_WITHIN(v, want, pct)                                           \
    do {                                                                     \
        double v_ = (v), w_ = (want);                                        \
        if (v_ < w_ * (1 - (pct) / 100.0) || v_ > w_ * (1 + (pct) / 100.0))  \
            fprintf(stderr, "%s:%d: %s = %.1f, want %.1f +- %d %%\n",        \
                    __FILE__, __LINE__, #v, v_, w_, pct);                    \
        CHECK(v_ >= w_ * (1 - (pct) / 100.0) && v_ <= w_ * (1 + (pct) / 100.0)); \
    } while (0)

static void set(struct image *img, struct throttle_limits l)
{
    char err[256];
    CHECK_EQ(throttle_limits_check(&l, err, sizeof(err)), 0);
    throttle_node_set_limits(img, &l);
}

/* IOPS and bytes/s, total and per direction: achieved within 10 %. */
static void test_rates(void)
{
    _Atomic bool stop = false;
    struct hammer r = { 0 }, w = { 0 };
    struct image *img = throttled();

    for (unsigned iops = 200; iops <= 2000; iops *= 10) {
        set(img, (struct throttle_limits){ .iops = { iops } });
        atomic_store(&stop, false);
        hammer_start(&r, img, false, 4096, 4, &stop);
        double got = rate_over(&r.ops, 0.5, 2.0);
        atomic_store(&stop, true);
        hammer_join(&r);
        printf("iops=%u: %.1f reads/s\n", iops, got);
        CHECK_WITHIN(got, iops, 10);
    }

    /* 2 MiB/s of 64 KiB reads and writes together (total). */
    set(img, (struct throttle_limits){ .bps = { 2u << 20 } });
    atomic_store(&stop, false);
    hammer_start(&r, img, false, 65536, 2, &stop);
    hammer_start(&w, img, true, 65536, 2, &stop);
    sleep_s(0.5);
    uint64_t b0 = atomic_load(&r.bytes) + atomic_load(&w.bytes);
    double t0 = now_s();
    sleep_s(2.5);
    double got = (double)(atomic_load(&r.bytes) + atomic_load(&w.bytes) - b0) /
                 (now_s() - t0);
    atomic_store(&stop, true);
    hammer_join(&r);
    hammer_join(&w);
    printf("bps=2M: %.0f bytes/s (reads and writes)\n", got);
    CHECK_WITHIN(got, 2u << 20, 10);

    /* A read limit holds reads only: writes beside them are not held up
     * behind the waiting reads. */
    set(img, (struct throttle_limits){ .iops = { 0, 300, 0 } });
    atomic_store(&stop, false);
    hammer_start(&r, img, false, 4096, 3, &stop);
    hammer_start(&w, img, true, 4096, 1, &stop);
    sleep_s(0.5);
    uint64_t r0 = atomic_load(&r.ops), w0 = atomic_load(&w.ops);
    t0 = now_s();
    sleep_s(2.0);
    double dt = now_s() - t0;
    double rr = (double)(atomic_load(&r.ops) - r0) / dt;
    double wr = (double)(atomic_load(&w.ops) - w0) / dt;
    atomic_store(&stop, true);
    hammer_join(&r);
    hammer_join(&w);
    printf("iops_rd=300: %.1f reads/s, %.1f writes/s (unlimited)\n", rr, wr);
    CHECK_WITHIN(rr, 300, 10);
    CHECK(wr > 3 * 300);

    struct throttle_stats s;
    throttle_node_stats(img, &s);
    CHECK(s.delayed > 0 && s.delayed <= s.requests && s.wait_ns > 0);
    image_close(img);
}

/* After idle, a burst of max * burst_seconds passes at once, then the
 * rate; with burst_seconds > 1 the burst itself runs at the max rate. */
static void test_burst(void)
{
    _Atomic bool stop = false;
    struct hammer r = { 0 };
    struct image *img = throttled();
    set(img, (struct throttle_limits){ .iops = { 100 }, .iops_max = { 1000 },
                                       .burst_seconds = 1 });
    /* 1000 requests at 100/s would take 10 s: they pass at once.  (Once
     * the bucket is full the rate rules; nothing here waits for that.) */
    double t0 = now_s();
    r.count = 1000;
    hammer_start(&r, img, false, 4096, 4, &stop);
    hammer_join(&r);
    double burst = now_s() - t0;
    printf("burst of 1000 at iops=100 iops_max=1000: %.3f s\n", burst);
    CHECK_EQ(atomic_load(&r.ops), 1000);
    CHECK(burst < 1.0);
    r.count = 0;
    hammer_start(&r, img, false, 4096, 4, &stop);
    double got = rate_over(&r.ops, 0.2, 2.0);
    atomic_store(&stop, true);
    hammer_join(&r);
    printf("after the burst: %.1f reads/s\n", got);
    CHECK_WITHIN(got, 100, 10);
    image_close(img);

    /* burst_seconds 2: a burst of 1000 at most 500/s, then 100/s. */
    img = throttled();
    set(img, (struct throttle_limits){ .iops = { 100 }, .iops_max = { 500 },
                                       .burst_seconds = 2 });
    atomic_store(&stop, false);
    hammer_start(&r, img, false, 4096, 4, &stop);
    got = rate_over(&r.ops, 0.3, 1.4);
    atomic_store(&stop, true);
    hammer_join(&r);
    printf("burst at iops_max=500 over 2 s: %.1f reads/s\n", got);
    CHECK_WITHIN(got, 500, 10);
    image_close(img);
}

/* A request larger than the bucket passes when the bucket is empty: the
 * rate holds, and it never waits forever. */
static void test_oversized(void)
{
    struct image *img = throttled();
    set(img, (struct throttle_limits){ .bps = { 1u << 20 } });
    uint8_t *buf = calloc(1, 512u << 10);   /* 5 x the 100 KiB bucket */
    double t0 = now_s();
    for (int i = 0; i < 6; i++)
        CHECK_EQ(image_read(img, buf, 512u << 10, 0), 0);
    double dt = now_s() - t0;
    /* The first passes at once, each next one after the one before it
     * has drained: 5 x 512 KiB at 1 MiB/s. */
    printf("6 reads of 512 KiB at bps=1M: %.2f s\n", dt);
    CHECK_WITHIN(dt, 2.5, 10);
    free(buf);
    image_close(img);
}

/* Zero and discard count as operations, not as bytes. */
static void test_zero_discard(void)
{
    struct image *img = throttled();
    set(img, (struct throttle_limits){ .bps = { 4096 } });
    double t0 = now_s();
    CHECK_EQ(image_discard(img, 0, IMG_SIZE), 0);
    CHECK_EQ(image_zero(img, 0, IMG_SIZE, IMAGE_MAY_UNMAP), 0);
    CHECK_EQ(image_discard(img, 0, IMG_SIZE), 0);
    CHECK(now_s() - t0 < 1.0);   /* as bytes: 4096 s each */
    set(img, (struct throttle_limits){ .iops = { 0, 0, 20 } });
    t0 = now_s();
    for (int i = 0; i < 12; i++)
        CHECK_EQ(image_discard(img, 0, 4096), 0);
    /* 2 pass in the bucket's room, 10 at 20/s */
    CHECK(now_s() - t0 > 0.4);
    image_close(img);
}

/* Two nodes in one group share its limit; a node of its own is apart. */
static void test_group(void)
{
    _Atomic bool stop = false;
    struct hammer a = { 0 }, b = { 0 }, c = { 0 };
    struct image *ia = throttled(), *ib = throttled(), *ic = throttled();
    throttle_node_join(ia, "g1");
    throttle_node_join(ib, "g1");
    set(ia, (struct throttle_limits){ .iops = { 400 } });
    set(ic, (struct throttle_limits){ .iops = { 200 } });
    struct throttle_limits got_l;
    char name[64];
    throttle_node_get(ib, &got_l, name, sizeof(name));
    CHECK_EQ(got_l.iops[THROTTLE_TOTAL], 400);   /* the group's */
    CHECK(strcmp(name, "g1") == 0);
    hammer_start(&a, ia, false, 4096, 2, &stop);
    hammer_start(&b, ib, true, 4096, 2, &stop);
    hammer_start(&c, ic, false, 4096, 2, &stop);
    sleep_s(0.5);
    uint64_t a0 = atomic_load(&a.ops), b0 = atomic_load(&b.ops);
    uint64_t c0 = atomic_load(&c.ops);
    double t0 = now_s();
    sleep_s(2.0);
    double dt = now_s() - t0;
    double ra = (double)(atomic_load(&a.ops) - a0) / dt;
    double rb = (double)(atomic_load(&b.ops) - b0) / dt;
    double rc = (double)(atomic_load(&c.ops) - c0) / dt;
    atomic_store(&stop, true);
    hammer_join(&a);
    hammer_join(&b);
    hammer_join(&c);
    printf("group iops=400: %.1f + %.1f = %.1f/s; alone iops=200: %.1f/s\n",
           ra, rb, ra + rb, rc);
    CHECK_WITHIN(ra + rb, 400, 10);
    CHECK(ra > 0.3 * 400 && rb > 0.3 * 400);   /* shared, not one starved */
    CHECK_WITHIN(rc, 200, 10);
    /* The group lives while a node is in it: closing one keeps it for the
     * other; the last one gone, a new g1 starts without limits. */
    image_close(ia);
    throttle_node_get(ib, &got_l, NULL, 0);
    CHECK_EQ(got_l.iops[THROTTLE_TOTAL], 400);
    image_close(ib);
    struct image *id = throttled();
    throttle_node_join(id, "g1");
    throttle_node_get(id, &got_l, NULL, 0);
    CHECK(!throttle_limits_any(&got_l));
    image_close(id);
    image_close(ic);
}

/* A limit changed while requests run and wait takes effect within a
 * second: the rate in the second after the change is the new one. */
static void test_live_change(void)
{
    _Atomic bool stop = false;
    struct hammer r = { 0 };
    struct image *img = throttled();
    set(img, (struct throttle_limits){ .iops = { 200 } });
    hammer_start(&r, img, false, 4096, 8, &stop);
    sleep_s(0.5);
    set(img, (struct throttle_limits){ .iops = { 1000 } });
    double up = rate_over(&r.ops, 0.1, 0.9);
    set(img, (struct throttle_limits){ .iops = { 200 } });
    double down = rate_over(&r.ops, 0.1, 0.9);
    printf("live 200 -> 1000: %.1f/s; 1000 -> 200: %.1f/s\n", up, down);
    CHECK_WITHIN(up, 1000, 10);
    CHECK_WITHIN(down, 200, 10);

    /* From 2/s (8 threads queued) to none: every waiter goes at once. */
    set(img, (struct throttle_limits){ .iops = { 2 } });
    sleep_s(0.5);
    uint64_t before = atomic_load(&r.ops);
    set(img, (struct throttle_limits){ 0 });
    sleep_s(0.3);
    printf("2/s -> none: %llu requests in 0.3 s\n",
           (unsigned long long)(atomic_load(&r.ops) - before));
    CHECK(atomic_load(&r.ops) - before > 100);
    atomic_store(&stop, true);
    hammer_join(&r);
    image_close(img);
}

/* A released node's requests pass (what a drain before a group change
 * or removal relies on), and the others in its group still wait. */
static void test_release(void)
{
    _Atomic bool stop = false;
    struct hammer a = { 0 }, b = { 0 };
    struct image *ia = throttled(), *ib = throttled();
    throttle_node_join(ia, "g2");
    throttle_node_join(ib, "g2");
    set(ia, (struct throttle_limits){ .iops = { 2 } });
    hammer_start(&a, ia, false, 4096, 4, &stop);
    hammer_start(&b, ib, false, 4096, 4, &stop);
    sleep_s(0.5);    /* both queued behind the 2/s */
    uint64_t a0 = atomic_load(&a.ops), b0 = atomic_load(&b.ops);
    throttle_node_release(ia, true);
    sleep_s(0.3);
    uint64_t da = atomic_load(&a.ops) - a0, db = atomic_load(&b.ops) - b0;
    printf("released: %llu requests in 0.3 s; the other node: %llu\n",
           (unsigned long long)da, (unsigned long long)db);
    CHECK(da > 100);
    CHECK(db < 10);
    atomic_store(&stop, true);
    set(ia, (struct throttle_limits){ 0 });
    hammer_join(&a);
    hammer_join(&b);
    image_close(ia);
    image_close(ib);
}

static void test_limits_check(void)
{
    char err[256];
    struct throttle_limits ok = { .iops = { 0, 100, 50 }, .bps = { 1 << 20 },
                                  .bps_max = { 4 << 20 }, .burst_seconds = 5 };
    CHECK_EQ(throttle_limits_check(&ok, err, sizeof(err)), 0);
    static const struct throttle_limits bad[] = {
        { .iops = { 100, 10, 0 } },            /* total and read */
        { .bps = { 100, 0, 10 } },             /* total and write */
        { .iops_max = { 100 } },               /* burst without a rate */
        { .iops = { 100 }, .iops_max = { 50 } },   /* burst below rate */
        { .iops = { 100 }, .burst_seconds = 2 },   /* length, no burst */
        { .bps = { THROTTLE_VALUE_MAX + 1 } },
        { .iops = { 1 }, .iops_max = { 2 },
          .burst_seconds = THROTTLE_BURST_SECONDS_MAX + 1 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        CHECK_EQ(throttle_limits_check(&bad[i], err, sizeof(err)), -EINVAL);
        CHECK(err[0] != 0);
    }
    CHECK(throttle_group_name_ok("db-tier.1_a"));
    CHECK(!throttle_group_name_ok(""));
    CHECK(!throttle_group_name_ok("a;b"));
    CHECK(!throttle_group_name_ok("a b"));
    CHECK(!throttle_group_name_ok("123456789012345678901234567890123"));
}

/* The timed parts measure the limiter against the clock, and a machine
 * too busy to run the hammering threads (or the measuring one) for a
 * while skews a window: a timed part that fails runs again, up to three
 * times, and only its last run counts.  A limiter that is wrong fails
 * every run. */
static void timed(const char *name, void (*part)(void))
{
    for (int run = 1;; run++) {
        int passed = check_passed, failed = check_failed;
        part();
        if (check_failed == failed || run == 3)
            return;
        fprintf(stderr, "%s: run %d failed (a busy machine?); again\n", name,
                run);
        check_passed = passed;
        check_failed = failed;
    }
}

int main(void)
{
    /* A request that waits forever is a failure, not a hung test run. */
    alarm(300);
    test_limits_check();
    timed("oversized", test_oversized);
    timed("zero and discard", test_zero_discard);
    timed("rates", test_rates);
    timed("burst", test_burst);
    timed("group", test_group);
    timed("live change", test_live_change);
    timed("release", test_release);
    return check_summary("test_throttle");
}
