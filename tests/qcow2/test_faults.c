/* qlun — fault injection below the image layer.
 *
 * A fixed guest workload (writes, FUA writes, zeroes with and without
 * MAY_UNMAP, discards, flushes; COW over a backing file, new L2 tables,
 * compressed clusters rewritten) runs once to count the host calls it
 * makes (through host_sys), then again and again with one fault at host
 * call #i:
 *
 *   EIO     any call (read, write, fallocate, fdatasync) fails with EIO;
 *   ENOSPC  a modifying call (write, fallocate, ftruncate, fdatasync)
 *           fails with ENOSPC;
 *   short   one pwritev writes only part of its buffer and says so: the
 *           host layer must write the rest, and the run must then be as if
 *           nothing happened.
 *
 * For EIO/ENOSPC: the command during which the fault struck must fail with
 * that errno (-EIO, -ENOSPC), except where the failed call was advisory
 * (punching a hole to give a freed cluster back); the workload then stops.
 * If the fault struck an fdatasync, every later flush and write must fail
 * (the failure is latched); otherwise the next flush must succeed.  The
 * image is then closed or crash-dropped (qcow2_simulate_crash), reopened
 * read-write through the engine, and must read back as the guest model
 * says (guest_model.h: everything flushed before the fault exactly), accept
 * a write, close, and pass qemu-img check (exit 0, or 3 for leaks).
 *
 * CI mode samples the call indices; QLUN_FAULTS_LONG=1 tries every one
 * (and more configurations); QLUN_FAULTS_CONFIG=n runs one configuration.
 *
 * "Can it fail?"  With host_flush() not latching its failure, or with
 * rw_full() (block/host.c) not retrying a short write, this test fails
 * (flush/write succeeding after a failed fdatasync; flushed data missing).
 */
#include <linux/falloc.h>
#include <time.h>

#include "block/host.h"
#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "qtest.h"
#include "guest_model.h"

/* ------------------------------------------------------------------ */
/* Injection                                                          */

enum fault { F_NONE, F_EIO, F_ENOSPC, F_SHORT };
static const char *fault_name[] = { "none", "EIO", "ENOSPC", "short write" };

enum call { C_READ, C_WRITE, C_SYNC, C_FALLOC, C_TRUNC, C_IOCTL, C_KINDS };
static const char *call_name[] = { "preadv", "pwritev", "fdatasync",
                                   "fallocate", "ftruncate", "ioctl" };

static bool counting;           /* between open and close of the workload */
static enum fault inject;
static long inject_at;          /* index among the calls the fault applies to */
static long n_all, n_mod, n_write;
static long before_close[4];    /* calls per fault class before the close */
static bool fired;
static enum call fired_call;
static int fired_mode;          /* fallocate mode of the faulted call */
static unsigned long fired_by_call[4][C_KINDS];

/* Should the call of kind k (len bytes for writes) fail or be cut short?
 * Counts it either way. */
static enum fault decide(enum call k, size_t len)
{
    if (!counting)
        return F_NONE;
    bool mod = k != C_READ;
    bool w = k == C_WRITE && len >= 2;
    long all = n_all++, m = mod ? n_mod++ : -1, wr = w ? n_write++ : -1;
    if (fired)
        return F_NONE;
    long idx = inject == F_EIO ? all : inject == F_ENOSPC ? m
             : inject == F_SHORT ? wr : -1;
    if (idx < 0 || idx != inject_at)
        return F_NONE;
    fired = true;
    fired_call = k;
    fired_by_call[inject][k]++;
    return inject;
}

static ssize_t fi_preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (decide(C_READ, 0) != F_NONE) {
        errno = EIO;
        return -1;
    }
    return preadv(fd, iov, cnt, off);
}

