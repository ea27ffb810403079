/* test-base.c: time, errors, the text buffer, fault injection and the lock-rank check. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "internal/alloc.h"
#include "internal/buf.h"
#include "internal/lock.h"

TEST(version_matches_macros)
{
	char want[32];
	snprintf(want, sizeof(want), "%d.%d.%d", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR,
	         WEFT_VERSION_PATCH);
	ASSERT_STR_EQ(weft_version(), want);
}

TEST(now_is_monotonic_clock)
{
	struct timespec ts;
	int64_t a = weft_now();
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t b = weft_now();
	int64_t mid = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	ASSERT_LE(a, mid);
	ASSERT_LE(mid, b);
	for (int i = 0; i < 1000; i++) {
		int64_t c = weft_now();
		ASSERT_LE(b, c);
		b = c;
	}
}

TEST(deadline_in_saturates_and_forever)
{
	ASSERT_EQ(weft_deadline_in(-1), WEFT_FOREVER);
	ASSERT_EQ(weft_deadline_in(-12345), WEFT_FOREVER);
	ASSERT_EQ(weft_deadline_in(INT64_MAX), INT64_MAX);
	int64_t before = weft_now();
	int64_t d = weft_deadline_in(WEFT_MSEC(5));
	ASSERT_GE(d, before + WEFT_MSEC(5));
	ASSERT_LE(d, weft_now() + WEFT_MSEC(5));
	ASSERT_EQ(WEFT_SEC(2), 2000000000);
	ASSERT_EQ(WEFT_USEC(3), 3000);
}

TEST(sleep_until_waits_and_validates)
{
	ASSERT_ERR(weft_sleep_until(-2), -EINVAL);
	int64_t start = weft_now();
	ASSERT_OK(weft_sleep_until(start + WEFT_MSEC(20)));
	ASSERT_GE(weft_now() - start, WEFT_MSEC(20));
	/* a deadline in the past returns at once */
	start = weft_now();
	ASSERT_OK(weft_sleep_until(start - WEFT_SEC(1)));
	ASSERT_LT(weft_now() - start, WEFT_SEC(1));
}

static void on_alarm(int sig)
{
	(void)sig;
}

TEST(sleep_until_is_not_cut_short_by_signals)
{
	struct sigaction sa = {.sa_handler = on_alarm};
	sigaction(SIGALRM, &sa, NULL);
	timer_t t;
	struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGALRM};
	ASSERT_EQ(timer_create(CLOCK_MONOTONIC, &ev, &t), 0);
	struct itimerspec its = {.it_value = {0, 5000000}, .it_interval = {0, 5000000}};
	timer_settime(t, 0, &its, NULL);
	int64_t start = weft_now();
	errno = 1234;
	ASSERT_OK(weft_sleep_until(start + WEFT_MSEC(60)));
	ASSERT_EQ(errno, 1234); /* errno preserved */
	ASSERT_GE(weft_now() - start, WEFT_MSEC(60));
	timer_delete(t);
}

TEST(thread_cpu_time_advances_with_work)
{
	int64_t a = weft_thread_cpu_time();
	volatile uint64_t x = 0;
	int64_t end = weft_now() + WEFT_MSEC(30);
	while (weft_now() < end)
		x++;
	int64_t b = weft_thread_cpu_time();
	ASSERT_GT(b, a);
	/* sleeping costs no CPU time, give or take scheduling noise */
	a = weft_thread_cpu_time();
	weft_sleep_until(weft_deadline_in(WEFT_MSEC(50)));
	ASSERT_LT(weft_thread_cpu_time() - a, WEFT_MSEC(25));
}

TEST(strerror_and_errname)
{
	ASSERT_STR_EQ(weft_errname(-ENOMEM), "ENOMEM");
	ASSERT_STR_EQ(weft_errname(ENOMEM), "ENOMEM");
	ASSERT_STR_EQ(weft_errname(-ECANCELED), "ECANCELED");
	ASSERT_STR_EQ(weft_errname(-ETIMEDOUT), "ETIMEDOUT");
	ASSERT_STR_EQ(weft_strerror(-ENOENT), "No such file or directory");
	ASSERT_STR_EQ(weft_strerror(-EAGAIN), weft_strerror(EAGAIN));
	ASSERT_STR_EQ(weft_errname(-99999), "EUNKNOWN");
	ASSERT_STR_EQ(weft_strerror(-99999), "Unknown error");
	ASSERT_STR_EQ(weft_errname(0), "0");
	ASSERT_NOT_NULL(weft_strerror(0));
	ASSERT_NOT_NULL(weft_strerror(INT32_MIN + 1));
	ASSERT_STR_EQ(weft_strerror(INT32_MIN), "Unknown error");
	ASSERT_STR_EQ(weft_errname(INT32_MIN), "EUNKNOWN");
}

