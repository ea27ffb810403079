/* The executor pool's internal layout, shared by src/pool/pool.c (lifecycle, workers, submit,
 * futures, shutdown), src/pool/queue.c (the per-worker rings, the overflow queue, futexes) and
 * src/pool/verdict.c (the tick: measurements, verdict, metrics). The design is described at the
 * top of each of those files. Never installed.
 *
 * WEFT_POOL_NO_MEASURE, defined when compiling the files of src/pool, compiles the per-task
 * measurements out (submit stamps, clock reads, histogram records, completion counters): the bench
 * builds the pool that way to show what the always-on measurements cost. The tick still runs, with
 * nothing but thread counts and queue depth to report.
 */
#ifndef WEFT_INTERNAL_POOL_H
#define WEFT_INTERNAL_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/pool.h>

#include "common.h"
#include "lock.h"

#define WEFT__POOL_MAX_THREADS 1024
#define WEFT__POOL_NAME_MAX 63
/* Cells per worker ring: a power of two. 4096 cells of 32 bytes are 128 KiB per worker. */
#define WEFT__POOL_RING_BITS 12
#define WEFT__POOL_RING_SIZE (1u << WEFT__POOL_RING_BITS)
/* Bit 63 of a ring's tail: the ring is closed (shutdown); pushes fail with -ESHUTDOWN. */
#define WEFT__POOL_CLOSED ((uint64_t)1 << 63)
/* An idle worker spins before it parks (pool.c, "The spin"): SPIN_LONG while tasks arrive at
 * least every SPIN_LONG / 2 on average (a ready worker saves the submitter a futex wake per
 * task), else SPIN_SHORT, a look for a task submitted right behind another: a longer spin costs
 * more CPU than the futex wake it saves (a park and wake here cost the worker about 2 us of CPU
 * and the task about 2 us of latency; a spin across a 100 us gap costs 100 us). Each spin that
 * ends with nothing found halves the next one, down to 1 / 2^SPIN_DECAY_MAX; a spin that finds
 * work restores the full length: a worker spins long only while spinning pays off. */
#define WEFT__POOL_SPIN_SHORT WEFT_USEC(4)
#define WEFT__POOL_SPIN_LONG WEFT_USEC(25)
#define WEFT__POOL_SPIN_DECAY_MAX 3
/* A spinner that finds a gap longer than SPIN_PREEMPTED between two of its clock reads was
 * off the CPU (the CPUs are oversubscribed): nobody spins for SPIN_BACKOFF_MIN, doubling up to
 * SPIN_BACKOFF_MAX while such finds come within four back-offs of each other. A
 * submitter that relies on a spinner whose last look is older than SPIN_STALE before its
 * submit wakes a parked worker anyway. */
#define WEFT__POOL_SPIN_PREEMPTED WEFT_USEC(200)
#define WEFT__POOL_SPIN_BACKOFF_MIN WEFT_MSEC(10)
#define WEFT__POOL_SPIN_BACKOFF_MAX WEFT_SEC(2)
#define WEFT__POOL_SPIN_STALE WEFT_USEC(50)
/* Tasks a worker keeps aside from a batch pop while its tasks are tiny (see find_task). */
#define WEFT__POOL_STASH 15

/* ---- tasks and the queues (queue.c) ---------------------------------------------------------- */

/* A task by value. stamp: weft_now() at submit when the submit was sampled for the queue-wait
 * measurement, else 0. */
struct weft__task {
	weft_task_fn fn;
	void *arg;
	weft_future *fut;
	int64_t stamp;
};

/* A ring cell, 32 bytes: the sequence number of Vyukov's bounded MPMC queue (32 bits suffice:
 * positions are compared as a signed 32-bit difference, and a ring holds far fewer than 2^31
 * cells), flags, and the task; a task with a future keeps its stamp in the future. */
#define WEFT__CELL_FUT 1u
struct weft__cell {
	_Atomic uint32_t seq;
	uint32_t flags;
	weft_task_fn fn;
	void *arg;
	union {
		weft_future *fut;
		int64_t stamp;
	} u;
};

struct weft__ring {
	_Alignas(64) _Atomic uint64_t tail; /* enqueue position | WEFT__POOL_CLOSED */
	_Alignas(64) _Atomic uint64_t head; /* dequeue position */
	_Alignas(64) struct weft__cell cells[WEFT__POOL_RING_SIZE];
};

void weft__ring_init(struct weft__ring *r);
void weft__ring_close(struct weft__ring *r);
/* Pop up to `max` tasks with one CAS on head: the count, 0 if empty, -EBUSY as weft__ring_pop.
 */
int weft__ring_pop_batch(struct weft__ring *r, struct weft__task *out, unsigned max);

