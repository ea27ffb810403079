/* test-switch.c: the context switch on its own (src/internal/switch.h), without the scheduler:
 * round trips passing values both ways; every callee-saved register kept across a switch, seen
 * from assembly that loads known values, switches and reads them back (rbx, rbp, r12-r15 on
 * x86-64; x19-x29 and d8-d15 on aarch64), and from C with many live values at -O2; the FPU
 * control words (the _fpu variant restores each context's own rounding mode, the plain one leaves
 * the thread's mode alone; a new context starts with its creator's); 16-byte stack alignment in
 * entry, whatever the alignment of the stack top; weft__ctx_make writing only its frame; the top
 * of a suspended frame holding the frame pointer and the resume address (what dumps walk); a ring
 * of contexts switching among themselves (with each variant); deep recursion on a fiber stack with
 * a switch at the bottom; unwinding stopping at the trampoline; an entry that returns trapping
 * there; and the inline switch (weft__ctx_switch_inline) in all of these, resuming frames the
 * out-of-line one saved and leaving a leaf function's red zone intact.
 *
 * Stacks are mmap'd with a guard page below them (an overflow faults instead of corrupting the
 * heap), registered with valgrind, and unpoisoned for ASan before they are unmapped (a context
 * left parked keeps the ASan redzones of its frames). Runs on x86-64 and aarch64 (#ifdef'd
 * probes); scripts/cross-aarch64 runs it under qemu-user. */
#define _GNU_SOURCE
#include <fenv.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <unwind.h>

#include "harness.h"
#include "internal/switch.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND 1
#endif
#endif

void weft__ctx_trampoline(void);

typedef void *(*switch_fn)(void **save_sp, void *new_sp, void *arg);

/* weft__ctx_switch_inline behind a function pointer, for the tests that take one (the probe
 * calls it from assembly; live_across and the round trips below also use it inline). */
static __attribute__((noinline)) void *inline_switch(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch_inline(save_sp, new_sp, arg);
}

static __attribute__((noinline)) void *inline_fpu_switch(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch_fpu_inline(save_sp, new_sp, arg);
}

/* The variants that keep the FPU control words. */
static bool is_fpu(switch_fn fn)
{
	return fn == weft__ctx_switch_fpu || fn == inline_fpu_switch;
}

/* ---- stacks ---------------------------------------------------------------------------------- */

typedef struct tstack {
	char *map; /* the mapping: a guard page, then the stack */
	size_t len;
	char *lo; /* the stack's lowest usable byte */
	char *hi; /* one past its highest: the top */
	unsigned vg_id;
} tstack;

