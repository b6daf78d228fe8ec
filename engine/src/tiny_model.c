/* tiny_model.c: writes tiny random VideoLLaMA3 checkpoints (see tiny_model.h).
 *
 * The tensor list is spec section 2 for the chosen layout; names are sorted before writing.
 * Every tensor gets its own RNG stream seeded from (seed, name), so the values of a tensor do
 * not depend on the order, the shard split or the other tensors. Values: Linear/conv weights
 * and biases ~ N(0, 0.02^2), norm weights 1 + N(0, 0.02^2), LayerNorm biases N(0, 0.02^2); the
 * normal deviate is an Irwin-Hall sum of 12 uniforms (exact double arithmetic, no libm), then
 * rounded to bf16 (nearest even). Config files carry the real keys of each layout so that the
 * reference implementations could read them (remote: auto_map to the DAMO remote-code classes,
 * which are not shipped here). */
#include "tiny_model.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "vl3/util.h"

#define INIT_STD 0.02

void vl3__tiny_params_default(struct vl3__tiny_params *p)
{
    memset(p, 0, sizeof(*p));
    p->layout = VL3__LAYOUT_REMOTE;
    p->n_shards = 1;
    p->std = INIT_STD;
    p->hidden = 64;
    p->n_layers = 2;
    p->n_heads = 4;
    p->n_kv_heads = 2;
    p->intermediate = 128;
    p->rope_theta = 1e6;
    p->v_hidden = 32;
    p->v_layers = 2;
    p->v_heads = 2;
    p->v_intermediate = 64;
    p->patch_size = 14;
}

/* ---- RNG: splitmix64 ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double normal(uint64_t *s)
{
    double acc = 0;
    for (int i = 0; i < 12; i++)
        acc += (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
    return acc - 6.0;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest even; inputs are finite */
    return (uint16_t)(u >> 16);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* ---- tensor list ---- */

enum init { INIT_WEIGHT, INIT_NORM_W, INIT_NORM_B };

struct list {
    struct vl3__st_wtensor *t;
    size_t n, cap;
    uint64_t seed;
    double std;
    int err;
};

static void add(struct list *l, enum init kind, int ndim, const int64_t *shape, const char *name)
{
    if (l->err)
        return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        struct vl3__st_wtensor *nt = realloc(l->t, nc * sizeof(*nt));
        if (!nt) {
            l->err = -ENOMEM;
            return;
        }
        l->t = nt;
        l->cap = nc;
    }
    struct vl3__st_wtensor *t = &l->t[l->n];
    memset(t, 0, sizeof(*t));
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        count *= (size_t)shape[i];
    }
    t->ndim = ndim;
    t->dtype = VL3__DTYPE_BF16;
    t->name = strdup(name);
    uint16_t *d = malloc(count * 2);
    if (!t->name || !d) {
        free((char *)t->name);
        free(d);
        l->err = -ENOMEM;
        return;
    }
    uint64_t s = l->seed ^ name_hash(name);
    for (size_t i = 0; i < count; i++) {
        double v = l->std * normal(&s);
        d[i] = to_bf16((float)(kind == INIT_NORM_W ? 1.0 + v : v));
    }
    t->data = d;
    l->n++;
}

#define ADD(kind, tname, ...)                                                                    \
    do {                                                                                           \
        const int64_t s_[] = {__VA_ARGS__};                                                        \
        add(&l, kind, (int)VL3_ARRAY_SIZE(s_), s_, tname);                                        \
    } while (0)

static int cmp_wt(const void *a, const void *b)
{
    return strcmp(((const struct vl3__st_wtensor *)a)->name, ((const struct vl3__st_wtensor *)b)->name);
}

static void list_free(struct list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->t[i].name);
        free((void *)l->t[i].data);
    }
    free(l->t);
}

