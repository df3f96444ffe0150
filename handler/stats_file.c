/* qlun — publishing statistics to a file. */
#include "stats_file.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct stats_file {
    struct scsi_lun *lun;
    char path[PATH_MAX];
    char tmp[PATH_MAX + 8];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

static void publish(struct stats_file *sf)
{
    char json[16384];
    int n = scsi_lun_stats_json(sf->lun, json, sizeof(json) - 1);
    if (n < 0 || (size_t)n >= sizeof(json) - 1)
        return;
    json[n++] = '\n';
    FILE *f = fopen(sf->tmp, "w");
    if (!f)
        return;
    bool ok = fwrite(json, 1, (size_t)n, f) == (size_t)n;
    ok &= fclose(f) == 0;
    if (ok)
        rename(sf->tmp, sf->path);
    else
        unlink(sf->tmp);
}

static void *stats_thread(void *arg)
{
    struct stats_file *sf = arg;
    pthread_mutex_lock(&sf->lock);
    while (!sf->stopping) {
        pthread_mutex_unlock(&sf->lock);
        publish(sf);
        pthread_mutex_lock(&sf->lock);
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 1;
        while (!sf->stopping &&
               pthread_cond_timedwait(&sf->stop_cond, &sf->lock, &deadline) == 0)
            ;
    }
    pthread_mutex_unlock(&sf->lock);
    publish(sf);
    return NULL;
}

/* mkdir -p for the file's directory. */
static int make_parent_dirs(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return 0;
}

int stats_file_start(struct scsi_lun *lun, const char *path,
                     struct stats_file **out)
{
    struct stats_file *sf = calloc(1, sizeof(*sf));
    if (!sf)
        return -ENOMEM;
    sf->lun = lun;
    snprintf(sf->path, sizeof(sf->path), "%s", path);
    snprintf(sf->tmp, sizeof(sf->tmp), "%s.tmp", path);
    int ret = make_parent_dirs(sf->path);
    if (ret < 0) {
        free(sf);
        return ret;
    }
    pthread_mutex_init(&sf->lock, NULL);
    pthread_cond_init(&sf->stop_cond, NULL);
    ret = pthread_create(&sf->thread, NULL, stats_thread, sf);
    if (ret) {
        pthread_cond_destroy(&sf->stop_cond);
        pthread_mutex_destroy(&sf->lock);
        free(sf);
        return -ret;
    }
    *out = sf;
    return 0;
}

void stats_file_stop(struct stats_file *sf)
{
    if (!sf)
        return;
    pthread_mutex_lock(&sf->lock);
    sf->stopping = true;
    pthread_cond_signal(&sf->stop_cond);
    pthread_mutex_unlock(&sf->lock);
    pthread_join(sf->thread, NULL);
    pthread_cond_destroy(&sf->stop_cond);
    pthread_mutex_destroy(&sf->lock);
    free(sf);
}
