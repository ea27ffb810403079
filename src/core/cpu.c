/* cpu.c: the CPU budget, how many CPUs this process may really use (weft/core.h).
 *
 * Four limits, read in this order, each recorded with where it came from:
 *
 *   affinity   sched_getaffinity(0) on a cpu set sized at run time: 1024 CPUs first, doubled on
 *              EINVAL up to AFFINITY_MAX_CPUS, so machines with more than 1024 CPUs work.
 *              cpus = CPU_COUNT_S. Source "sched_getaffinity".
 *   cgroup1    the v1 hierarchy that carries the "cpu" controller: for the process's cgroup
 *              and each parent up to the mount point, cpu.cfs_quota_us / cpu.cfs_period_us
 *              (quota -1: none). Source: the binding (tightest) level's cpu.cfs_quota_us.
 *   cgroup2    the unified hierarchy ("0::/path"): cpu.max at each level ("max P": none,
 *              "Q P": Q/P). Source: the binding level's cpu.max.
 *   override   WEFT_CPUS, a positive decimal ("4", "1.5"), at most OVERRIDE_MAX. Source
 *              "WEFT_CPUS=<value>".
 *
 * A hybrid system has both hierarchies: both are read. A source path is the file as it was opened,
 * ROOT prefix included (so with --root it can be opened as shown from where the reader runs; with
 * the real root it is the plain system path).
 *
 *   capacity = WEFT_CPUS                                   when set (it binds; the rest are listed)
 *            = min(affinity, cgroup1, cgroup2)             otherwise (absent limits do not count)
 *   count    = max(1, floor(capacity + 1e-9))
 *
 * Exactly one limit binds: the override when present, else the first of affinity, cgroup1, cgroup2
 * whose CPUs equal the capacity.
 *
 * Why round down. The CFS bandwidth controller gives a cgroup `quota` of CPU time per `period`;
 * a pool of ceil(1.5) = 2 busy threads uses its 150 ms of every 100 ms in 75 ms and then stalls for
 * 25 ms of every period, so every request pays tail latency for a thread that cannot run. A pool of
 * floor(quota) threads is never throttled and leaves the fraction to the rest of the process (its
 * IO threads, the GC of an embedding runtime). Others measured on this question: Java 17 rounds 1.5
 * up to 2 active processors; Go 1.19's GOMAXPROCS, oneTBB and GLib's g_get_num_processors ignore
 * cgroup quotas entirely, and GLib ignores the affinity mask too (it counts online CPUs).
 *
 * Finding the cgroup folder. /proc/self/cgroup gives the cgroup path of each hierarchy; mountinfo
 * gives each cgroup mount's root (the cgroup shown at its mount point) and mount point. The folder
 * is ROOT + mount point + (path relative to the mount root). A path that is not under a mount's
 * root (a cgroup namespace, or a mount of another subtree) is not visible through that mount: its
 * files belong to other cgroups, so that mount is skipped; among the mounts that do show the path,
 * the one with the shortest root wins (it shows the most ancestors, where container limits sit),
 * and among mounts with equally short roots the first listed wins: mountinfo lists mounts in the
 * order they were made, so the first is the system's own mount (/sys/fs/cgroup/...), and a later
 * one with the same root is usually a bind mount of it elsewhere (a chroot's or a container's
 * rbind of /sys), whose path would be a surprising source to show. Both show the same files.
 * If no mount shows it, that hierarchy gives no limit. A path with "." or ".." components (a
 * process outside its cgroup namespace's root) is likewise not followed.
 *
 * Errors and caps. Missing files (ENOENT, ENOTDIR) mean no limit. Content that cannot be parsed,
 * a quota or period of 0, or a file past its cap gives -EIO. Caps: mountinfo 16 MiB (containers
 * with many mounts are large but not that large), /proc/self/cgroup 1 MiB, a cgroup knob 256
 * bytes, WALK_MAX folders from the leaf up (deeper ancestors are not read). Other open/read
 * errors (-EMFILE...) are returned as they are. Every allocation goes through weft__malloc and
 * friends; every open through the WEFT__FAULT_OPEN fault point (-EMFILE).
 *
 * Thread safety: no globals; every call reads its own files into its own buffers. getenv is
 * unsafe against a concurrent setenv, as everywhere in libc.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../internal/alloc.h"
#include "../internal/common.h"

#define AFFINITY_FIRST_CPUS 1024
#define AFFINITY_MAX_CPUS (1 << 20) /* a 128 KiB cpu set; Linux's NR_CPUS tops out at 8192 */
#define OVERRIDE_MAX 1048576.0      /* WEFT_CPUS above this is not a CPU count */
#define OVERRIDE_LEN_MAX 64
#define WALK_MAX 64
#define MOUNTINFO_MAX ((size_t)16 << 20)
#define PROC_CGROUP_MAX ((size_t)1 << 20)
#define KNOB_MAX 256
#define NLIMITS 4

