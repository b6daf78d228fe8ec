# chaos.sh: the chaos scenario of it.sh (sourced by it.sh; run as `it.sh BUILD SOURCE chaos`).
#
# Many jobs through real vl3-worker processes on a tiny model, hostile inputs mixed with good
# ones, faults injected while they run: a worker killed (kill -9), PostgreSQL crashed and
# restarted, a broker down, the daemon killed and restarted. At the end it reports jobs done,
# failed (with their reasons), dead-lettered, lost and duplicated, and requires: every good job
# done, every hostile job failed or dead-lettered with a reason naming the problem, nothing lost
# (every job that was not dead-lettered ended in done or failed) and nothing duplicated (at most
# one result row per job, task and window).
# CHAOS_N (default 60) good jobs; they cycle over three clips and an image.

# the dead-letter topic's records, and the distinct origins (partition, offset) among them
dead_letters() { kcat -b "$BOOT" -C -t dlq -e -q -f '%k|%h|%s\n' 2>/dev/null; }
dlq_origins() { grep -o 'vl3-partition=[0-9]*,vl3-offset=[0-9]*' "$T/dlq.txt" | sort -u; }

scenario_chaos() {
  start_env
  local N=${CHAOS_N:-60} M="$T/media" i
  mkdir -p "$M"
  "$BIN/vl3" model tiny --out "$T/model" --seed 3 >/dev/null || fail "vl3 model tiny failed"
  "$S/tools/gen_sample_video.sh" "$M/a.mp4" 2 64x64 || fail "clip a"
  "$S/tools/gen_sample_video.sh" "$M/b.mp4" 3 96x64 || fail "clip b"
  "$S/tools/gen_sample_video.sh" "$M/c.mp4" 2 80x80 || fail "clip c"
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=90x70 -frames:v 1 "$M/d.png" \
    || fail "image d"
  head -c 20000 /dev/urandom > "$M/garbage.mp4"                      # not a video at all
  head -c "$(( $(stat -c %s "$M/b.mp4") / 3 ))" "$M/b.mp4" > "$M/truncated.mp4" # cut short
  printf 'P6\n99999 99999\n255\n' > "$M/liar.ppm"                    # a header that lies
  mkdir -p "$T/outside" && cp "$M/a.mp4" "$T/outside/secret.mp4"
  ln -s "$T/outside/secret.mp4" "$M/link.mp4"                        # a way out of the root
  write_worker_conf "$M"
  local clips=(a.mp4 b.mp4 c.mp4 d.png) good="" hostile=""
  for i in $(seq 1 "$N"); do
    echo "ch$i:{\"id\":\"ch$i\",\"input\":\"$M/${clips[i % 4]}\",\"tasks\":[\"caption\",{\"kind\":\"qa\",\"question\":\"what?\"}],\"sampling\":{\"fps\":1,\"max_frames\":4},\"limits\":{\"max_new_tokens\":6}}"
  done > "$T/good.txt"
  # hostile jobs that must fail with a reason (explicit ids: they reach a worker or the policy)
  cat > "$T/hostile.txt" <<JOBS
hx1:{"id":"hx-garbage","input":"$M/garbage.mp4","tasks":["caption"]}
hx2:{"id":"hx-truncated","input":"$M/truncated.mp4","tasks":["ocr"],"sampling":{"max_frames":4}}
hx3:{"id":"hx-missing","input":"$M/nothing-here.mp4","tasks":["caption"]}
hx4:{"id":"hx-symlink","input":"$M/link.mp4","tasks":["caption"]}
hx5:{"id":"hx-liar","input":"$M/liar.ppm","tasks":["ocr"]}
JOBS
  # messages that must be dead-lettered, never reach a worker
  cat > "$T/dead.txt" <<JOBS
dl1:{"input": "$M/a.mp4", "tasks": ["caption"
dl2:{"input": 7, "tasks": ["caption"]}
dl3:{"input": "$M/a.mp4", "tasks": ["juggle"]}
dl4:{"input": "/etc/shadow", "tasks": ["ocr"]}
dl5:{"input": "$M/a.mp4", "tasks": ["ocr"], "sampling": {"max_frames": 1000000}}
dl6:not json at all
JOBS
  # good and hostile interleaved: each third of the good jobs, then a hostile and a dead letter
  local third=$((N / 3))
  { sed -n "1,${third}p" "$T/good.txt"; sed -n 1,2p "$T/hostile.txt"; sed -n 1,3p "$T/dead.txt"
    sed -n "$((third + 1)),$((2 * third))p" "$T/good.txt"; sed -n 3,5p "$T/hostile.txt"
    sed -n "$((2 * third + 1)),${N}p" "$T/good.txt"; sed -n 4,6p "$T/dead.txt"; } > "$T/produce.txt"
  kcat -b "$BOOT" -P -t jobs -K: -l "$T/produce.txt" || fail "kcat could not produce"
  local real=("[workers]" "path = $BIN/vl3-worker" "config = $T/worker.conf" "ping_interval = 500ms"
    "[jobs]" "timeout = 60s" "max_attempts = 3" "input_roots = $M" "max_frames = 500"
    "[kafka]" "max_in_flight = 8")
  local port=$(free_port)
  WORKERS=2 write_conf d1 "$port" "${real[@]}"
  start_daemon d1
  wait_done $((N / 6)) 120
  local w; w=$(pgrep -P "$(daemon_pid d1)" -f vl3-worker | head -n1)
  [ -n "$w" ] || fail "no vl3-worker found"
  log "chaos: kill -9 worker $w at $(done_count) done"; kill -9 "$w"
  wait_done $((N / 3)) 120
  pg_bounce 2
  wait_done $((N / 2)) 120
  log "chaos: broker 2 down at $(done_count) done"
  echo "down 2" > "$T/kafka/control"; sleep 4; echo "up 2" > "$T/kafka/control"
  wait_done $((2 * N / 3)) 120
  log "chaos: kill -9 daemon at $(done_count) done"; kill -9 "$(daemon_pid d1)"
  sleep 0.5
  start_daemon d1
  wait_ge "select count(*) from jobs where status in ('done','failed')" $((N + 5)) 240
  # dead letters are produced as their partitions are consumed: wait for all six origins
  local k
  for k in $(seq 1 300); do
    dead_letters > "$T/dlq.txt"
    [ "$(dlq_origins | wc -l)" -ge 6 ] && break
    sleep 0.2
  done
  stop_daemon d1
  # the report
  local done failed dead lost dup
  done=$(sql "select count(*) from jobs where status='done'")
  failed=$(sql "select count(*) from jobs where status='failed'")
  dead_letters > "$T/dlq.txt"
  dead=$(dlq_origins | wc -l)
  local dead_records; dead_records=$(grep -c . "$T/dlq.txt")
  sql "create table chaos_want (job_id text)" >/dev/null
  { for i in $(seq 1 "$N"); do echo "ch$i"; done
    for i in garbage truncated missing symlink liar; do echo "hx-$i"; done; } > "$T/want.txt"
  psql "$PGC" -Xqc "\\copy chaos_want from '$T/want.txt'" >/dev/null || fail "copy ids"
  lost=$(sql "select count(*) from chaos_want w where not exists
      (select 1 from jobs j where j.job_id = w.job_id and j.status in ('done', 'failed'))")
  dup=$(sql "select count(*) from (select job_id, task, window_idx from results
      group by 1, 2, 3 having count(*) > 1) x")
  log "chaos report: $((N + 5 + 6)) messages: done=$done failed=$failed dead_lettered=$dead" \
    "(records $dead_records: a message whose offset was not committed when the daemon was" \
    "killed is dead-lettered again, at least once) lost=$lost duplicated=$dup"
  sql "select '  failed ' || job_id || ': ' || coalesce(last_error, '?') from jobs where status='failed' order by job_id" >&2
  sed 's/^/  dead letter /' "$T/dlq.txt" | cut -c1-200 >&2
  [ "$lost" = 0 ] || fail "$lost jobs lost: $(sql "select string_agg(job_id, ' ') from chaos_want w
      where not exists (select 1 from jobs j where j.job_id = w.job_id and j.status in ('done','failed'))")"
  [ "$dup" = 0 ] || fail "$dup duplicated answers"
  [ "$(sql "select count(*) from jobs where job_id like 'ch%' and status='done'")" = "$N" ] \
    || fail "good jobs not all done: $(sql "select job_id||'='||status||':'||coalesce(last_error,'') from jobs where job_id like 'ch%' and status<>'done' limit 5")"
  [ "$(sql "select count(*) from results where job_id like 'ch%'")" = "$((2 * N))" ] \
    || fail "good jobs: $(sql "select count(*) from results where job_id like 'ch%'") answers, want $((2 * N))"
  [ "$(sql "select count(*) from jobs where job_id like 'hx-%' and status='failed' and last_error <> ''")" = 5 ] \
    || fail "hostile jobs: $(sql "select string_agg(job_id||'='||status, ' ') from jobs where job_id like 'hx-%'")"
  sql "select last_error from jobs where job_id='hx-missing'" | grep -qi "no such file\|not found\|could not open" \
    || fail "missing file reason: $(sql "select last_error from jobs where job_id='hx-missing'")"
  sql "select last_error from jobs where job_id='hx-symlink'" | grep -qi "link\|outside\|root" \
    || fail "symlink reason: $(sql "select last_error from jobs where job_id='hx-symlink'")"
  [ "$dead" = 6 ] || fail "want 6 dead-lettered messages, got $dead"
  [ "$(sql "select count(*) from jobs where path like '%shadow%' or path like '%outside%'")" = 0 ] \
    || fail "a refused input reached the jobs table"
  grep -q "worker exited worker=.* signal=9" "$T/d1.log" || fail "the worker kill was not seen"
  grep -q "postgresql connection lost" "$T/d1.log" || fail "the database outage was not seen"
}
