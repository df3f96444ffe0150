/* qlun — qcow2: making a new, empty image (the overlay of a live external
 * snapshot).
 *
 * The layout is the smallest valid version-3 image: the header cluster
 * (header, backing format extension, backing file name), the refcount
 * table, the refcount blocks covering these clusters, and an all-zero L1
 * table long enough for the virtual size.  16-bit refcounts, no lazy
 * refcounts, no extended L2: what `qemu-img create -f qcow2` makes.
 *
 * The file is created with O_EXCL, so an existing file is never touched,
 * and it is removed again if anything fails before it is complete and
 * durable.  Only the metadata clusters are written; the L1 table is the
 * zeros of a file extended with ftruncate.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "qcow2-internal.h"

#define CREATE_HEADER_LENGTH 112u /* v3 header with the compression type */
#define CREATE_REFCOUNT_ORDER 4u  /* 16-bit refcounts */

struct layout {
    uint64_t cs;
    uint64_t l1_entries, l1_clusters;
    uint64_t rt_clusters, rb_clusters;
    uint64_t clusters;              /* every metadata cluster */
};

/* Refcount blocks must count themselves and the table that points at
 * them: grow both until they cover everything. */
static void plan(struct layout *l, uint64_t size)
{
    const uint64_t cs = l->cs;
    const uint64_t per_l2 = cs * (cs / 8);       /* guest bytes per L2 */
    const uint64_t per_rb = cs * 8 / (1u << CREATE_REFCOUNT_ORDER);
    l->l1_entries = DIV_ROUND_UP(size, per_l2);
    l->l1_clusters = DIV_ROUND_UP(l->l1_entries * 8, cs);
    l->rt_clusters = 1;
    l->rb_clusters = 1;
    for (;;) {
        l->clusters = 1 + l->rt_clusters + l->rb_clusters + l->l1_clusters;
        uint64_t rb = DIV_ROUND_UP(l->clusters, per_rb);
        uint64_t rt = DIV_ROUND_UP(rb * 8, cs);
        if (rb == l->rb_clusters && rt == l->rt_clusters)
            return;
        l->rb_clusters = rb;
        l->rt_clusters = rt;
    }
}

/* Header, backing format extension, end of extensions, backing name. */
static int fill_header(uint8_t *c0, const struct layout *l,
                       const struct image_create_opts *o, char *err,
                       size_t errlen)
{
    const uint64_t cs = l->cs;
    size_t name_len = o->backing_name ? strlen(o->backing_name) : 0;
    size_t fmt_len = o->backing_format ? strlen(o->backing_format) : 0;
    size_t pos = CREATE_HEADER_LENGTH;
    size_t need = pos + (fmt_len ? 8 + ALIGN_UP(fmt_len, 8) : 0) + 8 +
                  name_len;
    if (name_len > MAX_BACKING_NAME || need > cs) {
        snprintf(err, errlen, "%s: the backing file name (%zu bytes) does "
                 "not fit in the header cluster of %" PRIu64 " bytes",
                 o->path, name_len, cs);
        return -ENAMETOOLONG;
    }
    put_be32(c0, QCOW2_MAGIC);
    put_be32(c0 + 4, 3);
    put_be32(c0 + HDR_CLUSTER_BITS, (uint32_t)__builtin_ctzll(cs));
    put_be64(c0 + HDR_SIZE, o->size);
    put_be32(c0 + HDR_L1_SIZE, (uint32_t)l->l1_entries);
    put_be64(c0 + HDR_L1_OFFSET,
             (1 + l->rt_clusters + l->rb_clusters) * cs);
    put_be64(c0 + HDR_REFTABLE_OFFSET, cs);
    put_be32(c0 + HDR_REFTABLE_CLUSTERS, (uint32_t)l->rt_clusters);
    put_be32(c0 + HDR_REFCOUNT_ORDER, CREATE_REFCOUNT_ORDER);
    put_be32(c0 + HDR_HEADER_LENGTH, CREATE_HEADER_LENGTH);
    if (fmt_len) {
        put_be32(c0 + pos, EXT_BACKING_FMT);
        put_be32(c0 + pos + 4, (uint32_t)fmt_len);
        memcpy(c0 + pos + 8, o->backing_format, fmt_len);
        pos += 8 + ALIGN_UP(fmt_len, 8);
    }
    pos += 8; /* EXT_END: type 0, length 0 */
    if (name_len) {
        put_be64(c0 + HDR_BACKING_OFFSET, pos);
        put_be32(c0 + HDR_BACKING_SIZE, (uint32_t)name_len);
        memcpy(c0 + pos, o->backing_name, name_len);
    }
    return 0;
}