/* The hot operations are inline (the protocol is described in queue.c). */
#define WEFT__RING_MASK (WEFT__POOL_RING_SIZE - 1)

static inline void weft__cell_read(const struct weft__cell *c, struct weft__task *t)
{
	t->fn = c->fn;
	t->arg = c->arg;
	if (c->flags & WEFT__CELL_FUT) {
		t->fut = c->u.fut;
		t->stamp = 0; /* the caller reads the future's */
	} else {
		t->fut = NULL;
		t->stamp = c->u.stamp;
	}
}

/* 0, -EAGAIN (full) or -ESHUTDOWN (closed). The position is taken with a sequentially consistent
 * CAS: see "Parking" in pool.c. */
static inline int weft__ring_push(struct weft__ring *r, const struct weft__task *t)
{
	uint64_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
	struct weft__cell *c;
	for (;;) {
		if (weft__unlikely(pos & WEFT__POOL_CLOSED))
			return -ESHUTDOWN;
		c = &r->cells[pos & WEFT__RING_MASK];
		uint32_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		int32_t dif = (int32_t)(seq - (uint32_t)pos);
		if (weft__likely(dif == 0)) {
			if (atomic_compare_exchange_weak_explicit(&r->tail, &pos, pos + 1,
			                                          memory_order_seq_cst,
			                                          memory_order_relaxed))
				break;
		} else if (dif < 0) {
			return -EAGAIN;
		} else {
			pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
		}
	}
	c->fn = t->fn;
	c->arg = t->arg;
	if (t->fut) {
		c->flags = WEFT__CELL_FUT;
		c->u.fut = t->fut;
	} else {
		c->flags = 0;
		c->u.stamp = t->stamp;
	}
	atomic_store_explicit(&c->seq, (uint32_t)(pos + 1), memory_order_release);
	return 0;
}

/* 1 with the task in *t, 0 if empty, -EBUSY if a push has taken the head position but not yet
 * published its cell (the ring is not empty: retry in a moment). */
static inline int weft__ring_pop(struct weft__ring *r, struct weft__task *t)
{
	uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
	struct weft__cell *c;
	for (;;) {
		c = &r->cells[pos & WEFT__RING_MASK];
		uint32_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		int32_t dif = (int32_t)(seq - (uint32_t)(pos + 1));
		if (weft__likely(dif == 0)) {
			if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1,
			                                          memory_order_relaxed,
			                                          memory_order_relaxed))
				break;
		} else if (dif < 0) {
			uint64_t tail = atomic_load_explicit(&r->tail, memory_order_seq_cst) &
			                ~WEFT__POOL_CLOSED;
			if (tail == pos)
				return 0;
			/* A producer holds pos and is writing, or head moved on since we loaded
			 * it: look again before calling it busy. */
			uint64_t now = atomic_load_explicit(&r->head, memory_order_relaxed);
			if (now != pos) {
				pos = now;
				continue;
			}
			return -EBUSY;
		} else {
			pos = atomic_load_explicit(&r->head, memory_order_relaxed);
		}
	}
	weft__cell_read(c, t);
	atomic_store_explicit(&c->seq, (uint32_t)(pos + WEFT__POOL_RING_SIZE),
	                      memory_order_release);
	return 1;
}

/* Tasks in the ring (tail - head, head read first so it is never negative). */
static inline uint64_t weft__ring_depth(struct weft__ring *r)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_seq_cst);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_seq_cst) & ~WEFT__POOL_CLOSED;
	return tail > head ? tail - head : 0;
}

/* Pushes taken so far (the tail without the closed bit). */
static inline uint64_t weft__ring_pushed(struct weft__ring *r)
{
	return atomic_load_explicit(&r->tail, memory_order_relaxed) & ~WEFT__POOL_CLOSED;
}

/* The overflow queue: a growable circular array under a mutex, for an unbounded pool when the
 * rings are full (and for a bounded one whose bound exceeds the rings). `n` mirrors `count` so
 * that others can check it without the lock. */
struct weft__overflow {
	weft__mutex lock;
	struct weft__task *buf;
	size_t cap, head, count;
	size_t limit; /* most tasks it may hold (memory budget); 0: no limit */
	bool closed;
	_Atomic size_t n;        /* == count; stored with seq_cst under the lock */
	_Atomic uint64_t pushed; /* tasks pushed since creation */
};

void weft__overflow_init(struct weft__overflow *o, size_t limit);
void weft__overflow_destroy(struct weft__overflow *o);
/* 0, -ESHUTDOWN (closed), -ENOMEM (allocation failed, or `limit` reached). */
int weft__overflow_push(struct weft__overflow *o, const struct weft__task *t);
/* Pop the oldest task into *t: 1, or 0 if empty. */
int weft__overflow_pop(struct weft__overflow *o, struct weft__task *t);
/* Pop the oldest task into *t and move up to `max` more into ring `r` (a worker's own ring);
 * returns 1 + the number moved, or 0 if empty. */
