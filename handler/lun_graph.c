/* qlun — the LUN's graph: the format top and the filters above it.
 *
 * What a LUN serves is its top image (d->img: the node snapshots, resize
 * and jobs work on) under at most one filter per slot, in a fixed order
 * from the initiator down: throttle, copy-on-read, a block job's.  The
 * order is fixed so that each sees what it must: throttling counts the
 * initiator's requests only, copy-on-read's copies pass through a job's
 * filter (a mirror must see them as writes), and a job's filter sits
 * right on the top it works on.  Keeping the filters here rather than in
 * d->img lets the top change (a snapshot, a pivot) under them.
 *
 * Every function here changes edges that commands follow: call them only
 * under the LUN's drain.
 */
#include <assert.h>

#include "device.h"

struct image *qlun_dev_served(const struct qlun_dev *d)
{
    for (int s = 0; s < QLUN_FILTER_SLOTS; s++)
        if (d->filters[s])
            return d->filters[s];
    return d->img;
}

/* The node below slot s: the next filter down, else the top. */
static struct image *below(const struct qlun_dev *d, int s)
{
    for (int t = s + 1; t < QLUN_FILTER_SLOTS; t++)
        if (d->filters[t])
            return d->filters[t];
    return d->img;
}

/* Chain the filters onto each other and the top and give them the top's
 * size (a filter has its child's). */
static void chain_filters(struct qlun_dev *d)
{
    for (int s = 0; s < QLUN_FILTER_SLOTS; s++) {
        struct image *f = d->filters[s];
        if (!f)
            continue;
        f->file = below(d, s);
        f->size = d->img->size;
    }
}

/* ... and point the LUN at the outermost node. */
static void relink(struct qlun_dev *d)
{
    chain_filters(d);
    if (d->lun)
        scsi_lun_set_image(d->lun, qlun_dev_served(d));
}

int qlun_dev_filter_insert(struct qlun_dev *d, enum qlun_filter_slot slot,
                           const struct block_driver *drv,
                           struct image **node, char *err, size_t errlen)
{
    assert(slot < QLUN_FILTER_SLOTS && !d->filters[slot]);
    struct image *edge = below(d, slot);
    int ret = image_insert_filter(&edge, drv, err, errlen);
    if (ret < 0)
        return ret;
    d->filters[slot] = edge;
    relink(d);
    if (node)
        *node = edge;
    return 0;
}

void qlun_dev_filter_remove(struct qlun_dev *d, enum qlun_filter_slot slot)
{
    assert(slot < QLUN_FILTER_SLOTS && d->filters[slot]);
    struct image *f = d->filters[slot];
    d->filters[slot] = NULL;
    relink(d);
    image_remove_filter(&f);
}

struct image *qlun_dev_switch_top(struct qlun_dev *d, struct image *top)
{
    struct image *old = d->img;
    d->img = top;
    relink(d);
    return old;
}

void qlun_dev_top_resized(struct qlun_dev *d)
{
    chain_filters(d); /* the LUN serves the same node */
}
