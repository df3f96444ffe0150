/* qlun — qcow2: the internal snapshot table.
 *
 * Read at open (the refcount rebuild and the overlap checks need every
 * snapshot's L1 table; the list needs the rest), rebuilt in memory when a
 * snapshot is created or deleted (snapshot_ops.c writes it at a new place
 * and then points the header at it).
 *
 * Entry layout (QEMU's docs/interop/qcow2.txt): 40 fixed bytes — L1 offset
 * (8), L1 size (4), id length (2), name length (2), date seconds (4) and
 * nanoseconds (4), VM clock (8), VM state size (4), extra data size (4) —
 * then the extra data (64-bit VM state size, disk size, icount: version 3
 * needs at least the first two), the id and the name (neither terminated),
 * padding to a multiple of 8.
 *
 * Every length in the table is untrusted: the walk is bounded by the
 * table size limit, and each snapshot's L1 table must lie inside the host.
 * Ids and names are untrusted bytes: compared as they are, shown only
 * through a printable copy.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

#define SNAP_FIXED 40u
#define MAX_SNAP_EXTRA 1024u
/* What this engine writes as extra data: VM state size, disk size,
 * icount (QEMU writes the same 24 bytes). */
#define SNAP_EXTRA_OURS 24u

/* One block: the parsed entries, then `bytes` of table. */
static struct snapshot *alloc_table_block(uint32_t nb, uint64_t bytes,
                                          uint8_t **buf)
{
    struct snapshot *s = calloc(1, nb * sizeof(*s) + bytes);
    if (s)
        *buf = (uint8_t *)(s + nb);
    return s;
}

/* Parse the entry at buf (already checked to fit in len bytes). */
static void parse_entry(struct snapshot *sn, const uint8_t *p)
{
    sn->l1_offset = get_be64(p);
    sn->l1_size = get_be32(p + 8);
    sn->id_len = get_be16(p + 12);
    sn->name_len = get_be16(p + 14);
    sn->extra_len = get_be32(p + 36);
    sn->raw = p;
    sn->raw_len = SNAP_FIXED + sn->extra_len + sn->id_len + sn->name_len;
}

/* First pass, over the fixed parts only: validate each entry and find the
 * table's size. */
static int measure_table(struct qcow2 *q, uint32_t nb, uint64_t offset,
                         uint64_t *bytes, char *err, size_t errlen)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb; i++) {
        uint8_t h[SNAP_FIXED];
        if (pos + SNAP_FIXED > MAX_SNAPSHOT_TABLE_BYTES ||
            offset + pos + SNAP_FIXED > q->host_end)
            goto too_big;
        int ret = file_pread(q->img.file, h, sizeof(h), offset + pos);
        if (ret < 0) {
            snprintf(err, errlen, "%s: cannot read the snapshot table",
                     q->path);
            return ret;
        }
        struct snapshot sn;
        parse_entry(&sn, h);
        if (sn.extra_len > MAX_SNAP_EXTRA) {
            snprintf(err, errlen, "%s: snapshot %" PRIu32 " extra data size %"
                     PRIu32 " is too large", q->path, i, sn.extra_len);
            return -EINVAL;
        }
        if ((uint64_t)sn.l1_size * 8 > MAX_L1_BYTES ||
            (sn.l1_offset & (q->cluster_size - 1)) ||
            (sn.l1_size && (sn.l1_offset == 0 || sn.l1_offset > q->host_end ||
                            (uint64_t)sn.l1_size * 8 >
                                q->host_end - sn.l1_offset))) {
            snprintf(err, errlen, "%s: snapshot %" PRIu32 " L1 table (offset "
                     "0x%" PRIx64 ", l1_size %" PRIu32 ") is invalid",
                     q->path, i, sn.l1_offset, sn.l1_size);
            return -EINVAL;
        }
        /* QEMU does not pad the last entry in the file: check the bytes
         * used, count the padded size. */
        uint64_t used = pos + sn.raw_len;
        if (offset + used > q->host_end)
            goto too_big;
        pos = ALIGN_UP(used, 8);
    }
    if (pos > MAX_SNAPSHOT_TABLE_BYTES)
        goto too_big;
    *bytes = pos;
    return 0;
