/* qlun — committing an intermediate layer (job type "commit" with a top
 * strictly below the LUN's top): the data of top and of every layer
 * between it and base goes into base, then top's parent names base as
 * its backing file and those layers leave the chain.
 *
 *   LUN top <- ... <- parent <- top <- ... <- base <- ...
 *   becomes  LUN top <- ... <- parent <- base <- ...
 *
 * No locking against the initiator: its writes go to the LUN's top,
 * above top, and every node from top down is read-only and unchanged
 * while the job runs (the owner refuses snapshots and resizes).  The job
 * writes into base only ranges that a layer above base (top or one
 * between) allocates; a reader of the chain gets those ranges from that
 * layer, never from base, so what base holds there is invisible until
 * the backing link changes.  Ranges base answers for are never written.
 *
 * Failure or cancel: base goes back to read-only and the chain stays as
 * it was.  base may then hold some of top's data, which is harmless for
 * the same reason: it lies under layers that allocate those ranges, so
 * no reader sees it, and a later commit overwrites it.
 *
 * Crash ordering: base is flushed before parent's image names it
 * (image_set_backing then flushes parent and rewrites its header): a
 * crash leaves parent naming the old chain (intact: nothing in it was
 * changed but base's invisible ranges) or naming base with all the data.
 *
 * Committing the LUN's top (an "active commit") is the mirror engine's
 * (block/mirror.c, active_commit_job_driver): the initiator writes there.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "copy.h"
#include "driver.h"
#include "job.h"

/* Bytes copied between two job_yield calls. */
#define COMMIT_CHUNK (1u << 20)

struct commit_job {
    struct job job;
    struct image *top;     /* the layer committed (a format node) */
    struct image *parent;  /* the node whose backing child is top */
    struct image *base;    /* where the data goes; read-write while the
                            * job runs */
    void *buf;             /* COMMIT_CHUNK bytes, aligned for direct I/O */
};

static struct commit_job *to_commit(struct job *job)
{
    return (struct commit_job *)job;
}

static struct image *lun_top(struct job *job)
{
    return job->owner.top(job->owner.opaque);
}

/* The edge of the chain under from that points at node itself (below
 * any filter on it), to reopen node in place; NULL if node is not below
 * from. */
static struct image **edge_of(struct image *from, struct image *node)
{
    for (struct image *n = image_skip_filters(from); n && n->backing;
         n = image_skip_filters(n->backing)) {
        struct image **e = &n->backing;
        while ((*e)->drv && (*e)->drv->is_filter)
            e = &(*e)->file;
        if (*e == node)
            return e;
    }
    return NULL;
}

/* The format node right above node in from's chain (NULL: none). */
static struct image *parent_of(struct image *from, struct image *node)
{
    for (struct image *n = image_skip_filters(from); n && n->backing;
         n = image_skip_filters(n->backing))
        if (image_skip_filters(n->backing) == node)
            return n;
    return NULL;
}

/* Bytes in [off, off+len) that a layer from top down to (not including)
 * base allocates: what the job copies there. */
static int64_t allocated_above(struct image *top, struct image *base,
                               uint64_t off, uint64_t len)
{
    uint64_t sum = 0;
    for (uint64_t end = off + len; off < end;) {
        enum image_extent_kind kind;
        uint64_t n;
        int ret = image_block_status_above(top, base, off, end - off, &kind,
                                           &n, NULL);
        if (ret < 0)
            return ret;
        if (kind != IMAGE_EXTENT_UNALLOCATED)
            sum += n;
        off += n;
    }
    return (int64_t)sum;
}

/* Reopen node (below the LUN's top) read-only or read-write, in place;
 * returns the new node or NULL (err says why).  Under the drain. */
static struct image *reopen(struct job *job, struct image *node, bool ro,
                            char *err, size_t errlen)
{
    struct image **edge = edge_of(lun_top(job), node);
    if (!edge) {
        snprintf(err, errlen, "%s is not in the LUN's chain", node->filename);
        return NULL;
    }
    struct image_open_opts o = { 0 };
    job->owner.open_opts(job->owner.opaque, &o);
    o.read_only = ro;
    return image_reopen(edge, &o, err, errlen) == 0 ? *edge : NULL;
}

/* Find top and base from p; one line into err on failure. */
static int find_nodes(struct commit_job *c, const struct job_params *p,
                      char *err, size_t errlen)
{
    struct image *lt = lun_top(&c->job);
    c->top = p->top ? image_chain_find(lt, p->top) : lt;
    if (!c->top) {
        snprintf(err, errlen, "top %s is not in the LUN's backing chain",
                 p->top);
        return -ENOENT;
    }
    if (c->top == image_skip_filters(lt)) {
        snprintf(err, errlen, "top %s is the LUN's top: active commit is "
                 "the mirror engine's", c->top->filename);
        return -EINVAL;
    }
    struct image *below = image_skip_filters(image_backing_child(c->top));
    if (!below) {
        snprintf(err, errlen, "top %s has no backing file to commit into",
                 c->top->filename);
        return -EINVAL;
    }
    if (p->base) {
        c->base = image_chain_find(below, p->base);
        if (!c->base) {
            snprintf(err, errlen, "base %s is not below top %s in the "
                     "backing chain", p->base, c->top->filename);
            return image_chain_find(lt, p->base) ? -EINVAL : -ENOENT;
        }
    } else {
        c->base = below;
        while (image_backing_child(c->base))
            c->base = image_skip_filters(image_backing_child(c->base));
    }
    c->parent = parent_of(lt, c->top);
    return 0;
}

