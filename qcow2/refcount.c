/* qlun — qcow2: reference counts and cluster allocation.
 *
 * Refcounts say which host clusters are in use.  Allocation scans them
 * from q->free_hint for free clusters; on a block device it stops at the
 * device end (-ENOSPC), on a file it may go past end of file (the file
 * grows when the data is written).
 *
 * A refcount block that does not exist yet is placed at the first cluster
 * of the range it describes: that range has no block, so every cluster in
 * it has refcount 0 and is free, and the block describes itself.  When the
 * refcount table is too small it is replaced by a bigger one built in the
 * first range it did not cover (blocks at range starts, table clusters in
 * between), written and flushed before the header points to it.
 *
 * Decrements are deferred: qcow2_free_later() queues them and
 * qcow2_meta_sync() applies them once the L2/L1 change that dropped the
 * reference is on disk, so a crash can leak a cluster but never leave an
 * entry pointing at a cluster that was reused.  They are applied in host
 * order, and the clusters they free go back to the host in runs
 * (qcow2_drop_ref, qcow2_give_back_flush): a large discard is one punch
 * per contiguous host range, not one per cluster.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

/* Host clusters [first, last] lose one reference once the change that
 * dropped them is durable.  first advances as they are released, so a
 * queue interrupted by an error resumes where it stopped. */
struct pending_free {
    uint64_t first, last;
};

/* ---- refcount block entries, any width from 1 to 64 bits ---- */

