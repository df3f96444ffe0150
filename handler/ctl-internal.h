/* qlun — what the management socket's files share (handler/ctl*.c). */
#ifndef QLUN_HANDLER_CTL_INTERNAL_H
#define QLUN_HANDLER_CTL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "handler/ctl.h"
#include "handler/device.h"

/* Error classes, named as QMP names its own where one fits. */
#define CTL_ERR_GENERIC "GenericError"
#define CTL_ERR_COMMAND_NOT_FOUND "CommandNotFound"
#define CTL_ERR_DEVICE_NOT_FOUND "DeviceNotFound"
#define CTL_ERR_INVALID_PARAMETER "InvalidParameter"

struct ctl_error {
    const char *class;    /* NULL = no error */
    char desc[1024];      /* one line */
};
void ctl_set_error(struct ctl_error *e, const char *class, const char *fmt,
                   ...) G_GNUC_PRINTF(3, 4);

/* An operation's negative errno and message as an error reply. */
void ctl_set_errno_error(struct ctl_error *e, int ret, const char *msg);

/* A command's handler: args are already checked against the command's
 * argument spec.  Returns the "return" value, or NULL with e set. */
typedef JsonNode *(*ctl_command_fn)(JsonObject *args, struct ctl_error *e);

/* The LUN args' "lun" names (serial or backstore name), referenced (put
 * it with lun_registry_put), or NULL with e set to DeviceNotFound. */
struct qlun_dev *ctl_get_lun(JsonObject *args, struct ctl_error *e);

/* Commands (ctl_luns.c, ctl_lun_ops.c). */
JsonNode *ctl_query_luns(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_query_stats(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_lun_resize(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_snapshot_create(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_snapshot_internal_create(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_snapshot_internal_delete(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_snapshot_internal_list(JsonObject *args, struct ctl_error *e);
JsonNode *ctl_lun_set_throttle(JsonObject *args, struct ctl_error *e);

/* One node of a LUN's image graph, as an object added to b (ctl_luns.c).
 * filename: the node's host path (struct image does not keep it). */
void ctl_describe_node(JsonBuilder *b, struct image *img);
/* A throttle node's limits, group and counters, as the member "throttle"
 * of the node's object (ctl_throttle.c); nothing for another node. */
void ctl_describe_throttle(JsonBuilder *b, struct image *img);

/* An error reply line for a request that never reached a command (e.g.
 * an over-long line); g_free it. */
char *ctl_error_line(const char *class, const char *desc);

/* The event watcher (ctl_events.c): compares every LUN's state with what
 * it saw last and emits events for what became true. */
void ctl_events_poll(void);
void ctl_events_reset(void);
/* How an event line is written (ctl_events.c), for ctl_emit_event. */
char *ctl_event_line(const char *name, JsonNode *data);
/* Hand a line to every connection (ctl_server.c); any thread. */
void ctl_server_broadcast(char *line /* taken */);

#endif
