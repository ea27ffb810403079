/* fiber-test.h: what the fiber unit tests (test-sync.c, test-chan.c) share: deadlines scaled
 * for slow builds, a scheduler around a test body, spawning, waiting for a condition from a fiber
 * or a thread, and a plain thread that cancels a scope on cue (to race a cancel with a wake-up
 * for real). Static inline: each test uses what it needs. */
#ifndef WEFT_TESTS_FIBER_TEST_H
#define WEFT_TESTS_FIBER_TEST_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include <weft/fiber.h>

#include "harness.h"

static inline int64_t in_ms(double ms)
{
	return weft_deadline_in((int64_t)(ms * th_scale() * 1e6));
}

static inline weft_sched *sched_new(int threads)
{
	weft_sched *s = NULL;
	ASSERT_OK(weft_sched_create(&s, &(weft_sched_opts){.threads = threads}));
	ASSERT_NOT_NULL(s);
	return s;
}

/* Run fn(arg) as a fiber on a fresh scheduler of `threads` workers; wait for it and every fiber in
 * the root scope (60 s, scaled), then destroy the scheduler. */
static inline void run_fibers(int threads, weft_fiber_fn fn, void *arg)
{
	weft_sched *s = sched_new(threads);
	ASSERT_OK(weft_spawn(weft_sched_root(s), fn, arg, NULL, NULL));
	ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(60000)));
	weft_sched_destroy(s);
}

static inline weft_scope *root_scope(void)
{
	weft_sched *s = weft_sched_current();
	ASSERT_NOT_NULL(s);
	return weft_sched_root(s);
}

static inline void spawn_in(weft_scope *sc, weft_fiber_fn fn, void *arg)
{
	ASSERT_OK(weft_spawn(sc, fn, arg, NULL, NULL));
}

/* From a fiber: sleep 0.1 ms at a time until cond holds, failing after 10 s (scaled). */
#define FIBER_WAIT_FOR(cond)                                                                       \
	do {                                                                                       \
		int64_t fw_end_ = in_ms(10000);                                                    \
		while (!(cond)) {                                                                  \
			if (weft_now() > fw_end_)                                                  \
				FAIL("timed out waiting for %s", #cond);                           \
			(void)weft_fiber_sleep_until(weft_deadline_in(100000));                    \
		}                                                                                  \
	} while (0)

/* From a plain thread: the same, with 1 ms sleeps. */
#define THREAD_WAIT_FOR(cond)                                                                      \
	do {                                                                                       \
		int64_t tw_end_ = in_ms(10000);                                                    \
		while (!(cond)) {                                                                  \
			if (weft_now() > tw_end_)                                                  \
				FAIL("timed out waiting for %s", #cond);                           \
			th_sleep_ms(1);                                                            \
		}                                                                                  \
	} while (0)

/* A plain thread that cancels `target` when it is set, after `spin` busy iterations: the cancel
 * races with the wake-up for real (a canceller fiber would mostly run after it, on the waker's
 * worker). */
struct canceller {
	pthread_t thread;
	_Atomic(weft_scope *) target;
	_Atomic int spin;
	_Atomic int stop;
};

static inline void *canceller_main(void *arg)
{
	struct canceller *c = arg;
	while (!atomic_load(&c->stop)) {
		weft_scope *sc = atomic_load(&c->target);
		if (!sc) {
			sched_yield();
			continue;
		}
		for (volatile int i = atomic_load(&c->spin); i > 0; i--)
			;
		ASSERT_OK(weft_scope_cancel(sc));
		atomic_store(&c->target, NULL);
	}
	return NULL;
}

static struct canceller canceller __attribute__((unused));

static inline void canceller_start(void)
{
	atomic_store(&canceller.stop, 0);
	ASSERT_EQ(pthread_create(&canceller.thread, NULL, canceller_main, &canceller), 0);
}

static inline void canceller_stop(void)
{
	atomic_store(&canceller.stop, 1);
	ASSERT_EQ(pthread_join(canceller.thread, NULL), 0);
}

/* From the waking fiber: start the cancel of sc, then spin 0-100 us before the wake-up (the
 * canceller thread takes a few us to notice: either may come first). */
static inline void canceller_fire(weft_scope *sc, uint64_t *rng)
{
	atomic_store(&canceller.spin, (int)(th_rng(rng) % 1000));
	atomic_store(&canceller.target, sc);
	int64_t until = weft_now() + (int64_t)(th_rng(rng) % 100000);
	while (weft_now() < until)
		;
}

#endif
