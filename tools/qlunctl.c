/* qlunctl — the command-line client of qlun's management socket
 * (README: "Management socket and qlunctl"; qlunctl(8)).
 *
 * Sends one request, prints its reply (human-readable, or the reply's
 * "return" value as JSON with --json); `events` prints events until
 * interrupted.  Exit status: 0 done, 1 error (reply or connection),
 * 2 usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qlunctl.h"

struct qlunctl_options opt;

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
    { "job", cmd_job },
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
