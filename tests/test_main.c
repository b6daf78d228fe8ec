/* test_main.c: the runner behind test.h: case dispatch, temp dirs, shell helper. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

struct test_case test__cases[TEST_MAX_CASES];
int test__ncases;

static char tmpdir[PATH_MAX];

static void cleanup_tmpdir(void)
{
    if (tmpdir[0] && !getenv("VL3_TEST_KEEP")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        int r = system(cmd);
        (void)r;
    }
}

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof(tmpdir), "%s/vl3-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        chmod(tmpdir, 0755);
        atexit(cleanup_tmpdir);
    }
    return tmpdir;
}

const char *test_source_dir(void)
{
    const char *e = getenv("VL3_SOURCE_DIR");
    return e && *e ? e : VL3_SOURCE_DIR;
}

const char *test_build_dir(void)
{
    const char *e = getenv("VL3_BUILD_DIR");
    return e && *e ? e : VL3_BUILD_DIR;
}

const char *test_shared_dir(void)
{
    static char path[PATH_MAX];
    const char *e = getenv("VL3_SHARED_DIR");
    if (e && *e)
        snprintf(path, sizeof(path), "%s", e);
    else
        snprintf(path, sizeof(path), "%s/../shared", test_source_dir());
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return path;
}

int test_sh(char *out, size_t outlen, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (out && n + 1 < outlen) {
            size_t k = got < outlen - 1 - n ? got : outlen - 1 - n;
            memcpy(out + n, buf, k);
            n += k;
        }
    }
    if (out && outlen)
        out[n] = '\0';
    int st = pclose(p);
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int test_sh_loud(const char *fmt, ...)
{
    char cmd[8192], out[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = test_sh(out, sizeof(out), "%s", cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n%s\n", rc, cmd, out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < test__ncases; i++)
            printf("%s\n", test__cases[i].name);
        return 0;
    }
    int failed = 0, ran = 0, skipped = 0;
    for (int i = 0; i < test__ncases; i++) {
        if (argc > 1) {
            int match = 0;
            for (int a = 1; a < argc; a++)
                if (strcmp(argv[a], test__cases[i].name) == 0)
                    match = 1;
            if (!match)
                continue;
        }
        ran++;
        int r = test__cases[i].fn();
        fflush(stdout);
        if (r == TEST_SKIP_CODE) {
            skipped++;
            fprintf(stderr, "skip %s\n", test__cases[i].name);
        } else if (r != 0) {
            failed++;
            fprintf(stderr, "not ok %s\n", test__cases[i].name);
        } else {
            fprintf(stderr, "ok %s\n", test__cases[i].name);
        }
    }
    if (ran == 0) {
        fprintf(stderr, "no test case matched\n");
        return 2;
    }
    if (failed)
        return 1;
    return skipped == ran ? TEST_SKIP_CODE : 0;
}
