/* test-http.c: the metrics HTTP endpoint: GET and HEAD of /metrics and /metrics.json, 404, 405,
 * 400, 431, silent and slow clients, more than 64 clients, large bodies, stop with clients
 * connected, address parsing, address in use, fault injection (alloc, thread, open) and no
 * SIGPIPE. The harness checks that no fd or thread is left behind. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "internal/alloc.h"

struct fixture {
	weft_metrics *m;
	weft_metrics_server *s;
	int port;
};

static void start(struct fixture *f)
{
	ASSERT_OK(weft_metrics_create(&f->m, NULL));
	weft_counter *c;
	weft_gauge *g;
	weft_hist *h;
	static const char *const l[] = {"kind", "a \"b\"", NULL};
	ASSERT_OK(weft_metrics_counter(f->m, "http_test_total", "A counter.", l, &c));
	ASSERT_OK(weft_metrics_gauge(f->m, "http_test_level", "A gauge.", NULL, &g));
	ASSERT_OK(
	        weft_metrics_histogram(f->m, "http_test_seconds", "A histogram.", NULL, NULL, &h));
	weft_counter_add(c, 4242);
	weft_gauge_set(g, 1.5);
	weft_hist_record(h, WEFT_MSEC(3));
	ASSERT_OK(weft_metrics_serve(f->m, "127.0.0.1:0", &f->s));
	f->port = weft_metrics_server_port(f->s);
	ASSERT_GT(f->port, 0);
	ASSERT_LE(f->port, 65535);
}

static void finish(struct fixture *f)
{
	weft_metrics_server_stop(f->s);
	weft_metrics_destroy(f->m);
}

static char *raw(int port, const char *req)
{
	char *r = th_http_raw(port, req, strlen(req), 10);
	ASSERT_NOT_NULL(r);
	return r;
}

static int status_of(const char *resp)
{
	int st = 0;
	if (sscanf(resp, "HTTP/1.1 %d", &st) != 1)
		return -1;
	return st;
}

/* A blocking TCP connection to 127.0.0.1:port. */
static int connect_port(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_GE(fd, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Wait until the peer closes fd (EOF or reset); false if it is still open after timeout_s. */
static bool wait_closed(int fd, double timeout_s)
{
	int64_t end = weft_deadline_in((int64_t)(timeout_s * th_scale() * 1e9));
	char buf[4096];
	for (;;) {
		int64_t left = end - weft_now();
		if (left <= 0)
			return false;
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, (int)(left / 1000000) + 1) <= 0)
			continue;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			return true;
	}
}

