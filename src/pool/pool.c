/* pool.c: the executor thread pool: workers that grow and retire, submit with its rejection
 * policies, futures, same-pool waits that help instead of blocking, shutdown, resize.
 *
 * Layout. A pool has up to WEFT__POOL_MAX_THREADS slots; a slot is a struct weft__worker with its
 * own ring (queue.c), allocated the first time a thread starts in it and kept until destroy, so
 * any thread may read any slot in [0, nslots) without a lock. A thread that retires leaves its
 * slot (and whatever its ring still holds: the others steal it); the next start takes the lowest
 * free slot. Thread names are "NAME-SLOT".
 *
 * Where tasks go. An external submitting thread has a home ring (handed out round-robin to
 * threads, modulo the rings of slots [0, ntarget), ntarget being one past the highest live
 * slot), and pushes there; when it is full it tries the next ring, yields the CPU once (the
 * workers are behind, maybe because this thread holds the CPU they need), tries its ring again,
 * then falls back to the overflow queue. A worker submitting to its own pool pushes into its own
 * ring. A worker looks for work in this order: its stash, the overflow queue every 61 calls,
 * its ring, the overflow queue (one task plus a batch of up to 32 moved into its ring), the
 * other rings starting after its own slot, and, in a last look before it parks, the other
 * workers' stashes.
 *
 * Batches and the stash. While a worker's tasks are tiny (its running mean below 2 us), it pops
 * up to 16 tasks with one CAS (weft__ring_pop_batch), runs the first and keeps the rest in its
 * stash (internal/pool.h), which others can steal: a task behind one that blocks is not lost.
 * Longer tasks are popped one at a time. The lazy rule, for tiny tasks only: a worker leaves a
 * busy worker's ring alone while it holds fewer than 32 tasks (a second worker on a short queue
 * of tiny tasks only adds contention, on the ring and on whatever the tasks share), unless
 * the tick found that worker stuck (busy, nothing completed for a tick); and a submitter that
 * pushed to a busy worker's ring wakes a parked worker only when that ring holds 32 tasks
 * (looked at every 16th submit). The owner of a ring never parks while its ring or stash holds
 * anything, so the rule delays tasks but never strands them; a stuck owner's tasks are taken
 * within a tick or two.
 *
 * The bound. A bounded pool (queue_max > 0) admits a task by raising `reserved` with a CAS loop
 * that never passes queue_max, before the push; the pop that takes the task out lowers it. So
 * the number of queued tasks never exceeds queue_max (exact, not approximate); a task that is
 * cancelled or run inline by a waiter keeps its place until a worker pops its cell. Only a
 * bounded pool pays that shared counter. An unbounded pool is capped by its memory budget: the
 * rings are preallocated, and the overflow queue may hold memory_budget / 32 tasks.
 *
 * Parking (no missed wake-ups). Counts: nspinning (workers looking for work before they park),
 * nparked (workers on the idle list). Every operation below is seq_cst.
 *   Submitter: 1. push (CAS on a ring's tail, or the overflow count stored under its lock);
 *     2. load nparked; if 0, every worker is awake: done (if also nspinning == 0, every worker
 *        is busy: maybe start a thread); 3. load nspinning; if > 0, a spinner will find the task:
 *        done, unless the submit was stamped and spin_beat (the time of the spinners' latest
 *        look) is SPIN_STALE or more older than the stamp: then every spinner is off the CPU,
 *        and the submitter adds a token (nspinning + 1) and wakes the most recently parked
 *        worker with it (given back if nobody is parked); 4. CAS nspinning 0 -> 1 (a token:
 *        only one submitter wakes at a time); the winner pops the most recently parked worker
 *        from the idle list, marks it token-holder and futex-wakes it; with nobody on the list
 *        it gives the token back and maybe starts a thread.
 *   Worker going idle: 1. (spinning) searches every queue for a while; 2. gives up: decrement
 *     nspinning; 3. under the idle lock, puts itself on the idle list and increments nparked;
 *     4. rescans every queue (tail != head, overflow count), closing and the bounds; if there is
 *     anything, it takes itself off the list (or finds it was already woken) and goes back to
 *     work; 5. futex-waits on its own word with the idle timeout.
 *   Either the push comes before step 3's increment in the single total order, and the rescan
 *   of step 4 sees it, or the increment comes first and the submitter's load of nparked sees
 *   it; a spinner that the submitter relied on in its step 3 decrements nspinning (2) only after
 *   that load, so its rescan sees the push too. A woken worker holds the token: it spins, and
 *   when it finds work and was the last spinner while others are parked and work remains, it
 *   wakes one more (work spreads one worker at a time, a submit never makes more than one
 *   futex call, and a busy pool makes none). The lazy rule above skips step 4's wake only for
 *   a ring whose owner is busy: the owner's own rescan, or its next look at its ring, finds
 *   the task. The stale-spinner wake of step 3 only adds wake-ups and tokens (each token is
 *   given back once, by stop_spinning or at the end of the spin, like any other), so the
 *   argument above does not depend on it: it bounds how long a task waits for a spinner that
 *   the scheduler took off the CPU; it is not needed for the wake-up to happen.
 *   The spin (step 1) lasts pool->spin_ns: a fixed spin (weft_pool_opts.spin, the caller's trade of
 *   CPU for latency) as it is, never halved; otherwise set by the tick: SPIN_LONG (25 us) while the
 *   mean gap between arrivals is at most half of it, else SPIN_SHORT (4 us); and each spin that
 *   finds nothing halves the next one (down to 1/8, spin_decay), a spin that finds work restoring
 *   the full length. The cost model: a park and a futex wake cost the worker ~2 us of CPU and the
 *   task ~2 us of latency here (a futex-woken thread: 1.8 us of CPU per cycle, p50 wake-up 1.5 us),
 *   while a spin costs all of its length: one that bridges a 100 us gap costs 100 us of CPU to save
 *   ~1 us (the previous rule, twice the mean gap up to 300 us, did that at 10,000 tasks/s: ~100 us
 *   of CPU per task). So a worker spins long only while tasks come close together, where a ready
 *   worker also spares the submitter a futex call per task (the throughput case), and otherwise
 *   parks after a short look. A timer cannot wake it just before the next arrival any cheaper: a
 *   timed sleep and its wake-up cost ~20 us of CPU on this VM. At most one worker starts a spin at
 *   a time (woken token-holders spin too). A spinner pauses between looks and never calls
 *   sched_yield: measured on 2 CPUs with two busy loops, a spinner that yielded every 32 looks ran
 *   ~10 us, then waited 4-8 ms (a time slice) for the CPU while nspinning > 0 kept submitters from
 *   waking anyone: p50 submit-to-start ~1 ms. Instead a spin is bounded by the CPU budget: the
 *   spinner reads the clock every few looks (spin_beat, for step 3), and a gap over SPIN_PREEMPTED
 *   (200 us) between two reads means it was off the CPU for a time slice, so the CPUs are
 *   oversubscribed: it stops, and nobody spins for a back-off (10 ms, doubling up to 2 s while such
 *   preemptions keep coming, back to 10 ms after a quiet while; spin_preempted);
 *   meanwhile tasks go to woken workers, which the scheduler runs soon after their wake-up (a
 *   sleeper's wake-up preempts a CPU hog, a spinner that has used its share does not).
 *   Measured (2 CPUs, 10,000 tasks/s): with two busy loops, most gaps over 30 us were 1-8 ms
 *   (time slices); with other processes' short bursts, ~50 per second were 30-100 us (step 3's
 *   stale-spinner wake covers those without a back-off) and 0-5 per second longer. A pool
 *   whose single look takes over 200 us (hundreds of cold rings) may back off for nothing: it
 *   then wakes workers like a plain pool.
 *
 * Growth and retirement. A thread is started (by the submitter, or the tick) when a task was
 * queued, no worker is parked or spinning, the pool is below max, and no start is in flight
 * (`spawning`, cleared by the new thread when it runs). A parked worker whose idle_timeout
 * passes retires if the pool has more than min threads; a worker retires after a task when the
 * pool has more than max (after a resize). Starts, retirements and joins take the control lock
 * (WEFT__RANK_POOL); a retired thread is joined by the next start in its slot, by shutdown or by
 * destroy.
 *
 * DROP_OLDEST and shutdown. A submit to a full DROP_OLDEST pool pops an old task, cancels it,
 * and pushes its own; a shutdown that closed the queues in between would refuse the new task
 * after the old one was dropped: under DRAIN, an accepted task cancelled for nothing. So the
 * two exclude each other with a Dekker pair, all four steps seq_cst: the dropper 1. increments
 * `dropping`, 2. loads `stopping`: if set, it decrements and returns -ESHUTDOWN, dropping
 * nothing; else 3. pops, cancels, pushes, and 4. decrements. Shutdown 1'. stores stopping = 1,
 * 2'. waits (sched_yield) until `dropping` reads 0, and only then closes the queues. If 2 reads
 * 0, it precedes 1' in the total order, so 1 precedes 2', which sees the dropper until its step
 * 4: its push lands before the close. A dropper holds nothing while counted and never waits
 * for shutdown, so the wait is a pop, a cancel and a push long. Only submits that find a
 * DROP_OLDEST pool full pay the two atomic operations.
 *
 * Futures. State word: PENDING -> RUNNING -> DONE, or PENDING -> CANCELLED; each edge is a CAS
 * (weft_future_cancel, a worker's pop, a waiter's inline run), so exactly one party runs or
 * cancels a task. Bit 2 (WAITERS) is set by a waiter before it futex-waits on the word; the
 * party that makes the state final exchanges the word and wakes all if the bit was set. The
 * result is written before that exchange (release) and read after an acquire load. A future
 * holds two references: the caller's (weft_future_release) and the queue's (dropped when the
 * task is run, skipped or cancelled); the last one puts it on the pool's free list (under a
 * mutex, WEFT__RANK_POOL_FUTURES, at most 1024 kept). The free list lives in a small arena that
 * outlives the pool while futures are held: a future released after weft_pool_destroy is freed
 * and the arena with the last one.
 *
 * Waiting on a future of one's own pool (from a task). The waiting worker never just blocks:
 * while the future is PENDING it claims it and runs it inline; while it runs elsewhere, the
 * worker runs other queued tasks; with nothing to run it sleeps on the future for 20 us doubling
 * up to 5 ms, then looks again. Nesting is capped to bound the stack: other tasks are helped up
 * to 16 nested frames, the awaited task itself is run inline up to 128 (a chain of same-pool
 * waits deeper than that can deadlock a pool whose every worker is that deep); past the caps
 * the worker only sleeps. While inside such a wait the worker's wait_depth is > 0: the verdict
 * calls a stall where every worker is so waiting a same-pool deadlock.
 *
 * Shutdown. Under the control lock: close every ring (tail bit) and the overflow queue, then set
 * `closing`, and, for CANCEL, `cancel_all`; wake every parked worker and every blocked submitter.
 * A submit either pushed before its ring closed (the task is in tail - head, so it runs or is
 * cancelled) or fails with -ESHUTDOWN. Workers exit when closing is set and every queue is
 * empty; with CANCEL the caller also pops every queue itself and cancels what it finds. Then it
 * waits (futex on nlive) for the threads to end until the deadline, and joins them.
 *
 * fork. The first create registers a pthread_atfork child handler that bumps a process-wide
 * fork generation (and clears the forking thread's worker and tick marks: in the child it is
 * neither). A pool and each of its futures keep the generation they were made in; a public
 * function called on one from an older generation is in the child of a fork, where none of the
 * pool's threads exist and any of its locks may be held forever: it returns -ESHUTDOWN before
 * touching a lock or waiting (a future final at the fork still gives its result), and destroy
 * frees memory without stopping or joining threads, leaving the futures' arena (lock) to leak.
 * The check is one relaxed load of a global that only a fork changes, and a compare.
 *
 * Measurements (compiled out by WEFT_POOL_NO_MEASURE: then nothing tells tiny tasks from long
 * ones, so workers always batch and the lazy rule is off). Per task, on the worker: one relaxed
 * load + store of its completion count. Timing is sampled:
 *   - submit stamps: a submitting thread reads the clock for one submit in `period`; period
 *     starts at 1, doubles (up to 1024) when the previous stamp was less than 50 us before, and
 *     halves when it was more than 1 ms before. A slow submitter stamps every task; one that
 *     submits millions per second reads the clock about every 30 us. A stamped task's queue wait
 *     (start - stamp) is recorded, and it is timed;
 *   - service time: a worker times every task while its running mean of timed tasks (EWMA,
 *     weight 1/8, starting at 4 us) is at least 10 us, else one task in 64 plus every stamped
 *     one (two clock reads, about 45 ns, amortised);
 *   - CPU time (a system call, about 250 ns here): every timed task while the mean is at least
 *     50 us, else one timed task in 64.
 * Histograms are per worker (atomic adds on lines no other thread writes) and drained by the
 * tick into the registry's. Arrivals need no counter on the submit path: they are the sum of the
 * rings' tails, the overflow queue's push count, the rejected and the caller-run tasks, minus
 * the tasks moved from the overflow into a ring.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../internal/alloc.h"
#include "../internal/pool.h"

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release
#define ACQ_REL memory_order_acq_rel
#define SEQ_CST memory_order_seq_cst

#define DEFAULT_IDLE_TIMEOUT WEFT_SEC(10)
#define DEFAULT_MEMORY_BUDGET ((size_t)1 << 30)
#define OVF_BATCH 32
#define OVF_EVERY 61
#define HELP_MAX 16    /* nesting of helped (other) tasks in a same-pool wait */
#define INLINE_MAX 128 /* nesting of inline runs of the awaited task itself */
#define FREE_FUTURES_MAX 1024
#define SPIN_MAX 1 /* workers starting a spin at once */
#define STAMP_PERIOD_MAX 1024
#define STAMP_FAST_NS WEFT_USEC(50)
#define STAMP_SLOW_NS WEFT_MSEC(1)
#define TIME_ALL_NS 10000.0 /* time every task when the mean is above this */
#define CPU_ALL_NS 50000.0  /* and read the CPU clock for every timed one above this */
#define SAMPLE_EVERY 64
#define TINY_NS 2000.0 /* below this mean, workers pop and steal in batches */
#define STEAL_MIN 32   /* tiny tasks: the queue a busy worker keeps to itself */
#define LAZY_CHECK 16  /* tiny tasks: a submitter checks the queue every 16 submits */
#ifndef WEFT_POOL_NO_MEASURE
#define LAZY 1
#else
#define LAZY 0 /* nothing tells tiny tasks from long ones: wake and steal eagerly */
#endif

