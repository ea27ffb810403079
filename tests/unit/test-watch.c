/* The lock monitor's engine and weft's instrumented locks (src/watch/engine.c, src/watch/prim.c):
 * argument validation, the semantics and error codes of weft_mutex/rwlock/cond/sem, and the
 * monitor finding real deadlocks (two and three threads, an rwlock cycle, a self-deadlock, a
 * cycle across two processes through the shared registry), long lock waits and condition waits,
 * and staying quiet for plain contention. Deadlocked threads use timed locks with a deadline far
 * beyond the two scan periods a report needs, so every case ends. Timing bounds are generous and
 * scaled (WEFT_TEST_TIMEOUT_SCALE). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft/watch.h>

#include "harness.h"
#include "internal/alloc.h"
#include "internal/common.h"
#include "internal/watch.h"
#include "watch-test.h"

/* ---- helpers ---- */

static int64_t in_ms(double ms)
{
	return weft_deadline_in((int64_t)(ms * th_scale() * 1e6));
}

/* Wait (up to ms, scaled) for a report of event ev; copy it to out. 0 if none came. */
static int wait_report(weft_watch_event ev, double ms, weft_watch_report *out)
{
	int64_t end = in_ms(ms);
	for (;;) {
		pthread_mutex_lock(&rep_mu);
		for (int i = 0; i < nreps && i < MAX_REPORTS; i++) {
			if (reps[i].event == ev) {
				if (out)
					*out = reps[i];
				pthread_mutex_unlock(&rep_mu);
				return 1;
			}
		}
		pthread_mutex_unlock(&rep_mu);
		if (weft_now() > end)
			return 0;
		th_sleep_ms(5);
	}
}

static void start_monitor(int64_t scan_ns, int64_t long_ns, int64_t cond_ns)
{
	weft_watch_options o = {0};
	o.scan_ns = scan_ns;
	o.long_wait_ns = long_ns;
	o.cond_wait_ns = cond_ns;
	o.on_report = on_report;
	ASSERT_OK(weft_watch_start(&o));
}

/* Does one of the frames symbolize to a function whose name contains `name`? */
static int stack_has(void *const *frames, int n, const char *name)
{
	weft_symbolizer *s = NULL;
	ASSERT_OK(weft_symbolizer_create(&s));
	int found = 0;
	for (int i = 0; i < n && !found; i++) {
		const char *f = NULL;
		if (weft_symbolizer_lookup(s, frames[i], &f, NULL, NULL, NULL, NULL) == 0 && f &&
		    strstr(f, name))
			found = 1;
	}
	weft_symbolizer_destroy(s);
	return found;
}

static void join(pthread_t t)
{
	ASSERT_EQ(pthread_join(t, NULL), 0);
}

/* ---- argument validation ---- */

