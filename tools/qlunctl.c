/* qlunctl — the command-line client of qlun's management socket
 * (README: "Management socket and qlunctl"; qlunctl(8)).
 *
 * Sends one request, prints its reply (human-readable, or the reply's
 * "return" value as JSON with --json); `events` prints events until
 * interrupted.  Exit status: 0 done, 1 error (reply or connection),
 * 2 usage. */
#include <errno.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_SOCKET "/run/qlun/qlun.sock"

static const char usage_text[] =
    "usage: qlunctl [--socket PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  list                                   the LUNs served\n"
    "  info LUN                               one LUN and its image graph\n"
    "  stats LUN                              a LUN's statistics\n"
    "  resize LUN SIZE [--force]              change a LUN's size (K, M, G, T suffixes)\n"
    "  snapshot LUN --overlay PATH [--cluster-size SIZE]\n"
    "                                         external snapshot: new qcow2 overlay on top\n"
    "  snapshot-internal LUN create|delete NAME\n"
    "  snapshot-internal LUN list             qcow2 internal snapshots\n"
    "  throttle LUN [--iops N] [--iops-read N] [--iops-write N] [--bps N]\n"
    "           [--bps-read N] [--bps-write N] [--iops-max N] [--bps-max N]\n"
    "           [--burst-seconds S] [--group NAME]\n"
    "                                         set a LUN's I/O limits (all of them:\n"
    "                                         one not given is none; none = off)\n"
    "  copy-on-read LUN on|off                reads copy lower layers' data into the top\n"
    "  events                                 print events until interrupted\n"
    "  job start LUN stream [--base P] [--top P] [--speed N] [--id ID]\n"
    "  job start LUN commit [--top P] [--base P] [--speed N] [--id ID]\n"
    "  job start LUN mirror TARGET [--format F] [--sync full|top] [--existing]\n"
    "            [--granularity N] [--speed N] [--id ID]\n"
    "                                         start a block job\n"
    "  job list [LUN]                         block jobs: status, progress, rate\n"
    "  job pause|resume|cancel|complete|dismiss ID\n"
    "  job set-speed ID BYTES_PER_S           0: unlimited\n"
    "  job wait ID [--ready] [--timeout S]    until concluded (or ready); exit 0\n"
    "                                         if completed (or ready), else 1\n"
    "\n"
    "A LUN is named by its serial or its backstore name.\n"
    "Options:\n"
    "  --socket PATH   the management socket (default $QLUN_CTL_SOCKET, else\n"
    "                  " DEFAULT_SOCKET ")\n"
    "  --json          print the reply as JSON, for scripts\n"
    "  -h, --help      this help\n";

static struct {
    const char *socket;
    gboolean json;     /* gboolean: GOption writes these */
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
} opt;

/* qlunctl throttle's options and lun-set-throttle's arguments, in the
 * order of opt.throttle; bytes: takes a size suffix. */
static const struct {
    const char *option, *arg;
    bool bytes;
} throttle_opts[9] = {
    { "iops", "iops-total", false },
    { "iops-read", "iops-read", false },
    { "iops-write", "iops-write", false },
    { "bps", "bps-total", true },
    { "bps-read", "bps-read", true },
    { "bps-write", "bps-write", true },
    { "iops-max", "iops-total-max", false },
    { "bps-max", "bps-total-max", true },
    { "burst-seconds", "burst-seconds", false },
};

static bool job_options_given(void)
{
    return opt.base || opt.top || opt.speed || opt.id || opt.format ||
           opt.sync || opt.granularity || opt.existing || opt.ready ||
           opt.timeout;
}

static G_NORETURN void usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static G_NORETURN void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("qlunctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(qlunctl --help shows the usage)\n", stderr);
    exit(2);
}

static G_NORETURN void fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static G_NORETURN void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("qlunctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* A whole number with an optional binary suffix K, M, G or T (optionally
 * followed by "iB" or "B"): "512", "10G", "4KiB". */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!g_ascii_isdigit(s[0]))
        return false;
    errno = 0;
    guint64 v = g_ascii_strtoull(s, &end, 10);
    if (errno)
        return false;
    unsigned shift = 0;
    switch (g_ascii_toupper(*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    }
    if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end || (shift && v > (UINT64_MAX >> shift)) || v << shift > INT64_MAX)
        return false;
    *out = v << shift;
    return true;
}

