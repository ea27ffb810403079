/* verdict.c: the pool's tick thread: it reads the workers' counters, keeps a history of ticks,
 * computes the saturation verdict and its forecast, publishes it, exports it to the metrics
 * registry and calls on_verdict.
 *
 * Reading. Each tick sums, over the slots: completed and moved (each written by one worker), the
 * rings' tails and heads; adds the overflow queue's pushes and the slow-path counters; counts
 * busy workers and workers inside a same-pool wait; and drains every worker's three histograms
 * (queue wait, service wall time, service CPU time) into the registry's: each non-zero bucket,
 * the count, the sum and the extremes are exchanged with zero in the worker's histogram and
 * added to the registry's (the worker records with weft_hist_record, atomic adds, so no record is
 * lost; one racing with the drain may be split across two ticks). Per tick this gives: arrivals
 * (tasks offered, rejected ones included) = sum of tails - moved + overflow pushes + rejected +
 * run by the caller; completions; the timed service samples (count, exact sum, and the sum of
 * squares from the bucket midpoints, within 1/64 relative); the CPU samples; the smallest queue
 * wait sampled; the queue depth (sum of tail - head, plus the overflow count).
 *
 * History. The ticks of the last 60 s at least (max(600, 2 * window / tick) entries) are kept.
 * Two spans of it are used, each ending now:
 *   - the interval: the last `window` ns (CoDel's interval: the smallest wait, and stall);
 *   - the sample: the interval, extended back until it holds at least 100 arrivals and 20 timed
 *     tasks (or the whole history): the rates, service time and slope come from it, so a slow
 *     pool gets enough events for its confidence bounds and a fast one the short window.
 *
 * Formulas (T: the sample's length in seconds, A its arrivals, n its timed tasks):
 *   lambda = A / T;  S = sum of service times / n;  cs2 = var(S) / S^2 (from the buckets);
 *   ca2 = the index of dispersion of the per-tick arrival counts (variance / mean, counts scaled
 *     to the mean tick length; 1 while fewer than 5 ticks or 20 arrivals);
 *   rho = lambda S / c with c the live threads;
 *   relative standard errors: lambda: sqrt(F / A), F = max(ca2, 0.1) the index of dispersion of
 *     the per-tick arrival counts (1 for Poisson); S: sqrt(cs2 / n); of rho:
 *     e = sqrt(F / A + cs2 / n); the one-sided 95 % lower bound, log-normal so it stays positive:
 *     rho_low = rho exp(-1.645 e);
 *   runaway: rho_low >= 1 for runaway_ticks consecutive ticks, and the measured slope >= 0;
 *   growth_model = lambda - c / S; growth_measured = least-squares slope of depth over time;
 *   standing queue: the smallest sampled wait over the interval > wait_target;
 *   stall: depth > 0, nothing completed for stall_after, every live worker busy;
 *   deadlock: a stall where every live worker is inside weft_future_wait on this pool.
 * The forecast comes from weft_queue_forecast_compute (model.c) with lambda, S, c, ca2, cs2,
 * the wait target, the CPU capacity, cpu_fraction = mean CPU time / S, the bound and the depth.
 * The thread recommendations (min_stable_threads, threads_for_target, budget_allows) come from a
 * second call at the upper 95 % bound of the offered load, lambda exp(+1.645 e): a pool resized to
 * them stays stable even if the measurement erred low. Because e uses the measured dispersion of
 * the arrival counts (not a Poisson assumption), a regular schedule gives a tight bound early.
 * Then: time_to_full = (capacity - depth) / max(growth_model, growth_measured) while that is > 0,
 *     capacity = queue_max, or, unbounded, the rings plus memory_budget / 32 bytes per task;
 *   wait_now = depth S / c with a queue, else the model's mean wait (0 if unstable);
 *   drain = depth / (c / S - lambda) when c / S > lambda, else INFINITY (0 when empty).
 *
 * Concurrency. The history and the previous totals belong to the tick thread. The published
 * verdict is copied under verdict_lock (WEFT__RANK_POOL_VERDICT); on_verdict runs with no lock
 * held, so it may call weft_pool_verdict_get and weft_pool_resize. The tick never allocates
 * (tests inject allocation faults while it runs). It sleeps on a futex (tick_stop) with an
 * absolute deadline, so destroy stops it at once.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal/alloc.h"
#include "../internal/hist.h"
#include "../internal/pool.h"

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define SEQ_CST memory_order_seq_cst

#define HISTORY_MIN 600
#define HISTORY_MAX 100000
#define MIN_ARRIVALS 100
#define MIN_TIMED 20
#define Z95 1.6448536269514722 /* one-sided 95 % quantile of the normal distribution */
#define MIN_DISPERSION 0.1     /* the least index of dispersion assumed for arrival counts */

