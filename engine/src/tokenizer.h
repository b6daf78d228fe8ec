/* tokenizer.h: internals of the Qwen2 byte-level BPE tokenizer shared by tokenizer_*.c.
 *
 * Design: every token id has its decoded bytes (tok_bytes); BPE runs on ids, starting from the
 * 256 single-byte ids (byte_id[]) and merging adjacent pairs looked up in an open-addressing
 * map (pair -> rank, merged id). The vocabulary map keys are the byte-level strings of the
 * files ("ĠHello"), used while loading (merges name tokens by string) and by token_id().
 * A word cache (pre-token bytes -> ids) sits behind a mutex because the tokenizer is shared. */
#ifndef VL3_TOKENIZER_INTERNAL_H
#define VL3_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "vl3/engine.h"

/* String -> int32 map with keys copied into a pool. */
struct vl3__strmap {
    uint32_t *slots; /* entry index + 1, 0 = empty */
    size_t nslots;   /* power of two */
    struct vl3__strmap_entry {
        size_t off;
        uint32_t len;
        int32_t val;
    } * entries;
    size_t n, cap;
    char *pool;
    size_t pool_len, pool_cap;
};

int vl3__strmap_init(struct vl3__strmap *m, size_t expect);
void vl3__strmap_deinit(struct vl3__strmap *m);
/* Insert or overwrite. Returns 0 or -ENOMEM. */
int vl3__strmap_put(struct vl3__strmap *m, const char *key, size_t len, int32_t val);
/* Value or -1 when absent. */
int32_t vl3__strmap_get(const struct vl3__strmap *m, const char *key, size_t len);

struct vl3__added_token {
    char *content; /* as written in the files (matched against raw input) */
    size_t len;
    int32_t id;
    int special;
};

struct vl3__merge_slot {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX = empty */
    uint32_t rank;
    int32_t merged;
};

struct vl3__cache_entry {
    uint64_t hash;
    uint32_t klen, nids;
    struct vl3__cache_entry *next;
    /* followed by klen key bytes, then nids int32 ids (aligned) */
};

/* Trie over added-token contents for leftmost-longest matching. */
struct vl3__trie_node {
    int32_t child[256]; /* node index, 0 = none (node 0 is the root) */
    int32_t token;      /* index into added[], -1 = none */
};

struct vl3_tokenizer {
    struct vl3__strmap vocab; /* byte-level token string -> id (BPE tokens and added tokens) */
    int32_t byte_id[256];     /* id of each single-byte token, -1 when the vocab lacks it */

    struct vl3__merge_slot *merges;
    size_t merge_slots; /* power of two */
    size_t nmerges;

    /* Per id: decoded bytes (pointer into bytes_pool), is added, is special. */
    uint32_t *tok_off, *tok_len;
    uint8_t *tok_flags; /* bit0 present, bit1 added, bit2 special */
    char *bytes_pool;
    size_t bytes_len, bytes_cap;
    int32_t nids;           /* highest id + 1 */
    size_t max_token_bytes; /* longest decoded token */

    struct vl3__added_token *added;
    size_t nadded;
    struct vl3__trie_node *trie;
    size_t ntrie;

    pthread_mutex_t cache_lock;
    struct vl3__cache_entry **cache;
    size_t cache_slots, cache_n;
};

#define VL3__TOK_PRESENT 1u
#define VL3__TOK_ADDED 2u
#define VL3__TOK_SPECIAL 4u

/* GPT-2 bytes_to_unicode: the code point standing for byte b, and back (-1 when cp is not one). */
uint32_t vl3__byte_to_cp(uint8_t b);
int vl3__cp_to_byte(uint32_t cp);

/* Lossy UTF-8: length of the next valid sequence at s (>0, *ret_cp set), or -k for an invalid
 * maximal subpart of k bytes, or 0 when s[0..n) is a valid but incomplete prefix (n >= 1). */
int vl3__utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp);
/* Append cp as UTF-8 to out (room for 4). Returns bytes written. */
size_t vl3__utf8_put(uint32_t cp, char *out);

/* vocab.json read directly (tokenizer_vocab.c): fn(arg, key, klen, id) for each pair in file
 * order, key decoded (UTF-8, no NUL). fn returns 0 to go on, > 0 to give up on this reader, < 0
 * for an error. Returns 0 when every pair was read, fn's error, -ENOMEM, or 1 when the text is
 * outside the strict subset this reader takes (or fn gave up): the caller then parses it with
 * jansson, from the start. */
typedef int (*vl3__vocab_entry_fn)(void *arg, const char *key, size_t klen, int64_t id);
int vl3__vocab_json_read(const char *buf, size_t len, vl3__vocab_entry_fn fn, void *arg);

/* Allocate a new tokenizer with empty tables (load fills it). */
int vl3__tokenizer_new(size_t expect_vocab, vl3_tokenizer **ret, vl3_error *reterr);
/* Record the decoded bytes and flags of id (grows the per-id arrays). */
int vl3__tokenizer_set_token(vl3_tokenizer *tok, int32_t id, const char *bytes, size_t len,
                             unsigned flags);
/* Add a merge (a, b) -> merged with the given rank; later duplicates overwrite (as HF). */
int vl3__tokenizer_add_merge(vl3_tokenizer *tok, int32_t a, int32_t b, int32_t merged,
                             uint32_t rank);
/* Rank and merged id of the pair, or -1. */
int vl3__tokenizer_find_merge(const vl3_tokenizer *tok, int32_t a, int32_t b, int32_t *ret_merged);
/* Register an added token (copies content); builds the trie lazily in finish. */
int vl3__tokenizer_add_added(vl3_tokenizer *tok, const char *content, size_t len, int32_t id,
                             int special);
/* After all tokens are in: byte ids, trie. */
int vl3__tokenizer_finish(vl3_tokenizer *tok, vl3_error *reterr);

/* Pre-tokenizer: split NFC text (valid UTF-8) into pieces; calls fn for each (byte range). */
typedef int (*vl3__piece_cb)(void *user, const char *piece, size_t len);
int vl3__pretokenize(const char *text, size_t len, vl3__piece_cb fn, void *user);
/* NFC of valid UTF-8 text. *ret_out is either text itself (no change needed; *ret_owned = NULL)
 * or an owned buffer in *ret_owned. */
int vl3__nfc(const char *text, size_t len, const char **ret_out, size_t *ret_len, char **ret_owned);

/* Growable id vector used by encode. */
struct vl3__ids {
    int32_t *v;
    size_t n, cap;
};
int vl3__ids_push(struct vl3__ids *ids, int32_t id);
/* BPE of one pre-token (raw bytes), appending ids. Uses and fills the cache. */
int vl3__bpe_word(const vl3_tokenizer *tok, const char *word, size_t len, struct vl3__ids *out);
void vl3__cache_clear(vl3_tokenizer *tok);

#endif
