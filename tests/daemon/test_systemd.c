/* test_systemd.c: the systemd unit passes `systemd-analyze verify` with no output at all
 * (warnings go to stderr with exit 0, so any output fails), and its offline security exposure
 * stays at or below 2.5 ("OK"). ExecStart= is pointed at the build tree's vl3d, because verify
 * checks that the executable exists. */
#include "test.h"

static int prepare(char *unit, size_t len)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/units", test_tmpdir());
    snprintf(unit, len, "%s/vl3d.service", dir);
    return test_sh(NULL, 0, "mkdir -p '%s' && sed 's|/usr/bin/vl3d|%s/bin/vl3d|g' "
                   "'%s/systemd/vl3d.service' > '%s'",
                   dir, test_build_dir(), test_source_dir(), unit);
}

TEST(systemd_unit_verifies_silently)
{
    if (test_sh(NULL, 0, "command -v systemd-analyze >/dev/null") != 0)
        SKIP("systemd-analyze missing");
    char unit[4200], out[16384];
    ASSERT_EQ(prepare(unit, sizeof(unit)), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "systemd-analyze verify '%s' 2>&1", unit), 0);
    ASSERT_STR_EQ(out, "");
    /* a broken unit does produce output: the check can fail */
    ASSERT_EQ(test_sh(NULL, 0, "echo 'Bogus=1' >> '%s'", unit), 0);
    test_sh(out, sizeof(out), "systemd-analyze verify '%s' 2>&1", unit);
    ASSERT_STR_CONTAINS(out, "Bogus");
    return 0;
}

TEST(systemd_unit_security_exposure)
{
    if (test_sh(NULL, 0, "command -v systemd-analyze >/dev/null") != 0)
        SKIP("systemd-analyze missing");
    char unit[4200], out[65536];
    ASSERT_EQ(prepare(unit, sizeof(unit)), 0);
    test_sh(out, sizeof(out),
            "systemd-analyze security --offline=true '%s' 2>&1 | "
            "sed -n 's/.*Overall exposure level for vl3d.service: \\([0-9.]*\\).*/\\1/p'",
            unit);
    double score = atof(out);
    fprintf(stderr, "exposure %s", out);
    ASSERT(out[0] >= '0' && out[0] <= '9');
    ASSERT_LE(score * 10, 25);
    return 0;
}
