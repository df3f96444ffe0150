/* Unit tests: the block job commands of the management socket
 * (handler/ctl_jobs.c) and the LUN side of jobs (handler/jobs.c), with a
 * real LUN on a temporary raw image and a test driver (no real driver is
 * on main yet).  Every command's argument checks and error classes; one
 * job per LUN; resize and snapshots refused while a job runs; a job's
 * whole life through the commands (start, list, speed, pause, resume,
 * cancel, dismiss); closing a LUN with a running job cancels it. */
/* first: common/util.h's MIN and MAX give way to GLib's */
#include "scsi_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "handler/ctl-internal.h"
#include "handler/registry.h"
#include "ctl_client.h"

static char dir[] = "/tmp/qlun-test-ctl-jobs-XXXXXX";
static char raw_path[256];

/* ---- a driver that copies 64 KiB chunks until cancelled ---- */

static _Atomic int finished, destroyed;

static int t_start(struct job *job, const struct job_params *p, char *err,
                   size_t errlen)
{
    (void)p;
    (void)err;
    (void)errlen;
    job_set_total(job, 1ull << 40);
    return 0;
}

static int t_run(struct job *job)
{
    for (;;) {
        int r = job_yield(job, 65536);
        if (r < 0)
            return r;
        usleep(1000);
    }
}

static int t_finish(struct job *job, int run_ret)
{
    (void)job;
    (void)run_ret;
    finished++;
    return 0;
}

static void t_destroy(struct job *job)
{
    (void)job;
    destroyed++;
}

static const struct job_driver test_driver = {
    .type = "stream", .instance_size = sizeof(struct job),
    .start = t_start, .run = t_run, .finish = t_finish,
    .destroy = t_destroy,
};

/* A driver that pivots the LUN onto pivot_path (raw) in its finish, as
 * a mirror's complete does. */
static char pivot_path[256];

static int p_run(struct job *job)
{
    return job_yield(job, 0) < 0 ? -ECANCELED : 0;
}

static int p_finish(struct job *job, int run_ret)
{
    struct job_owner *o = &job->owner;
    struct image_open_opts opts;
    struct image *img, *old;
    char err[256];
    if (run_ret < 0)
        return 0;
    o->open_opts(o->opaque, &opts);
    opts.path = pivot_path;
    opts.format = "raw";
    if (image_open(&opts, &img, err, sizeof(err)) < 0) {
        job_set_error(job, "%s", err);
        return -EIO;
    }
    o->drain_begin(o->opaque);
    old = o->switch_top(o->opaque, img);
    o->drain_end(o->opaque);
    image_close(old);
    return 0;
}

static const struct job_driver pivot_driver = {
    .type = "mirror", .instance_size = sizeof(struct job),
    .start = t_start, .run = p_run, .finish = p_finish,
};

/* d->persist: records what it stored, and whether control_lock was free
 * (LIO hands the write back to the handler's reconfig, which takes it). */
static char persisted[512];
static bool persisted_unlocked;

static int record_persist(void *opaque, const char *attr, const char *value,
                          char *err, size_t errlen)
{
    struct qlun_dev *d = opaque;
    (void)err;
    (void)errlen;
    persisted_unlocked = pthread_mutex_trylock(&d->control_lock) == 0;
    if (persisted_unlocked)
        pthread_mutex_unlock(&d->control_lock);
    snprintf(persisted, sizeof(persisted), "%s=%s", attr, value);
    return 0;
}

/* ---- helpers ---- */

static struct qlun_dev *open_lun(void)
{
    char cfg[300];
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;serial=jobs1;stats=off",
             raw_path);
    return ctl_test_open_lun(cfg, "jobs-lun", 2048);
}

static bool refused(const char *req, const char *class, const char *words)
{
    char desc[1024];
    const char *c = error_of(req, desc, sizeof(desc));
    bool ok = strcmp(c, class) == 0 && strstr(desc, words);
    if (!ok)
        fprintf(stderr, "  %s\n  -> %s: %s (wanted %s with '%s')\n", req, c,
                desc, class, words);
    return ok;
}

