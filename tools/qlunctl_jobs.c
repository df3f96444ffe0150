/* qlunctl job start|list|pause|resume|cancel|complete|dismiss|set-speed|
 * wait: the block jobs of README "Block jobs" over the socket's job-*
 * commands and query-jobs. */
#include <stdio.h>
#include <string.h>

#include "qlunctl.h"

bool job_options_given(void)
{
    return opt.base || opt.top || opt.speed || opt.id || opt.format ||
           opt.sync || opt.granularity || opt.existing || opt.ready ||
           opt.timeout;
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
int cmd_job(struct session *s, int argc, char **argv)
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
