/* cmd_status.c: `vl3 status`: job counts by status, throughput over the last 10 minutes and the
 * recent failures, read from PostgreSQL (store_status_load(): the same SQL as the job_progress and
 * failed_jobs views), then per enqueue batch (the batch_progress view of 0003_archive.sql): done /
 * failed / pending, rate and ETA, the slowest done files and the failed ones. --watch repeats
 * every N seconds and keeps going when the database is down. */
#include <getopt.h>
#include <libpq-fe.h>
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
               "and the most recent failures, from PostgreSQL; then per enqueue batch:\n"
               "done / failed / pending, rate, ETA, slowest and failed files.\n\n"
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

static const char sql_batches[] =
    "SELECT batch, jobs_total, done, failed, pending, COALESCE(round(jobs_per_min, 2), 0), "
    "       to_char(first_enqueued, 'YYYY-MM-DD HH24:MI:SS') "
    "  FROM batch_progress ORDER BY first_enqueued DESC LIMIT 10";

/* the 3 slowest done and up to 5 failed jobs of batch $1 */
static const char sql_batch_files[] =
    "(SELECT 'slowest', COALESCE(path, job_id), "
    "        round(extract(epoch FROM finished_at - started_at)::numeric, 1)::text "
    "   FROM jobs WHERE batch = $1 AND status = 'done' AND started_at IS NOT NULL "
    "  ORDER BY finished_at - started_at DESC LIMIT 3) "
    "UNION ALL "
    "(SELECT 'failed', COALESCE(path, job_id), COALESCE(last_error, '') "
    "   FROM jobs WHERE batch = $1 AND status = 'failed' ORDER BY finished_at DESC LIMIT 5)";

/* Per-batch progress; prints nothing when the database has no batches (or no 0003 yet). */
static int print_batches(const char *conninfo)
{
    PGconn *pq = PQconnectdb(conninfo);
    PGresult *res = NULL;
    int r = 0;
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "vl3 status: could not connect to PostgreSQL: %s", PQerrorMessage(pq));
        r = -1;
        goto out;
    }
    res = PQexec(pq, sql_batches);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "42P01") == 0)
        goto out; /* a database before 0003_archive.sql: no batches to show */
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "vl3 status: could not read batch_progress: %s", PQerrorMessage(pq));
        r = -1;
        goto out;
    }
    if (PQntuples(res) > 0)
        printf("batches (newest first):\n");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *batch = PQgetvalue(res, i, 0);
        long long pending = atoll(PQgetvalue(res, i, 4));
        double rate = atof(PQgetvalue(res, i, 5));
        printf("  %s  %s total, %s done, %s failed, %lld pending, %.2f jobs/min", batch,
               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), pending,
               rate);
        if (pending > 0 && rate > 0)
            printf(", ETA %.0f min\n", pending / rate);
        else
            printf("%s\n", pending > 0 ? ", ETA unknown" : "");
        const char *p[1] = {batch};
        PGresult *f = PQexecParams(pq, sql_batch_files, 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(f) == PGRES_TUPLES_OK)
            for (int k = 0; k < PQntuples(f); k++)
                printf("      %-7s %s%s%s%s\n", PQgetvalue(f, k, 0), PQgetvalue(f, k, 1),
                       strcmp(PQgetvalue(f, k, 0), "slowest") == 0 ? "  " : "\n        ",
                       PQgetvalue(f, k, 2),
                       strcmp(PQgetvalue(f, k, 0), "slowest") == 0 ? " s" : "");
        PQclear(f);
    }
out:
    PQclear(res);
    PQfinish(pq);
    return r;
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
        if (r >= 0 && print_batches(conninfo) < 0)
            r = -1;
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
