/* qlun — qcow2: guest I/O.
 *
 * Each request first takes a guest range lock over the clusters it
 * touches (shared for reads and for writes in place into clusters we own
 * and that are fully allocated, exclusive for anything that may change a
 * mapping; block status takes none: its answer is a snapshot anyway).
 * Then it works cluster by cluster:
 * look the mapping up under q->lock, drop the lock for the data I/O, and
 * retake it only to link a new cluster.
 *
 * A write into a cluster we own (COPIED) goes in place.  Anything else
 * allocates a new cluster, writes the new data and the copied head and tail
 * (from the old cluster, the decompressed cluster, the backing file or
 * zeros), and only then links it in the L2 table; the old cluster's
 * reference is dropped once that link is durable (qcow2_free_later).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing.h"
#include "common/iov.h"
#include "common/util.h"
#include "qcow2-internal.h"

/* Queued frees are applied at the next flush, or sooner past this many. */
#define MAX_PENDING 4096

/* The mapping e was replaced by a new one (linked, not yet durable):
 * its host clusters are released once the new link is.  Lock held. */
static void release_old(struct qcow2 *q, const struct l2e *e)
{
    if (e->compressed || e->host)
        qcow2_free_later(q, e->entry, e->compressed);
}

/* Bound the queue of releases (and the leak a crash could cause). */
static int sync_if_many_pending(struct qcow2 *q)
{
    return q->npending > MAX_PENDING ? qcow2_meta_sync(q) : 0;
}

/* image.c checks ranges for its callers; a driver call outside the image
 * is a bug in the layer above. */
static void assert_range(const struct qcow2 *q, uint64_t off, uint64_t len)
{
    assert(off <= q->img.size && len <= q->img.size - off);
    (void)q, (void)off, (void)len;
}

/* A held (or wanted) guest range.  A request that conflicts with a held
 * range waits on its own condition variable, queued on that holder; the
 * holder wakes exactly its queue when it releases, and each woken request
 * looks again (another conflicting range may still be held, and then it
 * queues there).  So a release wakes only requests it blocked, not every
 * waiter of the image.  Waiters live on their own stacks; a holder unlinks
 * each before waking it, so no one touches a range_lock after it is gone. */
struct range_lock {
    uint64_t start, end; /* guest clusters [start, end) */
    bool excl;
    struct range_lock *next;     /* in q->ranges (held) */
    struct range_lock *waiters;  /* requests blocked on this one */
    struct range_lock *next_waiter;
    bool blocked;                /* queued on a holder, not yet woken */
    pthread_cond_t wake;
};

/* A held range that rl may not run alongside, or NULL.  Lock held. */
static struct range_lock *range_conflict(struct qcow2 *q,
                                         const struct range_lock *rl)
{
    for (struct range_lock *r = q->ranges; r; r = r->next)
        if (r->start < rl->end && rl->start < r->end && (rl->excl || r->excl))
            return r;
    return NULL;
}

static void range_lock(struct qcow2 *q, struct range_lock *rl, uint64_t off,
                       uint64_t len, bool excl)
{
    assert(len > 0);
    rl->start = off >> q->cluster_bits;
    rl->end = ((off + len - 1) >> q->cluster_bits) + 1;
    rl->excl = excl;
    rl->waiters = NULL;
    rl->blocked = false;
    pthread_cond_init(&rl->wake, NULL);
    pthread_mutex_lock(&q->lock);
    struct range_lock *holder;
    while ((holder = range_conflict(q, rl))) {
        rl->blocked = true;
        rl->next_waiter = holder->waiters;
        holder->waiters = rl;
        while (rl->blocked)
            pthread_cond_wait(&rl->wake, &q->lock);
    }
    rl->next = q->ranges;
    q->ranges = rl;
    pthread_mutex_unlock(&q->lock);
}

static void range_unlock(struct qcow2 *q, struct range_lock *rl)
{
    pthread_mutex_lock(&q->lock);
    struct range_lock **p = &q->ranges;
    while (*p != rl)
        p = &(*p)->next;
    *p = rl->next;
    for (struct range_lock *w = rl->waiters, *next; w; w = next) {
        next = w->next_waiter;
        w->blocked = false;
        pthread_cond_signal(&w->wake);
    }
    rl->waiters = NULL;
    pthread_mutex_unlock(&q->lock);
    pthread_cond_destroy(&rl->wake);
}

/* A scratch iovec array big enough to slice any part of a request. */
struct slicer {
    const struct iovec *iov;
    int iovcnt;
    struct iovec *tmp;
    struct iovec small[16];
};

static int slicer_init(struct slicer *s, const struct iovec *iov, int iovcnt)
{
    s->iov = iov;
    s->iovcnt = iovcnt;
    s->tmp = s->small;
    if (iovcnt > (int)ARRAY_SIZE(s->small)) {
        s->tmp = malloc(sizeof(*iov) * (size_t)iovcnt);
        if (!s->tmp)
            return -ENOMEM;
    }
    return 0;
}

static void slicer_free(struct slicer *s)
{
    if (s->tmp != s->small)
        free(s->tmp);
}

