/* The context switch: one assembly file per architecture (src/fiber/switch-x86_64.S,
 * switch-aarch64.S). Never installed.
 *
 * A context is a stack pointer. Switching pushes the callee-saved registers (and, in the _fpu
 * variant, the FPU control words) on the current stack, stores the stack pointer in *save_sp,
 * loads new_sp, pops the same registers from there and resumes where that context last switched
 * away, as if its own call to weft__ctx_switch returned `arg`. Everything the ABI lets a call
 * clobber is left to the compiler, so a switch costs a handful of instructions.
 *
 * The frame a switch leaves on a suspended stack (x86-64, 64 bytes, lowest address first):
 *   fpu slot (MXCSR, x87 CW) | r15 | r14 | r13 | r12 | rbx | rbp | resume address
 * The frame always has the FPU slot, so both variants read every frame; the plain variant skips
 * it. The resume address is popped and jumped to (pop; jmp) rather than returned to: a `ret`
 * to a different place than the matching call's is a return-stack misprediction on every switch.
 * aarch64: d8-d15, x19-x30 and, in the FPU slot, FPCR (see its file).
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

#endif
