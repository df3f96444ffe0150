/* qlun — the LUN side of block jobs: the job_owner over a qlun_dev.
 *
 * A job (block/job.h) works on the LUN's graph from its own thread; what
 * it needs of the LUN it asks through the owner built here.  The rules:
 *
 * - One job per LUN.  d->job_id is set under control_lock before the job
 *   is started and cleared when it concludes, so two job-starts cannot
 *   both pass the check, and resize and snapshots (which take the same
 *   lock) see the job and refuse: the job owns the top while it runs (a
 *   snapshot or a resize would change the node it copies into or from).
 * - The job's drain is the LUN's control_lock, then its drain, as for
 *   every other change of the LUN (docs/locking.md).
 * - A pivot (switch_top) changes what the LUN's cfgstring must name, or
 *   a restart would serve the old top.  The new cfgstring is composed
 *   under the drain and stored through d->persist after drain_end, never
 *   under control_lock: LIO hands the write back to the handler's
 *   reconfig, which compares it with d->cfgstring (snapshot.c does the
 *   same).  Whether it fits in LIO's 255 bytes is checked at job-start,
 *   when the job can still be refused.
 */
#include "device.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "block/driver.h"
#include "handler/config.h"

static void owner_drain_begin(void *opaque)
{
    struct qlun_dev *d = opaque;
    pthread_mutex_lock(&d->control_lock);
    scsi_lun_drain_begin(d->lun);
}

static void persist_cfgstring(struct qlun_dev *d, const char *cfgstring)
{
    char err[512] = "";
    if (!d->persist)
        return;
    int ret = d->persist(d->persist_opaque, "dev_config", cfgstring, err,
                         sizeof(err));
    if (ret < 0)
        snprintf(d->warning, sizeof(d->warning), "storing the cfgstring "
                 "after a job's pivot failed: %s", err[0] ? err
                 : strerror(-ret));
}

static void owner_drain_end(void *opaque)
{
    struct qlun_dev *d = opaque;
    char cfgstring[QLUN_CFGSTRING_MAX + 1];
    bool store = d->job_cfgstring_pending;
    if (store)
        snprintf(cfgstring, sizeof(cfgstring), "%s", d->job_cfgstring);
    d->job_cfgstring_pending = false;
    scsi_lun_drain_end(d->lun);
    pthread_mutex_unlock(&d->control_lock);
    if (store)
        persist_cfgstring(d, cfgstring);
}

static unsigned owner_in_flight(void *opaque)
{
    struct qlun_dev *d = opaque;
    return scsi_lun_in_flight(d->lun);
}

static struct image *owner_top(void *opaque)
{
    struct qlun_dev *d = opaque;
    return d->img;
}

static int owner_filter_insert(void *opaque, const struct block_driver *drv,
                               struct image **node, char *err, size_t errlen)
{
    return qlun_dev_filter_insert(opaque, QLUN_FILTER_JOB, drv, node, err,
                                  errlen);
}

static void owner_filter_remove(void *opaque)
{
    qlun_dev_filter_remove(opaque, QLUN_FILTER_JOB);
}

static const char *format_of(const struct image *img)
{
    return img->drv ? img->drv->name : NULL;
}

/* Under the drain (control_lock held). */
static struct image *owner_switch_top(void *opaque, struct image *new_top)
{
    struct qlun_dev *d = opaque;
    int ret = qlun_config_with_top(d->cfgstring, new_top->filename,
                                   format_of(new_top), d->serial, d->job_root,
                                   d->job_cfgstring,
                                   sizeof(d->job_cfgstring));
    if (ret == 0) {
        snprintf(d->cfgstring, sizeof(d->cfgstring), "%s", d->job_cfgstring);
        d->job_cfgstring_pending = true;
    } else {
        /* job-start checked that it fits; a path that changed meanwhile
         * is all that can bring us here.  The pivot has happened: say
         * that a restart would not follow it. */
        snprintf(d->warning, sizeof(d->warning), "the LUN now serves %s, "
                 "but its cfgstring cannot name it; a restart would serve "
                 "the old top", new_top->filename);
    }
    return qlun_dev_switch_top(d, new_top);
}

static void owner_open_opts(void *opaque, struct image_open_opts *opts)
{
    struct qlun_dev *d = opaque;
    qlun_dev_image_opts(d, d->job_root, opts);
}

static void owner_concluded(void *opaque, struct job *job)
{
    struct qlun_dev *d = opaque;
    pthread_mutex_lock(&d->control_lock);
    if (strcmp(d->job_id, job->id) == 0)
        d->job_id[0] = '\0';
    pthread_mutex_unlock(&d->control_lock);
}

void qlun_dev_job_owner(struct qlun_dev *d, struct job_owner *o)
{
    *o = (struct job_owner){
        .opaque = d,
        .lun = d->serial,
        .drain_begin = owner_drain_begin,
        .drain_end = owner_drain_end,
        .in_flight = owner_in_flight,
        .top = owner_top,
        .filter_insert = owner_filter_insert,
        .filter_remove = owner_filter_remove,
        .switch_top = owner_switch_top,
        .open_opts = owner_open_opts,
        .concluded = owner_concluded,
    };
}

