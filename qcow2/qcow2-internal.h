/* qlun — qcow2 engine internals, shared by the files of qcow2/.
 *
 * Layout of the engine (one concept per file):
 *   header.c    open: parse and validate the header, extensions, tables;
 *               in-place header field updates (feature bits, reftable)
 *   snapshot.c  parse and validate the internal snapshot table
 *   cache.c     bounded write-back cache of cluster-sized tables
 *               (one instance for L2 tables, one for refcount blocks)
 *   refcount.c  refcount lookup/update, cluster allocation, refcount table
 *               growth, deferred frees, rebuild after a crash (dirty bit),
 *               COPIED flags derived from the refcounts
 *   cluster.c   L2 entry decoding/validation, L2 table allocation and COW
 *   overlap.c   guest data never written over metadata (overlap checks)
 *   compress.c  zlib (raw deflate) and zstd decompression of one cluster
 *   io.c        readv/writev/zero/discard/block_status/flush/close,
 *               the guest range lock
 *   resize.c    changing the virtual size (L1 growth, guarded shrink)
 *   prealloc.c  host blocks allocated ahead of the image's end (files)
 *   backing_file.c  naming a new backing file (cluster 0 rewrite)
 *
 * Locking.  q->lock (the "metadata lock") protects every field below that
 * is not constant after open: the L1 table, the refcount table, both
 * caches, the allocator, the pending-free list, header state.  Metadata
 * I/O (tables, header) is done with it held, except the read of an L2
 * table that qcow2_get_l2e misses (cache.c, "Loading without the lock"),
 * so that a miss does not stall commands whose tables are cached, and a
 * flush with no metadata to write (qcow2_flush: fdatasync alone); guest
 * data I/O (preadv and pwritev of data clusters, backing reads,
 * decompression) never is.
 * A guest range lock (io.c) keeps requests on overlapping guest clusters
 * apart: reads and writes that change no mapping (in place into owned,
 * fully allocated clusters) share it; writes that allocate, zeroes and
 * discards take it exclusively.  So
 * two allocating writes to one cluster are serialised, a read never sees an
 * allocation half done, and a host cluster is never freed (its L2 entry
 * changed) while a request on that guest cluster still uses it.
 *
 * Lock order with the layers above and below (SCSI, other nodes, host):
 * docs/locking.md.
 *
 * Crash ordering (see /work/shared/notes/qcow2.md):
 *   - data is written (pwritev returned) before the L2 entry is updated in
 *     the cache; a dirty L2 table is written back only after the refcount
 *     cache was written back (unless lazy refcounts) and file_flush();
 *   - a new or copied L2 table is written and flushed before its L1 entry;
 *   - refcount decreases are queued (pending frees) and applied only after
 *     the L2/L1 change that dropped the reference is durable (meta sync);
 *     a cluster they free is given back to the host (hole punched, runs
 *     of adjacent clusters in one call) in that same sync, before q->lock
 *     is released, so never after it could have been allocated again.
 *   - snapshot create/delete (snapshot_ops.c) change refcounts and COPIED
 *     flags together, which no order makes consistent at every instant:
 *     they run with the dirty bit set (the rebuild at open then re-derives
 *     both); the new snapshot table and L1 copy are written and flushed
 *     before the one header write that switches tables.
 *
 * Memory.  Bounded, set at open (cache_size.c): by default the L2 cache
 * holds every L2 table of the virtual disk (one table maps cluster_size/8
 * guest clusters: 128 MiB per TiB of virtual size with 64 KiB clusters),
 * capped at 32 MiB (a 256 GiB disk), at least 8 tables; the refcount
 * cache a quarter of that, at least 4 blocks.  The cfgstring may set
 * either (l2_cache_size, refcount_cache_size).  A cache reserves its
 * tables as address space and touches them as they fill.  Per table,
 * cache.c keeps a bitmap of its dirty host I/O units.
 * Proportional: the L1 table (8 bytes per L2 table: 16 KiB per
 * TiB of virtual size with 64 KiB clusters) and the refcount table (8 bytes
 * per refcount block: 4 KiB per TiB of host with 64 KiB clusters, 16-bit
 * refcounts).  A rebuild (dirty image) needs 4 bytes per host cluster while
 * it runs.
 */
