#!/usr/bin/env bash
# it.sh: vl3d integration scenarios (called by test_daemon_it.c, one scenario per CTest case).
#   it.sh BUILD_DIR SOURCE_DIR SCENARIO
# Each scenario starts its own Kafka mock cluster (3 brokers, topic jobs with 4 partitions,
# dlq with 1; control FIFO for faults) and its own throwaway PostgreSQL, runs vl3d with the
# fake worker, and checks the database. Every wait has a deadline; teardown kills what it
# started. Exit 0 = pass; anything else prints the reason and the daemon logs.
set -uo pipefail
B=${1:?build dir}; S=${2:?source dir}; SCEN=${3:?scenario}
BIN=$B/bin
T=$(mktemp -d /tmp/vl3d-it-XXXXXX)
chmod 755 "$T"
PIDS=()

log() { echo "[it $SCEN $(date +%T)] $*" >&2; }
fail() {
  log "FAIL: $*"
  for f in "$T"/*.log; do [ -f "$f" ] && { echo "---- $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }; done
  for f in "$T"/d*.log; do [ -f "$f" ] && log_summary "$f" >&2; done
  [ -n "${PGC:-}" ] && { echo "---- jobs by status"; sql "select status, count(*) from jobs group by 1"; } >&2
  exit 1
}
# log_summary LOG: what a stall needs and the tail does not show: every line but the per-job
# ones (capped), and per partition the jobs done and the highest offset done
log_summary() {
  echo "---- $1 (without per-job lines, first 80)"
  grep -v -e '^<6>job ' "$1" | head -n 80
  echo "---- $1: jobs done per partition (count, highest offset)"
  awk '/^<6>job done/ { for (i = 1; i <= NF; i++) { split($i, kv, "=");
         if (kv[1] == "partition") p = kv[2]; if (kv[1] == "offset") o = kv[2] }
       n[p]++; if (o + 0 > m[p]) m[p] = o + 0 }
       END { for (p in n) printf "partition %s: %d done, highest offset %d\n", p, n[p], m[p] }' "$1"
}
teardown() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  pkill -9 -P $$ 2>/dev/null || true
  "$S/tests/harness/kafka-harness" stop "$T/kafka" >/dev/null 2>&1
  "$S/tests/harness/pg-harness" stop "$T/pg" >/dev/null 2>&1
  [ -n "${VL3_TEST_KEEP:-}" ] || rm -rf "$T"
}
trap teardown EXIT

# free_port: a TCP port for a daemon's metrics listener, below the kernel's ephemeral range
# (32768+, where outgoing connections of the mock brokers and PostgreSQL clients could already
# hold it) and with nothing listening on 127.0.0.1 now
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  fail "no free port found"
}

start_env() {
  "$S/tests/harness/kafka-harness" start "$T/kafka" "$BIN/kafka-mock" --brokers 3 \
    --topic jobs:4 --topic dlq:1 >/dev/null || fail "kafka mock did not start"
  "$S/tests/harness/pg-harness" start "$T/pg" >/dev/null || fail "postgres did not start"
  BOOT=$(cat "$T/kafka/bootstrap"); PGC=$(cat "$T/pg/conninfo")
  # the harness runs PostgreSQL with synchronous_commit=off (fast tests); the daemon's session
  # turns it back on: with it off, a crash loses commits already acknowledged, and no daemon
  # can then be exactly-once (docs/operations.md)
}

# write_conf NAME METRICS_PORT [extra lines...]
write_conf() {
  local name=$1 port=$2; shift 2
  cat > "$T/$name.conf" <<CONF
shutdown_timeout = 20s
[kafka]
brokers = $BOOT
topic = jobs
group = vl3d-it
dlq_topic = dlq
commit_interval = 200ms
property.session.timeout.ms = 6000
property.heartbeat.interval.ms = 500
property.topic.metadata.refresh.interval.ms = 1000
[pg]
conninfo = "$PGC options='-c synchronous_commit=on'"
[workers]
count = ${WORKERS:-3}
path = $BIN/fake-worker
ping_interval = 300ms
[jobs]
timeout = 2s
max_attempts = 2
[metrics]
listen = 127.0.0.1:$port
[log]
level = ${LOGLEVEL:-info}
CONF
  for l in "$@"; do echo "$l" >> "$T/$name.conf"; done
}

# write_worker_conf MEDIA_DIR: $T/worker.conf for real vl3-worker processes on the tiny model
# in $T/model (one thread, seeded sampling), media confined to MEDIA_DIR
write_worker_conf() {
  cat > "$T/worker.conf" <<CONF
model = $T/model
backend = cpu
threads = 1
decode_threads = 1
[media]
roots = $1
[generate]
seed = 5
[log]
level = info
CONF
}

start_daemon() { # NAME
  setsid "$BIN/vl3d" -c "$T/$1.conf" >> "$T/$1.log" 2>&1 &
  echo $! > "$T/$1.pid"; PIDS+=($!)
}
daemon_pid() { cat "$T/$1.pid"; }

# stop_daemon NAME: SIGTERM, must exit 0 within 40 s having closed everything
stop_daemon() {
  local pid; pid=$(daemon_pid "$1")
  kill -TERM "$pid" 2>/dev/null || fail "$1 is not running"
  for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "$1 did not stop within 40 s"
  wait "$pid"; local rc=$?
  [ "$rc" -eq 0 ] || fail "$1 exited with $rc after SIGTERM"
  grep -q "vl3d stopped" "$T/$1.log" || fail "$1 did not close cleanly"
  grep -q "event loop not empty" "$T/$1.log" && fail "$1: uv_loop_close failed"
  return 0
}

# produce PREFIX N [INPUT_FMT]: N job messages keyed by id (spread over the partitions)
produce() {
  local prefix=$1 n=$2 i
  for i in $(seq 1 "$n"); do
    echo "$prefix$i:{\"id\":\"$prefix$i\",\"input\":\"/m/$prefix$i.mp4\",\"tasks\":[\"caption\",{\"kind\":\"qa\",\"question\":\"who?\"}]}"
  done > "$T/produce.txt"
  kcat -b "$BOOT" -P -t jobs -K: -l "$T/produce.txt" || fail "kcat could not produce"
}
produce_raw() { # KEY PAYLOAD
  printf '%s\n' "$2" | kcat -b "$BOOT" -P -t jobs -k "$1" || fail "kcat could not produce"
}

sql() { psql "$PGC" -XAtqc "$1" 2>/dev/null; }
done_count() { sql "select count(*) from jobs where status='done'" || echo 0; }

# wait_sql QUERY VALUE TIMEOUT_S: until QUERY returns >= VALUE
wait_ge() {
  local q=$1 v=$2 t=$3 got=0
  for _ in $(seq 1 $((t * 5))); do
    got=$(sql "$q"); got=${got:-0}
    [ "$got" -ge "$v" ] && return 0
    sleep 0.2
  done
  fail "timeout after ${t}s waiting for [$q] >= $v (got $got)"
}
wait_done() { wait_ge "select count(*) from jobs where status='done'" "$1" "$2"; }

metric() { # PORT NAME
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {print $2}'
}

# check_exactly_once PREFIX N: every job done once, with exactly its two correct answers
check_exactly_once() {
  local p=$1 n=$2
  local done; done=$(sql "select count(*) from jobs where job_id like '$p%' and status='done'")
  [ "$done" = "$n" ] || fail "$done of $n jobs done"
  local rows; rows=$(sql "select count(*) from results where job_id like '$p%'")
  [ "$rows" = "$((2 * n))" ] || fail "$rows result rows, want $((2 * n))"
  local good; good=$(sql "select count(*) from results r join jobs j using (job_id)
      where r.job_id like '$p%' and r.window_idx = 0 and
      ((r.task = 'caption' and r.question = '' and r.answer = 'caption of ' || j.path || ' w0') or
       (r.task = 'qa' and r.question = 'who?' and r.answer = 'qa of ' || j.path || ' q=who? w0'))")
  [ "$good" = "$((2 * n))" ] || fail "$good correct answers, want $((2 * n))"
  local per; per=$(sql "select count(*) from (select job_id from results where job_id like '$p%'
      group by job_id having count(*) <> 2) x")
  [ "$per" = "0" ] || fail "$per jobs without exactly two answers"
  local missing; missing=$(sql "select count(*) from generate_series(1, $n) i
      where not exists (select 1 from jobs where job_id = '$p' || i and status = 'done')")
  [ "$missing" = "0" ] || fail "$missing job ids missing"
  check_fake_stats "$p" "$((2 * n))"
  log "exactly once: $n jobs, $rows answers, all correct"
}

# check_real_stats PREFIX ROWS: a real worker's token counts stored with every answer: the
# visual tokens kept at most their total, and the prompt longer than the kept visual tokens
check_real_stats() {
  local st; st=$(sql "select count(*) from results where job_id like '$1%' and
      visual_tokens_kept > 0 and visual_tokens_total >= visual_tokens_kept and
      prompt_tokens > visual_tokens_kept and generated_tokens > 0")
  [ "$st" = "$2" ] || fail "$st of $2 answers with token counts: $(sql "select frames_sampled,
      visual_tokens_kept, visual_tokens_total, prompt_tokens from results
      where job_id like '$1%' limit 3")"
}

# check_fake_stats PREFIX ROWS: the fake worker's token counts stored with every answer
check_fake_stats() {
  local st; st=$(sql "select count(*) from results where job_id like '$1%' and
      visual_tokens_total = 16 * frames_sampled and visual_tokens_kept = 10 * frames_sampled and
      prompt_tokens = 10 * frames_sampled + 20 + case task when 'qa' then 1 else 0 end")
  [ "$st" = "$2" ] || fail "$st of $2 answers with the worker's token counts: $(sql "select
      frames_sampled, visual_tokens_kept, visual_tokens_total, prompt_tokens from results
      where job_id like '$1%' limit 3")"
}

# after a clean stop, a fresh daemon must find every offset committed: nothing consumed
check_committed() { # PORT
  write_conf recheck "$1"
  start_daemon recheck
  wait_ge "select 1" 1 5
  sleep 7 # group join ~3 s plus fetch
  local c; c=$(metric "$1" vl3_jobs_consumed_total)
  [ "${c:-x}" = "0" ] || fail "restarted daemon consumed ${c:-?} messages: offsets not committed"
  stop_daemon recheck
}

worker_pids() { pgrep -P "$(daemon_pid "$1")" 2>/dev/null; }

# wait_log FILE PATTERN SECONDS WHAT: until FILE has a line matching PATTERN, or fail with WHAT
wait_log() {
  for _ in $(seq 1 $(($3 * 10))); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
  fail "$4"
}

# pg_bounce SECONDS: PostgreSQL stopped as by a crash (immediate), down SECONDS, started again
pg_bounce() {
  local bindir; bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  local as=(); [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  log "stopping postgres at $(done_count) done"
  "${as[@]}" "$bindir/pg_ctl" -D "$T/pg/data" -m immediate -w stop >/dev/null || fail "pg stop"
  sleep "$1"
  "${as[@]}" "$bindir/pg_ctl" -D "$T/pg/data" -l "$T/pg/log" -w -t 30 \
    -o "-p $(cat "$T/pg/port") -k $T/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    || fail "pg start"
  log "postgres back"
}

scenario_exactly_once() {
  start_env
  local N=300
  produce e "$N"
  write_conf d1 $(free_port) "[kafka]" "max_in_flight = 16"
  export VL3_FAKE_WORKER_DELAY_MS=15 VL3_FAKE_WORKER_LOG="$T/exec.log"
  start_daemon d1
  wait_done 40 60
  local w; w=$(worker_pids d1 | head -n1)
  [ -n "$w" ] || fail "no worker found"
  log "kill -9 worker $w"; kill -9 "$w"
  wait_done 150 90
  log "kill -9 daemon $(daemon_pid d1) at $(done_count) done"
  kill -9 "$(daemon_pid d1)"
  sleep 0.5
  start_daemon d1
  wait_done "$N" 120
  stop_daemon d1
  check_exactly_once e "$N"
  grep -q "pausing consumption: 16 jobs in flight" "$T/d1.log" || fail "no backpressure pause"
  grep -q "resuming consumption" "$T/d1.log" || fail "no resume after backpressure"
  grep -q "worker exited worker=.* signal=9" "$T/d1.log" || fail "the worker kill was not seen"
  local execs; execs=$(wc -l < "$T/exec.log")
  log "worker executions: $execs for $N jobs (redone after the kills; answers still once)"
  [ "$execs" -ge "$N" ] || fail "fewer executions than jobs"
  check_committed $(free_port)
}

scenario_dlq_poison() {
  start_env
  WORKERS=2
  local port=$(free_port)
  write_conf d1 "$port" "[jobs]" "input_roots = /m" "max_frames = 500"
  produce g 20
  produce_raw bad1 '{"input": "/m/x.mp4", "tasks": ["caption"'
  produce_raw bad2 '{"input": 42, "tasks": ["caption"]}'
  produce_raw bad3 '{"input": "/m/y.mp4", "tasks": ["juggle"]}'
  produce_raw bad4 '{"input": "/etc/passwd", "tasks": ["ocr"]}'
  produce_raw bad5 '{"input": "/m/z.mp4", "tasks": ["ocr"], "sampling": {"max_frames": 100000}}'
  produce_raw p1 '{"id": "poison-crash", "input": "/m/crash.mp4", "tasks": ["caption"]}'
  produce_raw p2 '{"id": "poison-hang", "input": "/m/hang.mp4", "tasks": ["caption"]}'
  produce_raw p3 '{"id": "bad-decode", "input": "/m/fail.mp4", "tasks": ["caption"]}'
  produce_raw p4 '{"id": "flaky-ok", "input": "/m/flaky.mp4", "tasks": ["caption"]}'
  produce_raw p5 '{"id": "retry-ok", "input": "/m/retry.mp4", "tasks": ["ocr"]}'
  produce_raw p6 '{"id": "windows", "input": "/m/w.mp4", "tasks": ["ocr"], "sampling": {"window": 5}}'
  produce_raw p7 '{"id": "slow-ok", "input": "/m/slow.mp4", "tasks": ["ocr"]}'
  start_daemon d1
  wait_ge "select count(*) from jobs where status in ('done','failed')" 27 60
  [ "$(sql "select status from jobs where job_id='slow-ok'")" = done ] || fail "a slow job that reports progress was treated as hung"
  check_exactly_once g 20
  [ "$(sql "select status from jobs where job_id='poison-crash'")" = failed ] || fail "crash job not failed"
  sql "select last_error from jobs where job_id='poison-crash'" | grep -q poison || fail "crash job reason"
  [ "$(sql "select status from jobs where job_id='poison-hang'")" = failed ] || fail "hang job not failed"
  sql "select last_error from jobs where job_id='poison-hang'" | grep -q hung || fail "hang job reason"
  [ "$(sql "select status||last_error from jobs where job_id='bad-decode'")" = "faileddecode: could not decode (fake)" ] || fail "decode failure"
  [ "$(sql "select status from jobs where job_id='flaky-ok'")" = done ] || fail "flaky job not retried to done"
  [ "$(sql "select status from jobs where job_id='retry-ok'")" = "done" ] || fail "retryable error not retried to done"
  [ "$(metric "$port" vl3_jobs_retried_total)" -ge 1 ] || fail "metrics: retried"
  [ "$(sql "select count(*) from results where job_id='windows'")" = 2 ] || fail "windows"
  [ "$(sql "select string_agg(start_s||'-'||end_s, ',' order by window_idx) from results where job_id='windows'")" = "0-5,5-10" ] || fail "window bounds"
  kcat -b "$BOOT" -C -t dlq -e -q -f '%k|%h|%s\n' > "$T/dlq.txt" 2>/dev/null
  [ "$(grep -c . "$T/dlq.txt")" = 5 ] || { cat "$T/dlq.txt" >&2; fail "want 5 dead letters"; }
  grep -q 'vl3-error=invalid JSON' "$T/dlq.txt" || fail "dlq: malformed JSON reason"
  grep -q 'vl3-error=field "input" must be a string' "$T/dlq.txt" || fail "dlq: wrong type reason"
  grep -q 'unknown task \\"juggle\\"\|unknown task "juggle"' "$T/dlq.txt" || fail "dlq: unknown task"
  grep -q 'outside the allowed roots' "$T/dlq.txt" || fail "dlq: policy reason"
  grep -q 'sampling.max_frames' "$T/dlq.txt" || fail "dlq: limit reason"
  grep -q 'vl3-topic=jobs,vl3-partition=[0-3],vl3-offset=[0-9]' "$T/dlq.txt" || fail "dlq: origin headers"
  [ "$(metric "$port" vl3_jobs_dead_lettered_total)" = 5 ] || fail "metrics: dead letters"
  [ "$(metric "$port" vl3_jobs_poisoned_total)" = 2 ] || fail "metrics: poisoned"
  [ "$(metric "$port" vl3_worker_hangs_total)" -ge 2 ] || fail "metrics: hangs"
  # saved first: `curl | grep -q` fails under pipefail when grep stops reading early (SIGPIPE)
  curl -s "http://127.0.0.1:$port/metrics" > "$T/metrics.txt" || fail "metrics: unreachable"
  grep -q 'vl3_stage_seconds_bucket{stage="generate",le="0.005"}' "$T/metrics.txt" || fail "metrics: histogram"
  stop_daemon d1
}

scenario_pg_restart() {
  start_env
  local N=150
  produce r "$N"
  write_conf d1 $(free_port)
  export VL3_FAKE_WORKER_DELAY_MS=20
  start_daemon d1
  wait_done 30 60
  pg_bounce 4
  wait_done "$N" 120
  stop_daemon d1
  check_exactly_once r "$N"
  grep -q "postgresql connection lost" "$T/d1.log" || fail "the outage was not seen"
}

scenario_broker_down() {
  start_env
  local N=150
  produce b "$N"
  write_conf d1 $(free_port)
  export VL3_FAKE_WORKER_DELAY_MS=20
  start_daemon d1
  wait_done 30 60
  log "broker 1 down at $(done_count) done"
  echo "down 1" > "$T/kafka/control"
  sleep 6
  echo "up 1" > "$T/kafka/control"
  log "broker 1 up at $(done_count) done"
  wait_done "$N" 120
  stop_daemon d1
  check_exactly_once b "$N"
}

scenario_rebalance() {
  start_env
  local N=240
  produce c "$N"
  WORKERS=2 # before write_conf, which reads it
  write_conf d1 $(free_port)
  write_conf d2 $(free_port)
  export VL3_FAKE_WORKER_DELAY_MS=100
  start_daemon d1
  wait_done 20 60
  log "second daemon joins at $(done_count) done"
  start_daemon d2
  wait_log "$T/d2.log" "partition assigned" 30 "d2 never got partitions"
  log "second daemon has partitions at $(done_count) done"
  local half=$(( $(done_count) + 30 ))
  wait_done "$half" 60
  grep -q "job done" "$T/d2.log" || fail "d2 did no work"
  log "second daemon leaves at $(done_count) done"
  stop_daemon d2
  [ "$(done_count)" -lt "$N" ] || fail "all done before d2 left: the leave was not exercised"
  wait_done "$N" 120
  stop_daemon d1
  check_exactly_once c "$N"
  [ "$(grep -c 'partition revoked' "$T/d1.log")" -ge 1 ] || fail "d1 saw no revocation"
}

scenario_reload_notify() {
  start_env
  local port=$(free_port)
  write_conf d1 "$port"
  # a notify socket: systemd's protocol, read by python (a datagram per notification)
  /usr/bin/python3 - "$T/notify.sock" > "$T/notify.txt" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
while True:
    try:
        m = s.recv(4096).decode()
    except socket.timeout:
        break
    print(m.replace("\n", " | "), flush=True)
    if "STOPPING=1" in m:
        break
PY
  PIDS+=($!)
  for _ in $(seq 1 50); do [ -S "$T/notify.sock" ] && break; sleep 0.1; done
  NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=400000 start_daemon d1
  wait_log "$T/notify.txt" READY=1 5 "no READY=1"
  # a broken file: the old configuration stays
  cp "$T/d1.conf" "$T/d1.conf.good"
  printf '[jobs]\nmax_attempts = many\n' >> "$T/d1.conf"
  kill -HUP "$(daemon_pid d1)"
  for _ in $(seq 1 50); do grep -q "could not reload" "$T/d1.log" && break; sleep 0.1; done
  grep -q 'could not reload configuration, keeping the old one: .*d1.conf:[0-9]*: invalid integer for "jobs.max_attempts"' "$T/d1.log" || fail "bad reload not reported with file:line"
  # a good one: reloadable applied, restart-only refused
  sed -e 's/^level = info/level = debug/' -e 's/^count = 3/count = 5/' "$T/d1.conf.good" > "$T/d1.conf"
  kill -HUP "$(daemon_pid d1)"
  for _ in $(seq 1 50); do grep -q "configuration reloaded" "$T/d1.log" && break; sleep 0.1; done
  grep -q 'reloaded "log.level"' "$T/d1.log" || fail "log.level not reloaded"
  grep -q 'changing "workers.count" requires restart, ignoring' "$T/d1.log" || fail "restart option not refused"
  kill -0 "$(daemon_pid d1)" || fail "daemon died on reload"
  produce h 5
  wait_done 5 30
  grep -q "<7>" "$T/d1.log" || fail "debug level not in effect after reload"
  stop_daemon d1
  sleep 0.3
  grep -q STOPPING=1 "$T/notify.txt" || fail "no STOPPING=1"
  grep -q "STATUS=" "$T/notify.txt" || fail "no STATUS="
  grep -q "WATCHDOG=1" "$T/notify.txt" || fail "no WATCHDOG=1 with WATCHDOG_USEC set"
  log "notifications: $(tr '\n' ' ' < "$T/notify.txt")"
}

scenario_second_sigint() {
  start_env
  write_conf d1 $(free_port)
  export VL3_FAKE_WORKER_DELAY_MS=100000
  produce s 3
  start_daemon d1
  wait_ge "select count(*) from jobs where status='running'" 1 30
  local pid; pid=$(daemon_pid d1)
  kill -INT "$pid"; sleep 0.5
  kill -0 "$pid" || fail "first SIGINT should drain, not exit"
  kill -INT "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "second SIGINT did not exit"
  wait "$pid"; local rc=$?
  [ "$rc" = 130 ] || fail "second SIGINT exit status $rc, want 130"
}

scenario_drain() {
  # SIGTERM with jobs running: running ones finish and are stored, queued ones are handed back
  # (not committed), exit 0; a restart finishes the rest, each job answered once
  start_env
  WORKERS=2
  write_conf d1 $(free_port)
  export VL3_FAKE_WORKER_DELAY_MS=2000
  produce dr 6
  start_daemon d1
  wait_ge "select count(*) from jobs where status='running'" 2 30
  sleep 0.3
  log "SIGTERM with $(sql "select count(*) from jobs where status='running'") running"
  stop_daemon d1
  local d; d=$(done_count)
  [ "$d" -ge 2 ] || fail "running jobs were not finished during the drain ($d done)"
  [ "$d" -lt 6 ] || fail "all jobs done: the drain test did not catch jobs in flight"
  grep -q "stopping: draining" "$T/d1.log" || fail "no drain"
  export VL3_FAKE_WORKER_DELAY_MS=0
  start_daemon d1
  wait_done 6 60
  stop_daemon d1
  check_exactly_once dr 6
}

# The failures of the scenarios above, one after another in one run, with REAL vl3-worker
# processes on a tiny model instead of the fake: kill -9 of a worker, kill -9 of the daemon and a
# restart, PostgreSQL stopped and started, a broker down and up, a second daemon joining and
# leaving. Every job must end done exactly once, and every answer must equal what `vl3 run` says
# for the same clip and task (seeded sampling at temperature 1, so the six clip/task answers
# differ and an answer stored under the wrong job would show).
# real_setup: the tiny model in $T/model, clips a, b, c in $M (= $T/media), $T/worker.conf, and
# the table it_want (path, task, answer) of what `vl3 run` answers for each clip and task
# (seeded sampling at temperature 1, so the six answers differ)
real_setup() {
  M="$T/media"
  local c t
  mkdir -p "$M"
  "$BIN/vl3" model tiny --out "$T/model" --seed 7 >/dev/null || fail "vl3 model tiny failed"
  "$S/tools/gen_sample_video.sh" "$M/a.mp4" 3 96x96 || fail "clip a"
  "$S/tools/gen_sample_video.sh" "$M/b.mp4" 4 128x96 || fail "clip b"
  "$S/tools/gen_sample_video.sh" "$M/c.mp4" 2 64x64 || fail "clip c"
  write_worker_conf "$M"
  "$BIN/vl3-worker" --config "$T/worker.conf" --check-config >/dev/null || fail "worker config invalid"
  # the expected answers, from vl3 run (its trailing newline dropped)
  sql "create table it_want (path text, task text, answer text)" >/dev/null
  for c in a b c; do
    for t in caption qa; do
      local hex
      hex=$("$BIN/vl3" run --model "$T/model" --video "$M/$c.mp4" --fps 1 --max-frames 8 \
        --task "$t" --question "who?" --temperature 1 --seed 5 --max-new-tokens 8 2>/dev/null \
        | od -An -tx1 | tr -d ' \n')
      hex=${hex%0a}
      [ -n "$hex" ] || fail "vl3 run gave no answer for $c $t"
      sql "insert into it_want values ('$M/$c.mp4', '$t', convert_from(decode('$hex', 'hex'), 'UTF8'))" \
        >/dev/null || fail "could not store the expected answer"
    done
  done
  [ "$(sql "select count(distinct answer) from it_want")" = 6 ] || fail "the six expected answers are not distinct"
}

scenario_real_workers() {
  start_env
  local N=${N:-300}
  real_setup
  # jobs rw1..rw$1 .. rw$2 to the topic, cycling over the three clips
  produce_rw() {
    local clips=(a b c) i
    for i in $(seq "$1" "$2"); do
      echo "rw$i:{\"id\":\"rw$i\",\"input\":\"$M/${clips[i % 3]}.mp4\",\"tasks\":[\"caption\",{\"kind\":\"qa\",\"question\":\"who?\"}],\"sampling\":{\"fps\":1,\"max_frames\":8,\"mode\":\"exact\"},\"limits\":{\"temperature\":1,\"max_new_tokens\":8}}"
    done > "$T/produce.txt"
    kcat -b "$BOOT" -P -t jobs -K: -l "$T/produce.txt" || fail "kcat could not produce"
  }
  # the first half meets the worker kill, daemon kill, PostgreSQL and broker outages; the second
  # half is produced once the second daemon holds partitions, so both daemons share it
  local half=$((N / 2))
  produce_rw 1 "$half"
  local real=("[workers]" "path = $BIN/vl3-worker" "config = $T/worker.conf" "ping_interval = 500ms"
    "[jobs]" "timeout = 60s" "max_attempts = 3" "[kafka]" "max_in_flight = 8")
  WORKERS=2 write_conf d1 $(free_port) "${real[@]}"
  WORKERS=1 write_conf d2 $(free_port) "${real[@]}"
  start_daemon d1
  wait_done $((half * 10 / 100)) 90
  local w; w=$(pgrep -P "$(daemon_pid d1)" -f vl3-worker | head -n1)
  [ -n "$w" ] || fail "no vl3-worker found"
  log "kill -9 worker $w at $(done_count) done"; kill -9 "$w"
  wait_done $((half * 25 / 100)) 90
  log "kill -9 daemon at $(done_count) done"; kill -9 "$(daemon_pid d1)"
  sleep 0.5
  start_daemon d1
  wait_done $((half * 40 / 100)) 90
  pg_bounce 3
  wait_done $((half * 55 / 100)) 90
  log "broker 1 down at $(done_count) done"
  echo "down 1" > "$T/kafka/control"
  sleep 5
  echo "up 1" > "$T/kafka/control"
  wait_done "$half" 90
  log "second daemon joins at $(done_count) done"
  start_daemon d2
  wait_log "$T/d2.log" "partition assigned" 30 "d2 never got partitions"
  produce_rw $((half + 1)) "$N"
  wait_log "$T/d2.log" "job done" 30 "d2 did no work"
  log "second daemon leaves at $(done_count) done"
  stop_daemon d2
  [ "$(done_count)" -lt "$N" ] || fail "all done before d2 left: the leave was not exercised"
  wait_done "$N" 180
  stop_daemon d1
  local done; done=$(sql "select count(*) from jobs where job_id like 'rw%' and status='done'")
  [ "$done" = "$N" ] || fail "$done of $N jobs done"
  local rows; rows=$(sql "select count(*) from results where job_id like 'rw%'")
  [ "$rows" = "$((2 * N))" ] || fail "$rows result rows, want $((2 * N))"
  local good; good=$(sql "select count(*) from results r join jobs j using (job_id)
      join it_want w on w.path = j.path and w.task = r.task
      where r.job_id like 'rw%' and r.window_idx = 0 and r.answer = w.answer and
      r.question = case r.task when 'qa' then 'who?' else '' end")
  [ "$good" = "$((2 * N))" ] || {
    sql "select r.job_id, r.task, j.path, encode(convert_to(r.answer, 'UTF8'), 'hex') from results r
         join jobs j using (job_id) join it_want w on w.path = j.path and w.task = r.task
         where r.answer <> w.answer limit 5" >&2
    fail "$good answers equal vl3 run's, want $((2 * N))"; }
  # the videos table: one row per clip (redeliveries upsert it), probe info from the worker
  [ "$(sql "select count(*) from videos")" = 3 ] || fail "want 3 videos: $(sql "select path from videos")"
  for c in a b c; do
    local want_row; want_row="$(stat -c %s "$M/$c.mp4")|$(ffprobe -v error -select_streams v:0 \
      -show_entries stream=width,height -of csv=p=0:s=x "$M/$c.mp4")|h264"
    local got_row; got_row=$(sql "select size_bytes||'|'||width||'x'||height||'|'||codec from videos
      where path = '$M/$c.mp4' and duration_s > 0 and fps > 0")
    [ "$got_row" = "$want_row" ] || fail "videos row of $c: got [$got_row], want [$want_row]"
  done
  [ "$(sql "select count(*) from jobs j join videos v using (video_id) where j.job_id like 'rw%'
      and v.path = j.path")" = "$N" ] || fail "jobs not linked to their video"
  grep -q "worker exited worker=.* signal=9" "$T/d1.log" || fail "the worker kill was not seen"
  grep -q "postgresql connection lost" "$T/d1.log" || fail "the database outage was not seen"
  grep -q "vision batch" "$T/d1.log" || fail "no vision batch in the worker log"
  check_real_stats "rw" "$((2 * N))"
  log "exactly once with real workers: $N jobs, $rows answers, all equal to vl3 run"
  check_committed $(free_port)
}

# not a CTest case: `tests/daemon/it.sh build . throughput` prints the daemon's job rate with
# instant fake workers (Kafka + two PostgreSQL statements per job, no model)
scenario_throughput() {
  start_env
  local N=${N:-2000}
  WORKERS=4 LOGLEVEL=notice write_conf d1 $(free_port) "[kafka]" "max_in_flight = 256"
  produce t "$N"
  local t0; t0=$(date +%s.%N)
  start_daemon d1
  wait_done "$N" 300
  local t1; t1=$(date +%s.%N)
  stop_daemon d1
  check_exactly_once t "$N"
  log "throughput: $N jobs in $(echo "$t1 - $t0" | bc) s (including ~3 s group join): $(echo "$N / ($t1 - $t0)" | bc) jobs/s"
}

scenario_enqueue() {
  # unreachable brokers: a clear error, exit 1, within the probe timeout
  local out rc
  out=$("$BIN/vl3" enqueue -b 127.0.0.1:1 "$S/tests/daemon/it.sh" 2>&1); rc=$?
  [ "$rc" = 1 ] || fail "unreachable broker: exit $rc"
  echo "$out" | grep -q "could not reach the kafka brokers" || fail "unreachable broker message: $out"
  # generation limits go into the message's "limits" object (dry run: printed, not produced)
  out=$("$BIN/vl3" enqueue -n --temperature 0.5 --max-new-tokens 32 "$S/tests/daemon/it.sh") \
    || fail "vl3 enqueue --dry-run failed"
  echo "$out" | grep -q '"limits":{"max_new_tokens":32,"temperature":0.5}' || fail "limits: $out"
  start_env
  mkdir -p "$T/media/a/b"
  for i in $(seq 1 30); do touch "$T/media/a/v$i.mp4"; done
  for i in $(seq 1 10); do touch "$T/media/a/b/i$i.jpg"; done
  touch "$T/media/a/readme.txt" "$T/media/top.mkv"
  "$BIN/vl3" enqueue -r -b "$BOOT" -T jobs --tasks caption,qa -q "who?" "$T/media" > "$T/enqueue.out" 2>&1 \
    || { cat "$T/enqueue.out" >&2; fail "vl3 enqueue failed"; }
  grep -q 'enqueued 41 jobs to "jobs"' "$T/enqueue.out" || fail "enqueue summary: $(cat "$T/enqueue.out")"
  write_conf d1 $(free_port)
  start_daemon d1
  wait_done 41 60
  stop_daemon d1
  local good; good=$(sql "select count(*) from results r join jobs j using (job_id)
      where (r.task = 'caption' and r.answer = 'caption of ' || j.path || ' w0')
         or (r.task = 'qa' and r.answer = 'qa of ' || j.path || ' q=who? w0')")
  [ "$good" = 82 ] || fail "$good correct answers for 41 enqueued files, want 82"
  [ "$(sql "select count(*) from jobs where path like '%readme.txt'")" = 0 ] || fail "non-media file enqueued"
  [ "$(sql "select count(*) from jobs where job_id like 'f:%' and batch like 'b%'")" = 41 ] \
    || fail "enqueue job ids and batch"
}

# the archive workflow: incremental enqueue (same tree twice = each file once, a touched file
# re-indexed alone), --dry-run, vl3 search (text and --json), vl3 status per batch
scenario_archive() {
  start_env
  mkdir -p "$T/media/sub"
  for i in 1 2 3; do touch "$T/media/v$i.mp4"; done
  touch "$T/media/sub/p1.jpg"
  write_conf d1 $(free_port)
  local E=("$BIN/vl3" enqueue -c "$T/d1.conf" -r --window 65 --tasks caption,qa -q "who?")
  export VL3_FAKE_WORKER_DURATION=130 # two 65-s windows per file
  local out
  out=$("${E[@]}" -n "$T/media" 2>&1) || fail "dry run: $out"
  [ "$(echo "$out" | grep -c '^{"tasks"')" = 4 ] || fail "dry run before: $out"
  echo "$out" | grep -q "would enqueue 4 jobs, 0 already done" || fail "dry run summary: $out"
  [ "$(sql "select count(*) from jobs")" = "" ] || fail "the dry run created jobs"
  "${E[@]}" "$T/media" > "$T/e1.out" 2>&1 || fail "enqueue 1: $(cat "$T/e1.out")"
  grep -q 'enqueued 4 jobs to "jobs"' "$T/e1.out" || fail "enqueue 1: $(cat "$T/e1.out")"
  start_daemon d1
  wait_done 4 60
  [ "$(sql "select count(*) from results")" = 16 ] || fail "results after the first run"
  # second run with the database: nothing sent
  out=$("${E[@]}" -n "$T/media" 2>&1) || fail "dry run 2: $out"
  [ "$(echo "$out" | grep -c '^already done: f:')" = 4 ] || fail "dry run after: $out"
  echo "$out" | grep -q "would enqueue 0 jobs, 4 already done" || fail "dry run 2 summary: $out"
  "${E[@]}" "$T/media" > "$T/e2.out" 2>&1 || fail "enqueue 2: $(cat "$T/e2.out")"
  grep -q 'enqueued 0 jobs .* 4 already done' "$T/e2.out" || fail "enqueue 2: $(cat "$T/e2.out")"
  # without the database: the same ids are sent, and vl3d skips them as done
  "$BIN/vl3" enqueue -b "$BOOT" -T jobs -r --window 65 --tasks caption,qa -q "who?" "$T/media" \
    > "$T/e3.out" 2>&1 || fail "enqueue 3: $(cat "$T/e3.out")"
  grep -q 'enqueued 4 jobs' "$T/e3.out" || fail "enqueue 3: $(cat "$T/e3.out")"
  local port; port=$(awk -F: '/^listen/ {print $2}' "$T/d1.conf")
  for _ in $(seq 1 100); do
    [ "$(metric "$port" vl3_jobs_consumed_total)" = 8 ] && break; sleep 0.2
  done
  [ "$(metric "$port" vl3_jobs_consumed_total)" = 8 ] || fail "the resent jobs were not consumed"
  sleep 1
  [ "$(sql "select count(*) from jobs")" = 4 ] || fail "jobs after resending done ids"
  [ "$(sql "select count(*) from results")" = 16 ] || fail "results after resending done ids"
  # a changed file (mtime) is re-indexed, alone
  touch -d '2001-02-03 04:05:06' "$T/media/v2.mp4"
  "${E[@]}" "$T/media" > "$T/e4.out" 2>&1 || fail "enqueue 4: $(cat "$T/e4.out")"
  grep -q 'enqueued 1 jobs .* 3 already done' "$T/e4.out" || fail "enqueue 4: $(cat "$T/e4.out")"
  wait_done 5 60
  [ "$(sql "select count(*) from results")" = 20 ] || fail "results after the touch"
  [ "$(sql "select count(*) from jobs where path = '$T/media/v2.mp4'")" = 2 ] || fail "v2 jobs"
  [ "$(sql "select count(distinct batch) from jobs")" = 2 ] || fail "batches"
  # --force redoes everything under new ids
  "${E[@]}" -n --force "$T/media" > "$T/e5.out" 2>&1 || fail "force: $(cat "$T/e5.out")"
  grep -q "would enqueue 4 jobs, 0 already done" "$T/e5.out" || fail "force: $(cat "$T/e5.out")"
  # search: a word of one stored answer, restricted to its file and task
  local row word path task range
  row=$(sql "select (tsvector_to_array(answer_tsv))[1], path, task, time_range from search_hits_all
             where window_idx = 1 and task = 'qa' order by path limit 1")
  IFS='|' read -r word path task range <<< "$row"
  [ "$range" = "00:01:05-00:02:10" ] || fail "time range of window 1: $row"
  out=$("$BIN/vl3" search -c "$T/d1.conf" --task "$task" --path "*/$(basename "$path")" "$word") \
    || fail "vl3 search failed"
  echo "$out" | grep -qF "$path  00:01:05-00:02:10  qa: who?" || fail "search: [$word] $out"
  echo "$out" | grep -qF "$path  00:00:00-00:01:05  qa: who?" || fail "search window 0: $out"
  echo "$out" | grep -q '\[\[' || fail "search snippet not marked: $out"
  [ "$(echo "$out" | grep -c "^/")" = 2 ] || fail "search hits: $out"
  local want; want=$(sql "select count(*) from search_hits('$word')")
  "$BIN/vl3" search -c "$T/d1.conf" --json --limit 1000 "$word" > "$T/s.json" || fail "search --json"
  local got; got=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); print(len(h)); assert all("time_range" in x and "snippet" in x for x in h)' "$T/s.json") \
    || fail "search --json does not parse: $(head -c 300 "$T/s.json")"
  [ "$got" = "$want" ] && [ "$got" -gt 0 ] || fail "search --json: $got hits, want $want"
  "$BIN/vl3" search -c "$T/d1.conf" zzzqqqnothing > "$T/s0.out" 2>&1 || fail "empty search failed"
  grep -q "no answer matches" "$T/s0.out" || fail "empty search: $(cat "$T/s0.out")"
  # a file that fails: its batch shows it with the reason
  touch "$T/media/x_fail.mp4"
  "${E[@]}" "$T/media" > "$T/e6.out" 2>&1 || fail "enqueue 6: $(cat "$T/e6.out")"
  grep -q 'enqueued 1 jobs .* 4 already done' "$T/e6.out" || fail "enqueue 6: $(cat "$T/e6.out")"
  wait_ge "select count(*) from jobs where status = 'failed'" 1 30
  local b6; b6=$(sed -n 's/^batch \([^:]*\):.*/\1/p' "$T/e6.out")
  # status per batch
  out=$("$BIN/vl3" status -c "$T/d1.conf") || fail "status: $out"
  echo "$out" | grep -q "^  $b6  1 total, 0 done, 1 failed, 0 pending" || fail "status batch $b6: $out"
  echo "$out" | grep -A1 "^      failed  $T/media/x_fail.mp4" | grep -q "could not decode" \
    || fail "status failed file: $out"
  local b1; b1=$(sed -n 's/^batch \([^:]*\):.*/\1/p' "$T/e1.out")
  echo "$out" | grep -q "^  $b1 .*4 done, 0 failed, 0 pending" || fail "status batch $b1: $out"
  log "status: $out"
  stop_daemon d1
}

