/* gdb-target: the program tests/integration/test-gdb.c debugs with tools/gdb/weft-gdb.py.
 *
 * It starts a scheduler "gdbt" with 2 worker threads and leaves fibers in every state the
 * extension must show, each in a function of its own so a backtrace names it:
 *
 *   sleeper        parked_on_sleep        waiting on sleep (a timer an hour away)
 *   receiver       parked_on_chan_recv    waiting on chan-recv (nobody ever sends)
 *   waiter         parked_on_waitgroup    waiting on waitgroup (the count stays 1); pinned
 *   child-sleeper  parked_in_child_scope  waiting on sleep, in a child scope of the root
 *   (no name)      parked_on_sem          parked on a semaphore, then made runnable (below)
 *   holder         hold_worker            running: blocks its worker thread in pause() and
 *                                         never yields (a busy loop that burns no CPU)
 *   holder-2       hold_worker_after_wake releases the semaphore, then holds its worker too
 *   not-started    never_runs             runnable, never run: both workers are held
 *
 * and a second scheduler "aux" (1 worker) with one fiber, aux-sleeper (parked_in_aux, waiting on
 * sleep), so that the extension walks the process's list of schedulers.
 *
 * Once holder and holder-2 hold both workers, nothing else can run: the unnamed fiber, woken by
 * holder-2, stays runnable with the saved context of its semaphore wait, and not-started stays
 * runnable with no context yet. The states are stable from then on, whenever a debugger stops
 * the process.
 *
 * The program waits (polling weft_fiber_dump) until every fiber is in that state, prints
 * "ready NAME=ID ..." with each fiber's id on stdout, calls gdb_target_ready() (a breakpoint there
 * stops a run under gdb at the right moment) and then sleeps until killed. It lets any process
 * of the user ptrace it (PR_SET_PTRACER_ANY), so that `gdb -p` works under Yama's ptrace_scope 1.
 * Exit status 1 with a message on stderr if the fibers never reach their states (30 s).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <weft/fiber.h>

static weft_chan *chan;
static weft_waitgroup wg = WEFT_WAITGROUP_INIT;
static weft_fsem sem = WEFT_FSEM_INIT;
static volatile int sink; /* a store after each wait: the call is not a tail call, so the
                             fiber's own function keeps its frame in a backtrace */

/* Keep the worker thread: a plain blocking call, no fiber switch. */
static void hold(void)
{
	for (;;)
		pause();
}

__attribute__((noinline)) static void parked_on_sleep(void *arg)
{
	(void)arg;
	sink = weft_fiber_sleep_until(weft_deadline_in(WEFT_SEC(3600)));
}

__attribute__((noinline)) static void parked_on_chan_recv(void *arg)
{
	(void)arg;
	int v;
	sink = weft_chan_recv(chan, &v, WEFT_FOREVER);
}

__attribute__((noinline)) static void parked_on_waitgroup(void *arg)
{
	(void)arg;
	sink = weft_waitgroup_wait(&wg, WEFT_FOREVER);
}

__attribute__((noinline)) static void parked_in_child_scope(void *arg)
{
	(void)arg;
	sink = weft_fiber_sleep_until(weft_deadline_in(WEFT_SEC(3600)));
}

__attribute__((noinline)) static void parked_in_aux(void *arg)
{
	(void)arg;
	sink = weft_fiber_sleep_until(weft_deadline_in(WEFT_SEC(3600)));
}

__attribute__((noinline)) static void parked_on_sem(void *arg)
{
	(void)arg;
	sink = weft_fsem_acquire(&sem, WEFT_FOREVER);
}

__attribute__((noinline)) static void hold_worker(void *arg)
{
	(void)arg;
	hold();
}

__attribute__((noinline)) static void hold_worker_after_wake(void *arg)
{
	(void)arg;
	sink = weft_fsem_release(&sem, 1);
	hold();
}

__attribute__((noinline)) static void never_runs(void *arg)
{
	(void)arg;
	sink = 1;
}

/* A breakpoint's place: the fibers are all in their final states. */
__attribute__((noinline)) void gdb_target_ready(void);
__attribute__((noinline)) void gdb_target_ready(void)
{
	__asm__ volatile("" ::: "memory");
}

static void die(const char *what, int err)
{
	fprintf(stderr, "gdb-target: %s: %s\n", what, err ? weft_strerror(err) : "failed");
	exit(1);
}

