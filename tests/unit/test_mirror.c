/* qlun — the mirror job and the active commit (block/mirror*.c,
 * block/active_commit.c) on a model LUN while threads write to it.
 *
 * The LUN is faked (struct fake_lun): a top image opened read-write, the
 * job's filter slot above it, and a rwlock as its drain (writers hold it
 * shared per request, the job's drain_begin takes it exclusive), as
 * handler/lun_graph.c and scsi/lun.c do.  Writer threads write stamped
 * 4 KiB chunks, write-zeroes and discard through the node the LUN serves,
 * each chunk owned by one thread, and keep the model: what the LUN must
 * read.  Checked after each job:
 *  - complete: the LUN now serves the target (the base for commit), it
 *    reads exactly the model, `qemu-img compare` of the model and the
 *    target says identical, `qemu-img check` is clean, and the target's
 *    allocated data is about the source's data plus what the writers
 *    touched (zeroes were not written as data);
 *  - cancel (at random points), ENOSPC or EIO on the target: the LUN
 *    serves the source as before, reads the model, and the chain checks
 *    clean.
 * Needs qemu-img and qemu-io (exit 77 = skipped without).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "block/driver.h"
#include "block/job.h"
#include "block/mirror_internal.h"
#include "check.h"
#include "memimage.h"

#define MiB (1024ull * 1024)
#define SIZE (64 * MiB)
#define CHUNK 4096u
#define WRITERS 3
#define WRITE_SPAN (8 * MiB)   /* the writers' chunks lie in [0, 8 MiB) */

static char dir[] = "/var/tmp/qlun-mirror-XXXXXX";

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A number a shell pipeline prints. */
static long long sh_number(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        pclose(f);
    }
    return v;
}

/* Bytes `qemu-img map` reports as data: in path's own layer (depth 0),
 * or as a reader of its whole chain sees them. */
static long long data_bytes(const char *path, bool own_layer)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "qemu-img map --output=json '%s' | python3 -c 'import json,sys;"
             "print(sum(e[\"length\"] for e in json.load(sys.stdin) "
             "if e[\"data\"] and (e[\"depth\"]==0 or %s)))'", path,
             own_layer ? "False" : "True");
    return sh_number(cmd);
}

/* ---- the fake LUN ---- */

struct fake_lun {
    pthread_rwlock_t drain;
    struct image *top;
    struct image *filter;      /* the job slot */
    bool draining;
};

static struct fake_lun lun;

static struct image *served(void)
{
    return lun.filter ? lun.filter : lun.top;
}

static void own_drain_begin(void *o) { (void)o; pthread_rwlock_wrlock(&lun.drain); lun.draining = true; }
static void own_drain_end(void *o) { (void)o; lun.draining = false; pthread_rwlock_unlock(&lun.drain); }
static unsigned own_in_flight(void *o) { (void)o; return 0; }
static struct image *own_top(void *o) { (void)o; return lun.top; }

static int own_filter_insert(void *o, const struct block_driver *drv,
                             struct image **node, char *err, size_t errlen)
{
    (void)o;
    CHECK(lun.draining);
    struct image *edge = lun.top;
    int ret = image_insert_filter(&edge, drv, err, errlen);
    if (ret == 0)
        *node = lun.filter = edge;
    return ret;
}

static void own_filter_remove(void *o)
{
    (void)o;
    CHECK(lun.draining);
    struct image *f = lun.filter;
    lun.filter = NULL;
    image_remove_filter(&f);
}

static struct image *own_switch_top(void *o, struct image *new_top)
{
    (void)o;
    CHECK(lun.draining);
    struct image *old = lun.top;
    lun.top = new_top;
    if (lun.filter) {
        lun.filter->file = new_top;
        lun.filter->size = new_top->size;
    }
    return old;
}

static void own_open_opts(void *o, struct image_open_opts *opts)
{
    (void)o;
    memset(opts, 0, sizeof(*opts));
    opts->backing_root = dir;
}

static void own_concluded(void *o, struct job *job) { (void)o; (void)job; }

static const struct job_owner owner = {
    .lun = "fake",
    .drain_begin = own_drain_begin,
    .drain_end = own_drain_end,
    .in_flight = own_in_flight,
    .top = own_top,
    .filter_insert = own_filter_insert,
    .filter_remove = own_filter_remove,
    .switch_top = own_switch_top,
    .open_opts = own_open_opts,
    .concluded = own_concluded,
};

