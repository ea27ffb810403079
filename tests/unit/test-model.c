/* test-model.c: the queueing model (weft_queue_forecast_compute, weft_erlang_c) against the
 * article's case, against Erlang C computed here independently (the textbook sum, in long double
 * for small c and in log space for large c), against closed forms (M/M/1, M/D/1, the
 * Pollaczek-Khinchine formula for M/G/1, D/M/1's root), and on every argument; and the
 * simulation (weft_queue_simulate) against those same closed forms, under allocation faults, and
 * on every argument. The simulations are seeded, so every figure here is deterministic; the
 * bounds are still those a correct simulation meets for any seed with high probability. */
#include <float.h>
#include <limits.h>
#include <math.h>

#include "harness.h"
#include "internal/alloc.h"
#include <weft/pool.h>

static weft_queue_model model(double lambda, double s, int c)
{
	return (weft_queue_model){
	        .arrival_rate = lambda,
	        .service_time = s,
	        .threads = c,
	        .arrival_cv2 = 1,
	        .service_cv2 = 1,
	};
}

static weft_queue_forecast forecast(const weft_queue_model *m)
{
	weft_queue_forecast f;
	ASSERT_OK(weft_queue_forecast_compute(m, &f));
	return f;
}

/* Erlang C by the textbook formula, summed in long double: fine for c up to ~100. */
static double erlang_c_direct(int c, double a)
{
	long double term = 1, sum = 0; /* term = a^k / k! */
	for (int k = 0; k < c; k++) {
		sum += term;
		term *= (long double)a / (k + 1);
	}
	long double top = term * c / (c - (long double)a);
	return (double)(top / (sum + top));
}

/* The same formula in log space (each term exp(k ln a - ln k! - max)): any c. */
static double erlang_c_logspace(int c, double a)
{
	double lmax = -INFINITY;
	for (int k = 0; k <= c; k++) {
		double l = k * log(a) - lgamma(k + 1.0);
		if (l > lmax)
			lmax = l;
	}
	double sum = 0;
	for (int k = 0; k < c; k++)
		sum += exp(k * log(a) - lgamma(k + 1.0) - lmax);
	double top = exp(c * log(a) - lgamma(c + 1.0) - lmax) * c / (c - a);
	return top / (sum + top);
}

/* M/M/c mean queue wait, from the direct Erlang C. */
static double mmc_wait(int c, double lambda, double s)
{
	double a = lambda * s;
	return erlang_c_direct(c, a) * s / (c - a);
}

static void assert_no_nan(const weft_queue_forecast *f)
{
	const double v[] = {f->offered_load,
	                    f->effective_threads,
	                    f->rho,
	                    f->growth_per_s,
	                    f->p_wait,
	                    f->wait_s,
	                    f->wait_now_s,
	                    f->wait_target_s,
	                    f->backlog_after_1h,
	                    f->wait_after_1h_s,
	                    f->time_to_full_s,
	                    f->drain_s,
	                    f->cpu_bound_limit};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (isnan(v[i]))
			FAIL("field %zu is NaN", i);
	ASSERT_TRUE(f->p_wait >= 0 && f->p_wait <= 1);
	ASSERT_TRUE(f->growth_per_s >= 0 && f->wait_s >= 0 && f->drain_s >= 0);
	ASSERT_TRUE(f->min_stable_threads == -1 || f->min_stable_threads >= 1);
	ASSERT_TRUE(f->threads_for_target == -1 || f->threads_for_target >= f->min_stable_threads);
}

/* ------------------------------------------------------------------------------------------------
 * The forecast.
 */

TEST(article_case)
{
	/* Two tasks a second, 1.5 s each, two threads: the queue can never be worked off. */
	weft_queue_model m = model(2, 1.5, 2);
	weft_queue_forecast f = forecast(&m);
	ASSERT_NEAR(f.offered_load, 3, 0);
	ASSERT_NEAR(f.effective_threads, 2, 0);
	ASSERT_NEAR(f.rho, 1.5, 1e-12);
	ASSERT_FALSE(f.stable);
	ASSERT_NEAR(f.growth_per_s, 2.0 / 3, 1e-9);
	ASSERT_EQ(f.min_stable_threads, 4); /* a = 3 exactly, and rho must be < 1 */
	ASSERT_TRUE(isinf(f.wait_s) && f.wait_s > 0);
	ASSERT_NEAR(f.p_wait, 1, 0);
	ASSERT_NEAR(f.backlog_after_1h, 2400, 1e-6);
	ASSERT_NEAR(f.wait_after_1h_s, 2400 * 1.5 / 2, 1e-6); /* 1800 s behind the backlog */
	ASSERT_NEAR(f.wait_now_s, 0, 0);
	ASSERT_TRUE(isinf(f.drain_s));
	ASSERT_TRUE(isinf(f.time_to_full_s)); /* unbounded queue */
	ASSERT_TRUE(isinf(f.cpu_bound_limit));
	ASSERT_NEAR(f.wait_target_s, 0.15, 1e-15); /* 10 % of S */
	/* The target: the waits computed here independently: 5 threads wait 0.177 s > 0.15,
	 * 6 threads 0.0496 s. */
	ASSERT_TRUE(mmc_wait(5, 2, 1.5) > 0.15 && mmc_wait(6, 2, 1.5) <= 0.15);
	ASSERT_EQ(f.threads_for_target, 6);
	ASSERT_TRUE(f.budget_allows);
	assert_no_nan(&f);

	/* At the recommended sizes it is stable, and its figures are M/M/c's. */
	m.threads = 4;
	f = forecast(&m);
	ASSERT_TRUE(f.stable);
	ASSERT_NEAR(f.rho, 0.75, 1e-12);
	ASSERT_NEAR(f.growth_per_s, 0, 0);
	ASSERT_NEAR(f.p_wait, erlang_c_direct(4, 3), 1e-12);
	ASSERT_NEAR(f.wait_s, mmc_wait(4, 2, 1.5), 1e-12);
	ASSERT_NEAR(f.backlog_after_1h, 0, 0);
	ASSERT_NEAR(f.wait_after_1h_s, f.wait_s, 0);
	ASSERT_NEAR(f.drain_s, 0, 0);
}