TEST(args)
{
	ASSERT_ERR(weft_watch_report_text(NULL, &(char *){NULL}), -EINVAL);
	weft_watch_report r = {.event = WEFT_WATCH_LONG_WAIT};
	ASSERT_ERR(weft_watch_report_text(&r, NULL), -EINVAL);
	ASSERT_ERR(weft_watch_report_json(NULL, &(char *){NULL}), -EINVAL);
	ASSERT_ERR(weft_watch_report_json(&r, NULL), -EINVAL);
	r.event = 0;
	ASSERT_ERR(weft_watch_report_json(&r, &(char *){NULL}), -EINVAL);
	r.event = WEFT_WATCH_LONG_WAIT;
	r.nthreads = WEFT_WATCH_MAX_THREADS + 1;
	ASSERT_ERR(weft_watch_report_text(&r, &(char *){NULL}), -EINVAL);

	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.scan_ns = -1}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.scan_ns = 999999}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.scan_ns = 61000000000}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.long_wait_ns = -2}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.cond_wait_ns = -2}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.profile_sample = -1}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.on_deadlock = 7}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.exit_code = 256}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.json_fd = -1}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.text_fd = -1}), -EINVAL);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.shm_fd = -1}), -EINVAL);
	/* an fd that is not a registry */
	int p[2];
	ASSERT_EQ(pipe(p), 0);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.shm_fd = p[0]}), -EINVAL);
	close(p[0]);
	close(p[1]);
	weft_watch_stop(); /* not running: nothing */

	ASSERT_ERR(weft_watch_get_counts(NULL), -EINVAL);
	ASSERT_ERR(weft_watch_shm_create(0, NULL), -EINVAL);
	ASSERT_ERR(weft_watch_shm_create(-1, &(int){0}), -EINVAL);
	ASSERT_ERR(weft_watch_shm_create(1 << 20, &(int){0}), -EINVAL);
	ASSERT_ERR(weft_watch_profile(NULL, 1, WEFT_WATCH_SORT_WAIT), -EINVAL);
	weft_watch_site site;
	ASSERT_ERR(weft_watch_profile(&site, -1, WEFT_WATCH_SORT_WAIT), -EINVAL);
	ASSERT_ERR(weft_watch_profile(&site, 1, 9), -EINVAL);
	ASSERT_EQ(weft_watch_profile(&site, 0, WEFT_WATCH_SORT_WAIT), 0);
	ASSERT_ERR(weft_watch_profile_text(10, NULL), -EINVAL);
	ASSERT_ERR(weft_watch_profile_text(-1, &(char *){NULL}), -EINVAL);

	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_DEADLOCK), "deadlock");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_SELF_DEADLOCK), "self-deadlock");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_INVERSION), "inversion");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_LONG_WAIT), "long-wait");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_COND_WAIT), "cond-wait");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_OWNER_DIED), "owner-died");
	ASSERT_STR_EQ(weft_watch_event_name(0), "?");
	ASSERT_STR_EQ(weft_watch_event_name(WEFT_WATCH_EVENT_COUNT), "?");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(WEFT_WATCH_LOCK_MUTEX), "mutex");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(WEFT_WATCH_LOCK_RDLOCK), "rdlock");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(WEFT_WATCH_LOCK_WRLOCK), "wrlock");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(WEFT_WATCH_LOCK_COND), "cond");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(WEFT_WATCH_LOCK_SEM), "sem");
	ASSERT_STR_EQ(weft_watch_lock_kind_name(99), "?");

	ASSERT_ERR(weft_mutex_init(NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_destroy(NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_lock(NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_trylock(NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_timedlock(NULL, -1), -EINVAL);
	weft_mutex m = WEFT_MUTEX_INIT;
	ASSERT_ERR(weft_mutex_timedlock(&m, -2), -EINVAL);
	ASSERT_ERR(weft_mutex_unlock(NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_consistent(NULL), -EINVAL);
	ASSERT_ERR(weft_mutex_consistent(&m), -EINVAL); /* not robust */

	ASSERT_ERR(weft_rwlock_init(NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_destroy(NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_rdlock(NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_wrlock(NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_tryrdlock(NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_trywrlock(NULL), -EINVAL);
	ASSERT_ERR(weft_rwlock_timedrdlock(NULL, -1), -EINVAL);
	ASSERT_ERR(weft_rwlock_timedwrlock(NULL, -1), -EINVAL);
	weft_rwlock l = WEFT_RWLOCK_INIT;
	ASSERT_ERR(weft_rwlock_timedrdlock(&l, -5), -EINVAL);
	ASSERT_ERR(weft_rwlock_timedwrlock(&l, -5), -EINVAL);
	ASSERT_ERR(weft_rwlock_unlock(NULL), -EINVAL);

	weft_cond c;
	ASSERT_ERR(weft_cond_init(NULL), -EINVAL);
	ASSERT_ERR(weft_cond_destroy(NULL), -EINVAL);
	ASSERT_OK(weft_cond_init(&c));
	ASSERT_ERR(weft_cond_wait(NULL, &m, -1), -EINVAL);
	ASSERT_ERR(weft_cond_wait(&c, NULL, -1), -EINVAL);
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_cond_wait(&c, &m, -3), -EINVAL);
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_ERR(weft_cond_signal(NULL), -EINVAL);
	ASSERT_ERR(weft_cond_broadcast(NULL), -EINVAL);
	ASSERT_OK(weft_cond_destroy(&c));

	weft_sem s;
	ASSERT_ERR(weft_sem_init(NULL, 0, 0), -EINVAL);
	ASSERT_ERR(weft_sem_init(&s, (unsigned)SEM_VALUE_MAX + 1u, 0), -EINVAL);
	ASSERT_ERR(weft_sem_destroy(NULL), -EINVAL);
	ASSERT_ERR(weft_sem_wait(NULL, -1), -EINVAL);
	ASSERT_OK(weft_sem_init(&s, 0, 0));
	ASSERT_ERR(weft_sem_wait(&s, -2), -EINVAL);
	ASSERT_ERR(weft_sem_trywait(NULL), -EINVAL);
	ASSERT_ERR(weft_sem_post(NULL), -EINVAL);
	ASSERT_ERR(weft_sem_value(NULL, &(int){0}), -EINVAL);
	ASSERT_ERR(weft_sem_value(&s, NULL), -EINVAL);
	ASSERT_OK(weft_sem_destroy(&s));
}

/* ---- lock semantics ---- */

struct other {
	weft_mutex *m;
	weft_rwlock *l;
	int r;
};

static void *unlock_other(void *p)
{
	struct other *o = p;
	o->r = o->m ? weft_mutex_unlock(o->m) : weft_rwlock_unlock(o->l);
	return NULL;
}

static void *trylock_other(void *p)
{
	struct other *o = p;
	o->r = weft_mutex_trylock(o->m);
	return NULL;
}

static void mutex_semantics(int monitor)
{
	if (monitor)
		start_monitor(20000000, -1, -1);
	weft_mutex m;
	ASSERT_OK(weft_mutex_init(&m, NULL));
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	ASSERT_ERR(weft_mutex_trylock(&m), -EBUSY);
	ASSERT_ERR(weft_mutex_destroy(&m), -EBUSY);
	pthread_t t;
	struct other o = {.m = &m};
	ASSERT_EQ(pthread_create(&t, NULL, unlock_other, &o), 0);
	join(t);
	ASSERT_ERR(o.r, -EPERM);
	ASSERT_EQ(pthread_create(&t, NULL, trylock_other, &o), 0);
	join(t);
	ASSERT_ERR(o.r, -EBUSY);
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_ERR(weft_mutex_unlock(&m), -EPERM);
	ASSERT_OK(weft_mutex_timedlock(&m, in_ms(1000)));
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_OK(weft_mutex_destroy(&m));

	weft_mutex r;
	ASSERT_OK(weft_mutex_init(&r, &(weft_mutex_options){.recursive = 1, .name = "rec"}));
	ASSERT_OK(weft_mutex_lock(&r));
	ASSERT_OK(weft_mutex_lock(&r));
	ASSERT_OK(weft_mutex_trylock(&r));
	ASSERT_OK(weft_mutex_unlock(&r));
	ASSERT_OK(weft_mutex_unlock(&r));
	ASSERT_OK(weft_mutex_unlock(&r));
	ASSERT_ERR(weft_mutex_unlock(&r), -EPERM);
	ASSERT_OK(weft_mutex_destroy(&r));

	weft_mutex s = WEFT_MUTEX_INIT;
	ASSERT_OK(weft_mutex_trylock(&s));
	ASSERT_ERR(weft_mutex_lock(&s), -EDEADLK);
	ASSERT_OK(weft_mutex_unlock(&s));
	if (monitor)
		weft_watch_stop();
}

TEST(mutex_semantics)
{
	mutex_semantics(0);
}

TEST(mutex_semantics_monitored)
{
	mutex_semantics(1);
	/* the relocks above were self-deadlocks, reported */
	weft_watch_counts c;
	ASSERT_OK(weft_watch_get_counts(&c));
	ASSERT_GE(c.by_event[WEFT_WATCH_SELF_DEADLOCK], 2);
}

struct holder {
	weft_mutex *m;
	pthread_barrier_t *go;
	int64_t hold_ms;
};

static void *hold_for(void *p)
{
	struct holder *h = p;
	ASSERT_OK(weft_mutex_lock(h->m));
	pthread_barrier_wait(h->go);
	th_sleep_ms(h->hold_ms);
	ASSERT_OK(weft_mutex_unlock(h->m));
	return NULL;
}

TEST(mutex_timedlock_times_out)
{
	for (int monitor = 0; monitor < 2; monitor++) {
		if (monitor)
			start_monitor(20000000, -1, -1);
		weft_mutex m = WEFT_MUTEX_INIT;
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, 2);
		struct holder h = {&m, &go, (int64_t)(300 * th_scale())};
		pthread_t t;
		ASSERT_EQ(pthread_create(&t, NULL, hold_for, &h), 0);
		pthread_barrier_wait(&go);
		int64_t t0 = weft_now();
		ASSERT_ERR(weft_mutex_timedlock(&m, weft_deadline_in(50000000)), -ETIMEDOUT);
		ASSERT_GE(weft_now() - t0, 49000000);
		ASSERT_ERR(weft_mutex_timedlock(&m, 0), -ETIMEDOUT); /* a deadline in the past */
		/* a wait that gets it */
		ASSERT_OK(weft_mutex_timedlock(&m, in_ms(5000)));
		ASSERT_OK(weft_mutex_unlock(&m));
		join(t);
		pthread_barrier_destroy(&go);
		if (monitor)
			weft_watch_stop();
	}
}

static void *die_holding(void *p)
{
	ASSERT_OK(weft_mutex_lock(p));
	return NULL;
}

TEST(mutex_robust_thread_dies)
{
	start_monitor(20000000, -1, -1);
	weft_mutex m;
	ASSERT_OK(weft_mutex_init(&m, &(weft_mutex_options){.robust = 1}));
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, die_holding, &m), 0);
	join(t);
	ASSERT_ERR(weft_mutex_lock(&m), -EOWNERDEAD);
	ASSERT_OK(weft_mutex_consistent(&m));
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_OK(weft_mutex_unlock(&m));
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_OWNER_DIED, 5000, &r));
	ASSERT_EQ(r.nthreads, 1);
	ASSERT_EQ(r.threads[0].tid, gettid_());
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&m);
	weft_watch_stop();
	/* unrecovered: the next locker gets ENOTRECOVERABLE */
	ASSERT_EQ(pthread_create(&t, NULL, die_holding, &m), 0);
	join(t);
	ASSERT_ERR(weft_mutex_trylock(&m), -EOWNERDEAD);
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -ENOTRECOVERABLE);
	ASSERT_OK(weft_mutex_destroy(&m));
}

TEST(mutex_robust_process_dies)
{
	weft_mutex *m =
	        mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(m != MAP_FAILED);
	ASSERT_OK(weft_mutex_init(m, &(weft_mutex_options){.robust = 1, .pshared = 1}));
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		_exit(weft_mutex_lock(m) == 0 ? 0 : 1);
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_ERR(weft_mutex_timedlock(m, in_ms(5000)), -EOWNERDEAD);
	ASSERT_OK(weft_mutex_consistent(m));
	ASSERT_OK(weft_mutex_unlock(m));
	ASSERT_OK(weft_mutex_destroy(m));
	munmap(m, sizeof(*m));
}

static void *rd_other(void *p)
{
	struct other *o = p;
	o->r = weft_rwlock_tryrdlock(o->l);
	if (o->r == 0)
		ASSERT_OK(weft_rwlock_unlock(o->l));
	return NULL;
}

static void *wr_other(void *p)
{
	struct other *o = p;
	o->r = weft_rwlock_timedwrlock(o->l, weft_deadline_in(30000000));
	if (o->r == 0)
		ASSERT_OK(weft_rwlock_unlock(o->l));
	return NULL;
}

TEST(rwlock_semantics)
{
	for (int monitor = 0; monitor < 2; monitor++) {
		if (monitor)
			start_monitor(20000000, -1, -1);
		weft_rwlock l;
		ASSERT_OK(weft_rwlock_init(&l, &(weft_rwlock_options){.name = "rw"}));
		struct other o = {.l = &l};
		pthread_t t;
		/* readers share */
		ASSERT_OK(weft_rwlock_rdlock(&l));
		ASSERT_OK(weft_rwlock_tryrdlock(&l));
		ASSERT_EQ(pthread_create(&t, NULL, rd_other, &o), 0);
		join(t);
		ASSERT_OK(o.r);
		ASSERT_ERR(weft_rwlock_trywrlock(&l), -EBUSY);
		ASSERT_EQ(pthread_create(&t, NULL, wr_other, &o), 0);
		join(t);
		ASSERT_ERR(o.r, -ETIMEDOUT);
		/* another thread that holds nothing cannot unlock */
		ASSERT_EQ(pthread_create(&t, NULL, unlock_other, &o), 0);
		join(t);
		ASSERT_ERR(o.r, -EPERM);
		ASSERT_OK(weft_rwlock_unlock(&l));
		ASSERT_OK(weft_rwlock_unlock(&l));
		ASSERT_ERR(weft_rwlock_unlock(&l), -EPERM);
		/* a writer excludes */
		ASSERT_OK(weft_rwlock_wrlock(&l));
		ASSERT_ERR(weft_rwlock_rdlock(&l), -EDEADLK);
		ASSERT_ERR(weft_rwlock_wrlock(&l), -EDEADLK);
		ASSERT_ERR(weft_rwlock_destroy(&l), -EBUSY);
		ASSERT_EQ(pthread_create(&t, NULL, rd_other, &o), 0);
		join(t);
		ASSERT_ERR(o.r, -EBUSY);
		ASSERT_EQ(pthread_create(&t, NULL, unlock_other, &o), 0);
		join(t);
		ASSERT_ERR(o.r, -EPERM);
		ASSERT_OK(weft_rwlock_unlock(&l));
		ASSERT_OK(weft_rwlock_timedwrlock(&l, in_ms(1000)));
		ASSERT_OK(weft_rwlock_unlock(&l));
		ASSERT_OK(weft_rwlock_timedrdlock(&l, in_ms(1000)));
		ASSERT_OK(weft_rwlock_unlock(&l));
		ASSERT_OK(weft_rwlock_destroy(&l));

		weft_rwlock w = WEFT_RWLOCK_INIT;
		ASSERT_OK(weft_rwlock_trywrlock(&w));
		ASSERT_OK(weft_rwlock_unlock(&w));
		weft_rwlock pw;
		ASSERT_OK(weft_rwlock_init(&pw, &(weft_rwlock_options){.prefer_writer = 1}));
		ASSERT_OK(weft_rwlock_rdlock(&pw));
		ASSERT_OK(weft_rwlock_unlock(&pw));
		ASSERT_OK(weft_rwlock_destroy(&pw));
		if (monitor)
			weft_watch_stop();
	}
}

struct condpair {
	weft_mutex m;
	weft_cond c;
	int flag;
};

static void *signal_later(void *p)
{
	struct condpair *cp = p;
	th_sleep_ms(20);
	ASSERT_OK(weft_mutex_lock(&cp->m));
	cp->flag = 1;
	ASSERT_OK(weft_cond_signal(&cp->c));
	ASSERT_OK(weft_mutex_unlock(&cp->m));
	return NULL;
}

static void *try_cond_unheld(void *p)
{
	struct condpair *cp = p;
	ASSERT_ERR(weft_cond_wait(&cp->c, &cp->m, in_ms(10)), -EPERM);
	return NULL;
}

TEST(cond_semantics)
{
	for (int monitor = 0; monitor < 2; monitor++) {
		nreps = 0;
		if (monitor)
			start_monitor(10000000, -1, 500000000);
		struct condpair cp = {.m = WEFT_MUTEX_INIT};
		ASSERT_OK(weft_cond_init(&cp.c));
		ASSERT_ERR(weft_cond_wait(&cp.c, &cp.m, -1), -EPERM);
		ASSERT_OK(weft_mutex_lock(&cp.m));
		pthread_t t;
		ASSERT_EQ(pthread_create(&t, NULL, try_cond_unheld, &cp), 0);
		join(t);
		int64_t t0 = weft_now();
		ASSERT_ERR(weft_cond_wait(&cp.c, &cp.m, weft_deadline_in(30000000)), -ETIMEDOUT);
		ASSERT_GE(weft_now() - t0, 29000000);
		ASSERT_ERR(weft_mutex_trylock(&cp.m), -EBUSY); /* held again */
		ASSERT_EQ(pthread_create(&t, NULL, signal_later, &cp), 0);
		while (!cp.flag) {
			int r = weft_cond_wait(&cp.c, &cp.m, in_ms(5000));
			ASSERT_TRUE(r == 0 || r == -ETIMEDOUT);
		}
		ASSERT_OK(weft_mutex_unlock(&cp.m));
		join(t);
		ASSERT_OK(weft_cond_broadcast(&cp.c));
		ASSERT_OK(weft_cond_destroy(&cp.c));
		if (monitor) {
			/* a signalled wait is no report, even a few scans later */
			th_sleep_ms(600);
			weft_watch_stop();
			ASSERT_EQ(count_reports(WEFT_WATCH_COND_WAIT), 0);
		}
	}
}

static void *post_later(void *p)
{
	th_sleep_ms(20);
	ASSERT_OK(weft_sem_post(p));
	return NULL;
}

TEST(sem_semantics)
{
	for (int monitor = 0; monitor < 2; monitor++) {
		if (monitor)
			start_monitor(10000000, -1, -1);
		weft_sem s;
		ASSERT_OK(weft_sem_init(&s, 1, 0));
		int v = -1;
		ASSERT_OK(weft_sem_value(&s, &v));
		ASSERT_EQ(v, 1);
		ASSERT_OK(weft_sem_trywait(&s));
		ASSERT_ERR(weft_sem_trywait(&s), -EAGAIN);
		ASSERT_ERR(weft_sem_wait(&s, weft_deadline_in(20000000)), -ETIMEDOUT);
		pthread_t t;
		ASSERT_EQ(pthread_create(&t, NULL, post_later, &s), 0);
		ASSERT_OK(weft_sem_wait(&s, in_ms(5000)));
		join(t);
		ASSERT_EQ(pthread_create(&t, NULL, post_later, &s), 0);
		ASSERT_OK(weft_sem_wait(&s, -1));
		join(t);
		ASSERT_OK(weft_sem_post(&s));
		ASSERT_OK(weft_sem_post(&s));
		ASSERT_OK(weft_sem_value(&s, &v));
		ASSERT_EQ(v, 2);
		ASSERT_OK(weft_sem_destroy(&s));
		ASSERT_OK(weft_sem_init(&s, SEM_VALUE_MAX, 0));
		ASSERT_ERR(weft_sem_post(&s), -EOVERFLOW);
		ASSERT_OK(weft_sem_destroy(&s));
		if (monitor)
			weft_watch_stop();
	}
}

/* ---- deadlocks ---- */

#define NCYC 3
struct cyc {
	weft_mutex m[NCYC];
	pthread_barrier_t held;
	int n;
	int64_t deadline;
	pid_t tid[NCYC];
};
struct cyc_arg {
	struct cyc *c;
	int i;
	int r;
};

static __attribute__((noinline)) void *deadlock_thread(void *p)
{
	struct cyc_arg *a = p;
	struct cyc *c = a->c;
	c->tid[a->i] = gettid_();
	ASSERT_OK(weft_mutex_lock(&c->m[a->i]));
	pthread_barrier_wait(&c->held);
	a->r = weft_mutex_timedlock(&c->m[(a->i + 1) % c->n], c->deadline);
	if (a->r == 0)
		ASSERT_OK(weft_mutex_unlock(&c->m[(a->i + 1) % c->n]));
	ASSERT_OK(weft_mutex_unlock(&c->m[a->i]));
	__asm__ volatile("" ::: "memory");
	return NULL;
}

/* n threads, thread i holds m[i] and waits for m[i+1]: a cycle, until the deadline. */
static void run_cycle(int n, weft_watch_report *out)
{
	struct cyc c;
	memset(&c, 0, sizeof(c));
	c.n = n;
	for (int i = 0; i < n; i++)
		ASSERT_OK(weft_mutex_init(&c.m[i], NULL));
	pthread_barrier_init(&c.held, NULL, (unsigned)n);
	c.deadline = in_ms(1500);
	struct cyc_arg a[NCYC];
	pthread_t t[NCYC];
	for (int i = 0; i < n; i++) {
		a[i] = (struct cyc_arg){&c, i, 0};
		ASSERT_EQ(pthread_create(&t[i], NULL, deadlock_thread, &a[i]), 0);
	}
	int got = wait_report(WEFT_WATCH_DEADLOCK, 3000, out);
	for (int i = 0; i < n; i++)
		join(t[i]);
	ASSERT_TRUE(got);
	/* the report came before the deadline broke the cycle */
	ASSERT_LT(out->time_ns, c.deadline);
	ASSERT_EQ(out->nthreads, n);
	ASSERT_EQ(out->more_threads, 0);
	/* timed waits: a real cycle while it lasts, but one that ends by itself */
	ASSERT_EQ(out->ends, 1);
	for (int k = 0; k < n; k++) {
		const weft_watch_thread *th = &out->threads[k];
		int i = -1;
		for (int j = 0; j < n; j++)
			if (c.tid[j] == th->tid)
				i = j;
		ASSERT_GE(i, 0);
		ASSERT_EQ(th->pid, getpid());
		ASSERT_EQ(th->wait_kind, WEFT_WATCH_LOCK_MUTEX);
		/* waits for m[i+1], owned by the thread that comes next in the report */
		ASSERT_TRUE(th->waits_for == (const void *)&c.m[(i + 1) % n]);
		ASSERT_EQ(th->deadline_ns, c.deadline);
		ASSERT_EQ(th->error, 0);
		ASSERT_EQ(th->owner_tid, c.tid[(i + 1) % n]);
		ASSERT_EQ(out->threads[(k + 1) % n].tid, c.tid[(i + 1) % n]);
		ASSERT_GT(th->waited_ns, 0);
		ASSERT_NOT_NULL(th->wait_site);
		ASSERT_EQ(th->nholds, 1);
		ASSERT_TRUE(th->holds[0] == (const void *)&c.m[i]);
		ASSERT_GT(th->nstack, 0);
		ASSERT_TRUE(stack_has(th->stack, th->nstack, "deadlock_thread"));
	}
	for (int i = 0; i < n; i++) {
		ASSERT_ERR(a[i].r == -ETIMEDOUT || a[i].r == 0 ? 0 : a[i].r, 0);
		ASSERT_OK(weft_mutex_destroy(&c.m[i]));
	}
	pthread_barrier_destroy(&c.held);
}

TEST(deadlock_two_threads)
{
	start_monitor(20000000, -1, -1);
	weft_watch_report r;
	run_cycle(2, &r);
	weft_watch_stop();
	/* reported once */
	ASSERT_EQ(count_reports(WEFT_WATCH_DEADLOCK), 1);
}

TEST(deadlock_three_threads)
{
	start_monitor(20000000, -1, -1);
	weft_watch_report r;
	run_cycle(3, &r);
	weft_watch_stop();
	ASSERT_EQ(count_reports(WEFT_WATCH_DEADLOCK), 1);
}

TEST(deadlock_json_and_text)
{
	int jp[2], tp[2];
	ASSERT_EQ(pipe2(jp, O_CLOEXEC), 0);
	ASSERT_EQ(pipe2(tp, O_CLOEXEC), 0);
	ASSERT_EQ(fcntl(jp[0], F_SETPIPE_SZ, 1 << 20) > 0, 1);
	ASSERT_EQ(fcntl(tp[0], F_SETPIPE_SZ, 1 << 20) > 0, 1);
	weft_metrics *mx = NULL;
	ASSERT_OK(weft_metrics_create(&mx, NULL));
	weft_watch_options o = {.scan_ns = 20000000,
	                        .long_wait_ns = -1,
	                        .cond_wait_ns = -1,
	                        .on_report = on_report,
	                        .json_fd = jp[1],
	                        .text_fd = tp[1],
	                        .metrics = mx};
	ASSERT_OK(weft_watch_start(&o));
	weft_watch_report r;
	run_cycle(2, &r);
	weft_watch_stop();
	close(jp[1]);
	close(tp[1]);
	static char buf[1 << 20];
	ssize_t n = read(jp[0], buf, sizeof(buf) - 1);
	ASSERT_GT(n, 0);
	buf[n] = '\0';
	/* one line, one object */
	ASSERT_EQ(buf[0], '{');
	ASSERT_EQ(buf[n - 1], '\n');
	ASSERT_EQ(buf[n - 2], '}');
	ASSERT_TRUE(strchr(buf, '\n') == buf + n - 1);
	int depth = 0, maxd = 0, instr = 0;
	for (ssize_t i = 0; i < n; i++) {
		char ch = buf[i];
		if (instr) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				instr = 0;
			continue;
		}
		if (ch == '"')
			instr = 1;
		else if (ch == '{' || ch == '[')
			depth++, maxd = depth > maxd ? depth : maxd;
		else if (ch == '}' || ch == ']')
			depth--;
		ASSERT_GE(depth, 0);
	}
	ASSERT_EQ(depth, 0);
	ASSERT_GE(maxd, 4);
	ASSERT_CONTAINS(buf, "\"event\":\"deadlock\"");
	ASSERT_CONTAINS(buf, "\"ends\":true");
	ASSERT_CONTAINS(buf, "\"deadline_ns\":");
	ASSERT_CONTAINS(buf, "\"error\":null");
	ASSERT_CONTAINS(buf, "\"stack_from_site\":false");
	char pidf[64];
	snprintf(pidf, sizeof(pidf), "\"pid\":%d", (int)getpid());
	ASSERT_CONTAINS(buf, pidf);
	char tidf[64];
	snprintf(tidf, sizeof(tidf), "\"tid\":%d", (int)r.threads[0].tid);
	ASSERT_CONTAINS(buf, tidf);
	snprintf(tidf, sizeof(tidf), "\"owner_tid\":%d", (int)r.threads[1].tid);
	ASSERT_CONTAINS(buf, tidf);
	ASSERT_CONTAINS(buf, "\"wait_kind\":\"mutex\"");
	ASSERT_CONTAINS(buf, "\"waits_for\":\"0x");
	ASSERT_CONTAINS(buf, "\"waited_ns\":");
	ASSERT_CONTAINS(buf, "\"wait_site\":{\"pc\":\"0x");
	ASSERT_CONTAINS(buf, "\"holds\":[\"0x");
	ASSERT_CONTAINS(buf, "\"stack\":[{\"pc\":");
	ASSERT_CONTAINS(buf, "\"func\":\"deadlock_thread\"");
	ASSERT_CONTAINS(buf, "\"seq\":");
	ASSERT_CONTAINS(buf, "\"time_ns\":");
	close(jp[0]);

	n = read(tp[0], buf, sizeof(buf) - 1);
	ASSERT_GT(n, 0);
	buf[n] = '\0';
	ASSERT_CONTAINS(buf, "weft watch: deadlock");
	char tl[64];
	snprintf(tl, sizeof(tl), "thread %d", (int)r.threads[0].tid);
	ASSERT_CONTAINS(buf, tl);
	snprintf(tl, sizeof(tl), "owned by thread %d", (int)r.threads[0].owner_tid);
	ASSERT_CONTAINS(buf, tl);
	ASSERT_CONTAINS(buf, "waits for mutex 0x");
	ASSERT_CONTAINS(buf, "(ends at its deadline)");
	ASSERT_CONTAINS(buf, "this wait ends by itself");
	ASSERT_CONTAINS(buf, "deadlock_thread");
	ASSERT_CONTAINS(buf, "stack:");
	close(tp[0]);

	/* the public formatters give the same shape */
	char *t = NULL;
	ASSERT_OK(weft_watch_report_text(&r, &t));
	ASSERT_CONTAINS(t, "deadlock_thread");
	free(t);
	ASSERT_OK(weft_watch_report_json(&r, &t));
	ASSERT_EQ(t[0], '{');
	ASSERT_EQ(t[strlen(t) - 1], '}');
	ASSERT_CONTAINS(t, "\"event\":\"deadlock\"");
	free(t);

	/* metrics were counted (and removed at stop) */
	ASSERT_EQ(weft_metrics_size(mx), 0);
	weft_metrics_destroy(mx);
}