too_big:
    snprintf(err, errlen, "%s: snapshot table (nb_snapshots %" PRIu32
             ") runs past the end of the image or the size limit",
             q->path, nb);
    return -EINVAL;
}

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
    uint64_t bytes;
    int ret = measure_table(q, nb, offset, &bytes, err, errlen);
    if (ret < 0)
        return ret;
    uint8_t *buf;
    q->snapshots = alloc_table_block(nb, bytes, &buf);
    if (!q->snapshots) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* Past the end of the file (the last entry's padding) reads zeros. */
    ret = file_pread(q->img.file, buf, bytes, offset);
    if (ret < 0) {
        snprintf(err, errlen, "%s: cannot read the snapshot table", q->path);
        return ret;
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb; i++) {
        parse_entry(&q->snapshots[i], buf + pos);
        pos += ALIGN_UP((uint64_t)q->snapshots[i].raw_len, 8);
    }
    q->nb_snapshots = nb;
    q->snapshots_bytes = bytes;
    return 0;
}

/* ---- building a new table ---- */

static uint64_t padded(uint64_t n)
{
    return ALIGN_UP(n, 8);
}

/* Write the entry for add at p (zeroed, room for its padded size). */
static void put_new_entry(uint8_t *p, const struct snapshot_new *add)
{
    size_t id_len = strlen(add->id), name_len = strlen(add->name);
    put_be64(p, add->l1_offset);
    put_be32(p + 8, add->l1_size);
    put_be16(p + 12, (uint16_t)id_len);
    put_be16(p + 14, (uint16_t)name_len);
    put_be32(p + 16, (uint32_t)add->date_sec);
    put_be32(p + 20, add->date_nsec);
    /* 24: VM clock 0, 32: VM state size 0: a disk-only snapshot. */
    put_be32(p + 36, SNAP_EXTRA_OURS);
    uint8_t *x = p + SNAP_FIXED;
    /* x + 0: 64-bit VM state size, 0. */
    put_be64(x + 8, add->disk_size);
    put_be64(x + 16, UINT64_MAX); /* icount: -1, not recorded */
    memcpy(x + SNAP_EXTRA_OURS, add->id, id_len);
    memcpy(x + SNAP_EXTRA_OURS + id_len, add->name, name_len);
}

static uint64_t new_entry_len(const struct snapshot_new *add)
{
    return SNAP_FIXED + SNAP_EXTRA_OURS + strlen(add->id) + strlen(add->name);
}

int qcow2_build_snapshot_table(const struct qcow2 *q, uint32_t skip,
                               const struct snapshot_new *add,
                               struct snapshot_table *t)
{
    memset(t, 0, sizeof(*t));
    uint64_t bytes = 0;
    uint32_t nb = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        if (i == skip)
            continue;
        bytes += padded(q->snapshots[i].raw_len);
        nb++;
    }
    if (add) {
        bytes += padded(new_entry_len(add));
        nb++;
    }
    if (nb > MAX_SNAPSHOTS || bytes > MAX_SNAPSHOT_TABLE_BYTES)
        return -EFBIG;
    if (nb == 0)
        return 0;
    t->snaps = alloc_table_block(nb, bytes, &t->buf);
    if (!t->snaps)
        return -ENOMEM;
    uint64_t pos = 0;
    uint32_t k = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        if (i == skip)
            continue;
        memcpy(t->buf + pos, q->snapshots[i].raw, q->snapshots[i].raw_len);
        parse_entry(&t->snaps[k++], t->buf + pos);
        pos += padded(q->snapshots[i].raw_len);
    }
    if (add) {
        put_new_entry(t->buf + pos, add);
        parse_entry(&t->snaps[k++], t->buf + pos);
        pos += padded(new_entry_len(add));
    }
    t->bytes = pos;
    t->nb = nb;
    return 0;
}

