/* Unit tests: committing an intermediate layer (block/commit.c) on a fake
 * LUN (job_harness.h) whose top is written by threads the whole time:
 *  - mid into base (qcow2 and raw bases): completed; the LUN's chain is
 *    top -> base, the LUN reads what the model says, qemu-img check is
 *    clean on every image, qemu-img info --backing-chain shows two images
 *    and qemu-img compare of top with the model is identical;
 *  - a layer whose parent is itself read-only (base <- a <- b <- top,
 *    commit a): b is made writable for the backing rewrite and given back
 *    read-only;
 *  - pause/resume and cancel at random points: the chain is unchanged
 *    (or, if the job won the race, committed), base read-only again,
 *    content and check as above;
 *  - ENOSPC and EIO from base's file (host_sys fault injection): the job
 *    fails with the error, the chain is unchanged, base read-only, check
 *    clean;
 *  - refused: the LUN's top (active commit), a top not in the chain, a
 *    base not below top.
 * Needs qemu-img and jq (exit 77 = skipped without).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/host.h"
#include "block/job.h"
#include "job_harness.h"
#include "tests/qcow2/qtest.h"

#define MiB (1024ull * 1024)

static char dir[4096];

/* ---- faults from base's file ---- */

static char fault_path[PATH_MAX]; /* the file that fails ("" none) */
static _Atomic int fault_errno, fault_count; /* fail this many writes */

static bool is_fault_file(int fd)
{
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return false;
    path[n] = 0;
    return fault_path[0] && strcmp(path, fault_path) == 0;
}

static bool take_fault(int fd)
{
    if (atomic_load(&fault_count) <= 0 || !is_fault_file(fd))
        return false;
    return atomic_fetch_sub(&fault_count, 1) > 0;
}

static ssize_t fault_pwritev(int fd, const struct iovec *iov, int cnt,
                             off_t off)
{
    if (take_fault(fd)) {
        errno = atomic_load(&fault_errno);
        return -1;
    }
    return pwritev(fd, iov, cnt, off);
}

static int fault_fallocate(int fd, int mode, off_t off, off_t len)
{
    if (take_fault(fd)) {
        errno = atomic_load(&fault_errno);
        return -1;
    }
    return fallocate(fd, mode, off, len);
}

/* ---- chains ---- */

/* dir/name/: base (base_fmt) <- l1.qcow2 <- ... <- l<depth-1>.qcow2, 8
 * MiB, data in every layer (some over lower data), zero clusters, holes;
 * the last is the LUN's top. */
static void make_chain(const char *name, const char *base_fmt, int depth)
{
    qt_must("cd '%s' && mkdir %s && cd %s && qemu-img create -q -f %s base "
            "8M && qemu-io -f %s -c 'write -P 0x10 0 3M' base",
            dir, name, name, base_fmt, base_fmt);
    for (int i = 1; i < depth; i++) {
        char below[32];
        snprintf(below, sizeof(below), i == 1 ? "base" : "l%d.qcow2", i - 1);
        qt_must("cd '%s/%s' && qemu-img create -q -f qcow2 -b %s -F %s "
                "l%d.qcow2 && qemu-io -f qcow2 -c 'write -P 0x%x %dM 1536k' "
                "-c 'write -z %dk 256k' l%d.qcow2",
                dir, name, below, i == 1 ? base_fmt : "qcow2", i,
                0x20 + i, i, 512 * i, i);
    }
}

static void path_of(char *out, size_t len, const char *name, const char *f)
{
    snprintf(out, len, "%s/%s/%s", dir, name, f);
}

/* The LUN's chain, by file name from the top: "l3.qcow2 l2.qcow2 base". */
static void chain_names(struct job_harness *h, char *out, size_t len)
{
    out[0] = 0;
    for (struct image *n = h->top; n; n = image_backing_child(n)) {
        n = image_skip_filters(n);
        const char *slash = strrchr(n->filename, '/');
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? " " : "",
                 slash ? slash + 1 : n->filename);
    }
}

