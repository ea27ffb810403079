/* Scopes: every fiber belongs to one; cancelling a scope cancels its fibers and child scopes;
 * joining waits for all of them. No fiber outlives its scope.
 *
 * Membership. A scope keeps its fibers in lists sharded by the spawning worker (one spin lock
 * per shard, so spawns on different workers do not contend), and counts `alive`: its fibers plus
 * those of its descendants. A spawn adds 1 at every level from the scope up to, not including,
 * the root, and a fiber's exit takes 1 off at every such level; the level that reaches 0 wakes
 * its joiners. The root's count is kept in units that workers may hold (below: it doubles as
 * the scheduler's max_fibers check, and is exact only when the workers hold none).
 *
 * Exits away from the spawner. A fiber stolen by another worker dies there; unlinking it from the
 * spawner's shard and taking it off the root's count would pull three cache lines from the
 * spawner's core at every exit (the shard's lock, the list's neighbours, the root's count: with
 * one worker spawning and one running what it steals, most of the cost of a spawn). Instead:
 *   - the list: the fiber stays linked, DEAD, and its block goes onto one of its spawner's two
 *     stacks (weft__remote_push, once it is off its stack: finish_switch on the next context),
 *     remote_root for a fiber of the root scope, remote_dead for one of a sub-scope. Pushes are
 *     CASes (release); a stack is only ever taken whole (exchange, acquire), so it has no ABA.
 *     The spawner unlinks them under its shard's lock and keeps the blocks:
 *       remote_root: one per spawn that misses the stack cache (stack.c: stack_get_slow; the
 *         block serves a spawn of the default size, and is freed or cached for another size),
 *         prefetching the next one as the cache does; all of them before the spawner parks;
 *         REAP_PERIODIC every 61 schedule calls when it has not spawned since the last check
 *         (its own spawns: its fiber ids) or has more than REAP_BACKLOG waiting; REAP_SPAWN
 *         (128) about every 64th spawn (sched.c: weft_spawn) while more than REAP_BACKLOG
 *         (1024) wait. A bulk unlink walks the list's links, each on a line the other worker
 *         wrote last, one transfer after the other: one per spawn they overlap with a spawn's
 *         work, and before parking the worker has nothing better to do; so the bulk reaps on
 *         the spawn path wait for a backlog that a wave of spawns between two parks does not
 *         reach. The backlog is remote_root_n (the pushers' count, a relaxed add on the line
 *         their CAS holds) less root_reaped (the owner's). Bound: past REAP_BACKLOG the
 *         spawner unlinks about two blocks per spawn (and 16 per periodic check) while, beyond
 *         the fibers it has alive, at most one of its fibers dies per spawn: the backlog
 *         shrinks whenever it is past REAP_BACKLOG + REAP_SPAWN, so it stays within a few
 *         thousand blocks plus the most fibers the spawner had alive at once (tests measure
 *         about 2,000 with 64 alive, and about 1,050 where no spawn misses the cache). The
 *         peak term is real: the spawner's fibers alive at once, all ended on other workers
 *         in one wave, wait all together. The backlog drains once the spawner stops
 *         spawning: 16 blocks at each of its periodic checks, all of them before it parks; a
 *         spawner whose fiber computes without a schedule call keeps them (no more than that
 *         peak) until it makes one. Dead entries in the root's lists (walked by cancel and
 *         the dump) are bounded likewise.
 *       remote_dead: in bulk (weft__remote_reap: when a spawn finds no cached stack, which a
 *         spawn of another size than the default never does, so there always; every 61
 *         schedule calls; before it looks for work elsewhere), by any thread
 *         (weft_scope_destroy too). So a spawner that never switches keeps at most what dies
 *         between two of its spawns plus its cache's worth.
 *     Walkers of the lists (cancel, the dump) skip DEAD fibers; a DEAD fiber's block is not
 *     reused before the unlink, which holds the shard lock, so a walker never sees it reborn.
 *     A sub-scope must outlive the unlink: the exit counts it in `exiting` (before alive's
 *     decrement, seq_cst, so a destroyer that saw alive reach 0 sees it) and the reaper takes
 *     it off after its last touch of the scope (release); weft_scope_destroy reaps every
 *     worker's remote_dead itself while waiting for 0 (acquire), so it never waits for a busy
 *     worker (a spawner whose fiber computes and never switches).
 *   - the root's count: a worker holds units of the root's count that are no fiber's
 *     (root_got - root_used). A worker's spawn uses one of its units, taking ROOT_BATCH more
 *     from the root's count when it has none (one atomic CAS per batch, not per spawn); an
 *     exit on a worker gives its fiber's unit to that worker (a plain store on the worker's own
 *     line), which gives all but ROOT_BATCH back to the root's count past 2 * ROOT_BATCH, and
 *     all of them whenever it runs out of local work, before stealing or parking
 *     (weft__root_flush). On one worker the spawns use the units the exits leave: no atomic at
 *     all. The root's count is thus over by the units the workers hold; every fiber is in the
 *     root, so the root cannot be empty while a worker still has local work (that work is a
 *     fiber), and a worker gives its units back as soon as it has none: a joiner of the root
 *     waits no longer than the last exit's worker takes to reach its loop. Readers of the
 *     number (weft_scope_fibers, the stats; not the max_fibers check, below) subtract the
 *     workers' units in an order that never gives less than the truth (weft__root_alive).
 *     Sub-scopes' counts stay exact at every exit.
 *     The cap: root.alive <= max_fibers always. Every raise of it is a CAS that never passes
 *     max_fibers (a batch is min(ROOT_BATCH, room) and only while it ends below the margin);
 *     a held unit is already in it, so spending one needs no check, and the fibers alive
 *     (at most root.alive) never pass the cap. Units held away from the count would make
 *     -EAGAIN spurious near the cap, so from max_fibers - ROOT_NEAR on (more than all the
 *     workers can hold) the flag root_near is set: the fast path is off, spawns take single
 *     units by CAS (a worker spends one it still holds and gives back the rest first), exits
 *     give their unit back at once. What remains: units held by a worker that has not seen
 *     the flag yet (it has not spawned, ended a fiber or run out of local work since) give a
 *     spurious -EAGAIN until it does; at most 2 * ROOT_BATCH - 1 per worker. Plain threads'
 *     spawns and a small max_fibers (near from the start) move the count one by one.
 *
 * Cancellation races, each decided by a lock or a seq_cst pair:
 *   spawn vs cancel: cancel sets `cancelled` and then takes each shard lock; spawn takes its shard
 *     lock and then reads `cancelled`. Either the spawn sees it (and fails with -ECANCELED) or
 *     cancel finds the new fiber in the shard.
 *   child creation vs cancel: the same with the parent's children_lock.
 *   a fiber starting a wait vs cancel: the Dekker pair in sched.c's head comment (all the
 *     fibers are marked first, then one barrier, then the waiting ones are claimed).
 *   exit vs join vs destroy: the exiting fiber increments `exiting` before taking alive to 0
 *     and decrements it as its last touch of the scope (release); weft_scope_destroy, after the
 *     join, waits for exiting == 0 (acquire) before freeing, so a waking fiber never touches a
 *     freed scope. The root scope lives until its scheduler's threads are joined.
 *   thread joiners vs exit: joiner: thread_joiners++ then reads alive; exit: alive-- then bumps
 *     join_seq and reads thread_joiners (all seq_cst): either the joiner sees 0, or the exit sees
 *     the joiner and futex-wakes it (the futex compares join_seq, so the bump is never missed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>

#include "fiber-impl.h"
#include "internal/alloc.h"
#include "internal/pool.h" /* weft__futex_wait, weft__futex_wake */

