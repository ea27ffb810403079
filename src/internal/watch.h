/* The lock monitor's engine, shared by weft's instrumented locks (src/watch/prim.c) and the
 * preload library (src/watch/preload.c). Three pieces, three files:
 *  - src/watch/engine.c: thread records, the wait protocol, the watchdog (wait-for graph, cycles,
 *    long waits), the report queue and its emission (callback, metrics, JSON, text), the contention
 *    profile, the cross-process registry, weft_watch_start/stop and the public report functions.
 *  - src/watch/predict.c: prediction mode: lock classes, per-thread held locks, the order graph.
 *  - src/watch/prim.c: weft_mutex, weft_rwlock, weft_cond, weft_sem on top of the two.
 * The preload library compiles the same engine and predict files into its own .so.
 *
 * Rules for everything a lock call reaches (the "lock path"):
 *  - No allocation, no stdio, no pthread lock (in the preload library a pthread lock would re-enter
 *    the wrappers): the tables are mapped when the monitor starts; the engine's own mutual
 *    exclusion is atomics or raw futexes.
 *  - Results are the lock functions' own: positive errno as pthread returns them (the wrappers
 *    pass them through unchanged; prim.c negates them).
 *  - Threads that run the monitor itself (the watchdog) set weft__watch_internal, and wrappers
 *    called on them go straight to the real functions.
 */
#ifndef WEFT_INTERNAL_WATCH_H
#define WEFT_INTERNAL_WATCH_H

#include <stdint.h>
#include <sys/types.h>

#include <weft/watch.h>

/* ---- state the wrappers read on every call (relaxed loads) ---- */

/* Nonzero while the monitor runs: waits are recorded. */
extern int weft__watch_on;
/* Nonzero in prediction mode (implies weft__watch_on): the predict hooks are called. */
extern int weft__watch_predict_on;
/* Hold-time sampling period (0: off). */
extern int weft__watch_profile_sample;
/* The TLS model of the monitor's per-thread state: initial-exec in the preload library, which is
 * loaded with the program (the model costs nothing there and saves a __tls_get_addr call per
 * access on the lock path), the default in libweft, which a program may dlopen. */
#ifdef WEFT__WATCH_PRELOAD
#define WEFT__WATCH_TLS __attribute__((tls_model("initial-exec")))
#else
#define WEFT__WATCH_TLS
#endif

/* Set on the monitor's own threads: no recording there. */
extern __thread int weft__watch_internal WEFT__WATCH_TLS;

/* ---- the wait protocol (engine.c) ----
 *
 * A wrapper first tries the lock without waiting (trylock). Only when that says busy does it call
 * weft__watch_wait with an op describing the lock. The engine first waits one short slice (0.1 ms
 * past the coarse clock's tick) and records nothing: most contended waits end there, summed per
 * thread into the contention profile. Only a wait that outlasts it (or a self-wait: EDEADLK, or
 * a timeout at the deadline with op->owner the caller) is recorded, in the calling thread's
 * record (claimed on its first wait, from a table mapped at start; a full table means the wait is
 * not recorded, counted in the metrics), then waits in slices: op->timed(op->lock, end) with
 * end = min(now + slice, deadline). After each slice that timed out it re-reads the owner
 * (op->owner) and publishes it, and after the first one it captures its own stack into its
 * record (so a deadlocked thread's stack is captured on that thread). The
 * watchdog only ever reads records, never a lock's memory. When timed returns anything but
 * ETIMEDOUT before the deadline, the wait ends, its time goes to the contention profile and the
 * result is returned.
 *
 * Slicing does not change a lock's semantics: a mutex, rwlock or semaphore wait that times out
 * and waits again loses nothing (glibc's locks are not FIFO; a semaphore keeps its count). */
struct weft__watch_op {
	void *lock;                /* what is waited for; its address is its identity */
	weft_watch_lock_kind kind; /* MUTEX, RDLOCK, WRLOCK or SEM (cond: weft__watch_cond_*) */
	int pshared;               /* process-shared: published to the shared registry too */
	void *site;                /* the return address of the user's lock call */
	const char *name;          /* the lock's name (weft_mutex's), NULL if none */
	/* Wait until the absolute CLOCK_MONOTONIC time `end_ns`: 0, ETIMEDOUT, or another positive
	 * errno (which ends the wait and is returned). */
	int (*timed)(void *lock, int64_t end_ns);
	/* The owner's thread id, 0 if none or unknown (glibc keeps it in the mutex, and the writer
	 * of an rwlock). NULL: no owner (semaphores). */
	pid_t (*owner)(const void *lock);
};

