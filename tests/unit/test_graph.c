/* Unit tests: the image graph (block/).
 *  - drivers are found by name; the probe picks qcow2 by its magic and
 *    raw for anything else; names from an image never reach a filter;
 *  - a backing chain is confined under the backing root (outside refused,
 *    a symlink escaping refused), limited in depth (the deepest chain
 *    allowed opens, one more is refused), and every backing node is a
 *    read-only child opened by the generic layer; every format node has
 *    a protocol child (`file`) whose info it takes the storage's from;
 *  - block status above a node, on qcow2 <- qcow2 <- raw made by
 *    qemu-img, equals `qemu-img map --output=json` (kind and the layer
 *    that answers, qemu's "depth"), every 64 KiB; a base stops the walk;
 *  - a pass-through filter (defining only readv/writev, counting them)
 *    above a qcow2 node and between it and its backing file changes
 *    nothing: content, block status, zero/discard, flush, allocated
 *    bytes, the closed images (qemu-img check, compare).
 * Needs qemu-img (exit 77 = skipped without).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing.h"
#include "block/driver.h"
#include "block/file.h"
#include "block/image.h"
#include "tests/qcow2/qtest.h"

#define MiB (1024 * 1024)

static char dir[4096];

static int open_img(const char *path, const char *fmt, const char *root,
                    struct image **img, char *err, size_t errlen)
{
    struct image_open_opts o = { .path = path, .format = fmt,
                                 .backing_root = root };
    err[0] = 0;
    *img = NULL;
    return image_open(&o, img, err, errlen);
}

/* Every format node of the chain does its host I/O through a `file`
 * child, a protocol node over the same path, and takes what the storage
 * is from that child's info. */
static void protocol_children(struct image *top)
{
    for (struct image *n = top; n; n = n->backing) {
        struct image *f = n->file;
        if (!f || f->drv != &file_driver) {
            QT_FAIL("%s: no protocol child", n->filename);
            continue;
        }
        QT_CHECK(f->file == NULL && f->backing == NULL);
        QT_CHECK(strcmp(f->filename, n->filename) == 0);
        QT_CHECK(f->info.read_only == n->info.read_only);
        QT_CHECK(!f->info.is_device && f->info.zeroes_past_eof);
        QT_CHECK(n->info.request_alignment == f->info.request_alignment);
        /* Every node counts its host use (the soft threshold needs it):
         * a format that does not count for itself reports its file's. */
        struct stat st;
        QT_CHECK(stat(f->filename, &st) == 0 &&
                 image_current_size(f) == (int64_t)st.st_size &&
                 image_current_size(n) == (int64_t)n->size);
        int64_t used = image_allocated_bytes(n);
        QT_CHECK(used > 0 && used == image_allocated_bytes(f));
        if (n->drv == &raw_driver)
            QT_CHECK(n->size == f->size &&
                     n->info.can_zero == f->info.can_zero &&
                     n->info.discard_zeroes == f->info.discard_zeroes);
    }
}

static void driver_lookup(void)
{
    QT_CHECK(block_driver_find("raw") == &raw_driver);
    QT_CHECK(block_driver_find("qcow2") == &qcow2_driver);
    QT_CHECK(block_driver_find("vmdk") == NULL);
    QT_CHECK(block_driver_find("") == NULL);
    char names[64];
    QT_CHECK(strcmp(block_driver_names(names, sizeof(names)),
                    "raw, qcow2") == 0);

    uint8_t buf[BLOCK_PROBE_BYTES] = { 0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3 };
    QT_CHECK(qcow2_driver.probe(buf, sizeof(buf), "x") == 100);
    QT_CHECK(raw_driver.probe(buf, sizeof(buf), "x") == 1);
    QT_CHECK(block_driver_probe(buf, sizeof(buf), "x") == &qcow2_driver);
    buf[3] = 0xfa; /* not the magic: raw */
    QT_CHECK(qcow2_driver.probe(buf, sizeof(buf), "x") == 0);
    QT_CHECK(block_driver_probe(buf, sizeof(buf), "x") == &raw_driver);
    /* The file name alone never makes a qcow2. */
    QT_CHECK(block_driver_probe(buf, sizeof(buf), "a.qcow2") == &raw_driver);

    /* The top image's format is what the caller said, never probed. */
    char path[4200], err[512];
    struct image *img;
    snprintf(path, sizeof(path), "%s/probe.qcow2", dir);
    qt_must("qemu-img create -q -f qcow2 '%s' 1M", path);
    QT_CHECK(open_img(path, "vmdk", NULL, &img, err, sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "expected raw, qcow2") != NULL);
    QT_CHECK(open_img(path, "raw", NULL, &img, err, sizeof(err)) == 0);
    if (img) {
        QT_CHECK(img->drv == &raw_driver);
        QT_CHECK(strcmp(img->info.format, "raw") == 0);
        QT_CHECK(img->backing == NULL);
        protocol_children(img);
        image_close(img);
    }
}

