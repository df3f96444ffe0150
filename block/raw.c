/* qlun — the raw format: image byte N is host byte N. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
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

static int raw_close(struct image *img)
{
    struct raw_image *r = (struct raw_image *)img;
    int ret = host_flush(&r->host);
    host_close(&r->host);
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
};

static int raw_open(struct image *img, const struct image_open_opts *opts,
                    char *err, size_t errlen)
{
    struct raw_image *r = (struct raw_image *)img;
    unsigned flags = (opts->read_only ? HOST_READ_ONLY : 0) |
                     (opts->direct_io ? HOST_DIRECT : 0);
    int ret = host_open(&r->host, opts->path, flags, err, errlen);
    if (ret < 0)
        return ret;
    int64_t size = host_size(&r->host);
    if (size < 0) {
        snprintf(err, errlen, "cannot get the size of %s: %s", opts->path,
                 strerror((int)-size));
        host_close(&r->host);
        return (int)size;
    }
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
    .instance_size = sizeof(struct raw_image),
    .probe = raw_probe,
    .open = raw_open,
    .ops = &raw_ops,
};
