/* The copy-on-read filter (block/copy_on_read.c).
 *  - Concurrent writes and reads through the filter over overlapping
 *    ranges never lose a write: a top that links a write's data only some
 *    time after copying it (as qcow2 does) and many threads; each block's
 *    last acknowledged stamp is what the top holds at the end.  Fails
 *    when the copy-up ignores the range lock.
 *  - A copy-up that fails (ENOSPC on the top) does not fail the read.
 *  - A real qcow2 chain (qcow2 base, qcow2 middle with zeros, qcow2 top):
 *    after a full read the top allocates the lower layers' data
 *    (qemu-img map), zeros become zero clusters (never data), what is
 *    unallocated everywhere stays so, content unchanged (qemu-img
 *    compare with a copy of the chain), qemu-img check clean; with a
 *    base, nothing at or below it is copied.
 * Needs qemu-img for the last part (exit 77 = skipped without). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/copy_on_read.h"
#include "block/driver.h"
#include "block/image.h"
#include "common/iov.h"
#include "tests/qcow2/qtest.h"
#include "tests/unit/memimage.h"

#define SIZE (8u << 20)
#define BLOCK 4096u           /* the writers' unit */
#define CLUSTER (64u * 1024)  /* the top's: a copy-up spans 16 blocks */
#define WRITERS 4
#define READERS 4
#define ROUNDS 500

/* ---- a top that links a write late (the race a copy-up must not lose) */

struct slow_top {
    struct image img;                 /* backing: a memimage */
    struct memimage *m;               /* this layer's data and map */
    pthread_mutex_t lock;
    _Atomic int fail_writes;          /* negative errno, or 0 */
};

static int top_readv(struct image *img, const struct iovec *iov, int cnt,
                     uint64_t off)
{
    struct slow_top *t = (struct slow_top *)img;
    uint64_t len = iov_size(iov, cnt);
    uint8_t *buf = malloc(len);
    image_read(img->backing, buf, len, off); /* never written */
    pthread_mutex_lock(&t->lock);
    for (uint64_t pos = 0; pos < len; pos += MEM_UNIT)
        if (t->m->kind[(off + pos) / MEM_UNIT] != IMAGE_EXTENT_UNALLOCATED)
            memcpy(buf + pos, t->m->data + off + pos, MEM_UNIT);
    pthread_mutex_unlock(&t->lock);
    iov_from_buf(iov, cnt, 0, buf, len);
    free(buf);
    return 0;
}

static int top_writev(struct image *img, const struct iovec *iov, int cnt,
                      uint64_t off, unsigned flags)
{
    (void)flags;
    struct slow_top *t = (struct slow_top *)img;
    int fail = atomic_load(&t->fail_writes);
    if (fail)
        return fail;
    uint64_t len = iov_size(iov, cnt);
    pthread_mutex_lock(&t->lock);
    iov_to_buf(iov, cnt, 0, t->m->data + off, len);
    pthread_mutex_unlock(&t->lock);
    usleep(500); /* data written, cluster not yet linked */
    pthread_mutex_lock(&t->lock);
    mem_mark(t->m, off, len, IMAGE_EXTENT_DATA);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

static int top_block_status(struct image *img, uint64_t off, uint64_t len,
                            enum image_extent_kind *kind, uint64_t *n)
{
    struct slow_top *t = (struct slow_top *)img;
    pthread_mutex_lock(&t->lock);
    int ret = image_block_status(&t->m->img, off, len, kind, n);
    pthread_mutex_unlock(&t->lock);
    return ret;
}

static int top_flush(struct image *img) { (void)img; return 0; }

static int top_close(struct image *img)
{
    struct slow_top *t = (struct slow_top *)img;
    image_close(&t->m->img);
    image_close(img->backing);
    pthread_mutex_destroy(&t->lock);
    free(img->filename);
    free(t);
    return 0;
}

static const struct image_ops top_ops = {
    .name = "slow-top",
    .readv = top_readv,
    .writev = top_writev,
    .flush = top_flush,
    .block_status = top_block_status,
    .close = top_close,
};

/* A top over a backing memimage full of 0xbb data. */
static struct slow_top *slow_top_new(void)
{
    struct memimage *below = memimage_new_thin(SIZE, CLUSTER);
    memset(below->data, 0xbb, SIZE);
    mem_mark(below, 0, SIZE, IMAGE_EXTENT_DATA);
    struct slow_top *t = calloc(1, sizeof(*t));
    t->m = memimage_new_thin(SIZE, CLUSTER);
    pthread_mutex_init(&t->lock, NULL);
    t->img.ops = &top_ops;
    t->img.size = SIZE;
    t->img.filename = strdup("slow-top");
    t->img.backing = &below->img;
    t->img.info = (struct image_info){ .format = "slow-top",
                                       .cluster_size = CLUSTER,
                                       .request_alignment = 1,
                                       .mem_alignment = 1 };
    return t;
}

static struct image *filter;          /* the filter over the slow top */
static _Atomic uint32_t last_stamp[SIZE / BLOCK]; /* acknowledged */
static _Atomic int bad_reads;

static void *writer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id * 7919u;
    uint32_t buf[BLOCK / 4];
    for (uint32_t r = 1; r <= ROUNDS; r++) {
        /* Each writer owns the blocks b with b % WRITERS == id: one
         * writer per block, so its last write is the block's truth. */
        uint64_t b = (uint64_t)(rand_r(&seed) % (SIZE / BLOCK / WRITERS)) *
                     WRITERS + id;
        uint32_t stamp = id << 24 | r;
        for (unsigned i = 0; i < BLOCK / 4; i++)
            buf[i] = stamp;
        if (image_write(filter, buf, BLOCK, b * BLOCK, 0) == 0)
            atomic_store(&last_stamp[b], stamp);
    }
    return NULL;
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 104729u;
    uint8_t *buf = malloc(CLUSTER * 2);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t off = (uint64_t)(rand_r(&seed) % (SIZE / BLOCK - 32)) * BLOCK;
        if (image_read(filter, buf, CLUSTER * 2 - BLOCK, off) != 0)
            atomic_fetch_add(&bad_reads, 1);
    }
    free(buf);
    return NULL;
}

