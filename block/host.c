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
#include <sys/stat.h>
#include <unistd.h>

#include "../common/iov.h"
#include "../common/util.h"

int host_open(struct host *h, const char *path, bool read_only,
              char *err, size_t errlen)
{
    struct stat st;
    int fd;

    memset(h, 0, sizeof(*h));
    h->fd = -1;
    fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
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
        int lbs = 512;
        h->is_blockdev = true;
        if (ioctl(fd, BLKSSZGET, &lbs) < 0)
            lbs = 512;
        h->logical_block_size = (uint32_t)lbs;
    } else if (S_ISREG(st.st_mode)) {
        h->logical_block_size = 1;
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
    } else {
        snprintf(err, errlen, "%s is neither a regular file nor a block device",
                 path);
        close(fd);
        return -EINVAL;
    }
    h->fd = fd;
    h->read_only = read_only;
    return 0;
}

void host_close(struct host *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
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
 * of file).  These loops advance a private copy of the iovec until done. */
int host_preadv(struct host *h, const struct iovec *iov, int iovcnt,
                uint64_t off)
{
    struct iov_cursor cur;
    int ret = iov_cursor_init(&cur, iov, iovcnt);
    if (ret < 0)
        return ret;
    while (!iov_cursor_done(&cur)) {
        ssize_t n = preadv(h->fd, iov_cursor_vec(&cur), iov_cursor_cnt(&cur),
                           (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        if (n == 0) {
            /* End of file: the rest reads as zeros. */
            iov_cursor_zero_rest(&cur);
            break;
        }
        iov_cursor_advance(&cur, (size_t)n);
        off += (uint64_t)n;
    }
    iov_cursor_free(&cur);
    return ret;
}

int host_pwritev(struct host *h, const struct iovec *iov, int iovcnt,
                 uint64_t off)
{
    struct iov_cursor cur;
    int ret;

    if (h->read_only)
        return -EROFS;
    ret = iov_cursor_init(&cur, iov, iovcnt);
    if (ret < 0)
        return ret;
    while (!iov_cursor_done(&cur)) {
        ssize_t n = pwritev(h->fd, iov_cursor_vec(&cur), iov_cursor_cnt(&cur),
                            (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        if (n == 0) {
            /* A device end: nothing more fits. */
            ret = -ENOSPC;
            break;
        }
        iov_cursor_advance(&cur, (size_t)n);
        off += (uint64_t)n;
    }
    iov_cursor_free(&cur);
    return ret;
}

int host_flush(struct host *h)
{
    if (h->read_only)
        return 0;
    if (fdatasync(h->fd) < 0)
        return -errno;
    return 0;
}

static int blkdev_range_ioctl(struct host *h, unsigned long req,
                              uint64_t off, uint64_t len)
{
    uint64_t range[2] = { off, len };
    if (ioctl(h->fd, req, range) < 0)
        return errno == EINVAL || errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int host_zero(struct host *h, uint64_t off, uint64_t len, bool may_unmap)
{
    if (h->read_only)
        return -EROFS;
    if (len == 0)
        return 0;
    if (h->is_blockdev)
        return blkdev_range_ioctl(h, BLKZEROOUT, off, len);

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
    if (fallocate(h->fd, mode, (off_t)off, (off_t)len) < 0) {
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
    if (h->read_only)
        return -EROFS;
    if (len == 0)
        return 0;
    if (h->is_blockdev)
        return blkdev_range_ioctl(h, BLKDISCARD, off, len);
    if (!h->can_punch_hole)
        return -ENOTSUP;
    if (fallocate(h->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)off, (off_t)len) < 0)
        return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int host_truncate(struct host *h, uint64_t size)
{
    if (h->is_blockdev)
        return -ENOTSUP;
    if (h->read_only)
        return -EROFS;
    if (ftruncate(h->fd, (off_t)size) < 0)
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
