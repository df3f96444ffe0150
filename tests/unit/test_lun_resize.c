/* Unit tests: online resize.  The LUN side (drain, UNIT ATTENTION 2A/09
 * once, the new capacity in READ CAPACITY and range checks, pending unit
 * attentions that do not hide each other), writes from threads across
 * resizes, and qlun_dev_resize / qlun_dev_reconfig_size on LUNs opened by
 * qlun_dev_open (raw files, qcow2 when qemu-img is there).
 *
 * "Can it fail?"  Broken on purpose once each, and this test failed:
 * scsi_lun_exec not holding the drain (commands seen in flight while
 * drained), pending unit attentions kept as one value again (38/07 lost
 * behind 2A/09), raw_resize shrinking without force. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "handler/device.h"
#include "scsi/scsi.h"

#include "memimage.h"
#include "scsi_harness.h"

static char dir[] = "/tmp/qlun-test-resize-XXXXXX";

static void cdb_rw10(uint8_t *c, uint8_t op, uint32_t lba, uint16_t n)
{
    memset(c, 0, 10);
    c[0] = op;
    put_be32(c + 2, lba);
    put_be16(c + 7, n);
}

static uint64_t read_capacity16(struct scsi_lun *lun)
{
    uint8_t c[16] = { 0x9e, 0x10 }, b[32];
    put_be32(c + 10, sizeof(b));
    if (run(lun, c, 16, b, sizeof(b)) != SCSI_STATUS_GOOD)
        return 0;
    return get_be64(b) + 1;
}

static uint64_t read_capacity10(struct scsi_lun *lun)
{
    uint8_t c[10] = { 0x25 }, b[8];
    if (run(lun, c, 10, b, sizeof(b)) != SCSI_STATUS_GOOD)
        return 0;
    return (uint64_t)get_be32(b) + 1;
}

/* ---- the LUN: capacity, unit attentions ---- */

static void test_lun_resize(void)
{
    struct memimage *m = memimage_new_thin(16 << 20, 4096);
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img, .block_size = 512, .num_blocks = 16384,
        .max_xfer_blocks = 1024, .serial = "resize", .write_cache = true,
        .soft_threshold = 4096,
    };
    CHECK_EQ(scsi_lun_new(&cfg, &lun), 0);
    uint8_t c[10], buf[4096] = { 0 }, inq[6] = { 0x12, 0, 0, 0, 96, 0 };

    cdb_rw10(c, 0x28, 16384, 1);               /* READ(10) at the old end */
    CHECK_SENSE(run(lun, c, 10, buf, 512), 5, 0x2100);
    cdb_rw10(c, 0x2a, 0, 8);                   /* crosses the threshold */
    memset(buf, 0x11, sizeof(buf));
    CHECK_EQ(run(lun, c, 10, buf, 4096), SCSI_STATUS_GOOD);

    scsi_lun_drain_begin(lun);
    scsi_lun_resize(lun, 32768);
    scsi_lun_drain_end(lun);

    /* INQUIRY reports no unit attention, nor clears one. */
    CHECK_EQ(run(lun, inq, 6, buf, 96), SCSI_STATUS_GOOD);
    cdb_rw10(c, 0x28, 0, 1);
    /* Both pending conditions, each once. */
    CHECK_SENSE(run(lun, c, 10, buf, 512), 6, 0x2a09);
    CHECK_SENSE(run(lun, c, 10, buf, 512), 6, 0x3807);
    CHECK_EQ(run(lun, c, 10, buf, 512), SCSI_STATUS_GOOD);
    CHECK_EQ(read_capacity16(lun), 32768);
    CHECK_EQ(read_capacity10(lun), 32768);
    CHECK_EQ(scsi_lun_num_blocks(lun), 32768);
    cdb_rw10(c, 0x28, 16384, 1);               /* the old end + 1 block */
    CHECK_EQ(run(lun, c, 10, buf, 512), SCSI_STATUS_GOOD);
    cdb_rw10(c, 0x28, 32767, 2);               /* past the new end */
    CHECK_SENSE(run(lun, c, 10, buf, 1024), 5, 0x2100);

    /* The same size again: no change, no unit attention.  Quietly (the
     * transport reports it): none either. */
    scsi_lun_drain_begin(lun);
    scsi_lun_resize(lun, 32768);
    scsi_lun_set_capacity(lun, 24576);
    scsi_lun_drain_end(lun);
    cdb_rw10(c, 0x28, 0, 1);
    CHECK_EQ(run(lun, c, 10, buf, 512), SCSI_STATUS_GOOD);
    CHECK_EQ(read_capacity16(lun), 24576);

    /* Another image swapped in under the drain serves the next command. */
    struct memimage *m2 = memimage_new(16 << 20);
    memset(m2->data, 0x2b, 512);
    scsi_lun_drain_begin(lun);
    scsi_lun_set_image(lun, &m2->img);
    scsi_lun_drain_end(lun);
    cdb_rw10(c, 0x28, 0, 1);
    CHECK_EQ(run(lun, c, 10, buf, 512), SCSI_STATUS_GOOD);
    CHECK_EQ(buf[0], 0x2b);
    CHECK_EQ(buf[511], 0x2b);

    scsi_lun_free(lun);
    image_close(&m->img);
    image_close(&m2->img);
}