/* ---- writers and the model ---- */

static uint8_t *model;        /* SIZE bytes: what the LUN must read */
static atomic_bool stop_writers;
static atomic_uint write_errors;
static pthread_t writer_tid[WRITERS];

static void *writer(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg, seed = t * 7919u + 1;
    uint8_t *buf = malloc(CHUNK);
    for (unsigned seq = 1; !atomic_load(&stop_writers); seq++) {
        uint64_t c = (uint64_t)(rand_r(&seed) % (WRITE_SPAN / CHUNK / WRITERS))
                     * WRITERS + t;
        uint64_t off = c * CHUNK;
        unsigned op = (unsigned)rand_r(&seed) % 10;
        pthread_rwlock_rdlock(&lun.drain);
        int ret;
        if (op < 7) {
            for (unsigned i = 0; i < CHUNK; i += 8) {
                memcpy(buf + i, &seq, 4);
                memcpy(buf + i + 4, &c, 4);
            }
            ret = image_write(served(), buf, CHUNK, off, 0);
        } else if (op < 9) {
            ret = image_zero(served(), off, CHUNK, IMAGE_MAY_UNMAP);
            memset(buf, 0, CHUNK);
        } else {
            /* What a discard leaves is the format's to say: the model
             * takes what the LUN reads right after (the chunk is ours). */
            ret = image_discard(served(), off, CHUNK);
            if (ret == 0)
                ret = image_read(served(), buf, CHUNK, off);
        }
        pthread_rwlock_unlock(&lun.drain);
        if (ret == 0)
            memcpy(model + off, buf, CHUNK);
        else
            atomic_fetch_add(&write_errors, 1);
        usleep(300);
    }
    free(buf);
    return NULL;
}

static void writers_start(void)
{
    atomic_store(&stop_writers, false);
    for (uintptr_t t = 0; t < WRITERS; t++)
        pthread_create(&writer_tid[t], NULL, writer, (void *)t);
}

static void writers_stop(void)
{
    atomic_store(&stop_writers, true);
    for (int t = 0; t < WRITERS; t++)
        pthread_join(writer_tid[t], NULL);
}

/* The LUN reads the model, all of it. */
static bool lun_reads_model(void)
{
    uint8_t *buf = malloc(MiB);
    bool same = true;
    for (uint64_t off = 0; off < SIZE && same; off += MiB) {
        pthread_rwlock_rdlock(&lun.drain);
        int ret = image_read(served(), buf, MiB, off);
        pthread_rwlock_unlock(&lun.drain);
        if (ret < 0 || memcmp(buf, model + off, MiB) != 0) {
            fprintf(stderr, "LUN differs from the model in MiB %llu\n",
                    (unsigned long long)(off / MiB));
            same = false;
        }
    }
    free(buf);
    return same;
}

/* The model as a raw file, for qemu-img compare. */
static void write_model(const char *path)
{
    FILE *f = fopen(path, "w");
    CHECK(f && fwrite(model, 1, SIZE, f) == SIZE);
    if (f)
        fclose(f);
}

/* ---- the source chain ---- */

static char base_path[512], mid_path[512], top_path[512];

/* base (qcow2 or raw): 0x11 in [0, 8M), zeros after (qcow2: zero clusters
 * over [8M, 40M); raw: a hole); with mid: mid.qcow2 holds 0x44 in
 * [10M, 12M); top.qcow2: 0x22 in [4M, 6M), zero clusters over the base's
 * data in [6M, 7M), 0x33 in [20M, 21M). */
static void make_chain_sized(const char *base_fmt, bool with_mid,
                             uint64_t base_size);
static void make_chain(const char *base_fmt, bool with_mid)
{
    make_chain_sized(base_fmt, with_mid, SIZE);
}

/* base_size < SIZE: the LUN grew after the base was made (base zeros
 * only up to its end). */
