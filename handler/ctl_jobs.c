/* qlun — the management socket's block job commands (job-start,
 * query-jobs, job-pause/resume/cancel/complete/dismiss/set-speed) and the
 * job events.  Arguments arrive checked by type (ctl_commands.c); here
 * their values are checked, including which arguments a job type takes,
 * so that a mistyped request is refused with a line saying what is wrong
 * instead of starting a job that ignores part of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/job.h"
#include "handler/ctl-internal.h"
#include "handler/registry.h"

#define JOB_TYPES "stream, commit, mirror"

/* The arguments each job type takes beyond lun, type, id and speed. */
static const struct {
    const char *type;
    const char *args[6];
} type_args[] = {
    { "stream", { "top", "base" } },
    { "commit", { "top", "base" } },
    { "mirror", { "target", "format", "sync", "existing", "granularity" } },
};

static bool type_takes(size_t t, const char *arg)
{
    static const char *const common[] = { "lun", "type", "id", "speed" };
    for (size_t i = 0; i < G_N_ELEMENTS(common); i++)
        if (strcmp(common[i], arg) == 0)
            return true;
    for (size_t i = 0; type_args[t].args[i]; i++)
        if (strcmp(type_args[t].args[i], arg) == 0)
            return true;
    return false;
}

static bool find_type(const char *type, size_t *t)
{
    for (*t = 0; *t < G_N_ELEMENTS(type_args); (*t)++)
        if (strcmp(type_args[*t].type, type) == 0)
            return true;
    return false;
}

/* QMP's rule for ids: a letter, then letters, digits, '-', '.', '_'. */
static bool id_ok(const char *id)
{
    if (!g_ascii_isalpha(id[0]) || strlen(id) >= 64)
        return false;
    for (const char *c = id; *c; c++)
        if (!g_ascii_isalnum(*c) && !strchr("-._", *c))
            return false;
    return true;
}

static const char *opt_string(JsonObject *args, const char *name)
{
    return json_object_has_member(args, name)
        ? json_object_get_string_member(args, name) : NULL;
}

static bool check_path(JsonObject *args, const char *name,
                       struct ctl_error *e)
{
    const char *p = opt_string(args, name);
    if (p && p[0] != '/') {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: '%s' must "
                      "be an absolute path", name);
        return false;
    }
    return true;
}

/* Which arguments the type takes, and the ones every type checks. */
static bool check_common(JsonObject *args, size_t t, struct ctl_error *e)
{
    GList *names = json_object_get_members(args);
    bool ok = true;
    for (GList *l = names; l && ok; l = l->next) {
        if (!type_takes(t, l->data)) {
            ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: a %s "
                          "job takes no '%s'", type_args[t].type,
                          (const char *)l->data);
            ok = false;
        }
    }
    g_list_free(names);
    const char *id = opt_string(args, "id");
    if (ok && id && !id_ok(id)) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: 'id' must "
                      "start with a letter and hold only letters, digits, "
                      "'-', '.' and '_' (at most 63)");
        ok = false;
    }
    return ok && check_path(args, "top", e) && check_path(args, "base", e) &&
           check_path(args, "target", e);
}

static bool check_mirror(JsonObject *args, struct ctl_error *e)
{
    const char *sync = opt_string(args, "sync");
    const char *format = opt_string(args, "format");
    gint64 g = json_object_get_int_member_with_default(args, "granularity",
                                                       0);
    char names[128];
    if (!json_object_has_member(args, "target")) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: a mirror "
                      "job needs 'target'");
    } else if (sync && strcmp(sync, "full") && strcmp(sync, "top")) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: 'sync' must "
                      "be full or top");
    } else if (format && !block_driver_find(format)) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: 'format' "
                      "must be one of %s",
                      block_driver_names(names, sizeof(names)));
    } else if (json_object_has_member(args, "granularity") &&
               (g < 4096 || g > (64 << 20) || (g & (g - 1)))) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: "
                      "'granularity' must be a power of two from 4096 to "
                      "67108864");
    }
    return !e->class;
}

static void fill_params(JsonObject *args, struct job_params *p)
{
    const char *sync = opt_string(args, "sync");
    *p = (struct job_params){
        .type = json_object_get_string_member(args, "type"),
        .id = opt_string(args, "id"),
        .speed = (uint64_t)json_object_get_int_member_with_default(
            args, "speed", 0),
        .top = opt_string(args, "top"),
        .base = opt_string(args, "base"),
        .target = opt_string(args, "target"),
        .format = opt_string(args, "format"),
        .sync_top = sync && strcmp(sync, "top") == 0,
        .existing = json_object_get_boolean_member_with_default(
            args, "existing", false),
        .granularity = (uint32_t)json_object_get_int_member_with_default(
            args, "granularity", 0),
    };
}

static JsonNode *id_reply(const char *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, id);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

