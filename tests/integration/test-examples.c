/* test-examples.c: the programs in examples/ run and do what their head comments say. */
#include <sys/wait.h>

#include "harness.h"

static int run_example(const char *name, char *a1, char *a2, char **ret_out)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/examples/%s", th_env_path("WEFT_BUILD_ROOT"), name);
	char *argv[] = {path, a1, a2, NULL};
	int st = th_run(argv, 60, true, ret_out);
	ASSERT_TRUE(st != -1);
	ASSERT_TRUE(WIFEXITED(st));
	return WEXITSTATUS(st);
}

TEST_TIMEOUT(pool_verdict_calls_the_runaway_and_resizes, 90)
{
	char *out;
	ASSERT_EQ(run_example("pool-verdict", NULL, NULL, &out), 0);
	ASSERT_CONTAINS(out, "runaway: rho ");
	ASSERT_CONTAINS(out, "4 threads would be stable");
	ASSERT_CONTAINS(out, "4 threads, queue ");
	ASSERT_CONTAINS(out, "state ok");
	free(out);
}

TEST_TIMEOUT(metrics_server_serves_and_reports, 60)
{
	char *out;
	ASSERT_EQ(run_example("metrics-server", "127.0.0.1:0", "1", &out), 0);
	ASSERT_CONTAINS(out, "serving http://127.0.0.1:0/metrics (port ");
	ASSERT_CONTAINS(out, " jobs, p50 ");
	free(out);
	/* a bad address is one clear line and a failure */
	ASSERT_EQ(run_example("metrics-server", "not-an-address", "1", &out), 1);
	ASSERT_CONTAINS(out, "metrics-server: not-an-address: Invalid argument");
	free(out);
}

TEST_TIMEOUT(fiber_pipeline_sums_and_its_deadline_cancels_it, 60)
{
	char *out;
	ASSERT_EQ(run_example("fiber-pipeline", NULL, NULL, &out), 0);
	/* run 1 ran to the end: n(n+1)(2n+1)/6 for n = 10,000 */
	ASSERT_CONTAINS(out, "sum of squares = 333383335000 (expected 333383335000), 10000 values");
	/* run 2 was stopped by its scope's deadline, with every stage cancelled */
	ASSERT_CONTAINS(out, "scope cancelled after ");
	ASSERT_CONTAINS(out, " fibers stopped with ECANCELED");
	free(out);
}

TEST_TIMEOUT(watch_bank_finds_the_inversion_and_not_after_the_fix, 60)
{
	char *out;
	ASSERT_EQ(run_example("watch-bank", NULL, NULL, &out), 0);
	/* run 1: reported, with both orders' classes named and the code's own function */
	ASSERT_CONTAINS(out, "weft watch: inversion: two locks taken in both orders");
	ASSERT_CONTAINS(out, "first order: thread ");
	ASSERT_CONTAINS(out, "(class \"account-");
	ASSERT_CONTAINS(out, "teller");
	ASSERT_CONTAINS(out,
	                "run 1 (locked from, then to): 4 threads, total 8000 (expected 8000), ");
	/* run 2: the fix, silent */
	ASSERT_CONTAINS(out,
	                "run 2 (pair locked in address order): 4 threads, total 8000 (expected "
	                "8000), 0 reports");
	ASSERT_CONTAINS(out, "the inversion was found in run 1 and is gone in run 2");
	free(out);
}
