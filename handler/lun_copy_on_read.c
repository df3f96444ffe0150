/* qlun — turning a LUN's copy-on-read filter on and off while it serves
 * (block/copy_on_read.h; the LUN's filter slot QLUN_FILTER_COPY_ON_READ).
 * The filter moves edges that commands follow: under the drain.  The
 * setting outlives a restart through the cfgstring kept in LIO, written
 * after the drain and outside control_lock (docs/locking.md: the kernel
 * hands that write back to the handler's reconfig). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/copy_on_read.h"
#include "block/driver.h"
#include "handler/device.h"
#include "scsi/scsi.h"

/* Under control_lock: the filter in or out, the cfgstring that says so
 * into cfgstring. */
static int set_locked(struct qlun_dev *d, bool enable, char *cfgstring,
                      size_t cfglen, char *err, size_t errlen)
{
    int ret = qlun_config_with_option(d->cfgstring, "copy_on_read",
                                      enable ? "on" : "off", cfgstring,
                                      cfglen);
    if (ret < 0) {
        snprintf(err, errlen, "the LUN's cfgstring with copy_on_read would "
                 "be longer than LIO keeps (%d bytes)", QLUN_CFGSTRING_MAX);
        return ret;
    }
    bool present = d->filters[QLUN_FILTER_COPY_ON_READ] != NULL;
    if (present != enable) {
        scsi_lun_drain_begin(d->lun);
        if (enable)
            ret = qlun_dev_filter_insert(d, QLUN_FILTER_COPY_ON_READ,
                                         &copy_on_read_driver, NULL, err,
                                         errlen);
        else
            qlun_dev_filter_remove(d, QLUN_FILTER_COPY_ON_READ);
        scsi_lun_drain_end(d->lun);
        if (ret < 0)
            return ret;
    }
    d->cfg.copy_on_read = enable;
    snprintf(d->cfgstring, sizeof(d->cfgstring), "%s", cfgstring);
    return 0;
}

int qlun_dev_set_copy_on_read(struct qlun_dev *d, bool enable, char *err,
                              size_t errlen)
{
    char cfgstring[QLUN_CFGSTRING_MAX + 1];
    if (errlen)
        err[0] = 0;
    if (d->cfg.read_only) {
        snprintf(err, errlen, "the LUN is read-only: copy-on-read would "
                 "write into its image");
        return -EROFS;
    }
    pthread_mutex_lock(&d->control_lock);
    int ret = set_locked(d, enable, cfgstring, sizeof(cfgstring), err,
                         errlen);
    pthread_mutex_unlock(&d->control_lock);
    if (ret < 0 || !d->persist)
        return ret;
    return d->persist(d->persist_opaque, "dev_config", cfgstring, err,
                      errlen);
}

int qlun_dev_open_copy_on_read(struct qlun_dev *d, char *err, size_t errlen)
{
    if (!d->cfg.copy_on_read)
        return 0;
    if (d->cfg.read_only) {
        snprintf(err, errlen, "copy_on_read=on needs a writable LUN (it "
                 "writes into the image), not readonly=on");
        return -EINVAL;
    }
    return qlun_dev_filter_insert(d, QLUN_FILTER_COPY_ON_READ,
                                  &copy_on_read_driver, NULL, err, errlen);
}
