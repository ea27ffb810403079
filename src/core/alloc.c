/* alloc.c: allocation and thread creation behind fault-injection points (see internal/alloc.h).
 *
 * State per site: `countdown` (0: disarmed), `repeat`, `injected`. weft__fault_hit decrements the
 * countdown with a CAS loop so that exactly one call sees it reach zero when several threads race;
 * with `repeat`, the countdown stays at 1 after firing so every later call fails too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>

#include "../internal/alloc.h"
#include "../internal/common.h"

static struct {
	_Atomic long countdown;
	_Atomic bool repeat;
	_Atomic long injected;
} faults[WEFT__FAULT_COUNT];

void weft__fault_arm(enum weft__fault_site site, long countdown, bool repeat)
{
	WEFT__ASSERT(site < WEFT__FAULT_COUNT && countdown >= 0);
	atomic_store(&faults[site].injected, 0);
	atomic_store(&faults[site].repeat, repeat);
	atomic_store(&faults[site].countdown, countdown);
}

long weft__fault_injected(enum weft__fault_site site)
{
	WEFT__ASSERT(site < WEFT__FAULT_COUNT);
	return atomic_load(&faults[site].injected);
}

bool weft__fault_hit(enum weft__fault_site site)
{
	long c = atomic_load_explicit(&faults[site].countdown, memory_order_relaxed);
	while (c > 0) {
		bool repeat = atomic_load(&faults[site].repeat);
		long next = (c == 1 && repeat) ? 1 : c - 1;
		if (atomic_compare_exchange_weak(&faults[site].countdown, &c, next)) {
			if (c == 1) {
				atomic_fetch_add(&faults[site].injected, 1);
				return true;
			}
			return false;
		}
	}
	return false;
}

void *weft__malloc(size_t n)
{
	if (weft__fault_hit(WEFT__FAULT_ALLOC))
		return NULL;
	int saved = errno; /* weft never sets errno, not even malloc's ENOMEM */
	void *r = malloc(n);
	errno = saved;
	return r;
}

void *weft__calloc(size_t nmemb, size_t size)
{
	if (weft__fault_hit(WEFT__FAULT_ALLOC))
		return NULL;
	int saved = errno; /* weft never sets errno, not even malloc's ENOMEM */
	void *r = calloc(nmemb, size);
	errno = saved;
	return r;
}

void *weft__realloc(void *p, size_t n)
{
	if (weft__fault_hit(WEFT__FAULT_ALLOC))
		return NULL;
	int saved = errno; /* weft never sets errno, not even malloc's ENOMEM */
	void *r = realloc(p, n);
	errno = saved;
	return r;
}

char *weft__strdup(const char *s)
{
	if (weft__fault_hit(WEFT__FAULT_ALLOC))
		return NULL;
	int saved = errno; /* weft never sets errno, not even malloc's ENOMEM */
	char *r = strdup(s);
	errno = saved;
	return r;
}

struct thread_start {
	void *(*fn)(void *);
	void *arg;
	char name[16];
};

/* The new thread names itself: naming it from the creator races with a thread that has already
 * exited (its /proc entry is gone), and the name should be there before the first instruction of
 * fn, for a debugger or `ps -L` that looks early. */
static void *thread_trampoline(void *p)
{
	struct thread_start st = *(struct thread_start *)p;
	free(p);
	if (st.name[0])
		prctl(PR_SET_NAME, st.name, 0, 0, 0);
	return st.fn(st.arg);
}

int weft__thread_create(pthread_t *ret, const char *name, void *(*fn)(void *), void *arg)
{
	if (weft__fault_hit(WEFT__FAULT_THREAD))
		return -EAGAIN;
	struct thread_start *st = weft__malloc(sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->fn = fn;
	st->arg = arg;
	st->name[0] = '\0';
	if (name) {
		strncpy(st->name, name, sizeof(st->name) - 1); /* at most 15 characters are kept */
		st->name[sizeof(st->name) - 1] = '\0';
	}
	sigset_t all, old;
	sigfillset(&all);
	/* The new thread inherits this mask: weft's threads never run a program's asynchronous
	 * signal handlers. The synchronous ones stay open: a fault in a blocked SIGSEGV kills the
	 * process without running any handler (the fiber stack-overflow report needs SIGSEGV). */
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGTRAP);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int r = pthread_create(&t, NULL, thread_trampoline, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		free(st);
		return -r;
	}
	*ret = t;
	return 0;
}
