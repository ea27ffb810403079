/* test-cli.c: the weft command's frame: help, version, errors, and `weft tour`. */
#include <sys/wait.h>

#include "harness.h"

static int weft(char **ret_out, bool merge, char *a1, char *a2, char *a3)
{
	char *argv[] = {(char *)th_env_path("WEFT_BIN"), a1, a2, a3, NULL};
	int st = th_run(argv, 120, merge, ret_out);
	ASSERT_TRUE(st != -1);
	ASSERT_TRUE(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static int count_lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

TEST(help_lists_commands)
{
	char *out;
	ASSERT_EQ(weft(&out, false, "help", NULL, NULL), 0);
	ASSERT_CONTAINS(out, "usage: weft COMMAND");
	ASSERT_CONTAINS(out, "  tour ");
	ASSERT_CONTAINS(out, "  cpus ");
	free(out);
	ASSERT_EQ(weft(&out, false, "--help", NULL, NULL), 0);
	ASSERT_CONTAINS(out, "usage: weft COMMAND");
	free(out);
}

TEST(help_on_a_command)
{
	char *out;
	ASSERT_EQ(weft(&out, false, "help", "tour", NULL), 0);
	ASSERT_CONTAINS(out, "usage: weft tour");
	free(out);
	ASSERT_EQ(weft(&out, false, "tour", "--help", NULL), 0);
	ASSERT_CONTAINS(out, "usage: weft tour");
	free(out);
	ASSERT_EQ(weft(&out, true, "help", "nosuch", NULL), 2);
	ASSERT_STR_EQ(out, "weft: unknown command 'nosuch' (see `weft help`)\n");
	free(out);
}

TEST(version)
{
	char *out;
	ASSERT_EQ(weft(&out, false, "--version", NULL, NULL), 0);
	char want[64];
	snprintf(want, sizeof(want), "weft %s\n", weft_version());
	ASSERT_STR_EQ(out, want);
	free(out);
}

TEST(no_command_and_unknown_command_fail_with_one_line)
{
	char *out;
	ASSERT_EQ(weft(&out, true, NULL, NULL, NULL), 2);
	ASSERT_CONTAINS(out, "usage: weft COMMAND");
	free(out);
	ASSERT_EQ(weft(&out, true, "frobnicate", NULL, NULL), 2);
	ASSERT_STR_EQ(out, "weft: unknown command 'frobnicate' (see `weft help`)\n");
	free(out);
}

TEST(tour_lists_and_rejects)
{
	char *out;
	ASSERT_EQ(weft(&out, false, "tour", "--list", NULL), 0);
	ASSERT_CONTAINS(out, "metrics ");
	ASSERT_CONTAINS(out, "pool ");
	ASSERT_CONTAINS(out, "fibers ");
	free(out);
	ASSERT_EQ(weft(&out, true, "tour", "nosuch", NULL), 2);
	ASSERT_STR_EQ(out, "weft tour: no chapter named 'nosuch' (see `weft tour --list`)\n");
	ASSERT_EQ(count_lines(out), 1);
	free(out);
	ASSERT_EQ(weft(&out, true, "tour", "--bogus", NULL), 2);
	ASSERT_STR_EQ(out, "weft tour: unknown option '--bogus' (see `weft tour --help`)\n");
	free(out);
}

TEST_TIMEOUT(tour_metrics_chapter_runs_and_measures, 120)
{
	char *out;
	ASSERT_EQ(weft(&out, true, "tour", "metrics", NULL), 0);
	ASSERT_CONTAINS(out, "a concurrency runtime for C on Linux");
	ASSERT_CONTAINS(out, "CPU budget");
	ASSERT_CONTAINS(out, "sched_getaffinity");
	ASSERT_CONTAINS(out, "Chapter 1/1, metrics:");
	/* it read its own endpoint back: the HELP line and the histogram's count */
	ASSERT_CONTAINS(out,
	                "# HELP weft_tour_sleep_lateness_seconds How late a 1 ms sleep wakes up.");
	ASSERT_CONTAINS(out, "weft_tour_sleeps_total 200");
	ASSERT_CONTAINS(out, "weft_tour_sleep_lateness_seconds_count 200");
	ASSERT_CONTAINS(out, "measured: clock read ");
	ASSERT_CONTAINS(out, "Tour done: 1 chapter shown, 0 went wrong.");
	free(out);
}

TEST_TIMEOUT(tour_pool_chapter_calls_the_runaway_and_fixes_it, 180)
{
	char *out;
	ASSERT_EQ(weft(&out, true, "tour", "pool", NULL), 0);
	ASSERT_CONTAINS(out, "Chapter 1/1, pool:");
	ASSERT_CONTAINS(out, "RUNAWAY after ");
	ASSERT_CONTAINS(out, "the queue grows 0.");
	/* the article's answer: 2 tasks/s of 1.5 s need 4 threads */
	ASSERT_CONTAINS(out, "smallest stable pool: 4 threads");
	ASSERT_CONTAINS(out, "Resizing the pool to ");
	ASSERT_CONTAINS(out, "shutdown drained cleanly");
	ASSERT_CONTAINS(out, "Tour done: 1 chapter shown, 0 went wrong.");
	free(out);
}

TEST_TIMEOUT(tour_fibers_chapter_runs_the_ring_beside_threads, 300)
{
	char *out;
	ASSERT_EQ(weft(&out, true, "tour", "fibers", NULL), 0);
	ASSERT_CONTAINS(out, "Chapter 1/1, fibers:");
	ASSERT_CONTAINS(out, "fibers in ");
	ASSERT_CONTAINS(out, "at the peak");
	ASSERT_CONTAINS(out, "Side by side");
	ASSERT_CONTAINS(out, "extrapolated from the ");
	ASSERT_CONTAINS(out, "Tour done: 1 chapter shown, 0 went wrong.");
	free(out);
}
