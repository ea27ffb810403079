/* test-fiber-stress.c: hundreds of thousands of fibers on every build, TSan's included (the counts
 * are not scaled down: the point is to run many fibers under the race detector), bounded in time:
 * 100,000 fibers sleeping, yielding and migrating, all alive at once (under TSan at most 4,000 at
 * once: TSan counts each fiber as a thread and stops at 8,128); 200,000 short fibers spawned from
 * fibers into nested scopes while scopes are cancelled under them; exact counts at the end. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdlib.h>

#include <weft/fiber.h>

#include "harness.h"

static _Atomic long done, cancelled_seen;

#if defined(__SANITIZE_THREAD__)
#define ALIVE_MAX 4000
#else
#define ALIVE_MAX 300000
#endif

static weft_sched *make(size_t stack)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(
	        &s,
	        &(weft_sched_opts){.threads = 2, .stack_size = stack, .max_fibers = ALIVE_MAX}));
	return s;
}

/* Spawn, waiting for room while max_fibers are alive (-EAGAIN), up to a deadline. */
static int spawn_wait(weft_scope *sc, weft_fiber_fn fn, void *arg)
{
	int64_t deadline = weft_deadline_in(WEFT_SEC(300));
	for (;;) {
		int r = weft_spawn(sc, fn, arg, NULL, NULL);
		if (r != -EAGAIN || weft_now() > deadline)
			return r;
		if (weft_sched_current())
			weft_fiber_sleep_until(weft_deadline_in(WEFT_USEC(200)));
		else
			weft_sleep_until(weft_deadline_in(WEFT_USEC(200)));
	}
}

static void sleeper(void *arg)
{
	uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	for (int i = 0; i < 3; i++) {
		int r = weft_fiber_sleep_until(
		        weft_deadline_in((int64_t)(th_rng(&rng) % 20000000)));
		if (r != 0)
			FAIL("sleep gave %d", r);
		weft_fiber_yield();
	}
	atomic_fetch_add_explicit(&done, 1, memory_order_relaxed);
}

TEST_TIMEOUT(stress_100k_fibers_sleep_and_yield, 600)
{
	weft_sched *s = make(16 * 1024);
	enum { N = 100000 };
	atomic_store(&done, 0);
	for (long i = 0; i < N; i++)
		ASSERT_OK(spawn_wait(weft_sched_root(s), sleeper, (void *)(uintptr_t)(i + 1)));
	ASSERT_OK(weft_scope_join(weft_sched_root(s), weft_deadline_in(WEFT_SEC(500))));
	ASSERT_EQ(atomic_load(&done), N);
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.spawned, N);
	ASSERT_EQ(st.fibers_alive, 0);
	ASSERT_GE(st.switches, (uint64_t)N * 6);
	weft_sched_destroy(s);
}

/* A leaf: a short life, sometimes a wait that cancellation may cut. */
static void leaf(void *arg)
{
	if ((uintptr_t)arg % 4 == 0) {
		int r = weft_fiber_sleep_until(weft_deadline_in(WEFT_USEC(200)));
		if (r == -ECANCELED)
			atomic_fetch_add_explicit(&cancelled_seen, 1, memory_order_relaxed);
		else if (r != 0)
			FAIL("sleep gave %d", r);
	} else if ((uintptr_t)arg % 4 == 1) {
		weft_fiber_yield();
	}
	atomic_fetch_add_explicit(&done, 1, memory_order_relaxed);
}

struct spawner {
	weft_scope *parent;
	int id;
	_Atomic long spawned;
};

/* Spawns leaves into a fresh child scope per batch; every other batch is cancelled while its
 * leaves run. A spawn into a scope cancelled under it fails with -ECANCELED, never otherwise. */
static void spawner(void *arg)
{
	struct spawner *sp = arg;
	for (int batch = 0; batch < 100; batch++) {
		weft_scope *sc;
		ASSERT_OK(weft_scope_create(&sc, sp->parent));
		for (int i = 0; i < 500; i++) {
			int r = spawn_wait(sc, leaf, (void *)(uintptr_t)i);
			if (r == 0)
				atomic_fetch_add_explicit(&sp->spawned, 1, memory_order_relaxed);
			else
				FAIL("spawn gave %d", r);
		}
		if (batch % 2)
			ASSERT_OK(weft_scope_cancel(sc));
		weft_scope_destroy(sc); /* joins */
	}
}

TEST_TIMEOUT(stress_200k_spawns_with_cancellation, 600)
{
	weft_sched *s = make(16 * 1024);
	atomic_store(&done, 0);
	atomic_store(&cancelled_seen, 0);
	enum { SPAWNERS = 4 };
	static struct spawner sp[SPAWNERS];
	weft_scope *outer;
	ASSERT_OK(weft_scope_create(&outer, weft_sched_root(s)));
	for (int i = 0; i < SPAWNERS; i++) {
		sp[i].parent = outer;
		sp[i].id = i;
		atomic_store(&sp[i].spawned, 0);
		ASSERT_OK(weft_spawn(weft_sched_root(s), spawner, &sp[i], NULL, NULL));
	}
	ASSERT_OK(weft_scope_join(weft_sched_root(s), weft_deadline_in(WEFT_SEC(500))));
	long spawned = 0;
	for (int i = 0; i < SPAWNERS; i++)
		spawned += atomic_load(&sp[i].spawned);
	ASSERT_EQ(spawned, SPAWNERS * 100 * 500);
	ASSERT_EQ(atomic_load(&done), spawned); /* every leaf ran to its end, cancelled or not */
	weft_sched_stats st;
	ASSERT_OK(weft_sched_stats_get(s, &st));
	ASSERT_EQ(st.fibers_alive, 0);
	weft_scope_destroy(outer);
	weft_sched_destroy(s);
}