static uint64_t rb_get(const struct qcow2 *q, const uint8_t *rb, uint64_t i)
{
    switch (q->refcount_order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << q->refcount_order;
        uint64_t bit = i * bits;
        /* Sub-byte widths: entry 0 is in the least significant bits. */
        return (rb[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 3: return rb[i];
    case 4: return get_be16(rb + 2 * i);
    case 5: return get_be32(rb + 4 * i);
    default: return get_be64(rb + 8 * i);
    }
}

static void rb_set(const struct qcow2 *q, uint8_t *rb, uint64_t i, uint64_t v)
{
    assert(v <= q->refcount_max);
    switch (q->refcount_order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << q->refcount_order;
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        rb[bit / 8] = (uint8_t)((rb[bit / 8] & ~mask) | (v << (bit % 8)));
        break;
    }
    case 3: rb[i] = (uint8_t)v; break;
    case 4: put_be16(rb + 2 * i, (uint16_t)v); break;
    case 5: put_be32(rb + 4 * i, (uint32_t)v); break;
    default: put_be64(rb + 8 * i, v); break;
    }
}

/* ---- the refcount table ---- */

/* Offset of refcount block ri, validated; 0 if none. */
static int block_offset(struct qcow2 *q, uint64_t ri, uint64_t *off)
{
    *off = 0;
    if (ri >= q->reftable_entries)
        return 0;
    uint64_t e = q->reftable[ri];
    if (e == 0)
        return 0;
    if ((e & ~REFT_OFFSET_MASK) || (e & (q->cluster_size - 1)) ||
        e >= q->host_end)
        return qcow2_corrupt(q, "refcount table entry %" PRIu64
                             " is invalid (0x%" PRIx64 ")", ri, e);
    *off = e;
    return 0;
}

static int write_reftable_header(struct qcow2 *q, uint64_t off,
                                 uint32_t clusters)
{
    uint8_t b[12];
    put_be64(b, off);
    put_be32(b + 8, clusters);
    return qcow2_write_header(q, HDR_REFTABLE_OFFSET, b, sizeof(b));
}

static bool past_device(const struct qcow2 *q, uint64_t ci)
{
    if (q->dev_clusters)
        return ci >= q->dev_clusters;
    /* Host offsets are 56 bits in L2 entries. */
    return ci >= (1ull << 56) >> q->cluster_bits;
}

/* Replace the refcount table by one with at least need+1 entries.  The
 * new blocks and then the new table go at the first cluster no block
 * covered; the new blocks describe exactly those ranges. */
static int grow_reftable(struct qcow2 *q, uint64_t need)
{
    const uint64_t cs = q->cluster_size;
    const uint64_t per_cluster = cs / 8;
    const uint64_t N = 1ull << q->rb_bits;
    const uint64_t old = q->reftable_entries;
    const uint64_t start = old * N;
    uint64_t entries = MAX(need + 1, old + old / 2 + 1);
    uint64_t tc, nblocks = 1, end;
    int ret;

    for (;;) {
        entries = ALIGN_UP(entries, per_cluster);
        tc = entries / per_cluster;
        if (tc * cs > MAX_REFTABLE_BYTES)
            return -ENOSPC;
        while (nblocks < DIV_ROUND_UP(nblocks + tc, N))
            nblocks = DIV_ROUND_UP(nblocks + tc, N);
        end = start + nblocks + tc;
        if (old + nblocks <= entries)
            break;
        entries = old + nblocks;
    }
    if (past_device(q, end - 1))
        return -ENOSPC;

    uint8_t *buf = calloc(1, cs);
    uint8_t *table = calloc(tc, cs);
    uint64_t *nt = calloc(entries, sizeof(*nt));
    if (!buf || !table || !nt) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(nt, q->reftable, old * sizeof(*nt));
    /* Before anything is written there, even if the growth then fails:
     * io.c takes clusters at or past host_end to read as zeros. */
    q->host_end = MAX(q->host_end, end * cs);
    qcow2_prealloc_ahead(q);
    /* Block b sits at cluster start + b and describes range old + b. */
    for (uint64_t b = 0; b < nblocks; b++) {
        uint64_t first = start + b * N;
        memset(buf, 0, cs);
        for (uint64_t k = first; k < MIN(first + N, end); k++)
            rb_set(q, buf, k - first, 1);
        nt[old + b] = (start + b) * cs;
        ret = file_pwrite(q->img.file, buf, cs, nt[old + b]);
        if (ret < 0)
            goto out;
    }
    for (uint64_t i = 0; i < entries; i++)
        put_be64(table + 8 * i, nt[i]);
    uint64_t table_off = (start + nblocks) * cs;
    ret = file_pwrite(q->img.file, table, tc * cs, table_off);
    if (ret == 0)
        ret = file_flush(q->img.file);
    if (ret == 0)
        ret = write_reftable_header(q, table_off, (uint32_t)tc);
    if (ret < 0)
        goto out;

    uint64_t old_off = q->reftable_offset, old_clusters = q->reftable_clusters;
    free(q->reftable);
    q->reftable = nt;
    nt = NULL;
    q->reftable_entries = entries;
    q->reftable_offset = table_off;
    q->reftable_clusters = (uint32_t)tc;
    qcow2_reftable_count_used(q);
    /* The old table is unreferenced now; give its clusters back. */
    for (uint64_t i = 0; i < old_clusters; i++) {
        ret = qcow2_update_refcount(q, old_off / cs + i, -1);
        if (ret < 0)
            goto out;
    }
    ret = 0;
out:
    free(buf);
    free(table);
    free(nt);
    return ret;
}

/* Make sure refcount block ri exists; create it (at the start of its own
 * range) if not. */
static int ensure_block(struct qcow2 *q, uint64_t ri, uint64_t *off)
{
    int ret;
    if (ri >= q->reftable_entries) {
        ret = grow_reftable(q, ri);
        if (ret < 0)
            return ret;
    }
    ret = block_offset(q, ri, off);
    if (ret < 0 || *off)
        return ret;

    const uint64_t cs = q->cluster_size;
    uint64_t ci = ri << q->rb_bits;
    if (past_device(q, ci))
        return -ENOSPC;
    /* E.g. range 0 without a block: never put one over the header. */
    const char *what = qcow2_metadata_at(q, ci * cs, cs);
    if (what)
        return qcow2_corrupt(q, "refcount table entry %" PRIu64 " is empty, "
                             "but host cluster %" PRIu64 " holds %s",
                             ri, ci, what);
    uint8_t *buf = calloc(1, cs);
    if (!buf)
        return -ENOMEM;
    rb_set(q, buf, 0, 1); /* the block counts itself */
    uint64_t boff = ci * cs;
    /* Raised before the write, which may fail half done: io.c takes
     * clusters at or past host_end to read as zeros. */
    q->host_end = MAX(q->host_end, boff + cs);
    qcow2_prealloc_ahead(q);
    ret = file_pwrite(q->img.file, buf, cs, boff);
    free(buf);
    /* The block must be on disk before the table entry points to it. */
    if (ret == 0)
        ret = file_flush(q->img.file);
    if (ret < 0)
        return ret;
    uint8_t e[8];
    put_be64(e, boff);
    ret = file_pwrite(q->img.file, e, 8, q->reftable_offset + ri * 8);
    if (ret < 0)
        return ret;
    q->reftable[ri] = boff;
    q->reftable_used = MAX(q->reftable_used, ri + 1);
    *off = boff;
    return 0;
}

void qcow2_reftable_count_used(struct qcow2 *q)
{
    uint64_t n = q->reftable_entries;
    while (n > 0 && q->reftable[n - 1] == 0)
        n--;
    q->reftable_used = n;
}

int qcow2_get_refcount(struct qcow2 *q, uint64_t ci, uint64_t *rc)
{
    uint64_t boff;
    void *rb;
    *rc = 0;
    int ret = block_offset(q, ci >> q->rb_bits, &boff);
    if (ret < 0 || boff == 0)
        return ret;
    ret = cache_get(q->rb_cache, boff, true, &rb);
    if (ret < 0)
        return ret;
    *rc = rb_get(q, rb, ci & ((1ull << q->rb_bits) - 1));
    cache_put(q->rb_cache, rb);
    return 0;
}

/* qcow2_update_refcount, also giving the new refcount in *now. */
static int change_refcount(struct qcow2 *q, uint64_t ci, int64_t delta,
                           uint64_t *now)
{
    uint64_t boff;
    void *rb;
    int ret = ensure_block(q, ci >> q->rb_bits, &boff);
    if (ret < 0)
        return ret;
    ret = cache_get(q->rb_cache, boff, true, &rb);
    if (ret < 0)
        return ret;
    uint64_t i = ci & ((1ull << q->rb_bits) - 1);
    uint64_t v = rb_get(q, rb, i);
    if ((delta < 0 && v < (uint64_t)-delta) ||
        (delta > 0 && q->refcount_max - v < (uint64_t)delta)) {
        cache_put(q->rb_cache, rb);
        return qcow2_corrupt(q, "refcount of host cluster %" PRIu64
                             " would go from %" PRIu64 " by %" PRId64,
                             ci, v, delta);
    }
    v += (uint64_t)delta;
    *now = v;
    rb_set(q, rb, i, v);
    /* The byte(s) holding entry i: a refcount is 1..64 bits wide. */
    uint64_t first_bit = i << q->refcount_order;
    uint64_t end_bit = first_bit + (1ull << q->refcount_order);
    cache_mark_dirty(q->rb_cache, rb, (size_t)(first_bit / 8),
                     (size_t)((end_bit + 7) / 8 - first_bit / 8));
    cache_put(q->rb_cache, rb);
    if (v == 0) {
        if (ci < q->free_hint)
            q->free_hint = ci;
        /* If it was an L2 table, its cached copy is stale from now on. */
        cache_forget(q->l2_cache, ci << q->cluster_bits);
    }
    return 0;
}

int qcow2_update_refcount(struct qcow2 *q, uint64_t ci, int64_t delta)
{
    uint64_t now;
    return change_refcount(q, ci, delta, &now);
}

/* ---- giving freed clusters back to the host ---- */

void qcow2_give_back_flush(struct qcow2 *q, struct give_back *g)
{
    if (g->n)
        (void)file_discard(q->img.file, g->first << q->cluster_bits,
                           g->n << q->cluster_bits);
    g->n = 0;
}

int qcow2_drop_ref(struct qcow2 *q, uint64_t ci, struct give_back *g)
{
    uint64_t now;
    int ret = change_refcount(q, ci, -1, &now);
    if (ret < 0 || now != 0)
        return ret;
    if (g->n && ci != g->first + g->n)
        qcow2_give_back_flush(q, g);
    if (g->n == 0)
        g->first = ci;
    g->n++;
    return 0;
}

static int64_t alloc_clusters(struct qcow2 *q, uint64_t n, uint64_t *off);

int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t n, uint64_t *off)
{
    int64_t ret = alloc_clusters(q, n, off);
    /* Full (a device, or a filesystem with no room)?  Clusters freed by
     * discards may still be queued: make them free and try once more. */
    if (ret == -ENOSPC && q->npending > 0) {
        int r = qcow2_meta_sync(q);
        if (r < 0)
            return r;
        ret = alloc_clusters(q, n, off);
    }
    return ret;
}

