/* weft's own locks, each with a rank from one table.
 *
 * A thread may take a lock only if its rank is higher than the rank of every lock it already holds.
 * Debug builds (WEFT_DEBUG_LOCKS) keep a per-thread stack of held ranks and abort on a violation,
 * naming both locks, so that an order that could deadlock fails the first time it is taken in a
 * test, not the day two threads race on it. Release builds compile to plain pthread mutexes.
 *
 * To add a lock: give it a rank below, in the order locks may nest (outer first). A function that
 * holds two locks says why in a comment.
 */
#ifndef WEFT_INTERNAL_LOCK_H
#define WEFT_INTERNAL_LOCK_H

#include <pthread.h>

#include "common.h"

enum weft__lock_rank {
	WEFT__RANK_NONE = 0,
	WEFT__RANK_POOL,           /* a weft_pool's control: threads, bounds, shutdown */
	WEFT__RANK_POOL_IDLE,      /* a weft_pool's list of parked workers */
	WEFT__RANK_POOL_OVERFLOW,  /* a weft_pool's overflow queue */
	WEFT__RANK_POOL_FUTURES,   /* a weft_pool's free list of futures */
	WEFT__RANK_POOL_VERDICT,   /* a weft_pool's published verdict */
	WEFT__RANK_FIBER_SCHEDS,   /* the process's list of fiber schedulers (dump) */
	WEFT__RANK_METRICS_SERVER, /* weft_metrics_server state */
	WEFT__RANK_METRICS,        /* a weft_metrics registry: series list; exports run under it */
	WEFT__RANK_SYMBOLIZER,     /* a weft_symbolizer's module cache */
	WEFT__RANK_GLOBAL_INIT,    /* one-time process-wide set-up (global registry, unwinder) */
	WEFT__RANK_COUNT,
};

typedef struct weft__mutex {
	pthread_mutex_t m;
	enum weft__lock_rank rank;
} weft__mutex;

#define WEFT__MUTEX_INIT(rank)                                                                     \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER, (rank)                                                  \
	}

const char *weft__lock_rank_name(enum weft__lock_rank rank);

#ifdef WEFT_DEBUG_LOCKS
void weft__lock_acquire_check(const weft__mutex *mu);
void weft__lock_release_check(const weft__mutex *mu);
#else
static inline void weft__lock_acquire_check(const weft__mutex *mu)
{
	(void)mu;
}
static inline void weft__lock_release_check(const weft__mutex *mu)
{
	(void)mu;
}
#endif

static inline void weft__mutex_init(weft__mutex *mu, enum weft__lock_rank rank)
{
	WEFT__ASSERT(pthread_mutex_init(&mu->m, NULL) == 0);
	mu->rank = rank;
}

static inline void weft__mutex_destroy(weft__mutex *mu)
{
	pthread_mutex_destroy(&mu->m);
}

static inline void weft__mutex_lock(weft__mutex *mu)
{
	weft__lock_acquire_check(mu);
	WEFT__ASSERT(pthread_mutex_lock(&mu->m) == 0);
}

static inline void weft__mutex_unlock(weft__mutex *mu)
{
	weft__lock_release_check(mu);
	WEFT__ASSERT(pthread_mutex_unlock(&mu->m) == 0);
}

#endif
