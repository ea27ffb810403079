/* test-cpus.c: the CPU budget. Fake cgroup trees (v1, v2, hybrid; quotas at the leaf and at
 * parents; escaped mount points; paths outside a mount's root; missing and garbage files) are
 * built under th_tmpdir() and read with it as the root; the affinity mask is compared with
 * sched_getaffinity and narrowed to one CPU; WEFT_CPUS is tried with good and bad values; every
 * allocation and open is made to fail in turn. As root, with the cgroup v1 cpu controller mounted
 * writable, a real cgroup with a 1.5 CPU quota is made and a child is moved into it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal/alloc.h"

/* --- helpers --------------------------------------------------------------------------------- */

/* A path under the case's folder; static storage, one of 8 rotating buffers. */
__attribute__((format(printf, 1, 2))) static const char *P(const char *fmt, ...)
{
	static char bufs[8][2048];
	static int next;
	char *b = bufs[next++ % 8];
	int n = snprintf(b, sizeof(bufs[0]), "%s", th_tmpdir());
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b + n, sizeof(bufs[0]) - (size_t)n, fmt, ap);
	va_end(ap);
	return b;
}

static int affinity_count(void)
{
	for (int n = 1024;; n *= 2) {
		cpu_set_t *set = CPU_ALLOC(n);
		size_t size = CPU_ALLOC_SIZE(n);
		if (sched_getaffinity(0, size, set) == 0) {
			int c = CPU_COUNT_S(size, set);
			CPU_FREE(set);
			return c;
		}
		CPU_FREE(set);
		if (errno != EINVAL || n > (1 << 22))
			FAIL("sched_getaffinity: %s", strerror(errno));
	}
}

static const char MI_BASE[] = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
                              "23 22 0:21 / /proc rw,nosuid - proc proc rw\n";
static const char MI_V1[] = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,"
                            "relatime shared:7 - cgroup cgroup rw,cpu,cpuacct\n";
static const char MI_V2[] = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime "
                            "shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
#define V1 "/sys/fs/cgroup/cpu,cpuacct"
#define V2 "/sys/fs/cgroup"

static void write_proc(const char *cgroup, const char *mountinfo)
{
	th_write_file(P("/proc/self/cgroup"), cgroup);
	th_write_file(P("/proc/self/mountinfo"), mountinfo);
}

static void v1_knobs(const char *dir, const char *quota, const char *period)
{
	if (quota)
		th_write_file(P("%s/cpu.cfs_quota_us", dir), quota);
	if (period)
		th_write_file(P("%s/cpu.cfs_period_us", dir), period);
}

/* Checks that hold for every budget: one binding limit, whose CPUs are the capacity; count is the
 * capacity rounded down, at least 1; without an override, capacity <= every limit. */
static void check_invariants(const weft_cpus *c)
{
	int nbind = 0, kind;
	double cpus, bound = -1;
	bool binding, over = false;
	size_t n = 0;
	for (; weft_cpus_limit(c, n, &kind, &cpus, NULL, &binding) == 0; n++) {
		ASSERT_TRUE(cpus > 0);
		if (binding) {
			nbind++;
			bound = cpus;
		}
		if (kind == WEFT_CPU_LIMIT_OVERRIDE)
			over = true;
	}
	ASSERT_GE(n, 1);
	ASSERT_EQ(nbind, 1);
	double cap = weft_cpus_capacity(c);
	ASSERT_NEAR(cap, bound, 0);
	ASSERT_TRUE(cap > 0);
	int want = (int)floor(cap + 1e-9);
	ASSERT_EQ(weft_cpus_count(c), want < 1 ? 1 : want);
	for (size_t i = 0; !over && weft_cpus_limit(c, i, NULL, &cpus, NULL, NULL) == 0; i++)
		ASSERT_TRUE(cap <= cpus);
}

static weft_cpus *read_ok(const char *root)
{
	weft_cpus *c = NULL;
	ASSERT_OK(weft_cpus_read(&c, root));
	ASSERT_NOT_NULL(c);
	check_invariants(c);
	return c;
}

/* Finds the limit of `kind`; false if there is none. Any ret_ may be NULL. */
static bool find(const weft_cpus *c, int kind, double *ret_cpus, const char **ret_source,
                 bool *ret_binding)
{
	int k;
	for (size_t i = 0; weft_cpus_limit(c, i, &k, NULL, NULL, NULL) == 0; i++)
		if (k == kind)
			return weft_cpus_limit(c, i, NULL, ret_cpus, ret_source, ret_binding) == 0;
	return false;
}

static size_t nlimits(const weft_cpus *c)
{
	size_t n = 0;
	while (weft_cpus_limit(c, n, NULL, NULL, NULL, NULL) == 0)
		n++;
	return n;
}

