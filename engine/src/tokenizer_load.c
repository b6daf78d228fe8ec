/* tokenizer_load.c: reading the tokenizer files of a checkpoint directory.
 *
 * Two forms (spec §9): tokenizer.json (model.vocab, model.merges as "a b" strings or [a, b]
 * pairs, added_tokens[] with id/content/special), or vocab.json + merges.txt with added tokens
 * from tokenizer_config.json `added_tokens_decoder` (flags included) and added_tokens.json
 * (content -> id; special when special_tokens_map.json or tokenizer_config.json names it, as
 * transformers decides). Merges follow HF: "#version" lines skipped, exactly two tokens per
 * line, rank = order, both halves and their concatenation must be in the vocabulary.
 * The `normalized` flag of added tokens is not used: all are matched on the raw text, which is
 * what HF does for the Qwen2 files (normalized: false) and equal for ASCII contents. */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vl3/json.h"
#include "vl3/util.h"

#define MAX_FILE_BYTES (512u << 20)
#define MAX_TOKEN_ID (1 << 24)

/* The Qwen2 pre-tokenizer regex as tokenizer.json spells it (spec §9). */
static const char QWEN2_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int path_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Byte-level string -> decoded bytes (raw UTF-8 when a char is not a byte-level char, as the
 * HF ByteLevel decoder does). out has room for len bytes. */
static size_t token_bytes(const char *s, size_t len, char *out)
{
    size_t off = 0, n = 0;
    while (off < len) {
        uint32_t cp;
        int k = vl3__utf8_next((const unsigned char *)s + off, len - off, &cp);
        int b = k > 0 ? vl3__cp_to_byte(cp) : -1;
        if (b < 0) {
            memcpy(out, s, len);
            return len;
        }
        out[n++] = (char)b;
        off += (size_t)k;
    }
    return n;
}

static int add_vocab_entry(vl3_tokenizer *tok, const char *key, size_t klen, json_int_t id,
                           const char *file, vl3_error *reterr)
{
    if (id < 0 || id >= MAX_TOKEN_ID)
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": token \"%.*s\" has id %lld out of range", file,
                             (int)(klen < 200 ? klen : 200), key, (long long)id);
    char stackbuf[256] = {0}; /* (zeroed: gcc cannot see that token_bytes writes what is read) */
    char *buf = klen <= sizeof(stackbuf) ? stackbuf : malloc(klen);
    if (!buf)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    size_t n = token_bytes(key, klen, buf);
    int r = vl3__tokenizer_set_token(tok, (int32_t)id, buf, n, 0);
    if (buf != stackbuf)
        free(buf);
    if (r >= 0)
        r = vl3__strmap_put(&tok->vocab, key, klen, (int32_t)id);
    if (r < 0)
        return vl3_error_set(reterr, r, "\"%s\": could not add token: %s", file, vl3_strerror(r));
    return 0;
}

static int load_vocab_obj(vl3_tokenizer *tok, const json_t *vocab, const char *file,
                          vl3_error *reterr)
{
    if (!json_is_object(vocab))
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": vocabulary must be a JSON object",
                             file);
    const char *key;
    json_t *val;
    json_object_foreach ((json_t *)vocab, key, val) {
        if (!json_is_integer(val))
            return vl3_error_set(reterr, VL3_E_FORMAT,
                                 "\"%s\": id of token \"%s\" must be an integer", file, key);
        /* jansson keys are NUL-terminated; a key with an embedded NUL would be cut short, but
         * vocab keys are byte-level strings, which never hold NUL. */
        int r = add_vocab_entry(tok, key, strlen(key), json_integer_value(val), file, reterr);
        if (r < 0)
            return r;
    }
    if (json_object_size(vocab) == 0)
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": vocabulary is empty", file);
    return 0;
}

/* Where a merge comes from, for errors: line n of merges.txt or model.merges[n] of a
 * tokenizer.json. Formatted only when an error is reported (one snprintf per merge was ~10% of
 * a Qwen2.5 tokenizer's load). */
struct merge_where {
    const char *file;
    size_t n;
    int json;
};

static const char *where_text(char *buf, size_t len, const struct merge_where *w)
{
    if (w->json)
        snprintf(buf, len, "\"%s\": model.merges[%zu]", w->file, w->n);
    else
        snprintf(buf, len, "\"%s\":%zu", w->file, w->n);
    return buf;
}

