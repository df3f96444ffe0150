/* qlun — host storage: files and block devices. */
#include "host.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../common/iov.h"
#include "../common/util.h"

static int blk_range_ioctl(int fd, unsigned long req, uint64_t range[2])
{
    return ioctl(fd, req, range);
}

struct host_syscalls host_sys = {
    .preadv = preadv,
    .pwritev = pwritev,
    .fdatasync = fdatasync,
    .fallocate = fallocate,
    .ftruncate = ftruncate,
    .blk_range_ioctl = blk_range_ioctl,
};

/* After each modifying system call returned, whatever it returned (a
 * failed write may still have changed part of the range): the next flush
 * has something to make durable.  Counted after the call, so a flush that
 * sees the new generation starts its fdatasync after the call completed. */
static void modified(struct host *h)
{
    atomic_fetch_add(&h->write_gen, 1);
}

/* The modifying calls other than pwritev, counted (errno kept). */
static int sys_fallocate(struct host *h, int mode, uint64_t off, uint64_t len)
{
    int r = host_sys.fallocate(h->fd, mode, (off_t)off, (off_t)len);
    int e = errno;
    modified(h);
    errno = e;
    return r;
}

static int sys_ftruncate(struct host *h, uint64_t size)
{
    int r = host_sys.ftruncate(h->fd, (off_t)size);
    int e = errno;
    modified(h);
    errno = e;
    return r;
}

static int sys_blk_range_ioctl(struct host *h, unsigned long req,
                               uint64_t range[2])
{
    int r = host_sys.blk_range_ioctl(h->fd, req, range);
    int e = errno;
    modified(h);
    errno = e;
    return r;
}

/* Before any modification: a failed flush fails it (see flush_error). */
static int check_writable(struct host *h)
{
    if (h->read_only)
        return -EROFS;
    return atomic_load(&h->flush_error) ? -EIO : 0;
}

/* Read an unsigned number from a sysfs file; 0 if absent. */
static uint64_t sysfs_u64(const char *path)
{
    unsigned long long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* A block device's queue limits (a partition's are its disk's). */
static uint64_t blkdev_queue_limit(dev_t rdev, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s",
             major(rdev), minor(rdev), name);
    if (access(path, R_OK) != 0)
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../queue/%s",
                 major(rdev), minor(rdev), name);
    return sysfs_u64(path);
}

/* O_DIRECT alignment for a file: what the filesystem reports (statx
 * STATX_DIOALIGN, Linux 6.1), else a conservative 4 KiB. */
static void file_dio_alignment(int fd, uint32_t *offset_align,
                               uint32_t *mem_align)
{
    *offset_align = 4096;
    *mem_align = 4096;
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        *offset_align = stx.stx_dio_offset_align;
        *mem_align = MAX(stx.stx_dio_mem_align, (uint32_t)sizeof(void *));
    }
#endif
}

