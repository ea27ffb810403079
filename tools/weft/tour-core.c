/* tour-core.c: the tour chapter of the core part, "metrics": the instruments every later chapter
 * measures with, and what they cost on this machine. It times the clock and a histogram record
 * (alone and with every CPU recording into one histogram), measures how late the kernel wakes a
 * 1 ms sleep, puts those figures in a metrics registry, serves it over HTTP on loopback and reads
 * its own /metrics back, as Prometheus would. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"

#define REPS 5

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

static double clock_cost(void)
{
	double runs[REPS];
	for (int r = 0; r < REPS; r++) {
		const int n = 1000000;
		int64_t sink = 0, t0 = weft_now();
		for (int i = 0; i < n; i++)
			sink += weft_now();
		runs[r] = (double)(weft_now() - t0) / n;
		if (sink == 42) /* keep the loop */
			puts("");
	}
	return median(runs, REPS);
}

struct recorder {
	weft_hist *h;
	int n;
	_Atomic bool *go; /* the recorders start together once it is set */
	double ns_per_op;
};

static void *record_loop(void *arg)
{
	struct recorder *r = arg;
	while (!atomic_load(r->go))
		sched_yield();
	int64_t t0 = weft_now();
	for (int i = 0; i < r->n; i++)
		weft_hist_record(r->h, 1000 + (i & 1023) * 37);
	r->ns_per_op = (double)(weft_now() - t0) / r->n;
	return NULL;
}

/* ns per weft_hist_record with up to `threads` threads recording into one histogram at once (the
 * slowest thread's figure; median of runs). Returns the threads that really ran in *ret_threads
 * (fewer only if threads cannot be created). */
static double record_cost(int threads, int *ret_threads)
{
	double runs[REPS];
	int ran = threads;
	for (int run = 0; run < REPS; run++) {
		weft_hist *h;
		if (weft_hist_create(&h) < 0)
			return -1;
		_Atomic bool go = false;
		struct recorder rec[8];
		pthread_t tid[8];
		int started = 1; /* rec[0] runs on this thread */
		rec[0] = (struct recorder){h, 1000000, &go, 0};
		for (int i = 1; i < threads; i++) {
			rec[started] = (struct recorder){h, 1000000, &go, 0};
			if (pthread_create(&tid[started], NULL, record_loop, &rec[started]) == 0)
				started++;
		}
		atomic_store(&go, true);
		record_loop(&rec[0]);
		double worst = rec[0].ns_per_op;
		for (int i = 1; i < started; i++) {
			pthread_join(tid[i], NULL);
			if (rec[i].ns_per_op > worst)
				worst = rec[i].ns_per_op;
		}
		weft_hist_destroy(h);
		runs[run] = worst;
		if (started < ran)
			ran = started;
	}
	*ret_threads = ran;
	return median(runs, REPS);
}