/* Expect a cgroup limit of `kind` with `cpus` from the file `rel` under the case folder; it binds
 * when it is below the affinity count. */
static void expect_cgroup(const weft_cpus *c, int kind, double want, const char *rel)
{
	double cpus;
	const char *src;
	bool binding;
	if (!find(c, kind, &cpus, &src, &binding))
		FAIL("no %s limit", weft_cpu_limit_name(kind));
	ASSERT_NEAR(cpus, want, 1e-12);
	ASSERT_STR_EQ(src, P("%s", rel));
	double aff = affinity_count();
	double cap = want < aff ? want : aff;
	ASSERT_NEAR(weft_cpus_capacity(c), cap, 1e-12);
	if (want < aff)
		ASSERT_TRUE(binding);
}

static void no_env(void)
{
	unsetenv("WEFT_CPUS");
}

/* --- arguments and names ------------------------------------------------------------------- */

TEST(cpus_argument_validation)
{
	no_env();
	weft_cpus *c = NULL;
	ASSERT_ERR(weft_cpus_read(NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_cpus_read(NULL, "/"), -EINVAL);
	ASSERT_ERR(weft_cpus_read(&c, "relative/path"), -EINVAL);
	ASSERT_ERR(weft_cpus_read(&c, ""), -EINVAL);
	ASSERT_NULL(c);
	ASSERT_EQ(weft_cpus_count(NULL), -EINVAL);
	ASSERT_TRUE(weft_cpus_capacity(NULL) < 0);
	ASSERT_ERR(weft_cpus_limit(NULL, 0, NULL, NULL, NULL, NULL), -EINVAL);
	weft_cpus_free(NULL);

	errno = 1234;
	c = read_ok(th_tmpdir());
	ASSERT_EQ(errno, 1234); /* never set errno */
	ASSERT_OK(weft_cpus_limit(c, 0, NULL, NULL, NULL, NULL));
	size_t n = nlimits(c);
	ASSERT_ERR(weft_cpus_limit(c, n, NULL, NULL, NULL, NULL), -ENOENT);
	ASSERT_ERR(weft_cpus_limit(c, (size_t)-1, NULL, NULL, NULL, NULL), -ENOENT);
	weft_cpus_free(c);
}

TEST(cpus_limit_names)
{
	ASSERT_STR_EQ(weft_cpu_limit_name(WEFT_CPU_LIMIT_AFFINITY), "affinity");
	ASSERT_STR_EQ(weft_cpu_limit_name(WEFT_CPU_LIMIT_CGROUP1), "cgroup1");
	ASSERT_STR_EQ(weft_cpu_limit_name(WEFT_CPU_LIMIT_CGROUP2), "cgroup2");
	ASSERT_STR_EQ(weft_cpu_limit_name(WEFT_CPU_LIMIT_OVERRIDE), "override");
	ASSERT_STR_EQ(weft_cpu_limit_name(0), "unknown");
	ASSERT_STR_EQ(weft_cpu_limit_name(5), "unknown");
	ASSERT_STR_EQ(weft_cpu_limit_name(-1), "unknown");
}

/* --- affinity -------------------------------------------------------------------------------- */

TEST(cpus_affinity_matches_sched_getaffinity)
{
	no_env();
	weft_cpus *c = read_ok(th_tmpdir()); /* an empty root: no cgroup files at all */
	int kind;
	double cpus;
	const char *src;
	bool binding;
	ASSERT_EQ(nlimits(c), 1);
	ASSERT_OK(weft_cpus_limit(c, 0, &kind, &cpus, &src, &binding));
	ASSERT_EQ(kind, WEFT_CPU_LIMIT_AFFINITY);
	ASSERT_NEAR(cpus, affinity_count(), 0);
	ASSERT_STR_EQ(src, "sched_getaffinity");
	ASSERT_TRUE(binding);
	ASSERT_EQ(weft_cpus_count(c), affinity_count());
	ASSERT_NEAR(weft_cpus_capacity(c), affinity_count(), 0);
	weft_cpus_free(c);
}

TEST(cpus_real_system_is_consistent)
{
	no_env();
	weft_cpus *c = read_ok(NULL);
	double aff;
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_AFFINITY, &aff, NULL, NULL));
	ASSERT_NEAR(aff, affinity_count(), 0);
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_OVERRIDE, NULL, NULL, NULL));
	double cap = -1;
	int n = weft_cpu_budget(&cap);
	ASSERT_EQ(n, weft_cpus_count(c));
	ASSERT_NEAR(cap, weft_cpus_capacity(c), 0);
	ASSERT_EQ(weft_cpu_budget(NULL), n);
	/* A cgroup limit on the real system names a real file. */
	const char *src;
	if (find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, &src, NULL))
		ASSERT_EQ(access(src, R_OK), 0);
	if (find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, &src, NULL))
		ASSERT_EQ(access(src, R_OK), 0);
	weft_cpus_free(c);
}

