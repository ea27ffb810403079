/* preload.c: libweft-watch.so, the lock monitor for unmodified programs (LD_PRELOAD; `weft watch`
 * sets it up). It defines the pthread mutex, rwlock and condition-wait functions, the POSIX
 * semaphore waits and the C11 mtx_/cnd_ functions, so that a dynamically linked program's calls
 * land here first; each wrapper calls glibc's own function and tells the engine
 * (src/internal/watch.h) only what it must.
 *
 * The lock path. With the monitor off, or on the monitor's own threads (weft__watch_internal), a
 * wrapper calls the real function and nothing else. With it on, a blocking acquisition first tries
 * the real lock without waiting (trylock); only when that says busy does it build an op on its
 * stack and call weft__watch_wait, which waits in slices of the real timed function on
 * CLOCK_MONOTONIC (pthread_mutex_clocklock, pthread_rwlock_clock*lock, sem_clockwait) and reads
 * the owner from glibc's mutex (__data.__owner) or rwlock (__data.__cur_writer). Condition waits
 * are not sliced: the real wait is bracketed by weft__watch_cond_begin/end. rwlock acquisitions and
 * releases go to weft__watch_rw_acquired/released (the engine's per-thread list of held rwlocks:
 * glibc keeps no reader list); EOWNERDEAD goes to weft__watch_owner_died; prediction mode calls
 * the weft__predict_* hooks (the class of a lock comes from its pthread_*_init or mtx_init site,
 * or from its first use for a statically initialised lock); hold-time sampling calls
 * weft__watch_hold_acquired/released. Nothing on the lock path allocates or takes a pthread lock.
 *
 * Semantics. Every result is the real function's (error checking relock EDEADLK, recursive
 * counts, robust EOWNERDEAD / ENOTRECOVERABLE, trylock EBUSY, rwlock EDEADLK for the writer,
 * EAGAIN for the reader count). Slicing loses nothing: a mutex, rwlock or semaphore wait that
 * times out and waits again is still a wait for the same lock, which glibc never promised to
 * hand over in order. What does differ, and only for contended waits with a deadline:
 *  - a CLOCK_REALTIME deadline (pthread_mutex_timedlock, sem_timedwait, mtx_timedlock, ...) is
 *    converted once, at the start of the wait, to a CLOCK_MONOTONIC one
 *    (weft__watch_realtime_to_mono): a clock_settime or NTP step during the wait does not move
 *    it, where glibc's wait would end earlier or later with the wall clock. A deadline too far to
 *    represent (tv_sec = LONG_MAX) waits forever, as glibc's does in practice;
 *  - PI mutexes wait in slices of pthread_mutex_timedlock on CLOCK_REALTIME (the PI futex takes
 *    an absolute CLOCK_REALTIME time on every kernel), each slice's end converted from the
 *    monotonic deadline: a clock step during a slice moves that slice's end (not the deadline);
 *    and a PI waiter leaves the kernel's PI chain between slices, so the owner's priority boost
 *    lapses for an instant each slice.
 * A timespec glibc would refuse (tv_nsec out of range, an unknown clock) goes to the real
 * function, which refuses it as it would have. Cancellation: sem_wait and friends call
 * pthread_testcancel before their first try, as glibc does; condition waits are cancellation
 * points inside the real function, and a cleanup handler closes the engine's record and restores
 * the prediction state (glibc retakes the mutex before the handlers run); a thread cancelled
 * inside a sliced semaphore wait has its record closed by the engine at thread exit.
 *
 * The real functions, and no recursion through dlsym. glibc exports __pthread_mutex_lock,
 * trylock, unlock, init, destroy and __pthread_rwlock_rdlock, wrlock, tryrdlock, trywrlock,
 * unlock, init, destroy (compat versions, linkable with .symver): those are called directly, no
 * dlsym at all, so the locks a preloaded allocator takes inside dlsym never need a lookup (the
 * constructor only checks that the loader bound them to libc's own, see check_directs). Every
 * other real function is found with dlvsym(RTLD_NEXT, name, version) by the constructor (and, if
 * a wrapper is called before it runs, by that call). A thread-local flag marks a lookup in
 * progress: a wrapper reached from inside dlvsym on the same thread does not look up again but
 * fails with EAGAIN (thrd_error for mtx_, -1 and errno EAGAIN for sem_); glibc's dlvsym takes no
 * pthread lock, so only a foreign allocator could do that, and only for these functions.
 *
 * Symbol versions (found by experiment on glibc 2.36: objdump -T of libc.so.6 for x86-64 and
 * aarch64, test programs with .symver references to old versions): a program
 * references each function by version (pthread_mutex_lock@GLIBC_2.2.5, pthread_mutex_trylock@
 * GLIBC_2.34, pthread_cond_wait@GLIBC_2.3.2, mtx_lock@GLIBC_2.34; older binaries the older
 * versions: pthread_mutex_trylock@GLIBC_2.2.5, pthread_cond_wait@GLIBC_2.2.5 (the pre-2.3.2
 * condvar ABI), mtx_lock@GLIBC_2.28). The loader binds a versioned reference to an unversioned
 * definition of the same name in a preloaded object, whatever the version, which would send old
 * pthread_cond_* callers to the new condvar ABI; and once an object defines any version of a name,
 * a reference to a version it does not define goes past it to libc (unmonitored). So every
 * wrapper is defined once per version libc has (.symver here, the nodes in preload.sym, one
 * script per architecture: aarch64's base version is GLIBC_2.17 and it has no old condvars), and
 * each version forwards to the same version of the real function (a wait's slices use the
 * clock variants of the same family, pthread_mutex_clocklock & co., whose versions are aliases).
 *
 * Configuration (the constructor reads the environment; `weft watch` sets it):
 *   WEFT_WATCH_PREDICT=0|1, WEFT_WATCH_JSON_FD=N, WEFT_WATCH_TEXT_FD=N (default 2; 0 none),
 *   WEFT_WATCH_ON_DEADLOCK=report|abort|exit, WEFT_WATCH_SCAN_MS, WEFT_WATCH_LONG_WAIT_MS and
 *   WEFT_WATCH_COND_WAIT_MS (-1: never), WEFT_WATCH_SHM_FD=N, WEFT_WATCH_PROFILE=N (sample 1 hold
 *   in N; the top sites go to the text fd at exit).
 * A bad value gives one line on stderr naming it and the program runs unmonitored: the monitor
 * never breaks the program it watches. The destructor stops the monitor (which emits what is
 * queued) and writes the profile.
 *
 * Invariants:
 *  - Every exported symbol is a wrapper listed in preload.sym; nothing weft_ leaves the .so, and it
 *    links no libweft.so (the engine comes from weft_internal, statically).
 *  - A wrapper's result is the real function's result for the same call; errno is the real
 *    function's where it sets one, and untouched otherwise.
 *  - The lock path allocates nothing and takes no pthread lock; the op lives on the stack.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/lib-names.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include "internal/common.h"
#include "internal/watch.h"

/* The preload library is loaded at start-up, so its TLS is static: initial-exec access is a
 * single %fs-relative load instead of a __tls_get_addr call on every lock (the engine and the
 * prediction code are compiled into this library with WEFT__WATCH_PRELOAD for the same reason). */

/* ------------------------------------------------------------------------------------------------
 * Versions.
 */
#if defined(__x86_64__)
#define V_BASE "GLIBC_2.2.5"
#define V_CONSISTENT "GLIBC_2.12"
#define V_COND "GLIBC_2.3.2"
#define HAVE_OLD_COND 1 /* pthread_cond_*@GLIBC_2.2.5: the condvar ABI before 2.3.2 */
#elif defined(__aarch64__)
#define V_BASE "GLIBC_2.17"
#define V_CONSISTENT "GLIBC_2.17"
#define V_COND "GLIBC_2.17"
#define HAVE_OLD_COND 0
#else
#error "libweft-watch: symbol versions are known for x86_64 and aarch64 only"
#endif
#define V_C11 "GLIBC_2.28"
#define V_CLOCK "GLIBC_2.30"
#define V_NEW "GLIBC_2.34"

/* The wrappers are reached only through their versioned names (.symver): no header declares
 * them. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#define EXPORT __attribute__((visibility("default"), noinline))
/* `fn` is `name` at version `ver`: the default version (@@, what new links bind) or an old one. */
#define DEFAULT_VERSION(fn, name, ver) __asm__(".symver " #fn "," #name "@@" ver)
#define OLD_VERSION(fn, name, ver) __asm__(".symver " #fn "," #name "@" ver)
#define SITE() __builtin_return_address(0)