#ifndef QLUN_QCOW2_INTERNAL_H
#define QLUN_QCOW2_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/file.h"
#include "block/image.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */


/* Header field offsets (bytes). */
#define HDR_BACKING_OFFSET   8
#define HDR_BACKING_SIZE    16
#define HDR_CLUSTER_BITS    20
#define HDR_SIZE            24
#define HDR_CRYPT           32
#define HDR_L1_SIZE         36
#define HDR_L1_OFFSET       40
#define HDR_REFTABLE_OFFSET 48
#define HDR_REFTABLE_CLUSTERS 56
#define HDR_NB_SNAPSHOTS    60
#define HDR_SNAPSHOTS_OFFSET 64
#define HDR_INCOMPAT        72
#define HDR_COMPAT          80
#define HDR_AUTOCLEAR       88
#define HDR_REFCOUNT_ORDER  96
#define HDR_HEADER_LENGTH  100
#define HDR_COMPRESSION    104
#define HDR_V2_LENGTH       72
#define HDR_V3_MIN_LENGTH  104

/* Feature bits. */
#define INCOMPAT_DIRTY      (1ull << 0)
#define INCOMPAT_CORRUPT    (1ull << 1)
#define INCOMPAT_DATA_FILE  (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2      (1ull << 4)
#define INCOMPAT_KNOWN      ((1ull << 5) - 1)
#define COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Header extensions. */
#define EXT_END           0x00000000u
#define EXT_BACKING_FMT   0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_BITMAPS       0x23852875u
#define EXT_FDE           0x0537be77u
#define EXT_DATA_FILE     0x44415441u

/* L1/L2 entry bits. */
#define OFLAG_COPIED     (1ull << 63)
#define OFLAG_COMPRESSED (1ull << 62)
#define OFLAG_ZERO       (1ull << 0)
#define L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define L1E_RESERVED     (~(L1E_OFFSET_MASK | OFLAG_COPIED))
#define L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define L2E_STD_RESERVED 0x3f000000000001feull /* bits 1-8, 56-61 */
#define REFT_OFFSET_MASK 0xfffffffffffffe00ull

/* Implementation limits (the same as QEMU's, so anything it makes opens). */
#define MAX_L1_BYTES       (32u << 20)
#define MAX_REFTABLE_BYTES (8u << 20)
#define MAX_SNAPSHOTS      65536u
#define MAX_SNAPSHOT_TABLE_BYTES (64u << 20)
#define MAX_BACKING_NAME   1023u

/* What one guest subcluster (or whole cluster without extended L2) is. */
enum sc_kind {
    SC_UNALLOC,    /* reads from the backing file, or zeros */
    SC_ZERO,       /* reads as zeros */
    SC_DATA,       /* host data at sc.host */
    SC_COMPRESSED, /* the whole cluster is compressed, descriptor in entry */
};

/* A decoded, validated L2 entry. */
struct l2e {
    uint64_t entry;   /* raw first word */
    uint64_t bitmap;  /* raw second word (extended L2), else 0 */
    uint64_t host;    /* host cluster offset, 0 if none (not compressed) */
    bool copied;      /* bit 63: we own the host cluster (refcount 1) */
    bool compressed;
    /* Non-extended images describe the cluster as one subcluster: then
     * alloc/zero below have only bit 0 meaningful. */
    uint32_t alloc;   /* subclusters with data at host + i * sc_size */
    uint32_t zero;    /* subclusters that read as zeros */
};

struct cache;
struct pending_free;
struct range_lock;

/* One entry of the internal snapshot table.  raw is the entry as it is on
 * disk without its padding (fixed part, extra data, id, name): the table
 * is rewritten from these bytes, so extra data this engine does not know
 * survives.  raw points into the block q->snapshots was allocated with
 * (one free() releases both). */
struct snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    uint32_t extra_len;
    uint16_t id_len, name_len;
    uint32_t raw_len;
    const uint8_t *raw;
};

struct qcow2 {
    struct image img;         /* first: struct image * casts to qcow2;
                               * img.file: the host storage (block/file.h) */
    char *path;

