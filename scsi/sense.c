/* qlun — building sense data.
 *
 * Fixed format (response code 70h, 18 bytes): every initiator understands
 * it, and our LBAs fit its 32-bit INFORMATION field only up to 2 TiB of
 * 512-byte blocks — so past that we switch to descriptor format (72h),
 * which carries a 64-bit INFORMATION descriptor. */
#include <string.h>

#include "common/util.h"
#include "scsi-internal.h"

static int fill_sense(struct scsi_cmd *cmd, enum sense_key key,
                      enum sense_asc asc, bool info_valid, uint64_t info,
                      const uint8_t sks[3])
{
    uint8_t *s = cmd->sense;
    memset(s, 0, SCSI_SENSE_MAX);
    if (info_valid && info > UINT32_MAX) {
        s[0] = 0x72;                  /* current, descriptor format */
        s[1] = key;
        s[2] = (uint8_t)(asc >> 8);
        s[3] = (uint8_t)asc;
        uint8_t *d = s + 8;
        d[0] = 0x00;                  /* information descriptor */
        d[1] = 0x0a;
        d[2] = 0x80;                  /* VALID */
        put_be64(d + 4, info);
        s[7] = 12;
        cmd->sense_len = 20;
        return SCSI_STATUS_CHECK_CONDITION;
    }
    s[0] = 0x70 | (info_valid ? 0x80 : 0);   /* current, fixed format */
    s[2] = key;
    if (info_valid)
        put_be32(s + 3, (uint32_t)info);
    s[7] = 10;                                /* additional sense length */
    s[12] = (uint8_t)(asc >> 8);
    s[13] = (uint8_t)asc;
    if (sks)
        memcpy(s + 15, sks, 3);
    cmd->sense_len = 18;
    return SCSI_STATUS_CHECK_CONDITION;
}

int scsi_fail(struct scsi_cmd *cmd, enum sense_key key, enum sense_asc asc)
{
    return fill_sense(cmd, key, asc, false, 0, NULL);
}

int scsi_fail_info(struct scsi_cmd *cmd, enum sense_key key,
                   enum sense_asc asc, uint64_t info)
{
    return fill_sense(cmd, key, asc, true, info, NULL);
}

/* Sense-key-specific field pointer (SPC-5 4.4.2.2): SKSV, C/D, BPV, bit
 * pointer, then the byte offset. */
static int fail_field(struct scsi_cmd *cmd, enum sense_asc asc, bool in_cdb,
                      unsigned byte, int bit)
{
    uint8_t sks[3];
    sks[0] = 0x80 | (in_cdb ? 0x40 : 0) |
             (bit >= 0 ? 0x08 | (uint8_t)(bit & 7) : 0);
    sks[1] = (uint8_t)(byte >> 8);
    sks[2] = (uint8_t)byte;
    return fill_sense(cmd, SK_ILLEGAL_REQUEST, asc, false, 0, sks);
}

int scsi_fail_cdb_field(struct scsi_cmd *cmd, unsigned byte, int bit)
{
    return fail_field(cmd, ASC_INVALID_FIELD_IN_CDB, true, byte, bit);
}

int scsi_fail_param_field(struct scsi_cmd *cmd, unsigned byte, int bit)
{
    return fail_field(cmd, ASC_INVALID_FIELD_IN_PARAM_LIST, false, byte, bit);
}
