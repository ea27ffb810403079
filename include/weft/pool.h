/* weft/pool.h: the executor thread pool that measures its own load and forecasts a runaway queue
 * before it runs away, and the queueing model behind the forecast (also usable on its own: `weft
 * sim` uses nothing else).
 *
 * The conventions of weft/core.h hold: 0 or a count on success, a negative errno on failure,
 * ret_* written only on success, absolute deadlines in ns on CLOCK_MONOTONIC (WEFT_FOREVER = -1).
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
 * The queueing model: a G/G/c queue. Given an arrival rate, a mean service time, their
 * variability and a number of servers (threads), it says whether the queue is stable, how fast it
 * grows when it is not, the wait a task will see, and the smallest thread count that is stable
 * and that meets a wait target: Erlang C (M/M/c) with the Allen-Cunneen correction
 * Wq(G/G/c) ~= Wq(M/M/c) * (ca2 + cs2) / 2. src/pool/model.c and docs/pool.md give every formula.
 *
 * The computation allocates nothing, takes O(sqrt(a)) steps of a recurrence plus one per thread
 * count from min_stable_threads to threads_for_target (about 0.1 us for the article's case, 5 us
 * at 1000 threads, 0.2 ms near the caps) and is total: every valid input gives finite or infinite
 * results, never NaN.
 */

/* The most threads the model considers: the cap on `threads` and on the searches for
 * min_stable_threads and threads_for_target (-1 there means "none within the cap"). */
#define WEFT_QUEUE_THREADS_MAX 1000000

typedef struct weft_queue_model {
	double arrival_rate; /* lambda, tasks per second (> 0, finite) */
	double service_time; /* S, mean seconds per task on one thread (> 0, finite) */
	int threads;         /* c (1 .. WEFT_QUEUE_THREADS_MAX) */
	double arrival_cv2;  /* squared coefficient of variation of inter-arrival times; 1: Poisson.
	                        A negative value means 1; NaN and infinity are invalid. */
	double service_cv2;  /* the same for service times; 1: exponential, 0: deterministic.
	                        A negative value means 1. */
	double wait_target;  /* seconds a task may wait in the queue (>= 0); 0: 10 % of
	                        service_time */
	double cpus;         /* CPU capacity available (>= 0); 0: unlimited */
	double cpu_fraction; /* fraction of a task's service time spent on CPU (0..1); 0: unknown,
	                        treated as not CPU-bound */
	double queue_max;    /* the queue's bound in tasks (>= 0); 0: unbounded */
	double backlog;      /* tasks queued now (the forecast starts from here); >= 0 */
} weft_queue_model;

typedef struct weft_queue_forecast {
	double offered_load;      /* a = lambda * S in Erlangs; within 1e-9 (relative) of an
	                             integer it is that integer */
	double effective_threads; /* min(threads, cpu_bound_limit): the threads that add
	                             throughput */
	double rho;               /* a / effective_threads (lambda * S / c when not CPU-bound);
	                             stable iff rho < 1 (within 1e-9 of 1 it is 1) */
	bool stable;
	double growth_per_s;  /* queue growth in tasks per second: lambda - effective_threads / S
	                         when unstable (0 at rho = 1 exactly), else 0 */
	double p_wait;        /* probability that a task waits (Erlang C, M/M/c); 1 if unstable */
	double wait_s;        /* mean queue wait in steady state (Allen-Cunneen); INFINITY if
	                         unstable */
	double wait_now_s;    /* the wait of a task submitted now: backlog * S /
	                         effective_threads, plus wait_s when stable */
	double wait_target_s; /* the wait target used (wait_target, or 10 % of S) */
	double backlog_after_1h; /* tasks queued after one hour: backlog + growth * 3600 when
	                            unstable, max(0, backlog - drain rate * 3600) when stable */
	double wait_after_1h_s; /* the wait of a task that arrives after one hour (as wait_now_s) */
	double time_to_full_s;  /* seconds until queue_max is reached; 0 if already full;
	                           INFINITY if never (not growing, or unbounded) */
	double drain_s;         /* stable: seconds to work off `backlog` (0 if none); INFINITY if
	                           unstable */
	int min_stable_threads; /* the smallest c with lambda * S < c (enough CPUs assumed);
	                           -1 if above WEFT_QUEUE_THREADS_MAX */
	int threads_for_target; /* the smallest c >= min_stable_threads whose wait_s <=
	                           wait_target_s (enough CPUs assumed); -1 if none within
	                           WEFT_QUEUE_THREADS_MAX */
	double cpu_bound_limit; /* the most threads that still add throughput (cpus /
	                           cpu_fraction), INFINITY if not CPU-bound or cpus unknown */
	bool budget_allows;     /* threads_for_target != -1 and <= cpu_bound_limit */
} weft_queue_forecast;

