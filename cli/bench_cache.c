/* bench_cache.c: `vl3 bench cache --model DIR [--cache CONNINFO] [--fps F] [--max-frames N]
 * [--max-new-tokens M] [--level L] [--threads T] FILE...`.
 *
 * For each video FILE (the whole video as one window, sampled as `vl3 run --video` does):
 *   cold     decode + sample + preprocess + DiffFP + encoder, prompt, greedy generation;
 *   entry    the window's visual tokens serialized three ways: raw (the decoded payload), plain
 *            zstd and byte planes + zstd (per ~1 MiB chunk), with bytes per visual token, the
 *            compression ratio against raw, and the encode / decode speed in MB/s of raw rows
 *            (best of three; decode of the chosen form);
 *   cached   the re-query: the entry read back (from PostgreSQL with --cache, else from memory),
 *            decoded, its pre-projector rows projected, the prompt rebuilt from it, the same
 *            generation; its tokens must equal the cold path's (the "same" column), and the
 *            wall-time ratio cold / cached is printed;
 *   before   bytes per visual token of the entry as format 1 stored it (the f32 projector rows,
 *            LLM-wide) against now (the encoder's rows before the projector, bf16 in the bf16
 *            precision), both serialized by the same encoder.
 * Times are wall clock on a possibly shared machine: compare the columns of one run. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "media.h"
#include "pipeline.h"
#include "sample.h"
#include "token_cache.h"
#include "vl3/engine.h"
#include "vl3/sampling_defaults.h"
#include "vl3/util.h"
#include "vl3/visual_tokens.h"

struct bopts {
    const char *model, *cache;
    int fps, max_frames, max_new, level, threads;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 bench cache --model DIR [--cache CONNINFO] [--fps F] [--max-frames N]\n"
               "                      [--max-new-tokens M] [--level L] [--threads T] FILE...\n\n"
               "Cold path vs a re-query answered from the token cache, and the size and speed of\n"
               "the cache entry (raw, plain zstd, byte planes + zstd) for each video FILE.\n"
               "  --cache CONNINFO  read the entry back from PostgreSQL (default: from memory)\n"
               "  --fps F           sampling rate (default 1); --max-frames N (default 180)\n"
               "  --max-new-tokens M  greedy answer length (default 16)\n"
               "  --level L         zstd level (default 3)\n");
}

struct gen {
    int32_t ids[4096];
    int n;
};

static int on_tok(void *user, int32_t id)
{
    struct gen *g = user;
    if (g->n < 4096)
        g->ids[g->n++] = id;
    return 0;
}

/* Prompt from vt (the pipeline's hand-off, as vl3 run and the worker build it) and greedy
 * generation into g. */
static int answer(vl3_model *m, const struct pipeline *pl, const vl3_visual_tokens *vt,
                  const struct bopts *o, struct gen *g, vl3_error *err)
{
    char *instr = NULL;
    int r = vl3_task_instruction(VL3_TASK_CAPTION, NULL, NULL, "video", &instr, err);
    if (r < 0)
        return r;
    vl3_prompt_params pp = pl->mm.prompt;
    pp.user_text = instr;
    pp.add_generation_prompt = 1;
    vl3_prompt pr = {0};
    vl3_ctx *ctx = NULL;
    if ((r = pipeline_prompt(&pp, vl3_model_tokenizer(m), vt, &pr, err)) < 0)
        goto out;
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = (int)pr.n_ids + o->max_new;
    if ((r = vl3_ctx_new(m, &cp, &ctx, err)) < 0)
        goto out;
    vl3_gen_params gp = vl3_gen_params_from_model(m);
    gp.sampling.greedy = 1;
    gp.sampling.repetition_penalty = 1.0f;
    gp.max_new_tokens = o->max_new;
    vl3_visual_rows vis = {vt->visual, pr.visual_pos, (int)pr.n_visual, vt->hidden};
    g->n = 0;
    r = vl3_generate(ctx, pr.ids, (int)pr.n_ids, &vis, &gp, on_tok, g, NULL, err);
out:
    vl3_ctx_free(ctx);
    vl3_prompt_deinit(&pr);
    free(instr);
    return r;
}

/* The cold media half through the pipeline's steps (as `vl3 run --video` runs them): open,
 * sample, the window's frames, preprocess + DiffFP, encoder + projector -> its visual tokens. */