struct join_waiter {
	weft__fiber *f;
	uint64_t tok;
	struct join_waiter *next;
	bool linked;
};

static int shards_for(const weft_sched *s)
{
	return s->nworkers < 64 ? s->nworkers : 64;
}

static int scope_init(weft_scope *sc, weft_sched *s, weft_scope *parent)
{
	sc->s = s;
	sc->parent = parent;
	sc->nshards = shards_for(s);
	sc->shards = weft__calloc((size_t)sc->nshards, sizeof(*sc->shards));
	return sc->shards ? 0 : -ENOMEM;
}

/* Units of the root's count a worker takes at once (head comment). */
#define ROOT_BATCH 64

/* The root's count is "near" max_fibers from max_fibers - ROOT_NEAR(s) on (head comment): more
 * than every worker can hold (below 2 * ROOT_BATCH each). The flag goes off again only below
 * max_fibers - 2 * ROOT_NEAR(s), so that a count that wavers at the margin does not flip it. */
#define ROOT_NEAR(s) (2L * ROOT_BATCH * (s)->nworkers)

int weft__scope_init_root(weft_sched *s)
{
	s->root.is_root = true;
	/* a small cap is near from the start: no batch is ever taken (weft__root_take_slow) */
	atomic_store_explicit(&s->root_near, s->max_fibers - ROOT_NEAR(s) <= 0,
	                      memory_order_relaxed);
	return scope_init(&s->root, s, NULL);
}

