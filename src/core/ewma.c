/* ewma.c: exponentially weighted moving averages fed at irregular times, and event rate
 * estimators built on them.
 *
 * EWMA. A sample observed dt ns after the previous update gets the weight
 *
 *     alpha = 1 - exp(-dt / tau)        (computed as -expm1(-dt / tau), exact for small dt)
 *     value = value + alpha * (sample - value)
 *
 * so the old value decays by exp(-dt / tau) whatever the tick spacing: feeding a constant x for a
 * total time T in one tick or in many leaves the same value x + (v0 - x) * exp(-T / tau). The first
 * sample sets the value. A `now` before the last update counts as dt = 0 (the sample gets no
 * weight, and the clock of the estimator never goes back); dt saturates at INT64_MAX. A sample that
 * is NaN or infinite is ignored, so one bad input cannot poison the estimate forever.
 *
 * Rate. weft_rate_add is one relaxed fetch_add on `events` from any thread. weft_rate_tick (one
 * thread at a time) takes events - seen as the events of [last, now], turns them into the
 * instantaneous rate events * 1e9 / dt per second, and folds that into the EWMA with the alpha
 * above. The first tick after init makes that first interval's rate the estimate. A tick with
 * dt <= 0 returns the estimate unchanged and leaves the events for the next tick. Counters are
 * unsigned and subtract modulo 2^64, so even a wrapped event counter gives the right difference.
 *
 * Storage. Both live in caller storage (weft_ewma.opaque_[4], weft_rate.opaque_[6]) reinterpreted
 * as the structs below; _Static_asserts check size and alignment (the project builds with
 * -fno-strict-aliasing). A zeroed struct that was never initialised has tau == 0: updates and ticks
 * on it do nothing and the readers return 0.
 *
 * Concurrency. `value` and `ready` are atomics (the double's bits in a uint64_t) so that
 * weft_ewma_value, weft_ewma_ready, weft_rate_value and weft_rate_total may be called from any
 * thread while the single updater runs; a reader sees the value before or after an update, never
 * a torn one. The first update (1) stores value, then (2) stores ready = 1 with release; a reader
 * that (3) loads ready = 1 with acquire then sees that value or a later one. Everything else (tau,
 * last, seen) belongs to the one updater (weft_ewma_update's caller, weft_rate_tick's caller).
 * NULL: the void functions do nothing, the readers return 0 / false, init returns -EINVAL.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "../internal/common.h"

#define RELAXED memory_order_relaxed

struct ewma {
	_Atomic uint64_t value; /* bits of a double */
	_Atomic uint64_t ready; /* 1 once a sample was folded in */
	int64_t tau;            /* ns, > 0 once initialised */
	int64_t last;           /* time of the latest update (never decreases) */
};

struct rate {
	_Atomic uint64_t events; /* events since init, any thread adds */
	_Atomic uint64_t value;  /* bits of a double: the estimate in events per second */
	_Atomic uint64_t ready;  /* 1 once a tick folded in an interval */
	uint64_t seen;           /* events as of the last tick (the ticker's) */
	int64_t tau;             /* ns, > 0 once initialised */
	int64_t last;            /* time of the last tick (or of init) */
};

_Static_assert(sizeof(struct ewma) <= sizeof(weft_ewma), "struct ewma fits in weft_ewma");
_Static_assert(_Alignof(struct ewma) <= _Alignof(weft_ewma), "struct ewma is aligned by it");
_Static_assert(sizeof(struct rate) <= sizeof(weft_rate), "struct rate fits in weft_rate");
_Static_assert(_Alignof(struct rate) <= _Alignof(weft_rate), "struct rate is aligned by it");
_Static_assert(_Alignof(weft_ewma) <= 8 && _Alignof(weft_rate) <= 8, "storage alignment <= 8");

/* now - last, 0 if now <= last, saturating at INT64_MAX. */
static int64_t elapsed(int64_t last, int64_t now)
{
	int64_t d;
	if (now <= last)
		return 0;
	if (__builtin_sub_overflow(now, last, &d))
		return INT64_MAX;
	return d;
}

