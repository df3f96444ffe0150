/* qlun — qcow2: creating and deleting an internal snapshot on a live image.
 *
 * Refcounts.  A host cluster's refcount is the number of (L1 table, L2
 * entry) paths that reach it: an L2 table counts once per L1 table that
 * points to it, a data cluster once per L1 table that reaches it (through
 * any L2 table), the clusters a compressed cluster's data spans likewise.
 * So taking a snapshot adds one to every L2 table and data cluster the
 * active L1 reaches, deleting one subtracts one from everything its L1
 * reaches.  COPIED (bit 63) in the active tables must say "refcount is 1"
 * (qemu-img check counts a mismatch as corruption), and it is what the
 * write path trusts to write in place (io.c): cleared on create, so writes
 * copy; set again on delete where the count went back to 1, so writes go
 * in place again.
 *
 * Crash safety.  The refcount changes and the COPIED changes cannot reach
 * the disk at once, and either order leaves a window that qemu-img check
 * calls corruption (refcount 2 with COPIED set, or refcount 1 without).
 * So the whole operation runs under the dirty bit (incompatible bit 0,
 * which says "refcounts may be wrong, rebuild them"): set and flushed
 * before the first change, cleared once everything is durable.  A crash
 * in between leaves a dirty image; opening it rebuilds the refcounts from
 * the tables and re-derives COPIED from them (refcount.c).  Within, the
 * steps still go in QEMU's order, each flushed, so that the header switch
 * is the one moment the snapshot appears (or disappears): before it the
 * old table is in force and the new one only leaks clusters; after it
 * the new one is, and what remains is giving back clusters.  Version 2
 * has no dirty bit: snapshots are refused there (-ENOTSUP).
 * Lazy refcounts hold the dirty bit set anyway; then it stays set.
 *
 * Quiescence.  The caller drains the LUN: no guest request is in flight
 * (asserted: no range lock held) and none starts until we return; q->lock
 * is held throughout.
 *
 * A failure after the first change leaves in-memory state that no longer
 * matches the disk: the image is then marked corrupt (write-protected,
 * dirty bit kept), for qemu-img check -r all to repair.  Failures before
 * it (no space, a name in use, a refcount that would overflow) change
 * nothing.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "qcow2-internal.h"

#define MAX_NAME 255u

/* ---- walking what an L1 table reaches ---- */

/* Called once per reference: host cluster ci. */
typedef int (*visit_fn)(struct qcow2 *q, uint64_t ci, void *arg);

/* Visit the clusters of one L2 entry: a data cluster (zero clusters that
 * keep one too), or each cluster a compressed cluster's data spans. */
static int visit_entry(struct qcow2 *q, const struct l2e *e, visit_fn fn,
                       void *arg)
{
    const unsigned cb = q->cluster_bits;
    if (e->compressed) {
        uint64_t off, len;
        qcow2_compressed_range(q, e->entry, &off, &len);
        for (uint64_t ci = off >> cb; ci <= (off + len - 1) >> cb; ci++) {
            int ret = fn(q, ci, arg);
            if (ret != 0)
                return ret;
        }
        return 0;
    }
    return e->host ? fn(q, e->host >> cb, arg) : 0;
}

/* Visit every data cluster the L2 table at l2off maps, then the table.
 * The table is copied out first: fn may change refcounts, and the cache
 * forgets a table whose refcount drops to 0. */
static int visit_l2(struct qcow2 *q, uint32_t l1i, uint64_t l2off,
                    uint8_t *copy, visit_fn fn, void *arg)
{
    void *t;
    int ret = cache_get(q->l2_cache, l2off, true, &t);
    if (ret < 0)
        return ret;
    memcpy(copy, t, q->cluster_size);
    cache_put(q->l2_cache, t);
    for (uint64_t j = 0; j < (1ull << q->l2_bits); j++) {
        const uint8_t *p = copy + j * q->l2_entry_size;
        uint64_t gc = ((uint64_t)l1i << q->l2_bits) + j;
        struct l2e e;
        ret = qcow2_decode_l2e(q, get_be64(p),
                               q->extended_l2 ? get_be64(p + 8) : 0,
                               gc << q->cluster_bits, &e);
        if (ret == 0)
            ret = visit_entry(q, &e, fn, arg);
        if (ret != 0)
            return ret;
    }
    return fn(q, l2off >> q->cluster_bits, arg);
}

