/* http.c: a small HTTP/1.x endpoint that serves a metrics registry (weft_metrics_serve).
 *
 * Design. One thread ("weft-metrics") runs a poll() loop over an eventfd (the stop signal), the
 * listening socket and up to MAX_CONNS client sockets, all non-blocking. Each connection gets one
 * request and one response, then is closed (Connection: close; no keep-alive, no pipelining).
 * The registry is exported at request time, in the server thread, under the registry's lock.
 *
 * A connection's life (the functions on the edges):
 *
 *   accept_all -> READ --(blank line seen: handle_request, respond)--> WRITE
 *                  |  \--(8 KiB and no blank line: respond 431)------>   |
 *                  |                                                     | (all sent: finish_write)
 *                  |                                                     v
 *                  |                                                   DRAIN
 *                  |                                                     |
 *                  \--(EOF, error, deadline)--> close_conn <--(EOF, error, deadline)
 *   (WRITE also goes to close_conn on a send error or at the deadline.)
 *
 * DRAIN is a lingering close: after the response the server shuts its side down (FIN) and reads
 * and discards until the client closes, for at most LINGER_NS. Closing a socket that still has
 * unread input makes the kernel send a reset, which can destroy a response the client has not
 * read yet (a client whose oversized request is answered with 431 while it is still sending).
 *
 * Limits. A connection lives at most CONN_TIMEOUT_NS (5 s) from accept, whatever its state: a
 * client that sends nothing, or reads a large body too slowly, is closed then. A request (request
 * line and headers) must fit in REQ_MAX (8 KiB) bytes, else 431. With MAX_CONNS (64) connections
 * open the listening socket is left out of the poll set, so further clients wait in the kernel's
 * listen backlog (LISTEN_BACKLOG) until a slot frees, at most CONN_TIMEOUT_NS later; beyond the
 * backlog the kernel drops their SYNs and they retry. accept() failing for lack of fds or memory
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting for ACCEPT_PAUSE_NS instead of spinning.
 *
 * Requests. The request line must be METHOD SP TARGET SP HTTP/d.d (a bare LF is accepted for CRLF,
 * and a blank line ends the headers, which are not otherwise read). GET and HEAD of /metrics
 * (Prometheus text 0.0.4) and /metrics.json (JSON); a query string or fragment is ignored; other
 * paths 404; other methods 405 with "Allow: GET, HEAD"; anything malformed 400; an export that
 * fails (out of memory) 500. HEAD sends the headers GET would, Content-Length included.
 *
 * Ownership and concurrency. weft_metrics_serve builds everything, then starts the thread
 * (pthread_create orders every earlier write before the thread's first read). From then on the
 * thread alone touches the connections; the caller's only access is weft_metrics_server_port
 * (read-only, set before the thread) and weft_metrics_server_stop: 1. write the eventfd; 2. the
 * thread sees it POLLIN at its next poll and returns; 3. pthread_join orders the thread's writes
 * before the caller frees; 4. the caller closes every fd. A server stopped in a child forked after
 * weft_metrics_serve has no thread to join there: the child only closes its copies of the fds.
 *
 * fds. Every socket and the eventfd are CLOEXEC. Every error path of weft_metrics_serve closes
 * what it opened; the fault site WEFT__FAULT_OPEN before socket() and before eventfd() lets tests
 * prove it (an injected fault reads as -EMFILE). Sends use MSG_NOSIGNAL: never SIGPIPE. The
 * library never prints: errors on a connection just close it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../internal/alloc.h"
#include "../internal/common.h"

#define MAX_CONNS 64
#define REQ_MAX 8192
#define CONN_TIMEOUT_NS WEFT_SEC(5)
#define LINGER_NS WEFT_SEC(1)
#define ACCEPT_PAUSE_NS WEFT_MSEC(100)
#define LISTEN_BACKLOG 128
#define ADDR_MAX 64 /* longest "[IPV6]:PORT" accepted */

enum conn_state {
	CONN_FREE,  /* fd == -1 */
	CONN_READ,  /* reading the request */
	CONN_WRITE, /* sending head + body */
	CONN_DRAIN, /* response sent, write side shut: discard input until EOF */
};

struct conn {
	int fd;
	enum conn_state state;
	int64_t deadline;
	size_t reqlen;
	char head[320];
	size_t headlen;
	char *body; /* malloc'd if body_owned, else static text */
	bool body_owned;
	size_t sendlen; /* body bytes to send: 0 for HEAD */
	size_t off;     /* bytes of head + body sent */
	char req[REQ_MAX + 1];
};

