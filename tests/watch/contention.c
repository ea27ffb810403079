/* contention: four threads hammer one mutex (short holds, many contended acquisitions), bounded
 * at 4 x 50000 acquisitions. Answer: nothing (plain contention is no deadlock and no long wait);
 * exit status 0 when the count is right. */
#include "prog.h"

#define THREADS 4
#define ROUNDS 50000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *hammer(void *arg)
{
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(&lock);
		counter++;
		pthread_mutex_unlock(&lock);
	}
	return arg;
}

int main(void)
{
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		t[i] = prog_thread(hammer, NULL, "hammer");
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	if (counter != (long)THREADS * ROUNDS) {
		fprintf(stderr, "contention: %ld, want %ld\n", counter, (long)THREADS * ROUNDS);
		return 1;
	}
	return 0;
}
