/* test-cpus.c: the CPU budget. Fake cgroup trees (v1, v2, hybrid; quotas at the leaf and at
 * parents; escaped mount points; paths outside a mount's root; a hierarchy mounted twice; missing
 * and garbage files) are built under th_tmpdir() and read with it as the root; the affinity mask
 * is compared with sched_getaffinity and narrowed to one CPU; WEFT_CPUS is tried with good and
 * bad values; every allocation and open is made to fail in turn. As root, a real cgroup with a
 * 1.5 CPU quota is made (cgroup v1's cpu hierarchy, or else cgroup2 with the cpu controller; see
 * cpus_real_cgroup_quota) and a child is moved into it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/file.h>
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

TEST(cpus_same_hierarchy_mounted_twice)
{
	no_env();
	/* A chroot's rbind of /sys lists both hierarchies a second time, with the same root "/"
	 * (as this project's machines had while a debootstrap'd chroot was set up). The first
	 * listed is the system's own mount: its path is the source. Real bind mounts show the same
	 * files; here the two trees differ so the test can tell which one was read. */
#define BIND "/work/fresh/root"
	char mi[2048];
	snprintf(mi, sizeof(mi),
	         "%s%s%s"
	         "90 80 0:29 / " BIND V1 " rw,relatime master:7 - cgroup cgroup rw,cpu,cpuacct\n"
	         "91 80 0:27 / " BIND V2 " rw,relatime master:4 - cgroup2 cgroup2 rw\n",
	         MI_BASE, MI_V1, MI_V2);
	write_proc("4:cpu,cpuacct:/a\n0::/b\n", mi);
	v1_knobs(V1 "/a", "50000\n", "100000\n");
	v1_knobs(BIND V1 "/a", "40000\n", "100000\n");
	th_write_file(P(V2 "/b/cpu.max"), "60000 100000\n");
	th_write_file(P(BIND V2 "/b/cpu.max"), "30000 100000\n");
	weft_cpus *c = read_ok(th_tmpdir());
	double cpus;
	const char *src;
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP1, &cpus, &src, NULL));
	ASSERT_NEAR(cpus, 0.5, 1e-12);
	ASSERT_STR_EQ(src, P(V1 "/a/cpu.cfs_quota_us"));
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP2, &cpus, &src, NULL));
	ASSERT_NEAR(cpus, 0.6, 1e-12);
	ASSERT_STR_EQ(src, P(V2 "/b/cpu.max"));
	weft_cpus_free(c);

	/* Listed the other way round, the other mount is first and is used: the order decides,
	 * not which path is shorter. */
	snprintf(mi, sizeof(mi),
	         "%s"
	         "90 80 0:29 / " BIND V1 " rw,relatime master:7 - cgroup cgroup rw,cpu,cpuacct\n"
	         "91 80 0:27 / " BIND V2 " rw,relatime master:4 - cgroup2 cgroup2 rw\n"
	         "%s%s",
	         MI_BASE, MI_V1, MI_V2);
	write_proc("4:cpu,cpuacct:/a\n0::/b\n", mi);
	c = read_ok(th_tmpdir());
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP1, &cpus, &src, NULL));
	ASSERT_NEAR(cpus, 0.4, 1e-12);
	ASSERT_STR_EQ(src, P(BIND V1 "/a/cpu.cfs_quota_us"));
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP2, &cpus, &src, NULL));
	ASSERT_NEAR(cpus, 0.3, 1e-12);
	ASSERT_STR_EQ(src, P(BIND V2 "/b/cpu.max"));
	weft_cpus_free(c);

	/* A later mount with a shorter root still wins over an earlier one with a longer root. */
	snprintf(mi, sizeof(mi),
	         "%s"
	         "90 80 0:29 /a " BIND V1 " rw,relatime master:7 - cgroup cgroup rw,cpu,cpuacct\n"
	         "%s",
	         MI_BASE, MI_V1);
	write_proc("4:cpu,cpuacct:/a\n", mi);
	c = read_ok(th_tmpdir());
	ASSERT_TRUE(find(c, WEFT_CPU_LIMIT_CGROUP1, &cpus, &src, NULL));
	ASSERT_NEAR(cpus, 0.5, 1e-12);
	ASSERT_STR_EQ(src, P(V1 "/a/cpu.cfs_quota_us"));
	weft_cpus_free(c);