/* The job's member name from query-jobs ("" if not listed). */
static const char *job_member(const char *id, const char *name)
{
    static char v[256];
    g_autoptr(JsonObject) r = exec_obj("{\"execute\":\"query-jobs\"}");
    JsonArray *a = json_object_get_array_member(r, "return");
    v[0] = 0;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        if (strcmp(json_object_get_string_member(j, "id"), id) != 0)
            continue;
        JsonNode *n = json_object_get_member(j, name);
        if (!n || JSON_NODE_HOLDS_NULL(n))
            snprintf(v, sizeof(v), "null");
        else if (json_node_get_value_type(n) == G_TYPE_STRING)
            snprintf(v, sizeof(v), "%s", json_node_get_string(n));
        else
            snprintf(v, sizeof(v), "%" G_GINT64_FORMAT, json_node_get_int(n));
    }
    return v;
}

/* Wait (up to 5 s) until the job's status is want. */
static bool wait_status(const char *id, const char *want)
{
    for (int i = 0; i < 500; i++) {
        if (strcmp(job_member(id, "status"), want) == 0)
            return true;
        usleep(10000);
    }
    fprintf(stderr, "  job %s: status %s, wanted %s\n", id,
            job_member(id, "status"), want);
    return false;
}

static int start_test_job(struct qlun_dev *d, const char *id, char *err,
                          size_t errlen)
{
    struct job_params p = { .type = "stream", .id = id };
    char got[64];
    return qlun_dev_job_start_with_driver(d, &test_driver, &p, got, err,
                                          errlen);
}

/* ---- tests ---- */

#define START "{\"execute\":\"job-start\",\"arguments\":{\"lun\":\"jobs1\","

static void test_start_arguments(void)
{
    CHECK(refused(START "\"type\":\"backup\"}}", CTL_ERR_INVALID_PARAMETER,
                  "known: stream, commit, mirror"));
    CHECK(refused("{\"execute\":\"job-start\",\"arguments\":{\"lun\":\"x\"}}",
                  CTL_ERR_INVALID_PARAMETER, "missing argument 'type'"));
    CHECK(refused(START "\"type\":\"mirror\",\"target\":\"/t\","
                  "\"sync\":\"none\"}}", CTL_ERR_INVALID_PARAMETER,
                  "'sync' must be full or top"));
    CHECK(refused(START "\"type\":\"mirror\"}}", CTL_ERR_INVALID_PARAMETER,
                  "needs 'target'"));
    CHECK(refused(START "\"type\":\"mirror\",\"target\":\"t.img\"}}",
                  CTL_ERR_INVALID_PARAMETER, "absolute path"));
    CHECK(refused(START "\"type\":\"mirror\",\"target\":\"/t\","
                  "\"format\":\"vmdk\"}}", CTL_ERR_INVALID_PARAMETER,
                  "'format' must be one of"));
    CHECK(refused(START "\"type\":\"mirror\",\"target\":\"/t\","
                  "\"granularity\":6000}}", CTL_ERR_INVALID_PARAMETER,
                  "power of two"));
    CHECK(refused(START "\"type\":\"mirror\",\"target\":\"/t\","
                  "\"granularity\":2048}}", CTL_ERR_INVALID_PARAMETER,
                  "power of two"));
    CHECK(refused(START "\"type\":\"stream\",\"target\":\"/t\"}}",
                  CTL_ERR_INVALID_PARAMETER, "a stream job takes no 'target'"));
    CHECK(refused(START "\"type\":\"commit\",\"sync\":\"full\"}}",
                  CTL_ERR_INVALID_PARAMETER, "a commit job takes no 'sync'"));
    CHECK(refused(START "\"type\":\"stream\",\"base\":\"b.img\"}}",
                  CTL_ERR_INVALID_PARAMETER, "absolute path"));
    CHECK(refused(START "\"type\":\"stream\",\"speed\":-1}}",
                  CTL_ERR_INVALID_PARAMETER, "'speed' must be an integer"));
    CHECK(refused(START "\"type\":\"stream\",\"id\":\"9lives\"}}",
                  CTL_ERR_INVALID_PARAMETER, "start with a letter"));
    CHECK(refused(START "\"type\":\"stream\",\"id\":\"a b\"}}",
                  CTL_ERR_INVALID_PARAMETER, "start with a letter"));
    CHECK(refused(START "\"type\":\"stream\",\"existing\":1}}",
                  CTL_ERR_INVALID_PARAMETER, "argument 'existing'"));
    CHECK(refused("{\"execute\":\"job-start\",\"arguments\":{\"lun\":"
                  "\"nosuch\",\"type\":\"stream\"}}",
                  CTL_ERR_DEVICE_NOT_FOUND, "no LUN 'nosuch'"));
}

