/* bench/watch/lock.c: the lock monitor bench's lock loops (bench/watch/run.sh runs them).
 *
 * One program, three ways to build it:
 *   bench-watch-lock   plain pthread mutexes, no weft at all: run as is (native), under the
 *                      preload library (LD_PRELOAD=libweft-watch.so or `weft watch --`, with or
 *                      without prediction) and under Helgrind; run.sh also compiles this file with
 *                      clang -fsanitize=thread for the ThreadSanitizer figure.
 *   bench-watch-weft   the same loops on weft_mutex (weft/watch.h, BENCH_WEFT_MUTEX), with the
 *                      monitor off, on (always-on) or on in prediction mode (third argument).
 *
 * Figures (one timed run per process, after an untimed warm-up of N/10 iterations; run.sh runs
 * several processes and takes the median, min and max over them). Before the clock starts, the
 * process starts a second thread that only sleeps (pause): glibc's pthread_mutex_lock skips the
 * atomic instructions while a process has one thread (about half the cost of a pair here), and
 * a program under the monitor always has two (the watchdog), like any program whose locks
 * matter; --single-threaded leaves it out, to show glibc's single-thread figure.
 *   single     one thread, one mutex: N x (lock, unlock). ns per lock+unlock pair.
 *   nested     one thread, two mutexes: N x (lock A, lock B, unlock B, unlock A), two pairs per
 *              iteration: the time over 2N, ns per pair (in prediction mode each lock of B while
 *              holding A is an order edge already known).
 *   contended  two threads on one mutex, each N/2 x (lock, counter++, unlock): the wall time from
 *              the start barrier to both threads' end, over N, ns per pair (the pairs of both
 *              threads added up; on 2 CPUs the threads mostly run at the same time, so most
 *              locks find the mutex busy now and then: what the slow path costs shows here).
 * Mutexes are made with pthread_mutex_init (default attributes, or error checking with
 * --errorcheck, which is what weft_mutex uses by default) or weft_mutex_init(NULL).
 * Prints one line: name=FIGURE impl=IMPL n=N ns_per_pair=X
 * Left out: rwlocks, condition variables, semaphores, more than two threads, and the cost of a
 * report (none is made: the loops never deadlock).
 *
 * Usage: bench-watch-lock single|nested|contended N [--errorcheck] [--single-threaded]
 *        bench-watch-weft single|nested|contended N off|on|predict
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_WEFT_MUTEX
#include <weft/watch.h>
typedef weft_mutex lock_t;
#define LOCK(m) weft_mutex_lock(m)
#define UNLOCK(m) weft_mutex_unlock(m)
#define IMPL "weft_mutex"
#else
typedef pthread_mutex_t lock_t;
#define LOCK(m) pthread_mutex_lock(m)
#define UNLOCK(m) pthread_mutex_unlock(m)
#define IMPL "pthread"
#endif

static lock_t lock_a, lock_b;
static volatile long counter;
static long per_thread;
static pthread_barrier_t start_barrier;

static void die(const char *what, int err)
{
	fprintf(stderr, "bench-watch: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void make_lock(lock_t *l, int errorcheck)
{
	int r;
#ifdef BENCH_WEFT_MUTEX
	(void)errorcheck;
	r = weft_mutex_init(l, NULL);
#else
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	if (errorcheck)
		pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	r = pthread_mutex_init(l, &a);
	pthread_mutexattr_destroy(&a);
#endif
	if (r != 0)
		die("mutex init", r);
}

/* The loops are not inlined into one another so that each is the same code in every build. */
static __attribute__((noinline)) void loop_single(long n)
{
	for (long i = 0; i < n; i++) {
		LOCK(&lock_a);
		UNLOCK(&lock_a);
	}
}

static __attribute__((noinline)) void loop_nested(long n)
{
	for (long i = 0; i < n; i++) {
		LOCK(&lock_a);
		LOCK(&lock_b);
		UNLOCK(&lock_b);
		UNLOCK(&lock_a);
	}
}

