/* cmd-watch.c: `weft watch [options] -- PROG [ARGS...]`, the lock monitor for an unmodified
 * program. It runs PROG with libweft-watch.so preloaded (LD_PRELOAD), which watches every pthread
 * mutex, rwlock, condition wait, semaphore and C11 mtx_/cnd_ call of PROG and of the processes it
 * starts, reports deadlocks (within two scan periods), self-deadlocks, long waits, condition
 * waits that never end, robust mutexes whose owner died, and with --predict lock-order
 * inversions before they deadlock. Reports go to PROG's stderr as text with symbolized stacks and,
 * as JSON lines, to a temporary file that this command reads when PROG ends: it counts them,
 * copies them to --json FILE, and prints one summary line.
 *
 * Steps: find PROG (PATH when the name has no '/'); refuse, with one line and exit status 2, a
 * program that is missing, not executable, or statically linked (an ELF file without PT_INTERP:
 * no dynamic loader reads LD_PRELOAD there; static-pie included); find the preload library
 * (WEFT_WATCH_LIB, else beside this binary's build tree, else the installed copy in
 * WEFT_WATCH_LIBDIR); create the shared registry (weft_watch_shm_create: a memfd every process of
 * the run maps, so a cycle across processes is found like one across threads) and an unlinked
 * O_APPEND temporary file for the JSON lines; both fds are moved to numbers >= 100 so that a
 * program's own low fds are left alone, and inherited by PROG and its children. The environment:
 * LD_PRELOAD (the library first, then an LD_PRELOAD already set), WEFT_WATCH_SHM_FD,
 * WEFT_WATCH_JSON_FD, WEFT_WATCH_TEXT_FD=2, WEFT_WATCH_PREDICT, WEFT_WATCH_ON_DEADLOCK and, when
 * given, WEFT_WATCH_SCAN_MS, WEFT_WATCH_LONG_WAIT_MS, WEFT_WATCH_COND_WAIT_MS, WEFT_WATCH_PROFILE
 * (stale values from the caller's environment are removed), and WEFT_WATCH_JSON_ID=DEV:INO of
 * the temporary file, which the library checks the JSON fd against (a process that finds that fd
 * number open on a file of its own writes no JSON into it). PROG runs as a child; SIGINT,
 * SIGTERM, SIGHUP and SIGQUIT sent to this command (by kill, not by the terminal, which signals
 * the whole foreground group) are forwarded to it. The forwarding handlers are installed before
 * the fork with those signals blocked, and unblocked once the child's pid is known: a signal that
 * comes in between is held, then forwarded, never killing this command with PROG left orphaned
 * (the child restores the dispositions and the mask before exec). The test build of this command
 * (weft-test-hooks, compiled with WEFT_CLI_TEST_HOOKS, never installed) also reads
 * WEFT_WATCH_TEST_FORK_PAUSE_MS=N and pauses that long in the parent after the fork, signals
 * held, so that a test can signal it inside that window; the installed `weft` has no such code.
 *
 * Exit status: 0 nothing found and PROG exited 0; 1 nothing found and PROG failed (exited
 * non-zero or was killed); 2 bad usage or PROG cannot run; 3 something was found.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char *const CMD = "watch";

#ifndef WEFT_WATCH_LIBDIR
#define WEFT_WATCH_LIBDIR "/usr/local/lib/weft"
#endif
#define LIB_NAME "libweft-watch.so"
/* The inherited fds go at or above this, out of the way of a program's own. */
#define HIGH_FD 100
/* The JSON lines read back at most (a run that reports more is cut, and says so). */
#define JSON_MAX (64 << 20)
/* --profile: hold times sampled 1 in this many acquisitions. */
#define PROFILE_SAMPLE 16

