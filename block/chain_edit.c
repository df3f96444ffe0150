/* qlun — changing a graph's backing chain (block jobs): finding a node by
 * path, reopening a node read-write or read-only in place, naming a new
 * backing file, closing the layers above a node that outlives them.
 *
 * Edges.  A node's backing child may have filters above it (a filter
 * inserted on the backing edge); the chain walks skip them, and an edit
 * that moves a backing edge moves the filters with the node below them.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backing.h"
#include "driver.h"
#include "image.h"

struct image *image_chain_find(struct image *img, const char *path)
{
    char want[PATH_MAX], have[PATH_MAX];
    if (!path || !realpath(path, want))
        return NULL;
    for (struct image *n = image_skip_filters(img); n;
         n = image_skip_filters(n->backing)) {
        if (realpath(n->filename, have) && strcmp(have, want) == 0)
            return n;
    }
    return NULL;
}

/* The edge in img's chain (img's backing edge or one below) whose node,
 * filters skipped, is node; NULL if node is not below img. */
static struct image **edge_to(struct image *img, struct image *node)
{
    for (struct image *n = image_skip_filters(img); n && n->backing;
         n = image_skip_filters(n->backing)) {
        if (image_skip_filters(n->backing) == node)
            return &n->backing;
    }
    return NULL;
}

int image_reopen(struct image **edge, const struct image_open_opts *opts,
                 char *err, size_t errlen)
{
    struct image *old = *edge;
    assert(old && old->drv && !old->drv->is_filter);
    /* A writable node about to be given back read-only: whatever it
     * still caches must be on disk before the new node reads the
     * metadata from there. */
    int ret = old->info.read_only ? 0 : image_flush(old);
    if (ret < 0) {
        snprintf(err, errlen, "%s: flush before reopening: %s", old->filename,
                 strerror(-ret));
        return ret;
    }
    struct image_open_opts o = *opts;
    o.path = old->filename;
    o.format = old->drv->name;
    struct image *img;
    /* The node alone: its backing chain is the old node's, kept open (a
     * read-only backing stays read-only whatever img becomes). */
    ret = image_open_layer(old->drv, &o, 0, &img, err, errlen);
    if (ret < 0)
        return ret;
    img->backing = old->backing;
    old->backing = NULL;
    *edge = img;
    /* A clean close: a read-write node's last metadata (the dirty bit
     * under lazy refcounts) is written; the new node has read what it
     * needs already, and none of it changes what it maps. */
    ret = image_close(old);
    if (ret < 0)
        fprintf(stderr, "qlun: %s: closing the node replaced by a reopen: "
                "%s\n", img->filename, strerror(-ret));
    return 0;
}

/* The name img's image stores for new_backing: relative to img's
 * directory when new_backing lies in it or under it (the pair can move
 * together), else absolute. */
static int backing_name_for(const struct image *img,
                            const struct image *new_backing, char *name,
                            size_t namelen)
{
    char dir[PATH_MAX], target[PATH_MAX], top[PATH_MAX];
    if (!realpath(img->filename, top) ||
        !realpath(new_backing->filename, target))
        return -errno;
    char *slash = strrchr(top, '/');
    size_t n = slash == top ? 1 : (size_t)(slash - top);
    snprintf(dir, sizeof(dir), "%.*s", (int)n, top);
    const char *rel = target;
    if (strcmp(dir, "/") == 0)
        rel = target + 1;
    else if (image_path_inside(target, dir) && target[n] == '/')
        rel = target + n + 1;
    if ((size_t)snprintf(name, namelen, "%s", rel) >= namelen)
        return -ENAMETOOLONG;
    return 0;
}

/* Keep img's record of its backing name in step with its image. */
static int record_backing(struct image *img, const char *name,
                          const char *format)
{
    char *n = name ? strdup(name) : NULL, *f = format ? strdup(format) : NULL;
    if ((name && !n) || (format && !f)) {
        free(n);
        free(f);
        return -ENOMEM;
    }
    free(img->backing_name);
    free(img->backing_format);
    img->backing_name = n;
    img->backing_format = f;
    return 0;
}

int image_set_backing(struct image *img, struct image *new_backing,
                      char *err, size_t errlen)
{
    img = image_skip_filters(img);
    struct image **edge = new_backing ? edge_to(img, new_backing) : NULL;
    if (new_backing && !edge) {
        snprintf(err, errlen, "%s is not below %s in its backing chain",
                 new_backing->filename, img->filename);
        return -EINVAL;
    }
    if (!img->ops->change_backing_file) {
        snprintf(err, errlen, "the %s format cannot name a backing file "
                 "(%s)", img->info.format, img->filename);
        return -ENOTSUP;
    }
    char name[PATH_MAX];
    const char *fmt = new_backing ? new_backing->info.format : NULL;
    int ret = new_backing ? backing_name_for(img, new_backing, name,
                                             sizeof(name)) : 0;
    /* Crash ordering: what img holds (the data a stream copied into it,
     * the clusters that now replace the dropped layers' for its reads)
     * is durable before its header stops naming the old backing file. */
    if (ret == 0)
        ret = image_flush(img);
    if (ret == 0)
        ret = img->ops->change_backing_file(img, new_backing ? name : NULL,
                                            fmt);
    if (ret < 0) {
        snprintf(err, errlen, "%s: naming backing file %s: %s", img->filename,
                 new_backing ? new_backing->filename : "(none)",
                 strerror(-ret));
        return ret;
    }
    if (record_backing(img, new_backing ? name : NULL, fmt) < 0)
        fprintf(stderr, "qlun: %s: out of memory recording its backing "
                "name\n", img->filename);
    /* The graph follows the image: the layers between are closed. */
    struct image *keep = edge ? *edge : NULL;
    if (edge == &img->backing)
        return 0;
    if (edge)
        *edge = NULL;
    struct image *dropped = img->backing;
    img->backing = keep;
    image_close(dropped);
    return 0;
}

int image_close_above(struct image *img, struct image *keep)
{
    struct image **edge = edge_to(img, keep);
    assert(edge);
    /* keep leaves the chain before the layers above it are closed;
     * filters on its edge belong to the edge, and go with the layers. */
    struct image *n = *edge;
    *edge = NULL;
    while (n != keep) {
        struct image *filter = n;
        n = n->file;
        filter->file = NULL;
        image_close(filter);
    }
    return image_close(img);
}
