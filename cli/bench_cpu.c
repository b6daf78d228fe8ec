/* bench_cpu.c: `vl3 bench cpu`: the same image through `vl3 run` (bf16 mode, and f32 mode with
 * --f32) and through transformers' VideoLlama3 in bfloat16 (tools/bench/cpu_hf.py in the venv of
 * tools/oracle/setup), each as a new process, one after the other in one run; a table of load,
 * vision, vision + prefill, decode and whole-process times with the ratios, and each vl3 phase's
 * distance from the machine's limit.
 *
 *   vl3 bench cpu --model DIR [--image FILE] [--gen-tokens N] [--threads N] [--python PATH]
 *                 [--script PATH] [--f32] [--no-transformers] [--repeat N]
 *
 * With --repeat N the sides run in turn N times and each phase keeps its best figure (a shared
 * machine's load comes and goes; interleaving gives both sides the same chances). Before the
 * first round the checkpoint's files are read once, untimed, so that neither side's load pays
 * for the disk (warm_page_cache).
 *
 * Both sides are timed on the first pass of a new process (what a user of either gets), with
 * preprocessing (image or video decode and resize) in a row of its own: vl3's vision is its
 * encoder call, transformers' the time in its feature call inside generate (cpu_hf.py wraps it);
 * vision + prefill is the time to the first new token; decode the tokens after it. The rows
 * "hf warm" add transformers' second pass (the same calls after generate: oneDNN kernels
 * created and its mapped weights faulted in) against vl3's first, the comparison that favours
 * transformers.
 *
 * Limits: prefill and vision against the peak bf16 rate of the ISA in use (the measured
 * TDPBF16PS rate of the same threads where AMX is present: vl3__cpu_amx_peak_gflops), FLOPs
 * counted as 2 per weight per token (attention left out, so the figure is a lower bound);
 * decode against the memory floor: every LLM weight and the bf16 K and V rows of the context
 * (at the generated tokens' average position) read once per token at the read bandwidth
 * below. The CPU's limits that the benchmarks measure against: the memory read bandwidth
 * (bench_read_bandwidth, also used by `vl3 bench llm` for its decode floor).
 *
 * The read bandwidth is the highest of several honest ways of streaming a buffer much larger
 * than the caches: 64-bit scalar sums (what the floor used before), AVX-512 loads into four
 * accumulators, and the same with software prefetch 2 KB ahead; each with n threads over
 * disjoint slices, best of BW_REPS passes, on a buffer of 4 KiB pages and on one of 2 MiB pages
 * (the page cache maps the weights in 2 MiB folios: huge_buffer). A decode step reads its
 * weights the same way (one pass, all threads), so the best of these is the bound a decode
 * kernel can approach. `vl3 bench cpu` probes it before the runs and after each round and takes
 * the highest (a shared host's rate moves by 20-30% within minutes). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define BW_X86 1 /* the AVX-512 methods: vl3__cpu_read_stream */
#endif

#include "cli.h"
#include "cpu_ops.h"
#include "vl3/engine.h"
#include "vl3/util.h"

#define BW_REPS 3
#define BW_MAX_THREADS 64

struct bw_job {
    const uint64_t *p;
    size_t n; /* uint64 words, a multiple of 32 */
    int method;
    uint64_t sum;
};

static void read_scalar(struct bw_job *j)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->p[i];
        s1 += j->p[i + 1];
        s2 += j->p[i + 2];
        s3 += j->p[i + 3];
    }
    j->sum = s0 ^ s1 ^ s2 ^ s3;
}

static void *bw_run(void *arg)
{
    struct bw_job *j = arg;
#ifdef BW_X86
    if (j->method > 0) { /* AVX-512 loads, prefetch none / to L1 / to L1 and L2 */
        j->sum = vl3__cpu_read_stream(j->p, j->n * 8, j->method - 1);
        return NULL;
    }
#endif
    read_scalar(j);
    return NULL;
}

static const char *const method_names[4] = {"scalar 64-bit sums", "AVX-512 loads",
                                            "AVX-512 loads + prefetch",
                                            "AVX-512 loads + L1 and L2 prefetch"};

