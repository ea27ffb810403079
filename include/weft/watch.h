/* weft/watch.h: the lock monitor.
 *
 * Two halves share one engine:
 *  - instrumented locks for weft programs: weft_mutex, weft_rwlock, weft_cond, weft_sem. Each wraps
 *    the pthread/POSIX object of the same kind; the uncontended path is the real lock and nothing
 *    else; only a lock that must wait records who waits for what.
 *  - the preload library (libweft-watch.so, see `weft watch`), which does the same for the pthread
 *    locks, C11 mtx_/cnd_ and POSIX semaphores of an unmodified program.
 *
 * The monitor (weft_watch_start) runs a watchdog thread that scans the waits every scan period,
 * builds the wait-for graph (a waiting thread -> the thread that owns what it waits for) and
 * reports a deadlock within two scan periods: every thread in the cycle, the lock each waits for
 * and who owns it, and each thread's stack captured on that thread. It also reports a thread
 * relocking a mutex it holds, lock waits longer than a threshold, condition waits that never end,
 * and the death of a robust mutex's owner. A wait that ends by itself (a timed lock, a relock
 * that returns EDEADLK) is reported all the same, marked as such (weft_watch_report.ends), and
 * the on_deadlock action is kept for the waits that cannot end. In prediction mode it keeps lock
 * classes and the order in which they are taken, and reports a lock-order inversion the first time
 * it happens, before the thread blocks, with both acquisition stacks, whether or not the run
 * deadlocks.
 *
 * Reports go to a callback, the metrics registry, JSON lines and readable text (symbolized stacks),
 * always from the watchdog thread. The library never prints on its own: text goes only to a file
 * descriptor the caller gives. See docs/watch.md.
 */
#ifndef WEFT_WATCH_H
#define WEFT_WATCH_H

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <sys/types.h>

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
 * What a report is about.
 */
typedef enum weft_watch_lock_kind {
	WEFT_WATCH_LOCK_MUTEX = 1,
	WEFT_WATCH_LOCK_RDLOCK, /* a reader/writer lock taken for reading */
	WEFT_WATCH_LOCK_WRLOCK, /* ... for writing */
	WEFT_WATCH_LOCK_COND,   /* a condition variable (the lock is the condvar) */
	WEFT_WATCH_LOCK_SEM,    /* a semaphore */
} weft_watch_lock_kind;

typedef enum weft_watch_event {
	WEFT_WATCH_DEADLOCK = 1,  /* a cycle in the wait-for graph, every edge of it proven */
	WEFT_WATCH_SELF_DEADLOCK, /* a thread waits for a lock it holds itself */
	WEFT_WATCH_INVERSION,     /* prediction: two lock classes taken in both orders */
	WEFT_WATCH_LONG_WAIT,  /* a lock wait longer than long_wait_ns (reported once per wait) */
	WEFT_WATCH_COND_WAIT,  /* a condition wait longer than cond_wait_ns (once per wait) */
	WEFT_WATCH_OWNER_DIED, /* a robust mutex's owner died holding it (EOWNERDEAD) */
	WEFT_WATCH_EVENT_COUNT,
} weft_watch_event;

/* Name of an event ("deadlock", "self-deadlock", "inversion", "long-wait", "cond-wait",
 * "owner-died") or a lock kind ("mutex", "rdlock", "wrlock", "cond", "sem"); "?" when unknown. */
WEFT_API const char *weft_watch_event_name(weft_watch_event e);
WEFT_API const char *weft_watch_lock_kind_name(weft_watch_lock_kind k);

#define WEFT_WATCH_MAX_FRAMES 32
#define WEFT_WATCH_MAX_THREADS 8
#define WEFT_WATCH_MAX_HOLDS 8
#define WEFT_WATCH_MAX_PATH 8

/* One thread of a report. */
typedef struct weft_watch_thread {
	pid_t pid, tid;
	char name[16];                  /* the thread's name (pthread_setname_np), "" if none */
	weft_watch_lock_kind wait_kind; /* 0: not waiting */
	const void *waits_for;          /* the lock (or condvar, semaphore) it waits for */
	char lock_name[24];             /* its name (weft_mutex_options.name), "" if none */
	pid_t owner_tid;                /* who owns it (0: unknown or no single owner) */
	int64_t waited_ns;              /* how long it has waited */
	void *wait_site;                /* the return address of the lock call */
	/* Locks known to be held: in a DEADLOCK, the lock the previous thread of the cycle waits
	 * for; in a SELF_DEADLOCK or OWNER_DIED, the lock itself (and, in prediction mode, every
	 * lock the thread holds); in a LONG_WAIT or COND_WAIT, the rwlocks it holds. Not every
	 * lock the thread holds: the watchdog sees only what the waits publish. */
	int nholds;
	const void *holds[WEFT_WATCH_MAX_HOLDS];
	int nstack; /* its stack, captured on that thread (0: not available) */
	void *stack[WEFT_WATCH_MAX_FRAMES];
	/* The wait's CLOCK_MONOTONIC deadline (a timed lock or condition wait), 0 if it has none:
	 * a wait with a deadline ends by itself then. */
	int64_t deadline_ns;
	/* The lock call returned this error instead of waiting (EDEADLK: an error checking relock,
	 * an rdlock under one's own wrlock), 0 otherwise. */
	int error;
	/* COND waits: the mutex given to the wait (which the thread retakes inside the call). */
	const void *cond_mutex;
	/* 1: `stack` is the first stack captured at wait_site (condition waits capture the stack
	 * once per call site), not this wait's own. */
	int stack_from_site;
} weft_watch_thread;

