/* qlun — the image interface: open by format name, range checks, and the
 * fallbacks for optional driver operations. */
#include "image.h"

#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/iov.h"
#include "../common/util.h"

int image_open(const struct image_open_opts *opts, struct image **out,
               char *err, size_t errlen)
{
    assert(opts && opts->path && opts->format && out);
    *out = NULL;
    /* The format is what the user said, never what the content suggests:
     * guessing lets a guest that writes a qcow2 header into a raw LUN make
     * the host open arbitrary backing files. */
    if (strcmp(opts->format, "raw") == 0)
        return raw_open(opts, out, err, errlen);
    if (strcmp(opts->format, "qcow2") == 0)
        return qcow2_open(opts, out, err, errlen);
    snprintf(err, errlen, "unknown image format '%s' (expected raw or qcow2)",
             opts->format);
    return -EINVAL;
}

static void assert_range(const struct image *img, uint64_t off, uint64_t len)
{
    assert(off <= img->size && len <= img->size - off);
    (void)img, (void)off, (void)len;
}

unsigned image_state(const struct image *img)
{
    return atomic_load(&img->state);
}

void image_set_state(struct image *img, unsigned bits)
{
    atomic_fetch_or(&img->state, bits);
}

/* Every modification: refused on a read-only or write-protected image. */
static int check_writable(const struct image *img)
{
    if (img->info.read_only || (image_state(img) & IMAGE_STATE_CORRUPT))
        return -EROFS;
    return 0;
}

int image_readv(struct image *img, const struct iovec *iov, int iovcnt,
                uint64_t off)
{
    assert_range(img, off, iov_size(iov, iovcnt));
    return img->ops->readv(img, iov, iovcnt, off);
}

int image_writev(struct image *img, const struct iovec *iov, int iovcnt,
                 uint64_t off, unsigned flags)
{
    assert((flags & ~IMAGE_FUA) == 0);
    assert_range(img, off, iov_size(iov, iovcnt));
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    return img->ops->writev(img, iov, iovcnt, off, flags);
}

int image_read(struct image *img, void *buf, size_t len, uint64_t off)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    return image_readv(img, &iov, 1, off);
}

int image_write(struct image *img, const void *buf, size_t len, uint64_t off,
                unsigned flags)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return image_writev(img, &iov, 1, off, flags);
}

int image_flush(struct image *img)
{
    if (img->info.read_only)
        return 0;
    if (image_state(img) & IMAGE_STATE_WRITES_LOST)
        return -EIO;
    return img->ops->flush(img);
}

/* Zero by writing a shared zero buffer, in chunks. */
static int zero_by_writing(struct image *img, uint64_t off, uint64_t len)
{
    enum { CHUNK = 1 << 20 };
    static const uint8_t zeros[CHUNK];
    while (len > 0) {
        size_t n = (size_t)MIN(len, (uint64_t)CHUNK);
        int ret = img->ops->writev(img,
            &(struct iovec){ .iov_base = (void *)zeros, .iov_len = n }, 1,
            off, 0);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

int image_zero(struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
    assert((flags & ~(IMAGE_MAY_UNMAP | IMAGE_NO_FALLBACK)) == 0);
    assert_range(img, off, len);
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    if (img->ops->zero) {
        ret = img->ops->zero(img, off, len, flags);
        if (ret != -ENOTSUP)
            return ret;
    }
    if (flags & IMAGE_NO_FALLBACK)
        return -ENOTSUP;
    return zero_by_writing(img, off, len);
}

int image_discard(struct image *img, uint64_t off, uint64_t len)
{
    assert_range(img, off, len);
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (len == 0 || !img->ops->discard)
        return 0;
    return img->ops->discard(img, off, len);
}

int image_block_status(struct image *img, uint64_t off, uint64_t len,
                       enum image_extent_kind *kind, uint64_t *extent_len)
{
    assert(len > 0);
    assert_range(img, off, len);
    if (!img->ops->block_status) {
        *kind = IMAGE_EXTENT_DATA;
        *extent_len = len;
        return 0;
    }
    int ret = img->ops->block_status(img, off, len, kind, extent_len);
    assert(ret < 0 || (*extent_len > 0 && *extent_len <= len));
    return ret;
}

int64_t image_allocated_bytes(struct image *img)
{
    if (!img->ops->allocated_bytes)
        return -ENOTSUP;
    return img->ops->allocated_bytes(img);
}

int image_close(struct image *img)
{
    if (!img)
        return 0;
    return img->ops->close(img);
}

/* ---- internal snapshots ---- */

/* The one message for a format without internal snapshots (raw). */
static int no_snapshots(const struct image *img, char *err, size_t errlen)
{
    snprintf(err, errlen, "the %s format has no internal snapshots",
             img->info.format);
    return -ENOTSUP;
}

/* A name from the caller, fit for a one-line message. */
static const char *printable(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; in[i] && i + 1 < outlen; i++)
        out[i] = in[i] >= 0x20 && in[i] <= 0x7e ? in[i] : '?';
    out[i] = 0;
    return out;
}

/* Why a driver's snapshot operation failed, in words for its errno. */
static void snapshot_error(char *err, size_t errlen, const char *what,
                           const char *name, int ret)
{
    char pn[64];
    const char *why;
    switch (ret) {
    case -EEXIST: why = "a snapshot with that name exists"; break;
    case -ENOENT: why = "no snapshot has that id or name"; break;
    case -EINVAL: why = "invalid name (empty, or too long)"; break;
    case -EOVERFLOW:
        why = "a cluster would be referenced more often than the image's "
              "refcount width allows (refcount_bits too small)";
        break;
    case -EROFS: why = "the image is read-only or write-protected"; break;
    case -EFBIG: why = "the snapshot table would grow too large"; break;
    case -ENOTSUP:
        why = "not supported for this image (qcow2: needs version 3, "
              "compat=1.1)";
        break;
    default: why = strerror(-ret); break;
    }
    snprintf(err, errlen, "snapshot %s '%s': %s", what,
             printable(name, pn, sizeof(pn)), why);
}

int image_snapshot_create(struct image *img, const char *name,
                          char *err, size_t errlen)
{
    if (!img->ops->snapshot_create)
        return no_snapshots(img, err, errlen);
    int ret = check_writable(img);
    if (ret == 0)
        ret = img->ops->snapshot_create(img, name);
    if (ret < 0)
        snapshot_error(err, errlen, "create", name, ret);
    return ret;
}

int image_snapshot_delete(struct image *img, const char *name_or_id,
                          char *err, size_t errlen)
{
    if (!img->ops->snapshot_delete)
        return no_snapshots(img, err, errlen);
    int ret = check_writable(img);
    if (ret == 0)
        ret = img->ops->snapshot_delete(img, name_or_id);
    if (ret < 0)
        snapshot_error(err, errlen, "delete", name_or_id, ret);
    return ret;
}

int image_snapshot_list(struct image *img, struct image_snapshot_info **out,
                        size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (!img->ops->snapshot_list)
        return no_snapshots(img, err, errlen);
    int ret = img->ops->snapshot_list(img, out, n);
    if (ret < 0)
        snprintf(err, errlen, "snapshot list: %s", strerror(-ret));
    return ret;
}
