/* test-fiber.c: the scheduler: spawning, yielding, sleeping, scopes and cancellation, work
 * stealing, pinning, caps, stack overflow detection (guard page and canary), the dump, metrics,
 * fault injection and fork. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/fiber.h>

#include "fiber-test.h"
#include "harness.h"
#include "internal/alloc.h"

/* scope.c's test hook: blocks of root fibers that died away from their spawner and wait for it to
 * unlink them, summed over the workers. */
long weft__root_backlog(weft_sched *s);

#if defined(__SANITIZE_THREAD__)
/* the fork test starts threads in a child of a multi-threaded parent, which is what it tests */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}
#endif

/* 20 s, scaled (sanitizer and valgrind runs on a loaded machine are many times slower) */
static void join_all(weft_sched *s)
{
	ASSERT_OK(weft_scope_join(weft_sched_root(s),
	                          weft_deadline_in((int64_t)(20e9 * th_scale()))));
}

/* ---- arguments --------------------------------------------------------------------------- */

static void noop(void *arg)
{
	(void)arg;
}

TEST(fiber_invalid_arguments)
{
	weft_sched *s = NULL;
	ASSERT_ERR(weft_sched_create(NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.threads = -1}), -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.threads = WEFT_SCHED_THREADS_MAX + 1}),
	           -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.stack_size = 100}), -EINVAL);
	ASSERT_ERR(
	        weft_sched_create(&s, &(weft_sched_opts){.stack_size = WEFT_FIBER_STACK_MAX + 1}),
	        -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.max_fibers = -1}), -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.flags = 0x80}), -EINVAL);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.guard = 7}), -EINVAL);
	char longname[80];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.name = longname}), -EINVAL);
	ASSERT_NULL(s);

	s = sched_new(1);
	weft_scope *root = weft_sched_root(s);
	ASSERT_ERR(weft_spawn(NULL, noop, NULL, NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_spawn(root, NULL, NULL, NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_spawn(root, noop, NULL, &(weft_spawn_opts){.stack_size = 10}, NULL),
	           -EINVAL);
	ASSERT_ERR(weft_scope_create(NULL, root), -EINVAL);
	ASSERT_ERR(weft_scope_create(&(weft_scope *){NULL}, NULL), -EINVAL);
	ASSERT_ERR(weft_scope_cancel(NULL), -EINVAL);
	ASSERT_ERR(weft_scope_join(NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_scope_join(root, -2), -EINVAL);
	ASSERT_ERR(weft_sched_stats_get(NULL, &(weft_sched_stats){0}), -EINVAL);
	ASSERT_ERR(weft_sched_stats_get(s, NULL), -EINVAL);
	ASSERT_ERR(weft_fiber_dump(NULL, NULL), -EINVAL);
	/* fiber-only calls on a plain thread */
	ASSERT_ERR(weft_fiber_yield(), -EPERM);
	ASSERT_ERR(weft_fiber_sleep_until(0), -EPERM);
	ASSERT_ERR(weft_fiber_set_name("x"), -EPERM);
	ASSERT_ERR(weft_fiber_cancelled(), -EPERM);
	ASSERT_EQ(weft_fiber_id(), 0);
	ASSERT_NULL(weft_sched_current());
	ASSERT_NULL(weft_sched_root(NULL));
	ASSERT_EQ(weft_scope_fibers(NULL), 0);
	ASSERT_STR_EQ(weft_fiber_state_name(WEFT_FIBER_WAITING), "waiting");
	ASSERT_STR_EQ(weft_fiber_state_name(99), "unknown");
	ASSERT_STR_EQ(weft_wait_reason_name(WEFT_WAIT_CHAN_RECV), "chan-recv");
	ASSERT_STR_EQ(weft_wait_reason_name(-1), "unknown");
	weft_scope_destroy(NULL);
	weft_scope_destroy(root); /* the root: nothing happens */
	weft_sched_destroy(s);
	weft_sched_destroy(NULL);
}

/* ---- spawning and running ---------------------------------------------------------------- */

static _Atomic long counter;

static void count_fn(void *arg)
{
	atomic_fetch_add(&counter, (long)(intptr_t)arg);
}

TEST(fiber_spawn_runs_every_fiber)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	uint64_t prev = 0;
	for (int i = 0; i < 20000; i++) {
		uint64_t id;
		ASSERT_OK(weft_spawn(weft_sched_root(s), count_fn, (void *)(intptr_t)1, NULL, &id));
		ASSERT_GT(id, prev);
		prev = id;
	}
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 20000);
	ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 0);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.spawned, 20000);
	ASSERT_EQ(st.fibers_alive, 0);
	weft_sched_destroy(s);
}

/* A fiber spawning fibers that spawn fibers: a tree of 3^7 leaves. */
static void tree_fn(void *arg)
{
	int depth = (int)(intptr_t)arg;
	if (depth == 0) {
		atomic_fetch_add(&counter, 1);
		return;
	}
	for (int i = 0; i < 3; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(weft_sched_current()), tree_fn,
		                     (void *)(intptr_t)(depth - 1), NULL, NULL));
}

TEST(fiber_spawn_from_fibers)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	ASSERT_OK(weft_spawn(weft_sched_root(s), tree_fn, (void *)(intptr_t)7, NULL, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 2187);
	weft_sched_destroy(s);
}

/* One fiber spawns more than a worker's ring holds (1024) without yielding: the ring spills half of
 * itself to the injection queue, again and again; every fiber still runs once. */
static void flood_fn(void *arg)
{
	weft_scope *root = weft_sched_root(weft_sched_current());
	for (int i = 0; i < 5000; i++)
		ASSERT_OK(weft_spawn(root, count_fn, (void *)(intptr_t)1, NULL, NULL));
	(void)arg;
}

TEST(fiber_run_queue_overflow_spills_to_the_injection_queue)
{
	for (int threads = 1; threads <= 2; threads++) {
		weft_sched *s = sched_new(threads);
		atomic_store(&counter, 0);
		ASSERT_OK(weft_spawn(weft_sched_root(s), flood_fn, NULL, NULL, NULL));
		join_all(s);
		ASSERT_EQ(atomic_load(&counter), 5000);
		weft_sched_destroy(s);
	}
}

/* The spawns of a flood whose overflow finds no memory for the injection queue's chunks: every
 * allocation fails from the flood's start until its last spawn (its stacks come from the cache
 * the first flood left), so past the few chunks kept from the first flood the overflow goes to
 * the list through the fibers, and the queue takes from both. */
static void flood_faulty_fn(void *arg)
{
	weft_scope *root = weft_sched_root(weft_sched_current());
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	int failed = 0;
	for (int i = 0; i < 5000; i++)
		failed += weft_spawn(root, count_fn, (void *)(intptr_t)1, NULL, NULL) != 0;
	*(long *)arg = weft__fault_injected(WEFT__FAULT_ALLOC);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	ASSERT_EQ(failed, 0);
}

TEST(fiber_injection_queue_falls_back_to_a_list_without_memory)
{
	weft_sched *s = NULL;
	/* 24 KiB stacks, and a cache that holds all of them: the second flood maps none. (A stack
	 * with less than 16 KiB free neither allocates nor frees a chunk, sched.c: stack_roomy; on
	 * these, the children, which take the chunks, keep no more than a few.) */
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 1,
	                                                   .stack_size = 24576,
	                                                   .stack_cache = (size_t)200 << 20}));
	for (int round = 0; round < 2; round++) {
		atomic_store(&counter, 0);
		long refused = 0;
		ASSERT_OK(weft_spawn(weft_sched_root(s), round ? flood_faulty_fn : flood_fn,
		                     &refused, NULL, NULL));
		join_all(s);
		ASSERT_EQ(atomic_load(&counter), 5000);
		if (round) /* chunks were refused: the list took fibers */
			ASSERT_GE(refused, 1);
	}
	weft_sched_destroy(s);
}

/* ---- yield ------------------------------------------------------------------------------- */

static char yield_log[64];
static _Atomic int yield_pos;

static void yielder(void *arg)
{
	for (int i = 0; i < 10; i++) {
		yield_log[atomic_fetch_add(&yield_pos, 1)] = (char)(intptr_t)arg;
		ASSERT_OK(weft_fiber_yield());
	}
}

