/* The x86-64 context switch (System V ABI); src/internal/switch.h gives the contract and the
 * frame layout.
 *
 * Callee-saved: rbx, rbp, r12-r15, and the control bits of MXCSR and the x87 control
 * word, which only the _fpu variant saves (their status bits are caller-saved).
 *
 * void *weft__ctx_switch(void **save_sp  rdi, void *new_sp  rsi, void *arg  rdx)
 *
 * The scheduler does not call these: it uses weft__ctx_switch_inline and
 * weft__ctx_switch_fpu_inline (src/internal/switch.h), the same switches written into their
 * caller, which neither call nor return and so keep the return-stack predictor in step (see that
 * header for the measurements). These out-of-line variants serve the tests and any caller that
 * needs a function pointer. They end in `ret`, which is predicted when both contexts called the
 * switch from the same place; `pop; jmp` would leave the call's entry on the return stack and
 * put every later return of the resumed context one frame off.
 */
	.text

	.globl	weft__ctx_switch
	.hidden	weft__ctx_switch
	.type	weft__ctx_switch, @function
	.p2align 4
weft__ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp	/* the FPU slot, unused here */
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	movq	%rdx, %rax
	ret			/* see the head comment: ret, measured in the scheduler */
	.cfi_endproc
	.size	weft__ctx_switch, .-weft__ctx_switch

	.globl	weft__ctx_switch_fpu
	.hidden	weft__ctx_switch_fpu
	.type	weft__ctx_switch_fpu, @function
	.p2align 4
weft__ctx_switch_fpu:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	%rsp, (%rdi)
	movl	(%rsp), %r8d		/* the MXCSR and x87 CW in force now */
	movzwl	4(%rsp), %r9d
	movq	%rsi, %rsp
	/* ldmxcsr and fldcw are slow when they change anything (ldmxcsr costs ~37 ns when only the
	 * sticky status flags differ): load only when the control bits differ, and keep the status
	 * flags in force (they are caller-saved) */
	movl	(%rsp), %ecx
	xorl	%r8d, %ecx
	testl	$0xffc0, %ecx
	jz	1f
	movl	(%rsp), %ecx
	andl	$0xffc0, %ecx
	andl	$0x3f, %r8d
	orl	%r8d, %ecx
	movl	%ecx, (%rsp)
	ldmxcsr	(%rsp)
1:	cmpw	4(%rsp), %r9w
	je	2f
	fldcw	4(%rsp)
2:	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	movq	%rdx, %rax
	ret
	.cfi_endproc
	.size	weft__ctx_switch_fpu, .-weft__ctx_switch_fpu

/* The first code a new context runs: r12 = entry, r13 = data (from weft__ctx_make), rax = the
 * switch's arg. Calls entry(arg, data) on a 16-byte aligned stack; entry never returns. The
 * return address is marked undefined so that unwinders (gdb, libdw) stop here. */
	.globl	weft__ctx_trampoline
	.hidden	weft__ctx_trampoline
	.type	weft__ctx_trampoline, @function
	.p2align 4
weft__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp
	movq	%rax, %rdi
	movq	%r13, %rsi
	andq	$-16, %rsp
	callq	*%r12
	ud2
	.cfi_endproc
	.size	weft__ctx_trampoline, .-weft__ctx_trampoline

	.section .note.GNU-stack,"",@progbits
