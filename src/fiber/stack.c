/* Fiber stacks: allocation, the guard-page budget, caching, overflow detection.
 *
 * A stack is one block; the fiber's struct sits at its top (above `hi`), so a spawn makes one
 * allocation and a parked fiber's struct shares a page with its newest frames:
 *
 *   guarded:  map [guard page, PROT_NONE][ usable stack ...            ][fiber]   mmap + mprotect
 *   canary:   [canary word][ usable stack ...                           ][fiber]   weft__malloc
 *             lo                                                        hi
 *
 * Guard pages. Each guarded stack takes two of the kernel's memory mappings (the mprotect splits
 * the mapping in two), and vm.max_map_count (65530 by default) caps mappings per process: at about
 * 32,700 guarded stacks mmap fails. At the first scheduler's creation the budget is read once:
 * (max_map_count - mappings in use - 4096 spare) / 2 guarded stacks for the process. Past it,
 * WEFT_GUARD_AUTO falls back to canary stacks and WEFT_GUARD_ALWAYS fails the spawn with -ENOMEM.
 * The metrics count both kinds (weft_fiber_stacks_guarded, weft_fiber_stacks_canary).
 *
 * Overflow. A guarded stack's overflow faults in the guard page: a SIGSEGV handler, running on
 * each worker's alternate signal stack, sees the fault address in the running fiber's guard page,
 * writes one line naming the fiber and aborts; any other fault goes to the handler that was there
 * before (or the default action). A frame larger than a page can jump the guard: compile with
 * -fstack-clash-protection to make that impossible. A canary stack has a 64-bit canary at its
 * lowest word, derived from the fiber's address and a per-process secret; every switch away from
 * the fiber checks it and the stack pointer, and the deepest use seen is kept (the high-water
 * mark). A canary finds an overflow after the fact, at the next switch, and only if the overflow
 * wrote over the canary word: it reports, it cannot prevent the damage.
 *
 * Caching. Each worker keeps freed stacks of the scheduler's default size in a LIFO list, up to
 * opts.stack_cache bytes, so a spawn on a worker usually reuses a warm stack with no system call
 * and no lock; past that, a scheduler-wide spare list under a spin lock takes the rest, for spawns
 * from plain threads and for workers whose own cache ran dry. Other sizes are freed. What is
 * cached is the dead fiber's block as it stands (the lists are linked through its `next`): its
 * control block keeps its `stack` record (and TSan's state, the canary, the wait word's
 * sequence), so a spawn pops a block and resets only the fields a life changes (sched.c:
 * fiber_init); only a new stack's control block starts zeroed (an anonymous mapping is zero
 * already; a malloc'd block is cleared).
 *
 * The spare list's size. It keeps its floor (stack_cache per worker) however long it sits unused.
 * Past the floor it keeps what a burst left, for as long as spawns use it: a program whose waves
 * of fibers outgrow the caches would otherwise map a stack at every spawn and unmap one at every
 * exit (a system call pair and fresh page faults per fiber: 8,550 ns per spawn on one worker in
 * waves of 10,000, against 88 in waves of 1,000). What stays unused past the floor for a whole
 * period goes: spare_low is the least the list held since the period began; at its end
 * (TRIM_PERIOD), spare_low - floor bytes are owed, freed TRIM_BATCH blocks per step (TRIM_STEP
 * apart, so no worker spends long away from its fibers: the steps run at the workers' periodic
 * checks, sched.c: find_periodic, and when they run out of work; a parked worker, one at a time,
 * sleeps no later than the next step, spare_trim_at). A take from the list during a debt only
 * lowers it to what is still past the floor (a trickle of spawns must not keep a burst's stacks
 * for ever). Guarded stacks past the floor are kept only while half the process's guard budget
 * is free (guards_short): the budget is every scheduler's. Bound: a spawn maps a stack only when
 * it finds no free one it may take (a worker: its cache, the blocks of its fibers that died
 * elsewhere, then the spare list; a plain thread: the spare list), so what the list holds past
 * its floor was in use at once, short of the workers' caches, within the last period or two.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fiber-impl.h"
#include "internal/alloc.h"

#if WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#include <sanitizer/asan_interface.h>
#else
#define WEFT__ASAN 0
#endif

#define FIBER_SPACE (((sizeof(weft__fiber) + 63) / 64) * 64)

/* memset of the control block, without the `rep stos` gcc picks for it: its start-up cost was
 * the largest single cost of a spawn (perf). */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void fiber_zero(weft__fiber *f)
{
	typedef uint64_t v2 __attribute__((vector_size(16), aligned(16), may_alias));
	typedef uint64_t u1 __attribute__((may_alias));
	_Static_assert(sizeof(weft__fiber) % 8 == 0, "the control block is whole 8-byte words");
	v2 *p = (v2 *)(void *)f;
	for (size_t i = 0; i < sizeof(*f) / 16; i++)
		p[i] = (v2){0, 0};
	if (sizeof(*f) % 16)
		*(u1 *)(void *)((char *)f + sizeof(*f) - 8) = 0;
}

