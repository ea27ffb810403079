/* bench/pool/tbb.cpp: the pool bench's oneTBB peer: a tbb::task_group whose tasks are enqueued
 * into a tbb::task_arena of 2 worker threads.
 *
 * oneTBB has no thread pool object; its pieces for "run this on 2 threads, fire and forget, wait
 * for all at the end" are these: a task_arena with 2 slots, none of them reserved for an outside
 * (master) thread, so that 2 of TBB's worker threads serve it and the submitting main thread
 * never runs tasks; task_group::defer wraps the function in a task the group counts, and
 * task_arena::enqueue puts it in the arena's shared FIFO queue (unbounded) and wakes a worker; at
 * destroy task_group::wait waits until the group has run everything. A global_control raises
 * TBB's thread cap to 3 (the main thread and 2 workers): by default TBB gives this 2-CPU machine
 * 1 worker, counting the main thread as the second. TBB starts its workers at the first enqueue
 * and, like weft, lets an idle worker spin a while before it sleeps; the warm-up runs of common.c
 * cover the start. TBB keeps its sleeping workers until the process ends. Built by
 * bench/pool/run.sh with g++ against Debian's libtbb-dev, linked with common.c compiled as C.
 * Measures: what common.c's figures measure; leaves out what they leave out.
 */
#include <cerrno>
#include <new>

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

extern "C" {
#include "common.h"
}

namespace
{

struct tbb_pool {
	tbb::global_control cap{tbb::global_control::max_allowed_parallelism, 3};
	tbb::task_arena arena{2, 0}; /* 2 slots, 0 reserved for outside threads */
	tbb::task_group group;
	void (*fn)(void *arg) = nullptr;
};

int tbb_create(void **ret, int kind)
{
	tbb_pool *pool = new (std::nothrow) tbb_pool;
	if (pool == nullptr)
		return -ENOMEM;
	pool->fn = kind == BENCH_TASK_ADD ? bench_task_add : bench_task_latency;
	*ret = pool;
	return 0;
}

int tbb_submit(void *p, void *arg)
{
	tbb_pool *pool = static_cast<tbb_pool *>(p);
	void (*fn)(void *) = pool->fn;
	try {
		pool->arena.enqueue(pool->group.defer([fn, arg] { fn(arg); }));
	} catch (const std::bad_alloc &) {
		return -ENOMEM;
	}
	return 0;
}

void tbb_destroy(void *p)
{
	tbb_pool *pool = static_cast<tbb_pool *>(p);
	if (pool == nullptr)
		return;
	pool->group.wait();
	delete pool;
}

} // namespace

int main(int argc, char **argv)
{
	static const struct bench_pool_ops ops = {"tbb", tbb_create, tbb_submit, tbb_destroy};
	return bench_pool_main(&ops, argc, argv);
}
