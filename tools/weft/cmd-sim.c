/* cmd-sim.c: `weft sim`, the queue forecast without running anything: given an arrival rate, a
 * service time and a thread count, is the pool's queue stable, how fast does it grow, what will a
 * task wait, and how many threads would it take (weft_queue_forecast_compute: Erlang C with the
 * Allen-Cunneen correction). `--simulate` also runs a discrete-event simulation of the same G/G/c
 * queue (weft_queue_simulate) and prints its figures beside the formulas'.
 *
 * Values. Rates are tasks per second, plain ("2") or with a unit ("2/s", "120/min", "7200/h").
 * Durations are seconds, plain ("1.5") or with a unit: ns, us, ms, s, min, h ("150ms", "1.5 s"
 * is two arguments, so no space). Counts are decimal integers. Every value must be finite; rates,
 * durations, CPUs and CPU fractions must be above 0 (a CPU fraction at most 1); variabilities
 * (squared coefficients of variation) and counts of queued tasks may be 0.
 *
 * Distributions for --simulate (--arrival, --service): exp (cv2 1), det (cv2 0), cv=X (cv2 X^2,
 * X <= 100). They set the same variability the formula uses (--arrival-cv2, --service-cv2), so the
 * two columns describe one queue; giving both with different values is an error.
 *
 * Output: human text (the verdict, the transient after an hour, the sizing and a table of thread
 * counts, the CPU budget; then the simulation table), or with --json one object:
 *   {"arrival_rate":2,"service_time":1.5,"threads":2,...,"rho":1.5,"stable":false,
 *    "growth_per_s":0.666667,...,"wait_s":null,...,"min_stable_threads":4,...,"table":[...],
 *    "simulation":{...}}
 * where null stands for infinite or "none" (a thread count beyond WEFT_QUEUE_THREADS_MAX).
 * Exit status: 0; 1 if the computation fails (out of memory); 2 for bad usage, with one line on
 * stderr naming the problem.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *const CMD = "sim";

/* The weft command does not link libm: the few helpers it needs. */
static double absd(double x)
{
	return x < 0 ? -x : x;
}

static double mind(double x, double y)
{
	return x < y ? x : y;
}

/* Rows of the thread-count table at most (the middle of a long range is elided). */
#define TABLE_MAX 12

static void help(void)
{
	printf("usage: weft sim --arrival-rate R --service-time T --threads N [options]\n\n"
	       "The queue forecast of a pool of N threads fed R tasks a second that take T each,\n"
	       "without running anything: rho = R*T/N (stable iff < 1), the queue's growth, the\n"
	       "backlog and the wait after an hour, the smallest stable pool and the pools that "
	       "meet\n"
	       "a wait target (Erlang C with the Allen-Cunneen correction for variability).\n\n"
	       "  --arrival-rate R   tasks per second (> 0); also R/s, R/min, R/h\n"
	       "  --service-time T   mean time a task takes on one thread (> 0); seconds, or with "
	       "a\n"
	       "                     unit: ns, us, ms, s, min, h (150ms)\n"
	       "  --threads N        threads in the pool (1 .. 1000000)\n"
	       "  --wait-target T    the queue wait to size for (default: 10 %% of the service "
	       "time)\n"
	       "  --arrival-cv2 X    squared coefficient of variation of inter-arrival times\n"
	       "                     (default 1: Poisson arrivals; 0: evenly spaced)\n"
	       "  --service-cv2 X    the same of service times (default 1: exponential; 0: fixed)\n"
	       "  --cpu-fraction F   share of a task's time spent on CPU (0 < F <= 1): CPU-bound\n"
	       "                     work gets no faster past cpus/F threads\n"
	       "  --cpus N           CPUs available (default with --cpu-fraction: this machine's\n"
	       "                     budget, as `weft cpus` reports it)\n"
	       "  --queue-max N      the queue's bound in tasks (default: unbounded)\n"
	       "  --backlog N        tasks queued now (default 0)\n"
	       "  --json             print one JSON object (null: infinite, or none)\n\n"
	       "  --simulate         also run a discrete-event simulation of the queue (FIFO)\n"
	       "  --arrival D        inter-arrival distribution: exp, det, or cv=X (default exp,\n"
	       "                     or what --arrival-cv2 gives)\n"
	       "  --service D        service time distribution, the same way\n"
	       "  --tasks N          arrivals to simulate (default 200000, at most 10000000)\n"
	       "  --seed N           the generator's seed (default 1)\n\n"
	       "example (the article's case: 2 tasks/s of 1.5 s each on 2 threads never catch "
	       "up):\n"
	       "  weft sim --arrival-rate 2 --service-time 1.5 --threads 2\n");
}