struct entry {
	int64_t t; /* when the tick ran */
	double dt; /* seconds since the previous tick */
	double arrivals, completions;
	double svc_n, svc_sum, svc_msum, svc_msumsq; /* seconds; m*: from bucket midpoints */
	double cpu_n, cpu_sum;
	double wait_n, wait_min; /* seconds; wait_min valid when wait_n > 0 */
	double depth;
};

struct weft__tick {
	struct entry *hist;
	size_t cap, len, next; /* a ring: the newest entry is at next - 1 */
	int64_t last;
	int64_t last_progress;
	uint64_t prev_arrivals, prev_completed, prev_rejected, prev_cancelled;
	int runaway_count;
	int prev_state;
	uint64_t *prev_done; /* per slot: completed at the previous tick */
};

struct weft__pool_metrics {
	weft_counter *submitted, *rejected, *completed, *cancelled;
	weft_gauge *depth, *threads, *busy, *arrival_rate, *throughput, *service_time, *rho,
	        *rho_low, *state, *growth, *growth_measured, *time_to_full, *wait_now, *min_wait,
	        *min_stable, *threads_for_target;
	weft_hist *wait, *svc, *cpu;
};

enum kind { COUNTER, GAUGE, HIST };

static const struct series_def {
	enum kind kind;
	size_t off;
	const char *name, *help;
} series_defs[] = {
#define C_(f, n, h)                                                                                \
	{                                                                                          \
		COUNTER, offsetof(struct weft__pool_metrics, f), n, h                              \
	}
#define G_(f, n, h)                                                                                \
	{                                                                                          \
		GAUGE, offsetof(struct weft__pool_metrics, f), n, h                                \
	}
#define H_(f, n, h)                                                                                \
	{                                                                                          \
		HIST, offsetof(struct weft__pool_metrics, f), n, h                                 \
	}
        /* The first is registered first: it gives -EEXIST for a name already in use. */
        C_(submitted, "weft_pool_tasks_submitted_total",
           "Tasks offered to the pool, rejected ones included"),
        C_(rejected, "weft_pool_tasks_rejected_total",
           "Tasks refused: queue full (fail or block timeout) or memory budget spent"),
        C_(completed, "weft_pool_tasks_completed_total", "Tasks run to completion"),
        C_(cancelled, "weft_pool_tasks_cancelled_total",
           "Tasks cancelled before they started, dropped, or cancelled by shutdown"),
        G_(depth, "weft_pool_queue_depth", "Tasks queued"),
        G_(threads, "weft_pool_threads", "Worker threads"),
        G_(busy, "weft_pool_busy_threads", "Worker threads running a task"),
        G_(arrival_rate, "weft_pool_arrival_rate", "Tasks offered per second (lambda)"),
        G_(throughput, "weft_pool_throughput", "Tasks completed per second"),
        G_(service_time, "weft_pool_service_time_seconds", "Mean service time (S)"),
        G_(rho, "weft_pool_rho", "Offered load lambda * S / threads"),
        G_(rho_low, "weft_pool_rho_low", "Lower 95 % confidence bound of rho"),
        G_(state, "weft_pool_state",
           "Verdict: 0 ok, 1 standing queue, 2 runaway, 3 stall, 4 deadlock"),
        G_(growth, "weft_pool_growth_per_second",
           "Queue growth from the model, lambda - threads / S, tasks per second"),
        G_(growth_measured, "weft_pool_growth_measured_per_second",
           "Measured slope of the queue depth, tasks per second"),
        G_(time_to_full, "weft_pool_time_to_full_seconds",
           "Seconds until the queue bound or memory budget is reached"),
        G_(wait_now, "weft_pool_wait_now_seconds", "Queue wait of a task submitted now"),
        G_(min_wait, "weft_pool_min_queue_wait_seconds",
           "Smallest queue wait over the last interval"),
        G_(min_stable, "weft_pool_min_stable_threads", "Smallest stable thread count"),
        G_(threads_for_target, "weft_pool_threads_for_target",
           "Smallest thread count whose predicted wait meets the target"),
        H_(svc, "weft_pool_service_seconds", "Service time (wall) per task, sampled"),
        H_(cpu, "weft_pool_service_cpu_seconds", "Service time (CPU) per task, sampled"),
        H_(wait, "weft_pool_queue_wait_seconds", "Queue wait per task, sampled"),
#undef C_
#undef G_
#undef H_
};

