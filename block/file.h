/* qlun — the protocol node "file": host storage (a regular file or a
 * block device, block/host.h) as a node of the graph.
 *
 * Every format node has one, its `file` child, opened by image_open()
 * before the format's own open; formats do all their host I/O through it
 * with the file_* calls below and learn what the storage is from its info
 * (request_alignment, mem_alignment, is_device, zeroes_past_eof, can_zero,
 * can_discard, discard_zeroes), never from struct host.  Unlike the
 * image_* calls, file_* calls are in host bytes with no range check: a
 * format grows its file by writing past the end.
 *
 * The calls are inline: a format's request costs what host_* cost.
 */
#ifndef QLUN_BLOCK_FILE_H
#define QLUN_BLOCK_FILE_H

#include <assert.h>
#include <stdatomic.h>

#include "driver.h"
#include "host.h"
#include "image.h"

extern const struct block_driver file_driver;

struct file_node {
    struct image img; /* first: struct image * casts to struct file_node * */
    struct host host;
};

/* The host storage of protocol node f (for block/ and tests: the crash
 * simulation reads its fd). */
static inline struct host *file_host(struct image *f)
{
    assert(f->drv == &file_driver);
    return &((struct file_node *)f)->host;
}

static inline int file_pread(struct image *f, void *buf, size_t len,
                             uint64_t off)
{
    return host_pread(file_host(f), buf, len, off);
}

static inline int file_preadv(struct image *f, const struct iovec *iov,
                              int iovcnt, uint64_t off)
{
    return host_preadv(file_host(f), iov, iovcnt, off);
}

static inline int file_pwrite(struct image *f, const void *buf, size_t len,
                              uint64_t off)
{
    return host_pwrite(file_host(f), buf, len, off);
}

static inline int file_pwritev(struct image *f, const struct iovec *iov,
                               int iovcnt, uint64_t off)
{
    return host_pwritev(file_host(f), iov, iovcnt, off);
}

/* Durable: see host_flush (flush generations, a failure latched). */
static inline int file_flush(struct image *f)
{
    return host_flush(file_host(f));
}

/* -ENOTSUP when the storage cannot zero without writing data. */
static inline int file_zero(struct image *f, uint64_t off, uint64_t len,
                            bool may_unmap)
{
    return host_zero(file_host(f), off, len, may_unmap);
}

static inline int file_discard(struct image *f, uint64_t off, uint64_t len)
{
    return host_discard(file_host(f), off, len);
}

static inline int file_block_status(struct image *f, uint64_t off,
                                    uint64_t len, enum image_extent_kind *kind,
                                    uint64_t *extent_len)
{
    return host_block_status(file_host(f), off, len, kind, extent_len);
}

/* The current length (a file grows; info says nothing about it). */
static inline int64_t file_length(struct image *f)
{
    return host_size(file_host(f));
}

/* Set a regular file's length (-ENOTSUP on devices). */
static inline int file_truncate(struct image *f, uint64_t size)
{
    return host_truncate(file_host(f), size);
}

/* Blocks for [off, off+len) without data (host_preallocate). */
static inline int file_preallocate(struct image *f, uint64_t off,
                                   uint64_t len, bool keep_size)
{
    return host_preallocate(file_host(f), off, len, keep_size);
}

static inline int64_t file_allocated_bytes(struct image *f)
{
    return host_allocated_bytes(file_host(f));
}

/* State, not a property: whether zeroing a range of a regular file is
 * still believed cheap (FALLOC_FL_ZERO_RANGE; cleared for good the first
 * time the filesystem refuses it). */
static inline bool file_zero_range_works(struct image *f)
{
    return atomic_load(&file_host(f)->can_zero_range);
}

#endif
