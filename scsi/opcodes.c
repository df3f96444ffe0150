/* qlun — the table of commands we implement, with their CDB usage data
 * (what REPORT SUPPORTED OPERATION CODES returns), and that command. */
#include <assert.h>
#include <pthread.h>
#include <string.h>

#include "common/util.h"
#include "scsi-internal.h"

/* CDB usage bitmaps: bit set = the device server examines that bit.  The
 * CONTROL byte's NACA bit (04h) is the only one we check there. */
#define U_RW6        { 0x1f, 0xff, 0xff, 0xff, 0x04 }
#define U_RW10       { 0xf8, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04 }
#define U_RW12       { 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, \
                       0x00, 0x04 }
#define U_RW16       { 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, \
                       0xff, 0xff, 0xff, 0xff, 0x00, 0x04 }
#define U_VERIFY10   { 0xf6, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04 }
#define U_VERIFY16   { 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, \
                       0xff, 0xff, 0xff, 0xff, 0x00, 0x04 }
#define U_VERIFY12   { 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, \
                       0x00, 0x04 }
#define U_RANGE10    { 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04 }
#define U_RANGE16    { 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, \
                       0xff, 0xff, 0xff, 0xff, 0x00, 0x04 }

static const struct scsi_opcode opcodes[] = {
    { 0x00, 0, 6, spc_test_unit_ready, "TEST UNIT READY",
      { 0x00, 0x00, 0x00, 0x00, 0x04 } },
    { 0x03, 0, 6, spc_request_sense, "REQUEST SENSE",
      { 0x01, 0x00, 0x00, 0xff, 0x04 } },
    { 0x08, 0, 6, sbc_read, "READ (6)", U_RW6 },
    { 0x0a, 0, 6, sbc_write, "WRITE (6)", U_RW6 },
    { 0x12, 0, 6, spc_inquiry, "INQUIRY", { 0x01, 0xff, 0xff, 0xff, 0x04 } },
    { 0x15, 0, 6, spc_mode_select, "MODE SELECT (6)",
      { 0x11, 0x00, 0x00, 0xff, 0x04 } },
    { 0x1a, 0, 6, spc_mode_sense, "MODE SENSE (6)",
      { 0x08, 0xff, 0xff, 0xff, 0x04 } },
    { 0x1b, 0, 6, sbc_start_stop_unit, "START STOP UNIT",
      { 0x01, 0x00, 0x0f, 0xf7, 0x04 } },
    { 0x25, 0, 10, sbc_read_capacity10, "READ CAPACITY (10)",
      { 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x04 } },
    { 0x28, 0, 10, sbc_read, "READ (10)", U_RW10 },
    { 0x2a, 0, 10, sbc_write, "WRITE (10)", U_RW10 },
    { 0x2e, 0, 10, sbc_write_and_verify, "WRITE AND VERIFY (10)", U_VERIFY10 },
    { 0x2f, 0, 10, sbc_verify, "VERIFY (10)", U_VERIFY10 },
    { 0x34, 0, 10, sbc_pre_fetch, "PRE-FETCH (10)", U_RANGE10 },
    { 0x35, 0, 10, sbc_synchronize_cache, "SYNCHRONIZE CACHE (10)", U_RANGE10 },
    { 0x41, 0, 10, sbc_write_same, "WRITE SAME (10)",
      { 0xf8, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04 } },
    { 0x42, 0, 10, sbc_unmap, "UNMAP",
      { 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x04 } },
    { 0x55, 0, 10, spc_mode_select, "MODE SELECT (10)",
      { 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x04 } },
    { 0x5a, 0, 10, spc_mode_sense, "MODE SENSE (10)",
      { 0x18, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0x04 } },
    { 0x88, 0, 16, sbc_read, "READ (16)", U_RW16 },
    { 0x89, 0, 16, sbc_compare_and_write, "COMPARE AND WRITE",
      { 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
        0x00, 0xff, 0x00, 0x04 } },
    { 0x8a, 0, 16, sbc_write, "WRITE (16)", U_RW16 },
    { 0x8b, 0, 16, sbc_orwrite, "ORWRITE (16)", U_RW16 },
    { 0x8e, 0, 16, sbc_write_and_verify, "WRITE AND VERIFY (16)", U_VERIFY16 },
    { 0x8f, 0, 16, sbc_verify, "VERIFY (16)", U_VERIFY16 },
    { 0x90, 0, 16, sbc_pre_fetch, "PRE-FETCH (16)", U_RANGE16 },
    { 0x91, 0, 16, sbc_synchronize_cache, "SYNCHRONIZE CACHE (16)", U_RANGE16 },
    { 0x93, 0, 16, sbc_write_same, "WRITE SAME (16)",
      { 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x04 } },
    { 0x9e, SA_READ_CAPACITY_16, 16, sbc_read_capacity16,
      "READ CAPACITY (16)",
      { 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x04 } },
    { 0x9e, SA_GET_LBA_STATUS, 16, sbc_get_lba_status, "GET LBA STATUS",
      { 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x00, 0x04 } },
    { 0xa3, SA_REPORT_SUPPORTED_OPCODES, 12, spc_report_supported_opcodes,
      "REPORT SUPPORTED OPERATION CODES",
      { 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04 } },
    { 0xa8, 0, 12, sbc_read, "READ (12)", U_RW12 },
    { 0xaa, 0, 12, sbc_write, "WRITE (12)", U_RW12 },
    { 0xae, 0, 12, sbc_write_and_verify, "WRITE AND VERIFY (12)", U_VERIFY12 },
    { 0xaf, 0, 12, sbc_verify, "VERIFY (12)", U_VERIFY12 },
};

