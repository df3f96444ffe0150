/* qlun — parsing a UIO device's name (see backstore_name.h). */
#include "backstore_name.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int backstore_name_from_uio(const char *uio_name, char *out, size_t size)
{
    static const char prefix[] = "tcm-user/";
    out[0] = '\0';
    if (strncmp(uio_name, prefix, sizeof(prefix) - 1) != 0)
        return -EINVAL;
    const char *hba_end = strchr(uio_name + sizeof(prefix) - 1, '/');
    const char *name = hba_end ? hba_end + 1 : NULL;
    /* the cfgstring follows; it may itself contain '/' (a path) */
    const char *name_end = name ? strchr(name, '/') : NULL;
    if (!name_end || name_end == name || (size_t)(name_end - name) >= size)
        return -EINVAL;
    snprintf(out, size, "%.*s", (int)(name_end - name), name);
    return 0;
}