/* Compute the forecast into *ret. -EINVAL for NULL or out-of-range inputs (see the field
 * comments); *ret is written only on success. */
WEFT_API int weft_queue_forecast_compute(const weft_queue_model *model, weft_queue_forecast *ret);

/* Erlang C: the probability that an arrival waits in an M/M/c queue with offered load a = lambda *
 * S (in Erlangs) and c servers; 1 when a >= c. Computed with the Erlang B recurrence, which
 * neither overflows nor loses precision for any c, in at most min(c, a + 40 sqrt(a) + 300) steps
 * (a value below 1e-298 is returned as 0). NaN for c < 1, a < 0 or a not finite. */
WEFT_API double weft_erlang_c(int c, double a);

/* A discrete-event simulation of the same G/G/c FIFO queue, to check the formulas against. Each
 * distribution is chosen by its squared coefficient of variation cv2 around the given mean:
 * 0 deterministic, below 1 gamma (shape 1 / cv2; Erlang-k when 1 / cv2 = k), 1 exponential,
 * above 1 a two-phase hyperexponential with balanced means. The queue starts empty; the run
 * stops at the last arrival. Deterministic for a given seed (xoshiro256**). */
#define WEFT_QUEUE_SIM_TASKS_DEFAULT 200000
#define WEFT_QUEUE_SIM_TASKS_MAX 10000000

typedef struct weft_queue_sim {
	double arrival_rate; /* lambda, tasks per second (1e-9 .. 1e9) */
	double service_time; /* S, mean seconds per task (1e-9 .. 1e9) */
	int threads;         /* c (1 .. WEFT_QUEUE_THREADS_MAX) */
	double arrival_cv2;  /* 0 .. 1e4; negative: 1 */
	double service_cv2;  /* 0 .. 1e4; negative: 1 */
	uint64_t tasks; /* arrivals to simulate (<= WEFT_QUEUE_SIM_TASKS_MAX); 0: the default */
	uint64_t seed;  /* any value */
} weft_queue_sim;

typedef struct weft_queue_sim_result {
	uint64_t arrivals;    /* tasks that arrived (= tasks) */
	uint64_t started;     /* tasks that started service by the end */
	uint64_t completed;   /* tasks that finished by the end */
	double duration_s;    /* simulated time: the last arrival's */
	double rho;           /* measured offered load: arrivals / duration * mean service / c */
	double busy_fraction; /* time-average busy threads / c (saturates at 1, unlike rho) */
	double throughput;    /* completed / duration, tasks per second */
	double p_wait;        /* fraction of the started tasks that waited */
	double wait_s;        /* mean queue wait of the started tasks */
	double wait_p50_s;    /* median and 99th percentile of those waits (weft_hist, within */
	double wait_p99_s;    /* WEFT_HIST_REL_ERROR) */
	double wait_max_s;
	double queue_mean;    /* time-average queue length */
	uint64_t queue_final; /* tasks queued at the end */
	double growth_per_s;  /* least-squares slope of the queue length seen by each arrival */
} weft_queue_sim_result;

