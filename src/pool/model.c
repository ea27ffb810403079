/* model.c: the queueing model behind the pool's forecast and `weft sim`: a G/G/c queue in closed
 * form (Erlang C with the Allen-Cunneen correction), and a discrete-event simulation of the same
 * queue to check it against.
 *
 * Notation. lambda = arrival_rate (tasks/s), S = service_time (s per task on one thread), c =
 * threads, ca2 / cs2 = squared coefficients of variation of inter-arrival and service times.
 *
 * The forecast (weft_queue_forecast_compute), every formula:
 *
 *   a     = lambda * S                        offered load in Erlangs (busy threads needed)
 *   L     = cpus / cpu_fraction               the CPU-bound limit, when cpus > 0 and
 *                                             cpu_fraction > 0, else INFINITY: a task that spends
 *                                             a fraction f of its time on CPU keeps f of a CPU
 *                                             busy, so past L threads the CPUs, not the threads,
 *                                             bound the throughput
 *   ce    = min(c, L)                         effective threads: the pool finishes ce / S tasks
 *                                             per second at most
 *   rho   = a / ce                            stable iff rho < 1
 *   growth = lambda - ce / S                  when unstable (0 at rho = 1 exactly), else 0
 *
 * Floating point at exact integers: lambda * S is rounded (0.1 * 30 = 3.0000000000000004, and 0.7
 * * (3 / 0.7) may come out as 2.9999999999999996), and the answer flips at the integers (a = 3
 * needs 4 threads; a hair below 3 would be called stable on 3 with an unbounded wait). So a within
 * 1e-9 (relative) of an integer is taken as that integer, and rho within 1e-9 of 1 as 1 (for a
 * fractional ce). rho = 1 is unstable: the queue then does not grow linearly but wanders without
 * bound (growth 0, wait INFINITY).
 *
 * Erlang C, the probability that an arrival waits in M/M/c, from the Erlang B recurrence
 *
 *   B(0) = 1,  B(k) = a B(k-1) / (k + a B(k-1)),  C(c, a) = B(c) / (1 - rho (1 - B(c)))
 *
 * with rho = a / c < 1 (C = 1 when a >= c). Every B(k) is in [0, 1] and each step is a
 * contraction, so it neither overflows (the textbook sum of a^k / k! overflows near c = 170) nor
 * loses precision for any c. B falls super-exponentially once k > a; when it drops below DBL_MIN
 * it is taken as 0 (C < 1e-298 there, and C = 0 from then on) and the loop stops, so a call costs
 * at most min(c, a + 40 sqrt(a) + 300) steps (measured: a + 37.5 sqrt(a) for large a, 171 steps
 * for a = 1). Letting B go subnormal instead would stall it until k = 2a.
 *
 * Warm start. Below k = a the exact B(k) is close to 1 - k / a, and the step's derivative
 * a k / (k + a B)^2 is about k / a there, so an error in B(k0) shrinks by about exp(-(a - k0)^2
 * / 2a) by the time k reaches a. For a > 400 the recurrence therefore starts at k0 = floor(a - 12
 * sqrt(a)) from B(k0) = 1 - k0 / a: the start's error is damped by e^-72, far below a double's
 * precision (checked: the same doubles as the full recurrence for a from 300 to 2e6 and c from a
 * to a + 60 sqrt(a)), and a call costs O(sqrt(a)) steps past k0 instead of O(a).
 *
 * The mean queue wait, M/M/c and the Allen-Cunneen approximation for G/G/c:
 *
 *   Wq(M/M/c) = C(c, a) * S / (c - a),    Wq(G/G/c) ~= Wq(M/M/c) * (ca2 + cs2) / 2
 *
 * (exact for M/M/c; for D service on M arrivals it halves the wait, exact for c = 1). When the
 * CPUs bind (L < c) the pool is modelled as cw = max(1, floor(L)) threads, each L / cw times
 * slower, so the capacity is still L / S and rho the same: Erlang C needs an integer count, and
 * this one keeps stability and the total rate right (when L is an integer it is exactly L threads
 * of S seconds). p_wait = C (1 when unstable), wait_s = Wq (INFINITY when unstable).
 *
 * The transient, from `backlog` tasks queued now (the queue drains at (ce - a) / S per second
 * when stable and grows at `growth` when not; a queued task waits for the ones ahead of it to be
 * worked off at ce / S per second):
 *
 *   backlog_after_1h = backlog + growth * 3600               unstable
 *                    = max(0, backlog - (ce - a) / S * 3600)  stable
 *   wait_now_s       = backlog * S / ce (+ wait_s when stable)
 *   wait_after_1h_s  = backlog_after_1h * S / ce (+ wait_s when stable)
 *   time_to_full_s   = (queue_max - backlog) / growth  when bounded and growing;
 *                      0 when backlog >= queue_max > 0; else INFINITY
 *   drain_s          = backlog * S / (ce - a) when stable (0 without a backlog); else INFINITY
 *
 * (The article's case: lambda = 2/s, S = 1.5 s, c = 2: a = 3, rho = 1.5, growth 2 - 2/1.5 =
 * 0.667 tasks/s, 2400 tasks queued after an hour and a 1800 s wait behind them.)
 *
 * Sizing, with enough CPUs assumed (the budget is judged separately):
 *
 *   min_stable_threads = floor(a) + 1         the smallest c with a < c
 *   threads_for_target = the smallest c >= min_stable_threads with Wq(G/G/c) <= target
 *   budget_allows      = threads_for_target <= L
 *
 * where target = wait_target, or S / 10 when it is 0. The search walks c upward carrying B(c) in
 * the recurrence (one step per c), and stops at WEFT_QUEUE_THREADS_MAX (1,000,000): -1 means no
 * count within it. Wq falls super-exponentially once c > a, so the walk is short (a few steps
 * for a pool's sizes, O(sqrt(a)) in general). The threads above L add no throughput, which
 * is why a recommendation above L is reported as not allowed rather than trimmed to L.
 *
 * Totality. Inputs are checked (positive and finite rates and times, threads in 1 ..
 * WEFT_QUEUE_THREADS_MAX, the rest finite and in range, NaN anywhere is -EINVAL), and every
 * product that could be 0 * INFINITY is guarded, so each output is finite or INFINITY, never NaN,
 * whatever the magnitudes (lambda * S may overflow to INFINITY: unstable, growth stays finite).
 * Nothing allocates; the cost is O(sqrt(a)) steps of the recurrence for the current size and
 * the walk to threads_for_target: measured 0.1 us for the article's case, 4-6 us at 1024
 * threads, 0.2 ms at a = 999,000 Erlangs (near the cap).
 *
 * The simulation (weft_queue_simulate): an event loop over two kinds of event, the next arrival
 * and the earliest completion (a binary min-heap of the busy threads' completion times, at most
 * c entries), with a FIFO ring of the queued tasks' arrival times. An arrival starts at once on
 * an idle thread (wait 0) or joins the ring; a completion takes the ring's head, if any, on the
 * same thread. A completion at the same instant as an arrival goes first. Service times are drawn
 * when a task starts. Time integrals of busy threads and of queue length give the busy fraction
 * and the mean queue; each arrival's view of the queue length feeds a running least-squares slope
 * (Welford's co-moments, stable for millions of points). The run stops at the last arrival;
 * tasks still queued or running then are counted in queue_final, not in the waits. Waits go to a
 * weft_hist in ns (clamped to INT64_MAX) for the percentiles; the mean is a plain double sum.
 *
 * Distributions, by cv2 around the mean m: cv2 < 1e-12 deterministic (m); cv2 within 1e-12 of 1
 * exponential (-m ln U); below 1 gamma with shape k = 1 / cv2 and scale m cv2 (Marsaglia and
 * Tsang's squeeze method, shape >= 1 here, normals by Box-Muller); above 1 a balanced
 * two-phase hyperexponential: with probability p1 = (1 + sqrt((cv2 - 1) / (cv2 + 1))) / 2 an
 * exponential of mean m / (2 p1), else one of mean m / (2 (1 - p1)), so each phase carries half
 * the mean and the mixture has mean m and squared cv cv2. The generator is xoshiro256**, seeded
 * through splitmix64 (so any seed, 0 included, gives a good state); uniforms are ((x >> 11) + 1)
 * * 2^-53 in (0, 1], so ln U is finite.
 *
 * Invariants (simulation): busy <= c and busy == heap size; the ring holds only tasks that
 * arrived and have not started, in arrival order; queued tasks exist only while busy == c. Memory
 * is the heap (8 bytes a thread, at most min(c, tasks)) and the ring (8 bytes a queued task,
 * copied into one twice the size when full, at most `tasks`); every allocation goes through
 * weft__malloc and is freed on every path.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../internal/alloc.h"
#include "../internal/common.h"
#include <weft/pool.h>

/* Within this relative distance a load is an integer, and rho is 1. */
#define SNAP 1e-9