JsonNode *ctl_job_start(JsonObject *args, struct ctl_error *e)
{
    const char *type = json_object_get_string_member(args, "type");
    size_t t;
    if (!find_type(type, &t)) {
        ctl_set_error(e, CTL_ERR_INVALID_PARAMETER, "job-start: unknown "
                      "job type '%s' (known: " JOB_TYPES ")", type);
        return NULL;
    }
    if (!check_common(args, t, e) ||
        (strcmp(type, "mirror") == 0 && !check_mirror(args, e)))
        return NULL;
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    struct job_params p;
    char id[64], err[512] = "";
    fill_params(args, &p);
    int ret = qlun_dev_job_start(d, &p, id, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0) {
        /* A node or id that does not fit is the request's fault. */
        if (ret == -ENOENT || ret == -EEXIST)
            ret = -EINVAL;
        ctl_set_errno_error(e, ret, err);
        return NULL;
    }
    return id_reply(id);
}

/* One job's members as query-jobs and the events name them. */
static void add_job_members(JsonBuilder *b, const struct job_info *j)
{
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, j->id);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, j->type);
    json_builder_set_member_name(b, "lun");
    json_builder_add_string_value(b, j->lun);
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, job_status_name(j->status));
    json_builder_set_member_name(b, "result");
    if (j->result == JOB_RESULT_NONE)
        json_builder_add_null_value(b);
    else
        json_builder_add_string_value(b, job_result_name(j->result));
    if (j->error[0]) {
        json_builder_set_member_name(b, "error");
        json_builder_add_string_value(b, j->error);
    }
    json_builder_set_member_name(b, "done");
    json_builder_add_int_value(b, (gint64)j->done);
    json_builder_set_member_name(b, "total");
    json_builder_add_int_value(b, (gint64)j->total);
}

JsonNode *ctl_query_jobs(JsonObject *args, struct ctl_error *e)
{
    char serial[128] = "";
    if (json_object_has_member(args, "lun")) {
        struct qlun_dev *d = ctl_get_lun(args, e);
        if (!d)
            return NULL;
        snprintf(serial, sizeof(serial), "%s", d->serial);
        lun_registry_put(d);
    }
    struct job_info *jobs = NULL;
    size_t n = 0;
    int ret = job_list(serial[0] ? serial : NULL, &jobs, &n);
    if (ret < 0) {
        ctl_set_errno_error(e, ret, "");
        return NULL;
    }
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++) {
        json_builder_begin_object(b);
        add_job_members(b, &jobs[i]);
        json_builder_set_member_name(b, "speed");
        json_builder_add_int_value(b, (gint64)jobs[i].speed);
        json_builder_set_member_name(b, "rate");
        /* A concluded job copies no more, whatever its last
         * interval's rate was. */
        json_builder_add_int_value(b, jobs[i].status == JOB_CONCLUDED ? 0
                                   : (gint64)jobs[i].rate);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    free(jobs);
    return json_builder_get_root(b);
}

/* A control function's errno as the reply: QMP answers a job id it does
 * not know with DeviceNotActive. */
static void job_error(struct ctl_error *e, int ret, const char *err)
{
    if (ret == -ENOENT)
        ctl_set_error(e, CTL_ERR_DEVICE_NOT_ACTIVE, "%s",
                      err[0] ? err : "no such job");
    else
        ctl_set_errno_error(e, ret, err);
}

typedef int (*job_control_fn)(const char *id, char *err, size_t errlen);

static JsonNode *job_control(JsonObject *args, struct ctl_error *e,
                             job_control_fn fn)
{
    char err[512] = "";
    const char *id = json_object_get_string_member(args, "id");
    int ret = fn(id, err, sizeof(err));
    if (ret < 0)
        job_error(e, ret, err);
    return NULL;
}

JsonNode *ctl_job_pause(JsonObject *args, struct ctl_error *e)
{
    return job_control(args, e, job_pause);
}

JsonNode *ctl_job_resume(JsonObject *args, struct ctl_error *e)
{
    return job_control(args, e, job_resume);
}

JsonNode *ctl_job_cancel(JsonObject *args, struct ctl_error *e)
{
    return job_control(args, e, job_cancel);
}

JsonNode *ctl_job_complete(JsonObject *args, struct ctl_error *e)
{
    return job_control(args, e, job_complete);
}

JsonNode *ctl_job_dismiss(JsonObject *args, struct ctl_error *e)
{
    return job_control(args, e, job_dismiss);
}

JsonNode *ctl_job_set_speed(JsonObject *args, struct ctl_error *e)
{
    char err[512] = "";
    const char *id = json_object_get_string_member(args, "id");
    uint64_t speed = (uint64_t)json_object_get_int_member(args, "speed");
    int ret = job_set_speed(id, speed, err, sizeof(err));
    if (ret < 0)
        job_error(e, ret, err);
    return NULL;
}

/* block/job.h's event hook: every job event on the socket. */
static void job_event(const char *event, const struct job_info *info)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    add_job_members(b, info);
    json_builder_end_object(b);
    ctl_emit_event(event, json_builder_get_root(b));
}

void ctl_jobs_init(void)
{
    job_set_event_hook(job_event);
}