/* ------------------------------------------------------------------------------------------------
 * The real functions. First those glibc exports under a name of its own (__pthread_mutex_lock ...),
 * linked directly: the loader binds them before any code runs, no dlsym. X(name, type, args).
 */
#define DIRECTS(X)                                                                                 \
	X(mutex_lock, int, (pthread_mutex_t *))                                                    \
	X(mutex_trylock, int, (pthread_mutex_t *))                                                 \
	X(mutex_unlock, int, (pthread_mutex_t *))                                                  \
	X(mutex_init, int, (pthread_mutex_t *, const pthread_mutexattr_t *))                       \
	X(mutex_destroy, int, (pthread_mutex_t *))                                                 \
	X(rwlock_rdlock, int, (pthread_rwlock_t *))                                                \
	X(rwlock_wrlock, int, (pthread_rwlock_t *))                                                \
	X(rwlock_tryrdlock, int, (pthread_rwlock_t *))                                             \
	X(rwlock_trywrlock, int, (pthread_rwlock_t *))                                             \
	X(rwlock_unlock, int, (pthread_rwlock_t *))                                                \
	X(rwlock_init, int, (pthread_rwlock_t *, const pthread_rwlockattr_t *))                    \
	X(rwlock_destroy, int, (pthread_rwlock_t *))

/* libc_NAME is __pthread_NAME@V_BASE; real_NAME points to it. An object before libc in the
 * search order may define __pthread_NAME without a version, which the loader then binds instead
 * (libasan does, for __pthread_mutex_lock and unlock, with an interceptor it never initialises):
 * the constructor checks each against libc's own and repoints real_NAME if they differ. */
