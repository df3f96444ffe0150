/* qlun — the management socket's commands: the table, argument checking
 * and dispatch.  Every request is checked completely here (shape, command
 * name, each argument's presence and type, no unknown argument) before a
 * command's handler runs, so handlers see only well-formed arguments. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "handler/ctl-internal.h"
#include "handler/registry.h"

enum ctl_arg_type {
    ARG_STRING,   /* non-empty string */
    ARG_UINT,     /* integer >= 0 */
    ARG_BOOL,
};

struct ctl_arg_spec {
    const char *name;
    enum ctl_arg_type type;
    bool required;
};

#define CTL_MAX_ARGS 16

struct ctl_command {
    const char *name;
    ctl_command_fn fn;
    struct ctl_arg_spec args[CTL_MAX_ARGS];   /* ends at name == NULL */
};

static const struct ctl_command commands[] = {
    { "query-luns", ctl_query_luns, { { "lun", ARG_STRING, false } } },
    { "query-stats", ctl_query_stats, { { "lun", ARG_STRING, false } } },
    { "lun-resize", ctl_lun_resize,
      { { "lun", ARG_STRING, true }, { "size", ARG_UINT, true },
        { "force", ARG_BOOL, false } } },
    { "snapshot-create", ctl_snapshot_create,
      { { "lun", ARG_STRING, true }, { "overlay", ARG_STRING, true },
        { "cluster-size", ARG_UINT, false } } },
    { "snapshot-internal-create", ctl_snapshot_internal_create,
      { { "lun", ARG_STRING, true }, { "name", ARG_STRING, true } } },
    { "snapshot-internal-delete", ctl_snapshot_internal_delete,
      { { "lun", ARG_STRING, true }, { "name", ARG_STRING, true } } },
    { "snapshot-internal-list", ctl_snapshot_internal_list,
      { { "lun", ARG_STRING, true } } },
    { "lun-set-throttle", ctl_lun_set_throttle,
      { { "lun", ARG_STRING, true },
        { "iops-total", ARG_UINT, false }, { "iops-read", ARG_UINT, false },
        { "iops-write", ARG_UINT, false }, { "bps-total", ARG_UINT, false },
        { "bps-read", ARG_UINT, false }, { "bps-write", ARG_UINT, false },
        { "iops-total-max", ARG_UINT, false },
        { "iops-read-max", ARG_UINT, false },
        { "iops-write-max", ARG_UINT, false },
        { "bps-total-max", ARG_UINT, false },
        { "bps-read-max", ARG_UINT, false },
        { "bps-write-max", ARG_UINT, false },
        { "burst-seconds", ARG_UINT, false }, { "group", ARG_STRING, false } } },
};

void ctl_set_error(struct ctl_error *e, const char *class, const char *fmt,
                   ...)
{
    va_list ap;
    e->class = class;
    va_start(ap, fmt);
    vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
    va_end(ap);
    /* A long name echoed may be cut inside a UTF-8 sequence: end the
     * line before it, or the reply would not be valid JSON text. */
    const char *valid_end;
    if (!g_utf8_validate(e->desc, -1, &valid_end))
        e->desc[valid_end - e->desc] = '\0';
}

void ctl_set_errno_error(struct ctl_error *e, int ret, const char *msg)
{
    /* The operation's own line says what was wrong; the class only says
     * whether the request (as opposed to the LUN or the host) was. */
    ctl_set_error(e, ret == -EINVAL ? CTL_ERR_INVALID_PARAMETER
                                    : CTL_ERR_GENERIC,
                  "%s", msg[0] ? msg : g_strerror(-ret));
}

struct qlun_dev *ctl_get_lun(JsonObject *args, struct ctl_error *e)
{
    const char *key = json_object_get_string_member(args, "lun");
    struct qlun_dev *d = lun_registry_get(key);
    if (!d)
        ctl_set_error(e, CTL_ERR_DEVICE_NOT_FOUND,
                      "no LUN '%s' (name it by serial or backstore name)",
                      key);
    return d;
}

static const char *type_name(enum ctl_arg_type t)
{
    switch (t) {
    case ARG_STRING: return "a non-empty string";
    case ARG_UINT: return "an integer >= 0";
    case ARG_BOOL: return "a boolean";
    }
    return "?";
}

static bool arg_has_type(JsonNode *n, enum ctl_arg_type t)
{
    if (!JSON_NODE_HOLDS_VALUE(n))
        return false;
    GType vt = json_node_get_value_type(n);
    switch (t) {
    case ARG_STRING:
        return vt == G_TYPE_STRING && json_node_get_string(n)[0];
    case ARG_UINT:
        return vt == G_TYPE_INT64 && json_node_get_int(n) >= 0;
    case ARG_BOOL:
        return vt == G_TYPE_BOOLEAN;
    }
    return false;
}

