/* bench/fiber/fiber.c: the fiber bench's workloads on weft's public API (weft/fiber.h), figure by
 * figure those of bench/fiber/fiber.go (Go) and boost-fiber.cpp (Boost.Fiber):
 *
 *   yield      two fibers on a 1-thread scheduler, each calling weft_fiber_yield N times
 *              (default 1,000,000): the time over 2N, ns per yield (each one switches to the
 *              other fiber).
 *   chan       two fibers on a 1-thread scheduler ping-pong over two unbuffered channels of long,
 *              N round trips: the time over 2N, ns per hand-off (each one a switch).
 *   spawn      a scheduler of T threads (--threads, 1 or 2): one driver fiber spawns N fibers
 *              (default 1,000,000, default stack size) that each call weft_waitgroup_done, in
 *              waves of W (--wave, default 1,000), waiting (weft_waitgroup_wait) for each wave
 *              before the next: the time over N, ns per spawn + run + complete. A wave's fibers
 *              may be alive at once: a worker's stack cache (64 MiB of stacks by default) and
 *              the scheduler's spare list (as much again, and a burst's stacks past that while
 *              spawns use them) hold a wave's stacks, so a warm run maps none (docs/fiber.md,
 *              Limits).
 *   parked     in a child process: N fibers (default 1,000,000) with a 4 KiB stack (--stack; the
 *              default guard mode: guard pages while the kernel's map budget allows, then canaries:
 *              the overflow detection stays on; below a page, stacks share pages and have only
 *              canaries) on a 1-thread scheduler, each parked in weft_chan_recv on one channel;
 *              once all are parked the channel is closed and they all finish.
 *              Printed: the child's peak RSS (the parent's wait4 rusage), per fiber in bytes (the
 *              RSS before spawning subtracted), the time to spawn and park them per fiber, and
 *              how many stacks had a guard page and how many only a canary.
 *   pingpong2  ping-pong as in chan on a 2-thread scheduler between two pinned fibers that run on
 *              different workers (each checks its thread; the bench retries up to 10 times until
 *              they differ): every hand-off wakes the other worker. Default N 100,000.
 *
 * Each timed figure: the scheduler is created before the clock starts; the clock runs from the
 * first spawn until weft_scope_join of the root scope returns on the main thread (so a figure
 * includes spawning the two or three fibers it uses and the join's wake-up, a few microseconds
 * against tens of milliseconds). One untimed warm-up run, then R runs (--runs, default 7):
 *   name=FIGURE impl=weft ns_per_op=MEDIAN min=MIN max=MAX runs=R n=N threads=T
 *   name=parked impl=weft fibers=N peak_rss_kb=K bytes_per_fiber=B spawn_park_ns_per_op=T
 *        guarded_stacks=G canary_stacks=C
 * Left out: timers, select, cancellation, fibers of other sizes, and contention between more
 * than two fibers. It uses only the public headers.
 *
 * Usage: bench-fiber-weft yield|chan|spawn|parked|pingpong2 [--n N] [--runs R] [--threads T]
 *        [--wave W] [--stack BYTES]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#define MAX_RUNS 101

static long n_ops = 1000000;
static long wave = 1000;
static long parked_stack = 4096;

static void die(const char *what, int err)
{
	fprintf(stderr, "bench-fiber-weft: %s: %s\n", what,
	        err < 0 ? weft_strerror(err) : "failed");
	exit(1);
}

static weft_sched *sched_new(int threads, size_t stack_size, long max_fibers)
{
	weft_sched *s;
	weft_sched_opts o = {
	        .name = "bench",
	        .threads = threads,
	        .stack_size = stack_size,
	        .max_fibers = max_fibers,
	};
	int r = weft_sched_create(&s, &o);
	if (r < 0)
		die("weft_sched_create", r);
	return s;
}

static void spawn(weft_sched *s, weft_fiber_fn fn, void *arg, bool pinned)
{
	weft_spawn_opts o = {.pinned = pinned};
	int r = weft_spawn(weft_sched_root(s), fn, arg, &o, NULL);
	if (r < 0)
		die("weft_spawn", r);
}

static void join(weft_sched *s)
{
	int r = weft_scope_join(weft_sched_root(s), WEFT_FOREVER);
	if (r < 0)
		die("weft_scope_join", r);
}

/* ---- yield ---------------------------------------------------------------------------------- */

static void yielder(void *arg)
{
	for (long i = 0; i < n_ops; i++)
		weft_fiber_yield();
}

static double yield_run(weft_sched *s)
{
	int64_t t0 = weft_now();
	spawn(s, yielder, NULL, false);
	spawn(s, yielder, NULL, false);
	join(s);
	return (double)(weft_now() - t0) / (2.0 * (double)n_ops);
}

