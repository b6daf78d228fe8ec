# readonly.sh: a database that turns read-only for a while (a failover to a standby, a disk-full
# read-only switch) delays jobs but fails none: SQLSTATE 25006 is retried with backoff, the
# answers kept, until the database is writable again (issue 14 item 2). Sourced by it.sh:
# `it.sh BUILD SOURCE readonly`.

scenario_readonly() {
  start_env
  local port=$(free_port) N=6
  write_conf d1 "$port" "[jobs]" "timeout = 30s"
  export VL3_FAKE_WORKER_DELAY_MS=2500 # the jobs are running when the database turns read-only
  start_daemon d1
  produce ro "$N"
  wait_ge "select count(*) from jobs where status = 'running'" 3 60
  # the whole server turns read-only (new and existing sessions, after the reload), and the
  # running jobs finish while it is: storing their answers is refused with SQLSTATE 25006
  sql "alter system set default_transaction_read_only = on" >/dev/null
  sql "select pg_reload_conf()" >/dev/null
  sleep 0.5
  [ "$(sql "show default_transaction_read_only")" = on ] || fail "the database is not read-only"
  wait_log "$T/d1.log" "read-only transaction" 30 "no write was refused as read-only"
  sleep 10
  [ "$(sql "select count(*) from jobs where status = 'failed'")" = 0 ] || fail "jobs failed while read-only"
  psql "$PGC" -Xqc "set default_transaction_read_only = off" \
    -c "alter system reset default_transaction_read_only" -c "select pg_reload_conf()" >/dev/null \
    || fail "could not make the database writable again"
  log "writable again at $(done_count) done"
  wait_done "$N" 90
  stop_daemon d1
  check_exactly_once ro "$N"
  [ "$(sql "select count(*) from jobs where status = 'failed'")" = 0 ] || fail "a job failed"
}
