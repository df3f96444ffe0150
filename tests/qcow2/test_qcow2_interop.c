/* qlun — qcow2 interop matrix.
 *
 * For each configuration: qemu-img creates the image (and its backing
 * chain), qemu-io fills it with known patterns (write -P, write -z,
 * write -z -u, discard, write -c, internal snapshots), then
 *   1. the engine reads it (read-only) and must equal `qemu-img convert
 *      -O raw`, and block status must never call nonzero bytes zero;
 *   2. the engine writes/zeroes/discards over it (read-write), mirrored
 *      in the expected buffer; after close `qemu-img check` must be clean,
 *      qemu-img's view must equal the expectation, snapshots unchanged.
 */
#include <assert.h>

#include "qtest.h"

struct config {
    const char *name;
    const char *opts;   /* qemu-img create -o ... */
    uint64_t size;
    uint32_t cs;
    bool compress;      /* use write -c */
    bool subclusters;   /* extended L2: sub-cluster patterns */
    int backing;        /* 0 none, 1 raw base, 2 qcow2 base, 3 chain of 3,
                         * 4 raw base without backing_fmt (probe) */
    bool snapshots;
};

static const struct config configs[] = {
    { "v2-64k", "compat=0.10", 16 << 20, 65536, true, false, 0, false },
    { "v3-512-rc1", "cluster_size=512,refcount_bits=1", 4 << 20, 512, false,
      false, 0, false },
    { "v3-4k-rc4", "cluster_size=4k,refcount_bits=4", 8 << 20, 4096, true,
      false, 0, false },
    { "v3-64k-rc64", "refcount_bits=64", 16 << 20, 65536, true, false, 0,
      false },
    { "v3-16k-rc8", "cluster_size=16k,refcount_bits=8", 8 << 20, 16384, true,
      false, 0, false },
    { "v3-2M", "cluster_size=2M", 64 << 20, 2 << 20, true, false, 0, false },
    { "extl2-64k", "extended_l2=on", 16 << 20, 65536, true, true, 0, false },
    { "extl2-32k-qcow2-base", "extended_l2=on,cluster_size=32k", 16 << 20,
      32768, true, true, 2, false },
    { "zstd", "compression_type=zstd", 16 << 20, 65536, true, false, 0,
      false },
    { "zstd-4k", "compression_type=zstd,cluster_size=4k", 8 << 20, 4096, true,
      false, 0, false },
    { "lazy", "lazy_refcounts=on", 16 << 20, 65536, true, false, 0, false },
    { "prealloc-metadata", "preallocation=metadata", 16 << 20, 65536, false,
      false, 0, false },
    { "prealloc-falloc", "preallocation=falloc,cluster_size=4k", 8 << 20,
      4096, false, false, 0, false },
    { "prealloc-full", "preallocation=full", 8 << 20, 65536, false, false, 0,
      false },
    { "v2-prealloc-metadata", "compat=0.10,preallocation=metadata", 8 << 20,
      65536, false, false, 0, false },
    { "snapshots", "", 16 << 20, 65536, true, false, 0, true },
    { "snapshots-extl2", "extended_l2=on", 16 << 20, 65536, true, true, 0,
      true },
    { "v2-snapshots-4k", "compat=0.10,cluster_size=4k", 8 << 20, 4096, true,
      false, 0, true },
    { "raw-base", "", 16 << 20, 65536, true, false, 1, false },
    { "v2-raw-base", "compat=0.10", 16 << 20, 65536, false, false, 1, false },
    { "chain3", "", 12 << 20, 65536, true, false, 3, false },
    { "chain3-4k-extl2", "cluster_size=16k,extended_l2=on", 12 << 20, 16384,
      false, true, 3, false },
    { "probe-no-backing-fmt", "", 8 << 20, 65536, false, false, 4, false },
    { "odd-size-raw-base", "", (5 << 20) + 1536, 65536, true, false, 1,
      false },
    { "extl2-2M", "extended_l2=on,cluster_size=2M", 64 << 20, 2 << 20, true,
      true, 0, false },
};

