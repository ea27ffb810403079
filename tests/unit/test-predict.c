/* Prediction mode of the lock monitor (src/watch/predict.c): lock classes, held lists, the order
 * graph and its excuses. Most cases drive the hooks the lock wrappers call (weft__predict_*)
 * directly, so each acquisition is exactly the one the case means; the last ones go through
 * weft_mutex, weft_rwlock and weft_cond. Orders are taken one thread after another: nothing here
 * ever deadlocks, which is the point of prediction. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <weft/watch.h>

#include "harness.h"
#include "internal/common.h"
#include "internal/watch.h"
#include "watch-test.h"

/* ---- reports ---- */

static void start(void)
{
	weft_watch_options o = {0};
	o.predict = 1;
	o.on_report = on_report;
	o.long_wait_ns = -1;
	o.cond_wait_ns = -1;
	ASSERT_OK(weft_watch_start(&o));
}

/* Stop the monitor (it emits what is queued) and return the reports received. */
static int stop(void)
{
	weft_watch_stop();
	pthread_mutex_lock(&rep_mu);
	int n = nreps;
	pthread_mutex_unlock(&rep_mu);
	return n;
}

static uint64_t inversions_counted(void)
{
	weft_watch_counts c;
	ASSERT_OK(weft_watch_get_counts(&c));
	return c.by_event[WEFT_WATCH_INVERSION];
}

static struct weft__predict_stats stats(void)
{
	struct weft__predict_stats s;
	memset(&s, 0xff, sizeof(s));
	weft__predict_get_stats(&s);
	return s;
}

/* True if one of the frames symbolizes to a function named `name`. */
static bool stack_has(void *const *frames, int n, const char *name)
{
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	bool found = false;
	for (int i = 0; i < n && !found; i++) {
		const char *func = NULL;
		if (weft_symbolizer_lookup(s, frames[i], &func, NULL, NULL, NULL, NULL) == 0)
			found = strcmp(func, name) == 0;
	}
	weft_symbolizer_destroy(s);
	return found;
}

/* ---- acquisitions through the hooks ---- */

struct lk {
	int dummy; /* the address is the lock's identity */
};

static __attribute__((noinline)) void take(const struct lk *l, uint32_t cls, int mode)
{
	weft__predict_before(l, cls, mode, __builtin_return_address(0));
	weft__predict_after(l, cls, mode, 0, __builtin_return_address(0));
	__asm__ volatile("" ::: "memory"); /* not a tail call: keep this frame */
}

static __attribute__((noinline)) void try_take(const struct lk *l, uint32_t cls, int mode)
{
	weft__predict_after(l, cls, mode, WEFT__PREDICT_TRY, __builtin_return_address(0));
	__asm__ volatile("" ::: "memory");
}

/* The hook that runs before a lock call, alone; the site is the caller's, as a lock call's is. */
static __attribute__((noinline)) void before_only(const struct lk *l, uint32_t cls)
{
	weft__predict_before(l, cls, 0, __builtin_return_address(0));
	__asm__ volatile("" ::: "memory");
}

static void drop(const struct lk *l)
{
	weft__predict_release(l);
}

static uint32_t named(const char *name)
{
	uint32_t c = weft__predict_class_named(name, __builtin_return_address(0));
	ASSERT_GT(c, 0);
	return c;
}

/* Run fn(arg) on a thread of its own and wait for it. */
static void on_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, fn, arg), 0);
	ASSERT_EQ(pthread_join(t, NULL), 0);
}

/* ---- two classes in both orders ---- */

static struct lk la, lb, lc, lg, lr;
static uint32_t ca, cb, cc, cg, cr;
static pid_t tid1, tid2;
static uint64_t seen_after_before;

static __attribute__((noinline)) void *order_ab(void *arg)
{
	(void)arg;
	if (!tid1)
		tid1 = gettid_(); /* the first run's */
	take(&la, ca, 0);
	take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	return NULL;
}

static __attribute__((noinline)) void *order_ba(void *arg)
{
	(void)arg;
	if (!tid2)
		tid2 = gettid_();
	take(&lb, cb, 0);
	/* the hook that runs before the lock call waits: the report must be queued by now */
	before_only(&la, ca);
	seen_after_before = inversions_counted();
	try_take(&la, ca, 0);
	drop(&la);
	drop(&lb);
	return NULL;
}

