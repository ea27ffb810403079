/* test-ewma.c: EWMAs with irregular ticks and the event rate estimator, on fake time (every `now`
 * is passed explicitly; nothing sleeps). */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>

#include "harness.h"

#define TAU WEFT_SEC(1)

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rng(void)
{
	return th_rng(&rng_state);
}

/* A tick spacing in [lo, hi] ns. */
static int64_t rng_dt(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

TEST(ewma_invalid_arguments)
{
	weft_ewma e;
	ASSERT_ERR(weft_ewma_init(NULL, TAU), -EINVAL);
	ASSERT_ERR(weft_ewma_init(&e, 0), -EINVAL);
	ASSERT_ERR(weft_ewma_init(&e, -5), -EINVAL);
	ASSERT_ERR(weft_ewma_init(&e, INT64_MIN), -EINVAL);
	ASSERT_OK(weft_ewma_init(&e, 1));
	ASSERT_OK(weft_ewma_init(&e, INT64_MAX));
	/* NULL: nothing happens, readers say 0 / not ready */
	weft_ewma_update(NULL, 1.0, 0);
	ASSERT_NEAR(weft_ewma_value(NULL), 0, 0);
	ASSERT_FALSE(weft_ewma_ready(NULL));
	/* zeroed storage that was never initialised ignores updates */
	weft_ewma z = {{0}};
	weft_ewma_update(&z, 3.0, 10);
	ASSERT_FALSE(weft_ewma_ready(&z));
	ASSERT_NEAR(weft_ewma_value(&z), 0, 0);
}

TEST(ewma_first_sample_sets_the_value)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, TAU));
	ASSERT_FALSE(weft_ewma_ready(&e));
	ASSERT_NEAR(weft_ewma_value(&e), 0, 0);
	weft_ewma_update(&e, 42.5, WEFT_SEC(100));
	ASSERT_TRUE(weft_ewma_ready(&e));
	ASSERT_NEAR(weft_ewma_value(&e), 42.5, 0);
	/* init again starts over */
	ASSERT_OK(weft_ewma_init(&e, TAU));
	ASSERT_FALSE(weft_ewma_ready(&e));
	weft_ewma_update(&e, -7, 0);
	ASSERT_NEAR(weft_ewma_value(&e), -7, 0);
}

TEST(ewma_constant_input_converges)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, WEFT_MSEC(100)));
	weft_ewma_update(&e, 1000, 0);
	int64_t t = 0;
	while (t < WEFT_SEC(5)) {
		t += rng_dt(WEFT_USEC(100), WEFT_MSEC(20));
		weft_ewma_update(&e, 5.0, t);
	}
	/* 50 time constants: e^-50 * 995 is far below 1e-9 */
	ASSERT_NEAR(weft_ewma_value(&e), 5.0, 1e-9);
	/* and a constant from the start never moves */
	ASSERT_OK(weft_ewma_init(&e, TAU));
	for (int i = 0; i < 1000; i++) {
		weft_ewma_update(&e, 3.25, (int64_t)i * WEFT_MSEC(7));
		ASSERT_NEAR(weft_ewma_value(&e), 3.25, 1e-12);
	}
}

TEST(ewma_step_has_time_constant_tau_in_one_tick)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, TAU));
	weft_ewma_update(&e, 0, WEFT_SEC(10));
	weft_ewma_update(&e, 1, WEFT_SEC(10) + TAU);
	ASSERT_NEAR(weft_ewma_value(&e), 1 - exp(-1), 1e-9);
	/* a step of 200 from 100 moves 1 - 1/e of 200 */
	ASSERT_OK(weft_ewma_init(&e, WEFT_MSEC(250)));
	weft_ewma_update(&e, 100, 0);
	weft_ewma_update(&e, 300, WEFT_MSEC(250));
	ASSERT_NEAR(weft_ewma_value(&e), 100 + 200 * (1 - exp(-1)), 1e-9);
	/* two time constants in one tick */
	weft_ewma_update(&e, 300, WEFT_MSEC(750));
	ASSERT_NEAR(weft_ewma_value(&e), 300 - 200 * exp(-3), 1e-9);
}

/* Feed a step 0 -> 1 at t = 0 through irregular ticks of [lo, hi] ns until t = TAU exactly. */
static double step_through_ticks(int64_t lo, int64_t hi)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, TAU));
	weft_ewma_update(&e, 0, 0);
	int64_t t = 0;
	while (t < TAU) {
		int64_t dt = rng_dt(lo, hi);
		t = dt > TAU - t ? TAU : t + dt;
		weft_ewma_update(&e, 1, t);
	}
	return weft_ewma_value(&e);
}