static void test_control_arguments(void)
{
    static const char *const cmds[] = {
        "job-pause", "job-resume", "job-cancel", "job-complete",
        "job-dismiss",
    };
    char req[256];
    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        snprintf(req, sizeof(req), "{\"execute\":\"%s\",\"arguments\":"
                 "{\"id\":\"nosuch\"}}", cmds[i]);
        CHECK(refused(req, CTL_ERR_DEVICE_NOT_ACTIVE, "nosuch"));
        snprintf(req, sizeof(req), "{\"execute\":\"%s\"}", cmds[i]);
        CHECK(refused(req, CTL_ERR_INVALID_PARAMETER, "missing argument 'id'"));
    }
    CHECK(refused("{\"execute\":\"job-set-speed\",\"arguments\":{\"id\":"
                  "\"nosuch\",\"speed\":5}}", CTL_ERR_DEVICE_NOT_ACTIVE,
                  "nosuch"));
    CHECK(refused("{\"execute\":\"job-set-speed\",\"arguments\":{\"id\":"
                  "\"x\"}}", CTL_ERR_INVALID_PARAMETER,
                  "missing argument 'speed'"));
    CHECK(refused("{\"execute\":\"job-set-speed\",\"arguments\":{\"id\":"
                  "\"x\",\"speed\":\"fast\"}}", CTL_ERR_INVALID_PARAMETER,
                  "'speed' must be an integer"));
    CHECK(refused("{\"execute\":\"query-jobs\",\"arguments\":{\"lun\":"
                  "\"nosuch\"}}", CTL_ERR_DEVICE_NOT_FOUND, "nosuch"));
}

/* One job per LUN, and the LUN refuses resize and snapshots meanwhile. */
static void test_one_job_and_refusals(struct qlun_dev *d)
{
    char err[512];
    CHECK_EQ(start_test_job(d, "j1", err, sizeof(err)), 0);
    CHECK_EQ(start_test_job(d, "j2", err, sizeof(err)), -EBUSY);
    CHECK(strstr(err, "job j1 is running on this LUN") != NULL);
    CHECK(refused(START "\"type\":\"stream\"}}", CTL_ERR_GENERIC,
                  "job j1 is running on this LUN"));
    CHECK_EQ(qlun_dev_resize(d, 4096 * 512, false, err, sizeof(err)), -EBUSY);
    CHECK(strstr(err, "job j1") != NULL);
    CHECK_EQ(qlun_dev_reconfig_size(d, 4096 * 512, err, sizeof(err)), -EBUSY);
    CHECK(refused("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":"
                  "\"jobs1\",\"size\":2097152}}", CTL_ERR_GENERIC,
                  "job j1 is running"));
    CHECK_EQ(qlun_dev_snapshot_internal(d, true, "s1", err, sizeof(err)),
             -EBUSY);
    char ov[300];
    snprintf(ov, sizeof(ov), "%s/ov.qcow2", dir);
    CHECK_EQ(qlun_dev_snapshot_create(d, ov, 0, err, sizeof(err)), -EBUSY);
    CHECK(strstr(err, "job j1") != NULL);
    CHECK(access(ov, F_OK) != 0);   /* refused before making the overlay */

    /* The whole life through the commands. */
    CHECK(strcmp(job_member("j1", "type"), "stream") == 0);
    CHECK(strcmp(job_member("j1", "lun"), "jobs1") == 0);
    CHECK(strcmp(job_member("j1", "result"), "null") == 0);
    CHECK(wait_status("j1", "running"));
    g_autoptr(JsonObject) r = exec_obj(
        "{\"execute\":\"job-set-speed\",\"arguments\":{\"id\":\"j1\","
        "\"speed\":1048576}}");
    CHECK(json_object_has_member(r, "return"));
    CHECK(strcmp(job_member("j1", "speed"), "1048576") == 0);
    json_object_unref(exec_obj("{\"execute\":\"job-pause\",\"arguments\":"
                            "{\"id\":\"j1\"}}"));
    CHECK(wait_status("j1", "paused"));
    CHECK(refused("{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":"
                  "\"j1\"}}", CTL_ERR_GENERIC, "j1"));
    json_object_unref(exec_obj("{\"execute\":\"job-resume\",\"arguments\":"
                            "{\"id\":\"j1\"}}"));
    CHECK(wait_status("j1", "running"));
    /* Copying at about 1 MiB/s: the runner's rate shows it once a
     * progress interval has passed. */
    usleep(1500000);
    uint64_t rate = strtoull(job_member("j1", "rate"), NULL, 10);
    CHECK(rate > 0 && rate <= 4 * 1048576);
    CHECK(strtoull(job_member("j1", "done"), NULL, 10) > 0);
    json_object_unref(exec_obj("{\"execute\":\"job-cancel\",\"arguments\":"
                            "{\"id\":\"j1\"}}"));
    CHECK(wait_status("j1", "concluded"));
    CHECK(strcmp(job_member("j1", "result"), "cancelled") == 0);
    CHECK(strcmp(job_member("j1", "rate"), "0") == 0);
    CHECK_EQ(finished, 1);
    /* Concluded: the LUN is free again, for a resize and a new job. */
    CHECK_EQ(qlun_dev_job_busy(d, err, sizeof(err)), 0);
    CHECK_EQ(qlun_dev_resize(d, 4096 * 512, false, err, sizeof(err)), 0);
    g_autoptr(JsonObject) dis = exec_obj(
        "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"j1\"}}");
    CHECK(json_object_has_member(dis, "return"));
    CHECK(job_member("j1", "status")[0] == 0);
    CHECK_EQ(destroyed, 1);
}

