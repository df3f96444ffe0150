/* qlunctl — talking to the management socket: the connection, requests
 * and their replies, and the small helpers that build arguments and read
 * replies for every command (tools/qlunctl.h). */
#include <errno.h>
#include <gio/gunixsocketaddress.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qlunctl.h"

G_NORETURN void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("qlunctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(qlunctl --help shows the usage)\n", stderr);
    exit(2);
}

G_NORETURN void fail(const char *fmt, ...)
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
bool parse_size(const char *s, uint64_t *out)
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

char *human_size(uint64_t v)
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

/* One line from the server, parsed; exits on EOF or garbage. */
JsonNode *read_message(struct session *s)
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

void connect_server(struct session *s)
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
JsonNode *execute(struct session *s, const char *cmd, JsonNode *args)
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
JsonBuilder *lun_args(const char *lun)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "lun");
    json_builder_add_string_value(b, lun);
    return b;
}

JsonNode *end_args(JsonBuilder *b)
{
    json_builder_end_object(b);
    JsonNode *n = json_builder_get_root(b);
    g_object_unref(b);
    return n;
}

void print_json(JsonNode *n)
{
    g_autofree char *s = json_to_string(n, TRUE);
    printf("%s\n", s);
}

const char *str_member(JsonObject *o, const char *name)
{
    return json_object_get_string_member_with_default(o, name, "");
}

uint64_t int_member(JsonObject *o, const char *name)
{
    return (uint64_t)json_object_get_int_member_with_default(o, name, 0);
}

JsonObject *obj_member(JsonObject *o, const char *name)
{
    JsonNode *n = json_object_get_member(o, name);
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

JsonNode *run_query(struct session *s, const char *cmd,
                           const char *lun)
{
    return execute(s, cmd, lun ? end_args(lun_args(lun)) : NULL);
}


void add_string(JsonBuilder *b, const char *name, const char *v)
{
    if (!v)
        return;
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, v);
}

void add_size(JsonBuilder *b, const char *name, const char *v)
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
void add_path(JsonBuilder *b, const char *name, const char *v)
{
    g_autofree char *abs = v ? g_canonicalize_filename(v, NULL) : NULL;
    add_string(b, name, abs);
}

/* Print a reply (as JSON with --json, else with print; NULL: nothing),
 * free it; the exit status. */
int finish(JsonNode *ret, void (*print)(JsonNode *))
{
    if (opt.json)
        print_json(ret);
    else if (print)
        print(ret);
    json_node_unref(ret);
    return 0;
}
