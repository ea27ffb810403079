/* chan.c: channels between fibers (include/weft/fiber.h): buffered and unbuffered, with close,
 * non-blocking tries, and select over several channels with a deadline.
 *
 * Layout. One allocation (weft__malloc, so allocation faults reach it): the struct, then a ring of
 * `cap` values of `elem_size` bytes (none for an unbuffered channel). Under the channel's spin:
 * the ring (head, len), `closed`, and two FIFO queues of waiter records, senders and receivers.
 * `len` is also an atomic so weft_chan_len can read it without the spin.
 *
 * Waiter records (struct cwaiter) live on the waiting fiber's stack: fiber, wait token, the
 * caller's value buffer (`elem`: the value to send, or where a received one goes), and the select
 * case index (-1 for a plain send or receive). A select puts one record per case on the case's
 * channel, all with the same token: the first claim on any of them wins the whole select.
 *
 * Invariants, under the spin (records already claimed elsewhere, which a select leaves behind
 * until it unlinks them, are the only exception to 2 and 3, and wakers skip them: their claim
 * fails):
 *   1. a record is in a queue iff its `linked` is true;
 *   2. receivers wait only while the ring is empty (a send hands straight to a waiting receiver);
 *   3. senders wait only while the ring is full (for cap 0: always), and never on a closed channel;
 *   4. after close: no sender is queued, and receivers are queued only until close wakes them.
 *
 * Operations under the spin (send_locked, recv_locked), each returning 0 (done), -EPIPE (closed;
 * for a receive: closed and empty), or -EAGAIN (would wait):
 *   send: closed -> -EPIPE; a receiver whose claim succeeds -> hand the value to it; room in the
 *         ring -> append; else -EAGAIN.
 *   recv: a value in the ring -> take the oldest, and move the first claimable sender's value into
 *         the freed slot (FIFO is kept: that sender was next); else a claimable sender (cap 0)
 *         -> take its value; closed -> -EPIPE; else -EAGAIN.
 * A waker claims a record with the result its waiter's call will return: 0, or -EPIPE for close;
 * for a select record, the case index, plus SEL_CLOSED for close. Copies to and from a claimed
 * waiter's buffer are done after the spin is released (struct finish): the waiter cannot run, and
 * its record and buffer cannot change, before the waker calls weft__wake_ready. A value moved into
 * the ring is copied under the spin.
 *
 * Wake-ups. An unbuffered send to a waiting receiver wakes it with WEFT__READY_SWITCH: the receiver
 * runs at once on this worker and the sender runs next there (a direct hand-off). Other single
 * wakes from a fiber use WEFT__READY_NEXT (the woken fiber runs next here,
 * cache-warm); close and any wake from a plain thread use WEFT__READY_QUEUE.
 *
 * Waiting (the protocol of src/internal/fiber.h), all in one hold of the spin: try; would wait:
 * deadline passed -> -ETIMEDOUT; weft__wait_begin (it neither switches nor locks, so it may run
 * under the spin); queue the record; release; park. The park returns the waker's result, or
 * -ETIMEDOUT / -ECANCELED (or -ENOMEM when the scheduler could not arm the timer), after which the
 * record is unlinked under the spin if still linked. Races: a waker that pops a record whose claim
 * fails (its waiter timed out, was cancelled, or its select won elsewhere) drops it and goes on to
 * the next record, so a value is never handed to a waiter that will report a failure, and a waiter
 * that reports success got exactly one value (or gave exactly one away).
 *
 * Select. 1. Validate; collect the cases with a channel; shuffle their order (Fisher-Yates with a
 * thread-local xorshift64*: any fiber's draw is as good as any other's). 2. Lock every distinct
 * channel in increasing address order (a channel named twice is locked once): every thread that
 * holds several channel spins took them in that one order, so they cannot deadlock; single-channel
 * operations hold one spin only. 3. Try the cases in the shuffled order; the first one ready is
 * done: since the order is a uniform random permutation, the first ready case in it is uniform
 * among the ready ones (no case starves). 4. None ready: deadline 0 or passed -> -ETIMEDOUT;
 * else, still holding the spins, weft__wait_begin and one record per case; release; park. 5. Woken
 * (or not): relock, unlink every record still linked, release. The result (SEL_CLOSED | index) came
 * with the winning claim, and so did the data transfer. A case on a closed channel is ready: a
 * receive once the ring is drained, a send at once, both with -EPIPE in *ret_result (fiber.h says
 * "else 0" for the send; a send that did not happen cannot be 0). A select keeps its records, its
 * order and its lock list on the fiber's stack: about 60 bytes a case (3.8 KiB for 64 cases):
 * fibers that select over many cases need more than the 2 KiB minimum stack.
 *
 * Memory orders: the spin's acquire/release orders everything in the channel and in the queued
 * records; the claim is the scheduler's CAS; data copied into a claimed waiter's buffer reaches
 * it through weft__wake_ready (the scheduler's release when it queues the fiber, acquire when a
 * worker takes it). `len` is stored relaxed under the spin and loaded relaxed by weft_chan_len:
 * a snapshot, nothing is ordered by it.
 *
 * Destroy: aborts (WEFT__ASSERT) if a record is still queued, since its fiber would stay parked
 * forever; values still buffered are dropped.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal/alloc.h"
#include "internal/fiber.h"

#define SEL_CLOSED 0x100 /* in a select record's claim result: the case's channel was closed */
#define SEL_INDEX 0xff

