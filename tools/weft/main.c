/* main.c: the weft command's entry point and `weft help`. One file per subcommand beside this one;
 * each takes its own argv and returns the exit status (0 success, 1 failure or a finding, 2 bad
 * usage). Errors are one line on stderr naming the problem. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct command {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

static const struct command commands[] = {
        {"tour", "show each model and each alarm live on this machine", cmd_tour},
        {"sim",
         "forecast a queue: arrival rate, service time, threads; stable or not, wait, growth",
         cmd_sim},
        {"cpus", "the CPU budget: affinity and cgroup quota, and where each limit came from",
         cmd_cpus},
        {"watch", "run a program under the lock monitor: deadlocks, inversions, long waits",
         cmd_watch},
};

static void usage(FILE *f)
{
	fprintf(f, "weft %s: a concurrency runtime for C on Linux\n\n", weft_version());
	fprintf(f, "usage: weft COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "  %-6s %s\n", "help",
	        "this text, or `weft help COMMAND` for a command's options");
	fprintf(f, "\n`weft COMMAND --help` describes a command's options.\n");
}

static int vreport(const char *cmd, const char *fmt, va_list ap)
{
	fprintf(stderr, "weft%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	return 0;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(cmd, fmt, ap);
	va_end(ap);
	return 2;
}

int cli_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport(cmd, fmt, ap);
	va_end(ap);
	return 1;
}

static const struct command *find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[1];
	if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		if (argc > 2) {
			const struct command *c = find(argv[2]);
			if (!c)
				return cli_usage_error(
				        NULL, "unknown command '%s' (see `weft help`)", argv[2]);
			char *args[] = {argv[2], "--help", NULL};
			return c->run(2, args);
		}
		usage(stdout);
		return 0;
	}
	if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
		printf("weft %s\n", weft_version());
		return 0;
	}
	const struct command *c = find(name);
	if (!c)
		return cli_usage_error(NULL, "unknown command '%s' (see `weft help`)", name);
	return c->run(argc - 1, argv + 1);
}
