/* qlun — qcow2: opening an image.
 *
 * Every header field, extension and table location is validated before it
 * is used, against overflow and against the size of the host.  A refused
 * image gets exactly one line in err naming the field and its value.
 *
 * The header is never rewritten as a whole: the engine updates single
 * fields in place (feature bits, the refcount table pointer), so unknown
 * header bytes and unknown extensions are preserved by construction.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "common/util.h"
#include "qcow2-internal.h"

#define FAIL(ret_, ...)                               \
    do {                                              \
        snprintf(err, errlen, __VA_ARGS__);           \
        ret = (ret_);                                 \
        goto fail;                                    \
    } while (0)

int qcow2_write_header(struct qcow2 *q, unsigned field, const void *b,
                       size_t len)
{
    int ret = file_pwrite(q->img.file, b, len, field);
    if (ret == 0)
        ret = file_flush(q->img.file);
    return ret;
}

int qcow2_write_header_u64(struct qcow2 *q, unsigned field, uint64_t v)
{
    uint8_t b[8];
    put_be64(b, v);
    return qcow2_write_header(q, field, b, sizeof(b));
}

int qcow2_corrupt(struct qcow2 *q, const char *fmt, ...)
{
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Writing back cached L2 tables would trust metadata just shown to
     * be wrong (a refcount error may mean a cluster has two owners): the
     * writes they record are given up, and said to be. */
    bool lost = q->l2_cache && cache_has_dirty(q->l2_cache);
    fprintf(stderr, "qlun: qcow2 %s: %s; image marked corrupt and "
            "write-protected%s (run 'qemu-img check -r all')\n", q->path, msg,
            lost ? "; writes not yet flushed are lost, later flushes fail"
                 : "");
    image_set_state(&q->img, IMAGE_STATE_CORRUPT |
                                 (lost ? IMAGE_STATE_WRITES_LOST : 0));
    if (!q->img.info.read_only && q->version >= 3) {
        q->incompat |= INCOMPAT_CORRUPT;
        (void)qcow2_write_header_u64(q, HDR_INCOMPAT, q->incompat);
    }
    return -EUCLEAN;
}

/* We maintain no autoclear feature (persistent bitmaps, ...): declare
 * them all invalid before changing anything they describe. */
static int clear_autoclear(struct qcow2 *q)
{
    if (!q->autoclear)
        return 0;
    int ret = qcow2_write_header_u64(q, HDR_AUTOCLEAR, 0);
    if (ret == 0)
        q->autoclear = 0;
    return ret;
}

int qcow2_prepare_write(struct qcow2 *q)
{
    int ret;
    if (q->write_ready)
        return 0;
    if (qcow2_is_corrupt(q))
        return -EUCLEAN;
    ret = clear_autoclear(q);
    if (ret < 0)
        return ret;
    if (q->lazy && !(q->incompat & INCOMPAT_DIRTY)) {
        ret = qcow2_write_header_u64(q, HDR_INCOMPAT,
                                     q->incompat | INCOMPAT_DIRTY);
        if (ret < 0)
            return ret;
        q->incompat |= INCOMPAT_DIRTY;
    }
    q->write_ready = true;
    return 0;
}

