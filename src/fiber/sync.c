/* sync.c: the fibers' synchronization objects (include/weft/fiber.h): a mutex with FIFO hand-off,
 * a condition variable, a counting semaphore and a wait group; and weft__spin_lock_slow, the slow
 * path of the small spin lock (src/internal/fiber.h) that guards their waiter lists and the
 * channels'.
 *
 * Storage. Each public object is `uint64_t opaque_[4]` in the caller's memory; the internal struct
 * is laid over it (checked by _Static_assert for size and alignment). Every internal struct starts
 * with the same header, struct wobj:
 *
 *   lock   weft__spin   guards everything below; zero is unlocked
 *   nwait  uint32_t     records in the list (for *_destroy's -EBUSY and the tests)
 *   head, tail          the FIFO list of waiter records, doubly linked
 *
 * followed by the object's own word: the mutex's owner (a fiber, NULL if unlocked), the semaphore's
 * permits, the wait group's count. All-zero bytes are therefore the initial state: unlocked, no
 * waiters, no owner, count 0. No init call, nothing to allocate, nothing that can fail.
 *
 * Waiting. A waiter record (struct waiter: links, fiber, wait token, `linked`) lives on the waiting
 * fiber's stack, which stays valid while the fiber is parked. Every wait follows the protocol of
 * src/internal/fiber.h in one hold of the spin, as chan.c does: a fast path under the spin; not
 * ready, and still under the spin, weft__wait_begin (it neither switches nor locks) and append
 * the record, release the spin; park; if the park returns a failure (the timer's -ETIMEDOUT or
 * the scope's -ECANCELED; or -ENOMEM when the scheduler could not arm the timer), take the spin
 * again and unlink the record if it is still linked. Nothing can change between the failed try
 * and the queued record, so there is no second look and nothing to abandon. No spin is ever held
 * across a call that can switch (park, a wake with WEFT__READY_SWITCH).
 *
 * Waking. A waker, under the spin, pops records from the head and calls
 * weft__wake_claim(fiber, tok, 0) on each until one succeeds; a record whose claim fails belongs to
 * a waiter that timed out or was cancelled: it stays out of the list (the waiter finds it
 * unlinked) and is never touched again. The winner is made runnable with
 * weft__wake_ready(.., WEFT__READY_QUEUE) after the spin is released (several winners are chained
 * through their records' `next`, read before each wake: a woken fiber's record may vanish at
 * once). From a plain thread this is the same: signal, broadcast, release, add and done need no
 * fiber.
 *
 * Lifetime. A waker's last access to the object is its spin unlock; the woken fiber cannot run
 * before weft__wake_ready, which is given the saved fiber pointer, never the object. Nothing reads
 * the object outside the spin but the wait group's state word, whose CAS is then the adder's last
 * access (see below). So a fiber may free an object as soon as its own call on it returns (a wait
 * group on the waiter's stack is the common case).
 *
 * Mutex. The owner is recorded (a fiber): unlock by anyone else is -EPERM, a second lock by the
 * owner -EDEADLK, and the mutex is fiber-only (a plain thread cannot own it). Invariants, all
 * under the spin:
 *   M1. a record is in the list iff its `linked` is true;
 *   M2. head != NULL implies owner != NULL (waiters queue only behind an owner, and an unlock
 *       either hands over or finds the list empty), so a trylock never barges past a waiter and
 *       the order is strictly FIFO;
 *   M3. owner is written only by a locker that found it NULL, by the owner's unlock, and by an
 *       unlock that hands over: owner = w->fiber happens only after the claim on w succeeded.
 * Unlock hands the lock over instead of releasing it: the first waiter whose claim succeeds is the
 * new owner before the spin is released, so nobody can take the lock between the unlock and the
 * waiter's run. Who wins each race of a waiter W parked with a deadline (the claim, a CAS on W's
 * wait word in the scheduler, decides every one of them; exactly one claim per wait succeeds):
 *
 *   1. unlock claims W, then W's timer (or cancel) fires: the timer's claim fails. W's park returns
 *      0 and W owns the lock (owner = W was stored under the spin before the unlocker released
 *      it). W returns 0, never -ETIMEDOUT: no lock is left owned by a fiber that thinks it failed.
 *   2. the timer (or cancel) claims W, then unlock pops W's record: the unlocker's claim fails; it
 *      drops the record and goes on to the next waiter, or sets owner = NULL if none is left. W's
 *      park returns -ETIMEDOUT; W takes the spin, finds its record unlinked, returns -ETIMEDOUT.
 *   3. the timer (or cancel) claims W and W unlinks itself before any unlock looks: the next unlock
 *      never sees W.
 *   4. timer and cancel both fire: one claim wins; W returns that one's error, and 2 or 3 applies.
 *   5. the claim (any of them) happens between weft__wait_begin and weft__wait_park (W has not
 *      parked yet): the scheduler makes the park return the claimed result at once.
 *   6. W's scope is cancelled before it starts waiting: weft__wait_begin returns 0, nothing is
 *      queued, W returns -ECANCELED. A call that can finish without waiting (a free lock) does so
 *      even in a cancelled fiber, so cleanup code can still take an uncontended lock.
 *   7. the lock is released between W's fast path and its wait: cannot happen, W holds the spin
 *      from its try to its queued record.
 *   8. a deadline already passed when W would queue: -ETIMEDOUT without queueing.
 *
 * Condition variable. wait: check that the caller owns m; begin the wait; queue the record under
 * c's spin; release c's spin; unlock m (a hand-off to m's next waiter); park; unlink if not
 * signalled; relock m. The record is queued before m is released, so a signal sent by anyone who
 * takes m after us finds it: no lost wake-up. The two spins are never held together. signal claims
 * the first claimable waiter (a waiter that timed out does not swallow the signal: the claim fails
 * and the next one gets it); broadcast claims them all. Either may come from a plain thread.
 *
 * The relock after the wait must not be cancellable (the caller gets the mutex back whatever the
 * result): it waits with WEFT__WAIT_NOCANCEL, which the scope's cancel does not claim, in the same
 * FIFO as every other locker. A cancelled fiber in fcond_wait therefore returns -ECANCELED only
 * once it owns the mutex again, however long its holder keeps it.
 *
 * Semaphore. release(n) hands permits to waiters first (one per successful claim), and adds the
 * rest to the count, so count > 0 implies no waiter and acquire is FIFO. -EOVERFLOW is checked
 * before anything changes.
 *
 * Wait group. The count goes to 0 -> every waiter is claimed and woken, in FIFO order. Waiters
 * exist only while the count is above 0; a wait with the count at 0 returns at once. The count is
 * not under the spin: add and done are one CAS on `state` (count << 1 | WG_WAITERS), so the
 * fibers finishing a wave do not queue on the spin (one CAS each, as Go's WaitGroup). WG_WAITERS
 * says a waiter may be queued; it is set and cleared only under the spin, and every CAS of the
 * count keeps it. The pair that must not miss each other:
 *   a waiter, under the spin: the count above 0 -> CAS WG_WAITERS in, then queue its record,
 *     then release the spin;
 *   the add that takes the count to 0: a CAS on the same word; if it sees WG_WAITERS it does not
 *     CAS alone but takes the spin (so after the waiter queued), CASes the count to 0 there and
 *     claims every waiter.
 * Both are read-modify-writes of one word: whichever is first in its order, the other sees it
 * (the waiter sees the count at 0 and returns; the add sees the flag and takes the spin). The
 * zero under the spin leaves WG_WAITERS set (its unlock comes after the 0, and a waiter that saw
 * the 0 without the spin could have freed the group by then, so the flag must still send it to
 * the spin): a later waiter that finds the count at 0 and nobody queued clears it, under the
 * spin. A flag left set (a waiter that timed out) costs the next zero a spin, nothing else. The
 * CAS that adds is a release and the waiter's read an acquire (the CASes in between continue the
 * release sequence), so a waiter sees what every fiber did before its done.
 *
 * Memory orders. 1. The spin's acquire CAS and release store order every access to the object's
 * fields and to the records in its list. 2. The claim is the scheduler's CAS; the one store a waker
 * makes after winning it (the mutex's owner) is under the spin. 3. A woken fiber reads what its
 * waker wrote for it only after weft__wake_ready made it runnable (the scheduler's release and
 * acquire on its run queues), or under the spin.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal/fiber.h"

/* ---- the spin lock's slow path -------------------------------------------------------------- */

