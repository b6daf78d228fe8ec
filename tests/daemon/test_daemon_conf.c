/* test_daemon_conf.c: vl3d's configuration loader: defaults, librdkafka properties passed
 * through (kafka.property.X lines, [kafka] property.X, a [kafka.properties] section), errors
 * citing the real file and line, and the shipped example file being valid. */
#include "daemon_conf.h"
#include "test.h"

static const char *write_file(const char *name, const char *text)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(conf_kafka_properties_passthrough)
{
    const char *p = write_file("a.conf", "kafka.property.security.protocol = SASL_SSL\n"
                                         "[kafka]\n"
                                         "brokers = b1:9092,b2:9092\n"
                                         "property.sasl.mechanism = SCRAM-SHA-512 # comment\n"
                                         "[kafka.properties]\n"
                                         "ssl.ca.location = \"/etc/ssl/ca # not a comment.pem\"\n"
                                         "fetch.wait.max.ms=50\n"
                                         "[jobs]\n"
                                         "max_attempts = 7\n");
    ASSERT(p);
    struct daemon_conf c;
    vl3_error e = {0};
    ASSERT_OK_E(daemon_conf_load(&c, p, &e), &e);
    ASSERT_STR_EQ(c.kafka_brokers, "b1:9092,b2:9092");
    ASSERT_EQ(c.max_attempts, 7);
    ASSERT_EQ(c.workers, 1); /* default */
    ASSERT(c.kafka_props);
    ASSERT_STR_EQ(c.kafka_props[0], "security.protocol=SASL_SSL");
    ASSERT_STR_EQ(c.kafka_props[1], "sasl.mechanism=SCRAM-SHA-512");
    ASSERT_STR_EQ(c.kafka_props[2], "ssl.ca.location=/etc/ssl/ca # not a comment.pem");
    ASSERT_STR_EQ(c.kafka_props[3], "fetch.wait.max.ms=50");
    ASSERT(c.kafka_props[4] == NULL);
    daemon_conf_free(&c);
    return 0;
}

TEST(conf_errors_cite_file_and_line)
{
    const char *p = write_file("b.conf", "# comment\n[kafka.properties]\nlinger.ms = 5\n"
                                         "[jobs]\ntimeout = soon\n");
    struct daemon_conf c;
    vl3_error e = {0};
    ASSERT_EQ(daemon_conf_load(&c, p, &e), VL3_E_CONFIG);
    ASSERT_STR_CONTAINS(e.msg, "b.conf:5");
    ASSERT_STR_CONTAINS(e.msg, "jobs.timeout");
    ASSERT(strstr(e.msg, "/proc/self/fd") == NULL);
    p = write_file("c.conf", "[kafka]\nbrokerz = x\n");
    ASSERT_EQ(daemon_conf_load(&c, p, &e), VL3_E_CONFIG);
    ASSERT_STR_CONTAINS(e.msg, "c.conf:2: unknown option \"kafka.brokerz\"");
    ASSERT(daemon_conf_load(&c, "/nonexistent/vl3d.conf", &e) < 0);
    return 0;
}

/* issue 10: credits and devices per slot */
TEST(conf_workers_credits_devices)
{
    const char *p = write_file("w.conf", "[workers]\ncount = 4\ncredits = 8\ndevices = slot\n"
                                         "device_via = arg\nbackend = cuda\n");
    struct daemon_conf c;
    vl3_error e = {0};
    ASSERT_OK_E(daemon_conf_load(&c, p, &e), &e);
    ASSERT_EQ(c.worker_credits, 8);
    ASSERT_STR_EQ(c.worker_devices, "slot");
    ASSERT_EQ(c.worker_device_via, DAEMON_DEVICE_ARG);
    ASSERT_STR_EQ(c.worker_backend, "cuda");
    daemon_conf_free(&c);
    ASSERT_OK_E(daemon_conf_load(&c, NULL, &e), &e);
    ASSERT_EQ(c.worker_credits, 0); /* the worker's offer */
    ASSERT_EQ(c.worker_device_via, DAEMON_DEVICE_ENV);
    daemon_conf_free(&c);
    p = write_file("w2.conf", "[workers]\ndevice_via = pcie\n");
    ASSERT_EQ(daemon_conf_load(&c, p, &e), VL3_E_CONFIG);
    ASSERT_STR_CONTAINS(e.msg, "w2.conf:2");
    p = write_file("w3.conf", "[workers]\ncredits = 65\n");
    ASSERT_EQ(daemon_conf_load(&c, p, &e), VL3_E_CONFIG);
    ASSERT_STR_CONTAINS(e.msg, "workers.credits");
    return 0;
}

TEST(conf_example_is_valid)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config/vl3d.conf.example", test_source_dir());
    struct daemon_conf c, d;
    vl3_error e = {0};
    ASSERT_OK_E(daemon_conf_load(&c, path, &e), &e);
    ASSERT_OK_E(daemon_conf_load(&d, NULL, &e), &e);
    /* the example documents the defaults: every table option has the default value */
    for (const vl3_conf_option *o = daemon_conf_table; o->name; o++)
        if (!vl3_conf_equal(o, &c, &d))
            TEST__FAIL("example differs from the default for \"%s\"", o->name);
    daemon_conf_free(&c);
    daemon_conf_free(&d);
    return 0;
}
