/* test-hist.c: the log-linear histogram: bucket mapping, exactness below 64, percentiles against
 * exact sorted data, count_le, merge, reset, concurrent recording, argument validation and
 * allocation faults. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>

#include "harness.h"
#include "internal/alloc.h"
#include "internal/common.h"
#include "internal/hist.h"

/* A deterministic PRNG so every run sees the same data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
	return th_rng(&rng_state);
}

/* Uniform in [0, 1). */
static double rng_unit(void)
{
	return th_rng_unit(&rng_state);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The rank rule documented in hist.c, restated: ceil(p / 100 * n), a product within a relative
 * 1e-12 above an integer counting as that integer, kept in [1, n]. */
static size_t ref_rank(double p, size_t n)
{
	double x = p / 100.0 * (double)n;
	double f = floor(x);
	double r = (x - f <= x * 1e-12) ? f : f + 1;
	if (r < 1)
		return 1;
	if (r > (double)n)
		return n;
	return (size_t)r;
}

static weft_hist *new_hist(void)
{
	weft_hist *h = NULL;
	ASSERT_OK(weft_hist_create(&h));
	ASSERT_NOT_NULL(h);
	return h;
}

TEST(bucket_mapping_round_trip)
{
	ASSERT_EQ(WEFT__HIST_BUCKETS, 1888);
	ASSERT_EQ(weft__hist_bucket_lo(0), 0);
	ASSERT_EQ(weft__hist_bucket_hi(WEFT__HIST_BUCKETS - 1), INT64_MAX);
	for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++) {
		int64_t lo = weft__hist_bucket_lo(i), hi = weft__hist_bucket_hi(i);
		ASSERT_LE(lo, hi);
		/* both edges map back to the bucket, and the buckets tile [0, INT64_MAX] */
		ASSERT_UEQ(weft__hist_index((uint64_t)lo), i);
		ASSERT_UEQ(weft__hist_index((uint64_t)hi), i);
		if (i > 0) {
			ASSERT_EQ(lo, weft__hist_bucket_hi(i - 1) + 1);
			ASSERT_UEQ(weft__hist_index((uint64_t)lo - 1), i - 1);
		}
		if (i < WEFT__HIST_BUCKETS - 1)
			ASSERT_UEQ(weft__hist_index((uint64_t)hi + 1), i + 1);
		/* width relative to the lowest value: at most 2^-SUB_BITS, exact below 2 * SUB */
		uint64_t width = (uint64_t)hi - (uint64_t)lo + 1;
		if (i < 2 * WEFT__HIST_SUB) {
			ASSERT_EQ(lo, (int64_t)i);
			ASSERT_UEQ(width, 1);
		} else {
			ASSERT_TRUE((double)width / (double)lo <= 1.0 / (1 << WEFT_HIST_SUB_BITS));
			ASSERT_UEQ(width & (width - 1), 0); /* a power of two */
		}
		ASSERT_EQ(weft__hist_upper_edge(lo), hi);
		ASSERT_EQ(weft__hist_upper_edge(hi), hi);
	}
	/* random values across all magnitudes land in a bucket that contains them */
	for (int k = 0; k < 200000; k++) {
		uint64_t v = rng() >> (rng() % 64);
		v &= (uint64_t)INT64_MAX;
		size_t i = weft__hist_index(v);
		ASSERT_LT(i, WEFT__HIST_BUCKETS);
		ASSERT_LE(weft__hist_bucket_lo(i), (int64_t)v);
		ASSERT_LE((int64_t)v, weft__hist_bucket_hi(i));
	}
	/* every 2^k - 1 is an upper edge */
	for (int k = 1; k < 63; k++) {
		int64_t e = ((int64_t)1 << k) - 1;
		ASSERT_EQ(weft__hist_upper_edge(e), e);
	}
	ASSERT_EQ(weft__hist_upper_edge(-5), -1);
	ASSERT_UEQ(weft__hist_index(0), 0);
	ASSERT_UEQ(weft__hist_index((uint64_t)INT64_MAX), WEFT__HIST_BUCKETS - 1);
}

