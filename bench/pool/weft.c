/* bench/pool/weft.c: weft's pool in the pool bench, through the public API only: weft_pool_create
 * with min = max = 2 threads and an unbounded queue, fire-and-forget weft_pool_submit (no
 * future), a draining weft_pool_shutdown at the end.
 *
 * Built twice (bench/meson.build): bench-pool-weft links the library as built (the always-on
 * measurements on: arrival and completion counts, queue wait and service time, the verdict's tick
 * thread), bench-pool-weft-nomeasure links the same sources compiled with WEFT_POOL_NO_MEASURE,
 * the pool's switch that compiles its measurements out; the two side by side give what the
 * measurements cost. The pool's tick thread runs in both (its CPU shows in the idle figure).
 * With BENCH_POOL_SPIN_US=N in the environment (run.sh's weft-spin), the pool is created with a
 * fixed spin of N us (weft_pool_opts.spin: an idle worker looks for work that long before it
 * parks) and reports itself as impl=weft-spin: the trade of CPU for latency, beside the default.
 * Measures: what common.c's figures measure; leaves out what they leave out, and futures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "common.h"

#ifdef WEFT_POOL_NO_MEASURE
#define IMPL "weft-nomeasure"
#else
#define IMPL "weft"
#endif

static weft_task_fn task_fn;
static int64_t spin; /* BENCH_POOL_SPIN_US, in ns; 0: the pool's default */

static void *run_add(void *arg)
{
	bench_task_add(arg);
	return NULL;
}

static void *run_latency(void *arg)
{
	bench_task_latency(arg);
	return NULL;
}

static int weft_create(void **ret, int kind)
{
	weft_pool_opts opts = {
	        .name = "bench",
	        .min_threads = 2,
	        .max_threads = 2,
	        .queue_max = 0,
	        .spin = spin,
	};
	weft_pool *pool;
	int r = weft_pool_create(&pool, &opts);
	if (r < 0)
		return r;
	task_fn = kind == BENCH_TASK_ADD ? run_add : run_latency;
	*ret = pool;
	return 0;
}

static int weft_submit(void *pool, void *arg)
{
	return weft_pool_submit(pool, task_fn, arg, NULL);
}

static void weft_destroy(void *pool)
{
	weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER);
	weft_pool_destroy(pool);
}

int main(int argc, char **argv)
{
	struct bench_pool_ops ops = {IMPL, weft_create, weft_submit, weft_destroy};
	const char *us = getenv("BENCH_POOL_SPIN_US");
	if (us && *us) {
		char *end;
		long v = strtol(us, &end, 10);
		if (*end || v <= 0 || v > WEFT_POOL_SPIN_MAX / 1000) {
			fprintf(stderr, "bench-pool-%s: BENCH_POOL_SPIN_US must be 1 to %ld\n",
			        IMPL, (long)(WEFT_POOL_SPIN_MAX / 1000));
			return 2;
		}
		spin = WEFT_USEC(v);
		ops.impl = "weft-spin";
	}
	return bench_pool_main(&ops, argc, argv);
}
