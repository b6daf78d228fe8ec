/* fuzz_safetensors.c: libFuzzer driver for the checkpoint parsers (untrusted bytes): the
 * safetensors header parser and, on the same input, the config.json parser of model_config.c.
 *
 * Feeds the input as a whole safetensors file image to vl3__st_open_buf. Invariants checked on
 * success: every accepted tensor lies inside the input, its byte count equals its shape product
 * times the element size, and lookups by name find it. Failures must leave a message. Built only
 * with -DVL3_FUZZ=ON (clang), see safetensors.cmake. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* config.json: either a validated config (positive sizes, heads dividing widths) or an error
 * with a message. */
static void fuzz_config(const uint8_t *data, size_t size)
{
    struct vl3__config c;
    vl3_error e = {0};
    int r = vl3__config_parse("config.json", (const char *)data, size, &c, &e);
    if (r < 0) {
        if (!e.msg[0])
            abort();
        return;
    }
    if (c.llm.hidden < 1 || c.llm.n_heads < 1 || c.llm.n_heads % c.llm.n_kv_heads ||
        c.vision.hidden % c.vision.n_heads || c.llm.vocab < 1 || c.image_token_id >= c.llm.vocab)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_config(data, size);
    vl3__st *st = NULL;
    vl3_error e = {0};
    int r = vl3__st_open_buf("fuzz.safetensors", data, size, &st, &e);
    if (r < 0) {
        if (!e.msg[0] || st)
            abort();
        return 0;
    }
    for (size_t i = 0; i < st->n_tensors; i++) {
        const struct vl3__st_tensor *t = &st->tensors[i];
        const uint8_t *d = t->data;
        if (d < data || d > data + size || t->nbytes > (size_t)(data + size - d))
            abort();
        uint64_t count = vl3__dtype_size(t->dtype);
        for (int k = 0; k < t->ndim; k++)
            count *= (uint64_t)t->shape[k];
        if (count != t->nbytes || vl3__st_find(st, t->name) != t)
            abort();
        /* touch the bytes: ASan reports any read outside the input */
        volatile uint8_t acc = 0;
        for (size_t k = 0; k < t->nbytes; k++)
            acc ^= d[k];
        (void)acc;
    }
    vl3__st_free(st);
    return 0;
}
