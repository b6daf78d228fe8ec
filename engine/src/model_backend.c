/* model_backend.c: backend setup at the end of vl3_model_load.
 *
 * Today this only picks the CPU backend and creates its context; converting and uploading the
 * weights into m->backend_weights (and the CUDA path) belongs to the LLM work, which takes this
 * file over. AUTO means CPU until then; an explicit CUDA request is refused. */
#include <errno.h>

#include "backend.h"
#include "model.h"

int vl3__model_backend_init(vl3_model *m, const vl3_model_params *p, vl3_error *reterr)
{
    const vl3__backend_ops *ops;
    switch (p->backend) {
    case VL3_BACKEND_AUTO:
    case VL3_BACKEND_CPU:
        ops = &vl3__backend_cpu_ops;
        break;
    case VL3_BACKEND_CUDA:
        return vl3_error_set(reterr, VL3_E_UNSUPPORTED,
                             "the CUDA backend cannot run models in this build yet");
    default:
        return vl3_error_set(reterr, -EINVAL, "unknown backend kind %d", (int)p->backend);
    }
    void *ctx = NULL;
    int r = ops->init(p->device, p->n_threads, &ctx, reterr);
    if (r < 0)
        return r;
    m->ops = ops;
    m->backend_ctx = ctx;
    return 0;
}

void vl3__model_backend_free(vl3_model *m)
{
    if (m->ops && m->backend_ctx)
        m->ops->free(m->backend_ctx);
    m->backend_ctx = NULL;
    m->ops = NULL;
}