TEST(values_below_64_are_exact)
{
	weft_hist *h = new_hist();
	/* value v recorded v + 1 times */
	uint64_t total = 0, sum = 0;
	for (int v = 0; v < 64; v++) {
		for (int k = 0; k <= v; k++)
			weft_hist_record(h, v);
		total += (uint64_t)v + 1;
		sum += (uint64_t)v * ((uint64_t)v + 1);
	}
	ASSERT_UEQ(weft_hist_count(h), total);
	ASSERT_NEAR(weft_hist_sum(h), (double)sum, 0);
	ASSERT_EQ(weft_hist_min(h), 0);
	ASSERT_EQ(weft_hist_max(h), 63);
	uint64_t cum = 0;
	for (int v = 0; v < 64; v++) {
		cum += (uint64_t)v + 1;
		ASSERT_UEQ(weft_hist_count_le(h, v), cum);
		/* the percentile whose rank is exactly cum is v itself */
		double p = 100.0 * (double)cum / (double)total;
		ASSERT_EQ(weft_hist_percentile(h, p), v);
	}
	weft_hist_destroy(h);
}

TEST(extremes_zero_negative_and_int64_max)
{
	weft_hist *h = new_hist();
	weft_hist_record(h, -1);
	weft_hist_record(h, INT64_MIN);
	weft_hist_record(h, 0);
	ASSERT_UEQ(weft_hist_count(h), 3);
	ASSERT_EQ(weft_hist_min(h), 0);
	ASSERT_EQ(weft_hist_max(h), 0);
	ASSERT_NEAR(weft_hist_sum(h), 0, 0);
	ASSERT_UEQ(weft_hist_count_le(h, 0), 3);
	ASSERT_UEQ(weft_hist_count_le(h, -1), 0); /* documented: negative v counts nothing */
	ASSERT_EQ(weft_hist_percentile(h, 50), 0);

	weft_hist_record(h, INT64_MAX);
	ASSERT_UEQ(weft_hist_count(h), 4);
	ASSERT_EQ(weft_hist_max(h), INT64_MAX);
	ASSERT_EQ(weft_hist_percentile(h, 100), INT64_MAX);
	/* p99 lands in INT64_MAX's bucket: its midpoint, within the relative error */
	int64_t p99 = weft_hist_percentile(h, 99);
	ASSERT_TRUE(fabs((double)p99 - (double)INT64_MAX) <=
	            (double)INT64_MAX * WEFT_HIST_REL_ERROR);
	ASSERT_UEQ(weft_hist_count_le(h, INT64_MAX), 4);
	ASSERT_UEQ(weft_hist_count_le(h, INT64_MAX / 2), 3);
	ASSERT_NEAR(weft_hist_sum(h), (double)INT64_MAX, 0);

	/* three more INT64_MAX: the sum passes 2^64 and stays exact in its two words */
	weft_hist_record(h, INT64_MAX);
	weft_hist_record(h, INT64_MAX);
	weft_hist_record(h, INT64_MAX);
	unsigned __int128 want = (unsigned __int128)INT64_MAX * 4;
	ASSERT_UEQ(atomic_load(&h->sum_lo), (uint64_t)want);
	ASSERT_UEQ(atomic_load(&h->sum_hi), (uint64_t)(want >> 64));
	ASSERT_NEAR(weft_hist_sum(h), 4.0 * (double)INT64_MAX, 1e6);
	ASSERT_NEAR(weft_hist_mean(h), 4.0 * (double)INT64_MAX / 7, 1e6);
	weft_hist_destroy(h);
}

