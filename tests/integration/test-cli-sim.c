/* test-cli-sim.c: `weft sim` as a user runs it: the article's example in human text and JSON, a
 * stable case, the CPU budget, --simulate beside the formulas, --help, and every class of bad
 * argument (exit status 2 and exactly one line on stderr naming the problem). */
#include <math.h>
#include <sys/wait.h>

#include "harness.h"

static char *bin(void)
{
	return (char *)th_env_path("WEFT_BIN");
}

/* Run `weft sim ARGS...` (NULL-terminated), expect exit status `want`; returns the output (stdout,
 * and stderr too when `merge`), malloc'd. */
static char *run_sim(int want, bool merge, const char *const *args)
{
	char *argv[64];
	size_t n = 0;
	argv[n++] = bin();
	argv[n++] = "sim";
	for (; *args; args++) {
		if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
			FAIL("too many arguments");
		argv[n++] = (char *)*args;
	}
	argv[n] = NULL;
	char *out = NULL;
	int st = th_run(argv, 60, merge, &out);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != want) {
		char line[1024] = "";
		for (size_t i = 1; i < n; i++)
			snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s", argv[i]);
		FAIL("weft%s: wait status %#x, want exit %d; output:\n%s", line, st, want,
		     out ? out : "");
	}
	return out;
}

#define SIM(want, merge, ...) run_sim((want), (merge), (const char *const[]){__VA_ARGS__, NULL})

/* The value after the first "KEY": in a JSON text (pass a pointer into it to search from there):
 * NAN for null, 1 and 0 for true and false; fails the case if the key is missing. */
static double json_get(const char *json, const char *key)
{
	char pat[128];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	if (!p)
		FAIL("no \"%s\" in:\n%s", key, json);
	p += strlen(pat);
	if (strncmp(p, "null", 4) == 0)
		return NAN;
	if (strncmp(p, "true", 4) == 0)
		return 1;
	if (strncmp(p, "false", 5) == 0)
		return 0;
	char *end;
	double v = strtod(p, &end);
	if (end == p)
		FAIL("\"%s\" is not a number in:\n%s", key, json);
	return v;
}

/* Exactly one line, ending in a newline, starting "weft sim: " and containing `needle`. */
static void expect_usage_error(const char *out, const char *needle)
{
	const char *nl = strchr(out, '\n');
	if (!nl || nl[1] != '\0')
		FAIL("want exactly one line, got:\n%s", out);
	if (strncmp(out, "weft sim: ", 10) != 0)
		FAIL("want \"weft sim: ...\", got:\n%s", out);
	ASSERT_CONTAINS(out, needle);
}

TEST(article_example_human)
{
	char *out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "2");
	ASSERT_CONTAINS(out, "rho = a / c = 1.5\n");
	ASSERT_CONTAINS(out, "UNSTABLE: 2 tasks/s arrive, the threads finish 1.33/s at most\n");
	ASSERT_CONTAINS(out, "the queue grows by 0.667 tasks/s");
	ASSERT_CONTAINS(out, "after 1 hour: 2400 tasks queued, a task arriving then waits 1800 s "
	                     "(30 min)\n");
	ASSERT_CONTAINS(out, "the smallest stable pool: 4 threads\n");
	ASSERT_CONTAINS(out, "to wait at most 150 ms (10 % of the service time): 6 threads\n");
	/* the table: c, rho, P(wait), mean wait, from 4 to 7 threads */
	ASSERT_CONTAINS(out, "        4     0.75    0.509  764 ms\n");
	ASSERT_CONTAINS(out, "        6      0.5   0.0991  49.6 ms  <- meets the target\n");
	ASSERT_CONTAINS(out, "        7   0.4286   0.0376  14.1 ms\n");
	ASSERT_NOT_CONTAINS(out, "        3 ");
	ASSERT_NOT_CONTAINS(out, "        8 ");
	ASSERT_CONTAINS(out, "CPU budget: not considered");
	ASSERT_NOT_CONTAINS(out, "simulation");
	free(out);
}

