/* The context switch: one assembly file per architecture (src/fiber/switch-x86_64.S,
 * switch-aarch64.S). Never installed.
 *
 * A context is a stack pointer. Switching pushes the callee-saved registers (and, in the _fpu
 * variant, the FPU control words) on the current stack, stores the stack pointer in *save_sp,
 * loads new_sp, pops the same registers from there and resumes where that context last switched
 * away, as if its own call to weft__ctx_switch returned `arg`. Everything the ABI lets a call
 * clobber is left to the compiler, so a switch costs a handful of instructions.
 *
 * The frame a switch leaves on a suspended stack, lowest address first:
 *   x86-64, 64 bytes:   fpu slot (MXCSR, x87 CW) | r15 | r14 | r13 | r12 | rbx | rbp | resume
 *   aarch64, 176 bytes: fpu slot (FPCR) | unused | d8-d15 | x19-x28 | x29 | x30 (resume)
 * (aarch64: a multiple of 16, as sp must always be 16-byte aligned there.) On both, the frame's
 * top two words are (frame pointer, resume address): a dump walks a parked context's
 * frame-pointer chain from pc = sp[WEFT__CTX_PC_SLOT], fp = sp[WEFT__CTX_FP_SLOT], and the frame
 * records above it are the ABI's ([fp] = the caller's fp, [fp + 8] = its return address).
 * Only a frame made by weft__ctx_make or saved by the _fpu variant has a meaningful FPU slot:
 * the plain variant does not write it, so a context saved by weft__ctx_switch must be resumed by
 * weft__ctx_switch (the _fpu variant would load garbage control words: SIGFPE). A scheduler
 * picks one variant for all its switches. A frame saved by the _fpu variant may be resumed by
 * either.
 * How a switch ends decides what the branch predictors make of it. A called switch that ends in
 * `ret` mispredicts whenever the context it resumes called it from another place than the one it
 * leaves (the return-stack predictor guesses the leaving caller); ending it in `pop; jmp` instead
 * is predicted, but leaves the call's entry on the return stack, so every return the resumed
 * context makes afterwards is guessed one frame off (measured on x86-64: a scheduler yield 47 ns
 * against 11 ns with `ret`). weft__ctx_switch_inline, the switch the scheduler uses, avoids both
 * on x86-64: it is written inline in its caller, makes no call and no return, resumes by an
 * indirect jump to the resume label of the switch that saved the frame, and so leaves the return
 * stack as it found it (2 ns in a two-context ping-pong where the called `ret` switch costs 10).
 * The out-of-line variants keep `ret` on x86-64 and `br x30` on aarch64 (see each file's head
 * comment); on aarch64 weft__ctx_switch_inline is weft__ctx_switch. aarch64 built with
 * -mbranch-protection=bti|standard resumes with `ret`, since a BR must land on a BTI instruction
 * (Debian 12's gcc does not enable branch protection by default).
 *
 * weft__ctx_make lays such a frame at the top of a fresh stack so that the first switch to it
 * calls entry(arg, data), arg being the switch's `arg`. entry must never return: it ends by
 * switching away for good.
 */
#ifndef WEFT_INTERNAL_SWITCH_H
#define WEFT_INTERNAL_SWITCH_H

#include <stddef.h>

typedef void (*weft__ctx_entry)(void *arg, void *data);

void *weft__ctx_switch(void **save_sp, void *new_sp, void *arg);
void *weft__ctx_switch_fpu(void **save_sp, void *new_sp, void *arg);

/* Returns the context (stack pointer) to switch to; stack_top is the stack's highest address
 * (exclusive). Writes at most WEFT__CTX_FRAME_MAX bytes below it. The FPU slot gets the calling
 * thread's current control words. */
void *weft__ctx_make(void *stack_top, weft__ctx_entry entry, void *data);

#define WEFT__CTX_FRAME_MAX 256

/* weft__ctx_switch_inline(save_sp, new_sp, arg): weft__ctx_switch written into its caller (see
 * the head comment for why). It leaves and reads the same frame as weft__ctx_switch, so either
 * may resume a frame the other saved; the frame's resume word is the address of the label after
 * the jump, and the frame sits 128 bytes lower than a call's would, below the caller's red zone
 * (the x86-64 ABI lets a function keep data there without moving the stack pointer). Everything
 * the ABI lets a call clobber is declared clobbered (rcx, r8-r11, the flags, xmm0-15, the x87
 * stack, and memory); the callee-saved registers are pushed and popped by the asm itself. A
 * build that lets the compiler use AVX-512's zmm16-31 and k0-k7 clobbers them as well. With
 * control-flow enforcement (-fcf-protection=branch) the label is a landing pad (endbr64). */
#if defined(__x86_64__)
#if defined(__CET__) && (__CET__ & 1)
#define WEFT__CTX_LANDING "endbr64\n\t"
#else
#define WEFT__CTX_LANDING ""
#endif
#if defined(__AVX512F__)
#define WEFT__CTX_CLOBBER_AVX512                                                                   \
	, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",         \
	        "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k0", "k1", "k2",   \
	        "k3", "k4", "k5", "k6", "k7"
#else
#define WEFT__CTX_CLOBBER_AVX512
#endif
/* The two inline switches' common parts: below the red zone, the frame (resume label 1 on top,
 * then rbp, rbx, r12-r15 and the FPU slot); and from the new frame's registers to the jump. */