/* A buffer of `bytes` on 2 MiB boundaries, advised for transparent huge pages: the page cache
 * maps a checkpoint's bf16 weights in 2 MiB folios (ext4's large folios; FilePmdMapped in
 * /proc/PID/smaps), so a decode step streams them without the 4 KiB page walks and prefetch
 * stops of a malloc'd buffer. Read with 4 KiB pages the same 1 GiB gave 28.2 GB/s, with huge
 * pages 30.0 and the mapped 2B checkpoint 30.5-31.0 (2 threads, this project's machine). *ret_huge
 * says whether the advice was taken. */
static uint64_t *huge_buffer(size_t bytes, void **ret_map, size_t *ret_len, int *ret_huge)
{
    size_t align = 2ul << 20, len = bytes + align;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    uint64_t *p = (uint64_t *)(((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1));
#ifdef MADV_HUGEPAGE
    *ret_huge = madvise(p, bytes, MADV_HUGEPAGE) == 0;
#else
    *ret_huge = 0;
#endif
    *ret_map = m;
    *ret_len = len;
    return p;
}

/* One pass of method m over buf by n_threads threads (slices of words_per words): bytes/s */
static double bw_pass(const uint64_t *buf, size_t words_per, int n_threads, int m)
{
    pthread_t th[BW_MAX_THREADS];
    int started[BW_MAX_THREADS] = {0};
    struct bw_job jobs[BW_MAX_THREADS];
    volatile uint64_t sink = 0;
    double t0 = vl3_time_s();
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (struct bw_job){buf + words_per * i, words_per, m, 0};
        if (i > 0)
            started[i] = pthread_create(&th[i], NULL, bw_run, &jobs[i]) == 0;
    }
    bw_run(&jobs[0]);
    for (int i = 1; i < n_threads; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            bw_run(&jobs[i]);
    }
    double dt = vl3_time_s() - t0;
    for (int i = 0; i < n_threads; i++)
        sink ^= jobs[i].sum;
    (void)sink;
    return (double)(words_per * 8 * n_threads) / dt;
}

static int bw_methods(void)
{
#ifdef BW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 4;
#endif
    return 1;
}

/* The best of BW_REPS passes of each method over buf (n_threads slices of words_per words). */
static double bw_best(const uint64_t *buf, size_t words_per, int n_threads, int *ret_method)
{
    int n_methods = bw_methods();
    double best = 0;
    for (int rep = 0; rep < BW_REPS; rep++)
        for (int m = 0; m < n_methods; m++) {
            double bw = bw_pass(buf, words_per, n_threads, m);
            if (bw > best) {
                best = bw;
                *ret_method = m;
            }
        }
    return best;
}

int bench_reader_open(struct bench_reader *r, int n_threads, unsigned long bytes)
{
    memset(r, 0, sizeof(*r));
    r->n_threads = n_threads < 1 ? 1 : n_threads > BW_MAX_THREADS ? BW_MAX_THREADS : n_threads;
    r->words_per = bytes / 8 / (size_t)r->n_threads / 32 * 32;
    size_t total = r->words_per * 8 * r->n_threads;
    int advised = 0;
    if (r->words_per == 0 || !(r->buf = huge_buffer(total, &r->map, &r->map_len, &advised)))
        return -ENOMEM;
    memset(r->buf, 1, total);
    r->method = bw_methods() - 1; /* the last, most prefetching method */
    return 0;
}

double bench_reader_pass(const struct bench_reader *r)
{
    return r->buf ? bw_pass(r->buf, r->words_per, r->n_threads, r->method) : 0;
}

void bench_reader_close(struct bench_reader *r)
{
    if (r->map)
        munmap(r->map, r->map_len);
    memset(r, 0, sizeof(*r));
}

double bench_read_bandwidth(int n_threads, unsigned long bytes, const char **ret_method)
{
    static char method[96];
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > BW_MAX_THREADS)
        n_threads = BW_MAX_THREADS;
    size_t words_per = bytes / 8 / (size_t)n_threads / 32 * 32, total = words_per * 8 * n_threads;
    if (words_per == 0)
        return 0;
    /* 4 KiB pages (malloc), then huge pages where the kernel gives them; the higher figure */
    double best = 0;
    for (int huge = 0; huge < 2; huge++) {
        uint64_t *buf = NULL;
        void *map = NULL;
        size_t map_len = 0;
        int advised = 0, m = 0;
        if (!huge) {
            if (posix_memalign((void **)&buf, 64, total) != 0)
                continue;
        } else {
            buf = huge_buffer(total, &map, &map_len, &advised);
            if (!buf || !advised) {
                if (map)
                    munmap(map, map_len);
                continue;
            }
        }
        memset(buf, 1, total);
        double bw = bw_best(buf, words_per, n_threads, &m);
        if (bw > best) {
            best = bw;
            snprintf(method, sizeof(method), "%s, %s", method_names[m],
                     huge ? "2 MiB pages" : "4 KiB pages");
        }
        if (huge)
            munmap(map, map_len);
        else
            free(buf);
    }
    if (ret_method)
        *ret_method = method;
    return best;
}

