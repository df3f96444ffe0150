/* Unit tests: scsi/ driven with CDBs over an in-memory image. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi/scsi.h"
#include "scsi/scsi-internal.h"

#include "memimage.h"
#include "scsi_harness.h"

#define SA_READ_CAPACITY16 0x10
#define BLOCKS 16384u   /* 8 MiB of 512-byte blocks */

static void cdb_rw10(uint8_t *c, uint8_t op, uint32_t lba, uint16_t n,
                     uint8_t flags)
{
    memset(c, 0, 10);
    c[0] = op;
    c[1] = flags;
    put_be32(c + 2, lba);
    put_be16(c + 7, n);
}

static void cdb_rw16(uint8_t *c, uint8_t op, uint64_t lba, uint32_t n,
                     uint8_t flags)
{
    memset(c, 0, 16);
    c[0] = op;
    c[1] = flags;
    put_be64(c + 2, lba);
    put_be32(c + 10, n);
}

static struct scsi_lun *make_lun(struct memimage *m, uint32_t bs,
                                 const char *serial, bool ro)
{
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img,
        .block_size = bs,
        .num_blocks = m->img.size / bs,
        .max_xfer_blocks = 1024,
        .serial = serial,
        .read_only = ro,
        .write_cache = true,
    };
    if (scsi_lun_new(&cfg, &lun) < 0)
        abort();
    return lun;
}

