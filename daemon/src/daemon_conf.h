/* daemon_conf.h: vl3d's configuration struct and its option table (defaults live in the table;
 * config/vl3d.conf.example documents them). */
#ifndef VL3D_DAEMON_CONF_H
#define VL3D_DAEMON_CONF_H

#include <stdint.h>

#include "vl3/conf.h"
#include "vl3/err.h"

/* how a worker slot is given its device (workers.device_via) */
enum daemon_device_via {
    DAEMON_DEVICE_ENV, /* CUDA_VISIBLE_DEVICES=<device> in the worker's environment */
    DAEMON_DEVICE_ARG, /* --device <device> on its command line */
    DAEMON_DEVICE_VIA_COUNT
};

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
    int64_t worker_credits;
    char *worker_devices; /* "", "slot" or a comma-separated list (slot i: entry i mod n) */
    int worker_device_via; /* enum daemon_device_via */
    char *worker_path;
    char *worker_config;
    int64_t max_attempts;
    int64_t job_timeout_ms;
    int64_t stall_timeout_ms;
    int64_t shutdown_timeout_ms;
    char *metrics_listen;
    char *log_level;
    char *input_roots;
    int64_t max_message_bytes;
    int64_t max_frames_cap;
    int64_t ping_interval_ms;
    int64_t startup_timeout_ms;
    int64_t commit_interval_ms;
    /* librdkafka properties passed through ("name=value", NULL-terminated, owned): from
     * `kafka.property.<name> = value` lines and from a `[kafka.properties]` section. Not part of
     * the table; released by daemon_conf_free(). */
    char **kafka_props;
};

extern const vl3_conf_option daemon_conf_table[];

/* Defaults, then path parsed over them (path may be NULL: defaults only). On error the struct
 * holds nothing (freed). Errors cite file:line. Returns 0, -errno or VL3_E_CONFIG. */
int daemon_conf_load(struct daemon_conf *conf, const char *path, vl3_error *reterr);
/* Release everything conf owns; accepts a zeroed struct. */
void daemon_conf_free(struct daemon_conf *conf);

#endif