int weft__overflow_take(struct weft__overflow *o, struct weft__task *t, struct weft__ring *r,
                        unsigned max);
void weft__overflow_close(struct weft__overflow *o);

/* Futexes (private to the process). wait: 0 when woken (or spuriously), -EAGAIN if *addr !=
 * val, -ETIMEDOUT at the absolute deadline (CLOCK_MONOTONIC ns; WEFT_FOREVER: none). */
int weft__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t deadline);
void weft__futex_wake(_Atomic uint32_t *addr, int n);

/* ---- workers and the pool (pool.c) ----------------------------------------------------------- */

/* A worker's stash: the rest of a batch it popped, which it runs next and which others may
 * steal. One word publishes it: generation (32 bits), next index (16), count (16). Only the
 * owner fills it, and only when it is empty (index == count): it writes the slots, then stores
 * the word with a new generation (release). Anyone takes an entry by reading the word
 * (acquire), reading the slot, and CAS-ing the index up; a refill in between changes the
 * generation, so the CAS fails and the read is discarded. Slots are relaxed atomics. */
struct weft__stash {
	_Atomic uint64_t word;
	_Atomic uintptr_t slot[WEFT__POOL_STASH][4];
};

struct weft__worker {
	struct weft__ring ring; /* first: 64-byte aligned */
	_Alignas(64) struct weft__stash stash;

	/* Written by this worker only (relaxed load + store), read by the tick. */
	_Alignas(64) _Atomic uint64_t completed; /* tasks it ran to completion */
	_Atomic uint64_t moved;                  /* tasks it moved from the overflow to its ring */
	_Atomic int busy;       /* 1 while it runs tasks, 0 while it looks for work */
	_Atomic int wait_depth; /* frames of its stack inside weft_future_wait on this pool */
	_Atomic bool live;      /* a thread runs in this slot (cleared by that thread as it ends) */
	_Atomic int stuck;      /* set by the tick: busy and nothing completed for a tick; cleared
	                           by the worker at its next completion */
	/* Recorded by this worker (atomic adds, uncontended), drained by the tick. */
	weft_hist *h_wait, *h_svc, *h_cpu;

	/* Parking: the futex word is the worker's own; the rest is under pool->idle_lock. */
	_Alignas(64) _Atomic uint32_t futex;
	bool on_idle; /* on the pool's idle list */
	bool token;   /* woken by a submitter: it owns one count of pool->nspinning */
	struct weft__worker *idle_prev, *idle_next;

	/* Lifecycle: under pool->ctl. */
	pthread_t thread;
	bool joinable;       /* thread must be joined */
	bool clear_spawning; /* its start ends the spawn in flight (pool->spawning) */
	int index;
	weft_pool *pool;

	/* Private to the worker's thread. */
	int32_t svc_left; /* untimed tasks before the next timed one */
	int32_t cpu_left; /* timed tasks before the next CPU-timed one */
	int32_t ovf_left; /* tasks before the next look at the overflow queue */
	double s_est;     /* EWMA of its timed service times, ns */
	uint64_t done;    /* its copy of `completed` */
};

struct weft__pool_metrics;
struct weft__tick;

struct weft_pool {
	/* Configuration, fixed at create. */
	char name[WEFT__POOL_NAME_MAX + 1];
	int on_full;
	size_t queue_max; /* 0: unbounded */
	int64_t block_timeout, idle_timeout, tick, window, wait_target, stall_after;
	size_t memory_budget;
	int runaway_ticks;
	weft_pool_verdict_fn on_verdict;
	void *on_verdict_arg;
	weft_metrics *metrics;
	double cpu_capacity; /* the CPU budget's fractional capacity at create */
	int cpu_budget;      /* and its integer budget: the default thread count */
	uint32_t fork_gen;   /* the process's fork generation at create (pool.c, "fork") */

	/* Read-mostly. */
	_Alignas(64) struct weft__worker *_Atomic *slots; /* WEFT__POOL_MAX_THREADS entries */
	_Atomic int nslots;     /* slots [0, nslots) exist (published with release) */
	_Atomic int ntarget;    /* external submits go to the rings of slots [0, ntarget) */
	_Atomic uint32_t nlive; /* threads running; futex word for shutdown */
	_Atomic int min_threads, max_threads;
	_Atomic int closing;     /* set after every ring and the overflow queue are closed */
	_Atomic int tiny;        /* the workers' tasks are tiny: wake lazily (pool.c) */
	_Atomic int64_t spin_ns; /* how long an idle worker spins before it parks (the tick) */
	int64_t spin_fixed;      /* weft_pool_opts.spin: spin_ns, never halved; 0: adaptive */
	_Atomic int cancel_all;  /* shutdown CANCEL: popped tasks are cancelled, not run */

