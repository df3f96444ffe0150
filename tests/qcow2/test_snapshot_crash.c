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
#include <assert.h>
#include <linux/falloc.h>

#include "block/host.h"
#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "common/iov.h"
#include "qtest.h"

enum op_kind { OP_WRITE, OP_FALLOC, OP_TRUNC, OP_SYNC };

struct op {
    enum op_kind kind;
    int mode;
    uint64_t off, len;
    uint8_t *data;
};

static struct op *ops;
static size_t nops, ops_cap;
static bool recording;
static char dir[4096];

static void push_op(struct op o)
{
    if (nops == ops_cap) {
        ops_cap = ops_cap ? ops_cap * 2 : 256;
        ops = realloc(ops, ops_cap * sizeof(*ops));
        assert(ops);
    }
    ops[nops++] = o;
}

static void clear_ops(void)
{
    for (size_t i = 0; i < nops; i++)
        free(ops[i].data);
    nops = 0;
}

static ssize_t rec_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    ssize_t n = pwritev(fd, iov, cnt, off);
    if (n > 0 && recording) {
        uint8_t *d = malloc((size_t)n);
        assert(d);
        iov_to_buf(iov, cnt, 0, d, (size_t)n);
        push_op((struct op){ .kind = OP_WRITE, .off = (uint64_t)off,
                             .len = (uint64_t)n, .data = d });
    }
    return n;
}

static int rec_fallocate(int fd, int mode, off_t off, off_t len)
{
    int r = fallocate(fd, mode, off, len);
    if (r == 0 && recording)
        push_op((struct op){ .kind = OP_FALLOC, .mode = mode,
                             .off = (uint64_t)off, .len = (uint64_t)len });
    return r;
}

static int rec_ftruncate(int fd, off_t len)
{
    int r = ftruncate(fd, len);
    if (r == 0 && recording)
        push_op((struct op){ .kind = OP_TRUNC, .len = (uint64_t)len });
    return r;
}

static int rec_fdatasync(int fd)
{
    if (recording)
        push_op((struct op){ .kind = OP_SYNC });
    return fdatasync(fd);
}

/* ---- a file in memory ---- */

struct file {
    uint8_t *b;
    size_t size;
};

static void file_resize(struct file *f, size_t size)
{
    f->b = realloc(f->b, size ? size : 1);
    assert(f->b);
    if (size > f->size)
        memset(f->b + f->size, 0, size - f->size);
    f->size = size;
}

static void apply_op(struct file *f, const struct op *o)
{
    switch (o->kind) {
    case OP_WRITE:
        if (o->off + o->len > f->size)
            file_resize(f, o->off + o->len);
        memcpy(f->b + o->off, o->data, o->len);
        break;
    case OP_FALLOC: {
        uint64_t end = o->off + o->len;
        if (!(o->mode & FALLOC_FL_KEEP_SIZE) && end > f->size)
            file_resize(f, end);
        if (o->mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
            uint64_t e = MIN(end, (uint64_t)f->size);
            if (o->off < e)
                memset(f->b + o->off, 0, e - o->off);
        }
        break;
    }
    case OP_TRUNC:
        file_resize(f, o->len);
        break;
    case OP_SYNC:
        break;
    }
}

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

static void judge(const struct file *f, const struct expect *x,
                  const char *what)
{
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

/* Crash after each recorded op: durable-at-last-sync plus all, none, or
 * a random subset of the ops since. */
static void replay(const struct file *base, const struct expect *x,
                   struct qt_rng *rng)
{
    struct file durable = { 0 }, work = { 0 };
    file_resize(&durable, base->size);
    memcpy(durable.b, base->b, base->size);
    size_t since = 0; /* first op after the last sync */
    for (size_t k = 0; k <= nops; k++) {
        char what[128];
        for (int mode = 0; mode < 3; mode++) {
            if (mode == 1 && since == k)
                continue; /* nothing pending: same as "all" */
            file_resize(&work, durable.size);
            memcpy(work.b, durable.b, durable.size);
            for (size_t i = since; i < k; i++)
                if (mode == 0 || (mode == 2 && qt_below(rng, 2)))
                    apply_op(&work, &ops[i]);
            snprintf(what, sizeof(what), "crash after op %zu/%zu (%s)", k,
                     nops, mode == 0 ? "all pending" : mode == 1 ? "none"
                                                              : "subset");
            judge(&work, x, what);
        }
        if (k < nops && ops[k].kind == OP_SYNC) {
            for (size_t i = since; i <= k; i++)
                apply_op(&durable, &ops[i]);
            since = k + 1;
        }
    }
    free(durable.b);
    free(work.b);
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
    struct file base = { 0 };
    base.b = qt_read_file(img, &blen);
    base.size = blen;
    clear_ops();
    recording = true;
    char err[256];
    int ret = create ? image_snapshot_create(im, "new", err, sizeof(err))
                     : image_snapshot_delete(im, "old", err, sizeof(err));
    recording = false;
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
    replay(&base, &x, &rng);
    printf("%s %s%s: %zu host ops, %u crash images\n",
           create ? "create" : "delete", opts, compressed ? " compressed" : "",
           nops, images - before);
    free(base.b);
    free(old);
    free(now);
    unlink(raw);
}

int main(void)
{
    qt_require_qemu();
    host_sys.pwritev = rec_pwritev;
    host_sys.fallocate = rec_fallocate;
    host_sys.ftruncate = rec_ftruncate;
    host_sys.fdatasync = rec_fdatasync;
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
    clear_ops();
    free(ops);
    qt_rmtree(dir);
    return qt_summary("test_snapshot_crash");
}
