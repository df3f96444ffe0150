/* Unit tests: the thin LUN and the commands that compare, through scsi/
 * with CDBs over an in-memory thin image. */
#include <errno.h>
#include <pthread.h>

#include "common/util.h"
#include "scsi/scsi.h"

#include "memimage.h"
#include "scsi_harness.h"

#define BS 512u
#define BLOCKS 16384u           /* 8 MiB */
#define CLUSTER 65536u


static struct scsi_lun *make_lun(struct memimage *m, uint64_t threshold)
{
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img, .block_size = BS, .num_blocks = m->img.size / BS,
        .max_xfer_blocks = 1024, .serial = "thin", .write_cache = true,
        .soft_threshold = threshold,
    };
    if (scsi_lun_new(&cfg, &lun) < 0)
        abort();
    return lun;
}

static void ws16(uint8_t *c, uint8_t flags, uint64_t lba, uint32_t n)
{
    memset(c, 0, 16);
    c[0] = 0x93;
    c[1] = flags;
    put_be64(c + 2, lba);
    put_be32(c + 10, n);
}

static void write10(struct scsi_lun *lun, uint32_t lba, uint16_t n, uint8_t v)
{
    uint8_t c[10] = { 0x2a };
    static uint8_t buf[1024 * BS];
    memset(buf, v, (size_t)n * BS);
    put_be32(c + 2, lba);
    put_be16(c + 7, n);
    int st = run(lun, c, 10, buf, (size_t)n * BS);
    if (st != SCSI_STATUS_GOOD)
        fprintf(stderr, "write10 lba %u: sense %x/%04x\n", lba, sense_key(), sense_asc());
    CHECK_EQ(st, SCSI_STATUS_GOOD);
}

static bool range_is(struct memimage *m, uint64_t lba, uint64_t n, uint8_t v)
{
    for (uint64_t i = lba * BS; i < (lba + n) * BS; i++)
        if (m->data[i] != v)
            return false;
    return true;
}

/* What Linux reads to choose provisioning_mode=unmap and
 * zeroing_mode=writesame_16_unmap. */
static void test_advertised(struct scsi_lun *lun)
{
    uint8_t c[16] = { 0x9e, 0x10 }, b[64];
    put_be32(c + 10, 32);
    CHECK_EQ(run(lun, c, 16, b, 32), SCSI_STATUS_GOOD);
    CHECK(b[14] & 0x80);                       /* LBPME */
    CHECK(b[14] & 0x40);                       /* LBPRZ */

    uint8_t inq[6] = { 0x12, 1, 0xb2, 0, 64, 0 };
    CHECK_EQ(run(lun, inq, 6, b, 64), SCSI_STATUS_GOOD);
    CHECK(b[5] & 0x80);                        /* LBPU */
    CHECK(b[5] & 0x40);                        /* LBPWS */
    CHECK(b[5] & 0x20);                        /* LBPWS10 */
    CHECK_EQ((b[5] >> 2) & 7, 1);              /* LBPRZ */
    CHECK_EQ(b[5] & 0x02, 0);                  /* no ANC_SUP */
    CHECK_EQ(b[6] & 7, 2);                     /* thin */

    inq[2] = 0xb0;
    CHECK_EQ(run(lun, inq, 6, b, 64), SCSI_STATUS_GOOD);
    CHECK_EQ(b[4] & 1, 1);                     /* WSNZ */
    CHECK(b[5] > 0);                           /* COMPARE AND WRITE length */
    CHECK(get_be32(b + 20) > 0);               /* MAX UNMAP LBA COUNT */
    /* ... but not more than libiscsi's Inquiry.BlockLimits finds sane */
    CHECK(get_be32(b + 20) <= 1024 * 1024);
    CHECK(get_be32(b + 24) > 0);               /* MAX UNMAP DESCRIPTORS */
    CHECK_EQ(get_be32(b + 28), CLUSTER / BS);  /* OPTIMAL UNMAP GRANULARITY */
    CHECK_EQ(get_be32(b + 32), 0x80000000u);   /* UGAVALID, alignment 0 */
    CHECK(get_be64(b + 36) > 0);               /* MAX WRITE SAME LENGTH */
}

