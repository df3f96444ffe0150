/* qlun — qcow2: a bounded write-back cache of cluster-sized tables.
 *
 * Used twice: for L2 tables and for refcount blocks.  The number of slots
 * is fixed at open (header.c sizes it from the virtual size, or from the
 * cfgstring), so memory is bounded whatever the image size.  Everything
 * runs under q->lock, and every operation costs O(1) in the number of
 * slots (write-back: O(dirty slots)), so a 32 MiB cache of 512 tables is
 * no slower per request than one of 8:
 *
 *  - lookup: a hash over host offsets, chained through the slots;
 *  - eviction: occupied, unpinned slots sit on an LRU list (most recently
 *    released first).  A pinned slot is off that list, so the victim is
 *    simply its tail; empty slots go first (a free list, and slots never
 *    used yet are taken in order, so opening a large cache touches no
 *    per-slot memory);
 *  - table -> slot: all tables live in one array, so a table pointer
 *    gives its slot by arithmetic;
 *  - write-back: dirty slots sit on a dirty list, and each slot records
 *    which "parts" of its table changed.  A part is one I/O unit of the
 *    host: 512 bytes, or the host's logical block size if larger (never
 *    less, or an O_DIRECT write would need a read-modify-write), or the
 *    whole table if smaller.  Write-back writes each contiguous run of
 *    dirty parts with one write, after the pre_write hook as before: which
 *    bytes go out changes, not when.
 *
 * Loading without the lock (cache_get_unlocked): a miss reads the table
 * into a private buffer with q->lock dropped, so commands whose tables are
 * cached go on meanwhile.  Whether that copy is still the table's current
 * content is decided on relocking by the cache's epoch, which moves on
 * every event that could make an on-disk table differ from a copy read
 * earlier: a table written back, a new table started (read=false, which
 * also precedes every L1 change), a table forgotten (freed), everything
 * dropped.  A table loaded and changed by someone else meanwhile is
 * either still cached (then the cached copy wins) or was written back on
 * eviction (epoch moved).  If the epoch moved, the copy is thrown away and
 * the caller redoes its lookup from the L1 table, blocking this time (its
 * L1 entry may be what changed).  A second command missing on a table
 * being read this way waits for that copy instead of reading it again;
 * callers that cannot have the lock dropped (cache_get) never wait: they
 * read the table themselves, and their copy wins.
 *
 * Tables from cache_get(read=false) are new: their callers write them out
 * whole themselves before anything points to them, so tracking only the
 * parts changed later is enough (the rest is on disk already).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

#define NONE (-1)

/* A doubly linked list threaded through the slots by index. */
struct link {
    int prev, next;
};
struct list {
    int head, tail;
};

struct slot {
    uint64_t off;      /* host offset of the table; 0 = empty slot */
    int pins;
    bool dirty;        /* some part dirty; on the dirty list */
    int hnext;         /* hash chain: next slot + 1, 0 ends */
    struct link use;   /* LRU list if occupied and unpinned, else free
                        * list if empty, else on no list (pinned) */
    struct link dirt;  /* dirty list */
};

struct cache {
    struct qcow2 *q;
    int (*pre_write)(struct qcow2 *q);
    size_t nslots;
    size_t table_size;
    uint8_t *tables;      /* nslots * table_size, slot i at i * table_size */
    struct slot *slots;
    uint64_t *dirty_parts; /* words_per_slot words per slot */
    size_t part_size;
    size_t nparts;        /* parts per table */
    size_t words_per_slot;
    int *buckets;         /* nbuckets heads: slot + 1, 0 = empty */
    size_t nbuckets;
    struct list lru;      /* head = most recently released */
    struct list free;
    size_t unused;        /* slots from here on were never used */
    struct list dirty;
    size_t ndirty;
    uint64_t epoch;       /* see "Loading without the lock" */
    /* Tables being read without the lock (0 = unused entry); when full,
     * further loads go unannounced (a concurrent miss reads again). */
    uint64_t loading[CACHE_MAX_LOADING];
    pthread_cond_t loaded; /* broadcast when a load ends */
};

/* ---- intrusive lists ---- */

static struct link *use_link(struct cache *c, int i)
{
    return &c->slots[i].use;
}

static struct link *dirt_link(struct cache *c, int i)
{
    return &c->slots[i].dirt;
}