TEST(cpus_affinity_one_cpu)
{
	no_env();
	if (affinity_count() < 2)
		SKIP("the affinity mask already has one CPU");
	/* The case runs in a process of its own: narrowing its mask touches nothing else. */
	cpu_set_t set;
	ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
	int first = 0;
	while (!CPU_ISSET(first, &set))
		first++;
	CPU_ZERO(&set);
	CPU_SET(first, &set);
	ASSERT_EQ(sched_setaffinity(0, sizeof(set), &set), 0);
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_EQ(weft_cpus_count(c), 1);
	ASSERT_NEAR(weft_cpus_capacity(c), 1, 0);
	double cpus;
	bool binding;
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_AFFINITY, &cpus, NULL, &binding));
	ASSERT_NEAR(cpus, 1, 0);
	ASSERT_TRUE(binding);
	weft_cpus_free(c);
	ASSERT_EQ(weft_cpu_budget(NULL), 1);
}

/* --- cgroup v1 ------------------------------------------------------------------------------- */

TEST(cpus_v1_quota_at_leaf)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("5:memory:/m\n4:cpu,cpuacct:/a/b\n1:name=systemd:/s\n", mi);
	v1_knobs(V1 "/a/b", "50000\n", "100000\n");
	v1_knobs(V1 "/a", "-1\n", "100000\n");
	v1_knobs(V1, "-1\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.5, V1 "/a/b/cpu.cfs_quota_us");
	ASSERT_EQ(weft_cpus_count(c), 1);
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, NULL));
	ASSERT_EQ(nlimits(c), 2);
	weft_cpus_free(c);

	/* The root given with a trailing slash reads the same files. */
	c = read_ok(P("/"));
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.5, V1 "/a/b/cpu.cfs_quota_us");
	weft_cpus_free(c);
}

TEST(cpus_v1_parent_tighter_than_leaf)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/a/b/c\n", mi);
	v1_knobs(V1 "/a/b/c", "300000\n", "100000\n"); /* 3 */
	v1_knobs(V1 "/a/b", "-1\n", "100000\n");
	v1_knobs(V1 "/a", "25000\n", "100000\n"); /* 0.25: binds */
	v1_knobs(V1, "50000\n", "50000\n");       /* 1 at the mount point: read too */
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.25, V1 "/a/cpu.cfs_quota_us");
	weft_cpus_free(c);

	/* The mount point's own limit when it is the tightest. */
	v1_knobs(V1, "10000\n", "100000\n");
	c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.1, V1 "/cpu.cfs_quota_us");
	weft_cpus_free(c);
}

TEST(cpus_v1_fraction_rounds_down)
{
	no_env();
	if (affinity_count() < 2)
		SKIP("needs an affinity mask of at least 2 CPUs to see 1.5 bind");
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/svc\n", mi);
	v1_knobs(V1 "/svc", "150000\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 1.5, V1 "/svc/cpu.cfs_quota_us");
	ASSERT_EQ(weft_cpus_count(c), 1);
	weft_cpus_free(c);
}

TEST(cpus_v1_unlimited_and_missing)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/a/b\n", mi);
	v1_knobs(V1 "/a/b", "-1\n", "100000\n");
	v1_knobs(V1 "/a", "-1\n", "100000\n");
	/* no files at the mount point */
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, NULL));
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);

	/* A quota without its period file: no limit at that level. */
	th_write_file(P(V1 "/a/cpu.cfs_quota_us"), "10000\n");
	ASSERT_EQ(unlink(P(V1 "/a/cpu.cfs_period_us")), 0);
	c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, NULL));
	weft_cpus_free(c);
}

TEST(cpus_v1_controller_must_be_cpu)
{
	no_env();
	/* cpuacct and cpuset hierarchies with tight-looking files must not be mistaken for cpu. */
	char mi[2048];
	snprintf(mi, sizeof(mi),
	         "%s"
	         "35 31 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
	         "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
	         "34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n",
	         MI_BASE);
	write_proc("3:cpuset:/x\n2:cpuacct:/x\n1:cpu:/y\n", mi);
	v1_knobs("/sys/fs/cgroup/cpuacct/x", "1000\n", "100000\n");
	v1_knobs("/sys/fs/cgroup/cpuset/x", "1000\n", "100000\n");
	v1_knobs("/sys/fs/cgroup/cpuacct/y", "1000\n", "100000\n");
	v1_knobs("/sys/fs/cgroup/cpuset/y", "1000\n", "100000\n");
	v1_knobs("/sys/fs/cgroup/cpu/y", "75000\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.75, "/sys/fs/cgroup/cpu/y/cpu.cfs_quota_us");
	weft_cpus_free(c);

	/* Only a cpuacct line in /proc/self/cgroup: no v1 cpu hierarchy, no limit. */
	write_proc("2:cpuacct:/y\n", mi);
	c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, NULL));
	weft_cpus_free(c);
}

