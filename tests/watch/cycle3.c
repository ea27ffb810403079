/* cycle3: three threads in a ring. Each takes its own lock, waits for the other two to hold
 * theirs, then asks for the next one's: first (A then B), second (B then C), third (C then A).
 * Answer: one deadlock of the three threads. */
#include "prog.h"

static pthread_mutex_t locks[3] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                   PTHREAD_MUTEX_INITIALIZER};
static pthread_barrier_t all_hold_one;

void ring_takes_next(int i);

void ring_takes_next(int i)
{
	pthread_mutex_lock(&locks[(i + 1) % 3]);
	pthread_mutex_unlock(&locks[(i + 1) % 3]);
}

static void *ring_member(void *arg)
{
	int i = (int)(long)arg;
	pthread_mutex_lock(&locks[i]);
	pthread_barrier_wait(&all_hold_one);
	ring_takes_next(i);
	pthread_mutex_unlock(&locks[i]);
	return NULL;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_barrier_init(&all_hold_one, NULL, 3);
	static const char *names[3] = {"first", "second", "third"};
	pthread_t t[3];
	for (long i = 0; i < 3; i++)
		t[i] = prog_thread(ring_member, (void *)i, names[i]);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	return 0;
}
