/* cmdpath-bench: what one 4k command costs in each layer of qlun, on the
 * host, without a kernel target: the same random 4k I/O done
 *   - bare:  preadv/pwritev on the image file (the floor),
 *   - image: image_readv/image_writev on the node the LUN serves,
 *   - scsi:  READ(10)/WRITE(10)/WRITE(16) CDBs through scsi_lun_exec,
 * each from THREADS threads, in one process, alternating layers within
 * every repetition so that they see the same machine load.
 *
 *   cmdpath-bench [-n COUNT] [-t THREADS] [-r REPEAT] [-s SIZE] [-d DIR]
 *                 [-c writeback|none] [-f raw,qcow2] [-o read,write10,write16]
 *                 [-l bare,image,scsi]
 *
 * The LUN is opened as tcmu-runner's open does (qlun_dev_open on a
 * cfgstring: statistics file, filter slots, serial), so the scsi column
 * is the handler's whole per-command path but for qlun_handle_cmd's own
 * few lines, which need tcmu-runner's structures: it fills a struct
 * scsi_cmd from the tcmulib_cmd and maps the status, as run_cdb does here.
 * The qcow2 image is filled before the measurement, so its writes are
 * in-place overwrites: allocation is qlun-bench's business, this is the
 * per-command path.
 *
 * Prints, per format and operation, the CPU time of the whole process
 * (getrusage: user + system, every thread) per command in each layer,
 * min and median over the repetitions, and the wall time per command.
 * Not a test: nothing here judges a number. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "block/driver.h"
#include "block/image.h"
#include "common/util.h"
#include "handler/device.h"
#include "scsi/scsi.h"

enum layer { LAYER_BARE, LAYER_IMAGE, LAYER_SCSI, LAYERS };
enum op { OP_READ, OP_WRITE10, OP_WRITE16, OPS };
static const char *const layer_names[LAYERS] = { "bare", "image", "scsi" };
static const char *const op_names[OPS] = { "read", "write10", "write16" };

#define BLOCK_SIZE 512u   /* LIO's default hw_block_size */
#define IO_SIZE 4096u

static struct {
    uint64_t count, size;
    unsigned threads, repeat;
    const char *dir;
    bool direct;
    bool formats[2];      /* raw, qcow2 */
    bool ops[OPS];
    bool layers[LAYERS];
} opt = {
    .count = 100000, .size = 64 << 20, .threads = 1, .repeat = 5,
    .dir = "/dev/shm", .formats = { true, true },
    .ops = { true, true, true }, .layers = { true, true, true },
};

/* What one run of one cell works on. */
struct target {
    int fd;                  /* bare */
    struct image *img;       /* image: the node the LUN serves */
    struct scsi_lun *lun;    /* scsi */
    const uint64_t *offsets; /* count random 4k-aligned offsets */
};

struct worker_arg {
    const struct target *t;
    enum layer layer;
    enum op op;
    uint64_t first, end;     /* the slice of offsets this thread issues */
    int failed;
};

/* A command as qlun_handle_cmd builds it from tcmu-runner's. */
static int run_cdb(struct scsi_lun *lun, enum op op, uint64_t off,
                   const struct iovec *iov)
{
    uint8_t cdb[16] = { 0 };
    uint64_t lba = off / BLOCK_SIZE;
    uint32_t blocks = IO_SIZE / BLOCK_SIZE;
    size_t len;
    if (op == OP_WRITE16) {
        cdb[0] = 0x8a;
        put_be64(cdb + 2, lba);
        put_be32(cdb + 10, blocks);
        len = 16;
    } else {
        cdb[0] = op == OP_READ ? 0x28 : 0x2a;
        put_be32(cdb + 2, (uint32_t)lba);
        put_be16(cdb + 7, (uint16_t)blocks);
        len = 10;
    }
    struct scsi_cmd cmd = { .cdb = cdb, .cdb_len = len, .iov = iov,
                            .iovcnt = 1 };
    return scsi_lun_exec(lun, &cmd) == SCSI_STATUS_GOOD ? 0 : -EIO;
}

static int one_io(const struct target *t, enum layer layer, enum op op,
                  uint64_t off, const struct iovec *iov)
{
    bool write = op != OP_READ;
    switch (layer) {
    case LAYER_BARE: {
        ssize_t n = write ? pwritev(t->fd, iov, 1, (off_t)off)
                          : preadv(t->fd, iov, 1, (off_t)off);
        return n == (ssize_t)IO_SIZE ? 0 : -EIO;
    }
    case LAYER_IMAGE:
        return write ? image_writev(t->img, iov, 1, off, 0)
                     : image_readv(t->img, iov, 1, off);
    default:
        return run_cdb(t->lun, op, off, iov);
    }
}

