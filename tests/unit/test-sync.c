/* test-sync.c: the fibers' mutex, condition variable, semaphore and wait group, and the spin lock
 * under them (src/fiber/sync.c): argument validation in and out of fibers, mutual exclusion under
 * contention on 1, 2 and 4 workers, FIFO hand-off, deadlines, cancellation of each kind of wait
 * (fcond_wait returning with the mutex held, also when it must wait for it), timeouts and cancels
 * racing with wake-ups (no lost wake-up, no double ownership, counts balance), producer/consumer
 * on condition variables, semaphore counts, wait groups with several waiters, calls from plain
 * threads, and destroy with waiters. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "fiber-test.h"
#include "harness.h"
#include "internal/fiber.h"

/* sync.c's test hook: the records queued on any of the four objects. */
int weft__fsync_waiters(void *obj);

/* ---- helpers -------------------------------------------------------------------------------- */

static int waiters(void *obj)
{
	return weft__fsync_waiters(obj);
}

/* ---- argument validation -------------------------------------------------------------------- */

TEST(args_outside_a_fiber)
{
	weft_fmutex m = WEFT_FMUTEX_INIT;
	weft_fcond c = WEFT_FCOND_INIT;
	weft_fsem s = WEFT_FSEM_INIT;
	weft_waitgroup wg = WEFT_WAITGROUP_INIT;

	ASSERT_ERR(weft_fmutex_lock(NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_fmutex_lock(&m, -2), -EINVAL);
	ASSERT_ERR(weft_fmutex_lock(&m, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_fmutex_trylock(NULL), -EINVAL);
	ASSERT_ERR(weft_fmutex_trylock(&m), -EPERM);
	ASSERT_ERR(weft_fmutex_unlock(NULL), -EINVAL);
	ASSERT_ERR(weft_fmutex_unlock(&m), -EPERM);
	ASSERT_EQ(weft_fmutex_destroy(NULL), 0);
	ASSERT_EQ(weft_fmutex_destroy(&m), 0);

	ASSERT_ERR(weft_fcond_wait(NULL, &m, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_fcond_wait(&c, NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_fcond_wait(&c, &m, -2), -EINVAL);
	ASSERT_ERR(weft_fcond_wait(&c, &m, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_fcond_signal(NULL), -EINVAL);
	ASSERT_ERR(weft_fcond_broadcast(NULL), -EINVAL);
	ASSERT_EQ(weft_fcond_signal(&c), 0); /* no waiter: nothing happens, from a thread too */
	ASSERT_EQ(weft_fcond_broadcast(&c), 0);
	ASSERT_EQ(weft_fcond_destroy(NULL), 0);
	ASSERT_EQ(weft_fcond_destroy(&c), 0);

	ASSERT_ERR(weft_fsem_acquire(NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_fsem_acquire(&s, -2), -EINVAL);
	ASSERT_ERR(weft_fsem_acquire(&s, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_fsem_tryacquire(NULL), -EINVAL);
	ASSERT_ERR(weft_fsem_tryacquire(&s), -EAGAIN);
	ASSERT_ERR(weft_fsem_release(NULL, 1), -EINVAL);
	ASSERT_ERR(weft_fsem_release(&s, 0), -EINVAL);
	ASSERT_ERR(weft_fsem_release(&s, -1), -EINVAL);
	ASSERT_ERR(weft_fsem_release(&s, INT_MIN), -EINVAL);
	ASSERT_EQ(weft_fsem_release(&s, 2), 0); /* from a plain thread */
	ASSERT_EQ(weft_fsem_tryacquire(&s), 0);
	ASSERT_EQ(weft_fsem_tryacquire(&s), 0);
	ASSERT_ERR(weft_fsem_tryacquire(&s), -EAGAIN);
	ASSERT_EQ(weft_fsem_destroy(NULL), 0);
	ASSERT_EQ(weft_fsem_destroy(&s), 0);

	ASSERT_ERR(weft_waitgroup_add(NULL, 1), -EINVAL);
	ASSERT_ERR(weft_waitgroup_done(NULL), -EINVAL);
	ASSERT_ERR(weft_waitgroup_wait(NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_waitgroup_wait(&wg, -2), -EINVAL);
	ASSERT_ERR(weft_waitgroup_wait(&wg, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_waitgroup_done(&wg), -EINVAL); /* below 0 */
	ASSERT_EQ(weft_waitgroup_add(&wg, 2), 0);
	ASSERT_ERR(weft_waitgroup_add(&wg, -3), -EINVAL); /* changes nothing: */
	ASSERT_EQ(weft_waitgroup_done(&wg), 0);
	ASSERT_EQ(weft_waitgroup_done(&wg), 0);
	ASSERT_ERR(weft_waitgroup_done(&wg), -EINVAL);
	ASSERT_ERR(weft_waitgroup_add(&wg, LONG_MIN), -EINVAL);
	ASSERT_EQ(weft_waitgroup_add(&wg, 0), 0);
	ASSERT_ERR(weft_waitgroup_add(&wg, LONG_MAX), -EOVERFLOW);
	ASSERT_EQ(weft_waitgroup_add(&wg, WEFT_WAITGROUP_MAX), 0);
	ASSERT_ERR(weft_waitgroup_add(&wg, 1), -EOVERFLOW);
	ASSERT_EQ(weft_waitgroup_add(&wg, -WEFT_WAITGROUP_MAX), 0);
	ASSERT_ERR(weft_waitgroup_done(&wg), -EINVAL); /* back at 0 */
	ASSERT_EQ(weft_waitgroup_destroy(NULL), 0);
	ASSERT_EQ(weft_waitgroup_destroy(&wg), 0);
}

TEST(sem_release_overflow)
{
	/* The semaphore's permits are its 4th word (checked first): set them near the limit rather
	 * than release INT32_MAX four billion times. */
	weft_fsem s = WEFT_FSEM_INIT;
	ASSERT_OK(weft_fsem_release(&s, 3));
	ASSERT_EQ(s.opaque_[3], 3);
	s.opaque_[3] = (uint64_t)INT64_MAX - 5;
	ASSERT_ERR(weft_fsem_release(&s, 6), -EOVERFLOW);
	ASSERT_EQ(s.opaque_[3], (uint64_t)INT64_MAX - 5); /* unchanged */
	ASSERT_OK(weft_fsem_release(&s, 5));
	ASSERT_ERR(weft_fsem_release(&s, 1), -EOVERFLOW);
	ASSERT_EQ(weft_fsem_tryacquire(&s), 0);
	ASSERT_OK(weft_fsem_release(&s, 1));
	ASSERT_ERR(weft_fsem_release(&s, INT32_MAX), -EOVERFLOW);
}

struct args_ctx {
	weft_fmutex m;
	weft_fcond c;
	_Atomic int stage;
	_Atomic int other_done;
};

static void args_other(void *arg)
{
	struct args_ctx *x = arg;
	ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM); /* held by the first fiber */
	ASSERT_ERR(weft_fmutex_trylock(&x->m), -EBUSY);
	ASSERT_ERR(weft_fmutex_lock(&x->m, 0), -ETIMEDOUT); /* deadlines in the past */
	ASSERT_ERR(weft_fmutex_lock(&x->m, weft_now() - 1), -ETIMEDOUT);
	ASSERT_ERR(weft_fcond_wait(&x->c, &x->m, WEFT_FOREVER), -EPERM);
	ASSERT_EQ(waiters(&x->m), 0);
	atomic_store(&x->other_done, 1);
}

static void args_fiber(void *arg)
{
	struct args_ctx *x = arg;
	ASSERT_ERR(weft_fmutex_lock(&x->m, -2), -EINVAL);
	ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM); /* not locked */
	ASSERT_ERR(weft_fcond_wait(&x->c, &x->m, WEFT_FOREVER), -EPERM);
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_ERR(weft_fmutex_lock(&x->m, WEFT_FOREVER), -EDEADLK);
	ASSERT_ERR(weft_fmutex_trylock(&x->m), -EBUSY);
	ASSERT_ERR(weft_fmutex_destroy(&x->m), -EBUSY);
	spawn_in(root_scope(), args_other, x);
	FIBER_WAIT_FOR(atomic_load(&x->other_done));
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM);
	ASSERT_EQ(weft_fmutex_trylock(&x->m), 0);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_EQ(weft_fmutex_destroy(&x->m), 0);

	/* a deadline in the past: the condition variable times out with the mutex still held */
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_ERR(weft_fcond_wait(&x->c, &x->m, 0), -ETIMEDOUT);
	ASSERT_ERR(weft_fcond_wait(&x->c, &x->m, in_ms(5)), -ETIMEDOUT);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);

	weft_fsem s = WEFT_FSEM_INIT;
	ASSERT_ERR(weft_fsem_acquire(&s, -2), -EINVAL);
	ASSERT_ERR(weft_fsem_acquire(&s, 0), -ETIMEDOUT);
	ASSERT_ERR(weft_fsem_acquire(&s, in_ms(5)), -ETIMEDOUT);
	ASSERT_EQ(waiters(&s), 0);
	ASSERT_OK(weft_fsem_release(&s, 1));
	ASSERT_EQ(weft_fsem_acquire(&s, 0), 0); /* ready: the deadline does not matter */

	weft_waitgroup wg = WEFT_WAITGROUP_INIT;
	ASSERT_EQ(weft_waitgroup_wait(&wg, 0), 0);
	ASSERT_OK(weft_waitgroup_add(&wg, 1));
	ASSERT_ERR(weft_waitgroup_wait(&wg, in_ms(5)), -ETIMEDOUT);
	ASSERT_OK(weft_waitgroup_done(&wg));
	ASSERT_EQ(weft_waitgroup_wait(&wg, WEFT_FOREVER), 0);
	atomic_store(&x->stage, 1);
}

TEST(args_in_a_fiber)
{
	static struct args_ctx x;
	run_fibers(2, args_fiber, &x);
	ASSERT_EQ(atomic_load(&x.stage), 1);
}

/* ---- mutual exclusion ----------------------------------------------------------------------- */

#define EXCL_FIBERS 8
#define EXCL_ROUNDS 300

struct excl_ctx {
	weft_fmutex m;
	long counter; /* plain: only the owner touches it (TSan checks) */
	_Atomic int inside;
	_Atomic int max_inside;
	weft_waitgroup wg;
};

static void excl_worker(void *arg)
{
	struct excl_ctx *x = arg;
	for (int i = 0; i < EXCL_ROUNDS; i++) {
		ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
		int in = atomic_fetch_add(&x->inside, 1) + 1;
		if (in > atomic_load(&x->max_inside))
			atomic_store(&x->max_inside, in);
		long v = x->counter;
		if (i % 3 == 0)
			(void)weft_fiber_yield(); /* others run, and try the lock, meanwhile */
		x->counter = v + 1;
		atomic_fetch_sub(&x->inside, 1);
		ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
		if (i % 7 == 0)
			(void)weft_fiber_yield();
	}
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void excl_main(void *arg)
{
	struct excl_ctx *x = arg;
	ASSERT_OK(weft_waitgroup_add(&x->wg, EXCL_FIBERS));
	for (int i = 0; i < EXCL_FIBERS; i++)
		spawn_in(root_scope(), excl_worker, x);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(30000)), 0);
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_EQ(x->counter, (long)EXCL_FIBERS * EXCL_ROUNDS);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_EQ(atomic_load(&x->max_inside), 1);
	ASSERT_EQ(weft_fmutex_destroy(&x->m), 0);
}

static void excl_run(int threads)
{
	struct excl_ctx *x = calloc(1, sizeof(*x));
	ASSERT_NOT_NULL(x);
	run_fibers(threads, excl_main, x);
	ASSERT_EQ(x->counter, (long)EXCL_FIBERS * EXCL_ROUNDS);
	free(x);
}

TEST_TIMEOUT(mutex_exclusion_1_thread, 60)
{
	excl_run(1);
}

TEST_TIMEOUT(mutex_exclusion_2_threads, 60)
{
	excl_run(2);
}

TEST_TIMEOUT(mutex_exclusion_4_threads, 60)
{
	excl_run(4);
}

/* ---- FIFO hand-off and deadlines ------------------------------------------------------------ */

#define FIFO_N 6

struct fifo_ctx {
	weft_fmutex m;
	int order[FIFO_N + 2];
	int norder; /* under m */
	_Atomic int results[FIFO_N];
	_Atomic int go;
	weft_waitgroup wg;
};

struct fifo_arg {
	struct fifo_ctx *x;
	int id;
	int64_t deadline;
};

static void fifo_waiter(void *arg)
{
	struct fifo_arg *a = arg;
	struct fifo_ctx *x = a->x;
	int r = weft_fmutex_lock(&x->m, a->deadline);
	atomic_store(&x->results[a->id], r == 0 ? 1 : r);
	if (r == 0) {
		x->order[x->norder++] = a->id;
		if (a->id == 0) /* hold it until the main fiber has seen that it is held */
			FIBER_WAIT_FOR(atomic_load(&x->go));
		ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	} else {
		ASSERT_ERR(r, -ETIMEDOUT);
		ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM); /* never the owner */
	}
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void fifo_main(void *arg)
{
	struct fifo_ctx *x = arg;
	struct fifo_arg a[FIFO_N];
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_OK(weft_waitgroup_add(&x->wg, FIFO_N));
	for (int i = 0; i < FIFO_N; i++) {
		/* waiter 2 gives up after 100 ms, in the middle of the queue */
		a[i] = (struct fifo_arg){x, i, i == 2 ? in_ms(100) : WEFT_FOREVER};
		spawn_in(root_scope(), fifo_waiter, &a[i]);
		/* queued (waiter 2 may have left already under a slow sanitizer) */
		FIBER_WAIT_FOR(waiters(&x->m) + (atomic_load(&x->results[2]) != 0) == i + 1);
	}
	ASSERT_ERR(weft_fmutex_destroy(&x->m), -EBUSY);
	FIBER_WAIT_FOR(atomic_load(&x->results[2]) != 0);
	ASSERT_ERR(atomic_load(&x->results[2]), -ETIMEDOUT);
	ASSERT_EQ(waiters(&x->m), FIFO_N - 1);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	/* handed over, not released: no barging past the queue */
	ASSERT_ERR(weft_fmutex_trylock(&x->m), -EBUSY);
	ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM);
	atomic_store(&x->go, 1);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(20000)), 0);
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_EQ(x->norder, FIFO_N - 1);
	int want[] = {0, 1, 3, 4, 5};
	for (int i = 0; i < FIFO_N - 1; i++)
		ASSERT_EQ(x->order[i], want[i]);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_EQ(weft_fmutex_destroy(&x->m), 0);
}

TEST(mutex_fifo_handoff_and_timeout)
{
	for (int threads = 1; threads <= 2; threads++) {
		struct fifo_ctx *x = calloc(1, sizeof(*x));
		ASSERT_NOT_NULL(x);
		run_fibers(threads, fifo_main, x);
		free(x);
	}
}

struct timeout_ctx {
	weft_fmutex m;
	_Atomic int held;
	_Atomic int release;
};

static void timeout_holder(void *arg)
{
	struct timeout_ctx *x = arg;
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	atomic_store(&x->held, 1);
	FIBER_WAIT_FOR(atomic_load(&x->release));
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
}

static void timeout_main(void *arg)
{
	struct timeout_ctx *x = arg;
	spawn_in(root_scope(), timeout_holder, x);
	FIBER_WAIT_FOR(atomic_load(&x->held));
	int64_t t0 = weft_now();
	ASSERT_ERR(weft_fmutex_lock(&x->m, t0 + 20 * 1000000), -ETIMEDOUT);
	ASSERT_GE(weft_now() - t0, 20 * 1000000);
	ASSERT_EQ(waiters(&x->m), 0);
	ASSERT_ERR(weft_fmutex_trylock(&x->m), -EBUSY); /* still the holder's */
	atomic_store(&x->release, 1);
	ASSERT_EQ(weft_fmutex_lock(&x->m, in_ms(10000)), 0);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_EQ(weft_fmutex_destroy(&x->m), 0);
}

TEST(mutex_timeout_leaves_lock_state_right)
{
	static struct timeout_ctx x;
	run_fibers(2, timeout_main, &x);
}

/* ---- cancellation --------------------------------------------------------------------------- */

enum { C_MUTEX, C_COND, C_COND_HELD, C_SEM, C_WG, C_N };

struct cancel_ctx {
	weft_fmutex m1; /* held by the main fiber: C_MUTEX waits for it */
	weft_fmutex m2; /* C_COND's mutex */
	weft_fmutex m3; /* C_COND_HELD's mutex, held by main while it cancels */
	weft_fcond c2, c3;
	weft_fsem s;
	weft_waitgroup wg;
	_Atomic int result[C_N];
	_Atomic int returned[C_N];
	_Atomic int cond_locked;
};

struct cancel_arg {
	struct cancel_ctx *x;
	int kind;
};

static void cancel_waiter(void *arg)
{
	struct cancel_arg *a = arg;
	struct cancel_ctx *x = a->x;
	int r = 0;
	switch (a->kind) {
	case C_MUTEX: r = weft_fmutex_lock(&x->m1, WEFT_FOREVER); break;
	case C_COND:
	case C_COND_HELD: {
		weft_fmutex *m = a->kind == C_COND ? &x->m2 : &x->m3;
		weft_fcond *c = a->kind == C_COND ? &x->c2 : &x->c3;
		ASSERT_EQ(weft_fmutex_lock(m, WEFT_FOREVER), 0);
		r = weft_fcond_wait(c, m, WEFT_FOREVER);
		/* back with the mutex held, whatever the result: only the owner can unlock */
		atomic_store(&x->result[a->kind], r);
		atomic_store(&x->returned[a->kind], 1);
		ASSERT_EQ(weft_fmutex_unlock(m), 0);
		return;
	}
	case C_SEM: r = weft_fsem_acquire(&x->s, WEFT_FOREVER); break;
	case C_WG: r = weft_waitgroup_wait(&x->wg, WEFT_FOREVER); break;
	}
	atomic_store(&x->result[a->kind], r);
	atomic_store(&x->returned[a->kind], 1);
	/* from now on every wait returns at once; a call that need not wait still works */
	ASSERT_ERR(weft_fsem_acquire(&x->s, WEFT_FOREVER), -ECANCELED);
	weft_fmutex own = WEFT_FMUTEX_INIT;
	ASSERT_EQ(weft_fmutex_lock(&own, WEFT_FOREVER), 0);
	ASSERT_EQ(weft_fmutex_unlock(&own), 0);
}

static void cancel_main(void *arg)
{
	struct cancel_ctx *x = arg;
	weft_scope *child;
	ASSERT_OK(weft_scope_create(&child, root_scope()));
	ASSERT_OK(weft_waitgroup_add(&x->wg, 1));
	ASSERT_EQ(weft_fmutex_lock(&x->m1, WEFT_FOREVER), 0);
	struct cancel_arg a[C_N];
	for (int k = 0; k < C_N; k++) {
		a[k] = (struct cancel_arg){x, k};
		spawn_in(child, cancel_waiter, &a[k]);
	}
	FIBER_WAIT_FOR(waiters(&x->m1) == 1 && waiters(&x->c2) == 1 && waiters(&x->c3) == 1 &&
	               waiters(&x->s) == 1 && waiters(&x->wg) == 1);
	ASSERT_EQ(weft_fmutex_lock(&x->m3, WEFT_FOREVER), 0); /* C_COND_HELD must wait for it */
	ASSERT_OK(weft_scope_cancel(child));
	for (int k = 0; k < C_N; k++)
		if (k != C_COND_HELD)
			FIBER_WAIT_FOR(atomic_load(&x->returned[k]));
	for (int k = 0; k < C_N; k++)
		if (k != C_COND_HELD)
			ASSERT_ERR(atomic_load(&x->result[k]), -ECANCELED);
	/* the cancelled fcond_wait relocks uncancellably: it waits for m3, cancelled or not */
	FIBER_WAIT_FOR(waiters(&x->m3) == 1);
	(void)weft_fiber_sleep_until(in_ms(20));
	ASSERT_EQ(atomic_load(&x->returned[C_COND_HELD]), 0);
	ASSERT_EQ(waiters(&x->m3), 1);
	ASSERT_EQ(weft_fmutex_unlock(&x->m3), 0); /* handed to it */
	ASSERT_EQ(weft_scope_join(child, in_ms(10000)), 0);
	ASSERT_ERR(atomic_load(&x->result[C_COND_HELD]), -ECANCELED);
	weft_scope_destroy(child);

	for (weft_fmutex *m = &x->m2; m <= &x->m3; m++) {
		ASSERT_EQ(waiters(m), 0);
		ASSERT_EQ(weft_fmutex_destroy(m), 0); /* released by the cond waiters */
	}
	ASSERT_EQ(waiters(&x->m1), 0);
	ASSERT_EQ(weft_fmutex_unlock(&x->m1), 0);
	ASSERT_EQ(weft_fmutex_destroy(&x->m1), 0);
	ASSERT_EQ(weft_fcond_destroy(&x->c2), 0);
	ASSERT_EQ(weft_fcond_destroy(&x->c3), 0);
	ASSERT_EQ(weft_fsem_destroy(&x->s), 0);
	ASSERT_EQ(weft_fsem_tryacquire(&x->s), -EAGAIN);
	ASSERT_EQ(weft_waitgroup_destroy(&x->wg), 0);
}

TEST(cancel_every_kind_of_wait)
{
	for (int threads = 1; threads <= 2; threads++) {
		struct cancel_ctx *x = calloc(1, sizeof(*x));
		ASSERT_NOT_NULL(x);
		run_fibers(threads, cancel_main, x);
		free(x);
	}
}

/* ---- races: deadlines and cancels against wake-ups ------------------------------------------ */

#define RACE_ITERS 300

enum { R_MUTEX, R_SEM, R_COND, R_WG };

struct race_ctx {
	int kind;
	bool cancel; /* race a scope cancel, else a deadline */
	weft_fmutex m;
	weft_fcond c;
	weft_fsem s;
	weft_waitgroup wg;
	_Atomic int ready;
	_Atomic int result;
	_Atomic int finished;
	int64_t deadline;
	int won, lost;
};

static void race_waiter(void *arg)
{
	struct race_ctx *x = arg;
	int r = 0;
	switch (x->kind) {
	case R_MUTEX:
		atomic_store(&x->ready, 1);
		r = weft_fmutex_lock(&x->m, x->deadline);
		if (r == 0)
			ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
		else
			ASSERT_ERR(weft_fmutex_unlock(&x->m), -EPERM);
		break;
	case R_SEM:
		atomic_store(&x->ready, 1);
		r = weft_fsem_acquire(&x->s, x->deadline);
		break;
	case R_COND:
		ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
		atomic_store(&x->ready, 1);
		r = weft_fcond_wait(&x->c, &x->m, x->deadline);
		ASSERT_EQ(weft_fmutex_unlock(&x->m), 0); /* held on every result */
		break;
	case R_WG:
		atomic_store(&x->ready, 1);
		r = weft_waitgroup_wait(&x->wg, x->deadline);
		break;
	}
	if (r != 0)
		ASSERT_ERR(r, x->cancel ? -ECANCELED : -ETIMEDOUT);
	atomic_store(&x->result, r == 0 ? 1 : r);
	atomic_store(&x->finished, 1);
}

static void race_main(void *arg)
{
	struct race_ctx *x = arg;
	uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)x->kind;
	int64_t end = in_ms(20000);
	for (int it = 0; it < RACE_ITERS && weft_now() < end; it++) {
		atomic_store(&x->ready, 0);
		atomic_store(&x->finished, 0);
		atomic_store(&x->result, 0);
		weft_scope *child;
		ASSERT_OK(weft_scope_create(&child, root_scope()));
		int64_t delay = (int64_t)(th_rng(&rng) % 200000); /* 0-200 us */
		x->deadline = x->cancel ? WEFT_FOREVER : weft_now() + 50000 + delay;
		if (x->kind == R_MUTEX)
			ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
		if (x->kind == R_WG)
			ASSERT_OK(weft_waitgroup_add(&x->wg, 1));
		spawn_in(child, race_waiter, x);
		FIBER_WAIT_FOR(atomic_load(&x->ready));
		/* let the waiter reach its park most of the time, not always */
		if (th_rng(&rng) % 4)
			(void)weft_fiber_yield();
		if (x->cancel)
			canceller_fire(child, &rng);
		else
			while (weft_now() < x->deadline - 20000 + (int64_t)(th_rng(&rng) % 40000))
				(void)weft_fiber_yield();
		switch (x->kind) {
		case R_MUTEX: ASSERT_EQ(weft_fmutex_unlock(&x->m), 0); break;
		case R_SEM: ASSERT_OK(weft_fsem_release(&x->s, 1)); break;
		case R_COND:
			/* the signal may come before the waiter queues (then it is lost, as in
			 * pthreads): take the mutex first so it cannot */
			ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
			ASSERT_OK(weft_fcond_signal(&x->c));
			ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
			break;
		case R_WG: ASSERT_OK(weft_waitgroup_done(&x->wg)); break;
		}
		ASSERT_EQ(weft_scope_join(child, in_ms(10000)), 0);
		/* the canceller uses the scope: it must be done with it first */
		FIBER_WAIT_FOR(atomic_load(&canceller.target) == NULL);
		weft_scope_destroy(child);
		int r = atomic_load(&x->result);
		if (r == 1)
			x->won++;
		else
			x->lost++;
		/* the books balance, whoever won */
		ASSERT_EQ(waiters(&x->m) + waiters(&x->c) + waiters(&x->s) + waiters(&x->wg), 0);
		ASSERT_EQ(weft_fmutex_destroy(&x->m), 0); /* not left owned by anyone */
		if (x->kind == R_SEM) {
			if (r == 1)
				ASSERT_ERR(weft_fsem_tryacquire(&x->s),
				           -EAGAIN); /* it took the permit */
			else
				ASSERT_EQ(weft_fsem_tryacquire(&x->s), 0); /* the permit stayed */
			ASSERT_ERR(weft_fsem_tryacquire(&x->s), -EAGAIN);
		}
	}
}

