// bench/fiber/boost-context.cpp: the raw-switch peer, Boost.Context's jump_fcontext (the
// fcontext layer under boost::context::continuation and Boost.Fiber), measured exactly as
// bench/fiber/switch.c measures weft's: two contexts on one thread switching back and forth, the
// time of N round trips over 2N, in ns per switch; the median of 7 runs after a warm-up.
//   name=switch-boost-context        both contexts hold the same MXCSR
//   name=switch-boost-context-mixed  their MXCSR differ in the status flags only (one context has
//                                    done inexact SSE arithmetic), as in switch.c's
//                                    switch-weft-fpu-mixed
// Each line: name=... impl=boost-context ns_per_op=MEDIAN min= max= runs=7 n=N.
// Debian's build of Boost 1.74 saves and restores the x87 control word and the MXCSR on every
// jump (its x86-64 assembly does, unless built with BOOST_USE_TSX), and make_fcontext copies the
// thread's current ones into a new context: it is the peer of switch-weft-fpu. A jump also
// returns a transfer_t (the context left and the pointer passed) and ends in pop; jmp.
// Left out: what switch.c leaves out. Built by bench/fiber/run.sh:
//   g++ -O2 boost-context.cpp -lboost_context
// Usage: bench-fiber-boost-context [--n N] [--runs R] [--warmup W] [NAME...]
#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <cfenv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace fc = boost::context::detail;

static void co_entry(fc::transfer_t t)
{
	for (;;)
		t = fc::jump_fcontext(t.fctx, nullptr);
}

static long long now_ns()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static fc::fcontext_t co;

static __attribute__((noinline)) void round_trips(long n)
{
	for (long i = 0; i < n; i++)
		co = fc::jump_fcontext(co, nullptr).fctx;
}

static void inexact_division()
{
	volatile double a = 1.0, b = 3.0, c;
	c = a / b;
	(void)c;
}

static void figure(const char *name, bool mixed, long n, int runs, long warmup)
{
	static char stack[64 * 1024] __attribute__((aligned(64)));
	feclearexcept(FE_ALL_EXCEPT);
	if (!mixed)
		inexact_division();
	co = fc::make_fcontext(stack + sizeof stack, sizeof stack, co_entry);
	inexact_division();
	round_trips(warmup);
	double ns[101];
	for (int r = 0; r < runs; r++) {
		long long t0 = now_ns();
		round_trips(n);
		ns[r] = (double)(now_ns() - t0) / (2.0 * (double)n);
	}
	std::sort(ns, ns + runs);
	printf("name=%s impl=boost-context ns_per_op=%.2f min=%.2f max=%.2f runs=%d n=%ld\n", name,
	       ns[runs / 2], ns[0], ns[runs - 1], runs, n);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	long n = 10000000, warmup = -1;
	int runs = 7;
	bool plain = false, mixed = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--n") && i + 1 < argc) {
			n = atol(argv[++i]);
		} else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
			runs = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) {
			warmup = atol(argv[++i]);
		} else if (!strcmp(argv[i], "--list")) {
			puts("switch-boost-context\nswitch-boost-context-mixed");
			return 0;
		} else if (!strcmp(argv[i], "switch-boost-context")) {
			plain = true;
		} else if (!strcmp(argv[i], "switch-boost-context-mixed")) {
			mixed = true;
		} else {
			fprintf(stderr, "usage: bench-fiber-boost-context [--n N] [--runs R] "
			                "[--warmup W] [--list] [NAME...]\n");
			return 2;
		}
	}
	if (!plain && !mixed)
		plain = mixed = true;
	if (warmup < 0)
		warmup = n / 10;
	if (n < 1 || runs < 1 || runs > 101) {
		fprintf(stderr, "bench-fiber-boost-context: --n >= 1, --runs 1..101\n");
		return 2;
	}
	if (plain)
		figure("switch-boost-context", false, n, runs, warmup);
	if (mixed)
		figure("switch-boost-context-mixed", true, n, runs, warmup);
	return 0;
}
