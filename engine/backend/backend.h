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

};

/* Entry point exported by libvl3cuda.so. */
typedef const vl3__backend_ops *(*vl3__backend_entry_fn)(void);
#define VL3__CUDA_ENTRY "vl3_cuda_backend_ops"
#define VL3__CUDA_MODULE "libvl3cuda.so"

/* The always-present CPU backend. */
extern const vl3__backend_ops vl3__backend_cpu_ops;

/* Load the CUDA module (once, thread-safe). Returns its ops or NULL with the reason in reterr. */
const vl3__backend_ops *vl3__backend_cuda_load(vl3_error *reterr);

#endif