static void race_run(int kind, bool cancel, int threads)
{
	struct race_ctx *x = calloc(1, sizeof(*x));
	ASSERT_NOT_NULL(x);
	x->kind = kind;
	x->cancel = cancel;
	if (cancel)
		canceller_start();
	run_fibers(threads, race_main, x);
	if (cancel)
		canceller_stop();
	fprintf(stderr, "# kind %d, %s, %d threads: woken %d, failed %d\n", kind,
	        cancel ? "cancel" : "deadline", threads, x->won, x->lost);
	ASSERT_GT(x->won + x->lost, 50);
	free(x);
}

TEST_TIMEOUT(race_mutex_unlock_vs_deadline, 60)
{
	race_run(R_MUTEX, false, 2);
}

TEST_TIMEOUT(race_mutex_unlock_vs_cancel, 60)
{
	race_run(R_MUTEX, true, 2);
	race_run(R_MUTEX, true, 4);
}

TEST_TIMEOUT(race_sem_release_vs_deadline_and_cancel, 60)
{
	race_run(R_SEM, false, 2);
	race_run(R_SEM, true, 2);
}

TEST_TIMEOUT(race_cond_signal_vs_deadline_and_cancel, 60)
{
	race_run(R_COND, false, 2);
	race_run(R_COND, true, 4);
}

