/* engine.c: engine-wide entry points: version, backend selection helpers. */
#include <errno.h>
#include <string.h>

#include "backend.h"
#include "vl3/engine.h"

static const char *const backend_names[VL3_BACKEND_KIND_COUNT] = {"auto", "cpu", "cuda",
                                                                  "cuda-emu"};

const char *vl3_backend_kind_name(enum vl3_backend_kind kind)
{
    return (unsigned)kind < VL3_BACKEND_KIND_COUNT ? backend_names[kind] : "?";
}

int vl3_backend_kind_parse(const char *name)
{
    for (int i = 0; i < VL3_BACKEND_KIND_COUNT; i++)
        if (strcmp(name, backend_names[i]) == 0)
            return i;
    return -EINVAL;
}

int vl3_cuda_available(vl3_error *why)
{
    const vl3__backend_ops *ops = vl3__backend_cuda_load(why);
    if (!ops)
        return 0;
    if (ops->device_count() <= 0) {
        vl3_error_set(why, VL3_E_UNSUPPORTED, "CUDA module loaded but no CUDA device is usable");
        return 0;
    }
    return 1;
}

const char *vl3_engine_version(void)
{
    return VL3_VERSION;
}
