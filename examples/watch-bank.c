/* watch-bank: a lock-order bug found before it deadlocks, and its fix, under weft's lock monitor.
 *
 * Four tellers move money between eight accounts, each account a weft_mutex with a name of its own.
 * Run 1 locks the account paid from, then the account paid to: two transfers in opposite
 * directions between the same pair, at the same time, would deadlock. Here the tellers work one
 * after another (each thread is joined before the next starts), so run 1 cannot deadlock; the
 * monitor, in prediction mode, still reports the inversions (one for each new order that closes
 * a cycle of accounts; the first is printed with both code paths' stacks), each the first time it
 * is taken. Run 2 locks each pair in one global order (by address) and gets no report. Both runs
 * check that no money was created or lost. Runs in well under a second.
 *
 *   build/examples/watch-bank
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#define ACCOUNTS 8
#define THREADS 4
#define TRANSFERS 2000 /* per thread */

struct account {
	weft_mutex lock;
	long balance;
};

static struct account accounts[ACCOUNTS];
static int ordered; /* run 2: lock the pair in address order */
static int reports;

static void on_report(const weft_watch_report *r, void *arg)
{
	(void)arg;
	char *text;
	if (reports++ > 0) /* the monitor's thread only; print the first report, count the rest */
		return;
	if (weft_watch_report_text(r, &text) == 0) {
		fputs(text, stdout);
		free(text);
	}
}

static void transfer(struct account *from, struct account *to, long amount)
{
	struct account *first = from, *second = to;
	if (ordered && (uintptr_t)to < (uintptr_t)from) {
		first = to;
		second = from;
	}
	weft_mutex_lock(&first->lock);
	weft_mutex_lock(&second->lock);
	from->balance -= amount;
	to->balance += amount;
	weft_mutex_unlock(&second->lock);
	weft_mutex_unlock(&first->lock);
}

static void *teller(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	for (int i = 0; i < TRANSFERS; i++) {
		int a = (int)(rand_r(&seed) % ACCOUNTS), b = (int)(rand_r(&seed) % ACCOUNTS);
		if (a == b)
			continue;
		transfer(&accounts[a], &accounts[b], 1 + (long)(rand_r(&seed) % 10));
	}
	return NULL;
}

static int run(int n)
{
	weft_watch_options o = {.predict = 1, .on_report = on_report};
	int r = weft_watch_start(&o);
	if (r < 0) {
		fprintf(stderr, "watch-bank: weft_watch_start: %s\n", weft_strerror(r));
		return -1;
	}
	static char names[ACCOUNTS][16];
	for (int i = 0; i < ACCOUNTS; i++) {
		/* each account its own name, so its own class: prediction checks orders between
		 * classes (locks of one class nested in each other are counted, not reported) */
		snprintf(names[i], sizeof(names[i]), "account-%d", i);
		weft_mutex_options mo = {.name = names[i]};
		if ((r = weft_mutex_init(&accounts[i].lock, &mo)) < 0) {
			fprintf(stderr, "watch-bank: weft_mutex_init: %s\n", weft_strerror(r));
			return -1;
		}
		accounts[i].balance = 1000;
	}
	int started = 0;
	for (; started < THREADS; started++) { /* one teller after another: no deadlock */
		pthread_t t;
		if (pthread_create(&t, NULL, teller, (void *)(uintptr_t)(started + 1)) != 0)
			break;
		pthread_join(t, NULL);
	}
	weft_watch_stop(); /* emits what is queued */
	long total = 0;
	for (int i = 0; i < ACCOUNTS; i++) {
		total += accounts[i].balance;
		weft_mutex_destroy(&accounts[i].lock);
	}
	printf("run %d (%s): %d threads, total %ld (expected %d), %d report%s\n", n,
	       ordered ? "pair locked in address order" : "locked from, then to", started, total,
	       ACCOUNTS * 1000, reports, reports == 1 ? "" : "s");
	return started == THREADS && total == ACCOUNTS * 1000 ? 0 : -1;
}

int main(void)
{
	if (run(1) < 0)
		return 1;
	int first = reports;
	reports = 0;
	ordered = 1;
	if (run(2) < 0)
		return 1;
	printf("%s\n", first > 0 && reports == 0
	                       ? "the inversion was found in run 1 and is gone in run 2"
	                       : "unexpected reports");
	return first > 0 && reports == 0 ? 0 : 1;
}