/* Name of incompatible bit `bit` from the feature name table, if any. */
static void feature_name(const uint8_t *c0, uint64_t tab, uint32_t len,
                         unsigned bit, char *out, size_t outlen)
{
    snprintf(out, outlen, "unknown");
    for (uint32_t i = 0; tab && i + 48 <= len; i += 48) {
        const uint8_t *e = c0 + tab + i;
        if (e[0] == 0 && e[1] == bit) {
            snprintf(out, outlen, "%.46s", (const char *)e + 2);
            for (char *p = out; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                    *p = '?';
            return;
        }
    }
}

void qcow2_destroy(struct qcow2 *q)
{
    if (!q)
        return;
    cache_free(q->l2_cache);
    cache_free(q->rb_cache);
    free(q->l1);
    free(q->reftable);
    free(q->snapshots);
    free(q->pending);
    free(q->zero_buf);
    free(q->path);
    pthread_mutex_destroy(&q->lock);
}

static int read_be64_table(struct qcow2 *q, uint64_t off, uint64_t n,
                           uint64_t **out)
{
    uint8_t *raw = malloc(n * 8 + 1);
    uint64_t *t = calloc(n + 1, 8);
    int ret = -ENOMEM;
    if (raw && t) {
        ret = file_pread(q->img.file, raw, n * 8, off);
        for (uint64_t i = 0; ret == 0 && i < n; i++)
            t[i] = get_be64(raw + 8 * i);
    }
    free(raw);
    if (ret < 0) {
        free(t);
        return ret;
    }
    *out = t;
    return 0;
}

/* What open_image learns from cluster 0 beyond struct qcow2's fields. */
struct header_extras {
    uint64_t backing_off;  /* the backing file name in cluster 0 (0: none) */
    uint32_t backing_len;
    uint64_t feat_tab;     /* the feature name table in cluster 0 (0: none) */
    uint32_t feat_len;
    char backing_fmt[16];  /* the backing format extension, if have_fmt */
    bool have_fmt;
};

/* The fixed header: magic, version, cluster size, and the version 3
 * fields; *c0 is cluster 0, the caller's to free (also on failure). */
static int read_header(struct qcow2 *q, const char *path, uint8_t **c0,
                       char *err, size_t errlen)
{
    uint8_t h[HDR_V3_MIN_LENGTH + 8];
    int ret;

    int64_t hsize = file_length(q->img.file);
    if (hsize < 0)
        FAIL((int)hsize, "cannot get the size of %s: %s", path,
             strerror((int)-hsize));
    q->host_end = (uint64_t)hsize;

    ret = file_pread(q->img.file, h, sizeof(h), 0);
    if (ret < 0)
        FAIL(ret, "cannot read %s: %s", path, strerror(-ret));
    if ((uint64_t)hsize < HDR_V2_LENGTH || get_be32(h) != QCOW2_MAGIC)
        FAIL(-EINVAL, "%s is not a qcow2 image (no QFI\\xfb magic); "
             "if it is a raw image, open it with format=raw", path);

    q->version = get_be32(h + 4);
    if (q->version != 2 && q->version != 3)
        FAIL(-ENOTSUP, "%s: unsupported qcow2 version %" PRIu32, path,
             q->version);
    q->cluster_bits = get_be32(h + HDR_CLUSTER_BITS);
    if (q->cluster_bits < 9 || q->cluster_bits > 21)
        FAIL(-EINVAL, "%s: cluster_bits %" PRIu32 " is out of range 9..21",
             path, q->cluster_bits);
    const uint64_t cs = q->cluster_size = 1ull << q->cluster_bits;

    *c0 = calloc(1, cs);
    if (!*c0)
        FAIL(-ENOMEM, "out of memory");
    ret = file_pread(q->img.file, *c0, cs, 0);
    if (ret < 0)
        FAIL(ret, "cannot read %s: %s", path, strerror(-ret));
    const uint8_t *c = *c0;

    uint32_t crypt = get_be32(c + HDR_CRYPT);
    if (crypt != 0)
        FAIL(-ENOTSUP, "%s: encrypted qcow2 images are not supported "
             "(crypt_method %" PRIu32 ", %s)", path, crypt,
             crypt == 1 ? "AES" : crypt == 2 ? "LUKS" : "unknown");

    if (q->version == 2) {
        q->header_length = HDR_V2_LENGTH;
        q->refcount_order = 4;
    } else {
        q->incompat = get_be64(c + HDR_INCOMPAT);
        q->compat = get_be64(c + HDR_COMPAT);
        q->autoclear = get_be64(c + HDR_AUTOCLEAR);
        q->refcount_order = get_be32(c + HDR_REFCOUNT_ORDER);
        q->header_length = get_be32(c + HDR_HEADER_LENGTH);
        if (q->header_length < HDR_V3_MIN_LENGTH || q->header_length % 8 ||
            q->header_length > cs)
            FAIL(-EINVAL, "%s: header_length %" PRIu32 " is invalid (must be "
                 ">= 104, a multiple of 8, within cluster 0)", path,
                 q->header_length);
        if (q->refcount_order > 6)
            FAIL(-EINVAL, "%s: refcount_order %" PRIu32 " is out of range "
                 "0..6", path, q->refcount_order);
        if (q->header_length > HDR_COMPRESSION)
            q->compression_type = c[HDR_COMPRESSION];
    }
    q->refcount_max = q->refcount_order == 6
                          ? UINT64_MAX
                          : (1ull << (1u << q->refcount_order)) - 1;
    return 0;
fail:
    return ret;
}

/* Header extensions: between the header and the backing file name (or
 * the end of cluster 0). */
static int read_extensions(struct qcow2 *q, const char *path,
                           const uint8_t *c0, struct header_extras *x,
                           char *err, size_t errlen)
{
    const uint64_t cs = q->cluster_size;
    int ret;

    x->backing_off = get_be64(c0 + HDR_BACKING_OFFSET);
    x->backing_len = get_be32(c0 + HDR_BACKING_SIZE);
    if (x->backing_off != 0 &&
        (x->backing_off < q->header_length || x->backing_off >= cs))
        FAIL(-EINVAL, "%s: backing_file_offset %" PRIu64 " is not inside "
             "cluster 0 after the header", path, x->backing_off);
    uint64_t ext_end = x->backing_off ? x->backing_off : cs;
    for (uint64_t p = q->header_length; p + 8 <= ext_end;) {
        uint32_t type = get_be32(c0 + p), len = get_be32(c0 + p + 4);
        if (type == EXT_END)
            break;
        if (len > ext_end - p - 8)
            FAIL(-EINVAL, "%s: header extension 0x%08" PRIx32 " at offset %"
                 PRIu64 " has length %" PRIu32 ", past the extension area",
                 path, type, p, len);
        switch (type) {
        case EXT_BACKING_FMT:
            if (len == 0 || len >= sizeof(x->backing_fmt))
                FAIL(-EINVAL, "%s: backing format extension length %" PRIu32
                     " is invalid", path, len);
            memcpy(x->backing_fmt, c0 + p + 8, len);
            x->backing_fmt[len] = 0;
            x->have_fmt = true;
            break;
        case EXT_FEATURE_TABLE:
            x->feat_tab = p + 8;
            x->feat_len = len;
            break;
        case EXT_FDE:
            FAIL(-ENOTSUP, "%s: encrypted qcow2 images are not supported "
                 "(full disk encryption header extension)", path);
        default:
            break; /* bitmaps, data file name, unknown: ignored, kept */
        }
        p += 8 + ALIGN_UP((uint64_t)len, 8);
    }
    return 0;
fail:
    return ret;
}

/* Incompatible features: refuse what this engine cannot serve safely. */
static int check_features(struct qcow2 *q, const struct image_open_opts *opts,
                          const uint8_t *c0, const struct header_extras *x,
                          char *err, size_t errlen)
{
    const char *path = opts->path;
    int ret;

    uint64_t unknown = q->incompat & ~INCOMPAT_KNOWN;
    if (unknown) {
        unsigned bit = (unsigned)__builtin_ctzll(unknown);
        char name[64];
        feature_name(c0, x->feat_tab, x->feat_len, bit, name, sizeof(name));
        FAIL(-ENOTSUP, "%s: unsupported incompatible feature bit %u (%s) "
             "in incompatible_features 0x%" PRIx64, path, bit, name,
             q->incompat);
    }
    if (q->incompat & INCOMPAT_DATA_FILE)
        FAIL(-ENOTSUP, "%s: qcow2 images with an external data file "
             "(incompatible feature bit 2) are not supported", path);
    if (q->incompat & INCOMPAT_CORRUPT && !opts->read_only)
        FAIL(-EUCLEAN, "%s: the image is marked corrupt (incompatible bit 1); "
             "it can only be opened read-only; repair it with "
             "'qemu-img check -r all'", path);
    if (q->incompat & INCOMPAT_COMPRESSION) {
        if (q->header_length <= HDR_COMPRESSION || q->compression_type == 0)
            FAIL(-EINVAL, "%s: compression type bit set but compression_type "
                 "field is %s", path,
                 q->header_length <= HDR_COMPRESSION ? "absent" : "0");
    } else if (q->compression_type != 0) {
        FAIL(-EINVAL, "%s: compression_type %u without the compression type "
             "incompatible bit", path, q->compression_type);
    }
    if (q->compression_type > 1)
        FAIL(-ENOTSUP, "%s: unsupported compression_type %u (0 zlib, 1 zstd)",
             path, q->compression_type);
    q->extended_l2 = q->incompat & INCOMPAT_EXTL2;
    if (q->extended_l2 && q->cluster_bits < 14)
        FAIL(-EINVAL, "%s: extended L2 entries need cluster_bits >= 14, "
             "cluster_bits is %" PRIu32, path, q->cluster_bits);
    return 0;
fail:
    return ret;
}

/* Geometry, the virtual size, and where the L1 and refcount tables are:
 * inside the host file, aligned, of sane sizes. */
static int read_geometry(struct qcow2 *q, const char *path,
                         const uint8_t *c0, char *err, size_t errlen)
{
    const uint64_t cs = q->cluster_size;
    int ret;

    q->l2_entry_size = q->extended_l2 ? 16 : 8;
    q->l2_bits = q->cluster_bits - (q->extended_l2 ? 4 : 3);
    q->subclusters = q->extended_l2 ? 32 : 1;
    q->sc_size = cs / q->subclusters;
    q->csize_shift = 62 - (q->cluster_bits - 8);
    q->csize_mask = (1ull << (q->cluster_bits - 8)) - 1;
    q->coffset_mask = (1ull << q->csize_shift) - 1;
    q->rb_bits = q->cluster_bits + 3 - q->refcount_order;

    uint64_t size = get_be64(c0 + HDR_SIZE);
    if (size > (1ull << 62))
        FAIL(-EINVAL, "%s: virtual size %" PRIu64 " is too large", path, size);
    q->img.size = size;
    unsigned shift = q->cluster_bits + q->l2_bits;
    uint64_t l1_need = (size + (1ull << shift) - 1) >> shift;
    q->l1_size = get_be32(c0 + HDR_L1_SIZE);
    q->l1_offset = get_be64(c0 + HDR_L1_OFFSET);
    if ((uint64_t)q->l1_size * 8 > MAX_L1_BYTES)
        FAIL(-EINVAL, "%s: l1_size %" PRIu32 " is too large", path,
             q->l1_size);
    if (q->l1_size < l1_need)
        FAIL(-EINVAL, "%s: l1_size %" PRIu32 " is too small for virtual "
             "size %" PRIu64, path, q->l1_size, size);
    if ((q->l1_offset & (cs - 1)) || (q->l1_size && q->l1_offset == 0) ||
        q->l1_offset > q->host_end ||
        (uint64_t)q->l1_size * 8 > q->host_end - q->l1_offset)
        FAIL(-EINVAL, "%s: l1_table_offset 0x%" PRIx64 " (l1_size %" PRIu32
             ") is unaligned or past the end of the image", path,
             q->l1_offset, q->l1_size);

    q->reftable_offset = get_be64(c0 + HDR_REFTABLE_OFFSET);
    q->reftable_clusters = get_be32(c0 + HDR_REFTABLE_CLUSTERS);
    if (q->reftable_clusters == 0 ||
        (uint64_t)q->reftable_clusters * cs > MAX_REFTABLE_BYTES)
        FAIL(-EINVAL, "%s: refcount_table_clusters %" PRIu32 " is invalid",
             path, q->reftable_clusters);
    if (q->reftable_offset == 0 || (q->reftable_offset & (cs - 1)) ||
        q->reftable_offset > q->host_end ||
        (uint64_t)q->reftable_clusters * cs > q->host_end - q->reftable_offset)
        FAIL(-EINVAL, "%s: refcount_table_offset 0x%" PRIx64 " (%" PRIu32
             " clusters) is unaligned or past the end of the image", path,
             q->reftable_offset, q->reftable_clusters);
    q->reftable_entries = (uint64_t)q->reftable_clusters * cs / 8;

    if (q->img.file->info.is_device)
        q->dev_clusters = q->host_end / cs;
    return 0;
fail:
    return ret;
}

/* The backing file name (name: "" if there is none), checked: inside
 * cluster 0, at most MAX_BACKING_NAME bytes, no NUL. */
static int read_backing_name(struct qcow2 *q, const char *path,
                             const uint8_t *c0, const struct header_extras *x,
                             char name[MAX_BACKING_NAME + 1], char *err,
                             size_t errlen)
{
    int ret;
    name[0] = 0;
    if (x->backing_off == 0 || x->backing_len == 0)
        return 0;
    if (x->backing_len > MAX_BACKING_NAME ||
        x->backing_len > q->cluster_size - x->backing_off)
        FAIL(-EINVAL, "%s: backing_file_size %" PRIu32 " is invalid "
             "(max 1023, inside cluster 0)", path, x->backing_len);
    memcpy(name, c0 + x->backing_off, x->backing_len);
    name[x->backing_len] = 0;
    if (strlen(name) != x->backing_len)
        FAIL(-EINVAL, "%s: backing file name contains a NUL byte", path);
    return 0;
fail:
    return ret;
}

/* The L1 and refcount tables, and the caches: sized from the virtual size
 * or the cfgstring (cache_size.c). */
static int load_tables(struct qcow2 *q, const struct image_open_opts *opts,
                       char *err, size_t errlen)
{
    const char *path = opts->path;
    int ret = read_be64_table(q, q->l1_offset, q->l1_size, &q->l1);
    if (ret == 0)
        ret = read_be64_table(q, q->reftable_offset, q->reftable_entries,
                              &q->reftable);
    if (ret < 0)
        FAIL(ret, "%s: cannot read the L1/refcount tables: %s", path,
             strerror(-ret));
    qcow2_reftable_count_used(q);

    size_t l2_slots = qcow2_l2_cache_slots(q, opts->l2_cache_bytes);
    size_t rb_slots = qcow2_rb_cache_slots(q, l2_slots,
                                           opts->refcount_cache_bytes);
    q->l2_cache = cache_new(q, l2_slots, qcow2_l2_pre_write);
    q->rb_cache = cache_new(q, rb_slots, NULL);
    q->zero_buf = calloc(1, q->cluster_size);
    if (!q->l2_cache || !q->rb_cache || !q->zero_buf)
        FAIL(-ENOMEM, "out of memory");
    return 0;
fail:
    return ret;
}

/* An image left dirty (lazy refcounts, not closed cleanly): rebuild its
 * refcounts before the first write, then clear the dirty bit. */
static int repair_if_dirty(struct qcow2 *q, const char *path, char *err,
                           size_t errlen)
{
    int ret;
    if (!(q->incompat & INCOMPAT_DIRTY))
        return 0;
    /* The rebuild counts only what this engine knows (L1/L2, snapshots,
     * its own tables) and reuses every other cluster.  Structures of
     * autoclear features (persistent bitmaps) would then be overwritten
     * while still declared valid: declare them invalid first, as before
     * any write. */
    ret = clear_autoclear(q);
    if (ret < 0)
        FAIL(ret, "%s: cannot clear the autoclear features: %s", path,
             strerror(-ret));
    ret = qcow2_rebuild_refcounts(q, err, errlen);
    if (ret < 0)
        return ret;
    ret = qcow2_write_header_u64(q, HDR_INCOMPAT,
                                 q->incompat & ~INCOMPAT_DIRTY);
    if (ret < 0)
        FAIL(ret, "%s: cannot clear the dirty bit: %s", path,
             strerror(-ret));
    q->incompat &= ~INCOMPAT_DIRTY;
    return 0;
fail:
    return ret;
}

/* Open: each step checks what it reads before anything uses it (the
 * header, its extensions, the features, the geometry and table
 * locations, the backing file name), then the tables are loaded and a
 * dirty image is repaired (writable opens only). */
static int open_image(struct qcow2 *q, const struct image_open_opts *opts,
                      char *err, size_t errlen)
{
    const char *path = opts->path;
    struct header_extras x = { 0 };
    char backing_name[MAX_BACKING_NAME + 1];
    uint8_t *c0 = NULL;

    int ret = read_header(q, path, &c0, err, errlen);
    if (ret == 0)
        ret = read_extensions(q, path, c0, &x, err, errlen);
    if (ret == 0)
        ret = check_features(q, opts, c0, &x, err, errlen);
    if (ret == 0)
        ret = read_geometry(q, path, c0, err, errlen);
    if (ret == 0)
        ret = read_backing_name(q, path, c0, &x, backing_name, err, errlen);
    if (ret == 0)
        ret = qcow2_read_snapshots(q, get_be32(c0 + HDR_NB_SNAPSHOTS),
                                   get_be64(c0 + HDR_SNAPSHOTS_OFFSET), err,
                                   errlen);
    free(c0);
    if (ret == 0)
        ret = load_tables(q, opts, err, errlen);
    if (ret < 0)
        return ret;

    if (!opts->read_only) {
        q->lazy = q->version >= 3 && (q->compat & COMPAT_LAZY_REFCOUNTS);
        ret = repair_if_dirty(q, path, err, errlen);
        if (ret < 0)
            return ret;
    }

    /* The backing chain is the generic layer's (block/backing.c). */
    if (backing_name[0]) {
        q->img.backing_name = strdup(backing_name);
        if (x.have_fmt)
            q->img.backing_format = strdup(x.backing_fmt);
        if (!q->img.backing_name || (x.have_fmt && !q->img.backing_format)) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
    }

    q->img.info = (struct image_info){
        .format = "qcow2",
        .cluster_size = (uint32_t)q->cluster_size,
        .request_alignment = q->img.file->info.request_alignment,
        .read_only = opts->read_only,
        .can_zero = q->version >= 3,
        .can_discard = true,
        .discard_zeroes = true,
    };
    qcow2_prealloc_open(q);
    return 0;
}

static int qcow2_open(struct image *img, const struct image_open_opts *opts,
                      char *err, size_t errlen)
{
    struct qcow2 *q = to_qcow2(img);
    pthread_mutex_init(&q->lock, NULL);
    q->path = strdup(opts->path);
    if (!q->path) {
        qcow2_destroy(q);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int ret = open_image(q, opts, err, errlen);
    if (ret < 0) {
        qcow2_destroy(q);
        return ret;
    }
    return 0;
}

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= 4 && get_be32(buf) == QCOW2_MAGIC ? 100 : 0;
}

const struct block_driver qcow2_driver = {
    .name = "qcow2",
    .instance_size = sizeof(struct qcow2),
    .probe = qcow2_probe,
    .open = qcow2_open,
    .ops = &qcow2_ops,
    .create = qcow2_create,
};