    /* Header, constant after open unless noted. */
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t refcount_order;  /* refcount_bits = 1 << refcount_order */
    uint64_t refcount_max;
    uint64_t incompat;        /* changes: dirty, corrupt (under lock) */
    uint64_t compat;
    uint64_t autoclear;       /* cleared before the first write */
    uint32_t header_length;
    uint8_t compression_type; /* 0 zlib, 1 zstd */
    bool extended_l2;
    uint32_t l2_entry_size;   /* 8 or 16 */
    uint32_t l2_bits;         /* log2(entries per L2 table) */
    uint32_t subclusters;     /* 32 with extended L2, else 1 */
    uint64_t sc_size;         /* cluster_size / subclusters */
    uint32_t csize_shift;     /* compressed descriptor: 62 - (cb - 8) */
    uint64_t csize_mask;
    uint64_t coffset_mask;

    uint64_t *l1;             /* host byte order; under lock */
    uint32_t l1_size;
    uint64_t l1_offset;

    uint64_t *reftable;       /* host byte order; under lock */
    uint64_t reftable_entries;
    /* 1 + the index of the last non-zero reftable entry: the entries
     * after it are zero, so overlap.c looks no further (refcount.c keeps
     * it whenever an entry or the table changes). */
    uint64_t reftable_used;
    uint64_t reftable_offset;
    uint32_t reftable_clusters;
    uint32_t rb_bits;         /* log2(refcount entries per block) */

    struct snapshot *snapshots;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_bytes;

    /* The backing file is the node's child q->img.backing (NULL:
     * unallocated reads as zeros), opened by block/backing.c. */

    /* Runtime state, under lock. */
    pthread_mutex_t lock;
    struct range_lock *ranges; /* held guest ranges (io.c) */
    struct cache *l2_cache;
    struct cache *rb_cache;
    uint64_t free_hint;       /* no free cluster below this index */
    uint64_t host_end;        /* bytes: files: max(size at open, highest
                               * allocation); devices: capacity.  On files
                               * nothing at or past it was ever written:
                               * a cluster allocated there reads as zeros
                               * (io.c alloc_data_cluster) */
    uint64_t dev_clusters;    /* devices: clusters that fit; files: 0 */
    bool prealloc;            /* preallocating ahead (prealloc.c) */
    uint64_t prealloc_end;    /* bytes: the file's blocks were
                               * preallocated up to here (fallocate mode 0:
                               * its length too); host_end at open */
    struct pending_free *pending;
    size_t npending, pending_cap;
    bool lazy;                /* lazy refcounts in use (dirty bit) */
    bool write_ready;         /* header prepared for writing */
    uint8_t *zero_buf;        /* cluster_size zeros, read-only */
};

static inline struct qcow2 *to_qcow2(struct image *img)
{
    return (struct qcow2 *)img;
}

static inline bool qcow2_is_corrupt(const struct qcow2 *q)
{
    return image_state(&q->img) & IMAGE_STATE_CORRUPT;
}

/* ---- header.c ---- */

/* Write len bytes of header fields at field (one write, so fields that
 * must change together do) and file_flush().  Called with lock held. */
int qcow2_write_header(struct qcow2 *q, unsigned field, const void *b,
                       size_t len);
/* The same for one 8-byte field (big endian). */
int qcow2_write_header_u64(struct qcow2 *q, unsigned field, uint64_t v);

/* Mark the image corrupt: log msg to stderr, set IMAGE_STATE_CORRUPT
 * (writes refused from now on) and the corrupt bit on disk (v3,
 * read-write).  Metadata is never written again: L2 entries of
 * acknowledged writes still only in the cache are lost, and then
 * IMAGE_STATE_WRITES_LOST fails every later flush.  Returns -EUCLEAN so
 * callers can "return qcow2_corrupt(...)".  Lock held. */