static tstack stack_new(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size = (size + page - 1) / page * page;
	tstack s = {.len = size + page};
	s.map = mmap(NULL, s.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(s.map != MAP_FAILED);
	ASSERT_EQ(mprotect(s.map, page, PROT_NONE), 0);
	s.lo = s.map + page;
	s.hi = s.map + s.len;
#ifdef HAVE_VALGRIND
	s.vg_id = VALGRIND_STACK_REGISTER(s.lo, s.hi);
#endif
	return s;
}

static void stack_free(tstack *s)
{
#ifdef HAVE_VALGRIND
	VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
#if defined(__SANITIZE_ADDRESS__)
	ASAN_UNPOISON_MEMORY_REGION(s->lo, (size_t)(s->hi - s->lo));
#endif
	ASSERT_EQ(munmap(s->map, s->len), 0);
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void *main_sp, *co_sp;

static void counter_entry(void *arg, void *data)
{
	long *n = data;
	long v = (long)arg;
	for (;;) {
		*n += v;
		v = (long)weft__ctx_switch(&co_sp, main_sp, (void *)(*n));
	}
}

TEST(switch_round_trip_passes_values)
{
	size_t sz = 64 * 1024;
	char *stack = malloc(sz);
	ASSERT_TRUE(stack != NULL);
	long n = 0;
	co_sp = weft__ctx_make(stack + sz, counter_entry, &n);
	long total = 0;
	for (long i = 1; i <= 1000; i++) {
		total += i;
		long got = (long)weft__ctx_switch(&main_sp, co_sp, (void *)i);
		ASSERT_EQ(got, total);
	}
	ASSERT_EQ(n, total);
	free(stack);
}

/* The context switches with the inline switch, main with the out-of-line one and then inline:
 * each resumes frames the other saved. */
static void inline_counter_entry(void *arg, void *data)
{
	long *n = data;
	long v = (long)arg;
	for (;;) {
		*n += v;
		v = (long)weft__ctx_switch_inline(&co_sp, main_sp, (void *)(*n));
	}
}

TEST(switch_inline_round_trip_passes_values_and_mixes_with_the_call)
{
	tstack s = stack_new(64 * 1024);
	long n = 0;
	co_sp = weft__ctx_make(s.hi, inline_counter_entry, &n);
	long total = 0;
	for (long i = 1; i <= 2000; i++) {
		total += i;
		long got = i <= 1000 ? (long)weft__ctx_switch(&main_sp, co_sp, (void *)i)
		                     : (long)weft__ctx_switch_inline(&main_sp, co_sp, (void *)i);
		ASSERT_EQ(got, total);
	}
	ASSERT_EQ(n, total);
	stack_free(&s);
}

static void fpu_counter_entry(void *arg, void *data)
{
	long *n = data;
	long v = (long)arg;
	for (;;) {
		*n += v;
		v = (long)weft__ctx_switch_fpu(&co_sp, main_sp, (void *)(*n));
	}
}

TEST(switch_fpu_round_trip_passes_values)
{
	tstack s = stack_new(64 * 1024);
	long n = 0;
	co_sp = weft__ctx_make(s.hi, fpu_counter_entry, &n);
	long total = 0;
	for (long i = 1; i <= 1000; i++) {
		total += i;
		long got = (long)weft__ctx_switch_fpu(&main_sp, co_sp, (void *)i);
		ASSERT_EQ(got, total);
	}
	ASSERT_EQ(n, total);
	stack_free(&s);
}

/* ---- callee-saved registers, from assembly ----------------------------------------------------
 * probe_switch(fn, save_sp, new_sp, arg, base, out): saves the caller's callee-saved registers,
 * loads base + 1, base + 2, ... into every callee-saved register, calls fn(save_sp, new_sp, arg),
 * stores what those registers hold after the call into out[], restores the caller's registers and
 * returns fn's result. Both contexts run it with different bases, so a register the switch fails
 * to restore shows the other context's value. */
#if defined(__x86_64__)
#define PROBE_REGS 6
static const char *const probe_names[PROBE_REGS] = {"rbx", "rbp", "r12", "r13", "r14", "r15"};
__asm__(".text\n"
        ".p2align 4\n"
        ".type probe_switch, @function\n"
        "probe_switch:\n"
        "	pushq %rbp\n"
        "	pushq %rbx\n"
        "	pushq %r12\n"
        "	pushq %r13\n"
        "	pushq %r14\n"
        "	pushq %r15\n"
        "	pushq %r9\n" /* out; the stack is 16-byte aligned again */
        "	leaq 1(%r8), %rbx\n"
        "	leaq 2(%r8), %rbp\n"
        "	leaq 3(%r8), %r12\n"
        "	leaq 4(%r8), %r13\n"
        "	leaq 5(%r8), %r14\n"
        "	leaq 6(%r8), %r15\n"
        "	movq %rdi, %rax\n"
        "	movq %rsi, %rdi\n"
        "	movq %rdx, %rsi\n"
        "	movq %rcx, %rdx\n"
        "	callq *%rax\n"
        "	movq (%rsp), %rcx\n"
        "	movq %rbx, 0(%rcx)\n"
        "	movq %rbp, 8(%rcx)\n"
        "	movq %r12, 16(%rcx)\n"
        "	movq %r13, 24(%rcx)\n"
        "	movq %r14, 32(%rcx)\n"
        "	movq %r15, 40(%rcx)\n"
        "	addq $8, %rsp\n"
        "	popq %r15\n"
        "	popq %r14\n"
        "	popq %r13\n"
        "	popq %r12\n"
        "	popq %rbx\n"
        "	popq %rbp\n"
        "	ret\n"
        ".size probe_switch, .-probe_switch\n");
#elif defined(__aarch64__)
#define PROBE_REGS 19
static const char *const probe_names[PROBE_REGS] = {
        "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
        "x29", "d8",  "d9",  "d10", "d11", "d12", "d13", "d14", "d15",
};
__asm__(".text\n"
        ".p2align 4\n"
        ".type probe_switch, %function\n"
        "probe_switch:\n"
        "	stp x29, x30, [sp, #-176]!\n"
        "	stp x19, x20, [sp, #16]\n"
        "	stp x21, x22, [sp, #32]\n"
        "	stp x23, x24, [sp, #48]\n"
        "	stp x25, x26, [sp, #64]\n"
        "	stp x27, x28, [sp, #80]\n"
        "	stp d8, d9, [sp, #96]\n"
        "	stp d10, d11, [sp, #112]\n"
        "	stp d12, d13, [sp, #128]\n"
        "	stp d14, d15, [sp, #144]\n"
        "	str x5, [sp, #160]\n"
        "	add x19, x4, #1\n"
        "	add x20, x4, #2\n"
        "	add x21, x4, #3\n"
        "	add x22, x4, #4\n"
        "	add x23, x4, #5\n"
        "	add x24, x4, #6\n"
        "	add x25, x4, #7\n"
        "	add x26, x4, #8\n"
        "	add x27, x4, #9\n"
        "	add x28, x4, #10\n"
        "	add x29, x4, #11\n"
        "	add x9, x4, #12\n"
        "	fmov d8, x9\n"
        "	add x9, x4, #13\n"
        "	fmov d9, x9\n"
        "	add x9, x4, #14\n"
        "	fmov d10, x9\n"
        "	add x9, x4, #15\n"
        "	fmov d11, x9\n"
        "	add x9, x4, #16\n"
        "	fmov d12, x9\n"
        "	add x9, x4, #17\n"
        "	fmov d13, x9\n"
        "	add x9, x4, #18\n"
        "	fmov d14, x9\n"
        "	add x9, x4, #19\n"
        "	fmov d15, x9\n"
        "	mov x9, x0\n"
        "	mov x0, x1\n"
        "	mov x1, x2\n"
        "	mov x2, x3\n"
        "	blr x9\n"
        "	ldr x9, [sp, #160]\n"
        "	stp x19, x20, [x9, #0]\n"
        "	stp x21, x22, [x9, #16]\n"
        "	stp x23, x24, [x9, #32]\n"
        "	stp x25, x26, [x9, #48]\n"
        "	stp x27, x28, [x9, #64]\n"
        "	str x29, [x9, #80]\n"
        "	stp d8, d9, [x9, #88]\n"
        "	stp d10, d11, [x9, #104]\n"
        "	stp d12, d13, [x9, #120]\n"
        "	stp d14, d15, [x9, #136]\n"
        "	ldp x19, x20, [sp, #16]\n"
        "	ldp x21, x22, [sp, #32]\n"
        "	ldp x23, x24, [sp, #48]\n"
        "	ldp x25, x26, [sp, #64]\n"
        "	ldp x27, x28, [sp, #80]\n"
        "	ldp d8, d9, [sp, #96]\n"
        "	ldp d10, d11, [sp, #112]\n"
        "	ldp d12, d13, [sp, #128]\n"
        "	ldp d14, d15, [sp, #144]\n"
        "	ldp x29, x30, [sp], #176\n"
        "	ret\n"
        ".size probe_switch, .-probe_switch\n");
#else
#error "test-switch: x86-64 or aarch64"
#endif

void *probe_switch(switch_fn fn, void **save_sp, void *new_sp, void *arg, uint64_t base,
                   uint64_t *out);

#define MAIN_BASE UINT64_C(0x1111000000000000)
#define CO_BASE UINT64_C(0x2222000000000000)

static switch_fn probe_fn;
static uint64_t co_out[PROBE_REGS];
static long co_rounds;

static void probe_entry(void *arg, void *data)
{
	for (;;) {
		arg = probe_switch(probe_fn, &co_sp, main_sp, (void *)((long)arg + 1), CO_BASE,
		                   co_out);
		co_rounds++;
	}
}

static void check_regs(const uint64_t *out, uint64_t base, const char *who, int round)
{
	for (int i = 0; i < PROBE_REGS; i++)
		if (out[i] != base + (uint64_t)i + 1)
			FAIL("%s, round %d: %s is %#" PRIx64 " after the switch, want %#" PRIx64,
			     who, round, probe_names[i], out[i], base + (uint64_t)i + 1);
}

static void probe_rounds(switch_fn fn)
{
	tstack s = stack_new(64 * 1024);
	probe_fn = fn;
	co_rounds = 0;
	co_sp = weft__ctx_make(s.hi, probe_entry, NULL);
	uint64_t main_out[PROBE_REGS];
	for (int r = 0; r < 50; r++) {
		memset(main_out, 0, sizeof main_out);
		long got = (long)probe_switch(fn, &main_sp, co_sp, (void *)(long)(10 * r),
		                              MAIN_BASE, main_out);
		ASSERT_EQ(got, 10 * r + 1);
		check_regs(main_out, MAIN_BASE, "main", r);
		if (r > 0) /* the context's probe returned (and wrote co_out) in this round */
			check_regs(co_out, CO_BASE, "context", r);
		ASSERT_EQ(co_rounds, r);
	}
	stack_free(&s);
}

TEST(switch_keeps_callee_saved_registers)
{
	probe_rounds(weft__ctx_switch);
}

TEST(switch_fpu_keeps_callee_saved_registers)
{
	probe_rounds(weft__ctx_switch_fpu);
}

TEST(switch_inline_keeps_callee_saved_registers)
{
	probe_rounds(inline_switch);
}

TEST(switch_fpu_inline_keeps_callee_saved_registers)
{
	probe_rounds(inline_fpu_switch);
}

/* ---- callee-saved registers, from C: many values live across the switch at -O2 -------------- */

static volatile long live_src[24];

static __attribute__((noinline)) long live_across(switch_fn fn, void **save, void *to, long k)
{
	unsigned long a[24];
	for (int i = 0; i < 24; i++)
		a[i] = (unsigned long)live_src[i] * (unsigned long)(k + i) + (unsigned long)i;
	/* every a[i] is needed after the call: registers or spills, all must survive */
	unsigned long sum;
	if (fn == inline_switch)
		sum = (unsigned long)weft__ctx_switch_inline(save, to, (void *)k);
	else if (fn == inline_fpu_switch)
		sum = (unsigned long)weft__ctx_switch_fpu_inline(save, to, (void *)k);
	else
		sum = (unsigned long)fn(save, to, (void *)k);
	for (int i = 0; i < 24; i++)
		sum = sum * 31 + a[i] * (unsigned long)(i + 1);
	return (long)sum;
}

static __attribute__((noinline)) long live_expected(long k, long back)
{
	unsigned long sum = (unsigned long)back;
	for (int i = 0; i < 24; i++)
		sum = sum * 31 +
		      ((unsigned long)live_src[i] * (unsigned long)(k + i) + (unsigned long)i) *
		              (unsigned long)(i + 1);
	return (long)sum;
}

static long live_co_results[64];

static void live_entry(void *arg, void *data)
{
	switch_fn fn = (switch_fn)data;
	long k = (long)arg, n = 0;
	for (;;) {
		/* the context's own live values, from a different k, clobber whatever it can */
		long r = live_across(fn, &co_sp, main_sp, -k);
		live_co_results[n++ & 63] = r;
		k = (long)fn(&co_sp, main_sp, (void *)r);
	}
}

static void live_rounds(switch_fn fn)
{
	tstack s = stack_new(64 * 1024);
	for (int i = 0; i < 24; i++)
		live_src[i] = 1000003L * (i + 7);
	co_sp = weft__ctx_make(s.hi, live_entry, (void *)fn);
	for (long k = 1; k <= 20; k++) {
		/* main -> context (which enters live_across with -k and switches back) */
		long got = live_across(fn, &main_sp, co_sp, k);
		ASSERT_EQ(got, live_expected(k, -k));
		/* main -> context: its live_across returns; it reports the result */
		long r = (long)fn(&main_sp, co_sp, (void *)k);
		ASSERT_EQ(r, live_expected(-k, k));
	}
	stack_free(&s);
}

TEST(switch_keeps_live_values_in_c)
{
	live_rounds(weft__ctx_switch);
}

TEST(switch_fpu_keeps_live_values_in_c)
{
	live_rounds(weft__ctx_switch_fpu);
}

/* the inline switch written into live_across: its clobber list is what keeps a[] intact */
TEST(switch_inline_keeps_live_values_in_c)
{
	live_rounds(inline_switch);
}

TEST(switch_fpu_inline_keeps_live_values_in_c)
{
	live_rounds(inline_fpu_switch);
}

/* ---- the inline switch and the red zone ----------------------------------------------------
 * red_zone_leaf calls nothing (the inline switch is no call), so the compiler may keep its locals
 * below the stack pointer, in the red zone; the switch must push its frame below them. */

static __attribute__((noinline)) long red_zone_leaf(void **save, void *to, long k)
{
	volatile long v[12];
	for (int i = 0; i < 12; i++)
		v[i] = k * 100 + i;
	weft__ctx_switch_inline(save, to, NULL);
	long sum = 0;
	for (int i = 0; i < 12; i++)
		sum += v[i] * (i + 1);
	return sum;
}

static long red_zone_want(long k)
{
	long sum = 0;
	for (int i = 0; i < 12; i++)
		sum += (k * 100 + i) * (i + 1);
	return sum;
}

static long red_zone_bad;

static void red_zone_entry(void *arg, void *data)
{
	for (long k = 1000;; k++)
		if (red_zone_leaf(&co_sp, main_sp, k) != red_zone_want(k))
			red_zone_bad++;
}

TEST(switch_inline_keeps_the_red_zone)
{
	tstack s = stack_new(64 * 1024);
	red_zone_bad = 0;
	co_sp = weft__ctx_make(s.hi, red_zone_entry, NULL);
	for (long k = 1; k <= 100; k++)
		ASSERT_EQ(red_zone_leaf(&main_sp, co_sp, k), red_zone_want(k));
	ASSERT_EQ(red_zone_bad, 0);
	stack_free(&s);
}

/* ---- FPU control words ----------------------------------------------------------------------
 * A rounding mode is seen three ways: fegetround (the x87 control word on x86-64, the FPCR on
 * aarch64), the second word (the MXCSR's rounding bits on x86-64; the FPCR again on aarch64), and
 * arithmetic (1/3, computed with SSE on x86-64). valgrind keeps the words but computes in
 * round-to-nearest whatever they say, so the arithmetic check runs only where the machine
 * honours the mode (q_up != q_down). */

static __attribute__((noinline)) double third(void)
{
	volatile double a = 1.0, b = 3.0;
	return a / b;
}

static int second_word_mode(void)
{
#if defined(__x86_64__)
	uint32_t mxcsr;
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	return (int)((mxcsr >> 3) & 0xc00); /* RC, bits 13-14, as FE_* (x87 RC, bits 10-11) */
#else
	return fegetround();
#endif
}

typedef struct fp_mode {
	int word1, word2;
	double q;
} fp_mode;

static fp_mode fp_mode_now(void)
{
	return (fp_mode){fegetround(), second_word_mode(), third()};
}

static double q_near, q_up, q_down;
static bool arith_honours_mode;

static void rounding_references(void)
{
	ASSERT_EQ(fesetround(FE_UPWARD), 0);
	q_up = third();
	ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
	q_down = third();
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	q_near = third();
	arith_honours_mode = q_up != q_down;
}

#define ASSERT_MODE(m, want)                                                                       \
	do {                                                                                       \
		fp_mode m_ = (m);                                                                  \
		int w_ = (want);                                                                   \
		ASSERT_EQ(m_.word1, w_);                                                           \
		ASSERT_EQ(m_.word2, w_);                                                           \
		if (arith_honours_mode)                                                            \
			ASSERT_TRUE(m_.q == (w_ == FE_UPWARD      ? q_up                           \
			                     : w_ == FE_TONEAREST ? q_near                         \
			                                          : q_down));                      \
	} while (0)

static fp_mode fpu_seen[2];

static void fpu_entry(void *arg, void *data)
{
	switch_fn fn = (switch_fn)data;
	fpu_seen[0] = fp_mode_now();
	fesetround(FE_UPWARD);
	fn(&co_sp, main_sp, NULL);
	fpu_seen[1] = fp_mode_now();
	for (;;)
		fn(&co_sp, main_sp, NULL);
}

static void fpu_restores(switch_fn fn)
{
	rounding_references();
	tstack s = stack_new(64 * 1024);
	/* a new context starts with the control words of the thread that made it */
	ASSERT_EQ(fesetround(FE_TOWARDZERO), 0);
	co_sp = weft__ctx_make(s.hi, fpu_entry, (void *)fn);
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	fn(&main_sp, co_sp, NULL);
	ASSERT_MODE(fpu_seen[0], FE_TOWARDZERO);
	/* the context switched to FE_UPWARD; main gets its own FE_TONEAREST back */
	ASSERT_MODE(fp_mode_now(), FE_TONEAREST);
	ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
	fn(&main_sp, co_sp, NULL);
	ASSERT_MODE(fpu_seen[1], FE_UPWARD);
	ASSERT_MODE(fp_mode_now(), FE_DOWNWARD);
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	stack_free(&s);
}

TEST(switch_fpu_restores_each_contexts_rounding_mode)
{
	fpu_restores(weft__ctx_switch_fpu);
}

TEST(switch_fpu_inline_restores_each_contexts_rounding_mode)
{
	fpu_restores(inline_fpu_switch);
}

TEST(switch_plain_leaves_the_rounding_mode_alone)
{
	rounding_references();
	tstack s = stack_new(64 * 1024);
	co_sp = weft__ctx_make(s.hi, fpu_entry, (void *)weft__ctx_switch);
	/* the frame's FPU slot holds FE_TONEAREST, but the plain switch does not load it */
	ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
	weft__ctx_switch(&main_sp, co_sp, NULL);
	ASSERT_MODE(fpu_seen[0], FE_DOWNWARD);
	/* the context's FE_UPWARD stays in force after switching back */
	ASSERT_MODE(fp_mode_now(), FE_UPWARD);
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	weft__ctx_switch(&main_sp, co_sp, NULL);
	ASSERT_MODE(fpu_seen[1], FE_TONEAREST);
	stack_free(&s);
}

/* ---- alignment and the frame ----------------------------------------------------------------- */

static uintptr_t align_entry_fa, align_probe_fa;
static char align_text[64];
static double align_vec_sum;

/* Touches the stack the way the ABI lets compiled code assume 16-byte alignment: a 16-byte vector
 * local (movaps on x86-64: misaligned, it faults), and printf of a long double (glibc's x86-64
 * printf uses aligned SSE stores). */
static __attribute__((noinline)) void align_probe(void)
{
	typedef double v2df __attribute__((vector_size(16)));
	volatile v2df v = {1.5, 2.5};
	v2df w = v + v;
	align_vec_sum = w[0] + w[1];
	volatile long double x = 1.0L / 3;
	snprintf(align_text, sizeof align_text, "%.4Lf %.4f", x, (double)x);
	align_probe_fa = (uintptr_t)__builtin_frame_address(0);
}

static void align_entry(void *arg, void *data)
{
	align_entry_fa = (uintptr_t)__builtin_frame_address(0);
	align_probe();
	for (;;)
		weft__ctx_switch(&co_sp, main_sp, NULL);
}

TEST(entry_runs_on_a_16_byte_aligned_stack)
{
	tstack s = stack_new(64 * 1024);
	for (int skew = 0; skew < 16; skew++) {
		char *top = s.hi - 64 - skew;
		align_entry_fa = align_probe_fa = 1;
		align_text[0] = 0;
		co_sp = weft__ctx_make(top, align_entry, NULL);
		weft__ctx_switch(&main_sp, co_sp, NULL);
		ASSERT_EQ(align_entry_fa % 16, 0);
		ASSERT_EQ(align_probe_fa % 16, 0);
		/* both frames are on the context's stack, below the top it was given */
		ASSERT_TRUE(align_entry_fa > (uintptr_t)s.lo && align_entry_fa < (uintptr_t)top);
		ASSERT_TRUE(align_probe_fa < align_entry_fa);
		ASSERT_STR_EQ(align_text, "0.3333 0.3333");
		ASSERT_TRUE(align_vec_sum == 8.0);
	}
	stack_free(&s);
}

TEST(ctx_make_writes_only_its_frame)
{
	size_t len = 4096;
	unsigned char *buf = malloc(len);
	ASSERT_NOT_NULL(buf);
	for (int skew = 0; skew < 16; skew++) {
		memset(buf, 0xa5, len);
		unsigned char *top = buf + 3000 + skew;
		void *sp = weft__ctx_make(top, counter_entry, NULL);
		ASSERT_TRUE((unsigned char *)sp >= top - WEFT__CTX_FRAME_MAX &&
		            (unsigned char *)sp < top);
#if defined(__aarch64__)
		ASSERT_EQ((uintptr_t)sp % 16, 0); /* sp itself must always be 16-byte aligned */
#else
		ASSERT_EQ((uintptr_t)sp % 8, 0); /* x86-64: 8 mod 16, the trampoline aligns */
#endif
		for (unsigned char *p = buf; p < top - WEFT__CTX_FRAME_MAX; p++)
			if (*p != 0xa5)
				FAIL("byte at top - %td written", top - p);
		for (unsigned char *p = top; p < buf + len; p++)
			if (*p != 0xa5)
				FAIL("byte at top + %td written", p - top);
	}
	free(buf);
}

/* ---- the suspended frame's top: (frame pointer, resume address) -----------------------------
 * What a dump of parked fibers relies on (src/fiber/dump.c walks the frame-pointer chain from
 * there): the two highest words of the frame a switch leaves are the switcher's frame pointer and
 * the address it resumes at. */

#if defined(__x86_64__)
#define SUSPENDED_FRAME 64
#else
#define SUSPENDED_FRAME 176
#endif

static uintptr_t parked_fa;

static __attribute__((noinline)) void park_here(void)
{
	parked_fa = (uintptr_t)__builtin_frame_address(0);
	weft__ctx_switch(&co_sp, main_sp, NULL);
	__asm__ volatile("" ::: "memory"); /* not a tail call */
}

static void park_entry(void *arg, void *data)
{
	for (;;)
		park_here();
}

TEST(suspended_frame_ends_with_frame_pointer_and_resume_address)
{
	tstack s = stack_new(64 * 1024);
	co_sp = weft__ctx_make(s.hi, park_entry, NULL);
	for (int round = 0; round < 3; round++) {
		weft__ctx_switch(&main_sp, co_sp, NULL);
		const uintptr_t *frame = co_sp;
		ASSERT_TRUE((uintptr_t)co_sp > (uintptr_t)s.lo &&
		            (uintptr_t)co_sp + SUSPENDED_FRAME <= (uintptr_t)s.hi);
		uintptr_t fp = frame[SUSPENDED_FRAME / 8 - 2], pc = frame[SUSPENDED_FRAME / 8 - 1];
		ASSERT_UEQ(fp, parked_fa);
		/* the resume address is in park_here, just after its call */
		uintptr_t fn = (uintptr_t)park_here;
		if (!(pc > fn && pc < fn + 256))
			FAIL("resume address %#" PRIxPTR " is not in park_here (%#" PRIxPTR ")", pc,
			     fn);
		/* and the frame record at fp leads on to park_entry, as in any frame-pointer walk
		 */
		uintptr_t ret = ((const uintptr_t *)fp)[1], entry = (uintptr_t)park_entry;
		if (!(ret > entry && ret < entry + 256))
			FAIL("the caller's return address %#" PRIxPTR " is not in park_entry "
			     "(%#" PRIxPTR ")",
			     ret, entry);
	}
	stack_free(&s);
}

/* ---- a ring of contexts ----------------------------------------------------------------------
 * RING contexts, each switching straight to the next one; the last switches back to main. One
 * variant per ring: a frame saved by the plain variant has an undefined FPU slot, so a context
 * saved with weft__ctx_switch must not be resumed with weft__ctx_switch_fpu (only frames from
 * weft__ctx_make and from the _fpu variant are readable by both). With the _fpu variant every
 * context also keeps a rounding mode of its own. */

#define RING 100
#define RING_ROUNDS 200

static const int ring_modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
static switch_fn ring_fn;
static void *ring_sp[RING + 1]; /* [RING] is main's */
static long ring_sum[RING], ring_last[RING], ring_bad_mode[RING];

static void ring_entry(void *arg, void *data)
{
	long i = (long)(intptr_t)data;
	long v = (long)arg;
	bool fpu = is_fpu(ring_fn);
	if (fpu)
		fesetround(ring_modes[i % 4]);
	for (;;) {
		ring_sum[i] += v;
		ring_last[i] = v;
		if (fpu &&
		    (fegetround() != ring_modes[i % 4] || second_word_mode() != ring_modes[i % 4]))
			ring_bad_mode[i]++;
		v = (long)ring_fn(&ring_sp[i], ring_sp[i + 1], (void *)(v + 1));
	}
}

static void ring_rounds(switch_fn fn)
{
	tstack *st = calloc(RING, sizeof *st);
	ASSERT_NOT_NULL(st);
	ring_fn = fn;
	for (long i = 0; i < RING; i++) {
		st[i] = stack_new(16 * 1024);
		ring_sp[i] = weft__ctx_make(st[i].hi, ring_entry, (void *)(intptr_t)i);
	}
	long want[RING] = {0};
	for (long r = 0; r < RING_ROUNDS; r++) {
		long start = r * 1000;
		if (is_fpu(fn))
			ASSERT_EQ(fesetround(ring_modes[r % 4]), 0);
		long end = (long)fn(&ring_sp[RING], ring_sp[0], (void *)start);
		ASSERT_EQ(end, start + RING);
		if (is_fpu(fn)) {
			ASSERT_EQ(fegetround(), ring_modes[r % 4]);
			ASSERT_EQ(second_word_mode(), ring_modes[r % 4]);
		}
		for (long i = 0; i < RING; i++) {
			want[i] += start + i;
			ASSERT_EQ(ring_last[i], start + i);
		}
	}
	for (long i = 0; i < RING; i++) {
		ASSERT_EQ(ring_sum[i], want[i]);
		ASSERT_EQ(ring_bad_mode[i], 0);
		stack_free(&st[i]);
	}
	free(st);
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
}

TEST(switch_ring_of_contexts)
{
	ring_rounds(weft__ctx_switch);
}

TEST(switch_inline_ring_of_contexts)
{
	ring_rounds(inline_switch);
}

TEST(switch_fpu_ring_of_contexts_each_with_its_rounding_mode)
{
	ring_rounds(weft__ctx_switch_fpu);
}

TEST(switch_fpu_inline_ring_of_contexts_each_with_its_rounding_mode)
{
	ring_rounds(inline_fpu_switch);
}

/* ---- deep recursion on a context's stack ---------------------------------------------------- */

static bool deep_switch;
static uintptr_t deep_lowest;

static __attribute__((noinline)) unsigned long deep(long n, unsigned long acc)
{
	volatile char pad[48];
	pad[0] = (char)n;
	pad[47] = (char)(n >> 3);
	if (n == 0) {
		deep_lowest = (uintptr_t)__builtin_frame_address(0);
		if (deep_switch) /* park at the bottom; main recurses on its own stack meanwhile */
			weft__ctx_switch(&co_sp, main_sp, (void *)1);
		return acc;
	}
	/* not a tail call: pad is read after it */
	unsigned long r = deep(n - 1, acc * 3 + (unsigned long)n);
	return r + (unsigned long)pad[0] - (unsigned long)pad[47];
}

#define DEEP_N 20000

static unsigned long deep_result;

static void deep_entry(void *arg, void *data)
{
	deep_result = deep(DEEP_N, 1);
	for (;;)
		weft__ctx_switch(&co_sp, main_sp, (void *)2);
}

TEST(deep_recursion_on_a_context_stack)
{
	size_t sz = 16u << 20; /* touched only as deep as the recursion goes */
	tstack s = stack_new(sz);
	deep_switch = true;
	co_sp = weft__ctx_make(s.hi, deep_entry, NULL);
	ASSERT_EQ((long)weft__ctx_switch(&main_sp, co_sp, NULL), 1);
	uintptr_t low = deep_lowest;
	ASSERT_TRUE(low > (uintptr_t)s.lo && low < (uintptr_t)s.hi);
	ASSERT_GT((uintptr_t)s.hi - low, (uintptr_t)DEEP_N * 32);
	/* the same recursion on main's stack, while the context is parked at its bottom */
	deep_switch = false;
	unsigned long want = deep(DEEP_N, 1);
	deep_switch = true;
	ASSERT_EQ((long)weft__ctx_switch(&main_sp, co_sp, NULL), 2);
	ASSERT_UEQ(deep_result, want);
	stack_free(&s);
}

/* ---- unwinding stops at the trampoline --------------------------------------------------------
 * With libgcc's unwinder directly (glibc's backtrace() stops by itself on a frame that repeats,
 * which would hide a trampoline whose CFI makes the unwinder loop on it). */

#define BT_MAX 64

static uintptr_t bt_pcs[BT_MAX];
static int bt_n;
static _Unwind_Reason_Code bt_end;

static _Unwind_Reason_Code bt_step(struct _Unwind_Context *ctx, void *arg)
{
	if (bt_n == BT_MAX)
		return _URC_NORMAL_STOP; /* a loop, or garbage above the frame */
	bt_pcs[bt_n++] = (uintptr_t)_Unwind_GetIP(ctx);
	return _URC_NO_REASON;
}

static __attribute__((noinline)) void bt_collect(void)
{
	bt_n = 0;
	bt_end = _Unwind_Backtrace(bt_step, NULL);
	__asm__ volatile("" ::: "memory"); /* not a tail call */
}

static void bt_entry(void *arg, void *data)
{
	bt_collect();
	for (;;)
		weft__ctx_switch(&co_sp, main_sp, NULL);
}

TEST(unwinding_stops_at_the_trampoline)
{
	tstack s = stack_new(64 * 1024);
	co_sp = weft__ctx_make(s.hi, bt_entry, NULL);
	weft__ctx_switch(&main_sp, co_sp, NULL);
	/* bt_collect, bt_entry, the trampoline; there the return address is undefined, which libgcc
	 * reports as one more frame at pc 0 and then the end of the stack, instead of reading the
	 * zeroes or garbage above the frame, or looping on the trampoline */
	int n = bt_n;
	if (n > 0 && bt_pcs[n - 1] == 0)
		n--;
	uintptr_t tramp = (uintptr_t)weft__ctx_trampoline;
	bool in_tramp = n > 0 && bt_pcs[n - 1] > tramp && bt_pcs[n - 1] <= tramp + 32;
	if (bt_end != _URC_END_OF_STACK || n < 3 || n > 4 || !in_tramp) {
		for (int i = 0; i < bt_n; i++)
			fprintf(stderr, "# frame %d: pc %#" PRIxPTR "\n", i, bt_pcs[i]);
		FAIL("unwinding from a context: %d frames, reason %d (want %d), the last one %s "
		     "the trampoline at %#" PRIxPTR,
		     bt_n, (int)bt_end, (int)_URC_END_OF_STACK, in_tramp ? "in" : "not in", tramp);
	}
	stack_free(&s);
}

/* ---- an entry that returns traps ------------------------------------------------------------ */

static void returning_entry(void *arg, void *data)
{
	*(int *)data = 1;
}

TEST(an_entry_that_returns_traps_in_the_trampoline)
{
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* the child: the trampoline's trap instruction (ud2 / brk) must stop it */
		setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0});
		static char stack[16384] __attribute__((aligned(16)));
		static int ran;
		co_sp = weft__ctx_make(stack + sizeof stack, returning_entry, &ran);
		weft__ctx_switch(&main_sp, co_sp, NULL);
		_exit(ran ? 3 : 4); /* not reached */
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(st));
#if defined(__x86_64__)
	ASSERT_EQ(WTERMSIG(st), SIGILL);
#else
	ASSERT_EQ(WTERMSIG(st), SIGTRAP);
#endif
}