#undef BIND
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

/* --- a real cgroup (root; a writable cgroup v1 cpu hierarchy, or cgroup2 with cpu) ------------
 *
 * cpus_real_cgroup_quota makes a real cgroup with a CPU quota, moves a forked child into it (the
 * child writes its PID to cgroup.procs) and has the child read its budget. It runs the first
 * variant that the machine allows:
 *
 *   v1  the cgroup v1 hierarchy with the cpu controller, mounted read-write with root "/". The
 *       test cgroup is made in this process's own cgroup there (v1 lets a cgroup hold processes
 *       and child cgroups at once); cpu.cfs_period_us 100000, cpu.cfs_quota_us 150000.
 *   v2  the cgroup2 hierarchy, mounted read-write with root "/", whose root offers the cpu
 *       controller (cgroup.controllers; on a hybrid system cpu is bound to v1 and missing there).
 *       cgroup2's "no internal processes" rule: a non-root cgroup that holds processes cannot
 *       give domain controllers to its children. (cpu is also a threaded controller, so "+cpu"
 *       is accepted there, but it turns the cgroup into a threaded root whose new children are
 *       "domain invalid" and refuse processes with EOPNOTSUPP; seen on Linux 6.1.) This process
 *       sits in its own cgroup, so that cgroup always holds a process, and the test cgroup is
 *       made under the mount root instead (this process's own cgroup when it runs there; the
 *       true root is exempt from the rule). "+cpu" is written to the root's
 *       cgroup.subtree_control if it is not there yet, and "-cpu" written back at the end; then
 *       cpu.max "150000 100000". When the mount root is a cgroup namespace's root (it has a
 *       cgroup.type file) that holds processes, the variant is not possible here.
 *
 * WEFT_TEST_CGROUP=v1 or =v2 runs only that variant (to run the v2 path on purpose, or to see
 * why it cannot run). When no variant can run: SKIP, naming what is missing for each.
 *
 * Sharing. Parallel runs each make their own weft-test-PID cgroup, but cgroup.subtree_control is
 * shared: each variant runs under an exclusive flock on the hierarchy's mount point (kernfs
 * folders take flock), so one run cannot disable the cpu controller under another's cgroup.
 * Under the same lock, weft-test-PID cgroups whose PID is gone (left by a run killed at its
 * timeout, before its cleanup) are removed.
 *
 * Existing limits. When this process is already under a cgroup limit of L <= 1.5 CPUs (a
 * container), the test quota is L/2 instead of 1.5, so the test cgroup still binds (and v1, which
 * refuses a child quota above its parent's, takes it). */

#define REAL_PERIOD 100000

struct real_cg {
	int version;       /* 1 or 2 */
	char mp[512];      /* the hierarchy's mount point */
	char parent[1024]; /* the folder the test cgroup is made in */
	char dir[1100];    /* the test cgroup: parent/weft-test-PID */
	long long quota;   /* microseconds per REAL_PERIOD */
	double aff;        /* the affinity count */
};

/* Write `s` to an existing file: 0 or -errno. */
static int put(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, s, strlen(s));
	int r = n == (ssize_t)strlen(s) ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return r;
}

/* True if the blank-separated list `text` has the word `w` (cgroup.controllers and
 * cgroup.subtree_control are such lists). */
static bool has_word(const char *text, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = text; *p;) {
		p += strspn(p, " \t\n");
		size_t len = strcspn(p, " \t\n");
		if (len == n && memcmp(p, w, n) == 0)
			return true;
		p += len;
	}
	return false;
}