static __attribute__((noinline)) void fake_site(void)
{
	__asm__ volatile("" ::: "memory");
}

TEST(inversion_formats)
{
	/* an inversion report as prediction mode makes it: both orders with their stacks */
	weft_watch_report r;
	memset(&r, 0, sizeof(r));
	r.event = WEFT_WATCH_INVERSION;
	r.seq = 7;
	r.nthreads = 1;
	r.threads[0].tid = gettid_();
	r.threads[0].pid = getpid();
	int a = 0, b = 0;
	for (int i = 0; i < 2; i++) {
		weft_watch_order *o = &r.order[i];
		o->tid = gettid_();
		o->held = i ? (void *)&b : (void *)&a;
		o->acquired = i ? (void *)&a : (void *)&b;
		o->held_class_site = (void *)((char *)fake_site + 1);
		o->acquired_class_site = (void *)((char *)fake_site + 2);
		o->nstack = weft__watch_stack(o->stack, WEFT_WATCH_MAX_FRAMES, 0, NULL);
		ASSERT_GT(o->nstack, 0);
	}
	char *t = NULL;
	ASSERT_OK(weft_watch_report_json(&r, &t));
	ASSERT_CONTAINS(t, "\"event\":\"inversion\"");
	ASSERT_CONTAINS(t, "\"order\":[{\"tid\":");
	ASSERT_CONTAINS(t, "\"held_class\":{\"pc\":");
	ASSERT_CONTAINS(t, "\"func\":\"fake_site\"");
	ASSERT_CONTAINS(t, "\"func\":\"th_case_inversion_formats\"");
	free(t);
	ASSERT_OK(weft_watch_report_text(&r, &t));
	ASSERT_CONTAINS(t, "weft watch: inversion");
	ASSERT_CONTAINS(t, "first order");
	ASSERT_CONTAINS(t, "now, reversed");
	ASSERT_CONTAINS(t, "fake_site");
	ASSERT_CONTAINS(t, "th_case_inversion_formats");
	free(t);
}