TEST(get_metrics_and_json)
{
	struct fixture f;
	start(&f);
	char *want, *body;
	size_t want_len;
	ASSERT_OK(weft_metrics_prometheus(f.m, &want, &want_len));
	ASSERT_EQ(th_http_get(f.port, "/metrics", 10, &body), 200);
	ASSERT_STR_EQ(body, want);
	ASSERT_CONTAINS(body, "http_test_total{kind=\"a \\\"b\\\"\"} 4242\n");
	free(body);
	free(want);

	ASSERT_OK(weft_metrics_json(f.m, &want, NULL));
	ASSERT_EQ(th_http_get(f.port, "/metrics.json", 10, &body), 200);
	ASSERT_STR_EQ(body, want);
	ASSERT_CONTAINS(body, "\"value\":4242");
	free(body);
	free(want);

	/* Query strings and fragments are ignored. */
	ASSERT_EQ(th_http_get(f.port, "/metrics?name[]=x&y=1", 10, NULL), 200);
	ASSERT_EQ(th_http_get(f.port, "/metrics.json?pretty", 10, NULL), 200);

	/* The headers. */
	char *r = raw(f.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
	ASSERT_EQ(status_of(r), 200);
	ASSERT_CONTAINS(r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
	ASSERT_CONTAINS(r, "\r\nConnection: close\r\n");
	char cl[64];
	snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", want_len);
	ASSERT_CONTAINS(r, cl);
	const char *b = strstr(r, "\r\n\r\n");
	ASSERT_NOT_NULL(b);
	ASSERT_EQ(strlen(b + 4), want_len);
	free(r);
	r = raw(f.port, "GET /metrics.json HTTP/1.0\r\n\r\n");
	ASSERT_EQ(status_of(r), 200);
	ASSERT_CONTAINS(r, "\r\nContent-Type: application/json\r\n");
	free(r);

	/* A bare LF ends lines too. */
	r = raw(f.port, "GET /metrics HTTP/1.0\n\n");
	ASSERT_EQ(status_of(r), 200);
	free(r);
	finish(&f);
}

TEST(head)
{
	struct fixture f;
	start(&f);
	char *want;
	size_t want_len;
	ASSERT_OK(weft_metrics_prometheus(f.m, &want, &want_len));
	free(want);
	char *r = raw(f.port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
	ASSERT_EQ(status_of(r), 200);
	char cl[64];
	snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", want_len);
	ASSERT_CONTAINS(r, cl);
	const char *b = strstr(r, "\r\n\r\n");
	ASSERT_NOT_NULL(b);
	ASSERT_STR_EQ(b + 4, ""); /* headers only */
	free(r);
	r = raw(f.port, "HEAD /nowhere HTTP/1.1\r\n\r\n");
	ASSERT_EQ(status_of(r), 404);
	ASSERT_STR_EQ(strstr(r, "\r\n\r\n") + 4, "");
	free(r);
	finish(&f);
}

TEST(not_found_and_method_not_allowed)
{
	struct fixture f;
	start(&f);
	static const char *const paths[] = {
	        "/",           "/metricsx", "/metrics/",      "/Metrics",
	        "/metrics.js", "//metrics", "/metrics.json/x"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char *body;
		ASSERT_EQ(th_http_get(f.port, paths[i], 10, &body), 404);
		ASSERT_STR_EQ(body, "Not Found\n");
		free(body);
	}
	static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "get", "PATCH"};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		char req[128];
		snprintf(req, sizeof(req), "%s /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		         methods[i]);
		char *r = raw(f.port, req);
		ASSERT_EQ(status_of(r), 405);
		ASSERT_CONTAINS(r, "\r\nAllow: GET, HEAD\r\n");
		ASSERT_CONTAINS(r, "\r\n\r\nMethod Not Allowed\n");
		free(r);
	}
	finish(&f);
}

TEST(malformed_requests)
{
	struct fixture f;
	start(&f);
	static const char *const bad[] = {
	        "garbage\r\n\r\n",
	        "\r\n\r\n",
	        "GET\r\n\r\n",
	        "GET /metrics\r\n\r\n",
	        "GET  /metrics HTTP/1.1\r\n\r\n",
	        "GET metrics HTTP/1.1\r\n\r\n",
	        "GET /metrics HTTP/1.1 extra\r\n\r\n",
	        "GET /metrics HTTP/11\r\n\r\n",
	        "GET /metrics FTP/1.0\r\n\r\n",
	        "G(T /metrics HTTP/1.1\r\n\r\n",
	        " GET /metrics HTTP/1.1\r\n\r\n",
	        "GET /met\x01rics HTTP/1.1\r\n\r\n",
	        "GET /metrics HTTP/1.1\r\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *r = raw(f.port, bad[i]);
		if (status_of(r) != 400)
			FAIL("request %zu (%s) got:\n%s", i, bad[i], r);
		ASSERT_CONTAINS(r, "\r\nConnection: close\r\n");
		free(r);
	}
	/* A NUL in the request line is malformed too. */
	static const char nul[] = "GET /me\0trics HTTP/1.1\r\n\r\n";
	char *r = th_http_raw(f.port, nul, sizeof(nul) - 1, 10);
	ASSERT_NOT_NULL(r);
	ASSERT_EQ(status_of(r), 400);
	free(r);
	/* The server still serves. */
	ASSERT_EQ(th_http_get(f.port, "/metrics", 10, NULL), 200);
	finish(&f);
}

/* A request of exactly `len` bytes: request line, one padding header, blank line. */
static char *request_of_size(size_t len, bool terminated)
{
	const char *start = "GET /metrics HTTP/1.1\r\nX-Pad: ";
	const char *end = terminated ? "\r\n\r\n" : "\r\n";
	size_t fixed = strlen(start) + strlen(end);
	ASSERT_GT(len, fixed);
	char *req = malloc(len + 1);
	ASSERT_NOT_NULL(req);
	strcpy(req, start);
	memset(req + strlen(start), 'p', len - fixed);
	strcpy(req + len - strlen(end), end);
	ASSERT_EQ(strlen(req), len);
	return req;
}

TEST(request_size_limit)
{
	struct fixture f;
	start(&f);
	char *req = request_of_size(8192, true);
	char *r = raw(f.port, req);
	ASSERT_EQ(status_of(r), 200);
	free(r);
	free(req);

	req = request_of_size(8193, true);
	r = raw(f.port, req);
	ASSERT_EQ(status_of(r), 431);
	ASSERT_CONTAINS(r, "\r\n\r\nRequest Header Fields Too Large\n");
	free(r);
	free(req);

	/* A much larger request: the answer arrives while the client is still sending. */
	req = request_of_size(200000, false);
	r = raw(f.port, req);
	ASSERT_EQ(status_of(r), 431);
	free(r);
	free(req);
	ASSERT_EQ(th_http_get(f.port, "/metrics", 10, NULL), 200);
	finish(&f);
}

TEST_TIMEOUT(silent_client_does_not_block_others, 30)
{
	struct fixture f;
	start(&f);
	int silent = connect_port(f.port);
	int partial = connect_port(f.port);
	ASSERT_EQ(send(partial, "GET /metr", 9, MSG_NOSIGNAL), 9);
	int64_t t0 = weft_now();
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(th_http_get(f.port, "/metrics", 10, NULL), 200);
	/* Served long before the silent clients' 5 s deadline. */
	ASSERT_LT(weft_now() - t0, WEFT_SEC(4));
	/* The deadline then closes them (5 s after they connected). */
	ASSERT_TRUE(wait_closed(silent, 15));
	ASSERT_TRUE(wait_closed(partial, 15));
	ASSERT_GE(weft_now() - t0, WEFT_SEC(4));
	close(silent);
	close(partial);
	finish(&f);
}

TEST_TIMEOUT(more_clients_than_slots, 60)
{
	struct fixture f;
	start(&f);
	enum { N = 70 };
	int fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = connect_port(
		        f.port); /* completes in the kernel's backlog if not accepted */
	/* 64 occupy every slot until their deadline; the rest wait in the backlog, then get served.
	 */
	char *body;
	ASSERT_EQ(th_http_get(f.port, "/metrics", 20, &body), 200);
	ASSERT_CONTAINS(body, "http_test_total");
	free(body);
	for (int i = 0; i < N; i++) {
		ASSERT_TRUE(wait_closed(fds[i], 20));
		close(fds[i]);
	}
	finish(&f);
}

TEST_TIMEOUT(many_sequential_requests, 60)
{
	struct fixture f;
	start(&f);
	for (int i = 0; i < 300; i++) {
		const char *path = i % 3 == 0 ? "/metrics.json" : i % 3 == 1 ? "/metrics" : "/x";
		int want = i % 3 == 2 ? 404 : 200;
		ASSERT_EQ(th_http_get(f.port, path, 10, NULL), want);
	}
	finish(&f);
}

static weft_metrics *big_registry(size_t *ret_len, char **ret_text)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	char v[600];
	const char *l[] = {"i", v, NULL};
	for (int i = 0; i < 4000; i++) {
		int n = snprintf(v, sizeof(v), "%d-", i);
		memset(v + n, 'x', 500);
		v[n + 500] = '\0';
		weft_counter *c;
		ASSERT_OK(weft_metrics_counter(m, "big_total", "", l, &c));
	}
	ASSERT_OK(weft_metrics_prometheus(m, ret_text, ret_len));
	ASSERT_GT(*ret_len, 2000000);
	return m;
}

TEST_TIMEOUT(large_body_slow_reader, 30)
{
	size_t len;
	char *want;
	weft_metrics *m = big_registry(&len, &want);
	weft_metrics_server *s;
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &s));
	int port = weft_metrics_server_port(s);

	/* Fast reader. */
	char *body;
	ASSERT_EQ(th_http_get(port, "/metrics", 20, &body), 200);
	ASSERT_EQ(strlen(body), len);
	ASSERT_STR_EQ(body, want);
	free(body);

	/* Slow reader: the server fills the socket buffers, waits for POLLOUT, resumes. */
	int fd = connect_port(port);
	const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
	ASSERT_EQ(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	th_sleep_ms(500);
	size_t cap = len + 4096, got = 0;
	char *buf = malloc(cap + 1);
	ASSERT_NOT_NULL(buf);
	for (;;) {
		ssize_t n = recv(fd, buf + got, cap - got < 1000 ? cap - got : 1000, 0);
		ASSERT_GE(n, 0);
		if (n == 0)
			break;
		got += (size_t)n;
		ASSERT_LT(got, cap);
		if (got < 200000)
			th_sleep_ms(1); /* trickle for a while */
	}
	buf[got] = '\0';
	close(fd);
	const char *b = strstr(buf, "\r\n\r\n");
	ASSERT_NOT_NULL(b);
	ASSERT_EQ(strlen(b + 4), len);
	ASSERT_TRUE(memcmp(b + 4, want, len) == 0);
	free(buf);
	free(want);
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}