typedef struct link *(*link_fn)(struct cache *c, int i);

static void list_push_head(struct cache *c, struct list *l, link_fn f, int i)
{
    f(c, i)->prev = NONE;
    f(c, i)->next = l->head;
    if (l->head != NONE)
        f(c, l->head)->prev = i;
    else
        l->tail = i;
    l->head = i;
}

static void list_remove(struct cache *c, struct list *l, link_fn f, int i)
{
    struct link *k = f(c, i);
    if (k->prev != NONE)
        f(c, k->prev)->next = k->next;
    else
        l->head = k->next;
    if (k->next != NONE)
        f(c, k->next)->prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = NONE;
}

/* ---- dirty parts ---- */

static uint64_t *parts_of(struct cache *c, int i)
{
    return c->dirty_parts + (size_t)i * c->words_per_slot;
}

static bool part_is_dirty(struct cache *c, int i, size_t p)
{
    return parts_of(c, i)[p / 64] >> (p % 64) & 1;
}

static void clear_parts(struct cache *c, int i, size_t from, size_t to)
{
    uint64_t *w = parts_of(c, i);
    for (size_t p = from; p < to; p++)
        w[p / 64] &= ~(1ull << (p % 64));
}

static void set_clean(struct cache *c, int i)
{
    struct slot *s = &c->slots[i];
    if (!s->dirty)
        return;
    clear_parts(c, i, 0, c->nparts);
    s->dirty = false;
    list_remove(c, &c->dirty, dirt_link, i);
    c->ndirty--;
}

/* ---- construction ---- */

static size_t bucket_of(const struct cache *c, uint64_t off)
{
    return (size_t)((off >> 9) * 0x9e3779b97f4a7c15ull >> 32) % c->nbuckets;
}

/* The smallest unit a table is written back in (see the top comment). */
static size_t part_size_for(const struct qcow2 *q)
{
    size_t p = MAX((size_t)512, (size_t)q->img.file->info.request_alignment);
    return MIN(p, (size_t)q->cluster_size);
}

struct cache *cache_new(struct qcow2 *q, size_t nslots,
                        int (*pre_write)(struct qcow2 *q))
{
    assert(nslots >= 2 && nslots < (size_t)1 << 30);
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->q = q;
    c->pre_write = pre_write;
    c->nslots = nslots;
    c->table_size = q->cluster_size;
    c->part_size = part_size_for(q);
    c->nparts = c->table_size / c->part_size;
    c->words_per_slot = (c->nparts + 63) / 64;
    c->nbuckets = nslots * 2 + 1;
    c->slots = calloc(nslots, sizeof(*c->slots));
    c->dirty_parts = calloc(nslots * c->words_per_slot, sizeof(uint64_t));
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    /* One allocation for all tables (pages are only touched as slots fill,
     * so an unused part of a large cache costs address space, not RSS),
     * aligned so that O_DIRECT writes of parts need no bounce buffer. */
    size_t align = MAX((size_t)4096, (size_t)q->img.file->info.mem_alignment);
    void *tables = NULL;
    if (posix_memalign(&tables, align, nslots * c->table_size) != 0)
        tables = NULL;
    c->tables = tables;
    if (!c->slots || !c->dirty_parts || !c->buckets || !c->tables) {
        cache_free(c);
        return NULL;
    }
    c->lru = c->free = c->dirty = (struct list){ NONE, NONE };
    pthread_cond_init(&c->loaded, NULL);
    return c;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    pthread_cond_destroy(&c->loaded);
    free(c->tables);
    free(c->slots);
    free(c->dirty_parts);
    free(c->buckets);
    free(c);
}

size_t cache_slots(const struct cache *c)
{
    return c->nslots;
}

/* ---- lookup and eviction ---- */

static int find(const struct cache *c, uint64_t off)
{
    for (int i = c->buckets[bucket_of(c, off)] - 1; i != NONE;
         i = c->slots[i].hnext - 1)
        if (c->slots[i].off == off)
            return i;
    return NONE;
}

/* Take unpinned, occupied slot i out of the hash and onto the free list,
 * dropping whatever dirty data it had. */