#define SERIES(pm, d) ((void **)((char *)(pm) + (d)->off))

/* ---- set-up ---------------------------------------------------------------------------------- */

int weft__pool_measure_init(weft_pool *p)
{
	struct weft__tick *tk = weft__calloc(1, sizeof(*tk));
	if (!tk)
		return -ENOMEM;
	p->tk = tk;
	size_t cap = (size_t)(2 * (p->window / p->tick));
	cap = WEFT__MAX(cap, (size_t)HISTORY_MIN);
	cap = WEFT__MIN(cap, (size_t)HISTORY_MAX);
	tk->hist = weft__calloc(cap, sizeof(*tk->hist));
	if (!tk->hist)
		return -ENOMEM;
	tk->cap = cap;
	tk->prev_state = WEFT_POOL_OK;
	tk->prev_done = weft__calloc(WEFT__POOL_MAX_THREADS, sizeof(*tk->prev_done));
	if (!tk->prev_done)
		return -ENOMEM;

	struct weft__pool_metrics *pm = weft__calloc(1, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	p->pm = pm;
	const char *labels[] = {"pool", p->name, NULL};
	for (size_t i = 0; i < WEFT__ARRAY_SIZE(series_defs); i++) {
		const struct series_def *d = &series_defs[i];
		int r;
		switch (d->kind) {
		case COUNTER:
			r = weft_metrics_counter(p->metrics, d->name, d->help, labels,
			                         (weft_counter **)SERIES(pm, d));
			break;
		case GAUGE:
			r = weft_metrics_gauge(p->metrics, d->name, d->help, labels,
			                       (weft_gauge **)SERIES(pm, d));
			break;
		default:
			r = weft_metrics_histogram(p->metrics, d->name, d->help, labels, NULL,
			                           (weft_hist **)SERIES(pm, d));
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

void weft__pool_measure_fini(weft_pool *p)
{
	if (p->pm) {
		for (size_t i = 0; i < WEFT__ARRAY_SIZE(series_defs); i++) {
			void *s = *SERIES(p->pm, &series_defs[i]);
			if (s)
				weft_metrics_remove(p->metrics, s);
		}
		free(p->pm);
		p->pm = NULL;
	}
	if (p->tk) {
		free(p->tk->hist);
		free(p->tk->prev_done);
		free(p->tk);
		p->tk = NULL;
	}
}

/* ---- reading the workers --------------------------------------------------------------------- */

struct drained {
	double n, sum, msum, msumsq, min; /* seconds; min valid when n > 0 */
};

static void raise_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(a, RELAXED);
	while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, RELAXED, RELAXED)) {
	}
}

/* Move everything recorded in src into dst (the registry's), and account it in *acc. Uses the
 * histogram layout of internal/hist.h: the same buckets, count, 128-bit sum and extremes that
 * weft_hist_record updates. */
static void drain_hist(weft_hist *dst, weft_hist *src, struct drained *acc)
{
	for (size_t i = 0; i < WEFT__HIST_BUCKETS; i++) {
		if (!atomic_load_explicit(&src->buckets[i], RELAXED))
			continue;
		uint64_t v = atomic_exchange_explicit(&src->buckets[i], 0, RELAXED);
		if (!v)
			continue;
		atomic_fetch_add_explicit(&dst->buckets[i], v, RELAXED);
		int64_t lo = weft__hist_bucket_lo(i);
		double mid = ((double)lo + (double)(weft__hist_bucket_hi(i) - lo) / 2) * 1e-9;
		acc->msum += (double)v * mid;
		acc->msumsq += (double)v * mid * mid;
	}
	uint64_t count = atomic_exchange_explicit(&src->count, 0, RELAXED);
	if (!count)
		return;
	atomic_fetch_add_explicit(&dst->count, count, RELAXED);
	uint64_t lo = atomic_exchange_explicit(&src->sum_lo, 0, RELAXED);
	uint64_t hi = atomic_exchange_explicit(&src->sum_hi, 0, RELAXED);
	uint64_t old = atomic_fetch_add_explicit(&dst->sum_lo, lo, RELAXED);
	hi += (old + lo < lo);
	if (hi)
		atomic_fetch_add_explicit(&dst->sum_hi, hi, RELAXED);
	uint64_t max = atomic_exchange_explicit(&src->max, 0, RELAXED);
	uint64_t min_inv = atomic_exchange_explicit(&src->min_inv, 0, RELAXED);
	raise_u64(&dst->max, max);
	raise_u64(&dst->min_inv, min_inv);
	double min = min_inv ? (double)~min_inv * 1e-9 : 0;
	if (acc->n == 0 || min < acc->min)
		acc->min = min;
	acc->n += (double)count;
	acc->sum += ((double)hi * 18446744073709551616.0 + (double)lo) * 1e-9;
}

struct reading {
	uint64_t arrivals, completed, rejected, cancelled;
	double depth;
	int live, busy, waiting, stuck;
	struct drained svc, cpu, wait;
};

static void read_pool(weft_pool *p, struct reading *rd)
{
	struct weft__pool_metrics *pm = p->pm;
	memset(rd, 0, sizeof(*rd));
	uint64_t tails = 0, heads = 0, moved = 0, completed = 0, stashed = 0;
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct weft__worker *w = atomic_load_explicit(&p->slots[i], ACQUIRE);
		/* head first: tail, read later, is never below it */
		uint64_t h = atomic_load_explicit(&w->ring.head, SEQ_CST);
		uint64_t t = weft__ring_pushed(&w->ring);
		heads += h;
		tails += t;
		stashed += weft__stash_count(&w->stash);
		uint64_t done = atomic_load_explicit(&w->completed, RELAXED);
		completed += done;
		moved += atomic_load_explicit(&w->moved, RELAXED);
		if (atomic_load_explicit(&w->live, RELAXED)) {
			int busy = atomic_load_explicit(&w->busy, RELAXED) != 0;
			rd->live++;
			rd->busy += busy;
			rd->waiting += atomic_load_explicit(&w->wait_depth, RELAXED) > 0;
			/* Busy and nothing finished since the last tick: the others may take its
			 * queue (pool.c, tiny tasks); cleared by the worker's next completion. */
			if (busy && done == p->tk->prev_done[i]) {
				if (!atomic_load_explicit(&w->stuck, RELAXED))
					atomic_store_explicit(&w->stuck, 1, RELAXED);
				rd->stuck++;
			}
		}
		p->tk->prev_done[i] = done;
		drain_hist(pm->svc, w->h_svc, &rd->svc);
		drain_hist(pm->cpu, w->h_cpu, &rd->cpu);
		drain_hist(pm->wait, w->h_wait, &rd->wait);
	}
	size_t ovf = atomic_load_explicit(&p->ovf.n, SEQ_CST);
	rd->rejected = atomic_load_explicit(&p->rejected, RELAXED);
	rd->cancelled = atomic_load_explicit(&p->cancelled, RELAXED);
	rd->arrivals = tails - moved + atomic_load_explicit(&p->ovf.pushed, RELAXED) +
	               rd->rejected + atomic_load_explicit(&p->caller_ran, RELAXED);
	rd->completed = completed + atomic_load_explicit(&p->ext_completed, RELAXED);
	rd->depth = (double)(tails - heads) + (double)stashed + (double)ovf;
}