/* One acquisition of a lock-order inversion: while holding `held` (class held_class), the thread
 * took `acquired` (class acquired_class). */
typedef struct weft_watch_order {
	pid_t tid;
	const void *held, *acquired;
	void *held_class_site,
	        *acquired_class_site; /* where each class was initialised or first used */
	char held_class_name[24], acquired_class_name[24]; /* named classes' names, "" if unnamed */
	int nstack;
	void *stack[WEFT_WATCH_MAX_FRAMES]; /* the stack of the acquisition of `acquired` */
} weft_watch_order;

typedef struct weft_watch_report {
	weft_watch_event event;
	uint64_t seq;    /* 1, 2, ... per process */
	int64_t time_ns; /* CLOCK_MONOTONIC when it was found */
	int nthreads; /* DEADLOCK: the cycle, in wait order; other events: the thread concerned */
	int more_threads; /* threads of the cycle left out beyond WEFT_WATCH_MAX_THREADS */
	weft_watch_thread threads[WEFT_WATCH_MAX_THREADS];
	/* INVERSION: order[0] is the earlier acquisition (first seen), order[1] the one now,
	 * reversed */
	weft_watch_order order[2];
	/* DEADLOCK, SELF_DEADLOCK: 1 if the wait ends by itself: the lock call returned an error
	 * (threads[0].error) or a thread of the cycle has a deadline (deadline_ns). The cycle was
	 * real when found, but the on_deadlock action (abort, exit) is taken only when 0. */
	int ends;
	/* INVERSION: the whole cycle, one step per lock of it in the order taken: path[i + 1] was
	 * taken while path[i] was held, and the last step's lock while the cycle's last was held
	 * closes it (order[1]). path[0] is order[0].held's class, the last step order[1].held's.
	 * npath: 2 for two classes (or two locks of one class), more for longer cycles; more_path:
	 * steps left out beyond WEFT_WATCH_MAX_PATH. Each step: a lock of that class as the order
	 * out of it first held it, and the class's site and name. */
	int npath, more_path;
	struct {
		const void *lock;
		void *class_site;
		char class_name[24];
	} path[WEFT_WATCH_MAX_PATH];
} weft_watch_report;

/* Readable text for a report, stacks symbolized (several lines, ends in '\n'); malloc'd. */
WEFT_API int weft_watch_report_text(const weft_watch_report *r, char **ret_text);
/* One JSON object for a report, one line, no newline; malloc'd. Fields: "event", "seq", "time_ns",
 * "pid", "ends" (true/false), "threads": [{"pid", "tid", "name", "wait_kind", "waits_for",
 * "lock_name", "owner_tid", "waited_ns", "wait_site", "deadline_ns" (null if none), "error"
 * (e.g. "EDEADLK", null if none), "cond_mutex" (null if none), "holds", "stack_from_site",
 * "stack": [{"pc", "func", "file", "line"}]}], "more_threads", and for an inversion "order":
 * [{"tid", "held", "acquired", "held_class", "acquired_class", "held_name", "acquired_name",
 * "stack"}]. */
WEFT_API int weft_watch_report_json(const weft_watch_report *r, char **ret_json);

/* ------------------------------------------------------------------------------------------------
 * The monitor: one per process.
 */
typedef enum weft_watch_action {
	WEFT_WATCH_ACTION_REPORT = 0, /* report and go on */
	WEFT_WATCH_ACTION_ABORT,      /* report, then abort() (a core file shows every thread) */
	WEFT_WATCH_ACTION_EXIT,       /* report, then _exit(exit_code) */
} weft_watch_action;

