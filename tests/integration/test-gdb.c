/* test-gdb.c: tools/gdb/weft-gdb.py lists a process's fibers and prints a parked fiber's
 * backtrace, on a live process and on a core file.
 *
 * The process is tests/gdb-target (tests/integration/gdb-target.c): a scheduler "gdbt" with 2
 * workers, fibers parked on a sleep, a channel receive, a wait group (pinned) and, in a child
 * scope, a sleep; an unnamed fiber made runnable but never run again; two fibers that hold both
 * workers (blocked in pause(), never yielding); one fiber never started; and one fiber of a
 * second scheduler "aux". It prints "ready NAME=ID ..." once every fiber is in
 * its state, and the states then stay put.
 *
 * Each case runs `gdb -batch -nx` with the extension sourced and one -ex per command, separated
 * by `echo ==== NAME` markers so each command's output can be checked on its own. A live session
 * attaches to the target (`gdb -p PID`) when Yama's ptrace_scope allows it (0, or 1: the target
 * sets PR_SET_PTRACER_ANY; 2 needs root) and when the attach works; otherwise gdb starts the
 * target itself and stops it at gdb_target_ready(), and the case finds the fibers by name. The
 * core-file case makes the core with gdb's `gcore` in a live session, then debugs the core. The
 * errors case checks the one-line messages: no process, no weft, no scheduler yet, and weft
 * without debug info (a copy of the target beside a copy of libweft.so without it).
 *
 * The core-file case exists only in builds without a sanitizer: ASan and TSan reserve terabytes of
 * address space, which gdb 13's gcore saves (as zeros) into the core, past any timeout. The live
 * cases run in every build: the extension must read a sanitized process too.
 *
 * Nothing is built at test time: the target is built by meson beside this test. Needs gdb
 * (scripts/deps check installs it); without it every case skips (a failure under
 * WEFT_TEST_NO_SKIP=1, as in CI).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal/common.h" /* WEFT__TSAN */

#define GDB_TIMEOUT 120

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif
#ifndef ASAN_BUILD
#define ASAN_BUILD 0
#endif

/* One gdb command and the name its output is found under. */
struct cmd {
	const char *name, *cmd;
};

struct session {
	bool attach; /* attached to a target we started; else gdb started it */
	pid_t pid;   /* attach mode: the target (we kill and reap it) */
	char ready[512];
};

static void need_gdb(void)
{
	if (!th_have_program("gdb"))
		SKIP("gdb is not installed (scripts/deps check installs it)");
}

static const char *script_path(void)
{
	static char path[1024];
	snprintf(path, sizeof(path), "%s/tools/gdb/weft-gdb.py", th_env_path("WEFT_SOURCE_ROOT"));
	return path;
}

static const char *target_path(void)
{
	static char path[1024];
	snprintf(path, sizeof(path), "%s/tests/gdb-target", th_env_path("WEFT_BUILD_ROOT"));
	return path;
}

/* Yama: 0 any process of the user, 1 descendants or processes that allow it (the target does),
 * 2 CAP_SYS_PTRACE only (root here), 3 never. No Yama: the classic rules (same user). */
static bool attach_allowed(void)
{
	char *s = th_read_file("/proc/sys/kernel/yama/ptrace_scope");
	int scope = s ? atoi(s) : 0;
	free(s);
	return scope <= 1 || (scope == 2 && geteuid() == 0);
}

/* Start the target and wait for its "ready" line. */
static void start_target(struct session *ss)
{
	char log[1024];
	snprintf(log, sizeof(log), "%s/target.log", th_tmpdir());
	char *argv[] = {(char *)target_path(), NULL};
	ss->pid = th_spawn(argv, log);
	double waited = 0, limit = 30 * th_scale();
	for (;;) {
		char *text = th_read_file(log);
		const char *r = text ? strstr(text, "ready ") : NULL;
		if (r && strchr(r, '\n')) {
			snprintf(ss->ready, sizeof(ss->ready), "%.*s", (int)(strchr(r, '\n') - r),
			         r);
			free(text);
			return;
		}
		int st;
		if (waitpid(ss->pid, &st, WNOHANG) == ss->pid) {
			ss->pid = 0;
			FAIL("gdb-target exited (status 0x%x) before it was ready:\n%s", st,
			     text ? text : "");
		}
		if (waited > limit) {
			th_stop(ss->pid, SIGKILL, 10);
			ss->pid = 0;
			FAIL("gdb-target was not ready after %.0f s:\n%s", limit, text ? text : "");
		}
		free(text);
		th_sleep_ms(20);
		waited += 0.02;
	}
}