#define DIRECT_DECLARE(name, type, args)                                                           \
	type libc_##name args;                                                                     \
	__asm__(".symver libc_" #name ",__pthread_" #name "@" V_BASE);                             \
	static type(*real_##name) args = libc_##name;
DIRECTS(DIRECT_DECLARE)

static void check_directs(void)
{
	void *libc = dlopen(LIBC_SO, RTLD_LAZY | RTLD_NOLOAD);
	if (!libc)
		return;
	void *f;
#define DIRECT_CHECK(name, type, args)                                                             \
	f = dlvsym(libc, "__pthread_" #name, V_BASE);                                              \
	if (f && f != (void *)real_##name)                                                         \
		__atomic_store_n(&real_##name, (type(*) args)f, __ATOMIC_RELAXED);
	DIRECTS(DIRECT_CHECK)
	dlclose(libc);
}

/* Then those found by dlvsym: one slot per (name, version). X(id, name, version). */
#if HAVE_OLD_COND
#define OLD_COND_REALS(X)                                                                          \
	X(COND_WAIT_OLD, pthread_cond_wait, "GLIBC_2.2.5")                                         \
	X(COND_TIMEDWAIT_OLD, pthread_cond_timedwait, "GLIBC_2.2.5")
#else
#define OLD_COND_REALS(X)
#endif
#define REALS(X)                                                                                   \
	X(MUTEX_TIMEDLOCK_B, pthread_mutex_timedlock, V_BASE)                                      \
	X(MUTEX_TIMEDLOCK_N, pthread_mutex_timedlock, V_NEW)                                       \
	X(MUTEX_CLOCKLOCK_C, pthread_mutex_clocklock, V_CLOCK)                                     \
	X(MUTEX_CLOCKLOCK_N, pthread_mutex_clocklock, V_NEW)                                       \
	X(MUTEX_CONSISTENT_B, pthread_mutex_consistent, V_CONSISTENT)                              \
	X(MUTEX_CONSISTENT_N, pthread_mutex_consistent, V_NEW)                                     \
	X(RW_TIMEDRD_B, pthread_rwlock_timedrdlock, V_BASE)                                        \
	X(RW_TIMEDRD_N, pthread_rwlock_timedrdlock, V_NEW)                                         \
	X(RW_TIMEDWR_B, pthread_rwlock_timedwrlock, V_BASE)                                        \
	X(RW_TIMEDWR_N, pthread_rwlock_timedwrlock, V_NEW)                                         \
	X(RW_CLOCKRD_C, pthread_rwlock_clockrdlock, V_CLOCK)                                       \
	X(RW_CLOCKRD_N, pthread_rwlock_clockrdlock, V_NEW)                                         \
	X(RW_CLOCKWR_C, pthread_rwlock_clockwrlock, V_CLOCK)                                       \
	X(RW_CLOCKWR_N, pthread_rwlock_clockwrlock, V_NEW)                                         \
	X(COND_WAIT, pthread_cond_wait, V_COND)                                                    \
	X(COND_TIMEDWAIT, pthread_cond_timedwait, V_COND)                                          \
	X(COND_CLOCKWAIT_C, pthread_cond_clockwait, V_CLOCK)                                       \
	X(COND_CLOCKWAIT_N, pthread_cond_clockwait, V_NEW)                                         \
	X(SEM_WAIT_B, sem_wait, V_BASE)                                                            \
	X(SEM_WAIT_N, sem_wait, V_NEW)                                                             \
	X(SEM_TIMEDWAIT_B, sem_timedwait, V_BASE)                                                  \
	X(SEM_TIMEDWAIT_N, sem_timedwait, V_NEW)                                                   \
	X(SEM_CLOCKWAIT_C, sem_clockwait, V_CLOCK)                                                 \
	X(SEM_CLOCKWAIT_N, sem_clockwait, V_NEW)                                                   \
	X(SEM_TRYWAIT_B, sem_trywait, V_BASE)                                                      \
	X(SEM_TRYWAIT_N, sem_trywait, V_NEW)                                                       \
	X(MTX_LOCK_O, mtx_lock, V_C11)                                                             \
	X(MTX_LOCK_N, mtx_lock, V_NEW)                                                             \
	X(MTX_TIMEDLOCK_O, mtx_timedlock, V_C11)                                                   \
	X(MTX_TIMEDLOCK_N, mtx_timedlock, V_NEW)                                                   \
	X(MTX_TRYLOCK_O, mtx_trylock, V_C11)                                                       \
	X(MTX_TRYLOCK_N, mtx_trylock, V_NEW)                                                       \
	X(MTX_UNLOCK_O, mtx_unlock, V_C11)                                                         \
	X(MTX_UNLOCK_N, mtx_unlock, V_NEW)                                                         \
	X(MTX_INIT_O, mtx_init, V_C11)                                                             \
	X(MTX_INIT_N, mtx_init, V_NEW)                                                             \
	X(MTX_DESTROY_O, mtx_destroy, V_C11)                                                       \
	X(MTX_DESTROY_N, mtx_destroy, V_NEW)                                                       \
	X(CND_WAIT_O, cnd_wait, V_C11)                                                             \
	X(CND_WAIT_N, cnd_wait, V_NEW)                                                             \
	X(CND_TIMEDWAIT_O, cnd_timedwait, V_C11)                                                   \
	X(CND_TIMEDWAIT_N, cnd_timedwait, V_NEW)

#define REAL_ENUM(id, name, ver) R_##id,
#define REAL_NAME(id, name, ver) {#name, ver},
enum real_id { REALS(REAL_ENUM) OLD_COND_REALS(REAL_ENUM) R_COUNT };
static const struct {
	const char *name, *version;
} real_names[R_COUNT] = {REALS(REAL_NAME) OLD_COND_REALS(REAL_NAME)};

/* Written once each (the same value by whoever looks it up first), read with relaxed loads: a
 * thread that sees NULL looks it up itself. */
static void *real_fn[R_COUNT];
/* Set on a thread while it runs dlvsym: see the head comment. */
static __thread int resolving __attribute__((tls_model("initial-exec")));

static void *resolve(enum real_id id)
{
	if (resolving)
		return NULL;
	resolving = 1;
	int e = errno;
	void *f = dlvsym(RTLD_NEXT, real_names[id].name, real_names[id].version);
	if (!f) /* an older glibc without this version: its default one */
		f = dlsym(RTLD_NEXT, real_names[id].name);
	errno = e;
	resolving = 0;
	if (f)
		__atomic_store_n(&real_fn[id], f, __ATOMIC_RELAXED);
	return f;
}

static void resolve_all(void)
{
	resolving = 1;
	check_directs();
	resolving = 0;
	for (int i = 0; i < R_COUNT; i++)
		if (!__atomic_load_n(&real_fn[i], __ATOMIC_RELAXED))
			resolve((enum real_id)i);
}

static inline void *real(enum real_id id)
{
	void *f = __atomic_load_n(&real_fn[id], __ATOMIC_RELAXED);
	return weft__likely(f != NULL) ? f : resolve(id);
}

typedef int (*mutex_timed_fn)(pthread_mutex_t *, const struct timespec *);
typedef int (*mutex_clock_fn)(pthread_mutex_t *, clockid_t, const struct timespec *);
typedef int (*mutex_fn)(pthread_mutex_t *);
typedef int (*rw_timed_fn)(pthread_rwlock_t *, const struct timespec *);
typedef int (*rw_clock_fn)(pthread_rwlock_t *, clockid_t, const struct timespec *);
typedef int (*cond_wait_fn)(pthread_cond_t *, pthread_mutex_t *);
typedef int (*cond_timed_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
typedef int (*cond_clock_fn)(pthread_cond_t *, pthread_mutex_t *, clockid_t,
                             const struct timespec *);
typedef int (*sem_fn)(sem_t *);
typedef int (*sem_timed_fn)(sem_t *, const struct timespec *);
typedef int (*sem_clock_fn)(sem_t *, clockid_t, const struct timespec *);
typedef int (*mtx_fn)(mtx_t *);
typedef int (*mtx_timed_fn)(mtx_t *__restrict, const struct timespec *__restrict);
typedef int (*mtx_init_fn)(mtx_t *, int);
typedef void (*mtx_destroy_fn)(mtx_t *);
typedef int (*cnd_wait_fn)(cnd_t *, mtx_t *);
typedef int (*cnd_timed_fn)(cnd_t *__restrict, mtx_t *__restrict,
                            const struct timespec *__restrict);

/* ------------------------------------------------------------------------------------------------
 * Helpers.
 */

/* Record this call? Two relaxed loads: the monitor runs, and this is not its own thread. */
static inline int active(void)
{
	return __atomic_load_n(&weft__watch_on, __ATOMIC_RELAXED) && !weft__watch_internal;
}

static inline int predicting(void)
{
	return __atomic_load_n(&weft__watch_predict_on, __ATOMIC_RELAXED);
}

static inline int sampling(void)
{
	return __atomic_load_n(&weft__watch_profile_sample, __ATOMIC_RELAXED) > 0;
}

static inline int valid_timespec(const struct timespec *ts)
{
	return ts && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

static inline int64_t ts_ns(const struct timespec *ts)
{
	if (ts->tv_sec > INT64_MAX / 1000000000 - 1)
		return INT64_MAX / 2;
	if (ts->tv_sec < 0)
		return 0;
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static inline struct timespec ns_ts(int64_t ns)
{
	if (ns < 0)
		ns = 0;
	return (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
}

/* A deadline as the engine takes it: CLOCK_MONOTONIC ns, 0 for one already past, -1 (forever)
 * for one too far to represent in int64 ns (tv_sec = LONG_MAX, a common way to write "never"). */
static inline int64_t mono_deadline(clockid_t clock, const struct timespec *abstime)
{
	if (abstime->tv_sec < 0)
		return 0; /* already past: glibc says ETIMEDOUT at once */
	if (clock == CLOCK_MONOTONIC)
		return abstime->tv_sec > INT64_MAX / 1000000000 - 1 ? -1 : ts_ns(abstime);
	return weft__watch_realtime_to_mono(abstime);
}

/* glibc's mutex kind bits (nptl/pthreadP.h): robust 16, priority inheritance 32, process-shared
 * 128. */
#define KIND_PI 32
#define KIND_PSHARED 128

static inline int mutex_kind(const pthread_mutex_t *m)
{
	return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
}

/* A plausible thread id, or 0 (robust mutexes keep marks near INT_MAX there). */
static inline pid_t tid_or_0(int v)
{
	return v > 0 && v < (1 << 30) ? v : 0;
}

static pid_t mutex_owner(const void *lock)
{
	const pthread_mutex_t *m = lock;
	return tid_or_0(__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED));
}

static pid_t rwlock_owner(const void *lock)
{
	const pthread_rwlock_t *l = lock;
	return tid_or_0(__atomic_load_n(&l->__data.__cur_writer, __ATOMIC_RELAXED));
}

/* glibc's sem_t on 64-bit: {uint64_t data; int private; int pad;}; private is 0 when shared. */
static inline int sem_pshared(const sem_t *s)
{
	int priv;
	memcpy(&priv, (const char *)s + sizeof(uint64_t), sizeof(priv));
	return priv == 0;
}

/* The slices weft__watch_wait waits in: 0, ETIMEDOUT or another positive errno. */
static int mutex_slice(void *lock, int64_t end_ns)
{
	mutex_clock_fn f = (mutex_clock_fn)real(R_MUTEX_CLOCKLOCK_N);
	if (!f)
		return EAGAIN;
	struct timespec ts = ns_ts(end_ns);
	return f(lock, CLOCK_MONOTONIC, &ts);
}

static int mutex_slice_pi(void *lock, int64_t end_ns)
{
	mutex_timed_fn f = (mutex_timed_fn)real(R_MUTEX_TIMEDLOCK_N);
	if (!f)
		return EAGAIN;
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	int64_t left = end_ns - weft__watch_now();
	struct timespec ts = ns_ts(ts_ns(&rt) + (left > 0 ? left : 0));
	return f(lock, &ts);
}

static int rd_slice(void *lock, int64_t end_ns)
{
	rw_clock_fn f = (rw_clock_fn)real(R_RW_CLOCKRD_N);
	if (!f)
		return EAGAIN;
	struct timespec ts = ns_ts(end_ns);
	return f(lock, CLOCK_MONOTONIC, &ts);
}

static int wr_slice(void *lock, int64_t end_ns)
{
	rw_clock_fn f = (rw_clock_fn)real(R_RW_CLOCKWR_N);
	if (!f)
		return EAGAIN;
	struct timespec ts = ns_ts(end_ns);
	return f(lock, CLOCK_MONOTONIC, &ts);
}

static int sem_slice(void *lock, int64_t end_ns)
{
	sem_clock_fn f = (sem_clock_fn)real(R_SEM_CLOCKWAIT_N);
	if (!f)
		return EAGAIN;
	struct timespec ts = ns_ts(end_ns);
	int e = errno;
	int r = f(lock, CLOCK_MONOTONIC, &ts) == 0 ? 0 : errno;
	errno = e;
	return r;
}

/* ------------------------------------------------------------------------------------------------
 * Mutexes (and C11 mtx_t, which in glibc is a pthread_mutex_t).
 */

/* After a successful acquisition (0 or EOWNERDEAD) on an active call. */
static inline void mutex_acquired(void *m, uint32_t cls, unsigned flags, int r, void *site)
{
	if (weft__unlikely(r == EOWNERDEAD))
		weft__watch_owner_died(m, site);
	if (cls)
		weft__predict_after(m, cls, 0, flags, site);
	if (sampling())
		weft__watch_hold_acquired(m, site);
}

/* glibc's mark of a robust mutex left inconsistent by an unlock: every lock then fails with
 * ENOTRECOVERABLE. */
#define OWNER_NOTRECOVERABLE 0x7ffffffe

/* A lock without the monitor, for a robust mutex that is not recoverable: glibc's trylock then
 * returns ENOTRECOVERABLE but leaves the lock word taken (its unlock checks the value the
 * exchange replaced, which is 0), where lock and clocklock give it back; so such a mutex never
 * goes through trylock here, or a later call would see EBUSY where it sees ENOTRECOVERABLE
 * without the monitor. */
static int mutex_lock_plain(pthread_mutex_t *m, int64_t deadline)
{
	if (deadline < 0)
		return real_mutex_lock(m);
	mutex_clock_fn f = (mutex_clock_fn)real(R_MUTEX_CLOCKLOCK_N);
	if (!f)
		return EAGAIN;
	struct timespec ts = ns_ts(deadline);
	return f(m, CLOCK_MONOTONIC, &ts);
}

/* A blocking acquisition on an active call: try, then wait until `deadline` (CLOCK_MONOTONIC ns,
 * -1 forever). Returns the real result (positive errno). */
static int mutex_acquire(pthread_mutex_t *m, int64_t deadline, void *site)
{
	uint32_t cls = 0;
	if (predicting()) {
		cls = weft__predict_class(m, site);
		weft__predict_before(m, cls, 0, site);
	}
	if (weft__unlikely(__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) ==
	                   OWNER_NOTRECOVERABLE))
		return mutex_lock_plain(m, deadline);
	int r = real_mutex_trylock(m);
	if (r == EBUSY) {
		int kind = mutex_kind(m);
		struct weft__watch_op op = {
		        .lock = m,
		        .kind = WEFT_WATCH_LOCK_MUTEX,
		        .pshared = (kind & KIND_PSHARED) != 0,
		        .site = site,
		        .timed = (kind & KIND_PI) ? mutex_slice_pi : mutex_slice,
		        .owner = mutex_owner,
		};
		r = weft__watch_wait(&op, deadline);
	}
	if (r == 0 || r == EOWNERDEAD)
		mutex_acquired(m, cls, 0, r, site);
	return r;
}

static inline int mutex_trylock_common(pthread_mutex_t *m, int r, void *site)
{
	if ((r == 0 || r == EOWNERDEAD) && active()) {
		uint32_t cls = predicting() ? weft__predict_class(m, site) : 0;
		mutex_acquired(m, cls, WEFT__PREDICT_TRY, r, site);
	}
	return r;
}

/* Before an unlock: the prediction's held list and the hold sample. */
static inline void mutex_releasing(void *m)
{
	if (active()) {
		if (predicting())
			weft__predict_release(m);
		if (sampling())
			weft__watch_hold_released(m);
	}
}

EXPORT int wrap_mutex_lock(pthread_mutex_t *m)
{
	if (!active())
		return real_mutex_lock(m);
	return mutex_acquire(m, -1, SITE());
}
DEFAULT_VERSION(wrap_mutex_lock, pthread_mutex_lock, V_BASE);

EXPORT int wrap_mutex_trylock(pthread_mutex_t *m)
{
	return mutex_trylock_common(m, real_mutex_trylock(m), SITE());
}
EXPORT int wrap_mutex_trylock_b(pthread_mutex_t *m)
{
	return mutex_trylock_common(m, real_mutex_trylock(m), SITE());
}
DEFAULT_VERSION(wrap_mutex_trylock, pthread_mutex_trylock, V_NEW);
OLD_VERSION(wrap_mutex_trylock_b, pthread_mutex_trylock, V_BASE);

static inline int mutex_timed_common(enum real_id id, pthread_mutex_t *m, clockid_t clock,
                                     const struct timespec *abstime, void *site)
{
	mutex_timed_fn f = (mutex_timed_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active())
		return f(m, abstime);
	if (!valid_timespec(abstime)) {
		/* glibc looks at the time only when it must wait: so do we */
		int r = real_mutex_trylock(m);
		if (r != EBUSY)
			return mutex_trylock_common(m, r, site);
		return f(m, abstime);
	}
	return mutex_acquire(m, mono_deadline(clock, abstime), site);
}

EXPORT int wrap_mutex_timedlock(pthread_mutex_t *m, const struct timespec *abstime)
{
	return mutex_timed_common(R_MUTEX_TIMEDLOCK_N, m, CLOCK_REALTIME, abstime, SITE());
}
EXPORT int wrap_mutex_timedlock_b(pthread_mutex_t *m, const struct timespec *abstime)
{
	return mutex_timed_common(R_MUTEX_TIMEDLOCK_B, m, CLOCK_REALTIME, abstime, SITE());
}
DEFAULT_VERSION(wrap_mutex_timedlock, pthread_mutex_timedlock, V_NEW);
OLD_VERSION(wrap_mutex_timedlock_b, pthread_mutex_timedlock, V_BASE);

static inline int mutex_clock_common(enum real_id id, pthread_mutex_t *m, clockid_t clock,
                                     const struct timespec *abstime, void *site)
{
	mutex_clock_fn f = (mutex_clock_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active() || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME))
		return f(m, clock, abstime); /* an unknown clock: glibc's EINVAL */
	if (!valid_timespec(abstime)) {
		int r = real_mutex_trylock(m);
		if (r != EBUSY)
			return mutex_trylock_common(m, r, site);
		return f(m, clock, abstime);
	}
	return mutex_acquire(m, mono_deadline(clock, abstime), site);
}

EXPORT int wrap_mutex_clocklock(pthread_mutex_t *m, clockid_t clock, const struct timespec *abstime)
{
	return mutex_clock_common(R_MUTEX_CLOCKLOCK_N, m, clock, abstime, SITE());
}
EXPORT int wrap_mutex_clocklock_c(pthread_mutex_t *m, clockid_t clock,
                                  const struct timespec *abstime)
{
	return mutex_clock_common(R_MUTEX_CLOCKLOCK_C, m, clock, abstime, SITE());
}
DEFAULT_VERSION(wrap_mutex_clocklock, pthread_mutex_clocklock, V_NEW);
OLD_VERSION(wrap_mutex_clocklock_c, pthread_mutex_clocklock, V_CLOCK);

EXPORT int wrap_mutex_unlock(pthread_mutex_t *m)
{
	mutex_releasing(m);
	return real_mutex_unlock(m);
}
DEFAULT_VERSION(wrap_mutex_unlock, pthread_mutex_unlock, V_BASE);

EXPORT int wrap_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *a)
{
	int r = real_mutex_init(m, a);
	if (r == 0 && active() && predicting())
		weft__predict_class_init(m, SITE());
	return r;
}
DEFAULT_VERSION(wrap_mutex_init, pthread_mutex_init, V_BASE);

/* The class goes first: if the destroy then fails (EBUSY), the next use gives a new one. */
EXPORT int wrap_mutex_destroy(pthread_mutex_t *m)
{
	if (active() && predicting())
		weft__predict_forget(m);
	return real_mutex_destroy(m);
}
DEFAULT_VERSION(wrap_mutex_destroy, pthread_mutex_destroy, V_BASE);

static inline int mutex_consistent_common(enum real_id id, pthread_mutex_t *m)
{
	mutex_fn f = (mutex_fn)real(id);
	return f ? f(m) : EAGAIN;
}
EXPORT int wrap_mutex_consistent(pthread_mutex_t *m)
{
	return mutex_consistent_common(R_MUTEX_CONSISTENT_N, m);
}
EXPORT int wrap_mutex_consistent_b(pthread_mutex_t *m)
{
	return mutex_consistent_common(R_MUTEX_CONSISTENT_B, m);
}
DEFAULT_VERSION(wrap_mutex_consistent, pthread_mutex_consistent, V_NEW);
OLD_VERSION(wrap_mutex_consistent_b, pthread_mutex_consistent, V_CONSISTENT);

/* ------------------------------------------------------------------------------------------------
 * Reader/writer locks.
 */
static inline void rw_acquired(pthread_rwlock_t *l, uint32_t cls, int write, unsigned flags,
                               void *site)
{
	weft__watch_rw_acquired(l, write);
	if (cls)
		weft__predict_after(l, cls, !write, flags, site);
	if (sampling())
		weft__watch_hold_acquired(l, site);
}

static int rw_acquire(pthread_rwlock_t *l, int write, int64_t deadline, void *site)
{
	uint32_t cls = 0;
	if (predicting()) {
		cls = weft__predict_class(l, site);
		weft__predict_before(l, cls, !write, site);
	}
	int r = write ? real_rwlock_trywrlock(l) : real_rwlock_tryrdlock(l);
	if (r == EBUSY) {
		struct weft__watch_op op = {
		        .lock = l,
		        .kind = write ? WEFT_WATCH_LOCK_WRLOCK : WEFT_WATCH_LOCK_RDLOCK,
		        .pshared = __atomic_load_n(&l->__data.__shared, __ATOMIC_RELAXED) != 0,
		        .site = site,
		        .timed = write ? wr_slice : rd_slice,
		        .owner = rwlock_owner,
		};
		r = weft__watch_wait(&op, deadline);
	}
	if (r == 0)
		rw_acquired(l, cls, write, 0, site);
	return r;
}

static inline int rw_try_common(pthread_rwlock_t *l, int write, int r, void *site)
{
	if (r == 0 && active()) {
		uint32_t cls = predicting() ? weft__predict_class(l, site) : 0;
		rw_acquired(l, cls, write, WEFT__PREDICT_TRY, site);
	}
	return r;
}

EXPORT int wrap_rwlock_rdlock(pthread_rwlock_t *l)
{
	if (!active())
		return real_rwlock_rdlock(l);
	return rw_acquire(l, 0, -1, SITE());
}
EXPORT int wrap_rwlock_rdlock_b(pthread_rwlock_t *l)
{
	if (!active())
		return real_rwlock_rdlock(l);
	return rw_acquire(l, 0, -1, SITE());
}
DEFAULT_VERSION(wrap_rwlock_rdlock, pthread_rwlock_rdlock, V_NEW);
OLD_VERSION(wrap_rwlock_rdlock_b, pthread_rwlock_rdlock, V_BASE);

EXPORT int wrap_rwlock_wrlock(pthread_rwlock_t *l)
{
	if (!active())
		return real_rwlock_wrlock(l);
	return rw_acquire(l, 1, -1, SITE());
}
EXPORT int wrap_rwlock_wrlock_b(pthread_rwlock_t *l)
{
	if (!active())
		return real_rwlock_wrlock(l);
	return rw_acquire(l, 1, -1, SITE());
}
DEFAULT_VERSION(wrap_rwlock_wrlock, pthread_rwlock_wrlock, V_NEW);
OLD_VERSION(wrap_rwlock_wrlock_b, pthread_rwlock_wrlock, V_BASE);

EXPORT int wrap_rwlock_tryrdlock(pthread_rwlock_t *l)
{
	return rw_try_common(l, 0, real_rwlock_tryrdlock(l), SITE());
}
EXPORT int wrap_rwlock_tryrdlock_b(pthread_rwlock_t *l)
{
	return rw_try_common(l, 0, real_rwlock_tryrdlock(l), SITE());
}
DEFAULT_VERSION(wrap_rwlock_tryrdlock, pthread_rwlock_tryrdlock, V_NEW);
OLD_VERSION(wrap_rwlock_tryrdlock_b, pthread_rwlock_tryrdlock, V_BASE);

EXPORT int wrap_rwlock_trywrlock(pthread_rwlock_t *l)
{
	return rw_try_common(l, 1, real_rwlock_trywrlock(l), SITE());
}
EXPORT int wrap_rwlock_trywrlock_b(pthread_rwlock_t *l)
{
	return rw_try_common(l, 1, real_rwlock_trywrlock(l), SITE());
}
DEFAULT_VERSION(wrap_rwlock_trywrlock, pthread_rwlock_trywrlock, V_NEW);
OLD_VERSION(wrap_rwlock_trywrlock_b, pthread_rwlock_trywrlock, V_BASE);

static inline int rw_timed_common(enum real_id id, pthread_rwlock_t *l, int write,
                                  const struct timespec *abstime, void *site)
{
	rw_timed_fn f = (rw_timed_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active())
		return f(l, abstime);
	if (!valid_timespec(abstime)) {
		int r = write ? real_rwlock_trywrlock(l) : real_rwlock_tryrdlock(l);
		if (r != EBUSY)
			return rw_try_common(l, write, r, site);
		return f(l, abstime);
	}
	return rw_acquire(l, write, mono_deadline(CLOCK_REALTIME, abstime), site);
}

EXPORT int wrap_rwlock_timedrdlock(pthread_rwlock_t *l, const struct timespec *t)
{
	return rw_timed_common(R_RW_TIMEDRD_N, l, 0, t, SITE());
}
EXPORT int wrap_rwlock_timedrdlock_b(pthread_rwlock_t *l, const struct timespec *t)
{
	return rw_timed_common(R_RW_TIMEDRD_B, l, 0, t, SITE());
}
DEFAULT_VERSION(wrap_rwlock_timedrdlock, pthread_rwlock_timedrdlock, V_NEW);
OLD_VERSION(wrap_rwlock_timedrdlock_b, pthread_rwlock_timedrdlock, V_BASE);

EXPORT int wrap_rwlock_timedwrlock(pthread_rwlock_t *l, const struct timespec *t)
{
	return rw_timed_common(R_RW_TIMEDWR_N, l, 1, t, SITE());
}
EXPORT int wrap_rwlock_timedwrlock_b(pthread_rwlock_t *l, const struct timespec *t)
{
	return rw_timed_common(R_RW_TIMEDWR_B, l, 1, t, SITE());
}
DEFAULT_VERSION(wrap_rwlock_timedwrlock, pthread_rwlock_timedwrlock, V_NEW);
OLD_VERSION(wrap_rwlock_timedwrlock_b, pthread_rwlock_timedwrlock, V_BASE);

static inline int rw_clock_common(enum real_id id, pthread_rwlock_t *l, int write, clockid_t clock,
                                  const struct timespec *abstime, void *site)
{
	rw_clock_fn f = (rw_clock_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active() || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME))
		return f(l, clock, abstime);
	if (!valid_timespec(abstime)) {
		int r = write ? real_rwlock_trywrlock(l) : real_rwlock_tryrdlock(l);
		if (r != EBUSY)
			return rw_try_common(l, write, r, site);
		return f(l, clock, abstime);
	}
	return rw_acquire(l, write, mono_deadline(clock, abstime), site);
}

EXPORT int wrap_rwlock_clockrdlock(pthread_rwlock_t *l, clockid_t c, const struct timespec *t)
{
	return rw_clock_common(R_RW_CLOCKRD_N, l, 0, c, t, SITE());
}
EXPORT int wrap_rwlock_clockrdlock_c(pthread_rwlock_t *l, clockid_t c, const struct timespec *t)
{
	return rw_clock_common(R_RW_CLOCKRD_C, l, 0, c, t, SITE());
}
DEFAULT_VERSION(wrap_rwlock_clockrdlock, pthread_rwlock_clockrdlock, V_NEW);
OLD_VERSION(wrap_rwlock_clockrdlock_c, pthread_rwlock_clockrdlock, V_CLOCK);

EXPORT int wrap_rwlock_clockwrlock(pthread_rwlock_t *l, clockid_t c, const struct timespec *t)
{
	return rw_clock_common(R_RW_CLOCKWR_N, l, 1, c, t, SITE());
}
EXPORT int wrap_rwlock_clockwrlock_c(pthread_rwlock_t *l, clockid_t c, const struct timespec *t)
{
	return rw_clock_common(R_RW_CLOCKWR_C, l, 1, c, t, SITE());
}
DEFAULT_VERSION(wrap_rwlock_clockwrlock, pthread_rwlock_clockwrlock, V_NEW);
OLD_VERSION(wrap_rwlock_clockwrlock_c, pthread_rwlock_clockwrlock, V_CLOCK);

static inline int rw_unlock_common(pthread_rwlock_t *l)
{
	if (active()) {
		weft__watch_rw_released(l);
		if (predicting())
			weft__predict_release(l);
		if (sampling())
			weft__watch_hold_released(l);
	}
	return real_rwlock_unlock(l);
}
EXPORT int wrap_rwlock_unlock(pthread_rwlock_t *l)
{
	return rw_unlock_common(l);
}
EXPORT int wrap_rwlock_unlock_b(pthread_rwlock_t *l)
{
	return rw_unlock_common(l);
}
DEFAULT_VERSION(wrap_rwlock_unlock, pthread_rwlock_unlock, V_NEW);
OLD_VERSION(wrap_rwlock_unlock_b, pthread_rwlock_unlock, V_BASE);

static inline int rw_init_common(pthread_rwlock_t *l, const pthread_rwlockattr_t *a, void *site)
{
	int r = real_rwlock_init(l, a);
	if (r == 0 && active() && predicting())
		weft__predict_class_init(l, site);
	return r;
}
EXPORT int wrap_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *a)
{
	return rw_init_common(l, a, SITE());
}
EXPORT int wrap_rwlock_init_b(pthread_rwlock_t *l, const pthread_rwlockattr_t *a)
{
	return rw_init_common(l, a, SITE());
}
DEFAULT_VERSION(wrap_rwlock_init, pthread_rwlock_init, V_NEW);
OLD_VERSION(wrap_rwlock_init_b, pthread_rwlock_init, V_BASE);

static inline int rw_destroy_common(pthread_rwlock_t *l)
{
	if (active() && predicting())
		weft__predict_forget(l);
	return real_rwlock_destroy(l);
}
EXPORT int wrap_rwlock_destroy(pthread_rwlock_t *l)
{
	return rw_destroy_common(l);
}
EXPORT int wrap_rwlock_destroy_b(pthread_rwlock_t *l)
{
	return rw_destroy_common(l);
}
DEFAULT_VERSION(wrap_rwlock_destroy, pthread_rwlock_destroy, V_NEW);
OLD_VERSION(wrap_rwlock_destroy_b, pthread_rwlock_destroy, V_BASE);

/* ------------------------------------------------------------------------------------------------
 * Condition waits (pthread_cond_*, cnd_*): bracketed, never sliced.
 *
 * While the thread waits, the mutex is not held: the prediction's held list drops it before the
 * wait and takes it back after (WEFT__PREDICT_REACQUIRE: no new order edge), and so does the hold
 * sample. If the thread is cancelled inside the real wait, glibc retakes the mutex and runs the
 * cleanup handlers: cond_cleanup does what the code after the wait would have done.
 */
struct cond_ctx {
	void *mutex;
	void *site;
	uint32_t cls;
	uint64_t token;
};

static inline void cond_enter(struct cond_ctx *c, const void *cond, void *mutex, void *site)
{
	c->mutex = mutex;
	c->site = site;
	c->cls = 0;
	if (predicting()) {
		c->cls = weft__predict_class(mutex, site);
		weft__predict_release(mutex);
	}
	if (sampling())
		weft__watch_hold_released(mutex);
	c->token = weft__watch_cond_begin(cond, mutex, site);
}

/* Does the wait that returned r leave the mutex held? Every result does (the wait retakes it,
 * EOWNERDEAD included) but EPERM (an error checking mutex the thread did not hold: nothing was
 * released or retaken) and EINVAL (refused before the mutex was touched: held if it was held,
 * which its owner field says). */
static int cond_mutex_held(const struct cond_ctx *c, int r)
{
	if (r == EPERM)
		return 0;
	if (r == EINVAL)
		return mutex_owner(c->mutex) == weft__watch_tid();
	return 1;
}

static void cond_leave(struct cond_ctx *c, int r)
{
	weft__watch_cond_end(c->token);
	if (r == EOWNERDEAD)
		weft__watch_owner_died(c->mutex, c->site);
	if (!cond_mutex_held(c, r))
		return; /* no phantom entry in the held list */
	if (c->cls)
		weft__predict_after(c->mutex, c->cls, 0, WEFT__PREDICT_REACQUIRE, c->site);
	if (sampling())
		weft__watch_hold_acquired(c->mutex, c->site);
}

static void cond_cleanup(void *arg)
{
	cond_leave(arg, 0);
}

/* The wait itself, `call` being the real call: a macro because pthread_cleanup_push/pop must be
 * in one block. */
#define COND_WAIT(result, cond, mutex, site, call)                                                 \
	do {                                                                                       \
		struct cond_ctx ctx_;                                                              \
		cond_enter(&ctx_, (cond), (mutex), (site));                                        \
		pthread_cleanup_push(cond_cleanup, &ctx_);                                         \
		(result) = (call);                                                                 \
		pthread_cleanup_pop(0);                                                            \
		cond_leave(&ctx_, (result));                                                       \
	} while (0)

static inline int cond_wait_common(enum real_id id, pthread_cond_t *c, pthread_mutex_t *m,
                                   void *site)
{
	cond_wait_fn f = (cond_wait_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active())
		return f(c, m);
	int r;
	COND_WAIT(r, c, m, site, f(c, m));
	return r;
}

static inline int cond_timed_common(enum real_id id, pthread_cond_t *c, pthread_mutex_t *m,
                                    const struct timespec *t, void *site)
{
	cond_timed_fn f = (cond_timed_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active())
		return f(c, m, t);
	int r;
	COND_WAIT(r, c, m, site, f(c, m, t));
	return r;
}

static inline int cond_clock_common(enum real_id id, pthread_cond_t *c, pthread_mutex_t *m,
                                    clockid_t clock, const struct timespec *t, void *site)
{
	cond_clock_fn f = (cond_clock_fn)real(id);
	if (!f)
		return EAGAIN;
	if (!active())
		return f(c, m, clock, t);
	int r;
	COND_WAIT(r, c, m, site, f(c, m, clock, t));
	return r;
}

EXPORT int wrap_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
	return cond_wait_common(R_COND_WAIT, c, m, SITE());
}
EXPORT int wrap_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
	return cond_timed_common(R_COND_TIMEDWAIT, c, m, t, SITE());
}
DEFAULT_VERSION(wrap_cond_wait, pthread_cond_wait, V_COND);
DEFAULT_VERSION(wrap_cond_timedwait, pthread_cond_timedwait, V_COND);
#if HAVE_OLD_COND
/* The old ABI: a pthread_cond_t that holds a pointer to the real condvar (glibc allocates it on
 * first use); the wait forwards to the old function, which knows. */
EXPORT int wrap_cond_wait_old(pthread_cond_t *c, pthread_mutex_t *m)
{
	return cond_wait_common(R_COND_WAIT_OLD, c, m, SITE());
}
EXPORT int wrap_cond_timedwait_old(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
	return cond_timed_common(R_COND_TIMEDWAIT_OLD, c, m, t, SITE());
}
OLD_VERSION(wrap_cond_wait_old, pthread_cond_wait, "GLIBC_2.2.5");
OLD_VERSION(wrap_cond_timedwait_old, pthread_cond_timedwait, "GLIBC_2.2.5");
#endif

EXPORT int wrap_cond_clockwait(pthread_cond_t *c, pthread_mutex_t *m, clockid_t k,
                               const struct timespec *t)
{
	return cond_clock_common(R_COND_CLOCKWAIT_N, c, m, k, t, SITE());
}
EXPORT int wrap_cond_clockwait_c(pthread_cond_t *c, pthread_mutex_t *m, clockid_t k,
                                 const struct timespec *t)
{
	return cond_clock_common(R_COND_CLOCKWAIT_C, c, m, k, t, SITE());
}
DEFAULT_VERSION(wrap_cond_clockwait, pthread_cond_clockwait, V_NEW);
OLD_VERSION(wrap_cond_clockwait_c, pthread_cond_clockwait, V_CLOCK);

/* ------------------------------------------------------------------------------------------------
 * Semaphores: -1 and errno, as the real ones. No owner, no prediction (a semaphore is not held).
 */
static int sem_acquire(sem_t *s, sem_fn trywait, int64_t deadline, void *site)
{
	/* glibc's waits are cancellation points even when the semaphore is free */
	pthread_testcancel();
	int e = errno;
	if (trywait(s) == 0)
		return 0;
	if (errno != EAGAIN)
		return -1;
	errno = e;
	struct weft__watch_op op = {
	        .lock = s,
	        .kind = WEFT_WATCH_LOCK_SEM,
	        .pshared = sem_pshared(s),
	        .site = site,
	        .timed = sem_slice,
	        .owner = NULL,
	};
	int r = weft__watch_wait(&op, deadline);
	if (r == 0)
		return 0;
	errno = r;
	return -1;
}

static inline int sem_wait_common(enum real_id id, enum real_id try_id, sem_t *s, void *site)
{
	sem_fn f = (sem_fn)real(id), t = (sem_fn)real(try_id);
	if (!f || !t) {
		errno = EAGAIN;
		return -1;
	}
	if (!active())
		return f(s);
	return sem_acquire(s, t, -1, site);
}

EXPORT int wrap_sem_wait(sem_t *s)
{
	return sem_wait_common(R_SEM_WAIT_N, R_SEM_TRYWAIT_N, s, SITE());
}
EXPORT int wrap_sem_wait_b(sem_t *s)
{
	return sem_wait_common(R_SEM_WAIT_B, R_SEM_TRYWAIT_B, s, SITE());
}
DEFAULT_VERSION(wrap_sem_wait, sem_wait, V_NEW);
OLD_VERSION(wrap_sem_wait_b, sem_wait, V_BASE);

static inline int sem_timed_common(enum real_id id, enum real_id try_id, sem_t *s,
                                   const struct timespec *t, void *site)
{
	sem_timed_fn f = (sem_timed_fn)real(id);
	sem_fn tf = (sem_fn)real(try_id);
	if (!f || !tf) {
		errno = EAGAIN;
		return -1;
	}
	if (!active() || !valid_timespec(t))
		return f(s, t); /* glibc checks the time first: EINVAL */
	return sem_acquire(s, tf, mono_deadline(CLOCK_REALTIME, t), site);
}

EXPORT int wrap_sem_timedwait(sem_t *s, const struct timespec *t)
{
	return sem_timed_common(R_SEM_TIMEDWAIT_N, R_SEM_TRYWAIT_N, s, t, SITE());
}
EXPORT int wrap_sem_timedwait_b(sem_t *s, const struct timespec *t)
{
	return sem_timed_common(R_SEM_TIMEDWAIT_B, R_SEM_TRYWAIT_B, s, t, SITE());
}
DEFAULT_VERSION(wrap_sem_timedwait, sem_timedwait, V_NEW);
OLD_VERSION(wrap_sem_timedwait_b, sem_timedwait, V_BASE);

static inline int sem_clock_common(enum real_id id, sem_t *s, clockid_t clock,
                                   const struct timespec *t, void *site)
{
	sem_clock_fn f = (sem_clock_fn)real(id);
	sem_fn tf = (sem_fn)real(R_SEM_TRYWAIT_N);
	if (!f || !tf) {
		errno = EAGAIN;
		return -1;
	}
	if (!active() || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME) ||
	    !valid_timespec(t))
		return f(s, clock, t);
	return sem_acquire(s, tf, mono_deadline(clock, t), site);
}