TEST(inversion_of_two_classes_is_reported_once_with_both_stacks)
{
	start();
	ca = named("test.A");
	cb = named("test.B");
	ASSERT_NE(ca, cb);
	on_thread(order_ab, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	on_thread(order_ba, NULL);
	ASSERT_EQ(seen_after_before, 1); /* emitted from before, ahead of any wait */
	for (int i = 0; i < 5; i++) {    /* the same pair again, both ways: no new report */
		on_thread(order_ab, NULL);
		on_thread(order_ba, NULL);
	}
	ASSERT_EQ(stop(), 1);
	ASSERT_EQ(stats().inversions, 1);
	const weft_watch_report *r = &reps[0];
	ASSERT_EQ(r->event, WEFT_WATCH_INVERSION);
	/* order[0]: the first order, A then B, on the first thread */
	ASSERT_EQ(r->order[0].tid, tid1);
	ASSERT_TRUE(r->order[0].held == &la && r->order[0].acquired == &lb);
	ASSERT_TRUE(r->order[0].held_class_site == weft__predict_class_site(ca));
	ASSERT_TRUE(r->order[0].acquired_class_site == weft__predict_class_site(cb));
	ASSERT_NOT_NULL(r->order[0].held_class_site);
	ASSERT_GT(r->order[0].nstack, 0);
	ASSERT_TRUE(stack_has(r->order[0].stack, r->order[0].nstack, "order_ab"));
	ASSERT_FALSE(stack_has(r->order[0].stack, r->order[0].nstack, "order_ba"));
	/* order[1]: B then A now, the first time the second thread did it */
	ASSERT_TRUE(r->order[1].held == &lb && r->order[1].acquired == &la);
	ASSERT_TRUE(r->order[1].held_class_site == weft__predict_class_site(cb));
	ASSERT_TRUE(r->order[1].acquired_class_site == weft__predict_class_site(ca));
	ASSERT_GT(r->order[1].nstack, 0);
	ASSERT_TRUE(stack_has(r->order[1].stack, r->order[1].nstack, "order_ba"));
	/* the thread: the second one, holding B, about to take A */
	ASSERT_EQ(r->nthreads, 1);
	ASSERT_EQ(r->threads[0].tid, tid2);
	ASSERT_EQ(r->threads[0].pid, getpid());
	ASSERT_EQ(r->threads[0].nholds, 1);
	ASSERT_TRUE(r->threads[0].holds[0] == &lb);
	ASSERT_TRUE(r->threads[0].waits_for == &la);
	ASSERT_TRUE(stack_has(r->threads[0].stack, r->threads[0].nstack, "order_ba"));
	ASSERT_EQ(r->npath, 2);
	ASSERT_STR_EQ(r->path[0].class_name, "test.A");
	ASSERT_STR_EQ(r->path[1].class_name, "test.B");
	ASSERT_TRUE(r->path[0].lock == &la && r->path[1].lock == &lb);
}

/* ---- three classes ---- */

static void *cycle_ab(void *arg)
{
	(void)arg;
	take(&la, ca, 0);
	take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	return NULL;
}

static void *cycle_bc(void *arg)
{
	(void)arg;
	take(&lb, cb, 0);
	take(&lc, cc, 0);
	drop(&lc);
	drop(&lb);
	return NULL;
}

static void *cycle_ca(void *arg)
{
	(void)arg;
	take(&lc, cc, 0);
	take(&la, ca, 0);
	drop(&la);
	drop(&lc);
	return NULL;
}

TEST(three_class_cycle_is_reported)
{
	start();
	ca = named("A");
	cb = named("B");
	cc = named("C");
	on_thread(cycle_ab, NULL);
	on_thread(cycle_bc, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	on_thread(cycle_ca, NULL);
	ASSERT_EQ(inversions_counted(), 1);
	on_thread(cycle_ca, NULL);
	ASSERT_EQ(stop(), 1);
	/* closed by C -> A: the path A -> B -> C starts with A -> B */
	ASSERT_TRUE(reps[0].order[0].held == &la && reps[0].order[0].acquired == &lb);
	ASSERT_TRUE(reps[0].order[1].held == &lc && reps[0].order[1].acquired == &la);
	ASSERT_EQ(stats().edges, 3);
	/* the whole cycle: A (held by A -> B), B (by B -> C), C (held now) */
	ASSERT_EQ(reps[0].npath, 3);
	ASSERT_EQ(reps[0].more_path, 0);
	ASSERT_STR_EQ(reps[0].path[0].class_name, "A");
	ASSERT_STR_EQ(reps[0].path[1].class_name, "B");
	ASSERT_STR_EQ(reps[0].path[2].class_name, "C");
	ASSERT_TRUE(reps[0].path[0].lock == &la && reps[0].path[1].lock == &lb &&
	            reps[0].path[2].lock == &lc);
	ASSERT_TRUE(reps[0].path[1].class_site == weft__predict_class_site(cb));
}

/* A cycle of ten classes: the report's path keeps the first WEFT_WATCH_MAX_PATH steps. */
TEST(long_cycle_path_is_cut_and_counted)
{
	start();
	static struct lk ring[10];
	uint32_t c[10];
	char name[16];
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "ring%d", i);
		c[i] = named(name);
	}
	for (int i = 0; i < 10; i++) {
		take(&ring[i], c[i], 0);
		take(&ring[(i + 1) % 10], c[(i + 1) % 10], 0);
		drop(&ring[(i + 1) % 10]);
		drop(&ring[i]);
	}
	ASSERT_EQ(stop(), 1);
	ASSERT_EQ(reps[0].npath, WEFT_WATCH_MAX_PATH);
	ASSERT_EQ(reps[0].more_path, 10 - WEFT_WATCH_MAX_PATH);
	for (int i = 0; i < WEFT_WATCH_MAX_PATH; i++) {
		snprintf(name, sizeof(name), "ring%d", i);
		ASSERT_STR_EQ(reps[0].path[i].class_name, name);
		ASSERT_TRUE(reps[0].path[i].lock == &ring[i]);
	}
}

/* ---- trylock ---- */

static void *try_backoff(void *arg)
{
	(void)arg;
	take(&la, ca, 0);
	/* trylock of B fails: nothing is called; then it succeeds: after with TRY, no before */
	try_take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	return NULL;
}

static void *then_c_blocking(void *arg)
{
	(void)arg;
	try_take(&lb, cb, 0); /* edges out of a try-acquired lock are normal */
	take(&lc, cc, 0);
	drop(&lc);
	drop(&lb);
	return NULL;
}

TEST(trylock_adds_no_edge_into_the_lock)
{
	start();
	ca = named("A");
	cb = named("B");
	cc = named("C");
	on_thread(try_backoff, NULL);
	on_thread(order_ba, NULL); /* B then A, blocking */
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_EQ(stats().edges, 1); /* B -> A only */
	/* edges out of a try-acquired lock: B (try) then C, later C then B blocking */
	on_thread(then_c_blocking, NULL);
	ASSERT_EQ(stats().edges, 2);
	on_thread(cycle_ca, NULL); /* C -> A: path A -> ? none: still nothing */
	ASSERT_EQ(inversions_counted(), 0);
	/* the same A then B taken blocking: now the inversion with B -> A is real */
	on_thread(order_ab, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].held == &la && reps[0].order[1].acquired == &lb);
}

/* ---- gate lock ---- */

static void *gated_ab(void *arg)
{
	(void)arg;
	take(&lg, cg, 0);
	take(&la, ca, 0);
	take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	drop(&lg);
	return NULL;
}

static void *gated_ba(void *arg)
{
	(void)arg;
	take(&lg, cg, 0);
	take(&lb, cb, 0);
	take(&la, ca, 0);
	drop(&lg); /* released first: out of order */
	drop(&la);
	drop(&lb);
	return NULL;
}

TEST(gate_lock_held_around_both_orders_excuses_them)
{
	start();
	ca = named("A");
	cb = named("B");
	cg = named("G");
	on_thread(gated_ab, NULL);
	on_thread(gated_ba, NULL);
	for (int i = 0; i < 3; i++) {
		on_thread(gated_ab, NULL);
		on_thread(gated_ba, NULL);
	}
	ASSERT_EQ(inversions_counted(), 0);
	struct weft__predict_stats s = stats();
	ASSERT_GE(s.excused_gate, 1);
	ASSERT_EQ(s.edges, 4); /* G->A, A->B, G->B, B->A */
	/* B then A once without the gate: that order can meet A then B (under G) */
	on_thread(order_ba, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].held == &lb && reps[0].order[1].acquired == &la);
}

TEST(gate_taken_away_from_the_first_order_is_reported)
{
	start();
	ca = named("A");
	cb = named("B");
	cg = named("G");
	on_thread(order_ab, NULL); /* A then B, no gate */
	on_thread(gated_ba, NULL); /* B then A under G: the A -> B side had no G */
	ASSERT_EQ(stop(), 1);
	ASSERT_EQ(stats().excused_gate, 0);
}

/* Gates are lock instances: the locks of two objects made at one site share a class, and one
 * thread holding obj0's while another holds obj1's excludes nothing. */
static struct lk lg0, lg1;

static void *obj0_ab(void *arg)
{
	(void)arg;
	take(&lg0, cg, 0);
	take(&la, ca, 0);
	take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	drop(&lg0);
	return NULL;
}

static void *obj1_ba(void *arg)
{
	(void)arg;
	take(&lg1, cg, 0);
	take(&lb, cb, 0);
	take(&la, ca, 0);
	drop(&la);
	drop(&lb);
	drop(&lg1);
	return NULL;
}

