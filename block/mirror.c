/* qlun — the mirror job: copy the LUN (sync=full) or its top layer
 * (sync=top) to another image, keep it in step with the initiator's
 * writes, and on complete pivot the LUN onto it (storage migration); on
 * cancel the LUN goes on serving the source.  The copying is the mirror
 * engine's (mirror_engine.c).
 *
 * The target: a new file, created exclusively (a qcow2 image by its
 * driver's create; a raw one as an empty sparse file), or with `existing`
 * an image or block device opened as it is, at least as large as the LUN.
 * A new target reads as zeros, so the first pass skips what the source
 * does not allocate; an existing one may hold anything, so every range
 * that reads as zeros is zeroed there (as metadata: never zero buffers).
 * sync=top: the target copies only the top's own layer and gets the top's
 * backing file as its backing file, so it must be a format that can name
 * one (qcow2).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/driver.h"
#include "block/mirror_internal.h"

void (*mirror_target_hook)(struct image **target);

/* A new raw target: an empty sparse file of the LUN's size.  O_EXCL:
 * never clobbers a file (or follows a symlink). */
static int create_raw(const char *path, uint64_t size, char *err,
                      size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "creating %s: %s", path, strerror(e));
        return -e;
    }
    int ret = ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0 ? -errno : 0;
    close(fd);
    if (ret < 0) {
        unlink(path);
        snprintf(err, errlen, "sizing %s: %s", path, strerror(-ret));
    }
    return ret;
}

/* The directory backing files must lie in: the LUN's backing root, else
 * the top's own directory. */