/* The mount point of the first mount of the hierarchy (v1: fstype cgroup with the cpu controller;
 * v2: cgroup2) whose root is "/" (it shows every cgroup; the library prefers it too, and keeps the
 * first of equals); false if there is none, with *ret_other set if the hierarchy is mounted only
 * with another root (a container's view of its own subtree). *ret_rw: mounted read-write. */
static bool real_mount(int version, char *buf, size_t size, bool *ret_rw, bool *ret_other)
{
	*ret_other = false;
	char *mi = th_read_file("/proc/self/mountinfo");
	if (!mi)
		return false;
	bool found = false;
	for (char *save, *line = strtok_r(mi, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		char root[512], mp[512], opts[512], fstype[64], super[512];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %511s %511s %511s", root, mp, opts) != 3 ||
		    sscanf(sep + 3, "%63s %*s %511s", fstype, super) != 2)
			continue;
		if (strchr(mp, '\\'))
			continue;
		bool match = false;
		if (version == 2) {
			match = strcmp(fstype, "cgroup2") == 0;
		} else if (strcmp(fstype, "cgroup") == 0) {
			for (char *s2, *o = strtok_r(super, ",", &s2); o;
			     o = strtok_r(NULL, ",", &s2))
				if (strcmp(o, "cpu") == 0)
					match = true;
		}
		if (match && strcmp(root, "/") != 0)
			*ret_other = true;
		else if (match)
			found = true;
		if (found) {
			snprintf(buf, size, "%s", mp);
			*ret_rw =
			        strncmp(opts, "rw", 2) == 0 && (opts[2] == ',' || opts[2] == '\0');
		}
	}
	free(mi);
	return found;
}

/* This process's cgroup in the v1 cpu hierarchy, from /proc/self/cgroup; false if it has none or
 * it is outside the cgroup namespace (a path with ".."). */
static bool own_v1_cgroup(char *buf, size_t size)
{
	char *cg = th_read_file("/proc/self/cgroup");
	if (!cg)
		return false;
	bool found = false;
	for (char *save, *line = strtok_r(cg, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		for (char *s2, *o = strtok_r(c1 + 1, ",", &s2); o; o = strtok_r(NULL, ",", &s2))
			if (strcmp(o, "cpu") == 0)
				found = true;
		if (found)
			snprintf(buf, size, "%s", c2 + 1);
	}
	free(cg);
	return found && buf[0] == '/' && !strstr(buf, "/..");
}

/* Remove the weft-test-PID cgroups under `parent` whose PID is gone. Errors are ignored: a
 * populated folder stays. Called under the hierarchy's lock, so no live run's cgroup can be
 * mistaken for a stale one, even from another PID namespace. */
static void sweep_stale(const char *parent)
{
	DIR *d = opendir(parent);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int pid, end = 0;
		if (sscanf(e->d_name, "weft-test-%d%n", &pid, &end) != 1 ||
		    e->d_name[end] != '\0' || pid <= 0 || pid == getpid())
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		char path[1400];
		snprintf(path, sizeof(path), "%s/%s", parent, e->d_name);
		if (rmdir(path) == 0)
			fprintf(stderr, "# removed a stale test cgroup %s\n", path);
	}
	closedir(d);
}

/* The kind of the binding limit, or 0. */
static int binding_kind(const weft_cpus *c)
{
	int kind;
	bool binding;
	for (size_t i = 0; weft_cpus_limit(c, i, &kind, NULL, NULL, &binding) == 0; i++)
		if (binding)
			return kind;
	return 0;
}

