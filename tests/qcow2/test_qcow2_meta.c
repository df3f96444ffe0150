/* qlun — qcow2 metadata maintenance: refcount table growth, lazy
 * refcounts and crash recovery.
 *
 *  growth:  512-byte clusters with wide refcounts make the refcount table
 *           and its blocks grow several times; qemu-img check must stay
 *           clean and the content right.
 *  lazy:    with lazy_refcounts the engine sets the dirty bit and does not
 *           write refcounts at flush; after a simulated crash the on-disk
 *           refcounts are stale (qemu-img check must complain — this shows
 *           the test can fail), reopening read-write rebuilds them (also
 *           counting an internal snapshot) and qemu-img check is clean.
 *  stale:   free clusters past the end of the file hold junk (as clusters
 *           freed where punching holes failed would); partial writes that
 *           allocate such a cluster must still read zeros around the data
 *           (the engine zeroes new clusters with fallocate instead of
 *           writing zeros).
 *  crash:   without lazy refcounts, a crash right after flush leaves a
 *           clean image; a crash without flush may leak (exit 3) but never
 *           corrupts (exit 2).
 */
#include "qcow2/qcow2-internal.h"
#include "qtest.h"

static uint8_t *model;

static void write_some(struct image *img, struct qt_rng *r, uint64_t size,
                       unsigned n, uint64_t maxlen)
{
    uint8_t *buf = malloc(maxlen);
    for (unsigned i = 0; i < n; i++) {
        uint64_t off = qt_below(r, size - 1);
        uint64_t len = 1 + qt_below(r, maxlen);
        if (len > size - off)
            len = size - off;
        for (uint64_t j = 0; j < len; j++)
            buf[j] = (uint8_t)(i + j / 512 + 1);
        bool write = qt_below(r, 5) != 0;
        int ret = write ? image_write(img, buf, len, off, 0)
                        : image_zero(img, off, len, IMAGE_MAY_UNMAP);
        if (ret < 0)
            QT_FAIL("write %" PRIu64 "+%" PRIu64 ": %s", off, len,
                    strerror(-ret));
        if (write)
            memcpy(model + off, buf, len);
        else
            memset(model + off, 0, len);
    }
    free(buf);
}

/* The qemu-img check must equal want; and qemu-img must see the model. */
static void judge(const char *name, const char *dir, const char *img,
                  uint64_t size, int want)
{
    int st = qt_check(img);
    if (st != want)
        QT_FAIL("%s: qemu-img check exit %d, want %d", name, st, want);
    size_t n;
    uint8_t *got = qt_qemu_raw(img, dir, &n, NULL);
    if (!got || n != size || qt_first_diff(got, model, size) >= 0)
        QT_FAIL("%s: content differs from the model", name);
    free(got);
}

