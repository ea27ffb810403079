/* weft/core.h: time, errors, the CPU budget, histograms, rate estimators, the metrics registry and
 * its HTTP endpoint, backtraces.
 *
 * Conventions for every weft header:
 *  - A fallible function returns int: >= 0 on success (a count may ride on it), a negative errno on
 *    failure. weft never sets errno.
 *  - Results go through trailing ret_* pointers, written only on success.
 *  - Times are int64_t nanoseconds on CLOCK_MONOTONIC; blocking calls take an absolute deadline and
 *    WEFT_FOREVER (-1) means no deadline.
 *  - Handles are opaque; destroy/free functions accept NULL.
 *  - The library never prints; the weft command does.
 */
#ifndef WEFT_CORE_H
#define WEFT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_API __attribute__((visibility("default")))

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* The library's version as "MAJOR.MINOR.PATCH"; static storage. */
WEFT_API const char *weft_version(void);

/* ------------------------------------------------------------------------------------------------
 * Time: int64_t nanoseconds on CLOCK_MONOTONIC, absolute deadlines.
 */
#define WEFT_FOREVER ((int64_t)-1)
#define WEFT_USEC(n) ((int64_t)(n)*1000)
#define WEFT_MSEC(n) ((int64_t)(n)*1000000)
#define WEFT_SEC(n) ((int64_t)(n)*1000000000)

/* Now, in ns on CLOCK_MONOTONIC. Never fails. */
WEFT_API int64_t weft_now(void);

/* The deadline `ns` from now: weft_now() + ns, saturating at INT64_MAX. A negative `ns` gives
 * WEFT_FOREVER. */
WEFT_API int64_t weft_deadline_in(int64_t ns);

/* CPU time consumed by the calling thread, in ns (CLOCK_THREAD_CPUTIME_ID). */
WEFT_API int64_t weft_thread_cpu_time(void);

/* Sleep until `deadline` (absolute, weft_now() clock). Signals do not cut the sleep short.
 * Returns 0, or -EINVAL for a deadline below WEFT_FOREVER. WEFT_FOREVER sleeps forever. */
WEFT_API int weft_sleep_until(int64_t deadline);

/* ------------------------------------------------------------------------------------------------
 * Errors. `err` may be given as -errno (as weft returns it) or errno.
 */

/* Text for an error, e.g. "Cannot allocate memory". Static storage, thread-safe, never NULL. */
WEFT_API const char *weft_strerror(int err);

/* Symbolic name for an error, e.g. "ENOMEM". Static storage, never NULL ("EUNKNOWN" if unknown). */
WEFT_API const char *weft_errname(int err);

/* ------------------------------------------------------------------------------------------------
 * The CPU budget: how many CPUs this process may really use. It is the affinity mask
 * (sched_getaffinity) intersected with the cgroup CPU quota (v1 cpu.cfs_quota_us/cpu.cfs_period_us,
 * v2 cpu.max) of the process's cgroup and of every parent cgroup, the tightest winning. The
 * environment variable WEFT_CPUS (a positive number, fractions allowed) overrides all of them.
 *
 * The integer budget rounds the fractional capacity down (a pool of floor(quota) threads is never
 * throttled by the CFS bandwidth controller), and is at least 1.
 */
typedef struct weft_cpus weft_cpus;

enum weft_cpu_limit_kind {
	WEFT_CPU_LIMIT_AFFINITY = 1, /* the sched_getaffinity mask */
	WEFT_CPU_LIMIT_CGROUP1 = 2,  /* cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us */
	WEFT_CPU_LIMIT_CGROUP2 = 3,  /* cgroup v2: cpu.max */
	WEFT_CPU_LIMIT_OVERRIDE = 4, /* the WEFT_CPUS environment variable */
};

