/* qlun — a block job's copy rate over the last few seconds, for
 * query-jobs and `qlunctl job list` (the runner keeps only the total
 * copied).
 *
 * Each sample is (time, bytes done); the rate is the bytes done since the
 * oldest sample of the last JOB_RATE_WINDOW_NS over the time between.
 * Samples come from the job's events (progress: about once a second while
 * it copies) and from every query, so a job that is watched or that
 * reports has a current rate, and one that stopped copying falls to 0
 * within the window.  Thread-safe (events come from the jobs' threads).
 */
#ifndef QLUN_HANDLER_JOB_RATE_H
#define QLUN_HANDLER_JOB_RATE_H

#include <stdint.h>

#define JOB_RATE_WINDOW_NS (5ull * 1000000000u)

/* Record that job id had done bytes at now_ns (CLOCK_MONOTONIC) and
 * return its rate in bytes per second (0 until two samples are at least
 * JOB_RATE_MIN_SPAN_NS apart). */
#define JOB_RATE_MIN_SPAN_NS (200ull * 1000000u)
uint64_t job_rate_sample(const char *id, uint64_t done, uint64_t now_ns);
/* The job is gone (or concluded: it copies no more). */
void job_rate_forget(const char *id);
/* Now, as job_rate_sample wants it. */
uint64_t job_rate_now_ns(void);

#endif