struct weft_metrics_server {
	weft_metrics *m;
	int lfd, efd;
	int port;
	pid_t pid; /* the process that started the thread */
	pthread_t thread;
	struct conn conns[MAX_CONNS];
};

/* --- addresses ------------------------------------------------------------------------------- */

static int parse_port(const char *s, in_port_t *ret)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5)
		return -EINVAL;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -EINVAL;
	*ret = htons((in_port_t)v);
	return 0;
}

/* "A.B.C.D:PORT" or "[IPV6]:PORT", numeric only. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *ret_len)
{
	char host[ADDR_MAX + 1];
	size_t n = strnlen(addr, ADDR_MAX + 1);
	if (n > ADDR_MAX)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		size_t hl = (size_t)(close - addr - 1);
		memcpy(host, addr + 1, hl);
		host[hl] = '\0';
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)ss;
		sa->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1)
			return -EINVAL;
		*ret_len = sizeof(*sa);
		return parse_port(close + 2, &sa->sin6_port);
	}
	const char *colon = strchr(addr, ':');
	if (!colon)
		return -EINVAL;
	size_t hl = (size_t)(colon - addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	struct sockaddr_in *sa = (struct sockaddr_in *)ss;
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	*ret_len = sizeof(*sa);
	return parse_port(colon + 1, &sa->sin_port);
}

/* --- connections ----------------------------------------------------------------------------- */

static void close_conn(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->body_owned)
		free(c->body);
	c->fd = -1;
	c->state = CONN_FREE;
	c->body = NULL;
	c->body_owned = false;
}

static void finish_write(struct conn *c)
{
	if (c->body_owned)
		free(c->body);
	c->body = NULL;
	c->body_owned = false;
	shutdown(c->fd, SHUT_WR);
	c->state = CONN_DRAIN;
	int64_t linger = weft_deadline_in(LINGER_NS);
	if (linger < c->deadline)
		c->deadline = linger;
}

/* Send what the socket takes now; on completion move to DRAIN. */
static void do_write(struct conn *c)
{
	for (;;) {
		size_t total = c->headlen + c->sendlen;
		if (c->off == total) {
			finish_write(c);
			return;
		}
		struct iovec iov[2];
		int cnt = 0;
		if (c->off < c->headlen) {
			iov[cnt++] = (struct iovec){c->head + c->off, c->headlen - c->off};
			if (c->sendlen)
				iov[cnt++] = (struct iovec){c->body, c->sendlen};
		} else {
			size_t boff = c->off - c->headlen;
			iov[cnt++] = (struct iovec){c->body + boff, c->sendlen - boff};
		}
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
		ssize_t k = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				close_conn(c);
			return;
		}
		c->off += (size_t)k;
	}
}

static const char *reason_of(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	default: return "Internal Server Error";
	}
}

/* Queue a response and start sending it. `body` is malloc'd if `owned`. */
static void respond(struct conn *c, int status, const char *ctype, char *body, size_t len,
                    bool owned, bool head_only)
{
	int n = snprintf(c->head, sizeof(c->head),
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	                 "Connection: close\r\n\r\n",
	                 status, reason_of(status), ctype, len,
	                 status == 405 ? "Allow: GET, HEAD\r\n" : "");
	WEFT__ASSERT(n > 0 && (size_t)n < sizeof(c->head));
	c->headlen = (size_t)n;
	c->body = body;
	c->body_owned = owned;
	c->sendlen = head_only ? 0 : len;
	c->off = 0;
	c->state = CONN_WRITE;
	do_write(c);
}

/* A short text/plain response whose body is the reason phrase and a newline. */
static void respond_text(struct conn *c, int status, bool head_only)
{
	static const struct {
		int status;
		const char *body;
	} texts[] = {
	        {400, "Bad Request\n"},           {404, "Not Found\n"},
	        {405, "Method Not Allowed\n"},    {431, "Request Header Fields Too Large\n"},
	        {500, "Internal Server Error\n"},
	};
	const char *body = "Internal Server Error\n";
	for (size_t i = 0; i < WEFT__ARRAY_SIZE(texts); i++)
		if (texts[i].status == status)
			body = texts[i].body;
	respond(c, status, "text/plain; charset=utf-8", (char *)body, strlen(body), false,
	        head_only);
}

