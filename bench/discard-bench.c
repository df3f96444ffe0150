/* discard-bench: time making a whole image read as zeros through the
 * image interface, in the request sizes a SCSI initiator sends, and count
 * the host calls it takes.
 *
 *   discard-bench [-f FMT] [-t none|writeback] [-m discard|zero-unmap|zero]
 *                 [-s CHUNK] IMAGE
 *
 * -m discard (default) issues image_discard() (what UNMAP becomes where
 * discarded blocks read as zeros, scsi/thin.c); zero-unmap image_zero()
 * with IMAGE_MAY_UNMAP (WRITE SAME with UNMAP); zero image_zero() without
 * it.  CHUNK (default 512M) is one request: UNMAP's limit is
 * SCSI_MAX_UNMAP_BLOCKS (1 Mi blocks, 512 MiB at 512-byte blocks), WRITE
 * SAME's SCSI_MAX_WRITE_SAME_BLOCKS (2 GiB).  The image is flushed at the
 * end (inside the timing) and closed.
 *
 * The image is prepared by the caller (e.g. qemu-io -c 'write -P 1 0 4G')
 * and is changed: fill it again before the next run.  Prints seconds and
 * the number of fallocate (punch/zero) and fdatasync calls on the image,
 * counted through block/host.h's host_sys table. */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/host.h"
#include "bench_size.h"
#include "block/image.h"

static atomic_ulong n_fallocate, n_fdatasync, n_pwritev, n_ioctl;
static struct host_syscalls real;

static int count_fallocate(int fd, int mode, off_t off, off_t len)
{
    atomic_fetch_add(&n_fallocate, 1);
    return real.fallocate(fd, mode, off, len);
}

static int count_fdatasync(int fd)
{
    atomic_fetch_add(&n_fdatasync, 1);
    return real.fdatasync(fd);
}

static ssize_t count_pwritev(int fd, const struct iovec *iov, int cnt,
                             off_t off)
{
    atomic_fetch_add(&n_pwritev, 1);
    return real.pwritev(fd, iov, cnt, off);
}

static int count_ioctl(int fd, unsigned long req, uint64_t range[2])
{
    atomic_fetch_add(&n_ioctl, 1);
    return real.blk_range_ioctl(fd, req, range);
}

static int issue(struct image *img, const char *mode, uint64_t off,
                 uint64_t len)
{
    if (strcmp(mode, "discard") == 0)
        return image_discard(img, off, len);
    if (strcmp(mode, "zero-unmap") == 0)
        return image_zero(img, off, len, IMAGE_MAY_UNMAP);
    return image_zero(img, off, len, 0);
}

static void usage(void)
{
    fprintf(stderr, "usage: discard-bench [-f fmt] [-t none|writeback] "
            "[-m discard|zero-unmap|zero] [-s chunk] IMAGE\n");
}

int main(int argc, char **argv)
{
    const char *format = "qcow2", *cache = "writeback", *mode = "discard";
    uint64_t chunk = 512ull << 20;
    int opt;
    while ((opt = getopt(argc, argv, "f:t:m:s:")) != -1) {
        switch (opt) {
        case 'f': format = optarg; break;
        case 't': cache = optarg; break;
        case 'm': mode = optarg; break;
        case 's': chunk = parse_size(optarg); break;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1 || chunk == 0 ||
        (strcmp(mode, "discard") && strcmp(mode, "zero-unmap") &&
         strcmp(mode, "zero"))) {
        usage();
        return 2;
    }
    char err[512];
    struct image *img;
    struct image_open_opts o = { .path = argv[optind], .format = format,
                                 .direct_io = strcmp(cache, "none") == 0,
                                 .backing_root = "/" };
    if (image_open(&o, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "discard-bench: %s\n", err);
        return 1;
    }
    real = host_sys;
    host_sys.fallocate = count_fallocate;
    host_sys.fdatasync = count_fdatasync;
    host_sys.pwritev = count_pwritev;
    host_sys.blk_range_ioctl = count_ioctl;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ret = 0;
    for (uint64_t off = 0; off < img->size && ret == 0; off += chunk) {
        uint64_t len = img->size - off < chunk ? img->size - off : chunk;
        ret = issue(img, mode, off, len);
        if (ret < 0)
            fprintf(stderr, "discard-bench: %s at %llu: %s\n", mode,
                    (unsigned long long)off, strerror(-ret));
    }
    if (ret == 0)
        ret = image_flush(img);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ret = image_close(img) < 0 || ret < 0;
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s %s chunk %llu: %.3f s, fallocate %lu, fdatasync %lu, "
           "pwritev %lu, ioctl %lu\n", format, mode,
           (unsigned long long)chunk, s, (unsigned long)n_fallocate,
           (unsigned long)n_fdatasync, (unsigned long)n_pwritev,
           (unsigned long)n_ioctl);
    return ret;
}
