/* qlun — host storage: the bottom of the stack.
 *
 * A struct host is one open file or block device.  Format drivers (raw,
 * qcow2) do all their I/O through it, so the knowledge of pread loops,
 * fallocate modes, block-device ioctls and durability lives in one place.
 *
 * Every function returns 0 (or a byte count where stated) on success and a
 * negative errno on failure.  All functions are safe to call concurrently on
 * the same struct host (they use positional I/O only); host_open/host_close
 * are not.
 */
#ifndef QLUN_BLOCK_HOST_H
#define QLUN_BLOCK_HOST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "image.h"

#include <pthread.h>

struct host {
    int fd;
    bool is_blockdev;
    bool read_only;
    bool direct;                  /* O_DIRECT: bypass the page cache */
    /* Smallest unit of I/O: the device's logical block size, or for
     * O_DIRECT on a file what the filesystem demands.  Buffered files: 1. */
    uint32_t logical_block_size;
    uint32_t mem_align;           /* O_DIRECT buffer alignment */
    /* What the storage can do, probed at open. */
    bool can_punch_hole;          /* files: FALLOC_FL_PUNCH_HOLE */
    atomic_bool can_zero_range;   /* files: FALLOC_FL_ZERO_RANGE; cleared
                                   * when the filesystem says no */
    bool can_write_zeroes;        /* devices: zeroing without data transfer */
    bool can_discard;             /* devices: BLKDISCARD */
    /* O_DIRECT: unaligned writes read-modify-write whole blocks, so they
     * exclude every other write (held shared by aligned ones). */
    pthread_rwlock_t rmw_lock;
    /* The first failed host_flush (negative errno), kept until close.
     * After fdatasync fails, Linux has marked the failed pages clean: the
     * next fdatasync succeeds although the data never reached the disk,
     * and nothing says which writes were lost.  So one failure fails
     * every later flush and every later modification (-EIO), as QEMU's
     * file driver does; reads go on.  Whatever the errno, ENOSPC too: the
     * pages are gone just the same. */
    atomic_int flush_error;
    /* Flush generations (as QEMU's write_gen/flushed_gen): write_gen
     * counts modifications that completed (pwritev, fallocate, ftruncate,
     * ioctl returned, successfully or not); flushed_gen is the write_gen
     * the last successful fdatasync covered.  A flush with nothing new
     * makes no system call, and a flush arriving while one runs waits for
     * it and then flushes again only if something completed after that
     * one began.  flushed_gen and flushing are under flush_lock. */
    atomic_uint_fast64_t write_gen;
    uint64_t flushed_gen;
    bool flushing;
    pthread_mutex_t flush_lock;
    pthread_cond_t flush_done;
};

/* The system calls host.c makes on storage, through one table so that
 * tests can record them (crash simulation) or make them fail (fault
 * injection).  Production code never changes it. */
struct host_syscalls {
    ssize_t (*preadv)(int fd, const struct iovec *iov, int cnt, off_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int cnt, off_t off);
    int (*fdatasync)(int fd);
    int (*fallocate)(int fd, int mode, off_t off, off_t len);
    int (*ftruncate)(int fd, off_t len);
    /* BLKZEROOUT, BLKDISCARD: range = { offset, length } */
    int (*blk_range_ioctl)(int fd, unsigned long req, uint64_t range[2]);
};
extern struct host_syscalls host_sys;

/* Flags for host_open(). */
#define HOST_READ_ONLY (1u << 0)
#define HOST_DIRECT    (1u << 1)  /* O_DIRECT; unaligned I/O is bounced */

/* Open path (flags: HOST_*).  Refuses anything that is neither a regular
 * file nor a block device; opens block devices exclusively (O_EXCL), so a
 * mounted or otherwise held device is refused.  On failure writes one line
 * naming the cause into err. */
int host_open(struct host *h, const char *path, unsigned flags,
              char *err, size_t errlen);
void host_close(struct host *h);

/* Current size in bytes (file length, or device capacity).  Negative errno
 * on failure. */
int64_t host_size(struct host *h);

/* Bytes of storage the file occupies (st_blocks); -ENOTSUP on devices. */
int64_t host_allocated_bytes(struct host *h);

/* Read exactly len bytes; the part past end of file reads as zeros. */
int host_pread(struct host *h, void *buf, size_t len, uint64_t off);
int host_preadv(struct host *h, const struct iovec *iov, int iovcnt,
                uint64_t off);
/* Write exactly len bytes (retrying short writes).  Files grow as needed. */
int host_pwrite(struct host *h, const void *buf, size_t len, uint64_t off);
int host_pwritev(struct host *h, const struct iovec *iov, int iovcnt,
                 uint64_t off);

/* fdatasync: every modification that completed before the call is
 * durable when it returns 0.  Skipped when nothing completed since the
 * last successful fdatasync; concurrent calls share one (see write_gen).
 * A failure is latched (see flush_error): from then on every flush and
 * modification fails. */
int host_flush(struct host *h);

/* Make [off, off+len) read as zeros without writing data.
 * may_unmap: the space may be released (punch a hole / BLKDISCARD where
 * that reads back zeros).  Returns -ENOTSUP if the storage cannot do it
 * cheaply; the caller then decides whether to write zeros. */
int host_zero(struct host *h, uint64_t off, uint64_t len, bool may_unmap);

/* Release [off, off+len).  Files: the range reads as zeros afterwards.
 * Returns -ENOTSUP if not possible. */
int host_discard(struct host *h, uint64_t off, uint64_t len);

/* Allocate blocks for [off, off+len) of a regular file without writing
 * data: what was a hole reads as zeros, what held data keeps it.
 * keep_size: the file's length does not change (blocks past the end
 * stay invisible until a write reaches them).  -ENOTSUP on devices and
 * on file systems without fallocate. */
int host_preallocate(struct host *h, uint64_t off, uint64_t len,
                     bool keep_size);

/* Set the length of a regular file (no-op error -ENOTSUP on devices). */
int host_truncate(struct host *h, uint64_t size);

/* Allocation status at off: DATA or UNALLOCATED (a hole), with the length
 * of that extent clipped to len.  Uses SEEK_DATA/SEEK_HOLE on files;
 * devices report DATA. */
int host_block_status(struct host *h, uint64_t off, uint64_t len,
                      enum image_extent_kind *kind, uint64_t *extent_len);

#endif