struct limit {
	int kind;
	double cpus;
	char *source; /* owned */
	bool binding;
};

struct weft_cpus {
	int count;
	double capacity;
	size_t n;
	struct limit limits[NLIMITS]; /* at most one per kind, in kind order */
};

/* --- files ----------------------------------------------------------------------------------- */

static int open_ro(const char *path)
{
	if (weft__fault_hit(WEFT__FAULT_OPEN))
		return -EMFILE;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : weft__neg_errno();
	return fd;
}

/* Read up to `max` bytes of `fd` into buf (size max + 1), NUL-terminated. -EIO if the file holds
 * more than `max` bytes. Returns the length. */
static ssize_t read_fd(int fd, char *buf, size_t max)
{
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return weft__neg_errno();
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max)
			return -EIO;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* A small file (a cgroup knob) into buf[KNOB_MAX + 1]. -ENOENT if missing. NUL bytes inside make
 * it unparseable: -EIO. */
static int read_knob(const char *path, char buf[KNOB_MAX + 1])
{
	int fd = open_ro(path);
	if (fd < 0)
		return fd;
	ssize_t n = read_fd(fd, buf, KNOB_MAX);
	close(fd);
	if (n < 0)
		return (int)n;
	if (strlen(buf) != (size_t)n)
		return -EIO;
	return 0;
}

/* A whole file, malloc'd and NUL-terminated, growing to at most `max` bytes. -ENOENT if missing. */
static int read_whole(const char *path, size_t max, char **ret)
{
	int fd = open_ro(path);
	if (fd < 0)
		return fd;
	size_t cap = 4096, len = 0;
	char *buf = weft__malloc(cap);
	int r = 0;
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		if (cap - len < 2) {
			if (cap > max) {
				r = -EIO;
				goto out;
			}
			size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
			char *p = weft__realloc(buf, ncap);
			if (!p) {
				r = -ENOMEM;
				goto out;
			}
			buf = p;
			cap = ncap;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = weft__neg_errno();
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = -EIO;
			goto out;
		}
	}
	buf[len] = '\0';
	if (strlen(buf) != len)
		r = -EIO; /* a NUL inside: not text */
out:
	close(fd);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	return 0;
}

/* a + b + c as one malloc'd string; NULL parts count as "". */
static char *concat3(const char *a, const char *b, const char *c)
{
	size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0, lc = c ? strlen(c) : 0;
	char *s = weft__malloc(la + lb + lc + 1);
	if (!s)
		return NULL;
	memcpy(s, a ? a : "", la);
	memcpy(s + la, b ? b : "", lb);
	memcpy(s + la + lb, c ? c : "", lc);
	s[la + lb + lc] = '\0';
	return s;
}

/* --- numbers --------------------------------------------------------------------------------- */

/* Strip one trailing newline (knobs end with one). */
static void chomp(char *s)
{
	size_t n = strlen(s);
	if (n > 0 && s[n - 1] == '\n')
		s[n - 1] = '\0';
}

