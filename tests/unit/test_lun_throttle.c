/* Unit tests: a LUN's throttle (handler/lun_throttle.c): the filter put
 * in its slot from the cfgstring, commands through scsi_lun_exec held to
 * the limit, and the live change: limits, the filter put in and taken
 * out, groups, the new cfgstring stored outside control_lock, and a
 * drain that does not wait for the throttled queue. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/throttle.h"
#include "handler/device.h"

#include "check.h"
#include "scsi_harness.h"

static char dir[] = "/tmp/qlun-test-lun-throttle-XXXXXX";
static char err[1024];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_lun(const char *name, const char *opts, struct qlun_dev **d)
{
    char img[256], cfg[512];
    snprintf(img, sizeof(img), "%s/%s.img", dir, name);
    int fd = open(img, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, 8 << 20) < 0)
        abort();
    close(fd);
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off%s", img, opts);
    struct qlun_dev_params p = {
        .cfgstring = cfg, .block_size = 512, .num_blocks = 16384,
        .max_xfer_blocks = 1024, .name = name,
    };
    err[0] = '\0';
    return qlun_dev_open(&p, d, err, sizeof(err));
}

static int read10(struct qlun_dev *d, uint32_t lba)
{
    uint8_t cdb[10] = { 0x28 }, buf[4096];
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, 8);
    return run(d->lun, cdb, sizeof(cdb), buf, sizeof(buf));
}

static struct image *throttle_node(struct qlun_dev *d)
{
    return d->filters[QLUN_FILTER_THROTTLE];
}

/* The persist hook: what it was given, and whether control_lock was
 * free (it must be: LIO hands the write back to our reconfig). */
static char persisted[QLUN_CFGSTRING_MAX + 1];
static bool persisted_unlocked;

static int record_persist(void *opaque, const char *attr, const char *value,
                          char *e, size_t elen)
{
    struct qlun_dev *d = opaque;
    (void)e, (void)elen;
    CHECK(strcmp(attr, "dev_config") == 0);
    snprintf(persisted, sizeof(persisted), "%s", value);
    persisted_unlocked = pthread_mutex_trylock(&d->control_lock) == 0;
    if (persisted_unlocked)
        pthread_mutex_unlock(&d->control_lock);
    return 0;
}

static void test_open(void)
{
    struct qlun_dev *d;
    CHECK_EQ(open_lun("plain", "", &d), 0);
    CHECK(throttle_node(d) == NULL);
    qlun_dev_close(d);

    CHECK_EQ(open_lun("limited", ";iops=100", &d), 0);
    CHECK(throttle_node(d) != NULL && qlun_dev_served(d) == throttle_node(d));
    /* Commands go through it: 60 reads at 100/s take over half a second
     * (10 pass in the bucket's room). */
    double t0 = now_s();
    for (int i = 0; i < 60; i++)
        CHECK_EQ(read10(d, (uint32_t)i * 8), SCSI_STATUS_GOOD);
    double dt = now_s() - t0;
    printf("60 reads at iops=100 through the LUN: %.2f s\n", dt);
    CHECK(dt > 0.45);
    struct throttle_stats s;
    throttle_node_stats(throttle_node(d), &s);
    CHECK_EQ(s.requests, 60);
    CHECK(s.delayed >= 45);
    qlun_dev_close(d);

    CHECK(open_lun("bad", ";iops=100;iops_rd=5", &d) < 0 &&
          strstr(err, "bad throttle options"));
}

