/* qlun — the management socket's server: a thread with its own
 * GMainContext, a GSocketService on a UNIX socket, one connection object
 * per client.
 *
 * Everything here runs on that thread: accepting, reading, executing a
 * request (ctl_execute) and writing replies and events.  Other threads
 * only hand it work through g_main_context_invoke (events, stop).  A
 * client that does not read its replies blocks the thread for at most
 * CTL_WRITE_TIMEOUT_S and is then dropped; SCSI I/O never waits for it. */
#include <errno.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handler/ctl-internal.h"

#define CTL_WRITE_TIMEOUT_S 5
#define CTL_EVENT_POLL_MS 1000
#define CTL_VERSION "0.1.0"

struct conn {
    GSocketConnection *sc;
    GCancellable *cancel;
    GString *pending;          /* bytes read, not yet a whole line */
    char buf[4096];
    bool dead;
};

static struct {
    GMutex lock;               /* guards ctx and thread (start/stop) */
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    GSocketService *service;
    GList *conns;              /* of struct conn *, server thread only */
    unsigned conns_allocated;  /* incl. dead ones a read still holds */
    char *path;
    /* start-up handshake */
    GCond started_cond;
    bool started;
    int start_ret;
    char start_err[512];
} srv;

static void conn_free(struct conn *c)
{
    g_io_stream_close(G_IO_STREAM(c->sc), NULL, NULL);
    g_object_unref(c->sc);
    g_object_unref(c->cancel);
    g_string_free(c->pending, TRUE);
    g_free(c);
    srv.conns_allocated--;
}

/* Drop a connection; a read may still be pending, which owns c then. */
static void conn_kill(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    srv.conns = g_list_remove(srv.conns, c);
    g_cancellable_cancel(c->cancel);
}

static void conn_send(struct conn *c, const char *line)
{
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(c->sc));
    GSocket *s = g_socket_connection_get_socket(c->sc);
    if (c->dead)
        return;
    /* A timeout for this write only: set for good, it would also end the
     * pending read of a client that is only listening for events. */
    g_socket_set_timeout(s, CTL_WRITE_TIMEOUT_S);
    bool ok = g_output_stream_write_all(out, line, strlen(line), NULL, NULL,
                                        NULL) &&
              g_output_stream_write_all(out, "\n", 1, NULL, NULL, NULL);
    g_socket_set_timeout(s, 0);
    if (!ok)
        conn_kill(c);
}

static void conn_read_more(struct conn *c);

/* Execute every whole line in c->pending. */
static void conn_handle_lines(struct conn *c)
{
    char *nl;
    while (!c->dead && (nl = memchr(c->pending->str, '\n', c->pending->len))) {
        size_t len = (size_t)(nl - c->pending->str);
        if (len > CTL_MAX_LINE)
            break;
        g_autofree char *line = g_strndup(c->pending->str, len);
        g_string_erase(c->pending, 0, (gssize)len + 1);
        if (strlen(line) != len) {
            g_autofree char *r = ctl_error_line(CTL_ERR_GENERIC,
                                                "a request may not contain NUL");
            conn_send(c, r);
            continue;
        }
        g_strstrip(line);
        if (!line[0])
            continue;
        g_autofree char *reply = ctl_execute(line);
        conn_send(c, reply);
    }
    if (!c->dead && c->pending->len > CTL_MAX_LINE) {
        g_autofree char *desc = g_strdup_printf(
            "request line longer than %d bytes; closing the connection",
            CTL_MAX_LINE);
        g_autofree char *r = ctl_error_line(CTL_ERR_GENERIC, desc);
        conn_send(c, r);
        conn_kill(c);
    }
}

static void on_read(GObject *src, GAsyncResult *res, gpointer data)
{
    struct conn *c = data;
    gssize n = g_input_stream_read_finish(G_INPUT_STREAM(src), res, NULL);
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (n <= 0) {
        conn_kill(c);
        conn_free(c);
        return;
    }
    g_string_append_len(c->pending, c->buf, n);
    conn_handle_lines(c);
    if (c->dead) {
        conn_free(c);
        return;
    }
    conn_read_more(c);
}

