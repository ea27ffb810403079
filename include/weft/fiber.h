/* weft/fiber.h: fibers, the M:N green threads. Many thousands of fibers run on a few worker
 * threads (one per CPU of the budget by default); a fiber that waits (on a channel, a timer, a
 * mutex, a scope) parks and its worker runs another one. Idle workers steal runnable fibers from
 * busy ones. docs/fiber.md explains the model, what is safe across a switch, and every limit.
 *
 * The conventions of weft/core.h hold: 0 or a count on success, a negative errno on failure,
 * ret_* written only on success, absolute deadlines in ns on CLOCK_MONOTONIC (WEFT_FOREVER = -1).
 * Calls that wait take a deadline and return -ETIMEDOUT when it passes and -ECANCELED when the
 * fiber's scope is cancelled (from then on every wait of that fiber returns -ECANCELED at once).
 * Functions marked "fiber only" return -EPERM when called outside a fiber.
 *
 * Structured concurrency: every fiber belongs to a scope. A scheduler has a root scope; scopes
 * nest. Cancelling a scope cancels its fibers and its child scopes; joining a scope waits until
 * every fiber in it (and in its children) has finished. A scope cannot be freed while it has
 * fibers, so no fiber is ever orphaned.
 */
#ifndef WEFT_FIBER_H
#define WEFT_FIBER_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_sched weft_sched;
typedef struct weft_scope weft_scope;

/* A fiber's state. */
enum weft_fiber_state {
	WEFT_FIBER_RUNNABLE = 0, /* in a run queue */
	WEFT_FIBER_RUNNING,      /* on a worker */
	WEFT_FIBER_WAITING,      /* parked; wait_reason says on what */
	WEFT_FIBER_DEAD,         /* finished (only seen in a dump racing with the exit) */
};

/* Why a fiber waits: one enum for every blocking point, one string table (weft_wait_reason_name).
 */
enum weft_wait_reason {
	WEFT_WAIT_NONE = 0,
	WEFT_WAIT_SLEEP,     /* weft_fiber_sleep_until */
	WEFT_WAIT_CHAN_SEND, /* weft_chan_send: no receiver, no room */
	WEFT_WAIT_CHAN_RECV, /* weft_chan_recv: no sender, nothing buffered */
	WEFT_WAIT_SELECT,    /* weft_chan_select */
	WEFT_WAIT_MUTEX,     /* weft_fmutex_lock */
	WEFT_WAIT_COND,      /* weft_fcond_wait */
	WEFT_WAIT_SEM,       /* weft_fsem_acquire */
	WEFT_WAIT_WAITGROUP, /* weft_waitgroup_wait */
	WEFT_WAIT_JOIN,      /* weft_scope_join */
	WEFT_WAIT_IO,        /* the reactor (fiber IO) */
	WEFT_WAIT_BLOCKING,  /* a call offloaded to the pool */
	WEFT_WAIT_COUNT_,
};

/* "runnable", "running", "waiting", "dead"; "unknown" otherwise. */
WEFT_API const char *weft_fiber_state_name(int state);
/* "none", "sleep", "chan-send", "chan-recv", "select", "mutex", "cond", "sem", "waitgroup",
 * "join", "io", "blocking"; "unknown" otherwise. */
WEFT_API const char *weft_wait_reason_name(int reason);

/* ------------------------------------------------------------------------------------------------
 * The scheduler.
 */
#define WEFT_SCHED_THREADS_MAX 1024
#define WEFT_FIBER_STACK_MIN ((size_t)2 * 1024)
#define WEFT_FIBER_STACK_DEFAULT ((size_t)64 * 1024)
#define WEFT_FIBER_STACK_MAX ((size_t)64 * 1024 * 1024)
#define WEFT_FIBERS_DEFAULT_MAX 1000000
#define WEFT_FIBERS_MAX 100000000