/* ---- per-thread state ------------------------------------------------------------------------ */

struct tls {
	struct weft__worker *worker; /* set on a pool's worker threads */
	const weft_pool *tick_pool;  /* set on a pool's tick thread */
	uint32_t home;               /* this thread's ring number for external submits (+1) */
	int home_n;                  /* ntarget when home_idx was computed */
	int home_idx;                /* home modulo home_n */
	int32_t stamp_left;          /* submits before the next stamp */
	int32_t stamp_period;
	int64_t last_stamp;
	int help_depth; /* nested inline runs and helped tasks on this thread */
	int lazy_left;  /* submits before the next look at the queue (tiny tasks) */
};
static __thread struct tls tls __attribute__((tls_model("initial-exec")));
/* Home rings are handed out round-robin to submitting threads, process-wide. */
static _Atomic uint32_t next_home;

/* ---- fork ------------------------------------------------------------------------------------ */

/* The process's fork generation: bumped in the child of every fork by the handler registered
 * with the first pool. A pool or future whose generation differs was made by an ancestor
 * process: its threads do not exist here, and its locks may be held forever by threads that
 * were running at the fork. Read relaxed: it changes only in a child, before any other thread
 * of the child exists. Every submit reads it, so it has a cache line of its own, never written
 * in a running process: sharing one with some hot variable of the program (the bench's task
 * counter, as it happened) made each submit a cache miss and halved the throughput. */
static struct {
	_Alignas(64) _Atomic uint32_t gen;
	char pad[64 - sizeof(uint32_t)];
} fork_line;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_result;

/* Runs in the child, on its only thread (the one that called fork): that thread is no worker
 * and no tick thread here, whatever it was in the parent. */
static void atfork_child(void)
{
	atomic_fetch_add_explicit(&fork_line.gen, 1, memory_order_relaxed);
	tls.worker = NULL;
	tls.tick_pool = NULL;
	tls.help_depth = 0;
}

static void atfork_register(void)
{
	if (pthread_atfork(NULL, NULL, atfork_child) != 0)
		atfork_result = -ENOMEM; /* its only error */
}

static inline bool from_parent(uint32_t gen)
{
	return weft__unlikely(gen != atomic_load_explicit(&fork_line.gen, memory_order_relaxed));
}

bool weft__pool_on_tick_thread(const weft_pool *p)
{
	return tls.tick_pool == p;
}

void weft__pool_set_tick_thread(const weft_pool *p)
{
	tls.tick_pool = p;
}

static inline bool own_worker(const weft_pool *p)
{
	return tls.worker && tls.worker->pool == p;
}

/* Relaxed add on a counter only this thread writes: a load and a store, no locked instruction.
 */
static inline void local_add(_Atomic uint64_t *a, uint64_t n)
{
	atomic_store_explicit(a, atomic_load_explicit(a, RELAXED) + n, RELAXED);
}

static inline struct weft__worker *slot(weft_pool *p, int i)
{
	return atomic_load_explicit(&p->slots[i], ACQUIRE);
}

/* ---- futures --------------------------------------------------------------------------------- */

enum {
	F_PENDING = 0,
	F_RUNNING = 1,
	F_DONE = 2,
	F_CANCELLED = 3,
	F_STATE = 3,
	F_WAITERS = 4,
};

struct weft_future {
	_Atomic uint32_t state;
	_Atomic uint32_t refs;
	uint32_t fork_gen;     /* its pool's */
	const weft_pool *pool; /* identity only: compared, never dereferenced */
	struct weft__future_arena *arena;
	weft_task_fn fn;
	void *arg;
	int64_t stamp;
	void *result;
	weft_future *next_free;
};

struct weft__future_arena {
	weft__mutex lock;
	weft_future *free_list;
	size_t nfree;
	size_t outstanding; /* futures handed out and not yet freed */
	bool orphan;        /* the pool is gone: free futures instead of keeping them */
};

static void arena_free(struct weft__future_arena *a)
{
	while (a->free_list) {
		weft_future *f = a->free_list;
		a->free_list = f->next_free;
		free(f);
	}
	weft__mutex_destroy(&a->lock);
	free(a);
}

/* The pool lets go of its arena: it is freed now, or with the last future. */
static void arena_orphan(struct weft__future_arena *a)
{
	if (!a)
		return;
	weft__mutex_lock(&a->lock);
	a->orphan = true;
	bool gone = a->outstanding == 0;
	weft__mutex_unlock(&a->lock);
	if (gone)
		arena_free(a);
}

static weft_future *future_alloc(weft_pool *p, weft_task_fn fn, void *arg)
{
	struct weft__future_arena *a = p->arena;
	weft__mutex_lock(&a->lock);
	weft_future *f = a->free_list;
	if (f) {
		a->free_list = f->next_free;
		a->nfree--;
		a->outstanding++;
	}
	weft__mutex_unlock(&a->lock);
	if (!f) {
		f = weft__malloc(sizeof(*f));
		if (!f)
			return NULL;
		weft__mutex_lock(&a->lock);
		a->outstanding++;
		weft__mutex_unlock(&a->lock);
	}
	atomic_store_explicit(&f->state, F_PENDING, RELAXED);
	atomic_store_explicit(&f->refs, 2, RELAXED); /* the caller's and the queue's */
	f->fork_gen = p->fork_gen;
	f->pool = p;
	f->arena = a;
	f->fn = fn;
	f->arg = arg;
	f->stamp = 0;
	f->result = NULL;
	f->next_free = NULL;
	return f;
}

static void future_unref(weft_future *f)
{
	if (atomic_fetch_sub_explicit(&f->refs, 1, ACQ_REL) != 1)
		return;
	struct weft__future_arena *a = f->arena;
	weft__mutex_lock(&a->lock);
	a->outstanding--;
	bool keep = !a->orphan && a->nfree < FREE_FUTURES_MAX;
	if (keep) {
		f->next_free = a->free_list;
		a->free_list = f;
		a->nfree++;
	}
	bool gone = a->orphan && a->outstanding == 0;
	weft__mutex_unlock(&a->lock);
	if (!keep)
		free(f);
	if (gone)
		arena_free(a);
}

