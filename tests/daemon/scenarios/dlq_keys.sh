# dlq_keys.sh: dead letters keep the original key and headers, and a message too large for the
# producer is still dead-lettered (truncated, with its original size) instead of blocking its
# partition (issue 14 items 3 and 14). Sourced by it.sh: `it.sh BUILD SOURCE dlq_keys`.

scenario_dlq_keys() {
  start_env
  local port=$(free_port)
  write_conf d1 "$port"
  # all on partition 0, in order: a keyed bad message with headers, a 2 MB message, a good job
  printf '%s\n' '{"input": "/m/x.mp4", "tasks": ["caption"' |
    kcat -b "$BOOT" -P -t jobs -p 0 -k key-7 -H trace=abc -H tenant=t1 || fail "produce bad"
  { printf '{"input": "/m/big.mp4", "tasks": ["caption"], "pad": "'
    head -c 2000000 /dev/zero | tr '\0' x; printf '"}'; } > "$T/big.json"
  kcat -b "$BOOT" -P -t jobs -p 0 -k big-key -X message.max.bytes=4000000 "$T/big.json" \
    || fail "produce big"
  printf '%s\n' '{"id": "after-big", "input": "/m/ok.mp4", "tasks": ["caption"]}' |
    kcat -b "$BOOT" -P -t jobs -p 0 -k ok || fail "produce good"
  start_daemon d1
  wait_done 1 60
  local k
  for k in $(seq 1 150); do
    kcat -b "$BOOT" -C -t dlq -e -q -X fetch.message.max.bytes=4000000 \
      -f '%k|%h|%S\n' > "$T/dlq.txt" 2>/dev/null
    [ "$(grep -c . "$T/dlq.txt")" -ge 2 ] && break
    sleep 0.2
  done
  cat "$T/dlq.txt" | cut -c1-300 >&2
  [ "$(grep -c . "$T/dlq.txt")" = 2 ] || fail "want 2 dead letters"
  grep -q '^key-7|.*trace=abc.*tenant=t1.*vl3-error=invalid JSON' "$T/dlq.txt" \
    || fail "the bad message lost its key or headers"
  grep -q '^big-key|.*vl3-truncated=1,vl3-original-size=20000[0-9][0-9]|900000$' "$T/dlq.txt" \
    || fail "the 2 MB message was not dead-lettered truncated with its original size"
  [ "$(sql "select status from jobs where job_id='after-big'")" = done ] || fail "job after the big one"
  stop_daemon d1
  check_committed $(free_port)
}
