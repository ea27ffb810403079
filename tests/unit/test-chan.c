/* test-chan.c: channels and select (src/fiber/chan.c): argument validation in and out of fibers,
 * allocation faults in weft_chan_create, FIFO order buffered and unbuffered, try_send/try_recv
 * (also from plain threads), close (buffered values drained, then -EPIPE; parked senders and
 * receivers woken), deadlines and cancellation of send, receive and select, select fairness over
 * always-ready channels, select polling (deadline 0), select timeout, select on closed channels,
 * a channel named twice in one select, an unbuffered ping-pong, a many-to-many stress over a
 * buffered and an unbuffered channel (every value received exactly once), and destroy with a
 * waiter (it aborts). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "fiber-test.h"
#include "harness.h"
#include "internal/alloc.h"
#include "internal/fiber.h"

/* chan.c's test hook: records queued now, senders (WEFT_SELECT_SEND) or receivers. */
size_t weft__chan_waiters(weft_chan *ch, int op);

/* ---- helpers -------------------------------------------------------------------------------- */

static weft_chan *chan_new(size_t elem_size, size_t cap)
{
	weft_chan *ch = NULL;
	ASSERT_OK(weft_chan_create(&ch, elem_size, cap));
	ASSERT_NOT_NULL(ch);
	return ch;
}

static size_t senders(weft_chan *ch)
{
	return weft__chan_waiters(ch, WEFT_SELECT_SEND);
}

static size_t receivers(weft_chan *ch)
{
	return weft__chan_waiters(ch, WEFT_SELECT_RECV);
}

/* ---- argument validation and faults --------------------------------------------------------- */

