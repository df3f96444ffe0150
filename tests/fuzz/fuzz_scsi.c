/* libFuzzer target: scsi/ (CDB decoding, parameter lists, data-in) over an
 * in-memory image (tests/unit/memimage.h).
 *
 * Input: one configuration byte, then up to MAX_CMDS commands, each
 *     cdb_len (1 byte, taken mod 33), the CDB (cdb_len bytes),
 *     buffer length (2 bytes, big-endian: below F000h its low 13 bits,
 *     else (value - F000h) * 16, up to 64 KiB), flags (1 byte),
 *     data-out bytes (as many as the buffer length, or what is left of
 *     the input; the rest of the buffer is 0xee, "stale" shared memory).
 * Configuration bits: 0 block size 4096 (else 512), 1 thin image, 2
 * read-only LUN, 3 write cache on, 4 soft threshold, 5 LUN one block
 * smaller than the image, 6 max_xfer_blocks 8 (else 128), 7 statistics.
 * Command flags: bits 0-2 inject an image error (none, EIO, ENOSPC, EROFS,
 * EUCLEAN, ENOMEM, EBUSY, EINVAL) for that command, bits 3-7 pick where
 * the buffer is split into two iovecs.
 *
 * The CDB and the buffer are heap blocks of their exact size, so ASan sees
 * any access past them.  Invariants, for every command:
 *  - the status is GOOD, CHECK CONDITION, BUSY or TASK SET FULL;
 *  - GOOD has no sense; CHECK CONDITION has well-formed sense: fixed (70h
 *    or F0h, 18 bytes, additional length 10) or descriptor (72h, length
 *    8 + additional length), and a non-zero sense key;
 *  - an opcode qlun does not implement gets ILLEGAL REQUEST, INVALID
 *    COMMAND OPERATION CODE (unless a unit attention comes first);
 *  - data_in_len never exceeds the buffer; after GOOD with data-in, the
 *    rest of the buffer is zero (no stale bytes reach the initiator);
 *  - a read-only LUN never changes the image;
 *  - nothing past the LUN's last block is ever written (sentinel bytes);
 *  - the image is never asked for a range outside it (image.c asserts).
 * Configuration bit 7 asks, at the end, for the statistics JSON in a
 * buffer of (input size mod 128) * 16 bytes (snprintf semantics).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "scsi/scsi.h"

#include "memimage.h"

#define IMAGE_BYTES (64u << 10) /* small: it is wiped for every input */
#define MAX_CMDS 16
#define SENTINEL 0xa5