/* ---- the verdict ----------------------------------------------------------------------------- */

static struct entry *entry_at(struct weft__tick *tk, size_t age) /* 0: the newest */
{
	return &tk->hist[(tk->next + tk->cap - 1 - age) % tk->cap];
}

struct span {
	size_t n; /* entries */
	double T, A, C, svc_n, svc_sum, svc_msum, svc_msumsq, cpu_n, cpu_sum;
	double wait_min;
	bool have_wait;
};

static void span_add(struct span *s, const struct entry *e)
{
	s->n++;
	s->T += e->dt;
	s->A += e->arrivals;
	s->C += e->completions;
	s->svc_n += e->svc_n;
	s->svc_sum += e->svc_sum;
	s->svc_msum += e->svc_msum;
	s->svc_msumsq += e->svc_msumsq;
	s->cpu_n += e->cpu_n;
	s->cpu_sum += e->cpu_sum;
	if (e->wait_n > 0 && (!s->have_wait || e->wait_min < s->wait_min)) {
		s->wait_min = e->wait_min;
		s->have_wait = true;
	}
}

/* Least-squares slope of depth over time over the newest n entries (0 with fewer than 3). */
static double slope(struct weft__tick *tk, size_t n)
{
	if (n < 3)
		return 0;
	int64_t t0 = entry_at(tk, n - 1)->t;
	double sx = 0, sy = 0;
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = entry_at(tk, i);
		sx += (double)(e->t - t0) * 1e-9;
		sy += e->depth;
	}
	double mx = sx / (double)n, my = sy / (double)n, sxx = 0, sxy = 0;
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = entry_at(tk, i);
		double dx = (double)(e->t - t0) * 1e-9 - mx;
		sxx += dx * dx;
		sxy += dx * (e->depth - my);
	}
	return sxx > 0 ? sxy / sxx : 0;
}

