/* cmd-cpus.c: `weft cpus [--json] [--root DIR]`, the CPU budget and where each limit came from.
 *
 * Human output: the integer budget and the fractional capacity, then one line per limit (kind,
 * CPUs, source, and a mark on the one that binds), and a line saying so when no cgroup quota was
 * found. --json prints one object:
 *   {"cpus":1,"capacity":1.5,"limits":[{"kind":"affinity","cpus":2,"source":"sched_getaffinity",
 *    "binding":false},...]}
 * Exit status: 0, 1 when the budget cannot be read (a bad WEFT_CPUS, an unparseable cgroup file),
 * 2 for bad usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char *const CMD = "cpus";

static void help(void)
{
	printf("usage: weft cpus [--json] [--root DIR]\n\n"
	       "The CPU budget of this process: the affinity mask (sched_getaffinity) intersected\n"
	       "with the cgroup CPU quota (v1 cpu.cfs_quota_us / cpu.cfs_period_us, v2 cpu.max)\n"
	       "of its cgroup and every parent, the tightest winning; WEFT_CPUS overrides them.\n"
	       "The budget is the capacity rounded down (at least 1): a pool that size is never\n"
	       "throttled by the CFS bandwidth controller.\n\n"
	       "  --json       print one JSON object\n"
	       "  --root DIR   read /proc/self/cgroup, mountinfo and the cgroup files under DIR\n"
	       "               (an absolute path) instead of /\n");
}

static void print_json(const weft_cpus *c)
{
	printf("{\"cpus\":%d,\"capacity\":", weft_cpus_count(c));
	json_num(stdout, weft_cpus_capacity(c));
	printf(",\"limits\":[");
	int kind;
	double cpus;
	const char *source;
	bool binding;
	for (size_t i = 0; weft_cpus_limit(c, i, &kind, &cpus, &source, &binding) == 0; i++) {
		printf("%s{\"kind\":", i ? "," : "");
		json_str(stdout, weft_cpu_limit_name(kind));
		printf(",\"cpus\":");
		json_num(stdout, cpus);
		printf(",\"source\":");
		json_str(stdout, source);
		printf(",\"binding\":%s}", binding ? "true" : "false");
	}
	printf("]}\n");
}

static void print_human(const weft_cpus *c)
{
	int n = weft_cpus_count(c);
	double cap = weft_cpus_capacity(c);
	printf("CPU budget: %d thread%s (capacity %.6g CPU%s)\n", n, n == 1 ? "" : "s", cap,
	       cap == 1 ? "" : "s");
	int kind;
	double cpus;
	const char *source;
	bool binding, cgroup = false;
	for (size_t i = 0; weft_cpus_limit(c, i, &kind, &cpus, &source, &binding) == 0; i++) {
		printf("  %-9s %8.6g %-4s  from %s%s\n", weft_cpu_limit_name(kind), cpus,
		       cpus == 1 ? "CPU" : "CPUs", source, binding ? "  <- binds" : "");
		if (kind == WEFT_CPU_LIMIT_CGROUP1 || kind == WEFT_CPU_LIMIT_CGROUP2)
			cgroup = true;
	}
	if (!cgroup)
		printf("  no cgroup CPU quota found (cgroup v1 cpu.cfs_quota_us, v2 cpu.max)\n");
}

int cmd_cpus(int argc, char **argv)
{
	bool json = false;
	const char *root = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			help();
			return 0;
		} else if (strcmp(a, "--json") == 0) {
			json = true;
		} else if (strcmp(a, "--root") == 0) {
			if (i + 1 >= argc)
				return cli_usage_error(CMD, "--root needs a folder");
			root = argv[++i];
		} else if (strncmp(a, "--root=", 7) == 0) {
			root = a + 7;
		} else {
			return cli_usage_error(CMD, "unknown option '%s' (see `weft cpus --help`)",
			                       a);
		}
	}
	if (root) {
		if (root[0] != '/')
			return cli_usage_error(CMD, "--root %s: not an absolute path", root);
		struct stat st;
		if (stat(root, &st) < 0)
			return cli_error(CMD, "--root %s: %s", root, weft_strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return cli_error(CMD, "--root %s: not a folder", root);
	}

	weft_cpus *c;
	int r = weft_cpus_read(&c, root);
	if (r == -ERANGE) {
		const char *env = getenv("WEFT_CPUS");
		return cli_error(CMD, "WEFT_CPUS=%s is not a positive number", env ? env : "");
	}
	if (r == -EIO)
		return cli_error(CMD, "a cgroup file under %s cannot be parsed", root ? root : "/");
	if (r < 0)
		return cli_error(CMD, "cannot read the CPU budget: %s (%s)", weft_strerror(r),
		                 weft_errname(r));
	if (json)
		print_json(c);
	else
		print_human(c);
	weft_cpus_free(c);
	if (fflush(stdout) != 0 || ferror(stdout))
		return cli_error(CMD, "writing the output: %s", weft_strerror(errno));
	return 0;
}
