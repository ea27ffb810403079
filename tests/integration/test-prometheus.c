/* test-prometheus.c: a real Prometheus server scrapes weft's metrics endpoint.
 *
 * The case serves a registry (a counter with a distinctive value, a labelled gauge whose label
 * value needs every escape, a histogram) on 127.0.0.1, starts `prometheus` on a free loopback port
 * with a 1 s scrape interval and a data folder in the case's temporary folder, and asks its HTTP
 * API until the values arrive: the counter, the gauge selected by its escaped label, the
 * histogram's _count and a histogram_quantile over its buckets. On failure the Prometheus log's
 * tail is printed. Skipped (with the reason) where the prometheus binary is missing. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"

static char log_path[600];

/* Print the end of Prometheus' log to stderr (the test's diagnostics). */
static void print_log_tail(void)
{
	char *log = th_read_file(log_path);
	if (!log)
		return;
	size_t n = strlen(log);
	const char *tail = n > 4000 ? log + n - 4000 : log;
	fprintf(stderr, "# prometheus log (last %zu bytes):\n%s\n", strlen(tail), tail);
	free(log);
}

static void url_encode(const char *s, char *out, size_t cap)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (o + 4 >= cap)
			FAIL("query too long");
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, cap - o, "%%%02X", *p);
	}
	out[o] = '\0';
}

/* Ask Prometheus for `promql` until its result has a sample (bounded by `deadline`); the first
 * sample's value (a string in Prometheus' JSON) goes to `value`, the whole body to *ret_body. */
static bool query(int port, const char *promql, int64_t deadline, char value[64], char **ret_body)
{
	char enc[1024], path[1200];
	url_encode(promql, enc, sizeof(enc));
	snprintf(path, sizeof(path), "/api/v1/query?query=%s", enc);
	for (;;) {
		char *body = NULL;
		int st = th_http_get(port, path, 5, &body);
		if (st == 200 && body) {
			const char *v = strstr(body, "\"value\":[");
			const char *q = v ? strchr(v, ',') : NULL;
			if (q && q[1] == '"') {
				const char *end = strchr(q + 2, '"');
				size_t n = end ? (size_t)(end - q - 2) : 0;
				if (end && n < 64) {
					memcpy(value, q + 2, n);
					value[n] = '\0';
					*ret_body = body;
					return true;
				}
			}
		}
		free(body);
		if (weft_now() > deadline)
			return false;
		th_sleep_ms(250);
	}
}

