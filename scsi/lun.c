/* qlun — a LUN: configuration, dispatch of CDBs to command handlers, unit
 * attention and statistics. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/iov.h"
#include "common/util.h"
#include "scsi-internal.h"

/* CDB length from the opcode's group code (SPC-5 4.2.5.1). */
static size_t cdb_length(uint8_t opcode)
{
    switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
    }
}

/* FNV-1a: a stable 64-bit digest of the serial for the NAA designator. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

int scsi_lun_new(const struct scsi_lun_config *cfg, struct scsi_lun **out)
{
    assert(cfg && cfg->img && out);
    assert(cfg->block_size == 512 || cfg->block_size == 4096);
    assert(cfg->num_blocks > 0);
    assert(cfg->num_blocks <= cfg->img->size / cfg->block_size);
    assert(cfg->serial && strlen(cfg->serial) <= 64);

    struct scsi_lun *lun = calloc(1, sizeof(*lun));
    if (!lun)
        return -ENOMEM;
    const struct image_info *info = &cfg->img->info;
    lun->img = cfg->img;
    lun->block_size = cfg->block_size;
    lun->block_shift = (unsigned)__builtin_ctz(cfg->block_size);
    lun->num_blocks = cfg->num_blocks;
    lun->max_xfer_blocks = cfg->max_xfer_blocks ? cfg->max_xfer_blocks : 2048;
    lun->read_only = cfg->read_only || info->read_only;
    /* Thin when the image can make ranges read as zeros without writing
     * them: then WRITE SAME of zeros and UNMAP cost no data. */
    lun->thin = info->can_zero || info->can_discard;
    /* Unmapping works in the image's allocation unit: the qcow2 cluster,
     * or the 4 KiB filesystem block under a raw file. */
    uint32_t unit = MAX(info->cluster_size, 4096u);
    lun->unmap_granularity = MAX(unit >> lun->block_shift, 1u);
    atomic_init(&lun->write_cache, cfg->write_cache);
    strcpy(lun->serial, cfg->serial);
    /* NAA 3 = locally assigned: 60 bits that we choose, here from the
     * serial, so the identifier is stable for as long as the serial is. */
    lun->naa_id = 0x3ull << 60 | (fnv1a64(cfg->serial) & ((1ull << 60) - 1));
    lun->soft_threshold = cfg->soft_threshold;

    /* Writer preference, so that COMPARE AND WRITE is not starved by a
     * stream of ordinary writes. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int ret = pthread_rwlock_init(&lun->write_lock, &attr);
    /* Writer preference here too: a drain must not wait for a gap in a
     * busy LUN's stream of commands that never comes. */
    if (ret == 0) {
        ret = pthread_rwlock_init(&lun->drain_lock, &attr);
        if (ret)
            pthread_rwlock_destroy(&lun->write_lock);
    }
    pthread_rwlockattr_destroy(&attr);
    if (ret) {
        free(lun);
        return -ret;
    }
    *out = lun;
    return 0;
}

void scsi_lun_free(struct scsi_lun *lun)
{
    if (!lun)
        return;
    pthread_rwlock_destroy(&lun->drain_lock);
    pthread_rwlock_destroy(&lun->write_lock);
    free(lun);
}

void scsi_lun_drain_begin(struct scsi_lun *lun)
{
    pthread_rwlock_wrlock(&lun->drain_lock);
    lun->draining = true;
}

void scsi_lun_drain_end(struct scsi_lun *lun)
{
    assert(lun->draining);
    lun->draining = false;
    pthread_rwlock_unlock(&lun->drain_lock);
}

void scsi_lun_set_capacity(struct scsi_lun *lun, uint64_t new_num_blocks)
{
    assert(lun->draining);
    assert(new_num_blocks > 0);
    assert(new_num_blocks <= lun->img->size >> lun->block_shift);
    lun->num_blocks = new_num_blocks;
}

void scsi_lun_resize(struct scsi_lun *lun, uint64_t new_num_blocks)
{
    if (new_num_blocks == lun->num_blocks)
        return;
    scsi_lun_set_capacity(lun, new_num_blocks);
    scsi_lun_raise_ua(lun, LUN_UA_CAPACITY_CHANGED);
}

void scsi_lun_set_soft_threshold(struct scsi_lun *lun, uint64_t bytes)
{
    assert(lun->draining);
    lun->soft_threshold = bytes;
}