TEST(record_n_and_wide_sum)
{
	weft_hist *h = new_hist();
	weft_hist_record_n(h, 5, 0); /* nothing, not even min/max */
	ASSERT_UEQ(weft_hist_count(h), 0);
	ASSERT_EQ(weft_hist_min(h), 0);
	ASSERT_EQ(weft_hist_max(h), 0);
	weft_hist_record_n(h, 1000, 7);
	weft_hist_record_n(h, -3, 2);
	ASSERT_UEQ(weft_hist_count(h), 9);
	ASSERT_NEAR(weft_hist_sum(h), 7000, 0);
	ASSERT_EQ(weft_hist_min(h), 0);
	ASSERT_EQ(weft_hist_max(h), 1000);
	ASSERT_UEQ(weft_hist_count_le(h, 0), 2);
	/* 1000's bucket is [992, 1007] */
	ASSERT_UEQ(weft_hist_count_le(h, 991), 2);
	ASSERT_UEQ(weft_hist_count_le(h, 992), 9);
	ASSERT_UEQ(weft_hist_count_le(h, 1000), 9);
	ASSERT_EQ(weft__hist_upper_edge(1000), 1007);

	/* the largest product there is: exact modulo 2^128 */
	weft_hist *w = new_hist();
	weft_hist_record_n(w, INT64_MAX, UINT64_MAX);
	weft_hist_record_n(w, INT64_MAX, 3);
	unsigned __int128 want =
	        (unsigned __int128)INT64_MAX * UINT64_MAX + (unsigned __int128)INT64_MAX * 3;
	ASSERT_UEQ(atomic_load(&w->sum_lo), (uint64_t)want);
	ASSERT_UEQ(atomic_load(&w->sum_hi), (uint64_t)(want >> 64));
	ASSERT_UEQ(weft_hist_count(w), 2); /* UINT64_MAX + 3 wraps, as documented */
	ASSERT_TRUE(fabs(weft_hist_sum(w) / ((double)INT64_MAX * 18446744073709551618.0) - 1) <
	            1e-12);
	weft_hist_destroy(w);
	weft_hist_destroy(h);
}

/* Record `n` values into a histogram and compare every percentile with the sorted data. */
static void check_percentiles(int64_t *vals, size_t n)
{
	weft_hist *h = new_hist();
	for (size_t i = 0; i < n; i++)
		weft_hist_record(h, vals[i]);
	qsort(vals, n, sizeof(*vals), cmp_i64);
	ASSERT_UEQ(weft_hist_count(h), n);
	ASSERT_EQ(weft_hist_min(h), vals[0]);
	ASSERT_EQ(weft_hist_max(h), vals[n - 1]);
	ASSERT_EQ(weft_hist_percentile(h, 0), vals[0]);
	ASSERT_EQ(weft_hist_percentile(h, 100), vals[n - 1]);
	static const double ps[] = {0.001, 0.1, 1,  5,  10,   25,   33.3,  50,    66.7,
	                            75,    90,  95, 99, 99.5, 99.9, 99.99, 99.999};
	int64_t many[WEFT__ARRAY_SIZE(ps)];
	weft__hist_percentiles(h, ps, WEFT__ARRAY_SIZE(ps), many);
	for (size_t k = 0; k < WEFT__ARRAY_SIZE(ps); k++) {
		int64_t exact = vals[ref_rank(ps[k], n) - 1];
		int64_t got = weft_hist_percentile(h, ps[k]);
		ASSERT_EQ(got, many[k]);
		if (fabs((double)got - (double)exact) > (double)exact * WEFT_HIST_REL_ERROR)
			FAIL("p%g: got %" PRId64 ", exact %" PRId64, ps[k], got, exact);
		ASSERT_GE(got, vals[0]);
		ASSERT_LE(got, vals[n - 1]);
	}
	/* p between two ranks: never below the exact value's bucket, never beyond max */
	for (int k = 0; k <= 1000; k++) {
		double p = k / 10.0;
		int64_t exact = vals[ref_rank(p, n) - 1];
		int64_t got = weft_hist_percentile(h, p);
		if (k == 0)
			exact = vals[0];
		if (fabs((double)got - (double)exact) > (double)exact * WEFT_HIST_REL_ERROR)
			FAIL("p%g: got %" PRId64 ", exact %" PRId64, p, got, exact);
	}
	weft_hist_destroy(h);
}

#define NVALS 100000

TEST(percentiles_uniform)
{
	int64_t *v = malloc(NVALS * sizeof(*v));
	for (size_t i = 0; i < NVALS; i++)
		v[i] = (int64_t)(rng() % 1000000000);
	check_percentiles(v, NVALS);
	free(v);
}

TEST(percentiles_exponential)
{
	int64_t *v = malloc(NVALS * sizeof(*v));
	for (size_t i = 0; i < NVALS; i++)
		v[i] = (int64_t)(-log(1 - rng_unit()) * 1e6); /* mean 1 ms in ns */
	check_percentiles(v, NVALS);
	free(v);
}