/* GET http://127.0.0.1:port/path; returns the body (malloc'd) or NULL. */
static char *http_get(int port, const char *path)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return NULL;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	int64_t deadline = weft_deadline_in(WEFT_SEC(5));
	while (buf) {
		struct pollfd p = {fd, POLLIN, 0};
		int ms = (int)((deadline - weft_now()) / 1000000);
		if (ms <= 0 || poll(&p, 1, ms) <= 0)
			break;
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = '\0';
	char *body = strstr(buf, "\r\n\r\n");
	if (!body ||
	    (strncmp(buf, "HTTP/1.0 200", 12) != 0 && strncmp(buf, "HTTP/1.1 200", 12) != 0)) {
		free(buf);
		return NULL;
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
}

static int run(void)
{
	int ret = 1;
	weft_metrics *m = NULL;
	weft_metrics_server *srv = NULL;
	char *text = NULL;
	int ncpu = weft_cpu_budget(NULL);
	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 8)
		ncpu = 8;

	tour_say(
	        "Every later chapter measures with these: a monotonic clock, lock-free log-linear");
	tour_say("histograms (constant %.1f %% relative error), and a metrics registry that "
	         "Prometheus",
	         100 * WEFT_HIST_REL_ERROR);
	tour_say("scrapes. First, what they cost here.");

	double clk = clock_cost();
	tour_say("reading the clock (weft_now): %.1f ns", clk);
	int one;
	double rec1 = record_cost(1, &one);
	tour_say("recording into a histogram, one thread: %.1f ns", rec1);
	double recn = record_cost(ncpu, &ncpu);
	tour_say("recording into one histogram from %d threads at once: %.1f ns each", ncpu, recn);

	int r = weft_metrics_create(&m, NULL);
	weft_hist *late = NULL;
	weft_gauge *g_clock = NULL, *g_rec = NULL;
	weft_counter *sleeps = NULL;
	if (r >= 0)
		r = weft_metrics_histogram(m, "weft_tour_sleep_lateness_seconds",
		                           "How late a 1 ms sleep wakes up.", NULL, NULL, &late);
	if (r >= 0)
		r = weft_metrics_counter(m, "weft_tour_sleeps_total", "Sleeps measured.", NULL,
		                         &sleeps);
	if (r >= 0)
		r = weft_metrics_gauge(m, "weft_tour_op_nanoseconds", "Cost of one operation.",
		                       (const char *const[]){"op", "clock", NULL}, &g_clock);
	if (r >= 0)
		r = weft_metrics_gauge(m, "weft_tour_op_nanoseconds", "Cost of one operation.",
		                       (const char *const[]){"op", "hist_record", NULL}, &g_rec);
	if (r < 0) {
		tour_say("cannot build the metrics registry: %s", weft_strerror(r));
		goto out;
	}
	weft_gauge_set(g_clock, clk);
	weft_gauge_set(g_rec, rec1);

	tour_blank();
	tour_say("Now a live measurement: 200 sleeps of 1 ms, each recording how late it woke.");
	for (int i = 0; i < 200; i++) {
		int64_t deadline = weft_deadline_in(WEFT_MSEC(1));
		weft_sleep_until(deadline);
		weft_hist_record(late, weft_now() - deadline);
		weft_counter_add(sleeps, 1);
	}
	tour_say("a 1 ms sleep wakes late by: p50 %.1f us, p99 %.1f us, max %.1f us",
	         weft_hist_percentile(late, 50) / 1e3, weft_hist_percentile(late, 99) / 1e3,
	         weft_hist_max(late) / 1e3);
	tour_say("(the timer slack every time-scaled chapter lives with)");

	r = weft_metrics_serve(m, "127.0.0.1:0", &srv);
	if (r < 0) {
		tour_say("cannot serve metrics on 127.0.0.1: %s", weft_strerror(r));
		goto out;
	}
	int port = weft_metrics_server_port(srv);
	tour_blank();
	tour_say("The registry is served at http://127.0.0.1:%d/metrics; fetching it as Prometheus "
	         "would:",
	         port);
	int64_t t0 = weft_now();
	text = http_get(port, "/metrics");
	int64_t took = weft_now() - t0;
	if (!text) {
		tour_say("the endpoint did not answer");
		goto out;
	}
	int shown = 0, lines = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		lines++;
		/* every line but the histogram's finite buckets */
		bool interesting = !strstr(line, "_bucket{") || strstr(line, "le=\"+Inf\"");
		if (interesting && shown < 14) {
			tour_say("  | %s", line);
			shown++;
		}
	}
	tour_say("  | ... (%d lines in all)", lines);
	tour_blank();
	tour_say("measured: clock read %.1f ns; histogram record %.1f ns alone, %.1f ns with %d "
	         "threads "
	         "on one histogram;",
	         clk, rec1, recn, ncpu);
	tour_say("          1 ms sleep late by p50 %.1f us, p99 %.1f us; /metrics answered in %.0f "
	         "us",
	         weft_hist_percentile(late, 50) / 1e3, weft_hist_percentile(late, 99) / 1e3,
	         took / 1e3);
	ret = 0;
out:
	free(text);
	weft_metrics_server_stop(srv);
	weft_metrics_destroy(m);
	return ret;
}

const struct tour_chapter tour_chapter_metrics = {
        "metrics",
        "the instruments: clock, histograms, metrics over HTTP, and what they cost",
        run,
};