/* Spawned from a fiber, both are queued before either runs. */
static void yield_starter(void *arg)
{
	(void)arg;
	weft_scope *root = weft_sched_root(weft_sched_current());
	ASSERT_OK(weft_spawn(root, yielder, (void *)(intptr_t)'a', NULL, NULL));
	ASSERT_OK(weft_spawn(root, yielder, (void *)(intptr_t)'b', NULL, NULL));
}

TEST(fiber_yield_interleaves_on_one_thread)
{
	weft_sched *s = sched_new(1);
	atomic_store(&yield_pos, 0);
	memset(yield_log, 0, sizeof(yield_log));
	ASSERT_OK(weft_spawn(weft_sched_root(s), yield_starter, NULL, NULL, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&yield_pos), 20);
	/* the two fibers strictly alternate */
	for (int i = 1; i < 20; i++)
		ASSERT_NE(yield_log[i], yield_log[i - 1]);
	weft_sched_destroy(s);
}

/* ---- sleeping ---------------------------------------------------------------------------- */

struct sleeper {
	int64_t deadline, woke;
	int r;
};

static void sleep_fn(void *arg)
{
	struct sleeper *sl = arg;
	sl->r = weft_fiber_sleep_until(sl->deadline);
	sl->woke = weft_now();
}

TEST(fiber_sleep_wakes_after_deadline)
{
	weft_sched *s = sched_new(2);
	enum { N = 2000 };
	static struct sleeper sl[N];
	uint64_t rng = 42;
	int64_t t0 = weft_now();
	for (int i = 0; i < N; i++) {
		sl[i].deadline = t0 + (int64_t)(th_rng(&rng) % (uint64_t)WEFT_MSEC(200));
		sl[i].r = 1;
		ASSERT_OK(weft_spawn(weft_sched_root(s), sleep_fn, &sl[i], NULL, NULL));
	}
	join_all(s);
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(sl[i].r, 0);
		ASSERT_GE(sl[i].woke, sl[i].deadline);
		/* generous: a loaded machine, sanitizers, valgrind */
		ASSERT_LT(sl[i].woke - sl[i].deadline, WEFT_SEC(5));
	}
	/* a past deadline returns at once; -EINVAL below FOREVER */
	weft_sched_destroy(s);
}

static void past_fn(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_fiber_sleep_until(0));
	ASSERT_OK(weft_fiber_sleep_until(weft_now()));
	ASSERT_ERR(weft_fiber_sleep_until(-2), -EINVAL);
	ASSERT_OK(weft_fiber_set_name("renamed"));
	ASSERT_ERR(weft_fiber_set_name(NULL), -EINVAL);
	ASSERT_GT(weft_fiber_id(), 0);
	ASSERT_OK(weft_fiber_cancelled());
	atomic_fetch_add(&counter, 1);
}

TEST(fiber_calls_inside_a_fiber)
{
	weft_sched *s = sched_new(1);
	atomic_store(&counter, 0);
	ASSERT_OK(weft_spawn(weft_sched_root(s), past_fn, NULL, NULL, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 1);
	weft_sched_destroy(s);
}

/* ---- scopes and cancellation --------------------------------------------------------------- */

static void forever_fn(void *arg)
{
	_Atomic int *r = arg;
	atomic_store(r, weft_fiber_sleep_until(WEFT_FOREVER));
	/* once cancelled, every wait fails at once */
	if (weft_fiber_sleep_until(weft_deadline_in(WEFT_SEC(60))) != -ECANCELED)
		atomic_store(r, 1000);
	if (weft_fiber_cancelled() != -ECANCELED)
		atomic_store(r, 1001);
}

TEST(fiber_join_times_out_then_cancel_ends_it)
{
	weft_sched *s = sched_new(2);
	_Atomic int r = 1;
	weft_scope *sc;
	ASSERT_OK(weft_scope_create(&sc, weft_sched_root(s)));
	ASSERT_OK(weft_spawn(sc, forever_fn, &r, NULL, NULL));
	ASSERT_EQ(weft_scope_fibers(sc), 1);
	int64_t t0 = weft_now();
	ASSERT_ERR(weft_scope_join(sc, t0 + WEFT_MSEC(50)), -ETIMEDOUT);
	ASSERT_GE(weft_now() - t0, WEFT_MSEC(50));
	ASSERT_EQ(atomic_load(&r), 1);
	ASSERT_OK(weft_scope_cancel(sc));
	ASSERT_OK(weft_scope_join(sc, weft_deadline_in(WEFT_SEC(10))));
	ASSERT_EQ(atomic_load(&r), -ECANCELED);
	ASSERT_ERR(weft_spawn(sc, noop, NULL, NULL, NULL), -ECANCELED);
	ASSERT_ERR(weft_scope_create(&(weft_scope *){NULL}, sc), -ECANCELED);
	ASSERT_OK(weft_scope_cancel(sc)); /* idempotent */
	weft_scope_destroy(sc);
	weft_sched_destroy(s);
}

TEST(fiber_cancel_reaches_nested_scopes)
{
	weft_sched *s = sched_new(2);
	enum { N = 300 };
	static _Atomic int r[N];
	weft_scope *outer, *inner;
	ASSERT_OK(weft_scope_create(&outer, weft_sched_root(s)));
	ASSERT_OK(weft_scope_create(&inner, outer));
	for (int i = 0; i < N; i++) {
		atomic_store(&r[i], 1);
		ASSERT_OK(weft_spawn(i % 2 ? inner : outer, forever_fn, &r[i], NULL, NULL));
	}
	ASSERT_EQ(weft_scope_fibers(outer), N);
	ASSERT_EQ(weft_scope_fibers(inner), N / 2);
	/* let them all park */
	for (int tries = 0; tries < 1000; tries++) {
		weft_sched_stats st;
		ASSERT_OK(weft_sched_stats_get(s, &st));
		if (st.runnable == 0)
			break;
		usleep(1000);
	}
	ASSERT_OK(weft_scope_cancel(outer));
	ASSERT_OK(weft_scope_join(outer, weft_deadline_in(WEFT_SEC(10))));
	for (int i = 0; i < N; i++)
		ASSERT_EQ(atomic_load(&r[i]), -ECANCELED);
	ASSERT_EQ(weft_scope_fibers(inner), 0);
	weft_scope_destroy(inner);
	weft_scope_destroy(outer);
	weft_sched_destroy(s);
}

/* Cancel racing with fibers that are starting waits, many times. */
static void short_sleeps(void *arg)
{
	(void)arg;
	for (;;) {
		int r = weft_fiber_sleep_until(weft_deadline_in(WEFT_USEC(50)));
		if (r == -ECANCELED)
			break;
		if (r != 0)
			FAIL("sleep returned %d", r);
	}
	atomic_fetch_add(&counter, 1);
}

TEST_TIMEOUT(fiber_cancel_races_with_waits, 60)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	for (int round = 0; round < 50; round++) {
		weft_scope *sc;
		ASSERT_OK(weft_scope_create(&sc, weft_sched_root(s)));
		for (int i = 0; i < 20; i++)
			ASSERT_OK(weft_spawn(sc, short_sleeps, NULL, NULL, NULL));
		usleep((useconds_t)(round % 7) * 100);
		ASSERT_OK(weft_scope_cancel(sc));
		if (weft_scope_join(sc, weft_deadline_in(WEFT_SEC(10))) != 0) {
			char *text = NULL;
			weft_sched_stats st;
			weft_sched_stats_get(s, &st);
			weft_fiber_dump(&text, NULL);
			FAIL("round %d: the cancelled scope did not finish; runnable %ld; %s",
			     round, st.runnable, text);
		}
		weft_scope_destroy(sc);
	}
	ASSERT_EQ(atomic_load(&counter), 50 * 20);
	weft_sched_destroy(s);
}

struct joiner_arg {
	weft_scope *target;
	_Atomic int r;
};

static void joiner_fn(void *arg)
{
	struct joiner_arg *j = arg;
	ASSERT_ERR(weft_scope_join(weft_sched_root(weft_sched_current()), WEFT_FOREVER), -EDEADLK);
	atomic_store(&j->r, weft_scope_join(j->target, weft_deadline_in(WEFT_SEC(10))));
}