TEST_TIMEOUT(race_waitgroup_done_vs_deadline_and_cancel, 60)
{
	race_run(R_WG, false, 2);
	race_run(R_WG, true, 2);
}

/* ---- condition variables -------------------------------------------------------------------- */

#define PC_PRODUCERS 3
#define PC_CONSUMERS 3
#define PC_ITEMS 2000 /* per producer */
#define PC_SLOTS 4

struct pc_ctx {
	weft_fmutex m;
	weft_fcond not_empty, not_full;
	long q[PC_SLOTS];
	int head, n;
	long consumed, sum;
	weft_waitgroup wg;
};

static void pc_producer(void *arg)
{
	struct pc_ctx *x = arg;
	for (long i = 1; i <= PC_ITEMS; i++) {
		ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
		while (x->n == PC_SLOTS)
			ASSERT_EQ(weft_fcond_wait(&x->not_full, &x->m, in_ms(10000)), 0);
		x->q[(x->head + x->n++) % PC_SLOTS] = i;
		ASSERT_OK(weft_fcond_signal(&x->not_empty));
		ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	}
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void pc_consumer(void *arg)
{
	struct pc_ctx *x = arg;
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	for (;;) {
		while (x->n == 0 && x->consumed < (long)PC_PRODUCERS * PC_ITEMS)
			ASSERT_EQ(weft_fcond_wait(&x->not_empty, &x->m, in_ms(10000)), 0);
		if (x->consumed == (long)PC_PRODUCERS * PC_ITEMS)
			break;
		x->sum += x->q[x->head];
		x->head = (x->head + 1) % PC_SLOTS;
		x->n--;
		if (++x->consumed == (long)PC_PRODUCERS * PC_ITEMS)
			ASSERT_OK(weft_fcond_broadcast(&x->not_empty)); /* the others can stop */
		ASSERT_OK(weft_fcond_signal(&x->not_full));
	}
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void pc_main(void *arg)
{
	struct pc_ctx *x = arg;
	ASSERT_OK(weft_waitgroup_add(&x->wg, PC_PRODUCERS + PC_CONSUMERS));
	for (int i = 0; i < PC_CONSUMERS; i++)
		spawn_in(root_scope(), pc_consumer, x);
	for (int i = 0; i < PC_PRODUCERS; i++)
		spawn_in(root_scope(), pc_producer, x);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(30000)), 0);
	ASSERT_EQ(x->consumed, (long)PC_PRODUCERS * PC_ITEMS);
	ASSERT_EQ(x->sum, (long)PC_PRODUCERS * PC_ITEMS * (PC_ITEMS + 1) / 2);
	ASSERT_EQ(weft_fcond_destroy(&x->not_empty), 0);
	ASSERT_EQ(weft_fcond_destroy(&x->not_full), 0);
}

