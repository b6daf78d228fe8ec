/* test_loader_corrupt.c: malformed checkpoints give clean errors naming the file and tensor.
 *
 * Safetensors headers are written by hand (8-byte length + JSON + zero data) for each violation
 * the reader must catch; model-level cases rewrite a tiny checkpoint with a tensor removed,
 * reshaped, retyped or added; config cases feed broken config.json text to the parser; a
 * deterministic mutation loop flips bytes of a valid file and requires either success or an
 * error with a message (never a crash; run under ASan in CI). */
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "tiny_model.h"
#include "vl3/engine.h"
#include "vl3/util.h"

static int write_raw(const char *path, const char *header, size_t data_len, uint64_t hdr_len_override)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint64_t n = hdr_len_override ? hdr_len_override : strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)((n >> (8 * i)) & 0xFF), f);
    fputs(header, f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    return fclose(f);
}

/* Write file "<tmp>/c_<tag>.safetensors", open it, expect VL3_E_FORMAT with all of the needles
 * (and the file name) in the message. */
static int expect_bad(const char *tag, const char *header, size_t data_len, uint64_t hdr_len,
                      const char *needle1, const char *needle2)
{
    char path[PATH_MAX], base[128];
    snprintf(base, sizeof(base), "c_%s.safetensors", tag);
    snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), base);
    ASSERT_EQ(write_raw(path, header, data_len, hdr_len), 0);
    vl3__st *st = NULL;
    vl3_error e = {0};
    int r = vl3__st_open_file(path, &st, &e);
    if (r != VL3_E_FORMAT)
        TEST__FAIL("%s: expected VL3_E_FORMAT, got %d (%s)", tag, r, e.msg);
    ASSERT(st == NULL);
    ASSERT_STR_CONTAINS(e.msg, base);
    if (needle1)
        ASSERT_STR_CONTAINS(e.msg, needle1);
    if (needle2)
        ASSERT_STR_CONTAINS(e.msg, needle2);
    return 0;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        if (expect_bad(__VA_ARGS__))                                                               \
            return 1;                                                                              \
    } while (0)

TEST(st_valid_minimal)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/ok.safetensors", test_tmpdir());
    ASSERT_EQ(write_raw(path,
                        "{\"__metadata__\":{\"format\":\"pt\"},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"e\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[28,28]}}",
                        28, 0),
              0);
    vl3__st *st = NULL;
    vl3_error e = {0};
    ASSERT_OK_E(vl3__st_open_file(path, &st, &e), &e);
    ASSERT_EQ(st->n_tensors, 3);
    ASSERT_STR_EQ(st->metadata_format, "pt");
    struct vl3__st_tensor *b = vl3__st_find(st, "b");
    ASSERT(b && b->dtype == VL3__DTYPE_BF16 && b->ndim == 2 && b->shape[1] == 3 && b->nbytes == 12);
    ASSERT(vl3__st_find(st, "a")->nbytes == 16);
    ASSERT(vl3__st_find(st, "zz") == NULL);
    vl3__st_free(st);
    return 0;
}

