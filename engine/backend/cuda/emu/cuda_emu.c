/* cuda_emu.c: the runtime of the host CUDA emulator (cuda_emu.h): kernel launches as ucontext
 * fibers, one block at a time, with barriers and warp primitives as scheduling points, deadlock
 * detection, and the runtime API subset over host memory. Single-threaded per launch; the
 * current launch lives in thread-local state. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#define EMU_STACK (256u * 1024u) /* ASan's redzones make frames larger */
#else
#define EMU_STACK (64u * 1024u)
#endif
#define EMU_MAX_THREADS 1024
#define EMU_GUARD 4096u

enum fiber_state { F_RUN, F_BAR, F_WARP, F_DONE };

struct fiber {
    struct vl3_emu_coords co;
    ucontext_t ctx;
    char *stack; /* EMU_STACK bytes above a guard page */
    enum fiber_state state;
    const char *file; /* where it waits */
    int line;
    /* warp operation in progress */
    enum vl3_emu_warp_op op;
    unsigned mask;
    int param, width;
    uint64_t value, result;
    void *fake_stack; /* ASan fiber bookkeeping */
};

struct launch {
    struct fiber *f; /* nthreads */
    int nthreads;
    void (*fn)(void *);
    void *arg;
    void *dyn;
    size_t dyn_bytes;
    ucontext_t sched;
    const void *sched_stack_bottom;
    size_t sched_stack_size;
    void *sched_fake_stack;
};

__thread const struct vl3_emu_coords *vl3_emu_cur;
static __thread struct launch *cur_launch;
static __thread struct fiber *cur_fiber;
static __thread struct fiber *pool; /* EMU_MAX_THREADS, stacks kept across launches */
static __thread cudaError_t last_error;

static void emu_die(const char *what, const char *file, int line)
{
    fprintf(stderr, "cuda-emu: %s at %s:%d\n", what, file, line);
    abort();
}

/* ---- fiber switching ------------------------------------------------------------------------ */

static void to_fiber(struct launch *L, struct fiber *f)
{
    cur_fiber = f;
    vl3_emu_cur = &f->co;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&L->sched_fake_stack, f->stack, EMU_STACK);
#endif
    swapcontext(&L->sched, &f->ctx);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(L->sched_fake_stack, NULL, NULL);
#endif
    cur_fiber = NULL;
    vl3_emu_cur = NULL;
}

static void to_scheduler(struct fiber *f, int dying)
{
    struct launch *L = cur_launch;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &f->fake_stack, L->sched_stack_bottom,
                                   L->sched_stack_size);
#else
    (void)dying;
#endif
    swapcontext(&f->ctx, &L->sched);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, NULL, NULL);
#endif
}

/* A host thread's fiber pool and stacks go when the thread exits (the main thread's stay until
 * the process ends, reachable from its thread-local pointer). */
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_free(void *p)
{
    struct fiber *fs = p;
    for (int i = 0; i < EMU_MAX_THREADS; i++)
        if (fs[i].stack)
            (void)munmap(fs[i].stack - EMU_GUARD, EMU_STACK + EMU_GUARD);
    free(fs);
}

static void pool_key_make(void)
{
    (void)pthread_key_create(&pool_key, pool_free);
}

static void fiber_main(void)
{
    struct launch *L = cur_launch;
    struct fiber *f = cur_fiber;
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &L->sched_stack_bottom, &L->sched_stack_size);
#endif
    L->fn(L->arg);
    f->state = F_DONE;
    to_scheduler(f, 1);
    abort(); /* never resumed */
}

