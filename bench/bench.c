/* weft-bench: one entry per figure, one machine-readable line each:
 *   name=NAME ns_per_op=MEDIAN min=MIN max=MAX runs=N [threads=T]
 * Each figure is the median of 7 runs, min and max give the spread (this machine is shared and
 * noisy). Run all with `weft-bench`, or some with `weft-bench NAME...`; `--list` lists them.
 *
 * Core figures (what the instruments cost; later parts add their workloads and their peers):
 *   clock             weft_now(): one CLOCK_MONOTONIC read through the vDSO.
 *   hist_record       weft_hist_record, one thread (relaxed atomic adds on one histogram).
 *   hist_record_2t    the same from 2 threads on one histogram: cache-line contention included.
 *   counter_add       weft_counter_add on a registry counter, one thread.
 *   counter_add_2t    the same from 2 threads on one counter.
 *   rate_add          weft_rate_add, one thread.
 *   backtrace         weft_backtrace of a 10-deep stack (capture only, no symbolization).
 *   export_100        weft_metrics_prometheus of 100 counters + 10 histograms (per export).
 * Left out: symbolization (milliseconds, cold path) and the HTTP endpoint's network time.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#define RUNS 7

struct ctx {
	weft_hist *h;
	weft_counter *c;
	weft_rate r;
	weft_metrics *m;
	long n;
};

typedef void (*op_fn)(struct ctx *c, long n);

static void op_clock(struct ctx *c, long n)
{
	int64_t sink = 0;
	for (long i = 0; i < n; i++)
		sink += weft_now();
	c->n += sink & 1;
}

static void op_hist(struct ctx *c, long n)
{
	for (long i = 0; i < n; i++)
		weft_hist_record(c->h, 1000 + (i & 1023) * 37);
}

static void op_counter(struct ctx *c, long n)
{
	for (long i = 0; i < n; i++)
		weft_counter_add(c->c, 1);
}

static void op_rate(struct ctx *c, long n)
{
	for (long i = 0; i < n; i++)
		weft_rate_add(&c->r, 1);
}

__attribute__((noinline)) static int deep(int d, void **frames)
{
	if (d > 0) {
		int r = deep(d - 1, frames);
		__asm__ volatile("" ::: "memory"); /* no tail call */
		return r;
	}
	return weft_backtrace(frames, WEFT_BACKTRACE_MAX, 0);
}

static void op_backtrace(struct ctx *c, long n)
{
	void *frames[WEFT_BACKTRACE_MAX];
	for (long i = 0; i < n; i++)
		c->n += deep(8, frames);
}

static void op_export(struct ctx *c, long n)
{
	for (long i = 0; i < n; i++) {
		char *text;
		if (weft_metrics_prometheus(c->m, &text, NULL) == 0) {
			c->n += (long)strlen(text);
			free(text);
		}
	}
}

struct thread_arg {
	op_fn fn;
	struct ctx *c;
	long n;
	pthread_barrier_t *b;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	pthread_barrier_wait(a->b);
	a->fn(a->c, a->n);
	return NULL;
}

/* ns per op of fn over n ops, with `threads` threads each doing n ops at once. */
static double time_once(op_fn fn, struct ctx *c, long n, int threads)
{
	if (threads == 1) {
		int64_t t0 = weft_now();
		fn(c, n);
		return (double)(weft_now() - t0) / (double)n;
	}
	pthread_t tid[8];
	struct thread_arg args[8];
	pthread_barrier_t b;
	pthread_barrier_init(&b, NULL, (unsigned)threads + 1);
	for (int i = 0; i < threads; i++) {
		args[i] = (struct thread_arg){fn, c, n, &b};
		pthread_create(&tid[i], NULL, thread_main, &args[i]);
	}
	pthread_barrier_wait(&b);
	int64_t t0 = weft_now();
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	double ns = (double)(weft_now() - t0) / (double)n; /* wall time per op per thread */
	pthread_barrier_destroy(&b);
	return ns;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void figure(const char *name, op_fn fn, struct ctx *c, long n, int threads)
{
	double v[RUNS];
	fn(c, n / 10 + 1); /* warm up */
	for (int r = 0; r < RUNS; r++)
		v[r] = time_once(fn, c, n, threads);
	qsort(v, RUNS, sizeof(v[0]), cmp);
	printf("name=%s ns_per_op=%.2f min=%.2f max=%.2f runs=%d threads=%d\n", name, v[RUNS / 2],
	       v[0], v[RUNS - 1], RUNS, threads);
	fflush(stdout);
}

struct entry {
	const char *name;
	op_fn fn;
	long n;
	int threads;
};

static const struct entry entries[] = {
        {"clock", op_clock, 2000000, 1},
        {"hist_record", op_hist, 5000000, 1},
        {"hist_record_2t", op_hist, 2000000, 2},
        {"counter_add", op_counter, 5000000, 1},
        {"counter_add_2t", op_counter, 2000000, 2},
        {"rate_add", op_rate, 5000000, 1},
        {"backtrace", op_backtrace, 200000, 1},
        {"export_100", op_export, 200, 1},
};

int main(int argc, char **argv)
{
	size_t n = sizeof(entries) / sizeof(entries[0]);
	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", entries[i].name);
		return 0;
	}
	for (int a = 1; a < argc; a++) {
		size_t i = 0;
		while (i < n && strcmp(entries[i].name, argv[a]) != 0)
			i++;
		if (i == n) {
			fprintf(stderr, "weft-bench: no figure named '%s' (see --list)\n", argv[a]);
			return 2;
		}
	}

	struct ctx c = {0};
	int r = weft_hist_create(&c.h);
	if (r >= 0)
		r = weft_metrics_create(&c.m, NULL);
	if (r >= 0)
		r = weft_metrics_counter(c.m, "bench_total", "Bench counter.", NULL, &c.c);
	if (r >= 0)
		r = weft_rate_init(&c.r, WEFT_SEC(1), weft_now());
	weft_backtrace_init();
	for (int i = 0; r >= 0 && i < 100; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		weft_counter *x;
		r = weft_metrics_counter(c.m, "bench_series_total", "Series.",
		                         (const char *const[]){"i", v, NULL}, &x);
		if (r >= 0)
			weft_counter_add(x, (uint64_t)i);
	}
	for (int i = 0; r >= 0 && i < 10; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		weft_hist *h;
		r = weft_metrics_histogram(c.m, "bench_seconds", "Histograms.",
		                           (const char *const[]){"i", v, NULL}, NULL, &h);
		for (int k = 0; r >= 0 && k < 1000; k++)
			weft_hist_record(h, (int64_t)k * 1000 * (i + 1));
	}
	if (r < 0) {
		fprintf(stderr, "weft-bench: set-up failed: %s\n", weft_strerror(r));
		return 1;
	}

	for (size_t i = 0; i < n; i++) {
		bool want = argc == 1;
		for (int a = 1; a < argc && !want; a++)
			want = strcmp(entries[i].name, argv[a]) == 0;
		if (want)
			figure(entries[i].name, entries[i].fn, &c, entries[i].n,
			       entries[i].threads);
	}
	weft_hist_destroy(c.h);
	weft_metrics_destroy(c.m);
	return 0;
}
