/* hist.c: log-linear histograms of non-negative int64 values (usually ns), lock-free to record.
 *
 * Buckets. Let SUB = 2^SUB_BITS (SUB_BITS = WEFT_HIST_SUB_BITS = 5, SUB = 32). A value v (negative
 * values are recorded as 0) with highest set bit e goes to
 *
 *     shift = max(0, e - SUB_BITS)            (computed as 63 - clz(v | SUB) - SUB_BITS)
 *     index = shift * SUB + (v >> shift)
 *
 * so the values below 2 * SUB = 64 have a bucket each (index = v), and every power of two
 * [2^e, 2^(e+1)) with e > SUB_BITS is split into SUB equal buckets of width 2^shift. Bucket i
 * (i >= 2 * SUB) holds [m << s, (m << s) + 2^s - 1] with s = i / SUB - 1 and m = i - s * SUB, m in
 * [SUB, 2 * SUB). Its width over its lowest value is 1/m <= 2^-SUB_BITS. INT64_MAX lands in the
 * last bucket, index (62 - SUB_BITS) * SUB + 2 * SUB - 1, so there are (64 - SUB_BITS) * SUB = 1888
 * buckets of 8 bytes (15 KiB a histogram). The mapping is one clz, a shift and an add: no loop, no
 * floating point.
 *
 * Reported values. A percentile is reported as its bucket's midpoint lo + (hi - lo) / 2, clamped
 * to [min, max]. Any value v of the bucket is within (hi - lo + 1) / 2 of it and v >= lo >= SUB *
 * 2^s, so the relative error is <= 2^-(SUB_BITS + 1) = WEFT_HIST_REL_ERROR (values below 64 are
 * exact).
 *
 * Percentile p (clamped to [0, 100], NaN counts as 0): p = 0 gives the exact min and p = 100 the
 * exact max. Otherwise, with total = the sum of the buckets (read in the same pass), rank =
 * ceil(p / 100 * total) in double arithmetic, where a product within a relative 1e-12 above an
 * integer counts as that integer (so p = 99.9 of 1000 values is rank 999, not 1000), and rank is
 * kept in [1, total]. The answer comes from the smallest bucket whose cumulative count reaches
 * rank.
 *
 * count_le(v) = the number of values in the buckets 0 .. index(v): exactly the values <= the upper
 * edge of v's bucket (v itself below 64). 2^k - 1 is always an upper edge, so count_le(2^k - 1) is
 * exactly the number of values < 2^k. count_le of a negative v is 0.
 *
 * Sum. Kept exact modulo 2^128 in two 64-bit words: a record adds the low word of value * n with
 * one fetch_add and, only when that add carried out or the product has a high word, adds the high
 * word plus the carry to sum_hi. Each carry is derived from the old value that its own fetch_add
 * returned, so the words are exact once the recorders are done; a reader racing with a carry may
 * see the low word wrapped before the high word catches up (off by 2^64 for that moment).
 * count wraps modulo 2^64 (centuries at a billion records a second).
 *
 * Concurrency. Every field is a relaxed atomic; record does, in order:
 *   1. fetch_add on the bucket, 2. fetch_add on count, 3. fetch_add on sum_lo (and rarely sum_hi),
 *   4. a CAS loop raising max, 5. a CAS loop raising min_inv = ~min (so "lower the min" is also a
 *      fetch-max, and the all-zero state means empty). The loops only write when the value is a
 *      new extreme; the CAS winner keeps its value, a loser re-reads and retries only while its
 *      value is still more extreme.
 * Recorders never lose updates to each other. Readers see each field on its own: count, the
 * buckets, sum, min and max need not agree with each other while records are in flight (not a
 * consistent cut); percentile and count_le use the bucket counts only, so they agree with
 * themselves. reset stores zeros field by field: records racing with it may be lost in part (e.g.
 * counted in a bucket but not in count), never memory-unsafe. merge reads src field by field the
 * same way and adds into dst with the same atomic steps as record, so merging into a histogram
 * that others record into is safe.
 *
 * NULL. Validation returns harmlessly: with a NULL histogram record, record_n, reset and destroy
 * do nothing, and the readers return 0. Only create and merge report -EINVAL.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../internal/alloc.h"
#include "../internal/common.h"
#include "../internal/hist.h"

#define RELAXED memory_order_relaxed

_Static_assert(WEFT_HIST_SUB_BITS >= 1 && WEFT_HIST_SUB_BITS <= 16, "SUB_BITS out of range");
_Static_assert(WEFT__HIST_BUCKETS ==
                       (62 - WEFT_HIST_SUB_BITS) * WEFT__HIST_SUB + 2 * WEFT__HIST_SUB,
               "the last bucket is INT64_MAX's");

void weft__hist_init(weft_hist *h)
{
	WEFT__ASSERT(h);
	memset(h, 0, sizeof(*h));
}

WEFT_API int weft_hist_create(weft_hist **ret)
{
	if (!ret)
		return -EINVAL;
	weft_hist *h = weft__calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	*ret = h;
	return 0;
}

WEFT_API void weft_hist_destroy(weft_hist *h)
{
	free(h);
}

/* --- buckets --------------------------------------------------------------------------------- */