TEST_TIMEOUT(prometheus_scrapes_weft, 90)
{
	if (!th_have_program("prometheus"))
		SKIP("prometheus not installed (scripts/deps installs it)");

	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_counter *c;
	weft_gauge *g;
	weft_hist *h;
	static const char *const room[] = {"room", "a \"quoted\" \\ room\nx", NULL};
	ASSERT_OK(weft_metrics_counter(m, "weft_it_requests_total", "Requests served.", NULL, &c));
	ASSERT_OK(weft_metrics_gauge(m, "weft_it_temperature_celsius", "Temperature.", room, &g));
	ASSERT_OK(weft_metrics_histogram(m, "weft_it_latency_seconds", "Latency.", NULL, NULL, &h));
	weft_counter_add(c, 4242);
	weft_gauge_set(g, 21.5);
	for (int i = 0; i < 1000; i++)
		weft_hist_record(h, WEFT_MSEC(3)); /* the bucket (2.097152 ms, 4.194304 ms] */
	weft_metrics_server *srv;
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &srv));
	int port = weft_metrics_server_port(srv);

	const char *tmp = th_tmpdir();
	char config[600], data[600], cfg_arg[700], data_arg[700], listen_arg[100];
	snprintf(config, sizeof(config), "%s/prometheus.yml", tmp);
	snprintf(data, sizeof(data), "%s/data", tmp);
	snprintf(log_path, sizeof(log_path), "%s/prometheus.log", tmp);
	char yml[1024];
	snprintf(yml, sizeof(yml),
	         "global:\n"
	         "  scrape_interval: 1s\n"
	         "  scrape_timeout: 1s\n"
	         "  evaluation_interval: 1s\n"
	         "scrape_configs:\n"
	         "  - job_name: weft\n"
	         "    metrics_path: /metrics\n"
	         "    static_configs:\n"
	         "      - targets: ['127.0.0.1:%d']\n",
	         port);
	th_write_file(config, yml);
	snprintf(cfg_arg, sizeof(cfg_arg), "--config.file=%s", config);
	snprintf(data_arg, sizeof(data_arg), "--storage.tsdb.path=%s", data);
	/* The free port may be taken by another test between th_free_port and Prometheus' bind:
	 * then Prometheus exits at once, and another port is tried. */
	int prom_port = 0;
	pid_t pid = -1;
	for (int attempt = 0; attempt < 5 && pid < 0; attempt++) {
		prom_port = th_free_port();
		snprintf(listen_arg, sizeof(listen_arg), "--web.listen-address=127.0.0.1:%d",
		         prom_port);
		char *const argv[] = {"prometheus", cfg_arg, data_arg, listen_arg, NULL};
		pid = th_spawn(argv, log_path);
		int64_t ready_by = weft_deadline_in((int64_t)(30 * th_scale() * 1e9));
		for (;;) {
			int st;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				print_log_tail();
				pid = -1; /* exited: most likely the port was taken */
				break;
			}
			if (th_http_get(prom_port, "/-/ready", 2, NULL) == 200)
				break;
			if (weft_now() > ready_by) {
				th_stop(pid, SIGKILL, 5);
				print_log_tail();
				FAIL("prometheus did not become ready on port %d", prom_port);
			}
			th_sleep_ms(100);
		}
	}
	if (pid < 0)
		FAIL("prometheus could not start (see its log above)");

	int64_t deadline = weft_deadline_in((int64_t)(60 * th_scale() * 1e9));
	char value[64] = "", *body = NULL;
	const char *failed = NULL;
	if (!query(prom_port, "weft_it_requests_total", deadline, value, &body))
		failed = "the counter never arrived";
	else if (strcmp(value, "4242") != 0)
		failed = "the counter has the wrong value";
	if (!failed) {
		free(body);
		body = NULL;
		/* Select the gauge by its label: PromQL string escapes mirror the exposition's. */
		if (!query(prom_port,
		           "weft_it_temperature_celsius{room=\"a \\\"quoted\\\" \\\\ room\\nx\"}",
		           deadline, value, &body))
			failed = "the labelled gauge was not found by its label";
		else if (strcmp(value, "21.5") != 0)
			failed = "the gauge has the wrong value";
		else if (!strstr(body, "\"room\":\"a \\\"quoted\\\" \\\\ room\\nx\""))
			failed = "the label value did not survive the round trip";
	}
	if (!failed) {
		free(body);
		body = NULL;
		if (!query(prom_port, "weft_it_latency_seconds_count", deadline, value, &body))
			failed = "the histogram's _count never arrived";
		else if (strcmp(value, "1000") != 0)
			failed = "the histogram's _count is wrong";
	}
	double q50 = 0;
	if (!failed) {
		free(body);
		body = NULL;
		if (!query(prom_port, "histogram_quantile(0.5, weft_it_latency_seconds_bucket)",
		           deadline, value, &body))
			failed = "histogram_quantile gave no sample";
		else if ((q50 = strtod(value, NULL)) < 0.002097152 || q50 > 0.004194304)
			failed = "histogram_quantile is outside the bucket of the recorded values";
	}
	if (failed) {
		fprintf(stderr, "# %s; last answer: %s\n", failed, body ? body : "(none)");
		print_log_tail();
	}
	free(body);

	int st = th_stop(pid, SIGTERM, 10);
	weft_metrics_server_stop(srv);
	weft_metrics_destroy(m);
	if (failed)
		FAIL("%s (value %s)", failed, value);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		print_log_tail();
		FAIL("prometheus did not exit cleanly on SIGTERM (status %d)", st);
	}
}
