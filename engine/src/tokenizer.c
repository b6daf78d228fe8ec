/* tokenizer.c: placeholder until the Qwen2 BPE tokenizer lands (Engine I): every call reports
 * VL3_E_UNSUPPORTED so callers can be written against the API now. */
#include "vl3/engine.h"

#include <errno.h>

int vl3_tokenizer_load(const char *dir, vl3_tokenizer **ret, vl3_error *reterr)
{
    return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "tokenizer not implemented in this build");
}

void vl3_tokenizer_free(vl3_tokenizer *tok)
{
}

int vl3_tokenizer_encode(const vl3_tokenizer *tok, const char *text, size_t len, int32_t *ids,
                         size_t cap, size_t *ret_n, vl3_error *reterr)
{
    return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "tokenizer not implemented in this build");
}

int vl3_tokenizer_decode(const vl3_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                         char *out, size_t cap, size_t *ret_len, vl3_error *reterr)
{
    return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "tokenizer not implemented in this build");
}

int vl3_tokenizer_token_id(const vl3_tokenizer *tok, const char *token)
{
    return -ENOENT;
}

int vl3_tokenizer_vocab_size(const vl3_tokenizer *tok)
{
    return 0;
}
