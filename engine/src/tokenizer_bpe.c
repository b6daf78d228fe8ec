/* tokenizer_bpe.c: encode: input sanitising, added-token split, NFC, pre-tokenizer, BPE.
 *
 * BPE follows Hugging Face's `BPE::merge_word`: a word starts as its byte ids; repeatedly the
 * adjacent pair with the lowest merge rank is merged, ties going to the leftmost pair. A binary
 * heap of (rank, position) with lazy invalidation keeps long words O(n log n). Words of up to
 * CACHE_MAX_WORD bytes are cached (word bytes -> ids); the cache is cleared when it holds
 * CACHE_MAX_ENTRIES words, and guarded by a mutex since one tokenizer serves many threads. */
#include "tokenizer.h"

#include "vl3/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX_WORD 256
#define CACHE_MAX_ENTRIES 65536

int vl3__ids_push(struct vl3__ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t nc = ids->cap ? ids->cap * 2 : 256;
        void *p = realloc(ids->v, nc * sizeof(*ids->v));
        if (!p)
            return -ENOMEM;
        ids->v = p;
        ids->cap = nc;
    }
    ids->v[ids->n++] = id;
    return 0;
}

/* ---- cache -------------------------------------------------------------------------------- */

static uint64_t word_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static const char *entry_key(const struct vl3__cache_entry *e)
{
    return (const char *)(e + 1);
}

static int32_t *entry_ids(struct vl3__cache_entry *e)
{
    size_t koff = (sizeof(*e) + e->klen + 3) & ~(size_t)3;
    return (int32_t *)((char *)e + koff);
}

void vl3__cache_clear(vl3_tokenizer *tok)
{
    for (size_t i = 0; i < tok->cache_slots; i++) {
        struct vl3__cache_entry *e = tok->cache[i];
        while (e) {
            struct vl3__cache_entry *nx = e->next;
            free(e);
            e = nx;
        }
        tok->cache[i] = NULL;
    }
    tok->cache_n = 0;
}

/* Appends the cached ids of word to out; 1 if found, 0 if not, <0 on error. Locked by caller. */
static int cache_get(vl3_tokenizer *tok, uint64_t h, const char *w, size_t n, struct vl3__ids *out)
{
    for (struct vl3__cache_entry *e = tok->cache[h & (tok->cache_slots - 1)]; e; e = e->next) {
        if (e->hash == h && e->klen == n && memcmp(entry_key(e), w, n) == 0) {
            const int32_t *ids = entry_ids(e);
            for (uint32_t i = 0; i < e->nids; i++)
                if (vl3__ids_push(out, ids[i]) < 0)
                    return -ENOMEM;
            return 1;
        }
    }
    return 0;
}

static void cache_put(vl3_tokenizer *tok, uint64_t h, const char *w, size_t n, const int32_t *ids,
                      size_t nids)
{
    if (tok->cache_n >= CACHE_MAX_ENTRIES)
        vl3__cache_clear(tok);
    size_t koff = (sizeof(struct vl3__cache_entry) + n + 3) & ~(size_t)3;
    struct vl3__cache_entry *e = malloc(koff + nids * sizeof(int32_t));
    if (!e)
        return; /* the cache is an optimisation; the result is already computed */
    e->hash = h;
    e->klen = (uint32_t)n;
    e->nids = (uint32_t)nids;
    memcpy((char *)(e + 1), w, n);
    memcpy(entry_ids(e), ids, nids * sizeof(int32_t));
    size_t slot = h & (tok->cache_slots - 1);
    e->next = tok->cache[slot];
    tok->cache[slot] = e;
    tok->cache_n++;
}

/* ---- BPE ---------------------------------------------------------------------------------- */

struct sym {
    int32_t id;
    int32_t prev, next; /* -1 = none */
    int alive;
};

struct heap_item {
    uint32_t rank;
    uint32_t pos; /* index of the left symbol */
};