/* a, snapped to the nearest integer when within SNAP of it (relative). */
static double snap_integer(double a)
{
	double r = nearbyint(a);
	if (r > 0 && isfinite(r) && fabs(a - r) <= SNAP * r)
		return r;
	return a;
}

/* One step of the Erlang B recurrence: B(k) from B(k-1). Below DBL_MIN it is 0: in the
 * subnormal range the step would round back to the same value (and slowly) until k = 2a. */
static double erlang_b_step(double b, int k, double a)
{
	double ab = a * b;
	double r = ab / ((double)k + ab);
	return r < DBL_MIN ? 0 : r;
}

/* B(c) for load a. Above WARM_MIN Erlangs the recurrence starts at k0 = a - WARM_SIGMAS sqrt(a)
 * from B(k0) ~= 1 - k0 / a instead of at B(0) = 1 (see the top comment). */
#define WARM_MIN 400.0
#define WARM_SIGMAS 12.0

static double erlang_b(int c, double a)
{
	int k = 0;
	double b = 1;
	if (a > WARM_MIN) {
		double k0 = floor(a - WARM_SIGMAS * sqrt(a));
		if (k0 > 0 && k0 < (double)c) {
			k = (int)k0;
			b = 1 - k0 / a;
		}
	}
	while (k < c && b > 0) {
		k++;
		b = erlang_b_step(b, k, a);
	}
	return b;
}