TEST(exact_integer_loads)
{
	/* 0.56 * 12.5 = 7.000000000000001 in doubles; it is 7: 8 threads are needed, and 7 threads
	 * are exactly saturated (rho = 1: unstable, but not growing linearly). */
	volatile double lambda = 0.56, s = 12.5;
	ASSERT_TRUE(lambda * s != 7.0);
	weft_queue_model m = model(lambda, s, 7);
	weft_queue_forecast f = forecast(&m);
	ASSERT_NEAR(f.offered_load, 7, 0);
	ASSERT_NEAR(f.rho, 1, 0);
	ASSERT_FALSE(f.stable);
	ASSERT_NEAR(f.growth_per_s, 0, 0);
	ASSERT_TRUE(isinf(f.wait_s));
	ASSERT_EQ(f.min_stable_threads, 8);
	ASSERT_NEAR(f.backlog_after_1h, 0, 0);

	/* A hair below an integer from rounding is the integer too, not "stable on 29 threads"
	 * (2.32 * 12.5 = 28.999999999999996), nor on 3 (0.7 * (3 / 0.7) = 2.9999999999999996). */
	lambda = 2.32;
	ASSERT_TRUE(lambda * s != 29.0);
	m = model(lambda, s, 29);
	f = forecast(&m);
	ASSERT_NEAR(f.offered_load, 29, 0);
	ASSERT_FALSE(f.stable);
	ASSERT_EQ(f.min_stable_threads, 30);
	lambda = 0.7;
	s = 3 / 0.7;
	ASSERT_TRUE(lambda * s != 3.0);
	m = model(lambda, s, 3);
	f = forecast(&m);
	ASSERT_NEAR(f.offered_load, 3, 0);
	ASSERT_FALSE(f.stable);
	ASSERT_EQ(f.min_stable_threads, 4);

	/* Within 1e-9 (relative) is the integer; further away is not. */
	m = model(3.0000000001, 1, 3);
	ASSERT_EQ(forecast(&m).min_stable_threads, 4);
	ASSERT_FALSE(forecast(&m).stable);
	m = model(2.9999999999, 1, 3);
	ASSERT_FALSE(forecast(&m).stable);
	m = model(2.99999, 1, 3);
	f = forecast(&m);
	ASSERT_TRUE(f.stable);
	ASSERT_EQ(f.min_stable_threads, 3);
	m = model(3.00001, 1, 3);
	f = forecast(&m);
	ASSERT_FALSE(f.stable);
	ASSERT_NEAR(f.growth_per_s, 0.00001, 1e-12);
	ASSERT_EQ(f.min_stable_threads, 4);

	/* Small loads: one thread is enough. */
	m = model(1e-3, 1e-3, 1);
	f = forecast(&m);
	ASSERT_EQ(f.min_stable_threads, 1);
	ASSERT_EQ(f.threads_for_target, 1);
	ASSERT_TRUE(f.stable);
}

