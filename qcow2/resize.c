/* qlun — qcow2: changing the virtual size.
 *
 * Growing may need a longer L1 table: an image whose L1 cannot map its
 * whole virtual size is refused at open, by QEMU as by header.c, so the
 * L1 must cover the new size before the header says it.  The order, so
 * that a crash anywhere leaves a valid image of the old or the new size
 * (clusters may leak, nothing else):
 *   1. claim contiguous clusters for the new L1 (refcount 1, in the cache),
 *      write the old entries and zeros there;
 *   2. refcounts on disk (unless lazy: then the dirty bit covers them),
 *      flush;
 *   3. l1_size and l1_table_offset in ONE 12-byte header write (they are
 *      adjacent, at 36 and 40), flush: the old size with a longer L1 is a
 *      valid image;
 *   4. only then give the old L1's clusters back (nothing on disk points
 *      to them any more);
 *   5. what would show past the old end (a longer backing file, the tail
 *      of a partial last cluster) made to read zeros, flushed;
 *   6. the size (offset 24), flush.
 * The new L1 is exactly as long as the new size needs, as qemu-img resize
 * makes it.
 *
 * Shrinking is refused unless forced; forced, it is refused if any guest
 * cluster reaching past the new end holds a host cluster (so no data is
 * ever dropped by it), and with internal snapshots it is refused always.
 * A forced shrink changes the size field only and leaves the L1 as it is.
 * QEMU resizes no v2 image with snapshots (it has no per-snapshot size),
 * and neither do we.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

/* L1 entries needed to map size bytes. */
static uint64_t l1_entries_for(const struct qcow2 *q, uint64_t size)
{
    unsigned shift = q->cluster_bits + q->l2_bits;
    return DIV_ROUND_UP(size, 1ull << shift);
}

struct run {
    uint64_t off, n;
};

/* Claim n contiguous free host clusters.  The allocator returns runs that
 * may stop short (a used cluster, a new refcount block); runs that cannot
 * be extended are kept claimed while searching on, so the search moves
 * past them, and given back at the end.  Lock held. */
static int alloc_contiguous(struct qcow2 *q, uint64_t n, uint64_t *off)
{
    struct run cur = { 0, 0 }, *spare = NULL;
    size_t nspare = 0;
    int ret = 0;
    while (cur.n < n) {
        uint64_t o;
        int64_t got = qcow2_alloc_clusters(q, n - cur.n, &o);
        if (got < 0) {
            ret = (int)got;
            break;
        }
        if (cur.n && o == cur.off + (cur.n << q->cluster_bits)) {
            cur.n += (uint64_t)got;
            continue;
        }
        if (cur.n) {
            struct run *s = realloc(spare, (nspare + 1) * sizeof(*s));
            if (!s) {
                qcow2_free_now(q, o, (uint64_t)got);
                ret = -ENOMEM;
                break;
            }
            spare = s;
            spare[nspare++] = cur;
        }
        cur = (struct run){ o, (uint64_t)got };
    }
    /* Nothing on disk references the spares (or a failed run). */
    for (size_t i = 0; i < nspare; i++)
        qcow2_free_now(q, spare[i].off, spare[i].n);
    free(spare);
    if (ret < 0) {
        if (cur.n)
            qcow2_free_now(q, cur.off, cur.n);
        return ret;
    }
    *off = cur.off;
    return 0;
}

/* The 12 bytes at HDR_L1_SIZE: l1_size then l1_table_offset. */
static int write_l1_header(struct qcow2 *q, uint32_t entries, uint64_t off)
{
    uint8_t b[12];
    put_be32(b, entries);
    put_be64(b + 4, off);
    return qcow2_write_header(q, HDR_L1_SIZE, b, sizeof(b));
}

/* Write and flush a new L1 table of `entries` entries at *off: the
 * current entries, then zeros.  Refcounts durable too.  Lock held. */
