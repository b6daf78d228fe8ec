/* test_loader.c: checkpoint loading and tiny models (test-loader, label unit).
 *
 * Tiny checkpoints of both layouts are written by the tiny writer into the test's temporary
 * directory and loaded back: every tensor bound with its config shape, tied vs separate lm_head,
 * sharded vs single-file bytes, an independent Python (struct/json/numpy) reading of the written
 * files, determinism per seed, the real Qwen2.5 tokenizer copy (skipped without ../shared), and
 * the CLI. test_loader_corrupt.c covers malformed inputs. White-box: includes engine/src headers. */
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "tiny_model.h"
#include "vl3/engine.h"
#include "vl3/util.h"

/* Write a tiny checkpoint into <tmp>/<name>; returns the path (static storage per call site). */
static const char *tiny(const char *name, enum vl3__layout layout, uint64_t seed, int shards,
                        const char *tok, char *buf, size_t len)
{
    struct vl3__tiny_params p;
    vl3__tiny_params_default(&p);
    p.layout = layout;
    p.seed = seed;
    p.n_shards = shards;
    p.tokenizer_dir = tok;
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    vl3_error e = {0};
    int r = vl3__tiny_write(buf, &p, &e);
    if (r < 0) {
        fprintf(stderr, "tiny write failed: %s\n", vl3_error_text(&e, r));
        return NULL;
    }
    return buf;
}

static int load(const char *dir, int strict, vl3_model **m, vl3_error *e)
{
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.strict = strict;
    return vl3_model_load(&p, m, e);
}

/* Parameter count of the architecture computed from the sizes (independent of the loader). */
static int64_t expected_params(const struct vl3__tiny_params *p, int64_t V, int tied)
{
    int64_t C = p->hidden, I = p->intermediate, KVD = p->n_kv_heads * (p->hidden / p->n_heads);
    int64_t Cv = p->v_hidden, Iv = p->v_intermediate, P = p->patch_size;
    int64_t vis = Cv * 3 * P * P + Cv +
                  p->v_layers * (4 * Cv + 4 * (Cv * Cv + Cv) + Iv * Cv + Iv + Cv * Iv + Cv) + 2 * Cv;
    int64_t proj = C * Cv + C + C * C + C;
    int64_t llm = V * C + p->n_layers * (2 * C + C * C + C + 2 * (KVD * C + KVD) + C * C + 3 * I * C) + C;
    return vis + proj + llm + (tied ? 0 : V * C);
}

static int tensor_ok(const vl3__tensor *t, int ndim, int64_t d0, int64_t d1)
{
    return t->data && t->name && t->dtype == VL3__DTYPE_BF16 && t->ndim == ndim &&
           t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
}

/* All tensors of a loaded model, in a fixed order, for comparisons. */
static size_t all_tensors(const vl3_model *m, const vl3__tensor **out, size_t cap)
{
    size_t n = 0;
    const struct vl3__weights *w = &m->w;
#define PUT(t)                                                                                     \
    do {                                                                                           \
        if (n < cap)                                                                               \
            out[n] = &(t);                                                                       \
        n++;                                                                                       \
    } while (0)
    PUT(w->embed);
    PUT(w->norm);
    PUT(w->lm_head);
    PUT(w->patch_w);
    PUT(w->patch_b);
    PUT(w->post_ln_w);
    PUT(w->post_ln_b);
    PUT(w->proj_w1);
    PUT(w->proj_b1);
    PUT(w->proj_w2);
    PUT(w->proj_b2);
    for (int j = 0; j < m->llm.n_layers; j++) {
        const struct vl3__llm_layer *L = &w->layers[j];
        const vl3__tensor *lt[] = {&L->attn_norm, &L->wq, &L->bq, &L->wk, &L->bk, &L->wv,
                                   &L->bv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t k = 0; k < VL3_ARRAY_SIZE(lt); k++)
            PUT(*lt[k]);
    }
    for (int i = 0; i < m->vision.n_layers; i++) {
        const struct vl3__vision_layer *L = &w->vlayers[i];
        const vl3__tensor *vt[] = {&L->ln1_w, &L->ln1_b, &L->wq, &L->bq, &L->wk, &L->bk,
                                   &L->wv, &L->bv, &L->wo, &L->bo, &L->ln2_w, &L->ln2_b,
                                   &L->fc1_w, &L->fc1_b, &L->fc2_w, &L->fc2_b};
        for (size_t k = 0; k < VL3_ARRAY_SIZE(vt); k++)
            PUT(*vt[k]);
    }
#undef PUT
    return n;
}