/* Build all tensors of spec section 2 for the layout. */
static int build_tensors(const struct vl3__tiny_params *p, int vocab_rows, struct list *out)
{
    const int remote = p->layout == VL3__LAYOUT_REMOTE;
    const char *vp = remote ? "model.vision_encoder." : "model.vision_model.";
    const char *pp = remote ? "model.mm_projector.readout." : "model.projector.readout.";
    const char *lp = remote ? "model." : "model.language_model.";
    const int64_t C = p->hidden, V = vocab_rows, I = p->intermediate;
    const int64_t KVD = (int64_t)p->n_kv_heads * (p->hidden / p->n_heads);
    const int64_t Cv = p->v_hidden, Iv = p->v_intermediate, P = p->patch_size;
    struct list l = {.seed = splitmix(&(uint64_t){p->seed}), .std = p->std};
    char f[256];
#define F(...) (snprintf(f, sizeof(f), __VA_ARGS__), f)

    ADD(INIT_WEIGHT, F("%sembeddings.patch_embedding.weight", vp), Cv, 3, P, P);
    ADD(INIT_WEIGHT, F("%sembeddings.patch_embedding.bias", vp), Cv);
    for (int i = 0; i < p->v_layers; i++) {
        static const char *const proj[4] = {"q", "k", "v", "out"};
        ADD(INIT_NORM_W, F("%sencoder.layers.%d.layer_norm1.weight", vp, i), Cv);
        ADD(INIT_NORM_B, F("%sencoder.layers.%d.layer_norm1.bias", vp, i), Cv);
        for (int k = 0; k < 4; k++) {
            ADD(INIT_WEIGHT, F("%sencoder.layers.%d.self_attn.%s_proj.weight", vp, i, proj[k]), Cv, Cv);
            ADD(INIT_WEIGHT, F("%sencoder.layers.%d.self_attn.%s_proj.bias", vp, i, proj[k]), Cv);
        }
        ADD(INIT_NORM_W, F("%sencoder.layers.%d.layer_norm2.weight", vp, i), Cv);
        ADD(INIT_NORM_B, F("%sencoder.layers.%d.layer_norm2.bias", vp, i), Cv);
        ADD(INIT_WEIGHT, F("%sencoder.layers.%d.mlp.fc1.weight", vp, i), Iv, Cv);
        ADD(INIT_WEIGHT, F("%sencoder.layers.%d.mlp.fc1.bias", vp, i), Iv);
        ADD(INIT_WEIGHT, F("%sencoder.layers.%d.mlp.fc2.weight", vp, i), Cv, Iv);
        ADD(INIT_WEIGHT, F("%sencoder.layers.%d.mlp.fc2.bias", vp, i), Cv);
    }
    ADD(INIT_NORM_W, F("%spost_layernorm.weight", vp), Cv);
    ADD(INIT_NORM_B, F("%spost_layernorm.bias", vp), Cv);
    ADD(INIT_WEIGHT, F("%s0.weight", pp), C, Cv);
    ADD(INIT_WEIGHT, F("%s0.bias", pp), C);
    ADD(INIT_WEIGHT, F("%s2.weight", pp), C, C);
    ADD(INIT_WEIGHT, F("%s2.bias", pp), C);
    ADD(INIT_WEIGHT, F("%sembed_tokens.weight", lp), V, C);
    for (int j = 0; j < p->n_layers; j++) {
        ADD(INIT_NORM_W, F("%slayers.%d.input_layernorm.weight", lp, j), C);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.q_proj.weight", lp, j), C, C);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.q_proj.bias", lp, j), C);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.k_proj.weight", lp, j), KVD, C);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.k_proj.bias", lp, j), KVD);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.v_proj.weight", lp, j), KVD, C);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.v_proj.bias", lp, j), KVD);
        ADD(INIT_WEIGHT, F("%slayers.%d.self_attn.o_proj.weight", lp, j), C, C);
        ADD(INIT_NORM_W, F("%slayers.%d.post_attention_layernorm.weight", lp, j), C);
        ADD(INIT_WEIGHT, F("%slayers.%d.mlp.gate_proj.weight", lp, j), I, C);
        ADD(INIT_WEIGHT, F("%slayers.%d.mlp.up_proj.weight", lp, j), I, C);
        ADD(INIT_WEIGHT, F("%slayers.%d.mlp.down_proj.weight", lp, j), C, I);
    }
    ADD(INIT_NORM_W, F("%snorm.weight", lp), C);
    if (!remote) /* native tiny = 7B-like: separate lm_head; remote tiny = 2B-like: tied */
        ADD(INIT_WEIGHT, F("lm_head.weight"), V, C);
