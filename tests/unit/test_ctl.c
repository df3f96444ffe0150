/* Unit tests: the management socket (handler/ctl*.c) and the LUN registry
 * (handler/registry.c), with real LUNs on temporary raw and qcow2 images
 * and no tcmu-runner.  The commands' replies are checked against what the
 * LUNs are; every error class is provoked; I/O runs through a burst of bad
 * requests; events are read from the socket; a close races commands. */
/* first: common/util.h's MIN and MAX give way to GLib's */
#include "scsi_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handler/ctl-internal.h"
#include "handler/backstore_name.h"
#include "handler/registry.h"
#include "ctl_client.h"

static char dir[] = "/tmp/qlun-test-ctl-XXXXXX";
static char raw_path[256], qcow_path[256];
static struct qlun_dev *raw_dev, *qcow_dev;

/* ---- helpers -------------------------------------------------------- */

static struct qlun_dev *open_lun(const char *cfg, const char *name,
                                 uint64_t blocks)
{
    return ctl_test_open_lun(cfg, name, blocks);
}

#define CHECK_ERROR(req, class, desc_part)                                  \
    do {                                                                    \
        char desc_[1024];                                                   \
        CHECK(strcmp(error_of(req, desc_, sizeof(desc_)), class) == 0);     \
        CHECK(strstr(desc_, desc_part) != NULL);                            \
        CHECK(strchr(desc_, '\n') == NULL);                                 \
    } while (0)

static void write_blocks(struct scsi_lun *lun, uint32_t lba, uint16_t n,
                         uint8_t fill)
{
    uint8_t cdb[10] = { 0x2a }, buf[n * 512];
    memset(buf, fill, sizeof(buf));
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, n);
    CHECK_EQ(run(lun, cdb, sizeof(cdb), buf, sizeof(buf)), SCSI_STATUS_GOOD);
}

static bool read_blocks_check(struct scsi_lun *lun, uint32_t lba, uint16_t n,
                              uint8_t fill)
{
    uint8_t cdb[10] = { 0x28 }, buf[n * 512];
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, n);
    if (run(lun, cdb, sizeof(cdb), buf, sizeof(buf)) != SCSI_STATUS_GOOD)
        return false;
    for (size_t i = 0; i < sizeof(buf); i++)
        if (buf[i] != fill)
            return false;
    return true;
}

/* ---- commands, without a socket ------------------------------------- */

static JsonObject *lun_in(JsonArray *a, const char *serial)
{
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *l = json_array_get_object_element(a, i);
        if (strcmp(json_object_get_string_member(l, "serial"), serial) == 0)
            return l;
    }
    return NULL;
}

static void check_node(JsonObject *g, struct qlun_dev *d, const char *driver)
{
    CHECK(strcmp(json_object_get_string_member(g, "driver"), driver) == 0);
    CHECK(strcmp(json_object_get_string_member(g, "filename"),
                 d->cfg.path) == 0);
    CHECK_EQ(json_object_get_int_member(g, "virtual-size"), d->img->size);
    int64_t allocated = image_allocated_bytes(d->img);
    JsonNode *an = json_object_get_member(g, "allocated");
    if (allocated >= 0)     /* else the driver cannot tell: null */
        CHECK_EQ(json_node_get_int(an), allocated);
    else
        CHECK(an && JSON_NODE_HOLDS_NULL(an));
    JsonObject *st = json_object_get_object_member(g, "state");
    CHECK(st && !json_object_get_boolean_member(st, "corrupt"));
    CHECK(st && !json_object_get_boolean_member(st, "writes-lost"));
    CHECK(st && !json_object_get_boolean_member(st, "read-only"));
}

static void test_query_luns(void)
{
    g_autoptr(JsonObject) o = exec_obj(
        "{\"execute\":\"query-luns\",\"id\":17}");
    CHECK_EQ(json_object_get_int_member(o, "id"), 17);
    JsonArray *a = json_object_get_array_member(o, "return");
    CHECK(a && json_array_get_length(a) == 2);
    JsonObject *r = a ? lun_in(a, "rawser") : NULL;
    JsonObject *q = a ? lun_in(a, qcow_dev->serial) : NULL;
    CHECK(r && q);
    if (!r || !q)
        return;
    CHECK(strcmp(json_object_get_string_member(r, "name"), "rawlun") == 0);
    CHECK(strcmp(json_object_get_string_member(r, "cfgstring"),
                 raw_dev->cfgstring) == 0);
    CHECK_EQ(json_object_get_int_member(r, "size"), 8 << 20);
    CHECK_EQ(json_object_get_int_member(r, "block-size"), 512);
    CHECK(!json_object_get_boolean_member(r, "read-only"));
    check_node(json_object_get_object_member(r, "graph"), raw_dev, "raw");
    CHECK(strcmp(json_object_get_string_member(q, "name"), "qlun1") == 0);
    /* a LUN smaller than its image: the LUN's size, the image's own */
    CHECK_EQ(json_object_get_int_member(q, "size"), 12 << 20);
    JsonObject *g = json_object_get_object_member(q, "graph");
    check_node(g, qcow_dev, "qcow2");
    CHECK_EQ(json_object_get_int_member(g, "virtual-size"), 16 << 20);
    CHECK_EQ(json_object_get_int_member(g, "cluster-size"), 65536);

    /* by name and by serial */
    g_autoptr(JsonObject) o2 = exec_obj(
        "{\"execute\":\"query-luns\",\"arguments\":{\"lun\":\"qlun1\"}}");
    a = json_object_get_array_member(o2, "return");
    CHECK(a && json_array_get_length(a) == 1 && lun_in(a, qcow_dev->serial));
    g_autoptr(JsonObject) o3 = exec_obj(
        "{\"execute\":\"query-luns\",\"arguments\":{\"lun\":\"rawser\"}}");
    a = json_object_get_array_member(o3, "return");
    CHECK(a && json_array_get_length(a) == 1 && lun_in(a, "rawser"));
}