/* Read the CPU budget of the calling process. `root` is NULL for the real system, or a folder that
 * stands for "/": /proc/self/cgroup, /proc/self/mountinfo and the cgroup mount points are then read
 * under it (fake trees for tests, a container's root seen from outside). The affinity mask is
 * always the calling thread's. Errors: -EINVAL (ret is NULL, or root is not an absolute path),
 * -ENOMEM, -EIO (a cgroup file that cannot be parsed), -ERANGE (WEFT_CPUS is not a positive decimal
 * number up to 1048576), or the error of a failed open/read/sched_getaffinity (-EMFILE...). Missing
 * cgroup files are not errors: no limit. A cgroup limit's source is the path of the file as opened,
 * root included. */
WEFT_API int weft_cpus_read(weft_cpus **ret, const char *root);
WEFT_API void weft_cpus_free(weft_cpus *cpus);

/* The integer budget (>= 1) and the fractional capacity (> 0); -EINVAL for a NULL cpus. */
WEFT_API int weft_cpus_count(const weft_cpus *cpus);
WEFT_API double weft_cpus_capacity(const weft_cpus *cpus);

/* The i-th limit found (i from 0): its kind (enum weft_cpu_limit_kind), the CPUs it allows, where
 * it came from (a file path, "sched_getaffinity", or "WEFT_CPUS=..."; valid until weft_cpus_free)
 * and whether it is the one that binds. Any ret_ may be NULL. -ENOENT past the last limit, -EINVAL
 * for a NULL cpus. */
WEFT_API int weft_cpus_limit(const weft_cpus *cpus, size_t i, int *ret_kind, double *ret_cpus,
                             const char **ret_source, bool *ret_binding);

/* "affinity", "cgroup1", "cgroup2", "override"; "unknown" for anything else. */
WEFT_API const char *weft_cpu_limit_name(int kind);

/* Shortcut: the integer budget of the real system (>= 1), or a negative errno. ret_capacity, if
 * not NULL, receives the fractional capacity. */
WEFT_API int weft_cpu_budget(double *ret_capacity);

/* ------------------------------------------------------------------------------------------------
 * Log-linear histograms of non-negative int64 values (usually ns). Values below
 * 2^WEFT_HIST_SUB_BITS are exact; above, each power of two is split into 2^WEFT_HIST_SUB_BITS equal
 * buckets, so a reported value is within WEFT_HIST_REL_ERROR of the recorded one. Recording is
 * lock-free (a few relaxed atomic adds) and safe from any number of threads; reads taken while
 * others record see each recorded value either whole or not at all per bucket, not a consistent
 * cut.
 */
#define WEFT_HIST_SUB_BITS 5
#define WEFT_HIST_REL_ERROR (1.0 / (1 << (WEFT_HIST_SUB_BITS + 1)))

typedef struct weft_hist weft_hist;

WEFT_API int weft_hist_create(weft_hist **ret);
WEFT_API void weft_hist_destroy(weft_hist *h);
/* Record a value (negative values count as 0). */
WEFT_API void weft_hist_record(weft_hist *h, int64_t value);
/* Record `n` occurrences of a value. */
WEFT_API void weft_hist_record_n(weft_hist *h, int64_t value, uint64_t n);
/* dst += src. -EINVAL for NULL or dst == src. */
WEFT_API int weft_hist_merge(weft_hist *dst, const weft_hist *src);
WEFT_API void weft_hist_reset(weft_hist *h);
WEFT_API uint64_t weft_hist_count(const weft_hist *h);
/* Sum of the recorded values. */
WEFT_API double weft_hist_sum(const weft_hist *h);
WEFT_API double weft_hist_mean(const weft_hist *h);
/* Exact minimum and maximum recorded (0 when empty). */
WEFT_API int64_t weft_hist_min(const weft_hist *h);
WEFT_API int64_t weft_hist_max(const weft_hist *h);
/* The value at percentile p (0..100), within WEFT_HIST_REL_ERROR; 0 when empty; p is clamped. */
WEFT_API int64_t weft_hist_percentile(const weft_hist *h, double p);
/* Number of recorded values <= v (v rounded to its bucket's upper edge). */
WEFT_API uint64_t weft_hist_count_le(const weft_hist *h, int64_t v);

/* ------------------------------------------------------------------------------------------------
 * Exponentially weighted moving averages with irregular ticks. The weight of a sample taken dt
 * after the previous one is 1 - exp(-dt / tau), so the estimate does not depend on how often it is
 * fed. Storage is the caller's (embed it); use only these functions on it.
 */