static int write_new_l1(struct qcow2 *q, uint32_t entries, uint64_t *off)
{
    const uint64_t cs = q->cluster_size;
    uint64_t nclusters = DIV_ROUND_UP((uint64_t)entries * 8, cs);
    uint8_t *buf = calloc(nclusters, cs);
    if (!buf)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->l1_size; i++)
        put_be64(buf + 8ull * i, q->l1[i]);
    int ret = alloc_contiguous(q, nclusters, off);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    ret = file_pwrite(q->img.file, buf, nclusters * cs, *off);
    free(buf);
    if (ret == 0 && !q->lazy)
        ret = cache_writeback(q->rb_cache, false);
    if (ret == 0)
        ret = file_flush(q->img.file);
    if (ret < 0)
        qcow2_free_now(q, *off, nclusters);
    return ret;
}

/* Replace the L1 table by one of `entries` entries.  Lock held. */
static int grow_l1(struct qcow2 *q, uint32_t entries)
{
    const uint64_t cs = q->cluster_size;
    uint64_t *mem = calloc(entries, sizeof(*mem));
    if (!mem)
        return -ENOMEM;
    memcpy(mem, q->l1, (size_t)q->l1_size * 8);
    uint64_t off;
    int ret = write_new_l1(q, entries, &off);
    if (ret < 0) {
        free(mem);
        return ret;
    }
    ret = write_l1_header(q, entries, off);
    if (ret < 0) {
        /* The header may or may not point to the new table now: put the
         * old one back, or stop writing to an image we cannot describe. */
        if (write_l1_header(q, q->l1_size, q->l1_offset) < 0)
            ret = qcow2_corrupt(q, "the L1 table switch failed half way "
                                "and the old one could not be restored");
        else
            qcow2_free_now(q, off, DIV_ROUND_UP((uint64_t)entries * 8, cs));
        free(mem);
        return ret;
    }
    uint64_t old_off = q->l1_offset, old_bytes = (uint64_t)q->l1_size * 8;
    free(q->l1);
    q->l1 = mem;
    q->l1_size = entries;
    q->l1_offset = off;
    /* The header pointing to the new table is durable: no one refers to
     * the old one any more. */
    if (old_bytes)
        qcow2_free_now(q, old_off, DIV_ROUND_UP(old_bytes, cs));
    return 0;
}

/* First guest byte at or past `from` (a cluster boundary) whose cluster
 * holds a host cluster (data, compressed, or a zero cluster that kept
 * its host cluster); UINT64_MAX if none.  Lock held; the caller has
 * drained all I/O, so no request changes mappings meanwhile. */
static int first_allocated(struct qcow2 *q, uint64_t from, uint64_t *found)
{
    *found = UINT64_MAX;
    uint64_t per_l2 = 1ull << q->l2_bits;
    uint64_t end_gc = DIV_ROUND_UP(q->img.size, q->cluster_size);
    for (uint64_t gc = from >> q->cluster_bits; gc < end_gc;) {
        uint32_t l1i = (uint32_t)(gc >> q->l2_bits);
        uint64_t l2off;
        int ret = qcow2_check_l1e(q, l1i, &l2off);
        if (ret < 0)
            return ret;
        uint64_t stop = MIN(end_gc, ((uint64_t)l1i + 1) * per_l2);
        if (!l2off) {
            gc = stop;
            continue;
        }
        void *t;
        ret = cache_get(q->l2_cache, l2off, true, &t);
        if (ret < 0)
            return ret;
        for (; gc < stop; gc++) {
            const uint8_t *p = (const uint8_t *)t +
                               (gc & (per_l2 - 1)) * q->l2_entry_size;
            uint64_t e = get_be64(p);
            if ((e & OFLAG_COMPRESSED) || (e & L2E_OFFSET_MASK)) {
                *found = gc << q->cluster_bits;
                break;
            }
        }
        cache_put(q->l2_cache, t);
        if (*found != UINT64_MAX)
            return 0;
    }
    return 0;
}

