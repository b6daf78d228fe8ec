/* prompt.c: the chat template (spec §7) with expanded and pruned placeholders.
 *
 * The template is rendered as a list of pieces: literal text and runs of placeholder tokens.
 * Rendering concatenates them (the run written as its token string repeated); building gathers
 * the text between two placeholder runs and tokenizes it in one call, then appends the
 * placeholder ids directly, recording their positions. That gives the ids of tokenizing the whole
 * rendered text, as the reference processor does (§7.2): the tokenizer matches added tokens
 * (placeholders included) before BPE, so text never merges across a placeholder, while pieces
 * between placeholders must be encoded together ("user\n" + "\nHi" is 271 for "\n\n", not 198 198).
 *
 * One user turn: visual items first (images "<image>\n", after "Time X.Xs: " when the image has a
 * timestamp, remote flavour only; videos "Time X.Xs:<image>," per frame and "\n" after the last),
 * then the instruction text. Remote flavour uses <image> for images and
 * frames; native uses <|image_pad|> / <|video_pad|>. Each placeholder stands for the merged grid
 * of its image/frame, minus the tokens DiffFP dropped. Timestamps print with one decimal, rounded
 * as each flavour's reference rounds them (fmt_time). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/engine.h"

#define DAMO_SYSTEM_PROMPT                                                                         \
    "You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help people "     \
    "understand images and videos."

void vl3_prompt_params_default(vl3_prompt_params *p)
{
    memset(p, 0, sizeof(*p));
    p->flavour = VL3_PROMPT_REMOTE;
    p->system = VL3_SYSTEM_NONE;
    p->add_generation_prompt = 1;
}

void vl3_prompt_deinit(vl3_prompt *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->ids);
    free(p->visual_pos);
    memset(p, 0, sizeof(*p));
}

/* A growable byte buffer. */
struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* The receiver of rendered pieces. */
struct sink {
    int (*text)(struct sink *s, const char *t, size_t n);
    int (*run)(struct sink *s, const char *token, int count);
};

static int emit_text(struct sink *k, const char *t)
{
    return k->text(k, t, strlen(t));
}

/* "X.X" of a frame timestamp. Remote flavour: the hub template applies Jinja's round(1) to the
 * processor's numpy float64 timestamps, which is numpy.round: rint(x * 10) / 10, ties to even on
 * the scaled value (0.35 -> "0.4", 1.05 -> "1.0"), then str(). Native flavour: Python's "{:.1f}",
 * correctly rounded like printf (0.35 -> "0.3", 1.05 -> "1.1"). They differ only at such ties. */
static void fmt_time(char *buf, size_t len, double ts, int numpy_round)
{
    if (numpy_round)
        ts = nearbyint(ts * 10.0) / 10.0;
    snprintf(buf, len, "%.1f", ts);
}

