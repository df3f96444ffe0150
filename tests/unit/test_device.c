/* Unit tests: opening a LUN from a cfgstring (handler/device.c), with no
 * tcmu-runner: the checks a bad configuration must fail with. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/copy_on_read.h"
#include "block/driver.h"
#include "handler/device.h"

#include "check.h"

static char dir[] = "/tmp/qlun-test-dev-XXXXXX";
static char err[1024];

static int open_dev(const char *cfg, uint32_t bs, uint64_t blocks,
                    struct qlun_dev **d)
{
    struct qlun_dev_params p = {
        .cfgstring = cfg, .block_size = bs, .num_blocks = blocks,
        .max_xfer_blocks = 1024,
    };
    err[0] = '\0';
    return qlun_dev_open(&p, d, err, sizeof(err));
}

/* d->persist in tests: what was stored last. */
static char persisted[QLUN_CFGSTRING_MAX + 1];
static int persist_cfg(void *opaque, const char *attr, const char *value,
                       char *e, size_t elen)
{
    (void)opaque, (void)e, (void)elen;
    if (strcmp(attr, "dev_config") == 0)
        snprintf(persisted, sizeof(persisted), "%s", value);
    return 0;
}

/* copy_on_read=: the filter at open, live off and on again (the
 * cfgstring persisted each time), refused on a read-only LUN. */
static void test_copy_on_read(const char *img)
{
    char cfg[1024];
    struct qlun_dev *d = NULL;
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off;readonly=on;"
             "copy_on_read=on", img);
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), -EINVAL);
    CHECK(strstr(err, "copy_on_read=on needs a writable LUN") != NULL);
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off;readonly=on",
             img);
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
    if (d) {
        CHECK_EQ(qlun_dev_set_copy_on_read(d, true, err, sizeof(err)),
                 -EROFS);
        CHECK(qlun_dev_served(d) == d->img);
        qlun_dev_close(d);
    }
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;copy_on_read=on;"
             "stats=off", img);
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
    if (!d)
        return;
    d->persist = persist_cfg;
    CHECK(qlun_dev_served(d)->drv == &copy_on_read_driver);
    CHECK(qlun_dev_served(d)->file == d->img);
    CHECK_EQ(qlun_dev_set_copy_on_read(d, false, err, sizeof(err)), 0);
    CHECK(qlun_dev_served(d) == d->img);
    CHECK(strstr(persisted, ";stats=off;copy_on_read=off") != NULL);
    CHECK(strcmp(persisted, d->cfgstring) == 0);
    CHECK_EQ(qlun_dev_set_copy_on_read(d, true, err, sizeof(err)), 0);
    CHECK(qlun_dev_served(d)->drv == &copy_on_read_driver);
    CHECK(strstr(persisted, ";stats=off;copy_on_read=on") != NULL);
    /* Asked twice: nothing changes, no second filter. */
    CHECK_EQ(qlun_dev_set_copy_on_read(d, true, err, sizeof(err)), 0);
    CHECK(qlun_dev_served(d)->file == d->img);
    CHECK_EQ(qlun_dev_close(d), 0);
}

static void make_file(const char *path, off_t size)
{
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size) < 0)
        abort();
    close(fd);
}

