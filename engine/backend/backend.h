/* backend.h: the internal backend vtable (STYLE B2). Included only inside engine/.
 *
 * A backend is a static const vl3__backend_ops plus a void *context. The model's forward pass is
 * written once against these ops (engine/src/llm.c, vision.c); the CPU backend is the reference
 * every other backend is tested against. The CUDA backend lives in its own shared library
 * (libvl3cuda.so) loaded with dlopen, so binaries start on machines without CUDA libraries. */
#ifndef VL3_BACKEND_H
#define VL3_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

/* ABI version of the vtable; the CUDA module exports the same number or is refused.
 * 2: paged KV cache (kv_store, attention over block tables), activation dtype, scatter_rows.
 * 3: vision ops wants_bf16_weights / linear_bf16 (bf16 matrices used in place).
 * 4: sample (top-k / top-p / temperature / repetition-penalty sampling on the device).
 * 5: vision ops on device memory (device_memory): the encoder lives in backend memory.
 * 6: the KV cache's own dtype (kv_dtype; kv_store and the attention arguments carry it): bf16
 *    pools on the CPU in bf16 mode. */
#define VL3__BACKEND_ABI 6

typedef struct vl3__backend_ops vl3__backend_ops;

/* Ops a backend may or may not implement (supports(op, dtype) answers per op and dtype). */
enum vl3__op {
    /* LLM (Engine I) */
    VL3__OP_MATMUL,
    VL3__OP_RMSNORM,
    VL3__OP_ROPE,
    VL3__OP_ATTENTION,
    VL3__OP_SILU_MUL,
    VL3__OP_ADD,
    VL3__OP_EMBED,
    VL3__OP_ARGMAX,
    VL3__OP_COPY_ROWS,
    VL3__OP_KV_STORE,
    VL3__OP_SCATTER_ROWS,
    VL3__OP_SAMPLE, /* dtype F32 (the logits) */
    /* vision (Engine II): the slots of struct vl3__vision_ops */
    VL3__OP_VISION_LINEAR,
    VL3__OP_VISION_LAYERNORM,
    VL3__OP_VISION_ROPE2D,
    VL3__OP_VISION_ATTENTION_BLOCKS,
    VL3__OP_VISION_GELU_TANH,
    VL3__OP_VISION_GELU_ERF,
    VL3__OP_VISION_ADD,
    VL3__OP_VISION_DOWNSAMPLE,

    VL3__OP_COUNT
};

/* ---- the paged KV cache ---------------------------------------------------------------------
 * Every context owns one pool of n_pages pages per layer for K and one for V. A page holds
 * page_size consecutive token rows of Hkv*D values in the backend's KV dtype (kv_dtype):
 * pool (L, n_pages, page_size, Hkv*D). A sequence's block table lists, for its token block i
 * (tokens [i*page_size, (i+1)*page_size)), the page that holds it, so sequences of different
 * lengths share one pool, and sequences forked from a common prefix share the prefix's pages
 * (engine/src/ctx.c keeps the reference counts; pages are never written once shared). A token
 * at position p of a sequence lives in slot pages[p / page_size] * page_size + p % page_size. */

/* One sequence's share of an attention call: its queries are rows [q_row, q_row + n_q) of q and
 * out; query i sits at position n_past + i and attends causally to the sequence's cache rows
 * 0..n_past + i (the new tokens' rows already stored with kv_store). */
struct vl3__attn_seq {
    int q_row;
    int n_q;
    int n_past;
    const int32_t *pages; /* block table, host memory: >= ceil((n_past + n_q) / page_size) */
};

/* Arguments of one attention call (one layer, several sequences, prefill chunks and decode
 * tokens mixed). Host struct; q, out, k_pages, v_pages, tables_dev are device pointers.
 * GQA: query head h reads kv head h / (n_heads / n_kv_heads). */
struct vl3__attn_args {
    void *out;            /* (T, H*D) activation dtype, row stride out_stride elements */
    const void *q;        /* (T, H*D) activation dtype, row stride q_stride (already rotated) */
    int q_stride, out_stride;
    int n_heads, n_kv_heads, head_dim;
    float scale;          /* 1/sqrt(D) */
    const void *k_pages;  /* this layer's K pool (n_pages, page_size, Hkv*D) */
    const void *v_pages;  /* this layer's V pool */
    int page_size;
    int kv_dtype;         /* the pools' dtype (enum vl3__dtype), as kv_dtype() said at allocation */
    const struct vl3__attn_seq *seqs; /* [n_seqs], host memory */
    int n_seqs;
    /* the same descriptors in device memory for backends whose kernels read them there:
     * (n_seqs, 4) int32 rows {q_row, n_q, n_past, 0} and (n_seqs, max_pages) block tables */
    const void *seqs_dev, *tables_dev;
    int max_pages;
    void *work;           /* scratch from the caller's arena, attention_work_size() bytes */
    size_t work_bytes;
};

