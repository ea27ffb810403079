/* lock.c: rank names and the debug-build lock-order check (internal/lock.h).
 *
 * Each thread keeps a small stack of the locks it holds. Acquiring a lock whose rank is not above
 * the top of the stack is a rank violation: the order could deadlock against a thread that takes
 * the two the other way. Locks may be released out of order; the release removes the entry.
 *
 * The same builds hand every acquisition and release to the lock monitor's prediction mode when it
 * runs (weft_watch_start with .predict): a rank is a lock class there, named after the rank, so an
 * order between weft's own locks and a program's locks (a weft_mutex held around a pool call that
 * a pool task also takes, say) is checked and reported like any other inversion. The monitor's
 * own threads (weft__watch_internal) are left out: the watchdog takes the symbolizer's lock. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "../internal/lock.h"
#include "../internal/watch.h"

static const char *const rank_names[WEFT__RANK_COUNT] = {
        [WEFT__RANK_NONE] = "none",
        [WEFT__RANK_POOL] = "pool",
        [WEFT__RANK_POOL_IDLE] = "pool_idle",
        [WEFT__RANK_POOL_OVERFLOW] = "pool_overflow",
        [WEFT__RANK_POOL_FUTURES] = "pool_futures",
        [WEFT__RANK_POOL_VERDICT] = "pool_verdict",
        [WEFT__RANK_FIBER_SCHEDS] = "fiber_scheds",
        [WEFT__RANK_METRICS_SERVER] = "metrics_server",
        [WEFT__RANK_METRICS] = "metrics",
        [WEFT__RANK_SYMBOLIZER] = "symbolizer",
        [WEFT__RANK_GLOBAL_INIT] = "global_init",
};

const char *weft__lock_rank_name(enum weft__lock_rank rank)
{
	return rank < WEFT__RANK_COUNT && rank_names[rank] ? rank_names[rank] : "?";
}

#ifdef WEFT_DEBUG_LOCKS
#define HELD_MAX 16
static __thread const weft__mutex *held[HELD_MAX];
static __thread int nheld;
static _Atomic uint32_t rank_class[WEFT__RANK_COUNT];

static int watched(void)
{
	return __atomic_load_n(&weft__watch_predict_on, __ATOMIC_RELAXED) && !weft__watch_internal;
}

/* The monitor's class for a rank; 0 (not tracked) if its class table is full. */
static uint32_t class_of(enum weft__lock_rank rank)
{
	uint32_t c = atomic_load_explicit(&rank_class[rank], memory_order_relaxed);
	if (c == 0) {
		c = weft__predict_class_named(weft__lock_rank_name(rank), NULL);
		atomic_store_explicit(&rank_class[rank], c, memory_order_relaxed);
	}
	return c;
}

void weft__lock_acquire_check(const weft__mutex *mu)
{
	if (nheld > 0 && held[nheld - 1]->rank >= mu->rank) {
		fprintf(stderr,
		        "weft: lock rank violation: taking %s (rank %d) while holding %s (rank "
		        "%d)\n",
		        weft__lock_rank_name(mu->rank), mu->rank,
		        weft__lock_rank_name(held[nheld - 1]->rank), held[nheld - 1]->rank);
		abort();
	}
	WEFT__ASSERT(nheld < HELD_MAX);
	held[nheld++] = mu;
	if (watched()) {
		/* checked and recorded before the lock is taken: the rank order already holds */
		uint32_t c = class_of(mu->rank);
		void *site = __builtin_return_address(0);
		if (c != 0) {
			weft__predict_before(mu, c, 0, site);
			weft__predict_after(mu, c, 0, 0, site);
		}
	}
}

void weft__lock_release_check(const weft__mutex *mu)
{
	for (int i = nheld - 1; i >= 0; i--) {
		if (held[i] == mu) {
			for (int j = i; j < nheld - 1; j++)
				held[j] = held[j + 1];
			nheld--;
			if (watched())
				weft__predict_release(mu);
			return;
		}
	}
	fprintf(stderr, "weft: releasing %s, which this thread does not hold\n",
	        weft__lock_rank_name(mu->rank));
	abort();
}
#endif