TEST(erlang_c_known_values)
{
	/* c = 1: C = rho. */
	for (double a = 0.05; a < 1; a += 0.05)
		ASSERT_NEAR(weft_erlang_c(1, a), a, 1e-14);
	/* c = 2, a = 1: B(2) = 1/5, C = 1/3. */
	ASSERT_NEAR(weft_erlang_c(2, 1), 1.0 / 3, 1e-15);
	/* The textbook formula (long double) for small c, many loads. */
	for (int c = 1; c <= 60; c++)
		for (double r = 0.01; r < 1; r += 0.07) {
			double a = r * c, want = erlang_c_direct(c, a), got = weft_erlang_c(c, a);
			if (fabs(got - want) > 1e-12 * (want > 1e-3 ? want : 1e-3))
				FAIL("C(%d, %g) = %.17g, want %.17g", c, a, got, want);
		}
	/* Saturated and empty. */
	ASSERT_NEAR(weft_erlang_c(3, 3), 1, 0);
	ASSERT_NEAR(weft_erlang_c(3, 7.5), 1, 0);
	ASSERT_NEAR(weft_erlang_c(5, 0), 0, 0);
	/* Invalid. */
	ASSERT_TRUE(isnan(weft_erlang_c(0, 1)));
	ASSERT_TRUE(isnan(weft_erlang_c(-3, 1)));
	ASSERT_TRUE(isnan(weft_erlang_c(2, -0.5)));
	ASSERT_TRUE(isnan(weft_erlang_c(2, NAN)));
	ASSERT_TRUE(isnan(weft_erlang_c(2, INFINITY)));
}

TEST(erlang_c_large_c)
{
	/* The sum of a^k / k! overflows doubles near k = 170; the recurrence does not care. */
	const struct {
		int c;
		double a;
	} cases[] = {{170, 160}, {1000, 950}, {1000, 999}, {20000, 19800}, {100000, 99000}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double got = weft_erlang_c(cases[i].c, cases[i].a);
		double want = erlang_c_logspace(cases[i].c, cases[i].a);
		ASSERT_TRUE(isfinite(got) && got > 0 && got < 1);
		if (fabs(got - want) > 1e-9 * want)
			FAIL("C(%d, %g) = %.17g, log-space sum %.17g", cases[i].c, cases[i].a, got,
			     want);
	}
	/* The sizing walk at a large load agrees with Erlang C summed in log space. */
	weft_queue_model m = model(900, 1, 1024);
	m.wait_target = 0.002;
	weft_queue_forecast f = forecast(&m);
	ASSERT_EQ(f.min_stable_threads, 901);
	int want = 901;
	while (erlang_c_logspace(want, 900) / (want - 900) > 0.002)
		want++;
	ASSERT_EQ(f.threads_for_target, want);
	ASSERT_NEAR(f.p_wait, erlang_c_logspace(1024, 900), 1e-9 * f.p_wait);
	/* Far from saturation at huge c: the recurrence underflows to 0 and stops early. */
	ASSERT_NEAR(weft_erlang_c(INT_MAX, 10), 0, 0);
	ASSERT_NEAR(weft_erlang_c(1000000, 999999.5), erlang_c_logspace(1000000, 999999.5), 1e-9);
}

TEST(mm1_wait)
{
	/* M/M/1: Wq = rho / (1 - rho) * S. */
	for (double rho = 0.1; rho < 0.99; rho += 0.1) {
		weft_queue_model m = model(rho / 0.25, 0.25, 1);
		weft_queue_forecast f = forecast(&m);
		ASSERT_TRUE(f.stable);
		ASSERT_NEAR(f.p_wait, rho, 1e-12);
		ASSERT_NEAR(f.wait_s, rho / (1 - rho) * 0.25, 1e-12);
		ASSERT_NEAR(f.wait_now_s, f.wait_s, 0);
	}
}

TEST(allen_cunneen)
{
	for (int c = 1; c <= 8; c++) {
		weft_queue_model m = model(0.8 * c / 2, 2, c);
		double mmc = forecast(&m).wait_s;
		ASSERT_NEAR(mmc, mmc_wait(c, 0.8 * c / 2, 2), 1e-9);
		/* deterministic service: (1 + 0) / 2 halves it (exact for M/D/1) */
		m.service_cv2 = 0;
		ASSERT_NEAR(forecast(&m).wait_s, mmc / 2, 1e-12);
		/* no variability at all: no wait */
		m.arrival_cv2 = 0;
		ASSERT_NEAR(forecast(&m).wait_s, 0, 0);
		/* bursty: (1 + 4) / 2 */
		m.arrival_cv2 = 1;
		m.service_cv2 = 4;
		ASSERT_NEAR(forecast(&m).wait_s, mmc * 2.5, 1e-9);
		/* negative means 1 */
		m.arrival_cv2 = -1;
		m.service_cv2 = -0.5;
		ASSERT_NEAR(forecast(&m).wait_s, mmc, 0);
	}
	/* Variability moves the target, not stability. */
	weft_queue_model m = model(2, 1.5, 2);
	m.service_cv2 = 0;
	m.arrival_cv2 = 0;
	weft_queue_forecast f = forecast(&m);
	ASSERT_EQ(f.min_stable_threads, 4);
	ASSERT_EQ(f.threads_for_target, 4); /* D/D/4 never waits */
	ASSERT_FALSE(f.stable);
}