static void test_query_stats(void)
{
    for (int i = 0; i < 3; i++)
        write_blocks(raw_dev->lun, 8 * i, 8, 0x5a);
    for (int i = 0; i < 5; i++)
        CHECK(read_blocks_check(raw_dev->lun, 0, 8, 0x5a));
    g_autoptr(JsonObject) o = exec_obj(
        "{\"execute\":\"query-stats\",\"arguments\":{\"lun\":\"rawlun\"}}");
    JsonArray *a = json_object_get_array_member(o, "return");
    CHECK(a && json_array_get_length(a) == 1);
    if (!a || json_array_get_length(a) != 1)
        return;
    JsonObject *l = json_array_get_object_element(a, 0);
    JsonObject *s = json_object_get_object_member(l, "stats");
    CHECK_EQ(json_object_get_int_member(s, "bytes_written"), 3 * 8 * 512);
    CHECK_EQ(json_object_get_int_member(s, "bytes_read"), 5 * 8 * 512);
    JsonObject *c = json_object_get_object_member(s, "commands");
    CHECK_EQ(json_object_get_int_member(c, "WRITE (10)"), 3);
    CHECK_EQ(json_object_get_int_member(c, "READ (10)"), 5);
    /* the same object the statistics file holds */
    char json[16384];
    int n = scsi_lun_stats_json(raw_dev->lun, json, sizeof(json));
    g_autoptr(JsonParser) p = json_parser_new();
    CHECK(json_parser_load_from_data(p, json, n, NULL));
    CHECK(json_node_equal(json_parser_get_root(p),
                          json_object_get_member(l, "stats")));
    JsonObject *t = json_object_get_object_member(l, "soft-threshold");
    CHECK_EQ(json_object_get_int_member(t, "bytes"), 1 << 20);
    CHECK(!json_object_get_boolean_member(t, "reached"));
    /* without "lun": every LUN */
    g_autoptr(JsonObject) all = exec_obj("{\"execute\":\"query-stats\"}");
    a = json_object_get_array_member(all, "return");
    CHECK(a && json_array_get_length(a) == 2);
}

