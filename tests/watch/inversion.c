/* inversion: a lock-order inversion that does not deadlock this time. first takes A then B and
 * ends; only then does second take B then A. Answer: nothing without prediction; with it, one
 * inversion whose two acquisitions are first's (A then B) and second's (B then A). */
#include "prog.h"

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

void first_order_a_then_b(void);
void second_order_b_then_a(void);

void first_order_a_then_b(void)
{
	pthread_mutex_lock(&lock_a);
	pthread_mutex_lock(&lock_b);
	pthread_mutex_unlock(&lock_b);
	pthread_mutex_unlock(&lock_a);
}

void second_order_b_then_a(void)
{
	pthread_mutex_lock(&lock_b);
	pthread_mutex_lock(&lock_a);
	pthread_mutex_unlock(&lock_a);
	pthread_mutex_unlock(&lock_b);
}

static void *first(void *arg)
{
	first_order_a_then_b();
	return arg;
}

static void *second(void *arg)
{
	second_order_b_then_a();
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