TEST(threads_for_target_monotone)
{
	const double loads[] = {0.3, 3, 17.5, 250};
	for (size_t i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
		int prev = 0;
		for (double target = 10; target > 1e-6; target /= 1.7) {
			weft_queue_model m = model(loads[i], 1, 1);
			m.wait_target = target;
			weft_queue_forecast f = forecast(&m);
			ASSERT_NEAR(f.wait_target_s, target, 0);
			int c = f.threads_for_target;
			ASSERT_GE(c, f.min_stable_threads);
			ASSERT_GE(c, prev); /* a tighter target never needs fewer threads */
			prev = c;
			/* c meets it, c - 1 does not (or is not stable) */
			m.threads = c;
			ASSERT_TRUE(forecast(&m).wait_s <= target);
			if (c - 1 >= f.min_stable_threads) {
				m.threads = c - 1;
				ASSERT_TRUE(forecast(&m).wait_s > target);
			}
		}
		ASSERT_GT(prev, (int)loads[i]);
	}
}

TEST(time_to_full_and_drain)
{
	/* Growing at 2/3 a second from 100 towards 1000: 900 / (2/3) = 1350 s. */
	weft_queue_model m = model(2, 1.5, 2);
	m.queue_max = 1000;
	m.backlog = 100;
	weft_queue_forecast f = forecast(&m);
	ASSERT_NEAR(f.time_to_full_s, 1350, 1e-6);
	ASSERT_NEAR(f.backlog_after_1h, 2500, 1e-6);
	ASSERT_NEAR(f.wait_now_s, 100 * 1.5 / 2, 1e-12);
	ASSERT_NEAR(f.wait_after_1h_s, 2500 * 1.5 / 2, 1e-6);
	ASSERT_TRUE(isinf(f.drain_s));
	/* Already full. */
	m.backlog = 1000;
	ASSERT_NEAR(forecast(&m).time_to_full_s, 0, 0);
	m.backlog = 5000;
	ASSERT_NEAR(forecast(&m).time_to_full_s, 0, 0);
	/* Saturated (rho = 1): not growing, never full. */
	m = model(2, 1.5, 3);
	m.queue_max = 1000;
	m.backlog = 10;
	f = forecast(&m);
	ASSERT_TRUE(isinf(f.time_to_full_s));
	ASSERT_NEAR(f.backlog_after_1h, 10, 0);
	ASSERT_TRUE(isinf(f.drain_s));

	/* Stable: 1 task/s of 1 s on 2 threads works a backlog off at 1 task/s. */
	m = model(1, 1, 2);
	m.backlog = 100;
	m.queue_max = 1000;
	f = forecast(&m);
	ASSERT_TRUE(f.stable);
	ASSERT_NEAR(f.drain_s, 100, 1e-9);
	ASSERT_TRUE(isinf(f.time_to_full_s));
	ASSERT_NEAR(f.backlog_after_1h, 0, 0);
	ASSERT_NEAR(f.wait_now_s, 100 * 1.0 / 2 + f.wait_s, 1e-12);
	ASSERT_NEAR(f.wait_after_1h_s, f.wait_s, 0);
	/* A backlog longer than an hour is still there after one. */
	m.backlog = 10000;
	f = forecast(&m);
	ASSERT_NEAR(f.drain_s, 10000, 1e-9);
	ASSERT_NEAR(f.backlog_after_1h, 6400, 1e-9);
	/* A stable but full queue is full now. */
	m.queue_max = 10000;
	ASSERT_NEAR(forecast(&m).time_to_full_s, 0, 0);
	/* No backlog, nothing to drain. */
	m.backlog = 0;
	ASSERT_NEAR(forecast(&m).drain_s, 0, 0);
}

