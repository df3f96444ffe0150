/* qlun — commands that read the medium to compare or combine: VERIFY, WRITE
 * AND VERIFY (10/12/16), COMPARE AND WRITE, ORWRITE (16).  A difference is
 * reported as MISCOMPARE 1D/00 with INFORMATION set to the offset of the
 * first differing byte (SBC-4 5.3, 5.34). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* Offset of the first difference between a and b, or -1 if equal. */
static ssize_t first_difference(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (memcmp(a, b, n) == 0)
        return -1;
    size_t i = 0;
    while (a[i] == b[i])
        i++;
    return (ssize_t)i;
}

static int miscompare(struct scsi_cmd *cmd, size_t offset)
{
    return scsi_fail_info(cmd, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY,
                          offset);
}

/* Read [lba, lba+n) into a new buffer; NULL + *err on failure. */
static uint8_t *read_blocks(struct scsi_lun *lun, uint64_t lba, uint64_t n,
                            int *err)
{
    size_t len = (size_t)(n << lun->block_shift);
    uint8_t *p = malloc(MAX(len, (size_t)1));
    if (!p) {
        *err = -ENOMEM;
        return NULL;
    }
    *err = image_read(lun->img, p, len, lba << lun->block_shift);
    if (*err < 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* Compare the medium with expected data: bytchk 1 = one block per block,
 * bytchk 3 = the single given block against every block. */
static int compare_medium(struct scsi_lun *lun, struct scsi_cmd *cmd,
                          uint64_t lba, uint64_t n, const uint8_t *expected,
                          int bytchk)
{
    int err;
    uint8_t *medium = read_blocks(lun, lba, n, &err);
    if (!medium)
        return scsi_fail_errno(cmd, err, lba, false);
    int st = SCSI_STATUS_GOOD;
    if (bytchk == 1) {
        ssize_t d = first_difference(medium, expected,
                                     (size_t)(n << lun->block_shift));
        if (d >= 0)
            st = miscompare(cmd, (size_t)d);
    } else {
        for (uint64_t i = 0; i < n; i++) {
            ssize_t d = first_difference(medium + (i << lun->block_shift),
                                         expected, lun->block_size);
            if (d >= 0) {
                st = miscompare(cmd, (size_t)(i << lun->block_shift) +
                                         (size_t)d);
                break;
            }
        }
    }
    free(medium);
    return st;
}

static void decode_verify(const uint8_t *cdb, uint64_t *lba, uint64_t *n,
                          unsigned *len_byte)
{
    switch (cdb[0] >> 5) {
    case 1:                                  /* 10-byte */
        *lba = get_be32(cdb + 2);
        *n = get_be16(cdb + 7);
        *len_byte = 7;
        break;
    case 5:                                  /* 12-byte */
        *lba = get_be32(cdb + 2);
        *n = get_be32(cdb + 6);
        *len_byte = 6;
        break;
    default:                                 /* 16-byte */
        *lba = get_be64(cdb + 2);
        *n = get_be32(cdb + 10);
        *len_byte = 10;
        break;
    }
}

/* The range and transfer-length checks VERIFY and WRITE AND VERIFY share,
 * in the order the sense must report them. */
static int check_range(struct scsi_lun *lun, struct scsi_cmd *cmd,
                       uint64_t lba, uint64_t n, unsigned len_byte)
{
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (n > lun->max_xfer_blocks)
        return scsi_fail_cdb_field(cmd, len_byte, -1);
    return SCSI_STATUS_GOOD;
}

int sbc_verify(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba, n;
    unsigned len_byte;
    int bytchk = (cdb[1] >> 1) & 3;
    decode_verify(cdb, &lba, &n, &len_byte);

    if (cdb[1] & 0xe0)                       /* VRPROTECT */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (bytchk == 2)                          /* reserved */
        return scsi_fail_cdb_field(cmd, 1, 2);
    int st = check_range(lun, cmd, lba, n, len_byte);
    if (st != SCSI_STATUS_GOOD)
        return st;
    if (n == 0)
        return SCSI_STATUS_GOOD;

    if (bytchk == 0) {
        /* Medium verification: the blocks must be readable. */
        int err;
        uint8_t *medium = read_blocks(lun, lba, n, &err);
        if (!medium)
            return scsi_fail_errno(cmd, err, lba, false);
        free(medium);
        return SCSI_STATUS_GOOD;
    }
    size_t want = bytchk == 1 ? (size_t)(n << lun->block_shift)
                              : lun->block_size;
    uint8_t *expected = sbc_data_out(cmd, want);
    if (!expected)
        return scsi_fail_cdb_field(cmd, len_byte, -1);
    st = compare_medium(lun, cmd, lba, n, expected, bytchk);
    free(expected);
    return st;
}

int sbc_write_and_verify(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba, n;
    unsigned len_byte;
    int bytchk = (cdb[1] >> 1) & 3;
    decode_verify(cdb, &lba, &n, &len_byte);

    if (cdb[1] & 0xe0)                       /* WRPROTECT */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (bytchk > 1)                           /* only 00b and 01b exist */
        return scsi_fail_cdb_field(cmd, 1, 2);
    int st = check_range(lun, cmd, lba, n, len_byte);
    if (st != SCSI_STATUS_GOOD)
        return st;
    if (lun_write_protected(lun))
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    if (n == 0)
        return SCSI_STATUS_GOOD;

    size_t len = (size_t)(n << lun->block_shift);
    uint8_t *data = sbc_data_out(cmd, len);
    if (!data)
        return scsi_fail_cdb_field(cmd, len_byte, -1);
    /* Verify means "on the medium": write through. */
    lun_change_begin(lun, LUN_CHANGE_SHARED);
    int ret = image_write(lun->img, data, len, lba << lun->block_shift, 0);
    ret = lun_change_end(lun, ret, LUN_CHANGE_WRITE, ret == 0 ? len : 0,
                         true);
    if (ret < 0)
        st = scsi_fail_errno(cmd, ret, lba, true);
    else
        st = bytchk ? compare_medium(lun, cmd, lba, n, data, 1)
                    : SCSI_STATUS_GOOD;
    free(data);
    return st;
}

/* COMPARE AND WRITE (SBC-4 5.3): the data-out buffer holds n blocks to
 * compare, then n blocks to write.  Holding the write lock exclusively
 * makes the compare and the write one atomic step against every other
 * write to the LUN. */
int sbc_compare_and_write(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba = get_be64(cdb + 2);
    uint64_t n = cdb[13];

    if (cdb[1] & 0xe0)                       /* WRPROTECT */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (n > SCSI_MAX_COMPARE_AND_WRITE)
        return scsi_fail_cdb_field(cmd, 13, -1);
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (lun_write_protected(lun))                      /* whatever data came */
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    /* The data-out buffer is exactly n blocks to compare and n to write.
     * Any other size (the NUMBER OF LOGICAL BLOCKS byte cannot say 256: a
     * 256-block buffer arrives with 0 there) means the initiator and the
     * CDB disagree; LIO's own emulation refuses such a write as well, and
     * guessing which half is which would compare the wrong bytes. */
    size_t len = (size_t)(n << lun->block_shift);
    if (iov_size(cmd->iov, cmd->iovcnt) != 2 * len)
        return scsi_fail_cdb_field(cmd, 13, -1);
    if (n == 0)
        return SCSI_STATUS_GOOD;

    uint8_t *data = sbc_data_out(cmd, 2 * len);
    if (!data)
        return SCSI_STATUS_TASK_SET_FULL;      /* out of memory */

    lun_change_begin(lun, LUN_CHANGE_ATOMIC);
    int err = 0;
    size_t written = 0;
    int st = SCSI_STATUS_GOOD;
    uint8_t *medium = read_blocks(lun, lba, n, &err);
    bool read_ok = medium != NULL;
    if (medium) {
        ssize_t d = first_difference(medium, data, len);
        if (d >= 0)
            st = miscompare(cmd, (size_t)d);
        else
            err = image_write(lun->img, data + len, len,
                              lba << lun->block_shift, 0);
        if (d < 0 && err == 0)
            written = len;
        free(medium);
    }
    err = lun_change_end(lun, err, LUN_CHANGE_WRITE, written,
                         sbc_fua(cdb[1]));
    free(data);
    if (err < 0)
        return scsi_fail_errno(cmd, err, lba, read_ok);
    return st;
}

/* ORWRITE (16) (SBC-4 5.9): each block becomes its old contents OR the
 * data-out buffer, atomically against every other write to the LUN (the
 * write lock held exclusive, as for COMPARE AND WRITE).  Only the plain
 * form: no BMOP (that is ORWRITE (32)), no protection information. */
int sbc_orwrite(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba = get_be64(cdb + 2);
    uint64_t n = get_be32(cdb + 10);

    if (cdb[1] & 0xe0)                       /* ORPROTECT */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (n > lun->max_xfer_blocks)
        return scsi_fail_cdb_field(cmd, 10, -1);
    if (lun_write_protected(lun))
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    if (n == 0)
        return SCSI_STATUS_GOOD;

    size_t len = (size_t)(n << lun->block_shift);
    uint8_t *data = sbc_data_out(cmd, len);
    if (!data)
        return scsi_fail_cdb_field(cmd, 10, -1);

    lun_change_begin(lun, LUN_CHANGE_ATOMIC);
    int err = 0;
    size_t written = 0;
    uint8_t *medium = read_blocks(lun, lba, n, &err);
    bool read_ok = medium != NULL;
    if (medium) {
        for (size_t i = 0; i < len; i++)
            medium[i] |= data[i];
        err = image_write(lun->img, medium, len, lba << lun->block_shift, 0);
        if (err == 0)
            written = len;
        free(medium);
    }
    err = lun_change_end(lun, err, LUN_CHANGE_WRITE, written,
                         sbc_fua(cdb[1]));
    free(data);
    if (err < 0)
        return scsi_fail_errno(cmd, err, lba, read_ok);
    return SCSI_STATUS_GOOD;
}