/* In the forked child: join the test cgroup, then read the budget. */
static void real_child(void *arg)
{
	const struct real_cg *rc = arg;
	char path[1200], pid[32];
	snprintf(path, sizeof(path), "%s/cgroup.procs", rc->dir);
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	int r = put(path, pid);
	if (r < 0)
		FAIL("writing %d to %s: %s", (int)getpid(), path, strerror(-r));

	int kind = rc->version == 1 ? WEFT_CPU_LIMIT_CGROUP1 : WEFT_CPU_LIMIT_CGROUP2;
	double want = (double)rc->quota / REAL_PERIOD;
	weft_cpus *c = read_ok(NULL);
	double cpus;
	const char *src;
	bool binding;
	if (!find(c, kind, &cpus, &src, &binding))
		FAIL("no %s limit inside %s", weft_cpu_limit_name(kind), rc->dir);
	ASSERT_NEAR(cpus, want, 1e-12);
	/* The source is the test cgroup's file. Compared as files, not as path text: the same
	 * hierarchy may be mounted twice (a bind mount), and which path shows is the library's
	 * business (tested on fake trees above). */
	snprintf(path, sizeof(path), "%s/%s", rc->dir,
	         rc->version == 1 ? "cpu.cfs_quota_us" : "cpu.max");
	struct stat got, exp;
	if (stat(src, &got) < 0)
		FAIL("stat %s (the source): %s", src, strerror(errno));
	if (stat(path, &exp) < 0)
		FAIL("stat %s: %s", path, strerror(errno));
	if (got.st_dev != exp.st_dev || got.st_ino != exp.st_ino)
		FAIL("the source %s is not the file %s", src, path);
	double cap = want < rc->aff ? want : rc->aff;
	ASSERT_NEAR(weft_cpus_capacity(c), cap, 1e-12);
	ASSERT_EQ(weft_cpus_count(c), 1); /* want <= 1.5 */
	ASSERT_EQ(binding, want < rc->aff);
	ASSERT_EQ(binding_kind(c), want < rc->aff ? kind : WEFT_CPU_LIMIT_AFFINITY);
	weft_cpus_free(c);
}

/* Make the test cgroup in rc->parent, run the child in it, clean up. False (with the reason in
 * `why`) if the cgroup cannot be made or cannot take processes; whatever was changed is undone
 * then. Once it is made and usable, a problem is a failure, reported after the cleanup. */
