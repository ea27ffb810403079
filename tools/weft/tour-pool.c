/* tour-pool.c: the pool chapter. The article's executor example, live in a real pool: two tasks
 * arrive every second, each takes 1.5 s, and the pool has 2 threads. Time runs SCALE times faster
 * (tasks sleep 150 ms, twenty arrive a second) and every figure is printed in the article's units.
 * The queue grows; the verdict calls the runaway with its forecast; the chapter resizes the pool to
 * the size the verdict recommends; the queue drains and the verdict returns to ok. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cli.h"

#define SCALE 10.0                 /* article seconds per real second */
#define ARRIVAL_RATE 2.0           /* tasks per article second */
#define SERVICE_TIME 1.5           /* article seconds per task */
#define MAX_ARTICLE_SECONDS 120.0  /* the whole chapter, at most */
#define DRAIN_ARTICLE_SECONDS 60.0 /* arrivals keep coming this long after the resize, at most */

static int64_t real_ns(double article_s)
{
	return (int64_t)(article_s / SCALE * 1e9);
}

static double article_s(int64_t real)
{
	return (double)real / 1e9 * SCALE;
}

static void *task(void *arg)
{
	(void)arg;
	weft_sleep_until(weft_deadline_in(real_ns(SERVICE_TIME)));
	return NULL;
}

struct arrivals {
	weft_pool *pool;
	_Atomic bool stop;
	_Atomic long submitted, rejected;
};

/* Submits at the article's rate, on absolute deadlines, until told to stop. */
static void *arrive(void *p)
{
	struct arrivals *a = p;
	int64_t next = weft_now();
	while (!atomic_load(&a->stop)) {
		if (weft_pool_submit(a->pool, task, NULL, NULL) == 0)
			atomic_fetch_add(&a->submitted, 1);
		else
			atomic_fetch_add(&a->rejected, 1);
		next += real_ns(1.0 / ARRIVAL_RATE);
		weft_sleep_until(next);
	}
	return NULL;
}

static void show(int64_t start, const weft_pool_verdict *v)
{
	static int64_t last_at = -1;
	if (v->at == last_at) /* shown already */
		return;
	last_at = v->at;
	tour_say("t=%5.1f s  queue %3zu  threads %d  busy %d  rho %.2f (low %.2f)  %s",
	         article_s(v->at - start), v->queue_depth, v->threads, v->busy, v->rho, v->rho_low,
	         weft_pool_state_name(v->state));
}

