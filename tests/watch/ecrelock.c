/* ecrelock: a program that relocks an error checking mutex to learn it already holds it, and
 * takes an rdlock under its own wrlock, handling EDEADLK both times: the calls return at once.
 * Answer: two self-deadlocks reported with "ends":true and "error":"EDEADLK", and no action
 * (--on-deadlock exit does not end the program, which exits 0). */
#include "prog.h"

void relock_error_checking(pthread_mutex_t *m, int *result);
void rdlock_under_wrlock(pthread_rwlock_t *l, int *result);

void relock_error_checking(pthread_mutex_t *m, int *result)
{
	*result = pthread_mutex_lock(m);
}

void rdlock_under_wrlock(pthread_rwlock_t *l, int *result)
{
	*result = pthread_rwlock_rdlock(l);
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	int r1, r2;
	pthread_mutex_lock(&m);
	relock_error_checking(&m, &r1);
	pthread_mutex_unlock(&m);
	pthread_rwlock_wrlock(&l);
	rdlock_under_wrlock(&l, &r2);
	pthread_rwlock_unlock(&l);
	printf("ecrelock: relock %d, rdlock %d (EDEADLK %d): handled\n", r1, r2, EDEADLK);
	return r1 == EDEADLK && r2 == EDEADLK ? 0 : 1;
}
