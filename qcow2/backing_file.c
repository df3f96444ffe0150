/* qlun — qcow2: naming a new backing file (image_ops.change_backing_file).
 *
 * The backing file's name and its format live in cluster 0: the header
 * fields backing_file_offset/size (bytes 8..19), the backing-format
 * header extension, and the name itself, which QEMU and this engine put
 * right after the extensions' end marker.  Changing them rebuilds the
 * extension area from what is there (every other extension, unknown ones
 * included, kept byte for byte in its order; the backing-format one
 * first, as QEMU writes it), then the end marker, then the name.
 *
 * Crash ordering.  The caller (image_set_backing) has flushed img's data
 * and metadata before: the new name must never be on disk while data it
 * relies on is not.  The header is then rewritten in place with ONE
 * pwrite of [0, end of the old or new name, whichever is further) and
 * flushed.  That is what QEMU does too (qcow2_update_header builds the
 * header cluster in a buffer and writes it over cluster 0 in place): no
 * format-level atomicity exists for cluster 0.  The risk: a crash that
 * tears this write leaves a mix of old and new bytes.  With a short name
 * the write stays inside the first 512-byte sector, which disks write
 * atomically (sector atomicity, what every in-place header update of
 * qcow2 relies on); a longer one spans sectors and the page cache may
 * write them back separately.  Neither ext4 nor XFS promise more.  The
 * crash test (tests/unit/test_chain_edit.c) replays every prefix of the
 * recorded writes, at write granularity.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

/* Append the extension (type, len, data) at *p of the new cluster 0 in
 * out (limit bytes); -EFBIG if it does not fit. */
static int put_ext(uint8_t *out, uint64_t limit, uint64_t *p, uint32_t type,
                   uint32_t len, const void *data)
{
    uint64_t need = 8 + ALIGN_UP((uint64_t)len, 8);
    if (*p + need > limit)
        return -EFBIG;
    put_be32(out + *p, type);
    put_be32(out + *p + 4, len);
    memcpy(out + *p + 8, data, len);
    memset(out + *p + 8 + len, 0, need - 8 - len);
    *p += need;
    return 0;
}

/* The new header, extensions and name in out (a copy of cluster 0 c0);
 * *end: bytes of out that hold them. */
static int build_cluster0(const struct qcow2 *q, const uint8_t *c0,
                          uint8_t *out, const char *name, const char *format,
                          uint64_t *end)
{
    const uint64_t cs = q->cluster_size;
    uint64_t old_off = get_be64(c0 + HDR_BACKING_OFFSET);
    uint64_t ext_end = old_off ? old_off : cs;
    uint64_t p = q->header_length;
    memcpy(out, c0, cs);
    int ret = 0;
    if (name && format)
        ret = put_ext(out, cs, &p, EXT_BACKING_FMT, strlen(format), format);
    /* Every other extension, as open found it (open validated them). */
    for (uint64_t r = q->header_length; ret == 0 && r + 8 <= ext_end;) {
        uint32_t type = get_be32(c0 + r), len = get_be32(c0 + r + 4);
        if (type == EXT_END)
            break;
        if (type != EXT_BACKING_FMT)
            ret = put_ext(out, cs, &p, type, len, c0 + r + 8);
        r += 8 + ALIGN_UP((uint64_t)len, 8);
    }
    size_t nlen = name ? strlen(name) : 0;
    if (ret == 0 && p + 8 + nlen > cs)
        ret = -EFBIG;
    if (ret < 0)
        return ret;
    memset(out + p, 0, 8); /* the end marker */
    p += 8;
    put_be64(out + HDR_BACKING_OFFSET, name ? p : 0);
    put_be32(out + HDR_BACKING_SIZE, (uint32_t)nlen);
    memcpy(out + p, name, nlen);
    p += nlen;
    /* What the old layout used past the new one is cleared. */
    uint64_t old_end = old_off ? old_off + get_be32(c0 + HDR_BACKING_SIZE)
                               : p;
    if (old_end > p)
        memset(out + p, 0, old_end - p);
    *end = MAX(p, old_end);
    return 0;
}

int qcow2_change_backing_file(struct image *img, const char *name,
                              const char *format)
{
    struct qcow2 *q = to_qcow2(img);
    if (name && strlen(name) > MAX_BACKING_NAME)
        return -ENAMETOOLONG;
    if (img->info.read_only)
        return -EROFS;
    uint8_t *c0 = malloc(q->cluster_size), *out = malloc(q->cluster_size);
    int ret = c0 && out ? 0 : -ENOMEM;
    /* Under the lock: other header fields (feature bits, the refcount
     * table) are written in place under it, and must not be undone by
     * this read-modify-write of the cluster. */
    pthread_mutex_lock(&q->lock);
    if (ret == 0 && qcow2_is_corrupt(q))
        ret = -EROFS;
    if (ret == 0)
        ret = file_pread(img->file, c0, q->cluster_size, 0);
    uint64_t end = 0;
    if (ret == 0)
        ret = build_cluster0(q, c0, out, name, format, &end);
    if (ret == 0)
        ret = qcow2_write_header(q, 0, out, end);
    pthread_mutex_unlock(&q->lock);
    free(c0);
    free(out);
    return ret;
}
