/* qlun — qcow2 resize: L1 growth across cluster sizes, the shrink rules,
 * snapshots, backing data past the old end, and a crash at every host
 * operation of a grow.
 *
 * Oracles: qemu-img check (clean), qemu-img info (virtual-size), qemu-io
 * (reads with a pattern), and our own reads after reopening.
 *
 * "Can it fail?"  Each rule was broken on purpose once in resize.c, and
 * each made this test fail:
 *  - the size written before the L1 switch: crash images that neither
 *    QEMU nor we open ("L1 table is too small");
 *  - no refcount write-back before the switch: crash images that
 *    qemu-img check calls corrupt (the new L1's clusters have refcount 0);
 *  - no zeroing past the old end: the backing file's data shows there;
 *  - that zeroing done after the new size was written (as first written):
 *    crash images of the new size that show the backing file's data;
 *  - no check for data past the new end of a forced shrink: the shrink
 *    over data at 5M succeeds;
 *  - no refusal to shrink an image with snapshots: that shrink succeeds;
 *  - the old L1 given back before the switch: the allocator hands its
 *    clusters out for the new L1 while the header still points there
 *    (the engine's own overlap check then marks the image corrupt).
 */
#include "qcow2/qcow2-internal.h"
#include "crash_rec.h"

static char dir[4096];

/* ---- helpers ---- */

static int64_t info_virtual_size(const char *img)
{
    char out[8192];
    if (qt_run_out(out, sizeof(out), "qemu-img info --output=json '%s'",
                   img) != 0)
        return -1;
    const char *p = strstr(out, "\"virtual-size\":");
    return p ? strtoll(p + 15, NULL, 10) : -1;
}

/* qemu-io reads [off, off+len) expecting byte pattern pat. */
static bool qemu_reads(const char *img, uint64_t off, uint64_t len, int pat)
{
    char out[8192];
    int st = qt_run_out(out, sizeof(out), "qemu-io -f qcow2 -r -c 'read -P "
                        "0x%02x %" PRIu64 " %" PRIu64 "' '%s'", pat, off, len,
                        img);
    if (st != 0 || strstr(out, "fail") || strstr(out, "error")) {
        fprintf(stderr, "qemu-io read -P 0x%02x %" PRIu64 "+%" PRIu64 ": %s",
                pat, off, len, out);
        return false;
    }
    return true;
}

static bool engine_reads(struct image *img, uint64_t off, uint64_t len,
                         int pat)
{
    uint8_t *b = malloc(len);
    assert(b);
    bool ok = image_read(img, b, len, off) == 0;
    for (uint64_t i = 0; ok && i < len; i++)
        ok = b[i] == pat;
    free(b);
    return ok;
}

static bool engine_writes(struct image *img, uint64_t off, uint64_t len,
                          int pat)
{
    uint8_t *b = malloc(len);
    assert(b);
    memset(b, pat, len);
    int ret = image_write(img, b, len, off, 0);
    free(b);
    return ret == 0;
}

static uint32_t header_l1_size(const char *img)
{
    uint8_t h[64];
    int fd = open(img, O_RDONLY);
    bool ok = fd >= 0 && pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h);
    if (fd >= 0)
        close(fd);
    return ok ? get_be32(h + HDR_L1_SIZE) : 0;
}

/* ---- growth across cluster sizes ---- */

struct grow_case {
    unsigned cluster;
    bool extl2;
    uint64_t old_size, new_size;
};