TEST(metrics_counted)
{
	weft_metrics *mx = NULL;
	ASSERT_OK(weft_metrics_create(&mx, NULL));
	weft_watch_options o = {.scan_ns = 10000000, .on_report = on_report, .metrics = mx};
	ASSERT_OK(weft_watch_start(&o));
	weft_mutex m = WEFT_MUTEX_INIT;
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	ASSERT_OK(weft_mutex_unlock(&m));
	char *text =
	        th_wait_for_metrics(mx, "weft_watch_reports_total{event=\"self-deadlock\"} 1", 5);
	ASSERT_CONTAINS(text, "weft_watch_reports_total{event=\"deadlock\"} 0");
	ASSERT_CONTAINS(text, "weft_watch_records");
	ASSERT_CONTAINS(text, "weft_watch_waits");
	free(text);
	weft_watch_stop();
	weft_metrics_destroy(mx);
}

TEST(self_deadlock)
{
	start_monitor(20000000, -1, -1);
	weft_mutex m;
	ASSERT_OK(weft_mutex_init(&m, &(weft_mutex_options){.recursive = 0}));
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_SELF_DEADLOCK, 5000, &r));
	ASSERT_EQ(r.nthreads, 1);
	ASSERT_EQ(r.threads[0].tid, gettid_());
	ASSERT_EQ(r.threads[0].owner_tid, gettid_());
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&m);
	ASSERT_EQ(r.threads[0].wait_kind, WEFT_WATCH_LOCK_MUTEX);
	/* the relock returned at once: reported, as one that ends by itself */
	ASSERT_EQ(r.threads[0].error, EDEADLK);
	ASSERT_EQ(r.threads[0].deadline_ns, 0);
	ASSERT_EQ(r.ends, 1);
	ASSERT_GT(r.threads[0].nstack, 0);
	ASSERT_TRUE(stack_has(r.threads[0].stack, r.threads[0].nstack, "th_case_self_deadlock"));
	char *text = NULL;
	ASSERT_OK(weft_watch_report_text(&r, &text));
	ASSERT_CONTAINS(text, "(the call returned EDEADLK)");
	free(text);
	ASSERT_OK(weft_watch_report_json(&r, &text));
	ASSERT_CONTAINS(text, "\"ends\":true");
	ASSERT_CONTAINS(text, "\"error\":\"EDEADLK\"");
	free(text);
	ASSERT_OK(weft_mutex_unlock(&m));
	ASSERT_OK(weft_mutex_destroy(&m));
	weft_watch_stop();
}

struct rwcyc {
	weft_rwlock l;
	weft_mutex m;
	pthread_barrier_t held;
	int64_t deadline;
	pid_t writer, reader;
	int wr, rr;
};

static __attribute__((noinline)) void *rw_writer_thread(void *p)
{
	struct rwcyc *c = p;
	c->writer = gettid_();
	ASSERT_OK(weft_mutex_lock(&c->m));
	pthread_barrier_wait(&c->held);
	c->wr = weft_rwlock_timedwrlock(&c->l, c->deadline);
	if (c->wr == 0)
		ASSERT_OK(weft_rwlock_unlock(&c->l));
	ASSERT_OK(weft_mutex_unlock(&c->m));
	return NULL;
}

static __attribute__((noinline)) void *rw_reader_thread(void *p)
{
	struct rwcyc *c = p;
	c->reader = gettid_();
	ASSERT_OK(weft_rwlock_rdlock(&c->l));
	pthread_barrier_wait(&c->held);
	c->rr = weft_mutex_timedlock(&c->m, c->deadline);
	if (c->rr == 0)
		ASSERT_OK(weft_mutex_unlock(&c->m));
	ASSERT_OK(weft_rwlock_unlock(&c->l));
	return NULL;
}

TEST(deadlock_rwlock)
{
	start_monitor(20000000, -1, -1);
	struct rwcyc c;
	memset(&c, 0, sizeof(c));
	ASSERT_OK(weft_rwlock_init(&c.l, NULL));
	ASSERT_OK(weft_mutex_init(&c.m, NULL));
	pthread_barrier_init(&c.held, NULL, 2);
	c.deadline = in_ms(1500);
	pthread_t w, rd;
	ASSERT_EQ(pthread_create(&w, NULL, rw_writer_thread, &c), 0);
	ASSERT_EQ(pthread_create(&rd, NULL, rw_reader_thread, &c), 0);
	weft_watch_report r;
	int got = wait_report(WEFT_WATCH_DEADLOCK, 3000, &r);
	join(w);
	join(rd);
	weft_watch_stop();
	ASSERT_TRUE(got);
	ASSERT_LT(r.time_ns, c.deadline);
	ASSERT_EQ(r.nthreads, 2);
	int wi = r.threads[0].tid == c.writer ? 0 : 1;
	const weft_watch_thread *tw = &r.threads[wi], *tr = &r.threads[1 - wi];
	ASSERT_EQ(tw->tid, c.writer);
	ASSERT_EQ(tr->tid, c.reader);
	ASSERT_EQ(tw->wait_kind, WEFT_WATCH_LOCK_WRLOCK);
	ASSERT_TRUE(tw->waits_for == (const void *)&c.l);
	ASSERT_EQ(tw->owner_tid, c.reader);
	ASSERT_EQ(tr->wait_kind, WEFT_WATCH_LOCK_MUTEX);
	ASSERT_TRUE(tr->waits_for == (const void *)&c.m);
	ASSERT_EQ(tr->owner_tid, c.writer);
	ASSERT_TRUE(stack_has(tw->stack, tw->nstack, "rw_writer_thread"));
	ASSERT_TRUE(stack_has(tr->stack, tr->nstack, "rw_reader_thread"));
	ASSERT_OK(weft_rwlock_destroy(&c.l));
	ASSERT_OK(weft_mutex_destroy(&c.m));
	pthread_barrier_destroy(&c.held);
}

struct waiter {
	weft_mutex *m;
	struct condpair *cp;
	weft_sem *s;
	pid_t tid;
	int r;
};

static void *lock_waiter(void *p)
{
	struct waiter *w = p;
	w->tid = gettid_();
	w->r = weft_mutex_timedlock(w->m, in_ms(5000));
	if (w->r == 0)
		ASSERT_OK(weft_mutex_unlock(w->m));
	return NULL;
}

static void *cond_waiter(void *p)
{
	struct waiter *w = p;
	w->tid = gettid_();
	ASSERT_OK(weft_mutex_lock(&w->cp->m));
	while (!w->cp->flag) {
		w->r = weft_cond_wait(&w->cp->c, &w->cp->m, in_ms(5000));
		if (w->r)
			break;
	}
	ASSERT_OK(weft_mutex_unlock(&w->cp->m));
	return NULL;
}

static void *sem_waiter(void *p)
{
	struct waiter *w = p;
	w->tid = gettid_();
	w->r = weft_sem_wait(w->s, in_ms(5000));
	return NULL;
}

TEST(long_waits)
{
	start_monitor(10000000, 50000000, 50000000);
	/* a lock wait */
	weft_mutex m = WEFT_MUTEX_INIT;
	ASSERT_OK(weft_mutex_lock(&m));
	struct waiter w = {.m = &m};
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, lock_waiter, &w), 0);
	weft_watch_report r;
	int got = wait_report(WEFT_WATCH_LONG_WAIT, 3000, &r);
	ASSERT_OK(weft_mutex_unlock(&m));
	join(t);
	ASSERT_TRUE(got);
	ASSERT_OK(w.r);
	ASSERT_EQ(r.nthreads, 1);
	ASSERT_EQ(r.threads[0].tid, w.tid);
	ASSERT_EQ(r.threads[0].owner_tid, gettid_());
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&m);
	ASSERT_GE(r.threads[0].waited_ns, 50000000);
	ASSERT_TRUE(stack_has(r.threads[0].stack, r.threads[0].nstack, "lock_waiter"));

	/* a condition wait */
	struct condpair cp = {.m = WEFT_MUTEX_INIT};
	ASSERT_OK(weft_cond_init(&cp.c));
	struct waiter cw = {.cp = &cp};
	ASSERT_EQ(pthread_create(&t, NULL, cond_waiter, &cw), 0);
	got = wait_report(WEFT_WATCH_COND_WAIT, 3000, &r);
	ASSERT_OK(weft_mutex_lock(&cp.m));
	cp.flag = 1;
	ASSERT_OK(weft_cond_signal(&cp.c));
	ASSERT_OK(weft_mutex_unlock(&cp.m));
	join(t);
	ASSERT_TRUE(got);
	ASSERT_OK(cw.r);
	ASSERT_EQ(r.threads[0].tid, cw.tid);
	ASSERT_EQ(r.threads[0].wait_kind, WEFT_WATCH_LOCK_COND);
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&cp.c);
	ASSERT_TRUE(stack_has(r.threads[0].stack, r.threads[0].nstack, "cond_waiter"));
	ASSERT_OK(weft_cond_destroy(&cp.c));

	/* a semaphore wait is a lock wait too */
	weft_sem s;
	ASSERT_OK(weft_sem_init(&s, 0, 0));
	struct waiter sw = {.s = &s};
	ASSERT_EQ(pthread_create(&t, NULL, sem_waiter, &sw), 0);
	int64_t end = in_ms(3000);
	int found = 0;
	while (!found && weft_now() < end) {
		pthread_mutex_lock(&rep_mu);
		for (int i = 0; i < nreps && i < MAX_REPORTS; i++)
			found |= reps[i].event == WEFT_WATCH_LONG_WAIT &&
			         reps[i].threads[0].wait_kind == WEFT_WATCH_LOCK_SEM;
		pthread_mutex_unlock(&rep_mu);
		th_sleep_ms(5);
	}
	ASSERT_OK(weft_sem_post(&s));
	join(t);
	ASSERT_TRUE(found);
	ASSERT_OK(sw.r);
	ASSERT_OK(weft_sem_destroy(&s));
	weft_watch_stop();
	/* each wait once */
	ASSERT_EQ(count_reports(WEFT_WATCH_COND_WAIT), 1);
	ASSERT_EQ(count_reports(WEFT_WATCH_LONG_WAIT), 2);
}

struct hammer {
	weft_mutex *m;
	long *counter;
	int iters;
};

static void *hammer_thread(void *p)
{
	struct hammer *h = p;
	for (int i = 0; i < h->iters; i++) {
		ASSERT_OK(weft_mutex_lock(h->m));
		(*h->counter)++;
		if (i % 64 == 0)
			sched_yield();
		ASSERT_OK(weft_mutex_unlock(h->m));
	}
	return NULL;
}

TEST(no_report_for_contention)
{
	weft_watch_options o = {.scan_ns = 2000000, .on_report = on_report, .profile_sample = 4};
	ASSERT_OK(weft_watch_start(&o));
	weft_mutex m = WEFT_MUTEX_INIT;
	long counter = 0;
	enum { T = 4 };
	int iters = th_scale() > 5 ? 2000 : 20000;
	struct hammer h = {&m, &counter, iters};
	pthread_t t[T];
	for (int i = 0; i < T; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, hammer_thread, &h), 0);
	for (int i = 0; i < T; i++)
		join(t[i]);
	ASSERT_EQ(counter, (long)T * iters);
	th_sleep_ms(20);
	weft_watch_stop();
	ASSERT_EQ(count_reports(WEFT_WATCH_DEADLOCK), 0);
	ASSERT_EQ(count_reports(WEFT_WATCH_SELF_DEADLOCK), 0);
	ASSERT_EQ(count_reports(WEFT_WATCH_LONG_WAIT), 0);
}

static void *contend_thread(void *p)
{
	weft_mutex *m = p;
	for (int i = 0; i < 20; i++) {
		ASSERT_OK(weft_mutex_lock(m));
		th_sleep_ms(2);
		ASSERT_OK(weft_mutex_unlock(m));
	}
	return NULL;
}

