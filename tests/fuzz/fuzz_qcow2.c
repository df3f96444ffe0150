/* libFuzzer target: the qcow2 engine (qcow2/) on a mutated image.
 *
 * Input: the image file, then a trailer of operations:
 *     image bytes | N op records of 8 bytes | one byte whose low 4 bits
 *     are N (if the input is too short for N records, N is 0).
 * Each iteration writes the image to DIR/img.qcow2 (DIR: a private
 * temporary directory under $QLUN_FUZZ_TMPDIR, else /dev/shm, else
 * $TMPDIR or /tmp), opens it read-write
 * with backing_root = DIR, runs the operations, closes it.  DIR holds only
 * that image and base.raw (1 MiB of a fixed pattern, read-only), so any
 * backing file name resolves to one of those two (the image itself makes
 * a loop, refused at depth 32) or is refused as outside the root.
 *
 * Op record: op, offset (3 bytes), length (2 bytes), flags, pattern.
 *   op & 7: 0 read, 1 write, 2 zero (flags bit 1: may unmap, bit 2: no
 *   fallback), 3 discard, 4 block status walk, 5 flush (flags bit 3:
 *   internal snapshots instead: list, then with flags bit 4 create
 *   "s<pattern % 4>", else delete id or name pattern % 4 + 1 / "s..."),
 *   6 write with FUA, 7 close and reopen (flags bit 1: read-only).
 *   offset = (offset field << (9 + 3 * (op >> 4 & 7))) mod virtual size;
 *   length = length field * 512 (flags bit 0: * 1, unaligned), clipped
 *   to the image end and to 256 KiB.
 *
 * Invariants (beyond ASan/UBSan and the engine's own asserts):
 *  - open, and every operation, returns 0 or a negative errno; a refused
 *    open names its cause in one non-empty line;
 *  - block status returns an extent of 1..len bytes, and an extent it
 *    calls zero or unallocated reads as zeros;
 *  - a snapshot list holds NUL-terminated printable ids and names; a
 *    failed snapshot operation explains itself in one non-empty line;
 *  - after each iteration no file descriptor is left open on a file of
 *    DIR, and (LeakSanitizer) no memory is left allocated.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/image.h"
#include "common/util.h"

#define MAX_IO (256u << 10)
#define BASE_BYTES (1u << 20)

#define FAIL_IF(cond)                                                       \
    do {                                                                    \
        if (cond) {                                                         \
            fprintf(stderr, "fuzz_qcow2: invariant broken: %s\n", #cond);   \
            abort();                                                        \
        }                                                                   \
    } while (0)

static char dir[PATH_MAX], img_path[PATH_MAX + 16], base_path[PATH_MAX + 16];
static uint8_t *buf, *zeros;

static void remove_dir(void)
{
    unlink(img_path);
    unlink(base_path);
    rmdir(dir);
}

static bool write_file(const char *path, const uint8_t *data, size_t size,
                       mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return false;
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            close(fd);
            return false;
        }
        done += (size_t)n;
    }
    return close(fd) == 0;
}

static void setup(void)
{
    /* run-fuzz.sh points QLUN_FUZZ_TMPDIR at a directory it removes
     * afterwards, crash or not. */
    const char *tmp = getenv("QLUN_FUZZ_TMPDIR");
    struct stat st;
    if (!tmp && stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
        access("/dev/shm", W_OK) == 0)
        tmp = "/dev/shm";
    if (!tmp)
        tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/qlun-fuzz-qcow2.XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz_qcow2: mkdtemp");
        exit(1);
    }
    /* A canonical path, so that realpath() of names in it is a no-op. */
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        perror("fuzz_qcow2: realpath");
        exit(1);
    }
    snprintf(dir, sizeof(dir), "%s", real);
    snprintf(img_path, sizeof(img_path), "%s/img.qcow2", dir);
    snprintf(base_path, sizeof(base_path), "%s/base.raw", dir);
    atexit(remove_dir);

    buf = malloc(MAX_IO);
    zeros = calloc(1, MAX_IO);
    uint8_t *base = malloc(BASE_BYTES);
    if (!buf || !zeros || !base)
        exit(1);
    /* Data, then a zero stretch, then data: backing reads are visible. */
    for (size_t i = 0; i < BASE_BYTES; i++)
        base[i] = i >= BASE_BYTES / 2 && i < BASE_BYTES * 3 / 4
                      ? 0 : (uint8_t)(i / 512 * 7 + 1);
    if (!write_file(base_path, base, BASE_BYTES, 0444)) {
        perror("fuzz_qcow2: base.raw");
        exit(1);
    }
    free(base);
}

/* No descriptor may stay open on a file of DIR (the image, base.raw).
 * (Counting descriptors would not do: the sanitizers' symbolizer and
 * libFuzzer open their own as they please.) */
static void check_no_fd_leak(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    size_t n = strlen(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (strncmp(target, dir, n) == 0 && target[n] == '/') {
            fprintf(stderr, "fuzz_qcow2: fd %s left open on %s\n",
                    e->d_name, target);
            abort();
        }
    }
    closedir(d);
}

static int open_image(bool ro, struct image **img)
{
    char err[512];
    memset(err, 0, sizeof(err));
    struct image_open_opts o = {
        .path = img_path, .format = "qcow2", .read_only = ro,
        .backing_root = dir,
    };
    int ret = image_open(&o, img, err, sizeof(err));
    FAIL_IF(ret > 0);
    if (ret < 0) {
        FAIL_IF(*img != NULL);
        FAIL_IF(err[0] == 0);
        if (strchr(err, '\n'))
            fprintf(stderr, "fuzz_qcow2: open error has a newline: %s\n",
                    err);
        FAIL_IF(strchr(err, '\n') != NULL);
    }
    return ret;
}

