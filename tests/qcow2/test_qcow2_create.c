/* qlun — the overlay of an external snapshot (block/overlay.c,
 * qcow2/create.c), checked against qemu-img:
 *  - every cluster size and a large virtual size make an image that
 *    `qemu-img check` finds clean and `qemu-img info` describes: the
 *    size, the backing file (relative to the overlay) and its format;
 *  - the overlay reads its backing file's data through the engine, and
 *    writes land in the overlay only (`qemu-img compare`, `qemu-img map`);
 *  - the path rules: absolute, inside the backing root, never an existing
 *    file or symlink, nothing left behind on failure.
 */
#include "qtest.h"

#include <limits.h>

static char dir[PATH_MAX];

static int make_overlay(struct image *top, const char *path,
                        const char *root, uint32_t cs, char *err,
                        size_t errlen)
{
    err[0] = 0;
    return image_create_overlay(top, path, root, cs, err, errlen);
}

static bool info_has(const char *img, const char *needle)
{
    char out[16384];
    if (qt_run_out(out, sizeof(out), "qemu-img info --output=json '%s'",
                   img) != 0)
        return false;
    if (strstr(out, needle))
        return true;
    fprintf(stderr, "qemu-img info %s lacks %s:\n%s\n", img, needle, out);
    return false;
}

/* A qcow2 base with data, an overlay over it per cluster size: clean,
 * described, reads the base, takes writes. */
static void overlay_over_qcow2(uint32_t cs)
{
    char base[PATH_MAX + 32], ov[PATH_MAX + 32], err[512];
    snprintf(base, sizeof(base), "%s/base-%u.qcow2", dir, cs);
    snprintf(ov, sizeof(ov), "%s/sub/ov-%u.qcow2", dir, cs);
    qt_must("qemu-img create -q -f qcow2 -o cluster_size=65536 '%s' 64M", base);
    qt_must("qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' '%s'", base);
    struct image *top;
    if (qt_open(base, false, NULL, &top) < 0) {
        QT_FAIL("cannot open %s", base);
        return;
    }
    int ret = make_overlay(top, ov, dir, cs, err, sizeof(err));
    image_close(top);
    if (ret < 0) {
        QT_FAIL("overlay with %u-byte clusters: %s (%d)", cs, err, ret);
        return;
    }
    QT_CHECK(qt_check(ov) == 0);
    char want[128];
    snprintf(want, sizeof(want), "\"cluster-size\": %u", cs);
    QT_CHECK(info_has(ov, want));
    QT_CHECK(info_has(ov, "\"virtual-size\": 67108864"));
    snprintf(want, sizeof(want), "\"backing-filename\": \"../base-%u.qcow2\"", cs);
    QT_CHECK(info_has(ov, want));
    QT_CHECK(info_has(ov, "\"backing-filename-format\": \"qcow2\""));
    QT_CHECK(qt_run("qemu-img compare -q '%s' '%s'", base, ov) == 0);

    /* Through our engine: the base's data shows through, a write stays
     * in the overlay. */
    struct image *img;
    if (qt_open(ov, false, dir, &img) < 0) {
        QT_FAIL("cannot open overlay %s", ov);
        return;
    }
    uint8_t buf[4096];
    QT_CHECK(image_read(img, buf, sizeof(buf), 2 << 20) == 0);
    QT_CHECK(buf[0] == 0x5a && buf[4095] == 0x5a);
    memset(buf, 0xc3, sizeof(buf));
    QT_CHECK(image_write(img, buf, sizeof(buf), 8 << 20, 0) == 0);
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(ov) == 0);
    QT_CHECK(qt_run("qemu-io -f qcow2 -c 'read -P 0xc3 8M 4k' "
                    "-c 'read -P 0x5a 1M 3M' '%s' | grep -q 'read 4096'",
                    ov) == 0);
    QT_CHECK(qt_run("qemu-io -f qcow2 -c 'read -P 0 8M 4k' '%s' "
                    "| grep -q 'read 4096'", base) == 0);
}

/* Over a raw file: the default cluster size, format raw recorded; a
 * virtual size that needs a multi-cluster L1 and several refcount blocks
 * (512-byte clusters, 2 GiB: 512 KiB of L1 in 1024 clusters). */
