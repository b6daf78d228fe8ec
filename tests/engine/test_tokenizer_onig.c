/* test_tokenizer_onig.c: the hand-written pre-tokenizer against Oniguruma itself, the regex
 * engine Hugging Face tokenizers runs the Qwen2 pattern with (onig crate; Debian libonig 6.9.8,
 * Unicode 14). Built only when pkg-config finds oniguruma (see tokenizer.cmake).
 *
 * Pieces must be identical (HF Split "Isolated": every match, plus any unmatched gap) on the NFC
 * form of every corpus text and on 30,000 random strings drawn from code points chosen to stress
 * the pattern: all White_Space characters, CR/LF, apostrophes with s/t/re/ve/m/ll/d in both cases
 * and long s, letters of several scripts, combining marks, digits of several kinds, symbols,
 * emoji and ZWJ. White-box: calls the internal vl3__pretokenize. */
#include <jansson.h>
#include <oniguruma.h>
#include <utf8proc.h>

#include "test.h"
#include "tokenizer.h"
#include "vl3/util.h"

static const char PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct pieces {
    size_t n;
    size_t off[8192];
};

static int collect(void *user, const char *piece, size_t len)
{
    (void)len;
    struct pieces *p = user;
    if (p->n < VL3_ARRAY_SIZE(p->off))
        p->off[p->n++] = (size_t)(uintptr_t)piece;
    return 0;
}

/* Piece start offsets from Oniguruma (matches and gaps, as HF's Isolated split makes them). */
static int onig_pieces(regex_t *re, const char *s, size_t len, struct pieces *p)
{
    OnigRegion *region = onig_region_new();
    const UChar *start = (const UChar *)s, *end = start + len;
    size_t pos = 0;
    p->n = 0;
    while (pos < len) {
        int r = onig_search(re, start, end, start + pos, end, region, ONIG_OPTION_NONE);
        if (r < 0)
            break; /* no more matches */
        size_t ms = (size_t)region->beg[0], me = (size_t)region->end[0];
        if (ms > pos && p->n < VL3_ARRAY_SIZE(p->off))
            p->off[p->n++] = pos; /* gap */
        if (p->n < VL3_ARRAY_SIZE(p->off))
            p->off[p->n++] = ms;
        pos = me > ms ? me : ms + 1;
    }
    onig_region_free(region, 1);
    return 0;
}

static int compare(regex_t *re, const char *s, size_t len, size_t *bad, const char *what)
{
    struct pieces *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    ASSERT_OK(vl3__pretokenize(s, len, collect, a));
    for (size_t i = 0; i < a->n; i++)
        a->off[i] -= (size_t)(uintptr_t)s;
    onig_pieces(re, s, len, b);
    int same = a->n == b->n && memcmp(a->off, b->off, a->n * sizeof(size_t)) == 0;
    if (!same && (*bad)++ < 5) {
        fprintf(stderr, "%s: pieces differ on \"%.*s\"\n  ours:", what, (int)(len < 120 ? len : 120),
                s);
        for (size_t i = 0; i < a->n && i < 30; i++)
            fprintf(stderr, " %zu", a->off[i]);
        fprintf(stderr, "\n  onig:");
        for (size_t i = 0; i < b->n && i < 30; i++)
            fprintf(stderr, " %zu", b->off[i]);
        fprintf(stderr, "\n");
    }
    free(a);
    free(b);
    return 0;
}

static regex_t *compile(void)
{
    static OnigEncoding enc[] = {ONIG_ENCODING_UTF8};
    onig_initialize(enc, 1);
    regex_t *re = NULL;
    OnigErrorInfo einfo;
    int r = onig_new(&re, (const UChar *)PATTERN, (const UChar *)PATTERN + strlen(PATTERN),
                     ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &einfo);
    return r == ONIG_NORMAL ? re : NULL;
}

TEST(pretokenizer_matches_oniguruma_corpus)
{
    regex_t *re = compile();
    ASSERT(re);
    char path[4200];
    snprintf(path, sizeof(path), "%s/tests/fixtures/tokenizer/corpus.jsonl", test_source_dir());
    char *buf;
    size_t len, ncases = 0, bad = 0;
    ASSERT_OK(vl3_file_read(path, 64u << 20, &buf, &len, NULL));
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &je);
        json_t *t = json_object_get(j, "text");
        ASSERT(json_is_string(t));
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)json_string_value(t),
                                          (utf8proc_ssize_t)json_string_length(t), &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        ASSERT_GE(n, 0);
        ASSERT_OK(compare(re, (const char *)nfc, (size_t)n, &bad, "corpus"));
        free(nfc);
        json_decref(j);
        ncases++;
    }
    free(buf);
    onig_free(re);
    onig_end();
    fprintf(stderr, "oniguruma %s: %zu corpus texts, %zu differ\n", onig_version(), ncases, bad);
    ASSERT_GT(ncases, 1000);
    ASSERT_EQ(bad, 0);
    return 0;
}

TEST(pretokenizer_matches_oniguruma_random)
{
    static const uint32_t cps[] = {
        /* White_Space, CR/LF and near misses (U+180E, U+200B, U+FEFF, U+001C are not \s) */
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x20, 0x20, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2005,
        0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x180E, 0x200B, 0xFEFF, 0x1C, 0x0A, 0x0D,
        /* contractions */
        '\'', '\'', '\'', 's', 'S', 't', 'T', 'r', 'R', 'e', 'E', 'v', 'V', 'm', 'M', 'l', 'L', 'd',
        'D', 0x17F, 0x2019,
        /* letters */
        'a', 'b', 'z', 'Q', 0xE9, 0xDF, 0x130, 0x131, 0x3B1, 0x3A9, 0x436, 0x5D0, 0x627, 0x915,
        0xE01, 0x4E00, 0x6F22, 0x3042, 0x30A2, 0xAC00, 0x1100, 0x2C6, 0x2B0, 0x1C5, 0xAA, 0xBA,
        /* marks (not letters) */
        0x301, 0x308, 0x93F, 0x94D, 0xE31, 0x64E, 0x20D7, 0x200D, 0xFE0F,
        /* digits and numbers */
        '0', '5', '9', 0x660, 0x966, 0xE53, 0xFF11, 0xB2, 0xBD, 0x2163, 0x3007, 0x2460, 0x1D7D9,
        /* punctuation and symbols */
        '.', ',', '!', '?', '-', '_', '(', ')', '<', '>', '|', '"', '/', '\\', '@', '#', 0x3002,
        0xFF01, 0x2014, 0x2026, 0xAB, 0x20AC, 0x221E, 0x2192, 0x1F600, 0x1F44D, 0x1F3FD, 0x1F1FA,
        0x0, 0x7F, 0x1B, 0xAD};
    regex_t *re = compile();
    ASSERT(re);
    uint32_t seed = 7;
    size_t bad = 0;
    char s[400];
    for (int trial = 0; trial < 30000; trial++) {
        size_t n = 0;
        seed = seed * 1664525u + 1013904223u;
        size_t k = 1 + (seed >> 16) % 40;
        for (size_t i = 0; i < k; i++) {
            seed = seed * 1664525u + 1013904223u;
            n += vl3__utf8_put(cps[(seed >> 8) % VL3_ARRAY_SIZE(cps)], s + n);
        }
        ASSERT_OK(compare(re, s, n, &bad, "random"));
    }
    onig_free(re);
    onig_end();
    fprintf(stderr, "random: 30000 strings, %zu differ\n", bad);
    ASSERT_EQ(bad, 0);
    return 0;
}
