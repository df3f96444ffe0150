/* qlunctl — what its files share: the options as parsed, the session
 * with the server, and the helpers every command uses to build a request,
 * send it and read the reply.  qlunctl.c has the LUN commands and main,
 * qlunctl_jobs.c the job commands, qlunctl_client.c these helpers. */
#ifndef QLUN_TOOLS_QLUNCTL_H
#define QLUN_TOOLS_QLUNCTL_H

#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#define DEFAULT_SOCKET "/run/qlun/qlun.sock"

/* The command line's options (GOption writes them: gboolean, strings as
 * given, NULL when not given). */
struct qlunctl_options {
    const char *socket;
    gboolean json;
    gboolean force;
    const char *overlay;
    const char *cluster_size;
    /* throttle: its limits, as given (NULL: not given) */
    const char *throttle[9];
    const char *group;
    /* job */
    const char *base, *top, *speed, *id, *format, *sync, *granularity;
    gboolean existing, ready;
    double timeout;
};
extern struct qlunctl_options opt;

/* The connection; made by the first request (execute). */
struct session {
    GSocketConnection *sc;
    GDataInputStream *in;
};

/* Exit 2 (usage) or 1 (anything else) with "qlunctl: <message>". */
G_NORETURN void usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
G_NORETURN void fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* A whole number with an optional binary suffix (K, M, G, T, optionally
 * followed by "iB" or "B"); false if it is not one. */
bool parse_size(const char *s, uint64_t *out);
/* "1.5 GiB": g_free it. */
char *human_size(uint64_t v);

/* One message from the server (exits on EOF or garbage); connect. */
JsonNode *read_message(struct session *s);
void connect_server(struct session *s);
/* Send a request, return its "return" value; an error reply exits 1. */
JsonNode *execute(struct session *s, const char *cmd, JsonNode *args);
/* cmd with {"lun": lun}, or no arguments for a NULL lun. */
JsonNode *run_query(struct session *s, const char *cmd, const char *lun);

/* Building arguments: {"lun": lun, ...}, closed by end_args; the add_*
 * skip a NULL value; add_size parses v (a usage error if it is not a
 * size), add_path makes v absolute. */
JsonBuilder *lun_args(const char *lun);
JsonNode *end_args(JsonBuilder *b);
void add_string(JsonBuilder *b, const char *name, const char *v);
void add_size(JsonBuilder *b, const char *name, const char *v);
void add_path(JsonBuilder *b, const char *name, const char *v);

/* Reading replies: a member or "" / 0 / NULL when absent. */
const char *str_member(JsonObject *o, const char *name);
uint64_t int_member(JsonObject *o, const char *name);
JsonObject *obj_member(JsonObject *o, const char *name);
void print_json(JsonNode *n);
/* Print a reply (as JSON with --json, else with print; NULL: nothing),
 * free it; the exit status. */
int finish(JsonNode *ret, void (*print)(JsonNode *));

/* qlunctl_jobs.c: `qlunctl job ...` (argv[1] is the subcommand), and
 * whether any of its options was given. */
int cmd_job(struct session *s, int argc, char **argv);
bool job_options_given(void);

#endif
