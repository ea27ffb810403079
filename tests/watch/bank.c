/* bank: the bank transfer with locks of one class. The accounts' mutexes are initialised in one
 * loop (one init site: one lock class for prediction; the count is read at run time so the loop
 * stays one loop). first moves money from account 0 to 1 (locks 0 then 1) and ends; only then
 * does second move money from 1 to 0 (locks 1 then 0). Answer: nothing without prediction; with
 * it, one inversion whose two acquisitions are first's (0 then 1) and second's (1 then 0). */
#include "prog.h"

#define ACCOUNTS 4

static pthread_mutex_t account_lock[ACCOUNTS];
static long balance[ACCOUNTS];
static volatile int n_accounts = 2;

void transfer(int from, int to, long amount);
void first_pays_0_to_1(void);
void second_pays_1_to_0(void);

void transfer(int from, int to, long amount)
{
	pthread_mutex_lock(&account_lock[from]);
	pthread_mutex_lock(&account_lock[to]);
	balance[from] -= amount;
	balance[to] += amount;
	pthread_mutex_unlock(&account_lock[to]);
	pthread_mutex_unlock(&account_lock[from]);
}

void first_pays_0_to_1(void)
{
	transfer(0, 1, 10);
}

void second_pays_1_to_0(void)
{
	transfer(1, 0, 5);
}

static void *first(void *arg)
{
	first_pays_0_to_1();
	return arg;
}

static void *second(void *arg)
{
	second_pays_1_to_0();
	return arg;
}

int main(int argc, char **argv)
{
	prog_guard(argc, argv, 20000);
	for (int i = 0; i < n_accounts; i++) {
		prog_check(pthread_mutex_init(&account_lock[i], NULL), "pthread_mutex_init");
		balance[i] = 100;
	}
	pthread_t t = prog_thread(first, NULL, "first");
	pthread_join(t, NULL);
	t = prog_thread(second, NULL, "second");
	pthread_join(t, NULL);
	if (balance[0] + balance[1] != 200) {
		fprintf(stderr, "bank: balances %ld + %ld\n", balance[0], balance[1]);
		return 1;
	}
	return 0;
}