/* Sampling parameters of one logits row (the sample op). transformers' order (spec §8, the
 * arithmetic of engine/src/sampler.c): repetition penalty over the row's distinct previous ids
 * (logit / p when positive, logit * p otherwise), logits / temperature, top-k (every logit >= the
 * k-th largest), top-p (drop the smallest candidates whose cumulative probability is <= 1 -
 * top_p, never the largest), then the inverse-CDF draw: candidates in descending order (ties by
 * ascending id), the first whose cumulative exp(logit - max) exceeds u * their sum. Greedy
 * (argmax after the penalty) is top_k 1, temperature 1, top_p 1, u 0. */
struct vl3__sample_row {
    double u;                 /* uniform in [0, 1), drawn on the host from the sequence's RNG */
    float temperature;        /* > 0 */
    float top_p;              /* (0, 1]; 1 = no cut */
    float repetition_penalty; /* > 0; 1 = none */
    int32_t top_k;            /* 0 or >= n = no cut */
    int32_t hist_off, n_hist; /* the row's distinct previous ids: hist[hist_off, + n_hist) */
};

/* The reference arithmetic of the sample op for one row x (n) f32 host memory (engine/src/
 * sampler.c; the CPU backend's op and vl3_sampler_sample use it): returns the id. hist: the
 * row's n_hist distinct ids; work (n floats) and cand (n ids) are scratch. */
int32_t vl3__sample_ref(const float *x, int n, const struct vl3__sample_row *row,
                        const int32_t *hist, float *work, int32_t *cand);

/* Whether R rows of parameters for logits rows of n are in range (histories inside hist's
 * n_hist ids): the sample ops' argument check. */
static inline int vl3__sample_rows_valid(const struct vl3__sample_row *rows, int R, int n,
                                         int n_hist)
{
    for (int r = 0; r < R; r++) {
        const struct vl3__sample_row *p = &rows[r];
        if (!(p->u >= 0.0 && p->u < 1.0) || !(p->temperature > 0.0f) ||
            !(p->top_p > 0.0f && p->top_p <= 1.0f) || !(p->repetition_penalty > 0.0f) ||
            p->top_k < 0 || p->hist_off < 0 || p->n_hist < 0 || p->n_hist > n ||
            p->hist_off > n_hist - p->n_hist)
            return 0;
    }
    return n > 0;
}

struct vl3__backend_ops {
    const char *name;
    int abi;
    /* Create the backend context (device index, threads). */
    int (*init)(int device, int n_threads, void **ret_ctx, vl3_error *reterr);
    void (*free)(void *ctx);
    /* Number of usable devices (0 = none; never an error for "no driver"). */
    int (*device_count)(void);
    /* Describe device `device` in buf (name, memory). */
    int (*device_name)(int device, char *buf, size_t len);

    /* ---- memory and weights (Engine I) ----
     * Device pointers are opaque on the host: never dereferenced, but byte offsets may be added
     * (char arithmetic) to address inside an allocation. On the CPU they are host pointers.
     * Ops are asynchronous with respect to the host where the device allows; download and
     * synchronize order them. Every op returns 0 or a negative code. */

