/* qlun — crash simulation of the qcow2 engine.
 *
 * A mixed guest workload runs on an image while host_sys records every
 * host write (with its data), fallocate, ftruncate and fdatasync the engine
 * issues.  Then the recording is replayed against a model of the disk:
 *
 *  - the "durable" host file: what was on the image file after the last
 *    fdatasync (kept as a running copy, updated at each fdatasync);
 *  - the ops issued since that fdatasync: a crash may have kept any subset
 *    of them (the page cache writes back in any order, and may tear a write
 *    at 512-byte sector boundaries).
 *
 * At every fdatasync point (and at the end) crash images are built from the
 * durable file plus {none, a random subset, a prefix, a torn subset, all}
 * of the pending ops, applied in issue order.  Each must pass qemu-img check
 * (exit 0, or 3: leaked clusters only) and read back (qemu-img convert) as
 * the guest model says:
 *
 *  - a sector not written since the last *completed* guest flush reads
 *    exactly as it did at that flush;
 *  - a sector written since then is "don't care" as a whole, but each of
 *    its bytes must still be a value that byte had at some point since the
 *    flush (the flushed one or one of the writes since).  So a crash may
 *    lose unflushed writes but never show garbage: stale data of another
 *    cluster, zeros instead of backing data, a half-copied COW.  Bytewise
 *    rather than sectorwise, because overlapping partial-sector writes
 *    applied as a subset can mix two versions of one sector.
 *
 * Lazy-refcount images may legitimately be dirty (stale refcounts) after a
 * crash; those are checked after the engine has reopened them read-write
 * (which rebuilds the refcounts).  A sample of the other crash images is
 * also reopened read-write by the engine, read back through it, written,
 * closed, and checked again: the engine must carry on from any crash state.
 * A cleanly closed image must check clean, without even leaks.
 *
 * "Can it fail?"  Removing the host_flush() at the end of
 * qcow2_l2_pre_write() (refcount.c), or the one before the L1 entry update
 * in l2_table_for_write() (cluster.c), makes this test fail (qemu-img check
 * errors, stale or zero data where flushed data should be).
 *
 * Modes: by default (CI) a bounded random sample of crash points per
 * configuration; QLUN_CRASH_LONG=1 checks every crash point with several
 * subsets each.  QLUN_CRASH_BUDGET=n sets the CI sample size per
 * configuration; QLUN_SEED varies the workload.
 */
#include <time.h>

#include "qcow2/qcow2-internal.h"
#include "crash_rec.h"
#include "guest_model.h"

/* ------------------------------------------------------------------ */
/* Recording: host ops by crash_rec.h, guest ops here.                */

/* The host ops are recorded on every fd, so that the replay catches one
 * on any file but the image. */

enum guest_op_kind {
    G_WRITE,    /* guest write/zero/discard about to be issued: off, len,
                 * data (NULL: zeros) */
    G_FLUSH,    /* a guest flush (or FUA write, or close) completed */
};

struct guest_op {
    enum guest_op_kind kind;
    size_t at;  /* host ops recorded before it: it comes before
                 * crash_ops[at] */
    uint64_t off, len;
    uint8_t *data;
};

static struct guest_op *gops;
static size_t ngops, gops_cap;

static void push_gop(struct guest_op g)
{
    if (ngops == gops_cap) {
        gops_cap = gops_cap ? gops_cap * 2 : 1024;
        gops = realloc(gops, gops_cap * sizeof(*gops));
        assert(gops);
    }
    g.at = crash_nops;
    gops[ngops++] = g;
}

static void clear_gops(void)
{
    for (size_t i = 0; i < ngops; i++)
        free(gops[i].data);
    ngops = 0;
}

static bool write_file_sparse(const char *path, const struct crash_file *f)
{
    static const uint8_t zero[65536];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return false;
    bool ok = ftruncate(fd, (off_t)f->size) == 0;
    for (size_t off = 0; ok && off < f->size; off += sizeof(zero)) {
        size_t n = MIN(sizeof(zero), f->size - off);
        if (memcmp(f->b + off, zero, n) != 0)
            ok = pwrite(fd, f->b + off, n, (off_t)off) == (ssize_t)n;
    }
    return close(fd) == 0 && ok;
}