/* A decimal integer of digits only, 0..INT64_MAX, spanning [s, end). */
static int parse_u64(const char *s, const char *end, int64_t *ret)
{
	if (s == end)
		return -EIO;
	int64_t v = 0;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -EIO;
		int d = *p - '0';
		if (v > (INT64_MAX - d) / 10)
			return -EIO;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

/* WEFT_CPUS: digits, optionally '.' and more digits; > 0 and <= OVERRIDE_MAX. Parsed by hand:
 * strtod would take "inf", "nan", "0x10", "1e3" and leading blanks, and obeys LC_NUMERIC. */
static int parse_override(const char *s, double *ret)
{
	size_t len = strlen(s);
	if (len == 0 || len > OVERRIDE_LEN_MAX)
		return -ERANGE;
	const char *p = s;
	double ipart = 0;
	if (*p < '0' || *p > '9')
		return -ERANGE;
	for (; *p >= '0' && *p <= '9'; p++)
		ipart = ipart * 10 + (*p - '0');
	uint64_t frac = 0, scale = 1;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -ERANGE;
		for (int nd = 0; *p >= '0' && *p <= '9'; p++, nd++) {
			/* digits past 1e-18 cannot change a double near a CPU count */
			if (nd < 18) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
		}
	}
	if (*p != '\0')
		return -ERANGE;
	double v = ipart + (double)frac / (double)scale;
	if (!(v > 0) || v > OVERRIDE_MAX)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* A positive integer filling all of s (already chomped); -EIO otherwise. */
static int parse_positive(const char *s, int64_t *ret)
{
	int64_t v;
	int r = parse_u64(s, s + strlen(s), &v);
	if (r < 0 || v == 0)
		return -EIO;
	*ret = v;
	return 0;
}

/* cpu.cfs_quota_us: "-1" (no limit: 0 is returned, *ret_quota = -1) or a positive integer. */
static int parse_v1_quota(char *s, int64_t *ret_quota)
{
	chomp(s);
	if (strcmp(s, "-1") == 0) {
		*ret_quota = -1;
		return 0;
	}
	return parse_positive(s, ret_quota);
}

static int parse_v1_period(char *s, int64_t *ret_period)
{
	chomp(s);
	return parse_positive(s, ret_period);
}

/* cpu.max: "max", "max PERIOD" (no limit: *ret_cpus = INFINITY) or "QUOTA PERIOD". */
static int parse_v2_max(char *s, double *ret_cpus)
{
	chomp(s);
	const char *sp = strchr(s, ' ');
	const char *qend = sp ? sp : s + strlen(s);
	int64_t period = 0;
	if (sp) {
		int r = parse_u64(sp + 1, sp + 1 + strlen(sp + 1), &period);
		if (r < 0 || period == 0)
			return -EIO;
	}
	if ((size_t)(qend - s) == 3 && memcmp(s, "max", 3) == 0) {
		*ret_cpus = INFINITY;
		return 0;
	}
	int64_t quota;
	if (!sp || parse_u64(s, qend, &quota) < 0 || quota == 0)
		return -EIO;
	*ret_cpus = (double)quota / (double)period;
	return 0;
}

/* --- affinity -------------------------------------------------------------------------------- */

static int read_affinity(int *ret)
{
	for (size_t ncpu = AFFINITY_FIRST_CPUS;; ncpu *= 2) {
		size_t size = CPU_ALLOC_SIZE(ncpu);
		cpu_set_t *set = weft__calloc(1, size);
		if (!set)
			return -ENOMEM;
		if (sched_getaffinity(0, size, set) == 0) {
			int n = CPU_COUNT_S(size, set);
			free(set);
			if (n <= 0)
				return -EIO;
			*ret = n;
			return 0;
		}
		int r = weft__neg_errno();
		free(set);
		/* EINVAL: the kernel's mask is wider than ours. Anything else is a real failure. */
		if (r != -EINVAL || ncpu >= AFFINITY_MAX_CPUS)
			return r;
	}
}

/* --- /proc/self/cgroup and mountinfo ---------------------------------------------------------- */

/* True if the comma-separated list `list` has the item `want` (exactly: "cpuacct" is not "cpu"). */
static bool list_has(const char *list, const char *want)
{
	size_t wl = strlen(want);
	for (const char *p = list;;) {
		const char *c = strchr(p, ',');
		size_t n = c ? (size_t)(c - p) : strlen(p);
		if (n == wl && memcmp(p, want, wl) == 0)
			return true;
		if (!c)
			return false;
		p = c + 1;
	}
}

/* The cgroup paths of the v1 "cpu" hierarchy and of the v2 hierarchy, pointing into `text` (which
 * is cut into lines in place); NULL when absent. */
static int parse_proc_cgroup(char *text, const char **ret_v1, const char **ret_v2)
{
	const char *v1 = NULL, *v2 = NULL;
	for (char *line = text, *next; line; line = next) {
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		if (!*line)
			continue;
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			return -EIO;
		*c1 = '\0';
		*c2 = '\0';
		const char *id = line, *ctl = c1 + 1, *path = c2 + 1;
		if (strcmp(id, "0") == 0 && *ctl == '\0') {
			if (!v2)
				v2 = path;
		} else if (*ctl && list_has(ctl, "cpu")) {
			if (!v1)
				v1 = path;
		}
	}
	*ret_v1 = v1;
	*ret_v2 = v2;
	return 0;
}

/* Undo mountinfo's octal escapes (\040 for a space, \011, \012, \134) in place. */
static void unescape(char *s)
{
	char *w = s;
	for (const char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			char c = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			if (c != '\0') {
				*w++ = c;
				r += 4;
				continue;
			}
		}
		*w++ = *r++;
	}
	*w = '\0';
}