static void free_children(weft_scope *sc)
{
	weft_scope *c = sc->child_head;
	while (c) {
		weft_scope *next = c->sib_next;
		free_children(c);
		free(c->shards);
		free(c);
		c = next;
	}
	sc->child_head = NULL;
}

void weft__scope_free_root(weft_sched *s)
{
	free_children(&s->root);
	free(s->root.shards);
	s->root.shards = NULL;
}

int weft_scope_create(weft_scope **ret, weft_scope *parent)
{
	if (!ret || !parent)
		return -EINVAL;
	if (parent->s->fork_gen != weft__fork_gen())
		return -ESHUTDOWN;
	if (atomic_load_explicit(&parent->cancelled, memory_order_acquire))
		return -ECANCELED;
	weft_scope *sc = weft__calloc(1, sizeof(*sc));
	if (!sc)
		return -ENOMEM;
	if (scope_init(sc, parent->s, parent) < 0) {
		free(sc);
		return -ENOMEM;
	}
	weft__spin_lock(&parent->children_lock);
	if (atomic_load_explicit(&parent->cancelled, memory_order_seq_cst)) {
		weft__spin_unlock(&parent->children_lock);
		free(sc->shards);
		free(sc);
		return -ECANCELED;
	}
	sc->sib_next = parent->child_head;
	if (parent->child_head)
		parent->child_head->sib_prev = sc;
	parent->child_head = sc;
	weft__spin_unlock(&parent->children_lock);
	*ret = sc;
	return 0;
}

static void scope_zero(weft_scope *sc);

int weft__scope_attach(weft_scope *sc, weft__fiber *f, worker *w)
{
	/* the spawner's shard (its index is below nshards but past 64 workers: no division then) */
	int shard = !w ? 0 : w->index < sc->nshards ? w->index : w->index % sc->nshards;
	for (weft_scope *p = sc; !p->is_root; p = p->parent)
		atomic_fetch_add_explicit(&p->alive, 1, memory_order_relaxed);
	struct scope_shard *sh = &sc->shards[shard];
	weft__spin_lock(&sh->lock);
	if (atomic_load_explicit(&sc->cancelled, memory_order_seq_cst)) {
		weft__spin_unlock(&sh->lock);
		/* a joiner may have seen our count and be waiting for 0: release as an exit does
		 * (the root's count is the caller's to give back) */
		weft__scope_release(sc, false);
		return -ECANCELED;
	}
	f->scope = sc;
	f->shard = shard;
	f->spawner = w;
	f->scope_prev = NULL;
	f->scope_next = sh->head;
	if (sh->head)
		sh->head->scope_prev = f;
	sh->head = f;
	weft__spin_unlock(&sh->lock);
	return 0;
}

static void scope_zero(weft_scope *sc)
{
	weft__spin_lock(&sc->join_lock);
	struct join_waiter *j = sc->joiners, *next;
	sc->joiners = NULL;
	for (; j; j = next) {
		/* the record is on the joiner's stack: once it is readied it may return and reuse
		 * that stack, so read everything first */
		next = j->next;
		weft__fiber *f = j->f;
		uint64_t tok = j->tok;
		j->linked = false;
		if (weft__wake_claim(f, tok, 0))
			weft__wake_ready(f, WEFT__READY_QUEUE); /* f's own scheduler, not sc's */
	}
	weft__spin_unlock(&sc->join_lock);
	atomic_fetch_add_explicit(&sc->join_seq, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&sc->thread_joiners, memory_order_seq_cst))
		weft__futex_wake(&sc->join_seq, INT_MAX);
}

/* Under the shard's lock. */
static void unlink_fiber(struct scope_shard *sh, weft__fiber *f)
{
	if (f->scope_prev)
		f->scope_prev->scope_next = f->scope_next;
	else
		sh->head = f->scope_next;
	if (f->scope_next)
		f->scope_next->scope_prev = f->scope_prev;
}