_Static_assert(WEFT_SELECT_MAX <= SEL_INDEX + 1, "a case index fits below SEL_CLOSED");

struct cwaiter {
	struct cwaiter *prev, *next;
	weft__fiber *fiber;
	uint64_t tok;
	void *elem;  /* the caller's value: the source of a send, the destination of a receive */
	int index;   /* the select case, -1 for weft_chan_send and weft_chan_recv */
	bool linked; /* in a queue */
};

struct cqueue {
	struct cwaiter *head, *tail;
	size_t n;
};

struct weft_chan {
	weft__spin lock;
	bool closed;
	size_t elem_size;
	size_t cap;
	size_t head;       /* the ring slot of the oldest value */
	atomic_size_t len; /* values in the ring */
	struct cqueue sendq, recvq;
	unsigned char ring[]; /* cap * elem_size bytes */
};

/* What is left to do after the spin is released: copy a value from or to a claimed waiter's
 * buffer, then make it runnable. Holds no pointer into the channel. */
struct finish {
	weft__fiber *wake;
	enum weft__ready_how how;
	void *dst;
	const void *src;
	size_t size;
};

/* ---- queues --------------------------------------------------------------------------------- */

static void cq_push(struct cqueue *q, struct cwaiter *w)
{
	w->next = NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	w->linked = true;
	q->n++;
}

static void cq_unlink(struct cqueue *q, struct cwaiter *w)
{
	WEFT__ASSERT(w->linked && q->n > 0);
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->prev = w->next = NULL;
	w->linked = false;
	q->n--;
}

static int claim_result(const struct cwaiter *w, bool closed)
{
	if (w->index < 0)
		return closed ? -EPIPE : 0;
	return w->index | (closed ? SEL_CLOSED : 0);
}

/* cq_unlink of the head: a hand-off's hottest list operation. */
static inline void cq_pop_head(struct cqueue *q, struct cwaiter *w)
{
	WEFT__ASSERT(w->linked && !w->prev);
	q->head = w->next;
	if (q->head)
		q->head->prev = NULL;
	else
		q->tail = NULL;
	w->next = NULL;
	w->linked = false;
	q->n--;
}

/* Pops records until one's claim succeeds (its fiber cannot run before weft__wake_ready); records
 * whose claim fails are dropped. NULL if none is left (most queues are empty most of the time).
 * The first record inline, the rest (after a failed claim: a timed-out or cancelled waiter) out
 * of line. */
