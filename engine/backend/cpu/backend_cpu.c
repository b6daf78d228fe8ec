/* backend_cpu.c: the plain-C CPU backend (the reference every other backend is checked against).
 * f32 compute; matrix products through OpenBLAS. Ops are added per family in this directory. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>

#include "vl3/util.h"

struct cpu_ctx {
    int n_threads;
};

static int cpu_init(int device, int n_threads, void **ret_ctx, vl3_error *reterr)
{
    struct cpu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vl3_error_set(reterr, -12 /* ENOMEM */, "out of memory");
    c->n_threads = n_threads > 0 ? n_threads : vl3_cpu_count();
    *ret_ctx = c;
    return 0;
}

static void cpu_free(void *ctx)
{
    free(ctx);
}

static int cpu_device_count(void)
{
    return 1;
}

static int cpu_device_name(int device, char *buf, size_t len)
{
    snprintf(buf, len, "cpu (%d threads)", vl3_cpu_count());
    return 0;
}

const vl3__backend_ops vl3__backend_cpu_ops = {
    .name = "cpu",
    .abi = VL3__BACKEND_ABI,
    .init = cpu_init,
    .free = cpu_free,
    .device_count = cpu_device_count,
    .device_name = cpu_device_name,
};
