/* test_harness.c: the integration fixtures work: the throwaway PostgreSQL answers SQL and the
 * Kafka mock cluster carries a produced message to a consumer over loopback TCP (kcat). */
#include "test.h"

static int read_first_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(buf, (int)len, f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

TEST(postgres_answers)
{
    char conninfo[512], path[4096], out[4096];
    snprintf(path, sizeof(path), "%s/pg/conninfo", getenv("VL3_FIXTURE_DIR"));
    ASSERT_EQ(read_first_line(path, conninfo, sizeof(conninfo)), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "psql '%s' -XAtc 'select 6*7, current_user'", conninfo),
              0);
    ASSERT_STR_EQ(out, "42|postgres\n");
    return 0;
}

TEST(kafka_mock_carries_messages)
{
    char bootstrap[512], path[4096], out[8192];
    snprintf(path, sizeof(path), "%s/kafka/bootstrap", getenv("VL3_FIXTURE_DIR"));
    ASSERT_EQ(read_first_line(path, bootstrap, sizeof(bootstrap)), 0);
    ASSERT_STR_CONTAINS(bootstrap, "127.0.0.1:");
    ASSERT_EQ(test_sh(out, sizeof(out), "printf 'harness-probe\\n' | kcat -b %s -P -t harness.probe "
                      "-p 0 2>&1", bootstrap), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "timeout 30 kcat -b %s -C -t harness.probe -p 0 -o "
                      "beginning -c 1 -e 2>&1", bootstrap), 0);
    ASSERT_STR_CONTAINS(out, "harness-probe");
    return 0;
}
