/* bench_tokenize.c: `vl3 bench tokenize`: encode throughput of the engine's tokenizer against
 * the Hugging Face reference (Rust tokenizers through tools/oracle/bench_tokenize.py in the
 * oracle venv, else tools/tokenizer-ref/bench.mjs on the JS port with node) on the same text,
 * both single-threaded, whole text in one encode call; then the text's lines one encode call
 * each (vl3 one thread, the Rust reference's encode_batch on all threads).
 * Rows: cold (first encode after load, empty word caches) and warm (best of N later runs); the
 * ids of both implementations are hashed (FNV-1a over the 32-bit ids) and compared. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define DEFAULT_TOKENIZER "../shared/data/qwen2.5-tokenizer"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vl3 bench tokenize [--tokenizer DIR] [--ref DIR] [--repeats N] [FILE]\n"
        "\n"
        "Tokens/s of the engine's tokenizer vs Hugging Face's tokenizers on FILE (default:\n"
        "~2 MB of generated multilingual text with code, numbers and whitespace runs).\n"
        "\n"
        "  --tokenizer DIR  tokenizer files (default $VL3_TOKENIZER_DIR, else " DEFAULT_TOKENIZER
        ")\n"
        "  --ref DIR        the oracle venv (tools/oracle/setup: Rust tokenizers) or\n"
        "                   tools/tokenizer-ref with node_modules (default: $VL3_ORACLE_VENV,\n"
        "                   tools/oracle/.venv-native, $VL3_TOKENIZER_REF, tools/tokenizer-ref)\n"
        "  --repeats N      warm runs, best one counts (default 3)\n");
}

/* Deterministic text: words from several scripts and made-up syllable words (so the word cache
 * also misses), numbers, punctuation, whitespace and newline runs. */
static char *gen_text(size_t target, size_t *ret_len)
{
    static const char *const words[] = {
        "the",      "video",  "shows",  "a",    "rabbit",     "in",         "forest",
        "and",      "The",    "frame",  "time", "Hello",      "world",      "naïve",
        "café",     "Straße", "привет", "мир",  "γεια",       "שלום",       "مرحبا",
        "नमस्ते",     "สวัสดี",   "你好",   "世界", "こんにちは", "안녕하세요", "😀",
        "👍🏽", "don't",  "it's",   "int",  "main(void)", "return",     "x[i]",
        "==",       "->",     "{",      "}",    "0.5",        "2024",       "1,000"};
    static const char *const syl[] = {"ka", "lo", "mi", "tra", "sen", "qu", "or", "bel",
                                      "dy", "ph", "ex", "ion", "ze",  "ru", "sh"};
    static const char *const sep[] = {" ",  " ",  " ",    " ",    ", ", ". ", "\n",
                                      "  ", "\t", "\n\n", "    ", "! ", "? ", "\r\n"};
    char *buf = malloc(target + 256);
    if (!buf)
        return NULL;
    size_t n = 0;
    uint32_t s = 20240601u;
    while (n < target) {
        s = s * 1664525u + 1013904223u;
        const char *w;
        char made[64];
        if ((s >> 24) % 3 == 0) {
            size_t k = 0, ns = 1 + (s >> 8) % 4;
            uint32_t t = s;
            for (size_t i = 0; i < ns; i++) {
                t = t * 1103515245u + 12345u;
                const char *p = syl[(t >> 16) % VL3_ARRAY_SIZE(syl)];
                size_t pl = strlen(p);
                memcpy(made + k, p, pl);
                k += pl;
            }
            made[k] = 0;
            w = made;
        } else {
            w = words[(s >> 8) % VL3_ARRAY_SIZE(words)];
        }
        size_t wl = strlen(w);
        const char *sp = sep[(s >> 4) % VL3_ARRAY_SIZE(sep)];
        size_t sl = strlen(sp);
        memcpy(buf + n, w, wl);
        n += wl;
        memcpy(buf + n, sp, sl);
        n += sl;
    }
    buf[n] = 0;
    *ret_len = n;
    return buf;
}