#undef F
    if (l.err) {
        list_free(&l);
        return l.err;
    }
    qsort(l.t, l.n, sizeof(*l.t), cmp_wt);
    *out = l;
    return 0;
}

/* ---- config files ---- */

static int dump(json_t *j, const char *dir, const char *file, vl3_error *reterr)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (!j)
        return vl3_error_set(reterr, -ENOMEM, "out of memory building \"%s\"", file);
    int r = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (r != 0)
        return vl3_error_set(reterr, -EIO, "could not write \"%s\"", path);
    return 0;
}

/* The Qwen2 keys shared by the remote top level and the native text_config. */
static json_t *qwen2_keys(const struct vl3__tiny_params *p, const struct vl3__tiny_tok *tk, int rows,
                          int tied)
{
    return json_pack("{s:f, s:i, s:i, s:s, s:i, s:f, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:n, s:f,"
                     " s:n, s:b, s:s, s:b, s:b, s:i}",
                     "attention_dropout", 0.0, "bos_token_id", tk->endoftext, "eos_token_id",
                     tk->im_end, "hidden_act", "silu", "hidden_size", p->hidden,
                     "initializer_range", p->std, "intermediate_size", p->intermediate,
                     "max_position_embeddings", 32768, "max_window_layers", p->n_layers,
                     "num_attention_heads", p->n_heads, "num_hidden_layers", p->n_layers,
                     "num_key_value_heads", p->n_kv_heads, "rms_norm_eps", 1e-6, "rope_scaling",
                     "rope_theta", p->rope_theta, "sliding_window", "tie_word_embeddings", tied,
                     "torch_dtype", "bfloat16", "use_cache", 1, "use_sliding_window", 0,
                     "vocab_size", rows);
}

static json_t *vision_keys(const struct vl3__tiny_params *p, const char *model_type)
{
    return json_pack("{s:f, s:s, s:i, s:f, s:i, s:f, s:s, s:i, s:i, s:i, s:i}",
                     "attention_dropout", 0.0, "hidden_act", "gelu_pytorch_tanh", "hidden_size",
                     p->v_hidden, "initializer_range", p->std, "intermediate_size",
                     p->v_intermediate, "layer_norm_eps", 1e-6, "model_type", model_type,
                     "num_attention_heads", p->v_heads, "num_channels", 3, "num_hidden_layers",
                     p->v_layers, "patch_size", p->patch_size);
}

