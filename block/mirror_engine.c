/* qlun — the mirror engine (see mirror_internal.h).
 *
 * Why the copy is complete at the pivot: the tracking filter is in place
 * before the first pass reads anything, so every write that completes
 * after the pass read its range marks that range dirty (mirror_top.c);
 * the job clears a chunk's bit before it copies the chunk; and at the
 * pivot, with the LUN drained, every chunk still dirty is copied before
 * the LUN switches to the target.  Nothing is written between that last
 * copy and the switch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/mirror_internal.h"

/* The first pass copies this much between yields. */
#define PASS_CHUNK (1u << 20)
/* Ready once at most this much is dirty: what the pivot copies with the
 * LUN drained. */
#define READY_DIRTY_BYTES (1u << 20)
/* How long the job sleeps when nothing is dirty (it polls the bitmap). */
#define IDLE_US 5000

/* Bytes a reader of src above base sees as data: what the copy reads and
 * writes (zeroes stay metadata, unallocated ranges stay behind). */
static int data_bytes(struct mirror_job *m, uint64_t *total)
{
    *total = 0;
    for (uint64_t off = 0; off < m->src->size;) {
        enum image_extent_kind kind;
        uint64_t n;
        int ret = image_block_status_above(m->src, m->base, off,
                                           m->src->size - off, &kind, &n,
                                           NULL);
        if (ret < 0)
            return ret;
        if (kind == IMAGE_EXTENT_DATA)
            *total += n;
        off += n;
    }
    return 0;
}

int mirror_engine_setup(struct mirror_job *m, uint32_t granularity,
                        char *err, size_t errlen)
{
    if (granularity == 0)
        granularity = 65536;
    if (granularity < 4096 || (granularity & (granularity - 1))) {
        snprintf(err, errlen, "granularity %u is not a power of two "
                 ">= 4096", granularity);
        return -EINVAL;
    }
    uint64_t total;
    int ret = data_bytes(m, &total);
    if (ret < 0) {
        snprintf(err, errlen, "block status of %s: %s", m->src->filename,
                 strerror(-ret));
        return ret;
    }
    job_set_total(&m->job, total);
    m->bufsize = granularity > PASS_CHUNK ? granularity : PASS_CHUNK;
    m->bm = dirty_bitmap_new(m->src->size, granularity);
    if (!m->bm || posix_memalign(&m->buf, 4096, m->bufsize)) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    struct job_owner *o = &m->job.owner;
    struct image *filter = NULL;
    o->drain_begin(o->opaque);
    ret = o->filter_insert(o->opaque, &mirror_top_driver, &filter, err,
                           errlen);
    if (ret == 0)
        mirror_top_attach(filter, m->bm);
    o->drain_end(o->opaque);
    m->tracking = ret == 0;
    return ret;
}

static int copy_failed(struct mirror_job *m, uint64_t off, int ret)
{
    job_set_error(&m->job, "%s: copying at offset %llu into %s: %s",
                  m->what, (unsigned long long)off, m->target->filename,
                  strerror(-ret));
    return ret;
}

/* The whole range once, the first pass's zero mode. */
static int first_pass(struct mirror_job *m)
{
    for (uint64_t off = 0; off < m->src->size; off += PASS_CHUNK) {
        uint64_t n = m->src->size - off < PASS_CHUNK ? m->src->size - off
                                                     : PASS_CHUNK;
        uint64_t copied = 0;
        int ret = image_copy_range(m->src, m->base, m->target, off, n,
                                   m->first_mode, m->buf, m->bufsize,
                                   &copied);
        if (ret < 0)
            return copy_failed(m, off, ret);
        ret = job_yield(&m->job, copied);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Clear the next dirty chunk at or after *pos and copy it (the target may
 * hold anything there now).  Returns 1 if a chunk was copied, 0 if none is
 * dirty past *pos, or a negative errno (the bit set again: the chunk still
 * differs). */
static int copy_next_dirty(struct mirror_job *m, uint64_t *pos,
                           uint64_t *copied)
{
    uint64_t off = dirty_bitmap_next(m->bm, *pos);
    if (off == UINT64_MAX)
        return 0;
    uint64_t n = m->bm->granularity;
    if (n > m->src->size - off)
        n = m->src->size - off;
    dirty_bitmap_clear(m->bm, off, n);
    *copied = 0;
    int ret = image_copy_range(m->src, m->base, m->target, off, n,
                               COPY_DST_ANY, m->buf, m->bufsize, copied);
    if (ret < 0) {
        dirty_bitmap_set(m->bm, off, n);
        return copy_failed(m, off, ret);
    }
    *pos = off + n;
    return 1;
}

/* One sweep over the bitmap from the start, yielding after each chunk.
 * Returns job_yield's 1 (complete) as soon as it says so. */
static int dirty_sweep(struct mirror_job *m)
{
    uint64_t pos = 0, copied;
    int ret;
    while ((ret = copy_next_dirty(m, &pos, &copied)) == 1) {
        /* New writes make more to copy than the first count said. */
        job_set_total(&m->job, atomic_load(&m->job.total) + copied);
        ret = job_yield(&m->job, copied);
        if (ret != 0)
            return ret;
    }
    return ret;
}

int mirror_engine_run(struct job *job)
{
    struct mirror_job *m = (struct mirror_job *)job;
    int ret = first_pass(m);
    bool ready = false;
    while (ret >= 0) {
        ret = dirty_sweep(m);
        if (ret != 0)
            break;
        if (!ready && dirty_bitmap_bytes(m->bm) <= READY_DIRTY_BYTES) {
            job_ready(job);
            ready = true;
        }
        if (dirty_bitmap_count(m->bm) == 0)
            usleep(IDLE_US);
        ret = job_yield(job, 0);
        if (ret != 0)
            break;
    }
    return ret == 1 ? 0 : ret;
}

int mirror_engine_catch_up(struct mirror_job *m)
{
    /* Drained: nothing sets bits now, so one sweep leaves none.  No
     * job_yield here: a pause must not hold the LUN's commands off. */
    uint64_t pos = 0, copied;
    int ret;
    while ((ret = copy_next_dirty(m, &pos, &copied)) == 1)
        ;
    if (ret < 0)
        return ret;
    ret = image_flush(m->target);
    if (ret < 0)
        job_set_error(&m->job, "%s: flushing %s: %s", m->what,
                      m->target->filename, strerror(-ret));
    return ret;
}

int mirror_engine_pivot(struct mirror_job *m, struct image *new_top,
                        struct image **old)
{
    struct job_owner *o = &m->job.owner;
    o->drain_begin(o->opaque);
    int ret = mirror_engine_catch_up(m);
    if (ret == 0) {
        *old = o->switch_top(o->opaque, new_top);
        mirror_engine_stop_tracking(m);
    }
    o->drain_end(o->opaque);
    return ret;
}

void mirror_engine_stop_tracking(struct mirror_job *m)
{
    if (!m->tracking)
        return;
    m->job.owner.filter_remove(m->job.owner.opaque);
    m->tracking = false;
}

void mirror_engine_free(struct job *job)
{
    struct mirror_job *m = (struct mirror_job *)job;
    dirty_bitmap_free(m->bm);
    m->bm = NULL;
    free(m->buf);
    m->buf = NULL;
}