/* The EWMA step: `old` moved towards `sample` by 1 - exp(-dt / tau). */
static double fold(double old, double sample, int64_t dt, int64_t tau)
{
	double alpha = -expm1(-(double)dt / (double)tau);
	return old + alpha * (sample - old);
}

/* --- EWMA ------------------------------------------------------------------------------------ */

WEFT_API int weft_ewma_init(weft_ewma *e, int64_t tau)
{
	if (!e || tau <= 0)
		return -EINVAL;
	struct ewma *s = (struct ewma *)e;
	atomic_store_explicit(&s->value, weft__dbits(0), RELAXED);
	atomic_store_explicit(&s->ready, 0, RELAXED);
	s->tau = tau;
	s->last = 0;
	return 0;
}

WEFT_API void weft_ewma_update(weft_ewma *e, double sample, int64_t now)
{
	if (!e || !isfinite(sample))
		return;
	struct ewma *s = (struct ewma *)e;
	if (s->tau <= 0) /* never initialised */
		return;
	if (!atomic_load_explicit(&s->ready, RELAXED)) {
		s->last = now;
		atomic_store_explicit(&s->value, weft__dbits(sample), RELAXED);
		atomic_store_explicit(&s->ready, 1, memory_order_release);
		return;
	}
	int64_t dt = elapsed(s->last, now);
	if (dt == 0)
		return; /* alpha = 0: the value stays */
	double v = fold(weft__bitsd(atomic_load_explicit(&s->value, RELAXED)), sample, dt, s->tau);
	atomic_store_explicit(&s->value, weft__dbits(v), RELAXED);
	s->last = now;
}

WEFT_API double weft_ewma_value(const weft_ewma *e)
{
	if (!e)
		return 0;
	struct ewma *s = (struct ewma *)e;
	return weft__bitsd(atomic_load_explicit(&s->value, RELAXED));
}

WEFT_API bool weft_ewma_ready(const weft_ewma *e)
{
	if (!e)
		return false;
	struct ewma *s = (struct ewma *)e;
	return atomic_load_explicit(&s->ready, memory_order_acquire) != 0;
}

/* --- rate ------------------------------------------------------------------------------------ */

WEFT_API int weft_rate_init(weft_rate *r, int64_t tau, int64_t now)
{
	if (!r || tau <= 0)
		return -EINVAL;
	struct rate *s = (struct rate *)r;
	atomic_store_explicit(&s->events, 0, RELAXED);
	atomic_store_explicit(&s->value, weft__dbits(0), RELAXED);
	atomic_store_explicit(&s->ready, 0, RELAXED);
	s->seen = 0;
	s->tau = tau;
	s->last = now;
	return 0;
}

WEFT_API void weft_rate_add(weft_rate *r, uint64_t n)
{
	if (!r)
		return;
	struct rate *s = (struct rate *)r;
	atomic_fetch_add_explicit(&s->events, n, RELAXED);
}

WEFT_API double weft_rate_tick(weft_rate *r, int64_t now)
{
	if (!r)
		return 0;
	struct rate *s = (struct rate *)r;
	if (s->tau <= 0)
		return 0;
	double old = weft__bitsd(atomic_load_explicit(&s->value, RELAXED));
	int64_t dt = elapsed(s->last, now);
	if (dt == 0)
		return old; /* the events stay counted for the next tick */
	uint64_t total = atomic_load_explicit(&s->events, RELAXED);
	double inst = (double)(total - s->seen) * 1e9 / (double)dt;
	double v = atomic_load_explicit(&s->ready, RELAXED) ? fold(old, inst, dt, s->tau) : inst;
	s->seen = total;
	s->last = now;
	atomic_store_explicit(&s->value, weft__dbits(v), RELAXED);
	atomic_store_explicit(&s->ready, 1, memory_order_release);
	return v;
}

WEFT_API double weft_rate_value(const weft_rate *r)
{
	if (!r)
		return 0;
	struct rate *s = (struct rate *)r;
	return weft__bitsd(atomic_load_explicit(&s->value, RELAXED));
}

WEFT_API uint64_t weft_rate_total(const weft_rate *r)
{
	if (!r)
		return 0;
	struct rate *s = (struct rate *)r;
	return atomic_load_explicit(&s->events, RELAXED);
}
