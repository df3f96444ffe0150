/* qlun — the format-neutral image interface, and the image graph.
 *
 * Everything above this seam (scsi/, handler/) sees an image as a flat array
 * of bytes with a size, plus a few operations that a thin-provisioned LUN
 * needs (zero, discard, block status), and knows no format by name.
 *
 * The graph.  An open image is a graph of nodes (struct image), each made
 * by a driver (block/driver.h) from the table of block/drivers.c:
 *  - a format node (raw, qcow2) over its `file` child, a protocol node
 *    (block/file.h: a regular file or block device), through which it
 *    does all its host I/O and from whose info it learns what the
 *    storage is;
 *  - its `backing` child: the node reads of what this layer does not
 *    allocate go to.  The generic layer owns backing chains
 *    (block/backing.c): a driver only reports the name and format its
 *    image names; resolving, confinement under the backing root, the
 *    depth limit and format probing are done once for all formats, and
 *    backing nodes are always read-only;
 *  - a filter node (driver is_filter) has one child, `file`, the node it
 *    filters; every operation it does not define goes to that child.
 *    image_insert_filter() puts one above any node (the top, or a backing
 *    child).
 * A node owns its children: image_close() closes the node, then them.
 * Block status: a driver answers for its own layer only (UNALLOCATED:
 * ask the backing child); image_block_status_above() gives what a reader
 * of the whole chain sees.
 * A node's properties (size, info, children) are fixed once image_open()
 * returns; what changes while it is open is its state (image_state():
 * atomic bits, only ever set), and an edge image_insert_filter() rewires
 * while no request is in flight.  A protocol node's length is not a
 * property: formats ask it (file_length).  Lock order across the layers:
 * docs/locking.md.
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
struct block_driver;

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
    const char *format;         /* the driver's name */
    uint32_t cluster_size;      /* allocation unit in bytes; 0 = none */
    uint32_t request_alignment; /* smallest efficient I/O unit (>= 1) */
    bool read_only;
    bool can_zero;              /* zero without writing data (metadata, fallocate) */
    bool can_discard;           /* discard/unmap really deallocates */
    bool discard_zeroes;        /* after discard, reads return zeros */
    /* What the storage is: set by the protocol node (block/file.h), for
     * the format above it. */
    uint32_t mem_alignment;     /* I/O buffer alignment (1: any) */
    bool is_device;             /* a block device: fixed capacity */
    bool zeroes_past_eof;       /* past its end it reads as zeros and grows
                                 * when written (regular files) */
};

/* Operations a driver implements.  For a format every pointer is required
 * unless marked optional; image.c supplies the fallback for optional ones.
 * For a filter every pointer is optional: one left NULL is passed to the
 * filter's child (`file`) as it is. */
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
    /* Describe the extent starting at off in this layer only: its kind
     * and length (> 0, <= len).  UNALLOCATED: this layer has nothing
     * there, reads go to the backing child (image_block_status_above
     * asks it).  Optional: without it, everything is DATA. */
    int (*block_status)(struct image *img, uint64_t off, uint64_t len,
                        enum image_extent_kind *kind, uint64_t *extent_len);
    /* Bytes of host storage in use (for thin-provisioning thresholds).
     * Optional: without it, a node with a file child reports that
     * child's (a format: the space its file takes), else -ENOTSUP. */
    int64_t (*allocated_bytes)(struct image *img);
    /* Release everything; a clean close (flush, clear dirty state).
     * Optional for filters only. */
    int (*close)(struct image *img);
    /* Make the virtual size new_size (image_resize() has checked it: a
     * multiple of 512, not the current size, the image writable).  Growing:
     * the new range reads as zeros, never as a backing file's data.
     * Shrinking only with force, and never dropping data the format can
     * tell is there; what a forced shrink drops is said in err (a note
     * for the log, also on success).  Durable before it returns: a crash
     * leaves the old size or the new one, both valid.  Called with no
     * other operation in flight on img.  On failure the size is
     * unchanged and err names the cause.  Optional: without it,
     * image_resize() says -ENOTSUP. */
    int (*resize)(struct image *img, uint64_t new_size, bool force,
                  char *err, size_t errlen);

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

    /* Make the image name the backing file name (NULL: none) with format
     * format (NULL: not recorded), durably, so that a crash leaves the
     * old name or the new one (image_set_backing flushes img first and
     * updates img->backing_name and the graph after).  Only with no
     * request in flight on img.  Optional: without it, the format cannot
     * name a backing file and image_set_backing says -ENOTSUP. */
    int (*change_backing_file)(struct image *img, const char *name,
                               const char *format);
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

/* A node of the image graph: the common part of every open image.
 * image_open() allocates the driver's instance_size (struct image first)
 * and fills drv, ops, filename and info.read_only; the driver's open
 * fills size and info.  Everything here is fixed once image_open()
 * returns, except state, size (image_resize, with nothing else in
 * flight) and edges (image_insert_filter). */
struct image {
    const struct image_ops *ops;
    const struct block_driver *drv; /* NULL: built by hand (tests); then
                                     * ops->close frees the node too */
    uint64_t size;           /* virtual size in bytes */
    struct image_info info;
    _Atomic unsigned state;  /* IMAGE_STATE_* */
    char *filename;          /* the path opened */
    /* Children, owned: image_close() closes them after the node. */
    struct image *backing;   /* reads of what this layer does not
                              * allocate; NULL: they read as zeros */
    struct image *file;      /* formats: their protocol node (host
                              * storage, block/file.h); filters: the
                              * node filtered */
    /* What the driver's open found in the image, for block/backing.c
     * (NULL: none): the backing file's name as written in the image, and
     * its format if the image says it (else it is probed). */
    char *backing_name;
    char *backing_format;
};