int host_open(struct host *h, const char *path, unsigned flags,
              char *err, size_t errlen)
{
    bool read_only = flags & HOST_READ_ONLY;
    bool direct = flags & HOST_DIRECT;
    struct stat st;
    int fd;

    memset(h, 0, sizeof(*h));
    h->fd = -1;
    if (stat(path, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        snprintf(err, errlen, "%s is neither a regular file nor a block device",
                 path);
        return -EINVAL;
    }
    int oflags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (direct)
        oflags |= O_DIRECT;
    /* A block device another program holds (a mounted filesystem, LVM,
     * another target) must not be written behind its back. */
    if (S_ISBLK(st.st_mode) && !read_only)
        oflags |= O_EXCL;
    fd = open(path, oflags);
    if (fd < 0) {
        int e = errno;
        if (e == EBUSY)
            snprintf(err, errlen, "cannot open %s: device in use (mounted, or "
                     "held by another program)", path);
        else if (e == EINVAL && direct)
            snprintf(err, errlen, "cannot open %s with O_DIRECT (cache=none or "
                     "directsync): the filesystem does not support it", path);
        else if (e == EROFS || (e == EACCES && !read_only))
            snprintf(err, errlen, "cannot open %s read-write: %s (use "
                     "readonly=on to serve it read-only)", path, strerror(e));
        else
            snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    if (fstat(fd, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (S_ISBLK(st.st_mode)) {
        int lbs = 512, ro = 0;
        /* Some kernels let a read-only device be opened for writing and
         * fail each write instead: ask the device. */
        if (!read_only && ioctl(fd, BLKROGET, &ro) == 0 && ro) {
            snprintf(err, errlen, "cannot open %s read-write: the device is "
                     "read-only (use readonly=on to serve it read-only)", path);
            close(fd);
            return -EROFS;
        }
        h->is_blockdev = true;
        if (ioctl(fd, BLKSSZGET, &lbs) < 0)
            lbs = 512;
        h->logical_block_size = (uint32_t)lbs;
        h->mem_align = (uint32_t)lbs;
        h->can_write_zeroes =
            blkdev_queue_limit(st.st_rdev, "write_zeroes_max_bytes") > 0;
        h->can_discard = blkdev_queue_limit(st.st_rdev, "discard_max_bytes") > 0;
    } else {
        h->logical_block_size = 1;
        h->mem_align = 1;
        if (direct)
            file_dio_alignment(fd, &h->logical_block_size, &h->mem_align);
        /* Punching a hole past end of file changes nothing, so it is a
         * safe probe of whether the filesystem can punch at all.  Whether
         * it can ZERO_RANGE is learnt on first use (a probe would have to
         * allocate). */
        if (!read_only) {
            off_t past_eof = (st.st_size | 4095) + 1;
            h->can_punch_hole =
                fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          past_eof, 4096) == 0;
            h->can_zero_range = true;
        }
    }
    h->fd = fd;
    h->read_only = read_only;
    h->direct = direct;
    pthread_rwlock_init(&h->rmw_lock, NULL);
    pthread_mutex_init(&h->flush_lock, NULL);
    pthread_cond_init(&h->flush_done, NULL);
    return 0;
}

void host_close(struct host *h)
{
    if (h->fd < 0)
        return;
    close(h->fd);
    h->fd = -1;
    pthread_rwlock_destroy(&h->rmw_lock);
    pthread_mutex_destroy(&h->flush_lock);
    pthread_cond_destroy(&h->flush_done);
}

int64_t host_size(struct host *h)
{
    if (h->is_blockdev) {
        uint64_t bytes;
        if (ioctl(h->fd, BLKGETSIZE64, &bytes) < 0)
            return -errno;
        return (int64_t)bytes;
    }
    struct stat st;
    if (fstat(h->fd, &st) < 0)
        return -errno;
    return st.st_size;
}

int64_t host_allocated_bytes(struct host *h)
{
    struct stat st;
    if (h->is_blockdev)
        return -ENOTSUP;
    if (fstat(h->fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

int host_pread(struct host *h, void *buf, size_t len, uint64_t off)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    return host_preadv(h, &iov, 1, off);
}

int host_pwrite(struct host *h, const void *buf, size_t len, uint64_t off)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return host_pwritev(h, &iov, 1, off);
}

/* preadv/pwritev may transfer less than asked (signals, huge requests, end
 * of file or device).  This loop advances a private copy of the iovec until
 * done.  Reading past end of file gives zeros; writing past the end of a
 * device is ENOSPC. */
static int rw_full(struct host *h, const struct iovec *iov, int iovcnt,
                   uint64_t off, bool write)
{
    struct iov_cursor cur;
    int ret = iov_cursor_init(&cur, iov, iovcnt);
    if (ret < 0)
        return ret;
    while (!iov_cursor_done(&cur)) {
        const struct iovec *v = iov_cursor_vec(&cur);
        int cnt = iov_cursor_cnt(&cur);
        ssize_t n = write ? host_sys.pwritev(h->fd, v, cnt, (off_t)off)
                          : host_sys.preadv(h->fd, v, cnt, (off_t)off);
        if (write)
            modified(h);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        if (n == 0) {
            if (write)
                ret = -ENOSPC;
            else
                iov_cursor_zero_rest(&cur);
            break;
        }
        iov_cursor_advance(&cur, (size_t)n);
        off += (uint64_t)n;
    }
    iov_cursor_free(&cur);
    return ret;
}

static int preadv_full(struct host *h, const struct iovec *iov, int iovcnt,
                       uint64_t off)
{
    return rw_full(h, iov, iovcnt, off, false);
}

static int pwritev_full(struct host *h, const struct iovec *iov, int iovcnt,
                        uint64_t off)
{
    return rw_full(h, iov, iovcnt, off, true);
}

/* --- O_DIRECT: requests that are not aligned go through a bounce buffer.
 * Reads widen to whole blocks; writes that do not cover whole blocks read
 * the blocks first (read-modify-write) while excluding other writes. */

static bool request_aligned(const struct host *h, const struct iovec *iov,
                            int iovcnt, uint64_t off)
{
    uint32_t a = h->logical_block_size, m = h->mem_align;
    if (off % a)
        return false;
    for (int i = 0; i < iovcnt; i++)
        if ((uintptr_t)iov[i].iov_base % m || iov[i].iov_len % a)
            return false;
    return true;
}

static void *bounce_alloc(const struct host *h, size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, MAX(h->mem_align, (uint32_t)sizeof(void *)), len))
        return NULL;
    return p;
}

static int direct_bounce_read(struct host *h, const struct iovec *iov,
                              int iovcnt, uint64_t off)
{
    uint32_t a = h->logical_block_size;
    size_t len = iov_size(iov, iovcnt);
    uint64_t start = ALIGN_DOWN(off, (uint64_t)a);
    size_t span = (size_t)(ALIGN_UP(off + len, (uint64_t)a) - start);
    uint8_t *b = bounce_alloc(h, span);
    if (!b)
        return -ENOMEM;
    int ret = preadv_full(h, &(struct iovec){ b, span }, 1, start);
    if (ret == 0)
        iov_from_buf(iov, iovcnt, 0, b + (off - start), len);
    free(b);
    return ret;
}

static int direct_bounce_write(struct host *h, const struct iovec *iov,
                               int iovcnt, uint64_t off)
{
    uint32_t a = h->logical_block_size;
    size_t len = iov_size(iov, iovcnt);
    uint64_t start = ALIGN_DOWN(off, (uint64_t)a);
    uint64_t end = ALIGN_UP(off + len, (uint64_t)a);
    size_t span = (size_t)(end - start);
    bool rmw = start != off || end != off + len;
    uint8_t *b = bounce_alloc(h, span);
    if (!b)
        return -ENOMEM;
    int64_t old_size = 0;
    int ret = 0;
    if (rmw) {
        pthread_rwlock_wrlock(&h->rmw_lock);
        old_size = host_size(h);
        /* Only the partial head and tail blocks need their old bytes. */
        ret = preadv_full(h, &(struct iovec){ b, a }, 1, start);
        if (ret == 0 && span > a)
            ret = preadv_full(h, &(struct iovec){ b + span - a, a }, 1, end - a);
    } else {
        pthread_rwlock_rdlock(&h->rmw_lock);
    }
    if (ret == 0) {
        iov_to_buf(iov, iovcnt, 0, b + (off - start), len);
        ret = pwritev_full(h, &(struct iovec){ b, span }, 1, start);
    }
    /* Whole blocks past the old end of a file would lengthen it beyond
     * what was written: cut it back. */
    if (ret == 0 && rmw && !h->is_blockdev && old_size >= 0 &&
        end > (uint64_t)old_size && end > off + len)
        ret = host_truncate(h, MAX((uint64_t)old_size, off + len));
    pthread_rwlock_unlock(&h->rmw_lock);
    free(b);
    return ret;
}

int host_preadv(struct host *h, const struct iovec *iov, int iovcnt,
                uint64_t off)
{
    if (h->direct && !request_aligned(h, iov, iovcnt, off))
        return direct_bounce_read(h, iov, iovcnt, off);
    return preadv_full(h, iov, iovcnt, off);
}

int host_pwritev(struct host *h, const struct iovec *iov, int iovcnt,
                 uint64_t off)
{
    int ret = check_writable(h);
    if (ret < 0)
        return ret;
    if (!h->direct)
        return pwritev_full(h, iov, iovcnt, off);
    if (!request_aligned(h, iov, iovcnt, off))
        return direct_bounce_write(h, iov, iovcnt, off);
    pthread_rwlock_rdlock(&h->rmw_lock);
    ret = pwritev_full(h, iov, iovcnt, off);
    pthread_rwlock_unlock(&h->rmw_lock);
    return ret;
}

/* Latch the first fdatasync failure (see flush_error). */
static int flush_failed(struct host *h, int err)
{
    int expected = 0;
    atomic_compare_exchange_strong(&h->flush_error, &expected, err);
    fprintf(stderr, "qlun: fdatasync failed: %s; from now on every flush "
            "and write of this image fails until it is reopened\n",
            strerror(-err));
    return err;
}

int host_flush(struct host *h)
{
    if (h->read_only)
        return 0;
    if (atomic_load(&h->flush_error))
        return -EIO;
    /* Everything that completed before this call must be covered. */
    uint64_t want = atomic_load(&h->write_gen);
    pthread_mutex_lock(&h->flush_lock);
    while (h->flushing && h->flushed_gen < want)
        pthread_cond_wait(&h->flush_done, &h->flush_lock);
    int ret = atomic_load(&h->flush_error) ? -EIO : 0;
    if (ret < 0 || h->flushed_gen >= want) {
        pthread_mutex_unlock(&h->flush_lock);
        return ret;
    }
    /* Read before the fdatasync starts: it covers at least this much.
     * Modifications completing from here on may or may not be covered, so
     * they count as not flushed. */
    uint64_t gen = atomic_load(&h->write_gen);
    h->flushing = true;
    pthread_mutex_unlock(&h->flush_lock);

    if (host_sys.fdatasync(h->fd) < 0)
        ret = flush_failed(h, -errno);

    pthread_mutex_lock(&h->flush_lock);
    h->flushing = false;
    if (ret == 0 && gen > h->flushed_gen)
        h->flushed_gen = gen;
    pthread_cond_broadcast(&h->flush_done);
    pthread_mutex_unlock(&h->flush_lock);
    return ret;
}

static int blkdev_range_ioctl(struct host *h, unsigned long req,
                              uint64_t off, uint64_t len)
{
    uint64_t range[2] = { off, len };
    if (sys_blk_range_ioctl(h, req, range) < 0)
        return errno == EINVAL || errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int host_zero(struct host *h, uint64_t off, uint64_t len, bool may_unmap)
{
    int ret = check_writable(h);
    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    if (h->is_blockdev) {
        if (!h->can_write_zeroes)
            return -ENOTSUP;
        /* fallocate on a block device is the kernel's write-zeroes:
         * PUNCH_HOLE lets the device deallocate, ZERO_RANGE (BLKZEROOUT)
         * keeps the blocks mapped.  Both read back as zeros. */
        if (may_unmap &&
            sys_fallocate(h, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          off, len) == 0)
            return 0;
        return blkdev_range_ioctl(h, BLKZEROOUT, off, len);
    }

    /* A hole reads as zeros and frees space; otherwise keep the blocks
     * allocated (a later write will not need to allocate). */
    int mode;
    if (may_unmap && h->can_punch_hole)
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    else if (h->can_zero_range)
        mode = FALLOC_FL_ZERO_RANGE;
    else if (h->can_punch_hole)
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    else
        return -ENOTSUP;
    /* A hole punched past end of file would not extend it; the callers
     * (format drivers) only zero inside what they own, so KEEP_SIZE is
     * right for holes, and ZERO_RANGE may extend the file as a write would. */
    if (sys_fallocate(h, mode, off, len) < 0) {
        if (errno != EOPNOTSUPP)
            return -errno;
        if (mode == FALLOC_FL_ZERO_RANGE) {
            /* Learnt: this filesystem has no ZERO_RANGE.  Try again with a
             * hole, which also reads back as zeros. */
            h->can_zero_range = false;
            return host_zero(h, off, len, may_unmap);
        }
        return -ENOTSUP;
    }
    return 0;
}

int host_discard(struct host *h, uint64_t off, uint64_t len)
{
    int ret = check_writable(h);
    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    if (h->is_blockdev)
        return h->can_discard ? blkdev_range_ioctl(h, BLKDISCARD, off, len)
                              : -ENOTSUP;
    if (!h->can_punch_hole)
        return -ENOTSUP;
    if (sys_fallocate(h, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                      len) < 0)
        return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int host_preallocate(struct host *h, uint64_t off, uint64_t len,
                     bool keep_size)
{
    if (h->is_blockdev)
        return -ENOTSUP;
    int ret = check_writable(h);
    if (ret < 0 || len == 0)
        return ret;
    if (sys_fallocate(h, keep_size ? FALLOC_FL_KEEP_SIZE : 0, off, len) < 0)
        return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int host_truncate(struct host *h, uint64_t size)
{
    if (h->is_blockdev)
        return -ENOTSUP;
    int ret = check_writable(h);
    if (ret < 0)
        return ret;
    if (sys_ftruncate(h, size) < 0)
        return -errno;
    return 0;
}

int host_block_status(struct host *h, uint64_t off, uint64_t len,
                      enum image_extent_kind *kind, uint64_t *extent_len)
{
    assert(len > 0);
    *kind = IMAGE_EXTENT_DATA;
    *extent_len = len;
    if (h->is_blockdev)
        return 0;

    off_t data = lseek(h->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* No data at or after off: a hole up to end of file and
             * beyond. */
            *kind = IMAGE_EXTENT_UNALLOCATED;
            return 0;
        }
        /* Filesystems without SEEK_DATA: everything is data. */
        return 0;
    }
    if ((uint64_t)data > off) {
        *kind = IMAGE_EXTENT_UNALLOCATED;
        *extent_len = MIN((uint64_t)data - off, len);
        return 0;
    }
    off_t hole = lseek(h->fd, (off_t)off, SEEK_HOLE);
    if (hole > (off_t)off)
        *extent_len = MIN((uint64_t)hole - off, len);
    return 0;
}
