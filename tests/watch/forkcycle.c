/* forkcycle: a deadlock across two processes. Two robust, process-shared mutexes live in
 * MAP_SHARED memory; the parent takes A, the child takes B, a process-shared barrier makes both
 * hold theirs, then the parent asks for B and the child for A. The wait-for graph spans the two
 * processes (the monitor's shared registry). Answer: a deadlock of two threads in two processes.
 *
 * Ending: when the monitor ends one process (--on-deadlock exit), the mutex it held is robust, so
 * the other process gets EOWNERDEAD, makes it consistent, and finishes. */
#include "prog.h"

#include <sys/mman.h>
#include <sys/wait.h>

struct shared {
	pthread_mutex_t a, b;
	pthread_barrier_t both_hold_one;
};

static struct shared *sh;

void parent_takes_b(void);
void child_takes_a(void);

static void take(pthread_mutex_t *m)
{
	int r = pthread_mutex_lock(m);
	if (r == EOWNERDEAD) {
		pthread_mutex_consistent(m);
		fprintf(stderr, "forkcycle %d: the other process died holding a lock\n", getpid());
	} else {
		prog_check(r, "pthread_mutex_lock");
	}
	pthread_mutex_unlock(m);
}

void parent_takes_b(void)
{
	take(&sh->b);
}

void child_takes_a(void)
{
	take(&sh->a);
}

static void init_shared_mutex(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	prog_check(pthread_mutex_init(m, &a), "pthread_mutex_init");
	pthread_mutexattr_destroy(&a);
}

int main(int argc, char **argv)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return 2;
	init_shared_mutex(&sh->a);
	init_shared_mutex(&sh->b);
	pthread_barrierattr_t ba;
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&sh->both_hold_one, &ba, 2);
	fflush(NULL);
	pid_t child = fork();
	if (child < 0)
		return 2;
	prog_guard(argc, argv, 20000);
	if (child == 0) {
		pthread_mutex_lock(&sh->b);
		pthread_barrier_wait(&sh->both_hold_one);
		child_takes_a();
		pthread_mutex_unlock(&sh->b);
		exit(0);
	}
	pthread_mutex_lock(&sh->a);
	pthread_barrier_wait(&sh->both_hold_one);
	parent_takes_b();
	pthread_mutex_unlock(&sh->a);
	int st;
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	return 0;
}
