/* qlun — what a LUN is now, for management (handler/ctl*.c): its
 * geometry and whether its soft threshold was reached.  Fields fixed at
 * creation or atomic are read as they are; the capacity, which a resize
 * changes under the drain, through scsi_lun_num_blocks. */
#include <stdatomic.h>

#include "scsi-internal.h"

void scsi_lun_get_info(struct scsi_lun *lun, struct scsi_lun_info *out)
{
    out->block_size = lun->block_size;
    out->num_blocks = scsi_lun_num_blocks(lun);
    out->read_only = lun->read_only;
    out->soft_threshold = lun->soft_threshold;
    out->soft_threshold_reached = atomic_load(&lun->threshold_reported);
}
