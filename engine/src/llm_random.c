/* llm_random.c: LLM-only models with random bf16 weights, built in memory: the tests' tiny models
 * (every tensor distinct, host copy kept for the test's reference) and `vl3 bench llm
 * --random-2b` (layers share one random host copy, freed after the backend conversion). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "vl3/engine.h"

static uint64_t rnd_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* bf16 of f (round to nearest even). */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Fill n bf16 values with center + scale * U(-1, 1). */
static void fill(uint16_t *d, size_t n, float center, float scale, uint64_t *st)
{
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rnd_next(st) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        d[i] = to_bf16(center + scale * (float)u);
    }
}

static void set_tensor(vl3__tensor *t, const char *name, uint16_t **cursor, int64_t d0, int64_t d1)
{
    t->name = name;
    t->dtype = VL3__DTYPE_BF16;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = *cursor;
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    t->nbytes = n * 2;
    *cursor += n;
}

vl3_llm_shape vl3_llm_shape_2b(void)
{
    return (vl3_llm_shape){.hidden = 1536,
                           .n_layers = 28,
                           .n_heads = 12,
                           .n_kv_heads = 2,
                           .head_dim = 128,
                           .intermediate = 8960,
                           .vocab = 151936,
                           .max_positions = 32768,
                           .rope_theta = 1e6f,
                           .rms_eps = 1e-6f,
                           .tied = 1};
}

/* Internal: build the model with host views into one owned bf16 buffer (*ret_host, freed by the
 * caller after vl3_model_free or after the upload). alias_layers: all layers share layer 0. */
int vl3__model_random(const vl3_llm_shape *sh, uint64_t seed, int alias_layers, void **ret_host,
                      vl3_model **ret, vl3_error *reterr);

