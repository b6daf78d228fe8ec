/* bench_attention.c: `vl3 bench attention`: the CPU backend's attention kernels on the shapes of
 * the 2B model, the f32 path (OpenBLAS sgemm + scalar softmax, attention.c) beside the AMX bf16
 * flash path (attention_amx.c), and PyTorch's scaled_dot_product_attention in bf16 (what
 * transformers runs) when a Python with torch is given.
 *
 *   vl3 bench attention [--threads N] [--ctx N] [--frames N] [--patches N] [--python PATH]
 *
 * Shapes: one LLM layer's causal prefill of --ctx tokens (12 query heads, 2 kv heads, D 128,
 * pages of 256), and one vision layer over --frames frames of --patches patches each (16 heads,
 * D 72, block-diagonal per frame). FLOPs: 4 * H * D per (query, visible key) pair (Q K^T and
 * P V). The roof is the measured TDPBF16PS rate of the same threads.
 *
 * Decode: one query per layer over --ctx cached keys in 28 layers' pools (a decode step of the 2B
 * model; the pools, 0.2 GB in bf16, do not stay in the caches between steps), f32 pools on the
 * sgemm path (bf16 mode before its bf16 KV cache) against bf16 pools on the decode kernel
 * (attention_decode.c), and torch SDPA in bf16 over 28 layers' K and V (enable_gqa: no repeated
 * heads); the bytes of K and V a step reads against its time. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "cpu_ops.h"
#include "model.h"
#include "vl3/util.h"

static float *rand_floats(size_t n, uint64_t seed)
{
    float *v = malloc(n * sizeof(float));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((double)(seed >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
    return v;
}

/* Best of reps runs of fn(arg) in seconds. */
static double best_of(int reps, int (*fn)(void *), void *arg, int *ret_rc)
{
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = vl3_time_s();
        int rc = fn(arg);
        double dt = vl3_time_s() - t0;
        if (rc < 0) {
            *ret_rc = rc;
            return 0;
        }
        best = dt < best ? dt : best;
    }
    return best;
}

struct llm_case {
    void *ctx;
    struct vl3__attn_args a;
};

static int llm_f32(void *p)
{
    struct llm_case *c = p;
    return vl3__cpu_attention_f32(c->ctx, &c->a);
}

static int llm_amx(void *p)
{
    struct llm_case *c = p;
    return vl3__cpu_attention_amx(c->ctx, &c->a);
}

struct vis_case {
    void *ctx;
    const float *q, *k, *v;
    float *out;
    const int64_t *cu;
    int nb, H, D;
};

static int vis_f32(void *p)
{
    struct vis_case *c = p;
    return vl3__cpu_vision_ops.attention_blocks(NULL, c->q, c->k, c->v, c->out, c->cu, c->nb,
                                                 c->H, c->D); /* no context: the f32 path */
}

static int vis_amx(void *p)
{
    struct vis_case *c = p;
    return vl3__cpu_attention_blocks_amx(c->ctx, c->q, c->k, c->v, c->out, c->cu, c->nb, c->H,
                                         c->D);
}

/* A decode step's attention: one query in each of DEC_LAYERS layers over n_past keys. */
#define DEC_LAYERS 28

struct dec_case {
    void *ctx;
    struct vl3__attn_args a;
    void *k[DEC_LAYERS], *v[DEC_LAYERS];
};

static int llm_decode(void *p)
{
    struct dec_case *c = p;
    for (int l = 0; l < DEC_LAYERS; l++) {
        c->a.k_pages = c->k[l], c->a.v_pages = c->v[l];
        int r = vl3__cpu_attention(c->ctx, &c->a);
        if (r < 0)
            return r;
    }
    return 0;
}