static uint32_t ids_hash(const int32_t *ids, size_t n)
{
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= ((uint32_t)ids[i] >> (8 * k)) & 0xffu;
            h *= 0x01000193u;
        }
    return h;
}

static int dir_has(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, R_OK) == 0;
}

/* The reference: Hugging Face's Rust tokenizers through tools/oracle/bench_tokenize.py in the
 * oracle venv (kind 'p': ref = that python, script = the .py), else the JS port (kind 'j': ref =
 * tools/tokenizer-ref with node_modules). --ref names either a venv or the JS directory;
 * otherwise $VL3_ORACLE_VENV, $VL3_TOKENIZER_REF, ./tools/..., then the source tree of the binary
 * (<src>/build/bin/vl3). Returns the kind, or 0 when none is installed. */
struct refsel {
    char kind;
    char ref[PATH_MAX], script[PATH_MAX];
};

static int try_py(const char *venv, const char *src, struct refsel *r)
{
    char py[PATH_MAX];
    snprintf(py, sizeof(py), "%s/bin/python", venv);
    if (access(py, X_OK) != 0)
        return 0;
    const char *cands[2] = {venv, src};
    for (int i = 0; i < 2; i++) {
        if (!cands[i])
            continue;
        snprintf(r->script, sizeof(r->script), "%s/%s", cands[i],
                 i == 0 ? "../bench_tokenize.py" : "tools/oracle/bench_tokenize.py");
        if (access(r->script, R_OK) == 0) {
            snprintf(r->ref, sizeof(r->ref), "%s", py);
            r->kind = 'p';
            return 1;
        }
    }
    return 0;
}

static int find_ref(const char *given, struct refsel *r)
{
    char src[PATH_MAX] = "", buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", src, sizeof(src) - 1);
    int have_src = 0;
    if (n > 0) { /* <src>/build/bin/vl3 -> <src> */
        src[n] = 0;
        for (int up = 0; up < 3 && !have_src; up++) {
            char *slash = strrchr(src, '/');
            if (!slash)
                break;
            *slash = 0;
            have_src = dir_has(src, "tools/oracle/bench_tokenize.py") ||
                       dir_has(src, "tools/tokenizer-ref/bench.mjs");
        }
    }
    const char *s = have_src ? src : NULL;
    if (given && *given) {
        if (try_py(given, s, r))
            return r->kind;
        if (dir_has(given, "node_modules/@huggingface/tokenizers/package.json")) {
            snprintf(r->ref, sizeof(r->ref), "%s", given);
            return r->kind = 'j';
        }
        return 0;
    }
    const char *venv = getenv("VL3_ORACLE_VENV");
    if (venv && *venv && try_py(venv, s, r))
        return r->kind;
    if (try_py("tools/oracle/.venv-native", NULL, r))
        return r->kind;
    if (s) {
        snprintf(buf, sizeof(buf), "%s/tools/oracle/.venv-native", s);
        if (try_py(buf, s, r))
            return r->kind;
    }
    const char *js[3] = {getenv("VL3_TOKENIZER_REF"), "tools/tokenizer-ref", NULL};
    if (s) {
        snprintf(buf, sizeof(buf), "%s/tools/tokenizer-ref", s);
        js[2] = buf;
    }
    for (int i = 0; i < 3; i++)
        if (js[i] && *js[i] &&
            dir_has(js[i], "node_modules/@huggingface/tokenizers/package.json")) {
            snprintf(r->ref, sizeof(r->ref), "%s", js[i]);
            return r->kind = 'j';
        }
    return 0;
}

struct result {
    size_t tokens;
    double cold_s, warm_s, load_s;
    uint32_t hash;
    /* the text's lines encoded one call each (vl3: one thread, in order; HF Rust: encode_batch
     * on all cores) */
    int have_batch;
    size_t batch_tokens;
    double batch_s;
    uint32_t batch_hash;
};

