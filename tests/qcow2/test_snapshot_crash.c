/* qlun — crash simulation of snapshot create and delete.
 *
 * While the engine creates or deletes an internal snapshot, every host
 * write, fallocate, ftruncate and fdatasync it issues is recorded.  Then,
 * for a crash after each recorded operation, images are built from what
 * was durable at the last fdatasync plus {all, none, a random subset} of
 * the operations issued since (the page cache may write back any of them).
 * Each crash image must:
 *  - open read-write in the engine (a dirty one is rebuilt: refcounts from
 *    the tables, COPIED from the refcounts) and read back the active
 *    content unchanged (neither create nor delete changes it);
 *  - take a write, close, and then pass qemu-img check with no corruption
 *    (exit 0, or 3: leaked clusters only);
 *  - hold the snapshot either fully (qemu-img reads it as the content it
 *    was taken from) or not at all, and every other snapshot intact.
 *
 * "Can it fail?"  Dropping the dirty bit around the operation
 * (set_dirty in snapshot_ops.c a no-op), or the COPIED re-derivation
 * after a rebuild (refcount.c), makes qemu-img check report OFLAG_COPIED
 * errors here; writing the header before the new table is flushed makes
 * snapshots unreadable.
 */
#include "qcow2/qcow2-internal.h"
#include "crash_rec.h"

static char dir[4096];

/* ---- judging one crash image ---- */

/* What a crash image must show. */
struct expect {
    const uint8_t *active;   /* guest content of the image */
    uint64_t size;
    const char *snap;        /* created or deleted: present or absent */
    const uint8_t *snap_content;
    const char *other;       /* a snapshot that must stay intact, or NULL */
    const uint8_t *other_content;
};

static unsigned images, with_snap, without_snap, dirty_images;

static bool qemu_snapshot_is(const char *img, const char *sn,
                             const uint8_t *want, uint64_t size)
{
    char extra[300];
    size_t len = 0;
    snprintf(extra, sizeof(extra), "-l snapshot.name=%s", sn);
    uint8_t *got = qt_qemu_raw(img, dir, &len, extra);
    bool ok = got && len == size && qt_first_diff(got, want, size) < 0;
    free(got);
    return ok;
}

static bool qemu_has_snapshot(const char *img, const char *sn)
{
    char out[8192], pat[300];
    qt_run_out(out, sizeof(out), "qemu-img snapshot -l '%s'", img);
    snprintf(pat, sizeof(pat), " %s ", sn);
    return strstr(out, pat) != NULL;
}

static void judge(const struct crash_file *f, const char *what, void *ctx)
{
    const struct expect *x = ctx;
    char img[4200];
    snprintf(img, sizeof(img), "%s/crash.qcow2", dir);
    images++;
    if (!qt_write_file(img, f->b, f->size)) {
        QT_FAIL("cannot write %s", img);
        return;
    }
    if (f->size >= 80 && (get_be64(f->b + HDR_INCOMPAT) & INCOMPAT_DIRTY))
        dirty_images++;
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("%s: the engine cannot reopen the crash image", what);
        return;
    }
    uint8_t *buf = malloc(x->size);
    int ret = image_read(im, buf, x->size, 0);
    if (ret < 0 || qt_first_diff(buf, x->active, x->size) >= 0)
        QT_FAIL("%s: active content changed (read %d)", what, ret);
    /* Carry on: a write into the first cluster (shared or not). */
    memcpy(buf, x->active, x->size);
    memset(buf + 1000, 0xee, 3000);
    ret = image_write(im, buf + 1000, 3000, 1000, 0);
    int cret = image_close(im);
    if (ret < 0 || cret < 0)
        QT_FAIL("%s: write after reopen %d, close %d", what, ret, cret);
    /* Leaks are allowed after a crash: only an error is shown. */
    char out[16384];
    int st = qt_run_out(out, sizeof(out), "qemu-img check -f qcow2 '%s'",
                        img);
    if (st != 0 && st != 3)
        QT_FAIL("%s: qemu-img check exit %d:\n%s", what, st, out);
    if (qemu_has_snapshot(img, x->snap)) {
        with_snap++;
        if (!qemu_snapshot_is(img, x->snap, x->snap_content, x->size))
            QT_FAIL("%s: snapshot %s present but its content is wrong", what,
                    x->snap);
    } else {
        without_snap++;
    }
    if (x->other && !qemu_snapshot_is(img, x->other, x->other_content,
                                      x->size))
        QT_FAIL("%s: snapshot %s damaged", what, x->other);
    size_t len = 0;
    uint8_t *act = qt_qemu_raw(img, dir, &len, NULL);
    if (!act || len != x->size || qt_first_diff(act, buf, x->size) >= 0)
        QT_FAIL("%s: active content (qemu-img) wrong after the write", what);
    free(act);
    free(buf);
}

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed + i * 13 + (i >> 9));
}

