/* qlun — block status through a backing chain.
 *
 * A driver's block_status answers for its own layer only: UNALLOCATED
 * there means "this layer has nothing: ask the backing child".  What a
 * reader of the whole chain sees is decided here: the first layer from
 * the top that allocates the range (data or zeros) answers; past the end
 * of a backing child the range reads as zeros and stays UNALLOCATED (as a
 * layer without a backing child).  Each step clips the extent, so the
 * answer is one kind over its whole length.
 */
#include <assert.h>

#include "common/util.h"
#include "image.h"

int image_block_status_above(struct image *img, struct image *base,
                             uint64_t off, uint64_t len,
                             enum image_extent_kind *kind,
                             uint64_t *extent_len, struct image **layer)
{
    struct image *node = img;
    for (;;) {
        int ret = image_block_status(node, off, len, kind, extent_len);
        if (ret < 0)
            return ret;
        len = *extent_len;
        struct image *below = image_backing_child(node);
        if (*kind != IMAGE_EXTENT_UNALLOCATED || !below || below == base ||
            off >= below->size)
            break;
        len = MIN(len, below->size - off);
        node = below;
    }
    if (layer)
        *layer = node;
    return 0;
}