static __attribute__((noinline)) struct cwaiter *cq_take_more(struct cqueue *q, bool closed)
{
	struct cwaiter *w;
	while ((w = q->head)) {
		cq_pop_head(q, w);
		if (weft__wake_claim(w->fiber, w->tok, claim_result(w, closed)))
			return w;
	}
	return NULL;
}

static inline struct cwaiter *cq_take(struct cqueue *q, bool closed)
{
	struct cwaiter *w = q->head;
	if (!w)
		return NULL;
	cq_pop_head(q, w);
	if (weft__likely(weft__wake_claim(w->fiber, w->tok, claim_result(w, closed))))
		return w;
	return cq_take_more(q, closed);
}

/* ---- the operations, under the spin -------------------------------------------------------- */

/* memcpy, with the common sizes as moves the compiler inlines (a call to libc's memcpy is a
 * fifth of the instructions of a buffered send or receive) */
static inline void elem_copy(void *dst, const void *src, size_t size)
{
	if (size == 8)
		memcpy(dst, src, 8);
	else if (size == 4)
		memcpy(dst, src, 4);
	else if (size == 16)
		memcpy(dst, src, 16);
	else
		memcpy(dst, src, size);
}

static unsigned char *slot(weft_chan *ch, size_t i)
{
	return ch->ring + i * ch->elem_size;
}

static size_t ring_len(const weft_chan *ch)
{
	return atomic_load_explicit(&ch->len, memory_order_relaxed);
}

static void set_len(weft_chan *ch, size_t n)
{
	atomic_store_explicit(&ch->len, n, memory_order_relaxed);
}

static enum weft__ready_how wake_how(bool from_fiber, bool handoff)
{
	if (!from_fiber)
		return WEFT__READY_QUEUE;
	return handoff ? WEFT__READY_SWITCH : WEFT__READY_NEXT;
}

static inline __attribute__((always_inline)) int send_locked(weft_chan *ch, bool from_fiber,
                                                             const void *elem, struct finish *fin)
{
	if (ch->closed)
		return -EPIPE;
	struct cwaiter *w = cq_take(&ch->recvq, false);
	if (w) { /* invariant 2: the ring is empty; the value goes straight to the receiver */
		WEFT__ASSERT(ring_len(ch) == 0);
		*fin = (struct finish){.wake = w->fiber,
		                       .how = wake_how(from_fiber, ch->cap == 0),
		                       .dst = w->elem,
		                       .src = elem,
		                       .size = ch->elem_size};
		return 0;
	}
	size_t len = ring_len(ch);
	if (len < ch->cap) {
		size_t tail = ch->head + len;
		if (tail >= ch->cap)
			tail -= ch->cap;
		elem_copy(slot(ch, tail), elem, ch->elem_size);
		set_len(ch, len + 1);
		return 0;
	}
	return -EAGAIN;
}

static inline __attribute__((always_inline)) int recv_locked(weft_chan *ch, bool from_fiber,
                                                             void *elem, struct finish *fin)
{
	size_t len = ring_len(ch);
	if (len > 0) {
		elem_copy(elem, slot(ch, ch->head), ch->elem_size);
		size_t freed = ch->head; /* the oldest slot becomes the newest */
		ch->head = ch->head + 1 == ch->cap ? 0 : ch->head + 1;
		struct cwaiter *w = cq_take(&ch->sendq, false);
		if (w) { /* invariant 3: the ring was full, so the freed slot is the tail */
			WEFT__ASSERT(len == ch->cap);
			elem_copy(slot(ch, freed), w->elem, ch->elem_size);
			*fin = (struct finish){.wake = w->fiber,
			                       .how = wake_how(from_fiber, false)};
		} else {
			set_len(ch, len - 1);
		}
		return 0;
	}
	struct cwaiter *w = cq_take(&ch->sendq, false);
	if (w) { /* unbuffered: take the value from the sender's buffer */
		*fin = (struct finish){.wake = w->fiber,
		                       .how = wake_how(from_fiber, false),
		                       .dst = elem,
		                       .src = w->elem,
		                       .size = ch->elem_size};
		return 0;
	}
	return ch->closed ? -EPIPE : -EAGAIN;
}

