/* qlun — what a LUN is now, for management (handler/ctl*.c): its
 * geometry and whether its soft threshold was reached.  Read without the
 * LUN's locks; every field read is either fixed at creation or atomic. */
#include <stdatomic.h>

#include "scsi-internal.h"

void scsi_lun_get_info(struct scsi_lun *lun, struct scsi_lun_info *out)
{
    out->block_size = lun->block_size;
    out->num_blocks = lun->num_blocks;
    out->read_only = lun->read_only;
    out->soft_threshold = lun->soft_threshold;
    out->soft_threshold_reached = atomic_load(&lun->threshold_reported);
}
