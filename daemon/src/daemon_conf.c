/* daemon_conf.c: the option table of vl3d (STYLE B7): one row per option with default, bounds
 * and reload flag. */
#include "daemon_conf.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vl3/proto.h"

#define OPT(name, type, field, def, min, max, flags, help)                                         \
    {name, type, offsetof(struct daemon_conf, field), def, min, max, NULL, flags, help}

static const char *const device_via_names[] = {"env", "arg", NULL};

const vl3_conf_option daemon_conf_table[] = {
    OPT("kafka.brokers", VL3_CONF_STRING, kafka_brokers, "127.0.0.1:9092", 0, 0, VL3_CONF_RESTART,
        "bootstrap broker list"),
    OPT("kafka.topic", VL3_CONF_STRING, kafka_topic, "vl3.jobs", 0, 0, VL3_CONF_RESTART,
        "topic the jobs are consumed from"),
    OPT("kafka.group", VL3_CONF_STRING, kafka_group, "vl3d", 0, 0, VL3_CONF_RESTART,
        "consumer group id (daemons in one group share the partitions)"),
    OPT("kafka.dlq_topic", VL3_CONF_STRING, kafka_dlq_topic, "vl3.jobs.dlq", 0, 0,
        VL3_CONF_RESTART, "dead-letter topic for messages that can never succeed"),
    OPT("kafka.max_in_flight", VL3_CONF_INT, max_in_flight, "64", 1, 100000, VL3_CONF_RELOADABLE,
        "jobs in flight before partitions are paused"),
    OPT("pg.conninfo", VL3_CONF_STRING, pg_conninfo, "dbname=vl3", 0, 0,
        VL3_CONF_RESTART | VL3_CONF_SECRET, "libpq connection string (use a passfile for secrets)"),
    OPT("pg.migrate_on_start", VL3_CONF_BOOL, migrate_on_start, "yes", 0, 0, VL3_CONF_RESTART,
        "apply schema migrations at start"),
    OPT("workers.count", VL3_CONF_INT, workers, "1", 1, 64, VL3_CONF_RESTART,
        "number of vl3-worker processes"),
    OPT("workers.backend", VL3_CONF_STRING, worker_backend, "auto", 0, 0, VL3_CONF_RESTART,
        "engine backend of the workers: auto (the worker's configuration decides), or a backend "
        "passed as --backend (cpu, cuda, cuda-emu)"),
    OPT("workers.devices", VL3_CONF_STRING, worker_devices, "", 0, 0, VL3_CONF_RESTART,
        "device of each worker slot: empty = none given, \"slot\" = the slot index, or a "
        "comma-separated list of GPU indices (slot i gets entry i mod its length)"),
    {"workers.device_via", VL3_CONF_ENUM, offsetof(struct daemon_conf, worker_device_via), "env",
     0, 0, device_via_names, VL3_CONF_RESTART,
     "how a slot's device reaches its worker: env (CUDA_VISIBLE_DEVICES) or arg (--device)"},
    OPT("workers.credits", VL3_CONF_INT, worker_credits, "0", 0, VL3_PROTO_MAX_CREDITS,
        VL3_CONF_RESTART,
        "most jobs one worker holds at once (0 = as many as its hello offers; 1 = one at a time)"),
    OPT("workers.path", VL3_CONF_STRING, worker_path, "vl3-worker", 0, 0, VL3_CONF_RESTART,
        "worker executable"),
    OPT("workers.config", VL3_CONF_STRING, worker_config, "", 0, 0, VL3_CONF_RESTART,
        "configuration file passed to the workers"),
    OPT("jobs.max_attempts", VL3_CONF_INT, max_attempts, "3", 1, 100, VL3_CONF_RELOADABLE,
        "attempts that killed or hung a worker before a job is failed as poison"),
    OPT("jobs.timeout", VL3_CONF_DURATION, job_timeout_ms, "30min", 1000, 86400000.0 * 7,
        VL3_CONF_RELOADABLE, "wall time after which a job is considered hung"),
    OPT("jobs.stall_timeout", VL3_CONF_DURATION, stall_timeout_ms, "1h", 0, 86400000.0,
        VL3_CONF_RESTART, "a job with no progress frame for this long (pings answered or not) "
        "has its worker killed as stalled (0 = off)"),
    OPT("shutdown_timeout", VL3_CONF_DURATION, shutdown_timeout_ms, "60s", 0, 3600000,
        VL3_CONF_RELOADABLE, "how long a graceful stop waits for in-flight jobs"),
    OPT("metrics.listen", VL3_CONF_STRING, metrics_listen, "127.0.0.1:9464", 0, 0,
        VL3_CONF_RESTART, "address of the Prometheus text endpoint (empty = off)"),
    OPT("log.level", VL3_CONF_STRING, log_level, "info", 0, 0, VL3_CONF_RELOADABLE,
        "err, warning, notice, info or debug"),
    OPT("jobs.input_roots", VL3_CONF_STRING, input_roots, "", 0, 0, VL3_CONF_RELOADABLE,
        "':'-separated directories job inputs must lie under (empty = any absolute path)"),
    OPT("jobs.max_message_bytes", VL3_CONF_SIZE, max_message_bytes, "64K", 256, 16777216,
        VL3_CONF_RELOADABLE, "larger job messages go to the dead-letter topic"),
    OPT("jobs.max_frames", VL3_CONF_INT, max_frames_cap, "4096", 1, 1000000, VL3_CONF_RELOADABLE,
        "jobs asking for more sampled frames are refused (dead-letter topic)"),
    OPT("workers.ping_interval", VL3_CONF_DURATION, ping_interval_ms, "5s", 100, 3600000,
        VL3_CONF_RESTART, "how often idle and busy workers are pinged"),
    OPT("workers.startup_timeout", VL3_CONF_DURATION, startup_timeout_ms, "120s", 100, 3600000,
        VL3_CONF_RESTART, "a worker must say hello within this time (model loading included)"),
    OPT("kafka.commit_interval", VL3_CONF_DURATION, commit_interval_ms, "1s", 0, 60000,
        VL3_CONF_RELOADABLE, "how often finished offsets are committed (0 = at once)"),
    {0},
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int add_prop(struct daemon_conf *c, size_t *n, const char *name, const char *value)
{
    char **np = realloc(c->kafka_props, (*n + 2) * sizeof(*np));
    if (!np)
        return -ENOMEM;
    c->kafka_props = np;
    size_t len = strlen(name) + strlen(value) + 2;
    if (!(np[*n] = malloc(len)))
        return -ENOMEM;
    snprintf(np[*n], len, "%s=%s", name, value);
    np[++*n] = NULL;
    return 0;
}

/* The common parser rejects unknown keys, so kafka property lines are taken out here (replaced
 * by blank lines to keep line numbers) and the rest goes to vl3_conf_load through a memfd. */
int daemon_conf_load(struct daemon_conf *c, const char *path, vl3_error *reterr)
{
    memset(c, 0, sizeof(*c));
    int r = vl3_conf_defaults(daemon_conf_table, c, reterr);
    if (r < 0 || !path)
        goto out;
    FILE *f = fopen(path, "re");
    if (!f) {
        r = vl3_error_set(reterr, -errno, "could not open configuration file \"%s\": %s", path,
                          strerror(errno));
        goto out;
    }
    int mfd = memfd_create("vl3d.conf", MFD_CLOEXEC);
    if (mfd < 0) {
        r = vl3_error_set(reterr, -errno, "could not create memfd: %s", strerror(errno));
        fclose(f);
        goto out;
    }
    char line[4096], section[128] = "";
    size_t nprops = 0;
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char copy[4096];
        snprintf(copy, sizeof(copy), "%s", line);
        char *s = trim(copy);
        int take = 0;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (e) {
                *e = '\0';
                snprintf(section, sizeof(section), "%s", trim(s + 1));
                if (strcmp(section, "kafka.properties") == 0)
                    take = 1; /* the parser does not know this section: hide the header too */
            }
        } else if (*s && *s != '#' && *s != ';' && strchr(s, '=')) {
            char *eq = strchr(s, '=');
            *eq = '\0';
            char *k = trim(s), *v = trim(eq + 1);
            const char *name = NULL;
            if (strcmp(section, "kafka.properties") == 0)
                name = k;
            else if (!section[0] && strncmp(k, "kafka.property.", 15) == 0)
                name = k + 15;
            else if (strcmp(section, "kafka") == 0 && strncmp(k, "property.", 9) == 0)
                name = k + 9;
            if (name) {
                size_t vl = strlen(v);
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                    v[vl - 1] = '\0';
                    v++;
                } else {
                    char *hash = strstr(v, " #");
                    if (hash) {
                        *hash = '\0';
                        v = trim(v);
                    }
                }
                if (!*name) {
                    r = vl3_error_set(reterr, VL3_E_CONFIG, "%s:%d: empty kafka property name",
                                      path, lineno);
                    break;
                }
                if ((r = add_prop(c, &nprops, name, v)) < 0) {
                    vl3_error_set(reterr, r, "out of memory");
                    break;
                }
                take = 1;
            }
        } else if (strcmp(section, "kafka.properties") == 0 && *s == '[') {
            take = 0;
        }
        const char *out = take ? "\n" : line;
        size_t ol = strlen(out);
        if (write(mfd, out, ol) != (ssize_t)ol) {
            r = vl3_error_set(reterr, -EIO, "could not write memfd");
            break;
        }
    }
    fclose(f);
    if (r == 0) {
        char fdpath[64];
        snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", mfd);
        r = vl3_conf_load(daemon_conf_table, c, fdpath, reterr);
        if (r < 0 && reterr) {
            /* cite the real file, not the memfd */
            char *p = strstr(reterr->msg, fdpath);
            if (p) {
                char fixed[VL3_ERROR_MSG_MAX];
                snprintf(fixed, sizeof(fixed), "%.*s%s%s", (int)(p - reterr->msg), reterr->msg,
                         path, p + strlen(fdpath));
                snprintf(reterr->msg, sizeof(reterr->msg), "%s", fixed);
            }
        }
    }
    close(mfd);
out:
    if (r < 0)
        daemon_conf_free(c);
    return r;
}

void daemon_conf_free(struct daemon_conf *c)
{
    if (!c)
        return;
    vl3_conf_free_strings(daemon_conf_table, c);
    for (size_t i = 0; c->kafka_props && c->kafka_props[i]; i++)
        free(c->kafka_props[i]);
    free(c->kafka_props);
    c->kafka_props = NULL;
}
