/* The test harness: each TEST runs in a forked child, in a process group of its own, with its own
 * timeout; results are printed as TAP on stdout, diagnostics on stderr.
 *
 *   TEST(name) { ... }                 a case with the default timeout (10 s)
 *   TEST_TIMEOUT(name, seconds) {...}  a case with its own timeout
 *
 * Timeouts are multiplied by WEFT_TEST_TIMEOUT_SCALE (sanitizer and valgrind runs set it).
 * A case passes if it returns; it fails on the first failed ASSERT_*, on a crash, on a timeout, and
 * if it leaves anything behind: an fd, a thread, a child process (the harness checks all three
 * after the body). SKIP("reason") ends a case as skipped; with WEFT_TEST_NO_SKIP=1 (CI) a skip is
 * a failure, so CI never passes a test that did not run.
 *
 * A test binary takes case names to run (default: all), or -l to list them.
 */
#ifndef WEFT_TEST_HARNESS_H
#define WEFT_TEST_HARNESS_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <weft/core.h>

typedef void (*th_fn)(void);

void th_register(const char *name, th_fn fn, double timeout_s, const char *file, int line);

#define TH_CAT_(a, b) a##b
#define TH_CAT(a, b) TH_CAT_(a, b)

#define TEST_TIMEOUT(name, seconds)                                                                \
	static void TH_CAT(th_case_, name)(void);                                                  \
	__attribute__((constructor)) static void TH_CAT(th_reg_, name)(void)                       \
	{                                                                                          \
		th_register(#name, TH_CAT(th_case_, name), (seconds), __FILE__, __LINE__);         \
	}                                                                                          \
	static void TH_CAT(th_case_, name)(void)

#define TEST(name) TEST_TIMEOUT(name, 10)

/* --- failing and skipping ------------------------------------------------------------------ */
_Noreturn void th_fail(const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
_Noreturn void th_skip(const char *reason);

#define FAIL(...) th_fail(__FILE__, __LINE__, __VA_ARGS__)
#define SKIP(reason) th_skip(reason)

/* Integer comparisons print both operands (as signed and unsigned where they differ). */
#define TH_CMP(a, op, b)                                                                           \
	do {                                                                                       \
		intmax_t th_a_ = (intmax_t)(a), th_b_ = (intmax_t)(b);                             \
		if (!(th_a_ op th_b_))                                                             \
			th_fail(__FILE__, __LINE__, "ASSERT(%s %s %s): %jd %s %jd is false", #a,   \
			        #op, #b, th_a_, #op, th_b_);                                       \
	} while (0)

#define ASSERT_EQ(a, b) TH_CMP(a, ==, b)
#define ASSERT_NE(a, b) TH_CMP(a, !=, b)
#define ASSERT_LT(a, b) TH_CMP(a, <, b)
#define ASSERT_LE(a, b) TH_CMP(a, <=, b)
#define ASSERT_GT(a, b) TH_CMP(a, >, b)
#define ASSERT_GE(a, b) TH_CMP(a, >=, b)

#define ASSERT_UEQ(a, b)                                                                           \
	do {                                                                                       \
		uintmax_t th_a_ = (uintmax_t)(a), th_b_ = (uintmax_t)(b);                          \
		if (th_a_ != th_b_)                                                                \
			th_fail(__FILE__, __LINE__, "ASSERT(%s == %s): %ju != %ju", #a, #b, th_a_, \
			        th_b_);                                                            \
	} while (0)

#define ASSERT_TRUE(x)                                                                             \
	do {                                                                                       \
		if (!(x))                                                                          \
			th_fail(__FILE__, __LINE__, "ASSERT(%s) is false", #x);                    \
	} while (0)
#define ASSERT_FALSE(x) ASSERT_TRUE(!(x))

#define ASSERT_NULL(p)                                                                             \
	do {                                                                                       \
		const void *th_p_ = (p);                                                           \
		if (th_p_)                                                                         \
			th_fail(__FILE__, __LINE__, "ASSERT(%s == NULL): %p", #p, th_p_);          \
	} while (0)
#define ASSERT_NOT_NULL(p)                                                                         \
	do {                                                                                       \
		if (!(p))                                                                          \
			th_fail(__FILE__, __LINE__, "ASSERT(%s != NULL)", #p);                     \
	} while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
	do {                                                                                       \
		const char *th_a_ = (a), *th_b_ = (b);                                             \
		if (!th_a_ || !th_b_ || strcmp(th_a_, th_b_) != 0)                                 \
			th_fail(__FILE__, __LINE__, "ASSERT(%s == %s): \"%s\" != \"%s\"", #a, #b,  \
			        th_a_ ? th_a_ : "(null)", th_b_ ? th_b_ : "(null)");               \
	} while (0)

/* `hay` contains `needle`. */
#define ASSERT_CONTAINS(hay, needle)                                                               \
	do {                                                                                       \
		const char *th_h_ = (hay), *th_n_ = (needle);                                      \
		if (!th_h_ || !strstr(th_h_, th_n_))                                               \
			th_fail(__FILE__, __LINE__, "ASSERT(%s contains \"%s\"); it is:\n%s",      \
			        #hay, th_n_, th_h_ ? th_h_ : "(null)");                            \
	} while (0)
#define ASSERT_NOT_CONTAINS(hay, needle)                                                           \
	do {                                                                                       \
		const char *th_h_ = (hay), *th_n_ = (needle);                                      \
		if (th_h_ && strstr(th_h_, th_n_))                                                 \
			th_fail(__FILE__, __LINE__,                                                \
			        "ASSERT(%s does not contain \"%s\"); it is:\n%s", #hay, th_n_,     \
			        th_h_);                                                            \
	} while (0)

/* |a - b| <= tol. */
#define ASSERT_NEAR(a, b, tol)                                                                     \
	do {                                                                                       \
		double th_a_ = (double)(a), th_b_ = (double)(b), th_t_ = (double)(tol);            \
		if (!(th_a_ - th_b_ <= th_t_ && th_b_ - th_a_ <= th_t_))                           \
			th_fail(__FILE__, __LINE__,                                                \
			        "ASSERT(|%s - %s| <= %s): |%.9g - %.9g| > %.9g", #a, #b, #tol,     \
			        th_a_, th_b_, th_t_);                                              \
	} while (0)

/* A weft call succeeded (>= 0); on failure prints the error's name. Evaluates to the result. */
#define ASSERT_OK(expr)                                                                            \
	({                                                                                         \
		long th_r_ = (long)(expr);                                                         \
		if (th_r_ < 0)                                                                     \
			th_fail(__FILE__, __LINE__, "%s failed: %ld (%s: %s)", #expr, th_r_,       \
			        weft_errname((int)th_r_), weft_strerror((int)th_r_));              \
		th_r_;                                                                             \
	})

/* A weft call failed with exactly `err` (a negative errno). */
#define ASSERT_ERR(expr, err)                                                                      \
	do {                                                                                       \
		long th_r_ = (long)(expr), th_e_ = (long)(err);                                    \
		if (th_r_ != th_e_)                                                                \
			th_fail(__FILE__, __LINE__, "%s: got %ld (%s), want %ld (%s)", #expr,      \
			        th_r_, th_r_ < 0 ? weft_errname((int)th_r_) : "success", th_e_,    \
			        weft_errname((int)th_e_));                                         \
	} while (0)

/* --- time ---------------------------------------------------------------------------------- */
/* WEFT_TEST_TIMEOUT_SCALE, default 1. */
double th_scale(void);
/* Sleep `ms` milliseconds (not scaled). */
void th_sleep_ms(long ms);

/* --- files and folders --------------------------------------------------------------------- */
/* A fresh folder for this case, removed with its contents when the case ends. Static storage. */
const char *th_tmpdir(void);
/* Write `text` to path, making parent folders. Fails the case on error. */
void th_write_file(const char *path, const char *text);
/* Read a whole file (malloc'd, NUL-terminated) or NULL. */
char *th_read_file(const char *path);

/* --- helper processes ---------------------------------------------------------------------- */
/* Start a program (argv[0] looked up in PATH) in the case's process group. stdout and stderr go
 * to `log_path` if not NULL. Returns its pid; fails the case if it cannot be started. */
pid_t th_spawn(char *const argv[], const char *log_path);
/* Fork a helper that runs fn(arg) and exits 0 when it returns. */
pid_t th_spawn_fn(void (*fn)(void *), void *arg);
/* Send `sig` (0: none) and wait for the helper to exit, at most `timeout_s` (scaled) seconds, then
 * SIGKILL. Returns its wait status. */
int th_stop(pid_t pid, int sig, double timeout_s);
/* Run a command to completion with a timeout (scaled); its stdout (and stderr if `merge`) is
 * returned malloc'd in *ret_out (may be NULL). Returns the wait status, or -1 on timeout. */
int th_run(char *const argv[], double timeout_s, bool merge, char **ret_out);

/* True if `name` is a program on PATH. */
bool th_have_program(const char *name);

/* --- deterministic randomness -------------------------------------------------------------- */
/* xorshift64*: the same sequence on every run for a given seed (state must not be 0). */
uint64_t th_rng(uint64_t *state);
/* Uniform in [0, 1). */
double th_rng_unit(uint64_t *state);

/* --- network ------------------------------------------------------------------------------- */
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int th_free_port(void);
/* HTTP/1.0 GET http://127.0.0.1:port/path. Returns the status code (or -errno) and the body
 * (malloc'd) in *ret_body if not NULL. */
int th_http_get(int port, const char *path, double timeout_s, char **ret_body);
/* Send raw bytes and read the reply until the peer closes; returns the reply (malloc'd) or NULL. */
char *th_http_raw(int port, const char *request, size_t len, double timeout_s);

/* --- metrics ------------------------------------------------------------------------------ */
/* Export m as Prometheus text until it contains `needle`, at most `timeout_s` (scaled) seconds;
 * returns the text (free it). Fails the case, printing the last text, if it never does. */
char *th_wait_for_metrics(weft_metrics *m, const char *needle, double timeout_s);

/* --- where the build put things ------------------------------------------------------------ */
/* Path of a build artefact from the environment variable `var` (set by meson), or fail. */
const char *th_env_path(const char *var);

#endif
