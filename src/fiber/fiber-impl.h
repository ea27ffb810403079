/* The scheduler's private structures, shared by src/fiber/{sched,stack,timer,scope,dump}.c.
 * sched.c's head comment is the design; this header only lays the structures out. The padN_
 * arrays keep what follows off the cache line of what precedes (the structures come from calloc,
 * which gives no 64-byte alignment, so _Alignas(64) would be a promise the allocator breaks). */
#ifndef WEFT_FIBER_IMPL_H
#define WEFT_FIBER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/fiber.h>

#include "internal/common.h"
#include "internal/fiber.h"
#include "internal/hist.h"
#include "internal/lock.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define WEFT__VALGRIND 1
#endif
#endif
#ifndef WEFT__VALGRIND
#define WEFT__VALGRIND 0
#endif

typedef struct worker worker;

/* The wait word: (seq << 2) | st. seq counts the fiber's waits; a token is a seq. */
enum { WAIT_NONE = 0, WAIT_WAITING = 1, WAIT_CLAIMED = 2 };

/* A stack: one mapping [map, map + map_size); the usable stack is [lo, hi); the fiber struct sits
 * at the top, above hi. Guarded stacks have a PROT_NONE page at map. */
typedef struct weft__stack {
	void *map;
	size_t map_size;
	char *lo, *hi;
	bool guarded;
	bool mapped;      /* mmap'd (guarded), else weft__malloc'd */
	unsigned vg_id;   /* valgrind's stack id */
	void *tsan_fiber; /* TSan's state for the fibers that use it, reused */
} weft__stack;

struct weft__fiber {
	/* hot: touched on every switch */
	void *sp;           /* the saved context while not running */
	_Atomic int on_cpu; /* 1 from switch-in until the next context has switched away from
	                       it (finish_switch): nobody may switch into it before 0 */
	_Atomic uint64_t wait_word; /* the wait protocol (internal/fiber.h) */
	int wake_result;            /* written by the claim's winner before the ready */
	_Atomic int cancelled;      /* the scope was cancelled: every wait returns -ECANCELED */
	_Atomic int nocancel;       /* the current wait ignores cancellation */
	weft__fiber *next;          /* run queues' intrusive links (injection queue, inbox); a
	                               stack cache's list once it is dead (stack.c) */
	worker *home;               /* pinned: the worker it stays on once it has run */
	worker *cur;                /* the worker it runs on (or last ran on) */
	bool pinned;
	bool requeue;    /* finish_switch puts it back in a run queue (a yield) */
	uint64_t canary; /* the value at stack.lo (canary stacks) */
	weft__stack stack;
	size_t stack_req; /* the usable size asked for (the stack may be a little larger) */
	weft_sched *sched;

	/* timers (timer.c), under the heap's lock */
	_Atomic(struct timer_heap *) timer_heap; /* the heap holding its timer, or NULL */
	int timer_index;
	int64_t timer_deadline;
	uint64_t timer_tok;

	/* the scope (scope.c): a shard's list, under the shard's lock */
	weft_scope *scope;
	int shard;
	weft__fiber *scope_prev, *scope_next;
	worker *spawner; /* the worker that spawned it (it owns the shard), NULL: a plain thread */

	/* introspection */
	_Atomic int state;       /* enum weft_fiber_state */
	_Atomic int wait_reason; /* enum weft_wait_reason */
	const void *wait_obj;
	_Atomic int64_t wait_since;
	_Atomic int worker_index; /* the worker it last ran on, -1 before */
	int64_t ready_at;         /* sampled: when it was made runnable (0: not sampled) */
	uint64_t id;
	weft_fiber_fn fn;
	void *arg;
	void *spawn_site;
	char name[32];

	/* sanitizers */
	void *tsan_fiber;
	void *asan_fake_stack;
};

/* A per-worker 4-ary min-heap of fibers by timer deadline (timer.c). */
typedef struct timer_heap {
	weft__spin lock;
	_Atomic int64_t next; /* earliest deadline, INT64_MAX when empty (read without the lock) */
	weft__fiber **v;
	int n, cap;
} timer_heap;

#define RUNQ_SIZE 1024

struct worker {
	weft_sched *s;
	int index;
	pthread_t thread;
	bool started;

	/* the worker's own context: the thread's stack, running the scheduling loop */
	void *loop_sp;
	void *loop_tsan_fiber;
	void *loop_asan_fake_stack;
	const void *loop_stack_lo;
	size_t loop_stack_size;

	weft__fiber *current;   /* running now, NULL in the loop */
	weft__fiber *loop_next; /* for the loop to run next (see direct_target in sched.c) */
	weft__fiber *prev;      /* what finish_switch completes */
	bool prev_dead;
	bool solo; /* the scheduler's only worker: no stealers, nobody else to wake */

