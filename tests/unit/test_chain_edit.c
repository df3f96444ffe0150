/* Unit tests: chain edits (block/chain_edit.c) and qcow2's
 * change_backing_file, on chains base (raw or qcow2) <- mid <- top made
 * by qemu-img:
 *  - image_chain_find finds each node by path, and nothing else;
 *  - a stream into top (mid's data copied into top) then
 *    image_set_backing(top, base): the graph drops mid, the image names
 *    base (relative "base", "sub/base" under top's directory, absolute
 *    elsewhere), qemu-img info --backing-chain shows top -> base,
 *    qemu-img check is clean, the content is unchanged;
 *  - crash safety: every host write of that stream and set_backing to
 *    top's file is recorded, and every crash (tests/qcow2/crash_rec.h)
 *    must check clean (leaks allowed), name mid or base, and read the
 *    same content; both names must be seen;
 *  - a commit into a reopened base: base reopened read-write in place
 *    (top still reads through it), mid's data copied into it, top's
 *    backing set to base, base reopened read-only;
 *  - image_close_above keeps the node below open and usable;
 *  - raw cannot name a backing file: -ENOTSUP, said in err.
 * Needs qemu-img and jq (exit 77 = skipped without).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/copy.h"
#include "block/file.h"
#include "block/image.h"
#include "tests/qcow2/crash_rec.h"
#include "tests/qcow2/qtest.h"

#define KiB 1024ull
#define SIZE (4096 * KiB)

static char dir[4096];

/* dir/name/ holding top.qcow2 and mid.qcow2, base at base_rel (from
 * there: "base", "sub/base" or "../lower-NAME/base") in format base_fmt;
 * data in every layer, zero clusters over lower data, holes.  The
 * expected content goes to dir/name/ref.raw. */
static void make_chain(const char *name, const char *base_rel,
                       const char *base_fmt)
{
    qt_must("cd '%s' && mkdir -p %s && cd %s && mkdir -p \"$(dirname %s)\" "
            "&& qemu-img create -q -f %s %s 4M && "
            "qemu-io -f %s -c 'write -P 0x11 0 1M' %s && "
            "qemu-img create -q -f qcow2 -b %s -F %s mid.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 0x22 1M 512k' "
            "-c 'write -z 0 256k' -c 'write -P 0x23 3M 64k' mid.qcow2 && "
            "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 0x33 2M 256k' "
            "-c 'write -z 1M 128k' top.qcow2 && "
            "qemu-img convert -O raw top.qcow2 ref.raw",
            dir, name, name, base_rel, base_fmt, base_rel, base_fmt,
            base_rel, base_rel, base_fmt);
}

static struct image *open_top(const char *name, bool ro)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s/top.qcow2", dir, name);
    struct image_open_opts o = { .path = path, .format = "qcow2",
                                 .read_only = ro, .backing_root = dir };
    struct image *img = NULL;
    char err[512];
    if (image_open(&o, &img, err, sizeof(err)) < 0)
        QT_FAIL("open %s: %s", path, err);
    return img;
}

/* qemu-img's view of dir/name/file: check clean, same content as
 * ref.raw, and its backing file name. */
static void qemu_view(const char *name, const char *file,
                      const char *want_backing)
{
    char path[4200], out[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, name, file);
    QT_CHECK(qt_check(path) == 0);
    QT_CHECK(qt_run("cd '%s/%s' && qemu-img compare -q -F raw %s ref.raw",
                    dir, name, file) == 0);
    QT_CHECK(qt_run_out(out, sizeof(out), "qemu-img info --output=json '%s' "
                        "| jq -r '.\"backing-filename\"'", path) == 0);
    out[strcspn(out, "\n")] = 0;
    if (strcmp(out, want_backing) != 0)
        QT_FAIL("%s names backing '%s', expected '%s'", path, out,
                want_backing);
    /* The whole chain as qemu-img walks it: two images, mid gone. */
    QT_CHECK(qt_run_out(out, sizeof(out), "qemu-img info --backing-chain "
                        "--output=json '%s' | jq length", path) == 0);
    QT_CHECK(atoi(out) == 2);
}

