/* qlun — the image interface: open a node by driver name, range checks,
 * the fallbacks for optional driver operations, closing a node and its
 * children. */
#include "image.h"

#include "backing.h"
#include "driver.h"
#include "file.h"

#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/iov.h"
#include "../common/util.h"

int image_open(const struct image_open_opts *opts, struct image **out,
               char *err, size_t errlen)
{
    assert(opts && opts->path && opts->format && out);
    *out = NULL;
    /* The format is what the user said, never what the content suggests:
     * guessing lets a guest that writes a qcow2 header into a raw LUN make
     * the host open arbitrary backing files. */
    const struct block_driver *drv = block_driver_find(opts->format);
    if (!drv) {
        char names[128];
        snprintf(err, errlen, "unknown image format '%s' (expected %s)",
                 opts->format, block_driver_names(names, sizeof(names)));
        return -EINVAL;
    }
    return image_open_node(drv, opts, 0, out, err, errlen);
}

static struct image *new_node(const struct block_driver *drv,
                              const char *filename, bool read_only)
{
    assert(drv->instance_size >= sizeof(struct image));
    struct image *img = calloc(1, drv->instance_size);
    if (!img)
        return NULL;
    img->filename = strdup(filename);
    if (!img->filename) {
        free(img);
        return NULL;
    }
    img->drv = drv;
    img->ops = drv->ops;
    img->info.read_only = read_only;
    return img;
}

int image_open_layer(const struct block_driver *drv,
                     const struct image_open_opts *opts, unsigned depth,
                     struct image **out, char *err, size_t errlen)
{
    assert(!drv->is_filter);
    struct image *img = new_node(drv, opts->path, opts->read_only);
    if (!img) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int ret = 0;
    /* A format's host storage is its protocol child, there before it. */
    if (!drv->is_protocol)
        ret = image_open_node(&file_driver, opts, depth, &img->file, err,
                              errlen);
    if (ret == 0)
        ret = drv->open(img, opts, err, errlen);
    if (ret < 0) {
        image_free_node(img);
        return ret;
    }
    if (!img->info.format)
        img->info.format = drv->name;
    *out = img;
    return 0;
}

int image_open_node(const struct block_driver *drv,
                    const struct image_open_opts *opts, unsigned depth,
                    struct image **out, char *err, size_t errlen)
{
    struct image *img;
    int ret = image_open_layer(drv, opts, depth, &img, err, errlen);
    if (ret < 0)
        return ret;
    if (img->backing_name) {
        ret = image_open_backing(img, opts, depth, err, errlen);
        if (ret < 0) {
            image_close(img);
            return ret;
        }
    }
    *out = img;
    return 0;
}

void image_free_node(struct image *img)
{
    image_close(img->backing);
    image_close(img->file);
    free(img->backing_name);
    free(img->backing_format);
    free(img->filename);
    free(img);
}

static void assert_range(const struct image *img, uint64_t off, uint64_t len)
{
    assert(off <= img->size && len <= img->size - off);
    (void)img, (void)off, (void)len;
}

/* A filter leaves an operation NULL to have its child do it. */
static bool passes_down(const struct image *img, const void *op)
{
    return op == NULL && img->drv && img->drv->is_filter;
}

unsigned image_state(const struct image *img)
{
    unsigned state = atomic_load(&img->state);
    /* A filter is as corrupt (or has lost as many writes) as its child. */
    if (img->drv && img->drv->is_filter)
        state |= image_state(img->file);
    return state;
}

void image_set_state(struct image *img, unsigned bits)
{
    atomic_fetch_or(&img->state, bits);
}

/* Every modification: refused on a read-only or write-protected image. */
static int check_writable(const struct image *img)
{
    if (img->info.read_only || (image_state(img) & IMAGE_STATE_CORRUPT))
        return -EROFS;
    return 0;
}

int image_readv(struct image *img, const struct iovec *iov, int iovcnt,
                uint64_t off)
{
    assert_range(img, off, iov_size(iov, iovcnt));
    if (passes_down(img, img->ops->readv))
        return image_readv(img->file, iov, iovcnt, off);
    return img->ops->readv(img, iov, iovcnt, off);
}