/* The chain below top: formats from top to bottom, all but the top
 * read-only, ending without a backing child after n nodes. */
static void check_chain(struct image *top, int n, const char *const *fmts)
{
    struct image *node = top;
    for (int i = 0; i < n; i++) {
        if (!node) {
            QT_FAIL("chain ends after %d nodes, want %d", i, n);
            return;
        }
        QT_CHECK(strcmp(node->drv->name, fmts[i]) == 0);
        QT_CHECK(i == 0 || node->info.read_only);
        node = node->backing;
    }
    QT_CHECK(node == NULL);
}

static void refused(const char *name, const char *path, const char *root,
                    int want_ret, const char *want)
{
    char err[1024];
    struct image *img;
    int ret = open_img(path, "qcow2", root, &img, err, sizeof(err));
    if (ret == 0) {
        QT_FAIL("%s: opened, should be refused (%s)", name, want);
        image_close(img);
        return;
    }
    if (ret != want_ret || !strstr(err, want))
        QT_FAIL("%s: %d '%s', want %d naming '%s'", name, ret, err, want_ret,
                want);
    else
        printf("%-24s refused: %s\n", name, err);
}

/* Make the backing format extension of dir/rel an unknown extension
 * (ignored, kept): the image then names no backing format. */
static void drop_backing_format(const char *rel)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    size_t len;
    uint8_t *c0 = qt_read_file(path, &len);
    if (!c0 || len < 4096) {
        QT_FAIL("cannot read %s", path);
        free(c0);
        return;
    }
    uint64_t p = 104;
    while (p < 4096 - 8 && !(c0[p] == 0xe2 && c0[p + 1] == 0x79 &&
                             c0[p + 2] == 0x2a && c0[p + 3] == 0xca))
        p += 8;
    QT_CHECK(p < 4096 - 8);
    int fd = open(path, O_WRONLY);
    QT_CHECK(fd >= 0 && pwrite(fd, "\x12\x34\x56\x78", 4, (off_t)p) == 4);
    if (fd >= 0)
        close(fd);
    free(c0);
}

