/* bench/watch/samecls.c: a known-answer program of the lock monitor bench (bench/watch/run.sh, part
 * 4) that tests/watch does not have: the bank transfer. transfer(from, to) locks the `from`
 * account, then the `to` account. The accounts' mutexes are initialised in one loop (one init
 * site, so one lock class for prediction), whose count is read at run time so that no compiler
 * unrolls it into several sites. One thread moves money from account 0 to 1 and ends; only then
 * does another move money from 1 to 0: the AB/BA inversion of two locks of one class, a deadlock
 * waiting to happen that does not happen in this run.
 * Answer: nothing without prediction; with it, one lock-order inversion (TSan and Helgrind, which
 * order lock instances, report it). Exit status 0 when the balances add up.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_ACCOUNTS 8

static pthread_mutex_t account_lock[MAX_ACCOUNTS];
static long balance[MAX_ACCOUNTS];
static volatile int n_accounts = 2; /* volatile: the init loop stays one loop */

static void transfer(int from, int to, long amount)
{
	pthread_mutex_lock(&account_lock[from]);
	pthread_mutex_lock(&account_lock[to]);
	balance[from] -= amount;
	balance[to] += amount;
	pthread_mutex_unlock(&account_lock[to]);
	pthread_mutex_unlock(&account_lock[from]);
}

static void *pay_0_to_1(void *arg)
{
	transfer(0, 1, 10);
	return arg;
}

static void *pay_1_to_0(void *arg)
{
	transfer(1, 0, 5);
	return arg;
}

static void run_alone(void *(*fn)(void *))
{
	pthread_t t;

	if (pthread_create(&t, NULL, fn, NULL) != 0) {
		perror("samecls: pthread_create");
		exit(2);
	}
	pthread_join(t, NULL);
}

int main(void)
{
	for (int i = 0; i < n_accounts; i++) {
		pthread_mutex_init(&account_lock[i], NULL);
		balance[i] = 100;
	}
	run_alone(pay_0_to_1);
	run_alone(pay_1_to_0);
	if (balance[0] + balance[1] != 200) {
		fprintf(stderr, "samecls: balances %ld + %ld\n", balance[0], balance[1]);
		return 1;
	}
	return 0;
}