TEST(article_example_json)
{
	char *out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "2",
	                "--json");
	/* one object on one line */
	ASSERT_TRUE(out[0] == '{');
	ASSERT_TRUE(strchr(out, '\n') == out + strlen(out) - 1);
	ASSERT_TRUE(out[strlen(out) - 2] == '}');
	ASSERT_CONTAINS(out, "\"rho\":1.5,\"stable\":false,\"growth_per_s\":0.6666666666666667,");
	ASSERT_CONTAINS(out, "\"wait_s\":null,");
	ASSERT_CONTAINS(out, "\"min_stable_threads\":4,");
	ASSERT_CONTAINS(out, "\"threads_for_target\":6,");
	/* every number as computed, to the last bit: 2/3 * 3600 is not quite 2400 in doubles */
	ASSERT_CONTAINS(out, "\"backlog_after_1h\":2400.0000000000005,");
	ASSERT_CONTAINS(out, "\"wait_after_1h_s\":1800.0000000000005,");
	ASSERT_CONTAINS(out, "\"time_to_full_s\":null,");
	ASSERT_CONTAINS(out, "\"table\":[{\"threads\":4,\"rho\":0.75,\"p_wait\":0.5094339622641509,"
	                     "\"wait_s\":0.7641509433962264},");
	ASSERT_NEAR(json_get(out, "arrival_rate"), 2, 0);
	ASSERT_NEAR(json_get(out, "service_time"), 1.5, 0);
	ASSERT_NEAR(json_get(out, "threads"), 2, 0);
	ASSERT_NEAR(json_get(out, "offered_load"), 3, 0);
	ASSERT_NEAR(json_get(out, "p_wait"), 1, 0);
	ASSERT_NEAR(json_get(out, "wait_target_s"), 0.15, 1e-12);
	ASSERT_TRUE(isnan(json_get(out, "drain_s")));
	ASSERT_TRUE(isnan(json_get(out, "cpu_bound_limit")));
	ASSERT_NEAR(json_get(out, "budget_allows"), 1, 0);
	ASSERT_NOT_CONTAINS(out, "\"simulation\"");
	free(out);
}

/* JSON numbers are the shortest text that reads back as the same double: inputs with 7 and more
 * significant digits come back exactly (not rounded to 6: 1.234567 is not 1.23457), computed
 * values come back bit for bit, short decimals stay short, integers have no exponent. */
TEST(json_numbers_round_trip)
{
	char *out = SIM(0, false, "--arrival-rate", "1.234567", "--service-time", "0.123456789",
	                "--threads", "3", "--json");
	ASSERT_CONTAINS(out, "{\"arrival_rate\":1.234567,\"service_time\":0.123456789,"
	                     "\"threads\":3,");
	ASSERT_TRUE(json_get(out, "arrival_rate") == 1.234567);
	ASSERT_TRUE(json_get(out, "service_time") == 0.123456789);
	/* a = lambda * S, a product that needs 17 digits, and 10 % of S as the wait target */
	double a = 1.234567 * 0.123456789;
	ASSERT_TRUE(json_get(out, "offered_load") == a);
	ASSERT_TRUE(json_get(out, "rho") == a / 3);
	ASSERT_TRUE(json_get(out, "wait_target_s") == 0.123456789 * 0.1);
	free(out);
	/* Short values stay short; an integral value is an integer; 1/3 needs all 16 digits. */
	out = SIM(0, false, "--arrival-rate", "10", "--service-time", "0.1", "--threads", "3",
	          "--json");
	ASSERT_CONTAINS(out, "\"service_time\":0.1,");
	ASSERT_CONTAINS(out, "\"offered_load\":1,");
	ASSERT_CONTAINS(out, "\"rho\":0.3333333333333333,");
	ASSERT_TRUE(json_get(out, "rho") == 1.0 / 3);
	free(out);
}

TEST(stable_case)
{
	/* 1.4 tasks/s of 1 s on 2 threads: M/M/2 at rho 0.7, Wq = C * S / (c - a) = 0.5765 /
	 * 0.6 = 0.961 s; with fixed service (cs2 0) half that. */
	char *out = SIM(0, false, "--arrival-rate", "1.4", "--service-time", "1", "--threads", "2",
	                "--json");
	ASSERT_NEAR(json_get(out, "rho"), 0.7, 1e-9);
	ASSERT_NEAR(json_get(out, "stable"), 1, 0);
	ASSERT_NEAR(json_get(out, "growth_per_s"), 0, 0);
	ASSERT_NEAR(json_get(out, "wait_s"), 0.576471 / 0.6, 1e-5);
	ASSERT_NEAR(json_get(out, "min_stable_threads"), 2, 0);
	ASSERT_NEAR(json_get(out, "drain_s"), 0, 0);
	free(out);
	out = SIM(0, false, "--arrival-rate", "84/min", "--service-time", "1000ms", "--threads",
	          "2", "--service-cv2", "0", "--json");
	ASSERT_NEAR(json_get(out, "arrival_rate"), 1.4, 1e-12);
	ASSERT_NEAR(json_get(out, "wait_s"), 0.576471 / 0.6 / 2, 1e-5);
	free(out);
	out = SIM(0, false, "--arrival-rate", "1.4", "--service-time", "1", "--threads", "2");
	ASSERT_CONTAINS(out, "stable: rho 0.7 < 1; a task waits with probability 0.576, on "
	                     "average 961 ms\n");
	ASSERT_CONTAINS(out, "  <- now\n");
	free(out);
}