TEST(cpu_budget)
{
	/* The article's load, CPU-bound, on 8 threads but 2 CPUs: only 2 threads' worth of
	 * throughput, so still the article's runaway. */
	weft_queue_model m = model(2, 1.5, 8);
	m.cpus = 2;
	m.cpu_fraction = 1;
	weft_queue_forecast f = forecast(&m);
	ASSERT_NEAR(f.cpu_bound_limit, 2, 0);
	ASSERT_NEAR(f.effective_threads, 2, 0);
	ASSERT_NEAR(f.rho, 1.5, 1e-12);
	ASSERT_FALSE(f.stable);
	ASSERT_NEAR(f.growth_per_s, 2.0 / 3, 1e-9);
	ASSERT_EQ(f.min_stable_threads, 4); /* with enough CPUs */
	ASSERT_EQ(f.threads_for_target, 6);
	ASSERT_FALSE(f.budget_allows); /* 6 > 2 */

	/* Half the time on CPU: 4 threads' worth; 4 of the 8 threads carry the load. */
	m.cpu_fraction = 0.5;
	f = forecast(&m);
	ASSERT_NEAR(f.cpu_bound_limit, 4, 0);
	ASSERT_NEAR(f.effective_threads, 4, 0);
	ASSERT_TRUE(f.stable);
	ASSERT_NEAR(f.wait_s, mmc_wait(4, 2, 1.5), 1e-12); /* exactly M/M/4 */
	ASSERT_FALSE(f.budget_allows);                     /* 6 > 4 */

	/* Mostly waiting: the budget allows 20 threads, the pool is its own 8. */
	m.cpu_fraction = 0.1;
	f = forecast(&m);
	ASSERT_NEAR(f.cpu_bound_limit, 20, 1e-12);
	ASSERT_NEAR(f.effective_threads, 8, 0);
	ASSERT_NEAR(f.rho, 3.0 / 8, 1e-12);
	ASSERT_TRUE(f.budget_allows);

	/* Unknown fraction or unknown CPUs: not CPU-bound. */
	m.cpu_fraction = 0;
	ASSERT_TRUE(isinf(forecast(&m).cpu_bound_limit));
	m.cpu_fraction = 1;
	m.cpus = 0;
	f = forecast(&m);
	ASSERT_TRUE(isinf(f.cpu_bound_limit));
	ASSERT_TRUE(f.budget_allows);

	/* A fractional limit: 1.5 CPUs for 4 threads is one thread 1.5 times as fast, so 0.5
	 * tasks/s of 1 s is M/M/1 with S = 1/1.5 s: rho = 1/3, Wq = rho / (1 - rho) * S. */
	m = model(0.5, 1, 4);
	m.cpus = 1.5;
	m.cpu_fraction = 1;
	f = forecast(&m);
	ASSERT_NEAR(f.effective_threads, 1.5, 0);
	ASSERT_NEAR(f.rho, 1.0 / 3, 1e-12);
	ASSERT_TRUE(f.stable);
	ASSERT_NEAR(f.p_wait, 1.0 / 3, 1e-12);
	ASSERT_NEAR(f.wait_s, 0.5 * (1 / 1.5), 1e-12);
	ASSERT_NEAR(f.drain_s, 0, 0);
	/* and 1.5 tasks/s saturates it exactly */
	m.arrival_rate = 1.5;
	f = forecast(&m);
	ASSERT_NEAR(f.rho, 1, 0);
	ASSERT_FALSE(f.stable);
	ASSERT_NEAR(f.growth_per_s, 0, 0);
	/* rho within 1e-9 of 1 is 1, for a fractional limit too: 0.05 * 6 = 0.30000000000000004
	 * on 0.3 CPUs is saturated, not growing by 1e-17 tasks a second. */
	volatile double lambda = 0.05;
	m = model(lambda, 6, 2);
	m.cpus = 0.3;
	m.cpu_fraction = 1;
	ASSERT_TRUE(lambda * 6 / 0.3 != 1.0);
	f = forecast(&m);
	ASSERT_NEAR(f.rho, 1, 0);
	ASSERT_NEAR(f.growth_per_s, 0, 0);
	/* Below one CPU: 0.25 CPUs is a quarter-speed single thread. */
	m = model(0.1, 1, 2);
	m.cpus = 0.25;
	m.cpu_fraction = 1;
	f = forecast(&m);
	ASSERT_NEAR(f.rho, 0.4, 1e-12);
	ASSERT_NEAR(f.wait_s, 0.4 / 0.6 * 4, 1e-9);
}

/* Write a sentinel into *ret, run the call, check -EINVAL and that *ret is untouched. */
static void expect_einval(const weft_queue_model *m, const char *what)
{
	weft_queue_forecast f, orig;
	memset(&f, 0xA5, sizeof(f));
	orig = f;
	int r = weft_queue_forecast_compute(m, &f);
	if (r != -EINVAL)
		FAIL("%s: got %d, want -EINVAL", what, r);
	if (memcmp(&f, &orig, sizeof(f)) != 0)
		FAIL("%s: *ret was written on failure", what);
}

