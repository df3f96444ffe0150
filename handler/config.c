/* qlun — cfgstring parsing. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "common/util.h"

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "1" };
    static const char *const no[] = { "off", "no", "false", "0" };
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_abs_path(char *dst, size_t size, const char *v)
{
    if (v[0] != '/' || strlen(v) >= size)
        return -EINVAL;
    strcpy(dst, v);
    return 0;
}

/* The formats are block/'s: the handler knows none by name. */
static int opt_format(struct qlun_config *cfg, const char *v)
{
    if (!block_driver_find(v) || strlen(v) >= sizeof(cfg->format))
        return -EINVAL;
    strcpy(cfg->format, v);
    return 0;
}

static int opt_cache(struct qlun_config *cfg, const char *v)
{
    static const char *const names[] = {
        [QLUN_CACHE_WRITEBACK] = "writeback",
        [QLUN_CACHE_WRITETHROUGH] = "writethrough",
        [QLUN_CACHE_NONE] = "none",
        [QLUN_CACHE_DIRECTSYNC] = "directsync",
    };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(v, names[i]) == 0) {
            cfg->cache = (enum qlun_cache)i;
            return 0;
        }
    }
    return -EINVAL;
}

static int opt_readonly(struct qlun_config *cfg, const char *v)
{
    return parse_bool(v, &cfg->read_only);
}

static int opt_copy_on_read(struct qlun_config *cfg, const char *v)
{
    return parse_bool(v, &cfg->copy_on_read);
}

static int opt_serial(struct qlun_config *cfg, const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > QLUN_SERIAL_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f)   /* printable, no spaces */
            return -EINVAL;
    strcpy(cfg->serial, v);
    return 0;
}

static int opt_backing_root(struct qlun_config *cfg, const char *v)
{
    return parse_abs_path(cfg->backing_root, sizeof(cfg->backing_root), v);
}

/* A size: digits with an optional K/M/G/T suffix (powers of 1024).  end
 * receives what follows the digits when it is not a suffix (for "N%"). */
static int parse_size(const char *v, uint64_t *out, const char **rest)
{
    char *end;
    if (!isdigit((unsigned char)v[0]))
        return -EINVAL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || n == 0)
        return -EINVAL;
    *rest = end;
    static const char suffixes[] = "KMGT";
    unsigned shift = 0;
    if (*end) {
        const char *p = strchr(suffixes, *end);
        if (!p || end[1])
            return -EINVAL;
        shift = 10 * (unsigned)(p - suffixes + 1);
    }
    if (n > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)n << shift;
    return 0;
}

/* A size, or N%. */
static int opt_soft_threshold(struct qlun_config *cfg, const char *v)
{
    uint64_t bytes;
    const char *rest = "";
    int ret = parse_size(v, &bytes, &rest);
    if (ret == 0) {
        cfg->soft_threshold_bytes = bytes;
        return 0;
    }
    if (strcmp(rest, "%") != 0)
        return ret;
    unsigned long n = strtoul(v, NULL, 10);
    if (n > 100)
        return -EINVAL;
    cfg->soft_threshold_percent = (unsigned)n;
    return 0;
}

/* A qcow2 metadata cache size: more than QLUN_CACHE_SIZE_MAX would take
 * that much memory per LUN for a disk qcow2 cannot even have (1 GiB of
 * 64 KiB-cluster L2 tables maps 8 PiB), so it is a typo. */
static int parse_cache_size(const char *v, uint64_t *out)
{
    const char *rest;
    uint64_t n;
    if (parse_size(v, &n, &rest) < 0 || n > QLUN_CACHE_SIZE_MAX)
        return -EINVAL;
    *out = n;
    return 0;
}

#define CACHE_SIZE_EXPECTED "a size from 1 to 1G bytes, suffixes K, M, G"

static int opt_l2_cache_size(struct qlun_config *cfg, const char *v)
{
    return parse_cache_size(v, &cfg->l2_cache_size);
}

static int opt_refcount_cache_size(struct qlun_config *cfg, const char *v)
{
    return parse_cache_size(v, &cfg->refcount_cache_size);
}

static int opt_stats(struct qlun_config *cfg, const char *v)
{
    if (strcmp(v, "off") == 0) {
        strcpy(cfg->stats_path, v);
        return 0;
    }
    return parse_abs_path(cfg->stats_path, sizeof(cfg->stats_path), v);
}

/* A rate: decimal digits, 0 = no limit.  Bytes per second may take a
 * suffix K, M, G or T (powers of 1024, as sizes here). */
static int parse_rate(const char *v, bool bytes, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)v[0]))
        return -EINVAL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    if (*end && bytes) {
        const char *p = strchr("KMGT", *end);
        if (!p || end[1])
            return -EINVAL;
        shift = 10 * (unsigned)(p - "KMGT" + 1);
    } else if (*end) {
        return -EINVAL;
    }
    if (n > (THROTTLE_VALUE_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)n << shift;
    return 0;
}