static void help(void)
{
	printf("usage: weft watch [options] -- PROG [ARGS...]\n\n"
	       "Run PROG under the lock monitor: its pthread mutexes, rwlocks, condition waits,\n"
	       "semaphores and C11 mtx_/cnd_ calls (and those of the processes it starts) are\n"
	       "watched through LD_PRELOAD, without rebuilding it. Reports (text with stacks) go\n"
	       "to PROG's stderr as they happen; a summary line ends the run.\n\n"
	       "  --predict            also find lock-order inversions (A then B in one place, B\n"
	       "                       then A in another) before they deadlock\n"
	       "  --json FILE          write every report to FILE as one JSON object a line\n"
	       "  --on-deadlock ACT    what a deadlock does: report (default: report and go on),\n"
	       "                       abort (a core file shows every thread), exit (status 86)\n"
	       "  --scan-ms N          the watchdog's period in ms (default 100; 1 .. 60000):\n"
	       "                       a deadlock is reported within two periods\n"
	       "  --long-wait-ms N     report lock waits longer than N ms (default 10000;\n"
	       "                       -1 never)\n"
	       "  --cond-wait-ms N     report condition waits longer than N ms (default 60000;\n"
	       "                       -1 never)\n"
	       "  --profile            sample hold times and print the most contended call sites\n"
	       "                       when PROG exits\n\n"
	       "PROG must be dynamically linked (the monitor is a preloaded library). The library\n"
	       "is WEFT_WATCH_LIB if set, else the one beside this weft, else %s.\n\n"
	       "Exit status: 0 nothing found and PROG exited 0; 1 nothing found and PROG failed;\n"
	       "2 bad usage or PROG cannot run; 3 something was found.\n\n"
	       "example:\n"
	       "  weft watch --predict --on-deadlock exit -- ./server --port 8080\n",
	       WEFT_WATCH_LIBDIR "/" LIB_NAME);
}

struct opts {
	bool predict, profile;
	const char *json_path;
	const char *on_deadlock;
	const char *scan_ms, *long_wait_ms, *cond_wait_ms;
	char **prog_argv;
};

/* A decimal integer in [lo, hi] (or -1 when `never_ok`), kept as the string it was. */
static int parse_ms(const char *opt, const char *s, long lo, long hi, bool never_ok)
{
	char *end;
	int saved = errno;
	errno = 0;
	long v = strtol(s, &end, 10);
	bool bad = errno != 0 || end == s || *end != '\0';
	errno = saved;
	if (bad)
		return cli_usage_error(CMD, "%s '%s': not a whole number", opt, s);
	if ((v < lo || v > hi) && !(never_ok && v == -1))
		return cli_usage_error(CMD, "%s %s: must be from %ld to %ld%s", opt, s, lo, hi,
		                       never_ok ? ", or -1 for never" : "");
	return 0;
}

/* 0 to run, 2 bad usage (reported), -1 --help (printed). */
static int parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->on_deadlock = "report";
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break; /* PROG without "--" */
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			help();
			return -1;
		}
		if (strcmp(a, "--predict") == 0) {
			o->predict = true;
			continue;
		}
		if (strcmp(a, "--profile") == 0) {
			o->profile = true;
			continue;
		}
		const char *const with_value[] = {"--json", "--on-deadlock", "--scan-ms",
		                                  "--long-wait-ms", "--cond-wait-ms"};
		bool known = false;
		for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
			known = known || strcmp(a, with_value[k]) == 0;
		if (!known)
			return cli_usage_error(CMD, "unknown option '%s' (see `weft watch --help`)",
			                       a);
		if (i + 1 >= argc)
			return cli_usage_error(CMD, "%s needs a value", a);
		const char *v = argv[++i];
		if (strcmp(a, "--json") == 0) {
			if (!v[0])
				return cli_usage_error(CMD, "--json needs a file name");
			o->json_path = v;
		} else if (strcmp(a, "--on-deadlock") == 0) {
			if (strcmp(v, "report") != 0 && strcmp(v, "abort") != 0 &&
			    strcmp(v, "exit") != 0)
				return cli_usage_error(
				        CMD, "--on-deadlock '%s': want report, abort or exit", v);
			o->on_deadlock = v;
		} else if (strcmp(a, "--scan-ms") == 0) {
			if (parse_ms(a, v, 1, 60000, false))
				return 2;
			o->scan_ms = v;
		} else if (strcmp(a, "--long-wait-ms") == 0) {
			if (parse_ms(a, v, 1, 86400000, true))
				return 2;
			o->long_wait_ms = v;
		} else {
			if (parse_ms(a, v, 1, 86400000, true))
				return 2;
			o->cond_wait_ms = v;
		}
	}
	if (i >= argc)
		return cli_usage_error(CMD, "no program to run (weft watch [options] -- PROG "
		                            "[ARGS...])");
	o->prog_argv = argv + i;
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Finding and vetting PROG.
 */