/* How to open an image (filled by the handler from the cfgstring). */
struct image_open_opts {
    const char *path;       /* host path: regular file or block device */
    const char *format;     /* a driver's name (block/driver.h); never
                             * guessed */
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
/* The status a reader of the whole chain sees at off: that of the
 * topmost layer, from img down to (not including) base, that allocates
 * it (NULL base: the whole chain); UNALLOCATED only where no layer does.
 * layer (optional) gets the node whose layer answered.  image_block_status
 * is that of img's own layer. */
int image_block_status_above(struct image *img, struct image *base,
                             uint64_t off, uint64_t len,
                             enum image_extent_kind *kind,
                             uint64_t *extent_len, struct image **layer);
/* The node below img in its backing chain (NULL: none). */
struct image *image_backing_child(const struct image *img);
int64_t image_allocated_bytes(struct image *img);
/* The node's size now: its virtual size, except for a protocol node
 * (host storage), whose length grows as its format writes past the end
 * (size holds its length at open).  Negative errno on failure. */
int64_t image_current_size(struct image *img);
/* Change the virtual size (see image_ops.resize); no other operation may
 * be in flight on img.  Returns 0 or a negative errno; err holds one line:
 * the cause of a failure, or a note after a forced shrink (else empty). */
int image_resize(struct image *img, uint64_t new_size, bool force,
                 char *err, size_t errlen);
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
/* Put a new node of filter drv (drv->is_filter) where *edge points: above
 * the node *edge (the top handle of a graph, or a node's backing child),
 * which becomes the filter's `file` child.  The filter takes its size and
 * info from that child; every operation it leaves NULL goes to the child.
 * Only while no request is in flight on *edge. */
int image_insert_filter(struct image **edge, const struct block_driver *drv,
                        char *err, size_t errlen);
/* Take the filter node *edge (drv->is_filter) out of the graph: its child
 * takes its place at *edge, and the filter node alone is closed (its
 * driver's close, then freed; the child stays open).  Only while no
 * request is in flight on *edge. */
void image_remove_filter(struct image **edge);
/* img, or the first node below it that is not a filter (down the filters'
 * `file` edges). */
struct image *image_skip_filters(struct image *img);
/* ---- Changing a graph's chain (block jobs; block/chain_edit.c) ---- */
/* The node of img's chain (img, its backing child, ... down; filters
 * skipped) whose file is path, compared after realpath; NULL if none. */
struct image *image_chain_find(struct image *img, const char *path);
/* Reopen the node *edge points at with opts (path and format: the node's
 * own; read_only as opts says), in place: the new node takes over the old
 * one's backing child, and the old node alone is closed (a clean close).
 * For a job that must write into a backing node (commit's base, stream's
 * intermediate) and give it back read-only after.  Only while no request
 * is in flight on *edge.  On failure *edge is unchanged and open. */
int image_reopen(struct image **edge, const struct image_open_opts *opts,
                 char *err, size_t errlen);
/* Make img's backing file new_backing, a node of img's chain below it, or
 * none (NULL): first img is flushed, then its image names new_backing
 * (its path relative to img's directory where it lies under it, and its
 * format) durably, so that a crash leaves the old name or the new one and
 * never names a chain that lacks data img relied on from the old one;
 * then the graph's edge changes and the nodes that were between img and
 * new_backing are closed.  The caller has copied into img (or
 * new_backing) whatever they held.  Only while no request is in flight on
 * img.  A format that cannot store a backing name (raw): -ENOTSUP. */
int image_set_backing(struct image *img, struct image *new_backing,
                      char *err, size_t errlen);
/* Close img and the nodes of its chain down to keep, which stays open
 * and is detached from its parent (an active commit's pivot: the base
 * outlives the layers above it).  keep must be in img's chain. */
int image_close_above(struct image *img, struct image *keep);

/* Close and free; returns the driver's close status (the image is freed
 * either way).  NULL is a no-op. */
int image_close(struct image *img);

/* How to make a new image file (image_create_overlay()). */
struct image_create_opts {
    const char *path;           /* created exclusively: never clobbers */
    uint64_t size;              /* virtual size in bytes */
    uint32_t cluster_size;      /* 0 = the format's default */
    const char *backing_name;   /* stored as given; NULL = none */
    const char *backing_format; /* NULL = not recorded */
};

/* Make a new qcow2 image at overlay_path whose backing file is the image
 * top (its filename): the overlay of a live external snapshot.
 * overlay_path must be absolute, must not exist, and its directory must
 * lie inside root (as backing files must); the backing name is stored
 * relative to the overlay's directory, with top's format.  cluster_size
 * 0 takes top's (64 KiB if top has none).  The file is durable on
 * return; on failure nothing is left behind. */
int image_create_overlay(const struct image *top, const char *overlay_path,
                         const char *root,
                         uint32_t cluster_size, char *err, size_t errlen);
/* The format image_create_overlay() makes (to open the overlay with). */
const char *image_overlay_format(void);


#endif
