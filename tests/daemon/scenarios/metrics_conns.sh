# metrics_conns.sh: the metrics endpoint bounds its connections (issue 14 item 9): 200 idle or
# half-sent connections from a local process leave vl3d with at most 64 of them open (the rest
# closed at once), all are closed after 5 s, the daemon's descriptors stay bounded, and a scrape
# works again afterwards. Sourced by it.sh: `it.sh BUILD SOURCE metrics_conns`.

scenario_metrics_conns() {
  start_env
  local port=$(free_port)
  write_conf d1 "$port"
  start_daemon d1
  wait_log "$T/d1.log" "partition assigned" 30 "d1 never got partitions"
  [ -n "$(metric "$port" vl3_jobs_consumed_total)" ] || fail "no scrape before the flood"
  local pid; pid=$(daemon_pid d1)
  local fds0; fds0=$(ls /proc/"$pid"/fd | wc -l)
  /usr/bin/python3 - "$port" "$pid" > "$T/flood.txt" <<'PY' || fail "flood: $(cat "$T/flood.txt")"
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(200):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 2:
        s.sendall(b"GET /metrics HTTP/1.0\r\n")  # half-sent: the headers never end
    socks.append(s)
time.sleep(1.0)
fds = len(os.listdir(f"/proc/{pid}/fd"))
def closed(s):
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
early = sum(closed(s) for s in socks)
time.sleep(6.0)
late = sum(closed(s) for s in socks)
print(f"fds_during={fds} closed_after_1s={early} closed_after_7s={late}")
PY
  log "flood: $(cat "$T/flood.txt") (daemon fds before: $fds0)"
  local fds early late
  fds=$(sed -n 's/.*fds_during=\([0-9]*\).*/\1/p' "$T/flood.txt")
  early=$(sed -n 's/.*closed_after_1s=\([0-9]*\).*/\1/p' "$T/flood.txt")
  late=$(sed -n 's/.*closed_after_7s=\([0-9]*\).*/\1/p' "$T/flood.txt")
  [ "$early" -ge 136 ] || fail "only $early of 200 connections closed at once (cap 64)"
  [ "$late" = 200 ] || fail "only $late of 200 connections closed after the timeout"
  [ "$fds" -le $((fds0 + 70)) ] || fail "the daemon held $fds descriptors during the flood"
  [ -n "$(metric "$port" vl3_jobs_consumed_total)" ] || fail "no scrape after the flood"
  stop_daemon d1
}
