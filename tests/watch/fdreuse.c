/* fdreuse: a daemon-style program closes every fd above 2 (the monitor's JSON fd among them),
 * opens files of its own in DIR (argv[1]) until fd 130, so that the JSON fd's number now is one
 * of its files, then relocks an error checking mutex (EDEADLK, handled: a report). Answer: its
 * files hold only what it wrote (nothing); the report goes to stderr only. */
#include "prog.h"

#include <fcntl.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: fdreuse DIR\n");
		return 2;
	}
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	for (int i = 0; i < 128; i++) {
		char name[4096];
		snprintf(name, sizeof(name), "%s/f%03d", argv[1], i);
		if (open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644) < 0) {
			perror(name);
			return 2;
		}
	}
	pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
	pthread_mutex_lock(&m);
	int r = pthread_mutex_lock(&m);
	pthread_mutex_unlock(&m);
	/* time for the watchdog to emit the report before exit */
	prog_sleep_ms(300);
	printf("fdreuse: relock %d\n", r);
	return 0;
}