EXPORT int wrap_sem_clockwait(sem_t *s, clockid_t c, const struct timespec *t)
{
	return sem_clock_common(R_SEM_CLOCKWAIT_N, s, c, t, SITE());
}
EXPORT int wrap_sem_clockwait_c(sem_t *s, clockid_t c, const struct timespec *t)
{
	return sem_clock_common(R_SEM_CLOCKWAIT_C, s, c, t, SITE());
}
DEFAULT_VERSION(wrap_sem_clockwait, sem_clockwait, V_NEW);
OLD_VERSION(wrap_sem_clockwait_c, sem_clockwait, V_CLOCK);

static inline int sem_trywait_common(enum real_id id, sem_t *s)
{
	sem_fn f = (sem_fn)real(id);
	if (!f) {
		errno = EAGAIN;
		return -1;
	}
	return f(s);
}
EXPORT int wrap_sem_trywait(sem_t *s)
{
	return sem_trywait_common(R_SEM_TRYWAIT_N, s);
}
EXPORT int wrap_sem_trywait_b(sem_t *s)
{
	return sem_trywait_common(R_SEM_TRYWAIT_B, s);
}
DEFAULT_VERSION(wrap_sem_trywait, sem_trywait, V_NEW);
OLD_VERSION(wrap_sem_trywait_b, sem_trywait, V_BASE);