static void test_errors(void)
{
    const char *G = CTL_ERR_GENERIC, *I = CTL_ERR_INVALID_PARAMETER;
    /* the request itself */
    CHECK_ERROR("{\"execute\":", G, "malformed JSON");
    CHECK_ERROR("not json at all", G, "malformed JSON");
    CHECK_ERROR("[1,2]", G, "must be a JSON object");
    CHECK_ERROR("42", G, "must be a JSON object");
    CHECK_ERROR("{}", G, "no \"execute\"");
    CHECK_ERROR("{\"execute\":7}", G, "no \"execute\"");
    CHECK_ERROR("{\"execute\":\"query-luns\",\"argument\":{}}", G,
                "unknown request member 'argument'");
    CHECK_ERROR("{\"execute\":\"query-luns\",\"arguments\":[1]}", G,
                "\"arguments\" must be an object");
    CHECK_ERROR("{\"execute\":\"quit\"}", CTL_ERR_COMMAND_NOT_FOUND,
                "'quit' has not been found");
    /* the LUN */
    CHECK_ERROR("{\"execute\":\"query-stats\",\"arguments\":{\"lun\":\"x\"}}",
                CTL_ERR_DEVICE_NOT_FOUND, "no LUN 'x'");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"x\","
                "\"size\":4096}}", CTL_ERR_DEVICE_NOT_FOUND, "no LUN 'x'");
    /* arguments: missing, of the wrong type, unknown */
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\"}}",
                I, "missing argument 'size'");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"size\":1}}",
                I, "missing argument 'lun'");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":\"10G\"}}", I, "'size' must be an integer >= 0");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":-1}}", I, "'size' must be an integer >= 0");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":1.5}}", I, "'size' must be an integer >= 0");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":1e30}}", I, "'size' must be an integer >= 0");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":4096,\"force\":\"yes\"}}", I,
                "'force' must be a boolean");
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
                "\"size\":0}}", I, "'size' must be > 0");
    CHECK_ERROR("{\"execute\":\"query-stats\",\"arguments\":{\"lun\":5}}",
                I, "'lun' must be a non-empty string");
    CHECK_ERROR("{\"execute\":\"query-stats\",\"arguments\":{\"lun\":\"\"}}",
                I, "'lun' must be a non-empty string");
    CHECK_ERROR("{\"execute\":\"query-stats\",\"arguments\":{\"lun\":null}}",
                I, "'lun' must be a non-empty string");
    CHECK_ERROR("{\"execute\":\"query-luns\",\"arguments\":{\"verbose\":true}}",
                I, "unknown argument 'verbose'");
    CHECK_ERROR("{\"execute\":\"snapshot-create\",\"arguments\":{\"lun\":"
                "\"rawlun\",\"overlay\":\"rel.qcow2\"}}", I, "absolute path");
    CHECK_ERROR("{\"execute\":\"snapshot-create\",\"arguments\":{\"lun\":"
                "\"rawlun\",\"overlay\":\"/x.qcow2\",\"cluster-size\":1000}}",
                I, "power of two");
    CHECK_ERROR("{\"execute\":\"snapshot-internal-create\",\"arguments\":"
                "{\"lun\":\"rawlun\"}}", I, "missing argument 'name'");
    g_autofree char *long_name = g_strnfill(300, 'n');
    g_autofree char *req = g_strdup_printf(
        "{\"execute\":\"snapshot-internal-delete\",\"arguments\":"
        "{\"lun\":\"rawlun\",\"name\":\"%s\"}}", long_name);
    CHECK_ERROR(req, I, "'name' is longer than 255 bytes");

    /* Well-formed requests reach the operations: what they do shows in
     * the LUN, a refusal's errno and line make the error reply. */
    g_autoptr(JsonObject) grown = exec_obj(
        "{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"rawlun\","
        "\"size\":16777216}}");
    CHECK(json_object_has_member(grown, "return"));
    CHECK_EQ(scsi_lun_num_blocks(raw_dev->lun), 32768);
    /* the initiator is told, once: UNIT ATTENTION, CAPACITY DATA HAS
     * CHANGED */
    uint8_t rd[10] = { 0x28 }, blk[512];
    put_be32(rd + 2, 20000);
    put_be16(rd + 7, 1);
    CHECK_SENSE(run(raw_dev->lun, rd, sizeof(rd), blk, sizeof(blk)),
                0x6 /* UNIT ATTENTION */, 0x2a09);
    CHECK_EQ(run(raw_dev->lun, rd, sizeof(rd), blk, sizeof(blk)),
             SCSI_STATUS_GOOD);
    CHECK_ERROR("{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":"
                "\"rawlun\",\"size\":4194304}}", I, "shrinking");
    CHECK_EQ(scsi_lun_num_blocks(raw_dev->lun), 32768);
    CHECK_ERROR("{\"execute\":\"snapshot-create\",\"arguments\":{\"lun\":"
                "\"qlun1\",\"overlay\":\"/o.qcow2\"}}", G,
                "outside the allowed backing root");
    g_autoptr(JsonObject) made = exec_obj(
        "{\"execute\":\"snapshot-internal-create\",\"arguments\":{\"lun\":"
        "\"qlun1\",\"name\":\"s1\"}}");
    CHECK(json_object_has_member(made, "return"));
    g_autoptr(JsonObject) listed = exec_obj(
        "{\"execute\":\"snapshot-internal-list\",\"arguments\":{\"lun\":"
        "\"qlun1\"}}");
    JsonArray *snaps = json_object_get_array_member(listed, "return");
    CHECK(snaps && json_array_get_length(snaps) == 1 &&
          strcmp(json_object_get_string_member(
                     json_array_get_object_element(snaps, 0), "name"),
                 "s1") == 0);
    CHECK_ERROR("{\"execute\":\"snapshot-internal-create\",\"arguments\":"
                "{\"lun\":\"qlun1\",\"name\":\"s1\"}}", G, "exists");
    g_autoptr(JsonObject) gone = exec_obj(
        "{\"execute\":\"snapshot-internal-delete\",\"arguments\":{\"lun\":"
        "\"qlun1\",\"name\":\"s1\"}}");
    CHECK(json_object_has_member(gone, "return"));
    CHECK_ERROR("{\"execute\":\"snapshot-internal-delete\",\"arguments\":"
                "{\"lun\":\"qlun1\",\"name\":\"s1\"}}", G, "no snapshot");
    CHECK_ERROR("{\"execute\":\"snapshot-internal-create\",\"arguments\":"
                "{\"lun\":\"rawlun\",\"name\":\"s1\"}}", G,
                "no internal snapshots");
    struct ctl_error e = { 0 };
    ctl_set_errno_error(&e, -EINVAL, "size below the image's");
    CHECK(strcmp(e.class, I) == 0 && strcmp(e.desc, "size below the image's") == 0);
    ctl_set_errno_error(&e, -ENOSPC, "");
    CHECK(strcmp(e.class, G) == 0 && strcmp(e.desc, g_strerror(ENOSPC)) == 0);

    /* invalid UTF-8 is malformed; a long name echoed is cut on a
     * character boundary (the reply stays valid UTF-8) */
    CHECK_ERROR("{\"execute\":\"\xff\xfe\"}", G, "malformed JSON");
    GString *lng = g_string_new("{\"execute\":\"x");
    for (int i = 0; i < 600; i++)
        g_string_append(lng, "\xc3\xa9");     /* é */
    g_string_append(lng, "\"}");
    g_autofree char *lreply = ctl_execute(lng->str);
    g_string_free(lng, TRUE);
    CHECK(g_utf8_validate(lreply, -1, NULL));
    CHECK(strstr(lreply, CTL_ERR_COMMAND_NOT_FOUND) != NULL);

    /* "id" comes back with errors too, whatever its type */
    g_autoptr(JsonObject) o = exec_obj(
        "{\"execute\":\"nope\",\"id\":{\"a\":[1,\"b\"]}}");
    JsonObject *id = json_object_get_object_member(o, "id");
    CHECK(id && json_array_get_length(json_object_get_array_member(id, "a")) == 2);
}

