/* qlun — the format-neutral image interface.
 *
 * Everything above this seam (scsi/, handler/) sees an image as a flat array
 * of bytes with a size, plus a few operations that a thin-provisioned LUN
 * needs (zero, discard, block status).  Everything below it (raw, qcow2) is a
 * format driver over host storage (block/host.h).  A backing chain is just a
 * format driver holding another struct image.
 *
 * Conventions, for every operation:
 *  - Offsets and lengths are in bytes.  A request must lie inside
 *    [0, image_size); callers check ranges (scsi/ turns a bad range into
 *    LBA OUT OF RANGE), drivers assert it.
 *  - Errors are negative errno values; 0 is success.  scsi/scsi_errno.c maps
 *    them to SCSI sense in one table.  In particular:
 *      -ENOSPC  host storage is full (thin LUN: DATA PROTECT 27/07)
 *      -EROFS   image opened read-only
 *      -EIO     host I/O failed
 *      -EUCLEAN image metadata is corrupt (the driver marks it so)
 *      -ENOTSUP operation not offered (e.g. zero with IMAGE_NO_FALLBACK)
 *  - All operations may be called concurrently from many threads on the
 *    same image; drivers serialise internally only what they must.
 */
#ifndef QLUN_BLOCK_IMAGE_H
#define QLUN_BLOCK_IMAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct image;

/* Flags for image_writev(). */
#define IMAGE_FUA         (1u << 0) /* durable before returning */

/* Flags for image_zero(). */
#define IMAGE_MAY_UNMAP   (1u << 0) /* the driver may deallocate the range */
#define IMAGE_NO_FALLBACK (1u << 1) /* fail with -ENOTSUP rather than write
                                     * zero-filled buffers */

/* Kinds of extent reported by image_block_status(). */
enum image_extent_kind {
    IMAGE_EXTENT_DATA,        /* allocated, holds data */
    IMAGE_EXTENT_ZERO,        /* reads as zeros; may or may not use space */
    IMAGE_EXTENT_UNALLOCATED, /* deallocated: reads as zeros, uses no space */
};

/* What a driver tells the layers above about itself.  Filled at open and
 * never changed after: what changes while the image is open is its state
 * (image_state()). */
struct image_info {
    const char *format;         /* "raw", "qcow2" */
    uint32_t cluster_size;      /* allocation unit in bytes; 0 = none */
    uint32_t request_alignment; /* smallest efficient I/O unit (>= 1) */
    bool read_only;
    bool can_zero;              /* zero without writing data (metadata, fallocate) */
    bool can_discard;           /* discard/unmap really deallocates */
    bool discard_zeroes;        /* after discard, reads return zeros */
};

/* One internal snapshot, as image_snapshot_list() reports it.  id and name
 * come from the image (untrusted): bytes outside 0x20..0x7e are shown as
 * '?', and longer strings are cut to fit (NUL-terminated). */
struct image_snapshot_info {
    char id[32];
    char name[256];
    uint64_t date_sec;       /* when it was taken (Unix time) */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;  /* guest clock at that time; 0 from qlun */
    uint64_t vm_state_size;  /* saved VM state; 0 from qlun */
    uint64_t disk_size;      /* virtual size of the disk in the snapshot */
};

/* Operations a format driver implements.  Every pointer is required unless
 * marked optional; image.c supplies the fallback for optional ones. */
struct image_ops {
    const char *name;

    /* Read iov's total length at off.  Short reads never happen: past the
     * end of host storage a driver returns zeros. */
    int (*readv)(struct image *img, const struct iovec *iov, int iovcnt,
                 uint64_t off);
    /* Write iov's total length at off; flags: IMAGE_FUA. */
    int (*writev)(struct image *img, const struct iovec *iov, int iovcnt,
                  uint64_t off, unsigned flags);
    /* Make every completed write durable, metadata included. */
    int (*flush)(struct image *img);
    /* Make [off, off+len) read as zeros.  Optional: without it image.c
     * writes zero buffers (or fails -ENOTSUP under IMAGE_NO_FALLBACK). */
    int (*zero)(struct image *img, uint64_t off, uint64_t len, unsigned flags);
    /* Advisory deallocation.  Afterwards the range reads as zeros if
     * info.discard_zeroes, else as unspecified-but-stable data; it never
     * exposes a backing file's data.  Optional: without it, a no-op. */
    int (*discard)(struct image *img, uint64_t off, uint64_t len);
    /* Describe the extent starting at off: its kind and length (> 0,
     * <= len).  Optional: without it, everything is DATA. */
    int (*block_status)(struct image *img, uint64_t off, uint64_t len,
                        enum image_extent_kind *kind, uint64_t *extent_len);
    /* Bytes of host storage in use (for thin-provisioning thresholds).
     * Optional: without it, image_allocated_bytes() says -ENOTSUP. */
    int64_t (*allocated_bytes)(struct image *img);
    /* Release everything; a clean close (flush, clear dirty state). */
    int (*close)(struct image *img);

