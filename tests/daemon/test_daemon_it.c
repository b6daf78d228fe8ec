/* test_daemon_it.c: vl3d integration cases. Each runs one scenario of tests/daemon/it.sh, which
 * starts its own Kafka mock cluster and PostgreSQL, runs vl3d with the fake worker and checks the
 * database (every job answered exactly once after worker/daemon kills, PostgreSQL restart,
 * broker down, rebalance; dead letters with reasons; poison jobs; reload; sd_notify), and the same
 * failures in one run with real vl3-worker processes on a tiny model; the archive workflow
 * (incremental enqueue, --dry-run, vl3 search, vl3 status per batch) with fake and real workers. */
#include "test.h"

static int scenario(const char *name)
{
    if (test_sh(NULL, 0, "command -v kcat >/dev/null && command -v psql >/dev/null") != 0)
        SKIP("kcat or psql missing");
    int r = test_sh(NULL, 0, "'%s/tests/daemon/it.sh' '%s' '%s' %s 1>&2", test_source_dir(),
                    test_build_dir(), test_source_dir(), name);
    ASSERT_EQ(r, 0);
    return 0;
}

TEST(it_exactly_once_worker_and_daemon_kill) { return scenario("exactly_once"); }
TEST(it_dead_letters_and_poison) { return scenario("dlq_poison"); }
TEST(it_postgres_restart) { return scenario("pg_restart"); }
TEST(it_broker_down) { return scenario("broker_down"); }
TEST(it_rebalance_join_leave) { return scenario("rebalance"); }
TEST(it_reload_and_notify) { return scenario("reload_notify"); }
TEST(it_second_sigint_exits) { return scenario("second_sigint"); }
TEST(it_enqueue_cli) { return scenario("enqueue"); }
TEST(it_archive_incremental_search_status) { return scenario("archive"); }
TEST(it_archive_real_workers_search) { return scenario("archive_real"); }
TEST(it_graceful_drain) { return scenario("drain"); }
TEST(it_real_workers_every_failure) { return scenario("real_workers"); }
/* issue 11: vl3 ask through vl3d and real workers, the token cache answering repeated questions */
TEST(it_ask_token_cache) { return scenario("token_cache"); }
/* issue 14: many jobs, hostile inputs mixed with good ones, faults during the run; reports done,
 * failed, dead-lettered, lost (must be 0) and duplicated (must be 0) */
TEST(it_chaos_hostile_and_faults) { return scenario("chaos"); }
/* issue 14: dead letters keep key and headers; an oversized message is dead-lettered truncated */
TEST(it_dead_letters_keep_key_and_oversized) { return scenario("dlq_keys"); }
/* issue 14: a read-only database delays jobs and fails none */
TEST(it_readonly_database_retried) { return scenario("readonly"); }
/* issue 14: idle and half-sent metrics connections are capped and timed out */
TEST(it_metrics_connections_bounded) { return scenario("metrics_conns"); }
/* issue 10: workers holding several jobs (credits); a kill holding several blames none; a job
 * that crashes its worker every time fails alone */
TEST(it_credits_crash_attribution) { return scenario("credits"); }
/* issue 10: a real worker holding 8 jobs mixes them in vision batches and decode steps; answers
 * equal vl3 run's */
TEST(it_credits_real_workers_batch_across_jobs) { return scenario("credits_real"); }
/* issue 10: a real worker killed holding several jobs loses and blames none; a crashing job
 * fails alone */
TEST(it_credits_real_workers_crash_attribution) { return scenario("credits_real_crash"); }
/* rebalances while paused at kafka.max_in_flight: the partitions come back resumed (the
 * it_rebalance_join_leave stall) */
TEST(it_rebalance_while_paused) { return scenario("rebalance_paused"); }
/* a rebalance while paused with the only job still queued: consumption resumes */
TEST(it_rebalance_while_paused_job_queued) { return scenario("rebalance_paused_queued"); }