/* PENDING -> RUNNING: the caller now runs the task. */
static bool future_claim(weft_future *f)
{
	uint32_t s = atomic_load_explicit(&f->state, RELAXED);
	while ((s & F_STATE) == F_PENDING) {
		if (atomic_compare_exchange_weak_explicit(
		            &f->state, &s, F_RUNNING | (s & F_WAITERS), ACQ_REL, RELAXED))
			return true;
	}
	return false;
}

/* Make the state final and wake the waiters. */
static void future_finish(weft_future *f, uint32_t final)
{
	uint32_t old = atomic_exchange_explicit(&f->state, final, ACQ_REL);
	if (old & F_WAITERS)
		weft__futex_wake(&f->state, INT_MAX);
}

/* PENDING -> CANCELLED: true if this call cancelled it. */
static bool future_cancel(weft_future *f)
{
	uint32_t s = atomic_load_explicit(&f->state, RELAXED);
	while ((s & F_STATE) == F_PENDING) {
		if (atomic_compare_exchange_weak_explicit(&f->state, &s, F_CANCELLED, ACQ_REL,
		                                          RELAXED)) {
			if (s & F_WAITERS)
				weft__futex_wake(&f->state, INT_MAX);
			return true;
		}
	}
	return false;
}

/* Sleep until the state word changes from `s` or the deadline passes. */
static int future_sleep(weft_future *f, uint32_t s, int64_t deadline)
{
	if (!(s & F_WAITERS)) {
		if (!atomic_compare_exchange_strong_explicit(&f->state, &s, s | F_WAITERS, RELAXED,
		                                             RELAXED))
			return 0; /* changed: look again */
		s |= F_WAITERS;
	}
	return weft__futex_wait(&f->state, s, deadline);
}

/* ---- measurements ---------------------------------------------------------------------------- */

#ifndef WEFT_POOL_NO_MEASURE
/* The submit-side sample: weft_now() for one submit in `period` (see the head comment), else 0.
 */
static inline int64_t take_stamp(void)
{
	if (weft__likely(--tls.stamp_left > 0))
		return 0;
	int64_t now = weft_now();
	int32_t period = tls.stamp_period > 0 ? tls.stamp_period : 1;
	int64_t gap = now - tls.last_stamp;
	if (gap < STAMP_FAST_NS && period < STAMP_PERIOD_MAX)
		period *= 2;
	else if (gap > STAMP_SLOW_NS && period > 1)
		period /= 2;
	tls.stamp_period = period;
	tls.stamp_left = period;
	tls.last_stamp = now;
	return now;
}
#else
static inline int64_t take_stamp(void)
{
	return 0;
}
#endif

/* Run fn(arg) on worker w (stamp: the submit's, or 0), with the sampled measurements; finish the
 * future if there is one (the caller has claimed it). */
static void execute(struct weft__worker *w, weft_task_fn fn, void *arg, weft_future *f,
                    int64_t stamp)
{
#ifndef WEFT_POOL_NO_MEASURE
	bool timed = stamp != 0;
	if (!timed) {
		if (w->s_est >= TIME_ALL_NS) {
			timed = true;
		} else if (--w->svc_left <= 0) {
			w->svc_left = SAMPLE_EVERY;
			timed = true;
		}
	}
	int64_t t0 = 0, c0 = -1;
	if (timed) {
		t0 = weft_now();
		if (stamp)
			weft_hist_record(w->h_wait, t0 - stamp);
		if (w->s_est >= CPU_ALL_NS || --w->cpu_left <= 0) {
			w->cpu_left = SAMPLE_EVERY;
			c0 = weft_thread_cpu_time();
		}
	}
	void *res = fn(arg);
	if (timed) {
		int64_t d = weft_now() - t0;
		weft_hist_record(w->h_svc, d);
		w->s_est += ((double)d - w->s_est) / 8;
		if (c0 >= 0)
			weft_hist_record(w->h_cpu, weft_thread_cpu_time() - c0);
		int tiny = w->s_est < TINY_NS;
		if (weft__unlikely(atomic_load_explicit(&w->pool->tiny, RELAXED) != tiny))
			atomic_store_explicit(&w->pool->tiny, tiny, RELAXED);
	}
	w->done++;
	atomic_store_explicit(&w->completed, w->done, RELAXED);
	if (weft__unlikely(atomic_load_explicit(&w->stuck, RELAXED)))
		atomic_store_explicit(&w->stuck, 0, RELAXED);
#else
	(void)w;
	(void)stamp;
	void *res = fn(arg);
#endif
	if (f) {
		f->result = res;
		future_finish(f, F_DONE);
	}
}

/* ---- the bound ------------------------------------------------------------------------------- */

static bool reserve(weft_pool *p)
{
	size_t n = atomic_load_explicit(&p->reserved, SEQ_CST);
	do {
		if (n >= p->queue_max)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&p->reserved, &n, n + 1, SEQ_CST, SEQ_CST));
	return true;
}

static void room_wake(weft_pool *p)
{
	atomic_fetch_add_explicit(&p->room_seq, 1, SEQ_CST);
	weft__futex_wake(&p->room_seq, INT_MAX);
}

/* A task left a bounded queue. BLOCK waiters: 1. a waiter increments room_waiters, 2. loads
 * room_seq, 3. tries to reserve, 4. futex-waits on room_seq; here 1'. reserved is lowered, 2'.
 * room_waiters loaded, 3'. room_seq bumped and waiters woken. If 3 fails, 1' follows it in the
 * total order, so 2' sees the waiter and 3' changes room_seq after 2: the wait returns. */
static inline void unreserve(weft_pool *p)
{
	if (!p->queue_max)
		return;
	atomic_fetch_sub_explicit(&p->reserved, 1, SEQ_CST);
	if (atomic_load_explicit(&p->room_waiters, SEQ_CST) > 0)
		room_wake(p);
}

/* ---- queues ---------------------------------------------------------------------------------- */

size_t weft__pool_depth(weft_pool *p)
{
	size_t d = atomic_load_explicit(&p->ovf.n, SEQ_CST);
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	for (int i = 0; i < n; i++)
		d += (size_t)weft__ring_depth(&slot(p, i)->ring) +
		     weft__stash_count(&slot(p, i)->stash);
	return d;
}

static bool any_work(weft_pool *p)
{
	if (atomic_load_explicit(&p->ovf.n, SEQ_CST))
		return true;
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	for (int i = 0; i < n; i++) {
		if (weft__ring_depth(&slot(p, i)->ring) || weft__stash_count(&slot(p, i)->stash))
			return true;
	}
	return false;
}

/* Push a task (the bound, if any, already reserved); *ret_ring: the ring it went to, or NULL.
 */
static int enqueue(weft_pool *p, const struct weft__task *t, struct weft__ring **ret_ring)
{
	int r;
	*ret_ring = NULL;
	if (own_worker(p)) {
		*ret_ring = &tls.worker->ring;
		r = weft__ring_push(*ret_ring, t);
		if (r != -EAGAIN)
			return r;
		*ret_ring = NULL;
		return weft__overflow_push(&p->ovf, t);
	}
	{
		int n = atomic_load_explicit(&p->ntarget, ACQUIRE); /* slots below it are set */
		if (weft__unlikely(tls.home_n != n)) {
			if (!tls.home)
				tls.home = atomic_fetch_add_explicit(&next_home, 1, RELAXED) + 1;
			tls.home_idx = (int)((tls.home - 1) % (uint32_t)n);
			tls.home_n = n;
		}
		int i = tls.home_idx;
		*ret_ring = &slot(p, i)->ring;
		r = weft__ring_push(*ret_ring, t);
		if (r != -EAGAIN)
			return r;
		if (n > 1) {
			i = i + 1 < n ? i + 1 : 0;
			*ret_ring = &slot(p, i)->ring;
			r = weft__ring_push(*ret_ring, t);
			if (r != -EAGAIN)
				return r;
		}
		/* Full: the workers are behind, perhaps because this thread holds the CPU they
		 * need. Let them run once before falling back to the overflow queue. */
		sched_yield();
		*ret_ring = &slot(p, tls.home_idx < n ? tls.home_idx : 0)->ring;
		r = weft__ring_push(*ret_ring, t);
		if (r != -EAGAIN)
			return r;
		*ret_ring = NULL;
	}
	return weft__overflow_push(&p->ovf, t);
}

/* Take the next task of a stash (any thread): true with *t. */
static bool stash_take(struct weft__stash *s, struct weft__task *t)
{
	uint64_t w = atomic_load_explicit(&s->word, ACQUIRE);
	for (;;) {
		unsigned i = (unsigned)(w >> 16) & 0xffff, n = (unsigned)w & 0xffff;
		if (i >= n)
			return false;
		t->fn = (weft_task_fn)atomic_load_explicit(&s->slot[i][0], RELAXED);
		t->arg = (void *)atomic_load_explicit(&s->slot[i][1], RELAXED);
		t->fut = (weft_future *)atomic_load_explicit(&s->slot[i][2], RELAXED);
		t->stamp = (int64_t)atomic_load_explicit(&s->slot[i][3], RELAXED);
		if (atomic_compare_exchange_weak_explicit(&s->word, &w, w + ((uint64_t)1 << 16),
		                                          ACQ_REL, ACQUIRE))
			return true;
	}
}

/* Put m tasks (1 .. WEFT__POOL_STASH) in the owner's empty stash. */
static void stash_fill(struct weft__stash *s, const struct weft__task *t, unsigned m)
{
	for (unsigned i = 0; i < m; i++) {
		atomic_store_explicit(&s->slot[i][0], (uintptr_t)t[i].fn, RELAXED);
		atomic_store_explicit(&s->slot[i][1], (uintptr_t)t[i].arg, RELAXED);
		atomic_store_explicit(&s->slot[i][2], (uintptr_t)t[i].fut, RELAXED);
		atomic_store_explicit(&s->slot[i][3], (uintptr_t)t[i].stamp, RELAXED);
	}
	uint64_t gen = (atomic_load_explicit(&s->word, RELAXED) >> 32) + 1;
	atomic_store_explicit(&s->word, (gen << 32) | m, RELEASE);
}

enum find_mode {
	FIND_QUICK, /* the loop of a busy or spinning worker */
	FIND_DEEP,  /* before parking: the other workers' stashes too */
	FIND_ALL,   /* shutdown and same-pool waits: anything, the lazy rule off */
};

/* The lazy rule: while w's tasks are tiny, it leaves a busy owner its short queue (a second
 * worker there only adds contention: the owner never parks while its own ring or stash holds
 * anything, so the tasks run), unless the tick found the owner stuck (busy and nothing
 * completed for a tick). A ring whose thread has ended (not live) is never left to it. */