    /* Allocate nbytes of device memory (one slab or arena; callers sub-allocate). */
    int (*alloc)(void *ctx, size_t nbytes, void **ret_ptr, vl3_error *reterr);
    /* Free what alloc returned (NULL is a no-op). */
    void (*dealloc)(void *ctx, void *ptr);
    /* Host -> device copy of n bytes. */
    int (*upload)(void *ctx, void *dst, const void *src_host, size_t n);
    /* Device -> host copy of n bytes; the data is complete on return. */
    int (*download)(void *ctx, void *dst_host, const void *src, size_t n);
    /* Wait for all queued work. */
    int (*synchronize)(void *ctx);
    /* Whether op is implemented for activations/weights of dtype. */
    int (*supports)(void *ctx, enum vl3__op op, int dtype);
    /* The dtype of LLM activations (enum vl3__dtype: F32 on the CPU, BF16 on CUDA). Vectors
     * (norm weights, biases) stay f32 on every backend. */
    int (*act_dtype)(void *ctx);
    /* The dtype of the KV cache pools a context allocates now (NULL: act_dtype). The CPU keeps
     * bf16 pools in bf16 mode (what the official bf16 model holds; half the bytes a decode step
     * reads) and f32 pools in f32 mode. */
    int (*kv_dtype)(void *ctx);
    /* The dtype the backend keeps matmul weights in (enum vl3__dtype of model.h). */
    int (*weight_dtype)(void *ctx);
    /* Bytes that n elements take in the backend's weight format. */
    size_t (*weight_bytes)(void *ctx, size_t n);
    /* Convert n host elements of dtype src_dtype (checkpoint bytes: f32, f16 or bf16) into the
     * backend's weight format at device address dst. */
    int (*weight_convert)(void *ctx, void *dst, const void *src_host, int src_dtype, size_t n);

    /* ---- LLM layer ops (Engine I) ----
     * Activations are in act_dtype, row-major, device memory. Shapes use the letters of model.h.
     * Ops are queued in order on the context's stream; only argmax and download wait. */

    /* y = x W^T (+ b) (+ y if accumulate). x (T, in) row stride in; W (out, in) in the backend's
     * weight format; b (out) f32 or NULL; y (T, out). y must not alias x. work: scratch of
     * matmul_work_size(in) bytes from the caller's arena (work_bytes checked). */
    int (*matmul)(void *ctx, void *y, const void *x, const void *w, const void *b, int T, int in,
                  int out, int accumulate, void *work, size_t work_bytes);
    /* Scratch bytes matmul needs for inputs of width up to max_in. */
    size_t (*matmul_work_size)(void *ctx, int max_in);
    /* y = w * x / sqrt(mean(x^2) + eps) per row; x, y (T, C) (may alias), w (C) f32. */
    int (*rmsnorm)(void *ctx, void *y, const void *x, const void *w, int T, int C, float eps);
    /* In-place rotate-half RoPE on n_heads heads of head_dim D in each row of x (T, stride floats
     * per row; heads contiguous from the row start): pairs (i, i + D/2), angle pos[t] * theta^(-2i/D).
     * pos: (T) int32, device. */
    int (*rope)(void *ctx, void *x, int T, int stride, int n_heads, int D, const void *pos,
                float theta);
    /* Store the k and v rows of T new tokens into the paged pools: row t of qkv (stride
     * qkv_stride elements) holds k at element k_off and v at v_off (kv_dim each); slots (T)
     * int32 device: the pool slot of each token (see the paged KV cache above); kv_dtype: the
     * pools' dtype (rows are converted from the activation dtype). */
    int (*kv_store)(void *ctx, void *k_pages, void *v_pages, const void *qkv, int qkv_stride,
                    int k_off, int v_off, int kv_dim, const void *slots, int T, int kv_dtype);
    /* Causal GQA attention over the paged cache (struct vl3__attn_args above). */
    int (*attention)(void *ctx, const struct vl3__attn_args *a);
    /* Scratch bytes attention needs for at most max_q query rows per sequence and n_ctx cache rows. */
    size_t (*attention_work_size)(void *ctx, int max_q, int n_ctx, int n_heads);
    /* dst rows idx[j] (j < n; idx (n) int32 device) = src row j, src (n, C) f32 device (the
     * visual rows staged by the caller), converted to the activation dtype: the projector rows
     * replace placeholder embeddings in one op. */
    int (*scatter_rows)(void *ctx, void *dst, const void *src, const void *idx, int n, int C);
    /* out (T, I) = silu(gu[:, :I]) * gu[:, I:], gu (T, 2I), I = n_inter (gate then up, as fused by the loader). */
    int (*silu_mul)(void *ctx, void *out, const void *gu, int T, int n_inter);
    /* Optional (NULL = not offered): out (T, I) = silu_mul of matmul(x, w_gu) (W (2I, in), gate
     * rows then up rows) in one op, with the bits of the two ops; -ENOTSUP (nothing written)
     * where the backend does not fuse this call, and the caller runs the two ops. work as for
     * matmul (matmul_work_size(in)). */
    int (*matmul_swiglu)(void *ctx, void *out, const void *x, const void *w_gu, int T, int in,
                         int n_inter, void *work, size_t work_bytes);
    /* Optional (NULL = not offered): the whole MLP into the residual, y (T, in) += silu_mul of
     * matmul(x, w_gu) times w_down^T (W_down (in, n_inter)), with the bits of matmul_swiglu (or
     * matmul and silu_mul) followed by matmul with accumulate; -ENOTSUP (nothing written) where
     * the backend does not fuse this call. Needs no work buffer from the caller. */
    int (*mlp_swiglu)(void *ctx, void *y, const void *x, const void *w_gu, const void *w_down,
                      int T, int in, int n_inter);
    /* y = a + b over n elements of the activation dtype (y may alias a or b). */
    int (*add)(void *ctx, void *y, const void *a, const void *b, size_t n);
    /* out (T, C) activations = rows ids[t] of table (V, C) in the backend's weight format;
     * ids (T) int32 device, each in [0, V) (checked by the caller). */
    int (*embed)(void *ctx, void *out, const void *table, const void *ids, int T, int C);
    /* ret_host[r] = argmax over x (R, n) f32 row r (the logits; first maximum wins); written to
     * host memory. */
    int (*argmax)(void *ctx, int32_t *ret_host, const void *x, int R, int n);
    /* Copy n_rows rows of row_bytes from src (row stride src_stride bytes) to dst (dst_stride). */
    int (*copy_rows)(void *ctx, void *dst, size_t dst_stride, const void *src, size_t src_stride,
                     int n_rows, size_t row_bytes);

