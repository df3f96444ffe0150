/* qlun — TEMPORARY stand-in for block/copy.c (the graph helper's), linked
 * into the mirror test only while block/copy.c is absent.  Follows the
 * contract of block/copy.h; with base NULL an unallocated range reads as
 * zeros, so under COPY_DST_ANY it is zeroed in dst. */
#include <errno.h>
#include <string.h>

#include "block/copy.h"

static int zero_dst(struct image *dst, uint64_t off, uint64_t n)
{
    return image_zero(dst, off, n, IMAGE_MAY_UNMAP);
}

/* READS_ZERO: dst's layer already reads zero here (its own status). */
static bool dst_reads_zero(struct image *dst, uint64_t off, uint64_t n)
{
    while (n > 0) {
        enum image_extent_kind k;
        uint64_t e;
        if (image_block_status(dst, off, n, &k, &e) < 0)
            return false;
        if (k == IMAGE_EXTENT_DATA)
            return false;
        if (k == IMAGE_EXTENT_UNALLOCATED && image_backing_child(dst))
            return false;
        off += e;
        n -= e;
    }
    return true;
}

int image_copy_range(struct image *src, struct image *base, struct image *dst,
                     uint64_t off, uint64_t len, enum copy_zero_mode zero_mode,
                     void *buf, size_t bufsize, uint64_t *copied)
{
    if (copied)
        *copied = 0;
    while (len > 0) {
        enum image_extent_kind kind;
        uint64_t n;
        int ret = image_block_status_above(src, base, off, len, &kind, &n,
                                           NULL);
        if (ret < 0)
            return ret;
        if (kind == IMAGE_EXTENT_DATA) {
            for (uint64_t d = 0; d < n;) {
                size_t piece = n - d < bufsize ? (size_t)(n - d) : bufsize;
                ret = image_read(src, buf, piece, off + d);
                if (ret == 0)
                    ret = image_write(dst, buf, piece, off + d, 0);
                if (ret < 0)
                    return ret;
                if (copied)
                    *copied += piece;
                d += piece;
            }
        } else if (kind == IMAGE_EXTENT_UNALLOCATED && base) {
            /* reads the same through base */
        } else if (zero_mode == COPY_DST_ANY ||
                   (kind == IMAGE_EXTENT_ZERO && !dst_reads_zero(dst, off, n))) {
            ret = zero_dst(dst, off, n);
            if (ret < 0)
                return ret;
        }
        off += n;
        len -= n;
    }
    return 0;
}
