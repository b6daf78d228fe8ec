/* test_offsets.c: the per-partition low-water-mark tracker with out-of-order completions,
 * checked against a brute-force model on a seeded random schedule. */
#include <errno.h>

#include "offsets.h"
#include "pg.h"
#include "test.h"

TEST(offsets_low_water_mark)
{
    struct offsets o;
    offsets_init(&o);
    ASSERT_OK(offsets_assign(&o, "t", 0));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), -1); /* nothing taken yet */
    for (int64_t off = 10; off < 15; off++)
        ASSERT_OK(offsets_add(&o, "t", 0, off));
    ASSERT_EQ(offsets_in_flight(&o, "t", 0), 5);
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 10);
    offsets_committed(&o, "t", 0, 10);
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), -1); /* unchanged since the commit */
    ASSERT_OK(offsets_done(&o, "t", 0, 12));
    ASSERT_OK(offsets_done(&o, "t", 0, 13));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), -1); /* 10 still in flight */
    ASSERT_OK(offsets_done(&o, "t", 0, 10));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 11);
    ASSERT_OK(offsets_done(&o, "t", 0, 11));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 14); /* 12, 13 done earlier */
    ASSERT_EQ(offsets_done(&o, "t", 0, 12), -ENOENT); /* already popped */
    ASSERT_OK(offsets_done(&o, "t", 0, 14));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 15);
    ASSERT_EQ(offsets_in_flight(&o, "t", 0), 0);
    /* gaps in offsets (compaction, transactions) are fine */
    ASSERT_OK(offsets_add(&o, "t", 0, 20));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 20);
    ASSERT_OK(offsets_done(&o, "t", 0, 20));
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), 21);
    /* redelivery of an old offset is refused; the caller skips it */
    ASSERT_EQ(offsets_add(&o, "t", 0, 20), -EINVAL);
    ASSERT_EQ(offsets_add(&o, "t", 9, 1), -ENOENT); /* not assigned */
    offsets_deinit(&o);
    return 0;
}

TEST(offsets_double_done_and_revoke)
{
    struct offsets o;
    offsets_init(&o);
    ASSERT_OK(offsets_assign(&o, "a", 1));
    ASSERT_OK(offsets_assign(&o, "a", 2));
    ASSERT_OK(offsets_assign(&o, "a", 1)); /* idempotent */
    ASSERT_OK(offsets_add(&o, "a", 1, 0));
    ASSERT_OK(offsets_add(&o, "a", 1, 1));
    ASSERT_OK(offsets_add(&o, "a", 2, 100));
    ASSERT_OK(offsets_done(&o, "a", 1, 1));
    ASSERT_EQ(offsets_done(&o, "a", 1, 1), -EALREADY);
    ASSERT_EQ(offsets_in_flight(&o, NULL, 0), 2);
    offsets_revoke(&o, "a", 1);
    ASSERT(offsets_find(&o, "a", 1) == NULL);
    ASSERT_EQ(offsets_in_flight(&o, NULL, 0), 1);
    ASSERT_EQ(offsets_commit_point(&o, "a", 2), 100);
    ASSERT_EQ(offsets_done(&o, "a", 1, 0), -ENOENT);
    offsets_deinit(&o);
    return 0;
}

/* random out-of-order completion against a model: the commit point is always the smallest
 * unfinished offset (or one past the last taken) */
TEST(offsets_random_against_model)
{
    enum { N = 5000 };
    static int done[N];
    struct offsets o;
    offsets_init(&o);
    ASSERT_OK(offsets_assign(&o, "t", 0));
    uint64_t s = 99;
    int64_t taken = 0;
    memset(done, 0, sizeof(done));
    while (1) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int take = taken < N && ((s >> 33) % 3 != 0);
        if (take) {
            ASSERT_OK(offsets_add(&o, "t", 0, taken));
            taken++;
        } else {
            /* finish a random unfinished offset among those taken */
            int64_t open = 0;
            for (int64_t i = 0; i < taken; i++)
                open += !done[i];
            if (open == 0) {
                if (taken == N)
                    break;
                continue;
            }
            int64_t pick = (int64_t)((s >> 20) % (uint64_t)open);
            for (int64_t i = 0; i < taken; i++)
                if (!done[i] && pick-- == 0) {
                    done[i] = 1;
                    ASSERT_OK(offsets_done(&o, "t", 0, i));
                    break;
                }
        }
        int64_t want = taken;
        for (int64_t i = 0; i < taken; i++)
            if (!done[i]) {
                want = i;
                break;
            }
        if (taken > 0) {
            ASSERT_EQ(offsets_commit_point(&o, "t", 0), want);
        }
    }
    ASSERT_EQ(offsets_commit_point(&o, "t", 0), N);
    offsets_deinit(&o);
    return 0;
}

/* Which PostgreSQL errors may fail a job (issue 14 item 2): only those retrying can never fix. */
TEST(pg_sqlstates_retried_unless_permanent)
{
    static const char *retried[] = {"25006", "57014", "55P03", "42501", "08006", "40001",
                                    "53100", "57P01", "XX000", NULL};
    static const char *permanent[] = {"22021", "22001", "23505", "0A000", "42601", "42P01"};
    for (int i = 0; retried[i]; i++)
        if (!pg_sqlstate_retryable(retried[i]))
            TEST__FAIL("SQLSTATE %s is treated as permanent", retried[i]);
    ASSERT(pg_sqlstate_retryable(NULL));
    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
        if (pg_sqlstate_retryable(permanent[i]))
            TEST__FAIL("SQLSTATE %s is retried forever", permanent[i]);
    return 0;
}