/* The count went down to v (an exit, a flush, a failed spawn): off the flag once far below the
 * cap. Against a take that raised the count to the margin (seq_cst on both sides, Dekker): it
 * raises the count and then reads the flag, this stores the flag and then reads the count; one
 * of the two sees the other, and the flag ends set. Two decrements may both clear it; the flag
 * is a hint for the spurious -EAGAIN, max_fibers never depends on it. */
static void root_lowered(weft_sched *s, long v)
{
	if (weft__likely(v >= s->max_fibers - 2 * ROOT_NEAR(s)) ||
	    !atomic_load_explicit(&s->root_near, memory_order_relaxed))
		return;
	atomic_store_explicit(&s->root_near, 0, memory_order_seq_cst);
	if (atomic_load_explicit(&s->root.alive, memory_order_seq_cst) >=
	    s->max_fibers - ROOT_NEAR(s))
		atomic_store_explicit(&s->root_near, 1, memory_order_seq_cst);
}

/* n units back to the root's count (none of them a fiber's any more). */
static void root_return(weft_sched *s, long n)
{
	long v = atomic_fetch_sub_explicit(&s->root.alive, n, memory_order_seq_cst) - n;
	if (v == 0)
		scope_zero(&s->root);
	root_lowered(s, v);
}

/* Give back to the root's count all but `keep` of w's units (head comment). The worker's own
 * thread only. */
void weft__root_flush(worker *w, long keep)
{
	long u = atomic_load_explicit(&w->root_used, memory_order_relaxed);
	long c = atomic_load_explicit(&w->root_got, memory_order_relaxed) - u;
	if (c <= keep)
		return;
	/* the units off first, then the count (release, in the seq_cst RMW): see
	 * weft__root_alive */
	atomic_store_explicit(&w->root_used, u + c - keep, memory_order_relaxed);
	root_return(w->s, c - keep);
}

/* A spawn's unit of the root's count (weft__root_take found none of w's, or the count is near the
 * cap): false if the count is at max_fibers. w: the spawner's worker of s, or NULL (a plain
 * thread). Every raise of the count is a CAS from a value below max_fibers to at most
 * max_fibers (a batch of ROOT_BATCH only while it ends below the margin, else one unit), so
 * root.alive <= max_fibers always; a held unit is one of root.alive's, so the fibers alive,
 * which are at most root.alive, never pass the cap either, whoever spends the units.
 * Near the cap (root_near), a worker spends a unit it still holds and gives back the rest before
 * it asks the count. What remains: a spawn may see -EAGAIN while units are held by a worker that
 * has not seen the flag yet (it has not spawned, ended a fiber or run out of local work since
 * the flag was set: a fiber that computes without switching), at most 2 * ROOT_BATCH - 1 per
 * worker; and a spawn that fails after this (no memory for its stack) holds its place until it
 * gives it back. */
bool weft__root_take_slow(weft_sched *s, worker *w)
{
	long max = s->max_fibers, near_at = max - ROOT_NEAR(s);
	bool near = atomic_load_explicit(&s->root_near, memory_order_relaxed);
	if (w && near) {
		long u = atomic_load_explicit(&w->root_used, memory_order_relaxed);
		long c = atomic_load_explicit(&w->root_got, memory_order_relaxed) - u;
		if (c > 0) {
			/* before the fiber is published (release): see weft__root_alive */
			atomic_store_explicit(&w->root_used, u + 1, memory_order_relaxed);
			weft__root_flush(w, 0);
			return true;
		}
	}
	long n = atomic_load_explicit(&s->root.alive, memory_order_relaxed), k;
	do {
		if (n >= max)
			return false;
		k = w && !near && n + ROOT_BATCH < near_at ? ROOT_BATCH : 1;
	} while (!atomic_compare_exchange_weak_explicit(
	        &s->root.alive, &n, n + k, memory_order_seq_cst, memory_order_relaxed));
	/* the Dekker pair of root_lowered: the count first, then the flag */
	if (n + k >= near_at && !atomic_load_explicit(&s->root_near, memory_order_seq_cst))
		atomic_store_explicit(&s->root_near, 1, memory_order_seq_cst);
	if (k > 1) {
		/* after the count (release): see weft__root_alive */
		long u = atomic_load_explicit(&w->root_used, memory_order_relaxed);
		atomic_store_explicit(&w->root_got,
		                      atomic_load_explicit(&w->root_got, memory_order_relaxed) + k,
		                      memory_order_release);
		atomic_store_explicit(&w->root_used, u + 1, memory_order_relaxed);
	}
	return true;
}

