# Daemon tests (helper "daemon"). Unit: protocol codec, job parsing, offset tracker.
vl3_test(NAME test-daemon SOURCES daemon/test_proto.c daemon/test_job.c daemon/test_offsets.c
  daemon/test_daemon_conf.c daemon/test_supervise.c
  LIBS vl3daemon LABELS unit TIMEOUT 60)

# A worker that speaks the protocol with deterministic answers and failure knobs (tests only).
add_executable(fake-worker daemon/fake_worker.c)
target_link_libraries(fake-worker PRIVATE vl3common)

# Integration: each case starts its own Kafka mock + PostgreSQL (tests/daemon/it.sh).
vl3_test(NAME test-daemon-it SOURCES daemon/test_daemon_it.c LIBS vl3common
  LABELS "integration;slow" TIMEOUT 400)

# systemd units: verify without output, security exposure bound.
vl3_test(NAME test-daemon-systemd SOURCES daemon/test_systemd.c LIBS vl3common LABELS unit
  TIMEOUT 60)

# The Kafka adapter against librdkafka's mock cluster in the test process (pause across rebalance).
vl3_test(NAME test-daemon-kafka SOURCES daemon/test_kafka.c LIBS vl3daemon
  LABELS integration TIMEOUT 120)
