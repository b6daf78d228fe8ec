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
 * P V). The roof is the measured TDPBF16PS rate of the same threads. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "cpu_ops.h"
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

/* PyTorch SDPA in bf16 on the same shapes; prints its seconds per case or nothing. */
static int torch_times(const char *python, int threads, int ctx, int frames, int patches,
                       double *ret_llm, double *ret_vis)
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
             "print(a, b)\n"
             "EOF",
             python, threads, ctx, frames, patches);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -errno;
    int n = fscanf(f, "%lf %lf", ret_llm, ret_vis);
    int st = pclose(f);
    return n == 2 && st == 0 ? 0 : -1;
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
                   "(a python with torch, e.g. tools/oracle/.venv-native/bin/python).\n");
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
    double t_lt = 0, t_vt = 0;
    int have_torch = python && torch_times(python, threads, ctxlen, frames, patches, &t_lt,
                                           &t_vt) == 0;
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
    status = CLI_EXIT_OK;
out:
    free(q), free(kp), free(vp), free(out), free(pages), free(wk);
    free(vq), free(vk), free(vv), free(vo), free(cu);
    vl3__backend_cpu_ops.free(ctx);
    return status;
}