void scsi_lun_set_image(struct scsi_lun *lun, struct image *img)
{
    assert(lun->draining);
    assert(img && lun->num_blocks <= img->size >> lun->block_shift);
    lun->img = img;
}

uint64_t scsi_lun_num_blocks(struct scsi_lun *lun)
{
    pthread_rwlock_rdlock(&lun->drain_lock);
    uint64_t n = lun->num_blocks;
    pthread_rwlock_unlock(&lun->drain_lock);
    return n;
}

void scsi_lun_raise_ua(struct scsi_lun *lun, enum lun_ua ua)
{
    atomic_fetch_or(&lun->pending_ua, (unsigned)ua);
}

/* Take one pending unit attention (lowest bit first) and return its
 * ASC/ASCQ, or 0 if none is pending. */
static int take_unit_attention(struct scsi_lun *lun)
{
    unsigned set = atomic_load(&lun->pending_ua);
    while (set) {
        unsigned bit = set & -set;
        if (atomic_compare_exchange_weak(&lun->pending_ua, &set, set & ~bit))
            return bit == LUN_UA_CAPACITY_CHANGED ? ASC_CAPACITY_DATA_CHANGED
                                                  : ASC_SOFT_THRESHOLD_REACHED;
    }
    return 0;
}

int scsi_data_in(struct scsi_cmd *cmd, const void *buf, size_t len,
                 size_t alloc_len)
{
    size_t n = MIN(len, alloc_len);
    cmd->data_in_len = iov_from_buf(cmd->iov, cmd->iovcnt, 0, buf, n);
    /* The whole buffer goes back to the initiator (TCMU reports no
     * residual), and it is shared memory that held other commands' data:
     * zero what we did not fill, or we leak it. */
    size_t total = iov_size(cmd->iov, cmd->iovcnt);
    iov_memset(cmd->iov, cmd->iovcnt, cmd->data_in_len, 0,
               total - cmd->data_in_len);
    return SCSI_STATUS_GOOD;
}

void scsi_check_soft_threshold(struct scsi_lun *lun)
{
    if (!lun->soft_threshold || atomic_load(&lun->threshold_reported))
        return;
    /* Asking the host costs a system call: do it every 64 writes. */
    if (atomic_fetch_add(&lun->writes_since_check, 1) % 64 != 0)
        return;
    int64_t used = image_allocated_bytes(lun->img);
    if (used < 0 || (uint64_t)used < lun->soft_threshold)
        return;
    if (!atomic_exchange(&lun->threshold_reported, true))
        scsi_lun_raise_ua(lun, LUN_UA_SOFT_THRESHOLD);
}

/* Commands that report a pending unit attention rather than run
 * (SAM-5 5.14: INQUIRY, REPORT LUNS and REQUEST SENSE never do). */
static bool reports_unit_attention(uint8_t opcode)
{
    return opcode != 0x12 && opcode != 0xa0 && opcode != 0x03;
}

static int exec_command(struct scsi_lun *lun, struct scsi_cmd *cmd);

/* Every command holds the drain shared for its whole run (see
 * scsi_lun_drain_begin).  Uncontended, that is one atomic add and one
 * atomic sub on a cache line the LUN's commands already share. */
int scsi_lun_exec(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    assert(lun && cmd && cmd->cdb);
    /* Counted before the drain is taken, so that a command held off by a
     * drain counts too: a job that drained briefly must still see that
     * the initiator is waiting and give way afterwards. */
    atomic_fetch_add(&lun->in_flight, 1);
    pthread_rwlock_rdlock(&lun->drain_lock);
    int st = exec_command(lun, cmd);
    pthread_rwlock_unlock(&lun->drain_lock);
    atomic_fetch_sub(&lun->in_flight, 1);
    return st;
}

unsigned scsi_lun_in_flight(struct scsi_lun *lun)
{
    return atomic_load(&lun->in_flight);
}

