/* qlun — backing chains, for every format.
 *
 * A format driver only reports the backing file name (and format) its
 * image names; opening it is done here, once for all formats.  The image
 * is guest-controlled data once it has been served, so the name is
 * untrusted: a relative name is taken relative to the overlay's
 * directory, the result is resolved with realpath() (symlinks, "..") and
 * must lie inside the backing root.  A backing file is always opened
 * read-only, and the root is handed down so the whole chain is confined.
 * The depth is handed down too: a chain deeper than IMAGE_MAX_CHAIN_DEPTH
 * (a loop, usually) is refused.
 *
 * Format: what the overlay says decides (a name the driver table must
 * know).  Without it, the content is probed (block_driver_probe).
 * Probing is acceptable here (and only here) because the result is opened
 * read-only and confined.
 */
#include "backing.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

/* Longest backing name a message quotes. */
#define NAME_MAX_SHOWN 1023

const char *image_printable(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; outlen > 0 && in[i] && i < outlen - 1; i++)
        out[i] = in[i] >= 0x20 && in[i] <= 0x7e ? in[i] : '?';
    if (outlen > 0)
        out[i] = 0;
    return out;
}

bool image_path_inside(const char *path, const char *root)
{
    if (strcmp(root, "/") == 0)
        return true;
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* The realpath of the root the chain below img is confined to. */
static int chain_root(const struct image *img,
                      const struct image_open_opts *opts, char *root,
                      char *err, size_t errlen)
{
    const char *path = img->filename;
    if (opts->backing_root) {
        if (!realpath(opts->backing_root, root)) {
            int e = errno;
            snprintf(err, errlen, "%s: backing_root %s: %s", path,
                     opts->backing_root, strerror(e));
            return -e;
        }
        return 0;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if (!realpath(dir, root)) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot resolve its directory: %s", path,
                 strerror(e));
        return -e;
    }
    return 0;
}

/* Resolve the backing name into real (realpath), inside root. */
static int resolve(const struct image *img, const char *root, char *real,
                   char *err, size_t errlen)
{
    const char *path = img->filename, *name = img->backing_name;
    char cand[PATH_MAX * 2];
    if (name[0] == '/') {
        snprintf(cand, sizeof(cand), "%s", name);
    } else {
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(cand, sizeof(cand), "%.*s/%s", (int)(slash - path), path,
                     name);
        else
            snprintf(cand, sizeof(cand), "%s", name);
    }
    /* The name comes from the image: keep messages to one line. */
    char pname[NAME_MAX_SHOWN + 1], pcand[PATH_MAX * 2], preal[PATH_MAX];
    image_printable(name, pname, sizeof(pname));
    if (!realpath(cand, real)) {
        int e = errno;
        snprintf(err, errlen, "%s: backing file '%s' (%s): %s", path, pname,
                 image_printable(cand, pcand, sizeof(pcand)), strerror(e));
        return -e;
    }
    if (!image_path_inside(real, root)) {
        snprintf(err, errlen, "%s: backing file '%s' resolves to %s, outside "
                 "the allowed backing root %s", path, pname,
                 image_printable(real, preal, sizeof(preal)), root);
        return -EPERM;
    }
    return 0;
}

/* The driver for the backing file at real: the one the overlay names, or
 * the best probe. */
static int backing_driver(const struct image *img, const char *real,
                          const struct block_driver **drv, char *err,
                          size_t errlen)
{
    if (img->backing_format) {
        *drv = block_driver_find(img->backing_format);
        if (!*drv) {
            char pfmt[32], names[128];
            snprintf(err, errlen, "%s: backing format '%s' is not supported "
                     "(%s)", img->filename,
                     image_printable(img->backing_format, pfmt, sizeof(pfmt)),
                     block_driver_names(names, sizeof(names)));
            return -ENOTSUP;
        }
        return 0;
    }
    struct host h;
    uint8_t buf[BLOCK_PROBE_BYTES];
    int ret = host_open(&h, real, HOST_READ_ONLY, err, errlen);
    if (ret == 0) {
        ret = host_pread(&h, buf, sizeof(buf), 0);
        host_close(&h);
    }
    if (ret < 0) {
        snprintf(err, errlen, "%s: cannot read backing file %s: %s",
                 img->filename, real, strerror(-ret));
        return ret;
    }
    *drv = block_driver_probe(buf, sizeof(buf), real);
    if (!*drv) {
        snprintf(err, errlen, "%s: backing file %s: format not recognised",
                 img->filename, real);
        return -ENOTSUP;
    }
    return 0;
}

int image_open_backing(struct image *img, const struct image_open_opts *opts,
                       unsigned depth, char *err, size_t errlen)
{
    char root[PATH_MAX], real[PATH_MAX];
    const struct block_driver *drv;
    int ret = chain_root(img, opts, root, err, errlen);
    if (ret < 0)
        return ret;
    if (depth >= IMAGE_MAX_CHAIN_DEPTH) {
        snprintf(err, errlen, "%s: backing chain deeper than %d images (a "
                 "loop?)", img->filename, IMAGE_MAX_CHAIN_DEPTH);
        return -ELOOP;
    }
    /* A format the overlay names is checked before the file is looked
     * for; a probe needs the file. */
    if (img->backing_format)
        ret = backing_driver(img, NULL, &drv, err, errlen);
    if (ret == 0)
        ret = resolve(img, root, real, err, errlen);
    if (ret == 0 && !img->backing_format)
        ret = backing_driver(img, real, &drv, err, errlen);
    if (ret < 0)
        return ret;
    struct image_open_opts o = {
        .path = real,
        .format = drv->name,
        .read_only = true,
        .direct_io = opts->direct_io,
        .backing_root = root,
    };
    char sub[512];
    ret = image_open_node(drv, &o, depth + 1, &img->backing, sub, sizeof(sub));
    if (ret < 0) {
        /* A loop's message comes from the bottom; keep it readable. */
        if (ret == -ELOOP)
            snprintf(err, errlen, "%s", sub);
        else
            snprintf(err, errlen, "%s: backing file: %s", img->filename, sub);
        return ret;
    }
    return 0;
}
