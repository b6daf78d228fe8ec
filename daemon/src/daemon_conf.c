/* daemon_conf.c: the option table of vl3d (STYLE B7): one row per option with default, bounds
 * and reload flag. */
#include "daemon_conf.h"

#include <stddef.h>

#define OPT(name, type, field, def, min, max, flags, help)                                         \
    {name, type, offsetof(struct daemon_conf, field), def, min, max, NULL, flags, help}

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
        "engine backend of the workers: auto, cpu or cuda"),
    OPT("workers.path", VL3_CONF_STRING, worker_path, "vl3-worker", 0, 0, VL3_CONF_RESTART,
        "worker executable"),
    OPT("workers.config", VL3_CONF_STRING, worker_config, "", 0, 0, VL3_CONF_RESTART,
        "configuration file passed to the workers"),
    OPT("jobs.max_attempts", VL3_CONF_INT, max_attempts, "3", 1, 100, VL3_CONF_RELOADABLE,
        "attempts that killed or hung a worker before a job is failed as poison"),
    OPT("jobs.timeout", VL3_CONF_DURATION, job_timeout_ms, "30min", 1000, 86400000.0 * 7,
        VL3_CONF_RELOADABLE, "wall time after which a job is considered hung"),
    OPT("shutdown_timeout", VL3_CONF_DURATION, shutdown_timeout_ms, "60s", 0, 3600000,
        VL3_CONF_RELOADABLE, "how long a graceful stop waits for in-flight jobs"),
    OPT("metrics.listen", VL3_CONF_STRING, metrics_listen, "127.0.0.1:9464", 0, 0,
        VL3_CONF_RESTART, "address of the Prometheus text endpoint (empty = off)"),
    OPT("log.level", VL3_CONF_STRING, log_level, "info", 0, 0, VL3_CONF_RELOADABLE,
        "err, warning, notice, info or debug"),
    {0},
};