int qlun_dev_job_busy(const struct qlun_dev *d, char *err, size_t errlen)
{
    if (!d->job_id[0])
        return 0;
    snprintf(err, errlen, "job %s is running on this LUN; wait for it to "
             "end or cancel it (qlunctl job cancel %s)", d->job_id,
             d->job_id);
    return -EBUSY;
}

/* The node of d's chain (the top and its backing files) that path names;
 * NULL if none.  Under control_lock. */
static struct image *chain_node(const struct qlun_dev *d, const char *path)
{
    return image_chain_find(d->img, path);
}

/* The image a job of p would pivot the LUN onto (path and format), if it
 * pivots: a mirror onto its target, an active commit onto its base. */
static bool pivot_target(const struct qlun_dev *d, const struct job_params *p,
                         const char **path, const char **format)
{
    if (strcmp(p->type, "mirror") == 0 && p->target) {
        *path = p->target;
        *format = p->format ? p->format : format_of(d->img);
        return true;
    }
    if (strcmp(p->type, "commit") != 0 ||
        (p->top && chain_node(d, p->top) != d->img))
        return false;
    struct image *base = p->base ? chain_node(d, p->base) : d->img;
    if (!p->base)
        while (base->backing)
            base = base->backing;
    *path = p->base ? p->base : base->filename;
    *format = base ? format_of(base) : NULL;
    return *path != NULL;
}

/* Under control_lock: refuse a job whose pivot would leave the LUN with a
 * cfgstring LIO cannot keep (a restart would then serve the old top). */
static int check_pivot_cfgstring(struct qlun_dev *d,
                                 const struct job_params *p, char *err,
                                 size_t errlen)
{
    const char *path, *format;
    char out[QLUN_CFGSTRING_MAX + 1];
    if (!pivot_target(d, p, &path, &format))
        return 0;
    int ret = qlun_config_with_top(d->cfgstring, path, format, d->serial,
                                   d->job_root, out, sizeof(out));
    if (ret < 0)
        snprintf(err, errlen, "after the pivot the LUN's cfgstring would "
                 "name %s: longer than LIO keeps (%d bytes) or unreadable "
                 "(';' in a path); use a shorter path", path,
                 QLUN_CFGSTRING_MAX);
    return ret;
}

/* Under control_lock: claim the LUN for a job with id. */
static int claim_locked(struct qlun_dev *d, const struct job_params *p,
                        const char *id, char *err, size_t errlen)
{
    if (d->closing) {
        snprintf(err, errlen, "the LUN is closing");
        return -EBUSY;
    }
    int ret = qlun_dev_job_busy(d, err, errlen);
    if (ret < 0)
        return ret;
    qlun_dev_backing_root(d, d->job_root, sizeof(d->job_root));
    ret = check_pivot_cfgstring(d, p, err, errlen);
    if (ret == 0)
        snprintf(d->job_id, sizeof(d->job_id), "%s", id);
    return ret;
}

static void release(struct qlun_dev *d, const char *id)
{
    pthread_mutex_lock(&d->control_lock);
    if (strcmp(d->job_id, id) == 0)
        d->job_id[0] = '\0';
    pthread_mutex_unlock(&d->control_lock);
}

/* Start one attempt with id (claimed for the LUN meanwhile). */
static int start_as(struct qlun_dev *d, const struct job_driver *drv,
                    const struct job_params *p, const char *id, char *err,
                    size_t errlen)
{
    pthread_mutex_lock(&d->control_lock);
    int ret = claim_locked(d, p, id, err, errlen);
    pthread_mutex_unlock(&d->control_lock);
    if (ret < 0)
        return ret;
    struct job_params q = *p;
    struct job_owner o;
    q.id = id;
    qlun_dev_job_owner(d, &o);
    /* Not under control_lock: the driver's start drains the LUN through
     * the owner, which takes it. */
    ret = drv ? job_start_with_driver(drv, &q, &o, err, errlen)
              : job_start(&q, &o, err, errlen);
    if (ret < 0)
        release(d, id);
    return ret;
}

int qlun_dev_job_start_with_driver(struct qlun_dev *d,
                                   const struct job_driver *drv,
                                   const struct job_params *p, char id[64],
                                   char *err, size_t errlen)
{
    static atomic_uint next_id;
    if (p->id) {
        if (strlen(p->id) >= 64) {
            snprintf(err, errlen, "job id '%.64s...' is longer than 63 "
                     "bytes", p->id);
            return -EINVAL;
        }
        snprintf(id, 64, "%s", p->id);
        return start_as(d, drv, p, id, err, errlen);
    }
    /* A made-up id may be one a caller chose: take the next. */
    int ret = -EEXIST;
    for (int tries = 0; tries < 100 && ret == -EEXIST; tries++) {
        snprintf(id, 64, "job%u", atomic_fetch_add(&next_id, 1) + 1);
        ret = start_as(d, drv, p, id, err, errlen);
    }
    return ret;
}

int qlun_dev_job_start(struct qlun_dev *d, const struct job_params *p,
                       char id[64], char *err, size_t errlen)
{
    return qlun_dev_job_start_with_driver(d, NULL, p, id, err, errlen);
}