/* One merge (a, b) of rank. */
static int add_merge(vl3_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen,
                     uint32_t rank, const struct merge_where *w, vl3_error *reterr)
{
    char where[4200];
    int32_t ia = vl3__strmap_get(&tok->vocab, a, alen);
    int32_t ib = vl3__strmap_get(&tok->vocab, b, blen);
    if (ia < 0 || ib < 0)
        return vl3_error_set(reterr, VL3_E_FORMAT, "%s: merge token \"%.*s\" not in vocabulary",
                             where_text(where, sizeof(where), w), (int)(ia < 0 ? alen : blen),
                             ia < 0 ? a : b);
    char stackbuf[512];
    char *ab = alen + blen <= sizeof(stackbuf) ? stackbuf : malloc(alen + blen);
    if (!ab)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    memcpy(ab, a, alen);
    memcpy(ab + alen, b, blen);
    int32_t im = vl3__strmap_get(&tok->vocab, ab, alen + blen);
    int r = 0;
    if (im < 0)
        r = vl3_error_set(reterr, VL3_E_FORMAT, "%s: merged token \"%.*s\" not in vocabulary",
                          where_text(where, sizeof(where), w), (int)(alen + blen), ab);
    if (ab != stackbuf)
        free(ab);
    if (r < 0)
        return r;
    r = vl3__tokenizer_add_merge(tok, ia, ib, im, rank);
    return r < 0 ? vl3_error_set(reterr, r, "out of memory") : 0;
}

/* "a b" with exactly one space, as HF requires. */
static int split_merge(const char *line, size_t len, size_t *ret_sp)
{
    const char *sp = memchr(line, ' ', len);
    if (!sp || sp == line || (size_t)(sp - line) == len - 1 ||
        memchr(sp + 1, ' ', len - (size_t)(sp - line) - 1))
        return -1;
    *ret_sp = (size_t)(sp - line);
    return 0;
}

static int load_merges_txt(vl3_tokenizer *tok, const char *path, vl3_error *reterr)
{
    char *buf = NULL;
    size_t len;
    int r = vl3_file_read(path, MAX_FILE_BYTES, &buf, &len, reterr);
    if (r < 0)
        return r;
    uint32_t rank = 0;
    size_t lineno = 0, p = 0;
    while (p < len) {
        const char *line = buf + p;
        const char *nl = memchr(line, '\n', len - p);
        size_t ll = nl ? (size_t)(nl - line) : len - p;
        p += ll + (nl ? 1 : 0);
        lineno++;
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll >= 8 && memcmp(line, "#version", 8) == 0)
            continue;
        struct merge_where w = {path, lineno, 0};
        size_t sp;
        if (split_merge(line, ll, &sp) < 0) {
            char where[4200];
            r = vl3_error_set(reterr, VL3_E_FORMAT,
                              "%s: merge line must hold two tokens separated by one space",
                              where_text(where, sizeof(where), &w));
            goto out;
        }
        r = add_merge(tok, line, sp, line + sp + 1, ll - sp - 1, rank++, &w, reterr);
        if (r < 0)
            goto out;
    }
out:
    free(buf);
    return r;
}

static int load_merges_json(vl3_tokenizer *tok, const json_t *merges, const char *file,
                            vl3_error *reterr)
{
    if (!json_is_array(merges))
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": field \"model.merges\" must be an array", file);
    size_t i;
    json_t *m;
    json_array_foreach (merges, i, m) {
        char where[4200];
        struct merge_where w = {file, i, 1};
        int r;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t ll = json_string_length(m), sp;
            if (split_merge(s, ll, &sp) < 0)
                return vl3_error_set(reterr, VL3_E_FORMAT,
                                     "%s: must hold two tokens separated by one space",
                                     where_text(where, sizeof(where), &w));
            r = add_merge(tok, s, sp, s + sp + 1, ll - sp - 1, (uint32_t)i, &w, reterr);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            r = add_merge(tok, json_string_value(a), json_string_length(a), json_string_value(b),
                          json_string_length(b), (uint32_t)i, &w, reterr);
        } else {
            return vl3_error_set(reterr, VL3_E_FORMAT, "%s: must be a string or a pair of strings",
                                 where_text(where, sizeof(where), &w));
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static int add_added(vl3_tokenizer *tok, const char *content, size_t len, json_int_t id,
                     int special, const char *file, vl3_error *reterr)
{
    if (id < 0 || id >= MAX_TOKEN_ID)
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": added token \"%s\" has id %lld out of range", file, content,
                             (long long)id);
    int r = vl3__tokenizer_add_added(tok, content, len, (int32_t)id, special);
    return r < 0 ? vl3_error_set(reterr, r, "out of memory") : 0;
}