static void unhash(struct cache *c, int i)
{
    struct slot *s = &c->slots[i];
    assert(s->pins == 0 && s->off != 0);
    int *p = &c->buckets[bucket_of(c, s->off)];
    while (*p != i + 1) {
        assert(*p != 0);
        p = &c->slots[*p - 1].hnext;
    }
    *p = s->hnext;
    s->off = 0;
    set_clean(c, i);
    list_remove(c, &c->lru, use_link, i);
    list_push_head(c, &c->free, use_link, i);
}

/* Write back the dirty parts of slot i, one write per contiguous run.  On
 * failure the parts not written stay dirty. */
static int write_slot(struct cache *c, int i)
{
    struct slot *s = &c->slots[i];
    const uint8_t *table = c->tables + (size_t)i * c->table_size;
    size_t p = 0;
    while (p < c->nparts) {
        if (!part_is_dirty(c, i, p)) {
            p++;
            continue;
        }
        size_t end = p + 1;
        while (end < c->nparts && part_is_dirty(c, i, end))
            end++;
        size_t at = p * c->part_size, len = (end - p) * c->part_size;
        int ret = file_pwrite(c->q->img.file, table + at, len, s->off + at);
        if (ret < 0)
            return ret;
        clear_parts(c, i, p, end);
        p = end;
    }
    set_clean(c, i);
    c->epoch++;
    return 0;
}

/* A slot for a new table: an empty one, else the least recently used
 * unpinned one (written back first if dirty, after pre_write).  Returns it
 * on the free list. */
static int victim(struct cache *c)
{
    if (c->free.head != NONE)
        return c->free.head;
    if (c->unused < c->nslots) {
        int fresh = (int)c->unused++;
        c->slots[fresh].dirt = (struct link){ NONE, NONE };
        list_push_head(c, &c->free, use_link, fresh);
        return fresh;
    }
    int i = c->lru.tail;
    /* Callers pin at most a couple of tables at a time. */
    assert(i != NONE);
    if (i == NONE)
        return -EBUSY;
    if (c->slots[i].dirty) {
        int ret = c->pre_write ? c->pre_write(c->q) : 0;
        /* pre_write may have written this very cache; the slot is still
         * the LRU one (nothing was got or put meanwhile). */
        if (ret == 0 && c->slots[i].dirty)
            ret = write_slot(c, i);
        if (ret < 0)
            return ret;
    }
    unhash(c, i);
    return i;
}

/* Fill free slot i with the table at off and hash it. */
static int load(struct cache *c, int i, uint64_t off, bool read)
{
    struct slot *s = &c->slots[i];
    uint8_t *table = c->tables + (size_t)i * c->table_size;
    if (read) {
        int ret = file_pread(c->q->img.file, table, c->table_size, off);
        if (ret < 0)
            return ret;
    } else {
        memset(table, 0, c->table_size);
    }
    list_remove(c, &c->free, use_link, i);
    s->off = off;
    s->pins = 0;
    size_t b = bucket_of(c, off);
    s->hnext = c->buckets[b];
    c->buckets[b] = i + 1;
    list_push_head(c, &c->lru, use_link, i);
    return 0;
}

static void pin(struct cache *c, int i, void **table)
{
    /* Pinned slots leave the LRU list, so eviction never has to skip. */
    if (c->slots[i].pins++ == 0)
        list_remove(c, &c->lru, use_link, i);
    *table = c->tables + (size_t)i * c->table_size;
}

int cache_get(struct cache *c, uint64_t off, bool read, void **table)
{
    assert(off != 0 && (off & (c->table_size - 1)) == 0);
    if (!read)
        c->epoch++;
    int i = find(c, off);
    if (i == NONE) {
        i = victim(c);
        if (i < 0)
            return i;
        int ret = load(c, i, off, read);
        if (ret < 0)
            return ret;
    } else if (!read) {
        memset(c->tables + (size_t)i * c->table_size, 0, c->table_size);
    }
    pin(c, i, table);
    return 0;
}

/* Put a copy of the table at off, read at the current epoch, in a slot. */
static int install(struct cache *c, uint64_t off, const void *copy)
{
    int i = victim(c);
    if (i < 0)
        return i;
    int ret = load(c, i, off, false);
    if (ret == 0)
        memcpy(c->tables + (size_t)i * c->table_size, copy, c->table_size);
    return ret < 0 ? ret : i;
}

