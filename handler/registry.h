/* qlun — the LUNs this process serves, for the management socket.
 *
 * handler/device.c adds each LUN when it is opened and removes it when it
 * is closed.  A command working on a LUN holds a reference from
 * lun_registry_get() to lun_registry_put(); lun_registry_remove() waits
 * until every reference is put, so a LUN is never freed under a command
 * (close waits for the command, which is short: the commands never wait
 * on I/O of their own for long).  After remove has begun, get no longer
 * finds the LUN, so the wait cannot be prolonged by new commands.
 */
#ifndef QLUN_HANDLER_REGISTRY_H
#define QLUN_HANDLER_REGISTRY_H

#include <stddef.h>

struct qlun_dev;

void lun_registry_add(struct qlun_dev *d);
/* Stop finding d, then wait until no command holds it. */
void lun_registry_remove(struct qlun_dev *d);

/* The LUN whose serial, else whose backstore name, is key; referenced.
 * NULL if none. */
struct qlun_dev *lun_registry_get(const char *key);
void lun_registry_put(struct qlun_dev *d);

/* Every LUN, each referenced, in the order they were opened: *out is a
 * g_malloc'd array; put each, then g_free(*out). */
size_t lun_registry_get_all(struct qlun_dev ***out);

#endif