/* ---- writes from threads across resizes ---- */

/* The image counts operations in flight, each made to last a little, so
 * that a command running through a drain would be seen. */
static atomic_int in_flight, seen_while_drained;
static atomic_bool drained;

static int slow_writev(struct image *img, const struct iovec *iov, int cnt,
                       uint64_t off, unsigned flags)
{
    atomic_fetch_add(&in_flight, 1);
    if (atomic_load(&drained))
        atomic_fetch_add(&seen_while_drained, 1);
    usleep(20);
    int ret = mem_writev(img, iov, cnt, off, flags);
    atomic_fetch_sub(&in_flight, 1);
    return ret;
}

static const struct image_ops slow_ops = {
    .name = "slow", .readv = mem_readv, .writev = slow_writev,
    .flush = mem_flush, .close = mem_close,
};

#define WRITERS 4
#define CHUNK 8                   /* blocks per write: 4 KiB */
#define CHUNKS_PER_WRITER 64
#define RESIZES 16

static atomic_int ua_seen, failures;
static atomic_bool stop;

struct writer {
    struct scsi_lun *lun;
    unsigned id;
    uint32_t last[CHUNKS_PER_WRITER];  /* sequence last written per chunk */
};

/* Chunk k of writer w: every writer's chunks interleave over the first
 * WRITERS * CHUNKS_PER_WRITER chunks (inside the first size). */
static uint32_t chunk_lba(unsigned w, unsigned k)
{
    return (k * WRITERS + w) * CHUNK;
}

static void fill(uint8_t *b, unsigned w, uint32_t seq)
{
    for (size_t i = 0; i < CHUNK * 512; i += 4)
        put_be32(b + i, w << 24 | seq);
}

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    uint8_t c[10], b[CHUNK * 512];
    for (uint32_t seq = 1; !atomic_load(&stop); seq++) {
        unsigned k = seq % CHUNKS_PER_WRITER;
        fill(b, wr->id, seq);
        cdb_rw10(c, 0x2a, chunk_lba(wr->id, k), CHUNK);
        /* As an initiator does: a unit attention is answered by retrying
         * the command; nothing else may fail. */
        for (;;) {
            int st = run(wr->lun, c, 10, b, sizeof(b));
            if (st == SCSI_STATUS_GOOD)
                break;
            if (sense_key() == 6 && sense_asc() == 0x2a09) {
                atomic_fetch_add(&ua_seen, 1);
                continue;
            }
            atomic_fetch_add(&failures, 1);
            break;
        }
        wr->last[k] = seq;
    }
    return NULL;
}