/* Run the simulation into *ret. -EINVAL for NULL or out-of-range inputs, -ENOMEM. Memory: 8 bytes
 * per thread and per queued task (the queue grows without bound when unstable: at most `tasks`).
 * Time: O(tasks * log threads). */
WEFT_API int weft_queue_simulate(const weft_queue_sim *sim, weft_queue_sim_result *ret);

/* ------------------------------------------------------------------------------------------------
 * The pool.
 */
typedef struct weft_pool weft_pool;
typedef struct weft_future weft_future;

/* A task: runs once on a worker thread (or, by the caller-runs policy, on the submitter); what it
 * returns is its future's result. */
typedef void *(*weft_task_fn)(void *arg);

/* What a submit does when a bounded queue is full. */
enum weft_pool_full {
	WEFT_POOL_FULL_FAIL = 0,    /* the submit returns -EAGAIN (the default) */
	WEFT_POOL_FULL_CALLER_RUNS, /* the submitter runs the task itself, then returns */
	WEFT_POOL_FULL_DROP_OLDEST, /* an old queued task is dropped: the oldest to within the
	                               spread between the workers' queues (its future ends with
	                               -ECANCELED) and the new one queued */
	WEFT_POOL_FULL_BLOCK,       /* the submitter waits for room until its deadline, then
	                               -ETIMEDOUT. A worker of the same pool never waits: it runs
	                               the task itself, so a pool cannot deadlock on its own queue. */
};

/* The verdict, updated on each tick. */
enum weft_pool_state {
	WEFT_POOL_OK = 0,
	WEFT_POOL_STANDING_QUEUE, /* the queue never emptied over the interval: a standing queue */
	WEFT_POOL_RUNAWAY,        /* tasks arrive faster than the pool can finish them */
	WEFT_POOL_STALL,          /* work queued, nothing completing, every worker busy */
	WEFT_POOL_DEADLOCK,       /* a stall where every worker waits on a future of this pool */
};

/* How the verdict is measured (docs/pool.md has every formula). Each tick records the tasks
 * offered, completed, the sampled service and queue-wait times and the queue depth. Two spans
 * of that history are used: the interval, the last opts.window (the smallest wait, the stall),
 * and the sample, the interval extended back until it holds at least 100 arrivals and 20 timed
 * tasks (rates, service time, variability, slope), so that slow pools get enough events for
 * their confidence bounds. Fields that cannot be measured yet (no task finished) are 0. */

typedef struct weft_pool_verdict {
	int64_t at;          /* when it was computed (weft_now) */
	int state;           /* enum weft_pool_state: the most serious condition that holds */
	bool runaway;        /* rho_low >= 1 for `runaway_ticks` ticks, queue not shrinking (the
	                        measured slope >= 0) */
	bool standing_queue; /* min queue wait over the last interval > wait_target */
	bool stall;          /* work queued, nothing completed for stall_after, every worker busy */
	bool deadlock;       /* a stall where every worker is inside weft_future_wait on a future
	                        of this pool (asleep, or running a task of the pool meanwhile) */
	int runaway_ticks;   /* consecutive ticks with rho_low >= 1 */

	/* measured over the sample (see above) */
	double arrival_rate; /* lambda: tasks offered per second, rejected ones included */
	double throughput;   /* tasks completed per second */
	double service_time; /* S: mean wall seconds per task (sampled, see docs/pool.md) */
	double service_cpu;  /* mean CPU seconds per task (sampled) */
	double service_cv2;  /* squared coefficient of variation of service times */
	double arrival_cv2;  /* the same of inter-arrival times, estimated as the index of
	                        dispersion of the per-tick arrival counts (1 until known) */
	int threads;         /* c: worker threads now */
	int busy;            /* workers running a task now */
	double rho;          /* offered load lambda * S / c */
	double rho_low;      /* lower 95 % confidence bound of rho: the arrival count's error
	                        from its measured dispersion, and the standard error of the mean
	                        service time */
	size_t queue_depth;  /* tasks queued now */
	double min_wait_s;   /* the smallest sampled queue wait over the interval (CoDel) */
	double stalled_s;    /* how long nothing has completed while work was queued */

	/* forecast */
	double growth_model;    /* lambda - c / S, tasks per second (negative: spare capacity) */
	double growth_measured; /* the least-squares slope of queue depth over the sample */
	double time_to_full_s;  /* until queue_max, or the memory budget for an unbounded queue,
	                           at the larger of the two growths; INFINITY if not growing */
	double wait_now_s;      /* the queue wait of a task submitted now: depth * S / c with a
	                           queue, else the model's mean wait */
	double drain_s;         /* depth / (c / S - lambda) when that is positive; INFINITY when
	                           the queue cannot shrink; 0 when empty */
	int min_stable_threads; /* the smallest c with rho < 1 at the upper 95 % bound of the
	                           offered load (stable even if the measurement erred low) */
	int threads_for_target; /* the smallest c whose predicted wait meets opts.wait_target (at
	                           the same bound) */
	bool cpu_bound;         /* service time is mostly CPU (service_cpu / service_time > 0.8) */
	bool budget_allows;     /* the CPU budget allows threads_for_target (CPU-bound work gets no
	                           faster past the CPU count) */
} weft_pool_verdict;

