/* qlun — internal snapshots on a live qcow2 image: list, create, delete.
 *
 * qemu-img is the oracle: what the engine creates must be listed by
 * `qemu-img snapshot -l` (with its disk size) and read back by
 * `qemu-img convert -l snapshot.name=...` as the content the image had
 * when it was taken; what qemu-img creates must be listed and deletable
 * by the engine; after every step `qemu-img check` must find no error and
 * no leak.  Plus what only the engine can show: writes after a snapshot
 * copy (the snapshot keeps its data), writes after the last snapshot is
 * deleted go in place again (no allocation).
 */
#include <assert.h>
#include <sys/stat.h>
#include <time.h>

#include "block/host.h"

#include "common/util.h"
#include "qcow2/qcow2-internal.h"
#include "qtest.h"

static char dir[4096];

/* ---- helpers ---- */

static void img_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* The guest content of snapshot sn of img (NULL: the active image), by
 * qemu-img. */
static uint8_t *qemu_content(const char *img, const char *sn, size_t *len)
{
    char extra[512] = "";
    if (sn)
        snprintf(extra, sizeof(extra), "-l snapshot.name=%s", sn);
    return qt_qemu_raw(img, dir, len, extra);
}

QT_FN bool content_is(const char *img, const char *sn, const uint8_t *want,
                       size_t size)
{
    size_t len = 0;
    uint8_t *got = qemu_content(img, sn, &len);
    bool ok = got && len == size && qt_first_diff(got, want, size) < 0;
    if (!ok)
        QT_FAIL("%s snapshot %s: content differs (len %zu, first diff %ld)",
                img, sn ? sn : "(active)", len,
                got && len == size ? qt_first_diff(got, want, size) : -1L);
    free(got);
    return ok;
}

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

/* Write pattern (seed) at [off, off+len) through the engine and into the
 * model. */
QT_FN void put(struct image *img, uint8_t *model, uint64_t off, size_t len,
                uint8_t seed)
{
    uint8_t *b = malloc(len);
    fill(b, len, seed);
    int ret = image_write(img, b, len, off, 0);
    QT_CHECK(ret == 0);
    memcpy(model + off, b, len);
    free(b);
}

QT_FN int snap_create(struct image *img, const char *name)
{
    char err[512] = "";
    int ret = image_snapshot_create(img, name, err, sizeof(err));
    if (ret < 0 && getenv("QLUN_TEST_VERBOSE"))
        fprintf(stderr, "create %s: %s\n", name, err);
    return ret;
}

QT_FN int snap_delete(struct image *img, const char *name)
{
    char err[512] = "";
    int ret = image_snapshot_delete(img, name, err, sizeof(err));
    if (ret < 0 && getenv("QLUN_TEST_VERBOSE"))
        fprintf(stderr, "delete %s: %s\n", name, err);
    return ret;
}

/* qemu-img snapshot -l shows a line with name and disk size? */
QT_FN bool qemu_lists(const char *img, const char *name, const char *size)
{
    char out[8192];
    if (qt_run_out(out, sizeof(out), "qemu-img snapshot -l '%s'", img) != 0)
        return false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char id[64], nm[300];
        if (sscanf(line, "%63s %299s", id, nm) == 2 &&
            strcmp(nm, name) == 0 && (!size || strstr(line, size)))
            return true;
    }
    return false;
}

/* ---- list ---- */

/* Snapshots made by qemu-img (one with VM-state-like fields through
 * qemu-img's defaults) are listed by the engine with their names, ids,
 * dates and disk sizes; a name with unprintable bytes comes back as '?'. */
static void test_list_qemu_made(void)
{
    char img[4200];
    img_path(img, sizeof(img), "list.qcow2");
    qt_must("qemu-img create -q -f qcow2 '%s' 4M", img);
    qt_must("qemu-io -c 'write -P 1 0 64k' '%s'", img);
    time_t before = time(NULL);
    qt_must("qemu-img snapshot -c first '%s'", img);
    qt_must("qemu-img resize -q '%s' 8M", img);
    qt_must("qemu-img snapshot -c \"$(printf 'we\\tird')\" '%s'", img);

    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open");
        return;
    }
    struct image_snapshot_info *l;
    size_t n;
    char err[256];
    QT_CHECK(image_snapshot_list(im, &l, &n, err, sizeof(err)) == 0);
    QT_CHECK(n == 2);
    if (n == 2) {
        QT_CHECK(strcmp(l[0].id, "1") == 0);
        QT_CHECK(strcmp(l[0].name, "first") == 0);
        QT_CHECK(l[0].disk_size == 4u << 20);
        QT_CHECK(l[0].date_sec >= (uint64_t)before - 1 &&
                 l[0].date_sec <= (uint64_t)time(NULL) + 1);
        QT_CHECK(l[0].vm_state_size == 0);
        QT_CHECK(strcmp(l[1].id, "2") == 0);
        QT_CHECK(strcmp(l[1].name, "we?ird") == 0);
        QT_CHECK(l[1].disk_size == 8u << 20);
    }
    free(l);
    image_close(im);
}

