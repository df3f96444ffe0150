/* qlun — online resize of a served LUN.
 *
 * Two ways in: qlunctl resize (the management socket calls
 * qlun_dev_resize) and LIO's dev_size attribute (tcmu-runner's reconfig,
 * qlun_dev_reconfig_size).  Both drain the LUN, so that no command sees
 * the image and the LUN disagree about the size, and resize the image
 * before the LUN: the LUN never reaches past its image's end.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "device.h"

/* The image must hold at least new_size bytes; it is grown when it holds
 * fewer, and a forced shrink shrinks it too (its data rules apply).  A
 * grow within an image already larger than the LUN leaves the image as
 * it is.  Drained. */
static int resize_image(struct qlun_dev *d, uint64_t old_size,
                        uint64_t new_size, bool force, char *err,
                        size_t errlen)
{
    if (new_size > old_size && new_size <= d->img->size)
        return 0;
    return image_resize(d->img, new_size, force, err, errlen);
}

static int resize_serialised(struct qlun_dev *d, uint64_t new_size,
                             bool force, bool report_ua, char *err,
                             size_t errlen);

static int resize(struct qlun_dev *d, uint64_t new_size, bool force,
                  bool report_ua, char *err, size_t errlen)
{
    /* The size a resize starts from must still be the LUN's when it
     * drains, or two at once could turn one's grow into an unforced
     * shrink. */
    pthread_mutex_lock(&d->control_lock);
    int ret = resize_serialised(d, new_size, force, report_ua, err, errlen);
    pthread_mutex_unlock(&d->control_lock);
    return ret;
}

static int resize_serialised(struct qlun_dev *d, uint64_t new_size,
                             bool force, bool report_ua, char *err,
                             size_t errlen)
{
    if (errlen)
        err[0] = 0;
    struct scsi_lun_info li;
    scsi_lun_get_info(d->lun, &li);
    uint32_t bs = li.block_size;
    if (new_size == 0 || new_size % bs || new_size > (uint64_t)INT64_MAX) {
        snprintf(err, errlen, "size %" PRIu64 " is not a positive multiple "
                 "of the LUN's %" PRIu32 "-byte blocks", new_size, bs);
        return -EINVAL;
    }
    if (d->cfg.read_only) {
        snprintf(err, errlen, "%s is served read-only", d->cfg.path);
        return -EROFS;
    }
    uint64_t old_size = li.num_blocks * bs;
    if (new_size == old_size)
        return 0;
    if (new_size < old_size && !force) {
        snprintf(err, errlen, "shrinking the LUN from %" PRIu64 " to %" PRIu64
                 " bytes refused: the initiator may have data there (force "
                 "it if that is meant)", old_size, new_size);
        return -EINVAL;
    }
    scsi_lun_drain_begin(d->lun);
    int ret = resize_image(d, old_size, new_size, force, err, errlen);
    if (ret == 0) {
        qlun_dev_top_resized(d);
        if (report_ua)
            scsi_lun_resize(d->lun, new_size / bs);
        else
            scsi_lun_set_capacity(d->lun, new_size / bs);
        scsi_lun_set_soft_threshold(d->lun,
                                    qlun_dev_soft_threshold(d, new_size));
    }
    scsi_lun_drain_end(d->lun);
    return ret;
}

int qlun_dev_resize(struct qlun_dev *d, uint64_t new_size, bool force,
                    char *err, size_t errlen)
{
    int ret = resize(d, new_size, force, true, err, errlen);
    if (ret < 0 || !d->persist)
        return ret;
    /* LIO keeps the size too (attrib/dev_size): what targetcli saves and
     * a restarted tcmu-runner opens the LUN with.  Outside the control
     * lock: the kernel passes it back to us (qlun_dev_reconfig_size, a
     * no-op now) before the write returns. */
    char size[32];
    snprintf(size, sizeof(size), "%" PRIu64, new_size);
    return d->persist(d->persist_opaque, "dev_size", size, err, errlen);
}

int qlun_dev_reconfig_size(struct qlun_dev *d, uint64_t new_size,
                           char *err, size_t errlen)
{
    return resize(d, new_size, false, false, err, errlen);
}
