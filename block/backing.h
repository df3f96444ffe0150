/* qlun — the generic layer's backing chains (block/backing.c) and the
 * node life cycle helpers that image.c and backing.c share.  For block/
 * only: nothing above block/ opens a node but through image_open(). */
#ifndef QLUN_BLOCK_BACKING_H
#define QLUN_BLOCK_BACKING_H

#include <stdbool.h>
#include <stddef.h>

#include "driver.h"
#include "image.h"

/* Images a chain may have below its top (a loop is refused by this). */
#define IMAGE_MAX_CHAIN_DEPTH 32

/* Open opts->path with drv as a node depth images below the top (0 =
 * the top), then its backing chain if the driver found a backing name.
 * One line into err on failure. */
int image_open_node(const struct block_driver *drv,
                    const struct image_open_opts *opts, unsigned depth,
                    struct image **out, char *err, size_t errlen);

/* The same without its backing chain: the node alone (with its file
 * child), backing_name set but not opened (image_reopen gives it the old
 * node's backing child). */
int image_open_layer(const struct block_driver *drv,
                     const struct image_open_opts *opts, unsigned depth,
                     struct image **out, char *err, size_t errlen);

/* Resolve img->backing_name (relative to img's directory, realpath),
 * refuse it outside the backing root (opts->backing_root, else the
 * directory of the top image) or deeper than IMAGE_MAX_CHAIN_DEPTH, pick
 * its format (img->backing_format, else probed), open it read-only and
 * attach it as img->backing.  img is the node at depth depth. */
int image_open_backing(struct image *img, const struct image_open_opts *opts,
                       unsigned depth, char *err, size_t errlen);

/* Whether the resolved path lies in the directory tree root (also
 * resolved; "/" holds everything). */
bool image_path_inside(const char *path, const char *root);

/* Free the node and its children without asking its driver to close
 * (the driver released its state already, or never took any). */
void image_free_node(struct image *img);

/* A string from an image (a backing file name or format), fit for a
 * one-line message: each byte outside 0x20..0x7e becomes '?'. */
const char *image_printable(const char *in, char *out, size_t outlen);

#endif
