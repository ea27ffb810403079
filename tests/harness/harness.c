/* harness.c: runs each registered case in a forked child and prints TAP.
 *
 * Parent, per case:
 *   make the case's temporary folder name -> fork -> child runs the case -> wait on a pidfd with
 * the case's deadline -> on timeout SIGKILL the child's process group -> reap -> SIGKILL whatever
 * is left in the group -> remove the temporary folder -> print "ok" / "not ok". The parent is a
 * child subreaper, so processes a case orphaned are reaped here, not by init.
 *
 * Child, per case:
 *   own process group -> note open fds and threads -> run the body -> check that no fd, thread or
 *   child process is left -> exit(0) (so sanitizer leak checks run). A failed assert prints to
 * stderr and _exits 1; SKIP writes its reason to a pipe and _exits 77.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "internal/common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CASES 512
#define MAX_FDS 1024
#define EXIT_SKIP 77

struct th_case {
	const char *name;
	th_fn fn;
	double timeout_s;
	const char *file;
	int line;
};

static struct th_case cases[MAX_CASES];
static int ncases;

/* Child-side state of the running case. */
static int skip_fd = -1;
static char tmpdir[512];
static bool tmpdir_made;

void th_register(const char *name, th_fn fn, double timeout_s, const char *file, int line)
{
	if (ncases == MAX_CASES) {
		fprintf(stderr, "harness: more than %d cases\n", MAX_CASES);
		abort();
	}
	cases[ncases++] = (struct th_case){name, fn, timeout_s, file, line};
}

double th_scale(void)
{
	const char *s = getenv("WEFT_TEST_TIMEOUT_SCALE");
	double v = s ? strtod(s, NULL) : 1.0;
	return v > 0 ? v : 1.0;
}

static double now_s(void)
{
	return (double)weft_now() / 1e9;
}

void th_sleep_ms(long ms)
{
	weft_sleep_until(weft_deadline_in(WEFT_MSEC(ms)));
}

_Noreturn void th_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "# FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	_exit(1);
}

_Noreturn void th_skip(const char *reason)
{
	if (skip_fd >= 0) {
		ssize_t n = write(skip_fd, reason, strlen(reason));
		(void)n;
	}
	_exit(EXIT_SKIP);
}

/* --- files --------------------------------------------------------------------------------- */

const char *th_tmpdir(void)
{
	if (!tmpdir[0])
		FAIL("th_tmpdir called outside a case");
	if (!tmpdir_made) {
		if (mkdir(tmpdir, 0700) < 0)
			FAIL("mkdir %s: %s", tmpdir, strerror(errno));
		tmpdir_made = true;
	}
	return tmpdir;
}

static void mkdirs(const char *path)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	}
}

void th_write_file(const char *path, const char *text)
{
	mkdirs(path);
	FILE *f = fopen(path, "w");
	if (!f)
		FAIL("fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	if (fclose(f) != 0)
		FAIL("write %s: %s", path, strerror(errno));
}

char *th_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *th_env_path(const char *var)
{
	const char *p = getenv(var);
	if (!p || !*p)
		FAIL("environment variable %s is not set (run the test through meson)", var);
	return p;
}

/* --- helper processes ---------------------------------------------------------------------- */

static int reap(pid_t pid, double timeout_s)
{
	double end = now_s() + timeout_s * th_scale();
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_s() > end) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			return st;
		}
		th_sleep_ms(5);
	}
}

/* fork, with stdio flushed first so the child does not print the parent's buffers again. */
static pid_t fork_or_fail(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		FAIL("fork: %s", strerror(errno));
	return pid;
}

/* In a child that runs a program: it reads nothing from the test's stdin. */
static void stdin_from_devnull(void)
{
	int devnull = open("/dev/null", O_RDWR);
	dup2(devnull, 0);
	if (devnull > 2)
		close(devnull); /* the program gets stdin, not a stray fd */
}

pid_t th_spawn(char *const argv[], const char *log_path)
{
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0)
		FAIL("pipe2: %s", strerror(errno));
	pid_t pid = fork_or_fail();
	if (pid == 0) {
		close(ep[0]);
		stdin_from_devnull();
		if (log_path) {
			int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv[0], argv);
		int e = errno;
		ssize_t n = write(ep[1], &e, sizeof(e));
		(void)n;
		_exit(127);
	}
	close(ep[1]);
	int e = 0;
	ssize_t n;
	while ((n = read(ep[0], &e, sizeof(e))) < 0 && errno == EINTR)
		;
	close(ep[0]);
	if (n > 0) {
		reap(pid, 5);
		FAIL("cannot start %s: %s", argv[0], strerror(e));
	}
	return pid;
}

pid_t th_spawn_fn(void (*fn)(void *), void *arg)
{
	pid_t pid = fork_or_fail();
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	return pid;
}

int th_stop(pid_t pid, int sig, double timeout_s)
{
	if (sig)
		kill(pid, sig);
	return reap(pid, timeout_s);
}

