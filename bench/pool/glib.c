/* bench/pool/glib.c: the pool bench's GLib peer: a GThreadPool of 2 threads, exclusive.
 *
 * Exclusive (g_thread_pool_new(..., 2, TRUE, ...)) because that is the fixed pool the other peers
 * are: its 2 threads start at creation and serve this pool only, like ThreadPoolExecutor's
 * prestarted core threads, the Go pool's 2 goroutines and weft's min = max = 2. A non-exclusive
 * pool starts threads on demand and lends idle ones to GLib's global set of unused threads, which
 * would put thread start-up and hand-over inside the figures. The task function is fixed at
 * creation (GLib's model); each push queues the task's argument (never NULL: GLib refuses it) in
 * GLib's GAsyncQueue, an unbounded queue under one mutex with a condition variable.
 * Measures: what common.c's figures measure; leaves out what they leave out.
 */
#include <errno.h>

#include <glib.h>

#include "common.h"

static void run_add(gpointer data, gpointer user)
{
	(void)user;
	bench_task_add(data);
}

static void run_latency(gpointer data, gpointer user)
{
	(void)user;
	bench_task_latency(data);
}

static int glib_create(void **ret, int kind)
{
	GError *err = NULL;
	GThreadPool *pool = g_thread_pool_new(kind == BENCH_TASK_ADD ? run_add : run_latency, NULL,
	                                      2, TRUE, &err);
	if (pool == NULL) {
		g_clear_error(&err);
		return -EAGAIN;
	}
	*ret = pool;
	return 0;
}

static int glib_submit(void *pool, void *arg)
{
	return g_thread_pool_push(pool, arg, NULL) ? 0 : -EAGAIN;
}

static void glib_destroy(void *pool)
{
	g_thread_pool_free(pool, FALSE, TRUE); /* run what is queued, wait for the threads */
}

int main(int argc, char **argv)
{
	static const struct bench_pool_ops ops = {"glib", glib_create, glib_submit, glib_destroy};
	return bench_pool_main(&ops, argc, argv);
}
