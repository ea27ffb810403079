/* fiber-pipeline: a three-stage pipeline of fibers joined by channels, run twice.
 *
 *   source --numbers--> 4 squarers --squares--> summer
 *
 * The source sends 1..N into an unbuffered channel and closes it. Four squarer fibers receive
 * numbers and send their squares on; each marks a wait group done when its input is closed, and a
 * closer fiber waits on that group and then closes the squares channel, so the summer knows the
 * last square has come. The summer adds what it receives until the channel is closed.
 *
 * Run 1: N = 10,000. Every stage finishes on its own; the sum of squares is n(n+1)(2n+1)/6.
 * Run 2: the source never stops and each squarer takes 1 ms per number (a slow call). The stages
 * live in a scope that the main thread joins with a 200 ms deadline; when the deadline passes it
 * cancels the scope, and every fiber's wait returns -ECANCELED at once: the pipeline stops with
 * nothing left running and nothing leaked. Runs well under a second.
 *
 *   build/examples/fiber-pipeline
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>

#include <weft.h>

#define SQUARERS 4

struct pipeline {
	long limit;            /* numbers to send; 0: never stop */
	int64_t work;          /* ns each squarer spends on a number */
	weft_chan *numbers;    /* source -> squarers, long */
	weft_chan *squares;    /* squarers -> summer, long long */
	weft_waitgroup active; /* squarers still running */
	/* results, written by the fibers, read by main after the scope is joined */
	long long sum;
	long summed;
	_Atomic int cancelled; /* fibers whose wait returned -ECANCELED */
};

/* A wait that failed: -EPIPE is the normal end of a stage, -ECANCELED the deadline's. */
static void stopped(struct pipeline *p, int r)
{
	if (r == -ECANCELED)
		atomic_fetch_add(&p->cancelled, 1);
}

static void source(void *arg)
{
	struct pipeline *p = arg;
	for (long i = 1; p->limit == 0 || i <= p->limit; i++) {
		int r = weft_chan_send(p->numbers, &i, WEFT_FOREVER);
		if (r < 0) {
			stopped(p, r);
			return;
		}
	}
	weft_chan_close(p->numbers); /* the squarers drain it, then get -EPIPE */
}

static void squarer(void *arg)
{
	struct pipeline *p = arg;
	for (;;) {
		long n;
		int r = weft_chan_recv(p->numbers, &n, WEFT_FOREVER);
		if (r == 0 && p->work > 0) /* the slow call: parks this fiber, not its thread */
			r = weft_fiber_sleep_until(weft_deadline_in(p->work));
		if (r == 0) {
			long long sq = (long long)n * n;
			r = weft_chan_send(p->squares, &sq, WEFT_FOREVER);
		}
		if (r < 0) {
			stopped(p, r);
			break;
		}
	}
	weft_waitgroup_done(&p->active);
}

/* Closes the squares channel once every squarer is done, so the summer sees the end. */
static void closer(void *arg)
{
	struct pipeline *p = arg;
	int r = weft_waitgroup_wait(&p->active, WEFT_FOREVER);
	if (r < 0)
		stopped(p, r);
	else
		weft_chan_close(p->squares);
}

static void summer(void *arg)
{
	struct pipeline *p = arg;
	long long sq;
	int r;
	while ((r = weft_chan_recv(p->squares, &sq, WEFT_FOREVER)) == 0) {
		p->sum += sq;
		p->summed++;
	}
	stopped(p, r);
}

/* Runs the pipeline in a new scope of `s`, joined with `deadline`; cancels the scope if the
 * deadline passes. Returns 0 if it finished by itself, 1 if it was cancelled, or a negative
 * errno if it could not be built. */
static int run(weft_sched *s, struct pipeline *p, int64_t deadline)
{
	weft_scope *scope = NULL;
	int r = weft_chan_create(&p->numbers, sizeof(long), 0);
	if (r == 0)
		r = weft_chan_create(&p->squares, sizeof(long long), 0);
	if (r == 0)
		r = weft_scope_create(&scope, weft_sched_root(s));
	/* the group counts the squarers before any of them can finish */
	if (r == 0)
		r = weft_waitgroup_add(&p->active, SQUARERS);
	if (r == 0)
		r = weft_spawn(scope, source, p, &(weft_spawn_opts){.name = "source"}, NULL);
	for (int i = 0; i < SQUARERS && r == 0; i++)
		r = weft_spawn(scope, squarer, p, &(weft_spawn_opts){.name = "squarer"}, NULL);
	if (r == 0)
		r = weft_spawn(scope, closer, p, &(weft_spawn_opts){.name = "closer"}, NULL);
	if (r == 0)
		r = weft_spawn(scope, summer, p, &(weft_spawn_opts){.name = "summer"}, NULL);

	int outcome = r;
	if (r == 0) {
		outcome = 0;
		if (weft_scope_join(scope, deadline) == -ETIMEDOUT) {
			weft_scope_cancel(scope); /* every wait in the scope returns -ECANCELED */
			weft_scope_join(scope, WEFT_FOREVER);
			outcome = 1;
		}
	}
	/* cancels and joins whatever was spawned (a failed build included), then frees */
	weft_scope_destroy(scope);
	weft_chan_destroy(p->numbers); /* no fiber waits on them any more */
	weft_chan_destroy(p->squares);
	return outcome;
}

int main(void)
{
	weft_sched *s;
	int r = weft_sched_create(&s, &(weft_sched_opts){.name = "pipeline"});
	if (r < 0) {
		fprintf(stderr, "fiber-pipeline: %s\n", weft_strerror(r));
		return 1;
	}

	/* Run 1: runs to the end. */
	const long n = 10000;
	struct pipeline p1 = {.limit = n};
	int64_t t0 = weft_now();
	int r1 = run(s, &p1, weft_deadline_in(WEFT_SEC(30)));
	long long want = (long long)n * (n + 1) * (2 * n + 1) / 6;
	weft_sched_stats st;
	weft_sched_stats_get(s, &st);
	printf("pipeline: 1..%ld -> %d squarers -> summer, on %d worker threads\n", n, SQUARERS,
	       st.threads);
	if (r1 < 0)
		printf("  could not build it: %s\n", weft_strerror(r1));
	else
		printf("  sum of squares = %lld (expected %lld), %ld values, %.1f ms%s\n", p1.sum,
		       want, p1.summed, (double)(weft_now() - t0) / 1e6,
		       r1 == 1 ? " (cut by the deadline)" : "");

	/* Run 2: an endless source and a slow stage, stopped by the scope's deadline. */
	struct pipeline p2 = {.limit = 0, .work = WEFT_MSEC(1)};
	t0 = weft_now();
	int r2 = run(s, &p2, weft_deadline_in(WEFT_MSEC(200)));
	printf("deadline: an endless source, squarers taking 1 ms each, a 200 ms deadline\n");
	if (r2 < 0)
		printf("  could not build it: %s\n", weft_strerror(r2));
	else
		printf("  %s after %.0f ms: %ld squares summed, %d fibers stopped with %s\n",
		       r2 == 1 ? "scope cancelled" : "finished by itself (unexpected)",
		       (double)(weft_now() - t0) / 1e6, p2.summed, atomic_load(&p2.cancelled),
		       weft_errname(-ECANCELED));

	weft_sched_destroy(s);
	bool ok = r1 == 0 && p1.sum == want && r2 == 1 && p2.summed > 0 &&
	          atomic_load(&p2.cancelled) > 0;
	return ok ? 0 : 1;
}