/* Read fd until EOF, an error or the (scaled) deadline; the NUL-terminated bytes, malloc'd. */
static char *read_all(int fd, double timeout_s, bool *ret_timed_out)
{
	size_t cap = 8192, len = 0;
	char *out = malloc(cap);
	if (!out)
		FAIL("out of memory");
	double end = now_s() + timeout_s * th_scale();
	*ret_timed_out = false;
	for (;;) {
		int ms = (int)((end - now_s()) * 1000);
		if (ms <= 0) {
			*ret_timed_out = true;
			break;
		}
		struct pollfd pfd = {fd, POLLIN, 0};
		int r = poll(&pfd, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*ret_timed_out = r == 0;
			break;
		}
		if (cap - len < 4096) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				FAIL("out of memory");
		}
		ssize_t n = read(fd, out + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
	return out;
}

int th_run(char *const argv[], double timeout_s, bool merge, char **ret_out)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		FAIL("pipe2: %s", strerror(errno));
	pid_t pid = fork_or_fail();
	if (pid == 0) {
		stdin_from_devnull();
		dup2(p[1], 1);
		if (merge)
			dup2(p[1], 2);
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	bool timed_out;
	char *out = read_all(p[0], timeout_s, &timed_out);
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	int st = reap(pid, timeout_s);
	if (ret_out)
		*ret_out = out;
	else
		free(out);
	return timed_out ? -1 : st;
}

bool th_have_program(const char *name)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "command -v '%s' >/dev/null", name);
	char *const argv[] = {"sh", "-c", cmd, NULL};
	int st = th_run(argv, 10, false, NULL);
	return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

uint64_t th_rng(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

double th_rng_unit(uint64_t *state)
{
	return (double)(th_rng(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* --- network ------------------------------------------------------------------------------- */

int th_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		FAIL("socket: %s", strerror(errno));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		FAIL("bind: %s", strerror(errno));
	close(fd);
	return ntohs(sa.sin_port);
}

char *th_http_raw(int port, const char *request, size_t reqlen, double timeout_s)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return NULL;
	}
	size_t off = 0;
	while (off < reqlen) {
		ssize_t n = send(fd, request + off, reqlen - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the server may close early, e.g. on a request too large: read its
			          reply */
		off += (size_t)n;
	}
	bool timed_out;
	char *out = read_all(fd, timeout_s, &timed_out);
	close(fd);
	return out;
}

int th_http_get(int port, const char *path, double timeout_s, char **ret_body)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", path,
	                 port);
	char *resp = th_http_raw(port, req, (size_t)n, timeout_s);
	if (!resp)
		return -ECONNREFUSED;
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
		free(resp);
		return -EPROTO;
	}
	if (ret_body) {
		char *body = strstr(resp, "\r\n\r\n");
		*ret_body = strdup(body ? body + 4 : "");
	}
	free(resp);
	return status;
}

/* --- metrics ------------------------------------------------------------------------------ */

char *th_wait_for_metrics(weft_metrics *m, const char *needle, double timeout_s)
{
	double end = now_s() + timeout_s * th_scale();
	for (;;) {
		char *text;
		ASSERT_OK(weft_metrics_prometheus(m, &text, NULL));
		if (strstr(text, needle))
			return text;
		if (now_s() > end)
			FAIL("the metrics never showed \"%s\"; they are:\n%s", needle, text);
		free(text);
		th_sleep_ms(10);
	}
}

/* --- leak checks (in the child) ------------------------------------------------------------ */

static void list_fds(bool fds[MAX_FDS])
{
	memset(fds, 0, MAX_FDS * sizeof(bool));
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	int self = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd != self && fd < MAX_FDS)
			fds[fd] = true;
	}
	closedir(d);
}

static int count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void check_leftovers(const bool before[MAX_FDS], int threads_before)
{
	/* Threads: allow a moment for threads that were told to exit but not joined. */
	double end = now_s() + 2 * th_scale();
	int threads;
	while ((threads = count_threads()) > threads_before && now_s() < end)
		th_sleep_ms(10);
	if (threads > threads_before)
		FAIL("the case left %d thread(s) running", threads - threads_before);

	bool after[MAX_FDS];
	list_fds(after);
	for (int fd = 0; fd < MAX_FDS; fd++) {
		if (after[fd] && !before[fd]) {
			char link[64], target[512] = "?";
			snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
			ssize_t n = readlink(link, target, sizeof(target) - 1);
			if (n > 0)
				target[n] = '\0';
			FAIL("the case left fd %d open (%s)", fd, target);
		}
	}

	int st;
	pid_t r = waitpid(-1, &st, WNOHANG);
	if (r >= 0)
		FAIL("the case left a child process (%s)", r == 0 ? "still running" : "not reaped");
}