TEST(forecast_arguments)
{
	weft_queue_model ok = model(2, 1.5, 2);
	weft_queue_forecast f;
	ASSERT_ERR(weft_queue_forecast_compute(NULL, &f), -EINVAL);
	ASSERT_ERR(weft_queue_forecast_compute(&ok, NULL), -EINVAL);

	const double bad_positive[] = {0, -1, -0.0, NAN, INFINITY, -INFINITY};
	for (size_t i = 0; i < sizeof(bad_positive) / sizeof(bad_positive[0]); i++) {
		weft_queue_model m = ok;
		m.arrival_rate = bad_positive[i];
		expect_einval(&m, "arrival_rate");
		m = ok;
		m.service_time = bad_positive[i];
		expect_einval(&m, "service_time");
	}
	const int bad_threads[] = {0, -1, INT_MIN, WEFT_QUEUE_THREADS_MAX + 1, INT_MAX};
	for (size_t i = 0; i < sizeof(bad_threads) / sizeof(bad_threads[0]); i++) {
		weft_queue_model m = ok;
		m.threads = bad_threads[i];
		expect_einval(&m, "threads");
	}
	const double bad_cv2[] = {NAN, INFINITY, -INFINITY};
	for (size_t i = 0; i < sizeof(bad_cv2) / sizeof(bad_cv2[0]); i++) {
		weft_queue_model m = ok;
		m.arrival_cv2 = bad_cv2[i];
		expect_einval(&m, "arrival_cv2");
		m = ok;
		m.service_cv2 = bad_cv2[i];
		expect_einval(&m, "service_cv2");
	}
	/* Fields where 0 is allowed (a default or "none") but negative, NaN or infinity is not. */
	const double bad_nonneg[] = {-1, -1e-300, NAN, INFINITY, -INFINITY};
	for (size_t i = 0; i < sizeof(bad_nonneg) / sizeof(bad_nonneg[0]); i++) {
		double v = bad_nonneg[i];
		weft_queue_model m = ok;
		m.wait_target = v;
		expect_einval(&m, "wait_target");
		m = ok;
		m.cpus = v;
		expect_einval(&m, "cpus");
		m = ok;
		m.cpu_fraction = v;
		expect_einval(&m, "cpu_fraction");
		m = ok;
		m.queue_max = v;
		expect_einval(&m, "queue_max");
		m = ok;
		m.backlog = v;
		expect_einval(&m, "backlog");
	}
	weft_queue_model m = ok;
	m.cpu_fraction = 1.0000001;
	expect_einval(&m, "cpu_fraction > 1");

	/* The edges that are valid. */
	m = ok;
	m.threads = WEFT_QUEUE_THREADS_MAX;
	m.cpu_fraction = 1;
	m.cpus = 0;
	m.arrival_cv2 = 0;
	m.service_cv2 = 0;
	ASSERT_OK(weft_queue_forecast_compute(&m, &f));
	ASSERT_TRUE(f.stable);
}

TEST_TIMEOUT(forecast_is_total, 120)
{
	/* Extreme magnitudes in every combination: each output finite or infinite, never NaN. */
	const double mag[] = {DBL_TRUE_MIN, 1e-300, 1e-9, 0.3, 1, 7, 1e9, 1e300, DBL_MAX};
	const int threads[] = {1, 2, 1000, WEFT_QUEUE_THREADS_MAX};
	const double cv2[] = {0, 1, 1e300};
	const double frac[] = {0, 1e-300, 0.5, 1};
	const double counts[] = {0, 5, DBL_MAX};
	size_t n = sizeof(mag) / sizeof(mag[0]);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			for (size_t k = 0; k < 4; k++)
				for (size_t v = 0; v < 3; v++)
					for (size_t q = 0; q < 4; q++)
						for (size_t b = 0; b < 3; b++) {
							weft_queue_model m =
							        model(mag[i], mag[j], threads[k]);
							m.arrival_cv2 = cv2[v];
							m.service_cv2 = cv2[(v + b) % 3];
							m.cpus = mag[(i + j + q) % n];
							m.cpu_fraction = frac[q];
							m.backlog = counts[b];
							m.queue_max = counts[(b + q) % 3];
							m.wait_target = mag[(j + b) % n];
							weft_queue_forecast f = forecast(&m);
							assert_no_nan(&f);
						}
}

/* ------------------------------------------------------------------------------------------------
 * The simulation.
 */

static weft_queue_sim_result simulate(double lambda, double s, int c, double ca2, double cs2,
                                      uint64_t tasks, uint64_t seed)
{
	weft_queue_sim sim = {
	        .arrival_rate = lambda,
	        .service_time = s,
	        .threads = c,
	        .arrival_cv2 = ca2,
	        .service_cv2 = cs2,
	        .tasks = tasks,
	        .seed = seed,
	};
	weft_queue_sim_result r;
	ASSERT_OK(weft_queue_simulate(&sim, &r));
	ASSERT_UEQ(r.arrivals, tasks ? tasks : WEFT_QUEUE_SIM_TASKS_DEFAULT);
	ASSERT_TRUE(r.completed <= r.started && r.started <= r.arrivals);
	ASSERT_UEQ(r.arrivals - r.started, r.queue_final);
	return r;
}

static void near_rel(double got, double want, double rel, const char *what)
{
	if (!(fabs(got - want) <= rel * want))
		FAIL("%s: simulated %.6g, formula %.6g (more than %.0f %% apart)", what, got, want,
		     rel * 100);
}

