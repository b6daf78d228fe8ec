/* engine.h: THE public API of libvl3engine, the VideoLLaMA3 inference engine.
 *
 * C only: no CUDA, FFmpeg or BLAS types appear here (a test compiles it with -std=c11 -pedantic).
 * Shape of the API (mtmd.h style):
 *   - vl3_model: loaded once from a checkpoint directory, immutable, shareable read-only across
 *     threads and contexts;
 *   - vl3_tokenizer: the Qwen2 byte-level BPE tokenizer (owned by a model, or loaded alone);
 *   - vl3_ctx: per-stream mutable state (KV cache and activation arena); not thread-safe;
 *   - params structs with _default() constructors.
 * Every fallible function returns 0 or a negative code (vl3/err.h) and fills a caller-owned
 * vl3_error when given one. Output parameters are named ret_* and are set only on success.
 *
 * Section owners: tokenizer/model/LLM/sampling (Engine I), vision (vl3/vision.h, Engine II). */
#ifndef VL3_ENGINE_H
#define VL3_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl3_model vl3_model;
typedef struct vl3_tokenizer vl3_tokenizer;
typedef struct vl3_ctx vl3_ctx;

enum vl3_backend_kind {
    VL3_BACKEND_AUTO, /* CUDA when the module loads and a device exists, else CPU */
    VL3_BACKEND_CPU,
    VL3_BACKEND_CUDA,
    VL3_BACKEND_CUDA_EMU, /* the CUDA kernels on the host CUDA emulator (slow; tests, no GPU) */
    VL3_BACKEND_KIND_COUNT
};

/* Name of a backend kind ("auto", "cpu", "cuda", "cuda-emu"); parse returns the kind or -EINVAL. */
const char *vl3_backend_kind_name(enum vl3_backend_kind kind);
int vl3_backend_kind_parse(const char *name);

/* Whether the CUDA backend module can be loaded and sees a device. Fills why when not. */
int vl3_cuda_available(vl3_error *why);

/* Version string of the engine. */
const char *vl3_engine_version(void);

#ifdef __cplusplus
}
#endif

/* The API by area, each in its own file (all of them are part of this one public header). */
#include "vl3/engine_tokenizer.h" /* Qwen2 BPE tokenizer */
#include "vl3/engine_model.h"     /* checkpoint loading, model info */
#include "vl3/engine_llm.h"       /* contexts, prefill/decode, sampling, generation */
#include "vl3/engine_vision.h"    /* images/frames, preprocessing, vision encoder, DiffFP, prompts */

#endif