static int check_model(const vl3_model *m, const struct vl3__tiny_params *p, int tied)
{
    const struct vl3__weights *w = &m->w;
    int64_t C = p->hidden, V = m->llm.vocab, KVD = p->n_kv_heads * (p->hidden / p->n_heads);
    int64_t Cv = p->v_hidden;
    ASSERT(tensor_ok(&w->embed, 2, V, C));
    ASSERT(tensor_ok(&w->lm_head, 2, V, C));
    ASSERT(tensor_ok(&w->norm, 1, C, 0));
    ASSERT(tensor_ok(&w->patch_w, 4, Cv, 3));
    ASSERT_EQ(w->patch_w.shape[2], p->patch_size);
    ASSERT_EQ(w->patch_w.shape[3], p->patch_size);
    ASSERT(tensor_ok(&w->proj_w1, 2, C, Cv));
    ASSERT(tensor_ok(&w->proj_w2, 2, C, C));
    for (int j = 0; j < p->n_layers; j++) {
        ASSERT(tensor_ok(&w->layers[j].wk, 2, KVD, C));
        ASSERT(tensor_ok(&w->layers[j].bv, 1, KVD, 0));
        ASSERT(tensor_ok(&w->layers[j].w_down, 2, C, p->intermediate));
    }
    for (int i = 0; i < p->v_layers; i++)
        ASSERT(tensor_ok(&w->vlayers[i].fc1_w, 2, p->v_intermediate, Cv));
    const vl3__tensor *all[256];
    size_t n = all_tensors(m, all, 256);
    for (size_t i = 0; i < n; i++) {
        ASSERT(all[i]->data != NULL);
        int64_t count = 1;
        for (int d = 0; d < all[i]->ndim; d++)
            count *= all[i]->shape[d];
        ASSERT_EQ((int64_t)all[i]->nbytes, count * 2);
    }
    ASSERT_EQ(w->lm_head_tied, tied);
    ASSERT_EQ(w->lm_head.data == w->embed.data, tied);
    vl3_model_info info;
    ASSERT_OK(vl3_model_get_info(m, &info));
    ASSERT_EQ(info.tied_lm_head, tied);
    /* every distinct tensor is counted once: n - 1 when lm_head aliases embed */
    ASSERT_EQ(info.n_tensors, (int)n - tied);
    ASSERT_EQ(info.n_params, expected_params(p, V, tied));
    ASSERT_EQ(info.n_bytes, 2 * expected_params(p, V, tied));
    ASSERT_STR_EQ(info.dtype, "bf16");
    return 0;
}

