/* pool-verdict: a pool that says when its queue will run away, and what would fix it.
 *
 * Requests of 20 ms arrive 150 times a second at a pool of 2 threads: 3 threads' worth of work
 * for 2 threads. The verdict calls the runaway; the callback resizes the pool to the smallest
 * stable size it names; the queue drains. Runs about 6 s.
 *
 *   build/examples/pool-verdict
 */
#include <stdatomic.h>
#include <stdio.h>

#include <weft.h>

static _Atomic int resized_to;

static void *handle(void *request)
{
	(void)request;
	weft_sleep_until(weft_deadline_in(WEFT_MSEC(20))); /* the work: a 20 ms call */
	return NULL;
}

static void on_verdict(weft_pool *pool, const weft_pool_verdict *v, void *arg)
{
	(void)arg;
	if (!v->runaway || atomic_load(&resized_to))
		return;
	printf("runaway: rho %.2f (95 %% lower bound %.2f), queue %zu growing %.1f tasks/s;\n"
	       "         a task submitted now waits %.2f s; %d threads would be stable\n",
	       v->rho, v->rho_low, v->queue_depth, v->growth_model, v->wait_now_s,
	       v->min_stable_threads);
	int n = v->threads_for_target > v->min_stable_threads ? v->threads_for_target
	                                                      : v->min_stable_threads;
	if (weft_pool_resize(pool, n, n) == 0)
		atomic_store(&resized_to, n);
}

int main(void)
{
	weft_pool *pool;
	weft_pool_opts opts = {
	        .name = "requests",
	        .min_threads = 2,
	        .max_threads = 2,
	        .queue_max = 10000,
	        .on_verdict = on_verdict,
	};
	int r = weft_pool_create(&pool, &opts);
	if (r < 0) {
		fprintf(stderr, "pool-verdict: %s\n", weft_strerror(r));
		return 1;
	}
	int64_t start = weft_now(), next = start;
	int submitted = 0, rejected = 0;
	while (weft_now() - start < WEFT_SEC(5)) {
		if (weft_pool_submit(pool, handle, NULL, NULL) == 0)
			submitted++;
		else
			rejected++;
		next += WEFT_SEC(1) / 150;
		weft_sleep_until(next);
	}
	weft_pool_verdict v;
	weft_pool_verdict_get(pool, &v);
	printf("after 5 s: %d submitted, %d rejected; %d threads, queue %zu, rho %.2f, state %s\n",
	       submitted, rejected, v.threads, v.queue_depth, v.rho, weft_pool_state_name(v.state));
	r = weft_pool_shutdown(pool, WEFT_POOL_DRAIN, weft_deadline_in(WEFT_SEC(5)));
	weft_pool_destroy(pool);
	return r == 0 && atomic_load(&resized_to) > 0 ? 0 : 1;
}
