/* bench/fiber/switch.c: the raw context switch, weft's against a `ret`-ending twin.
 *
 * Two contexts on one thread, main and one made by weft__ctx_make, switch back and forth: a
 * round trip is two switches, and a figure is the time of N round trips divided by 2N, in ns
 * per switch. Runs are timed on CLOCK_MONOTONIC after an untimed warm-up of N / 10 round trips;
 * a figure is the median of 7 runs, with their min and max:
 *   name=switch-weft      impl=weft     weft__ctx_switch_inline, the switch weft's scheduler
 *                                       uses: on x86-64 written inline, no call, no return,
 *                                       resumes by an indirect jump (on aarch64 a call of
 *                                       weft__ctx_switch, ending in br)
 *   name=switch-weft-call impl=weft     weft__ctx_switch, the out-of-line twin (x86-64: `ret`)
 *   name=switch-weft-fpu  impl=weft     weft__ctx_switch_fpu_inline (also the FPU control words;
 *                                       the scheduler's with WEFT_SCHED_SAVE_FPU)
 *   name=switch-weft-fpu-call           weft__ctx_switch_fpu, its out-of-line twin
 *   name=switch-ret       impl=ret      a called switch ending in `ret` (written below)
 *   name=switch-jmp       impl=jmp      a called switch ending in an indirect jump (x86-64: pop;
 *                                       jmp, written below; aarch64: br, weft__ctx_switch)
 *   name=switch-*-1site                 the called ones, both contexts switching through one call
 *                                       site (a noinline hop function). `ret` mispredicts in the
 *                                       two-site loop (the return stack guesses the leaving
 *                                       caller); `pop; jmp` is predicted there but leaves the
 *                                       call's entry on the return stack, so the hop's own
 *                                       return then mispredicts: both pay here
 *   name=switch-weft-fpu-mixed          weft__ctx_switch_fpu_inline when the two contexts'
 *                                       MXCSR differ in their status flags only (one of them
 *                                       has done inexact SSE arithmetic, the other not: the
 *                                       usual state in a program that computes in floating
 *                                       point). In the other figures both contexts hold the
 *                                       same MXCSR.
 * Each line: name=... impl=... ns_per_op=MEDIAN min=MIN max=MAX runs=7 n=N.
 * bench/fiber/boost-context.cpp measures Boost.Context's jump_fcontext the same way, and
 * bench/fiber/run.sh prints them side by side, with the ratios and callgrind's instruction counts.
 *
 * What it leaves out: everything a scheduler adds (run queues, the wait protocol, stack canaries),
 * cache misses on cold stacks (the two stacks stay hot in L1), and the cost of a misprediction
 * in a real program, where the switch's target is less regular than in this two-context loop;
 * the loop around each switch (a compare and a branch) is counted in.
 *
 * This bench uses internal/switch.h, not only the public headers like the other benches: the raw
 * switch has no public API. It links libweft.a, where the hidden symbols are in reach.
 *
 * Usage: bench-fiber-switch [--n N] [--runs R] [--warmup W] [--list] [NAME...]
 *   N round trips per run (default 10,000,000), R runs (7), W warm-up round trips (N / 10; run.sh
 *   passes 0 for its callgrind counts, which take the difference of two N).
 */
#define _GNU_SOURCE
#include <fenv.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal/switch.h"

typedef void *(*switch_fn)(void **save_sp, void *new_sp, void *arg);

/* Stand-ins in the figure table for the inline switches, which have no address. */
static void *inline_plain(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch_inline(save_sp, new_sp, arg);
}
static void *inline_fpu(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch_fpu_inline(save_sp, new_sp, arg);
}

/* bench_switch_ret: weft__ctx_switch with `ret` in place of its indirect jump, reading and
 * writing the same frame (so weft__ctx_make's frames and trampoline serve it too). */