/* ------------------------------------------------------------------------------------------------
 * Parsing values: each returns 0 or a usage error already reported (exit status 2).
 */

/* A finite number filling [s, end) exactly; the unit suffix, if any, starts at *ret_end. */
static bool number_prefix(const char *s, double *ret, const char **ret_end)
{
	if (!s[0] || s[0] == ' ' || s[0] == '\t' || s[0] == '\n')
		return false;
	int saved = errno;
	char *end;
	double v = strtod(s, &end);
	errno = saved;
	if (end == s || !isfinite(v))
		return false;
	*ret = v;
	*ret_end = end;
	return true;
}

struct unit {
	const char *name;
	double scale;
};

static int parse_with_unit(const char *opt, const char *s, const struct unit *units, double *ret)
{
	double v;
	const char *end;
	if (!number_prefix(s, &v, &end))
		return cli_usage_error(CMD, "%s '%s': not a number", opt, s);
	if (*end) {
		const struct unit *u = units;
		while (u->name && strcmp(u->name, end) != 0)
			u++;
		if (!u->name)
			return cli_usage_error(CMD, "%s '%s': unknown unit '%s'", opt, s, end);
		v *= u->scale;
	}
	*ret = v;
	return 0;
}

static const struct unit RATE_UNITS[] = {{"/s", 1}, {"/min", 1.0 / 60}, {"/h", 1.0 / 3600}, {0}};
static const struct unit TIME_UNITS[] = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1},
                                         {"min", 60},  {"h", 3600},  {0}};
static const struct unit NO_UNITS[] = {{0}};

/* A number with `units`, > 0 (or >= 0 with `zero_ok`) and finite after scaling. */
static int parse_positive(const char *opt, const char *s, const struct unit *units, bool zero_ok,
                          double *ret)
{
	double v = 0;
	if (parse_with_unit(opt, s, units, &v))
		return 2;
	if (!isfinite(v) || v < 0 || (v == 0 && !zero_ok))
		return cli_usage_error(CMD, "%s %s: must be %s", opt, s,
		                       zero_ok ? "0 or more" : "greater than 0");
	*ret = v;
	return 0;
}

/* A decimal integer in [lo, hi]. */
static int parse_uint(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *ret)
{
	bool digits = s[0] != '\0';
	for (const char *p = s; *p; p++)
		digits = digits && *p >= '0' && *p <= '9';
	if (!digits) {
		double v;
		const char *end;
		if (number_prefix(s, &v, &end) && !*end)
			return cli_usage_error(
			        CMD, "%s %s: must be a whole number from %" PRIu64 " to %" PRIu64,
			        opt, s, lo, hi);
		return cli_usage_error(CMD, "%s '%s': not a number", opt, s);
	}
	int saved = errno;
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	bool overflow = errno == ERANGE;
	errno = saved;
	if (overflow || v < lo || v > hi)
		return cli_usage_error(CMD,
		                       "%s %s: must be a whole number from %" PRIu64 " to %" PRIu64,
		                       opt, s, lo, hi);
	*ret = v;
	return 0;
}

/* exp | det | cv=X -> cv2. */
static int parse_dist(const char *opt, const char *s, double *ret_cv2)
{
	if (strcmp(s, "exp") == 0) {
		*ret_cv2 = 1;
		return 0;
	}
	if (strcmp(s, "det") == 0) {
		*ret_cv2 = 0;
		return 0;
	}
	if (strncmp(s, "cv=", 3) == 0) {
		double cv;
		const char *end;
		if (!number_prefix(s + 3, &cv, &end) || *end)
			return cli_usage_error(CMD, "%s %s: cv= needs a number", opt, s);
		if (cv < 0 || cv > 100)
			return cli_usage_error(CMD, "%s %s: the cv must be from 0 to 100", opt, s);
		*ret_cv2 = cv * cv;
		return 0;
	}
	return cli_usage_error(CMD, "%s '%s': want exp, det or cv=X", opt, s);
}

