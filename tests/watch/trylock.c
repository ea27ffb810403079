/* trylock: the other order, but with a trylock and a back-off, which cannot deadlock. first takes
 * A then B; second holds B and only tries A (backing off when busy). Answer: nothing, also with
 * prediction. */
#include "prog.h"

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

static void *first(void *arg)
{
	pthread_mutex_lock(&lock_a);
	pthread_mutex_lock(&lock_b);
	pthread_mutex_unlock(&lock_b);
	pthread_mutex_unlock(&lock_a);
	return arg;
}

static void *second(void *arg)
{
	for (;;) {
		pthread_mutex_lock(&lock_b);
		if (pthread_mutex_trylock(&lock_a) == 0)
			break;
		pthread_mutex_unlock(&lock_b); /* back off */
		sched_yield();
	}
	pthread_mutex_unlock(&lock_a);
	pthread_mutex_unlock(&lock_b);
	return arg;
}

int main(void)
{
	pthread_t t = prog_thread(first, NULL, "first");
	pthread_join(t, NULL);
	t = prog_thread(second, NULL, "second");
	pthread_join(t, NULL);
	return 0;
}
