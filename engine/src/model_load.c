/* model_load.c: vl3_model_load / vl3_model_free and the model info getter.
 *
 * Steps: parse config.json (layout, sizes), generation_config.json, preprocessor configs; map
 * the safetensors (single file or shards); bind every tensor the architecture needs (spec
 * section 2, names per layout) into struct vl3__weights, checking dtype and shape against the
 * config; report all missing tensors at once and, in strict mode, tensors nobody uses; load the
 * tokenizer (on a second thread) while the backend initialises; resolve special ids.
 *
 * Weights stay in the mmapped files (host views). The lm_head is tied to the embedding when the
 * config says tie_word_embeddings (a stored lm_head.weight is then ignored, as the reference
 * ties it at load time). Tokenizer policy: a tokenizer build answering VL3_E_UNSUPPORTED (the
 * placeholder) means "no tokenizer"; special ids then come from added_tokens.json /
 * tokenizer_config.json when present, else from config.json. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu/cpu_ops.h"
#include "model.h"
#include "safetensors.h"
#include "vl3/json.h"
#include "vl3/util.h"

struct priv {
    vl3__st *st;
    int n_tensors;      /* distinct tensors bound */
    int64_t n_params;
    int64_t n_bytes;
    int dtype;          /* common dtype, or -1 when mixed */
};

/* ---- binding ---- */

#define MAX_REPORT 4

struct binder {
    vl3__st *st;
    struct priv *pv;
    vl3_error *err;
    int n_missing;
    char missing[512];
};

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Bind tensor `name` with the expected shape (ndim dims from d[]) into *dst. A missing tensor
 * is recorded (not an error yet); a wrong dtype or shape is an error. */