/* {"content": ..., "special": ...} as in tokenizer.json added_tokens / added_tokens_decoder. */
static int added_from_obj(vl3_tokenizer *tok, const json_t *o, json_int_t id, const char *file,
                          vl3_error *reterr)
{
    const json_t *c = json_object_get(o, "content");
    const json_t *sp = json_object_get(o, "special");
    if (!json_is_string(c))
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": added token %lld needs a string \"content\"", file,
                             (long long)id);
    if (sp && !json_is_boolean(sp))
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": \"special\" of added token %lld must be a boolean", file,
                             (long long)id);
    return add_added(tok, json_string_value(c), json_string_length(c), id,
                     sp ? json_is_true(sp) : 0, file, reterr);
}

static int check_json_pipeline(const json_t *root, const char *file, vl3_error *reterr)
{
    const json_t *model = json_object_get(root, "model");
    const json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0))
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED, "\"%s\": model type is not \"BPE\"", file);
    if (json_is_true(json_object_get(model, "ignore_merges")) ||
        json_is_true(json_object_get(model, "byte_fallback")))
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                             "\"%s\": ignore_merges / byte_fallback BPE is not supported", file);
    const json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const json_t *nt = json_object_get(norm, "type");
        if (!json_is_string(nt) || strcmp(json_string_value(nt), "NFC") != 0)
            return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                                 "\"%s\": only the NFC normalizer is supported", file);
    }
    /* Any Split regex in the pre-tokenizer must be Qwen2's. */
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    const json_t *list = json_object_get(pre, "pretokenizers");
    size_t n = json_is_array(list) ? json_array_size(list) : (pre ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_is_array(list) ? json_array_get(list, i) : pre;
        const json_t *ptype = json_object_get(p, "type");
        if (json_is_string(ptype) && strcmp(json_string_value(ptype), "ByteLevel") == 0 &&
            (json_is_true(json_object_get(p, "use_regex")) ||
             json_is_true(json_object_get(p, "add_prefix_space"))))
            return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                                 "\"%s\": ByteLevel pre-tokenizer with use_regex or "
                                 "add_prefix_space is not supported",
                                 file);
        const json_t *pat = json_object_get(json_object_get(p, "pattern"), "Regex");
        if (pat && (!json_is_string(pat) || strcmp(json_string_value(pat), QWEN2_PATTERN) != 0))
            return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                                 "\"%s\": pre-tokenizer regex is not the Qwen2 one", file);
    }
    return 0;
}

static int load_tokenizer_json(vl3_tokenizer **ret, const char *path, vl3_error *reterr)
{
    json_t *root = NULL;
    vl3_tokenizer *tok = NULL;
    int r = vl3_json_load_file(path, MAX_FILE_BYTES, &root, reterr);
    if (r < 0)
        return r;
    const json_t *model = json_object_get(root, "model");
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(model) || !vocab || !merges) {
        r = vl3_error_set(reterr, VL3_E_FORMAT,
                          "\"%s\": missing \"model.vocab\" or \"model.merges\"", path);
        goto out;
    }
    r = check_json_pipeline(root, path, reterr);
    if (r < 0)
        goto out;
    r = vl3__tokenizer_new(json_is_object(vocab) ? json_object_size(vocab) : 0, &tok, reterr);
    if (r < 0)
        goto out;
    r = load_vocab_obj(tok, vocab, path, reterr);
    if (r < 0)
        goto out;
    r = load_merges_json(tok, merges, path, reterr);
    if (r < 0)
        goto out;
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": \"added_tokens\" must be an array", path);
        goto out;
    }
    size_t i;
    json_t *a;
    json_array_foreach (added, i, a) {
        const json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id)) {
            r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": added_tokens[%zu] needs an integer id",
                              path, i);
            goto out;
        }
        r = added_from_obj(tok, a, json_integer_value(id), path, reterr);
        if (r < 0)
            goto out;
    }
    r = vl3__tokenizer_finish(tok, reterr);
    if (r < 0)
        goto out;
    *ret = tok;
    tok = NULL;
