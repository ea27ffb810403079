/* gate: both orders of A and B, but always under the gate lock G, so they cannot deadlock.
 * Answer: nothing, also with prediction. */
#include "prog.h"

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

static void *first(void *arg)
{
	pthread_mutex_lock(&gate);
	pthread_mutex_lock(&lock_a);
	pthread_mutex_lock(&lock_b);
	pthread_mutex_unlock(&lock_b);
	pthread_mutex_unlock(&lock_a);
	pthread_mutex_unlock(&gate);
	return arg;
}

static void *second(void *arg)
{
	pthread_mutex_lock(&gate);
	pthread_mutex_lock(&lock_b);
	pthread_mutex_lock(&lock_a);
	pthread_mutex_unlock(&lock_a);
	pthread_mutex_unlock(&lock_b);
	pthread_mutex_unlock(&gate);
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
