/* qlun — what zeroing a whole LUN costs on the host (the ks3200 convert:
 * WRITE SAME(16) with UNMAP over everything, then data), and that the
 * shortcuts behind it stay inside their rules.
 *
 * 1. WRITE SAME + UNMAP (and without UNMAP) over an empty image with no
 *    backing file writes nothing at all: no L2 table is allocated (the L1
 *    table stays empty), no pwritev, no fallocate.  Unallocated clusters
 *    already read as zeros there.
 * 2. The negatives, where zero flags ARE needed: with a backing file
 *    under unallocated clusters (its data would show through), and with
 *    data clusters underneath.  The image then reads as zeros through the
 *    engine, and qemu-img agrees (map: zero, no data; compare with a
 *    zero raw image), and qemu-img check is clean.
 * 3. Freed clusters go back to the host a run at a time: zeroing 64
 *    host-contiguous data clusters with UNMAP punches one hole covering
 *    all 64, not 64 holes.  And the rule the frees rely on still holds:
 *    the hole is punched only after the L2 table that dropped the
 *    clusters was written and flushed (fdatasync).
 *
 * "Can it fail?"  Without the unallocated shortcut (io.c zero_cluster),
 * part 1 sees L2 tables written; applying it where a backing file shows
 * through or where data is allocated, part 2 reads the old bytes back;
 * releasing cluster by cluster, part 3 counts 64 punches; applying the
 * frees before the L2 write-back, part 3 sees a punch before the flush.
 */
#include <linux/falloc.h>
#include <pthread.h>

#include "block/host.h"
#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "scsi/scsi.h"
#include "host_log.h"
#include "qtest.h"

#define CS 65536u

/* A LUN over img, as the handler makes one (512-byte blocks, WCE=1). */
static struct scsi_lun *lun_over(struct image *img)
{
    struct scsi_lun *lun = NULL;
    struct scsi_lun_config cfg = {
        .img = img, .block_size = 512, .num_blocks = img->size / 512,
        .max_xfer_blocks = 1024, .serial = "zerocost", .write_cache = true,
    };
    if (scsi_lun_new(&cfg, &lun) < 0)
        QT_FAIL("scsi_lun_new");
    return lun;
}

/* WRITE SAME(16) of one zero block over the whole LUN, UNMAP or not. */
static bool write_same_all(struct image *img, bool unmap)
{
    struct scsi_lun *lun = lun_over(img);
    if (!lun)
        return false;
    uint8_t cdb[16] = { 0x93, unmap ? 0x08 : 0 }, zero[512] = { 0 };
    put_be32(cdb + 10, (uint32_t)(img->size / 512));
    struct iovec v = { zero, sizeof(zero) };
    struct scsi_cmd c = { .cdb = cdb, .cdb_len = 16, .iov = &v, .iovcnt = 1 };
    int st = scsi_lun_exec(lun, &c);
    scsi_lun_free(lun);
    if (st != SCSI_STATUS_GOOD)
        QT_FAIL("WRITE SAME(16)%s: status %#x", unmap ? " UNMAP" : "", st);
    return st == SCSI_STATUS_GOOD;
}

static bool reads_zero(struct image *img, const char *what)
{
    uint8_t *buf = malloc(img->size);
    bool ok = buf && image_read(img, buf, img->size, 0) == 0;
    for (uint64_t i = 0; ok && i < img->size; i++)
        if (buf[i]) {
            QT_FAIL("%s: byte %" PRIu64 " reads %#x after zeroing", what, i,
                    buf[i]);
            ok = false;
        }
    free(buf);
    return ok;
}

static size_t l1_entries_used(struct image *img)
{
    struct qcow2 *q = to_qcow2(img);
    size_t n = 0;
    for (uint32_t i = 0; i < q->l1_size; i++)
        n += q->l1[i] != 0;
    return n;
}

/* qemu-img's view: the same bytes as zeros, and (v3: zero flags; v2
 * has none and writes zeros as data) no extent with data. */
static void qemu_sees_zeros(const char *dir, const char *path, uint64_t size,
                            const char *what)
{
    char out[65536];
    if (qt_run_out(out, sizeof(out), "qemu-img map --output=json '%s'",
                   path) != 0) {
        QT_FAIL("%s: qemu-img map failed: %s", what, out);
        return;
    }
    if (!strstr(what, "compat=0.10") && strstr(out, "\"data\": true"))
        QT_FAIL("%s: qemu-img map still shows data: %s", what, out);
    QT_CHECK(qt_must("qemu-img create -q -f raw '%s/zero.raw' %" PRIu64, dir,
                     size));
    if (!qt_must("qemu-img compare -q '%s' '%s/zero.raw'", path, dir))
        QT_FAIL("%s: qemu-img compare with zeros differs", what);
    QT_CHECK(qt_check(path) == 0);
}

/* Part 1: an empty image without backing, zeroed with and without
 * UNMAP, then flushed: the host sees nothing. */
static void check_empty(const char *dir, const char *opts)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/empty.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' 64M", opts, path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    QT_CHECK(image_flush(img) == 0); /* the open's own header update */
    host_log_reset();
    QT_CHECK(write_same_all(img, true));
    QT_CHECK(write_same_all(img, false));
    QT_CHECK(image_flush(img) == 0);
    size_t writes = host_log_count(HOST_WRITE);
    size_t fallocs = host_log_count(HOST_FALLOC);
    printf("%s: zeroing an empty 64 MiB LUN twice: %zu pwritev, %zu "
           "fallocate, %zu L1 entries\n", opts, writes, fallocs,
           l1_entries_used(img));
    if (writes || fallocs)
        QT_FAIL("%s: zeroing an unallocated backing-less image wrote %zu "
                "times and fallocated %zu times; want nothing", opts,
                writes, fallocs);
    QT_CHECK(l1_entries_used(img) == 0);
    QT_CHECK(reads_zero(img, opts));
    QT_CHECK(image_close(img) == 0);
    qemu_sees_zeros(dir, path, 64 << 20, opts);
}