static void confinement(void)
{
    char top[4200], err[1024];
    struct image *img;
    qt_must("cd '%s' && mkdir -p in out && qemu-img create -q -f raw "
            "out/base.raw 1M && qemu-img create -q -f raw in/base.raw 1M && "
            "ln -sf ../out/base.raw in/link.raw && cd in && "
            "qemu-img create -q -f qcow2 -b ../out/base.raw -F raw up.qcow2 "
            "1M && qemu-img create -q -f qcow2 -b link.raw -F raw sym.qcow2 "
            "1M && qemu-img create -q -f qcow2 -b base.raw -F raw ok.qcow2 1M "
            "&& qemu-img create -q -f qcow2 -b base.raw -F raw noformat.qcow2 "
            "1M && qemu-img create -q -f qcow2 -b noformat.qcow2 -F qcow2 "
            "probed.qcow2 1M", dir);
    drop_backing_format("in/noformat.qcow2");
    drop_backing_format("in/probed.qcow2");
    snprintf(top, sizeof(top), "%s/in/up.qcow2", dir);
    refused("outside-root", top, NULL, -EPERM, "outside");
    snprintf(top, sizeof(top), "%s/in/sym.qcow2", dir);
    refused("symlink-escape", top, NULL, -EPERM, "outside");
    /* The same escape is fine under a root that holds its target. */
    QT_CHECK(open_img(top, "qcow2", dir, &img, err, sizeof(err)) == 0);
    image_close(img);
    snprintf(top, sizeof(top), "%s/in/ok.qcow2", dir);
    QT_CHECK(open_img(top, "qcow2", NULL, &img, err, sizeof(err)) == 0);
    if (img) {
        check_chain(img, 2, (const char *const[]){ "qcow2", "raw" });
        protocol_children(img);
        image_close(img);
    }
    /* Without a format extension the backing file is probed: qcow2 by its
     * magic, then raw. */
    snprintf(top, sizeof(top), "%s/in/probed.qcow2", dir);
    QT_CHECK(open_img(top, "qcow2", NULL, &img, err, sizeof(err)) == 0);
    if (img) {
        check_chain(img, 3, (const char *const[]){ "qcow2", "qcow2", "raw" });
        image_close(img);
    } else {
        QT_FAIL("probed chain: %s", err);
    }
}

/* c0.qcow2 -> c1.qcow2 -> ... -> c<n-1>.qcow2 (no backing); returns c0. */
static void make_chain(int n, char *top, size_t toplen)
{
    qt_must("cd '%s' && rm -rf chain && mkdir chain && cd chain && "
            "qemu-img create -q -f qcow2 c%d.qcow2 1M && i=%d && "
            "while [ $i -gt 0 ]; do i=$((i - 1)); qemu-img create -q -f qcow2 "
            "-b c$((i + 1)).qcow2 -F qcow2 c$i.qcow2 1M || exit 1; done",
            dir, n - 1, n - 1);
    snprintf(top, toplen, "%s/chain/c0.qcow2", dir);
}

static void depth_limit(void)
{
    char top[4200], err[1024];
    struct image *img;
    /* The top and IMAGE_MAX_CHAIN_DEPTH images below it: allowed. */
    make_chain(IMAGE_MAX_CHAIN_DEPTH + 1, top, sizeof(top));
    if (open_img(top, "qcow2", NULL, &img, err, sizeof(err)) != 0) {
        QT_FAIL("chain of %d refused: %s", IMAGE_MAX_CHAIN_DEPTH + 1, err);
    } else {
        struct image *n = img;
        int count = 0;
        for (; n; n = n->backing)
            count++;
        QT_CHECK(count == IMAGE_MAX_CHAIN_DEPTH + 1);
        image_close(img);
    }
    /* One more: refused, naming the image whose backing is too deep. */
    make_chain(IMAGE_MAX_CHAIN_DEPTH + 2, top, sizeof(top));
    char want[64];
    snprintf(want, sizeof(want), "c%d.qcow2: backing chain deeper",
             IMAGE_MAX_CHAIN_DEPTH);
    refused("chain-too-deep", top, NULL, -ELOOP, want);
    /* A loop is refused by the same limit. */
    qt_must("cd '%s/chain' && qemu-img rebase -u -b c0.qcow2 -F qcow2 "
            "c%d.qcow2", dir, IMAGE_MAX_CHAIN_DEPTH + 1);
    refused("chain-loop", top, NULL, -ELOOP, "deeper than");
}

/* One entry of qemu-img map --output=json. */
struct map_entry {
    uint64_t start, length;
    int depth;
    bool present, zero, data;
};

static bool json_bool(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p && strncmp(p + strlen(key), " true", 5) == 0;
}

static int qemu_map(const char *path, struct map_entry *e, int max)
{
    static char out[65536];
    if (qt_run_out(out, sizeof(out), "qemu-img map --output=json '%s'",
                   path) != 0) {
        QT_FAIL("qemu-img map %s: %s", path, out);
        return 0;
    }
    int n = 0;
    for (char *line = strtok(out, "\n"); line && n < max;
         line = strtok(NULL, "\n")) {
        const char *st = strstr(line, "\"start\":");
        const char *le = strstr(line, "\"length\":");
        const char *de = strstr(line, "\"depth\":");
        if (!st || !le || !de)
            continue;
        e[n].start = strtoull(st + 8, NULL, 10);
        e[n].length = strtoull(le + 9, NULL, 10);
        e[n].depth = atoi(de + 8);
        e[n].present = json_bool(line, "\"present\":");
        e[n].zero = json_bool(line, "\"zero\":");
        e[n].data = json_bool(line, "\"data\":");
        n++;
    }
    return n;
}

