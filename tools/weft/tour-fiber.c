/* tour-fiber.c: the fibers chapter. 100,000 fibers on the CPU budget's worker threads pass tokens
 * around a ring of unbuffered channels, each sleeping a short random time per hop, and the
 * chapter prints what that cost: wall time, messages per second, switches and their CPU cost,
 * steals, fibers alive, memory per fiber. Then it runs the same ring in real OS threads, a smaller
 * one (2,000 threads, a mailbox of a mutex and a condvar each), measures the same figures, puts the
 * two side by side and extrapolates what 100,000 threads would need here, next to the kernel
 * limits that would refuse them.
 *
 * The ring: member i receives from its inbox and sends to member i+1's (mod n). When the start gate
 * opens, every (n / tokens)-th member holds a token carrying its hops left; a holder sleeps a
 * random 0..SLEEP_MAX_US, then passes the token on with one hop less; a member that receives a
 * token with no hops left retires it, and the run ends when the last token retires. The ring
 * cannot deadlock: a member waits in a send only behind a member that holds a token, and there
 * are fewer tokens than members. Both rings do the same per hop (receive, sleep, send) with the
 * same 1,000 tokens in flight, enough work for every CPU in both, so CPU time per message and per
 * switch compare like with like. Wall-clock rates do not, on a busy machine: the kernel shares the
 * CPUs per thread, so 2 workers get a smaller share than 2,000 threads (the chapter says when the
 * load average is high).
 *
 * Counting: each member counts the messages it sent in its own struct (no shared counter on the
 * hot path); the main thread sums them after the members have finished (the scope join, or
 * pthread_join, orders those writes before the read). The run's end is stamped by the member that
 * retires the last token (tokens_left reaching 0, seq_cst).
 *
 * Bounds: 100,000 fibers and 2,000 threads, fixed; every wait has a deadline (the fiber run
 * FIBER_RUN_MAX, the thread run THREAD_RUN_MAX, start-up and teardown 10 s each); a run cut by its
 * deadline is stopped and its figures are computed from the messages passed, and says so. The
 * chapter takes 2-5 s on 2 cores (at most about 20 s if every bound is hit).
 *
 * Memory: resident and virtual size are the process's (/proc/self/statm) before and after the
 * fibers or threads exist, divided by their number; the ring's channels and mailboxes are made
 * before the first reading, so they are not counted. A thread's kernel stack is not in RSS: it is
 * the change of KernelStack in /proc/meminfo (system-wide, so other processes add noise). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer counts each fiber as a thread and dies at 8,128 of them: its build of the tour
 * runs 4,000 fibers and says so */
#define FIBERS 4000L
#define TSAN_NOTE 1
#else
#define FIBERS 100000L
#define TSAN_NOTE 0
#endif
#define FIBER_STACK ((size_t)16 * 1024)
#define FIBER_HOPS 500L /* per token: 500,000 messages */
#define THREADS 2000L
#define THREADS_MIN 100L /* fewer started: the comparison is not worth printing */
#define THREAD_HOPS 50L  /* per token: 50,000 messages */
#define TOKENS 1000L
#define SLEEP_MAX_US 100
#define FIBER_RUN_MAX WEFT_SEC(5)
#define THREAD_RUN_MAX WEFT_SEC(3)
#define SETTLE_MAX WEFT_SEC(10)
#define EXTRAPOLATE 100000.0
_Static_assert(FIBERS >= 2 * TOKENS, "the ring needs fewer tokens than fibers");

/* ------------------------------------------------------------------------------------------------
 * Printing: counts with thousands separators, bytes, durations. Each returns one of a few static
 * buffers in turn, so up to RING_BUFS of them fit in one printf (the main thread only).
 */
#define RING_BUFS 12

static char *next_buf(void)
{
	static char bufs[RING_BUFS][32];
	static int i;
	i = (i + 1) % RING_BUFS;
	return bufs[i];
}

static const char *count(long long v)
{
	char digits[32], *out = next_buf();
	int n = snprintf(digits, sizeof(digits), "%lld", v < 0 ? -v : v), o = 0;
	if (v < 0)
		out[o++] = '-';
	for (int i = 0; i < n; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[o++] = ',';
		out[o++] = digits[i];
	}
	out[o] = '\0';
	return out;
}