int64_t weft__hist_bucket_lo(size_t i)
{
	WEFT__ASSERT(i < WEFT__HIST_BUCKETS);
	if (i < 2 * WEFT__HIST_SUB)
		return (int64_t)i;
	unsigned shift = (unsigned)(i >> WEFT_HIST_SUB_BITS) - 1;
	uint64_t m = i - ((size_t)shift << WEFT_HIST_SUB_BITS);
	return (int64_t)(m << shift);
}

int64_t weft__hist_bucket_hi(size_t i)
{
	WEFT__ASSERT(i < WEFT__HIST_BUCKETS);
	if (i < 2 * WEFT__HIST_SUB)
		return (int64_t)i;
	unsigned shift = (unsigned)(i >> WEFT_HIST_SUB_BITS) - 1;
	/* lo + 2^shift - 1; for the last bucket this is exactly INT64_MAX, computed unsigned. */
	return (int64_t)((uint64_t)weft__hist_bucket_lo(i) + (((uint64_t)1 << shift) - 1));
}

int64_t weft__hist_upper_edge(int64_t v)
{
	if (v < 0)
		return -1;
	return weft__hist_bucket_hi(weft__hist_index((uint64_t)v));
}

static int64_t bucket_mid(size_t i)
{
	int64_t lo = weft__hist_bucket_lo(i);
	return lo + (weft__hist_bucket_hi(i) - lo) / 2;
}

/* --- recording ------------------------------------------------------------------------------- */

/* Raise *a to at least v (a relaxed fetch-max). */
static inline void atomic_raise(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(a, RELAXED);
	while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, RELAXED, RELAXED)) {
	}
}

/* Add the 128-bit amount hi * 2^64 + lo to the sum (see the head comment). */
static inline void sum_add(weft_hist *h, uint64_t lo, uint64_t hi)
{
	uint64_t old = atomic_fetch_add_explicit(&h->sum_lo, lo, RELAXED);
	hi += (old + lo < lo); /* carry out of the low word */
	if (weft__unlikely(hi))
		atomic_fetch_add_explicit(&h->sum_hi, hi, RELAXED);
}

WEFT_API void weft_hist_record(weft_hist *h, int64_t value)
{
	if (weft__unlikely(!h))
		return;
	uint64_t v = value < 0 ? 0 : (uint64_t)value;
	atomic_fetch_add_explicit(&h->buckets[weft__hist_index(v)], 1, RELAXED);
	atomic_fetch_add_explicit(&h->count, 1, RELAXED);
	sum_add(h, v, 0);
	atomic_raise(&h->max, v);
	atomic_raise(&h->min_inv, ~v);
}

WEFT_API void weft_hist_record_n(weft_hist *h, int64_t value, uint64_t n)
{
	if (weft__unlikely(!h || n == 0))
		return;
	uint64_t v = value < 0 ? 0 : (uint64_t)value;
	unsigned __int128 amount = (unsigned __int128)v * n;
	atomic_fetch_add_explicit(&h->buckets[weft__hist_index(v)], n, RELAXED);
	atomic_fetch_add_explicit(&h->count, n, RELAXED);
	sum_add(h, (uint64_t)amount, (uint64_t)(amount >> 64));
	atomic_raise(&h->max, v);
	atomic_raise(&h->min_inv, ~v);
}

WEFT_API int weft_hist_merge(weft_hist *dst, const weft_hist *src)
{
	if (!dst || !src || dst == src)
		return -EINVAL;
	/* C11 atomic loads want a non-const pointer on some compilers; nothing is written. */
	weft_hist *s = (weft_hist *)src;
	for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++) {
		uint64_t b = atomic_load_explicit(&s->buckets[i], RELAXED);
		if (b)
			atomic_fetch_add_explicit(&dst->buckets[i], b, RELAXED);
	}
	atomic_fetch_add_explicit(&dst->count, atomic_load_explicit(&s->count, RELAXED), RELAXED);
	sum_add(dst, atomic_load_explicit(&s->sum_lo, RELAXED),
	        atomic_load_explicit(&s->sum_hi, RELAXED));
	/* An empty src has max 0 and min_inv 0, which raise nothing. */
	atomic_raise(&dst->max, atomic_load_explicit(&s->max, RELAXED));
	atomic_raise(&dst->min_inv, atomic_load_explicit(&s->min_inv, RELAXED));
	return 0;
}

