/* prim.c: weft's instrumented locks (weft/watch.h): weft_mutex, weft_rwlock, weft_cond and
 * weft_sem, each the pthread/POSIX object of its kind plus the lock monitor's hooks
 * (src/internal/watch.h).
 *
 * The lock path of each acquisition (weft_mutex_lock with the monitor off is the real lock and
 * one relaxed load of the monitor's flag, nothing else):
 *   1. prediction mode (weft__watch_predict_on): weft__predict_before(lock, class) first, so an
 *      inversion is reported before the thread can block;
 *   2. the real lock without waiting (trylock): the uncontended case ends here, costing the
 *      trylock and two relaxed loads of the monitor's flags;
 *   3. busy: with the monitor off, the real blocking call; on, weft__watch_wait (the engine
 *      records the wait, waits in slices of the real timed call, and reports);
 *   4. success: weft__predict_after (flags TRY for a trylock, REACQUIRE for the mutex taken
 *      back inside a condition wait), the rwlock hold lists (weft__watch_rw_acquired), the
 *      sampled hold times, and for EOWNERDEAD weft__watch_owner_died.
 * Releases undo 4: an rwlock before its real unlock, a mutex once its real unlock has succeeded (a
 * mutex unlock that fails, EPERM, changes nothing).
 *
 * Classes (prediction): a named weft_mutex/weft_rwlock gets its class from the name, an unnamed
 * one from its init call's site, both at init when prediction tables exist; otherwise (static
 * initialisers, or the monitor not started at init) the class comes at first use: from the name
 * (kept in the lock) if it has one, else from the lock's address and the first site
 * (weft__predict_class); either way it is cached in the lock (cls, relaxed
 * atomics: racing first users compute the same class, the last store wins harmlessly).
 *
 * Ownership facts come from glibc's objects: a mutex's owner is pthread_mutex_t.__data.__owner
 * and an rwlock's writer __data.__cur_writer (read by the waiting thread only, for the monitor).
 * An rwlock has no reader list, so -EPERM for an unlock by a thread that holds it in neither mode
 * needs one of our own: each thread keeps the rwlocks it holds for reading in a small fixed
 * __thread list (RD_MAX entries; beyond that, unlocks are trusted, counted in rd_overflow).
 *
 * Timed waits use the CLOCK_MONOTONIC variants (pthread_mutex_clocklock & co.). ThreadSanitizer
 * does not intercept those, so a TSan build uses the CLOCK_REALTIME ones, converting each end
 * time, or TSan would not see the lock taken and report races on the data it protects.
 *
 * Semaphores: a wait interrupted by a signal handler (EINTR) waits again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "internal/common.h"
#include "internal/watch.h"

#define F_RECURSIVE 1u
#define F_PSHARED 2u
#define F_ROBUST 4u

#define RD_MAX 16

static __thread const weft_rwlock *rd_held[RD_MAX];
static __thread int rd_n;
static __thread int rd_overflow;

static inline int watch_on(void)
{
	return __atomic_load_n(&weft__watch_on, __ATOMIC_RELAXED);
}

static inline int predict_on(void)
{
	return __atomic_load_n(&weft__watch_predict_on, __ATOMIC_RELAXED) && !weft__watch_internal;
}

static inline int sampling(void)
{
	return __atomic_load_n(&weft__watch_profile_sample, __ATOMIC_RELAXED) > 0;
}

static inline int bad_deadline(int64_t deadline)
{
	return deadline < -1;
}

static struct timespec ts_of(int64_t mono)
{
#if WEFT__TSAN
	struct timespec now_rt, now_mono;
	clock_gettime(CLOCK_REALTIME, &now_rt);
	clock_gettime(CLOCK_MONOTONIC, &now_mono);
	/* saturated: a deadline as far as INT64_MAX must not overflow into the past */
	int64_t rt;
	if (__builtin_add_overflow(
	            (int64_t)now_rt.tv_sec * 1000000000 + now_rt.tv_nsec,
	            mono - ((int64_t)now_mono.tv_sec * 1000000000 + now_mono.tv_nsec), &rt))
		rt = INT64_MAX;
	if (rt < 0)
		rt = 0;
	return (struct timespec){(time_t)(rt / 1000000000), (long)(rt % 1000000000)};
