/* qlun — regression tests for three ways acknowledged data was lost.
 *
 *  sticky_flush_raw, sticky_flush_qcow2:
 *           fdatasync fails once (injected through host_sys).  Linux has
 *           then dropped the dirty pages: the next fdatasync would succeed
 *           without the data on disk.  Every later flush and write must
 *           fail until the image is reopened — including when the failure
 *           struck a flush qcow2 made on its own inside a WRITE (L2 table
 *           eviction with 512-byte clusters).
 *  corrupt: an allocating write is acknowledged, then a READ meets a
 *           corrupt L2 entry and the image is marked corrupt.  A flush must
 *           not answer success while the acknowledged write is not durable;
 *           writes fail; the state is explicit (image_state) and info does
 *           not change.
 *  bitmap_rebuild:
 *           a dirty (lazy refcounts) image with a persistent bitmap, opened
 *           read-write (refcount rebuild) and closed without a write, must
 *           pass qemu-img check.
 */
#include <assert.h>

#include "block/host.h"
#include "qcow2/qcow2-internal.h"
#include "qtest.h"

/* ---- fdatasync fault injection ---- */

static int fail_next_fdatasync; /* fail this many of the next calls */
static int fdatasync_calls;

static int failing_fdatasync(int fd)
{
    fdatasync_calls++;
    if (fail_next_fdatasync > 0) {
        fail_next_fdatasync--;
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static struct image *open_fmt(const char *path, const char *fmt)
{
    char err[1024] = "";
    struct image_open_opts o = { .path = path, .format = fmt };
    struct image *img = NULL;
    int ret = image_open(&o, &img, err, sizeof(err));
    if (ret < 0)
        QT_FAIL("open %s: %s", path, err);
    return img;
}

static void sticky_flush_raw(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/sticky.raw", dir);
    if (!qt_must("truncate -s 1M '%s'", path))
        return;
    struct image *img = open_fmt(path, "raw");
    if (!img)
        return;
    uint8_t buf[4096];
    memset(buf, 0xab, sizeof(buf));
    QT_CHECK(image_write(img, buf, sizeof(buf), 0, 0) == 0);
    fail_next_fdatasync = 1;
    QT_CHECK(image_flush(img) == -EIO);
    /* The pages are clean now; a second fdatasync would say 0. */
    QT_CHECK(image_flush(img) < 0);
    QT_CHECK(image_write(img, buf, sizeof(buf), 4096, 0) < 0);
    QT_CHECK(image_write(img, buf, sizeof(buf), 4096, IMAGE_FUA) < 0);
    QT_CHECK(image_zero(img, 0, 4096, 0) < 0);
    QT_CHECK(image_read(img, buf, sizeof(buf), 0) == 0); /* reads go on */
    image_close(img);
    /* Reopened: a new start. */
    img = open_fmt(path, "raw");
    if (!img)
        return;
    QT_CHECK(image_write(img, buf, sizeof(buf), 4096, 0) == 0);
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(image_close(img) == 0);
}

static void sticky_flush_qcow2(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/sticky.qcow2", dir);
    /* 512-byte clusters: 64 entries per L2 table and an 8-table cache, so
     * scattered writes evict dirty tables, and each eviction flushes. */
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=512 '%s' 8M",
                 path))
        return;
    struct image *img = open_fmt(path, "qcow2");
    if (!img)
        return;
    uint8_t buf[512];
    memset(buf, 0x5a, sizeof(buf));
    /* Acknowledged, then flushed: durable. */
    QT_CHECK(image_write(img, buf, sizeof(buf), 0, 0) == 0);
    QT_CHECK(image_flush(img) == 0);

    fdatasync_calls = 0;
    fail_next_fdatasync = 1;
    int failed_at = -1;
    for (int i = 1; i < 200 && failed_at < 0; i++) {
        /* One cluster in each L2 table's range: a new table each time. */
        int ret = image_write(img, buf, sizeof(buf), (uint64_t)i * 32768, 0);
        if (ret < 0)
            failed_at = i;
    }
    QT_CHECK(fdatasync_calls > 0);
    if (failed_at < 0) {
        QT_FAIL("no write met the injected fdatasync failure");
    } else {
        /* The failure landed on a WRITE; the SYNCHRONIZE CACHE after it
         * must not say the earlier writes are durable. */
        QT_CHECK(image_flush(img) < 0);
        QT_CHECK(image_flush(img) < 0);
        QT_CHECK(image_write(img, buf, sizeof(buf), 0, 0) < 0);
    }
    image_close(img);
    /* After reopening, the image is usable and consistent (leaks at most). */
    int st = qt_check(path);
    QT_CHECK(st == 0 || st == 3);
    img = open_fmt(path, "qcow2");
    if (!img)
        return;
    uint8_t got[512];
    QT_CHECK(image_read(img, got, sizeof(got), 0) == 0 &&
             memcmp(got, buf, sizeof(got)) == 0);
    QT_CHECK(image_write(img, buf, sizeof(buf), 512, 0) == 0);
    QT_CHECK(image_close(img) == 0);
    st = qt_check(path);
    QT_CHECK(st == 0 || st == 3);
}

/* ---- corruption found at run time ---- */

