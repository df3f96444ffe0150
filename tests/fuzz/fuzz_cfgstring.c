/* libFuzzer target: the cfgstring parser (handler/config.c).
 *
 * The input is the cfgstring itself (up to the first NUL).  The error
 * buffer is a heap block of exactly errlen bytes (1..256, from the input
 * length), so ASan sees any write past it.  Invariants:
 *  - the result is 0 or -EINVAL; on -EINVAL, err is a NUL-terminated,
 *    non-empty string inside its buffer;
 *  - on success the config holds only what the parser promises: an
 *    absolute NUL-terminated path, a format block/ has a driver for, a
 *    serial of 0..40 printable non-space characters, a known cache mode,
 *    at most one kind of soft threshold, a percentage <= 100, absolute
 *    (or "off") paths;
 *  - parsing is canonical: a cfgstring rebuilt from the result (every
 *    field, the throttle options by qlun_config_with_throttle) parses to
 *    the identical config.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "handler/config.h"

#define FAIL_IF(cond)                                                       \
    do {                                                                    \
        if (cond) {                                                         \
            fprintf(stderr, "fuzz_cfgstring: invariant broken: %s\n",       \
                    #cond);                                                 \
            abort();                                                        \
        }                                                                   \
    } while (0)

static bool terminated(const char *s, size_t size)
{
    return memchr(s, 0, size) != NULL;
}

static void check_config(const struct qlun_config *c)
{
    FAIL_IF(!terminated(c->path, sizeof(c->path)));
    FAIL_IF(c->path[0] != '/');
    FAIL_IF(!block_driver_find(c->format));
    FAIL_IF(c->cache > QLUN_CACHE_DIRECTSYNC);
    FAIL_IF(!terminated(c->serial, sizeof(c->serial)));
    for (const char *p = c->serial; *p; p++)
        FAIL_IF(*p <= 0x20 || *p >= 0x7f);
    FAIL_IF(!terminated(c->backing_root, sizeof(c->backing_root)));
    FAIL_IF(c->backing_root[0] && c->backing_root[0] != '/');
    FAIL_IF(c->soft_threshold_percent > 100);
    FAIL_IF(c->soft_threshold_percent && c->soft_threshold_bytes);
    FAIL_IF(!terminated(c->stats_path, sizeof(c->stats_path)));
    FAIL_IF(c->stats_path[0] && c->stats_path[0] != '/' &&
            strcmp(c->stats_path, "off") != 0);
    FAIL_IF(c->l2_cache_size > QLUN_CACHE_SIZE_MAX);
    FAIL_IF(c->refcount_cache_size > QLUN_CACHE_SIZE_MAX);
}

/* The same config as a cfgstring; returns false if it does not fit. */
static bool rebuild(const struct qlun_config *c, char *out, size_t size)
{
    static const char *const caches[] = { "writeback", "writethrough",
                                          "none", "directsync" };
    size_t n = (size_t)snprintf(out, size, "qlun/%s;format=%s;readonly=%s;"
                                "cache=%s", c->path, c->format,
                                c->read_only ? "on" : "off",
                                caches[c->cache]);
#define ADD(...)                                                            \
    do {                                                                    \
        if (n < size)                                                       \
            n += (size_t)snprintf(out + n, size - n, __VA_ARGS__);          \
    } while (0)
    if (c->serial[0])
        ADD(";serial=%s", c->serial);
    if (c->backing_root[0])
        ADD(";backing_root=%s", c->backing_root);
    if (c->soft_threshold_percent)
        ADD(";soft_threshold=%u%%", c->soft_threshold_percent);
    else if (c->soft_threshold_bytes)
        ADD(";soft_threshold=%llu",
            (unsigned long long)c->soft_threshold_bytes);
    if (c->stats_path[0])
        ADD(";stats=%s", c->stats_path);
    if (c->l2_cache_size)
        ADD(";l2_cache_size=%llu", (unsigned long long)c->l2_cache_size);
    if (c->refcount_cache_size)
        ADD(";refcount_cache_size=%llu",
            (unsigned long long)c->refcount_cache_size);
    if (c->copy_on_read)
        ADD(";copy_on_read=on");
#undef ADD
    if (n >= size)
        return false;
    /* The throttle options as the live path writes them (lun-set-throttle
     * persists them with this function), so the round trip covers it. */
    static char with_limits[QLUN_CFGSTRING_MAX + 1];
    if (qlun_config_with_throttle(out, &c->throttle, c->throttle_group,
                                  with_limits, sizeof(with_limits)) != 0)
        return false;
    if (strlen(with_limits) >= size)
        return false;
    strcpy(out, with_limits);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct qlun_config cfg, again;
    /* What qlun_config_parse accepts: "qlun/" and less than PATH_MAX + 512. */
    static char rebuilt[5 + PATH_MAX + 512];
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;

    size_t errlen = 1 + (size * 37) % 256;
    char *err = malloc(errlen);
    if (!err) {
        free(s);
        return 0;
    }
    memset(err, 0x5a, errlen);
    int ret = qlun_config_parse(s, &cfg, err, errlen);
    FAIL_IF(ret != 0 && ret != -EINVAL);
    if (ret < 0) {
        FAIL_IF(!terminated(err, errlen));
        FAIL_IF(errlen > 1 && err[0] == 0);
    } else {
        check_config(&cfg);
        if (rebuild(&cfg, rebuilt, sizeof(rebuilt))) {
            char err2[256];
            int ret2 = qlun_config_parse(rebuilt, &again, err2, sizeof(err2));
            if (ret2 != 0)
                fprintf(stderr, "fuzz_cfgstring: '%s' refused: %s\n",
                        rebuilt, err2);
            FAIL_IF(ret2 != 0);
            FAIL_IF(memcmp(&cfg, &again, sizeof(cfg)) != 0);
        }
    }
    free(err);
    free(s);
    return 0;
}
