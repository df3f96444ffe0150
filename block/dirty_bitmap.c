/* qlun — a dirty bitmap (see dirty_bitmap.h). */
#include <stdbool.h>
#include <stdlib.h>

#include "block/dirty_bitmap.h"

struct dirty_bitmap *dirty_bitmap_new(uint64_t size, uint32_t granularity)
{
    if (granularity < 512 || (granularity & (granularity - 1)))
        return NULL;
    struct dirty_bitmap *bm = calloc(1, sizeof(*bm));
    if (!bm)
        return NULL;
    bm->size = size;
    bm->granularity = granularity;
    bm->shift = (unsigned)__builtin_ctz(granularity);
    bm->nbits = (size + granularity - 1) >> bm->shift;
    size_t nwords = (size_t)((bm->nbits + 63) / 64);
    bm->words = calloc(nwords ? nwords : 1, sizeof(*bm->words));
    if (!bm->words) {
        free(bm);
        return NULL;
    }
    atomic_init(&bm->count, 0);
    return bm;
}

void dirty_bitmap_free(struct dirty_bitmap *bm)
{
    if (!bm)
        return;
    free((void *)bm->words);
    free(bm);
}

/* Apply set or clear to bits [b0, b1), a word at a time; the count
 * changes by the bits this call flipped (another thread's flips are its
 * own to count). */
static void update_bits(struct dirty_bitmap *bm, uint64_t b0, uint64_t b1,
                        bool set)
{
    while (b0 < b1) {
        uint64_t w = b0 / 64, lo = b0 % 64;
        uint64_t hi = (b1 - w * 64 < 64) ? b1 - w * 64 : 64;
        uint64_t mask = (hi == 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
        uint64_t old;
        if (set) {
            old = atomic_fetch_or(&bm->words[w], mask);
            atomic_fetch_add(&bm->count,
                             (uint64_t)__builtin_popcountll(mask & ~old));
        } else {
            old = atomic_fetch_and(&bm->words[w], ~mask);
            atomic_fetch_sub(&bm->count,
                             (uint64_t)__builtin_popcountll(mask & old));
        }
        b0 = w * 64 + hi;
    }
}

static bool bit_range(const struct dirty_bitmap *bm, uint64_t off,
                      uint64_t len, uint64_t *b0, uint64_t *b1)
{
    if (len == 0 || off >= bm->size)
        return false;
    uint64_t end = (len > bm->size - off) ? bm->size : off + len;
    *b0 = off >> bm->shift;
    *b1 = ((end - 1) >> bm->shift) + 1;
    return true;
}

void dirty_bitmap_set(struct dirty_bitmap *bm, uint64_t off, uint64_t len)
{
    uint64_t b0, b1;
    if (bit_range(bm, off, len, &b0, &b1))
        update_bits(bm, b0, b1, true);
}

void dirty_bitmap_clear(struct dirty_bitmap *bm, uint64_t off, uint64_t len)
{
    uint64_t b0, b1;
    if (bit_range(bm, off, len, &b0, &b1))
        update_bits(bm, b0, b1, false);
}

uint64_t dirty_bitmap_next(const struct dirty_bitmap *bm, uint64_t off)
{
    uint64_t b = off >> bm->shift;
    while (b < bm->nbits) {
        uint64_t w = b / 64;
        uint64_t bits = atomic_load(&bm->words[w]) & (~0ull << (b % 64));
        if (bits) {
            uint64_t found = w * 64 + (uint64_t)__builtin_ctzll(bits);
            return found < bm->nbits ? found << bm->shift : UINT64_MAX;
        }
        b = (w + 1) * 64;
    }
    return UINT64_MAX;
}

uint64_t dirty_bitmap_count(const struct dirty_bitmap *bm)
{
    return atomic_load(&bm->count);
}

uint64_t dirty_bitmap_bytes(const struct dirty_bitmap *bm)
{
    return dirty_bitmap_count(bm) << bm->shift;
}
