# token_cache.sh: `vl3 ask` through vl3d and real vl3-workers with the token cache on (issue 11).
# The first question about a clip decodes it and fills the cache (results.cache_hit false); the
# same question again and another question hit every window (true), decode nothing, and the same
# question gives the same greedy answer; "cache": "off" neither reads nor reports (NULL); the
# file's fingerprint reaches videos.fingerprint and vl3d counts the hits in its metrics. A
# question asked before vl3d created its tables waits for them (and is answered later, uncached).
# Sourced by it.sh: `it.sh BUILD SOURCE token_cache`.

scenario_token_cache() {
  start_env
  local M="$T/media" port=$(free_port)
  mkdir -p "$M"
  "$BIN/vl3" model tiny --out "$T/model" --seed 7 >/dev/null || fail "vl3 model tiny failed"
  "$S/tools/gen_sample_video.sh" "$M/a.mp4" 4 96x96 || fail "clip a"
  write_worker_conf "$M"
  # the worker's sandbox allows Unix-domain sockets only: the server's socket directory
  printf '[cache]\nconninfo = host=%s port=%s dbname=vl3 user=postgres\n' "$T/pg" \
    "$(cat "$T/pg/port")" >> "$T/worker.conf"
  WORKERS=1 write_conf d1 "$port" "[workers]" "path = $BIN/vl3-worker" \
    "config = $T/worker.conf" "ping_interval = 500ms" "[jobs]" "timeout = 60s"
  local ask=("$BIN/vl3" ask -c "$T/d1.conf" --fps 1 --max-frames 8 --window 2 --mode exact
             --max-new-tokens 6 --timeout 120)
  # asked before vl3d ever ran: the database has no tables yet; vl3 ask waits for them and says
  # so when it gives up (the question stays in Kafka and is answered once vl3d starts)
  "${ask[@]}" --timeout 1 --cache off "$M/a.mp4" "Early?" > "$T/a0.out" 2>&1 \
    && fail "ask 0 succeeded without vl3d"
  grep -q 'no vl3d tables in the database: is vl3d running?' "$T/a0.out" \
    || fail "ask 0: $(cat "$T/a0.out")"
  start_daemon d1
  "${ask[@]}" "$M/a.mp4" "What moves?" > "$T/a1.out" 2>&1 || fail "ask 1: $(cat "$T/a1.out")"
  grep -q '^cache: miss (0 of 2 windows)' "$T/a1.out" || fail "ask 1: $(cat "$T/a1.out")"
  "${ask[@]}" "$M/a.mp4" "What moves?" > "$T/a2.out" 2>&1 || fail "ask 2: $(cat "$T/a2.out")"
  grep -q '^cache: hit (2 of 2 windows)' "$T/a2.out" || fail "ask 2: $(cat "$T/a2.out")"
  diff <(grep '^\[' "$T/a1.out") <(grep '^\[' "$T/a2.out") >/dev/null \
    || fail "a cached answer differs: $(cat "$T/a1.out" "$T/a2.out")"
  grep -q '^\[00:00:02-00:00:04\] ' "$T/a2.out" || fail "ask 2 windows: $(cat "$T/a2.out")"
  "${ask[@]}" "$M/a.mp4" "Which colours?" > "$T/a3.out" 2>&1 || fail "ask 3: $(cat "$T/a3.out")"
  grep -q '^cache: hit (2 of 2 windows)' "$T/a3.out" || fail "ask 3: $(cat "$T/a3.out")"
  "${ask[@]}" --cache off "$M/a.mp4" "What moves?" > "$T/a4.out" 2>&1 \
    || fail "ask 4: $(cat "$T/a4.out")"
  grep -q '^cache: off' "$T/a4.out" || fail "ask 4: $(cat "$T/a4.out")"
  [ "$(sql "select count(*) from results where cache_hit")" = 4 ] || fail "cache_hit true rows"
  [ "$(sql "select count(*) from results where not cache_hit")" = 2 ] || fail "cache_hit false rows"
  [ "$(sql "select count(*) from results where cache_hit is null")" = 4 ] || fail "NULL rows"
  [ "$(sql "select count(*) from token_cache_entries")" = 3 ] || fail "entries: 2 windows + list"
  [ "$(sql "select count(*) from videos where fingerprint like '%:%'")" -ge 1 ] \
    || fail "videos.fingerprint: $(sql "select path, fingerprint from videos")"
  [ "$(metric "$port" vl3_token_cache_hits_total)" = 4 ] || fail "hits metric"
  [ "$(metric "$port" vl3_token_cache_misses_total)" = 2 ] || fail "misses metric"
  log "$(tail -n 1 "$T/a1.out") / $(tail -n 1 "$T/a2.out")"
  stop_daemon d1
}
