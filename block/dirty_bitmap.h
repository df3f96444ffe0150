/* qlun — a dirty bitmap: which chunks of a byte range were written since
 * a job last copied them (block/mirror.c).
 *
 * One bit per chunk of `granularity` bytes (a power of two); a byte range
 * marks every chunk it touches.  Many threads may set bits at once (the
 * initiator's writes, through the mirror's tracking filter) while one
 * consumer (the job's thread) finds, clears and counts them: every bit
 * operation is an atomic read-modify-write of its 64-bit word, and the
 * count is kept from the bits each operation actually changed, so it
 * never drifts however set and clear interleave.
 */
#ifndef QLUN_BLOCK_DIRTY_BITMAP_H
#define QLUN_BLOCK_DIRTY_BITMAP_H

#include <stdatomic.h>
#include <stdint.h>

struct dirty_bitmap {
    uint64_t size;             /* bytes covered */
    uint32_t granularity;      /* bytes per bit, a power of two */
    unsigned shift;            /* log2(granularity) */
    uint64_t nbits;
    _Atomic uint64_t *words;
    _Atomic uint64_t count;    /* bits set */
};

/* A clean bitmap over [0, size) (granularity: a power of two >= 512).
 * NULL on failure (bad granularity, no memory). */
struct dirty_bitmap *dirty_bitmap_new(uint64_t size, uint32_t granularity);
void dirty_bitmap_free(struct dirty_bitmap *bm);
/* Mark / unmark every chunk that [off, off+len) touches (clipped to
 * size; len 0: nothing). */
void dirty_bitmap_set(struct dirty_bitmap *bm, uint64_t off, uint64_t len);
void dirty_bitmap_clear(struct dirty_bitmap *bm, uint64_t off, uint64_t len);
/* The offset of the first dirty chunk at or after the chunk holding off;
 * UINT64_MAX if none. */
uint64_t dirty_bitmap_next(const struct dirty_bitmap *bm, uint64_t off);
/* Dirty chunks now, and the bytes they cover (the last chunk counted
 * whole). */
uint64_t dirty_bitmap_count(const struct dirty_bitmap *bm);
uint64_t dirty_bitmap_bytes(const struct dirty_bitmap *bm);

#endif