	/* the run queue: a ring the owner pushes at tail and everyone takes from head (CAS) */
	char pad1_[64];
	_Atomic uint32_t head;
	_Atomic uint32_t tail;
	_Atomic(weft__fiber *) runnext;
	_Atomic(weft__fiber *) ring[RUNQ_SIZE];

	/* pinned fibers readied by others: only this worker runs them */
	char pad2_[64];
	weft__spin inbox_lock;
	weft__fiber *inbox_head, *inbox_tail;
	_Atomic long inbox_n;

	/* fibers spawned here that died on another worker, still in their scope shard's list:
	 * stacks pushed by those workers (CAS), taken whole (exchange; scope.c) */
	char pad8_[64];
	_Atomic(weft__fiber *) remote_dead;  /* of sub-scopes: reaped in bulk */
	_Atomic(weft__fiber *) remote_root;  /* of the root scope: reaped as it spawns */
	_Atomic long remote_root_n;          /* pushes onto remote_root ever (after each) */
	char pad9_[64 - 3 * sizeof(void *)]; /* what follows keeps its place on its lines */

	/* parking */
	char pad3_[64];
	_Atomic uint32_t futex; /* 1: woken */
	_Atomic int idle;       /* on the idle list (under sched.idle_lock) */
	worker *idle_next;
	bool spinning;

	/* on lines of its own: every worker's loop reads `next` (run_due_timers, earliest_timer),
	 * and the owner's spawns write `cache` every time; on one line, each look of another
	 * worker for work cost the spawner a transfer of it (measured with a worker that looks
	 * without stealing: spawn on two workers 500 ns, 350 with the lines apart) */
	char pad11_[64];
	timer_heap timers;
	char pad12_[64];

	/* stack cache (stack.c): dead fibers' blocks (stacks of the scheduler's default size,
	 * with their control blocks at the top) */
	weft__fiber *cache;
	size_t cache_bytes;

	/* fiber ids: [id_next, id_end) taken from the process's counter in blocks */
	uint64_t id_next, id_end;

	/* counters, written by this worker only (relaxed), summed by readers */
	_Atomic uint64_t switches, steals, spawned;
	_Atomic uint64_t high_water;
	uint64_t high_water_seen; /* the same, the owner's copy */
	uint32_t countdown;       /* schedule calls until the periodic checks (find_periodic) */
	int64_t clock; /* weft_now() when this worker last looked at the timers (at least every 61
	                  schedule calls, whenever its loop looks for work, and after it parks):
	                  what a wait records as its start for dumps. Late by at most the run time
	                  of the fibers since then (one that computes for a second without a switch
	                  and then parks shows a second too many) */
	uint64_t rng;

	weft_gauge *queue_gauge; /* weft_fiber_runqueue_length{worker="index"} */
	void *altstack;
	size_t altstack_size;

	/* scope.c, owner-written (at the end: the hot fields above keep their lines) */
	weft__fiber *reaping;     /* remote_root taken whole, not yet unlinked (the owner's) */
	_Atomic long root_reaped; /* blocks unlinked from remote_root ever (the owner's
	                             relaxed stores; a test hook reads it): the backlog is
	                             remote_root_n - root_reaped (a lower bound, exact at rest) */
	uint64_t reap_id; /* id_next at the last periodic check: no spawn of its own since */
	/* units of the root's count this worker holds that are no fiber's (exits not given back
	 * yet, spawns taken ahead): root_got - root_used, two counters that only grow, so that a
	 * reader can bound the sum (scope.c: weft__root_alive) */
	_Atomic long root_got, root_used;
	char pad10_[64]; /* the next worker's first fields (written at every switch) */
};

struct weft_scope {
	weft_sched *s;
	weft_scope *parent;
	bool is_root;
	_Atomic int cancelled;
	_Atomic long alive;   /* fibers in this scope and its descendants */
	_Atomic long exiting; /* fibers between their decrement of alive and their last touch */

	weft__spin children_lock; /* children list, and cancelled transitions */
	weft_scope *child_head, *sib_next, *sib_prev;

	weft__spin join_lock; /* fiber joiners */
	struct join_waiter *joiners;
	_Atomic uint32_t join_seq; /* futex for thread joiners: bumped when alive reaches 0 */
	_Atomic int thread_joiners;

	int nshards;
	struct scope_shard {
		char pad4_[64];
		weft__spin lock;
		weft__fiber *head;
	} * shards;
};