static const struct ctl_arg_spec *find_arg(const struct ctl_command *c,
                                           const char *name)
{
    for (const struct ctl_arg_spec *a = c->args; a->name; a++)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

/* Every argument known and of its type, every required one present. */
static bool check_args(const struct ctl_command *c, JsonObject *args,
                       struct ctl_error *e)
{
    GList *names = json_object_get_members(args);
    bool ok = true;
    for (GList *l = names; l && ok; l = l->next) {
        const struct ctl_arg_spec *a = find_arg(c, l->data);
        if (!a) {
            ctl_set_error(e, CTL_ERR_INVALID_PARAMETER,
                          "%s: unknown argument '%s'", c->name,
                          (const char *)l->data);
            ok = false;
        } else if (!arg_has_type(json_object_get_member(args, a->name),
                                 a->type)) {
            ctl_set_error(e, CTL_ERR_INVALID_PARAMETER,
                          "%s: argument '%s' must be %s", c->name, a->name,
                          type_name(a->type));
            ok = false;
        }
    }
    g_list_free(names);
    for (const struct ctl_arg_spec *a = c->args; ok && a->name; a++) {
        if (a->required && !json_object_has_member(args, a->name)) {
            ctl_set_error(e, CTL_ERR_INVALID_PARAMETER,
                          "%s: missing argument '%s'", c->name, a->name);
            ok = false;
        }
    }
    return ok;
}

static const struct ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* The request's command run, or e set. */
static JsonNode *dispatch(JsonObject *req, struct ctl_error *e)
{
    JsonNode *exec = json_object_get_member(req, "execute");
    if (!exec || json_node_get_value_type(exec) != G_TYPE_STRING) {
        ctl_set_error(e, CTL_ERR_GENERIC,
                      "the request has no \"execute\" string");
        return NULL;
    }
    const char *name = json_node_get_string(exec);
    const struct ctl_command *c = find_command(name);
    if (!c) {
        ctl_set_error(e, CTL_ERR_COMMAND_NOT_FOUND,
                      "the command '%s' has not been found", name);
        return NULL;
    }
    GList *members = json_object_get_members(req);
    for (GList *l = members; l; l = l->next) {
        const char *m = l->data;
        if (strcmp(m, "execute") && strcmp(m, "arguments") &&
            strcmp(m, "id")) {
            ctl_set_error(e, CTL_ERR_GENERIC, "unknown request member '%s' "
                          "(expected execute, arguments, id)", m);
            break;
        }
    }
    g_list_free(members);
    if (e->class)
        return NULL;
    JsonNode *argn = json_object_get_member(req, "arguments");
    if (argn && !JSON_NODE_HOLDS_OBJECT(argn)) {
        ctl_set_error(e, CTL_ERR_GENERIC, "\"arguments\" must be an object");
        return NULL;
    }
    g_autoptr(JsonObject) args = argn ? json_object_ref(
        json_node_get_object(argn)) : json_object_new();
    if (!check_args(c, args, e))
        return NULL;
    return c->fn(args, e);
}

/* The reply to a request, with its id if it had one. */
static char *reply_line(JsonNode *ret, const struct ctl_error *e,
                        JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    if (e->class) {
        json_builder_set_member_name(b, "error");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "class");
        json_builder_add_string_value(b, e->class);
        json_builder_set_member_name(b, "desc");
        json_builder_add_string_value(b, e->desc);
        json_builder_end_object(b);
    } else {
        json_builder_set_member_name(b, "return");
        json_builder_add_value(b, ret);   /* takes ret */
    }
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    return json_to_string(root, FALSE);
}

char *ctl_error_line(const char *class, const char *desc)
{
    struct ctl_error e = { .class = class };
    snprintf(e.desc, sizeof(e.desc), "%s", desc);
    return reply_line(NULL, &e, NULL);
}

/* json-glib's parser recurses once per nesting level, without a limit:
 * a 64 KiB line of '[' would need megabytes of the server thread's stack.
 * No request needs more than a few levels, so deeper ones are refused
 * before parsing.  Brackets inside strings do not count. */
#define CTL_MAX_NESTING 32

static bool nesting_ok(const char *s)
{
    int depth = 0;
    bool in_string = false;
    for (; *s; s++) {
        if (in_string) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                in_string = false;
        } else if (*s == '"') {
            in_string = true;
        } else if (*s == '[' || *s == '{') {
            if (++depth > CTL_MAX_NESTING)
                return false;
        } else if (*s == ']' || *s == '}') {
            depth--;
        }
    }
    return true;
}

char *ctl_execute(const char *request_line)
{
    struct ctl_error e = { 0 };
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    g_autoptr(GError) gerr = NULL;

    if (!nesting_ok(request_line)) {
        ctl_set_error(&e, CTL_ERR_GENERIC, "malformed request: nested "
                      "deeper than %d levels", CTL_MAX_NESTING);
        return reply_line(NULL, &e, NULL);
    }
    if (!json_parser_load_from_data(parser, request_line, -1, &gerr)) {
        ctl_set_error(&e, CTL_ERR_GENERIC, "malformed JSON: %s",
                      gerr->message);
        return reply_line(NULL, &e, NULL);
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        ctl_set_error(&e, CTL_ERR_GENERIC, "a request must be a JSON object");
        return reply_line(NULL, &e, NULL);
    }
    JsonObject *req = json_node_get_object(root);
    JsonNode *ret = dispatch(req, &e);
    if (e.class && ret) {
        json_node_unref(ret);
        ret = NULL;
    }
    if (!e.class && !ret) {     /* QMP answers such commands {} */
        ret = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(ret, json_object_new());
    }
    return reply_line(ret, &e, json_object_get_member(req, "id"));
}