/* Erlang C from B(c), for a < c. */
static double erlang_c_from_b(double b, int c, double a)
{
	if (b <= 0)
		return 0;
	double rho = a / (double)c;
	double C = b / (1 - rho * (1 - b));
	return C > 1 ? 1 : C;
}

double weft_erlang_c(int c, double a)
{
	if (c < 1 || !(a >= 0) || !isfinite(a))
		return NAN;
	if (a >= (double)c)
		return 1;
	return erlang_c_from_b(erlang_b(c, a), c, a);
}

/* Mean queue wait of c threads of S seconds under load a < c, from C = C(c, a), times the
 * Allen-Cunneen factor. C * s is finite (C <= 1); the guard keeps 0 * INFINITY out. */
static double mean_wait(double C, int c, double a, double s, double factor)
{
	if (C <= 0 || factor <= 0)
		return 0;
	return C * s / ((double)c - a) * factor;
}

/* The smallest c in [from, WEFT_QUEUE_THREADS_MAX] (from > a) whose mean wait is <= target;
 * -1 if none. */
static int search_target(double a, double s, double factor, double target, int from)
{
	double b = erlang_b(from, a);
	for (int c = from; c <= WEFT_QUEUE_THREADS_MAX; c++) {
		if (c > from && b > 0)
			b = erlang_b_step(b, c, a);
		double w = mean_wait(erlang_c_from_b(b, c, a), c, a, s, factor);
		if (w <= target)
			return c;
	}
	return -1;
}

static bool nonneg_finite(double x)
{
	return x >= 0 && isfinite(x); /* false for NaN */
}

/* A squared cv: NaN and infinity are invalid, negative means 1. */
static int read_cv2(double x, double *ret)
{
	if (isnan(x) || isinf(x))
		return -EINVAL;
	*ret = x < 0 ? 1 : x;
	return 0;
}

