# rebalance_paused.sh: it.sh scenario "rebalance_paused" (sourced by it.sh; uses its helpers).
#
# Rebalances that find the daemon paused by kafka.max_in_flight. With max_in_flight = 1 the daemon
# pauses every time it takes a job, and d2 is started while d1 holds a 2 s job, so the join's
# rebalance finds d1 paused. The mock coordinator waits about 5 s (session.timeout.ms - 1 s) for
# members to rejoin; meanwhile d1's partitions are revoked and the abandoned job finishes, which
# drops the in-flight count to 0 and resumes consumption while nothing is assigned. librdkafka keeps
# a partition's pause flag across unassign and assign, so a resume that only covered the assignment
# of the moment left d1's partitions paused for good once they came back (the stall of
# it_rebalance_join_leave). Passes only when d1 does every job once after d2 has left.

# resumed_unassigned LOG: how many "resuming consumption" lines fall between a revocation and the
# next assignment (the window this scenario is about)
resumed_unassigned() {
  awk '/partition revoked/ {r = 1} /partition assigned/ {r = 0}
       /resuming consumption/ && r {n++} END {print n + 0}' "$1"
}

# d1_reassigned: wait (up to 10 s) for d1's half of the new assignment (its sixth "partition
# assigned" line): the join's rebalance is over for d1 too
d1_reassigned() {
  for _ in $(seq 1 100); do
    [ "$(grep -c 'partition assigned' "$T/d1.log")" -ge 6 ] && break
    sleep 0.1
  done
}

scenario_rebalance_paused() {
  start_env
  local N=8
  produce q "$N"
  WORKERS=1
  write_conf d1 $(free_port) "[kafka]" "max_in_flight = 1"
  write_conf d2 $(free_port) "[kafka]" "max_in_flight = 1"
  export VL3_FAKE_WORKER_DELAY_MS=2000
  start_daemon d1
  wait_log "$T/d1.log" "pausing consumption" 30 "d1 took no job"
  log "d1 holds a job, second daemon joins"
  start_daemon d2
  wait_log "$T/d2.log" "partition assigned" 30 "d2 never got partitions"
  d1_reassigned
  local w; w=$(resumed_unassigned "$T/d1.log")
  log "d1 resumed consumption $w times while its partitions were revoked"
  [ "$w" -ge 1 ] || fail "no resume between a revocation and an assignment: race not exercised"
  stop_daemon d2
  log "second daemon left at $(done_count) done"
  [ "$(done_count)" -lt "$N" ] || fail "all done before d2 left: the leave was not exercised"
  # d1 alone gets all four partitions back: it must finish every job (~2 s each)
  wait_done "$N" 60
  stop_daemon d1
  check_exactly_once q "$N"
}

# Scenario "rebalance_paused_queued": a rebalance that finds the daemon paused with its only job
# still queued (its worker is not ready yet). Revoking the partition frees that job at once,
# before the partition's offsets are forgotten; the in-flight count drops to 0 only afterwards,
# and no job is left whose end would resume consumption. Passes only when the daemon resumes
# after the revocation and finishes every job once d2 is gone.
scenario_rebalance_paused_queued() {
  start_env
  local N=20
  produce u "$N"
  # d1's worker becomes ready only when $T/go exists, after the join's rebalance (it gives up
  # when the test's directory is gone, so a failed run leaves no loop behind)
  printf '#!/bin/sh\nwhile [ ! -e "%s/go" ]; do [ -d "%s" ] || exit 1; sleep 0.1; done\n' \
    "$T" "$T" > "$T/slow-worker"
  printf 'exec "%s" "$@"\n' "$BIN/fake-worker" >> "$T/slow-worker"
  chmod 755 "$T/slow-worker"
  WORKERS=1
  write_conf d1 $(free_port) "[kafka]" "max_in_flight = 1"
  sed -i "s|^path = .*|path = $T/slow-worker|" "$T/d1.conf"
  write_conf d2 $(free_port) "[kafka]" "max_in_flight = 1"
  export VL3_FAKE_WORKER_DELAY_MS=100
  start_daemon d1
  wait_log "$T/d1.log" "pausing consumption" 30 "d1 took no job"
  log "d1 holds a queued job, second daemon joins"
  start_daemon d2
  wait_log "$T/d2.log" "partition assigned" 30 "d2 never got partitions"
  d1_reassigned
  grep -q "abandoning 1 in-flight jobs" "$T/d1.log" || fail "d1 abandoned no queued job"
  awk '/abandoning 1 in-flight jobs/ {a = 1} /resuming consumption/ && a {r = 1} END {exit !r}' \
    "$T/d1.log" || fail "d1 did not resume consumption after its queued job was abandoned"
  touch "$T/go"
  wait_ge "select count(*) from jobs where status='done' and job_id like 'u%'" 1 30
  log "second daemon leaves at $(done_count) done"
  stop_daemon d2
  [ "$(done_count)" -lt "$N" ] || fail "all done before d2 left: the leave was not exercised"
  wait_done "$N" 60
  stop_daemon d1
  check_exactly_once u "$N"
}