static void test_write_same(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16], block[BS];

    /* Zeros: the image's zero operation, no data written. */
    write10(lun, 0, 256, 0xaa);
    uint64_t data_before = m->data_bytes_written;
    memset(block, 0, BS);
    ws16(c, 0, 0, 128);
    CHECK_EQ(run(lun, c, 16, block, BS), SCSI_STATUS_GOOD);
    CHECK_EQ(m->data_bytes_written, data_before);
    CHECK(range_is(m, 0, 128, 0));
    CHECK(range_is(m, 128, 128, 0xaa));
    CHECK_EQ(m->zeroes, 1);
    /* With UNMAP: zero allowed to deallocate. */
    ws16(c, 0x08, 128, 64);
    CHECK_EQ(run(lun, c, 16, block, BS), SCSI_STATUS_GOOD);
    CHECK_EQ(m->zeroes_unmap, 1);
    CHECK(range_is(m, 128, 64, 0));
    /* NDOB: no data-out buffer at all. */
    write10(lun, 300, 8, 0x55);
    ws16(c, 0x09, 300, 8);
    CHECK_EQ(run(lun, c, 16, NULL, 0), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 300, 8, 0));
    CHECK_EQ(m->data_bytes_written, data_before + 8 * BS);

    /* A pattern is replicated, in batches, across more than one batch. */
    for (unsigned i = 0; i < BS; i++)
        block[i] = (uint8_t)(i ^ 0x5a);
    ws16(c, 0, 1000, 3000);
    CHECK_EQ(run(lun, c, 16, block, BS), SCSI_STATUS_GOOD);
    bool same = true;
    for (unsigned k = 1000; k < 4000; k++)
        same &= memcmp(m->data + (size_t)k * BS, block, BS) == 0;
    CHECK(same);
    CHECK(range_is(m, 4000, 1, 0));
    /* UNMAP bit with a non-zero pattern: written, not unmapped. */
    ws16(c, 0x08, 4000, 2);
    CHECK_EQ(run(lun, c, 16, block, BS), SCSI_STATUS_GOOD);
    CHECK(memcmp(m->data + 4001 * BS, block, BS) == 0);

    /* WRITE SAME (10). */
    uint8_t c10[10] = { 0x41, 0x08 };
    memset(block, 0, BS);
    put_be32(c10 + 2, 1000);
    put_be16(c10 + 7, 16);
    CHECK_EQ(run(lun, c10, 10, block, BS), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 1000, 16, 0));

    /* Errors: WSNZ, range, ANCHOR, length limit, WRPROTECT. */
    ws16(c, 0, 0, 0);
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2400);
    ws16(c, 0, BLOCKS - 1, 2);
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2100);
    ws16(c, 0, UINT64_MAX, 1);
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2100);
    ws16(c, 0x18, 0, 8);                       /* ANCHOR + UNMAP */
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2400);
    ws16(c, 0x10, 0, 8);                       /* ANCHOR alone */
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2400);
    ws16(c, 0x20, 0, 8);
    CHECK_SENSE(run(lun, c, 16, block, BS), 5, 0x2400);
}

/* WRITE SAME whose data-out buffer is not one block (or, with NDOB, not
 * empty): ILLEGAL REQUEST, nothing written (libiscsi
 * WriteSame10.InvalidDataOutSize, WriteSame16.InvalidDataOutSize). */
static void test_write_same_data_out_size(struct scsi_lun *lun,
                                          struct memimage *m)
{
    uint8_t c[16], blocks[2 * BS];
    uint8_t c10[10] = { 0x41, 0x08 };
    write10(lun, 5000, 4, 0x77);
    memset(blocks, 0xa6, sizeof(blocks));
    ws16(c, 0x08, 5000, 1);
    CHECK_SENSE(run(lun, c, 16, blocks, BS / 2), 5, 0x2400);
    CHECK_SENSE(run(lun, c, 16, blocks, 2 * BS), 5, 0x2400);
    put_be32(c10 + 2, 5001);
    put_be16(c10 + 7, 1);
    CHECK_SENSE(run(lun, c10, 10, blocks, BS / 2), 5, 0x2400);
    CHECK_SENSE(run(lun, c10, 10, blocks, 2 * BS), 5, 0x2400);
    ws16(c, 0x09, 5002, 1);                     /* NDOB with data */
    CHECK_SENSE(run(lun, c, 16, blocks, BS), 5, 0x2400);
    CHECK(range_is(m, 5000, 4, 0x77));
    /* One block exactly works. */
    ws16(c, 0, 5000, 2);
    CHECK_EQ(run(lun, c, 16, blocks, BS), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 5000, 2, 0xa6));
    CHECK(range_is(m, 5002, 2, 0x77));
}

static void unmap_cdb(uint8_t *c, uint16_t list_len)
{
    memset(c, 0, 10);
    c[0] = 0x42;
    put_be16(c + 7, list_len);
}

static void test_unmap(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[10], p[8 + 16 * 3];

    write10(lun, 2000, 512, 0x77);
    int discards = m->discards;
    /* Two ranges in one list. */
    memset(p, 0, sizeof(p));
    put_be16(p, 6 + 32);
    put_be16(p + 2, 32);
    put_be64(p + 8, 2000);
    put_be32(p + 16, 128);
    put_be64(p + 24, 2256);
    put_be32(p + 32, 128);
    unmap_cdb(c, 8 + 32);
    CHECK_EQ(run(lun, c, 10, p, 8 + 32), SCSI_STATUS_GOOD);
    CHECK_EQ(m->discards, discards + 2);
    CHECK(range_is(m, 2000, 128, 0));
    CHECK(range_is(m, 2128, 128, 0x77));
    CHECK(range_is(m, 2256, 128, 0));

    /* Nothing changes if any descriptor is bad: the second is out of
     * range, so the first must not have been applied. */
    put_be64(p + 8, 2128);
    put_be32(p + 16, 8);
    put_be64(p + 24, BLOCKS - 4);
    put_be32(p + 32, 8);
    CHECK_SENSE(run(lun, c, 10, p, 8 + 32), 5, 0x2100);
    CHECK(range_is(m, 2128, 8, 0x77));

    /* Lengths that disagree. */
    put_be64(p + 24, 2300);
    put_be16(p + 2, 24);                       /* not a multiple of 16 */
    CHECK_SENSE(run(lun, c, 10, p, 8 + 32), 5, 0x1a00);
    put_be16(p + 2, 48);                       /* more than the list */
    CHECK_SENSE(run(lun, c, 10, p, 8 + 32), 5, 0x1a00);
    unmap_cdb(c, 4);                           /* list shorter than header */
    CHECK_SENSE(run(lun, c, 10, p, 4), 5, 0x1a00);
    /* An empty list, and a header with no descriptors, do nothing. */
    unmap_cdb(c, 0);
    CHECK_EQ(run(lun, c, 10, NULL, 0), SCSI_STATUS_GOOD);
    put_be16(p, 6);
    put_be16(p + 2, 0);
    unmap_cdb(c, 8);
    CHECK_EQ(run(lun, c, 10, p, 8), SCSI_STATUS_GOOD);
    /* Too many blocks in total. */
    put_be16(p, 6 + 16);
    put_be16(p + 2, 16);
    put_be64(p + 8, 0);
    put_be32(p + 16, 0x400001);
    unmap_cdb(c, 24);
    struct memimage *big = memimage_new_thin(0x800000ull * BS, CLUSTER);
    struct scsi_lun *blun = make_lun(big, 0);
    CHECK_SENSE(run(blun, c, 10, p, 24), 5, 0x2600);
    scsi_lun_free(blun);
    image_close(&big->img);
    /* ANCHOR. */
    unmap_cdb(c, 24);
    c[1] = 1;
    CHECK_SENSE(run(lun, c, 10, p, 24), 5, 0x2400);
}

