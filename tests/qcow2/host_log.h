/* qlun tests — what the engine asked of the host, in order: every pwritev,
 * fdatasync and fallocate through the host_sys table (block/host.h), for
 * tests that count system calls or check their order (what a change costs,
 * and that a punch follows the flush it depends on).
 *
 *   host_log_install();        once, before the images are opened
 *   host_log_reset();          before the operation under test
 *   host_log_count(HOST_WRITE) / host_log_bytes(HOST_WRITE) /
 *   host_log_fallocs(FALLOC_FL_PUNCH_HOLE) / host_log[i] ...
 *
 * host_log_refuse: fallocate modes to refuse (EOPNOTSUPP), as a file
 * system without them would.  Only for a test's own translation unit
 * (static state). */
#ifndef QLUN_TEST_HOST_LOG_H
#define QLUN_TEST_HOST_LOG_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "block/host.h"

enum host_op_kind { HOST_WRITE, HOST_SYNC, HOST_FALLOC };

struct host_op {
    enum host_op_kind kind;
    int mode;          /* fallocate's */
    uint64_t off, len; /* 0 for a sync */
};

#define HOST_LOG_MAX (1u << 16)
static struct host_op host_log[HOST_LOG_MAX];
static size_t host_log_n;      /* entries in host_log */
static size_t host_log_lost;   /* operations past HOST_LOG_MAX */
static int host_log_refuse;    /* fallocate mode bits refused */
static pthread_mutex_t host_log_lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*host_log_real_pwritev)(int, const struct iovec *, int,
                                        off_t);
static int (*host_log_real_fdatasync)(int);
static int (*host_log_real_fallocate)(int, int, off_t, off_t);

static void host_log_add(enum host_op_kind kind, int mode, uint64_t off,
                         uint64_t len)
{
    pthread_mutex_lock(&host_log_lock);
    if (host_log_n < HOST_LOG_MAX)
        host_log[host_log_n++] = (struct host_op){ kind, mode, off, len };
    else
        host_log_lost++;
    pthread_mutex_unlock(&host_log_lock);
}

static ssize_t host_log_pwritev(int fd, const struct iovec *iov, int cnt,
                                off_t off)
{
    uint64_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    host_log_add(HOST_WRITE, 0, (uint64_t)off, len);
    return host_log_real_pwritev(fd, iov, cnt, off);
}

static int host_log_fdatasync(int fd)
{
    host_log_add(HOST_SYNC, 0, 0, 0);
    return host_log_real_fdatasync(fd);
}

static int host_log_fallocate(int fd, int mode, off_t off, off_t len)
{
    host_log_add(HOST_FALLOC, mode, (uint64_t)off, (uint64_t)len);
    if (mode & host_log_refuse) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return host_log_real_fallocate(fd, mode, off, len);
}

static inline void host_log_install(void)
{
    host_log_real_pwritev = host_sys.pwritev;
    host_log_real_fdatasync = host_sys.fdatasync;
    host_log_real_fallocate = host_sys.fallocate;
    host_sys.pwritev = host_log_pwritev;
    host_sys.fdatasync = host_log_fdatasync;
    host_sys.fallocate = host_log_fallocate;
}

static inline void host_log_reset(void)
{
    pthread_mutex_lock(&host_log_lock);
    host_log_n = host_log_lost = 0;
    pthread_mutex_unlock(&host_log_lock);
}

/* Operations of one kind since the reset. */
static inline size_t host_log_count(enum host_op_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < host_log_n; i++)
        n += host_log[i].kind == kind;
    return n;
}

/* Bytes of the operations of one kind since the reset. */
static inline uint64_t host_log_bytes(enum host_op_kind kind)
{
    uint64_t n = 0;
    for (size_t i = 0; i < host_log_n; i++)
        if (host_log[i].kind == kind)
            n += host_log[i].len;
    return n;
}

/* fallocate calls with any of the mode bits set; with 0, those of mode 0
 * (allocate, growing the file). */
static inline size_t host_log_fallocs(int mode_bits)
{
    size_t n = 0;
    for (size_t i = 0; i < host_log_n; i++) {
        const struct host_op *o = &host_log[i];
        if (o->kind == HOST_FALLOC &&
            (mode_bits ? (o->mode & mode_bits) != 0 : o->mode == 0))
            n++;
    }
    return n;
}

#endif
