/* test_vision_bench.c: timing of the CPU vision encoder at the real 2B shapes (C 1152, 16 heads,
 * I 4304, projector to 1536) with random f32 weights. Skipped unless VL3_BENCH is set (it takes
 * seconds to minutes); VL3_BENCH_LAYERS (default 27) and VL3_BENCH_FRAMES (default 4 frames of
 * a 1080p video at 180 frames: 14x24 patches, merge 2) choose the size. Prints patches/s. */
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"
#include "test.h"
#include "vl3/engine.h"
#include "vl3/util.h"

static vl3__tensor mk(int64_t n, uint64_t *seed)
{
    float *d = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        d[i] = (float)((double)(*seed >> 40) / (double)(1ull << 24) - 0.5) * 0.05f;
    }
    vl3__tensor t = {"bench", VL3__DTYPE_F32, 1, {n, 0, 0, 0}, d, (size_t)n * 4};
    return t;
}

TEST(bench_encoder_real_shape)
{
    if (!getenv("VL3_BENCH"))
        SKIP("set VL3_BENCH=1 to run the encoder benchmark");
    int L = getenv("VL3_BENCH_LAYERS") ? atoi(getenv("VL3_BENCH_LAYERS")) : 27;
    int T = getenv("VL3_BENCH_FRAMES") ? atoi(getenv("VL3_BENCH_FRAMES")) : 4;
    const int64_t C = 1152, I = 4304, Dl = 1536, K = 588;
    uint64_t seed = 1;
    struct vl3_model m;
    memset(&m, 0, sizeof(m));
    m.vision = (struct vl3__vision_hparams){(int)C, L, 16, (int)I, 14, 3, 1e-6f, 10000.0f};
    m.llm.hidden = (int)Dl;
    m.w.patch_w = mk(C * K, &seed);
    m.w.patch_b = mk(C, &seed);
    m.w.vlayers = calloc((size_t)L, sizeof(*m.w.vlayers));
    for (int l = 0; l < L; l++) {
        struct vl3__vision_layer *y = &m.w.vlayers[l];
        y->ln1_w = mk(C, &seed), y->ln1_b = mk(C, &seed);
        y->wq = mk(C * C, &seed), y->bq = mk(C, &seed), y->wk = mk(C * C, &seed);
        y->bk = mk(C, &seed), y->wv = mk(C * C, &seed), y->bv = mk(C, &seed);
        y->wo = mk(C * C, &seed), y->bo = mk(C, &seed);
        y->ln2_w = mk(C, &seed), y->ln2_b = mk(C, &seed);
        y->fc1_w = mk(I * C, &seed), y->fc1_b = mk(I, &seed);
        y->fc2_w = mk(C * I, &seed), y->fc2_b = mk(C, &seed);
    }
    m.w.post_ln_w = mk(C, &seed), m.w.post_ln_b = mk(C, &seed);
    m.w.proj_w1 = mk(Dl * C, &seed), m.w.proj_b1 = mk(Dl, &seed);
    m.w.proj_w2 = mk(Dl * Dl, &seed), m.w.proj_b2 = mk(Dl, &seed);
    vl3_vision *v = NULL;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_vision_new(&m, 0, &v, &err), &err);
    vl3_vision_grid g = {T, 14, 24, 2};
    vl3_pixel_batch b = {0};
    b.n_patches = (int64_t)T * 14 * 24;
    b.patch_dim = 588;
    b.n_items = 1;
    b.grids = &g;
    b.pixel_values = malloc(sizeof(float) * (size_t)b.n_patches * 588);
    for (int64_t i = 0; i < b.n_patches * 588; i++)
        b.pixel_values[i] = (float)((i * 2654435761u) % 255) / 127.5f - 1.0f;
    float *out = malloc(sizeof(float) * (size_t)T * 84 * Dl);
    double t0 = vl3_time_s();
    ASSERT_OK_E(vl3_vision_encode(v, &b, NULL, out, &err), &err);
    double dt = vl3_time_s() - t0;
    printf("vision encoder (CPU f32, %d layers): %d frames x 336 patches = %lld patches in %.2f s "
           "= %.1f patches/s (%.1f frames/s)\n",
           L, T, (long long)b.n_patches, dt, b.n_patches / dt, T / dt);
    ASSERT(out[0] == out[0]); /* not NaN */
    free(out);
    free(b.pixel_values);
    vl3_vision_free(v);
    return 0;
}

