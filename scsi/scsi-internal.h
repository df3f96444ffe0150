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

struct scsi_lun {
    struct image *img;
    uint32_t block_size;
    unsigned block_shift;      /* log2(block_size) */
    uint64_t num_blocks;
    uint32_t max_xfer_blocks;
    bool read_only;
    atomic_bool write_cache;   /* WCE; MODE SELECT may change it */
    char serial[65];
    uint64_t naa_id;           /* NAA locally assigned, from the serial */
};

/* A command handler: decode cmd->cdb, act on lun->img, return a status. */
typedef int (*scsi_exec_fn)(struct scsi_lun *lun, struct scsi_cmd *cmd);

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
int spc_mode_sense(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* --- sbc.c: block commands --- */
int sbc_read_capacity10(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_service_action_in16(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_read(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_write(struct scsi_lun *lun, struct scsi_cmd *cmd);
int sbc_synchronize_cache(struct scsi_lun *lun, struct scsi_cmd *cmd);

#endif