static int exec_command(struct scsi_lun *lun, struct scsi_cmd *cmd)
{
    cmd->sense_len = 0;
    cmd->data_in_len = 0;
    if (cmd->cdb_len == 0)
        return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPCODE);

    uint8_t opcode = cmd->cdb[0];
    int st;
    if (reports_unit_attention(opcode) && atomic_load(&lun->pending_ua)) {
        int asc = take_unit_attention(lun);
        if (asc) {
            st = scsi_fail(cmd, SK_UNIT_ATTENTION, (enum sense_asc)asc);
            goto unrouted;
        }
    }

    size_t need = cdb_length(opcode);
    const struct scsi_opcode *op = NULL;
    if (need && scsi_opcode_known(opcode)) {
        if (cmd->cdb_len < need) {
            st = scsi_fail_cdb_field(cmd, 0, -1);
            goto unrouted;
        }
        uint16_t sa = scsi_opcode_has_sa(opcode) ? cmd->cdb[1] & 0x1f : 0;
        op = scsi_opcode_find(opcode, sa);
        if (!op) {
            /* A known opcode with a service action we lack. */
            st = scsi_fail_cdb_field(cmd, 1, 4);
            goto unrouted;
        }
    }
    if (!op) {
        st = scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPCODE);
        goto unrouted;
    }
    /* CONTROL byte: NACA asks for ACA, which we do not offer. */
    if (cmd->cdb[need - 1] & 0x04) {
        st = scsi_fail_cdb_field(cmd, (unsigned)need - 1, 2);
        goto unrouted;
    }
    /* One counter per command: a command that reaches its handler counts
     * by command only (its opcode's count is the sum, scsi_lun_get_stats),
     * one that does not by opcode only. */
    scsi_stat_add(lun, by_command[scsi_opcode_index(op)], 1);
    st = op->exec(lun, cmd);
    goto out;
unrouted:
    scsi_stat_add(lun, unrouted[opcode], 1);
out:
    if (st != SCSI_STATUS_GOOD)
        scsi_stat_add(lun, errors, 1);
    return st;
}

void scsi_lun_get_stats(struct scsi_lun *lun, struct scsi_lun_stats *out)
{
    for (int i = 0; i < 256; i++)
        out->commands[i] = atomic_load(&lun->stats.unrouted[i]);
    for (size_t i = 0; i < scsi_opcode_count(); i++)
        out->commands[scsi_opcode_at(i)->opcode] +=
            atomic_load(&lun->stats.by_command[i]);
    out->errors = atomic_load(&lun->stats.errors);
    out->bytes_read = atomic_load(&lun->stats.bytes_read);
    out->bytes_written = atomic_load(&lun->stats.bytes_written);
    out->bytes_zeroed = atomic_load(&lun->stats.bytes_zeroed);
    out->bytes_unmapped = atomic_load(&lun->stats.bytes_unmapped);
}

int scsi_lun_stats_json(struct scsi_lun *lun, char *buf, size_t size)
{
    struct scsi_lun_stats s;
    size_t n = 0;
    scsi_lun_get_stats(lun, &s);

/* Append with snprintf semantics: keep counting past a full buffer. */
#define APPEND(...)                                                       \
    n += (size_t)snprintf(buf + MIN(n, size), size - MIN(n, size), __VA_ARGS__)

    APPEND("{\"serial\":\"%s\",\"bytes_read\":%" PRIu64
           ",\"bytes_written\":%" PRIu64 ",\"bytes_zeroed\":%" PRIu64
           ",\"bytes_unmapped\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"commands\":{", lun->serial, s.bytes_read, s.bytes_written,
           s.bytes_zeroed, s.bytes_unmapped, s.errors);
    /* Implemented commands by name (service actions apart), then what
     * was left: opcodes we lack, or a service action we lack. */
    bool first = true;
    for (size_t i = 0; i < scsi_opcode_count(); i++) {
        const struct scsi_opcode *o = scsi_opcode_at(i);
        uint64_t count = atomic_load(&lun->stats.by_command[i]);
        if (!count)
            continue;
        APPEND("%s\"%s\":%" PRIu64, first ? "" : ",", o->name, count);
        first = false;
    }
    for (int op = 0; op < 256; op++) {
        uint64_t count = atomic_load(&lun->stats.unrouted[op]);
        if (!count)
            continue;
        APPEND("%s\"opcode 0x%02x%s\":%" PRIu64, first ? "" : ",", op,
               scsi_opcode_known((uint8_t)op) ? " (other service action)" : "",
               count);
        first = false;
    }
    APPEND("}}");
#undef APPEND
    return (int)n;
}
