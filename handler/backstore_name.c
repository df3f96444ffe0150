/* qlun — parsing a UIO device's name (see backstore_name.h). */
#include "backstore_name.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The HBA number and the backstore name in uio_name, as pointers into it
 * and lengths; false if it is not of the form. */
static bool parse(const char *uio_name, const char **hba, size_t *hba_len,
                  const char **name, size_t *name_len)
{
    static const char prefix[] = "tcm-user/";
    if (strncmp(uio_name, prefix, sizeof(prefix) - 1) != 0)
        return false;
    *hba = uio_name + sizeof(prefix) - 1;
    *hba_len = strspn(*hba, "0123456789");
    if (*hba_len == 0 || (*hba)[*hba_len] != '/')
        return false;
    *name = *hba + *hba_len + 1;
    /* the cfgstring follows; it may itself contain '/' (a path) */
    const char *name_end = strchr(*name, '/');
    if (!name_end || name_end == *name)
        return false;
    *name_len = (size_t)(name_end - *name);
    return true;
}

int backstore_name_from_uio(const char *uio_name, char *out, size_t size)
{
    const char *hba, *name;
    size_t hba_len, name_len;
    out[0] = '\0';
    if (!parse(uio_name, &hba, &hba_len, &name, &name_len) ||
        name_len >= size)
        return -EINVAL;
    snprintf(out, size, "%.*s", (int)name_len, name);
    return 0;
}

int backstore_dir_from_uio(const char *uio_name, char *out, size_t size)
{
    const char *hba, *name;
    size_t hba_len, name_len;
    out[0] = '\0';
    if (!parse(uio_name, &hba, &hba_len, &name, &name_len))
        return -EINVAL;
    int n = snprintf(out, size, "/sys/kernel/config/target/core/user_%.*s/"
                     "%.*s", (int)hba_len, hba, (int)name_len, name);
    if (n < 0 || (size_t)n >= size) {
        out[0] = '\0';
        return -EINVAL;
    }
    return 0;
}
