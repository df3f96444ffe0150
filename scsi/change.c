/* qlun — the one path of every command that changes the medium.
 *
 * WRITE, WRITE SAME, UNMAP, WRITE AND VERIFY, COMPARE AND WRITE and ORWRITE
 * differ in what they change; the bookkeeping around the change is the
 * same and lives here, so that it cannot drift between them:
 *   - the LUN's write lock: shared for ordinary changes, exclusive for the
 *     read-modify-write commands that must be atomic against every other
 *     write (COMPARE AND WRITE, ORWRITE);
 *   - durability: with FUA, or with the write cache disabled (WCE=0), the
 *     change is flushed before the command completes — once per command,
 *     however many image operations it took;
 *   - statistics: the bytes that reached the image, by kind;
 *   - the soft threshold, checked after every successful change.
 */
#include "scsi-internal.h"

void lun_change_begin(struct scsi_lun *lun, enum lun_change_lock how)
{
    if (how == LUN_CHANGE_ATOMIC)
        pthread_rwlock_wrlock(&lun->write_lock);
    else
        pthread_rwlock_rdlock(&lun->write_lock);
}

int lun_change_end(struct scsi_lun *lun, int ret, enum lun_change_kind kind,
                   uint64_t bytes, bool fua)
{
    /* Flushed before the lock is dropped, so that an atomic command that
     * follows never reads what this one has not yet made durable. */
    if (ret == 0 && (fua || !atomic_load(&lun->write_cache)))
        ret = image_flush(lun->img);
    pthread_rwlock_unlock(&lun->write_lock);
    switch (kind) {
    case LUN_CHANGE_WRITE:
        scsi_stat_add(lun, bytes_written, bytes);
        break;
    case LUN_CHANGE_ZERO:
        scsi_stat_add(lun, bytes_zeroed, bytes);
        break;
    case LUN_CHANGE_UNMAP:
        scsi_stat_add(lun, bytes_unmapped, bytes);
        break;
    }
    if (ret == 0)
        scsi_check_soft_threshold(lun);
    return ret;
}