/* --- cgroup v2 ------------------------------------------------------------------------------- */

TEST(cpus_v2_cpu_max)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V2);
	write_proc("0::/user.slice/app.service\n", mi);
	th_write_file(P(V2 "/user.slice/app.service/cpu.max"), "max 100000\n");
	th_write_file(P(V2 "/user.slice/cpu.max"), "50000 100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP2, 0.5, V2 "/user.slice/cpu.max");
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, NULL));
	weft_cpus_free(c);

	/* Leaf tighter than its parent, periods that differ. */
	th_write_file(P(V2 "/user.slice/app.service/cpu.max"), "20000 50000\n"); /* 0.4 */
	c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP2, 0.4, V2 "/user.slice/app.service/cpu.max");
	weft_cpus_free(c);

	/* "max" everywhere, and "max" without a period: no limit. */
	th_write_file(P(V2 "/user.slice/app.service/cpu.max"), "max\n");
	th_write_file(P(V2 "/user.slice/cpu.max"), "max 100000\n");
	c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, NULL));
	weft_cpus_free(c);
}

TEST(cpus_v2_nested_and_root_cgroup)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V2);
	/* The process in the root cgroup: only the mount point is read (where cpu.max is absent on
	 * a real system). */
	write_proc("0::/\n", mi);
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, NULL));
	weft_cpus_free(c);

	/* Five levels; the limit sits in the middle, intermediate levels lack cpu.max. */
	write_proc("0::/a/b/c/d/e\n", mi);
	th_write_file(P(V2 "/a/b/c/d/e/cpu.max"), "max 100000\n");
	th_write_file(P(V2 "/a/b/c/cpu.max"), "70000 100000\n");
	th_write_file(P(V2 "/a/cpu.max"), "90000 100000\n");
	c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP2, 0.7, V2 "/a/b/c/cpu.max");
	weft_cpus_free(c);
}

TEST(cpus_hybrid_v1_and_v2)
{
	no_env();
	char mi[2048];
	snprintf(mi, sizeof(mi),
	         "%s%s41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
	         MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n0::/docker/x\n", mi);
	v1_knobs(V1 "/docker/x", "75000\n", "100000\n");
	th_write_file(P("/sys/fs/cgroup/unified/docker/x/cpu.max"), "50000 100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 3);
	bool b1, b2;
	double c1, c2;
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP1, &c1, NULL, &b1));
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP2, &c2, NULL, &b2));
	ASSERT_NEAR(c1, 0.75, 1e-12);
	ASSERT_FALSE(b1);
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP2, 0.5, "/sys/fs/cgroup/unified/docker/x/cpu.max");
	ASSERT_TRUE(b2);
	weft_cpus_free(c);

	/* A tie binds the first in the order affinity, cgroup1, cgroup2. */
	th_write_file(P("/sys/fs/cgroup/unified/docker/x/cpu.max"), "75000 100000\n");
	c = read_ok(th_tmpdir());
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, &b1));
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, &b2));
	ASSERT_TRUE(b1);
	ASSERT_FALSE(b2);
	weft_cpus_free(c);
}

/* --- mountinfo details ----------------------------------------------------------------------- */

TEST(cpus_mountinfo_escapes_and_optional_fields)
{
	no_env();
	/* A mount point and a mount root with spaces and a tab (\040, \011), several optional
	 * fields, and an unrelated line with an empty source field (two spaces in a row). */
	char mi[2048];
	snprintf(mi, sizeof(mi),
	         "%s"
	         "50 22 0:50 / /mnt rw,relatime shared:9 - tmpfs  rw\n"
	         "35 31 0:32 /my\\040pod /sys/fs/cgroup/my\\040cpu\\011x rw,nosuid shared:5 "
	         "master:3 propagate_from:2 unbindable - cgroup cgroup rw,cpuacct,cpu\n",
	         MI_BASE);
	write_proc("7:cpuacct,cpu:/my pod/web\n", mi);
	v1_knobs("/sys/fs/cgroup/my cpu\tx/web", "40000\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.4,
	              "/sys/fs/cgroup/my cpu\tx/web/cpu.cfs_quota_us");
	weft_cpus_free(c);
}