TEST(gate_locks_of_one_class_but_two_instances_excuse_nothing)
{
	start();
	ca = named("A");
	cb = named("B");
	cg = named("G"); /* both objects' locks */
	on_thread(obj0_ab, NULL);
	on_thread(obj1_ba, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_EQ(stats().excused_gate, 0);
	ASSERT_TRUE(reps[0].order[1].held == &lb && reps[0].order[1].acquired == &la);
}

/* One thread takes A then B under obj0's lock, then again under obj1's: the second occurrence
 * has the same held classes as the first (a per-class cache signature would skip it), but not
 * the same gate lock, so the order A -> B has no gate left and B -> A under obj0's is reported. */
static void *obj0_then_obj1_ab(void *arg)
{
	obj0_ab(arg);
	take(&lg1, cg, 0);
	take(&la, ca, 0);
	take(&lb, cb, 0);
	drop(&lb);
	drop(&la);
	drop(&lg1);
	return NULL;
}

static void *obj0_ba(void *arg)
{
	(void)arg;
	take(&lg0, cg, 0);
	take(&lb, cb, 0);
	take(&la, ca, 0);
	drop(&la);
	drop(&lb);
	drop(&lg0);
	return NULL;
}

TEST(a_gate_must_be_the_same_lock_at_every_occurrence)
{
	start();
	ca = named("A");
	cb = named("B");
	cg = named("G");
	on_thread(obj0_then_obj1_ab, NULL);
	on_thread(obj0_ba, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_EQ(stats().excused_gate, 0);
}

TEST(the_same_gate_instance_on_both_sides_still_excuses)
{
	start();
	ca = named("A");
	cb = named("B");
	cg = named("G");
	for (int i = 0; i < 3; i++) {
		on_thread(obj0_ab, NULL);
		on_thread(obj0_ba, NULL);
	}
	ASSERT_EQ(stop(), 0);
	ASSERT_GE(stats().excused_gate, 1);
}

/* ---- reader locks ---- */

static void *read_r_then_a(void *arg)
{
	(void)arg;
	take(&lr, cr, 1);
	take(&la, ca, 0);
	drop(&la);
	drop(&lr);
	return NULL;
}

static void *a_then_read_r(void *arg)
{
	(void)arg;
	take(&la, ca, 0);
	take(&lr, cr, 1);
	drop(&lr);
	drop(&la);
	return NULL;
}

static void *a_then_write_r(void *arg)
{
	(void)arg;
	take(&la, ca, 0);
	take(&lr, cr, 0);
	drop(&lr);
	drop(&la);
	return NULL;
}

TEST(readers_on_both_sides_are_excused_a_writer_is_not)
{
	start();
	ca = named("A");
	cr = named("R");
	on_thread(read_r_then_a, NULL);
	on_thread(a_then_read_r, NULL);
	on_thread(a_then_read_r, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_GE(stats().excused_read, 1);
	/* a writer of R under A blocks on the reader that waits for A */
	on_thread(a_then_write_r, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[0].held == &lr && reps[0].order[0].acquired == &la);
	ASSERT_TRUE(reps[0].order[1].held == &la && reps[0].order[1].acquired == &lr);
}

/* ---- condition wait ---- */

static struct lk lm, ll;
static uint32_t cm, cl;

static void *cond_waiter(void *arg)
{
	(void)arg;
	take(&lm, cm, 0);
	take(&ll, cl, 0);
	/* wait on a condition with M: M is released and taken again while L is held */
	drop(&lm);
	weft__predict_after(&lm, cm, 0, WEFT__PREDICT_REACQUIRE, __builtin_return_address(0));
	drop(&ll);
	drop(&lm);
	return NULL;
}

static void *m_then_l(void *arg)
{
	(void)arg;
	take(&lm, cm, 0);
	take(&ll, cl, 0);
	drop(&ll);
	drop(&lm);
	return NULL;
}

static void *l_then_m(void *arg)
{
	(void)arg;
	take(&ll, cl, 0);
	take(&lm, cm, 0);
	drop(&lm);
	drop(&ll);
	return NULL;
}

TEST(condition_wait_reacquire_adds_no_order)
{
	start();
	cm = named("M");
	cl = named("L");
	on_thread(cond_waiter, NULL);
	on_thread(m_then_l, NULL);
	on_thread(cond_waiter, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_EQ(stats().edges, 1); /* M -> L only */
	on_thread(l_then_m, NULL);   /* a real L then M is one */
	ASSERT_EQ(stop(), 1);
}

/* ---- many threads, one order ---- */

#define NT 8
static struct lk many[4];
static uint32_t many_cls[4];
static _Atomic int go;

static void *consistent(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
	while (!atomic_load(&go))
		;
	for (int it = 0; it < 2000; it++) {
		/* a random subset of the four, always in index order; released in random order */
		unsigned pick = (unsigned)(th_rng(&seed) % 16);
		for (int i = 0; i < 4; i++)
			if (pick & (1u << i))
				take(&many[i], many_cls[i], 0);
		while (pick) {
			int i = (int)(th_rng(&seed) % 4);
			if (pick & (1u << i)) {
				drop(&many[i]);
				pick &= ~(1u << i);
			}
		}
	}
	return NULL;
}

TEST(consistent_order_across_threads_is_quiet)
{
	start();
	const char *names[4] = {"n0", "n1", "n2", "n3"};
	for (int i = 0; i < 4; i++)
		many_cls[i] = named(names[i]);
	pthread_t t[NT];
	for (int i = 0; i < NT; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, consistent, (void *)(uintptr_t)(i + 1)), 0);
	atomic_store(&go, 1);
	for (int i = 0; i < NT; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	ASSERT_EQ(stop(), 0);
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.edges, 6); /* every i -> j with i < j */
	ASSERT_EQ(s.inversions, 0);
	ASSERT_EQ(s.held_overflow, 0);
}

/* ---- racing threads ---- */

#define RK 48
static struct lk race_locks[RK];
static uint32_t race_named[NT][RK], race_addr[NT][RK];

static void *racer(void *arg)
{
	int me = (int)(uintptr_t)arg;
	char name[16];
	while (!atomic_load(&go))
		;
	for (int k = 0; k < RK; k++) {
		int kk = (k + me * 7) % RK; /* each thread starts somewhere else */
		snprintf(name, sizeof(name), "race.%d", kk);
		race_named[me][kk] = weft__predict_class_named(name, NULL);
		/* first use of one lock by every thread at once; the site is per lock */
		race_addr[me][kk] = weft__predict_class(&race_locks[kk],
		                                        (void *)(uintptr_t)(0x10000 + kk * 16));
	}
	/* new edges from every thread at once, always in increasing class order */
	uint64_t seed = (uint64_t)me * 104729 + 3;
	for (int it = 0; it < 300; it++) {
		int a = (int)(th_rng(&seed) % RK), b = (int)(th_rng(&seed) % RK),
		    c = (int)(th_rng(&seed) % RK);
		int lo = WEFT__MIN(a, WEFT__MIN(b, c)), hi = WEFT__MAX(a, WEFT__MAX(b, c));
		int mid = a + b + c - lo - hi;
		take(&race_locks[lo], race_named[me][lo], 0);
		if (mid != lo)
			take(&race_locks[mid], race_named[me][mid], 0);
		if (hi != mid)
			take(&race_locks[hi], race_named[me][hi], 0);
		if (hi != mid)
			drop(&race_locks[hi]);
		if (mid != lo)
			drop(&race_locks[mid]);
		drop(&race_locks[lo]);
	}
	return NULL;
}

TEST(racing_threads_agree_on_classes_and_orders)
{
	start();
	atomic_store(&go, 0);
	pthread_t t[NT];
	for (int i = 0; i < NT; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, racer, (void *)(uintptr_t)i), 0);
	atomic_store(&go, 1);
	for (int i = 0; i < NT; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	for (int k = 0; k < RK; k++) {
		ASSERT_GT(race_named[0][k], 0);
		ASSERT_GT(race_addr[0][k], 0);
		for (int i = 1; i < NT; i++) {
			ASSERT_EQ(race_named[i][k], race_named[0][k]);
			ASSERT_EQ(race_addr[i][k], race_addr[0][k]);
		}
		for (int j = 0; j < k; j++) {
			ASSERT_NE(race_named[0][j], race_named[0][k]);
			ASSERT_NE(race_addr[0][j], race_addr[0][k]);
		}
	}
	ASSERT_EQ(stop(), 0);
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.classes, 2 * RK);
	ASSERT_GT(s.edges, RK);
	ASSERT_LE(s.edges, RK * (RK - 1) / 2);
	ASSERT_EQ(s.inversions, 0);
}

/* ---- classes ---- */

static struct lk la2;

static void *order_ba2(void *arg)
{
	(void)arg;
	take(&lb, cb, 0);
	take(&la2, ca, 0); /* another lock of class A */
	drop(&la2);
	drop(&lb);
	return NULL;
}

TEST(classes_by_name_merge_locks)
{
	start();
	void *s1 = (void *)0x1000, *s2 = (void *)0x2000;
	uint32_t x = weft__predict_class_named("same", s1);
	ASSERT_GT(x, 0);
	ASSERT_EQ(weft__predict_class_named("same", s2), x);
	ASSERT_TRUE(weft__predict_class_site(x) == s1); /* the first naming site */
	ASSERT_NE(weft__predict_class_named("other", s1), x);
	/* no name: the site */
	uint32_t y = weft__predict_class_named(NULL, s2);
	ASSERT_GT(y, 0);
	ASSERT_NE(y, x);
	ASSERT_EQ(weft__predict_class_named(NULL, s2), y);
	ASSERT_NULL(weft__predict_class_site(0));
	ASSERT_NULL(weft__predict_class_site(UINT32_MAX));
	/* A then B with one lock of class A, B then A with another: one inversion */
	ca = named("merged.A");
	cb = named("merged.B");
	on_thread(order_ab, NULL);
	on_thread(order_ba2, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].acquired == &la2);
}

TEST(pthread_lock_classes_by_init_and_first_use_site)
{
	start();
	struct lk m1, m2, m3, m4;
	void *init_site = (void *)0x4000, *use1 = (void *)0x5000, *use2 = (void *)0x6000;
	/* locks initialised at one site share its class */
	weft__predict_class_init(&m1, init_site);
	weft__predict_class_init(&m2, init_site);
	uint32_t c1 = weft__predict_class(&m1, use1);
	ASSERT_GT(c1, 0);
	ASSERT_EQ(weft__predict_class(&m2, use2), c1);
	ASSERT_TRUE(weft__predict_class_site(c1) == init_site);
	/* statically initialised: the first-use site, remembered */
	uint32_t c3 = weft__predict_class(&m3, use1);
	ASSERT_GT(c3, 0);
	ASSERT_NE(c3, c1);
	ASSERT_EQ(weft__predict_class(&m3, use2), c3);
	ASSERT_EQ(weft__predict_class(&m4, use1), c3); /* first used at the same site */
	ASSERT_EQ(weft__predict_class(&m4, use2), c3);
	/* destroy forgets the address: the next lock there is new */
	weft__predict_forget(&m3);
	uint32_t c3b = weft__predict_class(&m3, use2);
	ASSERT_GT(c3b, 0);
	ASSERT_NE(c3b, c3);
	/* re-initialisation takes the new site */
	weft__predict_class_init(&m1, use2);
	ASSERT_EQ(weft__predict_class(&m1, use1), c3b);
	weft__predict_forget(&m4); /* forgetting twice or the unknown is harmless */
	weft__predict_forget(&m4);
	weft__predict_forget(NULL);
	ASSERT_EQ(weft__predict_class(NULL, use1), 0);
	ASSERT_EQ(stop(), 0);
}

TEST(held_list_releases_in_any_order)
{
	start();
	uint32_t c[5];
	struct lk l[5];
	const char *names[5] = {"h0", "h1", "h2", "h3", "h4"};
	for (int i = 0; i < 5; i++) {
		c[i] = named(names[i]);
		take(&l[i], c[i], 0);
	}
	const void *held[8];
	ASSERT_EQ(weft__predict_held(held, 8), 5);
	drop(&l[2]);
	drop(&l[0]);
	ASSERT_EQ(weft__predict_held(held, 8), 3);
	ASSERT_TRUE(held[0] == &l[1] && held[1] == &l[3] && held[2] == &l[4]);
	ASSERT_EQ(weft__predict_held(held, 2), 2);
	ASSERT_EQ(weft__predict_held(NULL, 2), 0);
	ASSERT_EQ(weft__predict_held(held, 0), 0);
	drop(&l[0]); /* not held: ignored */
	drop(&l[4]);
	drop(&l[1]);
	drop(&l[3]);
	ASSERT_EQ(weft__predict_held(held, 8), 0);
	/* recursion: the same lock twice is two entries */
	take(&l[0], c[0], 0);
	take(&l[0], c[0], 0);
	ASSERT_EQ(weft__predict_held(held, 8), 2);
	drop(&l[0]);
	ASSERT_EQ(weft__predict_held(held, 8), 1);
	drop(&l[0]);
	ASSERT_EQ(stop(), 0);
	ASSERT_EQ(stats().same_class, 0); /* the same lock again is not class nesting */
}

TEST(deep_nesting_is_counted_not_tracked)
{
	start();
	static struct lk l[70];
	uint32_t c = named("deep");
	for (int i = 0; i < 70; i++)
		take(&l[i], c, 0);
	const void *held[80];
	ASSERT_EQ(weft__predict_held(held, 80), 64); /* the list's capacity */
	for (int i = 69; i >= 0; i--)
		drop(&l[i]);
	ASSERT_EQ(weft__predict_held(held, 80), 0);
	ASSERT_EQ(stop(), 0);
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.held_overflow, 6);
	ASSERT_EQ(s.same_class, 1); /* one class nested in itself, counted once */
	ASSERT_EQ(s.edges, 0);
	ASSERT_EQ(s.inversions, 0);
}