void qcow2_free_snapshot_table(struct snapshot_table *t)
{
    free(t->snaps);
    memset(t, 0, sizeof(*t));
}

/* ---- lookups ---- */

static const char *entry_id(const struct snapshot *sn)
{
    return (const char *)sn->raw + SNAP_FIXED + sn->extra_len;
}

static const char *entry_name(const struct snapshot *sn)
{
    return entry_id(sn) + sn->id_len;
}

static bool bytes_equal(const char *a, size_t alen, const char *s)
{
    return strlen(s) == alen && memcmp(a, s, alen) == 0;
}

bool qcow2_snapshot_id_is(const struct snapshot *sn, const char *s)
{
    return bytes_equal(entry_id(sn), sn->id_len, s);
}

bool qcow2_snapshot_name_is(const struct snapshot *sn, const char *s)
{
    return bytes_equal(entry_name(sn), sn->name_len, s);
}

int64_t qcow2_find_snapshot(const struct qcow2 *q, const char *s)
{
    /* By id first, as QEMU's "id or name" lookups do. */
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (qcow2_snapshot_id_is(&q->snapshots[i], s))
            return i;
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (qcow2_snapshot_name_is(&q->snapshots[i], s))
            return i;
    return -1;
}

uint64_t qcow2_next_snapshot_id(const struct qcow2 *q)
{
    uint64_t max = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        const struct snapshot *sn = &q->snapshots[i];
        char id[24];
        if (sn->id_len == 0 || sn->id_len >= sizeof(id))
            continue; /* not a number we could exceed by one */
        memcpy(id, entry_id(sn), sn->id_len);
        id[sn->id_len] = 0;
        char *end;
        uint64_t v = strtoull(id, &end, 10);
        if (*end == 0 && id[0] >= '0' && id[0] <= '9' && v > max)
            max = v;
    }
    return max + 1;
}

/* ---- the list ---- */

/* n untrusted bytes into out (outlen >= 1): printable, cut, terminated. */
static void copy_printable(char *out, size_t outlen, const char *in,
                           size_t n)
{
    size_t m = MIN(n, outlen - 1);
    for (size_t i = 0; i < m; i++)
        out[i] = in[i] >= 0x20 && in[i] <= 0x7e ? in[i] : '?';
    out[m] = 0;
}

static void describe(const struct qcow2 *q, const struct snapshot *sn,
                     struct image_snapshot_info *o)
{
    const uint8_t *p = sn->raw, *x = p + SNAP_FIXED;
    copy_printable(o->id, sizeof(o->id), entry_id(sn), sn->id_len);
    copy_printable(o->name, sizeof(o->name), entry_name(sn), sn->name_len);
    o->date_sec = get_be32(p + 16);
    o->date_nsec = get_be32(p + 20);
    o->vm_clock_nsec = get_be64(p + 24);
    /* The 64-bit size in the extra data, when present, replaces the
     * 32-bit one. */
    o->vm_state_size = sn->extra_len >= 8 ? get_be64(x) : get_be32(p + 32);
    /* Without it (version 2 images from old QEMU), QEMU takes the disk
     * size to be the current one. */
    o->disk_size = sn->extra_len >= 16 ? get_be64(x + 8) : q->img.size;
}

int qcow2_snapshot_list(struct image *img, struct image_snapshot_info **out,
                        size_t *n)
{
    struct qcow2 *q = to_qcow2(img);
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&q->lock);
    int ret = 0;
    if (q->nb_snapshots) {
        *out = calloc(q->nb_snapshots, sizeof(**out));
        if (!*out)
            ret = -ENOMEM;
        for (uint32_t i = 0; *out && i < q->nb_snapshots; i++)
            describe(q, &q->snapshots[i], &(*out)[i]);
        if (*out)
            *n = q->nb_snapshots;
    }
    pthread_mutex_unlock(&q->lock);
    return ret;
}