static void find_nodes(void)
{
    make_chain("find", "base", "qcow2");
    struct image *top = open_top("find", true);
    if (!top)
        return;
    char p[4200];
    snprintf(p, sizeof(p), "%s/find/top.qcow2", dir);
    QT_CHECK(image_chain_find(top, p) == top);
    snprintf(p, sizeof(p), "%s/find/mid.qcow2", dir);
    QT_CHECK(image_chain_find(top, p) == top->backing);
    snprintf(p, sizeof(p), "%s/find/../find/base", dir);
    QT_CHECK(image_chain_find(top, p) == top->backing->backing);
    snprintf(p, sizeof(p), "%s/find/ref.raw", dir);
    QT_CHECK(image_chain_find(top, p) == NULL);
    snprintf(p, sizeof(p), "%s/find/nothing", dir);
    QT_CHECK(image_chain_find(top, p) == NULL);
    /* Below the top only: mid's chain has no top. */
    snprintf(p, sizeof(p), "%s/find/top.qcow2", dir);
    QT_CHECK(image_chain_find(top->backing, p) == NULL);
    image_close(top);
}

/* Copy into top what a reader of top sees above base where top's own
 * layer has nothing (a stream). */
static int stream_into_top(struct image *top, struct image *base)
{
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, 64 * KiB) != 0)
        return -ENOMEM;
    int ret = 0;
    for (uint64_t off = 0; ret == 0 && off < SIZE;) {
        enum image_extent_kind kind;
        uint64_t n;
        ret = image_block_status(top, off, SIZE - off, &kind, &n);
        if (ret == 0 && kind == IMAGE_EXTENT_UNALLOCATED)
            ret = image_copy_range(top, base, top, off, n, COPY_DST_ANY, buf,
                                   64 * KiB, NULL);
        off += n;
    }
    free(buf);
    return ret;
}

/* What every crash image of the stream must be. */
struct crash_ctx {
    const char *name;
    unsigned old_name, new_name, images;
};

static void judge(const struct crash_file *f, const char *what, void *opaque)
{
    struct crash_ctx *c = opaque;
    char path[4200], out[4096];
    snprintf(path, sizeof(path), "%s/%s/crash.qcow2", dir, c->name);
    if (!qt_write_file(path, f->b, f->size)) {
        QT_FAIL("%s: cannot write %s", what, path);
        return;
    }
    c->images++;
    int st = qt_run_out(out, sizeof(out), "qemu-img check -q '%s'", path);
    if (st != 0 && st != 3)
        QT_FAIL("%s: qemu-img check -> %d\n%s", what, st, out);
    if (qt_run_out(out, sizeof(out), "qemu-img info --output=json '%s' | "
                   "jq -r '.\"backing-filename\"'", path) != 0) {
        QT_FAIL("%s: qemu-img info failed: %s", what, out);
        return;
    }
    out[strcspn(out, "\n")] = 0;
    if (strcmp(out, "mid.qcow2") == 0)
        c->old_name++;
    else if (strcmp(out, "base") == 0)
        c->new_name++;
    else
        QT_FAIL("%s: names backing '%s'", what, out);
    if (qt_run_out(out, sizeof(out), "cd '%s/%s' && qemu-img compare -F raw "
                   "crash.qcow2 ref.raw", dir, c->name) != 0)
        QT_FAIL("%s: content differs: %s", what, out);
}

/* Stream mid into top, set top's backing to base, with every crash of
 * top's file replayed. */
static void stream_and_crash(void)
{
    const char *name = "stream";
    make_chain(name, "base", "qcow2");
    struct image *top = open_top(name, false);
    if (!top)
        return;
    struct image *base = top->backing->backing;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s/top.qcow2", dir, name);
    size_t len;
    struct crash_file before = { 0 };
    before.b = qt_read_file(path, &len);
    before.size = len;
    crash_rec_start(file_host(top->file)->fd);
    QT_CHECK(stream_into_top(top, base) == 0);
    char err[512] = "";
    QT_CHECK(image_set_backing(top, base, err, sizeof(err)) == 0);
    crash_rec_stop();
    QT_CHECK(top->backing == base);
    QT_CHECK(top->backing_name && strcmp(top->backing_name, "base") == 0);
    QT_CHECK(top->backing_format &&
             strcmp(top->backing_format, "qcow2") == 0);
    QT_CHECK(image_close(top) == 0);
    qemu_view(name, "top.qcow2", "base");

    struct crash_ctx c = { .name = name };
    struct qt_rng rng;
    qt_rng_seed(&rng, qt_seed());
    crash_replay(&before, &rng, judge, &c);
    printf("stream: %zu host ops on top, %u crash images: %u name mid, %u "
           "name base\n", crash_nops, c.images, c.old_name, c.new_name);
    QT_CHECK(c.old_name > 0 && c.new_name > 0);
    crash_rec_clear();
    free(before.b);
}