static void qemu_io(const char *dir, const char *img, const char *cmds)
{
    qt_must("cd '%s' && qemu-io -f qcow2 %s '%s'", dir, cmds, img);
}

#define ADD(...)                                                              \
    do {                                                                      \
        size_t l_ = strlen(io);                                               \
        snprintf(io + l_, sizeof(io) - l_, " -c '" __VA_ARGS__);              \
        l_ = strlen(io);                                                      \
        snprintf(io + l_, sizeof(io) - l_, "'");                              \
    } while (0)

/* The qemu-io patterns for a configuration; round 0..2 (between
 * snapshots). */
static void fill(const struct config *c, const char *dir, const char *img,
                 int round)
{
    char io[8192] = "";
    uint64_t cs = c->cs, sc = cs / 32, size = c->size;
    uint64_t base = (uint64_t)round * 2 * cs; /* rounds overlap a bit */

    ADD("write -P 0x%x %" PRIu64 " %" PRIu64, 0x11 + round, base,
        2 * cs + 1024);
    ADD("write -P 0x%x %" PRIu64 " 4096", 0x21 + round, base + 4 * cs + 512);
    ADD("write -P 0x%x %" PRIu64 " %" PRIu64, 0x31 + round, 6 * cs, 5 * cs);
    ADD("write -z %" PRIu64 " %" PRIu64, 7 * cs, cs);          /* keep */
    ADD("write -z -u %" PRIu64 " %" PRIu64, 8 * cs, cs);       /* unmap */
    ADD("discard %" PRIu64 " %" PRIu64, 9 * cs, cs);
    ADD("write -z %" PRIu64 " %" PRIu64, 12 * cs, 2 * cs);     /* unalloc */
    ADD("write -z %" PRIu64 " 512", 10 * cs + 512);            /* partial */
    if (c->compress)
        ADD("write -c -P 0x%x %" PRIu64 " %" PRIu64, 0x41 + round,
            (round ? 24 + 2 * (uint64_t)round : 16) * cs, 2 * cs);
    if (c->subclusters) {
        ADD("write -P 0x%x %" PRIu64 " %" PRIu64, 0x51 + round,
            20 * cs + 3 * sc, sc);
        ADD("write -P 0x%x %" PRIu64 " 512", 0x61 + round, 21 * cs + 5 * sc);
        ADD("write -z %" PRIu64 " %" PRIu64, 6 * cs + 2 * sc, 2 * sc);
        ADD("write -z %" PRIu64 " %" PRIu64, 22 * cs + 7 * sc, 3 * sc);
        ADD("discard %" PRIu64 " %" PRIu64, 10 * cs + 4 * sc, 4 * sc);
    }
    ADD("write -P 0x%x %" PRIu64 " 2048", 0x71 + round,
        size - 3 * cs - 1024);
    qemu_io(dir, img, io);
}

/* Create the image (and its backing files) in dir; returns the top path
 * in top. */