static char *human_size(uint64_t v)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double d = (double)v;
    unsigned u = 0;
    while (d >= 1024 && u + 1 < G_N_ELEMENTS(units)) {
        d /= 1024;
        u++;
    }
    return u ? g_strdup_printf("%.1f %s", d, units[u])
             : g_strdup_printf("%" PRIu64 " B", v);
}

struct session {
    GSocketConnection *sc;
    GDataInputStream *in;
};

/* One line from the server, parsed; exits on EOF or garbage. */
static JsonNode *read_message(struct session *s)
{
    g_autoptr(GError) e = NULL;
    gsize len;
    g_autofree char *line = g_data_input_stream_read_line(s->in, &len, NULL,
                                                          &e);
    if (!line)
        fail("the server closed the connection%s%s", e ? ": " : "",
             e ? e->message : "");
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, line, (gssize)len, &e) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        fail("the server sent something not a JSON object: %s", line);
    return json_node_copy(json_parser_get_root(p));
}

static void connect_server(struct session *s)
{
    g_autoptr(GSocketAddress) a = g_unix_socket_address_new(opt.socket);
    g_autoptr(GSocketClient) cl = g_socket_client_new();
    g_autoptr(GError) e = NULL;
    s->sc = g_socket_client_connect(cl, G_SOCKET_CONNECTABLE(a), NULL, &e);
    if (!s->sc)
        fail("cannot connect to %s: %s", opt.socket, e->message);
    s->in = g_data_input_stream_new(
        g_io_stream_get_input_stream(G_IO_STREAM(s->sc)));
    g_autoptr(JsonNode) greeting = read_message(s);
    if (!json_object_has_member(json_node_get_object(greeting), "qlun"))
        fail("%s is not a qlun management socket", opt.socket);
}

/* Send {"execute": cmd, "arguments": args} and return the "return" value
 * (events arriving meanwhile are skipped); an error reply exits 1.  The
 * first request connects: a command checks its arguments before it sends
 * anything, so a usage error never needs the server. */
static JsonNode *execute(struct session *s, const char *cmd, JsonNode *args)
{
    if (!s->sc)
        connect_server(s);
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, cmd);
    if (args) {
        json_builder_set_member_name(b, "arguments");
        json_builder_add_value(b, args);
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) req = json_builder_get_root(b);
    g_autofree char *line = json_to_string(req, FALSE);
    g_autofree char *wire = g_strconcat(line, "\n", NULL);
    g_autoptr(GError) e = NULL;
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(s->sc));
    if (!g_output_stream_write_all(out, wire, strlen(wire), NULL, NULL, &e))
        fail("cannot send to %s: %s", opt.socket, e->message);
    for (;;) {
        g_autoptr(JsonNode) msg = read_message(s);
        JsonObject *o = json_node_get_object(msg);
        if (json_object_has_member(o, "error")) {
            JsonObject *err = json_object_get_object_member(o, "error");
            fail("%s", err ? json_object_get_string_member_with_default(
                                 err, "desc", "(no desc)")
                           : "(malformed error)");
        }
        if (json_object_has_member(o, "return"))
            return json_node_copy(json_object_get_member(o, "return"));
    }
}

/* {"lun": lun, more...}: the arguments object under construction. */
static JsonBuilder *lun_args(const char *lun)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "lun");
    json_builder_add_string_value(b, lun);
    return b;
}

static JsonNode *end_args(JsonBuilder *b)
{
    json_builder_end_object(b);
    JsonNode *n = json_builder_get_root(b);
    g_object_unref(b);
    return n;
}

static void print_json(JsonNode *n)
{
    g_autofree char *s = json_to_string(n, TRUE);
    printf("%s\n", s);
}

static const char *str_member(JsonObject *o, const char *name)
{
    return json_object_get_string_member_with_default(o, name, "");
}

static uint64_t int_member(JsonObject *o, const char *name)
{
    return (uint64_t)json_object_get_int_member_with_default(o, name, 0);
}

static JsonObject *obj_member(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static void print_list(JsonNode *ret)
{
    JsonArray *a = json_node_get_array(ret);
    printf("%-16s %-20s %10s %-6s %s\n", "NAME", "SERIAL", "SIZE", "FORMAT",
           "PATH");
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *l = json_array_get_object_element(a, i);
        JsonObject *g = obj_member(l, "graph");
        g_autofree char *size = human_size(int_member(l, "size"));
        printf("%-16s %-20s %10s %-6s %s\n",
               str_member(l, "name")[0] ? str_member(l, "name") : "-",
               str_member(l, "serial"), size,
               g ? str_member(g, "driver") : "?",
               g ? str_member(g, "filename") : "?");
    }
}

