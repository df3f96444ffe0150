/* qlun — block commands (SBC-4): capacity, READ, WRITE, SYNCHRONIZE
 * CACHE, PRE-FETCH, START STOP UNIT. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* A decoded READ/WRITE CDB. */
struct sbc_range {
    uint64_t lba;
    uint64_t num_blocks;
    uint8_t flags;      /* CDB byte 1 (RDPROTECT/WRPROTECT, DPO, FUA) */
    unsigned len_byte;  /* where TRANSFER LENGTH sits, for sense */
};

static void decode_rw(const uint8_t *cdb, struct sbc_range *r)
{
    switch (cdb[0] >> 5) {
    case 0: /* 6-byte: 21-bit LBA, length 0 means 256 */
        r->lba = get_be24(cdb + 1) & 0x1fffff;
        r->num_blocks = cdb[4] ? cdb[4] : 256;
        r->flags = 0;
        r->len_byte = 4;
        break;
    case 1: /* 10-byte */
        r->lba = get_be32(cdb + 2);
        r->num_blocks = get_be16(cdb + 7);
        r->flags = cdb[1];
        r->len_byte = 7;
        break;
    case 5: /* 12-byte */
        r->lba = get_be32(cdb + 2);
        r->num_blocks = get_be32(cdb + 6);
        r->flags = cdb[1];
        r->len_byte = 6;
        break;
    case 4: /* 16-byte */
        r->lba = get_be64(cdb + 2);
        r->num_blocks = get_be32(cdb + 10);
        r->flags = cdb[1];
        r->len_byte = 10;
        break;
    default:
        abort(); /* the opcode table only routes the groups above */
    }
}

bool sbc_range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n)
{
    return lba <= lun->num_blocks && n <= lun->num_blocks - lba;
}

uint8_t *sbc_data_out(struct scsi_cmd *cmd, size_t len)
{
    if (iov_size(cmd->iov, cmd->iovcnt) < len)
        return NULL;
    uint8_t *p = malloc(MAX(len, (size_t)1));
    if (p)
        iov_to_buf(cmd->iov, cmd->iovcnt, 0, p, len);
    return p;
}

int sbc_read_capacity10(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    uint8_t b[8];
    /* The obsolete PMI bit and LOGICAL BLOCK ADDRESS must be zero. */
    if (cmd->cdb[8] & 0x01)
        return scsi_fail_cdb_field(cmd, 8, 0);
    if (get_be32(cmd->cdb + 2))
        return scsi_fail_cdb_field(cmd, 2, -1);
    uint64_t last = lun->num_blocks - 1;
    /* FFFFFFFFh tells the initiator to use READ CAPACITY (16). */
    put_be32(b, last > UINT32_MAX ? UINT32_MAX : (uint32_t)last);
    put_be32(b + 4, lun->block_size);
    return scsi_data_in(cmd, b, sizeof(b), sizeof(b));
}

int sbc_read_capacity16(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    uint8_t b[32] = { 0 };
    put_be64(b, lun->num_blocks - 1);
    put_be32(b + 8, lun->block_size);
    /* Host storage works in 4 KiB pages; say so, so that the initiator
     * aligns its I/O (logical blocks per physical block exponent). */
    b[13] = (uint8_t)(lun->block_shift < 12 ? 12 - lun->block_shift : 0);
    /* LBPME: thin provisioned; LBPRZ: unmapped blocks read as zeros (we
     * make that true: see thin.c). */
    if (lun->thin)
        b[14] = 0x80 | 0x40;
    return scsi_data_in(cmd, b, sizeof(b), get_be32(cmd->cdb + 10));
}

/* Check a READ/WRITE CDB: protection fields, range, transfer limit. */
static int check_rw(struct scsi_lun *lun, struct scsi_cmd *cmd,
                    const struct sbc_range *r)
{
    if (r->flags & 0xe0)          /* RDPROTECT/WRPROTECT: no PI here */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (!sbc_range_ok(lun, r->lba, r->num_blocks))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (r->num_blocks > lun->max_xfer_blocks)
        return scsi_fail_cdb_field(cmd, r->len_byte, -1);
    return SCSI_STATUS_GOOD;
}

/* Run an image operation on exactly the first len bytes of cmd's buffer,
 * which holds total bytes (the transport's buffer may be longer). */