static void test_no_lost_write(void)
{
    memset(last_stamp, 0, sizeof(last_stamp));
    struct slow_top *t = slow_top_new();
    filter = &t->img;
    QT_CHECK(image_insert_filter(&filter, &copy_on_read_driver, NULL, 0) == 0);
    pthread_t th[WRITERS + READERS];
    for (uintptr_t i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    for (uintptr_t i = 0; i < READERS; i++)
        pthread_create(&th[WRITERS + i], NULL, reader, (void *)(i + 1));
    for (int i = 0; i < WRITERS + READERS; i++)
        pthread_join(th[i], NULL);
    QT_CHECK(atomic_load(&bad_reads) == 0);
    uint64_t copied, failures;
    copy_on_read_stats(filter, &copied, &failures);
    QT_CHECK(copied > 0 && failures == 0);
    /* Every block: the last acknowledged write, else the backing data. */
    int lost = 0;
    uint32_t buf[BLOCK / 4];
    for (uint64_t b = 0; b < SIZE / BLOCK; b++) {
        uint32_t want = atomic_load(&last_stamp[b]);
        image_read(&t->img, buf, BLOCK, b * BLOCK);
        if (want && buf[0] != want)
            lost++;
        if (!want && buf[0] != 0xbbbbbbbbu)
            lost++;
    }
    if (lost)
        QT_FAIL("%d blocks lost their last write", lost);
    image_close(filter);
}

/* ENOSPC on the top: the read still returns the data (from below), the
 * failure is counted, nothing is marked allocated. */
static void test_copy_up_failure(void)
{
    struct slow_top *t = slow_top_new();
    struct image *f = &t->img;
    QT_CHECK(image_insert_filter(&f, &copy_on_read_driver, NULL, 0) == 0);
    atomic_store(&t->fail_writes, -ENOSPC);
    uint8_t *buf = malloc(CLUSTER);
    QT_CHECK(image_read(f, buf, CLUSTER, 3 * CLUSTER) == 0);
    QT_CHECK(buf[0] == 0xbb && buf[CLUSTER - 1] == 0xbb);
    uint64_t copied, failures;
    copy_on_read_stats(f, &copied, &failures);
    QT_CHECK(copied == 0 && failures == 1);
    uint64_t n;
    QT_CHECK(copy_on_read_copy_range(f, 0, SIZE, &n) == -ENOSPC && n == 0);
    atomic_store(&t->fail_writes, 0);
    QT_CHECK(copy_on_read_copy_range(f, 0, SIZE, &n) == 0 && n == SIZE);
    QT_CHECK(copy_on_read_copy_range(f, 0, SIZE, &n) == 0 && n == 0);
    free(buf);
    image_close(f);
}

/* ---- a real chain ---- */

/* Bytes of top.qcow2's own layer (depth 0) that qemu-img map reports as
 * data (want_data) or as zeros without data. */
static long long map_bytes(const char *dir, const char *img, bool want_data)
{
    char out[64];
    if (qt_run_out(out, sizeof(out),
                   "cd '%s' && qemu-img map --output=json %s | python3 -c "
                   "'import json,sys; print(sum(e[\"length\"] for e in "
                   "json.load(sys.stdin) if e[\"depth\"] == 0 and "
                   "e[\"data\"] == %s))'", dir, img,
                   want_data ? "True" : "False") != 0)
        return -1;
    return atoll(out);
}

static struct image *open_top(const char *dir, const char *name)
{
    char path[4200], err[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct image_open_opts o = { .path = path, .format = "qcow2",
                                 .backing_root = dir };
    struct image *img = NULL;
    if (image_open(&o, &img, err, sizeof(err)) < 0)
        QT_FAIL("open %s: %s", path, err);
    return img;
}

static void test_qcow2_chain(bool with_base)
{
    char dir[4096];
    qt_mkdtemp(dir, sizeof(dir), "cor");
    /* base: 0x11 over [0, 1536k); mid: 0x22 over [512k, 1536k), zeros
     * over [2M, 2560k); top: 0x33 over [1280k, 1408k); past 1536k
     * (but mid's zeros) nothing anywhere. */
    qt_must("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 4M && "
            "qemu-io -f qcow2 -c 'write -P 0x11 0 1536k' base.qcow2 && "
            "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 4M "
            "&& qemu-io -f qcow2 -c 'write -P 0x22 512k 1M' "
            "-c 'write -z 2M 512k' mid.qcow2 && qemu-img create -q -f qcow2 "
            "-b mid.qcow2 -F qcow2 top.qcow2 4M && qemu-io -f qcow2 "
            "-c 'write -P 0x33 1280k 128k' top.qcow2 && mkdir orig && "
            "cp *.qcow2 orig/", dir);
    struct image *top = open_top(dir, "top.qcow2");
    if (!top)
        return;
    struct image *f = top;
    QT_CHECK(image_insert_filter(&f, &copy_on_read_driver, NULL, 0) == 0);
    if (with_base)
        copy_on_read_set_base(f, image_backing_child(image_backing_child(f)));
    uint8_t *buf = malloc(256 * 1024);
    for (uint64_t off = 0; off < (4u << 20); off += 256 * 1024)
        QT_CHECK(image_read(f, buf, 256 * 1024, off) == 0);
    free(buf);
    uint64_t copied, failures;
    copy_on_read_stats(f, &copied, &failures);
    QT_CHECK(failures == 0);
    QT_CHECK(image_close(f) == 0);
    /* Without a base: [0, 1536k) is the top's data now (its own 128k
     * included), mid's zeros are zero clusters.  With base.qcow2 as the
     * base: only mid's part, [512k, 1536k), and the zeros. */
    long long want_data = with_base ? 1024 * 1024 : 1536 * 1024;
    QT_CHECK(copied == (uint64_t)(want_data - 128 * 1024 + 512 * 1024));
    QT_CHECK(map_bytes(dir, "top.qcow2", true) == want_data);
    QT_CHECK(map_bytes(dir, "top.qcow2", false) == 512 * 1024);
    char path[4200];
    snprintf(path, sizeof(path), "%s/top.qcow2", dir);
    QT_CHECK(qt_check(path) == 0);
    QT_CHECK(qt_run("cd '%s' && qemu-img compare -q orig/top.qcow2 top.qcow2",
                    dir) == 0);
    /* The layers below are untouched. */
    QT_CHECK(qt_run("cd '%s' && cmp -s orig/mid.qcow2 mid.qcow2 && "
                    "cmp -s orig/base.qcow2 base.qcow2", dir) == 0);
    qt_rmtree(dir);
}

int main(void)
{
    /* A few rounds: each can only race while the top has clusters left
     * to copy up. */
    for (int i = 0; i < 3; i++)
        test_no_lost_write();
    test_copy_up_failure();
    if (qt_run("command -v qemu-img && command -v qemu-io && "
               "command -v python3") != 0) {
        printf("SKIP: qemu-img/qemu-io/python3 not installed\n");
        return qt_failed ? 1 : SKIP_CODE;
    }
    test_qcow2_chain(false);
    test_qcow2_chain(true);
    printf("test_copy_on_read: %s\n", qt_failed ? "FAILED" : "ok");
    return qt_failed ? 1 : 0;
}
