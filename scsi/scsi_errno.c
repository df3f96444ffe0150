/* qlun — the one table from image-layer errno to SCSI status and sense. */
#include <errno.h>

#include "scsi-internal.h"

int scsi_fail_errno(struct scsi_cmd *cmd, int err, uint64_t lba, bool is_write)
{
    switch (-err) {
    case ENOSPC:
    case EDQUOT:
        /* A thin LUN out of backing space (SBC-4 4.7.3.5). */
        return scsi_fail(cmd, SK_DATA_PROTECT,
                         ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT);
    case EROFS:
    case EPERM:
    case EACCES:
        return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
    case EIO:
    case EUCLEAN:
        /* EUCLEAN: this request met corrupt image metadata (the image is
         * write-protected from now on: later writes get -EROFS). */
        return scsi_fail_info(cmd, SK_MEDIUM_ERROR,
                              is_write ? ASC_WRITE_ERROR
                                       : ASC_UNRECOVERED_READ_ERROR,
                              lba);
    case ENOMEM:
        return SCSI_STATUS_TASK_SET_FULL;
    case EAGAIN:
    case EBUSY:
        return SCSI_STATUS_BUSY;
    default:
        return scsi_fail(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
    }
}
