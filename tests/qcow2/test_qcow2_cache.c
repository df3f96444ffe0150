/* qlun — the qcow2 metadata cache, observed through the engine.
 *
 * The host_sys hook counts the host reads and writes that hit metadata:
 *
 *  lru:     with an 8-table L2 cache, touch tables T0..T7, touch T0 again,
 *           then T8: the least recently used table (T1) is the one
 *           evicted, so T0 is read again without a host read and T1 needs
 *           one.  (Evicting in load order, or ignoring the re-touch, fails.)
 *  partial: one L2 entry (and one refcount) changed, then flush: the L2
 *           table and the refcount block are written back as the 512-byte
 *           host I/O units holding the change, one write per contiguous
 *           run, never the whole 64 KiB table; qemu-img check is clean and
 *           qemu-io reads the data.  (Writing whole tables fails.)
 *  sizes:   default cache sizes: an 8 GiB image gets the 16 L2 tables that
 *           map all of it, a 16 TiB one the 32 MiB cap (512 tables); the
 *           refcount cache is a quarter with a floor of 4; explicit sizes
 *           are rounded down to tables, raised to the floor, and capped at
 *           what maps the disk.
 *
 *  unlocked: while one command's L2 table read is held up in the host
 *           (a preadv hook parks it), a read whose table is cached
 *           completes: the miss does not hold the metadata lock; and a
 *           second read needing the same table waits for that copy rather
 *           than reading the table again.  (Loading with the lock held
 *           times out; not waiting reads T0 twice.)
 *  stale:   while a command reads table T0 without the lock (unannounced:
 *           16 other parked loads fill the announcements), another writes a
 *           new cluster in T0's range, flushes (T0 written back) and evicts
 *           T0; the parked copy of T0, now stale, must not enter the cache:
 *           the new cluster still reads its data.  (Installing the copy
 *           without the epoch check loses the write.)
 *
 * Crash ordering of partial write-back is covered by test_crash_sim (it
 * tears and reorders every write the engine issues).
 */
#include <pthread.h>
#include <time.h>

#include "block/host.h"
#include "qcow2/qcow2-internal.h"
#include "qtest.h"

#define CS (64u << 10)
#define TABLE_SPAN (512ull << 20) /* guest bytes one 64 KiB L2 table maps */

/* ---- host I/O counting ---- */

/* Host byte ranges being watched, and what hit them. */
struct watch {
    uint64_t off, len;
    unsigned reads, writes;
    uint64_t bytes_written;
};

#define MAX_WATCH 16
static struct watch watches[MAX_WATCH];
static size_t nwatch;
static struct host_syscalls real;

static size_t iov_len(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

static struct watch *watch_at(uint64_t off)
{
    for (size_t i = 0; i < nwatch; i++)
        if (off >= watches[i].off && off < watches[i].off + watches[i].len)
            return &watches[i];
    return NULL;
}

/* Parking: the first host read of each table in park_set, once done,
 * waits until released. */
#define MAX_PARK 32
static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static uint64_t park_set[MAX_PARK]; /* 0 = unused */
static bool park_done[MAX_PARK];    /* that table's first read came */
static unsigned nparked;
static bool released;

static struct timespec deadline(int seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += seconds;
    return t;
}

/* Wait (park_mu held) until *flag, at most 10 s; false on timeout. */
static bool wait_for(bool *flag)
{
    struct timespec t = deadline(10);
    while (!*flag)
        if (pthread_cond_timedwait(&park_cond, &park_mu, &t) != 0)
            return *flag;
    return true;
}

static void park_here(uint64_t off)
{
    pthread_mutex_lock(&park_mu);
    for (int k = 0; k < MAX_PARK; k++) {
        if (park_set[k] != off || park_done[k] || off == 0)
            continue;
        park_done[k] = true;
        nparked++;
        pthread_cond_broadcast(&park_cond);
        wait_for(&released);
        break;
    }
    pthread_mutex_unlock(&park_mu);
}

/* Park the first read of table off too. */
static void park_add(uint64_t off)
{
    pthread_mutex_lock(&park_mu);
    for (int k = 0; k < MAX_PARK; k++)
        if (park_set[k] == 0) {
            park_set[k] = off;
            park_done[k] = false;
            break;
        }
    released = false;
    pthread_mutex_unlock(&park_mu);
}

static void park_release(void)
{
    pthread_mutex_lock(&park_mu);
    released = true;
    memset(park_set, 0, sizeof(park_set));
    nparked = 0;
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_mu);
}

static ssize_t count_preadv(int fd, const struct iovec *iov, int cnt,
                            off_t off)
{
    struct watch *w = watch_at((uint64_t)off);
    if (w)
        w->reads++;
    /* Read first, then park: a parked copy is what the table was when
     * the read started. */
    ssize_t n = real.preadv(fd, iov, cnt, off);
    park_here((uint64_t)off);
    return n;
}

