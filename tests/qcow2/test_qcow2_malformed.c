/* qlun — malformed qcow2 images.
 *
 * Images made by qemu-img, then patched: bad header fields, lying lengths,
 * tables past the end, unknown feature bits, escaping backing files.  Each
 * must be refused at open with one line naming the field — or, for table
 * entries only looked at during I/O, flagged at run time: the request fails
 * with -EUCLEAN, the corrupt bit lands in the header, the image turns
 * read-only, and a later read-write open is refused.  A byte-flipping fuzz
 * pass at the end must not crash (run it under ASan).
 */
#include "qcow2/qcow2-internal.h"
#include "common/util.h"
#include "qtest.h"

static char dir[4096];

static void put(const char *path, uint64_t off, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, b, (size_t)bytes, (off_t)off) != bytes)
        QT_FAIL("patch %s", path);
    close(fd);
}

static uint64_t get(const char *path, uint64_t off, int bytes)
{
    uint8_t b[8] = { 0 };
    int fd = open(path, O_RDONLY);
    if (fd < 0 || pread(fd, b, (size_t)bytes, (off_t)off) != bytes)
        QT_FAIL("read %s", path);
    close(fd);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | b[i];
    return v;
}

/* A fresh image: 64k clusters, data at 0 (normal) and 1M (compressed). */
static void make(const char *path, const char *opts)
{
    qt_must("qemu-img create -q -f qcow2 -o %s '%s' 16M && qemu-io -f qcow2 "
            "-c 'write -P 0x11 0 128k' -c 'write -c -P 0x22 1M 64k' '%s'",
            opts, path, path);
}

static int try_open(const char *path, bool ro, const char *root,
                    struct image **img, char *err, size_t errlen)
{
    struct image_open_opts o = { .path = path, .format = "qcow2",
                                 .read_only = ro, .backing_root = root };
    err[0] = 0;
    *img = NULL;
    return image_open(&o, img, err, errlen);
}

/* Open must fail with an error line containing want. */
static void refused(const char *name, const char *path, bool ro,
                    const char *root, const char *want)
{
    char err[1024];
    struct image *img;
    int ret = try_open(path, ro, root, &img, err, sizeof(err));
    if (ret == 0) {
        QT_FAIL("%s: opened, should be refused (%s)", name, want);
        image_close(img);
        return;
    }
    if (!strstr(err, want) || strchr(err, '\n'))
        QT_FAIL("%s: error '%s' does not name '%s' in one line", name, err,
                want);
    else
        printf("%-28s refused: %s\n", name, err);
}

static void header_case(const char *name, const char *opts, unsigned off,
                        uint64_t v, int bytes, const char *want)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s.qcow2", dir, name);
    make(path, opts);
    put(path, off, v, bytes);
    refused(name, path, false, NULL, want);
}

/* Offset of the L2 entry for guest offset goff (first L2 table). */
static uint64_t l2_entry_pos(const char *path, uint64_t goff)
{
    uint64_t l1 = get(path, HDR_L1_OFFSET, 8);
    uint64_t l2 = get(path, l1, 8) & L1E_OFFSET_MASK;
    return l2 + 8 * (goff >> 16);
}

/* Patch an entry, open fine, then the first read of goff must find it:
 * -EUCLEAN, corrupt bit set, read-only afterwards, rw reopen refused. */