static uint64_t header_u64(const char *img, unsigned off)
{
    uint8_t b[8] = { 0 };
    FILE *f = fopen(img, "rb");
    if (f) {
        fseek(f, off, SEEK_SET);
        if (fread(b, 1, 8, f) != 8)
            memset(b, 0, 8);
        fclose(f);
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static void growth(const char *opts, uint64_t size)
{
    char dir[4096], img_path[4200], name[128];
    struct qt_rng r;
    struct image *img;
    snprintf(name, sizeof(name), "growth %s", opts);
    qt_rng_seed(&r, qt_seed());
    qt_mkdtemp(dir, sizeof(dir), "growth");
    snprintf(img_path, sizeof(img_path), "%s/g.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts, img_path,
            size);
    uint64_t rt_before = header_u64(img_path, HDR_REFTABLE_OFFSET);
    model = calloc(1, size);
    if (qt_open(img_path, false, NULL, &img) < 0) {
        QT_FAIL("%s: open", name);
        return;
    }
    /* Fill everything (sequential, so the host grows steadily), then
     * random rewrites. */
    uint8_t *buf = malloc(1 << 20);
    for (uint64_t off = 0; off < size; off += 1 << 20) {
        memset(buf, (int)(off >> 20) + 1, 1 << 20);
        QT_CHECK(image_write(img, buf, 1 << 20, off, 0) == 0);
        memcpy(model + off, buf, 1 << 20);
    }
    free(buf);
    /* The first table was given back when it grew; the fill went on after
     * that, lowest free cluster first, so it must have reused the table's
     * first cluster. */
    struct qcow2 *q = to_qcow2(img);
    uint64_t rc = 0;
    pthread_mutex_lock(&q->lock);
    int ret = qcow2_get_refcount(q, rt_before >> q->cluster_bits, &rc);
    pthread_mutex_unlock(&q->lock);
    if (ret < 0 || rc != 1)
        QT_FAIL("%s: the old refcount table's cluster 0x%" PRIx64 " was not "
                "reused (refcount %" PRIu64 ")", name, rt_before, rc);
    /* Every refcount block and L2 table made while serving is metadata to
     * the overlap check (which looks only at the used part of the
     * refcount table: that part must have grown with it). */
    uint64_t blocks = 0;
    pthread_mutex_lock(&q->lock);
    for (uint64_t i = 0; i < q->reftable_entries; i++) {
        uint64_t b = q->reftable[i] & REFT_OFFSET_MASK;
        if (!b)
            continue;
        blocks++;
        if (!qcow2_metadata_at(q, b, q->cluster_size))
            QT_FAIL("%s: refcount block %" PRIu64 " at 0x%" PRIx64 " is not "
                    "seen by the overlap check", name, i, b);
    }
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t t = q->l1[i] & L1E_OFFSET_MASK;
        if (t && !qcow2_metadata_at(q, t, q->cluster_size))
            QT_FAIL("%s: L2 table %u at 0x%" PRIx64 " is not seen by the "
                    "overlap check", name, i, t);
    }
    pthread_mutex_unlock(&q->lock);
    if (blocks < 2)
        QT_FAIL("%s: only %" PRIu64 " refcount block(s): no new block tested",
                name, blocks);
    write_some(img, &r, size, 500, 20000);
    qt_compare_image(img, model, name);
    QT_CHECK(image_close(img) == 0);
    uint64_t rt_after = header_u64(img_path, HDR_REFTABLE_OFFSET);
    if (rt_after == rt_before)
        QT_FAIL("%s: the refcount table did not move (no growth tested)",
                name);
    judge(name, dir, img_path, size, 0);
    printf("%-40s reftable 0x%" PRIx64 " -> 0x%" PRIx64 " (%" PRIu64
           " clusters): %s\n", name, rt_before, rt_after,
           header_u64(img_path, HDR_REFTABLE_OFFSET + 8) >> 32,
           qt_failed ? "FAIL" : "ok");
    free(model);
    if (!qt_failed)
        qt_rmtree(dir);
}

static void stale(const char *opts)
{
    const uint64_t size = 8 << 20, junk = 4 << 20;
    char dir[4096], img_path[4200], name[160];
    struct image *img;
    int failed_before = qt_failed;
    snprintf(name, sizeof(name), "stale %s", opts);
    qt_mkdtemp(dir, sizeof(dir), "stale");
    snprintf(img_path, sizeof(img_path), "%s/s.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts, img_path,
            size);
    /* Junk where the next clusters will be allocated: refcount 0. */
    FILE *f = fopen(img_path, "ab");
    uint8_t *j = malloc(junk);
    memset(j, 0xee, junk);
    QT_CHECK(f && fwrite(j, 1, junk, f) == junk);
    if (f)
        fclose(f);
    free(j);
    model = calloc(1, size);
    if (qt_open(img_path, false, NULL, &img) < 0) {
        QT_FAIL("%s: open", name);
        return;
    }
    static const struct { uint64_t off, len; } w[] = {
        { 65536 + 8192, 4096 },    /* aligned, inside a cluster */
        { (1 << 20) + 100, 1000 }, /* unaligned, inside a subcluster */
        { (2 << 20) - 512, 1024 }, /* across two clusters */
        { 3 << 20, 65536 },        /* a whole cluster */
        { (5 << 20) + 4096, 2048 },
    };
    uint8_t buf[65536];
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        memset(buf, (int)(0x10 + i), w[i].len);
        QT_CHECK(image_write(img, buf, w[i].len, w[i].off, 0) == 0);
        memcpy(model + w[i].off, buf, w[i].len);
    }
    qt_compare_image(img, model, name);
    QT_CHECK(image_close(img) == 0);
    judge(name, dir, img_path, size, 0);
    printf("%-40s %s\n", name, qt_failed == failed_before ? "ok" : "FAIL");
    free(model);
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

static void crash(const char *opts, bool lazy, bool flush_first,
                  bool snapshot)
{
    const uint64_t size = 8 << 20;
    char dir[4096], img_path[4200], name[160];
    struct qt_rng r;
    struct image *img;
    int failed_before = qt_failed;
    snprintf(name, sizeof(name), "crash %s%s%s", opts,
             flush_first ? " after flush" : " without flush",
             snapshot ? " with snapshot" : "");
    qt_rng_seed(&r, qt_seed() + 7);
    qt_mkdtemp(dir, sizeof(dir), "crash");
    snprintf(img_path, sizeof(img_path), "%s/c.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts, img_path,
            size);
    qt_must("qemu-io -f qcow2 -c 'write -P 0x33 0 1M' -c 'write -c -P 0x44 "
            "2M 256k' '%s'", img_path);
    if (snapshot)
        qt_must("qemu-img snapshot -c s1 '%s'", img_path);
    size_t n;
    model = qt_qemu_raw(img_path, dir, &n, NULL);
    uint8_t *snap = snapshot ? qt_qemu_raw(img_path, dir, &n,
                                           "-l snapshot.name=s1") : NULL;

    if (qt_open(img_path, false, NULL, &img) < 0) {
        QT_FAIL("%s: open", name);
        return;
    }
    write_some(img, &r, size, 300, 100000);
    if (flush_first)
        QT_CHECK(image_flush(img) == 0);
    qcow2_simulate_crash(img);

    uint64_t incompat = header_u64(img_path, HDR_INCOMPAT);
    if (lazy) {
        QT_CHECK(incompat & INCOMPAT_DIRTY);
        /* Flushed L2 tables name clusters whose refcounts were never
         * written: qemu-img must notice. */
        int st = qt_run("qemu-img check -f qcow2 '%s'", img_path);
        if (flush_first && st == 0)
            QT_FAIL("%s: qemu-img check found nothing wrong before the "
                    "rebuild; the lazy test proves nothing", name);
        /* A read-only open of a dirty image works (no rebuild). */
        if (qt_open(img_path, true, NULL, &img) == 0) {
            if (flush_first)
                qt_compare_image(img, model, name);
            image_close(img);
        } else {
            QT_FAIL("%s: read-only open of a dirty image", name);
        }
        /* Read-write open rebuilds. */
        if (qt_open(img_path, false, NULL, &img) < 0) {
            QT_FAIL("%s: reopen (rebuild)", name);
        } else {
            QT_CHECK(!(header_u64(img_path, HDR_INCOMPAT) & INCOMPAT_DIRTY));
            if (flush_first)
                qt_compare_image(img, model, name);
            write_some(img, &r, size, 50, 100000);
            if (!flush_first) {
                /* What survived is unknown; take qemu's word for it. */
                free(model);
                QT_CHECK(image_close(img) == 0);
                model = qt_qemu_raw(img_path, dir, &n, NULL);
                img = NULL;
            }
            if (img)
                QT_CHECK(image_close(img) == 0);
            judge(name, dir, img_path, size, 0);
        }
    } else {
        QT_CHECK(!(incompat & INCOMPAT_DIRTY));
        int st = qt_check(img_path);
        if (flush_first ? st != 0 : (st != 0 && st != 3))
            QT_FAIL("%s: qemu-img check exit %d after a crash", name, st);
        if (flush_first)
            judge(name, dir, img_path, size, 0);
    }
    if (snap) {
        uint8_t *s = qt_qemu_raw(img_path, dir, &n, "-l snapshot.name=s1");
        if (!s || n != size || memcmp(s, snap, size) != 0)
            QT_FAIL("%s: snapshot changed", name);
        free(s);
    }
    printf("%-40s %s\n", name, qt_failed == failed_before ? "ok" : "FAIL");
    free(model);
    free(snap);
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

int main(void)
{
    qt_require_qemu();
    printf("seed %" PRIu64 " (set QLUN_SEED to change)\n", qt_seed());
    growth("cluster_size=512,refcount_bits=64", 24 << 20);
    growth("cluster_size=512,refcount_bits=16", 24 << 20);
    growth("cluster_size=1k,refcount_bits=64", 40 << 20);
    stale("cluster_size=64k");
    stale("cluster_size=64k,extended_l2=on");
    stale("cluster_size=4k,compat=0.10");
    crash("lazy_refcounts=on", true, true, false);
    crash("lazy_refcounts=on", true, false, false);
    crash("lazy_refcounts=on", true, true, true);
    crash("lazy_refcounts=on,cluster_size=4k,extended_l2=off", true, true,
          true);
    crash("lazy_refcounts=on,extended_l2=on", true, true, false);
    crash("cluster_size=64k", false, true, false);
    crash("cluster_size=4k", false, false, false);
    crash("compat=0.10", false, true, true);
    return qt_summary("qcow2 meta");
}