/* ------------------------------------------------------------------------------------------------
 * C11: mtx_t is a pthread_mutex_t (mtx_init sets it up as NORMAL or RECURSIVE). The first try is
 * the real mtx_trylock of the caller's version; a wait is sliced like a mutex's; the result is
 * mapped as glibc maps it (thrd_err_map: 0 success, EBUSY busy, ETIMEDOUT timedout, ENOMEM
 * nomem, anything else error).
 */
static inline int thrd_result(int err)
{
	switch (err) {
	case 0: return thrd_success;
	case EBUSY: return thrd_busy;
	case ETIMEDOUT: return thrd_timedout;
	case ENOMEM: return thrd_nomem;
	default: return thrd_error;
	}
}

static int mtx_acquire(mtx_t *x, mtx_fn trylock, int64_t deadline, void *site)
{
	pthread_mutex_t *m = (pthread_mutex_t *)x;
	uint32_t cls = 0;
	if (predicting()) {
		cls = weft__predict_class(m, site);
		weft__predict_before(m, cls, 0, site);
	}
	int r = trylock(x);
	if (r == thrd_busy) {
		int kind = mutex_kind(m);
		struct weft__watch_op op = {
		        .lock = m,
		        .kind = WEFT_WATCH_LOCK_MUTEX,
		        .pshared = 0,
		        .site = site,
		        .timed = (kind & KIND_PI) ? mutex_slice_pi : mutex_slice,
		        .owner = mutex_owner,
		};
		r = thrd_result(weft__watch_wait(&op, deadline));
	}
	if (r == thrd_success)
		mutex_acquired(m, cls, 0, 0, site);
	return r;
}

