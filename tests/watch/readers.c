/* readers: four readers hold a reader lock at once and take a mutex under it; later another
 * thread takes the mutex and then the reader lock for reading. Read mode at both ends cannot
 * deadlock (no writer). Answer: nothing, also with prediction. */
#include "prog.h"

static pthread_rwlock_t table = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t all_read;

static void *reader(void *arg)
{
	pthread_rwlock_rdlock(&table);
	pthread_barrier_wait(&all_read);
	pthread_mutex_lock(&mutex);
	pthread_mutex_unlock(&mutex);
	pthread_rwlock_unlock(&table);
	return arg;
}

static void *late(void *arg)
{
	pthread_mutex_lock(&mutex);
	pthread_rwlock_rdlock(&table);
	pthread_rwlock_unlock(&table);
	pthread_mutex_unlock(&mutex);
	return arg;
}

int main(void)
{
	pthread_barrier_init(&all_read, NULL, 4);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		t[i] = prog_thread(reader, NULL, "reader");
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	pthread_t l = prog_thread(late, NULL, "late");
	pthread_join(l, NULL);
	return 0;
}