TEST(tiny_remote_tied)
{
    char dir[PATH_MAX];
    struct vl3__tiny_params p;
    vl3__tiny_params_default(&p);
    ASSERT(tiny("remote", VL3__LAYOUT_REMOTE, 1, 1, NULL, dir, sizeof(dir)));
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    ASSERT_EQ(m->layout, VL3__LAYOUT_REMOTE);
    int r = check_model(m, &p, 1);
    vl3_model_info info;
    vl3_model_get_info(m, &info);
    ASSERT_STR_EQ(info.layout, "remote");
    ASSERT_STR_EQ(info.model_type, "videollama3_qwen2");
    ASSERT_STR_EQ(info.backend, "cpu");
    ASSERT_EQ(info.n_tensors, 66);
    ASSERT_EQ(info.llm_head_dim, 16);
    ASSERT_EQ(info.vocab_rows % 64, 0);
    /* special ids agree with the tokenizer files and the config */
    ASSERT(info.id_image >= 0);
    ASSERT_EQ(info.image_token_id, info.id_image);
    ASSERT_EQ(info.video_token_id, info.id_image);
    ASSERT_EQ(info.id_im_start, info.id_endoftext + 1);
    ASSERT_EQ(info.id_im_end, info.id_endoftext + 2);
    ASSERT_EQ(info.id_image_pad, info.id_endoftext + 12);
    ASSERT_EQ(m->gen.n_eos, 2);
    ASSERT_EQ(m->gen.eos_ids[0], info.id_im_end);
    ASSERT_EQ(m->gen.eos_ids[1], info.id_endoftext);
    ASSERT_NEAR(m->gen.repetition_penalty, 1.1, 1e-6);
    ASSERT_EQ(m->pre.video_merge, 2);
    ASSERT_EQ(m->pre.max_tokens, 16384);
    ASSERT_NEAR(m->pre.mean[1], 0.5, 0);
    vl3_model_free(m);
    return r;
}

TEST(tiny_native_untied)
{
    char dir[PATH_MAX];
    struct vl3__tiny_params p;
    vl3__tiny_params_default(&p);
    ASSERT(tiny("native", VL3__LAYOUT_NATIVE, 1, 1, NULL, dir, sizeof(dir)));
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    ASSERT_EQ(m->layout, VL3__LAYOUT_NATIVE);
    int r = check_model(m, &p, 0);
    ASSERT_STR_EQ(m->w.lm_head.name, "lm_head.weight");
    ASSERT_STR_EQ(m->w.embed.name, "model.language_model.embed_tokens.weight");
    ASSERT_STR_EQ(m->w.vlayers[1].wo.name, "model.vision_model.encoder.layers.1.self_attn.out_proj.weight");
    ASSERT_STR_EQ(m->w.proj_w2.name, "model.projector.readout.2.weight");
    vl3_model_info info;
    vl3_model_get_info(m, &info);
    ASSERT_EQ(info.n_tensors, 67);
    ASSERT_EQ(info.image_token_id, info.id_image_pad);
    ASSERT_EQ(info.video_token_id, info.id_video_pad);
    ASSERT_EQ(info.id_image, -1);
    /* native preprocessor: pixel budgets converted to merged tokens */
    ASSERT_EQ(m->pre.min_tokens, 16);
    ASSERT_EQ(m->pre.max_tokens, 16384);
    vl3_model_free(m);
    /* budgets saved as size {shortest_edge, longest_edge} by current transformers; min_pixels /
     * max_pixels override them, as in VideoLlama3ImageProcessor.__init__ */
    char pre[PATH_MAX + 32];
    snprintf(pre, sizeof(pre), "%s/preprocessor_config.json", dir);
    static const char *const cfgs[] = {
        "{\"image_processor_type\": \"VideoLlama3ImageProcessor\", \"patch_size\": 14, "
        "\"merge_size\": 1, \"size\": {\"shortest_edge\": 3136, \"longest_edge\": 1003520}}",
        "{\"patch_size\": 14, \"merge_size\": 1, \"min_pixels\": 6272, "
        "\"size\": {\"shortest_edge\": 3136, \"longest_edge\": 1003520}}",
        "{\"patch_size\": 14, \"size\": {\"longest_edge\": \"big\"}}"};
    const int want_min[] = {16, 32}, want_max[] = {5120, 5120};
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(vl3_file_write(pre, cfgs[i], strlen(cfgs[i]), NULL));
        int lr = load(dir, 1, &m, &e);
        if (i == 2) {
            ASSERT(lr < 0);
            ASSERT_STR_CONTAINS(e.msg, "size.longest_edge");
            continue;
        }
        ASSERT_OK_E(lr, &e);
        ASSERT_EQ(m->pre.min_tokens, want_min[i]);
        ASSERT_EQ(m->pre.max_tokens, want_max[i]);
        vl3_model_free(m);
    }
    /* the native video processor's own file: budgets (size, then min/max_pixels), merge size
     * and use_token_compression (DiffFP) reach the request defaults */
    ASSERT_OK(vl3_file_write(pre, cfgs[0], strlen(cfgs[0]), NULL));
    snprintf(pre, sizeof(pre), "%s/video_preprocessor_config.json", dir);
    const char *vcfg = "{\"merge_size\": 2, \"use_token_compression\": false, \"max_pixels\": 401408,"
                       " \"size\": {\"shortest_edge\": 50176, \"longest_edge\": 301056}}";
    ASSERT_OK(vl3_file_write(pre, vcfg, strlen(vcfg), NULL));
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    ASSERT_EQ(m->pre.video_min_pixels, 50176);
    ASSERT_EQ(m->pre.video_max_pixels, 401408);
    ASSERT_EQ(m->use_token_compression, 0);
    vl3_mm_params mm;
    vl3_mm_params_default(m, &mm);
    ASSERT_EQ(mm.difffp.enabled, 0);
    ASSERT_EQ(mm.pre.native_video_min_pixels, 50176);
    ASSERT_EQ(mm.pre.native_video_max_pixels, 401408);
    vl3_model_free(m);
    vcfg = "{\"min_pixels\": 900000, \"max_pixels\": 1000}";
    ASSERT_OK(vl3_file_write(pre, vcfg, strlen(vcfg), NULL));
    ASSERT(load(dir, 1, &m, &e) < 0);
    ASSERT_STR_CONTAINS(e.msg, "video_preprocessor_config.json");
    return r;
}