/* May the image go from its size to new_size?  Lock held. */
static int check_resize(struct qcow2 *q, uint64_t new_size, bool force,
                        char *err, size_t errlen)
{
    uint64_t old = q->img.size;
    if (q->nb_snapshots && q->version < 3) {
        snprintf(err, errlen, "a v2 image with internal snapshots cannot be "
                 "resized (snapshots keep no size of their own)");
        return -ENOTSUP;
    }
    if (new_size > (1ull << 62) ||
        l1_entries_for(q, new_size) * 8 > MAX_L1_BYTES) {
        snprintf(err, errlen, "new size %" PRIu64 " is too large for a "
                 "qcow2 image with %" PRIu64 "-byte clusters", new_size,
                 q->cluster_size);
        return -EFBIG;
    }
    if (new_size > old)
        return 0;
    if (!force) {
        snprintf(err, errlen, "shrinking from %" PRIu64 " to %" PRIu64
                 " bytes refused (force it to shrink over unallocated "
                 "clusters only)", old, new_size);
        return -EINVAL;
    }
    if (q->nb_snapshots) {
        snprintf(err, errlen, "shrinking an image with internal snapshots "
                 "is refused, even forced");
        return -EINVAL;
    }
    uint64_t at;
    int ret = first_allocated(q, ALIGN_DOWN(new_size, q->cluster_size), &at);
    if (ret < 0) {
        snprintf(err, errlen, "cannot read the L2 tables: %s", strerror(-ret));
        return ret;
    }
    if (at != UINT64_MAX) {
        snprintf(err, errlen, "shrinking to %" PRIu64 " bytes refused even "
                 "forced: guest offset %" PRIu64 " (past the new end, or in "
                 "its last cluster) holds data", new_size, at);
        return -EINVAL;
    }
    return 0;
}


/* Check, then give the L1 the length the new size needs (durable).
 * Lock held. */
static int prepare_l1(struct qcow2 *q, uint64_t new_size, bool force,
                      char *err, size_t errlen)
{
    int ret = check_resize(q, new_size, force, err, errlen);
    if (ret < 0)
        return ret;
    ret = qcow2_prepare_write(q);
    uint64_t need = l1_entries_for(q, new_size);
    if (ret == 0 && need > q->l1_size)
        ret = grow_l1(q, (uint32_t)need);
    if (ret < 0)
        snprintf(err, errlen, "cannot grow the L1 table to %" PRIu64
                 " entries: %s", need, strerror(-ret));
    return ret;
}

/* Growing from old: what lies past the old end must read as zeros.  The
 * backing file may be longer than the old size, and the old last cluster,
 * if partial, may hold bytes past the old end: zero both, durably.  Done
 * before the new size is on disk, so that no crash shows those bytes;
 * q->img.size is already the new size in memory (image_zero checks
 * against it), which no one else reads meanwhile: the caller drained the
 * image's I/O. */
static int zero_exposed(struct qcow2 *q, uint64_t old)
{
    uint64_t end = ALIGN_UP(old, q->cluster_size);
    if (q->img.backing && q->img.backing->size > old)
        end = MAX(end, q->img.backing->size);
    end = MIN(end, q->img.size);
    if (end <= old)
        return 0;
    int ret = image_zero(&q->img, old, end - old, IMAGE_MAY_UNMAP);
    if (ret == 0)
        ret = image_flush(&q->img);
    return ret;
}

int qcow2_resize(struct image *img, uint64_t new_size, bool force,
                 char *err, size_t errlen)
{
    struct qcow2 *q = to_qcow2(img);
    /* The caller has drained the image's I/O, but the lock keeps the
     * rules of qcow2-internal.h true whoever else looks. */
    pthread_mutex_lock(&q->lock);
    const uint64_t old = q->img.size;
    int ret = prepare_l1(q, new_size, force, err, errlen);
    if (ret == 0 && new_size > old)
        q->img.size = new_size;
    pthread_mutex_unlock(&q->lock);
    if (ret < 0)
        return ret;
    if (new_size > old) {
        ret = zero_exposed(q, old);
        if (ret < 0)
            snprintf(err, errlen, "cannot zero what lay past the old end: "
                     "%s", strerror(-ret));
    }
    pthread_mutex_lock(&q->lock);
    if (ret == 0) {
        ret = qcow2_write_header_u64(q, HDR_SIZE, new_size);
        if (ret < 0)
            snprintf(err, errlen, "cannot write the new size: %s",
                     strerror(-ret));
    }
    if (ret < 0) {
        q->img.size = old;
    } else {
        if (new_size < old)
            snprintf(err, errlen, "shrunk from %" PRIu64 " to %" PRIu64
                     " bytes (forced); nothing past the new end was "
                     "allocated", old, new_size);
        q->img.size = new_size;
    }
    pthread_mutex_unlock(&q->lock);
    return ret;
}