/* ------------------------------------------------------------------------------------------------
 * Options.
 */

struct opts {
	weft_queue_model m;
	bool json, simulate;
	bool have_rate, have_service, have_threads, have_target, have_cpus, have_fraction;
	double acv2_flag, scv2_flag; /* from --arrival-cv2 / --service-cv2; NAN if not given */
	double acv2_dist, scv2_dist; /* from --arrival / --service; NAN if not given */
	const char *sim_only;        /* the first --simulate-only option given */
	uint64_t tasks, seed;
	const char *arrival_text, *service_text;
	double cpus_machine; /* > 0 when --cpus defaulted to this machine's budget */
};

enum opt_id {
	O_RATE,
	O_SERVICE,
	O_THREADS,
	O_TARGET,
	O_ACV2,
	O_SCV2,
	O_CPUS,
	O_FRACTION,
	O_QMAX,
	O_BACKLOG,
	O_ARRIVAL,
	O_SERVICE_DIST,
	O_TASKS,
	O_SEED,
	O_JSON,
	O_SIMULATE,
};

static const struct {
	const char *name;
	enum opt_id id;
	bool value;
	bool sim_only;
} OPTIONS[] = {
        {"--arrival-rate", O_RATE, true, false}, {"--service-time", O_SERVICE, true, false},
        {"--threads", O_THREADS, true, false},   {"--wait-target", O_TARGET, true, false},
        {"--arrival-cv2", O_ACV2, true, false},  {"--service-cv2", O_SCV2, true, false},
        {"--cpus", O_CPUS, true, false},         {"--cpu-fraction", O_FRACTION, true, false},
        {"--queue-max", O_QMAX, true, false},    {"--backlog", O_BACKLOG, true, false},
        {"--arrival", O_ARRIVAL, true, true},    {"--service", O_SERVICE_DIST, true, true},
        {"--tasks", O_TASKS, true, true},        {"--seed", O_SEED, true, true},
        {"--json", O_JSON, false, false},        {"--simulate", O_SIMULATE, false, false},
};

static int set_option(struct opts *o, enum opt_id id, const char *opt, const char *v)
{
	uint64_t n;
	switch (id) {
	case O_RATE:
		o->have_rate = true;
		return parse_positive(opt, v, RATE_UNITS, false, &o->m.arrival_rate);
	case O_SERVICE:
		o->have_service = true;
		return parse_positive(opt, v, TIME_UNITS, false, &o->m.service_time);
	case O_THREADS:
		if (parse_uint(opt, v, 1, WEFT_QUEUE_THREADS_MAX, &n))
			return 2;
		o->have_threads = true;
		o->m.threads = (int)n;
		return 0;
	case O_TARGET:
		o->have_target = true;
		return parse_positive(opt, v, TIME_UNITS, false, &o->m.wait_target);
	case O_ACV2: return parse_positive(opt, v, NO_UNITS, true, &o->acv2_flag);
	case O_SCV2: return parse_positive(opt, v, NO_UNITS, true, &o->scv2_flag);
	case O_CPUS:
		o->have_cpus = true;
		return parse_positive(opt, v, NO_UNITS, false, &o->m.cpus);
	case O_FRACTION:
		if (parse_positive(opt, v, NO_UNITS, false, &o->m.cpu_fraction))
			return 2;
		if (o->m.cpu_fraction > 1)
			return cli_usage_error(CMD, "%s %s: must be greater than 0 and at most 1",
			                       opt, v);
		o->have_fraction = true;
		return 0;
	case O_QMAX: return parse_positive(opt, v, NO_UNITS, true, &o->m.queue_max);
	case O_BACKLOG: return parse_positive(opt, v, NO_UNITS, true, &o->m.backlog);
	case O_ARRIVAL: o->arrival_text = v; return parse_dist(opt, v, &o->acv2_dist);
	case O_SERVICE_DIST: o->service_text = v; return parse_dist(opt, v, &o->scv2_dist);
	case O_TASKS: return parse_uint(opt, v, 1, WEFT_QUEUE_SIM_TASKS_MAX, &o->tasks);
	case O_SEED: return parse_uint(opt, v, 0, UINT64_MAX, &o->seed);
	case O_JSON: o->json = true; return 0;
	case O_SIMULATE: o->simulate = true; return 0;
	}
	return 0;
}