static const char *bytes(double b)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	char *out = next_buf();
	int u = 0;
	double a = b < 0 ? -b : b;
	while (a >= 1024 && u < 4) {
		a /= 1024;
		b /= 1024;
		u++;
	}
	bool whole = a >= 100 || u == 0 || a == (double)(long long)a;
	snprintf(out, 32, whole ? "%.0f %s" : "%.1f %s", b, unit[u]);
	return out;
}

static const char *dur(double ns)
{
	char *out = next_buf();
	if (ns < 1e3)
		snprintf(out, 32, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(out, 32, "%.1f us", ns / 1e3);
	else if (ns < 1e9)
		snprintf(out, 32, "%.0f ms", ns / 1e6);
	else
		snprintf(out, 32, "%.2f s", ns / 1e9);
	return out;
}

/* ------------------------------------------------------------------------------------------------
 * What the process and the kernel say.
 */

/* The process's resident and virtual size in bytes (/proc/self/statm); false if unreadable. */
static bool mem_now(double *ret_rss, double *ret_vm)
{
	FILE *f = fopen("/proc/self/statm", "re");
	if (!f)
		return false;
	long long size, resident;
	bool ok = fscanf(f, "%lld %lld", &size, &resident) == 2;
	fclose(f);
	if (!ok)
		return false;
	double page = (double)sysconf(_SC_PAGESIZE);
	*ret_rss = (double)resident * page;
	*ret_vm = (double)size * page;
	return true;
}

/* The value of "KEY: N kB" in a /proc file, in bytes; -1 if absent. */
static double proc_kb(const char *path, const char *key)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[256];
	size_t klen = strlen(key);
	double v = -1;
	while (fgets(line, sizeof(line), f)) {
		long long kb;
		if (strncmp(line, key, klen) == 0 && line[klen] == ':' &&
		    sscanf(line + klen + 1, "%lld", &kb) == 1) {
			v = (double)kb * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

/* The first integer in a file; -1 if none (or "max": see the caller). */
static long long read_ll(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long long v = -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* pids.max of the process's cgroup: a count, 0 for none ("max", or the root cgroup, which has no
 * pids.max), -1 if not found. Looks where cgroup v1's pids controller and v2 are usually mounted
 * (/sys/fs/cgroup/pids, /sys/fs/cgroup, /sys/fs/cgroup/unified); a parent's lower limit is not
 * seen. */
static long long cgroup_pids_max(void)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -1;
	char line[512], path[640];
	long long v = -1;
	bool in_root = false;
	while (v < 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *colon = strchr(line, ':'), *cg = colon ? strchr(colon + 1, ':') : NULL;
		if (!cg)
			continue;
		*cg++ = '\0';
		const char *ctl = colon + 1;
		const char *const v1[] = {"/sys/fs/cgroup/pids", NULL};
		const char *const v2[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified", NULL};
		const char *const *mounts = strcmp(ctl, "pids") == 0 ? v1
		                            : *ctl == '\0'           ? v2
		                                                     : NULL;
		for (int i = 0; mounts && mounts[i] && v < 0; i++) {
			if (strcmp(cg, "/") == 0)
				in_root = true;
			snprintf(path, sizeof(path), "%s%s/pids.max", mounts[i],
			         strcmp(cg, "/") == 0 ? "" : cg);
			FILE *p = fopen(path, "re");
			if (!p)
				continue;
			char word[32];
			if (fscanf(p, "%31s", word) == 1)
				v = strcmp(word, "max") == 0 ? 0 : atoll(word);
			fclose(p);
		}
	}
	fclose(f);
	return v < 0 && in_root ? 0 : v;
}

/* CPU time of the whole process (every thread, user + system) in ns, and its kernel context
 * switches (voluntary + involuntary, every thread). */
static void usage_now(int64_t *ret_cpu, long long *ret_csw)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0) {
		*ret_cpu = 0;
		*ret_csw = 0;
		return;
	}
	*ret_cpu = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	           (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
	*ret_csw = ru.ru_nvcsw + ru.ru_nivcsw;
}

/* ------------------------------------------------------------------------------------------------
 * The ring, common to fibers and threads.
 */
struct ring {
	long n;             /* members */
	long tokens;        /* tokens at the start */
	long hops;          /* hops each token makes */
	_Atomic long ready; /* members that reached their first wait */
	_Atomic long tokens_left;
	_Atomic int64_t done_at; /* when the last token retired; 0 before */
};

struct figures {
	long units;         /* fibers or threads */
	long messages;      /* tokens passed from one member to the next */
	bool cut;           /* stopped at the run's deadline before every token retired */
	int64_t wall;       /* from the start gate to the last retirement (or the stop) */
	int64_t cpu;        /* the process's CPU time over the run */
	long long switches; /* fiber switches, or the kernel's context switches */
	double rss, vm;     /* bytes per fiber or thread */
};

static uint32_t next_rand(uint32_t *s)
{
	uint32_t x = *s; /* xorshift32 */
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* A deadline a random 0..SLEEP_MAX_US from now. */
static int64_t nap(uint32_t *rng)
{
	return weft_now() + (int64_t)(next_rand(rng) % (SLEEP_MAX_US * 1000 + 1));
}

static void retire(struct ring *r)
{
	if (atomic_fetch_sub(&r->tokens_left, 1) == 1)
		atomic_store(&r->done_at, weft_now());
}

/* Waits (polling, from the main thread) until every member reached its first wait. */
static bool wait_ready(struct ring *r, long n)
{
	int64_t end = weft_deadline_in(SETTLE_MAX);
	while (atomic_load(&r->ready) < n) {
		if (weft_now() > end)
			return false;
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(1)));
	}
	return true;
}

/* ------------------------------------------------------------------------------------------------
 * Fibers.
 */
struct fring {
	struct ring ring;
	weft_chan **inbox; /* inbox[i]: member i receives from it; unbuffered, of long */
	weft_chan *gate;   /* closed by the main thread: the start */
};

struct fmember {
	struct fring *fr;
	long index;
	long sent;
	uint32_t rng;
};

static void fiber_member(void *arg)
{
	struct fmember *m = arg;
	struct fring *fr = m->fr;
	struct ring *r = &fr->ring;
	weft_chan *in = fr->inbox[m->index], *out = fr->inbox[(m->index + 1) % r->n];
	long token;
	atomic_fetch_add(&r->ready, 1);
	if (m->index % (r->n / r->tokens) == 0) {
		char c;
		if (weft_chan_recv(fr->gate, &c, WEFT_FOREVER) != -EPIPE)
			return; /* cancelled before the start */
		token = r->hops;
	} else if (weft_chan_recv(in, &token, WEFT_FOREVER) < 0) {
		return;
	}
	for (;;) {
		if (token == 0) {
			retire(r);
		} else {
			if (weft_fiber_sleep_until(nap(&m->rng)) < 0)
				return;
			token--;
			if (weft_chan_send(out, &token, WEFT_FOREVER) < 0)
				return;
			m->sent++;
		}
		/* -ECANCELED when the chapter is done */
		if (weft_chan_recv(in, &token, WEFT_FOREVER) < 0)
			return;
	}
}

static int run_fibers(struct figures *fig)
{
	const long n = FIBERS;
	int ret = 1, r = 0;
	bool stuck = false; /* fibers that outlived the cancel still use the ring */
	weft_sched *s = NULL;
	struct fring fr = {.ring = {.n = n, .tokens = TOKENS, .hops = FIBER_HOPS}};
	atomic_store(&fr.ring.tokens_left, TOKENS);
	struct fmember *members = calloc((size_t)n, sizeof(*members));
	fr.inbox = calloc((size_t)n, sizeof(*fr.inbox));
	if (!members || !fr.inbox) {
		tour_say("cannot allocate the ring: %s", weft_strerror(-ENOMEM));
		goto out;
	}
	for (long i = 0; i < n && r == 0; i++)
		r = weft_chan_create(&fr.inbox[i], sizeof(long), 0);
	if (r == 0)
		r = weft_chan_create(&fr.gate, 1, 0);
	if (r < 0) {
		tour_say("cannot create the ring's channels: %s", weft_strerror(r));
		goto out;
	}

	double rss0 = 0, vm0 = 0, rss1 = 0, vm1 = 0, rss2 = 0, vm2 = 0;
	bool mem_ok = mem_now(&rss0, &vm0);
	weft_sched_opts o = {.name = "tour", .stack_size = FIBER_STACK, .max_fibers = n + 16};
	r = weft_sched_create(&s, &o);
	if (r < 0) {
		tour_say("cannot create the scheduler: %s", weft_strerror(r));
		goto out;
	}
	weft_sched_stats st0, st1, st;
	weft_sched_stats_get(s, &st0);
	tour_say(
	        "A scheduler on this machine's %d worker thread%s (one per CPU of the budget), and",
	        st0.threads, st0.threads == 1 ? "" : "s");
	tour_say("%s fibers with a %s stack each, in a ring: a fiber receives a token from the one",
	         count(n), bytes((double)FIBER_STACK));
	tour_say("before it over an unbuffered channel, sleeps a random 0-%d us, and sends it on.",
	         SLEEP_MAX_US);
	tour_say("%s tokens go round, one every %s fibers, and each makes %s hops: %s messages.",
	         count(TOKENS), count(n / TOKENS), count(FIBER_HOPS), count(TOKENS * FIBER_HOPS));
	tour_blank();

	weft_scope *root = weft_sched_root(s);
	int64_t t0 = weft_now();
	for (long i = 0; i < n; i++) {
		members[i] =
		        (struct fmember){.fr = &fr, .index = i, .rng = 2654435761u ^ (uint32_t)i};
		r = weft_spawn(root, fiber_member, &members[i], NULL, NULL);
		if (r < 0) {
			tour_say("cannot spawn fiber %s of %s: %s", count(i + 1), count(n),
			         weft_strerror(r));
			goto out;
		}
	}
	int64_t spawn_ns = weft_now() - t0;
	if (!wait_ready(&fr.ring, n)) {
		tour_say("the fibers did not all start within %s", dur((double)SETTLE_MAX));
		goto out;
	}
	weft_sleep_until(weft_deadline_in(WEFT_MSEC(20))); /* the last ones park */
	weft_sched_stats_get(s, &st0);
	mem_ok = mem_ok && mem_now(&rss1, &vm1);
	if (TSAN_NOTE)
		tour_say("(a ThreadSanitizer build: it counts every fiber as a thread and stops at "
		         "8,128, so this run has %s fibers, not 100,000)",
		         count(n));
	tour_say("spawned %s fibers in %s (%s each); %s alive, every one parked in a receive",
	         count(n), dur((double)spawn_ns), dur((double)spawn_ns / n),
	         count(st0.fibers_alive));
	tour_say("stacks: %s usable each; %s with a guard page, %s with a canary only",
	         bytes((double)FIBER_STACK), count(st0.guarded_stacks), count(st0.canary_stacks));
	if (st0.canary_stacks > 0)
		tour_say("  (a guarded stack takes 2 of vm.max_map_count's %s mappings; past that "
		         "budget weft",
		         count(read_ll("/proc/sys/vm/max_map_count")));
	if (st0.canary_stacks > 0)
		tour_say("  checks a canary word at every switch instead)");
	if (mem_ok)
		tour_say("memory: RSS %s before, %s now: %s per fiber; address space %s per fiber",
		         bytes(rss0), bytes(rss1), bytes((rss1 - rss0) / n),
		         bytes((vm1 - vm0) / n));

	int64_t cpu0, cpu1;
	long long csw0, csw1;
	usage_now(&cpu0, &csw0);
	int64_t go = weft_now(), end = go + FIBER_RUN_MAX;
	long peak = st0.fibers_alive;
	weft_chan_close(fr.gate);
	while (atomic_load(&fr.ring.tokens_left) > 0 && weft_now() < end) {
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(10)));
		if (weft_sched_stats_get(s, &st) == 0 && st.fibers_alive > peak)
			peak = st.fibers_alive;
	}
	int64_t done_at = atomic_load(&fr.ring.done_at);
	fig->cut = done_at == 0;
	fig->wall = (fig->cut ? weft_now() : done_at) - go;
	usage_now(&cpu1, &csw1);
	weft_sched_stats_get(s, &st1);
	double hwm = proc_kb("/proc/self/status", "VmHWM");

	int64_t c0 = weft_now();
	weft_scope_cancel(root);
	r = weft_scope_join(root, weft_deadline_in(SETTLE_MAX));
	if (r < 0) {
		tour_say("the fibers did not finish within %s of the cancel: %s",
		         dur((double)SETTLE_MAX), weft_strerror(r));
		stuck = true; /* destroying would wait for them forever: left to the exit */
		goto out;
	}
	int64_t cancel_ns = weft_now() - c0;
	weft_sched_destroy(s);
	s = NULL;
	mem_ok = mem_ok && mem_now(&rss2, &vm2);

	fig->units = n;
	fig->messages = 0;
	for (long i = 0; i < n; i++)
		fig->messages += members[i].sent;
	fig->cpu = cpu1 - cpu0;
	fig->switches = (long long)(st1.switches - st0.switches);
	fig->rss = (rss1 - rss0) / n;
	fig->vm = (vm1 - vm0) / n;
	double secs = fig->wall > 0 ? (double)fig->wall / 1e9 : 1e-9;
	tour_blank();
	if (fig->cut)
		tour_say("stopped at the %s bound: not every token made all its hops",
		         dur((double)FIBER_RUN_MAX));
	tour_say("%s messages in %s: %s messages/s, using %.2f of the %d CPUs; %s of CPU each",
	         count(fig->messages), dur((double)fig->wall),
	         count((long long)(fig->messages / secs)), (double)fig->cpu / (double)fig->wall,
	         st1.threads, dur(fig->messages ? (double)fig->cpu / fig->messages : 0));
	tour_say("switches: %s (%s/s); %s of CPU per switch (the process's CPU time over them:",
	         count(fig->switches), count((long long)(fig->switches / secs)),
	         dur(fig->switches ? (double)fig->cpu / fig->switches : 0));
	tour_say("  the channel hand-off, the timers and the scheduling are in it); steals: %s",
	         count((long long)(st1.steals - st0.steals)));
	tour_say("fibers alive: %s at the peak; the stack used most deeply: %s of %s", count(peak),
	         bytes((double)st1.stack_high_water), bytes((double)FIBER_STACK));
	if (mem_ok)
		tour_say("peak RSS (VmHWM) %s; cancelling the %s fibers took %s; RSS after: %s",
		         bytes(hwm), count(n), dur((double)cancel_ns), bytes(rss2));
	ret = 0;