static void runtime_case(const char *name, uint64_t goff, bool rest_ok,
                         uint64_t (*patch)(const char *path, uint64_t pos))
{
    char path[4200], err[1024];
    struct image *img;
    snprintf(path, sizeof(path), "%s/%s.qcow2", dir, name);
    make(path, "cluster_size=64k");
    uint64_t pos = l2_entry_pos(path, goff);
    uint64_t entry = patch(path, pos);
    if (try_open(path, false, NULL, &img, err, sizeof(err)) < 0) {
        QT_FAIL("%s: open refused: %s", name, err);
        return;
    }
    uint8_t buf[4096];
    int ret = image_read(img, buf, sizeof(buf), goff);
    if (ret != -EUCLEAN)
        QT_FAIL("%s (entry 0x%" PRIx64 "): read returned %d, want -EUCLEAN",
                name, entry, ret);
    QT_CHECK(image_state(img) & IMAGE_STATE_CORRUPT); /* write-protected */
    QT_CHECK(image_write(img, buf, 512, 8 << 20, 0) == -EROFS);
    image_close(img);
    QT_CHECK(get(path, HDR_INCOMPAT, 8) & INCOMPAT_CORRUPT);
    refused(name, path, false, NULL, "corrupt");
    /* Read-only still opens; the intact cluster still reads. */
    if (try_open(path, true, NULL, &img, err, sizeof(err)) == 0) {
        if (rest_ok)
            QT_CHECK(image_read(img, buf, 512, 64 << 10) == 0 &&
                     buf[0] == 0x11);
        image_close(img);
    } else {
        QT_FAIL("%s: read-only open of a corrupt image: %s", name, err);
    }
    printf("%-28s flagged corrupt at run time\n", name);
}

static uint64_t reserved_bits(const char *p, uint64_t pos)
{
    uint64_t e = get(p, pos, 8) | (1ull << 57);
    put(p, pos, e, 8);
    return e;
}

static uint64_t past_end(const char *p, uint64_t pos)
{
    uint64_t e = OFLAG_COPIED | (1ull << 40);
    put(p, pos, e, 8);
    return e;
}

static uint64_t unaligned(const char *p, uint64_t pos)
{
    uint64_t e = get(p, pos, 8) + 4096;
    put(p, pos, e, 8);
    return e;
}

static uint64_t compressed_past_end(const char *p, uint64_t pos)
{
    /* 64k clusters: x = 54; offset bits 0..53. */
    uint64_t e = OFLAG_COMPRESSED | (3ull << 54) | (1ull << 40);
    put(p, pos, e, 8);
    return e;
}

static uint64_t compressed_garbage(const char *p, uint64_t pos)
{
    uint64_t e = get(p, pos, 8);
    uint64_t coff = e & ((1ull << 54) - 1);
    put(p, coff, 0xffffffffffffffffull, 8); /* not a deflate stream */
    put(p, coff + 8, 0xffffffffffffffffull, 8);
    return e;
}

static uint64_t l1_reserved(const char *p, uint64_t pos)
{
    (void)pos;
    uint64_t l1 = get(p, HDR_L1_OFFSET, 8);
    uint64_t e = get(p, l1, 8) | 0x100;
    put(p, l1, e, 8);
    return e;
}

static void refcount_case(void)
{
    char path[4200], err[1024];
    struct image *img;
    snprintf(path, sizeof(path), "%s/reftable-entry.qcow2", dir);
    make(path, "cluster_size=64k");
    uint64_t rt = get(path, HDR_REFTABLE_OFFSET, 8);
    put(path, rt, 0x123456789a00ull, 8); /* block far past the end */
    if (try_open(path, false, NULL, &img, err, sizeof(err)) < 0) {
        QT_FAIL("reftable-entry: open refused: %s", err);
        return;
    }
    uint8_t buf[512] = { 1 };
    int ret = image_write(img, buf, sizeof(buf), 8 << 20, 0);
    if (ret != -EUCLEAN)
        QT_FAIL("reftable-entry: allocating write returned %d", ret);
    image_close(img);
    QT_CHECK(get(path, HDR_INCOMPAT, 8) & INCOMPAT_CORRUPT);
    printf("%-28s flagged corrupt at run time\n", "reftable-entry");
}

/* Refcounts that say a cluster of the header's own metadata is free (or
 * have no refcount block for it): the first allocation must find the image
 * corrupt, not hand out (or put a new refcount block on) the header, the
 * L1 table or the refcount table. */