TEST(profile_counts_contention)
{
	weft_watch_options o = {.scan_ns = 10000000, .on_report = on_report, .profile_sample = 1};
	ASSERT_OK(weft_watch_start(&o));
	weft_mutex m = WEFT_MUTEX_INIT;
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, contend_thread, &m), 0);
	for (int i = 0; i < 2; i++)
		join(t[i]);
	weft_watch_site s[8];
	int n = weft_watch_profile(s, 8, WEFT_WATCH_SORT_CONTENDED);
	ASSERT_GE(n, 1);
	ASSERT_GT(s[0].contended, 0);
	ASSERT_GT(s[0].wait_ns_total, 0);
	ASSERT_GE(s[0].wait_ns_total, s[0].wait_ns_max);
	ASSERT_TRUE(s[0].lock == (const void *)&m);
	ASSERT_EQ(s[0].kind, WEFT_WATCH_LOCK_MUTEX);
	ASSERT_GT(s[0].hold_samples, 0);
	ASSERT_GE(s[0].hold_ns_max, 1000000);
	ASSERT_TRUE(stack_has(&s[0].site, 1, "contend_thread"));
	/* sorted */
	n = weft_watch_profile(s, 8, WEFT_WATCH_SORT_WAIT);
	for (int i = 1; i < n; i++)
		ASSERT_GE(s[i - 1].wait_ns_total, s[i].wait_ns_total);
	ASSERT_EQ(weft_watch_profile(s, 1, WEFT_WATCH_SORT_HOLD), 1);
	char *text = NULL;
	ASSERT_OK(weft_watch_profile_text(5, &text));
	ASSERT_CONTAINS(text, "contended");
	ASSERT_CONTAINS(text, "mutex");
	ASSERT_CONTAINS(text, "contend_thread");
	free(text);
	weft_watch_stop();
}

TEST(start_stop)
{
	ASSERT_OK(weft_watch_start(NULL));
	ASSERT_ERR(weft_watch_start(NULL), -EALREADY);
	weft_watch_stop();
	weft_watch_stop();
	ASSERT_OK(weft_watch_start(&(weft_watch_options){.scan_ns = 1000000}));
	ASSERT_ERR(weft_watch_start(NULL), -EALREADY);
	weft_watch_stop();
}

TEST(start_fault_injection)
{
	int p[2];
	ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
	weft_metrics *mx = NULL;
	ASSERT_OK(weft_metrics_create(&mx, NULL));
	int shm = -1;
	ASSERT_OK(weft_watch_shm_create(16, &shm));
	weft_watch_options o = {
	        .scan_ns = 5000000, .metrics = mx, .json_fd = p[1], .text_fd = p[1], .shm_fd = shm};
	int ok = 0;
	for (long k = 1; k < 100000 && !ok; k++) {
		weft__fault_arm(WEFT__FAULT_ALLOC, k, false);
		int r = weft_watch_start(&o);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ok = 1;
			break;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_EQ(weft_metrics_size(mx), 0);
	}
	ASSERT_TRUE(ok);
	weft_watch_stop();
	weft__fault_arm(WEFT__FAULT_THREAD, 1, false);
	ASSERT_ERR(weft_watch_start(&o), -EAGAIN);
	weft__fault_arm(WEFT__FAULT_THREAD, 0, false);
	ASSERT_EQ(weft_metrics_size(mx), 0);
	ASSERT_OK(weft_watch_start(&o));
	weft_watch_stop();
	weft_metrics_destroy(mx);
	close(shm);
	close(p[0]);
	close(p[1]);
}

TEST(queue_drops_when_full)
{
	weft_watch_counts before, after;
	ASSERT_OK(weft_watch_get_counts(&before));
	weft_watch_report r;
	memset(&r, 0, sizeof(r));
	r.event = WEFT_WATCH_LONG_WAIT;
	r.nthreads = 1;
	r.threads[0].tid = 1;
	/* no monitor: nothing drains the queue */
	for (int i = 0; i < 200; i++)
		weft__watch_emit(&r);
	ASSERT_OK(weft_watch_get_counts(&after));
	ASSERT_GT(after.dropped, before.dropped);
	ASSERT_EQ(after.by_event[WEFT_WATCH_LONG_WAIT] - before.by_event[WEFT_WATCH_LONG_WAIT] +
	                  (after.dropped - before.dropped),
	          200);
	/* the queued ones come out when a monitor starts */
	start_monitor(10000000, -1, -1);
	int64_t end = in_ms(3000);
	int queued =
	        (int)(after.by_event[WEFT_WATCH_LONG_WAIT] - before.by_event[WEFT_WATCH_LONG_WAIT]);
	for (;;) {
		pthread_mutex_lock(&rep_mu);
		int n = nreps;
		pthread_mutex_unlock(&rep_mu);
		if (n >= queued || weft_now() > end)
			break;
		th_sleep_ms(5);
	}
	weft_watch_stop();
	ASSERT_GE(nreps, queued);
	ASSERT_EQ(reps[0].threads[0].pid, getpid());
	ASSERT_GT(reps[0].seq, 0);
}

/* ---- fork ---- */

static int child_self_deadlock(void)
{
	weft_mutex m = WEFT_MUTEX_INIT;
	if (weft_mutex_lock(&m) != 0 || weft_mutex_lock(&m) != -EDEADLK)
		return 2;
	weft_mutex_unlock(&m);
	return wait_report(WEFT_WATCH_SELF_DEADLOCK, 3000, NULL) ? 0 : 3;
}

TEST(fork_child_monitor)
{
	/* a child of a monitored process: its watchdog comes back at its first report (TSan does
	 * not start threads in the child of a multi-threaded fork) */
	int st;
	pid_t pid;
	if (WEFT__TSAN)
		goto unmonitored;
	start_monitor(10000000, -1, -1);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		nreps = 0;
		int r = child_self_deadlock();
		if (r == 0 && weft_watch_start(NULL) != -EALREADY)
			r = 4;
		weft_watch_stop();
		/* and it can start one of its own */
		if (r == 0 && weft_watch_start(&(weft_watch_options){.scan_ns = 10000000,
		                                                     .on_report = on_report}) != 0)
			r = 5;
		nreps = 0;
		if (r == 0)
			r = child_self_deadlock();
		weft_watch_stop();
		_exit(r);
	}
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	weft_watch_stop();

unmonitored:
	/* a child of an unmonitored process starts its own */
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		int r = weft_watch_start(&(weft_watch_options){.scan_ns = 10000000,
		                                               .on_report = on_report}) == 0
		                ? child_self_deadlock()
		                : 6;
		weft_watch_stop();
		_exit(r);
	}
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}

TEST(deadlock_action_exit)
{
	/* a wait that cannot end (an untimed wrlock under the thread's own rdlock): the action */
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		weft_watch_options o = {.scan_ns = 10000000,
		                        .on_deadlock = WEFT_WATCH_ACTION_EXIT,
		                        .exit_code = 42};
		if (weft_watch_start(&o) != 0)
			_exit(1);
		weft_rwlock l = WEFT_RWLOCK_INIT;
		weft_rwlock_rdlock(&l);
		weft_rwlock_wrlock(&l);
		_exit(2);
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 42);
}

/* Waits that end by themselves are reported, but the action is not taken: an error checking
 * relock (EDEADLK at once), an rdlock under one's own wrlock (EDEADLK), a timed self-wait, and a
 * cycle of timed waits. */
static int64_t cyc_deadline;
static weft_mutex cyc_m[2];
static pthread_barrier_t cyc_bar;

static void *timed_cycle_thread(void *p)
{
	int i = (int)(long)p;
	if (weft_mutex_lock(&cyc_m[i]) != 0)
		return (void *)1;
	pthread_barrier_wait(&cyc_bar);
	int r = weft_mutex_timedlock(&cyc_m[1 - i], cyc_deadline);
	if (r == 0)
		weft_mutex_unlock(&cyc_m[1 - i]);
	weft_mutex_unlock(&cyc_m[i]);
	return NULL;
}