TEST_TIMEOUT(cond_producer_consumer, 60)
{
	for (int threads = 1; threads <= 4; threads *= 2) {
		struct pc_ctx *x = calloc(1, sizeof(*x));
		ASSERT_NOT_NULL(x);
		run_fibers(threads, pc_main, x);
		free(x);
	}
}

#define SB_WAITERS 5

struct sb_ctx {
	weft_fmutex m;
	weft_fcond c;
	int generation; /* under m */
	_Atomic int woken;
	weft_waitgroup wg;
};

static void sb_waiter(void *arg)
{
	struct sb_ctx *x = arg;
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	ASSERT_EQ(weft_fcond_wait(&x->c, &x->m, in_ms(10000)), 0);
	atomic_fetch_add(&x->woken, 1);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void sb_main(void *arg)
{
	struct sb_ctx *x = arg;
	ASSERT_OK(weft_waitgroup_add(&x->wg, SB_WAITERS));
	for (int i = 0; i < SB_WAITERS; i++)
		spawn_in(root_scope(), sb_waiter, x);
	FIBER_WAIT_FOR(waiters(&x->c) == SB_WAITERS);
	ASSERT_ERR(weft_fcond_destroy(&x->c), -EBUSY);
	ASSERT_OK(weft_fcond_signal(&x->c));
	ASSERT_EQ(waiters(&x->c), SB_WAITERS - 1); /* exactly one taken */
	FIBER_WAIT_FOR(atomic_load(&x->woken) == 1);
	(void)weft_fiber_sleep_until(in_ms(10));
	ASSERT_EQ(atomic_load(&x->woken), 1);
	ASSERT_OK(weft_fcond_broadcast(&x->c));
	ASSERT_EQ(waiters(&x->c), 0);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(10000)), 0);
	ASSERT_EQ(atomic_load(&x->woken), SB_WAITERS);
	ASSERT_EQ(weft_fcond_destroy(&x->c), 0);
}

