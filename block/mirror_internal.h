/* qlun — the mirror engine, shared by the mirror job (block/mirror.c) and
 * the active commit (block/active_commit.c): copy what a reader of the
 * LUN's top sees (above `base`) into `target`, track the initiator's
 * writes meanwhile with a dirty bitmap fed by a filter in the LUN's job
 * slot (block/mirror_top.c), become ready once caught up, and on complete
 * copy the last dirty chunks under the drain before the pivot.
 */
#ifndef QLUN_BLOCK_MIRROR_INTERNAL_H
#define QLUN_BLOCK_MIRROR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/copy.h"
#include "block/dirty_bitmap.h"
#include "block/job.h"

struct mirror_job {
    struct job job;              /* first: the runner allocates us */
    struct image *src;           /* the LUN's top when the job started */
    struct image *base;          /* copy what lies above it (NULL: all) */
    struct image *target;        /* where the copy goes */
    enum copy_zero_mode first_mode; /* the first pass's (new target or not) */
    struct dirty_bitmap *bm;
    bool tracking;               /* the filter is in the LUN's job slot */
    void *buf;                   /* image_copy_range's bounce buffer */
    size_t bufsize;
    const char *what;            /* "mirror" / "commit", for messages */
    /* mirror: the target file this job created (a failed start removes
     * it); commit: the node whose backing child is the base. */
    char created[4096];
    struct image *base_parent;
};

/* The tracking filter: every write, zero and discard through it marks its
 * range in the bitmap once it has completed. */
extern const struct block_driver mirror_top_driver;
void mirror_top_attach(struct image *filter, struct dirty_bitmap *bm);

/* Allocate the bitmap and buffer, count the total, and put the tracking
 * filter in the LUN's job slot (under the drain).  src, base, target and
 * first_mode set by the caller. */
int mirror_engine_setup(struct mirror_job *m, uint32_t granularity,
                        char *err, size_t errlen);
/* The job's run: first pass, dirty chunks, ready, until complete. */
int mirror_engine_run(struct job *job);
/* Under the drain: copy every chunk still dirty (nothing new arrives),
 * then flush the target.  0 or a negative errno after job_set_error. */
int mirror_engine_catch_up(struct mirror_job *m);
/* Complete: drain the LUN, copy the last dirty chunks (catch_up), then
 * the LUN serves new_top and the tracking filter comes out; the drain
 * ends and *old gets the LUN's old top for the driver to close.  On
 * failure the LUN still serves the source with tracking on (the driver's
 * finish undoes it). */
int mirror_engine_pivot(struct mirror_job *m, struct image *new_top,
                        struct image **old);
/* Under the drain: take the filter out of the LUN's job slot. */
void mirror_engine_stop_tracking(struct mirror_job *m);
/* For tests: called with the mirror's target node right after it is
 * opened (a test puts a failing filter above it).  NULL in production. */
extern void (*mirror_target_hook)(struct image **target);
/* Free the bitmap and buffer (the driver's destroy). */
void mirror_engine_free(struct job *job);

#endif
