/* main.c: vl3-worker entry point. One worker owns one GPU (or the CPU); it is started by vl3d
 * and talks to it over the framed protocol of common/include/vl3/proto.h on stdin/stdout.
 * main parses the options and configuration, loads the model, and runs the pipeline of worker.h
 * until stdin closes. Logs go to stderr only (stdout carries frames). Exit statuses: 0 stdin
 * closed and every accepted job answered; 1 bad command line or configuration; 70 software error
 * (protocol violation, model that cannot be loaded); 75 temporary failure (device fault).
 * SIGTERM/SIGINT drain: accepted jobs are answered, new ones refused, then exit 0.
 * A worker never outlives its parent (vl3d): the kernel sends it SIGKILL when the parent dies
 * (PR_SET_PDEATHSIG), so a killed daemon's workers do not go on computing answers nobody will
 * read beside the restarted daemon's workers.
 * Sandbox: no new privileges (PR_SET_NO_NEW_PRIVS) and a seccomp filter that makes socket(2) fail
 * with EACCES for every family but AF_UNIX, so a worker (which parses untrusted media) cannot
 * reach the network; vl3d also gives it a scrubbed environment without the daemon's secrets. */
#include <errno.h>
#include <getopt.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vl3/engine.h"
#include "vl3/log.h"
#include "worker.h"
#include "worker_conf.h"

static const char *arg_config = NULL;
static int arg_check_config = 0;
static const char *arg_backend = NULL; /* --backend: overrides the configuration's backend */
static const char *arg_device = NULL;  /* --device: overrides the configuration's device */

static void on_stop_signal(int sig)
{
    (void)sig;
    worker_request_stop();
}

static void help(void)
{
    printf("usage: vl3-worker [options]\n\n"
           "Decodes, samples and prunes video frames and runs VideoLLaMA3 in batches; started by\n"
           "vl3d, speaking the framed protocol of schema/worker-protocol.md on stdin/stdout.\n\n"
           "  -c, --config FILE   configuration file\n"
           "      --check-config  parse and validate the configuration, then exit\n"
           "      --backend NAME  engine backend, overriding the setting \"backend\": auto, cpu,\n"
           "                      cuda or cuda-emu (the CUDA kernels on the host emulator)\n"
           "      --device N      GPU index, overriding \"device\" (vl3d gives each slot one)\n"
           "  -h, --help          show this help\n"
           "      --version       show the version\n\n"
           "Exit status: 0 stdin closed and every job answered, 1 usage or configuration error,\n"
           "70 software error (protocol, model), 75 temporary failure (device fault).\n");
}

/* Die with the parent. The parent may already have died between our fork and this call; then
 * we were reparented and getppid() changed. */
static void die_with_parent(void)
{
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(WORKER_EXIT_TEMPFAIL);
}

#if defined(__x86_64__)
#define SANDBOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_ARCH AUDIT_ARCH_AARCH64
#endif

/* No new privileges; socket(2) other than AF_UNIX fails with EACCES. 0 or -errno. */
static int sandbox(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
#ifdef SANDBOX_ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 system calls (the 0x40000000 bit) are not used by us: refuse them */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(f) / sizeof(f[0])), f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        return -errno;
#endif
    return 0;
}

/* Test hook: VL3_TEST_SOCKET=1 logs what socket(AF_INET) gives inside the sandbox. */
static void test_socket(void)
{
    const char *v = getenv("VL3_TEST_SOCKET");
    if (!v || strcmp(v, "1") != 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int e = errno;
    vl3_log_warning("VL3_TEST_SOCKET: socket(AF_INET) %s", fd >= 0 ? "succeeded" : strerror(e));
    if (fd >= 0)
        close(fd);
}

/* --backend and --device over the configuration. 0 or VL3_E_CONFIG. */
static int apply_args(struct worker_conf *conf, vl3_error *reterr)
{
    if (arg_backend) {
        if (vl3_backend_kind_parse(arg_backend) < 0)
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid backend \"%s\" (--backend)",
                                 arg_backend);
        char *b = strdup(arg_backend);
        if (!b)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        free(conf->backend);
        conf->backend = b;
    }
    if (arg_device) {
        char *end;
        long d = strtol(arg_device, &end, 10);
        if (end == arg_device || *end || d < 0 || d > 64)
            return vl3_error_set(reterr, VL3_E_CONFIG, "invalid device \"%s\" (--device)",
                                 arg_device);
        conf->device = d;
    }
    return 0;
}

