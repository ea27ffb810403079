/* Scopes: every fiber belongs to one; cancelling a scope cancels its fibers and child scopes;
 * joining waits for all of them. No fiber outlives its scope.
 *
 * Membership. A scope keeps its fibers in lists sharded by the spawning worker (one spin lock
 * per shard, so spawns on different workers do not contend), and counts `alive`: its fibers plus
 * those of its descendants. A spawn adds 1 at every level from the scope to the root (the root's
 * count doubles as the scheduler's max_fibers check); a fiber's exit takes 1 off at every level,
 * and the level that reaches 0 wakes its joiners.
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

int weft__scope_init_root(weft_sched *s)
{
	s->root.is_root = true;
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

int weft__scope_attach(weft_scope *sc, weft__fiber *f, const worker *w)
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

void weft__scope_detach(weft__fiber *f)
{
	weft_scope *sc = f->scope;
	struct scope_shard *sh = &sc->shards[f->shard];
	weft__spin_lock(&sh->lock);
	if (f->scope_prev)
		f->scope_prev->scope_next = f->scope_next;
	else
		sh->head = f->scope_next;
	if (f->scope_next)
		f->scope_next->scope_prev = f->scope_prev;
	weft__spin_unlock(&sh->lock);
	weft__scope_release(sc, true);
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
	while (atomic_load_explicit(&sc->exiting, memory_order_acquire) != 0)
		sched_yield();
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
	return sc ? atomic_load_explicit(&sc->alive, memory_order_relaxed) : 0;
}
