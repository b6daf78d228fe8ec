/* tiny_tokenizer.c: tokenizer files for tiny checkpoints.
 *
 * Two modes. Copy: take a real Qwen2 tokenizer directory (vocab.json, merges.txt and the
 * added-token files) and, for the remote layout, append the three VideoLLaMA3 special tokens
 * (<image>, <|stream_start|>, <|stream_end|>) after the highest existing id, as the training
 * code does with add_tokens(special_tokens=True). Build: learn a small byte-level BPE from a
 * fixed built-in English/code text (256 byte symbols in the GPT-2 byte->unicode order, then a
 * few hundred merges chosen by highest pair count, ties to the lowest symbol pair), write it as
 * vocab.json + merges.txt ("#version: 0.2"), and put the Qwen2.5 added tokens right after the
 * BPE vocabulary. Both modes are deterministic. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tiny_model.h"
#include "vl3/json.h"
#include "vl3/util.h"

/* The 22 added tokens of Qwen2.5 in id order, then the 3 that VideoLLaMA3 (remote) adds. */
static const char *const qwen_added[] = {
    "<|endoftext|>",     "<|im_start|>",    "<|im_end|>",       "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>",   "<|box_end|>",      "<|quad_start|>",
    "<|quad_end|>",      "<|vision_start|>", "<|vision_end|>",  "<|vision_pad|>",
    "<|image_pad|>",     "<|video_pad|>",   "<tool_call>",      "</tool_call>",
    "<|fim_prefix|>",    "<|fim_middle|>",  "<|fim_suffix|>",   "<|fim_pad|>",
    "<|repo_name|>",     "<|file_sep|>",
};
static const char *const vl3_added[] = {"<image>", "<|stream_start|>", "<|stream_end|>"};
/* special_tokens_map.json "additional_special_tokens" = qwen_added[1..13]
 * (<|im_start|> .. <|video_pad|>), as in the Qwen2.5 files. */
#define QWEN_N_ADDITIONAL_FIRST 1
#define QWEN_N_ADDITIONAL_LAST 13

#define N_MERGES 320
#define MAX_SYM (256 + N_MERGES)

/* Training text: English prose and C/Python snippets (fixed; changing it changes the vocab). */
static const char corpus[] =
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs "
    "into the forest where the trees are tall and the river is cold.\n"
    "A video is a sequence of frames; each frame is an image. The model looks at the frames, "
    "writes what it sees, and answers questions about the video. What is in the video? "
    "There is a person walking on the street, a car driving by, and a dog running in the park.\n"
    "In the beginning the system reads the configuration, then it loads the model and the "
    "tokenizer, and then it starts to process the jobs that are waiting in the queue.\n"
    "int main(int argc, char **argv)\n{\n    int n = 0;\n    for (int i = 0; i < argc; i++)\n"
    "        n += (int)strlen(argv[i]);\n    printf(\"%d\\n\", n);\n    return 0;\n}\n"
    "def forward(self, x):\n    x = self.norm(x)\n    return self.proj(x) + x\n\n"
    "for frame in frames:\n    tokens = encoder(frame)\n    print(len(tokens))\n"
    "static int load_model(const char *path, struct model *m)\n{\n    if (!path)\n"
    "        return -1;\n    return read_weights(path, m);\n}\n"
    "The image shows a city at night with bright lights, people on the sidewalk and cars in "
    "the street. The woman in the red dress is walking towards the camera.\n"
    "Time 0.0s: the scene starts. Time 1.0s: a man enters. Time 2.0s: the man sits down.\n"
    "1234567890 3.14159 2025 100% 42 7 x+y=z [1, 2, 3] {\"key\": \"value\"}\n"
    "Describe the video in detail. Summarize the main events. What happens at the end?\n";