/* Visit every reference the L1 table l1 (host byte order) makes, in a
 * fixed order (so that a walk can be undone by walking again).  A visit
 * returning > 0 ends the walk, which returns that. */
static int walk_l1(struct qcow2 *q, const uint64_t *l1, uint32_t l1_size,
                   visit_fn fn, void *arg)
{
    uint8_t *copy = malloc(q->cluster_size);
    if (!copy)
        return -ENOMEM;
    int ret = 0;
    for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        if ((l1[i] & L1E_RESERVED) || (l2off & (q->cluster_size - 1)) ||
            l2off >= q->host_end)
            ret = qcow2_corrupt(q, "L1 entry %u is invalid (0x%" PRIx64 ")",
                                i, l1[i]);
        else if (l2off)
            ret = visit_l2(q, i, l2off, copy, fn, arg);
    }
    free(copy);
    return ret;
}

/* Adding: stop before a refcount would overflow (-EOVERFLOW), counting
 * the references added, so that they can be taken back. */
struct add_state {
    uint64_t done;   /* references added so far */
    uint64_t limit;  /* undo: take back only this many */
};

static int visit_add(struct qcow2 *q, uint64_t ci, void *arg)
{
    struct add_state *s = arg;
    uint64_t rc;
    int ret = qcow2_get_refcount(q, ci, &rc);
    if (ret < 0)
        return ret;
    if (rc == 0)
        return qcow2_corrupt(q, "host cluster %" PRIu64 " is in use but "
                             "has refcount 0", ci);
    if (rc >= q->refcount_max)
        return -EOVERFLOW;
    ret = qcow2_update_refcount(q, ci, 1);
    if (ret == 0)
        s->done++;
    return ret;
}

static int visit_undo_add(struct qcow2 *q, uint64_t ci, void *arg)
{
    struct add_state *s = arg;
    if (s->done == s->limit)
        return 1; /* stop: the rest was never added */
    s->done++;
    return qcow2_update_refcount(q, ci, -1);
}

/* Dropping references: a cluster nobody uses any more goes back to the
 * host, in runs (qcow2_drop_ref). */
static int visit_drop(struct qcow2 *q, uint64_t ci, void *arg)
{
    return qcow2_drop_ref(q, ci, arg);
}

/* ---- the steps ---- */

/* Allocate n contiguous clusters.  qcow2_alloc_clusters gives the first
 * free run, possibly shorter: keep shorter runs taken while looking on
 * (so the search moves past them), then give them back. */
static int alloc_run(struct qcow2 *q, uint64_t n, uint64_t *off)
{
    struct run { uint64_t off, n; } *held = NULL;
    size_t nheld = 0;
    int ret = 0;
    for (;;) {
        uint64_t o;
        int64_t got = qcow2_alloc_clusters(q, n, &o);
        if (got < 0) {
            ret = (int)got;
            break;
        }
        if ((uint64_t)got == n) {
            *off = o;
            break;
        }
        struct run *h = realloc(held, (nheld + 1) * sizeof(*h));
        if (!h) {
            qcow2_free_now(q, o, (uint64_t)got);
            ret = -ENOMEM;
            break;
        }
        held = h;
        held[nheld++] = (struct run){ o, (uint64_t)got };
    }
    for (size_t i = 0; i < nheld; i++)
        qcow2_free_now(q, held[i].off, held[i].n);
    free(held);
    return ret;
}

static uint64_t clusters_for(const struct qcow2 *q, uint64_t bytes)
{
    return DIV_ROUND_UP(bytes, q->cluster_size);
}

/* Write bytes of data into newly allocated clusters at *off, padded with
 * zeros to whole clusters (nothing of an old cluster's content stays). */
