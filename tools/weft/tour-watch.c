/* tour-watch.c: the lock monitor's chapter. Two threads move money between two accounts, each
 * locking its own account first: they deadlock, live, and the monitor's report appears with both
 * threads, the lock each waits for, who holds it, and both stacks. Then the same two transfers run
 * one after the other, so the run does not deadlock, in prediction mode: the monitor still reports
 * the lock-order inversion, with both acquisition stacks. Last, what a lock and unlock pair costs
 * natively, as a weft_mutex with the monitor on, and in prediction mode.
 *
 * The deadlocked threads wait with a deadline (weft_mutex_timedlock), so that the chapter ends: a
 * real deadlock would wait forever, which is what the monitor exists to tell you about. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define SCAN_MS 50
#define GIVE_UP_MS 1500 /* the deadlocked threads' deadline */
#define PAIRS 2000000   /* lock + unlock pairs per cost figure */

struct account {
	weft_mutex lock;
	long balance;
};

static struct account checking, savings;
static pthread_barrier_t both_hold_one;

struct transfer {
	const char *name;
	struct account *from, *to;
	int meet;   /* wait at the barrier with the lock of `from` held */
	int result; /* of the lock of `to` */
};

static void __attribute__((noinline)) move_money(struct transfer *t)
{
	weft_mutex_lock(&t->from->lock);
	if (t->meet)
		pthread_barrier_wait(&both_hold_one);
	t->result = weft_mutex_timedlock(&t->to->lock, weft_deadline_in(WEFT_MSEC(GIVE_UP_MS)));
	if (t->result == 0) {
		t->from->balance -= 10;
		t->to->balance += 10;
		weft_mutex_unlock(&t->to->lock);
	}
	weft_mutex_unlock(&t->from->lock);
}

static void *transfer_thread(void *arg)
{
	struct transfer *t = arg;
	pthread_setname_np(pthread_self(), t->name);
	move_money(t);
	return NULL;
}

struct seen {
	pthread_mutex_t lock;
	int64_t first_ns[WEFT_WATCH_EVENT_COUNT];
	int count[WEFT_WATCH_EVENT_COUNT];
};
static struct seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* On the monitor's thread: print the report, indented, and note when it came. */
static void on_report(const weft_watch_report *r, void *arg)
{
	(void)arg;
	char *text = NULL;
	pthread_mutex_lock(&seen.lock);
	if (r->event > 0 && r->event < WEFT_WATCH_EVENT_COUNT) {
		if (seen.count[r->event]++ == 0)
			seen.first_ns[r->event] = weft_now();
	}
	pthread_mutex_unlock(&seen.lock);
	if (weft_watch_report_text(r, &text) < 0)
		return;
	tour_blank();
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		printf("    | %s\n", line);
	fflush(stdout);
	free(text);
}

static int count_of(weft_watch_event e, int64_t *ret_first)
{
	pthread_mutex_lock(&seen.lock);
	int n = seen.count[e];
	if (ret_first)
		*ret_first = seen.first_ns[e];
	pthread_mutex_unlock(&seen.lock);
	return n;
}

static int run_transfers(struct transfer *a, struct transfer *b, int together)
{
	pthread_t ta, tb;
	if (together) {
		pthread_barrier_init(&both_hold_one, NULL, 2);
		a->meet = b->meet = 1;
	}
	if (pthread_create(&ta, NULL, transfer_thread, a) != 0)
		return -1;
	if (!together)
		pthread_join(ta, NULL);
	if (pthread_create(&tb, NULL, transfer_thread, b) != 0) {
		if (together) /* a waits at the barrier for b: let it through with a second waiter
		               */
			pthread_barrier_wait(&both_hold_one);
		pthread_join(ta, NULL);
		return -1;
	}
	if (together)
		pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	if (together)
		pthread_barrier_destroy(&both_hold_one);
	return 0;
}

static int start_monitor(int predict)
{
	weft_watch_options o = {.scan_ns = WEFT_MSEC(SCAN_MS),
	                        .predict = predict,
	                        .on_report = on_report,
	                        .on_deadlock = WEFT_WATCH_ACTION_REPORT};
	int r = weft_watch_start(&o);
	if (r < 0)
		tour_say("cannot start the lock monitor: %s", weft_strerror(r));
	return r;
}

static int init_accounts(void)
{
	weft_mutex_options co = {.name = "checking"}, so = {.name = "savings"};
	int r = weft_mutex_init(&checking.lock, &co);
	if (r == 0 && (r = weft_mutex_init(&savings.lock, &so)) < 0)
		weft_mutex_destroy(&checking.lock);
	if (r < 0)
		tour_say("cannot create the accounts' locks: %s", weft_strerror(r));
	checking.balance = savings.balance = 100;
	return r;
}

static void destroy_accounts(void)
{
	weft_mutex_destroy(&checking.lock);
	weft_mutex_destroy(&savings.lock);
}