static void metadata_refcount_case(const char *name, int what)
{
    char path[4200], err[1024];
    struct image *img;
    snprintf(path, sizeof(path), "%s/%s.qcow2", dir, name);
    make(path, "cluster_size=64k");
    uint64_t rt = get(path, HDR_REFTABLE_OFFSET, 8);
    uint64_t rb = get(path, rt, 8);
    uint64_t l1 = get(path, HDR_L1_OFFSET, 8);
    uint64_t l1e = get(path, l1, 8);
    if (what == 0)
        put(path, rt, 0, 8);                  /* no block for range 0 */
    else if (what == 1)
        put(path, rb, 0, 2);                  /* header cluster free */
    else if (what == 2)
        put(path, rb + 2 * (l1 >> 16), 0, 2); /* L1 table cluster free */
    else
        put(path, rb + 2 * (rt >> 16), 0, 2); /* refcount table free */
    if (try_open(path, false, NULL, &img, err, sizeof(err)) < 0) {
        QT_FAIL("%s: open refused: %s", name, err);
        return;
    }
    uint8_t buf[512] = { 1 };
    int ret = image_write(img, buf, sizeof(buf), 8 << 20, 0);
    if (ret != -EUCLEAN)
        QT_FAIL("%s: allocating write returned %d", name, ret);
    image_close(img);
    QT_CHECK(get(path, 0, 4) == QCOW2_MAGIC);
    QT_CHECK(get(path, HDR_L1_OFFSET, 8) == l1);
    QT_CHECK(get(path, l1, 8) == l1e);
    QT_CHECK(get(path, HDR_REFTABLE_OFFSET, 8) == rt);
    QT_CHECK(get(path, rt, 8) == (what == 0 ? 0 : rb));
    QT_CHECK(get(path, HDR_INCOMPAT, 8) & INCOMPAT_CORRUPT);
    printf("%-28s flagged corrupt, metadata intact\n", name);
}

static void backing_cases(void)
{
    char a[4200], b[4200], loop1[4200], loop2[4200], fmt[4200];
    /* dir/a/top.qcow2 → ../b/base.raw: outside dir/a. */
    qt_must("mkdir -p '%s/a' '%s/b' && qemu-img create -q -f raw "
            "'%s/b/base.raw' 1M && cd '%s/a' && qemu-img create -q -f qcow2 "
            "-b ../b/base.raw -F raw top.qcow2 1M", dir, dir, dir, dir);
    snprintf(a, sizeof(a), "%s/a/top.qcow2", dir);
    refused("backing-outside-root", a, false, NULL, "outside");
    snprintf(b, sizeof(b), "%s/a", dir);
    refused("backing-outside-given-root", a, false, b, "outside");
    char err[1024];
    struct image *img;
    if (try_open(a, false, dir, &img, err, sizeof(err)) < 0)
        QT_FAIL("backing inside backing_root refused: %s", err);
    else
        image_close(img);
    if (try_open(a, true, "/", &img, err, sizeof(err)) < 0)
        QT_FAIL("backing with backing_root=/ refused: %s", err);
    else
        image_close(img);
    /* Absolute name to something outside. */
    qt_must("cd '%s/a' && qemu-img create -q -f qcow2 -b '%s/b/base.raw' "
            "-F raw abs.qcow2 1M", dir, dir);
    snprintf(a, sizeof(a), "%s/a/abs.qcow2", dir);
    refused("backing-absolute-outside", a, false, NULL, "outside");
    /* A symlink inside the root that points out of it. */
    qt_must("cd '%s/a' && ln -sf ../b/base.raw link.raw && qemu-img create "
            "-q -f qcow2 -b link.raw -F raw sym.qcow2 1M", dir);
    snprintf(a, sizeof(a), "%s/a/sym.qcow2", dir);
    refused("backing-symlink-escape", a, false, NULL, "outside");
    /* A loop: l1 → l2 → l1. */
    snprintf(loop1, sizeof(loop1), "%s/a/l1.qcow2", dir);
    snprintf(loop2, sizeof(loop2), "%s/a/l2.qcow2", dir);
    qt_must("cd '%s/a' && qemu-img create -q -f qcow2 l1.qcow2 1M && "
            "qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 l2.qcow2 1M && "
            "qemu-img rebase -u -b l2.qcow2 -F qcow2 l1.qcow2", dir);
    refused("backing-loop", loop1, true, NULL, "deeper");
    /* Unsupported backing format. */
    snprintf(fmt, sizeof(fmt), "%s/a/fmt.qcow2", dir);
    qt_must("cd '%s/a' && qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 "
            "-u fmt.qcow2 1M", dir);
    uint64_t p = 104;
    while (p < 4096 && get(fmt, p, 4) != EXT_BACKING_FMT)
        p += 8;
    QT_CHECK(p < 4096);
    put(fmt, p + 4, 4, 4);
    put(fmt, p + 8, 0x766d646b /* vmdk */, 4);
    refused("backing-format-vmdk", fmt, true, NULL, "backing format");
    /* Missing backing file. */
    qt_must("cd '%s/a' && qemu-img create -q -f qcow2 -b gone.raw -F raw -u "
            "gone.qcow2 1M", dir);
    snprintf(a, sizeof(a), "%s/a/gone.qcow2", dir);
    refused("backing-missing", a, true, NULL, "gone.raw");
    /* Control characters in names from the image stay out of the one-line
     * error (refused() checks for a newline). */
    qt_must("cd '%s/a' && qemu-img create -q -f qcow2 -b \"$(printf "
            "'gone\\nline')\" -F raw -u nl.qcow2 1M", dir);
    snprintf(a, sizeof(a), "%s/a/nl.qcow2", dir);
    refused("backing-name-newline", a, true, NULL, "'gone?line'");
    put(fmt, p + 8, 0x766d0a6b /* vm\nk */, 4);
    refused("backing-format-newline", fmt, true, NULL, "'vm?k'");
}