/* Spins (each one a pause, a few tens of ns) before the thread yields its CPU: a holder keeps the
 * spin for a few instructions, so it is free again within a spin or two unless the holder's thread
 * was preempted, and then only the scheduler can help. */
#define SPIN_PAUSES 100

void weft__spin_lock_slow(weft__spin *l)
{
	for (unsigned n = 0;; n++) {
		/* test-and-test-and-set: wait with plain loads so the cache line stays shared */
		if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0) {
			unsigned z = 0;
			if (atomic_compare_exchange_weak_explicit(
			            &l->v, &z, 1, memory_order_acquire, memory_order_relaxed))
				return;
		}
		if (n < SPIN_PAUSES) {
			weft__cpu_relax();
		} else {
			int saved = errno;
			sched_yield();
			errno = saved;
		}
	}
}

/* ---- waiter lists --------------------------------------------------------------------------- */

struct waiter {
	struct waiter *prev, *next;
	weft__fiber *fiber;
	uint64_t tok; /* the wait's token */
	bool linked;  /* in the object's list (M1) */
};

struct wobj {
	weft__spin lock;
	uint32_t nwait;
	struct waiter *head, *tail;
};

struct mutex {
	struct wobj o;
	weft__fiber *owner;
};

struct cond {
	struct wobj o;
};

