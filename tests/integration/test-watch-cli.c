/* test-watch-cli.c: `weft watch` as a user runs it, on the known-answer programs of tests/watch
 * (plain pthread programs, each with one known answer). Every run writes its reports with --json
 * to a file of the case's folder and scans every 25 ms; the checks:
 *  - deadlocks (two locks, three locks, a reader/writer lock with a mutex, C11 mtx_t, two
 *    processes), a self-deadlock, a condition never signalled, a semaphore never posted, a robust
 *    mutex whose owner died: the right event, the threads (tids, names where the program set
 *    them, who owns what), both sides' stacks non-empty and symbolized with the program's own
 *    function names, the summary line, the exit status (3), and a report within generous bounds;
 *  - report mode reports a deadlock once and lets the program go on; abort mode ends it with
 *    SIGABRT; exit mode with status 86;
 *  - a lock-order inversion that does not deadlock is found with --predict only;
 *  - nothing is reported for the programs that must not report (trylock back-off, gate lock,
 *    readers, signalled condition waits, plain contention), with and without --predict;
 *  - a program's own lock results are unchanged under the monitor (watch-semantics: 100 checks,
 *    also with --predict);
 *  - exit statuses 0, 1, 2, 3; the one-line errors for a missing program, a non-executable one, a
 *    statically linked one (built here with gcc -static), bad options; an LD_PRELOAD already set
 *    is kept (chained after the monitor's library); --help; --profile.
 *
 * In ASan builds the programs and the library are instrumented too, and the library comes before
 * libasan in the load order: ASAN_OPTIONS=verify_asan_link_order=0 lets that run. */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *prog(const char *name)
{
	static char path[4][1024];
	static int next;
	char *p = path[next++ % 4];
	snprintf(p, sizeof(path[0]), "%s/tests/watch/watch-%s", th_env_path("WEFT_BUILD_ROOT"),
	         name);
	return p;
}

static void setup_env(void)
{
#if defined(__SANITIZE_ADDRESS__)
	setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
#endif
	/* the library the build made, whatever the weft binary would find */
	setenv("WEFT_WATCH_LIB", th_env_path("WEFT_WATCH_LIB"), 1);
}

struct run {
	int status;          /* wait status of weft watch */
	char *out;           /* its stdout and stderr (PROG's too) */
	char *json;          /* the --json file ("" if none) */
	double secs;         /* how long the run took */
	const char *summary; /* the last "weft watch: " line, within out */
};

/* Run `weft watch --json FILE --scan-ms 25 ARGS...` (ARGS end with "--", PROG...). */
static struct run run_watch(const char *const *args)
{
	setup_env();
	char json_path[1024];
	snprintf(json_path, sizeof(json_path), "%s/reports.json", th_tmpdir());
	unlink(json_path);
	char *argv[64];
	size_t n = 0;
	argv[n++] = (char *)th_env_path("WEFT_BIN");
	argv[n++] = "watch";
	argv[n++] = "--json";
	argv[n++] = json_path;
	argv[n++] = "--scan-ms";
	argv[n++] = "25";
	for (; *args; args++) {
		if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
			FAIL("too many arguments");
		argv[n++] = (char *)*args;
	}
	argv[n] = NULL;
	struct run r;
	double t0 = now_s();
	r.status = th_run(argv, 60, true, &r.out);
	r.secs = now_s() - t0;
	if (r.status == -1)
		FAIL("weft watch did not end within 60 s; output:\n%s", r.out ? r.out : "");
	r.json = th_read_file(json_path);
	if (!r.json)
		r.json = strdup("");
	r.summary = NULL;
	for (const char *p = r.out; (p = strstr(p, "weft watch: ")) != NULL; p++)
		if (p == r.out || p[-1] == '\n')
			r.summary = p;
	if (!r.summary)
		FAIL("no summary line in:\n%s", r.out);
	return r;
}

#define WATCH(...) run_watch((const char *const[]){__VA_ARGS__, NULL})

static void free_run(struct run *r)
{
	free(r->out);
	free(r->json);
}

static void expect_exit(const struct run *r, int want)
{
	if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != want)
		FAIL("wait status %#x, want exit %d; output:\n%s", r->status, want, r->out);
}

/* The summary line ends with `tail` (e.g. "watch-cycle2 exited 86"). */
static void expect_summary(const struct run *r, const char *found, const char *tail)
{
	const char *nl = strchr(r->summary, '\n');
	size_t len = nl ? (size_t)(nl - r->summary) : strlen(r->summary);
	char line[1024];
	snprintf(line, sizeof(line), "%.*s", (int)len, r->summary);
	ASSERT_CONTAINS(line, found);
	size_t tl = strlen(tail);
	if (len < tl || strcmp(line + len - tl, tail) != 0)
		FAIL("summary \"%s\" does not end with \"%s\"", line, tail);
}

/* ---- the JSON lines ---- */

/* How many report lines have "event":"NAME". */
static int count_events(const char *json, const char *name)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"event\":\"%s\"", name);
	int n = 0;
	for (const char *p = json; (p = strstr(p, pat)) != NULL; p++)
		n++;
	return n;
}

static int count_lines(const char *json)
{
	int n = 0;
	for (const char *p = json; *p; p++)
		n += *p == '\n';
	return n;
}