/* raw has no snapshots: each operation fails -ENOTSUP and says why. */
static void test_raw_has_none(void)
{
    char img[4200], err[256] = "";
    img_path(img, sizeof(img), "plain.raw");
    qt_must("qemu-img create -q -f raw '%s' 1M", img);
    struct image *im;
    struct image_open_opts o = { .path = img, .format = "raw" };
    if (image_open(&o, &im, err, sizeof(err)) < 0) {
        QT_FAIL("open raw: %s", err);
        return;
    }
    struct image_snapshot_info *l = (void *)1;
    size_t n = 7;
    QT_CHECK(image_snapshot_list(im, &l, &n, err, sizeof(err)) == -ENOTSUP);
    QT_CHECK(l == NULL && n == 0);
    QT_CHECK(strstr(err, "raw format has no internal snapshots") != NULL);
    err[0] = 0;
    QT_CHECK(image_snapshot_create(im, "a", err, sizeof(err)) == -ENOTSUP);
    QT_CHECK(strstr(err, "no internal snapshots") != NULL);
    err[0] = 0;
    QT_CHECK(image_snapshot_delete(im, "a", err, sizeof(err)) == -ENOTSUP);
    QT_CHECK(strstr(err, "no internal snapshots") != NULL);
    image_close(im);
}

/* ---- create and delete: content and refcounts ---- */

/* Pattern A; snapshot s1; B over parts; s2; C over parts: qemu-img reads
 * s1 as A, s2 as A+B, the image as A+B+C, and checks it clean.  Then s1
 * is deleted (by id) while s2 stays right; then s2 (by name).  opts:
 * qemu-img create -o; compressed: A is written by qemu-img convert -c
 * (compressed clusters, several per host cluster). */
static void test_content(const char *opts, uint64_t size, bool compressed)
{
    char img[4200], raw[4200];
    img_path(img, sizeof(img), "content.qcow2");
    img_path(raw, sizeof(raw), "a.raw");
    uint8_t *a = calloc(1, size), *ab = NULL, *abc = NULL;
    fill(a, size / 2, 0x11); /* the second half stays unallocated */
    if (compressed) {
        qt_write_file(raw, a, size);
        qt_must("qemu-img convert -c -f raw -O qcow2 -o %s '%s' '%s'", opts,
                raw, img);
    } else {
        qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, opts, img,
                size);
    }
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open %s", opts);
        goto out;
    }
    if (!compressed)
        QT_CHECK(image_write(im, a, size / 2, 0, 0) == 0);
    QT_CHECK(snap_create(im, "s1") == 0);
    ab = malloc(size);
    memcpy(ab, a, size);
    put(im, ab, 512, 3000, 0x22);                  /* partial cluster */
    put(im, ab, size / 4, size / 2, 0x23);         /* into unallocated */
    QT_CHECK(snap_create(im, "s2") == 0);
    QT_CHECK(snap_create(im, "s2") == -EEXIST);
    abc = malloc(size);
    memcpy(abc, ab, size);
    put(im, abc, 0, size / 8, 0x33);
    put(im, abc, size - 4096, 4096, 0x34);
    QT_CHECK(image_close(im) == 0);

    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(qemu_lists(img, "s1", NULL) && qemu_lists(img, "s2", NULL));
    content_is(img, "s1", a, size);
    content_is(img, "s2", ab, size);
    content_is(img, NULL, abc, size);

    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("reopen %s", opts);
        goto out;
    }
    QT_CHECK(snap_delete(im, "1") == 0);   /* s1, by its id */
    QT_CHECK(snap_delete(im, "s1") == -ENOENT);
    QT_CHECK(qt_compare_image(im, abc, "after delete s1"));
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(!qemu_lists(img, "s1", NULL));
    content_is(img, "s2", ab, size);
    content_is(img, NULL, abc, size);

    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("reopen %s", opts);
        goto out;
    }
    QT_CHECK(snap_delete(im, "s2") == 0);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    content_is(img, NULL, abc, size);