/* Bytes [off, off+len) of the request; returns the entry count. */
static int slice(struct slicer *s, size_t off, size_t len)
{
    int n = iov_slice(s->tmp, s->iovcnt, s->iov, s->iovcnt, off, len);
    assert(n >= 0);
    return n;
}

/* Read guest bytes [goff, goff+len) from the backing chain into iov (a
 * request-relative slice), zeros past its end or without one. */
static int read_backing(struct qcow2 *q, const struct iovec *iov, int iovcnt,
                        uint64_t goff, size_t len)
{
    size_t from_backing = 0;
    if (q->img.backing && goff < q->img.backing->size)
        from_backing = (size_t)MIN((uint64_t)len, q->img.backing->size - goff);
    if (from_backing) {
        struct iovec stack[16], *part = stack;
        if (iovcnt > (int)ARRAY_SIZE(stack)) {
            part = malloc(sizeof(*iov) * (size_t)iovcnt);
            if (!part)
                return -ENOMEM;
        }
        int n = iov_slice(part, iovcnt, iov, iovcnt, 0, from_backing);
        assert(n >= 0);
        int ret = image_readv(q->img.backing, part, n, goff);
        if (part != stack)
            free(part);
        if (ret < 0)
            return ret;
    }
    if (len > from_backing)
        iov_memset(iov, iovcnt, from_backing, 0, len - from_backing);
    return 0;
}

static int read_backing_buf(struct qcow2 *q, uint8_t *buf, uint64_t goff,
                            size_t len)
{
    struct iovec v = { buf, len };
    return read_backing(q, &v, 1, goff, len);
}

/* One piece of the guest → host mapping. */
struct extent {
    enum sc_kind kind;
    uint64_t len;
    uint64_t host;  /* SC_DATA: host offset of the first byte */
    uint64_t entry; /* SC_COMPRESSED: the descriptor */
};

/* Describe the mapping at guest offset off, at most len bytes, merging
 * neighbouring (sub)clusters of the same kind (and, for data, contiguous
 * on the host).  Lock held. */
static int map_extent(struct qcow2 *q, uint64_t off, uint64_t len,
                      struct extent *x)
{
    const uint64_t cs = q->cluster_size;
    uint64_t gc = off >> q->cluster_bits;
    uint64_t co = off & (cs - 1);
    struct l2e e;
    int ret = qcow2_get_l2e(q, gc, &e);
    if (ret < 0)
        return ret;
    unsigned sc = (unsigned)(co / q->sc_size);
    x->kind = qcow2_sc_kind(q, &e, sc);
    x->host = x->kind == SC_DATA ? e.host + co : 0;
    x->entry = e.entry;
    if (x->kind == SC_COMPRESSED) {
        x->len = MIN(len, cs - co);
        return 0;
    }
    /* Within the cluster. */
    unsigned last = sc;
    while (last + 1 < q->subclusters && qcow2_sc_kind(q, &e, last + 1) ==
                                            x->kind)
        last++;
    uint64_t n = (last + 1) * q->sc_size - co;
    /* Across clusters, while it stays the same. */
    while (n < len && last + 1 == q->subclusters && n < (64u << 20)) {
        struct l2e f;
        ret = qcow2_get_l2e(q, ++gc, &f);
        if (ret < 0)
            return ret;
        if (qcow2_sc_kind(q, &f, 0) != x->kind ||
            (x->kind == SC_DATA && f.host != x->host + n))
            break;
        last = 0;
        while (last + 1 < q->subclusters &&
               qcow2_sc_kind(q, &f, last + 1) == x->kind)
            last++;
        n += (last + 1) * q->sc_size;
    }
    x->len = MIN(n, len);
    return 0;
}