static void nap_fn(void *arg)
{
	(void)arg;
	weft_fiber_sleep_until(weft_deadline_in(WEFT_MSEC(30)));
	atomic_fetch_add(&counter, 1);
}

TEST(fiber_joins_another_scope)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	weft_scope *work;
	ASSERT_OK(weft_scope_create(&work, weft_sched_root(s)));
	for (int i = 0; i < 10; i++)
		ASSERT_OK(weft_spawn(work, nap_fn, NULL, NULL, NULL));
	struct joiner_arg j = {.target = work, .r = 1};
	ASSERT_OK(weft_spawn(weft_sched_root(s), joiner_fn, &j, NULL, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&j.r), 0);
	ASSERT_EQ(atomic_load(&counter), 10);
	weft_scope_destroy(work);
	weft_sched_destroy(s);
}

/* A fiber of one scheduler joins a scope of another: it is woken on its own scheduler. */
struct cross_arg {
	weft_scope *target;
	weft_sched *home;
	_Atomic int r;
};

static void cross_joiner(void *arg)
{
	struct cross_arg *c = arg;
	long tid = syscall(SYS_gettid); /* its scheduler has one worker: this thread */
	int r = weft_scope_join(c->target, weft_deadline_in(WEFT_SEC(10)));
	/* still on its own scheduler's thread after the wake-up, and it keeps working there */
	if (r == 0 && syscall(SYS_gettid) != tid)
		r = 1000;
	if (r == 0)
		r = weft_fiber_sleep_until(weft_deadline_in(WEFT_MSEC(1)));
	if (r == 0 && (syscall(SYS_gettid) != tid || weft_sched_current() != c->home))
		r = 1001;
	atomic_store(&c->r, r == 0 ? 0 : r);
}

TEST(fiber_joins_a_scope_of_another_scheduler)
{
	weft_sched *a = NULL, *b = NULL;
	ASSERT_OK(weft_sched_create(&a, &(weft_sched_opts){.threads = 1, .name = "a"}));
	ASSERT_OK(weft_sched_create(&b, &(weft_sched_opts){.threads = 1, .name = "b"}));
	atomic_store(&counter, 0);
	weft_scope *work;
	ASSERT_OK(weft_scope_create(&work, weft_sched_root(a)));
	for (int i = 0; i < 5; i++)
		ASSERT_OK(weft_spawn(work, nap_fn, NULL, NULL, NULL));
	struct cross_arg c = {.target = work, .home = b, .r = 1};
	ASSERT_OK(weft_spawn(weft_sched_root(b), cross_joiner, &c, NULL, NULL));
	join_all(b);
	ASSERT_EQ(atomic_load(&c.r), 0);
	ASSERT_EQ(atomic_load(&counter), 5);
	weft_scope_destroy(work);
	weft_sched_destroy(a);
	weft_sched_destroy(b);
}

/* Spawns racing a cancel and a join of the same (empty) scope: the join always ends. */
struct race_spawn {
	weft_scope *sc;
	_Atomic int stop;
};

static void *spawn_hammer(void *arg)
{
	struct race_spawn *rs = arg;
	while (!atomic_load(&rs->stop))
		(void)weft_spawn(rs->sc, noop, NULL, NULL, NULL);
	return NULL;
}

TEST_TIMEOUT(fiber_spawn_racing_cancel_never_strands_a_join, 60)
{
	weft_sched *s = sched_new(2);
	for (int round = 0; round < 200; round++) {
		struct race_spawn rs = {0};
		ASSERT_OK(weft_scope_create(&rs.sc, weft_sched_root(s)));
		pthread_t t;
		ASSERT_EQ(pthread_create(&t, NULL, spawn_hammer, &rs), 0);
		usleep((useconds_t)(round % 5) * 20);
		ASSERT_OK(weft_scope_cancel(rs.sc));
		ASSERT_OK(weft_scope_join(rs.sc, weft_deadline_in(WEFT_SEC(10))));
		atomic_store(&rs.stop, 1);
		ASSERT_EQ(pthread_join(t, NULL), 0);
		ASSERT_OK(weft_scope_join(rs.sc, weft_deadline_in(WEFT_SEC(10))));
		weft_scope_destroy(rs.sc);
	}
	weft_sched_destroy(s);
}

TEST(fiber_destroy_cancels_what_runs)
{
	weft_sched *s = sched_new(2);
	static _Atomic int r[100];
	for (int i = 0; i < 100; i++) {
		atomic_store(&r[i], 1);
		ASSERT_OK(weft_spawn(weft_sched_root(s), forever_fn, &r[i], NULL, NULL));
	}
	weft_sched_destroy(s);
	for (int i = 0; i < 100; i++)
		ASSERT_EQ(atomic_load(&r[i]), -ECANCELED);
}

/* ---- work stealing and pinning --------------------------------------------------------------- */

static _Atomic int tids[2];

static void busy_fn(void *arg)
{
	(void)arg;
	int tid = (int)syscall(SYS_gettid);
	int expect = 0;
	if (!atomic_compare_exchange_strong(&tids[0], &expect, tid) && expect != tid) {
		expect = 0;
		atomic_compare_exchange_strong(&tids[1], &expect, tid);
	}
	int64_t end = weft_now() + WEFT_USEC(1000);
	while (weft_now() < end)
		;
	atomic_fetch_add(&counter, 1);
}

static void spawner_fn(void *arg)
{
	for (int i = 0; i < 400; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(weft_sched_current()), busy_fn, NULL, NULL,
		                     NULL));
	(void)arg;
}

TEST_TIMEOUT(fiber_work_is_stolen, 60)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	atomic_store(&tids[0], 0);
	atomic_store(&tids[1], 0);
	/* one fiber spawns everything onto its own worker's queue: only stealing spreads it */
	ASSERT_OK(weft_spawn(weft_sched_root(s), spawner_fn, NULL, NULL, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 400);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_GT(st.steals, 0);
	ASSERT_NE(atomic_load(&tids[1]), 0); /* both threads ran them */
	weft_sched_destroy(s);
}

static void pinned_fn(void *arg)
{
	(void)arg;
	int tid = (int)syscall(SYS_gettid);
	for (int i = 0; i < 200; i++) {
		if (i % 3)
			weft_fiber_yield();
		else
			weft_fiber_sleep_until(weft_deadline_in(WEFT_USEC(100)));
		if ((int)syscall(SYS_gettid) != tid)
			FAIL("pinned fiber moved from thread %d to %ld", tid, syscall(SYS_gettid));
	}
	atomic_fetch_add(&counter, 1);
}

static void churn_fn(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300; i++) {
		if (i % 2)
			weft_fiber_yield();
		else
			weft_fiber_sleep_until(weft_deadline_in(WEFT_USEC(50)));
	}
}

TEST_TIMEOUT(fiber_pinned_stays_on_its_thread, 60)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	for (int i = 0; i < 20; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), churn_fn, NULL, NULL, NULL));
	for (int i = 0; i < 8; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), pinned_fn, NULL,
		                     &(weft_spawn_opts){.pinned = true}, NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 8);
	weft_sched_destroy(s);
}

/* ---- exits away from the spawner
 * A fiber that dies on another worker than the one that spawned it stays in its scope's list
 * (DEAD) until the spawner unlinks it, and its unit of the root's count is the dying worker's
 * until that one flushes (scope.c). Here the spawner's worker is kept busy (its fiber spins, no
 * switch), so it never reaps: the other worker runs and ends every child, the dead children wait
 * in the spawner's remote list, and the counts, the dump, a fork's child and the scope's destroy
 * must all cope without the spawner's help. */

struct remote {
	weft_scope *sc;
	weft_chan *ch;
	int n;
	_Atomic int spawner_tid;
	_Atomic int parked, away, bad;
	_Atomic int phase; /* 1: children parked, the spawner spins; 2: it may return */
	_Atomic int hog;   /* 1: the hog runs (after every child: it was queued behind them) */
};

/* Keeps the other worker busy once the children have ended there, so it keeps the units of
 * their exits (it gives them back when it runs out of work). */
