/* qlun benches: a size on the command line ("4096", "64k", "512M", "4G"). */
#ifndef QLUN_BENCH_SIZE_H
#define QLUN_BENCH_SIZE_H

#include <stdint.h>
#include <stdlib.h>

static inline uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': case 'K': return v << 10;
    case 'm': case 'M': return v << 20;
    case 'g': case 'G': return v << 30;
    default: return v;
    }
}

#endif
