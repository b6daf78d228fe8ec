-- 0002_coverage.sql: how densely each answer's window was sampled. A result row covers the time
-- range start_s..end_s of its video; frames_sampled is how many frames of that range the model
-- saw and sample_interval_s the effective spacing between them ((end_s - start_s) /
-- frames_sampled): 1.0 at the default 1 fps when nothing was subsampled, larger when a job asked
-- for fewer frames than its window holds. NULL for rows written before this migration and for
-- still images (frames_sampled 1, no interval).
ALTER TABLE results
    ADD COLUMN frames_sampled    integer CHECK (frames_sampled > 0),
    ADD COLUMN sample_interval_s double precision CHECK (sample_interval_s > 0);
COMMENT ON COLUMN results.frames_sampled IS 'frames the model saw for this window (1 for an image)';
COMMENT ON COLUMN results.sample_interval_s IS
    'effective sampling interval in seconds: window duration / frames_sampled (NULL for an image)';