static inline int item_less(struct heap_item a, struct heap_item b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(struct heap_item *h, size_t *n, struct heap_item it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(it, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static struct heap_item heap_pop(struct heap_item *h, size_t *n)
{
    struct heap_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && item_less(h[c + 1], h[c]))
            c++;
        if (!item_less(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void push_pair(const vl3_tokenizer *tok, const struct sym *s, int32_t left,
                      struct heap_item *h, size_t *nh)
{
    int32_t right = s[left].next;
    if (right < 0)
        return;
    int32_t merged;
    int rank = vl3__tokenizer_find_merge(tok, s[left].id, s[right].id, &merged);
    if (rank >= 0)
        heap_push(h, nh, (struct heap_item){(uint32_t)rank, (uint32_t)left});
}

static int bpe_compute(const vl3_tokenizer *tok, const char *w, size_t n, struct vl3__ids *out)
{
    enum { STACK_N = 64 };
    struct sym s_stack[STACK_N];
    struct heap_item h_stack[STACK_N];
    struct sym *s = s_stack;
    struct heap_item *h = h_stack;
    int r = 0;
    /* Each merge pushes at most 2 new pairs: n initial + 2n later bounds the heap. */
    if (n > STACK_N / 3) {
        s = malloc(n * sizeof(*s));
        h = malloc(3 * n * sizeof(*h));
        if (!s || !h) {
            r = -ENOMEM;
            goto out;
        }
    }
    /* Initial symbols: one per byte; bytes missing from the vocab are dropped (HF: no unk). */
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[(unsigned char)w[i]];
        if (id < 0)
            continue;
        s[ns] = (struct sym){id, (int32_t)ns - 1, (int32_t)ns + 1, 1};
        ns++;
    }
    if (ns == 0)
        goto out;
    s[ns - 1].next = -1;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        push_pair(tok, s, (int32_t)i, h, &nh);
    while (nh) {
        struct heap_item it = heap_pop(h, &nh);
        struct sym *a = &s[it.pos];
        if (!a->alive || a->next < 0)
            continue;
        struct sym *b = &s[a->next];
        int32_t merged;
        int rank = vl3__tokenizer_find_merge(tok, a->id, b->id, &merged);
        if (rank < 0 || (uint32_t)rank != it.rank)
            continue; /* stale: one side changed since this pair was queued */
        a->id = merged;
        b->alive = 0;
        a->next = b->next;
        if (b->next >= 0)
            s[b->next].prev = (int32_t)it.pos;
        if (a->prev >= 0)
            push_pair(tok, s, a->prev, h, &nh);
        push_pair(tok, s, (int32_t)it.pos, h, &nh);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        r = vl3__ids_push(out, s[i].id);
        if (r < 0)
            goto out;
    }
out:
    if (s != s_stack)
        free(s);
    if (h != h_stack)
        free(h);
    return r;
}

int vl3__bpe_word(const vl3_tokenizer *tok, const char *word, size_t len, struct vl3__ids *out)
{
    if (len == 1) {
        int32_t id = tok->byte_id[(unsigned char)word[0]];
        return id >= 0 ? vl3__ids_push(out, id) : 0;
    }
    if (len > CACHE_MAX_WORD)
        return bpe_compute(tok, word, len, out);
    vl3_tokenizer *mt = (vl3_tokenizer *)tok; /* the cache is the one mutable part */
    uint64_t hsh = word_hash(word, len);
    pthread_mutex_lock(&mt->cache_lock);
    int r = cache_get(mt, hsh, word, len, out);
    pthread_mutex_unlock(&mt->cache_lock);
    if (r != 0)
        return r < 0 ? r : 0;
    size_t start = out->n;
    r = bpe_compute(tok, word, len, out);
    if (r < 0)
        return r;
    pthread_mutex_lock(&mt->cache_lock);
    cache_put(mt, hsh, word, len, out->v + start, out->n - start);
    pthread_mutex_unlock(&mt->cache_lock);
    return 0;
}

/* ---- encode ------------------------------------------------------------------------------- */

static int piece_cb(void *user, const char *piece, size_t len)
{
    void **ctx = user;
    return vl3__bpe_word(ctx[0], piece, len, ctx[1]);
}

/* NFC, pre-tokenize and BPE one stretch of text that holds no added token. */
static int encode_plain(const vl3_tokenizer *tok, const char *text, size_t len,
                        struct vl3__ids *out)
{
    if (len == 0)
        return 0;
    const char *norm;
    size_t nlen;
    char *owned;
    int r = vl3__nfc(text, len, &norm, &nlen, &owned);
    if (r < 0)
        return r;
    void *ctx[2] = {(void *)tok, out};
    r = vl3__pretokenize(norm, nlen, piece_cb, ctx);
    free(owned);
    return r;
}

/* Replace invalid UTF-8 by U+FFFD; *ret_clean is text itself when it is already valid. */
static int sanitize(const char *text, size_t len, const char **ret_clean, size_t *ret_len,
                    char **ret_owned)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = vl3__utf8_next(s + i, len - i, &cp);
        if (k <= 0)
            break;
        i += (size_t)k;
    }
    if (i == len) {
        *ret_clean = text;
        *ret_len = len;
        *ret_owned = NULL;
        return 0;
    }
    /* Worst case every byte becomes 3 bytes. */
    if (len > (SIZE_MAX - 1) / 3)
        return -EOVERFLOW;
    char *o = malloc(len * 3 + 1);
    if (!o)
        return -ENOMEM;
    memcpy(o, text, i);
    size_t n = i;
    while (i < len) {
        int k = vl3__utf8_next(s + i, len - i, &cp);
        if (k > 0) {
            memcpy(o + n, text + i, (size_t)k);
            n += (size_t)k;
            i += (size_t)k;
        } else {
            n += vl3__utf8_put(0xFFFD, o + n);
            i += k < 0 ? (size_t)-k : len - i; /* k == 0: truncated at the end */
        }
    }
    *ret_clean = o;
    *ret_len = n;
    *ret_owned = o;
    return 0;
}

int vl3_tokenizer_encode_ex(const vl3_tokenizer *tok, const char *text, size_t len, unsigned flags,
                            int32_t *ids, size_t cap, size_t *ret_n, vl3_error *reterr)
{
    if (!tok || (!text && len) || (!ids && cap) || !ret_n)
        return vl3_error_set(reterr, -EINVAL, "invalid argument");
    struct vl3__ids out = {0};
    const char *s;
    size_t n;
    char *owned = NULL;
    int r = sanitize(text ? text : "", len, &s, &n, &owned);
    if (r < 0)
        goto fail;
    size_t seg = 0, i = 0;
    const int use_added = !(flags & VL3_TOKENIZE_SPLIT_SPECIAL) && tok->ntrie > 1;
    while (use_added && i < n) {
        /* Longest added token starting at i (leftmost-longest). */
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t j = i; j < n; j++) {
            node = tok->trie[node].child[(unsigned char)s[j]];
            if (!node)
                break;
            if (tok->trie[node].token >= 0) {
                best = tok->trie[node].token;
                best_end = j + 1;
            }
        }
        if (best < 0) {
            i++;
            continue;
        }
        r = encode_plain(tok, s + seg, i - seg, &out);
        if (r < 0)
            goto fail;
        r = vl3__ids_push(&out, tok->added[best].id);
        if (r < 0)
            goto fail;
        i = seg = best_end;
    }
    r = encode_plain(tok, s + seg, n - seg, &out);
    if (r < 0)
        goto fail;
    if (ids && out.n && cap)
        memcpy(ids, out.v, VL3_MIN(out.n, cap) * sizeof(*ids));
    *ret_n = out.n;
    free(out.v);
    free(owned);
    return 0;
fail:
    free(out.v);
    free(owned);
    return vl3_error_set(reterr, r, "could not tokenize: %s", vl3_strerror(r));
}

int vl3_tokenizer_encode(const vl3_tokenizer *tok, const char *text, size_t len, int32_t *ids,
                         size_t cap, size_t *ret_n, vl3_error *reterr)
{
    return vl3_tokenizer_encode_ex(tok, text, len, 0, ids, cap, ret_n, reterr);
}