/* Every node below the LUN's top is read-only. */
static bool below_top_read_only(struct job_harness *h)
{
    for (struct image *n = image_backing_child(h->top); n;
         n = image_backing_child(n))
        if (!image_skip_filters(n)->info.read_only)
            return false;
    return true;
}

/* After the LUN closed: qemu-img check clean on each qcow2 image of
 * files (space separated), the top's chain as long as expected, and the
 * top reads as the model. */
static void qemu_checks(const char *name, const char *top, int chain_len,
                        const char *qcow2s)
{
    char out[8192], files[256];
    snprintf(files, sizeof(files), "%s", qcow2s);
    for (char *s = strtok(files, " "); s; s = strtok(NULL, " ")) {
        char p[4300];
        path_of(p, sizeof(p), name, s);
        QT_CHECK(qt_check(p) == 0);
    }
    QT_CHECK(qt_run_out(out, sizeof(out), "cd '%s/%s' && qemu-img info "
                        "--backing-chain --output=json %s | jq length",
                        dir, name, top) == 0);
    if (atoi(out) != chain_len)
        QT_FAIL("%s: qemu-img sees a chain of %s, expected %d", name, out,
                chain_len);
    QT_CHECK(qt_run_out(out, sizeof(out), "cd '%s/%s' && qemu-img compare "
                        "-F raw %s model.raw", dir, name, top) == 0);
}

static int start_commit(struct job_harness *h, const char *id,
                        const char *name, const char *top, const char *base,
                        uint64_t speed, char *err, size_t errlen)
{
    char tp[4300], bp[4300];
    path_of(tp, sizeof(tp), name, top);
    if (base)
        path_of(bp, sizeof(bp), name, base);
    struct job_params p = { .type = "commit", .id = id, .speed = speed,
                            .top = tp, .base = base ? bp : NULL };
    err[0] = 0;
    return job_start(&p, &h->owner, err, errlen);
}

/* Commit `top` (below the LUN's top) into base with writers running. */
static void commit_ok(const char *name, const char *base_fmt, int depth,
                      const char *top, const char *base, const char *want)
{
    make_chain(name, base_fmt, depth);
    char lun_top[4300], ltop[32];
    snprintf(ltop, sizeof(ltop), "l%d.qcow2", depth - 1);
    path_of(lun_top, sizeof(lun_top), name, ltop);
    struct job_harness h;
    if (jh_open(&h, name, lun_top, "qcow2", dir) < 0)
        return;
    jh_writers_start(&h, 2, qt_seed());
    char err[512];
    QT_CHECK(start_commit(&h, name, name, top, base, 0, err,
                          sizeof(err)) == 0);
    struct job_info info;
    if (jh_wait(&h, name, &info, 60)) {
        if (info.result != JOB_RESULT_COMPLETED)
            QT_FAIL("%s: %s: %s", name, job_result_name(info.result),
                    info.error);
        QT_CHECK(info.done == info.total && info.total > 0);
    }
    unsigned writes = jh_writers_stop(&h);
    QT_CHECK(job_dismiss(name, err, sizeof(err)) == 0);
    char chain[512];
    chain_names(&h, chain, sizeof(chain));
    if (strcmp(chain, want) != 0)
        QT_FAIL("%s: chain '%s', expected '%s'", name, chain, want);
    QT_CHECK(below_top_read_only(&h));
    QT_CHECK(jh_check_content(&h, name));
    char mp[4300];
    path_of(mp, sizeof(mp), name, "model.raw");
    QT_CHECK(jh_save_model(&h, mp));
    QT_CHECK(jh_close(&h) == 0);
    printf("%s: committed %s (%llu bytes) under %u guest writes: %s\n", name,
           top, (unsigned long long)info.total, writes, chain);
    int len = 1;
    for (const char *c = want; *c; c++)
        len += *c == ' ';
    char qcow2s[256];
    snprintf(qcow2s, sizeof(qcow2s), "%s%s", want,
             strcmp(base_fmt, "raw") == 0 ? "" : "");
    /* raw bases are not qemu-img-checked. */
    if (strcmp(base_fmt, "raw") == 0) {
        char *b = strstr(qcow2s, " base");
        if (b)
            *b = 0;
    }
    qemu_checks(name, ltop, len, qcow2s);
}