/* PyTorch SDPA in bf16 on the same shapes; prints its seconds per case or nothing. */
static int torch_times(const char *python, int threads, int ctx, int frames, int patches,
                       double *ret_llm, double *ret_vis, double *ret_dec)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "'%s' - <<'EOF'\n"
             "import time, torch\n"
             "import torch.nn.functional as F\n"
             "torch.set_num_threads(%d)\n"
             "def best(f, n=3):\n"
             "    b = 1e9\n"
             "    for _ in range(n):\n"
             "        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)\n"
             "    return b\n"
             "T = %d\n"
             "q = torch.randn(1, 12, T, 128, dtype=torch.bfloat16)\n"
             "k = torch.randn(1, 2, T, 128, dtype=torch.bfloat16)\n"
             "v = torch.randn(1, 2, T, 128, dtype=torch.bfloat16)\n"
             "k = k.repeat_interleave(6, dim=1); v = v.repeat_interleave(6, dim=1)\n"
             "a = best(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))\n"
             "q = torch.randn(%d, 16, %d, 72, dtype=torch.bfloat16)\n"
             "k = torch.randn_like(q); v = torch.randn_like(q)\n"
             "b = best(lambda: F.scaled_dot_product_attention(q, k, v))\n"
             "q = torch.randn(1, 12, 1, 128, dtype=torch.bfloat16)\n"
             "kv = [(torch.randn(1, 2, T, 128, dtype=torch.bfloat16),\n"
             "       torch.randn(1, 2, T, 128, dtype=torch.bfloat16)) for _ in range(%d)]\n"
             "c = best(lambda: [F.scaled_dot_product_attention(q, k, v, enable_gqa=True)\n"
             "                  for k, v in kv], 5)\n"
             "print(a, b, c)\n"
             "EOF",
             python, threads, ctx, frames, patches, DEC_LAYERS);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -errno;
    int n = fscanf(f, "%lf %lf %lf", ret_llm, ret_vis, ret_dec);
    int st = pclose(f);
    return n == 3 && st == 0 ? 0 : -1;
}