TEST(cpus_cgroup_path_relative_to_mount_root)
{
	no_env();
	/* The container's view: the mount shows /docker/abc at its mount point. */
	char mi[1024];
	snprintf(mi, sizeof(mi),
	         "%s35 31 0:32 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
	         MI_BASE);
	write_proc("4:cpu:/docker/abc\n", mi);
	v1_knobs("/sys/fs/cgroup/cpu", "60000\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.6, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
	weft_cpus_free(c);

	/* Moved into a child cgroup of the container: both levels are read. */
	write_proc("4:cpu:/docker/abc/sub\n", mi);
	v1_knobs("/sys/fs/cgroup/cpu/sub", "80000\n", "100000\n");
	c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.6, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
	weft_cpus_free(c);
	v1_knobs("/sys/fs/cgroup/cpu/sub", "30000\n", "100000\n");
	c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.3, "/sys/fs/cgroup/cpu/sub/cpu.cfs_quota_us");
	weft_cpus_free(c);
}

TEST(cpus_cgroup_path_outside_mount_root)
{
	no_env();
	/* The mount shows another subtree: its files belong to other cgroups and are not read. */
	char mi[1024];
	snprintf(mi, sizeof(mi),
	         "%s35 31 0:32 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
	         MI_BASE);
	v1_knobs("/sys/fs/cgroup/cpu", "10000\n", "100000\n");
	v1_knobs("/sys/fs/cgroup/cpu/other", "10000\n", "100000\n");
	const char *paths[] = {"4:cpu:/other\n",         "4:cpu:/docker/abcdef\n",
	                       "4:cpu:/docker\n",        "4:cpu:/\n",
	                       "4:cpu:/../docker/abc\n", "4:cpu:/docker/abc/../x\n",
	                       "4:cpu:docker/abc\n",     "4:cpu:\n"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		write_proc(paths[i], mi);
		weft_cpus *c = read_ok(th_tmpdir());
		if (find(c, WEFT_CPU_LIMIT_CGROUP1, NULL, NULL, NULL))
			FAIL("a limit was read for %s", paths[i]);
		weft_cpus_free(c);
	}

	/* A second mount of the hierarchy that does show the path is used instead. */
	char mi2[2048];
	snprintf(mi2, sizeof(mi2), "%s36 22 0:32 / /mnt/allcpu rw - cgroup cgroup rw,cpu\n", mi);
	write_proc("4:cpu:/other\n", mi2);
	v1_knobs("/mnt/allcpu/other", "20000\n", "100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.2, "/mnt/allcpu/other/cpu.cfs_quota_us");
	weft_cpus_free(c);

	/* Both mounts show /docker/abc: the one with the shorter root shows more ancestors. */
	write_proc("4:cpu:/docker/abc\n", mi2);
	v1_knobs("/mnt/allcpu/docker", "20000\n", "100000\n");
	c = read_ok(th_tmpdir());
	/* (the other mount's 0.1 at its mount point is the same cgroup seen elsewhere: not read) */
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP1, 0.2, "/mnt/allcpu/docker/cpu.cfs_quota_us");
	weft_cpus_free(c);
}

TEST(cpus_walk_depth_is_capped)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V2);
	/* 70 levels: the 64 deepest folders are read, the mount point and the top ones are not. */
	char path[512] = "", cg[600];
	for (int i = 0; i < 70; i++)
		strcat(path, "/d");
	snprintf(cg, sizeof(cg), "0::%s\n", path);
	write_proc(cg, mi);
	th_write_file(P(V2 "/cpu.max"), "10000 100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, NULL));
	weft_cpus_free(c);
	/* Level 64 from the leaf (the folder 7 deep under the mount point) is read. */
	th_write_file(P(V2 "%.14s/cpu.max", path), "20000 100000\n");
	c = read_ok(th_tmpdir());
	char want[256];
	snprintf(want, sizeof(want), V2 "%.14s/cpu.max", path);
	expect_cgroup(c, WEFT_CPU_LIMIT_CGROUP2, 0.2, want);
	weft_cpus_free(c);
	/* One level further up is not. */
	ASSERT_EQ(unlink(P("%s", want)), 0);
	th_write_file(P(V2 "%.12s/cpu.max", path), "20000 100000\n");
	c = read_ok(th_tmpdir());
	ASSERT_FALSE(find(c, WEFT_CPU_LIMIT_CGROUP2, NULL, NULL, NULL));
	weft_cpus_free(c);
}

/* --- missing and garbage files --------------------------------------------------------------- */

TEST(cpus_missing_files_are_no_limit)
{
	no_env();
	/* Nothing at all under the root. */
	weft_cpus *c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
	/* /proc/self/cgroup without mountinfo. */
	th_write_file(P("/proc/self/cgroup"), "4:cpu:/a\n0::/a\n");
	c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
	/* Both, but no mount of either hierarchy. */
	th_write_file(P("/proc/self/mountinfo"), MI_BASE);
	c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
	/* Mounts, but no cgroup folders under them. */
	char mi[2048];
	snprintf(mi, sizeof(mi), "%s%s41 31 0:38 / /u rw - cgroup2 cgroup2 rw\n", MI_BASE, MI_V1);
	th_write_file(P("/proc/self/mountinfo"), mi);
	c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
	/* A file where a folder should be (ENOTDIR) is missing too. */
	th_write_file(P(V1), "not a folder\n");
	c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
	/* Empty /proc/self/cgroup and mountinfo. */
	write_proc("", "");
	c = read_ok(th_tmpdir());
	ASSERT_EQ(nlimits(c), 1);
	weft_cpus_free(c);
}