#define RATE_OPTION(fn, field, dir, bytes)                                  \
    static int fn(struct qlun_config *cfg, const char *v)                   \
    {                                                                       \
        return parse_rate(v, bytes, &cfg->throttle.field[dir]);             \
    }
RATE_OPTION(opt_iops, iops, THROTTLE_TOTAL, false)
RATE_OPTION(opt_iops_rd, iops, THROTTLE_READ, false)
RATE_OPTION(opt_iops_wr, iops, THROTTLE_WRITE, false)
RATE_OPTION(opt_bps, bps, THROTTLE_TOTAL, true)
RATE_OPTION(opt_bps_rd, bps, THROTTLE_READ, true)
RATE_OPTION(opt_bps_wr, bps, THROTTLE_WRITE, true)
RATE_OPTION(opt_iops_max, iops_max, THROTTLE_TOTAL, false)
RATE_OPTION(opt_iops_rd_max, iops_max, THROTTLE_READ, false)
RATE_OPTION(opt_iops_wr_max, iops_max, THROTTLE_WRITE, false)
RATE_OPTION(opt_bps_max, bps_max, THROTTLE_TOTAL, true)
RATE_OPTION(opt_bps_rd_max, bps_max, THROTTLE_READ, true)
RATE_OPTION(opt_bps_wr_max, bps_max, THROTTLE_WRITE, true)

static int opt_burst_secs(struct qlun_config *cfg, const char *v)
{
    uint64_t n;
    if (parse_rate(v, false, &n) < 0 || n == 0 ||
        n > THROTTLE_BURST_SECONDS_MAX)
        return -EINVAL;
    cfg->throttle.burst_seconds = (unsigned)n;
    return 0;
}

static int opt_throttle_group(struct qlun_config *cfg, const char *v)
{
    if (!throttle_group_name_ok(v))
        return -EINVAL;
    strcpy(cfg->throttle_group, v);
    return 0;
}

#define IOPS_EXPECTED "operations per second, 0 = no limit"
#define BPS_EXPECTED "bytes per second, suffixes K, M, G, T; 0 = no limit"
#define BURST_EXPECTED "seconds, 1 to 3600"
#define GROUP_EXPECTED "1 to 32 of A-Z a-z 0-9 _ - ."

/* tcmu-runner reads this one from every cfgstring itself. */
static int opt_runner_owned(struct qlun_config *cfg, const char *v)
{
    return 0;
}

/* Stands in the table for the names of block/'s drivers, listed when a
 * format is refused. */
static const char driver_names_marker[] = "";
#define DRIVER_NAMES driver_names_marker

static const struct {
    const char *name;
    int (*apply)(struct qlun_config *cfg, const char *value);
    const char *expected;   /* said when a value is refused; optional */
    bool throttle;          /* a throttle setting (qlun_config_with_throttle
                             * rewrites them all) */
} options[] = {
    { "format", opt_format, DRIVER_NAMES, false },
    { "readonly", opt_readonly, NULL, false },
    { "cache", opt_cache, NULL, false },
    { "serial", opt_serial, NULL, false },
    { "backing_root", opt_backing_root, NULL, false },
    { "soft_threshold", opt_soft_threshold, NULL, false },
    { "stats", opt_stats, NULL, false },
    { "l2_cache_size", opt_l2_cache_size, CACHE_SIZE_EXPECTED, false },
    { "refcount_cache_size", opt_refcount_cache_size, CACHE_SIZE_EXPECTED,
      false },
    { "copy_on_read", opt_copy_on_read, NULL, false },
    { "tcmur_cmd_time_out", opt_runner_owned, NULL, false },
    { "iops", opt_iops, IOPS_EXPECTED, true },
    { "iops_rd", opt_iops_rd, IOPS_EXPECTED, true },
    { "iops_wr", opt_iops_wr, IOPS_EXPECTED, true },
    { "bps", opt_bps, BPS_EXPECTED, true },
    { "bps_rd", opt_bps_rd, BPS_EXPECTED, true },
    { "bps_wr", opt_bps_wr, BPS_EXPECTED, true },
    { "iops_max", opt_iops_max, IOPS_EXPECTED, true },
    { "iops_rd_max", opt_iops_rd_max, IOPS_EXPECTED, true },
    { "iops_wr_max", opt_iops_wr_max, IOPS_EXPECTED, true },
    { "bps_max", opt_bps_max, BPS_EXPECTED, true },
    { "bps_rd_max", opt_bps_rd_max, BPS_EXPECTED, true },
    { "bps_wr_max", opt_bps_wr_max, BPS_EXPECTED, true },
    { "burst_secs", opt_burst_secs, BURST_EXPECTED, true },
    { "throttle_group", opt_throttle_group, GROUP_EXPECTED, true },
};

