/* weft__ctx_make: the first frame of a new context, per architecture, matching the layout its
 * assembly file pops (src/internal/switch.h). */
#include <stdint.h>
#include <string.h>

#include "internal/switch.h"

void weft__ctx_trampoline(void);

void *weft__ctx_make(void *stack_top, weft__ctx_entry entry, void *data)
{
	uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
#if defined(__x86_64__)
	/* fpu | r15 | r14 | r13 | r12 | rbx | rbp | resume, then 8 bytes of padding up to top */
	uint64_t *f = (uint64_t *)(top - 72);
	uint32_t mxcsr;
	uint16_t cw;
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	f[0] = (uint64_t)mxcsr | (uint64_t)cw << 32;
	f[1] = 0;               /* r15 */
	f[2] = 0;               /* r14 */
	f[3] = (uint64_t)data;  /* r13 */
	f[4] = (uint64_t)entry; /* r12 */
	f[5] = 0;               /* rbx */
	f[6] = 0;               /* rbp */
	f[7] = (uint64_t)weft__ctx_trampoline;
	f[8] = 0;
	return f;
#elif defined(__aarch64__)
	/* fpcr | unused | d8-d15 | x19-x28 | x29 | x30 (resume), 176 bytes ending at top; the
	 * trampoline finds entry in x19 and data in x20 */
	uint64_t *f = (uint64_t *)(top - 176);
	uint64_t fpcr;
	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	memset(f, 0, 176);
	f[0] = fpcr;
	f[10] = (uint64_t)entry;                /* x19 */
	f[11] = (uint64_t)data;                 /* x20 */
	f[20] = 0;                              /* x29: ends a frame-pointer walk */
	f[21] = (uint64_t)weft__ctx_trampoline; /* x30 */
	return f;
#else
#error "weft's fibers support x86-64 and aarch64"
#endif
}