static void test_set(void)
{
    struct qlun_dev *d;
    bool kept;
    CHECK_EQ(open_lun("live", ";cache=none", &d), 0);
    d->persist = record_persist;
    d->persist_opaque = d;
    struct throttle_limits l = { .iops = { 0, 300 }, .bps = { 1u << 20 } };
    CHECK_EQ(qlun_dev_set_throttle(d, &l, NULL, &kept, err, sizeof(err)), 0);
    CHECK(kept && throttle_node(d) && qlun_dev_served(d) == throttle_node(d));
    CHECK(strstr(d->cfgstring, ";cache=none;iops_rd=300;bps=1048576") != NULL);
    CHECK(strcmp(persisted, d->cfgstring) == 0 && persisted_unlocked);

    /* Into a group, without limits: the group's (none yet) are taken. */
    CHECK_EQ(qlun_dev_set_throttle(d, NULL, "g", &kept, err, sizeof(err)), 0);
    struct throttle_limits got;
    char group[64];
    throttle_node_get(throttle_node(d), &got, group, sizeof(group));
    CHECK(strcmp(group, "g") == 0 && !throttle_limits_any(&got));
    CHECK(strstr(d->cfgstring, "throttle_group=g") != NULL &&
          !strstr(d->cfgstring, ";iops"));

    /* A second LUN opened into the group after its limits were set
     * shares them. */
    l = (struct throttle_limits){ .iops = { 700 } };
    CHECK_EQ(qlun_dev_set_throttle(d, &l, "g", &kept, err, sizeof(err)), 0);
    struct qlun_dev *d2;
    CHECK_EQ(open_lun("member", ";throttle_group=g", &d2), 0);
    throttle_node_get(throttle_node(d2), &got, group, sizeof(group));
    CHECK_EQ(got.iops[THROTTLE_TOTAL], 700);
    qlun_dev_close(d2);

    /* Invalid: nothing changes. */
    struct throttle_limits bad = { .iops = { 10, 10 } };
    char before[QLUN_CFGSTRING_MAX + 1];
    snprintf(before, sizeof(before), "%s", d->cfgstring);
    CHECK_EQ(qlun_dev_set_throttle(d, &bad, NULL, &kept, err, sizeof(err)),
             -EINVAL);
    CHECK_EQ(qlun_dev_set_throttle(d, &l, "no/slash", &kept, err,
                                   sizeof(err)), -EINVAL);
    CHECK(strcmp(before, d->cfgstring) == 0);

    /* No limit and no group: the filter is taken out. */
    struct throttle_limits none = { 0 };
    CHECK_EQ(qlun_dev_set_throttle(d, &none, NULL, &kept, err, sizeof(err)),
             0);
    CHECK(throttle_node(d) == NULL && qlun_dev_served(d) == d->img);
    CHECK(!strstr(d->cfgstring, ";iops") &&
          !strstr(d->cfgstring, ";throttle_group"));
    CHECK_EQ(read10(d, 0), SCSI_STATUS_GOOD);
    qlun_dev_close(d);
}

/* A cfgstring that cannot hold the limits: they apply, the reply says
 * they are not kept. */
static void test_too_long(void)
{
    struct qlun_dev *d;
    char opts[200];
    snprintf(opts, sizeof(opts), ";serial=%s", "s234567890123456789012345678901234567890");
    CHECK_EQ(open_lun("long-name-to-fill-the-cfgstring-up-to-the-limit-of-"
                      "two-hundred-and-fifty-five-bytes-xxxxxxxxxxxxxxxxxx",
                      opts, &d), 0);
    bool kept = true;
    struct throttle_limits l = { .iops = { 0, 1000000, 1000000 },
                                 .bps = { 0, 1000000000, 1000000000 },
                                 .iops_max = { 0, 2000000, 2000000 },
                                 .bps_max = { 0, 2000000000, 2000000000 },
                                 .burst_seconds = 100 };
    err[0] = 0;
    CHECK_EQ(qlun_dev_set_throttle(d, &l, "a-long-throttle-group-name-here",
                                   &kept, err, sizeof(err)), 0);
    CHECK(!kept && strstr(err, "not kept"));
    CHECK(throttle_node(d) != NULL);
    qlun_dev_close(d);
}

struct reader {
    struct qlun_dev *d;
    _Atomic bool *stop;
    _Atomic int done;
};

static void *reader_run(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(r->stop)) {
        CHECK_EQ(read10(r->d, 0), SCSI_STATUS_GOOD);
        atomic_fetch_add(&r->done, 1);
    }
    return NULL;
}

/* A group change drains the LUN; its throttled waiters are let through
 * first, so the drain does not wait for them at the old rate (8 waiting
 * at 2/s would hold it 4 s). */
static void test_drain_releases(void)
{
    struct qlun_dev *d;
    CHECK_EQ(open_lun("drain", ";iops=2", &d), 0);
    _Atomic bool stop = false;
    struct reader r = { .d = d, .stop = &stop };
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, reader_run, &r);
    struct timespec ts = { 0, 500000000 };
    nanosleep(&ts, NULL);       /* all 8 queued behind the limit */
    bool kept;
    double t0 = now_s();
    CHECK_EQ(qlun_dev_set_throttle(d, NULL, "other", &kept, err,
                                   sizeof(err)), 0);
    double dt = now_s() - t0;
    printf("group change with 8 commands waiting at 2/s: %.3f s\n", dt);
    CHECK(dt < 1.0);
    /* Taken out, likewise. */
    struct throttle_limits l = { .iops = { 2 } };
    CHECK_EQ(qlun_dev_set_throttle(d, &l, NULL, &kept, err, sizeof(err)), 0);
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    struct throttle_limits none = { 0 };
    t0 = now_s();
    CHECK_EQ(qlun_dev_set_throttle(d, &none, NULL, &kept, err, sizeof(err)),
             0);
    dt = now_s() - t0;
    printf("removal with commands waiting at 2/s: %.3f s\n", dt);
    CHECK(dt < 1.0);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    qlun_dev_close(d);
}

int main(void)
{
    alarm(120);
    if (!mkdtemp(dir))
        return 1;
    test_open();
    test_set();
    test_too_long();
    test_drain_releases();
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    return check_summary("test_lun_throttle");
}
