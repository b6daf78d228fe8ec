/* cuda_loader.c: finds and loads the CUDA backend module (libvl3cuda.so) at run time.
 *
 * The module links cudart/cuBLASLt; the engine does not, so vl3 and vl3-worker start on machines
 * without CUDA libraries and fall back to the CPU. Search order: $VL3_CUDA_MODULE, the directory
 * of the running executable, the install libdir (VL3_MODULE_DIR), then the loader's path. The
 * first module file found is the one loaded: when it fails to load (a missing CUDA library, an
 * undefined symbol), that is the reason reported. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

#ifndef VL3_MODULE_DIR
#define VL3_MODULE_DIR "/usr/local/lib/vl3"
#endif

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static const vl3__backend_ops *cuda_ops;
static char cuda_why[VL3_ERROR_MSG_MAX] = "not loaded";

static void *try_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(cuda_why, sizeof(cuda_why), "could not load \"%s\": %s", path, e ? e : "?");
    }
    return h;
}

static void cuda_load_once(void)
{
    void *h = NULL;
    char path[PATH_MAX];
    const char *env = getenv("VL3_CUDA_MODULE");
    if (env && *env) {
        h = try_open(env);
    } else {
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
        if (n > 0) {
            path[n] = '\0';
            char *slash = strrchr(path, '/');
            if (slash && (size_t)(slash - path) + sizeof("/" VL3__CUDA_MODULE) < sizeof(path)) {
                strcpy(slash, "/" VL3__CUDA_MODULE);
                if (access(path, F_OK) == 0 && !(h = try_open(path)))
                    return; /* the module is there but does not load: say why, not "not found" */
            }
        }
        if (!h) {
            snprintf(path, sizeof(path), "%s/%s", VL3_MODULE_DIR, VL3__CUDA_MODULE);
            if (access(path, F_OK) == 0 && !(h = try_open(path)))
                return;
        }
        if (!h)
            h = try_open(VL3__CUDA_MODULE);
    }
    if (!h)
        return;
    vl3__backend_entry_fn entry = (vl3__backend_entry_fn)dlsym(h, VL3__CUDA_ENTRY);
    if (!entry) {
        snprintf(cuda_why, sizeof(cuda_why), "CUDA module has no entry point \"%s\"",
                 VL3__CUDA_ENTRY);
        return;
    }
    const vl3__backend_ops *ops = entry();
    if (!ops || ops->abi != VL3__BACKEND_ABI) {
        snprintf(cuda_why, sizeof(cuda_why), "CUDA module ABI %d, engine expects %d",
                 ops ? ops->abi : -1, VL3__BACKEND_ABI);
        return;
    }
    cuda_ops = ops; /* the handle stays open for the life of the process */
}

const vl3__backend_ops *vl3__backend_cuda_load(vl3_error *reterr)
{
    pthread_once(&cuda_once, cuda_load_once);
    if (!cuda_ops)
        vl3_error_set(reterr, VL3_E_UNSUPPORTED, "%s", cuda_why);
    return cuda_ops;
}