TEST(cond_signal_wakes_one_broadcast_all)
{
	static struct sb_ctx x;
	run_fibers(2, sb_main, &x);
}

/* signal and broadcast from a plain thread */
struct thread_cond_ctx {
	weft_fmutex m;
	weft_fcond c;
	bool flag; /* under m */
	_Atomic int set;
	_Atomic int done;
};

static void tc_waiter(void *arg)
{
	struct thread_cond_ctx *x = arg;
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	while (!x->flag)
		ASSERT_EQ(weft_fcond_wait(&x->c, &x->m, in_ms(10000)), 0);
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	atomic_fetch_add(&x->done, 1);
}

static void tc_setter(void *arg)
{
	struct thread_cond_ctx *x = arg;
	ASSERT_EQ(weft_fmutex_lock(&x->m, WEFT_FOREVER), 0);
	x->flag = true;
	ASSERT_EQ(weft_fmutex_unlock(&x->m), 0);
	atomic_store(&x->set, 1);
}

TEST(cond_signal_from_a_plain_thread)
{
	static struct thread_cond_ctx x;
	weft_sched *s = sched_new(2);
	for (int i = 0; i < 3; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), tc_waiter, &x, NULL, NULL));
	THREAD_WAIT_FOR(waiters(&x.c) == 3);
	/* the flag is set by a fiber (the mutex is fiber-only); the wake-ups come from here */
	ASSERT_OK(weft_spawn(weft_sched_root(s), tc_setter, &x, NULL, NULL));
	THREAD_WAIT_FOR(atomic_load(&x.set));
	ASSERT_OK(weft_fcond_signal(&x.c));
	ASSERT_EQ(waiters(&x.c), 2); /* taken off the list by the signal itself */
	ASSERT_OK(weft_fcond_broadcast(&x.c));
	ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(10000)));
	ASSERT_EQ(atomic_load(&x.done), 3);
	weft_sched_destroy(s);
}