/* Pause, resume and cancel at random points of a slow commit. */
static void cancel_at_random(int round)
{
    char name[32];
    snprintf(name, sizeof(name), "cancel%d", round);
    make_chain(name, "qcow2", 3);
    char lun_top[4300];
    path_of(lun_top, sizeof(lun_top), name, "l2.qcow2");
    struct job_harness h;
    if (jh_open(&h, name, lun_top, "qcow2", dir) < 0)
        return;
    struct qt_rng rng;
    qt_rng_seed(&rng, qt_seed() + (uint64_t)round);
    jh_writers_start(&h, 2, qt_seed() + 100 + (uint64_t)round);
    char err[512];
    /* 2 MiB/s: the 1.5 MiB layer takes about a second. */
    QT_CHECK(start_commit(&h, name, name, "l1.qcow2", NULL, 2 * MiB, err,
                          sizeof(err)) == 0);
    usleep((useconds_t)qt_below(&rng, 300000));
    if (job_pause(name, err, sizeof(err)) == 0) {
        usleep((useconds_t)qt_below(&rng, 200000));
        QT_CHECK(job_resume(name, err, sizeof(err)) == 0 ||
                 jh_status(&h, name) == JOB_CONCLUDED);
    }
    usleep((useconds_t)qt_below(&rng, 500000));
    int cret = job_cancel(name, err, sizeof(err));
    struct job_info info;
    bool done = jh_wait(&h, name, &info, 60);
    jh_writers_stop(&h);
    QT_CHECK(job_dismiss(name, err, sizeof(err)) == 0);
    char chain[512];
    chain_names(&h, chain, sizeof(chain));
    bool committed = done && info.result == JOB_RESULT_COMPLETED;
    QT_CHECK(done && (info.result == JOB_RESULT_CANCELLED ||
                      (committed && cret < 0)));
    const char *want = committed ? "l2.qcow2 base" : "l2.qcow2 l1.qcow2 base";
    if (strcmp(chain, want) != 0)
        QT_FAIL("%s: chain '%s', expected '%s'", name, chain, want);
    QT_CHECK(below_top_read_only(&h));
    QT_CHECK(jh_check_content(&h, name));
    char mp[4300];
    path_of(mp, sizeof(mp), name, "model.raw");
    QT_CHECK(jh_save_model(&h, mp));
    QT_CHECK(jh_close(&h) == 0);
    printf("%s: %s after %llu of %llu bytes\n", name,
           job_result_name(info.result), (unsigned long long)info.done,
           (unsigned long long)info.total);
    qemu_checks(name, "l2.qcow2", committed ? 2 : 3,
                committed ? "l2.qcow2 base" : "l2.qcow2 l1.qcow2 base");
}