static void make_chain_sized(const char *base_fmt, bool with_mid,
                             uint64_t base_size)
{
    sh("rm -f %s/*", dir);
    snprintf(base_path, sizeof(base_path), "%s/base.%s", dir, base_fmt);
    snprintf(mid_path, sizeof(mid_path), "%s/mid.qcow2", dir);
    snprintf(top_path, sizeof(top_path), "%s/top.qcow2", dir);
    CHECK_EQ(sh("qemu-img create -q -f %s %s %llu", base_fmt, base_path,
                (unsigned long long)base_size), 0);
    if (strcmp(base_fmt, "qcow2") == 0)
        CHECK_EQ(sh("qemu-io -f qcow2 -c 'write -P 0x11 0 8M' "
                    "-c 'write -z 8M %lluM' %s >/dev/null",
                    (unsigned long long)((base_size > 40 * MiB ? 40 * MiB
                                                               : base_size) /
                                         MiB - 8), base_path), 0);
    else
        CHECK_EQ(sh("qemu-io -f raw -c 'write -P 0x11 0 8M' %s >/dev/null",
                    base_path), 0);
    const char *below = strrchr(base_path, '/') + 1, *below_fmt = base_fmt;
    if (with_mid) {
        CHECK_EQ(sh("cd %s && qemu-img create -q -f qcow2 -b %s -F %s "
                    "mid.qcow2 %llu && qemu-io -f qcow2 -c 'write -P 0x44 10M 2M' "
                    "mid.qcow2 >/dev/null", dir, below, below_fmt, SIZE), 0);
        below = "mid.qcow2";
        below_fmt = "qcow2";
    }
    CHECK_EQ(sh("cd %s && qemu-img create -q -f qcow2 -b %s -F %s top.qcow2 "
                "%llu && qemu-io -f qcow2 -c 'write -P 0x22 4M 2M' "
                "-c 'write -z 6M 1M' -c 'write -P 0x33 20M 1M' top.qcow2 "
                ">/dev/null", dir, below, below_fmt, SIZE), 0);
}

static void lun_open(void)
{
    struct image_open_opts o = { .path = top_path, .format = "qcow2",
                                 .backing_root = dir };
    char err[256];
    memset(&lun, 0, sizeof(lun));
    pthread_rwlock_init(&lun.drain, NULL);
    int ret = image_open(&o, &lun.top, err, sizeof(err));
    if (ret < 0)
        fprintf(stderr, "open %s: %s\n", top_path, err);
    CHECK_EQ(ret, 0);
    CHECK_EQ(lun.top->size, SIZE);
    CHECK_EQ(image_read(lun.top, model, SIZE, 0), 0);
}

static void lun_close(void)
{
    CHECK(lun.filter == NULL);
    image_close(lun.top);
    lun.top = NULL;
    pthread_rwlock_destroy(&lun.drain);
}

/* ---- jobs ---- */

static struct job_info info_of(const char *id)
{
    struct job_info *all, found = { 0 };
    size_t n;
    job_list(NULL, &all, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].id, id) == 0)
            found = all[i];
    free(all);
    return found;
}

/* Wait until the job's status is s (or it concluded); false on timeout. */
static bool wait_status(const char *id, enum job_status s, int seconds)
{
    for (int i = 0; i < seconds * 100; i++) {
        struct job_info ji = info_of(id);
        if (ji.status == s || ji.status == JOB_CONCLUDED)
            return ji.status == s;
        usleep(10000);
    }
    return false;
}

/* Through job_start: block/job_drivers.c routes "mirror", and "commit"
 * of the LUN's top, to these drivers. */
static int start_job(const struct job_params *p, char *err, size_t errlen)
{
    return job_start(p, &owner, err, errlen);
}

/* Complete a ready job while the writers go on; the job's result. */
static enum job_result complete_and_wait(const char *id)
{
    char err[256];
    CHECK(wait_status(id, JOB_READY, 120));
    usleep(200000);                      /* ready, writers still writing */
    CHECK_EQ(job_complete(id, err, sizeof(err)), 0);
    CHECK(wait_status(id, JOB_CONCLUDED, 120));
    struct job_info ji = info_of(id);
    if (ji.error[0])
        fprintf(stderr, "job %s: %s\n", id, ji.error);
    CHECK(ji.done > 0);
    CHECK_EQ(job_dismiss(id, err, sizeof(err)), 0);
    return ji.result;
}

/* After the pivot: the LUN is the image at path, reads the model, which
 * qemu-img finds identical to that image, clean; its own data (zeroes not
 * written) is at most the source's plus what the writers touched. */