out:
    free(a);
    free(ab);
    free(abc);
    unlink(img);
    unlink(raw);
}

/* A snapshot qemu-img made is deleted by the engine (clean check, the
 * other one intact); qemu-img snapshot -a reverts to one the engine made,
 * including its disk size (the image was resized after it). */
static void test_interop(void)
{
    char img[4200];
    img_path(img, sizeof(img), "interop.qcow2");
    const uint64_t size = 4u << 20;
    uint8_t *a = calloc(1, size), *b = NULL;
    qt_must("qemu-img create -q -f qcow2 '%s' %" PRIu64, img, size);
    qt_must("qemu-io -c 'write -P 0x41 0 1M' '%s'", img);
    qt_must("qemu-img snapshot -c qemu1 '%s'", img);
    memset(a, 0x41, 1u << 20);
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open");
        goto out;
    }
    put(im, a, 4096, 8192, 0x42);
    QT_CHECK(snap_create(im, "ours") == 0);
    b = malloc(size);
    memcpy(b, a, size);
    put(im, b, 0, 65536, 0x43);
    QT_CHECK(snap_delete(im, "qemu1") == 0);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(!qemu_lists(img, "qemu1", NULL));
    content_is(img, "ours", a, size);

    /* Offline revert by QEMU, after growing the image. */
    qt_must("qemu-img resize -q '%s' 8M", img);
    qt_must("qemu-img snapshot -a ours '%s'", img);
    char out[4096];
    qt_run_out(out, sizeof(out), "qemu-img info --output=json '%s'", img);
    QT_CHECK(strstr(out, "\"virtual-size\": 4194304") != NULL);
    content_is(img, NULL, a, size);
    QT_CHECK(qt_check(img) == 0);
out:
    free(a);
    free(b);
    unlink(img);
}

/* Refusals that must change nothing: an empty or control-character name,
 * a version 2 image, refcount_bits=1 (a cluster cannot be shared), and a
 * refcount that would overflow half-way through (refcount_bits=2: the
 * third snapshot would need 4 references; the ones already added are
 * taken back). */
static void test_refusals(void)
{
    char img[4200];
    img_path(img, sizeof(img), "refuse.qcow2");
    const uint64_t size = 1u << 20;
    uint8_t *m = calloc(1, size);
    struct image *im;

    qt_must("qemu-img create -q -f qcow2 -o compat=0.10 '%s' 1M", img);
    if (qt_open(img, false, NULL, &im) == 0) {
        QT_CHECK(snap_create(im, "") == -EINVAL);
        QT_CHECK(snap_create(im, "a\nb") == -EINVAL);
        QT_CHECK(snap_create(im, "v2") == -ENOTSUP);
        image_close(im);
    }
    QT_CHECK(qt_check(img) == 0);

    qt_must("qemu-img create -q -f qcow2 -o refcount_bits=1 '%s' 1M", img);
    if (qt_open(img, false, NULL, &im) == 0) {
        put(im, m, 0, 200000, 0x51);
        QT_CHECK(snap_create(im, "one") == -EOVERFLOW);
        put(im, m, 100000, 1000, 0x52); /* still in place, still works */
        image_close(im);
    }
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(!qemu_lists(img, "one", NULL));
    content_is(img, NULL, m, size);

    qt_must("qemu-img create -q -f qcow2 -o refcount_bits=2 '%s' 1M", img);
    memset(m, 0, size);
    if (qt_open(img, false, NULL, &im) == 0) {
        put(im, m, 0, 300000, 0x61);
        QT_CHECK(snap_create(im, "r1") == 0);
        put(im, m, 0, 70000, 0x62); /* some clusters at 1 again */
        QT_CHECK(snap_create(im, "r2") == 0);
        QT_CHECK(snap_create(im, "r3") == -EOVERFLOW);
        QT_CHECK(!(image_state(im) & IMAGE_STATE_CORRUPT));
        put(im, m, 0, 1000, 0x63);
        image_close(im);
    }
    QT_CHECK(qt_check(img) == 0);
    QT_CHECK(qemu_lists(img, "r2", NULL) && !qemu_lists(img, "r3", NULL));
    content_is(img, NULL, m, size);
    free(m);
    unlink(img);
}