/* GPT-2's reversible byte -> printable code point map; order[i] is the byte with symbol id i. */
static void byte_map(unsigned cp[256], uint8_t order[256])
{
    int n = 0, k = 0;
    int is_direct[256] = {0};
    for (int b = 0; b < 256; b++)
        is_direct[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    for (int b = 0; b < 256; b++)
        if (is_direct[b]) {
            cp[b] = (unsigned)b;
            order[k++] = (uint8_t)b;
        }
    for (int b = 0; b < 256; b++)
        if (!is_direct[b]) {
            cp[b] = 256u + (unsigned)n++;
            order[k++] = (uint8_t)b;
        }
}

static size_t utf8_put(char *o, unsigned c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2; /* the map never exceeds U+0143 */
}

struct bpe {
    char *tok[MAX_SYM];  /* byte string of each symbol (NUL-terminated; corpus has no NUL) */
    int n_sym;
    int merge_a[N_MERGES], merge_b[N_MERGES];
    int n_merges;
};

struct word {
    int sym[64];
    int n;
    int count;
};

static int cls(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return 1;
    if (c >= '0' && c <= '9')
        return 2;
    if (c == ' ' || c == '\n' || c == '\t')
        return 3;
    return 4;
}

/* Split the corpus into pre-tokens (optional leading space + letter run / punctuation run,
 * single digits, whitespace runs) and count distinct ones. */
static int split_words(const uint8_t id_of[256], struct word **ret, int *ret_n)
{
    size_t len = sizeof(corpus) - 1, cap = len, n = 0;
    struct word *w = calloc(cap, sizeof(*w));
    if (!w)
        return -ENOMEM;
    size_t i = 0;
    while (i < len) {
        size_t s = i;
        unsigned char c = (unsigned char)corpus[i];
        if (c == ' ' && i + 1 < len && (cls((unsigned char)corpus[i + 1]) == 1 ||
                                        cls((unsigned char)corpus[i + 1]) == 4))
            i++;
        int k = cls((unsigned char)corpus[i]);
        i++;
        if (k != 2)
            while (i < len && cls((unsigned char)corpus[i]) == k && i - s < 60)
                i++;
        struct word cur = {.n = 0, .count = 1};
        for (size_t j = s; j < i; j++)
            cur.sym[cur.n++] = id_of[(unsigned char)corpus[j]];
        size_t f = 0;
        for (; f < n; f++)
            if (w[f].n == cur.n && memcmp(w[f].sym, cur.sym, sizeof(int) * (size_t)cur.n) == 0)
                break;
        if (f < n)
            w[f].count++;
        else
            w[n++] = cur;
    }
    *ret = w;
    *ret_n = (int)n;
    return 0;
}

static int bpe_train(struct bpe *b, const uint8_t order[256])
{
    uint8_t id_of[256];
    struct word *w = NULL;
    int nw = 0, r = -ENOMEM;
    int *cnt = calloc((size_t)MAX_SYM * MAX_SYM, sizeof(int));
    uint8_t *ban = calloc((size_t)MAX_SYM * MAX_SYM, 1);
    memset(b, 0, sizeof(*b));
    if (!cnt || !ban)
        goto out;
    for (int i = 0; i < 256; i++) {
        id_of[order[i]] = (uint8_t)i;
        b->tok[i] = malloc(2);
        if (!b->tok[i])
            goto out;
        b->tok[i][0] = (char)order[i];
        b->tok[i][1] = 0;
    }
    b->n_sym = 256;
    if ((r = split_words(id_of, &w, &nw)) < 0)
        goto out;
    while (b->n_merges < N_MERGES) {
        memset(cnt, 0, sizeof(int) * (size_t)MAX_SYM * MAX_SYM);
        for (int i = 0; i < nw; i++)
            for (int j = 0; j + 1 < w[i].n; j++)
                cnt[w[i].sym[j] * MAX_SYM + w[i].sym[j + 1]] += w[i].count;
        int best = -1, bc = 0;
        for (int p = 0; p < MAX_SYM * MAX_SYM; p++)
            if (cnt[p] > bc && !ban[p]) {
                bc = cnt[p];
                best = p;
            }
        if (best < 0)
            break;
        int a = best / MAX_SYM, c = best % MAX_SYM;
        size_t la = strlen(b->tok[a]), lc = strlen(b->tok[c]);
        char *s = malloc(la + lc + 1);
        if (!s) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(s, b->tok[a], la);
        memcpy(s + la, b->tok[c], lc + 1);
        int dup = 0;
        for (int k = 0; k < b->n_sym && !dup; k++)
            dup = strcmp(b->tok[k], s) == 0;
        if (dup) {
            free(s);
            ban[best] = 1;
            continue;
        }
        int ns = b->n_sym++;
        b->tok[ns] = s;
        b->merge_a[b->n_merges] = a;
        b->merge_b[b->n_merges] = c;
        b->n_merges++;
        for (int i = 0; i < nw; i++) {
            int o = 0;
            for (int j = 0; j < w[i].n; j++) {
                if (j + 1 < w[i].n && w[i].sym[j] == a && w[i].sym[j + 1] == c) {
                    w[i].sym[o++] = ns;
                    j++;
                } else {
                    w[i].sym[o++] = w[i].sym[j];
                }
            }
            w[i].n = o;
        }
    }
    r = 0;
out:
    free(w);
    free(cnt);
    free(ban);
    return r;
}

static void bpe_free(struct bpe *b)
{
    for (int i = 0; i < b->n_sym; i++)
        free(b->tok[i]);
}

/* The printable (byte->unicode mapped) UTF-8 form of a byte string into out (cap >= 2*len+1). */
static void mapped(const unsigned cp[256], const char *s, char *out)
{
    size_t o = 0;
    for (; *s; s++)
        o += utf8_put(out + o, cp[(unsigned char)*s]);
    out[o] = 0;
}

static json_t *added_entry(const char *content)
{
    return json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", content, "lstrip", 0,
                     "normalized", 0, "rstrip", 0, "single_word", 0, "special", 1);
}

