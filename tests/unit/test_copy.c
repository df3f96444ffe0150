/* Unit tests: image_copy_range (block/copy.c).
 * On chains made by qemu-img, 3 deep (base raw or qcow2 <- mid <- top),
 * with data in every layer, zero clusters over a lower layer's data,
 * data that is all zeros, and unallocated holes:
 *  - a copy of top's whole view into a new qcow2 (COPY_DST_READS_ZERO)
 *    and into a raw file full of garbage (COPY_DST_ANY) reads the same as
 *    top (qemu-img compare);
 *  - zeros are never written as data: a counting filter over dst sees
 *    exactly the bytes of non-zero data written; the raw file's allocated
 *    bytes are no more than that data (holes elsewhere); the qcow2 copy's
 *    map has no data where top reads zeros;
 *  - a copy above a base leaves what only the base holds alone;
 *  - an error from dst (a failing filter) is returned.
 * Needs qemu-img (exit 77 = skipped without).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/copy.h"
#include "block/driver.h"
#include "block/image.h"
#include "tests/qcow2/qtest.h"

#define KiB 1024ull
#define MiB (1024 * KiB)
#define SIZE (4 * MiB)

static char dir[4096];

/* A filter that counts the bytes written through it and can fail
 * writes and zeroes with fail_errno. */
struct count_filter {
    struct image img;
    _Atomic uint64_t written, zeroed;
    int fail_errno;
};

static int count_writev(struct image *img, const struct iovec *iov,
                        int iovcnt, uint64_t off, unsigned flags)
{
    struct count_filter *f = (struct count_filter *)img;
    if (f->fail_errno)
        return -f->fail_errno;
    for (int i = 0; i < iovcnt; i++)
        atomic_fetch_add(&f->written, iov[i].iov_len);
    return image_writev(img->file, iov, iovcnt, off, flags);
}

static int count_zero(struct image *img, uint64_t off, uint64_t len,
                      unsigned flags)
{
    struct count_filter *f = (struct count_filter *)img;
    if (f->fail_errno)
        return -f->fail_errno;
    atomic_fetch_add(&f->zeroed, len);
    return image_zero(img->file, off, len, flags);
}

static const struct image_ops count_ops = {
    .name = "count",
    .writev = count_writev,
    .zero = count_zero,
};

static const struct block_driver count_driver = {
    .name = "count",
    .instance_size = sizeof(struct count_filter),
    .ops = &count_ops,
    .is_filter = true,
};

/* base (fmt) <- mid <- top in dir/<name>/.  Non-zero data that top's
 * view holds: base 1 MiB at 0 less the 256 KiB mid zeroes, mid 512 KiB at
 * 1 MiB less the 128 KiB top zeroes, top 256 KiB at 2 MiB; top's 64 KiB
 * of zero-filled data at 3 MiB is not; 3.5 MiB.. is allocated nowhere. */
#define TOP_NONZERO_DATA ((768 + 384 + 256) * KiB)
static void make_chain(const char *name, const char *base_fmt)
{
    qt_must("cd '%s' && mkdir %s && cd %s && "
            "qemu-img create -q -f %s base 4M && "
            "qemu-io -f %s -c 'write -P 0x11 0 1M' base && "
            "qemu-img create -q -f qcow2 -b base -F %s mid.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 0x22 1M 512k' "
            "-c 'write -z 0 256k' mid.qcow2 && "
            "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 0x33 2M 256k' "
            "-c 'write -z 1M 128k' -c 'write -P 0 3M 64k' top.qcow2",
            dir, name, name, base_fmt, base_fmt, base_fmt);
}

static struct image *open_rw(const char *path, const char *fmt, bool ro)
{
    struct image_open_opts o = { .path = path, .format = fmt,
                                 .read_only = ro, .backing_root = dir };
    struct image *img = NULL;
    char err[512];
    if (image_open(&o, &img, err, sizeof(err)) < 0)
        QT_FAIL("open %s: %s", path, err);
    return img;
}

static void *bounce(size_t n)
{
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, n) != 0)
        abort();
    return buf;
}

