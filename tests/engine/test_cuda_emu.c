/* test_cuda_emu.c: the CUDA backend's kernels run on the host CUDA emulator
 * (engine/backend/cuda/emu, docs/cuda-emu.md) against the CPU backend's ops, and self-tests of
 * the emulator: barriers, warp primitives, a race that must show, deadlock reports, dynamic
 * shared memory, launch errors and (ASan build) an out-of-bounds write in a kernel.
 * Op cases use seeded random inputs over shapes with edge sizes (1, 31, 33, 1000) and the
 * model's widths, judged by NMSE with the per-op bounds of tol_table (argmax: exact). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "argmax.cuh"
#include "backend.h"
#include "cpu_ops.h"
#include "cuda_emu_selftest.h"
#include "emu/cuda_emu.h"
#include "layernorm.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "silu_mul.cuh"
#include "test.h"

/* f32 kernels against f32 CPU ops that accumulate in double: the sums over up to ~9k terms
 * differ by ~1e-7 relative, NMSE ~1e-14; an indexing or formula mistake gives NMSE ~1. */
static const struct {
    const char *op;
    double nmse;
} tol_table[] = {
    {"rmsnorm", 1e-11}, {"layernorm", 1e-11}, {"silu_mul", 1e-12}, {"rope", 1e-11},
};

static uint64_t rng_state = 7;

static double urand(void) /* U(-1, 1) */
{
    return test_urand(&rng_state);
}

static float *randv(size_t n, double scale, double offset)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(urand() * scale + offset);
    return v;
}

/* A device copy of host[n floats]. */
static float *dev_from(const float *host, size_t n)
{
    void *d = NULL;
    if (vl3_emu_cudaMalloc(&d, n * sizeof(float)) != cudaSuccess)
        return NULL;
    cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice);
    return d;
}

/* NMSE of got against want; on failure prints the first five elements off by more than 1e-5
 * relative. */
static int check(const char *op, const char *shape, const float *got, const float *want, size_t n)
{
    size_t k = 0;
    while (strcmp(tol_table[k].op, op) != 0)
        k++;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - want[i];
        num += e * e;
        den += (double)want[i] * want[i];
    }
    double nmse = den > 0 ? num / den : num;
    if (nmse <= tol_table[k].nmse)
        return 0;
    fprintf(stderr, "%s %s: NMSE %.3g > %.3g\n", op, shape, nmse, tol_table[k].nmse);
    for (size_t i = 0, shown = 0; i < n && shown < 5; i++) {
        double e = (double)got[i] - want[i];
        if (!(fabs(e) <= 1e-5 * (fabs(want[i]) + 1e-3))) {
            fprintf(stderr, "  %s %s [%zu]: got %.9g want %.9g\n", op, shape, i, got[i], want[i]);
            shown++;
        }
    }
    return 1;
}

static const int widths[] = {1, 31, 33, 1000, 1152, 1536, 3584};
static const int row_counts[] = {1, 3};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

TEST(rmsnorm)
{
    int fails = 0;
    for (size_t a = 0; a < N_OF(widths); a++)
        for (size_t b = 0; b < N_OF(row_counts); b++) {
            int C = widths[a], R = row_counts[b];
            size_t n = (size_t)R * C;
            float *x = randv(n, 2.0, 0.0), *w = randv((size_t)C, 1.0, 1.0);
            float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
            float *dx = dev_from(x, n), *dw = dev_from(w, (size_t)C), *dy = dev_from(x, n);
            ASSERT_OK(vl3__cpu_rmsnorm(NULL, want, x, w, R, C, 1e-6f));
            ASSERT_EQ(cuda_rmsnorm(dy, dx, dw, R, C, 1e-6f, NULL), 0);
            cudaMemcpy(got, dy, n * sizeof(float), cudaMemcpyDeviceToHost);
            char shape[64];
            snprintf(shape, sizeof(shape), "(%d, %d)", R, C);
            fails += check("rmsnorm", shape, got, want, n);
            cudaFree(dx), cudaFree(dw), cudaFree(dy);
            free(x), free(w), free(want), free(got);
        }
    ASSERT_EQ(fails, 0);
    return 0;
}