void bench_bw_probe(struct bench_bw *b, int n_threads, unsigned long bytes)
{
    const char *m = "?";
    double v = bench_read_bandwidth(n_threads, bytes, &m);
    if (b->n == 0 || v < b->lowest)
        b->lowest = v;
    if (b->n == 0 || v > b->best) {
        b->best = v;
        snprintf(b->method, sizeof(b->method), "%s", m);
    }
    b->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_llm_matrix_params(const vl3_model_info *in)
{
    double C = in->llm_hidden, HD = (double)in->llm_heads * in->llm_head_dim;
    double KVD = (double)in->llm_kv_heads * in->llm_head_dim, I = in->llm_intermediate;
    return in->llm_layers * (C * HD + 2 * C * KVD + HD * C + 3 * C * I);
}

double bench_vision_matrix_params(const vl3_model_info *in)
{
    double C = in->vision_hidden, I = in->vision_intermediate;
    return in->vision_layers * (4 * C * C + 2 * C * I);
}

/* ---- vl3 bench cpu ---------------------------------------------------------------------------- */

struct phase_times {
    int ok;
    double load, preprocess, vision, vis_prefill, prefill, decode_tok_s, decode_s, whole;
    double vision_warm, vis_prefill_warm; /* transformers' second pass (after generate) */
    int n_prompt, n_generated;
    double n_patches;
};

/* Run argv (NULL-terminated) as a child; stdout into out_path when given. Returns the wall
 * time in seconds, or -1 when it failed. */
static double run_child(char *const argv[], const char *out_path)
{
    double t0 = vl3_time_s();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (out_path && !freopen(out_path, "w", stdout))
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    double dt = vl3_time_s() - t0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? dt : -1;
}

static double jnum(json_t *o, const char *key)
{
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* The input: an image, or a video (fps set) sampled by vl3 and transformers alike. */
struct bench_input {
    const char *image, *video, *fps;
};

static int run_vl3(const char *self, const char *model, const struct bench_input *in, int n_gen,
                   const char *threads, const char *precision, const char *tmp,
                   struct phase_times *ret)
{
    char dump[600], ngen[16], meta[700];
    snprintf(dump, sizeof(dump), "%s/vl3-%s", tmp, precision);
    snprintf(ngen, sizeof(ngen), "%d", n_gen);
    char *argv[] = {(char *)self, "run", "--model", (char *)model,
                    in->video ? "--video" : "--image", (char *)(in->video ? in->video : in->image),
                    "--prompt", in->video ? "Describe the video." : "Describe the image.",
                    "--greedy", "--max-new-tokens", ngen, "--precision", (char *)precision,
                    "--threads", (char *)threads, "--dump", dump,
                    in->video ? "--fps" : NULL, (char *)in->fps, NULL};
    char out[700];
    snprintf(out, sizeof(out), "%s/vl3-%s.out", tmp, precision);
    double wall = run_child(argv, out);
    memset(ret, 0, sizeof(*ret));
    if (wall < 0)
        return -1;
    snprintf(meta, sizeof(meta), "%s/meta.json", dump);
    json_t *j = json_load_file(meta, 0, NULL);
    if (!j)
        return -1;
    json_t *t = json_object_get(j, "timings"), *v = json_object_get(j, "vision");
    ret->ok = 1;
    ret->whole = wall;
    ret->load = jnum(t, "load_s");
    ret->prefill = jnum(t, "prefill_s");
    ret->decode_s = jnum(t, "decode_s");
    ret->decode_tok_s = jnum(t, "decode_tok_s");
    ret->preprocess = jnum(v, "preprocess_s");
    ret->vision = jnum(v, "encode_s");
    ret->n_patches = jnum(v, "n_patches");
    ret->vis_prefill = ret->vision + ret->prefill;
    ret->n_prompt = (int)jnum(j, "n_prompt");
    ret->n_generated = (int)jnum(j, "n_generated");
    json_decref(j);
    return 0;
}

static int run_hf(const char *python, const char *script, const char *model,
                  const struct bench_input *in, int n_gen, const char *threads, const char *tmp,
                  struct phase_times *ret)
{
    char ngen[16], out[600];
    snprintf(ngen, sizeof(ngen), "%d", n_gen);
    snprintf(out, sizeof(out), "%s/hf.json", tmp);
    char *argv[] = {(char *)python, (char *)script, "--model", (char *)model,
                    in->video ? "--video" : "--image", (char *)(in->video ? in->video : in->image),
                    "--prompt", in->video ? "Describe the video." : "Describe the image.",
                    "--new-tokens", ngen, "--threads", (char *)threads,
                    in->video ? "--fps" : NULL, (char *)in->fps, NULL};
    memset(ret, 0, sizeof(*ret));
    double wall = run_child(argv, out);
    if (wall < 0)
        return -1;
    json_t *j = json_load_file(out, 0, NULL);
    if (!j)
        return -1;
    ret->ok = 1;
    ret->load = jnum(j, "load_s");
    ret->preprocess = jnum(j, "preprocess_s");
    ret->vision = jnum(j, "vision_s");         /* inside generate: the first pass */
    ret->vis_prefill = jnum(j, "vis_prefill_s"); /* generate's call to its first new token */
    ret->prefill = ret->vis_prefill - ret->vision;
    ret->vision_warm = jnum(j, "vision_warm_s");
    ret->vis_prefill_warm = jnum(j, "vis_prefill_warm_s");
    ret->decode_s = jnum(j, "decode_s");
    ret->decode_tok_s = jnum(j, "decode_tok_s");
    ret->whole = jnum(j, "whole_s"); /* import + load + one generate (not the extra timings) */
    ret->n_prompt = (int)jnum(j, "n_prompt");
    ret->n_generated = (int)jnum(j, "n_generated");
    json_decref(j);
    return 0;
}

/* Keep in best the better of each phase of best and cur (the least time, the most tokens/s). */
static void keep_best(struct phase_times *best, const struct phase_times *cur)
{
    if (!cur->ok)
        return;
    if (!best->ok) {
        *best = *cur;
        return;
    }
#define MIN_OF(f) best->f = cur->f < best->f ? cur->f : best->f
    MIN_OF(load);
    MIN_OF(preprocess);
    MIN_OF(vision);
    MIN_OF(vision_warm);
    MIN_OF(vis_prefill_warm);
    MIN_OF(vis_prefill);
    MIN_OF(prefill);
    MIN_OF(decode_s);
    MIN_OF(whole);
#undef MIN_OF
    if (cur->decode_tok_s > best->decode_tok_s)
        best->decode_tok_s = cur->decode_tok_s;
}

static void bench_cpu_usage(FILE *f)
{
    fprintf(f, "usage: vl3 bench cpu --model DIR [options]\n\n"
               "One image (or clip) through vl3 run (bf16 mode) and transformers bf16, each a new\n"
               "process; phase times, ratios and the distance from the machine's limits.\n\n"
               "  --model DIR        checkpoint (native layout for transformers; e.g.\n"
               "                     vl3 model tiny --size 2b --layout native --tokenizer DIR)\n"
               "  --image FILE       input image (default: a 384x191 text page made by the script)\n"
               "  --video FILE       a clip instead (both sides sample it with the model's video\n"
               "                     processor settings; the 16-frame case: frog.mp4 --fps 2)\n"
               "  --fps F            with --video: sampling rate (default 1)\n"
               "  --gen-tokens N     new tokens (default 32)\n"
               "  --threads N        threads for both (default: all)\n"
               "  --python PATH      python with torch + transformers\n"
               "                     (default tools/oracle/.venv-native/bin/python)\n"
               "  --script PATH      default tools/bench/cpu_hf.py\n"
               "  --f32              also run vl3 in f32 mode\n"
               "  --repeat N         run each side N times, interleaved; best per phase\n"
               "  --no-transformers  vl3 only\n"
               "  --fresh-cache      evict the checkpoint's cached pages first, then read them\n"
               "                     back as vl3 maps them (2 MiB folios where the kernel can):\n"
               "                     the cache after a reboot and one load, not after the files\n"
               "                     were written or copied\n\n"
               "The runs' files (a clip's dumps are ~100 MB) go to a directory under $TMPDIR\n"
               "(default /tmp), removed after a successful run and kept when a run fails.\n");
}

static void row(const char *name, double v, double hf, double f32, int have_hf, int have_f32,
                int higher_better)
{
    printf("%-18s %12.3f", name, v);
    if (have_f32)
        printf(" %12.3f", f32);
    if (have_hf)
        printf(" %14.3f %9.2fx", hf, v > 0 && hf > 0 ? (higher_better ? v / hf : hf / v) : 0);
    printf("\n");
}

/* Bring every *.safetensors file of dir into the page cache, untimed, so that both sides load
 * from it: the load target is a warm load, and without this the side that runs first
 * pays for the disk (this host's page cache is sometimes dropped between runs). The files are
 * touched once per 4 KiB through the kind of mapping vl3's loader makes (read-only,
 * MADV_HUGEPAGE: a cold cache fills with 2 MiB folios; safetensors.c). drop: first evict the
 * files' cached pages (POSIX_FADV_DONTNEED), so that the cache is what it is after a reboot and
 * one load, whatever wrote or read the files before. Returns 0, or -1 when dir cannot be listed
 * (the run goes on cold). */
static int warm_page_cache(const char *dir, int drop, double *gb, double *secs)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    double t0 = vl3_time_s(), bytes = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (drop)
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        size_t len = (size_t)st.st_size;
        volatile const char *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (m == MAP_FAILED)
            continue;
        (void)madvise((void *)m, len, MADV_HUGEPAGE);
        unsigned sum = 0;
        for (size_t off = 0; off < len; off += 4096)
            sum += (unsigned char)m[off];
        (void)sum;
        munmap((void *)m, len);
        bytes += (double)len;
    }
    closedir(d);
    *gb = bytes / 1e9;
    *secs = vl3_time_s() - t0;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    if (remove(path) < 0)
        fprintf(stderr, "vl3 bench cpu: could not remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* rm -r of the run's temporary directory (depth first, links not followed) */
static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int bench_cpu(int argc, char **argv)
{
    const char *model = NULL, *image = NULL, *python = "tools/oracle/.venv-native/bin/python";
    const char *video = NULL, *fps = "1";
    const char *script = "tools/bench/cpu_hf.py";
    int n_gen = 32, threads = 0, f32 = 0, no_hf = 0, repeat = 1, fresh_cache = 0;
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'},      {"image", required_argument, NULL, 'i'},
        {"gen-tokens", required_argument, NULL, 'g'}, {"threads", required_argument, NULL, 't'},
        {"python", required_argument, NULL, 'p'},     {"script", required_argument, NULL, 's'},
        {"f32", no_argument, NULL, 'f'},              {"no-transformers", no_argument, NULL, 'n'},
        {"repeat", required_argument, NULL, 'r'},     {"help", no_argument, NULL, 'h'},
        {"video", required_argument, NULL, 'v'},      {"fps", required_argument, NULL, 'F'},
        {"fresh-cache", no_argument, NULL, 'C'},      {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': image = optarg; break;
        case 'g': n_gen = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'p': python = optarg; break;
        case 's': script = optarg; break;
        case 'f': f32 = 1; break;
        case 'n': no_hf = 1; break;
        case 'r': repeat = atoi(optarg); break;
        case 'v': video = optarg; break;
        case 'F': fps = optarg; break;
        case 'C': fresh_cache = 1; break;
        case 'h': bench_cpu_usage(stdout); return CLI_EXIT_OK;
        default: bench_cpu_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (no_hf && !image && !video) {
        fprintf(stderr, "vl3 bench cpu: --no-transformers needs --image or --video (the default "
                        "page is drawn by the transformers script)\n");
        return CLI_EXIT_USAGE;
    }
    if (!model || n_gen < 2 || n_gen > 4096 || threads < 0 ||
        repeat < 1 || repeat > 100 || (video && image) || atof(fps) <= 0) {
        bench_cpu_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (threads == 0)
        threads = vl3_cpu_count();
    char th[16], self[4096], tmp[512], img[600];
    snprintf(th, sizeof(th), "%d", threads);
    const char *tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int tn = snprintf(tmp, sizeof(tmp), "%s/vl3-bench-cpu-XXXXXX", tmpdir);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0 || tn < 0 || (size_t)tn >= sizeof(tmp) || !mkdtemp(tmp)) {
        fprintf(stderr, "vl3 bench cpu: could not find this executable or make a temporary "
                        "directory\n");
        return CLI_EXIT_FAIL;
    }
    int rc = CLI_EXIT_FAIL;
    self[n] = 0;
    if (!image && !video) {
        snprintf(img, sizeof(img), "%s/page.png", tmp);
        char *argv_img[] = {(char *)python, (char *)script, "--make-image", img, NULL};
        if (run_child(argv_img, NULL) < 0) {
            fprintf(stderr, "vl3 bench cpu: %s %s --make-image failed\n", python, script);
            goto out;
        }
        image = img;
    }

    /* the model's sizes, for FLOPs and bytes */
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = model;
    mp.no_backend = 1;
    mp.load_tokenizer = 0;
    vl3_model *m = NULL;
    vl3_error err = {0};
    int r = vl3_model_load(&mp, &m, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 bench cpu: could not load \"%s\": %s\n", model,
                vl3_error_text(&err, r));
        goto out;
    }
    vl3_model_info info;
    vl3_model_get_info(m, &info);
    vl3_model_free(m);
    double llm_params = bench_llm_matrix_params(&info);
    double head_params = (double)info.vocab_rows * info.llm_hidden;
    double vis_params = bench_vision_matrix_params(&info);
    int isa = vl3__cpu_isa();
    double peak = isa == VL3__CPU_ISA_AMX ? vl3__cpu_amx_peak_gflops(threads) * 1e9 : 0;
    /* the floor's read bandwidth: probed before the runs and after each round, the highest (a
     * single probe in a slow moment put decode at 107% of its floor) */
    struct bench_bw bwp = {0};
    bench_bw_probe(&bwp, threads, 1ul << 30);

    double warm_gb = 0, warm_s = 0;
    if (warm_page_cache(model, fresh_cache, &warm_gb, &warm_s) == 0)
        fprintf(stderr, "vl3 bench cpu: page cache: %s %.2f GB of *.safetensors in %.2f s "
                        "(untimed; the load rows are warm loads)\n",
                fresh_cache ? "dropped and read" : "read", warm_gb, warm_s);

    struct bench_input in = {image, video, fps};
    struct phase_times v = {0}, vf = {0}, hf = {0}, cur;
    for (int rep = 0; rep < repeat; rep++) {
        fprintf(stderr, "vl3 bench cpu: round %d of %d: vl3 run (bf16) ...\n", rep + 1, repeat);
        if (run_vl3(self, model, &in, n_gen, th, "bf16", tmp, &cur) < 0) {
            fprintf(stderr, "vl3 bench cpu: vl3 run failed (output in %s)\n", tmp);
            goto out;
        }
        keep_best(&v, &cur);
        if (f32) {
            fprintf(stderr, "vl3 bench cpu: vl3 run (f32) ...\n");
            if (run_vl3(self, model, &in, n_gen, th, "f32", tmp, &cur) < 0)
                fprintf(stderr, "vl3 bench cpu: vl3 run --precision f32 failed\n");
            keep_best(&vf, &cur);
        }
        if (!no_hf) {
            fprintf(stderr, "vl3 bench cpu: transformers (%s) ...\n", python);
            if (run_hf(python, script, model, &in, n_gen, th, tmp, &cur) < 0)
                fprintf(stderr, "vl3 bench cpu: the transformers run failed (output in "
                                "%s/hf.json)\n", tmp);
            keep_best(&hf, &cur);
        }
        bench_bw_probe(&bwp, threads, 1ul << 30);
    }
    double bw = bwp.best;
    double load1, load5, load15;
    FILE *la = fopen("/proc/loadavg", "r");
    if (!la || fscanf(la, "%lf %lf %lf", &load1, &load5, &load15) != 3)
        load1 = load5 = load15 = -1;
    if (la)
        fclose(la);

    printf("vl3 bench cpu: %s, %s %s%s%s, %d prompt tokens, %d new tokens, %d threads, best of "
           "%d\n", model, video ? "video" : "image", video ? video : image,
           video ? " at fps " : "", video ? fps : "", v.n_prompt, n_gen, threads, repeat);
    printf("isa %s; bf16 peak %.0f GFLOP/s%s; read bandwidth %.2f GB/s (%s; the best of %d "
           "probes, the lowest %.2f); load average %.2f\n\n", vl3__cpu_isa_name(isa), peak / 1e9,
           peak > 0 ? " (measured TDPBF16PS)" : " (not measured)", bw / 1e9, bwp.method, bwp.n,
           bwp.lowest / 1e9, load1);
    printf("%-18s %12s", "phase", "vl3 bf16");
    if (vf.ok)
        printf(" %12s", "vl3 f32");
    if (hf.ok)
        printf(" %14s %10s", "transformers", "vl3 gain");
    printf("\n");
    row("load s", v.load, hf.load, vf.load, hf.ok, vf.ok, 0);
    row("preprocess s", v.preprocess, hf.preprocess, vf.preprocess, hf.ok, vf.ok, 0);
    row("vision s", v.vision, hf.vision, vf.vision, hf.ok, vf.ok, 0);
    row("prefill s", v.prefill, hf.prefill, vf.prefill, hf.ok, vf.ok, 0);
    row("vision+prefill s", v.vis_prefill, hf.vis_prefill, vf.vis_prefill, hf.ok, vf.ok, 0);
    row("decode tok/s", v.decode_tok_s, hf.decode_tok_s, vf.decode_tok_s, hf.ok, vf.ok, 1);
    row("whole process s", v.whole, hf.whole, vf.whole, hf.ok, vf.ok, 0);
    if (hf.ok) {
        row("  hf warm vision s", v.vision, hf.vision_warm, vf.vision, hf.ok, vf.ok, 0);
        row("  hf warm vis+pre s", v.vis_prefill, hf.vis_prefill_warm, vf.vis_prefill, hf.ok,
            vf.ok, 0);
        printf("(both sides: the first pass of a new process, preprocessing apart; transformers: "
               "vision = its feature call inside generate, vision+prefill = generate's call to its "
               "first new token, decode = the tokens after it (streamer timestamps), whole = "
               "python import + load + one generate; \"hf warm\" rows: transformers' second "
               "pass after generate (caches and page tables filled) against vl3's first; gain = "
               "transformers time / vl3 time)\n");
    }
    /* distance from the limits */
    double pre_flop = 2 * (llm_params * v.n_prompt + head_params);
    /* a decode step reads every weight and the K and V rows of its context (bf16 pools in bf16
     * mode), here at the average context of the generated tokens */
    double kv_tok = 2.0 * info.llm_layers * info.llm_kv_heads * info.llm_head_dim *
                    (v.n_prompt + n_gen / 2.0) * 2;
    double w_bytes = 2 * (llm_params + head_params), dec_bytes = w_bytes + kv_tok;
    printf("\ndistance from the limits (vl3 bf16):\n");
    if (peak > 0 && v.prefill > 0)
        printf("  prefill  %.0f GFLOP/s of weight products = %.1f%% of the bf16 peak\n",
               pre_flop / v.prefill / 1e9, 100 * pre_flop / v.prefill / peak);
    double vis_flop = 2 * vis_params * v.n_patches;
    if (peak > 0 && v.vision > 0 && v.n_patches > 0)
        printf("  vision   %.0f GFLOP/s of weight products (%.0f patches) = %.1f%% of the bf16 "
               "peak\n", vis_flop / v.vision / 1e9, v.n_patches, 100 * vis_flop / v.vision / peak);
    if (bw > 0 && v.decode_tok_s > 0)
        printf("  decode   %.2f tok/s; floor %.2f tok/s (%.2f GB of bf16 weights + %.3f GB of bf16 "
               "K/V per token at %.2f GB/s) = %.1f%% of the floor\n",
               v.decode_tok_s, bw / dec_bytes, w_bytes / 1e9, kv_tok / 1e9, bw / 1e9,
               100 * v.decode_tok_s * dec_bytes / bw);
    rc = CLI_EXIT_OK;
out:
    /* the run's files (dumps of a clip are ~100 MB) go unless something failed: then they are
     * what explains it (an empty directory goes either way) */
    if (rc == CLI_EXIT_OK)
        remove_tree(tmp);
    else if (rmdir(tmp) < 0)
        fprintf(stderr, "vl3 bench cpu: files kept in %s\n", tmp);
    return rc;
}