/* Locks held beyond the ones an acquisition takes orders from (the oldest 32) are still held:
 * releases of locks never tracked must not make the thread forget them, and once older ones are
 * released, orders come from them too. */
TEST(untracked_releases_leave_the_held_list_exact)
{
	start();
	static struct lk l[40], stranger, ln;
	uint32_t c[40];
	char name[16];
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "n%d", i);
		c[i] = named(name);
	}
	uint32_t cn = named("n-last");
	for (int i = 0; i < 40; i++)
		take(&l[i], c[i], 0);
	const void *held[64];
	ASSERT_EQ(weft__predict_held(held, 64), 40);
	for (int i = 0; i < 8; i++)
		drop(&stranger); /* never taken: changes nothing */
	ASSERT_EQ(weft__predict_held(held, 64), 40);
	for (int i = 0; i < 8; i++)
		drop(&l[i]);
	ASSERT_EQ(weft__predict_held(held, 64), 32);
	ASSERT_TRUE(held[0] == &l[8] && held[31] == &l[39]);
	uint64_t e0 = stats().edges;
	take(&ln, cn, 0); /* orders from l[8..39]: the eight newest too */
	ASSERT_EQ(stats().edges - e0, 32);
	drop(&ln);
	for (int i = 8; i < 40; i++)
		drop(&l[i]);
	ASSERT_EQ(weft__predict_held(held, 64), 0);
	ASSERT_EQ(stop(), 0);
	ASSERT_EQ(stats().held_overflow, 0);
}

