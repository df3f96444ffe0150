/* qlun — SCSI layer internals shared by lun.c, spc.c and sbc.c. */
#ifndef QLUN_SCSI_INTERNAL_H
#define QLUN_SCSI_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "scsi.h"

/* Sense keys (SPC-5 table 49). */
enum sense_key {
    SK_NO_SENSE = 0x0,
    SK_NOT_READY = 0x2,
    SK_MEDIUM_ERROR = 0x3,
    SK_HARDWARE_ERROR = 0x4,
    SK_ILLEGAL_REQUEST = 0x5,
    SK_UNIT_ATTENTION = 0x6,
    SK_DATA_PROTECT = 0x7,
    SK_ABORTED_COMMAND = 0xb,
    SK_MISCOMPARE = 0xe,
};

/* Additional sense code and qualifier, as ASC << 8 | ASCQ. */
enum sense_asc {
    ASC_NO_ADDITIONAL_SENSE = 0x0000,
    ASC_WRITE_ERROR = 0x0c00,
    ASC_UNRECOVERED_READ_ERROR = 0x1100,
    ASC_PARAMETER_LIST_LENGTH_ERROR = 0x1a00,
    ASC_MISCOMPARE_DURING_VERIFY = 0x1d00,
    ASC_INVALID_COMMAND_OPCODE = 0x2000,
    ASC_LBA_OUT_OF_RANGE = 0x2100,
    ASC_INVALID_FIELD_IN_CDB = 0x2400,
    ASC_INVALID_FIELD_IN_PARAM_LIST = 0x2600,
    ASC_WRITE_PROTECTED = 0x2700,
    ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT = 0x2707,
    ASC_MODE_PARAMETERS_CHANGED = 0x2a01,
    ASC_CAPACITY_DATA_CHANGED = 0x2a09,
    ASC_SOFT_THRESHOLD_REACHED = 0x3807,
    ASC_SAVING_PARAMS_NOT_SUPPORTED = 0x3900,
    ASC_INTERNAL_TARGET_FAILURE = 0x4400,
};

/* Service actions. */
enum {
    SA_READ_CAPACITY_16 = 0x10,          /* SERVICE ACTION IN (16) */
    SA_GET_LBA_STATUS = 0x12,            /* SERVICE ACTION IN (16) */
    SA_REPORT_SUPPORTED_OPCODES = 0x0c,  /* MAINTENANCE IN */
};

/* Limits we advertise in the Block Limits VPD page and enforce. */
/* 1 Mi blocks per UNMAP (512 MiB of 512-byte blocks): bounds how long one
 * UNMAP holds the write lock, and libiscsi's suite takes more for insane. */
#define SCSI_MAX_UNMAP_BLOCKS       0x100000u  /* per UNMAP descriptor sum */
#define SCSI_MAX_UNMAP_DESCRIPTORS  256u
#define SCSI_MAX_WRITE_SAME_BLOCKS  0x400000u
#define SCSI_MAX_COMPARE_AND_WRITE  128u       /* blocks */

/* Room for the commands of the opcode table (opcodes.c asserts it). */
#define SCSI_MAX_COMMANDS 64

struct scsi_lun {
    struct image *img;
    uint32_t block_size;
    unsigned block_shift;      /* log2(block_size) */
    uint64_t num_blocks;
    uint32_t max_xfer_blocks;
    uint32_t unmap_granularity; /* blocks: the image's allocation unit */
    bool read_only;
    bool thin;                 /* LBPME: UNMAP and WRITE SAME unmap offered */
    atomic_bool write_cache;   /* WCE; MODE SELECT may change it */
    char serial[65];
    uint64_t naa_id;           /* NAA locally assigned, from the serial */

    /* COMPARE AND WRITE must be atomic against writes to the same blocks:
     * writers hold this shared, COMPARE AND WRITE holds it exclusive.
     * First in the lock order across layers (docs/locking.md). */
    pthread_rwlock_t write_lock;