static void check_pivoted(const char *path, const char *fmt,
                          long long src_data)
{
    CHECK(strcmp(lun.top->filename, path) == 0);
    CHECK(!lun.top->info.read_only);
    CHECK(lun_reads_model());
    lun_close();
    char model_path[600];
    snprintf(model_path, sizeof(model_path), "%s/model.raw", dir);
    write_model(model_path);
    CHECK_EQ(sh("qemu-img compare -q -f raw -F %s %s %s", fmt, model_path,
                path), 0);
    if (strcmp(fmt, "qcow2") == 0)
        CHECK_EQ(sh("qemu-img check -q %s", path), 0);
    long long data = data_bytes(path, true);
    fprintf(stderr, "  target data %lld bytes, source data %lld\n", data,
            src_data);
    CHECK(data >= 0 && data <= src_data + (long long)(WRITE_SPAN + MiB));
    unlink(model_path);
}

/* After a cancel or a failure: the LUN serves the source as it did. */
static void check_source_serving(struct image *old_top)
{
    CHECK(lun.top == old_top);
    CHECK(lun.filter == NULL);
    CHECK(lun_reads_model());
    lun_close();
    CHECK_EQ(sh("qemu-img check -q %s", top_path), 0);
}

/* ---- the cases ---- */

static void target_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Mirror sync=full|top into a new (or existing) target, complete. */
static void test_mirror_complete(const char *base_fmt, const char *fmt,
                                 bool sync_top, bool existing)
{
    fprintf(stderr, "mirror base %s -> %s sync=%s%s\n", base_fmt, fmt,
            sync_top ? "top" : "full", existing ? " existing" : "");
    make_chain(base_fmt, false);
    char target[600], err[256];
    target_path(target, sizeof(target), strcmp(fmt, "raw") ? "t.qcow2"
                                                            : "t.raw");
    if (existing) /* old garbage everywhere: zeroes must be made zero */
        CHECK_EQ(sh("qemu-img create -q -f raw %s %llu && qemu-io -f raw "
                    "-c 'write -P 0xee 0 %llu' %s >/dev/null", target, SIZE,
                    SIZE, target), 0);
    long long src_data = data_bytes(top_path, sync_top);
    lun_open();
    struct image *old_top = lun.top;
    writers_start();
    struct job_params p = { .type = "mirror", .id = "m", .target = target,
                            .format = fmt, .sync_top = sync_top,
                            .existing = existing };
    int ret = start_job(&p, err, sizeof(err));
    if (ret < 0)
        fprintf(stderr, "start: %s\n", err);
    CHECK_EQ(ret, 0);
    CHECK(lun.filter != NULL);
    enum job_result r = ret == 0 ? complete_and_wait("m") : JOB_RESULT_NONE;
    writers_stop();
    CHECK_EQ(r, JOB_RESULT_COMPLETED);
    CHECK(lun.top != old_top);
    CHECK_EQ(atomic_load(&write_errors), 0);
    if (sync_top) {
        /* The target's backing file is the top's. */
        CHECK(lun.top->backing != NULL);
        CHECK(lun.top->backing &&
              strcmp(lun.top->backing->filename, base_path) == 0);
    }
    check_pivoted(target, fmt, src_data);
}

/* sync=top into raw: refused, nothing created. */
static void test_mirror_top_raw_refused(void)
{
    make_chain("qcow2", false);
    lun_open();
    char target[600], err[256];
    target_path(target, sizeof(target), "t.raw");
    struct job_params p = { .type = "mirror", .id = "m", .target = target,
                            .format = "raw", .sync_top = true };
    CHECK_EQ(start_job(&p, err, sizeof(err)), -EINVAL);
    CHECK(access(target, F_OK) != 0);
    /* A start that fails after creating its target removes it. */
    char made[600];
    target_path(made, sizeof(made), "t.qcow2");
    struct job_params bad = { .type = "mirror", .id = "m", .target = made,
                              .granularity = 3000 };
    CHECK_EQ(start_job(&bad, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "granularity") != NULL);
    CHECK(access(made, F_OK) != 0);
    /* A new target never clobbers an existing file. */
    CHECK_EQ(sh("echo keep > %s", target), 0);
    p.sync_top = false;
    CHECK(start_job(&p, err, sizeof(err)) < 0);
    CHECK_EQ(sh("grep -q keep %s", target), 0);
    CHECK(lun.filter == NULL);
    lun_close();
}

