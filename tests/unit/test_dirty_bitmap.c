/* qlun — the dirty bitmap (block/dirty_bitmap.c): ranges to chunks,
 * finding, clearing and counting; and many setters with one consumer at
 * once: no set bit is lost to a concurrent clear of its neighbours, and
 * the count always equals the bits set. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "block/dirty_bitmap.h"
#include "check.h"

static uint64_t bits_set(const struct dirty_bitmap *bm)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < (bm->nbits + 63) / 64; w++)
        n += (uint64_t)__builtin_popcountll(atomic_load(&bm->words[w]));
    return n;
}

static void test_ranges(void)
{
    CHECK(dirty_bitmap_new(1 << 20, 3000) == NULL);   /* not a power of 2 */
    CHECK(dirty_bitmap_new(1 << 20, 256) == NULL);
    /* 10 MiB + 1 KiB at 64 KiB: 161 chunks, the last one partial. */
    uint64_t size = (10u << 20) + 1024;
    struct dirty_bitmap *bm = dirty_bitmap_new(size, 65536);
    CHECK(bm != NULL);
    CHECK_EQ(bm->nbits, 161);
    CHECK_EQ(dirty_bitmap_next(bm, 0), UINT64_MAX);
    dirty_bitmap_set(bm, 65535, 2);              /* touches chunks 0 and 1 */
    CHECK_EQ(dirty_bitmap_count(bm), 2);
    CHECK_EQ(dirty_bitmap_bytes(bm), 2 * 65536);
    CHECK_EQ(dirty_bitmap_next(bm, 0), 0);
    CHECK_EQ(dirty_bitmap_next(bm, 70000), 65536); /* its chunk's start */
    CHECK_EQ(dirty_bitmap_next(bm, 131072), UINT64_MAX);
    dirty_bitmap_set(bm, 0, 0);                   /* nothing */
    CHECK_EQ(dirty_bitmap_count(bm), 2);
    dirty_bitmap_set(bm, 63 * 65536, 3 * 65536); /* across a word: 63..65 */
    CHECK_EQ(dirty_bitmap_count(bm), 5);
    CHECK_EQ(dirty_bitmap_next(bm, 2 * 65536), 63 * 65536);
    dirty_bitmap_set(bm, size - 1, 100);          /* clipped: the last */
    CHECK_EQ(dirty_bitmap_count(bm), 6);
    CHECK_EQ(dirty_bitmap_next(bm, 66 * 65536), 160ull * 65536);
    dirty_bitmap_set(bm, 63 * 65536, 65536);     /* already set: no count */
    CHECK_EQ(dirty_bitmap_count(bm), 6);
    dirty_bitmap_clear(bm, 64 * 65536, 1);       /* the whole chunk 64 */
    CHECK_EQ(dirty_bitmap_count(bm), 5);
    CHECK_EQ(dirty_bitmap_next(bm, 64 * 65536), 65 * 65536);
    dirty_bitmap_clear(bm, 0, size);
    CHECK_EQ(dirty_bitmap_count(bm), 0);
    CHECK_EQ(bits_set(bm), 0);
    CHECK_EQ(dirty_bitmap_next(bm, 0), UINT64_MAX);
    dirty_bitmap_set(bm, 0, size);
    CHECK_EQ(dirty_bitmap_count(bm), 161);
    CHECK_EQ(bits_set(bm), 161);
    dirty_bitmap_free(bm);
}

/* Setters 1..SETTERS each own the chunks c with c % (SETTERS+1) == t and
 * set them over and over; the consumer owns the chunks of t == 0, which
 * it sets and clears in a loop.  All share every word, so a
 * read-modify-write that is not atomic loses setters' bits to the
 * consumer's clears (or resurrects the consumer's). */
#define SETTERS 3
#define CHUNKS 4096u
#define ROUNDS 200

static struct dirty_bitmap *shared;

static void *setter(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (int r = 0; r < ROUNDS; r++)
        for (uint64_t c = t; c < CHUNKS; c += SETTERS + 1)
            dirty_bitmap_set(shared, c * 4096, 4096);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (int r = 0; r < ROUNDS * 4; r++)
        for (uint64_t c = 0; c < CHUNKS; c += SETTERS + 1) {
            dirty_bitmap_set(shared, c * 4096, 1);
            dirty_bitmap_clear(shared, c * 4096, 4096);
        }
    return NULL;
}

static void test_concurrent(void)
{
    shared = dirty_bitmap_new((uint64_t)CHUNKS * 4096, 4096);
    pthread_t th[SETTERS + 1];
    pthread_create(&th[0], NULL, consumer, NULL);
    for (uintptr_t t = 1; t <= SETTERS; t++)
        pthread_create(&th[t], NULL, setter, (void *)t);
    for (int t = 0; t <= SETTERS; t++)
        pthread_join(th[t], NULL);
    uint64_t lost = 0, stray = 0;
    for (uint64_t c = 0; c < CHUNKS; c++) {
        bool dirty = (atomic_load(&shared->words[c / 64]) >> (c % 64)) & 1;
        if (c % (SETTERS + 1) == 0)
            stray += dirty;
        else
            lost += !dirty;
    }
    CHECK_EQ(lost, 0);
    CHECK_EQ(stray, 0);
    CHECK_EQ(dirty_bitmap_count(shared), bits_set(shared));
    CHECK_EQ(dirty_bitmap_count(shared), CHUNKS - CHUNKS / (SETTERS + 1));
    /* The consumer's walk finds exactly the setters' chunks, in order. */
    uint64_t found = 0, prev = 0;
    for (uint64_t off = dirty_bitmap_next(shared, 0); off != UINT64_MAX;
         off = dirty_bitmap_next(shared, off + 4096)) {
        CHECK(found == 0 || off > prev);
        CHECK((off / 4096) % (SETTERS + 1) != 0);
        prev = off;
        found++;
    }
    CHECK_EQ(found, CHUNKS - CHUNKS / (SETTERS + 1));
    dirty_bitmap_free(shared);
}

int main(void)
{
    test_ranges();
    test_concurrent();
    return check_summary("test_dirty_bitmap");
}