TEST_TIMEOUT(sim_mm1_and_mm2, 60)
{
	/* rho = 0.7 with 500k tasks: within 10 % of the formulas. */
	weft_queue_sim_result r = simulate(0.7, 1, 1, 1, 1, 500000, 1);
	near_rel(r.wait_s, 0.7 / 0.3, 0.10, "M/M/1 mean wait");
	near_rel(r.rho, 0.7, 0.02, "M/M/1 rho");
	near_rel(r.busy_fraction, 0.7, 0.02, "M/M/1 busy fraction");
	near_rel(r.p_wait, 0.7, 0.03, "M/M/1 P(wait)");
	near_rel(r.throughput, 0.7, 0.02, "M/M/1 throughput");
	near_rel(r.queue_mean, 0.7 * 0.7 / 0.3, 0.10, "M/M/1 Lq"); /* Little: lambda Wq */
	/* P(W > t) = rho e^-(mu - lambda) t: the median 1.12 s, the 99th percentile 14.2 s. */
	near_rel(r.wait_p50_s, log(0.7 / 0.5) / 0.3, 0.10, "M/M/1 p50 wait");
	near_rel(r.wait_p99_s, log(0.7 / 0.01) / 0.3, 0.10, "M/M/1 p99 wait");
	ASSERT_TRUE(r.wait_max_s >= r.wait_p99_s);
	ASSERT_TRUE(fabs(r.growth_per_s) < 1e-3);

	r = simulate(1.4, 1, 2, 1, 1, 500000, 2);
	weft_queue_model m = model(1.4, 1, 2);
	weft_queue_forecast f = forecast(&m);
	near_rel(r.wait_s, f.wait_s, 0.10, "M/M/2 mean wait");
	near_rel(r.p_wait, f.p_wait, 0.05, "M/M/2 P(wait)");
	near_rel(r.rho, 0.7, 0.02, "M/M/2 rho");

	/* Many threads, where the order of completions matters: M/M/8 at rho 0.9. */
	r = simulate(7.2, 1, 8, 1, 1, 500000, 3);
	m = model(7.2, 1, 8);
	f = forecast(&m);
	near_rel(r.wait_s, f.wait_s, 0.10, "M/M/8 mean wait");
	near_rel(r.p_wait, f.p_wait, 0.05, "M/M/8 P(wait)");
	near_rel(r.busy_fraction, 0.9, 0.02, "M/M/8 busy fraction");
}

TEST_TIMEOUT(sim_distributions, 60)
{
	/* M/G/1, Pollaczek-Khinchine (exact): Wq = rho / (1 - rho) * S * (1 + cs2) / 2. Checks
	 * the second moment of each service distribution. */
	const double cs2[] = {0, 0.25, 0.5, 2, 4};
	for (size_t i = 0; i < sizeof(cs2) / sizeof(cs2[0]); i++) {
		weft_queue_sim_result r = simulate(0.6, 1, 1, 1, cs2[i], 500000, 10 + i);
		char what[64];
		snprintf(what, sizeof(what), "M/G/1 wait, cs2 %g", cs2[i]);
		near_rel(r.wait_s, 0.6 / 0.4 * (1 + cs2[i]) / 2, 0.10, what);
		near_rel(r.rho, 0.6, 0.03, "M/G/1 rho"); /* the mean is right */
	}
	/* D/M/1, exact: Wq = sigma / (1 - sigma) * S with sigma = e^(-(1 - sigma) / rho). */
	double sigma = 0.5;
	for (int i = 0; i < 200; i++)
		sigma = exp(-(1 - sigma) / 0.7);
	weft_queue_sim_result r = simulate(0.7, 1, 1, 0, 1, 500000, 3);
	near_rel(r.wait_s, sigma / (1 - sigma), 0.10, "D/M/1 wait");
	/* D/D/1 below saturation never waits. */
	r = simulate(0.5, 1, 1, 0, 0, 10000, 4);
	ASSERT_NEAR(r.wait_s, 0, 0);
	ASSERT_NEAR(r.p_wait, 0, 0);
	ASSERT_UEQ(r.queue_final, 0);
	ASSERT_NEAR(r.rho, 0.5, 1e-9);
	ASSERT_NEAR(r.busy_fraction, 0.5, 1e-3);
	/* D/D/2 exactly saturated: each completion comes at the instant of an arrival and goes
	 * first, so nobody ever waits or queues. */
	r = simulate(2, 1, 2, 0, 0, 10000, 5);
	ASSERT_NEAR(r.wait_max_s, 0, 0);
	ASSERT_NEAR(r.queue_mean, 0, 0);
	ASSERT_UEQ(r.queue_final, 0);
	ASSERT_NEAR(r.growth_per_s, 0, 0);
	ASSERT_NEAR(r.busy_fraction, 1, 1e-3);
}

TEST_TIMEOUT(sim_article_case_grows, 60)
{
	weft_queue_sim_result r = simulate(2, 1.5, 2, 1, 1, 0, 1);
	ASSERT_UEQ(r.arrivals, WEFT_QUEUE_SIM_TASKS_DEFAULT);
	near_rel(r.growth_per_s, 2.0 / 3, 0.03, "article growth");
	near_rel(r.rho, 1.5, 0.02, "article rho");
	ASSERT_TRUE(r.busy_fraction > 0.999); /* the busy fraction saturates at 1 */
	near_rel(r.throughput, 4.0 / 3, 0.02, "article throughput");
	/* The queue at the end is the growth times the duration. */
	near_rel((double)r.queue_final, 2.0 / 3 * r.duration_s, 0.03, "article final queue");
	ASSERT_TRUE(r.p_wait > 0.99);
}

