/* metrics-server: size work to the CPU budget, time it, and serve the figures to Prometheus.
 *
 *   build/examples/metrics-server [ADDR] [SECONDS]      (default 127.0.0.1:9464, 30 s)
 *   curl http://127.0.0.1:9464/metrics                  (while it runs)
 */
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

static int die(const char *what, int err)
{
	fprintf(stderr, "metrics-server: %s: %s\n", what, weft_strerror(err));
	return 1;
}

int main(int argc, char **argv)
{
	const char *addr = argc > 1 ? argv[1] : "127.0.0.1:9464";
	int seconds = argc > 2 ? atoi(argv[2]) : 30;

	double capacity;
	int cpus = weft_cpu_budget(&capacity);
	if (cpus < 0)
		return die("CPU budget", cpus);

	weft_metrics *m;
	weft_counter *jobs;
	weft_hist *latency;
	weft_metrics_server *srv;
	int r = weft_metrics_create(&m, NULL);
	if (r < 0)
		return die("registry", r);
	if ((r = weft_metrics_counter(m, "jobs_total", "Jobs done.",
	                              (const char *const[]){"queue", "default", NULL}, &jobs)) <
	            0 ||
	    (r = weft_metrics_histogram(m, "job_seconds", "Time per job.", NULL, NULL, &latency)) <
	            0 ||
	    (r = weft_metrics_serve(m, addr, &srv)) < 0) {
		weft_metrics_destroy(m);
		return die(addr, r);
	}
	printf("%d CPUs (capacity %.2f); serving http://%s/metrics (port %d) for %d s\n", cpus,
	       capacity, addr, weft_metrics_server_port(srv), seconds);

	int64_t end = weft_deadline_in(WEFT_SEC(seconds));
	while (weft_now() < end) {
		int64_t start = weft_now();
		weft_sleep_until(start + WEFT_MSEC(1 + rand() % 5)); /* the "job" */
		weft_hist_record(latency, weft_now() - start);
		weft_counter_add(jobs, 1);
	}
	printf("%llu jobs, p50 %.2f ms, p99 %.2f ms\n",
	       (unsigned long long)weft_counter_value(jobs),
	       weft_hist_percentile(latency, 50) / 1e6, weft_hist_percentile(latency, 99) / 1e6);
	weft_metrics_server_stop(srv);
	weft_metrics_destroy(m);
	return 0;
}