/* Stack guard pages. */
enum weft_sched_guard {
	WEFT_GUARD_AUTO = 0, /* a guard page per stack while the kernel's map budget allows (each
	                        guarded stack takes two of vm.max_map_count's mappings), then a
	                        canary checked on every switch (the default) */
	WEFT_GUARD_ALWAYS,   /* a guard page always: a spawn past the map budget gets -ENOMEM */
	WEFT_GUARD_NEVER,    /* canaries only */
};

#define WEFT_SCHED_SAVE_FPU                                                                        \
	0x1u /* save and restore the FPU control words (x87 CW, MXCSR;                             \
	        FPCR on aarch64) on every switch: for fibers that change the                       \
	        rounding mode or the exception mask */

typedef struct weft_sched_opts {
	const char *name;   /* metrics label sched="NAME", worker thread names "NAME-N"; NULL:
	                       "fiber". At most 63 bytes. */
	int threads;        /* worker threads; 0: the CPU budget's thread count. At most
	                       WEFT_SCHED_THREADS_MAX. */
	size_t stack_size;  /* default usable stack per fiber; 0: WEFT_FIBER_STACK_DEFAULT;
	                       WEFT_FIBER_STACK_MIN..WEFT_FIBER_STACK_MAX. Below a page, stacks share
	                       pages and have only a canary (for a million tiny fibers; a signal
	                       handler then needs sigaltstack). */
	long max_fibers;    /* fibers alive at once; a spawn past it gets -EAGAIN; 0:
	                       WEFT_FIBERS_DEFAULT_MAX; at most WEFT_FIBERS_MAX */
	int guard;          /* enum weft_sched_guard */
	unsigned flags;     /* WEFT_SCHED_* */
	size_t stack_cache; /* bytes of free stacks (their mapped size; each keeps the pages its
	                       last fiber touched) each worker keeps for reuse, and the spare list
	                       as much again per worker however long unused; 0: 64 MiB. Past it,
	                       the spare list keeps a burst's stacks until they sit unused for a
	                       second (docs/fiber.md, Limits) */
	weft_metrics
	        *metrics; /* registry for the scheduler's series; NULL: weft_metrics_global() */
} weft_sched_opts;

/* Create a scheduler and start its workers. -EINVAL (ret NULL, a value out of range, unknown
 * flags or guard), -ENOMEM, -EAGAIN (no thread), -EEXIST (a scheduler of this name already reports
 * to that registry). */
WEFT_API int weft_sched_create(weft_sched **ret, const weft_sched_opts *opts);

/* Cancel the root scope, wait for every fiber to finish, stop the workers and free. NULL is fine.
 * Must not be called from a fiber of this scheduler (it aborts). Fibers that ignore cancellation
 * and never finish make it wait forever: call weft_scope_join on the root scope with a deadline
 * first to know. */
WEFT_API void weft_sched_destroy(weft_sched *s);

/* fork: a child process may create schedulers of its own and use them. A scheduler of the parent
 * is not the child's (its threads do not exist there): its calls return -ESHUTDOWN, except
 * weft_sched_destroy, which frees the child's copy without touching threads and takes its series
 * out of its metrics registry (with the registry's lock: a registry a thread of the parent was
 * exporting at the fork cannot be used in the child at all). A child forked from inside a fiber
 * must exec or _exit. */

/* The scheduler's root scope (valid until weft_sched_destroy). NULL for NULL. */
WEFT_API weft_scope *weft_sched_root(weft_sched *s);

/* The scheduler the calling fiber runs on; NULL outside a fiber. */
WEFT_API weft_sched *weft_sched_current(void);

/* ------------------------------------------------------------------------------------------------
 * Fibers.
 */
typedef void (*weft_fiber_fn)(void *arg);

typedef struct weft_spawn_opts {
	const char *name;  /* the fiber's name in dumps (copied, at most 31 bytes kept); NULL: the
	                      function's symbol when it can be found, else "fiber" */
	size_t stack_size; /* 0: the scheduler's */
	bool pinned;       /* never migrates: stays on the worker that first runs it (for code that
	                      keeps pointers to thread-locals) */
} weft_spawn_opts;