/* Copy all of top's view into dst (through a counting filter). */
static int copy_all(struct image *top, struct image **dst,
                    enum copy_zero_mode mode, uint64_t *copied,
                    struct count_filter **cf)
{
    char err[256];
    if (image_insert_filter(dst, &count_driver, err, sizeof(err)) < 0) {
        QT_FAIL("insert filter: %s", err);
        return -EIO;
    }
    *cf = (struct count_filter *)*dst;
    void *buf = bounce(256 * KiB);
    int ret = image_copy_range(top, NULL, *dst, 0, SIZE, mode, buf,
                               256 * KiB, copied);
    free(buf);
    return ret;
}

/* The bytes `qemu-img map` says hold data in path's own layer. */
static uint64_t map_data_bytes(const char *path, const char *fmt)
{
    char out[256];
    if (qt_run_out(out, sizeof(out), "qemu-img map -f %s --output=json '%s' "
                   "| jq '[.[] | select(.data and .depth == 0) | .length] "
                   "| add // 0'", fmt, path) != 0)
        return UINT64_MAX;
    return strtoull(out, NULL, 10);
}

/* A copy into a new qcow2 image reads the same and has data only where
 * top has non-zero data. */
static void into_new_qcow2(const char *name)
{
    char top_path[4200], dst_path[4200];
    snprintf(top_path, sizeof(top_path), "%s/%s/top.qcow2", dir, name);
    snprintf(dst_path, sizeof(dst_path), "%s/%s/copy.qcow2", dir, name);
    qt_must("qemu-img create -q -f qcow2 '%s' 4M", dst_path);
    struct image *top = open_rw(top_path, "qcow2", true);
    struct image *dst = open_rw(dst_path, "qcow2", false);
    if (!top || !dst)
        return;
    uint64_t copied = 0;
    struct count_filter *cf;
    QT_CHECK(copy_all(top, &dst, COPY_DST_READS_ZERO, &copied, &cf) == 0);
    QT_CHECK(copied == TOP_NONZERO_DATA);
    QT_CHECK(atomic_load(&cf->written) == TOP_NONZERO_DATA);
    QT_CHECK(image_flush(dst) == 0);
    image_close(top);
    QT_CHECK(image_close(dst) == 0);
    QT_CHECK(qt_check(dst_path) == 0);
    QT_CHECK(qt_run("qemu-img compare -q '%s' '%s'", top_path, dst_path) == 0);
    /* Data (allocated) bytes of the copy: exactly the non-zero data. */
    QT_CHECK(map_data_bytes(dst_path, "qcow2") == TOP_NONZERO_DATA);
}

/* A copy into a raw file full of garbage (COPY_DST_ANY) reads the same;
 * the zeros are holes, never written. */
static void into_dirty_raw(const char *name)
{
    char top_path[4200], dst_path[4200];
    snprintf(top_path, sizeof(top_path), "%s/%s/top.qcow2", dir, name);
    snprintf(dst_path, sizeof(dst_path), "%s/%s/copy.raw", dir, name);
    qt_must("qemu-img create -q -f raw '%s' 4M && "
            "qemu-io -f raw -c 'write -P 0xee 0 4M' '%s'", dst_path, dst_path);
    struct image *top = open_rw(top_path, "qcow2", true);
    struct image *dst = open_rw(dst_path, "raw", false);
    if (!top || !dst)
        return;
    if (!dst->info.can_zero) {
        printf("note: %s cannot punch holes; raw checks skipped\n", dir);
        image_close(top);
        image_close(dst);
        return;
    }
    uint64_t copied = 0;
    struct count_filter *cf;
    QT_CHECK(copy_all(top, &dst, COPY_DST_ANY, &copied, &cf) == 0);
    QT_CHECK(copied == TOP_NONZERO_DATA);
    QT_CHECK(atomic_load(&cf->written) == TOP_NONZERO_DATA);
    /* Everything else read as zeros and was zeroed without data. */
    QT_CHECK(atomic_load(&cf->zeroed) == SIZE - TOP_NONZERO_DATA);
    QT_CHECK(image_flush(dst) == 0);
    image_close(top);
    QT_CHECK(image_close(dst) == 0);
    QT_CHECK(qt_run("qemu-img compare -q -f qcow2 -F raw '%s' '%s'",
                    top_path, dst_path) == 0);
    /* The holes: qemu-img sees data only where top has non-zero data;
     * the file system may add a few blocks of its own (extent tree). */
    QT_CHECK(map_data_bytes(dst_path, "raw") == TOP_NONZERO_DATA);
    struct stat st;
    QT_CHECK(stat(dst_path, &st) == 0 &&
             (uint64_t)st.st_blocks * 512 <= TOP_NONZERO_DATA + 64 * KiB);
}