static bool real_run(struct real_cg *rc, char *why, size_t size)
{
	/* The quota: 1.5 CPUs, or half of an existing tighter cgroup limit. */
	weft_cpus *c0 = read_ok(NULL);
	double lmin = INFINITY, l;
	if (find(c0, WEFT_CPU_LIMIT_CGROUP1, &l, NULL, NULL) && l < lmin)
		lmin = l;
	if (find(c0, WEFT_CPU_LIMIT_CGROUP2, &l, NULL, NULL) && l < lmin)
		lmin = l;
	weft_cpus_free(c0);
	rc->quota = (long long)((lmin > 1.5 ? 1.5 : lmin / 2) * REAL_PERIOD);
	if (rc->quota < 1000) { /* the kernel's minimum quota: 1 ms */
		snprintf(why, size, "an existing cgroup limit of %g CPUs leaves no room", lmin);
		return false;
	}

	int lock = open(rc->mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lock < 0 || flock(lock, LOCK_EX) < 0) {
		snprintf(why, size, "cannot lock %s: %s", rc->mp, strerror(errno));
		if (lock >= 0)
			close(lock);
		return false;
	}
	sweep_stale(rc->parent);

	char ctl[1200];
	snprintf(ctl, sizeof(ctl), "%s/cgroup.subtree_control", rc->parent);
	bool enabled = false;
	if (rc->version == 2) {
		char *sc = th_read_file(ctl);
		bool has = sc && has_word(sc, "cpu");
		free(sc);
		if (!has) {
			int r = put(ctl, "+cpu");
			if (r < 0) {
				snprintf(why, size,
				         "cannot enable cpu: writing +cpu to %.500s: %s%s", ctl,
				         strerror(-r),
				         r == -EBUSY ? " (a non-root cgroup that holds processes)"
				                     : "");
				close(lock);
				return false;
			}
			enabled = true;
		}
	}

	snprintf(rc->dir, sizeof(rc->dir), "%s/weft-test-%d", rc->parent, (int)getpid());
	int r = mkdir(rc->dir, 0755) < 0 ? -errno : 0;
	bool made = r == 0;
	if (r < 0)
		snprintf(why, size, "cannot make a cgroup in %.500s: %s", rc->parent, strerror(-r));
	if (made && rc->version == 2) {
		/* The safety net behind real_v2's check: only a domain cgroup takes processes (a
		 * "domain invalid" one, the child of a threaded root, refuses: EOPNOTSUPP). */
		char path[1200];
		snprintf(path, sizeof(path), "%s/cgroup.type", rc->dir);
		char *type = th_read_file(path);
		if (!type || strcmp(type, "domain\n") != 0) {
			if (type)
				type[strcspn(type, "\n")] = '\0';
			snprintf(why, size, "the new cgroup %.500s is of type \"%s\", not domain",
			         rc->dir, type ? type : "unreadable");
			r = -EOPNOTSUPP;
		}
		free(type);
	}

	char err[1500] = "";
	int st = -1;
	if (made) {
		char path[1200], val[64];
		if (r < 0) {
			/* not usable: only removed again */
		} else if (rc->version == 1) {
			snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", rc->dir);
			snprintf(val, sizeof(val), "%d", REAL_PERIOD);
			int w = put(path, val);
			if (w == 0) {
				snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", rc->dir);
				snprintf(val, sizeof(val), "%lld", rc->quota);
				w = put(path, val);
			}
			if (w < 0)
				snprintf(err, sizeof(err), "writing %s to %s: %s", val, path,
				         strerror(-w));
		} else {
			snprintf(path, sizeof(path), "%s/cpu.max", rc->dir);
			snprintf(val, sizeof(val), "%lld %d", rc->quota, REAL_PERIOD);
			int w = put(path, val);
			if (w < 0)
				snprintf(err, sizeof(err), "writing %s to %s: %s", val, path,
				         strerror(-w));
		}
		if (r == 0 && !err[0]) {
			fprintf(stderr, "# cgroup v%d: %s with a quota of %lld/%d\n", rc->version,
			        rc->dir, rc->quota, REAL_PERIOD);
			pid_t pid = th_spawn_fn(real_child, rc);
			st = th_stop(pid, 0, 20);
		}
		/* The child has exited and been reaped: the cgroup empties (at once, or a moment
		 * later) and can go. */
		int d = -1;
		for (int i = 0; i < 500 && (d = rmdir(rc->dir)) < 0 && errno == EBUSY; i++)
			th_sleep_ms(10);
		if (d < 0 && !err[0])
			snprintf(err, sizeof(err), "rmdir %s: %s", rc->dir, strerror(errno));
	}
	if (enabled) {
		/* EBUSY: a cgroup made meanwhile by someone else uses cpu; it stays enabled. */
		int u = put(ctl, "-cpu");
		if (u == -EBUSY)
			fprintf(stderr, "# %s: -cpu refused (EBUSY), left enabled\n", ctl);
		else if (u < 0 && !err[0])
			snprintf(err, sizeof(err), "writing -cpu back to %s: %s", ctl,
			         strerror(-u));
	}
	close(lock);
	if (err[0])
		FAIL("%s", err);
	if (r < 0)
		return false;
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(WEXITSTATUS(st), 0);
	return true;
}