# the archive workflow with real vl3-worker processes on a tiny model: a tree enqueued twice is
# answered once, a touched clip alone again; a word of a stored answer is found by vl3 search with
# its window's time range
scenario_archive_real() {
  start_env
  local M="$T/media"
  mkdir -p "$M/sub"
  "$BIN/vl3" model tiny --out "$T/model" --seed 7 >/dev/null || fail "vl3 model tiny failed"
  "$S/tools/gen_sample_video.sh" "$M/a.mp4" 3 96x96 || fail "clip a"
  "$S/tools/gen_sample_video.sh" "$M/sub/b.mp4" 3 64x64 || fail "clip b"
  write_worker_conf "$M"
  WORKERS=2 write_conf d1 $(free_port) "[workers]" "path = $BIN/vl3-worker" \
    "config = $T/worker.conf" "[jobs]" "timeout = 60s"
  local E=("$BIN/vl3" enqueue -c "$T/d1.conf" -r --window 2 --fps 1 --max-frames 4
           --max-new-tokens 24 --temperature 1 --tasks caption)
  "${E[@]}" "$M" > "$T/e1.out" 2>&1 || fail "enqueue 1: $(cat "$T/e1.out")"
  grep -q 'enqueued 2 jobs' "$T/e1.out" || fail "enqueue 1: $(cat "$T/e1.out")"
  start_daemon d1
  wait_done 2 120
  [ "$(sql "select count(*) from results")" = 4 ] || fail "results: $(sql "select count(*) from results")"
  check_real_stats "" 4
  "${E[@]}" "$M" > "$T/e2.out" 2>&1 || fail "enqueue 2: $(cat "$T/e2.out")"
  grep -q 'enqueued 0 jobs .* 2 already done' "$T/e2.out" || fail "enqueue 2: $(cat "$T/e2.out")"
  touch -d '2001-02-03 04:05:06' "$M/sub/b.mp4"
  "${E[@]}" "$M" > "$T/e3.out" 2>&1 || fail "enqueue 3: $(cat "$T/e3.out")"
  grep -q 'enqueued 1 jobs .* 1 already done' "$T/e3.out" || fail "enqueue 3: $(cat "$T/e3.out")"
  wait_done 3 120
  [ "$(sql "select count(*) from jobs")" = 3 ] || fail "jobs after the touch"
  [ "$(sql "select count(*) from jobs where path = '$M/sub/b.mp4'")" = 2 ] || fail "b not redone"
  [ "$(sql "select count(*) from results")" = 6 ] || fail "results after the touch"
  # a word of the stored answer of a.mp4's second window (2 s to 3 s)
  local word
  word=$(sql "select word from ts_stat(\$q\$select answer_tsv from results r join jobs j
              using (job_id) where j.path = '$M/a.mp4' and r.window_idx = 1\$q\$)
              where word ~ '^[[:alnum:]]{2,}\$' order by word limit 1")
  [ -n "$word" ] || fail "no plain word in the answer: $(psql "$PGC" -XAtqc "select window_idx, answer, answer_tsv from results" 2>&1)"
  local out
  out=$("$BIN/vl3" search -c "$T/d1.conf" --path "$M/a.mp4" --limit 100 "$word") \
    || fail "vl3 search failed"
  echo "$out" | grep -qF "$M/a.mp4  00:00:02-00:00:03  caption" \
    || fail "search [$word]: $out (answers: $(sql "select window_idx, answer from results"))"
  "$BIN/vl3" search -c "$T/d1.conf" --json --limit 100 "$word" > "$T/s.json" || fail "search --json"
  python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); assert any(x["time_range"] == "00:00:02-00:00:03" and x["path"].endswith("/a.mp4") for x in h)' "$T/s.json" \
    || fail "search --json: $(cat "$T/s.json")"
  log "searched [$word]: $(echo "$out" | head -n 2 | tr '\n' ' ')"
  stop_daemon d1
}

# scenarios kept in their own files (tests/daemon/scenarios/*.sh) use the helpers above
for f in "$S"/tests/daemon/scenarios/*.sh; do . "$f"; done

"scenario_$SCEN" || fail "scenario returned $?"
log "PASS"