/* The encoder of a real checkpoint (VL3_BENCH_MODEL=DIR, e.g. the random full-size 2B one) on
 * one image of VL3_BENCH_GRID=HxW patches (default 14x27, the 384x191 page of `vl3 bench cpu`:
 * 378 patches, merge 1; VL3_BENCH_FRAMES=N: N frames of that grid, one attention block each),
 * VL3_BENCH_REPEAT encodes (default 5) in one process: the first (cold pages) and the best of
 * the rest, wall and process CPU time (on a loaded machine, with VL3_BENCH_THREADS=1, the CPU
 * time is the work). The precision is VL3_PRECISION's; VL3_BENCH_DUMP=FILE writes the output
 * rows (f32) to compare builds. */
TEST(bench_encoder_checkpoint)
{
    const char *dir = getenv("VL3_BENCH_MODEL");
    if (!getenv("VL3_BENCH") || !dir)
        SKIP("set VL3_BENCH=1 and VL3_BENCH_MODEL=DIR to run the checkpoint encoder benchmark");
    int gh = 14, gw = 27, reps = getenv("VL3_BENCH_REPEAT") ? atoi(getenv("VL3_BENCH_REPEAT")) : 5;
    if (getenv("VL3_BENCH_GRID"))
        ASSERT(sscanf(getenv("VL3_BENCH_GRID"), "%dx%d", &gh, &gw) == 2);
    ASSERT(gh > 0 && gw > 0 && reps > 0);
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = dir;
    mp.load_tokenizer = 0;
    mp.n_threads = getenv("VL3_BENCH_THREADS") ? atoi(getenv("VL3_BENCH_THREADS")) : 0;
    vl3_model *m = NULL;
    vl3_vision *v = NULL;
    vl3_error err = {0};
    ASSERT_OK_E(vl3_model_load(&mp, &m, &err), &err);
    ASSERT_OK_E(vl3_vision_new(m, 0, &v, &err), &err);
    int nf = getenv("VL3_BENCH_FRAMES") ? atoi(getenv("VL3_BENCH_FRAMES")) : 1;
    ASSERT(nf > 0);
    vl3_vision_grid g = {nf, gh, gw, 1};
    vl3_pixel_batch b = {0};
    b.n_patches = (int64_t)nf * gh * gw;
    b.patch_dim = 588;
    b.n_items = 1;
    b.grids = &g;
    b.pixel_values = malloc(sizeof(float) * (size_t)b.n_patches * 588);
    ASSERT(b.pixel_values);
    for (int64_t i = 0; i < b.n_patches * 588; i++)
        b.pixel_values[i] = (float)((i * 2654435761u) % 255) / 127.5f - 1.0f;
    int dl = vl3_vision_out_dim(v);
    float *out = malloc(sizeof(float) * (size_t)b.n_patches * (size_t)dl);
    ASSERT(out);
    double first = 0, best = 1e30, cbest = 1e30;
    long flt_first = 0, flt_last = 0;
    for (int r = 0; r < reps; r++) {
        struct timespec c0, c1;
        struct rusage u0, u1;
        getrusage(RUSAGE_SELF, &u0);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        double t0 = vl3_time_s();
        ASSERT_OK_E(vl3_vision_encode(v, &b, NULL, out, &err), &err);
        double dt = vl3_time_s() - t0;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        getrusage(RUSAGE_SELF, &u1);
        double ct = (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
        flt_last = u1.ru_minflt - u0.ru_minflt;
        if (r == 0) {
            flt_first = flt_last;
            first = dt;
            if (reps == 1)
                cbest = ct;
        } else {
            best = dt < best ? dt : best;
            cbest = ct < cbest ? ct : cbest;
        }
    }
    printf("vision encoder (%s, %s): %lld patches: first %.4f s, best of the other %d %.4f s "
           "(least CPU time of the process %.4f s); minor page faults: first %ld, last %ld\n",
           dir, getenv("VL3_PRECISION") ? getenv("VL3_PRECISION") : "default",
           (long long)b.n_patches, first, reps - 1, reps > 1 ? best : first, cbest, flt_first,
           flt_last);
    ASSERT(out[0] == out[0]); /* not NaN */
    const char *dump = getenv("VL3_BENCH_DUMP"); /* the rows, to compare builds bit for bit */
    if (dump) {
        FILE *f = fopen(dump, "wb");
        ASSERT(f != NULL);
        size_t nv = (size_t)b.n_patches * (size_t)dl;
        ASSERT_EQ(fwrite(out, sizeof(float), nv, f), nv);
        ASSERT_EQ(fclose(f), 0);
    }
    free(out);
    free(b.pixel_values);
    vl3_vision_free(v);
    vl3_model_free(m);
    return 0;
}