static int64_t find_and_claim(struct qcow2 *q, uint64_t k, uint64_t n,
                              uint64_t *off);

static int64_t alloc_clusters(struct qcow2 *q, uint64_t n, uint64_t *off)
{
    uint64_t hint = q->free_hint;
    /* Clusters freed while we search — the old refcount table, which
     * grow_reftable gives back — may lie below where the search ends:
     * qcow2_update_refcount lowers free_hint to them, and that must stay. */
    q->free_hint = UINT64_MAX;
    int64_t got = find_and_claim(q, hint, n, off);
    uint64_t next = got > 0 ? (*off >> q->cluster_bits) + (uint64_t)got : hint;
    q->free_hint = MIN(q->free_hint, next);
    return got;
}

/* Search from cluster k for free clusters and take up to n of them. */
static int64_t find_and_claim(struct qcow2 *q, uint64_t k, uint64_t n,
                              uint64_t *off)
{
    assert(n > 0);
    uint64_t rc, boff;
    int ret;

    for (;; k++) {
        if (past_device(q, k))
            return -ENOSPC;
        ret = ensure_block(q, k >> q->rb_bits, &boff);
        if (ret < 0)
            return ret;
        ret = qcow2_get_refcount(q, k, &rc);
        if (ret < 0)
            return ret;
        if (rc == 0)
            break;
    }
    uint64_t got = 1;
    while (got < n && !past_device(q, k + got)) {
        /* Stay inside blocks that exist: good enough for a run. */
        ret = block_offset(q, (k + got) >> q->rb_bits, &boff);
        if (ret < 0)
            return ret;
        if (boff == 0)
            break;
        ret = qcow2_get_refcount(q, k + got, &rc);
        if (ret < 0)
            return ret;
        if (rc != 0)
            break;
        got++;
    }
    /* Free per the refcounts, yet metadata: the refcounts are wrong, and
     * guest data or a new table must not go there. */
    const char *what = qcow2_metadata_at(q, k << q->cluster_bits,
                                         got << q->cluster_bits);
    if (what)
        return qcow2_corrupt(q, "host clusters %" PRIu64 "..%" PRIu64
                             " have refcount 0, but hold %s", k,
                             k + got - 1, what);
    for (uint64_t i = 0; i < got; i++) {
        ret = qcow2_update_refcount(q, k + i, 1);
        if (ret < 0) {
            qcow2_free_now(q, k << q->cluster_bits, i);
            return ret;
        }
    }
    q->host_end = MAX(q->host_end, (k + got) << q->cluster_bits);
    qcow2_prealloc_ahead(q);
    *off = k << q->cluster_bits;
    return (int64_t)got;
}