static inline bool leave_to_owner(struct weft__worker *w, struct weft__worker *v,
                                  enum find_mode mode, bool stash)
{
	return LAZY && mode != FIND_ALL && w->s_est < TINY_NS &&
	       atomic_load_explicit(&v->live, ACQUIRE) && atomic_load_explicit(&v->busy, SEQ_CST) &&
	       !atomic_load_explicit(&v->stuck, RELAXED) &&
	       (stash || weft__ring_depth(&v->ring) < STEAL_MIN);
}

/* Is there work worker w may take (the parking rescan)? */
static bool work_for(struct weft__worker *w)
{
	weft_pool *p = w->pool;
	if (atomic_load_explicit(&p->ovf.n, SEQ_CST))
		return true;
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct weft__worker *v = slot(p, i);
		if ((weft__ring_depth(&v->ring) &&
		     (v == w || !leave_to_owner(w, v, FIND_DEEP, false))) ||
		    (weft__stash_count(&v->stash) &&
		     (v == w || !leave_to_owner(w, v, FIND_DEEP, true))))
			return true;
	}
	return false;
}

/* Find a task for worker w: 1 with *t, 0 if there is none it may take, -EBUSY if a push is being
 * published (not empty: retry). The bound is released here for every task that leaves. Order:
 * its stash, the overflow queue every 61 calls, its ring, the overflow queue, the other rings;
 * last, except in FIND_QUICK, the other workers' stashes (the owner is usually about to run
 * them, and a thief there makes the stash's line bounce). */
_Atomic int weft__pool_force_batch;

static int find_task(struct weft__worker *w, struct weft__task *t, enum find_mode mode)
{
	weft_pool *p = w->pool;
	struct weft__task batch_buf[WEFT__POOL_STASH + 1];
	int r;
	if (stash_take(&w->stash, t))
		goto got;
	unsigned batch = w->s_est < TINY_NS || weft__unlikely(atomic_load_explicit(
	                                               &weft__pool_force_batch, RELAXED))
	                         ? WEFT__POOL_STASH + 1
	                         : 1;
	if (--w->ovf_left <= 0) {
		w->ovf_left = OVF_EVERY;
		r = weft__overflow_take(&p->ovf, t, &w->ring, OVF_BATCH);
		if (r > 0) {
			local_add(&w->moved, (uint64_t)r - 1);
			goto got;
		}
	}
	r = weft__ring_pop_batch(&w->ring, batch_buf, batch);
	if (r > 0)
		goto stashed;
	if (r < 0)
		return r;
	r = weft__overflow_take(&p->ovf, t, &w->ring, OVF_BATCH);
	if (r > 0) {
		local_add(&w->moved, (uint64_t)r - 1);
		goto got;
	}
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	bool busy = false;
	for (int k = 1; k < n; k++) {
		int i = w->index + k;
		if (i >= n)
			i -= n;
		struct weft__worker *v = slot(p, i);
		if (leave_to_owner(w, v, mode, false))
			continue;
		r = weft__ring_pop_batch(&v->ring, batch_buf, batch);
		if (r > 0)
			goto stashed;
		if (r < 0)
			busy = true;
	}
	/* Last, the stashes of the others: a worker busy with a long task may hold some. */
	for (int k = 1; mode != FIND_QUICK && k < n; k++) {
		int i = w->index + k;
		if (i >= n)
			i -= n;
		struct weft__worker *v = slot(p, i);
		if (!leave_to_owner(w, v, mode, true) && stash_take(&v->stash, t))
			goto got;
	}
	return busy ? -EBUSY : 0;
stashed:
	*t = batch_buf[0];
	if (r > 1)
		stash_fill(&w->stash, batch_buf + 1, (unsigned)r - 1);
got:
	unreserve(p);
	if (t->fut)
		t->stamp = t->fut->stamp;
	return 1;
}

/* A popped task that will not run: cancel it, or count it if the caller of weft_future_cancel
 * did (cancellations are counted when the task leaves the queue, so weft_future_cancel never
 * touches the pool, which may be gone by then); one run inline by a waiter is not counted. */
static void discard(weft_pool *p, const struct weft__task *t)
{
	weft_future *f = t->fut;
	if (!f || future_cancel(f) ||
	    (atomic_load_explicit(&f->state, ACQUIRE) & F_STATE) == F_CANCELLED)
		atomic_fetch_add_explicit(&p->cancelled, 1, RELAXED);
	if (f)
		future_unref(f);
}

/* A task popped by a worker: run it, or skip it (its future was cancelled or run inline), or
 * cancel it (shutdown CANCEL). */
static void run_popped(struct weft__worker *w, const struct weft__task *t)
{
	weft_pool *p = w->pool;
	weft_future *f = t->fut;
	if (weft__unlikely(atomic_load_explicit(&p->cancel_all, RELAXED))) {
		discard(p, t);
		return;
	}
	if (f && !future_claim(f)) {
		discard(p, t);
		return;
	}
	execute(w, t->fn, t->arg, f, t->stamp);
	if (f)
		future_unref(f);
}

/* ---- idle list and wake-ups ------------------------------------------------------------------ */

/* Under idle_lock. */
static void idle_push(weft_pool *p, struct weft__worker *w)
{
	w->idle_prev = NULL;
	w->idle_next = p->idle_head;
	if (p->idle_head)
		p->idle_head->idle_prev = w;
	p->idle_head = w;
	w->on_idle = true;
	atomic_fetch_add_explicit(&p->nparked, 1, SEQ_CST);
}

/* Under idle_lock. */
static void idle_remove(weft_pool *p, struct weft__worker *w)
{
	if (w->idle_prev)
		w->idle_prev->idle_next = w->idle_next;
	else
		p->idle_head = w->idle_next;
	if (w->idle_next)
		w->idle_next->idle_prev = w->idle_prev;
	w->idle_prev = w->idle_next = NULL;
	w->on_idle = false;
	atomic_fetch_sub_explicit(&p->nparked, 1, SEQ_CST);
}

/* Wake the most recently parked worker, giving it the spinning token the caller holds. False if
 * nobody is parked. */
static bool wake_one(weft_pool *p)
{
	weft__mutex_lock(&p->idle_lock);
	struct weft__worker *w = p->idle_head;
	if (w) {
		idle_remove(p, w);
		w->token = true;
		atomic_store_explicit(&w->futex, 1, RELEASE);
	}
	weft__mutex_unlock(&p->idle_lock);
	if (w)
		weft__futex_wake(&w->futex, 1);
	return w != NULL;
}

/* Wake every parked worker (without tokens): shutdown, resize. */
static void wake_all(weft_pool *p)
{
	weft__mutex_lock(&p->idle_lock);
	for (struct weft__worker *w; (w = p->idle_head);) {
		idle_remove(p, w);
		w->token = false;
		atomic_store_explicit(&w->futex, 1, RELEASE);
		weft__futex_wake(&w->futex, 1);
	}
	weft__mutex_unlock(&p->idle_lock);
}

/* Take the token (nspinning 0 -> 1) and wake a parked worker with it. */
static void wake_spinner(weft_pool *p)
{
	int zero = 0;
	if (!atomic_compare_exchange_strong_explicit(&p->nspinning, &zero, 1, SEQ_CST, RELAXED))
		return; /* someone is spinning: it will find the work */
	if (!wake_one(p)) {
		atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
		weft__pool_maybe_spawn(p);
	}
}

/* Every spinner the submitter could rely on is off the CPU (none has looked for SPIN_STALE):
 * wake a parked worker with one more token. Each such submit wakes at most one worker, and only
 * while no spinner runs: the first that runs refreshes spin_beat. */
static void wake_extra(weft_pool *p)
{
	atomic_fetch_add_explicit(&p->nspinning, 1, SEQ_CST);
	if (!wake_one(p))
		atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
}

void weft__pool_wake(weft_pool *p)
{
	if (atomic_load_explicit(&p->nparked, SEQ_CST) > 0 &&
	    atomic_load_explicit(&p->nspinning, SEQ_CST) == 0)
		wake_spinner(p);
}

/* After a push: the submitter's side of the parking protocol (head comment). */
static inline void notify(weft_pool *p, struct weft__ring *r, int64_t stamp)
{
	int parked = atomic_load_explicit(&p->nparked, SEQ_CST);
	if (parked == 0) {
		if (atomic_load_explicit(&p->nspinning, SEQ_CST) == 0)
			weft__pool_maybe_spawn(p);
		return;
	}
	bool stale = false;
	if (atomic_load_explicit(&p->nspinning, SEQ_CST) != 0) {
		/* A spinner will find the task, unless it is off the CPU: its last look was
		 * SPIN_STALE or more before this submit (known when the submit was stamped). */
		if (!stamp ||
		    stamp - atomic_load_explicit(&p->spin_beat, RELAXED) < WEFT__POOL_SPIN_STALE)
			return;
		stale = true;
	}
	/* Tiny tasks, pushed to the ring of a busy worker: that worker will get to the task (it
	 * never parks while its ring holds anything); wake another only when the ring grows past
	 * what one worker keeps to itself (looked at every 16th submit), or when the tick finds
	 * the owner stuck. */
	if (LAZY && r && atomic_load_explicit(&p->tiny, RELAXED)) {
		struct weft__worker *o = WEFT__CONTAINER_OF(r, struct weft__worker, ring);
		if (atomic_load_explicit(&o->busy, SEQ_CST) &&
		    !atomic_load_explicit(&o->stuck, RELAXED)) {
			if (--tls.lazy_left > 0)
				return;
			tls.lazy_left = LAZY_CHECK;
			if (weft__ring_depth(r) < STEAL_MIN)
				return;
		}
	}
	if (stale)
		wake_extra(p);
	else
		wake_spinner(p);
}

/* ---- threads --------------------------------------------------------------------------------- */

static void *worker_main(void *arg);

static void *alloc_aligned(size_t size)
{
	if (weft__fault_hit(WEFT__FAULT_ALLOC))
		return NULL;
	void *m = NULL;
	if (posix_memalign(&m, 64, size) != 0)
		return NULL;
	return m;
}

static void worker_free(struct weft__worker *w)
{
	if (!w)
		return;
	weft_hist_destroy(w->h_wait);
	weft_hist_destroy(w->h_svc);
	weft_hist_destroy(w->h_cpu);
	free(w);
}