static void test_get_lba_status(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16] = { 0x9e, 0x12 }, b[8 + 16 * 8];

    /* Lay out: [5000,5100) data, [5100,5200) unmapped, then data. */
    write10(lun, 5000, 300, 0x31);
    ws16(c, 0x08, 5100, 100);
    uint8_t zero[BS] = { 0 };
    CHECK_EQ(run(lun, c, 16, zero, BS), SCSI_STATUS_GOOD);

    memset(c, 0, 16);
    c[0] = 0x9e;
    c[1] = 0x12;
    put_be64(c + 2, 5000);
    put_be32(c + 10, sizeof(b));
    CHECK_EQ(run(lun, c, 16, b, sizeof(b)), SCSI_STATUS_GOOD);
    size_t nd = (get_be32(b) - 4) / 16;
    CHECK(nd >= 3);
    CHECK_EQ(get_be64(b + 8), 5000);
    CHECK_EQ(get_be32(b + 16), 100);
    CHECK_EQ(b[20], 0);                        /* mapped */
    CHECK_EQ(get_be64(b + 24), 5100);
    CHECK_EQ(get_be32(b + 32), 100);
    CHECK_EQ(b[36], 1);                        /* deallocated */
    CHECK_EQ(get_be64(b + 40), 5200);
    CHECK_EQ(b[52], 0);

    /* A short allocation length still gets a well-formed header. */
    put_be32(c + 10, 24);
    CHECK_EQ(run(lun, c, 16, b, 24), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 24);
    CHECK_EQ(get_be32(b), 20);

    put_be64(c + 2, BLOCKS);
    CHECK_SENSE(run(lun, c, 16, b, sizeof(b)), 5, 0x2100);
    (void)m;
}

static void test_compare_and_write(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16] = { 0x89 }, buf[4 * BS];
    write10(lun, 6000, 2, 0x11);
    put_be64(c + 2, 6000);
    c[13] = 2;
    memset(buf, 0x11, 2 * BS);
    memset(buf + 2 * BS, 0x22, 2 * BS);
    CHECK_EQ(run(lun, c, 16, buf, sizeof(buf)), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 6000, 2, 0x22));

    /* Miscompare: INFORMATION = offset of the first differing byte. */
    memset(buf, 0x22, 2 * BS);
    buf[BS + 7] = 0x99;
    memset(buf + 2 * BS, 0x33, 2 * BS);
    CHECK_SENSE(run(lun, c, 16, buf, sizeof(buf)), 0xe, 0x1d00);
    CHECK(last.sense[0] & 0x80);
    CHECK_EQ(get_be32(last.sense + 3), BS + 7);
    CHECK(range_is(m, 6000, 2, 0x22));         /* nothing written */

    c[13] = 0;
    CHECK_EQ(run(lun, c, 16, NULL, 0), SCSI_STATUS_GOOD);
    c[13] = 255;                               /* over the maximum */
    CHECK_SENSE(run(lun, c, 16, buf, sizeof(buf)), 5, 0x2400);
    c[13] = 1;
    put_be64(c + 2, BLOCKS);
    CHECK_SENSE(run(lun, c, 16, buf, 2 * BS), 5, 0x2100);
}

/* COMPARE AND WRITE whose data-out buffer is not exactly 2 x NUMBER OF
 * LOGICAL BLOCKS: INVALID FIELD IN CDB, nothing compared or written
 * (libiscsi CompareAndWrite.Simple/Miscompare send 256 blocks, which the
 * one-byte field carries as 0; CompareAndWrite.InvalidDataOutSize). */
static void test_caw_data_out_size(struct scsi_lun *lun, struct memimage *m)
{
    static uint8_t buf[512 * BS];
    uint8_t c[16] = { 0x89 };
    write10(lun, 6100, 4, 0xa6);
    memset(buf, 0xa6, sizeof(buf));
    put_be64(c + 2, 6100);
    c[13] = 1;                                 /* 1 block, 4 sent */
    CHECK_SENSE(run(lun, c, 16, buf, 4 * BS), 5, 0x2400);
    CHECK_EQ(get_be16(last.sense + 16), 13);   /* field pointer: byte 13 */
    c[13] = 3;                                 /* 3 blocks, 4 sent */
    CHECK_SENSE(run(lun, c, 16, buf, 4 * BS), 5, 0x2400);
    c[13] = 0;                                 /* 256 blocks sent as 0 */
    CHECK_SENSE(run(lun, c, 16, buf, 512 * BS), 5, 0x2400);
    CHECK(range_is(m, 6100, 4, 0xa6));
    /* 0 blocks and no data: nothing to do, GOOD. */
    CHECK_EQ(run(lun, c, 16, NULL, 0), SCSI_STATUS_GOOD);
    /* The exact size works. */
    c[13] = 2;
    memset(buf + 2 * BS, 0xb7, 2 * BS);
    CHECK_EQ(run(lun, c, 16, buf, 4 * BS), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 6100, 2, 0xb7));
    CHECK(range_is(m, 6102, 2, 0xa6));
}