    /* Drain: every command holds it shared from start to end;
     * scsi_lun_drain_begin holds it exclusive, so that nothing runs while
     * the capacity or the image changes.  num_blocks and img change only
     * under it exclusive, which is why commands read them without atomics. */
    pthread_rwlock_t drain_lock;
    bool draining;             /* between drain_begin and drain_end */
    /* Commands in scsi_lun_exec now, those waiting for a drain to end
     * included: what a block job yields to (scsi_lun_in_flight). */
    atomic_uint in_flight;

    /* Pending unit attentions, a set of LUN_UA_* bits: each is reported
     * once, by the next command that reports unit attentions, so that one
     * condition never hides another. */
    atomic_uint pending_ua;
    uint64_t soft_threshold;   /* bytes of host usage; 0 = none */
    atomic_bool threshold_reported;
    atomic_uint writes_since_check;

    struct {
        /* Each command is counted once, in one of these: */
        /* ... if it reached its handler, by implemented command (service
         * actions apart): index in the opcode table; */
        atomic_uint_least64_t by_command[SCSI_MAX_COMMANDS];
        /* ... else by opcode (unknown, a service action we lack, a bad
         * CDB, a unit attention reported instead). */
        atomic_uint_least64_t unrouted[256];
        atomic_uint_least64_t errors;
        atomic_uint_least64_t bytes_read;
        atomic_uint_least64_t bytes_written;
        atomic_uint_least64_t bytes_zeroed;
        atomic_uint_least64_t bytes_unmapped;
    } stats;
};

/* Writes are refused with DATA PROTECT, WRITE PROTECTED: the LUN was
 * opened read-only, or its image has since been write-protected (found
 * corrupt).  MODE SENSE reports it as WP. */
static inline bool lun_write_protected(const struct scsi_lun *lun)
{
    return lun->read_only || (image_state(lun->img) & IMAGE_STATE_CORRUPT);
}

