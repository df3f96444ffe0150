/* qlun — copying what a chain holds into another node, zeroes as
 * metadata (block jobs: stream, commit, mirror; the copy-on-read filter).
 */
#ifndef QLUN_BLOCK_COPY_H
#define QLUN_BLOCK_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"

/* How image_copy_range treats ranges that read as zeros. */
enum copy_zero_mode {
    /* dst already reads as zeros wherever src does not say otherwise (a
     * new image): unallocated ranges are skipped; ranges a layer holds
     * as zeros are made zero in dst only where dst's own layer does not
     * already read as zero */
    COPY_DST_READS_ZERO,
    /* dst may hold anything (an existing device, a base with old data):
     * every range that reads as zeros is made zero in dst with
     * image_zero(IMAGE_MAY_UNMAP), never by writing zero buffers where
     * dst can zero without data */
    COPY_DST_ANY,
};

/* Copy into dst what a reader of src sees in [off, off+len) from the
 * layers of src's chain above base (NULL: the whole chain), extent by
 * extent (image_block_status_above): DATA is read from src and written to
 * dst; ranges no layer above base allocates are left alone in dst (they
 * read the same through base; with base NULL they read as zeros and are
 * handled as zero ranges); ranges that read as zeros follow zero_mode
 * and are never written as data where dst->info.can_zero.  buf (bufsize
 * bytes, aligned for direct I/O: at least 4096) is the bounce buffer; a
 * range longer than it is copied in pieces.  *copied (optional) gets the
 * bytes read and written as data (not zeroed or skipped).  Returns 0 or
 * the first negative errno (from src: read; from dst: write or zero). */
int image_copy_range(struct image *src, struct image *base, struct image *dst,
                     uint64_t off, uint64_t len, enum copy_zero_mode zero_mode,
                     void *buf, size_t bufsize, uint64_t *copied);

#endif