    /* ---- vision layer ops (Engine II) ---- */

    /* The vision encoder's ops (see struct vl3__vision_ops below); NULL = use the CPU ops. */
    const struct vl3__vision_ops *vision;

    /* As matmul, but y is f32 whatever act_dtype is (the logits, downloaded as f32; argmax reads
     * f32 rows). NULL on backends whose act_dtype is F32 (matmul serves). */
    int (*matmul_f32)(void *ctx, void *y, const void *x, const void *w, const void *b, int T,
                      int in, int out, int accumulate, void *work, size_t work_bytes);
    /* ret_host[r] = the id drawn from x (R, n) f32 row r (the logits, device memory, not
     * modified) with rows[r] (struct vl3__sample_row; host memory, as are hist, the
     * concatenated histories of n_hist ids in all). Only the R ids come back to the host; the
     * ids equal vl3__sample_ref's except where a CDF or top-p boundary lies within rounding of
     * u * sum or 1 - top_p, or values tie at the top-k / top-p cut (then any of the tied may
     * be kept first). -EINVAL for parameters out of range. */
    int (*sample)(void *ctx, int32_t *ret_host, const void *x, int R, int n,
                  const struct vl3__sample_row *rows, const int32_t *hist, int n_hist);
};

/* ---- vision layer ops (Engine II) -----------------------------------------------------------
 * f32 row-major tensors in the backend's memory: with device_memory set, every tensor pointer
 * (weights, activations, pos_r/pos_c) is a device pointer from the backend's alloc (vision.c
 * uploads the weights once, the pixel batch once per encode, and downloads only the projector's
 * rows); without it they are host pointers (the CPU). The cu array of attention_blocks is host
 * memory in both cases (the backend keeps its own device copy). Ops are queued in order as the
 * LLM ops. Shapes use the letters of engine/src/model.h: P patches (rows), K = 588, C width,
 * H heads, D head dim, I MLP width. Weights are [out, in] (y = x W^T + b). All ops return 0 or
 * a negative code. */
