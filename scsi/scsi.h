/* qlun — transport-independent SCSI block device (SBC-4 over SPC-5).
 *
 * CDB and data buffers in; status, sense and data out.  Knows nothing of
 * tcmu-runner or of image formats: it talks to a struct image (block/image.h)
 * and nothing else.  Unit tests drive it directly.
 *
 * A struct scsi_lun is safe to use from many threads at once: commands may
 * execute concurrently (the image serialises what it must).  What they all
 * read (capacity, image) changes only under the drain (below).
 */
#ifndef QLUN_SCSI_SCSI_H
#define QLUN_SCSI_SCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/image.h"

/* SAM status codes returned by scsi_lun_exec(). */
enum scsi_status {
    SCSI_STATUS_GOOD = 0x00,
    SCSI_STATUS_CHECK_CONDITION = 0x02,
    SCSI_STATUS_BUSY = 0x08,
    SCSI_STATUS_TASK_SET_FULL = 0x28,
};

/* Fixed-format sense data is 18 bytes; transports give at least 96. */
#define SCSI_SENSE_MAX 96

/* One command.  The caller fills cdb, cdb_len and the data buffer; the
 * LUN fills sense (on CHECK CONDITION) and reads or writes the buffer.
 * The buffer is the data-out (written by the initiator) or data-in (to be
 * returned) area, as the opcode implies; its length is the transport's
 * expected transfer length. */
struct scsi_cmd {
    const uint8_t *cdb;
    size_t cdb_len;
    const struct iovec *iov;
    int iovcnt;
    uint8_t sense[SCSI_SENSE_MAX];
    size_t sense_len;      /* bytes of sense valid after CHECK CONDITION */
    size_t data_in_len;    /* bytes of data-in produced; the rest of the
                            * buffer is zeroed (never stale) */
};

/* What the handler knows about a LUN when it creates it. */
struct scsi_lun_config {
    struct image *img;        /* borrowed; must outlive the LUN */
    uint32_t block_size;      /* logical block size: 512 or 4096 */
    uint64_t num_blocks;      /* LUN capacity; num_blocks*block_size <= image size */
    uint32_t max_xfer_blocks; /* largest READ/WRITE accepted (VPD B0) */
    const char *serial;       /* unit serial number (VPD 80), ASCII, <= 64 */
    bool read_only;           /* every write fails DATA PROTECT 27/00 */
    bool write_cache;         /* WCE in the caching mode page */
    /* Thin-provisioning soft threshold: when the image's host usage
     * reaches this many bytes, the next command gets UNIT ATTENTION
     * 38/07, once.  0 = none. */
    uint64_t soft_threshold;
};

struct scsi_lun;

/* Create a LUN over an open image.  Returns 0 or a negative errno. */
int scsi_lun_new(const struct scsi_lun_config *cfg, struct scsi_lun **out);
void scsi_lun_free(struct scsi_lun *lun);

/* Execute one command to completion; returns an enum scsi_status. */
int scsi_lun_exec(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* The drain.  scsi_lun_drain_begin waits until every command already in
 * scsi_lun_exec has returned and holds off new ones (they wait in
 * scsi_lun_exec, they are not failed) until scsi_lun_drain_end.  So no
 * command runs between begin and end: the caller may change what commands
 * read (the capacity, the image) without any other lock.  Not recursive,
 * and never call scsi_lun_exec on the same LUN from the draining thread
 * in between (it would wait for itself). */
void scsi_lun_drain_begin(struct scsi_lun *lun);
void scsi_lun_drain_end(struct scsi_lun *lun);

/* Under the drain: the LUN now has new_num_blocks blocks (the image must
 * already hold them: new_num_blocks * block_size <= image size).  READ
 * CAPACITY, range checks, GET LBA STATUS and MODE SENSE answer the new
 * size from now on, and if it changed the next command that reports unit
 * attentions gets UNIT ATTENTION, CAPACITY DATA HAS CHANGED (2A/09), once.
 * Once per LUN, not per I_T nexus: a TCMU handler does not know which
 * initiator sent a command (README, "Online resize"). */
void scsi_lun_resize(struct scsi_lun *lun, uint64_t new_num_blocks);
/* The same without the unit attention: for a transport that reports the
 * capacity change itself (tcmu-runner does after a dev_size reconfig). */
void scsi_lun_set_capacity(struct scsi_lun *lun, uint64_t new_num_blocks);

/* Under the drain: raise the soft-threshold unit attention once host use
 * reaches bytes (0: never) from now on; one already raised stays so. */
void scsi_lun_set_soft_threshold(struct scsi_lun *lun, uint64_t bytes);

/* Under the drain: serve img from now on (img borrowed, as in
 * scsi_lun_config; the caller closes the old one after drain_end).  It
 * must hold at least num_blocks blocks. */
void scsi_lun_set_image(struct scsi_lun *lun, struct image *img);

/* The LUN's capacity in blocks (a snapshot).  Takes the drain shared:
 * never from the draining thread between begin and end. */
uint64_t scsi_lun_num_blocks(struct scsi_lun *lun);

/* Per-LUN statistics, counted since the LUN was created. */
struct scsi_lun_stats {
    uint64_t commands[256];   /* commands received, by opcode */
    uint64_t errors;          /* commands that ended in CHECK CONDITION */
    uint64_t bytes_read;      /* data returned by READ */
    uint64_t bytes_written;   /* data written to the image (WRITE, WRITE
                               * SAME with a non-zero pattern, ...) */
    uint64_t bytes_zeroed;    /* WRITE SAME of zeros: made zero without
                               * writing data */
    uint64_t bytes_unmapped;  /* UNMAP: released without writing data */
};
void scsi_lun_get_stats(struct scsi_lun *lun, struct scsi_lun_stats *out);
/* The statistics as one JSON object (commands by name).  Returns the
 * length written (truncated to size - 1), as snprintf does. */
int scsi_lun_stats_json(struct scsi_lun *lun, char *buf, size_t size);

/* A LUN as management sees it (scsi/info.c). */
struct scsi_lun_info {
    uint32_t block_size;
    uint64_t num_blocks;
    bool read_only;
    uint64_t soft_threshold;      /* bytes; 0 = none */
    bool soft_threshold_reached;  /* the unit attention was raised */
};
void scsi_lun_get_info(struct scsi_lun *lun, struct scsi_lun_info *out);

#endif