static int bind(struct binder *b, vl3__tensor *dst, const char *name, int ndim, const int64_t *d)
{
    struct vl3__st_tensor *t = vl3__st_find(b->st, name);
    if (!t) {
        if (b->n_missing < MAX_REPORT) {
            size_t o = strlen(b->missing);
            snprintf(b->missing + o, sizeof(b->missing) - o, "%s\"%s\"", o ? ", " : "", name);
        }
        b->n_missing++;
        return 0;
    }
    const char *file = b->st->files[t->file].label;
    if (t->dtype != VL3__DTYPE_BF16 && t->dtype != VL3__DTYPE_F16 && t->dtype != VL3__DTYPE_F32)
        return vl3_error_set(b->err, VL3_E_FORMAT,
                             "\"%s\": tensor \"%s\": dtype %s, expected BF16, F16 or F32", file,
                             name, vl3__dtype_st_name(t->dtype));
    /* compute code reads elements in place: demand natural alignment (every writer we know
     * pads the header to 8 bytes and orders tensors so that this holds) */
    if ((uintptr_t)t->data % vl3__dtype_size(t->dtype) != 0)
        return vl3_error_set(b->err, VL3_E_UNSUPPORTED,
                             "\"%s\": tensor \"%s\": data is not aligned to %zu bytes; re-save the "
                             "checkpoint with a standard safetensors writer",
                             file, name, vl3__dtype_size(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == d[i];
    if (!same) {
        char want[128], got[160];
        fmt_shape(want, sizeof(want), ndim, d);
        fmt_shape(got, sizeof(got), t->ndim, t->shape);
        return vl3_error_set(b->err, VL3_E_SHAPE,
                             "\"%s\": tensor \"%s\": shape %s, expected %s from config.json", file,
                             name, got, want);
    }
    dst->name = t->name;
    dst->dtype = t->dtype;
    dst->ndim = ndim;
    for (int i = 0; i < VL3__MAX_DIMS; i++)
        dst->shape[i] = i < ndim ? d[i] : 0;
    dst->data = t->data;
    dst->nbytes = t->nbytes;
    if (!t->used) {
        t->used = 1;
        b->pv->n_tensors++;
        b->pv->n_bytes += (int64_t)t->nbytes;
        b->pv->n_params += (int64_t)(t->nbytes / vl3__dtype_size(t->dtype));
        if (b->pv->n_tensors == 1)
            b->pv->dtype = (int)t->dtype;
        else if (b->pv->dtype != (int)t->dtype)
            b->pv->dtype = -1;
    }
    return 0;
}

#define BIND(dst, ...)                                                                             \
    do {                                                                                           \
        const int64_t d_[] = {__VA_ARGS__};                                                        \
        int r_ = bind(b, (dst), name, (int)VL3_ARRAY_SIZE(d_), d_);                                \
        if (r_ < 0)                                                                                \
            return r_;                                                                             \
    } while (0)
#define NAME(...) snprintf(name, sizeof(name), __VA_ARGS__)

static int bind_all(struct binder *b, vl3_model *m)
{
    const struct vl3__llm_hparams *h = &m->llm;
    const struct vl3__vision_hparams *v = &m->vision;
    struct vl3__weights *w = &m->w;
    const int remote = m->layout == VL3__LAYOUT_REMOTE;
    const char *vp = remote ? "model.vision_encoder." : "model.vision_model.";
    const char *pp = remote ? "model.mm_projector.readout." : "model.projector.readout.";
    const char *lp = remote ? "model." : "model.language_model.";
    const int64_t C = h->hidden, V = h->vocab, I = h->intermediate;
    const int64_t QD = (int64_t)h->n_heads * h->head_dim, KVD = (int64_t)h->n_kv_heads * h->head_dim;
    const int64_t Cv = v->hidden, Iv = v->intermediate, P = v->patch_size;
    char name[256];

    /* vision encoder */
    NAME("%sembeddings.patch_embedding.weight", vp);
    BIND(&w->patch_w, Cv, v->channels, P, P);
    NAME("%sembeddings.patch_embedding.bias", vp);
    BIND(&w->patch_b, Cv);
    for (int i = 0; i < v->n_layers; i++) {
        struct vl3__vision_layer *L = &w->vlayers[i];
        static const char *const proj[4] = {"q", "k", "v", "out"};
        vl3__tensor *pw[4] = {&L->wq, &L->wk, &L->wv, &L->wo}, *pb[4] = {&L->bq, &L->bk, &L->bv, &L->bo};
        NAME("%sencoder.layers.%d.layer_norm1.weight", vp, i);
        BIND(&L->ln1_w, Cv);
        NAME("%sencoder.layers.%d.layer_norm1.bias", vp, i);
        BIND(&L->ln1_b, Cv);
        for (int k = 0; k < 4; k++) {
            NAME("%sencoder.layers.%d.self_attn.%s_proj.weight", vp, i, proj[k]);
            BIND(pw[k], Cv, Cv);
            NAME("%sencoder.layers.%d.self_attn.%s_proj.bias", vp, i, proj[k]);
            BIND(pb[k], Cv);
        }
        NAME("%sencoder.layers.%d.layer_norm2.weight", vp, i);
        BIND(&L->ln2_w, Cv);
        NAME("%sencoder.layers.%d.layer_norm2.bias", vp, i);
        BIND(&L->ln2_b, Cv);
        NAME("%sencoder.layers.%d.mlp.fc1.weight", vp, i);
        BIND(&L->fc1_w, Iv, Cv);
        NAME("%sencoder.layers.%d.mlp.fc1.bias", vp, i);
        BIND(&L->fc1_b, Iv);
        NAME("%sencoder.layers.%d.mlp.fc2.weight", vp, i);
        BIND(&L->fc2_w, Cv, Iv);
        NAME("%sencoder.layers.%d.mlp.fc2.bias", vp, i);
        BIND(&L->fc2_b, Cv);
    }
    NAME("%spost_layernorm.weight", vp);
    BIND(&w->post_ln_w, Cv);
    NAME("%spost_layernorm.bias", vp);
    BIND(&w->post_ln_b, Cv);

    /* projector mlp2x_gelu: readout.0 (Linear Cv->C), readout.1 GELU, readout.2 (Linear C->C) */
    NAME("%s0.weight", pp);
    BIND(&w->proj_w1, C, Cv);
    NAME("%s0.bias", pp);
    BIND(&w->proj_b1, C);
    NAME("%s2.weight", pp);
    BIND(&w->proj_w2, C, C);
    NAME("%s2.bias", pp);
    BIND(&w->proj_b2, C);

    /* LLM */
    NAME("%sembed_tokens.weight", lp);
    BIND(&w->embed, V, C);
    for (int j = 0; j < h->n_layers; j++) {
        struct vl3__llm_layer *L = &w->layers[j];
        NAME("%slayers.%d.input_layernorm.weight", lp, j);
        BIND(&L->attn_norm, C);
        NAME("%slayers.%d.self_attn.q_proj.weight", lp, j);
        BIND(&L->wq, QD, C);
        NAME("%slayers.%d.self_attn.q_proj.bias", lp, j);
        BIND(&L->bq, QD);
        NAME("%slayers.%d.self_attn.k_proj.weight", lp, j);
        BIND(&L->wk, KVD, C);
        NAME("%slayers.%d.self_attn.k_proj.bias", lp, j);
        BIND(&L->bk, KVD);
        NAME("%slayers.%d.self_attn.v_proj.weight", lp, j);
        BIND(&L->wv, KVD, C);
        NAME("%slayers.%d.self_attn.v_proj.bias", lp, j);
        BIND(&L->bv, KVD);
        NAME("%slayers.%d.self_attn.o_proj.weight", lp, j);
        BIND(&L->wo, C, QD);
        NAME("%slayers.%d.post_attention_layernorm.weight", lp, j);
        BIND(&L->ffn_norm, C);
        NAME("%slayers.%d.mlp.gate_proj.weight", lp, j);
        BIND(&L->w_gate, I, C);
        NAME("%slayers.%d.mlp.up_proj.weight", lp, j);
        BIND(&L->w_up, I, C);
        NAME("%slayers.%d.mlp.down_proj.weight", lp, j);
        BIND(&L->w_down, C, I);
    }
    NAME("%snorm.weight", lp);
    BIND(&w->norm, C);
    NAME("lm_head.weight");
    if (h->tie_embeddings) {
        struct vl3__st_tensor *t = vl3__st_find(b->st, name);
        if (t)
            t->used = 1; /* the reference overwrites it with the embedding */
        w->lm_head = w->embed;
        w->lm_head_tied = 1;
    } else {
        BIND(&w->lm_head, V, C);
    }
    return 0;
}

/* ---- special ids ---- */

static const struct {
    const char *text;
    size_t off;
} special_tokens[] = {
    {"<|endoftext|>", offsetof(struct vl3__special_ids, endoftext)},
    {"<|im_start|>", offsetof(struct vl3__special_ids, im_start)},
    {"<|im_end|>", offsetof(struct vl3__special_ids, im_end)},
    {"<|image_pad|>", offsetof(struct vl3__special_ids, image_pad)},
    {"<|video_pad|>", offsetof(struct vl3__special_ids, video_pad)},
    {"<image>", offsetof(struct vl3__special_ids, image)},
};

static int *id_slot(struct vl3__special_ids *ids, size_t k)
{
    return (int *)((char *)ids + special_tokens[k].off);
}

/* Without a tokenizer: read the added-token table (added_tokens.json, else tokenizer_config.json
 * "added_tokens_decoder"). Returns 1 when one was found, 0 when neither file exists. */
static int ids_from_files(const char *dir, struct vl3__special_ids *ids, vl3_error *reterr)
{
    char path[PATH_MAX];
    json_t *root = NULL;
    int r;
    snprintf(path, sizeof(path), "%s/added_tokens.json", dir);
    if (access(path, F_OK) == 0) {
        if ((r = vl3_json_load_file(path, 16u << 20, &root, reterr)) < 0)
            return r;
        for (size_t k = 0; k < VL3_ARRAY_SIZE(special_tokens); k++) {
            json_t *v = json_object_get(root, special_tokens[k].text);
            if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < VL3__MAX_VOCAB)
                *id_slot(ids, k) = (int)json_integer_value(v);
        }
        json_decref(root);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    if (access(path, F_OK) != 0)
        return 0;
    if ((r = vl3_json_load_file(path, 64u << 20, &root, reterr)) < 0)
        return r;
    json_t *dec = json_object_get(root, "added_tokens_decoder");
    const char *key;
    json_t *v;
    json_object_foreach(dec, key, v)
    {
        json_t *c = json_object_get(v, "content");
        char *end;
        long id = strtol(key, &end, 10);
        if (!json_is_string(c) || *end || end == key || id < 0 || id >= VL3__MAX_VOCAB)
            continue;
        for (size_t k = 0; k < VL3_ARRAY_SIZE(special_tokens); k++)
            if (strcmp(json_string_value(c), special_tokens[k].text) == 0)
                *id_slot(ids, k) = (int)id;
    }
    json_decref(root);
    return 1;
}

static int resolve_ids(vl3_model *m, vl3_error *reterr)
{
    struct vl3__special_ids *ids = &m->ids;
    for (size_t k = 0; k < VL3_ARRAY_SIZE(special_tokens); k++)
        *id_slot(ids, k) = -1;
    ids->image_token = m->cfg.image_token_id;
    ids->video_token = m->cfg.video_token_id;
    if (m->tokenizer) {
        for (size_t k = 0; k < VL3_ARRAY_SIZE(special_tokens); k++) {
            int id = vl3_tokenizer_token_id(m->tokenizer, special_tokens[k].text);
            *id_slot(ids, k) = id >= 0 ? id : -1;
        }
    } else {
        int r = ids_from_files(m->dir, ids, reterr);
        if (r < 0)
            return r;
        if (r == 0) {
            /* config only: bos is <|endoftext|>, eos is <|im_end|> in every VL3 config */
            ids->endoftext = m->cfg.bos_id;
            ids->im_end = m->cfg.eos_id;
            if (m->layout == VL3__LAYOUT_REMOTE) {
                ids->image = m->cfg.image_token_id;
            } else {
                ids->image_pad = m->cfg.image_token_id;
                ids->video_pad = m->cfg.video_token_id;
            }
        }
    }
    for (size_t k = 0; k < VL3_ARRAY_SIZE(special_tokens); k++)
        if (*id_slot(ids, k) >= m->llm.vocab)
            return vl3_error_set(reterr, VL3_E_CONFIG,
                                 "\"%s\": token \"%s\" has id %d, outside the %d embedding rows",
                                 m->dir, special_tokens[k].text, *id_slot(ids, k), m->llm.vocab);
    /* the placeholder ids in config.json must be the tokens the tokenizer emits */
    const char *ph = m->layout == VL3__LAYOUT_REMOTE ? "<image>" : "<|image_pad|>";
    int tok_img = m->layout == VL3__LAYOUT_REMOTE ? ids->image : ids->image_pad;
    if (tok_img >= 0 && tok_img != m->cfg.image_token_id)
        return vl3_error_set(reterr, VL3_E_CONFIG,
                             "\"%s\": config.json says image token %d but the tokenizer has "
                             "\"%s\" = %d",
                             m->dir, m->cfg.image_token_id, ph, tok_img);
    if (m->layout == VL3__LAYOUT_NATIVE && ids->video_pad >= 0 &&
        ids->video_pad != m->cfg.video_token_id)
        return vl3_error_set(reterr, VL3_E_CONFIG,
                             "\"%s\": config.json says video token %d but the tokenizer has "
                             "\"<|video_pad|>\" = %d",
                             m->dir, m->cfg.video_token_id, ids->video_pad);
    return 0;
}

/* ---- load / free ---- */

vl3_model_params vl3_model_params_default(void)
{
    vl3_model_params p;
    memset(&p, 0, sizeof(p));
    p.backend = VL3_BACKEND_AUTO;
    p.load_tokenizer = 1;
    p.strict = 1;
    return p;
}

void vl3_model_free(vl3_model *m)
{
    if (!m)
        return;
    vl3__model_backend_free(m);
    vl3_tokenizer_free(m->tokenizer);
    struct priv *pv = m->priv;
    if (pv)
        vl3__st_free(pv->st);
    free(pv);
    free(m->w.layers);
    free(m->w.vlayers);
    free(m->dir);
    free(m);
}

static int check_unused(vl3__st *st, vl3_error *reterr)
{
    int n = 0;
    char list[512] = "";
    const char *file = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        if (st->tensors[i].used)
            continue;
        if (!file)
            file = st->files[st->tensors[i].file].label;
        if (n < MAX_REPORT) {
            size_t o = strlen(list);
            snprintf(list + o, sizeof(list) - o, "%s\"%s\"", o ? ", " : "", st->tensors[i].name);
        }
        n++;
    }
    if (n)
        return vl3_error_set(reterr, VL3_E_FORMAT,
                             "\"%s\": %d tensor%s not used by the model: %s%s", file, n,
                             n == 1 ? "" : "s", list, n > MAX_REPORT ? ", ..." : "");
    return 0;
}

/* The tokenizer load, run on its own thread by vl3_model_load. */
struct tok_job {
    const char *dir;
    pthread_t thread;
    vl3_tokenizer *tok;
    int r;
    vl3_error err;
};

static void *tok_main(void *arg)
{
    struct tok_job *j = arg;
    j->r = vl3_tokenizer_load(j->dir, &j->tok, &j->err);
    return NULL;
}

int vl3_model_load(const vl3_model_params *p, vl3_model **ret, vl3_error *reterr)
{
    VL3_RETURN_IF(!p || !p->dir || !ret, -EINVAL);
    int r;
    vl3_model *m = calloc(1, sizeof(*m));
    struct priv *pv = calloc(1, sizeof(*pv));
    if (!m || !pv) {
        free(m);
        free(pv);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    m->priv = pv;
    m->dir = strdup(p->dir);
    if (!m->dir) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    if ((r = vl3__config_load(p->dir, &m->cfg, reterr)) < 0 ||
        (r = vl3__gen_defaults_load(p->dir, &m->gen, reterr)) < 0 ||
        (r = vl3__preproc_load(p->dir, &m->pre, reterr)) < 0)
        goto fail;
    if (!m->gen.present)
        vl3__gen_defaults_from_config(&m->gen, &m->cfg);
    m->layout = m->cfg.layout;
    m->llm = m->cfg.llm;
    m->vision = m->cfg.vision;
    m->use_token_compression = m->cfg.use_token_compression;
    if (m->layout == VL3__LAYOUT_NATIVE && m->pre.video_token_compression >= 0)
        m->use_token_compression = m->pre.video_token_compression;
    if (m->pre.present && m->pre.patch_size != m->vision.patch_size) {
        r = vl3_error_set(reterr, VL3_E_CONFIG,
                          "\"%s\": preprocessor patch_size %d differs from the encoder's %d",
                          p->dir, m->pre.patch_size, m->vision.patch_size);
        goto fail;
    }

    if ((r = vl3__st_open_dir(p->dir, &pv->st, reterr)) < 0)
        goto fail;
    m->w.layers = calloc((size_t)m->llm.n_layers, sizeof(*m->w.layers));
    m->w.vlayers = calloc((size_t)m->vision.n_layers, sizeof(*m->w.vlayers));
    if (!m->w.layers || !m->w.vlayers) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    struct binder b = {.st = pv->st, .pv = pv, .err = reterr};
    if ((r = bind_all(&b, m)) < 0)
        goto fail;
    if (b.n_missing) {
        r = vl3_error_set(reterr, VL3_E_FORMAT,
                          "\"%s\": %d tensor%s the %s layout needs %s missing: %s%s", p->dir,
                          b.n_missing, b.n_missing == 1 ? "" : "s",
                          vl3__layout_name(m->layout), b.n_missing == 1 ? "is" : "are", b.missing,
                          b.n_missing > MAX_REPORT ? ", ..." : "");
        goto fail;
    }
    if (p->strict && (r = check_unused(pv->st, reterr)) < 0)
        goto fail;

    /* The tokenizer (a Qwen2.5 vocabulary: ~0.3 s of JSON and merges) loads on a second thread
     * while the backend takes the weights (~0.2 s on the CPU backend: the fused q/k/v copies);
     * neither reads what the other writes. Serial when the thread cannot be made. */
    struct tok_job tj = {.dir = p->dir};
    int tok_thread = p->load_tokenizer && !p->no_backend &&
                     pthread_create(&tj.thread, NULL, tok_main, &tj) == 0;
    if (p->load_tokenizer && !tok_thread)
        tok_main(&tj);
    m->host_views_kept = 1; /* the mappings are freed with the model */
    vl3_error berr = {0};
    int rb = p->no_backend ? 0 : vl3__model_backend_init(m, p, &berr);
    if (tok_thread)
        pthread_join(tj.thread, NULL);
    /* a tokenizer error is reported before a backend one, as when they loaded in turn */
    if (p->load_tokenizer) {
        m->tokenizer = tj.tok;
        r = tj.r;
        if (r == VL3_E_UNSUPPORTED) {
            m->tokenizer = NULL; /* placeholder build: run without a tokenizer */
        } else if (r < 0) {
            if (reterr)
                *reterr = tj.err;
            goto fail;
        } else if (vl3_tokenizer_vocab_size(m->tokenizer) > m->llm.vocab) {
            r = vl3_error_set(reterr, VL3_E_CONFIG,
                              "\"%s\": the tokenizer has %d ids but the embedding only %d rows",
                              p->dir, vl3_tokenizer_vocab_size(m->tokenizer), m->llm.vocab);
            goto fail;
        }
    }
    if (rb < 0) {
        if (reterr)
            *reterr = berr;
        r = rb;
        goto fail;
    }
    if ((r = resolve_ids(m, reterr)) < 0)
        goto fail;
    *ret = m;
    return 0;
fail:
    vl3_model_free(m);
    return r;
}

const vl3_tokenizer *vl3_model_tokenizer(const vl3_model *m)
{
    return m ? m->tokenizer : NULL;
}

/* The backend with its arithmetic (vl3_model_info.compute). */
static const char *vl3__model_compute(const vl3_model *m)
{
    if (!m->ops)
        return "none";
    if (m->ops == &vl3__backend_cpu_ops)
        return vl3__cpu_precision(m->backend_ctx) == VL3__CPU_PREC_BF16 ? "cpu-bf16" : "cpu-f32";
    if (strcmp(m->ops->name, "cuda") == 0)
        return "cuda-bf16";
    if (strcmp(m->ops->name, "cuda-emu") == 0)
        return "cuda-emu-bf16";
    return m->ops->name;
}

int vl3_model_get_info(const vl3_model *m, vl3_model_info *ret)
{
    VL3_RETURN_IF(!m || !ret, -EINVAL);
    const struct priv *pv = m->priv;
    vl3_model_info i;
    memset(&i, 0, sizeof(i));
    i.layout = vl3__layout_name(m->layout);
    i.model_type = vl3__layout_model_type(m->layout);
    i.dtype = pv->dtype < 0 ? "mixed" : vl3__dtype_name((enum vl3__dtype)pv->dtype);
    i.backend = m->ops ? m->ops->name : "none";
    i.compute = vl3__model_compute(m);
    i.llm_hidden = m->llm.hidden;
    i.llm_layers = m->llm.n_layers;
    i.llm_heads = m->llm.n_heads;
    i.llm_kv_heads = m->llm.n_kv_heads;
    i.llm_head_dim = m->llm.head_dim;
    i.llm_intermediate = m->llm.intermediate;
    i.vocab_rows = m->llm.vocab;
    i.max_positions = m->llm.max_positions;
    i.rope_theta = m->llm.rope_theta;
    i.rms_eps = m->llm.rms_eps;
    i.tied_lm_head = m->w.lm_head_tied;
    i.vision_hidden = m->vision.hidden;
    i.vision_layers = m->vision.n_layers;
    i.vision_heads = m->vision.n_heads;
    i.vision_intermediate = m->vision.intermediate;
    i.patch_size = m->vision.patch_size;
    i.use_token_compression = m->use_token_compression;
    i.id_endoftext = m->ids.endoftext;
    i.id_im_start = m->ids.im_start;
    i.id_im_end = m->ids.im_end;
    i.id_image_pad = m->ids.image_pad;
    i.id_video_pad = m->ids.video_pad;
    i.id_image = m->ids.image;
    i.image_token_id = m->ids.image_token;
    i.video_token_id = m->ids.video_token;
    i.has_tokenizer = m->tokenizer != NULL;
    i.n_tensors = pv->n_tensors;
    i.n_files = pv->st ? pv->st->n_files : 0;
    i.n_params = pv->n_params;
    i.n_bytes = pv->n_bytes;
    *ret = i;
    return 0;
}