void qcow2_free_now(struct qcow2 *q, uint64_t off, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        (void)qcow2_update_refcount(q, (off >> q->cluster_bits) + i, -1);
}

void qcow2_compressed_range(const struct qcow2 *q, uint64_t entry,
                            uint64_t *off, uint64_t *len)
{
    uint64_t coff = entry & q->coffset_mask;
    uint64_t nsect = ((entry >> q->csize_shift) & q->csize_mask) + 1;
    *off = coff & ~511ull;
    *len = nsect * 512;
}

/* Release what p still holds: drop one reference from each cluster; g
 * collects the ones now free, to be given back to the host (thin
 * provisioning; a freed cluster is never read before it is rewritten). */
static int release(struct qcow2 *q, struct pending_free *p,
                   struct give_back *g)
{
    for (; p->first <= p->last; p->first++) {
        int ret = qcow2_drop_ref(q, p->first, g);
        if (ret < 0)
            return ret;
    }
    return 0;
}

void qcow2_free_later(struct qcow2 *q, uint64_t entry, bool compressed)
{
    const uint64_t cs = q->cluster_size;
    struct pending_free f;
    if (compressed) {
        uint64_t off, len;
        qcow2_compressed_range(q, entry, &off, &len);
        f = (struct pending_free){ off / cs, (off + len - 1) / cs };
    } else {
        f.first = f.last = (entry & L2E_OFFSET_MASK) / cs;
    }
    if (q->npending == q->pending_cap) {
        size_t cap = q->pending_cap ? q->pending_cap * 2 : 64;
        struct pending_free *p = realloc(q->pending, cap * sizeof(*p));
        if (!p) {
            /* No room to queue it: make the change that dropped the
             * clusters durable now and release them at once.  If even that
             * fails they leak (a leak is harmless, and qemu-img check -r
             * leaks takes them back): the new link is made, so failing the
             * request that made it would be false. */
            struct give_back g = { 0 };
            int ret = qcow2_meta_sync(q);
            if (ret == 0)
                ret = release(q, &f, &g);
            qcow2_give_back_flush(q, &g);
            if (ret < 0)
                fprintf(stderr, "qlun: qcow2 %s: host clusters %" PRIu64
                        "..%" PRIu64 " leaked (%s)\n", q->path, f.first,
                        f.last, strerror(-ret));
            return;
        }
        q->pending = p;
        q->pending_cap = cap;
    }
    q->pending[q->npending++] = f;
}