WEFT_API void weft_hist_reset(weft_hist *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++)
		atomic_store_explicit(&h->buckets[i], 0, RELAXED);
	atomic_store_explicit(&h->count, 0, RELAXED);
	atomic_store_explicit(&h->sum_lo, 0, RELAXED);
	atomic_store_explicit(&h->sum_hi, 0, RELAXED);
	atomic_store_explicit(&h->max, 0, RELAXED);
	atomic_store_explicit(&h->min_inv, 0, RELAXED);
}

/* --- reading --------------------------------------------------------------------------------- */

#define LOAD(field) atomic_load_explicit(&((weft_hist *)(h))->field, RELAXED)

WEFT_API uint64_t weft_hist_count(const weft_hist *h)
{
	return h ? LOAD(count) : 0;
}

WEFT_API double weft_hist_sum(const weft_hist *h)
{
	if (!h)
		return 0;
	uint64_t lo = LOAD(sum_lo), hi = LOAD(sum_hi);
	return (double)hi * 18446744073709551616.0 + (double)lo;
}

WEFT_API double weft_hist_mean(const weft_hist *h)
{
	uint64_t n = weft_hist_count(h);
	return n ? weft_hist_sum(h) / (double)n : 0;
}

WEFT_API int64_t weft_hist_min(const weft_hist *h)
{
	uint64_t inv = h ? LOAD(min_inv) : 0;
	return inv ? (int64_t)~inv : 0;
}

WEFT_API int64_t weft_hist_max(const weft_hist *h)
{
	return h ? (int64_t)LOAD(max) : 0;
}

/* The rank (1 .. total) of percentile p in (0, 100) among `total` > 0 values; see the head
 * comment. */
static uint64_t rank_of(double p, uint64_t total)
{
	double x = p / 100.0 * (double)total;
	double f = floor(x);
	double r = (x - f <= x * 1e-12) ? f : f + 1;
	if (r < 1)
		return 1;
	if (r >= (double)total)
		return total;
	return (uint64_t)r;
}

void weft__hist_percentiles(const weft_hist *h, const double *ps, size_t n, int64_t *ret_values)
{
	if (!n)
		return;
	WEFT__ASSERT(ps && ret_values);
	uint64_t total = 0;
	if (h) {
		for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++)
			total += LOAD(buckets[i]);
	}
	int64_t min = weft_hist_min(h), max = weft_hist_max(h);
	/* -1 marks "not found yet"; an answer is never negative. */
	size_t pending = 0;
	for (size_t k = 0; k < n; k++) {
		double p = ps[k];
		if (total == 0)
			ret_values[k] = 0;
		else if (!(p > 0)) /* also NaN */
			ret_values[k] = min;
		else if (p >= 100)
			ret_values[k] = max;
		else {
			ret_values[k] = -1;
			pending++;
		}
	}
	uint64_t cum = 0;
	for (size_t i = 0; pending && i < WEFT__HIST_BUCKETS; i++) {
		uint64_t b = LOAD(buckets[i]);
		if (!b)
			continue;
		cum += b;
		for (size_t k = 0; k < n; k++) {
			if (ret_values[k] >= 0 || rank_of(ps[k], total) > cum)
				continue;
			int64_t mid = bucket_mid(i);
			ret_values[k] = mid < min ? min : mid > max ? max : mid;
			pending--;
		}
	}
	/* A reset racing with the scan can leave ranks unreached: answer max (0 after a reset). */
	for (size_t k = 0; pending && k < n; k++) {
		if (ret_values[k] < 0) {
			ret_values[k] = max;
			pending--;
		}
	}
}

WEFT_API int64_t weft_hist_percentile(const weft_hist *h, double p)
{
	int64_t v;
	weft__hist_percentiles(h, &p, 1, &v);
	return v;
}

void weft__hist_count_le_many(const weft_hist *h, const int64_t *edges, size_t n,
                              uint64_t *ret_counts)
{
	if (!n)
		return;
	WEFT__ASSERT(edges && ret_counts);
	uint64_t cum = 0;
	size_t i = 0; /* buckets 0 .. i-1 are in cum */
	for (size_t k = 0; k < n; k++) {
		WEFT__ASSERT(k == 0 || edges[k - 1] <= edges[k]);
		if (edges[k] < 0 || !h) {
			ret_counts[k] = 0;
			continue;
		}
		size_t last = weft__hist_index((uint64_t)edges[k]);
		for (; i <= last; i++)
			cum += LOAD(buckets[i]);
		ret_counts[k] = cum;
	}
}

WEFT_API uint64_t weft_hist_count_le(const weft_hist *h, int64_t v)
{
	uint64_t c;
	weft__hist_count_le_many(h, &v, 1, &c);
	return c;
}
