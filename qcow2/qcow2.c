/* qlun — qcow2 format driver (placeholder until the qcow2 engine lands). */
#include <errno.h>
#include <stdio.h>

#include "block/image.h"

int qcow2_open(const struct image_open_opts *opts, struct image **out,
               char *err, size_t errlen)
{
    (void)out;
    snprintf(err, errlen,
             "%s: the qcow2 format is not implemented yet; "
             "serve raw images with format=raw", opts->path);
    return -ENOTSUP;
}