/* Part 2a: unallocated clusters over a backing file of 0xaa. */
static void check_backing(const char *dir, const char *opts, bool unmap)
{
    char base[4200], path[4200];
    snprintf(base, sizeof(base), "%s/base.qcow2", dir);
    snprintf(path, sizeof(path), "%s/overlay.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 8M && qemu-io -c "
                 "'write -P 0xaa 0 8M' '%s' && qemu-img create -q -f qcow2 "
                 "-o %s -b '%s' -F qcow2 '%s'", base, base, opts, base,
                 path))
        return;
    struct image *img;
    if (qt_open(path, false, "/", &img) < 0) {
        QT_FAIL("open");
        return;
    }
    char what[200];
    snprintf(what, sizeof(what), "%s over a backing file%s", opts,
             unmap ? ", UNMAP" : "");
    QT_CHECK(write_same_all(img, unmap));
    QT_CHECK(image_flush(img) == 0);
    if (l1_entries_used(img) == 0)
        QT_FAIL("%s: no L2 table: the backing file shows through", what);
    QT_CHECK(reads_zero(img, what));
    QT_CHECK(image_close(img) == 0);
    qemu_sees_zeros(dir, path, 8 << 20, what);
}

/* Part 2b: data clusters (0x5c) scattered through an image without
 * backing, zeroed. */
static void check_allocated(const char *dir, const char *opts, bool unmap)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/alloc.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' 8M && qemu-io "
                 "-c 'write -P 0x5c 0 64k' -c 'write -P 0x5c 1M 4k' -c "
                 "'write -P 0x5c 3M 192k' -c 'write -z 5M 64k' '%s'", opts,
                 path, path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    char what[200];
    snprintf(what, sizeof(what), "%s with data clusters%s", opts,
             unmap ? ", UNMAP" : "");
    QT_CHECK(write_same_all(img, unmap));
    QT_CHECK(image_flush(img) == 0);
    QT_CHECK(reads_zero(img, what));
    QT_CHECK(image_close(img) == 0);
    qemu_sees_zeros(dir, path, 8 << 20, what);
}

/* Part 3: 64 host-contiguous data clusters zeroed with UNMAP. */
static void check_one_punch(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/run.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 '%s' 8M", path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    uint8_t *buf = malloc(64 * CS);
    memset(buf, 0x71, 64 * CS);
    QT_CHECK(image_write(img, buf, 64 * CS, 0, 0) == 0);
    QT_CHECK(image_flush(img) == 0);
    struct qcow2 *q = to_qcow2(img);
    uint64_t l2 = q->l1[0] & L1E_OFFSET_MASK, first_host;
    struct l2e e;
    pthread_mutex_lock(&q->lock);
    QT_CHECK(qcow2_get_l2e(q, 0, &e) == 0);
    pthread_mutex_unlock(&q->lock);
    first_host = e.host;

    host_log_reset();
    QT_CHECK(image_zero(img, 0, 64 * CS, IMAGE_MAY_UNMAP) == 0);
    QT_CHECK(image_flush(img) == 0);
    size_t punches = host_log_fallocs(FALLOC_FL_PUNCH_HOLE);
    printf("zeroing 64 data clusters with UNMAP: %zu holes punched\n",
           punches);
    if (punches != 1)
        QT_FAIL("%zu holes punched for 64 host-contiguous clusters; want 1",
                punches);
    /* The punch comes after the L2 table's write-back and a flush after
     * that: before then, a crash would leave the old L2 entries pointing
     * at clusters the host has already dropped. */
    bool l2_written = false, l2_durable = false;
    for (size_t i = 0; i < host_log_n; i++) {
        const struct host_op *o = &host_log[i];
        if (o->kind == HOST_WRITE && o->off >= l2 && o->off < l2 + CS)
            l2_written = true;
        else if (o->kind == HOST_SYNC && l2_written)
            l2_durable = true;
        else if (o->kind == HOST_FALLOC &&
                 (o->mode & FALLOC_FL_PUNCH_HOLE)) {
            if (!l2_durable)
                QT_FAIL("hole %#" PRIx64 "+%#" PRIx64 " punched before the "
                        "L2 table dropping it was written and flushed",
                        o->off, o->len);
            if (o->off != first_host || o->len != 64ull * CS)
                QT_FAIL("hole %#" PRIx64 "+%#" PRIx64 ", want %#" PRIx64
                        "+%#x", o->off, o->len, first_host, 64 * CS);
        }
    }
    QT_CHECK(host_log_lost == 0); /* the order above saw everything */
    QT_CHECK(reads_zero(img, "run"));
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    free(buf);
}

int main(void)
{
    qt_require_qemu();
    host_log_install();
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "zerocost");
    const char *variants[] = { "cluster_size=64k", "extended_l2=on",
                               "compat=0.10" };
    for (size_t v = 0; v < 3; v++) {
        check_empty(dir, variants[v]);
        for (int unmap = 0; unmap < 2; unmap++) {
            check_backing(dir, variants[v], unmap);
            check_allocated(dir, variants[v], unmap);
        }
    }
    check_one_punch(dir);
    qt_rmtree(dir);
    printf("%s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
