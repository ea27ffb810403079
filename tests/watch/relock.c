/* relock: a thread locks a normal (default) mutex it already holds, which waits forever.
 * Answer: a self-deadlock of the thread "relocker". */
#include "prog.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void relock_held_mutex(void);

void relock_held_mutex(void)
{
	pthread_mutex_lock(&lock);
	pthread_mutex_unlock(&lock);
}

static void *relocker(void *arg)
{
	pthread_mutex_lock(&lock);
	relock_held_mutex();
	pthread_mutex_unlock(&lock);
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_t t = prog_thread(relocker, NULL, "relocker");
	pthread_join(t, NULL);
	return 0;
}