TEST(backlog_queue_max_and_cpu_budget)
{
	char *out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "8",
	                "--cpus", "2", "--cpu-fraction", "1", "--backlog", "100", "--queue-max",
	                "1000", "--wait-target", "50ms", "--json");
	ASSERT_NEAR(json_get(out, "effective_threads"), 2, 0);
	ASSERT_NEAR(json_get(out, "rho"), 1.5, 1e-9);
	ASSERT_NEAR(json_get(out, "time_to_full_s"), 1350, 1e-3);
	ASSERT_NEAR(json_get(out, "wait_now_s"), 75, 1e-9);
	ASSERT_NEAR(json_get(out, "wait_target_s"), 0.05, 1e-12);
	ASSERT_NEAR(json_get(out, "cpu_bound_limit"), 2, 0);
	ASSERT_NEAR(json_get(out, "budget_allows"), 0, 0);
	free(out);
	out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "8",
	          "--cpus", "2", "--cpu-fraction", "1");
	ASSERT_CONTAINS(out, "only 2 of the 8 threads add throughput");
	ASSERT_CONTAINS(out, "the load needs 3 CPUs, more than there are");
	free(out);
	out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "8",
	          "--cpus", "4", "--cpu-fraction", "0.1");
	ASSERT_CONTAINS(out, "at most 40 threads add throughput");
	ASSERT_CONTAINS(out, "6 threads fit in the budget");
	free(out);
	/* --cpu-fraction alone takes this machine's budget */
	out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "2",
	          "--cpu-fraction", "0.5");
	ASSERT_CONTAINS(out, "(this machine's)");
	free(out);
}

TEST_TIMEOUT(simulate_beside_the_formulas, 60)
{
	/* The article's case: the simulated growth and rho near the formula's. */
	char *out = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "2",
	                "--simulate", "--json");
	const char *sim = strstr(out, "\"simulation\":{");
	ASSERT_NOT_NULL(sim);
	ASSERT_NEAR(json_get(sim, "tasks"), 200000, 0);
	ASSERT_NEAR(json_get(sim, "seed"), 1, 0);
	double g = json_get(sim, "growth_per_s");
	ASSERT_TRUE(fabs(g - 2.0 / 3) < 0.03);
	ASSERT_TRUE(fabs(json_get(sim, "rho") - 1.5) < 0.03);
	ASSERT_TRUE(json_get(sim, "busy_fraction") > 0.99);
	free(out);

	/* A stable M/M/2: the simulated mean wait within 10 % of Erlang C's. */
	out = SIM(0, false, "--arrival-rate", "1.4", "--service-time", "1", "--threads", "2",
	          "--simulate", "--tasks", "300000", "--seed", "3", "--json");
	double w = json_get(out, "wait_s");
	sim = strstr(out, "\"simulation\":{");
	ASSERT_NOT_NULL(sim);
	ASSERT_NEAR(json_get(sim, "tasks"), 300000, 0);
	ASSERT_TRUE(fabs(json_get(sim, "wait_s") - w) < 0.1 * w);
	ASSERT_TRUE(fabs(json_get(sim, "p_wait") - json_get(out, "p_wait")) < 0.05);
	free(out);

	/* Human: the table with both columns. */
	out = SIM(0, false, "--arrival-rate", "1.4", "--service-time", "1", "--threads", "2",
	          "--simulate", "--service", "det", "--arrival", "cv=1", "--tasks", "20000");
	ASSERT_CONTAINS(out, "simulation: 20000 tasks, 2 threads, FIFO, exponential arrivals, "
	                     "deterministic service, seed 1,");
	ASSERT_CONTAINS(out, "formula            simulated\n");
	ASSERT_CONTAINS(out, "  rho (offered)                   0.7");
	ASSERT_CONTAINS(out, "  p99 wait ");
	ASSERT_CONTAINS(out, "  growth /s                         0");
	/* --service det is the formula's cs2 = 0 too: M/D/2 waits half of M/M/2 */
	ASSERT_CONTAINS(out, "on average 480 ms\n");
	free(out);

	/* The same seed gives the same run. */
	char *a = SIM(0, false, "--arrival-rate", "1.8", "--service-time", "1", "--threads", "2",
	              "--simulate", "--tasks", "5000", "--seed", "77", "--json");
	char *b = SIM(0, false, "--arrival-rate", "1.8", "--service-time", "1", "--threads", "2",
	              "--simulate", "--tasks", "5000", "--seed", "77", "--json");
	ASSERT_STR_EQ(a, b);
	free(a);
	free(b);
}

TEST(help)
{
	char *out = SIM(0, false, "--help");
	ASSERT_CONTAINS(out, "usage: weft sim --arrival-rate R --service-time T --threads N");
	ASSERT_CONTAINS(out, "--simulate");
	ASSERT_CONTAINS(out, "--wait-target");
	free(out);
	char *argv[] = {bin(), "help", "sim", NULL};
	int st = th_run(argv, 30, false, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, "usage: weft sim");
	free(out);
}