/* ------------------------------------------------------------------ */
/* Configurations and the workload.                                   */

struct config {
    const char *name;
    const char *opts;       /* qemu-img create -o */
    const char *backing;    /* NULL, "raw" or "qcow2" */
    uint64_t size;
    const char *setup;      /* qemu-io -c commands before the snapshot */
    bool snapshot;          /* qemu-img snapshot -c after setup */
    const char *post;       /* qemu-io -c commands after the snapshot */
    unsigned nops;          /* random guest operations */
    unsigned stride_tables; /* first write into this many L2 tables' ranges
                             * (L2 cache eviction) */
    uint64_t l2_cache_bytes; /* 0: the default (maps the whole disk) */
    bool reftable_growth;   /* the refcount table must move */
    bool end_close;         /* end with image_close, else a crash */
    bool lazy;
    bool direct;            /* O_DIRECT: unaligned writes become
                             * read-modify-write of whole blocks (and
                             * ftruncate when they pass end of file) */
    bool long_only;
};

static const struct config configs[] = {
    {
        .name = "v3 64k, compressed + internal snapshot",
        .opts = "compat=1.1,cluster_size=65536",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x21 0 2M' -c 'write -c -P 0x22 2M 1M' "
                 "-c 'write -z 3M 512k' -c 'write -P 0x24 5M 100k'",
        .snapshot = true,
        .post = "-c 'write -P 0x23 1M 256k' -c 'write -c -P 0x25 6M 256k'",
        .nops = 220,
    },
    {
        .name = "v3 512B, refcount_bits=64: L2 eviction, table growth",
        .opts = "compat=1.1,cluster_size=512,refcount_bits=64",
        .size = 20 << 20,
        .setup = "-c 'write -P 0x31 0 256k' -c 'write -c -P 0x32 256k 64k'",
        .snapshot = true,
        .post = "-c 'write -P 0x33 64k 32k'",
        .nops = 160,
        /* 20 MiB / 32 KiB; the cache holds 64, so dirty tables are
         * evicted between flushes (partial write-back after pre_write,
         * from victim()). */
        .stride_tables = 640,
        .l2_cache_bytes = 64 * 512,
        .reftable_growth = true,
        .end_close = true,
    },
    {
        .name = "v3 64k extended L2 over a raw backing file",
        .opts = "compat=1.1,cluster_size=65536,extended_l2=on",
        .backing = "raw",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x41 512k 6k' -c 'write -z 1M 64k' "
                 "-c 'write -c -P 0x42 2M 128k' -c 'discard 3M 8k'",
        .nops = 220,
    },
    {
        .name = "v2 64k over a qcow2 backing file, snapshot",
        .opts = "compat=0.10,cluster_size=65536",
        .backing = "qcow2",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x51 0 1M' -c 'write -c -P 0x52 1M 256k'",
        .snapshot = true,
        .post = "-c 'write -P 0x53 512k 64k'",
        .nops = 200,
        .end_close = true,
    },
    {
        .name = "v3 4k lazy refcounts, raw backing, snapshot",
        .opts = "compat=1.1,cluster_size=4096,lazy_refcounts=on",
        .backing = "raw",
        .size = 6 << 20,
        .setup = "-c 'write -P 0x61 0 1M' -c 'write -c -P 0x62 1M 64k'",
        .snapshot = true,
        .post = "-c 'write -P 0x63 256k 16k'",
        .nops = 200,
        .lazy = true,
    },
    {
        .name = "v3 16k extended L2, lazy refcounts, compressed",
        .opts = "compat=1.1,cluster_size=16384,extended_l2=on,"
                "lazy_refcounts=on",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x71 0 512k' -c 'write -c -P 0x72 512k 256k'",
        .snapshot = true,
        .nops = 300,
        .end_close = true,
        .lazy = true,
        .long_only = true,
    },
    {
        .name = "v3 1k clusters, 8-bit refcounts, qcow2 backing",
        .opts = "compat=1.1,cluster_size=1024,refcount_bits=8",
        .backing = "qcow2",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x81 0 512k' -c 'write -c -P 0x82 1M 64k'",
        .snapshot = true,
        .nops = 400,
        .long_only = true,
    },
    {
        .name = "v3 64k O_DIRECT, raw backing, snapshot",
        .opts = "compat=1.1,cluster_size=65536",
        .backing = "raw",
        .size = 8 << 20,
        .setup = "-c 'write -P 0x91 0 1M' -c 'write -c -P 0x92 1M 128k'",
        .snapshot = true,
        .nops = 220,
        .direct = true,
        .long_only = true,
    },
    {
        /* O_DIRECT on a file: allocations past the end go into space
         * preallocated ahead (qcow2/prealloc.c: fallocate mode 0, the
         * file truncated back to host_end at close). */
        .name = "v3 64k O_DIRECT, preallocation ahead, close",
        .opts = "compat=1.1,cluster_size=65536",
        .size = 8 << 20,
        .setup = "-c 'write -P 0xa1 0 256k'",
        .nops = 160,
        .direct = true,
        .end_close = true,
    },
};