/* One unit back: a fiber's exit on w, or a spawn that failed after weft__root_take. Near the cap
 * it goes back to the root's count at once, with any other unit w holds. */
void weft__root_put(weft_sched *s, worker *w)
{
	if (!w) {
		root_return(s, 1);
		return;
	}
	/* release: a reader that sees this exit sees its fiber's spawn (weft__root_alive) */
	long g = atomic_load_explicit(&w->root_got, memory_order_relaxed) + 1;
	atomic_store_explicit(&w->root_got, g, memory_order_release);
	if (weft__unlikely(atomic_load_explicit(&s->root_near, memory_order_relaxed)))
		weft__root_flush(w, 0);
	else if (weft__unlikely(g - atomic_load_explicit(&w->root_used, memory_order_relaxed) >=
	                        2 * ROOT_BATCH))
		weft__root_flush(w, ROOT_BATCH);
}

/* Fibers alive in the scheduler: the root's count less the units the workers hold,
 * alive - sum(got) + sum(used), read in that order: every got first (acquire), the count
 * (acquire), every used last. Both counters only grow, so a got read early and a used read late
 * can only make the number larger than it was when the count was read; and nothing that lowers
 * the number is seen without what raised it before it:
 *   an exit's got (release) comes after its fiber's spawn: the used that spawn wrote (before it
 *     published the fiber, release, taken by the exit's worker, acquire) or the count's add;
 *   a batch's got (release) comes after the count's add;
 *   a flush's count decrement (seq_cst) comes after its used (and the count is read after got).
 * So it is never below the number of fibers alive when the count was read, and above it only while
 * a batch or a flush is in flight. Exact when nothing runs. */
long weft__root_alive(const weft_sched *s)
{
	long n = 0;
	for (int i = 0; s->workers && i < s->nworkers; i++)
		n -= atomic_load_explicit(&s->workers[i].root_got, memory_order_acquire);
	n += atomic_load_explicit(&s->root.alive, memory_order_acquire);
	for (int i = 0; s->workers && i < s->nworkers; i++)
		n += atomic_load_explicit(&s->workers[i].root_used, memory_order_relaxed);
	return n < 0 ? 0 : n;
}

/* f finishes on worker w (it still runs, on its own stack). Spawned here (or by a plain thread):
 * out of its shard's list now. Spawned by another worker: it stays in the list, DEAD, and its
 * block goes to the spawner's remote_root (a fiber of the root scope) or remote_dead (of a
 * sub-scope) once it is off its stack (sched.c: fiber_release); the spawner unlinks it
 * (weft__remote_reap_one, weft__remote_reap), so this worker touches neither the spawner's
 * shard lock nor the list's neighbours; its scope must then live until that unlink: `exiting`
 * keeps it (weft_scope_destroy waits for 0; the root lives until the workers are joined). Its
 * unit of the root's count goes to w (weft__root_put). */
void weft__scope_exit(weft__fiber *f, worker *w)
{
	weft_scope *sc = f->scope;
	if (weft__scope_exit_remote(f, w)) {
		if (!sc->is_root) /* before alive's decrement (seq_cst): a destroyer sees it */
			atomic_fetch_add_explicit(&sc->exiting, 1, memory_order_relaxed);
	} else {
		struct scope_shard *sh = &sc->shards[f->shard];
		weft__spin_lock(&sh->lock);
		unlink_fiber(sh, f);
		weft__spin_unlock(&sh->lock);
	}
	weft__scope_release(sc, false); /* sc may be freed from here on */
	weft__root_put(f->sched, w);
}

/* A fiber that died on another worker than its spawner: onto the spawner's remote_root or
 * remote_dead (Treiber stacks that are only ever pushed one by one and taken whole: no ABA, since
 * a push reads nothing of the head it links to). Release: the reaper sees the block as it was
 * left. */