static void stop_target(struct session *ss)
{
	if (ss->pid > 0)
		th_stop(ss->pid, SIGKILL, 10);
	ss->pid = 0;
}

/* Run gdb with the extension sourced and, for each command, an echo of "==== NAME" and the
 * command. `pre` are arguments before the -ex list (how gdb gets its process). Returns gdb's
 * output, stdout and stderr merged (malloc'd). */
static char *run_gdb(const char *const *pre, const struct cmd *cmds)
{
	char *argv[128];
	char marks[32][96];
	int n = 0, m = 0;
	argv[n++] = "gdb";
	argv[n++] = "-batch";
	argv[n++] = "-nx";
	argv[n++] = "-iex";
	argv[n++] = "set debuginfod enabled off";
	argv[n++] = "-iex";
	argv[n++] = "set disable-randomization off"; /* no personality() call to be refused */
	for (; *pre; pre++)
		argv[n++] = (char *)*pre;
	char source[1200];
	snprintf(source, sizeof(source), "source %s", script_path());
	argv[n++] = "-ex";
	argv[n++] = source;
	for (; cmds->name; cmds++) {
		ASSERT_LT(m, 32);
		ASSERT_LT(n, 120);
		snprintf(marks[m], sizeof(marks[m]), "echo ==== %s\\n", cmds->name);
		argv[n++] = "-ex";
		argv[n++] = marks[m++];
		argv[n++] = "-ex";
		argv[n++] = (char *)cmds->cmd;
	}
	argv[n++] = "-ex";
	argv[n++] = "echo ==== end\\n";
	argv[n] = NULL;
	char *out;
	int st = th_run(argv, GDB_TIMEOUT, true, &out);
	if (st == -1)
		FAIL("gdb timed out after %d s; its output:\n%s", GDB_TIMEOUT, out);
	if (!WIFEXITED(st))
		FAIL("gdb did not exit normally (status 0x%x); its output:\n%s", st, out);
	return out;
}

/* Get a live target for gdb: started here when attaching is allowed and works (a quick gdb -p
 * probe), else left for gdb to start (force_run: always). */
static void session_start(struct session *ss, bool force_run)
{
	memset(ss, 0, sizeof(*ss));
	if (force_run || !attach_allowed())
		return;
	start_target(ss);
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", (int)ss->pid);
	const char *pre[] = {"-p", pid, NULL};
	const struct cmd probe[] = {{"probe", "info inferiors"}, {NULL, NULL}};
	char *out = run_gdb(pre, probe);
	if (strstr(out, "ptrace: Operation not permitted") || strstr(out, "Could not attach")) {
		fprintf(stderr, "# attaching is not allowed here: gdb starts the target instead\n");
		stop_target(ss);
		memset(ss, 0, sizeof(*ss));
	} else {
		ss->attach = true;
	}
	free(out);
}

/* Run gdb on the session's target: attached, or started under gdb up to gdb_target_ready() (then
 * ss->ready gets the target's "ready" line from gdb's output). */
static char *session_gdb(struct session *ss, const struct cmd *cmds)
{
	if (ss->attach) {
		char pid[32];
		snprintf(pid, sizeof(pid), "%d", (int)ss->pid);
		const char *pre[] = {"-p", pid, NULL};
		return run_gdb(pre, cmds);
	}
	const char *pre[] = {"-ex", "break gdb_target_ready", "-ex", "run", target_path(), NULL};
	char *out = run_gdb(pre, cmds);
	const char *r = strstr(out, "ready ");
	if (!r || !strstr(out, "gdb_target_ready"))
		FAIL("the target did not stop at gdb_target_ready under gdb:\n%s", out);
	snprintf(ss->ready, sizeof(ss->ready), "%.*s", (int)strcspn(r, "\n"), r);
	return out;
}

/* The id the target gave fiber `name` in its ready line ("sleeper=1 ..."). */
static const char *fiber_id(const struct session *ss, const char *name)
{
	static char id[8][24];
	static int next;
	char key[64];
	snprintf(key, sizeof(key), " %s=", name);
	const char *p = strstr(ss->ready, key);
	if (!p)
		FAIL("no %s in the ready line: %s", name, ss->ready);
	p += strlen(key);
	char *out = id[next++ % 8];
	snprintf(out, sizeof(id[0]), "%.*s", (int)strspn(p, "0123456789"), p);
	return out;
}

