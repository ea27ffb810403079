/* rwcycle: a reader/writer lock in a cycle. reader holds the rwlock for reading and asks for the
 * mutex; writer holds the mutex and asks for the rwlock for writing, which waits for the reader
 * (glibc's rwlock names no reader: the monitor knows it from its held lists). On x86-64 the reader
 * takes the rwlock with pthread_rwlock_rdlock@GLIBC_2.2.5, the version programs linked before
 * glibc 2.34 reference: the writer's owner is known only if that version is wrapped too. Answer:
 * a deadlock of reader and writer. */
#include "prog.h"

#if defined(__x86_64__)
int rdlock_2_2_5(pthread_rwlock_t *l);
__asm__(".symver rdlock_2_2_5, pthread_rwlock_rdlock@GLIBC_2.2.5");
#define OLD_RDLOCK rdlock_2_2_5
#else
#define OLD_RDLOCK pthread_rwlock_rdlock
#endif

static pthread_rwlock_t table = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;

void reader_takes_mutex(void);
void writer_takes_table(void);

void reader_takes_mutex(void)
{
	pthread_mutex_lock(&mutex);
	pthread_mutex_unlock(&mutex);
}

void writer_takes_table(void)
{
	pthread_rwlock_wrlock(&table);
	pthread_rwlock_unlock(&table);
}

static void *reader(void *arg)
{
	OLD_RDLOCK(&table);
	pthread_barrier_wait(&both_hold_one);
	reader_takes_mutex();
	pthread_rwlock_unlock(&table);
	return arg;
}

static void *writer(void *arg)
{
	pthread_mutex_lock(&mutex);
	pthread_barrier_wait(&both_hold_one);
	writer_takes_table();
	pthread_mutex_unlock(&mutex);
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_barrier_init(&both_hold_one, NULL, 2);
	pthread_t r = prog_thread(reader, NULL, "reader");
	pthread_t w = prog_thread(writer, NULL, "writer");
	pthread_join(r, NULL);
	pthread_join(w, NULL);
	return 0;
}