/* ---- a client on the socket ----------------------------------------- */

static char sock_path[300];

struct client {
    GSocketConnection *sc;
    GDataInputStream *in;
};

/* The next line from the server, parsed; NULL at EOF or after timeout_s. */
static JsonObject *client_read(struct client *c, unsigned timeout_s)
{
    g_socket_set_timeout(g_socket_connection_get_socket(c->sc), timeout_s);
    g_autofree char *line = g_data_input_stream_read_line(c->in, NULL, NULL,
                                                          NULL);
    if (!line)
        return NULL;
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, line, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        fprintf(stderr, "not a JSON object from the server: %s\n", line);
        return NULL;
    }
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static bool client_open(struct client *c)
{
    g_autoptr(GSocketAddress) a = g_unix_socket_address_new(sock_path);
    g_autoptr(GSocketClient) cl = g_socket_client_new();
    c->sc = g_socket_client_connect(cl, G_SOCKET_CONNECTABLE(a), NULL, NULL);
    if (!c->sc)
        return false;
    c->in = g_data_input_stream_new(
        g_io_stream_get_input_stream(G_IO_STREAM(c->sc)));
    g_autoptr(JsonObject) hello = client_read(c, 5);
    JsonObject *q = hello ? json_object_get_object_member(hello, "qlun") : NULL;
    return q && json_object_has_member(q, "version");
}

static void client_close(struct client *c)
{
    g_clear_object(&c->in);
    g_clear_object(&c->sc);
}

static bool client_send(struct client *c, const char *data, size_t len)
{
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(c->sc));
    return g_output_stream_write_all(out, data, len, NULL, NULL, NULL);
}

static bool client_send_line(struct client *c, const char *line)
{
    return client_send(c, line, strlen(line)) && client_send(c, "\n", 1);
}

/* The next reply (events skipped); NULL on EOF or timeout. */
static JsonObject *client_reply(struct client *c)
{
    for (;;) {
        JsonObject *o = client_read(c, 10);
        if (!o || !json_object_has_member(o, "event"))
            return o;
        json_object_unref(o);
    }
}

/* The next event called name within timeout_s; NULL if none. */
static JsonObject *client_event(struct client *c, const char *name,
                                unsigned timeout_s)
{
    gint64 deadline = g_get_monotonic_time() + timeout_s * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < deadline) {
        JsonObject *o = client_read(c, 1);
        if (o && json_object_has_member(o, "event") &&
            strcmp(json_object_get_string_member(o, "event"), name) == 0)
            return o;
        if (o)
            json_object_unref(o);
    }
    return NULL;
}

static const char *reply_error_class(JsonObject *o)
{
    JsonObject *e = o && json_object_has_member(o, "error")
                        ? json_object_get_object_member(o, "error") : NULL;
    return e ? json_object_get_string_member(e, "class") : "";
}

/* A request nested 60000 deep, executed on a thread with a 1 MiB stack:
 * refused, not parsed (json-glib would recurse 60000 times). */
static void *deep_thread(void *arg)
{
    int n = 60000;
    char *req = g_malloc(2 * n + 1);
    memset(req, '[', n);
    memset(req + n, ']', n);
    req[2 * n] = '\0';
    char *reply = ctl_execute(req);
    g_free(req);
    return reply;
}

