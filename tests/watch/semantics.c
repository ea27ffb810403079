/* semantics: the results a program gets from its lock calls, which the monitor must not change.
 * Every check compares a call's result with glibc's documented one; the program prints
 * "semantics: all N checks passed" and exits 0, or names each failed check and exits 1. The test
 * runs it with and without `weft watch` (and with --predict).
 *
 * Covered: error checking relock (EDEADLK) and unlock by a non-owner (EPERM), trylock EBUSY,
 * timed locks on CLOCK_REALTIME and CLOCK_MONOTONIC (ETIMEDOUT, after the deadline; EINVAL for a
 * bad tv_nsec only when the lock is busy; EINVAL for a bad clock), recursive counts, robust
 * EOWNERDEAD then ENOTRECOVERABLE, rwlock EDEADLK / EBUSY / ETIMEDOUT, semaphores (EAGAIN,
 * ETIMEDOUT, EINVAL, EINTR from a signal handler), C11 mtx_/cnd_ results, condition waits that
 * time out, cancellation inside pthread_cond_wait and sem_wait, and (x86-64) the old symbol
 * versions pthread_cond_timedwait@GLIBC_2.2.5 (the old condvar ABI), mtx_lock@GLIBC_2.28 and
 * pthread_mutex_trylock@GLIBC_2.2.5. */
#include "prog.h"

#include <semaphore.h>
#include <signal.h>
#include <threads.h>

static int checks, failures;

#define CHECK(got, want)                                                                           \
	do {                                                                                       \
		long g_ = (long)(got), w_ = (long)(want);                                          \
		checks++;                                                                          \
		if (g_ != w_) {                                                                    \
			failures++;                                                                \
			printf("FAIL line %d: %s = %ld, want %s = %ld\n", __LINE__, #got, g_,      \
			       #want, w_);                                                         \
		}                                                                                  \
	} while (0)

static struct timespec in_ms(clockid_t clock, long ms)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	return t;
}

static int passed(clockid_t clock, const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(clock, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* ---- a helper thread that runs one call on a lock the main thread holds ---- */
struct call {
	int (*fn)(void *);
	void *arg;
	int result;
};

static void *call_main(void *arg)
{
	struct call *c = arg;
	c->result = c->fn(c->arg);
	return NULL;
}

static int on_other_thread(int (*fn)(void *), void *arg)
{
	struct call c = {fn, arg, -12345};
	pthread_t t;
	prog_check(pthread_create(&t, NULL, call_main, &c), "pthread_create");
	pthread_join(t, NULL);
	return c.result;
}

static int do_trylock(void *m)
{
	return pthread_mutex_trylock(m);
}

static int do_unlock(void *m)
{
	return pthread_mutex_unlock(m);
}

static int do_lock_and_exit(void *m)
{
	return pthread_mutex_lock(m); /* the thread ends holding it */
}

static void check_errorcheck(void)
{
	pthread_mutex_t m;
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&m, &a);
	CHECK(pthread_mutex_lock(&m), 0);
	CHECK(pthread_mutex_lock(&m), EDEADLK);
	CHECK(pthread_mutex_trylock(&m), EBUSY);
	CHECK(on_other_thread(do_trylock, &m), EBUSY);
	CHECK(on_other_thread(do_unlock, &m), EPERM);
	CHECK(pthread_mutex_unlock(&m), 0);
	CHECK(pthread_mutex_unlock(&m), EPERM);
	CHECK(pthread_mutex_destroy(&m), 0);
	pthread_mutexattr_destroy(&a);
}

static pthread_mutex_t timed_m = PTHREAD_MUTEX_INITIALIZER;

static int do_timedlock_150ms(void *arg)
{
	struct timespec d = in_ms(CLOCK_REALTIME, 150);
	int r = pthread_mutex_timedlock(&timed_m, &d);
	if (r == ETIMEDOUT && !passed(CLOCK_REALTIME, &d))
		return -1; /* timed out early */
	return r;
}

static int do_timedlock_past(void *arg)
{
	struct timespec d = in_ms(CLOCK_REALTIME, 0);
	d.tv_sec -= 10;
	return pthread_mutex_timedlock(&timed_m, &d);
}

static int do_timedlock_bad_nsec(void *arg)
{
	struct timespec d = in_ms(CLOCK_REALTIME, 0);
	d.tv_nsec = 1000000000;
	return pthread_mutex_timedlock(&timed_m, &d);
}

static int do_clocklock_100ms(void *arg)
{
	struct timespec d = in_ms(CLOCK_MONOTONIC, 100);
	int r = pthread_mutex_clocklock(&timed_m, CLOCK_MONOTONIC, &d);
	if (r == ETIMEDOUT && !passed(CLOCK_MONOTONIC, &d))
		return -1;
	return r;
}

static int do_clocklock_bad_clock(void *arg)
{
	struct timespec d = in_ms(CLOCK_MONOTONIC, 100);
	return pthread_mutex_clocklock(&timed_m, CLOCK_PROCESS_CPUTIME_ID, &d);
}

static void check_timed(void)
{
	CHECK(pthread_mutex_lock(&timed_m), 0);
	CHECK(on_other_thread(do_timedlock_150ms, NULL), ETIMEDOUT);
	CHECK(on_other_thread(do_timedlock_past, NULL), ETIMEDOUT);
	CHECK(on_other_thread(do_timedlock_bad_nsec, NULL), EINVAL);
	CHECK(on_other_thread(do_clocklock_100ms, NULL), ETIMEDOUT);
	CHECK(on_other_thread(do_clocklock_bad_clock, NULL), EINVAL);
	CHECK(pthread_mutex_unlock(&timed_m), 0);
	/* free: glibc takes it without looking at the time */
	struct timespec bad = {0, 1000000000};
	CHECK(pthread_mutex_timedlock(&timed_m, &bad), 0);
	CHECK(pthread_mutex_unlock(&timed_m), 0);
}

static void check_recursive(void)
{
	pthread_mutex_t m;
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&m, &a);
	CHECK(pthread_mutex_lock(&m), 0);
	CHECK(pthread_mutex_lock(&m), 0);
	CHECK(pthread_mutex_trylock(&m), 0);
	CHECK(on_other_thread(do_trylock, &m), EBUSY);
	CHECK(pthread_mutex_unlock(&m), 0);
	CHECK(pthread_mutex_unlock(&m), 0);
	CHECK(on_other_thread(do_trylock, &m), EBUSY);
	CHECK(pthread_mutex_unlock(&m), 0);
	CHECK(pthread_mutex_unlock(&m), EPERM);
	pthread_mutex_destroy(&m);
	pthread_mutexattr_destroy(&a);
}

