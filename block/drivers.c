/* qlun — the table of block drivers that image_open() and backing files
 * may name.  Adding a format: its file, and one line here.  Filters are
 * not listed: an image cannot name one as its backing format. */
#include "driver.h"

#include <stdio.h>
#include <string.h>

#include "../common/util.h"

static const struct block_driver *const drivers[] = {
    &raw_driver,
    &qcow2_driver,
};

const struct block_driver *block_driver_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

const struct block_driver *block_driver_probe(const uint8_t *buf, size_t len,
                                              const char *filename)
{
    const struct block_driver *best = NULL;
    int best_score = 0;
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++) {
        if (!drivers[i]->probe)
            continue;
        int score = drivers[i]->probe(buf, len, filename);
        if (score > best_score) {
            best_score = score;
            best = drivers[i];
        }
    }
    return best;
}

/* qcow2: the format that keeps a LUN thin. */
const char *block_default_format(void)
{
    return qcow2_driver.name;
}

const char *block_driver_names(char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen)
        out[0] = 0;
    for (size_t i = 0; i < ARRAY_SIZE(drivers) && used < outlen; i++) {
        int n = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "",
                         drivers[i]->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return out;
}
