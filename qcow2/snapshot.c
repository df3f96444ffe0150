/* qlun — qcow2: the internal snapshot table.
 *
 * The engine never creates, applies or deletes snapshots; it only needs to
 * know their L1 tables, to rebuild refcounts after a crash.  Writes keep
 * snapshots intact through refcounts alone (a cluster or L2 table with
 * refcount > 1 is copied before it is written).
 *
 * Every length in the table is untrusted: the walk is bounded by the
 * table size limit, and each snapshot's L1 table must lie inside the host.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "qcow2-internal.h"

#define SNAP_FIXED 40u
#define MAX_SNAP_EXTRA 1024u

int qcow2_read_snapshots(struct qcow2 *q, uint32_t nb, uint64_t offset,
                         char *err, size_t errlen)
{
    q->nb_snapshots = 0;
    q->snapshots_offset = offset;
    q->snapshots_bytes = 0;
    if (nb == 0)
        return 0;
    if (nb > MAX_SNAPSHOTS) {
        snprintf(err, errlen, "%s: nb_snapshots %" PRIu32 " is too large",
                 q->path, nb);
        return -EINVAL;
    }
    if (offset == 0 || (offset & (q->cluster_size - 1)) ||
        offset >= q->host_end) {
        snprintf(err, errlen, "%s: snapshots_offset 0x%" PRIx64
                 " is invalid (unaligned or past the end)", q->path, offset);
        return -EINVAL;
    }
    q->snapshots = calloc(nb, sizeof(*q->snapshots));
    if (!q->snapshots) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb; i++) {
        uint8_t h[SNAP_FIXED];
        if (pos + SNAP_FIXED > MAX_SNAPSHOT_TABLE_BYTES ||
            offset + pos + SNAP_FIXED > q->host_end) {
            snprintf(err, errlen, "%s: snapshot table (nb_snapshots %" PRIu32
                     ") runs past the end of the image or the size limit",
                     q->path, nb);
            return -EINVAL;
        }
        int ret = file_pread(q->img.file, h, sizeof(h), offset + pos);
        if (ret < 0) {
            snprintf(err, errlen, "%s: cannot read the snapshot table",
                     q->path);
            return ret;
        }
        uint64_t l1_off = get_be64(h);
        uint32_t l1_size = get_be32(h + 8);
        uint32_t id_len = get_be16(h + 12), name_len = get_be16(h + 14);
        uint32_t extra = get_be32(h + 36);
        if (extra > MAX_SNAP_EXTRA) {
            snprintf(err, errlen, "%s: snapshot %" PRIu32 " extra data size %"
                     PRIu32 " is too large", q->path, i, extra);
            return -EINVAL;
        }
        if ((uint64_t)l1_size * 8 > MAX_L1_BYTES ||
            (l1_off & (q->cluster_size - 1)) ||
            (l1_size && (l1_off == 0 || l1_off > q->host_end ||
                         (uint64_t)l1_size * 8 > q->host_end - l1_off))) {
            snprintf(err, errlen, "%s: snapshot %" PRIu32 " L1 table (offset "
                     "0x%" PRIx64 ", l1_size %" PRIu32 ") is invalid",
                     q->path, i, l1_off, l1_size);
            return -EINVAL;
        }
        q->snapshots[i] = (struct snapshot){ l1_off, l1_size };
        /* QEMU does not pad the last entry in the file: check the bytes
         * used, count the padded size. */
        uint64_t used = pos + SNAP_FIXED + extra + id_len + name_len;
        if (offset + used > q->host_end)
            pos = MAX_SNAPSHOT_TABLE_BYTES + 1ull;
        else
            pos = ALIGN_UP(used, 8);
    }
    if (pos > MAX_SNAPSHOT_TABLE_BYTES) {
        snprintf(err, errlen, "%s: snapshot table (nb_snapshots %" PRIu32
                 ") runs past the end of the image or the size limit",
                 q->path, nb);
        return -EINVAL;
    }
    q->nb_snapshots = nb;
    q->snapshots_bytes = pos;
    return 0;
}