static void check_robust(void)
{
	pthread_mutex_t m;
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&m, &a);
	CHECK(on_other_thread(do_lock_and_exit, &m), 0);
	CHECK(pthread_mutex_lock(&m), EOWNERDEAD);
	CHECK(pthread_mutex_unlock(&m), 0); /* not made consistent */
	CHECK(pthread_mutex_lock(&m), ENOTRECOVERABLE);
	CHECK(pthread_mutex_trylock(&m), ENOTRECOVERABLE);
	pthread_mutex_destroy(&m);
	/* and made consistent: usable again */
	pthread_mutex_init(&m, &a);
	CHECK(on_other_thread(do_lock_and_exit, &m), 0);
	CHECK(pthread_mutex_trylock(&m), EOWNERDEAD);
	CHECK(pthread_mutex_consistent(&m), 0);
	CHECK(pthread_mutex_unlock(&m), 0);
	CHECK(pthread_mutex_lock(&m), 0);
	CHECK(pthread_mutex_unlock(&m), 0);
	pthread_mutex_destroy(&m);
	pthread_mutexattr_destroy(&a);
}

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;

static int do_timedwrlock_100ms(void *arg)
{
	struct timespec d = in_ms(CLOCK_REALTIME, 100);
	int r = pthread_rwlock_timedwrlock(&rw, &d);
	if (r == ETIMEDOUT && !passed(CLOCK_REALTIME, &d))
		return -1;
	return r;
}

static int do_tryrdlock(void *arg)
{
	int r = pthread_rwlock_tryrdlock(&rw);
	if (r == 0)
		pthread_rwlock_unlock(&rw);
	return r;
}

static int do_clockrdlock_50ms(void *arg)
{
	struct timespec d = in_ms(CLOCK_MONOTONIC, 50);
	return pthread_rwlock_clockrdlock(&rw, CLOCK_MONOTONIC, &d);
}

