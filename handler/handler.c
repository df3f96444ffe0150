/* qlun — the tcmu-runner glue.
 *
 * A passthrough-only handler: every CDB goes to qlun_handle_cmd, which runs
 * on tcmu-runner's worker threads (nr_threads), hands the CDB to scsi/ and
 * returns the status.  Nothing here parses a CDB or knows an image format.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcmu-runner.h"
#include "libtcmu.h"
#include "tcmur_device.h"

#include "block/image.h"
#include "handler/config.h"
#include "handler/stats_file.h"
#include "scsi/scsi.h"

/* Worker threads per LUN: enough to keep a qcow2 image busy while some
 * commands wait on allocation or flush. */
#define QLUN_WORKER_THREADS 8

struct qlun_dev {
    struct qlun_config cfg;
    struct image *img;
    struct scsi_lun *lun;
    struct stats_file *stats;
};

static bool qlun_check_config(const char *cfgstring, char **reason)
{
    struct qlun_config cfg;
    char err[256];

    if (qlun_config_parse(cfgstring, &cfg, err, sizeof(err)) < 0) {
        if (asprintf(reason, "%s", err) < 0)
            *reason = NULL;
        return false;
    }
    return true;
}

/* The LUN's serial: the cfgstring's serial=, else the unit serial LIO
 * generated for the backstore (stable across saveconfig/restoreconfig),
 * else a digest of the image path. */
static void pick_serial(struct tcmu_device *dev, const struct qlun_config *cfg,
                        char *out, size_t size)
{
    if (cfg->serial[0]) {
        snprintf(out, size, "%s", cfg->serial);
        return;
    }
    char *wwn = tcmu_cfgfs_dev_get_wwn(dev);
    if (wwn && wwn[0]) {
        /* A UUID; keep its hex digits so the serial has no dashes. */
        size_t n = 0;
        for (const char *p = wwn; *p && n + 1 < size && n < QLUN_SERIAL_MAX; p++)
            if (*p != '-')
                out[n++] = *p;
        out[n] = '\0';
        free(wwn);
        return;
    }
    free(wwn);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = cfg->path; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    snprintf(out, size, "%016" PRIx64, h);
}

/* Free everything; returns the image's close status (a clean close
 * flushes and, for qcow2, clears the dirty state). */
static int qlun_dev_free(struct qlun_dev *q)
{
    if (!q)
        return 0;
    stats_file_stop(q->stats);
    scsi_lun_free(q->lun);
    int ret = image_close(q->img);
    free(q);
    return ret;
}

static int qlun_open(struct tcmu_device *dev, bool reopen)
{
    char err[512];
    struct qlun_dev *q = calloc(1, sizeof(*q));
    int ret;

    if (!q)
        return -ENOMEM;
    ret = qlun_config_parse(tcmu_dev_get_cfgstring(dev), &q->cfg, err,
                            sizeof(err));
    if (ret < 0) {
        tcmu_dev_err(dev, "qlun: bad cfgstring: %s\n", err);
        goto fail;
    }

    uint32_t block_size = tcmu_dev_get_block_size(dev);
    uint64_t num_blocks = tcmu_dev_get_num_lbas(dev);
    if (block_size != 512 && block_size != 4096) {
        tcmu_dev_err(dev, "qlun: hw_block_size %u not supported (use 512 or "
                     "4096)\n", block_size);
        ret = -EINVAL;
        goto fail;
    }

    struct image_open_opts opts = {
        .path = q->cfg.path,
        .format = q->cfg.format,
        .read_only = q->cfg.read_only,
        .backing_root = q->cfg.backing_root[0] ? q->cfg.backing_root : NULL,
    };
    ret = image_open(&opts, &q->img, err, sizeof(err));
    if (ret < 0) {
        tcmu_dev_err(dev, "qlun: cannot open image: %s\n", err);
        goto fail;
    }
    uint64_t lun_bytes = num_blocks * block_size;
    if (num_blocks == 0 || q->img->size < lun_bytes) {
        tcmu_dev_err(dev, "qlun: %s is %" PRIu64 " bytes, smaller than the "
                     "LUN size %" PRIu64 " bytes; create the backstore with "
                     "size <= the image's virtual size\n",
                     q->cfg.path, q->img->size, lun_bytes);
        ret = -EINVAL;
        goto fail;
    }

    char serial[QLUN_SERIAL_MAX + 1];
    pick_serial(dev, &q->cfg, serial, sizeof(serial));
    struct scsi_lun_config lc = {
        .img = q->img,
        .block_size = block_size,
        .num_blocks = num_blocks,
        .max_xfer_blocks = tcmu_dev_get_max_xfer_len(dev),
        .serial = serial,
        .read_only = q->cfg.read_only,
        .write_cache = true,
        .soft_threshold = q->cfg.soft_threshold_percent
            ? lun_bytes / 100 * q->cfg.soft_threshold_percent
            : q->cfg.soft_threshold_bytes,
    };
    ret = scsi_lun_new(&lc, &q->lun);
    if (ret < 0) {
        tcmu_dev_err(dev, "qlun: cannot create LUN: %s\n", strerror(-ret));
        goto fail;
    }
    if (strcmp(q->cfg.stats_path, "off") != 0) {
        char path[PATH_MAX];
        if (q->cfg.stats_path[0])
            snprintf(path, sizeof(path), "%s", q->cfg.stats_path);
        else
            snprintf(path, sizeof(path), QLUN_STATS_DIR "/%s.json", serial);
        ret = stats_file_start(q->lun, path, &q->stats);
        /* Statistics are a convenience: the LUN is served without them. */
        if (ret < 0)
            tcmu_dev_warn(dev, "qlun: cannot publish statistics at %s: %s\n",
                          path, strerror(-ret));
    }
    tcmur_dev_set_private(dev, q);
    tcmu_dev_info(dev, "qlun: serving %s (%s%s), %" PRIu64 " x %u-byte "
                  "blocks, serial %s\n", q->cfg.path, q->img->info.format,
                  q->cfg.read_only ? ", read-only" : "", num_blocks,
                  block_size, serial);
    return 0;

fail:
    qlun_dev_free(q);
    return ret;
}

