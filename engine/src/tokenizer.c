/* tokenizer.c: the tokenizer object and its tables: string map, pair-merge map, per-id bytes,
 * added-token trie, GPT-2 byte<->unicode table and the lossy UTF-8 decoder shared by encode
 * (input sanitising) and decode. Loading lives in tokenizer_load.c, the pre-tokenizer in
 * tokenizer_pretok.c, BPE and encode in tokenizer_bpe.c, decode in tokenizer_decode.c. */
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/util.h"

/* ---- hashing ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n)
{
    /* FNV-1a 64 with a final avalanche; keys are short token strings. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* ---- string map --------------------------------------------------------------------------- */

int vl3__strmap_init(struct vl3__strmap *m, size_t expect)
{
    memset(m, 0, sizeof(*m));
    m->nslots = pow2_at_least(expect * 2 + 16);
    m->slots = calloc(m->nslots, sizeof(*m->slots));
    return m->slots ? 0 : -ENOMEM;
}

void vl3__strmap_deinit(struct vl3__strmap *m)
{
    free(m->slots);
    free(m->entries);
    free(m->pool);
    memset(m, 0, sizeof(*m));
}

static int strmap_grow(struct vl3__strmap *m)
{
    size_t ns = m->nslots * 2;
    uint32_t *slots = calloc(ns, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        const struct vl3__strmap_entry *e = &m->entries[i];
        size_t h = hash_bytes(m->pool + e->off, e->len) & (ns - 1);
        while (slots[h])
            h = (h + 1) & (ns - 1);
        slots[h] = (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = ns;
    return 0;
}

int32_t vl3__strmap_get(const struct vl3__strmap *m, const char *key, size_t len)
{
    if (!m->slots)
        return -1;
    size_t h = hash_bytes(key, len) & (m->nslots - 1);
    for (;;) {
        uint32_t s = m->slots[h];
        if (!s)
            return -1;
        const struct vl3__strmap_entry *e = &m->entries[s - 1];
        if (e->len == len && memcmp(m->pool + e->off, key, len) == 0)
            return e->val;
        h = (h + 1) & (m->nslots - 1);
    }
}

int vl3__strmap_put(struct vl3__strmap *m, const char *key, size_t len, int32_t val)
{
    if (len > UINT32_MAX)
        return -EINVAL;
    size_t h = hash_bytes(key, len) & (m->nslots - 1);
    for (;;) {
        uint32_t s = m->slots[h];
        if (!s)
            break;
        struct vl3__strmap_entry *e = &m->entries[s - 1];
        if (e->len == len && memcmp(m->pool + e->off, key, len) == 0) {
            e->val = val;
            return 0;
        }
        h = (h + 1) & (m->nslots - 1);
    }
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        void *p = realloc(m->entries, nc * sizeof(*m->entries));
        if (!p)
            return -ENOMEM;
        m->entries = p;
        m->cap = nc;
    }
    if (m->pool_len + len + 1 > m->pool_cap) {
        size_t nc = m->pool_cap ? m->pool_cap * 2 : 65536;
        while (nc < m->pool_len + len + 1)
            nc *= 2;
        void *p = realloc(m->pool, nc);
        if (!p)
            return -ENOMEM;
        m->pool = p;
        m->pool_cap = nc;
    }
    memcpy(m->pool + m->pool_len, key, len);
    m->pool[m->pool_len + len] = 0;
    m->entries[m->n] = (struct vl3__strmap_entry){m->pool_len, (uint32_t)len, val};
    m->pool_len += len + 1;
    m->slots[h] = (uint32_t)(++m->n);
    if (m->n * 2 > m->nslots)
        return strmap_grow(m);
    return 0;
}

/* ---- byte <-> unicode (GPT-2 bytes_to_unicode) -------------------------------------------- */

static int byte_is_printable(unsigned b)
{
    /* The bytes GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. */
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

/* Tables built once: byte -> code point and code point (< 256 + 68) -> byte. */
static uint32_t byte_cp[256];
static int16_t cp_byte[256 + 68]; /* 68 = number of non-printable bytes */
static pthread_once_t byte_map_once = PTHREAD_ONCE_INIT;

static void byte_map_init(void)
{
    uint32_t k = 0;
    for (unsigned i = 0; i < VL3_ARRAY_SIZE(cp_byte); i++)
        cp_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        /* The others get 256, 257, ... in byte order. */
        byte_cp[b] = byte_is_printable(b) ? b : 256 + k++;
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

uint32_t vl3__byte_to_cp(uint8_t b)
{
    pthread_once(&byte_map_once, byte_map_init);
    return byte_cp[b];
}

int vl3__cp_to_byte(uint32_t cp)
{
    pthread_once(&byte_map_once, byte_map_init);
    return cp < VL3_ARRAY_SIZE(cp_byte) ? cp_byte[cp] : -1;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

int vl3__utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
    unsigned b0 = s[0];
    if (b0 < 0x80) {
        *ret_cp = b0;
        return 1;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte (Unicode Table 3-7) */
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        cp = b0 & 0x0F;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        cp = b0 & 0x07;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        return -1;
    }
    for (size_t j = 1; j <= need; j++) {
        if (j >= n)
            return 0; /* valid so far, cut short */
        unsigned b = s[j];
        if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return -(int)j;
        cp = (cp << 6) | (b & 0x3F);
    }
    *ret_cp = cp;
    return (int)need + 1;
}

size_t vl3__utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- object ------------------------------------------------------------------------------- */

int vl3__tokenizer_new(size_t expect_vocab, vl3_tokenizer **ret, vl3_error *reterr)
{
    vl3_tokenizer *tok = calloc(1, sizeof(*tok));
    if (!tok)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    if (vl3__strmap_init(&tok->vocab, expect_vocab) < 0)
        goto oom;
    tok->merge_slots = pow2_at_least(expect_vocab * 2 + 16);
    tok->merges = malloc(tok->merge_slots * sizeof(*tok->merges));
    if (!tok->merges)
        goto oom;
    for (size_t i = 0; i < tok->merge_slots; i++)
        tok->merges[i].key = UINT64_MAX;
    tok->cache_slots = 1u << 14;
    tok->cache = calloc(tok->cache_slots, sizeof(*tok->cache));
    if (!tok->cache)
        goto oom;
    if (pthread_mutex_init(&tok->cache_lock, NULL) != 0)
        goto oom;
    *ret = tok;
    return 0;
oom:
    free(tok->cache);
    tok->cache = NULL;
    vl3__strmap_deinit(&tok->vocab);
    free(tok->merges);
    free(tok);
    return vl3_error_set(reterr, -ENOMEM, "out of memory");
}

void vl3_tokenizer_free(vl3_tokenizer *tok)
{
    if (!tok)
        return;
    if (tok->cache) {
        vl3__cache_clear(tok);
        free(tok->cache);
        pthread_mutex_destroy(&tok->cache_lock);
    }
    vl3__strmap_deinit(&tok->vocab);
    free(tok->merges);
    free(tok->tok_off);
    free(tok->tok_len);
    free(tok->tok_flags);
    free(tok->bytes_pool);
    for (size_t i = 0; i < tok->nadded; i++)
        free(tok->added[i].content);
    free(tok->added);
    free(tok->trie);
    free(tok);
}

int vl3__tokenizer_set_token(vl3_tokenizer *tok, int32_t id, const char *bytes, size_t len,
                             unsigned flags)
{
    if (id < 0 || len > UINT32_MAX)
        return -EINVAL;
    if (id >= tok->nids) {
        size_t nn = (size_t)id + 1, old = (size_t)tok->nids;
        /* Grow geometrically but record nids exactly. */
        size_t cap = 1;
        while (cap < nn)
            cap <<= 1;
        size_t oldcap = 1;
        while (oldcap < old)
            oldcap <<= 1;
        if (old == 0 || cap > oldcap) {
            uint32_t *off = realloc(tok->tok_off, cap * sizeof(*off));
            if (!off)
                return -ENOMEM;
            tok->tok_off = off;
            uint32_t *ln = realloc(tok->tok_len, cap * sizeof(*ln));
            if (!ln)
                return -ENOMEM;
            tok->tok_len = ln;
            uint8_t *fl = realloc(tok->tok_flags, cap);
            if (!fl)
                return -ENOMEM;
            tok->tok_flags = fl;
        }
        memset(tok->tok_flags + old, 0, nn - old);
        tok->nids = (int32_t)nn;
    }
    if (tok->bytes_len + len > UINT32_MAX)
        return -EOVERFLOW;
    if (tok->bytes_len + len > tok->bytes_cap) {
        size_t nc = tok->bytes_cap ? tok->bytes_cap * 2 : 1u << 20;
        while (nc < tok->bytes_len + len)
            nc *= 2;
        char *p = realloc(tok->bytes_pool, nc);
        if (!p)
            return -ENOMEM;
        tok->bytes_pool = p;
        tok->bytes_cap = nc;
    }
    if (len)
        memcpy(tok->bytes_pool + tok->bytes_len, bytes, len);
    tok->tok_off[id] = (uint32_t)tok->bytes_len;
    tok->tok_len[id] = (uint32_t)len;
    tok->tok_flags[id] = (uint8_t)(flags | VL3__TOK_PRESENT);
    tok->bytes_len += len;
    if (len > tok->max_token_bytes)
        tok->max_token_bytes = len;
    return 0;
}

static int merges_grow(vl3_tokenizer *tok)
{
    size_t ns = tok->merge_slots * 2;
    struct vl3__merge_slot *m = malloc(ns * sizeof(*m));
    if (!m)
        return -ENOMEM;
    for (size_t i = 0; i < ns; i++)
        m[i].key = UINT64_MAX;
    for (size_t i = 0; i < tok->merge_slots; i++) {
        if (tok->merges[i].key == UINT64_MAX)
            continue;
        size_t h = hash_u64(tok->merges[i].key) & (ns - 1);
        while (m[h].key != UINT64_MAX)
            h = (h + 1) & (ns - 1);
        m[h] = tok->merges[i];
    }
    free(tok->merges);
    tok->merges = m;
    tok->merge_slots = ns;
    return 0;
}

int vl3__tokenizer_add_merge(vl3_tokenizer *tok, int32_t a, int32_t b, int32_t merged,
                             uint32_t rank)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t h = hash_u64(key) & (tok->merge_slots - 1);
    while (tok->merges[h].key != UINT64_MAX && tok->merges[h].key != key)
        h = (h + 1) & (tok->merge_slots - 1);
    if (tok->merges[h].key == UINT64_MAX)
        tok->nmerges++;
    tok->merges[h] = (struct vl3__merge_slot){key, rank, merged};
    if (tok->nmerges * 2 > tok->merge_slots)
        return merges_grow(tok);
    return 0;
}

int vl3__tokenizer_find_merge(const vl3_tokenizer *tok, int32_t a, int32_t b, int32_t *ret_merged)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t h = hash_u64(key) & (tok->merge_slots - 1);
    for (;;) {
        const struct vl3__merge_slot *s = &tok->merges[h];
        if (s->key == key) {
            *ret_merged = s->merged;
            return (int)s->rank;
        }
        if (s->key == UINT64_MAX)
            return -1;
        h = (h + 1) & (tok->merge_slots - 1);
    }
}

int vl3__tokenizer_add_added(vl3_tokenizer *tok, const char *content, size_t len, int32_t id,
                             int special)
{
    for (size_t i = 0; i < tok->nadded; i++) {
        if (tok->added[i].len == len && memcmp(tok->added[i].content, content, len) == 0) {
            tok->added[i].id = id;
            tok->added[i].special = special;
            return 0;
        }
    }
    void *p = realloc(tok->added, (tok->nadded + 1) * sizeof(*tok->added));
    if (!p)
        return -ENOMEM;
    tok->added = p;
    char *c = malloc(len + 1);
    if (!c)
        return -ENOMEM;
    memcpy(c, content, len);
    c[len] = 0;
    tok->added[tok->nadded++] = (struct vl3__added_token){c, len, id, special};
    return 0;
}

static int trie_new_node(vl3_tokenizer *tok, size_t *cap)
{
    if (tok->ntrie == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        void *p = realloc(tok->trie, nc * sizeof(*tok->trie));
        if (!p)
            return -ENOMEM;
        tok->trie = p;
        *cap = nc;
    }
    memset(&tok->trie[tok->ntrie], 0, sizeof(tok->trie[0]));
    tok->trie[tok->ntrie].token = -1;
    return (int)tok->ntrie++;
}

int vl3__tokenizer_finish(vl3_tokenizer *tok, vl3_error *reterr)
{
    /* Single-byte ids: the byte-level string of each byte. */
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        size_t n = vl3__utf8_put(vl3__byte_to_cp((uint8_t)b), s);
        tok->byte_id[b] = vl3__strmap_get(&tok->vocab, s, n);
    }
    /* Added tokens: decoded bytes, flags, trie. */
    size_t cap = 0;
    free(tok->trie);
    tok->trie = NULL;
    tok->ntrie = 0;
    if (trie_new_node(tok, &cap) < 0)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    for (size_t i = 0; i < tok->nadded; i++) {
        const struct vl3__added_token *a = &tok->added[i];
        if (a->len == 0)
            continue; /* an empty added token can never match */
        /* Decoding follows the ByteLevel decoder: if every char is a byte-level char use those
         * bytes, else the content's own UTF-8. */
        char *bytes = malloc(a->len);
        if (!bytes)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        size_t nb = 0, off = 0;
        int all_mapped = 1;
        while (off < a->len) {
            uint32_t cp;
            int k = vl3__utf8_next((const unsigned char *)a->content + off, a->len - off, &cp);
            int b = k > 0 ? vl3__cp_to_byte(cp) : -1;
            if (b < 0) {
                all_mapped = 0;
                break;
            }
            bytes[nb++] = (char)b;
            off += (size_t)k;
        }
        int r =
            all_mapped
                ? vl3__tokenizer_set_token(tok, a->id, bytes, nb,
                                           VL3__TOK_ADDED | (a->special ? VL3__TOK_SPECIAL : 0))
                : vl3__tokenizer_set_token(tok, a->id, a->content, a->len,
                                           VL3__TOK_ADDED | (a->special ? VL3__TOK_SPECIAL : 0));
        free(bytes);
        if (r < 0)
            return vl3_error_set(reterr, r, "could not record added token: %s", vl3_strerror(r));
        r = vl3__strmap_put(&tok->vocab, a->content, a->len, a->id);
        if (r < 0)
            return vl3_error_set(reterr, r, "out of memory");
        int node = 0;
        for (size_t j = 0; j < a->len; j++) {
            unsigned char c = (unsigned char)a->content[j];
            if (!tok->trie[node].child[c]) {
                int nn = trie_new_node(tok, &cap);
                if (nn < 0)
                    return vl3_error_set(reterr, -ENOMEM, "out of memory");
                tok->trie[node].child[c] = nn;
            }
            node = tok->trie[node].child[c];
        }
        tok->trie[node].token = (int32_t)i;
    }
    return 0;
}

/* ---- lookups ------------------------------------------------------------------------------ */

int vl3_tokenizer_token_id(const vl3_tokenizer *tok, const char *token)
{
    if (!tok || !token)
        return -EINVAL;
    int32_t id = vl3__strmap_get(&tok->vocab, token, strlen(token));
    return id >= 0 ? id : -ENOENT;
}

int vl3_tokenizer_is_special(const vl3_tokenizer *tok, int32_t id)
{
    if (!tok)
        return -EINVAL;
    if (id < 0 || id >= tok->nids || !(tok->tok_flags[id] & VL3__TOK_PRESENT))
        return -ENOENT;
    return (tok->tok_flags[id] & VL3__TOK_SPECIAL) ? 1 : 0;
}

int vl3_tokenizer_vocab_size(const vl3_tokenizer *tok)
{
    return tok ? tok->nids : 0;
}

size_t vl3_tokenizer_max_piece_bytes(const vl3_tokenizer *tok)
{
    /* Held-back bytes (3) plus the token, each byte at worst one U+FFFD (3 bytes), plus NUL. */
    return tok ? (tok->max_token_bytes + 3) * 3 + 1 : 0;
}
