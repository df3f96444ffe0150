/* A struct image in memory, for driving scsi/ without files.  Fails the
 * next operations with fail_errno when it is set. */
#ifndef QLUN_TESTS_MEMIMAGE_H
#define QLUN_TESTS_MEMIMAGE_H

#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "common/iov.h"

struct memimage {
    struct image img;
    uint8_t *data;
    int fail_errno;         /* 0, or the negative errno to return */
    int flushes, fua_writes, zeroes, discards;
};

static int mem_readv(struct image *img, const struct iovec *iov, int cnt,
                     uint64_t off)
{
    struct memimage *m = (struct memimage *)img;
    if (m->fail_errno)
        return m->fail_errno;
    iov_from_buf(iov, cnt, 0, m->data + off, iov_size(iov, cnt));
    return 0;
}

static int mem_writev(struct image *img, const struct iovec *iov, int cnt,
                      uint64_t off, unsigned flags)
{
    struct memimage *m = (struct memimage *)img;
    if (m->fail_errno)
        return m->fail_errno;
    iov_to_buf(iov, cnt, 0, m->data + off, iov_size(iov, cnt));
    if (flags & IMAGE_FUA)
        m->fua_writes++;
    return 0;
}

static int mem_flush(struct image *img)
{
    struct memimage *m = (struct memimage *)img;
    m->flushes++;
    return m->fail_errno;
}

static int mem_close(struct image *img)
{
    struct memimage *m = (struct memimage *)img;
    free(m->data);
    free(m);
    return 0;
}

static const struct image_ops mem_ops = {
    .name = "mem",
    .readv = mem_readv,
    .writev = mem_writev,
    .flush = mem_flush,
    .close = mem_close,
};

static struct memimage *memimage_new(uint64_t size)
{
    struct memimage *m = calloc(1, sizeof(*m));
    m->data = calloc(1, size);
    m->img.ops = &mem_ops;
    m->img.size = size;
    m->img.info = (struct image_info){ .format = "mem",
                                       .request_alignment = 1 };
    return m;
}

#endif