int bench_attention(int argc, char **argv)
{
    int threads = vl3_cpu_count(), ctxlen = 7212, frames = 16, patches = 1764, reps = 3;
    const char *python = NULL;
    static const struct option opts[] = {{"threads", required_argument, NULL, 't'},
                                         {"ctx", required_argument, NULL, 'c'},
                                         {"frames", required_argument, NULL, 'f'},
                                         {"patches", required_argument, NULL, 'p'},
                                         {"python", required_argument, NULL, 'y'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 't': threads = atoi(optarg); break;
        case 'c': ctxlen = atoi(optarg); break;
        case 'f': frames = atoi(optarg); break;
        case 'p': patches = atoi(optarg); break;
        case 'y': python = optarg; break;
        case 'h':
            printf("usage: vl3 bench attention [--threads N] [--ctx N] [--frames N] "
                   "[--patches N] [--python PATH]\n\n"
                   "One LLM layer's causal prefill of --ctx tokens (2B: 12 heads, 2 kv heads, "
                   "D 128; default 7212,\nthe 16-frame clip's prompt) and one vision layer over "
                   "--frames frames of --patches\npatches (16 heads, D 72; default 16 x 1764): "
                   "f32 sgemm path, AMX bf16 flash path, and\nPyTorch SDPA bf16 with --python "
                   "(a python with torch, e.g. tools/oracle/.venv-native/bin/python).\n"
                   "Then a decode step's attention over --ctx keys in 28 layers: f32 pools "
                   "(sgemm path), bf16 pools\n(decode kernel), torch SDPA bf16.\n");
            return CLI_EXIT_OK;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (threads < 1 || ctxlen < 1 || frames < 1 || patches < 1) {
        fprintf(stderr, "vl3 bench attention: sizes and threads must be positive\n");
        return CLI_EXIT_USAGE;
    }
    if (!vl3__cpu_amx_available()) {
        fprintf(stderr, "vl3 bench attention: this CPU (or kernel) has no AMX-BF16; nothing to "
                        "compare\n");
        return CLI_EXIT_FAIL;
    }
    void *ctx = NULL;
    if (vl3__backend_cpu_ops.init(0, threads, &ctx, NULL) < 0)
        return CLI_EXIT_FAIL;
    int rc = 0, status = CLI_EXIT_FAIL;
    /* LLM: one sequence, pages of 256 in order */
    int H = 12, Hkv = 2, D = 128, ps = 256, qstride = (H + 2 * Hkv) * D, kvd = Hkv * D;
    int n_pages = (ctxlen + ps - 1) / ps;
    float *q = rand_floats((size_t)ctxlen * qstride, 1);
    float *kp = rand_floats((size_t)n_pages * ps * kvd, 2), *vp = rand_floats((size_t)n_pages * ps * kvd, 3);
    float *out = malloc(sizeof(float) * (size_t)ctxlen * H * D);
    int32_t *pages = malloc(sizeof(int32_t) * (size_t)n_pages);
    size_t work = vl3__cpu_attention_work_size(ctx, ctxlen, ctxlen, H);
    void *wk = malloc(work);
    /* vision */
    int VH = 16, VD = 72, P = frames * patches;
    float *vq = rand_floats((size_t)P * VH * VD, 4), *vk = rand_floats((size_t)P * VH * VD, 5);
    float *vv = rand_floats((size_t)P * VH * VD, 6), *vo = malloc(sizeof(float) * (size_t)P * VH * VD);
    int64_t *cu = malloc(sizeof(int64_t) * (size_t)(frames + 1));
    if (!q || !kp || !vp || !out || !pages || !wk || !vq || !vk || !vv || !vo || !cu) {
        fprintf(stderr, "vl3 bench attention: out of memory\n");
        goto out;
    }
    for (int i = 0; i < n_pages; i++)
        pages[i] = i;
    for (int f = 0; f <= frames; f++)
        cu[f] = (int64_t)f * patches;
    struct vl3__attn_seq sq = {0, ctxlen, 0, pages};
    struct llm_case lc = {ctx, {.out = out, .q = q, .q_stride = qstride, .out_stride = H * D,
                                .n_heads = H, .n_kv_heads = Hkv, .head_dim = D,
                                .scale = 1.0f / sqrtf((float)D), .k_pages = kp, .v_pages = vp,
                                .page_size = ps, .seqs = &sq, .n_seqs = 1, .work = wk,
                                .work_bytes = work}};
    struct vis_case vc = {ctx, vq, vk, vv, vo, cu, frames, VH, VD};
    double llm_flops = 4.0 * H * D * ((double)ctxlen * (ctxlen + 1) / 2);
    double vis_flops = 4.0 * VH * VD * (double)patches * patches * frames;
    double roof = vl3__cpu_amx_peak_gflops(threads);
    double t_lf = best_of(reps, llm_f32, &lc, &rc), t_la = best_of(reps, llm_amx, &lc, &rc);
    double t_vf = best_of(reps, vis_f32, &vc, &rc), t_va = best_of(reps, vis_amx, &vc, &rc);
    if (rc < 0) {
        fprintf(stderr, "vl3 bench attention: kernel failed: %s\n", strerror(-rc));
        goto out;
    }
    /* decode: f32 pools then bf16 pools, 28 layers each, bf16 mode (its thread split) */
    double t_dec[2] = {0, 0};
    vl3__cpu_set_precision(ctx, VL3__CPU_PREC_BF16);
    size_t dwork = vl3__cpu_attention_work_size(ctx, 1, ctxlen, H);
    void *dwk = malloc(dwork);
    struct vl3__attn_seq dsq = {0, 1, ctxlen - 1, pages};
    struct dec_case dc = {ctx, {.out = out, .q = q, .q_stride = qstride, .out_stride = H * D,
                                .n_heads = H, .n_kv_heads = Hkv, .head_dim = D,
                                .scale = 1.0f / sqrtf((float)D), .page_size = ps, .seqs = &dsq,
                                .n_seqs = 1, .work = dwk, .work_bytes = dwork}, {0}, {0}};
    size_t nel = (size_t)n_pages * ps * kvd;
    for (int bf = 0; bf < 2 && dwk && rc == 0; bf++) {
        dc.a.kv_dtype = bf ? VL3__DTYPE_BF16 : VL3__DTYPE_F32;
        int ok = 1;
        for (int l = 0; l < DEC_LAYERS; l++) {
            dc.k[l] = malloc(nel * (bf ? 2 : 4)), dc.v[l] = malloc(nel * (bf ? 2 : 4));
            ok &= dc.k[l] && dc.v[l];
            for (size_t i = 0; ok && i < nel; i++) { /* the prefill pools' values */
                if (bf) {
                    ((uint16_t *)dc.k[l])[i] = vl3__cpu_f32_to_bf16(kp[i]);
                    ((uint16_t *)dc.v[l])[i] = vl3__cpu_f32_to_bf16(vp[i]);
                } else {
                    ((float *)dc.k[l])[i] = kp[i], ((float *)dc.v[l])[i] = vp[i];
                }
            }
        }
        if (ok)
            t_dec[bf] = best_of(reps + 2, llm_decode, &dc, &rc);
        for (int l = 0; l < DEC_LAYERS; l++)
            free(dc.k[l]), free(dc.v[l]), dc.k[l] = dc.v[l] = NULL;
        if (!ok) {
            fprintf(stderr, "vl3 bench attention: out of memory for the decode pools\n");
            rc = -ENOMEM;
        }
    }
    free(dwk);
    if (rc < 0) {
        fprintf(stderr, "vl3 bench attention: decode failed: %s\n", strerror(-rc));
        goto out;
    }
    double t_lt = 0, t_vt = 0, t_dt = 0;
    int have_torch = python && torch_times(python, threads, ctxlen, frames, patches, &t_lt,
                                           &t_vt, &t_dt) == 0;
    if (python && !have_torch)
        fprintf(stderr, "vl3 bench attention: %s could not run torch SDPA; column left out\n",
                python);
    printf("attention, %d threads; AMX TDPBF16PS roof %.0f GFLOP/s (measured)\n", threads, roof);
    printf("%-34s %10s %10s %10s %8s %8s%s\n", "case", "f32 ms", "amx ms", "GFLOP/s", "amx/f32",
           "% roof", have_torch ? "   torch ms  amx/torch" : "");
    const char *names[2] = {"LLM layer prefill", "vision layer"};
    char label[2][64];
    snprintf(label[0], sizeof(label[0]), "%s (%d tokens)", names[0], ctxlen);
    snprintf(label[1], sizeof(label[1]), "%s (%dx%d patches)", names[1], frames, patches);
    double tf[2] = {t_lf, t_vf}, ta[2] = {t_la, t_va}, tt[2] = {t_lt, t_vt};
    double fl[2] = {llm_flops, vis_flops};
    for (int i = 0; i < 2; i++) {
        printf("%-34s %10.1f %10.1f %10.0f %7.2fx %7.1f%%", label[i], tf[i] * 1e3, ta[i] * 1e3,
               fl[i] / ta[i] / 1e9, tf[i] / ta[i], roof > 0 ? 100 * fl[i] / ta[i] / 1e9 / roof : 0);
        if (have_torch)
            printf(" %10.1f %9.2fx", tt[i] * 1e3, tt[i] / ta[i]);
        printf("\n");
    }
    double kv_bytes = 2.0 * DEC_LAYERS * ctxlen * kvd * 2; /* bf16 K and V */
    printf("\nLLM decode step: %d layers x %d keys   f32 pools (sgemm path) %.1f ms   bf16 pools "
           "(decode kernel) %.1f ms, %.1f GB/s of K/V   %.2fx", DEC_LAYERS, ctxlen,
           t_dec[0] * 1e3, t_dec[1] * 1e3, kv_bytes / t_dec[1] / 1e9, t_dec[0] / t_dec[1]);
    if (have_torch)
        printf("   torch SDPA bf16 %.1f ms (%.2fx)", t_dt * 1e3, t_dt / t_dec[1]);
    printf("\n");
    status = CLI_EXIT_OK;
out:
    free(q), free(kp), free(vp), free(out), free(pages), free(wk);
    free(vq), free(vk), free(vv), free(vo), free(cu);
    vl3__backend_cpu_ops.free(ctx);
    return status;
}