int image_writev(struct image *img, const struct iovec *iov, int iovcnt,
                 uint64_t off, unsigned flags)
{
    assert((flags & ~IMAGE_FUA) == 0);
    assert_range(img, off, iov_size(iov, iovcnt));
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (passes_down(img, img->ops->writev))
        return image_writev(img->file, iov, iovcnt, off, flags);
    return img->ops->writev(img, iov, iovcnt, off, flags);
}

int image_read(struct image *img, void *buf, size_t len, uint64_t off)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    return image_readv(img, &iov, 1, off);
}

int image_write(struct image *img, const void *buf, size_t len, uint64_t off,
                unsigned flags)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return image_writev(img, &iov, 1, off, flags);
}

int image_flush(struct image *img)
{
    if (img->info.read_only)
        return 0;
    if (image_state(img) & IMAGE_STATE_WRITES_LOST)
        return -EIO;
    if (passes_down(img, img->ops->flush))
        return image_flush(img->file);
    return img->ops->flush(img);
}

/* Zero by writing a shared zero buffer, in chunks. */
static int zero_by_writing(struct image *img, uint64_t off, uint64_t len)
{
    enum { CHUNK = 1 << 20 };
    static const uint8_t zeros[CHUNK];
    while (len > 0) {
        size_t n = (size_t)MIN(len, (uint64_t)CHUNK);
        int ret = image_write(img, zeros, n, off, 0);
        if (ret < 0)
            return ret;
        off += n;
        len -= n;
    }
    return 0;
}

int image_zero(struct image *img, uint64_t off, uint64_t len, unsigned flags)
{
    assert((flags & ~(IMAGE_MAY_UNMAP | IMAGE_NO_FALLBACK)) == 0);
    assert_range(img, off, len);
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (len == 0)
        return 0;
    if (passes_down(img, img->ops->zero))
        return image_zero(img->file, off, len, flags);
    if (img->ops->zero) {
        ret = img->ops->zero(img, off, len, flags);
        if (ret != -ENOTSUP)
            return ret;
    }
    if (flags & IMAGE_NO_FALLBACK)
        return -ENOTSUP;
    return zero_by_writing(img, off, len);
}

int image_discard(struct image *img, uint64_t off, uint64_t len)
{
    assert_range(img, off, len);
    int ret = check_writable(img);
    if (ret < 0)
        return ret;
    if (passes_down(img, img->ops->discard))
        return image_discard(img->file, off, len);
    if (len == 0 || !img->ops->discard)
        return 0;
    return img->ops->discard(img, off, len);
}

int image_block_status(struct image *img, uint64_t off, uint64_t len,
                       enum image_extent_kind *kind, uint64_t *extent_len)
{
    assert(len > 0);
    assert_range(img, off, len);
    if (passes_down(img, img->ops->block_status))
        return image_block_status(img->file, off, len, kind, extent_len);
    if (!img->ops->block_status) {
        *kind = IMAGE_EXTENT_DATA;
        *extent_len = len;
        return 0;
    }
    int ret = img->ops->block_status(img, off, len, kind, extent_len);
    assert(ret < 0 || (*extent_len > 0 && *extent_len <= len));
    return ret;
}

struct image *image_backing_child(const struct image *img)
{
    /* A filter's layer is its child's: so is the backing below it. */
    while (img->drv && img->drv->is_filter)
        img = img->file;
    return img->backing;
}

int64_t image_current_size(struct image *img)
{
    if (img->drv && img->drv->is_protocol)
        return file_length(img);
    return (int64_t)img->size;
}

int64_t image_allocated_bytes(struct image *img)
{
    /* A format that does not count for itself uses what its file takes
     * (as QEMU does): a qcow2 file's size on the host is its use. */
    if (!img->ops->allocated_bytes)
        return img->file ? image_allocated_bytes(img->file) : -ENOTSUP;
    return img->ops->allocated_bytes(img);
}

int image_resize(struct image *img, uint64_t new_size, bool force,
                 char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (new_size % 512 || new_size == 0) {
        snprintf(err, errlen, "new size %" PRIu64 " is not a positive "
                 "multiple of 512 bytes", new_size);
        return -EINVAL;
    }
    if (new_size == img->size)
        return 0;
    int ret = check_writable(img);
    if (ret < 0) {
        snprintf(err, errlen, "the image is %s", img->info.read_only
                 ? "read-only" : "write-protected (found corrupt)");
        return ret;
    }
    if (!img->ops->resize) {
        snprintf(err, errlen, "%s images cannot be resized", img->info.format);
        return -ENOTSUP;
    }
    return img->ops->resize(img, new_size, force, err, errlen);
}