/* One node ("edge: driver filename ...") and its children, indented. */
static void print_node(const char *edge, JsonObject *n, int depth)
{
    JsonObject *st = obj_member(n, "state");
    JsonNode *alloc = json_object_get_member(n, "allocated");
    g_autofree char *vsize = human_size(int_member(n, "virtual-size"));
    g_autofree char *asize = alloc && !JSON_NODE_HOLDS_NULL(alloc)
        ? human_size((uint64_t)json_node_get_int(alloc)) : g_strdup("?");
    printf("%*s%s%s%s %s (virtual size %s, allocated %s)%s%s%s\n",
           depth * 2, "", edge ? edge : "", edge ? ": " : "",
           str_member(n, "driver"), str_member(n, "filename"), vsize, asize,
           st && json_object_get_boolean_member(st, "corrupt")
               ? " [corrupt]" : "",
           st && json_object_get_boolean_member(st, "writes-lost")
               ? " [writes lost]" : "",
           st && json_object_get_boolean_member(st, "read-only")
               ? " [read-only]" : "");
    JsonObject *children = obj_member(n, "children");
    static const char *const edges[] = { "file", "backing" };
    for (size_t i = 0; children && i < G_N_ELEMENTS(edges); i++)
        if (json_object_has_member(children, edges[i]))
            print_node(edges[i],
                       json_object_get_object_member(children, edges[i]),
                       depth + 1);
}

static void print_info(JsonNode *ret)
{
    JsonObject *l = json_array_get_object_element(json_node_get_array(ret), 0);
    g_autofree char *size = human_size(int_member(l, "size"));
    printf("LUN %s (serial %s)\n", str_member(l, "name")[0]
           ? str_member(l, "name") : "-", str_member(l, "serial"));
    printf("  cfgstring:  %s\n", str_member(l, "cfgstring"));
    printf("  size:       %s (%" PRIu64 " bytes), %" PRIu64 "-byte blocks, %s\n",
           size, int_member(l, "size"), int_member(l, "block-size"),
           json_object_get_boolean_member_with_default(l, "read-only", false)
               ? "read-only" : "read-write");
    printf("  graph:\n");
    JsonObject *g = obj_member(l, "graph");
    if (g)
        print_node(NULL, g, 2);
}

static void print_stats(JsonNode *ret)
{
    JsonObject *l = json_array_get_object_element(json_node_get_array(ret), 0);
    JsonObject *s = obj_member(l, "stats");
    JsonObject *t = obj_member(l, "soft-threshold");
    static const char *const counters[] = {
        "bytes_read", "bytes_written", "bytes_zeroed", "bytes_unmapped",
        "errors",
    };
    printf("LUN %s (serial %s)\n", str_member(l, "name")[0]
           ? str_member(l, "name") : "-", str_member(l, "serial"));
    for (size_t i = 0; s && i < G_N_ELEMENTS(counters); i++)
        printf("  %-16s %" PRIu64 "\n", counters[i], int_member(s, counters[i]));
    if (t) {
        JsonNode *alloc = json_object_get_member(t, "allocated");
        printf("  %-16s %" PRIu64 "%s\n", "soft_threshold",
               int_member(t, "bytes"), int_member(t, "bytes") == 0 ? " (none)"
               : json_object_get_boolean_member(t, "reached") ? " (reached)"
                                                               : "");
        if (alloc && !JSON_NODE_HOLDS_NULL(alloc))
            printf("  %-16s %" PRIu64 "\n", "allocated",
                   (uint64_t)json_node_get_int(alloc));
    }
    JsonObject *c = s ? obj_member(s, "commands") : NULL;
    if (!c)
        return;
    printf("  commands:\n");
    GList *names = json_object_get_members(c);
    names = g_list_sort(names, (GCompareFunc)strcmp);
    for (GList *n = names; n; n = n->next)
        printf("    %-40s %" PRIu64 "\n", (const char *)n->data,
               int_member(c, n->data));
    g_list_free(names);
}