static void grow_one(const struct grow_case *g)
{
    char img[4300], opts[128], what[128];
    snprintf(what, sizeof(what), "grow %u-byte clusters%s %" PRIu64 " -> %"
             PRIu64, g->cluster, g->extl2 ? " (extended L2)" : "",
             g->old_size, g->new_size);
    snprintf(img, sizeof(img), "%s/grow-%u-%d.qcow2", dir, g->cluster,
             g->extl2);
    snprintf(opts, sizeof(opts), "cluster_size=%u%s", g->cluster,
             g->extl2 ? ",extended_l2=on" : "");
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts, img,
                 g->old_size))
        return;
    uint32_t l1_before = header_l1_size(img);
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("%s: open", what);
        return;
    }
    const uint64_t k = 8192, old = g->old_size, new = g->new_size;
    char err[512];
    QT_CHECK(engine_writes(im, old - k, k, 0xa1));
    int ret = image_resize(im, new, false, err, sizeof(err));
    if (ret < 0) {
        QT_FAIL("%s: resize: %s", what, err);
        image_close(im);
        return;
    }
    QT_CHECK(im->size == new);
    QT_CHECK(engine_writes(im, old, k, 0xb2));
    QT_CHECK(engine_writes(im, new - k, k, 0xc3));
    QT_CHECK(engine_reads(im, old - k, k, 0xa1));
    QT_CHECK(engine_reads(im, old + k, k, 0));
    QT_CHECK(image_close(im) == 0);

    if (qt_check(img) != 0)
        QT_FAIL("%s: qemu-img check not clean", what);
    int64_t vs = info_virtual_size(img);
    if (vs != (int64_t)new)
        QT_FAIL("%s: qemu-img info says virtual-size %" PRId64, what, vs);
    uint32_t l1_after = header_l1_size(img);
    if (l1_after <= l1_before)
        QT_FAIL("%s: the L1 did not grow (%u -> %u entries): not the case "
                "this test is for", what, l1_before, l1_after);
    QT_CHECK(qemu_reads(img, old - k, k, 0xa1));
    QT_CHECK(qemu_reads(img, old, k, 0xb2));
    QT_CHECK(qemu_reads(img, old + k, k, 0));
    QT_CHECK(qemu_reads(img, new - k, k, 0xc3));
    /* And we read back what QEMU reads. */
    if (qt_open(img, false, NULL, &im) == 0) {
        QT_CHECK(im->size == new);
        QT_CHECK(engine_reads(im, new - k, k, 0xc3));
        QT_CHECK(engine_reads(im, old, k, 0xb2));
        image_close(im);
    } else {
        QT_FAIL("%s: reopen", what);
    }
    printf("%-60s L1 %u -> %u entries\n", what, l1_before, l1_after);
}

static void test_grow(void)
{
    /* Each old size fills the L1 it was created with; each new size
     * needs an L1 of more than one cluster (512) or several entries. */
    static const struct grow_case cases[] = {
        { 512, false, 64 << 10, 8 << 20 },          /* L1 2 -> 256 entries */
        { 4096, false, 2 << 20, 1ull << 33 },       /* 1 -> 4096 (8 GiB) */
        { 65536, false, 512ull << 20, 5ull << 30 }, /* 1 -> 10 */
        { 65536, true, 256ull << 20, 3ull << 30 },  /* extended L2 */
        { 2u << 20, false, 1ull << 30, 3ull << 40 },/* 1 -> 6 (3 TiB) */
        { 2u << 20, true, 1ull << 30, 1ull << 40 }, /* extended L2, 1 -> 4 */
        { 16384, true, 1 << 20, 1ull << 31 },       /* 1 -> 64 */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
        grow_one(&cases[i]);
}

/* ---- what QEMU makes opens; what it refuses, we refuse ---- */

static void test_qemu_resized_opens(void)
{
    char img[4300];
    snprintf(img, sizeof(img), "%s/qemu-resized.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 1M",
                 img) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x5a 0 64k' '%s'", img) ||
        !qt_must("qemu-img resize -q -f qcow2 '%s' 3G", img))
        return;
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("an image grown by qemu-img resize does not open");
        return;
    }
    QT_CHECK(im->size == 3ull << 30);
    QT_CHECK(engine_reads(im, 0, 65536, 0x5a));
    image_close(im);

    /* A size past what the L1 maps: QEMU refuses it ("L1 table is too
     * small"), and so do we: the truth behind "short L1". */
    uint8_t b[8];
    put_be64(b, 64ull << 30);
    int fd = open(img, O_WRONLY);
    QT_CHECK(fd >= 0 && pwrite(fd, b, 8, HDR_SIZE) == 8);
    close(fd);
    QT_CHECK(qt_run("qemu-img info '%s'", img) != 0);
    char err[512];
    struct image_open_opts o = { .path = img, .format = "qcow2" };
    QT_CHECK(image_open(&o, &im, err, sizeof(err)) == -EINVAL);
}