static inline int mtx_lock_common(enum real_id id, enum real_id try_id, mtx_t *x, void *site)
{
	mtx_fn f = (mtx_fn)real(id), t = (mtx_fn)real(try_id);
	if (!f || !t)
		return thrd_error;
	if (!active())
		return f(x);
	return mtx_acquire(x, t, -1, site);
}
EXPORT int wrap_mtx_lock(mtx_t *x)
{
	return mtx_lock_common(R_MTX_LOCK_N, R_MTX_TRYLOCK_N, x, SITE());
}
EXPORT int wrap_mtx_lock_o(mtx_t *x)
{
	return mtx_lock_common(R_MTX_LOCK_O, R_MTX_TRYLOCK_O, x, SITE());
}
DEFAULT_VERSION(wrap_mtx_lock, mtx_lock, V_NEW);
OLD_VERSION(wrap_mtx_lock_o, mtx_lock, V_C11);

static inline int mtx_timed_common(enum real_id id, enum real_id try_id, mtx_t *x,
                                   const struct timespec *t, void *site)
{
	mtx_timed_fn f = (mtx_timed_fn)real(id);
	mtx_fn tf = (mtx_fn)real(try_id);
	if (!f || !tf)
		return thrd_error;
	if (!active())
		return f(x, t);
	if (!valid_timespec(t)) {
		int r = tf(x);
		if (r != thrd_busy) {
			if (r == thrd_success)
				mutex_trylock_common((pthread_mutex_t *)x, 0, site);
			return r;
		}
		return f(x, t);
	}
	return mtx_acquire(x, tf, mono_deadline(CLOCK_REALTIME, t), site);
}
EXPORT int wrap_mtx_timedlock(mtx_t *__restrict x, const struct timespec *__restrict t)
{
	return mtx_timed_common(R_MTX_TIMEDLOCK_N, R_MTX_TRYLOCK_N, x, t, SITE());
}
EXPORT int wrap_mtx_timedlock_o(mtx_t *__restrict x, const struct timespec *__restrict t)
{
	return mtx_timed_common(R_MTX_TIMEDLOCK_O, R_MTX_TRYLOCK_O, x, t, SITE());
}
DEFAULT_VERSION(wrap_mtx_timedlock, mtx_timedlock, V_NEW);
OLD_VERSION(wrap_mtx_timedlock_o, mtx_timedlock, V_C11);