static int loading_find(const struct cache *c, uint64_t off)
{
    for (size_t k = 0; k < ARRAY_SIZE(c->loading); k++)
        if (c->loading[k] == off)
            return (int)k;
    return NONE;
}

/* Read the table at off into copy with the lock dropped, announced in
 * c->loading so that others wait for it. */
static int read_unlocked(struct cache *c, uint64_t off, void *copy)
{
    int k = loading_find(c, 0);
    if (k != NONE)
        c->loading[k] = off;
    pthread_mutex_unlock(&c->q->lock);
    int ret = file_pread(c->q->img.file, copy, c->table_size, off);
    pthread_mutex_lock(&c->q->lock);
    if (k != NONE) {
        c->loading[k] = 0;
        pthread_cond_broadcast(&c->loaded);
    }
    return ret;
}

int cache_get_unlocked(struct cache *c, uint64_t off, void **table)
{
    assert(off != 0 && (off & (c->table_size - 1)) == 0);
    const uint64_t epoch = c->epoch;
    int i;
    /* Someone is reading this table: wait for their copy. */
    while ((i = find(c, off)) == NONE && loading_find(c, off) != NONE)
        pthread_cond_wait(&c->loaded, &c->q->lock);
    if (c->epoch != epoch)
        return -EAGAIN;
    if (i != NONE) {
        pin(c, i, table);
        return 0;
    }
    void *copy;
    size_t align = MAX((size_t)4096,
                       (size_t)c->q->img.file->info.mem_alignment);
    if (posix_memalign(&copy, align, c->table_size) != 0)
        return -ENOMEM;
    int ret = read_unlocked(c, off, copy);
    if (ret == 0 && c->epoch != epoch)
        ret = -EAGAIN;
    if (ret == 0) {
        i = find(c, off);
        if (i == NONE)
            ret = i = install(c, off, copy);
    }
    free(copy);
    if (ret < 0)
        return ret;
    pin(c, i, table);
    return 0;
}

static int slot_of(struct cache *c, const void *table)
{
    size_t d = (size_t)((const uint8_t *)table - c->tables);
    assert((const uint8_t *)table >= c->tables && d % c->table_size == 0 &&
           d / c->table_size < c->nslots);
    int i = (int)(d / c->table_size);
    assert(c->slots[i].off != 0 && c->slots[i].pins > 0);
    return i;
}

void cache_put(struct cache *c, void *table)
{
    int i = slot_of(c, table);
    /* The last release is the use that counts for LRU order. */
    if (--c->slots[i].pins == 0)
        list_push_head(c, &c->lru, use_link, i);
}

void cache_mark_dirty(struct cache *c, void *table, size_t at, size_t len)
{
    int i = slot_of(c, table);
    struct slot *s = &c->slots[i];
    assert(len > 0 && at < c->table_size && len <= c->table_size - at);
    uint64_t *w = parts_of(c, i);
    for (size_t p = at / c->part_size; p <= (at + len - 1) / c->part_size;
         p++)
        w[p / 64] |= 1ull << (p % 64);
    if (!s->dirty) {
        s->dirty = true;
        list_push_head(c, &c->dirty, dirt_link, i);
        c->ndirty++;
    }
}

bool cache_has_dirty(struct cache *c)
{
    return c->ndirty > 0;
}

int cache_writeback(struct cache *c, bool skip_pre)
{
    if (c->ndirty == 0)
        return 0;
    if (!skip_pre && c->pre_write) {
        int ret = c->pre_write(c->q);
        if (ret < 0)
            return ret;
    }
    /* write_slot takes a written slot off the list (the head); a failed
     * one stays and ends the loop. */
    while (c->dirty.head != NONE) {
        int ret = write_slot(c, c->dirty.head);
        if (ret < 0)
            return ret;
    }
    return 0;
}

void cache_forget(struct cache *c, uint64_t off)
{
    /* Even if not cached: a copy being read without the lock is stale. */
    c->epoch++;
    int i = find(c, off);
    if (i != NONE)
        unhash(c, i);
}

void cache_invalidate(struct cache *c)
{
    c->epoch++;
    while (c->lru.head != NONE)
        unhash(c, c->lru.head);
    /* Every table is released by now (callers hold none across this). */
    assert(c->ndirty == 0);
}