static uint64_t spawn(weft_scope *sc, weft_fiber_fn fn, const char *name, bool pinned)
{
	uint64_t id;
	int r = weft_spawn(sc, fn, NULL, &(weft_spawn_opts){.name = name, .pinned = pinned}, &id);
	if (r < 0)
		die("weft_spawn", r);
	return id;
}

/* True if fiber `id`'s line of the dump contains `state`. */
static bool fiber_in(const char *dump, uint64_t id, const char *state)
{
	char head[64];
	snprintf(head, sizeof(head), "\nfiber %llu \"", (unsigned long long)id);
	const char *line = strstr(dump, head);
	if (!line)
		return false;
	line++;
	const char *end = strchr(line, '\n');
	const char *at = strstr(line, state);
	return at && (!end || at < end);
}

/* Wait until every (id, state) pair holds in one dump; exit 1 after 30 s. */
static void wait_states(const uint64_t *ids, const char *const *states, int n)
{
	int64_t deadline = weft_deadline_in(WEFT_SEC(30));
	for (;;) {
		char *dump;
		int r = weft_fiber_dump(&dump, NULL);
		if (r < 0)
			die("weft_fiber_dump", r);
		int ok = 0;
		for (int i = 0; i < n; i++)
			ok += fiber_in(dump, ids[i], states[i]);
		if (ok == n) {
			free(dump);
			return;
		}
		if (weft_now() > deadline) {
			fprintf(stderr, "gdb-target: the fibers never reached their states:\n%s",
			        dump);
			exit(1);
		}
		free(dump);
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(5)));
	}
}

int main(void)
{
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); /* fails harmlessly without Yama */
	weft_sched *s, *aux;
	int r = weft_sched_create(&s, &(weft_sched_opts){.name = "gdbt", .threads = 2});
	if (r < 0)
		die("weft_sched_create", r);
	r = weft_sched_create(&aux, &(weft_sched_opts){.name = "aux", .threads = 1});
	if (r < 0)
		die("weft_sched_create", r);
	if ((r = weft_chan_create(&chan, sizeof(int), 0)) < 0)
		die("weft_chan_create", r);
	if ((r = weft_waitgroup_add(&wg, 1)) < 0)
		die("weft_waitgroup_add", r);
	weft_scope *root = weft_sched_root(s), *child;
	if ((r = weft_scope_create(&child, root)) < 0)
		die("weft_scope_create", r);

	uint64_t sleeper = spawn(root, parked_on_sleep, "sleeper", false);
	uint64_t receiver = spawn(root, parked_on_chan_recv, "receiver", false);
	uint64_t waiter = spawn(root, parked_on_waitgroup, "waiter", true);
	uint64_t child_sleeper = spawn(child, parked_in_child_scope, "child-sleeper", false);
	uint64_t anon = spawn(root, parked_on_sem, NULL, false);
	uint64_t holder = spawn(root, hold_worker, "holder", false);
	uint64_t aux_sleeper = spawn(weft_sched_root(aux), parked_in_aux, "aux-sleeper", false);
	wait_states((const uint64_t[]){sleeper, receiver, waiter, child_sleeper, anon, holder,
	                               aux_sleeper},
	            (const char *const[]){"waiting on sleep", "waiting on chan-recv",
	                                  "waiting on waitgroup", "waiting on sleep",
	                                  "waiting on sem", "running", "waiting on sleep"},
	            7);
	/* the second worker: holder-2 wakes the unnamed fiber into its own queue, then holds its
	 * worker */
	uint64_t holder2 = spawn(root, hold_worker_after_wake, "holder-2", false);
	wait_states((const uint64_t[]){holder, holder2, anon},
	            (const char *const[]){"running", "running", "runnable"}, 3);
	uint64_t not_started = spawn(root, never_runs, "not-started", false);
	wait_states((const uint64_t[]){not_started}, (const char *const[]){"runnable"}, 1);

	printf("ready sleeper=%llu receiver=%llu waiter=%llu child-sleeper=%llu anon=%llu "
	       "holder=%llu holder-2=%llu not-started=%llu aux-sleeper=%llu\n",
	       (unsigned long long)sleeper, (unsigned long long)receiver,
	       (unsigned long long)waiter, (unsigned long long)child_sleeper,
	       (unsigned long long)anon, (unsigned long long)holder, (unsigned long long)holder2,
	       (unsigned long long)not_started, (unsigned long long)aux_sleeper);
	fflush(stdout);
	gdb_target_ready();
	for (;;)
		pause();
}
