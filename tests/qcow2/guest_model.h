/* qlun — a model of what a guest may read back after a crash or an I/O
 * error, for the crash-simulation and fault-injection tests.
 *
 * It keeps the guest content at the last completed flush and, for every
 * sector written since, the versions that sector has had.  A sector not
 * written since the flush must read back exactly; a written one is "don't
 * care" as a whole, but each of its bytes must be a value that byte had at
 * some point since the flush.  Bytewise rather than sectorwise because a
 * subset of overlapping partial-sector writes can mix two versions of a
 * sector; anything else (stale data of another cluster, zeros instead of
 * backing data, a half-copied COW) is garbage and is reported.
 *
 * Sectors can be made "sticky": a write that failed leaves them unknown
 * (old or new) even after a later successful flush.
 */
#ifndef QLUN_TESTS_QCOW2_GUEST_MODEL_H
#define QLUN_TESTS_QCOW2_GUEST_MODEL_H

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR 512u

/* Not every test uses every helper. */
#define GM_FN static __attribute__((unused))

struct model {
    uint64_t size;
    uint8_t *flushed;   /* content at the last completed guest flush */
    uint8_t *cur;       /* content now */
    /* Sectors written since that flush, each with the list of versions it
     * had since (versions[] index chain through vnext[]). */
    uint8_t *touched;   /* 1 written since the flush, 2 sticky */
    uint32_t *touched_list;
    size_t ntouched;
    int32_t *head;      /* per sector: newest version, -1 none */
    uint8_t *versions;  /* SECTOR bytes each */
    int32_t *vnext;
    size_t nversions, vcap;
    uint64_t gen;       /* changes at every completed flush */
    bool any_sticky;
};

GM_FN void model_init(struct model *m, const uint8_t *content, uint64_t size)
{
    memset(m, 0, sizeof(*m));
    m->size = size;
    m->flushed = malloc(size);
    m->cur = malloc(size);
    m->touched = calloc(size / SECTOR, 1);
    m->touched_list = malloc(size / SECTOR * sizeof(uint32_t));
    m->head = malloc(size / SECTOR * sizeof(int32_t));
    assert(m->flushed && m->cur && m->touched && m->touched_list && m->head);
    memcpy(m->flushed, content, size);
    memcpy(m->cur, content, size);
    for (uint64_t s = 0; s < size / SECTOR; s++)
        m->head[s] = -1;
}

/* Start again from content (same size), reusing the memory: the fault
 * test does this hundreds of times. */
GM_FN void model_reset(struct model *m, const uint8_t *content)
{
    for (size_t i = 0; i < m->ntouched; i++) {
        m->touched[m->touched_list[i]] = 0;
        m->head[m->touched_list[i]] = -1;
    }
    m->ntouched = 0;
    m->nversions = 0;
    m->any_sticky = false;
    m->gen++;
    memcpy(m->flushed, content, m->size);
    memcpy(m->cur, content, m->size);
}

GM_FN void model_free(struct model *m)
{
    free(m->flushed);
    free(m->cur);
    free(m->touched);
    free(m->touched_list);
    free(m->head);
    free(m->versions);
    free(m->vnext);
}

GM_FN void model_write(struct model *m, uint64_t off, uint64_t len,
                        const uint8_t *data)
{
    if (data)
        memcpy(m->cur + off, data, len);
    else
        memset(m->cur + off, 0, len);
    for (uint64_t s = off / SECTOR; s <= (off + len - 1) / SECTOR; s++) {
        if (!m->touched[s]) {
            m->touched[s] = 1;
            m->touched_list[m->ntouched++] = (uint32_t)s;
        }
        if (m->nversions == m->vcap) {
            m->vcap = m->vcap ? m->vcap * 2 : 256;
            m->versions = realloc(m->versions, m->vcap * SECTOR);
            m->vnext = realloc(m->vnext, m->vcap * sizeof(int32_t));
            assert(m->versions && m->vnext);
        }
        memcpy(m->versions + m->nversions * SECTOR, m->cur + s * SECTOR,
               SECTOR);
        m->vnext[m->nversions] = m->head[s];
        m->head[s] = (int32_t)m->nversions++;
    }
}

GM_FN void model_flush(struct model *m)
{
    size_t kept = 0;
    for (size_t i = 0; i < m->ntouched; i++) {
        uint32_t s = m->touched_list[i];
        if (m->touched[s] == 2) {
            /* Unknown since a failed write: stays so. */
            m->touched_list[kept++] = s;
            continue;
        }
        memcpy(m->flushed + (uint64_t)s * SECTOR, m->cur + (uint64_t)s * SECTOR,
               SECTOR);
        m->touched[s] = 0;
        m->head[s] = -1;
    }
    m->ntouched = kept;
    /* Sticky sectors' versions live on in the arena. */
    if (!m->any_sticky)
        m->nversions = 0;
    m->gen++;
}

/* [off, off+len) was the target of a command that failed: what it holds
 * now is old or new, bytewise, for good (see model_flush). */
GM_FN void model_stick(struct model *m, uint64_t off, uint64_t len)
{
    for (uint64_t s = off / SECTOR; len && s <= (off + len - 1) / SECTOR; s++) {
        if (!m->touched[s])
            m->touched_list[m->ntouched++] = (uint32_t)s;
        m->touched[s] = 2;
        m->any_sticky = true;
    }
}

/* Does got (the whole guest, read back from a crash image) agree with the
 * model?  On disagreement describes the first bad byte in why. */
GM_FN bool model_accepts(const struct model *m, const uint8_t *got,
                          char *why, size_t whylen)
{
    for (uint64_t s = 0; s < m->size / SECTOR; s++) {
        const uint8_t *g = got + s * SECTOR, *f = m->flushed + s * SECTOR;
        /* Mostly equal: skip equal 64 KiB stretches in one go. */
        if (s % 128 == 0 && m->size - s * SECTOR >= 65536 &&
            memcmp(g, f, 65536) == 0) {
            s += 127;
            continue;
        }
        if (memcmp(g, f, SECTOR) == 0)
            continue;
        for (unsigned i = 0; i < SECTOR; i++) {
            if (g[i] == f[i])
                continue;
            bool ok = false;
            for (int32_t v = m->head[s]; m->touched[s] && v >= 0 && !ok;
                 v = m->vnext[v])
                ok = m->versions[(size_t)v * SECTOR + i] == g[i];
            if (!ok) {
                snprintf(why, whylen, "guest byte %" PRIu64 " (sector %"
                         PRIu64 ", %s since the last flush) is 0x%02x; "
                         "flushed 0x%02x, now 0x%02x", s * SECTOR + i, s,
                         m->touched[s] ? "written" : "not written", g[i], f[i],
                         m->cur[s * SECTOR + i]);
                return false;
            }
        }
    }
    return true;
}

#endif