TEST_TIMEOUT(client_gone_no_sigpipe, 30)
{
	signal(SIGPIPE, SIG_DFL); /* the harness ignores it; a SIGPIPE would now kill the case */
	size_t len;
	char *want;
	weft_metrics *m = big_registry(&len, &want);
	free(want);
	weft_metrics_server *s;
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &s));
	int port = weft_metrics_server_port(s);
	for (int i = 0; i < 5; i++) {
		int fd = connect_port(port);
		const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
		ASSERT_EQ(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
		char b[100];
		ASSERT_GT(recv(fd, b, sizeof(b), 0), 0); /* the response has started */
		struct linger lg = {1, 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* close with a reset */
		close(fd);
	}
	th_sleep_ms(200);
	ASSERT_EQ(th_http_get(port, "/metrics.json", 20, NULL), 200);
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}

TEST(stop_with_clients_connected)
{
	struct fixture f;
	start(&f);
	int fds[3];
	fds[0] = connect_port(f.port);
	fds[1] = connect_port(f.port);
	ASSERT_EQ(send(fds[1], "GET /metrics HTTP/1.1\r\n", 23, MSG_NOSIGNAL), 23);
	fds[2] = connect_port(f.port);
	th_sleep_ms(100); /* let the server accept them */
	int64_t t0 = weft_now();
	weft_metrics_server_stop(f.s);
	ASSERT_LT(weft_now() - t0, (int64_t)(WEFT_SEC(2) * th_scale()));
	for (int i = 0; i < 3; i++) {
		ASSERT_TRUE(wait_closed(fds[i], 5));
		close(fds[i]);
	}
	/* Nobody listens any more. */
	ASSERT_EQ(th_http_get(f.port, "/metrics", 2, NULL), -ECONNREFUSED);
	weft_metrics_destroy(f.m);
}

TEST(addresses)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_metrics_server *s;
	ASSERT_ERR(weft_metrics_serve(NULL, "127.0.0.1:0", &s), -EINVAL);
	ASSERT_ERR(weft_metrics_serve(m, NULL, &s), -EINVAL);
	ASSERT_ERR(weft_metrics_serve(m, "127.0.0.1:0", NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_server_port(NULL), -EINVAL);
	weft_metrics_server_stop(NULL);
	static const char *const bad[] = {
	        "",
	        "127.0.0.1",
	        "127.0.0.1:",
	        ":80",
	        "localhost:9464",
	        "127.0.0.1:65536",
	        "127.0.0.1:-1",
	        "127.0.0.1:80x",
	        "127.0.0.1: 80",
	        "127.0.0.1:+80",
	        "127.0.0.1:123456",
	        "1.2.3:80",
	        "256.1.1.1:80",
	        "1.2.3.4.5:80",
	        "[::1]",
	        "[::1]80",
	        "[::1]:",
	        "::1:80",
	        "[zz]:80",
	        "[127.0.0.1]:80",
	        "[::1:80",
	        "127.0.0.1:80:80",
	        "0x7f.0.0.1:80",
	        "[::1]:99999",
	        "[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]:1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = weft_metrics_serve(m, bad[i], &s);
		if (r != -EINVAL)
			FAIL("address \"%s\": got %d (%s), want -EINVAL", bad[i], r,
			     weft_errname(r));
	}

	/* Good ones: any IPv4 address, and IPv6 where this machine has it. */
	ASSERT_OK(weft_metrics_serve(m, "0.0.0.0:0", &s));
	ASSERT_GT(weft_metrics_server_port(s), 0);
	weft_metrics_server_stop(s);
	int r = weft_metrics_serve(m, "[::1]:0", &s);
	if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL) {
		weft_metrics_destroy(m);
		SKIP("no IPv6 loopback on this machine");
	}
	ASSERT_OK(r);
	int port = weft_metrics_server_port(s);
	ASSERT_GT(port, 0);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_GE(fd, 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
	                          .sin6_port = htons((uint16_t)port),
	                          .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	const char *req = "GET /metrics.json HTTP/1.0\r\n\r\n";
	ASSERT_EQ(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	char buf[512];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
	ASSERT_GT(n, 0);
	buf[n] = '\0';
	ASSERT_EQ(status_of(buf), 200);
	close(fd);
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}

TEST(address_in_use)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_metrics_server *s, *s2;
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &s));
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", weft_metrics_server_port(s));
	ASSERT_ERR(weft_metrics_serve(m, addr, &s2), -EADDRINUSE);
	/* Two servers may share a registry on different ports. */
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &s2));
	ASSERT_NE(weft_metrics_server_port(s2), weft_metrics_server_port(s));
	ASSERT_EQ(th_http_get(weft_metrics_server_port(s2), "/metrics", 10, NULL), 200);
	weft_metrics_server_stop(s2);
	weft_metrics_server_stop(s);
	/* The port can be served again at once (SO_REUSEADDR). */
	ASSERT_OK(weft_metrics_serve(m, addr, &s));
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}