/* Cancel at a random point: the source goes on serving, the target file
 * stays. */
static void test_mirror_cancel(unsigned seed)
{
    make_chain("qcow2", false);
    char target[600], err[256];
    target_path(target, sizeof(target), "t.qcow2");
    lun_open();
    struct image *old_top = lun.top;
    writers_start();
    struct job_params p = { .type = "mirror", .id = "c", .target = target,
                            .granularity = 4096u << (seed % 5) };
    CHECK_EQ(start_job(&p, err, sizeof(err)), 0);
    usleep((useconds_t)(rand_r(&seed) % 1500) * 1000);
    CHECK_EQ(job_cancel("c", err, sizeof(err)), 0);
    CHECK(wait_status("c", JOB_CONCLUDED, 60));
    struct job_info ji = info_of("c");
    CHECK_EQ(ji.result, JOB_RESULT_CANCELLED);
    CHECK_EQ(job_dismiss("c", err, sizeof(err)), 0);
    writers_stop();
    CHECK(access(target, F_OK) == 0);
    check_source_serving(old_top);
    CHECK_EQ(sh("qemu-img check -q %s", target), 0);
}

/* Pause: no progress while paused; resume, complete. */
static void test_mirror_pause(void)
{
    make_chain("qcow2", false);
    char target[600], err[256];
    target_path(target, sizeof(target), "t.qcow2");
    long long src_data = data_bytes(top_path, false);
    lun_open();
    writers_start();
    struct job_params p = { .type = "mirror", .id = "p", .target = target };
    CHECK_EQ(start_job(&p, err, sizeof(err)), 0);
    CHECK_EQ(job_pause("p", err, sizeof(err)), 0);
    CHECK(wait_status("p", JOB_PAUSED, 60));
    uint64_t done = info_of("p").done;
    usleep(300000);
    CHECK_EQ(info_of("p").done, done);
    CHECK_EQ(info_of("p").status, JOB_PAUSED);
    CHECK_EQ(job_resume("p", err, sizeof(err)), 0);
    enum job_result r = complete_and_wait("p");
    writers_stop();
    CHECK_EQ(r, JOB_RESULT_COMPLETED);
    check_pivoted(target, "qcow2", src_data);
}

/* ---- a target that fails: a filter above the target node ---- */

static _Atomic long long fail_budget = -1;  /* bytes until failing; -1: never */
static atomic_int fail_errno;

static int failing_spend(uint64_t len)
{
    long long b = atomic_load(&fail_budget);
    if (b < 0)
        return 0;
    if ((long long)len > b) {
        atomic_store(&fail_budget, 0);
        return atomic_load(&fail_errno);
    }
    atomic_fetch_sub(&fail_budget, (long long)len);
    return 0;
}

static int failing_writev(struct image *img, const struct iovec *iov,
                          int iovcnt, uint64_t off, unsigned flags)
{
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    int ret = failing_spend(len);
    return ret ? ret : image_writev(img->file, iov, iovcnt, off, flags);
}

static int failing_zero(struct image *img, uint64_t off, uint64_t len,
                        unsigned flags)
{
    int ret = failing_spend(4096);
    return ret ? ret : image_zero(img->file, off, len, flags);
}

static const struct image_ops failing_ops = {
    .name = "failing",
    .writev = failing_writev,
    .zero = failing_zero,
};

static const struct block_driver failing_driver = {
    .name = "failing",
    .instance_size = sizeof(struct image),
    .ops = &failing_ops,
    .is_filter = true,
};

static void insert_failing(struct image **target)
{
    char err[256];
    CHECK_EQ(image_insert_filter(target, &failing_driver, err, sizeof(err)),
             0);
}

/* The target fails (ENOSPC during the first pass, or EIO once the job is
 * ready and copies new writes): the job fails with the error, the LUN
 * serves the source unchanged. */