static void backing_root(const struct image_open_opts *o,
                         const struct image *top, char *out, size_t len)
{
    if (o->backing_root) {
        snprintf(out, len, "%s", o->backing_root);
        return;
    }
    snprintf(out, len, "%s", top->filename);
    char *slash = strrchr(out, '/');
    if (slash == out)
        out[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(out, len, ".");
}

static int create_target(struct mirror_job *m, const struct job_params *p,
                         const char *format, const struct image_open_opts *o,
                         char *err, size_t errlen)
{
    struct image *top = m->src;
    int ret;
    if (p->sync_top) {
        struct image *below = image_backing_child(top);
        if (!below) {
            /* Nothing below the top: sync=top is sync=full. */
            goto full;
        }
        char root[PATH_MAX];
        backing_root(o, top, root, sizeof(root));
        ret = image_create_overlay(image_skip_filters(below), p->target,
                                   root, top->info.cluster_size, err,
                                   errlen);
    } else {
full:
        if (strcmp(format, "raw") == 0) {
            ret = create_raw(p->target, top->size, err, errlen);
        } else {
            const struct block_driver *drv = block_driver_find(format);
            struct image_create_opts c = {
                .path = p->target,
                .size = top->size,
                .cluster_size = top->info.cluster_size >= 512
                                    ? top->info.cluster_size : 0,
            };
            ret = drv->create(&c, err, errlen);
        }
    }
    if (ret == 0)
        snprintf(m->created, sizeof(m->created), "%s", p->target);
    return ret;
}

static int check_params(const struct job_params *p, struct image *top,
                        const char **format, char *err, size_t errlen)
{
    *format = p->format ? p->format : top->info.format;
    const struct block_driver *drv = block_driver_find(*format);
    if (!p->target || !p->target[0]) {
        snprintf(err, errlen, "mirror needs a target");
        return -EINVAL;
    }
    if (!drv || drv->is_filter || drv->is_protocol) {
        snprintf(err, errlen, "unknown target format '%s'", *format);
        return -EINVAL;
    }
    if (p->sync_top && image_backing_child(top) &&
        strcmp(*format, image_overlay_format()) != 0) {
        snprintf(err, errlen, "sync=top needs a target that names a backing "
                 "file (%s), not %s", image_overlay_format(), *format);
        return -EINVAL;
    }
    if (!p->existing && strcmp(*format, "raw") != 0 && !drv->create) {
        snprintf(err, errlen, "cannot create %s images", *format);
        return -ENOTSUP;
    }
    return 0;
}

/* Open the target read-write; a new sync=top target grows to the LUN's
 * size if the backing file it was made over is smaller. */
static int open_target(struct mirror_job *m, const char *path,
                       const char *format, char *err, size_t errlen)
{
    struct image_open_opts o;
    m->job.owner.open_opts(m->job.owner.opaque, &o);
    o.path = path;
    o.format = format;
    o.read_only = false;
    int ret = image_open(&o, &m->target, err, errlen);
    if (ret < 0)
        return ret;
    if (m->target->size < m->src->size && m->created[0])
        ret = image_resize(m->target, m->src->size, false, err, errlen);
    else if (m->target->size < m->src->size) {
        snprintf(err, errlen, "target %s (%llu bytes) is smaller than the "
                 "LUN (%llu bytes)", path,
                 (unsigned long long)m->target->size,
                 (unsigned long long)m->src->size);
        ret = -ENOSPC;
    }
    return ret;
}

static void undo_start(struct mirror_job *m)
{
    struct job_owner *o = &m->job.owner;
    if (m->tracking) {
        o->drain_begin(o->opaque);
        mirror_engine_stop_tracking(m);
        o->drain_end(o->opaque);
    }
    image_close(m->target);
    m->target = NULL;
    if (m->created[0])
        unlink(m->created);
    mirror_engine_free(&m->job);
}

static int mirror_start(struct job *job, const struct job_params *p,
                        char *err, size_t errlen)
{
    struct mirror_job *m = (struct mirror_job *)job;
    struct job_owner *o = &job->owner;
    const char *format;
    m->what = "mirror";
    m->src = o->top(o->opaque);
    int ret = check_params(p, m->src, &format, err, errlen);
    if (ret < 0)
        return ret;
    struct image_open_opts oo;
    o->open_opts(o->opaque, &oo);
    if (!p->existing) {
        ret = create_target(m, p, format, &oo, err, errlen);
        if (ret < 0)
            return ret;
    }
    ret = open_target(m, p->target, format, err, errlen);
    if (ret == 0 && mirror_target_hook)
        mirror_target_hook(&m->target);
    if (ret == 0) {
        m->base = p->sync_top ? image_backing_child(m->src) : NULL;
        m->first_mode = p->existing ? COPY_DST_ANY : COPY_DST_READS_ZERO;
        ret = mirror_engine_setup(m, p->granularity, err, errlen);
    }
    if (ret < 0)
        undo_start(m);
    return ret;
}

/* Complete: the LUN serves the target from now on, and the old top's
 * graph is closed (the target has its own backing chain). */
static int pivot(struct mirror_job *m)
{
    struct image *old;
    int ret = mirror_engine_pivot(m, m->target, &old);
    if (ret == 0) {
        m->target = NULL; /* the LUN's now */
        image_close(old);
    }
    return ret;
}

static int mirror_finish(struct job *job, int run_ret)
{
    struct mirror_job *m = (struct mirror_job *)job;
    int ret = run_ret == 0 ? pivot(m) : run_ret;
    if (ret < 0) {
        /* Cancelled or failed: the LUN keeps its source; the target file
         * stays (as QEMU leaves it), closed. */
        struct job_owner *o = &job->owner;
        o->drain_begin(o->opaque);
        mirror_engine_stop_tracking(m);
        o->drain_end(o->opaque);
        image_close(m->target);
        m->target = NULL;
    }
    return ret == -ECANCELED ? 0 : ret;
}

static void mirror_destroy(struct job *job)
{
    struct mirror_job *m = (struct mirror_job *)job;
    image_close(m->target);
    m->target = NULL;
    mirror_engine_free(job);
}

const struct job_driver mirror_job_driver = {
    .type = "mirror",
    .instance_size = sizeof(struct mirror_job),
    .start = mirror_start,
    .run = mirror_engine_run,
    .finish = mirror_finish,
    .destroy = mirror_destroy,
};
