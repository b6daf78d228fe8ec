/* cmd_run.c: `vl3 run`: one prompt through the model, answer on stdout.
 *
 *   vl3 run --model DIR --prompt TEXT [--system-prompt default|none|TEXT] [--greedy]
 *           [--repetition-penalty X] [--max-new-tokens N] [--temperature X] [--top-k N]
 *           [--top-p X] [--seed N] [--threads N] [--backend NAME] [--dump DIR]
 *   vl3 run --model DIR (--image FILE | --frames DIR|LIST | --video FILE [--fps F]
 *           [--max-frames N] [--sampling exact|fast] [--window SECONDS [--window-index K]])
 *           (--task T [--question Q] | --prompt TEXT)
 *           [--difffp-threshold X] [--difffp-bf16] [--no-difffp] ...
 *
 * Visual inputs (Engine II): --image decodes one image (FFmpeg, as PIL's convert('RGB')),
 * --frames a frame sequence (a directory of images with timestamps in their names, e.g.
 * frame_12.5.png, or a list file of "path timestamp" lines) treated as one video, --video a
 * video file sampled like the official loader (worker/src/sample.c: ffmpeg fps=F:round=down,
 * labels start + k/F, floor(linspace) down to --max-frames, default 180). They go
 * through the request pipeline the worker runs (worker/src/pipeline.h: the same functions): the
 * AVT resize, pixel_values, DiffFP (on when the model's use_token_compression is, statistics
 * printed on stderr), the vision encoder (rows before the projector) and the projector into the
 * window's vl3_visual_tokens, and the prompt with the expanded, pruned placeholders built from
 * them; the projector rows replace the placeholder embeddings in vl3_generate. --task picks the instruction text (docs/tasks.md); with a task, --prompt
 * overrides the task's template ({question} and {media} are substituted), and for tasks that
 * need a question (qa, chart_qa) --question gives it (or --prompt when --question is absent).
 *
 * The prompt is the model's chat template around TEXT (spec §7.1, built by vl3_prompt_build with
 * the layout's flavour). Without --greedy the generation config's sampling defaults apply;
 * --greedy is plain argmax with no repetition penalty unless --repetition-penalty is given.
 *
 * --dump DIR writes little-endian raw arrays and a meta.json describing them (a contract that
 * tools/gen_golden.py and tests rely on):
 *   input_ids.i32   int32 [n_prompt]   the prompt ids
 *   logits.f32      float32 [V]        logits of the last prompt position (V = embedding rows)
 *   generated.i32   int32 [n_generated] generated ids (the stop id included when one ended it)
 *   meta.json       shapes, dtypes, token counts, timings, sampling settings, prompt text
 * and with visual inputs:
 *   pixel_values.f32 float32 [P, 588]        the encoder input (all frames)
 *   vision_out.f32   float32 [n_visual, C]   the projector rows fed to the LLM (after DiffFP)
 *   visual_tokens.vtok uint8 [n]            the window's visual tokens (rows before the
 *                                            projector, grids, mask, timestamps) serialized as
 *                                            the token cache stores them (VL3VTOK1)
 *   meta.json "vision": per item its grid [t, h, w] (patches), merge size, resized [h, w],
 *   timestamps, kept and total tokens per frame, DiffFP settings, visual positions count
 *   meta.json "cache": "hit", "miss" or "off" (and with --cache the key and its timings)
 *
 * --cache CONNINFO (worker/src/token_cache.h, docs/token-cache.md): the visual tokens of the
 * image or video window (a vl3_visual_tokens object, the hand-off between the media half and the
 * LLM) are looked up in PostgreSQL before anything is decoded; a hit skips decoding, DiffFP and
 * the vision encoder (only the projector runs, on the cached rows) and builds the prompt from the
 * cached grids, timestamps and keep mask (no pixel_values.f32 is dumped then); a miss runs the
 * cold path and stores the object. The cold path's LLM reads the same object, so a hit's logits
 * and tokens equal the cold path's bit for bit. A --frames input is keyed by every frame file's content and timestamp.
 *
 * Options live in one table (opts[]): a row names the option, whether it takes an argument, its
 * help line and the function that stores it, so other inputs (--image, --video, ...) are one row
 * and one handler each. Dump files go through dump_add() / dump_write(), which take any extra
 * arrays a caller adds. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"
#include "image.h"
#include "media.h"
#include "pipeline.h"
#include "sample.h"
#include "token_cache.h"
#include "vl3/engine.h"
#include "vl3/sampling_defaults.h"
#include "vl3/util.h"
#include "vl3/visual_tokens.h"

/* ---- options ------------------------------------------------------------------------------- */

struct run_opts {
    const char *model, *prompt, *dump;
    int dump_steps; /* --dump-step-logits: every sampled step's logits in the dump */
    int ignore_eos; /* --ignore-eos: no stop ids, always --max-new-tokens tokens */
    enum vl3_system_mode system;
    const char *system_text;
    int greedy;
    int max_new_tokens;                  /* 0 = default */
    int threads;
    int backend;                         /* enum vl3_backend_kind, default AUTO */
    int have_temperature, have_top_k, have_top_p, have_rp, have_seed;
    float temperature, top_p, rp;
    int top_k;
    uint64_t seed;
    /* visual inputs (Engine II) */
    const char *image, *frames, *question, *video;
    double fps; /* frames per second, > 0 (0: the default, 1) */
    int max_frames;
    int sampling_fast;     /* --sampling fast */
    double window;         /* --window seconds, 0 = whole video */
    int window_index;      /* --window-index: which window answers (as the worker's window k) */
    int task; /* -1 = none */
    int have_difffp_threshold, difffp_bf16, no_difffp;
    int f32_pixels; /* the encoder takes pixel_values unrounded (float32 reference path) */
    float difffp_threshold;
    /* token cache (worker/src/token_cache.h) */
    const char *cache;     /* conninfo; NULL = off */
    int64_t cache_budget;  /* stored bytes, 0 = no limit */
    int cache_refresh;     /* recompute and replace the entry */
};