/* ---- semaphores and wait groups ------------------------------------------------------------- */

#define SEM_WAITERS 5

struct sem_ctx {
	weft_fsem s;
	_Atomic int got;
	weft_waitgroup wg;
};

static void sem_waiter(void *arg)
{
	struct sem_ctx *x = arg;
	ASSERT_EQ(weft_fsem_acquire(&x->s, in_ms(10000)), 0);
	atomic_fetch_add(&x->got, 1);
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void sem_main(void *arg)
{
	struct sem_ctx *x = arg;
	ASSERT_OK(weft_fsem_release(&x->s, 3));
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(weft_fsem_acquire(&x->s, 0), 0);
	ASSERT_ERR(weft_fsem_tryacquire(&x->s), -EAGAIN);
	ASSERT_OK(weft_waitgroup_add(&x->wg, SEM_WAITERS));
	for (int i = 0; i < SEM_WAITERS; i++)
		spawn_in(root_scope(), sem_waiter, x);
	FIBER_WAIT_FOR(waiters(&x->s) == SEM_WAITERS);
	ASSERT_ERR(weft_fsem_destroy(&x->s), -EBUSY);
	ASSERT_OK(weft_fsem_release(&x->s, 2)); /* handed to two waiters, not counted */
	ASSERT_EQ(waiters(&x->s), SEM_WAITERS - 2);
	ASSERT_ERR(weft_fsem_tryacquire(&x->s), -EAGAIN);
	FIBER_WAIT_FOR(atomic_load(&x->got) == 2);
	(void)weft_fiber_sleep_until(in_ms(10));
	ASSERT_EQ(atomic_load(&x->got), 2);
	ASSERT_OK(weft_fsem_release(&x->s, 5)); /* three handed over, two counted */
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(10000)), 0);
	ASSERT_EQ(atomic_load(&x->got), SEM_WAITERS);
	ASSERT_EQ(weft_fsem_tryacquire(&x->s), 0);
	ASSERT_EQ(weft_fsem_tryacquire(&x->s), 0);
	ASSERT_ERR(weft_fsem_tryacquire(&x->s), -EAGAIN);
	ASSERT_EQ(weft_fsem_destroy(&x->s), 0);
}