static ssize_t count_pwritev(int fd, const struct iovec *iov, int cnt,
                             off_t off)
{
    struct watch *w = watch_at((uint64_t)off);
    if (w) {
        w->writes++;
        w->bytes_written += iov_len(iov, cnt);
    }
    return real.pwritev(fd, iov, cnt, off);
}

static void watch_reset(void)
{
    for (size_t i = 0; i < nwatch; i++)
        watches[i].reads = watches[i].writes = 0,
        watches[i].bytes_written = 0;
}

/* ---- helpers ---- */

static int open_with(const char *path, bool ro, uint64_t l2_bytes,
                     uint64_t rb_bytes, struct image **img)
{
    char err[1024] = "";
    struct image_open_opts o = {
        .path = path, .format = "qcow2", .read_only = ro,
        .backing_root = "/", .l2_cache_bytes = l2_bytes,
        .refcount_cache_bytes = rb_bytes,
    };
    int ret = image_open(&o, img, err, sizeof(err));
    if (ret < 0)
        QT_FAIL("open %s: %s (%d)", path, err, ret);
    return ret;
}

static uint64_t l2_table_of(struct image *img, uint64_t guest_off)
{
    struct qcow2 *q = to_qcow2(img);
    return q->l1[guest_off / TABLE_SPAN] & L1E_OFFSET_MASK;
}

/* Read 512 bytes at guest offset off: looks up (and caches) its L2 table. */
static void touch(struct image *img, uint64_t off)
{
    uint8_t b[512];
    int ret = image_read(img, b, sizeof(b), off);
    if (ret < 0)
        QT_FAIL("read at %" PRIu64 ": %s", off, strerror(-ret));
}

/* ---- lru ---- */

static void lru(const char *dir)
{
    enum { TABLES = 9, SLOTS = 8 };
    char img[4200], cmd[4096] = "";
    snprintf(img, sizeof(img), "%s/lru.qcow2", dir);
    size_t n = 0;
    for (int t = 0; t < TABLES; t++)
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " -c 'write -P %d "
                              "%llu 4k'", t + 1, t * TABLE_SPAN);
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=64k '%s' 8G",
                 img) || !qt_must("qemu-io -f qcow2 %s '%s'", cmd, img))
        return;
    struct image *im;
    if (open_with(img, true, SLOTS * CS, 0, &im) < 0)
        return;
    QT_CHECK(cache_slots(to_qcow2(im)->l2_cache) == SLOTS);
    nwatch = 0;
    for (int t = 0; t < TABLES; t++) {
        watches[nwatch++] = (struct watch){ .off = l2_table_of(im,
                                                  t * TABLE_SPAN), .len = CS };
        QT_CHECK(watches[t].off != 0);
    }
    for (int t = 0; t < SLOTS; t++)
        touch(im, t * TABLE_SPAN);
    for (int t = 0; t < SLOTS; t++)
        if (watches[t].reads != 1)
            QT_FAIL("lru: table %d read %u times on first use", t,
                    watches[t].reads);
    touch(im, 0);                   /* T0 is now the most recently used */
    touch(im, SLOTS * TABLE_SPAN);  /* T8 evicts the LRU one: T1 */
    watch_reset();
    touch(im, 0);
    if (watches[0].reads != 0)
        QT_FAIL("lru: T0, used after T1, was evicted instead of T1 "
                "(%u host reads)", watches[0].reads);
    touch(im, 1 * TABLE_SPAN);
    if (watches[1].reads != 1)
        QT_FAIL("lru: T1, the least recently used, was still cached "
                "(%u host reads)", watches[1].reads);
    nwatch = 0;
    QT_CHECK(image_close(im) == 0);
}

/* ---- partial ---- */

