/* model_config.c: parses a checkpoint's JSON configuration files into the structs of model.h.
 *
 * config.json comes in two layouts (spec sections 1 and 11):
 *   remote  model_type "videollama3_qwen2": Qwen2 keys at the top level, the vision encoder in
 *           "vision_encoder_config", placeholder "image_token_index" (151665);
 *   native  model_type "video_llama_3": Qwen2 keys in "text_config", the encoder in
 *           "vision_config", "image_token_id"/"video_token_id" (151655/151656).
 * Core sizes must be present; secondary fields take the defaults of the reference
 * configuration classes. Every value is range-checked so that later shape arithmetic cannot
 * overflow, and options this engine does not implement (rope_scaling, sliding window, another
 * projector or activation) are refused with VL3_E_UNSUPPORTED rather than silently ignored.
 * generation_config.json and preprocessor_config.json (+ processor_config.json) are optional:
 * absent files give the defaults of spec sections 8 and 1.4. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "vl3/json.h"
#include "vl3/util.h"

#define CONFIG_MAX_BYTES (4u << 20)

const char *vl3__layout_name(enum vl3__layout l)
{
    return l == VL3__LAYOUT_REMOTE ? "remote" : l == VL3__LAYOUT_NATIVE ? "native" : "?";
}

const char *vl3__layout_model_type(enum vl3__layout l)
{
    return l == VL3__LAYOUT_REMOTE   ? "videollama3_qwen2"
           : l == VL3__LAYOUT_NATIVE ? "video_llama_3"
                                     : "?";
}

/* Reading context: file name and the path of the sub-object, for messages. */
struct rd {
    const char *file;
    const char *sect; /* "" or "text_config." */
    vl3_error *err;
};

static int get_int(const struct rd *rd, const json_t *o, const char *key, int required, int64_t def,
                   int64_t lo, int64_t hi, int *ret)
{
    int64_t v = def;
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        if (required)
            return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s%s\" is missing",
                                 rd->file, rd->sect, key);
    } else if (json_is_integer(j)) {
        v = json_integer_value(j);
    } else {
        return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s%s\" must be an integer",
                             rd->file, rd->sect, key);
    }
    if (v < lo || v > hi)
        return vl3_error_set(rd->err, VL3_E_CONFIG,
                             "\"%s\": field \"%s%s\" is %lld, expected %lld..%lld", rd->file,
                             rd->sect, key, (long long)v, (long long)lo, (long long)hi);
    *ret = (int)v;
    return 0;
}

static int get_num(const struct rd *rd, const json_t *o, const char *key, double def, double lo,
                   double hi, double *ret)
{
    double v = def;
    json_t *j = json_object_get(o, key);
    if (j && !json_is_null(j)) {
        if (!json_is_number(j))
            return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s%s\" must be a number",
                                 rd->file, rd->sect, key);
        v = json_number_value(j);
    }
    if (!(v >= lo && v <= hi))
        return vl3_error_set(rd->err, VL3_E_CONFIG, "\"%s\": field \"%s%s\" is %g, expected %g..%g",
                             rd->file, rd->sect, key, v, lo, hi);
    *ret = v;
    return 0;
}

static int get_bool(const struct rd *rd, const json_t *o, const char *key, int def, int *ret)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        *ret = def;
        return 0;
    }
    if (!json_is_boolean(j))
        return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s%s\" must be a boolean",
                             rd->file, rd->sect, key);
    *ret = json_is_true(j);
    return 0;
}

/* A string field that must equal `want` when present. */
static int want_str(const struct rd *rd, const json_t *o, const char *key, const char *want)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_string(j))
        return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s%s\" must be a string",
                             rd->file, rd->sect, key);
    if (strcmp(json_string_value(j), want) != 0)
        return vl3_error_set(rd->err, VL3_E_UNSUPPORTED,
                             "\"%s\": field \"%s%s\" is \"%s\"; only \"%s\" is supported", rd->file,
                             rd->sect, key, json_string_value(j), want);
    return 0;
}