out:
    vl3_tokenizer_free(tok);
    json_decref(root);
    return r;
}

/* Loads an optional JSON file: 0 with *ret NULL when absent. */
static int load_optional_json(const char *path, json_t **ret, vl3_error *reterr)
{
    *ret = NULL;
    if (!file_exists(path))
        return 0;
    return vl3_json_load_file(path, MAX_FILE_BYTES, ret, reterr);
}

/* Whether name is one of the special tokens a config lists (strings or {"content": ...}). */
static int names_special(const json_t *cfg, const char *name)
{
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                       "pad_token", "cls_token", "mask_token"};
    if (!json_is_object(cfg))
        return 0;
    for (size_t k = 0; k < VL3_ARRAY_SIZE(keys); k++) {
        const json_t *v = json_object_get(cfg, keys[k]);
        if (json_is_object(v))
            v = json_object_get(v, "content");
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    const json_t *list = json_object_get(cfg, "additional_special_tokens");
    size_t i;
    const json_t *v;
    json_array_foreach (list, i, v) {
        if (json_is_object(v))
            v = json_object_get(v, "content");
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

static int load_added_files(vl3_tokenizer *tok, const char *dir, vl3_error *reterr)
{
    char cfg_path[4096], added_path[4096], map_path[4096];
    json_t *cfg = NULL, *added = NULL, *map = NULL;
    int r;
    if (path_join(cfg_path, sizeof(cfg_path), dir, "tokenizer_config.json") < 0 ||
        path_join(added_path, sizeof(added_path), dir, "added_tokens.json") < 0 ||
        path_join(map_path, sizeof(map_path), dir, "special_tokens_map.json") < 0)
        return vl3_error_set(reterr, -ENAMETOOLONG, "directory name \"%s\" is too long", dir);
    if ((r = load_optional_json(cfg_path, &cfg, reterr)) < 0 ||
        (r = load_optional_json(added_path, &added, reterr)) < 0 ||
        (r = load_optional_json(map_path, &map, reterr)) < 0)
        goto out;
    const json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    if (dec && !json_is_object(dec)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT,
                          "\"%s\": \"added_tokens_decoder\" must be an object", cfg_path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach ((json_t *)dec, key, val) {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || errno || !json_is_object(val)) {
            r = vl3_error_set(
                reterr, VL3_E_FORMAT,
                "\"%s\": added_tokens_decoder entry \"%s\" must map an id to an object", cfg_path,
                key);
            goto out;
        }
        r = added_from_obj(tok, val, id, cfg_path, reterr);
        if (r < 0)
            goto out;
    }
    if (added && !json_is_object(added)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\" must be a JSON object", added_path);
        goto out;
    }
    json_object_foreach (added, key, val) {
        if (!json_is_integer(val)) {
            r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": id of \"%s\" must be an integer",
                              added_path, key);
            goto out;
        }
        /* Entries the config already describes keep its flags. */
        int known = 0;
        for (size_t i = 0; i < tok->nadded; i++)
            if (strcmp(tok->added[i].content, key) == 0)
                known = 1;
        if (known)
            continue;
        int special = names_special(map, key) || names_special(cfg, key);
        r = add_added(tok, key, strlen(key), json_integer_value(val), special, added_path, reterr);
        if (r < 0)
            goto out;
    }
    r = 0;
out:
    json_decref(cfg);
    json_decref(added);
    json_decref(map);
    return r;
}

/* vl3__vocab_json_read's callback: a duplicate key makes it give up (jansson then reports it).
 * A duplicate is seen by the map not growing (its put replaces the value); the tokenizer is
 * thrown away then. */
struct vocab_fast {
    vl3_tokenizer *tok;
    const char *file;
    vl3_error *err;
};

static int vocab_fast_entry(void *arg, const char *key, size_t klen, int64_t id)
{
    struct vocab_fast *v = arg;
    size_t n0 = v->tok->vocab.n;
    if (add_vocab_entry(v->tok, key, klen, id, v->file, v->err) < 0)
        return -1;
    return v->tok->vocab.n == n0;
}