/* As qemu-img snapshot -l lays it out. */
static void print_snapshots(JsonNode *ret)
{
    JsonArray *a = json_node_get_array(ret);
    printf("Snapshot list:\n%-4s %-20s %10s %-19s %15s\n", "ID", "TAG",
           "VM SIZE", "DATE", "VM CLOCK");
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *s = json_array_get_object_element(a, i);
        time_t t = (time_t)int_member(s, "date-sec");
        char date[32];
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime(&t));
        uint64_t ns = int_member(s, "vm-clock-nsec");
        g_autofree char *vm = human_size(int_member(s, "vm-state-size"));
        printf("%-4s %-20s %10s %-19s %04" PRIu64 ":%02" PRIu64 ":%02" PRIu64
               ".%03" PRIu64 "\n", str_member(s, "id"), str_member(s, "name"),
               vm, date, ns / UINT64_C(3600000000000),
               ns / UINT64_C(60000000000) % 60, ns / UINT64_C(1000000000) % 60,
               ns / UINT64_C(1000000) % 1000);
    }
}

/* What a live external snapshot did, and what it cost the initiator. */
static void print_snapshot(JsonNode *ret)
{
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret)
                                                : NULL;
    if (!o || !json_object_has_member(o, "overlay"))
        return;
    printf("writes now go to %s (the LUN's commands were held %.1f ms)\n",
           str_member(o, "overlay"),
           (double)int_member(o, "drain-us") / 1000.0);
}

static void print_event(JsonNode *msg)
{
    JsonObject *o = json_node_get_object(msg);
    if (!json_object_has_member(o, "event"))
        return;
    if (opt.json) {
        g_autofree char *s = json_to_string(msg, FALSE);
        printf("%s\n", s);
    } else {
        JsonObject *ts = obj_member(o, "timestamp");
        time_t t = ts ? (time_t)int_member(ts, "seconds") : 0;
        char date[32];
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime(&t));
        printf("%s %s", date, str_member(o, "event"));
        JsonObject *d = obj_member(o, "data");
        GList *names = d ? json_object_get_members(d) : NULL;
        for (GList *n = names; n; n = n->next) {
            JsonNode *v = json_object_get_member(d, n->data);
            g_autofree char *s = JSON_NODE_HOLDS_VALUE(v) &&
                json_node_get_value_type(v) == G_TYPE_STRING
                ? g_strdup(json_node_get_string(v)) : json_to_string(v, FALSE);
            printf(" %s=%s", (const char *)n->data, s);
        }
        g_list_free(names);
        printf("\n");
    }
    fflush(stdout);
}

static G_NORETURN void watch_events(struct session *s)
{
    for (;;) {
        g_autoptr(JsonNode) msg = read_message(s);
        print_event(msg);
    }
}

static void need_args(char **argv, int argc, int want_min, int want_max,
                      const char *synopsis)
{
    if (argc - 1 < want_min || argc - 1 > want_max)
        usage_error("usage: qlunctl %s", synopsis);
}

/* Options that only some commands take. */
static void allow_options(const char *cmd, bool force, bool overlay)
{
    if (opt.force && !force)
        usage_error("%s takes no --force", cmd);
    if ((opt.overlay || opt.cluster_size) && !overlay)
        usage_error("%s takes no --overlay or --cluster-size", cmd);
    if (job_options_given() && strcmp(cmd, "job") != 0)
        usage_error("%s takes none of job's options", cmd);
}

static JsonNode *run_resize(struct session *s, int argc, char **argv)
{
    uint64_t size;
    need_args(argv, argc, 2, 2, "resize LUN SIZE [--force]");
    allow_options("resize", true, false);
    if (!parse_size(argv[2], &size))
        usage_error("'%s' is not a size (a number, optionally with K, M, G "
                    "or T)", argv[2]);
    JsonBuilder *b = lun_args(argv[1]);
    json_builder_set_member_name(b, "size");
    json_builder_add_int_value(b, (gint64)size);
    if (opt.force) {
        json_builder_set_member_name(b, "force");
        json_builder_add_boolean_value(b, TRUE);
    }
    return execute(s, "lun-resize", end_args(b));
}