static int write_configs(const char *dir, const struct vl3__tiny_params *p,
                         const struct vl3__tiny_tok *tk, vl3_error *reterr)
{
    const int remote = p->layout == VL3__LAYOUT_REMOTE;
    json_t *cfg;
    int r;
    if (remote) {
        cfg = qwen2_keys(p, tk, tk->vocab_rows, 1);
        if (cfg) {
            json_object_set_new(cfg, "architectures", json_pack("[s]", "Videollama3Qwen2ForCausalLM"));
            json_object_set_new(
                cfg, "auto_map",
                json_pack("{s:s, s:s}", "AutoConfig", "configuration_videollama3.Videollama3Qwen2Config",
                          "AutoModelForCausalLM", "modeling_videollama3.Videollama3Qwen2ForCausalLM"));
            json_object_set_new(cfg, "image_token_index", json_integer(tk->image));
            json_object_set_new(cfg, "mm_projector_type", json_string("mlp2x_gelu"));
            json_object_set_new(cfg, "model_type", json_string("videollama3_qwen2"));
            json_object_set_new(cfg, "transformers_version", json_string("4.46.3"));
            json_object_set_new(cfg, "use_token_compression", json_true());
            json_object_set_new(cfg, "vision_encoder", json_null());
            json_object_set_new(cfg, "vision_encoder_config",
                                vision_keys(p, "videollama3_vision_encoder"));
        }
    } else {
        json_t *text = qwen2_keys(p, tk, tk->vocab_rows, 0);
        if (text)
            json_object_set_new(text, "model_type", json_string("qwen2"));
        cfg = json_pack("{s:[s], s:i, s:s, s:o, s:b, s:s, s:s, s:i, s:o}", "architectures",
                        "VideoLlama3ForConditionalGeneration", "image_token_id", tk->image_pad,
                        "model_type", "video_llama_3", "text_config", text,
                        "tie_word_embeddings", 0, "torch_dtype", "bfloat16",
                        "transformers_version", "4.57.0", "video_token_id", tk->video_pad,
                        "vision_config", vision_keys(p, "video_llama_3_vision"));
    }
    if ((r = dump(cfg, dir, "config.json", reterr)) < 0)
        return r;
    json_t *gen = json_pack("{s:i, s:b, s:[i,i], s:i, s:f, s:f, s:i, s:f, s:s}", "bos_token_id",
                            tk->endoftext, "do_sample", 1, "eos_token_id", tk->im_end, tk->endoftext,
                            "pad_token_id", tk->endoftext, "repetition_penalty",
                            remote ? 1.1 : 1.05, "temperature", 0.7, "top_k", 20, "top_p", 0.8,
                            "transformers_version", remote ? "4.46.3" : "4.57.0");
    if ((r = dump(gen, dir, "generation_config.json", reterr)) < 0)
        return r;
    json_t *pre, *proc;
    const int64_t unit = (int64_t)p->patch_size * p->patch_size;
    if (remote) {
        pre = json_pack("{s:{s:s, s:s}, s:b, s:b, s:b, s:b, s:[f,f,f], s:s, s:[f,f,f], s:i, s:i,"
                        " s:i, s:s, s:i, s:f}",
                        "auto_map", "AutoImageProcessor",
                        "image_processing_videollama3.Videollama3ImageProcessor", "AutoProcessor",
                        "processing_videollama3.Videollama3Qwen2Processor", "do_convert_rgb", 1,
                        "do_normalize", 1, "do_rescale", 1, "do_resize", 1, "image_mean", 0.5, 0.5,
                        0.5, "image_processor_type", "Videollama3ImageProcessor", "image_std", 0.5,
                        0.5, 0.5, "max_tokens", 16384, "min_tokens", 16, "patch_size",
                        p->patch_size, "processor_class", "Videollama3Qwen2Processor", "resample",
                        3, "rescale_factor", 1.0 / 255.0);
        proc = json_pack("{s:{s:s}, s:i, s:i, s:i, s:s, s:i}", "auto_map", "AutoProcessor",
                         "processing_videollama3.Videollama3Qwen2Processor", "fps", 1,
                         "image_merge_size", 1, "max_frames", 128, "processor_class",
                         "Videollama3Qwen2Processor", "video_merge_size", 2);
    } else {
        pre = json_pack("{s:b, s:b, s:b, s:b, s:[f,f,f], s:s, s:[f,f,f], s:I, s:i, s:I, s:i, s:s,"
                        " s:i, s:f, s:{s:I, s:I}, s:i}",
                        "do_convert_rgb", 1, "do_normalize", 1, "do_rescale", 1, "do_resize", 1,
                        "image_mean", 0.5, 0.5, 0.5, "image_processor_type",
                        "VideoLlama3ImageProcessor", "image_std", 0.5, 0.5, 0.5, "max_pixels",
                        (json_int_t)(16384 * unit), "merge_size", 1, "min_pixels",
                        (json_int_t)(16 * unit), "patch_size", p->patch_size, "processor_class",
                        "VideoLlama3Processor", "resample", 3, "rescale_factor", 1.0 / 255.0,
                        "size", "longest_edge", (json_int_t)(16384 * unit), "shortest_edge",
                        (json_int_t)(16 * unit), "temporal_patch_size", 1);
        proc = json_pack("{s:s}", "processor_class", "VideoLlama3Processor");
    }
    if ((r = dump(pre, dir, "preprocessor_config.json", reterr)) < 0) {
        json_decref(proc);
        return r;
    }
    return dump(proc, dir, "processor_config.json", reterr);
}