/* The output of the command echoed as "==== name" (malloc'd). */
static char *section(const char *out, const char *name)
{
	char mark[128];
	snprintf(mark, sizeof(mark), "==== %s\n", name);
	const char *p = strstr(out, mark);
	if (!p)
		FAIL("no output for \"%s\"; gdb said:\n%s", name, out);
	p += strlen(mark);
	const char *end = strstr(p, "==== ");
	size_t len = end ? (size_t)(end - p) : strlen(p);
	char *s = malloc(len + 1);
	ASSERT_NOT_NULL(s);
	memcpy(s, p, len);
	s[len] = 0;
	return s;
}

enum { ID, NAME, STATE, WAIT, SCHED, WORKER, PINNED, ADDR, NFIELDS };

/* The row of `weft fibers` for the fiber shown as `name`, split into its fields. */
static void fiber_row(const char *table, const char *name, char f[NFIELDS][64])
{
	char quoted[80];
	snprintf(quoted, sizeof(quoted), "\"%s\"", name);
	for (const char *line = table; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[512];
		snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
		int n = 0;
		char *save = NULL;
		for (char *t = strtok_r(buf, " \t", &save); t && n < NFIELDS;
		     t = strtok_r(NULL, " \t", &save))
			snprintf(f[n++], 64, "%s", t);
		if (n == NFIELDS && strcmp(f[NAME], quoted) == 0)
			return;
		line = end ? end + 1 : NULL;
	}
	FAIL("no row for fiber %s in:\n%s", quoted, table);
}

static void check_row(const char *table, const char *name, const char *state, const char *wait,
                      const char *sched, const char *pinned)
{
	char f[NFIELDS][64];
	fiber_row(table, name, f);
	ASSERT_STR_EQ(f[STATE], state);
	ASSERT_STR_EQ(f[WAIT], wait);
	ASSERT_STR_EQ(f[SCHED], sched);
	ASSERT_STR_EQ(f[PINNED], pinned);
	ASSERT_TRUE(strncmp(f[ADDR], "0x", 2) == 0);
}

/* The table of the target's fibers, as it must be whichever way gdb got the process. */
static void check_fibers(const char *table, const struct session *ss)
{
	ASSERT_CONTAINS(table, "9 fibers in 2 schedulers\n");
	ASSERT_CONTAINS(table, "ID  NAME");
	const char *g = "\"gdbt\"";
	check_row(table, "sleeper", "waiting", "sleep", g, "no");
	check_row(table, "receiver", "waiting", "chan-recv", g, "no");
	check_row(table, "waiter", "waiting", "waitgroup", g, "yes");
	check_row(table, "child-sleeper", "waiting", "sleep", g, "no");
	check_row(table, "parked_on_sem", "runnable", "-", g, "no"); /* unnamed: its function */
	check_row(table, "holder", "running", "-", g, "no");
	check_row(table, "holder-2", "running", "-", g, "no");
	check_row(table, "not-started", "runnable", "-", g, "no");
	check_row(table, "aux-sleeper", "waiting", "sleep", "\"aux\"", "no");
	char f[NFIELDS][64], f2[NFIELDS][64];
	fiber_row(table, "holder", f);
	fiber_row(table, "holder-2", f2);
	/* the two holders hold the two workers */
	ASSERT_TRUE((strcmp(f[WORKER], "0") == 0 && strcmp(f2[WORKER], "1") == 0) ||
	            (strcmp(f[WORKER], "1") == 0 && strcmp(f2[WORKER], "0") == 0));
	fiber_row(table, "not-started", f);
	ASSERT_STR_EQ(f[WORKER], "-");
	if (ss->ready[0]) {
		fiber_row(table, "receiver", f);
		ASSERT_STR_EQ(f[ID], fiber_id(ss, "receiver"));
	}
}

/* A parked fiber's backtrace: its own frames only, from #0, the wait's functions inside the
 * fiber's function. `inner` must come before (deeper than) `outer`. */
static void check_bt(const char *bt, const char *title, const char *inner, const char *outer)
{
	ASSERT_CONTAINS(bt, title);
	ASSERT_CONTAINS(bt, "\n#0  ");
	ASSERT_CONTAINS(bt, " in weft__wait_park (");
	char in[96], out[96];
	snprintf(in, sizeof(in), " in %s (", inner);
	snprintf(out, sizeof(out), " in %s (", outer);
	ASSERT_CONTAINS(bt, in);
	ASSERT_CONTAINS(bt, out);
	ASSERT_LT(strstr(bt, in) - bt, strstr(bt, out) - bt);
	/* nothing of the thread the backtrace was borrowed from */
	ASSERT_NOT_CONTAINS(bt, " in main (");
	ASSERT_NOT_CONTAINS(bt, "gdb_target_ready");
	ASSERT_NOT_CONTAINS(bt, "pause (");
	ASSERT_NOT_CONTAINS(bt, "\n#1  0x0000000000000000");
}

