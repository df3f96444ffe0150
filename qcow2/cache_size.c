/* qlun — qcow2: how many tables the L2 and refcount caches hold.
 *
 * The L2 cache is what decides whether a guest read costs one host read
 * or two, so by default it is as large as the tables mapping the whole
 * virtual disk (every L2 table of the active L1 fits), up to a cap; QEMU
 * makes the same choice with the same 32 MiB cap.  The refcount cache is
 * only used by allocation, which walks refcount blocks mostly in order, so
 * a quarter of the L2 cache (QEMU's default ratio) is plenty.  Memory is
 * only reserved as address space: cache.c touches a table's pages when it
 * first loads one, so a large cache on a mostly idle LUN stays small.
 */
#include "common/util.h"
#include "qcow2-internal.h"

#define L2_DEFAULT_CAP  (32ull << 20) /* bytes */
#define L2_MIN_TABLES   8    /* a request pins up to two; leave room */
#define RB_MIN_TABLES   4
#define RB_PER_L2       4    /* default refcount cache = L2 cache / 4 */

/* L2 tables that map the whole virtual disk. */
static uint64_t l2_tables_for_disk(const struct qcow2 *q)
{
    uint64_t per_table = q->cluster_size << q->l2_bits; /* guest bytes */
    return (q->img.size + per_table - 1) / per_table;
}

size_t qcow2_l2_cache_slots(const struct qcow2 *q, uint64_t bytes)
{
    uint64_t need = l2_tables_for_disk(q);
    uint64_t n = bytes ? bytes >> q->cluster_bits
                       : MIN(need, L2_DEFAULT_CAP >> q->cluster_bits);
    /* More than maps the disk would never be used (QEMU caps it too). */
    n = MIN(n, need);
    return (size_t)MAX(n, (uint64_t)L2_MIN_TABLES);
}

size_t qcow2_rb_cache_slots(const struct qcow2 *q, size_t l2_slots,
                            uint64_t bytes)
{
    uint64_t n = bytes ? bytes >> q->cluster_bits : l2_slots / RB_PER_L2;
    return (size_t)MAX(n, (uint64_t)RB_MIN_TABLES);
}