static int depth_of(struct image *top, struct image *layer)
{
    int d = 0;
    for (struct image *n = top; n && n != layer; n = image_backing_child(n))
        d++;
    return d;
}

/* Our view of granule [off, off+64k) (inside one extent of kind k
 * answered by layer depth d) against qemu's entry for it. */
static void compare_granule(uint64_t off, enum image_extent_kind k, int d,
                            const struct map_entry *e, int n)
{
    int i = 0;
    while (i < n && !(e[i].start <= off && off < e[i].start + e[i].length))
        i++;
    if (i == n) {
        QT_FAIL("qemu-img map has nothing at %" PRIu64, off);
        return;
    }
    bool ok = e[i].data == (k == IMAGE_EXTENT_DATA) &&
              e[i].zero == (k != IMAGE_EXTENT_DATA) && e[i].depth == d &&
              (e[i].present || k == IMAGE_EXTENT_UNALLOCATED) &&
              (k != IMAGE_EXTENT_ZERO || e[i].present);
    if (!ok)
        QT_FAIL("at %" PRIu64 ": kind %d from depth %d, qemu-img map: "
                "depth %d present %d zero %d data %d", off, (int)k, d,
                e[i].depth, e[i].present, e[i].zero, e[i].data);
}

static void status_above(void)
{
    char top[4200], err[1024];
    /* base.raw (4M) <- mid.qcow2 (5M) <- top.qcow2 (6M): data, zeros and
     * raw holes at every depth, and each layer ends below the one above. */
    qt_must("cd '%s' && rm -rf sa && mkdir sa && cd sa && "
            "qemu-img create -q -f raw base.raw 4M && qemu-io -f raw "
            "-c 'write -P 0x11 0 1M' -c 'write -P 0x11 3M 512k' base.raw && "
            "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 5M && "
            "qemu-io -f qcow2 -c 'write -P 0x22 512k 1M' -c 'write -z 2M 512k' "
            "mid.qcow2 && qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "
            "top.qcow2 6M && qemu-io -f qcow2 -c 'write -P 0x33 1280k 128k' "
            "-c 'write -z 3136k 64k' -c 'discard 2112k 64k' top.qcow2", dir);
    snprintf(top, sizeof(top), "%s/sa/top.qcow2", dir);
    struct map_entry map[64];
    int n = qemu_map(top, map, 64);
    QT_CHECK(n > 8);
    struct image *img;
    if (open_img(top, "qcow2", NULL, &img, err, sizeof(err)) != 0) {
        QT_FAIL("open %s: %s", top, err);
        return;
    }
    unsigned granules = 0;
    for (uint64_t off = 0; off < img->size;) {
        enum image_extent_kind k;
        uint64_t ext;
        struct image *layer = NULL;
        int ret = image_block_status_above(img, NULL, off, img->size - off,
                                           &k, &ext, &layer);
        if (ret < 0 || ext == 0 || !layer) {
            QT_FAIL("status above at %" PRIu64 ": %d", off, ret);
            break;
        }
        for (uint64_t g = off; g < off + ext; g += 65536, granules++)
            compare_granule(g, k, depth_of(img, layer), map, n);
        off += ext;
    }
    QT_CHECK(granules == 6 * 16);
    /* With mid as the base only top's own layer counts: mid's data at
     * 512k shows as unallocated in top. */
    enum image_extent_kind k;
    uint64_t ext;
    struct image *layer;
    QT_CHECK(image_block_status_above(img, img->backing, 512 * 1024, 65536,
                                      &k, &ext, &layer) == 0);
    QT_CHECK(k == IMAGE_EXTENT_UNALLOCATED && layer == img && ext == 65536);
    /* A layer's own status: unallocated where only a backing file has
     * data. */
    QT_CHECK(image_block_status(img, 0, 65536, &k, &ext) == 0);
    QT_CHECK(k == IMAGE_EXTENT_UNALLOCATED);
    image_close(img);
}