/* eos_token_id may be an int or a list of ints (the first is taken). */
static int get_id(const struct rd *rd, const json_t *o, const char *key, int *ret)
{
    json_t *j = json_object_get(o, key);
    *ret = -1;
    if (!j || json_is_null(j))
        return 0;
    if (json_is_array(j) && json_array_size(j) > 0)
        j = json_array_get(j, 0);
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) >= VL3__MAX_VOCAB)
        return vl3_error_set(rd->err, VL3_E_FORMAT,
                             "\"%s\": field \"%s%s\" must be a token id (or a list of them)",
                             rd->file, rd->sect, key);
    *ret = (int)json_integer_value(j);
    return 0;
}

static int parse_llm(const struct rd *rd, const json_t *o, struct vl3__config *c)
{
    struct vl3__llm_hparams *h = &c->llm;
    int r;
    double d;
    if ((r = get_int(rd, o, "hidden_size", 1, 0, 1, VL3__MAX_HIDDEN, &h->hidden)) < 0 ||
        (r = get_int(rd, o, "num_hidden_layers", 1, 0, 1, VL3__MAX_LAYERS, &h->n_layers)) < 0 ||
        (r = get_int(rd, o, "num_attention_heads", 1, 0, 1, 4096, &h->n_heads)) < 0 ||
        (r = get_int(rd, o, "num_key_value_heads", 0, h->n_heads, 1, 4096, &h->n_kv_heads)) < 0 ||
        (r = get_int(rd, o, "intermediate_size", 1, 0, 1, VL3__MAX_INTERMEDIATE,
                     &h->intermediate)) < 0 ||
        (r = get_int(rd, o, "vocab_size", 1, 0, 1, VL3__MAX_VOCAB, &h->vocab)) < 0 ||
        (r = get_int(rd, o, "max_position_embeddings", 0, 32768, 1, 1 << 24, &h->max_positions)) <
            0 ||
        (r = get_int(rd, o, "head_dim", 0, h->n_heads ? h->hidden / h->n_heads : 0, 2, 1024,
                     &h->head_dim)) < 0)
        return r;
    if ((r = get_num(rd, o, "rms_norm_eps", 1e-6, 0, 1, &d)) < 0)
        return r;
    h->rms_eps = (float)d;
    /* newer transformers versions keep rope_theta inside "rope_parameters" */
    json_t *rp = json_object_get(o, "rope_parameters");
    if (json_is_object(rp) && json_object_get(rp, "rope_theta") &&
        !json_object_get(o, "rope_theta")) {
        struct rd sub = {rd->file, "rope_parameters.", rd->err};
        if ((r = want_str(&sub, rp, "rope_type", "default")) < 0 ||
            (r = get_num(&sub, rp, "rope_theta", 10000.0, 1, 1e12, &d)) < 0)
            return r;
    } else if ((r = get_num(rd, o, "rope_theta", 10000.0, 1, 1e12, &d)) < 0) {
        return r;
    }
    h->rope_theta = (float)d;
    if ((r = want_str(rd, o, "hidden_act", "silu")) < 0)
        return r;
    json_t *rs = json_object_get(o, "rope_scaling");
    if (rs && !json_is_null(rs))
        return vl3_error_set(rd->err, VL3_E_UNSUPPORTED,
                             "\"%s\": field \"%srope_scaling\" is set; only plain RoPE is supported",
                             rd->file, rd->sect);
    int sw;
    if ((r = get_bool(rd, o, "use_sliding_window", 0, &sw)) < 0)
        return r;
    if (sw)
        return vl3_error_set(rd->err, VL3_E_UNSUPPORTED,
                             "\"%s\": field \"%suse_sliding_window\" is true; sliding-window "
                             "attention is not supported",
                             rd->file, rd->sect);
    if (h->hidden % h->n_heads != 0 && !json_object_get(o, "head_dim"))
        return vl3_error_set(rd->err, VL3_E_CONFIG,
                             "\"%s\": %shidden_size %d is not a multiple of num_attention_heads %d",
                             rd->file, rd->sect, h->hidden, h->n_heads);
    if (h->n_heads % h->n_kv_heads != 0)
        return vl3_error_set(rd->err, VL3_E_CONFIG,
                             "\"%s\": %snum_attention_heads %d is not a multiple of "
                             "num_key_value_heads %d",
                             rd->file, rd->sect, h->n_heads, h->n_kv_heads);
    if (h->head_dim % 2 != 0)
        return vl3_error_set(rd->err, VL3_E_CONFIG, "\"%s\": %shead dim %d is odd (RoPE needs pairs)",
                             rd->file, rd->sect, h->head_dim);
    if ((int64_t)h->n_heads * h->head_dim > VL3__MAX_HIDDEN)
        return vl3_error_set(rd->err, VL3_E_CONFIG, "\"%s\": %sheads x head_dim is too large",
                             rd->file, rd->sect);
    return 0;
}

