/* engine_tokenizer.h: part of the public engine API (included by vl3/engine.h; include that).
 *
 * The Qwen2 byte-level BPE tokenizer, exact to Hugging Face `tokenizers` (spec §9):
 * added/special tokens are split out first (leftmost, longest match, not normalised), the text
 * between them is NFC-normalised, split by the Qwen2 pre-tokenizer regex, mapped through the
 * GPT-2 byte->unicode table and merged by lowest BPE rank. No BOS/EOS is added.
 *
 * Input text is UTF-8. Hugging Face receives a Python str, so invalid UTF-8 cannot reach it;
 * here every maximal invalid subsequence (Unicode "substitution of maximal subparts", as
 * Python's errors="replace" and Rust's from_utf8_lossy do) is replaced by U+FFFD before
 * tokenizing, so any byte string is accepted and never crashes.
 *
 * A loaded tokenizer is immutable apart from an internal word cache guarded by a mutex: it may
 * be shared by several threads. */
#ifndef VL3_ENGINE_TOKENIZER_H
#define VL3_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Load a Qwen2 byte-level BPE tokenizer from a directory holding tokenizer.json, or vocab.json +
 * merges.txt (+ tokenizer_config.json `added_tokens_decoder` / added_tokens.json /
 * special_tokens_map.json). tokenizer.json wins when both forms are present. Missing or corrupt
 * files give VL3_E_FORMAT / -ENOENT with a message naming the file (and line for merges.txt);
 * a tokenizer.json whose model or pre-tokenizer is not Qwen2 byte-level BPE gives
 * VL3_E_UNSUPPORTED. Returns owned via ret (free with vl3_tokenizer_free). */
int vl3_tokenizer_load(const char *dir, vl3_tokenizer **ret, vl3_error *reterr);
/* Accepts NULL. */
void vl3_tokenizer_free(vl3_tokenizer *tok);

enum vl3_tokenize_flag {
    /* Treat added/special token strings in the text as plain text (HF split_special_tokens). */
    VL3_TOKENIZE_SPLIT_SPECIAL = 1u << 0,
};

/* Encode UTF-8 text (added/special tokens matched first, then NFC). Writes at most cap ids and
 * the total count to *ret_n (call again with a bigger buffer when *ret_n > cap). ids may be NULL
 * when cap is 0. text borrows; len bytes are read (NULs included). Thread-safe. */
int vl3_tokenizer_encode(const vl3_tokenizer *tok, const char *text, size_t len, int32_t *ids,
                         size_t cap, size_t *ret_n, vl3_error *reterr);
/* Same with flags (enum vl3_tokenize_flag). */
int vl3_tokenizer_encode_ex(const vl3_tokenizer *tok, const char *text, size_t len, unsigned flags,
                            int32_t *ids, size_t cap, size_t *ret_n, vl3_error *reterr);

/* Decode ids to UTF-8 (invalid sequences become U+FFFD). skip_special drops added tokens marked
 * special. Ids that name no token (negative, gaps, embedding padding rows) are skipped, as
 * Hugging Face does. Writes at most cap bytes (NUL-terminated when room) and the full length
 * (without NUL) to *ret_len; out may be NULL when cap is 0. */
int vl3_tokenizer_decode(const vl3_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                         char *out, size_t cap, size_t *ret_len, vl3_error *reterr);

/* Streaming decode for a generation loop: feed ids one at a time and print what comes back.
 * Bytes that end in an incomplete (but so far valid) UTF-8 sequence are held back until the
 * next id completes them; anything invalid becomes U+FFFD. The concatenation of every push
 * and the final flush equals vl3_tokenizer_decode() of the whole sequence. Plain struct so it
 * can live on the stack; init before use. */
typedef struct vl3_tokenizer_stream {
    unsigned char pending[4];
    int npending;
    int skip_special;
} vl3_tokenizer_stream;

void vl3_tokenizer_stream_init(vl3_tokenizer_stream *s, int skip_special);
/* Append the text of one id. Writes at most cap bytes to out (NUL-terminated when room) and the
 * length to *ret_len. Returns -ENOSPC (state unchanged, *ret_len = bytes needed) when cap is too
 * small; a cap of vl3_tokenizer_max_piece_bytes() always suffices. */
int vl3_tokenizer_stream_push(const vl3_tokenizer *tok, vl3_tokenizer_stream *s, int32_t id,
                              char *out, size_t cap, size_t *ret_len, vl3_error *reterr);
/* Emit what is still held back (as U+FFFD) and reset the stream. cap >= 4 always suffices. */
int vl3_tokenizer_stream_flush(vl3_tokenizer_stream *s, char *out, size_t cap, size_t *ret_len,
                               vl3_error *reterr);
/* Output bytes one stream push can produce at most (NUL included). */
size_t vl3_tokenizer_max_piece_bytes(const vl3_tokenizer *tok);

/* Id of a token string (added token content, or a BPE token in its byte-level form such as
 * "ĠHello"), or -ENOENT. */
int vl3_tokenizer_token_id(const vl3_tokenizer *tok, const char *token);
/* Whether id is an added token marked special (1), another valid id (0), or no token (-ENOENT). */
int vl3_tokenizer_is_special(const vl3_tokenizer *tok, int32_t id);
/* Number of ids (highest id + 1). */
int vl3_tokenizer_vocab_size(const vl3_tokenizer *tok);

#ifdef __cplusplus
}
#endif

#endif
