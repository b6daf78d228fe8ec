/* cmd_enqueue.c: `vl3 enqueue FILE|DIR...`: produce one job message per video or image file to
 * the jobs topic (docs/jobs.md). Directories are scanned (recursively with --recursive) for
 * known video/image extensions; files named explicitly are taken whatever their extension.
 * Messages are keyed by the absolute path (one file always lands in the same partition).
 * Each job carries a deterministic "id": "f:" + XXH3-128 of the file version (absolute path,
 * size, mtime) and the request (tasks, sampling, limits), so enqueueing the same tree again is a
 * no-op for files already done (the daemon never redoes a done id) and picks up new or changed
 * files; with a database (--config / --conninfo) ids already done are not even sent (when it
 * cannot be reached, everything is sent and vl3d skips the done ids). --force
 * adds a nonce to the id. Every run has a batch id, printed at start and put in each job.
 * The brokers are probed first so an unreachable cluster gives one clear error; the command
 * then waits for every delivery report and exits 1 if any failed. Progress (scanned, enqueued,
 * skipped, rate, ETA) is drawn on one line of stderr when it is a terminal. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"
#include "daemon_conf.h"
#include "kafka.h"
#include "migrate.h"
#include "vl3/conf.h"
#include "vl3/proto.h"
#include "vl3/sampling_defaults.h"

static const char *const video_ext[] = {"mp4", "mkv", "mov", "avi", "webm", "m4v", "mpg", "mpeg",
                                        "ts",  "wmv", "flv", "3gp", "mxf", NULL};
static const char *const image_ext[] = {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff",
                                        NULL};

struct paths {
    char **v;
    size_t n, cap;
};

static int media_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (int i = 0; video_ext[i]; i++)
        if (strcasecmp(dot + 1, video_ext[i]) == 0)
            return 1;
    for (int i = 0; image_ext[i]; i++)
        if (strcasecmp(dot + 1, image_ext[i]) == 0)
            return 1;
    return 0;
}

static int paths_add(struct paths *p, const char *s)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **nv = realloc(p->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        p->v = nv;
        p->cap = cap;
    }
    if (!(p->v[p->n] = strdup(s)))
        return -ENOMEM;
    p->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* scan dir (absolute); recurse into subdirectories when recursive; symlinks are not followed */
static int scan_dir(const char *dir, int recursive, struct paths *out)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "vl3 enqueue: could not open directory \"%s\": %s\n", dir,
                strerror(errno));
        return -errno;
    }
    struct paths local = {0};
    struct dirent *e;
    int r = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* ., .., hidden files */
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
            continue;
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (recursive && (r = scan_dir(path, 1, out)) == -ENOMEM)
                break;
            r = 0;
        } else if (S_ISREG(st.st_mode) && media_ext(e->d_name)) {
            if ((r = paths_add(&local, path)) < 0)
                break;
        }
    }
    closedir(d);
    qsort(local.v, local.n, sizeof(*local.v), cmp_str); /* deterministic order */
    for (size_t i = 0; i < local.n; i++) {
        if (r == 0)
            r = paths_add(out, local.v[i]);
        free(local.v[i]);
    }
    free(local.v);
    return r;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vl3 enqueue [options] FILE|DIR...\n\n"
            "Produce one indexing job per video or image file to the jobs topic.\n\n"
            "  -r, --recursive       scan directories recursively\n"
            "  -t, --tasks LIST      comma-separated: caption, ocr, chart_qa, qa (default caption)\n"
            "  -q, --question Q      question for the qa and chart_qa tasks\n"
            "      --fps F           frames sampled per second (default 1)\n"
            "      --max-frames N    at most N frames per window (default 180)\n"
            "      --window S        window length in seconds (default max-frames / fps: the\n"
            "                        whole input at F; 0 = one window, subsampled)\n"
            "      --mode M          sampling mode: fast or exact (default fast)\n"
            "      --priority P      0 (lowest) to 9 (default 5)\n"
            "      --max-new-tokens N  answer length limit (default: the worker's)\n"
            "      --temperature X   sampling temperature, 0 = greedy (default 0)\n"
            "  -b, --brokers B       bootstrap brokers (default: kafka.brokers of the config)\n"
            "  -T, --topic T         jobs topic (default: kafka.topic of the config)\n"
            "  -c, --config FILE     read brokers, topic, kafka properties and pg.conninfo from\n"
            "                        vl3d.conf; jobs already done in PostgreSQL are not sent\n"
            "      --conninfo STR    PostgreSQL to ask for jobs already done (libpq string)\n"
            "  -f, --force           redo files already done (a new id nonce)\n"
            "  -n, --dry-run         print what would be enqueued (the messages) and what is\n"
            "                        already done, produce nothing\n"
            "  -h, --help            show this help\n");
}