TEST(st_corrupt_headers)
{
    const char *A16 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    /* truncated data: the header promises 16 bytes, the file has 8 */
    BAD("truncated", A16, 8, 0, "tensor \"a\"", "exceed the file");
    /* header length past the end of the file */
    BAD("hdrlen", A16, 16, 100000, "header length 100000", "exceeds the file");
    /* header length beyond 2^63: no overflow in the check */
    BAD("hdrlen_huge", A16, 16, UINT64_MAX - 3, "header length", NULL);
    /* overlapping tensors */
    BAD("overlap",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
        24, 0, "overlap", "tensor \"");
    /* offsets outside the data area */
    BAD("range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 16, 0,
        "tensor \"a\"", "[16, 32)");
    /* reversed offsets */
    BAD("reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", 16, 0,
        "tensor \"a\"", "reversed");
    /* shape product x dtype size != span */
    BAD("shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16, 0,
        "tensor \"a\"", "need 12");
    /* dims whose product overflows 64 bits */
    BAD("overflow",
        "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}",
        16, 0, "tensor \"a\"", "overflow");
    /* unknown dtype */
    BAD("dtype", "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, 0,
        "tensor \"a\"", "unknown dtype \"Q4_K\"");
    /* not JSON */
    BAD("notjson", "{this is not json}", 0, 0, "invalid JSON", NULL);
    /* not an object */
    BAD("array", "[1,2,3]", 0, 0, "not a JSON object", NULL);
    /* duplicate tensor names in one header */
    BAD("dup",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}",
        32, 0, "duplicate", "a");
    /* wrong field types / arity */
    BAD("negdim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16, 0,
        "tensor \"a\"", "shape[0]");
    BAD("offs3", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8,16]}}", 16, 0,
        "tensor \"a\"", "data_offsets");
    BAD("extra_field",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"x\":1}}", 16, 0,
        "tensor \"a\"", "unknown field \"x\"");
    BAD("ndim9", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
        1, 0, "tensor \"a\"", "9 dimensions");
    BAD("meta", "{\"__metadata__\":{\"format\":3}}", 0, 0, "__metadata__", NULL);
    /* a file shorter than the 8-byte length */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/short.safetensors", test_tmpdir());
    ASSERT_OK(vl3_file_write(path, "abc", 3, NULL));
    vl3__st *st = NULL;
    vl3_error e = {0};
    ASSERT_EQ(vl3__st_open_file(path, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "short.safetensors");
    ASSERT_STR_CONTAINS(e.msg, "too short");
    /* missing file */
    snprintf(path, sizeof(path), "%s/absent.safetensors", test_tmpdir());
    ASSERT_EQ(vl3__st_open_file(path, &st, &e), -ENOENT);
    ASSERT_STR_CONTAINS(e.msg, "absent.safetensors");
    return 0;
}

static int write_index(const char *dir, const char *json)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    return vl3_file_write(path, json, strlen(json), NULL);
}

TEST(st_corrupt_index)
{
    char dir[PATH_MAX], p1[PATH_MAX + 32], p2[PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s/idx", test_tmpdir());
    ASSERT_EQ(mkdir(dir, 0755), 0);
    snprintf(p1, sizeof(p1), "%s/s1.safetensors", dir);
    snprintf(p2, sizeof(p2), "%s/s2.safetensors", dir);
    ASSERT_EQ(write_raw(p1, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0), 0);
    ASSERT_EQ(write_raw(p2, "{\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0), 0);
    vl3__st *st = NULL;
    vl3_error e = {0};
    /* valid: two shards */
    ASSERT_OK(write_index(dir, "{\"metadata\":{\"total_size\":8},\"weight_map\":"
                               "{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}"));
    ASSERT_OK_E(vl3__st_open_dir(dir, &st, &e), &e);
    ASSERT_EQ(st->n_files, 2);
    ASSERT_EQ(st->n_tensors, 2);
    vl3__st_free(st);
    st = NULL;
    /* the index names the wrong shard */
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"s2.safetensors\",\"y\":\"s2.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "tensor \"x\"");
    /* a tensor listed but absent */
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\","
                               "\"z\":\"s2.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "tensor \"z\"");
    /* a shard tensor not listed */
    ASSERT_EQ(write_raw(p1, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0), 0);
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "tensor \"w\": not listed");
    /* path traversal */
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"../s1.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "not a file name");
    /* missing shard file */
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s3.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), -ENOENT);
    ASSERT_STR_CONTAINS(e.msg, "s3.safetensors");
    /* the same tensor in two shards */
    ASSERT_EQ(write_raw(p2, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0), 0);
    ASSERT_OK(write_index(dir, "{\"weight_map\":{\"x\":\"s1.safetensors\",\"q\":\"s2.safetensors\"}}"));
    ASSERT_EQ(vl3__st_open_dir(dir, &st, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "tensor \"x\": also present");
    /* no weights at all */
    char empty[PATH_MAX];
    snprintf(empty, sizeof(empty), "%s/empty", test_tmpdir());
    ASSERT_EQ(mkdir(empty, 0755), 0);
    ASSERT_EQ(vl3__st_open_dir(empty, &st, &e), -ENOENT);
    return 0;
}

/* ---- model level ---- */

