/* kafka_mock.c: an embedded Kafka for tests and the demo: librdkafka's mock cluster in a small
 * standalone process. Brokers listen on random loopback ports (fixed ports are impossible in
 * librdkafka 2.0.2), so the bootstrap list is written to a file. Faults are injected through a
 * control FIFO, one command per line:
 *   down <broker-id> | up <broker-id> | rtt <broker-id> <ms> | leader <topic> <partition> <broker>
 *   err <api-key> <count> <error-code>   (push request errors for an API)
 *   quit
 * Usage: kafka-mock --brokers N --bootstrap-file F [--control FIFO] [--topic NAME:PARTITIONS]...
 * It exits on SIGTERM/SIGINT or "quit". Output goes to stderr; run it with stdio redirected. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void handle_command(rd_kafka_mock_cluster_t *mc, char *line)
{
    char topic[256];
    int a, b, c;
    if (sscanf(line, "down %d", &a) == 1) {
        rd_kafka_mock_broker_set_down(mc, a);
        fprintf(stderr, "kafka-mock: broker %d down\n", a);
    } else if (sscanf(line, "up %d", &a) == 1) {
        rd_kafka_mock_broker_set_up(mc, a);
        fprintf(stderr, "kafka-mock: broker %d up\n", a);
    } else if (sscanf(line, "rtt %d %d", &a, &b) == 2) {
        rd_kafka_mock_broker_set_rtt(mc, a, b);
    } else if (sscanf(line, "leader %255s %d %d", topic, &a, &b) == 3) {
        rd_kafka_mock_partition_set_leader(mc, topic, a, b);
    } else if (sscanf(line, "err %d %d %d", &a, &b, &c) == 3) {
        for (int i = 0; i < b; i++)
            rd_kafka_mock_push_request_errors(mc, (int16_t)a, 1, (rd_kafka_resp_err_t)c);
    } else if (strncmp(line, "quit", 4) == 0) {
        stop = 1;
    } else if (line[0]) {
        fprintf(stderr, "kafka-mock: unknown command \"%s\", ignoring\n", line);
    }
}

int main(int argc, char **argv)
{
    int brokers = 3;
    const char *bootstrap_file = NULL, *control = NULL;
    char *topics[64];
    int ntopics = 0;
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"bootstrap-file", required_argument, NULL, 'f'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int o;
    while ((o = getopt_long(argc, argv, "b:f:c:t:h", opts, NULL)) != -1) {
        switch (o) {
        case 'b': brokers = atoi(optarg); break;
        case 'f': bootstrap_file = optarg; break;
        case 'c': control = optarg; break;
        case 't':
            if (ntopics < 64)
                topics[ntopics++] = optarg;
            break;
        case 'h':
            printf("usage: kafka-mock --brokers N --bootstrap-file F [--control FIFO] "
                   "[--topic NAME:PARTITIONS]...\n");
            return 0;
        default: return 2;
        }
    }
    if (!bootstrap_file || brokers < 1 || brokers > 16) {
        fprintf(stderr, "kafka-mock: --bootstrap-file and 1..16 --brokers are required\n");
        return 2;
    }
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka-mock: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mock: could not create the mock cluster\n");
        return 1;
    }
    for (int i = 0; i < ntopics; i++) {
        char *colon = strrchr(topics[i], ':');
        int parts = 1;
        if (colon) {
            *colon = '\0';
            parts = atoi(colon + 1);
        }
        rd_kafka_resp_err_t e =
            rd_kafka_mock_topic_create(mc, topics[i], parts, brokers < 3 ? brokers : 3);
        if (e) {
            fprintf(stderr, "kafka-mock: could not create topic \"%s\": %s\n", topics[i],
                    rd_kafka_err2str(e));
            return 1;
        }
    }
    /* write the bootstrap list atomically: tests poll for the file */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", bootstrap_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", rd_kafka_mock_cluster_bootstraps(mc)) < 0 || fclose(f) != 0 ||
        rename(tmp, bootstrap_file) < 0) {
        fprintf(stderr, "kafka-mock: could not write \"%s\": %s\n", bootstrap_file, strerror(errno));
        return 1;
    }
    fprintf(stderr, "kafka-mock: %d brokers at %s\n", brokers, rd_kafka_mock_cluster_bootstraps(mc));

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int cfd = -1;
    if (control) {
        if (mkfifo(control, 0600) < 0 && errno != EEXIST) {
            fprintf(stderr, "kafka-mock: could not create FIFO \"%s\": %s\n", control,
                    strerror(errno));
            return 1;
        }
        cfd = open(control, O_RDWR | O_NONBLOCK | O_CLOEXEC); /* RDWR: never sees EOF */
    }
    char buf[4096];
    size_t have = 0;
    while (!stop) {
        struct pollfd p = {.fd = cfd, .events = POLLIN};
        int n = poll(&p, cfd >= 0 ? 1 : 0, 200);
        if (n > 0 && (p.revents & POLLIN)) {
            ssize_t r = read(cfd, buf + have, sizeof(buf) - 1 - have);
            if (r > 0) {
                have += (size_t)r;
                buf[have] = '\0';
                char *nl;
                while ((nl = strchr(buf, '\n'))) {
                    *nl = '\0';
                    handle_command(mc, buf);
                    size_t used = (size_t)(nl + 1 - buf);
                    memmove(buf, nl + 1, have - used);
                    have -= used;
                    buf[have] = '\0';
                }
                if (have == sizeof(buf) - 1)
                    have = 0; /* overlong line: drop it */
            }
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    if (control)
        unlink(control);
    fprintf(stderr, "kafka-mock: stopped\n");
    return 0;
}