static int cold_tokens(const struct pipeline *pl, vl3_vision *v, const char *path,
                       const struct bopts *o, vl3_visual_tokens *ret, vl3_error *err)
{
    struct media_policy pol;
    media_policy_default(&pol);
    media_input *in = NULL;
    int r = pipeline_open(NULL, path, &pol, NULL, NULL, NULL, NULL, NULL, &in, err);
    if (r < 0)
        return r;
    struct sample_params sp;
    sample_params_default(&sp);
    sp.fps_num = o->fps;
    sp.fps_den = 1;
    sp.max_frames = o->max_frames;
    sp.native = pl->native;
    struct sample_result *sr = NULL;
    r = sample_video(in, &sp, &sr, err);
    media_close(in);
    if (r < 0)
        return r;
    struct pipeline_window win = {0}, *ws[1] = {&win};
    vl3_image *views = calloc(sr->n ? sr->n : 1, sizeof(*views));
    if (!views) {
        r = vl3_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if ((r = pipeline_window_frames(sr, 0, views, &win)) <= 0) {
        r = r < 0 ? vl3_error_set(err, r, "out of memory")
                  : vl3_error_set(err, VL3_E_DECODE, "no frames sampled from \"%s\"", path);
        goto out;
    }
    if ((r = pipeline_window_prepare(pl, &win, views, err)) < 0 ||
        (r = pipeline_encode(pl, v, ws, 1, err)) < 0)
        goto out;
    *ret = win.vt;
    memset(&win.vt, 0, sizeof(win.vt));
out:
    pipeline_window_deinit(&win);
    free(views);
    sample_result_free(sr);
    return r;
}

static double mbps(size_t bytes, double s)
{
    return s > 0 ? (double)bytes / 1e6 / s : 0;
}

static int bench_file(vl3_model *m, const struct pipeline *pl, vl3_vision *v, tcache *tc,
                      const char *path, const struct bopts *o)
{
    vl3_error err = {0};
    vl3_visual_tokens vt = {0}, back = {0};
    static struct gen g_cold, g_hit;
    uint8_t *blobs[3] = {NULL, NULL, NULL};
    size_t lens[3] = {0, 0, 0};
    vl3_vt_encode_stats st[3];
    double enc_s[3] = {0, 0, 0};
    int r;
    double t0 = vl3_time_s();
    if ((r = cold_tokens(pl, v, path, o, &vt, &err)) < 0 ||
        (r = answer(m, pl, &vt, o, &g_cold, &err)) < 0)
        goto fail;
    double cold_s = vl3_time_s() - t0;
    enum vl3_vt_codec codecs[3] = {VL3_VT_CODEC_PLAIN, VL3_VT_CODEC_BYTEPLANE, VL3_VT_CODEC_AUTO};
    for (int c = 0; c < 3; c++) {
        vl3_vt_encode_params p;
        vl3_vt_encode_params_default(&p);
        p.codec = codecs[c];
        p.level = o->level;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: the machine may be shared */
            free(blobs[c]);
            blobs[c] = NULL;
            double t = vl3_time_s();
            if ((r = vl3_visual_tokens_encode(&vt, &p, &blobs[c], &lens[c], &st[c], &err)) < 0)
                goto fail;
            t = vl3_time_s() - t;
            if (rep == 0 || t < enc_s[c])
                enc_s[c] = t;
        }
    }
    double dec_s = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = vl3_time_s();
        if ((r = vl3_visual_tokens_decode(blobs[2], lens[2], &back, &err)) < 0)
            goto fail;
        t = vl3_time_s() - t;
        if (rep == 0 || t < dec_s)
            dec_s = t;
        vl3_visual_tokens_deinit(&back);
    }
    char key[33];
    snprintf(key, sizeof(key), "bench%027zu", lens[2]);
    if (tc) {
        tcache_forget(tc, key);
        tcache_store(tc, key, path, &vt);
    }
    /* the re-query: entry -> rows + prompt -> the same generation */
    t0 = vl3_time_s();
    if (tc) {
        if (tcache_lookup(tc, key, &back) != 1) {
            r = vl3_error_set(&err, VL3_E_PG, "the entry was not found in the cache");
            goto fail;
        }
    } else if ((r = vl3_visual_tokens_decode(blobs[2], lens[2], &back, &err)) < 0) {
        goto fail;
    }
    /* the entry holds the rows before the projector: project them, then the same generation */
    if ((r = vl3_visual_tokens_project(v, &back, &err)) < 0 ||
        (r = answer(m, pl, &back, o, &g_hit, &err)) < 0)
        goto fail;
    double hit_s = vl3_time_s() - t0;
    int same = g_cold.n == g_hit.n && memcmp(g_cold.ids, g_hit.ids, sizeof(int32_t) * g_cold.n) == 0;
    double n = (double)(vt.n_rows > 0 ? vt.n_rows : 1);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    printf("%-16s %4d %6lld %5d %8.2f | %7.0f %7.0f %7.0f %7.0f | %5.2f %5.2f %5.2f | "
           "%6.0f %6.0f %6.0f | %7.2f %7.3f %6.1fx %s\n",
           name, vt.mask.n_frames, (long long)vt.n_rows, vt.dim, st[2].raw_bytes / 1e6,
           st[2].raw_bytes / n, st[0].out_bytes / n, st[1].out_bytes / n, st[2].out_bytes / n,
           (double)st[2].raw_bytes / st[0].out_bytes, (double)st[2].raw_bytes / st[1].out_bytes,
           (double)st[2].raw_bytes / st[2].out_bytes, mbps(st[0].row_bytes, enc_s[0]),
           mbps(st[1].row_bytes, enc_s[1]), mbps(st[2].row_bytes, dec_s), cold_s, hit_s,
           hit_s > 0 ? cold_s / hit_s : 0, same ? "same" : "DIFFERENT");
    /* before (format 1): the f32 projector rows, LLM-wide, in the same entry format */
    vl3_visual_tokens old = vt;
    old.rows = vt.visual;
    old.dim = vt.hidden;
    old.dtype = VL3_VT_DTYPE_F32;
    uint8_t *oblob = NULL;
    size_t olen = 0;
    vl3_vt_encode_stats ost;
    if ((r = vl3_visual_tokens_encode(&old, NULL, &oblob, &olen, &ost, &err)) < 0)
        goto fail;
    free(oblob);
    printf("%-16s rows per visual token: before %d x f32 projector rows, raw %.0f B, stored %.0f "
           "B; now %d x %s pre-projector rows, raw %.0f B, stored %.0f B (%.2fx smaller)\n",
           "", vt.hidden, (double)ost.row_bytes / n, (double)ost.out_bytes / n, vt.dim,
           vt.dtype == VL3_VT_DTYPE_BF16 ? "bf16" : "f32", (double)st[2].row_bytes / n,
           (double)st[2].out_bytes / n,
           st[2].out_bytes ? (double)ost.out_bytes / (double)st[2].out_bytes : 0);
    fflush(stdout);
    r = same ? 0 : -1;
    goto out;