enum edit { EDIT_DROP, EDIT_RESHAPE, EDIT_RETYPE, EDIT_ADD };

/* Rewrite dir/model.safetensors with one edit applied to tensor `name`. */
static int rewrite(const char *dir, enum edit ed, const char *name)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    vl3__st *st = NULL;
    vl3_error e = {0};
    if (vl3__st_open_file(path, &st, &e) < 0)
        return -1;
    struct vl3__st_wtensor *w = calloc(st->n_tensors + 1, sizeof(*w));
    static uint8_t big[1 << 16];
    size_t n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        struct vl3__st_tensor *t = &st->tensors[i];
        int hit = strcmp(t->name, name) == 0;
        if (hit && ed == EDIT_DROP)
            continue;
        struct vl3__st_wtensor *o = &w[n++];
        o->name = t->name;
        o->dtype = t->dtype;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof(o->shape));
        o->data = t->data;
        if (hit && ed == EDIT_RESHAPE) {
            o->shape[0] *= 2; /* twice the rows */
            o->data = big;
        }
        if (hit && ed == EDIT_RETYPE) {
            o->dtype = VL3__DTYPE_I16; /* same size, not a float type */
        }
    }
    if (ed == EDIT_ADD)
        w[n++] = (struct vl3__st_wtensor){.name = name, .dtype = VL3__DTYPE_BF16, .ndim = 1, .shape = {8}, .data = big};
    int r = vl3__st_write(tmp, w, n, &e);
    free(w);
    vl3__st_free(st);
    if (r < 0 || rename(tmp, path) < 0)
        return -1;
    return 0;
}

static int load_expect(const char *dir, int strict, int code, const char *n1, const char *n2)
{
    vl3_model_params p = vl3_model_params_default();
    p.dir = dir;
    p.strict = strict;
    p.no_backend = 1;
    vl3_model *m = NULL;
    vl3_error e = {0};
    int r = vl3_model_load(&p, &m, &e);
    if (r != code)
        TEST__FAIL("expected %d, got %d (%s)", code, r, vl3_error_text(&e, r));
    if (r == 0) {
        vl3_model_free(m);
        return 0;
    }
    ASSERT(m == NULL);
    if (n1)
        ASSERT_STR_CONTAINS(e.msg, n1);
    if (n2)
        ASSERT_STR_CONTAINS(e.msg, n2);
    return 0;
}

static const char *fresh(const char *name, enum vl3__layout layout, char *buf, size_t len)
{
    struct vl3__tiny_params p;
    vl3__tiny_params_default(&p);
    p.layout = layout;
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    return vl3__tiny_write(buf, &p, NULL) < 0 ? NULL : buf;
}

TEST(model_missing_tensor)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_missing", VL3__LAYOUT_REMOTE, dir, sizeof(dir)));
    ASSERT_EQ(rewrite(dir, EDIT_DROP, "model.norm.weight"), 0);
    return load_expect(dir, 1, VL3_E_FORMAT, "\"model.norm.weight\"", "missing");
}

TEST(model_untied_needs_lm_head)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_nolmhead", VL3__LAYOUT_NATIVE, dir, sizeof(dir)));
    ASSERT_EQ(rewrite(dir, EDIT_DROP, "lm_head.weight"), 0);
    return load_expect(dir, 1, VL3_E_FORMAT, "\"lm_head.weight\"", "missing");
}

TEST(model_wrong_shape)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_shape", VL3__LAYOUT_REMOTE, dir, sizeof(dir)));
    ASSERT_EQ(rewrite(dir, EDIT_RESHAPE, "model.layers.1.self_attn.k_proj.weight"), 0);
    return load_expect(dir, 1, VL3_E_SHAPE, "tensor \"model.layers.1.self_attn.k_proj.weight\"",
                       "shape [64, 64], expected [32, 64]");
}

TEST(model_wrong_dtype)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_dtype", VL3__LAYOUT_NATIVE, dir, sizeof(dir)));
    ASSERT_EQ(rewrite(dir, EDIT_RETYPE, "model.vision_model.post_layernorm.bias"), 0);
    return load_expect(dir, 1, VL3_E_FORMAT, "tensor \"model.vision_model.post_layernorm.bias\"",
                       "dtype I16");
}