/* The part of cgroup path `path` below mount root `mroot` ("" for the root itself, else starting
 * with '/'), or NULL if the mount does not show `path`. */
static const char *below(const char *path, const char *mroot)
{
	size_t n = strlen(mroot);
	while (n > 0 && mroot[n - 1] == '/')
		n--;
	if (strncmp(path, mroot, n) != 0)
		return NULL;
	if (path[n] != '\0' && path[n] != '/')
		return NULL;
	return path + n;
}

/* A usable cgroup path: absolute, no "." or ".." components. */
static bool path_ok(const char *path)
{
	if (!path || path[0] != '/')
		return false;
	for (const char *p = path; p; p = strchr(p + 1, '/')) {
		const char *c = p + 1;
		size_t n = strcspn(c, "/");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
	}
	return true;
}

struct mount_pick {
	const char *mountpoint; /* into the mountinfo text, unescaped */
	const char *rel;        /* into the cgroup text: the path below the mount's root */
	size_t rootlen;         /* to prefer the shortest root */
};

/* Choose the mounts for the v1 cpu path and the v2 path. Lines are cut and unescaped in place. */
static int parse_mountinfo(char *text, const char *v1path, const char *v2path,
                           struct mount_pick *ret_v1, struct mount_pick *ret_v2)
{
	struct mount_pick m1 = {0}, m2 = {0};
	for (char *line = text, *next; line; line = next) {
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		if (!*line)
			continue;
		/* id parent major:minor root mountpoint options [optional...] - fstype source super
		 * Fields are split on single spaces (strsep, not strtok): a source may be empty. */
		char *f[6], *rest = line;
		for (int i = 0; i < 6; i++)
			if (!(f[i] = strsep(&rest, " ")))
				return -EIO;
		char *tok;
		while ((tok = strsep(&rest, " ")) && strcmp(tok, "-") != 0)
			;
		char *fstype = tok ? strsep(&rest, " ") : NULL;
		char *source = fstype ? strsep(&rest, " ") : NULL;
		char *super = source ? strsep(&rest, " ") : NULL;
		if (!super)
			return -EIO;
		char *root = f[3], *mp = f[4];
		bool is1 = v1path && strcmp(fstype, "cgroup") == 0 && list_has(super, "cpu");
		bool is2 = v2path && strcmp(fstype, "cgroup2") == 0;
		if (is1 || is2) {
			unescape(root);
			unescape(mp);
			struct mount_pick *m = is1 ? &m1 : &m2;
			const char *rel = below(is1 ? v1path : v2path, root);
			size_t rl = strlen(root);
			/* Shortest root wins; on a tie the first listed (the system's own mount; a
			 * later one with the same root is usually a bind mount of it elsewhere). */
			if (rel && mp[0] == '/' && (!m->mountpoint || rl < m->rootlen))
				*m = (struct mount_pick){mp, rel, rl};
		}
	}
	*ret_v1 = m1;
	*ret_v2 = m2;
	return 0;
}

/* --- walking a cgroup and its parents --------------------------------------------------------- */

/* Walk from ROOT + mountpoint + rel up to ROOT + mountpoint, at most WALK_MAX folders, reading
 * the quota of `version` at each; keep the tightest. *ret_source is the binding file's path
 * (malloc'd) or NULL if no level limits. */