/* Above a base: only what mid and top hold goes into dst (a copy onto a
 * new image whose backing file is base reads the same as top). */
static void above_base(const char *name, const char *base_fmt)
{
    char top_path[4200], dst_path[4200];
    snprintf(top_path, sizeof(top_path), "%s/%s/top.qcow2", dir, name);
    snprintf(dst_path, sizeof(dst_path), "%s/%s/onbase.qcow2", dir, name);
    qt_must("cd '%s/%s' && qemu-img create -q -f qcow2 -b base -F %s "
            "onbase.qcow2", dir, name, base_fmt);
    struct image *top = open_rw(top_path, "qcow2", true);
    struct image *dst = open_rw(dst_path, "qcow2", false);
    if (!top || !dst)
        return;
    struct image *base = image_backing_child(image_backing_child(top));
    void *buf = bounce(64 * KiB);
    uint64_t copied = 0;
    QT_CHECK(image_copy_range(top, base, dst, 0, SIZE, COPY_DST_READS_ZERO,
                              buf, 64 * KiB, &copied) == 0);
    /* mid's and top's data (mid's 512 KiB less top's zeroes, top's 256
     * KiB; top's zero-filled 64 KiB is zeroed, not written). */
    QT_CHECK(copied == (384 + 256) * KiB);
    free(buf);
    image_close(top);
    QT_CHECK(image_close(dst) == 0);
    QT_CHECK(qt_check(dst_path) == 0);
    QT_CHECK(qt_run("qemu-img compare -q '%s' '%s'", top_path, dst_path) == 0);
}

/* An error from dst stops the copy and is returned. */
static void dst_error(const char *name)
{
    char top_path[4200], dst_path[4200];
    snprintf(top_path, sizeof(top_path), "%s/%s/top.qcow2", dir, name);
    snprintf(dst_path, sizeof(dst_path), "%s/%s/fail.qcow2", dir, name);
    qt_must("qemu-img create -q -f qcow2 '%s' 4M", dst_path);
    struct image *top = open_rw(top_path, "qcow2", true);
    struct image *dst = open_rw(dst_path, "qcow2", false);
    if (!top || !dst)
        return;
    char err[256];
    QT_CHECK(image_insert_filter(&dst, &count_driver, err, sizeof(err)) == 0);
    ((struct count_filter *)dst)->fail_errno = ENOSPC;
    void *buf = bounce(64 * KiB);
    uint64_t copied = 1;
    QT_CHECK(image_copy_range(top, NULL, dst, 0, SIZE, COPY_DST_ANY, buf,
                              64 * KiB, &copied) == -ENOSPC);
    QT_CHECK(copied == 0);
    free(buf);
    image_close(top);
    image_close(dst);
}

int main(void)
{
    qt_require_qemu();
    if (qt_run("command -v jq") != 0) {
        printf("SKIP: jq not installed\n");
        return SKIP_CODE;
    }
    qt_mkdtemp(dir, sizeof(dir), "qlun-test-copy");
    const char *fmts[] = { "raw", "qcow2" };
    for (int i = 0; i < 2; i++) {
        char name[32];
        snprintf(name, sizeof(name), "chain-%s", fmts[i]);
        make_chain(name, fmts[i]);
        into_new_qcow2(name);
        into_dirty_raw(name);
        above_base(name, fmts[i]);
        dst_error(name);
    }
    qt_rmtree(dir);
    return qt_summary("test_copy");
}