static void expect_eio(const char *what)
{
	weft_cpus *c = NULL;
	int r = weft_cpus_read(&c, th_tmpdir());
	if (r != -EIO)
		FAIL("%s: got %d (%s), want -EIO", what, r, r < 0 ? weft_errname(r) : "success");
	ASSERT_NULL(c);
}

TEST(cpus_garbage_v1_files_are_eio)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/a\n", mi);
	const char *quotas[] = {"abc\n",   "0\n",     "-2\n",
	                        "12x\n",   "\n",      "",
	                        " 5000\n", "5000 \n", "99999999999999999999\n",
	                        "1.5\n",   "5000\n\n"};
	for (size_t i = 0; i < sizeof(quotas) / sizeof(quotas[0]); i++) {
		v1_knobs(V1 "/a", quotas[i], "100000\n");
		expect_eio(quotas[i]);
	}
	const char *periods[] = {"0\n", "x\n", "-1\n", ""};
	for (size_t i = 0; i < sizeof(periods) / sizeof(periods[0]); i++) {
		v1_knobs(V1 "/a", "5000\n", periods[i]);
		expect_eio(periods[i]);
	}
	/* Garbage at a parent level counts too. */
	v1_knobs(V1 "/a", "5000\n", "100000\n");
	v1_knobs(V1, "junk\n", "100000\n");
	expect_eio("parent quota");
	/* A knob past its 256-byte cap, and one with a NUL inside. */
	char big[400];
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	v1_knobs(V1, big, "100000\n");
	expect_eio("oversized knob");
	int fd = open(P(V1 "/cpu.cfs_quota_us"), O_WRONLY | O_TRUNC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "50\0\n", 4), 4);
	close(fd);
	expect_eio("NUL in a knob");
}

TEST(cpus_garbage_v2_files_are_eio)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V2);
	write_proc("0::/a\n", mi);
	const char *vals[] = {"150000\n",
	                      "max x\n",
	                      "abc 100000\n",
	                      "\n",
	                      "",
	                      "0 100000\n",
	                      "50000 0\n",
	                      "-1 100000\n",
	                      "max  100000\n",
	                      "50000 100000 7\n",
	                      "1e5 100000\n",
	                      "max\tx\n"};
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		th_write_file(P(V2 "/a/cpu.max"), vals[i]);
		expect_eio(vals[i]);
	}
}

TEST(cpus_garbage_proc_files_are_eio)
{
	no_env();
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V1);
	write_proc("nonsense\n", mi);
	expect_eio("/proc/self/cgroup without colons");
	write_proc("4:cpu\n", mi);
	expect_eio("/proc/self/cgroup with one colon");

	write_proc("4:cpu:/a\n", "1 2 3\n");
	expect_eio("mountinfo with 3 fields");
	write_proc("4:cpu:/a\n",
	           "32 31 0:29 / /sys/fs/cgroup/cpu rw shared:7 cgroup cgroup rw,cpu\n");
	expect_eio("mountinfo without the separator");
	write_proc("4:cpu:/a\n", "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup\n");
	expect_eio("mountinfo without super options");

	/* mountinfo past its 16 MiB cap. */
	FILE *f = fopen(P("/proc/self/mountinfo"), "w");
	ASSERT_NOT_NULL(f);
	for (int i = 0; i < (17 << 20) / 64; i++)
		fprintf(f, "%-62s\n", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw");
	ASSERT_EQ(fclose(f), 0);
	expect_eio("mountinfo over 16 MiB");
}

/* --- WEFT_CPUS ------------------------------------------------------------------------------- */