_Static_assert(ARRAY_SIZE(opcodes) <= SCSI_MAX_COMMANDS &&
               ARRAY_SIZE(opcodes) < 256,
               "raise SCSI_MAX_COMMANDS");

size_t scsi_opcode_count(void)
{
    return ARRAY_SIZE(opcodes);
}

const struct scsi_opcode *scsi_opcode_at(size_t i)
{
    assert(i < ARRAY_SIZE(opcodes));
    return &opcodes[i];
}

size_t scsi_opcode_index(const struct scsi_opcode *op)
{
    assert(op >= opcodes && op < opcodes + ARRAY_SIZE(opcodes));
    return (size_t)(op - opcodes);
}

/* Opcodes whose commands are told apart by a service action in byte 1. */
bool scsi_opcode_has_sa(uint8_t opcode)
{
    return opcode == 0x9e || opcode == 0xa3;
}

/* Every command looks its opcode up: an index by opcode byte instead of a
 * scan of the table (which cost as much as the rest of a READ's decoding).
 * first_of[op] is 1 + the index of the first entry for op, 0 for none; an
 * opcode's entries are adjacent (the table is in opcode order), so those
 * that differ by service action follow its first. */
static uint8_t first_of[256];
static pthread_once_t first_of_once = PTHREAD_ONCE_INIT;

static void build_first_of(void)
{
    for (size_t i = ARRAY_SIZE(opcodes); i-- > 0;) {
        assert(i == 0 || opcodes[i - 1].opcode <= opcodes[i].opcode);
        first_of[opcodes[i].opcode] = (uint8_t)(i + 1);
    }
}

const struct scsi_opcode *scsi_opcode_find(uint8_t opcode, uint16_t sa)
{
    pthread_once(&first_of_once, build_first_of);
    size_t first = first_of[opcode];
    if (!first)
        return NULL;
    if (!scsi_opcode_has_sa(opcode))
        return &opcodes[first - 1];
    for (size_t i = first - 1; i < ARRAY_SIZE(opcodes) &&
                               opcodes[i].opcode == opcode; i++)
        if (opcodes[i].sa == sa)
            return &opcodes[i];
    return NULL;
}

bool scsi_opcode_known(uint8_t opcode)
{
    pthread_once(&first_of_once, build_first_of);
    return first_of[opcode] != 0;
}

/* Command timeouts descriptor (SPC-5 6.35.4): we give no figures. */
static size_t put_timeouts(uint8_t *p)
{
    memset(p, 0, 12);
    put_be16(p, 0x0a);
    return 12;
}

/* REPORT SUPPORTED OPERATION CODES (SPC-5 6.35). */
int spc_report_supported_opcodes(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    const uint8_t *cdb = cmd->cdb;
    bool rctd = cdb[2] & 0x80;
    unsigned options = cdb[2] & 0x07;
    uint8_t req_op = cdb[3];
    uint16_t req_sa = get_be16(cdb + 4);
    uint32_t alloc_len = get_be32(cdb + 6);
    uint8_t b[4 + ARRAY_SIZE(opcodes) * 20];
    size_t len;

    if (options == 0) {
        /* All commands: an 8-byte descriptor each (+12 with RCTD). */
        len = 4;
        for (size_t i = 0; i < ARRAY_SIZE(opcodes); i++) {
            const struct scsi_opcode *op = &opcodes[i];
            uint8_t *d = b + len;
            memset(d, 0, 8);
            d[0] = op->opcode;
            put_be16(d + 2, op->sa);
            d[5] = (rctd ? 0x02 : 0) |
                   (scsi_opcode_has_sa(op->opcode) ? 0x01 : 0);
            put_be16(d + 6, op->cdb_len);
            len += 8;
            if (rctd)
                len += put_timeouts(b + len);
        }
        put_be32(b, (uint32_t)(len - 4));
        return scsi_data_in(cmd, b, len, alloc_len);
    }

    /* One command.  Option 1 names an opcode without service actions,
     * 2 one with, 3 either (SPC-5 table 239). */
    const struct scsi_opcode *op;
    bool has_sa = scsi_opcode_has_sa(req_op);
    switch (options) {
    case 1:
        if (has_sa)
            return scsi_fail_cdb_field(cmd, 2, 2);
        op = scsi_opcode_find(req_op, 0);
        break;
    case 2:
        if (!has_sa && scsi_opcode_known(req_op))
            return scsi_fail_cdb_field(cmd, 2, 2);
        op = has_sa ? scsi_opcode_find(req_op, req_sa) : NULL;
        break;
    case 3:
        op = scsi_opcode_find(req_op, has_sa ? req_sa : 0);
        break;
    default:
        return scsi_fail_cdb_field(cmd, 2, 2);
    }

    memset(b, 0, sizeof(b));
    if (!op) {
        b[1] = 0x01;                    /* SUPPORT: not supported */
        return scsi_data_in(cmd, b, 4, alloc_len);
    }
    b[1] = (rctd ? 0x80 : 0) | 0x03;    /* CTDP, SUPPORT: as the standard */
    put_be16(b + 2, op->cdb_len);
    b[4] = op->opcode;
    memcpy(b + 5, op->usage, (size_t)op->cdb_len - 1);
    if (has_sa)                         /* the service action goes in its
                                         * own field of the usage data */
        b[5] = (uint8_t)((b[5] & 0xe0) | op->sa);
    len = 4 + op->cdb_len;
    if (rctd)
        len += put_timeouts(b + len);
    return scsi_data_in(cmd, b, len, alloc_len);
}