static struct weft__worker *worker_new(weft_pool *p, int index)
{
	struct weft__worker *w = alloc_aligned(sizeof(*w));
	if (!w)
		return NULL;
	memset((char *)w + sizeof(w->ring), 0, sizeof(*w) - sizeof(w->ring));
	weft__ring_init(&w->ring);
	w->pool = p;
	w->index = index;
	w->ovf_left = OVF_EVERY;
	w->svc_left = 1;
	w->cpu_left = 1;
#ifndef WEFT_POOL_NO_MEASURE
	w->s_est = 2 * TINY_NS; /* no batches until its tasks are known to be tiny */
#else
	w->s_est = 0; /* nothing measures: always batch (the stash can be stolen) */
#endif
	if (weft_hist_create(&w->h_wait) < 0 || weft_hist_create(&w->h_svc) < 0 ||
	    weft_hist_create(&w->h_cpu) < 0) {
		worker_free(w);
		return NULL;
	}
	return w;
}

/* One past the highest live slot (at least 1: slot 0 always exists once the pool runs). Under
 * ctl. */
static void update_target(weft_pool *p)
{
	int n = atomic_load_explicit(&p->nslots, RELAXED), t = 1;
	for (int i = 0; i < n; i++) {
		if (atomic_load_explicit(&slot(p, i)->live, RELAXED))
			t = i + 1;
	}
	atomic_store_explicit(&p->ntarget, t, RELEASE); /* after slots[i < t] */
}

/* Start a thread in the lowest free slot. Under ctl; the caller checked closing and max. */
static int spawn_locked(weft_pool *p, bool clear_spawning)
{
	int n = atomic_load_explicit(&p->nslots, RELAXED), i;
	for (i = 0; i < n; i++) {
		if (!atomic_load_explicit(&slot(p, i)->live, RELAXED))
			break;
	}
	if (i == WEFT__POOL_MAX_THREADS)
		return -EAGAIN;
	struct weft__worker *w;
	if (i == n) {
		w = worker_new(p, i);
		if (!w)
			return -ENOMEM;
		atomic_store_explicit(&p->slots[i], w, RELEASE);
		atomic_store_explicit(&p->nslots, n + 1, RELEASE);
	} else {
		w = slot(p, i);
		if (w->joinable) { /* a retired thread: past try_retire it takes no ctl */
			pthread_join(w->thread, NULL);
			w->joinable = false;
		}
	}
	w->clear_spawning = clear_spawning;
	w->token = false;
	atomic_store_explicit(&w->busy, 0, RELAXED);
	atomic_store_explicit(&w->wait_depth, 0, RELAXED);
	atomic_store_explicit(&w->live, true, RELAXED);
	atomic_fetch_add_explicit(&p->nlive, 1, SEQ_CST);
	update_target(p);
	char name[WEFT__POOL_NAME_MAX + 16];
	snprintf(name, sizeof(name), "%s-%d", p->name, i);
	int r = weft__thread_create(&w->thread, name, worker_main, w);
	if (r < 0) {
		atomic_store_explicit(&w->live, false, RELAXED);
		atomic_fetch_sub_explicit(&p->nlive, 1, SEQ_CST);
		update_target(p);
		return r;
	}
	w->joinable = true;
	return 0;
}

void weft__pool_maybe_spawn(weft_pool *p)
{
	if (atomic_load_explicit(&p->nlive, RELAXED) >=
	            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED) ||
	    atomic_load_explicit(&p->spawning, RELAXED) ||
	    atomic_load_explicit(&p->closing, RELAXED))
		return;
	int zero = 0;
	if (!atomic_compare_exchange_strong_explicit(&p->spawning, &zero, 1, ACQ_REL, RELAXED))
		return;
	int r = -1;
	weft__mutex_lock(&p->ctl);
	if (!atomic_load_explicit(&p->closing, RELAXED) &&
	    atomic_load_explicit(&p->nlive, RELAXED) <
	            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED))
		r = spawn_locked(p, true);
	weft__mutex_unlock(&p->ctl);
	if (r < 0) /* nothing started (a failed start is retried by a later submit) */
		atomic_store_explicit(&p->spawning, 0, RELEASE);
}

/* Retire worker w if the bounds allow (idle_expired: its idle timeout passed while parked).
 * True if it must end its thread now. */
static bool try_retire(struct weft__worker *w, bool idle_expired)
{
	weft_pool *p = w->pool;
	bool ok;
	weft__mutex_lock(&p->ctl);
	int n = (int)atomic_load_explicit(&p->nlive, RELAXED);
	ok = !atomic_load_explicit(&p->closing, RELAXED) &&
	     (n > atomic_load_explicit(&p->max_threads, RELAXED) ||
	      (idle_expired && n > atomic_load_explicit(&p->min_threads, RELAXED)));
	if (ok) {
		/* Parked (idle_expired): leave the idle list, unless a submitter woke us
		 * meanwhile: then we hold the spinning token and stay. Awake (after a task, or
		 * idle but not spinning), we are off the list and hold no token: `token` is that
		 * of our last wake-up, given back since (stop_spinning), and must not keep us.
		 * Holding ctl and idle_lock: ctl keeps the bounds and nlive fixed while we
		 * decide, idle_lock the list. */
		weft__mutex_lock(&p->idle_lock);
		if (w->on_idle)
			idle_remove(p, w);
		else if (idle_expired && w->token)
			ok = false;
		weft__mutex_unlock(&p->idle_lock);
	}
	if (ok) {
		atomic_store_explicit(&w->busy, 0, RELAXED);
		atomic_store_explicit(&w->live, false, RELAXED);
		atomic_fetch_sub_explicit(&p->nlive, 1, SEQ_CST);
		update_target(p);
	}
	weft__mutex_unlock(&p->ctl);
	return ok;
}

enum { PARK_WORK, PARK_TOKEN, PARK_RETIRE };

/* Steps 3-5 of the worker's side of the parking protocol (head comment). */
static int park(struct weft__worker *w)
{
	weft_pool *p = w->pool;
	weft__mutex_lock(&p->idle_lock);
	atomic_store_explicit(&w->futex, 0, RELAXED);
	w->token = false;
	idle_push(p, w);
	weft__mutex_unlock(&p->idle_lock);

	/* The lazy rule's store-buffer pattern: this worker stored busy = 0 (relaxed), then rescans
	 * below; a submitter pushes (seq_cst CAS), then loads this worker's busy (seq_cst) and, if
	 * it reads 1, leaves the task to it without waking anyone. With this seq_cst fence between
	 * the store and the rescan, either the submitter's load comes after the fence in the total
	 * order and reads busy = 0 (it wakes someone), or its push comes before the fence and the
	 * rescan sees it (C11 [atomics.order] on seq_cst fences). On x86 the lock-prefixed RMWs
	 * above already fence; a weaker CPU needs this. Paid once per park, never per task. */
#if !WEFT__TSAN
	atomic_thread_fence(SEQ_CST);
#endif
	if (work_for(w) || atomic_load_explicit(&p->closing, SEQ_CST) ||
	    atomic_load_explicit(&p->nlive, RELAXED) >
	            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED)) {
		weft__mutex_lock(&p->idle_lock);
		bool tok = w->token;
		if (w->on_idle)
			idle_remove(p, w);
		weft__mutex_unlock(&p->idle_lock);
		return tok ? PARK_TOKEN : PARK_WORK;
	}
	int64_t deadline = weft_deadline_in(p->idle_timeout);
	for (;;) {
		int r = weft__futex_wait(&w->futex, 0, deadline);
		weft__mutex_lock(&p->idle_lock);
		bool still = w->on_idle, tok = w->token;
		weft__mutex_unlock(&p->idle_lock);
		if (!still)
			return tok ? PARK_TOKEN : PARK_WORK;
		if (r == -ETIMEDOUT) {
			if (try_retire(w, true))
				return PARK_RETIRE;
			weft__mutex_lock(&p->idle_lock);
			still = w->on_idle;
			tok = w->token;
			weft__mutex_unlock(&p->idle_lock);
			if (!still)
				return tok ? PARK_TOKEN : PARK_WORK;
			deadline = weft_deadline_in(p->idle_timeout);
		}
	}
}

/* A spinner found work: give up spinning; if it was the last spinner, others are parked and
 * work remains, wake one more. */
static void stop_spinning(struct weft__worker *w)
{
	weft_pool *p = w->pool;
	if (atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST) == 1 &&
	    atomic_load_explicit(&p->nparked, SEQ_CST) > 0 && work_for(w))
		wake_spinner(p);
}

/* The spinner found it was off the CPU for a while: the CPUs are oversubscribed, and a spinner
 * that is not running only delays the tasks it keeps others from being woken for. Nobody spins
 * for a while: the back-off doubles when this happens again within four back-offs of the last
 * time, else it starts again at SPIN_BACKOFF_MIN. Meanwhile tasks go to woken workers, which
 * the scheduler runs soon after their wake-up. Relaxed: a heuristic; racing writers leave one
 * of their values, any of which is fine. */
static void spin_preempted(weft_pool *p, int64_t now)
{
	int64_t b = atomic_load_explicit(&p->spin_backoff, RELAXED);
	int64_t last = atomic_load_explicit(&p->spin_preempted_at, RELAXED);
	b = last && now - last <= 4 * b ? WEFT__MIN(2 * b, WEFT__POOL_SPIN_BACKOFF_MAX)
	                                : WEFT__POOL_SPIN_BACKOFF_MIN;
	atomic_store_explicit(&p->spin_backoff, b, RELAXED);
	atomic_store_explicit(&p->spin_preempted_at, now, RELAXED);
	atomic_store_explicit(&p->spin_off_until, now + b, RELAXED);
}

/* Step 1 of the worker's side of the parking protocol: look for work for pool->spin_ns (none
 * while spinning is backed off: then four looks), with pause instructions between looks and
 * never sched_yield (a yield hands the CPU to any other runnable thread for a whole time
 * slice, milliseconds, while nspinning still tells submitters not to wake anyone). The clock is
 * read every 4 looks (a look and its pauses take about 1 us here) and after a find: it stamps
 * spin_beat for submitters, ends the spin, and a gap longer than SPIN_PREEMPTED between two
 * reads means this thread was off the CPU: back off. Returns 1 with *t filled, or 0. */