static uint64_t be64_at(const char *path, uint64_t off)
{
    uint8_t b[8];
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, (long)off, SEEK_SET) != 0 || fread(b, 1, 8, f) != 8) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static bool put_be64_at(const char *path, uint64_t off, uint64_t v)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
    FILE *f = fopen(path, "r+b");
    if (!f)
        return false;
    bool ok = fseek(f, (long)off, SEEK_SET) == 0 && fwrite(b, 1, 8, f) == 8;
    return fclose(f) == 0 && ok;
}

/* A 64 MiB image (64 KiB clusters) with data at 1 MiB whose L2 entry has
 * a reserved bit set: reading it marks the image corrupt. */
static bool make_damaged(const char *path)
{
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 64M", path) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x11 1M 64k' '%s'", path))
        return false;
    uint64_t l1 = be64_at(path, 40);
    uint64_t l2 = be64_at(path, l1) & L1E_OFFSET_MASK;
    uint64_t slot = l2 + 8 * (1 << 4); /* guest cluster 16 = 1 MiB */
    uint64_t e = be64_at(path, slot);
    if (!l2 || !(e & L2E_OFFSET_MASK)) {
        QT_FAIL("could not find the L2 entry to damage");
        return false;
    }
    return put_be64_at(path, slot, e | (1ull << 1)); /* reserved bit */
}

static void corrupt_case(const char *dir, bool write_first)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/corrupt-%d.qcow2", dir, write_first);
    if (!make_damaged(path))
        return;
    struct image *img = open_fmt(path, "qcow2");
    if (!img)
        return;
    uint8_t buf[65536], got[65536];
    memset(buf, 0xab, sizeof(buf));
    if (write_first) /* allocating, acknowledged, not yet flushed */
        QT_CHECK(image_write(img, buf, 4096, 2 << 20, 0) == 0);
    else
        QT_CHECK(image_flush(img) == 0);
    QT_CHECK(image_state(img) == 0);
    QT_CHECK(image_read(img, got, sizeof(got), 1 << 20) == -EUCLEAN);
    QT_CHECK(image_state(img) & IMAGE_STATE_CORRUPT);
    QT_CHECK(!img->info.read_only); /* info is fixed at open */
    if (write_first) {
        /* The write's L2 entry is only in the cache and will not be
         * written: no flush may claim it is durable. */
        QT_CHECK(image_state(img) & IMAGE_STATE_WRITES_LOST);
        QT_CHECK(image_flush(img) < 0);
        QT_CHECK(image_flush(img) < 0);
    } else {
        /* Nothing acknowledged is pending: the flush is honest. */
        QT_CHECK(!(image_state(img) & IMAGE_STATE_WRITES_LOST));
        QT_CHECK(image_flush(img) == 0);
    }
    QT_CHECK(image_write(img, buf, 512, 4 << 20, 0) == -EROFS);
    QT_CHECK(image_zero(img, 4 << 20, 65536, 0) == -EROFS);
    QT_CHECK(image_discard(img, 4 << 20, 65536) == -EROFS);
    /* Intact parts still read. */
    QT_CHECK(image_read(img, got, 512, 0) == 0);
    image_close(img);
    /* The corrupt bit is on disk: read-write open refused, as QEMU does. */
    char err[1024];
    struct image_open_opts o = { .path = path, .format = "qcow2" };
    struct image *again = NULL;
    QT_CHECK(image_open(&o, &again, err, sizeof(err)) == -EUCLEAN);
    image_close(again);
}

/* ---- refcount rebuild and persistent bitmaps ---- */

static void bitmap_rebuild(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/bitmap.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 16M",
                 path) ||
        !qt_must("qemu-io -f qcow2 -c 'write -P 0x22 0 1M' '%s'", path) ||
        !qt_must("qemu-img bitmap --add '%s' b0", path))
        return;
    QT_CHECK(be64_at(path, HDR_AUTOCLEAR) & 1); /* bitmaps extension valid */
    /* As after a crash with lazy refcounts: the dirty bit set. */
    uint64_t incompat = be64_at(path, HDR_INCOMPAT);
    if (!put_be64_at(path, HDR_INCOMPAT, incompat | INCOMPAT_DIRTY))
        return;
    struct image *img = open_fmt(path, "qcow2"); /* rebuilds refcounts */
    if (!img)
        return;
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(!(be64_at(path, HDR_INCOMPAT) & INCOMPAT_DIRTY));
    QT_CHECK(qt_check(path) == 0);
    size_t n;
    uint8_t *raw = qt_qemu_raw(path, dir, &n, NULL);
    QT_CHECK(raw && n == 16 << 20 && raw[0] == 0x22 && raw[(1 << 20) - 1] == 0x22
             && raw[1 << 20] == 0);
    free(raw);
}

int main(void)
{
    qt_require_qemu();
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "data-loss");
    host_sys.fdatasync = failing_fdatasync;

    sticky_flush_raw(dir);
    sticky_flush_qcow2(dir);
    corrupt_case(dir, true);
    corrupt_case(dir, false);
    bitmap_rebuild(dir);

    qt_rmtree(dir);
    return qt_summary("test_data_loss");
}
