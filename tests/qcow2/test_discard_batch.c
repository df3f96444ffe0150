/* qlun — large discards and unmapping zeroes (UNMAP, WRITE SAME with
 * UNMAP) over allocated qcow2 ranges: batched, and still crash-safe.
 *
 * 1. Punch runs.  Freed host clusters go back to the host in one
 *    fallocate per contiguous run, after the meta sync that made the
 *    dropping L2 entries durable (refcount.c apply_pending).  A 1024-
 *    cluster image written in shuffled guest order (so host order is a
 *    permutation of guest order), then discarded whole, must take at most
 *    a handful of punches (the runs between the L2 tables), and the file
 *    must give its space back.
 * 2. Crash replay.  An image of 8192 distinct 512-byte clusters, written
 *    in shuffled order; then, recorded (crash_rec.h): a 2 MiB discard and
 *    a 1 MiB unmapping zero (more clusters than MAX_PENDING, so a meta
 *    sync runs in the middle and frees clusters), new data into clusters
 *    that reuse the freed host clusters, a flush.  At every fdatasync
 *    point the crash images (durable + none, all, random subsets of the
 *    pending host ops) must pass qemu-img check (0, or 3: leaks) and read
 *    back, cluster by cluster, as the old data, zeros or (rewritten
 *    clusters) the new data: never another cluster's data.
 * 3. Model.  Random writes and random large discards / zeroes (unaligned
 *    edges, with and without MAY_UNMAP), against a byte model, on three
 *    layouts (4 KiB clusters; 64 KiB with extended L2; 4 KiB over a raw
 *    backing file, which a discard must never expose).  Read back through
 *    the engine and with qemu-img convert; qemu-img check clean; qemu-img
 *    map shows no data in a cluster discarded whole and not written since.
 *
 * "Can it fail?"  Applying the pending frees before the L2 write-back in
 * qcow2_meta_sync (refcount.c) makes part 2 fail (qemu-img check finds
 * referenced clusters with refcount 0, and crash images read another
 * cluster's data: 28 of 41 crash images bad); punching a freed run
 * only at the next meta sync, after the lock was released, makes parts 2
 * and 3 fail (a reused cluster's new data is punched: crash images and
 * the model read zeros); not sorting the pending frees makes part 1 fail
 * (1024 punches).
 */
#include <sys/stat.h>

#include "qcow2/qcow2-internal.h"
#include "crash_rec.h"

static char dir[4096];

/* ------------------------------------------------------------------ */
/* Shared: patterned clusters.                                        */

/* Word w of guest cluster gc's content in generation gen (never 0). */
static uint64_t tag_of(uint64_t gc, unsigned gen)
{
    return 0x5100000000000000ull | (uint64_t)gen << 40 | gc;
}

static void fill_cluster(uint8_t *buf, size_t cs, uint64_t gc, unsigned gen)
{
    for (size_t i = 0; i < cs; i += 8)
        put_be64(buf + i, tag_of(gc, gen));
}

static bool cluster_is(const uint8_t *b, size_t cs, uint64_t gc,
                       unsigned gen)
{
    for (size_t i = 0; i < cs; i += 8)
        if (get_be64(b + i) != (gen ? tag_of(gc, gen) : 0))
            return false;
    return true;
}

/* Write every guest cluster of img with generation gen, in an order
 * shuffled by rng (host clusters are allocated in that order). */