static void test_deep_nesting(void)
{
    pthread_attr_t attr;
    pthread_t t;
    char *reply = NULL;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    CHECK_EQ(pthread_create(&t, &attr, deep_thread, NULL), 0);
    pthread_join(t, (void **)&reply);
    pthread_attr_destroy(&attr);
    CHECK(reply && strstr(reply, "nested deeper than 32 levels"));
    g_free(reply);
    /* brackets inside strings do not count; 32 levels are fine */
    g_autofree char *open30 = g_strnfill(30, '['), *close30 = g_strnfill(30, ']');
    g_autofree char *ok = g_strdup_printf(
        "{\"execute\":\"x\",\"id\":%s1%s,\"arguments\":{\"a\":\"[[[[{{{{\\\"[[[[\"}}",
        open30, close30);
    CHECK_ERROR(ok, CTL_ERR_COMMAND_NOT_FOUND, "'x' has not been found");
}

/* ---- the server ----------------------------------------------------- */

static void test_server_start(void)
{
    char err[512], sockdir[256];
    struct stat st;
    snprintf(sockdir, sizeof(sockdir), "%s/run", dir);
    snprintf(sock_path, sizeof(sock_path), "%s/qlun.sock", sockdir);
    CHECK_EQ(ctl_server_start(sock_path, err, sizeof(err)), 0);
    /* the directory readable (statistics files live there too), the
     * socket root's alone, and no private directory left behind */
    CHECK(stat(sockdir, &st) == 0 && (st.st_mode & 07777) == 0755);
    CHECK(lstat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
          (st.st_mode & 07777) == 0600);
    GDir *dirents = g_dir_open(sockdir, 0, NULL);
    int entries = 0;
    while (dirents && g_dir_read_name(dirents))
        entries++;
    if (dirents)
        g_dir_close(dirents);
    CHECK_EQ(entries, 1);
    CHECK_EQ(ctl_server_start(sock_path, err, sizeof(err)), -EBUSY);
}

static void test_socket_protocol(void)
{
    struct client c, c2;
    CHECK(client_open(&c));
    /* an id comes back; requests pipelined in one write are answered in
     * order; blank lines are ignored */
    const char *two = "{\"execute\":\"query-luns\",\"id\":\"a\"}\n\n  \n"
                      "{\"execute\":\"query-stats\",\"id\":\"b\"}\n";
    CHECK(client_send(&c, two, strlen(two)));
    g_autoptr(JsonObject) r1 = client_reply(&c);
    g_autoptr(JsonObject) r2 = client_reply(&c);
    CHECK(r1 && strcmp(json_object_get_string_member(r1, "id"), "a") == 0 &&
          json_array_get_length(json_object_get_array_member(r1, "return")) == 2);
    CHECK(r2 && strcmp(json_object_get_string_member(r2, "id"), "b") == 0);
    /* a bad request is answered and the connection goes on */
    CHECK(client_send_line(&c, "{\"execute\": nope}"));
    g_autoptr(JsonObject) r3 = client_reply(&c);
    CHECK(strcmp(reply_error_class(r3), CTL_ERR_GENERIC) == 0);
    CHECK(client_send(&c, "{\"exe\0cute\"}\n", 13));
    g_autoptr(JsonObject) r4 = client_reply(&c);
    CHECK(strcmp(reply_error_class(r4), CTL_ERR_GENERIC) == 0);
    CHECK(client_send_line(&c, "{\"execute\":\"query-luns\",\"id\":3}"));
    g_autoptr(JsonObject) r5 = client_reply(&c);
    CHECK(r5 && json_object_get_int_member(r5, "id") == 3);

    /* a line over the cap, with or without its newline: an error, then
     * the connection is closed; other connections are unaffected */
    CHECK(client_open(&c2));
    g_autofree char *huge = g_strnfill(CTL_MAX_LINE + 10, ' ');
    CHECK(client_send(&c2, huge, strlen(huge)));
    g_autoptr(JsonObject) r6 = client_reply(&c2);
    CHECK(strcmp(reply_error_class(r6), CTL_ERR_GENERIC) == 0);
    CHECK(r6 && strcmp(json_object_get_string_member(
                           json_object_get_object_member(r6, "error"), "desc"),
                       "request line longer than 65536 bytes; closing the "
                       "connection") == 0);
    CHECK(client_read(&c2, 5) == NULL);
    client_close(&c2);
    CHECK(client_open(&c2));
    huge[CTL_MAX_LINE + 5] = '\n';
    CHECK(client_send(&c2, huge, strlen(huge)));
    g_autoptr(JsonObject) r7 = client_reply(&c2);
    CHECK(strcmp(reply_error_class(r7), CTL_ERR_GENERIC) == 0);
    CHECK(client_read(&c2, 5) == NULL);
    client_close(&c2);
    /* a line just under the cap is parsed (and is bad JSON) */
    CHECK(client_open(&c2));
    g_autofree char *big = g_strnfill(CTL_MAX_LINE - 1, 'x');
    CHECK(client_send_line(&c2, big));
    g_autoptr(JsonObject) r8 = client_reply(&c2);
    CHECK(r8 && strstr(json_object_get_string_member(
                    json_object_get_object_member(r8, "error"), "desc"),
                "malformed JSON"));
    client_close(&c2);

    CHECK(client_send_line(&c, "{\"execute\":\"query-luns\",\"id\":4}"));
    g_autoptr(JsonObject) r9 = client_reply(&c);
    CHECK(r9 && json_object_get_int_member(r9, "id") == 4);
    client_close(&c);
}

