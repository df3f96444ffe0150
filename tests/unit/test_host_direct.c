/* Unit tests: host I/O with O_DIRECT (cache=none): unaligned requests are
 * bounced, and concurrent sub-block writes into the same block lose
 * nothing (read-modify-write excludes other writers). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/host.h"
#include "common/util.h"

#include "check.h"

#define SIZE (1 << 20)

static struct host h;
static uint8_t model[SIZE];

static uint8_t pattern(unsigned thread, size_t i)
{
    return (uint8_t)(thread * 37 + i * 11 + 1);
}

/* Thread t writes 100-byte pieces at offsets 800*k + 100*t: eight threads
 * share every 4 KiB block. */
struct arg { unsigned t; int errors; };

static void *writer(void *p)
{
    struct arg *a = p;
    uint8_t buf[100];
    for (size_t k = 0; 800 * k + 800 <= 256 * 1024; k++) {
        size_t off = 800 * k + 100 * a->t;
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = pattern(a->t, off + i);
        if (host_pwrite(&h, buf, sizeof(buf), off) < 0)
            a->errors++;
    }
    return NULL;
}

int main(void)
{
    char path[] = "/var/tmp/qlun-test-direct-XXXXXX";
    char err[256];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_EQ(ftruncate(fd, SIZE), 0);
    close(fd);

    int ret = host_open(&h, path, HOST_DIRECT, err, sizeof(err));
    if (ret == -EINVAL) {
        printf("SKIP: no O_DIRECT here: %s\n", err);
        unlink(path);
        return 77;
    }
    CHECK_EQ(ret, 0);
    CHECK(h.direct);
    CHECK(is_power_of_2(h.logical_block_size) && h.logical_block_size >= 512);
    printf("O_DIRECT alignment: offset %u, memory %u\n", h.logical_block_size,
           h.mem_align);

    /* Unaligned offset, length and memory: through the bounce buffer. */
    uint8_t *buf = malloc(10000 + 1);
    for (int i = 0; i < 10000; i++)
        buf[i + 1] = (uint8_t)(i * 7);
    CHECK_EQ(host_pwrite(&h, buf + 1, 10000, 300001), 0);
    memcpy(model + 300001, buf + 1, 10000);
    memset(buf, 0, 10001);
    CHECK_EQ(host_pread(&h, buf + 1, 10000, 300001), 0);
    CHECK(memcmp(buf + 1, model + 300001, 10000) == 0);
    /* The bytes around the write are untouched. */
    CHECK_EQ(host_pread(&h, buf, 2, 300000), 0);
    CHECK(buf[0] == 0 && buf[1] == model[300001]);

    /* Aligned everything: the direct path. */
    void *al = NULL;
    CHECK_EQ(posix_memalign(&al, 4096, 8192), 0);
    memset(al, 0xab, 8192);
    CHECK_EQ(host_pwrite(&h, al, 8192, 512 * 1024), 0);
    memset(model + 512 * 1024, 0xab, 8192);

    /* Eight threads, sub-block writes sharing blocks. */
    pthread_t t[8];
    struct arg a[8];
    for (unsigned i = 0; i < 8; i++) {
        a[i] = (struct arg){ i, 0 };
        pthread_create(&t[i], NULL, writer, &a[i]);
    }
    int errors = 0;
    for (unsigned i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }
    CHECK_EQ(errors, 0);
    for (size_t k = 0; 800 * k + 800 <= 256 * 1024; k++)
        for (unsigned th = 0; th < 8; th++)
            for (size_t i = 0; i < 100; i++) {
                size_t off = 800 * k + 100 * th + i;
                model[off] = pattern(th, off);
            }

    /* Read the whole file back with buffered I/O: the model exactly. */
    uint8_t *back = malloc(SIZE);
    fd = open(path, O_RDONLY);
    CHECK_EQ(pread(fd, back, SIZE, 0), SIZE);
    close(fd);
    size_t bad = 0;
    for (size_t i = 0; i < SIZE; i++)
        bad += back[i] != model[i];
    CHECK_EQ(bad, 0);

    /* A write ending mid-block past the end of file leaves the file as
     * long as the write, not rounded up to the block. */
    CHECK_EQ(host_pwrite(&h, buf, 100, SIZE + 50), 0);
    CHECK_EQ(host_size(&h), SIZE + 150);

    host_close(&h);
    unlink(path);
    free(buf);
    free(back);
    free(al);
    return check_summary("test_host_direct");
}