static int apply_option(struct qlun_config *cfg, char *opt, unsigned *seen,
                        char *err, size_t errlen)
{
    char *eq = strchr(opt, '=');
    if (!eq || eq == opt) {
        snprintf(err, errlen, "malformed option '%s' (expected key=value)", opt);
        return -EINVAL;
    }
    *eq = '\0';
    const char *val = eq + 1;
    for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
        if (strcmp(opt, options[i].name) != 0)
            continue;
        if (*seen & (1u << i)) {
            snprintf(err, errlen, "option '%s' given twice", opt);
            return -EINVAL;
        }
        *seen |= 1u << i;
        if (options[i].apply(cfg, val) < 0) {
            char list[128];
            const char *expected = options[i].expected;
            if (expected == DRIVER_NAMES)
                expected = block_driver_names(list, sizeof(list));
            snprintf(err, errlen, "bad value '%s' for option '%s'%s%s%s", val,
                     opt, expected ? " (expected " : "",
                     expected ? expected : "", expected ? ")" : "");
            return -EINVAL;
        }
        return 0;
    }
    char known[512];
    size_t k = 0;
    known[0] = 0;
    for (size_t i = 0; i < ARRAY_SIZE(options); i++)
        k += (size_t)snprintf(known + k, sizeof(known) - k, "%s%s",
                              k ? ", " : "", options[i].name);
    snprintf(err, errlen, "unknown option '%s' (known: %s)", opt, known);
    return -EINVAL;
}

int qlun_config_parse(const char *cfgstring, struct qlun_config *cfg,
                      char *err, size_t errlen)
{
    static const char prefix[] = QLUN_SUBTYPE "/";
    char buf[PATH_MAX + 512];
    unsigned seen = 0;

    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->format, sizeof(cfg->format), "%s", block_default_format());

    if (!cfgstring || strncmp(cfgstring, prefix, sizeof(prefix) - 1) != 0) {
        snprintf(err, errlen, "cfgstring must start with '%s'", prefix);
        return -EINVAL;
    }
    const char *rest = cfgstring + sizeof(prefix) - 1;
    if (strlen(rest) >= sizeof(buf)) {
        snprintf(err, errlen, "cfgstring too long");
        return -EINVAL;
    }
    strcpy(buf, rest);

    char *opts = strchr(buf, ';');
    if (opts)
        *opts++ = '\0';
    if (buf[0] == '\0') {
        snprintf(err, errlen, "no image path in cfgstring (expected "
                 "qlun/<absolute path>[;option=value]...)");
        return -EINVAL;
    }
    if (parse_abs_path(cfg->path, sizeof(cfg->path), buf) < 0) {
        snprintf(err, errlen, "image path '%s' must be absolute", buf);
        return -EINVAL;
    }
    while (opts && *opts) {
        char *next = strchr(opts, ';');
        if (next)
            *next++ = '\0';
        int ret = apply_option(cfg, opts, &seen, err, errlen);
        if (ret < 0)
            return ret;
        opts = next;
    }
    char why[256];
    if (throttle_limits_check(&cfg->throttle, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "bad throttle options: %s", why);
        return -EINVAL;
    }
    return 0;
}

/* Append ";text" (or text alone for the first piece). */
static int append(char *out, size_t outlen, size_t *len, const char *sep,
                  const char *text, size_t text_len)
{
    size_t sep_len = strlen(sep);
    if (*len + sep_len + text_len >= outlen)
        return -ENAMETOOLONG;
    memcpy(out + *len, sep, sep_len);
    memcpy(out + *len + sep_len, text, text_len);
    *len += sep_len + text_len;
    out[*len] = 0;
    return 0;
}

static bool option_is(const char *opt, size_t len, const char *key)
{
    size_t k = strlen(key);
    return len > k && strncmp(opt, key, k) == 0 && opt[k] == '=';
}

/* Append cfgstring's options (";key=value" each, in order) to out, all
 * but those drop(option, its length, ctx) says; the one loop behind every
 * rewrite of a cfgstring below. */
static int append_options_except(char *out, size_t outlen, size_t *len,
                                 const char *cfgstring,
                                 bool (*drop)(const char *, size_t,
                                              const void *),
                                 const void *ctx)
{
    int ret = 0;
    for (const char *opt = strchr(cfgstring, ';'); ret == 0 && opt;) {
        opt++;
        const char *end = strchrnul(opt, ';');
        size_t n = (size_t)(end - opt);
        if (n && !drop(opt, n, ctx))
            ret = append(out, outlen, len, ";", opt, n);
        opt = *end ? end : NULL;
    }
    return ret;
}

