/* Tests: images on host block devices (loop devices over sparse files).
 *
 * Needs root and loop devices; exits 77 (skipped) without them.  Checks:
 * raw and qcow2 on a device against a model in every cache mode; zero and
 * discard reaching the loop device's backing file as holes; a qcow2 that
 * runs out of device reported as DATA PROTECT 27/07 with earlier data
 * intact; and the open-time refusals (device in use, read-only device,
 * logical blocks larger than the LUN's). */
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/image.h"
#include "common/util.h"
#include "handler/device.h"
#include "scsi/scsi.h"

#include "../unit/check.h"

#define MiB (1024 * 1024)
#define DEV_SIZE (64 * MiB)

static char workdir[] = "/var/tmp/qlun-test-blockdev-XXXXXX";
static char devs[8][64];
static int ndevs;

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A loop device over a new sparse file; extra: losetup options. */
static const char *loop_new(const char *name, const char *extra)
{
    char file[512], cmd[1024];
    snprintf(file, sizeof(file), "%s/%s", workdir, name);
    int fd = open(file, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, DEV_SIZE) < 0)
        return NULL;
    close(fd);
    snprintf(cmd, sizeof(cmd), "losetup --find --show %s %s 2>/dev/null",
             extra, file);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    char *dev = devs[ndevs];
    if (!fgets(dev, sizeof(devs[0]), p)) {
        pclose(p);
        return NULL;
    }
    pclose(p);
    dev[strcspn(dev, "\n")] = '\0';
    return devs[ndevs++];
}

static void cleanup(void)
{
    for (int i = 0; i < ndevs; i++)
        run_cmd("losetup -d %s 2>/dev/null", devs[i]);
    run_cmd("rm -rf %s", workdir);
}

/* Bytes the file occupies on its filesystem.  (SEEK_DATA cannot tell a
 * zeroed-but-allocated range from a hole: ext4 reports unwritten extents
 * as holes.) */
static int64_t file_allocated(const char *file)
{
    struct stat st;
    return stat(file, &st) == 0 ? (int64_t)st.st_blocks * 512 : -1;
}

/* Is [off, off+len) of the file a hole? */
static bool file_range_is_hole(const char *file, off_t off, off_t len)
{
    int fd = open(file, O_RDONLY);
    off_t data = lseek(fd, off, SEEK_DATA);
    close(fd);
    return data < 0 || data >= off + len;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng % n;
}

/* Random writes, zeroes and reads in 512-byte units, checked against a
 * model, then the whole image read back. */
