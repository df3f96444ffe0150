/* qlun — the cfgstring: `qlun/<image path>[;option=value]...`
 *
 * Parsing is pure string work: it never touches the filesystem, so
 * check_config (callable by any local user over D-Bus) can use it safely.
 */
#ifndef QLUN_HANDLER_CONFIG_H
#define QLUN_HANDLER_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/throttle.h"

#define QLUN_SUBTYPE "qlun"
/* LIO keeps a TCMU backstore's config string in 256 bytes (the kernel's
 * TCMU_CONFIG_LEN), the terminating NUL included. */
#define QLUN_CFGSTRING_MAX 255
#define QLUN_SERIAL_MAX 40

/* Cache modes, as QEMU means them: whether the host page cache is used,
 * and whether the LUN starts with its write cache enabled (WCE). */
enum qlun_cache {
    QLUN_CACHE_WRITEBACK,    /* page cache, WCE=1 (the default) */
    QLUN_CACHE_WRITETHROUGH, /* page cache, WCE=0: every write durable */
    QLUN_CACHE_NONE,         /* O_DIRECT, WCE=1 */
    QLUN_CACHE_DIRECTSYNC,   /* O_DIRECT, WCE=0 */
};

struct qlun_config {
    char path[PATH_MAX];          /* absolute path of the image */
    char format[8];               /* a block driver's name (block/driver.h) */
    bool read_only;               /* readonly=on */
    enum qlun_cache cache;        /* cache= */
    char serial[QLUN_SERIAL_MAX + 1]; /* serial=; "" = LIO's unit serial */
    char backing_root[PATH_MAX];  /* backing_root=; "" = image's directory */
    /* soft_threshold=: host usage that raises UNIT ATTENTION 38/07 once;
     * either bytes or a percentage of the LUN size (0 = none). */
    uint64_t soft_threshold_bytes;
    unsigned soft_threshold_percent;
    /* stats=: where the live statistics go; "" = the default path,
     * "off" = nowhere. */
    char stats_path[PATH_MAX];
    /* l2_cache_size=, refcount_cache_size=: qcow2 metadata caches in
     * bytes, 1 .. QLUN_CACHE_SIZE_MAX; 0 = sized from the image. */
    uint64_t l2_cache_size;
    uint64_t refcount_cache_size;
    /* iops=, iops_rd=, iops_wr=, bps=, bps_rd=, bps_wr=, iops_max=, ...,
     * burst_secs=: the LUN's throttle limits (block/throttle.h; all 0 =
     * none), checked together (throttle_limits_check). */
    struct throttle_limits throttle;
    /* throttle_group=: the named group the LUN's throttle joins; "" =
     * its own. */
    char throttle_group[THROTTLE_GROUP_NAME_MAX + 1];
};

#define QLUN_CACHE_SIZE_MAX (1ull << 30)

/* Parse a cfgstring as tcmu-runner passes it (with the "qlun/" prefix).
 * Returns 0, or -EINVAL with one line naming the problem in err. */
int qlun_config_parse(const char *cfgstring, struct qlun_config *cfg,
                      char *err, size_t errlen);

/* The cfgstring of the same LUN with another top image (after an external
 * snapshot): cfgstring's options, with the path replaced by top_path, the
 * format left to its default (qcow2: an overlay is one), and serial and
 * backing_root given explicitly (the old path implied them: the serial is
 * derived from it when not set, the root is its directory).  Returns 0,
 * or -ENAMETOOLONG if the result would not fit in outlen bytes or in
 * QLUN_CFGSTRING_MAX, -EINVAL if top_path cannot be stored (a ';'). */
int qlun_config_with_top(const char *cfgstring, const char *top_path,
                         const char *serial, const char *backing_root,
                         char *out, size_t outlen);

/* The cfgstring of the same LUN with other throttle settings: cfgstring
 * with its throttle options (iops=... throttle_group=) replaced by those
 * of l and group (none for a limit of 0 or a group of NULL or "").
 * Returns 0, or -ENAMETOOLONG if the result would not fit in outlen bytes
 * or in QLUN_CFGSTRING_MAX. */
int qlun_config_with_throttle(const char *cfgstring,
                              const struct throttle_limits *l,
                              const char *group, char *out, size_t outlen);

#endif
