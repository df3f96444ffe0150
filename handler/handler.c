/* qlun — the tcmu-runner glue.
 *
 * A passthrough-only handler: every CDB goes to qlun_handle_cmd, which runs
 * on tcmu-runner's worker threads (nr_threads), hands the CDB to scsi/ and
 * returns the status.  Nothing here parses a CDB or knows an image format.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcmu-runner.h"
#include "libtcmu.h"
#include "tcmur_device.h"

#include "handler/backstore_name.h"
#include "handler/ctl.h"
#include "handler/device.h"

/* The command model.  tcmu-runner's cmdproc thread takes each command off
 * the ring and queues it to a per-LUN pool of worker threads (nr_threads),
 * which call qlun_handle_cmd; a command runs start to finish on one worker
 * and its status completes it.  So the commands in flight on a LUN are at
 * most the pool's size: it should be as deep as the queue the initiator
 * keeps on the LUN, or a command that waits (a range lock, a flush, an
 * allocation) holds back the ones queued behind it.  64 covers the deepest
 * queue we measure (fio at QD64); the session allows 128 (cmdsn_depth, as
 * targetcli-config sets it), shared by its LUNs.  QLUN_WORKER_THREADS in
 * tcmu-runner's environment overrides the default (0..512); 0 runs every
 * command on the cmdproc thread itself, one at a time (no hand-off
 * between threads, no concurrency: for measurements).  Measured in the rig (bench/guest/
 * workers.sh, 4k random I/O on raw and qcow2 LUNs): 64 workers gave the
 * most IOPS at queue depth 16; running inline (0) gave the least.
 *
 * What the pool costs (bench/guest/runner-prof.sh, 4k writes at QD16):
 * tcmu-runner signals its queue's condition variable for each command,
 * and with most of 64 workers idle each command wakes one, which sleeps
 * again after it: per 1000 writes about 3900 futex calls and 2600
 * context switches against about 550 and 900 with one worker, which is
 * what user:qcow (one worker) makes.  The pool is tcmu-runner's, so the
 * handler's only lever is its size; we keep 64 for the concurrency above
 * and QLUN_WORKER_THREADS=1 gives user:qcow's cost for fast I/O, one
 * command at a time.
 *
 * Why the runner's pool and not a queue of our own (nr_threads = 0, and
 * completing from our threads): tcmu-runner exports no way to complete a
 * passthrough command from another thread but its work queue's; doing it
 * ourselves would mean taking its private device lock and command list,
 * whose layout is not an interface, and its close, reopen and timeout
 * code waits on the in-flight count that only its queue keeps. */
#define QLUN_WORKER_THREADS_DEFAULT 64

/* The UIO device's name, which the kernel sets to
 * "tcm-user/<hba>/<backstore>/<cfgstring>" (handler/backstore_name.h). */
static int read_uio_name(struct tcmu_device *dev, char *line, size_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/uio/%s/name",
             tcmu_dev_get_uio_name(dev));
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    bool ok = fgets(line, (int)size, f) != NULL;
    fclose(f);
    return ok ? 0 : -EIO;
}

/* d->persist: store a changed setting of the LUN in LIO (the backstore's
 * attrib/dev_config or attrib/dev_size), where `targetcli saveconfig` and
 * a restarted tcmu-runner find it.  The kernel hands it to qlun_reconfig
 * before taking it. */
static int persist_attr(void *opaque, const char *name, const char *value,
                        char *err, size_t errlen)
{
    struct tcmu_device *dev = opaque;
    char dir[PATH_MAX] = "?", attr[PATH_MAX + 32];
    char line[512];
    int ret = read_uio_name(dev, line, sizeof(line));
    if (ret == 0)
        ret = backstore_dir_from_uio(line, dir, sizeof(dir));
    if (ret == 0) {
        snprintf(attr, sizeof(attr), "%s/attrib/%s", dir, name);
        int fd = open(attr, O_WRONLY | O_CLOEXEC);
        ret = fd < 0 ? -errno : 0;
        if (fd >= 0 && write(fd, value, strlen(value)) < 0)
            ret = -errno;
        if (fd >= 0)
            close(fd);
    }
    if (ret < 0)
        snprintf(err, errlen, "done, but storing %s=%s in LIO (%s/attrib) "
                 "failed: %s; a restarted tcmu-runner would use the old "
                 "value: set the backstore's %s to that", name, value, dir,
                 strerror(-ret), name);
    return ret;
}

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

/* The backstore's name in LIO; "" if unreadable: the LUN is then found
 * by its serial only. */
static void backstore_name(struct tcmu_device *dev, char *out, size_t size)
{
    char line[512];
    out[0] = '\0';
    if (read_uio_name(dev, line, sizeof(line)) == 0)
        backstore_name_from_uio(line, out, size);
}