static void workload(struct image *img, const char *what)
{
    static uint8_t model[DEV_SIZE], buf[1 * MiB], back[1 * MiB];
    uint64_t size = MIN(img->size, (uint64_t)DEV_SIZE);
    int bad = 0;

    CHECK_EQ(image_read(img, model, size, 0), 0);
    for (int op = 0; op < 400; op++) {
        uint64_t off = rnd(size / 512) * 512;
        uint64_t len = (1 + rnd(256)) * 512;
        len = MIN(len, size - off);
        switch (rnd(4)) {
        case 0:
        case 1:
            for (uint64_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(op + i * 3);
            CHECK_EQ(image_write(img, buf, len, off, rnd(8) ? 0 : IMAGE_FUA), 0);
            memcpy(model + off, buf, len);
            break;
        case 2:
            CHECK_EQ(image_zero(img, off, len, rnd(2) ? IMAGE_MAY_UNMAP : 0), 0);
            memset(model + off, 0, len);
            break;
        case 3:
            CHECK_EQ(image_read(img, back, len, off), 0);
            bad += memcmp(back, model + off, len) != 0;
            break;
        }
    }
    CHECK_EQ(image_flush(img), 0);
    for (uint64_t off = 0; off < size; off += sizeof(back)) {
        uint64_t len = MIN((uint64_t)sizeof(back), size - off);
        CHECK_EQ(image_read(img, back, len, off), 0);
        bad += memcmp(back, model + off, len) != 0;
    }
    if (bad)
        fprintf(stderr, "%s: %d mismatches against the model\n", what, bad);
    CHECK_EQ(bad, 0);
}

static struct image *open_img(const char *path, const char *format, bool ro,
                              bool direct, char *err)
{
    struct image *img = NULL;
    struct image_open_opts o = { .path = path, .format = format,
                                 .read_only = ro, .direct_io = direct,
                                 .backing_root = "/" };
    if (image_open(&o, &img, err, 512) < 0)
        return NULL;
    return img;
}

static void test_raw_device(void)
{
    char err[512], backing[512];
    const char *dev = loop_new("raw.img", "");
    CHECK(dev != NULL);
    if (!dev)
        return;
    snprintf(backing, sizeof(backing), "%s/raw.img", workdir);

    for (int direct = 0; direct <= 1; direct++) {
        struct image *img = open_img(dev, "raw", false, direct, err);
        CHECK(img != NULL);
        if (!img) {
            fprintf(stderr, "open %s: %s\n", dev, err);
            continue;
        }
        CHECK_EQ(img->size, DEV_SIZE);
        CHECK_EQ(img->info.request_alignment, 512);
        /* A loop device zeroes by fallocate on its file: cheap. */
        CHECK(img->info.can_zero);
        /* ...but discarded device blocks are not promised to read zero. */
        CHECK(!img->info.discard_zeroes);
        workload(img, direct ? "raw on device, O_DIRECT" : "raw on device");

        /* Zero with unmap punches a hole in the loop's backing file; zero
         * keeping the mapping leaves the blocks allocated. */
        static uint8_t ones[MiB];
        memset(ones, 1, sizeof(ones));
        CHECK_EQ(image_write(img, ones, MiB, 8 * MiB, 0), 0);
        CHECK_EQ(image_write(img, ones, MiB, 10 * MiB, 0), 0);
        CHECK_EQ(image_flush(img), 0);
        CHECK(!file_range_is_hole(backing, 8 * MiB, MiB));
        int64_t used = file_allocated(backing);
        CHECK_EQ(image_zero(img, 8 * MiB, MiB, IMAGE_MAY_UNMAP), 0);
        CHECK_EQ(image_flush(img), 0);
        CHECK(file_range_is_hole(backing, 8 * MiB, MiB));
        CHECK_EQ(file_allocated(backing), used - MiB);
        CHECK_EQ(image_zero(img, 10 * MiB, MiB, 0), 0);
        CHECK_EQ(image_flush(img), 0);
        CHECK_EQ(file_allocated(backing), used - MiB);   /* kept */
        /* Discard reaches the file too. */
        CHECK_EQ(image_write(img, ones, MiB, 12 * MiB, 0), 0);
        CHECK_EQ(image_discard(img, 12 * MiB, MiB), 0);
        CHECK_EQ(image_flush(img), 0);
        CHECK(file_range_is_hole(backing, 12 * MiB, MiB));

        /* A second read-write opener is refused while we hold it. */
        struct image *two = open_img(dev, "raw", false, false, err);
        CHECK(two == NULL);
        CHECK(strstr(err, "in use") != NULL);
        image_close(two);
        CHECK_EQ(image_close(img), 0);
    }
}

/* Through the whole LUN open path: device size, 4K-sector devices,
 * read-only devices. */
static void test_device_refusals(void)
{
    char err[1024], cfg[512];
    struct qlun_dev *d;
    const char *dev4k = loop_new("4k.img", "--sector-size 4096");
    CHECK(dev4k != NULL);
    if (dev4k) {
        snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off", dev4k);
        struct qlun_dev_params p = { cfg, 512, DEV_SIZE / 512, 1024, NULL };
        CHECK(qlun_dev_open(&p, &d, err, sizeof(err)) < 0);
        CHECK(strstr(err, "4096-byte logical blocks") &&
              strstr(err, "hw_block_size=4096"));
        struct qlun_dev_params p4 = { cfg, 4096, DEV_SIZE / 4096, 256, NULL };
        CHECK_EQ(qlun_dev_open(&p4, &d, err, sizeof(err)), 0);
        if (d == NULL)
            fprintf(stderr, "4k open: %s\n", err);
        qlun_dev_close(d);
        /* Too small: a LUN one block bigger than the device. */
        struct qlun_dev_params big = { cfg, 4096, DEV_SIZE / 4096 + 1, 256, NULL };
        CHECK(qlun_dev_open(&big, &d, err, sizeof(err)) < 0);
        CHECK(strstr(err, "smaller than the LUN size") != NULL);
    }
    const char *devro = loop_new("ro.img", "--read-only");
    CHECK(devro != NULL);
    if (devro) {
        snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off", devro);
        struct qlun_dev_params p = { cfg, 512, DEV_SIZE / 512, 1024, NULL };
        CHECK(qlun_dev_open(&p, &d, err, sizeof(err)) < 0);
        CHECK(strstr(err, "read-write") && strstr(err, "readonly=on"));
        snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;readonly=on;stats=off",
                 devro);
        CHECK_EQ(qlun_dev_open(&p, &d, err, sizeof(err)), 0);
        qlun_dev_close(d);
    }
}

/* qcow2 made by qemu-img directly on a device; used until the device is
 * full: DATA PROTECT 27/07, earlier data intact, qemu-img check clean. */
