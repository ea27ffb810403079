/* cmd-tour.c: `weft tour`, the main job. It says what weft is, prints this machine's CPU budget,
 * then runs each chapter that weft's parts add, one after another; each chapter shows its part
 * live and ends with what it measured. `weft tour --list` lists the chapters, `weft tour NAME...`
 * runs only those. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct tour_chapter *const chapters[] = {
        &tour_chapter_metrics,
        &tour_chapter_pool,
        &tour_chapter_fibers,
        &tour_chapter_watch,
};
#define NCHAPTERS (sizeof(chapters) / sizeof(chapters[0]))

void tour_heading(const char *title)
{
	printf("\n== %s ==\n", title);
	fflush(stdout);
}

void tour_say(const char *fmt, ...)
{
	va_list ap;
	fputs("  ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

void tour_blank(void)
{
	fputc('\n', stdout);
}

static void help(void)
{
	printf("usage: weft tour [--list] [CHAPTER...]\n\n"
	       "Show each of weft's models and alarms live on this machine, one chapter after "
	       "another;\n"
	       "each chapter ends with what it measured. With CHAPTER names, run only those.\n\n"
	       "  --list   list the chapters\n");
}

static void intro(void)
{
	printf("weft %s: a concurrency runtime for C on Linux\n\n", weft_version());
	printf("Threads, green threads and processes each have a hazard that shows up in "
	       "production:\n"
	       "executor queues that grow until memory runs out, green threads frozen by one "
	       "blocking\n"
	       "call, workers that crash or hang, deadlocks that leave a process half alive. weft "
	       "gives\n"
	       "a C program all three models and the instruments that catch those hazards live.\n");
}

static int budget(void)
{
	weft_cpus *c;
	int r = weft_cpus_read(&c, NULL);
	tour_heading("This machine's CPU budget");
	if (r < 0) {
		tour_say("cannot read the CPU budget: %s", weft_strerror(r));
		return 1;
	}
	tour_say("weft sizes its pools to %d CPU%s (capacity %.2f CPUs)", weft_cpus_count(c),
	         weft_cpus_count(c) == 1 ? "" : "s", weft_cpus_capacity(c));
	int kind;
	double cpus;
	const char *source;
	bool binding;
	for (size_t i = 0; weft_cpus_limit(c, i, &kind, &cpus, &source, &binding) == 0; i++)
		tour_say("  %-9s %6.2f CPUs  from %s%s", weft_cpu_limit_name(kind), cpus, source,
		         binding ? "   <- binds" : "");
	weft_cpus_free(c);
	return 0;
}

int cmd_tour(int argc, char **argv)
{
	const struct tour_chapter *run[NCHAPTERS];
	size_t nrun = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			help();
			return 0;
		}
		if (strcmp(argv[i], "--list") == 0) {
			for (size_t k = 0; k < NCHAPTERS; k++)
				printf("%-10s %s\n", chapters[k]->name, chapters[k]->title);
			return 0;
		}
		if (argv[i][0] == '-')
			return cli_usage_error(
			        "tour", "unknown option '%s' (see `weft tour --help`)", argv[i]);
		size_t k = 0;
		while (k < NCHAPTERS && strcmp(chapters[k]->name, argv[i]) != 0)
			k++;
		if (k == NCHAPTERS)
			return cli_usage_error(
			        "tour", "no chapter named '%s' (see `weft tour --list`)", argv[i]);
		if (nrun < NCHAPTERS)
			run[nrun++] = chapters[k];
	}
	if (nrun == 0) {
		for (size_t k = 0; k < NCHAPTERS; k++)
			run[nrun++] = chapters[k];
	}

	intro();
	int bad = budget();
	for (size_t i = 0; i < nrun; i++) {
		char title[256];
		snprintf(title, sizeof(title), "Chapter %zu/%zu, %s: %s", i + 1, nrun, run[i]->name,
		         run[i]->title);
		tour_heading(title);
		if (run[i]->run() != 0) {
			tour_say("this chapter did not go as it should (see above)");
			bad++;
		}
	}
	printf("\nTour done: %zu chapter%s shown, %d went wrong.\n", nrun, nrun == 1 ? "" : "s",
	       bad);
	return bad ? 1 : 0;
}