static bool long_mode;

static unsigned long crash_images_total, points_total;

static void fill_random(struct qt_rng *r, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = qt_rand(r);
        memcpy(b + i, &v, MIN((size_t)8, n - i));
    }
}

/* Issue one guest write (recorded for the model first: its host ops belong
 * to it).  flags: IMAGE_FUA. */
static void g_write(struct image *img, struct qt_rng *r, uint64_t off,
                    uint64_t len, unsigned flags)
{
    uint8_t *d = malloc(len);
    assert(d);
    fill_random(r, d, len);
    uint8_t *copy = malloc(len);
    assert(copy);
    memcpy(copy, d, len);
    push_gop((struct guest_op){ .kind = G_WRITE, .off = off, .len = len,
                                .data = copy });
    int ret = image_write(img, d, len, off, flags);
    if (ret < 0)
        QT_FAIL("write %" PRIu64 "+%" PRIu64 " flags %u: %s", off, len, flags,
                strerror(-ret));
    else if (flags & IMAGE_FUA)
        push_gop((struct guest_op){ .kind = G_FLUSH });
    free(d);
}

static void g_zero(struct image *img, uint64_t off, uint64_t len, int how)
{
    push_gop((struct guest_op){ .kind = G_WRITE, .off = off, .len = len });
    int ret = how == 2 ? image_discard(img, off, len)
                       : image_zero(img, off, len, how ? IMAGE_MAY_UNMAP : 0);
    if (ret < 0)
        QT_FAIL("%s %" PRIu64 "+%" PRIu64 ": %s",
                how == 2 ? "discard" : how ? "zero unmap" : "zero", off, len,
                strerror(-ret));
}

static void g_flush(struct image *img)
{
    int ret = image_flush(img);
    if (ret < 0)
        QT_FAIL("flush: %s", strerror(-ret));
    else
        push_gop((struct guest_op){ .kind = G_FLUSH });
}

/* A random range: sometimes sector- or cluster-aligned, sometimes not;
 * mostly small, sometimes several clusters. */
static void pick_range(struct qt_rng *r, uint64_t size, uint64_t cs,
                       uint64_t *off, uint64_t *len)
{
    uint64_t o = qt_below(r, size), l;
    switch (qt_below(r, 4)) {
    case 0:
        l = 1 + qt_below(r, 1500);
        break;
    case 1:
        o = ALIGN_DOWN(o, SECTOR);
        l = SECTOR * (1 + qt_below(r, 16));
        break;
    case 2:
        o = ALIGN_DOWN(o, cs);
        l = cs * (1 + qt_below(r, 5));
        break;
    default:
        l = 1 + qt_below(r, 3 * cs);
        break;
    }
    *off = o;
    *len = MIN(l, size - o);
}

