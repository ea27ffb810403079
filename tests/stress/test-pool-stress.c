/* test-pool-stress.c: the pool under load: several submitters and workers, millions of tiny
 * tasks (fewer under sanitizers and valgrind: the count is divided by WEFT_TEST_TIMEOUT_SCALE),
 * bounded in time, with exact counts: fire-and-forget, futures, batches, tasks that submit
 * tasks, a bounded queue that blocks, one that drops, and threads that grow and retire all the
 * while. Run under TSan too. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "internal/pool.h"

static _Atomic long ran;

static void *tiny(void *arg)
{
	atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
	return arg;
}

static long scaled(long n)
{
	long s = (long)(n / th_scale());
	return s < 1000 ? 1000 : s;
}

static weft_pool *make(weft_metrics **m, int min, int max, size_t queue_max, int on_full,
                       int64_t idle)
{
	ASSERT_OK(weft_metrics_create(m, NULL));
	weft_pool_opts o = {.name = "stress",
	                    .min_threads = min,
	                    .max_threads = max,
	                    .queue_max = queue_max,
	                    .on_full = on_full,
	                    .idle_timeout = idle,
	                    .tick = WEFT_MSEC(10),
	                    .metrics = *m};
	weft_pool *p;
	ASSERT_OK(weft_pool_create(&p, &o));
	return p;
}

/* Wait until the pool has finished `n` tasks, then check the tick's count agrees. */
static void wait_ran(weft_pool *p, weft_metrics *m, long n)
{
	int64_t end = weft_now() + (int64_t)(60e9 * th_scale());
	while (atomic_load(&ran) < n && weft_now() < end)
		th_sleep_ms(1);
	ASSERT_EQ(atomic_load(&ran), n);
	char needle[128];
	snprintf(needle, sizeof(needle), "weft_pool_tasks_completed_total{pool=\"stress\"} %ld", n);
	for (;;) {
		char *text;
		ASSERT_OK(weft_metrics_prometheus(m, &text, NULL));
		bool found = strstr(text, needle) != NULL;
		free(text);
		if (found)
			break;
		if (weft_now() > end)
			FAIL("the completed counter never reached %ld", n);
		th_sleep_ms(5);
	}
	(void)p;
}

struct submitter {
	weft_pool *p;
	long n;
	int mode; /* 0: plain, 1: every 64th with a future, 2: batches of 32 */
	long accepted;
	pthread_t th;
};

static void *submit_main(void *arg)
{
	struct submitter *s = arg;
	void *args[32] = {0};
	for (long i = 0; i < s->n;) {
		if (s->mode == 2) {
			size_t k = s->n - i < 32 ? (size_t)(s->n - i) : 32;
			int r = weft_pool_submit_batch(s->p, tiny, args, k, NULL);
			if (r < 0)
				return (void *)(intptr_t)r;
			i += r;
			s->accepted += r;
		} else if (s->mode == 1 && i % 64 == 0) {
			weft_future *f;
			int r = weft_pool_submit(s->p, tiny, (void *)i, &f);
			if (r < 0)
				return (void *)(intptr_t)r;
			void *res;
			r = weft_future_wait(f, WEFT_FOREVER, &res);
			weft_future_release(f);
			if (r < 0 || (long)res != i)
				return (void *)-1;
			i++;
			s->accepted++;
		} else {
			int r = weft_pool_submit(s->p, tiny, NULL, NULL);
			if (r < 0)
				return (void *)(intptr_t)r;
			i++;
			s->accepted++;
		}
	}
	return NULL;
}

static long run_submitters(weft_pool *p, int k, long each, int mode)
{
	struct submitter *s = calloc((size_t)k, sizeof(*s));
	ASSERT_NOT_NULL(s);
	for (int i = 0; i < k; i++) {
		s[i].p = p;
		s[i].n = each;
		s[i].mode = mode < 0 ? i % 3 : mode;
		ASSERT_EQ(pthread_create(&s[i].th, NULL, submit_main, &s[i]), 0);
	}
	long total = 0;
	for (int i = 0; i < k; i++) {
		void *ret;
		pthread_join(s[i].th, &ret);
		ASSERT_NULL(ret);
		total += s[i].accepted;
	}
	free(s);
	return total;
}

TEST_TIMEOUT(many_submitters, 120)
{
	weft_metrics *m;
	weft_pool *p = make(&m, 2, 4, 0, 0, 0);
	atomic_store(&ran, 0);
	long each = scaled(500000);
	long total = run_submitters(p, 4, each, -1);
	ASSERT_EQ(total, 4 * each);
	wait_ran(p, m, total);
	weft_pool_destroy(p);
	weft_metrics_destroy(m);
}

TEST_TIMEOUT(bounded_block, 120)
{
	weft_metrics *m;
	weft_pool *p = make(&m, 2, 2, 256, WEFT_POOL_FULL_BLOCK, 0);
	atomic_store(&ran, 0);
	long each = scaled(250000);
	long total = run_submitters(p, 4, each, 0);
	ASSERT_EQ(total, 4 * each);
	wait_ran(p, m, total);
	ASSERT_LE(atomic_load(&p->reserved), 0);
	weft_pool_destroy(p);
	weft_metrics_destroy(m);
}

struct dropper {
	weft_pool *p;
	long n, accepted;
	pthread_t th;
};