static void test_writes_across_resizes(void)
{
    struct memimage *m = memimage_new(16 << 20);
    m->img.ops = &slow_ops;
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = &m->img, .block_size = 512, .num_blocks = 8192,
        .max_xfer_blocks = 1024, .serial = "threads", .write_cache = true,
    };
    CHECK_EQ(scsi_lun_new(&cfg, &lun), 0);
    static struct writer w[WRITERS];
    pthread_t t[WRITERS];
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ .lun = lun, .id = i };
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    }
    uint64_t blocks = 8192;
    for (int r = 0; r < RESIZES; r++) {
        usleep(2000);
        scsi_lun_drain_begin(lun);
        atomic_store(&drained, true);
        CHECK_EQ(atomic_load(&in_flight), 0);
        usleep(200);     /* a command that slipped past would show now */
        blocks += 1024;
        scsi_lun_resize(lun, blocks);
        atomic_store(&drained, false);
        scsi_lun_drain_end(lun);
        /* Each resize's unit attention reaches one command before the
         * next resize: so each is counted once. */
        for (int spin = 0; atomic_load(&ua_seen) < r + 1 && spin < 100000;
             spin++)
            usleep(10);
    }
    atomic_store(&stop, true);
    for (unsigned i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&seen_while_drained), 0);
    CHECK_EQ(atomic_load(&failures), 0);
    CHECK_EQ(atomic_load(&ua_seen), RESIZES);
    CHECK_EQ(scsi_lun_num_blocks(lun), 8192 + RESIZES * 1024);
    /* No write torn or lost: each chunk holds exactly its last write. */
    uint8_t want[CHUNK * 512];
    bool intact = true;
    for (unsigned i = 0; i < WRITERS; i++)
        for (unsigned k = 0; k < CHUNKS_PER_WRITER; k++) {
            if (!w[i].last[k])
                continue;
            fill(want, i, w[i].last[k]);
            intact &= memcmp(m->data + chunk_lba(i, k) * 512ull, want,
                             sizeof(want)) == 0;
        }
    CHECK(intact);
    scsi_lun_free(lun);
    image_close(&m->img);
}

/* ---- qlun_dev_resize on LUNs opened by qlun_dev_open ---- */