static void *worker(void *p)
{
    struct worker_arg *a = p;
    void *buf;
    /* Aligned for cache=none (O_DIRECT). */
    if (posix_memalign(&buf, 4096, IO_SIZE)) {
        a->failed = 1;
        return NULL;
    }
    memset(buf, 0x5a, IO_SIZE);
    struct iovec iov = { buf, IO_SIZE };
    for (uint64_t i = a->first; i < a->end; i++) {
        if (one_io(a->t, a->layer, a->op, a->t->offsets[i], &iov) < 0) {
            fprintf(stderr, "%s %s at %" PRIu64 " failed\n",
                    layer_names[a->layer], op_names[a->op], a->t->offsets[i]);
            a->failed = 1;
            break;
        }
    }
    free(buf);
    return NULL;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One cell: count commands of op through layer from opt.threads threads.
 * Returns CPU ns and wall ns per command, or -1 on a failed request. */
static int run_cell(const struct target *t, enum layer layer, enum op op,
                    double *cpu, double *wall)
{
    struct worker_arg args[opt.threads];
    pthread_t tids[opt.threads];
    uint64_t c0 = cpu_ns(), w0 = wall_ns();
    for (unsigned i = 0; i < opt.threads; i++) {
        args[i] = (struct worker_arg){
            .t = t, .layer = layer, .op = op,
            .first = opt.count * i / opt.threads,
            .end = opt.count * (i + 1) / opt.threads,
        };
        if (pthread_create(&tids[i], NULL, worker, &args[i]))
            return -1;
    }
    int failed = 0;
    for (unsigned i = 0; i < opt.threads; i++) {
        pthread_join(tids[i], NULL);
        failed |= args[i].failed;
    }
    *cpu = (double)(cpu_ns() - c0) / (double)opt.count;
    *wall = (double)(wall_ns() - w0) / (double)opt.count;
    return failed ? -1 : 0;
}

/* Fill the image through the image layer, so that every later write is
 * an in-place overwrite (for qcow2: no allocation). */
static int prefill(struct image *img)
{
    enum { CHUNK = 1 << 20 };
    void *buf;
    if (posix_memalign(&buf, 4096, CHUNK))
        return -ENOMEM;
    memset(buf, 0xa5, CHUNK);
    int ret = 0;
    for (uint64_t off = 0; off < img->size && ret == 0; off += CHUNK)
        ret = image_write(img, buf, (size_t)MIN((uint64_t)CHUNK,
                                                img->size - off), off, 0);
    free(buf);
    return ret < 0 ? ret : image_flush(img);
}

static int make_image(const char *path, const char *format, char *err,
                      size_t errlen)
{
    unlink(path);
    if (strcmp(format, "qcow2") == 0) {
        struct image_create_opts co = { .path = path, .size = opt.size };
        return block_driver_find("qcow2")->create(&co, err, errlen);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)opt.size) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    close(fd);
    return 0;
}

struct cell { double cpu[64], wall[64]; };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print_table(const char *format, struct cell cells[OPS][LAYERS])
{
    printf("\n%s, cache=%s, %u thread(s), %" PRIu64 " x 4k per cell, %u "
           "runs: CPU ns/command min/median (wall ns median)\n", format,
           opt.direct ? "none" : "writeback", opt.threads, opt.count,
           opt.repeat);
    printf("%-8s", "op");
    for (int l = 0; l < LAYERS; l++)
        if (opt.layers[l])
            printf(" | %-22s", layer_names[l]);
    printf(" | scsi-image (median)\n");
    for (int o = 0; o < OPS; o++) {
        if (!opt.ops[o])
            continue;
        printf("%-8s", op_names[o]);
        double med[LAYERS] = { 0 };
        for (int l = 0; l < LAYERS; l++) {
            if (!opt.layers[l])
                continue;
            struct cell *c = &cells[o][l];
            med[l] = median(c->cpu, opt.repeat);
            char s[64];
            snprintf(s, sizeof(s), "%.0f/%.0f (%.0f)", c->cpu[0], med[l],
                     median(c->wall, opt.repeat));
            printf(" | %-22s", s);
        }
        if (opt.layers[LAYER_IMAGE] && opt.layers[LAYER_SCSI])
            printf(" | %+.0f", med[LAYER_SCSI] - med[LAYER_IMAGE]);
        printf("\n");
    }
}