/* Wait as described above until `deadline` (CLOCK_MONOTONIC ns, -1: forever). Returns the last
 * result of op->timed: 0, a positive errno, or ETIMEDOUT once `deadline` has passed. A thread that
 * waits for a lock it owns (op->owner gives its own tid) is reported as a self-deadlock after its
 * first slice (the lock's semantics decide what the wait does): marked as ending by itself when
 * the call returned an error (EDEADLK) or has a deadline; only an untimed wait still waiting
 * after the slice is one that cannot end. Works (unrecorded) when the monitor is off. A wait
 * started while another of the same thread is being recorded (a signal handler's) is not
 * recorded. */
int weft__watch_wait(const struct weft__watch_op *op, int64_t deadline);

/* Condition waits cannot be sliced (a wait that timed out and waited again could miss a signal
 * sent without the mutex held), so they are bracketed: begin records the wait (the condvar, the
 * mutex, the site) and its stack: captured on this thread the first time at this call site, the
 * site's first stack afterwards (a full capture per wait would cost microseconds in a
 * producer/consumer loop); end closes it. A cond wait older than cond_wait_ns is reported once.
 * The token is opaque (0: not recorded); pass it back to end. */
uint64_t weft__watch_cond_begin(const void *cond, const void *mutex, void *site);
void weft__watch_cond_end(uint64_t token);

/* rwlocks have no reader list, so each thread's record lists the rwlocks it holds (at most a few,
 * fixed array; more are counted as untracked): called after every successful rd/wr acquisition
 * and before every unlock of an rwlock. The watchdog finds a waiting writer's readers there. */
void weft__watch_rw_acquired(const void *lock, int write);
void weft__watch_rw_released(const void *lock);

/* A robust mutex's lock call returned EOWNERDEAD: report it (once per call). */
void weft__watch_owner_died(const void *lock, void *site);

/* Sampled hold times (weft__watch_profile_sample > 0): acquired counts down a per-thread counter
 * and, on the sampled acquisition, notes the lock and time; released closes the sample when it is
 * that lock. Both are a few instructions otherwise. */
void weft__watch_hold_acquired(const void *lock, void *site);
void weft__watch_hold_released(const void *lock);

/* Queue a report for the watchdog to emit (callback, metrics, JSON, text; the deadlock action).
 * Copies *r; fills seq, time_ns and the pid; never blocks or allocates; a full queue drops it
 * (counted). Callable from any thread, the lock path included. */
void weft__watch_emit(const weft_watch_report *r);

/* Capture the calling thread's stack (weft_backtrace, initialised at start) into frames. With
 * `site` (the return address of the user's lock call) found among the frames, the stack starts
 * there: the lock functions' own frames (weft's or the preload's) are left out, so that frame #0
 * is the user's call. Otherwise `skip` frames above the caller are left out. */
int weft__watch_stack(void **frames, int max, int skip, void *site);

/* The calling thread's kernel thread id, cached per thread. */
pid_t weft__watch_tid(void);

/* Monotonic nanoseconds, and the conversion of a CLOCK_REALTIME timespec deadline (as
 * pthread_mutex_timedlock takes) to a CLOCK_MONOTONIC ns deadline: 0 for a time already past,
 * -1 (forever) for one too far to represent (tv_sec = LONG_MAX, as programs write "never"). */
int64_t weft__watch_now(void);
int64_t weft__watch_realtime_to_mono(const struct timespec *abstime);

/* Tests only: called inside the recording of a wait, between the stores of its fields and the
 * one that publishes it (NULL: nothing). */
extern void (*weft__watch_test_hook)(void);
/* Tests only: called just before the first, unrecorded slice of a wait, with the lock. */
extern void (*weft__watch_test_quick_hook)(void *lock);
/* Tests only: the record protocol under fire. A writer thread publishes wait after wait in one
 * record (every field a function of the wait's number) while the calling thread snapshots it as
 * the watchdog does, until `want` snapshots were accepted or max_ns passed. *ret_torn: snapshots
 * accepted whose fields are not all of one wait (must be 0); *ret_seen: snapshots accepted. 0, or
 * a negative errno (-EINVAL, no memory, no thread). */
int weft__watch_test_torn(uint64_t want, int64_t max_ns, uint64_t *ret_torn, uint64_t *ret_seen);
/* Tests only: the records of the shared registry the monitor has mapped that process `pid`
 * holds (-ENOENT: no registry). */