/* The variability from the model flag and the distribution option, which must agree. */
static int merge_cv2(const char *flag, double from_flag, const char *dist_opt, const char *dist,
                     double from_dist, double *ret)
{
	if (!isnan(from_flag) && !isnan(from_dist) && absd(from_flag - from_dist) > 1e-12)
		return cli_usage_error(CMD, "%s %s (cv2 %g) contradicts %s %g", dist_opt, dist,
		                       from_dist, flag, from_flag);
	*ret = !isnan(from_dist) ? from_dist : !isnan(from_flag) ? from_flag : 1;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->acv2_flag = o->scv2_flag = o->acv2_dist = o->scv2_dist = NAN;
	o->seed = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			help();
			return -1;
		}
		size_t k = 0, nopts = sizeof(OPTIONS) / sizeof(OPTIONS[0]);
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		while (k < nopts &&
		       !(strlen(OPTIONS[k].name) == len && strncmp(OPTIONS[k].name, a, len) == 0))
			k++;
		if (k == nopts)
			return cli_usage_error(CMD, "unknown option '%s' (see `weft sim --help`)",
			                       a);
		const char *name = OPTIONS[k].name, *v = NULL;
		if (OPTIONS[k].value) {
			if (eq)
				v = eq + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else
				return cli_usage_error(CMD, "%s needs a value", name);
		} else if (eq) {
			return cli_usage_error(CMD, "%s takes no value", name);
		}
		if (OPTIONS[k].sim_only && !o->sim_only)
			o->sim_only = name;
		if (set_option(o, OPTIONS[k].id, name, v))
			return 2;
	}
	if (!o->have_rate)
		return cli_usage_error(CMD, "--arrival-rate is required (tasks per second)");
	if (!o->have_service)
		return cli_usage_error(CMD, "--service-time is required (seconds per task)");
	if (!o->have_threads)
		return cli_usage_error(CMD, "--threads is required");
	if (o->sim_only && !o->simulate)
		return cli_usage_error(CMD, "%s needs --simulate", o->sim_only);
	if (o->have_cpus && !o->have_fraction)
		return cli_usage_error(CMD, "--cpus needs --cpu-fraction (the share of a task's "
		                            "time on CPU)");
	if (merge_cv2("--arrival-cv2", o->acv2_flag, "--arrival", o->arrival_text, o->acv2_dist,
	              &o->m.arrival_cv2) ||
	    merge_cv2("--service-cv2", o->scv2_flag, "--service", o->service_text, o->scv2_dist,
	              &o->m.service_cv2))
		return 2;
	if (o->simulate) {
		if (o->m.arrival_rate < 1e-9 || o->m.arrival_rate > 1e9)
			return cli_usage_error(CMD, "--simulate needs an arrival rate from 1e-9 to "
			                            "1e9 tasks/s");
		if (o->m.service_time < 1e-9 || o->m.service_time > 1e9)
			return cli_usage_error(
			        CMD, "--simulate needs a service time from 1 ns to 1e9 s");
		if (o->m.arrival_cv2 > 1e4 || o->m.service_cv2 > 1e4)
			return cli_usage_error(CMD,
			                       "--simulate needs variabilities (cv2) of at most "
			                       "10000");
		if (!o->tasks)
			o->tasks = WEFT_QUEUE_SIM_TASKS_DEFAULT;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Output.
 */

/* A duration for people: "0 s", "764 ms", "1.5 s", "1800 s (30 min)", "forever". */
static const char *dur(double s, char *buf, size_t n)
{
	if (!isfinite(s))
		snprintf(buf, n, "forever");
	else if (s == 0)
		snprintf(buf, n, "0 s");
	else if (s < 1e-6)
		snprintf(buf, n, "%.3g ns", s * 1e9);
	else if (s < 1e-3)
		snprintf(buf, n, "%.3g us", s * 1e6);
	else if (s < 1)
		snprintf(buf, n, "%.3g ms", s * 1e3);
	else if (s < 120)
		snprintf(buf, n, "%.3g s", s);
	else if (s < 7200)
		snprintf(buf, n, "%.6g s (%.3g min)", s, s / 60);
	else if (s < 172800)
		snprintf(buf, n, "%.6g s (%.3g h)", s, s / 3600);
	else if (s < 3 * 365.25 * 86400)
		snprintf(buf, n, "%.6g s (%.3g days)", s, s / 86400);
	else
		snprintf(buf, n, "%.6g s (%.3g years)", s, s / (365.25 * 86400));
	return buf;
}

/* A figure for the simulation table: 4 significant digits, "unbounded" for infinity. */
static const char *num(double v, char buf[64])
{
	if (isfinite(v))
		snprintf(buf, 64, "%.4g", v);
	else
		snprintf(buf, 64, "unbounded");
	return buf;
}

static const char *dist_name(double cv2, char *buf, size_t n)
{
	if (cv2 < 1e-12)
		snprintf(buf, n, "deterministic");
	else if (absd(cv2 - 1) <= 1e-12)
		snprintf(buf, n, "exponential");
	else
		snprintf(buf, n, "%s (cv2 %.3g)", cv2 < 1 ? "gamma" : "hyperexponential", cv2);
	return buf;
}

/* The rows of the table: thread counts from min_stable_threads to threads_for_target + 1 (or 4
 * rows when no count meets the target), a long range elided in the middle. */
static size_t table_rows(const weft_queue_forecast *f, int rows[TABLE_MAX])
{
	if (f->min_stable_threads < 1)
		return 0;
	int lo = f->min_stable_threads;
	int hi = f->threads_for_target > 0 ? f->threads_for_target + 1 : lo + 3;
	if (hi > WEFT_QUEUE_THREADS_MAX)
		hi = WEFT_QUEUE_THREADS_MAX;
	size_t n = 0;
	if (hi - lo + 1 <= TABLE_MAX) {
		for (int c = lo; c <= hi; c++)
			rows[n++] = c;
	} else {
		for (int c = lo; c < lo + TABLE_MAX / 2; c++)
			rows[n++] = c;
		rows[n++] = -1; /* "..." */
		for (int c = hi - (TABLE_MAX / 2 - 2); c <= hi; c++)
			rows[n++] = c;
	}
	return n;
}

static int row_forecast(const struct opts *o, int c, weft_queue_forecast *ret)
{
	weft_queue_model m = o->m;
	m.threads = c;
	m.cpus = 0; /* sizing assumes a CPU for every thread; the budget is judged apart */
	m.cpu_fraction = 0;
	return weft_queue_forecast_compute(&m, ret);
}

static void print_human(const struct opts *o, const weft_queue_forecast *f)
{
	const weft_queue_model *m = &o->m;
	char b1[64], b2[64];
	int c = m->threads;
	printf("queue: %.10g tasks/s arrive, each takes %s on a thread, %d thread%s\n",
	       m->arrival_rate, dur(m->service_time, b1, sizeof(b1)), c, c == 1 ? "" : "s");
	if (f->effective_threads < c) {
		printf("  offered load a = lambda * S = %.10g (threads kept busy); rho = a / %.4g "
		       "= "
		       "%.10g\n",
		       f->offered_load, f->effective_threads, f->rho);
		printf("  only %.4g of the %d threads add throughput: the CPUs bind (cpus / "
		       "cpu-fraction = %.4g)\n",
		       f->effective_threads, c, f->cpu_bound_limit);
	} else {
		printf("  offered load a = lambda * S = %.10g (threads kept busy); rho = a / c = "
		       "%.10g\n",
		       f->offered_load, f->rho);
	}

	if (!f->stable && f->rho == 1) {
		printf("UNSTABLE: rho = 1, the threads keep up only on average, so the queue never "
		       "settles: it wanders without bound\n");
		if (m->arrival_cv2 == 0 && m->service_cv2 == 0)
			printf("  (with no variability at all it keeps up exactly, with no "
			       "margin)\n");
	} else if (!f->stable) {
		printf("UNSTABLE: %.6g tasks/s arrive, the threads finish %.3g/s at most\n",
		       m->arrival_rate, f->effective_threads / m->service_time);
		printf("  the queue grows by %.3g tasks/s, without bound\n", f->growth_per_s);
	} else {
		printf("stable: rho %.10g < 1; a task waits with probability %.3g, on average %s\n",
		       f->rho, f->p_wait, dur(f->wait_s, b1, sizeof(b1)));
		printf("  (Erlang C for M/M/c, times (ca2 + cs2) / 2 = %.3g for the variability)\n",
		       (m->arrival_cv2 + m->service_cv2) / 2);
	}
	if (m->backlog > 0) {
		printf("  now %.6g tasks are queued: a task submitted now waits %s", m->backlog,
		       dur(f->wait_now_s, b1, sizeof(b1)));
		if (f->stable)
			printf("; the backlog drains in %s", dur(f->drain_s, b2, sizeof(b2)));
		printf("\n");
	}
	printf("  after 1 hour: %.6g tasks queued, a task arriving then waits %s\n",
	       f->backlog_after_1h, dur(f->wait_after_1h_s, b1, sizeof(b1)));
	if (m->queue_max > 0) {
		if (f->time_to_full_s == 0)
			printf("  the queue is full (%.6g tasks)\n", m->queue_max);
		else if (isfinite(f->time_to_full_s))
			printf("  the queue (%.6g tasks) is full in %s\n", m->queue_max,
			       dur(f->time_to_full_s, b1, sizeof(b1)));
		else
			printf("  the queue (%.6g tasks) never fills\n", m->queue_max);
	}

	printf("sizing (with a CPU for every thread):\n");
	if (f->min_stable_threads < 0) {
		printf("  no pool of up to %d threads is stable\n", WEFT_QUEUE_THREADS_MAX);
	} else {
		printf("  the smallest stable pool: %d thread%s\n", f->min_stable_threads,
		       f->min_stable_threads == 1 ? "" : "s");
		printf("  to wait at most %s%s: ", dur(f->wait_target_s, b1, sizeof(b1)),
		       o->have_target ? "" : " (10 % of the service time)");
		if (f->threads_for_target < 0)
			printf("no pool of up to %d threads\n", WEFT_QUEUE_THREADS_MAX);
		else
			printf("%d thread%s\n", f->threads_for_target,
			       f->threads_for_target == 1 ? "" : "s");
	}
	int rows[TABLE_MAX];
	size_t n = table_rows(f, rows);
	if (n) {
		printf("  %7s  %7s  %7s  %s\n", "threads", "rho", "P(wait)", "mean wait");
		for (size_t i = 0; i < n; i++) {
			weft_queue_forecast r;
			if (rows[i] < 0 || row_forecast(o, rows[i], &r) < 0) {
				printf("  %7s\n", "...");
				continue;
			}
			const char *mark = rows[i] == f->threads_for_target
			                           ? "  <- meets the target"
			                   : rows[i] == c ? "  <- now"
			                                  : "";
			printf("  %7d  %7.4g  %7.3g  %s%s\n", rows[i], r.rho, r.p_wait,
			       dur(r.wait_s, b1, sizeof(b1)), mark);
		}
	}

	if (!o->have_fraction) {
		printf("CPU budget: not considered (give --cpu-fraction, the share of a task's "
		       "time "
		       "on CPU)\n");
		return;
	}
	printf("CPU budget: %.4g CPU%s%s, tasks on CPU %.3g %% of their time: at most %.4g threads "
	       "add throughput\n",
	       m->cpus, m->cpus == 1 ? "" : "s", o->cpus_machine > 0 ? " (this machine's)" : "",
	       m->cpu_fraction * 100, f->cpu_bound_limit);
	double needs = f->offered_load * m->cpu_fraction;
	if (f->offered_load >= f->cpu_bound_limit)
		printf("  the load needs %.4g CPUs, more than there are: no thread count keeps up "
		       "(more CPUs or shorter tasks would)\n",
		       needs);
	else if (f->threads_for_target < 0)
		printf("  the load needs %.4g CPUs; no pool meets the wait target\n", needs);
	else if (f->budget_allows)
		printf("  the load needs %.4g CPUs; %d threads fit in the budget\n", needs,
		       f->threads_for_target);
	else
		printf("  the load needs %.4g CPUs; %d threads do NOT fit: past %.4g threads "
		       "CPU-bound work gets no faster (more CPUs or shorter tasks would help)\n",
		       needs, f->threads_for_target, f->cpu_bound_limit);
}

static void json_key(const char *k, bool first)
{
	printf("%s", first ? "" : ",");
	json_str(stdout, k);
	putchar(':');
}

static void json_kv(const char *k, double v)
{
	json_key(k, false);
	json_num(stdout, v);
}

static void json_kb(const char *k, bool v)
{
	json_key(k, false);
	printf("%s", v ? "true" : "false");
}

/* A thread count; -1 ("none within the cap") is null. */
static void json_kc(const char *k, int v)
{
	json_kv(k, v < 0 ? INFINITY : v);
}

static void print_json(const struct opts *o, const weft_queue_forecast *f)
{
	const weft_queue_model *m = &o->m;
	json_key("arrival_rate", true);
	json_num(stdout, m->arrival_rate);
	json_kv("service_time", m->service_time);
	json_kv("threads", m->threads);
	json_kv("arrival_cv2", m->arrival_cv2);
	json_kv("service_cv2", m->service_cv2);
	json_kv("offered_load", f->offered_load);
	json_kv("effective_threads", f->effective_threads);
	json_kv("rho", f->rho);
	json_kb("stable", f->stable);
	json_kv("growth_per_s", f->growth_per_s);
	json_kv("p_wait", f->p_wait);
	json_kv("wait_s", f->wait_s);
	json_kv("wait_target_s", f->wait_target_s);
	json_kv("backlog", m->backlog);
	json_kv("wait_now_s", f->wait_now_s);
	json_kv("backlog_after_1h", f->backlog_after_1h);
	json_kv("wait_after_1h_s", f->wait_after_1h_s);
	json_kv("queue_max", m->queue_max > 0 ? m->queue_max : INFINITY);
	json_kv("time_to_full_s", f->time_to_full_s);
	json_kv("drain_s", f->drain_s);
	json_kc("min_stable_threads", f->min_stable_threads);
	json_kc("threads_for_target", f->threads_for_target);
	json_kv("cpus", o->have_fraction ? m->cpus : INFINITY);
	json_kv("cpu_fraction", m->cpu_fraction);
	json_kv("cpu_bound_limit", f->cpu_bound_limit);
	json_kb("budget_allows", f->budget_allows);
	json_key("table", false);
	putchar('[');
	int rows[TABLE_MAX];
	size_t n = table_rows(f, rows);
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		weft_queue_forecast r;
		if (rows[i] < 0 || row_forecast(o, rows[i], &r) < 0)
			continue;
		printf("%s{", first ? "" : ",");
		first = false;
		json_key("threads", true);
		json_num(stdout, rows[i]);
		json_kv("rho", r.rho);
		json_kv("p_wait", r.p_wait);
		json_kv("wait_s", r.wait_s);
		putchar('}');
	}
	putchar(']');
}

