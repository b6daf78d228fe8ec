/* fuzz_tokenizer.c: libFuzzer driver for the tokenizer's handling of untrusted text.
 *
 * Each input is (1) encoded as arbitrary bytes, with and without special-token matching; with
 * matching off and x valid UTF-8, decode(encode(x)) must equal NFC(x) (with it on, the text
 * between added tokens is normalised piecewise, as HF does, so "<image>" + U+0338 stays
 * uncomposed and the property does not hold); (2) read as little-endian int32
 * ids and decoded whole and streamed, which must agree byte for byte. Any crash, sanitizer
 * report or broken property aborts. The tokenizer comes from $VL3_FUZZ_TOKENIZER_DIR, else the
 * committed tiny fixture. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "vl3/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vl3_tokenizer *tok;

static void load_once(void)
{
    if (tok)
        return;
    const char *dir = getenv("VL3_FUZZ_TOKENIZER_DIR");
    vl3_error err = {0};
    int r = vl3_tokenizer_load(dir && *dir ? dir : VL3_FUZZ_DEFAULT_DIR, &tok, &err);
    if (r < 0) {
        fprintf(stderr, "fuzz-tokenizer: %s\n", vl3_error_text(&err, r));
        abort();
    }
}

static int32_t *encode(const uint8_t *data, size_t size, unsigned flags, size_t *ret_n)
{
    size_t n = 0;
    if (vl3_tokenizer_encode_ex(tok, (const char *)data, size, flags, NULL, 0, &n, NULL) < 0)
        abort();
    int32_t *ids = malloc((n + 1) * sizeof(*ids));
    size_t n2 = 0;
    if (!ids ||
        vl3_tokenizer_encode_ex(tok, (const char *)data, size, flags, ids, n, &n2, NULL) < 0 ||
        n2 != n)
        abort();
    *ret_n = n;
    return ids;
}

static char *decode(const int32_t *ids, size_t n, int skip, size_t *ret_len)
{
    size_t len = 0;
    if (vl3_tokenizer_decode(tok, ids, n, skip, NULL, 0, &len, NULL) < 0)
        abort();
    char *out = malloc(len + 1);
    size_t len2 = 0;
    if (!out || vl3_tokenizer_decode(tok, ids, n, skip, out, len + 1, &len2, NULL) < 0 ||
        len2 != len)
        abort();
    *ret_len = len;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_once();
    for (unsigned flags = 0; flags < 2; flags++) {
        size_t n, len;
        int32_t *ids = encode(data, size, flags ? VL3_TOKENIZE_SPLIT_SPECIAL : 0, &n);
        char *back = decode(ids, n, 0, &len);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t nl =
            utf8proc_map(data, (utf8proc_ssize_t)size, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (flags && nl >= 0 && ((size_t)nl != len || memcmp(nfc, back, len) != 0))
            abort(); /* valid UTF-8 must round-trip to its NFC */
        free(nfc);
        free(back);
        free(ids);
    }
    /* Bytes as ids: whole decode == streamed decode. */
    size_t nids = size / 4;
    int32_t *ids = malloc((nids + 1) * sizeof(*ids));
    if (!ids)
        abort();
    memcpy(ids, data, nids * 4);
    int vs = vl3_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < nids; i++)
        if (i % 2 == 0 && vs > 0)
            ids[i] = (int32_t)((uint32_t)ids[i] % (uint32_t)(vs + 8)); /* mostly real ids */
    size_t whole_len;
    char *whole = decode(ids, nids, (int)(size & 1), &whole_len);
    size_t cap = vl3_tokenizer_max_piece_bytes(tok), got = 0, len;
    char *piece = malloc(cap);
    vl3_tokenizer_stream s;
    vl3_tokenizer_stream_init(&s, (int)(size & 1));
    for (size_t i = 0; i < nids; i++) {
        if (vl3_tokenizer_stream_push(tok, &s, ids[i], piece, cap, &len, NULL) < 0 ||
            got + len > whole_len || memcmp(whole + got, piece, len) != 0)
            abort();
        got += len;
    }
    if (vl3_tokenizer_stream_flush(&s, piece, cap, &len, NULL) < 0 || got + len != whole_len ||
        memcmp(whole + got, piece, len) != 0)
        abort();
    free(piece);
    free(whole);
    free(ids);
    return 0;
}
