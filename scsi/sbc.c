/* qlun — block commands (SBC-4): capacity, READ, WRITE, SYNCHRONIZE
 * CACHE. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* Service actions of SERVICE ACTION IN (16). */
enum { SAI_READ_CAPACITY_16 = 0x10 };

/* A decoded READ/WRITE/SYNCHRONIZE CACHE CDB. */
struct sbc_range {
    uint64_t lba;
    uint64_t num_blocks;
    uint8_t flags;      /* CDB byte 1 (RDPROTECT/WRPROTECT, DPO, FUA) */
};

static void decode_rw(const uint8_t *cdb, struct sbc_range *r)
{
    switch (cdb[0] >> 5) {
    case 0: /* 6-byte: 21-bit LBA, length 0 means 256 */
        r->lba = get_be24(cdb + 1) & 0x1fffff;
        r->num_blocks = cdb[4] ? cdb[4] : 256;
        r->flags = 0;
        break;
    case 1: /* 10-byte */
        r->lba = get_be32(cdb + 2);
        r->num_blocks = get_be16(cdb + 7);
        r->flags = cdb[1];
        break;
    case 5: /* 12-byte */
        r->lba = get_be32(cdb + 2);
        r->num_blocks = get_be32(cdb + 6);
        r->flags = cdb[1];
        break;
    case 4: /* 16-byte */
        r->lba = get_be64(cdb + 2);
        r->num_blocks = get_be32(cdb + 10);
        r->flags = cdb[1];
        break;
    default:
        abort(); /* the dispatch table only routes the groups above */
    }
}

static bool range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t n)
{
    return lba <= lun->num_blocks && n <= lun->num_blocks - lba;
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

static int sbc_read_capacity16(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    uint8_t b[32] = { 0 };
    put_be64(b, lun->num_blocks - 1);
    put_be32(b + 8, lun->block_size);
    /* Host storage works in 4 KiB pages; say so, so that the initiator
     * aligns its I/O (logical blocks per physical block exponent). */
    unsigned phys_shift = lun->block_shift < 12 ? 12 - lun->block_shift : 0;
    b[13] = (uint8_t)phys_shift;
    return scsi_data_in(cmd, b, sizeof(b), get_be32(cmd->cdb + 10));
}

int sbc_service_action_in16(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    switch (cmd->cdb[1] & 0x1f) {
    case SAI_READ_CAPACITY_16:
        return sbc_read_capacity16(lun, cmd);
    default:
        return scsi_fail_cdb_field(cmd, 1, 4);
    }
}

/* Check a READ/WRITE CDB: protection fields, range, transfer limit. */
static int check_rw(struct scsi_lun *lun, struct scsi_cmd *cmd,
                    const struct sbc_range *r)
{
    if (r->flags & 0xe0)          /* RDPROTECT/WRPROTECT: no PI here */
        return scsi_fail_cdb_field(cmd, 1, 7);
    if (!range_ok(lun, r->lba, r->num_blocks))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (r->num_blocks > lun->max_xfer_blocks)
        return scsi_fail_cdb_field(cmd, (cmd->cdb[0] >> 5) == 4 ? 10 : 6, -1);
    return SCSI_STATUS_GOOD;
}

/* Run fn on exactly the first len bytes of cmd's buffer. */
static int with_data(struct scsi_cmd *cmd, size_t len,
                     int (*fn)(struct scsi_lun *, const struct iovec *, int,
                               uint64_t, unsigned),
                     struct scsi_lun *lun, uint64_t off, unsigned flags)
{
    if (iov_size(cmd->iov, cmd->iovcnt) == len)
        return fn(lun, cmd->iov, cmd->iovcnt, off, flags);
    struct iovec *v = malloc(sizeof(*v) * (size_t)MAX(cmd->iovcnt, 1));
    if (!v)
        return -ENOMEM;
    int n = iov_slice(v, cmd->iovcnt, cmd->iov, cmd->iovcnt, 0, len);
    int ret = n < 0 ? -EINVAL : fn(lun, v, n, off, flags);
    free(v);
    return ret;
}

static int do_read(struct scsi_lun *lun, const struct iovec *iov, int cnt,
                   uint64_t off, unsigned flags)
{
    return image_readv(lun->img, iov, cnt, off);
}

static int do_write(struct scsi_lun *lun, const struct iovec *iov, int cnt,
                    uint64_t off, unsigned flags)
{
    return image_writev(lun->img, iov, cnt, off, flags);
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
    size_t len = (size_t)MIN(r.num_blocks << lun->block_shift,
                             (uint64_t)iov_size(cmd->iov, cmd->iovcnt));
    if (len == 0)
        return SCSI_STATUS_GOOD;
    int ret = with_data(cmd, len, do_read, lun, r.lba << lun->block_shift, 0);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, r.lba, false);
    cmd->data_in_len = len;
    return SCSI_STATUS_GOOD;
}

int sbc_write(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    struct sbc_range r;
    decode_rw(cmd->cdb, &r);
    int st = check_rw(lun, cmd, &r);
    if (st != SCSI_STATUS_GOOD)
        return st;
    if (lun->read_only)
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    size_t len = (size_t)(r.num_blocks << lun->block_shift);
    if (len == 0)
        return SCSI_STATUS_GOOD;
    if (iov_size(cmd->iov, cmd->iovcnt) < len)
        return scsi_fail_cdb_field(cmd, (cmd->cdb[0] >> 5) == 4 ? 10 : 6, -1);
    /* FUA, or a disabled write cache, makes the write durable before we
     * report it done. */
    unsigned flags = 0;
    if ((r.flags & 0x08) || !atomic_load(&lun->write_cache))
        flags |= IMAGE_FUA;
    int ret = with_data(cmd, len, do_write, lun, r.lba << lun->block_shift,
                        flags);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, r.lba, true);
    return SCSI_STATUS_GOOD;
}

int sbc_synchronize_cache(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba, n;
    if (cdb[0] == 0x35) {
        lba = get_be32(cdb + 2);
        n = get_be16(cdb + 7);
    } else {
        lba = get_be64(cdb + 2);
        n = get_be32(cdb + 10);
    }
    if (!range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    /* The whole image is flushed whatever the range: flushing is cheaper
     * than tracking dirty ranges, and IMMED changes nothing for a
     * synchronous executor. */
    int ret = image_flush(lun->img);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, lba, true);
    return SCSI_STATUS_GOOD;
}