static struct qlun_dev *open_dev(const char *cfg, uint64_t blocks)
{
    char err[1024];
    struct qlun_dev_params p = { cfg, 512, blocks, 1024, NULL };
    struct qlun_dev *d = NULL;
    if (qlun_dev_open(&p, &d, err, sizeof(err)) < 0)
        fprintf(stderr, "open %s: %s\n", cfg, err);
    return d;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* The next command that reports unit attentions: 2A/09 or not. */
static bool capacity_ua_next(struct qlun_dev *d)
{
    uint8_t tur[6] = { 0 };
    int st = run(d->lun, tur, 6, NULL, 0);
    return st == SCSI_STATUS_CHECK_CONDITION && sense_key() == 6 &&
           sense_asc() == 0x2a09;
}

static void test_dev_resize_raw(void)
{
    char img[256], cfg[512], err[512];
    snprintf(img, sizeof(img), "%s/raw.img", dir);
    int fd = open(img, O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 8 << 20) == 0);
    close(fd);
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off;"
             "soft_threshold=50%%", img);
    struct qlun_dev *d = open_dev(cfg, 16384);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK_EQ(qlun_dev_resize(d, (12 << 20) + 100, false, err, sizeof(err)),
             -EINVAL);
    CHECK(strstr(err, "multiple") != NULL);
    CHECK_EQ(qlun_dev_resize(d, 0, false, err, sizeof(err)), -EINVAL);

    struct scsi_lun_info li;
    scsi_lun_get_info(d->lun, &li);
    CHECK_EQ(li.soft_threshold, (8 << 20) / 100 * 50);
    CHECK_EQ(qlun_dev_resize(d, 12 << 20, false, err, sizeof(err)), 0);
    CHECK_EQ(file_size(img), 12 << 20);
    /* A percentage threshold follows the size. */
    scsi_lun_get_info(d->lun, &li);
    CHECK_EQ(li.soft_threshold, (12 << 20) / 100 * 50);
    CHECK_EQ(scsi_lun_num_blocks(d->lun), 24576);
    CHECK(capacity_ua_next(d));
    CHECK(!capacity_ua_next(d));
    uint8_t b[512];
    CHECK_EQ(image_read(d->img, b, 512, (12 << 20) - 512), 0);

    /* Shrinking: refused, unless forced; forced, said. */
    CHECK_EQ(qlun_dev_resize(d, 4 << 20, false, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "refused") != NULL);
    CHECK_EQ(file_size(img), 12 << 20);
    CHECK_EQ(scsi_lun_num_blocks(d->lun), 24576);
    CHECK(!capacity_ua_next(d));
    /* The raw driver's own rule, whoever calls it. */
    CHECK_EQ(image_resize(d->img, 4 << 20, false, err, sizeof(err)), -EINVAL);
    CHECK_EQ(file_size(img), 12 << 20);
    CHECK_EQ(qlun_dev_resize(d, 10 << 20, true, err, sizeof(err)), 0);
    CHECK(strstr(err, "gone") != NULL);
    CHECK_EQ(file_size(img), 10 << 20);
    CHECK(capacity_ua_next(d));

    /* Through LIO's dev_size: no shrink even if the size says so, and no
     * unit attention of ours (tcmu-runner raises it). */
    CHECK_EQ(qlun_dev_reconfig_size(d, 8 << 20, err, sizeof(err)), -EINVAL);
    CHECK_EQ(qlun_dev_reconfig_size(d, 16 << 20, err, sizeof(err)), 0);
    CHECK_EQ(file_size(img), 16 << 20);
    CHECK(!capacity_ua_next(d));
    CHECK_EQ(scsi_lun_num_blocks(d->lun), 32768);
    CHECK_EQ(qlun_dev_close(d), 0);

    /* A LUN smaller than its image grows inside it: the image stays. */
    d = open_dev(cfg, 8192);
    CHECK(d != NULL);
    if (d) {
        CHECK_EQ(qlun_dev_resize(d, 12 << 20, false, err, sizeof(err)), 0);
        CHECK_EQ(file_size(img), 16 << 20);
        CHECK_EQ(scsi_lun_num_blocks(d->lun), 24576);
        qlun_dev_close(d);
    }

    /* Read-only: refused. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;readonly=on;stats=off",
             img);
    d = open_dev(cfg, 16384);
    CHECK(d != NULL);
    if (d) {
        CHECK_EQ(qlun_dev_resize(d, 20 << 20, false, err, sizeof(err)),
                 -EROFS);
        CHECK_EQ(file_size(img), 16 << 20);
        qlun_dev_close(d);
    }
}

static void test_dev_resize_qcow2(void)
{
    char img[256], cfg[512], err[512], cmd[1024];
    snprintf(img, sizeof(img), "%s/q.qcow2", dir);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o "
             "cluster_size=4096 '%s' 1M >/dev/null 2>&1", img);
    if (system(cmd) != 0) {
        printf("qcow2 part skipped: no qemu-img\n");
        return;
    }
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=qcow2;stats=off", img);
    struct qlun_dev *d = open_dev(cfg, 2048);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK_EQ(qlun_dev_resize(d, 3ull << 30, false, err, sizeof(err)), 0);
    CHECK_EQ(d->img->size, 3ull << 30);
    CHECK_EQ(read_capacity16(d->lun) == 0, 1);  /* the UA comes first */
    CHECK_EQ(read_capacity16(d->lun), (3ull << 30) / 512);
    uint8_t c[10], b[512];
    memset(b, 0x6b, sizeof(b));
    cdb_rw10(c, 0x2a, (uint32_t)((3ull << 30) / 512 - 1), 1);
    CHECK_EQ(run(d->lun, c, 10, b, 512), SCSI_STATUS_GOOD);
    CHECK_EQ(qlun_dev_close(d), 0);
    snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s' && qemu-img info "
             "--output=json '%s' | grep -q '\"virtual-size\": 3221225472'",
             img, img);
    CHECK_EQ(system(cmd), 0);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_lun_resize();
    test_writes_across_resizes();
    test_dev_resize_raw();
    test_dev_resize_qcow2();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary("test_lun_resize");
}
