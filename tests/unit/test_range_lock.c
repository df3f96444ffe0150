/* block/range_lock: shared holders overlap, an exclusive holder is alone
 * on its range, a release lets the waiters on it go; many threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "block/range_lock.h"
#include "check.h"

#define CELLS 64          /* the range is CELLS bytes; one counter each */
#define THREADS 8
#define ROUNDS 3000

static struct range_lock rl;
/* Per byte: shared holders on it (> 0) or -1 while an exclusive one is. */
static _Atomic int cell[CELLS];
static _Atomic int violations;
static _Atomic int exclusive_rounds, shared_rounds;

static void hold_exclusive(unsigned off, unsigned len)
{
    for (unsigned i = off; i < off + len; i++) {
        int expect = 0;
        if (!atomic_compare_exchange_strong(&cell[i], &expect, -1))
            atomic_fetch_add(&violations, 1);
    }
    sched_yield();
    for (unsigned i = off; i < off + len; i++) {
        int expect = -1;
        if (!atomic_compare_exchange_strong(&cell[i], &expect, 0))
            atomic_fetch_add(&violations, 1);
    }
    atomic_fetch_add(&exclusive_rounds, 1);
}

static void hold_shared(unsigned off, unsigned len)
{
    for (unsigned i = off; i < off + len; i++)
        if (atomic_fetch_add(&cell[i], 1) < 0)
            atomic_fetch_add(&violations, 1);
    sched_yield();
    for (unsigned i = off; i < off + len; i++)
        if (atomic_fetch_sub(&cell[i], 1) <= 0)
            atomic_fetch_add(&violations, 1);
    atomic_fetch_add(&shared_rounds, 1);
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        unsigned off = (unsigned)rand_r(&seed) % CELLS;
        unsigned len = 1 + (unsigned)rand_r(&seed) % (CELLS - off);
        bool excl = rand_r(&seed) % 4 == 0;
        struct range_lock_holder h;
        range_lock(&rl, &h, off, len, excl);
        if (excl)
            hold_exclusive(off, len);
        else
            hold_shared(off, len);
        range_unlock(&rl, &h);
    }
    return NULL;
}

/* The rule itself, under contention: no byte is ever held exclusively
 * and by anyone else at the same time. */
static void test_threads(void)
{
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&violations), 0);
    CHECK_EQ(atomic_load(&exclusive_rounds) + atomic_load(&shared_rounds),
             THREADS * ROUNDS);
    CHECK(atomic_load(&exclusive_rounds) > 0);
    CHECK(rl.held == NULL);
}

static _Atomic int second_holds;

static void *take_shared(void *arg)
{
    (void)arg;
    struct range_lock_holder h;
    range_lock(&rl, &h, 100, 10, false);
    atomic_store(&second_holds, 1);
    range_unlock(&rl, &h);
    return NULL;
}

/* An exclusive holder keeps an overlapping shared request waiting until
 * it releases; a disjoint one and overlapping shared ones go at once. */
static void test_blocking(void)
{
    struct range_lock_holder a, b, c;
    range_lock(&rl, &a, 105, 10, true);
    range_lock(&rl, &b, 0, 100, true);       /* disjoint: no wait */
    range_unlock(&rl, &b);
    atomic_store(&second_holds, 0);
    pthread_t t;
    pthread_create(&t, NULL, take_shared, NULL);
    usleep(100 * 1000);
    CHECK_EQ(atomic_load(&second_holds), 0);
    range_unlock(&rl, &a);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&second_holds), 1);

    range_lock(&rl, &a, 0, 50, false);
    range_lock(&rl, &c, 10, 50, false);      /* shared overlap: no wait */
    range_unlock(&rl, &a);
    range_unlock(&rl, &c);
    CHECK(rl.held == NULL);
}

int main(void)
{
    range_lock_init(&rl);
    test_blocking();
    test_threads();
    range_lock_destroy(&rl);
    return check_summary("test_range_lock");
}