static JsonNode *run_snapshot(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 1, 1,
              "snapshot LUN --overlay PATH [--cluster-size SIZE]");
    allow_options("snapshot", false, true);
    if (!opt.overlay)
        usage_error("snapshot needs --overlay PATH");
    JsonBuilder *b = lun_args(argv[1]);
    json_builder_set_member_name(b, "overlay");
    /* the server resolves nothing: give it the path as the user meant it */
    g_autofree char *abs = g_canonicalize_filename(opt.overlay, NULL);
    json_builder_add_string_value(b, abs);
    if (opt.cluster_size) {
        uint64_t cs;
        if (!parse_size(opt.cluster_size, &cs))
            usage_error("'%s' is not a size", opt.cluster_size);
        json_builder_set_member_name(b, "cluster-size");
        json_builder_add_int_value(b, (gint64)cs);
    }
    return execute(s, "snapshot-create", end_args(b));
}

static JsonNode *run_snapshot_internal(struct session *s, int argc,
                                       char **argv, bool *is_list)
{
    const char *syn = "snapshot-internal LUN create|delete|list [NAME]";
    need_args(argv, argc, 2, 3, syn);
    allow_options("snapshot-internal", false, false);
    const char *action = argv[2];
    JsonBuilder *b = lun_args(argv[1]);
    *is_list = strcmp(action, "list") == 0;
    if (*is_list) {
        if (argc != 3)
            usage_error("snapshot-internal LUN list takes no NAME");
        return execute(s, "snapshot-internal-list", end_args(b));
    }
    if (strcmp(action, "create") && strcmp(action, "delete"))
        usage_error("usage: qlunctl %s", syn);
    if (argc != 4)
        usage_error("snapshot-internal LUN %s needs a NAME", action);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, argv[3]);
    return execute(s, strcmp(action, "create") == 0
                          ? "snapshot-internal-create"
                          : "snapshot-internal-delete", end_args(b));
}

static bool throttle_options_given(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(throttle_opts); i++)
        if (opt.throttle[i])
            return true;
    return opt.group != NULL;
}

/* The command sets the whole throttle: a limit not given is none; a
 * group given alone is joined with its limits as they are. */
static JsonNode *run_throttle(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 1, 1, "throttle LUN [--iops N] ... [--group NAME]");
    allow_options("throttle", false, false);
    JsonBuilder *b = lun_args(argv[1]);
    for (size_t i = 0; i < G_N_ELEMENTS(throttle_opts); i++) {
        const char *v = opt.throttle[i];
        uint64_t n;
        if (!v)
            continue;
        if (throttle_opts[i].bytes ? !parse_size(v, &n)
                                   : !parse_size(v, &n) || !g_ascii_isdigit(
                                         v[strlen(v) - 1]))
            usage_error("--%s: '%s' is not %s", throttle_opts[i].option, v,
                        throttle_opts[i].bytes
                            ? "a rate in bytes/s (K, M, G, T suffixes)"
                            : "a whole number");
        json_builder_set_member_name(b, throttle_opts[i].arg);
        json_builder_add_int_value(b, (gint64)n);
    }
    if (opt.group) {
        json_builder_set_member_name(b, "group");
        json_builder_add_string_value(b, opt.group);
    }
    return execute(s, "lun-set-throttle", end_args(b));
}

static void print_throttle(JsonNode *ret)
{
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret)
                                                : NULL;
    if (o && !json_object_get_boolean_member_with_default(o, "persisted",
                                                          true))
        printf("the limits apply now, but %s\n", str_member(o, "warning"));
}

static JsonNode *run_copy_on_read(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 2, 2, "copy-on-read LUN on|off");
    allow_options("copy-on-read", false, false);
    bool on = strcmp(argv[2], "on") == 0;
    if (!on && strcmp(argv[2], "off") != 0)
        usage_error("usage: qlunctl copy-on-read LUN on|off");
    JsonBuilder *b = lun_args(argv[1]);
    json_builder_set_member_name(b, "enable");
    json_builder_add_boolean_value(b, on);
    return execute(s, "lun-set-copy-on-read", end_args(b));
}

static JsonNode *run_query(struct session *s, const char *cmd,
                           const char *lun)
{
    return execute(s, cmd, lun ? end_args(lun_args(lun)) : NULL);
}


/* ---- job ---- */

static void add_string(JsonBuilder *b, const char *name, const char *v)
{
    if (!v)
        return;
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, v);
}

static void add_size(JsonBuilder *b, const char *name, const char *v)
{
    uint64_t n;
    if (!v)
        return;
    if (!parse_size(v, &n))
        usage_error("--%s: '%s' is not a number (K, M, G, T suffixes)", name,
                    v);
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, (gint64)n);
}

