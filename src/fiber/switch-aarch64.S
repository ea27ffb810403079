/* The aarch64 context switch (AAPCS64, Linux); src/internal/switch.h gives the contract.
 * Callee-saved: x19-x28, the frame pointer x29, the link register x30, sp, and the low 64 bits
 * of v8-v15 (d8-d15); the FPCR's mode bits (rounding, flush-to-zero, default NaN, trap enables)
 * only in the _fpu variant. The FPSR (cumulative exception flags) is status, not saved.
 *
 * void *weft__ctx_switch(void **save_sp  x0, void *new_sp  x1, void *arg  x2)
 *
 * The frame a switch leaves on a suspended stack (176 bytes, a multiple of 16, so sp stays 16-byte
 * aligned at every instruction, as the architecture checks for sp-based accesses):
 *
 *   sp+0    FPCR (the FPU slot; read only by the _fpu variant)
 *   sp+8    unused (keeps what follows 16-byte aligned)
 *   sp+16   d8  d9  d10 d11 d12 d13 d14 d15          (sp+16 .. sp+80)
 *   sp+80   x19 x20 x21 x22 x23 x24 x25 x26 x27 x28  (sp+80 .. sp+160)
 *   sp+160  x29 (the frame pointer)
 *   sp+168  x30 (the resume address)
 *
 * As on x86-64, the frame's topmost 16 bytes are (frame pointer, resume address): a dump that
 * walks a parked fiber's frame-pointer chain starts from fp = [sp+160], pc = [sp+168]. The CFI
 * below says the same at every instruction (CFA = sp + 176 once the frame exists), which holds on
 * both sides of the stack swap because both frames have this layout.
 *
 * Resuming: `br x30`, not `ret`. `ret` is a return: the core predicts its target from the
 * return stack, whose top is the return address of the `bl weft__ctx_switch` that entered this
 * call, in the context being left, while the real target is the other context's resume address;
 * so every switch ending in `ret` mispredicts, and that misprediction sits on the critical path.
 * `br` is an ordinary indirect branch: the core predicts it from the indirect-branch predictor,
 * which keys on the branch address and recent history and so learns the alternation of a
 * scheduler loop (worker -> fiber -> worker). This is the x86-64 choice (pop; jmp) for the same
 * reason; there `ret` measured 10.6 ns against 3.0 ns. Under qemu-user it cannot be measured (the
 * emulator has no predictor), so the choice rests on the architecture's rule: RET hints a
 * subroutine return to the return stack, BR hints that it is not one. Either way the return
 * stack then holds the left context's callers, so the resumed context's next few returns may
 * mispredict; `ret` does not avoid that either, it only adds one more.
 *
 * Branch protection. Debian 12's gcc (12.2) does not enable it by default (no
 * -mbranch-protection unless asked), so the objects carry no BTI property and the kernel maps no
 * page as guarded; this file then uses `br`. Built with -mbranch-protection=bti or =standard
 * (__ARM_FEATURE_BTI_DEFAULT), two things change: (1) a BR must land on a BTI instruction in a
 * guarded page, and a resume address (the instruction after some caller's `bl`) is none, so the
 * switch resumes with `ret` instead (a RET needs no landing pad), paying the misprediction above;
 * (2) each entry point starts with a landing pad and the file carries the GNU property note, so
 * linking it does not turn BTI off for the whole program. Pointer authentication (pac-ret) needs
 * nothing here for correctness: the compiled caller signs and checks its own x30 in its own frame.
 * The resume address this file stores in the frame is not signed, so a write into a parked
 * fiber's frame could redirect it; signing it (pacia with the frame's sp as modifier, in both
 * variants and in weft__ctx_make) is left for when a distribution turns pac-ret on by default.
 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define WEFT_BTI_C bti c
#define WEFT_BTI_J bti j
#define WEFT_RESUME ret x30
#define WEFT_GNU_PROPERTY_BTI 1
#else
#define WEFT_BTI_C
#define WEFT_BTI_J
#define WEFT_RESUME br x30
#define WEFT_GNU_PROPERTY_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define WEFT_GNU_PROPERTY_PAC 2
#else
#define WEFT_GNU_PROPERTY_PAC 0
#endif

#define FRAME 176

/* Push the frame: x29/x30 first so the CFI can name them from the first instruction on. */
.macro SAVE_FRAME
	sub	sp, sp, #FRAME
	.cfi_def_cfa_offset FRAME
	stp	x29, x30, [sp, #160]
	.cfi_offset x29, -16
	.cfi_offset x30, -8
	stp	x19, x20, [sp, #80]
	stp	x21, x22, [sp, #96]
	stp	x23, x24, [sp, #112]
	stp	x25, x26, [sp, #128]
	stp	x27, x28, [sp, #144]
	stp	d8, d9, [sp, #16]
	stp	d10, d11, [sp, #32]
	stp	d12, d13, [sp, #48]
	stp	d14, d15, [sp, #64]
.endm

/* Pop the frame at sp (the new context's) and resume it with arg (x2) as the return value. */
.macro LOAD_FRAME_AND_RESUME
	ldp	d8, d9, [sp, #16]
	ldp	d10, d11, [sp, #32]
	ldp	d12, d13, [sp, #48]
	ldp	d14, d15, [sp, #64]
	ldp	x19, x20, [sp, #80]
	ldp	x21, x22, [sp, #96]
	ldp	x23, x24, [sp, #112]
	ldp	x25, x26, [sp, #128]
	ldp	x27, x28, [sp, #144]
	ldp	x29, x30, [sp, #160]
	add	sp, sp, #FRAME
	.cfi_def_cfa_offset 0
	.cfi_restore x29
	.cfi_restore x30
	mov	x0, x2
	WEFT_RESUME
.endm

	.text

	.globl	weft__ctx_switch
	.hidden	weft__ctx_switch
	.type	weft__ctx_switch, %function
	.p2align 4
weft__ctx_switch:
	.cfi_startproc
	WEFT_BTI_C
	SAVE_FRAME
	mov	x9, sp
	str	x9, [x0]
	mov	sp, x1
	LOAD_FRAME_AND_RESUME
	.cfi_endproc
	.size	weft__ctx_switch, .-weft__ctx_switch

	.globl	weft__ctx_switch_fpu
	.hidden	weft__ctx_switch_fpu
	.type	weft__ctx_switch_fpu, %function
	.p2align 4
weft__ctx_switch_fpu:
	.cfi_startproc
	WEFT_BTI_C
	SAVE_FRAME
	mrs	x9, fpcr
	str	x9, [sp]
	mov	x9, sp
	str	x9, [x0]
	mov	sp, x1
	/* Writing FPCR can be slow (some cores serialize on it): only when it differs. */
	ldr	x10, [sp]
	mrs	x9, fpcr
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:
	LOAD_FRAME_AND_RESUME
	.cfi_endproc
	.size	weft__ctx_switch_fpu, .-weft__ctx_switch_fpu

/* The first code a new context runs, reached from LOAD_FRAME_AND_RESUME: x19 = entry,
 * x20 = data (from weft__ctx_make), x0 = the switch's arg, x29 = 0, sp 16-byte aligned (the top
 * weft__ctx_make aligned). Calls entry(arg, data); entry never returns. The return address is
 * marked undefined so that unwinders (gdb, libgcc, libdw) stop here, and x29 = 0 ends a
 * frame-pointer walk. */
	.globl	weft__ctx_trampoline
	.hidden	weft__ctx_trampoline
	.type	weft__ctx_trampoline, %function
	.p2align 4
weft__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	WEFT_BTI_J
	mov	x29, #0
	mov	x1, x20
	blr	x19
	brk	#0x3e8
	.cfi_endproc
	.size	weft__ctx_trampoline, .-weft__ctx_trampoline

	.section .note.GNU-stack,"",%progbits

#if WEFT_GNU_PROPERTY_BTI || WEFT_GNU_PROPERTY_PAC
/* The GNU property note: GNU_PROPERTY_AARCH64_FEATURE_1_AND (0xc0000000) with BTI (1) and/or
 * PAC (2), so a program built with branch protection keeps it when it links this file. */
	.section .note.gnu.property, "a"
	.p2align 3
	.word	4
	.word	16
	.word	5		/* NT_GNU_PROPERTY_TYPE_0 */
	.asciz	"GNU"
	.word	0xc0000000
	.word	4
	.word	(WEFT_GNU_PROPERTY_BTI | WEFT_GNU_PROPERTY_PAC)
	.word	0
#endif
