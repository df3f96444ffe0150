/* Fuzz test: scsi/ fed random and mutated CDBs with random buffers.
 *
 * Deterministic (seed QLUN_SEED, printed), so a failure reproduces.  Run
 * under ASan/UBSan in CI.  Invariants checked for every command:
 *  - the status is one scsi/ may return; CHECK CONDITION carries
 *    well-formed fixed (70h, 18 bytes) or descriptor (72h) sense;
 *  - data_in_len never exceeds the buffer, and the part of the buffer past
 *    it is zero (no stale data reaches the initiator);
 *  - the image is never asked for a range outside it (image.c asserts);
 *  - an opcode qlun does not implement is INVALID COMMAND OPERATION CODE.
 */
#include <stdlib.h>

#include "common/util.h"
#include "scsi/scsi.h"

#include "check.h"
#include "memimage.h"

static uint64_t state;

static uint64_t rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* Opcodes implemented (and their neighbours get exercised by mutation). */
static const uint8_t known[] = {
    0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x25, 0x28, 0x2a, 0x2e,
    0x2f, 0x34, 0x35, 0x41, 0x42, 0x55, 0x5a, 0x88, 0x89, 0x8a, 0x8b, 0x8e,
    0x8f, 0x90, 0x91, 0x93, 0x9e, 0xa3, 0xa8, 0xaa, 0xae, 0xaf,
};

static bool is_known(uint8_t op)
{
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        if (known[i] == op)
            return true;
    return false;
}

/* A plausible CDB: a known opcode, small LBAs and lengths mostly in range,
 * then a few random bit flips. */
static void make_cdb(uint8_t *cdb, uint64_t nblocks)
{
    memset(cdb, 0, 16);
    switch (rnd() % 4) {
    case 0:     /* pure noise */
        for (int i = 0; i < 16; i++)
            cdb[i] = (uint8_t)rnd();
        return;
    default:
        cdb[0] = known[rnd() % ARRAY_SIZE(known)];
    }
    if (cdb[0] == 0x9e)
        cdb[1] = rnd() % 2 ? 0x10 : 0x12;
    if (cdb[0] == 0xa3)
        cdb[1] = 0x0c;
    uint64_t lba = rnd() % (nblocks + 4);
    uint32_t n = (uint32_t)(rnd() % 64);
    switch (cdb[0] >> 5) {
    case 1:
        put_be32(cdb + 2, (uint32_t)lba);
        put_be16(cdb + 7, (uint16_t)n);
        break;
    case 4:
        put_be64(cdb + 2, lba);
        put_be32(cdb + 10, n);
        if (cdb[0] == 0x89)
            cdb[13] = (uint8_t)(n % 4);
        break;
    case 5:
        put_be32(cdb + 2, (uint32_t)lba);
        put_be32(cdb + 6, n);
        break;
    default:
        cdb[4] = (uint8_t)rnd();
    }
    for (int flips = (int)(rnd() % 3); flips > 0; flips--)
        cdb[1 + rnd() % 15] ^= (uint8_t)(1u << (rnd() % 8));
}

static void fuzz(struct scsi_lun *lun, uint32_t block_size, uint64_t nblocks,
                 int rounds)
{
    static uint8_t buf[70000];
    for (int r = 0; r < rounds; r++) {
        uint8_t cdb[16];
        make_cdb(cdb, nblocks);
        size_t len = rnd() % 4 == 0 ? rnd() % sizeof(buf)
                                    : (rnd() % 65) * block_size;
        len = MIN(len, sizeof(buf));
        /* The buffer is data-out (random) or stale shared memory (0xee). */
        if (rnd() % 2)
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rnd();
        else
            memset(buf, 0xee, len);
        /* Occasionally a valid-looking UNMAP/MODE SELECT header. */
        if (len >= 24 && cdb[0] == 0x42 && rnd() % 2) {
            put_be16(buf, 22);
            put_be16(buf + 2, 16);
            put_be64(buf + 8, rnd() % nblocks);
            put_be32(buf + 16, (uint32_t)(rnd() % 64));
            put_be16(cdb + 7, 24);
        }
        struct iovec iov[3];
        size_t a = len ? rnd() % (len + 1) : 0, b = len - a;
        iov[0] = (struct iovec){ buf, a };
        iov[1] = (struct iovec){ buf + a, b };
        struct scsi_cmd cmd = { .cdb = cdb, .iov = iov, .iovcnt = 2 };
        size_t need = (cdb[0] >> 5) == 0 ? 6 : (cdb[0] >> 5) == 4 ? 16
                    : (cdb[0] >> 5) == 5 ? 12 : 10;
        cmd.cdb_len = rnd() % 16 == 0 ? rnd() % 17 : need;

        int st = scsi_lun_exec(lun, &cmd);
        bool ok_status = st == SCSI_STATUS_GOOD ||
                         st == SCSI_STATUS_CHECK_CONDITION ||
                         st == SCSI_STATUS_BUSY ||
                         st == SCSI_STATUS_TASK_SET_FULL;
        CHECK(ok_status);
        if (st == SCSI_STATUS_CHECK_CONDITION) {
            bool fixed = (cmd.sense[0] & 0x7f) == 0x70 && cmd.sense_len == 18 &&
                         cmd.sense[7] == 10;
            bool desc = cmd.sense[0] == 0x72 && cmd.sense_len >= 8;
            if (!fixed && !desc)
                fprintf(stderr, "bad sense for opcode %02x\n", cdb[0]);
            CHECK(fixed || desc);
            /* (A pending unit attention comes first, rightly.) */
            if (cmd.cdb_len > 0 && !is_known(cdb[0]) &&
                (cmd.sense[2] & 0xf) != 6)
                CHECK_EQ(get_be16(cmd.sense + 12), 0x2000);
        }
        if (!(cmd.data_in_len <= len))
            fprintf(stderr, "opcode %02x: data_in_len %zu > buffer %zu\n",
                    cdb[0], cmd.data_in_len, len);
        CHECK(cmd.data_in_len <= len);
        /* Commands that return data (data_in_len > 0) leave no stale bytes. */
        if (st == SCSI_STATUS_GOOD && cmd.data_in_len > 0) {
            bool clean = true;
            for (size_t i = cmd.data_in_len; i < len; i++)
                clean &= buf[i] == 0;
            if (!clean)
                fprintf(stderr, "opcode %02x: stale bytes after data-in\n",
                        cdb[0]);
            CHECK(clean);
        }
    }
}

int main(void)
{
    const char *seed = getenv("QLUN_SEED");
    state = seed ? strtoull(seed, NULL, 0) : 0x9e3779b97f4a7c15ull;
    if (!state)
        state = 1;
    printf("seed %llu\n", (unsigned long long)state);

    static const uint32_t sizes[] = { 512, 4096 };
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        struct memimage *m = memimage_new_thin(4 << 20, 65536);
        struct scsi_lun *lun;
        struct scsi_lun_config cfg = {
            .img = &m->img, .block_size = sizes[i],
            .num_blocks = (4 << 20) / sizes[i], .max_xfer_blocks = 128,
            .serial = "fuzz", .write_cache = true, .soft_threshold = 1 << 20,
        };
        if (scsi_lun_new(&cfg, &lun) < 0)
            return 1;
        fuzz(lun, sizes[i], cfg.num_blocks, 50000);
        scsi_lun_free(lun);
        image_close(&m->img);
    }
    /* Failed commands count too: a checked invariant per command. */
    return check_summary("test_cdb_fuzz");
}