void *bench_switch_ret(void **save_sp, void *new_sp, void *arg);
#if defined(__x86_64__)
/* The two twins' common part: save, switch stacks, restore (x86-64, weft's frame layout). */
#define X86_SWITCH(name)                                                                           \
	".text\n"                                                                                  \
	".p2align 4\n"                                                                             \
	".globl " name "\n"                                                                        \
	".type " name ", @function\n" name ":\n"                                                   \
	"	pushq %rbp\n"                                                                            \
	"	pushq %rbx\n"                                                                            \
	"	pushq %r12\n"                                                                            \
	"	pushq %r13\n"                                                                            \
	"	pushq %r14\n"                                                                            \
	"	pushq %r15\n"                                                                            \
	"	subq $8, %rsp\n"                                                                         \
	"	movq %rsp, (%rdi)\n"                                                                     \
	"	movq %rsi, %rsp\n"                                                                       \
	"	addq $8, %rsp\n"                                                                         \
	"	popq %r15\n"                                                                             \
	"	popq %r14\n"                                                                             \
	"	popq %r13\n"                                                                             \
	"	popq %r12\n"                                                                             \
	"	popq %rbx\n"                                                                             \
	"	popq %rbp\n"
__asm__(X86_SWITCH("bench_switch_ret") "	movq %rdx, %rax\n"
                                       "	ret\n"
                                       ".size bench_switch_ret, .-bench_switch_ret\n");
/* bench_switch_jmp: the same ending in pop; jmp (x86-64). */
void *bench_switch_jmp(void **save_sp, void *new_sp, void *arg);
__asm__(X86_SWITCH("bench_switch_jmp") "	popq %rcx\n"
                                       "	movq %rdx, %rax\n"
                                       "	jmpq *%rcx\n"
                                       ".size bench_switch_jmp, .-bench_switch_jmp\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".p2align 4\n"
        ".globl bench_switch_ret\n"
        ".type bench_switch_ret, %function\n"
        "bench_switch_ret:\n"
        "	sub sp, sp, #176\n"
        "	stp x29, x30, [sp, #160]\n"
        "	stp x19, x20, [sp, #80]\n"
        "	stp x21, x22, [sp, #96]\n"
        "	stp x23, x24, [sp, #112]\n"
        "	stp x25, x26, [sp, #128]\n"
        "	stp x27, x28, [sp, #144]\n"
        "	stp d8, d9, [sp, #16]\n"
        "	stp d10, d11, [sp, #32]\n"
        "	stp d12, d13, [sp, #48]\n"
        "	stp d14, d15, [sp, #64]\n"
        "	mov x9, sp\n"
        "	str x9, [x0]\n"
        "	mov sp, x1\n"
        "	ldp d8, d9, [sp, #16]\n"
        "	ldp d10, d11, [sp, #32]\n"
        "	ldp d12, d13, [sp, #48]\n"
        "	ldp d14, d15, [sp, #64]\n"
        "	ldp x19, x20, [sp, #80]\n"
        "	ldp x21, x22, [sp, #96]\n"
        "	ldp x23, x24, [sp, #112]\n"
        "	ldp x25, x26, [sp, #128]\n"
        "	ldp x27, x28, [sp, #144]\n"
        "	ldp x29, x30, [sp, #160]\n"
        "	add sp, sp, #176\n"
        "	mov x0, x2\n"
        "	ret\n"
        ".size bench_switch_ret, .-bench_switch_ret\n");
#define bench_switch_jmp weft__ctx_switch
#else
#error "bench/fiber/switch.c: x86-64 or aarch64"
#endif

#define MAX_RUNS 101
#define STACK_SIZE (64 * 1024)

static void *main_sp, *co_sp;
static switch_fn cur;
static bool one_site;

/* The one call site both contexts switch through in the -1site figures. */
static __attribute__((noinline)) void hop(switch_fn fn, void **save, void *to)
{
	fn(save, to, NULL);
	__asm__ volatile("" ::: "memory"); /* not a tail call: the switch is a real call */
}