static bool write_shuffled(struct image *img, size_t cs, unsigned gen,
                           struct qt_rng *rng)
{
    uint64_t n = img->size / cs;
    uint64_t *order = malloc(n * sizeof(*order));
    uint8_t *buf = malloc(cs);
    bool ok = order && buf;
    for (uint64_t i = 0; ok && i < n; i++)
        order[i] = i;
    for (uint64_t i = n; ok && i > 1; i--) {
        uint64_t j = qt_below(rng, i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (uint64_t i = 0; ok && i < n; i++) {
        fill_cluster(buf, cs, order[i], gen);
        ok = image_write(img, buf, cs, order[i] * cs, 0) == 0;
    }
    free(order);
    free(buf);
    return ok && image_flush(img) == 0;
}

/* ------------------------------------------------------------------ */
/* 1. Punch runs.                                                     */

static int (*real_fallocate)(int, int, off_t, off_t);
static int n_punch;

static int count_punch(int fd, int mode, off_t off, off_t len)
{
    if (mode & FALLOC_FL_PUNCH_HOLE)
        n_punch++;
    return real_fallocate(fd, mode, off, len);
}

static uint64_t allocated_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static void test_punch_runs(void)
{
    const size_t cs = 4096;
    char path[4200];
    struct qt_rng rng;
    struct image *img;
    qt_rng_seed(&rng, qt_seed());
    snprintf(path, sizeof(path), "%s/runs.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 4M",
                 path) || qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("punch runs: setup");
        return;
    }
    QT_CHECK(write_shuffled(img, cs, 1, &rng));
    uint64_t before = allocated_bytes(path);
    real_fallocate = host_sys.fallocate;
    host_sys.fallocate = count_punch;
    n_punch = 0;
    QT_CHECK(image_discard(img, 0, img->size) == 0);
    QT_CHECK(image_flush(img) == 0);
    host_sys.fallocate = real_fallocate;
    QT_CHECK(image_close(img) == 0);
    uint64_t after = allocated_bytes(path);
    /* 1024 data clusters among 2 L2 tables and a refcount block: a few
     * runs.  Punched one by one (or in guest order) it would be ~1000. */
    printf("punch runs: 1024 clusters discarded in %d punches; file %"
           PRIu64 " -> %" PRIu64 " KiB allocated\n", n_punch, before >> 10,
           after >> 10);
    if (n_punch < 1 || n_punch > 4)
        QT_FAIL("1024 shuffled clusters given back in %d punches, want "
                "1..4", n_punch);
    if (after + (3u << 20) > before)
        QT_FAIL("the file kept its space: %" PRIu64 " -> %" PRIu64 " bytes",
                before, after);
    QT_CHECK(qt_check(path) == 0);
}

/* ------------------------------------------------------------------ */
/* 2. Crash replay.                                                   */

#define CR_CS 512u
#define CR_SIZE (4u << 20)
#define CR_DISCARD_END (2u << 20)  /* image_discard [0, 2M) */
#define CR_ZERO_END (3u << 20)     /* image_zero MAY_UNMAP [2M, 3M) */
#define CR_REWRITE_END (512u << 10) /* generation 2 into [0, 512K) */

static struct {
    unsigned images, bad;
} cr;

/* Guest cluster gc in a crash image: old (1), zero, or new (2) where it
 * was rewritten; untouched clusters exactly old. */
static bool crash_cluster_ok(const uint8_t *b, uint64_t gc)
{
    uint64_t off = gc * CR_CS;
    if (off >= CR_ZERO_END)
        return cluster_is(b, CR_CS, gc, 1);
    return cluster_is(b, CR_CS, gc, 1) || cluster_is(b, CR_CS, gc, 0) ||
           (off < CR_REWRITE_END && cluster_is(b, CR_CS, gc, 2));
}

/* qemu-img check's status; its report only when worse than leaks (a
 * crash may leak the clusters whose refcount drop was not durable). */
static int check_quiet(const char *path)
{
    static char out[1 << 20];
    int st = qt_run_out(out, sizeof(out), "qemu-img check -f qcow2 '%s'",
                        path);
    if (st != 0 && st != 3)
        fprintf(stderr, "qemu-img check -> %d:\n%.2000s\n", st, out);
    return st;
}

static void crash_judge(const struct crash_file *f, const char *what)
{
    char path[4200];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/crash.qcow2", dir);
    cr.images++;
    if (!qt_write_file(path, f->b, f->size)) {
        QT_FAIL("%s: cannot write the crash image", what);
        return;
    }
    int st = check_quiet(path);
    /* Read back even when the check fails: the content tells which rule
     * broke. */
    uint8_t *raw = qt_qemu_raw(path, dir, &len, NULL);
    bool read_ok = raw && len == CR_SIZE;
    uint64_t gc = 0;
    for (; read_ok && gc < CR_SIZE / CR_CS; gc++)
        read_ok = crash_cluster_ok(raw + gc * CR_CS, gc);
    bool ok = read_ok && (st == 0 || st == 3);
    if (!ok && cr.bad++ < 5)
        QT_FAIL("%s: qemu-img check %d; %s", what, st,
                !raw ? "not read back"
                     : len != CR_SIZE ? "wrong size"
                     : read_ok ? "content as expected"
                     : "a guest cluster reads neither its old data, zeros "
                       "nor its new data");
    if (!read_ok && raw && len == CR_SIZE && cr.bad <= 5)
        fprintf(stderr, "  guest cluster %" PRIu64 " starts %016" PRIx64
                "\n", gc - 1, get_be64(raw + (gc - 1) * CR_CS));
    free(raw);
}

/* The crash images of one sync point: durable plus none, all, random
 * subsets or random prefixes (in issue order) of the ops pending since
 * the last fdatasync. */
static void crash_point(const struct crash_file *durable, const size_t *pend,
                        size_t npend, struct qt_rng *rng)
{
    struct crash_file w = { 0 };
    for (int mode = 0; mode < 10; mode++) {
        if (mode > 0 && npend == 0)
            break;
        crash_file_resize(&w, durable->size);
        memcpy(w.b, durable->b, durable->size);
        bool subset = mode >= 2 && mode < 6;
        size_t prefix = mode == 1 ? npend : mode >= 6 ? qt_below(rng, npend)
                                                      : 0;
        for (size_t i = 0; i < npend; i++)
            if (i < prefix || (subset && qt_below(rng, 2)))
                crash_apply(&w, &crash_ops[pend[i]]);
        char what[128];
        snprintf(what, sizeof(what), "crash at op %zu/%zu (%s %zu of %zu "
                 "pending)", npend ? pend[npend - 1] + 1 : 0, crash_nops,
                 mode == 0 ? "none" : mode == 1 ? "all"
                 : subset ? "subset" : "prefix", prefix, npend);
        crash_judge(&w, what);
    }
    free(w.b);
}

/* What the guest does while recorded: the large discards, then new data
 * into clusters that reuse freed host clusters, a flush. */
static void crash_workload(struct image *img)
{
    uint8_t buf[CR_CS];
    QT_CHECK(image_discard(img, 0, CR_DISCARD_END) == 0);
    QT_CHECK(image_zero(img, CR_DISCARD_END, CR_ZERO_END - CR_DISCARD_END,
                        IMAGE_MAY_UNMAP) == 0);
    for (uint64_t gc = 0; gc < CR_REWRITE_END / CR_CS; gc++) {
        fill_cluster(buf, CR_CS, gc, 2);
        QT_CHECK(image_write(img, buf, CR_CS, gc * CR_CS, 0) == 0);
    }
    QT_CHECK(image_flush(img) == 0);
}

static void replay_all(struct crash_file *durable, struct qt_rng *rng,
                       unsigned *points)
{
    size_t *pend = malloc(sizeof(size_t) * (crash_nops + 1)), npend = 0;
    for (size_t i = 0; i <= crash_nops; i++) {
        if (i == crash_nops || crash_ops[i].kind == CRASH_SYNC) {
            crash_point(durable, pend, npend, rng);
            (*points)++;
            for (size_t j = 0; j < npend; j++)
                crash_apply(durable, &crash_ops[pend[j]]);
            npend = 0;
        } else {
            pend[npend++] = i;
        }
    }
    free(pend);
}

static void test_crash(void)
{
    char path[4200];
    struct qt_rng rng;
    struct image *img;
    qt_rng_seed(&rng, qt_seed());
    snprintf(path, sizeof(path), "%s/crash-base.qcow2", dir);
    if (!qt_must("qemu-img create -q -f qcow2 -o cluster_size=%u '%s' %u",
                 CR_CS, path, CR_SIZE) ||
        qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("crash: setup");
        return;
    }
    bool ok = write_shuffled(img, CR_CS, 1, &rng);
    QT_CHECK(ok && image_close(img) == 0);
    struct crash_file durable = { 0 };
    durable.b = qt_read_file(path, &durable.size);
    if (!ok || !durable.b || qt_open(path, false, NULL, &img) < 0) {
        QT_FAIL("crash: setup");
        free(durable.b);
        return;
    }
    struct host_syscalls saved = host_sys;
    crash_rec_start(file_host(img->file)->fd);
    crash_workload(img);
    crash_rec_stop();
    host_sys = saved;
    qcow2_simulate_crash(img);
    unsigned points = 0;
    replay_all(&durable, &rng, &points);
    printf("crash replay: %zu host ops, %u sync points, %u crash images, "
           "%u bad\n", crash_nops, points, cr.images, cr.bad);
    if (points < 4)
        QT_FAIL("only %u sync points: no meta sync inside the discard "
                "(test setup)", points);
    crash_rec_clear();
    free(crash_ops);
    crash_ops = NULL;
    crash_cap = 0;
    free(durable.b);
}

/* ------------------------------------------------------------------ */
/* 3. Model.                                                          */

struct layout {
    const char *opts;   /* qemu-img create -o */
    uint64_t size, cs;
    bool backing;       /* over a raw file of 0x77 */
};

struct model {
    uint8_t *bytes;
    bool *unmapped;     /* per cluster: discarded whole, not written since */
};

static void model_write(struct image *img, struct model *m,
                        const struct layout *l, struct qt_rng *rng)
{
    uint64_t len = 512 * (1 + qt_below(rng, 512));
    uint64_t off = 512 * qt_below(rng, (l->size - len) / 512 + 1);
    uint8_t *buf = malloc(len);
    memset(buf, (int)(1 + qt_below(rng, 250)), len);
    QT_CHECK(image_write(img, buf, len, off, 0) == 0);
    memcpy(m->bytes + off, buf, len);
    for (uint64_t c = off / l->cs; c <= (off + len - 1) / l->cs; c++)
        m->unmapped[c] = false;
    free(buf);
}

/* A large discard or zero, sector-aligned edges anywhere. */
static void model_zero(struct image *img, struct model *m,
                       const struct layout *l, struct qt_rng *rng, int how)
{
    uint64_t len = 512 * (1 + qt_below(rng, l->size / 2 / 512));
    uint64_t off = 512 * qt_below(rng, (l->size - len) / 512 + 1);
    int ret = how == 0 ? image_discard(img, off, len)
              : image_zero(img, off, len, how == 1 ? IMAGE_MAY_UNMAP : 0);
    QT_CHECK(ret == 0);
    memset(m->bytes + off, 0, len);
    /* A partial cluster may be zeroed by writing zeros (allocating). */
    if (off % l->cs)
        m->unmapped[off / l->cs] = false;
    if ((off + len) % l->cs)
        m->unmapped[(off + len) / l->cs] = false;
    if (how == 2)
        return; /* whole clusters keep their mapping */
    for (uint64_t c = DIV_ROUND_UP(off, l->cs); (c + 1) * l->cs <= off + len;
         c++)
        m->unmapped[c] = true;
}

/* qemu-img map: no cluster the model says is unmapped shows data. */
static void check_map(const char *path, const struct layout *l,
                      const struct model *m)
{
    static char out[1 << 20];
    if (qt_run_out(out, sizeof(out), "qemu-img map --output=json '%s'",
                   path) != 0) {
        QT_FAIL("qemu-img map %s", path);
        return;
    }
    unsigned checked = 0;
    for (char *p = strstr(out, "\"start\""); p;
         p = strstr(p + 1, "\"start\"")) {
        uint64_t start = 0, len = 0;
        int depth = 0;
        sscanf(p, "\"start\": %" SCNu64 ", \"length\": %" SCNu64
               ", \"depth\": %d", &start, &len, &depth);
        char *end = strchr(p, '}');
        char *data = strstr(p, "\"data\": true");
        if (depth != 0 || !data || (end && data > end))
            continue;
        for (uint64_t c = start / l->cs; c < DIV_ROUND_UP(start + len, l->cs);
             c++, checked++)
            if (m->unmapped[c]) {
                QT_FAIL("%s: qemu-img map shows data in discarded cluster "
                        "%" PRIu64, l->opts, c);
                return;
            }
    }
    QT_CHECK(checked > 0);
}

/* One open of the image: random operations, then every check. */
static void model_round(const struct layout *l, const char *path,
                        struct model *mp, struct qt_rng *rng)
{
    struct model m = *mp;
    struct image *img;
    if (qt_open(path, false, dir, &img) < 0) {
        QT_FAIL("%s: open", l->opts);
        return;
    }
    for (int i = 0; i < 120; i++) {
        unsigned r = (unsigned)qt_below(rng, 100);
        if (r < 50)
            model_write(img, &m, l, rng);
        else if (r < 90)
            model_zero(img, &m, l, rng, r < 70 ? 0 : r < 85 ? 1 : 2);
        else
            QT_CHECK(image_flush(img) == 0);
    }
    QT_CHECK(qt_compare_image(img, m.bytes, l->opts));
    QT_CHECK(image_close(img) == 0);
    QT_CHECK(qt_check(path) == 0);
    size_t len = 0;
    uint8_t *raw = qt_qemu_raw(path, dir, &len, NULL);
    if (!raw || len != l->size || memcmp(raw, m.bytes, len))
        QT_FAIL("%s: qemu-img convert differs from the model", l->opts);
    free(raw);
    check_map(path, l, &m);
}

static void test_model(void)
{
    static const struct layout layouts[] = {
        { "cluster_size=4096", 8 << 20, 4096, false },
        { "cluster_size=65536,extended_l2=on", 32 << 20, 65536, false },
        { "cluster_size=4096", 8 << 20, 4096, true },
    };
    struct qt_rng rng;
    qt_rng_seed(&rng, qt_seed() + 1);
    for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
        const struct layout *l = &layouts[i];
        char path[4200], back[64] = "";
        snprintf(path, sizeof(path), "%s/model%zu.qcow2", dir, i);
        if (l->backing) {
            if (!qt_must("cd '%s' && qemu-img create -q -f raw base.raw %"
                         PRIu64 " && qemu-io -f raw -c 'write -P 0x77 0 %"
                         PRIu64 "' base.raw", dir, l->size, l->size))
                continue;
            snprintf(back, sizeof(back), "-b base.raw -F raw");
        }
        if (!qt_must("cd '%s' && qemu-img create -q -f qcow2 -o %s %s '%s' %"
                     PRIu64, dir, l->opts, back, path, l->size))
            continue;
        /* A new image reads as zeros (or the backing file) and maps
         * nothing. */
        uint64_t nc = l->size / l->cs;
        struct model m = { malloc(l->size), malloc(nc * sizeof(bool)) };
        memset(m.bytes, l->backing ? 0x77 : 0, l->size);
        for (uint64_t c = 0; c < nc; c++)
            m.unmapped[c] = true;
        for (int round = 0; round < 3; round++)
            model_round(l, path, &m, &rng);
        free(m.bytes);
        free(m.unmapped);
        printf("model: %s%s: 3 rounds\n", l->opts,
               l->backing ? " over a backing file" : "");
    }
}

int main(void)
{
    qt_require_qemu();
    qt_mkdtemp(dir, sizeof(dir), "discard_batch");
    test_punch_runs();
    test_crash();
    test_model();
    if (!qt_failed)
        qt_rmtree(dir);
    return qt_summary("test_discard_batch");
}