/* A pass-through filter that counts the reads and writes it sees and
 * defines nothing else: every other operation must reach its child. */
struct count_filter {
    struct image img;
    atomic_uint reads, writes;
};

static int count_readv(struct image *img, const struct iovec *iov,
                       int iovcnt, uint64_t off)
{
    atomic_fetch_add(&((struct count_filter *)img)->reads, 1);
    return image_readv(img->file, iov, iovcnt, off);
}

static int count_writev(struct image *img, const struct iovec *iov,
                        int iovcnt, uint64_t off, unsigned flags)
{
    atomic_fetch_add(&((struct count_filter *)img)->writes, 1);
    return image_writev(img->file, iov, iovcnt, off, flags);
}

static const struct image_ops count_ops = {
    .name = "count",
    .readv = count_readv,
    .writev = count_writev,
};

static const struct block_driver count_driver = {
    .name = "count",
    .instance_size = sizeof(struct count_filter),
    .ops = &count_ops,
    .is_filter = true,
};

/* The same requests on both graphs. */
static void same_requests(struct image *a, struct image *b)
{
    static uint8_t buf[256 * 1024];
    struct { uint64_t off, len; int what; } req[] = {
        { 100 * 1024, 8192, 0 },        /* partial cluster: COW from base */
        { 1024 * 1024, 256 * 1024, 0 }, /* whole clusters */
        { 192 * 1024, 128 * 1024, 1 },  /* zero, may unmap */
        { 1024 * 1024 + 4096, 4096, 2 },/* zero, keep (partial) */
        { 512 * 1024, 128 * 1024, 3 },  /* discard over base data */
        { 2 * 1024 * 1024, 64 * 1024, 4 }, /* zero, no fallback */
    };
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++) {
        memset(buf, 0x40 + (int)i, sizeof(buf));
        int ra, rb;
        switch (req[i].what) {
        case 0:
            ra = image_write(a, buf, req[i].len, req[i].off, 0);
            rb = image_write(b, buf, req[i].len, req[i].off, 0);
            break;
        case 1:
        case 2:
            ra = image_zero(a, req[i].off, req[i].len,
                            req[i].what == 1 ? IMAGE_MAY_UNMAP : 0);
            rb = image_zero(b, req[i].off, req[i].len,
                            req[i].what == 1 ? IMAGE_MAY_UNMAP : 0);
            break;
        case 3:
            ra = image_discard(a, req[i].off, req[i].len);
            rb = image_discard(b, req[i].off, req[i].len);
            break;
        default:
            ra = image_zero(a, req[i].off, req[i].len, IMAGE_NO_FALLBACK);
            rb = image_zero(b, req[i].off, req[i].len, IMAGE_NO_FALLBACK);
            break;
        }
        QT_CHECK(ra == 0 && rb == 0);
    }
    QT_CHECK(image_flush(a) == 0 && image_flush(b) == 0);
    /* The files were copied (cp makes its own holes): only each graph's
     * own count can be compared, in filters(). */
    QT_CHECK(image_allocated_bytes(a) > 0 && image_allocated_bytes(b) > 0);
}

/* Both graphs read and map the same, extent by extent. */
static void same_view(struct image *a, struct image *b)
{
    QT_CHECK(a->size == b->size);
    size_t len = (size_t)a->size;
    uint8_t *ba = malloc(len), *bb = malloc(len);
    QT_CHECK(image_read(a, ba, len, 0) == 0 && image_read(b, bb, len, 0) == 0);
    long d = qt_first_diff(ba, bb, len);
    if (d >= 0)
        QT_FAIL("content differs at %ld: 0x%02x vs 0x%02x", d, ba[d], bb[d]);
    free(ba);
    free(bb);
    for (uint64_t off = 0; off < a->size;) {
        enum image_extent_kind ka, kb;
        uint64_t ea, eb;
        QT_CHECK(image_block_status_above(a, NULL, off, a->size - off, &ka,
                                          &ea, NULL) == 0);
        QT_CHECK(image_block_status_above(b, NULL, off, b->size - off, &kb,
                                          &eb, NULL) == 0);
        if (ka != kb || ea != eb) {
            QT_FAIL("status at %" PRIu64 ": %d+%" PRIu64 " vs %d+%" PRIu64,
                    off, (int)ka, ea, (int)kb, eb);
            break;
        }
        off += ea;
    }
}

