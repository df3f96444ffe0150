/* qlun — snapshots of a LUN while threads write to it (issue 11's unit
 * test of the switch): four threads write 4 KiB chunks through
 * scsi_lun_exec, each stamped with its writer and a sequence number, and
 * keep every chunk's history; meanwhile the LUN takes three external
 * snapshots (qlun_dev_snapshot_create) and internal ones.
 *
 * The rule checked: an external snapshot holds, for every chunk, a write
 * no older than the last one acknowledged before the snapshot was asked
 * for, and none issued after it returned (the drain: no write is lost to
 * the old top, none leaks into it).  After the run the LUN reads back
 * exactly the last write of every chunk, and qemu-img check finds every
 * image of the chain clean.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "handler/device.h"
#include "scsi_harness.h"

#define THREADS 4
#define CHUNK 4096u
#define CHUNKS_PER_THREAD 64u
#define MAX_WRITES 20000u
#define SNAPSHOTS 3

struct writer {
    pthread_t tid;
    unsigned id;
    struct qlun_dev *d;
    atomic_uint started;   /* sequence number of the last write begun */
    atomic_uint acked;     /* ... and of the last one acknowledged */
    /* history[c]: sequence numbers written to chunk c, in order (only
     * this thread writes its chunks; read after it stopped). */
    unsigned *history[CHUNKS_PER_THREAD];
    unsigned nhist[CHUNKS_PER_THREAD];
    unsigned failures;
};

static atomic_bool stop;
static struct writer writers[THREADS];

static uint64_t chunk_offset(unsigned t, unsigned c)
{
    return ((uint64_t)t * CHUNKS_PER_THREAD + c) * CHUNK;
}

/* A chunk's content: writer, sequence, chunk in every 16 bytes. */
static void stamp(uint8_t *buf, unsigned t, unsigned seq, unsigned c)
{
    for (unsigned i = 0; i < CHUNK; i += 16) {
        put_be32(buf + i, 0x71756e21);
        put_be32(buf + i + 4, t);
        put_be32(buf + i + 8, seq);
        put_be32(buf + i + 12, c);
    }
}

/* The sequence number a chunk holds (0: never written), -1 if torn or
 * foreign. */
static long stamped_seq(const uint8_t *buf, unsigned t, unsigned c)
{
    static const uint8_t zero[16];
    if (memcmp(buf, zero, 16) == 0) {
        for (unsigned i = 16; i < CHUNK; i++)
            if (buf[i])
                return -1;
        return 0;
    }
    unsigned seq = get_be32(buf + 8);
    uint8_t want[CHUNK];
    stamp(want, t, seq, c);
    return memcmp(buf, want, CHUNK) == 0 ? (long)seq : -1;
}

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    unsigned seed = w->id * 7919u + 1;
    uint8_t buf[CHUNK];
    for (unsigned seq = 1; seq <= MAX_WRITES && !atomic_load(&stop); seq++) {
        unsigned c = (unsigned)rand_r(&seed) % CHUNKS_PER_THREAD;
        stamp(buf, w->id, seq, c);
        uint8_t cdb[10] = { 0x2a };
        put_be32(cdb + 2, (uint32_t)(chunk_offset(w->id, c) / 512));
        put_be16(cdb + 7, CHUNK / 512);
        atomic_store(&w->started, seq);
        if (run(w->d->lun, cdb, sizeof(cdb), buf, sizeof(buf)) !=
            SCSI_STATUS_GOOD) {
            w->failures++;
            continue;
        }
        w->history[c][w->nhist[c]++] = seq;
        atomic_store(&w->acked, seq);
    }
    return NULL;
}

/* Every chunk of image img holds a write of its history with sequence
 * number in [newest <= lo, hi] (lo, hi per writer); returns the chunks
 * that do not. */
static unsigned check_point_in_time(const char *path, const unsigned *lo,
                                    const unsigned *hi)
{
    char err[512];
    struct image *img;
    struct image_open_opts o = { .path = path, .format = "qcow2",
                                 .read_only = true, .backing_root = "/" };
    if (image_open(&o, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "open %s: %s\n", path, err);
        return 1;
    }
    unsigned bad = 0;
    uint8_t buf[CHUNK];
    for (unsigned t = 0; t < THREADS; t++)
        for (unsigned c = 0; c < CHUNKS_PER_THREAD; c++) {
            struct writer *w = &writers[t];
            unsigned floor = 0;
            for (unsigned i = 0; i < w->nhist[c]; i++)
                if (w->history[c][i] <= lo[t])
                    floor = w->history[c][i];
            long got = image_read(img, buf, CHUNK, chunk_offset(t, c)) == 0
                           ? stamped_seq(buf, t, c) : -1;
            bool ok = got >= (long)floor && got <= (long)hi[t];
            if (ok && got > 0) {   /* one of this chunk's writes */
                ok = false;
                for (unsigned i = 0; i < w->nhist[c]; i++)
                    ok |= w->history[c][i] == (unsigned)got;
            }
            if (!ok && bad++ < 5)
                fprintf(stderr, "%s: writer %u chunk %u holds %ld, expected "
                        "a write in [%u, %u]\n", path, t, c, got, floor,
                        hi[t]);
        }
    image_close(img);
    return bad;
}