/* The path part of cfgstring ("qlun/<path>"), as it is. */
static int append_head(char *out, size_t outlen, size_t *len,
                       const char *cfgstring)
{
    const char *first = strchr(cfgstring, ';');
    return append(out, outlen, len, "", cfgstring,
                  first ? (size_t)(first - cfgstring) : strlen(cfgstring));
}

static bool names_the_top(const char *opt, size_t n, const void *ctx)
{
    (void)ctx;
    return option_is(opt, n, "format") || option_is(opt, n, "serial") ||
           option_is(opt, n, "backing_root");
}

int qlun_config_with_top(const char *cfgstring, const char *top_path,
                         const char *format, const char *serial,
                         const char *backing_root, char *out, size_t outlen)
{
    if (strchr(top_path, ';') || strchr(backing_root, ';') ||
        strchr(serial, ';') || (format && strchr(format, ';')))
        return -EINVAL;
    outlen = MIN(outlen, (size_t)QLUN_CFGSTRING_MAX + 1);
    size_t len = 0;
    int ret = append(out, outlen, &len, QLUN_SUBTYPE "/", top_path,
                     strlen(top_path));
    if (ret == 0)
        ret = append_options_except(out, outlen, &len, cfgstring,
                                    names_the_top, NULL);
    /* The default format is what a parse assumes without format=: naming
     * it would only spend some of LIO's 255 bytes. */
    if (ret == 0 && format && strcmp(format, block_default_format()) != 0)
        ret = append(out, outlen, &len, ";format=", format, strlen(format));
    if (ret == 0)
        ret = append(out, outlen, &len, ";serial=", serial, strlen(serial));
    if (ret == 0)
        ret = append(out, outlen, &len, ";backing_root=", backing_root,
                     strlen(backing_root));
    return ret;
}

static bool is_throttle_option(const char *opt, size_t len, const void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < ARRAY_SIZE(options); i++)
        if (options[i].throttle && option_is(opt, len, options[i].name))
            return true;
    return false;
}

/* ";name=value" for each limit of l that is set. */
static int append_limits(char *out, size_t outlen, size_t *len,
                         const struct throttle_limits *l)
{
    static const char *const names[4][THROTTLE_DIRS] = {
        { "iops", "iops_rd", "iops_wr" },
        { "bps", "bps_rd", "bps_wr" },
        { "iops_max", "iops_rd_max", "iops_wr_max" },
        { "bps_max", "bps_rd_max", "bps_wr_max" },
    };
    const uint64_t *values[4] = { l->iops, l->bps, l->iops_max, l->bps_max };
    int ret = 0;
    for (int k = 0; k < 4 && ret == 0; k++) {
        for (int d = 0; d < THROTTLE_DIRS && ret == 0; d++) {
            if (!values[k][d])
                continue;
            char opt[64];
            int n = snprintf(opt, sizeof(opt), "%s=%llu", names[k][d],
                             (unsigned long long)values[k][d]);
            ret = append(out, outlen, len, ";", opt, (size_t)n);
        }
    }
    if (ret == 0 && l->burst_seconds) {
        char opt[32];
        int n = snprintf(opt, sizeof(opt), "burst_secs=%u", l->burst_seconds);
        ret = append(out, outlen, len, ";", opt, (size_t)n);
    }
    return ret;
}

int qlun_config_with_throttle(const char *cfgstring,
                              const struct throttle_limits *l,
                              const char *group, char *out, size_t outlen)
{
    outlen = MIN(outlen, (size_t)QLUN_CFGSTRING_MAX + 1);
    size_t len = 0;
    int ret = append_head(out, outlen, &len, cfgstring);
    if (ret == 0)
        ret = append_options_except(out, outlen, &len, cfgstring,
                                    is_throttle_option, NULL);
    if (ret == 0)
        ret = append_limits(out, outlen, &len, l);
    if (ret == 0 && group && group[0])
        ret = append(out, outlen, &len, ";throttle_group=", group,
                     strlen(group));
    return ret;
}

static bool is_key(const char *opt, size_t n, const void *key)
{
    return option_is(opt, n, key);
}

int qlun_config_with_option(const char *cfgstring, const char *key,
                            const char *value, char *out, size_t outlen)
{
    if (strchr(value, ';'))
        return -EINVAL;
    outlen = MIN(outlen, (size_t)QLUN_CFGSTRING_MAX + 1);
    size_t len = 0;
    int ret = append_head(out, outlen, &len, cfgstring);
    /* Every other option as it was; key once, at the end (a repeated key
     * would make the parser refuse the string). */
    if (ret == 0)
        ret = append_options_except(out, outlen, &len, cfgstring, is_key, key);
    if (ret == 0)
        ret = append(out, outlen, &len, ";", key, strlen(key));
    if (ret == 0)
        ret = append(out, outlen, &len, "=", value, strlen(value));
    return ret;
}