static int parse_vision(const struct rd *rd, const json_t *o, struct vl3__config *c)
{
    struct vl3__vision_hparams *v = &c->vision;
    int r;
    double d;
    if (!json_is_object(o))
        return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%.*s\" must be an object",
                             rd->file, (int)strlen(rd->sect) - 1, rd->sect);
    if ((r = get_int(rd, o, "hidden_size", 1, 0, 1, VL3__MAX_HIDDEN, &v->hidden)) < 0 ||
        (r = get_int(rd, o, "num_hidden_layers", 1, 0, 1, VL3__MAX_LAYERS, &v->n_layers)) < 0 ||
        (r = get_int(rd, o, "num_attention_heads", 1, 0, 1, 4096, &v->n_heads)) < 0 ||
        (r = get_int(rd, o, "intermediate_size", 1, 0, 1, VL3__MAX_INTERMEDIATE,
                     &v->intermediate)) < 0 ||
        (r = get_int(rd, o, "patch_size", 1, 0, 1, 64, &v->patch_size)) < 0 ||
        (r = get_int(rd, o, "num_channels", 0, 3, 3, 3, &v->channels)) < 0)
        return r;
    if ((r = get_num(rd, o, "layer_norm_eps", 1e-6, 0, 1, &d)) < 0)
        return r;
    v->ln_eps = (float)d;
    v->rope_theta = 10000.0f;
    if ((r = want_str(rd, o, "hidden_act", "gelu_pytorch_tanh")) < 0)
        return r;
    if (v->hidden % v->n_heads != 0)
        return vl3_error_set(rd->err, VL3_E_CONFIG,
                             "\"%s\": %shidden_size %d is not a multiple of num_attention_heads %d",
                             rd->file, rd->sect, v->hidden, v->n_heads);
    if ((v->hidden / v->n_heads) % 4 != 0)
        return vl3_error_set(rd->err, VL3_E_CONFIG,
                             "\"%s\": %shead dim %d is not a multiple of 4 (2D RoPE)", rd->file,
                             rd->sect, v->hidden / v->n_heads);
    return 0;
}