TEST(percentiles_wide_log_uniform)
{
	/* magnitudes from 1 to 2^62: every bucket group is used */
	int64_t *v = malloc(NVALS * sizeof(*v));
	for (size_t i = 0; i < NVALS; i++)
		v[i] = (int64_t)((rng() >> 1) >> (rng() % 63));
	check_percentiles(v, NVALS);
	free(v);
}

TEST(percentiles_constant_and_two_point)
{
	int64_t *v = malloc(NVALS * sizeof(*v));
	for (size_t i = 0; i < NVALS; i++)
		v[i] = 123456789;
	check_percentiles(v, NVALS);
	/* the constant is reported exactly: the midpoint is clamped to [min, max] */
	weft_hist *h = new_hist();
	weft_hist_record_n(h, 123456789, 10);
	ASSERT_EQ(weft_hist_percentile(h, 50), 123456789);
	weft_hist_destroy(h);

	/* 30% at 10, 70% at 10^12 */
	for (size_t i = 0; i < NVALS; i++)
		v[i] = (rng() % 10 < 3) ? 10 : 1000000000000;
	check_percentiles(v, NVALS);
	free(v);

	h = new_hist();
	weft_hist_record_n(h, 10, 30);
	weft_hist_record_n(h, 1000000000000, 70);
	ASSERT_EQ(weft_hist_percentile(h, 30), 10);
	int64_t p31 = weft_hist_percentile(h, 30.01); /* rank 31: the 10^12 bucket */
	ASSERT_TRUE(fabs((double)p31 - 1e12) <= 1e12 * WEFT_HIST_REL_ERROR);
	ASSERT_LE(p31, 1000000000000); /* never beyond max */
	weft_hist_destroy(h);
}

TEST(percentile_p_is_clamped_and_empty_gives_zero)
{
	weft_hist *h = new_hist();
	ASSERT_EQ(weft_hist_percentile(h, 50), 0);
	ASSERT_EQ(weft_hist_percentile(h, 0), 0);
	ASSERT_EQ(weft_hist_percentile(h, 100), 0);
	ASSERT_NEAR(weft_hist_mean(h), 0, 0);
	weft_hist_record(h, 1000);
	weft_hist_record(h, 5000);
	ASSERT_EQ(weft_hist_percentile(h, -10), 1000);
	ASSERT_EQ(weft_hist_percentile(h, NAN), 1000);
	ASSERT_EQ(weft_hist_percentile(h, 250), 5000);
	ASSERT_EQ(weft_hist_percentile(h, INFINITY), 5000);
	ASSERT_EQ(weft_hist_percentile(h, -INFINITY), 1000);
	ASSERT_NEAR(weft_hist_mean(h), 3000, 0);
	weft_hist_destroy(h);
}

TEST(count_le_matches_brute_force)
{
	int64_t *v = malloc(NVALS * sizeof(*v));
	weft_hist *h = new_hist();
	for (size_t i = 0; i < NVALS; i++) {
		v[i] = (int64_t)((rng() >> 1) >> (rng() % 63));
		weft_hist_record(h, v[i]);
	}
	qsort(v, NVALS, sizeof(*v), cmp_i64);
	/* count of values <= the upper edge of q's bucket, by binary search on the sorted data */
	for (int k = 0; k < 3000; k++) {
		int64_t q =
		        k < 63 ? ((int64_t)1 << k) - 1 : (int64_t)((rng() >> 1) >> (rng() % 63));
		int64_t edge = weft__hist_upper_edge(q);
		size_t lo = 0, hi = NVALS;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (v[mid] <= edge)
				lo = mid + 1;
			else
				hi = mid;
		}
		ASSERT_UEQ(weft_hist_count_le(h, q), lo);
		if (k < 63) /* at 2^k - 1 the count is exactly the values < 2^k */
			ASSERT_EQ(edge, q);
	}
	/* the many-edges form agrees with the single one */
	int64_t edges[64];
	uint64_t counts[64];
	edges[0] = -1;
	for (int k = 1; k < 64; k++)
		edges[k] = ((int64_t)1 << (k - 1)) - 1 + (k % 3);
	weft__hist_count_le_many(h, edges, 64, counts);
	for (int k = 0; k < 64; k++)
		ASSERT_UEQ(counts[k], weft_hist_count_le(h, edges[k]));
	ASSERT_UEQ(counts[0], 0);
	ASSERT_UEQ(weft_hist_count_le(h, INT64_MAX), NVALS);
	weft_hist_destroy(h);
	free(v);
}

