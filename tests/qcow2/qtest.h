/* qlun — helpers for the qcow2 engine tests: running qemu-img/qemu-io,
 * scratch directories, whole-image comparisons, a seeded PRNG. */
#ifndef QLUN_TESTS_QCOW2_QTEST_H
#define QLUN_TESTS_QCOW2_QTEST_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/image.h"

#define SKIP_CODE 77

/* Helpers a given test may not use. */
#define QT_FN static __attribute__((unused))

static int qt_failed;

#define QT_FAIL(...)                                                        \
    do {                                                                    \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);               \
        fprintf(stderr, __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                \
        qt_failed++;                                                        \
    } while (0)

#define QT_CHECK(cond)                                                      \
    do {                                                                    \
        if (!(cond))                                                        \
            QT_FAIL("%s", #cond);                                           \
    } while (0)

/* Run a shell command (printf format); returns its exit status, or -1.
 * Output goes to out (if not NULL, up to outlen bytes) else is discarded
 * unless QLUN_TEST_VERBOSE is set. */
QT_FN int qt_run_out(char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
QT_FN int qt_run_out(char *out, size_t outlen, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (getenv("QLUN_TEST_VERBOSE"))
        fprintf(stderr, "+ %s\n", cmd);
    char full[8300];
    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p)
        return -1;
    char tmp[4096];
    size_t used = 0;
    if (out && outlen)
        out[0] = 0;
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), p)) > 0) {
        if (out && used + 1 < outlen) {
            size_t m = n < outlen - 1 - used ? n : outlen - 1 - used;
            memcpy(out + used, tmp, m);
            used += m;
            out[used] = 0;
        }
        if (getenv("QLUN_TEST_VERBOSE"))
            fwrite(tmp, 1, n, stderr);
    }
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

#define qt_run(...) qt_run_out(NULL, 0, __VA_ARGS__)