static void print_sim_human(const struct opts *o, const weft_queue_forecast *f,
                            const weft_queue_sim_result *s)
{
	const weft_queue_model *m = &o->m;
	char b1[64], b2[64], d1[64], d2[64];
	printf("simulation: %" PRIu64 " tasks, %d thread%s, FIFO, %s arrivals, %s service, seed "
	       "%" PRIu64 ", %s simulated\n",
	       s->arrivals, m->threads, m->threads == 1 ? "" : "s",
	       dist_name(m->arrival_cv2, d1, sizeof(d1)), dist_name(m->service_cv2, d2, sizeof(d2)),
	       o->seed, dur(s->duration_s, b1, sizeof(b1)));
	if (f->effective_threads < m->threads)
		printf("  (the simulation gives every thread a CPU: the CPU budget is not "
		       "simulated)\n");
	double lq = f->stable ? m->arrival_rate * f->wait_s : INFINITY;
	double q_end = f->stable ? lq : f->growth_per_s * s->duration_s; /* it starts empty */
	printf("  %-14s %20s %20s\n", "", "formula", "simulated");
	printf("  %-14s %20s %20s\n", "rho (offered)", num(f->rho, b1), num(s->rho, b2));
	printf("  %-14s %20s %20s\n", "busy fraction", num(mind(f->rho, 1), b1),
	       num(s->busy_fraction, b2));
	printf("  %-14s %20s %20s\n", "throughput /s",
	       num(mind(m->arrival_rate, f->effective_threads / m->service_time), b1),
	       num(s->throughput, b2));
	printf("  %-14s %20s %20s\n", "P(wait)", num(f->p_wait, b1), num(s->p_wait, b2));
	printf("  %-14s %20s %20s\n", "mean wait", dur(f->wait_s, b1, sizeof(b1)),
	       dur(s->wait_s, b2, sizeof(b2)));
	printf("  %-14s %20s %20s\n", "p50 wait", "-", dur(s->wait_p50_s, b2, sizeof(b2)));
	printf("  %-14s %20s %20s\n", "p99 wait", "-", dur(s->wait_p99_s, b2, sizeof(b2)));
	printf("  %-14s %20s %20s\n", "mean queue", num(lq, b1), num(s->queue_mean, b2));
	printf("  %-14s %20s %20s\n", "queue at end", num(q_end, b1),
	       num((double)s->queue_final, b2));
	printf("  %-14s %20s %20s\n", "growth /s", num(f->growth_per_s, b1),
	       num(s->growth_per_s, b2));
}