/* ORWRITE (16): old OR new, atomically; protection, range, zero-length
 * (libiscsi OrWrite.Simple/Verify/BeyondEol/ZeroBlocks/Protect/DpoFua). */
static void test_orwrite(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16] = { 0x8b }, buf[4 * BS];
    write10(lun, 9100, 4, 0x0f);
    memset(buf, 0xa0, sizeof(buf));
    put_be64(c + 2, 9101);
    put_be32(c + 10, 2);
    CHECK_EQ(run(lun, c, 16, buf, 2 * BS), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 9100, 1, 0x0f));
    CHECK(range_is(m, 9101, 2, 0xaf));
    CHECK(range_is(m, 9103, 1, 0x0f));
    /* DPO and FUA are accepted (MODE SENSE says DPOFUA); FUA writes through. */
    c[1] = 0x18;
    CHECK_EQ(run(lun, c, 16, buf, 2 * BS), SCSI_STATUS_GOOD);
    CHECK_EQ(m->unflushed, 0);                  /* durable */
    /* ORPROTECT: no protection information here. */
    for (uint8_t p = 1; p < 8; p++) {
        c[1] = (uint8_t)(p << 5);
        CHECK_SENSE(run(lun, c, 16, buf, 2 * BS), 5, 0x2400);
    }
    c[1] = 0;
    /* Zero blocks: GOOD at LBA 0, LBA OUT OF RANGE past the end. */
    put_be32(c + 10, 0);
    put_be64(c + 2, 0);
    CHECK_EQ(run(lun, c, 16, NULL, 0), SCSI_STATUS_GOOD);
    put_be64(c + 2, BLOCKS + 1);
    CHECK_SENSE(run(lun, c, 16, NULL, 0), 5, 0x2100);
    put_be64(c + 2, UINT64_MAX);
    CHECK_SENSE(run(lun, c, 16, NULL, 0), 5, 0x2100);
    /* Crossing the end. */
    put_be64(c + 2, BLOCKS - 1);
    put_be32(c + 10, 2);
    CHECK_SENSE(run(lun, c, 16, buf, 2 * BS), 5, 0x2100);
    /* The last block. */
    put_be32(c + 10, 1);
    CHECK_EQ(run(lun, c, 16, buf, BS), SCSI_STATUS_GOOD);

    /* REPORT SUPPORTED OPERATION CODES lists it, with DPO and FUA in its
     * CDB usage data. */
    uint8_t r[12] = { 0xa3, 0x0c, 0x01, 0x8b }, b[64];
    put_be32(r + 6, sizeof(b));
    CHECK_EQ(run(lun, r, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[1] & 7, 3);
    CHECK_EQ(get_be16(b + 2), 16);
    CHECK_EQ(b[5] & 0x18, 0x18);
}

/* VERIFY (12) and WRITE AND VERIFY (12) behave as their 10- and 16-byte
 * forms (libiscsi Verify12.*, WriteVerify12.*). */
static void test_verify12(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t v[12] = { 0xaf }, wv[12] = { 0xae }, buf[4 * BS];
    memset(buf, 0x5c, sizeof(buf));
    put_be32(wv + 2, 9200);
    put_be32(wv + 6, 4);
    wv[1] = 0x02;                              /* BYTCHK 1 */
    CHECK_EQ(run(lun, wv, 12, buf, sizeof(buf)), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 9200, 4, 0x5c));
    wv[1] = 0xe0;                              /* WRPROTECT */
    CHECK_SENSE(run(lun, wv, 12, buf, sizeof(buf)), 5, 0x2400);
    wv[1] = 0;
    put_be32(wv + 2, BLOCKS - 2);
    CHECK_SENSE(run(lun, wv, 12, buf, sizeof(buf)), 5, 0x2100);
    put_be32(wv + 6, 0);                       /* zero blocks */
    put_be32(wv + 2, 0);
    CHECK_EQ(run(lun, wv, 12, NULL, 0), SCSI_STATUS_GOOD);

    put_be32(v + 2, 9200);
    put_be32(v + 6, 4);
    CHECK_EQ(run(lun, v, 12, NULL, 0), SCSI_STATUS_GOOD);  /* BYTCHK 0 */
    v[1] = 0x02;
    CHECK_EQ(run(lun, v, 12, buf, sizeof(buf)), SCSI_STATUS_GOOD);
    buf[2 * BS + 9] ^= 1;
    CHECK_SENSE(run(lun, v, 12, buf, sizeof(buf)), 0xe, 0x1d00);
    CHECK_EQ(get_be32(last.sense + 3), 2 * BS + 9);
    v[1] = 0x06;                               /* BYTCHK 3: one block */
    CHECK_EQ(run(lun, v, 12, buf, BS), SCSI_STATUS_GOOD);
    v[1] = 0x20;                               /* VRPROTECT */
    CHECK_SENSE(run(lun, v, 12, NULL, 0), 5, 0x2400);
    v[1] = 0;
    put_be32(v + 2, BLOCKS);
    put_be32(v + 6, 1);
    CHECK_SENSE(run(lun, v, 12, NULL, 0), 5, 0x2100);
}

