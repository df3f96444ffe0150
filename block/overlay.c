/* qlun — the file of a live external snapshot: a new qcow2 image over the
 * current top.
 *
 * The overlay's path comes from a management request, so it is checked as
 * a backing file name is: its directory, with symlinks and ".." resolved,
 * must lie inside the backing root, and the file must not exist (created
 * with O_EXCL, which also refuses a dangling symlink).  The backing name
 * written into the overlay is relative to the overlay's directory, so the
 * pair can be moved together, and it resolves inside the root when the
 * overlay is opened.
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

/* The path of target relative to directory dir (both absolute, resolved):
 * "../" for each of dir's components below their common prefix, then the
 * rest of target. */
static int relative_path(const char *dir, const char *target, char *out,
                         size_t outlen)
{
    if (strcmp(dir, "/") == 0)
        dir = "";
    /* The longest prefix of whole components the two share. */
    size_t common = 0;
    for (size_t k = 1; dir[k - 1] && dir[k - 1] == target[k - 1]; k++)
        if ((dir[k] == '/' || dir[k] == 0) && target[k] == '/')
            common = k;
    size_t len = 0;
    out[0] = 0;
    for (const char *p = dir + common; *p; p++) {
        if (*p != '/')
            continue;
        if (len + 3 >= outlen)
            return -ENAMETOOLONG;
        memcpy(out + len, "../", 4);
        len += 3;
    }
    const char *rest = target + common + 1; /* past the '/' */
    if (len + strlen(rest) >= outlen)
        return -ENAMETOOLONG;
    strcpy(out + len, rest);
    return 0;
}

/* Split an absolute path into its resolved directory and its last
 * component. */
static int resolve_parent(const char *path, char dir[PATH_MAX],
                          const char **base, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    if (path[0] != '/' || !slash[1]) {
        snprintf(err, errlen, "overlay path '%s' must be an absolute path "
                 "naming a file", path);
        return -EINVAL;
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%.*s",
             slash == path ? 1 : (int)(slash - path), path);
    if (!realpath(parent, dir)) {
        int e = errno;
        snprintf(err, errlen, "overlay directory %s: %s", parent,
                 strerror(e));
        return -e;
    }
    *base = slash + 1;
    return 0;
}

/* An overlay is always qcow2: the one format here with a backing file. */
const char *image_overlay_format(void)
{
    return "qcow2";
}

int image_create_overlay(const struct image *top, const char *overlay_path,
                         const char *root,
                         uint32_t cluster_size, char *err, size_t errlen)
{
    char dir[PATH_MAX], real_top[PATH_MAX], real_root[PATH_MAX];
    char file[PATH_MAX + 256], backing[PATH_MAX];
    const char *base = NULL;
    int ret = resolve_parent(overlay_path, dir, &base, err, errlen);
    if (ret < 0)
        return ret;
    if (!realpath(top->filename, real_top) || !realpath(root, real_root)) {
        int e = errno;
        snprintf(err, errlen, "cannot resolve %s or %s: %s", top->filename,
                 root, strerror(e));
        return -e;
    }
    if (!image_path_inside(dir, real_root)) {
        snprintf(err, errlen, "overlay %s is outside the allowed backing "
                 "root %s", overlay_path, real_root);
        return -EPERM;
    }
    snprintf(file, sizeof(file), "%s%s%s", dir, strcmp(dir, "/") ? "/" : "",
             base);
    if (relative_path(dir, real_top, backing, sizeof(backing)) < 0) {
        snprintf(err, errlen, "the path from %s to %s is too long", dir,
                 real_top);
        return -ENAMETOOLONG;
    }
    struct image_create_opts o = {
        .path = file,
        .size = top->size,
        .cluster_size = cluster_size ? cluster_size
                                     : top->info.cluster_size >= 512
                                           ? top->info.cluster_size : 0,
        .backing_name = backing,
        .backing_format = top->info.format,
    };
    const struct block_driver *drv = block_driver_find(image_overlay_format());
    assert(drv && drv->create);
    return drv->create(&o, err, errlen);
}