static inline int mtx_trylock_common(enum real_id id, mtx_t *x, void *site)
{
	mtx_fn f = (mtx_fn)real(id);
	if (!f)
		return thrd_error;
	int r = f(x);
	if (r == thrd_success)
		mutex_trylock_common((pthread_mutex_t *)x, 0, site);
	return r;
}
EXPORT int wrap_mtx_trylock(mtx_t *x)
{
	return mtx_trylock_common(R_MTX_TRYLOCK_N, x, SITE());
}
EXPORT int wrap_mtx_trylock_o(mtx_t *x)
{
	return mtx_trylock_common(R_MTX_TRYLOCK_O, x, SITE());
}
DEFAULT_VERSION(wrap_mtx_trylock, mtx_trylock, V_NEW);
OLD_VERSION(wrap_mtx_trylock_o, mtx_trylock, V_C11);

static inline int mtx_unlock_common(enum real_id id, mtx_t *x)
{
	mtx_fn f = (mtx_fn)real(id);
	if (!f)
		return thrd_error;
	mutex_releasing(x);
	return f(x);
}
EXPORT int wrap_mtx_unlock(mtx_t *x)
{
	return mtx_unlock_common(R_MTX_UNLOCK_N, x);
}
EXPORT int wrap_mtx_unlock_o(mtx_t *x)
{
	return mtx_unlock_common(R_MTX_UNLOCK_O, x);
}
DEFAULT_VERSION(wrap_mtx_unlock, mtx_unlock, V_NEW);
OLD_VERSION(wrap_mtx_unlock_o, mtx_unlock, V_C11);

static inline int mtx_init_common(enum real_id id, mtx_t *x, int type, void *site)
{
	mtx_init_fn f = (mtx_init_fn)real(id);
	if (!f)
		return thrd_error;
	int r = f(x, type);
	if (r == thrd_success && active() && predicting())
		weft__predict_class_init(x, site);
	return r;
}
EXPORT int wrap_mtx_init(mtx_t *x, int type)
{
	return mtx_init_common(R_MTX_INIT_N, x, type, SITE());
}
EXPORT int wrap_mtx_init_o(mtx_t *x, int type)
{
	return mtx_init_common(R_MTX_INIT_O, x, type, SITE());
}
DEFAULT_VERSION(wrap_mtx_init, mtx_init, V_NEW);
OLD_VERSION(wrap_mtx_init_o, mtx_init, V_C11);