typedef struct weft_ewma {
	uint64_t opaque_[4];
} weft_ewma;

/* tau: the time constant in ns (> 0), else -EINVAL. */
WEFT_API int weft_ewma_init(weft_ewma *e, int64_t tau);
/* Fold in `sample`, observed at time `now`. The first sample sets the value. Not thread-safe: one
 * updater, or a lock. A `now` earlier than the last update counts as dt = 0. */
WEFT_API void weft_ewma_update(weft_ewma *e, double sample, int64_t now);
WEFT_API double weft_ewma_value(const weft_ewma *e);
/* True once a sample was folded in. */
WEFT_API bool weft_ewma_ready(const weft_ewma *e);

/* An event rate estimator: any thread counts events with weft_rate_add (one relaxed atomic add);
 * one thread calls weft_rate_tick at irregular times, which turns the events since the last tick
 * into a rate and folds it into an EWMA with time constant tau. */
typedef struct weft_rate {
	uint64_t opaque_[6];
} weft_rate;

WEFT_API int weft_rate_init(weft_rate *r, int64_t tau, int64_t now);
WEFT_API void weft_rate_add(weft_rate *r, uint64_t n);
/* Returns the rate estimate in events per second after folding in [last tick, now]. */
WEFT_API double weft_rate_tick(weft_rate *r, int64_t now);
WEFT_API double weft_rate_value(const weft_rate *r);
/* Events counted since init. */
WEFT_API uint64_t weft_rate_total(const weft_rate *r);

/* ------------------------------------------------------------------------------------------------
 * The metrics registry: counters, gauges and histograms, each a series named by a metric name and
 * label pairs, exported as Prometheus text (format 0.0.4) and as JSON.
 *
 * Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*; label names [a-zA-Z_][a-zA-Z0-9_]* and not
 * starting with "__"; both at most 255 bytes. `labels` is NULL or a NULL-terminated array of
 * name, value, name, value... (at most 32 pairs; a name without a value is -EINVAL; label names
 * are distinct; a histogram may not use "le"). Label values are any text (UTF-8 expected).
 * `help` may be NULL (no help). Counter names conventionally end in "_total" (not enforced).
 * Series of one name form a family: same type, same help, the same set of label names (in any
 * order) and, for histograms, the same export settings, else -EINVAL. Registering a series that
 * exists (same label values) gives -EEXIST. The registry copies every string. Removing the last
 * series of a family forgets the family. Errors: -EINVAL (NULL m/name/ret, or as above), -EEXIST,
 * -ENOSPC (max_series reached), -ENOMEM.
 * Updating a series is lock-free; registering, removing and exporting take the registry's lock
 * (registration and removal cost O(series) compares; exports run in registration order of
 * families, then of series). A series handle is valid until weft_metrics_remove or
 * weft_metrics_destroy. Update functions given a NULL handle do nothing (readers return 0), so a
 * failed registration does not crash the code that updates.
 */
typedef struct weft_metrics weft_metrics;
typedef struct weft_counter weft_counter;
typedef struct weft_gauge weft_gauge;

typedef struct weft_metrics_opts {
	size_t max_series; /* 0: 10000. Registering past it gives -ENOSPC. */
} weft_metrics_opts;

WEFT_API int weft_metrics_create(weft_metrics **ret, const weft_metrics_opts *opts);
/* Frees the registry and every series in it. Stop any server on it first. Does nothing for NULL
 * and for the global registry. */
WEFT_API void weft_metrics_destroy(weft_metrics *m);

/* The process-wide registry that weft's own parts report to; created on first use, never
 * destroyed. -EINVAL for NULL ret, -ENOMEM if it cannot be created (a later call tries again). */
WEFT_API int weft_metrics_global(weft_metrics **ret);

/* A counter: a uint64 that only goes up (one relaxed atomic add), wrapping modulo 2^64. */
WEFT_API int weft_metrics_counter(weft_metrics *m, const char *name, const char *help,
                                  const char *const *labels, weft_counter **ret);