static int write_new_clusters(struct qcow2 *q, const void *data,
                              uint64_t bytes, uint64_t *off)
{
    uint64_t n = clusters_for(q, bytes);
    int ret = alloc_run(q, n, off);
    if (ret < 0)
        return ret;
    uint8_t *buf = calloc(n, q->cluster_size);
    if (!buf) {
        ret = -ENOMEM;
    } else {
        memcpy(buf, data, bytes);
        ret = file_pwrite(q->img.file, buf, n * q->cluster_size, *off);
        free(buf);
    }
    if (ret < 0)
        qcow2_free_now(q, *off, n);
    return ret;
}

/* Begin or end the window in which refcounts and COPIED may disagree with
 * the tables on disk (see the top).  Lazy refcounts keep the bit set. */
static int set_dirty(struct qcow2 *q, bool dirty)
{
    if (q->lazy)
        return 0;
    uint64_t v = dirty ? q->incompat | INCOMPAT_DIRTY
                       : q->incompat & ~INCOMPAT_DIRTY;
    int ret = qcow2_write_header_u64(q, HDR_INCOMPAT, v);
    if (ret == 0)
        q->incompat = v;
    return ret;
}

/* Every cached change on disk, refcounts first (even under lazy
 * refcounts: the header switch must not point at clusters the refcounts
 * still call free). */
static int sync_all(struct qcow2 *q)
{
    int ret = cache_writeback(q->rb_cache, false);
    if (ret == 0)
        ret = qcow2_meta_sync(q);
    if (ret == 0)
        ret = cache_writeback(q->rb_cache, false);
    if (ret == 0)
        ret = file_flush(q->img.file);
    return ret;
}

/* Point the header at table t (nb_snapshots and snapshots_offset are
 * adjacent: one 12-byte write, inside one sector), flush, and adopt it
 * in memory; the old table's block is freed, its clusters returned in
 * *old_off, *old_bytes. */
static int switch_table(struct qcow2 *q, struct snapshot_table *t,
                        uint64_t new_off, uint64_t *old_off,
                        uint64_t *old_bytes)
{
    uint8_t b[12];
    put_be32(b, t->nb);
    put_be64(b + 4, t->nb ? new_off : 0);
    int ret = qcow2_write_header(q, HDR_NB_SNAPSHOTS, b, sizeof(b));
    if (ret < 0)
        return ret;
    *old_off = q->snapshots_offset;
    *old_bytes = q->nb_snapshots ? q->snapshots_bytes : 0;
    free(q->snapshots);
    q->snapshots = t->snaps;
    q->nb_snapshots = t->nb;
    q->snapshots_offset = t->nb ? new_off : 0;
    q->snapshots_bytes = t->bytes;
    memset(t, 0, sizeof(*t));
    return 0;
}

static int free_clusters_of(struct qcow2 *q, uint64_t off, uint64_t bytes)
{
    struct give_back s = { 0 };
    int ret = 0;
    for (uint64_t i = 0; ret == 0 && i < clusters_for(q, bytes); i++)
        ret = visit_drop(q, (off >> q->cluster_bits) + i, &s);
    qcow2_give_back_flush(q, &s);
    return ret;
}

/* Shared checks: -ENOTSUP on version 2, no request in flight. */
static int check_can_snapshot(struct qcow2 *q)
{
    assert(q->ranges == NULL); /* the caller drained the LUN */
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    if (q->img.info.read_only)
        return -EROFS;
    /* Crash safety of a snapshot rests on the dirty bit (v3 only);
     * image.c says so in words. */
    if (q->version < 3)
        return -ENOTSUP;
    int ret = qcow2_prepare_write(q);
    if (ret == 0)
        ret = qcow2_meta_sync(q);
    return ret;
}

/* A change half done: memory and disk may disagree (see the top). */
static int give_up(struct qcow2 *q, const char *what, int ret)
{
    if (ret != -EUCLEAN)
        (void)qcow2_corrupt(q, "snapshot %s failed half-way (%s); the dirty "
                            "bit stays set", what, strerror(-ret));
    return ret;
}

/* ---- create ---- */

/* A name we write: 1..255 bytes, no control characters (it ends up in
 * messages and in qemu-img's listing). */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return false;
    return true;
}