struct vl3__vision_ops {
    /* y (P, out) = x (P, in) W^T (out, in) + b (out; NULL = none). Patch embedding is this op
     * with in = K (the conv kernel flattened channel, row, column). */
    int (*linear)(void *ctx, const float *x, const float *w, const float *b, float *y, int64_t P,
                  int in, int out);
    /* y = (x - mean) / sqrt(var + eps) * w + b per row of C (biased variance); y may be x. */
    int (*layernorm)(void *ctx, const float *x, const float *w, const float *b, float *y,
                     int64_t P, int C, float eps);
    /* 2D RoPE in place on x (P, H*D) (q or k): D/4 row then D/4 column frequencies
     * inv[k] = theta^(-4k/D), angle phi (D/2) = (r*inv, c*inv), rotate-half pairs (i, i + D/2). */
    int (*rope2d)(void *ctx, float *x, const int32_t *pos_r, const int32_t *pos_c, int64_t P,
                  int H, int D, float theta);
    /* Block-diagonal non-causal attention: rows [cu[b], cu[b+1]) attend only among themselves.
     * q, k, v, out are (P, H*D); softmax(q k^T / sqrt(D)) v per head. */
    int (*attention_blocks)(void *ctx, const float *q, const float *k, const float *v, float *out,
                            const int64_t *cu, int n_blocks, int H, int D);
    /* In place: tanh GELU (gelu_pytorch_tanh) / exact erf GELU (nn.GELU()). */
    int (*gelu_tanh)(void *ctx, float *x, int64_t n);
    int (*gelu_erf)(void *ctx, float *x, int64_t n);
    /* y += x (n values). */
    int (*add)(void *ctx, float *y, const float *x, int64_t n);
    /* Spatial downsample of one frame in merge-block order: x (gh*gw, C) -> y (gh/m*gw/m, C):
     * m = 1 copies, m = 2 averages each 4 consecutive rows (= bilinear halving, align_corners
     * False). */
    int (*downsample)(void *ctx, const float *x, float *y, int gh, int gw, int m, int C);
    /* Optional (NULL = absent). Whether this context wants the matrices in bf16 (the CPU's
     * bf16 mode: the checkpoint's bytes used in place, no f32 copy of the encoder; a device
     * backend: uploaded in its bf16 weight format), and the product with such a matrix:
     * y (P, out) = x W^T (+ b), W (out, in) bf16, f32 sums (CUDA rounds x to bf16 first). */
    int (*wants_bf16_weights)(void *ctx);
    int (*linear_bf16)(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                       int64_t P, int in, int out);
    /* 1: tensors are in the backend's device memory (alloc/upload/download of the backend
     * vtable); 0: host memory (the CPU ops; no backend needed). */
    int device_memory;
    /* Optional (NULL = absent): linear_bf16 with its consumer fused into the product's epilogue,
     * the same numerics as the ops run apart: flags VL3__VLIN_GELU_TANH gives y = gelu_tanh(x W^T
     * + b) (linear_bf16 then gelu_tanh), VL3__VLIN_ACC gives y += x W^T + b (linear_bf16 into a
     * scratch, then add). -ENOTSUP (nothing written) where the backend does not fuse this shape:
     * the caller then runs the ops apart. */
    int (*linear_bf16_ex)(void *ctx, const float *x, const uint16_t *w, const float *b, float *y,
                          int64_t P, int in, int out, int flags);
    /* Optional (NULL = absent): n (1..4) linear_bf16 products of the same x and shape (q, k, v):
     * y[i] = x w[i]^T + b[i] (b[i] may be NULL), the same numerics as n linear_bf16 calls, x
     * prepared once. */
    int (*linear_bf16_n)(void *ctx, const float *x, int n, const uint16_t *const *w,
                         const float *const *b, float *const *y, int64_t P, int in, int out);
    /* Optional (NULL = absent): the MLP into the residual, h (P, in) += gelu_tanh(x W1^T + b1)
     * W2^T + b2 with W1 (n_inter, in), W2 (in, n_inter) bf16: the bits of linear_bf16_ex with
     * VL3__VLIN_GELU_TANH then VL3__VLIN_ACC; -ENOTSUP (nothing written) where not fused. */
    int (*linear_bf16_mlp)(void *ctx, const float *x, const uint16_t *w1, const float *b1,
                           const uint16_t *w2, const float *b2, float *h, int64_t P, int in,
                           int n_inter);
};
#define VL3__VLIN_ACC 1
#define VL3__VLIN_GELU_TANH 2

/* The CPU implementation of the vision ops (engine/backend/cpu/ops_vision*.c). ctx may be NULL. */
extern const struct vl3__vision_ops vl3__cpu_vision_ops;

/* Entry point exported by libvl3cuda.so. */
typedef const vl3__backend_ops *(*vl3__backend_entry_fn)(void);
#define VL3__CUDA_ENTRY "vl3_cuda_backend_ops"
#define VL3__CUDA_MODULE "libvl3cuda.so"

/* The always-present CPU backend. */
extern const vl3__backend_ops vl3__backend_cpu_ops;

/* The CUDA backend's kernels on the host CUDA emulator (engine/backend/cuda/backend_cuda.c built
 * with VL3_CUDA_EMU; docs/cuda-emu.md): bf16 activations, host memory as device memory. Slow; for
 * CI and for running the GPU code path without a GPU. */
extern const vl3__backend_ops vl3__backend_cuda_emu_ops;

/* Load the CUDA module (once, thread-safe). Returns its ops or NULL with the reason in reterr. */
const vl3__backend_ops *vl3__backend_cuda_load(vl3_error *reterr);

#endif