static int spin(struct weft__worker *w, struct weft__task *t)
{
	weft_pool *p = w->pool;
	int64_t now = weft_now();
	atomic_store_explicit(&p->spin_beat, now, RELAXED);
	int decay = p->spin_fixed ? 0 : atomic_load_explicit(&p->spin_decay, RELAXED);
	int64_t len = atomic_load_explicit(&p->spin_ns, RELAXED) >> decay;
	if (now < atomic_load_explicit(&p->spin_off_until, RELAXED))
		len = 0;
	int64_t end = now + len;
	for (int i = 1;; i++) {
		int r = find_task(w, t, FIND_QUICK);
		if (r <= 0) {
			for (int k = 0; k < 8; k++)
				weft__cpu_relax();
			if (i % 4 != 0)
				continue;
		}
		int64_t t1 = weft_now();
		bool preempted = t1 - now > WEFT__POOL_SPIN_PREEMPTED;
		if (preempted && len > 0)
			spin_preempted(p, t1);
		if (r > 0) {
			/* Paid off: the next spin is a full one. */
			if (decay)
				atomic_store_explicit(&p->spin_decay, 0, RELAXED);
			return 1;
		}
		if (t1 >= end || preempted) {
			/* Nothing came: the next spin is half as long (a spin cut short by a
			 * preemption or a back-off says nothing about the arrivals). */
			if (t1 >= end && !preempted && len > 0 &&
			    decay < WEFT__POOL_SPIN_DECAY_MAX && !p->spin_fixed)
				atomic_store_explicit(&p->spin_decay, decay + 1, RELAXED);
			return 0;
		}
		now = t1;
		atomic_store_explicit(&p->spin_beat, now, RELAXED);
	}
}

static bool try_spin(weft_pool *p)
{
	int n = atomic_load_explicit(&p->nspinning, RELAXED);
	while (n < SPIN_MAX) {
		if (atomic_compare_exchange_weak_explicit(&p->nspinning, &n, n + 1, SEQ_CST,
		                                          RELAXED))
			return true;
	}
	return false;
}

/* busy is stored relaxed (it changes on every idle transition, a hot path); park's seq_cst fence
 * orders the store busy = 0 before the parking rescan (see park). Under TSan, which has no fences,
 * the store itself is seq_cst instead (the same guarantee, at an xchg per idle transition). */
static inline void set_busy(struct weft__worker *w, int b)
{
	if (atomic_load_explicit(&w->busy, RELAXED) != b)
		atomic_store_explicit(&w->busy, b, b || !WEFT__TSAN ? RELAXED : SEQ_CST);
}

/* A worker goes from idle to busy: if work remains queued behind its task and nobody else is
 * idle, another thread may help (a pool below max grows one thread at a time, each start
 * checking for the next). */
static void busy_from_idle(struct weft__worker *w)
{
	weft_pool *p = w->pool;
	atomic_store_explicit(&w->busy, 1, RELAXED);
	if (atomic_load_explicit(&p->nlive, RELAXED) <
	            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED) &&
	    atomic_load_explicit(&p->nparked, SEQ_CST) == 0 &&
	    atomic_load_explicit(&p->nspinning, SEQ_CST) == 0 && work_for(w))
		weft__pool_maybe_spawn(p);
}

static void *worker_main(void *arg)
{
	struct weft__worker *w = arg;
	weft_pool *p = w->pool;
	tls.worker = w;
	tls.help_depth = 0;
	if (w->clear_spawning)
		atomic_store_explicit(&p->spawning, 0, RELEASE);
	bool spinning = false;
	struct weft__task t;
	for (;;) {
		int r = find_task(w, &t, FIND_QUICK);
		if (r > 0) {
		run:
			if (spinning) {
				spinning = false;
				stop_spinning(w);
			}
			if (!atomic_load_explicit(&w->busy, RELAXED))
				busy_from_idle(w);
			run_popped(w, &t);
			if (weft__unlikely(
			            atomic_load_explicit(&p->nlive, RELAXED) >
			            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED)) &&
			    !weft__stash_count(&w->stash) && try_retire(w, false))
				goto retire;
			continue;
		}
		set_busy(w, 0);
		if (r < 0) { /* a push is being published */
			weft__cpu_relax();
			continue;
		}
		if (atomic_load_explicit(&p->closing, SEQ_CST)) {
			r = find_task(w, &t, FIND_ALL);
			if (r > 0)
				goto run;
			if (r == 0 && !any_work(p))
				break;
			weft__cpu_relax();
			continue;
		}
		if (atomic_load_explicit(&p->nlive, RELAXED) >
		            (uint32_t)atomic_load_explicit(&p->max_threads, RELAXED) &&
		    !spinning && try_retire(w, false))
			goto retire;
		if (!spinning)
			spinning = try_spin(p);
		if (spinning) {
			r = spin(w, &t);
			if (r > 0)
				goto run;
			spinning = false;
			atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
		}
		r = find_task(w, &t, FIND_DEEP); /* a last, deep look before parking */
		if (r > 0)
			goto run;
		switch (park(w)) {
		case PARK_TOKEN: spinning = true; break;
		case PARK_RETIRE: goto retire;
		default: break;
		}
	}
	/* Closing and every queue empty: end. */
	if (spinning)
		atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
	atomic_store_explicit(&w->busy, 0, RELAXED);
	atomic_store_explicit(&w->live, false, RELAXED);
	tls.worker = NULL;
	if (atomic_fetch_sub_explicit(&p->nlive, 1, SEQ_CST) == 1)
		weft__futex_wake(&p->nlive, INT_MAX);
	return NULL;
retire:
	if (spinning)
		atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
	tls.worker = NULL;
	/* Tasks pushed into this ring after we decided: wake a parked worker to steal them (a
	 * worker that is awake finds them by itself). No thread start from here: the thread that
	 * joins this one may hold ctl. */
	if (weft__ring_depth(&w->ring)) {
		int zero = 0;
		if (atomic_compare_exchange_strong_explicit(&p->nspinning, &zero, 1, SEQ_CST,
		                                            RELAXED) &&
		    !wake_one(p))
			atomic_fetch_sub_explicit(&p->nspinning, 1, SEQ_CST);
	}
	return NULL;
}

/* Join the threads that have ended (their slot is not live). */
static void join_ended(weft_pool *p)
{
	pthread_t ended[64];
	for (;;) {
		int k = 0;
		weft__mutex_lock(&p->ctl);
		int n = atomic_load_explicit(&p->nslots, RELAXED);
		for (int i = 0; i < n && k < 64; i++) {
			struct weft__worker *w = slot(p, i);
			if (w->joinable && !atomic_load_explicit(&w->live, ACQUIRE)) {
				ended[k++] = w->thread;
				w->joinable = false;
			}
		}
		weft__mutex_unlock(&p->ctl);
		for (int i = 0; i < k; i++)
			pthread_join(ended[i], NULL);
		if (k < 64)
			return;
	}
}

/* ---- options --------------------------------------------------------------------------------- */

/* The thread bounds with the defaults of weft_pool_opts applied. */
static int resolve_threads(int min, int max, int budget, int *ret_min, int *ret_max)
{
	if (min < 0 || max < 0 || max > WEFT__POOL_MAX_THREADS || min > WEFT__POOL_MAX_THREADS)
		return -EINVAL;
	if (max && min > max)
		return -EINVAL;
	if (!min)
		min = max ? WEFT__MIN(budget, max) : budget;
	if (!max)
		max = WEFT__MAX(min, budget);
	if (min < 1)
		min = 1;
	if (max > WEFT__POOL_MAX_THREADS)
		max = WEFT__POOL_MAX_THREADS;
	if (min > max)
		min = max;
	*ret_min = min;
	*ret_max = max;
	return 0;
}

static int cpu_budget(double *ret_capacity)
{
	int r = weft_cpu_budget(ret_capacity);
	if (r == -ENOMEM)
		return r;
	if (r < 1) { /* an unreadable cgroup file: fall back to the online CPUs */
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		r = n >= 1 ? (int)WEFT__MIN(n, WEFT__POOL_MAX_THREADS) : 1;
		*ret_capacity = r;
	}
	return r;
}

/* ---- create and destroy ---------------------------------------------------------------------- */

WEFT_API void weft_pool_destroy(weft_pool *p)
{
	if (!p)
		return;
	/* In the child of a fork, the pool's threads do not exist: nothing to stop or join (and
	 * its locks may be held by threads that were running at the fork). */
	bool child = from_parent(p->fork_gen);
	if (!child) {
		WEFT__ASSERT(!own_worker(p));                /* from one of its own tasks */
		WEFT__ASSERT(!weft__pool_on_tick_thread(p)); /* from its on_verdict */
		if (p->slots && atomic_load_explicit(&p->nslots, RELAXED))
			(void)weft_pool_shutdown(p, WEFT_POOL_CANCEL, WEFT_FOREVER);
		weft__pool_tick_stop(p);
	}
	weft__pool_measure_fini(p);
	if (p->slots) {
		int n = atomic_load_explicit(&p->nslots, RELAXED);
		for (int i = 0; i < n; i++)
			worker_free(slot(p, i));
		free((void *)p->slots);
	}
	/* The child leaves the futures' arena to the futures it holds: its lock may be held. */
	if (!child)
		arena_orphan(p->arena);
	if (p->locks_ready) {
		weft__overflow_destroy(&p->ovf);
		weft__mutex_destroy(&p->ctl);
		weft__mutex_destroy(&p->idle_lock);
		weft__mutex_destroy(&p->verdict_lock);
	}
	free(p);
}