static int run_ours(const char *dir, const char *text, size_t len, int repeats, struct result *res)
{
    vl3_error err = {0};
    vl3_tokenizer *tok = NULL;
    double t0 = vl3_time_s();
    int r = vl3_tokenizer_load(dir, &tok, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 bench tokenize: %s\n", vl3_error_text(&err, r));
        return -1;
    }
    res->load_s = vl3_time_s() - t0;
    size_t cap = len + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids)); /* at most one token per byte */
    if (!ids) {
        vl3_tokenizer_free(tok);
        return -1;
    }
    res->warm_s = 1e30;
    for (int i = 0; i <= repeats; i++) {
        double t = vl3_time_s();
        r = vl3_tokenizer_encode(tok, text, len, ids, cap, &n, &err);
        t = vl3_time_s() - t;
        if (r < 0) {
            fprintf(stderr, "vl3 bench tokenize: %s\n", vl3_error_text(&err, r));
            break;
        }
        if (i == 0)
            res->cold_s = t;
        else if (t < res->warm_s)
            res->warm_s = t;
    }
    res->tokens = n;
    res->hash = ids_hash(ids, VL3_MIN(n, cap));
    /* per line ("\n"-split, as Python's str.split), best of repeats */
    res->batch_s = 1e30;
    for (int i = 0; r >= 0 && i < repeats; i++) {
        uint32_t h = 0x811c9dc5u;
        size_t total = 0;
        double t = vl3_time_s();
        for (const char *p = text, *end = text + len;;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t ln = nl ? (size_t)(nl - p) : (size_t)(end - p), m = 0;
            if ((r = vl3_tokenizer_encode(tok, p, ln, ids, cap, &m, &err)) < 0)
                break;
            total += m;
            for (size_t k = 0; k < m; k++)
                for (int b = 0; b < 4; b++) {
                    h ^= ((uint32_t)ids[k] >> (8 * b)) & 0xffu;
                    h *= 0x01000193u;
                }
            if (!nl)
                break;
            p = nl + 1;
        }
        t = vl3_time_s() - t;
        if (t < res->batch_s)
            res->batch_s = t;
        res->batch_tokens = total;
        res->batch_hash = h;
        res->have_batch = r >= 0;
    }
    free(ids);
    vl3_tokenizer_free(tok);
    return r < 0 ? -1 : 0;
}

static int run_ref(const struct refsel *rs, const char *dir, const char *file, int repeats,
                   struct result *res)
{
    char cmd[4 * PATH_MAX + 64], line[1024];
    if (rs->kind == 'p')
        snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' '%s' %d", rs->ref, rs->script, dir, file,
                 repeats);
    else
        snprintf(cmd, sizeof(cmd), "node '%s/bench.mjs' '%s' '%s' %d", rs->ref, dir, file,
                 repeats);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int ok = fgets(line, sizeof(line), p) != NULL;
    int st = pclose(p);
    if (!ok || st != 0)
        return -1;
    unsigned long long tokens;
    unsigned long hash;
    /* {"tokens":N,"cold_seconds":X,"seconds":Y,"load_seconds":Z,"hash":H[,"batch_seconds":B,
     * "batch_tokens":M,"batch_hash":G]} */
    if (sscanf(line,
               "{\"tokens\":%llu,\"cold_seconds\":%lf,\"seconds\":%lf,\"load_seconds\":%lf,"
               "\"hash\":%lu",
               &tokens, &res->cold_s, &res->warm_s, &res->load_s, &hash) != 5)
        return -1;
    res->tokens = (size_t)tokens;
    res->hash = (uint32_t)hash;
    const char *b = strstr(line, ",\"batch_seconds\":");
    unsigned long long bt;
    unsigned long bh;
    if (b && sscanf(b, ",\"batch_seconds\":%lf,\"batch_tokens\":%llu,\"batch_hash\":%lu",
                    &res->batch_s, &bt, &bh) == 3) {
        res->have_batch = 1;
        res->batch_tokens = (size_t)bt;
        res->batch_hash = (uint32_t)bh;
    }
    return 0;
}

