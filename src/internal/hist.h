/* The log-linear histogram's layout and bucket mapping, for parts that embed a histogram (the
 * metrics registry) and for tests. The design is described at the top of src/core/hist.c.
 * Never installed.
 */
#ifndef WEFT_INTERNAL_HIST_H
#define WEFT_INTERNAL_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <weft/core.h>

#define WEFT__HIST_SUB ((uint64_t)1 << WEFT_HIST_SUB_BITS)
/* Bucket groups: group 0 holds the values below 2 * SUB exactly (2 * SUB buckets of width 1),
 * then one group of SUB buckets per power of two 2^e for e = SUB_BITS + 1 .. 62. */
#define WEFT__HIST_BUCKETS ((size_t)(64 - WEFT_HIST_SUB_BITS) * WEFT__HIST_SUB)

/* All zero is a valid empty histogram (see weft__hist_init). Every field is accessed with relaxed
 * atomics only. max and min_inv are read by every record but written rarely (only by a new
 * extreme), so 64 bytes of padding keep them off the cache line of the write-hot count and sum:
 * recorders on several CPUs then share their line instead of bouncing it. */
struct weft_hist {
	_Atomic uint64_t max;     /* largest value recorded; 0 when empty */
	_Atomic uint64_t min_inv; /* ~(smallest value recorded); 0 when empty (~v is >= 2^63) */
	uint64_t pad_[8];         /* never touched */
	_Atomic uint64_t count;   /* values recorded (wraps modulo 2^64) */
	_Atomic uint64_t sum_lo; /* sum of the values, exact modulo 2^128: sum_hi * 2^64 + sum_lo */
	_Atomic uint64_t sum_hi;
	_Atomic uint64_t buckets[WEFT__HIST_BUCKETS];
};

/* Make `h` an empty histogram in storage the caller owns (e.g. embedded in a larger struct).
 * Zeroed storage (calloc) is already an empty histogram; such a histogram is never passed to
 * weft_hist_destroy: its owner frees the storage. */
void weft__hist_init(weft_hist *h);

/* The bucket of a value (>= 0). No loop, no floating point:
 *   shift = max(0, e - SUB_BITS) where e is the highest set bit of v,
 *   index = shift * SUB + (v >> shift). */
static inline size_t weft__hist_index(uint64_t v)
{
	unsigned shift = (unsigned)(63 - __builtin_clzll(v | WEFT__HIST_SUB)) - WEFT_HIST_SUB_BITS;
	return ((size_t)shift << WEFT_HIST_SUB_BITS) + (size_t)(v >> shift);
}

/* The smallest and largest value of bucket `i` (< WEFT__HIST_BUCKETS), both inclusive. */
int64_t weft__hist_bucket_lo(size_t i);
int64_t weft__hist_bucket_hi(size_t i);

/* The upper edge of the bucket of v: weft_hist_count_le(h, v) counts exactly the values
 * <= weft__hist_upper_edge(v). Every 2^k - 1 is an upper edge, so count_le(h, 2^k - 1) is exactly
 * the number of values < 2^k. -1 for v < 0. */
int64_t weft__hist_upper_edge(int64_t v);

/* Several count_le in one pass over the buckets: ret_counts[i] = weft_hist_count_le(h, edges[i]).
 * `edges` must be ascending. h NULL gives zeros. */
void weft__hist_count_le_many(const weft_hist *h, const int64_t *edges, size_t n,
                              uint64_t *ret_counts);

/* Several percentiles in one pass: ret_values[i] = weft_hist_percentile(h, ps[i]), all taken
 * against the same total. `ps` in any order. h NULL gives zeros. */
void weft__hist_percentiles(const weft_hist *h, const double *ps, size_t n, int64_t *ret_values);

#endif
