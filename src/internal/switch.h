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
 * x86-64 resumes with `ret`, aarch64 with `br x30`: see each file's head comment for why (on
 * x86-64, measured in the scheduler: `ret` halves the cost of a yield there, while a bare
 * two-call-site ping-pong favours an indirect jump). aarch64 built with
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