/* vocab.json into a new tokenizer: the direct reader, else (text outside its subset) jansson. */
static int load_vocab_json(vl3_tokenizer **ret, const char *vocab_path, vl3_error *reterr)
{
    char *buf = NULL;
    size_t len = 0;
    vl3_tokenizer *tok = NULL;
    int r = vl3_file_read(vocab_path, MAX_FILE_BYTES, &buf, &len, reterr);
    if (r < 0)
        return r;
    size_t expect = 0; /* entries: one ':' each, at least */
    for (const char *p = buf; (p = memchr(p, ':', len - (size_t)(p - buf))); p++)
        expect++;
    if ((r = vl3__tokenizer_new(expect, &tok, reterr)) < 0)
        goto out;
    struct vocab_fast vf = {tok, vocab_path, reterr};
    r = vl3__vocab_json_read(buf, len, vocab_fast_entry, &vf);
    if (r == -ENOMEM)
        r = vl3_error_set(reterr, r, "out of memory");
    if (r != 1)
        goto out; /* read (0) or an error already reported */
    vl3_tokenizer_free(tok);
    tok = NULL;
    json_t *vocab = NULL;
    if ((r = vl3_json_load_file_bytes(vocab_path, buf, len, &vocab, reterr)) < 0)
        goto out;
    r = vl3__tokenizer_new(json_is_object(vocab) ? json_object_size(vocab) : 0, &tok, reterr);
    if (r >= 0)
        r = load_vocab_obj(tok, vocab, vocab_path, reterr);
    json_decref(vocab);
out:
    free(buf);
    if (r < 0) {
        vl3_tokenizer_free(tok);
        return r;
    }
    *ret = tok;
    return 0;
}

static int load_vocab_merges(vl3_tokenizer **ret, const char *dir, const char *vocab_path,
                             const char *merges_path, vl3_error *reterr)
{
    vl3_tokenizer *tok = NULL;
    int r = load_vocab_json(&tok, vocab_path, reterr);
    if (r < 0)
        goto out;
    r = load_merges_txt(tok, merges_path, reterr);
    if (r < 0)
        goto out;
    r = load_added_files(tok, dir, reterr);
    if (r < 0)
        goto out;
    r = vl3__tokenizer_finish(tok, reterr);
    if (r < 0)
        goto out;
    *ret = tok;
    tok = NULL;
out:
    vl3_tokenizer_free(tok);
    return r;
}

int vl3_tokenizer_load(const char *dir, vl3_tokenizer **ret, vl3_error *reterr)
{
    if (!dir || !ret)
        return vl3_error_set(reterr, -EINVAL, "invalid argument");
    struct stat st;
    if (stat(dir, &st) < 0)
        return vl3_error_set(reterr, -errno, "could not open tokenizer directory \"%s\": %s", dir,
                             strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return vl3_error_set(reterr, -ENOTDIR, "tokenizer path \"%s\" is not a directory", dir);
    char json_path[4096], vocab_path[4096], merges_path[4096];
    if (path_join(json_path, sizeof(json_path), dir, "tokenizer.json") < 0 ||
        path_join(vocab_path, sizeof(vocab_path), dir, "vocab.json") < 0 ||
        path_join(merges_path, sizeof(merges_path), dir, "merges.txt") < 0)
        return vl3_error_set(reterr, -ENAMETOOLONG, "directory name \"%s\" is too long", dir);
    if (file_exists(json_path))
        return load_tokenizer_json(ret, json_path, reterr);
    int have_vocab = file_exists(vocab_path), have_merges = file_exists(merges_path);
    if (have_vocab && have_merges)
        return load_vocab_merges(ret, dir, vocab_path, merges_path, reterr);
    if (have_vocab || have_merges)
        return vl3_error_set(reterr, -ENOENT, "tokenizer file \"%s\" is missing",
                             have_vocab ? merges_path : vocab_path);
    return vl3_error_set(reterr, -ENOENT,
                         "no tokenizer in \"%s\": neither \"tokenizer.json\" nor \"vocab.json\" + "
                         "\"merges.txt\" found",
                         dir);
}