/* Paths as the user meant them: the server resolves nothing. */
static void add_path(JsonBuilder *b, const char *name, const char *v)
{
    g_autofree char *abs = v ? g_canonicalize_filename(v, NULL) : NULL;
    add_string(b, name, abs);
}

static JsonNode *job_start_args(int argc, char **argv)
{
    const char *syn = "job start LUN stream|commit|mirror [TARGET] [options]";
    if (argc < 4)
        usage_error("usage: qlunctl %s", syn);
    const char *type = argv[3];
    bool mirror = strcmp(type, "mirror") == 0;
    if (argc != (mirror ? 5 : 4))
        usage_error(mirror ? "job start LUN mirror needs one TARGET"
                           : "usage: qlunctl %s", syn);
    if (!mirror && (opt.format || opt.sync || opt.existing ||
                    opt.granularity))
        usage_error("--format, --sync, --existing and --granularity are "
                    "mirror's");
    if (mirror && (opt.base || opt.top))
        usage_error("--base and --top are stream's and commit's");
    if (opt.ready || opt.timeout)
        usage_error("--ready and --timeout are job wait's");
    JsonBuilder *b = lun_args(argv[2]);
    add_string(b, "type", type);
    add_string(b, "id", opt.id);
    add_size(b, "speed", opt.speed);
    add_path(b, "top", opt.top);
    add_path(b, "base", opt.base);
    add_path(b, "target", mirror ? argv[4] : NULL);
    add_string(b, "format", opt.format);
    add_string(b, "sync", opt.sync);
    add_size(b, "granularity", opt.granularity);
    if (opt.existing) {
        json_builder_set_member_name(b, "existing");
        json_builder_add_boolean_value(b, TRUE);
    }
    return end_args(b);
}

static void print_jobs(JsonNode *ret)
{
    JsonArray *a = json_node_get_array(ret);
    printf("%-12s %-7s %-20s %-10s %-10s %21s %6s %12s\n", "ID", "TYPE",
           "LUN", "STATUS", "RESULT", "DONE/TOTAL", "%", "RATE");
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        uint64_t done = int_member(j, "done"), total = int_member(j, "total");
        g_autofree char *d = human_size(done), *t = human_size(total);
        g_autofree char *r = human_size(int_member(j, "rate"));
        g_autofree char *dt = g_strdup_printf("%s/%s", d, t);
        JsonNode *res = json_object_get_member(j, "result");
        printf("%-12s %-7s %-20s %-10s %-10s %21s %5.1f%% %10s/s\n",
               str_member(j, "id"), str_member(j, "type"),
               str_member(j, "lun"), str_member(j, "status"),
               res && !JSON_NODE_HOLDS_NULL(res) ? json_node_get_string(res)
                                                 : "-",
               dt, total ? 100.0 * (double)done / (double)total : 0.0, r);
        if (json_object_has_member(j, "error"))
            printf("  error: %s\n", str_member(j, "error"));
    }
}

/* The job's entry in query-jobs, or NULL once it is not listed. */
static JsonObject *find_job(JsonNode *list, const char *id)
{
    JsonArray *a = json_node_get_array(list);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        if (strcmp(str_member(j, "id"), id) == 0)
            return j;
    }
    return NULL;
}

/* Poll query-jobs every 200 ms (simpler than following events, and a
 * missed event cannot hang it). */
static int job_wait(struct session *s, const char *id)
{
    gint64 deadline = opt.timeout > 0
        ? g_get_monotonic_time() + (gint64)(opt.timeout * 1e6) : 0;
    for (;;) {
        g_autoptr(JsonNode) list = execute(s, "query-jobs", NULL);
        JsonObject *j = find_job(list, id);
        if (!j)
            fail("no job %s", id);
        const char *st = str_member(j, "status");
        if (opt.ready && strcmp(st, "ready") == 0)
            return 0;
        if (strcmp(st, "concluded") == 0) {
            JsonNode *res = json_object_get_member(j, "result");
            const char *r = res && !JSON_NODE_HOLDS_NULL(res)
                ? json_node_get_string(res) : "";
            if (strcmp(r, "completed") == 0)
                return 0;
            fprintf(stderr, "qlunctl: job %s %s%s%s\n", id, r,
                    json_object_has_member(j, "error") ? ": " : "",
                    str_member(j, "error"));
            return 1;
        }
        if (deadline && g_get_monotonic_time() >= deadline) {
            fprintf(stderr, "qlunctl: job %s still %s after %g s\n", id, st,
                    opt.timeout);
            return 1;
        }
        g_usleep(200000);
    }
}

