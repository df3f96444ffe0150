/* qlun — snapshots of a served LUN: external (switch to a new overlay) and
 * internal (in the top image's own snapshot table).
 *
 * Both change what the LUN serves from, so both run with the LUN drained
 * (scsi_lun_drain_begin: no command in flight, none started): a snapshot
 * holds exactly the writes acknowledged before it, and no command sees an
 * image half switched.  The drain is kept short: the overlay file is made
 * before it, the old top is closed after it.
 *
 * An external snapshot changes the LUN's top image, and the cfgstring that
 * tcmu-runner opens the LUN with after a restart must follow, or a restart
 * would serve the old top read-write, under the overlay that now depends
 * on it.  So the new cfgstring (the overlay's path, and explicitly the
 * serial and backing root that the old one implied) is composed first,
 * the snapshot refused if it cannot be stored (LIO keeps 255 bytes), and
 * stored through d->persist (the handler writes it to the backstore's
 * configfs dev_config) once the switch is done.
 */
#include "device.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "handler/config.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under the drain: flush the old top (the snapshot holds every
 * acknowledged write), open the overlay over it, and switch the LUN. */
static int switch_to_overlay(struct qlun_dev *d, const char *overlay,
                             struct image **old, char *err, size_t errlen)
{
    char why[512];
    int ret = image_flush(d->img);
    if (ret < 0) {
        snprintf(err, errlen, "flushing %s before the snapshot failed: %s",
                 d->img->filename, strerror(-ret));
        return ret;
    }
    struct image *img;
    ret = qlun_dev_open_image(d, overlay, image_overlay_format(), &img, why,
                        sizeof(why));
    if (ret < 0) {
        snprintf(err, errlen, "cannot open the new overlay: %s", why);
        return ret;
    }
    *old = qlun_dev_switch_top(d, img);
    return 0;
}

/* Under control_lock: make the overlay, switch to it under the drain. */
static int snapshot_locked(struct qlun_dev *d, const char *overlay_path,
                           uint32_t cluster_size, char *cfgstring,
                           size_t cfglen, char *err, size_t errlen)
{
    /* A job holds on to the top it works on (and may pivot away from
     * it): a snapshot would move the LUN's writes under its feet. */
    int ret = qlun_dev_job_busy(d, err, errlen);
    if (ret < 0)
        return ret;
    char root[PATH_MAX];
    qlun_dev_backing_root(d, root, sizeof(root));
    ret = qlun_config_with_top(d->cfgstring, overlay_path, NULL,
                                   d->serial, root, cfgstring, cfglen);
    if (ret < 0) {
        snprintf(err, errlen, "the LUN's cfgstring for %s would be longer "
                 "than LIO keeps (%d bytes) or unreadable (';' in a path); "
                 "use a shorter overlay path", overlay_path,
                 QLUN_CFGSTRING_MAX);
        return ret;
    }
    ret = image_create_overlay(d->img, overlay_path, root,
                               cluster_size, err, errlen);
    if (ret < 0)
        return ret;

    struct image *old = NULL;
    uint64_t t0 = now_ns();
    scsi_lun_drain_begin(d->lun);
    ret = switch_to_overlay(d, overlay_path, &old, err, errlen);
    scsi_lun_drain_end(d->lun);
    d->last_drain_ns = now_ns() - t0;
    if (ret < 0) {
        unlink(overlay_path);
        return ret;
    }
    snprintf(d->cfgstring, sizeof(d->cfgstring), "%s", cfgstring);
    /* The old top's metadata is already durable (flushed above): closing
     * it writes nothing the overlay depends on. */
    int cret = image_close(old);
    if (cret < 0)
        snprintf(d->warning, sizeof(d->warning), "closing the old top after "
                 "the snapshot failed: %s", strerror(-cret));
    return 0;
}

int qlun_dev_snapshot_create(struct qlun_dev *d, const char *overlay_path,
                             uint32_t cluster_size, char *err, size_t errlen)
{
    char cfgstring[QLUN_CFGSTRING_MAX + 1];
    if (d->cfg.read_only) {
        snprintf(err, errlen, "the LUN is read-only: nothing to snapshot");
        return -EROFS;
    }
    pthread_mutex_lock(&d->control_lock);
    int ret = snapshot_locked(d, overlay_path, cluster_size, cfgstring,
                              sizeof(cfgstring), err, errlen);
    pthread_mutex_unlock(&d->control_lock);
    if (ret < 0 || !d->persist)
        return ret;
    return d->persist(d->persist_opaque, "dev_config", cfgstring, err,
                      errlen);
}

int qlun_dev_snapshot_internal(struct qlun_dev *d, bool create,
                               const char *name, char *err, size_t errlen)
{
    if (d->cfg.read_only) {
        snprintf(err, errlen, "the LUN is read-only");
        return -EROFS;
    }
    pthread_mutex_lock(&d->control_lock);
    /* An internal snapshot changes the top's clusters' refcounts (copy on
     * write from then on) under a job that copies into or out of it. */
    int ret = qlun_dev_job_busy(d, err, errlen);
    if (ret == 0) {
        scsi_lun_drain_begin(d->lun);
        ret = create ? image_snapshot_create(d->img, name, err, errlen)
                     : image_snapshot_delete(d->img, name, err, errlen);
        scsi_lun_drain_end(d->lun);
    }
    pthread_mutex_unlock(&d->control_lock);
    return ret;
}

int qlun_dev_snapshot_list(struct qlun_dev *d,
                           struct image_snapshot_info **out, size_t *count,
                           char *err, size_t errlen)
{
    pthread_mutex_lock(&d->control_lock);
    int ret = image_snapshot_list(d->img, out, count, err, errlen);
    pthread_mutex_unlock(&d->control_lock);
    return ret;
}
