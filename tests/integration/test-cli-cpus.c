/* test-cli-cpus.c: `weft cpus` as a user runs it: under taskset, with --json, with --root on fake
 * cgroup v1 and v2 trees, with WEFT_CPUS, and with bad options and bad values (one line on stderr,
 * exit status 2 for usage, 1 for failures). */
#define _GNU_SOURCE
#include <sched.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static const char *bin(void)
{
	return th_env_path("WEFT_BIN");
}

/* Run argv (NULL-terminated), expect exit status `want`; returns the output (stdout, and stderr
 * too when `merge`), malloc'd. */
static char *run(int want, bool merge, char *const argv[])
{
	char *out = NULL;
	int st = th_run(argv, 30, merge, &out);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != want)
		FAIL("%s %s: wait status %#x, want exit %d; output:\n%s", argv[0],
		     argv[1] ? argv[1] : "", st, want, out ? out : "");
	return out;
}

static int affinity_count(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		FAIL("sched_getaffinity: %s", strerror(errno));
	return CPU_COUNT(&set);
}

/* One line, ending in a newline, that contains each of the NULL-terminated needles. */
static void expect_one_line(const char *out, ...)
{
	const char *nl = strchr(out, '\n');
	if (!nl || nl[1] != '\0')
		FAIL("want exactly one line, got:\n%s", out);
	va_list ap;
	va_start(ap, out);
	for (const char *n; (n = va_arg(ap, const char *));)
		ASSERT_CONTAINS(out, n);
	va_end(ap);
}

static const char MI_BASE[] = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";

static void fake_v1(const char *quota, const char *period)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/proc/self/cgroup", th_tmpdir());
	th_write_file(p, "4:cpu,cpuacct:/svc/web\n");
	snprintf(p, sizeof(p), "%s/proc/self/mountinfo", th_tmpdir());
	char mi[1024];
	snprintf(mi, sizeof(mi),
	         "%s32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:7 - cgroup cgroup "
	         "rw,cpu,cpuacct\n",
	         MI_BASE);
	th_write_file(p, mi);
	snprintf(p, sizeof(p), "%s/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", th_tmpdir());
	th_write_file(p, quota);
	snprintf(p, sizeof(p), "%s/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", th_tmpdir());
	th_write_file(p, period);
}

static void fake_v2(const char *max)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/proc/self/cgroup", th_tmpdir());
	th_write_file(p, "0::/system.slice/db.service\n");
	snprintf(p, sizeof(p), "%s/proc/self/mountinfo", th_tmpdir());
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s30 22 0:27 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n",
	         MI_BASE);
	th_write_file(p, mi);
	snprintf(p, sizeof(p), "%s/sys/fs/cgroup/system.slice/db.service/cpu.max", th_tmpdir());
	th_write_file(p, max);
}

TEST(cli_cpus_taskset_one_cpu)
{
	unsetenv("WEFT_CPUS");
	cpu_set_t set;
	ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
	int first = 0;
	while (!CPU_ISSET(first, &set))
		first++;
	char cpu[16];
	snprintf(cpu, sizeof(cpu), "%d", first);

	char *out =
	        run(0, false, (char *const[]){"taskset", "-c", cpu, (char *)bin(), "cpus", NULL});
	ASSERT_CONTAINS(out, "CPU budget: 1 thread ");
	ASSERT_CONTAINS(out, "affinity         1 CPU   from sched_getaffinity");
	free(out);

	out = run(0, false,
	          (char *const[]){"taskset", "-c", cpu, (char *)bin(), "cpus", "--json", NULL});
	ASSERT_CONTAINS(out, "{\"cpus\":1,\"capacity\":");
	ASSERT_CONTAINS(out, "{\"kind\":\"affinity\",\"cpus\":1,\"source\":\"sched_getaffinity\"");
	free(out);
}

