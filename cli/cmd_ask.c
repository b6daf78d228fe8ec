/* cmd_ask.c: `vl3 ask [-c vl3d.conf] [options] FILE "question"`: enqueue one question about one
 * file (a qa job with its own id, highest priority), wait until vl3d has stored its answers, and
 * print them, one per window, with whether the token cache answered and the time taken.
 *
 * The job goes to the jobs topic like `vl3 enqueue`'s (brokers and topic from the config); the
 * answers are read from PostgreSQL (jobs.status, results, results.cache_hit; conninfo from
 * --conninfo or the config). A first question about a file decodes it and fills the token cache
 * (docs/token-cache.md); later questions with the same sampling reuse its windows. Exit status: 0
 * answered, 1 the job failed or the wait timed out, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "daemon_conf.h"
#include "kafka.h"
#include "migrate.h"
#include "vl3/proto.h"
#include "vl3/sampling_defaults.h"
#include "vl3/util.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 ask [-c vl3d.conf] [--conninfo STR] [--task qa|chart_qa] [--fps F]\n"
               "               [--max-frames N] [--window SECONDS] [--mode fast|exact]\n"
               "               [--cache use|refresh|off] [--max-new-tokens N] [--timeout S]\n"
               "               FILE \"question\"\n\n"
               "Ask one question about FILE through vl3d and its workers; print the answer of\n"
               "each window, whether the token cache answered, and the time taken.\n"
               "  --cache MODE   use (default): reuse cached visual tokens; refresh; off\n"
               "  --timeout S    give up after S seconds (default 600)\n"
               "  --fps, --max-frames, --window, --mode: sampling as in `vl3 enqueue`\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void hms(char *buf, size_t n, double s)
{
    long t = (long)(s < 0 ? 0 : s);
    snprintf(buf, n, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* Wait for job id to end; print its answers. Returns CLI_EXIT_OK or CLI_EXIT_FAIL. */
static int wait_answers(const char *conninfo, const char *id, double timeout_s, double t0)
{
    PGconn *pq = PQconnectdb(conninfo);
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "vl3 ask: could not connect to the database: %s", PQerrorMessage(pq));
        PQfinish(pq);
        return CLI_EXIT_FAIL;
    }
    const char *p[1] = {id};
    int rc = CLI_EXIT_FAIL;
    for (;;) {
        PGresult *res = PQexecParams(pq, "SELECT status, coalesce(last_error, '') FROM jobs "
                                         "WHERE job_id = $1", 1, NULL, p, NULL, NULL, 0);
        /* 42P01 undefined_table: vl3d has not migrated this database yet (it was started
         * moments ago); the job is in Kafka, so keep waiting like for a job not seen yet */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int no_schema = PQresultStatus(res) != PGRES_TUPLES_OK && state &&
                        strcmp(state, "42P01") == 0;
        if (PQresultStatus(res) != PGRES_TUPLES_OK && !no_schema) {
            fprintf(stderr, "vl3 ask: %s", PQresultErrorMessage(res));
            PQclear(res);
            goto out;
        }
        char st[32] = "";
        if (!no_schema && PQntuples(res))
            snprintf(st, sizeof(st), "%s", PQgetvalue(res, 0, 0));
        if (strcmp(st, "failed") == 0) {
            fprintf(stderr, "vl3 ask: the job failed: %s\n", PQgetvalue(res, 0, 1));
            PQclear(res);
            goto out;
        }
        PQclear(res);
        if (strcmp(st, "done") == 0)
            break;
        if (now_s() - t0 > timeout_s) {
            fprintf(stderr, "vl3 ask: no answer after %.0f s (job %s, status \"%s\")\n",
                    timeout_s, id,
                    no_schema ? "no vl3d tables in the database: is vl3d running?"
                    : *st     ? st
                              : "not seen yet");
            goto out;
        }
        usleep(100000);
    }
    double took = now_s() - t0;
    PGresult *res = PQexecParams(pq,
                                 "SELECT start_s, end_s, answer, coalesce(cache_hit::text, '') "
                                 "FROM results WHERE job_id = $1 ORDER BY window_idx, task",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "vl3 ask: %s", PQresultErrorMessage(res));
        PQclear(res);
        goto out;
    }
    int n = PQntuples(res), hits = 0, known = 0;
    for (int i = 0; i < n; i++) {
        char a[16], b[16];
        hms(a, sizeof(a), strtod(PQgetvalue(res, i, 0), NULL));
        hms(b, sizeof(b), strtod(PQgetvalue(res, i, 1), NULL) + 0.999);
        printf("[%s-%s] %s\n", a, b, PQgetvalue(res, i, 2));
        const char *c = PQgetvalue(res, i, 3);
        known += *c != '\0';
        hits += strcmp(c, "true") == 0;
    }
    PQclear(res);
    if (known == 0)
        printf("cache: off, %.2f s, job %s\n", took, id);
    else
        printf("cache: %s (%d of %d windows), %.2f s, job %s\n",
               hits == n ? "hit" : hits ? "partial" : "miss", hits, n, took, id);
    rc = CLI_EXIT_OK;
