/* bench_tokenize.c: `vl3 bench tokenize`: encode throughput of the engine's tokenizer against
 * the Hugging Face reference (tools/tokenizer-ref/bench.mjs on @huggingface/tokenizers, run with
 * node when installed) on the same text, both single-threaded, whole text in one encode call.
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
        "Tokens/s of the engine's tokenizer vs the Hugging Face JS reference on FILE (default:\n"
        "~2 MB of generated multilingual text with code, numbers and whitespace runs).\n"
        "\n"
        "  --tokenizer DIR  tokenizer files (default $VL3_TOKENIZER_DIR, else " DEFAULT_TOKENIZER
        ")\n"
        "  --ref DIR        tools/tokenizer-ref with node_modules installed (default: found\n"
        "                   from $VL3_TOKENIZER_REF, ./tools/tokenizer-ref or next to the binary)\n"
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

/* The reference directory with node_modules installed, or NULL. */
static const char *find_ref(const char *given, char *buf, size_t cap)
{
    const char *cands[3] = {given, getenv("VL3_TOKENIZER_REF"), "tools/tokenizer-ref"};
    for (int i = 0; i < 3; i++) {
        if (cands[i] && *cands[i] &&
            dir_has(cands[i], "node_modules/@huggingface/tokenizers/package.json")) {
            snprintf(buf, cap, "%s", cands[i]);
            return buf;
        }
    }
    /* Build tree: <src>/build/bin/vl3 -> <src>/tools/tokenizer-ref. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash)
                break;
            *slash = 0;
            snprintf(buf, cap, "%s/tools/tokenizer-ref", exe);
            if (dir_has(buf, "node_modules/@huggingface/tokenizers/package.json"))
                return buf;
        }
    }
    return NULL;
}

struct result {
    size_t tokens;
    double cold_s, warm_s, load_s;
    uint32_t hash;
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
    free(ids);
    vl3_tokenizer_free(tok);
    return r < 0 ? -1 : 0;
}

static int run_ref(const char *ref, const char *dir, const char *file, int repeats,
                   struct result *res)
{
    char cmd[3 * PATH_MAX + 64], line[1024];
    snprintf(cmd, sizeof(cmd), "node '%s/bench.mjs' '%s' '%s' %d", ref, dir, file, repeats);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int ok = fgets(line, sizeof(line), p) != NULL;
    int st = pclose(p);
    if (!ok || st != 0)
        return -1;
    unsigned long long tokens;
    unsigned long hash;
    /* {"tokens":N,"cold_seconds":X,"seconds":Y,"load_seconds":Z,"hash":H} */
    if (sscanf(line,
               "{\"tokens\":%llu,\"cold_seconds\":%lf,\"seconds\":%lf,\"load_seconds\":%lf,"
               "\"hash\":%lu}",
               &tokens, &res->cold_s, &res->warm_s, &res->load_s, &hash) != 5)
        return -1;
    res->tokens = (size_t)tokens;
    res->hash = (uint32_t)hash;
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
    char refbuf[PATH_MAX];
    const char *refdir = find_ref(ref_arg, refbuf, sizeof(refbuf));
    int have_ref = refdir && run_ref(refdir, dir, file, repeats, &ref) == 0;

    printf("text: %zu bytes (%s), tokenizer: %s, single thread, whole text per encode call\n", len,
           optind == argc - 1 ? file : "generated", dir);
    printf("%-28s %10s %10s %14s %14s %9s\n", "implementation", "tokens", "load s", "cold tok/s",
           "warm tok/s", "warm MB/s");
    printf("%-28s %10zu %10.3f %14.0f %14.0f %9.2f\n", "vl3 (C)", ours.tokens, ours.load_s,
           ours.tokens / ours.cold_s, ours.tokens / ours.warm_s, len / ours.warm_s / 1e6);
    if (have_ref) {
        printf("%-28s %10zu %10.3f %14.0f %14.0f %9.2f\n", "HF tokenizers.js (node)", ref.tokens,
               ref.load_s, ref.tokens / ref.cold_s, ref.tokens / ref.warm_s,
               len / ref.warm_s / 1e6);
        printf("%-28s %10s %10.2f %14.2f %14.2f\n", "ratio vl3 / reference", "",
               ref.load_s / ours.load_s, ref.cold_s / ours.cold_s, ref.warm_s / ours.warm_s);
        printf("ids identical: %s\n",
               ours.tokens == ref.tokens && ours.hash == ref.hash ? "yes" : "NO");
        rc = ours.tokens == ref.tokens && ours.hash == ref.hash ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    } else {
        printf("reference unavailable: install it with `cd tools/tokenizer-ref && npm ci` "
               "(needs node), or pass --ref DIR\n");
        rc = CLI_EXIT_OK;
    }
out:
    if (optind != argc - 1 && file[0])
        unlink(file);
    free(text);
    return rc;
}