TEST(buf_appends_and_escapes)
{
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_puts(&b, "a");
	weft__buf_printf(&b, "%d-%s", 42, "x");
	weft__buf_putc(&b, ' ');
	weft__buf_json_str(&b, "q\"b\\n\n\t\x01");
	weft__buf_putc(&b, ' ');
	weft__buf_json_num(&b, 3);
	weft__buf_putc(&b, ' ');
	weft__buf_json_num(&b, 0.5);
	weft__buf_putc(&b, ' ');
	weft__buf_json_num(&b, 1.0 / 0.0);
	char *text;
	size_t len;
	ASSERT_OK(weft__buf_finish(&b, &text, &len));
	ASSERT_STR_EQ(text, "a42-x \"q\\\"b\\\\n\\n\\t\\u0001\" 3 0.5 null");
	ASSERT_EQ(len, strlen(text));
	free(text);

	/* long printf output goes through the slow path */
	weft__buf b2 = WEFT__BUF_INIT;
	char big[1000];
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	weft__buf_printf(&b2, "<%s>", big);
	ASSERT_OK(weft__buf_finish(&b2, &text, NULL));
	ASSERT_EQ(strlen(text), 1001);
	free(text);

	/* an empty buffer finishes as "" */
	weft__buf b3 = WEFT__BUF_INIT;
	ASSERT_OK(weft__buf_finish(&b3, &text, &len));
	ASSERT_STR_EQ(text, "");
	ASSERT_EQ(len, 0);
	free(text);
}

TEST(buf_errors_are_sticky_and_free_memory)
{
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_puts(&b, "before");
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	for (int i = 0; i < 100; i++)
		weft__buf_puts(&b, "0123456789abcdefghijklmnopqrstuvwxyz");
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	weft__buf_puts(&b, "after"); /* sticky: still an error */
	char *text = (char *)1;
	ASSERT_ERR(weft__buf_finish(&b, &text, NULL), -ENOMEM);
	ASSERT_EQ((uintptr_t)text, 1); /* not written on failure */
	ASSERT_NULL(b.data);
}

TEST(fault_injection_counts_down)
{
	weft__fault_arm(WEFT__FAULT_ALLOC, 3, false);
	void *a = weft__malloc(8), *b = weft__malloc(8), *c = weft__malloc(8), *d = weft__malloc(8);
	ASSERT_NOT_NULL(a);
	ASSERT_NOT_NULL(b);
	ASSERT_NULL(c);
	ASSERT_NOT_NULL(d);
	ASSERT_EQ(weft__fault_injected(WEFT__FAULT_ALLOC), 1);
	free(a);
	free(b);
	free(d);

	weft__fault_arm(WEFT__FAULT_ALLOC, 2, true);
	a = weft__strdup("x");
	ASSERT_NOT_NULL(a);
	ASSERT_NULL(weft__calloc(1, 1));
	ASSERT_NULL(weft__realloc(NULL, 1));
	ASSERT_NULL(weft__strdup("y"));
	ASSERT_EQ(weft__fault_injected(WEFT__FAULT_ALLOC), 3);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	b = weft__malloc(1);
	ASSERT_NOT_NULL(b);
	free(a);
	free(b);
}

struct thread_check {
	int ran;
	char name[16];
	int term_blocked;
};

static void *thread_fn(void *arg)
{
	struct thread_check *c = arg;
	c->ran = 7;
	prctl(PR_GET_NAME, c->name, 0, 0, 0);
	/* weft's threads start with every signal blocked */
	sigset_t set;
	pthread_sigmask(SIG_SETMASK, NULL, &set);
	c->term_blocked = sigismember(&set, SIGTERM);
	return NULL;
}

TEST(thread_create_blocks_signals_names_and_faults)
{
	struct thread_check c = {0};
	pthread_t t;
	ASSERT_OK(weft__thread_create(&t, "weft-test-thread-long-name", thread_fn, &c));
	pthread_join(t, NULL);
	ASSERT_EQ(c.ran, 7);
	ASSERT_STR_EQ(c.name, "weft-test-threa");
	ASSERT_EQ(c.term_blocked, 1);

	weft__fault_arm(WEFT__FAULT_THREAD, 1, false);
	ASSERT_ERR(weft__thread_create(&t, "x", thread_fn, &c), -EAGAIN);
	/* the start record's allocation fails cleanly too */
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, false);
	ASSERT_ERR(weft__thread_create(&t, "x", thread_fn, &c), -ENOMEM);
}

#ifdef WEFT_DEBUG_LOCKS
static weft__mutex outer = WEFT__MUTEX_INIT(WEFT__RANK_METRICS_SERVER);
static weft__mutex inner = WEFT__MUTEX_INIT(WEFT__RANK_METRICS);

static void wrong_order(void *arg)
{
	(void)arg;
	signal(SIGABRT, SIG_DFL);
	weft__mutex_lock(&inner);
	weft__mutex_lock(&outer); /* rank violation: aborts */
	weft__mutex_unlock(&outer);
	weft__mutex_unlock(&inner);
}

TEST(lock_ranks_are_checked)
{
	/* the right order passes, released in any order */
	weft__mutex_lock(&outer);
	weft__mutex_lock(&inner);
	weft__mutex_unlock(&outer);
	weft__mutex_unlock(&inner);

	pid_t pid = th_spawn_fn(wrong_order, NULL);
	int st = th_stop(pid, 0, 10);
	ASSERT_TRUE(WIFSIGNALED(st));
	ASSERT_EQ(WTERMSIG(st), SIGABRT);
}
#else
TEST(lock_ranks_are_checked)
{
	SKIP("this build does not check lock ranks (debug_locks off)");
}
#endif

TEST(rank_names)
{
	ASSERT_STR_EQ(weft__lock_rank_name(WEFT__RANK_METRICS), "metrics");
	ASSERT_STR_EQ(weft__lock_rank_name(WEFT__RANK_COUNT), "?");
}
