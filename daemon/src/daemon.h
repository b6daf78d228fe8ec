/* daemon.h: struct vl3d, the one object that owns every subsystem of the daemon (kafka consumer,
 * PostgreSQL connection, worker supervisor, metrics endpoint, signals, timers) on one libuv loop.
 *
 * Job life: message consumed -> offset tracked -> parsed (bad: dead-letter topic, then done) ->
 * job row 'running' in PostgreSQL (already 'done': skipped, done) -> worker -> results held in
 * memory -> results + status 'done' in one transaction -> offset done -> low-water mark
 * committed. A job's offset never counts as done before its outcome is durable (results, failed
 * status, or dead-letter delivery), so a crash at any point redelivers, and the idempotent
 * writes make the redelivery harmless. */
#ifndef VL3D_DAEMON_H
#define VL3D_DAEMON_H

#include <uv.h>

#include "daemon_conf.h"
#include "vl3/err.h"

struct vl3d;

/* Build the daemon on loop from conf (takes ownership of conf's contents; conf_path is kept for
 * SIGHUP reloads, borrowed for the daemon's life). Runs migrations when configured (blocking,
 * before the loop runs), starts workers, the consumer, the metrics endpoint, signal handlers,
 * and sends READY=1. Returns 0 and an owned vl3d. On error it returns the code and, when
 * subsystems were already running, still sets *ret: the caller then runs the loop (they close
 * themselves) and calls vl3d_finish(); when *ret is NULL nothing is left on the loop. */
int vl3d_start(uv_loop_t *loop, struct daemon_conf *conf, const char *conf_path,
               struct vl3d **ret, vl3_error *reterr);

/* Begin the graceful stop (what SIGTERM does). */
void vl3d_stop(struct vl3d *d);

/* After uv_run returned: the exit status main() should return (0 after a clean stop, 130 after
 * a second SIGINT, 1 after a fatal error). Frees d when it is fully closed; else leaves it (a
 * hard exit does not clean up). */
int vl3d_finish(struct vl3d *d);

#endif