/* How a command names a fiber: by id when the ids are known before gdb runs (attached), else
 * by name. */
static const char *fiber_ref(const struct session *ss, const char *name)
{
	return ss->attach ? fiber_id(ss, name) : name;
}

static void check_live(bool force_run)
{
	need_gdb();
	struct session ss;
	session_start(&ss, force_run);
	char sleeper[64];
	snprintf(sleeper, sizeof(sleeper), "weft bt %s", fiber_ref(&ss, "sleeper"));
	const struct cmd cmds[] = {
	        {"fibers", "weft fibers"},
	        {"bt sleeper", sleeper},
	        {"bt waiter", "weft bt waiter"},
	        {"bt runnable", "weft bt parked_on_sem"},
	        {"bt holder", "weft bt holder"},
	        {"bt not-started", "weft bt not-started"},
	        {"bt all", "weft bt all"},
	        {"thread bt", "bt"},
	        {"unknown", "weft bt no-such-fiber"},
	        {NULL, NULL},
	};
	char *out = session_gdb(&ss, cmds);
	stop_target(&ss);

	char *s = section(out, "fibers");
	check_fibers(s, &ss);
	free(s);
	s = section(out, "bt sleeper");
	check_bt(s, "\"sleeper\" waiting on sleep, sched \"gdbt\"", "weft_fiber_sleep_until",
	         "parked_on_sleep");
	free(s);
	s = section(out, "bt waiter");
	check_bt(s, "\"waiter\" waiting on waitgroup", "weft_waitgroup_wait",
	         "parked_on_waitgroup");
	ASSERT_CONTAINS(s, "(pinned)");
	free(s);
	s = section(out, "bt runnable");
	check_bt(s, "\"parked_on_sem\" runnable, sched \"gdbt\"", "weft_fsem_acquire",
	         "parked_on_sem");
	free(s);
	s = section(out, "bt holder");
	ASSERT_CONTAINS(s, "\"holder\" running");
	ASSERT_CONTAINS(s, ": it runs now, on worker ");
	ASSERT_CONTAINS(s, ", in gdb thread ");
	ASSERT_CONTAINS(s, "then `bt` shows its stack");
	ASSERT_NOT_CONTAINS(s, "#0");
	free(s);
	s = section(out, "bt not-started");
	ASSERT_CONTAINS(s, "has not run yet (it will start in never_runs)");
	free(s);
	s = section(out, "bt all");
	ASSERT_CONTAINS(s, " in parked_on_sleep (");
	ASSERT_CONTAINS(s, " in parked_on_chan_recv (");
	ASSERT_CONTAINS(s, " in weft_chan_recv (");
	ASSERT_CONTAINS(s, " in parked_on_waitgroup (");
	ASSERT_CONTAINS(s, " in parked_in_child_scope (");
	ASSERT_CONTAINS(s, " in parked_on_sem (");
	ASSERT_CONTAINS(s, "\"aux-sleeper\" waiting on sleep, sched \"aux\" worker 0:\n");
	ASSERT_CONTAINS(s, " in parked_in_aux (");
	ASSERT_NOT_CONTAINS(s, "hold_worker");
	ASSERT_NOT_CONTAINS(s, "never_runs");
	free(s);
	/* the thread's own backtrace is back: the unwinder is off again */
	s = section(out, "thread bt");
	ASSERT_CONTAINS(s, " main (");
	ASSERT_NOT_CONTAINS(s, "parked_on");
	free(s);
	/* an error goes to stderr, which may not keep its place among the sections */
	ASSERT_CONTAINS(out, "weft: no fiber with id or name \"no-such-fiber\"");
	free(out);
}

TEST_TIMEOUT(live_process_fibers_and_backtraces, 600)
{
	check_live(false);
}

TEST_TIMEOUT(started_under_gdb, 600)
{
	check_live(true);
}