void weft__remote_push(weft__fiber *f)
{
	worker *h = f->spawner;
	_Atomic(weft__fiber *) *top = f->scope->is_root ? &h->remote_root : &h->remote_dead;
	weft__fiber *old = atomic_load_explicit(top, memory_order_relaxed);
	do
		f->next = old;
	while (!atomic_compare_exchange_weak_explicit(top, &old, f, memory_order_release,
	                                              memory_order_relaxed));
	/* on the line the CAS just took: no transfer more (a count only, for the spawner's
	 * bound: it may read it before or after the push it counts) */
	if (top == &h->remote_root)
		atomic_fetch_add_explicit(&h->remote_root_n, 1, memory_order_relaxed);
}

static void reap_unlock(struct scope_shard *sh, weft_scope *sc, long n)
{
	if (!sh)
		return;
	bool root = sc->is_root;
	weft__spin_unlock(&sh->lock);
	if (!root) /* the last touch of sc: a destroyer may free it once exiting is 0 */
		atomic_fetch_sub_explicit(&sc->exiting, n, memory_order_release);
}

/* Fibers a reap handles at a time: their lines are fetched together (below). */
#define REAP_CHUNK 16

/* Take all of `from`'s remote_dead: unlink each fiber from its shard's list and give the blocks to
 * w's cache (w: the calling thread's worker of s, or NULL). Any thread of the process: the
 * exchange takes the list whole, so two reapers never share a fiber. The lines a reap reads and
 * writes (the links, the scope fields, the neighbours' links) were written last by the worker the
 * fibers died on: a chunk's are prefetched (for writing) in a first walk and used in a second, so
 * their transfers overlap instead of following one another; that first walk follows the links
 * alone. The shard lock is held once per run of fibers of the same shard within a chunk (usually
 * the whole chunk). */
void weft__remote_reap(weft_sched *s, worker *from, worker *w)
{
	weft__fiber *list =
	        atomic_exchange_explicit(&from->remote_dead, NULL, memory_order_acquire);
	while (list) {
		weft__fiber *end = list;
		for (int i = 0; end && i < REAP_CHUNK; i++, end = end->next) {
			weft__prefetch_w(&end->scope);
			weft__prefetch_w(&end->scope_next);
		}
		struct scope_shard *held = NULL;
		weft_scope *held_sc = NULL;
		long n = 0;
		for (weft__fiber *f = list; f != end; f = f->next) {
			struct scope_shard *sh = &f->scope->shards[f->shard];
			if (sh != held) {
				reap_unlock(held, held_sc, n);
				weft__spin_lock(&sh->lock);
				held = sh;
				held_sc = f->scope;
				n = 0;
			}
			unlink_fiber(sh, f);
			n++;
		}
		reap_unlock(held, held_sc, n);
		while (list != end) {
			weft__fiber *next = list->next; /* the cache links through it */
			weft__stack_put(s, w, list);
			list = next;
		}
	}
}

/* The owner: one block of w's root fibers that died elsewhere, unlinked, for a spawn (NULL: none).
 * One at a time, and the next one's lines prefetched (weft__prefetch_block), as the stack cache
 * does: a bulk unlink would walk the list's links, each on a line the other worker wrote last,
 * one transfer after another; here they overlap with a spawn each. The root lives until the
 * workers are joined, so w may keep them (`reaping`) a while (head comment: when they are reaped,
 * and the bound). */