static void overlay_over_raw(void)
{
    char base[PATH_MAX + 32], ov[PATH_MAX + 32], err[512];
    snprintf(base, sizeof(base), "%s/base.raw", dir);
    qt_must("truncate -s 2G '%s'", base);
    qt_must("qemu-io -f raw -c 'write -P 0x11 1G 64k' '%s'", base);
    struct image_open_opts o = { .path = base, .format = "raw" };
    struct image *top;
    if (image_open(&o, &top, err, sizeof(err)) < 0) {
        QT_FAIL("open %s: %s", base, err);
        return;
    }
    snprintf(ov, sizeof(ov), "%s/ov-raw.qcow2", dir);
    QT_CHECK(make_overlay(top, ov, dir, 0, err, sizeof(err)) == 0);
    QT_CHECK(info_has(ov, "\"cluster-size\": 65536"));
    QT_CHECK(info_has(ov, "\"backing-filename-format\": \"raw\""));
    QT_CHECK(info_has(ov, "\"backing-filename\": \"base.raw\""));
    QT_CHECK(qt_check(ov) == 0);
    snprintf(ov, sizeof(ov), "%s/ov-raw-512.qcow2", dir);
    QT_CHECK(make_overlay(top, ov, dir, 512, err, sizeof(err)) == 0);
    QT_CHECK(qt_check(ov) == 0);
    QT_CHECK(info_has(ov, "\"virtual-size\": 2147483648"));
    QT_CHECK(qt_run("qemu-img compare -q '%s' '%s'", base, ov) == 0);
    image_close(top);
}

/* The rules for the path. */
static void path_rules(void)
{
    char base[PATH_MAX + 1024], p[PATH_MAX + 64], err[512];
    snprintf(base, sizeof(base), "%s/rules.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 '%s' 16M", base);
    struct image *top;
    if (qt_open(base, true, NULL, &top) < 0) {
        QT_FAIL("cannot open %s", base);
        return;
    }
    /* An existing file is never touched. */
    snprintf(p, sizeof(p), "%s/exists", dir);
    QT_CHECK(qt_write_file(p, "keep", 4));
    QT_CHECK(make_overlay(top, p, dir, 0, err, sizeof(err)) == -EEXIST);
    QT_CHECK(strstr(err, p) != NULL);
    size_t n;
    uint8_t *c = qt_read_file(p, &n);
    QT_CHECK(c && n == 4 && memcmp(c, "keep", 4) == 0);
    free(c);
    /* Nor what a dangling symlink points at. */
    snprintf(p, sizeof(p), "%s/link", dir);
    qt_must("ln -s '%s/target-of-link' '%s'", dir, p);
    QT_CHECK(make_overlay(top, p, dir, 0, err, sizeof(err)) == -EEXIST);
    snprintf(p, sizeof(p), "%s/target-of-link", dir);
    QT_CHECK(access(p, F_OK) != 0);
    /* Outside the root, also through "..". */
    snprintf(p, sizeof(p), "%s/sub/../../escape.qcow2", dir);
    QT_CHECK(make_overlay(top, p, dir, 0, err, sizeof(err)) == -EPERM);
    QT_CHECK(strstr(err, "outside") != NULL);
    /* Relative, a directory, a missing directory. */
    QT_CHECK(make_overlay(top, "ov.qcow2", dir, 0, err, sizeof(err)) ==
             -EINVAL);
    snprintf(p, sizeof(p), "%s/", dir);
    QT_CHECK(make_overlay(top, p, dir, 0, err, sizeof(err)) == -EINVAL);
    snprintf(p, sizeof(p), "%s/missing/ov.qcow2", dir);
    QT_CHECK(make_overlay(top, p, dir, 0, err, sizeof(err)) == -ENOENT);
    /* A bad cluster size; a backing name that does not fit the header
     * cluster: nothing left behind. */
    snprintf(p, sizeof(p), "%s/bad-cs.qcow2", dir);
    QT_CHECK(make_overlay(top, p, dir, 1000, err, sizeof(err)) ==
             -EINVAL);
    QT_CHECK(access(p, F_OK) != 0);
    image_close(top);
    char deep[PATH_MAX + 512];
    snprintf(deep, sizeof(deep), "%s/%0200d/%0200d", dir, 1, 2);
    qt_must("mkdir -p '%s' && qemu-img create -q -f qcow2 '%s/b.qcow2' 1M",
            deep, deep);
    snprintf(base, sizeof(base), "%s/b.qcow2", deep);
    if (qt_open(base, true, NULL, &top) < 0) {
        QT_FAIL("cannot open %s", base);
        return;
    }
    snprintf(p, sizeof(p), "%s/long.qcow2", dir);
    QT_CHECK(make_overlay(top, p, dir, 512, err, sizeof(err)) ==
             -ENAMETOOLONG);
    QT_CHECK(access(p, F_OK) != 0);
    QT_CHECK(make_overlay(top, p, dir, 4096, err, sizeof(err)) == 0);
    QT_CHECK(qt_check(p) == 0);
    image_close(top);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "qcow2-create");
    qt_must("mkdir '%s/sub'", dir);
    static const uint32_t sizes[] = { 512, 4096, 65536, 2u << 20 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        overlay_over_qcow2(sizes[i]);
    overlay_over_raw();
    path_rules();
    if (qt_failed == 0)
        qt_rmtree(dir);
    printf("%s: %d failure(s)\n", qt_failed ? "FAIL" : "PASS", qt_failed);
    return qt_failed ? 1 : 0;
}