static void assert_same(weft_hist *a, weft_hist *b)
{
	ASSERT_UEQ(weft_hist_count(a), weft_hist_count(b));
	ASSERT_UEQ(atomic_load(&a->sum_lo), atomic_load(&b->sum_lo));
	ASSERT_UEQ(atomic_load(&a->sum_hi), atomic_load(&b->sum_hi));
	ASSERT_EQ(weft_hist_min(a), weft_hist_min(b));
	ASSERT_EQ(weft_hist_max(a), weft_hist_max(b));
	for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++)
		ASSERT_UEQ(atomic_load(&a->buckets[i]), atomic_load(&b->buckets[i]));
}

TEST(merge_equals_recording_both)
{
	weft_hist *a = new_hist(), *b = new_hist(), *both = new_hist(), *empty = new_hist();
	for (int i = 0; i < 20000; i++) {
		int64_t x = (int64_t)(rng() % 5000000) + 100;
		int64_t y = (int64_t)((rng() >> 1) >> (rng() % 63));
		weft_hist_record(a, x);
		weft_hist_record(b, y);
		weft_hist_record(both, x);
		weft_hist_record(both, y);
	}
	weft_hist_record_n(b, INT64_MAX, 5); /* makes the merged sum carry into its high word */
	weft_hist_record_n(both, INT64_MAX, 5);
	ASSERT_OK(weft_hist_merge(a, b));
	assert_same(a, both);
	/* merging an empty histogram changes nothing (its min of "none" does not win) */
	ASSERT_OK(weft_hist_merge(a, empty));
	assert_same(a, both);
	/* merging into an empty one copies */
	ASSERT_OK(weft_hist_merge(empty, both));
	assert_same(empty, both);
	ASSERT_EQ(weft_hist_percentile(a, 50), weft_hist_percentile(both, 50));

	ASSERT_ERR(weft_hist_merge(a, a), -EINVAL);
	ASSERT_ERR(weft_hist_merge(NULL, a), -EINVAL);
	ASSERT_ERR(weft_hist_merge(a, NULL), -EINVAL);
	ASSERT_ERR(weft_hist_merge(NULL, NULL), -EINVAL);
	assert_same(a, both);
	weft_hist_destroy(a);
	weft_hist_destroy(b);
	weft_hist_destroy(both);
	weft_hist_destroy(empty);
}

TEST(reset_empties_everything)
{
	weft_hist *h = new_hist();
	for (int i = 1; i <= 1000; i++)
		weft_hist_record(h, (int64_t)i * 1000003);
	weft_hist_record_n(h, INT64_MAX, 3);
	weft_hist_reset(h);
	ASSERT_UEQ(weft_hist_count(h), 0);
	ASSERT_NEAR(weft_hist_sum(h), 0, 0);
	ASSERT_EQ(weft_hist_min(h), 0);
	ASSERT_EQ(weft_hist_max(h), 0);
	ASSERT_EQ(weft_hist_percentile(h, 50), 0);
	ASSERT_UEQ(weft_hist_count_le(h, INT64_MAX), 0);
	weft_hist *zero = new_hist();
	assert_same(h, zero);
	/* usable again, and min is not stuck at an old value */
	weft_hist_record(h, 777);
	ASSERT_EQ(weft_hist_min(h), 777);
	ASSERT_EQ(weft_hist_max(h), 777);
	ASSERT_EQ(weft_hist_percentile(h, 50), 777);
	weft_hist_destroy(zero);
	weft_hist_destroy(h);
}

TEST(embedded_init)
{
	static weft_hist h; /* 15 KiB: not on the stack */
	memset(&h, 0xA5, sizeof(h));
	weft__hist_init(&h);
	ASSERT_UEQ(weft_hist_count(&h), 0);
	ASSERT_EQ(weft_hist_min(&h), 0);
	weft_hist_record(&h, 42);
	weft_hist_record(&h, 4200);
	ASSERT_UEQ(weft_hist_count(&h), 2);
	ASSERT_EQ(weft_hist_min(&h), 42);
	ASSERT_EQ(weft_hist_max(&h), 4200);
	ASSERT_UEQ(weft_hist_count_le(&h, 42), 1);
}