/* ---- shrinking ---- */

static void test_shrink(void)
{
    char img[4300], err[512];
    snprintf(img, sizeof(img), "%s/shrink.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 8M", img) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x11 0 1M' "
                 "-c 'write -P 0x12 5M 64k' '%s'", img))
        return;
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0)
        { QT_FAIL("open"); return; }
    /* Not forced: refused, nothing changed. */
    QT_CHECK(image_resize(im, 4 << 20, false, err, sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "refused") != NULL);
    QT_CHECK(im->size == 8 << 20);
    /* Forced over data (at 5M): refused, naming where. */
    QT_CHECK(image_resize(im, 4 << 20, true, err, sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "5242880") != NULL);
    QT_CHECK(im->size == 8 << 20);
    /* The new end inside the last data cluster: refused too. */
    QT_CHECK(image_resize(im, (5 << 20) + 4096, true, err, sizeof(err)) ==
             -EINVAL);
    /* Forced, nothing allocated past the new end: done, and said. */
    QT_CHECK(image_resize(im, 6 << 20, true, err, sizeof(err)) == 0);
    QT_CHECK(strstr(err, "shrunk") != NULL);
    QT_CHECK(im->size == 6 << 20);
    QT_CHECK(engine_reads(im, 5 << 20, 65536, 0x12));
    image_close(im);
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(info_virtual_size(img) == 6 << 20);
    QT_CHECK(qemu_reads(img, 5 << 20, 65536, 0x12));
}

/* ---- snapshots ---- */

static void test_snapshots(void)
{
    char img[4300], err[512];
    struct image *im;
    snprintf(img, sizeof(img), "%s/snap.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 1M",
                 img) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x21 0 64k' '%s'", img) ||
        !qt_must("qemu-img snapshot -c s1 '%s'", img))
        return;
    if (qt_open(img, false, NULL, &im) < 0)
        { QT_FAIL("open"); return; }
    QT_CHECK(image_resize(im, 1 << 30, false, err, sizeof(err)) == 0);
    QT_CHECK(image_resize(im, 512 << 20, true, err, sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "snapshots") != NULL);
    QT_CHECK(im->size == 1 << 30);
    image_close(im);
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(info_virtual_size(img) == 1 << 30);
    /* The snapshot is still whole: apply it, read it with QEMU. */
    QT_CHECK(qt_must("qemu-img snapshot -a s1 '%s'", img));
    QT_CHECK(qemu_reads(img, 0, 65536, 0x21));

    /* v2 with a snapshot: QEMU resizes none, nor do we. */
    snprintf(img, sizeof(img), "%s/snap-v2.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o compat=0.10 '%s' 1M", img) ||
        !qt_must("qemu-img snapshot -c s1 '%s'", img))
        return;
    if (qt_open(img, false, NULL, &im) < 0)
        { QT_FAIL("open v2"); return; }
    QT_CHECK(image_resize(im, 2 << 20, false, err, sizeof(err)) == -ENOTSUP);
    QT_CHECK(im->size == 1 << 20);
    image_close(im);
}

/* ---- a backing file longer than the overlay ---- */

