/* cmd_run.c: `vl3 run`: one prompt through the model, answer on stdout.
 *
 *   vl3 run --model DIR --prompt TEXT [--system-prompt default|none|TEXT] [--greedy]
 *           [--repetition-penalty X] [--max-new-tokens N] [--temperature X] [--top-k N]
 *           [--top-p X] [--seed N] [--threads N] [--dump DIR]
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
#include <sys/stat.h>

#include "cli.h"
#include "vl3/engine.h"
#include "vl3/util.h"

/* ---- options ------------------------------------------------------------------------------- */

struct run_opts {
    const char *model, *prompt, *dump;
    enum vl3_system_mode system;
    const char *system_text;
    int greedy;
    int max_new_tokens;                  /* 0 = default */
    int threads;
    int have_temperature, have_top_k, have_top_p, have_rp, have_seed;
    float temperature, top_p, rp;
    int top_k;
    uint64_t seed;
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

static int parse_float(const char *s, float *ret)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -EINVAL;
    *ret = (float)v;
    return 0;
}

static int opt_model(struct run_opts *o, const char *a) { o->model = a; return 0; }
static int opt_prompt(struct run_opts *o, const char *a) { o->prompt = a; return 0; }
static int opt_dump(struct run_opts *o, const char *a) { o->dump = a; return 0; }
static int opt_greedy(struct run_opts *o, const char *a) { (void)a; o->greedy = 1; return 0; }

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

static const struct run_opt {
    const char *name;
    int has_arg;
    const char *arg, *help;
    int (*set)(struct run_opts *o, const char *arg);
} opts[] = {
    {"model", 1, "DIR", "checkpoint directory (required)", opt_model},
    {"prompt", 1, "TEXT", "the user message (required)", opt_prompt},
    {"system-prompt", 1, "MODE", "default | none | TEXT: system turn (default: none)", opt_system},
    {"greedy", 0, NULL, "argmax decoding, no repetition penalty unless given", opt_greedy},
    {"repetition-penalty", 1, "X", "HF repetition penalty (> 0; 1 = off)", opt_rp},
    {"max-new-tokens", 1, "N", "most tokens to generate (default 1024)", opt_max_new},
    {"temperature", 1, "X", "sampling temperature (> 0)", opt_temperature},
    {"top-k", 1, "N", "keep the N most likely tokens (0 = off)", opt_top_k},
    {"top-p", 1, "X", "nucleus sampling mass in (0, 1]", opt_top_p},
    {"seed", 1, "N", "sampling RNG seed (default 0)", opt_seed},
    {"threads", 1, "N", "CPU threads (default: all)", opt_threads},
    {"dump", 1, "DIR", "write input_ids.i32, logits.f32, generated.i32, meta.json", opt_dump},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 run --model DIR --prompt TEXT [options]\n\n"
               "Run one prompt through the model (chat template around TEXT) and print the "
               "answer.\n\n");
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
    if (!o->model || !o->prompt) {
        fprintf(stderr, "vl3 run: --model and --prompt are required\n");
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
    struct run_opts o = {.system = VL3_SYSTEM_NONE};
    int r = parse_args(argc, argv, &o);
    if (r)
        return r < 0 ? CLI_EXIT_OK : r;

    int ret = CLI_EXIT_FAIL;
    vl3_error err = {0};
    vl3_model *m = NULL;
    vl3_ctx *ctx = NULL;
    vl3_prompt prompt = {0};
    struct gen_out gen = {0};
    float *logits = NULL;
    char *answer = NULL;
    struct run_dump dump = {.meta = NULL};

    double t0 = vl3_time_s();
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = o.model;
    mp.n_threads = o.threads;
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
    if ((r = vl3_prompt_build(&pp, tok, NULL, NULL, 0, NULL, &prompt, &err)) < 0) {
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
    }
    vl3_gen_result res;
    r = vl3_generate(ctx, prompt.ids, (int)prompt.n_ids, NULL, &gp, on_token, &gen, &res, &err);
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
        if ((r = dump_write(o.dump, &dump, &err)) < 0) {
            fprintf(stderr, "vl3 run: could not write the dump: %s\n", vl3_error_text(&err, r));
            goto out;
        }
    }
    ret = CLI_EXIT_OK;
out:
    json_decref(dump.meta);
    free(answer);
    free(logits);
    free(gen.ids);
    vl3_prompt_deinit(&prompt);
    vl3_ctx_free(ctx);
    vl3_model_free(m);
    return ret;
}