static int dump(json_t *j, const char *dir, const char *file, vl3_error *reterr)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (!j)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    int r = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (r != 0)
        return vl3_error_set(reterr, -EIO, "could not write \"%s\"", path);
    return 0;
}

/* tokenizer_config.json + added_tokens.json + special_tokens_map.json for an added-token list
 * starting at id base. */
static int write_added(const char *dir, int base, enum vl3__layout layout, vl3_error *reterr)
{
    size_t nq = VL3_ARRAY_SIZE(qwen_added), nv = layout == VL3__LAYOUT_REMOTE ? 3 : 0;
    json_t *added = json_object(), *dec = json_object(), *extra = json_array();
    char key[16];
    for (size_t i = 0; i < nq + nv; i++) {
        const char *t = i < nq ? qwen_added[i] : vl3_added[i - nq];
        snprintf(key, sizeof(key), "%d", base + (int)i);
        json_object_set_new(added, t, json_integer(base + (int)i));
        json_object_set_new(dec, key, added_entry(t));
    }
    for (size_t i = QWEN_N_ADDITIONAL_FIRST; i < QWEN_N_ADDITIONAL_FIRST + QWEN_N_ADDITIONAL_LAST; i++)
        json_array_append_new(extra, json_string(qwen_added[i]));
    json_t *cfg = json_pack(
        "{s:b, s:b, s:o, s:O, s:n, s:b, s:s, s:s, s:i, s:s, s:b, s:s, s:n}", "add_bos_token", 0,
        "add_prefix_space", 0, "added_tokens_decoder", dec, "additional_special_tokens", extra,
        "bos_token", "clean_up_tokenization_spaces", 0, "eos_token", "<|im_end|>", "errors",
        "replace", "model_max_length", 32768, "pad_token", "<|endoftext|>",
        "split_special_tokens", 0, "tokenizer_class", "Qwen2Tokenizer", "unk_token");
    json_t *map = json_pack("{s:o, s:s, s:s}", "additional_special_tokens", extra, "eos_token",
                            "<|im_end|>", "pad_token", "<|endoftext|>");
    int r = dump(added, dir, "added_tokens.json", reterr);
    if (r >= 0)
        r = dump(cfg, dir, "tokenizer_config.json", reterr);
    else
        json_decref(cfg);
    if (r >= 0)
        r = dump(map, dir, "special_tokens_map.json", reterr);
    else
        json_decref(map);
    return r;
}