weft__fiber *weft__remote_reap_one_slow(worker *w)
{
	if (!w->reaping &&
	    !(w->reaping = atomic_exchange_explicit(&w->remote_root, NULL, memory_order_acquire)))
		return NULL;
	weft__fiber *f = w->reaping;
	w->reaping = f->next;
	/* the owner's count (a plain add: a reader on another thread only needs no tear) */
	atomic_store_explicit(&w->root_reaped,
	                      atomic_load_explicit(&w->root_reaped, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	if (w->reaping)
		weft__prefetch_block(w->reaping);
	struct scope_shard *sh = &f->scope->shards[f->shard];
	weft__spin_lock(&sh->lock);
	unlink_fiber(sh, f);
	weft__spin_unlock(&sh->lock);
	return f;
}

/* The owner: up to `max` of w's root fibers that died elsewhere, into its cache. */
void weft__remote_reap_root(worker *w, long max)
{
	weft__fiber *f;
	for (long i = 0; i < max && (f = weft__remote_reap_one(w)); i++)
		weft__stack_put(w->s, w, f);
}

/* Test hook, declared again in tests/unit/test-fiber.c (no header: nothing else may use it): the
 * blocks of root fibers that died away from their spawner and wait for it to unlink them, summed
 * over the workers (each worker's remote_root_n - root_reaped, read relaxed from any thread: it
 * may lag the pushes and reaps under way by a few). */
long weft__root_backlog(weft_sched *s);
long weft__root_backlog(weft_sched *s)
{
	long n = 0;
	for (int i = 0; i < s->nworkers; i++)
		n += weft__remote_root_backlog(&s->workers[i]);
	return n;
}

/* Every worker's remote_dead, from any thread (weft_scope_destroy). Not inlined: the thread's
 * worker is read afresh after the caller's park (a fiber may resume on another thread). */
static __attribute__((noinline)) void reap_all(weft_sched *s)
{
	worker *w = weft__tls_worker;
	if (w && w->s != s)
		w = NULL;
	for (int i = 0; i < s->nworkers; i++)
		weft__remote_reap(s, &s->workers[i], w);
}

/* Take one fiber off `alive` at every level from sc up (to the root if with_root): the level that
 * reaches 0 wakes its joiners. Used by an exit and by a spawn that failed after counting itself
 * in (a joiner may have seen it and be waiting for 0). */
void weft__scope_release(weft_scope *sc, bool with_root)
{
	while (sc && (with_root || !sc->is_root)) {
		weft_scope *parent = sc->parent; /* read first: sc may be freed once we leave it */
		bool root = sc->is_root;
		if (!root)
			atomic_fetch_add_explicit(&sc->exiting, 1, memory_order_relaxed);
		if (atomic_fetch_sub_explicit(&sc->alive, 1, memory_order_seq_cst) == 1)
			scope_zero(sc);
		if (!root)
			atomic_fetch_sub_explicit(&sc->exiting, 1, memory_order_release);
		sc = parent;
	}
}

/* Pass 1 marks (C1 of the pair), pass 2 claims the waiting ones (C3). */
static void cancel_fiber(weft_sched *s, weft__fiber *f, bool claim)
{
	if (atomic_load_explicit(&f->state, memory_order_relaxed) == WEFT_FIBER_DEAD)
		return; /* finished, still in the list until its spawner unlinks it */
	if (!claim) {
		atomic_store_explicit(&f->cancelled, 1, memory_order_seq_cst);
		return;
	}
	uint64_t ww = atomic_load_explicit(&f->wait_word, memory_order_seq_cst);
	if ((ww & 3) == WAIT_WAITING && !atomic_load_explicit(&f->nocancel, memory_order_relaxed) &&
	    weft__wake_claim(f, ww >> 2, -ECANCELED))
		weft__ready(s, f, WEFT__READY_QUEUE);
}

static void cancel_tree(weft_scope *sc, bool claim)
{
	if (!claim)
		atomic_store_explicit(&sc->cancelled, 1, memory_order_seq_cst);
	for (int i = 0; i < sc->nshards; i++) {
		struct scope_shard *sh = &sc->shards[i];
		weft__spin_lock(&sh->lock);
		for (weft__fiber *f = sh->head; f; f = f->scope_next)
			cancel_fiber(sc->s, f, claim);
		weft__spin_unlock(&sh->lock);
	}
	/* parent before child: the only order two children_locks are ever taken in */
	weft__spin_lock(&sc->children_lock);
	for (weft_scope *c = sc->child_head; c; c = c->sib_next)
		cancel_tree(c, claim);
	weft__spin_unlock(&sc->children_lock);
}

/* The canceller's side of sched.c's pair, in two passes over the tree with one barrier between
 * them (a system call: one per cancel, not one per fiber). A fiber in pass 2's lists was in pass
 * 1's: after pass 1 has marked a scope, a spawn into it fails (the shard lock orders the two,
 * see the head comment); one that left meanwhile is simply not there. */
int weft_scope_cancel(weft_scope *sc)
{
	if (!sc)
		return -EINVAL;
	if (sc->s->fork_gen != weft__fork_gen())
		return -ESHUTDOWN;
	cancel_tree(sc, false);
	weft__cancel_barrier();
	cancel_tree(sc, true);
	return 0;
}

static bool is_within(const weft_scope *inner, const weft_scope *outer)
{
	for (; inner; inner = inner->parent)
		if (inner == outer)
			return true;
	return false;
}

static int join_fiber(weft_scope *sc, weft__fiber *self, int64_t deadline)
{
	if (is_within(self->scope, sc))
		return -EDEADLK;
	struct join_waiter j = {.f = self};
	weft__spin_lock(&sc->join_lock);
	if (atomic_load_explicit(&sc->alive, memory_order_acquire) == 0) {
		weft__spin_unlock(&sc->join_lock);
		return 0;
	}
	j.tok = weft__wait_begin(self, WEFT_WAIT_JOIN, sc);
	if (!j.tok) {
		weft__spin_unlock(&sc->join_lock);
		return -ECANCELED;
	}
	j.next = sc->joiners;
	j.linked = true;
	sc->joiners = &j;
	weft__spin_unlock(&sc->join_lock);
	int r = weft__wait_park(self, j.tok, deadline);
	if (r != 0) {
		weft__spin_lock(&sc->join_lock);
		if (j.linked) {
			for (struct join_waiter **pp = &sc->joiners; *pp; pp = &(*pp)->next)
				if (*pp == &j) {
					*pp = j.next;
					break;
				}
		}
		weft__spin_unlock(&sc->join_lock);
	}
	return r;
}

static int join_thread(weft_scope *sc, int64_t deadline)
{
	int r = 0;
	atomic_fetch_add_explicit(&sc->thread_joiners, 1, memory_order_seq_cst);
	for (;;) {
		uint32_t seq = atomic_load_explicit(&sc->join_seq, memory_order_seq_cst);
		if (atomic_load_explicit(&sc->alive, memory_order_seq_cst) == 0)
			break;
		if (weft__futex_wait(&sc->join_seq, seq, deadline) == -ETIMEDOUT &&
		    atomic_load_explicit(&sc->alive, memory_order_seq_cst) != 0) {
			r = -ETIMEDOUT;
			break;
		}
	}
	atomic_fetch_sub_explicit(&sc->thread_joiners, 1, memory_order_seq_cst);
	return r;
}

int weft_scope_join(weft_scope *sc, int64_t deadline)
{
	if (!sc || deadline < WEFT_FOREVER)
		return -EINVAL;
	if (sc->s->fork_gen != weft__fork_gen())
		return -ESHUTDOWN;
	weft__fiber *self = weft__fiber_self();
	if (self)
		return join_fiber(sc, self, deadline);
	return join_thread(sc, deadline);
}

void weft_scope_destroy(weft_scope *sc)
{
	if (!sc || sc->is_root)
		return;
	if (sc->s->fork_gen != weft__fork_gen())
		return; /* a child after fork: the parent's scopes are not ours to free */
	weft__fiber *self = weft__fiber_self();
	if (self && is_within(self->scope, sc))
		weft__fatal("weft: weft_scope_destroy called from a fiber inside the scope it "
		            "destroys");
	weft_scope_cancel(sc);
	if (self) {
		/* cancellation of the caller itself must not cut the join short: poll instead */
		while (atomic_load_explicit(&sc->alive, memory_order_acquire) != 0)
			if (join_fiber(sc, self, WEFT_FOREVER) == -ECANCELED)
				weft_fiber_yield();
	} else {
		join_thread(sc, WEFT_FOREVER);
	}
	/* fibers that died away from their spawner wait in its remote_dead to be unlinked (head
	 * comment): unlink them here rather than wait for the spawner to */
	while (atomic_load_explicit(&sc->exiting, memory_order_acquire) != 0) {
		reap_all(sc->s);
		if (atomic_load_explicit(&sc->exiting, memory_order_acquire) != 0)
			sched_yield();
	}
	weft_scope *p = sc->parent;
	weft__spin_lock(&p->children_lock);
	if (sc->child_head)
		weft__fatal("weft: weft_scope_destroy on a scope whose child scopes were not "
		            "destroyed");
	if (sc->sib_prev)
		sc->sib_prev->sib_next = sc->sib_next;
	else
		p->child_head = sc->sib_next;
	if (sc->sib_next)
		sc->sib_next->sib_prev = sc->sib_prev;
	weft__spin_unlock(&p->children_lock);
	free(sc->shards);
	free(sc);
}

long weft_scope_fibers(const weft_scope *sc)
{
	if (!sc)
		return 0;
	if (sc->is_root)
		return weft__root_alive(sc->s);
	return atomic_load_explicit(&sc->alive, memory_order_relaxed);
}
