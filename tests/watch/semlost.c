/* semlost: a semaphore that is never posted. sem-waiter waits for it forever; the main thread
 * gives up after 1.5 s (or argv[1] ms) and exits with status 1. Answer: a long-wait report for
 * sem-waiter (with a long-wait threshold well under that). */
#include "prog.h"

#include <semaphore.h>

static sem_t never_posted;

void wait_for_post_never_made(void);

void wait_for_post_never_made(void)
{
	while (sem_wait(&never_posted) != 0 && errno == EINTR)
		;
}

static void *sem_waiter(void *arg)
{
	wait_for_post_never_made();
	return arg;
}

int main(int argc, char **argv)
{
	long give_up_ms = argc > 1 ? atol(argv[1]) : 1500;
	sem_init(&never_posted, 0, 0);
	pthread_t t = prog_thread(sem_waiter, NULL, "sem-waiter");
	pthread_detach(t);
	prog_sleep_ms(give_up_ms);
	fprintf(stderr, "semlost: nobody posted\n");
	exit(1);
}