static void conn_read_more(struct conn *c)
{
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(c->sc));
    g_input_stream_read_async(in, c->buf, sizeof(c->buf), G_PRIORITY_DEFAULT,
                              c->cancel, on_read, c);
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *sc,
                            GObject *source, gpointer data)
{
    struct conn *c = g_new0(struct conn, 1);
    srv.conns_allocated++;
    c->sc = g_object_ref(sc);
    c->cancel = g_cancellable_new();
    c->pending = g_string_new(NULL);
    srv.conns = g_list_prepend(srv.conns, c);
    conn_send(c, "{\"qlun\": {\"version\": \"" CTL_VERSION "\"}}");
    if (c->dead) {
        conn_free(c);
        return TRUE;
    }
    conn_read_more(c);
    return TRUE;
}

/* Is someone listening at path?  Only a refused connection means no: a
 * socket file survives the process that made it (a crash, a kill -9). */
static bool socket_is_live(const char *path)
{
    g_autoptr(GSocketAddress) a = g_unix_socket_address_new(path);
    g_autoptr(GSocketClient) cl = g_socket_client_new();
    g_autoptr(GError) e = NULL;
    g_socket_client_set_timeout(cl, 2);
    g_autoptr(GSocketConnection) sc = g_socket_client_connect(
        cl, G_SOCKET_CONNECTABLE(a), NULL, &e);
    return sc != NULL ||
           !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED);
}

/* Bind a listening socket at path, mode 0600 from its first moment: it is
 * made in a private directory, chmod'ed, then renamed into place (which
 * also replaces a stale socket atomically).  No umask games: tcmu-runner
 * has other threads. */
static GSocket *bind_socket(const char *path, char *err, size_t errlen,
                            int *ret)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *tmpdir = g_strdup_printf("%s/.qlun-sock-XXXXXX", dir);
    g_autoptr(GError) e = NULL;
    struct stat st;

    *ret = -EEXIST;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            return NULL;
        }
        if (socket_is_live(path)) {
            snprintf(err, errlen, "%s is served by another process", path);
            return NULL;
        }
    }
    /* 0755 as for the statistics files there; the socket itself is 0600
     * from the start (bound in a private directory, then moved). */
    if (g_mkdir_with_parents(dir, 0755) < 0 || !g_mkdtemp(tmpdir)) {
        *ret = -errno;
        snprintf(err, errlen, "cannot create %s: %s", tmpdir, g_strerror(errno));
        return NULL;
    }
    g_autofree char *tmp = g_build_filename(tmpdir, "s", NULL);
    g_autoptr(GSocketAddress) a = g_unix_socket_address_new(tmp);
    GSocket *s = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                              G_SOCKET_PROTOCOL_DEFAULT, &e);
    if (!s || !g_socket_bind(s, a, FALSE, &e) || !g_socket_listen(s, &e) ||
        chmod(tmp, 0600) < 0 || rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot listen at %s: %s", path,
                 e ? e->message : g_strerror(errno));
        *ret = -EIO;
        if (s)
            g_object_unref(s);
        s = NULL;
        unlink(tmp);
    }
    rmdir(tmpdir);
    if (s)
        *ret = 0;
    return s;
}

static gboolean poll_events(gpointer data)
{
    ctl_events_poll();
    return G_SOURCE_CONTINUE;
}

static int listen_here(void)
{
    g_autoptr(GError) e = NULL;
    int ret;
    g_autoptr(GSocket) s = bind_socket(srv.path, srv.start_err,
                                       sizeof(srv.start_err), &ret);
    if (!s)
        return ret;
    srv.service = g_socket_service_new();
    if (!g_socket_listener_add_socket(G_SOCKET_LISTENER(srv.service), s,
                                      NULL, &e)) {
        snprintf(srv.start_err, sizeof(srv.start_err), "%s", e->message);
        unlink(srv.path);
        g_clear_object(&srv.service);
        return -EIO;
    }
    g_signal_connect(srv.service, "incoming", G_CALLBACK(on_incoming), NULL);
    g_socket_service_start(srv.service);
    GSource *t = g_timeout_source_new(CTL_EVENT_POLL_MS);
    g_source_set_callback(t, poll_events, NULL, NULL);
    g_source_attach(t, srv.ctx);
    g_source_unref(t);
    return 0;
}