typedef void (*weft_pool_verdict_fn)(weft_pool *pool, const weft_pool_verdict *v, void *arg);

/* Options; zero means the default, so weft_pool_create(&p, NULL) gives a pool sized to the CPU
 * budget with an unbounded queue. */
/* The longest fixed spin (weft_pool_opts.spin): 10 ms. */
#define WEFT_POOL_SPIN_MAX WEFT_MSEC(10)

typedef struct weft_pool_opts {
	const char *name;     /* metrics label pool="NAME" and thread names "NAME-N"; NULL: "pool".
	                         At most 63 bytes. */
	int min_threads;      /* threads kept even when idle; 0: the CPU budget (capped by max) */
	int max_threads;      /* threads added under load up to this; 0: max(min, CPU budget).
	                         At most 1024. */
	int64_t idle_timeout; /* a thread above min_threads retires after this long idle; 0: 10 s */
	size_t queue_max;     /* the queue's bound in tasks, exact; 0: unbounded (memory_budget
	                         applies). At most 2^40. */
	int on_full;          /* enum weft_pool_full, for a bounded queue */
	int64_t block_timeout; /* WEFT_POOL_FULL_BLOCK: how long weft_pool_submit waits for room;
	                          0: forever (weft_pool_submit_until takes its own deadline) */
	size_t memory_budget;  /* bytes an unbounded queue may use beyond its preallocated rings
	                          (4096 tasks per thread), at 32 bytes per task; past it submits
	                          fail with -ENOMEM; 0: 1 GiB */
	int64_t tick;          /* how often the verdict is updated; 0: 100 ms; 1 ms to 1 h */
	int64_t window;        /* the measurement interval (and the shortest sample); 0: 10 ticks;
	                          at most 1 day */
	int runaway_ticks;     /* ticks rho_low must stay >= 1 before a runaway is declared; 0: 5 */
	int64_t wait_target;   /* the queue wait the standing-queue alarm and the thread
	                          recommendation aim at; 0: 100 ms */
	int64_t stall_after; /* nothing completing this long with work queued is a stall; 0: 5 s */
	int64_t spin; /* how long an idle worker looks for work before it parks (ns); 0: adaptive
	                 (4 us, 25 us while tasks come every 12.5 us or faster; halved after each
	                 spin that finds nothing). A fixed spin, up to WEFT_POOL_SPIN_MAX, is not
	                 halved: a task that comes within it of the last one starts without a
	                 wake-up, for up to that much CPU per idle gap (docs/pool.md) */
	weft_pool_verdict_fn on_verdict; /* called on the tick thread after each tick whose state
	                                    differs from the previous one's, and every tick while
	                                    not OK; must not block long; may call weft_pool_resize
	                                    and weft_pool_verdict_get, not weft_pool_destroy */
	void *on_verdict_arg;
	weft_metrics *metrics; /* registry for the pool's series; NULL: weft_metrics_global() */
} weft_pool_opts;