#else
	return (struct timespec){(time_t)(mono / 1000000000), (long)(mono % 1000000000)};
#endif
}

/* ------------------------------------------------------------------------------------------------
 * Mutexes.
 */
static int mutex_timed(void *lock, int64_t end)
{
	struct timespec ts = ts_of(end);
	int e = errno;
#if WEFT__TSAN
	int r = pthread_mutex_timedlock(lock, &ts);
#else
	int r = pthread_mutex_clocklock(lock, CLOCK_MONOTONIC, &ts);
#endif
	errno = e;
	return r;
}

/* glibc: a robust mutex's owner is the lock word's thread id bits (its __owner reads
 * PTHREAD_MUTEX_INCONSISTENT after EOWNERDEAD until consistent); other kinds keep it in
 * __owner. */
#define GLIBC_KIND_ROBUST 16
#define GLIBC_TID_MASK 0x3fffffff
#define GLIBC_NOTRECOVERABLE (INT_MAX - 1)

static pid_t mutex_owner(const void *lock)
{
	const pthread_mutex_t *m = lock;
	if (__atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) & GLIBC_KIND_ROBUST)
		return (pid_t)(__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) &
		               GLIBC_TID_MASK);
	return (pid_t)__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
}

static uint32_t mutex_class(weft_mutex *m, void *site)
{
	uint32_t c = __atomic_load_n(&m->cls, __ATOMIC_RELAXED);
	if (weft__likely(c != 0))
		return c;
	c = m->name ? weft__predict_class_named(m->name, site) : weft__predict_class(m, site);
	if (c)
		__atomic_store_n(&m->cls, c, __ATOMIC_RELAXED);
	return c;
}

static int mutex_wait(weft_mutex *m, int64_t deadline, void *site)
{
	if (!watch_on() || weft__watch_internal) {
		if (deadline < 0)
			return pthread_mutex_lock(&m->m);
		return mutex_timed(&m->m, deadline);
	}
	struct weft__watch_op op = {
	        .lock = &m->m,
	        .kind = WEFT_WATCH_LOCK_MUTEX,
	        .pshared = (__atomic_load_n(&m->flags, __ATOMIC_RELAXED) & F_PSHARED) != 0,
	        .site = site,
	        .name = m->name,
	        .timed = mutex_timed,
	        .owner = mutex_owner,
	};
	return weft__watch_wait(&op, deadline);
}

static void mutex_acquired(weft_mutex *m, int r, void *site)
{
	if (sampling())
		weft__watch_hold_acquired(m, site);
	if (weft__unlikely(r == EOWNERDEAD))
		weft__watch_owner_died(&m->m, site);
}

static int mutex_acquire(weft_mutex *m, int64_t deadline, void *site)
{
	uint32_t cls = 0;
	int pred = predict_on();
	if (weft__unlikely(pred)) {
		cls = mutex_class(m, site);
		weft__predict_before(m, cls, 0, site);
	}
	int r = pthread_mutex_trylock(&m->m);
	if (weft__unlikely(r == EBUSY))
		r = mutex_wait(m, deadline, site);
	if (weft__likely(r == 0 || r == EOWNERDEAD)) {
		if (weft__unlikely(pred))
			weft__predict_after(m, cls, 0, 0, site);
		mutex_acquired(m, r, site);
	}
	return -r;
}