WEFT_API void weft_counter_add(weft_counter *c, uint64_t n);
WEFT_API uint64_t weft_counter_value(const weft_counter *c);

WEFT_API int weft_metrics_gauge(weft_metrics *m, const char *name, const char *help,
                                const char *const *labels, weft_gauge **ret);
WEFT_API void weft_gauge_set(weft_gauge *g, double v);
WEFT_API void weft_gauge_add(weft_gauge *g, double delta);
WEFT_API double weft_gauge_value(const weft_gauge *g);

/* A gauge whose value `fn(arg)` computes at each export (and at weft_gauge_value). fn runs under
 * the registry's lock: it must not call a weft_metrics_* function or weft_gauge_value on a
 * function gauge of any registry (they take a registry lock). `arg` must stay valid until the gauge
 * is removed. weft_gauge_set and weft_gauge_add do nothing on such a gauge. -EINVAL for NULL fn. */
WEFT_API int weft_metrics_gauge_fn(weft_metrics *m, const char *name, const char *help,
                                   const char *const *labels, double (*fn)(void *arg), void *arg,
                                   weft_gauge **ret);

/* How a histogram is exported. Recorded values are multiplied by `scale` on export (1e-9 turns ns
 * into the seconds Prometheus expects). Prometheus buckets are cumulative at each power of two
 * from `lo` to `hi` (raw units, rounded out to powers of two), plus +Inf. The bucket le=2^k*scale
 * counts exactly the values < 2^k raw units (a value of exactly 2^k lands one bucket up).
 * -EINVAL for a scale that is negative or not finite, lo < 0, hi < lo or hi > 2^62. */
typedef struct weft_hist_export {
	double scale; /* 0: 1e-9 */
	int64_t lo;   /* 0: 1000 (1 us in ns) */
	int64_t hi;   /* 0: 100000000000 (100 s in ns) */
} weft_hist_export;

/* Register a histogram series; record into it with weft_hist_record. Do not destroy it yourself:
 * weft_metrics_remove does. */
WEFT_API int weft_metrics_histogram(weft_metrics *m, const char *name, const char *help,
                                    const char *const *labels, const weft_hist_export *exp,
                                    weft_hist **ret);

/* Remove a series (a weft_counter, weft_gauge or weft_hist registered in m) and free it.
 * -ENOENT if it is not a series of m (any pointer is safe to pass), -EINVAL for NULL. */
WEFT_API int weft_metrics_remove(weft_metrics *m, const void *series);

/* Number of series registered. */
WEFT_API size_t weft_metrics_size(weft_metrics *m);

/* Export every series. The text is NUL-terminated, malloc'd; the caller frees it with free().
 * ret_len (may be NULL) receives its length. -EINVAL for NULL m or ret_text, -ENOMEM, -E2BIG
 * (over 256 MiB). Values print in the shortest form that reads back exactly; Prometheus text
 * writes NaN/+Inf/-Inf, JSON null. JSON: {"metrics":[{"name","type","help","series":[{"labels":
 * {...},"value":V}]}]}; a histogram series has count, sum, min, max, p50, p90, p99, p999 (scaled)
 * instead of value. */
WEFT_API int weft_metrics_prometheus(weft_metrics *m, char **ret_text, size_t *ret_len);
WEFT_API int weft_metrics_json(weft_metrics *m, char **ret_text, size_t *ret_len);

/* A small HTTP endpoint for a registry: a thread that answers GET /metrics (Prometheus text) and
 * GET /metrics.json (JSON), 404 elsewhere, 405 for other methods. It serves up to 64 connections at
 * once, each with a 5 s deadline and an 8 KiB request limit.
 * HEAD works like GET without the body; a query string is ignored; a malformed request gets 400,
 * one over 8 KiB 431, an export that runs out of memory 500; every response closes its connection.
 * Clients beyond 64 wait in the listen backlog until a connection ends.
 * `addr` is "HOST:PORT" with a numeric IPv4 host, or "[IPV6]:PORT"; port 0 picks a free port.
 * `m` must outlive the server. Errors: -EINVAL (NULL argument, bad address), errors of
 * socket/bind/listen (-EADDRINUSE...), -ENOMEM, -EAGAIN (no thread). */
