/* qlun — a LUN: configuration, and dispatch of CDBs to command handlers. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* SCSI operation codes we implement. */
enum {
    OP_TEST_UNIT_READY = 0x00,
    OP_REQUEST_SENSE = 0x03,
    OP_READ_6 = 0x08,
    OP_WRITE_6 = 0x0a,
    OP_INQUIRY = 0x12,
    OP_MODE_SENSE_6 = 0x1a,
    OP_READ_CAPACITY_10 = 0x25,
    OP_READ_10 = 0x28,
    OP_WRITE_10 = 0x2a,
    OP_SYNCHRONIZE_CACHE_10 = 0x35,
    OP_MODE_SENSE_10 = 0x5a,
    OP_READ_16 = 0x88,
    OP_WRITE_16 = 0x8a,
    OP_SYNCHRONIZE_CACHE_16 = 0x91,
    OP_SERVICE_ACTION_IN_16 = 0x9e,
    OP_READ_12 = 0xa8,
    OP_WRITE_12 = 0xaa,
};

struct scsi_opcode {
    uint8_t opcode;
    scsi_exec_fn exec;
};

static const struct scsi_opcode opcodes[] = {
    { OP_TEST_UNIT_READY, spc_test_unit_ready },
    { OP_REQUEST_SENSE, spc_request_sense },
    { OP_INQUIRY, spc_inquiry },
    { OP_MODE_SENSE_6, spc_mode_sense },
    { OP_MODE_SENSE_10, spc_mode_sense },
    { OP_READ_CAPACITY_10, sbc_read_capacity10 },
    { OP_SERVICE_ACTION_IN_16, sbc_service_action_in16 },
    { OP_READ_6, sbc_read },
    { OP_READ_10, sbc_read },
    { OP_READ_12, sbc_read },
    { OP_READ_16, sbc_read },
    { OP_WRITE_6, sbc_write },
    { OP_WRITE_10, sbc_write },
    { OP_WRITE_12, sbc_write },
    { OP_WRITE_16, sbc_write },
    { OP_SYNCHRONIZE_CACHE_10, sbc_synchronize_cache },
    { OP_SYNCHRONIZE_CACHE_16, sbc_synchronize_cache },
};

/* CDB length from the opcode's group code (SPC-5 4.2.5.1).  0: we do not
 * implement any opcode of that group. */
static size_t cdb_length(uint8_t opcode)
{
    switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
    }
}

/* FNV-1a: a stable 64-bit digest of the serial for the NAA designator. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

int scsi_lun_new(const struct scsi_lun_config *cfg, struct scsi_lun **out)
{
    assert(cfg && cfg->img && out);
    assert(cfg->block_size == 512 || cfg->block_size == 4096);
    assert(cfg->num_blocks > 0);
    assert(cfg->num_blocks <= cfg->img->size / cfg->block_size);
    assert(cfg->serial && strlen(cfg->serial) <= 64);

    struct scsi_lun *lun = calloc(1, sizeof(*lun));
    if (!lun)
        return -ENOMEM;
    lun->img = cfg->img;
    lun->block_size = cfg->block_size;
    lun->block_shift = (unsigned)__builtin_ctz(cfg->block_size);
    lun->num_blocks = cfg->num_blocks;
    lun->max_xfer_blocks = cfg->max_xfer_blocks ? cfg->max_xfer_blocks : 2048;
    lun->read_only = cfg->read_only || cfg->img->info.read_only;
    atomic_init(&lun->write_cache, cfg->write_cache);
    strcpy(lun->serial, cfg->serial);
    /* NAA 3 = locally assigned: 60 bits that we choose, here from the
     * serial, so the identifier is stable for as long as the serial is. */
    lun->naa_id = 0x3ull << 60 | (fnv1a64(cfg->serial) & ((1ull << 60) - 1));
    *out = lun;
    return 0;
}

void scsi_lun_free(struct scsi_lun *lun)
{
    free(lun);
}

int scsi_data_in(struct scsi_cmd *cmd, const void *buf, size_t len,
                 size_t alloc_len)
{
    size_t n = MIN(len, alloc_len);
    cmd->data_in_len = iov_from_buf(cmd->iov, cmd->iovcnt, 0, buf, n);
    return SCSI_STATUS_GOOD;
}

int scsi_lun_exec(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    assert(lun && cmd && cmd->cdb);
    cmd->sense_len = 0;
    cmd->data_in_len = 0;
    if (cmd->cdb_len == 0)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPCODE);

    uint8_t opcode = cmd->cdb[0];
    for (size_t i = 0; i < ARRAY_SIZE(opcodes); i++) {
        if (opcodes[i].opcode != opcode)
            continue;
        size_t need = cdb_length(opcode);
        assert(need > 0);
        if (cmd->cdb_len < need)
            return scsi_fail_cdb_field(cmd, 0, -1);
        /* CONTROL byte: NACA (bit 2) asks for ACA, which we do not offer. */
        if (cmd->cdb[need - 1] & 0x04)
            return scsi_fail_cdb_field(cmd, (unsigned)need - 1, 2);
        return opcodes[i].exec(lun, cmd);
    }
    return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPCODE);
}