static void feature_name_case(void)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/featname.qcow2", dir);
    make(path, "cluster_size=64k");
    /* Rename the table's entry for incompatible bit 0 to bit 40, set 40. */
    uint64_t p = 104;
    while (p < 4096 && get(path, p, 4) != EXT_FEATURE_TABLE)
        p += 8 + ((get(path, p + 4, 4) + 7) & ~7ull);
    QT_CHECK(p < 4096);
    uint64_t len = get(path, p + 4, 4);
    for (uint64_t e = p + 8; e + 48 <= p + 8 + len; e += 48)
        if (get(path, e, 2) == 0x0000) { /* type 0, bit 0 */
            put(path, e + 1, 40, 1);
            break;
        }
    put(path, HDR_INCOMPAT, 1ull << 40, 8);
    refused("unknown-bit-named", path, true, NULL, "bit 40 (dirty bit)");
}

static void fuzz(void)
{
    char path[4200], seedpath[4200], err[1024];
    struct qt_rng r;
    struct image *img;
    unsigned opened = 0, rounds = 1000;
    qt_rng_seed(&r, qt_seed());
    snprintf(seedpath, sizeof(seedpath), "%s/fuzz-seed.qcow2", dir);
    snprintf(path, sizeof(path), "%s/fuzz.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 -o cluster_size=4k,extended_l2=off "
            "'%s' 1M && qemu-io -f qcow2 -c 'write -P 0x11 0 64k' "
            "-c 'write -c -P 0x22 128k 16k' -c 'write -z 256k 8k' '%s' && "
            "qemu-img snapshot -c s '%s'", seedpath, seedpath, seedpath);
    size_t n;
    uint8_t *orig = qt_read_file(seedpath, &n);
    uint8_t *buf = malloc(1 << 20);
    for (unsigned i = 0; i < rounds && orig; i++) {
        uint8_t *m = malloc(n);
        memcpy(m, orig, n);
        unsigned flips = 1 + (unsigned)qt_below(&r, 8);
        for (unsigned f = 0; f < flips; f++) {
            /* Mostly the header and first metadata clusters. */
            unsigned where = (unsigned)qt_below(&r, 4);
            size_t at = where == 0   ? qt_below(&r, 128)
                        : where == 1 ? qt_below(&r, MIN(n, 4096))
                        : where == 2 ? qt_below(&r, MIN(n, 8 * 4096))
                                     : qt_below(&r, n);
            m[at] ^= (uint8_t)(1u << qt_below(&r, 8));
        }
        qt_write_file(path, m, n);
        free(m);
        if (try_open(path, false, dir, &img, err, sizeof(err)) == 0) {
            opened++;
            for (uint64_t off = 0; off < img->size; off += 1 << 18)
                (void)image_read(img, buf, MIN(1u << 18, img->size - off),
                                 off);
            memset(buf, 0x5a, 65536);
            (void)image_write(img, buf, 65536, 4096 + 100, 0);
            (void)image_zero(img, 0, MIN(img->size, 1u << 16),
                             IMAGE_MAY_UNMAP);
            (void)image_discard(img, 0, MIN(img->size, 8192u));
            enum image_extent_kind k;
            uint64_t len;
            if (img->size)
                (void)image_block_status_above(img, NULL, 0, img->size, &k,
                                               &len, NULL);
            image_close(img);
        } else if (strchr(err, '\n') || !err[0]) {
            QT_FAIL("fuzz %u: error is not one line: '%s'", i, err);
        }
    }
    printf("fuzz: %u mutated images, %u opened and exercised, no crash\n",
           rounds, opened);
    free(orig);
    free(buf);
}

