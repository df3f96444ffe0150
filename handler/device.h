/* qlun — one served LUN: cfgstring → image → SCSI LUN → statistics.
 *
 * Everything the handler does at open and close that does not need
 * tcmu-runner, so that it can be tested without a kernel.
 */
#ifndef QLUN_HANDLER_DEVICE_H
#define QLUN_HANDLER_DEVICE_H

#include <pthread.h>

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

/* The LUN's filter slots, from the initiator down (handler/lun_graph.c). */
enum qlun_filter_slot {
    QLUN_FILTER_THROTTLE,
    QLUN_FILTER_COPY_ON_READ,
    QLUN_FILTER_JOB,
    QLUN_FILTER_SLOTS
};

struct qlun_dev {
    struct qlun_config cfg;       /* as opened; cfg.path is the first top */
    /* The top image (a format node): changes with a snapshot or a pivot.
     * The LUN serves it under its filters (qlun_dev_served). */
    struct image *img;
    /* One filter node per slot or NULL; each one's `file` is the next
     * one down, the last one's img.  Changed only under the drain. */
    struct image *filters[QLUN_FILTER_SLOTS];
    /* The cfgstring that reopens this LUN as it is now (it changes with
     * an external snapshot). */
    char cfgstring[QLUN_CFGSTRING_MAX + 1];
    /* Store a changed setting where tcmu-runner finds it after a restart
     * (the handler: the backstore's configfs attribute attr, "dev_config"
     * or "dev_size").  The kernel hands it back to the handler's reconfig
     * before the write returns: call it without control_lock.  NULL in
     * tests. */
    int (*persist)(void *opaque, const char *attr, const char *value,
                   char *err, size_t errlen);
    void *persist_opaque;
    /* One change at a time (resize, snapshots): each looks at the LUN
     * before it drains it, and what it saw must still hold then. */
    pthread_mutex_t control_lock;
    uint64_t last_drain_ns;       /* how long the last snapshot drained */
    struct scsi_lun *lun;
    struct stats_file *stats;
    char serial[QLUN_SERIAL_MAX + 1];
    char name[128];            /* the backstore's name; "" = unknown */
    bool registered;           /* in handler/registry.h's list */
    char stats_path[PATH_MAX];
    /* Non-fatal trouble at open (e.g. statistics not published). */
    char warning[PATH_MAX + 128];
};

/* Open a LUN.  Returns 0, or a negative errno after writing one line
 * naming the cause into err. */
int qlun_dev_open(const struct qlun_dev_params *p, struct qlun_dev **out,
                  char *err, size_t errlen);

/* Online resize to new_size bytes (a multiple of the block size): drains
 * the LUN (commands in flight finish, new ones wait), resizes the image
 * where the LUN would pass its end (image_resize: shrinking needs force
 * and never drops data the format knows of), then the LUN, which reports
 * UNIT ATTENTION 2A/09 once.  On failure nothing changed and err names
 * the cause; on success err may hold a note (what a forced shrink did),
 * else it is empty.  May be called from any thread but a command's. */
int qlun_dev_resize(struct qlun_dev *d, uint64_t new_size, bool force,
                    char *err, size_t errlen);

/* The same for a size set through LIO (configfs attrib/dev_size, which
 * reaches tcmu-runner as a reconfig): never a shrink, and without the
 * unit attention, which tcmu-runner raises itself once this returns 0. */
int qlun_dev_reconfig_size(struct qlun_dev *d, uint64_t new_size,
                           char *err, size_t errlen);

/* The LUN's graph (handler/lun_graph.c).  All but qlun_dev_served only
 * under the LUN's drain (scsi_lun_drain_begin), which they need because
 * they move edges that commands follow. */
/* What the LUN serves: its outermost filter, else the top. */
struct image *qlun_dev_served(const struct qlun_dev *d);
/* Put a new filter node of drv in the empty slot, between the filter (or
 * the top) below and the one above; *node (optional) gets it, to be set
 * up before the drain ends.  The filter's open may fail: err says why. */
int qlun_dev_filter_insert(struct qlun_dev *d, enum qlun_filter_slot slot,
                           const struct block_driver *drv,
                           struct image **node, char *err, size_t errlen);
/* Take the slot's filter out and close it (not what is below it). */
void qlun_dev_filter_remove(struct qlun_dev *d, enum qlun_filter_slot slot);
/* The LUN's top is now top (the filters stay above it); returns the old
 * top, which the caller closes after the drain. */
struct image *qlun_dev_switch_top(struct qlun_dev *d, struct image *top);
/* The top's size changed (image_resize): the filters take it. */
void qlun_dev_top_resized(struct qlun_dev *d);

/* The LUN's throttle (handler/lun_throttle.c).  At open: put the
 * throttle filter in its slot when the cfgstring sets a limit or a group
 * (a group without limits is joined as it is). */
int qlun_dev_throttle_open(struct qlun_dev *d, char *err, size_t errlen);
/* Live: the LUN's throttle is now group's (NULL or "": its own), with the
 * limits l (NULL: the group's as they are; all 0 = none).  Without limits
 * or a group the filter is taken out; without a filter one is put in.
 * The new cfgstring is then stored through d->persist: *persisted says
 * whether it was, and when it was not (too long for LIO, or the write
 * failed) err says why although the call succeeded.  On failure nothing
 * changed and err says why. */
int qlun_dev_set_throttle(struct qlun_dev *d, const struct throttle_limits *l,
                          const char *group, bool *persisted, char *err,
                          size_t errlen);

/* Close and free; returns the image's close status (a clean close flushes
 * and, for qcow2, clears the dirty state).  NULL is a no-op. */
int qlun_dev_close(struct qlun_dev *d);

/* Where the LUN's backing files (and snapshot overlays) may live:
 * backing_root=, else the directory of the image the cfgstring named
 * (which stays the root after snapshots move the top elsewhere). */
void qlun_dev_backing_root(const struct qlun_dev *d, char *out, size_t len);
/* The host use at which a LUN of lun_bytes raises the soft-threshold unit
 * attention (soft_threshold=: bytes, or a percentage of the LUN's size,
 * which follows a resize); 0 = none. */
uint64_t qlun_dev_soft_threshold(const struct qlun_dev *d, uint64_t lun_bytes);
/* Open an image with the LUN's options (cache mode, caches, root). */
int qlun_dev_open_image(const struct qlun_dev *d, const char *path,
                        const char *format, struct image **out, char *err,
                        size_t errlen);

/* Live external snapshot: make a new qcow2 overlay at overlay_path over
 * the current top (image_create_overlay's rules), drain the LUN, flush,
 * switch the LUN to the overlay, close the old top (it stays the
 * overlay's read-only backing file), and persist the new cfgstring.
 * cluster_size 0 = the top's.  On failure before the switch nothing
 * changed and no file is left. */
int qlun_dev_snapshot_create(struct qlun_dev *d, const char *overlay_path,
                             uint32_t cluster_size, char *err, size_t errlen);
/* Internal snapshot of the top image, made or deleted with the LUN
 * drained. */
int qlun_dev_snapshot_internal(struct qlun_dev *d, bool create,
                               const char *name, char *err, size_t errlen);
/* The top image's internal snapshots (image_snapshot_list). */
int qlun_dev_snapshot_list(struct qlun_dev *d,
                           struct image_snapshot_info **out, size_t *count,
                           char *err, size_t errlen);

#endif
