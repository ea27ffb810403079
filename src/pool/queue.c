/* queue.c: the pool's task queues: one bounded lock-free ring per worker, an overflow queue under
 * a mutex, and the futex calls the pool parks on.
 *
 * Ring. Dmitry Vyukov's bounded multi-producer multi-consumer queue: a power-of-two array of
 * cells, each with a sequence number, and two positions, tail (next push) and head (next pop),
 * each on its own cache line. Tasks are stored by value (fn, arg, and a future or a stamp), so a
 * push allocates nothing. Cell i starts with seq = i. For a position pos and its cell c:
 *
 *   push: c.seq == pos      the cell is free for this lap: CAS tail pos -> pos + 1, write the
 *                           task, then store c.seq = pos + 1 (release): "full for this lap".
 *         c.seq <  pos      the cell still holds the previous lap's task: the ring is full.
 *         c.seq >  pos      another producer took pos: reload tail and retry.
 *   pop:  c.seq == pos + 1  the task is there: CAS head pos -> pos + 1, read the task, then
 *                           store c.seq = pos + SIZE (release): "free for the next lap".
 *         c.seq <  pos + 1  nothing published at pos yet: empty if tail == pos, else a producer
 *                           has taken pos and is writing (-EBUSY: the ring is not empty).
 *         c.seq >  pos + 1  another consumer took pos: reload head and retry.
 *
 * Memory orders: 1. the producer's writes to the cell happen before its release store of c.seq;
 * 2. the consumer's acquire load of c.seq that sees pos + 1 makes them visible; 3. symmetrically
 * the consumer's reads of the cell happen before its release store of pos + SIZE, which the next
 * lap's producer loads with acquire before it overwrites the cell. The CAS on tail is seq_cst:
 * the parking protocol in pool.c needs "push, then load nparked" to be ordered against "add to
 * nparked, then load the tails" (on x86 every lock cmpxchg is a full barrier anyway). Sequence
 * numbers are 32 bits, compared as the signed difference (int32_t)(seq - (uint32_t)pos); a ring
 * of 2^WEFT__POOL_RING_BITS (4096) cells is far below the 2^31 where that would wrap. Positions are
 * 63 bits.
 *
 * Closing: bit 63 of tail is the closed flag (set with one fetch_or). A push reads tail before
 * its CAS and the CAS compares the whole word, so once the bit is set no push can succeed, and a
 * push that succeeded before is already counted in tail: after weft__ring_close, tail - head is
 * exactly the work left in the ring, which is what shutdown needs.
 *
 * Overflow queue: a circular array that doubles when full (weft__realloc, so allocation faults
 * reach it), under its own mutex (WEFT__RANK_POOL_OVERFLOW). `limit` caps it (the memory budget
 * of an unbounded pool); `n` mirrors the count, stored seq_cst under the lock, so submitters and
 * the parking protocol can check it without the lock. `take` pops one task for the caller and
 * moves a batch into the caller's own ring, so a worker does not take the lock per task.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../internal/alloc.h"
#include "../internal/pool.h"

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release
#define SEQ_CST memory_order_seq_cst
#define MASK (WEFT__POOL_RING_SIZE - 1)

_Static_assert(sizeof(struct weft__cell) == 32, "a cell is 32 bytes: two per cache line");
_Static_assert(WEFT__POOL_RING_SIZE < (1u << 30), "32-bit sequence numbers need a small ring");

/* ---- ring ------------------------------------------------------------------------------------ */

void weft__ring_init(struct weft__ring *r)
{
	atomic_store_explicit(&r->tail, 0, RELAXED);
	atomic_store_explicit(&r->head, 0, RELAXED);
	for (uint32_t i = 0; i < WEFT__POOL_RING_SIZE; i++) {
		atomic_store_explicit(&r->cells[i].seq, i, RELAXED);
		r->cells[i].flags = 0;
		r->cells[i].fn = NULL;
		r->cells[i].arg = NULL;
		r->cells[i].u.fut = NULL;
	}
}

int weft__ring_pop_batch(struct weft__ring *r, struct weft__task *out, unsigned max)
{
	uint64_t pos = atomic_load_explicit(&r->head, RELAXED);
	for (;;) {
		unsigned m = 0;
		while (m < max) {
			struct weft__cell *c = &r->cells[(pos + m) & MASK];
			if (atomic_load_explicit(&c->seq, ACQUIRE) != (uint32_t)(pos + m + 1))
				break;
			m++;
		}
		if (m == 0) {
			uint32_t seq = atomic_load_explicit(&r->cells[pos & MASK].seq, ACQUIRE);
			if ((int32_t)(seq - (uint32_t)(pos + 1)) > 0) { /* head moved on */
				pos = atomic_load_explicit(&r->head, RELAXED);
				continue;
			}
			uint64_t tail =
			        atomic_load_explicit(&r->tail, SEQ_CST) & ~WEFT__POOL_CLOSED;
			if (tail == pos)
				return 0;
			uint64_t now = atomic_load_explicit(&r->head, RELAXED);
			if (now != pos) {
				pos = now;
				continue;
			}
			return -EBUSY;
		}
		/* Cells pos .. pos + m - 1 are published; only a consumer that moves head past
		 * them could change them, and then this CAS fails. */
		if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + m, RELAXED,
		                                          RELAXED)) {
			for (unsigned i = 0; i < m; i++) {
				struct weft__cell *c = &r->cells[(pos + i) & MASK];
				weft__cell_read(c, &out[i]);
				atomic_store_explicit(&c->seq,
				                      (uint32_t)(pos + i + WEFT__POOL_RING_SIZE),
				                      RELEASE);
			}
			return (int)m;
		}
	}
}