/* ---- chan and pingpong2 ---------------------------------------------------------------------- */

struct pingpong {
	weft_chan *ping, *pong;
	_Atomic int started;
	pthread_t thread[2];
	bool check_threads;
};

static void pp_wait_both(struct pingpong *p, int who)
{
	if (!p->check_threads)
		return;
	/* keep this worker busy until the other fiber has started, so it starts on the other one */
	p->thread[who] = pthread_self();
	atomic_fetch_add(&p->started, 1);
	while (atomic_load(&p->started) < 2)
		;
}

static void pinger(void *arg)
{
	struct pingpong *p = arg;
	pp_wait_both(p, 0);
	if (p->check_threads && pthread_equal(p->thread[0], p->thread[1]))
		return; /* the same worker: the run is retried */
	for (long i = 0; i < n_ops; i++) {
		long v = i;
		if (weft_chan_send(p->ping, &v, WEFT_FOREVER) < 0 ||
		    weft_chan_recv(p->pong, &v, WEFT_FOREVER) < 0)
			die("pinger", -EIO);
	}
}

static void ponger(void *arg)
{
	struct pingpong *p = arg;
	pp_wait_both(p, 1);
	if (p->check_threads && pthread_equal(p->thread[0], p->thread[1]))
		return;
	for (long i = 0; i < n_ops; i++) {
		long v;
		if (weft_chan_recv(p->ping, &v, WEFT_FOREVER) < 0 ||
		    weft_chan_send(p->pong, &v, WEFT_FOREVER) < 0)
			die("ponger", -EIO);
	}
}

/* One run; a negative result: the two fibers ran on one worker (pingpong2 only). */
static double pingpong_run(weft_sched *s, bool two_threads)
{
	struct pingpong p = {.check_threads = two_threads};
	int r = weft_chan_create(&p.ping, sizeof(long), 0);
	if (r < 0 || (r = weft_chan_create(&p.pong, sizeof(long), 0)) < 0)
		die("weft_chan_create", r);
	int64_t t0 = weft_now();
	spawn(s, pinger, &p, two_threads);
	spawn(s, ponger, &p, two_threads);
	join(s);
	double ns = (double)(weft_now() - t0) / (2.0 * (double)n_ops);
	weft_chan_destroy(p.ping);
	weft_chan_destroy(p.pong);
	if (two_threads && pthread_equal(p.thread[0], p.thread[1]))
		return -1;
	return ns;
}

static double chan_run(weft_sched *s)
{
	return pingpong_run(s, false);
}

static double pingpong2_run(weft_sched *s)
{
	for (int tries = 0; tries < 10; tries++) {
		double ns = pingpong_run(s, true);
		if (ns >= 0)
			return ns;
	}
	die("pingpong2: the two fibers ran on the same worker 10 times", -EAGAIN);
	return 0;
}

/* ---- spawn ---------------------------------------------------------------------------------- */

static weft_waitgroup spawn_wg;

static void spawned(void *arg)
{
	weft_waitgroup_done(&spawn_wg);
}

static void spawn_driver(void *arg)
{
	weft_scope *scope = arg;
	for (long done = 0; done < n_ops;) {
		long w = n_ops - done < wave ? n_ops - done : wave;
		weft_waitgroup_add(&spawn_wg, w);
		for (long i = 0; i < w; i++) {
			int r = weft_spawn(scope, spawned, NULL, NULL, NULL);
			if (r < 0)
				die("weft_spawn", r);
		}
		int r = weft_waitgroup_wait(&spawn_wg, WEFT_FOREVER);
		if (r < 0)
			die("weft_waitgroup_wait", r);
		done += w;
	}
}

static double spawn_run(weft_sched *s)
{
	int64_t t0 = weft_now();
	spawn(s, spawn_driver, weft_sched_root(s), false);
	join(s);
	return (double)(weft_now() - t0) / (double)n_ops;
}

/* ---- parked --------------------------------------------------------------------------------- */

static _Atomic long parked_count;

static void parker(void *arg)
{
	long v;
	atomic_fetch_add(&parked_count, 1);
	if (weft_chan_recv(arg, &v, WEFT_FOREVER) != -EPIPE)
		die("parker: weft_chan_recv did not see the close", -EIO);
}

