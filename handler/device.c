/* qlun — opening and closing one LUN. */
#include "device.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler/registry.h"

/* The LUN's serial: the cfgstring's serial=, else a digest of the image
 * path.  Not LIO's own unit serial: rtslib writes that only after the
 * backstore is enabled, so it is missing when a LUN is created and present
 * when tcmu-runner restarts, and the identity must not change between the
 * two. */
static void pick_serial(const struct qlun_config *cfg, char *out, size_t size)
{
    if (cfg->serial[0]) {
        snprintf(out, size, "%s", cfg->serial);
        return;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *s = cfg->path; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    snprintf(out, size, "%016" PRIx64, h);
}

/* Where backing files (and overlays) may live: backing_root=, else the
 * directory of the image the cfgstring named. */
void qlun_dev_backing_root(const struct qlun_dev *d, char *out, size_t len)
{
    if (d->cfg.backing_root[0]) {
        snprintf(out, len, "%s", d->cfg.backing_root);
        return;
    }
    snprintf(out, len, "%s", d->cfg.path);
    char *slash = strrchr(out, '/');
    if (slash == out)
        out[1] = 0;
    else if (slash)
        *slash = 0;
}

uint64_t qlun_dev_soft_threshold(const struct qlun_dev *d, uint64_t lun_bytes)
{
    if (d->cfg.soft_threshold_percent)
        return lun_bytes / 100 * d->cfg.soft_threshold_percent;
    return d->cfg.soft_threshold_bytes;
}

int qlun_dev_open_image(const struct qlun_dev *d, const char *path,
                        const char *format, struct image **out, char *err,
                        size_t errlen)
{
    char root[PATH_MAX];
    qlun_dev_backing_root(d, root, sizeof(root));
    bool direct = d->cfg.cache == QLUN_CACHE_NONE ||
                  d->cfg.cache == QLUN_CACHE_DIRECTSYNC;
    struct image_open_opts opts = {
        .path = path,
        .format = format,
        .read_only = d->cfg.read_only,
        .direct_io = direct,
        .backing_root = root,
        .l2_cache_bytes = d->cfg.l2_cache_size,
        .refcount_cache_bytes = d->cfg.refcount_cache_size,
    };
    return image_open(&opts, out, err, errlen);
}

int qlun_dev_open(const struct qlun_dev_params *p, struct qlun_dev **out,
                  char *err, size_t errlen)
{
    char why[512];
    struct qlun_dev *d = calloc(1, sizeof(*d));
    int ret;

    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&d->control_lock, NULL);
    ret = qlun_config_parse(p->cfgstring, &d->cfg, why, sizeof(why));
    if (ret < 0) {
        snprintf(err, errlen, "bad cfgstring: %s", why);
        goto fail;
    }
    snprintf(d->cfgstring, sizeof(d->cfgstring), "%s", p->cfgstring);
    if (p->block_size != 512 && p->block_size != 4096) {
        snprintf(err, errlen, "hw_block_size %u not supported (use 512 or "
                 "4096)", p->block_size);
        ret = -EINVAL;
        goto fail;
    }

    ret = qlun_dev_open_image(d, d->cfg.path, d->cfg.format, &d->img, why,
                              sizeof(why));
    if (ret < 0) {
        snprintf(err, errlen, "cannot open image: %s", why);
        goto fail;
    }
    uint64_t lun_bytes = p->num_blocks * p->block_size;
    if (p->num_blocks == 0 || d->img->size < lun_bytes) {
        snprintf(err, errlen, "%s is %" PRIu64 " bytes, smaller than the LUN "
                 "size %" PRIu64 " bytes; create the backstore with size <= "
                 "the image's virtual size", d->cfg.path, d->img->size,
                 lun_bytes);
        ret = -EINVAL;
        goto fail;
    }
    /* A LUN block smaller than the device's would need read-modify-write
     * of device blocks for every write: refuse, and say what would work. */
    if (d->img->info.request_alignment > p->block_size) {
        snprintf(err, errlen, "%s has %u-byte logical blocks, larger than the "
                 "LUN's hw_block_size %u; set hw_block_size=%u", d->cfg.path,
                 d->img->info.request_alignment, p->block_size,
                 d->img->info.request_alignment);
        ret = -EINVAL;
        goto fail;
    }

    ret = qlun_dev_throttle_open(d, why, sizeof(why));
    if (ret < 0) {
        snprintf(err, errlen, "cannot set up the throttle: %s", why);
        goto fail;
    }

    pick_serial(&d->cfg, d->serial, sizeof(d->serial));
    snprintf(d->name, sizeof(d->name), "%s", p->name ? p->name : "");
    struct scsi_lun_config lc = {
        .img = qlun_dev_served(d),
        .block_size = p->block_size,
        .num_blocks = p->num_blocks,
        .max_xfer_blocks = p->max_xfer_blocks,
        .serial = d->serial,
        .read_only = d->cfg.read_only,
        .write_cache = d->cfg.cache == QLUN_CACHE_WRITEBACK ||
                       d->cfg.cache == QLUN_CACHE_NONE,
        .soft_threshold = qlun_dev_soft_threshold(d, lun_bytes),
    };
    ret = scsi_lun_new(&lc, &d->lun);
    if (ret < 0) {
        snprintf(err, errlen, "cannot create the LUN: %s", strerror(-ret));
        goto fail;
    }

    if (strcmp(d->cfg.stats_path, "off") != 0) {
        if (d->cfg.stats_path[0])
            snprintf(d->stats_path, sizeof(d->stats_path), "%s",
                     d->cfg.stats_path);
        else
            snprintf(d->stats_path, sizeof(d->stats_path),
                     QLUN_STATS_DIR "/%s.json", d->serial);
        ret = stats_file_start(d->lun, d->stats_path, &d->stats);
        /* Statistics are a convenience: the LUN is served without them. */
        if (ret < 0)
            snprintf(d->warning, sizeof(d->warning),
                     "cannot publish statistics at %s: %s", d->stats_path,
                     strerror(-ret));
    }
    lun_registry_add(d);
    d->registered = true;
    *out = d;
    return 0;

fail:
    qlun_dev_close(d);
    return ret;
}

int qlun_dev_close(struct qlun_dev *d)
{
    if (!d)
        return 0;
    /* First, so that no management command still holds the LUN. */
    if (d->registered)
        lun_registry_remove(d);
    stats_file_stop(d->stats);
    scsi_lun_free(d->lun);
    /* The filters first, then the top and what is below it. */
    int ret = image_close(qlun_dev_served(d));
    pthread_mutex_destroy(&d->control_lock);
    free(d);
    return ret;
}
