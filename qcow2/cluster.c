/* qlun — qcow2: the guest → host mapping (L1 and L2 tables).
 *
 * Every entry is validated when it is used: reserved bits, alignment and
 * offsets past the end of the host are corruption, and the image is marked
 * so (qcow2_corrupt) rather than trusted.
 *
 * L2 tables shared with internal snapshots (L1 entry without COPIED) are
 * copied before their first change: new table written and flushed, then
 * the L1 entry, then (deferred) the old table's refcount decrement.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

int qcow2_decode_l2e(struct qcow2 *q, uint64_t entry, uint64_t bitmap,
                     uint64_t guest_off, struct l2e *e)
{
    memset(e, 0, sizeof(*e));
    e->entry = entry;
    e->bitmap = bitmap;
    e->copied = entry & OFLAG_COPIED;

    if (entry & OFLAG_COMPRESSED) {
        uint64_t off, len;
        e->compressed = true;
        qcow2_compressed_range(q, entry, &off, &len);
        if (e->copied || bitmap != 0 ||
            (entry & q->coffset_mask) > L2E_OFFSET_MASK ||
            (entry & q->coffset_mask) < q->cluster_size ||
            off >= q->host_end)
            return qcow2_corrupt(q, "compressed L2 entry for guest offset %"
                                 PRIu64 " is invalid (0x%" PRIx64 " 0x%"
                                 PRIx64 ")", guest_off, entry, bitmap);
        return 0;
    }

    uint64_t reserved = L2E_STD_RESERVED;
    if (q->extended_l2)
        reserved |= OFLAG_ZERO; /* bit 0 is not the zero flag there */
    uint64_t host = entry & L2E_OFFSET_MASK;
    if ((entry & reserved) || (host & (q->cluster_size - 1)) ||
        (host == 0 && e->copied) || (host != 0 && host >= q->host_end))
        return qcow2_corrupt(q, "L2 entry for guest offset %" PRIu64
                             " is invalid (0x%" PRIx64 ")", guest_off, entry);
    e->host = host;

    if (q->extended_l2) {
        e->alloc = (uint32_t)bitmap;
        e->zero = (uint32_t)(bitmap >> 32);
        if ((e->alloc & e->zero) || (host == 0 && e->alloc))
            return qcow2_corrupt(q, "subcluster bitmap for guest offset %"
                                 PRIu64 " is invalid (0x%" PRIx64 ")",
                                 guest_off, bitmap);
    } else if (entry & OFLAG_ZERO) {
        e->zero = 1;
    } else if (host) {
        e->alloc = 1;
    }
    return 0;
}

enum sc_kind qcow2_sc_kind(const struct qcow2 *q, const struct l2e *e,
                           unsigned sc)
{
    assert(sc < q->subclusters);
    if (e->compressed)
        return SC_COMPRESSED;
    if (e->alloc & (1u << sc))
        return SC_DATA;
    if (e->zero & (1u << sc))
        return SC_ZERO;
    return SC_UNALLOC;
}

int qcow2_check_l1e(struct qcow2 *q, uint32_t l1_index, uint64_t *l2_off)
{
    assert(l1_index < q->l1_size);
    uint64_t e = q->l1[l1_index];
    uint64_t off = e & L1E_OFFSET_MASK;
    *l2_off = 0;
    if ((e & L1E_RESERVED) || (off & (q->cluster_size - 1)) ||
        (off != 0 && off >= q->host_end) || (off == 0 && (e & OFLAG_COPIED)))
        return qcow2_corrupt(q, "L1 entry %u is invalid (0x%" PRIx64 ")",
                             l1_index, e);
    *l2_off = off;
    return 0;
}

static void split(const struct qcow2 *q, uint64_t gc, uint32_t *l1i,
                  uint64_t *l2i)
{
    *l1i = (uint32_t)(gc >> q->l2_bits);
    *l2i = gc & ((1ull << q->l2_bits) - 1);
}

