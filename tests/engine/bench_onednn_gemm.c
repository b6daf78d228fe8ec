/* bench_onednn_gemm.c: oneDNN's bf16 matmul (Debian's libdnnl) against vl3's own bf16 GEMM
 * (vl3__cpu_gemm_bf16, engine/backend/cpu/gemm_bf16.c) on the shapes of the 2B model, in one
 * process (issue 16: "oneDNN or your own kernels: measure both and pick with numbers").
 *
 * Both compute y (T, out) = bf16(x) W^T with W (out, in) bf16 as stored in the checkpoint, f32
 * sums, f32 y. vl3 takes f32 x and rounds it itself; oneDNN's matmul (bf16 src, bf16 weights,
 * f32 dst) needs x in bf16, so its time is shown alone and with the f32 -> bf16 reorder of x.
 * oneDNN runs twice: on W in place (weights memory "ba", i.e. (in, out) transposed = W's bytes)
 * and on weights in the layout the primitive asks for (format "any"), reordered once: the
 * one-time costs (primitive creation, that reorder, the reordered copy's bytes) are printed.
 *
 * Times: one thread in CPU time of the calling thread (vl3 context of 1 thread, oneDNN with
 * omp_set_num_threads(1), which runs the region on the caller), then 2 threads in wall time;
 * each the best of a few back-to-back repetitions after a warm-up run.
 *
 * Correctness (exit 1 on failure): vl3 and both oneDNN outputs against each other (max |a - b| /
 * max |b|, relative L2, limit 1e-4: both sum the same rounded products in f32, so they differ by
 * summation order only, ~1e-6; truncating x instead of rounding it, or a layout error, shows as
 * 1e-3 .. 1), and 256 sampled entries of each against a double sum of the same rounded inputs,
 * |got - want| <= 2e-5 * sum_k |x_k w_k| as test-cpu-bf16 demands.
 *
 * "selftest" runs one small shape twice: as above (must agree) and with W handed to oneDNN in
 * the wrong layout (must be reported as disagreeing); exit 0 only when both hold.
 *
 * Built only where libdnnl is found (tests/engine/onednn.cmake); not a CTest test. Run:
 *   build/bin/bench-onednn-gemm [all | prefill | decode | selftest | TxINxOUT] [rounds]
 * (rounds: the list is run that many times; a last table gives each cell's best.)
 * ONEDNN_VERBOSE=1 (or DNNL_VERBOSE=1) also prints oneDNN's own lines. */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend.h"
#include "cpu_ops.h"

#define AGREE_TOL 1e-4
#define REF_TOL 2e-5
#define REF_SAMPLES 256

static const vl3__backend_ops *ops = &vl3__backend_cpu_ops;
static dnnl_engine_t eng;
static dnnl_stream_t strm;
static void (*set_omp_threads)(int);
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static int wrong_layout; /* selftest: W handed to oneDNN as (in, out) row-major, i.e. misread */

