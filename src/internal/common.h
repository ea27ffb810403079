/* Internal basics shared by every part: visibility, branch hints, asserts that are never compiled
 * out, errno-preserving helpers. Never installed. */
#ifndef WEFT_INTERNAL_COMMON_H
#define WEFT_INTERNAL_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <weft/core.h>

#define weft__likely(x) __builtin_expect(!!(x), 1)
#define weft__unlikely(x) __builtin_expect(!!(x), 0)
#define WEFT__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define WEFT__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define WEFT__MIN(a, b) ((a) < (b) ? (a) : (b))
#define WEFT__MAX(a, b) ((a) > (b) ? (a) : (b))

/* Asserts that guard memory safety: never compiled out, whatever NDEBUG says. On failure the
 * message goes to stderr (the one place the library writes) and the process aborts. */
_Noreturn void weft__assert_fail(const char *expr, const char *file, int line, const char *func);
#define WEFT__ASSERT(expr)                                                                         \
	(weft__likely(expr) ? (void)0 : weft__assert_fail(#expr, __FILE__, __LINE__, __func__))

/* WEFT__TSAN: built with ThreadSanitizer, which has no model of atomic_thread_fence (gcc refuses
 * to compile one); code that needs a seq_cst fence uses seq_cst operations instead there. */
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#endif
#endif
#ifndef WEFT__TSAN
#define WEFT__TSAN 0
#endif

/* The pause a spin-wait makes between looks: it tells the core a spin is going on (fewer
 * pipeline flushes on exit, the sibling hyper-thread gets the resources). */
static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield" ::: "memory");
#else
	__asm__ volatile("" ::: "memory");
#endif
}

/* A double's bit pattern and back, for doubles kept in _Atomic uint64_t. */
static inline uint64_t weft__dbits(double d)
{
	uint64_t u;
	__builtin_memcpy(&u, &d, sizeof(u));
	return u;
}

static inline double weft__bitsd(uint64_t u)
{
	double d;
	__builtin_memcpy(&d, &u, sizeof(d));
	return d;
}

/* -errno of the last libc call, never 0 (a libc call that failed without setting errno counts
 * as -EIO). */
static inline int weft__neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

#endif
