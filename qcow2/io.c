/* qlun — qcow2: guest I/O.
 *
 * Each request first takes a guest range lock over the clusters it
 * touches (shared for reads, exclusive for anything that may change a
 * mapping; block status takes none: its answer is a snapshot anyway).  Then it works cluster by cluster:
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

struct range_lock {
    uint64_t start, end; /* guest clusters [start, end) */
    bool excl;
    struct range_lock *next;
};

static void range_lock(struct qcow2 *q, struct range_lock *rl, uint64_t off,
                       uint64_t len, bool excl)
{
    assert(len > 0);
    rl->start = off >> q->cluster_bits;
    rl->end = ((off + len - 1) >> q->cluster_bits) + 1;
    rl->excl = excl;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        bool conflict = false;
        for (struct range_lock *r = q->ranges; r; r = r->next)
            if (r->start < rl->end && rl->start < r->end &&
                (excl || r->excl)) {
                conflict = true;
                break;
            }
        if (!conflict)
            break;
        pthread_cond_wait(&q->range_cond, &q->lock);
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
    pthread_cond_broadcast(&q->range_cond);
    pthread_mutex_unlock(&q->lock);
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
    if (q->backing && goff < q->backing->size)
        from_backing = (size_t)MIN((uint64_t)len, q->backing->size - goff);
    if (from_backing) {
        struct iovec stack[16], *part = stack;
        if (iovcnt > (int)ARRAY_SIZE(stack)) {
            part = malloc(sizeof(*iov) * (size_t)iovcnt);
            if (!part)
                return -ENOMEM;
        }
        int n = iov_slice(part, iovcnt, iov, iovcnt, 0, from_backing);
        assert(n >= 0);
        int ret = image_readv(q->backing, part, n, goff);
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
            ret = host_preadv(&q->host, s.tmp, n, x.host);
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
            ret = host_pread(&q->host, buf + from, n, e->host + from);
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
            if (q->backing &&
                (gc << q->cluster_bits) + lo < q->backing->size)
                return false;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Is zeroing a new cluster with host_zero() and then writing only the
 * request cheaper than writing the whole cluster?  On regular files with
 * FALLOC_FL_ZERO_RANGE, yes (like QEMU's handle_alloc_space).  Not on block
 * devices: write-zeroes there is synchronous device I/O, while the buffered
 * write is not.  With O_DIRECT the request must be block-aligned, or the
 * host would read-modify-write around it. */
static bool zero_cheaply(struct qcow2 *q, uint64_t a, uint64_t b)
{
    return !q->host.is_blockdev && atomic_load(&q->host.can_zero_range) &&
           IS_ALIGNED(a | b, (uint64_t)q->host.logical_block_size);
}

/* Write request bytes [a, b) of guest cluster gc from iov (already sliced
 * to exactly those bytes).  Range lock held, q->lock not. */
static int write_cluster(struct qcow2 *q, uint64_t gc, uint64_t a,
                         uint64_t b, const struct iovec *iov, int iovcnt)
{
    const uint64_t cs = q->cluster_size;
    const uint64_t scs = q->sc_size;
    struct l2e e;
    uint8_t *buf = NULL, *cbuf = NULL;
    int ret;

    assert(a < b && b <= cs);
    unsigned A = (unsigned)(a / scs), B = (unsigned)DIV_ROUND_UP(b, scs);
    uint32_t touched = sc_mask(A, B);

    pthread_mutex_lock(&q->lock);
    ret = qcow2_prepare_write(q);
    if (ret == 0)
        ret = qcow2_get_l2e(q, gc, &e);
    if (ret < 0)
        goto unlock;

    if (e.host && e.copied && !e.compressed) {
        /* Ours: in place.  Subclusters that held no data get their
         * uncovered parts from what they read as before. */
        ret = qcow2_check_data_target(q, e.host, cs);
        pthread_mutex_unlock(&q->lock);
        if (ret < 0)
            return ret;
        bool head = !(e.alloc & (1u << A)) && a > A * scs;
        bool tail = !(e.alloc & (1u << (B - 1))) && b < B * scs;
        if (head || tail) {
            buf = malloc(cs);
            if (!buf)
                return -ENOMEM;
        }
        if (head) {
            ret = fill_old(q, gc, &e, NULL, buf, A * scs, a);
            if (ret == 0)
                ret = host_pwrite(&q->host, buf + A * scs, a - A * scs,
                                  e.host + A * scs);
        }
        if (ret == 0 && tail) {
            ret = fill_old(q, gc, &e, NULL, buf, b, B * scs);
            if (ret == 0)
                ret = host_pwrite(&q->host, buf + b, B * scs - b, e.host + b);
        }
        free(buf);
        buf = NULL;
        if (ret == 0)
            ret = host_pwritev(&q->host, iov, iovcnt, e.host + a);
        if (ret < 0 || (e.alloc & touched) == touched)
            return ret;
        /* Data on the host: now say so in the L2 entry. */
        pthread_mutex_lock(&q->lock);
        if (q->extended_l2)
            ret = qcow2_set_l2e(q, gc, e.host | OFLAG_COPIED,
                                (uint64_t)(e.zero & ~touched) << 32 |
                                    (e.alloc | touched));
        else
            ret = qcow2_set_l2e(q, gc, e.host | OFLAG_COPIED, 0);
        goto unlock;
    }

    /* Copy on write into a new cluster. */
    uint64_t h;
    int64_t got = qcow2_alloc_clusters(q, 1, &h);
    pthread_mutex_unlock(&q->lock);
    if (got < 0)
        return (int)got;

    uint32_t new_alloc = touched;
    if (e.compressed) {
        new_alloc = sc_mask(0, q->subclusters);
        /* A whole-cluster write keeps nothing of the old content: no
         * need to decompress it. */
        if (a != 0 || b != cs) {
            cbuf = malloc(cs);
            ret = cbuf ? read_compressed(q, e.entry, gc << q->cluster_bits,
                                         cbuf)
                       : -ENOMEM;
            if (ret < 0)
                goto fail_new;
        }
    } else if (q->extended_l2) {
        new_alloc |= e.alloc; /* keep the subclusters that had data */
    }
    /* The new cluster must hold valid data in every subcluster of
     * new_alloc, i.e. somewhere in [lo, hi); whatever lies between those
     * subclusters or outside them is never read (their bitmap bits say
     * unallocated), so it need not be written.  Without extended L2 this
     * is the whole cluster. */
    unsigned lo_sc = (unsigned)__builtin_ctz(new_alloc);
    unsigned hi_sc = 32u - (unsigned)__builtin_clz(new_alloc);
    uint64_t lo = lo_sc * scs, hi = hi_sc * scs;
    assert(lo <= a && b <= hi);
    if (lo == a && hi == b) {
        /* The request covers all of it: no head or tail to copy. */
        ret = host_pwritev(&q->host, iov, iovcnt, h + a);
    } else if (cow_reads_zero(q, gc, &e, new_alloc, a, b) &&
               zero_cheaply(q, a, b) &&
               (ret = host_zero(&q->host, h + lo, hi - lo, false)) !=
                   -ENOTSUP) {
        /* Head and tail read as zeros: let the host zero [lo, hi)
         * (fallocate: no data transferred, nothing to write back) and
         * write only the request, instead of writing a cluster of
         * mostly zeros.  Safety: host_zero returns once the range reads
         * as zeros, before the pwritev and before the L2 entry is set
         * below; the L2 table reaches the disk only after a host_flush
         * (qcow2_l2_pre_write), and fdatasync makes the fallocate's
         * extent changes durable along with the data.  So a crash can
         * never leave the L2 entry pointing at a cluster whose head or
         * tail still holds what a previous owner wrote there. */
        if (ret == 0)
            ret = host_pwritev(&q->host, iov, iovcnt, h + a);
    } else {
        buf = calloc(1, hi); /* bytes [0, hi) of the cluster */
        if (!buf) {
            ret = -ENOMEM;
            goto fail_new;
        }
        ret = 0;
        /* Everything the new cluster holds that the request does not
         * cover: head, tail, and the other allocated subclusters. */
        for (unsigned sc = lo_sc; ret == 0 && sc < hi_sc; sc++) {
            if (!(new_alloc & (1u << sc)))
                continue;
            uint64_t slo = sc * scs, shi = slo + scs;
            if (slo < a)
                ret = fill_old(q, gc, &e, cbuf, buf, slo, MIN(shi, a));
            if (ret == 0 && shi > b)
                ret = fill_old(q, gc, &e, cbuf, buf, MAX(slo, b), shi);
        }
        if (ret == 0) {
            iov_to_buf(iov, iovcnt, 0, buf + a, b - a);
            ret = host_pwrite(&q->host, buf + lo, hi - lo, h + lo);
        }
    }
    if (ret < 0)
        goto fail_new;

    pthread_mutex_lock(&q->lock);
    uint64_t bitmap = 0;
    if (q->extended_l2)
        bitmap = (uint64_t)(e.zero & ~new_alloc) << 32 | new_alloc;
    ret = qcow2_set_l2e(q, gc, h | OFLAG_COPIED, bitmap);
    if (ret < 0) {
        qcow2_free_now(q, h, 1);
        goto unlock;
    }
    release_old(q, &e);
    ret = sync_if_many_pending(q);
unlock:
    pthread_mutex_unlock(&q->lock);
    free(buf);
    free(cbuf);
    return ret;

fail_new:
    pthread_mutex_lock(&q->lock);
    qcow2_free_now(q, h, 1);
    pthread_mutex_unlock(&q->lock);
    free(buf);
    free(cbuf);
    return ret;
}

/* Most whole clusters one write_run() call handles. */
#define MAX_RUN 64

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
 * (unless lazy) and a host_flush (qcow2_l2_pre_write); the old clusters
 * are freed through qcow2_free_later, once the new entries are durable. */
static int64_t write_run(struct qcow2 *q, uint64_t gc, uint64_t m,
                         const struct iovec *iov, int iovcnt)
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
        ret = host_pwritev(&q->host, pv, cnt, old[0].host);
        if (pv != part)
            free(pv);
        return ret < 0 ? ret : (int64_t)(n * cs);
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
        ret = host_pwritev(&q->host, pv, cnt, h);
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

static int qcow2_writev(struct image *img, const struct iovec *iov,
                        int iovcnt, uint64_t off, unsigned flags)
{
    struct qcow2 *q = to_qcow2(img);
    const uint64_t cs = q->cluster_size;
    size_t len = iov_size(iov, iovcnt);
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
    range_lock(q, &rl, off, len, true);
    for (size_t pos = 0; pos < len;) {
        uint64_t goff = off + pos;
        uint64_t a = goff & (cs - 1);
        if (a == 0 && len - pos >= 2 * cs) {
            /* Whole clusters: try them as one run. */
            uint64_t m = (len - pos) / cs;
            int cnt = slice(&s, pos, m * cs);
            int64_t done = write_run(q, goff >> q->cluster_bits, m, s.tmp,
                                     cnt);
            if (done < 0) {
                ret = (int)done;
                break;
            }
            if (done > 0) {
                pos += (size_t)done;
                continue;
            }
        }
        uint64_t n = MIN(len - pos, cs - a);
        int cnt = slice(&s, pos, n);
        ret = write_cluster(q, goff >> q->cluster_bits, a, a + n, s.tmp, cnt);
        if (ret < 0)
            break;
        pos += n;
    }
    range_unlock(q, &rl);
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
        if (!(k == SC_ZERO || (k == SC_UNALLOC && !q->backing)))
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
        if (!q->backing && (mode == Z_DISCARD || (!v3 && mode == Z_UNMAP))) {
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
        if (mode == Z_DISCARD && !q->backing)
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
    return write_cluster(q, gc, a, b, &v, 1);

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
        break;
    }
    /* Unallocated here: what shows through is the backing file's. */
    if (!q->backing || off >= q->backing->size) {
        *kind = IMAGE_EXTENT_UNALLOCATED;
        return 0;
    }
    uint64_t n;
    ret = image_block_status(q->backing, off,
                             MIN(x.len, q->backing->size - off), kind, &n);
    if (ret == 0)
        *extent_len = n;
    return ret;
}

static int qcow2_flush(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    pthread_mutex_lock(&q->lock);
    int ret = qcow2_is_corrupt(q) ? host_flush(&q->host) : qcow2_meta_sync(q);
    pthread_mutex_unlock(&q->lock);
    return ret;
}

static int qcow2_close(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    int ret = 0;
    if (!q->host.read_only) {
        pthread_mutex_lock(&q->lock);
        assert(q->ranges == NULL);
        if (qcow2_is_corrupt(q)) {
            ret = host_flush(&q->host);
        } else {
            ret = qcow2_meta_sync(q);
            /* Lazy refcounts: write them out, then say they are right. */
            if (ret == 0 && (q->incompat & INCOMPAT_DIRTY)) {
                ret = cache_writeback(q->rb_cache, false);
                if (ret == 0)
                    ret = host_flush(&q->host);
                if (ret == 0)
                    ret = qcow2_write_header_u64(q, HDR_INCOMPAT,
                                                 q->incompat &
                                                     ~INCOMPAT_DIRTY);
            }
        }
        pthread_mutex_unlock(&q->lock);
    }
    qcow2_free(q);
    return ret;
}

void qcow2_simulate_crash(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    assert(img->ops == &qcow2_ops);
    cache_invalidate(q->l2_cache);
    cache_invalidate(q->rb_cache);
    qcow2_free(q);
}

const struct image_ops qcow2_ops = {
    .name = "qcow2",
    .readv = qcow2_readv,
    .writev = qcow2_writev,
    .flush = qcow2_flush,
    .zero = qcow2_zero,
    .discard = qcow2_discard,
    .block_status = qcow2_block_status,
    .close = qcow2_close,
};