/* I/O with verification on the raw LUN, until told to stop. */
struct io_run {
    atomic_bool stop;
    unsigned rounds, failures;
};

static void *io_thread(void *arg)
{
    struct io_run *r = arg;
    for (unsigned i = 0; !atomic_load(&r->stop); i++) {
        uint8_t fill = (uint8_t)(i * 7 + 1);
        uint32_t lba = 4096 + (i % 64) * 16;
        uint8_t cdb[10] = { 0x2a }, buf[16 * 512];
        memset(buf, fill, sizeof(buf));
        put_be32(cdb + 2, lba);
        put_be16(cdb + 7, 16);
        if (run(raw_dev->lun, cdb, sizeof(cdb), buf, sizeof(buf)) !=
                SCSI_STATUS_GOOD ||
            !read_blocks_check(raw_dev->lun, lba, 16, fill))
            r->failures++;
        r->rounds++;
    }
    return NULL;
}

static void test_io_during_bad_requests(void)
{
    static const char *const bad[] = {
        "{", "[]", "null", "{\"execute\":\"x\"}",
        "{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":1}}",
        "{\"execute\":\"query-stats\",\"arguments\":{\"lun\":\"rawlun\","
        "\"extra\":1}}",
        "\"\\ud800\"", "{\"execute\":\"query-luns\",\"arguments\":7}",
    };
    struct io_run r = { 0 };
    pthread_t t;
    struct client c;
    unsigned answered = 0;

    pthread_create(&t, NULL, io_thread, &r);
    for (int conn = 0; conn < 10; conn++) {
        if (!client_open(&c))
            break;
        for (int i = 0; i < 50; i++)
            for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
                client_send_line(&c, bad[k]);
                g_autoptr(JsonObject) o = client_reply(&c);
                answered += o && json_object_has_member(o, "error");
            }
        /* and once, a line over the cap */
        g_autofree char *huge = g_strnfill(CTL_MAX_LINE + 1, '{');
        client_send(&c, huge, strlen(huge));
        client_close(&c);
    }
    atomic_store(&r.stop, true);
    pthread_join(t, NULL);
    CHECK_EQ(answered, 10 * 50 * G_N_ELEMENTS(bad));
    CHECK(r.rounds > 0);
    CHECK_EQ(r.failures, 0);
    printf("I/O during %u bad requests: %u write+verify rounds, %u failed\n",
           answered, r.rounds, r.failures);
}

static bool event_is_about(JsonObject *ev, struct qlun_dev *d)
{
    JsonObject *data = ev ? json_object_get_object_member(ev, "data") : NULL;
    JsonObject *ts = ev ? json_object_get_object_member(ev, "timestamp") : NULL;
    return data && ts && json_object_get_int_member(ts, "seconds") > 0 &&
           strcmp(json_object_get_string_member(data, "lun"), d->serial) == 0 &&
           strcmp(json_object_get_string_member(data, "filename"),
                  d->cfg.path) == 0;
}

static gpointer emit_thread(gpointer data)
{
    ctl_emit_event("TEST_EVENT", data);
    return NULL;
}