static int by_first_cluster(const void *a, const void *b)
{
    const struct pending_free *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Called once the changes that dropped the references are durable (meta
 * sync).  In host order, so that clusters freed next to each other go
 * back to the host in one call and each refcount block is visited in one
 * stretch: a hole punched on a file can cost a device discard per call.
 * The runs are given back before the lock is released: once it is, a
 * freed cluster may be allocated and written, and a late punch would
 * destroy that data. */
static int apply_pending(struct qcow2 *q)
{
    struct give_back g = { 0 };
    int ret = 0;
    size_t i;
    qsort(q->pending, q->npending, sizeof(*q->pending), by_first_cluster);
    for (i = 0; i < q->npending; i++) {
        ret = release(q, &q->pending[i], &g);
        if (ret < 0)
            break;
    }
    qcow2_give_back_flush(q, &g);
    /* What is not released yet stays queued for the next sync: dropping
     * it would leak those clusters. */
    memmove(q->pending, q->pending + i,
            (q->npending - i) * sizeof(*q->pending));
    q->npending -= i;
    return ret;
}

int qcow2_l2_pre_write(struct qcow2 *q)
{
    if (!q->lazy) {
        int ret = cache_writeback(q->rb_cache, false);
        if (ret < 0)
            return ret;
    }
    return file_flush(q->img.file);
}

int qcow2_meta_sync(struct qcow2 *q)
{
    bool l2_dirty = cache_has_dirty(q->l2_cache);
    int ret = qcow2_l2_pre_write(q);
    if (ret == 0 && l2_dirty) {
        ret = cache_writeback(q->l2_cache, true);
        if (ret == 0)
            ret = file_flush(q->img.file);
    }
    if (ret == 0 && q->npending) {
        ret = apply_pending(q);
        if (ret == 0 && !q->lazy)
            ret = cache_writeback(q->rb_cache, false);
        if (ret == 0)
            ret = file_flush(q->img.file);
    }
    return ret;
}

/* ---- COPIED from the refcounts ---- */

/* COPIED of each entry of the L2 table at l2off made to match its
 * cluster's refcount, through the cache.  Compressed entries never carry
 * it; entries without a host cluster neither. */
static int sync_copied_l2(struct qcow2 *q, uint64_t l2off)
{
    void *t;
    int ret = cache_get(q->l2_cache, l2off, true, &t);
    if (ret < 0)
        return ret;
    for (uint64_t j = 0; ret == 0 && j < (1ull << q->l2_bits); j++) {
        uint8_t *p = (uint8_t *)t + j * q->l2_entry_size;
        uint64_t e = get_be64(p), host = e & L2E_OFFSET_MASK, rc;
        if ((e & OFLAG_COMPRESSED) || host == 0)
            continue;
        ret = qcow2_get_refcount(q, host >> q->cluster_bits, &rc);
        uint64_t want = rc == 1 ? e | OFLAG_COPIED : e & ~OFLAG_COPIED;
        if (ret == 0 && want != e) {
            put_be64(p, want);
            cache_mark_dirty(q->l2_cache, t, j * q->l2_entry_size, 8);
        }
    }
    cache_put(q->l2_cache, t);
    return ret;
}

static int write_l1_table(struct qcow2 *q)
{
    size_t len = (size_t)q->l1_size * 8;
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->l1_size; i++)
        put_be64(b + 8 * i, q->l1[i]);
    int ret = file_pwrite(q->img.file, b, len, q->l1_offset);
    free(b);
    return ret;
}

