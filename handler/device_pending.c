/* qlun — placeholders for LUN operations built on other branches (online
 * resize, external and internal snapshots), so that the management socket
 * links and reports them clearly.  Deleted when those branches merge. */
#include <errno.h>
#include <stdio.h>

#include "handler/device.h"

static int not_implemented(char *err, size_t errlen)
{
    snprintf(err, errlen, "not implemented in this build");
    return -ENOTSUP;
}

int qlun_dev_resize(struct qlun_dev *d, uint64_t new_size, bool force,
                    char *err, size_t errlen)
{
    return not_implemented(err, errlen);
}

int qlun_dev_snapshot_create(struct qlun_dev *d, const char *overlay_path,
                             uint32_t cluster_size, char *err, size_t errlen)
{
    return not_implemented(err, errlen);
}

int qlun_dev_snapshot_internal(struct qlun_dev *d, bool create,
                               const char *name, char *err, size_t errlen)
{
    return not_implemented(err, errlen);
}

int qlun_dev_snapshot_list(struct qlun_dev *d, struct qlun_snapshot_info **out,
                           size_t *count, char *err, size_t errlen)
{
    return not_implemented(err, errlen);
}