static int run(void)
{
	weft_metrics *m = NULL;
	weft_pool *pool = NULL;
	int ret = 1;
	int r = weft_metrics_create(&m, NULL);
	weft_pool_opts o = {
	        .name = "tour",
	        .min_threads = 2,
	        .max_threads = 2,
	        .tick = WEFT_MSEC(100),
	        .wait_target = real_ns(3.0), /* a task may wait 3 article seconds */
	        .metrics = m,
	};
	if (r >= 0)
		r = weft_pool_create(&pool, &o);
	if (r < 0) {
		tour_say("cannot create the pool: %s", weft_strerror(r));
		weft_metrics_destroy(m);
		return 1;
	}

	tour_say("The article's executor: %.0f tasks arrive every second, each takes %.1f s, and "
	         "the",
	         ARRIVAL_RATE, SERVICE_TIME);
	tour_say(
	        "pool has 2 threads. Time runs %.0fx faster here; every figure is in the article's",
	        SCALE);
	tour_say("units. The pool measures arrivals and service times itself and says what it "
	         "sees.");
	tour_blank();

	struct arrivals a = {.pool = pool};
	pthread_t submitter;
	if (pthread_create(&submitter, NULL, arrive, &a) != 0) {
		tour_say("cannot start the submitting thread");
		goto out;
	}
	int64_t start = weft_now(), end = start + real_ns(MAX_ARTICLE_SECONDS);
	weft_pool_verdict v = {0};
	int64_t next_show = start;
	bool called = false;
	while (weft_now() < end) {
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(100)));
		if (weft_pool_verdict_get(pool, &v) < 0)
			continue;
		if (v.at >= next_show) {
			show(start, &v);
			next_show = v.at + real_ns(5.0);
		}
		if (v.runaway) {
			called = true;
			break;
		}
	}
	if (!called) {
		atomic_store(&a.stop, true);
		pthread_join(submitter, NULL);
		tour_say("the verdict never called the runaway in %.0f s: something is wrong",
		         MAX_ARTICLE_SECONDS);
		goto out;
	}
	double called_at = article_s(v.at - start);
	const weft_pool_verdict at_call = v;
	show(start, &v);
	tour_blank();
	tour_say(
	        "RUNAWAY after %.1f s: rho = %.2f (95 %% lower bound %.2f) for %d ticks, queue %zu",
	        called_at, v.rho, v.rho_low, v.runaway_ticks, v.queue_depth);
	tour_say("  measured: %.2f arrivals/s, %.2f s per task (%.0f %% of it on CPU), %.2f done/s",
	         v.arrival_rate / SCALE, v.service_time * SCALE,
	         v.service_time > 0 ? 100 * v.service_cpu / v.service_time : 0.0,
	         v.throughput / SCALE);
	tour_say("  the queue grows %.2f tasks/s (model), %.2f tasks/s (measured slope)",
	         v.growth_model / SCALE, v.growth_measured / SCALE);
	tour_say("  a task submitted now waits %.1f s; in an hour the backlog would be %.0f tasks",
	         v.wait_now_s * SCALE, (double)v.queue_depth + v.growth_model / SCALE * 3600);
	tour_say("  smallest stable pool: %d threads; %d threads keep the wait under %.0f s%s",
	         v.min_stable_threads, v.threads_for_target, article_s(o.wait_target),
	         v.cpu_bound ? (v.budget_allows ? " (CPU budget allows it)"
	                                        : " (but the work is CPU-bound: the CPU budget "
	                                          "does not allow it)")
	                     : " (the tasks wait, not compute: the CPU budget is no limit)");

	int target = v.threads_for_target > v.min_stable_threads ? v.threads_for_target
	                                                         : v.min_stable_threads;
	tour_blank();
	tour_say("Resizing the pool to %d threads, as recommended; arrivals go on.", target);
	r = weft_pool_resize(pool, target, target);
	if (r < 0) {
		tour_say("resize failed: %s", weft_strerror(r));
		atomic_store(&a.stop, true);
		pthread_join(submitter, NULL);
		goto out;
	}
	int64_t resized = weft_now(), drain_end = resized + real_ns(DRAIN_ARTICLE_SECONDS);
	size_t peak = v.queue_depth;
	bool drained = false;
	next_show = resized;
	while (weft_now() < drain_end) {
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(100)));
		if (weft_pool_verdict_get(pool, &v) < 0)
			continue;
		if (v.queue_depth > peak)
			peak = v.queue_depth;
		if (v.at >= next_show) {
			show(start, &v);
			if (v.drain_s > 0 && isfinite(v.drain_s))
				tour_say("           forecast: empty in %.1f s", v.drain_s * SCALE);
			next_show = v.at + real_ns(5.0);
		}
		if (v.queue_depth == 0 && v.state == WEFT_POOL_OK) {
			drained = true;
			break;
		}
	}
	atomic_store(&a.stop, true);
	pthread_join(submitter, NULL);
	show(start, &v);
	double drain_took = article_s(v.at - resized);
	r = weft_pool_shutdown(pool, WEFT_POOL_DRAIN, weft_deadline_in(WEFT_SEC(10)));
	tour_blank();
	if (!drained) {
		tour_say("the queue did not drain within %.0f s of the resize",
		         DRAIN_ARTICLE_SECONDS);
		goto out;
	}
	tour_say("measured: runaway called %.1f s after the start, queue growing %.2f tasks/s "
	         "(model %.2f);",
	         called_at, at_call.growth_measured / SCALE, at_call.growth_model / SCALE);
	tour_say("          recommended %d threads; the queue (peak %zu) drained %.1f s after the "
	         "resize;",
	         target, peak, drain_took);
	tour_say("          %ld tasks submitted, %ld rejected; shutdown %s",
	         atomic_load(&a.submitted), atomic_load(&a.rejected),
	         r == 0 ? "drained cleanly" : weft_strerror(r));
	ret = r == 0 ? 0 : 1;
out:
	weft_pool_destroy(pool);
	weft_metrics_destroy(m);
	return ret;
}

const struct tour_chapter tour_chapter_pool = {
        "pool",
        "the article's runaway executor queue, caught and fixed live",
        run,
};