TEST(no_action_for_waits_that_end)
{
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		nreps = 0;
		weft_watch_options o = {.scan_ns = 10000000,
		                        .long_wait_ns = -1,
		                        .on_report = on_report,
		                        .on_deadlock = WEFT_WATCH_ACTION_EXIT,
		                        .exit_code = 42};
		if (weft_watch_start(&o) != 0)
			_exit(1);
		weft_mutex m = WEFT_MUTEX_INIT;
		weft_mutex_lock(&m);
		if (weft_mutex_lock(&m) != -EDEADLK)
			_exit(3);
		weft_mutex_unlock(&m);
		weft_rwlock l = WEFT_RWLOCK_INIT;
		weft_rwlock_wrlock(&l);
		if (weft_rwlock_rdlock(&l) != -EDEADLK)
			_exit(4);
		weft_rwlock_unlock(&l);
		/* a timed wrlock under its own rdlock: a self-wait until the deadline */
		weft_rwlock_rdlock(&l);
		if (weft_rwlock_timedwrlock(&l, in_ms(200)) != -ETIMEDOUT)
			_exit(5);
		weft_rwlock_unlock(&l);
		/* two threads in a cycle of timed waits */
		cyc_deadline = in_ms(300);
		weft_mutex_init(&cyc_m[0], NULL);
		weft_mutex_init(&cyc_m[1], NULL);
		pthread_barrier_init(&cyc_bar, NULL, 2);
		pthread_t t[2];
		for (long i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, timed_cycle_thread, (void *)i);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		th_sleep_ms(50);
		weft_watch_stop();
		weft_watch_report r;
		if (count_reports(WEFT_WATCH_SELF_DEADLOCK) != 3 ||
		    count_reports(WEFT_WATCH_DEADLOCK) != 1)
			_exit(6);
		for (int i = 0; i < nreps && i < MAX_REPORTS; i++)
			if (!reps[i].ends)
				_exit(7);
		if (!wait_report(WEFT_WATCH_DEADLOCK, 0, &r) || r.threads[0].deadline_ns <= 0 ||
		    r.threads[1].deadline_ns <= 0)
			_exit(8);
		_exit(0);
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* ---- across processes ---- */

struct xshared {
	weft_mutex a, b;
	_Atomic int held;
	_Atomic pid_t child_tid;
};

static int xproc_found(pid_t other)
{
	int found = 0;
	pthread_mutex_lock(&rep_mu);
	for (int i = 0; i < nreps && i < MAX_REPORTS; i++) {
		const weft_watch_report *r = &reps[i];
		if (r->event != WEFT_WATCH_DEADLOCK || r->nthreads != 2)
			continue;
		int me = 0, them = 0;
		for (int k = 0; k < 2; k++) {
			me |= r->threads[k].pid == getpid() && r->threads[k].nstack > 0;
			them |= r->threads[k].pid == other;
		}
		found |= me && them;
	}
	pthread_mutex_unlock(&rep_mu);
	return found;
}

TEST(deadlock_across_processes)
{
	int shm = -1;
	ASSERT_OK(weft_watch_shm_create(64, &shm));
	struct xshared *x =
	        mmap(NULL, sizeof(*x), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(x != MAP_FAILED);
	ASSERT_OK(weft_mutex_init(&x->a, &(weft_mutex_options){.pshared = 1}));
	ASSERT_OK(weft_mutex_init(&x->b, &(weft_mutex_options){.pshared = 1}));
	atomic_store(&x->held, 0);
	int64_t deadline = in_ms(1500);
	pid_t parent = getpid();
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	weft_watch_options o = {
	        .scan_ns = 20000000, .long_wait_ns = -1, .on_report = on_report, .shm_fd = shm};
	if (pid == 0) {
		nreps = 0;
		if (weft_watch_start(&o) != 0)
			_exit(10);
		if (weft_mutex_lock(&x->b) != 0)
			_exit(11);
		atomic_fetch_add(&x->held, 1);
		while (atomic_load(&x->held) < 2)
			th_sleep_ms(1);
		int r = weft_mutex_timedlock(&x->a, deadline);
		if (r == 0)
			weft_mutex_unlock(&x->a);
		weft_mutex_unlock(&x->b);
		int found = xproc_found(parent);
		weft_watch_stop();
		_exit(found ? 0 : 1);
	}
	ASSERT_OK(weft_watch_start(&o));
	ASSERT_OK(weft_mutex_lock(&x->a));
	atomic_fetch_add(&x->held, 1);
	while (atomic_load(&x->held) < 2)
		th_sleep_ms(1);
	int r = weft_mutex_timedlock(&x->b, deadline);
	if (r == 0)
		ASSERT_OK(weft_mutex_unlock(&x->b));
	ASSERT_OK(weft_mutex_unlock(&x->a));
	int found = xproc_found(pid);
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	weft_watch_stop();
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_TRUE(WEXITSTATUS(st) <= 1);
	ASSERT_TRUE(found || WEXITSTATUS(st) == 0);
	if (found) {
		weft_watch_report rep;
		ASSERT_TRUE(wait_report(WEFT_WATCH_DEADLOCK, 0, &rep));
		for (int k = 0; k < 2; k++) {
			const weft_watch_thread *t = &rep.threads[k];
			if (t->pid == getpid()) {
				ASSERT_EQ(t->tid, gettid_());
				ASSERT_EQ(t->owner_tid, pid); /* the child's main thread */
				ASSERT_TRUE(stack_has(t->stack, t->nstack, "deadlock_across"));
			} else {
				ASSERT_EQ(t->pid, pid);
				ASSERT_EQ(t->owner_tid, gettid_());
			}
		}
	}
	munmap(x, sizeof(*x));
	close(shm);
}

/* ---- deadlines too far to represent ---- */

TEST(realtime_deadline_saturates)
{
	/* "never" as programs write it: forever (-1), not a time in the past */
	ASSERT_EQ(weft__watch_realtime_to_mono(&(struct timespec){LONG_MAX, 0}), -1);
	ASSERT_EQ(weft__watch_realtime_to_mono(&(struct timespec){LONG_MAX / 2, 0}), -1);
	/* far, but within int64 ns of now: a time */
	ASSERT_GT(weft__watch_realtime_to_mono(&(struct timespec){INT64_MAX / 1000000000 + 5, 0}),
	          weft__watch_now());
	ASSERT_EQ(weft__watch_realtime_to_mono(&(struct timespec){LONG_MAX, 999999999}), -1);
	/* the past: 0 */
	ASSERT_EQ(weft__watch_realtime_to_mono(&(struct timespec){0, 0}), 0);
	ASSERT_EQ(weft__watch_realtime_to_mono(&(struct timespec){LONG_MIN, 0}), 0);
	/* a second from now: a second from now on the monotonic clock */
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	rt.tv_sec += 1;
	int64_t d = weft__watch_realtime_to_mono(&rt) - weft__watch_now();
	ASSERT_GT(d, 500000000);
	ASSERT_LE(d, 1000000000);
	/* a hundred years from now is still a time */
	rt.tv_sec += 100LL * 365 * 86400;
	ASSERT_GT(weft__watch_realtime_to_mono(&rt), weft__watch_now());
}

static void *hold_300ms(void *p)
{
	weft_mutex *m = p;
	ASSERT_OK(weft_mutex_lock(m));
	th_sleep_ms(300);
	ASSERT_OK(weft_mutex_unlock(m));
	return NULL;
}

TEST(timedlock_far_deadline_waits)
{
	/* weft_mutex_timedlock with the largest deadline waits for the holder, monitored or not
	 * (TSan builds convert it to CLOCK_REALTIME: that must not overflow into the past) */
	for (int monitored = 0; monitored < 2; monitored++) {
		if (monitored)
			start_monitor(20000000, -1, -1);
		weft_mutex m = WEFT_MUTEX_INIT;
		pthread_t t;
		ASSERT_EQ(pthread_create(&t, NULL, hold_300ms, &m), 0);
		while (weft_mutex_trylock(&m) == 0) {
			ASSERT_OK(weft_mutex_unlock(&m));
			th_sleep_ms(1);
		}
		ASSERT_OK(weft_mutex_timedlock(&m, INT64_MAX));
		ASSERT_OK(weft_mutex_unlock(&m));
		join(t);
		if (monitored)
			weft_watch_stop();
	}
}

/* ---- outputs: only the file they were at start ---- */

TEST(output_fd_reused_is_not_written)
{
	char a[1024], b[1024];
	snprintf(a, sizeof(a), "%s/reports.json", th_tmpdir());
	snprintf(b, sizeof(b), "%s/program-data", th_tmpdir());
	int fa = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ASSERT_GE(fa, 0);
	/* a closed fd is refused */
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.json_fd = 987}), -EBADF);
	ASSERT_ERR(weft_watch_start(&(weft_watch_options){.text_fd = 987}), -EBADF);
	weft_watch_counts before, after;
	ASSERT_OK(weft_watch_get_counts(&before));
	weft_watch_options o = {
	        .scan_ns = 10000000, .json_fd = fa, .text_fd = fa, .on_report = on_report};
	ASSERT_OK(weft_watch_start(&o));
	weft_mutex m = WEFT_MUTEX_INIT;
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	ASSERT_TRUE(wait_report(WEFT_WATCH_SELF_DEADLOCK, 3000, NULL));
	/* the callback comes first: wait for the text, written last */
	for (int64_t end = in_ms(3000);;) {
		char *ja = th_read_file(a);
		int done = ja && strstr(ja, "weft watch: self-deadlock") != NULL;
		free(ja);
		if (done)
			break;
		ASSERT_LT(weft_now(), end);
		th_sleep_ms(5);
	}
	/* the program closes the fd and the number comes back for a file of its own */
	int fb = open(b, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ASSERT_GE(fb, 0);
	ASSERT_EQ(dup3(fb, fa, O_CLOEXEC), fa);
	close(fb);
	nreps = 0;
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	ASSERT_TRUE(wait_report(WEFT_WATCH_SELF_DEADLOCK, 3000, NULL));
	ASSERT_OK(weft_mutex_unlock(&m));
	weft_watch_stop();
	close(fa);
	ASSERT_OK(weft_watch_get_counts(&after));
	/* the first report went to the report file, the second to neither */
	char *ja = th_read_file(a), *jb = th_read_file(b);
	ASSERT_CONTAINS(ja, "\"event\":\"self-deadlock\"");
	ASSERT_STR_EQ(jb, "");
	ASSERT_EQ(after.lost_output - before.lost_output, 2); /* its JSON and its text */
	free(ja);
	free(jb);
}

/* ---- a stale owner is no proof ---- */

struct stale {
	weft_mutex m1, m2;
	pthread_t a;
	_Atomic int phase;
	_Atomic int in_handler;
	int ra, rmain;
};
static struct stale *stale_ctx;

static void slow_handler(int sig)
{
	(void)sig;
	atomic_store(&stale_ctx->in_handler, 1);
	/* the waiter cannot refresh the owner it published while it runs this */
	th_sleep_ms((long)(800 * th_scale()));
}

static void *stale_a(void *p)
{
	struct stale *s = p;
	ASSERT_OK(weft_mutex_lock(&s->m2));
	atomic_store(&s->phase, 1);
	s->ra = weft_mutex_timedlock(&s->m1, in_ms(5000)); /* owner: main, then the c thread */
	if (s->ra == 0)
		ASSERT_OK(weft_mutex_unlock(&s->m1));
	ASSERT_OK(weft_mutex_unlock(&s->m2));
	return NULL;
}

static void *stale_c(void *p)
{
	struct stale *s = p;
	while (atomic_load(&s->phase) < 2)
		th_sleep_ms(1);
	while (weft_mutex_trylock(&s->m1) != 0)
		th_sleep_ms(1);
	atomic_store(&s->phase, 3);
	while (atomic_load(&s->phase) < 4)
		th_sleep_ms(1);
	ASSERT_OK(weft_mutex_unlock(&s->m1));
	return NULL;
}

TEST(stale_owner_is_not_a_deadlock)
{
	/* a waits for m1 and published its owner, main; main hands m1 to c and then waits for
	 * m2, which a holds. The real graph is a chain main -> a -> c; a's published owner
	 * (main) is stale while a cannot refresh it (in a slow signal handler) */
	static struct stale s;
	memset(&s, 0, sizeof(s));
	stale_ctx = &s;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = slow_handler;
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	start_monitor(20000000, -1, -1);
	ASSERT_OK(weft_mutex_init(&s.m1, NULL));
	ASSERT_OK(weft_mutex_init(&s.m2, NULL));
	ASSERT_OK(weft_mutex_lock(&s.m1));
	pthread_t c;
	ASSERT_EQ(pthread_create(&s.a, NULL, stale_a, &s), 0);
	ASSERT_EQ(pthread_create(&c, NULL, stale_c, &s), 0);
	while (atomic_load(&s.phase) < 1)
		th_sleep_ms(1);
	th_sleep_ms(60); /* a waits for m1, its owner (main) published */
	ASSERT_EQ(pthread_kill(s.a, SIGUSR1), 0);
	while (!atomic_load(&s.in_handler))
		th_sleep_ms(1);
	atomic_store(&s.phase, 2);
	ASSERT_OK(weft_mutex_unlock(&s.m1)); /* c takes it */
	while (atomic_load(&s.phase) < 3)
		th_sleep_ms(1);
	/* main -> a (a owns m2) for 300 ms, many scans, while a's record still says main */
	s.rmain = weft_mutex_timedlock(&s.m2, in_ms(300));
	ASSERT_ERR(s.rmain, -ETIMEDOUT);
	atomic_store(&s.phase, 4);
	join(s.a);
	join(c);
	weft_watch_stop();
	ASSERT_OK(s.ra);
	ASSERT_EQ(count_reports(WEFT_WATCH_DEADLOCK), 0);
	ASSERT_OK(weft_mutex_destroy(&s.m1));
	ASSERT_OK(weft_mutex_destroy(&s.m2));
	signal(SIGUSR1, SIG_DFL);
}

/* ---- a deadlock through a condition wait's re-lock: found, and named in the long wait ---- */

struct crl {
	weft_mutex l, m;
	weft_cond c;
	_Atomic int ready;
	pid_t sleeper;
	int rc;
};

static void *crl_sleeper(void *p)
{
	struct crl *x = p;
	x->sleeper = gettid_();
	ASSERT_OK(weft_mutex_lock(&x->l));
	ASSERT_OK(weft_mutex_lock(&x->m));
	atomic_store(&x->ready, 1);
	x->rc = weft_cond_wait(&x->c, &x->m, in_ms(5000));
	ASSERT_OK(weft_mutex_unlock(&x->m));
	ASSERT_OK(weft_mutex_unlock(&x->l));
	return NULL;
}