int weft_mutex_init(weft_mutex *m, const weft_mutex_options *o)
{
	if (!m)
		return -EINVAL;
	void *site = __builtin_return_address(0);
	pthread_mutexattr_t a;
	int r = pthread_mutexattr_init(&a);
	if (r != 0)
		return -r;
	uint32_t flags = 0;
	r = pthread_mutexattr_settype(&a, o && o->recursive ? PTHREAD_MUTEX_RECURSIVE
	                                                    : PTHREAD_MUTEX_ERRORCHECK);
	if (o && o->recursive)
		flags |= F_RECURSIVE;
	if (r == 0 && o && o->pshared) {
		r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		flags |= F_PSHARED;
	}
	if (r == 0 && o && o->robust) {
		r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
		flags |= F_ROBUST;
	}
	if (r == 0)
		r = pthread_mutex_init(&m->m, &a);
	pthread_mutexattr_destroy(&a);
	if (r != 0)
		return -r;
	m->flags = flags;
	m->name = o ? o->name : NULL;
	m->cls = weft__predict_class_named(m->name, site);
	return 0;
}

int weft_mutex_destroy(weft_mutex *m)
{
	if (!m)
		return -EINVAL;
	/* glibc destroys a held robust mutex without a word, and TSan complains of any held one:
	 * see that nobody holds it (a robust one made unrecoverable keeps a stale owner) */
	int notrec =
	        __atomic_load_n(&m->m.__data.__owner, __ATOMIC_RELAXED) == GLIBC_NOTRECOVERABLE;
	if (mutex_owner(&m->m) != 0 && !notrec)
		return -EBUSY;
	int r = pthread_mutex_destroy(&m->m);
	if (r != 0)
		return -r;
	weft__predict_forget(m);
	return 0;
}

int weft_mutex_lock(weft_mutex *m)
{
	if (weft__unlikely(!m))
		return -EINVAL;
	if (weft__likely(!watch_on())) /* nothing to record: the real lock, nothing else */
		return -pthread_mutex_lock(&m->m);
	return mutex_acquire(m, -1, __builtin_return_address(0));
}

int weft_mutex_timedlock(weft_mutex *m, int64_t deadline)
{
	if (weft__unlikely(!m || bad_deadline(deadline)))
		return -EINVAL;
	return mutex_acquire(m, deadline, __builtin_return_address(0));
}

int weft_mutex_trylock(weft_mutex *m)
{
	if (weft__unlikely(!m))
		return -EINVAL;
	void *site = __builtin_return_address(0);
	int r = pthread_mutex_trylock(&m->m);
	if (weft__likely(r == 0 || r == EOWNERDEAD)) {
		if (weft__unlikely(predict_on()))
			weft__predict_after(m, mutex_class(m, site), 0, WEFT__PREDICT_TRY, site);
		mutex_acquired(m, r, site);
	}
	return -r;
}

int weft_mutex_unlock(weft_mutex *m)
{
	if (weft__unlikely(!m))
		return -EINVAL;
	/* every weft_mutex type has glibc check the owner (EPERM); TSan would report the wrong
	 * unlock first, so its builds check here */
	if (WEFT__TSAN && mutex_owner(&m->m) != weft__watch_tid())
		return -EPERM;
	int r = pthread_mutex_unlock(&m->m);
	if (weft__unlikely(r != 0))
		return -r;
	if (weft__unlikely(predict_on()))
		weft__predict_release(m);
	if (weft__unlikely(sampling()))
		weft__watch_hold_released(m);
	return 0;
}

int weft_mutex_consistent(weft_mutex *m)
{
	if (!m)
		return -EINVAL;
	return -pthread_mutex_consistent(&m->m);
}

/* ------------------------------------------------------------------------------------------------
 * Reader/writer locks.
 */
static int rw_timed_rd(void *lock, int64_t end)
{
	struct timespec ts = ts_of(end);
	int e = errno;
#if WEFT__TSAN
	int r = pthread_rwlock_timedrdlock(lock, &ts);
#else
	int r = pthread_rwlock_clockrdlock(lock, CLOCK_MONOTONIC, &ts);
#endif
	errno = e;
	return r;
}

static int rw_timed_wr(void *lock, int64_t end)
{
	struct timespec ts = ts_of(end);
	int e = errno;
#if WEFT__TSAN
	int r = pthread_rwlock_timedwrlock(lock, &ts);
#else
	int r = pthread_rwlock_clockwrlock(lock, CLOCK_MONOTONIC, &ts);
#endif
	errno = e;
	return r;
}