/* Part 1: the deadlock, live. */
static int deadlock(void)
{
	tour_say("Two threads transfer between checking and savings; each locks the account it "
	         "takes");
	tour_say("money from, then the other. Started together, each holds one lock and waits for "
	         "the");
	tour_say("other's: a deadlock. The monitor scans the waits every %d ms.", SCAN_MS);
	if (init_accounts() < 0)
		return 1;
	if (start_monitor(0) < 0) {
		destroy_accounts();
		return 1;
	}
	struct transfer a = {.name = "to-savings", .from = &checking, .to = &savings};
	struct transfer b = {.name = "to-checking", .from = &savings, .to = &checking};
	int64_t t0 = weft_now();
	int r = run_transfers(&a, &b, 1);
	weft_watch_stop();
	destroy_accounts();
	int64_t first;
	int n = count_of(WEFT_WATCH_DEADLOCK, &first);
	tour_blank();
	if (r < 0) {
		tour_say("cannot start the transfer threads");
		return 1;
	}
	if (n == 0) {
		tour_say("the monitor did not report the deadlock (the threads gave up after %d "
		         "ms: %s, %s)",
		         GIVE_UP_MS, weft_strerror(a.result), weft_strerror(b.result));
		return 1;
	}
	tour_say("reported %.0f ms after the threads started (scan period %d ms); the threads gave "
	         "up",
	         (double)(first - t0) / 1e6, SCAN_MS);
	tour_say("at their %d ms deadline (%s). Without one they would wait forever, and the",
	         GIVE_UP_MS, weft_strerror(a.result != 0 ? a.result : b.result));
	tour_say("process would go on half alive.");
	return 0;
}

/* Part 2: the same program, run so that it does not deadlock, in prediction mode. */
static int predict(void)
{
	tour_blank();
	tour_say("The same transfers, one after the other: no deadlock this time. In prediction "
	         "mode the");
	tour_say("monitor learns the order locks are taken in and reports the inversion anyway:");
	if (init_accounts() < 0)
		return 1;
	if (start_monitor(1) < 0) {
		destroy_accounts();
		return 1;
	}
	struct transfer a = {.name = "to-savings", .from = &checking, .to = &savings};
	struct transfer b = {.name = "to-checking", .from = &savings, .to = &checking};
	int r = run_transfers(&a, &b, 0);
	weft_watch_stop();
	destroy_accounts();
	int n = count_of(WEFT_WATCH_INVERSION, NULL);
	tour_blank();
	if (r < 0 || a.result != 0 || b.result != 0) {
		tour_say("the transfers failed: %s", weft_strerror(r < 0      ? r
		                                                   : a.result ? a.result
		                                                              : b.result));
		return 1;
	}
	if (n == 0) {
		tour_say("the monitor did not report the inversion");
		return 1;
	}
	tour_say("both transfers completed; the inversion was reported before the second one "
	         "locked.");
	return 0;
}

static double pair_ns(pthread_mutex_t *pm, weft_mutex *wm)
{
	int64_t t0 = weft_now();
	for (int i = 0; i < PAIRS; i++) {
		if (pm) {
			pthread_mutex_lock(pm);
			pthread_mutex_unlock(pm);
		} else {
			weft_mutex_lock(wm);
			weft_mutex_unlock(wm);
		}
	}
	return (double)(weft_now() - t0) / PAIRS;
}

/* Part 3: what it costs. */
static int cost(void)
{
	pthread_mutex_t pm = PTHREAD_MUTEX_INITIALIZER;
	weft_mutex wm;
	if (weft_mutex_init(&wm, NULL) < 0)
		return 1;
	double native = pair_ns(&pm, NULL);
	double off = pair_ns(NULL, &wm);
	double on = -1, pred = -1;
	if (start_monitor(0) == 0) {
		on = pair_ns(NULL, &wm);
		weft_watch_stop();
	}
	if (start_monitor(1) == 0) {
		weft_mutex outer;
		if (weft_mutex_init(&outer, NULL) == 0) {
			weft_mutex_lock(&outer); /* one held lock: each pair checks one order */
			pred = pair_ns(NULL, &wm);
			weft_mutex_unlock(&outer);
			weft_mutex_destroy(&outer);
		}
		weft_watch_stop();
	}
	weft_mutex_destroy(&wm);
	tour_blank();
	tour_say(
	        "An uncontended lock + unlock, %d pairs each, one thread (one run, noisy machine):",
	        PAIRS);
	tour_say("  pthread_mutex                        %6.1f ns", native);
	tour_say("  weft_mutex, monitor off              %6.1f ns", off);
	tour_say("  weft_mutex, monitor on               %6.1f ns", on);
	tour_say("  weft_mutex, prediction, 1 lock held  %6.1f ns", pred);
	tour_say("Only a lock that must wait is recorded; `weft watch -- PROG` does the same for "
	         "an");
	tour_say("unmodified program's pthread locks. `make bench-watch` compares TSan and "
	         "Helgrind.");
	return on < 0 || pred < 0;
}

static int run(void)
{
	int bad = deadlock();
	bad |= predict();
	bad |= cost();
	return bad;
}

const struct tour_chapter tour_chapter_watch = {
        "watch",
        "two threads deadlock live, and the lock monitor says so with both stacks",
        run,
};
