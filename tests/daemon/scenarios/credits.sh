# credits.sh: protocol level 2 with fake workers (issue 10). Two workers offering 4 credits each
# hold several jobs at once; one is killed -9 while holding several and a job that crashes its
# worker every time is mixed in. With jobs.max_attempts = 1, a single charged crash fails a job:
# every good job must still end done exactly once (the killed worker's jobs are suspects, re-run
# alone, not charged), and the crasher fails alone as poison. Sourced by it.sh:
# `it.sh BUILD SOURCE credits`.

# wait_held PORT N: until vl3d's workers hold at least N jobs between them (at most 30 s);
# prints how many they hold
wait_held() {
  local held=0
  for _ in $(seq 1 300); do
    held=$(metric "$1" vl3_worker_jobs_held); held=${held:-0}
    [ "$held" -ge "$2" ] && break
    sleep 0.1
  done
  echo "$held"
}

scenario_credits() {
  start_env
  local port=$(free_port) N=60
  WORKERS=2 write_conf d1 "$port" "[jobs]" "max_attempts = 1"
  export VL3_FAKE_WORKER_CREDITS=4 VL3_FAKE_WORKER_DELAY_MS=400 VL3_FAKE_WORKER_LOG="$T/exec.log"
  produce k "$N"
  produce_raw x1 '{"id": "crasher", "input": "/m/crash.mp4", "tasks": ["caption"]}'
  start_daemon d1
  local held; held=$(wait_held "$port" 6)
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
  # held with others when it crashed (the usual case), it was not charged and ran again alone;
  # dispatched last, it may have crashed alone at once (charged: poison after one attempt)
  if grep -q "job=crasher held with" "$T/d1.log"; then
    grep -q "dispatching suspect job=crasher alone" "$T/d1.log" || fail "the crasher never ran alone"
  fi
  local sus; sus=$(metric "$port" vl3_jobs_suspected_total)
  [ "${sus:-0}" -ge 2 ] || fail "suspects: ${sus:-none}"
  [ "$(metric "$port" vl3_jobs_poisoned_total)" = 1 ] || fail "want exactly one poisoned job"
  log "credits: $N jobs done once after a kill holding several, crasher failed alone, $sus suspects"
  stop_daemon d1
}

# produce_real PREFIX FROM TO [FPS MAX_FRAMES MAX_NEW_TOKENS]: jobs PREFIX<i> over the three
# clips of real_setup (caption + qa; by default the sampling and limits of the expected answers)
produce_real() {
  local clips=(a b c) i fps=${4:-1} mf=${5:-8} tok=${6:-8}
  for i in $(seq "$2" "$3"); do
    echo "$1$i:{\"id\":\"$1$i\",\"input\":\"$M/${clips[i % 3]}.mp4\",\"tasks\":[\"caption\",{\"kind\":\"qa\",\"question\":\"who?\"}],\"sampling\":{\"fps\":$fps,\"max_frames\":$mf,\"mode\":\"exact\"},\"limits\":{\"temperature\":1,\"max_new_tokens\":$tok}}"
  done > "$T/produce.txt"
  kcat -b "$BOOT" -P -t jobs -K: -l "$T/produce.txt" || fail "kcat could not produce"
}