/* A 3-shard checkpoint maps to the same bytes as the single file of the same seed. */
TEST(sharded_identical)
{
    char d1[PATH_MAX], d3[PATH_MAX];
    ASSERT(tiny("single", VL3__LAYOUT_NATIVE, 5, 1, NULL, d1, sizeof(d1)));
    ASSERT(tiny("sharded", VL3__LAYOUT_NATIVE, 5, 3, NULL, d3, sizeof(d3)));
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/model-00003-of-00003.safetensors", d3);
    ASSERT_EQ(access(path, R_OK), 0);
    snprintf(path, sizeof(path), "%s/model.safetensors", d3);
    ASSERT(access(path, F_OK) != 0);
    vl3_model *a = NULL, *b = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(d1, 1, &a, &e), &e);
    ASSERT_OK_E(load(d3, 1, &b, &e), &e);
    vl3_model_info ia, ib;
    vl3_model_get_info(a, &ia);
    vl3_model_get_info(b, &ib);
    ASSERT_EQ(ia.n_files, 1);
    ASSERT_EQ(ib.n_files, 3);
    ASSERT_EQ(ia.n_tensors, ib.n_tensors);
    const vl3__tensor *ta[256], *tb[256];
    size_t na = all_tensors(a, ta, 256), nb = all_tensors(b, tb, 256);
    ASSERT_EQ(na, nb);
    for (size_t i = 0; i < na; i++) {
        ASSERT_STR_EQ(ta[i]->name, tb[i]->name);
        ASSERT_EQ(ta[i]->nbytes, tb[i]->nbytes);
        ASSERT_MEM_EQ(ta[i]->data, tb[i]->data, ta[i]->nbytes);
    }
    /* the shards really split the tensors: the three files each hold some */
    struct priv_view {
        vl3__st *st;
    } *pv = b->priv;
    int per_file[3] = {0};
    for (size_t i = 0; i < pv->st->n_tensors; i++)
        per_file[pv->st->tensors[i].file]++;
    ASSERT(per_file[0] > 0 && per_file[1] > 0 && per_file[2] > 0);
    vl3_model_free(a);
    vl3_model_free(b);
    return 0;
}

