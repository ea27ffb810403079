/* c11cycle: the two-lock cycle with C11 threads and mtx_t (mtx_lock is its own function in
 * glibc). On x86-64 the second thread calls mtx_lock@GLIBC_2.28, the version a program linked
 * against glibc 2.28 .. 2.33 references: the cycle is found only if that version is wrapped too.
 * Answer: a deadlock of the two threads. */
#include "prog.h"

#include <threads.h>

#if defined(__x86_64__)
int mtx_lock_2_28(mtx_t *m);
__asm__(".symver mtx_lock_2_28, mtx_lock@GLIBC_2.28");
#define OLD_MTX_LOCK mtx_lock_2_28
#else
#define OLD_MTX_LOCK mtx_lock
#endif

static mtx_t lock_a, lock_b;
static pthread_barrier_t both_hold_one;

void c11_first_takes_b(void);
void c11_second_takes_a(void);

void c11_first_takes_b(void)
{
	mtx_lock(&lock_b);
	mtx_unlock(&lock_b);
}

void c11_second_takes_a(void)
{
	OLD_MTX_LOCK(&lock_a);
	mtx_unlock(&lock_a);
}

static int first(void *arg)
{
	mtx_lock(&lock_a);
	pthread_barrier_wait(&both_hold_one);
	c11_first_takes_b();
	mtx_unlock(&lock_a);
	return arg != NULL;
}

static int second(void *arg)
{
	mtx_lock(&lock_b);
	pthread_barrier_wait(&both_hold_one);
	c11_second_takes_a();
	mtx_unlock(&lock_b);
	return arg != NULL;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	if (mtx_init(&lock_a, mtx_plain) != thrd_success ||
	    mtx_init(&lock_b, mtx_plain) != thrd_success)
		return 2;
	pthread_barrier_init(&both_hold_one, NULL, 2);
	thrd_t a, b;
	if (thrd_create(&a, first, NULL) != thrd_success ||
	    thrd_create(&b, second, NULL) != thrd_success)
		return 2;
	thrd_join(a, NULL);
	thrd_join(b, NULL);
	return 0;
}