TEST(fault_injection)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_metrics_server *s = NULL;
	long n;
	for (n = 1;; n++) {
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int r = weft_metrics_serve(m, "127.0.0.1:0", &s);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0)
			break;
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_TRUE(n < 10);
	}
	ASSERT_GE(n, 2);
	weft_metrics_server_stop(s);

	weft__fault_arm(WEFT__FAULT_THREAD, 1, false);
	ASSERT_ERR(weft_metrics_serve(m, "127.0.0.1:0", &s), -EAGAIN);
	weft__fault_arm(WEFT__FAULT_THREAD, 0, false);

	/* socket() and eventfd() */
	for (n = 1;; n++) {
		weft__fault_arm(WEFT__FAULT_OPEN, n, false);
		int r = weft_metrics_serve(m, "127.0.0.1:0", &s);
		weft__fault_arm(WEFT__FAULT_OPEN, 0, false);
		if (r == 0)
			break;
		ASSERT_ERR(r, -EMFILE);
		ASSERT_TRUE(n < 10);
	}
	ASSERT_EQ(n, 3);

	/* An export that runs out of memory answers 500; the next request is fine again. */
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	char *body;
	ASSERT_EQ(th_http_get(weft_metrics_server_port(s), "/metrics", 10, &body), 500);
	ASSERT_STR_EQ(body, "Internal Server Error\n");
	free(body);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	ASSERT_EQ(th_http_get(weft_metrics_server_port(s), "/metrics", 10, NULL), 200);
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}