/* Remove weight files of an earlier run in out_dir (a stale index would shadow a new single
 * file, stale shards would confuse readers). */
static int remove_old_weights(const char *dir, vl3_error *reterr)
{
    DIR *d = opendir(dir);
    if (!d)
        return vl3_error_set(reterr, -errno, "could not open \"%s\": %s", dir, strerror(errno));
    struct dirent *de;
    int r = 0;
    char path[PATH_MAX];
    unsigned a, b;
    char tail[32];
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        int old = strcmp(n, "model.safetensors") == 0 ||
                  strcmp(n, "model.safetensors.index.json") == 0 ||
                  (sscanf(n, "model-%5u-of-%5u.%31s", &a, &b, tail) == 3 &&
                   strcmp(tail, "safetensors") == 0);
        if (!old)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, n);
        if (unlink(path) < 0 && errno != ENOENT) {
            r = vl3_error_set(reterr, -errno, "could not remove \"%s\": %s", path, strerror(errno));
            break;
        }
    }
    closedir(d);
    return r;
}

int vl3__tiny_write(const char *out_dir, const struct vl3__tiny_params *p, vl3_error *reterr)
{
    VL3_RETURN_IF(!out_dir || !p, -EINVAL);
    if (p->hidden < 2 || p->n_heads < 1 || p->hidden % p->n_heads || p->n_kv_heads < 1 ||
        p->n_heads % p->n_kv_heads || p->v_hidden < 4 || p->v_heads < 1 ||
        p->v_hidden % p->v_heads || (p->v_hidden / p->v_heads) % 4 || p->n_layers < 1 ||
        p->v_layers < 1 || p->intermediate < 1 || p->v_intermediate < 1 || p->patch_size < 1 ||
        p->hidden > 4096 || p->v_hidden > 4096 || p->n_shards < 1 || p->n_shards > 64)
        return vl3_error_set(reterr, -EINVAL, "inconsistent tiny model sizes");
    if (mkdir(out_dir, 0777) < 0 && errno != EEXIST)
        return vl3_error_set(reterr, -errno, "could not create \"%s\": %s", out_dir,
                             strerror(errno));
    struct vl3__tiny_tok tk;
    struct list l = {0};
    int r = vl3__tiny_tokenizer_write(out_dir, p->tokenizer_dir, p->layout, &tk, reterr);
    if (r < 0)
        return r;
    if ((r = write_configs(out_dir, p, &tk, reterr)) < 0)
        return r;
    if ((r = remove_old_weights(out_dir, reterr)) < 0)
        return r;
    if ((r = build_tensors(p, tk.vocab_rows, &l)) < 0)
        return vl3_error_set(reterr, r, "out of memory");
    r = vl3__st_write_sharded(out_dir, l.t, l.n, p->n_shards, reterr);
    list_free(&l);
    return r;
}

vl3_tiny_params vl3_tiny_params_default(void)
{
    vl3_tiny_params p;
    memset(&p, 0, sizeof(p));
    p.n_shards = 1;
    return p;
}

int vl3_model_write_tiny(const char *out_dir, const vl3_tiny_params *params, vl3_error *reterr)
{
    VL3_RETURN_IF(!out_dir || !params, -EINVAL);
    struct vl3__tiny_params p;
    vl3__tiny_params_default(&p);
    p.layout = params->native ? VL3__LAYOUT_NATIVE : VL3__LAYOUT_REMOTE;
    p.seed = params->seed;
    p.tokenizer_dir = params->tokenizer_dir;
    p.n_shards = params->n_shards;
    if (params->std > 0)
        p.std = params->std;
    if (params->full_2b) {
        p.hidden = 1536;
        p.n_layers = 28;
        p.n_heads = 12;
        p.n_kv_heads = 2;
        p.intermediate = 8960;
        p.v_hidden = 1152;
        p.v_layers = 27;
        p.v_heads = 16;
        p.v_intermediate = 4304;
    }
    return vl3__tiny_write(out_dir, &p, reterr);
}