static int parse_int(const char *s, long lo, long hi, int *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *ret = (int)v;
    return 0;
}

static int parse_double(const char *s, double *ret)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -EINVAL;
    *ret = v;
    return 0;
}

static int parse_float(const char *s, float *ret)
{
    double v;
    if (parse_double(s, &v) < 0)
        return -EINVAL;
    *ret = (float)v;
    return 0;
}

static int opt_model(struct run_opts *o, const char *a) { o->model = a; return 0; }
static int opt_prompt(struct run_opts *o, const char *a) { o->prompt = a; return 0; }
static int opt_dump(struct run_opts *o, const char *a) { o->dump = a; return 0; }
static int opt_greedy(struct run_opts *o, const char *a) { (void)a; o->greedy = 1; return 0; }
static int opt_ignore_eos(struct run_opts *o, const char *a)
{
    (void)a;
    o->ignore_eos = 1;
    return 0;
}

static int opt_dump_steps(struct run_opts *o, const char *a)
{
    (void)a;
    o->dump_steps = 1;
    return 0;
}

static int opt_system(struct run_opts *o, const char *a)
{
    if (strcmp(a, "none") == 0) {
        o->system = VL3_SYSTEM_NONE;
    } else if (strcmp(a, "default") == 0) {
        o->system = VL3_SYSTEM_DEFAULT;
    } else {
        o->system = VL3_SYSTEM_CUSTOM;
        o->system_text = a;
    }
    return 0;
}

static int opt_rp(struct run_opts *o, const char *a)
{
    o->have_rp = 1;
    return parse_float(a, &o->rp) < 0 || !(o->rp > 0) ? -EINVAL : 0;
}

static int opt_max_new(struct run_opts *o, const char *a)
{
    return parse_int(a, 1, INT_MAX / 2, &o->max_new_tokens);
}

static int opt_temperature(struct run_opts *o, const char *a)
{
    o->have_temperature = 1;
    return parse_float(a, &o->temperature) < 0 || !(o->temperature > 0) ? -EINVAL : 0;
}

static int opt_top_k(struct run_opts *o, const char *a)
{
    o->have_top_k = 1;
    return parse_int(a, 0, INT_MAX, &o->top_k);
}

static int opt_top_p(struct run_opts *o, const char *a)
{
    o->have_top_p = 1;
    return parse_float(a, &o->top_p) < 0 || !(o->top_p > 0 && o->top_p <= 1) ? -EINVAL : 0;
}

static int opt_seed(struct run_opts *o, const char *a)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(a, &end, 10);
    if (errno || end == a || *end || a[0] == '-')
        return -EINVAL;
    o->seed = v;
    o->have_seed = 1;
    return 0;
}

static int opt_threads(struct run_opts *o, const char *a)
{
    return parse_int(a, 1, 4096, &o->threads);
}

/* --precision: the CPU backend's arithmetic, passed to it through VL3_PRECISION (cpu_ops.h) */
static const char *run_precision;
static int opt_precision(struct run_opts *o, const char *a)
{
    (void)o;
    if (strcmp(a, "f32") != 0 && strcmp(a, "bf16") != 0 && strcmp(a, "auto") != 0)
        return -EINVAL;
    run_precision = a;
    return 0;
}

static int opt_backend(struct run_opts *o, const char *a)
{
    int k = vl3_backend_kind_parse(a);
    if (k < 0)
        return -EINVAL;
    o->backend = k;
    return 0;
}

static int opt_image(struct run_opts *o, const char *a) { o->image = a; return 0; }
static int opt_frames(struct run_opts *o, const char *a) { o->frames = a; return 0; }
static int opt_question(struct run_opts *o, const char *a) { o->question = a; return 0; }
static int opt_video(struct run_opts *o, const char *a) { o->video = a; return 0; }
static int opt_fps(struct run_opts *o, const char *a)
{
    /* the range jobs accept (sampling.fps): 0.5 samples a long video every other second */
    double v;
    if (parse_double(a, &v) < 0 || v < VL3_SAMPLING_FPS_MIN || v > VL3_SAMPLING_FPS_MAX)
        return -EINVAL;
    o->fps = v;
    return 0;
}
static int opt_max_frames(struct run_opts *o, const char *a)
{
    return parse_int(a, 1, 100000, &o->max_frames);
}
static int opt_sampling(struct run_opts *o, const char *a)
{
    if (strcmp(a, "exact") != 0 && strcmp(a, "fast") != 0)
        return -EINVAL;
    o->sampling_fast = strcmp(a, "fast") == 0;
    return 0;
}
static int opt_window(struct run_opts *o, const char *a)
{
    char *end;
    errno = 0;
    double v = strtod(a, &end);
    if (errno || end == a || *end || !(v > 0 && v <= 1e7))
        return -EINVAL;
    o->window = v;
    return 0;
}
static int opt_window_index(struct run_opts *o, const char *a)
{
    return parse_int(a, 0, 1000000, &o->window_index);
}
static int opt_difffp_bf16(struct run_opts *o, const char *a) { (void)a; o->difffp_bf16 = 1; return 0; }
static int opt_f32_pixels(struct run_opts *o, const char *a) { (void)a; o->f32_pixels = 1; return 0; }
static int opt_no_difffp(struct run_opts *o, const char *a) { (void)a; o->no_difffp = 1; return 0; }

static int opt_cache(struct run_opts *o, const char *a) { o->cache = a; return 0; }
static int opt_cache_refresh(struct run_opts *o, const char *a)
{
    (void)a;
    o->cache_refresh = 1;
    return 0;
}
static int opt_cache_budget(struct run_opts *o, const char *a)
{
    char *end;
    errno = 0;
    double v = strtod(a, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024.0, end++;
    else if (*end == 'M')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'G')
        mul = 1024.0 * 1024 * 1024, end++;
    if (errno || end == a || *end || !(v >= 0) || v * mul > 9e18)
        return -EINVAL;
    o->cache_budget = (int64_t)(v * mul);
    return 0;
}

static int opt_task(struct run_opts *o, const char *a)
{
    o->task = vl3_task_parse(a);
    return o->task < 0 ? -EINVAL : 0;
}

