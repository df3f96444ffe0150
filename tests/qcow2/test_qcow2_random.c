/* qlun — differential random workload for the qcow2 engine.
 *
 * Random reads, writes, zeroes (with and without MAY_UNMAP), discards,
 * block-status queries, flushes and reopens — unaligned and multi-cluster
 * — go to the engine and to a flat in-memory model.  Every read is checked
 * against the model as it happens.  At the end `qemu-img check` must be
 * clean and `qemu-img compare` must call the image identical to the model.
 *
 * Seed: QLUN_SEED (default fixed, printed).  Ops per config: QLUN_OPS.
 * Pick configs by substring: argv[1].
 */
#include "common/iov.h"
#include "qtest.h"

struct config {
    const char *name;
    const char *opts;
    uint64_t size;
    uint32_t cs;
    int backing;       /* 0 none; 1 raw base ← qcow2 mid ← top */
    bool snapshot;     /* an internal snapshot (+ compressed data) first */
    unsigned ops;
    uint64_t max_len;
    bool direct;       /* O_DIRECT host I/O */
};

static const struct config configs[] = {
    { "64k-chain", "cluster_size=64k", 24 << 20, 65536, 1, false, 10000,
      1 << 20, false },
    { "512-chain", "cluster_size=512", 16 << 20, 512, 1, false, 10000,
      64 << 10, false },
    { "4k-v2-chain", "compat=0.10,cluster_size=4k", 16 << 20, 4096, 1, false,
      10000, 256 << 10, false },
    { "extl2-64k-chain", "extended_l2=on", 24 << 20, 65536, 1, false, 10000,
      1 << 20, false },
    { "extl2-16k-rc64", "extended_l2=on,cluster_size=16k,refcount_bits=64",
      16 << 20, 16384, 0, false, 10000, 256 << 10, false },
    { "4k-rc1", "cluster_size=4k,refcount_bits=1", 16 << 20, 4096, 0, false,
      10000, 128 << 10, false },
    { "64k-snapshot-zstd", "compression_type=zstd", 16 << 20, 65536, 0, true,
      10000, 512 << 10, false },
    { "2M-lazy-chain", "cluster_size=2M,lazy_refcounts=on", 64 << 20,
      2 << 20, 1, false, 3000, 1 << 20, false },
    { "4k-chain-direct", "cluster_size=4k", 16 << 20, 4096, 1, false, 3000,
      256 << 10, true },
};

static void create(const struct config *c, const char *dir, char *top,
                   size_t len)
{
    const uint64_t size = c->size, cs = c->cs;
    snprintf(top, len, "%s/top.qcow2", dir);
    if (c->backing) {
        /* A base shorter than the overlay, a middle with holes, zeros,
         * discards; names relative. */
        qt_must("cd '%s' && qemu-img create -q -f raw base.raw %" PRIu64
                " && qemu-io -f raw -c 'write -P 0x5a 0 %" PRIu64 "' "
                "-c 'write -P 0x3c %" PRIu64 " 100000' base.raw", dir,
                size * 3 / 4, size * 3 / 4, size / 3);
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=4k "
                "-b base.raw -F raw mid.qcow2 %" PRIu64 " && qemu-io -f qcow2 "
                "-c 'write -P 0x6b %" PRIu64 " %" PRIu64 "' "
                "-c 'write -z %" PRIu64 " %" PRIu64 "' "
                "-c 'discard %" PRIu64 " 8192' mid.qcow2", dir, size * 7 / 8,
                size / 2, size / 4, size / 8, size / 16, size / 5);
        qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s -b mid.qcow2 "
                "-F qcow2 top.qcow2 %" PRIu64, dir, c->opts, size);
        qt_must("qemu-io -f qcow2 -c 'write -P 0x7e %" PRIu64 " %" PRIu64 "' "
                "'%s'", 3 * cs, 5 * cs, top);
    } else {
        qt_must("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64, c->opts,
                top, size);
        qt_must("qemu-io -f qcow2 -c 'write -P 0x7e %" PRIu64 " %" PRIu64 "' "
                "-c 'write -c -P 0x2d %" PRIu64 " %" PRIu64 "' '%s'",
                3 * cs, 5 * cs, 10 * cs, 4 * cs, top);
    }
    if (c->snapshot) {
        qt_must("qemu-img snapshot -c s1 '%s'", top);
        qt_must("qemu-io -f qcow2 -c 'write -P 0x1f %" PRIu64 " %" PRIu64 "' "
                "'%s'", 4 * cs, cs, top);
    }
}

static void pattern(uint8_t *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = qt_splitmix(&x);
        memcpy(buf + i, &v, 8);
    }
    for (; i < n; i++)
        buf[i] = (uint8_t)qt_splitmix(&x);
}

static uint64_t pick_len(struct qt_rng *r, const struct config *c)
{
    uint64_t cs = c->cs, n;
    switch (qt_below(r, 10)) {
    case 0: case 1: case 2: case 3: case 4:
        n = 1 + qt_below(r, cs);
        break;
    case 5: case 6: case 7: case 8:
        n = 1 + qt_below(r, 4 * cs);
        break;
    default:
        n = cs * (1 + qt_below(r, 16));
    }
    return n > c->max_len ? 1 + qt_below(r, c->max_len) : n;
}

static uint64_t pick_off(struct qt_rng *r, const struct config *c)
{
    uint64_t off = qt_below(r, c->size);
    switch (qt_below(r, 10)) {
    case 0: case 1: case 2:
        return off & ~511ull;
    case 3: case 4:
        return off & ~(uint64_t)(c->cs - 1);
    default:
        return off;
    }
}

static bool reopen(const char *top, struct image **img)
{
    if (*img && image_close(*img) != 0) {
        QT_FAIL("close failed");
        *img = NULL;
        return false;
    }
    *img = NULL;
    return qt_open(top, false, NULL, img) == 0;
}