static void workload(struct image *img, const struct config *c,
                     struct qt_rng *r)
{
    const uint64_t cs = img->info.cluster_size;
    const uint64_t size = c->size;
    /* One write in each L2 table's guest range, so more tables are dirty
     * than the cache holds: eviction writes tables back on its own. */
    uint64_t per_table = cs / (c->opts && strstr(c->opts, "extended_l2=on")
                                   ? 16 : 8) * cs;
    for (unsigned t = 0; t < c->stride_tables; t++) {
        uint64_t off = (uint64_t)t * per_table + qt_below(r, per_table / 2);
        off = ALIGN_DOWN(off, SECTOR);
        if (off >= size)
            break;
        g_write(img, r, off, MIN((uint64_t)2048, size - off), 0);
        if (t % 97 == 96)
            g_flush(img);
    }
    for (unsigned i = 0; i < c->nops; i++) {
        uint64_t off, len;
        pick_range(r, size, cs, &off, &len);
        unsigned k = (unsigned)qt_below(r, 100);
        if (k < 45)
            g_write(img, r, off, len, 0);
        else if (k < 50)
            g_write(img, r, off, len, IMAGE_FUA);
        else if (k < 58)
            g_zero(img, off, len, 0);
        else if (k < 66)
            g_zero(img, off, len, 1);
        else if (k < 74)
            g_zero(img, off, len, 2);
        else if (k < 86)
            g_flush(img);
        else {
            /* Rewrite what the setup made: compressed clusters, clusters
             * shared with the snapshot, backing data (first MiBs). */
            off = ALIGN_DOWN(qt_below(r, MIN(size, (uint64_t)(3 << 20))),
                             (uint64_t)SECTOR);
            len = MIN(size - off, 1 + qt_below(r, 2 * cs));
            g_write(img, r, off, len, 0);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Replay: build and judge crash images.                              */

struct replay {
    const struct config *c;
    const char *dir;
    char crash[4300], raw[4300];
    struct crash_file durable, work;
    struct model m;
    size_t *pend;
    size_t npend;
    struct qt_rng rng;
    int img_fd;
    double p;               /* chance of checking a crash point */
    unsigned long images, points, failures, reopened, dirty;
    uint64_t last_none_dver, last_none_gen, dver;
    bool none_checked;
};

static uint64_t be64_at(const struct crash_file *f, size_t off)
{
    return f->size >= off + 8 ? get_be64(f->b + off) : 0;
}

/* Open a crash image read-write through the engine, write, close: the
 * engine must carry on from any crash state.  For a dirty lazy-refcount
 * image this is the refcount rebuild. */
static bool engine_reopen(struct replay *rp, char *why, size_t whylen)
{
    struct image *img;
    char err[1024] = "";
    struct image_open_opts o = { .path = rp->crash, .format = "qcow2" };
    int ret = image_open(&o, &img, err, sizeof(err));
    if (ret < 0) {
        snprintf(why, whylen, "engine cannot reopen it: %s", err);
        return false;
    }
    /* The engine must read the crash image as qemu-img did (for a dirty
     * image: after its refcount rebuild). */
    uint8_t *all = malloc(img->size);
    assert(all);
    ret = image_read(img, all, img->size, 0);
    char diff[512] = "";
    bool same = ret == 0 && model_accepts(&rp->m, all, diff, sizeof(diff));
    free(all);
    if (!same) {
        if (ret < 0)
            snprintf(why, whylen, "engine cannot read it: %s", strerror(-ret));
        else
            snprintf(why, whylen, "reopened by the engine: %s", diff);
        image_close(img);
        return false;
    }
    uint8_t buf[4096];
    fill_random(&rp->rng, buf, sizeof(buf));
    uint64_t off = ALIGN_DOWN(qt_below(&rp->rng, img->size - sizeof(buf)),
                              (uint64_t)SECTOR);
    ret = image_write(img, buf, sizeof(buf), off, 0);
    int cret = image_close(img);
    if (ret < 0 || cret < 0) {
        snprintf(why, whylen, "after reopening: write %s, close %s",
                 strerror(-ret), strerror(-cret));
        return false;
    }
    rp->reopened++;
    return true;
}

/* qemu-img check's output without its "Leaked cluster" lines (counted
 * instead): the errors are what matters and may come after hundreds. */
static void check_summary(const char *out, char *dst, size_t len)
{
    unsigned leaked = 0;
    size_t used = 0;
    dst[0] = 0;
    for (const char *l = out; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) + 1 : strlen(l);
        if (strncmp(l, "Leaked cluster", 14) == 0)
            leaked++;
        else if (used + n < len) {
            memcpy(dst + used, l, n);
            used += n;
            dst[used] = 0;
        }
        l += n;
    }
    if (leaked)
        snprintf(dst + used, len - used, "(%u \"Leaked cluster\" lines)",
                 leaked);
}

/* Judge the crash image in rp->work; what describes how it was made. */
static void judge(struct replay *rp, const char *what)
{
    char why[4096] = "", out[16384];
    bool ok = true;
    rp->images++;
    if (!write_file_sparse(rp->crash, &rp->work)) {
        QT_FAIL("cannot write %s", rp->crash);
        return;
    }
    /* (v2 headers end before the feature fields) */
    bool dirty = rp->work.size >= HDR_V3_MIN_LENGTH &&
                 get_be32(rp->work.b + 4) >= 3 &&
                 (be64_at(&rp->work, HDR_INCOMPAT) & INCOMPAT_DIRTY);
    if (dirty && !rp->c->lazy) {
        ok = false;
        snprintf(why, sizeof(why), "dirty bit set without lazy refcounts");
    }
    /* Stale refcounts are what the dirty bit announces: judge those after
     * the rebuild below.  One shell for both qemu-img runs (they dominate
     * the time of this test). */
    char check[4400] = "true";
    if (!dirty)
        snprintf(check, sizeof(check), "qemu-img check -f qcow2 '%s'",
                 rp->crash);
    int st = qt_run_out(out, sizeof(out),
                        "(%s; c=$?; if [ $c -eq 0 ] || [ $c -eq 3 ]; then "
                        "qemu-img convert -f qcow2 -O raw '%s' '%s' || "
                        "c=100; fi; exit $c)", check, rp->crash, rp->raw);
    if (ok && st == 100) {
        ok = false;
        snprintf(why, sizeof(why), "qemu-img convert failed:\n%.3000s", out);
    } else if (ok && st != 0 && st != 3) {
        char sum[3000];
        check_summary(out, sum, sizeof(sum));
        ok = false;
        snprintf(why, sizeof(why), "qemu-img check exit %d:\n%s", st, sum);
    }
    if (ok) {
        size_t n = 0;
        uint8_t *got = qt_read_file(rp->raw, &n);
        if (!got || n != rp->m.size) {
            ok = false;
            snprintf(why, sizeof(why), "converted image has %zu bytes", n);
        } else {
            ok = model_accepts(&rp->m, got, why, sizeof(why));
        }
        free(got);
    }
    unlink(rp->raw);
    /* Reopen through the engine: every dirty image (the rebuild), and a
     * sample of the rest. */
    if (ok && (dirty || qt_below(&rp->rng, long_mode ? 4 : 10) == 0)) {
        rp->dirty += dirty;
        ok = engine_reopen(rp, why, sizeof(why));
        if (ok) {
            st = qt_run_out(out, sizeof(out), "qemu-img check -f qcow2 '%s'",
                            rp->crash);
            if (st != 0 && st != 3) {
                char sum[3000];
                check_summary(out, sum, sizeof(sum));
                ok = false;
                snprintf(why, sizeof(why), "after the engine reopened and "
                         "wrote it%s, qemu-img check exit %d:\n%s",
                         dirty ? " (refcount rebuild)" : "", st, sum);
            }
        }
    }
    if (!ok) {
        rp->failures++;
        if (rp->failures <= 5) {
            char keep[4400];
            snprintf(keep, sizeof(keep), "%s/failed-%lu.qcow2", rp->dir,
                     rp->failures);
            write_file_sparse(keep, &rp->work);
            QT_FAIL("[%s] crash point %lu, %s (%zu ops pending; kept as %s): "
                    "%s", rp->c->name, rp->points, what, rp->npend, keep, why);
        }
    }
}

/* Build a crash image: durable + the pending ops chosen by mode. */
enum subset { S_NONE, S_ALL, S_RANDOM, S_PREFIX, S_TORN };

static void build(struct replay *rp, enum subset mode, char *what,
                  size_t whatlen)
{
    crash_file_resize(&rp->work, rp->durable.size);
    memcpy(rp->work.b, rp->durable.b, rp->durable.size);
    size_t n = rp->npend, cut = n;
    if (mode == S_PREFIX)
        cut = 1 + qt_below(&rp->rng, n - 1);
    unsigned kept = 0, torn = 0;
    for (size_t i = 0; i < n; i++) {
        const struct crash_op *o = &crash_ops[rp->pend[i]];
        bool take;
        switch (mode) {
        case S_NONE: take = false; break;
        case S_ALL: take = true; break;
        case S_PREFIX: take = i < cut; break;
        default: take = qt_below(&rp->rng, 2); break;
        }
        if (mode == S_TORN && o->kind == CRASH_WRITE &&
            (o->off % SECTOR) + o->len > SECTOR) {
            /* Sector by sector (host file sectors), each kept or not. */
            for (uint64_t a = 0; a < o->len;) {
                uint64_t b = MIN(o->len, ALIGN_UP(o->off + a + 1,
                                                  (uint64_t)SECTOR) - o->off);
                if (qt_below(&rp->rng, 2)) {
                    crash_apply_part(&rp->work, o, a, b);
                    torn++;
                }
                a = b;
            }
            continue;
        }
        if (take) {
            crash_apply(&rp->work, o);
            kept++;
        }
    }
    static const char *names[] = { "none", "all", "random subset", "prefix",
                                   "torn subset" };
    if (mode == S_TORN)
        snprintf(what, whatlen, "torn subset of the pending ops (%u whole "
                 "ops and %u sectors of torn writes kept)", kept, torn);
    else
        snprintf(what, whatlen, "%s of the pending ops (%u kept)",
                 names[mode], kept);
}

static void crash_point(struct replay *rp, bool last)
{
    char what[128];
    rp->points++;
    if (qt_below(&rp->rng, 1000000) >= (uint64_t)(rp->p * 1000000) && !last)
        return;
    /* "none" is the state right after the previous fdatasync; skip it if
     * neither that state nor the model changed since it was judged. */
    if (!rp->none_checked || rp->dver != rp->last_none_dver ||
        rp->m.gen != rp->last_none_gen) {
        build(rp, S_NONE, what, sizeof(what));
        judge(rp, what);
        rp->none_checked = true;
        rp->last_none_dver = rp->dver;
        rp->last_none_gen = rp->m.gen;
    }
    if (rp->npend >= 2) {
        if (long_mode) {
            for (int i = 0; i < 3; i++) {
                build(rp, S_RANDOM, what, sizeof(what));
                judge(rp, what);
            }
            build(rp, S_PREFIX, what, sizeof(what));
            judge(rp, what);
            build(rp, S_TORN, what, sizeof(what));
            judge(rp, what);
        } else {
            static const enum subset rot[] = { S_RANDOM, S_PREFIX, S_RANDOM,
                                               S_TORN };
            build(rp, rot[rp->images % 4], what, sizeof(what));
            judge(rp, what);
        }
    }
    /* "all" is the next point's "none" (judged there against a model at
     * least as strict), except at the end. */
    if (last && rp->npend > 0) {
        build(rp, S_ALL, what, sizeof(what));
        judge(rp, what);
    }
}

static void replay(struct replay *rp)
{
    size_t syncs = 0;
    for (size_t i = 0; i < crash_nops; i++)
        syncs += crash_ops[i].kind == CRASH_SYNC;
    unsigned long budget = 40;
    const char *e = getenv("QLUN_CRASH_BUDGET");
    if (e)
        budget = strtoul(e, NULL, 0);
    /* About 1.7 images per checked point. */
    rp->p = long_mode ? 1.0 : MIN(1.0, budget / (1.7 * (double)(syncs + 1)));
    rp->pend = malloc(sizeof(size_t) * (crash_nops + 1));
    assert(rp->pend);
    rp->npend = 0;
    size_t g = 0; /* the next guest op */
    for (size_t i = 0; i <= crash_nops; i++) {
        /* The guest ops issued before host op i go to the model first. */
        for (; g < ngops && gops[g].at <= i; g++) {
            if (gops[g].kind == G_WRITE)
                model_write(&rp->m, gops[g].off, gops[g].len, gops[g].data);
            else
                model_flush(&rp->m);
        }
        if (i == crash_nops)
            break;
        const struct crash_op *o = &crash_ops[i];
        switch (o->kind) {
        case CRASH_WRITE:
        case CRASH_FALLOC:
        case CRASH_TRUNC:
            if (o->fd != rp->img_fd) {
                QT_FAIL("[%s] host op on fd %d, not the image's (%d)",
                        rp->c->name, o->fd, rp->img_fd);
                break;
            }
            rp->pend[rp->npend++] = i;
            break;
        case CRASH_SYNC:
            crash_point(rp, false);
            for (size_t j = 0; j < rp->npend; j++)
                crash_apply(&rp->durable, &crash_ops[rp->pend[j]]);
            if (rp->npend)
                rp->dver++;
            rp->npend = 0;
            break;
        }
    }
    crash_point(rp, true);
    free(rp->pend);
}

/* ------------------------------------------------------------------ */

static bool setup(const struct config *c, const char *dir, const char *img)
{
    char back[4300] = "";
    if (c->backing) {
        const char *fmt = c->backing;
        snprintf(back, sizeof(back), "-b base.%s -F %s", fmt, fmt);
        char bpath[4300];
        snprintf(bpath, sizeof(bpath), "%s/base.%s", dir, fmt);
        /* Backing data everywhere but the last MiB (reads zero past it). */
        if (!qt_must("qemu-img create -q -f %s '%s' %" PRIu64, fmt, bpath,
                     c->size - (1 << 20)) ||
            !qt_must("qemu-io -f %s -c 'write -P 0x11 0 1M' -c 'write -P 0x12 "
                     "1M 2M' -c 'write -P 0x13 3M %" PRIu64 "' '%s'", fmt,
                     c->size - (4 << 20), bpath))
            return false;
    }
    if (!qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s %s '%s' %"
                 PRIu64, dir, c->opts, back, img, c->size))
        return false;
    if (c->setup && !qt_must("qemu-io -f qcow2 %s '%s'", c->setup, img))
        return false;
    if (c->snapshot && !qt_must("qemu-img snapshot -c s1 '%s'", img))
        return false;
    if (c->post && !qt_must("qemu-io -f qcow2 %s '%s'", c->post, img))
        return false;
    int st = qt_check(img);
    if (st != 0) {
        QT_FAIL("[%s] setup image is not clean (%d)", c->name, st);
        return false;
    }
    return true;
}

static void run_config(const struct config *c, unsigned idx)
{
    char dir[4096], img_path[4300];
    struct qt_rng r;
    struct image *img;
    int failed_before = qt_failed;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    qt_rng_seed(&r, qt_seed() + idx);
    qt_mkdtemp(dir, sizeof(dir), "crash-sim");
    snprintf(img_path, sizeof(img_path), "%s/img.qcow2", dir);
    if (!setup(c, dir, img_path))
        return;

    struct replay rp = { .c = c, .dir = dir };
    snprintf(rp.crash, sizeof(rp.crash), "%s/crash.qcow2", dir);
    snprintf(rp.raw, sizeof(rp.raw), "%s/crash.raw", dir);
    qt_rng_seed(&rp.rng, qt_seed() * 31 + idx);
    size_t n, isize;
    uint8_t *guest = qt_qemu_raw(img_path, dir, &n, NULL);
    uint8_t *initial = qt_read_file(img_path, &isize);
    if (!initial || !guest || n != c->size) {
        QT_FAIL("[%s] cannot read the initial image", c->name);
        free(initial);
        free(guest);
        return;
    }
    crash_file_resize(&rp.durable, isize);
    memcpy(rp.durable.b, initial, isize);
    free(initial);
    uint64_t rt_before = be64_at(&rp.durable, HDR_REFTABLE_OFFSET);

    clear_gops();
    crash_rec_start_all();
    qt_direct_io = c->direct;
    qt_l2_cache_bytes = c->l2_cache_bytes;
    int oret = qt_open(img_path, false, NULL, &img);
    qt_direct_io = false;
    qt_l2_cache_bytes = 0;
    if (oret == -EINVAL && c->direct) {
        crash_rec_stop();
        printf("%-55s skipped: no O_DIRECT here\n", c->name);
        free(guest);
        return;
    }
    if (oret < 0) {
        crash_rec_stop();
        QT_FAIL("[%s] open", c->name);
        free(guest);
        return;
    }
    rp.img_fd = file_host(img->file)->fd;
    workload(img, c, &r);
    /* The live image must read as the guest writes say: this checks the
     * model (discard and zero semantics) as much as the engine. */
    uint8_t *live = malloc(c->size);
    assert(live);
    memcpy(live, guest, c->size);
    for (size_t i = 0; i < ngops; i++)
        if (gops[i].kind == G_WRITE) {
            if (gops[i].data)
                memcpy(live + gops[i].off, gops[i].data, gops[i].len);
            else
                memset(live + gops[i].off, 0, gops[i].len);
        }
    qt_compare_image(img, live, c->name);
    free(live);
    if (c->end_close) {
        int ret = image_close(img);
        if (ret < 0)
            QT_FAIL("[%s] close: %s", c->name, strerror(-ret));
        else
            push_gop((struct guest_op){ .kind = G_FLUSH });
    } else {
        qcow2_simulate_crash(img);
    }
    crash_rec_stop();

    model_init(&rp.m, guest, c->size);
    free(guest);
    replay(&rp);

    /* Closed cleanly, nothing crashed: not even a leak is acceptable. */
    if (c->end_close) {
        crash_file_resize(&rp.work, rp.durable.size);
        memcpy(rp.work.b, rp.durable.b, rp.durable.size);
        int st = write_file_sparse(rp.crash, &rp.work) ? qt_check(rp.crash)
                                                       : -1;
        if (st != 0)
            QT_FAIL("[%s] after a clean close qemu-img check exits %d",
                    c->name, st);
    }
    if (c->reftable_growth &&
        be64_at(&rp.durable, HDR_REFTABLE_OFFSET) == rt_before)
        QT_FAIL("[%s] the refcount table did not move (no growth tested)",
                c->name);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    size_t kinds[CRASH_SYNC + 1] = { 0 };
    for (size_t i = 0; i < crash_nops; i++)
        kinds[crash_ops[i].kind]++;
    printf("%-55s %4zu fdatasyncs, %5zu writes, %3zu fallocates, %zu "
           "ftruncates; %4lu crash images (%lu reopened, %lu dirty), %lu bad, "
           "%.1fs\n", c->name, kinds[CRASH_SYNC], kinds[CRASH_WRITE],
           kinds[CRASH_FALLOC], kinds[CRASH_TRUNC], rp.images, rp.reopened, rp.dirty,
           rp.failures,
           (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    fflush(stdout);
    crash_images_total += rp.images;
    points_total += rp.points;
    model_free(&rp.m);
    free(rp.durable.b);
    free(rp.work.b);
    crash_rec_clear();
    clear_gops();
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

int main(void)
{
    qt_require_qemu();
    long_mode = getenv("QLUN_CRASH_LONG") && *getenv("QLUN_CRASH_LONG") &&
                strcmp(getenv("QLUN_CRASH_LONG"), "0") != 0;
    const char *only = getenv("QLUN_CRASH_CONFIG");
    for (unsigned i = 0; i < ARRAY_SIZE(configs); i++) {
        /* QLUN_CRASH_CONFIG=n runs configuration n only (even a long one,
         * sampled unless in long mode). */
        if (only ? (unsigned)atoi(only) != i
                 : configs[i].long_only && !long_mode)
            continue;
        run_config(&configs[i], i);
    }
    printf("%s mode: %lu crash points, %lu crash images checked\n",
           long_mode ? "long" : "CI", points_total, crash_images_total);
    free(crash_ops);
    free(gops);
    return qt_summary("test_crash_sim");
}