int weft_queue_forecast_compute(const weft_queue_model *m, weft_queue_forecast *ret)
{
	if (!m || !ret)
		return -EINVAL;
	double lambda = m->arrival_rate, s = m->service_time;
	if (!(lambda > 0) || !isfinite(lambda) || !(s > 0) || !isfinite(s))
		return -EINVAL;
	if (m->threads < 1 || m->threads > WEFT_QUEUE_THREADS_MAX)
		return -EINVAL;
	double ca2, cs2;
	if (read_cv2(m->arrival_cv2, &ca2) < 0 || read_cv2(m->service_cv2, &cs2) < 0)
		return -EINVAL;
	if (!nonneg_finite(m->wait_target) || !nonneg_finite(m->cpus) ||
	    !nonneg_finite(m->queue_max) || !nonneg_finite(m->backlog))
		return -EINVAL;
	if (!(m->cpu_fraction >= 0 && m->cpu_fraction <= 1))
		return -EINVAL;

	weft_queue_forecast f;
	memset(&f, 0, sizeof(f));
	int c = m->threads;
	double factor = (ca2 + cs2) / 2; /* finite: each is finite, so is their mean */
	double a = snap_integer(lambda * s);
	double backlog = m->backlog;

	f.offered_load = a;
	f.wait_target_s = m->wait_target > 0 ? m->wait_target : s / 10;
	f.cpu_bound_limit =
	        m->cpus > 0 && m->cpu_fraction > 0 ? m->cpus / m->cpu_fraction : INFINITY;
	double ce = fmin((double)c, f.cpu_bound_limit); /* > 0: c >= 1, cpus / f > 0 */
	f.effective_threads = ce;
	f.rho = a / ce;
	if (fabs(f.rho - 1) <= SNAP)
		f.rho = 1;
	f.stable = f.rho < 1;

	if (f.stable) {
		/* cw integer threads, each ce / cw times faster than 1/S (see the top comment) */
		int cw = ce == (double)c ? c : (ce < 1 ? 1 : (int)floor(ce));
		double aw = ce == (double)cw ? a : f.rho * cw;
		double sw = ce == (double)cw ? s : s * ((double)cw / ce);
		f.growth_per_s = 0;
		f.p_wait = weft_erlang_c(cw, aw);
		f.wait_s = mean_wait(f.p_wait, cw, aw, sw, factor);
		double drain_rate = (ce - a) / s; /* > 0 */
		f.drain_s = backlog > 0 ? backlog * s / (ce - a) : 0;
		f.backlog_after_1h = fmax(0, backlog - drain_rate * 3600);
		f.time_to_full_s = m->queue_max > 0 && backlog >= m->queue_max ? 0 : INFINITY;
	} else {
		f.growth_per_s = f.rho == 1 ? 0 : fmax(0, lambda - ce / s);
		f.p_wait = 1;
		f.wait_s = INFINITY;
		f.drain_s = INFINITY;
		f.backlog_after_1h = backlog + f.growth_per_s * 3600;
		if (m->queue_max > 0 && backlog >= m->queue_max)
			f.time_to_full_s = 0;
		else if (m->queue_max > 0 && f.growth_per_s > 0)
			f.time_to_full_s = (m->queue_max - backlog) / f.growth_per_s;
		else
			f.time_to_full_s = INFINITY;
	}
	double steady = f.stable ? f.wait_s : 0;
	f.wait_now_s = (backlog > 0 ? backlog * s / ce : 0) + steady;
	f.wait_after_1h_s = (f.backlog_after_1h > 0 ? f.backlog_after_1h * s / ce : 0) + steady;

	if (a >= WEFT_QUEUE_THREADS_MAX) {
		f.min_stable_threads = -1;
		f.threads_for_target = -1;
	} else {
		f.min_stable_threads = (int)floor(a) + 1;
		if (f.min_stable_threads > WEFT_QUEUE_THREADS_MAX) {
			f.min_stable_threads = -1;
			f.threads_for_target = -1;
		} else {
			f.threads_for_target =
			        search_target(a, s, factor, f.wait_target_s, f.min_stable_threads);
		}
	}
	f.budget_allows =
	        f.threads_for_target > 0 && (double)f.threads_for_target <= f.cpu_bound_limit;
	*ret = f;
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The simulation.
 */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in (0, 1]. */
static double rng_unit(struct rng *r)
{
	return (double)((rng_next(r) >> 11) + 1) * 0x1p-53;
}

static double rng_normal(struct rng *r)
{
	return sqrt(-2 * log(rng_unit(r))) * cos(2 * M_PI * rng_unit(r));
}

enum dist_kind { DIST_DET, DIST_EXP, DIST_GAMMA, DIST_H2 };

struct dist {
	enum dist_kind kind;
	double mean;
	double shape, scale; /* gamma */
	double p1, m1, m2;   /* H2: probability of phase 1, and the two phase means */
};

static void dist_init(struct dist *d, double mean, double cv2)
{
	memset(d, 0, sizeof(*d));
	d->mean = mean;
	if (cv2 < 1e-12) {
		d->kind = DIST_DET;
	} else if (fabs(cv2 - 1) <= 1e-12) {
		d->kind = DIST_EXP;
	} else if (cv2 < 1) {
		d->kind = DIST_GAMMA;
		d->shape = 1 / cv2;
		d->scale = mean * cv2;
	} else {
		d->kind = DIST_H2;
		d->p1 = (1 + sqrt((cv2 - 1) / (cv2 + 1))) / 2;
		d->m1 = mean / (2 * d->p1);
		d->m2 = mean / (2 * (1 - d->p1));
	}
}

/* Gamma(shape k >= 1, scale 1), Marsaglia and Tsang. */
static double gamma_unit(struct rng *r, double k)
{
	double d = k - 1.0 / 3, cc = 1 / sqrt(9 * d);
	for (;;) {
		double x = rng_normal(r), v = 1 + cc * x;
		if (v <= 0)
			continue;
		v = v * v * v;
		double u = rng_unit(r);
		if (u < 1 - 0.0331 * x * x * x * x)
			return d * v;
		if (log(u) < 0.5 * x * x + d * (1 - v + log(v)))
			return d * v;
	}
}

static double dist_draw(const struct dist *d, struct rng *r)
{
	switch (d->kind) {
	case DIST_DET: return d->mean;
	case DIST_EXP: return -d->mean * log(rng_unit(r));
	case DIST_GAMMA: return d->scale * gamma_unit(r, d->shape);
	case DIST_H2:
		if (rng_unit(r) <= d->p1)
			return -d->m1 * log(rng_unit(r));
		return -d->m2 * log(rng_unit(r));
	}
	return d->mean;
}

/* Min-heap of completion times. */
static void heap_up(double *h, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h[p] <= h[i])
			break;
		double t = h[p];
		h[p] = h[i];
		h[i] = t;
		i = p;
	}
}

