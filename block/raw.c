/* qlun — the raw format: image byte N is byte N of its file child. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "file.h"
#include "image.h"

static int raw_readv(struct image *img, const struct iovec *iov, int iovcnt,
                     uint64_t off)
{
    return file_preadv(img->file, iov, iovcnt, off);
}

static int raw_writev(struct image *img, const struct iovec *iov, int iovcnt,
                      uint64_t off, unsigned flags)
{
    int ret = file_pwritev(img->file, iov, iovcnt, off);
    if (ret == 0 && (flags & IMAGE_FUA))
        ret = file_flush(img->file);
    return ret;
}

static int raw_flush(struct image *img)
{
    return file_flush(img->file);
}

static int raw_zero(struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
    return file_zero(img->file, off, len, flags & IMAGE_MAY_UNMAP);
}

static int raw_discard(struct image *img, uint64_t off, uint64_t len)
{
    int ret = file_discard(img->file, off, len);
    /* Discard is advisory: storage that cannot release space keeps it. */
    return ret == -ENOTSUP ? 0 : ret;
}

static int raw_block_status(struct image *img, uint64_t off, uint64_t len,
                            enum image_extent_kind *kind, uint64_t *extent_len)
{
    return file_block_status(img->file, off, len, kind, extent_len);
}

static int64_t raw_allocated_bytes(struct image *img)
{
    return file_allocated_bytes(img->file);
}

/* Resize.  A raw image's size is its host's: a file is truncated to the
 * new size; a block device is not changed, the image may only use up to
 * what it has now (it may have grown since open: lvextend, losetup -c).
 * A raw file has no notion of allocated data, so a forced shrink simply
 * drops what was past the new end, and says so. */
static int raw_resize(struct image *img, uint64_t new_size, bool force,
                      char *err, size_t errlen)
{
    uint64_t old = img->size;
    if (new_size < old && !force) {
        snprintf(err, errlen, "shrinking from %" PRIu64 " to %" PRIu64
                 " bytes refused: it drops the data past the new end "
                 "(force it if that is meant)", old, new_size);
        return -EINVAL;
    }
    if (img->file->info.is_device) {
        int64_t dev = file_length(img->file);
        if (dev < 0) {
            snprintf(err, errlen, "cannot get the device size: %s",
                     strerror((int)-dev));
            return (int)dev;
        }
        if (new_size > (uint64_t)dev) {
            snprintf(err, errlen, "the device holds %" PRId64 " bytes, fewer "
                     "than the %" PRIu64 " asked for; grow the device first",
                     dev, new_size);
            return -ENOSPC;
        }
    } else {
        int ret = file_truncate(img->file, new_size);
        if (ret == 0)
            ret = file_flush(img->file);
        if (ret < 0) {
            snprintf(err, errlen, "cannot change the file size to %" PRIu64
                     ": %s", new_size, strerror(-ret));
            return ret;
        }
    }
    if (new_size < old)
        snprintf(err, errlen, "shrunk from %" PRIu64 " to %" PRIu64 " bytes "
                 "(forced): the data past the new end is %s", old, new_size,
                 img->file->info.is_device ? "no longer served (still on the device)"
                                : "gone");
    img->size = new_size;
    return 0;
}

/* A clean close: what was written is durable (the file child closes
 * after, without flushing). */
static int raw_close(struct image *img)
{
    return file_flush(img->file);
}

static const struct image_ops raw_ops = {
    .name = "raw",
    .readv = raw_readv,
    .writev = raw_writev,
    .flush = raw_flush,
    .zero = raw_zero,
    .discard = raw_discard,
    .block_status = raw_block_status,
    .allocated_bytes = raw_allocated_bytes,
    .close = raw_close,
    .resize = raw_resize,
};

static int raw_open(struct image *img, const struct image_open_opts *opts,
                    char *err, size_t errlen)
{
    const struct image_info *fi = &img->file->info;
    int64_t size = file_length(img->file);
    if (size < 0) {
        snprintf(err, errlen, "cannot get the size of %s: %s", opts->path,
                 strerror((int)-size));
        return (int)size;
    }
    img->size = (uint64_t)size;
    /* What zeroing and discard do is the storage's: on devices, whose
     * discard need not read back zeros, scsi/ unmaps through zeroing. */
    img->info = (struct image_info){
        .format = "raw",
        .cluster_size = 0,
        .request_alignment = fi->request_alignment,
        .read_only = opts->read_only,
        .can_zero = fi->can_zero,
        .can_discard = fi->can_discard,
        .discard_zeroes = fi->discard_zeroes,
    };
    return 0;
}

/* Anything can be raw: the lowest score, chosen when nothing else is. */
static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)buf, (void)len, (void)filename;
    return 1;
}

const struct block_driver raw_driver = {
    .name = "raw",
    .instance_size = sizeof(struct image),
    .probe = raw_probe,
    .open = raw_open,
    .ops = &raw_ops,
};