/* Index of dispersion of the per-tick arrival counts over the newest n entries. */
static double dispersion(struct weft__tick *tk, size_t n, double A, double T)
{
	if (n < 5 || A < 20 || T <= 0)
		return 1;
	double mdt = T / (double)n, m = A / (double)n, ss = 0;
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = entry_at(tk, i);
		double x = e->dt > 0 ? e->arrivals * mdt / e->dt : e->arrivals;
		ss += (x - m) * (x - m);
	}
	return ss / (double)(n - 1) / m;
}

static void compute(weft_pool *p, const struct reading *rd, int64_t now, weft_pool_verdict *v)
{
	struct weft__tick *tk = p->tk;
	memset(v, 0, sizeof(*v));
	v->at = now;
	int c = (int)atomic_load_explicit(&p->nlive, RELAXED);
	v->threads = c;
	v->busy = rd->busy;
	v->queue_depth = (size_t)rd->depth;

	/* The interval, then the sample (head comment). */
	struct span in = {0}, st;
	double window_s = (double)p->window * 1e-9;
	size_t i = 0;
	while (i < tk->len && (i == 0 || in.T < window_s))
		span_add(&in, entry_at(tk, i++));
	st = in;
	while (i < tk->len && (st.A < MIN_ARRIVALS || st.svc_n < MIN_TIMED))
		span_add(&st, entry_at(tk, i++));

	double lambda = st.T > 0 ? st.A / st.T : 0;
	double S = st.svc_n > 0 ? st.svc_sum / st.svc_n : 0;
	double cs2 = 1;
	if (st.svc_n >= 2 && st.svc_msum > 0) {
		double mm = st.svc_msum / st.svc_n;
		cs2 = fmax(0, st.svc_msumsq / st.svc_n - mm * mm) / (mm * mm);
	}
	double ca2 = dispersion(tk, st.n, st.A, st.T);
	v->arrival_rate = lambda;
	v->throughput = st.T > 0 ? st.C / st.T : 0;
	v->service_time = S;
	v->service_cpu = st.cpu_n > 0 ? st.cpu_sum / st.cpu_n : 0;
	v->service_cv2 = cs2;
	v->arrival_cv2 = ca2;
	v->min_wait_s = in.have_wait ? in.wait_min : 0;
	v->growth_measured = slope(tk, st.n);

	/* The relative error of lambda: a count of A arrivals has variance F * A, F the index of
	 * dispersion of the counts (1 for Poisson, near 0 for a regular schedule), floored so that
	 * a short, regular sample is not taken as exact. */
	double e = INFINITY;
	if (st.A >= 1 && st.svc_n >= 1)
		e = sqrt(fmax(ca2, MIN_DISPERSION) / st.A + cs2 / st.svc_n);
	if (c > 0 && S > 0) {
		v->rho = lambda * S / c;
		v->rho_low = isfinite(e) ? v->rho * exp(-Z95 * e) : 0;
		v->growth_model = lambda - c / S;
	}
	tk->runaway_count = v->rho_low >= 1 ? tk->runaway_count + 1 : 0;
	v->runaway_ticks = tk->runaway_count;
	v->runaway = tk->runaway_count >= p->runaway_ticks && v->growth_measured >= 0;
	v->standing_queue = in.have_wait && v->min_wait_s > (double)p->wait_target * 1e-9;

	/* Stall and deadlock. */
	double d_completed = tk->len ? entry_at(tk, 0)->completions : 0;
	if (d_completed > 0 || rd->depth == 0)
		tk->last_progress = now;
	v->stalled_s = rd->depth > 0 ? (double)(now - tk->last_progress) * 1e-9 : 0;
	v->stall = rd->depth > 0 && rd->live > 0 && rd->busy >= rd->live &&
	           v->stalled_s >= (double)p->stall_after * 1e-9;
	v->deadlock = v->stall && rd->waiting >= rd->live;

	/* Forecast. */
	v->time_to_full_s = INFINITY;
	v->drain_s = rd->depth > 0 ? INFINITY : 0;
	if (c > 0 && S > 0 && lambda > 0) {
		weft_queue_model m = {
		        .arrival_rate = lambda,
		        .service_time = S,
		        .threads = c,
		        .arrival_cv2 = ca2,
		        .service_cv2 = cs2,
		        .wait_target = (double)p->wait_target * 1e-9,
		        .cpus = p->cpu_capacity,
		        .cpu_fraction = v->service_cpu > 0 ? fmin(1, v->service_cpu / S) : 0,
		        .queue_max = (double)p->queue_max,
		        .backlog = rd->depth,
		};
		weft_queue_forecast fc;
		bool stable = c / S > lambda;
		if (weft_queue_forecast_compute(&m, &fc) == 0) {
			v->wait_now_s = rd->depth > 0
			                        ? rd->depth * S / c
			                        : (stable && isfinite(fc.wait_s) ? fc.wait_s : 0);
		}
		/* The recommendations, at the upper bound of the offered load: the measured load of
		 * the article's case sits on the edge between 3 and 4 threads (a = 3), where a
		 * point estimate a hair low would recommend an unstable pool. */
		weft_queue_model hi = m;
		if (isfinite(e))
			hi.arrival_rate = lambda * exp(Z95 * e);
		if (weft_queue_forecast_compute(&hi, &fc) == 0) {
			v->min_stable_threads = fc.min_stable_threads;
			v->threads_for_target = fc.threads_for_target;
			v->budget_allows = fc.budget_allows;
		}
		if (rd->depth > 0 && stable)
			v->drain_s = rd->depth / (c / S - lambda);
		double g = fmax(v->growth_model, v->growth_measured);
		if (g > 0) {
			double cap = p->queue_max
			                     ? (double)p->queue_max
			                     : (double)atomic_load_explicit(&p->nslots, RELAXED) *
			                                       WEFT__POOL_RING_SIZE +
			                               (double)p->ovf.limit;
			v->time_to_full_s = fmax(0, cap - rd->depth) / g;
		}
	} else if (rd->depth > 0 && c > 0 && S > 0) {
		v->wait_now_s = rd->depth * S / c;
	}
	v->cpu_bound = S > 0 && v->service_cpu / S > 0.8;

	v->state = v->deadlock         ? WEFT_POOL_DEADLOCK
	           : v->stall          ? WEFT_POOL_STALL
	           : v->runaway        ? WEFT_POOL_RUNAWAY
	           : v->standing_queue ? WEFT_POOL_STANDING_QUEUE
	                               : WEFT_POOL_OK;
}