static void remote_hog(void *arg)
{
	struct remote *rm = arg;
	atomic_store(&rm->hog, 1);
	while (atomic_load(&rm->phase) != 2)
		sched_yield();
}

static void remote_child(void *arg)
{
	struct remote *rm = arg;
	long v;
	atomic_fetch_add(&rm->parked, 1);
	int r = weft_chan_recv(rm->ch, &v, WEFT_FOREVER);
	if (r != -EPIPE && r != -ECANCELED)
		atomic_fetch_add(&rm->bad, 1);
	if ((int)syscall(SYS_gettid) != atomic_load(&rm->spawner_tid))
		atomic_fetch_add(&rm->away, 1);
}

static void remote_spawner(void *arg)
{
	struct remote *rm = arg; /* pinned: its thread is its spawning worker's */
	atomic_store(&rm->spawner_tid, (int)syscall(SYS_gettid));
	for (int i = 0; i < rm->n; i++)
		spawn_in(rm->sc, remote_child, rm);
	FIBER_WAIT_FOR(atomic_load(&rm->parked) == rm->n);
	/* no switch from here on: this worker neither runs the children nor reaps */
	atomic_store(&rm->phase, 1);
	while (atomic_load(&rm->phase) != 2)
		sched_yield();
}

static void remote_wait_phase(struct remote *rm, int phase)
{
	int64_t end = in_ms(20000);
	while (atomic_load(&rm->phase) != phase) {
		if (weft_now() > end)
			FAIL("timed out waiting for phase %d", phase);
		usleep(200);
	}
}

/* how: 0 close the channel, then join and destroy; 1 cancel the scope, then join and destroy;
 * 2 destroy at once (cancel, join and free racing the other worker's exits) */
static void remote_round(int how, bool fork_too)
{
	weft_sched *s = sched_new(2);
	struct remote rm = {.n = 200};
	ASSERT_OK(weft_chan_create(&rm.ch, sizeof(long), 0));
	ASSERT_OK(weft_scope_create(&rm.sc, weft_sched_root(s)));
	ASSERT_OK(weft_spawn(weft_sched_root(s), remote_spawner, &rm,
	                     &(weft_spawn_opts){.pinned = true}, NULL));
	remote_wait_phase(&rm, 1);
	/* the children are readied into the injection queue (from this thread), which only the
	 * other worker takes from now */
	if (how == 0)
		ASSERT_OK(weft_chan_close(rm.ch));
	else if (how == 1)
		ASSERT_OK(weft_scope_cancel(rm.sc));
	if (how != 2) {
		ASSERT_OK(weft_spawn(weft_sched_root(s), remote_hog, &rm, NULL, NULL));
		ASSERT_OK(weft_scope_join(rm.sc, in_ms(20000)));
		ASSERT_EQ(weft_scope_fibers(rm.sc), 0);
		for (int i = 0; i < 20000 && !atomic_load(&rm.hog); i++)
			usleep(1000);
		ASSERT_EQ(atomic_load(&rm.hog), 1);
		/* the spawner and the hog are alive; the busy worker's units are no fibers */
		ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 2);
		weft_sched_stats st;
		ASSERT_OK(weft_sched_stats_get(s, &st));
		ASSERT_EQ(st.fibers_alive, 2);
		ASSERT_EQ(st.spawned, (uint64_t)rm.n + 2);
		/* the dead children are still in the scope's list: the dump leaves them out */
		char *text;
		size_t len;
		ASSERT_OK(weft_fiber_dump(&text, &len));
		ASSERT_EQ(strncmp(text, "2 fibers in 1 schedulers", 24), 0);
		free(text);
#if !defined(__SANITIZE_THREAD__) /* TSan cannot follow a fork of a multi-threaded process */
		if (fork_too) {
			/* a child frees its copy, remote lists included, with no lock and no thread
			 */
			pid_t pid = fork();
			ASSERT_GE(pid, 0);
			if (pid == 0) {
				weft_sched_destroy(s);
				_exit(0);
			}
			int st2;
			ASSERT_EQ(waitpid(pid, &st2, 0), pid);
			ASSERT_TRUE(WIFEXITED(st2));
			ASSERT_EQ(WEXITSTATUS(st2), 0);
		}
#else
		(void)fork_too;
#endif
	}
	/* the spawner still spins: the destroy must unlink the dead children itself */
	weft_scope_destroy(rm.sc);
	ASSERT_EQ(atomic_load(&rm.away), rm.n);
	ASSERT_EQ(atomic_load(&rm.bad), 0);
	atomic_store(&rm.phase, 2);
	join_all(s);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.fibers_alive, 0);
	ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 0);
	weft_chan_destroy(rm.ch);
	weft_sched_destroy(s);
}

TEST_TIMEOUT(fiber_exits_away_from_the_spawner_close, 60)
{
	remote_round(0, true);
}

TEST_TIMEOUT(fiber_exits_away_from_the_spawner_cancel, 60)
{
	remote_round(1, false);
}

TEST_TIMEOUT(fiber_exits_away_from_the_spawner_destroy, 60)
{
	for (int i = 0; i < 5; i++)
		remote_round(2, false);
}

/* Many short fibers spawned by one fiber, most stolen and ending on the other worker, in scopes
 * destroyed right after: the spawner reaps as it goes (its cache runs dry, its periodic checks),
 * racing the destroys' own reaping. */
static void churn_spawner(void *arg)
{
	weft_scope *root = arg;
	for (int round = 0; round < 20; round++) {
		weft_scope *sc;
		ASSERT_OK(weft_scope_create(&sc, root));
		for (int i = 0; i < 300; i++)
			ASSERT_OK(weft_spawn(sc, count_fn, (void *)(intptr_t)1, NULL, NULL));
		if (round % 2)
			ASSERT_OK(weft_scope_join(sc, in_ms(20000)));
		weft_scope_destroy(sc);
	}
}

TEST_TIMEOUT(fiber_scopes_churn_with_exits_away_from_the_spawner, 60)
{
	weft_sched *s = sched_new(2);
	atomic_store(&counter, 0);
	for (int i = 0; i < 2; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), churn_spawner, weft_sched_root(s), NULL,
		                     NULL));
	join_all(s);
	ASSERT_EQ(atomic_load(&counter), 2 * 20 * 300);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.fibers_alive, 0);
	ASSERT_EQ(st.spawned, 2 + 2 * 20 * 300);
	weft_sched_destroy(s);
}

/* The root's count is taken in batches by spawning workers (scope.c): the cap still holds to the
 * fiber, also with the other worker holding units of exits it has not given back. */
struct capped {
	long spawned;
	int r;
	_Atomic int done;
};

static void cap_parker(void *arg)
{
	weft_fiber_sleep_until(WEFT_FOREVER);
	(void)arg;
}

static void cap_driver(void *arg)
{
	struct capped *c = arg;
	weft_scope *root = weft_sched_root(weft_sched_current());
	/* short fibers first: some end on the other worker, whose units stay there a while */
	for (int i = 0; i < 500; i++)
		spawn_in(root, count_fn, (void *)(intptr_t)1);
	FIBER_WAIT_FOR(atomic_load(&counter) == 500);
	int r;
	while ((r = weft_spawn(root, cap_parker, NULL, NULL, NULL)) == 0)
		c->spawned++;
	c->r = r;
	atomic_store(&c->done, 1);
	FIBER_WAIT_FOR(weft_fiber_cancelled() != 0);
}

TEST_TIMEOUT(fiber_max_fibers_holds_with_batched_counts, 60)
{
	weft_sched *s = NULL;
	/* past 16 * 64 per worker the batches are on */
	ASSERT_OK(weft_sched_create(
	        &s, &(weft_sched_opts){.threads = 2, .max_fibers = 3000, .stack_size = 16384}));
	atomic_store(&counter, 0);
	static struct capped c;
	ASSERT_OK(weft_spawn(weft_sched_root(s), cap_driver, &c, NULL, NULL));
	for (int i = 0; i < 20000 && !atomic_load(&c.done); i++)
		usleep(1000);
	ASSERT_EQ(atomic_load(&c.done), 1);
	ASSERT_EQ(c.r, -EAGAIN);
	ASSERT_EQ(c.spawned, 2999); /* and the driver */
	ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 3000);
	ASSERT_ERR(weft_spawn(weft_sched_root(s), noop, NULL, NULL, NULL), -EAGAIN);
	weft_sched_destroy(s);
}