bool weft__on_valgrind;
static size_t page_size;
static long guard_budget;          /* guarded stacks the process may have */
static _Atomic long guards_in_use; /* across every scheduler */
static struct sigaction old_segv;

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

static long count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return -1;
	long n = 0;
	int c;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static long read_max_map_count(void)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
	if (!f)
		return -1;
	long v = -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

void weft__stack_overflow_report(const weft__fiber *f, const char *how)
{
	weft__fatal("weft: fiber %llu \"%s\" (scheduler \"%s\") overflowed its %zu-byte stack: %s; "
	            "aborting (give it a larger stack_size)",
	            (unsigned long long)f->id, f->name[0] ? f->name : "fiber", f->sched->name,
	            f->stack_req, how);
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	worker *w = weft__tls_worker;
	/* the running fiber, or, in the last instructions of a switch away from a fiber (current
	 * already names the next one), the one being left */
	weft__fiber *cand[2] = {w ? w->current : NULL, w ? w->prev : NULL};
	for (int i = 0; i < 2; i++) {
		weft__fiber *f = cand[i];
		const char *a = si->si_addr;
		if (f && f->stack.guarded && a >= (const char *)f->stack.map && a < f->stack.lo)
			weft__stack_overflow_report(f, "a fault in its guard page");
	}
	if (old_segv.sa_flags & SA_SIGINFO) {
		old_segv.sa_sigaction(sig, si, uc);
	} else if (old_segv.sa_handler == SIG_DFL || old_segv.sa_handler == SIG_IGN) {
		/* the fault repeats on return, now with the default action (a core dump) */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigemptyset(&dfl.sa_mask);
		sigaction(SIGSEGV, &dfl, NULL);
	} else {
		old_segv.sa_handler(sig);
	}
}

int weft__stack_init_process(void)
{
	page_size = (size_t)sysconf(_SC_PAGESIZE);
#if WEFT__VALGRIND
	weft__on_valgrind = RUNNING_ON_VALGRIND;
#endif
	long max = read_max_map_count();
	long used = count_maps();
	if (max < 0)
		max = 65530;
	if (used < 0)
		used = 1000;
	guard_budget = (max - used - 4096) / 2;
	if (guard_budget < 0)
		guard_budget = 0;
	/* valgrind's table of mappings holds about 5,000 (VG_N_SEGMENTS): past it, it exits */
	if (weft__on_valgrind && guard_budget > 1000)
		guard_budget = 1000;
	if (getenv("WEFT_FIBER_GUARD_BUDGET")) /* tests: make the fallback reachable cheaply */
		guard_budget = strtol(getenv("WEFT_FIBER_GUARD_BUDGET"), NULL, 10);
	struct sigaction sa = {.sa_sigaction = segv_handler, .sa_flags = SA_SIGINFO | SA_ONSTACK};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &old_segv) != 0)
		return weft__neg_errno();
	return 0;
}

int weft__stack_altstack(worker *w)
{
	size_t size = round_up(64 * 1024 + (size_t)sysconf(_SC_SIGSTKSZ), page_size);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM; /* no overflow report on this worker: the fault stays a SIGSEGV */
	stack_t ss = {.ss_sp = p, .ss_size = size};
	if (sigaltstack(&ss, NULL) != 0) {
		munmap(p, size);
		return -ENOMEM;
	}
	w->altstack = p;
	w->altstack_size = size;
	return 0;
}

void weft__stack_altstack_free(worker *w)
{
	if (!w->altstack)
		return;
	stack_t ss = {.ss_flags = SS_DISABLE};
	sigaltstack(&ss, NULL);
	munmap(w->altstack, w->altstack_size);
	w->altstack = NULL;
}

