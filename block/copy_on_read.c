/* qlun — the copy-on-read filter (block/copy_on_read.h).
 *
 * Why a range lock: a qcow2 write links its cluster only once its data is
 * written, so a copy-up that saw "unallocated" may race a write in flight
 * to the same cluster and, writing the old data from below after it,
 * undo it.  Every write through the filter holds its range shared and a
 * copy-up holds its (cluster-aligned) range exclusive from the moment it
 * looks at the top's allocation until its data is in: a write either
 * finished before the copy-up looked (the top allocates it: nothing is
 * copied there) or waits until the copy-up is done (and then overwrites
 * the copied data).
 * A copy-up that fails (the top is full, an I/O error) costs the read
 * nothing: it reads through the top as if no filter were there.
 */
#include "copy_on_read.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "driver.h"
#include "image.h"
#include "range_lock.h"

/* A copy-up's unit of work, and its buffer: bounded so that a copy-up
 * holds off the initiator's writes to its range only briefly. */
#define COR_CHUNK (1024u * 1024u)
/* The unit of a copy-up where the top has no cluster size (raw). */
#define COR_DEFAULT_CLUSTER (64u * 1024u)

struct cor {
    struct image img;            /* file: the node filtered (the top) */
    struct range_lock ranges;
    struct image *base;          /* copy nothing from here down; NULL: none */
    _Atomic uint64_t read_copied, failures;
};

static struct cor *cor_of(struct image *img)
{
    return (struct cor *)img;
}

void copy_on_read_set_base(struct image *node, struct image *base)
{
    cor_of(node)->base = base;
}

void copy_on_read_stats(struct image *node, uint64_t *copied,
                        uint64_t *failures)
{
    *copied = atomic_load(&cor_of(node)->read_copied);
    *failures = atomic_load(&cor_of(node)->failures);
}

static uint64_t cluster_of(struct cor *c)
{
    uint32_t cs = image_skip_filters(c->img.file)->info.cluster_size;
    return cs ? cs : COR_DEFAULT_CLUSTER;
}

/* What a reader of [off, off+len) would find below the top (above base):
 * *kind over *n bytes; UNALLOCATED when nothing there is to be made local
 * (no layer below, past its end, at base, or unallocated down to base). */
static int status_below(struct cor *c, uint64_t off, uint64_t len,
                        enum image_extent_kind *kind, uint64_t *n)
{
    struct image *below = image_backing_child(c->img.file);
    if (!below || below == c->base || off >= below->size) {
        *kind = IMAGE_EXTENT_UNALLOCATED;
        *n = len;
        return 0;
    }
    return image_block_status_above(below, c->base, off,
                                    MIN(len, below->size - off), kind, n,
                                    NULL);
}

/* Make [off, off+n) local in the top: it reads kind from below. */
static int make_local(struct cor *c, enum image_extent_kind kind,
                      uint64_t off, uint64_t n, void *buf)
{
    struct image *top = c->img.file;
    if (kind == IMAGE_EXTENT_ZERO)
        return image_zero(top, off, n, 0);
    int ret = image_read(top, buf, n, off); /* through top: from below */
    return ret < 0 ? ret : image_write(top, buf, n, off, 0);
}

/* One copy-up of [off, off+len) (len <= COR_CHUNK), under the exclusive
 * lock: only where the top still allocates nothing. */
static int copy_chunk(struct cor *c, uint64_t off, uint64_t len, void *buf,
                      uint64_t *copied)
{
    struct range_lock_holder h;
    range_lock(&c->ranges, &h, off, len, true);
    int ret = 0;
    for (uint64_t pos = off, end = off + len; pos < end && ret == 0;) {
        enum image_extent_kind kind;
        uint64_t n;
        ret = image_block_status(c->img.file, pos, end - pos, &kind, &n);
        if (ret == 0 && kind == IMAGE_EXTENT_UNALLOCATED) {
            ret = status_below(c, pos, n, &kind, &n);
            if (ret == 0 && kind != IMAGE_EXTENT_UNALLOCATED) {
                ret = make_local(c, kind, pos, n, buf);
                if (ret == 0)
                    *copied += n;
            }
        }
        pos += n;
    }
    range_unlock(&c->ranges, &h);
    return ret;
}