/* Spawn fn(arg) as a new fiber in `scope`; it runs soon on some worker. Any thread may spawn (a
 * fiber, or a plain thread). The spawn site (the caller's return address) is recorded for dumps.
 * *ret_id (may be NULL) gets the fiber's id, unique in the process. -EINVAL (scope or fn NULL, bad
 * opts), -ECANCELED (the scope is cancelled or closed), -EAGAIN (max_fibers alive), -ENOMEM,
 * -ESHUTDOWN (the scheduler is being destroyed, or belongs to the parent of a fork). */
WEFT_API int weft_spawn(weft_scope *scope, weft_fiber_fn fn, void *arg, const weft_spawn_opts *opts,
                        uint64_t *ret_id);

/* Fiber only: let other runnable fibers run; the caller goes to the back of its worker's queue.
 * Returns 0, -ECANCELED when the scope is cancelled (it still yields). */
WEFT_API int weft_fiber_yield(void);

/* Fiber only: park until the deadline. 0 when it passed; -ECANCELED if cancelled first. */
WEFT_API int weft_fiber_sleep_until(int64_t deadline);

/* The calling fiber's id; 0 outside a fiber. */
WEFT_API uint64_t weft_fiber_id(void);

/* Fiber only: rename the calling fiber (copied; at most 31 bytes kept). -EINVAL for NULL. */
WEFT_API int weft_fiber_set_name(const char *name);

/* Fiber only: -ECANCELED if the calling fiber's scope has been cancelled, else 0. */
WEFT_API int weft_fiber_cancelled(void);

/* ------------------------------------------------------------------------------------------------
 * Scopes.
 */

/* A new scope inside `parent`. -EINVAL, -ECANCELED (parent cancelled or closed), -ENOMEM. */
WEFT_API int weft_scope_create(weft_scope **ret, weft_scope *parent);

/* Cancel every fiber in the scope and its children: their waits return -ECANCELED, now and from
 * then on; new spawns into it fail with -ECANCELED. Idempotent. Any thread. -EINVAL for NULL. */
WEFT_API int weft_scope_cancel(weft_scope *scope);

/* Wait until every fiber of the scope and of its children has finished. From a fiber it parks
 * (a fiber may not join its own scope or an ancestor of it: -EDEADLK); from a thread it blocks.
 * 0; -ETIMEDOUT at the deadline; -ECANCELED if the joining fiber is itself cancelled. */
WEFT_API int weft_scope_join(weft_scope *scope, int64_t deadline);

/* Cancel, join (forever) and free a scope made by weft_scope_create. NULL is fine. Not for the root
 * scope. */
WEFT_API void weft_scope_destroy(weft_scope *scope);

/* Fibers alive in the scope and its children now. */
WEFT_API long weft_scope_fibers(const weft_scope *scope);

/* ------------------------------------------------------------------------------------------------
 * Synchronization between fibers. The objects live in the caller's storage; all-zero bytes
 * (WEFT_FMUTEX_INIT and friends, or memset) are a valid initial state, so no init call is needed
 * and none can fail. Waiting (lock, wait, acquire) is for fibers only (of any scheduler in the
 * process); signal, broadcast, release, tryacquire, add, done and destroy also work from plain
 * threads (trylock and unlock need a fiber: a mutex is owned by one). A waker never touches an
 * object after waking its waiter, so the waiter may free it once its call returns. The
 * *_destroy functions only check: -EBUSY while a fiber waits (or the mutex is held), else 0.
 * A call that can finish without waiting does so even in a cancelled fiber (cleanup code can take
 * a free mutex). Timed waits may also return -ENOMEM: no memory for the timer.
 */