static void partial(const char *dir)
{
    char img[4200];
    snprintf(img, sizeof(img), "%s/partial.qcow2", dir);
    /* The L2 table and refcount block exist before the engine opens it:
     * new tables are written whole by design. */
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=64k '%s' 8G",
                 img) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 1 0 64k' '%s'", img))
        return;
    struct image *im;
    if (open_with(img, false, 0, 0, &im) < 0)
        return;
    struct qcow2 *q = to_qcow2(im);
    nwatch = 0;
    watches[nwatch++] = (struct watch){ .off = l2_table_of(im, 0),
                                        .len = CS };
    watches[nwatch++] = (struct watch){ .off = q->reftable[0], .len = CS };
    /* New clusters 15 and 16: L2 entries at bytes 120..135 (one run), and
     * 8191: the last 8 bytes (another run). */
    uint8_t buf[8192];
    memset(buf, 7, sizeof(buf));
    QT_CHECK(image_write(im, buf, sizeof(buf), 16 * CS - 4096, 0) == 0);
    QT_CHECK(image_write(im, buf, 4096, 8191ull * CS, 0) == 0);
    QT_CHECK(image_flush(im) == 0);
    struct watch *l2 = &watches[0], *rb = &watches[1];
    if (l2->writes != 2 || l2->bytes_written > 2 * 4096)
        QT_FAIL("partial: L2 table written back as %u writes, %" PRIu64
                " bytes (want 2 writes, at most 2 x 4 KiB)", l2->writes,
                l2->bytes_written);
    if (rb->writes < 1 || rb->bytes_written > 4096)
        QT_FAIL("partial: refcount block written back as %u writes, %"
                PRIu64 " bytes (want at most 4 KiB)", rb->writes,
                rb->bytes_written);
    printf("partial: L2 table: %u writes, %" PRIu64 " bytes; refcount "
           "block: %u writes, %" PRIu64 " bytes\n", l2->writes,
           l2->bytes_written, rb->writes, rb->bytes_written);
    nwatch = 0;
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    qt_must("qemu-io -f qcow2 -c 'read -P 1 0 64k' -c 'read -P 7 %u 8k' "
            "-c 'read -P 7 %llu 4k' '%s'", 16 * CS - 4096, 8191ull * CS, img);
}

/* ---- unlocked, stale ---- */

struct reader {
    struct image *img;
    uint64_t off;
    int ret;
    bool done;
};

static void *read_thread(void *arg)
{
    struct reader *r = arg;
    uint8_t b[4096];
    r->ret = image_read(r->img, b, sizeof(b), r->off);
    pthread_mutex_lock(&park_mu);
    r->done = true;
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_mu);
    return NULL;
}

/* Start a read at guest off whose first read of table parks; false if
 * it did not get there. */
static bool start_parked_read(struct image *im, struct reader *r,
                              pthread_t *t, uint64_t off, uint64_t table)
{
    *r = (struct reader){ .img = im, .off = off };
    park_add(table);
    pthread_mutex_lock(&park_mu);
    unsigned before = nparked;
    pthread_mutex_unlock(&park_mu);
    pthread_create(t, NULL, read_thread, r);
    pthread_mutex_lock(&park_mu);
    struct timespec dl = deadline(10);
    while (nparked == before &&
           pthread_cond_timedwait(&park_cond, &park_mu, &dl) == 0)
        ;
    bool ok = nparked > before;
    pthread_mutex_unlock(&park_mu);
    if (!ok)
        QT_FAIL("the read at %" PRIu64 " never read its L2 table", off);
    return ok;
}

/* Wait up to 10 s for r to finish; false if it did not. */
static bool wait_done(struct reader *r)
{
    pthread_mutex_lock(&park_mu);
    bool ok = wait_for(&r->done);
    pthread_mutex_unlock(&park_mu);
    return ok;
}

static void make_tables(const char *img, const char *size, int tables)
{
    char cmd[8192] = "";
    size_t n = 0;
    for (int t = 0; t < tables; t++)
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, " -c 'write -P %d "
                              "%llu 4k'", t + 1, t * TABLE_SPAN);
    qt_must("qemu-img create -q -f qcow2 -o cluster_size=64k '%s' %s", img,
            size);
    qt_must("qemu-io -f qcow2 %s '%s'", cmd, img);
}

static void unlocked(const char *dir)
{
    char img[4200];
    snprintf(img, sizeof(img), "%s/unlocked.qcow2", dir);
    make_tables(img, "8G", 2);
    struct image *im;
    if (open_with(img, true, 0, 0, &im) < 0)
        return;
    touch(im, TABLE_SPAN);                /* T1 cached */
    nwatch = 0;
    watches[nwatch++] = (struct watch){ .off = l2_table_of(im, 0), .len = CS };
    struct reader a, b, c;
    pthread_t ta, tb, tc;
    if (start_parked_read(im, &a, &ta, 0, l2_table_of(im, 0))) {
        /* T0's read is parked; a read through cached T1 must finish ... */
        b = (struct reader){ .img = im, .off = TABLE_SPAN + 8192 };
        pthread_create(&tb, NULL, read_thread, &b);
        if (!wait_done(&b))
            QT_FAIL("unlocked: a read through a cached table waited for "
                    "another table's load (metadata lock held over it)");
        /* ... and one that needs T0 too waits for that copy. */
        c = (struct reader){ .img = im, .off = 8 * CS };
        pthread_create(&tc, NULL, read_thread, &c);
        usleep(200 * 1000);
        park_release();
        pthread_join(tb, NULL);
        pthread_join(tc, NULL);
        QT_CHECK(b.ret == 0 && c.ret == 0);
        if (watches[0].reads != 1)
            QT_FAIL("unlocked: T0 read %u times by two concurrent misses "
                    "(the second must wait for the first's copy)",
                    watches[0].reads);
    }
    park_release();
    pthread_join(ta, NULL);
    QT_CHECK(a.ret == 0);
    nwatch = 0;
    QT_CHECK(image_close(im) == 0);
}