static double bf16_value(const void *data, size_t i)
{
    uint16_t h;
    memcpy(&h, (const char *)data + 2 * i, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Compare the loader's mapped tensors with an independent Python reading of the files. */
static int python_compare(const char *dir)
{
    if (access("/usr/bin/python3", X_OK) != 0 ||
        test_sh(NULL, 0, "/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
        SKIP("/usr/bin/python3 with numpy is not available");
    char out_path[PATH_MAX + 64];
    snprintf(out_path, sizeof(out_path), "%s.py.json", dir);
    ASSERT_EQ(test_sh(NULL, 0, "/usr/bin/python3 %s/tests/engine/test_loader_st.py %s > %s",
                      test_source_dir(), dir, out_path),
              0);
    json_error_t je;
    json_t *root = json_load_file(out_path, 0, &je);
    ASSERT(root);
    json_t *tensors = json_object_get(root, "tensors");
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    vl3_model_info info;
    vl3_model_get_info(m, &info);
    ASSERT_EQ(json_integer_value(json_object_get(root, "n_tensors")), info.n_tensors);
    const vl3__tensor *all[256];
    size_t n = all_tensors(m, all, 256);
    for (size_t i = 0; i < n; i++) {
        const vl3__tensor *t = all[i];
        json_t *py = json_object_get(tensors, t->name);
        if (!py)
            TEST__FAIL("tensor \"%s\" missing from the Python reading", t->name);
        ASSERT_STR_EQ(json_string_value(json_object_get(py, "dtype")), "BF16");
        json_t *shape = json_object_get(py, "shape");
        ASSERT_EQ(json_array_size(shape), t->ndim);
        for (int d = 0; d < t->ndim; d++)
            ASSERT_EQ(json_integer_value(json_array_get(shape, (size_t)d)), t->shape[d]);
        size_t count = t->nbytes / 2;
        double sum = 0, sumsq = 0;
        for (size_t k = 0; k < count; k++) {
            double v = bf16_value(t->data, k);
            sum += v;
            sumsq += v * v;
        }
        /* the same bf16 values summed in float64 in another order: ~1e-15 relative */
        ASSERT_NEAR(sum, json_real_value(json_object_get(py, "sum")), 1e-9 * (1 + sumsq));
        ASSERT_NEAR(sumsq, json_real_value(json_object_get(py, "sumsq")), 1e-9 * (1 + sumsq));
        json_t *first = json_object_get(py, "first");
        for (size_t k = 0; k < json_array_size(first); k++)
            ASSERT_NEAR(bf16_value(t->data, k), json_real_value(json_array_get(first, k)), 0);
    }
    vl3_model_free(m);
    json_decref(root);
    return 0;
}

TEST(python_reference_remote)
{
    char dir[PATH_MAX];
    ASSERT(tiny("py_remote", VL3__LAYOUT_REMOTE, 11, 1, NULL, dir, sizeof(dir)));
    return python_compare(dir);
}

TEST(python_reference_native_sharded)
{
    char dir[PATH_MAX];
    ASSERT(tiny("py_native", VL3__LAYOUT_NATIVE, 12, 2, NULL, dir, sizeof(dir)));
    return python_compare(dir);
}

static const char *bin_dir(void)
{
    const char *e = getenv("VL3_BIN_DIR");
    static char buf[PATH_MAX];
    if (e && *e)
        return e;
    snprintf(buf, sizeof(buf), "%s/bin", test_build_dir());
    return buf;
}

/* Same seed: byte-identical directories (written by the CLI); another seed: other weights,
 * same configs and tokenizer. */
TEST(deterministic_per_seed)
{
    const char *t = test_tmpdir();
    const char *b = bin_dir();
    for (int i = 0; i < 2; i++) {
        const char *layout = i ? "native" : "remote";
        ASSERT_EQ(test_sh(NULL, 0, "%s/vl3 model tiny --out %s/det_a_%s --seed 42 --layout %s", b, t, layout, layout), 0);
        ASSERT_EQ(test_sh(NULL, 0, "%s/vl3 model tiny --out %s/det_b_%s --seed 42 --layout %s", b, t, layout, layout), 0);
        ASSERT_EQ(test_sh(NULL, 0, "%s/vl3 model tiny --out %s/det_c_%s --seed 43 --layout %s", b, t, layout, layout), 0);
        ASSERT_EQ(test_sh(NULL, 0, "diff -r %s/det_a_%s %s/det_b_%s", t, layout, t, layout), 0);
        ASSERT_EQ(test_sh(NULL, 0, "cmp -s %s/det_a_%s/model.safetensors %s/det_c_%s/model.safetensors", t, layout, t, layout), 1);
        ASSERT_EQ(test_sh(NULL, 0, "cmp -s %s/det_a_%s/config.json %s/det_c_%s/config.json", t, layout, t, layout), 0);
        ASSERT_EQ(test_sh(NULL, 0, "cmp -s %s/det_a_%s/merges.txt %s/det_c_%s/merges.txt", t, layout, t, layout), 0);
    }
    return 0;
}

TEST(cli_info)
{
    const char *t = test_tmpdir();
    char out[8192];
    ASSERT_EQ(test_sh(NULL, 0, "%s/vl3 model tiny --out %s/cli --layout native --shards 2", bin_dir(), t), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 model info %s/cli", bin_dir(), t), 0);
    ASSERT_STR_CONTAINS(out, "native (video_llama_3)");
    ASSERT_STR_CONTAINS(out, "67 in 2 files, dtype bf16");
    ASSERT_STR_CONTAINS(out, "lm_head:       separate");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 model info %s/nonexistent 2>&1", bin_dir(), t), 1);
    ASSERT_STR_CONTAINS(out, "config.json");
    ASSERT_EQ(test_sh(NULL, 0, "%s/vl3 model tiny --out %s/x --layout sideways 2>/dev/null", bin_dir(), t), 2);
    return 0;
}

/* --tokenizer with the real Qwen2.5 tokenizer: ids as in the DAMO checkpoints. */
TEST(qwen_tokenizer_copy)
{
    const char *shared = test_shared_dir();
    if (!shared)
        SKIP("../shared is not available");
    char src[PATH_MAX], dir[PATH_MAX];
    snprintf(src, sizeof(src), "%s/data/qwen2.5-tokenizer", shared);
    if (access(src, R_OK) != 0)
        SKIP("%s is not available", src);
    for (int native = 0; native < 2; native++) {
        ASSERT(tiny(native ? "qwen_native" : "qwen_remote",
                    native ? VL3__LAYOUT_NATIVE : VL3__LAYOUT_REMOTE, 3, 1, src, dir, sizeof(dir)));
        vl3_model *m = NULL;
        vl3_error e = {0};
        ASSERT_OK_E(load(dir, 1, &m, &e), &e);
        vl3_model_info i;
        vl3_model_get_info(m, &i);
        ASSERT_EQ(i.vocab_rows, 151936);
        ASSERT_EQ(i.id_endoftext, 151643);
        ASSERT_EQ(i.id_im_start, 151644);
        ASSERT_EQ(i.id_im_end, 151645);
        ASSERT_EQ(i.id_image_pad, 151655);
        ASSERT_EQ(i.id_video_pad, 151656);
        ASSERT_EQ(i.id_image, native ? -1 : 151665);
        ASSERT_EQ(i.image_token_id, native ? 151655 : 151665);
        vl3_model_free(m);
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/added_tokens.json", dir);
        json_error_t je;
        json_t *added = json_load_file(path, 0, &je);
        ASSERT(added);
        ASSERT_EQ(json_integer_value(json_object_get(added, "<|stream_end|>")), native ? 0 : 151667);
        ASSERT_EQ(json_integer_value(json_object_get(added, "<|stream_start|>")), native ? 0 : 151666);
        json_decref(added);
        snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
        json_t *cfg = json_load_file(path, 0, &je);
        ASSERT(cfg);
        json_t *ent = json_object_get(json_object_get(cfg, "added_tokens_decoder"), "151665");
        if (native) {
            ASSERT(ent == NULL);
        } else {
            ASSERT_STR_EQ(json_string_value(json_object_get(ent, "content")), "<image>");
            ASSERT(json_is_true(json_object_get(ent, "special")));
        }
        json_decref(cfg);
        /* the vocabulary is copied byte for byte */
        ASSERT_EQ(test_sh(NULL, 0, "cmp -s %s/vocab.json %s/vocab.json && cmp -s %s/merges.txt %s/merges.txt", src, dir, src, dir), 0);
    }
    return 0;
}

/* generation_config.json absent: transformers' defaults from config.json (greedy, its eos only);
 * preprocessor files absent: 1.4. */
TEST(config_defaults_when_absent)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    ASSERT(tiny("defaults", VL3__LAYOUT_REMOTE, 1, 1, NULL, dir, sizeof(dir)));
    const char *files[] = {"generation_config.json", "preprocessor_config.json", "processor_config.json"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        ASSERT_EQ(unlink(path), 0);
    }
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    /* transformers without the file: GenerationConfig.from_model_config(config) */
    ASSERT_EQ(m->gen.present, 0);
    ASSERT_EQ(m->gen.do_sample, 0);
    ASSERT_NEAR(m->gen.temperature, 1.0, 1e-6);
    ASSERT_NEAR(m->gen.top_p, 1.0, 1e-6);
    ASSERT_EQ(m->gen.top_k, 50);
    ASSERT_NEAR(m->gen.repetition_penalty, 1.0, 1e-6);
    ASSERT_EQ(m->gen.n_eos, 1);
    ASSERT_EQ(m->gen.eos_ids[0], m->cfg.eos_id);
    ASSERT_GE(m->cfg.eos_id, 0);
    ASSERT_EQ(m->gen.pad_id, m->cfg.eos_id);
    ASSERT_EQ(m->pre.present, 0);
    ASSERT_EQ(m->pre.patch_size, 14);
    ASSERT_EQ(m->pre.image_merge, 1);
    ASSERT_EQ(m->pre.video_merge, 2);
    ASSERT_EQ(m->pre.min_tokens, 16);
    ASSERT_EQ(m->pre.max_tokens, 16384);
    ASSERT_EQ(m->pre.fps, 1);
    ASSERT_EQ(m->pre.max_frames, 128);
    vl3_model_free(m);
    return 0;
}

/* Without tokenizer files the special ids come from config.json. */
TEST(special_ids_from_config)
{
    char dir[PATH_MAX];
    ASSERT(tiny("cfgids", VL3__LAYOUT_NATIVE, 1, 1, NULL, dir, sizeof(dir)));
    ASSERT_EQ(test_sh(NULL, 0, "cd %s && rm added_tokens.json tokenizer_config.json", dir), 0);
    vl3_model *m = NULL;
    vl3_error e = {0};
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.load_tokenizer = 0;
    p.no_backend = 1;
    ASSERT_OK_E(vl3_model_load(&p, &m, &e), &e);
    ASSERT(vl3_model_tokenizer(m) == NULL);
    ASSERT_EQ(m->ids.endoftext, m->cfg.bos_id);
    ASSERT_EQ(m->ids.im_end, m->cfg.eos_id);
    ASSERT_EQ(m->ids.image_pad, m->cfg.image_token_id);
    ASSERT_EQ(m->ids.video_pad, m->cfg.video_token_id);
    ASSERT_EQ(m->ids.im_start, -1);
    ASSERT(m->cfg.bos_id > 0 && m->cfg.image_token_id != m->cfg.video_token_id);
    vl3_model_free(m);
    return 0;
}

/* The CUDA backend is refused cleanly until it can run models. */
TEST(backend_choice)
{
    char dir[PATH_MAX];
    ASSERT(tiny("backend", VL3__LAYOUT_REMOTE, 1, 1, NULL, dir, sizeof(dir)));
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.backend = VL3_BACKEND_CUDA;
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_EQ(vl3_model_load(&p, &m, &e), VL3_E_UNSUPPORTED);
    ASSERT(m == NULL);
    p.backend = VL3_BACKEND_CPU;
    p.n_threads = 1;
    ASSERT_OK_E(vl3_model_load(&p, &m, &e), &e);
    ASSERT(m->ops && m->backend_ctx);
    vl3_model_free(m);
    p.no_backend = 1;
    ASSERT_OK_E(vl3_model_load(&p, &m, &e), &e);
    ASSERT(m->ops == NULL);
    vl3_model_free(m);
    return 0;
}

/* Real 2B / 7B shapes (sparse files, headers only): the loader binds every tensor and its
 * parameter count equals both the Python count and the hand-computed total of spec section 12. */
static int real_size(const char *which, int64_t spec_params, int tied, int files)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        SKIP("/usr/bin/python3 is not available");
    char dir[PATH_MAX], out[256];
    snprintf(dir, sizeof(dir), "%s/real_%s", test_tmpdir(), which);
    ASSERT_EQ(test_sh(out, sizeof(out), "/usr/bin/python3 %s/tests/engine/test_loader_realsize.py %s %s",
                      test_source_dir(), dir, which),
              0);
    int64_t py = strtoll(out, NULL, 10);
    ASSERT_EQ(py, spec_params);
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.load_tokenizer = 0;
    p.no_backend = 1;
    vl3_model *m = NULL;
    vl3_error e = {0};
    double t0 = vl3_time_s();
    ASSERT_OK_E(vl3_model_load(&p, &m, &e), &e);
    double t1 = vl3_time_s();
    vl3_model_info i;
    vl3_model_get_info(m, &i);
    fprintf(stderr, "%s: %d tensors, %" PRId64 " params, loaded (headers, bind, checks) in %.1f ms\n",
            which, i.n_tensors, i.n_params, (t1 - t0) * 1e3);
    ASSERT_EQ(i.n_params, spec_params);
    ASSERT_EQ(i.n_bytes, 2 * spec_params);
    ASSERT_EQ(i.tied_lm_head, tied);
    ASSERT_EQ(i.n_files, files);
    ASSERT_EQ(i.llm_head_dim, 128);
    ASSERT_EQ(i.vision_hidden / i.vision_heads, 72);
    ASSERT_EQ(i.id_endoftext, 151643);
    ASSERT_EQ(i.id_im_end, 151645);
    ASSERT_EQ(i.id_image, 151665);
    ASSERT_EQ(i.image_token_id, 151665);
    vl3_model_free(m);
    return 0;
}

TEST(real_2b_shapes)
{
    return real_size("2b", 1959993584LL, 1, 1);
}

TEST(real_7b_shapes_sharded)
{
    return real_size("7b", 8044744944LL, 0, 4);
}

/* Rewriting a directory replaces the weights of the earlier run (no stale index or shards). */
TEST(tiny_overwrite)
{
    char dir[PATH_MAX];
    ASSERT(tiny("overwrite", VL3__LAYOUT_REMOTE, 1, 3, NULL, dir, sizeof(dir)));
    ASSERT(tiny("overwrite", VL3__LAYOUT_REMOTE, 2, 1, NULL, dir, sizeof(dir)));
    ASSERT_EQ(test_sh(NULL, 0, "ls %s | grep -q -e index.json -e -of-", dir), 1);
    vl3_model *m = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(load(dir, 1, &m, &e), &e);
    vl3_model_info i;
    vl3_model_get_info(m, &i);
    ASSERT_EQ(i.n_files, 1);
    vl3_model_free(m);
    return 0;
}
