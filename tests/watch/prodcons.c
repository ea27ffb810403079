/* prodcons: a bounded buffer, one producer and two consumers, with a mutex and two condition
 * variables; every wait is signalled. Answer: nothing, also with prediction; exit status 0 when
 * every item arrived once. */
#include "prog.h"

#define ITEMS 20000
#define SLOTS 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static long buf[SLOTS];
static int head, count;
static long long sum;

static void put(long v)
{
	pthread_mutex_lock(&lock);
	while (count == SLOTS)
		pthread_cond_wait(&not_full, &lock);
	buf[(head + count++) % SLOTS] = v;
	pthread_cond_signal(&not_empty);
	pthread_mutex_unlock(&lock);
}

static long get(void)
{
	pthread_mutex_lock(&lock);
	while (count == 0)
		pthread_cond_wait(&not_empty, &lock);
	long v = buf[head];
	head = (head + 1) % SLOTS;
	count--;
	pthread_cond_signal(&not_full);
	pthread_mutex_unlock(&lock);
	return v;
}

static void *producer(void *arg)
{
	for (long i = 1; i <= ITEMS; i++)
		put(i);
	put(-1);
	put(-1);
	return arg;
}

static void *consumer(void *arg)
{
	long v;
	while ((v = get()) > 0) {
		pthread_mutex_lock(&lock);
		sum += v;
		pthread_mutex_unlock(&lock);
	}
	return arg;
}

int main(void)
{
	pthread_t c1 = prog_thread(consumer, NULL, "consumer");
	pthread_t c2 = prog_thread(consumer, NULL, "consumer");
	pthread_t p = prog_thread(producer, NULL, "producer");
	pthread_join(p, NULL);
	pthread_join(c1, NULL);
	pthread_join(c2, NULL);
	long long want = (long long)ITEMS * (ITEMS + 1) / 2;
	if (sum != want) {
		fprintf(stderr, "prodcons: sum %lld, want %lld\n", sum, want);
		return 1;
	}
	return 0;
}