static pid_t rw_writer(const void *lock)
{
	const pthread_rwlock_t *l = lock;
	return (pid_t)__atomic_load_n(&l->__data.__cur_writer, __ATOMIC_RELAXED);
}

static uint32_t rw_class(weft_rwlock *l, void *site)
{
	uint32_t c = __atomic_load_n(&l->cls, __ATOMIC_RELAXED);
	if (weft__likely(c != 0))
		return c;
	c = l->name ? weft__predict_class_named(l->name, site) : weft__predict_class(l, site);
	if (c)
		__atomic_store_n(&l->cls, c, __ATOMIC_RELAXED);
	return c;
}

static void rd_push(const weft_rwlock *l)
{
	if (rd_n < RD_MAX)
		rd_held[rd_n++] = l;
	else
		rd_overflow++;
}

/* Removes one read hold of l; 0 if this thread has none (as far as the list knows). */
static int rd_pop(const weft_rwlock *l)
{
	for (int i = rd_n - 1; i >= 0; i--) {
		if (rd_held[i] == l) {
			rd_held[i] = rd_held[--rd_n];
			return 1;
		}
	}
	if (rd_overflow > 0) {
		rd_overflow--;
		return 1;
	}
	return 0;
}

static int rw_wait(weft_rwlock *l, int write, int64_t deadline, void *site)
{
	if (!watch_on() || weft__watch_internal) {
		if (deadline < 0)
			return write ? pthread_rwlock_wrlock(&l->l) : pthread_rwlock_rdlock(&l->l);
		return write ? rw_timed_wr(&l->l, deadline) : rw_timed_rd(&l->l, deadline);
	}
	struct weft__watch_op op = {
	        .lock = &l->l,
	        .kind = write ? WEFT_WATCH_LOCK_WRLOCK : WEFT_WATCH_LOCK_RDLOCK,
	        .pshared = (__atomic_load_n(&l->flags, __ATOMIC_RELAXED) & F_PSHARED) != 0,
	        .site = site,
	        .name = l->name,
	        .timed = write ? rw_timed_wr : rw_timed_rd,
	        .owner = rw_writer,
	};
	return weft__watch_wait(&op, deadline);
}

static void rw_acquired(weft_rwlock *l, int write, void *site)
{
	if (!write)
		rd_push(l);
	if (weft__unlikely(watch_on()))
		weft__watch_rw_acquired(&l->l, write);
	if (weft__unlikely(sampling()))
		weft__watch_hold_acquired(l, site);
}

static int rw_acquire(weft_rwlock *l, int write, int try, int64_t deadline, void *site)
{
	uint32_t cls = 0;
	int pred = predict_on();
	if (weft__unlikely(pred)) {
		cls = rw_class(l, site);
		if (!try)
			weft__predict_before(l, cls, !write, site);
	}
	int r = write ? pthread_rwlock_trywrlock(&l->l) : pthread_rwlock_tryrdlock(&l->l);
	if (r == EBUSY && !try)
		r = rw_wait(l, write, deadline, site);
	if (weft__likely(r == 0)) {
		if (weft__unlikely(pred))
			weft__predict_after(l, cls, !write, try ? WEFT__PREDICT_TRY : 0, site);
		rw_acquired(l, write, site);
	}
	return -r;
}

int weft_rwlock_init(weft_rwlock *l, const weft_rwlock_options *o)
{
	if (!l)
		return -EINVAL;
	void *site = __builtin_return_address(0);
	pthread_rwlockattr_t a;
	int r = pthread_rwlockattr_init(&a);
	if (r != 0)
		return -r;
	uint32_t flags = 0;
	if (o && o->prefer_writer)
		r = pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (r == 0 && o && o->pshared) {
		r = pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		flags |= F_PSHARED;
	}
	if (r == 0)
		r = pthread_rwlock_init(&l->l, &a);
	pthread_rwlockattr_destroy(&a);
	if (r != 0)
		return -r;
	l->flags = flags;
	l->name = o ? o->name : NULL;
	l->cls = weft__predict_class_named(l->name, site);
	return 0;
}