int vl3__config_parse(const char *name, const char *buf, size_t len, struct vl3__config *ret,
                      vl3_error *reterr)
{
    json_t *root = NULL;
    struct vl3__config c;
    memset(&c, 0, sizeof(c));
    struct rd rd = {name, "", reterr};
    int r = vl3_json_load_buf(buf, len, &root, reterr);
    if (r < 0) {
        vl3_error_prefix(reterr, "\"%s\"", name);
        return r;
    }
    if (!json_is_object(root)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": not a JSON object", name);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type");
    const char *model_type = json_is_string(mt) ? json_string_value(mt) : NULL;
    if (model_type ? strcmp(model_type, "videollama3_qwen2") == 0
                   : json_object_get(root, "vision_encoder_config") != NULL) {
        c.layout = VL3__LAYOUT_REMOTE;
    } else if (model_type ? strcmp(model_type, "video_llama_3") == 0
                          : json_object_get(root, "text_config") != NULL) {
        c.layout = VL3__LAYOUT_NATIVE;
    } else {
        r = vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                          "\"%s\": model_type \"%s\" is not a VideoLLaMA3 model "
                          "(expected \"videollama3_qwen2\" or \"video_llama_3\")",
                          name, model_type ? model_type : "(missing)");
        goto out;
    }

    if (c.layout == VL3__LAYOUT_REMOTE) {
        if ((r = parse_llm(&rd, root, &c)) < 0)
            goto out;
        if ((r = get_bool(&rd, root, "tie_word_embeddings", 0, &c.llm.tie_embeddings)) < 0 ||
            (r = get_bool(&rd, root, "use_token_compression", 1, &c.use_token_compression)) < 0 ||
            (r = want_str(&rd, root, "mm_projector_type", "mlp2x_gelu")) < 0 ||
            (r = get_id(&rd, root, "image_token_index", &c.image_token_id)) < 0 ||
            (r = get_id(&rd, root, "bos_token_id", &c.bos_id)) < 0 ||
            (r = get_id(&rd, root, "eos_token_id", &c.eos_id)) < 0)
            goto out;
        json_t *ve = json_object_get(root, "vision_encoder");
        if (ve && !json_is_null(ve)) {
            r = vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                              "\"%s\": field \"vision_encoder\" names an external encoder; only "
                              "the built-in vision_encoder_config is supported",
                              name);
            goto out;
        }
        json_t *vc = json_object_get(root, "vision_encoder_config");
        if (!vc || json_is_null(vc)) {
            r = vl3_error_set(reterr, VL3_E_FORMAT,
                              "\"%s\": field \"vision_encoder_config\" is missing", name);
            goto out;
        }
        struct rd vrd = {name, "vision_encoder_config.", reterr};
        if ((r = parse_vision(&vrd, vc, &c)) < 0)
            goto out;
        c.video_token_id = c.image_token_id;
    } else {
        json_t *tc = json_object_get(root, "text_config"), *vc = json_object_get(root, "vision_config");
        if (!json_is_object(tc) || !json_is_object(vc)) {
            r = vl3_error_set(reterr, VL3_E_FORMAT,
                              "\"%s\": fields \"text_config\" and \"vision_config\" must be objects",
                              name);
            goto out;
        }
        struct rd trd = {name, "text_config.", reterr}, vrd = {name, "vision_config.", reterr};
        int top_tie = 0, text_tie = 0;
        if ((r = want_str(&trd, tc, "model_type", "qwen2")) < 0 ||
            (r = want_str(&vrd, vc, "model_type", "video_llama_3_vision")) < 0 ||
            (r = parse_llm(&trd, tc, &c)) < 0 || (r = parse_vision(&vrd, vc, &c)) < 0 ||
            (r = get_bool(&rd, root, "tie_word_embeddings", 0, &top_tie)) < 0 ||
            (r = get_bool(&trd, tc, "tie_word_embeddings", 0, &text_tie)) < 0 ||
            (r = get_id(&trd, tc, "bos_token_id", &c.bos_id)) < 0 ||
            (r = get_id(&trd, tc, "eos_token_id", &c.eos_id)) < 0)
            goto out;
        /* as the reference config does: the text config's flag is forwarded when set */
        c.llm.tie_embeddings = top_tie || text_tie;
        c.use_token_compression = 1;
        json_t *it = json_object_get(root, "image_token_id"), *vt = json_object_get(root, "video_token_id");
        if ((r = get_id(&rd, root, "image_token_id", &c.image_token_id)) < 0 ||
            (r = get_id(&rd, root, "video_token_id", &c.video_token_id)) < 0)
            goto out;
        if (!it)
            c.image_token_id = 151655;
        if (!vt)
            c.video_token_id = 151656;
        int b = -1, e = -1;
        if ((r = get_id(&rd, root, "bos_token_id", &b)) < 0 || (r = get_id(&rd, root, "eos_token_id", &e)) < 0)
            goto out;
        if (c.bos_id < 0)
            c.bos_id = b;
        if (c.eos_id < 0)
            c.eos_id = e;
    }
    if (c.image_token_id >= c.llm.vocab || c.video_token_id >= c.llm.vocab) {
        r = vl3_error_set(reterr, VL3_E_CONFIG,
                          "\"%s\": placeholder token id %d is outside the %d embedding rows", name,
                          VL3_MAX(c.image_token_id, c.video_token_id), c.llm.vocab);
        goto out;
    }
    *ret = c;
out:
    json_decref(root);
    return r;
}

static int load_text(const char *dir, const char *file, char *path, size_t plen, char **ret_buf,
                     size_t *ret_len, vl3_error *reterr)
{
    if ((size_t)snprintf(path, plen, "%s/%s", dir, file) >= plen)
        return vl3_error_set(reterr, -ENAMETOOLONG, "checkpoint path \"%s\" is too long", dir);
    return vl3_file_read(path, CONFIG_MAX_BYTES, ret_buf, ret_len, reterr);
}