/* One scenario: an image with data, a snapshot "old" made by qemu-img
 * and writes after it; then record `create new` (create) or `delete old`
 * (!create) and replay every crash. */
static void scenario(const char *opts, bool compressed, bool create)
{
    const uint64_t size = 2u << 20;
    char img[4200], raw[4200];
    snprintf(img, sizeof(img), "%s/base.qcow2", dir);
    snprintf(raw, sizeof(raw), "%s/base.raw", dir);
    uint8_t *old = calloc(1, size), *now = NULL;
    fill(old, size / 2, 0x31);
    qt_write_file(raw, old, size);
    qt_must("qemu-img convert %s -f raw -O qcow2 -o %s '%s' '%s'",
            compressed ? "-c" : "", opts, raw, img);
    qt_must("qemu-img snapshot -c old '%s'", img);
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open");
        free(old);
        return;
    }
    now = malloc(size);
    memcpy(now, old, size);
    fill(now + 4096, 70000, 0x41);           /* COW of shared clusters */
    fill(now + size / 2 + 512, 9000, 0x42);  /* new clusters */
    QT_CHECK(image_write(im, now + 4096, 70000, 4096, 0) == 0);
    QT_CHECK(image_write(im, now + size / 2 + 512, 9000, size / 2 + 512,
                         0) == 0);
    QT_CHECK(image_flush(im) == 0);

    size_t blen;
    struct crash_file base = { 0 };
    base.b = qt_read_file(img, &blen);
    base.size = blen;
    crash_rec_start(file_host(im->file)->fd);
    char err[256];
    int ret = create ? image_snapshot_create(im, "new", err, sizeof(err))
                     : image_snapshot_delete(im, "old", err, sizeof(err));
    crash_rec_stop();
    QT_CHECK(ret == 0);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);

    struct expect x = {
        .active = now, .size = size,
        .snap = create ? "new" : "old",
        .snap_content = create ? now : old,
        .other = create ? "old" : NULL, .other_content = old,
    };
    struct qt_rng rng;
    qt_rng_seed(&rng, qt_seed());
    unsigned before = images;
    crash_replay(&base, &rng, judge, &x);
    printf("%s %s%s: %zu host ops, %u crash images\n",
           create ? "create" : "delete", opts, compressed ? " compressed" : "",
           crash_nops, images - before);
    free(base.b);
    free(old);
    free(now);
    unlink(raw);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "test_snapshot_crash");
    scenario("cluster_size=65536", false, true);
    scenario("cluster_size=65536", false, false);
    scenario("cluster_size=4096", true, true);
    scenario("cluster_size=4096", true, false);
    scenario("cluster_size=65536,lazy_refcounts=on", false, true);
    printf("crash images: %u (%u dirty), snapshot present in %u, absent in "
           "%u\n", images, dirty_images, with_snap, without_snap);
    /* Both outcomes must have been seen, or the test proves little. */
    QT_CHECK(with_snap > 0 && without_snap > 0);
    crash_rec_clear();
    free(crash_ops);
    qt_rmtree(dir);
    return qt_summary("test_snapshot_crash");
}