static void create(const struct config *c, const char *dir, char *top,
                   size_t toplen)
{
    snprintf(top, toplen, "%s/top.qcow2", dir);
    const char *o = c->opts[0] ? c->opts : "cluster_size=64k";
    const uint64_t size = c->size, cs = c->cs;
    switch (c->backing) {
    case 0:
        qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, o, top,
                size);
        break;
    case 1:
    case 4:
        /* A raw base shorter than the overlay: zeros past its end. */
        qt_must("cd '%s' && qemu-img create -q -f raw base.raw %" PRIu64
                " && qemu-io -f raw -c 'write -P 0xb1 0 %" PRIu64 "' "
                "-c 'write -P 0xb2 %" PRIu64 " 4096' base.raw", dir,
                size - 2 * cs - 512, size - 2 * cs - 512,
                3 * cs + 512);
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s -b base.raw "
                "-F raw top.qcow2 %" PRIu64, dir, o, size);
        if (c->backing == 4) {
            /* Hide the backing format extension (type → unknown), so the
             * engine has to probe. */
            qt_must("python3 -c \"import struct,sys\n"
                    "f=open(sys.argv[1],'r+b'); d=f.read(4096)\n"
                    "i=d.find(struct.pack('>I',0xe2792aca))\n"
                    "assert i>0\n"
                    "f.seek(i); f.write(struct.pack('>I',0x0badf00d))\" '%s'",
                    top);
        }
        break;
    case 2:
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=4k "
                "base.qcow2 %" PRIu64 " && qemu-io -f qcow2 "
                "-c 'write -P 0xc1 0 %" PRIu64 "' -c 'write -z 65536 65536' "
                "base.qcow2", dir, size, size);
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s -b base.qcow2 "
                "-F qcow2 top.qcow2 %" PRIu64, dir, o, size);
        break;
    case 3:
        /* dir/base.raw (shorter) ← dir/sub/mid1.qcow2 (-b ../base.raw)
         *   ← dir/sub/mid2.qcow2 (-b mid1.qcow2) ← dir/top.qcow2
         *   (-b sub/mid2.qcow2): relative names at every level. */
        qt_must("cd '%s' && mkdir -p sub && qemu-img create -q -f raw "
                "base.raw %" PRIu64 " && qemu-io -f raw -c 'write -P 0xd1 0 "
                "%" PRIu64 "' base.raw", dir, size / 2, size / 2);
        qt_must("cd '%s/sub' && qemu-img create -q -f qcow2 -o %s -b "
                "../base.raw -F raw mid1.qcow2 %" PRIu64 " && qemu-io -f "
                "qcow2 -c 'write -P 0xd2 %" PRIu64 " %" PRIu64 "' "
                "-c 'write -z %" PRIu64 " %" PRIu64 "' mid1.qcow2", dir, o,
                size * 3 / 4, size / 4, size / 4, 2 * cs,
                2 * cs);
        qt_must("cd '%s/sub' && qemu-img create -q -f qcow2 -o %s -b "
                "mid1.qcow2 -F qcow2 mid2.qcow2 %" PRIu64 " && qemu-io -f "
                "qcow2 -c 'write -P 0xd3 %" PRIu64 " %" PRIu64 "' "
                "-c 'discard %" PRIu64 " %" PRIu64 "' mid2.qcow2", dir, o,
                size * 7 / 8, size / 2 - cs, 2 * cs,
                size / 4 + cs, cs);
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s -b "
                "sub/mid2.qcow2 -F qcow2 top.qcow2 %" PRIu64, dir, o,
                size);
        break;
    }
}

/* Engine-side modifications, mirrored into expect. */
static void modify(const struct config *c, struct image *img,
                   uint8_t *expect)
{
    uint64_t cs = c->cs;
    uint8_t *pat = malloc(4 * cs + 4096);
    struct {
        int op; /* 0 write, 1 zero keep, 2 zero unmap, 3 discard */
        uint64_t off, len;
    } ops[] = {
        { 0, 1000, cs * 3 / 2 + 17 },          /* over qemu data, unaligned */
        { 0, 3 * cs - 100, 200 },
        { 0, 16 * cs + 700, 300 },             /* into a compressed cluster */
        { 0, 17 * cs, cs },                    /* whole compressed cluster */
        { 2, 5 * cs, 2 * cs },
        { 1, 8 * cs + 512, cs },
        { 3, 10 * cs, 3 * cs },
        { 1, 14 * cs, cs },                    /* unallocated, keep */
        { 0, 20 * cs + 100, cs / 16 + 3 },     /* subcluster data */
        { 3, 21 * cs + cs / 4, cs / 2 },       /* partial discard */
        { 0, 23 * cs + cs / 2, 2 * cs },
        { 2, 7 * cs + cs / 32, cs / 8 },       /* partial zero */
        { 0, c->size - 4096, 4096 },
        { 0, c->size / 2 - 777, 3000 },
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        uint64_t off = ops[i].off, len = ops[i].len;
        if (off >= c->size)
            continue;
        if (len > c->size - off)
            len = c->size - off;
        int ret;
        switch (ops[i].op) {
        case 0:
            for (uint64_t j = 0; j < len; j++)
                pat[j] = (uint8_t)(0xa0 + i + j * 7);
            ret = image_write(img, pat, len, off, 0);
            memcpy(expect + off, pat, len);
            break;
        case 1:
        case 2:
            ret = image_zero(img, off, len,
                             ops[i].op == 2 ? IMAGE_MAY_UNMAP : 0);
            memset(expect + off, 0, len);
            break;
        default:
            ret = image_discard(img, off, len);
            memset(expect + off, 0, len);
            break;
        }
        if (ret < 0)
            QT_FAIL("%s: op %zu at %" PRIu64 "+%" PRIu64 ": %s", c->name, i,
                    off, len, strerror(-ret));
    }
    free(pat);
}