out:
    PQfinish(pq);
    return rc;
}

int cmd_ask(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"conninfo", required_argument, NULL, 'C'},
        {"task", required_argument, NULL, 't'},     {"fps", required_argument, NULL, 'F'},
        {"max-frames", required_argument, NULL, 'M'}, {"window", required_argument, NULL, 'W'},
        {"mode", required_argument, NULL, 'm'},     {"cache", required_argument, NULL, 'K'},
        {"max-new-tokens", required_argument, NULL, 'N'},
        {"timeout", required_argument, NULL, 'T'},  {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *config = NULL, *conninfo_arg = NULL, *task = "qa", *mode = "fast",
               *cache = "use";
    double fps = VL3_SAMPLING_FPS_DEFAULT, max_frames = VL3_SAMPLING_MAX_FRAMES_DEFAULT;
    double window = -1, max_new = -1, timeout = 600;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'c': config = optarg; break;
        case 'C': conninfo_arg = optarg; break;
        case 't': task = optarg; break;
        case 'm': mode = optarg; break;
        case 'K': cache = optarg; break;
        case 'F': fps = strtod(optarg, &end); break;
        case 'M': max_frames = strtod(optarg, &end); break;
        case 'W': window = strtod(optarg, &end); break;
        case 'N': max_new = strtod(optarg, &end); break;
        case 'T': timeout = strtod(optarg, &end); break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
        if (end && *end) {
            fprintf(stderr, "vl3 ask: invalid number \"%s\"\n", optarg);
            return CLI_EXIT_USAGE;
        }
    }
    if (argc - optind != 2 || !(fps > 0) || max_frames < 1 || !(timeout > 0) ||
        vl3_sampling_mode_parse(mode) < 0 || vl3_cache_mode_parse(cache) < 0 ||
        (strcmp(task, "qa") != 0 && strcmp(task, "chart_qa") != 0)) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *file = argv[optind], *question = argv[optind + 1];
    char abs[PATH_MAX];
    struct stat st;
    if (!realpath(file, abs) || stat(abs, &st) < 0) {
        fprintf(stderr, "vl3 ask: cannot access \"%s\": %s\n", file, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    struct daemon_conf conf;
    vl3_error err = {0};
    if (daemon_conf_load(&conf, config, &err) < 0) {
        fprintf(stderr, "vl3 ask: %s\n", err.msg);
        return CLI_EXIT_FAIL;
    }
    char *conninfo = NULL;
    int r = migrate_conninfo_resolve(conninfo_arg, config, &conninfo, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 ask: %s\n", vl3_error_text(&err, r));
        daemon_conf_free(&conf);
        return CLI_EXIT_FAIL;
    }
    int rc = CLI_EXIT_FAIL;
    struct kafka_producer *prod = NULL;
    char id[96];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(id, sizeof(id), "ask:%lld.%09ld-%ld", (long long)ts.tv_sec, ts.tv_nsec,
             (long)getpid());
    json_t *j = json_pack("{s:s, s:s, s:[{s:s, s:s}], s:{s:f, s:I, s:s}, s:s, s:i}", "id", id,
                          "input", abs, "tasks", "kind", task, "question", question, "sampling",
                          "fps", fps, "max_frames", (json_int_t)max_frames, "mode", mode,
                          "cache", cache, "priority", 9);
    if (j && window >= 0)
        json_object_set_new(json_object_get(j, "sampling"), "window", json_real(window));
    if (j && max_new >= 0)
        json_object_set_new(j, "limits", json_pack("{s:I}", "max_new_tokens",
                                                   (json_int_t)max_new));
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        fprintf(stderr, "vl3 ask: out of memory\n");
        goto out;
    }
    double t0 = now_s();
    if (kafka_producer_new(conf.kafka_brokers, (const char *const *)conf.kafka_props, &prod,
                           &err) < 0 ||
        kafka_producer_send(prod, conf.kafka_topic, abs, strlen(abs), s, strlen(s), &err) < 0 ||
        kafka_producer_flush(prod, 30000, &err) != 0) {
        fprintf(stderr, "vl3 ask: could not enqueue the question: %s (brokers \"%s\")\n", err.msg,
                conf.kafka_brokers);
        goto out;
    }
    rc = wait_answers(conninfo, id, timeout, t0);
out:
    free(s);
    kafka_producer_free(prod);
    free(conninfo);
    daemon_conf_free(&conf);
    return rc;
}