/* The first report line with event NAME, malloc'd (fails the case if none). */
static char *event_line(const char *json, const char *name)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"event\":\"%s\"", name);
	const char *p = strstr(json, pat);
	if (!p)
		FAIL("no %s report in:\n%s", name, json);
	while (p > json && p[-1] != '\n')
		p--;
	const char *end = strchr(p, '\n');
	size_t len = end ? (size_t)(end - p) : strlen(p);
	char *line = strndup(p, len);
	ASSERT_NOT_NULL(line);
	ASSERT_EQ(line[0], '{');
	ASSERT_EQ(line[len - 1], '}');
	return line;
}

/* The i-th object of the "threads" array of a report line, malloc'd ("" past the end). Objects
 * are cut at the next "{\"pid\":" that starts a thread. */
static char *thread_obj(const char *line, int i)
{
	const char *p = strstr(line, "\"threads\":[");
	ASSERT_NOT_NULL(p);
	for (int k = 0; k <= i; k++) {
		p = strstr(p + 1, "{\"pid\":");
		if (!p)
			return strdup("");
	}
	const char *end = strstr(p + 1, "{\"pid\":");
	if (!end)
		end = strstr(p, "]}],");
	if (!end)
		end = p + strlen(p);
	return strndup(p, (size_t)(end - p));
}

/* An inversion report's two acquisitions, from its "order" array: *ret_first (malloc'd) the
 * earlier one, *ret_second (in line) the later one. */
static void order_pair(const char *line, char **ret_first, const char **ret_second)
{
	const char *order = strstr(line, "\"order\":[");
	ASSERT_NOT_NULL(order);
	const char *second = strstr(order + 9, "{\"tid\":");
	ASSERT_NOT_NULL(second);
	second = strstr(second + 1, "{\"tid\":");
	ASSERT_NOT_NULL(second);
	*ret_first = strndup(order, (size_t)(second - order));
	*ret_second = second;
}

/* An integer field "KEY":N of an object, or -1. */
static long long int_field(const char *obj, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(obj, pat);
	if (!p)
		return -1;
	return strtoll(p + strlen(pat), NULL, 10);
}

/* How many stack frames of a thread object (its "stack" array). */
static int stack_frames(const char *obj)
{
	const char *p = strstr(obj, "\"stack\":[");
	if (!p)
		return 0;
	int n = 0;
	for (p += 9; *p && *p != ']'; p++)
		if (strncmp(p, "{\"pc\":", 6) == 0)
			n++;
	return n;
}

/* A thread of a deadlock: a tid, waiting, owner named, a symbolized stack with `func`. */
static void expect_waiting_thread(const char *obj, const char *func, const char *kind)
{
	ASSERT_GT(int_field(obj, "tid"), 0);
	ASSERT_GT(int_field(obj, "owner_tid"), 0);
	ASSERT_GT(stack_frames(obj), 0);
	char pat[128];
	snprintf(pat, sizeof(pat), "\"wait_kind\":\"%s\"", kind);
	ASSERT_CONTAINS(obj, pat);
	snprintf(pat, sizeof(pat), "\"func\":\"%s\"", func);
	ASSERT_CONTAINS(obj, pat);
}

/* A two-thread deadlock: each waits for the lock the other owns. */
static void expect_two_cycle(const char *line, const char *func0, const char *func1,
                             const char *kind0, const char *kind1)
{
	char *t0 = thread_obj(line, 0), *t1 = thread_obj(line, 1), *t2 = thread_obj(line, 2);
	ASSERT_STR_EQ(t2, "");
	/* the cycle may start at either thread */
	if (!strstr(t0, func0)) {
		char *x = t0;
		t0 = t1;
		t1 = x;
	}
	expect_waiting_thread(t0, func0, kind0);
	expect_waiting_thread(t1, func1, kind1);
	ASSERT_NE(int_field(t0, "tid"), int_field(t1, "tid"));
	ASSERT_EQ(int_field(t0, "owner_tid"), int_field(t1, "tid"));
	ASSERT_EQ(int_field(t1, "owner_tid"), int_field(t0, "tid"));
	free(t0);
	free(t1);
	free(t2);
}

/* ---- deadlocks ---- */

