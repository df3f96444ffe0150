/* qlun — the stream job (block/job.h, type "stream"): copy into a layer
 * (the LUN's top, or an intermediate `top`) every range it reads from the
 * layers below it, down to an optional `base`; then top's backing file
 * becomes base (or none), and the layers in between leave the chain.
 *
 * The copying is the copy-on-read filter's (block/copy_on_read.h), put
 * right above top for the job: the job walks the image and asks it to
 * copy each chunk up, and the initiator's own reads through it copy up
 * too.  The filter's range lock keeps a copy-up from putting old data
 * over a write the initiator made meanwhile (to the LUN's top: through
 * the filter).  An intermediate layer takes no writes but the job's, so
 * it is reopened read-write only for the job.
 * Failure or cancel: the filter goes, the chain stays as it was; what was
 * copied into top already reads the same as before (harmless).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "block/copy_on_read.h"
#include "block/driver.h"
#include "block/job.h"

/* The unit between two job_yield calls. */
#define STREAM_CHUNK (1024u * 1024u)

struct stream_job {
    struct job job;
    struct image *top;      /* the layer streamed into */
    struct image *base;     /* stays below top; NULL: none */
    struct image *filter;   /* the copy-on-read node above top */
    /* An intermediate top: the edge of its parent that points at it
     * (then at the filter); NULL for the LUN's top. */
    struct image **edge;
    char path[PATH_MAX];    /* top's file and format (for reopening) */
    char format[32];
};

static struct stream_job *stream_of(struct job *job)
{
    return (struct stream_job *)job;
}

/* Bytes a reader of top finds below it, above base: what streaming
 * makes local (data and zeros). */
static int bytes_below(struct image *top, struct image *base, uint64_t *total)
{
    struct image *below = image_backing_child(top);
    *total = 0;
    if (!below || below == base)
        return 0;
    uint64_t end = MIN(top->size, below->size);
    for (uint64_t off = 0; off < end;) {
        enum image_extent_kind kind;
        uint64_t n;
        int ret = image_block_status_above(below, base, off, end - off,
                                           &kind, &n, NULL);
        if (ret < 0)
            return ret;
        if (kind != IMAGE_EXTENT_UNALLOCATED)
            *total += n;
        off += n;
    }
    return 0;
}

/* The edge of the node above top in the LUN's chain (its backing). */
static struct image **parent_edge(struct image *lun_top, struct image *top)
{
    for (struct image *n = lun_top; n; n = image_backing_child(n)) {
        struct image *layer = image_skip_filters(n);
        if (layer->backing == top)
            return &layer->backing;
    }
    return NULL;
}

/* Reopen the intermediate top read-write or read-only (under the
 * drain); the node may change. */
static int reopen_top(struct stream_job *s, bool read_only, char *err,
                      size_t errlen)
{
    struct image_open_opts o;
    memset(&o, 0, sizeof(o));
    s->job.owner.open_opts(s->job.owner.opaque, &o);
    o.path = s->path;
    o.format = s->format;
    o.read_only = read_only;
    int ret = image_reopen(s->edge, &o, err, errlen);
    if (ret == 0)
        s->top = *s->edge;
    return ret;
}

/* Under the drain: the copy-on-read node above top. */
static int insert_filter(struct stream_job *s, struct image *lun_top,
                         char *err, size_t errlen)
{
    const struct job_owner *o = &s->job.owner;
    if (s->top == lun_top)
        return o->filter_insert(o->opaque, &copy_on_read_driver, &s->filter,
                                err, errlen);
    s->edge = parent_edge(lun_top, s->top);
    if (!s->edge) {
        snprintf(err, errlen, "%s has no parent in the LUN's chain", s->path);
        return -ENOENT;
    }
    int ret = reopen_top(s, false, err, errlen);
    if (ret < 0)
        return ret;
    ret = image_insert_filter(s->edge, &copy_on_read_driver, err, errlen);
    if (ret < 0) {
        char why[256];
        reopen_top(s, true, why, sizeof(why));
        return ret;
    }
    s->filter = *s->edge;
    return 0;
}