TEST(cli_cpus_json_fields)
{
	unsetenv("WEFT_CPUS");
	/* An empty root: only the affinity mask limits, so the whole object is known. */
	char *out = run(0, false,
	                (char *const[]){(char *)bin(), "cpus", "--json", "--root",
	                                (char *)th_tmpdir(), NULL});
	int n = affinity_count();
	char want[256];
	snprintf(want, sizeof(want),
	         "{\"cpus\":%d,\"capacity\":%d,\"limits\":[{\"kind\":\"affinity\",\"cpus\":%d,"
	         "\"source\":\"sched_getaffinity\",\"binding\":true}]}\n",
	         n, n, n);
	ASSERT_STR_EQ(out, want);
	free(out);

	/* The real system: the same keys, whatever the limits are. */
	out = run(0, false, (char *const[]){(char *)bin(), "cpus", "--json", NULL});
	ASSERT_CONTAINS(out, "{\"cpus\":");
	ASSERT_CONTAINS(out, ",\"capacity\":");
	ASSERT_CONTAINS(out, ",\"limits\":[{\"kind\":\"affinity\",\"cpus\":");
	ASSERT_CONTAINS(out, "\"binding\":true");
	free(out);
}

TEST(cli_cpus_no_cgroup_limit_says_so)
{
	unsetenv("WEFT_CPUS");
	char *out =
	        run(0, false,
	            (char *const[]){(char *)bin(), "cpus", "--root", (char *)th_tmpdir(), NULL});
	ASSERT_CONTAINS(out, "no cgroup CPU quota found");
	ASSERT_CONTAINS(out, "from sched_getaffinity  <- binds");
	free(out);
}

TEST(cli_cpus_root_v1)
{
	unsetenv("WEFT_CPUS");
	fake_v1("25000\n", "100000\n");
	char root[600], src[700];
	snprintf(root, sizeof(root), "--root=%s", th_tmpdir());
	snprintf(src, sizeof(src), "%s/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us",
	         th_tmpdir());

	char *out = run(0, false, (char *const[]){(char *)bin(), "cpus", root, NULL});
	ASSERT_CONTAINS(out, "CPU budget: 1 thread (capacity 0.25 CPUs)");
	char line[800];
	snprintf(line, sizeof(line), "cgroup1       0.25 CPUs  from %s  <- binds\n", src);
	ASSERT_CONTAINS(out, line);
	ASSERT_NOT_CONTAINS(out, "no cgroup CPU quota");
	free(out);

	out = run(0, false, (char *const[]){(char *)bin(), "cpus", "--json", root, NULL});
	snprintf(line, sizeof(line),
	         "{\"kind\":\"cgroup1\",\"cpus\":0.25,\"source\":\"%s\",\"binding\":true}", src);
	ASSERT_CONTAINS(out, "{\"cpus\":1,\"capacity\":0.25,");
	ASSERT_CONTAINS(out, line);
	free(out);
}

TEST(cli_cpus_root_v2)
{
	unsetenv("WEFT_CPUS");
	if (affinity_count() < 2)
		SKIP("needs an affinity mask of at least 2 CPUs to see a 1.5 CPU quota bind");
	fake_v2("150000 100000\n");
	char src[700];
	snprintf(src, sizeof(src), "%s/sys/fs/cgroup/system.slice/db.service/cpu.max", th_tmpdir());

	char *out =
	        run(0, false,
	            (char *const[]){(char *)bin(), "cpus", "--root", (char *)th_tmpdir(), NULL});
	ASSERT_CONTAINS(out, "CPU budget: 1 thread (capacity 1.5 CPUs)");
	char line[800];
	snprintf(line, sizeof(line), "cgroup2        1.5 CPUs  from %s  <- binds\n", src);
	ASSERT_CONTAINS(out, line);
	free(out);

	out = run(0, false,
	          (char *const[]){(char *)bin(), "cpus", "--json", "--root", (char *)th_tmpdir(),
	                          NULL});
	snprintf(line, sizeof(line),
	         "{\"kind\":\"cgroup2\",\"cpus\":1.5,\"source\":\"%s\",\"binding\":true}", src);
	ASSERT_CONTAINS(out, "{\"cpus\":1,\"capacity\":1.5,");
	ASSERT_CONTAINS(out, line);
	free(out);
}

