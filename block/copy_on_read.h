/* qlun — the copy-on-read filter (block/copy_on_read.c).
 *
 * A filter node over a format node (the "top"; other filters may sit in
 * between) whose reads copy up: what a read finds in a layer below the
 * top (down to an optional base) is written into the top, so that later
 * reads are local and the layers below can go (the stream job).  Writes,
 * zeroes and discards pass down, holding their range shared in the
 * filter's range lock; a copy-up holds its cluster-aligned range
 * exclusive and writes only where the top still allocates nothing, so it
 * never puts old data over a newer write.
 */
#ifndef QLUN_BLOCK_COPY_ON_READ_H
#define QLUN_BLOCK_COPY_ON_READ_H

#include <stdint.h>

struct image;

extern const struct block_driver copy_on_read_driver;

/* Copy up only what lies in layers above base (a node of the top's chain
 * below the top; NULL: the whole chain).  Set before any I/O goes
 * through the filter (under the drain that inserted it). */
void copy_on_read_set_base(struct image *node, struct image *base);
/* Copy up [off, off+len) (widened to whole clusters, clipped to the
 * size) without a reader: what the stream job does.  *copied (optional)
 * gets the bytes this call made local (data written, zeros set); a range
 * a concurrent read copied first is not counted again.  Returns 0 or a
 * negative errno (e.g. -ENOSPC from the top), having made local what it
 * could before the failure. */
int copy_on_read_copy_range(struct image *node, uint64_t off, uint64_t len,
                            uint64_t *copied);
/* What the filter did so far: bytes copied up by reads, and copy-ups
 * that failed (the reads themselves succeeded). */
void copy_on_read_stats(struct image *node, uint64_t *copied,
                        uint64_t *failures);

#endif