int main(void)
{
    char img[256], cfg[1024], stats[256];
    struct qlun_dev *d;

    if (!mkdtemp(dir))
        return 1;
    snprintf(img, sizeof(img), "%s/a.img", dir);
    snprintf(stats, sizeof(stats), "%s/stats/a.json", dir);
    make_file(img, 8 << 20);

    /* A good raw LUN: the serial is a digest of the image path, the same
     * at every open; statistics published where asked. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=%s", img, stats);
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
    char first_serial[64] = "";
    if (d) {
        CHECK_EQ(strlen(d->serial), 16);
        snprintf(first_serial, sizeof(first_serial), "%s", d->serial);
        CHECK(d->warning[0] == '\0');
        CHECK_EQ(qlun_dev_close(d), 0);
    }
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
    if (d) {
        CHECK(strcmp(d->serial, first_serial) == 0);
        CHECK_EQ(qlun_dev_close(d), 0);
    }
    FILE *f = fopen(stats, "r");
    CHECK(f != NULL);
    if (f) {
        char line[4096] = "";
        CHECK(fgets(line, sizeof(line), f) != NULL);
        char want[96];
        snprintf(want, sizeof(want), "\"serial\":\"%s\"", first_serial);
        CHECK(strstr(line, want) != NULL);
        fclose(f);
    }

    /* serial= sets it; the LUN may be smaller than the image. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;serial=disk7;stats=off",
             img);
    CHECK_EQ(open_dev(cfg, 4096, 1000, &d), 0);
    if (d) {
        CHECK(strcmp(d->serial, "disk7") == 0);
        CHECK(d->stats == NULL);
        qlun_dev_close(d);
    }

    /* An image smaller than the LUN. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off", img);
    CHECK(open_dev(cfg, 512, 16385, &d) < 0);
    CHECK(strstr(err, "8388608 bytes, smaller than the LUN size 8389120"));
    /* A missing file, a directory, a bad option, a bad block size. */
    snprintf(cfg, sizeof(cfg), "qlun/%s/none.img;format=raw", dir);
    CHECK_EQ(open_dev(cfg, 512, 8, &d), -ENOENT);
    CHECK(strstr(err, "none.img") && strstr(err, "No such file"));
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw", dir);
    CHECK(open_dev(cfg, 512, 8, &d) < 0);
    CHECK(strstr(err, "neither a regular file nor a block device"));
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;speed=fast", img);
    CHECK_EQ(open_dev(cfg, 512, 8, &d), -EINVAL);
    CHECK(strstr(err, "unknown option 'speed'"));
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw", img);
    CHECK_EQ(open_dev(cfg, 1024, 8, &d), -EINVAL);
    CHECK(strstr(err, "hw_block_size 1024"));

    /* readonly=on opens the image read-only. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;readonly=on;stats=off", img);
    CHECK_EQ(open_dev(cfg, 512, 8, &d), 0);
    if (d) {
        CHECK(d->img->info.read_only);
        qlun_dev_close(d);
    }

    /* Raw is never guessed: a raw file opened as qcow2 (the default). */
    snprintf(cfg, sizeof(cfg), "qlun/%s", img);
    CHECK(open_dev(cfg, 512, 8, &d) < 0);
    CHECK(strstr(err, "format=raw") != NULL);

    /* cache=none: O_DIRECT on this filesystem works and the LUN opens. */
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;cache=none;stats=off", img);
    CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
    if (d)
        qlun_dev_close(d);

    /* Every cache mode opens; WCE in the caching mode page says whether
     * the LUN starts with its write cache on (writeback, none) or off
     * (writethrough, directsync: every write durable before GOOD). */
    static const struct { const char *mode; bool wce; } modes[] = {
        { "writeback", true }, { "none", true },
        { "writethrough", false }, { "directsync", false },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;cache=%s;stats=off",
                 img, modes[i].mode);
        CHECK_EQ(open_dev(cfg, 512, 16384, &d), 0);
        if (!d)
            continue;
        uint8_t cdb[6] = { 0x1a, 0x08, 0x08, 0, 64, 0 }, page[64];
        struct iovec iov = { page, sizeof(page) };
        struct scsi_cmd c = { .cdb = cdb, .cdb_len = 6, .iov = &iov,
                              .iovcnt = 1 };
        CHECK_EQ(scsi_lun_exec(d->lun, &c), SCSI_STATUS_GOOD);
        CHECK_EQ(page[4] == 0x08 && (page[6] & 0x04) != 0, modes[i].wce);
        /* And a write goes through in this mode. */
        uint8_t w10[10] = { 0x2a, 0x08, 0, 0, 0, 5, 0, 0, 1, 0 }, blk[512];
        memset(blk, (int)i + 1, sizeof(blk));
        struct iovec wv = { blk, sizeof(blk) };
        struct scsi_cmd wc = { .cdb = w10, .cdb_len = 10, .iov = &wv,
                               .iovcnt = 1 };
        CHECK_EQ(scsi_lun_exec(d->lun, &wc), SCSI_STATUS_GOOD);
        CHECK_EQ(qlun_dev_close(d), 0);
        uint8_t back[512];
        int fd = open(img, O_RDONLY);
        CHECK_EQ(pread(fd, back, 512, 5 * 512), 512);
        close(fd);
        CHECK(memcmp(back, blk, 512) == 0);
    }

    test_copy_on_read(img);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary("test_device");
}