TEST(cond_relock_deadlock_found_and_owner_named)
{
	start_monitor(10000000, 100000000, -1);
	static struct crl x;
	memset(&x, 0, sizeof(x));
	ASSERT_OK(weft_mutex_init(&x.l, NULL));
	ASSERT_OK(weft_mutex_init(&x.m, NULL));
	ASSERT_OK(weft_cond_init(&x.c));
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, crl_sleeper, &x), 0);
	for (;;) {
		ASSERT_OK(weft_mutex_lock(&x.m));
		if (atomic_load(&x.ready))
			break;
		ASSERT_OK(weft_mutex_unlock(&x.m));
		th_sleep_ms(1);
	}
	/* the sleeper waits on c (it released m to get there): wake it, then wait for l, which
	 * it holds while it waits for m, which we hold: stuck until our deadline */
	ASSERT_OK(weft_cond_signal(&x.c));
	ASSERT_ERR(weft_mutex_timedlock(&x.l, in_ms(600)), -ETIMEDOUT);
	ASSERT_OK(weft_mutex_unlock(&x.m));
	join(t);
	weft_watch_stop();
	ASSERT_OK(x.rc);
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_LONG_WAIT, 0, &r));
	ASSERT_EQ(r.threads[0].tid, gettid_());
	ASSERT_EQ(r.threads[0].owner_tid, x.sleeper);
	ASSERT_EQ(r.nthreads, 2);
	ASSERT_EQ(r.threads[1].tid, x.sleeper);
	ASSERT_EQ(r.threads[1].wait_kind, WEFT_WATCH_LOCK_COND);
	ASSERT_TRUE(r.threads[1].waits_for == (const void *)&x.c);
	ASSERT_TRUE(r.threads[1].cond_mutex == (const void *)&x.m);
	char *text = NULL;
	ASSERT_OK(weft_watch_report_text(&r, &text));
	ASSERT_CONTAINS(text, "is in a condition wait on");
	ASSERT_CONTAINS(text, "with mutex");
	free(text);
	ASSERT_OK(weft_watch_report_json(&r, &text));
	ASSERT_CONTAINS(text, "\"cond_mutex\":\"0x");
	free(text);
	/* the watchdog saw the sleeper blocked retaking m inside the condition wait: a cycle, which
	 * ends by itself (both waits have deadlines) */
	ASSERT_EQ(count_reports(WEFT_WATCH_DEADLOCK), 1);
	ASSERT_TRUE(wait_report(WEFT_WATCH_DEADLOCK, 0, &r));
	ASSERT_EQ(r.nthreads, 2);
	ASSERT_EQ(r.ends, 1);
	int k = r.threads[0].tid == x.sleeper ? 0 : 1;
	ASSERT_EQ(r.threads[k].tid, x.sleeper);
	ASSERT_EQ(r.threads[k].wait_kind, WEFT_WATCH_LOCK_COND);
	ASSERT_TRUE(r.threads[k].cond_mutex == (const void *)&x.m);
	ASSERT_EQ(r.threads[k].owner_tid, gettid_());
	ASSERT_EQ(r.threads[1 - k].tid, gettid_());
	ASSERT_TRUE(r.threads[1 - k].waits_for == (const void *)&x.l);
	ASSERT_EQ(r.threads[1 - k].owner_tid, x.sleeper);
	ASSERT_OK(weft_cond_destroy(&x.c));
}

/* ---- condition waits: the stack once per call site ---- */

static __attribute__((noinline)) int cond_wait_here(struct condpair *cp, int64_t deadline)
{
	int r = weft_cond_wait(&cp->c, &cp->m, deadline);
	__asm__ volatile("" ::: "memory");
	return r;
}

TEST(cond_stack_once_per_site)
{
	start_monitor(10000000, -1, 100000000);
	struct condpair cp = {.m = WEFT_MUTEX_INIT};
	ASSERT_OK(weft_cond_init(&cp.c));
	ASSERT_OK(weft_mutex_lock(&cp.m));
	/* the first wait at the site captures its stack (and is short: no report) */
	ASSERT_ERR(cond_wait_here(&cp, in_ms(5)), -ETIMEDOUT);
	/* the second is long: its report carries the site's first stack */
	ASSERT_ERR(cond_wait_here(&cp, in_ms(400)), -ETIMEDOUT);
	ASSERT_OK(weft_mutex_unlock(&cp.m));
	weft_watch_stop();
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_COND_WAIT, 0, &r));
	ASSERT_EQ(r.threads[0].stack_from_site, 1);
	ASSERT_TRUE(r.threads[0].cond_mutex == (const void *)&cp.m);
	ASSERT_TRUE(stack_has(r.threads[0].stack, r.threads[0].nstack, "cond_wait_here"));
	ASSERT_TRUE(stack_has(r.threads[0].stack, r.threads[0].nstack,
	                      "th_case_cond_stack_once_per_site"));
	char *text = NULL;
	ASSERT_OK(weft_watch_report_text(&r, &text));
	ASSERT_CONTAINS(text, "stack (the first one seen at this call site)");
	free(text);
	ASSERT_OK(weft_cond_destroy(&cp.c));
}

/* ---- a wait in a signal handler, inside the recording of another ---- */

static weft_mutex nest_outer = WEFT_MUTEX_INIT, nest_inner = WEFT_MUTEX_INIT;
static _Atomic int nest_fired;

static void nest_handler(int sig)
{
	(void)sig;
	/* a contended wait of its own (the other thread holds nest_inner) */
	int r = weft_mutex_timedlock(&nest_inner, in_ms(30));
	if (r == 0)
		weft_mutex_unlock(&nest_inner);
}

static void nest_hook(void)
{
	int zero = 0;
	if (atomic_compare_exchange_strong(&nest_fired, &zero, 1))
		raise(SIGUSR2);
}

static void *nest_holder(void *p)
{
	(void)p;
	ASSERT_OK(weft_mutex_lock(&nest_outer));
	ASSERT_OK(weft_mutex_lock(&nest_inner));
	th_sleep_ms((long)(400 * th_scale())); /* the main thread's wait outlasts long_wait_ns */
	ASSERT_OK(weft_mutex_unlock(&nest_inner));
	ASSERT_OK(weft_mutex_unlock(&nest_outer));
	return NULL;
}

TEST(signal_handler_wait_does_not_clobber)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = nest_handler;
	ASSERT_EQ(sigaction(SIGUSR2, &sa, NULL), 0);
	start_monitor(10000000, 150000000, -1);
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, nest_holder, NULL), 0);
	while (weft_mutex_trylock(&nest_inner) == 0) {
		ASSERT_OK(weft_mutex_unlock(&nest_inner));
		th_sleep_ms(1);
	}
	atomic_store(&nest_fired, 0);
	__atomic_store_n(&weft__watch_test_hook, nest_hook, __ATOMIC_SEQ_CST);
	/* the outer wait: the hook raises the signal between its field stores and its publication;
	 * the handler waits for nest_inner */
	ASSERT_OK(weft_mutex_lock(&nest_outer));
	__atomic_store_n(&weft__watch_test_hook, NULL, __ATOMIC_SEQ_CST);
	ASSERT_OK(weft_mutex_unlock(&nest_outer));
	join(t);
	weft_watch_stop();
	signal(SIGUSR2, SIG_DFL);
	ASSERT_EQ(atomic_load(&nest_fired), 1);
	/* the long wait is the outer one's, with its own lock */
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_LONG_WAIT, 0, &r));
	ASSERT_EQ(r.threads[0].tid, gettid_());
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&nest_outer);
	ASSERT_EQ(count_reports(WEFT_WATCH_LONG_WAIT), 1);
}

/* ---- the record protocol: a snapshot is one wait's fields or nothing ---- */

TEST(record_snapshots_never_torn)
{
	/* four million snapshots, or two seconds (scaled), of a record rewritten all the time */
	uint64_t torn = 1, seen = 0;
	ASSERT_OK(weft__watch_test_torn(4000000, (int64_t)(2e9 * th_scale()), &torn, &seen));
	ASSERT_EQ(torn, 0);
	ASSERT_GT(seen, 0);
	ASSERT_ERR(weft__watch_test_torn(0, 1, &torn, &seen), -EINVAL);
	ASSERT_ERR(weft__watch_test_torn(1, 0, &torn, &seen), -EINVAL);
	ASSERT_ERR(weft__watch_test_torn(1, 1, NULL, &seen), -EINVAL);
	ASSERT_ERR(weft__watch_test_torn(1, 1, &torn, NULL), -EINVAL);
}

/* ---- the quick first slice of a wait, not recorded ---- */

static weft_sem quick_sem;
static _Atomic int quick_calls, quick_post, quick_recorded;

/* Before a wait's quick slice: posts quick_sem if quick_post says so, which ends the slice at
 * once. */
static void quick_hook(void *lock)
{
	if (lock != (void *)&quick_sem.s)
		return;
	atomic_fetch_add(&quick_calls, 1);
	if (atomic_load(&quick_post))
		ASSERT_OK(weft_sem_post(&quick_sem));
}

static void record_hook(void)
{
	atomic_fetch_add(&quick_recorded, 1);
}

/* The profile's entries for semaphore sem, summed over their sites: the wait total, -1 if
 * none; *ret_contended the waits counted. */
static int64_t sem_profile_of(weft_sem *sem, uint64_t *ret_contended)
{
	weft_watch_site s[8];
	int n = weft_watch_profile(s, 8, WEFT_WATCH_SORT_CONTENDED);
	int64_t total = -1;
	*ret_contended = 0;
	for (int i = 0; i < n; i++) {
		if (s[i].kind == WEFT_WATCH_LOCK_SEM && s[i].lock == (const void *)&sem->s) {
			*ret_contended += s[i].contended;
			total = WEFT__MAX(total, 0) + s[i].wait_ns_total;
		}
	}
	return total;
}

static int64_t sem_profile(uint64_t *ret_contended)
{
	return sem_profile_of(&quick_sem, ret_contended);
}

TEST(quick_wait_is_not_recorded)
{
	start_monitor(10000000, -1, -1);
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	atomic_store(&quick_calls, 0);
	atomic_store(&quick_post, 1);
	atomic_store(&quick_recorded, 0);
	__atomic_store_n(&weft__watch_test_hook, record_hook, __ATOMIC_SEQ_CST);
	__atomic_store_n(&weft__watch_test_quick_hook, quick_hook, __ATOMIC_SEQ_CST);
	/* busy at the call's own try; posted before the quick slice, which takes it */
	ASSERT_OK(weft_sem_wait(&quick_sem, -1));
	ASSERT_EQ(atomic_load(&quick_calls), 1);
	ASSERT_EQ(atomic_load(&quick_recorded), 0);
	/* counted as contended (its wait time is read on the coarse clock: often 0) */
	uint64_t contended = 0;
	ASSERT_GE(sem_profile(&contended), 0);
	ASSERT_EQ(contended, 1);
	/* a wait that outlasts the quick slice is recorded */
	atomic_store(&quick_post, 0);
	ASSERT_ERR(weft_sem_wait(&quick_sem, weft_deadline_in(20000000)), -ETIMEDOUT);
	ASSERT_EQ(atomic_load(&quick_calls), 2);
	ASSERT_EQ(atomic_load(&quick_recorded), 1);
	/* a self-wait is recorded: the error-checking relock returns EDEADLK at once, and is
	 * reported */
	weft_mutex m = WEFT_MUTEX_INIT;
	ASSERT_OK(weft_mutex_lock(&m));
	ASSERT_ERR(weft_mutex_lock(&m), -EDEADLK);
	ASSERT_EQ(atomic_load(&quick_recorded), 2);
	ASSERT_OK(weft_mutex_unlock(&m));
	__atomic_store_n(&weft__watch_test_quick_hook, NULL, __ATOMIC_SEQ_CST);
	__atomic_store_n(&weft__watch_test_hook, NULL, __ATOMIC_SEQ_CST);
	weft_watch_stop();
	ASSERT_EQ(count_reports(WEFT_WATCH_SELF_DEADLOCK), 1);
	ASSERT_OK(weft_sem_destroy(&quick_sem));
}

