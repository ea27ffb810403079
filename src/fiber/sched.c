/* The M:N fiber scheduler: worker threads, run queues, switching, the wait protocol, spawning.
 *
 * Workers. One thread per CPU of the budget by default. Each runs a scheduling loop on its own
 * thread stack (the "loop context") and switches into fibers from there. A fiber that parks,
 * yields or ends switches directly to the next runnable fiber of its worker when there is one
 * (one switch, not two through the loop); only when its worker has nothing local does it switch to
 * the loop, which steals, runs timers and parks the thread.
 *
 * Run queues, per worker (the design of Go's runtime, written anew):
 *   runnext   one slot the owner fills with a fiber that should run next (a new spawn, a fiber
 *             woken by a channel hand-off); stealers take it only in their last round
 *   ring      1024 slots (Go's has 256: a burst of a thousand spawns stays local); the owner
 *             pushes at tail (release), the owner and stealers take from head by CAS. A stealer
 *             copies half of [head, tail) and then CASes head: if the CAS wins, no slot it copied
 *             can have been reused (the owner only writes past tail, which stays below head +
 *             1024). A full ring moves half of itself to the injection queue.
 *   inbox     pinned fibers made runnable by anyone: only the owner takes them (never stolen)
 * and one injection queue per scheduler (spawns and wakes from plain threads, ring overflow),
 * under a spin lock, checked first every 61 schedule calls so it cannot starve; it holds fiber
 * pointers in chunks (inject_push), and a worker takes its share into its ring. A scheduler of
 * one worker (`solo`) has no stealers: its owner takes runnext and head with plain loads and
 * stores instead of CAS/exchange (runnext_swap), and readying from that worker wakes nobody (the
 * only worker is the caller). The owner prefetches the block of the next fiber in its ring as it
 * takes one (weft__prefetch_block), so a queue of cold fibers does not run at cache-miss speed.
 *
 * Switching. A context is a saved stack pointer (src/internal/switch.h). A fiber's `on_cpu` is 1
 * from the moment a worker decides to switch into it until the context that runs next has
 * completed the switch away from it (finish_switch, release). Whoever switches into a fiber first
 * waits for its on_cpu to be 0 (acquire). This is what lets a waker make a fiber runnable while it
 * is still on its way out (it has published its wait but not yet saved its registers): the
 * fiber is queued at once, and the worker that picks it up waits the few nanoseconds until its
 * context is saved. (Linux's try_to_wake_up waits on p->on_cpu the same way.) Only a worker's
 * loop waits: a fiber that finds its successor still on_cpu hands it to its loop (direct_target),
 * because two workers switching fiber-to-fiber could each wait for the other's fiber. Work that
 * must happen only after a fiber is off its stack is done by finish_switch on the next context:
 * releasing on_cpu, re-queueing a yielder, freeing a finished fiber's stack.
 *
 * The wait protocol (src/internal/fiber.h): the wait word is (seq << 2) | st with st NONE,
 * WAITING, CLAIMED. wait_begin moves NONE -> WAITING with seq+1, claims CAS WAITING -> CLAIMED
 * with the same seq, so a claim made for an old wait fails. Cancellation is a Dekker pair:
 *   fiber:     F1. store wait word WAITING           F2. load cancelled (seq_cst)
 *   canceller: C1. store cancelled = 1 (seq_cst)     C2. barrier (below)
 *              C3. load wait word (seq_cst), claim if WAITING
 * Either the fiber sees it is cancelled (it abandons the wait, or absorbs the canceller's claim)
 * or the canceller sees it waiting and claims; never neither. The barrier is asymmetric: waits
 * are many and cancels rare, so the fiber side pays nothing (F1 is a release store: a plain
 * store on x86, where the seq_cst store was an xchg, 6 ns of a 60 ns channel hand-off) and the
 * canceller pays a membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (C2, once per weft_scope_cancel
 * for all its fibers: scope.c marks them all, calls weft__cancel_barrier, then claims). The
 * system call returns only after every thread of the process that runs on a CPU has executed a
 * full memory barrier (an IPI) and every other one will pass a context switch (a barrier)
 * before it runs again. Call B that barrier on the fiber's thread. If B is after F2 in the
 * fiber's program order, F1 is visible to all before the call returns, so C3 sees WAITING (or a
 * later state of that wait: claimed by someone else, or over). If B is before F2, C1 (ordered
 * before the call by the canceller's own entry into the kernel) is visible before B, so F2 sees
 * cancelled. The compiler keeps F1 before F2 (a signal fence after F1). C11 has no word for this
 * pairing (it is the asymmetric fence of liburcu and folly); a process where the registration
 * fails (an old kernel, a seccomp filter) keeps the symmetric pair: F1 a seq_cst store, C2
 * nothing, and one of the two seq_cst loads sees the other's store in their single total order.
 *
 * Parking idle workers without missed wake-ups (numbered steps; all seq_cst):
 *   making work runnable:  P1. push the fiber (release)   P2. fence
 *                          P3. if nspinning == 0 and nidle > 0: wake_one
 *   a worker going idle:   I1. put itself on the idle list, nidle++   I2. stop spinning
 *                          (nspinning--)   I3. fence   I4. look at every queue and timer again;
 *                          work there: take itself off the idle list and go back to work
 *                          I5. futex-wait on its own word until a waker sets it to 1 or the
 *                          earliest timer of the scheduler is due
 * If P3 reads nidle == 0 or nspinning > 0 from before I1/I2, then I4 comes after P1 in the total
 * order and sees the fiber. wake_one claims the single "spinning" token (CAS nspinning 0 -> 1),
 * pops an idle worker and sets its word to 1 before the futex wake, so a wake is never lost
 * between I4 and I5 (the futex compares the word). The woken worker starts as the spinner; a
 * spinner that finds work stops spinning and, if it was the last one, wakes another idle worker
 * while work may remain (the cascade ends when a spinner finds nothing and parks).
 *
 * Timers: one heap per worker (timer.c); a worker runs due timers of every heap in its loop and
 * every 61 schedule calls; an idle worker sleeps until the earliest deadline of all heaps. A timer
 * can be late while every worker runs fibers that never yield (the IO monitor reports those).
 *
 * Thread-locals across a switch: a fiber may resume on another thread. Code here reads the
 * worker from what the switch returns, never from a thread-local read before the switch (the
 * compiler may keep the thread pointer in a register across a call); tls_worker() is noipa so
 * each call reads afresh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fiber-impl.h"
#include "internal/alloc.h"
#include "internal/pool.h" /* weft__futex_wait, weft__futex_wake */
#include "internal/switch.h"

#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#ifndef WEFT__ASAN
#define WEFT__ASAN 0
#endif
#if WEFT__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif

_Thread_local worker *weft__tls_worker __attribute__((tls_model("initial-exec")));
_Thread_local weft__fiber *weft__tls_fiber __attribute__((tls_model("initial-exec")));

static _Atomic uint64_t next_fiber_id;
/* The cancellation pair's barrier is membarrier's (head comment): set once, by process_init
 * (before any scheduler's thread exists), and inherited by a child after fork (the registration
 * belongs to the address space, which fork copies). */
static bool asym_cancel;
static _Atomic uint64_t fork_gen;
static uint64_t canary_secret;

__attribute__((noipa)) static worker *tls_worker(void)
{
	return weft__tls_worker;
}

void weft__fatal(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	ssize_t wr = write(2, buf, (size_t)n);
	(void)wr;
	abort();
}