int vl3__model_random(const vl3_llm_shape *sh, uint64_t seed, int alias_layers, void **ret_host,
                      vl3_model **ret, vl3_error *reterr)
{
    if (!sh || sh->hidden < 1 || sh->n_layers < 1 || sh->n_heads < 1 || sh->n_kv_heads < 1 ||
        sh->n_heads % sh->n_kv_heads || sh->head_dim < 2 || sh->head_dim % 2 ||
        sh->intermediate < 1 || sh->vocab < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid LLM shape");
    size_t C = sh->hidden, D = sh->head_dim, H = sh->n_heads, Hkv = sh->n_kv_heads;
    size_t I = sh->intermediate, V = sh->vocab;
    size_t layer = C * 2 + H * D * C + H * D + 2 * (Hkv * D * C + Hkv * D) + C * H * D +
                   3 * I * C;
    size_t n_layer_copies = alias_layers ? 1 : (size_t)sh->n_layers;
    size_t total = V * C * (sh->tied ? 1 : 2) + C + layer * n_layer_copies;
    vl3_model *m = calloc(1, sizeof(*m));
    uint16_t *host = malloc(total * 2);
    if (m)
        m->w.layers = calloc((size_t)sh->n_layers, sizeof(*m->w.layers));
    if (!m || !host || !m->w.layers) {
        free(host);
        if (m)
            free(m->w.layers);
        free(m);
        return vl3_error_set(reterr, -ENOMEM, "out of memory for a random model");
    }
    m->layout = VL3__LAYOUT_REMOTE;
    m->llm = (struct vl3__llm_hparams){.hidden = sh->hidden,
                                       .n_layers = sh->n_layers,
                                       .n_heads = sh->n_heads,
                                       .n_kv_heads = sh->n_kv_heads,
                                       .head_dim = sh->head_dim,
                                       .intermediate = sh->intermediate,
                                       .vocab = sh->vocab,
                                       .max_positions = sh->max_positions > 0 ? sh->max_positions
                                                                              : 32768,
                                       .rms_eps = sh->rms_eps > 0 ? sh->rms_eps : 1e-6f,
                                       .rope_theta = sh->rope_theta > 0 ? sh->rope_theta : 1e6f,
                                       .tie_embeddings = sh->tied};
    m->cfg.layout = m->layout;
    m->cfg.llm = m->llm;
    m->cfg.eos_id = -1;
    m->gen.do_sample = 0;
    m->gen.temperature = 1.0f;
    m->gen.top_p = 1.0f;
    m->gen.top_k = 0;
    m->gen.repetition_penalty = 1.0f;
    m->ids = (struct vl3__special_ids){-1, -1, -1, -1, -1, -1, -1, -1};

    uint64_t st = seed;
    uint16_t *cur = host;
    float s_c = 1.0f / sqrtf((float)C), s_hd = 1.0f / sqrtf((float)(H * D));
    float s_i = 1.0f / sqrtf((float)I);
    set_tensor(&m->w.embed, "embed_tokens", &cur, (int64_t)V, (int64_t)C);
    fill((uint16_t *)m->w.embed.data, V * C, 0.0f, 1.0f, &st);
    if (sh->tied) {
        m->w.lm_head = m->w.embed;
        m->w.lm_head_tied = 1;
    } else {
        set_tensor(&m->w.lm_head, "lm_head", &cur, (int64_t)V, (int64_t)C);
        fill((uint16_t *)m->w.lm_head.data, V * C, 0.0f, s_c, &st);
    }
    set_tensor(&m->w.norm, "norm", &cur, (int64_t)C, 0);
    fill((uint16_t *)m->w.norm.data, C, 1.0f, 0.2f, &st);
    for (int l = 0; l < sh->n_layers; l++) {
        struct vl3__llm_layer *L = &m->w.layers[l];
        if (alias_layers && l > 0) {
            *L = m->w.layers[0];
            continue;
        }
        set_tensor(&L->attn_norm, "attn_norm", &cur, (int64_t)C, 0);
        fill((uint16_t *)L->attn_norm.data, C, 1.0f, 0.2f, &st);
        set_tensor(&L->wq, "wq", &cur, (int64_t)(H * D), (int64_t)C);
        fill((uint16_t *)L->wq.data, H * D * C, 0.0f, s_c, &st);
        set_tensor(&L->bq, "bq", &cur, (int64_t)(H * D), 0);
        fill((uint16_t *)L->bq.data, H * D, 0.0f, 0.5f, &st);
        set_tensor(&L->wk, "wk", &cur, (int64_t)(Hkv * D), (int64_t)C);
        fill((uint16_t *)L->wk.data, Hkv * D * C, 0.0f, s_c, &st);
        set_tensor(&L->bk, "bk", &cur, (int64_t)(Hkv * D), 0);
        fill((uint16_t *)L->bk.data, Hkv * D, 0.0f, 0.5f, &st);
        set_tensor(&L->wv, "wv", &cur, (int64_t)(Hkv * D), (int64_t)C);
        fill((uint16_t *)L->wv.data, Hkv * D * C, 0.0f, s_c, &st);
        set_tensor(&L->bv, "bv", &cur, (int64_t)(Hkv * D), 0);
        fill((uint16_t *)L->bv.data, Hkv * D, 0.0f, 0.5f, &st);
        set_tensor(&L->wo, "wo", &cur, (int64_t)C, (int64_t)(H * D));
        fill((uint16_t *)L->wo.data, C * H * D, 0.0f, s_hd, &st);
        set_tensor(&L->ffn_norm, "ffn_norm", &cur, (int64_t)C, 0);
        fill((uint16_t *)L->ffn_norm.data, C, 1.0f, 0.2f, &st);
        set_tensor(&L->w_gate, "w_gate", &cur, (int64_t)I, (int64_t)C);
        fill((uint16_t *)L->w_gate.data, I * C, 0.0f, s_c, &st);
        set_tensor(&L->w_up, "w_up", &cur, (int64_t)I, (int64_t)C);
        fill((uint16_t *)L->w_up.data, I * C, 0.0f, s_c, &st);
        set_tensor(&L->w_down, "w_down", &cur, (int64_t)C, (int64_t)I);
        fill((uint16_t *)L->w_down.data, C * I, 0.0f, s_i, &st);
    }
    *ret_host = host;
    *ret = m;
    return 0;
}

int vl3_model_new_random(const vl3_llm_shape *shape, uint64_t seed, int n_threads, vl3_model **ret,
                         vl3_error *reterr)
{
    if (!ret)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    void *host = NULL;
    vl3_model *m = NULL;
    int r = vl3__model_random(shape, seed, 1, &host, &m, reterr);
    if (r < 0)
        return r;
    vl3_model_params p = vl3_model_params_default();
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = n_threads;
    r = vl3__model_backend_init(m, &p, reterr);
    free(host);
    /* the host views are gone: only the backend copy remains */
    memset(&m->w.embed, 0, sizeof(m->w.embed));
    m->w.lm_head = m->w.embed;
    memset(&m->w.norm, 0, sizeof(m->w.norm));
    memset(m->w.layers, 0, (size_t)m->llm.n_layers * sizeof(*m->w.layers));
    if (r < 0) {
        vl3_model_free(m);
        return r;
    }
    *ret = m;
    return 0;
}