TEST(sim_is_deterministic)
{
	weft_queue_sim_result a = simulate(1.8, 1, 2, 2, 0.5, 20000, 42);
	weft_queue_sim_result b = simulate(1.8, 1, 2, 2, 0.5, 20000, 42);
	ASSERT_TRUE(memcmp(&a, &b, sizeof(a)) == 0);
	weft_queue_sim_result c = simulate(1.8, 1, 2, 2, 0.5, 20000, 43);
	ASSERT_TRUE(a.wait_s != c.wait_s);
	/* seed 0 is a seed like any other */
	weft_queue_sim_result z = simulate(1.8, 1, 2, 1, 1, 20000, 0);
	ASSERT_TRUE(z.wait_s > 0 && isfinite(z.wait_s));
}

static void expect_sim_einval(const weft_queue_sim *sim, const char *what)
{
	weft_queue_sim_result r, orig;
	memset(&r, 0x5A, sizeof(r));
	orig = r;
	int e = weft_queue_simulate(sim, &r);
	if (e != -EINVAL)
		FAIL("%s: got %d, want -EINVAL", what, e);
	if (memcmp(&r, &orig, sizeof(r)) != 0)
		FAIL("%s: *ret was written on failure", what);
}

TEST(sim_arguments)
{
	const weft_queue_sim ok = {
	        .arrival_rate = 1, .service_time = 0.5, .threads = 1, .tasks = 100};
	weft_queue_sim_result r;
	ASSERT_ERR(weft_queue_simulate(NULL, &r), -EINVAL);
	ASSERT_ERR(weft_queue_simulate(&ok, NULL), -EINVAL);
	const double bad_rate[] = {0, -1, 1e-10, 1e10, NAN, INFINITY};
	for (size_t i = 0; i < sizeof(bad_rate) / sizeof(bad_rate[0]); i++) {
		weft_queue_sim s = ok;
		s.arrival_rate = bad_rate[i];
		expect_sim_einval(&s, "arrival_rate");
		s = ok;
		s.service_time = bad_rate[i];
		expect_sim_einval(&s, "service_time");
	}
	const int bad_threads[] = {0, -5, WEFT_QUEUE_THREADS_MAX + 1};
	for (size_t i = 0; i < sizeof(bad_threads) / sizeof(bad_threads[0]); i++) {
		weft_queue_sim s = ok;
		s.threads = bad_threads[i];
		expect_sim_einval(&s, "threads");
	}
	const double bad_cv2[] = {NAN, INFINITY, -INFINITY, 1e4 + 1};
	for (size_t i = 0; i < sizeof(bad_cv2) / sizeof(bad_cv2[0]); i++) {
		weft_queue_sim s = ok;
		s.arrival_cv2 = bad_cv2[i];
		expect_sim_einval(&s, "arrival_cv2");
		s = ok;
		s.service_cv2 = bad_cv2[i];
		expect_sim_einval(&s, "service_cv2");
	}
	weft_queue_sim s = ok;
	s.tasks = WEFT_QUEUE_SIM_TASKS_MAX + 1;
	expect_sim_einval(&s, "tasks");
	/* The edges that are valid: negative cv2 means 1, the largest cv2, many threads. */
	s = ok;
	s.arrival_cv2 = -1;
	s.service_cv2 = 1e4;
	s.threads = WEFT_QUEUE_THREADS_MAX;
	s.arrival_rate = 1e-9;
	ASSERT_OK(weft_queue_simulate(&s, &r));
	ASSERT_UEQ(r.arrivals, 100);
	ASSERT_NEAR(r.wait_s, 0, 0); /* a thread for every task */
}

TEST(sim_under_allocation_faults)
{
	/* Unstable, so the queue outgrows its first ring (1024) and is copied to a larger one:
	 * every allocation (heap, histogram, ring, ring growth) fails once in turn. */
	const weft_queue_sim sim = {.arrival_rate = 2,
	                            .service_time = 1.5,
	                            .threads = 2,
	                            .arrival_cv2 = 1,
	                            .service_cv2 = 1,
	                            .tasks = 12000,
	                            .seed = 5};
	for (long n = 1;; n++) {
		weft_queue_sim_result r, orig;
		memset(&r, 0x33, sizeof(r));
		orig = r;
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int e = weft_queue_simulate(&sim, &r);
		long injected = weft__fault_injected(WEFT__FAULT_ALLOC);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (e == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_GE(n, 5); /* heap, histogram, ring, and at least two growths */
			ASSERT_TRUE(r.queue_final > 2048);
			break;
		}
		ASSERT_ERR(e, -ENOMEM);
		ASSERT_EQ(injected, 1);
		ASSERT_TRUE(memcmp(&r, &orig, sizeof(r)) == 0);
		ASSERT_LT(n, 100);
	}
}

TEST(nothing_sets_errno)
{
	errno = 1234;
	weft_queue_model m = model(2, 1.5, 2);
	weft_queue_forecast f = forecast(&m);
	(void)f;
	(void)weft_erlang_c(100, 99.5);
	(void)simulate(2, 1.5, 2, 4, 0.3, 5000, 9);
	ASSERT_EQ(errno, 1234);
}