TEST(cpus_override_binds)
{
	struct {
		const char *v;
		double cap;
		int count;
	} ok[] = {{"1.5", 1.5, 1},
	          {"4", 4, 4},
	          {"0.5", 0.5, 1},
	          {"2.999999", 2.999999, 2},
	          {"64", 64, 64},
	          {"007", 7, 7},
	          {"1048576", 1048576, 1048576},
	          {"0.001", 0.001, 1},
	          {"3.0", 3, 3},
	          {"1.250000000000000000001", 1.25, 1}};
	/* A tighter cgroup limit is listed but does not bind. */
	char mi[1024];
	snprintf(mi, sizeof(mi), "%s%s", MI_BASE, MI_V2);
	write_proc("0::/a\n", mi);
	th_write_file(P(V2 "/a/cpu.max"), "10000 100000\n");
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ASSERT_EQ(setenv("WEFT_CPUS", ok[i].v, 1), 0);
		weft_cpus *c = read_ok(th_tmpdir());
		ASSERT_NEAR(weft_cpus_capacity(c), ok[i].cap, 1e-12);
		ASSERT_EQ(weft_cpus_count(c), ok[i].count);
		ASSERT_EQ(nlimits(c), 3);
		int kind;
		double cpus;
		const char *src;
		bool binding;
		ASSERT_OK(weft_cpus_limit(c, 2, &kind, &cpus, &src, &binding));
		ASSERT_EQ(kind, WEFT_CPU_LIMIT_OVERRIDE);
		ASSERT_TRUE(binding);
		char want[128];
		snprintf(want, sizeof(want), "WEFT_CPUS=%s", ok[i].v);
		ASSERT_STR_EQ(src, want);
		ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_AFFINITY, NULL, NULL, &binding));
		ASSERT_FALSE(binding);
		ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP2, &cpus, NULL, &binding));
		ASSERT_FALSE(binding);
		ASSERT_NEAR(cpus, 0.1, 1e-12);
		weft_cpus_free(c);
	}
	ASSERT_EQ(setenv("WEFT_CPUS", "3", 1), 0);
	double cap;
	ASSERT_EQ(weft_cpu_budget(&cap), 3);
	ASSERT_NEAR(cap, 3, 0);
}

TEST(cpus_override_bad_values)
{
	const char *bad[] = {"",        "0",
	                     "0.0",     "-1",
	                     "-0.5",    "abc",
	                     "inf",     "nan",
	                     "Inf",     "1.5x",
	                     " 1",      "1 ",
	                     "+1",      "1e3",
	                     "0x10",    "1.",
	                     ".5",      "1,5",
	                     "1..5",    "1.5.",
	                     "2000000", "1048576.5",
	                     "\t2",     "1\n",
	                     "1e400",   "99999999999999999999999999999999999999999",
	                     "long"};
	char longv[80];
	memset(longv, '0', sizeof(longv) - 2); /* 78 characters, over the cap of 64, value 1 */
	longv[sizeof(longv) - 2] = '1';
	longv[sizeof(longv) - 1] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *v = strcmp(bad[i], "long") == 0 ? longv : bad[i];
		ASSERT_EQ(setenv("WEFT_CPUS", v, 1), 0);
		weft_cpus *c = NULL;
		int r = weft_cpus_read(&c, th_tmpdir());
		if (r != -ERANGE)
			FAIL("WEFT_CPUS=\"%s\": got %d, want -ERANGE", v, r);
		ASSERT_NULL(c);
		ASSERT_ERR(weft_cpu_budget(NULL), -ERANGE);
	}
}

/* --- fault injection ------------------------------------------------------------------------- */

static void hybrid_tree(void)
{
	char mi[2048];
	snprintf(mi, sizeof(mi), "%s%s%s", MI_BASE, MI_V1, MI_V2);
	write_proc("4:cpu,cpuacct:/a/b\n0::/a/b\n", mi);
	v1_knobs(V1 "/a/b", "50000\n", "100000\n");
	v1_knobs(V1 "/a", "40000\n", "100000\n");
	th_write_file(P(V2 "/a/b/cpu.max"), "30000 100000\n");
	th_write_file(P(V2 "/a/cpu.max"), "max 100000\n");
}

TEST_TIMEOUT(cpus_fault_injection_alloc, 60)
{
	hybrid_tree();
	ASSERT_EQ(setenv("WEFT_CPUS", "2.5", 1), 0);
	long n;
	for (n = 1; n < 10000; n++) {
		weft_cpus *c = NULL;
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int r = weft_cpus_read(&c, th_tmpdir());
		long injected = weft__fault_injected(WEFT__FAULT_ALLOC);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_EQ(nlimits(c), 4);
			check_invariants(c);
			weft_cpus_free(c);
			break;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_EQ(injected, 1);
		ASSERT_NULL(c);
	}
	ASSERT_GT(n, 5); /* the read allocates: the loop did inject failures */
	ASSERT_LT(n, 10000);
	/* Every allocation failing at once. */
	weft_cpus *c = NULL;
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	int r = weft_cpus_read(&c, th_tmpdir());
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	ASSERT_ERR(r, -ENOMEM);
}

TEST_TIMEOUT(cpus_fault_injection_open, 60)
{
	no_env();
	hybrid_tree();
	long n;
	for (n = 1; n < 1000; n++) {
		weft_cpus *c = NULL;
		weft__fault_arm(WEFT__FAULT_OPEN, n, false);
		int r = weft_cpus_read(&c, th_tmpdir());
		long injected = weft__fault_injected(WEFT__FAULT_OPEN);
		weft__fault_arm(WEFT__FAULT_OPEN, 0, false);
		if (r == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_EQ(nlimits(c), 3);
			weft_cpus_free(c);
			break;
		}
		ASSERT_ERR(r, -EMFILE);
		ASSERT_NULL(c);
	}
	ASSERT_GT(n, 5);
	ASSERT_LT(n, 1000);
}