#define NTHREADS 4
#define PER_THREAD 200000

struct rec_arg {
	weft_hist *h;
	int id;
	pthread_barrier_t *barrier;
};

/* The values thread `id` records; the same function computes the expected totals. */
static int64_t thread_value(int id, int i)
{
	if (i % 1000 == 999)
		return INT64_MAX - i; /* drives carries into sum_hi from several threads */
	return (int64_t)(((uint64_t)i * 2654435761u + (uint64_t)id * 97) % 100000000);
}

static void *recorder(void *p)
{
	struct rec_arg *a = p;
	pthread_barrier_wait(a->barrier);
	for (int i = 0; i < PER_THREAD; i++) {
		if (i % 100 == 0)
			weft_hist_record_n(a->h, thread_value(a->id, i), 3);
		else
			weft_hist_record(a->h, thread_value(a->id, i));
	}
	return NULL;
}

TEST_TIMEOUT(concurrent_records_are_exact, 60)
{
	weft_hist *h = new_hist(), *ref = new_hist();
	pthread_barrier_t barrier;
	pthread_barrier_init(&barrier, NULL, NTHREADS);
	pthread_t t[NTHREADS];
	struct rec_arg args[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		args[i] = (struct rec_arg){h, i, &barrier};
		ASSERT_EQ(pthread_create(&t[i], NULL, recorder, &args[i]), 0);
	}
	/* a reader racing with the recorders sees sane values (and TSan sees the reads) */
	for (int k = 0; k < 50; k++) {
		ASSERT_LE(weft_hist_count_le(h, 1000), weft_hist_count_le(h, INT64_MAX));
		(void)weft_hist_percentile(h, 99);
		(void)weft_hist_sum(h);
		(void)weft_hist_min(h);
	}
	for (int i = 0; i < NTHREADS; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	pthread_barrier_destroy(&barrier);

	unsigned __int128 sum = 0;
	uint64_t count = 0;
	for (int id = 0; id < NTHREADS; id++) {
		for (int i = 0; i < PER_THREAD; i++) {
			uint64_t n = i % 100 == 0 ? 3 : 1;
			sum += (unsigned __int128)thread_value(id, i) * n;
			count += n;
			weft_hist_record_n(ref, thread_value(id, i), n);
		}
	}
	ASSERT_UEQ(weft_hist_count(h), count);
	ASSERT_UEQ(atomic_load(&h->sum_lo), (uint64_t)sum);
	ASSERT_UEQ(atomic_load(&h->sum_hi), (uint64_t)(sum >> 64));
	ASSERT_TRUE(sum >> 64 != 0); /* the carry path really ran */
	assert_same(h, ref);
	weft_hist_destroy(ref);
	weft_hist_destroy(h);
}

TEST(null_histogram_is_harmless)
{
	weft_hist_destroy(NULL);
	weft_hist_record(NULL, 5);
	weft_hist_record_n(NULL, 5, 5);
	weft_hist_reset(NULL);
	ASSERT_UEQ(weft_hist_count(NULL), 0);
	ASSERT_NEAR(weft_hist_sum(NULL), 0, 0);
	ASSERT_NEAR(weft_hist_mean(NULL), 0, 0);
	ASSERT_EQ(weft_hist_min(NULL), 0);
	ASSERT_EQ(weft_hist_max(NULL), 0);
	ASSERT_EQ(weft_hist_percentile(NULL, 50), 0);
	ASSERT_UEQ(weft_hist_count_le(NULL, 100), 0);
	ASSERT_ERR(weft_hist_create(NULL), -EINVAL);
}

TEST(create_under_allocation_faults)
{
	for (long n = 1;; n++) {
		weft_hist *h = (weft_hist *)0x1;
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int r = weft_hist_create(&h);
		long injected = weft__fault_injected(WEFT__FAULT_ALLOC);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_UEQ(weft_hist_count(h), 0);
			weft_hist_destroy(h);
			ASSERT_EQ(n, 2); /* one allocation */
			break;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_TRUE(h == (weft_hist *)0x1); /* ret untouched on failure */
		ASSERT_LT(n, 100);
	}
}
