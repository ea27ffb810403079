/* Allocation and thread creation with fault injection.
 *
 * Every allocation and thread start in weft goes through these wrappers so that tests can make the
 * n-th one fail and prove that each error path frees what it built (SQLite's sqlite3FaultSim idea).
 * A fault site is armed with a countdown: the countdown-th call from then on fails, and, if
 * `repeat`, every call after it too. Unarmed, a site costs one relaxed load.
 */
#ifndef WEFT_INTERNAL_ALLOC_H
#define WEFT_INTERNAL_ALLOC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

enum weft__fault_site {
	WEFT__FAULT_ALLOC,  /* weft__malloc, weft__calloc, weft__realloc, weft__strdup */
	WEFT__FAULT_THREAD, /* weft__thread_create */
	WEFT__FAULT_OPEN,   /* weft__fault_hit(WEFT__FAULT_OPEN) at file and socket opens */
	WEFT__FAULT_COUNT,
};

/* Arm a site: the `countdown`-th call from now fails (1: the next one); 0 disarms. */
void weft__fault_arm(enum weft__fault_site site, long countdown, bool repeat);
/* Number of faults injected at a site since it was last armed. */
long weft__fault_injected(enum weft__fault_site site);
/* True if this call must fail. */
bool weft__fault_hit(enum weft__fault_site site);

void *weft__malloc(size_t n);
void *weft__calloc(size_t nmemb, size_t size);
void *weft__realloc(void *p, size_t n);
char *weft__strdup(const char *s);

/* pthread_create with fault injection, all signals blocked in the new thread, and a name (at most
 * 15 characters are kept), which the thread sets itself before calling fn. Returns 0 or -errno
 * (-EAGAIN when threads run out, -ENOMEM). */
int weft__thread_create(pthread_t *ret, const char *name, void *(*fn)(void *), void *arg);

#endif
