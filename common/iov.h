/* qlun — scatter/gather helpers.
 *
 * Commands arrive as iovecs (the TCMU data area) and leave as iovecs (to
 * preadv/pwritev).  These helpers copy, slice and scan them without
 * flattening into a bounce buffer.
 */
#ifndef QLUN_COMMON_IOV_H
#define QLUN_COMMON_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* Total bytes described by iov. */
size_t iov_size(const struct iovec *iov, int iovcnt);

/* Copy len bytes between a flat buffer and iov, starting offset bytes into
 * iov.  Returns the number of bytes copied (less than len only if iov is
 * shorter). */
size_t iov_to_buf(const struct iovec *iov, int iovcnt, size_t offset,
                  void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, int iovcnt, size_t offset,
                    const void *buf, size_t len);
size_t iov_memset(const struct iovec *iov, int iovcnt, size_t offset,
                  int c, size_t len);

/* True if every byte of iov is zero. */
bool iov_is_zero(const struct iovec *iov, int iovcnt);
bool buf_is_zero(const void *buf, size_t len);

/* Describe bytes [offset, offset+len) of src in dst (at most dst_max
 * entries), pointing into the same memory.  Returns the entry count, or -1
 * if dst_max is too small or src is shorter than offset+len. */
int iov_slice(struct iovec *dst, int dst_max, const struct iovec *src,
              int src_cnt, size_t offset, size_t len);

/* A cursor over a private copy of an iovec, for loops that transfer part
 * of it at a time (short reads and writes). */
struct iov_cursor {
    struct iovec *vec;   /* first unfinished entry */
    int cnt;             /* entries left */
    struct iovec *alloc; /* heap copy when small[] is too small */
    struct iovec small[8];
};

/* Returns 0 or -ENOMEM.  Pair with iov_cursor_free(). */
int iov_cursor_init(struct iov_cursor *c, const struct iovec *iov, int iovcnt);
void iov_cursor_free(struct iov_cursor *c);
static inline bool iov_cursor_done(const struct iov_cursor *c)
{
    return c->cnt == 0;
}
static inline const struct iovec *iov_cursor_vec(const struct iov_cursor *c)
{
    return c->vec;
}
/* Entries to pass to one preadv/pwritev call (capped at IOV_MAX). */
int iov_cursor_cnt(const struct iov_cursor *c);
void iov_cursor_advance(struct iov_cursor *c, size_t n);
/* Zero-fill whatever is left and finish. */
void iov_cursor_zero_rest(struct iov_cursor *c);

#endif