static int walk(const char *rootpfx, const struct mount_pick *m, int version, double *ret_cpus,
                char **ret_source)
{
	const char *mp = strcmp(m->mountpoint, "/") == 0 ? "" : m->mountpoint;
	size_t rl = strlen(m->rel);
	while (rl > 0 && m->rel[rl - 1] == '/')
		rl--;
	char *base = concat3(rootpfx, mp, m->rel); /* rel is cut back level by level below */
	if (!base)
		return -ENOMEM;
	size_t baselen = strlen(rootpfx) + strlen(mp);
	size_t cut = baselen + rl;
	base[cut] = '\0';
	const char *qname = version == 1 ? "/cpu.cfs_quota_us" : "/cpu.max";
	double best = INFINITY;
	char *best_path = NULL;
	int r = 0;
	for (int level = 0; level < WALK_MAX; level++) {
		char *qpath = concat3(base, qname, NULL);
		if (!qpath) {
			r = -ENOMEM;
			break;
		}
		char knob[KNOB_MAX + 1];
		double cpus = INFINITY;
		r = read_knob(qpath, knob);
		if (r == 0 && version == 1) {
			int64_t quota, period;
			r = parse_v1_quota(knob, &quota);
			if (r == 0 && quota > 0) {
				char *ppath = concat3(base, "/cpu.cfs_period_us", NULL);
				r = ppath ? read_knob(ppath, knob) : -ENOMEM;
				free(ppath);
				if (r == 0)
					r = parse_v1_period(knob, &period);
				if (r == 0)
					cpus = (double)quota / (double)period;
			}
		} else if (r == 0) {
			r = parse_v2_max(knob, &cpus);
		}
		if (r == -ENOENT)
			r = 0; /* a missing file: no limit at this level */
		if (r < 0) {
			free(qpath);
			break;
		}
		if (cpus < best) {
			best = cpus;
			free(best_path);
			best_path = qpath;
		} else {
			free(qpath);
		}
		if (cut == baselen)
			break; /* the mount point itself was read */
		while (cut > baselen && base[cut] != '/')
			cut--;
		base[cut] = '\0';
	}
	free(base);
	if (r < 0) {
		free(best_path);
		return r;
	}
	*ret_cpus = best;
	*ret_source = best_path;
	return 0;
}

/* Both hierarchies' tightest quotas; a version with no limit gives INFINITY and a NULL source. */
static int read_cgroups(const char *rootpfx, double *ret_c1, char **ret_s1, double *ret_c2,
                        char **ret_s2)
{
	char *cg = NULL, *mi = NULL, *path = NULL, *s1 = NULL, *s2 = NULL;
	double c1 = INFINITY, c2 = INFINITY;
	int r;

	path = concat3(rootpfx, "/proc/self/cgroup", NULL);
	if (!path)
		return -ENOMEM;
	r = read_whole(path, PROC_CGROUP_MAX, &cg);
	free(path);
	if (r == -ENOENT)
		goto done; /* no cgroup support: no limit */
	if (r < 0)
		return r;

	const char *v1, *v2;
	r = parse_proc_cgroup(cg, &v1, &v2);
	if (r < 0)
		goto out;
	if (!path_ok(v1))
		v1 = NULL;
	if (!path_ok(v2))
		v2 = NULL;
	if (!v1 && !v2)
		goto done;

	path = concat3(rootpfx, "/proc/self/mountinfo", NULL);
	if (!path) {
		r = -ENOMEM;
		goto out;
	}
	r = read_whole(path, MOUNTINFO_MAX, &mi);
	free(path);
	if (r == -ENOENT)
		goto done;
	if (r < 0)
		goto out;

	struct mount_pick m1, m2;
	r = parse_mountinfo(mi, v1, v2, &m1, &m2);
	if (r < 0)
		goto out;
	if (m1.mountpoint && (r = walk(rootpfx, &m1, 1, &c1, &s1)) < 0)
		goto out;
	if (m2.mountpoint && (r = walk(rootpfx, &m2, 2, &c2, &s2)) < 0)
		goto out;
done:
	r = 0;
	*ret_c1 = c1;
	*ret_s1 = s1;
	*ret_c2 = c2;
	*ret_s2 = s2;
	s1 = s2 = NULL;
out:
	free(s1);
	free(s2);
	free(cg);
	free(mi);
	return r;
}

/* --- the public functions -------------------------------------------------------------------- */

WEFT_API void weft_cpus_free(weft_cpus *cpus)
{
	if (!cpus)
		return;
	for (size_t i = 0; i < cpus->n; i++)
		free(cpus->limits[i].source);
	free(cpus);
}

static int add_limit(weft_cpus *c, int kind, double cpus, char *source)
{
	if (!source)
		return -ENOMEM;
	WEFT__ASSERT(c->n < NLIMITS);
	c->limits[c->n++] = (struct limit){kind, cpus, source, false};
	return 0;
}

