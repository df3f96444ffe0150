/* qlun — which driver does a job (block/job.h). */
#include <stdio.h>
#include <string.h>

#include "block/job.h"

/* One entry per type.  A commit is two drivers: committing an
 * intermediate layer needs no pivot and no tracking of the initiator's
 * writes (they land above it); committing the LUN's top (an "active
 * commit") is the mirror engine's, with the base as its target. */
static const struct {
    const char *type;
    const struct job_driver *drv;
    const struct job_driver *active; /* for the LUN's top, if different */
} table[] = {
    { NULL, NULL, NULL }, /* the drivers land here: stream, commit, mirror */
    /* active: active_commit_job_driver once block/mirror.c lands; until
     * then commit_job_driver refuses the LUN's top itself. */
    { "commit", &commit_job_driver, NULL },
};

/* Whether p names the LUN's top (or no top: commit's default). */
static bool names_the_top(const struct job_params *p,
                          const struct job_owner *owner)
{
    struct image *top = owner->top(owner->opaque);
    return !p->top || image_chain_find(top, p->top) == top;
}

const struct job_driver *job_driver_for(const struct job_params *p,
                                        const struct job_owner *owner)
{
    for (size_t i = 0; p->type && i < sizeof(table) / sizeof(table[0]); i++) {
        if (!table[i].type || strcmp(table[i].type, p->type) != 0)
            continue;
        if (table[i].active && names_the_top(p, owner))
            return table[i].active;
        return table[i].drv;
    }
    return NULL;
}

const char *job_driver_types(void)
{
    static char names[128];
    if (names[0])
        return names;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (!table[i].type)
            continue;
        size_t n = strlen(names);
        snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "",
                 table[i].type);
    }
    return names;
}
