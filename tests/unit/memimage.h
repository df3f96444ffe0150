/* A struct image in memory, for driving scsi/ without files.  Fails the
 * next operations with fail_errno when it is set. */
#ifndef QLUN_TESTS_MEMIMAGE_H
#define QLUN_TESTS_MEMIMAGE_H

#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "common/iov.h"

#define MEM_UNIT 512        /* allocation tracking granularity */

struct memimage {
    struct image img;
    uint8_t *data;
    uint8_t *kind;          /* per MEM_UNIT: enum image_extent_kind */
    int fail_errno;         /* 0, or the negative errno to return */
    int flushes, zeroes, zeroes_unmap, discards;
    /* Changes (writes, zeroes, discards) not yet made durable: neither
     * written with IMAGE_FUA nor followed by a flush.  0 = all durable. */
    int unflushed;
    uint64_t data_bytes_written;
};

static void mem_mark(struct memimage *m, uint64_t off, uint64_t len, int kind)
{
    for (uint64_t u = off / MEM_UNIT; u < (off + len + MEM_UNIT - 1) / MEM_UNIT; u++)
        m->kind[u] = (uint8_t)kind;
}

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
    mem_mark(m, off, iov_size(iov, cnt), IMAGE_EXTENT_DATA);
    m->data_bytes_written += iov_size(iov, cnt);
    if (!(flags & IMAGE_FUA))
        m->unflushed++;
    return 0;
}

static int mem_flush(struct image *img)
{
    struct memimage *m = (struct memimage *)img;
    m->flushes++;
    if (!m->fail_errno)
        m->unflushed = 0;
    return m->fail_errno;
}

static int mem_zero(struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
    struct memimage *m = (struct memimage *)img;
    if (m->fail_errno)
        return m->fail_errno;
    memset(m->data + off, 0, len);
    m->unflushed++;
    if (flags & IMAGE_MAY_UNMAP) {
        m->zeroes_unmap++;
        mem_mark(m, off, len, IMAGE_EXTENT_UNALLOCATED);
    } else {
        m->zeroes++;
        mem_mark(m, off, len, IMAGE_EXTENT_ZERO);
    }
    return 0;
}

static int mem_discard(struct image *img, uint64_t off, uint64_t len)
{
    struct memimage *m = (struct memimage *)img;
    if (m->fail_errno)
        return m->fail_errno;
    m->discards++;
    m->unflushed++;
    memset(m->data + off, 0, len);
    mem_mark(m, off, len, IMAGE_EXTENT_UNALLOCATED);
    return 0;
}

static int mem_block_status(struct image *img, uint64_t off, uint64_t len,
                            enum image_extent_kind *kind, uint64_t *ext)
{
    struct memimage *m = (struct memimage *)img;
    uint64_t u = off / MEM_UNIT;
    *kind = (enum image_extent_kind)m->kind[u];
    uint64_t end = off + len, pos = (u + 1) * MEM_UNIT;
    while (pos < end && m->kind[pos / MEM_UNIT] == *kind)
        pos += MEM_UNIT;
    *ext = (pos < end ? pos : end) - off;
    return 0;
}

static int64_t mem_allocated_bytes(struct image *img)
{
    struct memimage *m = (struct memimage *)img;
    int64_t n = 0;
    for (uint64_t u = 0; u < m->img.size / MEM_UNIT; u++)
        n += m->kind[u] == IMAGE_EXTENT_DATA ? MEM_UNIT : 0;
    return n;
}

static int mem_close(struct image *img)
{
    struct memimage *m = (struct memimage *)img;
    free(m->kind);
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

/* The same, able to zero and discard without writing: a thin image. */
static const struct image_ops mem_thin_ops = {
    .name = "mem",
    .readv = mem_readv,
    .writev = mem_writev,
    .flush = mem_flush,
    .zero = mem_zero,
    .discard = mem_discard,
    .block_status = mem_block_status,
    .allocated_bytes = mem_allocated_bytes,
    .close = mem_close,
};

static inline struct memimage *memimage_new(uint64_t size)
{
    struct memimage *m = calloc(1, sizeof(*m));
    m->data = calloc(1, size);
    m->kind = calloc(1, size / MEM_UNIT + 1);
    memset(m->kind, IMAGE_EXTENT_UNALLOCATED, size / MEM_UNIT + 1);
    m->img.ops = &mem_ops;
    m->img.size = size;
    m->img.info = (struct image_info){ .format = "mem",
                                       .request_alignment = 1 };
    return m;
}

static inline struct memimage *memimage_new_thin(uint64_t size, uint32_t cluster)
{
    struct memimage *m = memimage_new(size);
    m->img.ops = &mem_thin_ops;
    m->img.info.cluster_size = cluster;
    m->img.info.can_zero = true;
    m->img.info.can_discard = true;
    m->img.info.discard_zeroes = true;
    return m;
}

#endif
