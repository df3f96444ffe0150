/* qlun — the active commit: push the LUN's top (and every layer between it
 * and base) down into base while the LUN serves, then pivot the LUN onto
 * base (block/job.c routes a "commit" whose top is the LUN's top, or
 * none, here).  It is the mirror engine with the base as target: the base
 * is reopened read-write, every range allocated above it is copied into
 * it (the base holds old data: zeroes are made zero there), the
 * initiator's writes are tracked and copied after, and on complete the
 * last dirty chunks are copied with the LUN drained, the base becomes the
 * LUN's top and the layers above it are closed.  Cancel: the base is
 * reopened read-only and the chain is as it was (what the base got reads
 * the same through the layers above it, which still hold it).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/mirror_internal.h"

/* The base the params name (NULL: the bottom of the chain), below top. */
static int find_base(struct image *top, const struct job_params *p,
                     struct image **base, char *err, size_t errlen)
{
    if (p->top && image_chain_find(top, p->top) != top) {
        snprintf(err, errlen, "%s is not the LUN's top (an active commit "
                 "starts at the top)", p->top);
        return -EINVAL;
    }
    if (p->base) {
        *base = image_chain_find(top, p->base);
        if (!*base) {
            snprintf(err, errlen, "%s is not in the LUN's backing chain",
                     p->base);
            return -ENOENT;
        }
    } else {
        *base = top;
        while (image_backing_child(*base))
            *base = image_skip_filters(image_backing_child(*base));
    }
    if (*base == top) {
        snprintf(err, errlen, "commit needs a base below the top");
        return -EINVAL;
    }
    return 0;
}

/* The node whose backing edge points straight at base. */
static struct image *parent_of(struct image *top, struct image *base)
{
    for (struct image *n = top; n; n = image_backing_child(n))
        if (n->backing == base)
            return n;
    return NULL;
}

/* Under the drain: reopen the base (read-write for the job, read-only
 * when it gives it back); m->target follows it. */
static int reopen_base(struct mirror_job *m, bool read_only, char *err,
                       size_t errlen)
{
    struct image_open_opts o;
    m->job.owner.open_opts(m->job.owner.opaque, &o);
    o.read_only = read_only;
    int ret = image_reopen(&m->base_parent->backing, &o, err, errlen);
    m->base = m->target = m->base_parent->backing;
    return ret;
}

/* Base smaller than the top (the LUN grew): grow it so all of the top
 * fits; the range added reads as zeros, as it did past base's end.  On
 * failure the base goes back read-only.  Under the drain. */
static int fit_base(struct mirror_job *m, char *err, size_t errlen)
{
    if (m->base->size >= m->src->size)
        return 0;
    char why[256] = "";
    int ret = image_resize(m->base, m->src->size, false, why, sizeof(why));
    if (ret < 0) {
        snprintf(err, errlen, "base %s (%llu bytes) is smaller than the top "
                 "(%llu bytes) and cannot grow: %s", m->base->filename,
                 (unsigned long long)m->base->size,
                 (unsigned long long)m->src->size, why);
        reopen_base(m, true, why, sizeof(why));
    }
    return ret;
}

static int commit_start(struct job *job, const struct job_params *p,
                        char *err, size_t errlen)
{
    struct mirror_job *m = (struct mirror_job *)job;
    struct job_owner *o = &job->owner;
    m->what = "commit";
    m->src = o->top(o->opaque);
    struct image *base;
    int ret = find_base(m->src, p, &base, err, errlen);
    if (ret < 0)
        return ret;
    m->base_parent = parent_of(m->src, base);
    if (!m->base_parent) {
        snprintf(err, errlen, "%s is below a filter node", base->filename);
        return -ENOTSUP;
    }
    o->drain_begin(o->opaque);
    ret = reopen_base(m, false, err, errlen);
    if (ret == 0)
        ret = fit_base(m, err, errlen);
    o->drain_end(o->opaque);
    if (ret < 0)
        return ret;
    m->first_mode = COPY_DST_ANY;
    ret = mirror_engine_setup(m, p->granularity, err, errlen);
    if (ret < 0) {
        char why[256];
        o->drain_begin(o->opaque);
        mirror_engine_stop_tracking(m);
        reopen_base(m, true, why, sizeof(why));
        o->drain_end(o->opaque);
        mirror_engine_free(job);
    }
    return ret;
}

/* Complete: base becomes the LUN's top; the layers above it close. */
static int pivot(struct mirror_job *m)
{
    struct image *old;
    int ret = mirror_engine_pivot(m, m->base, &old);
    if (ret == 0)
        image_close_above(old, m->base);
    return ret;
}

static int commit_finish(struct job *job, int run_ret)
{
    struct mirror_job *m = (struct mirror_job *)job;
    int ret = run_ret == 0 ? pivot(m) : run_ret;
    if (ret < 0) {
        struct job_owner *o = &job->owner;
        char why[256];
        o->drain_begin(o->opaque);
        mirror_engine_stop_tracking(m);
        int r = reopen_base(m, true, why, sizeof(why));
        o->drain_end(o->opaque);
        if (r < 0)
            job_set_error(job, "commit: giving %s back read-only: %s",
                          m->base->filename, why);
    }
    return ret == -ECANCELED ? 0 : ret;
}

const struct job_driver active_commit_job_driver = {
    .type = "commit",
    .instance_size = sizeof(struct mirror_job),
    .start = commit_start,
    .run = mirror_engine_run,
    .finish = commit_finish,
    .destroy = mirror_engine_free,
};