/* Walk [off, off + len) with block status; zero/unallocated must read 0. */
static void walk_status(struct image *img, uint64_t off, uint64_t len)
{
    for (int steps = 0; len > 0 && steps < 64; steps++) {
        enum image_extent_kind kind;
        uint64_t n = 0;
        int ret = image_block_status_above(img, NULL, off, len, &kind, &n,
                                           NULL);
        FAIL_IF(ret > 0);
        if (ret < 0)
            return;
        FAIL_IF(n == 0 || n > len);
        FAIL_IF(kind != IMAGE_EXTENT_DATA && kind != IMAGE_EXTENT_ZERO &&
                kind != IMAGE_EXTENT_UNALLOCATED);
        if (kind != IMAGE_EXTENT_DATA) {
            size_t r = (size_t)MIN(n, (uint64_t)MAX_IO);
            ret = image_read(img, buf, r, off);
            FAIL_IF(ret > 0);
            if (ret == 0 && memcmp(buf, zeros, r) != 0)
                fprintf(stderr, "fuzz_qcow2: extent at %llu (+%llu) is %s "
                        "but does not read as zeros\n",
                        (unsigned long long)off, (unsigned long long)n,
                        kind == IMAGE_EXTENT_ZERO ? "zero" : "unallocated");
            FAIL_IF(ret == 0 && memcmp(buf, zeros, r) != 0);
        }
        off += n;
        len -= n;
    }
}

static bool printable_str(const char *s, size_t size)
{
    size_t n = strnlen(s, size);
    if (n == size)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

/* List, then create or delete a snapshot (see the top). */
static int snapshot_op(struct image *img, uint8_t flags, uint8_t pattern)
{
    struct image_snapshot_info *l = NULL;
    size_t n = 0;
    char err[512] = "", name[16];
    int ret = image_snapshot_list(img, &l, &n, err, sizeof(err));
    FAIL_IF(ret > 0 || (ret == 0 && n > 0 && l == NULL));
    for (size_t i = 0; ret == 0 && i < n; i++)
        FAIL_IF(!printable_str(l[i].id, sizeof(l[i].id)) ||
                !printable_str(l[i].name, sizeof(l[i].name)));
    free(l);
    err[0] = 0;
    if (flags & 16) {
        snprintf(name, sizeof(name), "s%u", pattern % 4);
        ret = image_snapshot_create(img, name, err, sizeof(err));
    } else {
        if (pattern & 4)
            snprintf(name, sizeof(name), "s%u", pattern % 4);
        else
            snprintf(name, sizeof(name), "%u", pattern % 4 + 1);
        ret = image_snapshot_delete(img, name, err, sizeof(err));
    }
    FAIL_IF(ret < 0 && (err[0] == 0 || strchr(err, '\n') != NULL));
    return ret;
}

static void run_ops(struct image *img, const uint8_t *ops, unsigned nops)
{
    for (unsigned i = 0; i < nops && img; i++) {
        const uint8_t *r = ops + 8 * i;
        uint8_t op = r[0], flags = r[6], pattern = r[7];
        if (img->size == 0 && (op & 7) != 5 && (op & 7) != 7)
            continue;
        unsigned shift = 9 + 3 * ((op >> 4) & 7);
        uint64_t off = img->size ? ((uint64_t)get_be24(r + 1) << shift) %
                                       img->size
                                 : 0;
        uint64_t len = (uint64_t)get_be16(r + 4) * (flags & 1 ? 1 : 512);
        len = MIN(MIN(len, img->size - off), (uint64_t)MAX_IO);
        int ret = 0;
        switch (op & 7) {
        case 0:
            if (len)
                ret = image_read(img, buf, len, off);
            break;
        case 1:
        case 6:
            if (!len)
                break;
            for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)(pattern + j / 512);
            ret = image_write(img, buf, len, off,
                              (op & 7) == 6 ? IMAGE_FUA : 0);
            break;
        case 2:
            if (len)
                ret = image_zero(img, off, len,
                                 (flags & 2 ? IMAGE_MAY_UNMAP : 0) |
                                     (flags & 4 ? IMAGE_NO_FALLBACK : 0));
            break;
        case 3:
            if (len)
                ret = image_discard(img, off, len);
            break;
        case 4:
            walk_status(img, off, img->size - off);
            break;
        case 5:
            ret = flags & 8 ? snapshot_op(img, flags, pattern)
                            : image_flush(img);
            break;
        case 7:
            ret = image_close(img);
            img = NULL;
            FAIL_IF(ret > 0);
            if (open_image(flags & 2, &img) < 0)
                img = NULL;
            ret = 0;
            break;
        }
        FAIL_IF(ret > 0);
    }
    if (img) {
        int ret = image_close(img);
        FAIL_IF(ret > 0);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned nops = data[size - 1] & 15;
    if (size < 1 + 8 * (size_t)nops)
        nops = 0;
    size_t img_size = size - 1 - 8 * (size_t)nops;
    if (!write_file(img_path, data, img_size, 0644)) {
        perror("fuzz_qcow2: writing the image");
        abort();
    }
    /* Read-write; if refused (e.g. the corrupt bit), read-only. */
    struct image *img = NULL;
    if (open_image(false, &img) == 0 || open_image(true, &img) == 0)
        run_ops(img, data + img_size, nops);
    check_no_fd_leak();
    return 0;
}