/* After the spin is released. */
static inline __attribute__((always_inline)) void finish(const struct finish *fin)
{
	if (fin->dst)
		elem_copy(fin->dst, fin->src, fin->size);
	if (fin->wake)
		weft__wake_ready(fin->wake, fin->how);
}

static bool deadline_passed(int64_t deadline)
{
	return deadline != WEFT_FOREVER && deadline <= weft_now();
}

/* ---- create, destroy, close ----------------------------------------------------------------- */

int weft_chan_create(weft_chan **ret, size_t elem_size, size_t capacity)
{
	if (!ret || elem_size == 0 || elem_size > WEFT_CHAN_ELEM_MAX ||
	    capacity > WEFT_CHAN_CAPACITY_MAX)
		return -EINVAL;
	/* at most 2^16 * 2^30 bytes of ring: no overflow */
	weft_chan *ch = weft__malloc(sizeof(*ch) + elem_size * capacity);
	if (!ch)
		return -ENOMEM;
	memset(ch, 0, sizeof(*ch));
	ch->elem_size = elem_size;
	ch->cap = capacity;
	atomic_init(&ch->len, 0);
	*ret = ch;
	return 0;
}

void weft_chan_destroy(weft_chan *ch)
{
	if (!ch)
		return;
	weft__spin_lock(&ch->lock);
	/* a queued record's fiber would stay parked forever */
	WEFT__ASSERT(ch->sendq.n == 0 && ch->recvq.n == 0);
	weft__spin_unlock(&ch->lock);
	free(ch);
}

int weft_chan_close(weft_chan *ch)
{
	if (!ch)
		return -EINVAL;
	struct cwaiter *first = NULL, *last = NULL, *w;
	weft__spin_lock(&ch->lock);
	if (ch->closed) {
		weft__spin_unlock(&ch->lock);
		return -EPIPE;
	}
	ch->closed = true;
	/* receivers wait only on an empty ring (invariant 2): nothing is left for them to drain */
	struct cqueue *queues[2] = {&ch->recvq, &ch->sendq};
	for (int i = 0; i < 2; i++) {
		while ((w = cq_take(queues[i], true))) {
			if (last)
				last->next = w;
			else
				first = w;
			last = w;
		}
	}
	weft__spin_unlock(&ch->lock);
	while (first) { /* `next` before the wake: the record may vanish with it */
		w = first;
		first = w->next;
		weft__wake_ready(w->fiber, WEFT__READY_QUEUE);
	}
	return 0;
}

size_t weft_chan_len(const weft_chan *ch)
{
	return ch ? ring_len(ch) : 0;
}

size_t weft_chan_cap(const weft_chan *ch)
{
	return ch ? ch->cap : 0;
}

/* Test hook, declared again in tests/unit/test-chan.c (no header: nothing else may use it): the
 * records queued now, senders (op WEFT_SELECT_SEND) or receivers. */
size_t weft__chan_waiters(weft_chan *ch, int op);
size_t weft__chan_waiters(weft_chan *ch, int op)
{
	weft__spin_lock(&ch->lock);
	size_t n = op == WEFT_SELECT_SEND ? ch->sendq.n : ch->recvq.n;
	weft__spin_unlock(&ch->lock);
	return n;
}

/* ---- send and receive ----------------------------------------------------------------------- */

/* The wait of weft_chan_send (op WEFT_SELECT_SEND) or weft_chan_recv, after the fast path found
 * the channel not ready and released the spin. */