int weft_rwlock_destroy(weft_rwlock *l)
{
	if (!l)
		return -EINVAL;
	/* glibc destroys a held rwlock without a word: see that nobody holds it */
	if (pthread_rwlock_trywrlock(&l->l) != 0)
		return -EBUSY;
	pthread_rwlock_unlock(&l->l);
	int r = pthread_rwlock_destroy(&l->l);
	if (r != 0)
		return -r;
	weft__predict_forget(l);
	return 0;
}

int weft_rwlock_rdlock(weft_rwlock *l)
{
	if (weft__unlikely(!l))
		return -EINVAL;
	return rw_acquire(l, 0, 0, -1, __builtin_return_address(0));
}

int weft_rwlock_wrlock(weft_rwlock *l)
{
	if (weft__unlikely(!l))
		return -EINVAL;
	return rw_acquire(l, 1, 0, -1, __builtin_return_address(0));
}

int weft_rwlock_tryrdlock(weft_rwlock *l)
{
	if (weft__unlikely(!l))
		return -EINVAL;
	return rw_acquire(l, 0, 1, -1, __builtin_return_address(0));
}

int weft_rwlock_trywrlock(weft_rwlock *l)
{
	if (weft__unlikely(!l))
		return -EINVAL;
	return rw_acquire(l, 1, 1, -1, __builtin_return_address(0));
}

int weft_rwlock_timedrdlock(weft_rwlock *l, int64_t deadline)
{
	if (weft__unlikely(!l || bad_deadline(deadline)))
		return -EINVAL;
	return rw_acquire(l, 0, 0, deadline, __builtin_return_address(0));
}

int weft_rwlock_timedwrlock(weft_rwlock *l, int64_t deadline)
{
	if (weft__unlikely(!l || bad_deadline(deadline)))
		return -EINVAL;
	return rw_acquire(l, 1, 0, deadline, __builtin_return_address(0));
}

int weft_rwlock_unlock(weft_rwlock *l)
{
	if (weft__unlikely(!l))
		return -EINVAL;
	/* 1. which mode: the writer is in the lock; reads are in this thread's list */
	if (rw_writer(&l->l) != weft__watch_tid() && !rd_pop(l))
		return -EPERM;
	if (weft__unlikely(watch_on()))
		weft__watch_rw_released(&l->l);
	if (weft__unlikely(predict_on()))
		weft__predict_release(l);
	if (weft__unlikely(sampling()))
		weft__watch_hold_released(l);
	return -pthread_rwlock_unlock(&l->l);
}

/* ------------------------------------------------------------------------------------------------
 * Condition variables.
 */
int weft_cond_init(weft_cond *c)
{
	if (!c)
		return -EINVAL;
	pthread_condattr_t a;
	int r = pthread_condattr_init(&a);
	if (r != 0)
		return -r;
	r = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	if (r == 0)
		r = pthread_cond_init(&c->c, &a);
	pthread_condattr_destroy(&a);
	return -r;
}

int weft_cond_destroy(weft_cond *c)
{
	if (!c)
		return -EINVAL;
	return -pthread_cond_destroy(&c->c);
}