TEST(ewma_step_does_not_depend_on_tick_spacing)
{
	double want = 1 - exp(-1);
	double a = step_through_ticks(1, WEFT_MSEC(2));
	double b = step_through_ticks(WEFT_USEC(10), WEFT_USEC(300));
	double c = step_through_ticks(WEFT_MSEC(50), WEFT_MSEC(300));
	ASSERT_NEAR(a, want, 1e-9);
	ASSERT_NEAR(b, want, 1e-9);
	ASSERT_NEAR(c, want, 1e-9);

	/* A smooth input sampled at the tick times: the spacing changes the result only by the
	 * sampling error, O(dt / tau). */
	double v[2];
	for (int k = 0; k < 2; k++) {
		weft_ewma e;
		ASSERT_OK(weft_ewma_init(&e, TAU));
		int64_t t = 0;
		weft_ewma_update(&e, 0, 0);
		while (t < 3 * TAU) {
			t += k == 0 ? rng_dt(WEFT_USEC(50), WEFT_USEC(500))
			            : rng_dt(WEFT_USEC(500), WEFT_MSEC(3));
			weft_ewma_update(&e, sin(2 * M_PI * (double)t / (3.0 * (double)TAU)), t);
		}
		v[k] = weft_ewma_value(&e);
	}
	ASSERT_NEAR(v[0], v[1], 5e-3);
	ASSERT_TRUE(fabs(v[0]) > 0.05); /* it did follow the input somewhere */
}

TEST(ewma_time_going_back_counts_as_zero_dt)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, TAU));
	weft_ewma_update(&e, 10, WEFT_SEC(5));
	weft_ewma_update(&e, 1000, WEFT_SEC(4)); /* earlier: no weight */
	ASSERT_NEAR(weft_ewma_value(&e), 10, 0);
	weft_ewma_update(&e, 1000, WEFT_SEC(5)); /* same time: no weight */
	ASSERT_NEAR(weft_ewma_value(&e), 10, 0);
	/* the next dt is measured from 5 s, not from 4 s */
	weft_ewma_update(&e, 20, WEFT_SEC(5) + TAU);
	ASSERT_NEAR(weft_ewma_value(&e), 10 + 10 * (1 - exp(-1)), 1e-9);
	/* the whole int64 range: dt saturates, no overflow (UBSan watches), weight 1 */
	ASSERT_OK(weft_ewma_init(&e, TAU));
	weft_ewma_update(&e, 1, INT64_MIN);
	weft_ewma_update(&e, 2, INT64_MAX);
	ASSERT_NEAR(weft_ewma_value(&e), 2, 0);
}

TEST(ewma_ignores_non_finite_samples)
{
	weft_ewma e;
	ASSERT_OK(weft_ewma_init(&e, TAU));
	weft_ewma_update(&e, NAN, 0);
	ASSERT_FALSE(weft_ewma_ready(&e));
	weft_ewma_update(&e, 4, 0);
	weft_ewma_update(&e, INFINITY, TAU);
	weft_ewma_update(&e, -INFINITY, 2 * TAU);
	weft_ewma_update(&e, NAN, 3 * TAU);
	ASSERT_NEAR(weft_ewma_value(&e), 4, 0);
	/* the ignored samples did not advance the clock either */
	weft_ewma_update(&e, 5, TAU);
	ASSERT_NEAR(weft_ewma_value(&e), 4 + (1 - exp(-1)), 1e-9);
}

TEST(rate_invalid_arguments)
{
	weft_rate r;
	ASSERT_ERR(weft_rate_init(NULL, TAU, 0), -EINVAL);
	ASSERT_ERR(weft_rate_init(&r, 0, 0), -EINVAL);
	ASSERT_ERR(weft_rate_init(&r, -TAU, 0), -EINVAL);
	ASSERT_OK(weft_rate_init(&r, TAU, -5)); /* any `now` is fine */
	weft_rate_add(NULL, 5);
	ASSERT_NEAR(weft_rate_tick(NULL, TAU), 0, 0);
	ASSERT_NEAR(weft_rate_value(NULL), 0, 0);
	ASSERT_UEQ(weft_rate_total(NULL), 0);
	/* zeroed storage that was never initialised: ticks do nothing */
	weft_rate z = {{0}};
	weft_rate_add(&z, 3);
	ASSERT_NEAR(weft_rate_tick(&z, TAU), 0, 0);
	ASSERT_NEAR(weft_rate_value(&z), 0, 0);
}

TEST(rate_thousand_events_in_one_second)
{
	weft_rate r;
	int64_t t0 = WEFT_SEC(1000);
	ASSERT_OK(weft_rate_init(&r, TAU, t0));
	ASSERT_NEAR(weft_rate_value(&r), 0, 0);
	for (int i = 0; i < 1000; i++)
		weft_rate_add(&r, 1);
	ASSERT_UEQ(weft_rate_total(&r), 1000);
	/* the first tick's interval rate becomes the estimate */
	ASSERT_NEAR(weft_rate_tick(&r, t0 + WEFT_SEC(1)), 1000, 1e-9);
	ASSERT_NEAR(weft_rate_value(&r), 1000, 1e-9);
	/* 0.5 s later with 250 more: 250 / 0.5 s = 500/s, folded in with alpha = 1 - e^-0.5 */
	weft_rate_add(&r, 250);
	double want = 1000 + (500 - 1000) * (1 - exp(-0.5));
	ASSERT_NEAR(weft_rate_tick(&r, t0 + WEFT_MSEC(1500)), want, 1e-9);
	ASSERT_UEQ(weft_rate_total(&r), 1250);

	/* first interval of half a second with 50 events: 100/s */
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	weft_rate_add(&r, 50);
	ASSERT_NEAR(weft_rate_tick(&r, WEFT_MSEC(500)), 100, 1e-9);
}

