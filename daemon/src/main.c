/* main.c: vl3d entry point: options, configuration, the libuv loop. Everything else lives in
 * struct vl3d (daemon.c). Exit status: 0 after a graceful stop, 1 on a fatal error (bad
 * configuration, cannot start), 2 on usage errors, 130 after a second SIGINT. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "daemon.h"
#include "daemon_conf.h"
#include "vl3/log.h"

static const char *arg_config = "/etc/vl3/vl3d.conf";
static int arg_check_config = 0;

static void help(void)
{
    printf("usage: vl3d [options]\n\n"
           "Consumes video jobs from Kafka, runs them on vl3-worker processes and stores the\n"
           "results in PostgreSQL.\n\n"
           "  -c, --config FILE   configuration file (default /etc/vl3/vl3d.conf)\n"
           "      --check-config  parse and validate the configuration, then exit\n"
           "  -h, --help          show this help\n"
           "      --version       show the version\n");
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': arg_config = optarg; break;
        case 'C': arg_check_config = 1; break;
        case 'h': help(); return 0;
        case 'V': printf("vl3d %s\n", VL3_VERSION); return 0;
        default: return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vl3d: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    struct daemon_conf conf;
    vl3_error err = {0};
    int r = daemon_conf_load(&conf, arg_config, &err);
    if (r == 0 && vl3_log_level_parse(conf.log_level) < 0) {
        r = vl3_error_set(&err, VL3_E_CONFIG, "%s: invalid \"log.level\": \"%s\"", arg_config,
                          conf.log_level);
        daemon_conf_free(&conf);
    }
    if (r < 0) {
        vl3_log_err("%s", vl3_error_text(&err, r));
        return 1;
    }
    if (arg_check_config) {
        printf("configuration \"%s\" is valid\n", arg_config);
        daemon_conf_free(&conf);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN); /* worker pipes: EPIPE comes back as a write error instead */
    uv_loop_t loop;
    if ((r = uv_loop_init(&loop)) < 0) {
        vl3_log_err("could not create the event loop: %s", uv_strerror(r));
        daemon_conf_free(&conf);
        return 1;
    }
    struct vl3d *d = NULL;
    r = vl3d_start(&loop, &conf, arg_config, &d, &err);
    if (r < 0)
        vl3_log_err("cannot start: %s", vl3_error_text(&err, r));
    if (d)
        uv_run(&loop, UV_RUN_DEFAULT);
    int code = d ? vl3d_finish(d) : 1;
    if (code == 130) /* second SIGINT: no cleanup */
        return code;
    int lc = uv_loop_close(&loop);
    if (lc != 0) {
        vl3_log_err("event loop not empty at exit: %s, this is a bug", uv_strerror(lc));
        uv_walk(&loop, walk_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        (void)uv_loop_close(&loop);
        return code ? code : 1;
    }
    return r < 0 ? 1 : code;
}
