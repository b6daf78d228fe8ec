-- 0004_token_cache.sql: the token cache (docs/token-cache.md): the visual tokens of a window,
-- serialized and zstd-compressed by the workers (engine/src/visual_tokens.c), so that a new
-- question about an already seen video skips decoding and the vision encoder. Workers and
-- `vl3 run --cache` read and write these tables over their own connection
-- (worker/src/token_cache_pg.c); vl3d never touches the values.

-- One row per cached window. key is the hex XXH3-128 of everything that shapes the rows (media
-- content hash and size, vision weights, preprocessing, sampling, window, DiffFP, decoder,
-- backend, format version); descr is that text itself, for people. bytes is the stored size
-- (all chunks); a writer inserts the entry and its chunks in one transaction, so a reader never
-- sees a partial entry, and two writers of one key leave one entry (the second inserts nothing).
CREATE TABLE token_cache_entries (
    key         text PRIMARY KEY CHECK (length(key) BETWEEN 16 AND 128),
    descr       text NOT NULL DEFAULT '',
    bytes       bigint NOT NULL CHECK (bytes > 0),
    raw_bytes   bigint NOT NULL CHECK (raw_bytes >= 0),
    n_chunks    integer NOT NULL CHECK (n_chunks > 0),
    n_rows      bigint NOT NULL CHECK (n_rows >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used   timestamptz NOT NULL DEFAULT now(),
    hits        bigint NOT NULL DEFAULT 0 CHECK (hits >= 0)
);
CREATE INDEX token_cache_entries_lru_idx ON token_cache_entries (last_used);

-- The stored bytes of an entry in pieces of about 1 MB, in order. The data is already
-- compressed: EXTERNAL keeps PostgreSQL from trying again (out of line, uncompressed TOAST).
CREATE TABLE token_cache_chunks (
    key   text NOT NULL REFERENCES token_cache_entries ON DELETE CASCADE,
    seq   integer NOT NULL CHECK (seq >= 0),
    data  bytea NOT NULL,
    PRIMARY KEY (key, seq)
);
ALTER TABLE token_cache_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Counters kept by every cache user (one row per name): entries evicted under the size budget,
-- corrupt entries found (checksum) and deleted.
CREATE TABLE token_cache_counters (
    name   text PRIMARY KEY,
    value  bigint NOT NULL DEFAULT 0
);
INSERT INTO token_cache_counters (name) VALUES ('evictions'), ('corrupt');

-- Whether the token cache answered the window's visual tokens (NULL: cache off, or written by a
-- worker without the cache).
ALTER TABLE results ADD COLUMN cache_hit boolean;