int qcow2_corrupt(struct qcow2 *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Release everything the driver holds (the host fd, tables, caches)
 * without writing anything; the node itself and its children are the
 * generic layer's (image_close, image_free_node). */
void qcow2_destroy(struct qcow2 *q);

/* Before the first modification: clear autoclear bits, set the dirty bit
 * under lazy refcounts.  Idempotent.  Lock held. */
int qcow2_prepare_write(struct qcow2 *q);

/* ---- backing_file.c ---- */

/* struct image_ops.change_backing_file. */
int qcow2_change_backing_file(struct image *img, const char *name,
                              const char *format);

/* ---- snapshot.c ---- */

/* Read and validate the snapshot table described by the header fields.
 * Fills q->snapshots/nb_snapshots/snapshots_bytes.  One line into err. */
int qcow2_read_snapshots(struct qcow2 *q, uint32_t nb, uint64_t offset,
                         char *err, size_t errlen);

/* The fields of a new snapshot table entry. */
struct snapshot_new {
    uint64_t l1_offset;
    uint32_t l1_size;
    const char *id, *name;
    uint64_t date_sec;
    uint32_t date_nsec;
    uint64_t disk_size;
};

/* A snapshot table in memory, ready to be written at a new place: the
 * entries of q->snapshots except the one at index skip (skip >= nb:
 * none), then add (if not NULL).  One block, as qcow2_read_snapshots
 * makes it: snaps (the parsed entries, NULL when there are none), then
 * buf (the padded table, bytes long) which they point into. */
struct snapshot_table {
    uint8_t *buf;
    uint64_t bytes;
    struct snapshot *snaps;
    uint32_t nb;
};
int qcow2_build_snapshot_table(const struct qcow2 *q, uint32_t skip,
                               const struct snapshot_new *add,
                               struct snapshot_table *t);
void qcow2_free_snapshot_table(struct snapshot_table *t);
/* The index of the snapshot whose id, else whose name, is s; -1: none. */
int64_t qcow2_find_snapshot(const struct qcow2 *q, const char *s);
/* The id and the name of snapshot i, equal to s? */
bool qcow2_snapshot_id_is(const struct snapshot *sn, const char *s);
bool qcow2_snapshot_name_is(const struct snapshot *sn, const char *s);
/* The lowest free numeric id as QEMU picks it (highest numeric id + 1). */
uint64_t qcow2_next_snapshot_id(const struct qcow2 *q);
/* struct image_ops.snapshot_list. */
int qcow2_snapshot_list(struct image *img, struct image_snapshot_info **out,
                        size_t *n);

/* ---- snapshot_ops.c ---- */

/* struct image_ops.snapshot_create and snapshot_delete. */
int qcow2_snapshot_create(struct image *img, const char *name);
int qcow2_snapshot_delete(struct image *img, const char *name_or_id);

/* ---- cache.c ---- */

/* A cache of nslots cluster-sized tables keyed by host offset.  All calls
 * with q->lock held.  Tables are pinned between get and put; only unpinned
 * tables are evicted.  Before a dirty table is written back, pre_write
 * (if set) runs; it establishes ordering dependencies. */
struct cache *cache_new(struct qcow2 *q, size_t nslots,
                        int (*pre_write)(struct qcow2 *q));
void cache_free(struct cache *c);
/* Get the table at host offset off, reading it (read=true) or starting from
 * zeros (read=false, for a freshly allocated table). */
int cache_get(struct cache *c, uint64_t off, bool read, void **table);
/* cache_get(read=true), but a miss reads the table with q->lock dropped
 * (other commands go on meanwhile; held again on return).  -EAGAIN: the
 * cached tables changed meanwhile, so the copy read may be stale and the
 * caller must redo its lookup (from the L1 table) with cache_get. */
int cache_get_unlocked(struct cache *c, uint64_t off, void **table);
/* Loads of cache_get_unlocked announced at once (so that a second miss on
 * the table waits for the first); more go unannounced. */
#define CACHE_MAX_LOADING 16
void cache_put(struct cache *c, void *table);
/* Bytes [at, at+len) of a pinned table changed: write-back writes (at
 * least) the host I/O units covering them, not the whole table. */
void cache_mark_dirty(struct cache *c, void *table, size_t at, size_t len);
/* Write back every dirty table (pre_write first unless skip_pre). */
int cache_writeback(struct cache *c, bool skip_pre);
bool cache_has_dirty(struct cache *c);
/* Forget the table at off (its cluster was freed); drops dirty data. */
void cache_forget(struct cache *c, uint64_t off);
/* Drop everything, dirty or not (crash simulation, rebuild). */
void cache_invalidate(struct cache *c);
/* Number of tables the cache holds at most. */
size_t cache_slots(const struct cache *c);
/* Slots for the L2 and refcount caches of q (header.c): requested bytes
 * (0 = default) become table counts, see "Memory" above. */
size_t qcow2_l2_cache_slots(const struct qcow2 *q, uint64_t bytes);
size_t qcow2_rb_cache_slots(const struct qcow2 *q, size_t l2_slots,
                            uint64_t bytes);

/* ---- refcount.c ---- */

/* Recount reftable_used after the refcount table was read or replaced. */
void qcow2_reftable_count_used(struct qcow2 *q);
/* Refcount of host cluster index ci (0 when no block covers it). */
int qcow2_get_refcount(struct qcow2 *q, uint64_t ci, uint64_t *rc);
/* Add delta to the refcount of cluster ci; creates refcount blocks and
 * grows the refcount table as needed.  Underflow/overflow → -EUCLEAN. */
int qcow2_update_refcount(struct qcow2 *q, uint64_t ci, int64_t delta);
/* Allocate between 1 and n contiguous free clusters (refcount := 1);
 * returns their host byte offset in *off and the count (> 0), or -ENOSPC
 * (devices: nothing free below the device end, even after applying the
 * queued frees), or another error.  Nothing may be pinned in the caches. */
int64_t qcow2_alloc_clusters(struct qcow2 *q, uint64_t n, uint64_t *off);
/* Queue a refcount decrement for the host clusters an L2/L1 entry used;
 * applied by qcow2_meta_sync() once the entry dropping them is durable.
 * compressed: entry is a compressed descriptor.  Never fails: the caller
 * has already linked the replacement (without memory to queue, it syncs
 * and releases at once, or at worst leaks the clusters). */
void qcow2_free_later(struct qcow2 *q, uint64_t entry, bool compressed);
/* Host clusters freed (refcount now 0) and not given back to the host
 * yet: clusters [first, first + n), collected so that a run goes back in
 * one file_discard (a hole punched on a file can cost a device discard
 * per call: 1 GiB of 64 KiB clusters took 15 s one by one). */
struct give_back {
    uint64_t first, n;
};
/* Drop one reference from cluster ci; if it is now free, add it to g
 * (flushing g first if ci does not extend its run).  Lock held. */
int qcow2_drop_ref(struct qcow2 *q, uint64_t ci, struct give_back *g);
/* Give g's run back to the host (errors ignored: the space merely stays
 * allocated).  Must run before q->lock is released: after that a freed
 * cluster may be allocated and written, and the hole would destroy it. */
void qcow2_give_back_flush(struct qcow2 *q, struct give_back *g);
/* Decrement immediately: for clusters nothing on disk references yet. */
void qcow2_free_now(struct qcow2 *q, uint64_t off, uint64_t n);
/* Make every metadata change durable in order: refcount blocks (unless
 * lazy), flush, L2 tables, flush, then apply pending frees (and write
 * their refcounts unless lazy, flush).  Lock held. */
int qcow2_meta_sync(struct qcow2 *q);
/* Rebuild all refcounts from the L1/L2/snapshot tables (dirty image) and
 * write a fresh refcount table and blocks.  Lock held (or single thread). */
int qcow2_rebuild_refcounts(struct qcow2 *q, char *err, size_t errlen);
/* Host clusters spanned by a compressed descriptor: first byte, bytes. */
void qcow2_compressed_range(const struct qcow2 *q, uint64_t entry,
                            uint64_t *off, uint64_t *len);
/* Make COPIED in the active L1 and L2 tables say exactly "refcount is
 * 1" (the v3 rule, and what the write path trusts to write in place),
 * and write what changed: L2 tables (after the refcounts), then the L1
 * table, flushed.  Lock held. */
int qcow2_sync_copied(struct qcow2 *q);
/* pre_write hook of the L2 cache: refcounts (unless lazy) then flush. */
int qcow2_l2_pre_write(struct qcow2 *q);

/* ---- cluster.c ---- */

/* Decode and validate the L2 entry (entry, bitmap).  Invalid → marks the
 * image corrupt and returns -EUCLEAN.  Lock held. */
int qcow2_decode_l2e(struct qcow2 *q, uint64_t entry, uint64_t bitmap,
                     uint64_t guest_off, struct l2e *e);
/* Validate an L1 entry and return its L2 table offset (0: none). */
int qcow2_check_l1e(struct qcow2 *q, uint32_t l1_index, uint64_t *l2_off);
/* Look up the L2 entry for guest cluster gc, decoded.  Lock held, but
 * dropped while an L2 table is read from the host (so a miss does not stall
 * commands whose tables are cached): the caller must hold the guest range
 * lock on gc (which keeps its entry and host cluster as they are) and must
 * not rely on other state staying unchanged across the call. */
int qcow2_get_l2e(struct qcow2 *q, uint64_t gc, struct l2e *e);
/* Store (entry, bitmap) as the L2 entry for guest cluster gc, allocating or
 * copying (COW) the L2 table first if needed.  Lock held. */
int qcow2_set_l2e(struct qcow2 *q, uint64_t gc, uint64_t entry,
                  uint64_t bitmap);
/* Kind of subcluster sc of a decoded entry. */
enum sc_kind qcow2_sc_kind(const struct qcow2 *q, const struct l2e *e,
                           unsigned sc);

/* ---- overlap.c ---- */

/* Which metadata host [off, off+len) overlaps ("the L1 table", ...), or
 * NULL.  Lock held. */
const char *qcow2_metadata_at(const struct qcow2 *q, uint64_t off,
                              uint64_t len);
/* Before guest data goes in place to host [off, off+len): if that is
 * metadata, mark the image corrupt and return -EUCLEAN.  Lock held. */
int qcow2_check_data_target(struct qcow2 *q, uint64_t off, uint64_t len);

/* ---- compress.c ---- */

/* Decompress the cluster described by compressed L2 entry into out
 * (cluster_size bytes).  Reads the host without the lock.  Malformed data
 * → -EUCLEAN (the caller marks the image corrupt). */
int qcow2_decompress_cluster(struct qcow2 *q, uint64_t entry, uint8_t *out);

/* ---- resize.c ---- */

/* image_ops.resize (block/image.h). */
int qcow2_resize(struct image *img, uint64_t new_size, bool force,
                 char *err, size_t errlen);

/* ---- prealloc.c ---- */

/* Preallocation steps: at least MIN (and ending on a MIN boundary), an
 * eighth of the image, at most MAX (QEMU's preallocate filter's
 * prealloc-align and prealloc-size). */
#define QCOW2_PREALLOC_MIN (1ull << 20)
#define QCOW2_PREALLOC_MAX (128ull << 20)

/* The step when the image holds host_end bytes. */
uint64_t qcow2_prealloc_step(uint64_t host_end);
/* At open, after host_end is known: decide whether to preallocate
 * (writable regular files opened with O_DIRECT). */
void qcow2_prealloc_open(struct qcow2 *q);
/* After host_end was raised, before anything is written past the old
 * value: preallocate a step ahead if host_end passed prealloc_end.  Lock
 * held.  Never fails (a failed fallocate only means no preallocation). */
void qcow2_prealloc_ahead(struct qcow2 *q);
/* At close, after the last flush: truncate the file back to host_end
 * (the preallocation not reached).  Lock held. */
int qcow2_prealloc_close(struct qcow2 *q);
/* struct image_ops.allocated_bytes: the host's use minus the
 * preallocation not yet reached by host_end. */
int64_t qcow2_allocated_bytes(struct image *img);

/* ---- io.c ---- */

extern const struct image_ops qcow2_ops;

/* Test hook: drop the image as a crash would (no writeback, no header
 * update, fd closed), freeing memory.  Only for tests. */
void qcow2_simulate_crash(struct image *img);

/* create.c: a new, empty version-3 image (block_driver.create). */
int qcow2_create(const struct image_create_opts *opts, char *err,
                 size_t errlen);

#endif