struct weft_sched {
	char name[64];
	int nworkers;
	size_t stack_size; /* the default, rounded */
	long max_fibers;
	int guard;
	unsigned flags;
	/* 1: the root's count is within ROOT_NEAR of max_fibers (scope.c's head comment); read at
	 * every spawn and exit, written when the count crosses the margins (rarely) */
	_Atomic int root_near;
	size_t stack_cache;
	worker *workers;
	weft_scope root;

	char pad5_[64];
	_Atomic long alive;
	_Atomic int shutdown;
	_Atomic uint32_t running; /* workers that have started (futex for create) */

	/* the injection queue: spawns and wakes from plain threads, run-queue overflow */
	char pad6_[64];
	weft__spin inject_lock;
	struct weft__inject_chunk *inject_first, *inject_last; /* the queue, oldest first */
	struct weft__inject_chunk *inject_free;                /* empty ones kept for reuse */
	int inject_nfree;
	bool inject_turn;                       /* chunks and list both hold some: whose turn */
	weft__fiber *inject_head, *inject_tail; /* what found no chunk (no memory), via f->next */
	_Atomic long inject_n;                  /* in both */

	/* parking (see sched.c: the wake-up protocol) */
	char pad7_[64];
	_Atomic int nspinning;
	_Atomic int nidle;
	weft__spin idle_lock;
	worker *idle_head;

	_Atomic long guarded, canaried; /* stacks now */

	/* free stacks of the default size beyond the workers' caches, for spawns from plain
	 * threads and workers whose cache is empty, and what a burst left past the floor until a
	 * period has shown it unused (stack.c: Caching) */
	weft__spin spare_lock;
	weft__fiber *spare;
	size_t spare_bytes;
	size_t spare_floor; /* stack_cache per worker: kept however long it sits unused */
	size_t spare_low;   /* the least spare_bytes since the period began */
	size_t spare_owed;  /* bytes the last period left unused past the floor, still to free */
	/* when the next trim step is due (weft_now); INT64_MAX while the spare is within its
	 * floor. Read without the lock by every worker's periodic check and before it parks. */
	_Atomic int64_t spare_trim_at;
	_Atomic int trim_sleeper; /* 1: a parked worker sleeps until spare_trim_at (sched.c) */

	/* metrics */
	weft_metrics *metrics;
	void *series[12];
	int nseries;
	weft_hist *runnable_hist; /* time runnable before running, sampled */

	uint64_t fork_gen;               /* the process's fork generation at create */
	weft_sched *all_next, *all_prev; /* every scheduler of the process (dump) */
};

/* sched.c */
extern _Thread_local worker *weft__tls_worker;
extern _Thread_local weft__fiber *weft__tls_fiber; /* the fiber this thread runs, or NULL */
void weft__ready(weft_sched *s, weft__fiber *f, enum weft__ready_how how);
void weft__cancel_barrier(void); /* C2 of the cancellation pair (sched.c's head comment) */
void weft__fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
uint64_t weft__fork_gen(void);

/* stack.c */
extern bool weft__on_valgrind; /* memcheck calls the canary's read (below the stack pointer) an
                                  error: the check then runs with error reports off */

static inline bool weft__canary_ok(const weft__fiber *f)
{
	const volatile uint64_t *c = (const volatile uint64_t *)(const void *)f->stack.lo;
#if WEFT__VALGRIND
	if (weft__unlikely(weft__on_valgrind)) {
		VALGRIND_DISABLE_ERROR_REPORTING;
		bool ok = *c == f->canary;
		VALGRIND_ENABLE_ERROR_REPORTING;
		return ok;
	}
#endif
	return *c == f->canary;
}

/* A prefetch for writing: the line comes in owned, so the stores that follow need no second
 * trip to take it from the core that wrote it last (a block of a fiber that died on another
 * worker, the frames of a stolen fiber). gcc emits x86-64's PREFETCHW for __builtin_prefetch(p, 1)
 * only when built for a CPU that has it (-mprfchw), which a distribution's build is not: without
 * it the line comes in shared and each store then waits for the other core's copy to be
 * invalidated (measured: spawn on two workers about 118 against 130 ns). So the instruction is
 * written here, used where cpuid says the CPU has it (weft__have_prefetchw, set by sched.c's
 * process_init), a read prefetch elsewhere. aarch64's __builtin_prefetch(p, 1) is PRFM
 * PSTL1KEEP already. */
