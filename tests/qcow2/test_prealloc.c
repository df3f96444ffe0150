/* qlun — preallocation ahead of a qcow2 image's end (qcow2/prealloc.c):
 * what it does, and that nothing misreads the preallocated space.
 *
 * 1. Steps: at least 1 MiB, an eighth of the image, at most 128 MiB.
 * 2. With O_DIRECT, the first allocating write preallocates (fallocate
 *    mode 0: the file grows to prealloc_end), and the allocating writes
 *    after it inside the step make no fallocate and are still one
 *    pwritev of the request (a cluster at or past host_end is "fresh":
 *    the preallocation must not raise host_end).  Clusters written in
 *    part read as zeros around the request; the preallocated bytes of the
 *    file read as zeros.  The qcow2 node's allocation figure leaves out
 *    the preallocation not yet reached, although st_blocks counts it.
 *    After close the file ends at host_end (truncated back), `qemu-img
 *    check` is clean and qemu-io reads the data.
 * 3. The soft threshold (scsi/lun.c) is not reached by preallocation
 *    alone: a LUN whose image allocated less than the threshold, with
 *    st_blocks above it, reports nothing; once the image itself passes
 *    it, it reports.
 * 4. A crash leaves the preallocation inside the file: `qemu-img check`
 *    reports no error and no leak, the data is there, and a new session
 *    writes, reads and closes cleanly.
 * 5. No preallocation with the page cache, or read-only.
 *
 * "Can it fail?"  (2) fails if the preallocation raises host_end (fresh
 * lost: the write becomes a 64 KiB one or a ZERO_RANGE), if the qcow2
 * node has no allocated_bytes (st_blocks includes the preallocation), or
 * if the close does not truncate; (3) fails with the allocation figure
 * taken from st_blocks; (4) fails if check reports the tail.
 */
#include <linux/falloc.h>
#include <pthread.h>
#include <sys/stat.h>

#include "block/host.h"
#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "host_log.h"
#include "qtest.h"
#include "scsi/scsi.h"

/* Blocks a file system may count in st_blocks beyond the file's data. */
#define FS_SLACK (64 * 1024)

static struct stat stat_of(const char *path)
{
    struct stat st = { 0 };
    if (stat(path, &st) < 0)
        QT_FAIL("stat %s: %s", path, strerror(errno));
    return st;
}

/* host_end and prealloc_end, read under the lock. */
static void ends(struct image *img, uint64_t *host_end, uint64_t *pend)
{
    struct qcow2 *q = to_qcow2(img);
    pthread_mutex_lock(&q->lock);
    *host_end = q->host_end;
    *pend = q->prealloc_end;
    pthread_mutex_unlock(&q->lock);
}

static void check_steps(void)
{
    QT_CHECK(qcow2_prealloc_step(0) == 1u << 20);
    QT_CHECK(qcow2_prealloc_step(4u << 20) == 1u << 20);
    QT_CHECK(qcow2_prealloc_step(64u << 20) == 8u << 20);
    QT_CHECK(qcow2_prealloc_step(1ull << 30) == 128u << 20);
    QT_CHECK(qcow2_prealloc_step(1ull << 40) == 128u << 20);
}

static struct image *open_direct(const char *path)
{
    struct image *img = NULL;
    qt_direct_io = true;
    int r = qt_open(path, false, NULL, &img);
    qt_direct_io = false;
    if (r < 0) {
        QT_FAIL("open %s with O_DIRECT", path);
        return NULL;
    }
    return img;
}

/* A new 1 GiB qcow2 image DIR/NAME (its path in path) opened with
 * O_DIRECT; NULL (a failure reported) if it cannot be made. */
static struct image *new_direct_image(const char *dir, const char *name,
                                      char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", dir, name);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 1G", path))
        return NULL;
    return open_direct(path);
}

/* 4 KiB of byte, aligned for O_DIRECT; NULL (a failure reported) if
 * there is no memory. */
static uint8_t *aligned_block(int byte)
{
    void *buf;
    if (posix_memalign(&buf, 4096, 4096)) {
        QT_FAIL("posix_memalign");
        return NULL;
    }
    return memset(buf, byte, 4096);
}

/* Bytes [from, to) of the host file read as zeros. */
static bool host_zeros(const char *path, uint64_t from, uint64_t to)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseeko(f, (off_t)from, SEEK_SET) < 0)
        return false;
    bool ok = true;
    for (uint64_t i = from; i < to && ok; i++) {
        int c = fgetc(f);
        ok = c == 0;
    }
    fclose(f);
    return ok;
}

/* Guest cluster gc reads as 0x3c in [at, at + 4096), zeros elsewhere. */
static bool cluster_reads(struct image *img, uint64_t gc, size_t at)
{
    static uint8_t back[65536];
    if (image_read(img, back, sizeof(back), gc * 65536) < 0)
        return false;
    for (size_t i = 0; i < sizeof(back); i++)
        if (back[i] != (i >= at && i < at + 4096 ? 0x3c : 0)) {
            QT_FAIL("cluster %" PRIu64 " byte %zu reads %#x", gc, i,
                    back[i]);
            return false;
        }
    return true;
}