/* A regular file we may execute: 0, or a positive errno (ENOENT, EACCES, EISDIR). */
static int runnable(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return errno;
	if (S_ISDIR(st.st_mode))
		return EISDIR;
	if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
		return EACCES;
	return 0;
}

static void explain(const char *name, int err)
{
	if (err == ENOENT)
		cli_usage_error(CMD, "%s: not found", name);
	else if (err == EISDIR)
		cli_usage_error(CMD, "%s: is a directory", name);
	else if (err == EACCES)
		cli_usage_error(CMD, "%s: not executable (permission denied)", name);
	else
		cli_usage_error(CMD, "%s: %s", name, strerror(err));
}

/* PROG's path into buf (PATH search without a '/'), or a line on stderr and false. */
static bool find_prog(const char *name, char *buf, size_t cap)
{
	if (strchr(name, '/')) {
		int err = runnable(name);
		if (err) {
			explain(name, err);
			return false;
		}
		snprintf(buf, cap, "%s", name);
		return true;
	}
	const char *path = getenv("PATH");
	if (!path || !path[0])
		path = "/usr/local/bin:/usr/bin:/bin";
	int first_err = ENOENT;
	for (const char *p = path;; p++) {
		const char *colon = strchrnul(p, ':');
		size_t dlen = (size_t)(colon - p);
		int n = dlen ? snprintf(buf, cap, "%.*s/%s", (int)dlen, p, name)
		             : snprintf(buf, cap, "./%s", name);
		if (n > 0 && (size_t)n < cap) {
			int err = runnable(buf);
			if (!err)
				return true;
			if (err != ENOENT && first_err == ENOENT)
				first_err = err;
		}
		if (!*colon)
			break;
		p = colon;
	}
	explain(name, first_err);
	return false;
}

/* 1: an ELF file without PT_INTERP (statically linked, static-pie included); 0 otherwise (a
 * dynamic ELF file, a script, anything the kernel will judge itself). */
static int statically_linked(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int result = 0;
	unsigned char ident[EI_NIDENT];
	if (pread(fd, ident, sizeof(ident), 0) != (ssize_t)sizeof(ident) ||
	    memcmp(ident, ELFMAG, SELFMAG) != 0)
		goto out;
	uint64_t phoff;
	unsigned phnum, phentsize;
	if (ident[EI_CLASS] == ELFCLASS64) {
		Elf64_Ehdr eh;
		if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
			goto out;
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
	} else if (ident[EI_CLASS] == ELFCLASS32) {
		Elf32_Ehdr eh;
		if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
			goto out;
		phoff = eh.e_phoff;
		phnum = eh.e_phnum;
		phentsize = eh.e_phentsize;
	} else {
		goto out;
	}
	if (phnum == 0 || phnum > 4096 || phentsize < sizeof(uint32_t))
		goto out;
	bool interp = false;
	for (unsigned i = 0; i < phnum && !interp; i++) {
		uint32_t type; /* p_type is the first word of both program header layouts */
		if (pread(fd, &type, sizeof(type), (off_t)(phoff + (uint64_t)i * phentsize)) !=
		    (ssize_t)sizeof(type))
			goto out;
		interp = type == PT_INTERP;
	}
	result = !interp;
out:
	close(fd);
	return result;
}

/* The preload library's path into buf, or a line on stderr and false. */
static bool find_lib(char *buf, size_t cap)
{
	const char *env = getenv("WEFT_WATCH_LIB");
	if (env && env[0]) {
		if (access(env, R_OK) < 0) {
			cli_usage_error(CMD, "WEFT_WATCH_LIB=%s: %s", env, strerror(errno));
			return false;
		}
		snprintf(buf, cap, "%s", env);
		return true;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			/* the build tree: BUILD/tools/weft/weft, BUILD/src/libweft-watch.so */
			const char *rel[] = {"/../../src/" LIB_NAME, "/../src/" LIB_NAME};
			for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
				int k = snprintf(buf, cap, "%s%s", exe, rel[i]);
				if (k > 0 && (size_t)k < cap && access(buf, R_OK) == 0)
					return true;
			}
		}
	}
	snprintf(buf, cap, "%s", WEFT_WATCH_LIBDIR "/" LIB_NAME);
	if (access(buf, R_OK) == 0)
		return true;
	cli_usage_error(CMD, "cannot find %s (set WEFT_WATCH_LIB to its path)", LIB_NAME);
	return false;
}