static void check_rwlock(void)
{
	CHECK(pthread_rwlock_wrlock(&rw), 0);
	CHECK(pthread_rwlock_rdlock(&rw), EDEADLK);
	CHECK(pthread_rwlock_wrlock(&rw), EDEADLK);
	CHECK(pthread_rwlock_trywrlock(&rw), EBUSY);
	CHECK(on_other_thread(do_tryrdlock, NULL), EBUSY);
	CHECK(on_other_thread(do_clockrdlock_50ms, NULL), ETIMEDOUT);
	CHECK(pthread_rwlock_unlock(&rw), 0);
	CHECK(pthread_rwlock_rdlock(&rw), 0);
	CHECK(pthread_rwlock_rdlock(&rw), 0);
	CHECK(on_other_thread(do_tryrdlock, NULL), 0);
	CHECK(pthread_rwlock_trywrlock(&rw), EBUSY);
	CHECK(on_other_thread(do_timedwrlock_100ms, NULL), ETIMEDOUT);
	CHECK(pthread_rwlock_unlock(&rw), 0);
	CHECK(pthread_rwlock_unlock(&rw), 0);
}

/* ---- semaphores ---- */
static sem_t sem;
static volatile sig_atomic_t sigs;
static void on_usr1(int sig)
{
	sigs++;
}

static void *sem_interrupted(void *arg)
{
	int r = sem_wait(&sem);
	return (void *)(long)(r == 0 ? 0 : errno);
}

static void *sem_cancelled(void *arg)
{
	sem_wait(&sem);
	return NULL;
}

static void check_sem(void)
{
	sem_init(&sem, 0, 0);
	errno = 0;
	CHECK(sem_trywait(&sem), -1);
	CHECK(errno, EAGAIN);
	struct timespec d = in_ms(CLOCK_REALTIME, 100);
	CHECK(sem_timedwait(&sem, &d), -1);
	CHECK(errno, ETIMEDOUT);
	CHECK(passed(CLOCK_REALTIME, &d), 1);
	d = in_ms(CLOCK_MONOTONIC, 50);
	CHECK(sem_clockwait(&sem, CLOCK_MONOTONIC, &d), -1);
	CHECK(errno, ETIMEDOUT);
	struct timespec bad = {0, -1};
	CHECK(sem_timedwait(&sem, &bad), -1);
	CHECK(errno, EINVAL);
	CHECK(sem_post(&sem), 0);
	CHECK(sem_wait(&sem), 0);
	errno = 0;
	CHECK(sem_post(&sem), 0);
	/* glibc checks the time first, even when it could take one */
	CHECK(sem_timedwait(&sem, &bad), -1);
	CHECK(errno, EINVAL);
	CHECK(sem_trywait(&sem), 0);

	/* a signal handler interrupts sem_wait: EINTR (whatever SA_RESTART says) */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t t;
	prog_check(pthread_create(&t, NULL, sem_interrupted, NULL), "pthread_create");
	void *res = NULL;
	for (int i = 0; i < 200; i++) {
		prog_sleep_ms(20);
		pthread_kill(t, SIGUSR1);
		if (pthread_tryjoin_np(t, &res) == 0)
			break;
	}
	if (pthread_tryjoin_np(t, &res) != 0 && res == NULL) {
		sem_post(&sem);
		pthread_join(t, &res);
	}
	CHECK((long)res, EINTR);

	/* cancellation inside sem_wait */
	prog_check(pthread_create(&t, NULL, sem_cancelled, NULL), "pthread_create");
	prog_sleep_ms(50);
	pthread_cancel(t);
	pthread_join(t, &res);
	CHECK(res == PTHREAD_CANCELED, 1);
	sem_destroy(&sem);
}

/* ---- conditions ---- */
static pthread_mutex_t cm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void unlock_cm(void *arg)
{
	pthread_mutex_unlock(&cm);
}

static void *cond_cancelled(void *arg)
{
	pthread_mutex_lock(&cm);
	pthread_cleanup_push(unlock_cm, NULL);
	for (;;)
		pthread_cond_wait(&cv, &cm);
	pthread_cleanup_pop(1);
	return NULL;
}