int main(void)
{
    if (system("command -v qemu-img >/dev/null") != 0) {
        printf("SKIP: qemu-img not installed\n");
        return 77;
    }
    char dir[] = "/tmp/qlun-live-snapshot-XXXXXX", cfg[512], path[256];
    char tops[SNAPSHOTS + 1][256], err[1024], cmd[2048];
    if (!mkdtemp(dir))
        return 1;
    snprintf(tops[0], sizeof(tops[0]), "%s/top0.qcow2", dir);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M", tops[0]);
    CHECK_EQ(system(cmd), 0);
    snprintf(cfg, sizeof(cfg), "qlun/%s;stats=off;serial=live", tops[0]);
    struct qlun_dev_params p = { cfg, 512, 2048, 1024, "live" };
    struct qlun_dev *d = NULL;
    if (qlun_dev_open(&p, &d, err, sizeof(err)) < 0) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    for (unsigned t = 0; t < THREADS; t++) {
        writers[t].id = t;
        writers[t].d = d;
        for (unsigned c = 0; c < CHUNKS_PER_THREAD; c++)
            writers[t].history[c] = calloc(MAX_WRITES, sizeof(unsigned));
        pthread_create(&writers[t].tid, NULL, write_loop, &writers[t]);
    }
    unsigned lo[SNAPSHOTS][THREADS], hi[SNAPSHOTS][THREADS];
    for (int k = 0; k < SNAPSHOTS; k++) {
        usleep(50000);
        for (unsigned t = 0; t < THREADS; t++)
            lo[k][t] = atomic_load(&writers[t].acked);
        snprintf(tops[k + 1], sizeof(tops[k + 1]), "%s/s%d.qcow2", dir, k + 1);
        CHECK_EQ(qlun_dev_snapshot_create(d, tops[k + 1], 0, err,
                                          sizeof(err)), 0);
        for (unsigned t = 0; t < THREADS; t++)
            hi[k][t] = atomic_load(&writers[t].started);
        /* internal snapshots of the new top, under the same load */
        CHECK_EQ(qlun_dev_snapshot_internal(d, true, "i", err, sizeof(err)),
                 0);
        usleep(20000);
        CHECK_EQ(qlun_dev_snapshot_internal(d, false, "i", err, sizeof(err)),
                 0);
    }
    usleep(50000);
    atomic_store(&stop, true);
    unsigned total = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(writers[t].tid, NULL);
        CHECK_EQ(writers[t].failures, 0);
        total += atomic_load(&writers[t].acked);
    }
    /* Each old top is the point in time of its snapshot. */
    for (int k = 0; k < SNAPSHOTS; k++)
        CHECK_EQ(check_point_in_time(tops[k], lo[k], hi[k]), 0);
    /* The LUN holds the last write of every chunk. */
    unsigned final[THREADS];
    for (unsigned t = 0; t < THREADS; t++)
        final[t] = atomic_load(&writers[t].acked);
    CHECK_EQ(qlun_dev_close(d), 0);
    CHECK_EQ(check_point_in_time(tops[SNAPSHOTS], final, final), 0);
    for (int k = 0; k <= SNAPSHOTS; k++) {
        snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", tops[k]);
        CHECK_EQ(system(cmd), 0);
    }
    snprintf(path, sizeof(path), "%s/s%d.qcow2", dir, SNAPSHOTS);
    snprintf(cmd, sizeof(cmd), "qemu-img info --backing-chain %s | "
             "grep -c '^image:' | grep -qx %d", path, SNAPSHOTS + 1);
    CHECK_EQ(system(cmd), 0);
    printf("%u writes by %d threads across %d snapshots\n", total, THREADS,
           SNAPSHOTS);
    if (check_failed == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CHECK_EQ(system(cmd), 0);
    }
    for (unsigned t = 0; t < THREADS; t++)
        for (unsigned c = 0; c < CHUNKS_PER_THREAD; c++)
            free(writers[t].history[c]);
    return check_summary("test_live_snapshot");
}
