/* base.c: the version string, time, errors and the never-compiled-out assert.
 *
 * Time is CLOCK_MONOTONIC in int64 ns: 2^63 ns is 292 years of uptime, so no overflow in practice;
 * deadline arithmetic saturates anyway. Error text comes from glibc's thread-safe
 * strerrordesc_np/strerrorname_np (2.32+), never from strerror's shared buffer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../internal/common.h"

#define STR_(x) #x
#define STR(x) STR_(x)

WEFT_API const char *weft_version(void)
{
	return STR(WEFT_VERSION_MAJOR) "." STR(WEFT_VERSION_MINOR) "." STR(WEFT_VERSION_PATCH);
}

_Noreturn void weft__assert_fail(const char *expr, const char *file, int line, const char *func)
{
	fprintf(stderr, "weft: assertion failed: %s (%s:%d, %s)\n", expr, file, line, func);
	abort();
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	/* Both clocks used here cannot fail with valid arguments. */
	WEFT__ASSERT(clock_gettime(id, &ts) == 0);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

WEFT_API int64_t weft_now(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

WEFT_API int64_t weft_thread_cpu_time(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

WEFT_API int64_t weft_deadline_in(int64_t ns)
{
	if (ns < 0)
		return WEFT_FOREVER;
	int64_t now = weft_now();
	return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

WEFT_API int weft_sleep_until(int64_t deadline)
{
	if (deadline < WEFT_FOREVER)
		return -EINVAL;
	int saved = errno;
	struct timespec ts;
	if (deadline == WEFT_FOREVER) {
		ts.tv_sec = INT64_MAX / 1000000000;
		ts.tv_nsec = 0;
	} else {
		ts.tv_sec = deadline / 1000000000;
		ts.tv_nsec = deadline % 1000000000;
	}
	for (;;) {
		int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		if (r == 0)
			break;
		if (r != EINTR) /* EINVAL cannot happen: ts is normalised and non-negative. */
			break;
	}
	errno = saved;
	return 0;
}

/* |err| without overflow: INT_MIN has no positive twin and is no errno. */
static int errno_of(int err)
{
	return err == INT_MIN ? 0x7fffffff : err < 0 ? -err : err;
}

WEFT_API const char *weft_strerror(int err)
{
	err = errno_of(err);
	const char *s = strerrordesc_np(err);
	return s ? s : "Unknown error";
}

WEFT_API const char *weft_errname(int err)
{
	err = errno_of(err);
	const char *s = strerrorname_np(err);
	return s ? s : "EUNKNOWN";
}
