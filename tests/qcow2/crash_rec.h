/* qlun tests — recording the host writes of one file, and replaying every
 * crash of it (shared by the crash tests).
 *
 * crash_rec_start(fd) makes host_sys (block/host.h) record each pwritev,
 * fallocate, ftruncate and fdatasync on fd until crash_rec_stop()
 * (crash_rec_start_paths: on some files, crash_rec_start_all: on every
 * fd).  A recorded fdatasync is not issued: durability is what the replay
 * simulates, and the real one only costs time.
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
    int file;          /* which recorded file (crash_rec_start_paths) */
    int fd;            /* the fd it was issued on */
    int mode;
    uint64_t off, len;
    uint8_t *data;
};

static struct crash_op *crash_ops;
static size_t crash_nops, crash_cap;
static int crash_fd = -1; /* the file recorded; -1: none */
static bool crash_all;    /* or every fd, all as file 0 */
/* Or the files recorded by path (whatever fd opens them: a node reopened
 * in place gets a new one). */
#define CRASH_MAX_FILES 4
static char crash_paths[CRASH_MAX_FILES][4096];
static int crash_npaths;

/* The recorded file fd writes to: its index, or -1. */
static int crash_file_of(int fd)
{
    if (crash_all)
        return 0;
    if (crash_fd >= 0)
        return fd == crash_fd ? 0 : -1;
    if (crash_npaths == 0)
        return -1;
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return -1;
    path[n] = 0;
    for (int i = 0; i < crash_npaths; i++)
        if (strcmp(path, crash_paths[i]) == 0)
            return i;
    return -1;
}

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
    int file = n > 0 ? crash_file_of(fd) : -1;
    if (file >= 0) {
        uint8_t *d = malloc((size_t)n);
        assert(d);
        iov_to_buf(iov, cnt, 0, d, (size_t)n);
        crash_push((struct crash_op){ .kind = CRASH_WRITE, .file = file,
                                      .fd = fd, .off = (uint64_t)off,
                                      .len = (uint64_t)n, .data = d });
    }
    return n;
}

static int crash_fallocate(int fd, int mode, off_t off, off_t len)
{
    int r = fallocate(fd, mode, off, len);
    int file = r == 0 ? crash_file_of(fd) : -1;
    if (file >= 0)
        crash_push((struct crash_op){ .kind = CRASH_FALLOC, .mode = mode,
                                      .file = file, .fd = fd,
                                      .off = (uint64_t)off,
                                      .len = (uint64_t)len });
    return r;
}

static int crash_ftruncate(int fd, off_t len)
{
    int r = ftruncate(fd, len);
    int file = r == 0 ? crash_file_of(fd) : -1;
    if (file >= 0)
        crash_push((struct crash_op){ .kind = CRASH_TRUNC, .file = file,
                                      .fd = fd, .len = (uint64_t)len });
    return r;
}

static int crash_fdatasync(int fd)
{
    int file = crash_file_of(fd);
    if (file < 0)
        return fdatasync(fd);
    crash_push((struct crash_op){ .kind = CRASH_SYNC, .file = file,
                                  .fd = fd });
    return 0;
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
    crash_all = false;
}

/* Record the operations on every fd (op.file 0; op.fd tells them apart). */
QT_FN void crash_rec_start_all(void)
{
    crash_rec_start(-1);
    crash_all = true;
}

/* Record the operations on the files at paths (realpaths, n <=
 * CRASH_MAX_FILES), through any fd; op.file is the index in paths. */
QT_FN void crash_rec_start_paths(const char *const *paths, int n)
{
    crash_rec_start(-1);
    assert(n <= CRASH_MAX_FILES);
    for (int i = 0; i < n; i++)
        snprintf(crash_paths[i], sizeof(crash_paths[i]), "%s", paths[i]);
    crash_npaths = n;
}

QT_FN void crash_rec_stop(void)
{
    crash_fd = -1;
    crash_all = false;
    crash_npaths = 0;
}

/* A file in memory (b may also come from malloc with cap 0). */
struct crash_file {
    uint8_t *b;
    size_t size, cap;
};

/* Grows the buffer geometrically: a replay extends and copies files of
 * megabytes thousands of times, and under ASan every realloc copies. */
static void crash_file_resize(struct crash_file *f, size_t size)
{
    if (size > f->cap || !f->b) {
        size_t cap = MAX(MAX(size, f->cap * 2), (size_t)1);
        f->b = realloc(f->b, cap);
        assert(f->b);
        f->cap = cap;
    }
    if (size > f->size)
        memset(f->b + f->size, 0, size - f->size);
    f->size = size;
}

/* Apply bytes [from, to) of o: a write torn at those bounds (relative to
 * its start); the other kinds are applied whole. */
static void crash_apply_part(struct crash_file *f, const struct crash_op *o,
                             uint64_t from, uint64_t to)
{
    switch (o->kind) {
    case CRASH_WRITE:
        if (o->off + to > f->size)
            crash_file_resize(f, o->off + to);
        memcpy(f->b + o->off + from, o->data + from, to - from);
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

static void crash_apply(struct crash_file *f, const struct crash_op *o)
{
    crash_apply_part(f, o, 0, o->len);
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

/* The same over nfiles files recorded by crash_rec_start_paths: a crash
 * after each operation gives each file what was durable at its own last
 * fdatasync plus {all, none, a random subset} of its operations since;
 * judge gets the nfiles images. */
QT_FN void crash_replay_files(const struct crash_file *base, int nfiles,
                              struct qt_rng *rng,
                              void (*judge)(const struct crash_file *files,
                                            const char *what, void *ctx),
                              void *ctx)
{
    struct crash_file durable[CRASH_MAX_FILES] = { 0 };
    struct crash_file work[CRASH_MAX_FILES] = { 0 };
    size_t since[CRASH_MAX_FILES] = { 0 };
    for (int f = 0; f < nfiles; f++) {
        crash_file_resize(&durable[f], base[f].size);
        memcpy(durable[f].b, base[f].b, base[f].size);
    }
    for (size_t k = 0; k <= crash_nops; k++) {
        for (int mode = 0; mode < 3; mode++) {
            for (int f = 0; f < nfiles; f++) {
                crash_file_resize(&work[f], durable[f].size);
                memcpy(work[f].b, durable[f].b, durable[f].size);
                for (size_t i = since[f]; i < k; i++)
                    if (crash_ops[i].file == f &&
                        (mode == 0 || (mode == 2 && qt_below(rng, 2))))
                        crash_apply(&work[f], &crash_ops[i]);
            }
            char what[128];
            snprintf(what, sizeof(what), "crash after op %zu/%zu (%s)", k,
                     crash_nops, mode == 0 ? "all pending"
                                 : mode == 1 ? "none" : "subset");
            judge(work, what, ctx);
        }
        if (k < crash_nops && crash_ops[k].kind == CRASH_SYNC) {
            int f = crash_ops[k].file;
            for (size_t i = since[f]; i <= k; i++)
                if (crash_ops[i].file == f)
                    crash_apply(&durable[f], &crash_ops[i]);
            since[f] = k + 1;
        }
    }
    for (int f = 0; f < nfiles; f++) {
        free(durable[f].b);
        free(work[f].b);
    }
}

#endif