static void *quick_many(void *p)
{
	int n = *(int *)p;
	for (int i = 0; i < n; i++)
		ASSERT_OK(weft_sem_wait(&quick_sem, -1));
	return NULL; /* the thread's last quick waits are added to the profile at its exit */
}

TEST(quick_waits_all_profiled)
{
	start_monitor(10000000, -1, -1);
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	atomic_store(&quick_post, 1);
	__atomic_store_n(&weft__watch_test_quick_hook, quick_hook, __ATOMIC_SEQ_CST);
	int n = 64 * 3 + 5; /* three batches and a rest */
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, quick_many, &n), 0);
	join(t);
	__atomic_store_n(&weft__watch_test_quick_hook, NULL, __ATOMIC_SEQ_CST);
	uint64_t contended = 0;
	ASSERT_GE(sem_profile(&contended), 0);
	ASSERT_EQ(contended, (uint64_t)n);
	weft_watch_stop();
	ASSERT_OK(weft_sem_destroy(&quick_sem));
}

/* Quick waits at quick_sem, each ended in its quick slice by quick_hook. */
static __attribute__((noinline)) void quick_waits(int n)
{
	for (int i = 0; i < n; i++)
		ASSERT_OK(weft_sem_wait(&quick_sem, -1));
}

static void quick_start(void)
{
	start_monitor(10000000, -1, -1);
	atomic_store(&quick_post, 1);
	__atomic_store_n(&weft__watch_test_quick_hook, quick_hook, __ATOMIC_SEQ_CST);
}

static void quick_end(void)
{
	__atomic_store_n(&weft__watch_test_quick_hook, NULL, __ATOMIC_SEQ_CST);
	weft_watch_stop();
}

/* A fork child's profile has the child's quick waits only: the parent's held-back sums stay
 * the parent's. */
TEST(quick_sums_fork_child_own)
{
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	quick_start();
	quick_waits(5); /* held back (fewer than a batch) */
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		uint64_t c = 0;
		if (WEFT__TSAN) /* a wait would restart the watchdog: TSan kills a child of a
		                   multi-threaded fork that starts a thread */
			_exit(0);
		quick_waits(1);
		sem_profile(&c);
		_exit(c == 1 ? 0 : 10 + (int)WEFT__MIN(c, 50));
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	uint64_t c = 0;
	sem_profile(&c);
	ASSERT_EQ(c, 5);
	quick_end();
	ASSERT_OK(weft_sem_destroy(&quick_sem));
}

static weft_sem quick_go1, quick_go2;
static void *quick_session_thread(void *p)
{
	(void)p;
	quick_waits(5); /* held back by this thread across the stop and start */
	ASSERT_OK(weft_sem_post(&quick_go1));
	ASSERT_OK(weft_sem_wait(&quick_go2, -1));
	quick_waits(1);
	return NULL; /* its sums go to the profile at exit */
}

/* A new session's profile has none of the waits an earlier session's threads held back. */
TEST(quick_sums_stay_in_their_session)
{
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	ASSERT_OK(weft_sem_init(&quick_go1, 0, 0));
	ASSERT_OK(weft_sem_init(&quick_go2, 0, 0));
	quick_start();
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, quick_session_thread, NULL), 0);
	ASSERT_OK(weft_sem_wait(&quick_go1, -1));
	weft_watch_stop();
	quick_start();
	ASSERT_OK(weft_sem_post(&quick_go2));
	join(t);
	uint64_t c = 0;
	sem_profile(&c);
	ASSERT_EQ(c, 1);
	quick_end();
	ASSERT_OK(weft_sem_destroy(&quick_sem));
	ASSERT_OK(weft_sem_destroy(&quick_go1));
	ASSERT_OK(weft_sem_destroy(&quick_go2));
}

/* Quick waits in a thread-specific-data destructor that runs after the monitor's own. */
static pthread_key_t quick_late_key;
static void quick_late_dtor(void *v)
{
	(void)v;
	quick_waits(2);
}

static void *quick_dtor_thread(void *p)
{
	(void)p;
	quick_waits(1); /* sets the monitor's key */
	ASSERT_EQ(pthread_setspecific(quick_late_key, (void *)1), 0);
	return NULL;
}

TEST(quick_sums_from_late_destructors_kept)
{
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	quick_start(); /* the monitor's key exists before quick_late_key: its destructor first */
	ASSERT_EQ(pthread_key_create(&quick_late_key, quick_late_dtor), 0);
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, quick_dtor_thread, NULL), 0);
	join(t);
	uint64_t c = 0;
	sem_profile(&c);
	ASSERT_EQ(c, 3);
	quick_end();
	ASSERT_EQ(pthread_key_delete(quick_late_key), 0);
	ASSERT_OK(weft_sem_destroy(&quick_sem));
}

/* A signal handler that makes quick waits of its own, at another site, interrupting the
 * thread's quick waits at random points: every wait is counted, each at its own lock. */
static weft_sem quick_sig_sem;
static _Atomic long quick_sig_waits;
static void quick_sig_handler(int sig)
{
	(void)sig;
	if (weft_sem_wait(&quick_sig_sem, -1) == 0) /* contended, ended by the hook */
		atomic_fetch_add(&quick_sig_waits, 1);
}

static void quick_sig_hook(void *lock)
{
	if (lock == (void *)&quick_sig_sem.s)
		weft_sem_post(&quick_sig_sem);
	else
		quick_hook(lock);
}

TEST(quick_sums_signal_safe)
{
	ASSERT_OK(weft_sem_init(&quick_sem, 0, 0));
	ASSERT_OK(weft_sem_init(&quick_sig_sem, 0, 0));
	quick_start();
	__atomic_store_n(&weft__watch_test_quick_hook, quick_sig_hook, __ATOMIC_SEQ_CST);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = quick_sig_handler;
	sa.sa_flags = SA_RESTART;
	ASSERT_EQ(sigaction(SIGALRM, &sa, NULL), 0);
	atomic_store(&quick_sig_waits, 0);
	struct itimerval it = {{0, 50}, {0, 50}};
	ASSERT_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
	int n = 1000000;
	quick_waits(n);
	struct itimerval off;
	memset(&off, 0, sizeof(off));
	ASSERT_EQ(setitimer(ITIMER_REAL, &off, NULL), 0);
	signal(SIGALRM, SIG_IGN); /* discards one still pending (valgrind delivers late) */
	signal(SIGALRM, SIG_DFL);
	ASSERT_GT(atomic_load(&quick_sig_waits), 0);
	uint64_t c = 0, c_sig = 0;
	sem_profile_of(&quick_sem, &c);
	sem_profile_of(&quick_sig_sem, &c_sig);
	ASSERT_EQ(c, (uint64_t)n);
	ASSERT_EQ(c_sig, (uint64_t)atomic_load(&quick_sig_waits));
	quick_end();
	ASSERT_OK(weft_sem_destroy(&quick_sem));
	ASSERT_OK(weft_sem_destroy(&quick_sig_sem));
}

/* ---- exec: the shared records of the old image's threads are reclaimed ---- */

#define EXEC_ENV "WEFT_TEST_WATCH_EXEC_SHM"

/* The image exec_reclaims_old_image_records' child execs (same pid, before main): the monitor
 * on the same registry must free the record the old image's waiting thread left there. Exits 0
 * when it went, 1 when it is still claimed after 3 s (scaled), 2 when the monitor cannot start. */
__attribute__((constructor)) static void exec_new_image(void)
{
	const char *v = getenv(EXEC_ENV);
	if (!v)
		return;
	weft_watch_options o = {.scan_ns = 2000000, .shm_fd = atoi(v)};
	if (weft_watch_start(&o) != 0)
		_exit(2);
	int64_t end = weft_deadline_in((int64_t)(3e9 * th_scale()));
	int n;
	while ((n = weft__watch_test_shm_claimed(getpid())) > 0 && weft_now() < end)
		usleep(2000);
	weft_watch_stop();
	_exit(n == 0 ? 0 : 1);
}

static void *exec_waiter(void *p)
{
	weft_mutex_timedlock(p, weft_deadline_in(60000000000)); /* ended by the exec */
	return NULL;
}

TEST(exec_reclaims_old_image_records)
{
	int fd = -1;
	ASSERT_OK(weft_watch_shm_create(16, &fd));
	pid_t c = fork();
	ASSERT_TRUE(c >= 0);
	if (c == 0) {
		weft_watch_options o = {.scan_ns = 2000000, .shm_fd = fd};
		static weft_mutex m;
		if (weft_watch_start(&o) != 0 ||
		    weft_mutex_init(&m, &(weft_mutex_options){.pshared = 1}) != 0)
			_exit(10);
		weft_mutex_lock(&m);
		pthread_t t;
		if (pthread_create(&t, NULL, exec_waiter, &m) != 0)
			_exit(11);
		/* its wait outlasts the quick slice: recorded, in the registry too */
		int64_t end = weft_deadline_in((int64_t)(3e9 * th_scale()));
		while (weft__watch_test_shm_claimed(getpid()) < 1)
			if (weft_now() > end)
				_exit(12);
			else
				usleep(1000);
		char env[16];
		snprintf(env, sizeof(env), "%d", fd);
		setenv(EXEC_ENV, env, 1);
		/* by its path in the build (under valgrind /proc/self/exe is valgrind's) */
		char self[4096];
		snprintf(self, sizeof(self), "%s/tests/test-watch", th_env_path("WEFT_BUILD_ROOT"));
		execl(self, "test-watch", (char *)NULL);
		_exit(13);
	}
	int st = 0;
	ASSERT_EQ(waitpid(c, &st, 0), c);
	close(fd);
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* ---- a self-wait that times out within the quick slice is still reported ---- */

/* pthread_mutex_timedlock on CLOCK_REALTIME (end converted), which TSan intercepts (it does not
 * intercept pthread_mutex_clocklock) */
static int normal_timed(void *lock, int64_t end)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t left = end - weft_now();
	int64_t at = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + (left > 0 ? left : 0);
	struct timespec ts = {(time_t)(at / 1000000000), (long)(at % 1000000000)};
	return pthread_mutex_timedlock(lock, &ts);
}

static pid_t normal_owner(const void *lock)
{
	return ((const pthread_mutex_t *)lock)->__data.__owner;
}

TEST(self_wait_short_deadline_reported)
{
	start_monitor(10000000, -1, -1);
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER; /* a normal mutex: a relock just waits */
	ASSERT_EQ(pthread_mutex_lock(&m), 0);
	struct weft__watch_op op = {.lock = &m,
	                            .kind = WEFT_WATCH_LOCK_MUTEX,
	                            .site = (void *)normal_timed,
	                            .timed = normal_timed,
	                            .owner = normal_owner};
	/* 50 us: shorter than the first, unrecorded slice (at least 100 us) */
	ASSERT_EQ(weft__watch_wait(&op, weft_deadline_in(50000)), ETIMEDOUT);
	ASSERT_EQ(pthread_mutex_unlock(&m), 0);
	weft_watch_stop();
	weft_watch_report r;
	ASSERT_TRUE(wait_report(WEFT_WATCH_SELF_DEADLOCK, 0, &r));
	ASSERT_EQ(r.ends, 1);
	ASSERT_TRUE(r.threads[0].waits_for == (const void *)&m);
	ASSERT_EQ(r.threads[0].owner_tid, gettid_());
}
