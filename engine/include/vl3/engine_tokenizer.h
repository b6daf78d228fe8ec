/* engine_tokenizer.h: part of the public engine API (included by vl3/engine.h; include that). */
#ifndef VL3_ENGINE_TOKENIZER_H
#define VL3_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Load a Qwen2 byte-level BPE tokenizer from a directory holding tokenizer.json, or vocab.json +
 * merges.txt (+ tokenizer_config.json / added_tokens.json). Returns owned via ret. */
int vl3_tokenizer_load(const char *dir, vl3_tokenizer **ret, vl3_error *reterr);
void vl3_tokenizer_free(vl3_tokenizer *tok);

/* Encode UTF-8 text (NFC-normalised first; added/special tokens matched first). Writes at most
 * cap ids and the total count to *ret_n (call again with a bigger buffer when *ret_n > cap). */
int vl3_tokenizer_encode(const vl3_tokenizer *tok, const char *text, size_t len, int32_t *ids,
                         size_t cap, size_t *ret_n, vl3_error *reterr);

/* Decode ids to UTF-8 (invalid sequences become U+FFFD). skip_special drops added tokens.
 * Writes at most cap bytes (NUL-terminated when room) and the full length to *ret_len. */
int vl3_tokenizer_decode(const vl3_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                         char *out, size_t cap, size_t *ret_len, vl3_error *reterr);

/* Id of a token string (added or BPE), or -ENOENT. */
int vl3_tokenizer_token_id(const vl3_tokenizer *tok, const char *token);
/* Number of ids (highest id + 1). */
int vl3_tokenizer_vocab_size(const vl3_tokenizer *tok);

#ifdef __cplusplus
}
#endif

#endif