/* ---- one class nested in itself: instance orders ---- */

static struct lk lx1, lx2, lx3;
static uint32_t cx;

/* take a then b (one class), release both */
static __attribute__((noinline)) void pair_ab(struct lk *a, struct lk *b)
{
	take(a, cx, 0);
	take(b, cx, 0);
	drop(b);
	drop(a);
}

static void *x1_x2(void *arg)
{
	(void)arg;
	pair_ab(&lx1, &lx2);
	return NULL;
}

static void *x2_x1(void *arg)
{
	(void)arg;
	pair_ab(&lx2, &lx1);
	return NULL;
}

static void *x2_x3(void *arg)
{
	(void)arg;
	pair_ab(&lx2, &lx3);
	return NULL;
}

static void *x3_x1(void *arg)
{
	(void)arg;
	pair_ab(&lx3, &lx1);
	return NULL;
}

/* The bank transfer: the accounts' locks are one class; one thread locks account 1 then 2 and
 * ends, later another locks 2 then 1. */
static __attribute__((noinline)) void *transfer_1_2(void *arg)
{
	(void)arg;
	if (!tid1)
		tid1 = gettid_();
	take(&lx1, cx, 0);
	take(&lx2, cx, 0);
	drop(&lx2);
	drop(&lx1);
	return NULL;
}

static __attribute__((noinline)) void *transfer_2_1(void *arg)
{
	(void)arg;
	if (!tid2)
		tid2 = gettid_();
	take(&lx2, cx, 0);
	before_only(&lx1, cx);
	seen_after_before = inversions_counted();
	try_take(&lx1, cx, 0);
	drop(&lx1);
	drop(&lx2);
	return NULL;
}

TEST(same_class_pair_taken_both_ways_is_reported_once)
{
	start();
	cx = named("account");
	on_thread(transfer_1_2, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	on_thread(transfer_2_1, NULL);
	ASSERT_EQ(seen_after_before, 1); /* from before, ahead of any wait */
	for (int i = 0; i < 5; i++) {    /* again, both ways: no new report */
		on_thread(transfer_1_2, NULL);
		on_thread(transfer_2_1, NULL);
		on_thread(x1_x2, NULL);
		on_thread(x2_x1, NULL);
	}
	ASSERT_EQ(stop(), 1);
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.inversions, 1);
	ASSERT_EQ(s.same_class, 1);
	ASSERT_EQ(s.edges, 0);      /* no class order: one class */
	ASSERT_EQ(s.inst_edges, 2); /* 1 -> 2, 2 -> 1 */
	const weft_watch_report *r = &reps[0];
	ASSERT_EQ(r->event, WEFT_WATCH_INVERSION);
	ASSERT_EQ(r->order[0].tid, tid1);
	ASSERT_TRUE(r->order[0].held == &lx1 && r->order[0].acquired == &lx2);
	ASSERT_TRUE(r->order[0].held_class_site == weft__predict_class_site(cx));
	ASSERT_TRUE(r->order[0].acquired_class_site == weft__predict_class_site(cx));
	ASSERT_STR_EQ(r->order[0].held_class_name, "account");
	ASSERT_STR_EQ(r->order[0].acquired_class_name, "account");
	ASSERT_TRUE(stack_has(r->order[0].stack, r->order[0].nstack, "transfer_1_2"));
	ASSERT_FALSE(stack_has(r->order[0].stack, r->order[0].nstack, "transfer_2_1"));
	ASSERT_EQ(r->order[1].tid, tid2);
	ASSERT_TRUE(r->order[1].held == &lx2 && r->order[1].acquired == &lx1);
	ASSERT_TRUE(stack_has(r->order[1].stack, r->order[1].nstack, "transfer_2_1"));
	ASSERT_EQ(r->threads[0].tid, tid2);
	ASSERT_EQ(r->threads[0].nholds, 1);
	ASSERT_TRUE(r->threads[0].holds[0] == &lx2);
	ASSERT_TRUE(r->threads[0].waits_for == &lx1);
}

/* Code that orders the locks of one class (here by address) nests them legitimately. */
static struct lk accounts[4];

static void *ordered_transfers(void *arg)
{
	int dir = (int)(intptr_t)arg;
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++) {
			if (i == j)
				continue;
			int from = dir ? i : j, to = dir ? j : i;
			struct lk *lo = &accounts[WEFT__MIN(from, to)],
			          *hi = &accounts[WEFT__MAX(from, to)];
			pair_ab(lo, hi);
		}
	/* three at once, in address order */
	take(&accounts[0], cx, 0);
	take(&accounts[2], cx, 0);
	take(&accounts[3], cx, 0);
	drop(&accounts[0]);
	drop(&accounts[3]);
	drop(&accounts[2]);
	return NULL;
}

TEST(same_class_nesting_in_address_order_is_quiet)
{
	start();
	cx = named("account");
	on_thread(ordered_transfers, (void *)0);
	on_thread(ordered_transfers, (void *)1);
	ASSERT_EQ(stop(), 0);
	ASSERT_EQ(stats().inst_edges, 6); /* the pairs lo -> hi of four locks */
	ASSERT_EQ(stats().same_class, 1);
}

TEST(three_instances_of_one_class_in_a_cycle_are_reported)
{
	start();
	cx = named("ring");
	on_thread(x1_x2, NULL);
	on_thread(x2_x3, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	on_thread(x3_x1, NULL);
	ASSERT_EQ(inversions_counted(), 1);
	on_thread(x3_x1, NULL);
	on_thread(x1_x2, NULL);
	ASSERT_EQ(stop(), 1);
	/* closed by 3 -> 1: the path 1 -> 2 -> 3 starts with 1 -> 2 */
	ASSERT_TRUE(reps[0].order[0].held == &lx1 && reps[0].order[0].acquired == &lx2);
	ASSERT_TRUE(reps[0].order[1].held == &lx3 && reps[0].order[1].acquired == &lx1);
	ASSERT_EQ(stats().inst_edges, 3);
	ASSERT_EQ(reps[0].npath, 3);
	ASSERT_TRUE(reps[0].path[0].lock == &lx1 && reps[0].path[1].lock == &lx2 &&
	            reps[0].path[2].lock == &lx3);
	ASSERT_STR_EQ(reps[0].path[2].class_name, "ring");
}

/* A gate: one lock instance held around both orders (of another class, or of the same one). */
static struct lk *gate_lock;

static void *gated_x1_x2(void *arg)
{
	(void)arg;
	take(gate_lock, gate_lock == &lx3 ? cx : cg, 0);
	pair_ab(&lx1, &lx2);
	drop(gate_lock);
	return NULL;
}

static void *gated_x2_x1(void *arg)
{
	(void)arg;
	take(gate_lock, gate_lock == &lx3 ? cx : cg, 0);
	pair_ab(&lx2, &lx1);
	drop(gate_lock);
	return NULL;
}

static void *other_gate_x2_x1(void *arg)
{
	(void)arg;
	take(&lg1, cg, 0); /* the same class as the gate, another instance */
	pair_ab(&lx2, &lx1);
	drop(&lg1);
	return NULL;
}

TEST(a_gate_instance_held_around_both_same_class_orders_excuses_them)
{
	start();
	cx = named("account");
	cg = named("bank");
	gate_lock = &lg0;
	for (int i = 0; i < 3; i++) {
		on_thread(gated_x1_x2, NULL);
		on_thread(gated_x2_x1, NULL);
	}
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_GE(stats().excused_gate, 1);
	/* another instance of the gate's class excludes nothing */
	on_thread(other_gate_x2_x1, NULL);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].held == &lx2 && reps[0].order[1].acquired == &lx1);
}