/* ---- caps ---------------------------------------------------------------------------------------
 */

TEST(fiber_max_fibers_is_enforced)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 1, .max_fibers = 10}));
	static _Atomic int r[10];
	for (int i = 0; i < 10; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), forever_fn, &r[i], NULL, NULL));
	ASSERT_ERR(weft_spawn(weft_sched_root(s), noop, NULL, NULL, NULL), -EAGAIN);
	ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 10);
	weft_sched_destroy(s);
}

/* Units of the root's count a worker holds are spent with no check (scope.c): the cap must hold
 * when they are units that exits left on a worker that never ran out of work. Z, pinned on its
 * worker, spawns 40 short children that end there and keeps its queue busy; this thread then
 * spawns up to the cap; Z spawns again: nothing more may start. */
static struct {
	_Atomic int phase, children_done;
	long z_more;
} held;

static void held_child(void *arg)
{
	(void)arg;
	atomic_fetch_add(&held.children_done, 1);
}

static void held_parker(void *arg)
{
	(void)arg;
	weft_fiber_sleep_until(WEFT_FOREVER);
}

static void held_z(void *arg)
{
	weft_scope *root = arg;
	for (int i = 0; i < 40; i++)
		ASSERT_OK(weft_spawn(root, held_child, NULL, NULL, NULL));
	while (atomic_load(&held.children_done) < 40)
		weft_fiber_yield();
	atomic_store(&held.phase, 1);
	while (atomic_load(&held.phase) != 2)
		weft_fiber_yield(); /* the worker's queue never runs dry */
	while (weft_spawn(root, held_parker, NULL, NULL, NULL) == 0)
		held.z_more++;
	atomic_store(&held.phase, 3);
	FIBER_WAIT_FOR(weft_fiber_cancelled() != 0);
}

static void held_wait_phase(int phase)
{
	int64_t end = in_ms(20000);
	while (atomic_load(&held.phase) != phase) {
		if (weft_now() > end)
			FAIL("timed out waiting for phase %d", phase);
		usleep(100);
	}
}

TEST_TIMEOUT(fiber_max_fibers_holds_with_units_held_by_workers, 60)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 2, .max_fibers = 50}));
	weft_scope *root = weft_sched_root(s);
	ASSERT_OK(weft_spawn(root, held_z, root, &(weft_spawn_opts){.pinned = true}, NULL));
	held_wait_phase(1);
	long mine = 0;
	int r;
	while ((r = weft_spawn(root, held_parker, NULL, NULL, NULL)) == 0)
		mine++;
	ASSERT_ERR(r, -EAGAIN);
	atomic_store(&held.phase, 2);
	held_wait_phase(3);
	/* Z and 49 others: no more, and (no worker held units then) no fewer */
	ASSERT_EQ(1 + mine + held.z_more, 50);
	ASSERT_EQ(held.z_more, 0);
	ASSERT_EQ(weft_scope_fibers(root), 50);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.fibers_alive, 50);
	weft_sched_destroy(s);
}

/* Blocks of fibers that die on another worker than their spawner's wait for the spawner to unlink
 * them (scope.c): a spawner that keeps spawning and never parks must not keep them all, for
 * children of the root or of a scope of its own, spawned with a stack size no cache holds. The
 * spawner, pinned, spins until the killer has started (on the other worker, then), and keeps at
 * most 64 children waiting; the killer ends them by a send each. */
static struct {
	weft_scope *root, *sub; /* sub: where the spawner's children go (else the root) */
	weft_chan *ch;
	size_t stack;
	long ahead;
	bool into_sub; /* children into a scope of their own, spawned without switching */
	_Atomic int stop, done, spawner_tid, killer_tid;
} grow;

static void grow_child(void *arg)
{
	(void)arg;
	long v;
	weft_chan_recv(grow.ch, &v, WEFT_FOREVER);
	atomic_fetch_add(&grow.done, 1);
}

static void grow_killer(void *arg)
{
	(void)arg;
	atomic_store(&grow.killer_tid, (int)syscall(SYS_gettid));
	long v = 1;
	while (!atomic_load(&grow.stop))
		if (weft_chan_send(grow.ch, &v, WEFT_FOREVER) < 0)
			break;
}

static void grow_spawner(void *arg)
{
	(void)arg;
	atomic_store(&grow.spawner_tid, (int)syscall(SYS_gettid));
	while (!atomic_load(&grow.killer_tid) && !atomic_load(&grow.stop))
		sched_yield(); /* no switch: the killer can only start on the other worker */
	long spawned = 0;
	weft_scope *into = grow.root;
	if (grow.into_sub) {
		ASSERT_OK(weft_scope_create(&grow.sub, grow.root));
		into = grow.sub;
	}
	while (!atomic_load(&grow.stop)) {
		if (spawned - atomic_load(&grow.done) < grow.ahead &&
		    weft_spawn(into, grow_child, NULL, &(weft_spawn_opts){.stack_size = grow.stack},
		               NULL) == 0)
			spawned++;
		if (!grow.into_sub && weft_fiber_yield() < 0)
			break; /* into_sub: no switch at all until the end */
	}
	weft_scope_destroy(grow.sub);
	grow.sub = NULL;
}

/* Spawn `first` pinned, wait until it runs (it stores its thread id in *first_tid and then never
 * switches until `second` has stored its own), then `second` pinned: so the two run on different
 * workers. */
static void spawn_pinned_pair(weft_scope *root, weft_fiber_fn first, _Atomic int *first_tid,
                              weft_fiber_fn second)
{
	ASSERT_OK(weft_spawn(root, first, NULL, &(weft_spawn_opts){.pinned = true}, NULL));
	int64_t end = in_ms(20000);
	while (!atomic_load(first_tid) && weft_now() < end)
		usleep(100);
	ASSERT_OK(weft_spawn(root, second, NULL, &(weft_spawn_opts){.pinned = true}, NULL));
}

/* Runs `cycles` children; the stacks mapped beyond the fibers alive must stay below `bound` plus
 * the most fibers alive at once. */
static void grow_round(size_t stack, bool into_sub, int cycles, long bound)
{
	weft_sched *s = NULL;
	/* small caches (16 stacks of 64 KiB per worker, 32 spare): what is mapped beyond the fibers
	 * alive is mostly what waits */
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 2, .stack_cache = 1 << 20}));
	grow.root = weft_sched_root(s);
	grow.stack = stack;
	grow.ahead = 64;
	grow.into_sub = into_sub;
	ASSERT_OK(weft_chan_create(&grow.ch, sizeof(long), 0));
	spawn_pinned_pair(grow.root, grow_spawner, &grow.spawner_tid, grow_killer);
	int64_t end = in_ms(60000);
	long over_max = 0, alive_max = 0;
	while (atomic_load(&grow.done) < cycles && weft_now() < end) {
		weft_sched_stats st;
		ASSERT_OK(weft_sched_stats_get(s, &st));
		long over = (long)(st.guarded_stacks + st.canary_stacks) - st.fibers_alive;
		if (over > over_max)
			over_max = over;
		if ((long)st.fibers_alive > alive_max)
			alive_max = (long)st.fibers_alive;
		usleep(1000);
	}
	printf("# stacks mapped beyond the fibers alive: at most %ld; fibers alive: at most %ld\n",
	       over_max, alive_max);
	int done = atomic_load(&grow.done);
	atomic_store(&grow.stop, 1);
	ASSERT_OK(weft_chan_close(grow.ch));
	weft_sched_destroy(s);
	weft_chan_destroy(grow.ch);
	ASSERT_TRUE(atomic_load(&grow.spawner_tid) != atomic_load(&grow.killer_tid));
	ASSERT_GE(done, cycles);
	/* what waits is bounded by a few thousand plus the spawner's peak of live fibers (scope.c),
	 * 64 here; without the bound it grows with the rounds (18,000 and more after 30,000) */
	ASSERT_LE(over_max, bound + alive_max);
}

