#!/usr/bin/env bash
# test_worker_e2e.sh: vl3d drives the REAL vl3-worker on a tiny model, end to end:
#   Kafka mock -> vl3d -> vl3-worker (decode, DiffFP, vision, LLM) -> PostgreSQL.
#   test_worker_e2e.sh BUILD_DIR SOURCE_DIR FIXTURE_DIR
# FIXTURE_DIR holds model/ (vl3 model tiny) and the clips of test_worker_proc.c. Four jobs: a
# caption+qa job, a windowed job (2 windows x 2 tasks), a corrupt video, which must end
# 'failed' with the worker's decode error while the others end 'done' with their answers, and a
# generated 10-minute clip enqueued by `vl3 enqueue` with the default sampling, which must be
# covered end to end: windows 0-180, 180-360, 360-540, 540-600 s with 180, 180, 180 and 60
# frames sampled, 1 s apart.
# Every wait has a deadline; teardown stops what it started. Exit 0 = pass.
set -uo pipefail
B=${1:?build dir}; S=${2:?source dir}; FX=${3:?fixture dir}
BIN=$B/bin
T=$(mktemp -d /tmp/vl3-wk-e2e-XXXXXX)
chmod 755 "$T"
DPID=

log() { echo "[worker-e2e $(date +%T)] $*" >&2; }
fail() {
  log "FAIL: $*"
  for f in "$T"/*.log; do [ -f "$f" ] && { echo "---- $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }; done
  exit 1
}
teardown() {
  [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null
  "$S/tests/harness/kafka-harness" stop "$T/kafka" >/dev/null 2>&1
  "$S/tests/harness/pg-harness" stop "$T/pg" >/dev/null 2>&1
  [ -n "${VL3_TEST_KEEP:-}" ] || rm -rf "$T"
}
trap teardown EXIT

"$S/tests/harness/kafka-harness" start "$T/kafka" "$BIN/kafka-mock" --brokers 1 \
  --topic jobs:2 --topic dlq:1 >/dev/null || fail "kafka mock did not start"
"$S/tests/harness/pg-harness" start "$T/pg" >/dev/null || fail "postgres did not start"
BOOT=$(cat "$T/kafka/bootstrap"); PGC=$(cat "$T/pg/conninfo")
sql() { psql "$PGC" -XAtqc "$1" 2>/dev/null; }

# 10 minutes of 160x120 video: 10 s encoded once, looped with stream copy
mkdir -p "$T/media"; chmod 755 "$T/media"
ffmpeg -hide_banner -loglevel error -y -f lavfi -t 10 -i testsrc2=size=160x120:rate=10 \
  -c:v libx264 -pix_fmt yuv420p -g 10 -bf 0 "$T/ten.mp4" || fail "could not encode the clip"
ffmpeg -hide_banner -loglevel error -y -stream_loop 59 -i "$T/ten.mp4" -c copy "$T/media/long.mp4" \
  || fail "could not loop the clip"
chmod 644 "$T/media/long.mp4"

cat > "$T/worker.conf" <<CONF
model = $FX/model
backend = cpu
threads = 1
decode_threads = 1
[media]
roots = $FX:$T/media
[generate]
max_new_tokens = 8
seed = 5
[log]
level = info
CONF
"$BIN/vl3-worker" --config "$T/worker.conf" --check-config >/dev/null || fail "worker config invalid"

cat > "$T/vl3d.conf" <<CONF
shutdown_timeout = 20s
[kafka]
brokers = $BOOT
topic = jobs
group = vl3d-worker-e2e
dlq_topic = dlq
commit_interval = 200ms
[pg]
conninfo = $PGC
[workers]
count = 1
path = $BIN/vl3-worker
config = $T/worker.conf
ping_interval = 500ms
[jobs]
timeout = 60s
max_attempts = 2
[log]
level = info
CONF

{
  echo "w1:{\"id\":\"w1\",\"input\":\"$FX/a.mp4\",\"tasks\":[\"caption\",{\"kind\":\"qa\",\"question\":\"What is shown?\"}],\"sampling\":{\"fps\":1,\"max_frames\":8,\"mode\":\"exact\"},\"limits\":{\"temperature\":0.8,\"max_new_tokens\":12}}"
  echo "w2:{\"id\":\"w2\",\"input\":\"$FX/b.mp4\",\"tasks\":[\"caption\",\"ocr\"],\"sampling\":{\"fps\":1,\"max_frames\":8,\"mode\":\"exact\",\"window\":3}}"
  echo "w3:{\"id\":\"w3\",\"input\":\"$FX/corrupt.mp4\",\"tasks\":[\"caption\"]}"
} > "$T/produce.txt"
kcat -b "$BOOT" -P -t jobs -K: -l "$T/produce.txt" || fail "kcat could not produce"
# the long clip with every sampling default (no --fps, --max-frames or --window)
"$BIN/vl3" enqueue -c "$T/vl3d.conf" --tasks caption "$T/media/long.mp4" > "$T/enqueue.log" 2>&1 \
  || fail "vl3 enqueue failed: $(cat "$T/enqueue.log")"

setsid "$BIN/vl3d" -c "$T/vl3d.conf" >> "$T/vl3d.log" 2>&1 &
DPID=$!

ok=0
for _ in $(seq 1 600); do
  d=$(sql "select count(*) from jobs where status='done'"); f=$(sql "select count(*) from jobs where status='failed'")
  [ "${d:-0}" -ge 3 ] && [ "${f:-0}" -ge 1 ] && { ok=1; break; }
  kill -0 "$DPID" 2>/dev/null || fail "vl3d exited"
  sleep 0.2
done
[ "$ok" = 1 ] || fail "timeout: $(sql "select job_id||':'||status from jobs" | tr '\n' ' ')"

[ "$(sql "select status from jobs where job_id='w1'")" = done ] || fail "w1 not done"
[ "$(sql "select status from jobs where job_id='w2'")" = done ] || fail "w2 not done"
[ "$(sql "select status from jobs where job_id='w3'")" = failed ] || fail "w3 not failed"
sql "select last_error from jobs where job_id='w3'" | grep -qi "decode\|invalid\|could not" \
  || fail "w3 error does not name the decode failure: $(sql "select last_error from jobs where job_id='w3'")"
[ "$(sql "select count(*) from results where job_id='w1'")" = 2 ] || fail "w1 wants 2 results"
[ "$(sql "select count(*) from results where job_id='w2'")" = 4 ] || fail "w2 wants 4 results"
[ "$(sql "select count(distinct window_idx) from results where job_id='w2'")" = 2 ] \
  || fail "w2 wants 2 windows"
[ "$(sql "select count(*) from results where job_id in ('w1','w2') and generated_tokens > 0")" = 6 ] \
  || fail "results without generated tokens"
[ "$(sql "select count(*) from results where job_id='w1' and task='qa' and question='What is shown?'")" = 1 ] \
  || fail "w1 qa row missing"
sql "select job_id, task, window_idx, start_s, end_s, frames_sampled, sample_interval_s, generated_tokens, left(answer, 40) from results order by 1,2,3" >&2

# the default sampling covers the 10-minute clip end to end: one row per 180-s window
long=$(sql "select string_agg(r.window_idx||':'||r.start_s||'-'||r.end_s||':'||r.frames_sampled||':'||r.sample_interval_s, ',' order by r.window_idx)
            from results r join jobs j using (job_id) where j.path = '$T/media/long.mp4' and j.status = 'done'")
[ "$long" = "0:0-180:180:1,1:180-360:180:1,2:360-540:180:1,3:540-600:60:1" ] \
  || fail "the 10-minute clip is not covered by 4 windows at 1 fps: $long"
# every window of every job says how densely it was sampled: w2's 3-s windows hold 3 frames
[ "$(sql "select count(*) from results where job_id='w2' and frames_sampled = 3 and sample_interval_s = 1")" = 4 ] \
  || fail "w2 rows lack frames_sampled/sample_interval_s"

# the stored answer is exactly what `vl3 run` says for the same video, task and sampling
want=$("$BIN/vl3" run --model "$FX/model" --video "$FX/a.mp4" --fps 1 --max-frames 8 --task caption \
  --temperature 0.8 --seed 5 --max-new-tokens 12 2>/dev/null | od -An -tx1 | tr -d ' \n')
want=${want%0a}  # vl3 run ends the answer with a newline
got=$(sql "select encode(convert_to(answer, 'UTF8'), 'hex') from results where job_id='w1' and task='caption'")
[ -n "$want" ] && [ "$got" = "$want" ] || fail "w1 caption differs from vl3 run: db=$got run=$want"

kill -TERM "$DPID"
for _ in $(seq 1 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DPID" 2>/dev/null && fail "vl3d did not stop within 30 s"
wait "$DPID"; rc=$?; DPID=
[ "$rc" -eq 0 ] || fail "vl3d exited with $rc"
grep -q "worker ready" "$T/vl3d.log" || fail "the worker never said hello"
grep -q "vision batch" "$T/vl3d.log" || fail "no vision batch in the worker log"
log "ok: 3 jobs done (6 answers + 4 windows of the 10-minute clip), the corrupt one failed"
