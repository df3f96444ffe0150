/* qlun — qcow2: guest data must never land on metadata.
 *
 * A data write goes to a host offset the image itself supplied: an L2
 * entry (in-place writes, checked here) or the refcounts (new clusters,
 * which refcount.c checks before taking them, for a new table as much as
 * for data).  A crafted or damaged image can point either at its own
 * header or tables; writing there would turn a bad entry into a destroyed
 * image.
 * As QEMU does (its "cached" overlap checks), every such target is checked
 * against the header, the active L1 table and its L2 tables, the refcount
 * table and blocks, the snapshot table and the snapshots' L1 tables
 * (inactive L2 tables are not: finding them means reading every snapshot's
 * L1 and is left to qemu-img check).  An overlap marks the image corrupt.
 *
 * Cost: one pass over the L1 table and the used part of the refcount
 * table (reftable_used: a table is allocated with room to grow, and the
 * empty rest, 8192 entries for a 64 KiB cluster, cost more than all the
 * rest of an in-place write), under the lock the caller holds anyway: a
 * few thousand comparisons for a TiB.
 */
#include <inttypes.h>

#include "qcow2-internal.h"

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

const char *qcow2_metadata_at(const struct qcow2 *q, uint64_t off,
                              uint64_t len)
{
    const uint64_t cs = q->cluster_size;
    if (overlaps(off, len, 0, cs))
        return "the header";
    if (overlaps(off, len, q->l1_offset, (uint64_t)q->l1_size * 8))
        return "the L1 table";
    if (overlaps(off, len, q->reftable_offset,
                 (uint64_t)q->reftable_clusters * cs))
        return "the refcount table";
    if (overlaps(off, len, q->snapshots_offset, q->snapshots_bytes))
        return "the snapshot table";
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (overlaps(off, len, q->snapshots[i].l1_offset,
                     (uint64_t)q->snapshots[i].l1_size * 8))
            return "a snapshot's L1 table";
    for (uint32_t i = 0; i < q->l1_size; i++)
        if (overlaps(off, len, q->l1[i] & L1E_OFFSET_MASK, cs))
            return "an L2 table";
    for (uint64_t i = 0; i < q->reftable_used; i++)
        if (overlaps(off, len, q->reftable[i] & REFT_OFFSET_MASK, cs))
            return "a refcount block";
    return NULL;
}

int qcow2_check_data_target(struct qcow2 *q, uint64_t off, uint64_t len)
{
    const char *what = qcow2_metadata_at(q, off, len);
    if (!what)
        return 0;
    return qcow2_corrupt(q, "guest data would be written at host offset 0x%"
                         PRIx64 " (+%" PRIu64 "), over %s", off, len, what);
}