TEST(a_gate_of_the_same_class_excuses_too)
{
	start();
	cx = named("account");
	gate_lock = &lx3; /* one of the accounts, held around both orders */
	for (int i = 0; i < 3; i++) {
		on_thread(gated_x1_x2, NULL);
		on_thread(gated_x2_x1, NULL);
	}
	ASSERT_GE(stats().excused_gate, 1);
	ASSERT_EQ(stop(), 0);
	ASSERT_EQ(stats().inst_edges, 4); /* 3 -> 1, 3 -> 2, 1 -> 2, 2 -> 1 */
}

static void *read_x1_read_x2(void *arg)
{
	(void)arg;
	take(&lx1, cx, 1);
	take(&lx2, cx, 1);
	drop(&lx2);
	drop(&lx1);
	return NULL;
}

static void *read_x2_read_x1(void *arg)
{
	(void)arg;
	take(&lx2, cx, 1);
	take(&lx1, cx, 1);
	drop(&lx1);
	drop(&lx2);
	return NULL;
}

static void *read_x2_write_x1(void *arg)
{
	(void)arg;
	take(&lx2, cx, 1);
	take(&lx1, cx, 0);
	drop(&lx1);
	drop(&lx2);
	return NULL;
}

TEST(same_class_readers_both_ways_are_excused_a_writer_is_not)
{
	start();
	cx = named("table");
	on_thread(read_x1_read_x2, NULL);
	on_thread(read_x2_read_x1, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_GE(stats().excused_read, 1);
	on_thread(read_x2_write_x1, NULL);  /* narrows 2 -> 1: taken for writing now */
	ASSERT_EQ(inversions_counted(), 0); /* 1 -> 2 read on both sides of 2 still: readers */
	on_thread(x1_x2, NULL);             /* 1 -> 2 now written: 2 read, 1 wanted for writing */
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].held == &lx1 && reps[0].order[1].acquired == &lx2);
}

TEST(trylock_of_the_same_class_adds_no_instance_order)
{
	start();
	cx = named("account");
	take(&lx1, cx, 0);
	try_take(&lx2, cx, 0);
	drop(&lx2);
	drop(&lx1);
	on_thread(x2_x1, NULL);
	ASSERT_EQ(stop(), 0);
	ASSERT_EQ(stats().inst_edges, 1); /* 2 -> 1 only */
}

TEST(a_destroyed_lock_takes_no_old_orders_along)
{
	start();
	cx = named("account");
	on_thread(x1_x2, NULL);
	weft__predict_forget(&lx2); /* destroyed; a new lock made at its address */
	on_thread(x2_x1, NULL);     /* not the reverse of the old 1 -> 2 */
	ASSERT_EQ(inversions_counted(), 0);
	on_thread(x1_x2, NULL); /* the reverse of 2 -> 1, both locks alive */
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[0].held == &lx2 && reps[0].order[0].acquired == &lx1);
	ASSERT_TRUE(reps[0].order[1].held == &lx1 && reps[0].order[1].acquired == &lx2);
	ASSERT_EQ(stats().inst_edges, 2);
}

TEST(instance_order_overflow_is_counted)
{
	weft__predict_test_inst_cap(3); /* orders 1 .. 2 */
	start();
	cx = named("account");
	pair_ab(&lx1, &lx2);
	pair_ab(&lx2, &lx3);
	ASSERT_EQ(stats().inst_edges, 2);
	ASSERT_EQ(stats().inst_overflow, 0);
	pair_ab(&lx3, &lx1);
	pair_ab(&lx3, &lx1); /* cached as unrecorded: not counted again on this thread */
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.inst_edges, 2);
	ASSERT_EQ(s.inst_overflow, 1);
	on_thread(x3_x1, NULL); /* another thread: counted again, never recorded */
	ASSERT_EQ(stats().inst_overflow, 2);
	ASSERT_EQ(stop(), 0);
}

static weft_mutex accts[2];

static __attribute__((noinline)) void *weft_transfer(void *arg)
{
	int from = (int)(intptr_t)arg;
	ASSERT_OK(weft_mutex_lock(&accts[from]));
	ASSERT_OK(weft_mutex_lock(&accts[1 - from]));
	ASSERT_OK(weft_mutex_unlock(&accts[1 - from]));
	ASSERT_OK(weft_mutex_unlock(&accts[from]));
	return NULL;
}

TEST(weft_mutexes_made_in_one_loop_taken_both_ways_are_reported)
{
	start();
	for (int i = 0; i < 2; i++) /* one init site: one class */
		ASSERT_OK(weft_mutex_init(&accts[i], NULL));
	on_thread(weft_transfer, (void *)0);
	on_thread(weft_transfer, (void *)1);
	on_thread(weft_transfer, (void *)0);
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[0].held == &accts[0] && reps[0].order[0].acquired == &accts[1]);
	ASSERT_TRUE(reps[0].order[1].held == &accts[1] && reps[0].order[1].acquired == &accts[0]);
	ASSERT_TRUE(reps[0].order[0].held_class_site == reps[0].order[1].acquired_class_site);
	ASSERT_TRUE(stack_has(reps[0].order[1].stack, reps[0].order[1].nstack, "weft_transfer"));
	for (int i = 0; i < 2; i++)
		ASSERT_OK(weft_mutex_destroy(&accts[i]));
}