out:
	if (stuck)
		return 1;
	weft_sched_destroy(s);
	if (fr.inbox)
		for (long i = 0; i < n; i++)
			weft_chan_destroy(fr.inbox[i]);
	weft_chan_destroy(fr.gate);
	free(fr.inbox);
	free(members);
	return ret;
}

/* ------------------------------------------------------------------------------------------------
 * OS threads: the same ring. A member's inbox is a one-slot mailbox; its owner waits for it to be
 * full, its one sender (the member before) waits for it to be empty. Only one of the two can wait
 * at a time (the predicates are opposite and change under the mutex), so one condvar and
 * pthread_cond_signal suffice. `stop` is set, then every mailbox's mutex is taken and its condvar
 * broadcast: a member that saw stop false under the mutex is waiting by then and wakes.
 */
struct mailbox {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool full;
	long token;
} __attribute__((aligned(64)));

struct tring {
	struct ring ring;
	struct mailbox *box;
	pthread_mutex_t gate_mu;
	pthread_cond_t gate_cv;
	bool open; /* under gate_mu */
	_Atomic bool stop;
};

struct tmember {
	struct tring *tr;
	long index;
	long sent;
	uint32_t rng;
};

static void *thread_member(void *arg)
{
	struct tmember *m = arg;
	struct tring *tr = m->tr;
	pthread_mutex_lock(&tr->gate_mu);
	atomic_fetch_add(&tr->ring.ready, 1);
	while (!tr->open)
		pthread_cond_wait(&tr->gate_cv, &tr->gate_mu);
	pthread_mutex_unlock(&tr->gate_mu);
	if (atomic_load(&tr->stop)) /* the chapter failed before the start: ring.n may be 0 */
		return NULL;
	/* ring.n and the first tokens were set before the gate opened */
	struct mailbox *in = &tr->box[m->index], *out = &tr->box[(m->index + 1) % tr->ring.n];
	while (!atomic_load(&tr->stop)) {
		pthread_mutex_lock(&in->mu);
		while (!in->full && !atomic_load(&tr->stop))
			pthread_cond_wait(&in->cv, &in->mu);
		bool got = in->full;
		long token = in->token;
		in->full = false;
		if (got)
			pthread_cond_signal(&in->cv); /* the sender may wait for room */
		pthread_mutex_unlock(&in->mu);
		if (!got)
			break;
		if (token == 0) {
			retire(&tr->ring);
			continue;
		}
		weft_sleep_until(nap(&m->rng));
		pthread_mutex_lock(&out->mu);
		while (out->full && !atomic_load(&tr->stop))
			pthread_cond_wait(&out->cv, &out->mu);
		bool sent = !out->full;
		if (sent) {
			out->token = token - 1;
			out->full = true;
			pthread_cond_signal(&out->cv);
		}
		pthread_mutex_unlock(&out->mu);
		if (!sent)
			break;
		m->sent++;
	}
	return NULL;
}