int qcow2_sync_copied(struct qcow2 *q)
{
    bool l1_changed = false;
    int ret = 0;
    for (uint32_t i = 0; ret == 0 && i < q->l1_size; i++) {
        uint64_t l2off, rc;
        ret = qcow2_check_l1e(q, i, &l2off);
        if (ret < 0 || l2off == 0)
            continue;
        ret = qcow2_get_refcount(q, l2off >> q->cluster_bits, &rc);
        if (ret == 0)
            ret = sync_copied_l2(q, l2off);
        uint64_t want = rc == 1 ? q->l1[i] | OFLAG_COPIED
                                : q->l1[i] & ~OFLAG_COPIED;
        if (ret == 0 && want != q->l1[i]) {
            q->l1[i] = want;
            l1_changed = true;
        }
    }
    /* The L2 tables first: an L1 entry with COPIED lets writes change
     * its table in place. */
    if (ret == 0)
        ret = qcow2_meta_sync(q);
    if (ret == 0 && l1_changed)
        ret = write_l1_table(q);
    if (ret == 0)
        ret = file_flush(q->img.file);
    return ret;
}

/* ---- rebuild after a crash ---- */

struct counts {
    uint32_t *v;
    uint64_t n;     /* entries allocated */
    uint64_t used;  /* highest counted cluster + 1 */
};

static int count(struct qcow2 *q, struct counts *c, uint64_t ci)
{
    if (past_device(q, ci))
        return -ENOSPC;
    if (ci >= c->n) {
        uint64_t n = MAX(ci + 1, c->n * 2);
        uint32_t *v = realloc(c->v, n * sizeof(*v));
        if (!v)
            return -ENOMEM;
        memset(v + c->n, 0, (n - c->n) * sizeof(*v));
        c->v = v;
        c->n = n;
    }
    if (c->v[ci] == UINT32_MAX)
        return -EOVERFLOW;
    c->v[ci]++;
    c->used = MAX(c->used, ci + 1);
    return 0;
}