static int read_all(weft_cpus *c, const char *root)
{
	const char *env = getenv("WEFT_CPUS");
	double over = 0;
	int r;
	if (env && (r = parse_override(env, &over)) < 0)
		return r;

	int aff;
	if ((r = read_affinity(&aff)) < 0)
		return r;
	if ((r = add_limit(c, WEFT_CPU_LIMIT_AFFINITY, aff, weft__strdup("sched_getaffinity"))) < 0)
		return r;

	/* The ROOT prefix without trailing slashes: "" for "/" and for NULL. */
	char *rootpfx = weft__strdup(root ? root : "");
	if (!rootpfx)
		return -ENOMEM;
	size_t rl = strlen(rootpfx);
	while (rl > 0 && rootpfx[rl - 1] == '/')
		rootpfx[--rl] = '\0';
	double c1 = INFINITY, c2 = INFINITY;
	char *s1 = NULL, *s2 = NULL;
	r = read_cgroups(rootpfx, &c1, &s1, &c2, &s2);
	free(rootpfx);
	if (r < 0)
		return r;
	if (s1 && (r = add_limit(c, WEFT_CPU_LIMIT_CGROUP1, c1, s1)) < 0) {
		free(s2);
		return r;
	}
	if (s2 && (r = add_limit(c, WEFT_CPU_LIMIT_CGROUP2, c2, s2)) < 0)
		return r;
	if (env &&
	    (r = add_limit(c, WEFT_CPU_LIMIT_OVERRIDE, over, concat3("WEFT_CPUS=", env, NULL))) < 0)
		return r;

	/* The binding limit: the override if present, else the first tightest. */
	size_t bind = 0;
	if (env) {
		bind = c->n - 1;
	} else {
		for (size_t i = 1; i < c->n; i++)
			if (c->limits[i].cpus < c->limits[bind].cpus)
				bind = i;
	}
	c->limits[bind].binding = true;
	c->capacity = c->limits[bind].cpus;
	double fl = floor(c->capacity + 1e-9);
	c->count = fl < 1 ? 1 : (int)fl; /* capacity <= max(affinity, OVERRIDE_MAX): fits an int */
	return 0;
}

WEFT_API int weft_cpus_read(weft_cpus **ret, const char *root)
{
	if (!ret || (root && root[0] != '/'))
		return -EINVAL;
	int saved = errno;
	weft_cpus *c = weft__calloc(1, sizeof(*c));
	int r = c ? read_all(c, root) : -ENOMEM;
	if (r < 0)
		weft_cpus_free(c);
	else
		*ret = c;
	errno = saved;
	return r < 0 ? r : 0;
}

WEFT_API int weft_cpus_count(const weft_cpus *cpus)
{
	return cpus ? cpus->count : -EINVAL;
}

WEFT_API double weft_cpus_capacity(const weft_cpus *cpus)
{
	return cpus ? cpus->capacity : -EINVAL;
}

WEFT_API int weft_cpus_limit(const weft_cpus *cpus, size_t i, int *ret_kind, double *ret_cpus,
                             const char **ret_source, bool *ret_binding)
{
	if (!cpus)
		return -EINVAL;
	if (i >= cpus->n)
		return -ENOENT;
	const struct limit *l = &cpus->limits[i];
	if (ret_kind)
		*ret_kind = l->kind;
	if (ret_cpus)
		*ret_cpus = l->cpus;
	if (ret_source)
		*ret_source = l->source;
	if (ret_binding)
		*ret_binding = l->binding;
	return 0;
}

WEFT_API const char *weft_cpu_limit_name(int kind)
{
	switch (kind) {
	case WEFT_CPU_LIMIT_AFFINITY: return "affinity";
	case WEFT_CPU_LIMIT_CGROUP1: return "cgroup1";
	case WEFT_CPU_LIMIT_CGROUP2: return "cgroup2";
	case WEFT_CPU_LIMIT_OVERRIDE: return "override";
	default: return "unknown";
	}
}

WEFT_API int weft_cpu_budget(double *ret_capacity)
{
	weft_cpus *c;
	int r = weft_cpus_read(&c, NULL);
	if (r < 0)
		return r;
	int n = c->count;
	if (ret_capacity)
		*ret_capacity = c->capacity;
	weft_cpus_free(c);
	return n;
}
