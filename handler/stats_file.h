/* qlun — a LUN's statistics, published as a JSON file while it is served.
 *
 * A thread rewrites the file once a second (write to a temporary file,
 * then rename, so readers never see half a file) and once more at stop.
 */
#ifndef QLUN_HANDLER_STATS_FILE_H
#define QLUN_HANDLER_STATS_FILE_H

#include "scsi/scsi.h"

/* The directory used when the cfgstring names no stats= path. */
#define QLUN_STATS_DIR "/run/qlun"

struct stats_file;

/* Start publishing lun's statistics at path (its directory is created if
 * missing).  Returns 0 or a negative errno. */
int stats_file_start(struct scsi_lun *lun, const char *path,
                     struct stats_file **out);
/* Write a final snapshot and stop; NULL is a no-op. */
void stats_file_stop(struct stats_file *sf);

#endif