WEFT_API int weft_pool_create(weft_pool **ret, const weft_pool_opts *opts)
{
	static const weft_pool_opts defaults;
	if (!ret)
		return -EINVAL;
	const weft_pool_opts *o = opts ? opts : &defaults;
	const char *name = o->name ? o->name : "pool";
	size_t name_len = strlen(name);
	if (name_len == 0 || name_len > WEFT__POOL_NAME_MAX)
		return -EINVAL;
	if (o->idle_timeout < 0 || o->block_timeout < 0 || o->tick < 0 || o->window < 0 ||
	    o->runaway_ticks < 0 || o->wait_target < 0 || o->stall_after < 0 || o->spin < 0 ||
	    o->spin > WEFT_POOL_SPIN_MAX)
		return -EINVAL;
	if (o->tick && (o->tick < WEFT_MSEC(1) || o->tick > WEFT_SEC(3600)))
		return -EINVAL;
	if (o->window > WEFT_SEC(86400))
		return -EINVAL;
	if (o->on_full < WEFT_POOL_FULL_FAIL || o->on_full > WEFT_POOL_FULL_BLOCK)
		return -EINVAL;
	if (o->queue_max > ((size_t)1 << 40))
		return -EINVAL;
	if (o->min_threads < 0 || o->max_threads < 0 || o->max_threads > WEFT__POOL_MAX_THREADS ||
	    o->min_threads > WEFT__POOL_MAX_THREADS ||
	    (o->max_threads && o->min_threads > o->max_threads))
		return -EINVAL;

	pthread_once(&atfork_once, atfork_register);
	if (atfork_result < 0)
		return atfork_result;
	double capacity = 1;
	int budget = cpu_budget(&capacity); /* also the forecast's CPU capacity */
	if (budget < 0)
		return budget;
	int min, max;
	int r = resolve_threads(o->min_threads, o->max_threads, budget, &min, &max);
	if (r < 0)
		return r;

	weft_pool *p = alloc_aligned(sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p, 0, sizeof(*p));
	memcpy(p->name, name, name_len + 1);
	p->on_full = o->on_full;
	p->queue_max = o->queue_max;
	p->block_timeout = o->block_timeout;
	p->idle_timeout = o->idle_timeout ? o->idle_timeout : DEFAULT_IDLE_TIMEOUT;
	p->tick = o->tick ? o->tick : WEFT_MSEC(100);
	p->window = o->window ? o->window : 10 * p->tick;
	p->runaway_ticks = o->runaway_ticks ? o->runaway_ticks : 5;
	p->wait_target = o->wait_target ? o->wait_target : WEFT_MSEC(100);
	p->stall_after = o->stall_after ? o->stall_after : WEFT_SEC(5);
	p->memory_budget = o->memory_budget ? o->memory_budget : DEFAULT_MEMORY_BUDGET;
	p->on_verdict = o->on_verdict;
	p->on_verdict_arg = o->on_verdict_arg;
	p->metrics = o->metrics;
	p->cpu_capacity = capacity;
	p->cpu_budget = budget;
	p->fork_gen = atomic_load_explicit(&fork_line.gen, RELAXED);
	atomic_store_explicit(&p->min_threads, min, RELAXED);
	atomic_store_explicit(&p->max_threads, max, RELAXED);
	atomic_store_explicit(&p->ntarget, 1, RELAXED);
	p->spin_fixed = o->spin;
	atomic_store_explicit(&p->spin_ns, o->spin ? o->spin : WEFT__POOL_SPIN_SHORT, RELAXED);
	atomic_store_explicit(&p->spin_backoff, WEFT__POOL_SPIN_BACKOFF_MIN, RELAXED);

	weft__mutex_init(&p->ctl, WEFT__RANK_POOL);
	weft__mutex_init(&p->idle_lock, WEFT__RANK_POOL_IDLE);
	weft__mutex_init(&p->verdict_lock, WEFT__RANK_POOL_VERDICT);
	/* The overflow queue of an unbounded pool holds what the memory budget allows. */
	weft__overflow_init(
	        &p->ovf,
	        p->queue_max ? 0 : WEFT__MAX(1, p->memory_budget / sizeof(struct weft__task)));
	p->locks_ready = true;

	if (!p->metrics && (r = weft_metrics_global(&p->metrics)) < 0)
		goto fail;
	r = -ENOMEM;
	p->slots = weft__calloc(WEFT__POOL_MAX_THREADS, sizeof(*p->slots));
	if (!p->slots)
		goto fail;
	p->arena = weft__calloc(1, sizeof(*p->arena));
	if (!p->arena)
		goto fail;
	weft__mutex_init(&p->arena->lock, WEFT__RANK_POOL_FUTURES);
	if ((r = weft__pool_measure_init(p)) < 0)
		goto fail;

	weft__mutex_lock(&p->ctl);
	while ((int)atomic_load_explicit(&p->nlive, RELAXED) < min) {
		if ((r = spawn_locked(p, false)) < 0)
			break;
	}
	weft__mutex_unlock(&p->ctl);
	if (r < 0)
		goto fail;
	if ((r = weft__pool_tick_start(p)) < 0)
		goto fail;
	*ret = p;
	return 0;
fail:
	weft_pool_destroy(p);
	return r;
}

/* ---- submit ---------------------------------------------------------------------------------- */

/* Run a task on the submitting thread (CALLER_RUNS, or BLOCK from a worker of the pool). f, if
 * any, is fresh: its claim succeeds. */
static void caller_runs(weft_pool *p, weft_task_fn fn, void *arg, weft_future *f)
{
	atomic_fetch_add_explicit(&p->caller_ran, 1, RELAXED);
	bool claimed = !f || future_claim(f);
	WEFT__ASSERT(claimed);
	tls.help_depth++;
	if (own_worker(p)) {
		execute(tls.worker, fn, arg, f, 0);
	} else {
		void *res = fn(arg);
		atomic_fetch_add_explicit(&p->ext_completed, 1, RELAXED);
		if (f) {
			f->result = res;
			future_finish(f, F_DONE);
		}
	}
	tls.help_depth--;
	if (f)
		future_unref(f); /* the queue's reference: there is no queue entry */
}

/* Pop an old task for DROP_OLDEST: 1 with *t, 0 if nothing is queued. A stash holds the
 * oldest tasks of its ring (popped from its head); after the stashes, the head of the longest
 * queue (the oldest to within the spread between queues). The reservation of the popped task
 * passes to the caller. */
static int pop_oldest(weft_pool *p, struct weft__task *t)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		int n = atomic_load_explicit(&p->nslots, ACQUIRE), best = -1;
		for (int i = 0; i < n; i++) {
			if (stash_take(&slot(p, i)->stash, t)) {
				if (t->fut)
					t->stamp = t->fut->stamp;
				return 1;
			}
		}
		uint64_t best_depth = atomic_load_explicit(&p->ovf.n, RELAXED);
		for (int i = 0; i < n; i++) {
			uint64_t d = weft__ring_depth(&slot(p, i)->ring);
			if (d > best_depth) {
				best_depth = d;
				best = i;
			}
		}
		if (best_depth == 0)
			return 0;
		int r = best < 0 ? weft__overflow_pop(&p->ovf, t)
		                 : weft__ring_pop(&slot(p, best)->ring, t);
		if (r > 0) {
			if (t->fut)
				t->stamp = t->fut->stamp;
			return 1;
		}
	}
	return 0;
}

/* A bounded queue is full: apply on_full. Returns 1 when the caller may push (a reservation is
 * held), 0 when the task was handled (run by the caller), or a negative errno. With 1, and
 * *ret_dropping set, the caller dropped a task and is counted in `dropping`: it leaves after
 * its push. */
static int when_full(weft_pool *p, weft_task_fn fn, void *arg, weft_future *f, int64_t deadline,
                     bool use_block_timeout, bool *ret_dropping)
{
	switch (p->on_full) {
	case WEFT_POOL_FULL_CALLER_RUNS: caller_runs(p, fn, arg, f); return 0;
	case WEFT_POOL_FULL_DROP_OLDEST:
		/* A pool shutting down keeps what it accepted (a DRAIN runs it): nothing is
		 * dropped once shutdown has begun, and a drop is always followed by its push
		 * (head comment, "DROP_OLDEST and shutdown"). */
		for (int spins = 0;; spins++) {
			struct weft__task old;
			atomic_fetch_add_explicit(&p->dropping, 1, SEQ_CST);
			if (atomic_load_explicit(&p->stopping, SEQ_CST)) {
				atomic_fetch_sub_explicit(&p->dropping, 1, SEQ_CST);
				return -ESHUTDOWN;
			}
			if (pop_oldest(p, &old)) {
				discard(p, &old);
				*ret_dropping = true; /* submit_one leaves after its push */
				return 1;
			}
			atomic_fetch_sub_explicit(&p->dropping, 1, SEQ_CST);
			if (reserve(p)) /* room came, or every reserved task was still in flight */
				return 1;
			if (spins > 100)
				sched_yield();
			else
				weft__cpu_relax();
		}
	case WEFT_POOL_FULL_BLOCK:
		if (own_worker(p)) {
			caller_runs(p, fn, arg, f);
			return 0;
		}
		if (use_block_timeout)
			deadline = p->block_timeout ? weft_deadline_in(p->block_timeout)
			                            : WEFT_FOREVER;
		atomic_fetch_add_explicit(&p->room_waiters, 1, SEQ_CST);
		int r;
		for (;;) {
			uint32_t seq = atomic_load_explicit(&p->room_seq, SEQ_CST);
			if (reserve(p)) {
				r = 1;
				break;
			}
			if (atomic_load_explicit(&p->closing, SEQ_CST)) {
				r = -ESHUTDOWN;
				break;
			}
			if (weft__futex_wait(&p->room_seq, seq, deadline) == -ETIMEDOUT) {
				r = reserve(p) ? 1 : -ETIMEDOUT;
				break;
			}
		}
		atomic_fetch_sub_explicit(&p->room_waiters, 1, SEQ_CST);
		if (r == -ETIMEDOUT)
			atomic_fetch_add_explicit(&p->rejected, 1, RELAXED);
		return r;
	default: atomic_fetch_add_explicit(&p->rejected, 1, RELAXED); return -EAGAIN;
	}
}

static int submit_one(weft_pool *p, weft_task_fn fn, void *arg, int64_t deadline,
                      bool use_block_timeout, weft_future **ret_future)
{
	weft_future *f = NULL;
	bool dropping = false;
	if (from_parent(p->fork_gen))
		return -ESHUTDOWN; /* a parent's pool, in the child of a fork */
	if (ret_future) {
		f = future_alloc(p, fn, arg);
		if (!f)
			return -ENOMEM;
	}
	if (p->queue_max && !reserve(p)) {
		if (atomic_load_explicit(&p->closing, RELAXED)) {
			if (f) {
				future_unref(f);
				future_unref(f);
			}
			return -ESHUTDOWN;
		}
		int r = when_full(p, fn, arg, f, deadline, use_block_timeout, &dropping);
		if (r <= 0) {
			if (r < 0 && f) {
				future_unref(f);
				future_unref(f);
			}
			if (r == 0 && f)
				*ret_future = f;
			return r;
		}
	}
	struct weft__task t = {fn, arg, f, take_stamp()};
	if (f)
		f->stamp = t.stamp;
	struct weft__ring *ring;
	int r = enqueue(p, &t, &ring);
	if (weft__unlikely(dropping))
		atomic_fetch_sub_explicit(&p->dropping, 1, SEQ_CST);
	if (weft__unlikely(r < 0)) {
		unreserve(p);
		if (r == -ENOMEM)
			atomic_fetch_add_explicit(&p->rejected, 1, RELAXED);
		if (f) {
			future_unref(f);
			future_unref(f);
		}
		return r;
	}
	notify(p, ring, t.stamp);
	if (f)
		*ret_future = f;
	return 0;
}

