/* Test harness for scsi/: run one CDB with a flat buffer, then look at the
 * sense of the last command (per thread) in fixed or descriptor format. */
#ifndef QLUN_TESTS_SCSI_HARNESS_H
#define QLUN_TESTS_SCSI_HARNESS_H

#include <string.h>

#include "common/util.h"
#include "scsi/scsi.h"

#include "check.h"

static _Thread_local struct scsi_cmd last;

/* Run one CDB with a flat data buffer (NULL: none); returns the status. */
static inline int run(struct scsi_lun *lun, const uint8_t *cdb,
                      size_t cdb_len, void *buf, size_t len)
{
    struct iovec iov = { buf, len };
    memset(&last, 0, sizeof(last));
    last.cdb = cdb;
    last.cdb_len = cdb_len;
    last.iov = &iov;
    last.iovcnt = buf ? 1 : 0;
    return scsi_lun_exec(lun, &last);
}

static inline int sense_key(void)
{
    return (last.sense[0] & 0x7f) == 0x72 ? last.sense[1] & 0xf
                                          : last.sense[2] & 0xf;
}

static inline int sense_asc(void)
{
    return (last.sense[0] & 0x7f) == 0x72 ? get_be16(last.sense + 2)
                                          : get_be16(last.sense + 12);
}

#define CHECK_SENSE(st, key, asc)                                            \
    do {                                                                     \
        CHECK_EQ(st, SCSI_STATUS_CHECK_CONDITION);                           \
        CHECK_EQ(sense_key(), key);                                          \
        CHECK_EQ(sense_asc(), asc);                                          \
    } while (0)

#endif