static bool take_guard(void)
{
	long n = atomic_fetch_add_explicit(&guards_in_use, 1, memory_order_relaxed);
	if (n < guard_budget)
		return true;
	atomic_fetch_sub_explicit(&guards_in_use, 1, memory_order_relaxed);
	return false;
}

static int stack_new(weft_sched *s, size_t size, weft__stack *ret)
{
	weft__stack st = {0};
	bool guard = s->guard != WEFT_GUARD_NEVER && size >= page_size && take_guard();
	if (!guard && s->guard == WEFT_GUARD_ALWAYS)
		return -ENOMEM;
	if (guard) {
		size_t map_size = page_size + round_up(size + FIBER_SPACE, page_size);
		void *m = MAP_FAILED;
		if (!weft__fault_hit(WEFT__FAULT_ALLOC))
			m = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
			         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
		if (m == MAP_FAILED) {
			atomic_fetch_sub_explicit(&guards_in_use, 1, memory_order_relaxed);
			return -ENOMEM;
		}
		if (mprotect(m, page_size, PROT_NONE) != 0) {
			munmap(m, map_size);
			atomic_fetch_sub_explicit(&guards_in_use, 1, memory_order_relaxed);
			return -ENOMEM;
		}
		st.map = m;
		st.map_size = map_size;
		st.lo = (char *)m + page_size;
		st.hi = (char *)m + map_size - FIBER_SPACE;
		st.guarded = true;
		st.mapped = true;
		atomic_fetch_add_explicit(&s->guarded, 1, memory_order_relaxed);
	} else {
		size_t total = round_up(size, 64) + FIBER_SPACE;
		void *m = weft__malloc(total);
		if (!m)
			return -ENOMEM;
		st.map = m;
		st.map_size = total;
		st.lo = m;
		st.hi = (char *)m + total - FIBER_SPACE;
		atomic_fetch_add_explicit(&s->canaried, 1, memory_order_relaxed);
	}
#if WEFT__VALGRIND
	st.vg_id = VALGRIND_STACK_REGISTER(st.lo, st.hi);
#endif
	*ret = st;
	return 0;
}

static void stack_free(weft_sched *s, weft__stack *st)
{
#if WEFT__TSAN
	if (st->tsan_fiber)
		__tsan_destroy_fiber(st->tsan_fiber);
#endif
#if WEFT__VALGRIND
	VALGRIND_STACK_DEREGISTER(st->vg_id);
#endif
	if (st->guarded) {
		atomic_fetch_sub_explicit(&s->guarded, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&guards_in_use, 1, memory_order_relaxed);
	} else {
		atomic_fetch_sub_explicit(&s->canaried, 1, memory_order_relaxed);
	}
	if (st->mapped)
		munmap(st->map, st->map_size);
	else
		free(st->map);
}

/* The usable size a stack was made for (the default size's stacks are the ones cached). */
static size_t usable(const weft__stack *st)
{
	return (size_t)(st->hi - st->lo);
}

/* A stack of the scheduler's default size (as the caches hold). */
static bool cacheable(const weft_sched *s, const weft__stack *st)
{
	return usable(st) >= s->stack_size && usable(st) < s->stack_size + page_size;
}

/* ASan keeps the poison of the frames a stack's last fiber left (or of whatever the memory was
 * before it was ours): a stack handed out is clean. */
static void unpoison(const weft__stack *st)
{
#if WEFT__ASAN
	__asan_unpoison_memory_region(st->lo, (size_t)(st->hi - st->lo));
#else
	(void)st;
#endif
}

/* Free the stacks of blocks linked through `next` (the record is copied first: it goes with the
 * memory). */
static void free_list(weft_sched *s, weft__fiber *f)
{
	while (f) {
		weft__stack st = f->stack;
		f = f->next;
		stack_free(s, &st);
	}
}

/* The spare list past its floor (the head comment): a period, and the steps that pay a debt. */
#define TRIM_PERIOD ((int64_t)1000 * 1000 * 1000)
#define TRIM_STEP ((int64_t)1000 * 1000)
#define TRIM_BATCH 32

/* Under spare_lock: a new period from now (the list's least is what it holds), or none while the
 * list is within its floor. */