static void export(weft_pool *p, const struct reading *rd, const weft_pool_verdict *v)
{
	struct weft__pool_metrics *pm = p->pm;
	struct weft__tick *tk = p->tk;
	weft_counter_add(pm->submitted, rd->arrivals - tk->prev_arrivals);
	weft_counter_add(pm->completed, rd->completed - tk->prev_completed);
	weft_counter_add(pm->rejected, rd->rejected - tk->prev_rejected);
	weft_counter_add(pm->cancelled, rd->cancelled - tk->prev_cancelled);
	weft_gauge_set(pm->depth, rd->depth);
	weft_gauge_set(pm->threads, v->threads);
	weft_gauge_set(pm->busy, v->busy);
	weft_gauge_set(pm->arrival_rate, v->arrival_rate);
	weft_gauge_set(pm->throughput, v->throughput);
	weft_gauge_set(pm->service_time, v->service_time);
	weft_gauge_set(pm->rho, v->rho);
	weft_gauge_set(pm->rho_low, v->rho_low);
	weft_gauge_set(pm->state, v->state);
	weft_gauge_set(pm->growth, v->growth_model);
	weft_gauge_set(pm->growth_measured, v->growth_measured);
	weft_gauge_set(pm->time_to_full, v->time_to_full_s);
	weft_gauge_set(pm->wait_now, v->wait_now_s);
	weft_gauge_set(pm->min_wait, v->min_wait_s);
	weft_gauge_set(pm->min_stable, v->min_stable_threads);
	weft_gauge_set(pm->threads_for_target, v->threads_for_target);
}