TEST(layernorm)
{
    int fails = 0;
    for (size_t a = 0; a < N_OF(widths); a++)
        for (size_t b = 0; b < N_OF(row_counts); b++) {
            int C = widths[a], R = row_counts[b];
            size_t n = (size_t)R * C;
            /* an offset mean, as vision activations have */
            float *x = randv(n, 3.0, 5.0), *w = randv((size_t)C, 1.0, 1.0);
            float *bias = randv((size_t)C, 0.5, 0.0);
            float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
            float *dx = dev_from(x, n), *dw = dev_from(w, (size_t)C);
            float *db = dev_from(bias, (size_t)C), *dy = dev_from(x, n);
            ASSERT_OK(vl3__cpu_vision_ops.layernorm(NULL, x, w, bias, want, R, C, 1e-6f));
            ASSERT_EQ(cuda_layernorm(dy, dx, dw, db, R, C, 1e-6f, NULL), 0);
            cudaMemcpy(got, dy, n * sizeof(float), cudaMemcpyDeviceToHost);
            char shape[64];
            snprintf(shape, sizeof(shape), "(%d, %d)", R, C);
            /* C = 1: x - mean is 0 on both sides, the output is the bias */
            fails += check("layernorm", shape, got, want, n);
            cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy);
            free(x), free(w), free(bias), free(want), free(got);
        }
    ASSERT_EQ(fails, 0);
    return 0;
}

TEST(silu_mul)
{
    static const int inter[] = {1, 31, 33, 1000, 1536, 8960};
    int fails = 0;
    for (size_t a = 0; a < N_OF(inter); a++)
        for (size_t b = 0; b < N_OF(row_counts); b++) {
            int I = inter[a], T = row_counts[b];
            size_t n = (size_t)T * I;
            float *gu = randv(2 * n, 6.0, 0.0);
            float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
            float *dgu = dev_from(gu, 2 * n), *dout = dev_from(want, n);
            ASSERT_OK(vl3__cpu_silu_mul(NULL, want, gu, T, I));
            ASSERT_EQ(cuda_silu_mul(dout, dgu, T, I, NULL), 0);
            cudaMemcpy(got, dout, n * sizeof(float), cudaMemcpyDeviceToHost);
            char shape[64];
            snprintf(shape, sizeof(shape), "(%d, %d)", T, I);
            fails += check("silu_mul", shape, got, want, n);
            cudaFree(dgu), cudaFree(dout);
            free(gu), free(want), free(got);
        }
    ASSERT_EQ(fails, 0);
    return 0;
}

TEST(rope)
{
    static const struct {
        int T, n_heads, D, extra; /* stride = n_heads * D + extra (rows of a fused qkv) */
        float theta;
    } shapes[] = {
        {1, 1, 2, 0, 10000.f},    {3, 2, 64, 0, 10000.f},      {5, 28, 128, 512, 1000000.f},
        {2, 12, 128, 0, 1000000.f}, {4, 16, 72, 3, 10000.f}, {1, 3, 512, 0, 10000.f},
    };
    int fails = 0;
    for (size_t a = 0; a < N_OF(shapes); a++) {
        int T = shapes[a].T, H = shapes[a].n_heads, D = shapes[a].D;
        int stride = H * D + shapes[a].extra;
        size_t n = (size_t)T * stride;
        float *x = randv(n, 1.0, 0.0), *want = malloc(n * sizeof(float));
        float *got = malloc(n * sizeof(float));
        int32_t pos[8];
        for (int t = 0; t < T; t++)
            pos[t] = t == 0 ? 0 : (int32_t)((urand() + 1.0) * 16384.0);
        memcpy(want, x, n * sizeof(float));
        float *dx = dev_from(x, n);
        int32_t *dpos = NULL;
        ASSERT_EQ(vl3_emu_cudaMalloc((void **)&dpos, sizeof(pos)), cudaSuccess);
        cudaMemcpy(dpos, pos, sizeof(pos), cudaMemcpyHostToDevice);
        ASSERT_OK(vl3__cpu_rope(NULL, want, T, stride, H, D, pos, shapes[a].theta));
        ASSERT_EQ(cuda_rope(dx, T, stride, H, D, dpos, shapes[a].theta, NULL), 0);
        cudaMemcpy(got, dx, n * sizeof(float), cudaMemcpyDeviceToHost);
        char shape[64];
        snprintf(shape, sizeof(shape), "(T %d, H %d, D %d, stride %d)", T, H, D, stride);
        fails += check("rope", shape, got, want, n);
        /* the bytes between the heads and the row end are untouched */
        for (int t = 0; t < T; t++)
            for (int i = H * D; i < stride; i++)
                if (got[(size_t)t * stride + i] != x[(size_t)t * stride + i])
                    fails++;
        cudaFree(dx), cudaFree(dpos);
        free(x), free(want), free(got);
    }
    ASSERT_EQ(cuda_rope(NULL, 1, 3, 1, 3, NULL, 10000.f, NULL), -22);
    ASSERT_EQ(fails, 0);
    return 0;
}