fail:
    fprintf(stderr, "vl3 bench cache: %s: %s\n", path, vl3_error_text(&err, r));
out:
    for (int c = 0; c < 3; c++)
        free(blobs[c]);
    vl3_visual_tokens_deinit(&back);
    vl3_visual_tokens_deinit(&vt);
    return r;
}

int bench_cache(int argc, char **argv)
{
    struct bopts o = {.fps = 1, .max_frames = VL3_SAMPLING_MAX_FRAMES_DEFAULT, .max_new = 16,
                      .level = 3, .threads = 0};
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'},  {"cache", required_argument, NULL, 'c'},
        {"fps", required_argument, NULL, 'f'},    {"max-frames", required_argument, NULL, 'n'},
        {"max-new-tokens", required_argument, NULL, 'g'},
        {"level", required_argument, NULL, 'l'},  {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {0, 0, 0, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'c': o.cache = optarg; break;
        case 'f': o.fps = atoi(optarg); break;
        case 'n': o.max_frames = atoi(optarg); break;
        case 'g': o.max_new = atoi(optarg); break;
        case 'l': o.level = atoi(optarg); break;
        case 't': o.threads = atoi(optarg); break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (!o.model || optind >= argc || o.fps < 1 || o.max_frames < 1 || o.max_new < 1 ||
        o.level < 1 || o.level > 19) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    vl3_error err = {0};
    vl3_model *m = NULL;
    vl3_vision *v = NULL;
    tcache *tc = NULL;
    int ret = CLI_EXIT_FAIL, r;
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = o.model;
    mp.n_threads = o.threads;
    struct pipeline pl;
    if ((r = vl3_model_load(&mp, &m, &err)) < 0 ||
        (r = vl3_vision_new(m, o.threads, &v, &err)) < 0 ||
        (r = pipeline_init(&pl, m, v, &err)) < 0) {
        fprintf(stderr, "vl3 bench cache: could not load \"%s\": %s\n", o.model,
                vl3_error_text(&err, r));
        goto out;
    }
    if (o.cache && (r = tcache_open(o.cache, 0, &tc, &err)) < 0) {
        fprintf(stderr, "vl3 bench cache: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    printf("model %s, fps %d, max_frames %d, %d new tokens, zstd level %d, entry read from %s\n",
           o.model, o.fps, o.max_frames, o.max_new, o.level, tc ? "PostgreSQL" : "memory");
    printf("%-16s %4s %6s %5s %8s | %7s %7s %7s %7s | %5s %5s %5s | %6s %6s %6s | %7s %7s %7s\n",
           "file", "frm", "tokens", "dim", "raw MB", "B/tok", "plain", "planes", "stored",
           "x pl", "x bp", "x st", "encPl", "encBp", "dec", "cold s", "cache s", "ratio");
    printf("%-16s %4s %6s %5s %8s | %7s %7s %7s %7s | %5s %5s %5s | %6s %6s %6s |\n", "", "", "",
           "", "", "raw", "zstd", "+zstd", "(auto)", "", "", "", "MB/s", "MB/s", "MB/s");
    ret = CLI_EXIT_OK;
    for (int i = optind; i < argc; i++)
        if (bench_file(m, &pl, v, tc, argv[i], &o) < 0)
            ret = CLI_EXIT_FAIL;
out:
    tcache_close(tc);
    vl3_vision_free(v);
    vl3_model_free(m);
    return ret;
}
