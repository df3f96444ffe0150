/* qlun — the protocol node "file" (see file.h): its open, and its
 * operations for callers that use it as an image (image_* calls). */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int file_node_readv(struct image *img, const struct iovec *iov,
                           int iovcnt, uint64_t off)
{
    return file_preadv(img, iov, iovcnt, off);
}

static int file_node_writev(struct image *img, const struct iovec *iov,
                            int iovcnt, uint64_t off, unsigned flags)
{
    int ret = file_pwritev(img, iov, iovcnt, off);
    if (ret == 0 && (flags & IMAGE_FUA))
        ret = file_flush(img);
    return ret;
}

static int file_node_zero(struct image *img, uint64_t off, uint64_t len,
                          unsigned flags)
{
    return file_zero(img, off, len, flags & IMAGE_MAY_UNMAP);
}

static int file_node_discard(struct image *img, uint64_t off, uint64_t len)
{
    int ret = file_discard(img, off, len);
    /* Discard is advisory: storage that cannot release space keeps it. */
    return ret == -ENOTSUP ? 0 : ret;
}

/* No flush: durability is the format's to decide (its close flushes). */
static int file_node_close(struct image *img)
{
    host_close(file_host(img));
    return 0;
}

static const struct image_ops file_ops = {
    .name = "file",
    .readv = file_node_readv,
    .writev = file_node_writev,
    .flush = file_flush,
    .zero = file_node_zero,
    .discard = file_node_discard,
    .block_status = file_block_status,
    .allocated_bytes = file_allocated_bytes,
    .close = file_node_close,
};

static int file_open(struct image *img, const struct image_open_opts *opts,
                     char *err, size_t errlen)
{
    struct host *h = &((struct file_node *)img)->host;
    unsigned flags = (opts->read_only ? HOST_READ_ONLY : 0) |
                     (opts->direct_io ? HOST_DIRECT : 0);
    int ret = host_open(h, opts->path, flags, err, errlen);
    if (ret < 0)
        return ret;
    int64_t size = host_size(h);
    if (size < 0) {
        snprintf(err, errlen, "cannot get the size of %s: %s", opts->path,
                 strerror((int)-size));
        host_close(h);
        return (int)size;
    }
    img->size = (uint64_t)size;
    img->info = (struct image_info){
        .format = "file",
        .request_alignment = h->logical_block_size,
        .mem_alignment = h->mem_align,
        .read_only = opts->read_only,
        .is_device = h->is_blockdev,
        .zeroes_past_eof = !h->is_blockdev,
        /* Files: holes.  Devices: the kernel's write-zeroes, where the
         * device has it (sysfs write_zeroes_max_bytes). */
        .can_zero = h->is_blockdev ? h->can_write_zeroes : h->can_punch_hole,
        .can_discard = h->is_blockdev ? h->can_discard : h->can_punch_hole,
        /* A punched hole reads as zeros.  What a device returns after
         * BLKDISCARD is not promised (Linux no longer reports it). */
        .discard_zeroes = !h->is_blockdev && h->can_punch_hole,
    };
    return 0;
}

const struct block_driver file_driver = {
    .name = "file",
    .instance_size = sizeof(struct file_node),
    .open = file_open,
    .ops = &file_ops,
    .is_protocol = true,
};
