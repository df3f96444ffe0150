/* qlun — mode pages: MODE SENSE (6/10) and MODE SELECT (6/10).
 *
 * Two pages: caching (08h), whose WCE bit the initiator may change, and
 * control (0Ah), which is fixed.  Nothing is saveable. */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "scsi-internal.h"

enum {
    MODE_PAGE_CACHING = 0x08,
    MODE_PAGE_CONTROL = 0x0a,
    MODE_PAGE_ALL = 0x3f,
};

/* Page control values (CDB byte 2 bits 7-6). */
enum { PC_CURRENT = 0, PC_CHANGEABLE = 1, PC_DEFAULT = 2, PC_SAVED = 3 };

#define CACHING_PAGE_LEN 20
#define CONTROL_PAGE_LEN 12

static size_t mode_page_caching(struct scsi_lun *lun, int pc, uint8_t *p)
{
    memset(p, 0, CACHING_PAGE_LEN);
    p[0] = MODE_PAGE_CACHING;
    p[1] = CACHING_PAGE_LEN - 2;
    if (pc == PC_CHANGEABLE)
        p[2] = 0x04;        /* WCE is the one thing MODE SELECT may change */
    else if (pc == PC_DEFAULT || atomic_load(&lun->write_cache))
        p[2] = 0x04;
    return CACHING_PAGE_LEN;
}

static size_t mode_page_control(struct scsi_lun *lun, int pc, uint8_t *p)
{
    memset(p, 0, CONTROL_PAGE_LEN);
    p[0] = MODE_PAGE_CONTROL;
    p[1] = CONTROL_PAGE_LEN - 2;
    if (pc == PC_CHANGEABLE)
        return CONTROL_PAGE_LEN;
    p[3] = 0x10;            /* QUEUE ALGORITHM MODIFIER 1: unrestricted */
    p[5] = 0x40;            /* TAS: aborted commands get TASK ABORTED */
    put_be16(p + 10, 0xffff); /* extended self-test time: not supported */
    return CONTROL_PAGE_LEN;
}

int spc_mode_sense(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    bool ten = cdb[0] == 0x5a;
    bool dbd = cdb[1] & 0x08;
    bool llbaa = ten && (cdb[1] & 0x10);
    int pc = cdb[2] >> 6;
    uint8_t page = cdb[2] & 0x3f;
    uint8_t subpage = cdb[3];
    size_t alloc_len = ten ? get_be16(cdb + 7) : cdb[4];
    size_t hdr = ten ? 8 : 4;
    uint8_t b[512];

    if (pc == PC_SAVED)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_SAVING_PARAMS_NOT_SUPPORTED);
    /* Subpages: only 00h, and FFh with the all-pages code. */
    if (subpage != 0 && !(page == MODE_PAGE_ALL && subpage == 0xff))
        return scsi_fail_cdb_field(cmd, 3, -1);

    memset(b, 0, sizeof(b));
    size_t len = hdr;
    if (!dbd) {
        uint8_t *d = b + len;
        if (llbaa) {
            put_be64(d, lun->num_blocks);
            put_be32(d + 12, lun->block_size);
            len += 16;
        } else {
            put_be32(d, (uint32_t)MIN(lun->num_blocks, (uint64_t)UINT32_MAX));
            put_be32(d + 4, lun->block_size & 0xffffff);
            len += 8;
        }
    }
    size_t desc_len = len - hdr;

    switch (page) {
    case MODE_PAGE_CACHING:
        len += mode_page_caching(lun, pc, b + len);
        break;
    case MODE_PAGE_CONTROL:
        len += mode_page_control(lun, pc, b + len);
        break;
    case MODE_PAGE_ALL:
        len += mode_page_caching(lun, pc, b + len);
        len += mode_page_control(lun, pc, b + len);
        break;
    default:
        return scsi_fail_cdb_field(cmd, 2, 5);
    }

    /* Device-specific parameter: WP, and DPOFUA (we honour FUA). */
    uint8_t dsp = 0x10 | (lun_write_protected(lun) ? 0x80 : 0);
    if (ten) {
        put_be16(b, (uint16_t)(len - 2));
        b[3] = dsp;
        b[4] = llbaa && !dbd ? 0x01 : 0;
        put_be16(b + 6, (uint16_t)desc_len);
    } else {
        b[0] = (uint8_t)(len - 1);
        b[2] = dsp;
        b[3] = (uint8_t)desc_len;
    }
    return scsi_data_in(cmd, b, len, alloc_len);
}