/* Copy up what [off, off+len) reads from below, in whole clusters. */
static int copy_range(struct cor *c, uint64_t off, uint64_t len,
                      uint64_t *copied)
{
    uint64_t cluster = cluster_of(c), size = c->img.size;
    uint64_t pos = off / cluster * cluster;
    uint64_t end = MIN((off + len + cluster - 1) / cluster * cluster, size);
    uint64_t chunk = MAX(cluster, COR_CHUNK / cluster * cluster);
    size_t align = MAX(image_skip_filters(c->img.file)->info.mem_alignment,
                       4096u);
    void *buf = NULL;
    int ret = 0;
    while (pos < end && ret == 0) {
        /* Unlocked look first: most of a streamed or re-read image is
         * already local, and the exclusive lock is only for copying. */
        enum image_extent_kind kind;
        uint64_t n;
        ret = image_block_status(c->img.file, pos, MIN(end - pos, chunk),
                                 &kind, &n);
        if (ret == 0 && kind == IMAGE_EXTENT_UNALLOCATED) {
            if (!buf && posix_memalign(&buf, align, chunk) != 0)
                return -ENOMEM;
            ret = copy_chunk(c, pos, n, buf, copied);
        }
        pos += n;
    }
    free(buf);
    return ret;
}

int copy_on_read_copy_range(struct image *node, uint64_t off, uint64_t len,
                            uint64_t *copied)
{
    uint64_t n = 0;
    int ret = len ? copy_range(cor_of(node), off, len, &n) : 0;
    if (copied)
        *copied = n;
    return ret;
}

static int cor_readv(struct image *img, const struct iovec *iov, int iovcnt,
                     uint64_t off)
{
    struct cor *c = cor_of(img);
    uint64_t copied = 0;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len && !img->info.read_only) {
        int ret = copy_range(c, off, len, &copied);
        atomic_fetch_add(&c->read_copied, copied);
        if (ret < 0 && atomic_fetch_add(&c->failures, 1) == 0)
            fprintf(stderr, "qlun: copy-on-read %s: copy-up at %" PRIu64
                    " failed: %s (reads go on from below; further failures "
                    "are only counted)\n", img->filename, off,
                    strerror(-ret));
    }
    return image_readv(img->file, iov, iovcnt, off);
}

static int cor_writev(struct image *img, const struct iovec *iov, int iovcnt,
                      uint64_t off, unsigned flags)
{
    struct cor *c = cor_of(img);
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (!len)
        return image_writev(img->file, iov, iovcnt, off, flags);
    struct range_lock_holder h;
    range_lock(&c->ranges, &h, off, len, false);
    int ret = image_writev(img->file, iov, iovcnt, off, flags);
    range_unlock(&c->ranges, &h);
    return ret;
}

static int cor_zero(struct image *img, uint64_t off, uint64_t len,
                    unsigned flags)
{
    struct range_lock_holder h;
    range_lock(&cor_of(img)->ranges, &h, off, len, false);
    int ret = image_zero(img->file, off, len, flags);
    range_unlock(&cor_of(img)->ranges, &h);
    return ret;
}

static int cor_discard(struct image *img, uint64_t off, uint64_t len)
{
    struct range_lock_holder h;
    range_lock(&cor_of(img)->ranges, &h, off, len, false);
    int ret = image_discard(img->file, off, len);
    range_unlock(&cor_of(img)->ranges, &h);
    return ret;
}

static int cor_open(struct image *img, const struct image_open_opts *opts,
                    char *err, size_t errlen)
{
    (void)opts, (void)err, (void)errlen;
    range_lock_init(&cor_of(img)->ranges);
    img->info.format = copy_on_read_driver.name;
    return 0;
}

static int cor_close(struct image *img)
{
    range_lock_destroy(&cor_of(img)->ranges);
    return 0;
}

static const struct image_ops cor_ops = {
    .name = "copy-on-read",
    .readv = cor_readv,
    .writev = cor_writev,
    .zero = cor_zero,
    .discard = cor_discard,
    .close = cor_close,
    /* flush, block_status, allocated_bytes: the top's. */
};

const struct block_driver copy_on_read_driver = {
    .name = "copy-on-read",
    .instance_size = sizeof(struct cor),
    .open = cor_open,
    .ops = &cor_ops,
    .is_filter = true,
};
