/* cmd_tokenize.c: `vl3 tokenize`: encode text to ids, or decode ids to text, with the engine's
 * Qwen2 tokenizer. Exists for debugging prompts and for scripting conformance checks against
 * the Hugging Face reference (one line of space-separated ids out). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vl3/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vl3 tokenize --model DIR|--tokenizer DIR [options] TEXT\n"
            "\n"
            "Encode TEXT (UTF-8; \"-\" reads stdin) into one line of space-separated token ids.\n"
            "Added/special tokens such as <|im_start|> or <image> in TEXT are recognised.\n"
            "\n"
            "  --model DIR       checkpoint directory (its tokenizer files are used)\n"
            "  --tokenizer DIR   directory holding tokenizer.json or vocab.json + merges.txt\n"
            "  --decode          TEXT is space-separated ids; print the decoded text\n"
            "  --keep-special    with --decode, keep special tokens (skipped by default)\n"
            "  --split-special   encode special-token strings as plain text\n"
            "  -h, --help        this help\n");
}

static int read_stdin(char **ret, size_t *ret_len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return -ENOMEM;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (ferror(stdin)) {
        free(buf);
        return -EIO;
    }
    *ret = buf;
    *ret_len = n;
    return 0;
}

static int do_encode(const vl3_tokenizer *tok, const char *text, size_t len, unsigned flags)
{
    vl3_error err = {0};
    size_t n = 0;
    int r = vl3_tokenizer_encode_ex(tok, text, len, flags, NULL, 0, &n, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 tokenize: %s\n", vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    if (!ids) {
        fprintf(stderr, "vl3 tokenize: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    r = vl3_tokenizer_encode_ex(tok, text, len, flags, ids, n, &n, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 tokenize: %s\n", vl3_error_text(&err, r));
        free(ids);
        return CLI_EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s%" PRId32, i ? " " : "", ids[i]);
    printf("\n");
    free(ids);
    return CLI_EXIT_OK;
}

static int do_decode(const vl3_tokenizer *tok, const char *text, int keep_special)
{
    size_t cap = 16, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    char *out = NULL;
    int rc = CLI_EXIT_FAIL;
    if (!ids)
        goto oom;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX ||
            (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r' && *end != ',')) {
            fprintf(stderr, "vl3 tokenize: invalid token id near \"%.20s\"\n", p);
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        if (n == cap) {
            int32_t *q = realloc(ids, cap * 2 * sizeof(*ids));
            if (!q)
                goto oom;
            ids = q;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    vl3_error err = {0};
    size_t len = 0;
    int r = vl3_tokenizer_decode(tok, ids, n, !keep_special, NULL, 0, &len, &err);
    if (r >= 0) {
        out = malloc(len + 1);
        if (!out)
            goto oom;
        r = vl3_tokenizer_decode(tok, ids, n, !keep_special, out, len + 1, &len, &err);
    }
    if (r < 0) {
        fprintf(stderr, "vl3 tokenize: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    fwrite(out, 1, len, stdout);
    printf("\n");
    rc = CLI_EXIT_OK;
    goto out;
oom:
    fprintf(stderr, "vl3 tokenize: out of memory\n");
out:
    free(out);
    free(ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"tokenizer", required_argument, NULL, 't'},
        {"decode", no_argument, NULL, 'd'},
        {"keep-special", no_argument, NULL, 'k'},
        {"split-special", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    int decode = 0, keep_special = 0;
    unsigned flags = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
        case 't':
            dir = optarg;
            break;
        case 'd':
            decode = 1;
            break;
        case 'k':
            keep_special = 1;
            break;
        case 's':
            flags |= VL3_TOKENIZE_SPLIT_SPECIAL;
            break;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (!dir || optind != argc - 1) {
        fprintf(stderr, "vl3 tokenize: %s\n",
                !dir ? "--model or --tokenizer is required"
                     : "exactly one TEXT argument is needed");
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    char *text = argv[optind], *owned = NULL;
    size_t len = strlen(text);
    if (strcmp(text, "-") == 0) {
        if (read_stdin(&owned, &len) < 0) {
            fprintf(stderr, "vl3 tokenize: could not read stdin\n");
            return CLI_EXIT_FAIL;
        }
        text = owned;
        if (decode) {
            char *p = realloc(owned, len + 1);
            if (!p) {
                free(owned);
                return CLI_EXIT_FAIL;
            }
            text = owned = p;
            owned[len] = 0;
        }
    }
    vl3_tokenizer *tok = NULL;
    vl3_error err = {0};
    int r = vl3_tokenizer_load(dir, &tok, &err);
    int rc;
    if (r < 0) {
        fprintf(stderr, "vl3 tokenize: %s\n", vl3_error_text(&err, r));
        rc = CLI_EXIT_FAIL;
    } else {
        rc = decode ? do_decode(tok, text, keep_special) : do_encode(tok, text, len, flags);
    }
    vl3_tokenizer_free(tok);
    free(owned);
    return rc;
}