/* A command handler: decode cmd->cdb, act on lun->img, return a status. */
typedef int (*scsi_exec_fn)(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- opcodes.c --- */
struct scsi_opcode {
    uint8_t opcode;
    uint16_t sa;               /* service action, where the opcode has them */
    uint8_t cdb_len;
    scsi_exec_fn exec;
    const char *name;
    uint8_t usage[15];         /* CDB usage data after the opcode byte */
};
bool scsi_opcode_has_sa(uint8_t opcode);
/* The table itself: entries 0 .. scsi_opcode_count()-1. */
size_t scsi_opcode_count(void);
const struct scsi_opcode *scsi_opcode_at(size_t i);
size_t scsi_opcode_index(const struct scsi_opcode *op);
/* The command for opcode (and service action); NULL if unsupported. */
const struct scsi_opcode *scsi_opcode_find(uint8_t opcode, uint16_t sa);
bool scsi_opcode_known(uint8_t opcode);
int spc_report_supported_opcodes(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- lun.c --- */
/* Unit attention conditions a LUN can have pending (lun->pending_ua).
 * Reported lowest bit first. */
enum lun_ua {
    LUN_UA_CAPACITY_CHANGED = 1u << 0, /* 2A/09, after a resize */
    LUN_UA_SOFT_THRESHOLD = 1u << 1,   /* 38/07, thin provisioning */
};
/* Make ua pending (once: raising it twice reports it once). */
void scsi_lun_raise_ua(struct scsi_lun *lun, enum lun_ua ua);
/* Count bytes in the statistics (kind: one of the stats fields). */
#define scsi_stat_add(lun, field, n) \
    atomic_fetch_add_explicit(&(lun)->stats.field, (n), memory_order_relaxed)
/* After data was written: raise the soft-threshold unit attention once
 * host usage crosses it. */
void scsi_check_soft_threshold(struct scsi_lun *lun);

/* --- change.c: every command that changes the medium --- */
enum lun_change_lock {
    LUN_CHANGE_SHARED,  /* ordinary writes: run side by side */
    LUN_CHANGE_ATOMIC,  /* read-modify-write: excludes every other change */
};
enum lun_change_kind { LUN_CHANGE_WRITE, LUN_CHANGE_ZERO, LUN_CHANGE_UNMAP };
/* Take the write lock before the first image operation of a change. */
void lun_change_begin(struct scsi_lun *lun, enum lun_change_lock how);
/* After the change's image operations: ret is their result (0 or -errno).
 * Flushes when ret == 0 and fua or the write cache is disabled, drops the
 * lock, counts bytes (those that reached the image, even on a later error)
 * as kind, checks the soft threshold.  Returns ret, or the flush's error.
 * Image operations inside a change never pass IMAGE_FUA: this is where a
 * change becomes durable. */
int lun_change_end(struct scsi_lun *lun, int ret, enum lun_change_kind kind,
                   uint64_t bytes, bool fua);

/* --- sense.c --- */
/* Fill fixed-format sense and return CHECK CONDITION. */
int scsi_fail(struct scsi_cmd *cmd, enum sense_key key, enum sense_asc asc);
/* The same, with the INFORMATION field set (VALID bit), e.g. the failing
 * LBA of a MEDIUM ERROR or the offset of a miscompare. */
int scsi_fail_info(struct scsi_cmd *cmd, enum sense_key key,
                   enum sense_asc asc, uint64_t info);
/* INVALID FIELD IN CDB with the sense-key-specific field pointer set to
 * byte (and bit, or -1 for the whole byte). */
int scsi_fail_cdb_field(struct scsi_cmd *cmd, unsigned byte, int bit);
/* INVALID FIELD IN PARAMETER LIST, pointer as above (C/D = 0). */
int scsi_fail_param_field(struct scsi_cmd *cmd, unsigned byte, int bit);

/* --- scsi_errno.c --- */
/* Map a negative errno from the image layer to status + sense: the one
 * table of errno to SCSI in qlun.  lba is the first block of the request
 * (reported in INFORMATION for medium errors). */
int scsi_fail_errno(struct scsi_cmd *cmd, int err, uint64_t lba, bool is_write);

/* --- data-in --- */
/* Copy a response into the data-in buffer, truncated to the allocation
 * length and the buffer size; sets cmd->data_in_len.  Returns GOOD. */
int scsi_data_in(struct scsi_cmd *cmd, const void *buf, size_t len,
                 size_t alloc_len);

/* --- spc.c: primary commands --- */
int spc_inquiry(struct scsi_lun *lun, struct scsi_cmd *cmd);
int spc_test_unit_ready(struct scsi_lun *lun, struct scsi_cmd *cmd);
int spc_request_sense(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- mode.c: MODE SENSE and MODE SELECT --- */
int spc_mode_sense(struct scsi_lun *lun, struct scsi_cmd *cmd);
int spc_mode_select(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- sbc.c: block commands --- */
/* Is [lba, lba+n) inside the LUN?  (Overflow-safe.) */
bool sbc_range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n);
/* Fetch the data-out buffer's first len bytes into a new heap buffer
 * (caller frees); NULL if the buffer is shorter or memory is short. */
uint8_t *sbc_data_out(struct scsi_cmd *cmd, size_t len);
/* Does a write CDB's byte 1 ask for FUA? */
bool sbc_fua(uint8_t cdb_flags);
int sbc_read_capacity10(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_read_capacity16(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_read(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_write(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_synchronize_cache(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_pre_fetch(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_start_stop_unit(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- thin.c: logical block provisioning --- */
int sbc_write_same(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_unmap(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_get_lba_status(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- verify.c: commands that read to compare or combine --- */
int sbc_verify(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_write_and_verify(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_compare_and_write(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_orwrite(struct scsi_lun *lun, struct scsi_cmd *cmd);

#endif
