/* qlun-bench: drive an image through qlun's image interface the way
 * `qemu-img bench` drives QEMU's block layer, so the two can be compared
 * on the same image in the same run (bench/engine-bench.py).
 *
 *   qlun-bench [-w] [-f FMT] [-t none|writeback] [-s SIZE] [-c COUNT]
 *              [-d THREADS] [-S STEP] [-o OFFSET] [--wrap=image|usable]
 *              [--l2-cache-size=SIZE] [--print-offsets] IMAGE
 *
 * Request offsets are qemu-img bench's, exactly: the first request goes to
 * OFFSET as given, and each next one to (previous + STEP) modulo M, where
 * M is the image size (--wrap=image: QEMU up to 10.0, where a request that
 * then crosses the end fails) or the image size minus SIZE (--wrap=usable,
 * the default: QEMU from 10.1, commit ff2ab634; 0 if the image is not
 * larger than one request).  THREADS workers take requests in that order
 * (qemu-img's queue depth).  --print-offsets lists the offsets and exits.
 * Prints seconds and MiB/s. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_size.h"
#include "block/image.h"

static struct image *img;
static uint64_t size = 4096, count = 75000, step, offset;
static bool write_mode, wrap_whole_image;
static atomic_uint_fast64_t next;
static atomic_int failed;

/* Offset of request i: qemu-img bench's sequence (see the top comment).
 * Iterated modular addition is the closed form below for i >= 1. */
static uint64_t offset_of(uint64_t i, uint64_t image_size)
{
    if (i == 0)
        return offset;
    uint64_t m = wrap_whole_image ? image_size
                 : image_size > size ? image_size - size : 0;
    if (m == 0)
        return 0;
    /* (offset + i * step) % m without overflow. */
    unsigned __int128 v = (unsigned __int128)offset + (unsigned __int128)i * step;
    return (uint64_t)(v % m);
}

static void *worker(void *arg)
{
    void *buf;
    (void)arg;
    if (posix_memalign(&buf, 4096, size))
        return NULL;
    memset(buf, 0xa5, size);
    for (;;) {
        uint64_t i = atomic_fetch_add(&next, 1);
        if (i >= count)
            break;
        uint64_t off = offset_of(i, img->size);
        /* QEMU fails such a request with EIO; qlun's interface asserts
         * ranges, so refuse it here the same way. */
        int ret = off + size > img->size ? -EIO
                  : write_mode ? image_write(img, buf, size, off, 0)
                               : image_read(img, buf, size, off);
        if (ret < 0) {
            fprintf(stderr, "request %llu at %llu: %s\n", (unsigned long long)i,
                    (unsigned long long)off, strerror(-ret));
            atomic_store(&failed, 1);
            break;
        }
    }
    free(buf);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: qlun-bench [-w] [-f fmt] [-t none|writeback] "
            "[-s size] [-c count] [-d threads] [-S step] [-o offset] "
            "[--wrap=image|usable] [--l2-cache-size=SIZE] [--print-offsets] "
            "IMAGE\n");
}

int main(int argc, char **argv)
{
    const char *format = "qcow2", *cache = "writeback";
    int threads = 1, opt;
    bool print_offsets = false;
    uint64_t l2_cache = 0;
    enum { OPT_WRAP = 256, OPT_L2, OPT_PRINT };
    static const struct option longopts[] = {
        { "wrap", required_argument, 0, OPT_WRAP },
        { "l2-cache-size", required_argument, 0, OPT_L2 },
        { "print-offsets", no_argument, 0, OPT_PRINT },
        { 0, 0, 0, 0 },
    };
    while ((opt = getopt_long(argc, argv, "wf:t:s:c:d:S:o:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'w': write_mode = true; break;
        case 'f': format = optarg; break;
        case 't': cache = optarg; break;
        case 's': size = parse_size(optarg); break;
        case 'c': count = strtoull(optarg, NULL, 10); break;
        case 'd': threads = atoi(optarg); break;
        case 'S': step = parse_size(optarg); break;
        case 'o': offset = parse_size(optarg); break;
        case OPT_WRAP:
            if (strcmp(optarg, "image") && strcmp(optarg, "usable")) {
                usage();
                return 2;
            }
            wrap_whole_image = strcmp(optarg, "image") == 0;
            break;
        case OPT_L2: l2_cache = parse_size(optarg); break;
        case OPT_PRINT: print_offsets = true; break;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1 || threads < 1 || size == 0) {
        usage();
        return 2;
    }
    if (!step)
        step = size;
    char err[512];
    struct image_open_opts o = { .path = argv[optind], .format = format,
                                 .direct_io = strcmp(cache, "none") == 0,
                                 .backing_root = "/",
                                 .l2_cache_bytes = l2_cache };
    if (image_open(&o, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "qlun-bench: %s\n", err);
        return 1;
    }
    if (print_offsets) {
        for (uint64_t i = 0; i < count; i++)
            printf("%llu\n", (unsigned long long)offset_of(i, img->size));
        return image_close(img) < 0;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    int ret = image_flush(img);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ret = image_close(img) < 0 || ret < 0 || failed;
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%.3f s, %.1f MiB/s\n", s, (double)(count * size) / s / 1048576.0);
    free(t);
    return ret;
}