/* Walk the template, calling the sink for every piece. */
static int render(const vl3_prompt_params *p, const vl3_vision_item *items,
                  const vl3_vision_grid *grids, int n_items, const vl3_token_mask *mask,
                  struct sink *k, vl3_error *reterr)
{
    int rc, frame = 0;
    if (p->system == VL3_SYSTEM_DEFAULT || p->system == VL3_SYSTEM_CUSTOM) {
        const char *sys = p->system == VL3_SYSTEM_DEFAULT ? DAMO_SYSTEM_PROMPT : p->system_text;
        if (!sys)
            return vl3_error_set(reterr, -EINVAL, "custom system prompt without text");
        if ((rc = emit_text(k, "<|im_start|>system\n")) < 0 || (rc = emit_text(k, sys)) < 0 ||
            (rc = emit_text(k, "<|im_end|>\n")) < 0)
            return rc;
    }
    if ((rc = emit_text(k, "<|im_start|>user\n")) < 0)
        return rc;
    int64_t total_frames = 0;
    for (int i = 0; i < n_items; i++)
        total_frames += items[i].n_frames;
    if (mask && mask->n_frames != total_frames)
        return vl3_error_set(reterr, -EINVAL, "token mask covers %d frames, the prompt has %lld",
                             mask->n_frames, (long long)total_frames);
    for (int i = 0; i < n_items; i++) {
        const vl3_vision_item *it = &items[i];
        const vl3_vision_grid *g = &grids[i];
        if (g->t != it->n_frames || g->merge <= 0)
            return vl3_error_set(reterr, -EINVAL, "grid of item %d does not match its frames", i);
        int per_frame = vl3_vision_grid_tokens_per_frame(g);
        const char *ph = p->flavour == VL3_PROMPT_NATIVE
                             ? (it->is_video ? "<|video_pad|>" : "<|image_pad|>")
                             : "<image>";
        char tbuf[64];
        for (int f = 0; f < it->n_frames; f++, frame++) {
            int n = mask ? mask->kept_per_frame[frame] : per_frame;
            if (it->is_video) {
                if (it->timestamps) {
                    fmt_time(tbuf, sizeof(tbuf), it->timestamps[f],
                             p->flavour == VL3_PROMPT_REMOTE);
                    if ((rc = emit_text(k, "Time ")) < 0 || (rc = emit_text(k, tbuf)) < 0 ||
                        (rc = emit_text(k, "s:")) < 0)
                        return rc;
                }
                if ((rc = k->run(k, ph, n)) < 0 ||
                    (rc = emit_text(k, f + 1 < it->n_frames ? "," : "\n")) < 0)
                    return rc;
            } else {
                /* "Time X.Xs: " before a timestamped image is the remote template's; the
                 * native processor and template write none (docs/oracle.md) */
                if (it->timestamps && p->flavour == VL3_PROMPT_REMOTE) {
                    fmt_time(tbuf, sizeof(tbuf), it->timestamps[0], 0);
                    if ((rc = emit_text(k, "Time ")) < 0 || (rc = emit_text(k, tbuf)) < 0 ||
                        (rc = emit_text(k, "s: ")) < 0)
                        return rc;
                }
                if ((rc = k->run(k, ph, n)) < 0 || (rc = emit_text(k, "\n")) < 0)
                    return rc;
            }
        }
    }
    if (p->user_text && (rc = emit_text(k, p->user_text)) < 0)
        return rc;
    if ((rc = emit_text(k, "<|im_end|>\n")) < 0)
        return rc;
    if (p->add_generation_prompt && (rc = emit_text(k, "<|im_start|>assistant\n")) < 0)
        return rc;
    return 0;
}

/* ---- text sink ---- */

struct text_sink {
    struct sink base;
    struct sbuf b;
};

static int ts_text(struct sink *s, const char *t, size_t n)
{
    struct text_sink *ts = (struct text_sink *)s;
    sb_add(&ts->b, t, n);
    return ts->b.oom ? -ENOMEM : 0;
}

static int ts_run(struct sink *s, const char *token, int count)
{
    struct text_sink *ts = (struct text_sink *)s;
    for (int i = 0; i < count; i++)
        sb_str(&ts->b, token);
    return ts->b.oom ? -ENOMEM : 0;
}

int vl3_prompt_render(const vl3_prompt_params *p, const vl3_vision_item *items,
                      const vl3_vision_grid *grids, int n_items, const vl3_token_mask *mask,
                      char **ret, vl3_error *reterr)
{
    if (!p || !ret || n_items < 0 || (n_items > 0 && (!items || !grids)))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    struct text_sink ts = {{ts_text, ts_run}, {0}};
    sb_add(&ts.b, "", 0);
    int rc = render(p, items, grids, n_items, mask, &ts.base, reterr);
    if (rc == 0 && ts.b.oom)
        rc = -ENOMEM;
    if (rc < 0) {
        free(ts.b.s);
        return rc == -ENOMEM ? vl3_error_set(reterr, rc, "out of memory") : rc;
    }
    *ret = ts.b.s;
    return 0;
}

/* ---- token sink ---- */

struct id_sink {
    struct sink base;
    const vl3_tokenizer *tok;
    int32_t *ids;
    int64_t n, cap;
    int64_t *pos;
    int64_t n_pos, cap_pos;
    vl3_error *err;
    struct sbuf pending; /* text since the last placeholder run, not yet tokenized */
};

