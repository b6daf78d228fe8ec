-- 0001_init.sql: the vl3d data model: videos, jobs, results (with full-text search over the
-- answers) and the views users query. Applied by `vl3 db migrate` (or vl3d at start) inside one
-- transaction; schema_migrations itself is created by the migrator. Never edit this file once
-- released: add NNNN_*.sql files instead (the migrator refuses a changed applied migration).
-- docs/sql.md documents every table, view and function with example queries.

-- One row per distinct file version: identity is (path, size, mtime); a re-encoded or replaced
-- file at the same path is a new row. fingerprint is a content hash chosen by the worker (to spot
-- the same content under another path). Probe fields are NULL until a worker has probed it.
CREATE TABLE videos (
    video_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path         text NOT NULL CHECK (path <> ''),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    mtime        timestamptz NOT NULL,
    fingerprint  text,
    duration_s   double precision CHECK (duration_s >= 0),
    width        integer CHECK (width > 0),
    height       integer CHECK (height > 0),
    fps          double precision CHECK (fps > 0),
    codec        text,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    probed_at    timestamptz,
    UNIQUE (path, size_bytes, mtime)
);
CREATE INDEX videos_fingerprint_idx ON videos (fingerprint) WHERE fingerprint IS NOT NULL;

-- One row per job id (the id comes from the Kafka payload, so a redelivered message maps to the
-- same row). status moves queued -> running -> done, or -> retrying -> running ... -> failed.
-- A 'done' job is never changed again by vl3d (store.c guards every write with it).
CREATE TABLE jobs (
    job_id        text PRIMARY KEY CHECK (job_id <> '' AND length(job_id) <= 256),
    video_id      bigint REFERENCES videos ON DELETE SET NULL,
    path          text,
    src_topic     text,
    src_partition integer CHECK (src_partition >= 0),
    src_offset    bigint CHECK (src_offset >= 0),
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'retrying', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    text,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    worker        text,
    model         text
);
CREATE INDEX jobs_status_idx ON jobs (status);
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_video_id_idx ON jobs (video_id);

-- One row per answer: a task (caption, qa, ...) over one time window of a video. question is ''
-- for tasks without one, so the UNIQUE key works (NULLs never conflict). The UNIQUE key makes
-- every write an idempotent upsert; answer_tsv is maintained by PostgreSQL for full-text search
-- ('english' configuration: stemming, stop words).
CREATE TABLE results (
    result_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              text NOT NULL REFERENCES jobs ON DELETE CASCADE,
    video_id            bigint REFERENCES videos ON DELETE CASCADE,
    task                text NOT NULL CHECK (task <> ''),
    question            text NOT NULL DEFAULT '',
    window_idx          integer NOT NULL CHECK (window_idx >= 0),
    start_s             double precision NOT NULL CHECK (start_s >= 0),
    end_s               double precision NOT NULL,
    answer              text NOT NULL,
    model               text,
    prompt_tokens       integer CHECK (prompt_tokens >= 0),
    generated_tokens    integer CHECK (generated_tokens >= 0),
    visual_tokens_kept  integer CHECK (visual_tokens_kept >= 0),
    visual_tokens_total integer CHECK (visual_tokens_total >= 0),
    vision_ms           double precision,
    prefill_ms          double precision,
    decode_ms           double precision,
    total_ms            double precision,
    created_at          timestamptz NOT NULL DEFAULT now(),
    answer_tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, answer)) STORED,
    CHECK (end_s >= start_s),
    UNIQUE (job_id, task, question, window_idx)
);
CREATE INDEX results_answer_tsv_idx ON results USING gin (answer_tsv);
CREATE INDEX results_video_id_idx ON results (video_id, start_s);

-- What is in video X: every answer with its time range, newest file version first.
-- SELECT start_s, end_s, task, answer FROM video_contents WHERE path = '/x.mp4' ORDER BY start_s;
CREATE VIEW video_contents AS
SELECT v.video_id, v.path, v.size_bytes, v.mtime, v.duration_s, v.width, v.height, v.fps, v.codec,
       r.job_id, r.task, r.question, r.window_idx, r.start_s, r.end_s, r.answer, r.model,
       r.created_at
  FROM results r
  JOIN videos v ON v.video_id = r.video_id;
COMMENT ON VIEW video_contents IS
    'every answer about every video with its time window; filter by path or video_id';

-- Which videos mention Y: full-text search with web-search syntax ("red car", -night, a OR b).
-- SELECT path, start_s, end_s, headline FROM search_answers('red car') LIMIT 20;
CREATE FUNCTION search_answers(query text)
RETURNS TABLE (video_id bigint, path text, job_id text, task text, question text,
               window_idx integer, start_s double precision, end_s double precision,
               answer text, rank real, headline text)
LANGUAGE sql STABLE STRICT
AS $$
    SELECT r.video_id, v.path, r.job_id, r.task, r.question, r.window_idx, r.start_s, r.end_s,
           r.answer, ts_rank(r.answer_tsv, q) AS rank,
           ts_headline('english'::regconfig, r.answer, q) AS headline
      FROM results r
      LEFT JOIN videos v ON v.video_id = r.video_id,
           websearch_to_tsquery('english'::regconfig, query) AS q
     WHERE r.answer_tsv @@ q
     ORDER BY rank DESC, v.path, r.start_s
$$;
COMMENT ON FUNCTION search_answers(text) IS
    'answers matching a web-search style query (websearch_to_tsquery, english), best first';

-- Failed jobs and why: given up ('failed') and failed-but-retrying jobs, newest first.
CREATE VIEW failed_jobs AS
SELECT j.job_id, j.status, j.path, j.attempts, j.last_error, j.worker, j.model,
       j.src_topic, j.src_partition, j.src_offset, j.enqueued_at, j.started_at,
       COALESCE(j.finished_at, j.updated_at) AS failed_at
  FROM jobs j
 WHERE j.status IN ('failed', 'retrying')
 ORDER BY COALESCE(j.finished_at, j.updated_at) DESC;
COMMENT ON VIEW failed_jobs IS 'jobs that failed (given up) or are waiting for a retry, with the reason';

-- Progress and throughput: one row.
CREATE VIEW job_progress AS
SELECT count(*) AS jobs_total,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'retrying') AS retrying,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'done' AND finished_at > now() - interval '10 minutes')
           AS done_last_10min,
       round(count(*) FILTER (WHERE status = 'done'
                                AND finished_at > now() - interval '10 minutes') / 10.0, 2)
           AS jobs_per_min_10min,
       count(*) FILTER (WHERE status = 'done' AND finished_at > now() - interval '1 hour')
           AS done_last_hour,
       avg(extract(epoch FROM finished_at - started_at))
           FILTER (WHERE status = 'done' AND finished_at > now() - interval '1 hour')
           AS avg_job_seconds_last_hour,
       min(enqueued_at) FILTER (WHERE status IN ('queued', 'retrying')) AS oldest_waiting
  FROM jobs;
COMMENT ON VIEW job_progress IS 'job counts by status and throughput over the last 10 minutes / hour';
