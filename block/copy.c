/* qlun — copying what a chain holds into another node (block/copy.h).
 *
 * The walk goes extent by extent over what a reader of src sees above
 * base (image_block_status_above), so that each kind is handled whole:
 *  - DATA is read through src (the whole chain: the layer that answered
 *    may be any of them) and written to dst in bounce-buffer pieces; a
 *    piece that turns out to be all zeros (a raw layer's data, a guest
 *    that wrote zeros) is zeroed instead, so zeros never become data in
 *    dst where dst can zero without it;
 *  - UNALLOCATED above base reads through base in both src's view and
 *    dst's (dst is base, or lies on base), so it is left alone; with no
 *    base it reads as zeros, and is handled as ZERO;
 *  - ZERO follows the zero mode: a new image (COPY_DST_READS_ZERO) is
 *    only touched where its own layer would not read as zeros (it has
 *    data there, or a backing file shows through); anything else
 *    (COPY_DST_ANY) is zeroed with IMAGE_MAY_UNMAP, which a format turns
 *    into metadata (qcow2 zero clusters) and a file into holes.
 */
#include "copy.h"

#include <assert.h>
#include <string.h>

#include "common/util.h"

/* Whether all len bytes of buf are zero. */
static bool all_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Whether dst's own layer reads [off, off+*n) as zeros; *n is cut to the
 * extent that answers. */
static int dst_reads_zero(struct image *dst, uint64_t off, uint64_t *n,
                          bool *zero)
{
    enum image_extent_kind kind;
    uint64_t ext;
    int ret = image_block_status(dst, off, *n, &kind, &ext);
    if (ret < 0)
        return ret;
    *n = ext;
    /* Unallocated reads the backing file's data where there is one. */
    struct image *below = image_backing_child(dst);
    *zero = kind == IMAGE_EXTENT_ZERO ||
            (kind == IMAGE_EXTENT_UNALLOCATED && (!below || off >= below->size));
    return 0;
}

/* Make [off, off+len) of dst read as zeros as zero_mode asks. */
static int make_zero(struct image *dst, uint64_t off, uint64_t len,
                     enum copy_zero_mode zero_mode)
{
    if (zero_mode == COPY_DST_ANY)
        return image_zero(dst, off, len, IMAGE_MAY_UNMAP);
    while (len > 0) {
        uint64_t n = len;
        bool zero;
        int ret = dst_reads_zero(dst, off, &n, &zero);
        if (ret == 0 && !zero)
            ret = image_zero(dst, off, n, IMAGE_MAY_UNMAP);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

/* Copy the data extent [off, off+len) piece by piece through buf. */
static int copy_data(struct image *src, struct image *dst, uint64_t off,
                     uint64_t len, enum copy_zero_mode zero_mode, void *buf,
                     size_t bufsize, uint64_t *copied)
{
    while (len > 0) {
        size_t n = (size_t)MIN(len, (uint64_t)bufsize);
        int ret = image_read(src, buf, n, off);
        if (ret < 0)
            return ret;
        if (dst->info.can_zero && all_zero(buf, n)) {
            ret = make_zero(dst, off, n, zero_mode);
        } else {
            ret = image_write(dst, buf, n, off, 0);
            *copied += n;
        }
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

int image_copy_range(struct image *src, struct image *base, struct image *dst,
                     uint64_t off, uint64_t len, enum copy_zero_mode zero_mode,
                     void *buf, size_t bufsize, uint64_t *copied)
{
    assert(bufsize >= 4096);
    uint64_t data = 0;
    int ret = 0;
    const uint64_t end = off + len;
    while (ret == 0 && off < end) {
        enum image_extent_kind kind;
        uint64_t n;
        ret = image_block_status_above(src, base, off, end - off, &kind, &n,
                                       NULL);
        if (ret < 0)
            break;
        if (kind == IMAGE_EXTENT_DATA)
            ret = copy_data(src, dst, off, n, zero_mode, buf, bufsize, &data);
        else if (kind == IMAGE_EXTENT_ZERO || !base)
            /* With no base, what no layer allocates reads as zeros: dst
             * must too (an existing device may hold anything there). */
            ret = make_zero(dst, off, n, zero_mode);
        off += n;
    }
    if (copied)
        *copied = data;
    return ret;
}