static int count_range(struct qcow2 *q, struct counts *c, uint64_t off,
                       uint64_t len)
{
    if (len == 0)
        return 0;
    for (uint64_t ci = off >> q->cluster_bits;
         ci <= (off + len - 1) >> q->cluster_bits; ci++) {
        int ret = count(q, c, ci);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int count_l1(struct qcow2 *q, struct counts *c, uint64_t l1_off,
                    uint32_t l1_size, uint8_t *l2buf)
{
    const uint64_t cs = q->cluster_size;
    int ret = count_range(q, c, l1_off, (uint64_t)l1_size * 8);
    if (ret < 0 || l1_size == 0)
        return ret;
    uint8_t *l1 = malloc((size_t)l1_size * 8);
    if (!l1)
        return -ENOMEM;
    ret = file_pread(q->img.file, l1, (size_t)l1_size * 8, l1_off);
    for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
        uint64_t e = get_be64(l1 + 8 * i);
        uint64_t l2 = e & L1E_OFFSET_MASK;
        if (e & L1E_RESERVED || l2 & (cs - 1) || l2 >= q->host_end) {
            ret = qcow2_corrupt(q, "L1 entry %u is invalid (0x%" PRIx64 ")",
                                i, e);
            break;
        }
        if (l2 == 0)
            continue;
        ret = count(q, c, l2 / cs);
        if (ret == 0)
            ret = file_pread(q->img.file, l2buf, cs, l2);
        uint64_t n = cs / q->l2_entry_size;
        for (uint64_t j = 0; ret == 0 && j < n; j++) {
            const uint8_t *p = l2buf + j * q->l2_entry_size;
            struct l2e d;
            uint64_t gc = ((uint64_t)i << q->l2_bits) + j;
            ret = qcow2_decode_l2e(q, get_be64(p),
                                   q->extended_l2 ? get_be64(p + 8) : 0,
                                   gc << q->cluster_bits, &d);
            if (ret < 0)
                break;
            if (d.compressed) {
                uint64_t off, len;
                qcow2_compressed_range(q, d.entry, &off, &len);
                ret = count_range(q, c, off, len);
            } else if (d.host) {
                ret = count(q, c, d.host / cs);
            }
        }
    }
    free(l1);
    return ret;
}

int qcow2_rebuild_refcounts(struct qcow2 *q, char *err, size_t errlen)
{
    const uint64_t cs = q->cluster_size;
    const uint64_t N = 1ull << q->rb_bits;
    struct counts c = { 0 };
    uint8_t *l2buf = malloc(cs);
    uint8_t *buf = NULL, *table = NULL;
    uint64_t *pos = NULL;
    int ret;

    if (!l2buf) {
        ret = -ENOMEM;
        goto fail;
    }
    /* Everything that references clusters, except the refcount structures
     * themselves (those are rebuilt from scratch below). */
    ret = count(q, &c, 0);
    if (ret == 0)
        ret = count_l1(q, &c, q->l1_offset, q->l1_size, l2buf);
    if (ret == 0)
        ret = count_range(q, &c, q->snapshots_offset, q->snapshots_bytes);
    for (uint32_t s = 0; ret == 0 && s < q->nb_snapshots; s++)
        ret = count_l1(q, &c, q->snapshots[s].l1_offset,
                       q->snapshots[s].l1_size, l2buf);
    if (ret < 0)
        goto fail;

    /* Place the new blocks and table in free clusters; adding them may
     * need more blocks, so iterate until the plan covers itself. */
    uint64_t nb = DIV_ROUND_UP(c.used, N) + 1, tc;
    for (;;) {
        tc = DIV_ROUND_UP(nb * 8, cs);
        if (tc * cs > MAX_REFTABLE_BYTES) {
            ret = -EFBIG;
            goto fail;
        }
        free(pos);
        pos = calloc(nb + 1, sizeof(*pos)); /* blocks, then the table */
        if (!pos) {
            ret = -ENOMEM;
            goto fail;
        }
        /* The table: the first run of tc free clusters. */
        uint64_t k = 1, run = 0, tstart = 0;
        while (run < tc) {
            if (k >= c.n || c.v[k] == 0) {
                if (run++ == 0)
                    tstart = k;
            } else {
                run = 0;
            }
            k++;
        }
        for (uint64_t i = 0; i < tc; i++) {
            ret = count(q, &c, tstart + i);
            if (ret < 0)
                goto fail;
        }
        k = 1;
        for (uint64_t b = 0; b < nb; b++) {
            while (k < c.n && c.v[k] != 0)
                k++;
            pos[b] = k;
            ret = count(q, &c, k);
            if (ret < 0)
                goto fail;
        }
        uint64_t need = DIV_ROUND_UP(c.used, N);
        if (need <= nb) {
            pos[nb] = tstart;
            break;
        }
        /* Undo and retry bigger. */
        for (uint64_t i = 0; i < tc; i++)
            c.v[tstart + i]--;
        for (uint64_t b = 0; b < nb; b++)
            c.v[pos[b]]--;
        nb = need + 1;
    }

    buf = malloc(cs);
    table = calloc(tc, cs);
    if (!buf || !table) {
        ret = -ENOMEM;
        goto fail;
    }
    for (uint64_t b = 0; b < nb; b++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; i < N; i++) {
            uint64_t ci = b * N + i;
            uint64_t v = ci < c.n ? c.v[ci] : 0;
            if (v > q->refcount_max) {
                snprintf(err, errlen, "%s: cluster %" PRIu64 " is used %"
                         PRIu64 " times, more than refcount_bits allow",
                         q->path, ci, v);
                ret = -EOVERFLOW;
                goto out;
            }
            rb_set(q, buf, i, v);
        }
        ret = file_pwrite(q->img.file, buf, cs, pos[b] * cs);
        if (ret < 0)
            goto fail;
        put_be64(table + 8 * b, pos[b] * cs);
    }
    uint64_t tstart = pos[nb];
    ret = file_pwrite(q->img.file, table, tc * cs, tstart * cs);
    if (ret == 0)
        ret = file_flush(q->img.file);
    if (ret == 0)
        ret = write_reftable_header(q, tstart * cs, (uint32_t)tc);
    if (ret < 0)
        goto fail;

    uint64_t entries = tc * cs / 8;
    uint64_t *nt = calloc(entries, sizeof(*nt));
    if (!nt) {
        ret = -ENOMEM;
        goto fail;
    }
    for (uint64_t b = 0; b < nb; b++)
        nt[b] = pos[b] * cs;
    free(q->reftable);
    q->reftable = nt;
    q->reftable_entries = entries;
    q->reftable_offset = tstart * cs;
    q->reftable_clusters = (uint32_t)tc;
    qcow2_reftable_count_used(q);
    q->host_end = MAX(q->host_end, c.used * cs);
    q->free_hint = 0;
    cache_invalidate(q->rb_cache);
    /* A crash inside a snapshot create or delete (snapshot_ops.c) can
     * leave COPIED disagreeing with the counts: derive it again. */
    ret = qcow2_sync_copied(q);
    if (ret < 0)
        goto fail;
    goto out;
fail:
    snprintf(err, errlen, "%s: the image was not closed cleanly (dirty) and "
             "rebuilding its refcounts failed: %s", q->path, strerror(-ret));
out:
    free(c.v);
    free(l2buf);
    free(buf);
    free(table);
    free(pos);
    return ret;
}