/* Writes after a snapshot copy (a new host cluster: host_end grows, the
 * snapshot keeps the old data); once the snapshot is deleted, writes into
 * the clusters that are again only the image's go in place (host_end
 * stays).  Also under lazy refcounts, where the dirty bit stays set. */
static void test_cow_then_in_place(const char *opts)
{
    char img[4200];
    img_path(img, sizeof(img), "cow.qcow2");
    const uint64_t size = 4u << 20;
    uint8_t *m = calloc(1, size), *old = NULL;
    qt_must("qemu-img create -q -f qcow2 -o %s '%s' 4M", opts, img);
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open");
        goto out;
    }
    struct qcow2 *q = to_qcow2(im);
    put(im, m, 0, 1u << 20, 0x71);
    QT_CHECK(image_flush(im) == 0);
    uint64_t end0 = q->host_end;
    put(im, m, 0, 65536, 0x72);                      /* owned: in place */
    QT_CHECK(q->host_end == end0);
    QT_CHECK(snap_create(im, "keep") == 0);
    old = malloc(size);
    memcpy(old, m, size);
    uint64_t end1 = q->host_end;
    put(im, m, 65536, 65536, 0x73);                  /* shared: copied */
    QT_CHECK(q->host_end > end1);
    QT_CHECK(image_flush(im) == 0);
    size_t len = 0;
    uint8_t *kept = qt_qemu_raw(img, dir, &len, "-U -l snapshot.name=keep");
    QT_CHECK(kept && len == size && qt_first_diff(kept, old, size) < 0);
    free(kept);
    QT_CHECK(snap_delete(im, "keep") == 0);
    QT_CHECK(image_flush(im) == 0);
    uint64_t end2 = q->host_end;
    put(im, m, 3 * 65536, 5 * 65536, 0x74);          /* owned again */
    put(im, m, 65536, 4096, 0x75);
    QT_CHECK(q->host_end == end2);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    content_is(img, NULL, m, size);
out:
    free(m);
    free(old);
    unlink(img);
}

static unsigned fallocate_calls;

static int counting_fallocate(int fd, int mode, off_t off, off_t len)
{
    fallocate_calls++;
    return fallocate(fd, mode, off, len);
}

static int64_t file_blocks(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_blocks * 512 : -1;
}

/* Deleting a snapshot whose clusters the image no longer uses gives them
 * back to the host, in runs (a hole per contiguous run, not per
 * cluster). */
static void test_delete_gives_back(void)
{
    char img[4200];
    img_path(img, sizeof(img), "giveback.qcow2");
    const uint64_t size = 4u << 20;
    uint8_t *m = calloc(1, size);
    qt_must("qemu-img create -q -f qcow2 '%s' 4M", img);
    struct image *im;
    if (qt_open(img, false, NULL, &im) < 0) {
        QT_FAIL("open");
        free(m);
        return;
    }
    put(im, m, 0, 2u << 20, 0x81);
    QT_CHECK(snap_create(im, "old") == 0);
    put(im, m, 0, 2u << 20, 0x82); /* 32 clusters copied */
    QT_CHECK(image_flush(im) == 0);
    int64_t before = file_blocks(img);
    fallocate_calls = 0;
    host_sys.fallocate = counting_fallocate;
    QT_CHECK(snap_delete(im, "old") == 0);
    host_sys.fallocate = fallocate;
    int64_t after = file_blocks(img);
    QT_CHECK(before - after >= (int64_t)(2u << 20));
    if (fallocate_calls > 4)
        QT_FAIL("%u hole punches for 32 contiguous clusters (and a few "
                "tables)", fallocate_calls);
    QT_CHECK(image_close(im) == 0);
    QT_CHECK(qt_check(img) == 0);
    content_is(img, NULL, m, size);
    free(m);
    unlink(img);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "test_snapshot");
    test_list_qemu_made();
    test_raw_has_none();
    test_content("cluster_size=65536", 8u << 20, false);
    test_content("cluster_size=512", 1u << 20, false);
    test_content("cluster_size=2M", 16u << 20, false);
    test_content("cluster_size=65536,extended_l2=on", 8u << 20, false);
    test_content("cluster_size=65536", 4u << 20, true);
    test_content("cluster_size=4096,refcount_bits=16", 2u << 20, true);
    test_interop();
    test_refusals();
    test_cow_then_in_place("cluster_size=65536");
    test_cow_then_in_place("cluster_size=65536,lazy_refcounts=on");
    test_delete_gives_back();
    qt_rmtree(dir);
    return qt_summary("test_snapshot");
}
