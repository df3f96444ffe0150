/* qlun — scatter/gather helpers. */
#include "iov.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

size_t iov_size(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Walk iov from offset for len bytes, calling fn on each piece.  Returns
 * the bytes visited. */
static size_t iov_walk(const struct iovec *iov, int iovcnt, size_t offset,
                       size_t len,
                       void (*fn)(void *piece, size_t n, size_t done, void *arg),
                       void *arg)
{
    size_t done = 0;
    for (int i = 0; i < iovcnt && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - offset, len - done);
        fn((uint8_t *)iov[i].iov_base + offset, n, done, arg);
        done += n;
        offset = 0;
    }
    return done;
}

static void copy_out(void *piece, size_t n, size_t done, void *arg)
{
    memcpy((uint8_t *)arg + done, piece, n);
}

static void copy_in(void *piece, size_t n, size_t done, void *arg)
{
    memcpy(piece, (const uint8_t *)arg + done, n);
}

static void fill(void *piece, size_t n, size_t done, void *arg)
{
    (void)done;
    memset(piece, *(int *)arg, n);
}

size_t iov_to_buf(const struct iovec *iov, int iovcnt, size_t offset,
                  void *buf, size_t len)
{
    return iov_walk(iov, iovcnt, offset, len, copy_out, buf);
}

size_t iov_from_buf(const struct iovec *iov, int iovcnt, size_t offset,
                    const void *buf, size_t len)
{
    return iov_walk(iov, iovcnt, offset, len, copy_in, (void *)buf);
}

size_t iov_memset(const struct iovec *iov, int iovcnt, size_t offset, int c,
                  size_t len)
{
    return iov_walk(iov, iovcnt, offset, len, fill, &c);
}

bool buf_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* Check the first bytes one at a time, then compare the buffer with
     * itself shifted: memcmp is vectorised, a byte loop is not. */
    size_t head = MIN(len, (size_t)16);
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

bool iov_is_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        if (!buf_is_zero(iov[i].iov_base, iov[i].iov_len))
            return false;
    return true;
}

int iov_slice(struct iovec *dst, int dst_max, const struct iovec *src,
              int src_cnt, size_t offset, size_t len)
{
    int n = 0;
    for (int i = 0; i < src_cnt && len > 0; i++) {
        if (offset >= src[i].iov_len) {
            offset -= src[i].iov_len;
            continue;
        }
        if (n == dst_max)
            return -1;
        size_t take = MIN(src[i].iov_len - offset, len);
        dst[n].iov_base = (uint8_t *)src[i].iov_base + offset;
        dst[n].iov_len = take;
        n++;
        len -= take;
        offset = 0;
    }
    return len == 0 ? n : -1;
}

int iov_cursor_init(struct iov_cursor *c, const struct iovec *iov, int iovcnt)
{
    assert(iovcnt >= 0);
    c->alloc = NULL;
    if ((size_t)iovcnt <= ARRAY_SIZE(c->small)) {
        c->vec = c->small;
    } else {
        c->alloc = malloc(sizeof(*iov) * (size_t)iovcnt);
        if (!c->alloc)
            return -ENOMEM;
        c->vec = c->alloc;
    }
    if (iovcnt)
        memcpy(c->vec, iov, sizeof(*iov) * (size_t)iovcnt);
    c->cnt = iovcnt;
    /* Skip empty entries so that done means "no bytes left". */
    iov_cursor_advance(c, 0);
    return 0;
}

void iov_cursor_free(struct iov_cursor *c)
{
    free(c->alloc);
    c->alloc = NULL;
}

int iov_cursor_cnt(const struct iov_cursor *c)
{
    return MIN(c->cnt, IOV_MAX);
}

void iov_cursor_advance(struct iov_cursor *c, size_t n)
{
    while (c->cnt > 0) {
        if (n < c->vec->iov_len) {
            c->vec->iov_base = (uint8_t *)c->vec->iov_base + n;
            c->vec->iov_len -= n;
            if (c->vec->iov_len > 0)
                return;
        } else {
            n -= c->vec->iov_len;
        }
        c->vec++;
        c->cnt--;
    }
    assert(n == 0);
}

void iov_cursor_zero_rest(struct iov_cursor *c)
{
    for (int i = 0; i < c->cnt; i++)
        memset(c->vec[i].iov_base, 0, c->vec[i].iov_len);
    c->cnt = 0;
}