int vl3__config_load(const char *dir, struct vl3__config *ret, vl3_error *reterr)
{
    char path[PATH_MAX], *buf = NULL;
    size_t len;
    int r = load_text(dir, "config.json", path, sizeof(path), &buf, &len, reterr);
    if (r < 0)
        return r;
    r = vl3__config_parse(path, buf, len, ret, reterr);
    free(buf);
    return r;
}

void vl3__gen_defaults_init(struct vl3__gen_defaults *g)
{
    memset(g, 0, sizeof(*g));
    g->do_sample = 1;
    g->temperature = 0.7f;
    g->top_p = 0.8f;
    g->top_k = 20;
    g->repetition_penalty = 1.1f;
    g->eos_ids[0] = 151645;
    g->eos_ids[1] = 151643;
    g->n_eos = 2;
    g->pad_id = 151643;
    g->bos_id = 151643;
}

void vl3__gen_defaults_from_config(struct vl3__gen_defaults *g, const struct vl3__config *c)
{
    /* what transformers does without generation_config.json (both flavours load through
     * from_pretrained): GenerationConfig.from_model_config(config), i.e. GenerationConfig's own
     * defaults (greedy, temperature 1, top_p 1, top_k 50, no repetition penalty) and the
     * config's eos (and bos) ids; generate pads with eos */
    g->do_sample = 0;
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->top_k = 50;
    g->repetition_penalty = 1.0f;
    g->n_eos = 0;
    if (c->eos_id >= 0)
        g->eos_ids[g->n_eos++] = c->eos_id;
    if (c->bos_id >= 0)
        g->bos_id = c->bos_id;
    if (g->n_eos)
        g->pad_id = g->eos_ids[0];
}

/* Load dir/file as a JSON object; *ret = NULL (and 0) when the file does not exist. */
static int load_optional(const char *dir, const char *file, char *path, size_t plen, json_t **ret,
                         vl3_error *reterr)
{
    *ret = NULL;
    if ((size_t)snprintf(path, plen, "%s/%s", dir, file) >= plen)
        return vl3_error_set(reterr, -ENAMETOOLONG, "checkpoint path \"%s\" is too long", dir);
    if (access(path, F_OK) != 0)
        return 0;
    int r = vl3_json_load_file(path, CONFIG_MAX_BYTES, ret, reterr);
    if (r < 0)
        return r;
    if (!json_is_object(*ret)) {
        json_decref(*ret);
        *ret = NULL;
        return vl3_error_set(reterr, VL3_E_FORMAT, "\"%s\": not a JSON object", path);
    }
    return 0;
}

int vl3__gen_defaults_load(const char *dir, struct vl3__gen_defaults *ret, vl3_error *reterr)
{
    char path[PATH_MAX];
    json_t *o;
    struct vl3__gen_defaults g;
    vl3__gen_defaults_init(&g);
    int r = load_optional(dir, "generation_config.json", path, sizeof(path), &o, reterr);
    if (r < 0 || !o) {
        if (r == 0)
            *ret = g;
        return r;
    }
    struct rd rd = {path, "", reterr};
    double d;
    g.present = 1;
    if ((r = get_bool(&rd, o, "do_sample", 0, &g.do_sample)) < 0)
        goto out;
    /* transformers' GenerationConfig defaults for fields the file leaves out */
    if ((r = get_num(&rd, o, "temperature", 1.0, 0, 100, &d)) < 0)
        goto out;
    g.temperature = (float)d;
    if ((r = get_num(&rd, o, "top_p", 1.0, 0, 1, &d)) < 0)
        goto out;
    g.top_p = (float)d;
    if ((r = get_num(&rd, o, "repetition_penalty", 1.0, 1e-3, 100, &d)) < 0)
        goto out;
    g.repetition_penalty = (float)d;
    if ((r = get_int(&rd, o, "top_k", 0, 50, 0, VL3__MAX_VOCAB, &g.top_k)) < 0)
        goto out;
    json_t *eos = json_object_get(o, "eos_token_id");
    g.n_eos = 0;
    if (json_is_integer(eos)) {
        if ((r = get_id(&rd, o, "eos_token_id", &g.eos_ids[0])) < 0)
            goto out;
        g.n_eos = 1;
    } else if (json_is_array(eos)) {
        size_t i;
        json_t *v;
        json_array_foreach(eos, i, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= VL3__MAX_VOCAB) {
                r = vl3_error_set(reterr, VL3_E_FORMAT,
                                  "\"%s\": field \"eos_token_id\" must hold token ids", path);
                goto out;
            }
            if (g.n_eos < (int)VL3_ARRAY_SIZE(g.eos_ids))
                g.eos_ids[g.n_eos++] = (int)json_integer_value(v);
        }
    } else if (eos && !json_is_null(eos)) {
        r = vl3_error_set(reterr, VL3_E_FORMAT,
                          "\"%s\": field \"eos_token_id\" must be an id or a list of ids", path);
        goto out;
    }
    if ((r = get_id(&rd, o, "pad_token_id", &g.pad_id)) < 0 ||
        (r = get_id(&rd, o, "bos_token_id", &g.bos_id)) < 0)
        goto out;
    *ret = g;