static void filters(void)
{
    char pa[4200], pb[4200], err[1024];
    qt_must("cd '%s' && rm -rf fa fb && mkdir fa && cd fa && "
            "qemu-img create -q -f raw base.raw 4M && qemu-io -f raw "
            "-c 'write -P 0x11 0 1536k' base.raw && qemu-img create -q -f "
            "qcow2 -b base.raw -F raw top.qcow2 4M && qemu-io -f qcow2 "
            "-c 'write -P 0x22 64k 64k' top.qcow2 && cp -r ../fa ../fb", dir);
    snprintf(pa, sizeof(pa), "%s/fa/top.qcow2", dir);
    snprintf(pb, sizeof(pb), "%s/fb/top.qcow2", dir);
    struct image *a, *b;
    if (open_img(pa, "qcow2", NULL, &a, err, sizeof(err)) != 0 ||
        open_img(pb, "qcow2", NULL, &b, err, sizeof(err)) != 0) {
        QT_FAIL("open: %s", err);
        return;
    }
    struct image *qcow2_node = b;
    /* One filter between qcow2 and its backing, one above qcow2. */
    QT_CHECK(image_insert_filter(&qcow2_node->backing, &count_driver, err,
                                 sizeof(err)) == 0);
    QT_CHECK(image_insert_filter(&b, &count_driver, err, sizeof(err)) == 0);
    struct count_filter *above = (struct count_filter *)b;
    struct count_filter *below = (struct count_filter *)qcow2_node->backing;
    QT_CHECK(b->file == qcow2_node && b->drv == &count_driver);
    QT_CHECK(below->img.file && below->img.file->drv == &raw_driver);
    QT_CHECK(b->size == a->size && below->img.info.read_only);
    QT_CHECK(image_backing_child(b) == &below->img);

    same_view(a, b);
    same_requests(a, b);
    same_view(a, b);
    QT_CHECK(image_allocated_bytes(b) == image_allocated_bytes(qcow2_node));
    QT_CHECK(atomic_load(&above->writes) == 2);
    QT_CHECK(atomic_load(&above->reads) >= 1);
    /* The copy-on-write of the partial write read the base through the
     * lower filter. */
    QT_CHECK(atomic_load(&below->reads) >= 1);
    QT_CHECK(atomic_load(&below->writes) == 0);
    /* The backing is read-only through the filter too. */
    uint8_t x = 1;
    QT_CHECK(image_write(&below->img, &x, 1, 0, 0) == -EROFS);
    QT_CHECK(image_skip_filters(b) == qcow2_node);
    QT_CHECK(image_skip_filters(qcow2_node) == qcow2_node);
    /* Taking the filters out leaves their children where they were, open
     * and serving the same content. */
    image_remove_filter(&b);
    image_remove_filter(&qcow2_node->backing);
    QT_CHECK(b == qcow2_node && qcow2_node->backing->drv == &raw_driver);
    same_view(a, b);
    QT_CHECK(image_close(a) == 0);
    QT_CHECK(image_close(b) == 0);
    /* Closed through the filters, the images are consistent. */
    QT_CHECK(qt_check(pa) == 0 && qt_check(pb) == 0);
    QT_CHECK(qt_run("qemu-img compare -q '%s' '%s'", pa, pb) == 0);
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "qlun-test-graph");
    driver_lookup();
    confinement();
    depth_limit();
    status_above();
    filters();
    qt_rmtree(dir);
    return qt_summary("test_graph");
}
