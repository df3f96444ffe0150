/* convert-bench: the ks3200 `qemu-img convert -t none -O raw -n SRC /dev/sdX`
 * replayed as SCSI commands into a LUN in-process, onto a raw and a qcow2
 * image side by side (no VM, no kernel target).
 *
 *   convert-bench [-r RUNS] [-s SIZE] [-p off|falloc] [-c] DIR
 *
 * What Linux's sd driver sends for that convert (drivers/scsi/sd.c), given
 * what the LUN advertises (asked here with INQUIRY, VPD B0 and B2):
 *   1. qemu-img zeroes the whole device with MAY_UNMAP (BLKZEROOUT or a
 *      punch-hole fallocate, both REQ_OP_WRITE_ZEROES): with LBPRZ=1 and
 *      LBPWS, sd picks zeroing_mode writesame_16_unmap, so WRITE SAME(16)
 *      with UNMAP set and one zero block of data, each at most the VPD B0
 *      MAXIMUM WRITE SAME LENGTH (capped at sd's SD_MAX_WS16_BLOCKS);
 *   2. the source's data: WRITEs of at most the maximum transfer length,
 *      here SCATTERED single clusters (64 KiB at random cluster-aligned
 *      offsets, as a sparse guest image's scattered blocks) and RUNS of
 *      consecutive 512 KiB writes (its larger extents);
 *   3. SYNCHRONIZE CACHE when qemu-img closes the device.
 * The images are made as stack-bench.sh makes the convert's scratch LUN
 * (-p falloc, the default: every qcow2 cluster allocated, the raw file
 * fallocated) or empty (-p off).  The LUN runs as qlun's default
 * cfgstring does: page cache, WCE=1, 512-byte blocks, 512 KiB transfers.
 *
 * Prints, per run and image, the wall time of each phase and the CPU time
 * (user + system) of the whole, then min and median per image and the
 * qcow2/raw ratio.  -c runs `qemu-img check` on each qcow2 result. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "block/image.h"
#include "common/util.h"
#include "scsi/scsi.h"

#define BLOCK 512u
#define CLUSTER (64u << 10)
#define XFER_BLOCKS 1024u          /* hw_max_sectors: 512 KiB */
#define SD_MAX_WS16_BLOCKS 0x7fffffu
#define SCATTERED 800u             /* 50 MiB of single clusters */
#define RUNS_OF_XFERS 15u          /* 15 extents ... */
#define XFERS_PER_RUN 7u           /* ... of 3.5 MiB: ~52 MiB */
#define MAX_RUNS 32

enum { PHASE_ZERO, PHASE_DATA, PHASE_SYNC, PHASES };

struct result {
    double wall[PHASES];
    double cpu;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_now(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "convert-bench: %s\n", what);
    exit(1);
}

static int exec_cdb(struct scsi_lun *lun, const uint8_t *cdb, size_t len,
                    void *buf, size_t buflen)
{
    struct iovec v = { buf, buflen };
    struct scsi_cmd c = { .cdb = cdb, .cdb_len = len, .iov = &v,
                          .iovcnt = buf ? 1 : 0 };
    return scsi_lun_exec(lun, &c);
}

/* sd's write-same chunk: VPD B0 MAXIMUM WRITE SAME LENGTH, capped as
 * sd_config_write_same does; refuses a LUN sd would not zero with
 * WRITE SAME(16) + UNMAP (no LBPRZ or no LBPWS in VPD B2). */
static uint32_t sd_write_same_blocks(struct scsi_lun *lun)
{
    uint8_t cdb[6] = { 0x12, 0x01, 0xb2, 0, 255, 0 }, b[256];
    if (exec_cdb(lun, cdb, 6, b, sizeof(b)) != SCSI_STATUS_GOOD)
        die("INQUIRY VPD B2 failed");
    bool lbpws = b[5] & 0x40, lbprz = (b[5] >> 2) & 1;
    if (!lbpws || !lbprz)
        die("the LUN does not offer LBPWS with LBPRZ: sd would not zero "
            "it with WRITE SAME(16) + UNMAP");
    cdb[2] = 0xb0;
    if (exec_cdb(lun, cdb, 6, b, sizeof(b)) != SCSI_STATUS_GOOD)
        die("INQUIRY VPD B0 failed");
    uint64_t max_ws = get_be64(b + 36);
    return (uint32_t)(max_ws && max_ws < SD_MAX_WS16_BLOCKS ? max_ws
                                                            : SD_MAX_WS16_BLOCKS);
}

