/* qlun — the management socket: a QMP-like JSON protocol on a UNIX socket
 * inside tcmu-runner (README: "Management socket and qlunctl").
 *
 * One JSON object per line each way.  The server greets each connection
 * with {"qlun": {"version": ...}}, answers each request
 * {"execute": CMD, "arguments": {...}, "id": ANY} with {"return": ...} or
 * {"error": {"class": ..., "desc": ...}} (carrying the request's "id"),
 * and sends every connection the asynchronous events
 * {"event": NAME, "data": {...}, "timestamp": {...}}.
 *
 * The server runs on its own thread with its own GMainContext: nothing it
 * does runs on, or waits for, the threads that serve SCSI commands.
 */
#ifndef QLUN_HANDLER_CTL_H
#define QLUN_HANDLER_CTL_H

#include <json-glib/json-glib.h>
#include <stddef.h>

#define QLUN_CTL_SOCKET_DEFAULT "/run/qlun/qlun.sock"
/* A request line longer than this is refused and its connection closed:
 * the server never buffers more than this for one client. */
#define CTL_MAX_LINE (64 * 1024)

/* Execute one request line; returns the reply line (no newline), to be
 * g_free'd.  Needs no server: the socket code and the tests call it. */
char *ctl_execute(const char *request_line);

/* Start serving at path (its directory is created 0700 if missing).  A
 * stale socket there is replaced; a live one (another process serving)
 * is not.  Returns 0, or a negative errno with one line in err. */
int ctl_server_start(const char *path, char *err, size_t errlen);
/* Close every connection, remove the socket and stop; no-op if stopped. */
void ctl_server_stop(void);

/* Send an event to every connection; callable from any thread.  Takes
 * data (an object, or NULL). */
void ctl_emit_event(const char *name, JsonNode *data);

#endif
