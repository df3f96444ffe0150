/* qlun — a backstore's name in LIO, from its UIO device's name.
 *
 * libtcmu exports no getter for the name, so handler.c reads it where the
 * kernel publishes it, /sys/class/uio/<uioN>/name, which target_core_user
 * writes as "tcm-user/<hba number>/<backstore name>/<cfgstring>". */
#ifndef QLUN_HANDLER_BACKSTORE_NAME_H
#define QLUN_HANDLER_BACKSTORE_NAME_H

#include <stdbool.h>
#include <stddef.h>

/* The backstore name in uio_name (a line as above; a trailing newline is
 * ignored) into out.  Returns 0, or -EINVAL (out = "") if uio_name is not
 * of that form or the name does not fit. */
int backstore_name_from_uio(const char *uio_name, char *out, size_t size);
/* The backstore's configfs directory,
 * /sys/kernel/config/target/core/user_<hba number>/<backstore name>, the
 * same way. */
int backstore_dir_from_uio(const char *uio_name, char *out, size_t size);

#endif