/* Base smaller than top: grow it so that all of top fits (the range
 * added reads as zeros, as it did past base's end). */
static int fit_base(struct commit_job *c, char *err, size_t errlen)
{
    if (c->base->size >= c->top->size)
        return 0;
    char why[256] = "";
    int ret = image_resize(c->base, c->top->size, false, why, sizeof(why));
    if (ret < 0)
        snprintf(err, errlen, "base %s (%" PRIu64 " bytes) is smaller than "
                 "top %s (%" PRIu64 " bytes) and cannot grow: %s",
                 c->base->filename, c->base->size, c->top->filename,
                 c->top->size, why);
    return ret;
}

static int commit_start(struct job *job, const struct job_params *p,
                        char *err, size_t errlen)
{
    struct commit_job *c = to_commit(job);
    int ret = find_nodes(c, p, err, errlen);
    if (ret < 0)
        return ret;
    if (posix_memalign(&c->buf, 4096, COMMIT_CHUNK) != 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int64_t total = allocated_above(c->top, c->base, 0, c->top->size);
    if (total < 0) {
        snprintf(err, errlen, "block status of %s: %s", c->top->filename,
                 strerror((int)-total));
        return (int)total;
    }
    job_set_total(job, (uint64_t)total);
    /* Guest reads may pass through base: edges change under the drain. */
    job->owner.drain_begin(job->owner.opaque);
    struct image *rw = reopen(job, c->base, false, err, errlen);
    ret = rw ? 0 : -EIO;
    if (rw) {
        c->base = rw;
        ret = fit_base(c, err, errlen);
        if (ret < 0) {
            char e2[256];
            struct image *ro = reopen(job, c->base, true, e2, sizeof(e2));
            if (ro)
                c->base = ro;
        }
    }
    job->owner.drain_end(job->owner.opaque);
    return ret;
}

static int commit_run(struct job *job)
{
    struct commit_job *c = to_commit(job);
    const uint64_t size = c->top->size;
    for (uint64_t off = 0; off < size;) {
        uint64_t n = MIN((uint64_t)COMMIT_CHUNK, size - off);
        int64_t work = allocated_above(c->top, c->base, off, n);
        int ret = work < 0 ? (int)work : 0;
        if (ret == 0 && work > 0)
            ret = image_copy_range(c->top, c->base, c->base, off, n,
                                   COPY_DST_ANY, c->buf, COMMIT_CHUNK, NULL);
        if (ret < 0) {
            job_set_error(job, "committing %s into %s at offset %" PRIu64
                          ": %s", c->top->filename, c->base->filename, off,
                          strerror(-ret));
            return ret;
        }
        off += n;
        ret = job_yield(job, (uint64_t)work);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* The change itself, under the drain: parent names base (a read-only
 * intermediate parent is made writable for it, then given back). */
static int drop_layers(struct commit_job *c, char *err, size_t errlen)
{
    struct job *job = &c->job;
    struct image *parent = c->parent;
    bool was_ro = parent->info.read_only;
    if (was_ro && !(parent = reopen(job, parent, false, err, errlen)))
        return -EIO;
    int ret = image_set_backing(parent, c->base, err, errlen);
    c->top = NULL; /* closed with the layers dropped (or still there) */
    if (was_ro) {
        char e2[256];
        if (!reopen(job, parent, true, e2, sizeof(e2)))
            fprintf(stderr, "qlun: commit: %s stays read-write: %s\n",
                    parent->filename, e2);
    }
    return ret;
}

static int commit_finish(struct job *job, int run_ret)
{
    struct commit_job *c = to_commit(job);
    char err[512] = "";
    int ret = 0;
    /* base's data durable before any image names base instead. */
    if (run_ret == 0 && (ret = image_flush(c->base)) < 0)
        snprintf(err, sizeof(err), "flushing base %s: %s", c->base->filename,
                 strerror(-ret));
    job->owner.drain_begin(job->owner.opaque);
    if (run_ret == 0 && ret == 0)
        ret = drop_layers(c, err, sizeof(err));
    char e2[256];
    struct image *ro = reopen(job, c->base, true, e2, sizeof(e2));
    if (ro)
        c->base = ro;
    else
        fprintf(stderr, "qlun: commit: base %s stays read-write: %s\n",
                c->base->filename, e2);
    job->owner.drain_end(job->owner.opaque);
    if (ret < 0)
        job_set_error(job, "%s", err);
    return ret;
}

static void commit_destroy(struct job *job)
{
    free(to_commit(job)->buf);
}

const struct job_driver commit_job_driver = {
    .type = "commit",
    .instance_size = sizeof(struct commit_job),
    .start = commit_start,
    .run = commit_run,
    .finish = commit_finish,
    .destroy = commit_destroy,
};