static void run(const struct config *c, uint64_t seed, unsigned ops)
{
    char dir[4096], top[4200];
    int failed_before = qt_failed;
    struct qt_rng r;
    struct image *img = NULL;
    size_t n;
    unsigned counts[8] = { 0 };

    uint64_t h = seed;
    for (const char *p = c->name; *p; p++)
        h = h * 1315423911u + (uint8_t)*p;
    qt_rng_seed(&r, h);
    qt_direct_io = c->direct;
    qt_mkdtemp(dir, sizeof(dir), c->name);
    create(c, dir, top, sizeof(top));
    uint8_t *model = qt_qemu_raw(top, dir, &n, NULL);
    uint8_t *snap = c->snapshot ? qt_qemu_raw(top, dir, &n,
                                              "-l snapshot.name=s1") : NULL;
    uint8_t *buf = malloc(c->max_len + c->cs * 16);
    if (!model || n != c->size || !reopen(top, &img)) {
        QT_FAIL("%s: setup", c->name);
        goto out;
    }

    for (unsigned i = 0; i < ops && qt_failed == failed_before; i++) {
        uint64_t off = pick_off(&r, c), len = pick_len(&r, c);
        if (len > c->size - off)
            len = c->size - off;
        if (len == 0)
            continue;
        unsigned kind = (unsigned)qt_below(&r, 100);
        int ret = 0;
        if (kind < 30) {
            counts[0]++;
            ret = image_read(img, buf, len, off);
            if (ret == 0) {
                long d = qt_first_diff(buf, model + off, len);
                if (d >= 0)
                    QT_FAIL("%s: op %u read %" PRIu64 "+%" PRIu64 " differs "
                            "at %" PRIu64 ": 0x%02x, model 0x%02x", c->name, i,
                            off, len, off + d, buf[d], model[off + d]);
            }
        } else if (kind < 62) {
            counts[1]++;
            pattern(buf, len, seed + i);
            ret = image_write(img, buf, len, off,
                              qt_below(&r, 50) ? 0 : IMAGE_FUA);
            memcpy(model + off, buf, len);
        } else if (kind < 75) {
            bool unmap = qt_below(&r, 2);
            counts[unmap ? 2 : 3]++;
            ret = image_zero(img, off, len, unmap ? IMAGE_MAY_UNMAP : 0);
            memset(model + off, 0, len);
        } else if (kind < 85) {
            counts[4]++;
            ret = image_discard(img, off, len);
            memset(model + off, 0, len);
        } else if (kind < 95) {
            counts[5]++;
            enum image_extent_kind k;
            uint64_t got;
            ret = image_block_status_above(img, NULL, off, len, &k, &got,
                                           NULL);
            if (ret == 0 && (got == 0 || got > len))
                QT_FAIL("%s: block status length %" PRIu64, c->name, got);
            if (ret == 0 && k != IMAGE_EXTENT_DATA &&
                !buf_is_zero(model + off, got))
                QT_FAIL("%s: op %u block status %d over nonzero data at %"
                        PRIu64 "+%" PRIu64, c->name, i, (int)k, off, got);
        } else if (kind < 99) {
            counts[6]++;
            ret = image_flush(img);
        } else {
            counts[7]++;
            if (!reopen(top, &img)) {
                QT_FAIL("%s: reopen at op %u", c->name, i);
                goto out;
            }
        }
        if (ret < 0)
            QT_FAIL("%s: op %u (kind %u, %" PRIu64 "+%" PRIu64 "): %s",
                    c->name, i, kind, off, len, strerror(-ret));
    }
    if (qt_failed == failed_before)
        qt_compare_image(img, model, c->name);
    if (image_close(img) != 0)
        QT_FAIL("%s: close", c->name);
    img = NULL;

    int st = qt_check(top);
    if (st != 0)
        QT_FAIL("%s: qemu-img check exit %d", c->name, st);
    char model_path[4200];
    snprintf(model_path, sizeof(model_path), "%s/model.raw", dir);
    qt_write_file(model_path, model, c->size);
    char out[4096];
    st = qt_run_out(out, sizeof(out), "qemu-img compare -f qcow2 -F raw "
                    "'%s' '%s'", top, model_path);
    if (st != 0 || !strstr(out, "identical"))
        QT_FAIL("%s: qemu-img compare exit %d: %s", c->name, st, out);
    if (snap) {
        size_t m;
        uint8_t *s = qt_qemu_raw(top, dir, &m, "-l snapshot.name=s1");
        if (!s || m != c->size || memcmp(s, snap, m) != 0)
            QT_FAIL("%s: the internal snapshot changed", c->name);
        free(s);
    }
out:
    if (img)
        image_close(img);
    printf("%-20s seed %" PRIu64 ": %u reads %u writes %u zero-unmap "
           "%u zero %u discards %u status %u flushes %u reopens: %s\n",
           c->name, seed, counts[0], counts[1], counts[2], counts[3],
           counts[4], counts[5], counts[6], counts[7],
           qt_failed == failed_before ? "ok" : "FAIL");
    fflush(stdout);
    free(model);
    free(snap);
    free(buf);
    if (qt_failed == failed_before)
        qt_rmtree(dir);
}

int main(int argc, char **argv)
{
    qt_require_qemu();
    uint64_t seed = qt_seed();
    const char *o = getenv("QLUN_OPS");
    printf("seed %" PRIu64 " (set QLUN_SEED to change)\n", seed);
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        if (argc < 2 || strstr(configs[i].name, argv[1]))
            run(&configs[i], seed, o ? (unsigned)atoi(o) : configs[i].ops);
    return qt_summary("qcow2 random");
}