	/* The spinner's state (pool.c, "The spin"): spin_beat is written by the spinner every few
	 * looks and read by submitters that rely on it; spin_off_until and spin_backoff are
	 * written when a spinner finds it was preempted. */
	_Alignas(64) _Atomic int64_t spin_beat; /* weft_now() at the spinner's latest look */
	_Atomic int64_t spin_off_until;         /* no spinning before this time (weft_now) */
	_Atomic int64_t spin_backoff;           /* the latest back-off */
	_Atomic int64_t spin_preempted_at;      /* when a spinner last found it was preempted */
	_Atomic int spin_decay;                 /* halvings of the next spin (0..DECAY_MAX) */

	/* Written on every park and wake. */
	_Alignas(64) _Atomic int nparked;  /* workers on the idle list */
	_Atomic int nspinning;             /* workers looking for work before they park */
	_Alignas(64) _Atomic int spawning; /* a thread start is in flight */

	/* The bound of a bounded queue. */
	_Alignas(64) _Atomic size_t reserved; /* tasks admitted and not yet popped */
	_Atomic int dropping;      /* DROP_OLDEST submits between their look at `stopping` and their
	                              push (pool.c, "DROP_OLDEST and shutdown") */
	_Atomic int stopping;      /* set by shutdown before it closes the queues */
	_Atomic int room_waiters;  /* submitters blocked for room (BLOCK) */
	_Atomic uint32_t room_seq; /* futex: bumped when room may have come */

	/* Slow-path counters. */
	_Alignas(64) _Atomic uint64_t rejected; /* offered and refused (FAIL, timeout, memory) */
	_Atomic uint64_t caller_ran;            /* run by the submitter (CALLER_RUNS, BLOCK) */
	_Atomic uint64_t ext_completed;         /* completed outside the workers */
	_Atomic uint64_t cancelled;             /* cancelled, dropped, or cancelled at shutdown */

	struct weft__overflow ovf;

	weft__mutex ctl;       /* WEFT__RANK_POOL: slots, thread starts and joins, bounds */
	weft__mutex idle_lock; /* WEFT__RANK_POOL_IDLE: the idle list */
	struct weft__worker *idle_head;
	struct weft__future_arena *arena;
	bool locks_ready;

	/* The tick (verdict.c). */
	pthread_t tick_thread;
	bool tick_started;
	_Atomic uint32_t tick_stop;
	struct weft__tick *tk;
	struct weft__pool_metrics *pm;
	weft__mutex verdict_lock; /* WEFT__RANK_POOL_VERDICT */
	weft_pool_verdict verdict;
};

/* Start a worker if work is queued, no worker is idle, the pool is below max and no start is in
 * flight (the tick calls it too). */
void weft__pool_maybe_spawn(weft_pool *p);
/* Tasks in a stash. */
static inline unsigned weft__stash_count(struct weft__stash *s)
{
	uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
	unsigned i = (unsigned)(w >> 16) & 0xffff, n = (unsigned)w & 0xffff;
	return n > i ? n - i : 0;
}

/* Wake a parked worker if nobody spins (the tick, for a stuck worker's queue). */
void weft__pool_wake(weft_pool *p);

/* Tasks queued (rings, stashes and overflow). */
size_t weft__pool_depth(weft_pool *p);
/* Tests: workers pop batches (and keep a stash) whatever their tasks' service time. */
extern _Atomic int weft__pool_force_batch;
/* Futures on the pool's free list (for tests). */
size_t weft__pool_free_futures(weft_pool *p);
/* The word a thread blocked in weft_future_wait on f sleeps on (its futex; for tests). */
const void *weft__future_word(const weft_future *f);

/* ---- the tick (verdict.c) -------------------------------------------------------------------- */

/* Allocate the tick's state and register the pool's series: 0, -ENOMEM, -EEXIST, -ENOSPC. */
int weft__pool_measure_init(weft_pool *p);
/* Start the tick thread: 0 or -EAGAIN/-ENOMEM. */
int weft__pool_tick_start(weft_pool *p);
/* Stop and join it (no-op if not started). */
void weft__pool_tick_stop(weft_pool *p);
/* Run one tick now on the calling thread (for tests, after weft__pool_tick_stop: the tick's
 * state belongs to one thread at a time). */
void weft__pool_tick_now(weft_pool *p);
/* Remove the series and free the tick's state (after the workers are gone). */
void weft__pool_measure_fini(weft_pool *p);
/* True on the pool's tick thread (in on_verdict); the tick thread marks itself. */
bool weft__pool_on_tick_thread(const weft_pool *p);
void weft__pool_set_tick_thread(const weft_pool *p);

#endif