int main(int argc, char **argv)
{
    die_with_parent();
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"backend", required_argument, NULL, 'B'},
        {"device", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': arg_config = optarg; break;
        case 'C': arg_check_config = 1; break;
        case 'B': arg_backend = optarg; break;
        case 'D': arg_device = optarg; break;
        case 'h': help(); return 0;
        case 'V': printf("vl3-worker %s (engine %s)\n", VL3_VERSION, vl3_engine_version()); return 0;
        default: return 2;
        }
    }
    struct worker_conf conf;
    vl3_error err = {0};
    int r = vl3_conf_defaults(worker_conf_table, &conf, &err);
    if (r == 0 && arg_config)
        r = vl3_conf_load(worker_conf_table, &conf, arg_config, &err);
    if (r == 0)
        r = apply_args(&conf, &err);
    if (r < 0) {
        vl3_log_err("%s", vl3_error_text(&err, r));
        vl3_conf_free_strings(worker_conf_table, &conf);
        return 1;
    }
    if (arg_check_config) {
        printf("configuration \"%s\" is valid\n", arg_config ? arg_config : "(defaults)");
        vl3_conf_free_strings(worker_conf_table, &conf);
        return 0;
    }
    int level = vl3_log_level_parse(conf.log_level);
    if (level >= 0)
        vl3_log_set_level(level);
    vl3_log_set_ident("vl3-worker");
    if ((r = sandbox()) < 0) {
        vl3_log_err("could not install the sandbox: %s", strerror(-r));
        vl3_conf_free_strings(worker_conf_table, &conf);
        return WORKER_EXIT_SOFTWARE;
    }
    test_socket();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    int status = WORKER_EXIT_SOFTWARE;
    vl3_model *model = NULL;
    struct worker *w = NULL;
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = conf.model;
    mp.device = (int)conf.device;
    mp.n_threads = (int)conf.threads;
    r = vl3_backend_kind_parse(conf.backend);
    if (r < 0 || !conf.model[0]) {
        vl3_log_err(!conf.model[0] ? "no model configured (option \"model\")"
                                   : "invalid backend \"%s\"", conf.backend);
        status = WORKER_EXIT_USAGE;
        goto out;
    }
    mp.backend = (enum vl3_backend_kind)r;
    if (strcmp(conf.precision, "auto") != 0 && strcmp(conf.precision, "bf16") != 0 &&
        strcmp(conf.precision, "f32") != 0) {
        vl3_log_err("invalid precision \"%s\" (auto, bf16 or f32)", conf.precision);
        status = WORKER_EXIT_USAGE;
        goto out;
    }
    /* the CPU backend reads its arithmetic from VL3_PRECISION when it starts */
    if (!getenv("VL3_PRECISION"))
        setenv("VL3_PRECISION", conf.precision, 1);
    if ((r = vl3_model_load(&mp, &model, &err)) < 0) {
        vl3_log_err("could not load model \"%s\": %s", conf.model, vl3_error_text(&err, r));
        status = r == VL3_E_CUDA_FATAL || r == VL3_E_CUDA ? WORKER_EXIT_TEMPFAIL
                                                          : WORKER_EXIT_SOFTWARE;
        goto out;
    }
    if ((r = worker_new(&conf, model, &w, &err)) < 0) {
        vl3_log_err("could not start the worker: %s", vl3_error_text(&err, r));
        goto out;
    }
    status = worker_run(w, STDIN_FILENO, STDOUT_FILENO);
    if (status == WORKER_EXIT_OK) {
        worker_free(w);
        vl3_model_free(model);
        vl3_conf_free_strings(worker_conf_table, &conf);
    }
    /* other statuses: threads may still be inside the engine; exiting releases everything */
    return status;
out:
    worker_free(w);
    vl3_model_free(model);
    vl3_conf_free_strings(worker_conf_table, &conf);
    return status;
}