static void *contender(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&start_barrier);
	for (long i = 0; i < per_thread; i++) {
		LOCK(&lock_a);
		counter++;
		UNLOCK(&lock_a);
	}
	return NULL;
}

static void *sleeper(void *arg)
{
	for (;;)
		pause();
	return arg;
}

/* Two threads, n pairs between them; returns the wall time. */
static int64_t run_contended(long n)
{
	pthread_t t[2];
	int64_t t0;
	int r;

	per_thread = n / 2;
	counter = 0;
	pthread_barrier_init(&start_barrier, NULL, 3);
	for (int i = 0; i < 2; i++)
		if ((r = pthread_create(&t[i], NULL, contender, NULL)) != 0)
			die("pthread_create", r);
	t0 = now_ns();
	pthread_barrier_wait(&start_barrier);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	t0 = now_ns() - t0;
	pthread_barrier_destroy(&start_barrier);
	if (counter != 2 * per_thread) {
		fprintf(stderr, "bench-watch: counter %ld, expected %ld: the mutex let two in\n",
		        counter, 2 * per_thread);
		exit(1);
	}
	return t0;
}

int main(int argc, char **argv)
{
	const char *fig, *impl = IMPL;
	int errorcheck = 0, single_threaded = 0, r;
	pthread_t idle;
	double per_pair;
	int64_t t;
	long n;

	if (argc < 3)
		goto usage;
	fig = argv[1];
	n = strtol(argv[2], NULL, 10);
	if (n < 2 || n > 2000000000L)
		goto usage;
#ifdef BENCH_WEFT_MUTEX
	{
		const char *mode = argc > 3 ? argv[3] : "off";
		weft_watch_options o;

		memset(&o, 0, sizeof(o));
		if (strcmp(mode, "predict") == 0)
			o.predict = 1;
		else if (strcmp(mode, "on") != 0 && strcmp(mode, "off") != 0)
			goto usage;
		if (strcmp(mode, "off") != 0 && (r = weft_watch_start(&o)) < 0)
			die("weft_watch_start", r);
		impl = strcmp(mode, "off") == 0  ? "weft_mutex-off"
		       : strcmp(mode, "on") == 0 ? "weft_mutex-on"
		                                 : "weft_mutex-predict";
	}
#else
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--errorcheck") == 0)
			errorcheck = 1;
		else if (strcmp(argv[i], "--single-threaded") == 0)
			single_threaded = 1;
		else
			goto usage;
	}
	if (errorcheck)
		impl = single_threaded ? "pthread-errorcheck-st" : "pthread-errorcheck";
	else if (single_threaded)
		impl = "pthread-st";
#endif
	/* the sleeper stays until exit (a figure's loop never waits for it) */
	if (!single_threaded && (r = pthread_create(&idle, NULL, sleeper, NULL)) != 0)
		die("pthread_create", r);
	make_lock(&lock_a, errorcheck);
	make_lock(&lock_b, errorcheck);

	if (strcmp(fig, "single") == 0) {
		loop_single(n / 10);
		t = now_ns();
		loop_single(n);
		t = now_ns() - t;
		per_pair = (double)t / (double)n;
	} else if (strcmp(fig, "nested") == 0) {
		loop_nested(n / 10);
		t = now_ns();
		loop_nested(n);
		t = now_ns() - t;
		per_pair = (double)t / (2.0 * (double)n);
	} else if (strcmp(fig, "contended") == 0) {
		run_contended(n / 10);
		t = run_contended(n);
		per_pair = (double)t / (double)(2 * per_thread);
	} else {
		goto usage;
	}
#ifdef BENCH_WEFT_MUTEX
	weft_watch_stop();
#endif
	printf("name=%s impl=%s n=%ld ns_per_pair=%.2f\n", fig, impl, n, per_pair);
	return 0;
usage:
	fprintf(stderr, "usage: %s single|nested|contended N %s\n", argv[0],
#ifdef BENCH_WEFT_MUTEX
	        "[off|on|predict]"
#else
	        "[--errorcheck] [--single-threaded]"
#endif
	);
	return 2;
}