TEST_TIMEOUT(fiber_remote_dead_blocks_stay_bounded, 120)
{
	/* 32 KiB stacks are never cached: what is mapped beyond the fibers alive waits to be
	 * unlinked; before the bound, most of the 30,000 did */
	grow_round(32768, false, 30000, 2000);
}

TEST_TIMEOUT(fiber_remote_dead_blocks_of_a_sub_scope_stay_bounded, 120)
{
	/* the same into a scope of the spawner's, which never switches: before the bound (a
	 * spawn of another size than the default reaped only the root's dead blocks), nearly every
	 * child's block waited */
	grow_round(32768, true, 30000, 2000);
}

/* The same bound for children of the default size whose spawner's cache never runs dry, so that
 * no spawn misses it and only the periodic checks and the spawn path's bulk reaps unlink (scope.c):
 * the spawner S, pinned on worker W, spawns children that park on `kill` on W; the killer K,
 * pinned on the other worker V, hands each a value, which runs it at once on V (an unbuffered
 * hand-off), where it ends: its block goes onto W's remote_root. Before each spawn, S hands a
 * value to a feeder parked on `feed`: the feeder runs at once on W and ends there, and since a
 * plain thread spawned it, its block goes to W's cache. S spawns only on such a credit and keeps
 * at most 8 (far below what the cache holds: a full cache gives 15 blocks to the spare list at a
 * time), so W's cache always holds a block per credit. The feeders come from a plain thread that
 * keeps at most `ahead` of them alive (a semaphore each posts as it ends): the injection queue
 * does not grow. S and K never block (try-sends and yields), so W and V never park and the
 * reaps before parking never run either. S reads the backlog (weft__root_backlog) after each
 * spawn. */
static struct {
	weft_sched *s;
	weft_scope *root;
	weft_chan *kill, *feed;
	sem_t room; /* feeders the feeder thread may still add */
	long cycles, ahead;
	long backlog_max, alive_max;  /* S's samples */
	_Atomic long done, done_home; /* children ended; of them, on S's thread */
	_Atomic long fed;             /* feeders S handed a value to */
	_Atomic int stop, spawner_tid, killer_tid;
} feed;

static void feed_child(void *arg)
{
	(void)arg;
	long v;
	if (weft_chan_recv(feed.kill, &v, WEFT_FOREVER) == 0) {
		if ((int)syscall(SYS_gettid) == atomic_load(&feed.spawner_tid))
			atomic_fetch_add(&feed.done_home, 1);
		atomic_fetch_add(&feed.done, 1);
	}
}

static void feed_feeder(void *arg)
{
	(void)arg;
	long v;
	(void)weft_chan_recv(feed.feed, &v, WEFT_FOREVER);
	sem_post(&feed.room);
}

static void *feed_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&feed.stop)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		if (sem_clockwait(&feed.room, CLOCK_MONOTONIC, &ts) == 0)
			ASSERT_OK(weft_spawn(feed.root, feed_feeder, NULL, NULL, NULL));
	}
	return NULL;
}

static void feed_killer(void *arg)
{
	(void)arg;
	atomic_store(&feed.killer_tid, (int)syscall(SYS_gettid));
	long v = 1;
	while (!atomic_load(&feed.stop))
		if (weft_chan_try_send(feed.kill, &v) < 0) /* no child parked: no wait either */
			weft_fiber_yield();
}

static void feed_spawner(void *arg)
{
	(void)arg;
	atomic_store(&feed.spawner_tid, (int)syscall(SYS_gettid));
	while (!atomic_load(&feed.killer_tid) && !atomic_load(&feed.stop))
		sched_yield(); /* no switch: K can only start on the other worker */
	long spawned = 0, credit = 0, v = 0;
	while (!atomic_load(&feed.stop) && spawned < feed.cycles) {
		if (credit < 8 &&
		    weft_chan_try_send(feed.feed, &v) == 0) { /* a feeder ended here */
			credit++;
			atomic_fetch_add(&feed.fed, 1);
		}
		long alive = spawned - atomic_load(&feed.done);
		if (credit > 0 && alive < feed.ahead) {
			ASSERT_OK(weft_spawn(feed.root, feed_child, NULL, NULL, NULL));
			spawned++;
			credit--;
			long b = weft__root_backlog(feed.s);
			if (b > feed.backlog_max)
				feed.backlog_max = b;
			if (alive + 1 > feed.alive_max)
				feed.alive_max = alive + 1;
		}
		weft_fiber_yield(); /* the new child parks on `kill` here */
	}
}

TEST_TIMEOUT(fiber_remote_root_blocks_stay_bounded_with_a_full_cache, 120)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	feed.cycles = 20000;
#else
	feed.cycles = 30000;
#endif
	feed.ahead = 64;
	ASSERT_OK(weft_sched_create(&feed.s, &(weft_sched_opts){.threads = 2}));
	feed.root = weft_sched_root(feed.s);
	ASSERT_OK(weft_chan_create(&feed.kill, sizeof(long), 0));
	ASSERT_OK(weft_chan_create(&feed.feed, sizeof(long), 0));
	ASSERT_EQ(sem_init(&feed.room, 0, (unsigned)feed.ahead), 0);
	spawn_pinned_pair(feed.root, feed_spawner, &feed.spawner_tid, feed_killer);
	pthread_t feeder;
	ASSERT_EQ(pthread_create(&feeder, NULL, feed_thread, NULL), 0);
	int64_t end = in_ms(60000);
	while (atomic_load(&feed.done) < feed.cycles && weft_now() < end)
		usleep(1000);
	long done = atomic_load(&feed.done);
	atomic_store(&feed.stop, 1);
	ASSERT_EQ(pthread_join(feeder, NULL), 0);
	ASSERT_OK(weft_chan_close(feed.kill));
	ASSERT_OK(weft_chan_close(feed.feed));
	join_all(feed.s);
	printf("# remote_root backlog: at most %ld; the spawner's fibers alive: at most %ld; "
	       "children %ld (%ld ended on the spawner's thread), feeders %ld\n",
	       feed.backlog_max, feed.alive_max, done, atomic_load(&feed.done_home),
	       atomic_load(&feed.fed));
	weft_sched_destroy(feed.s);
	weft_chan_destroy(feed.kill);
	weft_chan_destroy(feed.feed);
	sem_destroy(&feed.room);
	ASSERT_TRUE(atomic_load(&feed.spawner_tid) != atomic_load(&feed.killer_tid));
	ASSERT_GE(done, feed.cycles);
	/* the case is the one meant: the children end away from their spawner (all of them, by
	 * the hand-off) */
	ASSERT_LE(atomic_load(&feed.done_home), feed.cycles / 10);
	/* REAP_BACKLOG + REAP_SPAWN plus the spawner's peak of live fibers (scope.c), with room for
	 * a loaded machine (about 1,050 measured); without the periodic and bulk reaps every
	 * child's block waits (29,900 and more of the 30,000) */
	ASSERT_LE(feed.backlog_max, 3000 + feed.alive_max);
}

/* ---- stacks
 * -------------------------------------------------------------------------------------- */

static void sleep_long(void *arg)
{
	(void)arg;
	weft_fiber_sleep_until(WEFT_FOREVER);
}

/* Stacks mapped now (cached ones included). */
static long stacks_now(weft_sched *s)
{
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	return st.guarded_stacks + st.canary_stacks;
}

static void burst_child(void *arg)
{
	long v;
	(void)weft_chan_recv(arg, &v, WEFT_FOREVER); /* until the channel closes */
}

/* n fibers of the default size alive at once (each waits for the close), then all ended; returns
 * the most stacks mapped at once while they lived. */
static long burst(weft_sched *s, int n)
{
	weft_chan *ch;
	weft_scope *sc;
	ASSERT_OK(weft_chan_create(&ch, sizeof(long), 0));
	ASSERT_OK(weft_scope_create(&sc, weft_sched_root(s)));
	for (int i = 0; i < n; i++)
		ASSERT_OK(weft_spawn(sc, burst_child, ch, NULL, NULL));
	long peak = stacks_now(s);
	ASSERT_OK(weft_chan_close(ch));
	ASSERT_OK(weft_scope_join(sc, in_ms(20000)));
	weft_scope_destroy(sc);
	weft_chan_destroy(ch);
	return peak;
}

