/* tokenizer_pretok.c: NFC normalisation and the Qwen2 pre-tokenizer (spec §9), a hand-written
 * matcher equivalent to the Oniguruma regex Hugging Face tokenizers runs:
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
 *   | \s*[\r\n]+ | \s+(?!\S) | \s+
 *
 * Alternatives are tried in order at each position (leftmost-first), with the backtracking
 * outcomes worked out by hand: `\s*[\r\n]+` ends after the last CR/LF of the whitespace run;
 * `\s+(?!\S)` takes the run minus its last char when a non-space follows (so "   x" gives "  "
 * and " x"), the whole run at the end of text; a single space before a non-space falls to `\s+`.
 * Classes: \p{L} = general categories Lu Ll Lt Lm Lo, \p{N} = Nd Nl No (utf8proc, Unicode 15);
 * \s = Oniguruma's Unicode \s = White_Space: U+0009-000D, U+0020, U+0085, U+00A0, U+1680,
 * U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000. The case-insensitive contractions also
 * accept U+017F (long s), whose simple case fold is 's', as Oniguruma does (the JS port of HF
 * tokenizers folds ASCII only). tests/engine/test_tokenizer_onig.c checks all of this against
 * Oniguruma itself. */
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum { C_L = 1, C_N = 2, C_S = 4, C_CRLF = 8 };

static int is_white_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static uint8_t ascii_class[128];
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static uint8_t classify_slow(uint32_t c)
{
    uint8_t k = 0;
    if (is_white_space(c))
        k |= C_S;
    if (c == '\r' || c == '\n')
        k |= C_CRLF;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        k |= C_L;
        break;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        k |= C_N;
        break;
    default:
        break;
    }
    return k;
}

static void ascii_init(void)
{
    for (uint32_t c = 0; c < 128; c++)
        ascii_class[c] = classify_slow(c);
}

static inline uint8_t classify(uint32_t c)
{
    return c < 128 ? ascii_class[c] : classify_slow(c);
}

/* Simple case fold of the letters the contractions use (ASCII plus U+017F -> 's'). */
static inline uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c == 0x17F)
        return 's';
    return c;
}

/* Length in code points of the contraction at i, or 0. */
static size_t match_contraction(const uint32_t *cp, size_t i, size_t n)
{
    if (cp[i] != '\'' || i + 1 >= n)
        return 0;
    uint32_t a = fold(cp[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (i + 2 >= n)
        return 0;
    uint32_t b = fold(cp[i + 2]);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* Length in code points of the piece starting at i (always >= 1). */
static size_t match_at(const uint32_t *cp, const uint8_t *k, size_t i, size_t n)
{
    size_t m = match_contraction(cp, i, n);
    if (m)
        return m;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t j = i;
    if (!(k[i] & (C_L | C_N | C_CRLF)) && i + 1 < n && (k[i + 1] & C_L))
        j = i + 1;
    if (k[j] & C_L) {
        size_t e = j + 1;
        while (e < n && (k[e] & C_L))
            e++;
        return e - i;
    }
    /* \p{N} */
    if (k[i] & C_N)
        return 1;
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    j = i;
    if (cp[i] == ' ' && i + 1 < n && !(k[i + 1] & (C_S | C_L | C_N)))
        j = i + 1;
    if (!(k[j] & (C_S | C_L | C_N))) {
        size_t e = j + 1;
        while (e < n && !(k[e] & (C_S | C_L | C_N)))
            e++;
        while (e < n && (k[e] & C_CRLF))
            e++;
        return e - i;
    }
    /* Only whitespace is left: k[i] & C_S. */
    size_t e = i;
    size_t last_crlf = SIZE_MAX;
    while (e < n && (k[e] & C_S)) {
        if (k[e] & C_CRLF)
            last_crlf = e;
        e++;
    }
    /* \s*[\r\n]+ */
    if (last_crlf != SIZE_MAX)
        return last_crlf + 1 - i;
    /* \s+(?!\S) */
    if (e == n)
        return e - i;
    if (e - i >= 2)
        return e - 1 - i;
    /* \s+ */
    return e - i;
}

int vl3__pretokenize(const char *text, size_t len, vl3__piece_cb fn, void *user)
{
    pthread_once(&ascii_once, ascii_init);
    /* Decode to code points with byte offsets; small inputs stay on the stack. */
    enum { STACK_N = 256 };
    uint32_t cp_stack[STACK_N];
    uint8_t k_stack[STACK_N];
    size_t off_stack[STACK_N + 1];
    uint32_t *cp = cp_stack;
    uint8_t *k = k_stack;
    size_t *off = off_stack;
    int r = 0;
    if (len > STACK_N) {
        cp = malloc(len * sizeof(*cp));
        k = malloc(len);
        off = malloc((len + 1) * sizeof(*off));
        if (!cp || !k || !off) {
            r = -ENOMEM;
            goto out;
        }
    }
    size_t n = 0, p = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (p < len) {
        uint32_t c;
        int l;
        if (s[p] < 0x80) {
            c = s[p];
            l = 1;
        } else {
            l = vl3__utf8_next(s + p, len - p, &c);
            if (l <= 0) {
                /* Callers pass sanitised UTF-8; treat anything else as one U+FFFD-like byte. */
                c = 0xFFFD;
                l = 1;
            }
        }
        cp[n] = c;
        k[n] = classify(c);
        off[n] = p;
        n++;
        p += (size_t)l;
    }
    off[n] = len;
    for (size_t i = 0; i < n;) {
        size_t m = match_at(cp, k, i, n);
        r = fn(user, text + off[i], off[i + m] - off[i]);
        if (r < 0)
            goto out;
        i += m;
    }
out:
    if (cp != cp_stack)
        free(cp);
    if (k != k_stack)
        free(k);
    if (off != off_stack)
        free(off);
    return r;
}

int vl3__nfc(const char *text, size_t len, const char **ret_out, size_t *ret_len, char **ret_owned)
{
    /* Fast path: no code point >= U+0300 means nothing can compose or decompose under NFC
     * (the first combining marks and NFC_QC=No/Maybe characters start at U+0300). Checking
     * the lead byte suffices: U+0300 is the first code point with lead byte 0xCC. */
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len && s[i] < 0xCC)
        i++;
    if (i == len) {
        *ret_out = text;
        *ret_len = len;
        *ret_owned = NULL;
        return 0;
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0)
        return n == UTF8PROC_ERROR_NOMEM ? -ENOMEM : VL3_E_FORMAT;
    *ret_out = (const char *)dst;
    *ret_len = (size_t)n;
    *ret_owned = (char *)dst;
    return 0;
}