/* Reftable (cluster 1 on) and refblocks (after it): every metadata
 * cluster has refcount 1. */
static void fill_refcounts(uint8_t *meta, const struct layout *l)
{
    const uint64_t cs = l->cs;
    uint8_t *rt = meta + cs;
    uint8_t *rb = rt + l->rt_clusters * cs;
    for (uint64_t i = 0; i < l->rb_clusters; i++)
        put_be64(rt + i * 8, (1 + l->rt_clusters + i) * cs);
    for (uint64_t c = 0; c < l->clusters; c++)
        put_be16(rb + c * 2, 1);
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (size_t)n;
    }
    return 0;
}

/* The new file and its directory entry durable: a snapshot that
 * switched to it must find it after a crash. */
static int sync_file_and_dir(int fd, const char *path)
{
    if (fsync(fd) < 0)
        return -errno;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int ret = fsync(dfd) < 0 ? -errno : 0;
    close(dfd);
    return ret;
}

static int write_image(int fd, const struct image_create_opts *o,
                       const struct layout *l, char *err, size_t errlen)
{
    const uint64_t cs = l->cs;
    size_t meta_len = (size_t)((1 + l->rt_clusters + l->rb_clusters) * cs);
    uint8_t *meta = calloc(1, meta_len);
    if (!meta) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int ret = fill_header(meta, l, o, err, errlen);
    if (ret == 0) {
        fill_refcounts(meta, l);
        ret = write_all(fd, meta, meta_len);
        if (ret == 0 && ftruncate(fd, (off_t)(l->clusters * cs)) < 0)
            ret = -errno;
        if (ret == 0)
            ret = sync_file_and_dir(fd, o->path);
        if (ret < 0)
            snprintf(err, errlen, "cannot write %s: %s", o->path,
                     strerror(-ret));
    }
    free(meta);
    return ret;
}

int qcow2_create(const struct image_create_opts *o, char *err, size_t errlen)
{
    struct layout l = { .cs = o->cluster_size ? o->cluster_size : 65536 };
    if (l.cs < 512 || l.cs > (2u << 20) || !is_power_of_2(l.cs)) {
        snprintf(err, errlen, "cluster size %" PRIu64 " is not a power of "
                 "two in 512..2M", l.cs);
        return -EINVAL;
    }
    if (o->size == 0 || o->size % 512) {
        snprintf(err, errlen, "virtual size %" PRIu64 " is not a positive "
                 "multiple of 512", o->size);
        return -EINVAL;
    }
    plan(&l, o->size);
    if (l.l1_entries * 8 > MAX_L1_BYTES) {
        snprintf(err, errlen, "virtual size %" PRIu64 " needs an L1 table "
                 "larger than %u bytes with %" PRIu64 "-byte clusters",
                 o->size, MAX_L1_BYTES, l.cs);
        return -EFBIG;
    }
    int fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", o->path, strerror(e));
        return -e;
    }
    int ret = write_image(fd, o, &l, err, errlen);
    if (close(fd) < 0 && ret == 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot write %s: %s", o->path, strerror(-ret));
    }
    if (ret < 0)
        unlink(o->path);
    return ret;
}
