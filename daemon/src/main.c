/* main.c: vl3d entry point: options, configuration, and (later) the libuv loop that consumes
 * jobs from Kafka, hands them to vl3-worker processes and writes results to PostgreSQL. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    struct daemon_conf conf;
    vl3_error err = {0};
    int r = vl3_conf_defaults(daemon_conf_table, &conf, &err);
    if (r == 0)
        r = vl3_conf_load(daemon_conf_table, &conf, arg_config, &err);
    if (r < 0) {
        vl3_log_err("%s", vl3_error_text(&err, r));
        vl3_conf_free_strings(daemon_conf_table, &conf);
        return 1;
    }
    if (arg_check_config) {
        printf("configuration \"%s\" is valid\n", arg_config);
        vl3_conf_free_strings(daemon_conf_table, &conf);
        return 0;
    }
    vl3_log_err("the job loop is not implemented yet in this version");
    vl3_conf_free_strings(daemon_conf_table, &conf);
    return 1;
}
