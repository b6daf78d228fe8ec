-- 0003_archive.sql: the archive workflow (docs/sql.md): the enqueue batch a job came from, the
-- search_hits view behind `vl3 search`, and batch_progress behind `vl3 status`.

-- The batch id `vl3 enqueue` puts in each job of one run (job.schema.json "batch"); NULL for jobs
-- produced without one.
ALTER TABLE jobs ADD COLUMN batch text CHECK (batch IS NULL OR (batch <> '' AND length(batch) <= 64));
CREATE INDEX jobs_batch_idx ON jobs (batch) WHERE batch IS NOT NULL;

-- Every answer with what a search hit shows: file, time range as HH:MM:SS-HH:MM:SS, task. Filter
-- with a tsquery and rank it yourself, or use the search_hits(query) function below.
-- SELECT path, time_range, task, answer FROM search_hits_all WHERE answer_tsv @@ websearch_to_tsquery('english', 'red car');
CREATE VIEW search_hits_all AS
SELECT r.result_id, r.video_id, COALESCE(v.path, j.path) AS path, r.job_id, j.batch, r.task,
       r.question, r.window_idx, r.start_s, r.end_s,
       to_char(make_interval(secs => floor(r.start_s)), 'HH24:MI:SS') || '-' ||
       to_char(make_interval(secs => ceil(r.end_s)), 'HH24:MI:SS') AS time_range,
       r.answer, r.answer_tsv, r.created_at
  FROM results r
  JOIN jobs j ON j.job_id = r.job_id
  LEFT JOIN videos v ON v.video_id = r.video_id;
COMMENT ON VIEW search_hits_all IS
    'every answer with path, HH:MM:SS-HH:MM:SS time range and task; the base of search_hits()';

-- Ranked hits for a web-search style query, matched words marked with [[ ]] in snippet.
-- SELECT path, time_range, task, snippet FROM search_hits('red car') LIMIT 20;
CREATE FUNCTION search_hits(query text)
RETURNS TABLE (path text, time_range text, task text, question text, start_s double precision,
               end_s double precision, rank real, snippet text, answer text, job_id text,
               batch text, video_id bigint)
LANGUAGE sql STABLE STRICT
AS $$
    SELECT h.path, h.time_range, h.task, h.question, h.start_s, h.end_s,
           ts_rank(h.answer_tsv, q) AS rank,
           ts_headline('english'::regconfig, h.answer, q,
                       'StartSel=[[, StopSel=]], MaxWords=30, MinWords=10') AS snippet,
           h.answer, h.job_id, h.batch, h.video_id
      FROM search_hits_all h,
           websearch_to_tsquery('english'::regconfig, query) AS q
     WHERE h.answer_tsv @@ q
     ORDER BY rank DESC, h.path, h.start_s
$$;
COMMENT ON FUNCTION search_hits(text) IS
    'ranked answers matching a web-search query with path, time range and a [[marked]] snippet';

-- Per enqueue batch: counts by status, rate over the batch so far and an ETA for the rest.
CREATE VIEW batch_progress AS
SELECT j.batch,
       min(j.enqueued_at) AS first_enqueued,
       count(*) AS jobs_total,
       count(*) FILTER (WHERE j.status = 'done') AS done,
       count(*) FILTER (WHERE j.status = 'failed') AS failed,
       count(*) FILTER (WHERE j.status NOT IN ('done', 'failed')) AS pending,
       max(j.finished_at) FILTER (WHERE j.status = 'done') AS last_done,
       CASE WHEN count(*) FILTER (WHERE j.status = 'done') > 0
                 AND max(j.finished_at) > min(j.started_at)
            THEN count(*) FILTER (WHERE j.status = 'done') * 60.0 /
                 extract(epoch FROM max(j.finished_at) FILTER (WHERE j.status = 'done')
                                    - min(j.started_at))
       END AS jobs_per_min
  FROM jobs j
 WHERE j.batch IS NOT NULL
 GROUP BY j.batch;
COMMENT ON VIEW batch_progress IS
    'per enqueue batch: done / failed / pending and the done rate (jobs/min) since its first start';