/* Metadata an overlap case aims at: its host offset in path. */
static uint64_t at_l1(const char *path)
{
    return get(path, HDR_L1_OFFSET, 8);
}

static uint64_t at_reftable(const char *path)
{
    return get(path, HDR_REFTABLE_OFFSET, 8);
}

static uint64_t at_refblock(const char *path)
{
    return get(path, at_reftable(path), 8);
}

static uint64_t at_l2(const char *path)
{
    return get(path, at_l1(path), 8) & L1E_OFFSET_MASK;
}

/* A write whose target is metadata must not happen: -EUCLEAN, the image
 * marked corrupt, the metadata cluster unchanged.  how: "in-place" points
 * the L2 entry of guest 0 (ours, COPIED) at the metadata; "alloc" makes the
 * refcounts say the metadata cluster is free, so the next allocation would
 * take it. */
static void overlap_case(const char *name, const char *how,
                         uint64_t (*target)(const char *path))
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/overlap-%s-%s.qcow2", dir, how, name);
    make(path, "cluster_size=64k");
    uint64_t t = target(path), goff = 0;
    if (strcmp(how, "in-place") == 0) {
        put(path, l2_entry_pos(path, 0), OFLAG_COPIED | t, 8);
    } else {
        uint64_t rb = at_refblock(path);
        put(path, rb + 2 * (t >> 16), 0, 2);
        goff = 8 << 20; /* unallocated: the write allocates */
    }
    size_t n;
    uint8_t *before = qt_read_file(path, &n);
    struct image *img;
    char err[1024];
    if (!before || try_open(path, false, NULL, &img, err, sizeof(err)) < 0) {
        QT_FAIL("overlap %s %s: open: %s", how, name, err);
        free(before);
        return;
    }
    uint8_t buf[4096];
    memset(buf, 0xee, sizeof(buf));
    int ret = image_write(img, buf, sizeof(buf), goff, 0);
    if (ret != -EUCLEAN)
        QT_FAIL("overlap %s %s: write returned %d, want -EUCLEAN", how, name,
                ret);
    QT_CHECK(image_state(img) & IMAGE_STATE_CORRUPT);
    image_close(img);
    size_t m;
    uint8_t *after = qt_read_file(path, &m);
    if (!after || m < t + 65536 || memcmp(before + t, after + t, 65536) != 0)
        QT_FAIL("overlap %s %s: the metadata cluster at 0x%" PRIx64
                " was written", how, name, t);
    else
        printf("%-28s refused: data over %s (0x%" PRIx64 ")\n", how, name, t);
    free(before);
    free(after);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "malformed");
    char path[4200];

    snprintf(path, sizeof(path), "%s/raw.img", dir);
    qt_must("qemu-img create -q -f raw '%s' 1M", path);
    refused("no-magic", path, false, NULL, "format=raw");
    snprintf(path, sizeof(path), "%s/short.img", dir);
    qt_must("printf 'QFI\\373' > '%s'", path);
    refused("truncated", path, true, NULL, "not a qcow2 image");

    header_case("version", "cluster_size=64k", 4, 4, 4, "version 4");
    header_case("cluster-bits", "cluster_size=64k", HDR_CLUSTER_BITS, 30, 4,
                "cluster_bits 30");
    header_case("l1-size-huge", "cluster_size=64k", HDR_L1_SIZE, 0x7fffffff,
                4, "l1_size 2147483647");
    header_case("l1-size-small", "cluster_size=512", HDR_L1_SIZE, 1, 4,
                "l1_size 1");
    header_case("l1-offset-past-end", "cluster_size=64k", HDR_L1_OFFSET,
                1ull << 40, 8, "l1_table_offset");
    header_case("l1-offset-unaligned", "cluster_size=64k", HDR_L1_OFFSET,
                0x30200, 8, "l1_table_offset");
    header_case("reftable-past-end", "cluster_size=64k", HDR_REFTABLE_OFFSET,
                1ull << 40, 8, "refcount_table_offset");
    header_case("reftable-clusters", "cluster_size=64k",
                HDR_REFTABLE_CLUSTERS, 0x10000000, 4,
                "refcount_table_clusters");
    header_case("unknown-incompat-bit", "cluster_size=64k", HDR_INCOMPAT,
                1ull << 20, 8, "bit 20");
    header_case("header-length-short", "cluster_size=64k", HDR_HEADER_LENGTH,
                96, 4, "header_length 96");
    header_case("header-length-huge", "cluster_size=64k", HDR_HEADER_LENGTH,
                1 << 20, 4, "header_length 1048576");
    header_case("header-length-odd", "cluster_size=64k", HDR_HEADER_LENGTH,
                108, 4, "header_length 108");
    header_case("extension-length", "cluster_size=64k", 112 + 4, 0xfffffff0,
                4, "header extension");
    header_case("backing-name-offset", "cluster_size=4k", HDR_BACKING_OFFSET,
                8192, 8, "backing_file_offset");
    header_case("encrypted-aes", "cluster_size=64k", HDR_CRYPT, 1, 4,
                "encrypted");
    header_case("external-data-file", "cluster_size=64k", HDR_INCOMPAT,
                INCOMPAT_DATA_FILE, 8, "external data file");
    header_case("compression-type", "cluster_size=64k", HDR_INCOMPAT,
                INCOMPAT_COMPRESSION, 8, "compression");
    header_case("extl2-small-clusters", "cluster_size=4k", HDR_INCOMPAT,
                INCOMPAT_EXTL2, 8, "cluster_bits");
    header_case("nb-snapshots", "cluster_size=64k", HDR_NB_SNAPSHOTS, 100000,
                4, "nb_snapshots 100000");
    header_case("snapshots-offset", "cluster_size=64k", HDR_NB_SNAPSHOTS, 3,
                4, "snapshots_offset");
    header_case("corrupt-bit", "cluster_size=64k", HDR_INCOMPAT,
                INCOMPAT_CORRUPT, 8, "corrupt");

    /* A backing name whose length lies. */
    snprintf(path, sizeof(path), "%s/backing-len.qcow2", dir);
    qt_must("cd '%s' && qemu-img create -q -f raw b.raw 1M && qemu-img "
            "create -q -f qcow2 -o cluster_size=4k -b b.raw -F raw "
            "backing-len.qcow2 1M", dir);
    put(path, HDR_BACKING_SIZE, 5000, 4);
    refused("backing-name-length", path, true, NULL, "backing_file_size 5000");
    put(path, HDR_BACKING_SIZE, 1000, 4); /* fits 1023, not cluster 0 */
    put(path, HDR_BACKING_OFFSET, 4000, 8);
    refused("backing-name-past-cluster", path, true, NULL,
            "backing_file_size 1000");

    /* A snapshot whose L1 table lies outside the file. */
    snprintf(path, sizeof(path), "%s/snap-l1.qcow2", dir);
    make(path, "cluster_size=64k");
    qt_must("qemu-img snapshot -c s '%s'", path);
    put(path, get(path, HDR_SNAPSHOTS_OFFSET, 8), 1ull << 44, 8);
    refused("snapshot-l1-past-end", path, true, NULL, "snapshot 0 L1");
    /* ... or wraps around: offset + size * 8 past 2^64 lands inside. */
    put(path, get(path, HDR_SNAPSHOTS_OFFSET, 8), 0xffffffffffff0000ull, 8);
    put(path, get(path, HDR_SNAPSHOTS_OFFSET, 8) + 8, 8194, 4); /* l1_size */
    refused("snapshot-l1-wraps", path, true, NULL, "snapshot 0 L1");

    /* Read-only open of a corrupt-marked image is allowed. */
    snprintf(path, sizeof(path), "%s/corrupt-bit.qcow2", dir);
    struct image *img;
    char err[1024];
    if (try_open(path, true, NULL, &img, err, sizeof(err)) == 0)
        image_close(img);
    else
        QT_FAIL("read-only open of a corrupt-marked image: %s", err);

    /* Unknown autoclear bits: kept by a read-only open, cleared before
     * the first write. */
    snprintf(path, sizeof(path), "%s/autoclear.qcow2", dir);
    make(path, "cluster_size=64k");
    put(path, HDR_AUTOCLEAR, 1ull << 33, 8);
    if (try_open(path, true, NULL, &img, err, sizeof(err)) == 0)
        image_close(img);
    QT_CHECK(get(path, HDR_AUTOCLEAR, 8) == 1ull << 33);
    if (try_open(path, false, NULL, &img, err, sizeof(err)) == 0) {
        QT_CHECK(get(path, HDR_AUTOCLEAR, 8) == 1ull << 33);
        uint8_t b[512] = { 7 };
        QT_CHECK(image_write(img, b, sizeof(b), 3 << 20, 0) == 0);
        QT_CHECK(get(path, HDR_AUTOCLEAR, 8) == 0);
        QT_CHECK(image_close(img) == 0);
        QT_CHECK(qt_check(path) == 0);
        printf("%-28s cleared before the first write\n", "autoclear");
    } else {
        QT_FAIL("autoclear: open: %s", err);
    }

    feature_name_case();
    backing_cases();

    runtime_case("l2-reserved-bits", 0, true, reserved_bits);
    runtime_case("l2-offset-past-end", 0, true, past_end);
    runtime_case("l2-offset-unaligned", 0, true, unaligned);
    runtime_case("compressed-past-end", 1 << 20, true, compressed_past_end);
    runtime_case("compressed-garbage", 1 << 20, true, compressed_garbage);
    runtime_case("l1-reserved-bits", 0, false, l1_reserved);

    overlap_case("l1", "in-place", at_l1);
    overlap_case("reftable", "in-place", at_reftable);
    overlap_case("refblock", "in-place", at_refblock);
    overlap_case("l2", "in-place", at_l2);
    overlap_case("l1", "alloc", at_l1);
    overlap_case("l2", "alloc", at_l2);
    overlap_case("refblock", "alloc", at_refblock);
    refcount_case();
    metadata_refcount_case("reftable-entry0-empty", 0);
    metadata_refcount_case("header-refcount-0", 1);
    metadata_refcount_case("l1-refcount-0", 2);
    metadata_refcount_case("reftable-refcount-0", 3);

    fuzz();
    if (!qt_failed)
        qt_rmtree(dir);
    return qt_summary("qcow2 malformed");
}
