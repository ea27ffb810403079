/* ownerdied: a thread ends while it holds a robust mutex; the next lock returns EOWNERDEAD, the
 * program makes the mutex consistent and goes on. Answer: an owner-died report, exit status 0. */
#include "prog.h"

static pthread_mutex_t lock;

int lock_after_owner_died(void);

static void *doomed(void *arg)
{
	pthread_mutex_lock(&lock);
	return arg; /* ends holding it */
}

int lock_after_owner_died(void)
{
	int r = pthread_mutex_lock(&lock);
	if (r == EOWNERDEAD)
		pthread_mutex_consistent(&lock);
	pthread_mutex_unlock(&lock);
	return r;
}

int main(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	prog_check(pthread_mutex_init(&lock, &a), "pthread_mutex_init");
	pthread_t t = prog_thread(doomed, NULL, "doomed");
	pthread_join(t, NULL);
	int r = lock_after_owner_died();
	if (r != EOWNERDEAD) {
		fprintf(stderr, "ownerdied: want EOWNERDEAD, got %s\n", strerror(r));
		return 1;
	}
	return 0;
}