static void test_events(void)
{
    struct client c, c2;
    CHECK(client_open(&c));
    CHECK(client_open(&c2));

    /* The soft threshold (1 MiB on the raw LUN): write past it.  The
     * write after the crossing reports it as a unit attention, once. */
    unsigned not_good = 0;
    for (int i = 0; i < 130; i++) {
        uint8_t cdb[10] = { 0x2a }, buf[32 * 512];
        memset(buf, 0x33, sizeof(buf));
        put_be32(cdb + 2, 8192 + 32 * i);
        put_be16(cdb + 7, 32);
        not_good += run(raw_dev->lun, cdb, sizeof(cdb), buf, sizeof(buf)) !=
                    SCSI_STATUS_GOOD;
    }
    CHECK_EQ(not_good, 1);
    g_autoptr(JsonObject) ev = client_event(&c, "SOFT_THRESHOLD_REACHED", 5);
    CHECK(event_is_about(ev, raw_dev));
    JsonObject *data = ev ? json_object_get_object_member(ev, "data") : NULL;
    CHECK(data && json_object_get_int_member(data, "threshold") == 1 << 20);
    CHECK(data && json_object_get_int_member(data, "allocated") >= 1 << 20);
    g_autoptr(JsonObject) ev2 = client_event(&c2, "SOFT_THRESHOLD_REACHED", 5);
    CHECK(event_is_about(ev2, raw_dev));   /* every connection gets it */

    /* Corruption and lost writes, as a driver marks them. */
    image_set_state(qcow_dev->img, IMAGE_STATE_CORRUPT);
    g_autoptr(JsonObject) ev3 = client_event(&c, "LUN_CORRUPT", 5);
    CHECK(event_is_about(ev3, qcow_dev));
    image_set_state(qcow_dev->img, IMAGE_STATE_WRITES_LOST);
    g_autoptr(JsonObject) ev4 = client_event(&c, "LUN_WRITES_LOST", 5);
    CHECK(event_is_about(ev4, qcow_dev));
    /* once each: the bits stay set, the events do not repeat */
    g_autoptr(JsonObject) again = client_event(&c, "LUN_CORRUPT", 3);
    CHECK(again == NULL);
    /* and query-luns shows the state */
    g_autoptr(JsonObject) o = exec_obj(
        "{\"execute\":\"query-luns\",\"arguments\":{\"lun\":\"qlun1\"}}");
    JsonObject *l = json_array_get_object_element(
        json_object_get_array_member(o, "return"), 0);
    JsonObject *st = json_object_get_object_member(
        json_object_get_object_member(l, "graph"), "state");
    CHECK(json_object_get_boolean_member(st, "corrupt"));
    CHECK(json_object_get_boolean_member(st, "writes-lost"));

    /* ctl_emit_event from another thread */
    JsonNode *d = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(d, json_object_new());
    json_object_set_int_member(json_node_get_object(d), "n", 5);
    g_thread_join(g_thread_new("emit", emit_thread, d));
    g_autoptr(JsonObject) ev5 = client_event(&c2, "TEST_EVENT", 5);
    CHECK(ev5 && json_object_get_int_member(
                     json_object_get_object_member(ev5, "data"), "n") == 5);
    /* a client that only listens stays connected past the write
     * timeout (5 s) */
    g_usleep(6 * G_USEC_PER_SEC);
    ctl_emit_event("TEST_EVENT", NULL);
    g_autoptr(JsonObject) ev6 = client_event(&c2, "TEST_EVENT", 5);
    CHECK(ev6 != NULL);
    client_close(&c);
    client_close(&c2);
}

/* ---- closing a LUN while commands use it ---------------------------- */

struct closer {
    struct qlun_dev *d;
    atomic_bool done;
};

static void *close_thread(void *arg)
{
    struct closer *c = arg;
    qlun_dev_close(c->d);
    atomic_store(&c->done, true);
    return NULL;
}

static void make_file(const char *path, off_t size)
{
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size) < 0)
        abort();
    close(fd);
}

/* The rule: close waits until no command holds the LUN. */
static void test_close_waits_for_command(void)
{
    char img[300], cfg[400];
    snprintf(img, sizeof(img), "%s/c.img", dir);
    make_file(img, 1 << 20);
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;serial=closeme;stats=off",
             img);
    struct closer c = { .d = open_lun(cfg, "closelun", 2048) };
    struct qlun_dev *held = lun_registry_get("closelun");   /* a command */
    CHECK(held == c.d);
    pthread_t t;
    pthread_create(&t, NULL, close_thread, &c);
    g_usleep(300 * 1000);
    CHECK(!atomic_load(&c.done));          /* close is waiting ... */
    CHECK(lun_registry_get("closeme") == NULL);  /* ... and it is gone */
    CHECK(held->img != NULL && strcmp(held->serial, "closeme") == 0);
    lun_registry_put(held);
    pthread_join(t, NULL);
    CHECK(atomic_load(&c.done));
}

/* Open and close a LUN over and over while commands name it (ASan sees a
 * command touching a freed LUN). */
struct hammer {
    atomic_bool stop;
    unsigned replies;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    static const char *const reqs[] = {
        "{\"execute\":\"query-luns\"}",
        "{\"execute\":\"query-stats\",\"arguments\":{\"lun\":\"racer\"}}",
        "{\"execute\":\"query-luns\",\"arguments\":{\"lun\":\"racelun\"}}",
        "{\"execute\":\"lun-resize\",\"arguments\":{\"lun\":\"racer\","
        "\"size\":4096}}",
    };
    for (unsigned i = 0; !atomic_load(&h->stop); i++) {
        g_free(ctl_execute(reqs[i % G_N_ELEMENTS(reqs)]));
        h->replies++;
    }
    return NULL;
}

static void test_close_races_commands(void)
{
    char img[300], cfg[400];
    snprintf(img, sizeof(img), "%s/r.img", dir);
    make_file(img, 1 << 20);
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;serial=racer;stats=off",
             img);
    struct hammer h = { 0 };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, hammer_thread, &h);
    for (int i = 0; i < 200; i++)
        qlun_dev_close(open_lun(cfg, "racelun", 2048));
    atomic_store(&h.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(h.replies > 0);
    CHECK(lun_registry_get("racer") == NULL);
}

/* ---- the backstore's name, from /sys/class/uio/uioN/name ------------ */

