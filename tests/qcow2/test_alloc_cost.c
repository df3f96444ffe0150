/* qlun — what an allocating write costs on the host, and that the
 * shortcut behind it stays inside its rule.
 *
 * 1. A 4 KiB write into an unallocated cluster of an image whose file
 *    ends before the new cluster: the new cluster reads as zeros already
 *    (past the end of the file), so the write is one pwritev of 4 KiB:
 *    no fallocate (ZERO_RANGE), no zero buffers.  The same for a partial
 *    write with extended L2 and with O_DIRECT (aligned).
 * 2. A freed cluster reused inside the file keeps what it held: a partial
 *    write into it must make the rest read as zeros.  The freed cluster
 *    is given back without punching a hole (the hook refuses PUNCH_HOLE,
 *    as a filesystem without it would), so its old bytes are still there;
 *    the test checks that the new write did land in that cluster, then
 *    reads the unwritten part back: zeros.  Also after a reopen.
 *
 * "Can it fail?"  Without the past-the-end rule (alloc_data_cluster's
 * fresh = false), part 1 sees a fallocate or a 64 KiB write; with it
 * applied inside the file (fresh = true for every cluster), part 2 reads
 * the old bytes back.
 */
#include <linux/falloc.h>
#include <pthread.h>

#include "block/host.h"
#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "host_log.h"
#include "qtest.h"

/* Host offset of guest cluster gc's data (0: none). */
static uint64_t host_of(struct image *img, uint64_t gc)
{
    struct qcow2 *q = to_qcow2(img);
    struct l2e e;
    pthread_mutex_lock(&q->lock);
    int ret = qcow2_get_l2e(q, gc, &e);
    pthread_mutex_unlock(&q->lock);
    return ret < 0 ? 0 : e.host;
}

/* An allocating 4 KiB write at guest offset 64 KiB + at (cluster 1,
 * whose L2 table exists after the first write). */
static void check_fresh_write(const char *dir, const char *opts, bool direct,
                              size_t at)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/fresh.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' 4M", opts, path))
        return;
    qt_direct_io = direct;
    struct image *img;
    int r = qt_open(path, false, NULL, &img);
    qt_direct_io = false;
    if (r < 0) {
        QT_FAIL("open");
        return;
    }
    uint8_t *buf;
    if (posix_memalign((void **)&buf, 4096, 65536)) {
        QT_FAIL("memalign");
        return;
    }
    memset(buf, 0x3c, 65536);
    QT_CHECK(image_write(img, buf, 4096, 0, 0) == 0);
    QT_CHECK(image_flush(img) == 0);
    host_log_reset();
    QT_CHECK(image_write(img, buf, 4096, 65536 + at, 0) == 0);
    size_t writes = host_log_count(HOST_WRITE);
    uint64_t bytes = host_log_bytes(HOST_WRITE);
    size_t fallocs = host_log_count(HOST_FALLOC);
    printf("%s%s: allocating 4 KiB write: %zu pwritev (%" PRIu64 " bytes), "
           "%zu fallocate\n", opts, direct ? " O_DIRECT" : "", writes, bytes,
           fallocs);
    if (writes != 1 || bytes != 4096 || fallocs != 0)
        QT_FAIL("%s: allocating 4 KiB write past the end of the file made "
                "%zu pwritev (%" PRIu64 " bytes) and %zu fallocate; want 1, "
                "4096, 0", opts, writes, bytes, fallocs);
    uint8_t back[65536];
    QT_CHECK(image_read(img, back, 65536, 65536) == 0);
    for (size_t i = 0; i < 65536; i++)
        if (back[i] != (i >= at && i < at + 4096 ? 0x3c : 0)) {
            QT_FAIL("%s: byte %zu of the new cluster is %#x", opts, i,
                    back[i]);
            break;
        }
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    QT_CHECK(qt_must("qemu-io -c 'read -P 0 65536 %zu' -c 'read -P 0x3c "
                     "%zu 4096' -c 'read -P 0 %zu %zu' '%s'", at, 65536 + at,
                     65536 + at + 4096, 65536 - at - 4096, path));
    free(buf);
}

/* Guest cluster 0 filled with 0xee, flushed; discarded (the host cluster
 * is freed at the next flush, not punched); then a 4 KiB write into guest
 * cluster 2 must reuse that host cluster and read zeros around the 4 KiB. */
static void check_reused_cluster(const char *dir, const char *opts)
{
    char path[4200];
    const size_t cs = 65536;
    snprintf(path, sizeof(path), "%s/reuse.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o %s '%s' 4M", opts, path))
        return;
    struct image *img;
    if (qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("open");
        return;
    }
    uint8_t *buf = malloc(cs), *back = malloc(cs);
    memset(buf, 0xee, cs);
    QT_CHECK(image_write(img, buf, cs, 0, 0) == 0);
    QT_CHECK(image_write(img, buf, cs, cs, 0) == 0); /* keeps the file long */
    QT_CHECK(image_flush(img) == 0);
    uint64_t old = host_of(img, 0);
    host_log_refuse = FALLOC_FL_PUNCH_HOLE;
    QT_CHECK(image_discard(img, 0, cs) == 0);
    QT_CHECK(image_flush(img) == 0); /* applies the free */
    memset(buf, 0x17, 4096);
    QT_CHECK(image_write(img, buf, 4096, 2 * cs + 4096, 0) == 0);
    host_log_refuse = 0;
    uint64_t now = host_of(img, 2);
    if (old == 0 || now != old)
        QT_FAIL("%s: the freed host cluster %#" PRIx64 " was not reused "
                "(new write at %#" PRIx64 "): test setup", opts, old, now);
    for (int pass = 0; pass < 2; pass++) {
        QT_CHECK(image_read(img, back, cs, 2 * cs) == 0);
        for (size_t i = 0; i < cs; i++)
            if (back[i] != (i >= 4096 && i < 8192 ? 0x17 : 0)) {
                QT_FAIL("%s (%s): reused cluster byte %zu reads %#x, want "
                        "%#x", opts, pass ? "reopened" : "open", i, back[i],
                        i >= 4096 && i < 8192 ? 0x17 : 0);
                break;
            }
        QT_CHECK(image_close(img) == 0);
        if (pass == 0 && qt_open(path, false, NULL, &img) < 0) {
            QT_FAIL("reopen");
            break;
        }
    }
    QT_CHECK(qt_check(path) == 0);
    free(buf);
    free(back);
}

int main(void)
{
    qt_require_qemu();
    host_log_install();
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "alloccost");
    /* Unaligned: head and tail inside the touched subclusters. */
    check_fresh_write(dir, "cluster_size=64k", false, 8192 + 512);
    check_fresh_write(dir, "extended_l2=on", false, 8192 + 512);
    check_fresh_write(dir, "cluster_size=64k", true, 8192);
    check_reused_cluster(dir, "cluster_size=64k");
    check_reused_cluster(dir, "extended_l2=on,cluster_size=64k");
    check_reused_cluster(dir, "compat=0.10,cluster_size=64k");
    qt_rmtree(dir);
    printf("%s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