static int opt_difffp_threshold(struct run_opts *o, const char *a)
{
    o->have_difffp_threshold = 1;
    return parse_float(a, &o->difffp_threshold) < 0 || o->difffp_threshold < 0 ? -EINVAL : 0;
}

static const struct run_opt {
    const char *name;
    int has_arg;
    const char *arg, *help;
    int (*set)(struct run_opts *o, const char *arg);
} opts[] = {
    {"model", 1, "DIR", "checkpoint directory (required)", opt_model},
    {"prompt", 1, "TEXT", "the user message (or, with --task, the task's template)", opt_prompt},
    {"system-prompt", 1, "MODE", "default | none | TEXT: system turn (default: none)", opt_system},
    {"greedy", 0, NULL, "argmax decoding, no repetition penalty unless given", opt_greedy},
    {"repetition-penalty", 1, "X", "HF repetition penalty (> 0; 1 = off)", opt_rp},
    {"max-new-tokens", 1, "N", "most tokens to generate (default 1024)", opt_max_new},
    {"ignore-eos", 0, NULL, "no stop ids: generate exactly --max-new-tokens tokens", opt_ignore_eos},
    {"temperature", 1, "X", "sampling temperature (> 0)", opt_temperature},
    {"top-k", 1, "N", "keep the N most likely tokens (0 = off)", opt_top_k},
    {"top-p", 1, "X", "nucleus sampling mass in (0, 1]", opt_top_p},
    {"seed", 1, "N", "sampling RNG seed (default 0)", opt_seed},
    {"threads", 1, "N", "CPU threads (default: all)", opt_threads},
    {"precision", 1, "P", "bf16 | f32 | auto: CPU arithmetic (default auto: bf16 where the CPU "
     "has AVX512-BF16 or AMX; VL3_PRECISION when set)", opt_precision},
    {"backend", 1, "NAME", "auto | cpu | cuda | cuda-emu (default auto: cuda when a device is "
     "there, else cpu; cuda-emu: the CUDA kernels on the host emulator, slow)", opt_backend},
    {"dump", 1, "DIR", "write input_ids.i32, logits.f32, generated.i32, meta.json", opt_dump},
    {"dump-step-logits", 0, NULL, "with --dump: also step_logits.f32, the logits of every "
     "generated token (n_generated x vocab)", opt_dump_steps},
    {"image", 1, "FILE", "an image (PNG, JPEG, WebP, ...) before the instruction", opt_image},
    {"frames", 1, "DIR|LIST", "video frames: images named with timestamps, or a list file",
     opt_frames},
    {"video", 1, "FILE", "a video file, sampled at --fps (default 1) up to --max-frames",
     opt_video},
    {"fps", 1, "F", "video sampling rate in frames per second, e.g. 2 or 0.5 (default 1)", opt_fps},
    {"max-frames", 1, "N", "most video frames (default 180, uniform subsampling)",
     opt_max_frames},
    {"sampling", 1, "MODE", "exact | fast: video frame choice (default exact; same frames)",
     opt_sampling},
    {"window", 1, "SECONDS", "sample the video in windows of SECONDS, as vl3-worker jobs do",
     opt_window},
    {"window-index", 1, "K", "with --window: answer for window K (default 0)", opt_window_index},
    {"task", 1, "T", "caption | ocr | chart_qa | qa: instruction from docs/tasks.md", opt_task},
    {"question", 1, "TEXT", "the question of chart_qa / qa", opt_question},
    {"difffp-threshold", 1, "X", "DiffFP threshold (default 0.1; 0 keeps every token)",
     opt_difffp_threshold},
    {"difffp-bf16", 0, NULL, "DiffFP on bf16-rounded pixels (DAMO README path)", opt_difffp_bf16},
    {"f32-pixels", 0, NULL, "vision encoder input not rounded to bf16 (a float32 model's path; "
     "default: rounded, as the bf16 checkpoints cast it)", opt_f32_pixels},
    {"no-difffp", 0, NULL, "keep every visual token", opt_no_difffp},
    {"cache", 1, "CONNINFO", "token cache in PostgreSQL: reuse an image's or a video window's "
     "visual tokens (skips decoding and the encoder), store them on a miss", opt_cache},
    {"cache-budget", 1, "SIZE", "with --cache: evict least recently used entries beyond SIZE "
     "bytes (K, M, G suffixes; default 0 = no limit)", opt_cache_budget},
    {"cache-refresh", 0, NULL, "with --cache: recompute and replace the cached entry",
     opt_cache_refresh},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 run --model DIR --prompt TEXT [options]\n"
               "       vl3 run --model DIR (--image FILE | --frames DIR|LIST | --video FILE) (--task "
               "T | --prompt TEXT) [options]\n\n"
               "Run one prompt through the model (chat template around TEXT, after the image or "
               "frames if any) and print the answer.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-26s %s\n", left, opts[i].help);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "this help");
}

