/* qlun — logical block provisioning (SBC-4 4.7): WRITE SAME, UNMAP and
 * GET LBA STATUS.
 *
 * We advertise LBPRZ=1: an unmapped block reads as zeros.  To keep that
 * true on every image, UNMAP goes to image_discard() only where the image
 * says discarded ranges read back as zeros, and to image_zero() with
 * MAY_UNMAP otherwise. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* Make [lba, lba+n) read as zeros without sending data; may_unmap lets the
 * image release the space. */
static int zero_blocks(struct scsi_lun *lun, uint64_t lba, uint64_t n,
                       bool may_unmap)
{
    return image_zero(lun->img, lba << lun->block_shift, n << lun->block_shift,
                      may_unmap ? IMAGE_MAY_UNMAP : 0);
}

static int unmap_blocks(struct scsi_lun *lun, uint64_t lba, uint64_t n)
{
    if (lun->img->info.discard_zeroes)
        return image_discard(lun->img, lba << lun->block_shift,
                             n << lun->block_shift);
    return zero_blocks(lun, lba, n, true);
}

/* Write one block's pattern over [lba, lba+n), a large buffer at a time. */
static int replicate_block(struct scsi_lun *lun, const uint8_t *block,
                           uint64_t lba, uint64_t n)
{
    enum { BATCH_BYTES = 1 << 20 };
    uint64_t per_batch = BATCH_BYTES >> lun->block_shift;
    size_t bytes = (size_t)(MIN(n, per_batch) << lun->block_shift);
    uint8_t *buf = malloc(bytes);
    if (!buf)
        return -ENOMEM;
    for (size_t off = 0; off < bytes; off += lun->block_size)
        memcpy(buf + off, block, lun->block_size);
    int ret = 0;
    while (n > 0 && ret == 0) {
        uint64_t k = MIN(n, per_batch);
        ret = image_write(lun->img, buf, (size_t)(k << lun->block_shift),
                          lba << lun->block_shift, 0);
        lba += k;
        n -= k;
    }
    free(buf);
    return ret;
}

int sbc_write_same(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    bool sixteen = cdb[0] == 0x93;
    uint64_t lba = sixteen ? get_be64(cdb + 2) : get_be32(cdb + 2);
    uint64_t n = sixteen ? get_be32(cdb + 10) : get_be16(cdb + 7);
    unsigned len_byte = sixteen ? 10 : 7;
    bool anchor = cdb[1] & 0x10;
    bool unmap = cdb[1] & 0x08;
    bool ndob = sixteen && (cdb[1] & 0x01);

    if (cdb[1] & 0xe0)                       /* WRPROTECT */
        return scsi_fail_cdb_field(cmd, 1, 7);
    /* ANCHOR needs ANC_SUP, which we do not offer (VPD B2). */
    if (anchor)
        return scsi_fail_cdb_field(cmd, 1, 4);
    /* WSNZ=1 in VPD B0: a zero NUMBER OF LOGICAL BLOCKS is refused, not
     * taken to mean "to the end". */
    if (n == 0)
        return scsi_fail_cdb_field(cmd, len_byte, -1);
    if (!sbc_range_ok(lun, lba, n))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    if (n > SCSI_MAX_WRITE_SAME_BLOCKS)
        return scsi_fail_cdb_field(cmd, len_byte, -1);
    /* A read-only LUN refuses every write with DATA PROTECT, UNMAP bit or
     * not, thin or not (a read-only raw file cannot learn whether its
     * filesystem punches holes, so it is not thin), whatever data came. */
    if (lun_write_protected(lun))
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    /* The data-out buffer is one logical block, or nothing with NDOB.  Any
     * other size means the initiator and the CDB disagree on what is sent
     * (LIO's own WRITE SAME refuses it too): rather than guess which bytes
     * are the pattern, refuse.  No CDB field holds the size, so no field
     * pointer. */
    if (iov_size(cmd->iov, cmd->iovcnt) != (ndob ? 0 : lun->block_size))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    if (unmap && !lun->thin)
        return scsi_fail_cdb_field(cmd, 1, 3);

    uint8_t *block = NULL;
    bool zero = ndob;
    if (!ndob) {
        block = sbc_data_out(cmd, lun->block_size);
        if (!block)
            return SCSI_STATUS_TASK_SET_FULL;  /* out of memory */
        zero = buf_is_zero(block, lun->block_size);
    }

    lun_change_begin(lun, LUN_CHANGE_SHARED);
    uint64_t bytes = n << lun->block_shift;
    /* The point of a thin LUN: zeros cost metadata, not data. */
    int ret = zero ? zero_blocks(lun, lba, n, unmap)
                   : replicate_block(lun, block, lba, n);
    ret = lun_change_end(lun, ret, zero ? LUN_CHANGE_ZERO : LUN_CHANGE_WRITE,
                         ret == 0 ? bytes : 0, false);
    free(block);
    if (ret < 0)
        return scsi_fail_errno(cmd, ret, lba, true);
    return SCSI_STATUS_GOOD;
}

/* UNMAP (SBC-4 5.30): an 8-byte header, then 16-byte block descriptors.
 * Every descriptor is checked before anything changes. */