# check_real_answers PREFIX N: N jobs done, each answer equal to vl3 run's
check_real_answers() {
  local done; done=$(sql "select count(*) from jobs where job_id like '$1%' and status='done'")
  [ "$done" = "$2" ] || fail "$done of $2 jobs done"
  local good; good=$(sql "select count(*) from results r join jobs j using (job_id)
      join it_want w on w.path = j.path and w.task = r.task
      where r.job_id like '$1%' and r.window_idx = 0 and r.answer = w.answer and
      r.question = case r.task when 'qa' then 'who?' else '' end")
  [ "$good" = "$((2 * $2))" ] || fail "$good answers equal vl3 run's, want $((2 * $2))"
}

# credits_daemon NAME PORT CREDITS: a daemon with one real worker holding up to CREDITS jobs
credits_daemon() {
  WORKERS=1 write_conf "$1" "$2" "[workers]" "path = $BIN/vl3-worker" "config = $T/worker.conf" \
    "credits = $3" "ping_interval = 500ms" "[jobs]" "timeout = 60s" "max_attempts = 3" \
    "[kafka]" "max_in_flight = 32"
}

# Real vl3-worker on the tiny model holding 8 jobs: windows of different jobs share vision
# batches and decode steps (the worker's own counts in RESULT.stats, summed by vl3d's metrics,
# and its log), and every answer still equals `vl3 run`'s.
scenario_credits_real() {
  start_env
  real_setup
  printf '[jobs]\ncredits = 8\nmax_queued = 16\n[batch]\nvision_wait = 300ms\n' >> "$T/worker.conf"
  "$BIN/vl3-worker" --config "$T/worker.conf" --check-config >/dev/null || fail "worker config invalid"
  local N=${N:-24} port=$(free_port)
  credits_daemon d1 "$port" 8
  produce_real cr 1 "$N"
  start_daemon d1
  # frozen until vl3d has handed it 8 jobs, the worker then starts on all of them at once
  wait_log "$T/d1.log" "worker ready worker=0" 60 "the worker did not say hello"
  local w held=0; w=$(pgrep -P "$(daemon_pid d1)" -f vl3-worker | head -n1)
  [ -n "$w" ] || fail "no vl3-worker found"
  kill -STOP "$w"
  held=$(wait_held "$port" 8)
  kill -CONT "$w"
  [ "$held" -ge 8 ] || fail "the worker was given $held jobs, want 8"
  wait_done "$N" 300
  local vis dec
  vis=$(metric "$port" vl3_answers_vision_batch_shared_total)
  dec=$(metric "$port" vl3_answers_decode_step_shared_total)
  stop_daemon d1
  grep -q "worker ready worker=0 .*proto=2 credits=8" "$T/d1.log" || fail "the worker did not offer 8 credits"
  check_real_answers cr "$N"
  check_real_stats cr $((2 * N))
  [ "${vis:-0}" -gt 0 ] || fail "no answer came from a vision batch shared by several jobs"
  [ "${dec:-0}" -gt 0 ] || fail "no answer came from decode steps shared by several jobs"
  grep -q "vision batch windows=[0-9]* jobs=[2-9]" "$T/d1.log" || fail "no mixed vision batch in the worker log"
  log "credits 8: $N jobs equal to vl3 run; answers from shared vision batches $vis, shared decode steps $dec of $((2 * N))"
}

# not a CTest case: `N=48 tests/daemon/it.sh build . credits_bench` prints jobs per second with
# one real worker on the tiny model at credits 1 and credits 8 (first job started to last job
# finished, from the jobs table). BENCH_FPS, BENCH_FRAMES, BENCH_TOKENS (default 1, 8, 8: the
# expected answers of vl3 run, then checked) make the jobs heavier; otherwise the answers of both
# runs are checked equal to each other (generate.seed is fixed, so a clip's answer to a task is
# the same in every job). BENCH_ROUNDS=R (default 1) alternates the two settings R times (the
# machine is shared: interleaving spreads its noise over both) and reports each round and the
# mean.
scenario_credits_bench() {
  start_env
  real_setup
  printf '[jobs]\ncredits = 8\nmax_queued = 16\n' >> "$T/worker.conf"
  local N=${N:-48} c rates="" fps=${BENCH_FPS:-1} mf=${BENCH_FRAMES:-8} tok=${BENCH_TOKENS:-8}
  local round rounds=${BENCH_ROUNDS:-1} sum1=0 sum8=0
  for round in $(seq 1 "$rounds"); do
  for c in 1 8; do
    local port=$(free_port) p="cb${c}_${round}_"
    credits_daemon "b$c" "$port" "$c"
    produce_real "$p" 1 "$N" "$fps" "$mf" "$tok"
    start_daemon "b$c"
    wait_ge "select count(*) from jobs where job_id like '$p%' and status = 'done'" "$N" 1800
    local vis dec
    vis=$(metric "$port" vl3_answers_vision_batch_shared_total)
    dec=$(metric "$port" vl3_answers_decode_step_shared_total)
    stop_daemon "b$c"
    if [ "$fps/$mf/$tok" = "1/8/8" ]; then
      check_real_answers "$p" "$N"
    else
      [ "$(sql "select count(distinct r.answer) from results r join jobs j using (job_id)
          where j.job_id like '$p%' group by j.path, r.task order by 1 desc limit 1")" = 1 ] \
        || fail "credits $c: jobs on the same clip and task answered differently"
    fi
    local r; r=$(sql "select round(($N / extract(epoch from max(finished_at) - min(started_at)))::numeric, 3)
        from jobs where job_id like '$p%'")
    log "round $round credits $c: $N jobs, $r jobs/s (answers from shared vision batches ${vis:-0}, shared decode steps ${dec:-0})"
    rates="$rates r$round/credits=$c:$r"
    if [ "$c" = 1 ]; then sum1=$(echo "$sum1 + $r" | bc); else sum8=$(echo "$sum8 + $r" | bc); fi
    rm -f "$T/b$c.log.old"; mv "$T/b$c.log" "$T/b$c.log.old" # a fresh log per round (stop_daemon greps it)
  done
  done
  [ "$(sql "select count(*) from results r1 join jobs j1 using (job_id), results r2 join jobs j2
      using (job_id) where j1.job_id like 'cb1_%' and j2.job_id like 'cb8_%' and j1.path = j2.path
      and r1.task = r2.task and r1.answer <> r2.answer")" = 0 ] \
    || fail "credits 1 and credits 8 answered differently"
  log "bench:$rates; mean credits=1: $(echo "scale=3; $sum1 / $rounds" | bc) jobs/s, credits=8: $(echo "scale=3; $sum8 / $rounds" | bc) jobs/s (one worker, threads = 1, tiny model, fps $fps, max_frames $mf, max_new_tokens $tok, $(nproc) cores)"
}

# Real vl3-worker holding 8 jobs: kill -9 while it holds several (frozen first so that vl3d
# fills its credits) loses none and charges none (its jobs re-run alone, all answers still equal
# vl3 run's); a job that crashes its worker every time (the worker's VL3_TEST_CRASH_INPUT hook),
# handed to a frozen worker with five others, first crashes holding them (charged nothing), then
# runs alone and fails as poison after jobs.max_attempts crashes, while every other job
# completes.
scenario_credits_real_crash() {
  start_env
  real_setup
  cp "$M/a.mp4" "$M/poison.mp4"
  printf '[jobs]\ncredits = 8\nmax_queued = 16\n' >> "$T/worker.conf"
  local N=${N:-150} port=$(free_port)
  credits_daemon d1 "$port" 8
  export VL3_TEST_CRASH_INPUT=poison
  produce_real rc 1 "$N"
  start_daemon d1
  # the tiny model answers faster than vl3d feeds it, so the worker is rarely full: freeze it
  # (SIGSTOP) once it has answered a few jobs, let vl3d hand it more until it holds several,
  # then kill -9
  local held=0 w
  wait_done 3 60
  w=$(pgrep -P "$(daemon_pid d1)" -f vl3-worker | head -n1)
  [ -n "$w" ] || fail "no vl3-worker found"
  kill -STOP "$w"
  held=$(wait_held "$port" 4)
  [ "$held" -ge 4 ] || { kill -CONT "$w"; fail "the frozen worker was given only $held jobs"; }
  log "kill -9 worker $w holding $held jobs at $(done_count) done"
  kill -9 "$w"
  wait_log "$T/d1.log" "runs alone next" 10 "the killed worker's jobs were not made suspects"
  local killed=$held
  wait_done "$N" 120
  # the crasher with five more jobs, all handed to the frozen worker; thawed, it dies on the
  # crasher holding six
  w=$(pgrep -P "$(daemon_pid d1)" -f vl3-worker | head -n1)
  [ -n "$w" ] || fail "no vl3-worker found"
  kill -STOP "$w"
  produce_real rc $((N + 1)) $((N + 5))
  produce_raw crasher "{\"id\":\"crasher\",\"input\":\"$M/poison.mp4\",\"tasks\":[\"caption\"],\"sampling\":{\"fps\":1,\"max_frames\":8,\"mode\":\"exact\"}}"
  N=$((N + 5))
  held=$(wait_held "$port" 6)
  kill -CONT "$w"
  [ "$held" -ge 6 ] || fail "the frozen worker was given $held of the six jobs"
  wait_ge "select count(*) from jobs where status in ('done', 'failed')" $((N + 1)) 300
  local sus; sus=$(metric "$port" vl3_jobs_suspected_total)
  stop_daemon d1
  [ "$(sql "select count(*) from jobs where job_id like 'rc%' and status = 'done'")" = "$N" ] \
    || fail "not every job done: $(sql "select job_id, status, last_error from jobs where status <> 'done'")"
  [ "$(sql "select count(*) from results where job_id like 'rc%'")" = $((2 * N)) ] || fail "result rows"
  check_real_answers rc "$N"
  [ "$(sql "select status from jobs where job_id = 'crasher'")" = failed ] || fail "crasher not failed"
  sql "select last_error from jobs where job_id = 'crasher'" | grep -q "^poison: 3 attempts" \
    || fail "crasher reason: $(sql "select last_error from jobs where job_id = 'crasher'")"
  # held with five others at its first crash, it was not charged and ran alone three more times
  grep -q "job=crasher held with 5 others" "$T/d1.log" || fail "the crasher did not crash holding company"
  grep -q "dispatching suspect job=crasher alone" "$T/d1.log" || fail "the crasher never ran alone"
  local crashes; crashes=$(grep -c "VL3_TEST_CRASH_INPUT: dying on job=crasher" "$T/d1.log")
  [ "$crashes" = 4 ] || fail "the crasher crashed $crashes times, want once with others and three times alone"
  [ "${sus:-0}" -ge $((killed + 6)) ] || fail "suspects: ${sus:-none}, want the killed worker's $killed and the crasher's 6"
  log "real credits: $N jobs done after a kill holding $killed, crasher failed alone after a crash holding 6, $sus suspects"
}