static int job_control(struct session *s, int argc, char **argv)
{
    static const char *const simple[] = {
        "pause", "resume", "cancel", "complete", "dismiss",
    };
    const char *sub = argv[1];
    bool set_speed = strcmp(sub, "set-speed") == 0;
    bool wait = strcmp(sub, "wait") == 0;
    bool known = set_speed || wait;
    for (size_t i = 0; i < G_N_ELEMENTS(simple); i++)
        known |= strcmp(sub, simple[i]) == 0;
    if (!known)
        usage_error("unknown job subcommand '%s'", sub);
    if (argc != (set_speed ? 4 : 3))
        usage_error(set_speed ? "usage: qlunctl job set-speed ID BYTES_PER_S"
                              : "usage: qlunctl job %s ID", sub);
    if (opt.base || opt.top || opt.speed || opt.id || opt.format ||
        opt.sync || opt.granularity || opt.existing ||
        (!wait && (opt.ready || opt.timeout)))
        usage_error("job %s takes no such option", sub);
    if (wait)
        return job_wait(s, argv[2]);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    add_string(b, "id", argv[2]);
    if (set_speed)
        add_size(b, "speed", argv[3]);
    g_autofree char *cmd = g_strconcat("job-", sub, NULL);
    g_autoptr(JsonNode) ret = execute(s, cmd, end_args(b));
    if (opt.json)
        print_json(ret);
    return 0;
}

/* argv[1] is the subcommand. */
static int run_job(struct session *s, int argc, char **argv)
{
    if (argc < 2)
        usage_error("usage: qlunctl job start|list|pause|resume|cancel|"
                    "complete|dismiss|set-speed|wait ...");
    const char *sub = argv[1];
    if (strcmp(sub, "start") == 0) {
        g_autoptr(JsonNode) ret = execute(s, "job-start",
                                          job_start_args(argc, argv));
        if (opt.json)
            print_json(ret);
        else
            printf("%s\n", str_member(json_node_get_object(ret), "id"));
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        if (argc > 3 || job_options_given())
            usage_error("usage: qlunctl job list [LUN]");
        g_autoptr(JsonNode) ret = run_query(s, "query-jobs",
                                            argc == 3 ? argv[2] : NULL);
        if (opt.json)
            print_json(ret);
        else
            print_jobs(ret);
        return 0;
    }
    return job_control(s, argc, argv);
}

static void parse_options(int *argc, char ***argv)
{
    gboolean help = FALSE;
    GOptionEntry entries[] = {
        { "socket", 0, 0, G_OPTION_ARG_STRING, &opt.socket, NULL, NULL },
        { "json", 0, 0, G_OPTION_ARG_NONE, &opt.json, NULL, NULL },
        { "force", 0, 0, G_OPTION_ARG_NONE, &opt.force, NULL, NULL },
        { "overlay", 0, 0, G_OPTION_ARG_STRING, &opt.overlay, NULL, NULL },
        { "cluster-size", 0, 0, G_OPTION_ARG_STRING, &opt.cluster_size,
          NULL, NULL },
        { "group", 0, 0, G_OPTION_ARG_STRING, &opt.group, NULL, NULL },
        { "base", 0, 0, G_OPTION_ARG_STRING, &opt.base, NULL, NULL },
        { "top", 0, 0, G_OPTION_ARG_STRING, &opt.top, NULL, NULL },
        { "speed", 0, 0, G_OPTION_ARG_STRING, &opt.speed, NULL, NULL },
        { "id", 0, 0, G_OPTION_ARG_STRING, &opt.id, NULL, NULL },
        { "format", 0, 0, G_OPTION_ARG_STRING, &opt.format, NULL, NULL },
        { "sync", 0, 0, G_OPTION_ARG_STRING, &opt.sync, NULL, NULL },
        { "existing", 0, 0, G_OPTION_ARG_NONE, &opt.existing, NULL, NULL },
        { "granularity", 0, 0, G_OPTION_ARG_STRING, &opt.granularity, NULL,
          NULL },
        { "ready", 0, 0, G_OPTION_ARG_NONE, &opt.ready, NULL, NULL },
        { "timeout", 0, 0, G_OPTION_ARG_DOUBLE, &opt.timeout, NULL, NULL },
        { "help", 'h', 0, G_OPTION_ARG_NONE, &help, NULL, NULL },
        { NULL },
    };
    GOptionEntry throttle_entries[G_N_ELEMENTS(throttle_opts) + 1] = { 0 };
    for (size_t i = 0; i < G_N_ELEMENTS(throttle_opts); i++)
        throttle_entries[i] = (GOptionEntry){
            throttle_opts[i].option, 0, 0, G_OPTION_ARG_STRING,
            &opt.throttle[i], NULL, NULL };
    g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
    g_autoptr(GError) e = NULL;
    g_option_context_set_help_enabled(ctx, FALSE);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_add_main_entries(ctx, throttle_entries, NULL);
    if (!g_option_context_parse(ctx, argc, argv, &e))
        usage_error("%s", e->message);
    if (help) {
        fputs(usage_text, stdout);
        exit(0);
    }
    if (!opt.socket)
        opt.socket = g_getenv("QLUN_CTL_SOCKET");
    if (!opt.socket || !*opt.socket)
        opt.socket = DEFAULT_SOCKET;
}