/* Check one page of a MODE SELECT parameter list against the current
 * values: only changeable bits may differ.  off is the page's offset in
 * the list (for the sense field pointer). */
static int select_page(struct scsi_lun *lun, struct scsi_cmd *cmd,
                       const uint8_t *p, size_t avail, size_t off,
                       bool *wce)
{
    uint8_t cur[32], chg[32];
    size_t len;
    if (avail < 2)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);
    switch (p[0] & 0x3f) {
    case MODE_PAGE_CACHING:
        len = mode_page_caching(lun, PC_CURRENT, cur);
        mode_page_caching(lun, PC_CHANGEABLE, chg);
        break;
    case MODE_PAGE_CONTROL:
        len = mode_page_control(lun, PC_CURRENT, cur);
        mode_page_control(lun, PC_CHANGEABLE, chg);
        break;
    default:
        return scsi_fail_param_field(cmd, (unsigned)off, 5);
    }
    if (p[0] & 0x40)                       /* SPF: no subpages here */
        return scsi_fail_param_field(cmd, (unsigned)off, 6);
    if (p[1] != len - 2)
        return scsi_fail_param_field(cmd, (unsigned)off + 1, -1);
    if (avail < len)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);
    for (size_t i = 2; i < len; i++)
        if ((p[i] ^ cur[i]) & ~chg[i])
            return scsi_fail_param_field(cmd, (unsigned)(off + i), -1);
    if ((p[0] & 0x3f) == MODE_PAGE_CACHING)
        *wce = p[2] & 0x04;
    return SCSI_STATUS_GOOD;
}

int spc_mode_select(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    bool ten = cdb[0] == 0x55;
    size_t list_len = ten ? get_be16(cdb + 7) : cdb[4];
    size_t hdr = ten ? 8 : 4;

    if (!(cdb[1] & 0x10))                  /* PF: pages as the standard */
        return scsi_fail_cdb_field(cmd, 1, 4);
    if (cdb[1] & 0x01)                     /* SP: nothing is saveable */
        return scsi_fail_cdb_field(cmd, 1, 0);
    if (list_len == 0)
        return SCSI_STATUS_GOOD;
    if (list_len < hdr)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);

    uint8_t *p = sbc_data_out(cmd, list_len);
    if (!p)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST,
                         ASC_PARAMETER_LIST_LENGTH_ERROR);
    int st = SCSI_STATUS_GOOD;
    size_t desc_len = ten ? get_be16(p + 6) : p[3];
    size_t off = hdr;
    bool wce = atomic_load(&lun->write_cache);

    /* A block descriptor may come along; it must describe us as we are. */
    if (desc_len) {
        size_t want = ten && (p[4] & 0x01) ? 16 : 8;
        if (desc_len != want || off + desc_len > list_len) {
            st = scsi_fail_param_field(cmd, ten ? 6 : 3, -1);
            goto out;
        }
        uint32_t bl = want == 16 ? get_be32(p + off + 12)
                                 : get_be24(p + off + 5);
        if (bl != lun->block_size) {
            st = scsi_fail_param_field(cmd, (unsigned)off + (want == 16 ? 12 : 5),
                                       -1);
            goto out;
        }
        off += desc_len;
    }
    while (off < list_len) {
        st = select_page(lun, cmd, p + off, list_len - off, off, &wce);
        if (st != SCSI_STATUS_GOOD)
            break;
        off += (size_t)p[off + 1] + 2;   /* select_page checked it fits */
    }
    if (st == SCSI_STATUS_GOOD)
        atomic_store(&lun->write_cache, wce);
out:
    free(p);
    return st;
}
