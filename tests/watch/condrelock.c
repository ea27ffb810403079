/* condrelock: a deadlock through a condition wait's re-lock. "sleeper" holds L and waits on C
 * with M; main takes M, signals C, then takes L: the sleeper, woken, retakes M inside
 * pthread_cond_wait, held by main. Neither can go on (the guard ends the program). No wrapper
 * sees the re-lock (it happens inside glibc); the watchdog finds it from outside (the sleeper is
 * blocked in futex on M, owned by main): answer: a deadlock of main (waiting for L, owned by the
 * sleeper) and the sleeper (in a condition wait on C, retaking M, owned by main). */
#include "prog.h"

static pthread_mutex_t lock_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_l = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int ready;

void sleeper_waits(void);
void main_takes_l(void);

void sleeper_waits(void)
{
	pthread_cond_wait(&cond, &lock_m);
}

void main_takes_l(void)
{
	pthread_mutex_lock(&lock_l);
}

static void *sleeper(void *arg)
{
	pthread_mutex_lock(&lock_l);
	pthread_mutex_lock(&lock_m);
	ready = 1;
	sleeper_waits();
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	prog_thread(sleeper, NULL, "sleeper");
	for (;;) {
		pthread_mutex_lock(&lock_m);
		if (ready)
			break;
		pthread_mutex_unlock(&lock_m);
		prog_sleep_ms(1);
	}
	/* the sleeper is inside pthread_cond_wait now (it released M to get there) */
	pthread_cond_signal(&cond);
	main_takes_l();
	return 0;
}
