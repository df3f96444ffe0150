/* qlun — one served LUN: cfgstring → image → SCSI LUN → statistics.
 *
 * Everything the handler does at open and close that does not need
 * tcmu-runner, so that it can be tested without a kernel.
 */
#ifndef QLUN_HANDLER_DEVICE_H
#define QLUN_HANDLER_DEVICE_H

#include "block/image.h"
#include "handler/config.h"
#include "handler/stats_file.h"
#include "scsi/scsi.h"

/* What the transport (LIO through tcmu-runner) says about the LUN. */
struct qlun_dev_params {
    const char *cfgstring;     /* "qlun/<path>[;options]" */
    uint32_t block_size;       /* hw_block_size */
    uint64_t num_blocks;       /* backstore size / block_size */
    uint32_t max_xfer_blocks;  /* hw_max_sectors */
    /* The backstore's name in LIO (management finds a LUN by it or by
     * its serial); NULL or "" = none. */
    const char *name;
};

struct qlun_dev {
    struct qlun_config cfg;
    struct image *img;
    struct scsi_lun *lun;
    struct stats_file *stats;
    char serial[QLUN_SERIAL_MAX + 1];
    char name[128];            /* the backstore's name; "" = unknown */
    char *cfgstring;           /* as given at open (for management) */
    bool registered;           /* in handler/registry.h's list */
    char stats_path[PATH_MAX];
    /* Non-fatal trouble at open (e.g. statistics not published). */
    char warning[PATH_MAX + 128];
};

/* Open a LUN.  Returns 0, or a negative errno after writing one line
 * naming the cause into err. */
int qlun_dev_open(const struct qlun_dev_params *p, struct qlun_dev **out,
                  char *err, size_t errlen);

/* Operations the management socket (handler/ctl*.c) asks for.  Each
 * returns 0, or a negative errno after writing one line naming the cause
 * into err. */
int qlun_dev_resize(struct qlun_dev *d, uint64_t new_size, bool force,
                    char *err, size_t errlen);
int qlun_dev_snapshot_create(struct qlun_dev *d, const char *overlay_path,
                             uint32_t cluster_size /* 0 = the top's */,
                             char *err, size_t errlen);
int qlun_dev_snapshot_internal(struct qlun_dev *d,
                               bool create /* false = delete */,
                               const char *name, char *err, size_t errlen);
struct qlun_snapshot_info {
    char id[32];
    char name[256];
    uint64_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
};
int qlun_dev_snapshot_list(struct qlun_dev *d,
                           struct qlun_snapshot_info **out /* malloc'd */,
                           size_t *count, char *err, size_t errlen);

/* Close and free; returns the image's close status (a clean close flushes
 * and, for qcow2, clears the dirty state).  NULL is a no-op. */
int qlun_dev_close(struct qlun_dev *d);

#endif
