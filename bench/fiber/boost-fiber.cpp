// bench/fiber/boost-fiber.cpp: the fiber bench's Boost.Fiber peers (Debian's Boost 1.74), the
// workloads of bench/fiber/fiber.c and fiber.go on Boost.Fiber's default scheduler (round_robin,
// one thread: a Boost fiber never leaves the thread that runs it unless a work-stealing algorithm
// is installed):
//   yield  two fibers each calling boost::this_fiber::yield() N times (default 1,000,000): the
//          time over 2N, ns per yield (each one switches to the other fiber).
//   chan   two fibers ping-pong over two boost::fibers::unbuffered_channel<long>, N round trips:
//          the time over 2N, ns per hand-off.
// Each figure: one untimed warm-up run, then R runs (default 7), printed as
//   name=FIGURE impl=boost-fiber ns_per_op=MEDIAN min=MIN max=MAX runs=R n=N
// Boost.Fiber's fibers run on Boost.Context's fcontext (see boost-context.cpp); the main thread is
// a fiber too and joins the two. Left out: fiber creation (each run creates two), stacks (the
// default fixedsize_stack, 128 KiB with Debian's build), and more than one thread.
// Built by bench/fiber/run.sh: g++ -O2 boost-fiber.cpp -lboost_fiber -lboost_context
// Usage: bench-fiber-boost-fiber yield|chan [--n N] [--runs R]
#include <boost/fiber/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using clk = std::chrono::steady_clock;

static double yield_run(long n)
{
	auto t0 = clk::now();
	boost::fibers::fiber a([n] {
		for (long i = 0; i < n; i++)
			boost::this_fiber::yield();
	});
	boost::fibers::fiber b([n] {
		for (long i = 0; i < n; i++)
			boost::this_fiber::yield();
	});
	a.join();
	b.join();
	return std::chrono::duration<double, std::nano>(clk::now() - t0).count();
}

static double chan_run(long n)
{
	boost::fibers::unbuffered_channel<long> ping, pong;
	auto t0 = clk::now();
	boost::fibers::fiber a([&] {
		for (long i = 0; i < n; i++) {
			long v = 0;
			ping.push(i);
			pong.pop(v);
		}
	});
	boost::fibers::fiber b([&] {
		for (long i = 0; i < n; i++) {
			long v = 0;
			ping.pop(v);
			pong.push(v);
		}
	});
	a.join();
	b.join();
	return std::chrono::duration<double, std::nano>(clk::now() - t0).count();
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench-fiber-boost-fiber yield|chan [--n N] [--runs R]\n");
		return 2;
	}
	const char *fig = argv[1];
	long n = 1000000;
	int runs = 7;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--n") && i + 1 < argc)
			n = atol(argv[++i]);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else {
			fprintf(stderr, "bench-fiber-boost-fiber: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (n < 1 || runs < 1 || runs > 101) {
		fprintf(stderr, "bench-fiber-boost-fiber: --n >= 1, --runs 1..101\n");
		return 2;
	}
	double (*run)(long);
	if (!strcmp(fig, "yield"))
		run = yield_run;
	else if (!strcmp(fig, "chan"))
		run = chan_run;
	else {
		fprintf(stderr, "bench-fiber-boost-fiber: no figure named %s\n", fig);
		return 2;
	}
	run(n); // warm-up
	double ns[101];
	for (int r = 0; r < runs; r++)
		ns[r] = run(n) / (2.0 * (double)n);
	std::sort(ns, ns + runs);
	printf("name=%s impl=boost-fiber ns_per_op=%.2f min=%.2f max=%.2f runs=%d n=%ld\n", fig,
	       ns[runs / 2], ns[0], ns[runs - 1], runs, n);
	return 0;
}