int qcow2_get_l2e(struct qcow2 *q, uint64_t gc, struct l2e *e)
{
    uint32_t l1i;
    uint64_t l2i, l2off;
    void *t;
    split(q, gc, &l1i, &l2i);
    int ret;
    /* First without holding the lock over a table read; if the tables
     * changed meanwhile, again from the L1 entry, holding it. */
    for (bool unlocked = true;; unlocked = false) {
        ret = qcow2_check_l1e(q, l1i, &l2off);
        if (ret < 0)
            return ret;
        if (l2off == 0)
            return qcow2_decode_l2e(q, 0, 0, gc << q->cluster_bits, e);
        ret = unlocked ? cache_get_unlocked(q->l2_cache, l2off, &t)
                       : cache_get(q->l2_cache, l2off, true, &t);
        if (ret != -EAGAIN)
            break;
    }
    if (ret < 0)
        return ret;
    const uint8_t *p = (uint8_t *)t + l2i * q->l2_entry_size;
    uint64_t entry = get_be64(p);
    uint64_t bitmap = q->extended_l2 ? get_be64(p + 8) : 0;
    cache_put(q->l2_cache, t);
    return qcow2_decode_l2e(q, entry, bitmap, gc << q->cluster_bits, e);
}

/* Write L1 entry l1i (in memory and on disk). */
static int write_l1e(struct qcow2 *q, uint32_t l1i, uint64_t v)
{
    uint8_t b[8];
    put_be64(b, v);
    int ret = file_pwrite(q->img.file, b, 8, q->l1_offset + 8ull * l1i);
    if (ret == 0)
        q->l1[l1i] = v;
    return ret;
}

/* Give guest cluster gc's L1 entry an L2 table we own (refcount 1),
 * allocating a new one or copying a shared one.  Returns its offset. */
static int l2_table_for_write(struct qcow2 *q, uint32_t l1i, uint64_t *out)
{
    const uint64_t cs = q->cluster_size;
    uint64_t old;
    int ret = qcow2_check_l1e(q, l1i, &old);
    if (ret < 0)
        return ret;
    if (old && (q->l1[l1i] & OFLAG_COPIED)) {
        *out = old;
        return 0;
    }

    uint64_t new_off;
    int64_t n = qcow2_alloc_clusters(q, 1, &new_off);
    if (n < 0)
        return (int)n;
    void *nt;
    ret = cache_get(q->l2_cache, new_off, false, &nt);
    if (ret < 0)
        goto fail;
    if (old) {
        void *ot;
        ret = cache_get(q->l2_cache, old, true, &ot);
        if (ret < 0) {
            cache_put(q->l2_cache, nt);
            goto fail;
        }
        /* Entries keep their flags: their clusters are shared too. */
        memcpy(nt, ot, cs);
        cache_put(q->l2_cache, ot);
    }
    /* Refcount for the new table durable, table written and flushed, then
     * the L1 entry. */
    ret = q->lazy ? 0 : cache_writeback(q->rb_cache, false);
    if (ret == 0)
        ret = file_pwrite(q->img.file, nt, cs, new_off);
    cache_put(q->l2_cache, nt);
    if (ret == 0)
        ret = file_flush(q->img.file);
    if (ret == 0)
        ret = write_l1e(q, l1i, new_off | OFLAG_COPIED);
    if (ret < 0) {
        cache_forget(q->l2_cache, new_off);
        goto fail;
    }
    if (old)
        qcow2_free_later(q, old, false);
    *out = new_off;
    return 0;
fail:
    qcow2_free_now(q, new_off, 1);
    return ret;
}

int qcow2_set_l2e(struct qcow2 *q, uint64_t gc, uint64_t entry,
                  uint64_t bitmap)
{
    uint32_t l1i;
    uint64_t l2i, l2off = 0;
    void *t;
    /* Another request may have found corruption since we started. */
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    split(q, gc, &l1i, &l2i);
    int ret = l2_table_for_write(q, l1i, &l2off);
    if (ret < 0)
        return ret;
    ret = cache_get(q->l2_cache, l2off, true, &t);
    if (ret < 0)
        return ret;
    uint8_t *p = (uint8_t *)t + l2i * q->l2_entry_size;
    put_be64(p, entry);
    if (q->extended_l2)
        put_be64(p + 8, bitmap);
    else
        assert(bitmap == 0);
    cache_mark_dirty(q->l2_cache, t, l2i * q->l2_entry_size,
                     q->l2_entry_size);
    cache_put(q->l2_cache, t);
    return 0;
}
