/* bench_gpu.c: `vl3 bench gpu`: the CUDA backend's speed on a checkpoint (a full-size random 2B
 * from `vl3 model tiny --size 2b` on a GPU machine), each phase beside its floor.
 *
 *   vl3 bench gpu --model DIR [--backend cuda|cuda-emu] [--frames N] [--prompt-tokens N]
 *                 [--gen-tokens N] [--batches 1,8,32,128] [--limit-size N]
 *
 * The device's own limits are measured first through the backend vtable: the bf16 matrix
 * product rate (a limit-size^2 weight times limit-size rows, fp32 accumulation) and the copy
 * bandwidth (copy_rows of a large buffer, read + write). Then: the vision encoder on --frames
 * frames of 14x24 patches (a 1080p frame at 180 frames' budget), patches/s; a prefill of
 * --prompt-tokens, tokens/s; decode steps at each batch size, tokens/s over all sequences.
 * Floors: FLOPs (spec §12: 2 per weight per token or patch, 4 x ctx x H x D per layer for
 * attention) over the measured product rate; decode bytes (the weights once per step, the K and
 * V rows read) over the measured copy bandwidth. "3-min windows/s" composes the measured phases
 * for a 180-frame window (vision of 180 frames, prefill of their tokens after merge, 64 decoded
 * tokens), so it is an estimate, labelled as such. The official implementation's figures come
 * from tools/gpu-check beside this table. With --backend cuda-emu (no GPU) the same code runs on
 * the host emulator: slow, for checking the benchmark itself on a tiny model. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "model.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define MAX_BATCHES 8

/* Device limits through the backend vtable: ret_flops (bf16 product, FLOP/s) and ret_bw (copy,
 * bytes/s read + written). n: the product's size (n x n weight, n rows). */
static int device_limits(vl3_model *m, int n, double *ret_flops, double *ret_bw, vl3_error *err)
{
    const vl3__backend_ops *ops = m->ops;
    void *bc = m->backend_ctx;
    int act = ops->act_dtype(bc);
    size_t ab = act == VL3__DTYPE_F32 ? 4 : 2;
    size_t wbytes = ops->weight_bytes(bc, (size_t)n * n), xbytes = (size_t)n * n * ab;
    size_t work = ops->matmul_work_size(bc, n);
    void *w = NULL, *x = NULL, *y = NULL, *wk = NULL, *big = NULL;
    float *host = malloc(sizeof(float) * (size_t)n * n);
    int r = host ? 0 : -ENOMEM;
    for (size_t i = 0; host && i < (size_t)n * n; i++)
        host[i] = (float)((i * 2654435761u % 1000) / 1000.0 - 0.5);
    if (r == 0 && (r = ops->alloc(bc, wbytes, &w, err)) == 0 &&
        (r = ops->alloc(bc, xbytes, &x, err)) == 0 && (r = ops->alloc(bc, xbytes, &y, err)) == 0 &&
        (r = ops->alloc(bc, work ? work : 16, &wk, err)) == 0)
        r = ops->weight_convert(bc, w, host, VL3__DTYPE_F32, (size_t)n * n);
    if (r == 0) /* activations: whatever bytes; only the rate matters */
        r = ops->upload(bc, x, host, xbytes);
    int reps = 5;
    if (r == 0 && (r = ops->matmul(bc, y, x, w, NULL, n, n, n, 0, wk, work)) == 0 &&
        (r = ops->synchronize(bc)) == 0) {
        double t0 = vl3_time_s();
        for (int i = 0; r == 0 && i < reps; i++)
            r = ops->matmul(bc, y, x, w, NULL, n, n, n, 0, wk, work);
        if (r == 0 && (r = ops->synchronize(bc)) == 0)
            *ret_flops = 2.0 * n * (double)n * n * reps / (vl3_time_s() - t0);
    }
    /* copy bandwidth: 16 x the product's activations, rows of 64 KiB */
    size_t rows = 16 * xbytes / 65536;
    if (rows < 16)
        rows = 16;
    size_t bytes = rows * 65536;
    if (r == 0 && (r = ops->alloc(bc, 2 * bytes, &big, err)) == 0 &&
        (r = ops->copy_rows(bc, (char *)big + bytes, 65536, big, 65536, (int)rows, 65536)) == 0 &&
        (r = ops->synchronize(bc)) == 0) {
        double t0 = vl3_time_s();
        for (int i = 0; r == 0 && i < reps; i++)
            r = ops->copy_rows(bc, (char *)big + bytes, 65536, big, 65536, (int)rows, 65536);
        if (r == 0 && (r = ops->synchronize(bc)) == 0)
            *ret_bw = 2.0 * bytes * reps / (vl3_time_s() - t0);
    }
    ops->dealloc(bc, big);
    ops->dealloc(bc, wk);
    ops->dealloc(bc, y);
    ops->dealloc(bc, x);
    ops->dealloc(bc, w);
    free(host);
    if (r < 0 && !err->msg[0])
        vl3_error_set(err, r, "measuring the device's limits failed");
    return r;
}