/* A commit of mid into base: base reopened read-write in place, mid's
 * data copied into it, top's backing set to base (mid closed), base
 * reopened read-only.  base_rel: where base lies; want: the name top
 * must store for it. */
static void commit_mid(const char *name, const char *base_rel,
                       const char *base_fmt, const char *want)
{
    make_chain(name, base_rel, base_fmt);
    struct image *top = open_top(name, false);
    if (!top)
        return;
    struct image *mid = top->backing;
    char err[512] = "";
    struct image_open_opts o = { .read_only = false, .backing_root = dir };
    QT_CHECK(image_reopen(&mid->backing, &o, err, sizeof(err)) == 0);
    struct image *base = mid->backing;
    QT_CHECK(!base->info.read_only && !base->file->info.read_only);
    void *buf = NULL;
    QT_CHECK(posix_memalign(&buf, 4096, 64 * KiB) == 0);
    QT_CHECK(image_copy_range(mid, base, base, 0, SIZE, COPY_DST_ANY, buf,
                              64 * KiB, NULL) == 0);
    free(buf);
    QT_CHECK(image_flush(base) == 0);
    QT_CHECK(image_set_backing(top, base, err, sizeof(err)) == 0);
    QT_CHECK(top->backing == base);
    if (!top->backing_name || strcmp(top->backing_name, want) != 0)
        QT_FAIL("stored backing name '%s', expected '%s'",
                top->backing_name ? top->backing_name : "(null)", want);
    o.read_only = true;
    QT_CHECK(image_reopen(&top->backing, &o, err, sizeof(err)) == 0);
    QT_CHECK(top->backing->info.read_only);
    QT_CHECK(image_write(top->backing, "x", 1, 0, 0) == -EROFS);
    /* top reads the same through the new chain. */
    char ref[4200];
    snprintf(ref, sizeof(ref), "%s/%s/ref.raw", dir, name);
    size_t len;
    uint8_t *expect = qt_read_file(ref, &len);
    QT_CHECK(expect && len == SIZE && qt_compare_image(top, expect, "top after commit"));
    free(expect);
    QT_CHECK(image_close(top) == 0);
    qemu_view(name, "top.qcow2", want);
}

/* close_above: the node kept stays open, detached, readable. */
static void close_above(void)
{
    make_chain("close", "base", "raw");
    struct image *top = open_top("close", true);
    if (!top)
        return;
    struct image *base = top->backing->backing;
    QT_CHECK(image_close_above(top, base) == 0);
    uint8_t b[512];
    QT_CHECK(image_read(base, b, sizeof(b), 512 * KiB) == 0 && b[0] == 0x11);
    QT_CHECK(image_close(base) == 0);
}

static void raw_refuses(void)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/close/base", dir);
    struct image_open_opts o = { .path = path, .format = "raw" };
    struct image *img = NULL;
    char err[512] = "";
    QT_CHECK(image_open(&o, &img, err, sizeof(err)) == 0);
    if (!img)
        return;
    err[0] = 0;
    QT_CHECK(image_set_backing(img, NULL, err, sizeof(err)) == -ENOTSUP);
    QT_CHECK(strstr(err, "raw format cannot name a backing file") != NULL);
    image_close(img);
}

int main(void)
{
    qt_require_qemu();
    if (qt_run("command -v jq") != 0) {
        printf("SKIP: jq not installed\n");
        return SKIP_CODE;
    }
    qt_mkdtemp(dir, sizeof(dir), "qlun-test-chain-edit");
    find_nodes();
    stream_and_crash();
    commit_mid("commit-qcow2", "base", "qcow2", "base");
    commit_mid("commit-raw", "base", "raw", "base");
    commit_mid("commit-sub", "sub/base", "qcow2", "sub/base");
    char lower[4200], abs_base[4300];
    snprintf(lower, sizeof(lower), "../lower/base");
    snprintf(abs_base, sizeof(abs_base), "%s/lower/base", dir);
    commit_mid("commit-abs", lower, "raw", abs_base);
    close_above();
    raw_refuses();
    qt_rmtree(dir);
    return qt_summary("test_chain_edit");
}