static void heap_down(double *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < n && h[l] < h[m])
			m = l;
		if (l + 1 < n && h[l + 1] < h[m])
			m = l + 1;
		if (m == i)
			return;
		double t = h[m];
		h[m] = h[i];
		h[i] = t;
		i = m;
	}
}

/* FIFO ring of queued tasks' arrival times; cap is 0 or a power of two. */
struct ring {
	double *v;
	size_t cap, head, len;
};

static int ring_push(struct ring *q, double x)
{
	if (q->len == q->cap) {
		size_t ncap = q->cap ? q->cap * 2 : 1024;
		double *nv = weft__malloc(ncap * sizeof(double));
		if (!nv)
			return -ENOMEM;
		for (size_t i = 0; i < q->len; i++)
			nv[i] = q->v[(q->head + i) & (q->cap - 1)];
		free(q->v);
		q->v = nv;
		q->cap = ncap;
		q->head = 0;
	}
	q->v[(q->head + q->len) & (q->cap - 1)] = x;
	q->len++;
	return 0;
}

static double ring_pop(struct ring *q)
{
	double x = q->v[q->head];
	q->head = (q->head + 1) & (q->cap - 1);
	q->len--;
	return x;
}

/* Running least-squares slope of y on x (Welford co-moments). */
struct slope {
	double n, mx, my, sxx, sxy;
};

static void slope_add(struct slope *sl, double x, double y)
{
	sl->n += 1;
	double dx = x - sl->mx;
	sl->mx += dx / sl->n;
	sl->my += (y - sl->my) / sl->n;
	sl->sxx += dx * (x - sl->mx);
	sl->sxy += dx * (y - sl->my);
}

static double slope_value(const struct slope *sl)
{
	return sl->sxx > 0 ? sl->sxy / sl->sxx : 0;
}

struct sim_stats {
	weft_hist *waits;
	uint64_t started, waited;
	double wait_sum, wait_max, service_sum;
};

static void record_start(struct sim_stats *st, double wait, double service)
{
	st->started++;
	if (wait > 0)
		st->waited++;
	st->wait_sum += wait;
	if (wait > st->wait_max)
		st->wait_max = wait;
	st->service_sum += service;
	double ns = wait * 1e9;
	weft_hist_record(st->waits, ns >= 0x1p63 ? INT64_MAX : (int64_t)ns);
}

