/* bench/pool/common.h: the protocol every C pool of the pool bench follows (bench/pool/run.sh runs
 * them, and the Java and Go peers implement the same protocol on their own).
 *
 * A C pool under test supplies four operations; common.c does the rest: the figures, the timing,
 * the CPU accounting and the printed lines. Each program is run as
 *   PROG throughput [--runs R] [--tasks N]   name=throughput impl=I tasks_per_s=MED min= max= ...
 *   PROG latency [--runs R] [--rate HZ] [--seconds S]
 *                                            name=latency impl=I p50_us=MED p99_us=MED ...
 *   PROG idle                                name=idle impl=I after_create_cpu_pct= ...
 * one figure per process, so that a figure does not inherit another one's heap or warm threads.
 * common.c's head comment says what each figure measures and what it leaves out.
 */
#ifndef BENCH_POOL_COMMON_H
#define BENCH_POOL_COMMON_H

/* What the tasks of a pool do: an atomic add on the shared counter (throughput), or turn their
 * slot, which holds the submit time, into the submit-to-start latency (latency, idle). */
enum bench_task_kind {
	BENCH_TASK_ADD,
	BENCH_TASK_LATENCY,
};

struct bench_pool_ops {
	const char *impl; /* the impl= label */
	/* A pool of 2 started worker threads with an unbounded queue whose tasks are of one kind;
	 * 0 or a negative errno. */
	int (*create)(void **ret_pool, int kind);
	/* Queue one task with this argument (fire and forget); 0 or a negative errno. */
	int (*submit)(void *pool, void *arg);
	/* Run what is queued, stop the workers, free. */
	void (*destroy)(void *pool);
};

/* The task bodies; each pool calls them from its own task function, with the argument it was
 * given at submit. */
void bench_task_add(void *arg);
void bench_task_latency(void *arg);

/* Parse argv, run the figure, print its line. Returns the process exit code. */
int bench_pool_main(const struct bench_pool_ops *ops, int argc, char **argv);

#endif