static inline void mtx_destroy_common(enum real_id id, mtx_t *x)
{
	mtx_destroy_fn f = (mtx_destroy_fn)real(id);
	if (active() && predicting())
		weft__predict_forget(x);
	if (f)
		f(x);
}
EXPORT void wrap_mtx_destroy(mtx_t *x)
{
	mtx_destroy_common(R_MTX_DESTROY_N, x);
}
EXPORT void wrap_mtx_destroy_o(mtx_t *x)
{
	mtx_destroy_common(R_MTX_DESTROY_O, x);
}
DEFAULT_VERSION(wrap_mtx_destroy, mtx_destroy, V_NEW);
OLD_VERSION(wrap_mtx_destroy_o, mtx_destroy, V_C11);

static inline int cnd_wait_common(enum real_id id, cnd_t *c, mtx_t *x, void *site)
{
	cnd_wait_fn f = (cnd_wait_fn)real(id);
	if (!f)
		return thrd_error;
	if (!active())
		return f(c, x);
	int r;
	COND_WAIT(r, c, x, site, f(c, x));
	return r;
}
EXPORT int wrap_cnd_wait(cnd_t *c, mtx_t *x)
{
	return cnd_wait_common(R_CND_WAIT_N, c, x, SITE());
}
EXPORT int wrap_cnd_wait_o(cnd_t *c, mtx_t *x)
{
	return cnd_wait_common(R_CND_WAIT_O, c, x, SITE());
}
DEFAULT_VERSION(wrap_cnd_wait, cnd_wait, V_NEW);
OLD_VERSION(wrap_cnd_wait_o, cnd_wait, V_C11);

static inline int cnd_timed_common(enum real_id id, cnd_t *c, mtx_t *x, const struct timespec *t,
                                   void *site)
{
	cnd_timed_fn f = (cnd_timed_fn)real(id);
	if (!f)
		return thrd_error;
	if (!active())
		return f(c, x, t);
	int r;
	COND_WAIT(r, c, x, site, f(c, x, t));
	return r;
}
EXPORT int wrap_cnd_timedwait(cnd_t *__restrict c, mtx_t *__restrict x,
                              const struct timespec *__restrict t)
{
	return cnd_timed_common(R_CND_TIMEDWAIT_N, c, x, t, SITE());
}
EXPORT int wrap_cnd_timedwait_o(cnd_t *__restrict c, mtx_t *__restrict x,
                                const struct timespec *__restrict t)
{
	return cnd_timed_common(R_CND_TIMEDWAIT_O, c, x, t, SITE());
}
DEFAULT_VERSION(wrap_cnd_timedwait, cnd_timedwait, V_NEW);
OLD_VERSION(wrap_cnd_timedwait_o, cnd_timedwait, V_C11);

/* ------------------------------------------------------------------------------------------------
 * Start and stop.
 */
static int started;
static int text_fd = 2;
static int profile_top;

/* One line on stderr (the one thing the preload library writes by itself). */
__attribute__((format(printf, 1, 2))) static void complain(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	int e = errno;
	ssize_t w = write(2, line, (size_t)n);
	(void)w;
	errno = e;
}

static void write_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* An integer variable in [lo, hi]; absent: *ret untouched, 0. Bad: complains, -1. */
static int env_int(const char *name, long lo, long hi, long *ret)
{
	const char *s = getenv(name);
	if (!s)
		return 0;
	char *end;
	int e = errno;
	errno = 0;
	long v = strtol(s, &end, 10);
	int bad = errno != 0 || end == s || *end != '\0' || v < lo || v > hi;
	errno = e;
	if (bad) {
		complain("weft watch: %s=%s: want a whole number from %ld to %ld; running "
		         "unmonitored",
		         name, s, lo, hi);
		return -1;
	}
	*ret = v;
	return 0;
}

/* An fd variable: absent is `dflt`; it must be open. */
static int env_fd(const char *name, int dflt, int *ret)
{
	long v = dflt;
	if (env_int(name, 0, INT_MAX, &v) < 0)
		return -1;
	if (v > 0 && fcntl((int)v, F_GETFD) < 0) {
		complain("weft watch: %s=%ld: not an open file descriptor; running unmonitored",
		         name, v);
		return -1;
	}
	*ret = (int)v;
	return 0;
}

/* Milliseconds to the options' ns: -1 never (where allowed), 0 the default. */
static int env_ms(const char *name, long lo, int64_t *ret)
{
	long v = 0;
	if (env_int(name, lo, 3600L * 1000 * 24, &v) < 0)
		return -1;
	*ret = v < 0 ? -1 : (int64_t)v * 1000000;
	return 0;
}

/* WEFT_WATCH_JSON_ID=DEV:INO (set by `weft watch`): the file the JSON fd must be. A process
 * started by the watched program may find that fd number open on a file of its own (a daemon
 * closed its fds and opened others): then no JSON goes there. Returns the fd to use (0: none). */
static int json_fd_checked(int fd)
{
	const char *id = getenv("WEFT_WATCH_JSON_ID");
	if (fd <= 0 || !id)
		return fd;
	unsigned long long dev, ino;
	char tail;
	struct stat st;
	if (sscanf(id, "%llu:%llu%c", &dev, &ino, &tail) != 2) {
		complain("weft watch: WEFT_WATCH_JSON_ID=%s: want DEV:INO; no JSON reports", id);
		return 0;
	}
	if (fstat(fd, &st) != 0 || (unsigned long long)st.st_dev != dev ||
	    (unsigned long long)st.st_ino != ino) {
		complain("weft watch: fd %d is not the report file of `weft watch` here; no JSON "
		         "reports from this process",
		         fd);
		return 0;
	}
	return fd;
}

static int configure(weft_watch_options *o)
{
	memset(o, 0, sizeof(*o));
	long predict = 0, profile = 0;
	if (env_int("WEFT_WATCH_PREDICT", 0, 1, &predict) < 0 ||
	    env_int("WEFT_WATCH_PROFILE", 0, 1000000, &profile) < 0 ||
	    env_fd("WEFT_WATCH_JSON_FD", 0, &o->json_fd) < 0 ||
	    env_fd("WEFT_WATCH_TEXT_FD", 2, &o->text_fd) < 0 ||
	    env_fd("WEFT_WATCH_SHM_FD", 0, &o->shm_fd) < 0 ||
	    env_ms("WEFT_WATCH_SCAN_MS", 1, &o->scan_ns) < 0 ||
	    env_ms("WEFT_WATCH_LONG_WAIT_MS", -1, &o->long_wait_ns) < 0 ||
	    env_ms("WEFT_WATCH_COND_WAIT_MS", -1, &o->cond_wait_ns) < 0)
		return -1;
	if (o->scan_ns > 60LL * 1000000000) {
		complain("weft watch: WEFT_WATCH_SCAN_MS: at most 60000; running unmonitored");
		return -1;
	}
	const char *action = getenv("WEFT_WATCH_ON_DEADLOCK");
	if (!action || strcmp(action, "report") == 0) {
		o->on_deadlock = WEFT_WATCH_ACTION_REPORT;
	} else if (strcmp(action, "abort") == 0) {
		o->on_deadlock = WEFT_WATCH_ACTION_ABORT;
	} else if (strcmp(action, "exit") == 0) {
		o->on_deadlock = WEFT_WATCH_ACTION_EXIT;
	} else {
		complain("weft watch: WEFT_WATCH_ON_DEADLOCK=%s: want report, abort or exit; "
		         "running unmonitored",
		         action);
		return -1;
	}
	o->predict = (int)predict;
	o->profile_sample = (int)profile;
	o->json_fd = json_fd_checked(o->json_fd);
	return 0;
}

__attribute__((constructor)) static void preload_start(void)
{
	resolve_all();
	weft_watch_options o;
	if (configure(&o) < 0)
		return;
	int r = weft_watch_start(&o);
	if (r < 0) {
		complain("weft watch: cannot start the lock monitor: %s; running unmonitored",
		         weft_strerror(r));
		return;
	}
	started = 1;
	text_fd = o.text_fd;
	profile_top = o.profile_sample > 0 ? 20 : 0;
}

__attribute__((destructor)) static void preload_stop(void)
{
	if (!started)
		return;
	started = 0;
	weft_watch_stop();
	if (profile_top && text_fd > 0) {
		char *text = NULL;
		if (weft_watch_profile_text(profile_top, &text) >= 0 && text) {
			write_all(text_fd, text);
			free(text);
		}
	}
}
