/* bench_llm.c: `vl3 bench llm`: prefill and decode speed of the LLM on the CPU backend, set
 * against the hardware bounds.
 *
 *   vl3 bench llm (--model DIR | --random-2b) [--prompt-tokens N] [--gen-tokens N]
 *                 [--threads N] [--layers N]
 *
 * Prefill: tokens/s and achieved GFLOP/s (spec §12: 2 FLOPs per matmul parameter per token,
 * 4 * ctx * H * D per layer per token for attention, the lm_head once). Decode: tokens/s beside
 * the memory-traffic floor per token: every matmul weight is read once per token (in the
 * backend's weight format: bf16 on the CPU) plus the K and V cache up to the current position;
 * divided by a measured read bandwidth (threaded streaming sum over a buffer much larger than
 * the caches; the best of scalar sums and AVX-512 loads with and without prefetch, see
 * bench_cpu.c) it gives the best-possible tokens/s. The CPU backend keeps weights in bf16 (2 bytes
 * each) and the KV cache in bf16 in its bf16 mode (VL3_PRECISION=bf16), f32 otherwise.
 * The floor's bandwidth is the higher of probes before and after the runs, each seconds apart
 * from most decode steps; on a shared host the rate moves by 20-40% within minutes. So after the
 * timed decode, --gen-tokens more tokens run in windows of PAIR_TOKENS between single read
 * passes, and each window is set against the floor of the higher pass around it: the median of
 * those ratios says how close the decode kernels come to the memory at that moment, where
 * of_floor also carries the host's drift. (One pass is not the best of several: this ratio leans
 * high by the spread of single passes, a few percent; of_floor stays the conservative figure.)
 * --random-2b builds the 2B LLM shape with random weights in memory (about 3.1 GB of bf16
 * weights); --layers N keeps only N of its 28 layers (and scales nothing: the table says so). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cpu_ops.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define BW_BYTES ((size_t)1 << 30) /* 1 GiB: far beyond any cache */
#define PAIR_TOKENS 8   /* decode tokens per paired window */
#define PAIR_MAX 256    /* windows at most */

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 bench llm (--model DIR | --random-2b) [options]\n\n"
               "Prefill and decode tokens/s on the CPU backend, with FLOP/s and the\n"
               "memory-traffic floor of a decode step.\n\n"
               "  --model DIR          checkpoint directory\n"
               "  --random-2b          the 2B LLM shape with random weights (~3.1 GB bf16)\n"
               "  --layers N           with --random-2b: keep N layers (default 28)\n"
               "  --prompt-tokens N    prefill length (default 128)\n"
               "  --gen-tokens N       decode steps (default 32)\n"
               "  --threads N          CPU threads (default: all)\n"
               "  --batch B            also time decode steps of B sequences at once\n"
               "  -h, --help           this help\n");
}

static int parse_pos(const char *s, int *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 1 << 20)
        return -EINVAL;
    *ret = (int)v;
    return 0;
}