typedef struct weft_watch_options {
	int64_t scan_ns;      /* watchdog period; 0: 100 ms; 1 ms .. 60 s */
	int64_t long_wait_ns; /* report lock waits longer than this; 0: 10 s; -1: never */
	int64_t cond_wait_ns; /* report condition waits longer than this; 0: 60 s; -1: never */
	int predict;          /* nonzero: prediction mode (lock classes, order graph) */
	int profile_sample;   /* hold times sampled 1 in N acquisitions; 0: no hold sampling */
	weft_watch_action on_deadlock; /* for DEADLOCK and SELF_DEADLOCK that cannot end */
	int exit_code;                 /* for WEFT_WATCH_ACTION_EXIT; 0: 86 */
	void (*on_report)(const weft_watch_report *r, void *arg); /* on the watchdog thread */
	void *arg;
	weft_metrics
	        *metrics; /* counters weft_watch_reports_total{event=...}, gauges; NULL: none */
	/* > 0: write each report as a JSON line here. The file it is at start is the one written
	 * to: if the program closes the fd and the number comes back for another file, the output
	 * stops (counted in weft_watch_counts.lost_output). */
	int json_fd;
	int text_fd; /* > 0: write each report as text here (e.g. 2 for stderr); as json_fd */
	int shm_fd;  /* > 0: a shared registry (weft_watch_shm_create) for cross-process
	                cycles; the process's waits on process-shared locks go there */
} weft_watch_options;

/* Start the monitor (its watchdog thread). -EALREADY if it runs, -EINVAL for an option out of
 * range, -EBADF for a json_fd or text_fd that is not open, -ENOMEM, -EAGAIN (thread). */
WEFT_API int weft_watch_start(const weft_watch_options *o);
/* Stop it: join the watchdog, emit what is queued. Locks keep working (unrecorded). */
WEFT_API void weft_watch_stop(void);

/* Reports so far, by event (index = weft_watch_event), since the process started. */
typedef struct weft_watch_counts {
	uint64_t by_event[WEFT_WATCH_EVENT_COUNT];
	uint64_t dropped; /* reports lost because the queue to the watchdog was full */
	/* report outputs not written (JSON or text): the fd no longer was the file it was at
	 * start; the output stops there */
	uint64_t lost_output;
} weft_watch_counts;
WEFT_API int weft_watch_get_counts(weft_watch_counts *ret);

/* A shared registry for a group of processes (a memfd; the fd is inherited across fork and exec,
 * pass it to each process's weft_watch_options.shm_fd). `slots`: threads it can hold, 0: 4096. */
WEFT_API int weft_watch_shm_create(int slots, int *ret_fd);

/* ------------------------------------------------------------------------------------------------
 * The contention profile: per call site of a lock call, contended acquisitions with their wait
 * times, and sampled hold times.
 */
typedef struct weft_watch_site {
	void *site;       /* return address of the lock call */
	const void *lock; /* the last lock seen there */
	weft_watch_lock_kind kind;
	uint64_t contended; /* acquisitions that had to wait */
	int64_t wait_ns_total, wait_ns_max;
	uint64_t hold_samples;
	int64_t hold_ns_total, hold_ns_max;
} weft_watch_site;

typedef enum weft_watch_sort {
	WEFT_WATCH_SORT_WAIT = 0, /* by total wait time */
	WEFT_WATCH_SORT_CONTENDED,
	WEFT_WATCH_SORT_HOLD,
} weft_watch_sort;

/* The top `max` sites by `sort`, into out; returns how many. Live: callable any time. */
WEFT_API int weft_watch_profile(weft_watch_site *out, int max, weft_watch_sort sort);
/* The same as a readable table, symbolized; malloc'd. */
WEFT_API int weft_watch_profile_text(int top, char **ret_text);

/* ------------------------------------------------------------------------------------------------
 * Instrumented locks. Functions return 0 or a negative errno (never set errno). They work whether
 * the monitor runs or not; when it does not, they cost what the pthread call costs.
 */
typedef struct weft_mutex {
	pthread_mutex_t m;
	uint32_t cls; /* lock class for prediction (0: by first use) */
	uint32_t flags;
	const char *name; /* weft_mutex_options.name: the string must live as long as the lock */
} weft_mutex;
#define WEFT_MUTEX_INIT                                                                            \
	{                                                                                          \
		PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP, 0, 0, NULL                                \
	}
/* A statically initialised weft_mutex with a name (the class and report name). */
#define WEFT_MUTEX_INIT_NAMED(name)                                                                \
	{                                                                                          \
		PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP, 0, 0, (name)                              \
	}

typedef struct weft_mutex_options {
	const char *name; /* the lock's name and class in reports (kept by pointer: it must live as
	                     long as the lock; up to 23 bytes are shown); NULL: the init site */
	int recursive;    /* a holder may lock again (default: error checking, relock -EDEADLK) */
	int pshared;      /* process-shared (place the weft_mutex in shared memory) */
	int robust;       /* robust: the owner's death gives the next locker -EOWNERDEAD */
} weft_mutex_options;

