/* qlun — the mirror's write-tracking filter: a node in the LUN's job slot,
 * right above the top, that marks in the job's dirty bitmap the range of
 * every write, write-zeroes and discard that passes through it.
 *
 * It marks AFTER the request completed, and only if it succeeded.  The
 * job clears a chunk's bit before it reads the chunk to copy it, so:
 *  - a write that completes after the clear sets the bit again, and the
 *    chunk is copied once more (whether or not the copy's read saw it);
 *  - a write that completed before the clear was already in the image
 *    when the copy read the chunk.
 * Marking before the write instead would let the job clear the bit and
 * copy the chunk while the write is still in flight, its data not yet
 * readable: the write would then never reach the target.  A failed
 * request changed nothing the initiator may rely on, so it marks nothing
 * (a partial write that failed is the initiator's to retry; the retry
 * marks).
 */
#include <stdatomic.h>

#include "block/driver.h"
#include "block/image.h"
#include "block/mirror_internal.h"

struct mirror_top {
    struct image img;          /* first */
    struct dirty_bitmap *_Atomic bm; /* set once, under the drain */
};

static void mark(struct image *img, uint64_t off, uint64_t len)
{
    struct dirty_bitmap *bm = atomic_load(&((struct mirror_top *)img)->bm);
    if (bm)
        dirty_bitmap_set(bm, off, len);
}

static int mirror_top_writev(struct image *img, const struct iovec *iov,
                             int iovcnt, uint64_t off, unsigned flags)
{
    int ret = image_writev(img->file, iov, iovcnt, off, flags);
    if (ret == 0) {
        uint64_t len = 0;
        for (int i = 0; i < iovcnt; i++)
            len += iov[i].iov_len;
        mark(img, off, len);
    }
    return ret;
}

static int mirror_top_zero(struct image *img, uint64_t off, uint64_t len,
                           unsigned flags)
{
    int ret = image_zero(img->file, off, len, flags);
    if (ret == 0)
        mark(img, off, len);
    return ret;
}

static int mirror_top_discard(struct image *img, uint64_t off, uint64_t len)
{
    int ret = image_discard(img->file, off, len);
    if (ret == 0)
        mark(img, off, len);
    return ret;
}

static const struct image_ops mirror_top_ops = {
    .name = "mirror-top",
    .writev = mirror_top_writev,
    .zero = mirror_top_zero,
    .discard = mirror_top_discard,
};

const struct block_driver mirror_top_driver = {
    .name = "mirror-top",
    .instance_size = sizeof(struct mirror_top),
    .ops = &mirror_top_ops,
    .is_filter = true,
};

void mirror_top_attach(struct image *filter, struct dirty_bitmap *bm)
{
    atomic_store(&((struct mirror_top *)filter)->bm, bm);
}