TEST(model_unexpected_tensor)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_extra", VL3__LAYOUT_REMOTE, dir, sizeof(dir)));
    ASSERT_EQ(rewrite(dir, EDIT_ADD, "model.vision_encoder.rotary.inv_freq"), 0);
    if (load_expect(dir, 1, VL3_E_FORMAT, "\"model.vision_encoder.rotary.inv_freq\"", "not used"))
        return 1;
    return load_expect(dir, 0, 0, NULL, NULL);
}

/* A remote checkpoint loaded with a native-layout config: every name is missing. */
TEST(model_layout_mismatch)
{
    char dir[PATH_MAX], other[PATH_MAX];
    ASSERT(fresh("m_layout", VL3__LAYOUT_REMOTE, dir, sizeof(dir)));
    ASSERT(fresh("m_layout_n", VL3__LAYOUT_NATIVE, other, sizeof(other)));
    ASSERT_EQ(test_sh(NULL, 0, "cp %s/model.safetensors %s/model.safetensors", other, dir), 0);
    return load_expect(dir, 1, VL3_E_FORMAT, "tensors the remote layout needs are missing",
                       "model.vision_encoder.");
}

/* ---- config.json ---- */

static int cfg_expect(const char *json, int code, const char *needle)
{
    struct vl3__config c;
    vl3_error e = {0};
    int r = vl3__config_parse("config.json", json, strlen(json), &c, &e);
    if (r != code)
        TEST__FAIL("expected %d, got %d (%s) for %s", code, r, e.msg, json);
    if (needle)
        ASSERT_STR_CONTAINS(e.msg, needle);
    return 0;
}

#define VIS "\"vision_encoder_config\":{\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":8,\"patch_size\":14}"
#define LLM "\"hidden_size\":64,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":8,\"vocab_size\":100"

TEST(config_errors)
{
    struct vl3__config c;
    const char *ok = "{\"model_type\":\"videollama3_qwen2\"," LLM ",\"image_token_index\":99," VIS "}";
    ASSERT_OK(vl3__config_parse("config.json", ok, strlen(ok), &c, NULL));
    ASSERT_EQ(c.layout, VL3__LAYOUT_REMOTE);
    ASSERT_EQ(c.llm.head_dim, 16);
    ASSERT_EQ(c.llm.tie_embeddings, 0);
    ASSERT_EQ(c.use_token_compression, 1);
    ASSERT_NEAR(c.llm.rope_theta, 10000.0, 0); /* Qwen2 class default when absent */
    if (cfg_expect("{\"model_type\":\"videollama3_qwen2\",\"num_hidden_layers\":1," VIS "}",
                   VL3_E_FORMAT, "field \"hidden_size\" is missing") ||
        cfg_expect("{\"model_type\":\"llava\"}", VL3_E_UNSUPPORTED, "\"llava\"") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM ",\"rope_scaling\":{\"type\":\"yarn\"}," VIS "}",
                   VL3_E_UNSUPPORTED, "rope_scaling") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM ",\"use_sliding_window\":true," VIS "}",
                   VL3_E_UNSUPPORTED, "use_sliding_window") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM ",\"mm_projector_type\":\"linear\"," VIS "}",
                   VL3_E_UNSUPPORTED, "mm_projector_type") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\",\"hidden_size\":64,\"num_hidden_layers\":1,"
                   "\"num_attention_heads\":4,\"num_key_value_heads\":3,\"intermediate_size\":8,\"vocab_size\":100," VIS "}",
                   VL3_E_CONFIG, "num_key_value_heads 3") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\",\"hidden_size\":-64,\"num_hidden_layers\":1," VIS "}",
                   VL3_E_CONFIG, "\"hidden_size\" is -64") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\",\"hidden_size\":\"64\"}", VL3_E_FORMAT,
                   "must be an integer") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM ",\"vision_encoder_config\":{\"hidden_size\":36,"
                   "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":8,\"patch_size\":14}}",
                   VL3_E_CONFIG, "multiple of 4") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM ",\"image_token_index\":100," VIS "}",
                   VL3_E_CONFIG, "outside the 100 embedding rows") ||
        cfg_expect("{\"model_type\":\"videollama3_qwen2\"," LLM "}", VL3_E_FORMAT,
                   "vision_encoder_config") ||
        cfg_expect("{\"model_type\":\"video_llama_3\",\"text_config\":{" LLM "}}", VL3_E_FORMAT,
                   "vision_config") ||
        cfg_expect("{nope", VL3_E_FORMAT, "\"config.json\": invalid JSON"))
        return 1;
    /* native: tie flag forwarded from text_config, placeholder defaults */
    const char *nat = "{\"model_type\":\"video_llama_3\",\"text_config\":{\"model_type\":\"qwen2\"," LLM
                      ",\"tie_word_embeddings\":true,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000.0}},"
                      "\"vision_config\":{\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                      "\"intermediate_size\":8,\"patch_size\":14}}";
    /* default placeholder ids 151655/151656 exceed this 100-row vocab */
    if (cfg_expect(nat, VL3_E_CONFIG, "embedding rows"))
        return 1;
    const char *nat2 = "{\"model_type\":\"video_llama_3\",\"image_token_id\":5,\"video_token_id\":6,"
                       "\"text_config\":{\"model_type\":\"qwen2\"," LLM
                       ",\"tie_word_embeddings\":true,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000.0}},"
                       "\"vision_config\":{\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                       "\"intermediate_size\":8,\"patch_size\":14}}";
    ASSERT_OK(vl3__config_parse("config.json", nat2, strlen(nat2), &c, NULL));
    ASSERT_EQ(c.layout, VL3__LAYOUT_NATIVE);
    ASSERT_EQ(c.llm.tie_embeddings, 1);
    ASSERT_NEAR(c.llm.rope_theta, 1e6, 0);
    ASSERT_EQ(c.image_token_id, 5);
    ASSERT_EQ(c.video_token_id, 6);
    return 0;
}