static void test_mirror_target_fails(int err_no, bool after_ready)
{
    fprintf(stderr, "mirror target fails with %s %s\n", strerror(err_no),
            after_ready ? "after ready" : "in the first pass");
    make_chain("qcow2", false);
    char target[600], err[256];
    target_path(target, sizeof(target), "t.qcow2");
    lun_open();
    struct image *old_top = lun.top;
    atomic_store(&fail_errno, -err_no);
    atomic_store(&fail_budget, after_ready ? -1 : (long long)(2 * MiB));
    mirror_target_hook = insert_failing;
    writers_start();
    struct job_params p = { .type = "mirror", .id = "f", .target = target };
    CHECK_EQ(start_job(&p, err, sizeof(err)), 0);
    if (after_ready) {
        CHECK(wait_status("f", JOB_READY, 120));
        atomic_store(&fail_budget, 0);     /* the writers make it copy */
    }
    CHECK(wait_status("f", JOB_CONCLUDED, 120));
    struct job_info ji = info_of("f");
    CHECK_EQ(ji.result, JOB_RESULT_FAILED);
    CHECK(strstr(ji.error, strerror(err_no)) != NULL);
    fprintf(stderr, "  error: %s\n", ji.error);
    CHECK_EQ(job_dismiss("f", err, sizeof(err)), 0);
    writers_stop();
    mirror_target_hook = NULL;
    atomic_store(&fail_budget, -1);
    CHECK_EQ(atomic_load(&write_errors), 0);
    check_source_serving(old_top);
}

/* ---- active commit ---- */

static void test_commit_complete(const char *base_fmt, uint64_t base_size)
{
    fprintf(stderr, "active commit into a %s base of %llu MiB\n", base_fmt,
            (unsigned long long)(base_size / MiB));
    make_chain_sized(base_fmt, true, base_size);
    long long src_data = data_bytes(top_path, false);
    lun_open();
    writers_start();
    char err[256];
    struct job_params p = { .type = "commit", .id = "ac" };
    int ret = start_job(&p, err, sizeof(err));
    if (ret < 0)
        fprintf(stderr, "start: %s\n", err);
    CHECK_EQ(ret, 0);
    enum job_result r = ret == 0 ? complete_and_wait("ac") : JOB_RESULT_NONE;
    writers_stop();
    CHECK_EQ(r, JOB_RESULT_COMPLETED);
    CHECK(lun.top->backing == NULL);       /* the base was the bottom */
    CHECK_EQ(lun.top->size, SIZE);         /* a smaller base grew */
    check_pivoted(base_path, base_fmt, src_data);
}

/* Cancel an active commit into the middle layer: the chain is as it was,
 * the base read-only again. */
static void test_commit_cancel(unsigned seed)
{
    make_chain("qcow2", true);
    lun_open();
    struct image *old_top = lun.top;
    writers_start();
    char err[256];
    struct job_params p = { .type = "commit", .id = "cc", .base = mid_path };
    CHECK_EQ(start_job(&p, err, sizeof(err)), 0);
    CHECK(!lun.top->backing->info.read_only);
    usleep((useconds_t)(rand_r(&seed) % 1500) * 1000);
    CHECK_EQ(job_cancel("cc", err, sizeof(err)), 0);
    CHECK(wait_status("cc", JOB_CONCLUDED, 60));
    CHECK_EQ(info_of("cc").result, JOB_RESULT_CANCELLED);
    CHECK_EQ(job_dismiss("cc", err, sizeof(err)), 0);
    writers_stop();
    CHECK(strcmp(lun.top->backing->filename, mid_path) == 0);
    CHECK(lun.top->backing->info.read_only);
    CHECK(lun.top->backing->backing &&
          strcmp(lun.top->backing->backing->filename, base_path) == 0);
    check_source_serving(old_top);
    CHECK_EQ(sh("qemu-img check -q %s && qemu-img check -q %s", mid_path,
                base_path), 0);
}

/* ---- the tracking filter's order: mark after the write completed ----
 *
 * A gate node below the tracking filter holds a write until released, so
 * the job's step (find the dirty chunk, clear it, read it to copy) runs
 * while the write is in flight, as it may on a real LUN.  The write's
 * chunk must be dirty once the write has completed: else the copy read
 * the old data and the new never reaches the target.  A failed write
 * marks nothing. */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_entered, gate_open;
static int gate_errno;

static int gate_writev(struct image *img, const struct iovec *iov, int iovcnt,
                       uint64_t off, unsigned flags)
{
    pthread_mutex_lock(&gate_lock);
    gate_entered = true;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    if (gate_errno)
        return gate_errno;
    return image_writev(img->file, iov, iovcnt, off, flags);
}