static int parse_batches(const char *s, int *b, int *n)
{
    *n = 0;
    while (*s && *n < MAX_BATCHES) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096)
            return -EINVAL;
        b[(*n)++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -EINVAL;
    }
    return *n > 0 ? 0 : -EINVAL;
}

int bench_gpu(int argc, char **argv)
{
    const char *model_dir = NULL, *backend = "cuda";
    int frames = 16, n_prompt = 512, n_gen = 32, limit = 4096, batches[MAX_BATCHES], n_b = 4;
    batches[0] = 1, batches[1] = 8, batches[2] = 32, batches[3] = 128;
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"backend", required_argument, NULL, 'b'},
                                         {"frames", required_argument, NULL, 'f'},
                                         {"prompt-tokens", required_argument, NULL, 'p'},
                                         {"gen-tokens", required_argument, NULL, 'g'},
                                         {"batches", required_argument, NULL, 'B'},
                                         {"limit-size", required_argument, NULL, 'L'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case 'm': model_dir = optarg; break;
        case 'b': backend = optarg; break;
        case 'f': bad = (frames = atoi(optarg)) < 1; break;
        case 'p': bad = (n_prompt = atoi(optarg)) < 1; break;
        case 'g': bad = (n_gen = atoi(optarg)) < 1; break;
        case 'L': bad = (limit = atoi(optarg)) < 16; break;
        case 'B': bad = parse_batches(optarg, batches, &n_b) < 0; break;
        case 'h':
            printf("usage: vl3 bench gpu --model DIR [--backend cuda|cuda-emu] [--frames N]\n"
                   "                     [--prompt-tokens N] [--gen-tokens N] "
                   "[--batches 1,8,32,128] [--limit-size N]\n\n"
                   "Vision patches/s, prefill and decode tokens/s (per batch size) of a model on "
                   "the CUDA backend,\neach beside its floor from the device's measured product "
                   "rate and copy bandwidth.\nA full-size random 2B: vl3 model tiny --size 2b "
                   "--layout native --out DIR.\n--backend cuda-emu runs it on the host emulator "
                   "(slow: use a tiny model and small sizes).\n");
            return CLI_EXIT_OK;
        default: return CLI_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "vl3 bench gpu: invalid value \"%s\"\n", optarg);
            return CLI_EXIT_USAGE;
        }
    }
    int kind = vl3_backend_kind_parse(backend);
    if (!model_dir || (kind != VL3_BACKEND_CUDA && kind != VL3_BACKEND_CUDA_EMU)) {
        fprintf(stderr, "vl3 bench gpu: --model DIR is required and --backend is cuda or "
                        "cuda-emu\n");
        return CLI_EXIT_USAGE;
    }
    int ret = CLI_EXIT_FAIL, r;
    vl3_error err = {0};
    vl3_model *m = NULL;
    vl3_vision *v = NULL;
    vl3_ctx *ctx = NULL;
    int32_t *ids = NULL, *tok = NULL;
    int *seqs = NULL;
    float *pix = NULL, *vout = NULL;
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = model_dir;
    mp.backend = (enum vl3_backend_kind)kind;
    double t0 = vl3_time_s();
    if ((r = vl3_model_load(&mp, &m, &err)) < 0) {
        fprintf(stderr, "vl3 bench gpu: could not load the model on %s: %s\n", backend,
                vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    double load_s = vl3_time_s() - t0;
    vl3_model_info in;
    vl3_model_get_info(m, &in);
    char dev[256] = "";
    m->ops->device_name(mp.device, dev, sizeof(dev));
    double peak = 0, bw = 0;
    if ((r = device_limits(m, limit, &peak, &bw, &err)) < 0)
        goto fail;

    /* vision: frames of 14 x 24 patches, merge 2 */
    int gh = 14, gw = 24, P = frames * gh * gw;
    vl3_vision_grid g = {frames, gh, gw, 2};
    vl3_pixel_batch b = {0};
    b.n_patches = P;
    b.patch_dim = 588;
    b.n_items = 1;
    b.grids = &g;
    pix = malloc(sizeof(float) * (size_t)P * 588);
    vout = malloc(sizeof(float) * (size_t)(P / 4) * in.llm_hidden);
    if (!pix || !vout)
        goto oom;
    for (size_t i = 0; i < (size_t)P * 588; i++)
        pix[i] = (float)((i * 2654435761u) % 255) / 127.5f - 1.0f;
    b.pixel_values = pix;
    if ((r = vl3_vision_new(m, 0, &v, &err)) < 0 ||
        (r = vl3_vision_encode(v, &b, NULL, vout, &err)) < 0) /* warm-up */
        goto fail;
    t0 = vl3_time_s();
    if ((r = vl3_vision_encode(v, &b, NULL, vout, &err)) < 0)
        goto fail;
    double vis_s = vl3_time_s() - t0;
    double Cv = in.vision_hidden, Lv = in.vision_layers;
    /* the encoder layers, the patch embedding and the projector */
    double vis_params = bench_vision_matrix_params(&in) + 588 * Cv +
                        (Cv * 4) * in.llm_hidden + (double)in.llm_hidden * in.llm_hidden;
    double n_blk = (double)gh * gw;
    double vis_flop = 2 * vis_params * P + Lv * 4 * Cv * n_blk * n_blk * frames;

    /* prefill and decode */
    double C = in.llm_hidden, HD = (double)in.llm_heads * in.llm_head_dim;
    double KVD = (double)in.llm_kv_heads * in.llm_head_dim;
    double V = in.vocab_rows, L = in.llm_layers;
    double mm_params = bench_llm_matrix_params(&in);
    double flop_tok = 2 * mm_params, flop_att = 4 * L * HD;
    int max_b = 1;
    for (int i = 0; i < n_b; i++)
        max_b = batches[i] > max_b ? batches[i] : max_b;
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = n_prompt + n_gen;
    cp.n_seq = max_b;
    cp.n_batch = n_prompt;
    ids = malloc(sizeof(int32_t) * (size_t)(n_prompt + n_gen));
    tok = malloc(sizeof(int32_t) * (size_t)max_b);
    seqs = malloc(sizeof(int) * (size_t)max_b);
    if (!ids || !tok || !seqs)
        goto oom;
    uint64_t x = 12345;
    for (int i = 0; i < n_prompt + n_gen; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)V);
    }
    if ((r = vl3_ctx_new(m, &cp, &ctx, &err)) < 0 ||
        (r = vl3_prefill(ctx, 0, ids, n_prompt < 8 ? n_prompt : 8, NULL, NULL, &err)) < 0)
        goto fail;
    vl3_ctx_reset(ctx);
    t0 = vl3_time_s();
    if ((r = vl3_prefill(ctx, 0, ids, n_prompt, NULL, NULL, &err)) < 0)
        goto fail;
    double pre_s = vl3_time_s() - t0;
    double pre_flop = flop_tok * n_prompt + 2 * V * C +
                      flop_att * ((double)n_prompt * (n_prompt + 1) / 2);

    printf("vl3 bench gpu: %s on %s (%s), load %.2f s\n", model_dir, backend, dev, load_s);
    printf("device limits: bf16 product %.3g TFLOP/s (%dx%d weight, %d rows); copy %.1f GB/s "
           "(read + write)\n\n", peak / 1e12, limit, limit, limit, bw / 1e9);
    printf("%-22s %10s %12s %12s %12s %10s\n", "phase", "time_s", "rate", "unit", "floor",
           "of_floor");
    double vis_floor = peak > 0 ? vis_flop / peak : 0;
    printf("%-22s %10.4f %12.1f %12s %12.1f %9.1f%%\n", "vision encoder", vis_s, P / vis_s,
           "patches/s", vis_floor > 0 ? P / vis_floor : 0, vis_floor > 0 ? 100 * vis_floor / vis_s : 0);
    double pre_floor = peak > 0 ? pre_flop / peak : 0;
    printf("%-22s %10.4f %12.1f %12s %12.1f %9.1f%%\n", "prefill", pre_s, n_prompt / pre_s,
           "tokens/s", pre_floor > 0 ? n_prompt / pre_floor : 0,
           pre_floor > 0 ? 100 * pre_floor / pre_s : 0);
    double dec_b1_s = 0;
    for (int bi = 0; bi < n_b; bi++) {
        int B = batches[bi];
        vl3_ctx_reset(ctx);
        int bp = n_prompt < 16 ? n_prompt : 16;
        for (int s = 0; s < B; s++) {
            seqs[s] = s;
            if ((r = vl3_prefill(ctx, s, ids + s % 4, bp, NULL, NULL, &err)) < 0)
                goto fail;
        }
        t0 = vl3_time_s();
        for (int i = 0; i < n_gen; i++) {
            for (int s = 0; s < B; s++)
                tok[s] = ids[(s + i) % (n_prompt + n_gen)];
            if ((r = vl3_decode_step(ctx, seqs, tok, B, NULL, &err)) < 0)
                goto fail;
        }
        double dt = vl3_time_s() - t0;
        if (B == 1)
            dec_b1_s = dt / n_gen;
        /* a step reads every weight once (bf16) and each sequence's K and V (bf16) */
        double step_bytes = (mm_params + V * C) * 2 + B * 2 * L * KVD * (bp + n_gen / 2.0) * 2;
        double step_flop = B * (flop_tok + 2 * V * C + flop_att * (bp + n_gen / 2.0));
        double floor_s = fmax(bw > 0 ? step_bytes / bw : 0, peak > 0 ? step_flop / peak : 0);
        char name[32];
        snprintf(name, sizeof(name), "decode batch %d", B);
        printf("%-22s %10.4f %12.1f %12s %12.1f %9.1f%%\n", name, dt, B * n_gen / dt, "tokens/s",
               floor_s > 0 ? B / floor_s : 0, floor_s > 0 ? 100 * floor_s * n_gen / dt : 0);
    }
    /* a 3-minute window at 1 fps: 180 frames, their tokens after the 2x2 merge, 64 new tokens */
    double win_vis = vis_s * 180.0 / frames, win_tokens = 180.0 * gh * gw / 4;
    double win_pre = pre_s * win_tokens / n_prompt; /* linear: attention's growth left out */
    double win_s = win_vis + win_pre + 64 * dec_b1_s;
    printf("%-22s %10.4f %12.3f %12s %12s %10s\n", "3-min window (est.)", win_s, 1 / win_s,
           "windows/s", "-", "-");
    printf("\n(3-min window: composed from the phases above for 180 frames of %dx%d patches, "
           "%.0f prompt tokens at the measured prefill rate (attention's growth with length left "
           "out, so optimistic), 64 greedy tokens at batch 1: an estimate, not a measurement)\n",
           gh, gw, win_tokens);
    ret = CLI_EXIT_OK;
    goto out;
oom:
    r = vl3_error_set(&err, -ENOMEM, "out of memory");
fail:
    fprintf(stderr, "vl3 bench gpu: %s\n", vl3_error_text(&err, r));
out:
    free(ids), free(tok), free(seqs), free(pix), free(vout);
    vl3_ctx_free(ctx);
    vl3_vision_free(v);
    vl3_model_free(m);
    return ret;
}