TEST(argmax)
{
    static const int lens[] = {1, 31, 33, 1000, 3584, 151936};
    int fails = 0;
    for (size_t a = 0; a < N_OF(lens); a++)
        for (int R = 1; R <= 4; R += 3) {
            int n = lens[a];
            size_t total = (size_t)R * n;
            float *x = randv(total, 10.0, 0.0);
            for (int r = 0; r < R && n > 2; r++) {
                float *row = x + (size_t)r * n;
                /* row 1: ties of the maximum, the first must win; row 2: all equal */
                if (r == 1) {
                    int best = 0;
                    for (int i = 1; i < n; i++)
                        if (row[i] > row[best])
                            best = i;
                    row[n - 1] = row[best];
                    row[n / 3] = row[best];
                } else if (r == 2) {
                    for (int i = 0; i < n; i++)
                        row[i] = -3.0f;
                }
            }
            int32_t want[4], got[4] = {-1, -1, -1, -1};
            float *dx = dev_from(x, total);
            int32_t *dout = NULL;
            ASSERT_EQ(vl3_emu_cudaMalloc((void **)&dout, sizeof(got)), cudaSuccess);
            ASSERT_OK(vl3__cpu_argmax(NULL, want, x, R, n));
            ASSERT_EQ(cuda_argmax(dout, dx, R, n, NULL), 0);
            cudaMemcpy(got, dout, (size_t)R * sizeof(int32_t), cudaMemcpyDeviceToHost);
            for (int r = 0; r < R; r++)
                if (got[r] != want[r]) {
                    fprintf(stderr, "  argmax (%d, %d) row %d: got %d want %d\n", R, n, r, got[r],
                            want[r]);
                    fails++;
                }
            cudaFree(dx), cudaFree(dout);
            free(x);
        }
    ASSERT_EQ(fails, 0);
    return 0;
}

/* ---- emulator self-tests --------------------------------------------------------------------- */


TEST(emu_shared_reduction)
{
    enum { BLOCKS = 5, N = BLOCKS * 128 };
    float x[N], out[BLOCKS];
    for (int i = 0; i < N; i++)
        x[i] = (float)(i % 97) - 40.0f; /* integers: every summation order is exact */
    ASSERT_EQ(self_tree_sum(out, x, BLOCKS), 0);
    for (int b = 0; b < BLOCKS; b++) {
        float want = 0;
        for (int i = 0; i < 128; i++)
            want += x[b * 128 + i];
        ASSERT_EQ(out[b], want);
    }
    return 0;
}

TEST(emu_warp_primitives)
{
    float x[64], xs[64], ds[64], bc[64], up[64];
    unsigned ballot[64];
    int any[64], all[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)((i * 7) % 13); /* 0..12 */
    x[40] = x[41] = x[42] = 0.0f; /* warp 1: some values are forced below 3.5 anyway */
    for (int i = 32; i < 64; i++)
        if (x[i] > 3.0f)
            x[i] = 3.0f; /* warp 1 has no value > 3.5: any() false there */
    ASSERT_EQ(self_warp(xs, ds, bc, up, ballot, any, all, x), 0);
    for (int w = 0; w < 2; w++) {
        float sum = 0;
        unsigned odd = 0;
        int has_big = 0;
        for (int l = 0; l < 32; l++) {
            sum += x[w * 32 + l];
            if ((int)x[w * 32 + l] & 1)
                odd |= 1u << l;
            has_big |= x[w * 32 + l] > 3.5f;
        }
        for (int l = 0; l < 32; l++) {
            int t = w * 32 + l;
            ASSERT_EQ(xs[t], sum);
            ASSERT_EQ(bc[t], x[w * 32 + 5]);
            ASSERT_EQ(up[t], l == 0 ? x[t] : x[t - 1]);
            ASSERT_EQ(ballot[t], odd);
            ASSERT_EQ(any[t], has_big);
            ASSERT_EQ(all[t], 1);
        }
        ASSERT_EQ(ds[w * 32], sum); /* the shfl_down tree's total lands in lane 0 */
    }
    ASSERT_EQ(any[0], 1);
    ASSERT_EQ(any[32], 0);
    return 0;
}

TEST(emu_missing_barrier_shows)
{
    float x[128], good[128], bad[128];
    for (int i = 0; i < 128; i++)
        x[i] = (float)(i + 1);
    ASSERT_EQ(self_exchange(good, x, 1), 0);
    ASSERT_EQ(self_exchange(bad, x, 0), 0);
    int wrong = 0;
    for (int i = 0; i < 128; i++) {
        ASSERT_EQ(good[i], x[(i + 1) % 128]);
        wrong += bad[i] != x[(i + 1) % 128];
    }
    /* without the barrier thread t reads its neighbour's slot before the neighbour wrote it */
    ASSERT_GT(wrong, 100);
    /* inside one warp __syncwarp() orders it */
    ASSERT_EQ(self_warp_exchange(good, x), 0);
    for (int i = 0; i < 32; i++)
        ASSERT_EQ(good[i], x[(i + 1) % 32]);
    return 0;
}

