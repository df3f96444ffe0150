/* qlun — the registry of served LUNs (see registry.h). */
#include "registry.h"

#include <glib.h>
#include <string.h>

#include "handler/device.h"

struct entry {
    struct qlun_dev *d;
    unsigned refs;
    bool removing;     /* lun_registry_remove() is waiting: not found */
};

/* A list, not a hash: a process serves tens of LUNs, and the order of
 * opening is what query-luns reports. */
static GMutex lock;
static GCond refs_dropped;
static GPtrArray *entries;   /* of struct entry *, under lock */

void lun_registry_add(struct qlun_dev *d)
{
    struct entry *e = g_new0(struct entry, 1);
    e->d = d;
    g_mutex_lock(&lock);
    if (!entries)
        entries = g_ptr_array_new();
    g_ptr_array_add(entries, e);
    g_mutex_unlock(&lock);
}

/* Under lock. */
static struct entry *find_dev(struct qlun_dev *d)
{
    for (guint i = 0; entries && i < entries->len; i++) {
        struct entry *e = g_ptr_array_index(entries, i);
        if (e->d == d)
            return e;
    }
    return NULL;
}

void lun_registry_remove(struct qlun_dev *d)
{
    g_mutex_lock(&lock);
    struct entry *e = find_dev(d);
    if (e) {
        e->removing = true;
        while (e->refs)
            g_cond_wait(&refs_dropped, &lock);
        g_ptr_array_remove(entries, e);
        g_free(e);
    }
    g_mutex_unlock(&lock);
}

/* Under lock: the live entry whose serial (if by_serial) or name is key. */
static struct entry *find_key(const char *key, bool by_serial)
{
    for (guint i = 0; entries && i < entries->len; i++) {
        struct entry *e = g_ptr_array_index(entries, i);
        const char *have = by_serial ? e->d->serial : e->d->name;
        if (!e->removing && have[0] && strcmp(have, key) == 0)
            return e;
    }
    return NULL;
}

struct qlun_dev *lun_registry_get(const char *key)
{
    g_mutex_lock(&lock);
    /* A serial names one LUN on the whole target; a backstore name only
     * inside its HBA: serials win. */
    struct entry *e = find_key(key, true);
    if (!e)
        e = find_key(key, false);
    if (e)
        e->refs++;
    g_mutex_unlock(&lock);
    return e ? e->d : NULL;
}

void lun_registry_put(struct qlun_dev *d)
{
    g_mutex_lock(&lock);
    struct entry *e = find_dev(d);
    g_assert(e && e->refs > 0);
    if (--e->refs == 0 && e->removing)
        g_cond_broadcast(&refs_dropped);
    g_mutex_unlock(&lock);
}

size_t lun_registry_get_all(struct qlun_dev ***out)
{
    g_mutex_lock(&lock);
    size_t n = 0, len = entries ? entries->len : 0;
    *out = g_new0(struct qlun_dev *, len + 1);
    for (guint i = 0; i < len; i++) {
        struct entry *e = g_ptr_array_index(entries, i);
        if (e->removing)
            continue;
        e->refs++;
        (*out)[n++] = e->d;
    }
    g_mutex_unlock(&lock);
    return n;
}