/* The nodes p names, checked against the LUN's chain. */
static int find_nodes(struct stream_job *s, const struct job_params *p,
                      struct image *lun_top, char *err, size_t errlen)
{
    s->top = p->top ? image_chain_find(lun_top, p->top) : lun_top;
    if (!s->top) {
        snprintf(err, errlen, "stream: no image %s in the LUN's chain",
                 p->top);
        return -ENOENT;
    }
    if (!p->base)
        return 0;
    struct image *below = image_backing_child(s->top);
    s->base = below ? image_chain_find(below, p->base) : NULL;
    if (!s->base) {
        bool in_chain = image_chain_find(lun_top, p->base) != NULL;
        snprintf(err, errlen, "stream: %s %s", p->base, in_chain
                 ? "is not below the top streamed into"
                 : "is not in the LUN's chain");
        return in_chain ? -EINVAL : -ENOENT;
    }
    return 0;
}

static int stream_start(struct job *job, const struct job_params *p,
                        char *err, size_t errlen)
{
    struct stream_job *s = stream_of(job);
    const struct job_owner *o = &job->owner;
    struct image *lun_top = o->top(o->opaque);
    int ret = find_nodes(s, p, lun_top, err, errlen);
    if (ret < 0)
        return ret;
    snprintf(s->path, sizeof(s->path), "%s", s->top->filename);
    snprintf(s->format, sizeof(s->format), "%s", s->top->info.format);
    uint64_t total;
    ret = bytes_below(s->top, s->base, &total);
    if (ret < 0) {
        snprintf(err, errlen, "stream: block status below %s: %s", s->path,
                 strerror(-ret));
        return ret;
    }
    job_set_total(job, total);
    o->drain_begin(o->opaque);
    ret = insert_filter(s, lun_top, err, errlen);
    if (ret == 0)
        copy_on_read_set_base(s->filter, s->base);
    o->drain_end(o->opaque);
    return ret;
}

static int stream_run(struct job *job)
{
    struct stream_job *s = stream_of(job);
    uint64_t size = s->filter->size;
    for (uint64_t off = 0; off < size; off += STREAM_CHUNK) {
        uint64_t copied = 0;
        int ret = copy_on_read_copy_range(s->filter, off,
                                          MIN(STREAM_CHUNK, size - off),
                                          &copied);
        if (ret < 0) {
            job_set_error(job, "copying into %s at offset %" PRIu64 ": %s",
                          s->path, off, strerror(-ret));
            return ret;
        }
        ret = job_yield(job, copied);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Under the drain: the filter out; an intermediate back to read-only. */
static void remove_filter(struct stream_job *s)
{
    const struct job_owner *o = &s->job.owner;
    if (!s->edge) {
        o->filter_remove(o->opaque);
        return;
    }
    image_remove_filter(s->edge);
    char why[256];
    if (reopen_top(s, true, why, sizeof(why)) < 0)
        fprintf(stderr, "qlun: stream: %s stays open read-write: %s\n",
                s->path, why);
}

static int stream_finish(struct job *job, int run_ret)
{
    struct stream_job *s = stream_of(job);
    const struct job_owner *o = &job->owner;
    int ret = 0;
    o->drain_begin(o->opaque);
    if (run_ret == 0) {
        char why[256];
        /* Flushes top first: its header never names base before the data
         * copied from the layers in between is durable. */
        ret = image_set_backing(s->top, s->base, why, sizeof(why));
        if (ret < 0)
            job_set_error(job, "rewriting the backing file of %s: %s",
                          s->path, why);
    }
    remove_filter(s);
    o->drain_end(o->opaque);
    return ret;
}

const struct job_driver stream_job_driver = {
    .type = "stream",
    .instance_size = sizeof(struct stream_job),
    .start = stream_start,
    .run = stream_run,
    .finish = stream_finish,
};