static int with_data(struct scsi_cmd *cmd, size_t len, size_t total,
                     bool write, struct image *img, uint64_t off)
{
    const struct iovec *iov = cmd->iov;
    int cnt = cmd->iovcnt;
    /* The slice of a short vector (TCMU's usually has one entry) lives on
     * the stack: no allocation per command. */
    struct iovec small[16], *sliced = NULL;
    if (total != len) {
        sliced = cnt <= (int)ARRAY_SIZE(small)
                 ? small : malloc(sizeof(*sliced) * (size_t)cnt);
        if (!sliced)
            return -ENOMEM;
        int n = iov_slice(sliced, cnt, iov, cnt, 0, len);
        if (n < 0) {
            if (sliced != small)
                free(sliced);
            return -EINVAL;
        }
        iov = sliced;
        cnt = n;
    }
    int ret = write ? image_writev(img, iov, cnt, off, 0)
                    : image_readv(img, iov, cnt, off);
    if (sliced != small)
        free(sliced);
    return ret;
}

int sbc_read(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    struct sbc_range r;
    decode_rw(cmd->cdb, &r);
    int st = check_rw(lun, cmd, &r);
    if (st != SCSI_STATUS_GOOD)
        return st;
    /* The transport may carry less than the CDB asks (an initiator's
     * expected length shorter than the transfer): fill what it carries. */
    size_t total = iov_size(cmd->iov, cmd->iovcnt);
    size_t len = (size_t)MIN(r.num_blocks << lun->block_shift,
                             (uint64_t)total);
    if (len == 0)
        return SCSI_STATUS_GOOD;
    int ret = with_data(cmd, len, total, false, lun->img,
                        r.lba << lun->block_shift);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, r.lba, false);
    cmd->data_in_len = len;
    /* A buffer longer than the transfer goes back whole: no stale bytes. */
    if (total > len)
        iov_memset(cmd->iov, cmd->iovcnt, len, 0, total - len);
    scsi_stat_add(lun, bytes_read, len);
    return SCSI_STATUS_GOOD;
}

bool sbc_fua(uint8_t cdb_flags)
{
    return cdb_flags & 0x08;
}

int sbc_write(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    struct sbc_range r;
    decode_rw(cmd->cdb, &r);
    int st = check_rw(lun, cmd, &r);
    if (st != SCSI_STATUS_GOOD)
        return st;
    if (lun_write_protected(lun))
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    size_t len = (size_t)(r.num_blocks << lun->block_shift);
    if (len == 0)
        return SCSI_STATUS_GOOD;
    size_t total = iov_size(cmd->iov, cmd->iovcnt);
    if (total < len)
        return scsi_fail_cdb_field(cmd, r.len_byte, -1);

    lun_change_begin(lun, LUN_CHANGE_SHARED);
    int ret = with_data(cmd, len, total, true, lun->img,
                        r.lba << lun->block_shift);
    ret = lun_change_end(lun, ret, LUN_CHANGE_WRITE, ret == 0 ? len : 0,
                         sbc_fua(r.flags));
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, r.lba, true);
    return SCSI_STATUS_GOOD;
}

/* SYNCHRONIZE CACHE and PRE-FETCH share a CDB layout. */
static void decode_range(const uint8_t *cdb, uint64_t *lba, uint64_t *n)
{
    if ((cdb[0] >> 5) == 1) {
        *lba = get_be32(cdb + 2);
        *n = get_be16(cdb + 7);
    } else {
        *lba = get_be64(cdb + 2);
        *n = get_be32(cdb + 10);
    }
}

int sbc_synchronize_cache(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    uint64_t lba, n;
    decode_range(cmd->cdb, &lba, &n);
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    /* The whole image is flushed whatever the range: flushing is cheaper
     * than tracking dirty ranges.  IMMED would let us answer first; we
     * answer after, which the standard also allows. */
    int ret = image_flush(lun->img);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, lba, true);
    return SCSI_STATUS_GOOD;
}

int sbc_pre_fetch(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    uint64_t lba, n;
    decode_range(cmd->cdb, &lba, &n);
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    /* We keep no cache of our own to load (the host's page cache does
     * that), so GOOD, not CONDITION MET (SBC-4 5.8). */
    return SCSI_STATUS_GOOD;
}

int sbc_start_stop_unit(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint8_t power_condition = cdb[4] >> 4;
    bool loej = cdb[4] & 0x02;
    bool start = cdb[4] & 0x01;
    /* No removable medium to load or eject. */
    if (loej && power_condition == 0)
        return scsi_fail_cdb_field(cmd, 4, 1);
    /* Stopping makes everything durable, as a disk spinning down would. */
    if (!start && power_condition == 0) {
        int ret = image_flush(lun->img);
        if (ret < 0)
            return scsi_fail_errno(cmd, ret, 0, true);
    }
    return SCSI_STATUS_GOOD;
}