#if !ASAN_BUILD && !WEFT__TSAN
TEST_TIMEOUT(core_file, 600)
{
	need_gdb();
	char core[1100];
	snprintf(core, sizeof(core), "%s/target.core", th_tmpdir());
	char gcore[1200];
	snprintf(gcore, sizeof(gcore), "gcore %s", core);
	/* one malloc arena: the workers' arenas would add 128 MiB of reserved space to the core */
	setenv("MALLOC_ARENA_MAX", "1", 1);
	struct session ss;
	session_start(&ss, false);
	const struct cmd make[] = {{"gcore", gcore}, {NULL, NULL}};
	char *out = session_gdb(&ss, make);
	stop_target(&ss);
	char *s = section(out, "gcore");
	ASSERT_CONTAINS(s, "Saved corefile");
	free(s);
	free(out);

	char receiver[64], sleeper[64];
	snprintf(receiver, sizeof(receiver), "weft bt %s", fiber_id(&ss, "receiver"));
	snprintf(sleeper, sizeof(sleeper), "weft bt %s full", fiber_id(&ss, "child-sleeper"));
	const char *pre[] = {target_path(), core, NULL};
	const struct cmd cmds[] = {
	        {"fibers", "weft fibers"},
	        {"bt receiver", receiver},
	        {"bt child", sleeper},
	        {"bt holder", "weft bt holder-2"},
	        {"bt", "bt"},
	        {NULL, NULL},
	};
	out = run_gdb(pre, cmds);
	s = section(out, "fibers");
	check_fibers(s, &ss);
	free(s);
	s = section(out, "bt receiver");
	check_bt(s, "\"receiver\" waiting on chan-recv", "weft_chan_recv", "parked_on_chan_recv");
	free(s);
	s = section(out, "bt child");
	check_bt(s, "\"child-sleeper\" waiting on sleep", "weft_fiber_sleep_until",
	         "parked_in_child_scope");
	/* full: the locals, one per line under each frame ("        name = value") */
	const char *local = strstr(s, "\n        ");
	ASSERT_TRUE(local && strstr(local, " = ") &&
	            strstr(local, " = ") < strchr(local + 1, '\n'));
	free(s);
	s = section(out, "bt holder");
	ASSERT_CONTAINS(s, "\"holder-2\" running");
	ASSERT_CONTAINS(s, ", in gdb thread ");
	free(s);
	s = section(out, "bt");
	ASSERT_CONTAINS(s, " main (");
	free(s);
	free(out);
}
#endif

/* One clear line when there is nothing to show. */
TEST_TIMEOUT(errors, 600)
{
	need_gdb();
	/* no process */
	const char *none[] = {target_path(), NULL};
	const struct cmd fibers[] = {{"fibers", "weft fibers"}, {"bt", "weft bt 1"}, {NULL, NULL}};
	char *out = run_gdb(none, fibers);
	ASSERT_CONTAINS(out, "weft: no process or core file");
	free(out);

	/* a process without weft: /bin/true stopped at its first instruction */
	const char *pre_true[] = {"-ex", "starti", "/bin/true", NULL};
	out = run_gdb(pre_true, fibers);
	ASSERT_CONTAINS(out, "weft: no weft in this process");
	free(out);

	/* weft, no scheduler yet: the target stopped at main */
	const char *at_main[] = {"-ex", "break main", "-ex", "run", target_path(), NULL};
	out = run_gdb(at_main, fibers);
	char *s = section(out, "fibers");
	ASSERT_CONTAINS(s, "0 fibers in 0 schedulers");
	free(s);
	ASSERT_CONTAINS(out, "weft: no fibers in this process (0 schedulers)");
	free(out);

	/* weft without debug info: a copy of the target beside a copy of the library without it
	 * (the target finds the library through its rpath, $ORIGIN/../src) */
	const char *dir = th_tmpdir();
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
	         "set -e; mkdir -p '%s/tests' '%s/src'; cp '%s' '%s/tests/'; "
	         "lib=$(ls '%s'/src/libweft.so.0 2>/dev/null || true); test -n \"$lib\"; "
	         "objcopy --strip-debug \"$lib\" '%s/src/libweft.so.0'",
	         dir, dir, target_path(), dir, th_env_path("WEFT_BUILD_ROOT"), dir);
	char *sh[] = {"sh", "-c", cmd, NULL};
	char *sh_out;
	int st = th_run(sh, 60, true, &sh_out);
	ASSERT_TRUE(st != -1 && WIFEXITED(st));
	if (WEXITSTATUS(st) != 0)
		FAIL("could not make the copy without debug info: %s", sh_out);
	free(sh_out);
	char copy[1100];
	snprintf(copy, sizeof(copy), "%s/tests/gdb-target", dir);
	/* meson's LD_LIBRARY_PATH names the build's library, which would win over the rpath */
	const char *stripped[] = {"-ex", "unset environment LD_LIBRARY_PATH",
	                          "-ex", "break gdb_target_ready",
	                          "-ex", "run",
	                          copy,  NULL};
	out = run_gdb(stripped, fibers);
	ASSERT_CONTAINS(out, "weft: weft is in this process but without debug info");
	ASSERT_NOT_CONTAINS(out, "Traceback");
	free(out);
}
