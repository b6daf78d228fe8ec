/* test_tokenizer_vocab.c: the direct vocab.json reader (engine/src/tokenizer_vocab.c) against
 * jansson, the parser it stands in for (white-box).
 *
 * The property: whatever the reader accepts, jansson (JSON_REJECT_DUPLICATES, as the loader calls
 * it) accepts too, as an object of integers with the same keys and values; what the reader does
 * not accept goes to jansson. Checked on the real Qwen2.5 vocab.json (both must accept it and
 * agree on all 151,643 entries), on hand-made edge cases (escapes, surrogate pairs, UTF-8,
 * numbers, whitespace), and on 30,000 random mutations of a small vocabulary written with
 * escapes (the reader must never accept a mutant that jansson rejects or reads differently). */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizer.h"
#include "vl3/util.h"

struct pairs {
    char **key;
    size_t *klen;
    int64_t *id;
    size_t n, cap;
};

static void pairs_free(struct pairs *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->key[i]);
    free(p->key), free(p->klen), free(p->id);
    memset(p, 0, sizeof(*p));
}

/* The loader's callback gives up on a duplicate key; this one does the same (linear search:
 * the inputs here are small, but for the real vocabulary which has none). */
static int collect(void *arg, const char *key, size_t klen, int64_t id)
{
    struct pairs *p = arg;
    if (p->n < 4096)
        for (size_t i = 0; i < p->n; i++)
            if (p->klen[i] == klen && memcmp(p->key[i], key, klen) == 0)
                return 1;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->key = realloc(p->key, p->cap * sizeof(*p->key));
        p->klen = realloc(p->klen, p->cap * sizeof(*p->klen));
        p->id = realloc(p->id, p->cap * sizeof(*p->id));
        if (!p->key || !p->klen || !p->id)
            return -ENOMEM;
    }
    p->key[p->n] = malloc(klen ? klen : 1);
    if (!p->key[p->n])
        return -ENOMEM;
    memcpy(p->key[p->n], key, klen);
    p->klen[p->n] = klen;
    p->id[p->n++] = id;
    return 0;
}

/* 0 when the reader's verdict on buf is consistent with jansson's; *ret_fast = the reader's
 * return, *ret_jansson = whether jansson read it as an object of integers. */
static int check_one(const char *buf, size_t len, int *ret_fast, int *ret_jansson)
{
    struct pairs p = {0};
    int fast = vl3__vocab_json_read(buf, len, collect, &p);
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    int jok = j && json_is_object(j) && json_object_size(j) > 0;
    const char *k;
    json_t *v;
    if (jok)
        json_object_foreach (j, k, v)
            if (!json_is_integer(v))
                jok = 0;
    *ret_fast = fast;
    *ret_jansson = jok;
    int bad = 0;
    if (fast < 0 || (fast != 0 && fast != 1))
        bad = 1;
    if (fast == 0) {
        if (!jok || json_object_size(j) != p.n)
            bad = 1;
        for (size_t i = 0; !bad && i < p.n; i++) {
            json_t *jv = json_object_getn(j, p.key[i], p.klen[i]);
            if (!jv || json_integer_value(jv) != p.id[i])
                bad = 1;
        }
    }
    if (bad)
        fprintf(stderr, "  reader %d, jansson %s (%s) on: %.*s\n", fast,
                j ? (jok ? "integer object" : "other JSON") : "rejects", j ? "" : je.text,
                (int)(len < 300 ? len : 300), buf);
    json_decref(j);
    pairs_free(&p);
    return bad;
}

TEST(vocab_reader_real_qwen_vocab)
{
    const char *shared = test_shared_dir();
    if (!shared)
        SKIP("no ../shared");
    char full[4300];
    snprintf(full, sizeof(full), "%s/data/qwen2.5-tokenizer/vocab.json", shared);
    char *buf = NULL;
    size_t len = 0;
    vl3_error err = {0};
    if (vl3_file_read(full, 64u << 20, &buf, &len, &err) < 0)
        SKIP("no ../shared/data/qwen2.5-tokenizer");
    int fast, jok;
    ASSERT_EQ(check_one(buf, len, &fast, &jok), 0);
    ASSERT_EQ(fast, 0);
    ASSERT_EQ(jok, 1);
    free(buf);
    return 0;
}