static void spare_period(weft_sched *s, int64_t now)
{
	s->spare_low = s->spare_bytes;
	s->spare_owed = 0;
	atomic_store_explicit(&s->spare_trim_at,
	                      s->spare_bytes > s->spare_floor ? now + TRIM_PERIOD : INT64_MAX,
	                      memory_order_relaxed);
}

/* Under spare_lock, after blocks were put (took = false) or taken (true). */
static void spare_changed(weft_sched *s, bool took)
{
	if (s->spare_bytes < s->spare_low)
		s->spare_low = s->spare_bytes;
	if (took) { /* the debt is at most what is still past the floor */
		size_t over = s->spare_bytes > s->spare_floor ? s->spare_bytes - s->spare_floor : 0;
		if (s->spare_owed > over)
			s->spare_owed = over;
	} else if (s->spare_bytes > s->spare_floor &&
	           atomic_load_explicit(&s->spare_trim_at, memory_order_relaxed) == INT64_MAX) {
		spare_period(s, weft_now());
	}
}

/* Guarded stacks past the spare list's floor hold the process's guard budget (take_guard) that
 * other spawns, of any scheduler, may need: they are kept only while half of it is free. */
static bool guards_short(void)
{
	return atomic_load_explicit(&guards_in_use, memory_order_relaxed) > guard_budget / 2;
}

/* A step of the spare list's trim, when due (the head comment). Any thread, any time. */
void weft__stack_trim(weft_sched *s, int64_t now)
{
	weft__fiber *gone = NULL;
	weft__spin_lock(&s->spare_lock);
	if (now >= atomic_load_explicit(&s->spare_trim_at, memory_order_relaxed)) {
		if (!s->spare_owed) /* a period's end */
			s->spare_owed =
			        s->spare_low > s->spare_floor ? s->spare_low - s->spare_floor : 0;
		for (int i = 0; i < TRIM_BATCH && s->spare_owed && s->spare_bytes > s->spare_floor;
		     i++) {
			weft__fiber *f = s->spare;
			size_t size = f->stack.map_size;
			s->spare = f->next;
			s->spare_bytes -= size;
			s->spare_owed -= size < s->spare_owed ? size : s->spare_owed;
			f->next = gone;
			gone = f;
		}
		if (s->spare_owed && s->spare_bytes > s->spare_floor)
			atomic_store_explicit(&s->spare_trim_at, now + TRIM_STEP,
			                      memory_order_relaxed);
		else
			spare_period(s, now);
	}
	weft__spin_unlock(&s->spare_lock);
	free_list(s, gone); /* the unmaps outside the lock */
}

/* Blocks move between a worker's cache and the spare list in batches of up to this many: one hold
 * of the spare lock per batch. On two workers, where one spawns and the other runs what it
 * steals (and so frees their stacks into its own cache), that traffic is every spawn's. */
#define SPARE_BATCH 16

/* weft__stack_get without a cached block: the spare list (taking a batch more into w's cache,
 * empty now), or a new stack with a zeroed control block and its `stack` record. */
static __attribute__((noinline)) int stack_get_slow(weft_sched *s, worker *w, size_t size,
                                                    weft__fiber **ret)
{
	weft__fiber *f = NULL;
	/* blocks of fibers spawned here that died on other workers (scope.c): one for a spawn of
	 * the default size, one freed or cached for a spawn of another size (it maps a stack
	 * anyway) */
	while (w && (f = weft__remote_reap_one(w))) {
		if (size == s->stack_size && cacheable(s, &f->stack)) {
			unpoison(&f->stack);
			*ret = f;
			return 0;
		}
		weft__stack_put(s, w, f); /* another size: freed or cached as it fits */
		if (size != s->stack_size)
			break; /* one per spawn */
	}
	/* and a chunk of the sub-scope ones, whatever the size asked for: a spawner of other sizes
	 * never takes from the cache, and would otherwise keep every block that died elsewhere */
	if (w && atomic_load_explicit(&w->remote_dead, memory_order_relaxed)) {
		weft__remote_reap(s, w, w);
		if (size == s->stack_size && (f = w->cache)) {
			w->cache = f->next;
			w->cache_bytes -= f->stack.map_size;
			unpoison(&f->stack);
			*ret = f;
			return 0;
		}
	}
	if (size == s->stack_size) {
		weft__spin_lock(&s->spare_lock);
		if ((f = s->spare)) {
			s->spare = f->next;
			s->spare_bytes -= f->stack.map_size;
			for (int i = 1; w && i < SPARE_BATCH && s->spare; i++) {
				weft__fiber *g = s->spare;
				if (w->cache_bytes + g->stack.map_size > s->stack_cache)
					break;
				s->spare = g->next;
				s->spare_bytes -= g->stack.map_size;
				g->next = w->cache;
				w->cache = g;
				w->cache_bytes += g->stack.map_size;
			}
			spare_changed(s, true);
		}
		weft__spin_unlock(&s->spare_lock);
		if (f) {
			unpoison(&f->stack);
			*ret = f;
			return 0;
		}
	}
	weft__stack st;
	int r = stack_new(s, size, &st);
	if (r < 0)
		return r;
	unpoison(&st);
	f = (weft__fiber *)(void *)st.hi;
	if (!st.mapped) /* an anonymous mapping is zero already */
		fiber_zero(f);
	f->stack = st;
	*ret = f;
	return 0;
}