typedef struct weft_metrics_server weft_metrics_server;

WEFT_API int weft_metrics_serve(weft_metrics *m, const char *addr, weft_metrics_server **ret);
/* The port it listens on; -EINVAL for NULL. */
WEFT_API int weft_metrics_server_port(const weft_metrics_server *s);
/* Stop serving, join the thread, close every socket. NULL is fine. */
WEFT_API void weft_metrics_server_stop(weft_metrics_server *s);

/* ------------------------------------------------------------------------------------------------
 * Backtraces. Capture is cheap and, once weft_backtrace_init has run, usable in a signal handler
 * (it must not interrupt the dynamic loader: a signal during dlopen may deadlock the unwinder).
 * Symbolization is slow, allocates, and belongs outside signal handlers: it gives the function
 * and, where debug info exists, file and line.
 */
#define WEFT_BACKTRACE_MAX 64

/* Load the unwinder now so later captures do not allocate. Idempotent, thread-safe. Returns 0. */
WEFT_API int weft_backtrace_init(void);

/* Capture up to `max` return addresses of the calling thread, skipping the `skip` innermost frames
 * above the caller (0: the first frame is the caller of weft_backtrace). Returns the count, or
 * -EINVAL (frames NULL, max or skip negative). One capture walks at most 256 frames, skipped
 * ones included: deeper frames are not returned. Takes no lock and does not allocate once
 * weft_backtrace_init has run (a first capture without it runs it). */
WEFT_API int weft_backtrace(void **frames, int max, int skip);

typedef struct weft_symbolizer weft_symbolizer;

/* A symbolizer for this process. It uses elfutils' libdw when weft was built with it (names,
 * file:line) and otherwise reads the modules' ELF symbol tables (names only, static functions
 * included). The environment variable WEFT_SYMBOLIZER=libdw|elf|auto, read here, overrides the
 * choice. -ENOMEM; -ENOTSUP for "libdw" in a build without it; -EINVAL for another value;
 * -errno if libdw was asked for and cannot read /proc/self/maps. */
WEFT_API int weft_symbolizer_create(weft_symbolizer **ret);
WEFT_API void weft_symbolizer_destroy(weft_symbolizer *s);

/* Look up `pc`, a return address as weft_backtrace gives it: the function and line looked up are
 * those of pc - 1 (the call). Any ret_ may be NULL. Strings are owned by `s` and valid until its
 * destruction. ret_func is NULL-free: "??" when unknown; ret_offset is pc minus the function's
 * start, or, when the function is unknown, pc minus the module's load bias (an address for
 * addr2line -e module). ret_file is an absolute path where the compilation folder is known, NULL
 * (and ret_line 0) when there is no debug info; ret_module is the module's file, symbolic links
 * resolved (the vDSO has a name only). -ENOENT if pc is in no mapped module (a module loaded
 * after `s` was created is found), -EINVAL if s is NULL, -ENOMEM. Thread-safe: lookups on one
 * symbolizer are serialised by its lock. The first lookup in a module reads its symbols (and,
 * with libdw, its debug info: tens of ms for libc's); later ones take about 0.1 us. */
WEFT_API int weft_symbolizer_lookup(weft_symbolizer *s, const void *pc, const char **ret_func,
                                    uintptr_t *ret_offset, const char **ret_file, int *ret_line,
                                    const char **ret_module);

/* Format frames as text, one per line: "#0  0x...  func+0x1a at file.c:42 (module)", with "??"
 * for an unknown function, file:line or module, and the module's base name. malloc'd, free() it.
 * n == 0 gives "". Returns 0, -EINVAL (n negative, frames NULL with n > 0, ret_text NULL), or an
 * error of weft_symbolizer_create or -ENOMEM. Each call uses a symbolizer of its own: to format
 * many stacks, keep one symbolizer and look the frames up with it. */
WEFT_API int weft_backtrace_format(void *const *frames, int n, char **ret_text);

#ifdef __cplusplus
}
#endif

#endif