/* The child: reports before_kb, spawn_park_ns, guarded, canary on `fd`, then exits. */
static void parked_child(int fd)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	long before_kb = ru.ru_maxrss;
	weft_sched *s = sched_new(1, (size_t)parked_stack, n_ops + 16);
	weft_chan *ch;
	int r = weft_chan_create(&ch, sizeof(long), 0);
	if (r < 0)
		die("weft_chan_create", r);
	int64_t t0 = weft_now();
	for (long i = 0; i < n_ops; i++)
		spawn(s, parker, ch, false);
	while (atomic_load(&parked_count) < n_ops)
		weft_sleep_until(weft_deadline_in(100000));
	weft_sleep_until(weft_deadline_in(10000000)); /* the last ones from the count to parked */
	int64_t el = weft_now() - t0;
	weft_sched_stats st;
	if ((r = weft_sched_stats_get(s, &st)) < 0)
		die("weft_sched_stats_get", r);
	weft_chan_close(ch);
	join(s);
	weft_sched_destroy(s);
	weft_chan_destroy(ch);
	char line[256];
	int len = snprintf(line, sizeof line, "%ld %.1f %ld %ld\n", before_kb,
	                   (double)el / (double)n_ops, st.guarded_stacks, st.canary_stacks);
	if (write(fd, line, (size_t)len) != len)
		exit(1);
	exit(0);
}

static int parked(void)
{
	int pfd[2];
	if (pipe(pfd) < 0)
		die("pipe", -errno);
	pid_t pid = fork();
	if (pid < 0)
		die("fork", -errno);
	if (pid == 0) {
		close(pfd[0]);
		parked_child(pfd[1]);
	}
	close(pfd[1]);
	char buf[256] = {0};
	ssize_t got = read(pfd[0], buf, sizeof buf - 1);
	close(pfd[0]);
	int st;
	struct rusage ru;
	if (wait4(pid, &st, 0, &ru) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || got <= 0) {
		fprintf(stderr, "bench-fiber-weft: the parked child failed (status %#x)\n", st);
		return 1;
	}
	long before_kb = 0, guarded = 0, canary = 0;
	double ns = 0;
	if (sscanf(buf, "%ld %lf %ld %ld", &before_kb, &ns, &guarded, &canary) != 4)
		return 1;
	printf("name=parked impl=weft fibers=%ld peak_rss_kb=%ld bytes_per_fiber=%ld "
	       "spawn_park_ns_per_op=%.1f guarded_stacks=%ld canary_stacks=%ld stack_size=%ld\n",
	       n_ops, ru.ru_maxrss, (ru.ru_maxrss - before_kb) * 1024 / n_ops, ns, guarded, canary,
	       parked_stack);
	return 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench-fiber-weft yield|chan|spawn|parked|pingpong2 [--n N] "
		                "[--runs R] [--threads T] [--wave W] [--stack BYTES]\n");
		return 2;
	}
	const char *fig = argv[1];
	int runs = 7, threads = 1;
	bool n_given = false;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
			n_ops = atol(argv[++i]);
			n_given = true;
		} else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
			runs = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			threads = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--wave") == 0 && i + 1 < argc) {
			wave = atol(argv[++i]);
		} else if (strcmp(argv[i], "--stack") == 0 && i + 1 < argc) {
			parked_stack = atol(argv[++i]);
		} else {
			fprintf(stderr, "bench-fiber-weft: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (n_ops < 1 || runs < 1 || runs > MAX_RUNS || threads < 1 || threads > 64 || wave < 1 ||
	    parked_stack < 1) {
		fprintf(stderr,
		        "bench-fiber-weft: --n >= 1, --runs 1..%d, --threads 1..64, --wave >= 1, "
		        "--stack >= 1\n",
		        MAX_RUNS);
		return 2;
	}
	double (*run)(weft_sched *);
	if (strcmp(fig, "yield") == 0) {
		run = yield_run;
		threads = 1;
	} else if (strcmp(fig, "chan") == 0) {
		run = chan_run;
		threads = 1;
	} else if (strcmp(fig, "spawn") == 0) {
		run = spawn_run;
	} else if (strcmp(fig, "pingpong2") == 0) {
		run = pingpong2_run;
		threads = 2;
		if (!n_given)
			n_ops = 100000;
	} else if (strcmp(fig, "parked") == 0) {
		return parked();
	} else {
		fprintf(stderr, "bench-fiber-weft: no figure named %s\n", fig);
		return 2;
	}
	weft_sched *s = sched_new(threads, 0, 0);
	double ns[MAX_RUNS];
	run(s); /* warm-up: the stack cache, the workers' queues */
	for (int r = 0; r < runs; r++)
		ns[r] = run(s);
	weft_sched_destroy(s);
	qsort(ns, (size_t)runs, sizeof ns[0], cmp_double);
	printf("name=%s impl=weft ns_per_op=%.2f min=%.2f max=%.2f runs=%d n=%ld threads=%d", fig,
	       ns[runs / 2], ns[0], ns[runs - 1], runs, n_ops, threads);
	if (run == spawn_run)
		printf(" wave=%ld", wave);
	printf("\n");
	return 0;
}