static void shut_down_here(GMainContext *ctx)
{
    g_socket_service_stop(srv.service);
    g_socket_listener_close(G_SOCKET_LISTENER(srv.service));
    g_clear_object(&srv.service);
    unlink(srv.path);
    while (srv.conns)
        conn_kill(srv.conns->data);
    /* Let the cancelled reads finish, which frees their connections. */
    while (srv.conns_allocated)
        g_main_context_iteration(ctx, TRUE);
    ctl_events_reset();
}

/* data: the context, which ctl_server_stop takes out of srv first. */
static gpointer server_thread(gpointer data)
{
    GMainContext *ctx = data;
    GMainLoop *loop = srv.loop;    /* set before this thread started */
    g_main_context_push_thread_default(ctx);
    int ret = listen_here();
    g_mutex_lock(&srv.lock);
    srv.start_ret = ret;
    srv.started = true;
    g_cond_broadcast(&srv.started_cond);
    g_mutex_unlock(&srv.lock);
    if (ret == 0) {
        g_main_loop_run(loop);
        shut_down_here(ctx);
    }
    g_main_context_pop_thread_default(ctx);
    return NULL;
}

int ctl_server_start(const char *path, char *err, size_t errlen)
{
    g_mutex_lock(&srv.lock);
    if (srv.thread) {
        g_mutex_unlock(&srv.lock);
        snprintf(err, errlen, "the management socket is already served");
        return -EBUSY;
    }
    /* Jobs tell the socket what happens to them from now on. */
    ctl_jobs_init();
    srv.path = g_strdup(path);
    srv.ctx = g_main_context_new();
    srv.loop = g_main_loop_new(srv.ctx, FALSE);
    srv.started = false;
    srv.start_err[0] = '\0';
    srv.thread = g_thread_new("qlun-ctl", server_thread, srv.ctx);
    while (!srv.started)
        g_cond_wait(&srv.started_cond, &srv.lock);
    int ret = srv.start_ret;
    GThread *failed = ret < 0 ? srv.thread : NULL;
    if (ret < 0) {
        snprintf(err, errlen, "%s", srv.start_err);
        srv.thread = NULL;
    }
    g_mutex_unlock(&srv.lock);
    if (failed) {
        g_thread_join(failed);
        g_main_loop_unref(srv.loop);
        g_main_context_unref(srv.ctx);
        srv.loop = NULL;
        srv.ctx = NULL;
        g_clear_pointer(&srv.path, g_free);
    }
    return ret;
}

static gboolean quit_loop(gpointer loop)
{
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

void ctl_server_stop(void)
{
    g_mutex_lock(&srv.lock);
    GThread *t = srv.thread;
    GMainContext *ctx = srv.ctx;
    GMainLoop *loop = srv.loop;
    srv.thread = NULL;
    srv.ctx = NULL;    /* broadcasts from now on are dropped */
    srv.loop = NULL;
    g_mutex_unlock(&srv.lock);
    if (!t)
        return;
    /* Quit from inside the loop: a quit before g_main_loop_run began
     * would be forgotten by it. */
    GSource *quit = g_idle_source_new();
    g_source_set_callback(quit, quit_loop, loop, NULL);
    g_source_attach(quit, ctx);
    g_source_unref(quit);
    g_thread_join(t);
    /* broadcasts queued after the loop stopped */
    while (g_main_context_iteration(ctx, FALSE))
        ;
    g_main_loop_unref(loop);
    g_main_context_unref(ctx);
    g_clear_pointer(&srv.path, g_free);
}

static gboolean broadcast_here(gpointer data)
{
    const char *line = data;
    for (GList *l = srv.conns, *next; l; l = next) {
        next = l->next;          /* conn_send may drop l */
        conn_send(l->data, line);
    }
    return G_SOURCE_REMOVE;
}

void ctl_server_broadcast(char *line)
{
    g_mutex_lock(&srv.lock);
    if (srv.ctx)
        g_main_context_invoke_full(srv.ctx, G_PRIORITY_DEFAULT,
                                   broadcast_here, line, g_free);
    else
        g_free(line);
    g_mutex_unlock(&srv.lock);
}