TEST(table_overflow_is_counted)
{
	weft__predict_test_caps(4, 16, 3); /* classes 1..3, 16 address slots, edges 1..2 */
	start();
	void *site = (void *)0x7000;
	uint32_t cs = weft__predict_class_named(NULL, site);
	uint32_t c0 = weft__predict_class_named("c0", NULL),
	         c1 = weft__predict_class_named("c1", NULL);
	ASSERT_GT(cs, 0);
	ASSERT_GT(c0, 0);
	ASSERT_GT(c1, 0);
	char name[16];
	for (int i = 2; i < 10; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		ASSERT_EQ(weft__predict_class_named(name, NULL), 0);
	}
	ASSERT_EQ(weft__predict_class_named("c9", NULL), 0); /* still none, not counted twice */
	ASSERT_EQ(weft__predict_class_named("c1", NULL), c1);
	struct weft__predict_stats s = stats();
	ASSERT_EQ(s.classes, 3);
	ASSERT_EQ(s.class_overflow, 8);
	/* addresses: 16 slots, then each further lock is untracked and counted */
	static struct lk locks[40];
	for (int round = 0; round < 2; round++) { /* the second round reuses removed slots */
		int tracked = 0;
		for (int i = 0; i < 40; i++) {
			weft__predict_class_init(&locks[i], site);
			tracked += weft__predict_class(&locks[i], NULL) == cs;
		}
		ASSERT_EQ(tracked, 16);
		for (int i = 0; i < 40; i++)
			weft__predict_forget(&locks[i]);
	}
	ASSERT_GE(stats().addr_overflow, 2 * 24);
	/* edges: room for two; the third order is counted and dropped; untracked (class 0) locks
	 * are ignored */
	struct lk a, b, c, z, w;
	take(&a, c0, 0);
	take(&z, 0, 0);
	take(&b, c1, 0);
	take(&c, cs, 0);
	take(&w, 0, 0);
	drop(&w);
	drop(&c);
	drop(&b);
	drop(&z);
	drop(&a);
	s = stats();
	ASSERT_EQ(s.edges, 2);
	ASSERT_EQ(s.edge_overflow, 1);
	ASSERT_EQ(stop(), 0);
}

TEST(hooks_are_inert_when_stopped_and_restart_clears_held_lists)
{
	/* before any start: nothing mapped, nothing happens */
	struct lk a, b;
	ASSERT_EQ(weft__predict_class_named("a", NULL), 0);
	ASSERT_EQ(weft__predict_class(&a, NULL), 0);
	weft__predict_class_init(&a, NULL);
	weft__predict_forget(&a);
	ASSERT_NULL(weft__predict_class_site(1));
	take(&a, 1, 0);
	const void *held[4];
	ASSERT_EQ(weft__predict_held(held, 4), 0);
	ASSERT_OK(weft__predict_start());
	ASSERT_OK(weft__predict_start()); /* idempotent */
	uint32_t ca_ = named("a"), cb_ = named("b");
	take(&a, ca_, 0);
	ASSERT_EQ(weft__predict_held(held, 4), 1);
	weft__predict_stop();
	weft__predict_stop();
	drop(&a); /* not seen: stopped */
	take(&b, cb_, 0);
	ASSERT_OK(weft__predict_start());
	ASSERT_EQ(weft__predict_held(held, 4), 0);            /* the stale entry for a is gone */
	ASSERT_EQ(weft__predict_class_named("a", NULL), ca_); /* classes persist */
	weft__predict_stop();
}

/* ---- signal handlers ---- */

/* A handler that locks a lock of its own for the first time (its class made, its address entered
 * under the address table's lock) and forgets it again (so the next signal's use is a first use
 * too), while the interrupted thread may be inside a hook holding that lock. */
enum { SIG_LOCKS = 64 };
static struct lk sig_locks[SIG_LOCKS], sig_held;
static volatile sig_atomic_t sig_handled;
static _Atomic int storm_stop;

static void on_storm_signal(int signo)
{
	(void)signo;
	int saved = errno;
	struct lk *l = &sig_locks[sig_handled % SIG_LOCKS];
	void *site = (void *)(uintptr_t)0x5100;
	uint32_t c = weft__predict_class(l, site);
	weft__predict_before(l, c, 0, site);
	weft__predict_after(l, c, 0, 0, site);
	weft__predict_release(l);
	weft__predict_forget(l);
	(void)weft__predict_class_named("sig.named", site);
	sig_handled = sig_handled + 1;
	errno = saved;
}

static void *signal_storm(void *arg)
{
	pthread_t target = *(pthread_t *)arg;
	while (!atomic_load(&storm_stop)) {
		pthread_kill(target, SIGUSR1);
		sched_yield();
	}
	return NULL;
}

TEST_TIMEOUT(signal_handler_locking_while_its_thread_is_inside_a_hook_does_not_hang, 30)
{
	start();
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_storm_signal;
	sigemptyset(&sa.sa_mask);
	ASSERT_OK(sigaction(SIGUSR1, &sa, &old));
	uint32_t ch = named("sig.held");
	take(&sig_held, ch, 0); /* the handler's acquisitions make orders under it */
	pthread_t self = pthread_self(), t;
	ASSERT_EQ(pthread_create(&t, NULL, signal_storm, &self), 0);
	/* the hooks that take the address table's lock, in a loop: init, first use, destroy */
	static struct lk m, first;
	void *site = (void *)(uintptr_t)0x5200, *use = (void *)(uintptr_t)0x5300;
	for (long i = 0; i < 3000000 && (i < 100000 || sig_handled < 2000); i++) {
		weft__predict_class_init(&m, site);
		weft__predict_forget(&m);
		uint32_t c = weft__predict_class(&first, use);
		weft__predict_before(&first, c, 0, use);
		weft__predict_after(&first, c, 0, 0, use);
		weft__predict_release(&first);
		weft__predict_forget(&first);
	}
	atomic_store(&storm_stop, 1);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	drop(&sig_held);
	ASSERT_OK(sigaction(SIGUSR1, &old, NULL));
	ASSERT_GT(sig_handled, 0);
	const void *held[4];
	ASSERT_EQ(weft__predict_held(held, 4), 0); /* the handler's locks left nothing behind */
	ASSERT_EQ(stop(), 0);
}

/* ---- through weft_mutex, weft_rwlock and weft_cond ---- */

static weft_mutex ma, mb;
static weft_rwlock rwr;
static _Atomic int t2_locked;

static __attribute__((noinline)) void *mutex_ab(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&ma));
	ASSERT_OK(weft_mutex_lock(&mb));
	ASSERT_OK(weft_mutex_unlock(&mb));
	ASSERT_OK(weft_mutex_unlock(&ma));
	return NULL;
}

static __attribute__((noinline)) void *mutex_ba(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&mb));
	ASSERT_OK(weft_mutex_lock(&ma)); /* blocks: the main thread holds A */
	atomic_store(&t2_locked, 1);
	ASSERT_OK(weft_mutex_unlock(&ma));
	ASSERT_OK(weft_mutex_unlock(&mb));
	return NULL;
}

static void wait_for_inversions(uint64_t n)
{
	int64_t end = weft_now() + (int64_t)(5e9 * th_scale());
	while (inversions_counted() < n && weft_now() < end)
		th_sleep_ms(1);
	ASSERT_EQ(inversions_counted(), n);
}

