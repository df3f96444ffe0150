/* qlun — primary commands (SPC-5): INQUIRY and its VPD pages, TEST UNIT
 * READY, REQUEST SENSE. */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "scsi-internal.h"

#define QLUN_VENDOR   "QLUN"
#define QLUN_REVISION "0.1"

/* Copy s into a fixed-width, space-padded ASCII field. */
static void put_ascii(uint8_t *dst, size_t width, const char *s)
{
    size_t n = MIN(strlen(s), width);
    memset(dst, ' ', width);
    memcpy(dst, s, n);
}

static size_t inquiry_standard(struct scsi_lun *lun, uint8_t *b)
{
    char product[17];
    memset(b, 0, 96);
    b[0] = 0x00;            /* connected, direct-access block device */
    b[2] = 0x06;            /* SPC-4 */
    b[3] = 0x12;            /* HISUP, response data format 2 */
    b[4] = 96 - 5;          /* additional length */
    b[7] = 0x02;            /* CMDQUE: tagged queuing */
    put_ascii(b + 8, 8, QLUN_VENDOR);
    snprintf(product, sizeof(product), "qlun-%s", lun->img->info.format);
    put_ascii(b + 16, 16, product);
    put_ascii(b + 32, 4, QLUN_REVISION);
    /* Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI. */
    put_be16(b + 58, 0x00a0);
    put_be16(b + 60, 0x0460);
    put_be16(b + 62, 0x04c0);
    put_be16(b + 64, 0x0960);
    return 96;
}

/* VPD pages in the order the Supported VPD Pages page lists them. */
enum {
    VPD_SUPPORTED = 0x00,
    VPD_UNIT_SERIAL = 0x80,
    VPD_DEVICE_ID = 0x83,
    VPD_BLOCK_LIMITS = 0xb0,
    VPD_BLOCK_CHARACTERISTICS = 0xb1,
    VPD_LOGICAL_BLOCK_PROVISIONING = 0xb2,
};
static const uint8_t vpd_pages[] = {
    VPD_SUPPORTED, VPD_UNIT_SERIAL, VPD_DEVICE_ID, VPD_BLOCK_LIMITS,
    VPD_BLOCK_CHARACTERISTICS, VPD_LOGICAL_BLOCK_PROVISIONING,
};

static size_t vpd_supported(uint8_t *b)
{
    memcpy(b + 4, vpd_pages, sizeof(vpd_pages));
    return 4 + sizeof(vpd_pages);
}

static size_t vpd_unit_serial(struct scsi_lun *lun, uint8_t *b)
{
    size_t n = strlen(lun->serial);
    memcpy(b + 4, lun->serial, n);
    return 4 + n;
}

static size_t vpd_device_id(struct scsi_lun *lun, uint8_t *b)
{
    uint8_t *d = b + 4;
    /* NAA designator (binary, type 3, associated with the LU). */
    d[0] = 0x01;            /* protocol 0, code set binary */
    d[1] = 0x03;            /* PIV 0, association LU, type NAA */
    d[3] = 8;
    put_be64(d + 4, lun->naa_id);
    d += 12;
    /* T10 vendor ID designator: vendor + serial, ASCII. */
    size_t n = strlen(lun->serial);
    d[0] = 0x02;            /* code set ASCII */
    d[1] = 0x01;            /* association LU, type T10 vendor ID */
    d[3] = (uint8_t)(8 + n);
    put_ascii(d + 4, 8, QLUN_VENDOR);
    memcpy(d + 12, lun->serial, n);
    d += 12 + n;
    return (size_t)(d - b);
}

static size_t vpd_block_limits(struct scsi_lun *lun, uint8_t *b)
{
    uint32_t granularity = 1;
    if (lun->img->info.request_alignment > lun->block_size)
        granularity = lun->img->info.request_alignment >> lun->block_shift;
    b[4] = 0x01;                              /* WSNZ */
    b[5] = SCSI_MAX_COMPARE_AND_WRITE;
    put_be16(b + 6, (uint16_t)MIN(granularity, 0xffffu));
    put_be32(b + 8, lun->max_xfer_blocks);    /* maximum transfer length */
    put_be32(b + 12, lun->max_xfer_blocks);   /* optimal transfer length */
    if (lun->thin) {
        put_be32(b + 20, SCSI_MAX_UNMAP_BLOCKS);
        put_be32(b + 24, SCSI_MAX_UNMAP_DESCRIPTORS);
        put_be32(b + 28, lun->unmap_granularity);
        put_be32(b + 32, 0x80000000u);        /* UGAVALID, alignment 0 */
    }
    put_be64(b + 36, SCSI_MAX_WRITE_SAME_BLOCKS);
    return 64;
}

static size_t vpd_block_characteristics(uint8_t *b)
{
    put_be16(b + 4, 0x0001);   /* medium rotation rate: non-rotating */
    return 64;
}

static size_t vpd_logical_block_provisioning(struct scsi_lun *lun, uint8_t *b)
{
    if (lun->thin) {
        /* LBPU, LBPWS, LBPWS10; LBPRZ = 001b; thin provisioned.  That is
         * exactly what Linux needs to choose provisioning_mode=unmap and
         * zeroing_mode=writesame_16_unmap. */
        b[5] = 0x80 | 0x40 | 0x20 | 0x04;
        b[6] = 0x02;
    }
    return 8;
}

int spc_inquiry(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    size_t alloc_len = get_be16(cdb + 3);
    uint8_t b[256];
    size_t len;

    if (cdb[1] & 0xfe)             /* obsolete CMDDT and reserved bits */
        return scsi_fail_cdb_field(cmd, 1, -1);
    if (!(cdb[1] & 0x01)) {        /* EVPD = 0: standard data */
        if (cdb[2] != 0)
            return scsi_fail_cdb_field(cmd, 2, -1);
        len = inquiry_standard(lun, b);
        return scsi_data_in(cmd, b, len, alloc_len);
    }

    memset(b, 0, sizeof(b));
    b[1] = cdb[2];
    switch (cdb[2]) {
    case VPD_SUPPORTED:
        len = vpd_supported(b);
        break;
    case VPD_UNIT_SERIAL:
        len = vpd_unit_serial(lun, b);
        break;
    case VPD_DEVICE_ID:
        len = vpd_device_id(lun, b);
        break;
    case VPD_BLOCK_LIMITS:
        len = vpd_block_limits(lun, b);
        break;
    case VPD_BLOCK_CHARACTERISTICS:
        len = vpd_block_characteristics(b);
        break;
    case VPD_LOGICAL_BLOCK_PROVISIONING:
        len = vpd_logical_block_provisioning(lun, b);
        break;
    default:
        return scsi_fail_cdb_field(cmd, 2, -1);
    }
    put_be16(b + 2, (uint16_t)(len - 4));
    return scsi_data_in(cmd, b, len, alloc_len);
}

int spc_test_unit_ready(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    return SCSI_STATUS_GOOD;
}

int spc_request_sense(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    /* Errors are reported with autosense, so nothing is ever pending:
     * answer NO SENSE in the format asked for (DESC bit). */
    uint8_t b[18] = { 0 };
    size_t len;
    if (cmd->cdb[1] & 0x01) {
        b[0] = 0x72;
        len = 8;
    } else {
        b[0] = 0x70;
        b[7] = 10;
        len = 18;
    }
    return scsi_data_in(cmd, b, len, cmd->cdb[4]);
}
