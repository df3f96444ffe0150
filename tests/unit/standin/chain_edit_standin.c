/* qlun — TEMPORARY stand-in for block/chain_edit.c (the graph helper's):
 * the chain edits the mirror's active commit uses, linked into the
 * mirror test only while block/chain_edit.c is absent. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/image.h"

struct image *image_chain_find(struct image *img, const char *path)
{
    char want[PATH_MAX], have[PATH_MAX];
    if (!realpath(path, want))
        return NULL;
    for (img = image_skip_filters(img); img;
         img = image_skip_filters(image_backing_child(img)))
        if (realpath(img->filename, have) && strcmp(want, have) == 0)
            return img;
    return NULL;
}

int image_reopen(struct image **edge, const struct image_open_opts *opts,
                 char *err, size_t errlen)
{
    struct image *old = *edge, *neu;
    struct image_open_opts o = *opts;
    o.path = old->filename;
    o.format = old->info.format;
    int ret = image_open(&o, &neu, err, errlen);
    if (ret < 0)
        return ret;
    image_close(neu->backing);
    neu->backing = old->backing;
    old->backing = NULL;
    image_close(old);
    *edge = neu;
    return 0;
}

int image_close_above(struct image *img, struct image *keep)
{
    for (struct image *n = img; n; n = n->backing)
        if (n->backing == keep) {
            n->backing = NULL;
            break;
        }
    return image_close(img);
}