/* Tables being read without the lock are announced in a small array
 * (cache.c); a miss beyond it is read unannounced, so a concurrent writer
 * reads and changes the table itself.  That is the case the epoch check
 * guards; fill the array with parked readers to get there. */
#define ANNOUNCED CACHE_MAX_LOADING

static void stale(const char *dir)
{
    enum { SLOTS = 8, PARKED = ANNOUNCED + 1, TABLES = PARKED + SLOTS };
    char img[4200];
    snprintf(img, sizeof(img), "%s/stale.qcow2", dir);
    make_tables(img, "16G", TABLES);
    struct image *im;
    if (open_with(img, false, SLOTS * CS, 0, &im) < 0)
        return;
    struct reader r[PARKED];
    pthread_t t[PARKED];
    int started = 0;
    /* T1..T16 take the announcements, T0's read (the last) goes without. */
    for (int k = 0; k < PARKED; k++) {
        int table = (k + 1) % PARKED;
        if (!start_parked_read(im, &r[k], &t[k], table * TABLE_SPAN,
                               l2_table_of(im, table * TABLE_SPAN)))
            break;
        started++;
    }
    if (started == PARKED) {
        /* Meanwhile: a new cluster in T0's range, T0 written back ... */
        uint8_t buf[4096];
        memset(buf, 0x5c, sizeof(buf));
        QT_CHECK(image_write(im, buf, sizeof(buf), 5 * CS, 0) == 0);
        QT_CHECK(image_flush(im) == 0);
        /* ... and evicted by tables nobody is loading. */
        for (int k = PARKED; k < TABLES; k++)
            touch(im, k * TABLE_SPAN);
    }
    park_release();
    for (int k = 0; k < started; k++) {
        pthread_join(t[k], NULL);
        QT_CHECK(r[k].ret == 0);
    }
    uint8_t got[4096];
    QT_CHECK(image_read(im, got, sizeof(got), 5 * CS) == 0);
    if (got[0] != 0x5c || got[4095] != 0x5c)
        QT_FAIL("stale: a copy of T0 read before the write replaced the "
                "written-back table (cluster 5 reads 0x%02x)", got[0]);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
}

/* ---- sizes ---- */

struct size_case {
    const char *size;
    uint64_t l2_bytes, rb_bytes;  /* asked for; 0 = default */
    size_t l2_slots, rb_slots;    /* expected */
};

static void sizes(const char *dir)
{
    static const struct size_case cases[] = {
        /* 8 GiB: 16 tables of 512 MiB map it all; refcount floor 4. */
        { "8G", 0, 0, 16, 4 },
        /* 16 TiB would need 32768 tables: the 32 MiB cap, 512; 128. */
        { "16T", 0, 0, 512, 128 },
        /* 100 GiB: 200 tables; a quarter for refcounts. */
        { "100G", 0, 0, 200, 50 },
        /* Asked sizes round down to tables ... */
        { "16T", (1u << 20) + 100, 300u << 10, 16, 4 },
        /* ... never below the floors ... */
        { "16T", 1, 1, 8, 4 },
        /* ... never above what maps the disk (L2). */
        { "8G", 1u << 30, 1u << 20, 16, 16 },
    };
    char img[4200];
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        const struct size_case *c = &cases[i];
        snprintf(img, sizeof(img), "%s/size%zu.qcow2", dir, i);
        if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=64k '%s' "
                     "%s", img, c->size))
            continue;
        struct image *im;
        if (open_with(img, false, c->l2_bytes, c->rb_bytes, &im) < 0)
            continue;
        struct qcow2 *q = to_qcow2(im);
        size_t l2 = cache_slots(q->l2_cache), rb = cache_slots(q->rb_cache);
        if (l2 != c->l2_slots || rb != c->rb_slots)
            QT_FAIL("sizes: %s image, asked l2=%" PRIu64 " rb=%" PRIu64
                    ": got %zu L2 / %zu refcount tables, want %zu / %zu",
                    c->size, c->l2_bytes, c->rb_bytes, l2, rb, c->l2_slots,
                    c->rb_slots);
        QT_CHECK(image_close(im) == 0);
        unlink(img);
    }
}

int main(void)
{
    qt_require_qemu();
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "qcow2-cache");
    real = host_sys;
    host_sys.preadv = count_preadv;
    host_sys.pwritev = count_pwritev;
    lru(dir);
    partial(dir);
    sizes(dir);
    unlocked(dir);
    stale(dir);
    host_sys = real;
    qt_rmtree(dir);
    return qt_summary("test_qcow2_cache");
}