struct sem {
	struct wobj o;
	int64_t count;
};

struct wgroup {
	struct wobj o;
	_Atomic int64_t state; /* count << 1 | WG_WAITERS */
};

#define FITS(in, pub)                                                                              \
	_Static_assert(sizeof(in) <= sizeof(pub) && _Alignof(in) <= _Alignof(pub) &&               \
	                       offsetof(in, o) == 0,                                               \
	               #in " fits in " #pub)
FITS(struct mutex, weft_fmutex);
FITS(struct cond, weft_fcond);
FITS(struct sem, weft_fsem);
FITS(struct wgroup, weft_waitgroup);

static void enqueue(struct wobj *o, struct waiter *w)
{
	w->next = NULL;
	w->prev = o->tail;
	if (o->tail)
		o->tail->next = w;
	else
		o->head = w;
	o->tail = w;
	w->linked = true;
	o->nwait++;
}

static void unlink_waiter(struct wobj *o, struct waiter *w)
{
	WEFT__ASSERT(w->linked && o->nwait > 0);
	if (w->prev)
		w->prev->next = w->next;
	else
		o->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		o->tail = w->prev;
	w->prev = w->next = NULL;
	w->linked = false;
	o->nwait--;
}

/* Under the spin: pops records from the head until one's claim with `result` succeeds. Records
 * whose claim fails are dropped (their waiters timed out or were cancelled and find them
 * unlinked). NULL if none is left. */
static struct waiter *pop_claimed(struct wobj *o, int result)
{
	while (o->head) {
		struct waiter *w = o->head;
		unlink_waiter(o, w);
		if (weft__wake_claim(w->fiber, w->tok, result))
			return w;
	}
	return NULL;
}

/* Under the spin: claims every claimable waiter, in FIFO order, chained through `next`. */
static struct waiter *pop_all_claimed(struct wobj *o, int result)
{
	struct waiter *first = NULL, *last = NULL, *w;
	while ((w = pop_claimed(o, result))) {
		if (last)
			last->next = w;
		else
			first = w;
		last = w;
	}
	return first;
}

/* After the spin is released: make the claimed waiters runnable. Each `next` is read before the
 * wake, after which the record may be gone. */
static void wake_chain(struct waiter *w)
{
	while (w) {
		struct waiter *next = w->next;
		weft__wake_ready(w->fiber, WEFT__READY_QUEUE);
		w = next;
	}
}

/* The wait can no longer start in time. */
static bool deadline_passed(int64_t deadline)
{
	return deadline != WEFT_FOREVER && deadline <= weft_now();
}

/* The wait protocol on object o for the calling fiber, entered with the spin held after a fast
 * path found o not ready; releases the spin. weft__wait_begin neither switches nor locks, so it
 * runs under the spin: nothing changes between the failed try and the queued record. 0 when a
 * waker claimed the wait with 0 (the hand-off), else -ETIMEDOUT, -ECANCELED (or -ENOMEM: the
 * scheduler's timer could not be armed) with the record out of the list. */
static int wait_on(struct wobj *o, weft__fiber *self, enum weft_wait_reason reason, const void *pub,
                   int64_t deadline)
{
	if (deadline_passed(deadline)) {
		weft__spin_unlock(&o->lock);
		return -ETIMEDOUT;
	}
	uint64_t tok = weft__wait_begin(self, reason, pub);
	if (tok == 0) {
		weft__spin_unlock(&o->lock);
		return -ECANCELED;
	}
	struct waiter w = {.fiber = self, .tok = tok};
	enqueue(o, &w);
	weft__spin_unlock(&o->lock);

	int r = weft__wait_park(self, tok, deadline);
	WEFT__ASSERT(r <= 0); /* a failure: -ETIMEDOUT, -ECANCELED, the timer's -ENOMEM */
	if (r != 0) {
		weft__spin_lock(&o->lock);
		if (w.linked)
			unlink_waiter(o, &w);
		weft__spin_unlock(&o->lock);
	}
	return r;
}

/* Test hook, declared again in tests/unit/test-sync.c (no header: nothing else may use it): the
 * records queued now on any of the four objects. */
int weft__fsync_waiters(void *obj);
int weft__fsync_waiters(void *obj)
{
	struct wobj *o = obj;
	weft__spin_lock(&o->lock);
	int n = (int)o->nwait;
	weft__spin_unlock(&o->lock);
	return n;
}

/* ---- mutex ---------------------------------------------------------------------------------- */

static struct mutex *mutex_of(weft_fmutex *m)
{
	return (struct mutex *)(void *)m;
}

/* Under the spin, by the owner: give the lock to the first waiter that can take it (M3), or
 * release it. Returns the fiber to wake after the spin is released, or NULL. */
static weft__fiber *handoff(struct mutex *m)
{
	struct waiter *w = pop_claimed(&m->o, 0);
	if (!w) {
		m->owner = NULL;
		return NULL;
	}
	m->owner = w->fiber;
	return w->fiber;
}

static bool mutex_take(struct wobj *o, weft__fiber *self)
{
	struct mutex *m = (struct mutex *)o;
	if (m->owner)
		return false;
	m->owner = self;
	return true;
}

static void unlock_owned(struct mutex *m)
{
	weft__spin_lock(&m->o.lock);
	weft__fiber *next = handoff(m);
	weft__spin_unlock(&m->o.lock);
	if (next)
		weft__wake_ready(next, WEFT__READY_QUEUE);
}

/* fcond_wait's relock: a wait that cancellation does not end (WEFT__WAIT_NOCANCEL), in the same
 * FIFO as every other locker; only the unlocker's hand-off claims it. */
static void lock_uncancellable(struct mutex *m, weft__fiber *self)
{
	weft__spin_lock(&m->o.lock);
	if (mutex_take(&m->o, self)) {
		weft__spin_unlock(&m->o.lock);
		return;
	}
	WEFT__ASSERT(m->owner != self);
	/* no switch, no lock: under the spin (see wait_on) */
	uint64_t tok = weft__wait_begin(self, WEFT_WAIT_MUTEX | WEFT__WAIT_NOCANCEL, m);
	WEFT__ASSERT(tok != 0);
	struct waiter w = {.fiber = self, .tok = tok};
	enqueue(&m->o, &w);
	weft__spin_unlock(&m->o.lock);
	int r = weft__wait_park(self, tok, WEFT_FOREVER);
	WEFT__ASSERT(r == 0); /* no timer, no cancel: handed over */
}

int weft_fmutex_lock(weft_fmutex *pm, int64_t deadline)
{
	if (!pm || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct mutex *m = mutex_of(pm);
	weft__spin_lock(&m->o.lock);
	if (mutex_take(&m->o, self)) {
		weft__spin_unlock(&m->o.lock);
		return 0;
	}
	if (m->owner == self) {
		weft__spin_unlock(&m->o.lock);
		return -EDEADLK;
	}
	/* 0: the unlocker made us the owner (M3) */
	return wait_on(&m->o, self, WEFT_WAIT_MUTEX, pm, deadline);
}

int weft_fmutex_trylock(weft_fmutex *pm)
{
	if (!pm)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct mutex *m = mutex_of(pm);
	int r = -EBUSY;
	weft__spin_lock(&m->o.lock);
	if (!m->owner) {
		m->owner = self;
		r = 0;
	}
	weft__spin_unlock(&m->o.lock);
	return r;
}

int weft_fmutex_unlock(weft_fmutex *pm)
{
	if (!pm)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct mutex *m = mutex_of(pm);
	weft__spin_lock(&m->o.lock);
	if (m->owner != self) {
		weft__spin_unlock(&m->o.lock);
		return -EPERM;
	}
	weft__fiber *next = handoff(m);
	weft__spin_unlock(&m->o.lock);
	if (next)
		weft__wake_ready(next, WEFT__READY_QUEUE);
	return 0;
}

int weft_fmutex_destroy(weft_fmutex *pm)
{
	if (!pm)
		return 0;
	struct mutex *m = mutex_of(pm);
	weft__spin_lock(&m->o.lock);
	bool busy = m->owner || m->o.nwait;
	weft__spin_unlock(&m->o.lock);
	return busy ? -EBUSY : 0;
}

/* ---- condition variable --------------------------------------------------------------------- */

static struct cond *cond_of(weft_fcond *c)
{
	return (struct cond *)(void *)c;
}

int weft_fcond_wait(weft_fcond *pc, weft_fmutex *pm, int64_t deadline)
{
	if (!pc || !pm || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct cond *c = cond_of(pc);
	struct mutex *m = mutex_of(pm);

	weft__spin_lock(&m->o.lock);
	bool held = m->owner == self; /* only we can change it if so */
	weft__spin_unlock(&m->o.lock);
	if (!held)
		return -EPERM;

	if (deadline_passed(deadline))
		return -ETIMEDOUT; /* m was never released: held, as promised */
	uint64_t tok = weft__wait_begin(self, WEFT_WAIT_COND, pc);
	if (tok == 0)
		return -ECANCELED;
	struct waiter w = {.fiber = self, .tok = tok};
	weft__spin_lock(&c->o.lock);
	enqueue(&c->o, &w);
	weft__spin_unlock(&c->o.lock);

	unlock_owned(m); /* after queueing: a signal from the next owner of m finds us */

	int r = weft__wait_park(self, tok, deadline);
	WEFT__ASSERT(r <= 0); /* a failure: -ETIMEDOUT, -ECANCELED, the timer's -ENOMEM */
	if (r != 0) {
		weft__spin_lock(&c->o.lock);
		if (w.linked)
			unlink_waiter(&c->o, &w);
		weft__spin_unlock(&c->o.lock);
	}
	lock_uncancellable(m, self);
	return r;
}

int weft_fcond_signal(weft_fcond *pc)
{
	if (!pc)
		return -EINVAL;
	struct cond *c = cond_of(pc);
	weft__spin_lock(&c->o.lock);
	struct waiter *w = pop_claimed(&c->o, 0); /* out of the list: w->next is NULL */
	weft__spin_unlock(&c->o.lock);
	wake_chain(w);
	return 0;
}

int weft_fcond_broadcast(weft_fcond *pc)
{
	if (!pc)
		return -EINVAL;
	struct cond *c = cond_of(pc);
	weft__spin_lock(&c->o.lock);
	struct waiter *chain = pop_all_claimed(&c->o, 0);
	weft__spin_unlock(&c->o.lock);
	wake_chain(chain);
	return 0;
}

int weft_fcond_destroy(weft_fcond *pc)
{
	if (!pc)
		return 0;
	return weft__fsync_waiters(pc) ? -EBUSY : 0;
}

/* ---- semaphore ------------------------------------------------------------------------------ */

static struct sem *sem_of(weft_fsem *s)
{
	return (struct sem *)(void *)s;
}

static bool sem_take(struct wobj *o, weft__fiber *self)
{
	struct sem *s = (struct sem *)o;
	if (s->count == 0)
		return false;
	s->count--;
	return true;
}

int weft_fsem_acquire(weft_fsem *ps, int64_t deadline)
{
	if (!ps || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct sem *s = sem_of(ps);
	weft__spin_lock(&s->o.lock);
	if (sem_take(&s->o, self)) {
		weft__spin_unlock(&s->o.lock);
		return 0;
	}
	/* 0: release handed us a permit */
	return wait_on(&s->o, self, WEFT_WAIT_SEM, ps, deadline);
}

int weft_fsem_tryacquire(weft_fsem *ps)
{
	if (!ps)
		return -EINVAL;
	struct sem *s = sem_of(ps);
	weft__spin_lock(&s->o.lock);
	int r = sem_take(&s->o, NULL) ? 0 : -EAGAIN;
	weft__spin_unlock(&s->o.lock);
	return r;
}

int weft_fsem_release(weft_fsem *ps, int n)
{
	if (!ps || n < 1)
		return -EINVAL;
	struct sem *s = sem_of(ps);
	struct waiter *first = NULL, *last = NULL, *w;
	weft__spin_lock(&s->o.lock);
	if (s->count > INT64_MAX - n) { /* waiters imply count 0: this never refuses a hand-off */
		weft__spin_unlock(&s->o.lock);
		return -EOVERFLOW;
	}
	while (n > 0 && (w = pop_claimed(&s->o, 0))) {
		if (last)
			last->next = w;
		else
			first = w;
		last = w;
		n--;
	}
	s->count += n;
	weft__spin_unlock(&s->o.lock);
	wake_chain(first);
	return 0;
}

int weft_fsem_destroy(weft_fsem *ps)
{
	if (!ps)
		return 0;
	return weft__fsync_waiters(ps) ? -EBUSY : 0;
}

/* ---- wait group ----------------------------------------------------------------------------- */

static struct wgroup *wg_of(weft_waitgroup *wg)
{
	return (struct wgroup *)(void *)wg;
}

/* state's low bit: a waiter may be queued (the head comment's wait group pair). */
#define WG_WAITERS 1

/* The new count, or -EINVAL / -EOVERFLOW (n != 0; count >= 0). */
static int64_t wg_sum(int64_t count, long n)
{
	if (n < 0 && count + n < 0) /* count >= 0 and n >= LONG_MIN: no overflow */
		return -EINVAL;
	if (n > 0 && count > WEFT_WAITGROUP_MAX - n)
		return -EOVERFLOW;
	return count + n;
}

int weft_waitgroup_add(weft_waitgroup *pwg, long n)
{
	if (!pwg)
		return -EINVAL;
	if (n == 0)
		return 0;
	struct wgroup *g = wg_of(pwg);
	bool locked = false;
	int64_t s = atomic_load_explicit(&g->state, memory_order_relaxed), c;
	for (;;) {
		c = wg_sum(s >> 1, n);
		if (c < 0)
			break;
		if (c == 0 && (s & WG_WAITERS) && !locked) {
			/* a waiter may be queued: the zero is made under the spin (head comment) */
			weft__spin_lock(&g->o.lock);
			locked = true;
			s = atomic_load_explicit(&g->state, memory_order_relaxed);
			continue;
		}
		/* without the spin and c at 0, this CAS is the last access: the group may be
		 * freed right after */
		if (atomic_compare_exchange_weak_explicit(&g->state, &s, c << 1 | (s & WG_WAITERS),
		                                          memory_order_acq_rel,
		                                          memory_order_relaxed))
			break;
	}
	if (locked) {
		struct waiter *chain = c == 0 ? pop_all_claimed(&g->o, 0) : NULL;
		weft__spin_unlock(&g->o.lock);
		wake_chain(chain);
	}
	return c < 0 ? (int)c : 0;
}

int weft_waitgroup_done(weft_waitgroup *wg)
{
	return weft_waitgroup_add(wg, -1);
}

int weft_waitgroup_wait(weft_waitgroup *pwg, int64_t deadline)
{
	if (!pwg || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct wgroup *g = wg_of(pwg);
	int64_t s = atomic_load_explicit(&g->state, memory_order_acquire);
	if (s == 0)
		return 0;
	weft__spin_lock(&g->o.lock);
	s = atomic_load_explicit(&g->state, memory_order_acquire);
	for (;;) {
		if (s >> 1 == 0) {
			/* nobody queued: the flag a zero left goes (a failed CAS: an add came) */
			if ((s & WG_WAITERS) && g->o.nwait == 0 &&
			    !atomic_compare_exchange_strong_explicit(
			            &g->state, &s, 0, memory_order_acquire, memory_order_acquire))
				continue;
			weft__spin_unlock(&g->o.lock);
			return 0;
		}
		if ((s & WG_WAITERS) || atomic_compare_exchange_weak_explicit(
		                                &g->state, &s, s | WG_WAITERS, memory_order_acquire,
		                                memory_order_acquire))
			break;
	}
	return wait_on(&g->o, self, WEFT_WAIT_WAITGROUP, pwg, deadline);
}

int weft_waitgroup_destroy(weft_waitgroup *pwg)
{
	if (!pwg)
		return 0;
	return weft__fsync_waiters(pwg) ? -EBUSY : 0;
}