/* Closing the LUN cancels its job first: its finish runs (the graph is
 * put back) and it is freed, before the LUN goes. */
static void test_close_cancels(void)
{
    char err[512];
    struct qlun_dev *d = open_lun();
    CHECK_EQ(start_test_job(d, "j3", err, sizeof(err)), 0);
    CHECK(wait_status("j3", "running"));
    int before = finished;
    CHECK_EQ(qlun_dev_close(d), 0);
    CHECK_EQ(finished, before + 1);
    CHECK_EQ(destroyed, 2);
    CHECK(job_member("j3", "status")[0] == 0);
}

/* A pivot: the LUN serves the new image, and its cfgstring names it
 * (format included, serial and root kept), stored through d->persist
 * after the drain and outside control_lock. */
static void test_pivot_persists(void)
{
    char err[512], id[64], want[512];
    struct qlun_dev *d = open_lun();
    d->persist = record_persist;
    d->persist_opaque = d;
    struct job_params p = { .type = "mirror", .id = "p1" };
    CHECK_EQ(qlun_dev_job_start_with_driver(d, &pivot_driver, &p, id, err,
                                            sizeof(err)), 0);
    CHECK(wait_status("p1", "concluded"));
    CHECK(strcmp(job_member("p1", "result"), "completed") == 0);
    CHECK(strcmp(d->img->filename, pivot_path) == 0);
    snprintf(want, sizeof(want), "dev_config=qlun/%s;stats=off;format=raw;"
             "serial=jobs1;backing_root=%s", pivot_path, dir);
    CHECK(strcmp(persisted, want) == 0);
    if (strcmp(persisted, want))
        fprintf(stderr, "  persisted %s\n  wanted    %s\n", persisted, want);
    CHECK(persisted_unlocked);
    CHECK(strcmp(d->cfgstring, want + strlen("dev_config=")) == 0);
    g_free(ctl_execute("{\"execute\":\"job-dismiss\",\"arguments\":"
                       "{\"id\":\"p1\"}}"));
    CHECK_EQ(qlun_dev_close(d), 0);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    snprintf(raw_path, sizeof(raw_path), "%s/lun.raw", dir);
    int fd = open(raw_path, O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, 4 << 20) < 0)
        return 1;
    close(fd);
    snprintf(pivot_path, sizeof(pivot_path), "%s/pivot.raw", dir);
    fd = open(pivot_path, O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, 4 << 20) < 0)
        return 1;
    close(fd);
    struct qlun_dev *d = open_lun();
    test_start_arguments();
    test_control_arguments();
    test_one_job_and_refusals(d);
    qlun_dev_close(d);
    test_close_cancels();
    test_pivot_persists();
    unlink(pivot_path);
    unlink(raw_path);
    rmdir(dir);
    return check_summary("test_ctl_jobs");
}