static void *drop_main(void *arg)
{
	struct dropper *d = arg;
	for (long i = 0; i < d->n; i++) {
		int r = weft_pool_submit(d->p, tiny, NULL, NULL);
		if (r == 0)
			d->accepted++;
		else if (r == -ESHUTDOWN)
			break;
	}
	return NULL;
}

TEST_TIMEOUT(bounded_drop_oldest, 120)
{
	weft_metrics *m;
	weft_pool *p = make(&m, 2, 2, 64, WEFT_POOL_FULL_DROP_OLDEST, 0);
	atomic_store(&ran, 0);
	struct dropper d[3];
	long each = scaled(200000);
	for (int i = 0; i < 3; i++) {
		d[i] = (struct dropper){.p = p, .n = each};
		ASSERT_EQ(pthread_create(&d[i].th, NULL, drop_main, &d[i]), 0);
	}
	long accepted = 0;
	for (int i = 0; i < 3; i++) {
		pthread_join(d[i].th, NULL);
		accepted += d[i].accepted;
	}
	ASSERT_EQ(accepted, 3 * each); /* drop-oldest always admits the new task */
	ASSERT_OK(weft_pool_shutdown(p, WEFT_POOL_DRAIN, WEFT_FOREVER));
	/* Every accepted task ran or was dropped; the queue never held more than 64. */
	ASSERT_EQ(atomic_load(&ran) + (long)atomic_load(&p->cancelled), accepted);
	weft_pool_destroy(p);
	weft_metrics_destroy(m);
}

/* A tree of tasks: each node submits `fan` children to the same pool and waits for them. */
static weft_pool *tree_pool;

static void *node(void *arg)
{
	long depth = (long)arg;
	atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
	if (depth == 0)
		return (void *)1;
	weft_future *f[4];
	int k = 0;
	for (; k < 4; k++) {
		if (weft_pool_submit(tree_pool, node, (void *)(depth - 1), &f[k]) < 0)
			break;
	}
	long sum = 1;
	for (int i = 0; i < k; i++) {
		void *r = NULL;
		if (weft_future_wait(f[i], WEFT_FOREVER, &r) == 0)
			sum += (long)r;
		weft_future_release(f[i]);
	}
	return (void *)sum;
}

TEST_TIMEOUT(task_trees, 120)
{
	for (int bounded = 0; bounded < 2; bounded++) {
		weft_metrics *m;
		tree_pool = make(&m, 2, 4, bounded ? 32 : 0, WEFT_POOL_FULL_BLOCK, 0);
		atomic_store(&ran, 0);
		long depth = th_scale() > 2 ? 5 : 7; /* 4^7 leaves: 21845 nodes */
		long nodes = 0, width = 1;
		for (long d = 0; d <= depth; d++, width *= 4)
			nodes += width;
		int rounds = th_scale() > 2 ? 2 : 10;
		for (int r = 0; r < rounds; r++) {
			weft_future *f;
			ASSERT_OK(weft_pool_submit(tree_pool, node, (void *)depth, &f));
			void *res;
			ASSERT_OK(weft_future_wait(f, WEFT_FOREVER, &res));
			ASSERT_EQ((long)res, nodes);
			weft_future_release(f);
		}
		ASSERT_EQ(atomic_load(&ran), rounds * nodes);
		weft_pool_destroy(tree_pool);
		weft_metrics_destroy(m);
	}
}

TEST_TIMEOUT(grow_and_retire_churn, 120)
{
	weft_metrics *m;
	weft_pool *p = make(&m, 1, 8, 0, 0, WEFT_MSEC(2));
	atomic_store(&ran, 0);
	long total = 0;
	int rounds = th_scale() > 2 ? 10 : 40;
	int max_seen = 0;
	for (int r = 0; r < rounds; r++) {
		total += run_submitters(p, 3, scaled(20000), r % 3);
		int n = (int)atomic_load(&p->nlive);
		max_seen = n > max_seen ? n : max_seen;
		th_sleep_ms(r % 4 == 0 ? 10 : 1); /* some pauses let threads retire */
	}
	wait_ran(p, m, total);
	ASSERT_LE(max_seen, 8);
	weft_pool_destroy(p);
	weft_metrics_destroy(m);
}

TEST_TIMEOUT(shutdown_under_load, 120)
{
	int rounds = th_scale() > 2 ? 5 : 20;
	for (int r = 0; r < rounds; r++) {
		weft_metrics *m;
		weft_pool *p = make(&m, 2, 4, r % 2 ? 128 : 0, WEFT_POOL_FULL_BLOCK, 0);
		atomic_store(&ran, 0);
		struct dropper d[3];
		for (int i = 0; i < 3; i++) {
			d[i] = (struct dropper){.p = p, .n = 1L << 40};
			ASSERT_EQ(pthread_create(&d[i].th, NULL, drop_main, &d[i]), 0);
		}
		th_sleep_ms(5);
		int how = r % 3 ? WEFT_POOL_DRAIN : WEFT_POOL_CANCEL;
		ASSERT_OK(weft_pool_shutdown(p, how, WEFT_FOREVER));
		long accepted = 0;
		for (int i = 0; i < 3; i++) {
			pthread_join(d[i].th, NULL); /* they end when submits fail */
			accepted += d[i].accepted;
		}
		ASSERT_EQ(atomic_load(&ran) + (long)atomic_load(&p->cancelled), accepted);
		weft_pool_destroy(p);
		weft_metrics_destroy(m);
	}
}