/* Small caches: 1 MiB per worker, 14 stacks of 64 KiB (72 KiB mapped each); the spare list's
 * floor as much again. */
#define BURST_CACHE (1 << 20)
#define BURST_FLOOR_STACKS 28
#define BURST_N 500

TEST_TIMEOUT(fiber_stack_cache_keeps_a_burst_then_trims_it, 60)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s,
	                            &(weft_sched_opts){.threads = 1, .stack_cache = BURST_CACHE}));
	long peak = burst(s, BURST_N);
	/* the burst's stacks stay for the next one (without: the 28 the caps held, and every spawn
	 * past them mapped a stack and every exit unmapped one) */
	long kept = stacks_now(s);
	ASSERT_GE(kept, BURST_N - 50);
	ASSERT_LE(kept, peak);
	/* and the next burst maps at most the worker's cache again (this test's spawns come from a
	 * plain thread, which takes from the spare list only): the stacks never number more than
	 * the most in use at once plus the workers' caches */
	long peak2 = burst(s, BURST_N);
	ASSERT_LE(peak2, BURST_N + BURST_FLOOR_STACKS / 2 + 2);
	ASSERT_LE(stacks_now(s), BURST_N + BURST_FLOOR_STACKS / 2 + 2);
	/* unused for a period (1 s), the excess goes, 32 blocks a step; the worker is parked all
	 * along (its sleep ends at the trim's next step) */
	int64_t start = weft_now(), end = in_ms(20000);
	long now;
	while ((now = stacks_now(s)) > BURST_FLOOR_STACKS + 2 && weft_now() < end)
		usleep(10000);
	printf("# %ld stacks kept after a burst of %d; %ld after %.2f s unused\n", kept, BURST_N,
	       now, (double)(weft_now() - start) / 1e9);
	ASSERT_LE(now, BURST_FLOOR_STACKS + 2);
	/* what is left is at least the spare list's floor (and what the worker's cache holds: 0 to
	 * 14, as its batches to the spare list left it) */
	ASSERT_GE(now, BURST_FLOOR_STACKS / 2);
	weft_sched_destroy(s);
}

TEST_TIMEOUT(fiber_stack_cache_keeps_what_bursts_keep_using, 60)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s,
	                            &(weft_sched_opts){.threads = 1, .stack_cache = BURST_CACHE}));
	(void)burst(s, BURST_N);
	int64_t last = weft_now();
	int checked = 0;
	/* bursts 250 ms apart for about 2.5 s, more than two periods: each period sees the list
	 * used, so nothing is trimmed (a check is made only when the gap since the last burst was
	 * well within a period: a stalled machine may pass one, and then a trim is right) */
	for (int i = 0; i < 10; i++) {
		usleep(250 * 1000);
		long n = stacks_now(s);
		if (weft_now() - last < 700 * 1000 * 1000) {
			ASSERT_GE(n, BURST_N - 50);
			checked++;
		}
		(void)burst(s, BURST_N);
		last = weft_now();
	}
	printf("# %d of 10 gaps checked\n", checked);
	ASSERT_GE(checked, 5);
	weft_sched_destroy(s);
}

TEST_TIMEOUT(fiber_stack_cache_trims_a_burst_under_a_trickle_of_spawns, 60)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s,
	                            &(weft_sched_opts){.threads = 1, .stack_cache = BURST_CACHE}));
	(void)burst(s, BURST_N);
	ASSERT_GE(stacks_now(s), BURST_N - 50);
	/* a spawn from this thread every 2 ms takes a stack from the spare list each time: the
	 * burst's other stacks still go after a period (a take only lowers the debt to what is past
	 * the floor; when a take ended it, 32 went per period: 15 s for these) */
	int64_t start = weft_now(), end = in_ms(20000);
	long now;
	while ((now = stacks_now(s)) > BURST_FLOOR_STACKS + 4 && weft_now() < end) {
		ASSERT_OK(weft_spawn(weft_sched_root(s), noop, NULL, NULL, NULL));
		usleep(2000);
	}
	double took = (double)(weft_now() - start) / 1e9;
	printf("# %ld stacks after %.2f s of a spawn every 2 ms\n", now, took);
	ASSERT_LE(now, BURST_FLOOR_STACKS + 4);
	ASSERT_LE(took, 8.0 * th_scale());
	weft_sched_destroy(s);
}

TEST_TIMEOUT(fiber_stack_cache_leaves_half_the_guard_budget, 60)
{
	/* each case runs in a fresh process: the budget is read at the first scheduler */
	setenv("WEFT_FIBER_GUARD_BUDGET", "200", 1);
	weft_sched *a = NULL, *b = NULL;
	ASSERT_OK(weft_sched_create(
	        &a, &(weft_sched_opts){.threads = 1, .stack_cache = BURST_CACHE, .name = "a"}));
	(void)burst(a, 200); /* all 200 guarded */
	/* past a's floor (28 stacks), guarded stacks are kept only while half the budget is free:
	 * at most 100 stay guarded in a's caches */
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(a, &st));
	printf("# %ld guarded stacks kept of 200\n", st.guarded_stacks);
	ASSERT_LE(st.guarded_stacks, 100 + 1);
	/* so another scheduler that insists on guard pages gets its share at once */
	ASSERT_OK(weft_sched_create(
	        &b, &(weft_sched_opts){.threads = 1, .guard = WEFT_GUARD_ALWAYS, .name = "b"}));
	for (int i = 0; i < 90; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(b), sleep_long, NULL, NULL, NULL));
	weft_sched_destroy(b);
	weft_sched_destroy(a);
	unsetenv("WEFT_FIBER_GUARD_BUDGET");
}

TEST(fiber_guard_budget_falls_back_to_canaries)
{
	/* each case runs in a fresh process: the budget is read at the first scheduler */
	setenv("WEFT_FIBER_GUARD_BUDGET", "10", 1);
	weft_sched *s = sched_new(2);
	for (int i = 0; i < 50; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), sleep_long, NULL, NULL, NULL));
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.guarded_stacks, 10);
	ASSERT_EQ(st.canary_stacks, 40);
	weft_sched_destroy(s);

	/* GUARD_ALWAYS refuses past the budget (the budget is used up by nobody now: 10 free) */
	ASSERT_OK(weft_sched_create(&s,
	                            &(weft_sched_opts){.threads = 1, .guard = WEFT_GUARD_ALWAYS}));
	int ok = 0, r;
	while ((r = weft_spawn(weft_sched_root(s), sleep_long, NULL, NULL, NULL)) == 0 && ok < 100)
		ok++;
	ASSERT_EQ(ok, 10);
	ASSERT_ERR(r, -ENOMEM);
	weft_sched_destroy(s);
	unsetenv("WEFT_FIBER_GUARD_BUDGET");
}

static char overflow_log[512];

static int deep(int n)
{
	volatile char pad[512];
	for (int i = 0; i < 512; i++) /* every byte written: the canary cannot be skipped over */
		pad[i] = (char)n;
	if (n == 0)
		return pad[0];
	return deep(n - 1) + pad[0];
}

static void overflow_fn(void *arg)
{
	(void)arg;
	weft_fiber_set_name("deep-diver");
	deep(1000); /* ~600 KB of frames on a 64 KiB stack */
}

/* The canary case: the overflow stays a few KiB deep (in the memory below the stack), and the
 * next switch finds the canary gone. */
static void canary_fn(void *arg)
{
	(void)arg;
	weft_fiber_set_name("canary-crusher");
	deep(140); /* ~72 KiB */
	weft_fiber_yield();
}