static bool name_in_use(const struct qcow2 *q, const char *name)
{
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (qcow2_snapshot_name_is(&q->snapshots[i], name))
            return true;
    return false;
}

/* The snapshot's L1 table: the active one, without COPIED (everything it
 * reaches is shared from now on), in new clusters.  *off 0: empty. */
static int copy_active_l1(struct qcow2 *q, uint64_t *off)
{
    size_t len = (size_t)q->l1_size * 8;
    *off = 0;
    if (len == 0)
        return 0;
    uint8_t *b = malloc(len);
    if (!b)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->l1_size; i++)
        put_be64(b + 8 * i, q->l1[i] & ~OFLAG_COPIED);
    int ret = write_new_clusters(q, b, len, off);
    free(b);
    return ret;
}

/* One more reference to everything the active L1 reaches; on overflow
 * (-EOVERFLOW) none: the ones added are taken back. */
static int add_active_refs(struct qcow2 *q)
{
    struct add_state s = { 0 };
    int ret = walk_l1(q, q->l1, q->l1_size, visit_add, &s);
    if (ret != -EOVERFLOW)
        return ret;
    struct add_state u = { .limit = s.done };
    int r = walk_l1(q, q->l1, q->l1_size, visit_undo_add, &u);
    return r < 0 ? r : -EOVERFLOW;
}

/* After the new L1 copy and table are in their clusters (refcounts in
 * the cache): everything else, under the dirty bit. */
static int commit_create(struct qcow2 *q, struct snapshot_table *t,
                         uint64_t t_off)
{
    uint64_t old_off, old_bytes;
    int ret = add_active_refs(q);
    if (ret == -EOVERFLOW)
        return ret; /* nothing changed but the new clusters */
    if (ret == 0)
        ret = qcow2_sync_copied(q);
    if (ret == 0)
        ret = sync_all(q);
    if (ret == 0)
        ret = switch_table(q, t, t_off, &old_off, &old_bytes);
    if (ret == 0)
        ret = free_clusters_of(q, old_off, old_bytes);
    if (ret == 0)
        ret = sync_all(q);
    if (ret == 0)
        ret = set_dirty(q, false);
    return ret < 0 ? give_up(q, "create", ret) : 0;
}

static int create_locked(struct qcow2 *q, const char *name)
{
    int ret = check_can_snapshot(q);
    if (ret < 0)
        return ret;
    if (name_in_use(q, name))
        return -EEXIST;
    if (q->refcount_max < 2)
        return -EOVERFLOW; /* refcount_bits=1: nothing can be shared */
    char id[24];
    snprintf(id, sizeof(id), "%" PRIu64, qcow2_next_snapshot_id(q));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t l1_off = 0, t_off = 0;
    ret = copy_active_l1(q, &l1_off);
    if (ret < 0)
        return ret;
    struct snapshot_table t;
    const struct snapshot_new add = {
        .l1_offset = l1_off, .l1_size = q->l1_size, .id = id, .name = name,
        .date_sec = (uint64_t)now.tv_sec, .date_nsec = (uint32_t)now.tv_nsec,
        .disk_size = q->img.size,
    };
    ret = qcow2_build_snapshot_table(q, UINT32_MAX, &add, &t);
    if (ret == 0)
        ret = write_new_clusters(q, t.buf, t.bytes, &t_off);
    /* The new clusters' refcounts and content durable, then the window
     * opens. */
    if (ret == 0)
        ret = sync_all(q);
    if (ret == 0)
        ret = set_dirty(q, true);
    if (ret == 0)
        ret = commit_create(q, &t, t_off);
    if (ret < 0 && !qcow2_is_corrupt(q)) {
        /* Nothing points at them: give the new clusters back. */
        if (t_off)
            qcow2_free_now(q, t_off, clusters_for(q, t.bytes));
        if (l1_off)
            qcow2_free_now(q, l1_off, clusters_for(q, (uint64_t)q->l1_size * 8));
        if (sync_all(q) == 0 && (q->incompat & INCOMPAT_DIRTY))
            (void)set_dirty(q, false);
    }
    qcow2_free_snapshot_table(&t);
    return ret;
}