out:
    json_decref(o);
    return r;
}

void vl3__preproc_init(struct vl3__preproc *p)
{
    memset(p, 0, sizeof(*p));
    p->patch_size = 14;
    p->image_merge = 1;
    p->video_merge = 2;
    p->min_tokens = 16;
    p->max_tokens = 16384;
    for (int i = 0; i < 3; i++)
        p->mean[i] = p->std[i] = 0.5f;
    p->rescale = 1.0f / 255.0f;
    p->resample = 3;
    p->video_min_pixels = p->video_max_pixels = -1;
    p->video_token_compression = -1;
    p->do_convert_rgb = 1;
    p->fps = 1;
    p->max_frames = 128;
}

static int get_vec3(const struct rd *rd, const json_t *o, const char *key, float *v)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return 0;
    if (json_is_number(j)) {
        v[0] = v[1] = v[2] = (float)json_number_value(j);
        return 0;
    }
    if (!json_is_array(j) || json_array_size(j) != 3)
        return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s\" must be 3 numbers",
                             rd->file, key);
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(j, (size_t)i);
        if (!json_is_number(e))
            return vl3_error_set(rd->err, VL3_E_FORMAT, "\"%s\": field \"%s\" must be 3 numbers",
                                 rd->file, key);
        v[i] = (float)json_number_value(e);
    }
    return 0;
}

/* Pixel budgets of a transformers-native processor config: size {shortest_edge, longest_edge},
 * overridden by min_pixels / max_pixels when present (VideoLlama3ImageProcessor and
 * VideoLlama3VideoProcessor __init__). Leaves *min_px / *max_px alone where the file is silent. */
static int get_pixel_budget(const char *path, const json_t *o, int64_t *min_px, int64_t *max_px,
                            vl3_error *reterr)
{
    static const char *const keys[2][2] = {{"shortest_edge", "longest_edge"},
                                           {"min_pixels", "max_pixels"}};
    const json_t *size = json_object_get(o, "size");
    const json_t *src[2] = {json_is_object(size) ? size : NULL, o};
    int64_t *dst[2] = {min_px, max_px};
    for (int s = 0; s < 2; s++) {
        struct rd rd = {path, s == 0 ? "size." : "", reterr};
        for (int k = 0; k < 2 && src[s]; k++) {
            int px, r;
            if (!json_object_get(src[s], keys[s][k]))
                continue;
            if ((r = get_int(&rd, src[s], keys[s][k], 0, 0, 1, INT_MAX, &px)) < 0)
                return r;
            *dst[k] = px;
        }
    }
    return 0;
}

