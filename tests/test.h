/* test.h: the project's tiny test framework (libuv task.h / systemd tests.h shape).
 *
 * A test file defines cases with TEST(name) { ... }; test_main.c holds main(). The binary runs
 * one case by name (`test-x case`), all cases with no argument, and lists them with --list.
 * CMake scans the sources for TEST(...) and registers one CTest test per case.
 * Assertions print both operands and file:line, then fail the case (return 1).
 * SKIP(msg) exits the case with code 77, which CTest reports as skipped. */
#ifndef VL3_TEST_H
#define VL3_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/err.h"

#define TEST_SKIP_CODE 77

typedef int (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

#define TEST_MAX_CASES 512
extern struct test_case test__cases[TEST_MAX_CASES];
extern int test__ncases;

#define TEST(name)                                                                                 \
    static int test_##name(void);                                                                  \
    __attribute__((constructor)) static void test__register_##name(void)                           \
    {                                                                                              \
        if (test__ncases < TEST_MAX_CASES)                                                         \
            test__cases[test__ncases++] = (struct test_case){#name, test_##name};                  \
    }                                                                                              \
    static int test_##name(void)

#define TEST__FAIL(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        return 1;                                                                                  \
    } while (0)

#define ASSERT(x)                                                                                  \
    do {                                                                                           \
        if (!(x))                                                                                  \
            TEST__FAIL("assertion %s", #x);                                                        \
    } while (0)

#define ASSERT_OK(r)                                                                               \
    do {                                                                                           \
        int r_ = (r);                                                                              \
        if (r_ < 0)                                                                                \
            TEST__FAIL("%s returned %d (%s)", #r, r_, vl3_strerror(r_));                           \
    } while (0)

/* Like ASSERT_OK, printing the vl3_error message too. */
#define ASSERT_OK_E(r, err)                                                                        \
    do {                                                                                           \
        int r_ = (r);                                                                              \
        if (r_ < 0)                                                                                \
            TEST__FAIL("%s returned %d: %s", #r, r_, vl3_error_text((err), r_));                  \
    } while (0)

#define ASSERT__CMP(a, op, b)                                                                      \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!(a_ op b_))                                                                           \
            TEST__FAIL("%s " #op " %s: %lld vs %lld", #a, #b, a_, b_);                             \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT__CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT__CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT__CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT__CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT__CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT__CMP(a, >=, b)

#define ASSERT_NEAR(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            TEST__FAIL("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol));          \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            TEST__FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)",                   \
                       b_ ? b_ : "(null)");                                                        \
    } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            TEST__FAIL("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);                  \
    } while (0)

#define ASSERT_MEM_EQ(a, b, n)                                                                     \
    do {                                                                                           \
        const unsigned char *a_ = (const void *)(a), *b_ = (const void *)(b);                      \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++)                                                \
            if (a_[i_] != b_[i_])                                                                  \
                TEST__FAIL("%s and %s differ at byte %zu: %u vs %u", #a, #b, i_, a_[i_], b_[i_]);  \
    } while (0)

#define SKIP(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "SKIP: ");                                                                 \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        return TEST_SKIP_CODE;                                                                     \
    } while (0)

/* Seeded U(-1, 1) draws (splitmix64 of *state): the same sequence on every machine, so a failing
 * random case can be rerun as it was. */
static inline double test_urand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

/* n seeded U(-1, 1) floats (malloc'ed; NULL when out of memory). */
static inline float *test_urandv(size_t n, uint64_t *state)
{
    float *v = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)test_urand(state);
    return v;
}

/* Directory helpers for tests: the source tree (VL3_SOURCE_DIR), the build tree, ../shared. */
const char *test_source_dir(void);
const char *test_build_dir(void);
/* The shared data directory (VL3_SHARED_DIR env, else <source>/../shared), or NULL if absent. */
const char *test_shared_dir(void);
/* A fresh temporary directory, removed at exit unless VL3_TEST_KEEP is set. */
const char *test_tmpdir(void);
/* Run a shell command, return its exit status (or -1). Output is captured into out (may be NULL). */
int test_sh(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* test_sh without capture for the caller: on a non-zero status prints the command and its
 * output to stderr (the test's log). */
int test_sh_loud(const char *fmt, ...) __attribute__((format(printf, 1, 2)));


#endif