/* Allocating 4 KiB writes at offset `at` of guest clusters 2, 4, ..., 2n
 * (every other one, so that each allocates); the first of them made the
 * preallocation.  Each must be one pwritev of 4 KiB and no fallocate. */
static void write_in_step(struct image *img, const uint8_t *buf, int n,
                          size_t at)
{
    for (int i = 1; i <= n; i++) {
        host_log_reset();
        QT_CHECK(image_write(img, buf, 4096, (uint64_t)2 * i * 65536 + at,
                             0) == 0);
        size_t writes = host_log_count(HOST_WRITE);
        uint64_t bytes = host_log_bytes(HOST_WRITE);
        size_t fallocs = host_log_count(HOST_FALLOC);
        if (writes != 1 || bytes != 4096 || fallocs != 0)
            QT_FAIL("allocating write %d inside the preallocation: %zu "
                    "pwritev (%" PRIu64 " bytes), %zu fallocate; want 1, "
                    "4096, 0", i, writes, bytes, fallocs);
    }
}

static void check_ahead(const char *dir)
{
    char path[4200];
    struct image *img = new_direct_image(dir, "ahead.qcow2", path,
                                         sizeof(path));
    if (!img)
        return;
    uint8_t *buf = aligned_block(0x3c);
    if (!buf)
        return;
    host_log_reset();
    QT_CHECK(image_write(img, buf, 4096, 8192, 0) == 0);
    QT_CHECK(image_flush(img) == 0);
    uint64_t he, pe;
    ends(img, &he, &pe);
    size_t preallocs = host_log_fallocs(0);
    printf("first write: host_end %" PRIu64 ", preallocated to %" PRIu64
           ", %zu preallocating fallocate\n", he, pe, preallocs);
    QT_CHECK(preallocs == 1);
    QT_CHECK(pe > he && pe % (1u << 20) == 0 &&
             pe >= he + qcow2_prealloc_step(he));
    QT_CHECK(stat_of(path).st_size == (off_t)pe);

    write_in_step(img, buf, 4, 8192);
    QT_CHECK(cluster_reads(img, 0, 8192));
    for (uint64_t gc = 2; gc <= 8; gc += 2)
        QT_CHECK(cluster_reads(img, gc, 8192));
    ends(img, &he, &pe);
    QT_CHECK(host_zeros(path, he, pe));

    /* The allocation figure: st_blocks holds the whole preallocation,
     * the qcow2 node's figure only what host_end reached. */
    int64_t host_use = (int64_t)stat_of(path).st_blocks * 512;
    int64_t figure = image_allocated_bytes(img);
    printf("st_blocks %" PRId64 " bytes, qcow2 allocated %" PRId64
           ", host_end %" PRIu64 "\n", host_use, figure, he);
    QT_CHECK(host_use >= (int64_t)pe); /* test setup: preallocated */
    QT_CHECK(figure == host_use - (int64_t)(pe - he));
    /* What the image holds, give or take the file system's own blocks
     * (ext4 counts its extent tree blocks in st_blocks). */
    QT_CHECK(figure > 0 && figure <= (int64_t)he + FS_SLACK);

    QT_CHECK(image_close(img) == 0);
    struct stat st = stat_of(path);
    printf("after close: size %" PRId64 ", st_blocks %" PRId64 " bytes\n",
           (int64_t)st.st_size, (int64_t)st.st_blocks * 512);
    QT_CHECK(st.st_size == (off_t)he);
    QT_CHECK((uint64_t)st.st_blocks * 512 <= he + FS_SLACK);
    QT_CHECK(qt_check(path) == 0);
    for (int gc = 0; gc <= 8; gc += 2)
        QT_CHECK(qt_must("qemu-io -c 'read -P 0 %d 8192' -c 'read -P 0x3c "
                         "%d 4096' -c 'read -P 0 %d %d' '%s'", gc * 65536,
                         gc * 65536 + 8192, gc * 65536 + 12288,
                         65536 - 12288, path));
    free(buf);
}

/* WRITE(10) of one 4 KiB block at lba (block size 4096). */
static int scsi_write(struct scsi_lun *lun, uint32_t lba, void *buf)
{
    uint8_t cdb[10] = { 0x2a };
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, 1);
    struct iovec iov = { buf, 4096 };
    struct scsi_cmd cmd = { .cdb = cdb, .cdb_len = sizeof(cdb),
                            .iov = &iov, .iovcnt = 1 };
    return scsi_lun_exec(lun, &cmd);
}

static bool threshold_reached(struct scsi_lun *lun)
{
    struct scsi_lun_info li;
    scsi_lun_get_info(lun, &li);
    return li.soft_threshold_reached;
}