TEST(sem_counts_and_handoff)
{
	static struct sem_ctx x;
	run_fibers(2, sem_main, &x);
}

TEST(sem_release_from_a_plain_thread)
{
	static struct sem_ctx x;
	weft_sched *s = sched_new(2);
	ASSERT_OK(weft_waitgroup_add(&x.wg, 2));
	for (int i = 0; i < 2; i++)
		ASSERT_OK(weft_spawn(weft_sched_root(s), sem_waiter, &x, NULL, NULL));
	THREAD_WAIT_FOR(waiters(&x.s) == 2);
	ASSERT_OK(weft_fsem_release(&x.s, 1));
	ASSERT_OK(weft_fsem_release(&x.s, 1));
	ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(10000)));
	ASSERT_EQ(atomic_load(&x.got), 2);
	weft_sched_destroy(s);
}

#define WG_WAITERS 4
#define WG_WORKERS 6

struct wg_ctx {
	weft_waitgroup wg;
	_Atomic int finished;
	_Atomic int waited;
	weft_waitgroup all;
};

static void wg_worker(void *arg)
{
	struct wg_ctx *x = arg;
	(void)weft_fiber_sleep_until(in_ms(5));
	atomic_fetch_add(&x->finished, 1);
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void wg_waiter(void *arg)
{
	struct wg_ctx *x = arg;
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(10000)), 0);
	ASSERT_EQ(atomic_load(&x->finished), WG_WORKERS); /* nobody is let through early */
	atomic_fetch_add(&x->waited, 1);
	ASSERT_OK(weft_waitgroup_done(&x->all));
}

static void wg_main(void *arg)
{
	struct wg_ctx *x = arg;
	ASSERT_OK(weft_waitgroup_add(&x->wg, WG_WORKERS));
	ASSERT_OK(weft_waitgroup_add(&x->all, WG_WAITERS));
	for (int i = 0; i < WG_WAITERS; i++)
		spawn_in(root_scope(), wg_waiter, x);
	FIBER_WAIT_FOR(waiters(&x->wg) == WG_WAITERS);
	ASSERT_ERR(weft_waitgroup_destroy(&x->wg), -EBUSY);
	for (int i = 0; i < WG_WORKERS; i++)
		spawn_in(root_scope(), wg_worker, x);
	ASSERT_EQ(weft_waitgroup_wait(&x->all, in_ms(10000)), 0);
	ASSERT_EQ(atomic_load(&x->waited), WG_WAITERS);
	ASSERT_EQ(weft_waitgroup_destroy(&x->wg), 0);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, 0), 0); /* at 0: returns at once */
}