typedef struct weft_fmutex {
	uint64_t opaque_[4];
} weft_fmutex;
typedef struct weft_fcond {
	uint64_t opaque_[4];
} weft_fcond;
typedef struct weft_fsem {
	uint64_t opaque_[4];
} weft_fsem;
typedef struct weft_waitgroup {
	uint64_t opaque_[4];
} weft_waitgroup;
#define WEFT_FMUTEX_INIT                                                                           \
	{                                                                                          \
		{                                                                                  \
			0                                                                          \
		}                                                                                  \
	}
#define WEFT_FCOND_INIT                                                                            \
	{                                                                                          \
		{                                                                                  \
			0                                                                          \
		}                                                                                  \
	}
#define WEFT_FSEM_INIT                                                                             \
	{                                                                                          \
		{                                                                                  \
			0                                                                          \
		}                                                                                  \
	}
#define WEFT_WAITGROUP_INIT                                                                        \
	{                                                                                          \
		{                                                                                  \
			0                                                                          \
		}                                                                                  \
	}

/* Fiber only. Lock; waiters are served in FIFO order (a hand-off: the unlocker gives the lock to
 * the first waiter). 0, -ETIMEDOUT, -ECANCELED (the lock is not held then), -EDEADLK if the caller
 * holds it already. */
WEFT_API int weft_fmutex_lock(weft_fmutex *m, int64_t deadline);
/* 0 if taken, -EBUSY if not. Any fiber. */
WEFT_API int weft_fmutex_trylock(weft_fmutex *m);
/* 0, or -EPERM if the caller does not hold it. */
WEFT_API int weft_fmutex_unlock(weft_fmutex *m);
WEFT_API int weft_fmutex_destroy(weft_fmutex *m);

/* Fiber only. Unlock m, wait for a signal, relock m (also on -ETIMEDOUT and -ECANCELED, as
 * pthread_cond_wait does; the relock itself is not cancellable). -EPERM if m is not held. */
WEFT_API int weft_fcond_wait(weft_fcond *c, weft_fmutex *m, int64_t deadline);
WEFT_API int weft_fcond_signal(weft_fcond *c);
WEFT_API int weft_fcond_broadcast(weft_fcond *c);
WEFT_API int weft_fcond_destroy(weft_fcond *c);

/* A counting semaphore; the all-zero one has 0 permits: weft_fsem_release adds them. */
WEFT_API int weft_fsem_acquire(weft_fsem *s, int64_t deadline); /* fiber only */
WEFT_API int weft_fsem_tryacquire(weft_fsem *s);                /* -EAGAIN if none */
/* Add n permits (1..INT32_MAX); -EOVERFLOW past INT64_MAX permits. */
WEFT_API int weft_fsem_release(weft_fsem *s, int n);
WEFT_API int weft_fsem_destroy(weft_fsem *s);

/* A wait group: add before spawning, done when a fiber finishes, wait until the count is 0. add
 * with a negative n that takes the count below 0 gives -EINVAL, and one past WEFT_WAITGROUP_MAX
 * -EOVERFLOW; neither changes anything. add and done are one atomic operation unless they take the
 * count to 0 while a fiber waits. A group may be freed once the count is 0 and every call on it
 * has returned (a waiter may free it as soon as its wait returns 0). */
#define WEFT_WAITGROUP_MAX (INT64_MAX / 2)
WEFT_API int weft_waitgroup_add(weft_waitgroup *wg, long n);
WEFT_API int weft_waitgroup_done(weft_waitgroup *wg);
WEFT_API int weft_waitgroup_wait(weft_waitgroup *wg, int64_t deadline); /* fiber only */
WEFT_API int weft_waitgroup_destroy(weft_waitgroup *wg);

/* ------------------------------------------------------------------------------------------------
 * Channels: typed by element size, buffered (capacity > 0) or unbuffered (0: a send waits for a
 * receiver, and a receiver waiting is handed the value and switched to directly). Any fiber may
 * send and receive. Closing wakes every waiter: receivers drain what is buffered, then get -EPIPE;
 * senders get -EPIPE.
 */