static void test_backing_not_exposed(void)
{
    char base[4300], img[4300], err[512];
    snprintf(base, sizeof(base), "%s/base.raw", dir);
    snprintf(img, sizeof(img), "%s/overlay.qcow2", dir);
    /* The overlay is 1M + 512 (its last cluster partial) over a 4M base
     * full of 0x77: growing must not make the base show past 1M + 512. */
    if (!qt_must("qemu-img create -q -f raw '%s' 4M", base) ||
        !qt_must("qemu-io -f raw -c 'write -P 0x77 0 4M' '%s'", base) ||
        !qt_must("cd '%s' && qemu-img create -q -f qcow2 -b base.raw -F raw "
                 "-o cluster_size=65536 overlay.qcow2 1049088", dir))
        return;
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0)
        { QT_FAIL("open overlay"); return; }
    QT_CHECK(image_resize(im, 6 << 20, false, err, sizeof(err)) == 0);
    QT_CHECK(engine_reads(im, 0, 1049088, 0x77));
    QT_CHECK(engine_reads(im, 1049088, (6 << 20) - 1049088, 0));
    image_close(im);
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(qemu_reads(img, 1049088, (6 << 20) - 1049088, 0));
    QT_CHECK(qemu_reads(img, 0, 1049088, 0x77));
}

/* ---- a crash at every host operation of a grow ---- */

static int no_fallocate(int fd, int mode, off_t off, off_t len)
{
    /* A grow punches no holes; a discard of the old L1 would be advisory
     * (the clusters are free): not recorded, not needed. */
    (void)fd, (void)mode, (void)off, (void)len;
    errno = EOPNOTSUPP;
    return -1;
}

static struct {
    uint64_t old, new;
    unsigned images, bad;
} crash;

/* A crash image must check clean (leaks allowed), have the old size or the
 * new one, and read the data written before the grow. */
static void judge(const struct crash_file *f, const char *what)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/crash.qcow2", dir);
    crash.images++;
    if (!qt_write_file(path, f->b, f->size))
        { QT_FAIL("cannot write %s", path); return; }
    /* A dirty image (lazy refcounts) may have stale refcounts: that is
     * what the bit says; it is checked after our reopen rebuilt them. */
    bool dirty = f->size >= HDR_V3_MIN_LENGTH &&
                 (get_be64(f->b + HDR_INCOMPAT) & INCOMPAT_DIRTY);
    int st = dirty ? 0 : qt_run("qemu-img check -f qcow2 '%s'", path);
    int64_t vs = info_virtual_size(path);
    bool ok = (st == 0 || st == 3) &&
              (vs == (int64_t)crash.old || vs == (int64_t)crash.new);
    struct image *im = NULL;
    if (ok && qt_open(path, false, NULL, &im) < 0)
        ok = false;
    if (ok) {
        ok = engine_reads(im, 0, 65536, 0x3c) &&
             engine_reads(im, crash.old - 4096, 4096, 0x3d);
        if (ok && im->size == crash.new)
            ok = engine_reads(im, crash.old, 65536, 0);
        /* The engine carries on from it. */
        ok = ok && engine_writes(im, im->size - 4096, 4096, 0x3e);
        ok = image_close(im) == 0 && ok;
        st = qt_run("qemu-img check -f qcow2 '%s'", path);
        ok = ok && (st == 0 || st == 3);
    }
    if (!ok) {
        crash.bad++;
        if (crash.bad <= 3) {
            char keep[4400];
            snprintf(keep, sizeof(keep), "%s/crash-bad-%u.qcow2", dir,
                     crash.bad);
            qt_write_file(keep, f->b, f->size);
            QT_FAIL("grow crash image (%s): check %d, virtual size %" PRId64
                    " (kept as %s)", what, st, vs, keep);
        }
    }
}

/* At a sync point: the durable file plus none, all, each prefix, each
 * single pending op, and all but each one. */
static void crash_point(const struct crash_file *durable, const size_t *pend,
                        size_t npend)
{
    struct crash_file w = { 0 };
    char what[96];
    for (int mode = 0; mode < 4; mode++) {
        size_t reps = mode == 0 ? 1 : npend;
        for (size_t r = 0; r < reps; r++) {
            crash_file_resize(&w, durable->size);
            memcpy(w.b, durable->b, durable->size);
            for (size_t i = 0; i < npend; i++) {
                bool take = mode == 0 ? false
                          : mode == 1 ? i <= r      /* prefixes, up to all */
                          : mode == 2 ? i == r      /* one alone */
                                      : i != r;     /* all but one */
                if (take)
                    crash_apply(&w, &crash_ops[pend[i]]);
            }
            snprintf(what, sizeof(what), "%s %zu of %zu pending ops",
                     (const char *[]){ "none", "prefix", "only op",
                                       "all but op" }[mode], r, npend);
            judge(&w, what);
        }
    }
    free(w.b);
}