static void thread_ring_stop(struct tring *tr, long started)
{
	pthread_mutex_lock(&tr->gate_mu);
	atomic_store(&tr->stop, true);
	tr->open = true;
	pthread_cond_broadcast(&tr->gate_cv);
	pthread_mutex_unlock(&tr->gate_mu);
	for (long i = 0; i < started; i++) {
		pthread_mutex_lock(&tr->box[i].mu);
		pthread_cond_broadcast(&tr->box[i].cv);
		pthread_mutex_unlock(&tr->box[i].mu);
	}
}

static int run_threads(struct figures *fig, double *ret_kstack)
{
	int ret = 1;
	long started = 0;
	struct tring tr = {.ring = {.tokens = TOKENS, .hops = THREAD_HOPS}};
	pthread_mutex_init(&tr.gate_mu, NULL);
	pthread_cond_init(&tr.gate_cv, NULL);
	struct tmember *members = calloc((size_t)THREADS, sizeof(*members));
	pthread_t *tids = calloc((size_t)THREADS, sizeof(*tids));
	tr.box = aligned_alloc(64, (size_t)THREADS * sizeof(*tr.box));
	if (!members || !tids || !tr.box) {
		tour_say("cannot allocate the thread ring: %s", weft_strerror(-ENOMEM));
		goto out;
	}
	for (long i = 0; i < THREADS; i++) {
		pthread_mutex_init(&tr.box[i].mu, NULL);
		pthread_cond_init(&tr.box[i].cv, NULL);
		tr.box[i].full = false;
	}

	double rss0 = 0, vm0 = 0, rss1 = 0, vm1 = 0;
	bool mem_ok = mem_now(&rss0, &vm0);
	double ks0 = proc_kb("/proc/meminfo", "KernelStack");
	int64_t t0 = weft_now();
	int err = 0;
	for (; started < THREADS; started++) {
		members[started] = (struct tmember){
		        .tr = &tr, .index = started, .rng = 2246822519u ^ (uint32_t)started};
		err = pthread_create(&tids[started], NULL, thread_member, &members[started]);
		if (err != 0)
			break;
	}
	int64_t start_ns = weft_now() - t0;
	if (started < THREADS_MIN) {
		tour_say("cannot start OS threads: only %ld started (%s)", started,
		         weft_strerror(err));
		goto out;
	}
	if (!wait_ready(&tr.ring, started)) {
		tour_say("the threads did not all start within %s", dur((double)SETTLE_MAX));
		goto out;
	}
	weft_sleep_until(weft_deadline_in(WEFT_MSEC(20))); /* the last ones park */
	mem_ok = mem_ok && mem_now(&rss1, &vm1);
	double ks1 = proc_kb("/proc/meminfo", "KernelStack");
	if (started < THREADS)
		tour_say("only %s of %s threads could start (pthread_create: %s)", count(started),
		         count(THREADS), weft_strerror(err));
	tour_say("started %s threads in %s (%s each), all parked", count(started),
	         dur((double)start_ns), dur((double)start_ns / started));
	if (mem_ok)
		tour_say("memory: RSS %s per thread; address space %s per thread",
		         bytes((rss1 - rss0) / started), bytes((vm1 - vm0) / started));
	*ret_kstack = ks0 >= 0 && ks1 >= 0 ? (ks1 - ks0) / started : -1;
	if (*ret_kstack >= 0)
		tour_say("  and in the kernel, not in RSS: %s of kernel stack per thread "
		         "(KernelStack)",
		         bytes(*ret_kstack));

	/* the ring's size and first tokens, then the gate */
	long spacing = started / TOKENS > 2 ? started / TOKENS : 2,
	     tokens = 0; /* fewer than members */
	for (long i = 0; i < started; i += spacing) {
		tr.box[i].full = true;
		tr.box[i].token = THREAD_HOPS;
		tokens++;
	}
	tr.ring.n = started;
	atomic_store(&tr.ring.tokens_left, tokens);
	int64_t cpu0, cpu1;
	long long csw0, csw1;
	usage_now(&cpu0, &csw0);
	int64_t go = weft_now(), end = go + THREAD_RUN_MAX;
	pthread_mutex_lock(&tr.gate_mu);
	tr.open = true;
	pthread_cond_broadcast(&tr.gate_cv);
	pthread_mutex_unlock(&tr.gate_mu);
	while (atomic_load(&tr.ring.tokens_left) > 0 && weft_now() < end)
		weft_sleep_until(weft_deadline_in(WEFT_MSEC(10)));
	int64_t done_at = atomic_load(&tr.ring.done_at);
	fig->cut = done_at == 0;
	fig->wall = (fig->cut ? weft_now() : done_at) - go;
	usage_now(&cpu1, &csw1);
	ret = 0;

	fig->units = started;
	fig->messages = 0;
	fig->cpu = cpu1 - cpu0;
	fig->switches = csw1 - csw0;
	fig->rss = (rss1 - rss0) / started;
	fig->vm = (vm1 - vm0) / started;
out:
	if (tids) {
		thread_ring_stop(&tr, started);
		for (long i = 0; i < started; i++)
			pthread_join(tids[i], NULL);
	}
	if (ret == 0) {
		for (long i = 0; i < started; i++)
			fig->messages += members[i].sent;
		double secs = fig->wall > 0 ? (double)fig->wall / 1e9 : 1e-9;
		tour_blank();
		if (fig->cut)
			tour_say("stopped at the %s bound: not every token made all its hops",
			         dur((double)THREAD_RUN_MAX));
		tour_say("%s messages in %s: %s messages/s, using %.2f CPUs; %s of CPU each",
		         count(fig->messages), dur((double)fig->wall),
		         count((long long)(fig->messages / secs)),
		         (double)fig->cpu / (double)fig->wall,
		         dur(fig->messages ? (double)fig->cpu / fig->messages : 0));
		tour_say("kernel context switches: %s (%s/s); %s of CPU per switch",
		         count(fig->switches), count((long long)(fig->switches / secs)),
		         dur(fig->switches ? (double)fig->cpu / fig->switches : 0));
	}
	if (tr.box)
		for (long i = 0; i < THREADS; i++) {
			pthread_mutex_destroy(&tr.box[i].mu);
			pthread_cond_destroy(&tr.box[i].cv);
		}
	pthread_mutex_destroy(&tr.gate_mu);
	pthread_cond_destroy(&tr.gate_cv);
	free(tr.box);
	free(tids);
	free(members);
	return ret;
}