static void zero_whole_lun(struct scsi_lun *lun, uint64_t blocks)
{
    uint32_t chunk = sd_write_same_blocks(lun);
    uint8_t zero[BLOCK] = { 0 };
    for (uint64_t lba = 0; lba < blocks; lba += chunk) {
        uint8_t cdb[16] = { 0x93, 0x08 }; /* UNMAP */
        put_be64(cdb + 2, lba);
        put_be32(cdb + 10, (uint32_t)MIN((uint64_t)chunk, blocks - lba));
        if (exec_cdb(lun, cdb, 16, zero, BLOCK) != SCSI_STATUS_GOOD)
            die("WRITE SAME(16) failed");
    }
}

static void write16(struct scsi_lun *lun, uint64_t lba, uint32_t n, void *buf)
{
    uint8_t cdb[16] = { 0x8a };
    put_be64(cdb + 2, lba);
    put_be32(cdb + 10, n);
    if (exec_cdb(lun, cdb, 16, buf, (size_t)n * BLOCK) != SCSI_STATUS_GOOD)
        die("WRITE(16) failed");
}

/* The same offsets in every run and on every image (fixed seed). */
static void write_data(struct scsi_lun *lun, uint64_t bytes)
{
    static uint8_t buf[XFER_BLOCKS * BLOCK];
    uint64_t clusters = bytes / CLUSTER;
    uint64_t run_clusters = XFERS_PER_RUN * XFER_BLOCKS * BLOCK / CLUSTER;
    unsigned seed = 3200;
    memset(buf, 0x5a, sizeof(buf));
    for (unsigned i = 0; i < SCATTERED; i++) {
        uint64_t c = (uint64_t)rand_r(&seed) % clusters;
        write16(lun, c * CLUSTER / BLOCK, CLUSTER / BLOCK, buf);
    }
    for (unsigned r = 0; r < RUNS_OF_XFERS; r++) {
        uint64_t c = (uint64_t)rand_r(&seed) % (clusters - run_clusters);
        for (unsigned x = 0; x < XFERS_PER_RUN; x++)
            write16(lun, c * CLUSTER / BLOCK + (uint64_t)x * XFER_BLOCKS,
                    XFER_BLOCKS, buf);
    }
}

static void sync_cache(struct scsi_lun *lun)
{
    uint8_t cdb[10] = { 0x35 };
    if (exec_cdb(lun, cdb, 10, NULL, 0) != SCSI_STATUS_GOOD)
        die("SYNCHRONIZE CACHE failed");
}

static void make_image(const char *path, const char *fmt, uint64_t size,
                       bool falloc)
{
    char cmd[1024];
    unlink(path);
    if (strcmp(fmt, "qcow2") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "qemu-img create -q -f qcow2 -o cluster_size=64k%s '%s' %llu",
                 falloc ? ",preallocation=falloc" : "", path,
                 (unsigned long long)size);
    } else if (falloc) {
        snprintf(cmd, sizeof(cmd), "truncate -s %llu '%s' && fallocate -l %llu '%s'",
                 (unsigned long long)size, path, (unsigned long long)size, path);
    } else {
        snprintf(cmd, sizeof(cmd), "truncate -s %llu '%s'",
                 (unsigned long long)size, path);
    }
    if (system(cmd) != 0)
        die("cannot create the image");
}

static struct result convert_once(const char *path, const char *fmt)
{
    char err[512];
    struct image *img;
    struct scsi_lun *lun;
    struct image_open_opts o = { .path = path, .format = fmt,
                                 .backing_root = "/" };
    if (image_open(&o, &img, err, sizeof(err)) < 0)
        die(err);
    struct scsi_lun_config cfg = {
        .img = img, .block_size = BLOCK, .num_blocks = img->size / BLOCK,
        .max_xfer_blocks = XFER_BLOCKS, .serial = "convert-bench",
        .write_cache = true,
    };
    if (scsi_lun_new(&cfg, &lun) < 0)
        die("cannot create the LUN");