int vl3__preproc_load(const char *dir, struct vl3__preproc *ret, vl3_error *reterr)
{
    char path[PATH_MAX];
    json_t *o = NULL;
    struct vl3__preproc p;
    vl3__preproc_init(&p);
    int r = load_optional(dir, "preprocessor_config.json", path, sizeof(path), &o, reterr);
    if (r < 0)
        return r;
    if (o) {
        struct rd rd = {path, "", reterr};
        double d;
        p.present = 1;
        if ((r = get_int(&rd, o, "patch_size", 0, 14, 1, 64, &p.patch_size)) < 0 ||
            (r = get_int(&rd, o, "min_tokens", 0, p.min_tokens, 1, 1 << 24, &p.min_tokens)) < 0 ||
            (r = get_int(&rd, o, "max_tokens", 0, p.max_tokens, 1, 1 << 24, &p.max_tokens)) < 0 ||
            (r = get_int(&rd, o, "resample", 0, 3, 0, 5, &p.resample)) < 0 ||
            (r = get_bool(&rd, o, "do_convert_rgb", 1, &p.do_convert_rgb)) < 0 ||
            (r = get_vec3(&rd, o, "image_mean", p.mean)) < 0 ||
            (r = get_vec3(&rd, o, "image_std", p.std)) < 0 ||
            (r = get_num(&rd, o, "rescale_factor", 1.0 / 255.0, 1e-9, 1e9, &d)) < 0)
            goto out;
        p.rescale = (float)d;
        /* native layout: a merge_size and pixel budgets instead of merged-token budgets */
        if ((r = get_int(&rd, o, "merge_size", 0, p.image_merge, 1, 8, &p.image_merge)) < 0)
            goto out;
        int64_t unit = (int64_t)p.patch_size * p.patch_size * p.image_merge * p.image_merge;
        int64_t min_px = -1, max_px = -1;
        if ((r = get_pixel_budget(path, o, &min_px, &max_px, reterr)) < 0)
            goto out;
        if (min_px >= 0)
            p.min_tokens = (int)VL3_MAX(1, min_px / unit);
        if (max_px >= 0)
            p.max_tokens = (int)VL3_MAX(1, max_px / unit);
        for (int i = 0; i < 3; i++)
            if (!(p.std[i] > 0)) {
                r = vl3_error_set(reterr, VL3_E_CONFIG, "\"%s\": image_std must be positive", path);
                goto out;
            }
        json_decref(o);
        o = NULL;
    }
    r = load_optional(dir, "processor_config.json", path, sizeof(path), &o, reterr);
    if (r < 0)
        return r;
    if (o) {
        struct rd rd = {path, "", reterr};
        if ((r = get_int(&rd, o, "image_merge_size", 0, p.image_merge, 1, 8, &p.image_merge)) < 0 ||
            (r = get_int(&rd, o, "video_merge_size", 0, p.video_merge, 1, 8, &p.video_merge)) < 0 ||
            (r = get_int(&rd, o, "fps", 0, p.fps, 1, 1000, &p.fps)) < 0 ||
            (r = get_int(&rd, o, "max_frames", 0, p.max_frames, 1, 1 << 20, &p.max_frames)) < 0)
            goto out;
        json_decref(o);
        o = NULL;
    }
    /* native layout: the video processor's own budgets, merge size and DiffFP switch */
    r = load_optional(dir, "video_preprocessor_config.json", path, sizeof(path), &o, reterr);
    if (r < 0)
        return r;
    if (o) {
        struct rd rd = {path, "", reterr};
        if ((r = get_pixel_budget(path, o, &p.video_min_pixels, &p.video_max_pixels, reterr)) < 0 ||
            (r = get_int(&rd, o, "merge_size", 0, p.video_merge, 1, 8, &p.video_merge)) < 0)
            goto out;
        if (json_object_get(o, "use_token_compression") &&
            (r = get_bool(&rd, o, "use_token_compression", 1, &p.video_token_compression)) < 0)
            goto out;
        if (p.video_min_pixels > 0 && p.video_max_pixels > 0 &&
            p.video_min_pixels > p.video_max_pixels) {
            r = vl3_error_set(reterr, VL3_E_CONFIG, "\"%s\": min pixels %lld exceed max pixels %lld",
                              path, (long long)p.video_min_pixels, (long long)p.video_max_pixels);
            goto out;
        }
    }
    if (p.min_tokens > p.max_tokens) {
        r = vl3_error_set(reterr, VL3_E_CONFIG, "\"%s\": min_tokens %d exceeds max_tokens %d",
                          dir, p.min_tokens, p.max_tokens);
        goto out;
    }
    *ret = p;
out:
    json_decref(o);
    return r;
}