/* A block for a new fiber: one of w's cache as its last fiber left it, else stack_get_slow. */
int weft__stack_get(weft_sched *s, worker *w, size_t size, weft__fiber **ret)
{
	weft__fiber *f;
	if (size != s->stack_size || !w || !(f = w->cache))
		return stack_get_slow(s, w, size, ret);
	w->cache = f->next;
	w->cache_bytes -= f->stack.map_size;
	if (w->cache) /* the next spawn's (see weft__prefetch_block) */
		weft__prefetch_block(w->cache);
	unpoison(&f->stack);
	*ret = f;
	return 0;
}

/* weft__stack_put past w's cache (full, or no worker): the spare list (with a batch of w's cache,
 * for the workers that take from it), or, another size, the stack is freed. */
static __attribute__((noinline)) void stack_put_slow(weft_sched *s, worker *w, weft__fiber *f,
                                                     bool keep)
{
	if (!keep) {
		weft__stack copy = f->stack; /* the record goes with the memory */
		stack_free(s, &copy);
		return;
	}
	weft__spin_lock(&s->spare_lock);
	if (f->stack.guarded && s->spare_bytes + f->stack.map_size > s->spare_floor &&
	    guards_short()) {
		weft__spin_unlock(&s->spare_lock);
		stack_put_slow(s, w, f, false);
		return;
	}
	f->next = s->spare;
	s->spare = f;
	s->spare_bytes += f->stack.map_size;
	for (int i = 1; w && i < SPARE_BATCH && w->cache; i++) {
		weft__fiber *g = w->cache;
		w->cache = g->next;
		w->cache_bytes -= g->stack.map_size;
		g->next = s->spare;
		s->spare = g;
		s->spare_bytes += g->stack.map_size;
	}
	spare_changed(s, false);
	weft__spin_unlock(&s->spare_lock);
}

/* A dead (or never started) fiber's block back to a cache, or its stack freed (the head comment:
 * Caching). */
void weft__stack_put(weft_sched *s, worker *w, weft__fiber *f)
{
	const weft__stack *st = &f->stack;
	bool keep = cacheable(s, st);
	if (keep && w && w->cache_bytes + st->map_size <= s->stack_cache) {
		f->next = w->cache;
		w->cache = f;
		w->cache_bytes += st->map_size;
		return;
	}
	stack_put_slow(s, w, f, keep);
}

void weft__stack_spare_free(weft_sched *s)
{
	free_list(s, s->spare);
	s->spare = NULL;
	s->spare_bytes = 0;
}

/* With the blocks of dead fibers that wait for w to unlink them (remote_dead, remote_root,
 * reaping): the workers are stopped, or this is a fork's child; the lists they are in go with
 * their scopes, so no unlink and no lock. */
void weft__stack_cache_free(weft_sched *s, worker *w)
{
	free_list(s, atomic_exchange_explicit(&w->remote_dead, NULL, memory_order_acquire));
	free_list(s, atomic_exchange_explicit(&w->remote_root, NULL, memory_order_acquire));
	free_list(s, w->reaping);
	w->reaping = NULL;
	free_list(s, w->cache);
	w->cache = NULL;
	w->cache_bytes = 0;
}
