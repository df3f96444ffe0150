/* qlun-bench: drive an image through qlun's image interface the way
 * `qemu-img bench` drives QEMU's block layer, so the two can be compared
 * on the same image in the same run (bench/engine-bench.py).
 *
 *   qlun-bench [-w] [-f FMT] [-t none|writeback] [-s SIZE] [-c COUNT]
 *              [-d THREADS] [-S STEP] [-o OFFSET] [--flush-interval N] IMAGE
 *
 * Request i goes to OFFSET + i*STEP (wrapping at the image end), like
 * qemu-img bench; THREADS workers take requests in order (qemu-img's
 * queue depth).  Prints seconds and MiB/s. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/image.h"

static struct image *img;
static uint64_t size = 4096, count = 75000, step, offset;
static bool write_mode;
static atomic_uint_fast64_t next;
static atomic_int failed;

static void *worker(void *arg)
{
    void *buf;
    if (posix_memalign(&buf, 4096, size))
        return NULL;
    memset(buf, 0xa5, size);
    for (;;) {
        uint64_t i = atomic_fetch_add(&next, 1);
        if (i >= count)
            break;
        uint64_t off = (offset + i * step) % (img->size - size + 1);
        off -= off % 512;
        int ret = write_mode ? image_write(img, buf, size, off, 0)
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

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': case 'K': return v << 10;
    case 'm': case 'M': return v << 20;
    case 'g': case 'G': return v << 30;
    default: return v;
    }
}

int main(int argc, char **argv)
{
    const char *format = "qcow2", *cache = "writeback";
    int threads = 1, opt;
    static const struct option longopts[] = { { 0, 0, 0, 0 } };
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
        default: return 2;
        }
    }
    if (optind != argc - 1 || threads < 1 || size == 0) {
        fprintf(stderr, "usage: qlun-bench [-w] [-f fmt] [-t none|writeback] "
                "[-s size] [-c count] [-d threads] [-S step] [-o offset] IMAGE\n");
        return 2;
    }
    if (!step)
        step = size;
    char err[512];
    struct image_open_opts o = { .path = argv[optind], .format = format,
                                 .direct_io = strcmp(cache, "none") == 0,
                                 .backing_root = "/" };
    if (image_open(&o, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "qlun-bench: %s\n", err);
        return 1;
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
