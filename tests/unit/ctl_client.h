/* qlun tests — asking the management socket's commands (ctl_execute) and
 * opening the LUNs they work on, for test_ctl.c and test_ctl_jobs.c. */
#ifndef QLUN_TESTS_UNIT_CTL_CLIENT_H
#define QLUN_TESTS_UNIT_CTL_CLIENT_H

#include <stdio.h>
#include <stdlib.h>

#include "handler/ctl-internal.h"
#include "handler/device.h"

/* A LUN of blocks 512-byte blocks opened from cfg (exits on failure). */
static inline struct qlun_dev *ctl_test_open_lun(const char *cfg,
                                                 const char *name,
                                                 uint64_t blocks)
{
    char err[1024];
    struct qlun_dev *d = NULL;
    struct qlun_dev_params p = {
        .cfgstring = cfg, .block_size = 512, .num_blocks = blocks,
        .max_xfer_blocks = 1024, .name = name,
    };
    if (qlun_dev_open(&p, &d, err, sizeof(err)) < 0) {
        fprintf(stderr, "cannot open %s: %s\n", cfg, err);
        exit(1);
    }
    return d;
}

/* The reply to one request line, parsed (an object; exits otherwise). */
static inline JsonObject *exec_obj(const char *req)
{
    g_autofree char *reply = ctl_execute(req);
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, reply, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        fprintf(stderr, "reply not an object: %s\n", reply);
        exit(1);
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

/* The error class of req's reply ("" if it succeeded); its desc in desc
 * (optional). */
static inline const char *error_of(const char *req, char *desc, size_t size)
{
    static char class[64];
    g_autoptr(JsonObject) o = exec_obj(req);
    JsonObject *e = json_object_has_member(o, "error")
                        ? json_object_get_object_member(o, "error") : NULL;
    snprintf(class, sizeof(class), "%s",
             e ? json_object_get_string_member(e, "class") : "");
    if (desc)
        snprintf(desc, size, "%s",
                 e ? json_object_get_string_member(e, "desc") : "");
    return class;
}

#endif
