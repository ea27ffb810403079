/* The scheduler's interface to the parts that make fibers wait: the synchronization objects
 * (src/fiber/sync.c), channels (src/fiber/chan.c), and later the reactor. Never installed.
 *
 * The wait protocol. Every blocking point follows the same four steps, so that a wake-up is never
 * lost and never delivered twice:
 *
 *   1. tok = weft__wait_begin(self, reason, obj)      a new wait: state WAITING, sequence tok
 *   2. register (self, tok) where a waker finds it     under the object's own lock
 *      and unlock the object
 *   3. r = weft__wait_park(self, tok, deadline)       switches away until woken; returns the
 *                                                      result the winning waker gave, or
 *                                                      -ETIMEDOUT / -ECANCELED
 *   4. if r came from the timer or the canceller, unregister (self, tok) under the object's lock
 *      (a waker that took the record out meanwhile lost its claim: it must skip the record)
 *
 * A waker, under the object's lock, takes a record (f, tok) and calls weft__wake_claim(f, tok, r):
 * exactly one claim per wait succeeds (a CAS on the fiber's wait word). The winner may then write
 * into the waiter's buffers (a channel hands its value over), and must then call
 * weft__wake_ready(f, how). A loser must not touch the record's buffers; the waiter unregisters
 * itself in step 4. Step 3 may be entered after the claim already happened (the waker was
 * faster): the park then returns at once or soon, with the claimed result.
 *
 * A parked fiber's memory and stack stay valid until it is readied, so records may live on the
 * waiter's stack; they must be out of every list before the wait function returns.
 *
 * Cancellation and deadlines go through the same claim: the scope's cancel claims with
 * -ECANCELED, the timer with -ETIMEDOUT. weft__wait_begin itself returns 0 (no wait begun) when the
 * fiber is cancelled already; callers then return -ECANCELED without registering. A cancel that
 * comes after that check shows as -ECANCELED from weft__wait_park. weft__wait_begin never
 * switches and takes no lock: it may be called under the object's lock.
 */
#ifndef WEFT_INTERNAL_FIBER_H
#define WEFT_INTERNAL_FIBER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/fiber.h>

#include "internal/common.h"

typedef struct weft__fiber weft__fiber;

/* The calling fiber, or NULL on a plain thread (or a worker's own scheduling loop). */
weft__fiber *weft__fiber_self(void);

/* Step 1. Returns the wait's token (never 0), or 0 if the fiber is cancelled (no wait begun).
 * reason | WEFT__WAIT_NOCANCEL: a wait that cancellation does not end (the relock inside a
 * condition wait); it still returns a token when the fiber is cancelled. */
#define WEFT__WAIT_NOCANCEL 0x100
uint64_t weft__wait_begin(weft__fiber *self, int reason, const void *obj);

/* Step 3. Parks until claimed; with deadline != WEFT_FOREVER a timer claims with -ETIMEDOUT at the
 * deadline (a deadline already passed still parks, briefly: the claim comes at once). Returns the
 * claimed result. */
int weft__wait_park(weft__fiber *self, uint64_t tok, int64_t deadline);

/* Step 1 undone without parking (the object turned out to be ready after all): claims the wait for
 * the fiber itself. Returns true if it won (no waker will touch the records: unregister and go
 * on), false if a waker claimed first (its result is then what weft__wait_park returns at once:
 * park to collect it). */
bool weft__wait_abandon(weft__fiber *self, uint64_t tok);

/* The waker's claim: true if this call ends the wait (tok is the wait the record was made for),
 * with `result` as what weft__wait_park returns. Lock-free; any thread. */
bool weft__wake_claim(weft__fiber *f, uint64_t tok, int result);

enum weft__ready_how {
	WEFT__READY_QUEUE = 0, /* to the back of the waker's worker queue (or the injection queue
	                          from a plain thread) */
	WEFT__READY_NEXT,      /* the waker's worker runs it next (the waker keeps running) */
	WEFT__READY_SWITCH,    /* the waking fiber yields its worker to it at once: the waker goes
	                          to the back of the queue (falls back to NEXT outside a fiber) */
};

/* After a successful claim: make f runnable. QUEUE and NEXT may be called under the object's
 * lock; SWITCH switches fibers at once and must be called with no lock held. */
void weft__wake_ready(weft__fiber *f, enum weft__ready_how how);

/* True if the fiber's scope is cancelled. */
bool weft__fiber_cancelled(const weft__fiber *f);

/* A small spin lock for the objects' waiter lists: held for a few instructions, never across a
 * park. Zero is unlocked. Spins with a pause, then yields the thread. */
typedef struct {
	atomic_uint v;
} weft__spin;

void weft__spin_lock_slow(weft__spin *l);

static inline void weft__spin_lock(weft__spin *l)
{
	/* test-and-set: an exchange is a little cheaper than a CAS (x86: xchg, no compare); writing
	 * 1 over a held lock's 1 changes nothing */
	if (weft__unlikely(atomic_exchange_explicit(&l->v, 1, memory_order_acquire) != 0))
		weft__spin_lock_slow(l);
}

static inline void weft__spin_unlock(weft__spin *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_release);
}

#endif