TEST(emu_dynamic_shared)
{
    float x[96], out[96];
    for (int i = 0; i < 96; i++)
        x[i] = (float)i * 0.5f;
    ASSERT_EQ(self_dyn_reverse(out, x, 96), 0);
    for (int i = 0; i < 96; i++)
        ASSERT_EQ(out[i], x[95 - i]);
    return 0;
}

TEST(emu_launch_errors)
{
    ASSERT_EQ(self_launch_bad_config(), cudaErrorInvalidConfiguration);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess); /* reading the error clears it */
    ASSERT_STR_EQ(cudaGetErrorString(cudaErrorInvalidConfiguration),
                  "invalid configuration argument");
    return 0;
}

TEST(emu_wmma)
{
    enum { W = 2, N = W * 256 };
    uint16_t a[N], b[N];
    float c[N], d[N], scale[16];
    for (int i = 0; i < N; i++) {
        a[i] = vl3__cpu_f32_to_bf16((float)urand());
        b[i] = vl3__cpu_f32_to_bf16((float)urand());
        c[i] = (float)urand();
    }
    for (int r = 0; r < 16; r++)
        scale[r] = (float)(r + 2);
    for (int col_major = 0; col_major < 2; col_major++) {
        ASSERT_EQ(self_wmma(d, a, b, c, col_major, NULL, W), 0);
        for (int w = 0; w < W; w++)
            for (int r = 0; r < 16; r++)
                for (int n = 0; n < 16; n++) {
                    double want = c[w * 256 + r * 16 + n];
                    for (int k = 0; k < 16; k++) {
                        int ib = col_major ? n * 16 + k : k * 16 + n;
                        want += (double)vl3__cpu_bf16_to_f32(a[w * 256 + r * 16 + k]) *
                                vl3__cpu_bf16_to_f32(b[w * 256 + ib]);
                    }
                    ASSERT_NEAR(d[w * 256 + r * 16 + n], want, 1e-5);
                }
    }
    /* code that assumes the hardware's accumulator layout gets wrong rows here */
    float good[N];
    ASSERT_EQ(self_wmma(good, a, b, c, 0, NULL, W), 0);
    ASSERT_EQ(self_wmma(d, a, b, c, 0, scale, W), 0);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += fabsf(d[i] - good[i] * scale[(i % 256) / 16]) > 1e-4f * (fabsf(d[i]) + 1.0f);
    ASSERT_GT(wrong, N / 2);
    return 0;
}

/* Run fn(arg) in a child with stderr into buf; return its wait status. */
static int in_child(void (*fn)(int), int arg, char *buf, size_t len)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        fn(arg);
        _exit(0);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(p[0], buf + got, len - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

static void run_deadlock(int mode)
{
    float out[64];
    self_deadlock(out, mode);
    for (int i = 0; i < 64; i++)
        if (out[i] != (float)i)
            _exit(3);
}

TEST(emu_deadlock_reported)
{
    static const char *const why[] = {
        "threads wait at different __syncthreads",
        "threads wait at __syncthreads after others exited",
        "a warp primitive's mask names lanes that never arrive",
    };
    char buf[4096];
    for (int mode = 0; mode < 3; mode++) {
        int st = in_child(run_deadlock, mode, buf, sizeof(buf));
        fprintf(stderr, "mode %d child said:\n%s", mode, buf);
        ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
        ASSERT_STR_CONTAINS(buf, "cuda-emu: deadlock in block (0,0,0)");
        ASSERT_STR_CONTAINS(buf, why[mode]);
        ASSERT_STR_CONTAINS(buf, "cuda_emu_selftest.cu:");
    }
    /* the well-formed barrier completes */
    int st = in_child(run_deadlock, 3, buf, sizeof(buf));
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return 0;
}

static void run_oob(int n)
{
    float *out = NULL;
    vl3_emu_cudaMalloc((void **)&out, (size_t)n * sizeof(float));
    self_oob(out, n);
    cudaFree(out);
}

TEST(emu_oob_caught_by_asan)
{
#if defined(__SANITIZE_ADDRESS__)
    char buf[8192];
    int st = in_child(run_oob, 100, buf, sizeof(buf));
    ASSERT(!(WIFEXITED(st) && WEXITSTATUS(st) == 0));
    ASSERT_STR_CONTAINS(buf, "heap-buffer-overflow");
    ASSERT_STR_CONTAINS(buf, "self_oob_kernel");
    return 0;
#else
    (void)run_oob;
    SKIP("needs the AddressSanitizer build (VL3_SANITIZE=address)");
#endif
}