    struct result r;
    double c0 = cpu_now(), t[PHASES + 1];
    t[0] = now();
    zero_whole_lun(lun, cfg.num_blocks);
    t[1] = now();
    write_data(lun, img->size);
    t[2] = now();
    sync_cache(lun);
    t[3] = now();
    r.cpu = cpu_now() - c0;
    for (int p = 0; p < PHASES; p++)
        r.wall[p] = t[p + 1] - t[p];
    scsi_lun_free(lun);
    if (image_close(img) < 0)
        die("closing the image failed");
    return r;
}

static double total(const struct result *r)
{
    return r->wall[PHASE_ZERO] + r->wall[PHASE_DATA] + r->wall[PHASE_SYNC];
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summary(const char *fmt, const struct result *r, int runs,
                    double *median)
{
    double v[MAX_RUNS], c[MAX_RUNS];
    for (int i = 0; i < runs; i++) {
        v[i] = total(&r[i]);
        c[i] = r[i].cpu;
    }
    qsort(v, (size_t)runs, sizeof(double), by_value);
    qsort(c, (size_t)runs, sizeof(double), by_value);
    *median = v[runs / 2];
    printf("%-5s wall min %.3f s median %.3f s; cpu min %.3f s median %.3f s\n",
           fmt, v[0], v[runs / 2], c[0], c[runs / 2]);
}

static void usage(void)
{
    fprintf(stderr, "usage: convert-bench [-r RUNS] [-s SIZE_MIB] "
                    "[-p off|falloc] [-c] DIR\n");
}

int main(int argc, char **argv)
{
    int runs = 5, opt;
    uint64_t size = 4ull << 30;
    bool falloc = true, check = false;
    while ((opt = getopt(argc, argv, "r:s:p:c")) != -1) {
        switch (opt) {
        case 'r': runs = atoi(optarg); break;
        case 's': size = strtoull(optarg, NULL, 10) << 20; break;
        case 'p': falloc = strcmp(optarg, "off") != 0; break;
        case 'c': check = true; break;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1 || runs < 1 || runs > MAX_RUNS ||
        size < 64ull << 20 || size % CLUSTER) {
        usage();
        return 2;
    }
    const char *fmts[2] = { "raw", "qcow2" };
    char path[2][4096];
    struct result res[2][MAX_RUNS];
    for (int f = 0; f < 2; f++)
        snprintf(path[f], sizeof(path[f]), "%s/convert-bench.%s",
                 argv[optind], fmts[f]);
    printf("%llu MiB LUN, preallocation %s, %d runs alternating\n",
           (unsigned long long)(size >> 20), falloc ? "falloc" : "off", runs);
    for (int i = 0; i < runs; i++) {
        /* Alternate which image goes first: neither always gets the
         * quieter moment of a shared machine. */
        for (int k = 0; k < 2; k++) {
            int f = (i + k) % 2;
            make_image(path[f], fmts[f], size, falloc);
            res[f][i] = convert_once(path[f], fmts[f]);
            const struct result *r = &res[f][i];
            printf("run %d %-5s total %.3f s (zero %.3f, data %.3f, sync %.3f)"
                   " cpu %.3f s\n", i, fmts[f], total(r), r->wall[PHASE_ZERO],
                   r->wall[PHASE_DATA], r->wall[PHASE_SYNC], r->cpu);
            fflush(stdout);
            if (check && f == 1) {
                char cmd[4200];
                snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", path[f]);
                printf("qemu-img check: %s\n", system(cmd) == 0 ? "clean"
                                                                : "NOT CLEAN");
            }
        }
    }
    double med[2];
    for (int f = 0; f < 2; f++)
        summary(fmts[f], res[f], runs, &med[f]);
    printf("qcow2/raw median wall ratio %.2f\n", med[1] / med[0]);
    for (int f = 0; f < 2; f++)
        unlink(path[f]);
    return 0;
}