static const struct image_ops gate_ops = { .name = "gate",
                                           .writev = gate_writev };
static const struct block_driver gate_driver = {
    .name = "gate", .instance_size = sizeof(struct image),
    .ops = &gate_ops, .is_filter = true,
};

static void *gated_write(void *arg)
{
    static uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    return (void *)(intptr_t)image_write(arg, buf, sizeof(buf), 8192, 0);
}

/* One write held at the gate while the job's step runs; returns whether
 * its chunk is dirty after it completed, and its result. */
static bool dirty_after_gated_write(int fail, int *write_ret)
{
    char err[128];
    struct memimage *mem = memimage_new(1 << 20);
    mem->img.filename = (char *)"mem";  /* filters copy the name */
    struct image *edge = &mem->img;
    CHECK_EQ(image_insert_filter(&edge, &gate_driver, err, sizeof(err)), 0);
    CHECK_EQ(image_insert_filter(&edge, &mirror_top_driver, err,
                                 sizeof(err)), 0);
    struct dirty_bitmap *bm = dirty_bitmap_new(1 << 20, 4096);
    mirror_top_attach(edge, bm);
    gate_entered = gate_open = false;
    gate_errno = fail;
    pthread_t th;
    pthread_create(&th, NULL, gated_write, edge);
    pthread_mutex_lock(&gate_lock);
    while (!gate_entered)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    /* The job's step, as copy_next_dirty does it. */
    uint64_t off = dirty_bitmap_next(bm, 0);
    if (off != UINT64_MAX)
        dirty_bitmap_clear(bm, off, 4096);
    uint8_t old[4096];
    CHECK_EQ(image_read(edge, old, sizeof(old), 8192), 0);
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    void *ret;
    pthread_join(th, &ret);
    *write_ret = (int)(intptr_t)ret;
    bool dirty = dirty_bitmap_next(bm, 0) == 8192;
    image_remove_filter(&edge);           /* the tracking filter */
    image_remove_filter(&edge);           /* the gate */
    image_close(edge);
    dirty_bitmap_free(bm);
    return dirty;
}

static void test_tracking_order(void)
{
    int ret;
    CHECK(dirty_after_gated_write(0, &ret));
    CHECK_EQ(ret, 0);
    CHECK(!dirty_after_gated_write(-EIO, &ret));
    CHECK_EQ(ret, -EIO);
}

/* Cases by name: `test_mirror [NAME...]` runs only those (all without). */
static bool want(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (sh("qemu-img --version >/dev/null 2>&1 && "
           "qemu-io --version >/dev/null 2>&1") != 0) {
        printf("test_mirror: qemu-img/qemu-io not found, skipped\n");
        return 77;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    model = malloc(SIZE);
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "seed %u\n", seed);
    if (want(argc, argv, "tracking"))
        test_tracking_order();
    if (want(argc, argv, "full"))
        test_mirror_complete("qcow2", "qcow2", false, false);
    if (want(argc, argv, "full-raw"))
        test_mirror_complete("raw", "raw", false, false);
    if (want(argc, argv, "top"))
        test_mirror_complete("qcow2", "qcow2", true, false);
    if (want(argc, argv, "existing"))
        test_mirror_complete("qcow2", "raw", false, true);
    if (want(argc, argv, "refused"))
        test_mirror_top_raw_refused();
    for (int i = 0; i < 3 && want(argc, argv, "cancel"); i++)
        test_mirror_cancel(seed + (unsigned)i);
    if (want(argc, argv, "pause"))
        test_mirror_pause();
    if (want(argc, argv, "enospc"))
        test_mirror_target_fails(ENOSPC, false);
    if (want(argc, argv, "eio"))
        test_mirror_target_fails(EIO, true);
    if (want(argc, argv, "commit"))
        test_commit_complete("qcow2", SIZE);
    if (want(argc, argv, "commit-grow"))
        test_commit_complete("qcow2", 16 * MiB);
    if (want(argc, argv, "commit-raw"))
        test_commit_complete("raw", SIZE);
    if (want(argc, argv, "commit-cancel"))
        test_commit_cancel(seed);
    free(model);
    sh("rm -rf %s", dir);
    return check_summary("test_mirror");
}