static int build_tasks(json_t *arr, const char *list, const char *question)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", list);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = vl3_task_parse(t);
        if (k < 0) {
            fprintf(stderr, "vl3 enqueue: unknown task \"%s\" (caption, ocr, chart_qa, qa)\n", t);
            return -EINVAL;
        }
        if (k == VL3_TASK_QA || k == VL3_TASK_CHART_QA) {
            if (!question || !*question) {
                fprintf(stderr, "vl3 enqueue: task \"%s\" needs --question\n", t);
                return -EINVAL;
            }
            json_array_append_new(arr, json_pack("{s:s, s:s}", "kind", t, "question", question));
        } else {
            json_array_append_new(arr, json_string(t));
        }
    }
    if (json_array_size(arr) == 0) {
        fprintf(stderr, "vl3 enqueue: --tasks is empty\n");
        return -EINVAL;
    }
    return 0;
}

static int parse_num(const char *opt, const char *s, double min, double max, double *ret)
{
    if (vl3_parse_double(s, ret) < 0 || *ret < min || *ret > max) {
        fprintf(stderr, "vl3 enqueue: invalid %s \"%s\" (want %g to %g)\n", opt, s, min, max);
        return -EINVAL;
    }
    return 0;
}

/* "f:" + XXH3-128 hex of the file version and the request (canonical JSON, sorted keys).
 * nonce is "" or, for --force, the batch id. */
static int job_id_make(const char *path, const struct stat *st, const json_t *req,
                       const char *nonce, char *buf, size_t size)
{
    json_t *k = json_pack("{s:s, s:I, s:I, s:I, s:O, s:s}", "input", path, "size",
                          (json_int_t)st->st_size, "mtime_s", (json_int_t)st->st_mtim.tv_sec,
                          "mtime_ns", (json_int_t)st->st_mtim.tv_nsec, "request", req, "nonce",
                          nonce);
    char *s = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    if (!s)
        return -ENOMEM;
    XXH128_hash_t h = XXH3_128bits(s, strlen(s));
    free(s);
    snprintf(buf, size, "f:%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
    return 0;
}

/* The ids of ids[] that are done in PostgreSQL: done[i] = 1. One query with a jsonb array,
 * answered by positions (no quadratic matching here). */
static int done_ids_load(const char *conninfo, char **ids, size_t n, char *done)
{
    PGconn *pq = PQconnectdb(conninfo);
    json_t *arr = json_array();
    char *s = NULL;
    PGresult *res = NULL;
    int r = 0;
    if (PQstatus(pq) != CONNECTION_OK) {
        fprintf(stderr, "vl3 enqueue: could not connect to PostgreSQL: %s", PQerrorMessage(pq));
        r = -EIO;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(ids[i]));
    if (!(s = json_dumps(arr, JSON_COMPACT))) {
        r = -ENOMEM;
        goto out;
    }
    const char *p[1] = {s};
    res = PQexecParams(pq,
                       "SELECT x.ord FROM jsonb_array_elements_text($1::jsonb) "
                       "       WITH ORDINALITY AS x(id, ord) "
                       "  JOIN jobs j ON j.job_id = x.id AND j.status = 'done'",
                       1, NULL, p, NULL, NULL, 0);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "42P01") == 0)
        goto out; /* no jobs table yet (vl3d never ran): nothing is done */
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "vl3 enqueue: could not read done jobs: %s", PQerrorMessage(pq));
        r = -EIO;
        goto out;
    }
    for (int row = 0; row < PQntuples(res); row++) {
        long long ord = atoll(PQgetvalue(res, row, 0)); /* 1-based index into ids */
        if (ord >= 1 && (size_t)ord <= n)
            done[ord - 1] = 1;
    }
out:
    PQclear(res);
    free(s);
    json_decref(arr);
    PQfinish(pq);
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(size_t scanned, size_t total, size_t sent, size_t skipped, double t0)
{
    double dt = now_s() - t0;
    double rate = dt > 0 ? scanned / dt : 0;
    double eta = rate > 0 ? (total - scanned) / rate : 0;
    fprintf(stderr, "\r\033[K%zu/%zu files, %zu enqueued, %zu skipped (done), %.0f files/s, ETA %.0fs ",
            scanned, total, sent, skipped, rate, eta);
}