/* The config ids must agree with the tokenizer files. */
TEST(model_placeholder_mismatch)
{
    char dir[PATH_MAX];
    ASSERT(fresh("m_ph", VL3__LAYOUT_REMOTE, dir, sizeof(dir)));
    ASSERT_EQ(test_sh(NULL, 0, "sed -i 's/\"image_token_index\": [0-9]*/\"image_token_index\": 3/' %s/config.json", dir), 0);
    return load_expect(dir, 1, VL3_E_CONFIG, "image token 3", "\"<image>\"");
}

/* Deterministic byte mutations of a valid file: success or a clean error, never a crash. */
TEST(st_mutations)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/mut_src", test_tmpdir());
    ASSERT(fresh("mut_src", VL3__LAYOUT_REMOTE, path, sizeof(path)));
    char file[PATH_MAX + 32];
    snprintf(file, sizeof(file), "%s/model.safetensors", path);
    char *buf;
    size_t len;
    ASSERT_OK(vl3_file_read(file, 1u << 24, &buf, &len, NULL));
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (uint8_t)buf[i];
    size_t span = (size_t)hl + 8;
    uint8_t *copy = malloc(len);
    uint64_t s = 12345;
    int n_ok = 0, n_err = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(copy, buf, len);
        int k = 1 + (int)(s % 4);
        for (int j = 0; j < k; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % span;
            copy[pos] = (uint8_t)(s >> 13);
        }
        size_t l = it % 7 == 0 ? (size_t)(s >> 40) % len : len; /* sometimes truncated too */
        vl3__st *st = NULL;
        vl3_error e = {0};
        int r = vl3__st_open_buf("mut.safetensors", copy, l, &st, &e);
        if (r == 0) {
            n_ok++;
            /* whatever was accepted lies inside the buffer */
            for (size_t i = 0; i < st->n_tensors; i++) {
                const uint8_t *d = st->tensors[i].data;
                ASSERT(d >= copy && d + st->tensors[i].nbytes <= copy + l);
            }
            vl3__st_free(st);
        } else {
            n_err++;
            ASSERT(e.msg[0] != 0);
            ASSERT(st == NULL);
        }
    }
    free(copy);
    free(buf);
    ASSERT_GT(n_err, 100);
    return 0;
}
