/* qlun — the raw format: image byte N is host byte N. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "image.h"

struct raw_image {
    struct image img; /* first: struct image * casts to struct raw_image * */
    struct host host;
};

static struct host *raw_host(struct image *img)
{
    return &((struct raw_image *)img)->host;
}

static int raw_readv(struct image *img, const struct iovec *iov, int iovcnt,
                     uint64_t off)
{
    return host_preadv(raw_host(img), iov, iovcnt, off);
}

static int raw_writev(struct image *img, const struct iovec *iov, int iovcnt,
                      uint64_t off, unsigned flags)
{
    int ret = host_pwritev(raw_host(img), iov, iovcnt, off);
    if (ret == 0 && (flags & IMAGE_FUA))
        ret = host_flush(raw_host(img));
    return ret;
}

static int raw_flush(struct image *img)
{
    return host_flush(raw_host(img));
}

static int raw_zero(struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
    return host_zero(raw_host(img), off, len, flags & IMAGE_MAY_UNMAP);
}

static int raw_discard(struct image *img, uint64_t off, uint64_t len)
{
    int ret = host_discard(raw_host(img), off, len);
    /* Discard is advisory: storage that cannot release space keeps it. */
    return ret == -ENOTSUP ? 0 : ret;
}

static int raw_block_status(struct image *img, uint64_t off, uint64_t len,
                            enum image_extent_kind *kind, uint64_t *extent_len)
{
    return host_block_status(raw_host(img), off, len, kind, extent_len);
}

static int64_t raw_allocated_bytes(struct image *img)
{
    return host_allocated_bytes(raw_host(img));
}

/* Resize.  A raw image's size is its host's: a file is truncated to the
 * new size; a block device is not changed, the image may only use up to
 * what it has now (it may have grown since open: lvextend, losetup -c).
 * A raw file has no notion of allocated data, so a forced shrink simply
 * drops what was past the new end, and says so. */
static int raw_resize(struct image *img, uint64_t new_size, bool force,
                      char *err, size_t errlen)
{
    struct host *h = raw_host(img);
    uint64_t old = img->size;
    if (new_size < old && !force) {
        snprintf(err, errlen, "shrinking from %" PRIu64 " to %" PRIu64
                 " bytes refused: it drops the data past the new end "
                 "(force it if that is meant)", old, new_size);
        return -EINVAL;
    }
    if (h->is_blockdev) {
        int64_t dev = host_size(h);
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
        int ret = host_truncate(h, new_size);
        if (ret == 0)
            ret = host_flush(h);
        if (ret < 0) {
            snprintf(err, errlen, "cannot change the file size to %" PRIu64
                     ": %s", new_size, strerror(-ret));
            return ret;
        }
    }
    if (new_size < old)
        snprintf(err, errlen, "shrunk from %" PRIu64 " to %" PRIu64 " bytes "
                 "(forced): the data past the new end is %s", old, new_size,
                 h->is_blockdev ? "no longer served (still on the device)"
                                : "gone");
    img->size = new_size;
    return 0;
}

static int raw_close(struct image *img)
{
    struct raw_image *r = (struct raw_image *)img;
    int ret = host_flush(&r->host);
    host_close(&r->host);
    free(r);
    return ret;
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

int raw_open(const struct image_open_opts *opts, struct image **out,
             char *err, size_t errlen)
{
    struct raw_image *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    unsigned flags = (opts->read_only ? HOST_READ_ONLY : 0) |
                     (opts->direct_io ? HOST_DIRECT : 0);
    int ret = host_open(&r->host, opts->path, flags, err, errlen);
    if (ret < 0) {
        free(r);
        return ret;
    }
    int64_t size = host_size(&r->host);
    if (size < 0) {
        snprintf(err, errlen, "cannot get the size of %s: %s", opts->path,
                 strerror((int)-size));
        host_close(&r->host);
        free(r);
        return (int)size;
    }
    r->img.ops = &raw_ops;
    r->img.size = (uint64_t)size;
    r->img.info = (struct image_info){
        .format = "raw",
        .cluster_size = 0,
        .request_alignment = r->host.logical_block_size,
        .read_only = opts->read_only,
        /* Files: holes.  Devices: the kernel's write-zeroes, where the
         * device has it (sysfs write_zeroes_max_bytes). */
        .can_zero = r->host.is_blockdev ? r->host.can_write_zeroes
                                        : r->host.can_punch_hole,
        .can_discard = r->host.is_blockdev ? r->host.can_discard
                                           : r->host.can_punch_hole,
        /* A punched hole reads as zeros.  What a device returns after
         * BLKDISCARD is not promised (Linux no longer reports it), so on
         * devices scsi/ unmaps through zeroing instead. */
        .discard_zeroes = !r->host.is_blockdev && r->host.can_punch_hole,
    };
    *out = &r->img;
    return 0;
}