TEST(vocab_reader_edge_cases)
{
    static const struct {
        const char *text;
        int fast; /* the reader's verdict: 0 reads it, 1 leaves it to jansson */
    } cases[] = {
        {"{\"a\":0}", 0},
        {" \t\r\n{ \"a\" : 1 , \"b\":2 } \n", 0},
        {"{\"\":5}", 0},
        {"{\"\\\"\\\\\\/\\b\\f\\n\\r\\t\":3}", 0},
        {"{\"\\u00e9\\u0120\\uFFFD\":4}", 0},
        {"{\"\\ud83d\\ude00\":5}", 0},
        {"{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\":6}", 0},
        {"{\"a\":-0}", 0},
        {"{\"a\":-12}", 0},
        {"{\"a\":123456789012345}", 0},
        /* outside the subset but valid JSON: jansson decides */
        {"{}", 1},
        {"{\"a\":1234567890123456}", 1},
        {"{\"a\":1.0}", 1},
        {"{\"a\":1e3}", 1},
        {"{\"a\":\"1\"}", 1},
        {"{\"a\":[1]}", 1},
        {"[1]", 1},
        {"{\"a\":1,\"a\":2}", 1},
        /* invalid JSON */
        {"", 1},
        {"{", 1},
        {"{\"a\":1", 1},
        {"{\"a\":1,}", 1},
        {"{\"a\":1}x", 1},
        {"{\"a\":1}{}", 1},
        {"{\"a\":01}", 1},
        {"{\"a\":-}", 1},
        {"{\"a\":+1}", 1},
        {"{a:1}", 1},
        {"{'a':1}", 1},
        {"{\"a\x01\":1}", 1},
        {"{\"\\x\":1}", 1},
        {"{\"\\u12\":1}", 1},
        {"{\"\\u0000\":1}", 1},
        {"{\"\\ud83d\":1}", 1},
        {"{\"\\ude00\":1}", 1},
        {"{\"\\ud83d\\u0041\":1}", 1},
        {"{\"\xc3\":1}", 1},
        {"{\"\xc0\xaf\":1}", 1},
        {"{\"\xed\xa0\x80\":1}", 1},
        {"{\"\xf4\x90\x80\x80\":1}", 1},
        {"\xef\xbb\xbf{\"a\":1}", 1},
    };
    int r = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fast, jok;
        size_t len = strlen(cases[i].text);
        if (check_one(cases[i].text, len, &fast, &jok) || fast != cases[i].fast) {
            fprintf(stderr, "case %zu: reader %d, want %d\n", i, fast, cases[i].fast);
            r = 1;
        }
    }
    /* a key as long as the reader's buffer (64 KiB) goes to jansson */
    size_t n = (64u << 10) + 16;
    char *big = malloc(n + 16);
    ASSERT(big);
    memcpy(big, "{\"", 2);
    memset(big + 2, 'x', n);
    memcpy(big + 2 + n, "\":7}", 5);
    int fast, jok;
    ASSERT_EQ(check_one(big, strlen(big), &fast, &jok), 0);
    ASSERT_EQ(fast, 1);
    ASSERT_EQ(jok, 1);
    free(big);
    return r;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

TEST(vocab_reader_mutations_never_disagree)
{
    static const char seed[] = "{\"a\": 0, \"\\u0120b\": 1, \"\\ud83d\\ude00\": 22,\n"
                               " \"\\\"q\\\\\": 303, \"\xc3\xa9t\xc3\xa9\": 4, \"x\\/y\\n\": 5}";
    static const char alphabet[] = "\"\\u{}[]:,. -+0123456789abcdefDEx\t\n\x01\x7f"
                                   "\xc3\xa9\xed\xa0\xf0\x9f\x80\xbf\xff";
    int accepted = 0, n_bad = 0;
    char buf[256];
    for (int it = 0; it < 30000; it++) {
        size_t len = sizeof(seed) - 1;
        memcpy(buf, seed, len);
        int edits = 1 + (int)rnd(3);
        for (int e = 0; e < edits; e++) {
            unsigned op = rnd(3), at = rnd((unsigned)len + 1);
            char c = alphabet[rnd(sizeof(alphabet) - 1)];
            if (op == 0 && at < len) {
                buf[at] = c;
            } else if (op == 1 && len + 1 < sizeof(buf)) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = c;
                len++;
            } else if (op == 2 && at < len) {
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            }
        }
        int fast, jok;
        if (check_one(buf, len, &fast, &jok))
            n_bad++;
        accepted += fast == 0;
    }
    printf("  %d of 30000 mutants read by the reader, all as jansson reads them\n", accepted);
    ASSERT_EQ(n_bad, 0);
    ASSERT(accepted > 1000); /* the mutations do leave many valid inputs to compare */
    return 0;
}