static void check_cond(void)
{
	CHECK(pthread_mutex_lock(&cm), 0);
	struct timespec d = in_ms(CLOCK_REALTIME, 50);
	CHECK(pthread_cond_timedwait(&cv, &cm, &d), ETIMEDOUT);
	CHECK(pthread_mutex_trylock(&cm), EBUSY); /* held again after the wait */
	d = in_ms(CLOCK_MONOTONIC, 50);
	CHECK(pthread_cond_clockwait(&cv, &cm, CLOCK_MONOTONIC, &d), ETIMEDOUT);
	CHECK(pthread_mutex_unlock(&cm), 0);

	pthread_t t;
	prog_check(pthread_create(&t, NULL, cond_cancelled, NULL), "pthread_create");
	prog_sleep_ms(50);
	pthread_cancel(t);
	void *res;
	pthread_join(t, &res);
	CHECK(res == PTHREAD_CANCELED, 1);
	CHECK(pthread_mutex_trylock(&cm), 0); /* the cleanup handler unlocked it */
	CHECK(pthread_mutex_unlock(&cm), 0);
}

/* ---- C11 ---- */
static mtx_t x;

static int do_mtx_trylock(void *arg)
{
	return mtx_trylock(&x);
}

static int do_mtx_timedlock(void *arg)
{
	struct timespec d = in_ms(CLOCK_REALTIME, 100);
	return mtx_timedlock(&x, &d);
}

static void check_c11(void)
{
	CHECK(mtx_init(&x, mtx_timed), thrd_success);
	CHECK(mtx_lock(&x), thrd_success);
	CHECK(on_other_thread(do_mtx_trylock, NULL), thrd_busy);
	CHECK(on_other_thread(do_mtx_timedlock, NULL), thrd_timedout);
	cnd_t c;
	CHECK(cnd_init(&c), thrd_success);
	struct timespec d = in_ms(CLOCK_REALTIME, 50);
	CHECK(cnd_timedwait(&c, &x, &d), thrd_timedout);
	CHECK(mtx_unlock(&x), thrd_success);
	cnd_destroy(&c);
	mtx_destroy(&x);

	CHECK(mtx_init(&x, mtx_plain | mtx_recursive), thrd_success);
	CHECK(mtx_lock(&x), thrd_success);
	CHECK(mtx_lock(&x), thrd_success);
	CHECK(mtx_trylock(&x), thrd_success);
	CHECK(on_other_thread(do_mtx_trylock, NULL), thrd_busy);
	CHECK(mtx_unlock(&x), thrd_success);
	CHECK(mtx_unlock(&x), thrd_success);
	CHECK(mtx_unlock(&x), thrd_success);
	mtx_destroy(&x);
}

/* ---- old symbol versions ---- */
#if defined(__x86_64__)
int old_cond_timedwait(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
int old_cond_destroy(pthread_cond_t *);
int old_mtx_lock(mtx_t *);
int old_mutex_trylock(pthread_mutex_t *);
__asm__(".symver old_cond_timedwait, pthread_cond_timedwait@GLIBC_2.2.5");
__asm__(".symver old_cond_destroy, pthread_cond_destroy@GLIBC_2.2.5");
__asm__(".symver old_mtx_lock, mtx_lock@GLIBC_2.28");
__asm__(".symver old_mutex_trylock, pthread_mutex_trylock@GLIBC_2.2.5");

static void check_old_versions(void)
{
	pthread_cond_t old; /* the old ABI: a pointer to the real condvar, made on first use */
	memset(&old, 0, sizeof(old));
	CHECK(pthread_mutex_lock(&cm), 0);
	struct timespec d = in_ms(CLOCK_REALTIME, 50);
	CHECK(old_cond_timedwait(&old, &cm, &d), ETIMEDOUT);
	CHECK(old_mutex_trylock(&cm), EBUSY);
	CHECK(pthread_mutex_unlock(&cm), 0);
	CHECK(old_cond_destroy(&old), 0);
	CHECK(mtx_init(&x, mtx_plain), thrd_success);
	CHECK(old_mtx_lock(&x), thrd_success);
	CHECK(on_other_thread(do_mtx_trylock, NULL), thrd_busy);
	CHECK(mtx_unlock(&x), thrd_success);
	mtx_destroy(&x);
}
#else
static void check_old_versions(void)
{
}
#endif

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 30000);
	check_errorcheck();
	check_timed();
	check_recursive();
	check_robust();
	check_rwlock();
	check_sem();
	check_cond();
	check_c11();
	check_old_versions();
	if (failures) {
		printf("semantics: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("semantics: all %d checks passed\n", checks);
	return 0;
}