/* backing: over a 4M raw file of 0x77, which must never show past the
 * old end (1M), whatever the crash. */
static void crash_one(unsigned cluster, bool lazy, bool backing)
{
    char img[4300], err[512], back[64] = "";
    snprintf(img, sizeof(img), "%s/grow-crash.qcow2", dir);
    crash.old = 1 << 20;
    crash.new = cluster == 512 ? 64 << 20 : 8ull << 30;
    if (backing) {
        if (!qt_must("cd '%s' && qemu-img create -q -f raw base.raw 4M && "
                     "qemu-io -f raw -c 'write -P 0x77 0 4M' base.raw", dir))
            return;
        snprintf(back, sizeof(back), "-b base.raw -F raw");
    }
    if (!qt_must("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=%u%s "
                 "%s '%s' %" PRIu64, dir, cluster,
                 lazy ? ",lazy_refcounts=on" : "", back, img, crash.old) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x3c 0 64k' -c 'write -P "
                 "0x3d %" PRIu64 " 4k' '%s'", crash.old - 4096, img))
        return;
    struct crash_file durable = { 0 };
    durable.b = qt_read_file(img, &durable.size);
    struct image *im;
    if (!durable.b || qt_open(img, false, NULL, &im) < 0)
        { QT_FAIL("crash setup"); return; }
    crash_rec_start(file_host(im->file)->fd);
    host_sys.fallocate = no_fallocate; /* crash_rec_start hooked it */
    int ret = image_resize(im, crash.new, false, err, sizeof(err));
    crash_rec_stop();
    if (ret < 0)
        QT_FAIL("resize: %s", err);
    qcow2_simulate_crash(im);

    size_t *pend = malloc(sizeof(size_t) * (crash_nops + 1)), npend = 0;
    unsigned points = 0;
    for (size_t i = 0; i <= crash_nops; i++) {
        if (i == crash_nops || crash_ops[i].kind == CRASH_SYNC) {
            crash_point(&durable, pend, npend);
            points++;
            for (size_t j = 0; j < npend; j++)
                crash_apply(&durable, &crash_ops[pend[j]]);
            npend = 0;
        } else {
            pend[npend++] = i;
        }
    }
    /* Everything durable: the new size. */
    struct crash_file w = durable;
    judge(&w, "everything");
    char path[4300];
    snprintf(path, sizeof(path), "%s/crash.qcow2", dir);
    if (info_virtual_size(path) != (int64_t)crash.new)
        QT_FAIL("after every op of the grow the size is not the new one");
    printf("grow crash, %u-byte clusters%s%s: %zu host ops, %u sync "
           "points, %u crash images, %u bad\n", cluster, lazy ? ", lazy" : "",
           backing ? ", raw backing file" : "", crash_nops, points,
           crash.images, crash.bad);
    crash_rec_clear();
    crash.images = crash.bad = 0;
    free(pend);
    free(durable.b);
}

static void test_crash(void)
{
    struct host_syscalls saved = host_sys;
    /* The whole crash part runs on a host without fallocate. */
    host_sys.fallocate = no_fallocate;
    crash_one(512, false, false);
    crash_one(65536, false, false);
    crash_one(65536, true, false);
    crash_one(65536, false, true);
    host_sys = saved;
    free(crash_ops);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "resize");
    test_grow();
    test_qemu_resized_opens();
    test_shrink();
    test_snapshots();
    test_backing_not_exposed();
    test_crash();
    if (!qt_failed)
        qt_rmtree(dir);
    return qt_summary("test_resize");
}