static void test_backstore_name(void)
{
    char name[16];
    CHECK_EQ(backstore_name_from_uio("tcm-user/3/disk1/qlun//srv/a.qcow2;"
                                     "serial=x\n", name, sizeof(name)), 0);
    CHECK(strcmp(name, "disk1") == 0);
    CHECK_EQ(backstore_name_from_uio("tcm-user/0/a/qlun/x", name,
                                     sizeof(name)), 0);
    CHECK(strcmp(name, "a") == 0);
    /* not of the form, or too long: "" */
    CHECK_EQ(backstore_name_from_uio("uio_pdrv/0/disk1/x", name,
                                     sizeof(name)), -EINVAL);
    CHECK(name[0] == '\0');
    CHECK_EQ(backstore_name_from_uio("tcm-user/0/disk1", name, sizeof(name)),
             -EINVAL);
    CHECK_EQ(backstore_name_from_uio("tcm-user/0//qlun/x", name, sizeof(name)),
             -EINVAL);
    CHECK_EQ(backstore_name_from_uio("tcm-user/0/a-name-of-sixteen/x", name,
                                     sizeof(name)), -EINVAL);
    CHECK(name[0] == '\0');
    CHECK_EQ(backstore_name_from_uio("tcm-user/x/disk1/qlun/x", name,
                                     sizeof(name)), -EINVAL);
    /* the configfs directory a changed setting is written to */
    char path[128];
    CHECK_EQ(backstore_dir_from_uio("tcm-user/12/disk1/qlun//srv/a;b=c\n",
                                    path, sizeof(path)), 0);
    CHECK(strcmp(path, "/sys/kernel/config/target/core/user_12/disk1") == 0);
    CHECK_EQ(backstore_dir_from_uio("tcm-user//disk1/x", path, sizeof(path)),
             -EINVAL);
    CHECK_EQ(backstore_dir_from_uio("tcm-user/1/disk1/x", path, 20), -EINVAL);
    CHECK(path[0] == '\0');
}

/* ---- the socket file ------------------------------------------------ */

static void test_socket_file_rules(void)
{
    char err[512], path[300];
    ctl_server_stop();
    CHECK(access(sock_path, F_OK) < 0);      /* stop removes it */

    /* a live socket (someone listening) is left alone */
    snprintf(path, sizeof(path), "%s/live.sock", dir);
    g_autoptr(GSocketAddress) a = g_unix_socket_address_new(path);
    g_autoptr(GSocket) live = g_socket_new(G_SOCKET_FAMILY_UNIX,
        G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, NULL);
    CHECK(g_socket_bind(live, a, FALSE, NULL) && g_socket_listen(live, NULL));
    CHECK_EQ(ctl_server_start(path, err, sizeof(err)), -EEXIST);
    CHECK(strstr(err, "served by another process") != NULL);
    g_socket_close(live, NULL);
    /* ... and once nobody listens, it is stale and replaced */
    CHECK(access(path, F_OK) == 0);
    CHECK_EQ(ctl_server_start(path, err, sizeof(err)), 0);
    snprintf(sock_path, sizeof(sock_path), "%s", path);
    struct client c;
    CHECK(client_open(&c));
    client_close(&c);
    ctl_server_stop();

    /* not a socket: never removed */
    snprintf(path, sizeof(path), "%s/file.sock", dir);
    make_file(path, 10);
    CHECK_EQ(ctl_server_start(path, err, sizeof(err)), -EEXIST);
    CHECK(strstr(err, "is not a socket") != NULL);
    CHECK(access(path, F_OK) == 0);
}

int main(void)
{
    char cfg[600];
    if (!mkdtemp(dir))
        return 1;
    snprintf(raw_path, sizeof(raw_path), "%s/a.img", dir);
    snprintf(qcow_path, sizeof(qcow_path), "%s/b.qcow2", dir);
    make_file(raw_path, 8 << 20);
    g_autofree char *mk = g_strdup_printf("qemu-img create -q -f qcow2 '%s' 16M",
                                          qcow_path);
    if (system(mk) != 0) {
        fprintf(stderr, "qemu-img create failed\n");
        return 1;
    }
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;serial=rawser;"
             "soft_threshold=1M;stats=off", raw_path);
    raw_dev = open_lun(cfg, "rawlun", 16384);
    snprintf(cfg, sizeof(cfg), "qlun/%s;stats=off", qcow_path);
    qcow_dev = open_lun(cfg, "qlun1", 12 << 11);

    test_query_luns();
    test_query_stats();
    test_errors();
    test_deep_nesting();
    test_backstore_name();
    test_server_start();
    test_socket_protocol();
    test_io_during_bad_requests();
    test_events();
    test_close_waits_for_command();
    test_close_races_commands();
    test_socket_file_rules();

    ctl_server_stop();
    qlun_dev_close(raw_dev);
    qlun_dev_close(qcow_dev);
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
    if (system(rm) != 0)
        return 1;
    return check_summary("test_ctl");
}
