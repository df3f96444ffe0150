/* qlun — qcow2: a bounded write-back cache of cluster-sized tables.
 *
 * Used twice: for L2 tables and for refcount blocks.  The number of slots
 * is fixed at open, so memory is bounded whatever the image size.  Lookup
 * is a hash over host offsets; eviction picks the least recently used
 * unpinned slot.  Everything runs under q->lock.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-internal.h"

struct slot {
    uint64_t off;     /* host offset of the table; 0 = empty slot */
    uint8_t *data;
    uint64_t lru;     /* last use, for eviction */
    int pins;
    bool dirty;
    int next;         /* hash chain, -1 ends */
};

struct cache {
    struct qcow2 *q;
    int (*pre_write)(struct qcow2 *q);
    size_t nslots;
    size_t table_size;
    struct slot *slots;
    int *buckets;     /* nbuckets heads, -1 = empty */
    size_t nbuckets;
    uint64_t clock;
    size_t ndirty;
};

static size_t bucket_of(const struct cache *c, uint64_t off)
{
    return (size_t)((off >> 9) * 0x9e3779b97f4a7c15ull >> 32) % c->nbuckets;
}

struct cache *cache_new(struct qcow2 *q, size_t nslots,
                        int (*pre_write)(struct qcow2 *q))
{
    assert(nslots >= 2);
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->q = q;
    c->pre_write = pre_write;
    c->nslots = nslots;
    c->table_size = q->cluster_size;
    c->nbuckets = nslots * 2 + 1;
    c->slots = calloc(nslots, sizeof(*c->slots));
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    if (!c->slots || !c->buckets) {
        cache_free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->nbuckets; i++)
        c->buckets[i] = -1;
    return c;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    if (c->slots)
        for (size_t i = 0; i < c->nslots; i++)
            free(c->slots[i].data);
    free(c->slots);
    free(c->buckets);
    free(c);
}

static int find(const struct cache *c, uint64_t off)
{
    for (int i = c->buckets[bucket_of(c, off)]; i >= 0; i = c->slots[i].next)
        if (c->slots[i].off == off)
            return i;
    return -1;
}

static void unhash(struct cache *c, int i)
{
    int *p = &c->buckets[bucket_of(c, c->slots[i].off)];
    while (*p != i) {
        assert(*p >= 0);
        p = &c->slots[*p].next;
    }
    *p = c->slots[i].next;
    c->slots[i].off = 0;
    if (c->slots[i].dirty) {
        c->slots[i].dirty = false;
        c->ndirty--;
    }
}

static int write_slot(struct cache *c, struct slot *s)
{
    int ret = host_pwrite(&c->q->host, s->data, c->table_size, s->off);
    if (ret == 0) {
        s->dirty = false;
        c->ndirty--;
    }
    return ret;
}

/* Find a slot for a new table: an empty one, else the LRU unpinned one
 * (written back first if dirty). */
static int victim(struct cache *c)
{
    int best = -1;
    for (size_t i = 0; i < c->nslots; i++) {
        struct slot *s = &c->slots[i];
        if (s->off == 0)
            return (int)i;
        if (s->pins == 0 && (best < 0 || s->lru < c->slots[best].lru))
            best = (int)i;
    }
    /* Callers pin at most a couple of tables at a time. */
    assert(best >= 0);
    struct slot *s = &c->slots[best];
    if (s->dirty) {
        int ret = c->pre_write ? c->pre_write(c->q) : 0;
        if (ret < 0)
            return ret;
        ret = write_slot(c, s);
        if (ret < 0)
            return ret;
    }
    unhash(c, best);
    return best;
}

int cache_get(struct cache *c, uint64_t off, bool read, void **table)
{
    assert(off != 0 && (off & (c->table_size - 1)) == 0);
    int i = find(c, off);
    if (i < 0) {
        i = victim(c);
        if (i < 0)
            return i;
        struct slot *s = &c->slots[i];
        if (!s->data) {
            s->data = malloc(c->table_size);
            if (!s->data)
                return -ENOMEM;
        }
        if (read) {
            int ret = host_pread(&c->q->host, s->data, c->table_size, off);
            if (ret < 0)
                return ret;
        } else {
            memset(s->data, 0, c->table_size);
        }
        s->off = off;
        s->dirty = false;
        s->pins = 0;
        size_t b = bucket_of(c, off);
        s->next = c->buckets[b];
        c->buckets[b] = i;
    } else if (!read) {
        memset(c->slots[i].data, 0, c->table_size);
    }
    struct slot *s = &c->slots[i];
    s->pins++;
    s->lru = ++c->clock;
    *table = s->data;
    return 0;
}

static struct slot *slot_of(struct cache *c, void *table)
{
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].data == table && c->slots[i].off != 0)
            return &c->slots[i];
    assert(!"table not in this cache");
    return NULL;
}

void cache_put(struct cache *c, void *table)
{
    struct slot *s = slot_of(c, table);
    assert(s->pins > 0);
    s->pins--;
}

void cache_mark_dirty(struct cache *c, void *table)
{
    struct slot *s = slot_of(c, table);
    assert(s->pins > 0);
    if (!s->dirty) {
        s->dirty = true;
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
    for (size_t i = 0; i < c->nslots; i++) {
        struct slot *s = &c->slots[i];
        if (s->off != 0 && s->dirty) {
            int ret = write_slot(c, s);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

void cache_forget(struct cache *c, uint64_t off)
{
    int i = find(c, off);
    if (i >= 0) {
        assert(c->slots[i].pins == 0);
        unhash(c, i);
    }
}

void cache_invalidate(struct cache *c)
{
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].off != 0) {
            assert(c->slots[i].pins == 0);
            unhash(c, (int)i);
        }
}