#define WEFT__CTX_PUSH                                                                             \
	"leaq\t-128(%%rsp), %%rsp\n\t"                                                             \
	"leaq\t1f(%%rip), %%rax\n\t"                                                               \
	"pushq\t%%rax\n\t"                                                                         \
	"pushq\t%%rbp\n\t"                                                                         \
	"pushq\t%%rbx\n\t"                                                                         \
	"pushq\t%%r12\n\t"                                                                         \
	"pushq\t%%r13\n\t"                                                                         \
	"pushq\t%%r14\n\t"                                                                         \
	"pushq\t%%r15\n\t"                                                                         \
	"subq\t$8, %%rsp\n\t"
#define WEFT__CTX_POP                                                                              \
	"addq\t$8, %%rsp\n\t"                                                                      \
	"popq\t%%r15\n\t"                                                                          \
	"popq\t%%r14\n\t"                                                                          \
	"popq\t%%r13\n\t"                                                                          \
	"popq\t%%r12\n\t"                                                                          \
	"popq\t%%rbx\n\t"                                                                          \
	"popq\t%%rbp\n\t"                                                                          \
	"movq\t%%rdx, %%rax\n\t"                                                                   \
	"popq\t%%rcx\n\t"                                                                          \
	"jmpq\t*%%rcx\n"                                                                           \
	"1:\t" WEFT__CTX_LANDING "leaq\t128(%%rsp), %%rsp"
#define WEFT__CTX_CLOBBERS                                                                         \
	"rcx", "r8", "r9", "r10", "r11", "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",   \
	        "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",        \
	        "xmm14", "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)",      \
	        "st(7)" WEFT__CTX_CLOBBER_AVX512

static inline __attribute__((always_inline)) void *weft__ctx_switch_inline(void **save_sp,
                                                                           void *new_sp, void *arg)
{
	register void **rdi __asm__("rdi") = save_sp;
	register void *rsi __asm__("rsi") = new_sp;
	register void *rdx __asm__("rdx") = arg;
	void *ret;
	__asm__ volatile(WEFT__CTX_PUSH "movq\t%%rsp, (%%rdi)\n\t"
	                                "movq\t%%rsi, %%rsp\n\t" WEFT__CTX_POP
	                 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx)
	                 :
	                 : WEFT__CTX_CLOBBERS);
	return ret;
}

/* weft__ctx_switch_fpu written inline: the same, and the FPU control words as
 * weft__ctx_switch_fpu keeps them (src/fiber/switch-x86_64.S: saved always, loaded only when
 * the control bits differ, the status flags in force kept). */
static inline __attribute__((always_inline)) void *
weft__ctx_switch_fpu_inline(void **save_sp, void *new_sp, void *arg)
{
	register void **rdi __asm__("rdi") = save_sp;
	register void *rsi __asm__("rsi") = new_sp;
	register void *rdx __asm__("rdx") = arg;
	void *ret;
	__asm__ volatile(WEFT__CTX_PUSH "stmxcsr\t(%%rsp)\n\t"
	                                "fnstcw\t4(%%rsp)\n\t"
	                                "movq\t%%rsp, (%%rdi)\n\t"
	                                "movl\t(%%rsp), %%r8d\n\t"
	                                "movzwl\t4(%%rsp), %%r9d\n\t"
	                                "movq\t%%rsi, %%rsp\n\t"
	                                "movl\t(%%rsp), %%ecx\n\t"
	                                "xorl\t%%r8d, %%ecx\n\t"
	                                "testl\t$0xffc0, %%ecx\n\t"
	                                "jz\t3f\n\t"
	                                "movl\t(%%rsp), %%ecx\n\t"
	                                "andl\t$0xffc0, %%ecx\n\t"
	                                "andl\t$0x3f, %%r8d\n\t"
	                                "orl\t%%r8d, %%ecx\n\t"
	                                "movl\t%%ecx, (%%rsp)\n\t"
	                                "ldmxcsr\t(%%rsp)\n"
	                                "3:\tcmpw\t4(%%rsp), %%r9w\n\t"
	                                "je\t4f\n\t"
	                                "fldcw\t4(%%rsp)\n"
	                                "4:\t" WEFT__CTX_POP
	                 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx)
	                 :
	                 : WEFT__CTX_CLOBBERS);
	return ret;
}
#else
static inline void *weft__ctx_switch_inline(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch(save_sp, new_sp, arg);
}

static inline void *weft__ctx_switch_fpu_inline(void **save_sp, void *new_sp, void *arg)
{
	return weft__ctx_switch_fpu(save_sp, new_sp, arg);
}
#endif

/* The size of the frame a switch leaves on a suspended stack, and the indexes (in 8-byte words
 * from the saved stack pointer) of its saved frame pointer and resume address. */
#if defined(__x86_64__)
#define WEFT__CTX_FRAME_SIZE 64
#elif defined(__aarch64__)
#define WEFT__CTX_FRAME_SIZE 176
#endif
#define WEFT__CTX_FP_SLOT (WEFT__CTX_FRAME_SIZE / 8 - 2)
#define WEFT__CTX_PC_SLOT (WEFT__CTX_FRAME_SIZE / 8 - 1)

#endif
