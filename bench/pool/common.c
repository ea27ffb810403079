/* bench/pool/common.c: the figures of the pool bench, shared by its C pools (plain.c, glib.c,
 * weft.c) and its C++ one (tbb.cpp, which links this file compiled as C); Pool.java and pool.go
 * implement the same protocol, figure by figure, in their own language.
 *
 * throughput: N tiny tasks (default 1,000,000), each one atomic add on a shared counter, submitted
 *   by one thread (the main one) into a pool of 2 workers. Timed from just before the first submit
 *   until the task whose add brings the counter to N posts a semaphore and the main thread has
 *   woken from it: every task has run. One untimed warm-up run of N tasks on the same pool comes
 *   first (it faults the allocator's pages in, and warms the JIT for Java). Printed: tasks per
 *   second (median of the runs, min, max) and the process CPU per task (ns, median). The
 *   submitter is a third thread on this 2-core machine, as a real program's would be.
 * latency: the submit-to-start latency at a steady arrival rate (default 10,000 tasks/s for 2 s,
 *   20,000 tasks per run). The submitter sleeps to absolute deadlines one period apart
 *   (clock_nanosleep TIMER_ABSTIME; a late wake-up submits at once, so the rate holds on average),
 *   reads the clock into the task's slot and submits; the task's first act is to turn its slot into
 *   now - submit time. The slots are sorted after the run: exact nearest-rank p50 and p99, and
 *   the max. 2,000 untimed tasks at the same rate warm up first. Printed: the median over the runs
 *   of p50 and p99 with their min and max, the process CPU per task over the run (us; it includes
 *   the submitter's own sleeping and waking, the same for every pool) and the achieved rate.
 * idle: the process's CPU use, in % of one CPU, while the pool sits idle for 1 s right after its
 *   creation, and again for 1 s right after a burst of 1,000 tasks at 10,000/s (a pool that
 *   spins or polls after work shows there).
 *
 * CPU time is CLOCK_PROCESS_CPUTIME_ID: the same total as getrusage(RUSAGE_SELF) user + system,
 * without its tick-based split (Java's getProcessCpuTime reads the same clock); it counts every
 * thread of the process, the pool's ticker and the runtime's own threads (JIT, GC) included.
 * Left out: task payloads of any size, more than one submitter, futures and their results,
 * bounded queues and their rejection policies, pool start-up and shutdown time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define MAX_RUNS 101

static atomic_long count;  /* tasks run in the current run */
static atomic_long target; /* the count at which the last task posts `done` */
static sem_t done;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t deadline)
{
	struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void wait_done(void)
{
	while (sem_wait(&done) != 0)
		;
}

/* Relaxed: only the total order of the adds matters, and the main thread reads nothing the
 * tasks wrote. */
void bench_task_add(void *arg)
{
	atomic_long *c = arg;
	if (atomic_fetch_add_explicit(c, 1, memory_order_relaxed) + 1 ==
	    atomic_load_explicit(&target, memory_order_relaxed))
		sem_post(&done);
}

/* acq_rel: each task's slot write is released by its add; the last add acquires them all (the
 * adds form one release sequence) before sem_post hands them to the main thread. */
void bench_task_latency(void *arg)
{
	int64_t *slot = arg;
	*slot = now_ns() - *slot;
	if (atomic_fetch_add_explicit(&count, 1, memory_order_acq_rel) + 1 ==
	    atomic_load_explicit(&target, memory_order_relaxed))
		sem_post(&done);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least p of the sample at or below it. */
static int64_t percentile(const int64_t *sorted, long n, double p)
{
	long k = (long)(p * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return sorted[k - 1];
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double min_of(const double *v, int n)
{
	double m = v[0];
	for (int i = 1; i < n; i++)
		m = v[i] < m ? v[i] : m;
	return m;
}

static double max_of(const double *v, int n)
{
	double m = v[0];
	for (int i = 1; i < n; i++)
		m = v[i] > m ? v[i] : m;
	return m;
}

static int fail(const struct bench_pool_ops *ops, const char *what, int err)
{
	fprintf(stderr, "bench-pool-%s: %s failed: %s\n", ops->impl, what, strerror(-err));
	return 1;
}

static int run_adds(const struct bench_pool_ops *ops, void *pool, long n)
{
	atomic_store(&count, 0);
	atomic_store(&target, n);
	for (long i = 0; i < n; i++) {
		int r = ops->submit(pool, &count);
		if (r < 0)
			return r;
	}
	wait_done();
	return 0;
}

static int throughput(const struct bench_pool_ops *ops, int runs, long n)
{
	double rate[MAX_RUNS], cpu[MAX_RUNS];
	void *pool;
	int r = ops->create(&pool, BENCH_TASK_ADD);
	if (r < 0)
		return fail(ops, "create", r);
	r = run_adds(ops, pool, n); /* warm-up */
	for (int i = 0; r >= 0 && i < runs; i++) {
		int64_t c0 = cpu_ns(), t0 = now_ns();
		r = run_adds(ops, pool, n);
		int64_t t1 = now_ns(), c1 = cpu_ns();
		rate[i] = (double)n * 1e9 / (double)(t1 - t0);
		cpu[i] = (double)(c1 - c0) / (double)n;
	}
	ops->destroy(pool);
	if (r < 0)
		return fail(ops, "submit", r);
	double lo = min_of(rate, runs), hi = max_of(rate, runs);
	printf("name=throughput impl=%s tasks_per_s=%.0f min=%.0f max=%.0f runs=%d tasks=%ld "
	       "cpu_per_task_ns=%.1f\n",
	       ops->impl, median(rate, runs), lo, hi, runs, n, median(cpu, runs));
	return 0;
}

/* Submit n latency tasks at `rate` per second; their slots end up holding the latencies. On
 * success *ret_span is the time from the first submit to the last. */
static int run_paced(const struct bench_pool_ops *ops, void *pool, int64_t *slots, long n,
                     double rate, int64_t *ret_span)
{
	int64_t period = (int64_t)(1e9 / rate);
	int64_t start = now_ns() + 1000000, first = 0, last = 0;
	atomic_store(&count, 0);
	atomic_store(&target, n);
	for (long i = 0; i < n; i++) {
		sleep_until(start + i * period);
		last = now_ns();
		if (i == 0)
			first = last;
		slots[i] = last;
		int r = ops->submit(pool, &slots[i]);
		if (r < 0)
			return r; /* the pool's destroy still runs what was queued */
	}
	wait_done();
	*ret_span = last - first;
	return 0;
}

static int latency(const struct bench_pool_ops *ops, int runs, double rate, double seconds)
{
	long n = (long)(rate * seconds);
	if (n < 2) {
		fprintf(stderr, "bench-pool-%s: --rate times --seconds must be at least 2\n",
		        ops->impl);
		return 2;
	}
	double p50[MAX_RUNS], p99[MAX_RUNS], mx[MAX_RUNS], cpu[MAX_RUNS], got[MAX_RUNS];
	int64_t *slots = malloc((size_t)n * sizeof(*slots));
	if (slots == NULL)
		return fail(ops, "malloc", -ENOMEM);
	void *pool;
	int r = ops->create(&pool, BENCH_TASK_LATENCY);
	if (r < 0) {
		free(slots);
		return fail(ops, "create", r);
	}
	int64_t span;
	long warm = (long)(rate * 0.2) < n ? (long)(rate * 0.2) : n;
	r = run_paced(ops, pool, slots, warm < 2 ? 2 : warm, rate, &span);
	for (int i = 0; r >= 0 && i < runs; i++) {
		int64_t c0 = cpu_ns();
		r = run_paced(ops, pool, slots, n, rate, &span);
		int64_t c1 = cpu_ns();
		if (r < 0)
			break;
		qsort(slots, (size_t)n, sizeof(slots[0]), cmp_i64);
		p50[i] = (double)percentile(slots, n, 0.50) / 1e3;
		p99[i] = (double)percentile(slots, n, 0.99) / 1e3;
		mx[i] = (double)slots[n - 1] / 1e3;
		cpu[i] = (double)(c1 - c0) / (double)n / 1e3;
		got[i] = (double)(n - 1) * 1e9 / (double)span;
	}
	ops->destroy(pool);
	free(slots);
	if (r < 0)
		return fail(ops, "submit", r);
	double p50lo = min_of(p50, runs), p50hi = max_of(p50, runs);
	double p99lo = min_of(p99, runs), p99hi = max_of(p99, runs);
	printf("name=latency impl=%s rate=%.0f tasks=%ld runs=%d p50_us=%.2f p50_min=%.2f "
	       "p50_max=%.2f p99_us=%.2f p99_min=%.2f p99_max=%.2f max_us=%.1f "
	       "cpu_per_task_us=%.2f "
	       "achieved_rate=%.0f\n",
	       ops->impl, rate, n, runs, median(p50, runs), p50lo, p50hi, median(p99, runs), p99lo,
	       p99hi, median(mx, runs), median(cpu, runs), median(got, runs));
	return 0;
}

/* % of one CPU the process used over the next second. */
static double idle_pct(void)
{
	int64_t c0 = cpu_ns(), t0 = now_ns();
	sleep_until(t0 + 1000000000);
	int64_t c1 = cpu_ns(), t1 = now_ns();
	return 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
}

static int idle(const struct bench_pool_ops *ops)
{
	enum { BURST = 1000 };
	static int64_t slots[BURST];
	void *pool;
	int r = ops->create(&pool, BENCH_TASK_LATENCY);
	if (r < 0)
		return fail(ops, "create", r);
	double created = idle_pct();
	int64_t span;
	r = run_paced(ops, pool, slots, BURST, 10000, &span);
	double worked = r < 0 ? 0 : idle_pct();
	ops->destroy(pool);
	if (r < 0)
		return fail(ops, "submit", r);
	printf("name=idle impl=%s after_create_cpu_pct=%.3f after_work_cpu_pct=%.3f seconds=1\n",
	       ops->impl, created, worked);
	return 0;
}

static int usage(const struct bench_pool_ops *ops)
{
	fprintf(stderr,
	        "usage: bench-pool-%s throughput [--runs R] [--tasks N]\n"
	        "       bench-pool-%s latency [--runs R] [--rate HZ] [--seconds S]\n"
	        "       bench-pool-%s idle\n",
	        ops->impl, ops->impl, ops->impl);
	return 2;
}

int bench_pool_main(const struct bench_pool_ops *ops, int argc, char **argv)
{
	if (argc < 2)
		return usage(ops);
	const char *fig = argv[1];
	bool is_tp = strcmp(fig, "throughput") == 0;
	int runs = is_tp ? 7 : 3;
	long tasks = 1000000;
	double rate = 10000, seconds = 2;
	for (int i = 2; i < argc; i++) {
		char *end = NULL;
		if (i + 1 >= argc)
			return usage(ops);
		if (strcmp(argv[i], "--runs") == 0)
			runs = (int)strtol(argv[++i], &end, 10);
		else if (strcmp(argv[i], "--tasks") == 0)
			tasks = strtol(argv[++i], &end, 10);
		else if (strcmp(argv[i], "--rate") == 0)
			rate = strtod(argv[++i], &end);
		else if (strcmp(argv[i], "--seconds") == 0)
			seconds = strtod(argv[++i], &end);
		else
			return usage(ops);
		if (end == NULL || *end != '\0')
			return usage(ops);
	}
	if (runs < 1 || runs > MAX_RUNS || tasks < 1 || !(rate > 0 && rate <= 1e6) ||
	    !(seconds > 0 && seconds <= 3600)) {
		fprintf(stderr,
		        "bench-pool-%s: runs 1..%d, tasks >= 1, rate 0..1e6, seconds 0..3600\n",
		        ops->impl, MAX_RUNS);
		return 2;
	}
	if (sem_init(&done, 0, 0) != 0)
		return fail(ops, "sem_init", -errno);
	setvbuf(stdout, NULL, _IOLBF, 0);
	int rc;
	if (is_tp)
		rc = throughput(ops, runs, tasks);
	else if (strcmp(fig, "latency") == 0)
		rc = latency(ops, runs, rate, seconds);
	else if (strcmp(fig, "idle") == 0)
		rc = idle(ops);
	else
		rc = usage(ops);
	sem_destroy(&done);
	return rc;
}