/* COMPARE AND WRITE is atomic against other writers: threads increment a
 * counter block with compare-and-write, retrying on miscompare; with no
 * lost updates the final count is exact. */
struct caw_arg {
    struct scsi_lun *lun;
    int increments;
    int failures;
};

static void *caw_thread(void *p)
{
    struct caw_arg *a = p;
    uint8_t rd[10] = { 0x28 }, c[16] = { 0x89 }, cur[BS], buf[2 * BS];
    put_be32(rd + 2, 7000);
    put_be16(rd + 7, 1);
    put_be64(c + 2, 7000);
    c[13] = 1;
    for (int done = 0; done < a->increments;) {
        if (run(a->lun, rd, 10, cur, BS) != SCSI_STATUS_GOOD) {
            a->failures++;
            return NULL;
        }
        memcpy(buf, cur, BS);
        memcpy(buf + BS, cur, BS);
        put_be32(buf + BS, get_be32(cur) + 1);
        int st = run(a->lun, c, 16, buf, sizeof(buf));
        if (st == SCSI_STATUS_GOOD)
            done++;
        else if (sense_key() != 0xe)
            a->failures++;
    }
    return NULL;
}

static void test_caw_atomic(struct scsi_lun *lun, struct memimage *m)
{
    enum { THREADS = 8, EACH = 200 };
    pthread_t t[THREADS];
    struct caw_arg a[THREADS];
    memset(m->data + 7000 * BS, 0, BS);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct caw_arg){ lun, EACH, 0 };
        pthread_create(&t[i], NULL, caw_thread, &a[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failures += a[i].failures;
    }
    CHECK_EQ(failures, 0);
    CHECK_EQ(get_be32(m->data + 7000 * BS), THREADS * EACH);
}

static void test_verify(struct scsi_lun *lun)
{
    uint8_t c[10] = { 0x2f }, buf[4 * BS];
    write10(lun, 8000, 4, 0x44);
    put_be32(c + 2, 8000);
    put_be16(c + 7, 4);
    /* BYTCHK 0: medium check only. */
    CHECK_EQ(run(lun, c, 10, NULL, 0), SCSI_STATUS_GOOD);
    /* BYTCHK 1: equal, then one byte off. */
    c[1] = 0x02;
    memset(buf, 0x44, sizeof(buf));
    CHECK_EQ(run(lun, c, 10, buf, sizeof(buf)), SCSI_STATUS_GOOD);
    buf[3 * BS + 1] = 0;
    CHECK_SENSE(run(lun, c, 10, buf, sizeof(buf)), 0xe, 0x1d00);
    CHECK_EQ(get_be32(last.sense + 3), 3 * BS + 1);
    /* BYTCHK 3: one block compared with each. */
    c[1] = 0x06;
    memset(buf, 0x44, BS);
    CHECK_EQ(run(lun, c, 10, buf, BS), SCSI_STATUS_GOOD);
    write10(lun, 8002, 1, 0x45);
    CHECK_SENSE(run(lun, c, 10, buf, BS), 0xe, 0x1d00);
    CHECK_EQ(get_be32(last.sense + 3), 2 * BS);
    /* BYTCHK 2 is reserved; out of range; VERIFY (16). */
    c[1] = 0x04;
    CHECK_SENSE(run(lun, c, 10, buf, BS), 5, 0x2400);
    uint8_t c16[16] = { 0x8f };
    put_be64(c16 + 2, BLOCKS - 1);
    put_be32(c16 + 10, 2);
    CHECK_SENSE(run(lun, c16, 16, NULL, 0), 5, 0x2100);
    put_be32(c16 + 10, 1);
    CHECK_EQ(run(lun, c16, 16, NULL, 0), SCSI_STATUS_GOOD);
}

static void test_write_and_verify(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16] = { 0x8e, 0x02 }, buf[2 * BS];
    memset(buf, 0x66, sizeof(buf));
    put_be64(c + 2, 9000);
    put_be32(c + 10, 2);
    CHECK_EQ(run(lun, c, 16, buf, sizeof(buf)), SCSI_STATUS_GOOD);
    CHECK(range_is(m, 9000, 2, 0x66));
    CHECK_EQ(m->unflushed, 0);                  /* durable */
    c[1] = 0x04;                               /* BYTCHK 2 */
    CHECK_SENSE(run(lun, c, 16, buf, sizeof(buf)), 5, 0x2400);
    uint8_t c10[10] = { 0x2e };
    put_be32(c10 + 2, BLOCKS);
    put_be16(c10 + 7, 1);
    CHECK_SENSE(run(lun, c10, 10, buf, BS), 5, 0x2100);
}

static void test_prefetch_startstop(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t p10[10] = { 0x34 }, p16[16] = { 0x90 };
    put_be32(p10 + 2, 10);
    put_be16(p10 + 7, 10);
    CHECK_EQ(run(lun, p10, 10, NULL, 0), SCSI_STATUS_GOOD);
    put_be64(p16 + 2, BLOCKS);
    put_be32(p16 + 10, 1);
    CHECK_SENSE(run(lun, p16, 16, NULL, 0), 5, 0x2100);

    uint8_t ssu[6] = { 0x1b, 0, 0, 0, 0x00, 0 };   /* stop */
    int flushes = m->flushes;
    CHECK_EQ(run(lun, ssu, 6, NULL, 0), SCSI_STATUS_GOOD);
    CHECK_EQ(m->flushes, flushes + 1);
    ssu[4] = 0x01;                                  /* start */
    CHECK_EQ(run(lun, ssu, 6, NULL, 0), SCSI_STATUS_GOOD);
    ssu[4] = 0x02;                                  /* eject: no medium */
    CHECK_SENSE(run(lun, ssu, 6, NULL, 0), 5, 0x2400);
}

