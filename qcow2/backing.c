/* qlun — qcow2: opening the backing file.
 *
 * The header of an image is guest-controlled data once the image has been
 * served, so the backing file name is untrusted: a relative name is taken
 * relative to the overlay's directory, the result is resolved with
 * realpath() (symlinks, "..") and must lie inside the backing root.  The
 * backing file is always opened read-only, and the root is handed down so
 * the whole chain is confined.
 *
 * Format: the backing format extension decides.  Without it, the content
 * is probed for the qcow2 magic, else raw.  Probing is acceptable here (and
 * only here) because the result is opened read-only and confined.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "qcow2-internal.h"

const char *qcow2_printable(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; outlen > 0 && in[i] && i < outlen - 1; i++)
        out[i] = in[i] >= 0x20 && in[i] <= 0x7e ? in[i] : '?';
    if (outlen > 0)
        out[i] = 0;
    return out;
}

static bool inside(const char *path, const char *root)
{
    if (strcmp(root, "/") == 0)
        return true;
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == 0);
}

static int probe(const char *path, const char **fmt)
{
    struct host h;
    char err[256];
    uint8_t magic[4];
    int ret = host_open(&h, path, HOST_READ_ONLY, err, sizeof(err));
    if (ret < 0)
        return ret;
    ret = host_pread(&h, magic, 4, 0);
    host_close(&h);
    if (ret < 0)
        return ret;
    *fmt = get_be32(magic) == QCOW2_MAGIC ? "qcow2" : "raw";
    return 0;
}

int qcow2_open_backing(struct qcow2 *q, const char *name, const char *fmt,
                       const char *root, char *err, size_t errlen)
{
    char cand[PATH_MAX * 2];
    char real[PATH_MAX];

    if (name[0] == '/') {
        snprintf(cand, sizeof(cand), "%s", name);
    } else {
        const char *slash = strrchr(q->path, '/');
        if (slash)
            snprintf(cand, sizeof(cand), "%.*s/%s",
                     (int)(slash - q->path), q->path, name);
        else
            snprintf(cand, sizeof(cand), "%s", name);
    }
    /* The name comes from the image: keep messages to one line. */
    char pname[MAX_BACKING_NAME + 1], pcand[PATH_MAX * 2], preal[PATH_MAX];
    qcow2_printable(name, pname, sizeof(pname));
    if (!realpath(cand, real)) {
        int e = errno;
        snprintf(err, errlen, "%s: backing file '%s' (%s): %s", q->path,
                 pname, qcow2_printable(cand, pcand, sizeof(pcand)),
                 strerror(e));
        return -e;
    }
    if (!inside(real, root)) {
        snprintf(err, errlen, "%s: backing file '%s' resolves to %s, outside "
                 "the allowed backing root %s", q->path, pname,
                 qcow2_printable(real, preal, sizeof(preal)), root);
        return -EPERM;
    }
    if (fmt == NULL) {
        int ret = probe(real, &fmt);
        if (ret < 0) {
            snprintf(err, errlen, "%s: cannot read backing file %s: %s",
                     q->path, real, strerror(-ret));
            return ret;
        }
    }
    struct image_open_opts o = {
        .path = real,
        .format = fmt,
        .read_only = true,
        .direct_io = q->direct_io,
        .backing_root = root,
    };
    char sub[512];
    int ret = image_open(&o, &q->backing, sub, sizeof(sub));
    if (ret < 0) {
        /* A loop's message comes from the bottom; keep it readable. */
        if (ret == -ELOOP)
            snprintf(err, errlen, "%s", sub);
        else
            snprintf(err, errlen, "%s: backing file: %s", q->path, sub);
        return ret;
    }
    return 0;
}