/* Run a command that must succeed; on failure print its output. */
QT_FN bool qt_must(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
QT_FN bool qt_must(const char *fmt, ...)
{
    char cmd[8192], out[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = qt_run_out(out, sizeof(out), "%s", cmd);
    if (st != 0) {
        QT_FAIL("command failed (%d): %s\n%s", st, cmd, out);
        return false;
    }
    return true;
}

/* Exit 77 (CTest skip) when qemu-img or qemu-io is missing. */
QT_FN void qt_require_qemu(void)
{
    if (qt_run("command -v qemu-img && command -v qemu-io") != 0) {
        printf("SKIP: qemu-img/qemu-io not installed\n");
        exit(SKIP_CODE);
    }
}

/* A fresh scratch directory (under $QLUN_TEST_TMPDIR or the cwd). */
QT_FN void qt_mkdtemp(char *buf, size_t len, const char *name)
{
    const char *base = getenv("QLUN_TEST_TMPDIR");
    char cwd[4096];
    if (!base)
        base = getcwd(cwd, sizeof(cwd));
    snprintf(buf, len, "%s/%s.XXXXXX", base, name);
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(1);
    }
}

QT_FN void qt_rmtree(const char *dir)
{
    if (!getenv("QLUN_TEST_KEEP"))
        qt_run("rm -rf '%s'", dir);
}

/* qemu-img check: its exit status (0 clean, 2 corrupt, 3 leaks). */
QT_FN int qt_check(const char *img)
{
    char out[16384];
    int st = qt_run_out(out, sizeof(out), "qemu-img check -f qcow2 '%s'", img);
    if (st != 0)
        fprintf(stderr, "qemu-img check %s -> %d:\n%s\n", img, st, out);
    return st;
}

QT_FN uint8_t *qt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

QT_FN bool qt_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(buf, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static bool qt_direct_io; /* open with O_DIRECT */
static uint64_t qt_l2_cache_bytes; /* L2 cache size to open with; 0 = default */

QT_FN int qt_open(const char *path, bool ro, const char *root,
                  struct image **img)
{
    char err[1024] = "";
    struct image_open_opts o = {
        .path = path, .format = "qcow2", .read_only = ro,
        .backing_root = root, .direct_io = qt_direct_io,
        .l2_cache_bytes = qt_l2_cache_bytes,
    };
    int ret = image_open(&o, img, err, sizeof(err));
    if (ret < 0)
        fprintf(stderr, "open %s: %s (%d)\n", path, err, ret);
    return ret;
}

/* First differing byte, or -1. */
QT_FN long qt_first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (memcmp(a, b, n) == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return (long)i;
    return -1;
}

/* Read the whole image through the engine, in chunks of varied size, and
 * compare with expect.  Also checks that every extent block status calls
 * zero or unallocated reads as zeros. */
QT_FN bool qt_compare_image(struct image *img, const uint8_t *expect,
                             const char *what)
{
    size_t size = img->size;
    uint8_t *buf = calloc(1, size ? size : 1);
    if (!buf)
        return false;
    size_t chunks[] = { 4096, 65536 + 512, 1 << 20, 7 * 512 };
    size_t pos = 0;
    for (int i = 0; pos < size; i++) {
        size_t n = chunks[i % 4];
        if (n > size - pos)
            n = size - pos;
        int ret = image_read(img, buf + pos, n, pos);
        if (ret < 0) {
            QT_FAIL("%s: read at %zu: %s", what, pos, strerror(-ret));
            free(buf);
            return false;
        }
        pos += n;
    }
    long d = qt_first_diff(buf, expect, size);
    if (d >= 0) {
        QT_FAIL("%s: content differs at byte %ld (got 0x%02x want 0x%02x)",
                what, d, buf[d], expect[d]);
        free(buf);
        return false;
    }
    for (uint64_t off = 0; off < size;) {
        enum image_extent_kind k;
        uint64_t n;
        int ret = image_block_status_above(img, NULL, off, size - off, &k,
                                           &n, NULL);
        if (ret < 0) {
            QT_FAIL("%s: block status at %" PRIu64 ": %s", what, off,
                    strerror(-ret));
            break;
        }
        if (k != IMAGE_EXTENT_DATA) {
            for (uint64_t i = off; i < off + n; i++)
                if (expect[i]) {
                    QT_FAIL("%s: block status says %s at [%" PRIu64 ", +%"
                            PRIu64 ") but byte %" PRIu64 " is 0x%02x", what,
                            k == IMAGE_EXTENT_ZERO ? "zero" : "unallocated",
                            off, n, i, expect[i]);
                    free(buf);
                    return false;
                }
        }
        off += n;
    }
    free(buf);
    return true;
}

/* Convert an image to raw with qemu-img and load it. */
QT_FN uint8_t *qt_qemu_raw(const char *img, const char *dir, size_t *len,
                            const char *extra)
{
    char raw[4200];
    snprintf(raw, sizeof(raw), "%s/.convert.raw", dir);
    if (!qt_must("qemu-img convert %s -O raw '%s' '%s'", extra ? extra : "",
                 img, raw))
        return NULL;
    uint8_t *b = qt_read_file(raw, len);
    unlink(raw);
    return b;
}

/* xoshiro256** seeded by splitmix64. */
struct qt_rng {
    uint64_t s[4];
};

QT_FN uint64_t qt_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

QT_FN void qt_rng_seed(struct qt_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = qt_splitmix(&seed);
}

QT_FN uint64_t qt_rand(struct qt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t t = s[1] << 17;
    uint64_t res = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return res;
}

QT_FN uint64_t qt_below(struct qt_rng *r, uint64_t n)
{
    return n ? qt_rand(r) % n : 0;
}

QT_FN uint64_t qt_seed(void)
{
    const char *e = getenv("QLUN_SEED");
    return e ? strtoull(e, NULL, 0) : 20240601;
}

QT_FN int qt_summary(const char *name)
{
    if (qt_failed) {
        printf("%s: %d failure(s)\n", name, qt_failed);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
