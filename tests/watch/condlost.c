/* condlost: a condition that is never signalled. waiter waits for `ready` with a deadline (1.5 s,
 * or argv[1] ms), nobody sets it, and the program gives up and fails. Answer: a cond-wait report
 * for waiter (with a cond-wait threshold well under the deadline), and exit status 1. On x86-64
 * the wait is pthread_cond_timedwait@GLIBC_2.2.5, the condvar ABI before glibc 2.3.2 (the
 * pthread_cond_t holds a pointer to the real condvar, made on first use; the all-zero
 * PTHREAD_COND_INITIALIZER is valid in both): the report shows that version is wrapped, and the
 * program's result that it reached the old function. */
#include "prog.h"

#if defined(__x86_64__)
int timedwait_2_2_5(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t);
__asm__(".symver timedwait_2_2_5, pthread_cond_timedwait@GLIBC_2.2.5");
#define OLD_TIMEDWAIT timedwait_2_2_5
#else
#define OLD_TIMEDWAIT pthread_cond_timedwait
#endif

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int ready;
static long give_up_ms = 1500;

int wait_for_signal_never_sent(void);

int wait_for_signal_never_sent(void)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += give_up_ms / 1000;
	deadline.tv_nsec += (give_up_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	int r = 0;
	pthread_mutex_lock(&lock);
	while (!ready && r != ETIMEDOUT)
		r = OLD_TIMEDWAIT(&changed, &lock, &deadline);
	pthread_mutex_unlock(&lock);
	return r;
}

static void *waiter(void *arg)
{
	return (void *)(long)wait_for_signal_never_sent();
}

int main(int argc, char **argv)
{
	if (argc > 1)
		give_up_ms = atol(argv[1]);
	void *r;
	pthread_t t = prog_thread(waiter, NULL, "waiter");
	pthread_join(t, &r);
	if ((long)r == ETIMEDOUT) {
		fprintf(stderr, "condlost: nobody signalled\n");
		return 1;
	}
	return 0;
}
