/* worker.h: vl3-worker's job pipeline and protocol loop.
 *
 * Threads and data flow (one process per GPU, or one for the CPU):
 *   reader (the caller of worker_run): reads frames from the daemon, answers PING at once, checks
 *     and admits JOB frames (jobs.max_queued bounds them; beyond it a retryable "resource" error),
 *     and on EOF waits for the accepted jobs to finish, then returns;
 *   decode threads (jobs.decode_parallel): confine the path, decode and sample the video (one window
 *     or several), reserve memory_budget for its frames, preprocess and DiffFP-mask each window,
 *     and queue the windows for the engine;
 *   the engine thread: encodes queued windows of any jobs together in one vision-encoder call
 *     (batch.vision_frames), builds one prompt per window x task, and generates every answer
 *     through the continuous-batching scheduler (batch.max_sequences slots).
 * A job's answers are buffered and sent when all are ready (RESULT frames then DONE), so a job
 * that fails half-way sends only its ERROR. Frames go out through worker_out (one lock). */
#ifndef VL3_WORKER_WORKER_H
#define VL3_WORKER_WORKER_H

#include "vl3/engine.h"
#include "vl3/err.h"
#include "worker_conf.h"

struct worker;

/* Exit statuses of vl3-worker (documented in schema/worker-protocol.md and vl3-worker --help). */
enum {
    WORKER_EXIT_OK = 0,        /* stdin closed, every accepted job answered */
    WORKER_EXIT_USAGE = 1,     /* bad command line or configuration */
    WORKER_EXIT_SOFTWARE = 70, /* protocol violation, model load failure, internal error */
    WORKER_EXIT_TEMPFAIL = 75, /* device fault (sticky CUDA error) or the daemon went away */
};

/* Create the pipeline over model (borrowed; must outlive the worker) with conf (borrowed
 * likewise): the vision encoder, and the language model with batch.max_sequences slots. A build
 * without the engine's LLM API still runs (jobs then fail with "unsupported" after vision).
 * Returns 0, -ENOMEM, VL3_E_FORMAT (model without tokenizer) or the engine's codes. */
int worker_new(const struct worker_conf *conf, const vl3_model *model, struct worker **ret,
               vl3_error *reterr);
void worker_free(struct worker *w);

/* Ask a running worker_run to drain: new jobs are refused (retryable "resource"), accepted ones
 * are answered, then worker_run returns WORKER_EXIT_OK even if stdin is still open. Only sets a
 * flag: async-signal-safe (main calls it from its SIGTERM/SIGINT handler, because systemd
 * signals the whole control group while vl3d drains and still wants the answers). */
void worker_request_stop(void);

/* Serve the protocol on in_fd/out_fd until EOF (or a fatal condition). Sends HELLO first.
 * Returns a WORKER_EXIT_* status. */
int worker_run(struct worker *w, int in_fd, int out_fd);

#endif
