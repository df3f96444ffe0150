/* qlun tests — recording the host writes of one file, and replaying every
 * crash of it (the machinery of test_snapshot_crash.c, as a header for
 * other crash tests).
 *
 * crash_rec_start(fd) makes host_sys (block/host.h) record each pwritev,
 * fallocate, ftruncate and fdatasync on fd until crash_rec_stop().
 * crash_replay() then builds, for a crash after each recorded operation,
 * images from what was durable at the last fdatasync plus {all, none, a
 * random subset} of the operations issued since (the page cache may
 * write back any of them), and hands each to a judge.
 */
#ifndef QLUN_TESTS_QCOW2_CRASH_REC_H
#define QLUN_TESTS_QCOW2_CRASH_REC_H

#include <assert.h>
#include <linux/falloc.h>

#include "block/host.h"
#include "common/iov.h"
#include "common/util.h"
#include "qtest.h"

enum crash_op_kind { CRASH_WRITE, CRASH_FALLOC, CRASH_TRUNC, CRASH_SYNC };

struct crash_op {
    enum crash_op_kind kind;
    int mode;
    uint64_t off, len;
    uint8_t *data;
};

static struct crash_op *crash_ops;
static size_t crash_nops, crash_cap;
static int crash_fd = -1; /* the file recorded; -1: none */

static void crash_push(struct crash_op o)
{
    if (crash_nops == crash_cap) {
        crash_cap = crash_cap ? crash_cap * 2 : 256;
        crash_ops = realloc(crash_ops, crash_cap * sizeof(*crash_ops));
        assert(crash_ops);
    }
    crash_ops[crash_nops++] = o;
}

QT_FN void crash_rec_clear(void)
{
    for (size_t i = 0; i < crash_nops; i++)
        free(crash_ops[i].data);
    crash_nops = 0;
}

static ssize_t crash_pwritev(int fd, const struct iovec *iov, int cnt,
                             off_t off)
{
    ssize_t n = pwritev(fd, iov, cnt, off);
    if (n > 0 && fd == crash_fd) {
        uint8_t *d = malloc((size_t)n);
        assert(d);
        iov_to_buf(iov, cnt, 0, d, (size_t)n);
        crash_push((struct crash_op){ .kind = CRASH_WRITE,
                                      .off = (uint64_t)off,
                                      .len = (uint64_t)n, .data = d });
    }
    return n;
}

static int crash_fallocate(int fd, int mode, off_t off, off_t len)
{
    int r = fallocate(fd, mode, off, len);
    if (r == 0 && fd == crash_fd)
        crash_push((struct crash_op){ .kind = CRASH_FALLOC, .mode = mode,
                                      .off = (uint64_t)off,
                                      .len = (uint64_t)len });
    return r;
}

static int crash_ftruncate(int fd, off_t len)
{
    int r = ftruncate(fd, len);
    if (r == 0 && fd == crash_fd)
        crash_push((struct crash_op){ .kind = CRASH_TRUNC,
                                      .len = (uint64_t)len });
    return r;
}

static int crash_fdatasync(int fd)
{
    if (fd == crash_fd)
        crash_push((struct crash_op){ .kind = CRASH_SYNC });
    return fdatasync(fd);
}

/* Record the operations on fd (host_sys hooks; the rest pass through). */
QT_FN void crash_rec_start(int fd)
{
    host_sys.pwritev = crash_pwritev;
    host_sys.fallocate = crash_fallocate;
    host_sys.ftruncate = crash_ftruncate;
    host_sys.fdatasync = crash_fdatasync;
    crash_rec_clear();
    crash_fd = fd;
}

QT_FN void crash_rec_stop(void)
{
    crash_fd = -1;
}

/* A file in memory. */
struct crash_file {
    uint8_t *b;
    size_t size;
};

static void crash_file_resize(struct crash_file *f, size_t size)
{
    f->b = realloc(f->b, size ? size : 1);
    assert(f->b);
    if (size > f->size)
        memset(f->b + f->size, 0, size - f->size);
    f->size = size;
}

static void crash_apply(struct crash_file *f, const struct crash_op *o)
{
    switch (o->kind) {
    case CRASH_WRITE:
        if (o->off + o->len > f->size)
            crash_file_resize(f, o->off + o->len);
        memcpy(f->b + o->off, o->data, o->len);
        break;
    case CRASH_FALLOC: {
        uint64_t end = o->off + o->len;
        if (!(o->mode & FALLOC_FL_KEEP_SIZE) && end > f->size)
            crash_file_resize(f, end);
        if (o->mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
            uint64_t e = MIN(end, (uint64_t)f->size);
            if (o->off < e)
                memset(f->b + o->off, 0, e - o->off);
        }
        break;
    }
    case CRASH_TRUNC:
        crash_file_resize(f, o->len);
        break;
    case CRASH_SYNC:
        break;
    }
}

/* Every crash of the recorded operations over the file's content before
 * them (base), each judged by judge(image, what, ctx). */
QT_FN void crash_replay(const struct crash_file *base, struct qt_rng *rng,
                        void (*judge)(const struct crash_file *f,
                                      const char *what, void *ctx),
                        void *ctx)
{
    struct crash_file durable = { 0 }, work = { 0 };
    crash_file_resize(&durable, base->size);
    memcpy(durable.b, base->b, base->size);
    size_t since = 0; /* first op after the last sync */
    for (size_t k = 0; k <= crash_nops; k++) {
        for (int mode = 0; mode < 3; mode++) {
            if (mode == 1 && since == k)
                continue; /* nothing pending: same as "all" */
            crash_file_resize(&work, durable.size);
            memcpy(work.b, durable.b, durable.size);
            for (size_t i = since; i < k; i++)
                if (mode == 0 || (mode == 2 && qt_below(rng, 2)))
                    crash_apply(&work, &crash_ops[i]);
            char what[128];
            snprintf(what, sizeof(what), "crash after op %zu/%zu (%s)", k,
                     crash_nops, mode == 0 ? "all pending"
                                 : mode == 1 ? "none" : "subset");
            judge(&work, what, ctx);
        }
        if (k < crash_nops && crash_ops[k].kind == CRASH_SYNC) {
            for (size_t i = since; i <= k; i++)
                crash_apply(&durable, &crash_ops[i]);
            since = k + 1;
        }
    }
    free(durable.b);
    free(work.b);
}

#endif