WEFT_API int weft_pool_submit(weft_pool *p, weft_task_fn fn, void *arg, weft_future **ret_future)
{
	if (weft__unlikely(!p || !fn))
		return -EINVAL;
	return submit_one(p, fn, arg, WEFT_FOREVER, true, ret_future);
}

WEFT_API int weft_pool_submit_until(weft_pool *p, weft_task_fn fn, void *arg, int64_t deadline,
                                    weft_future **ret_future)
{
	if (!p || !fn || deadline < WEFT_FOREVER)
		return -EINVAL;
	return submit_one(p, fn, arg, deadline, false, ret_future);
}

WEFT_API int weft_pool_submit_batch(weft_pool *p, weft_task_fn fn, void *const *args, size_t n,
                                    weft_future **ret_futures)
{
	if (!p || !fn || (n && !args) || n > INT_MAX)
		return -EINVAL;
	int64_t deadline = WEFT_FOREVER;
	bool use_block_timeout = true;
	if (p->on_full == WEFT_POOL_FULL_BLOCK && p->block_timeout) {
		/* One deadline for the whole batch. */
		deadline = weft_deadline_in(p->block_timeout);
		use_block_timeout = false;
	}
	size_t i;
	int r = 0;
	for (i = 0; i < n; i++) {
		r = submit_one(p, fn, args[i], deadline, use_block_timeout,
		               ret_futures ? &ret_futures[i] : NULL);
		if (r < 0)
			break;
	}
	return i > 0 ? (int)i : r;
}

/* ---- futures: public ------------------------------------------------------------------------- */

/* The wait of a worker on a future of its own pool (head comment). */
static int wait_helping(struct weft__worker *w, weft_future *f, int64_t deadline)
{
	atomic_store_explicit(&w->wait_depth, atomic_load_explicit(&w->wait_depth, RELAXED) + 1,
	                      RELAXED);
	int64_t nap = WEFT_USEC(20);
	int r;
	for (;;) {
		uint32_t s = atomic_load_explicit(&f->state, ACQUIRE);
		if ((s & F_STATE) >= F_DONE) {
			r = 0;
			break;
		}
		if ((s & F_STATE) == F_PENDING && tls.help_depth < INLINE_MAX) {
			if (future_claim(f)) {
				tls.help_depth++;
				execute(w, f->fn, f->arg, f, f->stamp);
				tls.help_depth--;
			}
			continue;
		}
		if (tls.help_depth < HELP_MAX) {
			struct weft__task t;
			int got = find_task(w, &t, FIND_ALL);
			if (got > 0) {
				tls.help_depth++;
				run_popped(w, &t);
				tls.help_depth--;
				nap = WEFT_USEC(20);
				continue;
			}
			if (got < 0) {
				weft__cpu_relax();
				continue;
			}
		}
		int64_t now = weft_now();
		if (deadline != WEFT_FOREVER && now >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		int64_t until = now + nap;
		if (deadline != WEFT_FOREVER && deadline < until)
			until = deadline;
		nap = WEFT__MIN(nap * 2, WEFT_MSEC(5));
		future_sleep(f, s, until);
	}
	atomic_store_explicit(&w->wait_depth, atomic_load_explicit(&w->wait_depth, RELAXED) - 1,
	                      RELAXED);
	return r;
}

WEFT_API int weft_future_wait(weft_future *f, int64_t deadline, void **ret_result)
{
	if (!f || deadline < WEFT_FOREVER)
		return -EINVAL;
	int r = 0;
	uint32_t s = atomic_load_explicit(&f->state, ACQUIRE);
	if ((s & F_STATE) < F_DONE) {
		if (from_parent(f->fork_gen))
			return -ESHUTDOWN; /* its task runs in the parent, if anywhere */
		if (tls.worker && tls.worker->pool == f->pool) {
			r = wait_helping(tls.worker, f, deadline);
		} else {
			for (;;) {
				s = atomic_load_explicit(&f->state, ACQUIRE);
				if ((s & F_STATE) >= F_DONE)
					break;
				if (future_sleep(f, s, deadline) == -ETIMEDOUT) {
					s = atomic_load_explicit(&f->state, ACQUIRE);
					if ((s & F_STATE) < F_DONE)
						r = -ETIMEDOUT;
					break;
				}
			}
		}
		if (r < 0)
			return r;
		s = atomic_load_explicit(&f->state, ACQUIRE);
	}
	if ((s & F_STATE) == F_CANCELLED)
		return -ECANCELED;
	if (ret_result)
		*ret_result = f->result;
	return 0;
}

WEFT_API int weft_future_cancel(weft_future *f)
{
	if (!f)
		return -EINVAL;
	if (from_parent(f->fork_gen) &&
	    (atomic_load_explicit(&f->state, ACQUIRE) & F_STATE) < F_DONE)
		return -ESHUTDOWN; /* its task is the parent's to run or cancel */
	if (future_cancel(f))
		return 0; /* counted by the pool when it pops the task */
	uint32_t s = atomic_load_explicit(&f->state, ACQUIRE) & F_STATE;
	return s == F_CANCELLED ? 0 : -EBUSY;
}

WEFT_API bool weft_future_done(const weft_future *f)
{
	if (!f)
		return false;
	return (atomic_load_explicit(&((weft_future *)f)->state, ACQUIRE) & F_STATE) >= F_DONE;
}

WEFT_API void weft_future_release(weft_future *f)
{
	if (!f)
		return;
	if (from_parent(f->fork_gen)) {
		/* In the child of a fork: the free list's lock may be held by a thread that is not
		 * here. Free it if this was the last reference (its task had left the queue before
		 * the fork), else leave it to the queue's copy, which nobody pops here. */
		if (atomic_fetch_sub_explicit(&f->refs, 1, ACQ_REL) == 1)
			free(f);
		return;
	}
	future_unref(f);
}

/* ---- shutdown and resize --------------------------------------------------------------------- */

/* Pop every queue and cancel what is found (shutdown CANCEL). */
static void cancel_queued(weft_pool *p)
{
	struct weft__task t;
	int n = atomic_load_explicit(&p->nslots, ACQUIRE);
	for (int i = 0; i < n; i++) {
		while (stash_take(&slot(p, i)->stash, &t)) {
			unreserve(p);
			discard(p, &t);
		}
		struct weft__ring *r = &slot(p, i)->ring;
		for (;;) {
			int got = weft__ring_pop(r, &t);
			if (got == 0)
				break;
			if (got < 0) {
				weft__cpu_relax();
				continue;
			}
			unreserve(p);
			discard(p, &t);
		}
	}
	while (weft__overflow_pop(&p->ovf, &t) > 0) {
		unreserve(p);
		discard(p, &t);
	}
}

WEFT_API int weft_pool_shutdown(weft_pool *p, int how, int64_t deadline)
{
	if (!p || (how != WEFT_POOL_DRAIN && how != WEFT_POOL_CANCEL) || deadline < WEFT_FOREVER)
		return -EINVAL;
	if (from_parent(p->fork_gen))
		return -ESHUTDOWN;
	if (own_worker(p))
		return -EDEADLK;
	/* No DROP_OLDEST submit drops a task from here on, and those that did are let finish
	 * their push before the queues close (head comment, "DROP_OLDEST and shutdown"). */
	atomic_store_explicit(&p->stopping, 1, SEQ_CST);
	while (atomic_load_explicit(&p->dropping, SEQ_CST))
		sched_yield();
	weft__mutex_lock(&p->ctl);
	if (!atomic_load_explicit(&p->closing, RELAXED)) {
		int n = atomic_load_explicit(&p->nslots, RELAXED);
		for (int i = 0; i < n; i++)
			weft__ring_close(&slot(p, i)->ring);
		weft__overflow_close(&p->ovf);
		atomic_store_explicit(&p->closing, 1, SEQ_CST);
	}
	if (how == WEFT_POOL_CANCEL)
		atomic_store_explicit(&p->cancel_all, 1, SEQ_CST);
	weft__mutex_unlock(&p->ctl);
	room_wake(p);
	wake_all(p);
	if (how == WEFT_POOL_CANCEL)
		cancel_queued(p);
	for (;;) {
		uint32_t n = atomic_load_explicit(&p->nlive, SEQ_CST);
		if (n == 0)
			break;
		if (weft__futex_wait(&p->nlive, n, deadline) == -ETIMEDOUT &&
		    atomic_load_explicit(&p->nlive, SEQ_CST) != 0) {
			join_ended(p);
			return -ETIMEDOUT;
		}
	}
	join_ended(p);
	return 0;
}

WEFT_API int weft_pool_resize(weft_pool *p, int min_threads, int max_threads)
{
	if (!p)
		return -EINVAL;
	int min, max;
	int r = resolve_threads(min_threads, max_threads, p->cpu_budget, &min, &max);
	if (r < 0)
		return r;
	if (from_parent(p->fork_gen))
		return -ESHUTDOWN;
	weft__mutex_lock(&p->ctl);
	if (atomic_load_explicit(&p->closing, RELAXED)) {
		weft__mutex_unlock(&p->ctl);
		return -ESHUTDOWN;
	}
	atomic_store_explicit(&p->min_threads, min, RELAXED);
	atomic_store_explicit(&p->max_threads, max, RELAXED);
	r = 0;
	while ((int)atomic_load_explicit(&p->nlive, RELAXED) < min) {
		if ((r = spawn_locked(p, false)) < 0)
			break;
	}
	bool excess = (int)atomic_load_explicit(&p->nlive, RELAXED) > max;
	weft__mutex_unlock(&p->ctl);
	if (excess)
		wake_all(p); /* parked extras retire at once; running ones after their task */
	return r;
}

const void *weft__future_word(const weft_future *f)
{
	return &f->state;
}

size_t weft__pool_free_futures(weft_pool *p)
{
	weft__mutex_lock(&p->arena->lock);
	size_t n = p->arena->nfree;
	weft__mutex_unlock(&p->arena->lock);
	return n;
}

WEFT_API int weft_pool_verdict_get(weft_pool *p, weft_pool_verdict *ret)
{
	if (!p || !ret)
		return -EINVAL;
	if (from_parent(p->fork_gen))
		return -ESHUTDOWN; /* the tick thread may have held the lock at the fork */
	weft__mutex_lock(&p->verdict_lock);
	*ret = p->verdict;
	weft__mutex_unlock(&p->verdict_lock);
	return 0;
}