TEST(args_outside_a_fiber)
{
	weft_chan *ch = NULL;
	int v = 7, out = 0;
	ASSERT_ERR(weft_chan_create(NULL, 4, 1), -EINVAL);
	ASSERT_ERR(weft_chan_create(&ch, 0, 1), -EINVAL);
	ASSERT_ERR(weft_chan_create(&ch, WEFT_CHAN_ELEM_MAX + 1, 1), -EINVAL);
	ASSERT_ERR(weft_chan_create(&ch, 4, WEFT_CHAN_CAPACITY_MAX + 1), -EINVAL);
	ASSERT_NULL(ch); /* written only on success */
	ASSERT_OK(weft_chan_create(&ch, WEFT_CHAN_ELEM_MAX, 0));
	weft_chan_destroy(ch);
	ch = chan_new(sizeof(int), 2);
	ASSERT_EQ(weft_chan_cap(ch), 2);
	ASSERT_EQ(weft_chan_len(ch), 0);
	ASSERT_EQ(weft_chan_cap(NULL), 0);
	ASSERT_EQ(weft_chan_len(NULL), 0);

	ASSERT_ERR(weft_chan_send(NULL, &v, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_chan_send(ch, NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_chan_send(ch, &v, -2), -EINVAL);
	ASSERT_ERR(weft_chan_send(ch, &v, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_chan_recv(NULL, &out, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_chan_recv(ch, NULL, WEFT_FOREVER), -EINVAL);
	ASSERT_ERR(weft_chan_recv(ch, &out, -2), -EINVAL);
	ASSERT_ERR(weft_chan_recv(ch, &out, WEFT_FOREVER), -EPERM);
	ASSERT_ERR(weft_chan_try_send(NULL, &v), -EINVAL);
	ASSERT_ERR(weft_chan_try_send(ch, NULL), -EINVAL);
	ASSERT_ERR(weft_chan_try_recv(NULL, &out), -EINVAL);
	ASSERT_ERR(weft_chan_try_recv(ch, NULL), -EINVAL);
	ASSERT_ERR(weft_chan_close(NULL), -EINVAL);

	/* the tries work from a plain thread */
	ASSERT_ERR(weft_chan_try_recv(ch, &out), -EAGAIN);
	ASSERT_EQ(weft_chan_try_send(ch, &v), 0);
	v = 8;
	ASSERT_EQ(weft_chan_try_send(ch, &v), 0);
	ASSERT_ERR(weft_chan_try_send(ch, &v), -EAGAIN);
	ASSERT_EQ(weft_chan_len(ch), 2);
	ASSERT_EQ(weft_chan_try_recv(ch, &out), 0);
	ASSERT_EQ(out, 7);
	ASSERT_EQ(weft_chan_len(ch), 1);

	weft_chan *other = chan_new(sizeof(int), 0);
	weft_select_case c[WEFT_SELECT_MAX + 1];
	for (int i = 0; i <= WEFT_SELECT_MAX; i++)
		c[i] = (weft_select_case){ch, WEFT_SELECT_RECV, &out};
	int res = 12345;
	ASSERT_ERR(weft_chan_select(NULL, 1, WEFT_FOREVER, &res), -EINVAL);
	ASSERT_ERR(weft_chan_select(c, 0, WEFT_FOREVER, &res), -EINVAL);
	ASSERT_ERR(weft_chan_select(c, -1, WEFT_FOREVER, &res), -EINVAL);
	ASSERT_ERR(weft_chan_select(c, WEFT_SELECT_MAX + 1, WEFT_FOREVER, &res), -EINVAL);
	ASSERT_ERR(weft_chan_select(c, 1, -2, &res), -EINVAL);
	c[1] = (weft_select_case){other, 3, &out};
	ASSERT_ERR(weft_chan_select(c, 2, WEFT_FOREVER, &res), -EINVAL); /* a bad op */
	c[1] = (weft_select_case){other, 0, &out};
	ASSERT_ERR(weft_chan_select(c, 2, WEFT_FOREVER, &res), -EINVAL);
	c[1] = (weft_select_case){other, WEFT_SELECT_SEND, NULL};
	ASSERT_ERR(weft_chan_select(c, 2, WEFT_FOREVER, &res), -EINVAL); /* no value */
	c[0].chan = c[1].chan = NULL;
	ASSERT_ERR(weft_chan_select(c, 2, WEFT_FOREVER, &res), -EINVAL); /* every chan NULL */
	c[0] = (weft_select_case){ch, WEFT_SELECT_RECV, &out};
	ASSERT_ERR(weft_chan_select(c, WEFT_SELECT_MAX, 0, &res), -EPERM);
	ASSERT_EQ(res, 12345);
	ASSERT_EQ(weft_chan_len(ch), 1); /* nothing was taken */

	ASSERT_EQ(weft_chan_close(ch), 0);
	ASSERT_ERR(weft_chan_close(ch), -EPIPE);
	ASSERT_ERR(weft_chan_try_send(ch, &v), -EPIPE);
	ASSERT_EQ(weft_chan_try_recv(ch, &out), 0); /* drained first */
	ASSERT_EQ(out, 8);
	ASSERT_ERR(weft_chan_try_recv(ch, &out), -EPIPE);
	weft_chan_destroy(ch);
	weft_chan_destroy(other);
	weft_chan_destroy(NULL);
}

TEST(create_under_allocation_faults)
{
	size_t caps[] = {0, 1, 1000};
	for (size_t k = 0; k < WEFT__ARRAY_SIZE(caps); k++) {
		int failures = 0;
		for (long n = 1; n < 20; n++) {
			weft_chan *ch = NULL;
			weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
			int r = weft_chan_create(&ch, 24, caps[k]);
			weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
			if (r == -ENOMEM) {
				ASSERT_NULL(ch);
				failures++;
				continue;
			}
			ASSERT_OK(r);
			ASSERT_EQ(weft_chan_cap(ch), caps[k]);
			weft_chan_destroy(ch);
			break;
		}
		ASSERT_GE(failures, 1);
	}
	/* every allocation failing */
	weft_chan *ch = NULL;
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	ASSERT_ERR(weft_chan_create(&ch, 8, 8), -ENOMEM);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	ASSERT_NULL(ch);
}

struct fargs {
	weft_chan *ch;
	_Atomic int done;
};

static void args_fiber(void *arg)
{
	struct fargs *x = arg;
	int v = 1, out = 0;
	ASSERT_ERR(weft_chan_send(x->ch, &v, -2), -EINVAL);
	ASSERT_ERR(weft_chan_recv(x->ch, &out, -2), -EINVAL);
	/* unbuffered, nobody on the other side */
	ASSERT_ERR(weft_chan_send(x->ch, &v, 0), -ETIMEDOUT);
	ASSERT_ERR(weft_chan_recv(x->ch, &out, weft_now() - 1), -ETIMEDOUT);
	ASSERT_ERR(weft_chan_try_send(x->ch, &v), -EAGAIN);
	ASSERT_ERR(weft_chan_try_recv(x->ch, &out), -EAGAIN);
	int64_t t0 = weft_now();
	ASSERT_ERR(weft_chan_recv(x->ch, &out, t0 + 20 * 1000000), -ETIMEDOUT);
	ASSERT_GE(weft_now() - t0, 20 * 1000000);
	ASSERT_ERR(weft_chan_send(x->ch, &v, in_ms(5)), -ETIMEDOUT);
	ASSERT_EQ(senders(x->ch) + receivers(x->ch), 0);
	weft_select_case c[2] = {{x->ch, WEFT_SELECT_RECV, &out}, {x->ch, WEFT_SELECT_SEND, &v}};
	ASSERT_ERR(weft_chan_select(c, 2, 0, NULL), -ETIMEDOUT);
	ASSERT_ERR(weft_chan_select(c, 2, in_ms(5), NULL), -ETIMEDOUT);
	ASSERT_EQ(senders(x->ch) + receivers(x->ch), 0);
	atomic_store(&x->done, 1);
}

TEST(args_and_deadlines_in_a_fiber)
{
	static struct fargs x;
	x.ch = chan_new(sizeof(int), 0);
	run_fibers(2, args_fiber, &x);
	ASSERT_EQ(atomic_load(&x.done), 1);
	weft_chan_destroy(x.ch);
}

/* ---- FIFO order ----------------------------------------------------------------------------- */

#define FIFO_VALUES 5000

struct fifo_ctx {
	weft_chan *ch;
	long received;
	weft_waitgroup wg;
};

struct value {
	long n;
	char pad[40]; /* a value bigger than a word */
};

static void fifo_sender(void *arg)
{
	struct fifo_ctx *x = arg;
	for (long i = 0; i < FIFO_VALUES; i++) {
		struct value v = {.n = i};
		memset(v.pad, (int)(i & 0x7f), sizeof(v.pad));
		ASSERT_EQ(weft_chan_send(x->ch, &v, in_ms(10000)), 0);
	}
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void fifo_receiver(void *arg)
{
	struct fifo_ctx *x = arg;
	for (long i = 0; i < FIFO_VALUES; i++) {
		struct value v;
		ASSERT_EQ(weft_chan_recv(x->ch, &v, in_ms(10000)), 0);
		ASSERT_EQ(v.n, i);
		ASSERT_EQ(v.pad[0], (char)(i & 0x7f));
		ASSERT_EQ(v.pad[39], (char)(i & 0x7f));
		x->received++;
		if (i % 97 == 0)
			(void)weft_fiber_yield();
	}
	ASSERT_OK(weft_waitgroup_done(&x->wg));
}

static void fifo_main(void *arg)
{
	struct fifo_ctx *x = arg;
	ASSERT_OK(weft_waitgroup_add(&x->wg, 2));
	spawn_in(root_scope(), fifo_receiver, x);
	spawn_in(root_scope(), fifo_sender, x);
	ASSERT_EQ(weft_waitgroup_wait(&x->wg, in_ms(30000)), 0);
	ASSERT_EQ(x->received, FIFO_VALUES);
	ASSERT_EQ(weft_chan_len(x->ch), 0);
}

TEST_TIMEOUT(fifo_order_buffered_and_unbuffered, 60)
{
	size_t caps[] = {0, 1, 7, 64};
	for (size_t k = 0; k < WEFT__ARRAY_SIZE(caps); k++)
		for (int threads = 1; threads <= 4; threads *= 2) {
			struct fifo_ctx x = {.ch = chan_new(sizeof(struct value), caps[k])};
			run_fibers(threads, fifo_main, &x);
			weft_chan_destroy(x.ch);
		}
}

/* ---- hand-offs with parked waiters and plain threads ---------------------------------------- */

struct park_ctx {
	weft_chan *ch;
	int got;
	_Atomic int result;
	_Atomic int finished;
};

static void parked_receiver(void *arg)
{
	struct park_ctx *x = arg;
	int r = weft_chan_recv(x->ch, &x->got, in_ms(10000));
	atomic_store(&x->result, r);
	atomic_store(&x->finished, 1);
}

static void parked_sender(void *arg)
{
	struct park_ctx *x = arg;
	int v = 99;
	int r = weft_chan_send(x->ch, &v, in_ms(10000));
	atomic_store(&x->result, r);
	atomic_store(&x->finished, 1);
}

TEST(try_send_and_try_recv_hand_off_to_parked_fibers)
{
	weft_sched *s = sched_new(2);
	for (int cap = 0; cap <= 1; cap++) {
		/* a receiver parks; try_send from this plain thread hands the value to it */
		struct park_ctx x = {.ch = chan_new(sizeof(int), (size_t)cap)};
		ASSERT_OK(weft_spawn(weft_sched_root(s), parked_receiver, &x, NULL, NULL));
		THREAD_WAIT_FOR(receivers(x.ch) == 1);
		int v = 42;
		ASSERT_EQ(weft_chan_try_send(x.ch, &v), 0);
		ASSERT_EQ(weft_chan_len(x.ch), 0); /* straight to the receiver */
		ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(10000)));
		ASSERT_EQ(atomic_load(&x.result), 0);
		ASSERT_EQ(x.got, 42);

		/* a sender parks (unbuffered, or buffered and full); try_recv takes its value */
		atomic_store(&x.finished, 0);
		int out = 0;
		if (cap) {
			v = 1;
			ASSERT_EQ(weft_chan_try_send(x.ch, &v), 0);
		}
		ASSERT_OK(weft_spawn(weft_sched_root(s), parked_sender, &x, NULL, NULL));
		THREAD_WAIT_FOR(senders(x.ch) == 1);
		ASSERT_EQ(weft_chan_try_recv(x.ch, &out), 0);
		ASSERT_EQ(out, cap ? 1 : 99);
		ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(10000)));
		ASSERT_EQ(atomic_load(&x.result), 0);
		if (cap) { /* the sender's value moved into the ring */
			ASSERT_EQ(weft_chan_len(x.ch), 1);
			ASSERT_EQ(weft_chan_try_recv(x.ch, &out), 0);
			ASSERT_EQ(out, 99);
		}
		ASSERT_ERR(weft_chan_try_recv(x.ch, &out), -EAGAIN);
		weft_chan_destroy(x.ch);
	}
	weft_sched_destroy(s);
}

/* ---- close ---------------------------------------------------------------------------------- */

#define CLOSE_WAITERS 3

struct close_ctx {
	weft_chan *empty; /* receivers park on it */
	weft_chan *full;  /* senders park on it */
	_Atomic int results[2 * CLOSE_WAITERS];
	_Atomic int finished;
};

struct close_arg {
	struct close_ctx *x;
	int i;
};

static void close_receiver(void *arg)
{
	struct close_arg *a = arg;
	int v;
	atomic_store(&a->x->results[a->i], weft_chan_recv(a->x->empty, &v, in_ms(10000)));
	atomic_fetch_add(&a->x->finished, 1);
}

static void close_sender(void *arg)
{
	struct close_arg *a = arg;
	int v = 1000 + a->i;
	atomic_store(&a->x->results[a->i], weft_chan_send(a->x->full, &v, in_ms(10000)));
	atomic_fetch_add(&a->x->finished, 1);
}

static void close_main(void *arg)
{
	struct close_ctx *x = arg;
	struct close_arg a[2 * CLOSE_WAITERS];
	for (int i = 0; i < 2; i++) {
		int v = i + 1;
		ASSERT_EQ(weft_chan_send(x->full, &v, 0), 0);
	}
	for (int i = 0; i < 2 * CLOSE_WAITERS; i++) {
		a[i] = (struct close_arg){x, i};
		spawn_in(root_scope(), i < CLOSE_WAITERS ? close_receiver : close_sender, &a[i]);
	}
	FIBER_WAIT_FOR(receivers(x->empty) == CLOSE_WAITERS && senders(x->full) == CLOSE_WAITERS);
	ASSERT_EQ(weft_chan_close(x->empty), 0);
	ASSERT_EQ(weft_chan_close(x->full), 0);
	ASSERT_ERR(weft_chan_close(x->full), -EPIPE);
	FIBER_WAIT_FOR(atomic_load(&x->finished) == 2 * CLOSE_WAITERS);
	for (int i = 0; i < 2 * CLOSE_WAITERS; i++)
		ASSERT_ERR(atomic_load(&x->results[i]), -EPIPE);
	/* the buffered values are still there: drained first, then -EPIPE */
	int v = 0;
	ASSERT_EQ(weft_chan_len(x->full), 2);
	ASSERT_EQ(weft_chan_recv(x->full, &v, WEFT_FOREVER), 0);
	ASSERT_EQ(v, 1);
	ASSERT_EQ(weft_chan_recv(x->full, &v, WEFT_FOREVER), 0);
	ASSERT_EQ(v, 2);
	ASSERT_ERR(weft_chan_recv(x->full, &v, WEFT_FOREVER), -EPIPE);
	ASSERT_ERR(weft_chan_send(x->full, &v, WEFT_FOREVER), -EPIPE);
	ASSERT_ERR(weft_chan_recv(x->empty, &v, WEFT_FOREVER), -EPIPE);
	ASSERT_EQ(senders(x->full) + receivers(x->empty), 0);
}

TEST(close_wakes_waiters_and_drains)
{
	for (int threads = 1; threads <= 2; threads++) {
		struct close_ctx x = {.empty = chan_new(sizeof(int), 0),
		                      .full = chan_new(sizeof(int), 2)};
		run_fibers(threads, close_main, &x);
		weft_chan_destroy(x.empty);
		weft_chan_destroy(x.full);
	}
}

TEST(close_from_a_plain_thread)
{
	weft_sched *s = sched_new(2);
	struct park_ctx x = {.ch = chan_new(sizeof(int), 4)};
	ASSERT_OK(weft_spawn(weft_sched_root(s), parked_receiver, &x, NULL, NULL));
	THREAD_WAIT_FOR(receivers(x.ch) == 1);
	ASSERT_EQ(weft_chan_close(x.ch), 0);
	ASSERT_OK(weft_scope_join(weft_sched_root(s), in_ms(10000)));
	ASSERT_ERR(atomic_load(&x.result), -EPIPE);
	weft_sched_destroy(s);
	weft_chan_destroy(x.ch);
}

/* ---- cancellation --------------------------------------------------------------------------- */

enum { K_SEND, K_RECV, K_SELECT, K_N };

struct cancel_ctx {
	weft_chan *a, *b;
	_Atomic int results[K_N];
	_Atomic int finished;
};

struct cancel_arg {
	struct cancel_ctx *x;
	int kind;
};

static void cancel_waiter(void *arg)
{
	struct cancel_arg *c = arg;
	struct cancel_ctx *x = c->x;
	int v = 5, r = 0;
	switch (c->kind) {
	case K_SEND: r = weft_chan_send(x->a, &v, WEFT_FOREVER); break;
	case K_RECV: r = weft_chan_recv(x->b, &v, WEFT_FOREVER); break;
	case K_SELECT: {
		/* a receive beside the other receiver, a send beside the other sender */
		weft_select_case cs[2] = {{x->b, WEFT_SELECT_RECV, &v},
		                          {x->a, WEFT_SELECT_SEND, &v}};
		r = weft_chan_select(cs, 2, WEFT_FOREVER, NULL);
		break;
	}
	}
	atomic_store(&x->results[c->kind], r);
	atomic_fetch_add(&x->finished, 1);
}

static void cancel_main(void *arg)
{
	struct cancel_ctx *x = arg;
	weft_scope *child;
	ASSERT_OK(weft_scope_create(&child, root_scope()));
	struct cancel_arg c[K_N];
	for (int k = 0; k < K_N; k++) {
		c[k] = (struct cancel_arg){x, k};
		spawn_in(child, cancel_waiter, &c[k]);
	}
	FIBER_WAIT_FOR(senders(x->a) == 2 && receivers(x->b) == 2);
	ASSERT_OK(weft_scope_cancel(child));
	ASSERT_EQ(weft_scope_join(child, in_ms(10000)), 0);
	weft_scope_destroy(child);
	for (int k = 0; k < K_N; k++)
		ASSERT_ERR(atomic_load(&x->results[k]), -ECANCELED);
	ASSERT_EQ(senders(x->a) + receivers(x->a) + senders(x->b) + receivers(x->b), 0);
}

TEST(cancel_send_recv_select)
{
	for (int threads = 1; threads <= 2; threads++) {
		struct cancel_ctx x = {.a = chan_new(sizeof(int), 0),
		                       .b = chan_new(sizeof(int), 3)};
		run_fibers(threads, cancel_main, &x);
		weft_chan_destroy(x.a);
		weft_chan_destroy(x.b);
	}
}

/* Cancels and deadlines racing with hand-offs: a value is either delivered (the receiver says 0)
 * or stays with the sender (the sender says it failed), never both, never neither. */
#define RACE_ITERS 300

struct race_ctx {
	weft_chan *ch;
	bool cancel;
	bool use_select;
	int64_t deadline;
	int got;
	_Atomic int result;
	long delivered, kept;
};

static void race_receiver(void *arg)
{
	struct race_ctx *x = arg;
	int r;
	if (x->use_select) {
		weft_select_case c = {x->ch, WEFT_SELECT_RECV, &x->got};
		r = weft_chan_select(&c, 1, x->deadline, NULL); /* the index, 0, on success */
	} else {
		r = weft_chan_recv(x->ch, &x->got, x->deadline);
	}
	if (r != 0)
		ASSERT_ERR(r, x->cancel ? -ECANCELED : -ETIMEDOUT);
	atomic_store(&x->result, r == 0 ? 1 : r);
}

static void race_main(void *arg)
{
	struct race_ctx *x = arg;
	uint64_t rng = 0x1234567ull + (uint64_t)x->cancel * 7 + (uint64_t)x->use_select;
	int64_t end = in_ms(20000);
	for (int it = 0; it < RACE_ITERS && weft_now() < end; it++) {
		atomic_store(&x->result, 0);
		x->got = -1;
		weft_scope *child;
		ASSERT_OK(weft_scope_create(&child, root_scope()));
		int64_t delay = (int64_t)(th_rng(&rng) % 200000);
		x->deadline = x->cancel ? WEFT_FOREVER : weft_now() + 50000 + delay;
		spawn_in(child, race_receiver, x);
		if (th_rng(&rng) % 4)
			(void)weft_fiber_yield();
		if (x->cancel)
			canceller_fire(child, &rng);
		else
			while (weft_now() < x->deadline - 20000 + (int64_t)(th_rng(&rng) % 40000))
				(void)weft_fiber_yield();
		int v = it;
		int r = weft_chan_send(x->ch, &v, in_ms(2)); /* unbuffered: needs the receiver */
		ASSERT_EQ(weft_scope_join(child, in_ms(10000)), 0);
		/* the canceller uses the scope: it must be done with it first */
		FIBER_WAIT_FOR(atomic_load(&canceller.target) == NULL);
		weft_scope_destroy(child);
		int rr = atomic_load(&x->result);
		if (r == 0) {
			ASSERT_EQ(rr, 1);
			ASSERT_EQ(x->got, it);
			x->delivered++;
		} else {
			ASSERT_ERR(r, -ETIMEDOUT);
			ASSERT_NE(rr, 1);
			ASSERT_EQ(x->got, -1);
			x->kept++;
		}
		ASSERT_EQ(senders(x->ch) + receivers(x->ch), 0);
	}
}

static void race_run(bool cancel, bool use_select, int threads)
{
	struct race_ctx x = {
	        .ch = chan_new(sizeof(int), 0), .cancel = cancel, .use_select = use_select};
	if (cancel)
		canceller_start();
	run_fibers(threads, race_main, &x);
	if (cancel)
		canceller_stop();
	fprintf(stderr, "# %s%s, %d threads: delivered %ld, kept %ld\n",
	        cancel ? "cancel" : "deadline", use_select ? " (select)" : "", threads, x.delivered,
	        x.kept);
	ASSERT_GT(x.delivered + x.kept, 50);
	weft_chan_destroy(x.ch);
}

TEST_TIMEOUT(race_handoff_vs_deadline, 60)
{
	race_run(false, false, 2);
	race_run(false, true, 2);
}

TEST_TIMEOUT(race_handoff_vs_cancel, 60)
{
	race_run(true, false, 2);
	race_run(true, true, 4);
}

/* ---- select --------------------------------------------------------------------------------- */

#define FAIR_SELECTS 10000

struct fair_ctx {
	weft_chan *a, *b, *never;
	long count[3];
};

static void fair_main(void *arg)
{
	struct fair_ctx *x = arg;
	int v = 1, out;
	ASSERT_EQ(weft_chan_send(x->a, &v, 0), 0);
	ASSERT_EQ(weft_chan_send(x->b, &v, 0), 0);
	weft_select_case c[3] = {{x->a, WEFT_SELECT_RECV, &out},
	                         {x->never, WEFT_SELECT_RECV, &out},
	                         {x->b, WEFT_SELECT_RECV, &out}};
	for (int i = 0; i < FAIR_SELECTS; i++) {
		int res = -1;
		int k = weft_chan_select(c, 3, WEFT_FOREVER, &res);
		ASSERT_GE(k, 0);
		ASSERT_EQ(res, 0);
		x->count[k == 0 ? 0 : k == 1 ? 1 : 2]++;
		ASSERT_EQ(weft_chan_send(c[k].chan, &v, 0), 0); /* ready again */
	}
}

TEST(select_is_fair_between_ready_channels)
{
	struct fair_ctx x = {.a = chan_new(sizeof(int), 1),
	                     .b = chan_new(sizeof(int), 1),
	                     .never = chan_new(sizeof(int), 1)};
	run_fibers(2, fair_main, &x);
	ASSERT_EQ(x.count[1], 0);
	ASSERT_EQ(x.count[0] + x.count[2], FAIR_SELECTS);
	ASSERT_GE(x.count[0], FAIR_SELECTS * 4 / 10);
	ASSERT_LE(x.count[0], FAIR_SELECTS * 6 / 10);
	weft_chan_destroy(x.a);
	weft_chan_destroy(x.b);
	weft_chan_destroy(x.never);
}

struct sel_ctx {
	weft_chan *a, *b, *u;
	int got;
	_Atomic int stage;
};

static void sel_sender(void *arg)
{
	struct sel_ctx *x = arg;
	FIBER_WAIT_FOR(receivers(x->a) == 1 && receivers(x->b) == 1 && senders(x->u) == 1);
	int v = 77;
	ASSERT_EQ(weft_chan_send(x->b, &v, in_ms(10000)), 0);
	atomic_store(&x->stage, 1);
}

static void sel_receiver(void *arg)
{
	struct sel_ctx *x = arg;
	FIBER_WAIT_FOR(senders(x->u) == 1 && receivers(x->a) == 1);
	int v = 0;
	ASSERT_EQ(weft_chan_recv(x->u, &v, in_ms(10000)), 0);
	ASSERT_EQ(v, 55);
}

static void sel_main(void *arg)
{
	struct sel_ctx *x = arg;
	int out = 0, res = -1, send = 55;
	/* a poll: nothing is ready */
	weft_select_case c[4] = {{x->a, WEFT_SELECT_RECV, &out},
	                         {NULL, WEFT_SELECT_RECV, NULL}, /* skipped */
	                         {x->b, WEFT_SELECT_RECV, &out},
	                         {x->u, WEFT_SELECT_SEND, &send}};
	int64_t t0 = weft_now();
	ASSERT_ERR(weft_chan_select(c, 4, 0, &res), -ETIMEDOUT);
	ASSERT_ERR(weft_chan_select(c, 4, t0 + 20 * 1000000, &res), -ETIMEDOUT);
	ASSERT_GE(weft_now() - t0, 20 * 1000000);
	ASSERT_EQ(res, -1);
	ASSERT_EQ(receivers(x->a) + receivers(x->b) + senders(x->u), 0);

	/* a poll: one is ready */
	int v = 3;
	ASSERT_EQ(weft_chan_send(x->a, &v, 0), 0);
	ASSERT_EQ(weft_chan_select(c, 4, 0, &res), 0);
	ASSERT_EQ(res, 0);
	ASSERT_EQ(out, 3);

	/* parked on three channels, woken by a send on the second one */
	spawn_in(root_scope(), sel_sender, x);
	ASSERT_EQ(weft_chan_select(c, 4, in_ms(10000), &res), 2);
	ASSERT_EQ(res, 0);
	ASSERT_EQ(out, 77);
	FIBER_WAIT_FOR(atomic_load(&x->stage) == 1);
	ASSERT_EQ(receivers(x->a) + receivers(x->b) + senders(x->u), 0); /* all unlinked */

	/* parked, woken by a receiver taking the send case's value */
	spawn_in(root_scope(), sel_receiver, x);
	ASSERT_EQ(weft_chan_select(c, 4, in_ms(10000), &res), 3);
	ASSERT_EQ(res, 0);
	ASSERT_EQ(receivers(x->a) + receivers(x->b) + senders(x->u), 0);

	/* the same channel named twice, and both directions of one unbuffered channel */
	weft_select_case d[3] = {{x->a, WEFT_SELECT_RECV, &out},
	                         {x->a, WEFT_SELECT_RECV, &out},
	                         {x->a, WEFT_SELECT_SEND, &send}};
	ASSERT_EQ(weft_chan_select(d, 3, 0, &res), 2); /* a has room: the send is ready */
	int k = weft_chan_select(d, 2, 0, &res);
	ASSERT_TRUE(k == 0 || k == 1);
	ASSERT_EQ(res, 0);
	ASSERT_EQ(out, 55);
	ASSERT_ERR(weft_chan_select(d, 2, in_ms(5), &res), -ETIMEDOUT);
	ASSERT_EQ(receivers(x->a), 0);
}

TEST(select_poll_timeout_and_wake)
{
	for (int threads = 1; threads <= 2; threads++) {
		struct sel_ctx x = {.a = chan_new(sizeof(int), 1),
		                    .b = chan_new(sizeof(int), 0),
		                    .u = chan_new(sizeof(int), 0)};
		run_fibers(threads, sel_main, &x);
		weft_chan_destroy(x.a);
		weft_chan_destroy(x.b);
		weft_chan_destroy(x.u);
	}
}

struct selclose_ctx {
	weft_chan *a, *b;
	_Atomic int closed;
};

static void selclose_closer(void *arg)
{
	struct selclose_ctx *x = arg;
	FIBER_WAIT_FOR(receivers(x->a) == 1 && receivers(x->b) == 1);
	ASSERT_EQ(weft_chan_close(x->b), 0);
}

static void selclose_main(void *arg)
{
	struct selclose_ctx *x = arg;
	int out = 0, res = 0, v = 9;
	weft_select_case c[2] = {{x->a, WEFT_SELECT_RECV, &out}, {x->b, WEFT_SELECT_RECV, &out}};
	/* parked on two channels; one is closed */
	spawn_in(root_scope(), selclose_closer, x);
	ASSERT_EQ(weft_chan_select(c, 2, in_ms(10000), &res), 1);
	ASSERT_ERR(res, -EPIPE);
	ASSERT_EQ(receivers(x->a), 0);
	/* a closed channel is always ready */
	for (int i = 0; i < 20; i++) {
		res = 0;
		ASSERT_EQ(weft_chan_select(c, 2, WEFT_FOREVER, &res), 1);
		ASSERT_ERR(res, -EPIPE);
	}
	/* a closed channel with buffered values: they come first */
	ASSERT_EQ(weft_chan_send(x->a, &v, 0), 0);
	ASSERT_EQ(weft_chan_close(x->a), 0);
	weft_select_case a1[1] = {{x->a, WEFT_SELECT_RECV, &out}};
	ASSERT_EQ(weft_chan_select(a1, 1, 0, &res), 0);
	ASSERT_EQ(res, 0);
	ASSERT_EQ(out, 9);
	ASSERT_EQ(weft_chan_select(a1, 1, 0, &res), 0);
	ASSERT_ERR(res, -EPIPE);
	/* a send case on a closed channel: ready, with -EPIPE */
	weft_select_case s1[1] = {{x->a, WEFT_SELECT_SEND, &v}};
	res = 0;
	ASSERT_EQ(weft_chan_select(s1, 1, WEFT_FOREVER, &res), 0);
	ASSERT_ERR(res, -EPIPE);
	ASSERT_EQ(weft_chan_select(s1, 1, WEFT_FOREVER, NULL), 0); /* ret_result may be NULL */
}

TEST(select_on_closed_channels)
{
	struct selclose_ctx x = {.a = chan_new(sizeof(int), 1), .b = chan_new(sizeof(int), 0)};
	run_fibers(2, selclose_main, &x);
	weft_chan_destroy(x.a);
	weft_chan_destroy(x.b);
}

/* ---- ping-pong and stress ------------------------------------------------------------------- */

#define PING_ROUNDS 20000

struct ping_ctx {
	weft_chan *ping, *pong;
	long sum;
};

static void ponger(void *arg)
{
	struct ping_ctx *x = arg;
	for (;;) {
		long v;
		int r = weft_chan_recv(x->ping, &v, in_ms(10000));
		if (r == -EPIPE)
			break;
		ASSERT_EQ(r, 0);
		v++;
		ASSERT_EQ(weft_chan_send(x->pong, &v, in_ms(10000)), 0);
	}
}

static void ping_main(void *arg)
{
	struct ping_ctx *x = arg;
	spawn_in(root_scope(), ponger, x);
	for (long i = 0; i < PING_ROUNDS; i++) {
		long v = i;
		ASSERT_EQ(weft_chan_send(x->ping, &v, in_ms(10000)), 0);
		ASSERT_EQ(weft_chan_recv(x->pong, &v, in_ms(10000)), 0);
		ASSERT_EQ(v, i + 1);
		x->sum += v;
	}
	ASSERT_EQ(weft_chan_close(x->ping), 0);
}

TEST_TIMEOUT(unbuffered_ping_pong, 60)
{
	for (int threads = 1; threads <= 4; threads *= 2) {
		struct ping_ctx x = {.ping = chan_new(sizeof(long), 0),
		                     .pong = chan_new(sizeof(long), 0)};
		run_fibers(threads, ping_main, &x);
		ASSERT_EQ(x.sum, (long)PING_ROUNDS * (PING_ROUNDS + 1) / 2);
		weft_chan_destroy(x.ping);
		weft_chan_destroy(x.pong);
	}
}

#define MM_SENDERS 4
#define MM_RECEIVERS 4
#define MM_VALUES 4000 /* per sender and channel */
#define MM_TOTAL (2L * MM_SENDERS * MM_VALUES)

struct mm_ctx {
	weft_chan *buffered, *unbuffered;
	_Atomic unsigned char *seen; /* MM_TOTAL entries */
	_Atomic long sum, count;
	weft_waitgroup senders, receivers;
};

struct mm_arg {
	struct mm_ctx *x;
	int id;
};

static void mm_sender(void *arg)
{
	struct mm_arg *a = arg;
	struct mm_ctx *x = a->x;
	for (long i = 0; i < MM_VALUES; i++) {
		long v = (long)a->id * MM_VALUES * 2 + 2 * i;
		ASSERT_EQ(weft_chan_send(x->buffered, &v, in_ms(20000)), 0);
		v++;
		if (i % 2) { /* half of them through a select with both sends ready or not */
			long w = v;
			weft_select_case c[1] = {{x->unbuffered, WEFT_SELECT_SEND, &w}};
			ASSERT_EQ(weft_chan_select(c, 1, in_ms(20000), NULL), 0);
		} else {
			ASSERT_EQ(weft_chan_send(x->unbuffered, &v, in_ms(20000)), 0);
		}
	}
	ASSERT_OK(weft_waitgroup_done(&x->senders));
}

static void mm_receiver(void *arg)
{
	struct mm_arg *a = arg;
	struct mm_ctx *x = a->x;
	bool open[2] = {true, true};
	long v[2];
	weft_select_case c[2] = {{x->buffered, WEFT_SELECT_RECV, &v[0]},
	                         {x->unbuffered, WEFT_SELECT_RECV, &v[1]}};
	for (long guard = 0; (open[0] || open[1]) && guard < 4 * MM_TOTAL; guard++) {
		int res, k;
		if (a->id % 2 == 0) { /* half of the receivers select over both */
			k = weft_chan_select(c, 2, in_ms(20000), &res);
			ASSERT_GE(k, 0);
		} else {
			k = open[0] ? 0 : 1;
			res = weft_chan_recv(c[k].chan, &v[k], in_ms(20000));
		}
		if (res == -EPIPE) {
			open[k] = false;
			c[k].chan = NULL; /* a closed channel is always ready: stop selecting it */
			if (!c[0].chan && !c[1].chan)
				break;
			continue;
		}
		ASSERT_EQ(res, 0);
		ASSERT_TRUE(v[k] >= 0 && v[k] < MM_TOTAL);
		ASSERT_EQ(v[k] % 2, k); /* even values on the buffered channel */
		ASSERT_EQ(atomic_fetch_add(&x->seen[v[k]], 1), 0);
		atomic_fetch_add(&x->sum, v[k]);
		atomic_fetch_add(&x->count, 1);
	}
	ASSERT_OK(weft_waitgroup_done(&x->receivers));
}

static void mm_main(void *arg)
{
	struct mm_ctx *x = arg;
	struct mm_arg s[MM_SENDERS], r[MM_RECEIVERS];
	ASSERT_OK(weft_waitgroup_add(&x->senders, MM_SENDERS));
	ASSERT_OK(weft_waitgroup_add(&x->receivers, MM_RECEIVERS));
	for (int i = 0; i < MM_RECEIVERS; i++) {
		r[i] = (struct mm_arg){x, i};
		spawn_in(root_scope(), mm_receiver, &r[i]);
	}
	for (int i = 0; i < MM_SENDERS; i++) {
		s[i] = (struct mm_arg){x, i};
		spawn_in(root_scope(), mm_sender, &s[i]);
	}
	ASSERT_EQ(weft_waitgroup_wait(&x->senders, in_ms(60000)), 0);
	ASSERT_EQ(weft_chan_close(x->buffered), 0);
	ASSERT_EQ(weft_chan_close(x->unbuffered), 0);
	ASSERT_EQ(weft_waitgroup_wait(&x->receivers, in_ms(60000)), 0);
}

TEST_TIMEOUT(many_to_many_stress, 120)
{
	for (int threads = 2; threads <= 4; threads *= 2) {
		struct mm_ctx *x = calloc(1, sizeof(*x));
		ASSERT_NOT_NULL(x);
		x->seen = calloc(MM_TOTAL, 1);
		ASSERT_NOT_NULL(x->seen);
		x->buffered = chan_new(sizeof(long), 16);
		x->unbuffered = chan_new(sizeof(long), 0);
		run_fibers(threads, mm_main, x);
		ASSERT_EQ(atomic_load(&x->count), MM_TOTAL);
		ASSERT_EQ(atomic_load(&x->sum), MM_TOTAL * (MM_TOTAL - 1) / 2);
		for (long i = 0; i < MM_TOTAL; i++)
			ASSERT_EQ(atomic_load(&x->seen[i]), 1);
		weft_chan_destroy(x->buffered);
		weft_chan_destroy(x->unbuffered);
		free((void *)x->seen);
		free(x);
	}
}

/* ---- destroy with a waiter ------------------------------------------------------------------ */

static void destroy_with_waiter_child(void *arg)
{
	(void)arg;
	weft_sched *s = sched_new(1);
	struct park_ctx x = {.ch = chan_new(sizeof(int), 0)};
	ASSERT_OK(weft_spawn(weft_sched_root(s), parked_receiver, &x, NULL, NULL));
	THREAD_WAIT_FOR(receivers(x.ch) == 1);
	weft_chan_destroy(x.ch); /* aborts: the receiver would stay parked forever */
	_exit(3);
}

TEST(destroy_with_a_waiter_aborts)
{
	pid_t pid = th_spawn_fn(destroy_with_waiter_child, NULL);
	int status = th_stop(pid, 0, 20);
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(WTERMSIG(status), SIGABRT);
}