static _Noreturn void run_child(const struct th_case *c, int skip_w)
{
	setpgid(0, 0);
	skip_fd = skip_w;
	bool fds[MAX_FDS];
	list_fds(fds);
	int threads = count_threads();
	c->fn();
	check_leftovers(fds, threads);
	if (tmpdir_made)
		rm_tree(tmpdir);
	fflush(stdout);
	fflush(stderr);
	exit(0);
}

/* --- the runner ---------------------------------------------------------------------------- */

static int wait_child(pid_t pid, double timeout_s, bool *ret_timed_out)
{
	double end = now_s() + timeout_s;
	/* valgrind 3.19 does not know pidfd_open and says so on every call: poll instead there */
	const char *pre = getenv("LD_PRELOAD");
	int pfd = pre && strstr(pre, "vgpreload") ? -1 : (int)syscall(SYS_pidfd_open, pid, 0);
	int st;
	*ret_timed_out = false;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		double left = end - now_s();
		if (left <= 0) {
			*ret_timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			break;
		}
		if (pfd >= 0) {
			struct pollfd p = {pfd, POLLIN, 0};
			poll(&p, 1, (int)(left * 1000) + 1);
		} else {
			th_sleep_ms(2);
		}
	}
	if (pfd >= 0)
		close(pfd);
	return st;
}

#if WEFT__TSAN
static void *tsan_warmup_thread(void *arg)
{
	return arg;
}
#endif

/* TSan starts a background thread of its own with the first thread a process creates. Started in
 * a case's child, the leak check would count it as a thread the case left running; started here,
 * before any fork, it stays in the parent. */
static void start_sanitizer_threads(void)
{
#if WEFT__TSAN
	pthread_t t;
	if (pthread_create(&t, NULL, tsan_warmup_thread, NULL) == 0)
		pthread_join(t, NULL);
#endif
}

static void reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static bool run_case(int num, const struct th_case *c)
{
	bool no_skip = getenv("WEFT_TEST_NO_SKIP") && strcmp(getenv("WEFT_TEST_NO_SKIP"), "0") != 0;
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/weft-test-%d-%d", tmp && *tmp ? tmp : "/tmp",
	         (int)getpid(), num);
	tmpdir_made = false;

	int sp[2];
	if (pipe2(sp, O_CLOEXEC) < 0) {
		perror("pipe2");
		exit(2);
	}
	fflush(stdout);
	fflush(stderr);
	double start = now_s();
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		close(sp[0]);
		run_child(c, sp[1]);
	}
	setpgid(pid, pid);
	close(sp[1]);

	double timeout = c->timeout_s * th_scale();
	bool timed_out;
	int st = wait_child(pid, timeout, &timed_out);
	double took = now_s() - start;
	kill(-pid, SIGKILL); /* helpers the case left in its group */
	reap_orphans();
	rm_tree(tmpdir);

	char reason[512] = "";
	ssize_t n = read(sp[0], reason, sizeof(reason) - 1);
	reason[n > 0 ? n : 0] = '\0';
	close(sp[0]);

	bool ok = false;
	if (timed_out) {
		printf("not ok %d - %s # timed out after %.1f s\n", num, c->name, timeout);
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("ok %d - %s\n", num, c->name);
		ok = true;
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_SKIP) {
		if (no_skip) {
			printf("not ok %d - %s # skipped, and WEFT_TEST_NO_SKIP forbids it: %s\n",
			       num, c->name, reason);
		} else {
			printf("ok %d - %s # SKIP %s\n", num, c->name, reason);
			ok = true;
		}
	} else if (WIFSIGNALED(st)) {
		printf("not ok %d - %s # killed by signal %d (%s)\n", num, c->name, WTERMSIG(st),
		       strsignal(WTERMSIG(st)));
	} else {
		printf("not ok %d - %s # exit status %d (%s:%d)\n", num, c->name, WEXITSTATUS(st),
		       c->file, c->line);
	}
	printf("# %s: %.3f s\n", c->name, took);
	fflush(stdout);
	return ok;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-l") == 0) {
		for (int i = 0; i < ncases; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	start_sanitizer_threads();
	setvbuf(stdout, NULL, _IOLBF, 0);

	int selected[MAX_CASES], nsel = 0;
	for (int i = 0; i < ncases; i++) {
		bool want = argc == 1;
		for (int a = 1; a < argc && !want; a++)
			want = strcmp(argv[a], cases[i].name) == 0;
		if (want)
			selected[nsel++] = i;
	}
	for (int a = 1; a < argc; a++) {
		bool found = false;
		for (int i = 0; i < ncases && !found; i++)
			found = strcmp(argv[a], cases[i].name) == 0;
		if (!found) {
			fprintf(stderr, "%s: no case named %s (-l lists them)\n", argv[0], argv[a]);
			return 2;
		}
	}
	printf("1..%d\n", nsel);
	int failed = 0;
	for (int i = 0; i < nsel; i++)
		if (!run_case(i + 1, &cases[selected[i]]))
			failed++;
	return failed ? 1 : 0;
}
