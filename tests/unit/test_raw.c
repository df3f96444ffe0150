/* Unit tests: the raw driver and host I/O on a regular file. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/image.h"

#include "check.h"

#define MiB (1024 * 1024)

static struct image *open_raw(const char *path, bool ro, char *err)
{
    struct image *img = NULL;
    struct image_open_opts o = { .path = path, .format = "raw", .read_only = ro };
    if (image_open(&o, &img, err, 256) < 0)
        return NULL;
    return img;
}

int main(void)
{
    char path[] = "/tmp/qlun-test-raw-XXXXXX";
    char err[256];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_EQ(ftruncate(fd, 4 * MiB), 0);
    close(fd);

    struct image *img = open_raw(path, false, err);
    CHECK(img != NULL);
    if (!img)
        return check_summary("test_raw");
    CHECK_EQ(img->size, 4 * MiB);
    CHECK(strcmp(img->info.format, "raw") == 0);

    /* Write, read back across an iovec boundary. */
    static uint8_t buf[MiB], back[MiB];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    CHECK_EQ(image_write(img, buf, MiB, MiB, IMAGE_FUA), 0);
    struct iovec v[2] = { { back, 1000 }, { back + 1000, MiB - 1000 } };
    CHECK_EQ(image_readv(img, v, 2, MiB), 0);
    CHECK(memcmp(buf, back, MiB) == 0);

    /* A fresh sparse file: block status says unallocated, then data. */
    enum image_extent_kind kind;
    uint64_t len;
    CHECK_EQ(image_block_status(img, 0, MiB, &kind, &len), 0);
    CHECK(kind == IMAGE_EXTENT_UNALLOCATED && len == MiB);
    CHECK_EQ(image_block_status(img, MiB, MiB, &kind, &len), 0);
    CHECK(kind == IMAGE_EXTENT_DATA && len == MiB);

    /* Zero with unmap leaves a hole that reads as zeros; zero without
     * unmap reads as zeros too. */
    CHECK_EQ(image_zero(img, MiB, 64 * 1024, IMAGE_MAY_UNMAP), 0);
    CHECK_EQ(image_read(img, back, 64 * 1024, MiB), 0);
    for (int i = 0; i < 64 * 1024; i++)
        if (back[i]) { CHECK(!"zeroed range reads non-zero"); break; }
    CHECK_EQ(image_block_status(img, MiB, MiB, &kind, &len), 0);
    CHECK(kind == IMAGE_EXTENT_UNALLOCATED && len == 64 * 1024);
    CHECK_EQ(image_zero(img, MiB + 128 * 1024, 4096, 0), 0);
    CHECK_EQ(image_read(img, back, 4096, MiB + 128 * 1024), 0);
    CHECK(back[0] == 0 && back[4095] == 0);
    /* Bytes around the zeroed range are intact. */
    CHECK_EQ(image_read(img, back, 1, MiB + 128 * 1024 + 4096), 0);
    CHECK_EQ(back[0], buf[128 * 1024 + 4096]);

    /* Discard punches a hole. */
    CHECK_EQ(image_discard(img, MiB + 512 * 1024, 256 * 1024), 0);
    CHECK_EQ(image_block_status(img, MiB + 512 * 1024, 256 * 1024, &kind, &len), 0);
    CHECK(kind == IMAGE_EXTENT_UNALLOCATED);
    CHECK_EQ(image_flush(img), 0);
    CHECK_EQ(image_close(img), 0);

    /* Read-only: writes fail with EROFS. */
    img = open_raw(path, true, err);
    CHECK(img && img->info.read_only);
    if (img) {
        CHECK_EQ(image_write(img, buf, 512, 0, 0), -EROFS);
        CHECK_EQ(image_zero(img, 0, 512, 0), -EROFS);
        image_close(img);
    }

    /* Bad input: clear messages. */
    CHECK(open_raw("/nonexistent/x.img", false, err) == NULL);
    CHECK(strstr(err, "/nonexistent/x.img") && strstr(err, "No such file"));
    CHECK(open_raw("/tmp", false, err) == NULL);
    CHECK(strstr(err, "/tmp"));
    struct image *dummy;
    struct image_open_opts o = { .path = path, .format = "vmdk" };
    CHECK_EQ(image_open(&o, &dummy, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "vmdk"));

    unlink(path);
    return check_summary("test_raw");
}
