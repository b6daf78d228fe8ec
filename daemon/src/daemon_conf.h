/* daemon_conf.h: vl3d's configuration struct and its option table (defaults live in the table;
 * config/vl3d.conf.example documents them). */
#ifndef VL3D_DAEMON_CONF_H
#define VL3D_DAEMON_CONF_H

#include <stdint.h>

#include "vl3/conf.h"

struct daemon_conf {
    char *kafka_brokers;
    char *kafka_topic;
    char *kafka_group;
    char *kafka_dlq_topic;
    int64_t max_in_flight;
    char *pg_conninfo;
    int migrate_on_start;
    int64_t workers;
    char *worker_backend;
    char *worker_path;
    char *worker_config;
    int64_t max_attempts;
    int64_t job_timeout_ms;
    int64_t shutdown_timeout_ms;
    char *metrics_listen;
    char *log_level;
};

extern const vl3_conf_option daemon_conf_table[];

#endif