int cmd_enqueue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"recursive", no_argument, NULL, 'r'},   {"tasks", required_argument, NULL, 't'},
        {"question", required_argument, NULL, 'q'}, {"fps", required_argument, NULL, 'F'},
        {"max-frames", required_argument, NULL, 'M'}, {"window", required_argument, NULL, 'W'},
        {"mode", required_argument, NULL, 'm'},  {"priority", required_argument, NULL, 'P'},
        {"max-new-tokens", required_argument, NULL, 'N'},
        {"temperature", required_argument, NULL, 'K'},
        {"brokers", required_argument, NULL, 'b'}, {"topic", required_argument, NULL, 'T'},
        {"config", required_argument, NULL, 'c'}, {"dry-run", no_argument, NULL, 'n'},
        {"conninfo", required_argument, NULL, 'C'}, {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},        {0},
    };
    int recursive = 0, dry = 0, force = 0, rc = CLI_EXIT_FAIL;
    const char *conninfo_arg = NULL;
    const char *tasks = "caption", *question = NULL, *brokers = NULL, *topic = NULL,
               *config = NULL, *mode = "fast";
    double fps = VL3_SAMPLING_FPS_DEFAULT, max_frames = VL3_SAMPLING_MAX_FRAMES_DEFAULT;
    double window = -1, priority = 5, max_new = -1, temperature = -1; /* window -1: not sent */
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "rt:q:b:T:c:nfh", opts, NULL)) != -1) {
        switch (c) {
        case 'r': recursive = 1; break;
        case 't': tasks = optarg; break;
        case 'q': question = optarg; break;
        case 'F':
            if (parse_num("--fps", optarg, 1e-3, 1000, &fps) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'M':
            if (parse_num("--max-frames", optarg, 1, 1000000, &max_frames) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'W':
            if (parse_num("--window", optarg, 0, 1e7, &window) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'P':
            if (parse_num("--priority", optarg, 0, 9, &priority) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'N':
            if (parse_num("--max-new-tokens", optarg, 0, 1000000, &max_new) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'K':
            if (parse_num("--temperature", optarg, 0, 10, &temperature) < 0)
                return CLI_EXIT_USAGE;
            break;
        case 'm':
            if (vl3_sampling_mode_parse(optarg) < 0) {
                fprintf(stderr, "vl3 enqueue: --mode must be fast or exact\n");
                return CLI_EXIT_USAGE;
            }
            mode = optarg;
            break;
        case 'b': brokers = optarg; break;
        case 'T': topic = optarg; break;
        case 'c': config = optarg; break;
        case 'n': dry = 1; break;
        case 'f': force = 1; break;
        case 'C': conninfo_arg = optarg; break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (max_frames != (double)(int64_t)max_frames ||
        (max_new >= 0 && max_new != (double)(int64_t)max_new)) {
        fprintf(stderr, "vl3 enqueue: --max-frames and --max-new-tokens must be integers\n");
        return CLI_EXIT_USAGE;
    }
    struct daemon_conf conf;
    vl3_error err = {0};
    if (daemon_conf_load(&conf, config, &err) < 0) {
        fprintf(stderr, "vl3 enqueue: %s\n", err.msg);
        return CLI_EXIT_FAIL;
    }
    if (!brokers)
        brokers = conf.kafka_brokers;
    if (!topic)
        topic = conf.kafka_topic;

    json_t *tarr = json_array(), *req = NULL;
    struct paths files = {0};
    char **ids = NULL, *done = NULL, *conninfo = NULL;
    struct kafka_producer *prod = NULL;
    if (build_tasks(tarr, tasks, question) < 0) {
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        char abs[PATH_MAX];
        struct stat st;
        if (!realpath(argv[i], abs) || stat(abs, &st) < 0) {
            fprintf(stderr, "vl3 enqueue: cannot access \"%s\": %s\n", argv[i], strerror(errno));
            goto out;
        }
        if (S_ISDIR(st.st_mode)) {
            if (scan_dir(abs, recursive, &files) == -ENOMEM)
                goto out;
        } else if (paths_add(&files, abs) < 0) {
            goto out;
        }
    }
    if (files.n == 0) {
        fprintf(stderr, "vl3 enqueue: no video or image files found\n");
        goto out;
    }
    /* the batch id: UTC time of the run and the pid, e.g. "b20261205T163512Z-4242" */
    char batch[64];
    {
        time_t now = time(NULL);
        struct tm tm;
        char ts[32];
        strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
        snprintf(batch, sizeof(batch), "b%s-%ld", ts, (long)getpid());
    }
    fprintf(stderr, "batch %s: %zu files\n", batch, files.n);
    req = json_pack("{s:O, s:{s:f, s:I, s:s}}", "tasks", tarr, "sampling", "fps", fps,
                    "max_frames", (json_int_t)max_frames, "mode", mode);
    if (req && window >= 0) /* absent: the daemon's default, max_frames / fps */
        json_object_set_new(json_object_get(req, "sampling"), "window", json_real(window));
    if (req && (max_new >= 0 || temperature >= 0)) {
        json_t *lim = json_object();
        if (max_new >= 0)
            json_object_set_new(lim, "max_new_tokens", json_integer((json_int_t)max_new));
        if (temperature >= 0)
            json_object_set_new(lim, "temperature", json_real(temperature));
        json_object_set_new(req, "limits", lim);
    }
    ids = calloc(files.n, sizeof(*ids));
    done = calloc(files.n, 1);
    if (!req || !ids || !done) {
        fprintf(stderr, "vl3 enqueue: out of memory\n");
        goto out;
    }
    int tty = isatty(STDERR_FILENO) && !dry;
    double t0 = now_s(), tlast = 0;
    for (size_t i = 0; i < files.n; i++) {
        struct stat st;
        char id[64];
        if (tty && now_s() - tlast > 0.2) {
            tlast = now_s();
            fprintf(stderr, "\rscanned %zu/%zu files", i, files.n);
        }
        if (stat(files.v[i], &st) < 0) {
            fprintf(stderr, "vl3 enqueue: cannot access \"%s\": %s\n", files.v[i],
                    strerror(errno));
            goto out;
        }
        if (job_id_make(files.v[i], &st, req, force ? batch : "", id, sizeof(id)) < 0 ||
            !(ids[i] = strdup(id))) {
            fprintf(stderr, "vl3 enqueue: out of memory\n");
            goto out;
        }
    }
    if (tty)
        fprintf(stderr, "\r\033[K"); /* the scan line is erased: the send line follows */
    if (conninfo_arg || config) {
        int r = migrate_conninfo_resolve(conninfo_arg, config, &conninfo, &err);
        if (r < 0) {
            fprintf(stderr, "vl3 enqueue: %s\n", vl3_error_text(&err, r));
            goto out;
        }
        if (done_ids_load(conninfo, ids, files.n, done) < 0)
            fprintf(stderr, "vl3 enqueue: sending every file; vl3d skips the ids already done\n");
    }
    if (!dry) {
        if (kafka_producer_new(brokers, (const char *const *)conf.kafka_props, &prod, &err) < 0 ||
            kafka_producer_probe(prod, topic, 5000, &err) < 0) {
            fprintf(stderr, "vl3 enqueue: %s (brokers \"%s\")\n", err.msg, brokers);
            goto out;
        }
    }
    size_t sent = 0, skipped = 0;
    t0 = now_s();
    tlast = 0;
    for (size_t i = 0; i < files.n; i++) {
        if (done[i]) {
            skipped++;
            if (dry)
                printf("already done: %s %s\n", ids[i], files.v[i]);
            continue;
        }
        json_t *j = json_deep_copy(req);
        if (j) {
            json_object_set_new(j, "id", json_string(ids[i]));
            json_object_set_new(j, "input", json_string(files.v[i]));
            json_object_set_new(j, "batch", json_string(batch));
            json_object_set_new(j, "priority", json_integer((json_int_t)priority));
        }
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s) {
            fprintf(stderr, "vl3 enqueue: out of memory\n");
            goto out;
        }
        int r = 0;
        if (dry)
            printf("%s\n", s);
        else
            r = kafka_producer_send(prod, topic, files.v[i], strlen(files.v[i]), s, strlen(s),
                                    &err);
        free(s);
        if (r < 0) {
            fprintf(stderr, "%svl3 enqueue: %s\n", tty ? "\n" : "", err.msg);
            goto out;
        }
        sent++;
        if (tty && (now_s() - tlast > 0.2 || i + 1 == files.n)) {
            tlast = now_s();
            progress(i + 1, files.n, sent, skipped, t0);
        }
    }
    if (tty)
        progress(files.n, files.n, sent, skipped, t0);
    if (!dry) {
        if (tty)
            fprintf(stderr, "\nwaiting for delivery reports...");
        int failed = kafka_producer_flush(prod, 60000, &err);
        if (tty)
            fprintf(stderr, "\n");
        if (failed != 0) {
            fprintf(stderr, "vl3 enqueue: %s\n", err.msg);
            goto out;
        }
        printf("enqueued %zu jobs to \"%s\" (batch %s), %zu already done, %.1f s\n", sent, topic,
               batch, skipped, now_s() - t0);
    } else {
        fprintf(stderr, "dry run: would enqueue %zu jobs, %zu already done\n", sent, skipped);
    }
    rc = CLI_EXIT_OK;
out:
    kafka_producer_free(prod);
    for (size_t i = 0; i < files.n; i++) {
        free(files.v[i]);
        if (ids)
            free(ids[i]);
    }
    free(files.v);
    free(ids);
    free(done);
    free(conninfo);
    json_decref(req);
    json_decref(tarr);
    daemon_conf_free(&conf);
    return rc;
}
