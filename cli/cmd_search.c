/* cmd_search.c: `vl3 search WORDS`: full-text search over the stored answers, ranked, through the
 * search_hits() function of schema/0003_archive.sql (the same query works from psql). Each hit
 * shows the file, the time range (HH:MM:SS-HH:MM:SS), the task and a snippet with the matched
 * words marked [[like this]]; --json prints one JSON array for scripts. */
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "migrate.h"
#include "vl3/conf.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 search [options] WORDS...\n\n"
               "Full-text search over the answers in PostgreSQL, best match first. WORDS use\n"
               "web-search syntax: \"red car\" (phrase), -night (exclude), a OR b.\n\n"
               "  -t, --task T        only answers of task T (caption, ocr, chart_qa, qa)\n"
               "  -p, --path GLOB     only files whose path matches GLOB (* and ?)\n"
               "  -n, --limit N       at most N hits (default 20)\n"
               "  -j, --json          print a JSON array of hits\n"
               "      --conninfo STR  libpq connection string\n"
               "  -c, --config FILE   take pg.conninfo from this vl3d configuration file\n"
               "                      (default: /etc/vl3/vl3d.conf if it exists,\n"
               "                      else \"dbname=vl3\")\n"
               "  -h, --help          show this help\n");
}

/* GLOB (* ?) -> LIKE pattern with \ escapes; owned string or NULL. */
static char *glob_to_like(const char *g)
{
    char *out = malloc(2 * strlen(g) + 1), *o = out;
    if (!out)
        return NULL;
    for (; *g; g++) {
        if (*g == '*')
            *o++ = '%';
        else if (*g == '?')
            *o++ = '_';
        else {
            if (*g == '%' || *g == '_' || *g == '\\')
                *o++ = '\\';
            *o++ = *g;
        }
    }
    *o = 0;
    return out;
}

static const char sql_search[] =
    "SELECT path, time_range, task, question, start_s, end_s, rank, snippet, answer, job_id "
    "  FROM search_hits($1) "
    " WHERE ($2::text IS NULL OR task = $2) AND ($3::text IS NULL OR path LIKE $3) "
    " LIMIT $4::integer";

int cmd_search(int argc, char **argv)
{
    static const struct option opts[] = {
        {"task", required_argument, NULL, 't'},     {"path", required_argument, NULL, 'p'},
        {"limit", required_argument, NULL, 'n'},    {"json", no_argument, NULL, 'j'},
        {"conninfo", required_argument, NULL, 'C'}, {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},           {0},
    };
    const char *task = NULL, *glob = NULL, *arg_conninfo = NULL, *arg_config = NULL;
    int64_t limit = 20;
    int json = 0, c, rc = CLI_EXIT_FAIL;
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:p:n:jc:h", opts, NULL)) != -1) {
        switch (c) {
        case 't': task = optarg; break;
        case 'p': glob = optarg; break;
        case 'n':
            if (vl3_parse_int64(optarg, &limit) < 0 || limit < 1 || limit > 1000000) {
                fprintf(stderr, "vl3 search: invalid --limit \"%s\" (1..1000000)\n", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'j': json = 1; break;
        case 'C': arg_conninfo = optarg; break;
        case 'c': arg_config = optarg; break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (arg_conninfo && arg_config) {
        fprintf(stderr, "vl3 search: --conninfo and --config cannot be used together\n");
        return CLI_EXIT_USAGE;
    }
    char words[4096] = "";
    size_t wl = 0;
    for (int i = optind; i < argc; i++) {
        int n = snprintf(words + wl, sizeof(words) - wl, "%s%s", wl ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof(words) - wl) {
            fprintf(stderr, "vl3 search: the query is too long\n");
            return CLI_EXIT_USAGE;
        }
        wl += (size_t)n;
    }
    vl3_error err = {0};
    char *conninfo = NULL, *like = NULL;
    PGconn *pq = NULL;
    PGresult *res = NULL;
    json_t *arr = NULL;
    int r = migrate_conninfo_resolve(arg_conninfo, arg_config, &conninfo, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 search: %s\n", vl3_error_text(&err, r));
        goto out;
    }
    if (glob && !(like = glob_to_like(glob))) {
        fprintf(stderr, "vl3 search: out of memory\n");
        goto out;
    }
    pq = PQconnectdb(conninfo);
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "vl3 search: could not connect to PostgreSQL: %s", PQerrorMessage(pq));
        goto out;
    }
    char lim[32];
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    const char *p[4] = {words, task, like, lim};
    res = PQexecParams(pq, sql_search, 4, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "vl3 search: query failed: %s", PQerrorMessage(pq));
        goto out;
    }
    int n = PQntuples(res);
    if (json) {
        arr = json_array();
        for (int i = 0; arr && i < n; i++)
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:s, s:s, s:s}", "path",
                               PQgetvalue(res, i, 0), "time_range", PQgetvalue(res, i, 1),
                               "task", PQgetvalue(res, i, 2), "question", PQgetvalue(res, i, 3),
                               "start_s", atof(PQgetvalue(res, i, 4)), "end_s",
                               atof(PQgetvalue(res, i, 5)), "rank", atof(PQgetvalue(res, i, 6)),
                               "snippet", PQgetvalue(res, i, 7), "answer", PQgetvalue(res, i, 8),
                               "job_id", PQgetvalue(res, i, 9)));
        if (!arr || json_dumpf(arr, stdout, JSON_INDENT(2)) < 0) {
            fprintf(stderr, "vl3 search: could not write JSON\n");
            goto out;
        }
        printf("\n");
    } else {
        for (int i = 0; i < n; i++) {
            const char *q = PQgetvalue(res, i, 3);
            printf("%s  %s  %s%s%s\n    %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), *q ? ": " : "", q, PQgetvalue(res, i, 7));
        }
        if (n == 0)
            fprintf(stderr, "vl3 search: no answer matches \"%s\"\n", words);
    }
    rc = CLI_EXIT_OK;
out:
    json_decref(arr);
    PQclear(res);
    PQfinish(pq);
    free(like);
    free(conninfo);
    return rc;
}