/* Open format's image as a LUN and run every repetition of every cell. */
static int bench_format(const char *format, const uint64_t *offsets)
{
    char path[512], stats[600], cfg[1400], err[1024];
    snprintf(path, sizeof(path), "%s/cmdpath-bench.%s", opt.dir, format);
    snprintf(stats, sizeof(stats), "%s.stats.json", path);
    if (make_image(path, format, err, sizeof(err)) < 0) {
        fprintf(stderr, "cannot create %s: %s\n", path, err);
        return -1;
    }
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=%s;cache=%s;stats=%s", path,
             format, opt.direct ? "none" : "writeback", stats);
    struct qlun_dev_params p = {
        .cfgstring = cfg, .block_size = BLOCK_SIZE,
        .num_blocks = opt.size / BLOCK_SIZE, .max_xfer_blocks = 1024,
        .name = "cmdpath-bench",
    };
    struct qlun_dev *d;
    if (qlun_dev_open(&p, &d, err, sizeof(err)) < 0) {
        fprintf(stderr, "cannot open the LUN: %s\n", err);
        return -1;
    }
    struct target t = { .img = qlun_dev_served(d), .lun = d->lun,
                        .offsets = offsets };
    t.fd = open(path, O_RDWR | (opt.direct ? O_DIRECT : 0));
    int ret = t.fd < 0 ? -1 : prefill(t.img);
    static struct cell cells[OPS][LAYERS];
    memset(cells, 0, sizeof(cells));
    for (unsigned r = 0; r < opt.repeat && ret == 0; r++)
        for (int o = 0; o < OPS && ret == 0; o++)
            for (int l = 0; l < LAYERS && ret == 0; l++)
                if (opt.ops[o] && opt.layers[l])
                    ret = run_cell(&t, (enum layer)l, (enum op)o,
                                   &cells[o][l].cpu[r], &cells[o][l].wall[r]);
    if (ret == 0)
        print_table(format, cells);
    else
        fprintf(stderr, "%s: a run failed\n", format);
    if (t.fd >= 0)
        close(t.fd);
    qlun_dev_close(d);
    unlink(path);
    unlink(stats);
    return ret;
}

/* Set the flags of the comma-separated names in s (names[i] -> out[i]). */
static int parse_list(const char *s, const char *const *names, int n,
                      bool *out)
{
    memset(out, 0, sizeof(bool) * (size_t)n);
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", s);
    for (char *save, *w = strtok_r(copy, ",", &save); w;
         w = strtok_r(NULL, ",", &save)) {
        int i = 0;
        while (i < n && strcmp(w, names[i]) != 0)
            i++;
        if (i == n) {
            fprintf(stderr, "unknown name '%s'\n", w);
            return -1;
        }
        out[i] = true;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: cmdpath-bench [-n COUNT] [-t THREADS] "
            "[-r REPEAT(1..64)] [-s SIZE_MIB] [-d DIR] [-c writeback|none] "
            "[-f raw,qcow2] [-o read,write10,write16] [-l bare,image,scsi]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const char *const formats[] = { "raw", "qcow2" };
    int c;
    while ((c = getopt(argc, argv, "n:t:r:s:d:c:f:o:l:")) != -1) {
        switch (c) {
        case 'n': opt.count = strtoull(optarg, NULL, 10); break;
        case 't': opt.threads = (unsigned)atoi(optarg); break;
        case 'r': opt.repeat = (unsigned)atoi(optarg); break;
        case 's': opt.size = strtoull(optarg, NULL, 10) << 20; break;
        case 'd': opt.dir = optarg; break;
        case 'c':
            if (strcmp(optarg, "none") && strcmp(optarg, "writeback"))
                usage();
            opt.direct = strcmp(optarg, "none") == 0;
            break;
        case 'f': if (parse_list(optarg, formats, 2, opt.formats)) usage(); break;
        case 'o': if (parse_list(optarg, op_names, OPS, opt.ops)) usage(); break;
        case 'l':
            if (parse_list(optarg, layer_names, LAYERS, opt.layers))
                usage();
            break;
        default: usage();
        }
    }
    if (!opt.count || !opt.threads || opt.threads > 256 || !opt.repeat ||
        opt.repeat > 64 || opt.size < IO_SIZE || optind != argc)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    uint64_t *offsets = malloc(sizeof(*offsets) * opt.count);
    if (!offsets)
        return 1;
    /* The same random 4k-aligned offsets for every layer (xorshift64). */
    uint64_t x = 0x9e3779b97f4a7c15ull, slots = opt.size / IO_SIZE;
    for (uint64_t i = 0; i < opt.count; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        offsets[i] = (x % slots) * IO_SIZE;
    }
    int ret = 0;
    if (opt.formats[0])
        ret |= bench_format("raw", offsets);
    if (opt.formats[1])
        ret |= bench_format("qcow2", offsets);
    free(offsets);
    return ret ? 1 : 0;
}