static double exports;
static double count_exports(void *arg)
{
	(void)arg;
	return ++exports;
}

TEST(exports_at_request_time)
{
	weft_metrics *m;
	ASSERT_OK(weft_metrics_create(&m, NULL));
	weft_gauge *g;
	ASSERT_OK(weft_metrics_gauge_fn(m, "exports", "", NULL, count_exports, NULL, &g));
	weft_metrics_server *s;
	ASSERT_OK(weft_metrics_serve(m, "127.0.0.1:0", &s));
	int port = weft_metrics_server_port(s);
	char *body;
	ASSERT_EQ(th_http_get(port, "/metrics", 10, &body), 200);
	ASSERT_CONTAINS(body, "exports 1\n");
	free(body);
	ASSERT_EQ(th_http_get(port, "/metrics", 10, &body), 200);
	ASSERT_CONTAINS(body, "exports 2\n");
	free(body);
	/* A series added while serving shows up at the next request. */
	weft_counter *c;
	ASSERT_OK(weft_metrics_counter(m, "late_total", "", NULL, &c));
	weft_counter_add(c, 9);
	ASSERT_EQ(th_http_get(port, "/metrics", 10, &body), 200);
	ASSERT_CONTAINS(body, "late_total 9\n");
	free(body);
	weft_metrics_server_stop(s);
	weft_metrics_destroy(m);
}
