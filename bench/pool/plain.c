/* bench/pool/plain.c: the pool bench's plain C peer, written the way most C code writes a thread
 * pool: a singly linked list of malloc'd jobs (function, argument) under one mutex, one condition
 * variable that a submit signals once per job, and pthread workers that wait on it, pop the head
 * and run it outside the lock. Unbounded, no batching, no spinning, no per-worker queues.
 *
 * Invariants: head == NULL iff tail == NULL; both and `stop` are read and written only under mu.
 * Shutdown sets `stop`, broadcasts, and the workers leave once the list is empty (a drain).
 * Measures: what common.c's figures measure; leaves out what they leave out.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common.h"

#define WORKERS 2

struct job {
	void (*fn)(void *arg);
	void *arg;
	struct job *next;
};

struct plain_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	bool stop;
	void (*fn)(void *arg);
	pthread_t th[WORKERS];
	int started;
};

static void *worker(void *p)
{
	struct plain_pool *pool = p;
	for (;;) {
		pthread_mutex_lock(&pool->mu);
		while (pool->head == NULL && !pool->stop)
			pthread_cond_wait(&pool->cv, &pool->mu);
		struct job *j = pool->head;
		if (j == NULL) { /* stopping and drained */
			pthread_mutex_unlock(&pool->mu);
			return NULL;
		}
		pool->head = j->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		pthread_mutex_unlock(&pool->mu);
		j->fn(j->arg);
		free(j);
	}
}

static void plain_destroy(void *p)
{
	struct plain_pool *pool = p;
	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->mu);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->started; i++)
		pthread_join(pool->th[i], NULL);
	pthread_cond_destroy(&pool->cv);
	pthread_mutex_destroy(&pool->mu);
	free(pool);
}

static int plain_create(void **ret, int kind)
{
	struct plain_pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return -ENOMEM;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	pool->fn = kind == BENCH_TASK_ADD ? bench_task_add : bench_task_latency;
	for (; pool->started < WORKERS; pool->started++) {
		int r = pthread_create(&pool->th[pool->started], NULL, worker, pool);
		if (r != 0) {
			plain_destroy(pool);
			return -r;
		}
	}
	*ret = pool;
	return 0;
}

static int plain_submit(void *p, void *arg)
{
	struct plain_pool *pool = p;
	struct job *j = malloc(sizeof(*j));
	if (j == NULL)
		return -ENOMEM;
	j->fn = pool->fn;
	j->arg = arg;
	j->next = NULL;
	pthread_mutex_lock(&pool->mu);
	if (pool->tail != NULL)
		pool->tail->next = j;
	else
		pool->head = j;
	pool->tail = j;
	pthread_cond_signal(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct bench_pool_ops ops = {"plain", plain_create, plain_submit,
	                                          plain_destroy};
	return bench_pool_main(&ops, argc, argv);
}