static int fiber_stack(struct fiber *f)
{
    if (f->stack)
        return 0;
    char *m = mmap(NULL, EMU_STACK + EMU_GUARD, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    (void)mprotect(m, EMU_GUARD, PROT_NONE); /* a stack overflow faults instead of corrupting */
    f->stack = m + EMU_GUARD;
    return 0;
}

/* ---- barriers and warps --------------------------------------------------------------------- */

void vl3_emu_syncthreads(const char *file, int line)
{
    struct fiber *f = cur_fiber;
    if (!f)
        emu_die("__syncthreads() outside a kernel", file, line);
    f->state = F_BAR;
    f->file = file;
    f->line = line;
    to_scheduler(f, 0);
}

uint64_t vl3_emu_warp(enum vl3_emu_warp_op op, unsigned mask, uint64_t value, int param,
                      int width, const char *file, int line)
{
    struct fiber *f = cur_fiber;
    if (!f)
        emu_die("warp primitive outside a kernel", file, line);
    if (width <= 0 || width > 32 || (width & (width - 1)))
        emu_die("warp primitive with a width that is not a power of two <= 32", file, line);
    f->state = F_WARP;
    f->file = file;
    f->line = line;
    f->op = op;
    f->mask = mask;
    f->param = param;
    f->width = width;
    f->value = value;
    to_scheduler(f, 0);
    return f->result;
}

/* Lane l of warp w's value as seen by lane `me` for a shuffle; out-of-range sources give me's. */
static uint64_t shfl_result(struct fiber *w, int me)
{
    struct fiber *f = &w[me];
    int width = f->width, base = me & ~(width - 1), src;
    switch (f->op) {
    case VL3_EMU_SHFL_IDX:
        src = base + (f->param & (width - 1));
        break;
    case VL3_EMU_SHFL_XOR:
        src = me ^ f->param;
        if (src >= base + width || src < base)
            src = me;
        break;
    case VL3_EMU_SHFL_DOWN:
        src = me + f->param;
        if (src >= base + width)
            src = me;
        break;
    default: /* VL3_EMU_SHFL_UP */
        src = me - f->param;
        if (src < base)
            src = me;
        break;
    }
    if (!(f->mask >> src & 1u))
        return w[me].value; /* a lane outside the mask: undefined on a GPU */
    return w[src].value;
}

/* Release every warp group whose mask lanes have all arrived at the same primitive; returns the
 * number of lanes released. */
static int release_warps(struct launch *L)
{
    int released = 0;
    for (int w0 = 0; w0 < L->nthreads; w0 += 32) {
        struct fiber *w = &L->f[w0];
        int nl = L->nthreads - w0 < 32 ? L->nthreads - w0 : 32;
        for (int l = 0; l < nl; l++) {
            if (w[l].state != F_WARP)
                continue;
            unsigned m = w[l].mask;
            int ok = (m >> l) & 1u;
            for (int k = 0; k < 32 && ok; k++) {
                if (!(m >> k & 1u))
                    continue;
                ok = k < nl && w[k].state == F_WARP && w[k].mask == m && w[k].op == w[l].op;
            }
            if (!ok)
                continue;
            unsigned ballot = 0;
            for (int k = 0; k < nl; k++)
                if (m >> k & 1u && w[k].value)
                    ballot |= 1u << k;
            for (int k = 0; k < nl; k++) {
                if (!(m >> k & 1u))
                    continue;
                switch (w[k].op) {
                case VL3_EMU_BALLOT:
                    w[k].result = ballot;
                    break;
                case VL3_EMU_ANY:
                    w[k].result = ballot != 0;
                    break;
                case VL3_EMU_ALL:
                    w[k].result = ballot == m;
                    break;
                default:
                    w[k].result = shfl_result(w, k);
                    break;
                }
            }
            for (int k = 0; k < nl; k++)
                if (m >> k & 1u) {
                    w[k].state = F_RUN;
                    released++;
                }
        }
    }
    return released;
}

static void report_deadlock(struct launch *L, const char *why)
{
    const struct vl3_emu_coords *c = &L->f[0].co;
    fprintf(stderr,
            "cuda-emu: deadlock in block (%u,%u,%u): %s\n"
            "cuda-emu: (a barrier or warp primitive that not all threads reach, e.g. "
            "__syncthreads in divergent code)\n",
            c->block_idx.x, c->block_idx.y, c->block_idx.z, why);
    int shown = 0;
    for (int i = 0; i < L->nthreads && shown < 8; i++) {
        struct fiber *f = &L->f[i];
        const char *st = f->state == F_BAR ? "waits at __syncthreads"
                         : f->state == F_WARP ? "waits at a warp primitive"
                                              : "has exited";
        if (i > 0 && f->state == L->f[i - 1].state && f->line == L->f[i - 1].line &&
            f->file == L->f[i - 1].file)
            continue;
        fprintf(stderr, "cuda-emu:   thread (%u,%u,%u) %s", f->co.thread_idx.x, f->co.thread_idx.y,
                f->co.thread_idx.z, st);
        if (f->state != F_DONE)
            fprintf(stderr, " at %s:%d", f->file, f->line);
        fputc('\n', stderr);
        shown++;
    }
    abort();
}

/* Run one block to completion. */
static void run_block(struct launch *L)
{
    for (int i = 0; i < L->nthreads; i++) {
        struct fiber *f = &L->f[i];
        f->state = F_RUN;
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = f->stack;
        f->ctx.uc_stack.ss_size = EMU_STACK;
        f->ctx.uc_link = NULL;
        makecontext(&f->ctx, fiber_main, 0);
    }
    if (L->dyn_bytes) { /* poison: a kernel reading shared memory it never wrote sees NaNs */
        memset(L->dyn, 0xff, L->dyn_bytes);
    }
    for (;;) {
        int ran = 0;
        for (int i = 0; i < L->nthreads; i++)
            if (L->f[i].state == F_RUN) {
                to_fiber(L, &L->f[i]);
                ran = 1;
            }
        if (ran)
            continue;
        if (release_warps(L))
            continue;
        int n_bar = 0, n_warp = 0, n_done = 0;
        const struct fiber *first_bar = NULL;
        int same_site = 1;
        for (int i = 0; i < L->nthreads; i++) {
            struct fiber *f = &L->f[i];
            if (f->state == F_BAR) {
                if (!first_bar)
                    first_bar = f;
                else if (f->line != first_bar->line || strcmp(f->file, first_bar->file) != 0)
                    same_site = 0;
                n_bar++;
            } else if (f->state == F_WARP) {
                n_warp++;
            } else {
                n_done++;
            }
        }
        if (n_done == L->nthreads)
            return;
        if (n_bar == L->nthreads && same_site) {
            for (int i = 0; i < L->nthreads; i++)
                L->f[i].state = F_RUN;
            continue;
        }
        if (n_warp)
            report_deadlock(L, "a warp primitive's mask names lanes that never arrive");
        else if (n_done)
            report_deadlock(L, "threads wait at __syncthreads after others exited");
        else
            report_deadlock(L, "threads wait at different __syncthreads");
    }
}

/* ---- device faults (tests) -------------------------------------------------------------------
 * The fault_at-th kernel launch of the process fails with cudaErrorIllegalAddress, which then
 * sticks as on a real device: every later launch, copy, synchronize and cudaGetLastError of every
 * thread returns it. Armed by vl3_emu_fault_after or, at the first launch, VL3_CUDA_EMU_FAULT=N. */
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static long fault_at, n_launches; /* atomic */
static int sticky;                /* atomic cudaError_t */

static void fault_env(void)
{
    const char *v = getenv("VL3_CUDA_EMU_FAULT");
    if (v && *v)
        __atomic_store_n(&fault_at, strtol(v, NULL, 10), __ATOMIC_SEQ_CST);
}

void vl3_emu_fault_after(long n)
{
    pthread_once(&fault_once, fault_env);
    __atomic_store_n(&n_launches, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fault_at, n, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sticky, (int)cudaSuccess, __ATOMIC_SEQ_CST); /* a fresh device */
    last_error = cudaSuccess;
}

/* The sticky error, or cudaSuccess. */
static cudaError_t sticky_error(void)
{
    return (cudaError_t)__atomic_load_n(&sticky, __ATOMIC_SEQ_CST);
}

void vl3_emu_launch(struct vl3_emu_dim3 grid, struct vl3_emu_dim3 block, size_t shmem,
                    cudaStream_t stream, void (*fn)(void *), void *arg)
{
    (void)stream;
    pthread_once(&fault_once, fault_env);
    if (sticky_error() != cudaSuccess) {
        last_error = sticky_error();
        return;
    }
    long at = __atomic_load_n(&fault_at, __ATOMIC_SEQ_CST);
    if (at > 0 && __atomic_add_fetch(&n_launches, 1, __ATOMIC_SEQ_CST) == at) {
        __atomic_store_n(&sticky, (int)cudaErrorIllegalAddress, __ATOMIC_SEQ_CST);
        last_error = cudaErrorIllegalAddress;
        return;
    }
    uint64_t nt = (uint64_t)block.x * block.y * block.z;
    if (cur_launch)
        emu_die("kernel launched from inside a kernel", __FILE__, __LINE__);
    if (nt == 0 || nt > EMU_MAX_THREADS || block.z > 64 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.y > 65535 || grid.z > 65535 || shmem > 227u * 1024u) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (!pool) {
        if (!(pool = calloc(EMU_MAX_THREADS, sizeof(*pool)))) {
            last_error = cudaErrorMemoryAllocation;
            return;
        }
        (void)pthread_once(&pool_once, pool_key_make);
        (void)pthread_setspecific(pool_key, pool);
    }
    struct launch L = {.f = pool, .nthreads = (int)nt, .fn = fn, .arg = arg, .dyn_bytes = shmem};
    for (int i = 0; i < L.nthreads; i++)
        if (fiber_stack(&pool[i]) < 0) {
            last_error = cudaErrorMemoryAllocation;
            return;
        }
    if (shmem && !(L.dyn = aligned_alloc(16, (shmem + 15) & ~(size_t)15))) {
        last_error = cudaErrorMemoryAllocation;
        return;
    }
    cur_launch = &L;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                for (int i = 0; i < L.nthreads; i++) {
                    struct vl3_emu_coords *c = &pool[i].co;
                    c->thread_idx.x = (unsigned)i % block.x;
                    c->thread_idx.y = (unsigned)i / block.x % block.y;
                    c->thread_idx.z = (unsigned)i / (block.x * block.y);
                    c->block_idx = (struct vl3_emu_dim3){bx, by, bz};
                    c->block_dim = block;
                    c->grid_dim = grid;
                }
                run_block(&L);
            }
    cur_launch = NULL;
    free(L.dyn);
}