/* fork. A child process has none of its parent's threads, so a pool (and a future) made before
 * a fork is inert in the child: every pool function called there on it fails at once with
 * -ESHUTDOWN (after its argument checks), as for a pool whose shutdown has ended, so code that
 * handles a shut-down pool needs nothing new; none blocks, and none takes a lock of the pool,
 * which a thread of the parent may have held at the fork (a handler registered with
 * pthread_atfork by the first weft_pool_create counts the forks). In the child:
 * weft_pool_submit, _until, _batch, weft_pool_resize, weft_pool_shutdown and
 * weft_pool_verdict_get give -ESHUTDOWN; weft_future_wait and weft_future_cancel on a future
 * that was final at the fork behave as usual (its result is in the child's memory), on one that
 * was not they give -ESHUTDOWN (its task runs in the parent, if anywhere); weft_future_release
 * frees the future only if the child held its last reference; weft_pool_destroy joins nothing,
 * frees the pool's memory, takes its series out of its metrics registry (with the registry's
 * lock: a registry that a thread of the parent was exporting at the fork cannot be used in the
 * child at all) so that its name can be used again, and leaks, knowingly, the futures' free list
 * (its lock may be held) and the futures the child still holds. The parent's pool goes on
 * unchanged; pools created in the child work as usual. A child forked from inside a task or an
 * on_verdict callback runs on a copy of the parent's worker (or tick) thread: it must exec or
 * _exit before returning from that task or callback. */

/* Create a pool and start its min_threads workers and its tick thread.
 * -EINVAL (ret NULL, min > max, max > 1024, a name too long, an unknown on_full, tick < 1 ms...),
 * -ENOMEM (also if pthread_atfork fails), -EAGAIN (no thread), -EEXIST (a pool of this name
 * already reports to that registry). */
WEFT_API int weft_pool_create(weft_pool **ret, const weft_pool_opts *opts);

/* Shut down (cancelling what has not started, waiting for what runs) and free. NULL is fine.
 * Must not be called from one of the pool's own tasks or from its on_verdict (it aborts).
 * Futures still held stay valid: they are final (done or cancelled) and are freed by
 * weft_future_release. No other thread may use the pool during or after the call (to stop
 * racing submitters first, call weft_pool_shutdown: they then get -ESHUTDOWN). In the child of
 * a fork: see "fork" above. */
WEFT_API void weft_pool_destroy(weft_pool *pool);

/* Submit fn(arg). With ret_future NULL the task is fire-and-forget and the submit allocates
 * nothing (unless the rings are full and the overflow queue must grow); otherwise *ret_future
 * is a future (from a per-pool free list) the caller must weft_future_release. Any thread may
 * submit, a task of the pool included. Returns 0, or:
 *  -EAGAIN     the queue is full and on_full is FAIL
 *  -ETIMEDOUT  on_full is BLOCK and no room came before the deadline
 *  -ENOMEM     out of memory, or an unbounded queue past its memory_budget
 *  -ESHUTDOWN  the pool is shutting down, or was created before a fork (in the child)
 *  -EINVAL     pool or fn NULL
 * With on_full CALLER_RUNS the task may have run on the calling thread before this returns. */
WEFT_API int weft_pool_submit(weft_pool *pool, weft_task_fn fn, void *arg,
                              weft_future **ret_future);
/* The same with the deadline the BLOCK policy waits until. */
WEFT_API int weft_pool_submit_until(weft_pool *pool, weft_task_fn fn, void *arg, int64_t deadline,
                                    weft_future **ret_future);
