/* qlun — block drivers: what makes a node of the image graph.
 *
 * A format (qcow2, raw) or a filter is one file defining one struct
 * block_driver, plus one entry in the table of block/drivers.c.  Nothing
 * above block/ names a format: the handler looks a driver up by the name
 * the user gave (block_driver_find) and lists the names in its messages
 * (block_driver_names).
 */
#ifndef QLUN_BLOCK_DRIVER_H
#define QLUN_BLOCK_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct image;
struct image_ops;
struct image_open_opts;
struct image_create_opts;

/* Bytes block_driver_probe() looks at. */
#define BLOCK_PROBE_BYTES 512

struct block_driver {
    const char *name;
    /* Bytes image_open() allocates for a node of this driver: the driver's
     * state, with struct image first. */
    size_t instance_size;
    /* How sure the driver is (0 = not mine .. 100 = certainly mine) that
     * a file starting with buf (len bytes, the rest of the first
     * BLOCK_PROBE_BYTES reads as zeros) and named filename is in its
     * format.  Used ONLY for a backing file whose overlay names no format:
     * the top image's format is never guessed (block/image.c).  Optional:
     * without it, never chosen by probing. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);
    /* Open opts->path into img: zeroed instance_size bytes whose common
     * part (drv, ops, filename, info.read_only) is filled.  Fills size and
     * info; a format whose image names a backing file sets backing_name
     * (and backing_format when the image says it) and the generic layer
     * opens that (block/backing.c).  On failure releases what it took
     * (not img itself) and writes one line into err. */
    int (*open)(struct image *img, const struct image_open_opts *opts,
                char *err, size_t errlen);
    const struct image_ops *ops;
    /* Make a new, empty image file (block/image.h, struct
     * image_create_opts: never clobbers, nothing left on failure).
     * Optional: NULL for a format qlun cannot create. */
    int (*create)(const struct image_create_opts *opts, char *err,
                  size_t errlen);
    /* A filter node has one child, `file` (the node it filters), and is
     * created over an open node (image_insert_filter), never by
     * image_open(); every operation it leaves NULL goes to that child. */
    bool is_filter;
    /* A protocol node (block/file.h) is the bottom of a format node: it
     * has no children.  Every other non-filter node gets one as its
     * `file` child, opened before the driver's open. */
    bool is_protocol;
};

/* The driver called name in the table, or NULL. */
const struct block_driver *block_driver_find(const char *name);
/* The table's driver with the highest probe score for these first bytes
 * (see probe above); NULL if none scores above 0. */
const struct block_driver *block_driver_probe(const uint8_t *buf, size_t len,
                                              const char *filename);
/* The format an image is opened with when the user names none. */
const char *block_default_format(void);
/* "raw, qcow2": the table's names, for messages.  Returns out. */
const char *block_driver_names(char *out, size_t outlen);

/* The table's drivers (defined in their own files). */
extern const struct block_driver raw_driver;
extern const struct block_driver qcow2_driver;

#endif