int qcow2_snapshot_create(struct image *img, const char *name)
{
    struct qcow2 *q = to_qcow2(img);
    if (!name_ok(name))
        return -EINVAL;
    pthread_mutex_lock(&q->lock);
    int ret = create_locked(q, name);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* ---- delete ---- */

/* Snapshot sn's L1 table, host byte order (NULL with l1_size 0). */
static int read_snapshot_l1(struct qcow2 *q, const struct snapshot *sn,
                            uint64_t **out)
{
    *out = NULL;
    if (sn->l1_size == 0)
        return 0;
    size_t len = (size_t)sn->l1_size * 8;
    uint8_t *b = malloc(len);
    uint64_t *l1 = malloc(len);
    int ret = b && l1 ? file_pread(q->img.file, b, len, sn->l1_offset) : -ENOMEM;
    for (uint32_t i = 0; ret == 0 && i < sn->l1_size; i++)
        l1[i] = get_be64(b + 8 * i);
    free(b);
    if (ret < 0)
        free(l1);
    else
        *out = l1;
    return ret;
}

/* The table is switched (the snapshot is gone): drop its references,
 * its L1 table, the old table; re-derive COPIED; close the window. */
static int finish_delete(struct qcow2 *q, const struct snapshot *gone,
                         const uint64_t *l1, uint64_t old_off,
                         uint64_t old_bytes)
{
    struct give_back s = { 0 };
    int ret = walk_l1(q, l1, gone->l1_size, visit_drop, &s);
    qcow2_give_back_flush(q, &s);
    if (ret == 0)
        ret = free_clusters_of(q, gone->l1_offset, (uint64_t)gone->l1_size * 8);
    if (ret == 0)
        ret = free_clusters_of(q, old_off, old_bytes);
    /* Refcounts that went back to 1 make their entries ours again:
     * writes go in place from now on. */
    if (ret == 0)
        ret = sync_all(q);
    if (ret == 0)
        ret = qcow2_sync_copied(q);
    if (ret == 0)
        ret = set_dirty(q, false);
    return ret;
}

static int delete_locked(struct qcow2 *q, const char *name_or_id)
{
    int ret = check_can_snapshot(q);
    if (ret < 0)
        return ret;
    int64_t idx = qcow2_find_snapshot(q, name_or_id);
    if (idx < 0)
        return -ENOENT;
    const struct snapshot gone = q->snapshots[idx]; /* raw: not used */
    uint64_t *l1 = NULL, t_off = 0, old_off, old_bytes;
    struct snapshot_table t;
    ret = read_snapshot_l1(q, &gone, &l1);
    if (ret == 0)
        ret = qcow2_build_snapshot_table(q, (uint32_t)idx, NULL, &t);
    if (ret < 0) {
        free(l1);
        return ret;
    }
    if (t.nb)
        ret = write_new_clusters(q, t.buf, t.bytes, &t_off);
    if (ret == 0)
        ret = sync_all(q);
    if (ret == 0)
        ret = set_dirty(q, true);
    if (ret < 0) {
        /* The header still names the old table: nothing happened, but
         * the new table's clusters to give back. */
        if (t_off && !qcow2_is_corrupt(q)) {
            qcow2_free_now(q, t_off, clusters_for(q, t.bytes));
            if (sync_all(q) == 0 && (q->incompat & INCOMPAT_DIRTY))
                (void)set_dirty(q, false);
        }
    } else {
        /* From the header write on, a failure leaves the disk unknown. */
        ret = switch_table(q, &t, t_off, &old_off, &old_bytes);
        if (ret == 0)
            ret = finish_delete(q, &gone, l1, old_off, old_bytes);
        if (ret < 0)
            ret = give_up(q, "delete", ret);
    }
    qcow2_free_snapshot_table(&t);
    free(l1);
    return ret;
}

int qcow2_snapshot_delete(struct image *img, const char *name_or_id)
{
    struct qcow2 *q = to_qcow2(img);
    pthread_mutex_lock(&q->lock);
    int ret = delete_locked(q, name_or_id);
    pthread_mutex_unlock(&q->lock);
    return ret;
}
