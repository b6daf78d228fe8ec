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

/* ABI version of the vtable; the CUDA module exports the same number or is refused. */
#define VL3__BACKEND_ABI 1

typedef struct vl3__backend_ops vl3__backend_ops;

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

    /* ---- memory and weights (Engine I) ---- */

    /* ---- LLM layer ops (Engine I) ---- */

    /* ---- vision layer ops (Engine II) ---- */

    /* The vision encoder's ops (see struct vl3__vision_ops below); NULL = use the CPU ops. */
    const struct vl3__vision_ops *vision;
};

/* ---- vision layer ops (Engine II) -----------------------------------------------------------
 * f32 row-major tensors in the backend's memory (host memory for the CPU backend). Shapes use
 * the letters of engine/src/model.h: P patches (rows), K = 588, C width, H heads, D head dim,
 * I MLP width. Weights are [out, in] (y = x W^T + b). All ops return 0 or a negative code. */
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
};

/* The CPU implementation of the vision ops (engine/backend/cpu/ops_vision*.c). ctx may be NULL. */
extern const struct vl3__vision_ops vl3__cpu_vision_ops;

/* Entry point exported by libvl3cuda.so. */
typedef const vl3__backend_ops *(*vl3__backend_entry_fn)(void);
#define VL3__CUDA_ENTRY "vl3_cuda_backend_ops"
#define VL3__CUDA_MODULE "libvl3cuda.so"

/* The always-present CPU backend. */
extern const vl3__backend_ops vl3__backend_cpu_ops;

/* Load the CUDA module (once, thread-safe). Returns its ops or NULL with the reason in reterr. */
const vl3__backend_ops *vl3__backend_cuda_load(vl3_error *reterr);

#endif