/* fd moved to a number >= HIGH_FD, close-on-exec (the child clears it); -1 on failure. */
static int move_high(int fd)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
	int saved = errno;
	close(fd);
	errno = saved;
	return h;
}

/* ------------------------------------------------------------------------------------------------
 * Running PROG.
 */
static volatile sig_atomic_t child_pid;

static void forward(int sig, siginfo_t *si, void *ctx)
{
	(void)ctx;
	/* the terminal signals the whole foreground group, PROG included: only kill()s are ours */
	if (child_pid > 0 && si && si->si_code <= 0)
		kill(child_pid, sig);
}

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NFORWARDED (sizeof(FORWARDED) / sizeof(FORWARDED[0]))

static void set_env_or_unset(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

/* In the child: the environment, the inherited fds, then exec. Reports exec's errno on
 * `err_fd` (close-on-exec: nothing arrives when exec succeeds). */
static _Noreturn void run_child(const struct opts *o, const char *path, const char *lib, int shm_fd,
                                int json_fd, int err_fd, const sigset_t *old_mask)
{
	for (size_t i = 0; i < sizeof(FORWARDED) / sizeof(FORWARDED[0]); i++)
		signal(FORWARDED[i], SIG_DFL);
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	fcntl(shm_fd, F_SETFD, 0);
	fcntl(json_fd, F_SETFD, 0);

	char num[32];
	const char *old = getenv("LD_PRELOAD");
	size_t len = strlen(lib) + (old ? strlen(old) + 2 : 1);
	char *preload = malloc(len);
	if (preload) {
		snprintf(preload, len, "%s%s%s", lib, old && old[0] ? ":" : "",
		         old && old[0] ? old : "");
		setenv("LD_PRELOAD", preload, 1);
	}
	snprintf(num, sizeof(num), "%d", shm_fd);
	setenv("WEFT_WATCH_SHM_FD", num, 1);
	snprintf(num, sizeof(num), "%d", json_fd);
	setenv("WEFT_WATCH_JSON_FD", num, 1);
	struct stat st;
	if (fstat(json_fd, &st) == 0) {
		snprintf(num, sizeof(num), "%llu:%llu", (unsigned long long)st.st_dev,
		         (unsigned long long)st.st_ino);
		setenv("WEFT_WATCH_JSON_ID", num, 1);
	} else {
		unsetenv("WEFT_WATCH_JSON_ID");
	}
	setenv("WEFT_WATCH_TEXT_FD", "2", 1);
	setenv("WEFT_WATCH_PREDICT", o->predict ? "1" : "0", 1);
	setenv("WEFT_WATCH_ON_DEADLOCK", o->on_deadlock, 1);
	set_env_or_unset("WEFT_WATCH_SCAN_MS", o->scan_ms);
	set_env_or_unset("WEFT_WATCH_LONG_WAIT_MS", o->long_wait_ms);
	set_env_or_unset("WEFT_WATCH_COND_WAIT_MS", o->cond_wait_ms);
	snprintf(num, sizeof(num), "%d", PROFILE_SAMPLE);
	set_env_or_unset("WEFT_WATCH_PROFILE", o->profile ? num : NULL);

	execv(path, o->prog_argv);
	int err = errno;
	ssize_t w = write(err_fd, &err, sizeof(err));
	(void)w;
	_exit(127);
}

/* ------------------------------------------------------------------------------------------------
 * The JSON lines: read back, counted by event, copied.
 */
struct found {
	uint64_t by_event[WEFT_WATCH_EVENT_COUNT];
	uint64_t total;
};

static void count_line(const char *line, size_t len, struct found *f)
{
	static const char key[] = "\"event\":\"";
	const char *p = memmem(line, len, key, sizeof(key) - 1);
	if (!p)
		return;
	p += sizeof(key) - 1;
	const char *end = memchr(p, '"', len - (size_t)(p - line));
	if (!end)
		return;
	for (int e = 1; e < WEFT_WATCH_EVENT_COUNT; e++) {
		const char *name = weft_watch_event_name((weft_watch_event)e);
		if (strlen(name) == (size_t)(end - p) && memcmp(name, p, (size_t)(end - p)) == 0) {
			f->by_event[e]++;
			f->total++;
			return;
		}
	}
}

/* Reads the file from its start (at most JSON_MAX), counts, copies to out_fd (-1: none).
 * Returns 0, or -errno for a failed copy. */
static int collect(int json_fd, int out_fd, struct found *f)
{
	struct stat st = {0};
	size_t cap =
	        fstat(json_fd, &st) == 0 && st.st_size < JSON_MAX ? (size_t)st.st_size : JSON_MAX;
	if (cap == JSON_MAX && st.st_size > JSON_MAX)
		fprintf(stderr,
		        "weft watch: the reports take %lld bytes: only the first %d are counted "
		        "and copied\n",
		        (long long)st.st_size, JSON_MAX);
	char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	size_t len = 0;
	while (len < cap) {
		ssize_t n = pread(json_fd, buf + len, cap - len, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	for (size_t at = 0; at < len;) {
		char *nl = memchr(buf + at, '\n', len - at);
		size_t end = nl ? (size_t)(nl - buf) : len;
		count_line(buf + at, end - at, f);
		at = end + 1;
	}
	int r = 0;
	for (size_t done = 0; out_fd >= 0 && done < len;) {
		ssize_t w = write(out_fd, buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = -(w < 0 ? errno : EIO);
			break;
		}
		done += (size_t)w;
	}
	free(buf);
	return r;
}

static void summary(const char *prog, const struct found *f, int status)
{
	static const struct {
		weft_watch_event e;
		const char *one, *many;
	} words[] = {
	        {WEFT_WATCH_DEADLOCK, "deadlock", "deadlocks"},
	        {WEFT_WATCH_SELF_DEADLOCK, "self-deadlock", "self-deadlocks"},
	        {WEFT_WATCH_INVERSION, "lock-order inversion", "lock-order inversions"},
	        {WEFT_WATCH_LONG_WAIT, "long wait", "long waits"},
	        {WEFT_WATCH_COND_WAIT, "long condition wait", "long condition waits"},
	        {WEFT_WATCH_OWNER_DIED, "dead owner", "dead owners"},
	};
	char found[512] = "nothing found";
	if (f->total) {
		size_t at = 0;
		found[0] = '\0';
		for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
			uint64_t n = f->by_event[words[i].e];
			if (!n)
				continue;
			at += (size_t)snprintf(found + at, sizeof(found) - at, "%s%" PRIu64 " %s",
			                       at ? ", " : "", n,
			                       n == 1 ? words[i].one : words[i].many);
			if (at >= sizeof(found))
				break;
		}
		if (at < sizeof(found))
			snprintf(found + at, sizeof(found) - at, " found");
	}
	char how[128];
	if (WIFEXITED(status)) {
		snprintf(how, sizeof(how), "exited %d", WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		const char *abbrev = sigabbrev_np(sig);
		snprintf(how, sizeof(how), "was killed by SIG%s (%s)%s", abbrev ? abbrev : "?",
		         strsignal(sig), WCOREDUMP(status) ? ", core dumped" : "");
	} else {
		snprintf(how, sizeof(how), "ended (wait status %#x)", status);
	}
	fprintf(stderr, "weft watch: %s; %s %s\n", found, prog, how);
}

int cmd_watch(int argc, char **argv)
{
	struct opts o;
	int r = parse_args(argc, argv, &o);
	if (r < 0)
		return 0;
	if (r)
		return r;

	char path[PATH_MAX], lib[PATH_MAX];
	const char *name = o.prog_argv[0];
	if (!find_prog(name, path, sizeof(path)))
		return 2;
	if (statically_linked(path))
		return cli_usage_error(
		        CMD,
		        "%s: statically linked: the monitor is a preloaded library and "
		        "needs a dynamically linked program",
		        name);
	if (!find_lib(lib, sizeof(lib)))
		return 2;

	int out_fd = -1;
	if (o.json_path) {
		out_fd = open(o.json_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (out_fd < 0)
			return cli_usage_error(CMD, "--json %s: %s", o.json_path, strerror(errno));
	}
	int shm_fd = -1, json_fd = -1, pipe_fd[2] = {-1, -1};
	int status = 2;
	struct sigaction old_sa[NFORWARDED];
	bool handlers_set = false;
	r = weft_watch_shm_create(0, &shm_fd);
	if (r < 0) {
		cli_usage_error(CMD, "cannot create the shared registry: %s", weft_strerror(r));
		goto out;
	}
	if ((shm_fd = move_high(shm_fd)) < 0) {
		cli_usage_error(CMD, "cannot move the registry's fd: %s", strerror(errno));
		goto out;
	}
	const char *tmp = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	snprintf(tmpl, sizeof(tmpl), "%s/weft-watch-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	json_fd = mkostemp(tmpl, O_APPEND | O_CLOEXEC);
	if (json_fd < 0) {
		cli_usage_error(CMD, "cannot create a temporary file in %s: %s",
		                tmp && tmp[0] ? tmp : "/tmp", strerror(errno));
		goto out;
	}
	unlink(tmpl);
	if ((json_fd = move_high(json_fd)) < 0) {
		cli_usage_error(CMD, "cannot move the temporary file's fd: %s", strerror(errno));
		goto out;
	}
	if (pipe2(pipe_fd, O_CLOEXEC) < 0) {
		cli_usage_error(CMD, "pipe: %s", strerror(errno));
		goto out;
	}

	/* the forwarding handlers before the fork, the signals held until the child's pid is
	 * known: one sent in between is forwarded then */
	sigset_t fwd, old_mask;
	sigemptyset(&fwd);
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaddset(&fwd, FORWARDED[i]);
	sigprocmask(SIG_BLOCK, &fwd, &old_mask);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = forward;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaction(FORWARDED[i], &sa, &old_sa[i]);
	handlers_set = true;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
		cli_usage_error(CMD, "cannot start %s: %s", name, strerror(errno));
		goto out;
	}
	if (pid == 0)
		run_child(&o, path, lib, shm_fd, json_fd, pipe_fd[1], &old_mask);
	child_pid = pid;
#if defined(WEFT_CLI_TEST_HOOKS)
	const char *pause = getenv("WEFT_WATCH_TEST_FORK_PAUSE_MS");
	if (pause && atoi(pause) > 0) {
		struct timespec ts = {atoi(pause) / 1000, (atoi(pause) % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
#endif
	sigprocmask(SIG_SETMASK, &old_mask, NULL);

	close(pipe_fd[1]);
	pipe_fd[1] = -1;
	int exec_err = 0;
	ssize_t n;
	while ((n = read(pipe_fd[0], &exec_err, sizeof(exec_err))) < 0 && errno == EINTR)
		;
	int wst = 0;
	while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	if (n == (ssize_t)sizeof(exec_err)) {
		cli_usage_error(CMD, "cannot run %s: %s", name, strerror(exec_err));
		goto out;
	}

	struct found f;
	memset(&f, 0, sizeof(f));
	r = collect(json_fd, out_fd, &f);
	if (r < 0)
		cli_error(CMD, "writing %s: %s", o.json_path ? o.json_path : "the reports",
		          weft_strerror(r));
	summary(name, &f, wst);
	if (f.total)
		status = 3;
	else
		status = WIFEXITED(wst) && WEXITSTATUS(wst) == 0 && r == 0 ? 0 : 1;
out:
	if (handlers_set)
		for (size_t i = 0; i < NFORWARDED; i++)
			sigaction(FORWARDED[i], &old_sa[i], NULL);
	if (out_fd >= 0)
		close(out_fd);
	if (shm_fd >= 0)
		close(shm_fd);
	if (json_fd >= 0)
		close(json_fd);
	if (pipe_fd[0] >= 0)
		close(pipe_fd[0]);
	if (pipe_fd[1] >= 0)
		close(pipe_fd[1]);
	return status;
}