TEST(rate_zero_dt_keeps_events_for_the_next_tick)
{
	weft_rate r;
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	weft_rate_add(&r, 100);
	ASSERT_NEAR(weft_rate_tick(&r, TAU), 100, 1e-9);
	weft_rate_add(&r, 500);
	ASSERT_NEAR(weft_rate_tick(&r, TAU), 100, 0);     /* dt == 0: unchanged */
	ASSERT_NEAR(weft_rate_tick(&r, TAU / 2), 100, 0); /* dt < 0: unchanged */
	/* the 500 events count in the next interval, measured from the last real tick */
	double want = 100 + (500 - 100) * (1 - exp(-1));
	ASSERT_NEAR(weft_rate_tick(&r, 2 * TAU), want, 1e-9);
	ASSERT_UEQ(weft_rate_total(&r), 600);
	/* a tick at init time does not fix the first estimate */
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	weft_rate_add(&r, 10);
	ASSERT_NEAR(weft_rate_tick(&r, 0), 0, 0);
	ASSERT_NEAR(weft_rate_tick(&r, TAU), 10, 1e-9);
}

TEST(rate_constant_rate_with_irregular_ticks)
{
	weft_rate r;
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	/* one event per ms (1000/s), ticks every 1..40 ms */
	int64_t t = 0;
	for (int i = 0; i < 2000; i++) {
		int64_t ms = rng_dt(1, 40);
		weft_rate_add(&r, (uint64_t)ms);
		t += WEFT_MSEC(ms);
		ASSERT_NEAR(weft_rate_tick(&r, t), 1000, 1e-6);
	}
	ASSERT_UEQ(weft_rate_total(&r), (uint64_t)(t / WEFT_MSEC(1)));
}

/* Rate 0 until t = 1 s, then 1000/s until 1 s + tau, ticked every [lo, hi] ms. */
static double rate_step(int64_t lo_ms, int64_t hi_ms)
{
	weft_rate r;
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	weft_rate_tick(&r, WEFT_SEC(1)); /* first estimate: 0/s */
	int64_t t = WEFT_SEC(1), end = WEFT_SEC(1) + TAU;
	while (t < end) {
		int64_t ms = rng_dt(lo_ms, hi_ms);
		if (t + WEFT_MSEC(ms) > end)
			ms = (end - t) / WEFT_MSEC(1);
		weft_rate_add(&r, (uint64_t)ms);
		t += WEFT_MSEC(ms);
		weft_rate_tick(&r, t);
	}
	return weft_rate_value(&r);
}

TEST(rate_step_with_irregular_ticks)
{
	double want = 1000 * (1 - exp(-1));
	ASSERT_NEAR(rate_step(1000, 1000), want, 1e-9); /* one tick */
	ASSERT_NEAR(rate_step(1, 5), want, 1e-6);
	ASSERT_NEAR(rate_step(1, 100), want, 1e-6);
	ASSERT_NEAR(rate_step(100, 400), want, 1e-6);
}

#define NADDERS 4
#define ADDS 200000

static void *adder(void *p)
{
	weft_rate *r = p;
	for (int i = 0; i < ADDS; i++)
		weft_rate_add(r, (uint64_t)(i % 3) + 1);
	return NULL;
}

TEST_TIMEOUT(rate_concurrent_adds_are_exact, 60)
{
	weft_rate r;
	ASSERT_OK(weft_rate_init(&r, TAU, 0));
	pthread_t t[NADDERS];
	for (int i = 0; i < NADDERS; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, adder, &r), 0);
	/* the one ticker runs while they add; readers of value/total are allowed meanwhile */
	int64_t now = 0;
	for (int k = 0; k < 2000; k++) {
		now += WEFT_MSEC(1);
		double v = weft_rate_tick(&r, now);
		ASSERT_TRUE(v >= 0 && isfinite(v));
		ASSERT_LE(weft_rate_total(&r), (uint64_t)NADDERS * ADDS * 3);
	}
	for (int i = 0; i < NADDERS; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	uint64_t want = 0;
	for (int i = 0; i < ADDS; i++)
		want += (uint64_t)(i % 3) + 1;
	want *= NADDERS;
	ASSERT_UEQ(weft_rate_total(&r), want);
	/* after the adders stop, the estimate decays towards 0 */
	double before = weft_rate_tick(&r, now + WEFT_MSEC(1));
	double after = weft_rate_tick(&r, now + 20 * TAU);
	ASSERT_TRUE(after < before || before == 0);
	ASSERT_NEAR(after, 0, before * 1e-8 + 1e-9);
}