/* ---- the commands ---- */

/* Print a reply (as JSON with --json, else with print; NULL: nothing),
 * free it; the exit status. */
static int finish(JsonNode *ret, void (*print)(JsonNode *))
{
    if (opt.json)
        print_json(ret);
    else if (print)
        print(ret);
    json_node_unref(ret);
    return 0;
}

static int cmd_list(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 0, 0, "list");
    allow_options("list", false, false);
    return finish(run_query(s, "query-luns", NULL), print_list);
}

static int cmd_info(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 1, 1, "info LUN");
    allow_options("info", false, false);
    return finish(run_query(s, "query-luns", argv[1]), print_info);
}

static int cmd_stats(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 1, 1, "stats LUN");
    allow_options("stats", false, false);
    return finish(run_query(s, "query-stats", argv[1]), print_stats);
}

static G_NORETURN int cmd_events(struct session *s, int argc, char **argv)
{
    need_args(argv, argc, 0, 0, "events");
    allow_options("events", false, false);
    connect_server(s);
    watch_events(s);
}

static int cmd_resize(struct session *s, int argc, char **argv)
{
    return finish(run_resize(s, argc, argv), NULL);
}

static int cmd_snapshot(struct session *s, int argc, char **argv)
{
    return finish(run_snapshot(s, argc, argv), print_snapshot);
}

static int cmd_snapshot_internal(struct session *s, int argc, char **argv)
{
    bool list = false;
    JsonNode *ret = run_snapshot_internal(s, argc, argv, &list);
    return finish(ret, list ? print_snapshots : NULL);
}

static int cmd_throttle(struct session *s, int argc, char **argv)
{
    return finish(run_throttle(s, argc, argv), print_throttle);
}

static int cmd_copy_on_read(struct session *s, int argc, char **argv)
{
    return finish(run_copy_on_read(s, argc, argv), NULL);
}

/* Each command checks its arguments (argv[1] is the first), sends its
 * request and prints the reply; returns the exit status. */
static const struct {
    const char *name;
    int (*run)(struct session *s, int argc, char **argv);
} commands[] = {
    { "list", cmd_list },
    { "info", cmd_info },
    { "stats", cmd_stats },
    { "resize", cmd_resize },
    { "snapshot", cmd_snapshot },
    { "snapshot-internal", cmd_snapshot_internal },
    { "throttle", cmd_throttle },
    { "copy-on-read", cmd_copy_on_read },
    { "job", run_job },
    { "events", cmd_events },
};

int main(int argc, char **argv)
{
    parse_options(&argc, &argv);
    if (argc < 2)
        usage_error("no command given");
    /* after GOption, argv[1] is the command; shift so argv[1] is its
     * first argument */
    const char *cmd = argv[1];
    argc--;
    argv++;
    size_t i = 0;
    while (i < G_N_ELEMENTS(commands) && strcmp(cmd, commands[i].name) != 0)
        i++;
    if (i == G_N_ELEMENTS(commands))
        usage_error("unknown command '%s'", cmd);
    if (throttle_options_given() && strcmp(cmd, "throttle") != 0)
        usage_error("%s takes no throttle options (--iops, --bps, ..., "
                    "--group)", cmd);
    struct session s = { 0 };
    int rc = commands[i].run(&s, argc, argv);
    if (s.sc) {
        g_object_unref(s.in);
        g_object_unref(s.sc);
    }
    return rc;
}
