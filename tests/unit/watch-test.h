/* watch-test.h: what the lock monitor's unit tests (test-watch.c, test-predict.c) share: an
 * on_report callback that keeps the first MAX_REPORTS reports (and counts them all), a count of
 * those of one event, and the caller's thread id. Static: each test uses what it needs. */
#ifndef WEFT_TESTS_WATCH_TEST_H
#define WEFT_TESTS_WATCH_TEST_H

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <weft/watch.h>

#define MAX_REPORTS 32
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;
static weft_watch_report reps[MAX_REPORTS];
static int nreps;

/* On the monitor's thread. */
static inline void on_report(const weft_watch_report *r, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rep_mu);
	if (nreps < MAX_REPORTS)
		reps[nreps] = *r;
	nreps++;
	pthread_mutex_unlock(&rep_mu);
}

static inline int count_reports(weft_watch_event ev)
{
	int n = 0;
	pthread_mutex_lock(&rep_mu);
	for (int i = 0; i < nreps && i < MAX_REPORTS; i++)
		n += reps[i].event == ev;
	pthread_mutex_unlock(&rep_mu);
	return n;
}

static inline pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

#endif