    /* Internal snapshots.  Optional: without them image.c says -ENOTSUP.
     * create and delete need the image quiesced: no request in flight
     * and none issued until they return (the caller drains the LUN). */
    /* Take a snapshot of the current content under a new, unique name
     * (-EEXIST if taken, -EINVAL if empty). */
    int (*snapshot_create)(struct image *img, const char *name);
    /* Delete the snapshot whose id, else whose name, is name_or_id
     * (-ENOENT if none). */
    int (*snapshot_delete)(struct image *img, const char *name_or_id);
    /* All snapshots, in table order, in a malloc'd array (*out, *n; *out
     * NULL when there are none); the caller frees it. */
    int (*snapshot_list)(struct image *img, struct image_snapshot_info **out,
                         size_t *n);
};

/* Run-time state bits (image_state()).  A driver sets them with
 * image_set_state(); a bit once set stays set until the image is closed,
 * so a caller that saw a bit may act on it without a lock. */
/* The metadata was found corrupt: the image is write-protected from now
 * on (every write, zero and discard fails -EROFS; reads of intact parts
 * go on). */
#define IMAGE_STATE_CORRUPT     (1u << 0)
/* Writes acknowledged before can no longer be made durable: every later
 * flush fails -EIO, so no SYNCHRONIZE CACHE answers GOOD for them. */
#define IMAGE_STATE_WRITES_LOST (1u << 1)

/* The common part of every open image.  Drivers embed it first in their
 * own state and set ops, size and info. */
struct image {
    const struct image_ops *ops;
    uint64_t size;           /* virtual size in bytes */
    struct image_info info;
    _Atomic unsigned state;  /* IMAGE_STATE_* */
};

/* How to open an image (filled by the handler from the cfgstring). */
struct image_open_opts {
    const char *path;       /* host path: regular file or block device */
    const char *format;     /* "raw" or "qcow2"; never guessed */
    bool read_only;
    bool direct_io;         /* O_DIRECT on the host (cache=none, directsync) */
    /* Backing files must resolve inside this directory tree; NULL means
     * the top image's own directory.  "/" allows anything. */
    const char *backing_root;
    /* qcow2 metadata caches in bytes (rounded down to whole tables);
     * 0 = the default, sized from the virtual size (qcow2/cache_size.c).
     * Backing images always use the default. */
    uint64_t l2_cache_bytes;
    uint64_t refcount_cache_bytes;
};

/* Open an image.  On failure returns a negative errno and writes one
 * human-readable line naming the cause into err (errlen bytes). */
int image_open(const struct image_open_opts *opts, struct image **out,
               char *err, size_t errlen);

/* Thin wrappers: assert the range, dispatch, supply fallbacks. */
int image_readv(struct image *img, const struct iovec *iov, int iovcnt,
                uint64_t off);
int image_writev(struct image *img, const struct iovec *iov, int iovcnt,
                 uint64_t off, unsigned flags);
int image_read(struct image *img, void *buf, size_t len, uint64_t off);
int image_write(struct image *img, const void *buf, size_t len, uint64_t off,
                unsigned flags);
int image_flush(struct image *img);
int image_zero(struct image *img, uint64_t off, uint64_t len, unsigned flags);
int image_discard(struct image *img, uint64_t off, uint64_t len);
int image_block_status(struct image *img, uint64_t off, uint64_t len,
                       enum image_extent_kind *kind, uint64_t *extent_len);
int64_t image_allocated_bytes(struct image *img);
/* Internal snapshots (see struct image_ops).  A format without them
 * (raw) gives -ENOTSUP and writes a line saying so into err; any other
 * failure also writes its cause there.  list: *out is NULL when n is 0. */
int image_snapshot_create(struct image *img, const char *name,
                          char *err, size_t errlen);
int image_snapshot_delete(struct image *img, const char *name_or_id,
                          char *err, size_t errlen);
int image_snapshot_list(struct image *img, struct image_snapshot_info **out,
                        size_t *n, char *err, size_t errlen);
/* IMAGE_STATE_* bits set so far. */
unsigned image_state(const struct image *img);
/* For drivers: set state bits (never clears). */
void image_set_state(struct image *img, unsigned bits);
/* Close and free; returns the driver's close status (the image is freed
 * either way).  NULL is a no-op. */
int image_close(struct image *img);

/* Driver entry points, used by image_open(). */
int raw_open(const struct image_open_opts *opts, struct image **out,
             char *err, size_t errlen);
int qcow2_open(const struct image_open_opts *opts, struct image **out,
               char *err, size_t errlen);

#endif