static void co_entry(void *arg, void *data)
{
	switch_fn fn = cur;
	if (fn == inline_plain)
		for (;;)
			weft__ctx_switch_inline(&co_sp, main_sp, NULL);
	if (fn == inline_fpu)
		for (;;)
			weft__ctx_switch_fpu_inline(&co_sp, main_sp, NULL);
	if (one_site)
		for (;;)
			hop(fn, &co_sp, main_sp);
	for (;;)
		fn(&co_sp, main_sp, NULL);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static __attribute__((noinline)) void round_trips(switch_fn fn, long n)
{
	if (fn == inline_plain)
		for (long i = 0; i < n; i++)
			weft__ctx_switch_inline(&main_sp, co_sp, NULL);
	else if (fn == inline_fpu)
		for (long i = 0; i < n; i++)
			weft__ctx_switch_fpu_inline(&main_sp, co_sp, NULL);
	else if (one_site)
		for (long i = 0; i < n; i++)
			hop(fn, &main_sp, co_sp);
	else
		for (long i = 0; i < n; i++)
			fn(&main_sp, co_sp, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* An SSE division with an inexact result: sets the precision flag in the MXCSR (x86-64; the FPSR
 * on aarch64, which no switch saves). */
static void inexact_division(void)
{
	volatile double a = 1.0, b = 3.0, c;
	c = a / b;
	(void)c;
}

static void figure(const char *name, const char *impl, switch_fn fn, bool mixed, bool site1, long n,
                   int runs, long warmup)
{
	static char stack[STACK_SIZE] __attribute__((aligned(64)));
	double ns[MAX_RUNS];
	cur = fn;
	one_site = site1;
	/* weft__ctx_make copies the thread's MXCSR into the new context: set the flag first for
	 * equal words, after it for words that differ in that flag */
	feclearexcept(FE_ALL_EXCEPT);
	if (!mixed)
		inexact_division();
	co_sp = weft__ctx_make(stack + sizeof stack, co_entry, NULL);
	/* main's own timing arithmetic would set it anyway */
	inexact_division();
	round_trips(fn, warmup); /* caches, predictors, the stack's pages */
	for (int r = 0; r < runs; r++) {
		int64_t t0 = now_ns();
		round_trips(fn, n);
		ns[r] = (double)(now_ns() - t0) / (2.0 * (double)n);
	}
	/* the context is left parked on its (static) stack: nothing to free */
	qsort(ns, (size_t)runs, sizeof ns[0], cmp_double);
	printf("name=%s impl=%s ns_per_op=%.2f min=%.2f max=%.2f runs=%d n=%ld\n", name, impl,
	       ns[runs / 2], ns[0], ns[runs - 1], runs, n);
	fflush(stdout);
}

static const struct {
	const char *name, *impl;
	switch_fn fn;
	bool mixed, one_site;
} figures[] = {
        {"switch-weft", "weft", inline_plain, false, false},
        {"switch-weft-call", "weft", weft__ctx_switch, false, false},
        {"switch-weft-fpu", "weft", inline_fpu, false, false},
        {"switch-weft-fpu-call", "weft", weft__ctx_switch_fpu, false, false},
        {"switch-ret", "ret", bench_switch_ret, false, false},
        {"switch-jmp", "jmp", bench_switch_jmp, false, false},
        {"switch-weft-fpu-mixed", "weft", inline_fpu, true, false},
        {"switch-ret-1site", "ret", bench_switch_ret, false, true},
        {"switch-jmp-1site", "jmp", bench_switch_jmp, false, true},
};
#define NFIG (sizeof figures / sizeof figures[0])

int main(int argc, char **argv)
{
	long n = 10000000, warmup = -1;
	int runs = 7;
	const char *only[NFIG];
	size_t nonly = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
			n = atol(argv[++i]);
		} else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
			runs = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) {
			warmup = atol(argv[++i]);
		} else if (strcmp(argv[i], "--list") == 0) {
			for (size_t f = 0; f < NFIG; f++)
				printf("%s\n", figures[f].name);
			return 0;
		} else if (argv[i][0] != '-' && nonly < NFIG) {
			size_t f = 0;
			while (f < NFIG && strcmp(argv[i], figures[f].name) != 0)
				f++;
			if (f == NFIG) {
				fprintf(stderr, "bench-fiber-switch: no figure named '%s'\n",
				        argv[i]);
				return 2;
			}
			only[nonly++] = argv[i];
		} else {
			fprintf(stderr, "usage: bench-fiber-switch [--n N] [--runs R] [--warmup W] "
			                "[--list] [NAME...]\n");
			return 2;
		}
	}
	if (warmup < 0)
		warmup = n / 10;
	if (n < 1 || runs < 1 || runs > MAX_RUNS) {
		fprintf(stderr, "bench-fiber-switch: --n >= 1, --runs 1..%d\n", MAX_RUNS);
		return 2;
	}
	for (size_t f = 0; f < NFIG; f++) {
		bool want = nonly == 0;
		for (size_t k = 0; k < nonly; k++)
			want = want || strcmp(only[k], figures[f].name) == 0;
		if (want)
			figure(figures[f].name, figures[f].impl, figures[f].fn, figures[f].mixed,
			       figures[f].one_site, n, runs, warmup);
	}
	return 0;
}