int weft_cond_wait(weft_cond *c, weft_mutex *m, int64_t deadline)
{
	if (!c || !m || bad_deadline(deadline))
		return -EINVAL;
	if (mutex_owner(&m->m) != weft__watch_tid())
		return -EPERM;
	void *site = __builtin_return_address(0);
	int pred = predict_on();
	if (weft__unlikely(pred))
		weft__predict_release(m);
	if (weft__unlikely(sampling()))
		weft__watch_hold_released(m);
	uint64_t token = watch_on() ? weft__watch_cond_begin(c, m, site) : 0;
	int r;
	if (deadline < 0) {
		r = pthread_cond_wait(&c->c, &m->m);
	} else {
		/* the condvar runs on CLOCK_MONOTONIC: timedwait takes a monotonic time */
		struct timespec ts = {(time_t)(deadline / 1000000000),
		                      (long)(deadline % 1000000000)};
		r = pthread_cond_timedwait(&c->c, &m->m, &ts);
	}
	if (token)
		weft__watch_cond_end(token);
	/* the mutex is held again, whatever r says (EOWNERDEAD: held, inconsistent) */
	if (weft__unlikely(pred))
		weft__predict_after(m, mutex_class(m, site), 0, WEFT__PREDICT_REACQUIRE, site);
	if (r == EOWNERDEAD)
		weft__watch_owner_died(&m->m, site);
	if (weft__unlikely(sampling()))
		weft__watch_hold_acquired(m, site);
	return -r;
}

int weft_cond_signal(weft_cond *c)
{
	if (!c)
		return -EINVAL;
	return -pthread_cond_signal(&c->c);
}

int weft_cond_broadcast(weft_cond *c)
{
	if (!c)
		return -EINVAL;
	return -pthread_cond_broadcast(&c->c);
}

/* ------------------------------------------------------------------------------------------------
 * Semaphores. POSIX sem_* set errno; these keep the caller's.
 */
static int sem_timed(void *s, int64_t end)
{
	struct timespec ts = ts_of(end);
	int e = errno, r;
	do {
#if WEFT__TSAN
		r = sem_timedwait(s, &ts) == 0 ? 0 : errno;
#else
		r = sem_clockwait(s, CLOCK_MONOTONIC, &ts) == 0 ? 0 : errno;
#endif
	} while (r == EINTR);
	errno = e;
	return r;
}

int weft_sem_init(weft_sem *s, unsigned value, int pshared)
{
	if (!s || value > (unsigned)SEM_VALUE_MAX)
		return -EINVAL;
	int e = errno;
	int r = sem_init(&s->s, pshared ? 1 : 0, value) == 0 ? 0 : weft__neg_errno();
	errno = e;
	return r;
}

int weft_sem_destroy(weft_sem *s)
{
	if (!s)
		return -EINVAL;
	int e = errno;
	int r = sem_destroy(&s->s) == 0 ? 0 : weft__neg_errno();
	errno = e;
	return r;
}

int weft_sem_trywait(weft_sem *s)
{
	if (!s)
		return -EINVAL;
	int e = errno, r;
	do
		r = sem_trywait(&s->s) == 0 ? 0 : errno;
	while (r == EINTR);
	errno = e;
	return -r;
}

int weft_sem_wait(weft_sem *s, int64_t deadline)
{
	if (!s || bad_deadline(deadline))
		return -EINVAL;
	int r = -weft_sem_trywait(s);
	if (r != EAGAIN)
		return -r;
	if (!watch_on() || weft__watch_internal) {
		if (deadline >= 0)
			return -sem_timed(&s->s, deadline);
		int e = errno;
		do
			r = sem_wait(&s->s) == 0 ? 0 : errno;
		while (r == EINTR);
		errno = e;
		return -r;
	}
	struct weft__watch_op op = {
	        .lock = &s->s,
	        .kind = WEFT_WATCH_LOCK_SEM,
	        .pshared = 0,
	        .site = __builtin_return_address(0),
	        .timed = sem_timed,
	        .owner = NULL,
	};
	return -weft__watch_wait(&op, deadline);
}

int weft_sem_post(weft_sem *s)
{
	if (!s)
		return -EINVAL;
	int e = errno;
	int r = sem_post(&s->s) == 0 ? 0 : weft__neg_errno();
	errno = e;
	return r;
}

int weft_sem_value(weft_sem *s, int *ret_value)
{
	if (!s || !ret_value)
		return -EINVAL;
	int e = errno, v;
	int r = sem_getvalue(&s->s, &v) == 0 ? 0 : weft__neg_errno();
	errno = e;
	if (r == 0)
		*ret_value = v < 0 ? 0 : v;
	return r;
}
