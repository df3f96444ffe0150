/* Unit tests: cfgstring parsing. */
#include "handler/config.h"

#include <errno.h>

#include "check.h"

static int parse(const char *s, struct qlun_config *cfg, char *err)
{
    err[0] = '\0';
    return qlun_config_parse(s, cfg, err, 256);
}

int main(void)
{
    struct qlun_config cfg;
    char err[256];

    CHECK_EQ(parse("qlun//data/a.img", &cfg, err), 0);
    CHECK(strcmp(cfg.path, "/data/a.img") == 0);
    CHECK(strcmp(cfg.format, "qcow2") == 0);   /* the default */
    CHECK(!cfg.read_only);

    CHECK_EQ(parse("qlun//data/a.img;format=raw;readonly=on;serial=abc123",
                   &cfg, err), 0);
    CHECK(strcmp(cfg.format, "raw") == 0);
    CHECK(cfg.read_only);
    CHECK(strcmp(cfg.serial, "abc123") == 0);

    CHECK_EQ(parse("qlun//a.img;backing_root=/srv/images", &cfg, err), 0);
    CHECK(strcmp(cfg.backing_root, "/srv/images") == 0);
    /* tcmu-runner's own option is accepted and left to it. */
    CHECK_EQ(parse("qlun//a.img;tcmur_cmd_time_out=30", &cfg, err), 0);
    /* A trailing separator is harmless. */
    CHECK_EQ(parse("qlun//a.img;format=raw;", &cfg, err), 0);

    /* Cache modes. */
    CHECK_EQ(parse("qlun//a.img", &cfg, err), 0);
    CHECK_EQ(cfg.cache, QLUN_CACHE_WRITEBACK);
    CHECK_EQ(parse("qlun//a.img;cache=none", &cfg, err), 0);
    CHECK_EQ(cfg.cache, QLUN_CACHE_NONE);
    CHECK_EQ(parse("qlun//a.img;cache=directsync", &cfg, err), 0);
    CHECK_EQ(cfg.cache, QLUN_CACHE_DIRECTSYNC);
    CHECK_EQ(parse("qlun//a.img;cache=writethrough", &cfg, err), 0);
    CHECK_EQ(cfg.cache, QLUN_CACHE_WRITETHROUGH);
    CHECK(parse("qlun//a.img;cache=unsafe", &cfg, err) < 0 &&
          strstr(err, "cache"));

    /* Soft threshold: a size with a suffix, or a percentage. */
    CHECK_EQ(parse("qlun//a.img;soft_threshold=10G", &cfg, err), 0);
    CHECK_EQ(cfg.soft_threshold_bytes, 10ull << 30);
    CHECK_EQ(parse("qlun//a.img;soft_threshold=4096", &cfg, err), 0);
    CHECK_EQ(cfg.soft_threshold_bytes, 4096);
    CHECK_EQ(parse("qlun//a.img;soft_threshold=80%", &cfg, err), 0);
    CHECK_EQ(cfg.soft_threshold_percent, 80);
    CHECK(parse("qlun//a.img;soft_threshold=101%", &cfg, err) < 0);
    CHECK(parse("qlun//a.img;soft_threshold=10X", &cfg, err) < 0);
    CHECK(parse("qlun//a.img;soft_threshold=-5", &cfg, err) < 0);
    CHECK(parse("qlun//a.img;soft_threshold=0", &cfg, err) < 0);
    CHECK(parse("qlun//a.img;soft_threshold=99999999999T", &cfg, err) < 0);
    /* Statistics file. */
    CHECK_EQ(parse("qlun//a.img;stats=/run/x.json", &cfg, err), 0);
    CHECK(strcmp(cfg.stats_path, "/run/x.json") == 0);
    CHECK_EQ(parse("qlun//a.img;stats=off", &cfg, err), 0);
    CHECK(parse("qlun//a.img;stats=rel.json", &cfg, err) < 0);

    /* qcow2 metadata cache sizes: a size with a suffix, 1 byte .. 1G. */
    CHECK_EQ(parse("qlun//a.img", &cfg, err), 0);
    CHECK_EQ(cfg.l2_cache_size, 0);          /* 0 = sized from the image */
    CHECK_EQ(cfg.refcount_cache_size, 0);
    CHECK_EQ(parse("qlun//a.img;l2_cache_size=8M;refcount_cache_size=256K",
                   &cfg, err), 0);
    CHECK_EQ(cfg.l2_cache_size, 8ull << 20);
    CHECK_EQ(cfg.refcount_cache_size, 256ull << 10);
    CHECK_EQ(parse("qlun//a.img;l2_cache_size=1G", &cfg, err), 0);
    CHECK_EQ(cfg.l2_cache_size, 1ull << 30);
    CHECK_EQ(parse("qlun//a.img;refcount_cache_size=65536", &cfg, err), 0);
    CHECK_EQ(cfg.refcount_cache_size, 65536);
    static const char *const bad_sizes[] = {
        "0", "0M", "garbage", "8Q", "8M8", "-1", "", "10%", "1025M", "2G",
        "1T", "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(*bad_sizes); i++) {
        char s[128];
        snprintf(s, sizeof(s), "qlun//a.img;l2_cache_size=%s", bad_sizes[i]);
        CHECK(parse(s, &cfg, err) < 0 &&
              strstr(err, "for option 'l2_cache_size'") &&
              strstr(err, "expected a size from 1 to 1G"));
        snprintf(s, sizeof(s), "qlun//a.img;refcount_cache_size=%s",
                 bad_sizes[i]);
        CHECK(parse(s, &cfg, err) < 0 &&
              strstr(err, "for option 'refcount_cache_size'"));
    }

    /* Errors name the problem. */
    CHECK(parse("qcow//a.img", &cfg, err) < 0 && strstr(err, "qlun/"));
    CHECK(parse("qlun/", &cfg, err) < 0 && strstr(err, "no image path"));
    CHECK(parse("qlun/relative.img", &cfg, err) < 0 && strstr(err, "absolute"));
    CHECK(parse("qlun//a.img;colour=blue", &cfg, err) < 0 &&
          strstr(err, "unknown option 'colour'"));
    CHECK(parse("qlun//a.img;format=vmdk", &cfg, err) < 0 &&
          strstr(err, "bad value 'vmdk' for option 'format'"));
    /* The formats offered are block/'s driver table's. */
    CHECK(strstr(err, "(expected raw, qcow2)") != NULL);
    CHECK(parse("qlun//a.img;readonly=maybe", &cfg, err) < 0 &&
          strstr(err, "readonly"));
    CHECK(parse("qlun//a.img;format", &cfg, err) < 0 &&
          strstr(err, "malformed option"));
    CHECK(parse("qlun//a.img;=raw", &cfg, err) < 0 &&
          strstr(err, "malformed option"));
    CHECK(parse("qlun//a.img;format=raw;format=qcow2", &cfg, err) < 0 &&
          strstr(err, "given twice"));
    CHECK(parse("qlun//a.img;serial=has space", &cfg, err) < 0);
    CHECK(parse("qlun//a.img;serial=0123456789012345678901234567890123456789X",
                &cfg, err) < 0);
    CHECK(parse("qlun//a.img;backing_root=rel", &cfg, err) < 0);
    CHECK(parse(NULL, &cfg, err) < 0);

    /* The cfgstring after an external snapshot: new path, format left to
     * its default (the overlay is qcow2), serial and root explicit, every
     * other option kept; it parses back to that. */
    char out[QLUN_CFGSTRING_MAX + 1];
    CHECK_EQ(qlun_config_with_top("qlun//d/a.img;format=raw;cache=none;"
                                  "serial=old;soft_threshold=80%",
                                  "/d/ov.qcow2", "s1", "/d", out,
                                  sizeof(out)), 0);
    CHECK(strcmp(out, "qlun//d/ov.qcow2;cache=none;soft_threshold=80%;"
                      "serial=s1;backing_root=/d") == 0);
    CHECK_EQ(parse(out, &cfg, err), 0);
    CHECK(strcmp(cfg.path, "/d/ov.qcow2") == 0 &&
          strcmp(cfg.format, "qcow2") == 0 && cfg.cache == QLUN_CACHE_NONE &&
          strcmp(cfg.serial, "s1") == 0 &&
          strcmp(cfg.backing_root, "/d") == 0);
    CHECK_EQ(qlun_config_with_top("qlun//a.img", "/b.qcow2", "0123abcd", "/",
                                  out, sizeof(out)), 0);
    CHECK(strcmp(out, "qlun//b.qcow2;serial=0123abcd;backing_root=/") == 0);
    /* What LIO cannot keep, or the parser could not read back. */
    char longpath[300];
    memset(longpath, 'x', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = 0;
    CHECK_EQ(qlun_config_with_top("qlun//a.img", longpath, "s", "/", out,
                                  sizeof(out)), -ENAMETOOLONG);
    CHECK_EQ(qlun_config_with_top("qlun//a.img", "/a;b", "s", "/", out,
                                  sizeof(out)), -EINVAL);
    /* Throttle limits: rates (bytes with suffixes), bursts, a group. */
    CHECK_EQ(parse("qlun//a.img", &cfg, err), 0);
    CHECK(!throttle_limits_any(&cfg.throttle) && !cfg.throttle_group[0]);
    CHECK_EQ(parse("qlun//a.img;iops=500;bps=10M;iops_max=2000;bps_max=1G;"
                   "burst_secs=4;throttle_group=db.tier-1", &cfg, err), 0);
    CHECK_EQ(cfg.throttle.iops[THROTTLE_TOTAL], 500);
    CHECK_EQ(cfg.throttle.bps[THROTTLE_TOTAL], 10ull << 20);
    CHECK_EQ(cfg.throttle.iops_max[THROTTLE_TOTAL], 2000);
    CHECK_EQ(cfg.throttle.bps_max[THROTTLE_TOTAL], 1ull << 30);
    CHECK_EQ(cfg.throttle.burst_seconds, 4);
    CHECK(strcmp(cfg.throttle_group, "db.tier-1") == 0);
    CHECK_EQ(parse("qlun//a.img;iops_rd=100;iops_wr=50;bps_rd=4096;"
                   "bps_wr=1K;iops_rd_max=200;bps_wr_max=2K", &cfg, err), 0);
    CHECK_EQ(cfg.throttle.iops[THROTTLE_READ], 100);
    CHECK_EQ(cfg.throttle.iops[THROTTLE_WRITE], 50);
    CHECK_EQ(cfg.throttle.bps[THROTTLE_READ], 4096);
    CHECK_EQ(cfg.throttle.bps[THROTTLE_WRITE], 1024);
    CHECK_EQ(cfg.throttle.iops_max[THROTTLE_READ], 200);
    CHECK_EQ(cfg.throttle.bps_max[THROTTLE_WRITE], 2048);
    CHECK_EQ(parse("qlun//a.img;iops=0", &cfg, err), 0);   /* 0 = none */
    CHECK(!throttle_limits_any(&cfg.throttle));
    /* A group alone: the LUN joins it as it is. */
    CHECK_EQ(parse("qlun//a.img;throttle_group=g", &cfg, err), 0);
    static const char *const bad_throttle[] = {
        "iops=-1", "iops=1k", "iops=", "iops=1.5", "bps=10X", "bps=-5M",
        "bps=1M1", "iops=1000000000000001", "bps=1000000000T",
        "burst_secs=0", "burst_secs=3601", "throttle_group=",
        "throttle_group=a/b", "throttle_group=123456789012345678901234567890123",
    };
    for (size_t i = 0; i < sizeof(bad_throttle) / sizeof(bad_throttle[0]);
         i++) {
        char s[128];
        snprintf(s, sizeof(s), "qlun//a.img;%s", bad_throttle[i]);
        err[0] = 0;
        CHECK(parse(s, &cfg, err) < 0 && strstr(err, "bad value"));
    }
    /* Contradictions, as QEMU refuses them. */
    static const char *const contradictions[] = {
        "iops=100;iops_rd=10", "bps=1M;bps_wr=1K", "iops_max=100",
        "iops=100;iops_max=50", "iops=100;burst_secs=2", "bps_rd_max=1M",
    };
    for (size_t i = 0;
         i < sizeof(contradictions) / sizeof(contradictions[0]); i++) {
        char s[128];
        snprintf(s, sizeof(s), "qlun//a.img;%s", contradictions[i]);
        err[0] = 0;
        CHECK(parse(s, &cfg, err) < 0 && strstr(err, "bad throttle options"));
    }

    /* The cfgstring after lun-set-throttle: every other option kept, the
     * throttle ones replaced; it parses back to the limits. */
    struct throttle_limits tl = { .iops = { 0, 300, 200 },
                                  .bps = { 50u << 20 },
                                  .bps_max = { 100u << 20 },
                                  .burst_seconds = 3 };
    CHECK_EQ(qlun_config_with_throttle("qlun//d/a.img;iops=5;cache=none;"
                                       "throttle_group=x;serial=s",
                                       &tl, "grp", out, sizeof(out)), 0);
    CHECK(strcmp(out, "qlun//d/a.img;cache=none;serial=s;iops_rd=300;"
                      "iops_wr=200;bps=52428800;bps_max=104857600;"
                      "burst_secs=3;throttle_group=grp") == 0);
    CHECK_EQ(parse(out, &cfg, err), 0);
    CHECK(memcmp(&cfg.throttle, &tl, sizeof(tl)) == 0);
    CHECK(strcmp(cfg.throttle_group, "grp") == 0);
    struct throttle_limits none = { 0 };
    CHECK_EQ(qlun_config_with_throttle("qlun//a.img;iops=5;bps=1M", &none,
                                       NULL, out, sizeof(out)), 0);
    CHECK(strcmp(out, "qlun//a.img") == 0);
    char longcfg[260];
    snprintf(longcfg, sizeof(longcfg), "qlun/%s", longpath + 50);
    CHECK_EQ(qlun_config_with_throttle(longcfg, &tl, NULL, out, sizeof(out)),
             -ENAMETOOLONG);
    return check_summary("test_config");
}