int bench_llm(int argc, char **argv)
{
    const char *model_dir = NULL;
    int random_2b = 0, layers = 0, n_prompt = 128, n_gen = 32, threads = 0, batch = 1;
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'}, {"random-2b", no_argument, NULL, 'r'},
        {"layers", required_argument, NULL, 'L'}, {"prompt-tokens", required_argument, NULL, 'p'},
        {"gen-tokens", required_argument, NULL, 'g'}, {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'r': random_2b = 1; break;
        case 'L': bad = parse_pos(optarg, &layers); break;
        case 'p': bad = parse_pos(optarg, &n_prompt); break;
        case 'g': bad = parse_pos(optarg, &n_gen); break;
        case 't': bad = parse_pos(optarg, &threads); break;
        case 'b': bad = parse_pos(optarg, &batch); break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default:
            fprintf(stderr, "vl3 bench llm: unknown option \"%s\"\n", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "vl3 bench llm: invalid value \"%s\"\n", optarg);
            return CLI_EXIT_USAGE;
        }
    }
    if (!model_dir == !random_2b) {
        fprintf(stderr, "vl3 bench llm: give exactly one of --model DIR and --random-2b\n");
        return CLI_EXIT_USAGE;
    }
    if (threads == 0)
        threads = vl3_cpu_count();

    int ret = CLI_EXIT_FAIL, r;
    vl3_error err = {0};
    vl3_model *m = NULL;
    vl3_ctx *ctx = NULL;
    int32_t *ids = NULL;
    /* the floor's read bandwidth: probed before the runs and after them, the higher */
    struct bench_bw bwp = {0};
    bench_bw_probe(&bwp, threads, BW_BYTES);
    double t0 = vl3_time_s();
    vl3_llm_shape sh;
    if (random_2b) {
        sh = vl3_llm_shape_2b();
        if (layers)
            sh.n_layers = layers;
        r = vl3_model_new_random(&sh, 1, threads, &m, &err);
    } else {
        vl3_model_params mp = vl3_model_params_default();
        mp.dir = model_dir;
        mp.n_threads = threads;
        mp.backend = VL3_BACKEND_CPU;
        r = vl3_model_load(&mp, &m, &err);
    }
    if (r < 0) {
        fprintf(stderr, "vl3 bench llm: could not load the model: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    double load_s = vl3_time_s() - t0;
    if (!random_2b) {
        vl3_model_info info;
        vl3_model_get_info(m, &info);
        sh = (vl3_llm_shape){.hidden = info.llm_hidden, .n_layers = info.llm_layers,
                             .n_heads = info.llm_heads, .n_kv_heads = info.llm_kv_heads,
                             .head_dim = info.llm_head_dim, .intermediate = info.llm_intermediate,
                             .vocab = info.vocab_rows, .max_positions = info.max_positions,
                             .tied = info.tied_lm_head};
    }
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = n_prompt + 2 * n_gen; /* the timed decode, then the paired windows */
    cp.n_batch = n_prompt;
    if ((r = vl3_ctx_new(m, &cp, &ctx, &err)) < 0) {
        fprintf(stderr, "vl3 bench llm: could not create a context: %s\n",
                vl3_error_text(&err, r));
        goto out;
    }
    ids = malloc(sizeof(int32_t) * (size_t)(n_prompt + 2 * n_gen));
    if (!ids)
        goto out;
    uint64_t x = 12345;
    for (int i = 0; i < n_prompt + 2 * n_gen; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)sh.vocab);
    }

    /* warm-up (page faults of the arena, BLAS thread start), then the timed runs */
    if ((r = vl3_prefill(ctx, 0, ids, n_prompt < 8 ? n_prompt : 8, NULL, NULL, &err)) < 0)
        goto fail_run;
    vl3_ctx_reset(ctx);
    t0 = vl3_time_s();
    if ((r = vl3_prefill(ctx, 0, ids, n_prompt, NULL, NULL, &err)) < 0)
        goto fail_run;
    double prefill_s = vl3_time_s() - t0;
    int seq = 0;
    t0 = vl3_time_s();
    for (int i = 0; i < n_gen; i++)
        if ((r = vl3_decode_step(ctx, &seq, &ids[n_prompt + i], 1, NULL, &err)) < 0)
            goto fail_run;
    double decode_s = vl3_time_s() - t0;

    /* paired windows: n_gen more tokens in windows of PAIR_TOKENS between read passes (the most
     * prefetching method over 1 GiB in 2 MiB pages), each window against the higher of the
     * passes just before and just after it: a bandwidth measured within a fraction of a second
     * of the window, where the floor's probes above are seconds to minutes away from most
     * steps and may miss the host's slow or fast moments */
    struct bench_reader rd;
    int n_pair = 0;
    double pair_s[PAIR_MAX], pair_bw[PAIR_MAX], pair_pos[PAIR_MAX];
    int pair_n[PAIR_MAX];
    if (bench_reader_open(&rd, threads, BW_BYTES) == 0) {
        double before = bench_reader_pass(&rd);
        for (int i0 = 0; i0 < n_gen && n_pair < PAIR_MAX; i0 += PAIR_TOKENS) {
            int n = n_gen - i0 < PAIR_TOKENS ? n_gen - i0 : PAIR_TOKENS;
            t0 = vl3_time_s();
            for (int i = i0; i < i0 + n; i++)
                if ((r = vl3_decode_step(ctx, &seq, &ids[n_prompt + n_gen + i], 1, NULL,
                                         &err)) < 0) {
                    bench_reader_close(&rd);
                    goto fail_run;
                }
            pair_s[n_pair] = vl3_time_s() - t0;
            double after = bench_reader_pass(&rd);
            pair_bw[n_pair] = after > before ? after : before; /* the passes around it */
            before = after;
            pair_n[n_pair] = n;
            pair_pos[n_pair] = n_prompt + n_gen + i0 + (n + 1) / 2.0; /* average context */
            n_pair++;
        }
        bench_reader_close(&rd);
    }

    /* batched decode: B sequences with short prompts, one decode step advances all of them */
    double batch_s = 0;
    int b_prompt = n_prompt < 16 ? n_prompt : 16;
    if (batch > 1) {
        vl3_ctx *bctx = NULL;
        vl3_ctx_params bp = vl3_ctx_params_default();
        bp.n_ctx = b_prompt + n_gen;
        bp.n_seq = batch;
        bp.n_batch = b_prompt;
        int *seqs = malloc(sizeof(int) * (size_t)batch);
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)batch);
        r = seqs && tok ? vl3_ctx_new(m, &bp, &bctx, &err) : -ENOMEM;
        for (int b = 0; r >= 0 && b < batch; b++) {
            seqs[b] = b;
            r = vl3_prefill(bctx, b, ids + b % 4, b_prompt, NULL, NULL, &err);
        }
        t0 = vl3_time_s();
        for (int i = 0; r >= 0 && i < n_gen; i++) {
            for (int b = 0; b < batch; b++)
                tok[b] = ids[(b + i) % (n_prompt + n_gen)];
            r = vl3_decode_step(bctx, seqs, tok, batch, NULL, &err);
        }
        batch_s = vl3_time_s() - t0;
        vl3_ctx_free(bctx);
        free(seqs);
        free(tok);
        if (r < 0)
            goto fail_run;
    }

    /* FLOPs and bytes (spec §12) */
    double C = sh.hidden, HD = (double)sh.n_heads * sh.head_dim;
    double KVD = (double)sh.n_kv_heads * sh.head_dim, I = sh.intermediate, V = sh.vocab;
    double L = sh.n_layers;
    double mm_params = L * (C * HD + 2 * C * KVD + HD * C + 3 * C * I);
    double flop_tok = 2 * mm_params;                          /* per token, no attention */
    double flop_head = 2 * V * C;                             /* lm_head, per logits row */
    double flop_att_tok = 4 * L * HD;                         /* times the context length */
    double prefill_flop = flop_tok * n_prompt + flop_head +
                          flop_att_tok * ((double)n_prompt * (n_prompt + 1) / 2);
    double avg_ctx = n_prompt + (n_gen + 1) / 2.0;
    double w_bytes_f32 = (mm_params + V * C) * 4, w_bytes_bf16 = (mm_params + V * C) * 2;
    /* K and V read: bf16 pools in the CPU's bf16 mode, f32 otherwise (VL3_PRECISION) */
    const char *prec = getenv("VL3_PRECISION");
    int kv_bf16 = vl3__cpu_precision_parse(prec && *prec ? prec : "f32") == VL3__CPU_PREC_BF16;
    double kv_bytes_pos = 2 * L * KVD * (kv_bf16 ? 2 : 4); /* K and V of one position */
    double kv_bytes_tok = kv_bytes_pos * avg_ctx;
    bench_bw_probe(&bwp, threads, BW_BYTES);
    double bw = bwp.best;
    double floor_s = bw > 0 ? (w_bytes_bf16 + kv_bytes_tok) / bw : 0;
    double floor_f32_s = bw > 0 ? (w_bytes_f32 + kv_bytes_tok) / bw : 0;
    double dec_tok_s = n_gen / decode_s;

    printf("vl3 bench llm: %s, %d layers, hidden %d, heads %d/%d, intermediate %d, vocab %d%s\n",
           random_2b ? "random 2B shape" : model_dir, sh.n_layers, sh.hidden, sh.n_heads,
           sh.n_kv_heads, sh.intermediate, sh.vocab,
           random_2b && layers && layers != 28 ? " (layers reduced: numbers are not the 2B's)" : "");
    printf("backend cpu, %d threads, weights bf16 (%.2f GB), load+convert %.2f s\n", threads,
           w_bytes_bf16 / 1e9, load_s);
    printf("memory read bandwidth (%d threads, 1 GiB, best method: %s) %.2f GB/s (the higher of "
           "probes before and after the runs; the other %.2f)\n\n", threads, bwp.method, bw / 1e9,
           bwp.lowest / 1e9);
    printf("%-8s %8s %10s %12s %12s %14s %14s\n", "phase", "tokens", "time_s", "tokens/s",
           "GFLOP/s", "floor_tok/s", "of_floor");
    printf("%-8s %8d %10.4f %12.2f %12.2f %14s %14s\n", "prefill", n_prompt, prefill_s,
           n_prompt / prefill_s, prefill_flop / prefill_s / 1e9, "-", "-");
    double dec_flop = n_gen * (flop_tok + flop_head + flop_att_tok * avg_ctx);
    printf("%-8s %8d %10.4f %12.2f %12.2f %14.2f %13.1f%%\n", "decode", n_gen, decode_s,
           dec_tok_s, dec_flop / decode_s / 1e9, floor_s > 0 ? 1 / floor_s : 0,
           floor_s > 0 ? 100.0 * dec_tok_s * floor_s : 0);
    if (batch > 1)
        printf("%-8s %8d %10.4f %12.2f %12.2f %14s %14s\n", "decode", batch * n_gen, batch_s,
               batch * n_gen / batch_s,
               batch * n_gen * (flop_tok + flop_head + flop_att_tok * (b_prompt + n_gen / 2.0)) /
                   batch_s / 1e9,
               "-", "-");
    if (batch > 1)
        printf("(second decode row: %d sequences per step, prompts of %d tokens; tokens/s counts "
               "every sequence)\n", batch, b_prompt);
    printf("\nper token: %.3f GFLOP matmuls + %.3f GFLOP lm_head + %.0f FLOP x ctx attention\n",
           flop_tok / 1e9, flop_head / 1e9, flop_att_tok);
    printf("decode bytes per token: weights %.3f GB (bf16) + KV %.2f MB (%s, avg ctx %.0f); "
           "floor %.2f ms\n",
           w_bytes_bf16 / 1e9, kv_bytes_tok / 1e6, kv_bf16 ? "bf16" : "f32", avg_ctx,
           floor_s * 1e3);
    printf("for comparison, f32 weights would have a floor of %.2f ms/token = %.2f tokens/s\n",
           floor_f32_s * 1e3, floor_f32_s > 0 ? 1 / floor_f32_s : 0);
    if (n_pair > 0) {
        /* each window's tokens/s against the floor of the read passes around it */
        double pct[PAIR_MAX], bw_lo = pair_bw[0], bw_hi = pair_bw[0];
        for (int i = 0; i < n_pair; i++) {
            double bytes = w_bytes_bf16 + kv_bytes_pos * pair_pos[i];
            pct[i] = pair_bw[i] > 0 ? 100.0 * pair_n[i] / pair_s[i] * bytes / pair_bw[i] : 0;
            bw_lo = pair_bw[i] < bw_lo ? pair_bw[i] : bw_lo;
            bw_hi = pair_bw[i] > bw_hi ? pair_bw[i] : bw_hi;
        }
        double med = bench_median(pct, n_pair); /* pct now ascending */
        printf("paired decode: %d windows of up to %d tokens after the timed decode, each set "
               "against the higher of\n  the read passes just before and after it (%.2f-%.2f "
               "GB/s): median %.1f%% of its own floor (%.1f-%.1f%%)\n",
               n_pair, PAIR_TOKENS, bw_lo / 1e9, bw_hi / 1e9, med, pct[0], pct[n_pair - 1]);
    }
    if (w_bytes_bf16 < 64e6)
        printf("note: the weights (%.1f MB) fit in the CPU caches, so the DRAM floor does not "
               "bound this model\n", w_bytes_bf16 / 1e6);
    ret = CLI_EXIT_OK;
    goto out;
fail_run:
    fprintf(stderr, "vl3 bench llm: %s\n", vl3_error_text(&err, r));
out:
    free(ids);
    vl3_ctx_free(ctx);
    vl3_model_free(m);
    return ret;
}
