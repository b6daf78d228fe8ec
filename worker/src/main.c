/* main.c: vl3-worker entry point. One worker owns one GPU (or the CPU); it is started by vl3d
 * and talks to it over the framed protocol of schema/worker-protocol.md on stdin/stdout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "vl3/engine.h"
#include "vl3/log.h"
#include "worker_conf.h"

static const char *arg_config = NULL;
static int arg_check_config = 0;

static void help(void)
{
    printf("usage: vl3-worker [options]\n\n"
           "Decodes, samples and prunes video frames and runs VideoLLaMA3 in batches; started by\n"
           "vl3d, speaking the framed protocol of schema/worker-protocol.md on stdin/stdout.\n\n"
           "  -c, --config FILE   configuration file\n"
           "      --check-config  parse and validate the configuration, then exit\n"
           "  -h, --help          show this help\n"
           "      --version       show the version\n");
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
        case 'V': printf("vl3-worker %s (engine %s)\n", VL3_VERSION, vl3_engine_version()); return 0;
        default: return 2;
        }
    }
    struct worker_conf conf;
    vl3_error err = {0};
    int r = vl3_conf_defaults(worker_conf_table, &conf, &err);
    if (r == 0 && arg_config)
        r = vl3_conf_load(worker_conf_table, &conf, arg_config, &err);
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
    vl3_log_err("the worker protocol loop is not implemented yet in this version");
    vl3_conf_free_strings(worker_conf_table, &conf);
    return 1;
}