void *vl3_emu_dyn_shmem(void)
{
    if (!cur_launch)
        emu_die("dynamic shared memory used outside a kernel", __FILE__, __LINE__);
    return cur_launch->dyn;
}

/* ---- runtime API ---------------------------------------------------------------------------- */

struct vl3_emu_stream {
    unsigned flags;
};

cudaError_t vl3_emu_cudaMalloc(void **ret_ptr, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        return last_error = cudaErrorMemoryAllocation;
    *ret_ptr = p;
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

static long n_h2d, n_d2h;          /* atomic */
static long long h2d_bytes, d2h_bytes; /* atomic */

void vl3_emu_copy_stats(long *ret_h2d, long *ret_d2h, long long *ret_h2d_bytes,
                        long long *ret_d2h_bytes)
{
    *ret_h2d = __atomic_load_n(&n_h2d, __ATOMIC_SEQ_CST);
    *ret_d2h = __atomic_load_n(&n_d2h, __ATOMIC_SEQ_CST);
    *ret_h2d_bytes = __atomic_load_n(&h2d_bytes, __ATOMIC_SEQ_CST);
    *ret_d2h_bytes = __atomic_load_n(&d2h_bytes, __ATOMIC_SEQ_CST);
}

cudaError_t vl3_emu_cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    if (sticky_error() != cudaSuccess)
        return last_error = sticky_error();
    if ((unsigned)kind > cudaMemcpyDefault)
        return last_error = cudaErrorInvalidValue;
    if (kind == cudaMemcpyHostToDevice) {
        __atomic_add_fetch(&n_h2d, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&h2d_bytes, (long long)n, __ATOMIC_SEQ_CST);
    } else if (kind == cudaMemcpyDeviceToHost) {
        __atomic_add_fetch(&n_d2h, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&d2h_bytes, (long long)n, __ATOMIC_SEQ_CST);
    }
    if (n)
        memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaMemcpyAsync(void *dst, const void *src, size_t n,
                                    enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    return vl3_emu_cudaMemcpy(dst, src, n, kind);
}

cudaError_t vl3_emu_cudaMemset(void *p, int value, size_t n)
{
    if (sticky_error() != cudaSuccess)
        return last_error = sticky_error();
    if (n)
        memset(p, value, n);
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s)
{
    (void)s;
    return vl3_emu_cudaMemset(p, value, n);
}

cudaError_t vl3_emu_cudaStreamCreateWithFlags(cudaStream_t *ret_s, unsigned flags)
{
    struct vl3_emu_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return last_error = cudaErrorMemoryAllocation;
    s->flags = flags;
    *ret_s = s;
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaStreamCreate(cudaStream_t *ret_s)
{
    return vl3_emu_cudaStreamCreateWithFlags(ret_s, 0);
}

cudaError_t vl3_emu_cudaStreamDestroy(cudaStream_t s)
{
    free(s);
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaStreamSynchronize(cudaStream_t s)
{
    (void)s; /* launches run to completion */
    return sticky_error();
}

cudaError_t vl3_emu_cudaDeviceSynchronize(void)
{
    return sticky_error();
}

cudaError_t vl3_emu_cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = sticky_error(); /* a sticky error is never cleared */
    return e != cudaSuccess ? e : sticky_error();
}

cudaError_t vl3_emu_cudaPeekAtLastError(void)
{
    return last_error != cudaSuccess ? last_error : sticky_error();
}

const char *vl3_emu_cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered";
    default:
        return "unknown error (cuda-emu)";
    }
}

cudaError_t vl3_emu_cudaGetDeviceCount(int *ret_n)
{
    *ret_n = 1;
    return cudaSuccess;
}

cudaError_t vl3_emu_cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : (last_error = cudaErrorInvalidDevice);
}