static bool is_tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Parse the request line in c->req and answer it. */
static void handle_request(weft_metrics_server *s, struct conn *c)
{
	char *line = c->req;
	char *eol = memchr(line, '\n', c->reqlen);
	WEFT__ASSERT(eol); /* the caller saw the blank line that ends the headers */
	if (memchr(line, '\0', (size_t)(eol - line))) {
		respond_text(c, 400, false);
		return;
	}
	*eol = '\0';
	if (eol > line && eol[-1] == '\r')
		eol[-1] = '\0';

	/* METHOD SP TARGET SP HTTP/d.d */
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || sp1[1] != '/') {
		respond_text(c, 400, false);
		return;
	}
	*sp1 = *sp2 = '\0';
	const char *method = line, *target = sp1 + 1, *version = sp2 + 1;
	for (const char *p = method; *p; p++) {
		if (!is_tchar(*p)) {
			respond_text(c, 400, false);
			return;
		}
	}
	for (const char *p = target; *p; p++) {
		if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			respond_text(c, 400, false);
			return;
		}
	}
	if (strncmp(version, "HTTP/", 5) != 0 || version[5] < '0' || version[5] > '9' ||
	    version[6] != '.' || version[7] < '0' || version[7] > '9' || version[8] != '\0') {
		respond_text(c, 400, false);
		return;
	}
	bool head = strcmp(method, "HEAD") == 0;
	if (!head && strcmp(method, "GET") != 0) {
		respond_text(c, 405, false);
		return;
	}
	size_t plen = strcspn(target, "?#");
	bool json;
	if (plen == 8 && memcmp(target, "/metrics", 8) == 0)
		json = false;
	else if (plen == 13 && memcmp(target, "/metrics.json", 13) == 0)
		json = true;
	else {
		respond_text(c, 404, head);
		return;
	}
	char *text;
	size_t len;
	int r = json ? weft_metrics_json(s->m, &text, &len)
	             : weft_metrics_prometheus(s->m, &text, &len);
	if (r < 0) {
		respond_text(c, 500, head);
		return;
	}
	respond(c, 200, json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8",
	        text, len, true, head);
}

/* The end of the headers: "\r\n\r\n", or "\n\n" (also "\n\r\n"), as an offset past it, or 0. */
static size_t headers_end(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < n && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static void do_read(weft_metrics_server *s, struct conn *c)
{
	for (;;) {
		if (c->state == CONN_DRAIN) {
			char sink[4096];
			ssize_t k = recv(c->fd, sink, sizeof(sink), 0);
			if (k > 0)
				continue;
			if (k < 0 && errno == EINTR)
				continue;
			if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
				close_conn(c);
			return;
		}
		ssize_t k = recv(c->fd, c->req + c->reqlen, REQ_MAX - c->reqlen, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (k <= 0) {
			close_conn(c); /* EOF or error before a whole request */
			return;
		}
		/* Search from a little before the new bytes: the end may straddle two reads. */
		size_t from = c->reqlen > 2 ? c->reqlen - 2 : 0;
		c->reqlen += (size_t)k;
		c->req[c->reqlen] = '\0';
		if (headers_end(c->req + from, c->reqlen - from)) {
			handle_request(s, c);
			return;
		}
		if (c->reqlen == REQ_MAX) {
			respond_text(c, 431, false);
			return;
		}
	}
}

/* Accept while there are free slots and pending clients. */
static void accept_all(weft_metrics_server *s, int64_t *accept_resume)
{
	size_t slot = 0;
	for (;;) {
		while (slot < MAX_CONNS && s->conns[slot].fd >= 0)
			slot++;
		if (slot == MAX_CONNS)
			return;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				*accept_resume = weft_deadline_in(ACCEPT_PAUSE_NS);
			return; /* EAGAIN, or a network error of that one client: poll again */
		}
		struct conn *c = &s->conns[slot];
		c->fd = fd;
		c->state = CONN_READ;
		c->deadline = weft_deadline_in(CONN_TIMEOUT_NS);
		c->reqlen = 0;
		c->body = NULL;
		c->body_owned = false;
	}
}

static void *serve_thread(void *arg)
{
	weft_metrics_server *s = arg;
	struct pollfd pfds[2 + MAX_CONNS];
	int map[2 + MAX_CONNS]; /* pfds index -> conn index */
	int64_t accept_resume = 0;
	for (;;) {
		int64_t now = weft_now();
		int64_t next = INT64_MAX;
		nfds_t n = 0;
		pfds[n++] = (struct pollfd){s->efd, POLLIN, 0};
		int nconn = 0;
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &s->conns[i];
			if (c->fd < 0)
				continue;
			nconn++;
			if (c->deadline < next)
				next = c->deadline;
			map[n] = i;
			pfds[n++] = (struct pollfd){c->fd,
			                            c->state == CONN_WRITE ? POLLOUT : POLLIN, 0};
		}
		nfds_t lidx = 0;
		if (nconn < MAX_CONNS) {
			if (now >= accept_resume) {
				lidx = n;
				pfds[n++] = (struct pollfd){s->lfd, POLLIN, 0};
			} else if (accept_resume < next) {
				next = accept_resume;
			}
		}
		int timeout = -1;
		if (next != INT64_MAX) {
			int64_t ms = next > now ? (next - now + 999999) / 1000000 : 0;
			timeout = ms > 60000 ? 60000 : (int)ms;
		}
		int r = poll(pfds, n, timeout);
		if (r < 0) {
			if (errno != EINTR) /* ENOMEM: let the kernel breathe, then retry */
				weft_sleep_until(weft_deadline_in(WEFT_MSEC(10)));
			continue;
		}
		if (pfds[0].revents)
			return NULL; /* stop: weft_metrics_server_stop closes everything */
		for (nfds_t i = 1; i < n; i++) {
			if (i == lidx || !pfds[i].revents)
				continue;
			struct conn *c = &s->conns[map[i]];
			if (c->state == CONN_WRITE)
				do_write(c);
			else
				do_read(s, c);
		}
		if (lidx && pfds[lidx].revents)
			accept_all(s, &accept_resume);
		now = weft_now();
		for (int i = 0; i < MAX_CONNS; i++)
			if (s->conns[i].fd >= 0 && s->conns[i].deadline <= now)
				close_conn(&s->conns[i]);
	}
}

