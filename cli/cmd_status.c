/* cmd_status.c: `vl3 status`: job counts by status, throughput over the last 10 minutes and the
 * recent failures, read from PostgreSQL (store_status_load(): the same SQL as the job_progress and
 * failed_jobs views). --watch repeats every N seconds and keeps going when the database is down. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "migrate.h"
#include "store.h"
#include "vl3/conf.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 status [--conninfo STR | -c vl3d.conf] [--watch SECONDS]\n\n"
               "Shows job counts by status, throughput (jobs/min over the last 10 minutes)\n"
               "and the most recent failures, from PostgreSQL.\n\n"
               "  --conninfo STR     libpq connection string\n"
               "  -c, --config FILE  take pg.conninfo from this vl3d configuration file\n"
               "                     (default: /etc/vl3/vl3d.conf if it exists,\n"
               "                     else \"dbname=vl3\")\n"
               "  -w, --watch SECS   refresh every SECS seconds until interrupted\n"
               "  -h, --help         show this help\n");
}

static void print_status(const store_status *st)
{
    int64_t total = 0;
    for (int i = 0; i < 5; i++)
        total += st->count[i];
    printf("jobs:       %lld total:", (long long)total);
    for (int i = 0; i < 5; i++)
        printf(" %lld %s%s", (long long)st->count[i], store_status_name(i), i < 4 ? "," : "\n");
    printf("throughput: %.2f jobs/min over the last 10 min (%lld done)\n", st->jobs_per_min,
           (long long)st->done_last_10m);
    printf("results:    %lld answers about %lld videos\n", (long long)st->results,
           (long long)st->videos);
    if (st->nfailures == 0) {
        printf("recent failures: none\n");
        return;
    }
    printf("recent failures:\n");
    for (int i = 0; i < st->nfailures; i++) {
        const store_failure *f = &st->failures[i];
        printf("  %s  %s  attempts=%d  %s\n    %s\n", f->finished_at, f->job_id, f->attempts,
               f->path[0] ? f->path : "-", f->last_error);
    }
}

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"conninfo", required_argument, NULL, 'C'},
        {"config", required_argument, NULL, 'c'},
        {"watch", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *arg_conninfo = NULL, *arg_config = NULL;
    int64_t watch = 0;
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'C': arg_conninfo = optarg; break;
        case 'c': arg_config = optarg; break;
        case 'w':
            if (vl3_parse_int64(optarg, &watch) < 0 || watch < 1 || watch > 86400) {
                fprintf(stderr, "vl3 status: invalid --watch \"%s\" (seconds, 1..86400)\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vl3 status: unexpected argument \"%s\"\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (arg_conninfo && arg_config) {
        fprintf(stderr, "vl3 status: --conninfo and --config cannot be used together\n");
        return CLI_EXIT_USAGE;
    }
    vl3_error err = {0};
    char *conninfo = NULL;
    int r = migrate_conninfo_resolve(arg_conninfo, arg_config, &conninfo, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 status: %s\n", vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    store_status *st = malloc(sizeof(*st));
    if (!st) {
        free(conninfo);
        fprintf(stderr, "vl3 status: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    int ret;
    for (;;) {
        memset(&err, 0, sizeof(err));
        r = store_status_load(conninfo, st, &err);
        if (watch) {
            char when[64];
            time_t now = time(NULL);
            struct tm tm;
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
            printf("--- %s (every %llds)\n", when, (long long)watch);
        }
        if (r < 0)
            fprintf(stderr, "vl3 status: %s\n", vl3_error_text(&err, r));
        else
            print_status(st);
        ret = r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
        if (!watch)
            break;
        fflush(stdout);
        sleep((unsigned)watch);
    }
    free(st);
    free(conninfo);
    return ret;
}