static ssize_t fi_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    switch (decide(C_WRITE, len)) {
    case F_NONE:
        break;
    case F_EIO:
        errno = EIO;
        return -1;
    case F_ENOSPC:
        errno = ENOSPC;
        return -1;
    case F_SHORT: {
        /* Write the first part only (cutting inside an iovec entry when
         * needed), as a signal or a full-ish filesystem would. */
        size_t want = len / 2, done = 0;
        struct iovec part[64];
        int n = 0;
        for (int i = 0; i < cnt && done < want && n < 64; i++) {
            part[n] = iov[i];
            if (part[n].iov_len > want - done)
                part[n].iov_len = want - done;
            done += part[n++].iov_len;
        }
        return pwritev(fd, part, n, off);
    }
    }
    return pwritev(fd, iov, cnt, off);
}

static int fi_fdatasync(int fd)
{
    enum fault f = decide(C_SYNC, 0);
    if (f != F_NONE) {
        errno = f == F_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    /* Durability itself is not under test here. */
    (void)fd;
    return 0;
}

static int fi_fallocate(int fd, int mode, off_t off, off_t len)
{
    enum fault f = decide(C_FALLOC, 0);
    if (f != F_NONE) {
        fired_mode = mode;
        errno = f == F_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return fallocate(fd, mode, off, len);
}

static int fi_ftruncate(int fd, off_t len)
{
    enum fault f = decide(C_TRUNC, 0);
    if (f != F_NONE) {
        errno = f == F_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return ftruncate(fd, len);
}

/* ------------------------------------------------------------------ */
/* Configurations and the workload                                    */

struct config {
    const char *name;
    const char *format;   /* "qcow2" or "raw" */
    const char *opts;     /* qcow2 create options */
    const char *backing;  /* NULL or "raw" */
    const char *setup;    /* qemu-io commands */
    bool snapshot;
    bool long_only;
    unsigned sample[4];   /* CI: indices tried per fault (0 = all) */
};

#define SIZE (8ull << 20)

static const struct config configs[] = {
    {
        .name = "qcow2 v3 4k over raw backing",
        .format = "qcow2",
        .opts = "compat=1.1,cluster_size=4096",
        .backing = "raw",
        .setup = "-c 'write -P 0x21 0 64k' -c 'write -c -P 0x22 1M 16k'",
        .sample = { 0, 45, 30, 25 },
    },
    {
        /* Small clusters and wide refcounts: new L2 tables and refcount
         * blocks all the time. */
        .name = "qcow2 v3 1k, refcount_bits=64",
        .format = "qcow2",
        .opts = "compat=1.1,cluster_size=1024,refcount_bits=64",
        .setup = "-c 'write -P 0x21 0 64k' -c 'write -c -P 0x22 1M 16k'",
        .sample = { 0, 25, 15, 10 },
    },
    {
        .name = "raw",
        .format = "raw",
        .setup = "-c 'write -P 0x31 0 7M'",
        .sample = { 0, 0, 0, 0 },
    },
    {
        .name = "qcow2 v3 512B lazy refcounts, snapshot",
        .format = "qcow2",
        .opts = "compat=1.1,cluster_size=512,lazy_refcounts=on",
        .setup = "-c 'write -P 0x41 0 1M' -c 'write -c -P 0x42 1M 4k'",
        .snapshot = true,
        .long_only = true,
        .sample = { 0, 40, 25, 20 },
    },
    {
        .name = "qcow2 v2 64k over raw backing, snapshot",
        .format = "qcow2",
        .opts = "compat=0.10,cluster_size=65536",
        .backing = "raw",
        .setup = "-c 'write -P 0x51 0 1M'",
        .snapshot = true,
        .long_only = true,
        .sample = { 0, 40, 25, 20 },
    },
};

enum gkind { G_WRITE, G_FUA, G_ZERO, G_ZERO_UNMAP, G_DISCARD, G_FLUSH };
static const char *gname[] = { "write", "write FUA", "zero", "zero unmap",
                               "discard", "flush" };

struct gop {
    enum gkind kind;
    uint64_t off, len, seed;
};

#define NGOPS 48
static struct gop gops[NGOPS];

/* The same workload for every run of a configuration. */
static void make_workload(uint64_t seed)
{
    struct qt_rng r;
    qt_rng_seed(&r, seed);
    for (int i = 0; i < NGOPS; i++) {
        struct gop *g = &gops[i];
        unsigned k = (unsigned)qt_below(&r, 100);
        g->kind = k < 45 ? G_WRITE : k < 52 ? G_FUA : k < 60 ? G_ZERO
                : k < 68 ? G_ZERO_UNMAP : k < 76 ? G_DISCARD : G_FLUSH;
        if (i % 6 == 5)
            g->kind = G_FLUSH;
        /* Spread over the whole image (new L2 tables: 2 MiB each with 4k
         * clusters), some aligned, some not, some large. */
        g->off = qt_below(&r, SIZE);
        switch (qt_below(&r, 3)) {
        case 0: g->len = 1 + qt_below(&r, 3000); break;
        case 1:
            g->off = ALIGN_DOWN(g->off, 4096);
            g->len = 4096 * (1 + qt_below(&r, 20));
            break;
        default:
            g->off = ALIGN_DOWN(g->off, 512);
            g->len = 512 * (1 + qt_below(&r, 300));
            break;
        }
        /* Every eighth: rewrite part of what the setup made (compressed
         * clusters at 1 MiB, data at 0) or of the backing file. */
        if (i % 8 == 3) {
            g->kind = G_WRITE;
            g->off = (i % 16 == 3 ? (1 << 20) : 0) + qt_below(&r, 16384);
            g->len = 1 + qt_below(&r, 8192);
        }
        g->len = MIN(g->len, SIZE - g->off);
        g->seed = qt_rand(&r);
    }
}

static void fill(uint64_t seed, uint8_t *b, size_t n)
{
    struct qt_rng r;
    qt_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = qt_rand(&r);
        memcpy(b + i, &v, MIN((size_t)8, n - i));
    }
}

static struct image *open_img(const struct config *c, const char *path)
{
    char err[1024] = "";
    struct image_open_opts o = { .path = path, .format = c->format };
    struct image *img = NULL;
    int ret = image_open(&o, &img, err, sizeof(err));
    if (ret < 0) {
        QT_FAIL("[%s] open %s: %s", c->name, path, err);
        return NULL;
    }
    return img;
}

/* ------------------------------------------------------------------ */
/* One run                                                            */

struct ctx {
    const struct config *c;
    char dir[4096], path[4300], raw[4300];
    uint8_t *pristine;    /* the image file before the workload */
    size_t pristine_len;
    uint8_t *guest0;      /* its guest content */
    struct model m;       /* reused from run to run, as is buf */
    uint8_t *buf;
    unsigned long runs, absorbed, qemu_checks;
};

static bool restore_pristine(struct ctx *x)
{
    return qt_write_file(x->path, x->pristine, x->pristine_len);
}

/* Run the workload with the fault armed (F_NONE: the counting run), end
 * it with a close or (qcow2) a crash, reopen and judge.  oracle_read: also
 * read the image back with qemu-img before reopening. */
static void run(struct ctx *x, enum fault f, long at, bool crash_drop,
                bool oracle_read)
{
    const struct config *c = x->c;
    const bool qcow2 = strcmp(c->format, "qcow2") == 0;
    char what[160];
    snprintf(what, sizeof(what), "[%s] %s at call %ld, then %s", c->name,
             fault_name[f], at, crash_drop ? "crash" : "close");
    int failed_before = qt_failed;
    x->runs++;
    if (!restore_pristine(x)) {
        QT_FAIL("%s: cannot restore the image", what);
        return;
    }
    struct image *img = open_img(c, x->path);
    if (!img)
        return;
    struct model *m = &x->m;
    uint8_t *buf = x->buf;
    model_reset(m, x->guest0);

    inject = f;
    inject_at = at;
    fired = false;
    n_all = n_mod = n_write = 0;
    counting = true;

    int failed = -1;       /* index of the op the fault failed */
    bool latched = false, stop = false;
    for (int i = 0; i <= NGOPS && !latched && !stop; i++) {
        /* Op NGOPS is the close (or crash) at the end. */
        const struct gop *g = i < NGOPS ? &gops[i] : NULL;
        bool was = fired;
        int ret = 0;
        if (!g) {
            if (f == F_NONE) {
                before_close[F_EIO] = n_all;
                before_close[F_ENOSPC] = n_mod;
                before_close[F_SHORT] = n_write;
            }
            if (crash_drop && qcow2) {
                qcow2_simulate_crash(img);
            } else {
                ret = image_close(img);
                if (ret == 0)
                    model_flush(m);
            }
            img = NULL;
        } else if (g->kind == G_WRITE || g->kind == G_FUA) {
            fill(g->seed, buf, g->len);
            model_write(m, g->off, g->len, buf);
            ret = image_write(img, buf, g->len, g->off,
                              g->kind == G_FUA ? IMAGE_FUA : 0);
        } else if (g->kind == G_FLUSH) {
            ret = image_flush(img);
        } else {
            model_write(m, g->off, g->len, NULL);
            ret = g->kind == G_DISCARD
                      ? image_discard(img, g->off, g->len)
                      : image_zero(img, g->off, g->len,
                                   g->kind == G_ZERO_UNMAP ? IMAGE_MAY_UNMAP
                                                           : 0);
        }
        bool hit = fired && !was;
        const char *opname = g ? gname[g->kind] : "close";
        if (hit && f != F_SHORT) {
            int want = f == F_ENOSPC ? -ENOSPC : -EIO;
            /* Advisory: giving a freed cluster back (punching a hole)
             * may fail without failing the command. */
            bool advisory = qcow2 && fired_call == C_FALLOC &&
                            (fired_mode & FALLOC_FL_PUNCH_HOLE);
            if (ret == 0 && advisory) {
                x->absorbed++;
            } else if (ret != want) {
                QT_FAIL("%s: %s (op %d) hit the fault in %s and returned "
                        "%d (%s), want %d", what, opname, i,
                        call_name[fired_call], ret,
                        ret ? strerror(-ret) : "success", want);
            }
            if (ret < 0) {
                failed = i;
                latched = fired_call == C_SYNC;
                if (g && g->kind != G_FLUSH)
                    model_stick(m, g->off, g->len);
                /* Anything but a failed fdatasync is transient: the image
                 * must go on working.  Flush now (it must succeed), then
                 * carry on with the rest of the workload. */
                if (g && !latched) {
                    int r2 = image_flush(img);
                    if (r2 != 0) {
                        QT_FAIL("%s: after a %s in %s (op %d), the next "
                                "flush fails: %s", what, fault_name[f],
                                call_name[fired_call], i, strerror(-r2));
                        stop = true;
                    } else {
                        model_flush(m);
                    }
                }
                continue;
            }
        } else if (ret < 0) {
            QT_FAIL("%s: %s (op %d) failed (no EIO/ENOSPC injected in it%s): "
                    "%s", what, opname, i,
                    failed >= 0 ? ", but in an earlier one" : "",
                    strerror(-ret));
            if (g && g->kind != G_FLUSH)
                model_stick(m, g->off, g->len);
            stop = true;
        }
        if (ret == 0 && g && (g->kind == G_FLUSH || g->kind == G_FUA))
            model_flush(m);
    }
    if (img) {
        if (latched) {
            /* The pages the failed fdatasync covered may be gone; no
             * later flush may say otherwise. */
            QT_CHECK(image_flush(img) < 0);
            QT_CHECK(image_flush(img) < 0);
            uint8_t b[512] = { 1 };
            /* (Should it succeed, the model must know.) */
            model_write(m, 0, sizeof(b), b);
            model_stick(m, 0, sizeof(b));
            if (image_write(img, b, sizeof(b), 0, 0) == 0)
                QT_FAIL("%s: a write succeeded after a failed fdatasync",
                        what);
        }
        if (crash_drop && qcow2) {
            qcow2_simulate_crash(img);
        } else {
            int ret = image_close(img);
            if (latched && ret == 0)
                QT_FAIL("%s: close succeeded after a failed fdatasync", what);
            if (!latched && ret != 0)
                QT_FAIL("%s: close: %s", what, strerror(-ret));
            if (ret == 0)
                model_flush(m);
        }
    }
    counting = false;
    inject = F_NONE;
    if (f != F_NONE && !fired)
        QT_FAIL("%s: the fault never fired (calls: %ld)", what, n_all);

    /* Judge what is on disk: first qemu-img's view (sampled), then the
     * engine's after reopening read-write. */
    char why[1024];
    if (qcow2 && oracle_read) {
        size_t n = 0;
        uint8_t *got = NULL;
        /* Dirty lazy-refcount images are readable; their refcounts are
         * stale until the engine reopens them. */
        if (qt_run("qemu-img convert -f qcow2 -O raw '%s' '%s'", x->path,
                   x->raw) == 0)
            got = qt_read_file(x->raw, &n);
        unlink(x->raw);
        if (!got || n != SIZE)
            QT_FAIL("%s: qemu-img convert failed", what);
        else if (!model_accepts(m, got, why, sizeof(why)))
            QT_FAIL("%s: qemu-img reads: %s", what, why);
        free(got);
    }
    img = open_img(c, x->path);
    if (img) {
        int ret = image_read(img, buf, SIZE, 0);
        if (ret < 0)
            QT_FAIL("%s: reading after reopen: %s", what, strerror(-ret));
        else if (!model_accepts(m, buf, why, sizeof(why)))
            QT_FAIL("%s: after reopen: %s", what, why);
        fill(at, buf, 8192);
        ret = image_write(img, buf, 8192, SIZE / 2 + 1000, 0);
        if (ret == 0)
            ret = image_flush(img);
        int cret = image_close(img);
        if (ret < 0 || cret < 0)
            QT_FAIL("%s: reopened image: write/flush %d, close %d", what, ret,
                    cret);
    }
    if (qcow2) {
        x->qemu_checks++;
        char out[8192];
        /* Leaks are expected after faults: only errors are shown. */
        int st = qt_run_out(out, sizeof(out), "(qemu-img check -f qcow2 '%s' "
                            ">'%s.chk' 2>&1; c=$?; grep -v '^Leaked cluster' "
                            "'%s.chk'; exit $c)", x->path, x->raw, x->raw);
        if (st != 0 && st != 3)
            QT_FAIL("%s: qemu-img check exit %d after reopen:\n%s", what, st,
                    out);
        /* A retried short write is no failure at all: closed cleanly,
         * such a run must leave no leak either. */
        if ((f == F_NONE || (f == F_SHORT && !crash_drop)) && st != 0)
            QT_FAIL("%s: qemu-img check exit %d without a failure", what, st);
    }
    if (qt_failed != failed_before && getenv("QLUN_TEST_KEEP")) {
        char keep[4400];
        snprintf(keep, sizeof(keep), "%s/failed-%lu.%s", x->dir, x->runs,
                 c->format);
        qt_run("cp '%s' '%s'", x->path, keep);
    }
}

static bool setup(struct ctx *x)
{
    const struct config *c = x->c;
    qt_mkdtemp(x->dir, sizeof(x->dir), "faults");
    snprintf(x->path, sizeof(x->path), "%s/img.%s", x->dir, c->format);
    snprintf(x->raw, sizeof(x->raw), "%s/read.raw", x->dir);
    if (c->backing) {
        if (!qt_must("qemu-img create -q -f raw '%s/base.raw' 6M", x->dir) ||
            !qt_must("qemu-io -f raw -c 'write -P 0x11 0 3M' -c 'write -P 0x12 "
                     "3M 3M' '%s/base.raw'", x->dir))
            return false;
    }
    if (strcmp(c->format, "raw") == 0) {
        if (!qt_must("qemu-img create -q -f raw '%s' %llu", x->path, SIZE))
            return false;
    } else if (!qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s %s "
                        "img.qcow2 %llu", x->dir, c->opts,
                        c->backing ? "-b base.raw -F raw" : "", SIZE)) {
        return false;
    }
    if (c->setup && !qt_must("qemu-io -f %s %s '%s'", c->format, c->setup,
                             x->path))
        return false;
    if (c->snapshot && !qt_must("qemu-img snapshot -c s1 '%s'", x->path))
        return false;
    size_t n;
    x->pristine = qt_read_file(x->path, &x->pristine_len);
    x->guest0 = qt_qemu_raw(x->path, x->dir, &n, NULL);
    if (!x->pristine || !x->guest0 || n != SIZE)
        return false;
    model_init(&x->m, x->guest0, SIZE);
    x->buf = malloc(SIZE);
    return x->buf != NULL;
}

int main(void)
{
    qt_require_qemu();
    const char *l = getenv("QLUN_FAULTS_LONG");
    bool long_mode = l && *l && strcmp(l, "0") != 0;
    host_sys.preadv = fi_preadv;
    host_sys.pwritev = fi_pwritev;
    host_sys.fdatasync = fi_fdatasync;
    host_sys.fallocate = fi_fallocate;
    host_sys.ftruncate = fi_ftruncate;
    unsigned long total = 0;

    for (unsigned ci = 0; ci < ARRAY_SIZE(configs); ci++) {
        const struct config *c = &configs[ci];
        /* QLUN_FAULTS_CONFIG=n runs configuration n only (even a long
         * one, sampled unless in long mode). */
        const char *only = getenv("QLUN_FAULTS_CONFIG");
        if (only ? (unsigned)atoi(only) != ci : c->long_only && !long_mode)
            continue;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct ctx x = { .c = c };
        if (!setup(&x)) {
            QT_FAIL("[%s] setup failed", c->name);
            continue;
        }
        struct qt_rng r;
        qt_rng_seed(&r, qt_seed() + ci);
        make_workload(qt_seed() * 7 + ci);
        /* The counting run: no fault; it must be clean. */
        run(&x, F_NONE, -1, false, true);
        long counts[4] = { 0, n_all, n_mod, n_write };
        unsigned long injected[4] = { 0 };
        memset(fired_by_call, 0, sizeof(fired_by_call));
        for (enum fault f = F_EIO; f <= F_SHORT; f++) {
            long n = counts[f];
            long want = long_mode || !c->sample[f] ? n
                        : MIN(n, (long)c->sample[f]);
            /* Evenly spread over the run, from a random start. */
            double step = want ? (double)n / (double)want : 1;
            double start = (double)qt_below(&r, (uint64_t)(step * 1000)) /
                           1000.0;
            for (long k = 0; k < want; k++) {
                long at = MIN(n - 1, (long)(start + step * (double)k));
                /* Calls the final close makes cannot fail in a run that
                 * ends in a crash. */
                bool crash = (k + (long)f) % 2 == 0 && at < before_close[f];
                run(&x, f, at, crash, k % 4 == 0);
                injected[f]++;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("%-40s calls %ld (modifying %ld, writes %ld); injected EIO %lu "
               "ENOSPC %lu short %lu; faults absorbed (advisory) %lu; "
               "%.1fs\n", c->name, counts[1], counts[2], counts[3],
               injected[1], injected[2], injected[3], x.absorbed,
               (double)(t1.tv_sec - t0.tv_sec) +
                   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        for (enum fault f = F_EIO; f <= F_SHORT; f++) {
            printf("    %-12s", fault_name[f]);
            for (int k = 0; k < C_KINDS; k++)
                if (fired_by_call[f][k])
                    printf(" %s %lu", call_name[k], fired_by_call[f][k]);
            printf("\n");
        }
        fflush(stdout);
        total += injected[1] + injected[2] + injected[3];
        free(x.pristine);
        free(x.guest0);
        free(x.buf);
        model_free(&x.m);
        if (!qt_failed)
            qt_rmtree(x.dir);
    }
    printf("%s mode: %lu faults injected\n", long_mode ? "long" : "CI", total);
    return qt_summary("test_faults");
}