int sbc_unmap(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    size_t list_len = get_be16(cdb + 7);

    /* Without thin provisioning there is nothing to unmap; a read-only LUN
     * still answers DATA PROTECT below, as it does for every write. */
    if (!lun->thin && !lun_write_protected(lun))
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPCODE);
    if (cdb[1] & 0x01)                        /* ANCHOR: no ANC_SUP */
        return scsi_fail_cdb_field(cmd, 1, 0);
    if (list_len == 0)
        return SCSI_STATUS_GOOD;               /* nothing to do (5.30.1) */
    if (list_len < 8)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);
    if (lun_write_protected(lun))
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);

    uint8_t *p = sbc_data_out(cmd, list_len);
    if (!p)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);
    int st = SCSI_STATUS_GOOD;
    size_t data_len = get_be16(p);            /* UNMAP DATA LENGTH */
    size_t desc_bytes = get_be16(p + 2);      /* BLOCK DESCRIPTOR DATA LENGTH */
    /* The lengths inside the list must agree with the list itself. */
    if (data_len + 2 > list_len || desc_bytes + 8 > list_len ||
        desc_bytes % 16 != 0) {
        st = scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                       ASC_PARAMETER_LIST_LENGTH_ERROR);
        goto out;
    }
    size_t count = desc_bytes / 16;
    if (count > SCSI_MAX_UNMAP_DESCRIPTORS) {
        st = scsi_fail_param_field(cmd, 2, -1);
        goto out;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *d = p + 8 + i * 16;
        uint64_t lba = get_be64(d), n = get_be32(d + 8);
        if (!sbc_range_ok(lun, lba, n)) {
            st = scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
            goto out;
        }
        total += n;
        if (total > SCSI_MAX_UNMAP_BLOCKS) {
            st = scsi_fail_param_field(cmd, (unsigned)(8 + i * 16 + 8), -1);
            goto out;
        }
    }

    lun_change_begin(lun, LUN_CHANGE_SHARED);
    int ret = 0;
    uint64_t lba = 0, done = 0;
    for (size_t i = 0; i < count && ret == 0; i++) {
        const uint8_t *d = p + 8 + i * 16;
        uint64_t n = get_be32(d + 8);
        lba = get_be64(d);
        if (n == 0)
            continue;
        ret = unmap_blocks(lun, lba, n);
        if (ret == 0)
            done += n << lun->block_shift;
    }
    /* Unmapped blocks read as zeros from now on: as durable as a write. */
    ret = lun_change_end(lun, ret, LUN_CHANGE_UNMAP, done, false);
    if (ret < 0)
        st = scsi_fail_errno(cmd, ret, lba, true);
out:
    free(p);
    return st;
}

/* Provisioning status values in an LBA status descriptor. */
enum { LBA_MAPPED = 0, LBA_DEALLOCATED = 1 };

/* GET LBA STATUS (SBC-4 5.6): descriptors from the image's block status,
 * starting at the given LBA, as many as the allocation length holds. */
int sbc_get_lba_status(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    uint64_t lba = get_be64(cdb + 2);
    uint32_t alloc_len = get_be32(cdb + 10);
    enum { MAX_DESCRIPTORS = 64 };
    uint8_t b[8 + MAX_DESCRIPTORS * 16];

    if (lba >= lun->num_blocks)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    size_t max_desc = MIN((size_t)MAX_DESCRIPTORS,
                          alloc_len >= 8 ? (alloc_len - 8) / 16 : 0);
    max_desc = MAX(max_desc, (size_t)1);

    memset(b, 0, sizeof(b));
    size_t nd = 0;
    uint64_t cur = lba;
    while (cur < lun->num_blocks && nd < max_desc) {
        /* One descriptor's NUMBER OF LOGICAL BLOCKS is 32 bits. */
        uint64_t want = MIN(lun->num_blocks - cur, (uint64_t)UINT32_MAX);
        uint64_t off = cur << lun->block_shift;
        uint64_t left = want << lun->block_shift;
        int status = -1;
        uint64_t run = 0;
        /* Merge the image's extents while their status stays the same. */
        while (left > 0) {
            enum image_extent_kind kind;
            uint64_t ext;
            int ret = image_block_status_above(lun->img, NULL, off, left,
                                               &kind, &ext, NULL);
            if (ret < 0)
                return scsi_fail_errno(cmd, ret, cur, false);
            int s = kind == IMAGE_EXTENT_DATA ? LBA_MAPPED : LBA_DEALLOCATED;
            if (status >= 0 && s != status)
                break;
            status = s;
            run += ext;
            off += ext;
            left -= ext;
        }
        /* Report whole blocks: a block partly data is mapped. */
        uint64_t blocks = run >> lun->block_shift;
        if (blocks == 0) {
            blocks = 1;
            status = LBA_MAPPED;
        }
        uint8_t *d = b + 8 + nd * 16;
        put_be64(d, cur);
        put_be32(d + 8, (uint32_t)blocks);
        d[12] = (uint8_t)status;
        nd++;
        cur += blocks;
    }
    put_be32(b, (uint32_t)(4 + nd * 16));     /* PARAMETER DATA LENGTH */
    return scsi_data_in(cmd, b, 8 + nd * 16, alloc_len);
}
