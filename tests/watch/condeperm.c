/* condeperm: pthread_cond_wait on an error checking mutex the thread does not hold fails with
 * EPERM (nothing released, nothing retaken). Then the thread takes B alone, and another thread
 * takes B then M: there is no order M -> B anywhere. Answer: nothing found, with --predict too. */
#include "prog.h"

static pthread_mutex_t lock_m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void *b_then_m(void *arg)
{
	pthread_mutex_lock(&lock_b);
	pthread_mutex_lock(&lock_m);
	pthread_mutex_unlock(&lock_m);
	pthread_mutex_unlock(&lock_b);
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_mutex_lock(&lock_m); /* M gets its class */
	pthread_mutex_unlock(&lock_m);
	int r = pthread_cond_wait(&cond, &lock_m);
	printf("condeperm: cond_wait without the mutex: %d (EPERM %d)\n", r, EPERM);
	pthread_mutex_lock(&lock_b);
	pthread_mutex_unlock(&lock_b);
	pthread_t t = prog_thread(b_then_m, NULL, "b-then-m");
	pthread_join(t, NULL);
	return r == EPERM ? 0 : 1;
}