static void test_qcow2_device(void)
{
    char err[512];
    const char *dev = loop_new("q.img", "");
    CHECK(dev != NULL);
    if (!dev)
        return;
    CHECK_EQ(run_cmd("qemu-img create -q -f qcow2 %s 256M", dev), 0);

    for (int direct = 0; direct <= 1; direct++) {
        struct image *img = open_img(dev, "qcow2", false, direct, err);
        CHECK(img != NULL);
        if (!img) {
            fprintf(stderr, "open qcow2 on %s: %s\n", dev, err);
            return;
        }
        workload(img, direct ? "qcow2 on device, O_DIRECT" : "qcow2 on device");
        CHECK_EQ(image_close(img), 0);
        CHECK_EQ(run_cmd("qemu-img check -q %s", dev), 0);
    }

    /* Fill through the SCSI layer until the device runs out. */
    struct image *img = open_img(dev, "qcow2", false, false, err);
    CHECK(img != NULL);
    if (!img)
        return;
    struct scsi_lun *lun;
    struct scsi_lun_config lc = { .img = img, .block_size = 512,
                                  .num_blocks = img->size / 512,
                                  .max_xfer_blocks = 2048, .serial = "bd",
                                  .write_cache = true };
    CHECK_EQ(scsi_lun_new(&lc, &lun), 0);
    static uint8_t data[MiB];
    uint8_t cdb[10] = { 0x2a };
    struct iovec iov = { data, MiB };
    int status = SCSI_STATUS_GOOD;
    uint32_t mib;
    struct scsi_cmd cmd;
    for (mib = 0; mib < 256 && status == SCSI_STATUS_GOOD; mib++) {
        memset(data, (int)(mib + 1), MiB);
        put_be32(cdb + 2, mib * 2048);
        put_be16(cdb + 7, 2048);
        memset(&cmd, 0, sizeof(cmd));
        cmd.cdb = cdb;
        cmd.cdb_len = 10;
        cmd.iov = &iov;
        cmd.iovcnt = 1;
        status = scsi_lun_exec(lun, &cmd);
    }
    CHECK_EQ(status, SCSI_STATUS_CHECK_CONDITION);
    CHECK_EQ(cmd.sense[2] & 0xf, 7);
    CHECK_EQ(get_be16(cmd.sense + 12), 0x2707);
    printf("qcow2 on a %d MiB device: full after %u MiB of data\n",
           DEV_SIZE / MiB, mib - 1);
    CHECK(mib > 40);
    /* Everything written before the failure reads back. */
    int bad = 0;
    for (uint32_t m = 0; m + 1 < mib; m++) {
        CHECK_EQ(image_read(img, data, MiB, (uint64_t)m * MiB), 0);
        for (size_t i = 0; i < MiB; i += 4096)
            bad += data[i] != (uint8_t)(m + 1);
    }
    CHECK_EQ(bad, 0);
    scsi_lun_free(lun);
    CHECK_EQ(image_close(img), 0);
    /* Leaked clusters from the failed write are allowed (exit 3), not
     * corruption (exit 2). */
    int rc = run_cmd("qemu-img check -q %s", dev);
    CHECK(rc == 0 || rc == 3);
}

/* A raw LUN on a device grows up to the device and never past it; once
 * the device itself grew (losetup -c after growing its file, as lvextend
 * would), the LUN can follow. */
static void test_resize_device(void)
{
    char err[1024], cfg[512], file[512];
    struct qlun_dev *d;
    const char *dev = loop_new("grow.img", "");
    CHECK(dev != NULL);
    if (!dev)
        return;
    snprintf(cfg, sizeof(cfg), "qlun/%s;format=raw;stats=off", dev);
    struct qlun_dev_params p = { cfg, 512, DEV_SIZE / 2 / 512, 1024, NULL };
    if (qlun_dev_open(&p, &d, err, sizeof(err)) < 0) {
        CHECK(!"open");
        fprintf(stderr, "open %s: %s\n", dev, err);
        return;
    }
    CHECK_EQ(qlun_dev_resize(d, DEV_SIZE, false, err, sizeof(err)), 0);
    CHECK_EQ(scsi_lun_num_blocks(d->lun), DEV_SIZE / 512);
    CHECK_EQ(qlun_dev_resize(d, DEV_SIZE + 512, false, err, sizeof(err)),
             -ENOSPC);
    CHECK(strstr(err, "67108864") && strstr(err, "67109376"));
    CHECK_EQ(scsi_lun_num_blocks(d->lun), DEV_SIZE / 512);
    CHECK_EQ(d->img->size, DEV_SIZE);

    snprintf(file, sizeof(file), "%s/grow.img", workdir);
    CHECK_EQ(truncate(file, DEV_SIZE * 3 / 2), 0);
    CHECK_EQ(run_cmd("losetup -c %s", dev), 0);
    CHECK_EQ(qlun_dev_resize(d, DEV_SIZE * 3 / 2, false, err, sizeof(err)),
             0);
    CHECK_EQ(scsi_lun_num_blocks(d->lun), DEV_SIZE * 3 / 2 / 512);
    CHECK_EQ(d->img->size, DEV_SIZE * 3 / 2);
    /* Written at the new end, read back there. */
    uint8_t b[512], r[512];
    memset(b, 0x5e, sizeof(b));
    CHECK_EQ(image_write(d->img, b, 512, DEV_SIZE * 3 / 2 - 512, 0), 0);
    CHECK_EQ(image_read(d->img, r, 512, DEV_SIZE * 3 / 2 - 512), 0);
    CHECK(memcmp(b, r, 512) == 0);
    qlun_dev_close(d);
}

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP: needs root for loop devices\n");
        return 77;
    }
    if (!mkdtemp(workdir))
        return 1;
    atexit(cleanup);
    if (!loop_new("probe.img", "")) {
        printf("SKIP: no loop devices (losetup failed)\n");
        return 77;
    }
    test_raw_device();
    test_device_refusals();
    test_qcow2_device();
    test_resize_device();
    return check_summary("test_blockdev");
}
