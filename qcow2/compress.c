/* qlun — qcow2: reading compressed clusters.
 *
 * QEMU writes compressed clusters as raw deflate streams (zlib without a
 * header, 4 KiB window: inflateInit2(-12)) or as zstd frames, followed by
 * whatever fills the last 512-byte sector.  Decompression therefore stops
 * once it has produced exactly one cluster, whatever input is left; a
 * stream that ends early or errors is corruption.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "qcow2-internal.h"

static int inflate_cluster(const uint8_t *in, size_t inlen, uint8_t *out,
                           size_t outlen)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)inlen;
    z.next_out = out;
    z.avail_out = (uInt)outlen;
    int r = inflate(&z, Z_FINISH);
    /* Z_BUF_ERROR with a full output buffer: the stream goes on past one
     * cluster, which QEMU tolerates; so do we. */
    int ret = (r == Z_STREAM_END || (r == Z_BUF_ERROR && z.avail_out == 0)) &&
              z.avail_out == 0 ? 0 : -EUCLEAN;
    inflateEnd(&z);
    return ret;
}

static int zstd_cluster(const uint8_t *in, size_t inlen, uint8_t *out,
                        size_t outlen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer ib = { in, inlen, 0 };
    ZSTD_outBuffer ob = { out, outlen, 0 };
    int ret = -EUCLEAN;
    while (ob.pos < ob.size) {
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r))
            break;
        if (ob.pos == ob.size) {
            ret = 0;
            break;
        }
        /* Frame finished short of a cluster, or input exhausted. */
        if (r == 0 || ib.pos == ib.size)
            break;
    }
    ZSTD_freeDCtx(d);
    return ret;
}

int qcow2_decompress_cluster(struct qcow2 *q, uint64_t entry, uint8_t *out)
{
    uint64_t coff = entry & q->coffset_mask;
    uint64_t off, len;
    qcow2_compressed_range(q, entry, &off, &len);
    /* The data starts at coff, inside the first sector of the range. */
    size_t inlen = (size_t)(off + len - coff);
    uint8_t *in = malloc(inlen);
    if (!in)
        return -ENOMEM;
    int ret = file_pread(q->img.file, in, inlen, coff);
    if (ret == 0) {
        if (q->compression_type == 0)
            ret = inflate_cluster(in, inlen, out, q->cluster_size);
        else
            ret = zstd_cluster(in, inlen, out, q->cluster_size);
    }
    free(in);
    return ret;
}