/* ENOSPC or EIO from base's file: the job fails, nothing changes. */
static void base_fails(int e)
{
    char name[32];
    snprintf(name, sizeof(name), "fault%d", e);
    make_chain(name, "qcow2", 3);
    char lun_top[4300], bp[4300];
    path_of(lun_top, sizeof(lun_top), name, "l2.qcow2");
    path_of(bp, sizeof(bp), name, "base");
    struct job_harness h;
    if (jh_open(&h, name, lun_top, "qcow2", dir) < 0)
        return;
    if (!realpath(bp, fault_path))
        QT_FAIL("realpath %s", bp);
    atomic_store(&fault_errno, e);
    atomic_store(&fault_count, 1);
    jh_writers_start(&h, 2, qt_seed());
    char err[512];
    QT_CHECK(start_commit(&h, name, name, "l1.qcow2", NULL, 0, err,
                          sizeof(err)) == 0);
    struct job_info info;
    if (jh_wait(&h, name, &info, 60)) {
        QT_CHECK(info.result == JOB_RESULT_FAILED);
        if (!strstr(info.error, strerror(e)))
            QT_FAIL("%s: error '%s' does not say '%s'", name, info.error,
                    strerror(e));
    }
    jh_writers_stop(&h);
    atomic_store(&fault_count, 0);
    fault_path[0] = 0;
    QT_CHECK(job_dismiss(name, err, sizeof(err)) == 0);
    char chain[512];
    chain_names(&h, chain, sizeof(chain));
    QT_CHECK(strcmp(chain, "l2.qcow2 l1.qcow2 base") == 0);
    QT_CHECK(below_top_read_only(&h));
    QT_CHECK(jh_check_content(&h, name));
    char mp[4300];
    path_of(mp, sizeof(mp), name, "model.raw");
    QT_CHECK(jh_save_model(&h, mp));
    QT_CHECK(jh_close(&h) == 0);
    printf("%s: failed as it should: %s\n", name, info.error);
    qemu_checks(name, "l2.qcow2", 3, "l2.qcow2 l1.qcow2 base");
}

static void refusals(void)
{
    make_chain("refuse", "qcow2", 3);
    char lun_top[4300];
    path_of(lun_top, sizeof(lun_top), "refuse", "l2.qcow2");
    struct job_harness h;
    if (jh_open(&h, "refuse", lun_top, "qcow2", dir) < 0)
        return;
    char err[512];
    QT_CHECK(start_commit(&h, "r1", "refuse", "l2.qcow2", NULL, 0, err,
                          sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "mirror engine") != NULL);
    QT_CHECK(start_commit(&h, "r2", "refuse", "nothing.qcow2", NULL, 0, err,
                          sizeof(err)) == -ENOENT);
    QT_CHECK(start_commit(&h, "r3", "refuse", "l1.qcow2", "l2.qcow2", 0, err,
                          sizeof(err)) == -EINVAL);
    QT_CHECK(strstr(err, "not below") != NULL);
    QT_CHECK(start_commit(&h, "r4", "refuse", "base", NULL, 0, err,
                          sizeof(err)) == -EINVAL);
    struct job_info *list;
    size_t n;
    QT_CHECK(job_list("refuse", &list, &n) == 0 && n == 0);
    free(list);
    char chain[512];
    chain_names(&h, chain, sizeof(chain));
    QT_CHECK(strcmp(chain, "l2.qcow2 l1.qcow2 base") == 0);
    QT_CHECK(below_top_read_only(&h));
    QT_CHECK(jh_close(&h) == 0);
}

int main(void)
{
    qt_require_qemu();
    if (qt_run("command -v jq") != 0) {
        printf("SKIP: jq not installed\n");
        return SKIP_CODE;
    }
    host_sys.pwritev = fault_pwritev;
    host_sys.fallocate = fault_fallocate;
    qt_mkdtemp(dir, sizeof(dir), "qlun-test-commit");
    refusals();
    commit_ok("mid-qcow2", "qcow2", 3, "l1.qcow2", NULL, "l2.qcow2 base");
    commit_ok("mid-raw", "raw", 3, "l1.qcow2", "base", "l2.qcow2 base");
    /* l1's parent l2 is an intermediate (read-only) node. */
    commit_ok("deep", "qcow2", 4, "l1.qcow2", NULL,
              "l3.qcow2 l2.qcow2 base");
    commit_ok("deep-two", "qcow2", 4, "l2.qcow2", "base", "l3.qcow2 base");
    for (int i = 0; i < 4; i++)
        cancel_at_random(i);
    base_fails(ENOSPC);
    base_fails(EIO);
    qt_rmtree(dir);
    return qt_summary("test_commit");
}