static int build_own(const char *dir, enum vl3__layout layout, struct vl3__tiny_tok *ret,
                     vl3_error *reterr)
{
    unsigned cp[256];
    uint8_t order[256];
    struct bpe b;
    char path[PATH_MAX], sa[256], sb[256];
    FILE *f = NULL;
    byte_map(cp, order);
    int r = bpe_train(&b, order);
    if (r < 0) {
        bpe_free(&b);
        return vl3_error_set(reterr, r, "out of memory");
    }
    json_t *vocab = json_object();
    for (int i = 0; i < b.n_sym && vocab; i++) {
        char m[256];
        mapped(cp, b.tok[i], m);
        json_object_set_new(vocab, m, json_integer(i));
    }
    if ((r = dump(vocab, dir, "vocab.json", reterr)) < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/merges.txt", dir);
    f = fopen(path, "we");
    if (!f) {
        r = vl3_error_set(reterr, -errno, "could not create \"%s\": %s", path, strerror(errno));
        goto out;
    }
    fputs("#version: 0.2\n", f);
    for (int i = 0; i < b.n_merges; i++) {
        mapped(cp, b.tok[b.merge_a[i]], sa);
        mapped(cp, b.tok[b.merge_b[i]], sb);
        fprintf(f, "%s %s\n", sa, sb);
    }
    if (fclose(f) != 0) {
        f = NULL;
        r = vl3_error_set(reterr, -EIO, "could not write \"%s\"", path);
        goto out;
    }
    f = NULL;
    int base = b.n_sym;
    if ((r = write_added(dir, base, layout, reterr)) < 0)
        goto out;
    ret->endoftext = base + 0;
    ret->im_start = base + 1;
    ret->im_end = base + 2;
    ret->image_pad = base + 12;
    ret->video_pad = base + 13;
    ret->image = layout == VL3__LAYOUT_REMOTE ? base + 22 : -1;
    ret->n_ids = base + (int)VL3_ARRAY_SIZE(qwen_added) + (layout == VL3__LAYOUT_REMOTE ? 3 : 0);
    ret->vocab_rows = (ret->n_ids + 63) / 64 * 64;
out:
    bpe_free(&b);
    return r;
}

static int copy_file(const char *src, const char *dst, const char *file, vl3_error *reterr)
{
    char sp[PATH_MAX], dp[PATH_MAX], *buf = NULL;
    size_t len;
    snprintf(sp, sizeof(sp), "%s/%s", src, file);
    snprintf(dp, sizeof(dp), "%s/%s", dst, file);
    int r = vl3_file_read(sp, 256u << 20, &buf, &len, reterr);
    if (r >= 0)
        r = vl3_file_write(dp, buf, len, reterr);
    free(buf);
    return r;
}

static int copy_real(const char *dir, const char *src, enum vl3__layout layout,
                     struct vl3__tiny_tok *ret, vl3_error *reterr)
{
    char path[PATH_MAX];
    json_t *added = NULL, *cfg = NULL, *map = NULL;
    int r;
    if ((r = copy_file(src, dir, "vocab.json", reterr)) < 0 ||
        (r = copy_file(src, dir, "merges.txt", reterr)) < 0)
        return r;
    snprintf(path, sizeof(path), "%s/added_tokens.json", src);
    if ((r = vl3_json_load_file(path, 16u << 20, &added, reterr)) < 0)
        return r;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", src);
    if ((r = vl3_json_load_file(path, 64u << 20, &cfg, reterr)) < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/special_tokens_map.json", src);
    if ((r = vl3_json_load_file(path, 16u << 20, &map, reterr)) < 0)
        goto out;
    json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    if (!json_is_object(added) || !json_is_object(dec)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT,
                          "\"%s\": added_tokens.json or tokenizer_config.json added_tokens_decoder "
                          "is not an object",
                          src);
        goto out;
    }
    int max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(added, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= VL3__MAX_VOCAB) {
            r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s/added_tokens.json\": \"%s\" is not an id",
                              src, k);
            goto out;
        }
        max_id = VL3_MAX(max_id, (int)json_integer_value(v));
    }
    if (layout == VL3__LAYOUT_REMOTE && !json_object_get(added, "<image>")) {
        for (int i = 0; i < 3; i++) {
            char key[16];
            snprintf(key, sizeof(key), "%d", max_id + 1);
            json_object_set_new(added, vl3_added[i], json_integer(max_id + 1));
            json_object_set_new(dec, key, added_entry(vl3_added[i]));
            max_id++;
        }
    }
#define ID(t) (json_is_integer(json_object_get(added, t)) ? (int)json_integer_value(json_object_get(added, t)) : -1)
    ret->endoftext = ID("<|endoftext|>");
    ret->im_start = ID("<|im_start|>");
    ret->im_end = ID("<|im_end|>");
    ret->image_pad = ID("<|image_pad|>");
    ret->video_pad = ID("<|video_pad|>");
    ret->image = ID("<image>");
#undef ID
    ret->n_ids = max_id + 1;
    /* Qwen2.5 1.5B pads the embedding to 151936 rows; otherwise round up to 128 */
    ret->vocab_rows = ret->n_ids <= 151936 ? 151936 : (ret->n_ids + 127) / 128 * 128;
    r = dump(added, dir, "added_tokens.json", reterr);
    added = NULL;
    if (r >= 0)
        r = dump(cfg, dir, "tokenizer_config.json", reterr);
    cfg = NULL;
    if (r >= 0)
        r = dump(map, dir, "special_tokens_map.json", reterr);
    map = NULL;
out:
    json_decref(added);
    json_decref(cfg);
    json_decref(map);
    return r;
}

int vl3__tiny_tokenizer_write(const char *out_dir, const char *src_dir, enum vl3__layout layout,
                              struct vl3__tiny_tok *ret, vl3_error *reterr)
{
    struct vl3__tiny_tok t = {-1, -1, -1, -1, -1, -1, 0, 0};
    int r = src_dir ? copy_real(out_dir, src_dir, layout, &t, reterr)
                    : build_own(out_dir, layout, &t, reterr);
    if (r < 0)
        return r;
    if (t.endoftext < 0 || t.im_start < 0 || t.im_end < 0 || t.image_pad < 0 || t.video_pad < 0 ||
        (layout == VL3__LAYOUT_REMOTE && t.image < 0))
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": the tokenizer lacks one of the Qwen2.5 special tokens",
                             src_dir ? src_dir : out_dir);
    *ret = t;
    return 0;
}