static void tick_once(weft_pool *p, int64_t now)
{
	struct weft__tick *tk = p->tk;
	struct reading rd;
	read_pool(p, &rd);
	/* The totals are sums of counters read one after another while workers move tasks (a batch
	 * moved from the overflow shows in a ring's tail before it shows in `moved`), so a reading
	 * may run ahead and the next fall behind it. Totals never go down: hold each at its
	 * previous value, so that no difference below wraps around. */
	if (rd.arrivals < tk->prev_arrivals)
		rd.arrivals = tk->prev_arrivals;
	if (rd.completed < tk->prev_completed)
		rd.completed = tk->prev_completed;
	if (rd.rejected < tk->prev_rejected)
		rd.rejected = tk->prev_rejected;
	if (rd.cancelled < tk->prev_cancelled)
		rd.cancelled = tk->prev_cancelled;

	struct entry *e = &tk->hist[tk->next];
	e->t = now;
	e->dt = (double)(now - tk->last) * 1e-9;
	e->arrivals = (double)(rd.arrivals - tk->prev_arrivals);
	e->completions = (double)(rd.completed - tk->prev_completed);
	e->svc_n = rd.svc.n;
	e->svc_sum = rd.svc.sum;
	e->svc_msum = rd.svc.msum;
	e->svc_msumsq = rd.svc.msumsq;
	e->cpu_n = rd.cpu.n;
	e->cpu_sum = rd.cpu.sum;
	e->wait_n = rd.wait.n;
	e->wait_min = rd.wait.min;
	e->depth = rd.depth;
	tk->next = (tk->next + 1) % tk->cap;
	if (tk->len < tk->cap)
		tk->len++;
	tk->last = now;

	weft_pool_verdict v;
	compute(p, &rd, now, &v);
	export(p, &rd, &v);
	tk->prev_arrivals = rd.arrivals;
	tk->prev_completed = rd.completed;
	tk->prev_rejected = rd.rejected;
	tk->prev_cancelled = rd.cancelled;

	weft__mutex_lock(&p->verdict_lock);
	p->verdict = v;
	weft__mutex_unlock(&p->verdict_lock);

	if (p->on_verdict && (v.state != tk->prev_state || v.state != WEFT_POOL_OK))
		p->on_verdict(p, &v, p->on_verdict_arg);
	tk->prev_state = v.state;

	/* Work queued and every worker busy (blocked in a wait, say): a thread may help; a
	 * worker that seems stuck: a parked one may take its queue. */
	if (rd.depth > 0 && atomic_load_explicit(&p->nparked, SEQ_CST) == 0 &&
	    atomic_load_explicit(&p->nspinning, SEQ_CST) == 0)
		weft__pool_maybe_spawn(p);
	if (rd.depth > 0 && rd.stuck)
		weft__pool_wake(p);

	/* The spin of an idle worker (internal/pool.h): long while the mean gap between arrivals
	 * is at most half of it; a fixed one stays. */
	if (!p->spin_fixed) {
		double gap2 = v.arrival_rate > 0 ? 2e9 / v.arrival_rate : INFINITY;
		int64_t spin = gap2 <= (double)WEFT__POOL_SPIN_LONG ? WEFT__POOL_SPIN_LONG
		                                                    : WEFT__POOL_SPIN_SHORT;
		atomic_store_explicit(&p->spin_ns, spin, RELAXED);
	}
}