static bool in_range(double x, double lo, double hi)
{
	return x >= lo && x <= hi; /* false for NaN */
}

int weft_queue_simulate(const weft_queue_sim *sim, weft_queue_sim_result *ret)
{
	if (!sim || !ret)
		return -EINVAL;
	if (!in_range(sim->arrival_rate, 1e-9, 1e9) || !in_range(sim->service_time, 1e-9, 1e9))
		return -EINVAL;
	if (sim->threads < 1 || sim->threads > WEFT_QUEUE_THREADS_MAX)
		return -EINVAL;
	if (!in_range(sim->arrival_cv2, -INFINITY, 1e4) || isinf(sim->arrival_cv2) ||
	    !in_range(sim->service_cv2, -INFINITY, 1e4) || isinf(sim->service_cv2))
		return -EINVAL;
	if (sim->tasks > WEFT_QUEUE_SIM_TASKS_MAX)
		return -EINVAL;
	uint64_t n = sim->tasks ? sim->tasks : WEFT_QUEUE_SIM_TASKS_DEFAULT;
	size_t c = (size_t)sim->threads;

	struct dist inter, service;
	dist_init(&inter, 1 / sim->arrival_rate, sim->arrival_cv2 < 0 ? 1 : sim->arrival_cv2);
	dist_init(&service, sim->service_time, sim->service_cv2 < 0 ? 1 : sim->service_cv2);
	struct rng rng;
	rng_seed(&rng, sim->seed);

	int saved_errno = errno; /* libm and free() leave it alone here, but weft never sets it */
	int r = 0;
	struct ring q = {0};
	struct sim_stats st = {0};
	double *heap = weft__malloc((c < n ? c : n) * sizeof(double));
	if (!heap)
		return -ENOMEM;
	r = weft_hist_create(&st.waits);
	if (r < 0)
		goto out;

	double t = 0, busy_area = 0, queue_area = 0;
	double next_arrival = dist_draw(&inter, &rng);
	size_t busy = 0;
	uint64_t arrivals = 0, completed = 0;
	struct slope sl = {0};
	for (;;) {
		bool completion = busy > 0 && heap[0] <= next_arrival;
		double now = completion ? heap[0] : next_arrival;
		busy_area += (double)busy * (now - t);
		queue_area += (double)q.len * (now - t);
		t = now;
		if (completion) {
			completed++;
			if (q.len > 0) {
				double s = dist_draw(&service, &rng);
				record_start(&st, t - ring_pop(&q), s);
				heap[0] = t + s;
			} else {
				heap[0] = heap[--busy];
			}
			heap_down(heap, busy, 0);
			continue;
		}
		arrivals++;
		if (busy < c) {
			double s = dist_draw(&service, &rng);
			record_start(&st, 0, s);
			heap[busy] = t + s;
			heap_up(heap, busy++);
		} else {
			r = ring_push(&q, t);
			if (r < 0)
				goto out;
		}
		slope_add(&sl, t, (double)q.len);
		if (arrivals == n)
			break;
		next_arrival = t + dist_draw(&inter, &rng);
	}

	weft_queue_sim_result res;
	memset(&res, 0, sizeof(res));
	res.arrivals = arrivals;
	res.started = st.started;
	res.completed = completed;
	res.duration_s = t;
	if (t > 0) {
		res.rho = (double)arrivals / t * (st.service_sum / (double)st.started) / (double)c;
		res.busy_fraction = busy_area / t / (double)c;
		res.throughput = (double)completed / t;
		res.queue_mean = queue_area / t;
	}
	res.p_wait = (double)st.waited / (double)st.started; /* started >= 1: the first arrival */
	res.wait_s = st.wait_sum / (double)st.started;
	res.wait_p50_s = (double)weft_hist_percentile(st.waits, 50) / 1e9;
	res.wait_p99_s = (double)weft_hist_percentile(st.waits, 99) / 1e9;
	res.wait_max_s = st.wait_max;
	res.queue_final = q.len;
	res.growth_per_s = slope_value(&sl);
	*ret = res;
	r = 0;
out:
	weft_hist_destroy(st.waits);
	free(q.v);
	free(heap);
	errno = saved_errno;
	return r;
}
