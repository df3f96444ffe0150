/* A management socket over real LUNs, for tests of qlunctl
 * (tests/unit/test-qlunctl.sh): no tcmu-runner needed.
 *
 *   ctl_serve SOCKET NAME CFGSTRING BLOCKS [NAME CFGSTRING BLOCKS]...
 *
 * Opens each LUN (512-byte blocks), runs 3 WRITE (10) and 2 READ (10) of
 * one block on each (so statistics have something to show), serves
 * SOCKET, prints "ready", then reads commands from stdin until EOF:
 *   corrupt NAME    mark NAME's image corrupt (as a driver would)
 */
/* first: its MIN and MAX give way to GLib's */
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler/ctl.h"
#include "handler/device.h"
#include "handler/registry.h"

static void some_io(struct scsi_lun *lun)
{
    uint8_t buf[512];
    memset(buf, 0xab, sizeof(buf));
    for (int i = 0; i < 5; i++) {
        uint8_t cdb[10] = { i < 3 ? 0x2a : 0x28 };
        struct iovec iov = { buf, sizeof(buf) };
        struct scsi_cmd cmd = { .cdb = cdb, .cdb_len = 10, .iov = &iov,
                                .iovcnt = 1 };
        put_be32(cdb + 2, (uint32_t)i);
        put_be16(cdb + 7, 1);
        if (scsi_lun_exec(lun, &cmd) != SCSI_STATUS_GOOD) {
            fprintf(stderr, "ctl_serve: I/O failed\n");
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    char err[1024];
    size_t n = (size_t)(argc - 2) / 3;
    struct qlun_dev *devs[16];

    if (argc < 5 || (argc - 2) % 3 || n > 16) {
        fprintf(stderr, "usage: ctl_serve SOCKET NAME CFGSTRING BLOCKS...\n");
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        struct qlun_dev_params p = {
            .cfgstring = argv[3 + 3 * i], .block_size = 512,
            .num_blocks = strtoull(argv[4 + 3 * i], NULL, 0),
            .max_xfer_blocks = 1024, .name = argv[2 + 3 * i],
        };
        if (qlun_dev_open(&p, &devs[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "ctl_serve: %s\n", err);
            return 1;
        }
        some_io(devs[i]->lun);
    }
    if (ctl_server_start(argv[1], err, sizeof(err)) < 0) {
        fprintf(stderr, "ctl_serve: %s\n", err);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof(line), stdin)) {
        char name[200];
        if (sscanf(line, "corrupt %199s", name) == 1) {
            struct qlun_dev *d = lun_registry_get(name);
            if (d) {
                image_set_state(d->img, IMAGE_STATE_CORRUPT);
                lun_registry_put(d);
            }
        }
    }
    ctl_server_stop();
    for (size_t i = 0; i < n; i++)
        qlun_dev_close(devs[i]);
    return 0;
}