static void overflow_child(void *arg)
{
	int fd = open(overflow_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	int guard = (int)(intptr_t)arg;
	weft_sched *s = NULL;
	if (weft_sched_create(&s, &(weft_sched_opts){.threads = 1, .guard = guard}) < 0)
		_exit(3);
	weft_spawn(weft_sched_root(s), guard == WEFT_GUARD_NEVER ? canary_fn : overflow_fn, NULL,
	           NULL, NULL);
	weft_scope_join(weft_sched_root(s), weft_deadline_in(WEFT_SEC(20)));
	_exit(4); /* not reached: the overflow aborts */
}

static void check_overflow(int guard, const char *name, const char *how)
{
	snprintf(overflow_log, sizeof(overflow_log), "%s/overflow.log", th_tmpdir());
	pid_t pid = th_spawn_fn(overflow_child, (void *)(intptr_t)guard);
	int st = th_stop(pid, 0, 30);
	char *log = th_read_file(overflow_log);
	ASSERT_NOT_NULL(log);
	/* ASan sees a canary stack's overflow first (the stack is heap memory to it); TSan has a
	 * SIGSEGV handler of its own that names a stack overflow */
	if (st != 0 && (strstr(log, "AddressSanitizer: heap-buffer-overflow") ||
	                strstr(log, "ThreadSanitizer: stack-overflow"))) {
		free(log);
		return;
	}
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
		FAIL("wait status 0x%x; the child wrote: %s", st, log);
	ASSERT_CONTAINS(log, "overflowed its 65536-byte stack");
	ASSERT_CONTAINS(log, name);
	ASSERT_CONTAINS(log, how);
	free(log);
}

TEST_TIMEOUT(fiber_overflow_hits_the_guard_page, 40)
{
	check_overflow(WEFT_GUARD_ALWAYS, "deep-diver", "guard page");
}

TEST_TIMEOUT(fiber_overflow_trips_the_canary, 40)
{
	check_overflow(WEFT_GUARD_NEVER, "canary-crusher", "canary");
}

/* ---- dump and metrics
 * ------------------------------------------------------------------------------ */

static void named_sleeper(void *arg)
{
	if (weft_fiber_sleep_until(WEFT_FOREVER) == 0) /* not a tail call: its frame stays */
		*(int *)arg = 1;
}

TEST(fiber_dump_lists_fibers_with_stacks)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 2, .name = "dumptest"}));
	for (int i = 0; i < 3; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), named_sleeper, &(int){0},
		                     &(weft_spawn_opts){.name = "sleepy"}, NULL));
	static int flag;
	ASSERT_OK(weft_spawn(weft_sched_root(s), named_sleeper, &flag, NULL, NULL));
	for (int tries = 0; tries < 2000; tries++) {
		weft_sched_stats st;
		ASSERT_OK(weft_sched_stats_get(s, &st));
		if (st.runnable == 0)
			break;
		usleep(1000);
	}
	usleep(20000);
	char *text;
	size_t len;
	ASSERT_OK(weft_fiber_dump(&text, &len));
	ASSERT_EQ(strlen(text), len);
	ASSERT_CONTAINS(text, "4 fibers in 1 schedulers");
	ASSERT_CONTAINS(text, "\"sleepy\" waiting on sleep for");
	ASSERT_CONTAINS(text, "sched \"dumptest\"");
	/* the unnamed one is named by its function; stacks show the function parked */
	ASSERT_CONTAINS(text, "\"named_sleeper+0x0\"");
	ASSERT_CONTAINS(text, "#1");
	ASSERT_CONTAINS(text, "named_sleeper+");
	ASSERT_CONTAINS(text, "spawned at th_case_fiber_dump_lists_fibers_with_stacks+");
	free(text);
	weft_sched_destroy(s);
}

TEST(fiber_metrics_are_exported)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s,
	                            &(weft_sched_opts){.threads = 1, .name = "m1", .metrics = m}));
	ASSERT_ERR(weft_sched_create(&(weft_sched *){NULL},
	                             &(weft_sched_opts){.threads = 1, .name = "m1", .metrics = m}),
	           -EEXIST);
	atomic_store(&counter, 0);
	for (int i = 0; i < 100; i++)
		ASSERT_OK(
		        weft_spawn(weft_sched_root(s), count_fn, (void *)(intptr_t)1, NULL, NULL));
	join_all(s);
	char *text = th_wait_for_metrics(m, "weft_fibers_spawned{sched=\"m1\"} 100", 5);
	ASSERT_CONTAINS(text, "weft_fibers_alive{sched=\"m1\"} 0");
	ASSERT_CONTAINS(text, "weft_fiber_switches{sched=\"m1\"}");
	ASSERT_CONTAINS(text, "weft_fiber_runnable_seconds_count{sched=\"m1\"}");
	ASSERT_CONTAINS(text, "weft_fiber_runqueue_length{sched=\"m1\",worker=\"0\"} 0");
	free(text);
	weft_sched_destroy(s);
	ASSERT_EQ(weft_metrics_size(m), 0);
	weft_metrics_destroy(m);
}

/* ---- fault injection ----------------------------------------------------------------------------
 */

TEST(fiber_create_and_spawn_under_fault_injection)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	int r = -1;
	for (long n = 1; n < 200 && r != 0; n++) {
		weft_sched *s = NULL;
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		r = weft_sched_create(&s, &(weft_sched_opts){.threads = 2, .metrics = m});
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			weft_sched_destroy(s);
		} else {
			ASSERT_ERR(r, -ENOMEM);
			ASSERT_NULL(s);
			ASSERT_EQ(weft_metrics_size(m), 0);
		}
	}
	ASSERT_OK(r);
	/* thread start failure */
	weft_sched *s = NULL;
	weft__fault_arm(WEFT__FAULT_THREAD, 2, false);
	ASSERT_ERR(weft_sched_create(&s, &(weft_sched_opts){.threads = 2, .metrics = m}), -EAGAIN);
	weft__fault_arm(WEFT__FAULT_THREAD, 0, false);
	/* a spawn whose stack cannot be had */
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = 1, .metrics = m}));
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, false);
	ASSERT_ERR(weft_spawn(weft_sched_root(s), noop, NULL, NULL, NULL), -ENOMEM);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	ASSERT_EQ(weft_scope_fibers(weft_sched_root(s)), 0);
	ASSERT_OK(weft_spawn(weft_sched_root(s), noop, NULL, NULL, NULL));
	weft_sched_destroy(s);
	weft_metrics_destroy(m);
}

/* ---- fork
 * ------------------------------------------------------------------------------------------ */

static void fork_child(void *arg)
{
	weft_sched *parent = arg;
	if (!parent)
		goto fresh;
	/* the parent's scheduler is not this process's */
	if (weft_spawn(weft_sched_root(parent), noop, NULL, NULL, NULL) != -ESHUTDOWN)
		_exit(10);
	if (weft_scope_join(weft_sched_root(parent), 0) != -ESHUTDOWN)
		_exit(11);
	/* freeing the copy (no threads to stop) takes its series out of the registry, so the
	 * name can be used again */
	weft_sched_destroy(parent);
fresh:;
	/* a fresh one works */
	weft_sched *s = NULL;
	if (weft_sched_create(&s, &(weft_sched_opts){.threads = 2}) != 0)
		_exit(12);
	atomic_store(&counter, 0);
	for (int i = 0; i < 1000; i++)
		if (weft_spawn(weft_sched_root(s), count_fn, (void *)(intptr_t)1, NULL, NULL) != 0)
			_exit(13);
	int r = weft_scope_join(weft_sched_root(s),
	                        weft_deadline_in((int64_t)(WEFT_SEC(20) * th_scale())));
	if (r != 0) {
		fprintf(stderr, "fork child: join gave %d\n", r);
		_exit(14);
	}
	if (atomic_load(&counter) != 1000)
		_exit(15);
	weft_sched_destroy(s);
	_exit(0);
}

TEST_TIMEOUT(fiber_fork_child_builds_a_fresh_scheduler, 40)
{
	weft_sched *s = sched_new(2);
	static _Atomic int r[4];
	for (int i = 0; i < 4; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), forever_fn, &r[i], NULL, NULL));
#if defined(__SANITIZE_THREAD__)
	/* TSan cannot follow a child that starts threads after a multi-threaded fork (its thread
	 * registry keeps the parent's threads): here the parent's scheduler ends before the fork,
	 * and the child checks only that a fresh scheduler works */
	weft_sched_destroy(s);
	s = NULL;
#endif
	pid_t pid = th_spawn_fn(fork_child, s);
	int st = th_stop(pid, 0, 30);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	weft_sched_destroy(s);
}
