/* farfuture: a timed lock with an "infinite" deadline, tv_sec = LONG_MAX, as programs write
 * "never": it must wait until the holder lets go (300 ms), not time out at once. Also
 * sem_timedwait with a deadline beyond what int64 nanoseconds hold, and pthread_mutex_clocklock on
 * CLOCK_MONOTONIC with LONG_MAX. Answer: "farfuture: all 3 waits got the lock", nothing found. */
#include "prog.h"

#include <limits.h>
#include <semaphore.h>
#include <stdint.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t held;
static sem_t posted;

static void *holder(void *arg)
{
	for (int i = 0; i < 2; i++) {
		pthread_mutex_lock(&lock);
		pthread_barrier_wait(&held);
		prog_sleep_ms(300);
		pthread_mutex_unlock(&lock);
		pthread_barrier_wait(&held);
	}
	prog_sleep_ms(300);
	sem_post(&posted);
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_barrier_init(&held, NULL, 2);
	sem_init(&posted, 0, 0);
	pthread_t t = prog_thread(holder, NULL, "holder");
	int ok = 0;

	pthread_barrier_wait(&held);
	struct timespec never = {LONG_MAX, 0};
	int r = pthread_mutex_timedlock(&lock, &never);
	printf("pthread_mutex_timedlock(LONG_MAX): %d\n", r);
	if (r == 0) {
		ok++;
		pthread_mutex_unlock(&lock);
	}
	pthread_barrier_wait(&held);

	pthread_barrier_wait(&held);
	r = pthread_mutex_clocklock(&lock, CLOCK_MONOTONIC, &never);
	printf("pthread_mutex_clocklock(MONOTONIC, LONG_MAX): %d\n", r);
	if (r == 0) {
		ok++;
		pthread_mutex_unlock(&lock);
	}
	pthread_barrier_wait(&held);

	struct timespec huge = {INT64_MAX / 1000000000 + 5, 0};
	r = sem_timedwait(&posted, &huge) == 0 ? 0 : errno;
	printf("sem_timedwait(huge): %d\n", r);
	ok += r == 0;
	pthread_join(t, NULL);
	printf("farfuture: all %d waits got the lock\n", ok);
	return ok == 3 ? 0 : 1;
}