static void test_mode_select(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t sense6[6] = { 0x1a, 0x08, 0x08, 0, 255, 0 }, b[255];
    /* The changeable mask says WCE. */
    sense6[2] = 0x48;
    CHECK_EQ(run(lun, sense6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[4 + 2], 0x04);
    sense6[2] = 0x08;
    CHECK_EQ(run(lun, sense6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK(b[4 + 2] & 0x04);

    /* Clear WCE with MODE SELECT (6), the page as MODE SENSE gave it. */
    uint8_t list[4 + 20];
    memset(list, 0, 4);
    memcpy(list + 4, b + 4, 20);
    list[4 + 2] &= (uint8_t)~0x04;
    uint8_t sel6[6] = { 0x15, 0x10, 0, 0, sizeof(list), 0 };
    CHECK_EQ(run(lun, sel6, 6, list, sizeof(list)), SCSI_STATUS_GOOD);
    CHECK_EQ(run(lun, sense6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[4 + 2] & 0x04, 0);
    /* Now every write is durable before GOOD. */
    write10(lun, 10, 1, 1);
    CHECK_EQ(m->unflushed, 0);                  /* durable */

    /* Changing a bit that is not changeable is refused. */
    list[4 + 2] |= 0x01;                       /* RCD */
    CHECK_SENSE(run(lun, sel6, 6, list, sizeof(list)), 5, 0x2600);
    list[4 + 2] &= (uint8_t)~0x01;
    /* SP (save) is not supported; PF must be set. */
    sel6[1] = 0x11;
    CHECK_SENSE(run(lun, sel6, 6, list, sizeof(list)), 5, 0x2400);
    sel6[1] = 0x00;
    CHECK_SENSE(run(lun, sel6, 6, list, sizeof(list)), 5, 0x2400);
    /* Set WCE again with MODE SELECT (10). */
    uint8_t list10[8 + 20] = { 0 };
    memcpy(list10 + 8, list + 4, 20);
    list10[8 + 2] |= 0x04;
    uint8_t sel10[10] = { 0x55, 0x10 };
    put_be16(sel10 + 7, sizeof(list10));
    CHECK_EQ(run(lun, sel10, 10, list10, sizeof(list10)), SCSI_STATUS_GOOD);
    CHECK_EQ(run(lun, sense6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK(b[4 + 2] & 0x04);
    /* A page we do not have. */
    list10[8] = 0x19;
    CHECK_SENSE(run(lun, sel10, 10, list10, sizeof(list10)), 5, 0x2600);
}

static void test_report_opcodes(struct scsi_lun *lun)
{
    uint8_t c[12] = { 0xa3, 0x0c }, b[4096];
    put_be32(c + 6, sizeof(b));
    CHECK_EQ(run(lun, c, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    size_t n = get_be32(b) / 8;
    CHECK(n >= 30);
    /* Every listed command is one we execute: none answers INVALID
     * COMMAND OPERATION CODE. */
    bool found_ws16 = false, found_gls = false;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d = b + 4 + i * 8;
        if (d[0] == 0x93)
            found_ws16 = get_be16(d + 6) == 16;
        if (d[0] == 0x9e && get_be16(d + 2) == 0x12)
            found_gls = (d[5] & 1) == 1;
    }
    CHECK(found_ws16);
    CHECK(found_gls);

    /* With RCTD each descriptor carries a timeouts descriptor. */
    c[2] = 0x80;
    CHECK_EQ(run(lun, c, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(get_be32(b) / 20, n);
    CHECK(b[4 + 5] & 0x02);                    /* CTDP */

    /* One command: WRITE (10). */
    c[2] = 0x01;
    c[3] = 0x2a;
    CHECK_EQ(run(lun, c, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[1] & 7, 3);
    CHECK_EQ(get_be16(b + 2), 10);
    CHECK_EQ(b[4], 0x2a);
    CHECK_EQ(last.data_in_len, 14);
    /* One with a service action, by option 2. */
    c[2] = 0x02;
    c[3] = 0x9e;
    put_be16(c + 4, 0x10);
    CHECK_EQ(run(lun, c, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[1] & 7, 3);
    CHECK_EQ(b[5] & 0x1f, 0x10);
    /* Option 1 on an opcode with service actions is invalid. */
    c[2] = 0x01;
    CHECK_SENSE(run(lun, c, 12, b, sizeof(b)), 5, 0x2400);
    /* An opcode we lack: "not supported". */
    c[3] = 0xc1;
    CHECK_EQ(run(lun, c, 12, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[1] & 7, 1);
}

/* Crossing the soft threshold raises UNIT ATTENTION 38/07 on the next
 * command, once. */
static void test_soft_threshold(void)
{
    struct memimage *m = memimage_new_thin(1 << 20, CLUSTER);
    struct scsi_lun *lun = make_lun(m, 64 * 1024);
    uint8_t tur[6] = { 0 }, inq[6] = { 0x12, 0, 0, 0, 36, 0 }, b[36];

    /* 100 writes to the same block: usage stays at 512 bytes. */
    for (int i = 0; i < 100; i++)
        write10(lun, 0, 1, 1);
    CHECK_EQ(run(lun, tur, 6, NULL, 0), SCSI_STATUS_GOOD);
    /* Usage is checked at writes 1, 65, 129, 193, 257...  After write 257
     * (157 more here) 158 blocks = 80896 bytes are in use: past 64 KiB,
     * while at write 193 (93 blocks) it was not. */
    for (uint32_t i = 0; i < 157; i++)
        write10(lun, 1 + i, 1, 2);
    /* INQUIRY never reports a unit attention ... */
    CHECK_EQ(run(lun, inq, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    /* ... the next other command does, once. */
    CHECK_SENSE(run(lun, tur, 6, NULL, 0), 6, 0x3807);
    CHECK_EQ(run(lun, tur, 6, NULL, 0), SCSI_STATUS_GOOD);
    for (uint32_t i = 0; i < 200; i++)
        write10(lun, 300 + i, 1, 3);
    CHECK_EQ(run(lun, tur, 6, NULL, 0), SCSI_STATUS_GOOD);
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* Every command that changes the medium follows the same rules (scsi/
 * change.c): durable before GOOD when the write cache is off, and the
 * soft threshold checked after it.  One fresh LUN per command, its image
 * already past the threshold, write cache off: after the one command,
 * nothing is left unflushed and the next command reports 38/07. */
static void test_change_rules(void)
{
    enum { N_CMDS = 7 };
    static const char *const names[N_CMDS] = {
        "WRITE (16)", "WRITE SAME (16) data", "WRITE SAME (16) zeros",
        "UNMAP", "WRITE AND VERIFY (16)", "COMPARE AND WRITE", "ORWRITE (16)",
    };
    for (int i = 0; i < N_CMDS; i++) {
        struct memimage *m = memimage_new_thin(1 << 20, CLUSTER);
        mem_mark(m, 0, 256 * 1024, IMAGE_EXTENT_DATA);   /* 256 KiB used */
        struct scsi_lun *lun;
        struct scsi_lun_config cfg = {
            .img = &m->img, .block_size = BS, .num_blocks = m->img.size / BS,
            .max_xfer_blocks = 1024, .serial = "rules", .write_cache = false,
            .soft_threshold = 64 * 1024,
        };
        CHECK_EQ(scsi_lun_new(&cfg, &lun), 0);
        uint8_t c[16] = { 0 }, buf[2 * BS], tur[6] = { 0 };
        size_t len = BS;
        memset(buf, 0x5a, sizeof(buf));
        put_be64(c + 2, 100);
        put_be32(c + 10, 1);
        switch (i) {
        case 0: c[0] = 0x8a; break;
        case 1: c[0] = 0x93; break;
        case 2: c[0] = 0x93; memset(buf, 0, BS); break;
        case 3:
            memset(c, 0, 16);
            c[0] = 0x42;
            put_be16(c + 7, 24);
            memset(buf, 0, 24);
            put_be16(buf, 22);
            put_be16(buf + 2, 16);
            put_be64(buf + 8, 100);
            put_be32(buf + 16, 8);
            len = 24;
            break;
        case 4: c[0] = 0x8e; break;
        case 5:
            memset(c + 10, 0, 4);
            c[0] = 0x89;
            c[13] = 1;
            memset(buf, 0, BS);            /* the medium holds zeros */
            len = 2 * BS;
            break;
        case 6: c[0] = 0x8b; break;
        }
        int st = run(lun, c, 16, buf, len);
        if (st != SCSI_STATUS_GOOD)
            fprintf(stderr, "%s: sense %x/%04x\n", names[i], sense_key(),
                    sense_asc());
        CHECK_EQ(st, SCSI_STATUS_GOOD);
        if (m->unflushed != 0)
            fprintf(stderr, "%s: not durable with WCE=0\n", names[i]);
        CHECK_EQ(m->unflushed, 0);
        st = run(lun, tur, 6, NULL, 0);
        if (st != SCSI_STATUS_CHECK_CONDITION)
            fprintf(stderr, "%s: soft threshold not checked\n", names[i]);
        CHECK_SENSE(st, 6, 0x3807);
        scsi_lun_free(lun);
        image_close(&m->img);
    }
}

static void test_stats(struct scsi_lun *lun)
{
    struct scsi_lun_stats s;
    scsi_lun_get_stats(lun, &s);
    CHECK(s.commands[0x93] > 0);
    CHECK(s.commands[0x42] > 0);
    CHECK(s.bytes_zeroed >= 128 * BS);
    CHECK(s.bytes_unmapped >= 256 * BS);
    CHECK(s.bytes_written > 0);
    CHECK(s.errors > 0);
    uint8_t bad_sa[16] = { 0x9e, 0x1f };        /* a service action we lack */
    CHECK_SENSE(run(lun, bad_sa, 16, NULL, 0), 5, 0x2400);
    char json[8192];
    int n = scsi_lun_stats_json(lun, json, sizeof(json));
    CHECK(n > 0 && (size_t)n < sizeof(json));
    CHECK(strstr(json, "\"WRITE SAME (16)\":") != NULL);
    /* Service actions have names of their own. */
    CHECK(strstr(json, "\"GET LBA STATUS\":") != NULL);
    CHECK(strstr(json, "\"READ CAPACITY (16)\":") != NULL);
    CHECK(strstr(json, "\"REPORT SUPPORTED OPERATION CODES\":") != NULL);
    CHECK(strstr(json, "\"opcode 0x9e (other service action)\":1") != NULL);
    CHECK(strstr(json, "\"bytes_zeroed\":") != NULL);
    /* Truncation behaves like snprintf. */
    char small[16];
    CHECK_EQ(scsi_lun_stats_json(lun, small, sizeof(small)), n);
    CHECK_EQ(strlen(small), 15);
}

/* A read-only thin LUN refuses every kind of write. */
static void test_read_only(void)
{
    struct memimage *m = memimage_new_thin(1 << 20, CLUSTER);
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img, .block_size = BS, .num_blocks = 2048,
        .max_xfer_blocks = 64, .serial = "ro", .read_only = true,
    };
    scsi_lun_new(&cfg, &lun);
    uint8_t c[16], blk[BS] = { 0 }, p[24] = { 0, 22, 0, 16 };
    ws16(c, 0x08, 0, 8);
    CHECK_SENSE(run(lun, c, 16, blk, BS), 7, 0x2700);
    put_be32(p + 16, 8);
    unmap_cdb(c, 24);
    CHECK_SENSE(run(lun, c, 10, p, 24), 7, 0x2700);
    uint8_t caw[16] = { 0x89 };
    caw[13] = 1;
    uint8_t two[2 * BS] = { 0 };
    CHECK_SENSE(run(lun, caw, 16, two, sizeof(two)), 7, 0x2700);
    uint8_t orw[16] = { 0x8b };
    put_be32(orw + 10, 1);
    CHECK_SENSE(run(lun, orw, 16, blk, BS), 7, 0x2700);
    uint8_t wv12[12] = { 0xae };
    put_be32(wv12 + 6, 1);
    CHECK_SENSE(run(lun, wv12, 12, blk, BS), 7, 0x2700);
    CHECK_EQ(m->zeroes + m->zeroes_unmap + m->discards, 0);
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* A read-only LUN that is not thin (a read-only raw file: hole punching
 * cannot be probed on it) still answers WRITE SAME with UNMAP and UNMAP
 * with DATA PROTECT, WRITE PROTECTED, as every other write (libiscsi
 * ReadOnly.ReadOnlySBC against a readonly=on raw LUN). */
static void test_read_only_not_thin(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img, .block_size = BS, .num_blocks = 2048,
        .max_xfer_blocks = 64, .serial = "ro-thick", .read_only = true,
    };
    scsi_lun_new(&cfg, &lun);
    uint8_t c[16], blk[BS] = { 0 }, p[24] = { 0, 22, 0, 16 };
    uint8_t c10[10] = { 0x41, 0x08 };
    put_be16(c10 + 7, 1);
    CHECK_SENSE(run(lun, c10, 10, blk, BS), 7, 0x2700);
    ws16(c, 0x08, 0, 1);
    CHECK_SENSE(run(lun, c, 16, blk, BS), 7, 0x2700);
    ws16(c, 0x00, 0, 1);
    CHECK_SENSE(run(lun, c, 16, blk, BS), 7, 0x2700);
    put_be32(p + 16, 1);
    unmap_cdb(c, 24);
    CHECK_SENSE(run(lun, c, 10, p, 24), 7, 0x2700);
    /* Write protection comes before the data-out buffer is looked at:
     * libiscsi sends WRITE SAME with UNMAP and no buffer at all. */
    CHECK_SENSE(run(lun, c10, 10, NULL, 0), 7, 0x2700);
    ws16(c, 0x08, 0, 1);
    CHECK_SENSE(run(lun, c, 16, NULL, 0), 7, 0x2700);
    uint8_t caw[16] = { 0x89 };
    caw[13] = 1;
    CHECK_SENSE(run(lun, caw, 16, blk, BS), 7, 0x2700);
    scsi_lun_free(lun);
    image_close(&m->img);

    /* Writable and not thin: UNMAP is not offered, WRITE SAME's UNMAP bit
     * is an invalid field. */
    m = memimage_new(1 << 20);
    cfg.img = &m->img;
    cfg.read_only = false;
    scsi_lun_new(&cfg, &lun);
    unmap_cdb(c, 24);
    CHECK_SENSE(run(lun, c, 10, p, 24), 5, 0x2000);
    ws16(c, 0x08, 0, 1);
    CHECK_SENSE(run(lun, c, 16, blk, BS), 5, 0x2400);
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* ENOSPC from the image reaches the initiator as 27/07, whatever the
 * command. */
static void test_enospc(void)
{
    struct memimage *m = memimage_new_thin(1 << 20, CLUSTER);
    struct scsi_lun *lun = make_lun(m, 0);
    m->fail_errno = -ENOSPC;
    uint8_t c[16], blk[BS] = { 1 };
    ws16(c, 0, 0, 8);
    CHECK_SENSE(run(lun, c, 16, blk, BS), 7, 0x2707);
    blk[0] = 0;
    CHECK_SENSE(run(lun, c, 16, blk, BS), 7, 0x2707);
    scsi_lun_free(lun);
    image_close(&m->img);
}

int main(void)
{
    struct memimage *m = memimage_new_thin((uint64_t)BLOCKS * BS, CLUSTER);
    struct scsi_lun *lun = make_lun(m, 0);

    test_advertised(lun);
    test_write_same(lun, m);
    test_write_same_data_out_size(lun, m);
    test_unmap(lun, m);
    test_get_lba_status(lun, m);
    test_compare_and_write(lun, m);
    test_caw_data_out_size(lun, m);
    test_caw_atomic(lun, m);
    test_orwrite(lun, m);
    test_verify12(lun, m);
    test_verify(lun);
    test_write_and_verify(lun, m);
    test_prefetch_startstop(lun, m);
    test_mode_select(lun, m);
    test_report_opcodes(lun);
    test_stats(lun);
    test_soft_threshold();
    test_change_rules();
    test_read_only();
    test_read_only_not_thin();
    test_enospc();

    scsi_lun_free(lun);
    image_close(&m->img);
    return check_summary("test_scsi_thin");
}