static void print_sim_json(const struct opts *o, const weft_queue_sim_result *s)
{
	json_key("simulation", false);
	putchar('{');
	json_key("tasks", true);
	json_num(stdout, (double)s->arrivals);
	json_kv("seed", (double)o->seed);
	json_kv("started", (double)s->started);
	json_kv("completed", (double)s->completed);
	json_kv("duration_s", s->duration_s);
	json_kv("rho", s->rho);
	json_kv("busy_fraction", s->busy_fraction);
	json_kv("throughput", s->throughput);
	json_kv("p_wait", s->p_wait);
	json_kv("wait_s", s->wait_s);
	json_kv("wait_p50_s", s->wait_p50_s);
	json_kv("wait_p99_s", s->wait_p99_s);
	json_kv("wait_max_s", s->wait_max_s);
	json_kv("queue_mean", s->queue_mean);
	json_kv("queue_final", (double)s->queue_final);
	json_kv("growth_per_s", s->growth_per_s);
	putchar('}');
}

int cmd_sim(int argc, char **argv)
{
	struct opts o;
	int r = parse_args(argc, argv, &o);
	if (r < 0)
		return 0; /* --help */
	if (r)
		return r;
	if (o.have_fraction && !o.have_cpus) {
		double cap;
		int n = weft_cpu_budget(&cap);
		if (n < 0)
			return cli_error(CMD,
			                 "cannot read this machine's CPU budget: %s (give --cpus)",
			                 weft_strerror(n));
		o.m.cpus = o.cpus_machine = cap;
	}

	weft_queue_forecast f;
	r = weft_queue_forecast_compute(&o.m, &f);
	if (r < 0)
		return cli_error(CMD, "the forecast failed: %s", weft_strerror(r));
	weft_queue_sim_result s;
	if (o.simulate) {
		weft_queue_sim sim = {
		        .arrival_rate = o.m.arrival_rate,
		        .service_time = o.m.service_time,
		        .threads = o.m.threads,
		        .arrival_cv2 = o.m.arrival_cv2,
		        .service_cv2 = o.m.service_cv2,
		        .tasks = o.tasks,
		        .seed = o.seed,
		};
		r = weft_queue_simulate(&sim, &s);
		if (r < 0)
			return cli_error(CMD, "the simulation failed: %s", weft_strerror(r));
	}

	if (o.json) {
		putchar('{');
		print_json(&o, &f);
		if (o.simulate)
			print_sim_json(&o, &s);
		printf("}\n");
	} else {
		print_human(&o, &f);
		if (o.simulate)
			print_sim_human(&o, &f, &s);
	}
	if (fflush(stdout) != 0 || ferror(stdout))
		return cli_error(CMD, "writing the output: %s", weft_strerror(errno));
	return 0;
}