extern bool weft__have_prefetchw;
static inline void weft__prefetch_w(const void *p)
{
#if defined(__x86_64__)
	if (weft__likely(weft__have_prefetchw))
		__asm__("prefetchw %0" : : "m"(*(const char *)p));
	else
		__builtin_prefetch(p, 0, 3);
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

/* Bring a fiber's block into the cache ahead of its use: its control block and the newest frames
 * below it (the block sits at the top of the stack). A wave of spawns reuses blocks last touched
 * a wave ago, out of L1 by then; so does a wave of new fibers when it runs. Without it, the
 * cache misses of those stores showed as the time of the next locked instruction (which waits
 * for them): a quarter of a spawn's time. For the next spawn (stack.c, as the cache hands a
 * block out) and for the next fiber of the run queue (sched.c, as one is taken). */
static inline void weft__prefetch_block(const weft__fiber *f)
{
	const char *p = (const char *)f;
	for (size_t off = 0; off < sizeof(*f) - 16; off += 64) /* not the ASan/TSan-only tail */
		weft__prefetch_w(p + off);
	weft__prefetch_w(p - 64); /* the first frame (weft__ctx_make: 72 bytes) */
	weft__prefetch_w(p - 128);
}

int weft__stack_get(weft_sched *s, worker *w, size_t size, weft__fiber **ret);
void weft__stack_put(weft_sched *s, worker *w, weft__fiber *f);
void weft__stack_cache_free(weft_sched *s, worker *w);
void weft__stack_spare_free(weft_sched *s);
void weft__stack_trim(weft_sched *s, int64_t now);
int weft__stack_init_process(void);
int weft__stack_altstack(worker *w);
void weft__stack_altstack_free(worker *w);
void weft__stack_overflow_report(const weft__fiber *f, const char *how);

/* timer.c */
int weft__timer_add(timer_heap *h, weft__fiber *f, int64_t deadline, uint64_t tok);
void weft__timer_del(weft__fiber *f);
int weft__timers_run(weft_sched *s, timer_heap *h, int64_t now);
void weft__timer_heap_free(timer_heap *h);

/* scope.c */
int weft__scope_init_root(weft_sched *s);
void weft__scope_free_root(weft_sched *s);
/* w: the spawner's worker, or NULL (a plain thread) */
int weft__scope_attach(weft_scope *sc, weft__fiber *f, worker *w);
/* f finishes on worker w, the one it runs on */
void weft__scope_exit(weft__fiber *f, worker *w);
void weft__scope_release(weft_scope *sc, bool with_root);
bool weft__root_take_slow(weft_sched *s, worker *w);
void weft__root_put(weft_sched *s, worker *w);
void weft__root_flush(worker *w, long keep);
long weft__root_alive(const weft_sched *s);
void weft__remote_push(weft__fiber *f);
void weft__remote_reap(weft_sched *s, worker *from, worker *w);
weft__fiber *weft__remote_reap_one_slow(worker *w);
void weft__remote_reap_root(worker *w, long max);

/* f ends on worker w, another than its spawner's: its scope's list is the spawner's to leave. */
static inline bool weft__scope_exit_remote(const weft__fiber *f, const worker *w)
{
	return f->spawner && f->spawner != w;
}

/* A spawn's unit of the root's count (scope.c's head comment): one of w's when it has one and
 * the count is far from max_fibers (near it, the slow path hands out units one by one). */
static inline bool weft__root_take(weft_sched *s, worker *w)
{
	if (weft__likely(w) &&
	    weft__likely(!atomic_load_explicit(&s->root_near, memory_order_relaxed))) {
		long u = atomic_load_explicit(&w->root_used, memory_order_relaxed);
		if (weft__likely(atomic_load_explicit(&w->root_got, memory_order_relaxed) > u)) {
			/* before the fiber is published (release): see weft__root_alive */
			atomic_store_explicit(&w->root_used, u + 1, memory_order_relaxed);
			return true;
		}
	}
	return weft__root_take_slow(s, w);
}

/* Blocks of w's root fibers that died on other workers wait to be unlinked (scope.c). */
static inline bool weft__remote_root_pending(worker *w)
{
	return w->reaping || atomic_load_explicit(&w->remote_root, memory_order_relaxed);
}

/* How many blocks of w's root fibers that died elsewhere wait (the owner; or, lagging the reaps
 * too, any thread: scope.c's test hook). May lag the pushes. */
static inline long weft__remote_root_backlog(worker *w)
{
	return atomic_load_explicit(&w->remote_root_n, memory_order_relaxed) -
	       atomic_load_explicit(&w->root_reaped, memory_order_relaxed);
}

/* One block of w's root fibers that died on other workers, unlinked (scope.c), or NULL. */
static inline weft__fiber *weft__remote_reap_one(worker *w)
{
	if (!weft__remote_root_pending(w))
		return NULL;
	return weft__remote_reap_one_slow(w);
}

/* dump.c */
void weft__sched_register(weft_sched *s);
void weft__sched_unregister(weft_sched *s);
void weft__sched_list_after_fork(void);

#endif