/* --- a real cgroup (root, cgroup v1 cpu controller) --------------------------------------------
 */

/* The mount point of the cgroup v1 hierarchy with the cpu controller, from the real mountinfo;
 * false if there is none. */
static bool find_v1_cpu_mount(char *buf, size_t size)
{
	char *mi = th_read_file("/proc/self/mountinfo");
	if (!mi)
		return false;
	bool found = false;
	for (char *line = strtok(mi, "\n"); line && !found; line = strtok(NULL, "\n")) {
		char mp[512], fstype[64], super[512];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %511s", mp) != 1 ||
		    sscanf(sep + 3, "%63s %*s %511s", fstype, super) != 2)
			continue;
		if (strcmp(fstype, "cgroup") != 0 || strchr(mp, '\\'))
			continue;
		for (char *save, *o = strtok_r(super, ",", &save); o;
		     o = strtok_r(NULL, ",", &save))
			if (strcmp(o, "cpu") == 0)
				found = true;
		if (found)
			snprintf(buf, size, "%s", mp);
	}
	free(mi);
	return found;
}

struct real_child {
	char dir[600];
	double aff;
};

static void write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		FAIL("open %s: %s", path, strerror(errno));
	ssize_t n = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	if (n != (ssize_t)strlen(s))
		FAIL("write %s to %s: %s", s, path, strerror(e));
}

static void real_child(void *arg)
{
	const struct real_child *rc = arg;
	char path[700], pid[32];
	snprintf(path, sizeof(path), "%s/cgroup.procs", rc->dir);
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	write_str(path, pid);
	weft_cpus *c = read_ok(NULL);
	double cpus;
	const char *src;
	bool binding;
	if (!find(c, WEFT_CPU_LIMIT_CGROUP1, &cpus, &src, &binding))
		FAIL("no cgroup1 limit inside %s", rc->dir);
	ASSERT_NEAR(cpus, 1.5, 1e-12);
	snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", rc->dir);
	ASSERT_STR_EQ(src, path);
	ASSERT_NEAR(weft_cpus_capacity(c), rc->aff < 1.5 ? rc->aff : 1.5, 1e-12);
	ASSERT_EQ(weft_cpus_count(c), 1);
	ASSERT_EQ(binding, rc->aff > 1.5);
	weft_cpus_free(c);
}

TEST_TIMEOUT(cpus_real_cgroup_v1_quota, 30)
{
	no_env();
	if (geteuid() != 0)
		SKIP("needs root to make a cgroup");
	char mp[512];
	if (!find_v1_cpu_mount(mp, sizeof(mp)))
		SKIP("no cgroup v1 hierarchy with the cpu controller is mounted");
	/* The new cgroup goes right under the mount point, so this process must be in the
	 * hierarchy's root cgroup for the child's path to be "/weft-test-PID". */
	struct real_child rc = {.aff = affinity_count()};
	char *cg = th_read_file("/proc/self/cgroup"), *own = NULL;
	for (char *line = strtok(cg, "\n"); line; line = strtok(NULL, "\n")) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		for (char *save, *o = strtok_r(c1 + 1, ",", &save); o;
		     o = strtok_r(NULL, ",", &save))
			if (strcmp(o, "cpu") == 0)
				own = c2 + 1;
		if (own)
			break;
	}
	if (!own || strcmp(own, "/") != 0) {
		free(cg);
		SKIP("this process is not in the root cpu cgroup of the mount (a container?)");
	}
	free(cg);
	snprintf(rc.dir, sizeof(rc.dir), "%s/weft-test-%d", mp, (int)getpid());
	if (mkdir(rc.dir, 0755) < 0) {
		char why[700];
		snprintf(why, sizeof(why), "cannot make a cgroup in %s: %s", mp, strerror(errno));
		SKIP(why);
	}
	char path[700];
	snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", rc.dir);
	write_str(path, "100000");
	snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", rc.dir);
	write_str(path, "150000");

	pid_t pid = th_spawn_fn(real_child, &rc);
	int st = th_stop(pid, 0, 20);
	/* The child has exited and been reaped: the cgroup is empty and can go. */
	int r = -1;
	for (int i = 0; i < 200 && (r = rmdir(rc.dir)) < 0 && errno == EBUSY; i++)
		th_sleep_ms(10);
	if (r < 0)
		FAIL("rmdir %s: %s", rc.dir, strerror(errno));
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
}
