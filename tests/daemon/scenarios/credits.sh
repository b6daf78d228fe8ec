# credits.sh: protocol level 2 with fake workers (issue 10). Two workers offering 4 credits each
# hold several jobs at once; one is killed -9 while holding several and a job that crashes its
# worker every time is mixed in. With jobs.max_attempts = 1, a single charged crash fails a job:
# every good job must still end done exactly once (the killed worker's jobs are suspects, re-run
# alone, not charged), and the crasher fails alone as poison. Sourced by it.sh:
# `it.sh BUILD SOURCE credits`.

scenario_credits() {
  start_env
  local port=$((20000 + RANDOM % 20000)) N=60
  WORKERS=2 write_conf d1 "$port" "[jobs]" "max_attempts = 1"
  export VL3_FAKE_WORKER_CREDITS=4 VL3_FAKE_WORKER_DELAY_MS=400 VL3_FAKE_WORKER_LOG="$T/exec.log"
  produce k "$N"
  produce_raw x1 '{"id": "crasher", "input": "/m/crash.mp4", "tasks": ["caption"]}'
  start_daemon d1
  local held=0
  for _ in $(seq 1 300); do
    held=$(metric "$port" vl3_worker_jobs_held); held=${held:-0}
    [ "$held" -ge 6 ] && break
    sleep 0.1
  done
  [ "$held" -ge 6 ] || fail "workers never held more than one job each (held $held)"
  local w; w=$(worker_pids d1 | head -n1)
  [ -n "$w" ] || fail "no worker found"
  log "kill -9 worker $w with $held jobs held by the two workers"
  kill -9 "$w"
  wait_ge "select count(*) from jobs where status in ('done', 'failed')" $((N + 1)) 90
  check_exactly_once k "$N"
  [ "$(sql "select status from jobs where job_id = 'crasher'")" = failed ] || fail "crasher not failed"
  sql "select last_error from jobs where job_id = 'crasher'" | grep -q "^poison: 1 attempts" \
    || fail "crasher reason: $(sql "select last_error from jobs where job_id = 'crasher'")"
  grep -q "worker ready worker=.*proto=2 credits=4" "$T/d1.log" || fail "no level-2 hello"
  grep -q "runs alone next" "$T/d1.log" || fail "no suspect was re-run alone"
  grep -q "dispatching suspect job=crasher alone" "$T/d1.log" || fail "the crasher never ran alone"
  local sus; sus=$(metric "$port" vl3_jobs_suspected_total)
  [ "${sus:-0}" -ge 2 ] || fail "suspects: ${sus:-none}"
  [ "$(metric "$port" vl3_jobs_poisoned_total)" = 1 ] || fail "want exactly one poisoned job"
  log "credits: $N jobs done once after a kill holding several, crasher failed alone, $sus suspects"
  stop_daemon d1
}