/* Submit fn(args[i]) for i in 0..n-1, as one batch. Returns how many were accepted (they are
 * the first ones; under CALLER_RUNS some may have run on the caller), which is n unless the
 * queue filled or an error stopped it; a negative errno if none was. With BLOCK the whole batch
 * waits at most block_timeout. ret_futures, if not NULL, has room for n; entries past the
 * returned count are untouched. -EINVAL also for args NULL with n > 0, or n > INT_MAX. */
WEFT_API int weft_pool_submit_batch(weft_pool *pool, weft_task_fn fn, void *const *args, size_t n,
                                    weft_future **ret_futures);

/* Wait until the task has run or the deadline passes. 0 with its result in *ret_result (may be
 * NULL); -ETIMEDOUT; -ECANCELED if it was cancelled, dropped, or the pool shut down before it ran;
 * -EINVAL for NULL f or a deadline below WEFT_FOREVER; -ESHUTDOWN, at once, in the child of a
 * fork for a future not final at the fork. Any number of threads may wait.
 * Called from a task of the same pool, it never blocks the pool: while the future is pending the
 * waiting worker runs it itself, and while it runs elsewhere the worker runs other queued tasks
 * (up to 16 nested; the awaited task itself up to 128 nested). Helping runs another task on
 * this stack: a task that holds a lock while it waits may thus run a task that wants it. */
WEFT_API int weft_future_wait(weft_future *f, int64_t deadline, void **ret_result);
/* Cancel a task that has not started: 0 (also if it was cancelled already), or -EBUSY if it
 * started (or finished), -EINVAL for NULL; -ESHUTDOWN in the child of a fork for a future not
 * final at the fork. Waiters wake with -ECANCELED. */
WEFT_API int weft_future_cancel(weft_future *f);
/* True once the task ran, or was cancelled or dropped. */
WEFT_API bool weft_future_done(const weft_future *f);
/* Give up the caller's reference. The task still runs unless cancelled. NULL is fine. */
WEFT_API void weft_future_release(weft_future *f);

enum weft_pool_shutdown {
	WEFT_POOL_DRAIN = 0, /* run everything already queued */
	WEFT_POOL_CANCEL,    /* cancel what has not started (futures end with -ECANCELED) */
};

/* Stop accepting tasks (later submits get -ESHUTDOWN), then drain or cancel the queue and wait for
 * the running tasks, until the deadline. Every submit that raced with it either was accepted, and
 * its task runs (DRAIN) or is cancelled, or got -ESHUTDOWN; once it has begun, DROP_OLDEST drops
 * nothing (a submit that got -ESHUTDOWN dropped nothing). 0 when the pool is idle and its worker
 * threads are gone (the tick thread runs until destroy, so the verdict stays readable);
 * -ETIMEDOUT if tasks still run at the deadline (call again, or destroy). -EDEADLK from a task
 * of the pool itself; -EINVAL for NULL, an unknown `how` or a deadline below WEFT_FOREVER;
 * -ESHUTDOWN in the child of a fork. May be called again, e.g. CANCEL after a DRAIN that timed
 * out. */
WEFT_API int weft_pool_shutdown(weft_pool *pool, int how, int64_t deadline);

/* Change the thread bounds while running (the tour resizes to the recommended size). Threads are
 * started at once up to the new min; extra threads retire as they finish their task (idle ones
 * at once). Zeros mean the defaults, as in create. -EINVAL as in create, -ESHUTDOWN after
 * shutdown (and in the child of a fork), or the error of a thread start (the new bounds stay).
 * Any thread, on_verdict included. */
WEFT_API int weft_pool_resize(weft_pool *pool, int min_threads, int max_threads);

/* The latest verdict (copied). Any thread. Before the first tick: zeros but `at` and `threads`.
 * -EINVAL for NULL; -ESHUTDOWN in the child of a fork. */
WEFT_API int weft_pool_verdict_get(weft_pool *pool, weft_pool_verdict *ret);

/* "ok", "standing-queue", "runaway", "stall", "deadlock"; "unknown" otherwise. */
WEFT_API const char *weft_pool_state_name(int state);

#ifdef __cplusplus
}
#endif

#endif