TEST(bad_arguments)
{
	const struct {
		const char *args[12];
		const char *needle;
	} cases[] = {
	        /* missing value */
	        {{"--arrival-rate"}, "--arrival-rate needs a value"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads"},
	         "--threads needs a value"},
	        /* not a number */
	        {{"--arrival-rate", "two", "--service-time", "1", "--threads", "2"},
	         "--arrival-rate 'two': not a number"},
	        {{"--arrival-rate", "2", "--service-time", "1.5x", "--threads", "2"},
	         "unknown unit 'x'"},
	        {{"--arrival-rate", "nan", "--service-time", "1", "--threads", "2"},
	         "not a number"},
	        {{"--arrival-rate", "2", "--service-time", "inf", "--threads", "2"},
	         "not a number"},
	        {{"--arrival-rate", "", "--service-time", "1", "--threads", "2"}, "not a number"},
	        /* negative or zero */
	        {{"--arrival-rate", "-2", "--service-time", "1", "--threads", "2"},
	         "--arrival-rate -2: must be greater than 0"},
	        {{"--arrival-rate", "0", "--service-time", "1", "--threads", "2"},
	         "--arrival-rate 0: must be greater than 0"},
	        {{"--arrival-rate", "2", "--service-time", "0ms", "--threads", "2"},
	         "--service-time 0ms: must be greater than 0"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--backlog",
	          "-1"},
	         "--backlog -1: must be 0 or more"},
	        /* threads */
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "0"},
	         "--threads 0: must be a whole number from 1 to 1000000"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "-3"},
	         "--threads -3: must be a whole number"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2.5"},
	         "--threads 2.5: must be a whole number"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "1000001"},
	         "--threads 1000001: must be a whole number from 1 to 1000000"},
	        /* unknown option */
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--frobnicate"},
	         "unknown option '--frobnicate'"},
	        {{"extra"}, "unknown option 'extra'"},
	        {{"--json=yes", "--arrival-rate", "2"}, "--json takes no value"},
	        /* missing required */
	        {{"--service-time", "1", "--threads", "2"}, "--arrival-rate is required"},
	        {{"--arrival-rate", "2", "--threads", "2"}, "--service-time is required"},
	        {{"--arrival-rate", "2", "--service-time", "1"}, "--threads is required"},
	        /* --simulate options without --simulate */
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--tasks", "10"},
	         "--tasks needs --simulate"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--seed", "4"},
	         "--seed needs --simulate"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--arrival",
	          "det"},
	         "--arrival needs --simulate"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--service",
	          "exp"},
	         "--service needs --simulate"},
	        /* bad simulation values */
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--simulate",
	          "--tasks", "10000001"},
	         "--tasks 10000001: must be a whole number from 1 to 10000000"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--simulate",
	          "--arrival", "poisson"},
	         "want exp, det or cv=X"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--simulate",
	          "--service", "cv=-1"},
	         "the cv must be from 0 to 100"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--simulate",
	          "--service", "det", "--service-cv2", "1"},
	         "contradicts --service-cv2"},
	        {{"--arrival-rate", "1e12", "--service-time", "1", "--threads", "2", "--simulate"},
	         "--simulate needs an arrival rate"},
	        /* the CPU budget */
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--cpu-fraction",
	          "1.5"},
	         "--cpu-fraction 1.5: must be greater than 0 and at most 1"},
	        {{"--arrival-rate", "2", "--service-time", "1", "--threads", "2", "--cpus", "4"},
	         "--cpus needs --cpu-fraction"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = run_sim(2, true, cases[i].args);
		expect_usage_error(out, cases[i].needle);
		free(out);
	}
	/* Nothing on stdout for a usage error. */
	char *out = SIM(2, false, "--arrival-rate", "-1", "--service-time", "1", "--threads", "1");
	ASSERT_STR_EQ(out, "");
	free(out);
}

TEST(value_forms)
{
	/* --opt=value, units, and the same answer as the plain forms. */
	char *a = SIM(0, false, "--arrival-rate=7200/h", "--service-time=1500ms", "--threads=2",
	              "--json");
	char *b = SIM(0, false, "--arrival-rate", "2", "--service-time", "1.5", "--threads", "2",
	              "--json");
	ASSERT_STR_EQ(a, b);
	free(a);
	free(b);
	a = SIM(0, false, "--arrival-rate", "2000", "--service-time", "750us", "--threads", "2",
	        "--wait-target", "0.0001min", "--json");
	ASSERT_NEAR(json_get(a, "rho"), 0.75, 1e-9);
	ASSERT_NEAR(json_get(a, "wait_target_s"), 0.006, 1e-12);
	free(a);
}