int weft__watch_test_shm_claimed(pid_t pid);

/* ---- prediction (predict.c) ----
 *
 * Lock classes: a class is a small integer > 0. weft_mutex and weft_rwlock keep theirs in the
 * lock (cls, set by init from its name or site); for pthread locks the class of a lock is looked
 * up by address in a fixed table (weft__predict_class), set at pthread_*_init from the init site,
 * or at first use from the first site. Classes and the order graph live in tables mapped at
 * start.
 *
 * Each thread keeps its held locks (lock, class, mode, site) in a fixed per-thread list.
 *  - weft__predict_before(lock, cls, mode, site): a blocking acquisition is about to wait or take
 *    the lock: for each held lock H (unless H is the same class and mode allows), the edge
 *    class(H) -> cls is looked up in a per-thread cache and then in the global graph; a new edge
 *    is added with the stack of this acquisition and the set of other held classes (gates); if
 *    a path cls -> ... -> class(H) already exists, an inversion is reported (weft__watch_emit)
 *    before the thread blocks, unless a gate lock common to both orders, or read mode at both ends
 *    of a reader lock, makes it safe. Reported once per class pair. A held lock of the class
 *    being taken (same-class nesting) gives an instance order (H's address -> the lock's)
 *    instead, checked the same way among the instances of that class: reported once per pair.
 *  - weft__predict_after(lock, cls, mode, flags, site): the acquisition succeeded: push it on the
 *    held list. flags & WEFT__PREDICT_TRY: a trylock, which adds no edge into it (it cannot
 *    block); flags & WEFT__PREDICT_REACQUIRE: the re-acquisition inside a condition wait (no new
 *    order: the order was recorded at the first acquisition).
 *  - weft__predict_release(lock): pop it from the held list (any position).
 * mode: 0 exclusive, 1 shared (read). */
#define WEFT__PREDICT_TRY 1u
#define WEFT__PREDICT_REACQUIRE 2u
uint32_t weft__predict_class(const void *lock, void *site);
void weft__predict_class_init(const void *lock, void *site);
uint32_t weft__predict_class_named(const char *name, void *site);
void weft__predict_forget(const void *lock);
void weft__predict_before(const void *lock, uint32_t cls, int mode, void *site);
void weft__predict_after(const void *lock, uint32_t cls, int mode, unsigned flags, void *site);
void weft__predict_release(const void *lock);
/* The held locks of the calling thread, for reports: up to max, returns the count. */
int weft__predict_held(const void **locks, int max);
/* Set up / tear down the tables (called by weft_watch_start/stop in prediction mode). */
int weft__predict_start(void);
void weft__predict_stop(void);
/* The site recorded for a class (its init or first-use site), for reports. */
void *weft__predict_class_site(uint32_t cls);
/* The name of a named class (weft__predict_class_named with a name), "" otherwise. */
const char *weft__predict_class_name(uint32_t cls);
/* What prediction has seen and what it had to leave out (since the process started; for metrics,
 * tests and `weft watch`). */
struct weft__predict_stats {
	uint64_t classes;          /* lock classes made */
	uint64_t class_overflow;   /* class requests refused: the class table is full */
	uint64_t addr_overflow;    /* pthread locks left untracked: the address table is full */
	uint64_t edges;            /* edges of the order graph */
	uint64_t edge_overflow;    /* new orders not recorded: the edge table is full */
	uint64_t held_overflow;    /* acquisitions beyond a thread's held list (not tracked) */
	uint64_t same_class;       /* classes seen taken while a lock of the same class was held */
	uint64_t inversions;       /* inversions reported */
	uint64_t excused_gate;     /* cycles found and excused by a common gate lock */
	uint64_t excused_read;     /* cycles found and excused by read mode at a reader lock */
	uint64_t search_truncated; /* path searches cut at the depth or visit bound */
	uint64_t inst_edges;       /* instance orders (one class nested in itself, by address) */
	uint64_t inst_overflow;    /* new instance orders not recorded: their table is full */
};
void weft__predict_get_stats(struct weft__predict_stats *ret);
/* Tests: capacities (classes, pthread lock addresses, edges; 0: the default) for the tables the
 * first weft__predict_start of the process maps; no effect once they are mapped. */
void weft__predict_test_caps(uint32_t classes, uint32_t addrs, uint32_t edges);
/* Tests: the capacity of the instance order table (0: the default), as weft__predict_test_caps. */
void weft__predict_test_inst_cap(uint32_t inst);

#endif
