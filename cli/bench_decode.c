/* bench_decode.c: `vl3 bench decode FILE [--fps F] [--threads N] [--repeat R]`.
 *
 * Compares our sampler (exact and fast modes, worker/src/sample.c) with the baseline a user
 * would run, `ffmpeg -i FILE -vf fps=F -f rawvideo -pix_fmt rgb24 -y /dev/null`, on the same file
 * and machine. The three runs are interleaved and repeated (the machine may be shared), and the
 * table shows the median wall time, frames produced, frames per second and the speed-up over the
 * CLI. The bound to beat is the CLI's: it decodes every frame and converts the sampled ones. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "media.h"
#include "sample.h"
#include "vl3/util.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 bench decode FILE [--fps F] [--threads N] [--repeat R]\n\n"
               "Decode and sample FILE at F frames per second (default 1) with our exact and\n"
               "fast modes and with the ffmpeg CLI, R times each (default 3), interleaved.\n"
               "  --threads N   decoder threads for our modes (default: one per CPU)\n\n"
               "The reference clip (10 min, 720p H.264, B-frames, 250-frame GOP) is made by\n"
               "`tools/gen_media.sh --long` into $VL3_MEDIA_CACHE or build/media-cache.\n");
}

/* F as a rational: integers exactly, otherwise in thousandths. */
static int parse_fps(const char *s, int *num, int *den)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v > 0) || v > 1000)
        return -EINVAL;
    if (v == floor(v)) {
        *num = (int)v;
        *den = 1;
    } else {
        *num = (int)llround(v * 1000);
        *den = 1000;
    }
    return 0;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
}

static int run_cli(const char *file, const char *fps, double *ret_s, double *ret_cpu)
{
    char vf[64];
    snprintf(vf, sizeof(vf), "fps=%s", fps);
    double t0 = vl3_time_s();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        execlp("ffmpeg", "ffmpeg", "-nostdin", "-v", "error", "-i", file, "-vf", vf, "-f",
               "rawvideo", "-pix_fmt", "rgb24", "-y", "/dev/null", (char *)NULL);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0)
        return -errno;
    *ret_s = vl3_time_s() - t0;
    *ret_cpu = tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int run_ours(const char *file, int fn, int fd, int threads, enum sample_mode mode,
                    double *ret_s, double *ret_cpu, size_t *ret_frames, int64_t *ret_decoded)
{
    vl3_error err = {0};
    struct media_policy pol;
    media_policy_default(&pol);
    pol.threads = threads;
    pol.decode_timeout_ms = 0;
    struct sample_params p;
    sample_params_default(&p);
    p.fps_num = fn;
    p.fps_den = fd;
    p.max_frames = 0;
    p.mode = mode;
    media_input *m = NULL;
    struct sample_result *res = NULL;
    double t0 = vl3_time_s(), c0 = self_cpu_s();
    int f = open(file, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        fprintf(stderr, "vl3 bench decode: could not open \"%s\": %s\n", file, strerror(errno));
        return -errno;
    }
    int r = media_open_fd(f, file, &pol, &m, &err);
    if (r == 0)
        r = sample_video(m, &p, &res, &err);
    *ret_s = vl3_time_s() - t0;
    *ret_cpu = self_cpu_s() - c0;
    if (r < 0) {
        fprintf(stderr, "vl3 bench decode: %s\n", vl3_error_text(&err, r));
    } else {
        *ret_frames = res->n;
        *ret_decoded = res->frames_decoded;
    }
    sample_result_free(res);
    media_close(m);
    return r;
}

int bench_decode(int argc, char **argv)
{
    static const struct option opts[] = {{"fps", required_argument, NULL, 'f'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"repeat", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *fps = "1";
    int threads = 0, repeat = 3, c, fn = 1, fd = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:t:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            fps = optarg;
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'r':
            repeat = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || threads < 0 || repeat < 1 || repeat > 50 ||
        parse_fps(fps, &fn, &fd) < 0) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *file = argv[optind];

    double t_cli[50], t_ex[50], t_fa[50], c_cli[50], c_ex[50], c_fa[50];
    size_t n_ex = 0, n_fa = 0;
    int64_t d_ex = 0, d_fa = 0;
    for (int i = 0; i < repeat; i++) {
        if (run_cli(file, fps, &t_cli[i], &c_cli[i]) < 0) {
            fprintf(stderr, "vl3 bench decode: the ffmpeg CLI failed on \"%s\"\n", file);
            return CLI_EXIT_FAIL;
        }
        if (run_ours(file, fn, fd, threads, SAMPLE_MODE_EXACT, &t_ex[i], &c_ex[i], &n_ex,
                     &d_ex) < 0 ||
            run_ours(file, fn, fd, threads, SAMPLE_MODE_FAST, &t_fa[i], &c_fa[i], &n_fa,
                     &d_fa) < 0)
            return CLI_EXIT_FAIL;
        fprintf(stderr, "run %d: wall (cpu) cli %.2f (%.2f) s, exact %.2f (%.2f) s, "
                        "fast %.2f (%.2f) s\n",
                i + 1, t_cli[i], c_cli[i], t_ex[i], c_ex[i], t_fa[i], c_fa[i]);
    }
    double mc = bench_median(t_cli, repeat), me = bench_median(t_ex, repeat);
    double mf = bench_median(t_fa, repeat), cc = bench_median(c_cli, repeat);
    double ce = bench_median(c_ex, repeat), cf = bench_median(c_fa, repeat);
    printf("decode + sample at %s fps: %s (%d runs each, interleaved; medians; %d CPUs)\n", fps,
           file, repeat, vl3_cpu_count());
    printf("%-12s %8s %8s %8s %10s %10s %9s %9s\n", "method", "wall s", "cpu s", "frames",
           "frames/s", "decoded", "wall x", "cpu x");
    printf("%-12s %8.2f %8.2f %8s %10s %10s %9.2f %9.2f\n", "ffmpeg CLI", mc, cc, "-", "-",
           "all", 1.0, 1.0);
    printf("%-12s %8.2f %8.2f %8zu %10.1f %10lld %9.2f %9.2f\n", "vl3 exact", me, ce, n_ex,
           (double)n_ex / me, (long long)d_ex, mc / me, cc / ce);
    printf("%-12s %8.2f %8.2f %8zu %10.1f %10lld %9.2f %9.2f\n", "vl3 fast", mf, cf, n_fa,
           (double)n_fa / mf, (long long)d_fa, mc / mf, cc / cf);
    return CLI_EXIT_OK;
}