void weft__pool_tick_now(weft_pool *p)
{
	tick_once(p, weft_now());
}

static void *tick_main(void *arg)
{
	weft_pool *p = arg;
	weft__pool_set_tick_thread(p);
	int64_t next = p->tk->last + p->tick;
	for (;;) {
		weft__futex_wait(&p->tick_stop, 0, next);
		if (atomic_load_explicit(&p->tick_stop, ACQUIRE))
			break;
		int64_t now = weft_now();
		if (now < next)
			continue;
		tick_once(p, now);
		next += p->tick;
		if (next <= now) /* late (a slow callback, a stopped process): do not catch up */
			next = now + p->tick;
	}
	return NULL;
}

int weft__pool_tick_start(weft_pool *p)
{
	int64_t now = weft_now();
	p->tk->last = now;
	p->tk->last_progress = now;
	p->verdict.at = now;
	p->verdict.threads = (int)atomic_load_explicit(&p->nlive, RELAXED);
	p->verdict.time_to_full_s = INFINITY;
	char name[WEFT__POOL_NAME_MAX + 8];
	snprintf(name, sizeof(name), "%s-tick", p->name);
	int r = weft__thread_create(&p->tick_thread, name, tick_main, p);
	if (r < 0)
		return r;
	p->tick_started = true;
	return 0;
}

void weft__pool_tick_stop(weft_pool *p)
{
	if (!p->tick_started)
		return;
	atomic_store_explicit(&p->tick_stop, 1, memory_order_release);
	weft__futex_wake(&p->tick_stop, 1);
	pthread_join(p->tick_thread, NULL);
	p->tick_started = false;
}

WEFT_API const char *weft_pool_state_name(int state)
{
	switch (state) {
	case WEFT_POOL_OK: return "ok";
	case WEFT_POOL_STANDING_QUEUE: return "standing-queue";
	case WEFT_POOL_RUNAWAY: return "runaway";
	case WEFT_POOL_STALL: return "stall";
	case WEFT_POOL_DEADLOCK: return "deadlock";
	default: return "unknown";
	}
}