/* --- the server ------------------------------------------------------------------------------ */

static void server_free(weft_metrics_server *s)
{
	for (int i = 0; i < MAX_CONNS; i++)
		close_conn(&s->conns[i]);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->efd >= 0)
		close(s->efd);
	free(s);
}

WEFT_API int weft_metrics_serve(weft_metrics *m, const char *addr, weft_metrics_server **ret)
{
	if (!m || !addr || !ret)
		return -EINVAL;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int r = parse_addr(addr, &ss, &sslen);
	if (r < 0)
		return r;
	int saved = errno;
	weft_metrics_server *s = weft__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->m = m;
	s->lfd = s->efd = -1;
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;

	if (weft__fault_hit(WEFT__FAULT_OPEN)) {
		r = -EMFILE;
		goto fail;
	}
	s->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->lfd < 0) {
		r = weft__neg_errno();
		goto fail;
	}
	int one = 1;
	if (setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(s->lfd, (struct sockaddr *)&ss, sslen) < 0 || listen(s->lfd, LISTEN_BACKLOG) < 0) {
		r = weft__neg_errno();
		goto fail;
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(s->lfd, (struct sockaddr *)&bound, &blen) < 0) {
		r = weft__neg_errno();
		goto fail;
	}
	s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
	                                            : ((struct sockaddr_in *)&bound)->sin_port);

	if (weft__fault_hit(WEFT__FAULT_OPEN)) {
		r = -EMFILE;
		goto fail;
	}
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0) {
		r = weft__neg_errno();
		goto fail;
	}
	s->pid = getpid();
	r = weft__thread_create(&s->thread, "weft-metrics", serve_thread, s);
	if (r < 0)
		goto fail;
	errno = saved;
	*ret = s;
	return 0;
fail:
	server_free(s);
	errno = saved;
	return r;
}

WEFT_API int weft_metrics_server_port(const weft_metrics_server *s)
{
	return s ? s->port : -EINVAL;
}

WEFT_API void weft_metrics_server_stop(weft_metrics_server *s)
{
	if (!s)
		return;
	int saved = errno;
	if (s->pid == getpid()) {
		uint64_t one = 1;
		ssize_t k;
		do
			k = write(s->efd, &one, sizeof(one));
		while (k < 0 && errno == EINTR);
		/* The counter cannot overflow (one write per server), so the write succeeded. */
		WEFT__ASSERT(k == sizeof(one));
		WEFT__ASSERT(pthread_join(s->thread, NULL) == 0);
	}
	server_free(s);
	errno = saved;
}
