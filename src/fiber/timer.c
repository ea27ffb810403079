/* Fiber timers: one 4-ary min-heap of fibers per worker, keyed by deadline.
 *
 * A fiber that parks with a deadline puts itself in the heap of the worker it parks on
 * (weft__timer_add); any worker runs the due timers of any heap (weft__timers_run: the scheduling
 * loop does it for every heap, each worker every 61 schedule calls). A 4-ary heap is shallower
 * than a binary one (log4 n levels) and its four children share a cache line or two: adding and
 * removing among 100,000 timers takes about 9 levels.
 *
 * Locking: each heap has a spin lock; a fiber's timer fields (timer_heap, timer_index,
 * timer_deadline, timer_tok) are guarded by the lock of the heap it is in. The due timers are
 * claimed (weft__wake_claim with -ETIMEDOUT) under the heap's lock: a fiber whose claim wins cannot
 * run, exit and be freed until it is readied, which happens after the unlock; a fiber whose claim
 * loses was woken by someone else and removes itself (weft__timer_del) under the same lock, so
 * the heap never holds a freed fiber. `next` mirrors the root's deadline for lock-free peeks.
 */
#include <errno.h>
#include <stdlib.h>

#include "fiber-impl.h"
#include "internal/alloc.h"

#define ARITY 4

static void set_at(timer_heap *h, int i, weft__fiber *f)
{
	h->v[i] = f;
	f->timer_index = i;
}

static void sift_up(timer_heap *h, int i)
{
	weft__fiber *f = h->v[i];
	while (i > 0) {
		int p = (i - 1) / ARITY;
		if (h->v[p]->timer_deadline <= f->timer_deadline)
			break;
		set_at(h, i, h->v[p]);
		i = p;
	}
	set_at(h, i, f);
}

static void sift_down(timer_heap *h, int i)
{
	weft__fiber *f = h->v[i];
	for (;;) {
		int c = i * ARITY + 1;
		if (c >= h->n)
			break;
		int best = c;
		for (int k = c + 1; k < c + ARITY && k < h->n; k++)
			if (h->v[k]->timer_deadline < h->v[best]->timer_deadline)
				best = k;
		if (h->v[best]->timer_deadline >= f->timer_deadline)
			break;
		set_at(h, i, h->v[best]);
		i = best;
	}
	set_at(h, i, f);
}

static void publish_next(timer_heap *h)
{
	atomic_store_explicit(&h->next, h->n ? h->v[0]->timer_deadline : INT64_MAX,
	                      memory_order_relaxed);
}

static void remove_at(timer_heap *h, int i)
{
	weft__fiber *f = h->v[i];
	f->timer_index = -1;
	atomic_store_explicit(&f->timer_heap, NULL, memory_order_release);
	h->n--;
	if (i < h->n) {
		set_at(h, i, h->v[h->n]);
		sift_up(h, i);
		sift_down(h, i); /* at i now: the moved fiber, or an ancestor that orders fine */
	}
	publish_next(h);
}

int weft__timer_add(timer_heap *h, weft__fiber *f, int64_t deadline, uint64_t tok)
{
	weft__spin_lock(&h->lock);
	if (h->n == h->cap) {
		int cap = h->cap ? h->cap * 2 : 64;
		weft__fiber **v = weft__realloc(h->v, (size_t)cap * sizeof(*v));
		if (!v) {
			weft__spin_unlock(&h->lock);
			/* no room: claim the timeout at once rather than park forever */
			if (weft__wake_claim(f, tok, -ENOMEM))
				weft__ready(f->sched, f, WEFT__READY_QUEUE);
			return -ENOMEM;
		}
		h->v = v;
		h->cap = cap;
	}
	f->timer_deadline = deadline;
	f->timer_tok = tok;
	atomic_store_explicit(&f->timer_heap, h, memory_order_relaxed);
	h->v[h->n] = f;
	f->timer_index = h->n++;
	sift_up(h, f->timer_index);
	publish_next(h);
	weft__spin_unlock(&h->lock);
	return 0;
}

void weft__timer_del(weft__fiber *f)
{
	/* f->timer_heap only changes under the heap's lock, and only f itself (running now) puts
	 * it in a heap: read it, lock, and check it is still there */
	timer_heap *h = atomic_load_explicit(&f->timer_heap, memory_order_acquire);
	if (!h)
		return; /* removed, and whoever removed it is done with f (see weft__timers_run) */
	weft__spin_lock(&h->lock);
	if (atomic_load_explicit(&f->timer_heap, memory_order_relaxed) == h && f->timer_index >= 0)
		remove_at(h, f->timer_index);
	weft__spin_unlock(&h->lock);
}

int weft__timers_run(weft_sched *s, timer_heap *h, int64_t now)
{
	weft__fiber *woken[64];
	int n = 0;
	weft__spin_lock(&h->lock);
	while (h->n && h->v[0]->timer_deadline <= now && n < (int)WEFT__ARRAY_SIZE(woken)) {
		weft__fiber *f = h->v[0];
		/* claim, then remove: the removal's release store of timer_heap = NULL is what lets
		 * a fiber woken by someone else skip the lock in weft__timer_del, so it must come
		 * after our last touch of the fiber */
		if (weft__wake_claim(f, f->timer_tok, -ETIMEDOUT))
			woken[n++] = f;
		remove_at(h, 0);
	}
	weft__spin_unlock(&h->lock);
	for (int i = 0; i < n; i++)
		weft__ready(s, woken[i], WEFT__READY_QUEUE);
	return n;
}

void weft__timer_heap_free(timer_heap *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}