static void qlun_close(struct tcmu_device *dev)
{
    struct qlun_dev *q = tcmur_dev_get_private(dev);
    tcmur_dev_set_private(dev, NULL);
    if (!q)
        return;
    char path[sizeof(q->cfg.path)];
    strcpy(path, q->cfg.path);
    int ret = qlun_dev_free(q);
    if (ret < 0)
        tcmu_dev_err(dev, "qlun: closing %s failed: %s\n", path,
                     strerror(-ret));
}

static int qlun_reconfig(struct tcmu_device *dev, struct tcmulib_cfg_info *cfg)
{
    struct qlun_dev *q = tcmur_dev_get_private(dev);

    switch (cfg->type) {
    case TCMULIB_CFG_WRITE_CACHE:
        /* LIO's emulate_write_cache does not reach a passthrough handler's
         * MODE SENSE; accept it so restoreconfig succeeds, and say so. */
        tcmu_dev_info(dev, "qlun: ignoring emulate_write_cache=%d; the "
                      "initiator controls WCE\n", cfg->data.write_cache);
        return 0;
    case TCMULIB_CFG_DEV_SIZE:
        tcmu_dev_err(dev, "qlun: online resize of %s is not supported yet\n",
                     q->cfg.path);
        return -EOPNOTSUPP;
    case TCMULIB_CFG_DEV_CFGSTR:
    default:
        tcmu_dev_err(dev, "qlun: changing the cfgstring of a running LUN is "
                     "not supported; recreate the backstore\n");
        return -EOPNOTSUPP;
    }
}

static int qlun_handle_cmd(struct tcmu_device *dev, struct tcmur_cmd *tcmur_cmd)
{
    struct qlun_dev *q = tcmur_dev_get_private(dev);
    struct tcmulib_cmd *lib_cmd = tcmur_cmd->lib_cmd;
    int cdb_len = tcmu_cdb_get_length(lib_cmd->cdb);
    struct scsi_cmd cmd = {
        .cdb = lib_cmd->cdb,
        /* Opcodes of unknown length: only the opcode byte is meaningful,
         * and scsi/ will reject it. */
        .cdb_len = cdb_len > 0 ? (size_t)cdb_len : 1,
        .iov = lib_cmd->iovec,
        .iovcnt = (int)lib_cmd->iov_cnt,
    };

    switch (scsi_lun_exec(q->lun, &cmd)) {
    case SCSI_STATUS_GOOD:
        return TCMU_STS_OK;
    case SCSI_STATUS_CHECK_CONDITION:
        memcpy(lib_cmd->sense_buf, cmd.sense,
               cmd.sense_len < SENSE_BUFFERSIZE ? cmd.sense_len
                                                : SENSE_BUFFERSIZE);
        return TCMU_STS_PASSTHROUGH_ERR;
    case SCSI_STATUS_BUSY:
        return TCMU_STS_BUSY;
    case SCSI_STATUS_TASK_SET_FULL:
    default:
        return TCMU_STS_NO_RESOURCE;
    }
}

static struct tcmur_handler qlun_handler = {
    .name = "qlun: qcow2 and raw images, thin-provisioned",
    .subtype = QLUN_SUBTYPE,
    .cfg_desc = "qlun/<image path>[;format=qcow2|raw][;readonly=on|off]"
                "[;serial=S][;backing_root=DIR][;soft_threshold=SIZE|N%]"
                "[;stats=PATH|off]",
    .check_config = qlun_check_config,
    .open = qlun_open,
    .close = qlun_close,
    .reconfig = qlun_reconfig,
    .handle_cmd = qlun_handle_cmd,
    .nr_threads = QLUN_WORKER_THREADS,
};

__attribute__((visibility("default"))) int handler_init(void)
{
    return tcmur_register_handler(&qlun_handler);
}