static void test_inquiry(struct scsi_lun *lun)
{
    uint8_t c[6] = { 0x12, 0, 0, 0, 255, 0 }, b[256];

    CHECK_EQ(run(lun, c, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[0], 0);                         /* direct-access device */
    CHECK(memcmp(b + 8, "QLUN    ", 8) == 0);
    CHECK(memcmp(b + 16, "qlun-mem        ", 16) == 0);
    CHECK_EQ(b[4] + 5, last.data_in_len);

    /* Allocation length truncates. */
    c[4] = 5;
    CHECK_EQ(run(lun, c, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 5);
    c[4] = 255;

    /* A buffer longer than the reply: the rest is zeroed, not left with
     * whatever the shared data area held before (a leak). */
    uint8_t big[260];
    memset(big, 0xaa, sizeof(big));
    c[3] = 1;
    c[4] = 4;                                  /* allocation length 260 */
    CHECK_EQ(run(lun, c, 6, big, sizeof(big)), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 96);
    bool clean = true;
    for (size_t i = 96; i < sizeof(big); i++)
        clean &= big[i] == 0;
    CHECK(clean);
    c[3] = 0;
    c[4] = 255;

    /* A page code without EVPD is invalid. */
    c[2] = 0x80;
    CHECK_SENSE(run(lun, c, 6, b, sizeof(b)), 5, 0x2400);

    /* VPD 00: the pages we list must all answer. */
    c[1] = 1;
    c[2] = 0x00;
    CHECK_EQ(run(lun, c, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    uint8_t pages[32];
    size_t npages = get_be16(b + 2);
    CHECK(npages >= 6 && npages < sizeof(pages));
    memcpy(pages, b + 4, npages);
    for (size_t i = 0; i < npages; i++) {
        uint8_t p[256];
        c[2] = pages[i];
        CHECK_EQ(run(lun, c, 6, p, sizeof(p)), SCSI_STATUS_GOOD);
        CHECK_EQ(p[1], pages[i]);
        CHECK_EQ(get_be16(p + 2) + 4, last.data_in_len);
    }

    /* 80: the serial. */
    c[2] = 0x80;
    run(lun, c, 6, b, sizeof(b));
    CHECK_EQ(get_be16(b + 2), 10);
    CHECK(memcmp(b + 4, "serial0001", 10) == 0);

    /* 83: an NAA designator (type 3) and a T10 vendor one. */
    c[2] = 0x83;
    run(lun, c, 6, b, sizeof(b));
    CHECK_EQ(b[5] & 0x0f, 3);
    CHECK_EQ(b[7], 8);
    CHECK_EQ(b[8] >> 4, 3);                    /* NAA locally assigned */
    CHECK_EQ(b[16 + 1] & 0x0f, 1);             /* T10 vendor ID */
    CHECK(memcmp(b + 20, "QLUN    serial0001", 18) == 0);

    /* B0: transfer limits; B1: non-rotating; B2 answers. */
    c[2] = 0xb0;
    run(lun, c, 6, b, sizeof(b));
    CHECK_EQ(get_be16(b + 2), 0x3c);
    CHECK_EQ(get_be32(b + 8), 1024);
    c[2] = 0xb1;
    run(lun, c, 6, b, sizeof(b));
    CHECK_EQ(get_be16(b + 4), 1);
    c[2] = 0xb2;
    CHECK_EQ(run(lun, c, 6, b, sizeof(b)), SCSI_STATUS_GOOD);

    /* An unknown page. */
    c[2] = 0xc7;
    CHECK_SENSE(run(lun, c, 6, b, sizeof(b)), 5, 0x2400);
    /* Reserved bits. */
    c[1] = 0x02;
    c[2] = 0;
    CHECK_SENSE(run(lun, c, 6, b, sizeof(b)), 5, 0x2400);
}

/* The NAA identifier depends only on the serial: stable and distinct. */
static void test_naa_stable(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *a = make_lun(m, 512, "alpha", false);
    struct scsi_lun *a2 = make_lun(m, 512, "alpha", false);
    struct scsi_lun *b = make_lun(m, 512, "beta", false);
    uint8_t c[6] = { 0x12, 1, 0x83, 0, 255, 0 }, x[256], y[256], z[256];
    run(a, c, 6, x, sizeof(x));
    run(a2, c, 6, y, sizeof(y));
    run(b, c, 6, z, sizeof(z));
    CHECK(memcmp(x + 8, y + 8, 8) == 0);
    CHECK(memcmp(x + 8, z + 8, 8) != 0);
    scsi_lun_free(a);
    scsi_lun_free(a2);
    scsi_lun_free(b);
    image_close(&m->img);
}

static void test_capacity(struct scsi_lun *lun)
{
    uint8_t c10[10] = { 0x25 }, c16[16] = { 0x9e, 0x10 }, b[32];
    CHECK_EQ(run(lun, c10, 10, b, 8), SCSI_STATUS_GOOD);
    CHECK_EQ(get_be32(b), BLOCKS - 1);
    CHECK_EQ(get_be32(b + 4), 512);
    c10[8] = 1;                                 /* PMI */
    CHECK_SENSE(run(lun, c10, 10, b, 8), 5, 0x2400);

    put_be32(c16 + 10, 32);
    CHECK_EQ(run(lun, c16, 16, b, 32), SCSI_STATUS_GOOD);
    CHECK_EQ(get_be64(b), BLOCKS - 1);
    CHECK_EQ(get_be32(b + 8), 512);
    CHECK_EQ(b[13] & 0x0f, 3);                  /* 8 blocks per 4 KiB */
    put_be32(c16 + 10, 12);
    CHECK_EQ(run(lun, c16, 16, b, 32), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 12);

    c16[1] = 0x1f;                              /* unknown service action */
    CHECK_SENSE(run(lun, c16, 16, b, 32), 5, 0x2400);
}

static void test_misc(struct scsi_lun *lun)
{
    uint8_t tur[6] = { 0 }, rs[6] = { 0x03, 0, 0, 0, 252, 0 }, b[252];
    CHECK_EQ(run(lun, tur, 6, NULL, 0), SCSI_STATUS_GOOD);
    CHECK_EQ(run(lun, rs, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[0], 0x70);
    CHECK_EQ(b[2] & 0xf, 0);                    /* NO SENSE */
    rs[1] = 1;                                  /* DESC */
    CHECK_EQ(run(lun, rs, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[0], 0x72);

    /* Opcodes we do not implement. */
    uint8_t bad[16] = { 0xc0 };
    CHECK_SENSE(run(lun, bad, 16, NULL, 0), 5, 0x2000);
    bad[0] = 0x04;                              /* FORMAT UNIT */
    CHECK_SENSE(run(lun, bad, 6, NULL, 0), 5, 0x2000);
    /* NACA in the CONTROL byte. */
    tur[5] = 0x04;
    CHECK_SENSE(run(lun, tur, 6, NULL, 0), 5, 0x2400);
    /* A CDB shorter than its opcode needs. */
    uint8_t r10[10] = { 0x28 };
    CHECK_SENSE(run(lun, r10, 6, NULL, 0), 5, 0x2400);
}

static void test_mode_sense(struct scsi_lun *lun)
{
    uint8_t c6[6] = { 0x1a, 0, 0x08, 0, 255, 0 }, b[255];
    CHECK_EQ(run(lun, c6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[0] + 1, last.data_in_len);
    CHECK_EQ(b[3], 8);                          /* one block descriptor */
    CHECK_EQ(get_be32(b + 4 + 4) & 0xffffff, 512);
    CHECK_EQ(b[12], 0x08);                      /* caching page */
    CHECK(b[14] & 0x04);                        /* WCE */
    CHECK(b[2] & 0x10);                         /* DPOFUA */
    CHECK(!(b[2] & 0x80));                      /* not write-protected */

    c6[1] = 0x08;                               /* DBD */
    c6[2] = 0x0a;                               /* control page */
    CHECK_EQ(run(lun, c6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(b[3], 0);
    CHECK_EQ(b[4], 0x0a);
    CHECK_EQ(b[5], 10);

    c6[2] = 0x3f;                               /* all pages */
    CHECK_EQ(run(lun, c6, 6, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 4 + 20 + 12);

    c6[2] = 0xc8;                               /* saved values */
    CHECK_SENSE(run(lun, c6, 6, b, sizeof(b)), 5, 0x3900);
    c6[2] = 0x19;                               /* a page we lack */
    CHECK_SENSE(run(lun, c6, 6, b, sizeof(b)), 5, 0x2400);

    uint8_t c10[10] = { 0x5a, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0 };  /* LLBAA */
    CHECK_EQ(run(lun, c10, 10, b, sizeof(b)), SCSI_STATUS_GOOD);
    CHECK_EQ(get_be16(b) + 2, last.data_in_len);
    CHECK_EQ(b[4] & 1, 1);
    CHECK_EQ(get_be16(b + 6), 16);
    CHECK_EQ(get_be64(b + 8), BLOCKS);
    CHECK_EQ(b[24], 0x08);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 31 + (i >> 9));
}

static void test_read_write(struct scsi_lun *lun, struct memimage *m)
{
    static uint8_t w[64 * 512], r[64 * 512];
    uint8_t c[16];

    /* Each CDB size writes where it says and reads it back. */
    fill(w, sizeof(w), 1);
    cdb_rw10(c, 0x2a, 100, 64, 0);
    CHECK_EQ(run(lun, c, 10, w, sizeof(w)), SCSI_STATUS_GOOD);
    CHECK(memcmp(m->data + 100 * 512, w, sizeof(w)) == 0);
    cdb_rw10(c, 0x28, 100, 64, 0);
    memset(r, 0, sizeof(r));
    CHECK_EQ(run(lun, c, 10, r, sizeof(r)), SCSI_STATUS_GOOD);
    CHECK(memcmp(r, w, sizeof(w)) == 0);
    CHECK_EQ(last.data_in_len, sizeof(r));

    fill(w, sizeof(w), 2);
    cdb_rw16(c, 0x8a, BLOCKS - 64, 64, 0x08);   /* WRITE 16, FUA, last blocks */
    CHECK_EQ(run(lun, c, 16, w, sizeof(w)), SCSI_STATUS_GOOD);
    CHECK_EQ(m->unflushed, 0);                  /* durable */
    CHECK(memcmp(m->data + (BLOCKS - 64) * 512ull, w, sizeof(w)) == 0);
    cdb_rw16(c, 0x88, BLOCKS - 64, 64, 0);
    CHECK_EQ(run(lun, c, 16, r, sizeof(r)), SCSI_STATUS_GOOD);
    CHECK(memcmp(r, w, sizeof(w)) == 0);

    /* WRITE 12 / READ 12. */
    fill(w, 512, 3);
    memset(c, 0, 12);
    c[0] = 0xaa;
    put_be32(c + 2, 7);
    put_be32(c + 6, 1);
    CHECK_EQ(run(lun, c, 12, w, 512), SCSI_STATUS_GOOD);
    CHECK(memcmp(m->data + 7 * 512, w, 512) == 0);
    c[0] = 0xa8;
    CHECK_EQ(run(lun, c, 12, r, 512), SCSI_STATUS_GOOD);
    CHECK(memcmp(r, w, 512) == 0);

    /* WRITE 6 / READ 6: 21-bit LBA; length 0 means 256 blocks. */
    static uint8_t big[256 * 512];
    fill(big, sizeof(big), 4);
    uint8_t c6[6] = { 0x0a, 0, 0, 10, 0, 0 };
    CHECK_EQ(run(lun, c6, 6, big, sizeof(big)), SCSI_STATUS_GOOD);
    CHECK(memcmp(m->data + 10 * 512, big, sizeof(big)) == 0);
    c6[0] = 0x08;
    c6[4] = 1;
    CHECK_EQ(run(lun, c6, 6, r, 512), SCSI_STATUS_GOOD);
    CHECK(memcmp(r, big, 512) == 0);

    /* Scatter/gather: a read into three pieces. */
    cdb_rw10(c, 0x28, 10, 3, 0);
    uint8_t p1[100], p2[1000], p3[436];
    struct iovec v[3] = { { p1, 100 }, { p2, 1000 }, { p3, 436 } };
    memset(&last, 0, sizeof(last));
    last.cdb = c;
    last.cdb_len = 10;
    last.iov = v;
    last.iovcnt = 3;
    CHECK_EQ(scsi_lun_exec(lun, &last), SCSI_STATUS_GOOD);
    CHECK(memcmp(p1, big, 100) == 0 && memcmp(p2, big + 100, 1000) == 0 &&
          memcmp(p3, big + 1100, 436) == 0);

    /* A transport buffer longer than the CDB asks, in pieces (few: the
     * slice is on the stack; many: on the heap): a write takes only the
     * transfer, a read fills it and zeroes the rest. */
    for (int pieces = 3; pieces <= 40; pieces += 37) {
        static uint8_t src[3 * 512], dst[3 * 512];
        struct iovec vs[40];
        size_t each = sizeof(src) / (size_t)pieces;
        for (int i = 0; i < pieces; i++)
            vs[i] = (struct iovec){ src + (size_t)i * each,
                                    i == pieces - 1
                                    ? sizeof(src) - (size_t)i * each : each };
        fill(src, sizeof(src), (uint8_t)(20 + pieces));
        memset(m->data + 30 * 512, 0xee, 3 * 512);
        cdb_rw10(c, 0x2a, 30, 2, 0);
        memset(&last, 0, sizeof(last));
        last.cdb = c, last.cdb_len = 10, last.iov = vs, last.iovcnt = pieces;
        CHECK_EQ(scsi_lun_exec(lun, &last), SCSI_STATUS_GOOD);
        CHECK(memcmp(m->data + 30 * 512, src, 2 * 512) == 0);
        CHECK_EQ(m->data[32 * 512], 0xee);
        for (int i = 0; i < pieces; i++)
            vs[i].iov_base = dst + (size_t)i * each;
        memset(dst, 0x77, sizeof(dst));
        cdb_rw10(c, 0x28, 30, 2, 0);
        memset(&last, 0, sizeof(last));
        last.cdb = c, last.cdb_len = 10, last.iov = vs, last.iovcnt = pieces;
        CHECK_EQ(scsi_lun_exec(lun, &last), SCSI_STATUS_GOOD);
        CHECK_EQ(last.data_in_len, 2 * 512);
        CHECK(memcmp(dst, src, 2 * 512) == 0);
        CHECK(buf_is_zero(dst + 2 * 512, 512));
    }

    /* A transport buffer shorter than the CDB asks: reads fill it,
     * writes are refused. */
    cdb_rw10(c, 0x28, 10, 2, 0);
    CHECK_EQ(run(lun, c, 10, r, 512), SCSI_STATUS_GOOD);
    CHECK_EQ(last.data_in_len, 512);
    cdb_rw10(c, 0x2a, 10, 2, 0);
    CHECK_SENSE(run(lun, c, 10, r, 512), 5, 0x2400);

    /* Zero-length transfers are fine. */
    cdb_rw10(c, 0x28, 0, 0, 0);
    CHECK_EQ(run(lun, c, 10, NULL, 0), SCSI_STATUS_GOOD);
    cdb_rw10(c, 0x28, BLOCKS, 0, 0);            /* at the end: still OK */
    CHECK_EQ(run(lun, c, 10, NULL, 0), SCSI_STATUS_GOOD);

    /* Out of range, for every size, including wrap-around. */
    cdb_rw10(c, 0x28, BLOCKS - 1, 2, 0);
    CHECK_SENSE(run(lun, c, 10, r, 1024), 5, 0x2100);
    cdb_rw10(c, 0x2a, BLOCKS, 1, 0);
    CHECK_SENSE(run(lun, c, 10, r, 512), 5, 0x2100);
    cdb_rw16(c, 0x88, UINT64_MAX, 2, 0);
    CHECK_SENSE(run(lun, c, 16, r, 1024), 5, 0x2100);
    cdb_rw16(c, 0x8a, 1ull << 40, 1, 0);
    CHECK_SENSE(run(lun, c, 16, r, 512), 5, 0x2100);
    uint8_t c6b[6] = { 0x08, 0x1f, 0xff, 0xff, 1, 0 };
    CHECK_SENSE(run(lun, c6b, 6, r, 512), 5, 0x2100);

    /* Transfer longer than the advertised maximum. */
    cdb_rw10(c, 0x28, 0, 1025, 0);
    CHECK_SENSE(run(lun, c, 10, NULL, 0), 5, 0x2400);
    /* Protection information is not offered. */
    cdb_rw10(c, 0x28, 0, 1, 0x20);
    CHECK_SENSE(run(lun, c, 10, r, 512), 5, 0x2400);
}

static void test_sync_cache(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c10[10] = { 0x35 }, c16[16] = { 0x91 };
    int before = m->flushes;
    CHECK_EQ(run(lun, c10, 10, NULL, 0), SCSI_STATUS_GOOD);
    c16[1] = 0x02;                              /* IMMED */
    CHECK_EQ(run(lun, c16, 16, NULL, 0), SCSI_STATUS_GOOD);
    CHECK_EQ(m->flushes, before + 2);
    put_be64(c16 + 2, BLOCKS - 1);
    put_be32(c16 + 10, 2);
    CHECK_SENSE(run(lun, c16, 16, NULL, 0), 5, 0x2100);
}

/* Every image error reaches the initiator as the sense the table says. */
static void test_errors(struct scsi_lun *lun, struct memimage *m)
{
    uint8_t c[16], b[512];
    static const struct {
        int err;
        bool write;
        int status, key, asc;
    } cases[] = {
        { -EIO, false, SCSI_STATUS_CHECK_CONDITION, 3, 0x1100 },
        { -EIO, true, SCSI_STATUS_CHECK_CONDITION, 3, 0x0c00 },
        { -ENOSPC, true, SCSI_STATUS_CHECK_CONDITION, 7, 0x2707 },
        { -EDQUOT, true, SCSI_STATUS_CHECK_CONDITION, 7, 0x2707 },
        { -EROFS, true, SCSI_STATUS_CHECK_CONDITION, 7, 0x2700 },
        { -EUCLEAN, false, SCSI_STATUS_CHECK_CONDITION, 3, 0x1100 },
        { -EINVAL, true, SCSI_STATUS_CHECK_CONDITION, 4, 0x4400 },
        { -ENOMEM, true, SCSI_STATUS_TASK_SET_FULL, 0, 0 },
        { -EAGAIN, false, SCSI_STATUS_BUSY, 0, 0 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        m->fail_errno = cases[i].err;
        cdb_rw10(c, cases[i].write ? 0x2a : 0x28, 77, 1, 0);
        int st = run(lun, c, 10, b, 512);
        CHECK_EQ(st, cases[i].status);
        if (st == SCSI_STATUS_CHECK_CONDITION) {
            CHECK_EQ(sense_key(), cases[i].key);
            CHECK_EQ(sense_asc(), cases[i].asc);
        }
        if (cases[i].key == 3) {            /* INFORMATION = failing LBA */
            CHECK(last.sense[0] & 0x80);
            CHECK_EQ(get_be32(last.sense + 3), 77);
        }
    }
    m->fail_errno = -EIO;
    c[0] = 0x35;
    memset(c + 1, 0, 9);
    CHECK_SENSE(run(lun, c, 10, NULL, 0), 3, 0x0c00);   /* flush error */
    m->fail_errno = 0;
}

/* A failing LBA beyond 32 bits travels in descriptor-format sense. */
static void test_error_lba64(void)
{
    struct memimage *m = memimage_new(0);
    m->img.size = 1ull << 42;       /* 4 TiB, never touched: every I/O fails */
    m->fail_errno = -EIO;
    struct scsi_lun *lun = make_lun(m, 512, "big", false);
    uint8_t c[16], b[512];
    cdb_rw16(c, 0x88, (1ull << 32) + 5, 1, 0);
    CHECK_SENSE(run(lun, c, 16, b, 512), 3, 0x1100);
    CHECK_EQ(last.sense[0], 0x72);
    CHECK_EQ(last.sense[8], 0x00);              /* information descriptor */
    CHECK(last.sense[10] & 0x80);               /* VALID */
    CHECK_EQ(get_be64(last.sense + 12), (1ull << 32) + 5);
    scsi_lun_free(lun);
    image_close(&m->img);
}

static void test_read_only(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *lun = make_lun(m, 512, "ro", true);
    uint8_t c[10], b[512] = { 1 };
    cdb_rw10(c, 0x2a, 0, 1, 0);
    CHECK_SENSE(run(lun, c, 10, b, 512), 7, 0x2700);
    CHECK(m->data[0] == 0);
    cdb_rw10(c, 0x28, 0, 1, 0);
    CHECK_EQ(run(lun, c, 10, b, 512), SCSI_STATUS_GOOD);
    uint8_t ms[6] = { 0x1a, 0x08, 0x3f, 0, 255, 0 }, mb[255];
    run(lun, ms, 6, mb, sizeof(mb));
    CHECK(mb[2] & 0x80);                        /* WP */
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* An image that becomes corrupt while served: MODE SENSE says WP from
 * then on, writes get DATA PROTECT, and a flush whose writes were lost
 * fails rather than answering GOOD. */
static void test_became_corrupt(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *lun = make_lun(m, 512, "corrupt", false);
    uint8_t c[10], b[512] = { 1 };
    uint8_t ms[6] = { 0x1a, 0x08, 0x3f, 0, 255, 0 }, mb[255];
    run(lun, ms, 6, mb, sizeof(mb));
    CHECK(!(mb[2] & 0x80));
    image_set_state(&m->img, IMAGE_STATE_CORRUPT | IMAGE_STATE_WRITES_LOST);
    run(lun, ms, 6, mb, sizeof(mb));
    CHECK(mb[2] & 0x80);                        /* WP */
    cdb_rw10(c, 0x2a, 0, 1, 0);
    CHECK_SENSE(run(lun, c, 10, b, 512), 7, 0x2700);
    CHECK(m->data[0] == 0);
    cdb_rw10(c, 0x28, 0, 1, 0);
    CHECK_EQ(run(lun, c, 10, b, 512), SCSI_STATUS_GOOD);
    uint8_t sc[10] = { 0x35 };
    int flushes = m->flushes;
    CHECK_SENSE(run(lun, sc, 10, NULL, 0), 3, 0x0c00);
    CHECK_EQ(m->flushes, flushes);              /* never reached the driver */
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* 4096-byte logical blocks: addresses scale, capacity says 4096. */
static void test_4k(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *lun = make_lun(m, 4096, "4k", false);
    uint8_t c[16], b[32];
    static uint8_t w[8192], r[8192];
    memset(c, 0, 16);
    c[0] = 0x9e;
    c[1] = 0x10;
    put_be32(c + 10, 32);
    CHECK_EQ(run(lun, c, 16, b, 32), SCSI_STATUS_GOOD);
    CHECK_EQ(get_be64(b), 255);
    CHECK_EQ(get_be32(b + 8), 4096);
    CHECK_EQ(b[13] & 0xf, 0);
    fill(w, sizeof(w), 9);
    cdb_rw10(c, 0x2a, 3, 2, 0);
    CHECK_EQ(run(lun, c, 10, w, sizeof(w)), SCSI_STATUS_GOOD);
    CHECK(memcmp(m->data + 3 * 4096, w, sizeof(w)) == 0);
    cdb_rw10(c, 0x28, 3, 2, 0);
    CHECK_EQ(run(lun, c, 10, r, sizeof(r)), SCSI_STATUS_GOOD);
    CHECK(memcmp(r, w, sizeof(w)) == 0);
    cdb_rw10(c, 0x28, 255, 2, 0);
    CHECK_SENSE(run(lun, c, 10, r, sizeof(r)), 5, 0x2100);
    scsi_lun_free(lun);
    image_close(&m->img);
}

struct reader {
    struct scsi_lun *lun;
    int status;
};

static void *read_one_block(void *arg)
{
    struct reader *r = arg;
    uint8_t c[10], b[512];
    cdb_rw10(c, 0x28, 0, 1, 0);
    struct iovec iov = { b, sizeof(b) };
    struct scsi_cmd cmd = { .cdb = c, .cdb_len = 10, .iov = &iov,
                            .iovcnt = 1 };
    r->status = scsi_lun_exec(r->lun, &cmd);
    return NULL;
}

/* scsi_lun_in_flight counts a command from its entry into scsi_lun_exec
 * to its return, a command held off by a drain included (a job yields to
 * it), and nothing once it has returned. */
static void test_in_flight(struct scsi_lun *lun)
{
    CHECK_EQ(scsi_lun_in_flight(lun), 0);
    scsi_lun_drain_begin(lun);
    struct reader r = { .lun = lun, .status = -1 };
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, read_one_block, &r), 0);
    /* The reader waits for the drain; it must show as in flight. */
    unsigned seen = 0;
    for (int i = 0; i < 5000 && !seen; i++) {
        seen = scsi_lun_in_flight(lun);
        if (!seen)
            nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    }
    CHECK_EQ(seen, 1);
    scsi_lun_drain_end(lun);
    pthread_join(t, NULL);
    CHECK_EQ(r.status, SCSI_STATUS_GOOD);
    CHECK_EQ(scsi_lun_in_flight(lun), 0);
}

/* The opcode index answers as a scan of the table would. */
static void test_opcode_lookup(void)
{
    size_t n = scsi_opcode_count();
    for (size_t i = 0; i < n; i++) {
        const struct scsi_opcode *o = scsi_opcode_at(i);
        CHECK(scsi_opcode_find(o->opcode, o->sa) == o);
        CHECK_EQ(scsi_opcode_index(o), i);
    }
    for (int op = 0; op < 256; op++) {
        const struct scsi_opcode *want = NULL;
        for (size_t i = 0; i < n && !want; i++)
            if (scsi_opcode_at(i)->opcode == op)
                want = scsi_opcode_at(i);
        CHECK_EQ(scsi_opcode_known((uint8_t)op), want != NULL);
        if (want && !scsi_opcode_has_sa((uint8_t)op))
            CHECK(scsi_opcode_find((uint8_t)op, 0x1f) == want);
        if (!want || scsi_opcode_has_sa((uint8_t)op))
            CHECK(scsi_opcode_find((uint8_t)op, 0x1e) == NULL);
    }
}

/* Statistics count every command once under its opcode, whether it reached
 * its handler or failed before (a bad CDB, a service action we lack, an
 * opcode we lack); the JSON names the first kind by command and the second
 * by opcode.  Each opcode's table entry is found by its opcode and service
 * action. */
static void test_command_counts(void)
{
    struct memimage *m = memimage_new(1 << 20);
    struct scsi_lun *lun = make_lun(m, 512, "counts", false);
    uint8_t c[16], b[512];
    for (int i = 0; i < 2; i++) {
        cdb_rw10(c, 0x28, 0, 1, 0);
        CHECK_EQ(run(lun, c, 10, b, sizeof(b)), SCSI_STATUS_GOOD);
    }
    cdb_rw10(c, 0x28, 0, 1, 0);
    c[9] = 0x04;                                    /* NACA */
    CHECK_SENSE(run(lun, c, 10, b, sizeof(b)), 5, 0x2400);
    cdb_rw16(c, 0x9e, 0, 0, SA_READ_CAPACITY16);
    put_be32(c + 10, 32);
    CHECK_EQ(run(lun, c, 16, b, 32), SCSI_STATUS_GOOD);
    cdb_rw16(c, 0x9e, 0, 0, 0x1f);                  /* no such action */
    CHECK_SENSE(run(lun, c, 16, NULL, 0), 5, 0x2400);
    memset(c, 0, sizeof(c));
    c[0] = 0xff;                                    /* no such opcode */
    CHECK_SENSE(run(lun, c, 16, NULL, 0), 5, 0x2000);

    struct scsi_lun_stats s;
    scsi_lun_get_stats(lun, &s);
    CHECK_EQ(s.commands[0x28], 3);
    CHECK_EQ(s.commands[0x9e], 2);
    CHECK_EQ(s.commands[0xff], 1);
    CHECK_EQ(s.errors, 3);
    CHECK_EQ(s.bytes_read, 2 * 512);
    char json[4096];
    CHECK(scsi_lun_stats_json(lun, json, sizeof(json)) > 0);
    CHECK(strstr(json, "\"READ (10)\":2") != NULL);
    CHECK(strstr(json, "\"READ CAPACITY (16)\":1") != NULL);
    CHECK(strstr(json, "\"opcode 0x28 (other service action)\":1") != NULL);
    CHECK(strstr(json, "\"opcode 0x9e (other service action)\":1") != NULL);
    CHECK(strstr(json, "\"opcode 0xff\":1") != NULL);
    scsi_lun_free(lun);
    image_close(&m->img);
}

int main(void)
{
    struct memimage *m = memimage_new((uint64_t)BLOCKS * 512);
    struct scsi_lun *lun = make_lun(m, 512, "serial0001", false);

    test_inquiry(lun);
    test_naa_stable();
    test_capacity(lun);
    test_misc(lun);
    test_mode_sense(lun);
    test_read_write(lun, m);
    test_sync_cache(lun, m);
    test_errors(lun, m);
    test_error_lba64();
    test_read_only();
    test_became_corrupt();
    test_4k();
    test_in_flight(lun);
    test_command_counts();
    test_opcode_lookup();

    scsi_lun_free(lun);
    image_close(&m->img);
    return check_summary("test_scsi");
}