TEST(cli_cpus_override)
{
	unsetenv("WEFT_CPUS");
	char *out =
	        run(0, false, (char *const[]){"env", "WEFT_CPUS=1.5", (char *)bin(), "cpus", NULL});
	ASSERT_CONTAINS(out, "CPU budget: 1 thread (capacity 1.5 CPUs)");
	ASSERT_CONTAINS(out, "override       1.5 CPUs  from WEFT_CPUS=1.5  <- binds\n");
	free(out);

	out = run(0, false,
	          (char *const[]){"env", "WEFT_CPUS=1.5", (char *)bin(), "cpus", "--json", NULL});
	ASSERT_CONTAINS(out, "{\"cpus\":1,\"capacity\":1.5,");
	ASSERT_CONTAINS(out, "{\"kind\":\"override\",\"cpus\":1.5,\"source\":\"WEFT_CPUS=1.5\","
	                     "\"binding\":true}");
	free(out);

	out = run(0, false, (char *const[]){"env", "WEFT_CPUS=12", (char *)bin(), "cpus", NULL});
	ASSERT_CONTAINS(out, "CPU budget: 12 threads (capacity 12 CPUs)");
	free(out);
}

TEST(cli_cpus_bad_usage_exits_2)
{
	unsetenv("WEFT_CPUS");
	char *out = run(2, true, (char *const[]){(char *)bin(), "cpus", "--bogus", NULL});
	expect_one_line(out, "weft cpus: ", "--bogus", NULL);
	free(out);
	out = run(2, true, (char *const[]){(char *)bin(), "cpus", "--root", NULL});
	expect_one_line(out, "weft cpus: ", "--root", NULL);
	free(out);
	out = run(2, true, (char *const[]){(char *)bin(), "cpus", "--root", "relative/dir", NULL});
	expect_one_line(out, "weft cpus: ", "relative/dir", "absolute", NULL);
	free(out);
	out = run(2, true, (char *const[]){(char *)bin(), "cpus", "--json", "extra", NULL});
	expect_one_line(out, "weft cpus: ", "extra", NULL);
	free(out);
}

TEST(cli_cpus_failures_exit_1)
{
	unsetenv("WEFT_CPUS");
	const char *bad[] = {"abc", "0", "-2", "", "inf", "1.5x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char env[64], want[128];
		snprintf(env, sizeof(env), "WEFT_CPUS=%s", bad[i]);
		snprintf(want, sizeof(want), "weft cpus: WEFT_CPUS=%s is not a positive number\n",
		         bad[i]);
		char *out = run(1, true, (char *const[]){"env", env, (char *)bin(), "cpus", NULL});
		ASSERT_STR_EQ(out, want);
		free(out);
	}

	char *out = run(
	        1, true,
	        (char *const[]){(char *)bin(), "cpus", "--root", "/nonexistent/weft-root", NULL});
	expect_one_line(out, "weft cpus: ", "/nonexistent/weft-root", NULL);
	free(out);

	/* A cgroup file that cannot be parsed. */
	fake_v1("lots\n", "100000\n");
	out = run(1, true,
	          (char *const[]){(char *)bin(), "cpus", "--root", (char *)th_tmpdir(), NULL});
	expect_one_line(out, "weft cpus: ", "cannot be parsed", NULL);
	free(out);
}

TEST(cli_cpus_help)
{
	char *out = run(0, false, (char *const[]){(char *)bin(), "cpus", "--help", NULL});
	ASSERT_CONTAINS(out, "usage: weft cpus [--json] [--root DIR]");
	ASSERT_CONTAINS(out, "WEFT_CPUS");
	free(out);
	out = run(0, false, (char *const[]){(char *)bin(), "help", "cpus", NULL});
	ASSERT_CONTAINS(out, "usage: weft cpus");
	free(out);
}