typedef struct weft_chan weft_chan;

#define WEFT_CHAN_ELEM_MAX 65536
#define WEFT_CHAN_CAPACITY_MAX ((size_t)1 << 30)

/* -EINVAL (elem_size 0 or > WEFT_CHAN_ELEM_MAX, capacity > WEFT_CHAN_CAPACITY_MAX), -ENOMEM. */
WEFT_API int weft_chan_create(weft_chan **ret, size_t elem_size, size_t capacity);
/* Free. Must have no waiters (it aborts otherwise: a fiber would be left parked forever). NULL is
 * fine. */
WEFT_API void weft_chan_destroy(weft_chan *ch);
/* Fiber only: copy elem_size bytes from elem into the channel. 0, -ETIMEDOUT, -ECANCELED,
 * -EPIPE (closed). */
WEFT_API int weft_chan_send(weft_chan *ch, const void *elem, int64_t deadline);
/* Fiber only: copy a value into elem. 0, -ETIMEDOUT, -ECANCELED, -EPIPE (closed and empty). */
WEFT_API int weft_chan_recv(weft_chan *ch, void *elem, int64_t deadline);
/* Any fiber: no waiting. 0, -EAGAIN (would wait), -EPIPE. */
WEFT_API int weft_chan_try_send(weft_chan *ch, const void *elem);
WEFT_API int weft_chan_try_recv(weft_chan *ch, void *elem);
/* Any thread or fiber. 0, -EPIPE if already closed. */
WEFT_API int weft_chan_close(weft_chan *ch);
/* Values buffered now, and the capacity. */
WEFT_API size_t weft_chan_len(const weft_chan *ch);
WEFT_API size_t weft_chan_cap(const weft_chan *ch);

enum weft_select_op { WEFT_SELECT_SEND = 1, WEFT_SELECT_RECV = 2 };

typedef struct weft_select_case {
	weft_chan *chan; /* NULL: the case is skipped */
	int op;          /* enum weft_select_op */
	void *elem;      /* the value to send, or where to put the received one */
} weft_select_case;

/* Fiber only: wait until one of the cases can proceed, do it, and return its index. When several
 * are ready at once one is chosen uniformly at random (no case starves). A case on a closed
 * channel is ready: it is returned with -EPIPE in *ret_result (may be NULL) for a send, or for a
 * receive from a closed and empty channel; else 0 there. -ETIMEDOUT (deadline 0 polls once),
 * -ECANCELED, -EINVAL (cases NULL, n 0 or > 64 or every chan NULL, a bad op). */
#define WEFT_SELECT_MAX 64
WEFT_API int weft_chan_select(weft_select_case *cases, int n, int64_t deadline, int *ret_result);

/* ------------------------------------------------------------------------------------------------
 * Introspection.
 */

/* Write every fiber of every scheduler as text into *ret_text (malloc'd; free it): id, name,
 * state, wait reason and for how long, spawn site, scheduler and worker, and a symbolized stack
 * trace for each parked fiber. Any thread. -ENOMEM. */
WEFT_API int weft_fiber_dump(char **ret_text, size_t *ret_len);

typedef struct weft_sched_stats {
	long fibers_alive;
	uint64_t spawned;
	uint64_t switches;
	uint64_t steals;
	long runnable;           /* fibers in run queues now */
	long guarded_stacks;     /* stacks with a guard page now */
	long canary_stacks;      /* stacks with only a canary now */
	size_t stack_high_water; /* the deepest stack use seen at a switch, in bytes */
	int threads;
} weft_sched_stats;

/* A snapshot of the scheduler's counters. -EINVAL for NULL. */
WEFT_API int weft_sched_stats_get(weft_sched *s, weft_sched_stats *ret);

#ifdef __cplusplus
}
#endif

#endif