static int qlun_open(struct tcmu_device *dev, bool reopen)
{
    char err[1024], name[128];
    backstore_name(dev, name, sizeof(name));
    struct qlun_dev_params p = {
        .cfgstring = tcmu_dev_get_cfgstring(dev),
        .block_size = tcmu_dev_get_block_size(dev),
        .num_blocks = tcmu_dev_get_num_lbas(dev),
        .max_xfer_blocks = tcmu_dev_get_max_xfer_len(dev),
        .name = name,
    };
    struct qlun_dev *d;
    int ret = qlun_dev_open(&p, &d, err, sizeof(err));
    if (ret < 0) {
        tcmu_dev_err(dev, "qlun: %s\n", err);
        return ret;
    }
    if (d->warning[0])
        tcmu_dev_warn(dev, "qlun: %s\n", d->warning);
    d->persist = persist_attr;
    d->persist_opaque = dev;
    tcmur_dev_set_private(dev, d);
    tcmu_dev_info(dev, "qlun: serving %s (%s%s), %" PRIu64 " x %u-byte "
                  "blocks, serial %s, statistics in %s\n", d->cfg.path,
                  d->img->info.format, d->cfg.read_only ? ", read-only" : "",
                  p.num_blocks, p.block_size, d->serial,
                  d->stats ? d->stats_path : "(none)");
    return 0;
}

static void qlun_close(struct tcmu_device *dev)
{
    struct qlun_dev *q = tcmur_dev_get_private(dev);
    tcmur_dev_set_private(dev, NULL);
    if (!q)
        return;
    char path[sizeof(q->cfg.path)];
    strcpy(path, q->cfg.path);
    int ret = qlun_dev_close(q);
    if (ret < 0)
        tcmu_dev_err(dev, "qlun: closing %s failed: %s\n", path,
                     strerror(-ret));
}

/* A new dev_size written into LIO's configfs (attrib/dev_size of the
 * backstore; targetcli: set attribute dev_size=BYTES) while the LUN is
 * enabled: the kernel sends it to tcmu-runner, which calls this and, if it
 * returns 0, records the new size and raises UNIT ATTENTION 2A/09 itself
 * (so we do not); a non-zero return fails the configfs write, and the
 * kernel keeps the old dev_size.  Shrinking this way is refused: there is
 * no way to say "force" through a size attribute. */
static int reconfig_size(struct tcmu_device *dev, struct qlun_dev *q,
                         uint64_t size)
{
    char err[512];
    int ret = qlun_dev_reconfig_size(q, size, err, sizeof(err));
    if (ret < 0) {
        tcmu_dev_err(dev, "qlun: resize of %s to %" PRIu64 " bytes refused: "
                     "%s\n", q->cfg.path, size, err);
        return ret;
    }
    tcmu_dev_info(dev, "qlun: %s resized to %" PRIu64 " bytes%s%s\n",
                  q->cfg.path, size, err[0] ? ": " : "", err);
    return 0;
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
        return reconfig_size(dev, q, cfg->data.dev_size);
    case TCMULIB_CFG_DEV_CFGSTR:
        /* What persist_cfgstring stores after a snapshot: it describes
         * the LUN as it already is. */
        if (strcmp(cfg->data.dev_cfgstring, q->cfgstring) == 0)
            return 0;
        /* fall through */
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
                "[;cache=writeback|writethrough|none|directsync]"
                "[;serial=S][;backing_root=DIR][;soft_threshold=SIZE|N%]"
                "[;stats=PATH|off][;l2_cache_size=SIZE]"
                "[;refcount_cache_size=SIZE]",
    .check_config = qlun_check_config,
    .open = qlun_open,
    .close = qlun_close,
    .reconfig = qlun_reconfig,
    .handle_cmd = qlun_handle_cmd,
    .nr_threads = QLUN_WORKER_THREADS_DEFAULT,
};

static int worker_threads(void)
{
    const char *s = getenv("QLUN_WORKER_THREADS");
    if (!s || !*s)
        return QLUN_WORKER_THREADS_DEFAULT;
    char *end;
    long n = strtol(s, &end, 10);
    if (*end || n < 0 || n > 512) {
        tcmu_err("qlun: QLUN_WORKER_THREADS=%s is not a number in 0..512; "
                 "using %d\n", s, QLUN_WORKER_THREADS_DEFAULT);
        return QLUN_WORKER_THREADS_DEFAULT;
    }
    return (int)n;
}

/* The management socket: QLUN_CTL_SOCKET in tcmu-runner's environment
 * moves it.  LUNs are served without it if it cannot be made. */
static void start_management_socket(void)
{
    const char *path = getenv("QLUN_CTL_SOCKET");
    char err[512];
    if (!path || !*path)
        path = QLUN_CTL_SOCKET_DEFAULT;
    if (ctl_server_start(path, err, sizeof(err)) < 0)
        tcmu_err("qlun: no management socket: %s\n", err);
    else
        tcmu_info("qlun: management socket at %s\n", path);
}

__attribute__((visibility("default"))) int handler_init(void)
{
    qlun_handler.nr_threads = worker_threads();
    start_management_socket();
    return tcmur_register_handler(&qlun_handler);
}