static int ids_reserve(struct id_sink *s, int64_t extra)
{
    if (s->n + extra <= s->cap)
        return 0;
    int64_t cap = s->cap ? s->cap : 1024;
    while (cap < s->n + extra)
        cap *= 2;
    int32_t *ni = realloc(s->ids, sizeof(int32_t) * (size_t)cap);
    if (!ni)
        return -ENOMEM;
    s->ids = ni;
    s->cap = cap;
    return 0;
}

static int is_text(struct sink *k, const char *t, size_t n)
{
    struct id_sink *s = (struct id_sink *)k;
    sb_add(&s->pending, t, n);
    return s->pending.oom ? -ENOMEM : 0;
}

/* Tokenize the pending text in one call and append its ids. */
static int is_flush(struct id_sink *s)
{
    const char *t = s->pending.s;
    size_t n = s->pending.len;
    if (n == 0)
        return 0;
    s->pending.len = 0;
    size_t got = 0;
    int rc = ids_reserve(s, (int64_t)n + 16);
    if (rc < 0)
        return rc;
    rc = vl3_tokenizer_encode(s->tok, t, n, s->ids + s->n, (size_t)(s->cap - s->n), &got, s->err);
    if (rc < 0)
        return rc;
    if ((int64_t)got > s->cap - s->n) { /* cannot happen for byte-level BPE (<= 1 id per byte) */
        if ((rc = ids_reserve(s, (int64_t)got)) < 0)
            return rc;
        rc = vl3_tokenizer_encode(s->tok, t, n, s->ids + s->n, (size_t)(s->cap - s->n), &got,
                                  s->err);
        if (rc < 0)
            return rc;
    }
    s->n += (int64_t)got;
    return 0;
}

static int is_run(struct sink *k, const char *token, int count)
{
    struct id_sink *s = (struct id_sink *)k;
    int id = vl3_tokenizer_token_id(s->tok, token);
    if (id < 0)
        return vl3_error_set(s->err, VL3_E_FORMAT, "the tokenizer has no \"%s\" token", token);
    int rc = is_flush(s);
    if (rc < 0)
        return rc;
    rc = ids_reserve(s, count);
    if (rc < 0)
        return rc;
    if (s->n_pos + count > s->cap_pos) {
        int64_t cap = s->cap_pos ? s->cap_pos : 1024;
        while (cap < s->n_pos + count)
            cap *= 2;
        int64_t *np = realloc(s->pos, sizeof(int64_t) * (size_t)cap);
        if (!np)
            return -ENOMEM;
        s->pos = np;
        s->cap_pos = cap;
    }
    for (int i = 0; i < count; i++) {
        s->pos[s->n_pos++] = s->n;
        s->ids[s->n++] = id;
    }
    return 0;
}

int vl3_prompt_build(const vl3_prompt_params *p, const vl3_tokenizer *tok,
                     const vl3_vision_item *items, const vl3_vision_grid *grids, int n_items,
                     const vl3_token_mask *mask, vl3_prompt *ret, vl3_error *reterr)
{
    if (!p || !tok || !ret || n_items < 0 || (n_items > 0 && (!items || !grids)))
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    vl3_prompt out = {0};
    struct id_sink s = {{is_text, is_run}, tok, NULL, 0, 0, NULL, 0, 0, reterr, {0}};
    int rc = vl3_prompt_render(p, items, grids, n_items, mask, &out.text, reterr);
    if (rc < 0)
        return rc;
    rc = render(p, items, grids, n_items, mask, &s.base, reterr);
    if (rc == 0)
        rc = is_flush(&s);
    free(s.pending.s);
    if (rc < 0) {
        free(out.text);
        free(s.ids);
        free(s.pos);
        return rc == -ENOMEM ? vl3_error_set(reterr, rc, "out of memory") : rc;
    }
    out.ids = s.ids;
    out.n_ids = s.n;
    out.visual_pos = s.pos;
    out.n_visual = s.n_pos;
    *ret = out;
    return 0;
}