static int corrupt_locked(struct qcow2 *q, const char *what, uint64_t off)
{
    pthread_mutex_lock(&q->lock);
    int ret = qcow2_corrupt(q, "%s at guest offset %llu", what,
                            (unsigned long long)off);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int read_compressed(struct qcow2 *q, uint64_t entry, uint64_t goff,
                           uint8_t *out)
{
    int ret = qcow2_decompress_cluster(q, entry, out);
    if (ret == -EUCLEAN)
        ret = corrupt_locked(q, "compressed cluster does not decompress",
                             goff);
    return ret;
}

static int qcow2_readv(struct image *img, const struct iovec *iov, int iovcnt,
                       uint64_t off)
{
    struct qcow2 *q = to_qcow2(img);
    size_t len = iov_size(iov, iovcnt);
    struct range_lock rl;
    struct slicer s;
    uint8_t *cbuf = NULL;
    int ret;

    assert_range(q, off, len);
    if (len == 0)
        return 0;
    ret = slicer_init(&s, iov, iovcnt);
    if (ret < 0)
        return ret;
    range_lock(q, &rl, off, len, false);
    for (size_t pos = 0; pos < len;) {
        struct extent x;
        pthread_mutex_lock(&q->lock);
        ret = map_extent(q, off + pos, len - pos, &x);
        pthread_mutex_unlock(&q->lock);
        if (ret < 0)
            break;
        int n = slice(&s, pos, x.len);
        switch (x.kind) {
        case SC_DATA:
            ret = file_preadv(q->img.file, s.tmp, n, x.host);
            break;
        case SC_ZERO:
            iov_memset(s.tmp, n, 0, 0, x.len);
            break;
        case SC_UNALLOC:
            ret = read_backing(q, s.tmp, n, off + pos, x.len);
            break;
        case SC_COMPRESSED:
            if (!cbuf && !(cbuf = malloc(q->cluster_size))) {
                ret = -ENOMEM;
                break;
            }
            ret = read_compressed(q, x.entry, off + pos, cbuf);
            if (ret == 0)
                iov_from_buf(s.tmp, n, 0,
                             cbuf + ((off + pos) & (q->cluster_size - 1)),
                             x.len);
            break;
        }
        if (ret < 0)
            break;
        pos += x.len;
    }
    range_unlock(q, &rl);
    slicer_free(&s);
    free(cbuf);
    return ret;
}

/* Fill buf[from, to) — guest cluster gc — with what it reads as now,
 * according to the old entry e (subcluster granularity).  cbuf: the
 * decompressed cluster if e is compressed. */
static int fill_old(struct qcow2 *q, uint64_t gc, const struct l2e *e,
                    const uint8_t *cbuf, uint8_t *buf, uint64_t from,
                    uint64_t to)
{
    uint64_t goff = gc << q->cluster_bits;
    while (from < to) {
        unsigned sc = (unsigned)(from / q->sc_size);
        uint64_t n = MIN(to, (sc + 1) * q->sc_size) - from;
        int ret = 0;
        switch (qcow2_sc_kind(q, e, sc)) {
        case SC_DATA:
            ret = file_pread(q->img.file, buf + from, n, e->host + from);
            break;
        case SC_ZERO:
            memset(buf + from, 0, n);
            break;
        case SC_UNALLOC:
            ret = read_backing_buf(q, buf + from, goff + from, n);
            break;
        case SC_COMPRESSED:
            memcpy(buf + from, cbuf + from, n);
            break;
        }
        if (ret < 0)
            return ret;
        from += n;
    }
    return 0;
}

static uint32_t sc_mask(unsigned a, unsigned b) /* subclusters [a, b) */
{
    assert(a < b && b <= 32);
    return (uint32_t)(((1ull << b) - 1) & ~((1ull << a) - 1));
}

/* Does every part of the subclusters in new_alloc outside [a, b) read
 * as zeros now (old entry e, not compressed)? */
static bool cow_reads_zero(const struct qcow2 *q, uint64_t gc,
                           const struct l2e *e, uint32_t new_alloc,
                           uint64_t a, uint64_t b)
{
    const uint64_t scs = q->sc_size;
    if (e->compressed)
        return false;
    for (unsigned sc = 0; sc < q->subclusters; sc++) {
        uint64_t lo = sc * scs, hi = lo + scs;
        if (!(new_alloc & (1u << sc)) || (a <= lo && hi <= b))
            continue;
        switch (qcow2_sc_kind(q, e, sc)) {
        case SC_ZERO:
            break;
        case SC_UNALLOC:
            /* Zeros without a backing file, or past its end. */
            if (q->img.backing &&
                (gc << q->cluster_bits) + lo < q->img.backing->size)
                return false;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Is zeroing a new cluster with file_zero() and then writing only the
 * request cheaper than writing the whole cluster?  On regular files with
 * FALLOC_FL_ZERO_RANGE, yes (like QEMU's handle_alloc_space).  Not on block
 * devices: write-zeroes there is synchronous device I/O, while the buffered
 * write is not.  With O_DIRECT the request must be block-aligned, or the
 * host would read-modify-write around it. */
static bool zero_cheaply(struct qcow2 *q, uint64_t a, uint64_t b)
{
    const struct image_info *fi = &q->img.file->info;
    return !fi->is_device && file_zero_range_works(q->img.file) &&
           IS_ALIGNED(a | b, (uint64_t)fi->request_alignment);
}

static bool owned_full(const struct qcow2 *q, const struct l2e *e);

/* Write buf[from, a) (the head), the request iov and buf[b, to) (the tail)
 * with one pwritev at host cluster offset h + from: one system call for
 * the whole range instead of one each, and no copy of the request. */
static int pwrite_around(struct qcow2 *q, uint64_t h, const uint8_t *buf,
                         uint64_t from, uint64_t a, uint64_t b, uint64_t to,
                         const struct iovec *iov, int iovcnt)
{
    struct iovec small[18], *v = small;
    if (iovcnt + 2 > (int)ARRAY_SIZE(small)) {
        v = malloc(sizeof(*v) * (size_t)(iovcnt + 2));
        if (!v)
            return -ENOMEM;
    }
    int n = 0;
    if (a > from)
        v[n++] = (struct iovec){ (void *)(buf + from), a - from };
    memcpy(v + n, iov, sizeof(*iov) * (size_t)iovcnt);
    n += iovcnt;
    if (to > b)
        v[n++] = (struct iovec){ (void *)(buf + b), to - b };
    int ret = file_pwritev(q->img.file, v, n, h + from);
    if (v != small)
        free(v);
    return ret;
}

/* Write [a, b) in place into host cluster e->host (ours, uncompressed).
 * Subclusters that held no data get their uncovered parts from what they
 * read as before, in the same pwritev.  Then, if subclusters became
 * allocated, say so in the L2 entry.  Neither lock held on entry. */
static int write_in_place(struct qcow2 *q, uint64_t gc, const struct l2e *e,
                          uint64_t a, uint64_t b, const struct iovec *iov,
                          int iovcnt)
{
    const uint64_t scs = q->sc_size;
    unsigned A = (unsigned)(a / scs), B = (unsigned)DIV_ROUND_UP(b, scs);
    uint32_t touched = sc_mask(A, B);
    uint64_t from = a, to = b;
    uint8_t *buf = NULL;
    int ret = 0;

    if (!(e->alloc & (1u << A)))
        from = A * scs;
    if (!(e->alloc & (1u << (B - 1))))
        to = B * scs;
    if (from < a || to > b) {
        buf = malloc(q->cluster_size);
        if (!buf)
            return -ENOMEM;
        if (from < a)
            ret = fill_old(q, gc, e, NULL, buf, from, a);
        if (ret == 0 && to > b)
            ret = fill_old(q, gc, e, NULL, buf, b, to);
    }
    if (ret == 0)
        ret = pwrite_around(q, e->host, buf, from, a, b, to, iov, iovcnt);
    free(buf);
    if (ret < 0 || (e->alloc & touched) == touched)
        return ret;
    /* Data on the host: now say so in the L2 entry. */
    pthread_mutex_lock(&q->lock);
    if (q->extended_l2)
        ret = qcow2_set_l2e(q, gc, e->host | OFLAG_COPIED,
                            (uint64_t)(e->zero & ~touched) << 32 |
                                (e->alloc | touched));
    else
        ret = qcow2_set_l2e(q, gc, e->host | OFLAG_COPIED, 0);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* Allocate one host cluster for guest data.  *fresh: it lies at or past
 * q->host_end as it was before this call, i.e. past the file's end at open
 * and past every cluster allocated since, so nothing was ever written
 * there: it reads as zeros (a hole, or beyond end of file) without being
 * zeroed.  A cluster freed and reused lies below host_end and keeps what
 * its previous owner wrote: never fresh.  Nor is anything on a device
 * (host_end is its capacity; its blocks hold whatever was there).  After
 * a crash, a cluster past the file's end was never referenced from disk:
 * its L2 entry is written only after a file_flush that made the file's
 * new length durable along with the data.  Lock held. */
static int64_t alloc_data_cluster(struct qcow2 *q, uint64_t *h, bool *fresh)
{
    uint64_t end = q->host_end;
    int64_t got = qcow2_alloc_clusters(q, 1, h);
    *fresh = got > 0 && q->img.file->info.zeroes_past_eof && *h >= end;
    return got;
}

/* Fill the new cluster h with what [lo, hi) must hold: the request at
 * [a, b), and around it, in the subclusters of new_alloc, what guest
 * cluster gc reads as now (old entry e; cbuf: e decompressed).  Whatever
 * already reads as zeros in the new cluster (fresh) or can be zeroed
 * without data transfer is not written.  Neither lock held. */
static int fill_new_cluster(struct qcow2 *q, uint64_t gc, const struct l2e *e,
                            const uint8_t *cbuf, uint64_t h, bool fresh,
                            uint32_t new_alloc, uint64_t a, uint64_t b,
                            const struct iovec *iov, int iovcnt)
{
    const uint64_t scs = q->sc_size;
    unsigned lo_sc = (unsigned)__builtin_ctz(new_alloc);
    unsigned hi_sc = 32u - (unsigned)__builtin_clz(new_alloc);
    uint64_t lo = lo_sc * scs, hi = hi_sc * scs;
    assert(lo <= a && b <= hi);
    if (lo == a && hi == b) /* the request covers all of it */
        return file_pwritev(q->img.file, iov, iovcnt, h + a);
    bool old_zero = cow_reads_zero(q, gc, e, new_alloc, a, b);
    if (old_zero && fresh)
        return file_pwritev(q->img.file, iov, iovcnt, h + a);
    if (old_zero && zero_cheaply(q, a, b)) {
        /* Head and tail read as zeros: let the host zero [lo, hi)
         * (fallocate: no data transferred) and write only the request.
         * Safety: file_zero returns once the range reads as zeros, before
         * the pwritev and before the L2 entry is set; the L2 table reaches
         * the disk only after a file_flush (qcow2_l2_pre_write), which
         * makes the fallocate's extent changes durable along with the
         * data.  So a crash never leaves the L2 entry pointing at a
         * cluster whose head or tail still holds a previous owner's
         * bytes. */
        int ret = file_zero(q->img.file, h + lo, hi - lo, false);
        if (ret == 0)
            return file_pwritev(q->img.file, iov, iovcnt, h + a);
        if (ret != -ENOTSUP)
            return ret;
    }
    /* Everything the new cluster holds that the request does not cover:
     * head, tail, and the other allocated subclusters; bytes between
     * those subclusters are never read (their bits say unallocated). */
    uint8_t *buf = calloc(1, hi); /* bytes [0, hi) of the cluster */
    if (!buf)
        return -ENOMEM;
    int ret = 0;
    for (unsigned sc = lo_sc; ret == 0 && sc < hi_sc; sc++) {
        if (!(new_alloc & (1u << sc)))
            continue;
        uint64_t slo = sc * scs, shi = slo + scs;
        if (slo < a)
            ret = fill_old(q, gc, e, cbuf, buf, slo, MIN(shi, a));
        if (ret == 0 && shi > b)
            ret = fill_old(q, gc, e, cbuf, buf, MAX(slo, b), shi);
    }
    if (ret == 0)
        ret = pwrite_around(q, h, buf, lo, a, b, hi, iov, iovcnt);
    free(buf);
    return ret;
}

/* Copy on write of guest cluster gc (old entry e) into a new cluster,
 * with [a, b) from the request; link it and release the old one.  Entered
 * with q->lock held; returns with it released. */
static int write_new_cluster(struct qcow2 *q, uint64_t gc, const struct l2e *e,
                             uint64_t a, uint64_t b, const struct iovec *iov,
                             int iovcnt)
{
    const uint64_t cs = q->cluster_size;
    uint8_t *cbuf = NULL;
    uint64_t h;
    bool fresh;
    int64_t got = alloc_data_cluster(q, &h, &fresh);
    pthread_mutex_unlock(&q->lock);
    if (got < 0)
        return (int)got;

    int ret = 0;
    uint32_t new_alloc = sc_mask((unsigned)(a / q->sc_size),
                                 (unsigned)DIV_ROUND_UP(b, q->sc_size));
    if (e->compressed) {
        new_alloc = sc_mask(0, q->subclusters);
        /* A whole-cluster write keeps nothing of the old content: no
         * need to decompress it. */
        if (a != 0 || b != cs) {
            cbuf = malloc(cs);
            ret = cbuf ? read_compressed(q, e->entry, gc << q->cluster_bits,
                                         cbuf)
                       : -ENOMEM;
        }
    } else if (q->extended_l2) {
        new_alloc |= e->alloc; /* keep the subclusters that had data */
    }
    if (ret == 0)
        ret = fill_new_cluster(q, gc, e, cbuf, h, fresh, new_alloc, a, b, iov,
                               iovcnt);
    free(cbuf);

    pthread_mutex_lock(&q->lock);
    if (ret == 0) {
        uint64_t bitmap = 0;
        if (q->extended_l2)
            bitmap = (uint64_t)(e->zero & ~new_alloc) << 32 | new_alloc;
        ret = qcow2_set_l2e(q, gc, h | OFLAG_COPIED, bitmap);
    }
    if (ret < 0) {
        qcow2_free_now(q, h, 1); /* nothing on disk references it */
    } else {
        release_old(q, e);
        ret = sync_if_many_pending(q);
    }
    pthread_mutex_unlock(&q->lock);
    return ret;
}

/* Write request bytes [a, b) of guest cluster gc from iov (already sliced
 * to exactly those bytes): in place into a cluster we own, else copy on
 * write into a new one.  Range lock held, q->lock not.  shared: the range
 * lock is held shared, so only a write that changes no metadata may
 * proceed (into an owned, fully allocated cluster); anything else returns
 * -EAGAIN before writing, and the caller retakes the range exclusively. */
static int write_cluster(struct qcow2 *q, uint64_t gc, uint64_t a,
                         uint64_t b, const struct iovec *iov, int iovcnt,
                         bool shared)
{
    struct l2e e;
    assert(a < b && b <= q->cluster_size);
    pthread_mutex_lock(&q->lock);
    int ret = qcow2_prepare_write(q);
    if (ret == 0)
        ret = qcow2_get_l2e(q, gc, &e);
    if (ret == 0 && shared && !owned_full(q, &e))
        ret = -EAGAIN;
    if (ret < 0) {
        pthread_mutex_unlock(&q->lock);
        return ret;
    }
    if (!(e.host && e.copied && !e.compressed))
        return write_new_cluster(q, gc, &e, a, b, iov, iovcnt);
    ret = qcow2_check_data_target(q, e.host, q->cluster_size);
    pthread_mutex_unlock(&q->lock);
    return ret < 0 ? ret : write_in_place(q, gc, &e, a, b, iov, iovcnt);
}

/* Most whole clusters one write_run() call handles. */
#define MAX_RUN 64

/* Ours (refcount 1), uncompressed, data in every subcluster: a write
 * into it changes no metadata. */
static bool owned_full(const struct qcow2 *q, const struct l2e *e)
{
    return e->host && e->copied && !e->compressed &&
           e->alloc == sc_mask(0, q->subclusters);
}

/* Write m >= 2 whole guest clusters starting at gc from iov (exactly
 * m * cluster_size bytes) with as few host writes as possible.  Returns
 * the bytes written (a multiple of the cluster size, > 0), 0 when the
 * first clusters do not form a run (the caller goes cluster by cluster),
 * or a negative errno.  Range lock held, q->lock not.
 *
 * Two kinds of run:
 *  - clusters we own, fully allocated and contiguous on the host: one
 *    pwritev in place, no metadata change (what write_cluster would do
 *    for each, in one system call);
 *  - clusters that need a new host cluster: allocate a contiguous run,
 *    one pwritev, then link each.  Nothing of the old content survives a
 *    whole-cluster write, so there is no head or tail to copy.
 * Safety is write_cluster's: the refcount increases are in the refcount
 * cache before the pwritev; the L2 entries are set only after the pwritev
 * returned, and an L2 table is written back only after the refcounts
 * (unless lazy) and a file_flush (qcow2_l2_pre_write); the old clusters
 * are freed through qcow2_free_later, once the new entries are durable. */
static int64_t write_run(struct qcow2 *q, uint64_t gc, uint64_t m,
                         const struct iovec *iov, int iovcnt, bool shared)
{
    const uint64_t cs = q->cluster_size;
    struct l2e old[MAX_RUN];
    uint64_t n = 0, h;
    int ret;

    m = MIN(m, (uint64_t)MAX_RUN);
    pthread_mutex_lock(&q->lock);
    ret = qcow2_prepare_write(q);
    if (ret == 0)
        ret = qcow2_get_l2e(q, gc, &old[0]);
    if (ret < 0)
        goto unlock;
    if (owned_full(q, &old[0])) {
        for (n = 1; n < m; n++) {
            ret = qcow2_get_l2e(q, gc + n, &old[n]);
            if (ret < 0)
                goto unlock;
            if (!owned_full(q, &old[n]) ||
                old[n].host != old[0].host + n * cs)
                break;

        }
        if (n >= 2)
            ret = qcow2_check_data_target(q, old[0].host, n * cs);
        pthread_mutex_unlock(&q->lock);
        if (ret < 0)
            return ret;
        if (n < 2)
            return 0;
        struct iovec part[16];
        struct iovec *pv = iovcnt > 16 ? malloc(sizeof(*pv) * (size_t)iovcnt)
                                       : part;
        if (!pv)
            return -ENOMEM;
        int cnt = iov_slice(pv, iovcnt, iov, iovcnt, 0, n * cs);
        assert(cnt >= 0);
        ret = file_pwritev(q->img.file, pv, cnt, old[0].host);
        if (pv != part)
            free(pv);
        return ret < 0 ? ret : (int64_t)(n * cs);
    }
    if (shared) { /* allocating: needs the range exclusively */
        ret = -EAGAIN;
        goto unlock;
    }
    /* Clusters we own stay where they are (write_cluster writes them in
     * place); the run is the clusters before the first of them. */
    for (n = 0; n < m; n++) {
        if (n > 0) {
            ret = qcow2_get_l2e(q, gc + n, &old[n]);
            if (ret < 0)
                goto unlock;
        }
        if (old[n].host && old[n].copied && !old[n].compressed)
            break;
    }
    if (n < 2) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    int64_t got = qcow2_alloc_clusters(q, n, &h);
    pthread_mutex_unlock(&q->lock);
    if (got < 0)
        return (int)got;
    n = (uint64_t)got;

    struct iovec part[16];
    struct iovec *pv = iovcnt > 16 ? malloc(sizeof(*pv) * (size_t)iovcnt)
                                   : part;
    if (!pv) {
        ret = -ENOMEM;
    } else {
        int cnt = iov_slice(pv, iovcnt, iov, iovcnt, 0, n * cs);
        assert(cnt >= 0);
        ret = file_pwritev(q->img.file, pv, cnt, h);
        if (pv != part)
            free(pv);
    }

    pthread_mutex_lock(&q->lock);
    uint64_t linked = 0;
    uint64_t bitmap = q->extended_l2 ? sc_mask(0, q->subclusters) : 0;
    while (ret == 0 && linked < n) {
        ret = qcow2_set_l2e(q, gc + linked, (h + linked * cs) | OFLAG_COPIED,
                            bitmap);
        if (ret == 0)
            linked++;
    }
    /* Clusters not linked: nothing on disk references them. */
    if (linked < n)
        qcow2_free_now(q, h + linked * cs, n - linked);
    for (uint64_t i = 0; i < linked; i++)
        release_old(q, &old[i]);
    if (ret == 0)
        ret = sync_if_many_pending(q);
    pthread_mutex_unlock(&q->lock);
    return ret < 0 ? ret : (int64_t)(n * cs);
unlock:
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int qcow2_flush(struct image *img);

/* Write request bytes [pos, len) at guest offset off + pos; *pos
 * advances over what was written.  Range lock held (shared: see
 * write_cluster). */
static int write_clusters(struct qcow2 *q, struct slicer *s, uint64_t off,
                          size_t len, size_t *pos, bool shared)
{
    const uint64_t cs = q->cluster_size;
    while (*pos < len) {
        uint64_t goff = off + *pos;
        uint64_t a = goff & (cs - 1);
        if (a == 0 && len - *pos >= 2 * cs) {
            /* Whole clusters: try them as one run. */
            uint64_t m = (len - *pos) / cs;
            int cnt = slice(s, *pos, m * cs);
            int64_t done = write_run(q, goff >> q->cluster_bits, m, s->tmp,
                                     cnt, shared);
            if (done < 0)
                return (int)done;
            if (done > 0) {
                *pos += (size_t)done;
                continue;
            }
        }
        uint64_t n = MIN(len - *pos, cs - a);
        int cnt = slice(s, *pos, n);
        int ret = write_cluster(q, goff >> q->cluster_bits, a, a + n, s->tmp,
                                cnt, shared);
        if (ret < 0)
            return ret;
        *pos += n;
    }
    return 0;
}

/* The range lock is taken shared first: a write into clusters we own and
 * that are fully allocated changes no mapping, so like a read it can run
 * alongside others on the same clusters (an L2 entry only changes under
 * the exclusive lock, so it stays valid while we write).  At the first
 * cluster that needs allocation, COW or an L2 update, the rest of the
 * request retakes the lock exclusively, and write_cluster looks the
 * entries up again. */
static int qcow2_writev(struct image *img, const struct iovec *iov,
                        int iovcnt, uint64_t off, unsigned flags)
{
    struct qcow2 *q = to_qcow2(img);
    size_t len = iov_size(iov, iovcnt), pos = 0;
    struct range_lock rl;
    struct slicer s;
    int ret;

    assert_range(q, off, len);
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    if (len == 0)
        return 0;
    ret = slicer_init(&s, iov, iovcnt);
    if (ret < 0)
        return ret;
    range_lock(q, &rl, off, len, false);
    ret = write_clusters(q, &s, off, len, &pos, true);
    range_unlock(q, &rl);
    if (ret == -EAGAIN) {
        range_lock(q, &rl, off + pos, len - pos, true);
        ret = write_clusters(q, &s, off, len, &pos, false);
        range_unlock(q, &rl);
    }
    slicer_free(&s);
    if (ret == 0 && (flags & IMAGE_FUA))
        ret = qcow2_flush(img);
    return ret;
}

enum zero_mode { Z_KEEP, Z_UNMAP, Z_DISCARD };

/* Does [a, b) of the cluster described by e already read as zeros? */
static bool reads_zero(const struct qcow2 *q, const struct l2e *e,
                       uint64_t a, uint64_t b)
{
    for (unsigned sc = (unsigned)(a / q->sc_size);
         sc < DIV_ROUND_UP(b, q->sc_size); sc++) {
        enum sc_kind k = qcow2_sc_kind(q, e, sc);
        if (!(k == SC_ZERO || (k == SC_UNALLOC && !q->img.backing)))
            return false;
    }
    return true;
}

/* Make [a, b) of guest cluster gc read as zeros.  Range lock held. */
static int zero_cluster(struct qcow2 *q, uint64_t gc, uint64_t a, uint64_t b,
                        enum zero_mode mode, bool no_fallback)
{
    const uint64_t cs = q->cluster_size;
    const uint64_t scs = q->sc_size;
    const bool v3 = q->version >= 3;
    struct l2e e;
    bool write_zeros = false;
    uint64_t entry = 0, bitmap = 0;

    pthread_mutex_lock(&q->lock);
    int ret = qcow2_prepare_write(q);
    if (ret == 0)
        ret = qcow2_get_l2e(q, gc, &e);
    if (ret < 0)
        goto unlock;
    bool owned = e.host && e.copied && !e.compressed;

    if (a == 0 && b == cs) {
        bool keep = false;
        /* Already zeros with no host cluster to keep or free, and nothing
         * below to show through (reads_zero): a zero flag would change
         * nothing a reader sees, yet cost an L2 table (allocated, written
         * and flushed before its L1 entry) where there was none, as when
         * an initiator zeroes a whole empty LUN.  A discard goes on
         * below: it makes zero clusters unallocated. */
        if (mode != Z_DISCARD && !e.host && !e.compressed &&
            reads_zero(q, &e, 0, cs))
            goto unlock;
        if (!q->img.backing && (mode == Z_DISCARD || (!v3 && mode == Z_UNMAP))) {
            entry = 0; /* unallocated reads as zeros without a backing file */
        } else if (v3) {
            keep = mode == Z_KEEP && owned;
            entry = keep ? e.host | OFLAG_COPIED : 0;
            if (q->extended_l2)
                bitmap = (uint64_t)UINT32_MAX << 32;
            else
                entry |= OFLAG_ZERO;
        } else if (reads_zero(q, &e, a, b)) {
            goto unlock;
        } else {
            write_zeros = true; /* v2 with a backing file, or keep mapping */
        }
        if (!write_zeros) {
            if (entry == e.entry && bitmap == e.bitmap)
                goto unlock;
            ret = qcow2_set_l2e(q, gc, entry, bitmap);
            if (ret == 0 && !keep) {
                release_old(q, &e);
                ret = sync_if_many_pending(q);
            }
            goto unlock;
        }
    } else if (q->extended_l2 && !e.compressed && a % scs == 0 &&
               b % scs == 0) {
        /* Whole subclusters: just their bits.  The host cluster stays (it
         * may still hold other subclusters' data). */
        uint32_t m = sc_mask((unsigned)(a / scs), (unsigned)(b / scs));
        uint32_t alloc = e.alloc & ~m, zero = e.zero | m;
        if (mode == Z_DISCARD && !q->img.backing)
            zero &= ~m;
        entry = e.host ? e.host | (e.copied ? OFLAG_COPIED : 0) : 0;
        bitmap = (uint64_t)zero << 32 | alloc;
        if (bitmap != e.bitmap)
            ret = qcow2_set_l2e(q, gc, entry, bitmap);
        goto unlock;
    } else if (reads_zero(q, &e, a, b)) {
        goto unlock;
    } else {
        write_zeros = true;
    }
    pthread_mutex_unlock(&q->lock);

    assert(write_zeros);
    if (no_fallback && mode != Z_DISCARD)
        return -ENOTSUP;
    struct iovec v = { q->zero_buf, b - a };
    return write_cluster(q, gc, a, b, &v, 1, false);

unlock:
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int zero_range(struct qcow2 *q, uint64_t off, uint64_t len,
                      enum zero_mode mode, bool no_fallback)
{
    const uint64_t cs = q->cluster_size;
    struct range_lock rl;
    int ret = 0;

    assert_range(q, off, len);
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    if (len == 0)
        return 0;
    range_lock(q, &rl, off, len, true);
    for (uint64_t pos = off; pos < off + len;) {
        uint64_t a = pos & (cs - 1);
        uint64_t n = MIN(off + len - pos, cs - a);
        ret = zero_cluster(q, pos >> q->cluster_bits, a, a + n, mode,
                           no_fallback);
        if (ret < 0)
            break;
        pos += n;
    }
    range_unlock(q, &rl);
    return ret;
}

static int qcow2_zero(struct image *img, uint64_t off, uint64_t len,
                      unsigned flags)
{
    return zero_range(to_qcow2(img), off, len,
                      (flags & IMAGE_MAY_UNMAP) ? Z_UNMAP : Z_KEEP,
                      flags & IMAGE_NO_FALLBACK);
}

static int qcow2_discard(struct image *img, uint64_t off, uint64_t len)
{
    return zero_range(to_qcow2(img), off, len, Z_DISCARD, false);
}

static int qcow2_block_status(struct image *img, uint64_t off, uint64_t len,
                              enum image_extent_kind *kind,
                              uint64_t *extent_len)
{
    struct qcow2 *q = to_qcow2(img);
    struct extent x;
    assert(len > 0);
    assert_range(q, off, len);
    pthread_mutex_lock(&q->lock);
    int ret = map_extent(q, off, len, &x);
    pthread_mutex_unlock(&q->lock);
    if (ret < 0)
        return ret;
    *extent_len = x.len;
    switch (x.kind) {
    case SC_DATA:
    case SC_COMPRESSED:
        *kind = IMAGE_EXTENT_DATA;
        return 0;
    case SC_ZERO:
        *kind = IMAGE_EXTENT_ZERO;
        return 0;
    case SC_UNALLOC:
        /* This layer only: what shows through is the backing child's
         * (image_block_status_above). */
        *kind = IMAGE_EXTENT_UNALLOCATED;
        return 0;
    }
    abort();
}

/* Is there metadata that a flush must write (in order) before the data
 * flush?  Lock held. */
static bool metadata_to_sync(struct qcow2 *q)
{
    return cache_has_dirty(q->l2_cache) || cache_has_dirty(q->rb_cache) ||
           q->npending;
}

/* Without metadata to write (in-place overwrites, or nothing since the
 * last flush) a flush is file_flush alone, and that runs without q->lock:
 * an fdatasync can take long, and other commands need the lock to map
 * their clusters.  Safe because a write is acknowledged only after its L2
 * entry is in the cache: any write that completed before this flush began
 * either left metadata dirty (seen here, under the lock) or needs none. */
static int qcow2_flush(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    pthread_mutex_lock(&q->lock);
    if (qcow2_is_corrupt(q) || !metadata_to_sync(q)) {
        pthread_mutex_unlock(&q->lock);
        return file_flush(q->img.file);
    }
    int ret = qcow2_meta_sync(q);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int qcow2_close(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    int ret = 0;
    if (!q->img.info.read_only) {
        pthread_mutex_lock(&q->lock);
        assert(q->ranges == NULL);
        if (qcow2_is_corrupt(q)) {
            ret = file_flush(q->img.file);
        } else {
            ret = qcow2_meta_sync(q);
            /* Lazy refcounts: write them out, then say they are right. */
            if (ret == 0 && (q->incompat & INCOMPAT_DIRTY)) {
                ret = cache_writeback(q->rb_cache, false);
                if (ret == 0)
                    ret = file_flush(q->img.file);
                if (ret == 0)
                    ret = qcow2_write_header_u64(q, HDR_INCOMPAT,
                                                 q->incompat &
                                                     ~INCOMPAT_DIRTY);
            }
            /* After everything is durable: it cuts only what lies past
             * host_end, where nothing of the image is. */
            if (ret == 0)
                ret = qcow2_prealloc_close(q);
        }
        pthread_mutex_unlock(&q->lock);
    }
    qcow2_destroy(q);
    return ret;
}

void qcow2_simulate_crash(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    assert(img->ops == &qcow2_ops);
    cache_invalidate(q->l2_cache);
    cache_invalidate(q->rb_cache);
    qcow2_destroy(q);
    image_free_node(img);
}

const struct image_ops qcow2_ops = {
    .name = "qcow2",
    .readv = qcow2_readv,
    .writev = qcow2_writev,
    .flush = qcow2_flush,
    .zero = qcow2_zero,
    .discard = qcow2_discard,
    .block_status = qcow2_block_status,
    .allocated_bytes = qcow2_allocated_bytes,
    .close = qcow2_close,
    .resize = qcow2_resize,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_delete = qcow2_snapshot_delete,
    .snapshot_list = qcow2_snapshot_list,
    .change_backing_file = qcow2_change_backing_file,
};