/* Parse argv through the table. Returns 0, or CLI_EXIT_USAGE after printing why. */
static int parse_args(int argc, char **argv, struct run_opts *o)
{
    struct option lo[N_OPTS + 2];
    for (size_t i = 0; i < N_OPTS; i++)
        lo[i] = (struct option){opts[i].name, opts[i].has_arg ? required_argument : no_argument,
                                NULL, 1000 + (int)i};
    lo[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lo[N_OPTS + 1] = (struct option){0, 0, 0, 0};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "vl3 run: %s option \"%s\"\n",
                    c == ':' ? "missing argument for" : "unknown", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        const struct run_opt *ro = &opts[c - 1000];
        if (ro->set(o, optarg) < 0) {
            fprintf(stderr, "vl3 run: invalid value \"%s\" for --%s\n", optarg ? optarg : "",
                    ro->name);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vl3 run: unexpected argument \"%s\"\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (!o->model || (!o->prompt && o->task < 0)) {
        fprintf(stderr, "vl3 run: --model and --prompt (or --task) are required\n");
        return CLI_EXIT_USAGE;
    }
    if (!!o->image + !!o->frames + !!o->video > 1) {
        fprintf(stderr, "vl3 run: --image, --frames and --video cannot be combined\n");
        return CLI_EXIT_USAGE;
    }
    if (o->question && o->task < 0) {
        fprintf(stderr, "vl3 run: --question needs --task\n");
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* ---- dumps --------------------------------------------------------------------------------- */

#define DUMP_MAX_FILES 16

/* Arrays written by dump_write: each a raw little-endian file plus its entry in meta.json. */
struct run_dump {
    struct {
        const char *name;  /* file name, e.g. "logits.f32" */
        const char *dtype; /* "int32", "float32", ... */
        const void *data;  /* borrowed until dump_write */
        size_t elem_size;
        int ndim;
        int64_t shape[4];
    } files[DUMP_MAX_FILES];
    int n_files;
    json_t *meta; /* owned: extra fields for meta.json */
};

static int dump_add(struct run_dump *d, const char *name, const char *dtype, const void *data,
                    size_t elem_size, int ndim, const int64_t *shape)
{
    if (d->n_files >= DUMP_MAX_FILES || ndim < 1 || ndim > 4)
        return -EINVAL;
    d->files[d->n_files].name = name;
    d->files[d->n_files].dtype = dtype;
    d->files[d->n_files].data = data;
    d->files[d->n_files].elem_size = elem_size;
    d->files[d->n_files].ndim = ndim;
    memcpy(d->files[d->n_files].shape, shape, sizeof(int64_t) * (size_t)ndim);
    d->n_files++;
    return 0;
}

/* Write every array and meta.json into dir (created if missing). The host is little-endian
 * (x86-64/aarch64), so the arrays are written as they are in memory. */
static int dump_write(const char *dir, struct run_dump *d, vl3_error *reterr)
{
    char path[4096];
    if (mkdir(dir, 0777) < 0 && errno != EEXIST)
        return vl3_error_set(reterr, -errno, "could not create directory \"%s\": %s", dir,
                             strerror(errno));
    json_t *files = json_object();
    for (int i = 0; i < d->n_files; i++) {
        size_t n = 1;
        json_t *shape = json_array();
        for (int k = 0; k < d->files[i].ndim; k++) {
            n *= (size_t)d->files[i].shape[k];
            json_array_append_new(shape, json_integer(d->files[i].shape[k]));
        }
        snprintf(path, sizeof(path), "%s/%s", dir, d->files[i].name);
        int r = vl3_file_write(path, d->files[i].data, n * d->files[i].elem_size, reterr);
        if (r < 0) {
            json_decref(shape);
            json_decref(files);
            return r;
        }
        json_object_set_new(files, d->files[i].name,
                            json_pack("{s:s, s:o, s:s}", "dtype", d->files[i].dtype, "shape",
                                      shape, "byte_order", "little"));
    }
    json_object_set_new(d->meta, "files", files);
    snprintf(path, sizeof(path), "%s/meta.json", dir);
    char *text = json_dumps(d->meta, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    int r = vl3_file_write(path, text, strlen(text), reterr);
    free(text);
    return r;
}

/* ---- visual inputs (Engine II) ------------------------------------------------------------ */

struct run_vision {
    image_frames frames;
    struct sample_result *video;
    image_rgb *imgs;
    vl3_image *views;
    int n;
    vl3_vision *enc;         /* the encoder, or only the projector (a cache hit) */
    int enc_full;            /* enc is the whole encoder */
    struct pipeline pl;      /* the media half's settings (pipeline.h), as the worker's */
    struct pipeline_window win; /* the request's window; win.vt: what the LLM consumes, from the
                                 * cold path or from the cache */
    vl3_prompt prompt;
    /* token cache */
    const char *cache_state; /* "off", "hit" or "miss" */
    char key[33];
    char *key_descr;
    double cache_lookup_s, cache_store_s;
};

static void run_vision_free(struct run_vision *rv)
{
    vl3_prompt_deinit(&rv->prompt);
    pipeline_window_deinit(&rv->win);
    free(rv->key_descr);
    vl3_vision_free(rv->enc);
    for (int i = 0; rv->imgs && i < rv->n; i++)
        image_rgb_free(&rv->imgs[i]);
    free(rv->imgs);
    free(rv->views);
    image_frames_free(&rv->frames);
    sample_result_free(rv->video);
}

/* The video sampling of the options (as the worker's job would sample). */
static void run_sample_params(const struct run_opts *o, int native, struct sample_params *sp)
{
    sample_params_default(sp);
    sample_fps_fraction(o->fps > 0 ? o->fps : 1, &sp->fps_num, &sp->fps_den);
    sp->max_frames = o->max_frames > 0 ? o->max_frames : VL3_SAMPLING_MAX_FRAMES_DEFAULT;
    sp->mode = o->sampling_fast ? SAMPLE_MODE_FAST : SAMPLE_MODE_EXACT;
    sp->window_s = o->window; /* max_frames then applies per window, as in the worker */
    /* native layout, one window: transformers' sampler (sample.h); windows sample as the worker */
    sp->native = native && o->window <= 0;
}

/* Pipeline steps 1-3 for a video: open, sample as the official loader does (sample.c), the
 * frames of the window a worker job's window k would see (the whole video without --window). */
static int run_vision_video(struct run_vision *rv, const struct run_opts *o, vl3_error *err)
{
    struct media_policy pol;
    media_policy_default(&pol);
    media_input *in = NULL;
    int r = pipeline_open(NULL, o->video, &pol, NULL, NULL, NULL, NULL, NULL, &in, err);
    if (r < 0)
        return r;
    struct sample_params sp;
    run_sample_params(o, rv->pl.native, &sp);
    r = sample_video(in, &sp, &rv->video, err);
    media_close(in);
    if (r < 0)
        return r;
    rv->views = calloc(rv->video->n ? rv->video->n : 1, sizeof(*rv->views));
    if (!rv->views)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    int win = o->window > 0 ? o->window_index : 0;
    if ((rv->n = pipeline_window_frames(rv->video, win, rv->views, &rv->win)) < 0)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    if (rv->n == 0)
        return vl3_error_set(err, -EINVAL, "window %d of \"%s\" has no frames (%d windows)",
                             o->window_index, o->video, rv->video->n_windows);
    pipeline_window_span(&rv->win, &sp);
    return 0;
}

/* The cache key of the request (image, frame sequence or video window). Returns 0, or < 0 when
 * the key cannot be made (the cache is then off for this run). */
static int run_cache_key(struct run_vision *rv, const struct run_opts *o, const vl3_model *m,
                         vl3_error *err)
{
    char fp[TCACHE_FINGERPRINT_LEN];
    int r;
    if (o->frames) { /* every frame file's content and its timestamp, in order */
        image_frames fr = {0};
        if ((r = image_frames_list(o->frames, 0, &fr, err)) < 0)
            return r;
        XXH3_state_t *xs = XXH3_createState();
        if (!xs) {
            image_frames_free(&fr);
            return vl3_error_set(err, -ENOMEM, "out of memory");
        }
        XXH3_128bits_reset(xs);
        for (int i = 0; i < fr.n && r == 0; i++) {
            int fd = open(fr.paths[i], O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                r = vl3_error_set(err, -errno, "could not open \"%s\": %s", fr.paths[i],
                                  strerror(errno));
                break;
            }
            r = tcache_fingerprint_fd(fd, fp, err);
            close(fd);
            XXH3_128bits_update(xs, fp, strlen(fp) + 1);
            XXH3_128bits_update(xs, &fr.timestamps[i], sizeof(double));
        }
        XXH128_hash_t h = XXH3_128bits_digest(xs);
        XXH3_freeState(xs);
        snprintf(fp, sizeof(fp), "%016llx%016llx:frames%d", (unsigned long long)h.high64,
                 (unsigned long long)h.low64, fr.n);
        image_frames_free(&fr);
        if (r < 0)
            return r;
    } else {
        const char *path = o->video ? o->video : o->image;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return vl3_error_set(err, -errno, "could not open \"%s\": %s", path,
                                 strerror(errno));
        r = tcache_fingerprint_fd(fd, fp, err);
        close(fd);
        if (r < 0)
            return r;
    }
    if ((r = pipeline_identify(&rv->pl, m, err)) < 0)
        return r;
    struct sample_params sp;
    run_sample_params(o, rv->pl.native, &sp);
    if ((r = pipeline_cache_key(&rv->pl, fp,
                                o->video    ? TCACHE_MEDIA_VIDEO
                                : o->frames ? TCACHE_MEDIA_FRAMES
                                            : TCACHE_MEDIA_IMAGE,
                                &sp, o->window > 0 ? o->window_index : 0, rv->key,
                                &rv->key_descr)) < 0)
        return vl3_error_set(err, r, "could not make the cache key");
    return 0;
}

/* One still image through the pipeline's open step (images only, as the worker reads them). */
static int run_read_image(const struct pipeline *pl, const char *path, image_rgb *ret,
                          vl3_error *err)
{
    struct media_policy pol;
    media_policy_default(&pol);
    pol.formats = MEDIA_IMAGE_FORMATS;
    pol.threads = 1;
    media_input *in = NULL;
    int r = pipeline_open(NULL, path, &pol, NULL, NULL, NULL, NULL, NULL, &in, err);
    if (r == 0)
        r = pipeline_read_image(pl, in, ret, err);
    media_close(in);
    return r;
}

/* The cold path: decode the image / frames / video, then the pipeline's steps (preprocess +
 * DiffFP, the encoder and projector) into rv->win.vt. */
static int run_vision_cold(struct run_vision *rv, const struct run_opts *o, const vl3_model *m,
                           vl3_error *err)
{
    int r;
    if (o->video) {
        if ((r = run_vision_video(rv, o, err)) < 0)
            return r;
        goto prepare;
    }
    if (o->frames) {
        if ((r = image_frames_list(o->frames, 0, &rv->frames, err)) < 0)
            return r;
        rv->n = rv->frames.n;
    } else {
        rv->n = 1;
    }
    rv->imgs = calloc((size_t)rv->n, sizeof(*rv->imgs));
    rv->views = calloc((size_t)rv->n, sizeof(*rv->views));
    if (!rv->imgs || !rv->views)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    for (int i = 0; i < rv->n; i++) {
        if ((r = run_read_image(&rv->pl, o->frames ? rv->frames.paths[i] : o->image,
                                &rv->imgs[i], err)) < 0)
            return r;
        rv->views[i] = image_rgb_view(&rv->imgs[i]);
    }
    rv->win.n_frames = rv->n;
    rv->win.is_image = !o->frames;
    if (o->frames) {
        if (!(rv->win.timestamps = malloc(sizeof(double) * (size_t)rv->n)))
            return vl3_error_set(err, -ENOMEM, "out of memory");
        memcpy(rv->win.timestamps, rv->frames.timestamps, sizeof(double) * (size_t)rv->n);
    }
prepare:
    if (!rv->enc_full) { /* a projector-only one (the cache missed): the whole encoder */
        vl3_vision_free(rv->enc);
        rv->enc = NULL;
        if ((r = vl3_vision_new(m, o->threads, &rv->enc, err)) < 0)
            return r;
        rv->enc_full = 1;
    }
    vl3_vision_set_bf16_input(rv->enc, rv->pl.bf16_input);
    struct pipeline_window *ws[1] = {&rv->win};
    if ((r = pipeline_window_prepare(&rv->pl, &rv->win, rv->views, err)) < 0)
        return r;
    return pipeline_encode(&rv->pl, rv->enc, ws, 1, err);
}

/* The visual tokens and the prompt of the request: from the token cache when --cache has them,
 * else the cold path (stored on a miss); the prompt (rv->prompt) from the visual tokens either
 * way, as the worker builds it. pp is borrowed. */
static int run_vision_prepare(struct run_vision *rv, const struct run_opts *o, const vl3_model *m,
                              const vl3_tokenizer *tok, const vl3_prompt_params *pp,
                              vl3_error *err)
{
    int r;
    /* the projector alone until a cache miss needs the encoder */
    if ((r = o->cache ? vl3_vision_new_projector(m, &rv->enc, err)
                      : vl3_vision_new(m, o->threads, &rv->enc, err)) < 0 ||
        (r = pipeline_init(&rv->pl, m, rv->enc, err)) < 0)
        return r;
    rv->enc_full = !o->cache;
    rv->pl.mm.prompt = *pp;
    pipeline_set_threads(&rv->pl, o->threads);
    rv->pl.bf16_input = !o->f32_pixels;
    if (o->no_difffp)
        rv->pl.mm.difffp.enabled = 0;
    if (o->have_difffp_threshold)
        rv->pl.mm.difffp.threshold = o->difffp_threshold;
    if (o->difffp_bf16)
        rv->pl.mm.difffp.dtype = VL3_DIFFFP_BF16;
    rv->cache_state = "off";
    tcache *tc = NULL;
    if (o->cache) {
        vl3_error e2 = {0};
        if ((r = run_cache_key(rv, o, m, &e2)) < 0 ||
            (r = tcache_open(o->cache, o->cache_budget, &tc, &e2)) < 0)
            fprintf(stderr, "vl3 run: token cache off: %s\n", vl3_error_text(&e2, r));
    }
    if (tc) {
        double t0 = vl3_time_s();
        vl3_visual_tokens vt = {0};
        rv->cache_state = "miss";
        if (o->cache_refresh)
            tcache_forget(tc, rv->key);
        else if (pipeline_cache_lookup(&rv->pl, tc, rv->key, o->image != NULL, &vt) == 1) {
            if ((r = pipeline_window_from_cache(&rv->win, o->window > 0 ? o->window_index : 0,
                                                o->image != NULL, &vt)) < 0) {
                vl3_visual_tokens_deinit(&vt);
                r = vl3_error_set(err, r, "out of memory");
                goto out;
            }
            rv->cache_state = "hit";
        }
        rv->cache_lookup_s = vl3_time_s() - t0;
    }
    if (strcmp(rv->cache_state, "hit") == 0) {
        /* the cached rows are the encoder's before the projector: the projector alone */
        if ((r = pipeline_window_project(&rv->pl, rv->enc, &rv->win, err)) < 0)
            goto out;
    } else {
        if ((r = run_vision_cold(rv, o, m, err)) < 0)
            goto out;
        if (tc) {
            double t0 = vl3_time_s();
            tcache_store(tc, rv->key, rv->key_descr, &rv->win.vt);
            rv->cache_store_s = vl3_time_s() - t0;
        }
    }
    r = pipeline_prompt(&rv->pl.mm.prompt, tok, &rv->win.vt, &rv->prompt, err);
out:
    tcache_close(tc);
    return r;
}

static void run_vision_stats(const struct run_vision *rv, FILE *f)
{
    const vl3_token_mask *k = &rv->win.vt.mask;
    const vl3_vision_grid *g = &rv->win.vt.grids[0];
    fprintf(f, "vision: %d frame(s), grid %dx%d patches, merge %d, %lld patches, %.2f s "
               "preprocess, %.2f s encode\n",
            g->t, g->h, g->w, g->merge, (long long)rv->win.vt.n_patches,
            rv->win.preprocess_ms / 1e3, rv->win.encode_ms / 1e3);
    fprintf(f, "difffp: %s, kept %lld of %lld tokens (%.1f%%); per frame:",
            rv->pl.mm.difffp.enabled ? "on" : "off", (long long)k->n_kept, (long long)k->n_tokens,
            k->n_tokens ? 100.0 * (double)k->n_kept / (double)k->n_tokens : 100.0);
    for (int i = 0; i < k->n_frames; i++)
        fprintf(f, " %d/%d", k->kept_per_frame[i], k->total_per_frame[i]);
    fputc('\n', f);
    if (strcmp(rv->cache_state, "off") != 0)
        fprintf(f, "cache: %s, key %s, lookup %.3f s, store %.3f s\n", rv->cache_state, rv->key,
                rv->cache_lookup_s, rv->cache_store_s);
}

static json_t *run_vision_meta(const struct run_vision *rv, int64_t n_visual)
{
    const vl3_visual_tokens *vt = &rv->win.vt;
    json_t *items = json_array(), *kept = json_array(), *total = json_array(),
           *ts = json_array();
    for (int i = 0; i < vt->n_items; i++) {
        const vl3_vision_grid *g = &vt->grids[i];
        json_array_append_new(
            items, json_pack("{s:[i,i,i], s:i, s:[i,i], s:b}", "grid", g->t, g->h, g->w, "merge",
                             g->merge, "resized", vt->resized_hw[2 * i],
                             vt->resized_hw[2 * i + 1], "is_video", vt->is_video[i]));
    }
    for (int i = 0; i < vt->mask.n_frames; i++) {
        json_array_append_new(kept, json_integer(vt->mask.kept_per_frame[i]));
        json_array_append_new(total, json_integer(vt->mask.total_per_frame[i]));
    }
    for (int i = 0; vt->has_timestamps[0] && i < vt->mask.n_frames; i++)
        json_array_append_new(ts, json_real(vt->timestamps[i]));
    return json_pack("{s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:{s:b, s:f, s:s}, s:f, s:f}", "items",
                     items, "timestamps", ts, "kept_per_frame", kept, "total_per_frame", total,
                     "n_patches", (json_int_t)vt->n_patches, "n_tokens",
                     (json_int_t)vt->mask.n_tokens, "n_visual", (json_int_t)n_visual,
                     "difffp", "enabled", rv->pl.mm.difffp.enabled, "threshold",
                     (double)rv->pl.mm.difffp.threshold, "dtype",
                     rv->pl.mm.difffp.dtype == VL3_DIFFFP_BF16 ? "bf16" : "f32", "preprocess_s",
                     rv->win.preprocess_ms / 1e3, "encode_s", rv->win.encode_ms / 1e3);
}

/* ---- run ----------------------------------------------------------------------------------- */

struct gen_out {
    int32_t *ids;
    int n, cap;
};

static int on_token(void *user, int32_t id)
{
    struct gen_out *g = user;
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 256;
        int32_t *p = realloc(g->ids, sizeof(int32_t) * (size_t)cap);
        if (!p)
            return -ENOMEM;
        g->ids = p;
        g->cap = cap;
    }
    g->ids[g->n++] = id;
    return 0;
}

int cmd_run(int argc, char **argv)
{
    struct run_opts o = {.system = VL3_SYSTEM_NONE, .task = -1};
    int r = parse_args(argc, argv, &o);
    if (r)
        return r < 0 ? CLI_EXIT_OK : r;

    int ret = CLI_EXIT_FAIL;
    vl3_error err = {0};
    vl3_model *m = NULL;
    vl3_ctx *ctx = NULL;
    vl3_prompt prompt = {0};
    struct gen_out gen = {0};
    float *logits = NULL, *step_logits = NULL;
    char *answer = NULL, *instruction = NULL;
    struct run_dump dump = {.meta = NULL};
    struct run_vision rv = {0};
    uint8_t *vtok = NULL;
    size_t vtok_len = 0;
    int visual = o.image || o.frames || o.video;

    if (run_precision || !getenv("VL3_PRECISION"))
        setenv("VL3_PRECISION", run_precision ? run_precision : "auto", 1);
    double t0 = vl3_time_s();
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = o.model;
    mp.n_threads = o.threads;
    mp.backend = (enum vl3_backend_kind)o.backend;
    if ((r = vl3_model_load(&mp, &m, &err)) < 0) {
        fprintf(stderr, "vl3 run: could not load model \"%s\": %s\n", o.model,
                vl3_error_text(&err, r));
        goto out;
    }
    double load_s = vl3_time_s() - t0;
    const vl3_tokenizer *tok = vl3_model_tokenizer(m);
    if (!tok) {
        fprintf(stderr, "vl3 run: model \"%s\" has no usable tokenizer\n", o.model);
        goto out;
    }
    vl3_model_info info;
    vl3_model_get_info(m, &info);

    vl3_prompt_params pp;
    vl3_prompt_params_default(&pp);
    pp.flavour = strcmp(info.layout, "native") == 0 ? VL3_PROMPT_NATIVE : VL3_PROMPT_REMOTE;
    pp.system = o.system;
    pp.system_text = o.system_text;
    pp.user_text = o.prompt;
    pp.add_generation_prompt = 1;
    if (o.task >= 0) {
        /* with a task, --prompt overrides its template; a question-taking task without
         * --question takes --prompt as the question */
        int needs_q = vl3_task_needs_question(o.task);
        const char *question = o.question ? o.question : needs_q ? o.prompt : NULL;
        vl3_task_texts ov = {{0}};
        if (o.prompt && (o.question || !needs_q))
            ov.text[o.task] = o.prompt;
        if ((r = vl3_task_instruction(o.task, &ov, question, o.frames || o.video ? "video" : "image",
                                      &instruction, &err)) < 0) {
            fprintf(stderr, "vl3 run: %s\n", vl3_error_text(&err, r));
            ret = CLI_EXIT_USAGE;
            goto out;
        }
        pp.user_text = instruction;
    }
    if (visual) {
        if ((r = run_vision_prepare(&rv, &o, m, tok, &pp, &err)) < 0) {
            fprintf(stderr, "vl3 run: could not prepare the visual input: %s\n",
                    vl3_error_text(&err, r));
            goto out;
        }
        run_vision_stats(&rv, stderr);
        prompt = rv.prompt; /* moved: freed below through prompt */
        memset(&rv.prompt, 0, sizeof(rv.prompt));
    } else if ((r = vl3_prompt_build(&pp, tok, NULL, NULL, 0, NULL, &prompt, &err)) < 0) {
        fprintf(stderr, "vl3 run: could not build the prompt: %s\n", vl3_error_text(&err, r));
        goto out;
    }

    vl3_gen_params gp = vl3_gen_params_from_model(m);
    if (o.greedy) {
        gp.sampling.greedy = 1;
        gp.sampling.repetition_penalty = 1.0f;
    }
    if (o.have_rp)
        gp.sampling.repetition_penalty = o.rp;
    if (o.have_temperature)
        gp.sampling.temperature = o.temperature;
    if (o.have_top_k)
        gp.sampling.top_k = o.top_k;
    if (o.have_top_p)
        gp.sampling.top_p = o.top_p;
    if (o.have_seed)
        gp.sampling.seed = o.seed;
    if (o.max_new_tokens)
        gp.max_new_tokens = o.max_new_tokens;
    if (o.ignore_eos)
        gp.n_stop = 0;

    int64_t need = prompt.n_ids + gp.max_new_tokens;
    if (prompt.n_ids >= info.max_positions) {
        fprintf(stderr, "vl3 run: prompt of %" PRId64 " tokens exceeds the model's %d positions\n",
                prompt.n_ids, info.max_positions);
        goto out;
    }
    vl3_ctx_params cp = vl3_ctx_params_default();
    cp.n_ctx = (int)(need < info.max_positions ? need : info.max_positions);
    if ((r = vl3_ctx_new(m, &cp, &ctx, &err)) < 0) {
        fprintf(stderr, "vl3 run: could not create a context: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    int V = vl3_ctx_n_vocab(ctx);
    if (o.dump) {
        logits = malloc(sizeof(float) * (size_t)V);
        if (!logits) {
            fprintf(stderr, "vl3 run: out of memory\n");
            goto out;
        }
        gp.prompt_logits = logits;
        if (o.dump_steps) {
            step_logits = malloc(sizeof(float) * (size_t)V * (size_t)gp.max_new_tokens);
            if (!step_logits) {
                fprintf(stderr, "vl3 run: out of memory\n");
                goto out;
            }
            gp.step_logits = step_logits;
        }
    }
    vl3_gen_result res;
    vl3_visual_rows vis = {rv.win.vt.visual, prompt.visual_pos, (int)prompt.n_visual,
                           rv.win.vt.hidden};
    r = vl3_generate(ctx, prompt.ids, (int)prompt.n_ids, visual ? &vis : NULL, &gp, on_token, &gen,
                     &res, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 run: generation failed: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    size_t alen = 0;
    vl3_tokenizer_decode(tok, gen.ids, (size_t)gen.n, 1, NULL, 0, &alen, NULL);
    answer = malloc(alen + 1);
    if (!answer ||
        (r = vl3_tokenizer_decode(tok, gen.ids, (size_t)gen.n, 1, answer, alen + 1, &alen,
                                  &err)) < 0) {
        fprintf(stderr, "vl3 run: could not decode the answer: %s\n",
                answer ? vl3_error_text(&err, r) : "out of memory");
        goto out;
    }
    printf("%s\n", answer);
    fflush(stdout);

    if (o.dump) {
        int64_t s_in = prompt.n_ids, s_lg = V, s_gen = gen.n;
        dump.meta = json_object();
        dump_add(&dump, "input_ids.i32", "int32", prompt.ids, 4, 1, &s_in);
        dump_add(&dump, "logits.f32", "float32", logits, 4, 1, &s_lg);
        int64_t s_st[2] = {gen.n, V};
        if (step_logits)
            dump_add(&dump, "step_logits.f32", "float32", step_logits, 4, 2, s_st);
        dump_add(&dump, "generated.i32", "int32", gen.ids ? (void *)gen.ids : (void *)"", 4, 1,
                 &s_gen);
        json_t *t = json_pack(
            "{s:f, s:f, s:f, s:f, s:f}", "load_s", load_s, "prefill_s", res.prefill_s,
            "decode_s", res.decode_s, "prefill_tok_s",
            res.prefill_s > 0 ? res.n_prompt / res.prefill_s : 0.0, "decode_tok_s",
            res.decode_s > 0 && res.n_generated > 1 ? (res.n_generated - 1) / res.decode_s : 0.0);
        json_t *s = json_pack("{s:b, s:f, s:i, s:f, s:f, s:I, s:i, s:b}", "greedy",
                              gp.sampling.greedy, "temperature", gp.sampling.temperature, "top_k",
                              gp.sampling.top_k, "top_p", gp.sampling.top_p,
                              "repetition_penalty", gp.sampling.repetition_penalty, "seed",
                              (json_int_t)gp.sampling.seed, "max_new_tokens", gp.max_new_tokens,
                              "penalize_prompt", gp.penalize_prompt);
        json_t *stops = json_array();
        for (int i = 0; i < gp.n_stop; i++)
            json_array_append_new(stops, json_integer(gp.stop_ids[i]));
        json_object_set_new(s, "stop_ids", stops);
        json_object_set_new(dump.meta, "format", json_string("vl3-run-dump"));
        json_object_set_new(dump.meta, "version", json_integer(1));
        json_object_set_new(dump.meta, "engine_version", json_string(vl3_engine_version()));
        json_object_set_new(dump.meta, "model", json_string(o.model));
        json_object_set_new(dump.meta, "layout", json_string(info.layout));
        json_object_set_new(dump.meta, "backend", json_string(info.backend));
        json_object_set_new(dump.meta, "vocab_rows", json_integer(V));
        json_object_set_new(dump.meta, "n_prompt", json_integer(res.n_prompt));
        json_object_set_new(dump.meta, "n_generated", json_integer(res.n_generated));
        json_object_set_new(dump.meta, "stopped_by_eos", json_boolean(res.stopped_by_eos));
        json_object_set_new(dump.meta, "prompt_text", json_string(prompt.text));
        json_object_set_new(dump.meta, "answer", json_string(answer));
        json_object_set_new(dump.meta, "timings", t);
        json_object_set_new(dump.meta, "sampling", s);
        int64_t s_pv[2] = {rv.win.batch.n_patches, rv.win.batch.patch_dim};
        int64_t s_vo[2] = {prompt.n_visual, rv.win.vt.hidden};
        if (visual) {
            /* pixel values exist on the cold path only: a cache hit never decodes */
            if (rv.win.batch.pixel_values)
                dump_add(&dump, "pixel_values.f32", "float32", rv.win.batch.pixel_values, 4, 2,
                         s_pv);
            dump_add(&dump, "vision_out.f32", "float32",
                     rv.win.vt.visual && rv.win.vt.n_rows ? (void *)rv.win.vt.visual
                                                          : (void *)"",
                     4, 2,
                     s_vo);
            json_object_set_new(dump.meta, "vision", run_vision_meta(&rv, prompt.n_visual));
            /* the window's visual tokens serialized as the token cache stores them */
            vl3_vt_encode_stats vst;
            if ((r = vl3_visual_tokens_encode(&rv.win.vt, NULL, &vtok, &vtok_len, &vst,
                                              &err)) < 0) {
                fprintf(stderr, "vl3 run: could not serialize the visual tokens: %s\n",
                        vl3_error_text(&err, r));
                goto out;
            }
            int64_t s_vt = (int64_t)vtok_len;
            dump_add(&dump, "visual_tokens.vtok", "uint8", vtok, 1, 1, &s_vt);
        }
        json_object_set_new(dump.meta, "cache",
                            json_string(visual && rv.cache_state ? rv.cache_state : "off"));
        if (visual && strcmp(rv.cache_state, "off") != 0) {
            json_object_set_new(dump.meta, "cache_key", json_string(rv.key));
            json_object_set_new(dump.meta, "cache_lookup_s", json_real(rv.cache_lookup_s));
            json_object_set_new(dump.meta, "cache_store_s", json_real(rv.cache_store_s));
        }
        if ((r = dump_write(o.dump, &dump, &err)) < 0) {
            fprintf(stderr, "vl3 run: could not write the dump: %s\n", vl3_error_text(&err, r));
            goto out;
        }
    }
    ret = CLI_EXIT_OK;
out:
    json_decref(dump.meta);
    free(vtok);
    run_vision_free(&rv);
    free(instruction);
    free(answer);
    free(logits);
    free(step_logits);
    free(gen.ids);
    vl3_prompt_deinit(&prompt);
    vl3_ctx_free(ctx);
    vl3_model_free(m);
    return ret;
}