TEST_TIMEOUT(two_lock_cycle, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("cycle2"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-cycle2 exited 86");
	ASSERT_EQ(count_lines(r.json), 1);
	char *line = event_line(r.json, "deadlock");
	expect_two_cycle(line, "alpha_takes_b", "beta_takes_a", "mutex", "mutex");
	/* untimed waits: a deadlock for good, the action taken */
	ASSERT_CONTAINS(line, "\"ends\":false");
	ASSERT_CONTAINS(line, "\"deadline_ns\":null");
	ASSERT_CONTAINS(line, "\"name\":\"alpha\"");
	ASSERT_CONTAINS(line, "\"name\":\"beta\"");
	/* the text report, with the same names, on PROG's stderr */
	ASSERT_CONTAINS(r.out, "deadlock");
	ASSERT_CONTAINS(r.out, "alpha_takes_b");
	ASSERT_CONTAINS(r.out, "beta_takes_a");
	/* found within two scans; 10 s is generous for a loaded machine */
	ASSERT_LT(r.secs, 10 * th_scale());
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(three_lock_cycle, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("cycle3"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-cycle3 exited 86");
	char *line = event_line(r.json, "deadlock");
	long long tids[3], owners[3];
	for (int i = 0; i < 3; i++) {
		char *t = thread_obj(line, i);
		expect_waiting_thread(t, "ring_takes_next", "mutex");
		tids[i] = int_field(t, "tid");
		owners[i] = int_field(t, "owner_tid");
		free(t);
	}
	char *t3 = thread_obj(line, 3);
	ASSERT_STR_EQ(t3, "");
	free(t3);
	/* a ring: each owner is another thread of the cycle, every thread owns one */
	for (int i = 0; i < 3; i++) {
		int owns = 0;
		for (int k = 0; k < 3; k++)
			owns += owners[k] == tids[i];
		ASSERT_EQ(owns, 1);
		ASSERT_NE(owners[i], tids[i]);
	}
	ASSERT_CONTAINS(line, "\"name\":\"first\"");
	ASSERT_CONTAINS(line, "\"name\":\"third\"");
	ASSERT_LT(r.secs, 10 * th_scale());
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(self_deadlock, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("relock"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 self-deadlock found", "watch-relock exited 86");
	char *line = event_line(r.json, "self-deadlock");
	char *t = thread_obj(line, 0);
	ASSERT_GT(int_field(t, "tid"), 0);
	ASSERT_EQ(int_field(t, "owner_tid"), int_field(t, "tid"));
	ASSERT_GT(stack_frames(t), 0);
	ASSERT_CONTAINS(t, "\"func\":\"relock_held_mutex\"");
	ASSERT_CONTAINS(t, "\"name\":\"relocker\"");
	ASSERT_CONTAINS(t, "\"error\":null");
	ASSERT_CONTAINS(line, "\"ends\":false");
	ASSERT_LT(r.secs, 10 * th_scale());
	free(t);
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(reader_writer_cycle, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("rwcycle"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-rwcycle exited 86");
	char *line = event_line(r.json, "deadlock");
	/* the writer's owner is the reader, known from its held rwlocks (glibc names no reader) */
	expect_two_cycle(line, "reader_takes_mutex", "writer_takes_table", "mutex", "wrlock");
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(c11_cycle, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("c11cycle"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-c11cycle exited 86");
	char *line = event_line(r.json, "deadlock");
	expect_two_cycle(line, "c11_first_takes_b", "c11_second_takes_a", "mutex", "mutex");
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(cycle_across_processes, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("forkcycle"));
	expect_exit(&r, 3);
	ASSERT_CONTAINS(r.summary, "deadlock");
	ASSERT_GE(count_events(r.json, "deadlock"), 1);
	char *line = event_line(r.json, "deadlock");
	char *t0 = thread_obj(line, 0), *t1 = thread_obj(line, 1);
	/* two threads of two processes, each owning what the other waits for */
	ASSERT_NE(int_field(t0, "pid"), int_field(t1, "pid"));
	ASSERT_EQ(int_field(t0, "owner_tid"), int_field(t1, "tid"));
	ASSERT_EQ(int_field(t1, "owner_tid"), int_field(t0, "tid"));
	/* the reporting process has its own thread's stack */
	ASSERT_TRUE(stack_frames(t0) > 0 || stack_frames(t1) > 0);
	ASSERT_TRUE(strstr(line, "parent_takes_b") || strstr(line, "child_takes_a"));
	ASSERT_LT(r.secs, 10 * th_scale());
	free(t0);
	free(t1);
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(condition_never_signalled, 60)
{
	struct run r = WATCH("--cond-wait-ms", "200", "--", prog("condlost"), "2000");
	expect_exit(&r, 3);
	expect_summary(&r, "1 long condition wait found", "watch-condlost exited 1");
	ASSERT_EQ(count_events(r.json, "cond-wait"), 1);
	char *line = event_line(r.json, "cond-wait");
	char *t = thread_obj(line, 0);
	ASSERT_CONTAINS(t, "\"name\":\"waiter\"");
	ASSERT_CONTAINS(t, "\"wait_kind\":\"cond\"");
	ASSERT_GE(int_field(t, "waited_ns"), 200000000);
	ASSERT_GT(stack_frames(t), 0);
	ASSERT_CONTAINS(t, "\"func\":\"wait_for_signal_never_sent\"");
	free(t);
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(semaphore_never_posted, 60)
{
	struct run r = WATCH("--long-wait-ms", "200", "--", prog("semlost"), "2000");
	expect_exit(&r, 3);
	expect_summary(&r, "1 long wait found", "watch-semlost exited 1");
	ASSERT_EQ(count_events(r.json, "long-wait"), 1);
	char *line = event_line(r.json, "long-wait");
	char *t = thread_obj(line, 0);
	ASSERT_CONTAINS(t, "\"name\":\"sem-waiter\"");
	ASSERT_CONTAINS(t, "\"wait_kind\":\"sem\"");
	ASSERT_GE(int_field(t, "waited_ns"), 200000000);
	ASSERT_GT(stack_frames(t), 0);
	ASSERT_CONTAINS(t, "\"func\":\"wait_for_post_never_made\"");
	free(t);
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(owner_died, 60)
{
	struct run r = WATCH("--", prog("ownerdied"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 dead owner found", "watch-ownerdied exited 0");
	char *line = event_line(r.json, "owner-died");
	char *t = thread_obj(line, 0);
	ASSERT_GT(int_field(t, "tid"), 0);
	ASSERT_GT(stack_frames(t), 0);
	ASSERT_CONTAINS(t, "\"func\":\"lock_after_owner_died\"");
	free(t);
	free(line);
	free_run(&r);
}

static void expect_nothing(const char *name, bool predict);

/* ---- waits that end by themselves: reported, no action ---- */

TEST_TIMEOUT(timed_cycle_ends_by_itself, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("timedcycle"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-timedcycle exited 0");
	ASSERT_CONTAINS(r.out, "timedcycle: backed off");
	char *line = event_line(r.json, "deadlock");
	expect_two_cycle(line, "timed_takes_second", "timed_takes_second", "mutex", "mutex");
	ASSERT_CONTAINS(line, "\"ends\":true");
	char *t = thread_obj(line, 0);
	ASSERT_GT(int_field(t, "deadline_ns"), 0);
	free(t);
	ASSERT_CONTAINS(r.out, "(ends at its deadline)");
	ASSERT_CONTAINS(r.out, "no deadlock action is taken");
	free(line);
	free_run(&r);
}

TEST_TIMEOUT(handled_edeadlk_is_no_deadlock_action, 60)
{
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("ecrelock"));
	expect_exit(&r, 3);
	expect_summary(&r, "2 self-deadlocks found", "watch-ecrelock exited 0");
	ASSERT_CONTAINS(r.out, "ecrelock: relock 35, rdlock 35");
	ASSERT_EQ(count_events(r.json, "self-deadlock"), 2);
	char *line = event_line(r.json, "self-deadlock");
	ASSERT_CONTAINS(line, "\"ends\":true");
	ASSERT_CONTAINS(line, "\"error\":\"EDEADLK\"");
	ASSERT_CONTAINS(line, "\"func\":\"relock_error_checking\"");
	free(line);
	ASSERT_CONTAINS(r.json, "\"func\":\"rdlock_under_wrlock\"");
	ASSERT_CONTAINS(r.out, "(the call returned EDEADLK)");
	free_run(&r);
}

TEST_TIMEOUT(far_future_deadline_waits, 60)
{
	struct run r = WATCH("--", prog("farfuture"));
	expect_exit(&r, 0);
	expect_summary(&r, "nothing found", "watch-farfuture exited 0");
	ASSERT_CONTAINS(r.out, "farfuture: all 3 waits got the lock");
	free_run(&r);
}

/* ---- the program's own files ---- */

TEST_TIMEOUT(reports_stay_out_of_program_files, 60)
{
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/data", th_tmpdir());
	ASSERT_EQ(mkdir(dir, 0755), 0);
	struct run r = WATCH("--", prog("fdreuse"), dir);
	ASSERT_CONTAINS(r.out, "fdreuse: relock 35");
	/* the report went to stderr, which is still stderr */
	ASSERT_CONTAINS(r.out, "weft watch: self-deadlock");
	ASSERT_TRUE(strstr(r.summary, "watch-fdreuse exited 0") != NULL);
	for (int i = 0; i < 128; i++) {
		char name[1100];
		snprintf(name, sizeof(name), "%s/f%03d", dir, i);
		struct stat st;
		ASSERT_EQ(stat(name, &st), 0);
		if (st.st_size != 0)
			FAIL("%s: %lld bytes written into the program's file", name,
			     (long long)st.st_size);
		unlink(name);
	}
	rmdir(dir);
	free_run(&r);
}

/* The library alone, given a JSON fd that is not the report file it was told of: no JSON. */
TEST_TIMEOUT(preload_json_fd_checked, 60)
{
	setup_env();
	char path[1024];
	snprintf(path, sizeof(path), "%s/not-reports", th_tmpdir());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644); /* inherited */
	ASSERT_GE(fd, 0);
	char num[32];
	snprintf(num, sizeof(num), "%d", fd);
	setenv("WEFT_WATCH_JSON_FD", num, 1);
	setenv("WEFT_WATCH_JSON_ID", "1:1", 1);
	setenv("LD_PRELOAD", th_env_path("WEFT_WATCH_LIB"), 1);
	char *out = NULL;
	char *argv[] = {(char *)prog("ecrelock"), NULL};
	int st = th_run(argv, 60, true, &out);
	unsetenv("LD_PRELOAD");
	unsetenv("WEFT_WATCH_JSON_FD");
	unsetenv("WEFT_WATCH_JSON_ID");
	close(fd);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, "is not the report file of `weft watch` here");
	ASSERT_CONTAINS(out, "weft watch: self-deadlock"); /* monitored all the same */
	char *json = th_read_file(path);
	ASSERT_STR_EQ(json, "");
	free(json);
	free(out);
}

/* ---- condition waits ---- */

TEST_TIMEOUT(cond_wait_eperm_leaves_no_phantom_lock, 60)
{
	expect_nothing("condeperm", false);
	expect_nothing("condeperm", true);
}

/* The re-lock inside pthread_cond_wait, seen from outside (the sleeper blocked in futex on its
 * mutex): a deadlock with both threads; main's wait is also long (200 ms), and that report names
 * the owner's condition wait. */
TEST_TIMEOUT(cond_relock_deadlock_found, 60)
{
	struct run r = WATCH("--long-wait-ms", "200", "--", prog("condrelock"), "1500");
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock, 1 long wait found", "watch-condrelock exited 9");
	ASSERT_EQ(count_events(r.json, "deadlock"), 1);
	char *line = event_line(r.json, "deadlock");
	char *t0 = thread_obj(line, 0), *t1 = thread_obj(line, 1);
	if (strstr(t0, "\"wait_kind\":\"cond\"")) { /* the cycle may start with either */
		char *t = t0;
		t0 = t1;
		t1 = t;
	}
	ASSERT_CONTAINS(t0, "\"func\":\"main_takes_l\"");
	ASSERT_CONTAINS(t0, "\"wait_kind\":\"mutex\"");
	ASSERT_EQ(int_field(t0, "owner_tid"), int_field(t1, "tid"));
	ASSERT_CONTAINS(t1, "\"name\":\"sleeper\"");
	ASSERT_CONTAINS(t1, "\"wait_kind\":\"cond\"");
	ASSERT_CONTAINS(t1, "\"func\":\"sleeper_waits\"");
	ASSERT_EQ(int_field(t1, "owner_tid"), int_field(t0, "tid"));
	/* the sleeper's mutex is what main holds */
	char *cm = strstr(t1, "\"cond_mutex\":\"0x"), *held = strstr(t0, "\"holds\":[\"0x");
	ASSERT_NOT_NULL(cm);
	ASSERT_NOT_NULL(held);
	ASSERT_EQ(strtoull(cm + strlen("\"cond_mutex\":\""), NULL, 16),
	          strtoull(held + strlen("\"holds\":[\""), NULL, 16));
	ASSERT_CONTAINS(r.out, "signalled, retaking the mutex");
	free(t0);
	free(t1);
	free(line);
	line = event_line(r.json, "long-wait");
	t1 = thread_obj(line, 1);
	ASSERT_CONTAINS(t1, "\"wait_kind\":\"cond\"");
	ASSERT_CONTAINS(r.out, "is in a condition wait on");
	free(t1);
	free(line);
	free_run(&r);
}

/* ---- signals ---- */

/* A signal sent while the child is started (between fork and the parent's handlers, held open
 * here by the pause of the test build, weft-test-hooks) is forwarded to PROG, not the death of
 * weft with PROG orphaned. */
TEST_TIMEOUT(signal_during_start_is_forwarded, 60)
{
	setup_env();
	char pidfile[1024], script[3400];
	snprintf(pidfile, sizeof(pidfile), "%s/prog.pid", th_tmpdir());
	snprintf(script, sizeof(script), "echo $$ > %s.tmp && mv %s.tmp %s && exec sleep 20",
	         pidfile, pidfile, pidfile);
	setenv("WEFT_WATCH_TEST_FORK_PAUSE_MS", "1500", 1);
	char *argv[] = {(char *)th_env_path("WEFT_BIN_TEST_HOOKS"),
	                "watch",
	                "--",
	                "sh",
	                "-c",
	                script,
	                NULL};
	char log[1024];
	snprintf(log, sizeof(log), "%s/weft.log", th_tmpdir());
	pid_t weft = th_spawn(argv, log);
	unsetenv("WEFT_WATCH_TEST_FORK_PAUSE_MS");
	ASSERT_GT(weft, 0);
	char *text = NULL;
	for (int i = 0; i < 1000 && !(text = th_read_file(pidfile)); i++)
		th_sleep_ms(5);
	ASSERT_NOT_NULL(text);
	pid_t prog_pid = (pid_t)atoi(text);
	free(text);
	ASSERT_GT(prog_pid, 0);
	ASSERT_EQ(kill(weft, SIGTERM), 0); /* weft is still in its pause */
	int st = th_stop(weft, 0, 30);
	int alive = kill(prog_pid, 0) == 0;
	if (alive)
		kill(prog_pid, SIGKILL);
	char *out = th_read_file(log);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
		FAIL("wait status %#x, want exit 1 (PROG killed); output:\n%s", st, out ? out : "");
	ASSERT_FALSE(alive);
	ASSERT_CONTAINS(out, "was killed by SIGTERM");
	free(out);
}

/* ---- the actions ---- */

TEST_TIMEOUT(report_mode_reports_once_and_goes_on, 60)
{
	/* the deadlock lasts 1.5 s (the program's guard ends it), 60 scans: one report */
	struct run r = WATCH("--", prog("cycle2"), "1500");
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-cycle2 exited 9");
	ASSERT_EQ(count_events(r.json, "deadlock"), 1);
	ASSERT_CONTAINS(r.out, "still blocked after 1500 ms");
	free_run(&r);
}

TEST_TIMEOUT(abort_mode, 60)
{
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	struct run r = WATCH("--on-deadlock", "abort", "--", prog("cycle2"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 deadlock found", "watch-cycle2 was killed by SIGABRT (Aborted)");
	ASSERT_EQ(count_events(r.json, "deadlock"), 1);
	free_run(&r);
}

/* ---- prediction ---- */

TEST_TIMEOUT(inversion_only_with_predict, 60)
{
	struct run r = WATCH("--", prog("inversion"));
	expect_exit(&r, 0);
	expect_summary(&r, "nothing found", "watch-inversion exited 0");
	ASSERT_STR_EQ(r.json, "");
	free_run(&r);

	r = WATCH("--predict", "--", prog("inversion"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 lock-order inversion found", "watch-inversion exited 0");
	ASSERT_EQ(count_lines(r.json), 1);
	char *line = event_line(r.json, "inversion");
	/* both acquisitions, each with its stack: the earlier (first: A then B), the later
	 * (second: B then A) */
	char *first;
	const char *second;
	order_pair(line, &first, &second);
	ASSERT_CONTAINS(first, "\"func\":\"first_order_a_then_b\"");
	ASSERT_CONTAINS(second, "\"func\":\"second_order_b_then_a\"");
	ASSERT_GT(int_field(first, "tid"), 0);
	ASSERT_GT(int_field(second, "tid"), 0);
	ASSERT_NE(int_field(first, "tid"), int_field(second, "tid"));
	ASSERT_CONTAINS(r.out, "inversion");
	free(first);
	free(line);
	free_run(&r);
}

static void expect_nothing(const char *name, bool predict)
{
	struct run r = predict ? WATCH("--predict", "--", prog(name)) : WATCH("--", prog(name));
	expect_exit(&r, 0);
	char tail[128];
	snprintf(tail, sizeof(tail), "watch-%s exited 0", name);
	expect_summary(&r, "nothing found", tail);
	if (r.json[0])
		FAIL("%s%s reported:\n%s", name, predict ? " (--predict)" : "", r.json);
	free_run(&r);
}

TEST_TIMEOUT(trylock_backoff_reports_nothing, 60)
{
	expect_nothing("trylock", false);
	expect_nothing("trylock", true);
}

TEST_TIMEOUT(gate_lock_reports_nothing, 60)
{
	expect_nothing("gate", false);
	expect_nothing("gate", true);
}

TEST_TIMEOUT(readers_report_nothing, 60)
{
	expect_nothing("readers", false);
	expect_nothing("readers", true);
}

TEST_TIMEOUT(signalled_condition_waits_report_nothing, 60)
{
	expect_nothing("prodcons", false);
	expect_nothing("prodcons", true);
}

TEST_TIMEOUT(contention_reports_nothing, 60)
{
	expect_nothing("contention", false);
	expect_nothing("contention", true);
}

/* ---- the program's own results ---- */

static int checks_passed(const char *out)
{
	const char *p = strstr(out, "semantics: all ");
	if (!p)
		FAIL("watch-semantics failed:\n%s", out);
	return atoi(p + strlen("semantics: all "));
}

TEST_TIMEOUT(lock_results_unchanged, 120)
{
	char *out = NULL;
	char *native[] = {(char *)prog("semantics"), NULL};
	int st = th_run(native, 60, true, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	int want = checks_passed(out);
	ASSERT_GE(want, 90);
	free(out);

	/* an error checking relock is a self-deadlock too, and the robust mutexes' owners died:
	 * reports, but the program's results are its own */
	struct run r = WATCH("--", prog("semantics"));
	expect_exit(&r, 3);
	expect_summary(&r, "self-deadlock", "watch-semantics exited 0");
	ASSERT_EQ(checks_passed(r.out), want);
	ASSERT_EQ(count_events(r.json, "deadlock"), 0);
	ASSERT_EQ(count_events(r.json, "inversion"), 0);
	free_run(&r);

	r = WATCH("--predict", "--long-wait-ms", "5000", "--", prog("semantics"));
	expect_summary(&r, "self-deadlock", "watch-semantics exited 0");
	ASSERT_EQ(checks_passed(r.out), want);
	ASSERT_EQ(count_events(r.json, "inversion"), 0);
	free_run(&r);
}

/* ---- exit statuses and errors ---- */

/* `weft watch ARGS...` fails with exit status 2 and exactly one line containing `needle`. */
static void expect_error(const char *needle, const char *const *args)
{
	setup_env();
	char *argv[32];
	size_t n = 0;
	argv[n++] = (char *)th_env_path("WEFT_BIN");
	argv[n++] = "watch";
	for (; *args; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	char *out = NULL;
	int st = th_run(argv, 30, true, &out);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 2)
		FAIL("wait status %#x, want exit 2; output:\n%s", st, out);
	const char *nl = strchr(out, '\n');
	if (!nl || nl[1] != '\0')
		FAIL("want exactly one line, got:\n%s", out);
	if (strncmp(out, "weft watch: ", 12) != 0)
		FAIL("want \"weft watch: ...\", got:\n%s", out);
	ASSERT_CONTAINS(out, needle);
	free(out);
}

#define EXPECT_ERROR(needle, ...) expect_error((needle), (const char *const[]){__VA_ARGS__, NULL})

TEST_TIMEOUT(exit_statuses, 60)
{
	struct run r = WATCH("--", prog("contention"));
	expect_exit(&r, 0);
	free_run(&r);
	/* nothing found, PROG failed: 1 (found through PATH) */
	r = WATCH("--", "false");
	expect_exit(&r, 1);
	expect_summary(&r, "nothing found", "false exited 1");
	free_run(&r);
	/* 3 even when PROG succeeded */
	r = WATCH("--", prog("ownerdied"));
	expect_exit(&r, 3);
	free_run(&r);
}

TEST_TIMEOUT(bad_usage, 60)
{
	EXPECT_ERROR("no program to run", "--predict");
	EXPECT_ERROR("no program to run", "--");
	EXPECT_ERROR("unknown option '--bogus'", "--bogus", "--", "true");
	EXPECT_ERROR("--on-deadlock 'panic'", "--on-deadlock", "panic", "--", "true");
	EXPECT_ERROR("--scan-ms 0: must be from 1 to 60000", "--scan-ms", "0", "--", "true");
	EXPECT_ERROR("--scan-ms 'fast'", "--scan-ms", "fast", "--", "true");
	EXPECT_ERROR("--long-wait-ms -5", "--long-wait-ms", "-5", "--", "true");
	EXPECT_ERROR("--cond-wait-ms needs a value", "--cond-wait-ms");
	char path[1024];
	snprintf(path, sizeof(path), "%s/no/such/dir/out.json", th_tmpdir());
	EXPECT_ERROR("--json", "--json", path, "--", "true");
}

TEST_TIMEOUT(cannot_run, 120)
{
	EXPECT_ERROR("no-such-program-weft: not found", "--", "no-such-program-weft");
	char path[1024];
	snprintf(path, sizeof(path), "%s/missing", th_tmpdir());
	EXPECT_ERROR("missing: not found", "--", path);
	snprintf(path, sizeof(path), "%s/plain.txt", th_tmpdir());
	th_write_file(path, "not a program\n");
	chmod(path, 0644);
	EXPECT_ERROR("plain.txt: not executable", "--", path);
	EXPECT_ERROR("is a directory", "--", th_tmpdir());

	/* statically linked: built here if the static C library is installed */
	char src[1024], exe[1024];
	snprintf(src, sizeof(src), "%s/static.c", th_tmpdir());
	snprintf(exe, sizeof(exe), "%s/static-prog", th_tmpdir());
	th_write_file(src, "int main(void) { return 0; }\n");
	if (access("/usr/lib/x86_64-linux-gnu/libc.a", R_OK) != 0 &&
	    access("/usr/lib/aarch64-linux-gnu/libc.a", R_OK) != 0 &&
	    access("/usr/lib/libc.a", R_OK) != 0)
		SKIP("no libc.a to link a static program with");
	char *cc[] = {"gcc", "-static", "-o", exe, src, NULL};
	int st = th_run(cc, 120, true, NULL);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		FAIL("gcc -static failed: %#x", st);
	EXPECT_ERROR("static-prog: statically linked", "--", exe);
}

TEST_TIMEOUT(ld_preload_chained, 120)
{
	if (!th_have_program("gcc"))
		SKIP("no gcc to build a preload library with");
	char src[1024], lib[1024];
	snprintf(src, sizeof(src), "%s/hello.c", th_tmpdir());
	snprintf(lib, sizeof(lib), "%s/libhello.so", th_tmpdir());
	th_write_file(src, "#include <unistd.h>\n"
	                   "__attribute__((constructor)) static void hello(void)\n"
	                   "{ write(2, \"chained-preload-loaded\\n\", 23); }\n");
	char *cc[] = {"gcc", "-shared", "-fPIC", "-o", lib, src, NULL};
	int st = th_run(cc, 120, true, NULL);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		FAIL("gcc -shared failed: %#x", st);
	setenv("LD_PRELOAD", lib, 1);
	struct run r = WATCH("--on-deadlock", "exit", "--", prog("cycle2"));
	unsetenv("LD_PRELOAD");
	expect_exit(&r, 3);
	ASSERT_CONTAINS(r.out, "chained-preload-loaded");
	expect_summary(&r, "1 deadlock found", "watch-cycle2 exited 86");
	free_run(&r);
}

TEST_TIMEOUT(help_and_profile, 60)
{
	setup_env();
	char *out = NULL;
	char *argv[] = {(char *)th_env_path("WEFT_BIN"), "watch", "--help", NULL};
	int st = th_run(argv, 30, true, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, "usage: weft watch [options] -- PROG [ARGS...]");
	const char *const documented[] = {"--predict", "--json FILE",    "--on-deadlock",
	                                  "--scan-ms", "--long-wait-ms", "--cond-wait-ms",
	                                  "--profile", "Exit status"};
	for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
		ASSERT_CONTAINS(out, documented[i]);
	free(out);
	char *help[] = {(char *)th_env_path("WEFT_BIN"), "help", NULL};
	st = th_run(help, 30, true, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, "  watch ");
	free(out);

	/* --profile: the contended sites, at exit, on PROG's stderr */
	struct run r = WATCH("--profile", "--", prog("contention"));
	expect_exit(&r, 0);
	ASSERT_CONTAINS(r.out, "hammer");
	free_run(&r);
}

/* The preload library exports the wrapped functions and nothing of weft's, and does not load
 * libweft.so (a program that links libweft itself must not get a second copy of its state). */
TEST_TIMEOUT(preload_exports_only_wrappers, 60)
{
	if (!th_have_program("nm") || !th_have_program("readelf"))
		SKIP("no nm or readelf (binutils)");
	char *lib = (char *)th_env_path("WEFT_WATCH_LIB");
	char *out = NULL;
	char *nm[] = {"nm", "-D", "--defined-only", lib, NULL};
	int st = th_run(nm, 30, false, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, " pthread_mutex_lock@@GLIBC_");
	ASSERT_CONTAINS(out, " pthread_rwlock_wrlock@@GLIBC_");
	ASSERT_CONTAINS(out, " pthread_cond_wait@@GLIBC_");
	ASSERT_CONTAINS(out, " sem_wait@@GLIBC_");
	ASSERT_CONTAINS(out, " mtx_lock@@GLIBC_");
	ASSERT_CONTAINS(out, " cnd_wait@@GLIBC_");
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		const char *name = strrchr(line, ' ');
		name = name ? name + 1 : line;
		bool wrapped = strncmp(name, "pthread_mutex_", 14) == 0 ||
		               strncmp(name, "pthread_rwlock_", 15) == 0 ||
		               strncmp(name, "pthread_cond_", 13) == 0 ||
		               strncmp(name, "sem_", 4) == 0 || strncmp(name, "mtx_", 4) == 0 ||
		               strncmp(name, "cnd_", 4) == 0 || strncmp(name, "GLIBC_", 6) == 0;
		if (!wrapped)
			FAIL("libweft-watch.so exports %s", name);
	}
	free(out);
	char *readelf[] = {"readelf", "-d", lib, NULL};
	st = th_run(readelf, 30, false, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT_CONTAINS(out, "(NEEDED)");
	ASSERT_NOT_CONTAINS(out, "libweft.so");
	free(out);
}

/* Without WEFT_WATCH_LIB, weft finds the library beside its own build tree; a WEFT_WATCH_LIB that
 * names nothing is an error. */
TEST_TIMEOUT(finds_the_library, 60)
{
	setup_env();
	char *lib = strdup(getenv("WEFT_WATCH_LIB"));
	unsetenv("WEFT_WATCH_LIB");
	char *out = NULL;
	char *argv[] = {(char *)th_env_path("WEFT_BIN"), "watch", "--on-deadlock", "exit", "--",
	                (char *)prog("cycle2"),          NULL};
	int st = th_run(argv, 60, true, &out);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 3)
		FAIL("wait status %#x, want exit 3; output:\n%s", st, out);
	ASSERT_CONTAINS(out, "1 deadlock found");
	free(out);
	char missing[1024];
	snprintf(missing, sizeof(missing), "%s/nowhere/libweft-watch.so", th_tmpdir());
	setenv("WEFT_WATCH_LIB", missing, 1);
	char *argv2[] = {(char *)th_env_path("WEFT_BIN"), "watch", "--", "true", NULL};
	st = th_run(argv2, 60, true, &out);
	ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2);
	ASSERT_CONTAINS(out, "weft watch: WEFT_WATCH_LIB=");
	ASSERT_CONTAINS(out, "No such file");
	free(out);
	setenv("WEFT_WATCH_LIB", lib, 1);
	free(lib);
}

/* The library read by itself (LD_PRELOAD, no weft): a bad setting is one line naming it, and the
 * program runs unmonitored, never broken. */
static void bad_setting(const char *name, const char *value)
{
	setup_env();
	setenv(name, value, 1);
	setenv("WEFT_WATCH_SCAN_MS", strcmp(name, "WEFT_WATCH_SCAN_MS") ? "25" : value, 1);
	setenv("LD_PRELOAD", th_env_path("WEFT_WATCH_LIB"), 1);
	char *out = NULL;
	char *argv[] = {(char *)prog("cycle2"), "300", NULL};
	int st = th_run(argv, 60, true, &out);
	unsetenv("LD_PRELOAD");
	unsetenv(name);
	unsetenv("WEFT_WATCH_SCAN_MS");
	/* unmonitored: the deadlock lasts until the program's guard ends it (status 9) */
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 9)
		FAIL("%s=%s: wait status %#x, want exit 9; output:\n%s", name, value, st, out);
	char want[256];
	snprintf(want, sizeof(want), "weft watch: %s=%s: ", name, value);
	ASSERT_CONTAINS(out, want);
	ASSERT_CONTAINS(out, "running unmonitored\n");
	ASSERT_NOT_CONTAINS(out, "deadlock");
	free(out);
}

TEST_TIMEOUT(preload_bad_settings, 60)
{
	bad_setting("WEFT_WATCH_SCAN_MS", "fast");
	bad_setting("WEFT_WATCH_ON_DEADLOCK", "panic");
	bad_setting("WEFT_WATCH_JSON_FD", "987");
	bad_setting("WEFT_WATCH_LONG_WAIT_MS", "-7");
	bad_setting("WEFT_WATCH_PREDICT", "yes");
}

/* And a good setting without weft: WEFT_WATCH_ON_DEADLOCK=exit ends the deadlock with 86. */
TEST_TIMEOUT(preload_alone, 60)
{
	setup_env();
	setenv("LD_PRELOAD", th_env_path("WEFT_WATCH_LIB"), 1);
	setenv("WEFT_WATCH_ON_DEADLOCK", "exit", 1);
	setenv("WEFT_WATCH_SCAN_MS", "25", 1);
	char *out = NULL;
	char *argv[] = {(char *)prog("cycle2"), NULL};
	int st = th_run(argv, 60, true, &out);
	unsetenv("LD_PRELOAD");
	unsetenv("WEFT_WATCH_ON_DEADLOCK");
	unsetenv("WEFT_WATCH_SCAN_MS");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 86)
		FAIL("wait status %#x, want exit 86; output:\n%s", st, out);
	ASSERT_CONTAINS(out, "deadlock");
	ASSERT_CONTAINS(out, "alpha_takes_b");
	free(out);
}

/* Two locks of one class (initialised in one loop) taken both ways by two threads in turn: an
 * instance order inversion, found with --predict only; three static locks first used at one
 * site, each thread holding one and wanting the next: the cycle of three instances too. */
TEST_TIMEOUT(same_class_inversion_only_with_predict, 60)
{
	expect_nothing("bank", false);

	struct run r = WATCH("--predict", "--", prog("bank"));
	expect_exit(&r, 3);
	expect_summary(&r, "1 lock-order inversion found", "watch-bank exited 0");
	ASSERT_EQ(count_lines(r.json), 1);
	char *line = event_line(r.json, "inversion");
	char *first;
	const char *second;
	order_pair(line, &first, &second);
	ASSERT_CONTAINS(first, "\"func\":\"first_pays_0_to_1\"");
	ASSERT_CONTAINS(second, "\"func\":\"second_pays_1_to_0\"");
	ASSERT_NE(int_field(first, "tid"), int_field(second, "tid"));
	/* one class: both orders name the same class at both ends */
	ASSERT_CONTAINS(r.out, "inversion");
	ASSERT_CONTAINS(r.out, "first_pays_0_to_1");
	free(first);
	free(line);
	free_run(&r);

	r = WATCH("--predict", "--on-deadlock", "exit", "--", prog("cycle3"));
	expect_exit(&r, 3);
	ASSERT_EQ(count_events(r.json, "inversion"), 1);
	ASSERT_EQ(count_events(r.json, "deadlock"), 1);
	line = event_line(r.json, "inversion");
	ASSERT_CONTAINS(line, "\"func\":\"ring_takes_next\"");
	/* the whole ring of three, in the JSON and the text */
	ASSERT_CONTAINS(line, "\"path\":[{\"lock\":");
	ASSERT_CONTAINS(line, "\"more_path\":0");
	ASSERT_CONTAINS(r.out,
	                "the whole cycle (3 locks, each taken while the one before it was held)");
	free(line);
	free_run(&r);
}