int image_close(struct image *img)
{
    if (!img)
        return 0;
    if (!img->drv)
        return img->ops->close(img);
    int ret = img->ops->close ? img->ops->close(img) : 0;
    image_free_node(img);
    return ret;
}

int image_insert_filter(struct image **edge, const struct block_driver *drv,
                        char *err, size_t errlen)
{
    assert(drv->is_filter && *edge);
    struct image *child = *edge;
    struct image *img = new_node(drv, child->filename, child->info.read_only);
    if (!img) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* What the filter does not change is its child's. */
    img->file = child;
    img->size = child->size;
    img->info = child->info;
    if (drv->open) {
        struct image_open_opts o = { .path = child->filename,
                                     .format = drv->name,
                                     .read_only = child->info.read_only };
        int ret = drv->open(img, &o, err, errlen);
        if (ret < 0) {
            img->file = NULL; /* not the filter's to close */
            image_free_node(img);
            return ret;
        }
    }
    *edge = img;
    return 0;
}

/* ---- internal snapshots ---- */

/* The one message for a format without internal snapshots (raw). */
static int no_snapshots(const struct image *img, char *err, size_t errlen)
{
    snprintf(err, errlen, "the %s format has no internal snapshots",
             img->info.format);
    return -ENOTSUP;
}

/* Why a driver's snapshot operation failed, in words for its errno. */
static void snapshot_error(char *err, size_t errlen, const char *what,
                           const char *name, int ret)
{
    char pn[64];
    const char *why;
    switch (ret) {
    case -EEXIST: why = "a snapshot with that name exists"; break;
    case -ENOENT: why = "no snapshot has that id or name"; break;
    case -EINVAL: why = "invalid name (empty, or too long)"; break;
    case -EOVERFLOW:
        why = "a cluster would be referenced more often than the image's "
              "refcount width allows (refcount_bits too small)";
        break;
    case -EROFS: why = "the image is read-only or write-protected"; break;
    case -EFBIG: why = "the snapshot table would grow too large"; break;
    case -ENOTSUP:
        why = "not supported for this image (qcow2: needs version 3, "
              "compat=1.1)";
        break;
    default: why = strerror(-ret); break;
    }
    snprintf(err, errlen, "snapshot %s '%s': %s", what,
             image_printable(name, pn, sizeof(pn)), why);
}

int image_snapshot_create(struct image *img, const char *name,
                          char *err, size_t errlen)
{
    if (!img->ops->snapshot_create)
        return no_snapshots(img, err, errlen);
    int ret = check_writable(img);
    if (ret == 0)
        ret = img->ops->snapshot_create(img, name);
    if (ret < 0)
        snapshot_error(err, errlen, "create", name, ret);
    return ret;
}

int image_snapshot_delete(struct image *img, const char *name_or_id,
                          char *err, size_t errlen)
{
    if (!img->ops->snapshot_delete)
        return no_snapshots(img, err, errlen);
    int ret = check_writable(img);
    if (ret == 0)
        ret = img->ops->snapshot_delete(img, name_or_id);
    if (ret < 0)
        snapshot_error(err, errlen, "delete", name_or_id, ret);
    return ret;
}

int image_snapshot_list(struct image *img, struct image_snapshot_info **out,
                        size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (!img->ops->snapshot_list)
        return no_snapshots(img, err, errlen);
    int ret = img->ops->snapshot_list(img, out, n);
    if (ret < 0)
        snprintf(err, errlen, "snapshot list: %s", strerror(-ret));
    return ret;
}

void image_remove_filter(struct image **edge)
{
    struct image *f = *edge;
    assert(f && f->drv && f->drv->is_filter && f->file);
    *edge = f->file;
    f->file = NULL; /* not closed with the filter */
    image_close(f);
}

struct image *image_skip_filters(struct image *img)
{
    while (img && img->drv && img->drv->is_filter)
        img = img->file;
    return img;
}
