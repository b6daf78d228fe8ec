/* tokenizer_decode.c: ids -> UTF-8 text, whole and streaming.
 *
 * Each id maps to its decoded bytes (byte-level chars mapped back to bytes at load); the bytes
 * of the whole sequence are then read as lossy UTF-8: every maximal invalid subpart becomes one
 * U+FFFD, as Rust's String::from_utf8_lossy (the HF ByteLevel decoder) does. Ids naming no
 * token are skipped (HF filters them too). The streaming form holds back a trailing valid but
 * incomplete sequence (at most 3 bytes) so its output concatenates to the whole decode. */
#include "tokenizer.h"

#include <errno.h>
#include <string.h>

/* Output sink that counts everything and writes what fits. */
struct sink {
    char *out;
    size_t cap, len;
};

static inline void sink_put(struct sink *k, const char *p, size_t n)
{
    if (k->len < k->cap) {
        size_t room = k->cap - k->len;
        memcpy(k->out + k->len, p, n < room ? n : room);
    }
    k->len += n;
}

static void sink_fffd(struct sink *k)
{
    sink_put(k, "\xEF\xBF\xBD", 3);
}

/* Lossy-decode b[0..n) into the sink. When hold is set, a trailing incomplete but valid
 * sequence is not emitted: its length is returned (else 0). */
static size_t emit_lossy(struct sink *k, const unsigned char *b, size_t n, int hold)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && b[j] < 0x80)
            j++;
        if (j > i) {
            sink_put(k, (const char *)b + i, j - i);
            i = j;
            if (i == n)
                break;
        }
        uint32_t cp;
        int l = vl3__utf8_next(b + i, n - i, &cp);
        if (l > 0) {
            sink_put(k, (const char *)b + i, (size_t)l);
            i += (size_t)l;
        } else if (l < 0) {
            sink_fffd(k);
            i += (size_t)-l;
        } else {
            if (hold)
                return n - i;
            sink_fffd(k);
            i = n;
        }
    }
    return 0;
}

static void terminate(struct sink *k)
{
    if (k->len < k->cap)
        k->out[k->len] = 0;
}

static int id_visible(const vl3_tokenizer *tok, int32_t id, int skip_special)
{
    if (id < 0 || id >= tok->nids)
        return 0;
    uint8_t f = tok->tok_flags[id];
    if (!(f & VL3__TOK_PRESENT))
        return 0;
    return !(skip_special && (f & VL3__TOK_SPECIAL));
}

int vl3_tokenizer_decode(const vl3_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                         char *out, size_t cap, size_t *ret_len, vl3_error *reterr)
{
    if (!tok || (!ids && n) || (!out && cap) || !ret_len)
        return vl3_error_set(reterr, -EINVAL, "invalid argument");
    struct sink k = {out, cap, 0};
    /* Stream token by token, carrying an incomplete sequence across token boundaries. */
    unsigned char buf[4 + 256];
    size_t held = 0;
    for (size_t t = 0; t < n; t++) {
        if (!id_visible(tok, ids[t], skip_special))
            continue;
        const unsigned char *p = (const unsigned char *)tok->bytes_pool + tok->tok_off[ids[t]];
        size_t len = tok->tok_len[ids[t]];
        while (len > 0) {
            /* Join the held bytes with the next chunk of this token. */
            size_t take = len < sizeof(buf) - held ? len : sizeof(buf) - held;
            memcpy(buf + held, p, take);
            p += take;
            len -= take;
            size_t total = held + take;
            held = emit_lossy(&k, buf, total, 1);
            memmove(buf, buf + total - held, held);
        }
    }
    emit_lossy(&k, buf, held, 0);
    terminate(&k);
    *ret_len = k.len;
    return 0;
}

void vl3_tokenizer_stream_init(vl3_tokenizer_stream *s, int skip_special)
{
    memset(s, 0, sizeof(*s));
    s->skip_special = skip_special;
}

int vl3_tokenizer_stream_push(const vl3_tokenizer *tok, vl3_tokenizer_stream *s, int32_t id,
                              char *out, size_t cap, size_t *ret_len, vl3_error *reterr)
{
    if (!tok || !s || (!out && cap) || !ret_len || s->npending < 0 || s->npending > 3)
        return vl3_error_set(reterr, -EINVAL, "invalid argument");
    if (!id_visible(tok, id, s->skip_special)) {
        if (cap)
            out[0] = 0;
        *ret_len = 0;
        return 0;
    }
    const unsigned char *p = (const unsigned char *)tok->bytes_pool + tok->tok_off[id];
    size_t len = tok->tok_len[id];
    /* First pass counts (cap 0); the second writes, so a short buffer leaves s unchanged. */
    unsigned char head[4 + 256];
    struct sink k = {NULL, 0, 0};
    for (int pass = 0; pass < 2; pass++) {
        k = (struct sink){pass ? out : NULL, pass ? cap : 0, 0};
        size_t held = (size_t)s->npending;
        memcpy(head, s->pending, held);
        const unsigned char *q = p;
        size_t left = len;
        while (left > 0) {
            size_t take = left < sizeof(head) - held ? left : sizeof(head) - held;
            memcpy(head + held, q, take);
            q += take;
            left -= take;
            size_t total = held + take;
            held = emit_lossy(&k, head, total, 1);
            memmove(head, head + total - held, held);
        }
        if (pass == 0 && k.len + 1 > cap) {
            *ret_len = k.len + 1;
            return vl3_error_set(reterr, -ENOSPC, "output buffer of %zu bytes is too small", cap);
        }
        if (pass == 1) {
            memcpy(s->pending, head, held);
            s->npending = (int)held;
        }
    }
    terminate(&k);
    *ret_len = k.len;
    return 0;
}

int vl3_tokenizer_stream_flush(vl3_tokenizer_stream *s, char *out, size_t cap, size_t *ret_len,
                               vl3_error *reterr)
{
    if (!s || (!out && cap) || !ret_len || s->npending < 0 || s->npending > 3)
        return vl3_error_set(reterr, -EINVAL, "invalid argument");
    struct sink k = {NULL, 0, 0};
    emit_lossy(&k, s->pending, (size_t)s->npending, 0);
    if (k.len + 1 > cap) {
        *ret_len = k.len + 1;
        return vl3_error_set(reterr, -ENOSPC, "output buffer of %zu bytes is too small", cap);
    }
    k = (struct sink){out, cap, 0};
    emit_lossy(&k, s->pending, (size_t)s->npending, 0);
    terminate(&k);
    *ret_len = k.len;
    s->npending = 0;
    return 0;
}
