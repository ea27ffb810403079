/* prog.h: what the known-answer programs of tests/watch share. They are plain C with pthreads
 * (no weft): `weft watch` runs them as it would run any program, and
 * tests/integration/test-watch-cli.c checks each answer.
 *
 * Every program is deterministic (barriers and joins order its steps, never sleeps) and bounded
 * in time: prog_guard starts a thread that ends the process with PROG_HUNG after a few seconds,
 * so a deadlock the monitor does not end (report mode, or no monitor at all) still ends. Stack
 * frames are kept: the programs are built with -fno-inline -fno-optimize-sibling-calls, and each
 * step that may block is a function of its own whose name the test looks for in the reports. */
#ifndef WEFT_WATCH_PROG_H
#define WEFT_WATCH_PROG_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The exit status of a program its guard ended. */
#define PROG_HUNG 9

static inline void prog_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void *prog_guard_main(void *arg)
{
	long ms = (long)arg;
	prog_sleep_ms(ms);
	fprintf(stderr, "%s: still blocked after %ld ms: ending\n", program_invocation_short_name,
	        ms);
	_exit(PROG_HUNG);
	return NULL;
}

/* End the process with PROG_HUNG after `ms` ms, or after argv[1] ms if given. */
static inline void prog_guard(int argc, char **argv, long ms)
{
	if (argc > 1)
		ms = atol(argv[1]);
	pthread_t t;
	if (pthread_create(&t, NULL, prog_guard_main, (void *)ms) != 0) {
		perror("pthread_create");
		exit(2);
	}
	pthread_detach(t);
}

static inline void prog_check(int r, const char *what)
{
	if (r != 0) {
		fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(r));
		exit(2);
	}
}

struct prog_start {
	void *(*fn)(void *);
	void *arg;
	char name[16];
};

/* The thread names itself before anything else, so a report always shows the name. */
static void *prog_start_main(void *p)
{
	struct prog_start s = *(struct prog_start *)p;
	free(p);
	pthread_setname_np(pthread_self(), s.name);
	return s.fn(s.arg);
}

static inline pthread_t prog_thread(void *(*fn)(void *), void *arg, const char *name)
{
	struct prog_start *s = malloc(sizeof(*s));
	if (!s)
		exit(2);
	s->fn = fn;
	s->arg = arg;
	snprintf(s->name, sizeof(s->name), "%s", name);
	pthread_t t;
	prog_check(pthread_create(&t, NULL, prog_start_main, s), "pthread_create");
	return t;
}

#endif