/* -EINVAL (m NULL), -ENOMEM, -EAGAIN (pthread_mutex_init's). o NULL: error checking, private. */
WEFT_API int weft_mutex_init(weft_mutex *m, const weft_mutex_options *o);
/* -EBUSY if locked, -EINVAL. */
WEFT_API int weft_mutex_destroy(weft_mutex *m);
/* 0; -EDEADLK (relock of an error checking mutex; reported as a self-deadlock too), -EOWNERDEAD
 * (robust: the lock is yours, make it consistent), -ENOTRECOVERABLE, -EAGAIN (recursion count),
 * -EINVAL. */
WEFT_API int weft_mutex_lock(weft_mutex *m);
/* As lock; -EBUSY if held. */
WEFT_API int weft_mutex_trylock(weft_mutex *m);
/* As lock, until the absolute CLOCK_MONOTONIC `deadline` (-1 forever): -ETIMEDOUT. */
WEFT_API int weft_mutex_timedlock(weft_mutex *m, int64_t deadline);
/* -EPERM if the caller does not hold it, -EINVAL. */
WEFT_API int weft_mutex_unlock(weft_mutex *m);
/* After -EOWNERDEAD: mark the state consistent again. -EINVAL. */
WEFT_API int weft_mutex_consistent(weft_mutex *m);

typedef struct weft_rwlock {
	pthread_rwlock_t l;
	uint32_t cls;
	uint32_t flags;
	const char *name; /* weft_rwlock_options.name: the string must live as long as the lock */
} weft_rwlock;
#define WEFT_RWLOCK_INIT                                                                           \
	{                                                                                          \
		PTHREAD_RWLOCK_INITIALIZER, 0, 0, NULL                                             \
	}
#define WEFT_RWLOCK_INIT_NAMED(name)                                                               \
	{                                                                                          \
		PTHREAD_RWLOCK_INITIALIZER, 0, 0, (name)                                           \
	}
typedef struct weft_rwlock_options {
	const char *name;  /* as weft_mutex_options.name */
	int prefer_writer; /* a waiting writer holds new readers back (default: readers first) */
	int pshared;
} weft_rwlock_options;
WEFT_API int weft_rwlock_init(weft_rwlock *l, const weft_rwlock_options *o);
WEFT_API int weft_rwlock_destroy(weft_rwlock *l);
/* 0, -EDEADLK (the caller holds it for writing), -EAGAIN (reader count), -EINVAL; the timed
 * ones -ETIMEDOUT at `deadline` (CLOCK_MONOTONIC, -1 forever); the try ones -EBUSY. */
WEFT_API int weft_rwlock_rdlock(weft_rwlock *l);
WEFT_API int weft_rwlock_wrlock(weft_rwlock *l);
WEFT_API int weft_rwlock_tryrdlock(weft_rwlock *l);
WEFT_API int weft_rwlock_trywrlock(weft_rwlock *l);
WEFT_API int weft_rwlock_timedrdlock(weft_rwlock *l, int64_t deadline);
WEFT_API int weft_rwlock_timedwrlock(weft_rwlock *l, int64_t deadline);
/* -EPERM if the caller holds it in neither mode, -EINVAL. */
WEFT_API int weft_rwlock_unlock(weft_rwlock *l);

typedef struct weft_cond {
	pthread_cond_t c; /* on CLOCK_MONOTONIC */
} weft_cond;
/* -EINVAL, -ENOMEM. */
WEFT_API int weft_cond_init(weft_cond *c);
WEFT_API int weft_cond_destroy(weft_cond *c);
/* Wait until signalled or the absolute CLOCK_MONOTONIC `deadline` (-1 forever): 0 (which may be a
 * spurious wake-up: recheck your predicate), -ETIMEDOUT, -EPERM (m not held), -EINVAL. */
WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m, int64_t deadline);
WEFT_API int weft_cond_signal(weft_cond *c);
WEFT_API int weft_cond_broadcast(weft_cond *c);

typedef struct weft_sem {
	sem_t s;
} weft_sem;
/* -EINVAL (value above SEM_VALUE_MAX). */
WEFT_API int weft_sem_init(weft_sem *s, unsigned value, int pshared);
WEFT_API int weft_sem_destroy(weft_sem *s);
/* Take one, waiting until the absolute CLOCK_MONOTONIC `deadline` (-1 forever): 0, -ETIMEDOUT,
 * -EINVAL; the try one -EAGAIN. A signal handler does not interrupt the wait. */
WEFT_API int weft_sem_wait(weft_sem *s, int64_t deadline);
WEFT_API int weft_sem_trywait(weft_sem *s);
/* -EOVERFLOW at SEM_VALUE_MAX, -EINVAL. */
WEFT_API int weft_sem_post(weft_sem *s);
WEFT_API int weft_sem_value(weft_sem *s, int *ret_value);

#ifdef __cplusplus
}
#endif

#endif