void weft__ring_close(struct weft__ring *r)
{
	atomic_fetch_or_explicit(&r->tail, WEFT__POOL_CLOSED, SEQ_CST);
}

/* ---- overflow queue -------------------------------------------------------------------------- */

void weft__overflow_init(struct weft__overflow *o, size_t limit)
{
	weft__mutex_init(&o->lock, WEFT__RANK_POOL_OVERFLOW);
	o->buf = NULL;
	o->cap = o->head = o->count = 0;
	o->limit = limit;
	o->closed = false;
	atomic_store_explicit(&o->n, 0, RELAXED);
	atomic_store_explicit(&o->pushed, 0, RELAXED);
}

void weft__overflow_destroy(struct weft__overflow *o)
{
	free(o->buf);
	o->buf = NULL;
	weft__mutex_destroy(&o->lock);
}

/* Double the array, unwrapping it so the oldest task is at index 0. Under the lock. */
static int grow(struct weft__overflow *o)
{
	size_t cap = o->cap ? o->cap * 2 : 256;
	if (cap > SIZE_MAX / sizeof(struct weft__task))
		return -ENOMEM;
	struct weft__task *b = weft__malloc(cap * sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < o->count; i++)
		b[i] = o->buf[(o->head + i) & (o->cap - 1)];
	/* the new buffer is in place before the old one is freed: a fork child that frees the
	 * overflow (weft_pool_destroy there) never sees a freed pointer */
	struct weft__task *old = o->buf;
	o->buf = b;
	free(old);
	o->cap = cap;
	o->head = 0;
	return 0;
}

int weft__overflow_push(struct weft__overflow *o, const struct weft__task *t)
{
	int r = 0;
	weft__mutex_lock(&o->lock);
	if (o->closed)
		r = -ESHUTDOWN;
	else if (o->limit && o->count >= o->limit)
		r = -ENOMEM;
	else if (o->count == o->cap)
		r = grow(o);
	if (r == 0) {
		o->buf[(o->head + o->count) & (o->cap - 1)] = *t;
		o->count++;
		atomic_store_explicit(&o->pushed, atomic_load_explicit(&o->pushed, RELAXED) + 1,
		                      RELAXED);
		atomic_store_explicit(&o->n, o->count, SEQ_CST);
	}
	weft__mutex_unlock(&o->lock);
	return r;
}

/* Under the lock, count > 0. */
static void pop_locked(struct weft__overflow *o, struct weft__task *t)
{
	*t = o->buf[o->head];
	o->head = (o->head + 1) & (o->cap - 1);
	o->count--;
}

/* Under the lock: give back a large empty array. */
static void shrink_locked(struct weft__overflow *o)
{
	if (o->count == 0 && o->cap > 4096) {
		free(o->buf);
		o->buf = NULL;
		o->cap = o->head = 0;
	}
}

int weft__overflow_pop(struct weft__overflow *o, struct weft__task *t)
{
	if (atomic_load_explicit(&o->n, RELAXED) == 0)
		return 0;
	int got = 0;
	weft__mutex_lock(&o->lock);
	if (o->count) {
		pop_locked(o, t);
		got = 1;
		shrink_locked(o);
		atomic_store_explicit(&o->n, o->count, SEQ_CST);
	}
	weft__mutex_unlock(&o->lock);
	return got;
}

int weft__overflow_take(struct weft__overflow *o, struct weft__task *t, struct weft__ring *r,
                        unsigned max)
{
	if (atomic_load_explicit(&o->n, RELAXED) == 0)
		return 0;
	int got = 0;
	weft__mutex_lock(&o->lock);
	if (o->count) {
		pop_locked(o, t);
		got = 1;
		/* Move a batch into the caller's ring. The ring is lock-free: pushing under this
		 * lock nests nothing. A push that fails (ring full or closed) leaves the task
		 * where it was. */
		while (o->count && (unsigned)got <= max) {
			if (weft__ring_push(r, &o->buf[o->head]) < 0)
				break;
			o->head = (o->head + 1) & (o->cap - 1);
			o->count--;
			got++;
		}
		shrink_locked(o);
		atomic_store_explicit(&o->n, o->count, SEQ_CST);
	}
	weft__mutex_unlock(&o->lock);
	return got;
}

void weft__overflow_close(struct weft__overflow *o)
{
	weft__mutex_lock(&o->lock);
	o->closed = true;
	weft__mutex_unlock(&o->lock);
}

/* ---- futex ----------------------------------------------------------------------------------- */

int weft__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t deadline)
{
	int saved = errno;
	struct timespec ts, *tsp = NULL;
	if (deadline != WEFT_FOREVER) {
		if (deadline < 0)
			deadline = 0;
		ts.tv_sec = deadline / 1000000000;
		ts.tv_nsec = deadline % 1000000000;
		tsp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (FUTEX_WAIT's is
	 * relative). */
	long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE, val, tsp, NULL,
	                 FUTEX_BITSET_MATCH_ANY);
	int err = r == 0 ? 0 : errno;
	errno = saved;
	if (err == ETIMEDOUT)
		return -ETIMEDOUT;
	if (err == EAGAIN)
		return -EAGAIN;
	return 0; /* woken, EINTR: the caller re-checks its condition */
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
	int saved = errno;
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
	errno = saved;
}