#define DN(call)                                                                                  \
    do {                                                                                          \
        dnnl_status_t st_ = (call);                                                               \
        if (st_ != dnnl_success) {                                                                \
            fprintf(stderr, "%s:%d: %s failed: status %d\n", __FILE__, __LINE__, #call, (int)st_); \
            goto cleanup;                                                                         \
        }                                                                                         \
    } while (0)

static double urand(void) /* U(-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static double now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *alloc64(size_t n)
{
    return aligned_alloc(64, (n + 63) & ~(size_t)63);
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2: return "avx2";
    default: return "other";
    }
}

/* oneDNN's pieces for one shape at one thread count: matmul on W in place, matmul on the layout
 * it prefers, the f32 -> bf16 reorder of x. */
struct dn_set {
    dnnl_primitive_t mm_plain, mm_any, cvt;
    dnnl_memory_t xf, xb, wplain, wblk, y_plain, y_any;
    const char *impl_plain, *impl_any;
    double create_ms, reorder_ms;
    size_t wblk_bytes;
    int reordered;
};

static void dn_set_free(struct dn_set *s)
{
    dnnl_primitive_destroy(s->mm_plain);
    dnnl_primitive_destroy(s->mm_any);
    dnnl_primitive_destroy(s->cvt);
    dnnl_memory_destroy(s->xf);
    dnnl_memory_destroy(s->xb);
    dnnl_memory_destroy(s->wplain);
    dnnl_memory_destroy(s->wblk);
    dnnl_memory_destroy(s->y_plain);
    dnnl_memory_destroy(s->y_any);
    memset(s, 0, sizeof(*s));
}

static int exec2(dnnl_primitive_t p, int a0, dnnl_memory_t m0, int a1, dnnl_memory_t m1, int a2,
                 dnnl_memory_t m2)
{
    dnnl_exec_arg_t args[3] = {{a0, m0}, {a1, m1}, {a2, m2}};
    if (dnnl_primitive_execute(p, strm, a2 < 0 ? 2 : 3, args) != dnnl_success ||
        dnnl_stream_wait(strm) != dnnl_success)
        return -1;
    return 0;
}

/* Builds s for (T, in, out) on nt threads over the caller's buffers (x f32, w bf16, the two y). */
static int dn_set_init(struct dn_set *s, int nt, int T, int in, int out, float *x, uint16_t *w,
                       float *y_plain, float *y_any)
{
    int ret = -1;
    dnnl_primitive_desc_t pd_plain = NULL, pd_any = NULL, pd_cvt = NULL, pd_wr = NULL;
    dnnl_primitive_t wr = NULL;
    memset(s, 0, sizeof(*s));
    set_omp_threads(nt);
    dnnl_memory_desc_t xf_md, xb_md, wplain_md, wany_md, y_md;
    dnnl_dims_t xd = {T, in}, wd = {in, out}, yd = {T, out};
    DN(dnnl_memory_desc_init_by_tag(&xf_md, 2, xd, dnnl_f32, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&xb_md, 2, xd, dnnl_bf16, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&wplain_md, 2, wd, dnnl_bf16,
                                    wrong_layout ? dnnl_ab : dnnl_ba));
    DN(dnnl_memory_desc_init_by_tag(&wany_md, 2, wd, dnnl_bf16, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&y_md, 2, yd, dnnl_f32, dnnl_ab));

    double t0 = now_wall();
    dnnl_matmul_desc_t d_plain, d_any;
    DN(dnnl_matmul_desc_init(&d_plain, &xb_md, &wplain_md, NULL, &y_md));
    DN(dnnl_primitive_desc_create(&pd_plain, &d_plain, NULL, eng, NULL));
    DN(dnnl_primitive_create(&s->mm_plain, pd_plain));
    s->create_ms = (now_wall() - t0) * 1e3;
    DN(dnnl_matmul_desc_init(&d_any, &xb_md, &wany_md, NULL, &y_md));
    DN(dnnl_primitive_desc_create(&pd_any, &d_any, NULL, eng, NULL));
    DN(dnnl_primitive_create(&s->mm_any, pd_any));
    DN(dnnl_primitive_desc_query(pd_plain, dnnl_query_impl_info_str, 0, &s->impl_plain));
    DN(dnnl_primitive_desc_query(pd_any, dnnl_query_impl_info_str, 0, &s->impl_any));
    DN(dnnl_reorder_primitive_desc_create(&pd_cvt, &xf_md, eng, &xb_md, eng, NULL));
    DN(dnnl_primitive_create(&s->cvt, pd_cvt));

    DN(dnnl_memory_create(&s->xf, &xf_md, eng, x));
    DN(dnnl_memory_create(&s->xb, &xb_md, eng, DNNL_MEMORY_ALLOCATE));
    DN(dnnl_memory_create(&s->wplain, &wplain_md, eng, w));
    DN(dnnl_memory_create(&s->y_plain, &y_md, eng, y_plain));
    DN(dnnl_memory_create(&s->y_any, &y_md, eng, y_any));

    const dnnl_memory_desc_t *wblk_md = dnnl_primitive_desc_query_md(pd_any,
                                                                     dnnl_query_weights_md, 0);
    s->wblk_bytes = dnnl_memory_desc_get_size(wblk_md);
    s->reordered = !dnnl_memory_desc_equal(wblk_md, &wplain_md);
    DN(dnnl_memory_create(&s->wblk, wblk_md, eng, DNNL_MEMORY_ALLOCATE));
    t0 = now_wall();
    DN(dnnl_reorder_primitive_desc_create(&pd_wr, &wplain_md, eng, wblk_md, eng, NULL));
    DN(dnnl_primitive_create(&wr, pd_wr));
    if (exec2(wr, DNNL_ARG_FROM, s->wplain, DNNL_ARG_TO, s->wblk, -1, NULL) < 0)
        goto cleanup;
    s->reorder_ms = (now_wall() - t0) * 1e3;
    ret = 0;
cleanup:
    dnnl_primitive_destroy(wr);
    dnnl_primitive_desc_destroy(pd_wr);
    dnnl_primitive_desc_destroy(pd_cvt);
    dnnl_primitive_desc_destroy(pd_any);
    dnnl_primitive_desc_destroy(pd_plain);
    return ret;
}

/* Agreement of a against b: max |a - b| / max |b| and relative L2. */
static void agree(const float *a, const float *b, size_t n, double *ret_max, double *ret_l2)
{
    double dmax = 0, bmax = 0, d2 = 0, b2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        dmax = d > dmax ? d : dmax;
        bmax = fabs(b[i]) > bmax ? fabs(b[i]) : bmax;
        d2 += d * d;
        b2 += (double)b[i] * b[i];
    }
    *ret_max = bmax > 0 ? dmax / bmax : dmax;
    *ret_l2 = b2 > 0 ? sqrt(d2 / b2) : sqrt(d2);
    if (isnan(*ret_max) || isnan(*ret_l2))
        *ret_max = *ret_l2 = INFINITY;
}