TEST(weft_mutex_inversion_is_reported_before_the_thread_blocks)
{
	start();
	weft_mutex_options oa = {.name = "pred.A"}, ob = {.name = "pred.B"};
	ASSERT_OK(weft_mutex_init(&ma, &oa));
	ASSERT_OK(weft_mutex_init(&mb, &ob));
	on_thread(mutex_ab, NULL);
	ASSERT_OK(weft_mutex_lock(&ma));
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, mutex_ba, NULL), 0);
	/* A stays held until the report is in: it came from before the lock call waited */
	wait_for_inversions(1);
	ASSERT_EQ(atomic_load(&t2_locked), 0);
	ASSERT_OK(weft_mutex_unlock(&ma));
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(atomic_load(&t2_locked), 1);
	ASSERT_EQ(stop(), 1);
	const weft_watch_report *r = &reps[0];
	ASSERT_TRUE(r->order[0].held == &ma && r->order[0].acquired == &mb);
	ASSERT_TRUE(r->order[1].held == &mb && r->order[1].acquired == &ma);
	ASSERT_TRUE(stack_has(r->order[0].stack, r->order[0].nstack, "mutex_ab"));
	ASSERT_TRUE(stack_has(r->order[1].stack, r->order[1].nstack, "mutex_ba"));
	char *text = NULL;
	ASSERT_OK(weft_watch_report_text(r, &text));
	ASSERT_CONTAINS(text, "mutex_ab");
	ASSERT_CONTAINS(text, "mutex_ba");
	free(text);
	ASSERT_OK(weft_mutex_destroy(&ma));
	ASSERT_OK(weft_mutex_destroy(&mb));
}

static void *weft_trylock_backoff(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&ma));
	ASSERT_OK(weft_mutex_trylock(&mb));
	ASSERT_OK(weft_mutex_unlock(&mb));
	ASSERT_OK(weft_mutex_unlock(&ma));
	return NULL;
}

static void *weft_rd_then_a(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_rwlock_rdlock(&rwr));
	ASSERT_OK(weft_mutex_lock(&ma));
	ASSERT_OK(weft_mutex_unlock(&ma));
	ASSERT_OK(weft_rwlock_unlock(&rwr));
	return NULL;
}

static void *weft_a_then_rd(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&ma));
	ASSERT_OK(weft_rwlock_rdlock(&rwr));
	ASSERT_OK(weft_rwlock_unlock(&rwr));
	ASSERT_OK(weft_mutex_unlock(&ma));
	return NULL;
}

static void *weft_a_then_wr(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&ma));
	ASSERT_OK(weft_rwlock_wrlock(&rwr));
	ASSERT_OK(weft_rwlock_unlock(&rwr));
	ASSERT_OK(weft_mutex_unlock(&ma));
	return NULL;
}

static weft_cond cv;
static weft_mutex mm, ml;

static void *weft_cond_under_l(void *arg)
{
	(void)arg;
	/* M then L; wait on the condition with M: M is taken back while L is held */
	ASSERT_OK(weft_mutex_lock(&mm));
	ASSERT_OK(weft_mutex_lock(&ml));
	ASSERT_ERR(weft_cond_wait(&cv, &mm, weft_deadline_in(1000000)), -ETIMEDOUT);
	ASSERT_OK(weft_mutex_unlock(&ml));
	ASSERT_OK(weft_mutex_unlock(&mm));
	return NULL;
}

static void *weft_l_then_m(void *arg)
{
	(void)arg;
	ASSERT_OK(weft_mutex_lock(&ml));
	ASSERT_OK(weft_mutex_lock(&mm));
	ASSERT_OK(weft_mutex_unlock(&mm));
	ASSERT_OK(weft_mutex_unlock(&ml));
	return NULL;
}

TEST(weft_locks_trylock_and_readers_are_quiet_a_writer_is_not)
{
	start();
	ASSERT_OK(weft_mutex_init(&ma, NULL));
	ASSERT_OK(weft_mutex_init(&mb, NULL)); /* unnamed: classes by init site (two sites) */
	ASSERT_OK(weft_rwlock_init(&rwr, NULL));
	on_thread(weft_trylock_backoff, NULL);
	on_thread(mutex_ba, NULL); /* B then A blocking; A then B was only a trylock */
	on_thread(weft_rd_then_a, NULL);
	on_thread(weft_a_then_rd, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	struct weft__predict_stats s = stats();
	ASSERT_GE(s.excused_read, 1);
	ASSERT_EQ(s.edges, 3);           /* B -> A, R -> A, A -> R */
	on_thread(weft_a_then_wr, NULL); /* a writer of R under A: reported */
	ASSERT_EQ(stop(), 1);
	ASSERT_TRUE(reps[0].order[1].held == &ma && reps[0].order[1].acquired == &rwr);
	ASSERT_OK(weft_rwlock_destroy(&rwr));
	ASSERT_OK(weft_mutex_destroy(&ma));
	ASSERT_OK(weft_mutex_destroy(&mb));
}

TEST(weft_cond_wait_retake_is_quiet)
{
	start();
	weft_mutex_options om = {.name = "cond.M"}, ol = {.name = "cond.L"};
	ASSERT_OK(weft_mutex_init(&mm, &om));
	ASSERT_OK(weft_mutex_init(&ml, &ol));
	ASSERT_OK(weft_cond_init(&cv));
	on_thread(weft_cond_under_l, NULL);
	on_thread(weft_cond_under_l, NULL);
	ASSERT_EQ(inversions_counted(), 0);
	ASSERT_EQ(stats().edges, 1);    /* M -> L only */
	on_thread(weft_l_then_m, NULL); /* a real L then M is one */
	ASSERT_EQ(stop(), 1);
	ASSERT_OK(weft_cond_destroy(&cv));
	ASSERT_OK(weft_mutex_destroy(&mm));
	ASSERT_OK(weft_mutex_destroy(&ml));
}

/* ---- weft's own locks ---- */

#ifdef WEFT_DEBUG_LOCKS
/* Debug builds hand weft's ranked locks to the monitor: a registry's lock (rank "metrics") taken
 * under a program's lock, and the program's lock taken under the registry's (a function gauge
 * runs under it), is an inversion between weft and the program, reported with the rank's name. */
static weft_mutex user_lock = WEFT_MUTEX_INIT_NAMED("test.user");

static double gauge_takes_user_lock(void *arg)
{
	(void)arg;
	weft_mutex_lock(&user_lock);
	weft_mutex_unlock(&user_lock);
	return 1;
}

TEST(weft_internal_locks_are_checked_in_debug_builds)
{
	start();
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_gauge *g;
	ASSERT_OK(weft_metrics_gauge_fn(m, "t", "h", NULL, gauge_takes_user_lock, NULL, &g));
	char *text;
	size_t len;
	ASSERT_OK(weft_metrics_prometheus(m, &text, &len)); /* metrics, then test.user */
	free(text);
	ASSERT_EQ(inversions_counted(), 0);
	weft_mutex_lock(&user_lock); /* test.user, then metrics */
	weft_counter *c;
	ASSERT_OK(weft_metrics_counter(m, "c", "h", NULL, &c));
	weft_mutex_unlock(&user_lock);
	ASSERT_EQ(stop(), 1);
	const weft_watch_report *r = &reps[0];
	ASSERT_EQ(r->event, WEFT_WATCH_INVERSION);
	ASSERT_STR_EQ(r->order[0].held_class_name, "metrics");
	ASSERT_STR_EQ(r->order[0].acquired_class_name, "test.user");
	ASSERT_STR_EQ(r->order[1].held_class_name, "test.user");
	ASSERT_STR_EQ(r->order[1].acquired_class_name, "metrics");
	weft_metrics_destroy(m);
}
#endif