uint64_t weft__fork_gen(void)
{
	return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

static inline void fence_seq_cst(weft_sched *s)
{
#if WEFT__TSAN
	/* TSan has no model of fences; a seq_cst RMW gives the same order for it */
	atomic_fetch_add_explicit(&s->nidle, 0, memory_order_seq_cst);
#else
	(void)s;
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* ---- sanitizers: every switch is announced to ASan and TSan ---------------------------------- */

static inline void san_begin(worker *w, weft__fiber *from, weft__fiber *to, bool from_dead)
{
#if WEFT__ASAN
	void **save = from_dead ? NULL : from ? &from->asan_fake_stack : &w->loop_asan_fake_stack;
	const void *bottom = to ? (const void *)to->stack.lo : w->loop_stack_lo;
	size_t size = to ? (size_t)(to->stack.hi - to->stack.lo) : w->loop_stack_size;
	__sanitizer_start_switch_fiber(save, bottom, size);
#endif
#if WEFT__TSAN
	__tsan_switch_to_fiber(to ? to->tsan_fiber : w->loop_tsan_fiber, 0);
#endif
	(void)w;
	(void)from;
	(void)to;
	(void)from_dead;
}

static inline void san_end(worker *w, weft__fiber *self)
{
#if WEFT__ASAN
	__sanitizer_finish_switch_fiber(self ? self->asan_fake_stack : w->loop_asan_fake_stack,
	                                NULL, NULL);
#endif
	(void)w;
	(void)self;
}

/* ---- run queues ------------------------------------------------------------------------------ */

/* The injection queue holds fiber pointers in chunks, in order, so that taking a batch of them
 * reads the chunk and none of the fibers: linked through the fibers themselves, a batch taken
 * was a chain of dependent loads, each a fiber's block that last ran a whole queue ago (cold
 * in the caches and the TLB): with 10,000 runnable on one worker, walking them twice (under
 * the lock for the batch's end, then to queue them) was two thirds of a spawn's time. A chunk
 * is allocated outside the lock, and a pusher that gets no memory links the rest through the
 * fibers' `next` (the list): nothing is lost, and the two are taken in turn. */
#define INJECT_CHUNK 510 /* 4 KiB with the header */
/* A fiber's stack below this much room calls neither malloc nor free here (the allocator's and the
 * sanitizers' interceptors' frames): a pusher links the fibers instead, a taker keeps the chunk
 * (and trim_if_due leaves the spare stacks' trim to another). */
#define INJECT_ALLOC_STACK 16384
#define INJECT_FREE_MAX 4

struct weft__inject_chunk {
	struct weft__inject_chunk *next;
	uint32_t head, tail; /* f[head..tail) wait */
	weft__fiber *f[INJECT_CHUNK];
};

/* Room for malloc and free on this stack: a plain thread's or the worker loop's, or a fiber's with
 * INJECT_ALLOC_STACK left below this frame. */
static bool stack_roomy(void)
{
	const weft__fiber *f = weft__tls_fiber;
	const char *sp = __builtin_frame_address(0);
	return !f || (sp > f->stack.lo && (size_t)(sp - f->stack.lo) >= INJECT_ALLOC_STACK);
}

/* inject_push's i-th fiber: slot h + i of w's ring below n, then `last`. */
static inline weft__fiber *push_item(const worker *w, uint32_t h, uint32_t n, weft__fiber *last,
                                     uint32_t i)
{
	return i < n ? atomic_load_explicit(&w->ring[(h + i) % RUNQ_SIZE], memory_order_relaxed)
	             : last;
}

/* Append n fibers of w's ring from slot h on (runq_overflow, after its CAS took them: the owner
 * may read them) and then `last` if not NULL. */
static void inject_push(weft_sched *s, const worker *w, uint32_t h, uint32_t n, weft__fiber *last)
{
	uint32_t total = n + (last != NULL), done = 0;
	long counted = 0;
	struct weft__inject_chunk *fresh = NULL;
	weft__spin_lock(&s->inject_lock);
	while (done < total) {
		struct weft__inject_chunk *c = s->inject_last;
		if (!c || c->tail == INJECT_CHUNK) {
			if ((c = s->inject_free)) {
				s->inject_free = c->next;
				s->inject_nfree--;
			} else if (fresh) {
				c = fresh;
				fresh = NULL;
			} else if (!stack_roomy()) {
				break; /* the rest to the list */
			} else {
				/* count what is in, so no taker sees more than inject_n says */
				atomic_fetch_add_explicit(&s->inject_n, done - counted,
				                          memory_order_relaxed);
				counted = done;
				weft__spin_unlock(&s->inject_lock);
				fresh = weft__malloc(sizeof(*fresh));
				weft__spin_lock(&s->inject_lock);
				if (!fresh)
					break;
				continue;
			}
			c->next = NULL;
			c->head = c->tail = 0;
			if (s->inject_last)
				s->inject_last->next = c;
			else
				s->inject_first = c;
			s->inject_last = c;
		}
		for (; done < total && c->tail < INJECT_CHUNK; done++)
			c->f[c->tail++] = push_item(w, h, n, last, done);
	}
	for (; done < total; done++) { /* no chunk to be had */
		weft__fiber *f = push_item(w, h, n, last, done);
		f->next = NULL;
		if (s->inject_tail)
			s->inject_tail->next = f;
		else
			s->inject_head = f;
		s->inject_tail = f;
	}
	atomic_fetch_add_explicit(&s->inject_n, done - counted, memory_order_relaxed);
	weft__spin_unlock(&s->inject_lock);
	free(fresh); /* another pusher's chunk came free meanwhile */
}

/* runq_put's full ring: half of it (from head, racing stealers) and f to the injection queue.
 * False if a stealer moved head meanwhile (the caller looks again). The owner may read the slots
 * after its CAS, unlike a stealer: only the owner writes slots, and it writes none here. */
static __attribute__((noinline, cold)) bool runq_overflow(worker *w, weft__fiber *f, uint32_t h)
{
	uint32_t n = RUNQ_SIZE / 2;
	if (!atomic_compare_exchange_strong_explicit(&w->head, &h, h + n, memory_order_acq_rel,
	                                             memory_order_relaxed))
		return false;
	inject_push(w->s, w, h, n, f);
	return true;
}

/* Owner only: push f at the tail; a full ring moves half of itself and f to the injection queue. */
static inline void runq_put(worker *w, weft__fiber *f)
{
	for (;;) {
		uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
		uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
		if (weft__likely(t - h < RUNQ_SIZE)) {
			atomic_store_explicit(&w->ring[t % RUNQ_SIZE], f, memory_order_relaxed);
			atomic_store_explicit(&w->tail, t + 1, memory_order_release);
			return;
		}
		if (runq_overflow(w, f, h))
			return;
	}
}

/* The fiber after the one taken from the ring runs soon: weft__prefetch_block. A stealer may take
 * it meanwhile: the prefetch is then wasted, nothing else (the slot is only read). */
static inline void prefetch_next(const worker *w, uint32_t h, uint32_t t)
{
	if (h == t)
		return;
	const char *p =
	        (const char *)atomic_load_explicit(&w->ring[h % RUNQ_SIZE], memory_order_relaxed);
	weft__prefetch_block((const weft__fiber *)(const void *)p);
	/* and the frames a short fiber's run goes down to (fiber_entry, its function, the
	 * exit's scope detach and switch) */
	for (int i = 3; i <= 6; i++)
		weft__prefetch_w(p - 64 * i);
}

static weft__fiber *runq_get(worker *w)
{
	for (;;) {
		uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
		uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
		if (h == t)
			return NULL;
		weft__fiber *f =
		        atomic_load_explicit(&w->ring[h % RUNQ_SIZE], memory_order_relaxed);
		if (w->solo) { /* no stealer: the owner alone moves head (see runnext_swap) */
			atomic_store_explicit(&w->head, h + 1, memory_order_relaxed);
			prefetch_next(w, h + 1, t);
			return f;
		}
		if (atomic_compare_exchange_strong_explicit(
		            &w->head, &h, h + 1, memory_order_release, memory_order_relaxed)) {
			prefetch_next(w, h + 1, t);
			return f;
		}
	}
}

/* dst (empty ring, its own thread) takes half of src's ring; returns one fiber to run. */
static weft__fiber *runq_steal(worker *dst, worker *src, bool take_next)
{
	for (;;) {
		uint32_t h = atomic_load_explicit(&src->head, memory_order_acquire);
		uint32_t t = atomic_load_explicit(&src->tail, memory_order_acquire);
		uint32_t n = t - h;
		n -= n / 2;
		if (n == 0) {
			if (!take_next)
				return NULL;
			weft__fiber *f = atomic_load_explicit(&src->runnext, memory_order_acquire);
			if (f && atomic_compare_exchange_strong_explicit(&src->runnext, &f, NULL,
			                                                 memory_order_acq_rel,
			                                                 memory_order_relaxed))
				return f;
			return NULL;
		}
		if (n > RUNQ_SIZE / 2)
			continue; /* h and t read at different times; retry */
		weft__fiber *batch[RUNQ_SIZE / 2];
		for (uint32_t i = 0; i < n; i++)
			batch[i] = atomic_load_explicit(&src->ring[(h + i) % RUNQ_SIZE],
			                                memory_order_relaxed);
		if (!atomic_compare_exchange_strong_explicit(
		            &src->head, &h, h + n, memory_order_acq_rel, memory_order_relaxed))
			continue;
		for (uint32_t i = 1; i < n; i++)
			runq_put(dst, batch[i]);
		return batch[0];
	}
}

/* The owner's exchange of its runnext slot. A scheduler of one worker has no stealers: the slot
 * is then touched only by its own thread (and read, relaxed, by the stats), so a relaxed load and
 * store do (no locked instruction: two per channel hand-off). With stealers, the exchange is what
 * decides, against a stealer's CAS, who gets the old fiber (acq_rel). */
static inline weft__fiber *runnext_swap(worker *w, weft__fiber *f)
{
	if (w->solo) {
		weft__fiber *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
		atomic_store_explicit(&w->runnext, f, memory_order_relaxed);
		return old;
	}
	return atomic_exchange_explicit(&w->runnext, f, memory_order_acq_rel);
}

static bool runq_empty(worker *w)
{
	return atomic_load_explicit(&w->head, memory_order_acquire) ==
	               atomic_load_explicit(&w->tail, memory_order_acquire) &&
	       !atomic_load_explicit(&w->runnext, memory_order_acquire);
}

static void inject_chunks_free(struct weft__inject_chunk *c)
{
	while (c) {
		struct weft__inject_chunk *next = c->next;
		free(c);
		c = next;
	}
}

/* Under inject_lock: the next fiber from the chunks, or NULL; an emptied chunk goes to the free
 * ones, or onto *gone past INJECT_FREE_MAX (freed after the unlock). */
static weft__fiber *inject_chunk_pop(weft_sched *s, struct weft__inject_chunk **gone)
{
	struct weft__inject_chunk *c = s->inject_first;
	if (!c || c->head == c->tail)
		return NULL;
	weft__fiber *f = c->f[c->head++];
	if (c->head == c->tail && (c->tail == INJECT_CHUNK || c->next)) {
		s->inject_first = c->next;
		if (!s->inject_first)
			s->inject_last = NULL;
		if (s->inject_nfree < INJECT_FREE_MAX || !stack_roomy()) {
			c->next = s->inject_free;
			s->inject_free = c;
			s->inject_nfree++;
		} else {
			c->next = *gone;
			*gone = c;
		}
	}
	return f;
}

/* Under inject_lock: the next fiber from the list, or NULL. */
static weft__fiber *inject_list_pop(weft_sched *s)
{
	weft__fiber *f = s->inject_head;
	if (f) {
		s->inject_head = f->next;
		if (!s->inject_head)
			s->inject_tail = NULL;
	}
	return f;
}

/* Owner: a fiber from the injection queue to run, and up to as many more as its share into w's
 * ring (never more than the ring has room for: no overflow back into the queue). */
static weft__fiber *inject_get(weft_sched *s, worker *w)
{
	if (!atomic_load_explicit(&s->inject_n, memory_order_relaxed))
		return NULL;
	struct weft__inject_chunk *gone = NULL;
	uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
	uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
	long room = RUNQ_SIZE - (long)(t - h); /* stealers only make more */
	weft__spin_lock(&s->inject_lock);
	long n = atomic_load_explicit(&s->inject_n, memory_order_relaxed);
	long take = n / s->nworkers + 1;
	if (take > RUNQ_SIZE / 2)
		take = RUNQ_SIZE / 2;
	if (take > room + 1)
		take = room + 1;
	if (take > n)
		take = n;
	weft__fiber *first = NULL;
	long got = 0;
	for (; got < take; got++) {
		/* both hold some only after an allocation failed: in turn then, so neither waits
		 * for the other to empty */
		bool list = s->inject_head && (s->inject_turn = !s->inject_turn);
		weft__fiber *f = list ? inject_list_pop(s) : inject_chunk_pop(s, &gone);
		if (!f)
			f = list ? inject_chunk_pop(s, &gone) : inject_list_pop(s);
		if (!f)
			break;
		if (!first)
			first = f;
		else
			atomic_store_explicit(&w->ring[t++ % RUNQ_SIZE], f, memory_order_relaxed);
	}
	atomic_fetch_sub_explicit(&s->inject_n, got, memory_order_relaxed);
	weft__spin_unlock(&s->inject_lock);
	atomic_store_explicit(&w->tail, t, memory_order_release);
	if (first && got > 1)
		prefetch_next(w, t - (uint32_t)(got - 1), t);
	inject_chunks_free(gone);
	return first;
}

/* The injection queue's chunks, at the scheduler's end (its fibers are all gone). */
static void inject_free_all(weft_sched *s)
{
	inject_chunks_free(s->inject_first);
	inject_chunks_free(s->inject_free);
	s->inject_first = s->inject_last = s->inject_free = NULL;
	s->inject_nfree = 0;
}

static weft__fiber *inbox_get(worker *w)
{
	if (!atomic_load_explicit(&w->inbox_n, memory_order_acquire))
		return NULL;
	weft__spin_lock(&w->inbox_lock);
	weft__fiber *f = w->inbox_head;
	if (f) {
		w->inbox_head = f->next;
		if (!w->inbox_head)
			w->inbox_tail = NULL;
		atomic_fetch_sub_explicit(&w->inbox_n, 1, memory_order_relaxed);
	}
	weft__spin_unlock(&w->inbox_lock);
	return f;
}

/* ---- parking and waking workers -------------------------------------------------------------- */

static void idle_push(weft_sched *s, worker *w)
{
	weft__spin_lock(&s->idle_lock);
	w->idle_next = s->idle_head;
	s->idle_head = w;
	atomic_store_explicit(&w->idle, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->nidle, 1, memory_order_seq_cst);
	weft__spin_unlock(&s->idle_lock);
}

/* Take w off the idle list; false if a waker took it first (its wake is then on the way). */
static bool idle_remove(weft_sched *s, worker *w)
{
	bool found = false;
	weft__spin_lock(&s->idle_lock);
	if (atomic_load_explicit(&w->idle, memory_order_relaxed)) {
		for (worker **pp = &s->idle_head; *pp; pp = &(*pp)->idle_next) {
			if (*pp == w) {
				*pp = w->idle_next;
				break;
			}
		}
		atomic_store_explicit(&w->idle, 0, memory_order_relaxed);
		atomic_fetch_sub_explicit(&s->nidle, 1, memory_order_seq_cst);
		found = true;
	}
	weft__spin_unlock(&s->idle_lock);
	return found;
}

static void unpark(worker *w)
{
	atomic_store_explicit(&w->futex, 1, memory_order_release);
	weft__futex_wake(&w->futex, 1);
}

static void wake_one(weft_sched *s)
{
	int z = 0;
	if (!atomic_compare_exchange_strong_explicit(&s->nspinning, &z, 1, memory_order_seq_cst,
	                                             memory_order_relaxed))
		return; /* a spinner exists: it will find the work */
	weft__spin_lock(&s->idle_lock);
	worker *w = s->idle_head;
	if (w) {
		s->idle_head = w->idle_next;
		atomic_store_explicit(&w->idle, 0, memory_order_relaxed);
		atomic_fetch_sub_explicit(&s->nidle, 1, memory_order_seq_cst);
	}
	weft__spin_unlock(&s->idle_lock);
	if (!w) {
		atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
		return;
	}
	unpark(w); /* it wakes as the spinner */
}

/* P2-P3 of the protocol in the head comment. */
static inline void wake_if_needed(weft_sched *s)
{
	fence_seq_cst(s);
	if (atomic_load_explicit(&s->nspinning, memory_order_seq_cst) == 0 &&
	    atomic_load_explicit(&s->nidle, memory_order_seq_cst) > 0)
		wake_one(s);
}

/* Wake a particular worker (the home of a pinned fiber) if it is parked. */
static void wake_worker(weft_sched *s, worker *w)
{
	fence_seq_cst(s);
	if (!atomic_load_explicit(&w->idle, memory_order_seq_cst))
		return;
	if (idle_remove(s, w)) {
		atomic_fetch_add_explicit(&s->nspinning, 1, memory_order_seq_cst);
		unpark(w);
	}
}

static void stop_spinning(weft_sched *s, worker *w)
{
	w->spinning = false;
	if (atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst) == 1)
		wake_if_needed(s);
}

/* ---- readying -------------------------------------------------------------------------------- */

/* A pinned fiber that has run (to its home's inbox), or a readying from a plain thread (to the
 * injection queue). */
static __attribute__((noinline)) void ready_slow(weft_sched *s, worker *w, weft__fiber *f)
{
	if (f->pinned && f->home) {
		worker *h = f->home;
		f->next = NULL;
		weft__spin_lock(&h->inbox_lock);
		if (h->inbox_tail)
			h->inbox_tail->next = f;
		else
			h->inbox_head = f;
		h->inbox_tail = f;
		atomic_fetch_add_explicit(&h->inbox_n, 1, memory_order_release);
		weft__spin_unlock(&h->inbox_lock);
		if (h != w)
			wake_worker(s, h);
		return;
	}
	inject_push(s, NULL, 0, 0, f);
	wake_if_needed(s);
}

static inline void ready_on(weft_sched *s, worker *w, weft__fiber *f, enum weft__ready_how how)
{
	atomic_store_explicit(&f->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
	if (weft__unlikely((f->pinned && f->home) || !w)) {
		ready_slow(s, w, f);
		return;
	}
	if (how != WEFT__READY_QUEUE) {
		weft__fiber *old = runnext_swap(w, f);
		if (!old)
			return; /* runs next here; nothing new for others to take */
		f = old;
	}
	runq_put(w, f);
	if (!w->solo) /* alone, w is the caller: awake */
		wake_if_needed(s);
}

void weft__ready(weft_sched *s, weft__fiber *f, enum weft__ready_how how)
{
	worker *w = tls_worker();
	if (w && w->s != s)
		w = NULL;
	ready_on(s, w, f, how);
}

/* ---- switching ------------------------------------------------------------------------------- */

static void fiber_release(worker *w, weft__fiber *f);

/* finish_switch's rarer cases: a dead fiber's stack to free, a yielder to put back in a queue. */
static __attribute__((noinline)) void finish_slow(worker *w, weft__fiber *p)
{
	if (w->prev_dead) {
		fiber_release(w, p);
		return;
	}
	p->requeue = false;
	atomic_store_explicit(&p->on_cpu, 0, memory_order_release);
	/* a yield: it swapped places with the fiber now running, so there is no more work than
	 * before for an idle worker to wake for (no wake_if_needed, no fence) */
	atomic_store_explicit(&p->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
	if (p->pinned && p->home)
		ready_slow(w->s, w, p);
	else
		runq_put(w, p);
}

/* Complete the switch away from w->prev (see the head comment). */
static inline void finish_switch(worker *w)
{
	weft__fiber *p = w->prev;
	if (!p)
		return;
	w->prev = NULL;
	if (weft__unlikely(w->prev_dead || p->requeue))
		finish_slow(w, p);
	else
		atomic_store_explicit(&p->on_cpu, 0, memory_order_release);
}

__attribute__((noinline, cold)) static void stack_bad(weft__fiber *f, const char *sp)
{
	if (sp < f->stack.lo)
		weft__stack_overflow_report(f, "its stack pointer is below the stack");
	weft__stack_overflow_report(f, "the canary at the bottom of its stack was overwritten");
}

/* At every switch away from f: the stack pointer inside the stack, the canary intact (canary
 * stacks), and the high-water mark. */
static inline void check_stack(worker *w, weft__fiber *f, const char *sp)
{
	if (weft__unlikely(sp < f->stack.lo) ||
	    (!f->stack.guarded && weft__unlikely(!weft__canary_ok(f))))
		stack_bad(f, sp);
	uint64_t depth = (uint64_t)(f->stack.hi - sp);
	if (weft__unlikely(depth > w->high_water_seen)) {
		w->high_water_seen = depth;
		atomic_store_explicit(&w->high_water, depth, memory_order_relaxed);
	}
}

/* The out-of-line parts of switch_ctx, so that its common path keeps a small frame. */
static __attribute__((noinline, cold)) void wait_off_cpu(weft__fiber *to)
{
	for (int i = 0; atomic_load_explicit(&to->on_cpu, memory_order_acquire); i++) {
		if (i < 1000)
			weft__cpu_relax();
		else
			sched_yield();
	}
}

static __attribute__((noinline)) void first_on(worker *w, weft__fiber *to)
{
	to->cur = w;
	atomic_store_explicit(&to->worker_index, w->index, memory_order_relaxed);
	if (to->pinned && !to->home)
		to->home = w;
}

static __attribute__((noinline)) void record_runnable(weft_sched *s, weft__fiber *to)
{
	weft_hist_record(s->runnable_hist, weft_now() - to->ready_at);
	to->ready_at = 0;
}

/* Switch on worker w from `from` (a fiber, or NULL: the loop) to `to` (a fiber, or NULL: w's
 * loop). Returns the worker the caller resumes on; does not return for a dead `from`. */
static worker *switch_ctx(worker *w, weft__fiber *from, weft__fiber *to, bool from_dead)
{
	weft_sched *s = w->s;
	void **save = from ? &from->sp : &w->loop_sp;
	void *dst;
	if (to) {
		if (weft__unlikely(atomic_load_explicit(&to->on_cpu, memory_order_acquire))) {
			/* only the loop waits here (direct_target): it holds no fiber of its own */
			WEFT__ASSERT(!from);
			wait_off_cpu(to);
		}
		atomic_store_explicit(&to->on_cpu, 1, memory_order_relaxed);
		atomic_store_explicit(&to->state, WEFT_FIBER_RUNNING, memory_order_relaxed);
		if (weft__unlikely(to->cur != w))
			first_on(w, to);
		if (weft__unlikely(to->ready_at))
			record_runnable(s, to);
		dst = to->sp;
	} else {
		dst = w->loop_sp;
	}
	w->current = to;
	weft__tls_fiber = to; /* this thread runs `to` next */
	if (from)
		check_stack(w, from, (const char *)__builtin_frame_address(0));
	w->prev = from;
	w->prev_dead = from_dead;
	atomic_store_explicit(&w->switches,
	                      atomic_load_explicit(&w->switches, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	san_begin(w, from, to, from_dead);
	worker *nw = (s->flags & WEFT_SCHED_SAVE_FPU) ? weft__ctx_switch_fpu_inline(save, dst, w)
	                                              : weft__ctx_switch_inline(save, dst, w);
	san_end(nw, from);
	finish_switch(nw);
	return nw;
}

/* Owner: the next fiber to run from what is local (no stealing). */
/* Run the due timers of every worker's heap, w's own first (readying into w's queue). */
static void run_due_timers(weft_sched *s, worker *w)
{
	int64_t now = weft_now();
	w->clock = now;
	for (int i = 0; i < s->nworkers; i++) {
		timer_heap *h = &s->workers[(w->index + i) % s->nworkers].timers;
		if (atomic_load_explicit(&h->next, memory_order_relaxed) <= now)
			weft__timers_run(s, h, now);
	}
}

/* Blocks of root fibers that died elsewhere a worker unlinks at a periodic check (scope.c's head
 * comment). */
#define REAP_PERIODIC 16
/* Blocks a worker lets wait while it spawns; past them, REAP_SPAWN every 64th spawn (weft_spawn;
 * scope.c's head comment). */
#define REAP_BACKLOG 1024
#define REAP_SPAWN 128

/* A step of the spare stack list's trim, if one is due (stack.c: Caching); after run_due_timers,
 * which read the clock. Not on a small fiber stack (the unmaps, and free for canary stacks): a
 * worker's loop or another fiber does it then. */
static inline void trim_if_due(weft_sched *s, worker *w)
{
	if (weft__unlikely(w->clock >=
	                   atomic_load_explicit(&s->spare_trim_at, memory_order_relaxed)) &&
	    stack_roomy())
		weft__stack_trim(s, w->clock);
}

/* Every 61 schedule calls: timers due on any heap, and the injection queue first (so neither a
 * busy local queue nor a busy injection queue can starve the other); the blocks of fibers that
 * died on other workers; a step of the spare stacks' trim. */
__attribute__((noinline)) static weft__fiber *find_periodic(worker *w)
{
	weft_sched *s = w->s;
	w->countdown = 61;
	run_due_timers(s, w);
	trim_if_due(s, w);
	if (atomic_load_explicit(&w->remote_dead, memory_order_relaxed))
		weft__remote_reap(s, w, w);
	/* root fibers' blocks are reaped by the spawns (scope.c): a few here when w has not spawned
	 * since the last check (its own ids: plain threads' spawns do not count), or is past its
	 * backlog, so that a worker that has stopped spawning gets the memory back */
	if (w->id_next == w->reap_id || weft__remote_root_backlog(w) > REAP_BACKLOG)
		weft__remote_reap_root(w, REAP_PERIODIC);
	w->reap_id = w->id_next;
	return inject_get(s, w);
}

/* Owner: the next fiber to run from what is local (no stealing). */
static inline weft__fiber *find_local(worker *w)
{
	weft__fiber *f;
	if (weft__unlikely(--w->countdown == 0) && (f = find_periodic(w)))
		return f;
	if (weft__unlikely(atomic_load_explicit(&w->inbox_n, memory_order_acquire)) &&
	    (f = inbox_get(w)))
		return f;
	f = atomic_load_explicit(&w->runnext, memory_order_relaxed);
	if (f) {
		if (w->solo) { /* no stealer (runnext_swap) */
			atomic_store_explicit(&w->runnext, NULL, memory_order_relaxed);
			return f;
		}
		if (atomic_compare_exchange_strong_explicit(
		            &w->runnext, &f, NULL, memory_order_acq_rel, memory_order_relaxed))
			return f;
	}
	if ((f = runq_get(w)))
		return f;
	return inject_get(w->s, w);
}

/* From a fiber, switch only to a fiber whose context is saved: one still on its way out on another
 * worker goes to this worker's loop, which first completes our own switch-out and only then waits
 * for it. (Two fibers each claimed while parking, each queued on the other's worker, would
 * otherwise have the two workers wait on each other for ever.) */
static weft__fiber *direct_target(worker *w, weft__fiber *next)
{
	if (next && atomic_load_explicit(&next->on_cpu, memory_order_acquire)) {
		w->loop_next = next;
		return NULL;
	}
	return next;
}

static worker *fiber_switch_out(worker *w, weft__fiber *self, bool dead)
{
	weft__fiber *next = find_local(w);
	if (next == self) {
		/* claimed and readied while on its way out (find_local may run the timers): the
		 * wait is over already, so it just goes on running */
		atomic_store_explicit(&self->state, WEFT_FIBER_RUNNING, memory_order_relaxed);
		return w;
	}
	return switch_ctx(w, self, direct_target(w, next), dead);
}

/* ---- the worker loop ---------------------------------------------------------------------------
 */

static int64_t earliest_timer(weft_sched *s)
{
	int64_t e = INT64_MAX;
	for (int i = 0; i < s->nworkers; i++) {
		int64_t n = atomic_load_explicit(&s->workers[i].timers.next, memory_order_relaxed);
		if (n < e)
			e = n;
	}
	return e;
}

/* I4: anything to run anywhere (for w)? */
static bool any_work(weft_sched *s, worker *w)
{
	if (atomic_load_explicit(&s->inject_n, memory_order_seq_cst) ||
	    atomic_load_explicit(&w->inbox_n, memory_order_seq_cst))
		return true;
	for (int i = 0; i < s->nworkers; i++)
		if (!runq_empty(&s->workers[i]))
			return true;
	return earliest_timer(s) <= weft_now();
}

/* I1-I5. Returns after a wake, a timeout or a change of mind; the caller looks for work again. */
static void park_worker(weft_sched *s, worker *w)
{
	idle_push(s, w);
	if (w->spinning) {
		w->spinning = false;
		atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
	}
	fence_seq_cst(s);
	bool woken = false;
	if (any_work(s, w) || atomic_load_explicit(&s->shutdown, memory_order_acquire)) {
		if (idle_remove(s, w))
			return;
		/* a waker popped us: its futex store is on the way; take it */
	} else {
		/* the earliest timer, or the spare stacks' next trim step (stack.c: Caching) for
		 * one parked worker at a time, not all of them */
		int64_t deadline = earliest_timer(s),
		        trim = atomic_load_explicit(&s->spare_trim_at, memory_order_relaxed);
		bool trimmer = trim < deadline &&
		               !atomic_exchange_explicit(&s->trim_sleeper, 1, memory_order_relaxed);
		if (trimmer)
			deadline = trim;
		if (deadline == INT64_MAX)
			deadline = WEFT_FOREVER;
		while (!atomic_load_explicit(&w->futex, memory_order_acquire)) {
			if (weft__futex_wait(&w->futex, 0, deadline) == -ETIMEDOUT)
				break;
		}
		if (trimmer)
			atomic_store_explicit(&s->trim_sleeper, 0, memory_order_relaxed);
		if (atomic_load_explicit(&w->futex, memory_order_acquire))
			woken = true;
		else if (idle_remove(s, w))
			return; /* timed out */
	}
	(void)woken;
	while (!atomic_load_explicit(&w->futex, memory_order_acquire))
		weft__cpu_relax();
	atomic_store_explicit(&w->futex, 0, memory_order_relaxed);
	w->spinning = true; /* the waker counted us in nspinning */
}

static weft__fiber *find_runnable(weft_sched *s, worker *w)
{
	for (;;) {
		if (atomic_load_explicit(&s->shutdown, memory_order_acquire)) {
			if (w->spinning) {
				w->spinning = false;
				atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
			}
			return NULL;
		}
		weft__fiber *f = find_local(w);
		if (!f) {
			/* out of local work: the exits go off the root's count (a joiner of the
			 * root may wait for them), and the blocks of fibers that died elsewhere
			 * come home (scope.c's head comment) */
			weft__root_flush(w, 0);
			if (atomic_load_explicit(&w->remote_dead, memory_order_relaxed))
				weft__remote_reap(s, w, w);
			run_due_timers(s, w);
			trim_if_due(s, w);
			f = find_local(w);
		}
		if (f) {
			if (w->spinning)
				stop_spinning(s, w);
			return f;
		}
		if (!w->spinning && s->nworkers > 1 &&
		    2 * atomic_load_explicit(&s->nspinning, memory_order_relaxed) <
		            s->nworkers - atomic_load_explicit(&s->nidle, memory_order_relaxed)) {
			w->spinning = true;
			atomic_fetch_add_explicit(&s->nspinning, 1, memory_order_seq_cst);
		}
		if (w->spinning) {
			for (int round = 0; round < 4 && !f; round++) {
				uint32_t start =
				        (uint32_t)(w->rng = w->rng * 6364136223846793005ull +
				                            1442695040888963407ull) >>
				        7;
				for (int i = 0; i < s->nworkers && !f; i++) {
					worker *v = &s->workers[(start + (uint32_t)i) %
					                        (uint32_t)s->nworkers];
					if (v != w)
						f = runq_steal(w, v, round == 3);
				}
			}
			if (f) {
				atomic_fetch_add_explicit(&w->steals, 1, memory_order_relaxed);
				stop_spinning(s, w);
				return f;
			}
		}
		weft__remote_reap_root(w, LONG_MAX); /* nothing else to do: all of them */
		park_worker(s, w);
		w->clock = weft_now(); /* time parked is not run time: the clock must not keep it */
	}
}

static void loop_context_init(worker *w)
{
#if WEFT__TSAN
	w->loop_tsan_fiber = __tsan_get_current_fiber();
#endif
#if WEFT__ASAN
	pthread_attr_t a;
	if (pthread_getattr_np(pthread_self(), &a) == 0) {
		void *addr;
		size_t size;
		if (pthread_attr_getstack(&a, &addr, &size) == 0) {
			w->loop_stack_lo = addr;
			w->loop_stack_size = size;
		}
		pthread_attr_destroy(&a);
	}
#endif
	(void)w;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	weft_sched *s = w->s;
	weft__tls_worker = w;
	loop_context_init(w);
	weft__stack_altstack(w);
	w->clock = weft_now();
	/* weft_sched_create returns once every worker is here (a fork right after it finds no
	 * thread half-started) */
	atomic_fetch_add_explicit(&s->running, 1, memory_order_release);
	weft__futex_wake(&s->running, 1);
	for (;;) {
		weft__fiber *f = w->loop_next;
		w->loop_next = NULL;
		if (!f && !(f = find_runnable(s, w)))
			break;
		worker *nw = switch_ctx(w, NULL, f, false);
		WEFT__ASSERT(nw == w);
	}
	weft__stack_altstack_free(w);
	weft__tls_worker = NULL;
	weft__tls_fiber = NULL;
	return NULL;
}

/* ---- the wait protocol -------------------------------------------------------------------------
 */

weft__fiber *weft__fiber_self(void)
{
	return weft__tls_fiber;
}

bool weft__fiber_cancelled(const weft__fiber *f)
{
	return atomic_load_explicit(&f->cancelled, memory_order_acquire) != 0;
}

uint64_t weft__wait_begin(weft__fiber *self, int reason, const void *obj)
{
	int nocancel = (reason & WEFT__WAIT_NOCANCEL) != 0;
	reason &= ~WEFT__WAIT_NOCANCEL;
	if (!nocancel && atomic_load_explicit(&self->cancelled, memory_order_relaxed))
		return 0;
	uint64_t seq = (atomic_load_explicit(&self->wait_word, memory_order_relaxed) >> 2) + 1;
	self->wait_obj = obj;
	atomic_store_explicit(&self->wait_reason, reason, memory_order_relaxed);
	atomic_store_explicit(&self->nocancel, nocancel, memory_order_relaxed);
	/* F1 of the cancellation pair (head comment); F2 is in weft__wait_park. Release either
	 * way: a canceller that sees WAITING sees the nocancel stored before it. */
	if (weft__likely(asym_cancel)) {
		atomic_store_explicit(&self->wait_word, seq << 2 | WAIT_WAITING,
		                      memory_order_release);
		atomic_signal_fence(memory_order_seq_cst); /* the compiler keeps F1 before F2 */
	} else {
		atomic_store_explicit(&self->wait_word, seq << 2 | WAIT_WAITING,
		                      memory_order_seq_cst);
	}
	return seq;
}

void weft__cancel_barrier(void)
{
	if (!asym_cancel)
		return; /* the symmetric pair: C1 and C3 are seq_cst, nothing between */
	int e = errno;
	long r = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	errno = e;
	if (r != 0) /* registered at start, so it cannot fail; a lost cancel must not pass */
		weft__fatal("weft: membarrier failed after its registration succeeded");
}

/* The asymmetric pair only where the barrier itself was seen to work once (a seccomp filter may
 * allow the query and the registration and deny the barrier), and never under ThreadSanitizer,
 * which has no model of membarrier: there the symmetric seq_cst pair is the one it checks. */
static void asym_cancel_init(void)
{
	if (WEFT__TSAN)
		return;
	int e = errno;
	long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	asym_cancel =
	        cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
	        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
	errno = e;
}

bool weft__wait_abandon(weft__fiber *self, uint64_t tok)
{
	uint64_t expect = tok << 2 | WAIT_WAITING;
	if (atomic_compare_exchange_strong_explicit(&self->wait_word, &expect, tok << 2 | WAIT_NONE,
	                                            memory_order_acq_rel, memory_order_acquire)) {
		atomic_store_explicit(&self->wait_reason, WEFT_WAIT_NONE, memory_order_relaxed);
		return true;
	}
	return false;
}

bool weft__wake_claim(weft__fiber *f, uint64_t tok, int result)
{
	uint64_t expect = tok << 2 | WAIT_WAITING;
	if (!atomic_compare_exchange_strong_explicit(&f->wait_word, &expect,
	                                             tok << 2 | WAIT_CLAIMED, memory_order_acq_rel,
	                                             memory_order_relaxed))
		return false;
	f->wake_result = result;
	return true;
}

int weft__wait_park(weft__fiber *self, uint64_t tok, int64_t deadline)
{
	worker *w = self->cur; /* it runs: cur is its worker */
	WEFT__ASSERT(w->current == self);
	/* F2 of the cancellation pair: a cancel that came before our WAITING was published did
	 * not claim; claim for it (a claim by anyone else wins over ours: park to
	 * collect it) */
	if (weft__unlikely(atomic_load_explicit(&self->cancelled, memory_order_seq_cst)) &&
	    !atomic_load_explicit(&self->nocancel, memory_order_relaxed) &&
	    weft__wake_claim(self, tok, -ECANCELED)) {
		atomic_store_explicit(&self->wait_word, tok << 2 | WAIT_NONE, memory_order_relaxed);
		atomic_store_explicit(&self->wait_reason, WEFT_WAIT_NONE, memory_order_relaxed);
		return -ECANCELED;
	}
	if (deadline != WEFT_FOREVER) {
		if (deadline <= weft_now()) {
			if (weft__wake_claim(self, tok, -ETIMEDOUT)) {
				atomic_store_explicit(&self->wait_word, tok << 2 | WAIT_NONE,
				                      memory_order_relaxed);
				atomic_store_explicit(&self->wait_reason, WEFT_WAIT_NONE,
				                      memory_order_relaxed);
				return -ETIMEDOUT;
			}
		} else {
			weft__timer_add(&w->timers, self, deadline, tok);
		}
	}
	/* the start of the wait, for dumps: the worker's clock (see struct worker), not a clock
	 * read (5 ns, a tenth of a channel hand-off) */
	atomic_store_explicit(&self->wait_since, w->clock, memory_order_relaxed);
	atomic_store_explicit(&self->state, WEFT_FIBER_WAITING, memory_order_relaxed);
	fiber_switch_out(w, self, false);
	if (atomic_load_explicit(&self->timer_heap, memory_order_acquire))
		weft__timer_del(self);
	atomic_store_explicit(&self->wait_word, tok << 2 | WAIT_NONE, memory_order_relaxed);
	atomic_store_explicit(&self->wait_reason, WEFT_WAIT_NONE, memory_order_relaxed);
	return self->wake_result;
}

/* f takes runnext on w from a fiber of w: what was there goes to the ring (out of line, so the
 * common path of weft__wake_ready needs no frame). */
static __attribute__((noinline)) void ready_displaced(worker *w, weft__fiber *old)
{
	runq_put(w, old);
	if (!w->solo)
		wake_if_needed(w->s);
}

static __attribute__((noinline)) void wake_ready_slow(weft__fiber *f, enum weft__ready_how how)
{
	weft_sched *s = f->sched;
	weft__fiber *self = weft__tls_fiber;
	worker *w = self ? self->cur : tls_worker();
	if (w && w->s != s)
		w = NULL;
	if (how == WEFT__READY_SWITCH && self && w && !(f->pinned && f->home && f->home != w)) {
		/* hand the worker over: f runs now, the waker next */
		atomic_store_explicit(&f->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
		if (self->pinned) {
			self->requeue = true;
		} else {
			weft__fiber *old = runnext_swap(w, self);
			if (old)
				ready_displaced(w, old);
		}
		switch_ctx(w, self, direct_target(w, f), false);
		return;
	}
	ready_on(s, w, f, how == WEFT__READY_SWITCH ? WEFT__READY_NEXT : how);
}

void weft__wake_ready(weft__fiber *f, enum weft__ready_how how)
{
	/* the common case first: a fiber readies an unpinned fiber of its own scheduler to run
	 * next (ready_on's path for it, without the frame) */
	weft__fiber *self = weft__tls_fiber;
	if (weft__likely(how == WEFT__READY_NEXT && self && !f->pinned)) {
		worker *w = self->cur;
		if (weft__likely(w->s == f->sched)) {
			atomic_store_explicit(&f->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
			weft__fiber *old = runnext_swap(w, f);
			if (old)
				ready_displaced(w, old);
			return;
		}
	}
	wake_ready_slow(f, how);
}

/* ---- fibers ------------------------------------------------------------------------------------
 */

/* A dead fiber, off its stack: its block to this worker's cache (TSan's state stays in
 * f->stack, for the next fiber), or, when another worker spawned it, to that worker's remote
 * stacks (scope.c's head comment: the spawner unlinks it). */
static void fiber_release(worker *w, weft__fiber *f)
{
	if (weft__scope_exit_remote(f, w))
		weft__remote_push(f);
	else
		weft__stack_put(w->s, w, f);
}

static _Noreturn void fiber_exit(weft__fiber *f)
{
	/* before the scope hears of the exit: an overflow must not pass for a clean finish */
	check_stack(f->cur, f, (const char *)__builtin_frame_address(0));
	worker *w = f->cur;
	weft__scope_exit(f, w);
	atomic_store_explicit(&f->state, WEFT_FIBER_DEAD, memory_order_relaxed);
	fiber_switch_out(w, f, true);
	__builtin_unreachable();
}

static void fiber_entry(void *arg, void *data)
{
	worker *w = arg;
	weft__fiber *f = data;
	san_end(w, f);
	finish_switch(w);
	f->fn(f->arg);
	fiber_exit(f);
}

/* A new fiber's control block. It is either zeroed (a new stack) or as the last fiber on the
 * stack left it (the stack cache, stack.c): every field a life changes is set here, and those
 * left alone are valid as a dead fiber leaves them (so one store less each, on a block that is
 * likely cold): stack (and its TSan state), canary (a function of the address), wait_word (the
 * wait sequence goes on: a claim meant for an old life's wait fails as for an old wait), and
 * wait_reason NONE, timer_heap NULL, nocancel (written by each wait_begin); wake_result, next,
 * the timer's deadline and token, the scope links and wait_obj/wait_since are written before
 * they are read. */
static void fiber_init(weft__fiber *f, weft_sched *s, size_t size, weft_fiber_fn fn, void *arg,
                       void *site, const weft_spawn_opts *opts)
{
	WEFT__ASSERT((atomic_load_explicit(&f->wait_word, memory_order_relaxed) & 3) == WAIT_NONE &&
	             !atomic_load_explicit(&f->timer_heap, memory_order_relaxed));
	atomic_store_explicit(&f->on_cpu, 0, memory_order_relaxed);
	atomic_store_explicit(&f->cancelled, 0, memory_order_relaxed);
	f->home = NULL;
	f->cur = NULL;
	f->pinned = opts && opts->pinned;
	f->requeue = false;
	f->stack_req = size;
	f->sched = s;
	f->timer_index = -1;
	atomic_store_explicit(&f->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
	atomic_store_explicit(&f->worker_index, -1, memory_order_relaxed);
	f->ready_at = 0;
	f->fn = fn;
	f->arg = arg;
	f->spawn_site = site;
	if (opts && opts->name)
		snprintf(f->name, sizeof(f->name), "%s", opts->name);
	else
		f->name[0] = 0;
#if WEFT__ASAN
	f->asan_fake_stack = NULL; /* (the block's last line: not touched otherwise) */
#endif
	if (!f->stack.guarded) {
		f->canary = ((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ull) ^ canary_secret;
		*(uint64_t *)(void *)f->stack.lo = f->canary;
	}
	f->sp = weft__ctx_make(f->stack.hi, fiber_entry, f);
#if WEFT__TSAN
	/* TSan's fiber state is costly to make (a system call or two): it goes with the stack */
	if (!f->stack.tsan_fiber)
		f->stack.tsan_fiber = __tsan_create_fiber(0);
	f->tsan_fiber = f->stack.tsan_fiber;
#endif
}

/* A process-wide unique id: from w's block, which is taken 1024 at a time from the process's
 * counter (one atomic add per 1024 spawns instead of one each; ids are then unique but, across
 * workers, not in spawn order). */
#define ID_BLOCK 1024
static uint64_t new_id(worker *w)
{
	if (!w)
		return atomic_fetch_add_explicit(&next_fiber_id, 1, memory_order_relaxed) + 1;
	if (weft__unlikely(w->id_next == w->id_end)) {
		w->id_next =
		        atomic_fetch_add_explicit(&next_fiber_id, ID_BLOCK, memory_order_relaxed) +
		        1;
		w->id_end = w->id_next + ID_BLOCK;
	}
	return w->id_next++;
}

static int check_sched(const weft_sched *s)
{
	if (s->fork_gen != weft__fork_gen())
		return -ESHUTDOWN;
	if (atomic_load_explicit(&s->shutdown, memory_order_acquire))
		return -ESHUTDOWN;
	return 0;
}

static size_t round_stack(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	if (size < page)
		return (size + 63) & ~(size_t)63;
	return (size + page - 1) & ~(page - 1);
}

__attribute__((noinline)) int weft_spawn(weft_scope *sc, weft_fiber_fn fn, void *arg,
                                         const weft_spawn_opts *opts, uint64_t *ret_id)
{
	void *site = __builtin_return_address(0);
	if (!sc || !fn)
		return -EINVAL;
	weft_sched *s = sc->s;
	int r = check_sched(s);
	if (r)
		return r;
	size_t size = s->stack_size;
	if (opts && opts->stack_size) {
		if (opts->stack_size < WEFT_FIBER_STACK_MIN ||
		    opts->stack_size > WEFT_FIBER_STACK_MAX)
			return -EINVAL;
		size = round_stack(opts->stack_size);
	}
	if (atomic_load_explicit(&sc->cancelled, memory_order_acquire))
		return -ECANCELED;
	worker *w = weft__tls_worker; /* no switch in this function: a plain read will do */
	if (w && w->s != s)
		w = NULL;
	if (!weft__root_take(s, w)) /* the root's count: scope.c */
		return -EAGAIN;
	weft__fiber *f;
	r = weft__stack_get(s, w, size, &f);
	if (r < 0)
		goto fail_alive;
	fiber_init(f, s, size, fn, arg, site, opts);
	f->id = new_id(w);
	r = weft__scope_attach(sc, f, w);
	if (r < 0) {
		weft__stack_put(s, w, f);
		goto fail_alive;
	}
	if (w)
		atomic_store_explicit(&w->spawned,
		                      atomic_load_explicit(&w->spawned, memory_order_relaxed) + 1,
		                      memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&s->workers[0].spawned, 1, memory_order_relaxed);
	uint64_t id = f->id;
	if ((id & 63) == 0)
		f->ready_at = weft_now();
	ready_on(s, w, f, w && w->current ? WEFT__READY_NEXT : WEFT__READY_QUEUE);
	/* about every 64th spawn of w (its ids come in runs of 1024): past REAP_BACKLOG blocks of
	 * its fibers that died elsewhere, twice as many as it spawned meanwhile (scope.c's head
	 * comment: the bound) */
	if (weft__unlikely((id & 63) == 0) && w &&
	    weft__unlikely(weft__remote_root_backlog(w) > REAP_BACKLOG))
		weft__remote_reap_root(w, REAP_SPAWN);
	if (ret_id)
		*ret_id = id;
	return 0;
fail_alive:
	weft__root_put(s, w); /* a joiner of the root may have seen our unit */
	return r;
}

int weft_fiber_yield(void)
{
	weft__fiber *self = weft__tls_fiber;
	if (!self)
		return -EPERM;
	worker *w = self->cur;
	weft__fiber *next = find_local(w);
	if (next) {
		self->requeue = true;
		atomic_store_explicit(&self->state, WEFT_FIBER_RUNNABLE, memory_order_relaxed);
		switch_ctx(w, self, direct_target(w, next), false); /* checks the stack */
	} else {
		check_stack(w, self, (const char *)__builtin_frame_address(0));
	}
	return weft__fiber_cancelled(self) ? -ECANCELED : 0;
}

int weft_fiber_sleep_until(int64_t deadline)
{
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	if (deadline < WEFT_FOREVER)
		return -EINVAL;
	uint64_t tok = weft__wait_begin(self, WEFT_WAIT_SLEEP, NULL);
	if (!tok)
		return -ECANCELED;
	int r = weft__wait_park(self, tok, deadline);
	return r == -ETIMEDOUT ? 0 : r;
}

uint64_t weft_fiber_id(void)
{
	weft__fiber *self = weft__fiber_self();
	return self ? self->id : 0;
}

int weft_fiber_set_name(const char *name)
{
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	if (!name)
		return -EINVAL;
	snprintf(self->name, sizeof(self->name), "%s", name);
	return 0;
}

int weft_fiber_cancelled(void)
{
	weft__fiber *self = weft__fiber_self();
	if (!self)
		return -EPERM;
	return weft__fiber_cancelled(self) ? -ECANCELED : 0;
}

const char *weft_fiber_state_name(int state)
{
	static const char *const names[] = {"runnable", "running", "waiting", "dead"};
	return state >= 0 && state < (int)WEFT__ARRAY_SIZE(names) ? names[state] : "unknown";
}

const char *weft_wait_reason_name(int reason)
{
	static const char *const names[WEFT_WAIT_COUNT_] = {
	        [WEFT_WAIT_NONE] = "none",
	        [WEFT_WAIT_SLEEP] = "sleep",
	        [WEFT_WAIT_CHAN_SEND] = "chan-send",
	        [WEFT_WAIT_CHAN_RECV] = "chan-recv",
	        [WEFT_WAIT_SELECT] = "select",
	        [WEFT_WAIT_MUTEX] = "mutex",
	        [WEFT_WAIT_COND] = "cond",
	        [WEFT_WAIT_SEM] = "sem",
	        [WEFT_WAIT_WAITGROUP] = "waitgroup",
	        [WEFT_WAIT_JOIN] = "join",
	        [WEFT_WAIT_IO] = "io",
	        [WEFT_WAIT_BLOCKING] = "blocking",
	};
	return reason >= 0 && reason < WEFT_WAIT_COUNT_ ? names[reason] : "unknown";
}

/* ---- the scheduler -----------------------------------------------------------------------------
 */

static double g_alive(void *arg)
{
	weft_sched *s = arg;
	return (double)weft__root_alive(s);
}

int weft_sched_stats_get(weft_sched *s, weft_sched_stats *ret)
{
	if (!s || !ret)
		return -EINVAL;
	weft_sched_stats st = {0};
	st.fibers_alive = weft__root_alive(s);
	st.threads = s->nworkers;
	st.guarded_stacks = atomic_load_explicit(&s->guarded, memory_order_relaxed);
	st.canary_stacks = atomic_load_explicit(&s->canaried, memory_order_relaxed);
	long runnable = atomic_load_explicit(&s->inject_n, memory_order_relaxed);
	for (int i = 0; i < s->nworkers; i++) {
		worker *w = &s->workers[i];
		st.switches += atomic_load_explicit(&w->switches, memory_order_relaxed);
		st.steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
		st.spawned += atomic_load_explicit(&w->spawned, memory_order_relaxed);
		uint64_t hw = atomic_load_explicit(&w->high_water, memory_order_relaxed);
		if (hw > st.stack_high_water)
			st.stack_high_water = hw;
		uint32_t h = atomic_load_explicit(&w->head, memory_order_relaxed);
		uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
		runnable += (long)(uint32_t)(t - h) +
		            (atomic_load_explicit(&w->runnext, memory_order_relaxed) != NULL) +
		            atomic_load_explicit(&w->inbox_n, memory_order_relaxed);
	}
	st.runnable = runnable;
	*ret = st;
	return 0;
}

#define STAT_GAUGE(fname, field)                                                                   \
	static double fname(void *arg)                                                             \
	{                                                                                          \
		weft_sched_stats st;                                                               \
		weft_sched_stats_get(arg, &st);                                                    \
		return (double)st.field;                                                           \
	}
STAT_GAUGE(g_spawned, spawned)
STAT_GAUGE(g_switches, switches)
STAT_GAUGE(g_steals, steals)
STAT_GAUGE(g_runnable, runnable)
STAT_GAUGE(g_guarded, guarded_stacks)
STAT_GAUGE(g_canary, canary_stacks)
STAT_GAUGE(g_high_water, stack_high_water)

static const struct {
	const char *name, *help;
	double (*fn)(void *);
} gauge_defs[] = {
        {"weft_fibers_alive", "Fibers alive (spawned, not finished).", g_alive},
        {"weft_fibers_spawned", "Fibers spawned since the scheduler started.", g_spawned},
        {"weft_fiber_switches", "Context switches since the scheduler started.", g_switches},
        {"weft_fiber_steals", "Fibers stolen from another worker's run queue.", g_steals},
        {"weft_fiber_runnable", "Fibers in run queues now.", g_runnable},
        {"weft_fiber_stacks_guarded", "Fiber stacks with a guard page now.", g_guarded},
        {"weft_fiber_stacks_canary",
         "Fiber stacks with only a canary now (the kernel's map budget ran out, or guard=never).",
         g_canary},
        {"weft_fiber_stack_high_water_bytes", "The deepest fiber stack use seen at a switch.",
         g_high_water},
};

/* A worker's run-queue length: its ring, its runnext slot and its inbox. */
static double g_worker_queue(void *arg)
{
	worker *w = arg;
	uint32_t h = atomic_load_explicit(&w->head, memory_order_relaxed);
	uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
	return (double)((long)(uint32_t)(t - h) +
	                (atomic_load_explicit(&w->runnext, memory_order_relaxed) != NULL) +
	                atomic_load_explicit(&w->inbox_n, memory_order_relaxed));
}

static void metrics_fini(weft_sched *s)
{
	for (int i = 0; i < s->nseries; i++)
		weft_metrics_remove(s->metrics, s->series[i]);
	s->nseries = 0;
	if (s->workers)
		for (int i = 0; i < s->nworkers; i++)
			if (s->workers[i].queue_gauge) {
				weft_metrics_remove(s->metrics, s->workers[i].queue_gauge);
				s->workers[i].queue_gauge = NULL;
			}
}

static int metrics_init(weft_sched *s)
{
	const char *labels[] = {"sched", s->name, NULL};
	for (size_t i = 0; i < WEFT__ARRAY_SIZE(gauge_defs); i++) {
		weft_gauge *g;
		int r = weft_metrics_gauge_fn(s->metrics, gauge_defs[i].name, gauge_defs[i].help,
		                              labels, gauge_defs[i].fn, s, &g);
		if (r < 0)
			return r;
		s->series[s->nseries++] = g;
	}
	weft_hist_export ex = {.scale = 1e-9, .lo = 100, .hi = WEFT_SEC(10)};
	int r = weft_metrics_histogram(
	        s->metrics, "weft_fiber_runnable_seconds",
	        "Time a fiber waited in a run queue before running (sampled: "
	        "one readying in 64).",
	        labels, &ex, &s->runnable_hist);
	if (r < 0)
		return r;
	s->series[s->nseries++] = s->runnable_hist;
	for (int i = 0; i < s->nworkers; i++) {
		char idx[16];
		snprintf(idx, sizeof(idx), "%d", i);
		const char *wl[] = {"sched", s->name, "worker", idx, NULL};
		r = weft_metrics_gauge_fn(
		        s->metrics, "weft_fiber_runqueue_length",
		        "Fibers in a worker's run queue now (ring, next slot, inbox).", wl,
		        g_worker_queue, &s->workers[i], &s->workers[i].queue_gauge);
		if (r < 0)
			return r;
	}
	return 0;
}

static void atfork_child(void)
{
	atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
	weft__tls_worker = NULL;
	weft__tls_fiber = NULL;
	weft__sched_list_after_fork();
}

static pthread_once_t process_once = PTHREAD_ONCE_INIT;
static int process_init_result;

bool weft__have_prefetchw;

static void process_init(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;
	/* cpuid 0x80000001, ECX bit 8: PREFETCHW (fiber-impl.h: weft__prefetch_w) */
	weft__have_prefetchw = __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & bit_PRFCHW);
#endif
	canary_secret = (uint64_t)weft_now() * 0xD6E8FEB86659FD93ull ^ (uint64_t)getpid();
	asym_cancel_init();
	if (pthread_atfork(NULL, NULL, atfork_child) != 0) {
		process_init_result = -ENOMEM;
		return;
	}
	process_init_result = weft__stack_init_process();
}

static void stop_workers(weft_sched *s)
{
	atomic_store_explicit(&s->shutdown, 1, memory_order_release);
	if (!s->workers)
		return;
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].started)
			unpark(&s->workers[i]);
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].started) {
			pthread_join(s->workers[i].thread, NULL);
			s->workers[i].started = false;
		}
}

static void sched_free(weft_sched *s)
{
	if (!s)
		return;
	stop_workers(s);
	weft__sched_unregister(s);
	if (s->workers) {
		for (int i = 0; i < s->nworkers; i++) {
			weft__stack_cache_free(s, &s->workers[i]);
			weft__timer_heap_free(&s->workers[i].timers);
		}
	}
	weft__stack_spare_free(s);
	inject_free_all(s);
	metrics_fini(s);
	weft__scope_free_root(s);
	free(s->workers);
	free(s);
}

int weft_sched_create(weft_sched **ret, const weft_sched_opts *opts)
{
	weft_sched_opts o = {0};
	if (opts)
		o = *opts;
	if (!ret || o.threads < 0 || o.threads > WEFT_SCHED_THREADS_MAX || o.max_fibers < 0 ||
	    o.max_fibers > WEFT_FIBERS_MAX || (o.flags & ~WEFT_SCHED_SAVE_FPU) ||
	    o.guard < WEFT_GUARD_AUTO || o.guard > WEFT_GUARD_NEVER ||
	    (o.stack_size &&
	     (o.stack_size < WEFT_FIBER_STACK_MIN || o.stack_size > WEFT_FIBER_STACK_MAX)) ||
	    (o.name && strlen(o.name) > 63))
		return -EINVAL;
	pthread_once(&process_once, process_init);
	if (process_init_result < 0)
		return process_init_result;
	if (!o.threads) {
		int n = weft_cpu_budget(NULL);
		o.threads = n < 0 ? 1 : n;
		if (o.threads < 1)
			o.threads = 1;
		if (o.threads > WEFT_SCHED_THREADS_MAX)
			o.threads = WEFT_SCHED_THREADS_MAX;
	}
	weft_sched *s = weft__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->name, sizeof(s->name), "%s", o.name ? o.name : "fiber");
	s->nworkers = o.threads;
	s->stack_size = round_stack(o.stack_size ? o.stack_size : WEFT_FIBER_STACK_DEFAULT);
	s->max_fibers = o.max_fibers ? o.max_fibers : WEFT_FIBERS_DEFAULT_MAX;
	s->guard = o.guard;
	s->flags = o.flags;
	/* a smaller default under TSan, where each cached stack keeps its TSan fiber and TSan stops
	 * at 8,128 of those, and under valgrind, whose table of mappings holds about 5,000 */
	s->stack_cache = o.stack_cache                     ? o.stack_cache
	                 : WEFT__TSAN || weft__on_valgrind ? (size_t)4 << 20
	                                                   : (size_t)64 << 20;
	s->spare_floor = s->stack_cache > SIZE_MAX / (size_t)s->nworkers
	                         ? SIZE_MAX
	                         : s->stack_cache * (size_t)s->nworkers;
	atomic_store_explicit(&s->spare_trim_at, INT64_MAX, memory_order_relaxed);
	s->fork_gen = weft__fork_gen();
	int r;
	if (o.metrics) {
		s->metrics = o.metrics;
	} else if ((r = weft_metrics_global(&s->metrics)) < 0) {
		free(s);
		return r;
	}
	s->workers = weft__calloc((size_t)s->nworkers, sizeof(*s->workers));
	if (!s->workers) {
		r = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < s->nworkers; i++) {
		worker *w = &s->workers[i];
		w->s = s;
		w->index = i;
		w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
		w->countdown = 61;
		w->solo = s->nworkers == 1;
		atomic_store_explicit(&w->timers.next, INT64_MAX, memory_order_relaxed);
	}
	if ((r = weft__scope_init_root(s)) < 0)
		goto fail;
	if ((r = metrics_init(s)) < 0)
		goto fail;
	for (int i = 0; i < s->nworkers; i++) {
		char tname[32];
		snprintf(tname, sizeof(tname), "%.10s-%d", s->name, i % 10000);
		r = weft__thread_create(&s->workers[i].thread, tname, worker_main, &s->workers[i]);
		if (r < 0)
			goto fail;
		s->workers[i].started = true;
	}
	for (uint32_t n;
	     (n = atomic_load_explicit(&s->running, memory_order_acquire)) < (uint32_t)s->nworkers;)
		weft__futex_wait(&s->running, n, WEFT_FOREVER);
	weft__sched_register(s);
	*ret = s;
	return 0;
fail:
	sched_free(s);
	return r;
}

void weft_sched_destroy(weft_sched *s)
{
	if (!s)
		return;
	worker *w = tls_worker();
	if (w && w->s == s)
		weft__fatal("weft: weft_sched_destroy called from a fiber of the scheduler it "
		            "destroys");
	if (s->fork_gen == weft__fork_gen()) {
		weft_scope_cancel(&s->root);
		weft_scope_join(&s->root, WEFT_FOREVER);
	} else {
		/* a child after fork: the threads are gone, the fibers' stacks are copies nobody
		 * will run; free what is ours to free */
		for (int i = 0; i < s->nworkers; i++)
			s->workers[i].started = false;
	}
	sched_free(s);
}

weft_scope *weft_sched_root(weft_sched *s)
{
	return s ? &s->root : NULL;
}

weft_sched *weft_sched_current(void)
{
	weft__fiber *self = weft__tls_fiber;
	return self ? self->sched : NULL;
}