#define FAIL_IF(cond)                                                       \
    do {                                                                    \
        if (cond) {                                                         \
            fprintf(stderr, "fuzz_scsi: opcode %02x: invariant broken: %s\n",\
                    opcode, #cond);                                         \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* What scsi/ implements (scsi/opcodes.c); anything else must be refused
 * as an unknown opcode. */
static bool implemented(uint8_t op)
{
    static const uint8_t known[] = {
        0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x25, 0x28, 0x2a,
        0x2e, 0x2f, 0x34, 0x35, 0x41, 0x42, 0x55, 0x5a, 0x88, 0x89, 0x8a,
        0x8b, 0x8e, 0x8f, 0x90, 0x91, 0x93, 0x9e, 0xa3, 0xa8, 0xaa, 0xae,
        0xaf,
    };
    return memchr(known, op, sizeof(known)) != NULL;
}

static const int errnos[8] = { 0, -EIO, -ENOSPC, -EROFS, -EUCLEAN, -ENOMEM,
                               -EBUSY, -EINVAL };

struct input {
    const uint8_t *p;
    size_t left;
};

static bool take(struct input *in, void *out, size_t n)
{
    if (in->left < n)
        return false;
    memcpy(out, in->p, n);
    in->p += n;
    in->left -= n;
    return true;
}

static void check_sense(const struct scsi_cmd *cmd, uint8_t opcode)
{
    const uint8_t *s = cmd->sense;
    FAIL_IF(cmd->sense_len < 8 || cmd->sense_len > SCSI_SENSE_MAX);
    bool fixed = (s[0] & 0x7f) == 0x70;
    bool desc = s[0] == 0x72;
    FAIL_IF(!fixed && !desc);
    if (fixed) {
        FAIL_IF(cmd->sense_len != 18 || s[7] != 10);
        FAIL_IF((s[2] & 0xf) == 0);
    } else {
        FAIL_IF(cmd->sense_len != 8u + s[7]);
        FAIL_IF((s[1] & 0xf) == 0);
    }
}

static unsigned sense_key(const struct scsi_cmd *cmd)
{
    return cmd->sense[0] == 0x72 ? cmd->sense[1] & 0xf : cmd->sense[2] & 0xf;
}

static unsigned sense_asc(const struct scsi_cmd *cmd)
{
    return cmd->sense[0] == 0x72 ? get_be16(cmd->sense + 2)
                                 : get_be16(cmd->sense + 12);
}

/* Whether n bytes at p are all v (without a compare per byte, which the
 * coverage instrumentation would make slow). */
static bool all_equal(const uint8_t *p, uint8_t v, size_t n)
{
    return n == 0 || (p[0] == v && memcmp(p, p + 1, n - 1) == 0);
}

/* Counts every change the image saw (the sentinel is one too). */
static uint64_t changes(const struct memimage *m)
{
    return m->data_bytes_written + (uint64_t)m->zeroes +
           (uint64_t)m->zeroes_unmap + (uint64_t)m->discards + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t conf = 0, opcode = 0;
    if (!take(&in, &conf, 1))
        return 0;

    /* Two images made once and wiped for each input: a fresh megabyte
     * per input costs more than the commands. */
    static struct memimage *images[2];
    if (!images[0]) {
        images[0] = memimage_new(IMAGE_BYTES);
        images[1] = memimage_new_thin(IMAGE_BYTES, 4096);
    }
    static uint64_t changes_seen[2];
    struct memimage *m = images[conf & 2 ? 1 : 0];
    uint64_t *seen = &changes_seen[conf & 2 ? 1 : 0];
    if (changes(m) != *seen) {
        memset(m->data, 0, IMAGE_BYTES);
        memset(m->kind, IMAGE_EXTENT_UNALLOCATED, IMAGE_BYTES / MEM_UNIT + 1);
    }
    m->fail_errno = 0;

    uint32_t bs = conf & 1 ? 4096 : 512;
    uint64_t nblocks = IMAGE_BYTES / bs - (conf & 32 ? 1 : 0);
    uint64_t lun_end = nblocks * bs;
    memset(m->data + lun_end, SENTINEL, IMAGE_BYTES - lun_end);
    struct scsi_lun_config cfg = {
        .img = &m->img,
        .block_size = bs,
        .num_blocks = nblocks,
        .max_xfer_blocks = conf & 64 ? 8 : 128,
        .serial = "fuzz0123",
        .read_only = conf & 4,
        .write_cache = conf & 8,
        .soft_threshold = conf & 16 ? 16 * 1024 : 0,
    };
    struct scsi_lun *lun;
    if (scsi_lun_new(&cfg, &lun) < 0)
        abort();

    for (int c = 0; c < MAX_CMDS; c++) {
        uint8_t cdb_len, lenb[2], flags;
        if (!take(&in, &cdb_len, 1))
            break;
        cdb_len %= 33;
        uint8_t *cdb = malloc(cdb_len ? cdb_len : 1);
        if (!take(&in, cdb, cdb_len) || !take(&in, lenb, 2) ||
            !take(&in, &flags, 1)) {
            free(cdb);
            break;
        }
        opcode = cdb_len ? cdb[0] : 0;
        /* Mostly small buffers (they are filled for every command). */
        size_t len = get_be16(lenb);
        len = len < 0xf000 ? len & 0x1fff : (len - 0xf000) * 16;
        uint8_t *buf = malloc(len ? len : 1);
        size_t given = MIN(len, in.left);
        take(&in, buf, given);
        memset(buf + given, 0xee, len - given);

        size_t split = len ? ((size_t)(flags >> 3) * len) / 31 : 0;
        struct iovec iov[2] = { { buf, split }, { buf + split, len - split } };
        struct scsi_cmd cmd = {
            .cdb = cdb, .cdb_len = cdb_len, .iov = iov, .iovcnt = 2,
        };
        m->fail_errno = errnos[flags & 7];
        uint64_t writes = m->data_bytes_written;
        int zeroes = m->zeroes, unmaps = m->zeroes_unmap,
            discards = m->discards;

        int st = scsi_lun_exec(lun, &cmd);

        FAIL_IF(st != SCSI_STATUS_GOOD && st != SCSI_STATUS_CHECK_CONDITION &&
                st != SCSI_STATUS_BUSY && st != SCSI_STATUS_TASK_SET_FULL);
        if (st == SCSI_STATUS_GOOD)
            FAIL_IF(cmd.sense_len != 0);
        if (st == SCSI_STATUS_CHECK_CONDITION) {
            check_sense(&cmd, opcode);
            if (cdb_len && !implemented(opcode) && sense_key(&cmd) != 6)
                FAIL_IF(sense_key(&cmd) != 5 || sense_asc(&cmd) != 0x2000);
        }
        FAIL_IF(cmd.data_in_len > len);
        if (st == SCSI_STATUS_GOOD && cmd.data_in_len > 0)
            FAIL_IF(!all_equal(buf + cmd.data_in_len, 0,
                               len - cmd.data_in_len));
        if (cfg.read_only)
            FAIL_IF(m->data_bytes_written != writes || m->zeroes != zeroes ||
                    m->zeroes_unmap != unmaps || m->discards != discards);
        FAIL_IF(!all_equal(m->data + lun_end, SENTINEL,
                           IMAGE_BYTES - lun_end));
        free(buf);
        free(cdb);
    }

    if (conf & 128) {
        size_t json_size = size % 128 * 16;
        char *json = malloc(json_size ? json_size : 1);
        int n = scsi_lun_stats_json(lun, json, json_size);
        FAIL_IF(n < 0);
        if (json_size)
            FAIL_IF(strlen(json) != MIN((size_t)n, json_size - 1));
        free(json);
    }
    scsi_lun_free(lun);
    *seen = changes(m);
    if (conf & 32)          /* the sentinel: wipe next time */
        (*seen)--;
    return 0;
}
