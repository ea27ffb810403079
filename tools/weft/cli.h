/* The weft command's shared declarations: subcommands, JSON output, tour chapters.
 * The command uses only weft's public headers. */
#ifndef WEFT_CLI_H
#define WEFT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <weft.h>

/* Subcommands: argv[0] is the subcommand's name. Return the process exit status. */
int cmd_cpus(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_tour(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* Print one line "weft CMD: MESSAGE" to stderr; returns 2 (the usage-error exit status). */
__attribute__((format(printf, 2, 3))) int cli_usage_error(const char *cmd, const char *fmt, ...);
/* Print one line "weft CMD: MESSAGE" to stderr; returns 1 (the failure exit status). */
__attribute__((format(printf, 2, 3))) int cli_error(const char *cmd, const char *fmt, ...);

/* JSON output on a FILE, for --json flags. */
void json_str(FILE *f, const char *s);
void json_num(FILE *f, double v);

/* A tour chapter: a part of weft shown live. `run` prints as it goes and ends with what it
 * measured; it returns 0, or 1 if what it showed went wrong. */
struct tour_chapter {
	const char *name;  /* for `weft tour NAME` */
	const char *title; /* one line */
	int (*run)(void);
};

/* Chapters from each part, in tour order. */
extern const struct tour_chapter tour_chapter_metrics;
extern const struct tour_chapter tour_chapter_pool;
extern const struct tour_chapter tour_chapter_fibers;
extern const struct tour_chapter tour_chapter_watch;

/* Tour output helpers: a chapter heading, and an indented line. */
void tour_heading(const char *title);
__attribute__((format(printf, 1, 2))) void tour_say(const char *fmt, ...);
void tour_blank(void);

#endif