static bool real_v1(char *why, size_t size)
{
	struct real_cg rc = {.version = 1, .aff = affinity_count()};
	bool rw, other;
	char own[512];
	if (!real_mount(1, rc.mp, sizeof(rc.mp), &rw, &other)) {
		snprintf(why, size, "no cgroup v1 hierarchy with the cpu controller is mounted%s",
		         other ? " with root / (only a subtree of it)" : "");
		return false;
	}
	if (!rw) {
		snprintf(why, size, "the cpu hierarchy at %s is mounted read-only", rc.mp);
		return false;
	}
	if (!own_v1_cgroup(own, sizeof(own))) {
		snprintf(why, size, "this process has no usable cgroup in the cpu hierarchy");
		return false;
	}
	snprintf(rc.parent, sizeof(rc.parent), "%s%s", rc.mp, strcmp(own, "/") == 0 ? "" : own);
	return real_run(&rc, why, size);
}

static bool real_v2(char *why, size_t size)
{
	struct real_cg rc = {.version = 2, .aff = affinity_count()};
	bool rw, other;
	if (!real_mount(2, rc.mp, sizeof(rc.mp), &rw, &other)) {
		snprintf(why, size, "no cgroup2 hierarchy is mounted%s",
		         other ? " with root / (only a subtree of it)" : "");
		return false;
	}
	if (!rw) {
		snprintf(why, size, "cgroup2 at %s is mounted read-only", rc.mp);
		return false;
	}
	char path[600];
	snprintf(path, sizeof(path), "%s/cgroup.controllers", rc.mp);
	char *ctls = th_read_file(path);
	bool has = ctls && has_word(ctls, "cpu");
	if (!has) {
		if (ctls)
			ctls[strcspn(ctls, "\n")] = '\0';
		snprintf(why, size,
		         "cgroup2 at %s does not offer the cpu controller (cgroup.controllers: "
		         "\"%s\"; on a hybrid system cpu is bound to v1)",
		         rc.mp, ctls ? ctls : "unreadable");
		free(ctls);
		return false;
	}
	free(ctls);
	/* The test cgroup goes under the mount root. The true root (it has no cgroup.type file)
	 * is exempt from the no-internal-process rule. A cgroup namespace's root is not: if it
	 * holds processes, "+cpu" there still succeeds (cpu is a threaded controller), but it
	 * turns the namespace's root into a threaded root whose new children are "domain
	 * invalid" and take no processes; the test does not convert a container's root. */
	snprintf(path, sizeof(path), "%s/cgroup.type", rc.mp);
	if (access(path, F_OK) == 0) {
		snprintf(path, sizeof(path), "%s/cgroup.procs", rc.mp);
		char *procs = th_read_file(path);
		bool busy = !procs || procs[strspn(procs, " \n")] != '\0';
		free(procs);
		if (busy) {
			snprintf(why, size,
			         "cgroup2 at %s shows a cgroup namespace's root that holds "
			         "processes (no-internal-process rule: no child of it can have cpu "
			         "and take processes)",
			         rc.mp);
			return false;
		}
	}
	snprintf(rc.parent, sizeof(rc.parent), "%s", rc.mp);
	return real_run(&rc, why, size);
}

TEST_TIMEOUT(cpus_real_cgroup_quota, 60)
{
	no_env();
	const char *force = getenv("WEFT_TEST_CGROUP");
	bool v1 = !force || strcmp(force, "v1") == 0, v2 = !force || strcmp(force, "v2") == 0;
	if (!v1 && !v2)
		FAIL("WEFT_TEST_CGROUP=\"%s\": want v1 or v2", force);
	if (geteuid() != 0)
		SKIP("not root: making a cgroup needs root");
	char why1[800] = "not tried (WEFT_TEST_CGROUP=v2)",
	     why2[800] = "not tried (WEFT_TEST_CGROUP=v1)";
	if (v1 && real_v1(why1, sizeof(why1)))
		return;
	if (v2 && real_v2(why2, sizeof(why2)))
		return;
	char why[1700];
	snprintf(why, sizeof(why), "no writable cgroup with the cpu controller: v1: %s; v2: %s",
	         why1, why2);
	SKIP(why);
}