static void run(const struct config *c)
{
    char dir[4096], top[4200];
    size_t n;
    struct image *img;
    int failed_before = qt_failed;

    qt_mkdtemp(dir, sizeof(dir), c->name);
    create(c, dir, top, sizeof(top));
    fill(c, dir, top, 0);
    if (c->snapshots) {
        qt_must("qemu-img snapshot -c s1 '%s'", top);
        fill(c, dir, top, 1);
        qt_must("qemu-img snapshot -c s2 '%s'", top);
        fill(c, dir, top, 2);
    }
    uint8_t *expect = qt_qemu_raw(top, dir, &n, NULL);
    uint8_t *snap1 = NULL, *snap2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (c->snapshots) {
        snap1 = qt_qemu_raw(top, dir, &n1, "-l snapshot.name=s1");
        snap2 = qt_qemu_raw(top, dir, &n2, "-l snapshot.name=s2");
    }
    if (!expect || n != c->size) {
        QT_FAIL("%s: qemu-img convert gave %zu bytes", c->name, n);
        goto out;
    }

    /* 1. Read-only: the engine sees what qemu sees. */
    if (qt_open(top, true, NULL, &img) < 0) {
        QT_FAIL("%s: open read-only", c->name);
        goto out;
    }
    QT_CHECK(img->size == c->size);
    QT_CHECK(strcmp(img->info.format, "qcow2") == 0);
    QT_CHECK(img->info.cluster_size == c->cs);
    qt_compare_image(img, expect, c->name);
    image_close(img);

    /* 2. Read-write: modify, close, let qemu judge. */
    if (qt_open(top, false, NULL, &img) < 0) {
        QT_FAIL("%s: open read-write", c->name);
        goto out;
    }
    modify(c, img, expect);
    qt_compare_image(img, expect, c->name);
    QT_CHECK(image_close(img) == 0);
    int st = qt_check(top);
    if (st != 0)
        QT_FAIL("%s: qemu-img check exit %d after engine writes", c->name,
                st);
    size_t m;
    uint8_t *after = qt_qemu_raw(top, dir, &m, NULL);
    if (!after || m != c->size || qt_first_diff(after, expect, m) >= 0)
        QT_FAIL("%s: qemu-img reads something else than the engine wrote "
                "(first diff %ld)", c->name,
                after && m == c->size ? qt_first_diff(after, expect, m) : -2);
    free(after);
    if (c->snapshots) {
        uint8_t *s1 = qt_qemu_raw(top, dir, &m, "-l snapshot.name=s1");
        QT_CHECK(s1 && m == n1 && memcmp(s1, snap1, m) == 0);
        free(s1);
        uint8_t *s2 = qt_qemu_raw(top, dir, &m, "-l snapshot.name=s2");
        QT_CHECK(s2 && m == n2 && memcmp(s2, snap2, m) == 0);
        free(s2);
    }
    /* And the engine still agrees after a reopen. */
    if (qt_open(top, true, NULL, &img) == 0) {
        qt_compare_image(img, expect, c->name);
        image_close(img);
    } else {
        QT_FAIL("%s: reopen", c->name);
    }
out:
    printf("%-24s %s\n", c->name, qt_failed == failed_before ? "ok" : "FAIL");
    fflush(stdout);
    free(expect);
    free(snap1);
    free(snap2);
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

int main(int argc, char **argv)
{
    qt_require_qemu();
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        if (argc < 2 || strstr(configs[i].name, argv[1]))
            run(&configs[i]);
    return qt_summary("qcow2 interop");
}
