/* timedcycle: two threads take A then B and B then A with pthread_mutex_timedlock and back off on
 * ETIMEDOUT, a classic way to avoid deadlocks: they do form a cycle, for 1 s, and it ends by
 * itself. Answer: a deadlock reported with "ends":true, and no action (--on-deadlock exit does
 * not end the program, which exits 0 after "timedcycle: backed off"). */
#include "prog.h"

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;

void timed_takes_second(pthread_mutex_t *second, int *result);

void timed_takes_second(pthread_mutex_t *second, int *result)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 1;
	*result = pthread_mutex_timedlock(second, &ts);
	if (*result == 0)
		pthread_mutex_unlock(second);
}

static int results[2];

static void *taker(void *arg)
{
	int i = (int)(long)arg;
	pthread_mutex_t *first = i ? &lock_b : &lock_a, *second = i ? &lock_a : &lock_b;
	pthread_mutex_lock(first);
	pthread_barrier_wait(&both_hold_one);
	timed_takes_second(second, &results[i]);
	pthread_mutex_unlock(first);
	return NULL;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_barrier_init(&both_hold_one, NULL, 2);
	pthread_t a = prog_thread(taker, (void *)0L, "first-a");
	pthread_t b = prog_thread(taker, (void *)1L, "first-b");
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	/* at least one of them timed out and backed off */
	int backed = (results[0] == ETIMEDOUT) + (results[1] == ETIMEDOUT);
	printf("timedcycle: backed off (%d timed out)\n", backed);
	return backed ? 0 : 1;
}