TEST(waitgroup_with_several_waiters)
{
	for (int threads = 1; threads <= 4; threads *= 2) {
		struct wg_ctx *x = calloc(1, sizeof(*x));
		ASSERT_NOT_NULL(x);
		run_fibers(threads, wg_main, x);
		free(x);
	}
}

/* A wait group on the waiter's stack, done from a plain thread: the waiter returns and its frame
 * is gone while the thread may still be inside weft_waitgroup_done (ASan checks). */
struct stack_wg {
	_Atomic(weft_waitgroup *) wg;
	_Atomic int rounds;
};

static void *stack_wg_thread(void *arg)
{
	struct stack_wg *x = arg;
	for (int i = 0; i < 200; i++) {
		weft_waitgroup *wg;
		int64_t end = in_ms(10000);
		while (!(wg = atomic_exchange(&x->wg, NULL)) && weft_now() < end)
			sched_yield();
		if (!wg)
			return NULL;
		ASSERT_OK(weft_waitgroup_done(wg));
	}
	return NULL;
}

static void stack_wg_fiber(void *arg)
{
	struct stack_wg *x = arg;
	for (int i = 0; i < 200; i++) {
		weft_waitgroup wg = WEFT_WAITGROUP_INIT;
		ASSERT_OK(weft_waitgroup_add(&wg, 1));
		atomic_store(&x->wg, &wg);
		ASSERT_EQ(weft_waitgroup_wait(&wg, in_ms(10000)), 0);
		atomic_fetch_add(&x->rounds, 1);
	}
}

TEST(waitgroup_on_the_stack_done_from_a_thread)
{
	static struct stack_wg x;
	weft_sched *s = sched_new(2);
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, stack_wg_thread, &x), 0);
	ASSERT_OK(weft_spawn(weft_sched_root(s), stack_wg_fiber, &x, NULL, NULL));
	ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(20000)));
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(atomic_load(&x.rounds), 200);
	weft_sched_destroy(s);
}

/* Waves of fibers on every worker call done while the waiter, whose group is on its stack, waits
 * (every other wave has a fiber that sleeps first, so that the waiter queues): sometimes it waits
 * with a deadline that passes first (a timed-out waiter leaves the waiters' flag set for the zero
 * to find), sometimes it comes after the count is 0. Every done adds to `did`
 * first: a wait that returns 0 must see all of them (the CAS's release, the wait's acquire), and no
 * wave's wait may end early or hang. */
#define WAVE_FIBERS 16
#define WAVES 300

struct wave {
	weft_waitgroup *wg;
	_Atomic long did;
	long spin; /* loop iterations before the done: spreads the dones around the wait */
	_Atomic int sleeper; /* the first fiber to take it sleeps 0.1 ms first: the waiter queues */
};

static void wave_fiber(void *arg)
{
	struct wave *v = arg;
	if (atomic_exchange(&v->sleeper, 0))
		(void)weft_fiber_sleep_until(weft_deadline_in(100000));
	for (volatile long i = 0; i < v->spin; i++)
		;
	atomic_fetch_add_explicit(&v->did, 1, memory_order_relaxed);
	ASSERT_OK(weft_waitgroup_done(v->wg));
}

static void wave_driver(void *arg)
{
	_Atomic int *rounds = arg;
	for (int k = 0; k < WAVES; k++) {
		weft_waitgroup wg = WEFT_WAITGROUP_INIT;
		struct wave v = {.wg = &wg, .spin = (k % 7) * 200, .sleeper = k % 2};
		ASSERT_OK(weft_waitgroup_add(&wg, WAVE_FIBERS));
		for (int i = 0; i < WAVE_FIBERS; i++)
			spawn_in(root_scope(), wave_fiber, &v);
		if (k % 3 == 1) { /* a wait whose deadline passes first, or is met */
			int r = weft_waitgroup_wait(&wg, weft_now() + 2000);
			ASSERT_TRUE(r == 0 || r == -ETIMEDOUT);
		}
		if (k % 5 == 2)
			weft_fiber_yield();
		ASSERT_EQ(weft_waitgroup_wait(&wg, in_ms(10000)), 0);
		ASSERT_EQ(atomic_load_explicit(&v.did, memory_order_relaxed), WAVE_FIBERS);
		/* the wave's fibers may still be on their way out, but off the group */
		atomic_fetch_add(rounds, 1);
	}
}

TEST(waitgroup_waves_race_the_waiter)
{
	for (int threads = 2; threads <= 4; threads *= 2) {
		static _Atomic int rounds;
		atomic_store(&rounds, 0);
		run_fibers(threads, wave_driver, &rounds);
		ASSERT_EQ(atomic_load(&rounds), WAVES);
	}
}

/* ---- the spin lock -------------------------------------------------------------------------- */

#define SPIN_THREADS 4
#define SPIN_ROUNDS 50000

static weft__spin spin;
static long spin_counter;

static void *spin_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < SPIN_ROUNDS; i++) {
		weft__spin_lock(&spin);
		spin_counter++;
		weft__spin_unlock(&spin);
	}
	return NULL;
}

TEST(spin_lock_under_contention)
{
	/* 4 threads on a machine of 2 CPUs: holders get preempted, so the yield path runs too */
	pthread_t t[SPIN_THREADS];
	for (int i = 0; i < SPIN_THREADS; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, spin_thread, NULL), 0);
	for (int i = 0; i < SPIN_THREADS; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	ASSERT_EQ(spin_counter, (long)SPIN_THREADS * SPIN_ROUNDS);
	ASSERT_EQ(atomic_load(&spin.v), 0);
}