/* ------------------------------------------------------------------------------------------------
 * The chapter.
 */

/* One limit on 100,000 threads: its value (0: none, -1: unknown) against what they need of it. */
static void limit_line(const char *what, long long value, double need, const char *unit,
                       const char *note)
{
	if (value < 0)
		tour_say("  %-25s unknown here", what);
	else if (value == 0)
		tour_say("  %-25s no limit", what);
	else
		tour_say("  %-25s %9s %-9s %s", what, count(value), unit,
		         note                   ? note
		         : (double)value < need ? "<- too low for 100,000 threads"
		                                : "allows them");
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static int run(void)
{
	struct figures fib = {0}, thr = {0};
	double load = -1;
	int cpus = weft_cpu_budget(NULL);
	FILE *f = fopen("/proc/loadavg", "re");
	if (f) {
		if (fscanf(f, "%lf", &load) != 1)
			load = -1;
		fclose(f);
	}
	if (cpus > 0 && load > 1.5 * cpus) {
		tour_say("Note: this machine is busy (load average %.1f on %d CPU%s): the "
		         "wall-clock",
		         load, cpus, cpus == 1 ? "" : "s");
		tour_say("figures below will be slower than on an idle one; the CPU-time ones "
		         "hold.");
		tour_blank();
	}
	if (run_fibers(&fib) != 0)
		return 1;

	pthread_attr_t attr;
	size_t def_stack = 0;
	if (pthread_getattr_default_np(&attr) == 0) {
		pthread_attr_getstacksize(&attr, &def_stack);
		pthread_attr_destroy(&attr);
	}
	struct rlimit rl_stack, rl_nproc;
	bool have_stack = getrlimit(RLIMIT_STACK, &rl_stack) == 0;
	bool have_nproc = getrlimit(RLIMIT_NPROC, &rl_nproc) == 0;
	tour_blank();
	tour_say("The same ring in OS threads, measured: %s threads, each with a mailbox of one",
	         count(THREADS));
	tour_say("mutex + condvar, sleeping a random 0-%d us (clock_nanosleep) per hop; the same",
	         SLEEP_MAX_US);
	tour_say("%s tokens, %s hops each: %s messages. A thread's stack is the pthread default:",
	         count(TOKENS), count(THREAD_HOPS), count(TOKENS * THREAD_HOPS));
	if (have_stack && rl_stack.rlim_cur != RLIM_INFINITY)
		tour_say("%s reserved (ulimit -s: %s KiB).", bytes((double)def_stack),
		         count((long long)(rl_stack.rlim_cur / 1024)));
	else
		tour_say("%s reserved (ulimit -s: unlimited).", bytes((double)def_stack));
	tour_blank();
	double kstack = -1;
	if (run_threads(&thr, &kstack) != 0)
		return 1;

	double fcpu_msg = ratio((double)fib.cpu, (double)fib.messages);
	double tcpu_msg = ratio((double)thr.cpu, (double)thr.messages);
	double fcpu_sw = ratio((double)fib.cpu, (double)fib.switches);
	double tcpu_sw = ratio((double)thr.cpu, (double)thr.switches);
	double tmem = thr.rss + (kstack > 0 ? kstack : 0);
	tour_blank();
	tour_say("Side by side                 one fiber   one thread   the fiber's advantage");
	tour_say("  CPU per message            %9s   %10s   %6.1fx", dur(fcpu_msg), dur(tcpu_msg),
	         ratio(tcpu_msg, fcpu_msg));
	tour_say("  CPU per switch             %9s   %10s   %6.1fx", dur(fcpu_sw), dur(tcpu_sw),
	         ratio(tcpu_sw, fcpu_sw));
	tour_say("  memory%-20s %9s   %10s   %6.1fx", kstack > 0 ? " (+ kernel stack)" : "",
	         bytes(fib.rss), bytes(tmem), ratio(tmem, fib.rss));
	tour_say("  address space reserved     %9s   %10s   %6.0fx", bytes(fib.vm), bytes(thr.vm),
	         ratio(thr.vm, fib.vm));

	long long pid_max = read_ll("/proc/sys/kernel/pid_max");
	long long threads_max = read_ll("/proc/sys/kernel/threads-max");
	long long map_max = read_ll("/proc/sys/vm/max_map_count");
	long long pids_cg = cgroup_pids_max();
	tour_blank();
	tour_say("100,000 threads, extrapolated from the %s measured (not run): %s resident and",
	         count(thr.units), bytes(thr.rss * EXTRAPOLATE));
	tour_say("%s of kernel stacks (the %s fibers took %s in all), %s of address space",
	         kstack > 0 ? bytes(kstack * EXTRAPOLATE) : "an unknown amount", count(fib.units),
	         bytes(fib.rss * (double)fib.units), bytes(thr.vm * EXTRAPOLATE));
	tour_say("and %s memory mappings; the %s messages would take %s of CPU",
	         count((long long)(2 * EXTRAPOLATE)), count(fib.messages),
	         dur(tcpu_msg * (double)fib.messages));
	tour_say("(the fibers took %s).", dur((double)fib.cpu));
	tour_say("This machine's limits on 100,000 threads:");
	limit_line("kernel.pid_max", pid_max, EXTRAPOLATE, "pids", NULL);
	limit_line("kernel.threads-max", threads_max, EXTRAPOLATE, "threads", NULL);
	limit_line("vm.max_map_count", map_max, 2 * EXTRAPOLATE, "mappings", NULL);
	limit_line("ulimit -u (RLIMIT_NPROC)",
	           !have_nproc                          ? -1
	           : rl_nproc.rlim_cur == RLIM_INFINITY ? 0
	                                                : (long long)rl_nproc.rlim_cur,
	           EXTRAPOLATE, "tasks", geteuid() == 0 ? "(not enforced for root)" : NULL);
	limit_line("cgroup pids.max", pids_cg, EXTRAPOLATE, "tasks", NULL);
	tour_blank();
	tour_say("measured: %s fibers, %s messages/s, %s of CPU per switch, %s per fiber;",
	         count(fib.units), count((long long)(fib.messages / ((double)fib.wall / 1e9))),
	         dur(fcpu_sw), bytes(fib.rss));
	tour_say("          %s OS threads, %s of CPU per switch (%.1fx), %s per thread (%.1fx)",
	         count(thr.units), dur(tcpu_sw), ratio(tcpu_sw, fcpu_sw), bytes(tmem),
	         ratio(tmem, fib.rss));
	return 0;
}

const struct tour_chapter tour_chapter_fibers = {
        "fibers",
        "100,000 fibers passing messages and sleeping, beside what OS threads would cost",
        run,
};