/* Worst |got - want| / sum|x w| over sampled entries, want a double sum of the rounded inputs. */
static double ref_check(const float *y, const float *x, const uint16_t *w, int T, int in, int out)
{
    uint64_t r = 12345;
    double worst = 0;
    for (int s = 0; s < REF_SAMPLES; s++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int t = (int)((r >> 33) % (uint64_t)T), o = (int)((r >> 17) % (uint64_t)out);
        if (s == 0)
            t = 0, o = 0;
        if (s == 1)
            t = T - 1, o = out - 1;
        double want = 0, mag = 0;
        for (int k = 0; k < in; k++) {
            double xv = vl3__cpu_bf16_to_f32(vl3__cpu_f32_to_bf16(x[(size_t)t * in + k]));
            double p = xv * vl3__cpu_bf16_to_f32(w[(size_t)o * in + k]);
            want += p;
            mag += fabs(p);
        }
        double e = fabs((double)y[(size_t)t * out + o] - want) / (mag > 0 ? mag : 1);
        if (!(e <= worst))
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

struct timing {
    double vl3, dn_cvt, dn_plain, dn_any;
};

static void keep_min(double *best, double v)
{
    *best = v < *best ? v : *best;
}

/* Best-of-reps times at nt threads (cpu: thread CPU time, else wall). Each contender runs its
 * repetitions back to back (its threads stay warm, as in a forward pass), after a 20 ms pause
 * that lets the other's threads stop spinning; the first run of each is a warm-up. */
static int time_shape(void *vctx, struct dn_set *s, int nt, int cpu, int reps, int T, int in,
                      int out, float *y_v, const float *x, const uint16_t *w, void *work,
                      size_t wb, struct timing *ret)
{
    double (*clk)(void) = cpu ? now_cpu : now_wall;
    double *best[4] = {&ret->vl3, &ret->dn_cvt, &ret->dn_plain, &ret->dn_any};
    set_omp_threads(nt);
    for (int who = 0; who < 4; who++) {
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
        *best[who] = 1e30;
        for (int r = 0; r < reps + 1; r++) {
            double t0 = clk();
            int rc = who == 0   ? vl3__cpu_gemm_bf16(vctx, y_v, x, w, T, in, out, 0, -1, work, wb)
                     : who == 1 ? exec2(s->cvt, DNNL_ARG_FROM, s->xf, DNNL_ARG_TO, s->xb, -1, NULL)
                     : who == 2 ? exec2(s->mm_plain, DNNL_ARG_SRC, s->xb, DNNL_ARG_WEIGHTS,
                                        s->wplain, DNNL_ARG_DST, s->y_plain)
                                : exec2(s->mm_any, DNNL_ARG_SRC, s->xb, DNNL_ARG_WEIGHTS, s->wblk,
                                        DNNL_ARG_DST, s->y_any);
            double dt = clk() - t0;
            if (rc < 0)
                return -1;
            if (r > 0)
                keep_min(best[who], dt);
        }
    }
    return 0;
}

static void print_row(int T, int in, int out, int nt, const struct timing *t)
{
    double f = 2.0 * T * in * out / 1e9;
    printf("%5d %5d %5d %2dT %s | vl3 %8.3f ms %7.1f GF/s | dnnl ba %8.3f ms %7.1f GF/s "
           "(+cvt %7.3f ms) %5.2fx | dnnl blk %8.3f ms %7.1f GF/s %5.2fx\n",
           T, in, out, nt, nt == 1 ? "cpu " : "wall", t->vl3 * 1e3, f / t->vl3,
           t->dn_plain * 1e3, f / t->dn_plain, t->dn_cvt * 1e3,
           t->vl3 / (t->dn_plain + t->dn_cvt), t->dn_any * 1e3, f / t->dn_any,
           t->vl3 / (t->dn_any + t->dn_cvt));
}

/* One shape: times at 1 and 2 threads, one-time costs, agreement. 0 ok, 1 disagreement, -1
 * error. */
static int run_shape(void *c1, void *c2, int T, int in, int out, struct timing *best1,
                     struct timing *best2)
{
    int ret = -1;
    struct dn_set s1 = {0}, s2 = {0};
    float *x = alloc64(sizeof(float) * T * in);
    uint16_t *w = alloc64(sizeof(uint16_t) * out * in);
    float *y_v = alloc64(sizeof(float) * T * out), *y_v2 = alloc64(sizeof(float) * T * out);
    float *y_p = alloc64(sizeof(float) * T * out), *y_a = alloc64(sizeof(float) * T * out);
    size_t wb = vl3__cpu_gemm_bf16_work_size(c2, in);
    void *work = alloc64(wb);
    if (!x || !w || !y_v || !y_v2 || !y_p || !y_a || !work) {
        fprintf(stderr, "out of memory\n");
        goto cleanup;
    }
    for (size_t i = 0; i < (size_t)T * in; i++)
        x[i] = (float)urand();
    for (size_t i = 0; i < (size_t)out * in; i++)
        w[i] = vl3__cpu_f32_to_bf16((float)urand() * 0.05f);
    double flops = 2.0 * T * in * out;
    int reps = flops > 5e10 ? 2 : flops > 2e9 ? 4 : flops > 1e8 ? 8 : 30;

    if (dn_set_init(&s1, 1, T, in, out, x, w, y_p, y_a) < 0)
        goto cleanup;
    struct timing t1, t2;
    if (time_shape(c1, &s1, 1, 1, reps, T, in, out, y_v, x, w, work, wb, &t1) < 0)
        goto cleanup;
    print_row(T, in, out, 1, &t1);
    keep_min(&best1->vl3, t1.vl3), keep_min(&best1->dn_cvt, t1.dn_cvt);
    keep_min(&best1->dn_plain, t1.dn_plain), keep_min(&best1->dn_any, t1.dn_any);
    double e_vp[2], e_va[2], e_pa[2], r_v, r_p, r_a;
    agree(y_v, y_p, (size_t)T * out, &e_vp[0], &e_vp[1]);
    agree(y_v, y_a, (size_t)T * out, &e_va[0], &e_va[1]);
    agree(y_p, y_a, (size_t)T * out, &e_pa[0], &e_pa[1]);
    r_v = ref_check(y_v, x, w, T, in, out);
    r_p = ref_check(y_p, x, w, T, in, out);
    r_a = ref_check(y_a, x, w, T, in, out);

    if (dn_set_init(&s2, 2, T, in, out, x, w, y_p, y_a) < 0)
        goto cleanup;
    if (time_shape(c2, &s2, 2, 0, reps, T, in, out, y_v2, x, w, work, wb, &t2) < 0)
        goto cleanup;
    print_row(T, in, out, 2, &t2);
    keep_min(&best2->vl3, t2.vl3), keep_min(&best2->dn_cvt, t2.dn_cvt);
    keep_min(&best2->dn_plain, t2.dn_plain), keep_min(&best2->dn_any, t2.dn_any);
    double e_v12[2], e_p12[2], e_a12[2];
    agree(y_v2, y_v, (size_t)T * out, &e_v12[0], &e_v12[1]);
    agree(y_p, y_v, (size_t)T * out, &e_p12[0], &e_p12[1]);
    agree(y_a, y_v, (size_t)T * out, &e_a12[0], &e_a12[1]);

    printf("      one-time: create %.2f ms (1T) %.2f ms (2T); weights %s: %.1f MB copy, "
           "reorder %.1f ms (2T); x cvt in table\n",
           s1.create_ms, s2.create_ms,
           s2.reordered ? "reordered (blocked layout)" : "same layout as W, no reorder",
           s2.wblk_bytes / 1e6, s2.reorder_ms);
    printf("      impl: ba \"%s\", any \"%s\"\n", s2.impl_plain, s2.impl_any);
    printf("      agreement (max|d|/max, relL2): vl3-dnnl_ba %.2g %.2g, vl3-dnnl_blk %.2g %.2g, "
           "ba-blk %.2g %.2g, 2T vs 1T vl3: vl3 %.2g ba %.2g blk %.2g; vs double (of sum|xw|): "
           "vl3 %.2g ba %.2g blk %.2g\n",
           e_vp[0], e_vp[1], e_va[0], e_va[1], e_pa[0], e_pa[1], e_v12[0], e_p12[0], e_a12[0],
           r_v, r_p, r_a);
    fflush(stdout);
    ret = 0;
    double worst_agree = fmax(fmax(fmax(e_vp[0], e_vp[1]), fmax(e_va[0], e_va[1])),
                              fmax(fmax(e_pa[0], e_v12[0]), fmax(e_p12[0], e_a12[0])));
    double worst_ref = fmax(fmax(r_v, r_p), r_a);
    if (!(worst_agree <= AGREE_TOL) || !(worst_ref <= REF_TOL)) {
        printf("FAIL: %dx%dx%d: disagreement %.3g (limit %.0e), vs double %.3g (limit %.0e)\n",
               T, in, out, worst_agree, AGREE_TOL, worst_ref, REF_TOL);
        ret = 1;
    }
cleanup:
    dn_set_free(&s2);
    dn_set_free(&s1);
    free(work), free(y_a), free(y_p), free(y_v2), free(y_v), free(w), free(x);
    return ret;
}

/* The best of every cell over the rounds, as markdown rows (docs/benchmarks.md). */
static void print_summary(const int (*shapes)[3], int n, const struct timing *b1,
                          const struct timing *b2, int rounds)
{
    printf("\nbest of %d round(s); speed = vl3 time / (oneDNN time + x reorder), < 1: vl3 faster\n"
           "| T x in x out | threads | vl3 ms (GFLOP/s) | oneDNN W in place ms (GFLOP/s) | "
           "x f32->bf16 ms | oneDNN W reordered ms (GFLOP/s) | speed, in place | "
           "speed, reordered |\n|---|---|---|---|---|---|---|---|\n",
           rounds);
    for (int nt = 1; nt <= 2; nt++)
        for (int i = 0; i < n; i++) {
            const struct timing *t = nt == 1 ? &b1[i] : &b2[i];
            double f = 2.0 * shapes[i][0] * shapes[i][1] * shapes[i][2] / 1e9;
            printf("| %d x %d x %d | %d (%s) | %.3f (%.0f) | %.3f (%.0f) | %.3f | %.3f (%.0f) | "
                   "%.2f | %.2f |\n",
                   shapes[i][0], shapes[i][1], shapes[i][2], nt, nt == 1 ? "cpu" : "wall",
                   t->vl3 * 1e3, f / t->vl3, t->dn_plain * 1e3, f / t->dn_plain,
                   t->dn_cvt * 1e3, t->dn_any * 1e3, f / t->dn_any,
                   t->vl3 / (t->dn_plain + t->dn_cvt), t->vl3 / (t->dn_any + t->dn_cvt));
        }
}

int main(int argc, char **argv)
{
    static const int all[][3] = {{391, 1536, 2048}, {391, 1536, 8960}, {391, 8960, 1536},
                                 {378, 1152, 4304}, {512, 4304, 1152}, {7212, 1536, 8960},
                                 {1, 1536, 8960},   {1, 8960, 1536},   {4, 1536, 2048}};
    enum { N_PREFILL = 6, N_ALL = 9 };
    const char *which = argc > 1 ? argv[1] : "all";
    int rounds = argc > 2 ? atoi(argv[2]) : 1;
    int one[1][3] = {{0, 0, 0}}, status = 0, fails = 0;
    const int(*shapes)[3] = all;
    int n = N_ALL;
    struct timing best1[N_ALL], best2[N_ALL];
    void *c1 = NULL, *c2 = NULL;
    if (sscanf(which, "%dx%dx%d", &one[0][0], &one[0][1], &one[0][2]) == 3) {
        if (one[0][0] <= 0 || one[0][1] <= 0 || one[0][2] <= 0) {
            fprintf(stderr, "bad shape \"%s\"\n", which);
            return 2;
        }
        shapes = one, n = 1;
    } else if (!strcmp(which, "selftest")) {
        one[0][0] = 40, one[0][1] = 320, one[0][2] = 320;
        shapes = one, n = 1, rounds = 1;
    } else if (!strcmp(which, "prefill")) {
        n = N_PREFILL;
    } else if (!strcmp(which, "decode")) {
        shapes = all + N_PREFILL, n = N_ALL - N_PREFILL;
    } else if (strcmp(which, "all")) {
        fprintf(stderr, "usage: %s [all | prefill | decode | selftest | TxINxOUT] [rounds]\n",
                argv[0]);
        return 2;
    }
    if (rounds < 1 || rounds > 100) {
        fprintf(stderr, "rounds must be 1..100\n");
        return 2;
    }
    for (int i = 0; i < N_ALL; i++)
        best1[i] = best2[i] = (struct timing){1e30, 1e30, 1e30, 1e30};
    /* libdnnl is built on GNU OpenMP here; its thread count is the caller's OpenMP setting */
    *(void **)&set_omp_threads = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!set_omp_threads) {
        fprintf(stderr, "omp_set_num_threads not found: libdnnl not built on OpenMP?\n");
        return 2;
    }
    const dnnl_version_t *v = dnnl_version();
    printf("oneDNN %d.%d.%d (cpu runtime %u), effective ISA %s (0x%x); vl3 path %s\n", v->major,
           v->minor, v->patch, v->cpu_runtime, isa_name(dnnl_get_effective_cpu_isa()),
           (unsigned)dnnl_get_effective_cpu_isa(), vl3__cpu_isa_name(vl3__cpu_isa()));
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&strm, eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "oneDNN engine or stream creation failed\n");
        status = 2;
        goto cleanup;
    }
    if (ops->init(0, 1, &c1, NULL) < 0 || ops->init(0, 2, &c2, NULL) < 0) {
        fprintf(stderr, "vl3 CPU backend init failed\n");
        status = 2;
        goto cleanup;
    }
    printf("ratio = vl3 time / (oneDNN matmul + x f32->bf16 reorder): > 1 means oneDNN faster\n");
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++) {
            int rc = run_shape(c1, c2, shapes[i][0], shapes[i][1], shapes[i][2], &best1[i],
                               &best2[i]);
            if (rc < 0) {
                status = 2;
                goto cleanup;
            }
            fails += rc;
        }
    if (!strcmp(which, "selftest")) {
        wrong_layout = 1;
        int rc = run_shape(c1, c2, one[0][0], one[0][1], one[0][2], &best1[0], &best2[0]);
        if (rc < 0) {
            status = 2;
            goto cleanup;
        }
        printf("selftest: right layout %s, wrong layout %s\n", fails ? "FAILED" : "agreed",
               rc ? "caught" : "NOT CAUGHT");
        status = fails || !rc ? 1 : 0;
        goto cleanup;
    }
    print_summary(shapes, n, best1, best2, rounds);
    if (fails)
        status = 1;
    printf("%s\n", fails ? "FAIL: results disagree" : "agreement: ok");
cleanup:
    if (c2)
        ops->free(c2);
    if (c1)
        ops->free(c1);
    if (strm)
        dnnl_stream_destroy(strm);
    if (eng)
        dnnl_engine_destroy(eng);
    return status;
}
