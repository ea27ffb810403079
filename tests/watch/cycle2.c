/* cycle2: the classic deadlock. alpha takes A then B, beta takes B then A; a barrier makes both
 * hold their first lock before either asks for its second. Answer: a deadlock of alpha and beta. */
#include "prog.h"

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;

void alpha_takes_b(void);
void beta_takes_a(void);

void alpha_takes_b(void)
{
	pthread_mutex_lock(&lock_b);
	pthread_mutex_unlock(&lock_b);
}

void beta_takes_a(void)
{
	pthread_mutex_lock(&lock_a);
	pthread_mutex_unlock(&lock_a);
}

static void *alpha(void *arg)
{
	pthread_mutex_lock(&lock_a);
	pthread_barrier_wait(&both_hold_one);
	alpha_takes_b();
	pthread_mutex_unlock(&lock_a);
	return arg;
}

static void *beta(void *arg)
{
	pthread_mutex_lock(&lock_b);
	pthread_barrier_wait(&both_hold_one);
	beta_takes_a();
	pthread_mutex_unlock(&lock_b);
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_barrier_init(&both_hold_one, NULL, 2);
	pthread_t a = prog_thread(alpha, NULL, "alpha");
	pthread_t b = prog_thread(beta, NULL, "beta");
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return 0;
}