int bench_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 't'},
        {"ref", required_argument, NULL, 'r'},
        {"repeats", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = getenv("VL3_TOKENIZER_DIR"), *ref_arg = NULL;
    int repeats = 3, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            dir = optarg;
            break;
        case 'r':
            ref_arg = optarg;
            break;
        case 'n': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 100) {
                fprintf(stderr, "vl3 bench tokenize: --repeats must be 1..100\n");
                return CLI_EXIT_USAGE;
            }
            repeats = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (!dir || !*dir)
        dir = DEFAULT_TOKENIZER;
    if (optind < argc - 1) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    char *text = NULL;
    size_t len = 0;
    char file[PATH_MAX] = "";
    int rc = CLI_EXIT_FAIL;
    if (optind == argc - 1) {
        vl3_error err = {0};
        int r = vl3_file_read(argv[optind], 1u << 30, &text, &len, &err);
        if (r < 0) {
            fprintf(stderr, "vl3 bench tokenize: %s\n", vl3_error_text(&err, r));
            return CLI_EXIT_FAIL;
        }
        snprintf(file, sizeof(file), "%s", argv[optind]);
    } else {
        text = gen_text(2u << 20, &len);
        const char *tmp = getenv("TMPDIR");
        snprintf(file, sizeof(file), "%s/vl3-bench-tokenize-%d.txt", tmp && *tmp ? tmp : "/tmp",
                 (int)getpid());
        if (!text || vl3_file_write(file, text, len, NULL) < 0) {
            fprintf(stderr, "vl3 bench tokenize: could not write \"%s\"\n", file);
            goto out;
        }
    }
    struct result ours = {0}, ref = {0};
    if (run_ours(dir, text, len, repeats, &ours) < 0)
        goto out;
    struct refsel rs = {0};
    int have_ref = find_ref(ref_arg, &rs) && run_ref(&rs, dir, file, repeats, &ref) == 0;
    const char *refname = rs.kind == 'p' ? "HF tokenizers (Rust)" : "HF tokenizers.js (node)";

    printf("text: %zu bytes (%s), tokenizer: %s, single thread, whole text per encode call\n", len,
           optind == argc - 1 ? file : "generated", dir);
    printf("%-28s %10s %10s %14s %14s %9s\n", "implementation", "tokens", "load s", "cold tok/s",
           "warm tok/s", "warm MB/s");
    printf("%-28s %10zu %10.3f %14.0f %14.0f %9.2f\n", "vl3 (C)", ours.tokens, ours.load_s,
           ours.tokens / ours.cold_s, ours.tokens / ours.warm_s, len / ours.warm_s / 1e6);
    if (have_ref) {
        printf("%-28s %10zu %10.3f %14.0f %14.0f %9.2f\n", refname, ref.tokens, ref.load_s,
               ref.tokens / ref.cold_s, ref.tokens / ref.warm_s, len / ref.warm_s / 1e6);
        printf("%-28s %10s %10.2f %14.2f %14.2f\n", "ratio vl3 / reference", "",
               ref.load_s / ours.load_s, ref.cold_s / ours.cold_s, ref.warm_s / ours.warm_s);
        int same = ours.tokens == ref.tokens && ours.hash == ref.hash;
        if (ref.have_batch && ours.have_batch) {
            printf("per line (%s): vl3 one thread %.0f tok/s, reference encode_batch (all "
                   "threads) %.0f tok/s, ratio %.2f\n",
                   "each line one encode call", ours.batch_tokens / ours.batch_s,
                   ref.batch_tokens / ref.batch_s, ref.batch_s / ours.batch_s);
            same = same && ours.batch_tokens == ref.batch_tokens &&
                   ours.batch_hash == ref.batch_hash;
        }
        printf("ids identical: %s\n", same ? "yes" : "NO");
        rc = same ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    } else {
        printf("reference unavailable: make it with tools/oracle/setup (HF Rust tokenizers) or "
               "`cd tools/tokenizer-ref && npm ci` (needs node), or pass --ref DIR\n");
        rc = CLI_EXIT_OK;
    }
out:
    if (optind != argc - 1 && file[0])
        unlink(file);
    free(text);
    return rc;
}