static void check_threshold(const char *dir)
{
    const uint64_t threshold = 1u << 20;
    char path[4200];
    struct image *img = new_direct_image(dir, "threshold.qcow2", path,
                                         sizeof(path));
    if (!img)
        return;
    struct scsi_lun *lun;
    struct scsi_lun_config cfg = {
        .img = img, .block_size = 4096, .num_blocks = img->size / 4096,
        .max_xfer_blocks = 128, .serial = "prealloc", .write_cache = true,
        .soft_threshold = threshold,
    };
    if (scsi_lun_new(&cfg, &lun) < 0) {
        QT_FAIL("scsi_lun_new");
        image_close(img);
        return;
    }
    uint8_t *buf = aligned_block(0x5a);
    if (!buf)
        return;
    /* 128 writes into the first guest cluster: two threshold checks (one
     * every 64 writes, the first at the first), an image far below 1 MiB
     * whose file holds more than 1 MiB of blocks. */
    for (uint32_t i = 0; i < 128; i++)
        QT_CHECK(scsi_write(lun, i % 16, buf) == SCSI_STATUS_GOOD);
    uint64_t he, pe;
    ends(img, &he, &pe);
    int64_t host_use = (int64_t)stat_of(path).st_blocks * 512;
    printf("threshold %" PRIu64 ": host_end %" PRIu64 ", st_blocks %" PRId64
           " bytes, reached: %d\n", threshold, he, host_use,
           threshold_reached(lun));
    QT_CHECK(he < threshold && host_use >= (int64_t)threshold); /* setup */
    QT_CHECK(!threshold_reached(lun));
    /* Now allocate for real: one write per guest cluster until the image
     * holds more than the threshold; it must then be reported. */
    for (uint32_t i = 0; i < 64 * 64 && !threshold_reached(lun); i++)
        QT_CHECK(scsi_write(lun, 16 * (i + 1), buf) == SCSI_STATUS_GOOD);
    ends(img, &he, &pe);
    QT_CHECK(threshold_reached(lun) && he >= threshold);
    scsi_lun_free(lun);
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    free(buf);
}

static void check_crash(const char *dir)
{
    char path[4200];
    struct image *img = new_direct_image(dir, "crash.qcow2", path,
                                         sizeof(path));
    if (!img)
        return;
    uint8_t *buf = aligned_block(0x3c);
    if (!buf)
        return;
    QT_CHECK(image_write(img, buf, 4096, 8192, 0) == 0);
    write_in_step(img, buf, 3, 8192);
    QT_CHECK(image_flush(img) == 0);
    uint64_t he, pe;
    ends(img, &he, &pe);
    qcow2_simulate_crash(img);
    struct stat st = stat_of(path);
    printf("after a crash: size %" PRId64 " (host_end was %" PRIu64 ")\n",
           (int64_t)st.st_size, he);
    QT_CHECK(st.st_size == (off_t)pe && pe > he); /* the tail is left */
    QT_CHECK(qt_check(path) == 0); /* no error, no leak */
    for (int gc = 0; gc <= 6; gc += 2)
        QT_CHECK(qt_must("qemu-io -c 'read -P 0 %d 8192' -c 'read -P 0x3c "
                         "%d 4096' '%s'", gc * 65536, gc * 65536 + 8192,
                         path));
    /* A new session over the tail: its clusters are not fresh now (the
     * file's length is host_end), reused like freed ones. */
    img = open_direct(path);
    if (!img)
        return;
    for (int gc = 10; gc <= 20; gc += 2)
        QT_CHECK(image_write(img, buf, 4096, (uint64_t)gc * 65536 + 8192,
                             0) == 0);
    for (uint64_t gc = 0; gc <= 20; gc += 2)
        QT_CHECK(gc == 8 || cluster_reads(img, gc, 8192));
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    free(buf);
}

/* With the page cache, or read-only: no preallocation at all. */
static void check_not_buffered(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/buffered.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 1G", path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    uint8_t buf[4096];
    memset(buf, 0x3c, sizeof(buf));
    host_log_reset();
    QT_CHECK(image_write(img, buf, 4096, 8192, 0) == 0);
    QT_CHECK(host_log_fallocs(0) == 0 && !to_qcow2(img)->prealloc);
    QT_CHECK(image_close(img) == 0);
    qt_direct_io = true;
    if (qt_open(path, true, NULL, &img) == 0) {
        QT_CHECK(!to_qcow2(img)->prealloc);
        QT_CHECK(image_close(img) == 0);
    } else {
        QT_FAIL("open read-only");
    }
    qt_direct_io = false;
}

int main(void)
{
    qt_require_qemu();
    host_log_install();
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "prealloc");
    check_steps();
    check_ahead(dir);
    check_threshold(dir);
    check_crash(dir);
    check_not_buffered(dir);
    qt_rmtree(dir);
    printf("%s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