/* Called with the spin held, after the operation found it would wait; releases the spin. */
static int chan_wait(weft_chan *ch, weft__fiber *self, int op, void *elem, int64_t deadline)
{
	bool send = op == WEFT_SELECT_SEND;
	if (deadline_passed(deadline)) {
		weft__spin_unlock(&ch->lock);
		return -ETIMEDOUT;
	}
	/* weft__wait_begin neither switches nor locks: under the spin, nothing can change between
	 * the failed try and the record being queued */
	uint64_t tok = weft__wait_begin(self, send ? WEFT_WAIT_CHAN_SEND : WEFT_WAIT_CHAN_RECV, ch);
	if (tok == 0) {
		weft__spin_unlock(&ch->lock);
		return -ECANCELED;
	}
	struct cwaiter w = {.fiber = self, .tok = tok, .elem = elem, .index = -1};
	struct cqueue *q = send ? &ch->sendq : &ch->recvq;
	cq_push(q, &w);
	weft__spin_unlock(&ch->lock);

	int r = weft__wait_park(self, tok, deadline);
	WEFT__ASSERT(r <= 0);
	if (r != 0 && r != -EPIPE) { /* the timer, the cancel (or -ENOMEM: no timer) */
		weft__spin_lock(&ch->lock);
		if (w.linked)
			cq_unlink(q, &w);
		weft__spin_unlock(&ch->lock);
	}
	return r;
}

int weft_chan_send(weft_chan *ch, const void *elem, int64_t deadline)
{
	if (!ch || !elem || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct finish fin = {0};
	weft__spin_lock(&ch->lock);
	int r = send_locked(ch, true, elem, &fin);
	if (r != -EAGAIN) {
		weft__spin_unlock(&ch->lock);
		finish(&fin);
		return r;
	}
	return chan_wait(ch, self, WEFT_SELECT_SEND, (void *)elem, deadline);
}

int weft_chan_recv(weft_chan *ch, void *elem, int64_t deadline)
{
	if (!ch || !elem || deadline < WEFT_FOREVER)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	struct finish fin = {0};
	weft__spin_lock(&ch->lock);
	int r = recv_locked(ch, true, elem, &fin);
	if (r != -EAGAIN) {
		weft__spin_unlock(&ch->lock);
		finish(&fin);
		return r;
	}
	return chan_wait(ch, self, WEFT_SELECT_RECV, elem, deadline);
}

int weft_chan_try_send(weft_chan *ch, const void *elem)
{
	if (!ch || !elem)
		return -EINVAL;
	struct finish fin = {0};
	weft__spin_lock(&ch->lock);
	int r = send_locked(ch, weft__fiber_self() != NULL, elem, &fin);
	weft__spin_unlock(&ch->lock);
	finish(&fin);
	return r;
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
	if (!ch || !elem)
		return -EINVAL;
	struct finish fin = {0};
	weft__spin_lock(&ch->lock);
	int r = recv_locked(ch, weft__fiber_self() != NULL, elem, &fin);
	weft__spin_unlock(&ch->lock);
	finish(&fin);
	return r;
}

/* ---- select --------------------------------------------------------------------------------- */

static _Thread_local uint64_t rng_state;

/* xorshift64*, seeded per thread from the state's address and the clock. */
static uint64_t rng_next(void)
{
	uint64_t x = rng_state;
	if (weft__unlikely(x == 0)) {
		x = (uint64_t)(uintptr_t)&rng_state * 0x9E3779B97F4A7C15ull ^ (uint64_t)weft_now();
		x |= 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

struct sel {
	weft_select_case *cases;
	int order[WEFT_SELECT_MAX]; /* the cases with a channel, shuffled */
	int n;
	weft_chan *locks[WEFT_SELECT_MAX]; /* distinct channels, by increasing address */
	int nlocks;
};

static void lock_all(const struct sel *s)
{
	for (int i = 0; i < s->nlocks; i++)
		weft__spin_lock(&s->locks[i]->lock);
}

static void unlock_all(const struct sel *s)
{
	for (int i = s->nlocks; i-- > 0;)
		weft__spin_unlock(&s->locks[i]->lock);
}

/* Under every spin: do the first ready case in the shuffled order. Its index, with its result in
 * *ret_result, or -EAGAIN if none is ready. */
static int sel_try(const struct sel *s, struct finish *fin, int *ret_result)
{
	for (int k = 0; k < s->n; k++) {
		int i = s->order[k];
		weft_select_case *c = &s->cases[i];
		int r = c->op == WEFT_SELECT_SEND ? send_locked(c->chan, true, c->elem, fin)
		                                  : recv_locked(c->chan, true, c->elem, fin);
		if (r != -EAGAIN) {
			*ret_result = r;
			return i;
		}
	}
	return -EAGAIN;
}

int weft_chan_select(weft_select_case *cases, int n, int64_t deadline, int *ret_result)
{
	if (!cases || n <= 0 || n > WEFT_SELECT_MAX || deadline < WEFT_FOREVER)
		return -EINVAL;
	struct sel s = {.cases = cases};
	for (int i = 0; i < n; i++) {
		if (!cases[i].chan)
			continue;
		if ((cases[i].op != WEFT_SELECT_SEND && cases[i].op != WEFT_SELECT_RECV) ||
		    !cases[i].elem)
			return -EINVAL;
		s.order[s.n++] = i;
	}
	if (s.n == 0)
		return -EINVAL;
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;

	for (int k = s.n - 1; k > 0; k--) { /* Fisher-Yates; the modulo's bias is below 2^-57 */
		int j = (int)(rng_next() % (uint64_t)(k + 1));
		int t = s.order[k];
		s.order[k] = s.order[j];
		s.order[j] = t;
	}
	for (int k = 0; k < s.n; k++) { /* insertion sort by address, dropping duplicates */
		weft_chan *ch = cases[s.order[k]].chan;
		int j = s.nlocks;
		while (j > 0 && (uintptr_t)s.locks[j - 1] > (uintptr_t)ch)
			j--;
		if (j > 0 && s.locks[j - 1] == ch)
			continue;
		memmove(&s.locks[j + 1], &s.locks[j], (size_t)(s.nlocks - j) * sizeof(s.locks[0]));
		s.locks[j] = ch;
		s.nlocks++;
	}

	struct finish fin = {0};
	int result = 0;
	lock_all(&s);
	int idx = sel_try(&s, &fin, &result);
	if (idx >= 0) {
		unlock_all(&s);
		goto done;
	}
	if (deadline_passed(deadline)) { /* deadline 0: one poll */
		unlock_all(&s);
		return -ETIMEDOUT;
	}
	uint64_t tok = weft__wait_begin(self, WEFT_WAIT_SELECT, cases); /* no switch, no lock */
	if (tok == 0) {
		unlock_all(&s);
		return -ECANCELED;
	}
	struct cwaiter w[WEFT_SELECT_MAX];
	for (int k = 0; k < s.n; k++) {
		weft_select_case *c = &cases[s.order[k]];
		w[k] = (struct cwaiter){
		        .fiber = self, .tok = tok, .elem = c->elem, .index = s.order[k]};
		cq_push(c->op == WEFT_SELECT_SEND ? &c->chan->sendq : &c->chan->recvq, &w[k]);
	}
	unlock_all(&s);

	int r = weft__wait_park(self, tok, deadline);
	lock_all(&s);
	for (int k = 0; k < s.n; k++) {
		weft_select_case *c = &cases[s.order[k]];
		if (w[k].linked)
			cq_unlink(c->op == WEFT_SELECT_SEND ? &c->chan->sendq : &c->chan->recvq,
			          &w[k]);
	}
	unlock_all(&s);
	if (r < 0)
		return r; /* -ETIMEDOUT, -ECANCELED (or -ENOMEM: the timer could not be armed) */
	idx = r & SEL_INDEX;
	WEFT__ASSERT(idx < n && cases[idx].chan && (r & ~(SEL_INDEX | SEL_CLOSED)) == 0);
	if (ret_result)
		*ret_result = r & SEL_CLOSED ? -EPIPE : 0;
	return idx;
done:
	finish(&fin);
	if (ret_result)
		*ret_result = result;
	return idx;
}
