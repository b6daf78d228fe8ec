/* test_token_cache_pg.c: the token cache's PostgreSQL store (worker/src/token_cache_pg.c)
 * against real servers. Each case makes its own database in the shared "pg" fixture server (the
 * restart case starts a server of its own with tests/harness/pg-harness). Checked with plain
 * libpq: a stored entry reads back bit-exact and spans several ~1 MB chunk rows stored EXTERNAL;
 * a flipped byte in a chunk reads as a miss, deletes the entry and counts it; the budget evicts
 * the least recently used entries; two writers racing on one key leave one whole entry; missing
 * tables and a stopped server read as misses, and the cache works again once the server is
 * back. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <unistd.h>

#include "migrate.h"
#include "test.h"
#include "token_cache.h"
#include "vl3/util.h"

static int read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *r = fgets(buf, (int)len, f);
    fclose(f);
    if (!r)
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* A fresh database in the fixture server, migrated when migrate is set. */
static int make_db(const char *name, int migrate, char *out, size_t len)
{
    char base[512], path[4096], sql[256];
    snprintf(path, sizeof(path), "%s/pg/conninfo", getenv("VL3_FIXTURE_DIR"));
    if (read_line(path, base, sizeof(base)) < 0)
        return -1;
    PGconn *pq = PQconnectdb(base);
    if (PQstatus(pq) != CONNECTION_OK) {
        PQfinish(pq);
        return -1;
    }
    PQclear(PQexec(pq, "SET client_min_messages = warning"));
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS tc_%s_%d", name, (int)getpid());
    PQclear(PQexec(pq, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE tc_%s_%d", name, (int)getpid());
    PGresult *res = PQexec(pq, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    PQfinish(pq);
    snprintf(out, len, "%s dbname=tc_%s_%d", base, name, (int)getpid());
    if (!ok)
        return -1;
    if (migrate) {
        char dir[4096];
        vl3_error err = {0};
        snprintf(dir, sizeof(dir), "%s/schema", test_source_dir());
        if (migrate_apply(out, dir, NULL, &err) < 0) {
            fprintf(stderr, "migrate: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

__attribute__((format(printf, 2, 3))) static long long sqlv(const char *conninfo,
                                                             const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGconn *pq = PQconnectdb(conninfo);
    PGresult *res = PQexec(pq, sql);
    long long v = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (PQresultStatus(res) == PGRES_COMMAND_OK)
        v = strtoll(PQcmdTuples(res), NULL, 10);
    else
        fprintf(stderr, "sql \"%s\": %s", sql, PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(pq);
    return v;
}

/* A window of one video item: frames x 4x4 merged tokens (grid 2*4), rows of dim whose bytes
 * are noise (incompressible: the entry's size is about its raw size). seed varies the rows. */
static int make_vt(int frames, int dim, uint32_t seed, vl3_visual_tokens *ret)
{
    vl3_vision_grid g = {frames, 8, 8, 2};
    int hw[2] = {112, 112};
    vl3_pixel_batch b = {NULL, (int64_t)frames * 64, 588, 1, &g, hw};
    double *ts = malloc(sizeof(double) * frames);
    for (int i = 0; i < frames; i++)
        ts[i] = i;
    vl3_image dummy = {0};
    vl3_vision_item item = {&dummy, frames, ts, 1, 0};
    int64_t n = (int64_t)frames * 16;
    float *rows = malloc(sizeof(float) * (size_t)(n * dim));
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n * dim; i++) {
        s = s * 1103515245u + 12345u;
        uint32_t u = s ^ (s >> 13) * 2246822519u;
        rows[i] = (float)((int32_t)u) / 2147483648.0f;
    }
    vl3_error err = {0};
    int rc = vl3_visual_tokens_from_parts(&b, NULL, &item, 1, rows, dim, VL3_VT_DTYPE_F32, ret,
                                          &err);
    free(rows);
    free(ts);
    return rc;
}

static int same_rows(const vl3_visual_tokens *a, const vl3_visual_tokens *b)
{
    return a->n_rows == b->n_rows && a->dim == b->dim &&
           memcmp(a->rows, b->rows, sizeof(float) * (size_t)(a->n_rows * a->dim)) == 0 &&
           a->mask.n_frames == b->mask.n_frames &&
           memcmp(a->timestamps, b->timestamps, sizeof(double) * a->mask.n_frames) == 0;
}

TEST(tc_hit_miss_chunks)
{
    char ci[1024];
    ASSERT_EQ(make_db("hit", 1, ci, sizeof(ci)), 0);
    tcache *tc = NULL;
    vl3_error err = {0};
    ASSERT_OK(tcache_open(ci, 0, &tc, &err));
    vl3_visual_tokens vt = {0}, got = {0};
    ASSERT_OK(make_vt(40, 512, 1, &vt)); /* 640 rows x 2 KiB: about 1.3 MB */
    const char *key = "0123456789abcdef0123456789abcdef";
    ASSERT_EQ(tcache_lookup(tc, key, &got), 0);
    ASSERT_EQ(tcache_store(tc, key, "test entry", &vt), 1);
    ASSERT_EQ(tcache_store(tc, key, "test entry", &vt), 0); /* exists: nothing written */
    ASSERT_EQ(tcache_lookup(tc, key, &got), 1);
    ASSERT(same_rows(&vt, &got));
    vl3_visual_tokens_deinit(&got);
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 1);
    ASSERT_EQ(sqlv(ci, "SELECT hits FROM token_cache_entries"), 1);
    ASSERT_GE(sqlv(ci, "SELECT count(*) FROM token_cache_chunks"), 2);
    ASSERT_EQ(sqlv(ci, "SELECT n_chunks FROM token_cache_entries"),
              sqlv(ci, "SELECT count(*) FROM token_cache_chunks"));
    ASSERT_EQ(sqlv(ci, "SELECT bytes FROM token_cache_entries"),
              sqlv(ci, "SELECT sum(length(data)) FROM token_cache_chunks"));
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                       "'token_cache_chunks'::regclass AND attname = 'data' AND attstorage = 'e'"),
              1);
    struct tcache_stats st;
    tcache_get_stats(tc, &st);
    ASSERT_EQ(st.hits, 1);
    ASSERT_EQ(st.misses, 1);
    ASSERT_EQ(st.stores, 1);
    ASSERT_GT(st.bytes_written, 1 << 20);
    ASSERT_EQ(st.bytes_read, st.bytes_written);
    ASSERT_EQ(st.errors, 0);
    vl3_visual_tokens_deinit(&vt);
    tcache_close(tc);
    return 0;
}

TEST(tc_corrupt_chunk)
{
    char ci[1024];
    ASSERT_EQ(make_db("corrupt", 1, ci, sizeof(ci)), 0);
    tcache *tc = NULL;
    vl3_error err = {0};
    ASSERT_OK(tcache_open(ci, 0, &tc, &err));
    vl3_visual_tokens vt = {0}, got = {0};
    ASSERT_OK(make_vt(40, 512, 2, &vt));
    const char *key = "corruptcorruptcorruptcorrupt0000";
    ASSERT_EQ(tcache_store(tc, key, NULL, &vt), 1);
    /* flip one bit in the middle of the second chunk row */
    ASSERT_EQ(sqlv(ci, "UPDATE token_cache_chunks SET data = set_byte(data, length(data) / 2, "
                       "get_byte(data, length(data) / 2) # 1) WHERE seq = 1"),
              1);
    ASSERT_EQ(tcache_lookup(tc, key, &got), 0);
    ASSERT(got.rows == NULL);
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 0);
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_chunks"), 0);
    ASSERT_EQ(sqlv(ci, "SELECT value FROM token_cache_counters WHERE name = 'corrupt'"), 1);
    struct tcache_stats st;
    tcache_get_stats(tc, &st);
    ASSERT_EQ(st.corrupt, 1);
    /* a missing chunk row is damage too */
    ASSERT_EQ(tcache_store(tc, key, NULL, &vt), 1);
    ASSERT_EQ(sqlv(ci, "DELETE FROM token_cache_chunks WHERE seq = 0"), 1);
    ASSERT_EQ(tcache_lookup(tc, key, &got), 0);
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 0);
    /* stored again, it reads back */
    ASSERT_EQ(tcache_store(tc, key, NULL, &vt), 1);
    ASSERT_EQ(tcache_lookup(tc, key, &got), 1);
    ASSERT(same_rows(&vt, &got));
    vl3_visual_tokens_deinit(&got);
    vl3_visual_tokens_deinit(&vt);
    tcache_close(tc);
    return 0;
}

TEST(tc_eviction_lru)
{
    char ci[1024];
    ASSERT_EQ(make_db("evict", 1, ci, sizeof(ci)), 0);
    vl3_visual_tokens vt[5];
    size_t one = 0;
    for (int i = 0; i < 5; i++) {
        ASSERT_OK(make_vt(4, 256, 10 + (uint32_t)i, &vt[i])); /* 64 rows x 1 KiB */
    }
    {
        uint8_t *buf = NULL;
        vl3_error err = {0};
        ASSERT_OK(vl3_visual_tokens_encode(&vt[0], NULL, &buf, &one, NULL, &err));
        free(buf);
    }
    tcache *tc = NULL;
    vl3_error err = {0};
    /* room for three entries and a half */
    ASSERT_OK(tcache_open(ci, (int64_t)(one * 7 / 2), &tc, &err));
    char keys[5][33];
    for (int i = 0; i < 5; i++)
        snprintf(keys[i], sizeof(keys[i]), "evict%027d", i);
    vl3_visual_tokens got = {0};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(tcache_store(tc, keys[i], NULL, &vt[i]), 1);
        usleep(20000);
    }
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 3);
    /* use entry 0, so entry 1 is now the least recently used */
    usleep(20000);
    ASSERT_EQ(tcache_lookup(tc, keys[0], &got), 1);
    vl3_visual_tokens_deinit(&got);
    usleep(20000);
    ASSERT_EQ(tcache_store(tc, keys[3], NULL, &vt[3]), 1);
    ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 3);
    ASSERT_EQ(tcache_lookup(tc, keys[1], &got), 0); /* evicted */
    ASSERT_EQ(tcache_lookup(tc, keys[0], &got), 1);
    vl3_visual_tokens_deinit(&got);
    ASSERT_LE(sqlv(ci, "SELECT sum(bytes) FROM token_cache_entries"), (long long)(one * 7 / 2));
    ASSERT_EQ(sqlv(ci, "SELECT value FROM token_cache_counters WHERE name = 'evictions'"), 1);
    struct tcache_stats st;
    tcache_get_stats(tc, &st);
    ASSERT_EQ(st.evictions, 1);
    tcache_close(tc);
    /* an entry larger than the whole budget is not stored */
    ASSERT_OK(tcache_open(ci, (int64_t)(one / 2), &tc, &err));
    ASSERT_EQ(tcache_store(tc, keys[4], NULL, &vt[4]), 0);
    ASSERT_EQ(tcache_lookup(tc, keys[4], &got), 0);
    tcache_close(tc);
    for (int i = 0; i < 5; i++)
        vl3_visual_tokens_deinit(&vt[i]);
    return 0;
}

struct racer {
    const char *conninfo;
    const vl3_visual_tokens *vt;
    pthread_barrier_t *go;
    int stored;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    tcache *tc = NULL;
    vl3_error err = {0};
    if (tcache_open(r->conninfo, 0, &tc, &err) < 0)
        return NULL;
    vl3_visual_tokens got = {0};
    (void)tcache_lookup(tc, "race", &got); /* connects */
    pthread_barrier_wait(r->go);
    r->stored = tcache_store(tc, "racerace00000000racerace00000000", NULL, r->vt);
    tcache_close(tc);
    return NULL;
}

TEST(tc_two_writers_one_key)
{
    char ci[1024];
    ASSERT_EQ(make_db("race", 1, ci, sizeof(ci)), 0);
    vl3_visual_tokens a = {0}, b = {0}, got = {0};
    ASSERT_OK(make_vt(60, 512, 5, &a)); /* several chunk rows each: the inserts overlap */
    ASSERT_OK(make_vt(60, 512, 6, &b));
    for (int round = 0; round < 3; round++) {
        ASSERT_GE(sqlv(ci, "DELETE FROM token_cache_entries"), 0);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct racer r[2] = {{ci, &a, &go, -1}, {ci, &b, &go, -1}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&t[i], NULL, race, &r[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&go);
        ASSERT_EQ(r[0].stored + r[1].stored, 1);
        ASSERT_EQ(sqlv(ci, "SELECT count(*) FROM token_cache_entries"), 1);
        ASSERT_EQ(sqlv(ci, "SELECT n_chunks FROM token_cache_entries"),
                  sqlv(ci, "SELECT count(*) FROM token_cache_chunks"));
        tcache *tc = NULL;
        vl3_error err = {0};
        ASSERT_OK(tcache_open(ci, 0, &tc, &err));
        ASSERT_EQ(tcache_lookup(tc, "racerace00000000racerace00000000", &got), 1);
        ASSERT(same_rows(r[0].stored ? &a : &b, &got)); /* whole: the winner's rows */
        vl3_visual_tokens_deinit(&got);
        tcache_close(tc);
    }
    vl3_visual_tokens_deinit(&a);
    vl3_visual_tokens_deinit(&b);
    return 0;
}

TEST(tc_missing_tables)
{
    char ci[1024];
    ASSERT_EQ(make_db("bare", 0, ci, sizeof(ci)), 0);
    tcache *tc = NULL;
    vl3_error err = {0};
    ASSERT_OK(tcache_open(ci, 0, &tc, &err));
    vl3_visual_tokens vt = {0}, got = {0};
    ASSERT_OK(make_vt(2, 64, 7, &vt));
    ASSERT_EQ(tcache_lookup(tc, "bare00000000000000000000", &got), 0);
    ASSERT_EQ(tcache_store(tc, "bare00000000000000000000", NULL, &vt), 0);
    struct tcache_stats st;
    tcache_get_stats(tc, &st);
    ASSERT_GE(st.errors, 2);
    tcache_close(tc);
    /* nothing listens there: misses, quickly */
    ASSERT_OK(tcache_open("host=127.0.0.1 port=1 dbname=x", 0, &tc, &err));
    double t0 = vl3_time_s();
    ASSERT_EQ(tcache_lookup(tc, "down0000000000000000", &got), 0);
    ASSERT_EQ(tcache_store(tc, "down0000000000000000", NULL, &vt), 0);
    ASSERT_LT(vl3_time_s() - t0, 5.0);
    tcache_close(tc);
    vl3_visual_tokens_deinit(&vt);
    return 0;
}

/* The server stops between two writes (and while the second runs): that write reads as "not
 * stored", nothing hangs or crashes, and once the server is back the cache works again. */
/* Run a PostgreSQL binary as the harness does (as "postgres" when root). */
#define PG_AS                                                                                      \
    "b=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1); "                                  \
    "if [ $(id -u) -eq 0 ]; then r='runuser -u postgres --'; else r=; fi; $r $b/"

struct stopper {
    char cmd[2048];
    int rc;
};

static void *stop_server(void *arg)
{
    struct stopper *s = arg;
    s->rc = test_sh(NULL, 0, "%s", s->cmd);
    return NULL;
}

TEST(tc_server_stopped_during_write)
{
    char dir[1024], ci[1024], harness[2048];
    snprintf(dir, sizeof(dir), "%s/tcpg", test_tmpdir());
    snprintf(harness, sizeof(harness), "%s/tests/harness/pg-harness", test_source_dir());
    ASSERT_EQ(test_sh(NULL, 0, "mkdir -p %s && %s start %s/srv >/dev/null 2>&1", dir, harness,
                      dir), 0);
    char path[1100];
    snprintf(path, sizeof(path), "%s/srv/conninfo", dir);
    ASSERT_EQ(read_line(path, ci, sizeof(ci)), 0);
    char sdir[4096];
    vl3_error err = {0};
    snprintf(sdir, sizeof(sdir), "%s/schema", test_source_dir());
    int mrc = migrate_apply(ci, sdir, NULL, &err);
    tcache *tc = NULL;
    vl3_visual_tokens vt = {0}, big = {0}, got = {0};
    int ok = 1;
    if (mrc < 0 || tcache_open(ci, 0, &tc, &err) < 0 || make_vt(8, 256, 8, &vt) < 0 ||
        make_vt(200, 1024, 9, &big) < 0)
        ok = 0;
    if (ok)
        ok = tcache_store(tc, "before000000000000000000", NULL, &vt) == 1;
    /* stop the server (fast: sessions are cut, committed work stays; the fixture runs with
     * synchronous_commit off, which an immediate stop would lose) while a large entry (about
     * 13 MB of chunks) is being serialized or written */
    struct stopper s;
    snprintf(s.cmd, sizeof(s.cmd), "sleep 0.05; " PG_AS "pg_ctl -D %s/srv/data -m fast -w stop "
             ">/dev/null 2>&1", dir);
    pthread_t t;
    int during = -1, after = -1, again = -1;
    double t0 = vl3_time_s();
    if (ok) {
        pthread_create(&t, NULL, stop_server, &s);
        during = tcache_store(tc, "during000000000000000000", NULL, &big);
        pthread_join(t, NULL);
        after = tcache_store(tc, "after0000000000000000000", NULL, &vt);
        after += tcache_lookup(tc, "before000000000000000000", &got);
    }
    double took = vl3_time_s() - t0;
    /* start it again on the same port; after the retry delay the cache works */
    int restarted = test_sh(NULL, 0, PG_AS "pg_ctl -D %s/srv/data -l %s/srv/log -w -t 30 -o \"-p "
                            "$(cat %s/srv/port) -k %s/srv -c listen_addresses=127.0.0.1 -c "
                            "fsync=off\" start >/dev/null 2>&1", dir, dir, dir, dir);
    if (ok) {
        sleep(6);
        again = tcache_lookup(tc, "before000000000000000000", &got);
        vl3_visual_tokens_deinit(&got);
    }
    struct tcache_stats st = {0};
    if (tc)
        tcache_get_stats(tc, &st);
    tcache_close(tc);
    test_sh(NULL, 0, "%s stop %s/srv >/dev/null 2>&1", harness, dir);
    vl3_visual_tokens_deinit(&vt);
    vl3_visual_tokens_deinit(&big);
    ASSERT(ok);
    ASSERT_EQ(restarted, 0);
    ASSERT_GE(during, 0);      /* stored or not: it returned */
    ASSERT_EQ(after, 0);       /* server down: not stored, and a miss */
    ASSERT_LT(took, 20.0);
    ASSERT_GT(st.errors, 0);
    ASSERT_EQ(again, 1);       /* back: the entry from before is there */
    return 0;
}

/* ---- vl3 run --cache: a hit equals the cold path, bit for bit ------------------------------- */

static int files_equal(const char *d1, const char *d2, const char *name)
{
    char p1[1200], p2[1200];
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    snprintf(p1, sizeof(p1), "%s/%s", d1, name);
    snprintf(p2, sizeof(p2), "%s/%s", d2, name);
    int eq = vl3_file_read(p1, (size_t)1 << 30, &a, &la, NULL) == 0 &&
             vl3_file_read(p2, (size_t)1 << 30, &b, &lb, NULL) == 0 && la == lb && la > 0 &&
             memcmp(a, b, la) == 0;
    if (!eq)
        fprintf(stderr, "%s differs between %s and %s\n", name, d1, d2);
    free(a);
    free(b);
    return eq;
}

/* meta.json's "cache" (and cache_key into key when not NULL); "" when unreadable. */
static const char *cache_of(const char *dump, char *key, size_t keylen)
{
    static char state[16];
    char path[1200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/meta.json", dump);
    state[0] = '\0';
    if (vl3_file_read(path, 1 << 24, &text, &len, NULL) < 0)
        return state;
    const char *c = strstr(text, "\"cache\": \"");
    if (c)
        sscanf(c + 10, "%15[a-z]", state);
    const char *k = strstr(text, "\"cache_key\": \"");
    if (k && key)
        snprintf(key, keylen, "%.32s", k + 14);
    free(text);
    return state;
}

/* The cold run (no cache) and two cached runs of one request: miss then hit, all three with the
 * same logits, tokens, ids and rows. args: the input and request options. */
static int cold_miss_hit(const char *run, const char *ci, const char *dir, const char *name,
                         const char *args)
{
    char d0[1200], d1[1200], d2[1200];
    snprintf(d0, sizeof(d0), "%s/%s_cold", dir, name);
    snprintf(d1, sizeof(d1), "%s/%s_miss", dir, name);
    snprintf(d2, sizeof(d2), "%s/%s_hit", dir, name);
    ASSERT_EQ(test_sh_loud("%s %s --dump %s >/dev/null", run, args, d0), 0);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, args, ci, d1), 0);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, args, ci, d2), 0);
    ASSERT_STR_EQ(cache_of(d0, NULL, 0), "off");
    ASSERT_STR_EQ(cache_of(d1, NULL, 0), "miss");
    ASSERT_STR_EQ(cache_of(d2, NULL, 0), "hit");
    const char *files[] = {"logits.f32", "generated.i32", "input_ids.i32", "vision_out.f32"};
    for (int i = 0; i < 4; i++) {
        ASSERT(files_equal(d0, d1, files[i]));
        ASSERT(files_equal(d0, d2, files[i]));
    }
    char p[1300];
    snprintf(p, sizeof(p), "%s/pixel_values.f32", d2);
    ASSERT(access(p, F_OK) != 0); /* the hit decoded nothing */
    return 0;
}

static int run_cache_layout(int native)
{
    const char *bin = getenv("VL3_BIN_DIR");
    if (!bin)
        SKIP("VL3_BIN_DIR is not set");
    if (test_sh(NULL, 0, "ffmpeg -version >/dev/null 2>&1") != 0)
        SKIP("ffmpeg CLI is not available");
    char dir[1024], ci[1024], ci2[1024], run[4096], run2[4096];
    snprintf(dir, sizeof(dir), "%s/tcrun%d", test_tmpdir(), native);
    ASSERT_EQ(make_db(native ? "runn" : "runr", 1, ci, sizeof(ci)), 0);
    ASSERT_EQ(make_db(native ? "evn" : "evr", 1, ci2, sizeof(ci2)), 0);
    const char *layout = native ? "native" : "remote";
    ASSERT_EQ(test_sh_loud(
                  "rm -rf %s && mkdir -p %s && %s/vl3 model tiny --out %s/m --layout %s >/dev/null"
                  " && %s/vl3 model tiny --out %s/m2 --layout %s --seed 1 >/dev/null",
                  dir, dir, bin, dir, layout, bin, dir, layout),
              0);
    ASSERT_EQ(test_sh_loud(
                  "cd %s && ffmpeg -v error -f lavfi -i testsrc=s=200x150:r=1 -frames:v 1 img.png"
                  " && ffmpeg -v error -f lavfi -i testsrc2=s=160x120:r=10 -t 4 -c:v mpeg4 -y "
                  "clip.mp4 && ffmpeg -v error -f lavfi -i smptebars=s=160x120:r=10 -t 4 -c:v "
                  "mpeg4 -y other.mp4",
                  dir),
              0);
    snprintf(run, sizeof(run), "%s/vl3 run --model %s/m --greedy --max-new-tokens 4 --threads 1"
             " --precision bf16", bin, dir);
    char runf[4096];
    snprintf(runf, sizeof(runf), "%s/vl3 run --model %s/m --greedy --max-new-tokens 4 --threads 1"
             " --precision f32", bin, dir);
    snprintf(run2, sizeof(run2), "%s/vl3 run --model %s/m2 --greedy --max-new-tokens 4 "
             "--threads 1", bin, dir);
    char a[2048];
    /* an image, a video, a window of a video, in bf16 then f32 precision (other keys: a miss
     * first); the entries hold the encoder's rows before the projector (32 wide in the tiny
     * model): bf16 rows in bf16 precision, f32 in f32 */
    for (int f32 = 0; f32 < 2; f32++) {
        const char *sfx = f32 ? "_f32" : "";
        char name[32], hk[40] = "", hd[1200];
        snprintf(a, sizeof(a), "--image %s/img.png --task caption", dir);
        snprintf(name, sizeof(name), "img%s", sfx);
        if (cold_miss_hit(f32 ? runf : run, ci, dir, name, a))
            return 1;
        snprintf(a, sizeof(a), "--video %s/clip.mp4 --fps 2 --max-frames 6 --task caption", dir);
        snprintf(name, sizeof(name), "vid%s", sfx);
        if (cold_miss_hit(f32 ? runf : run, ci, dir, name, a))
            return 1;
        snprintf(a, sizeof(a), "--video %s/clip.mp4 --fps 2 --window 2 --window-index 1 --task "
                 "caption", dir);
        snprintf(name, sizeof(name), "win%s", sfx);
        if (cold_miss_hit(f32 ? runf : run, ci, dir, name, a))
            return 1;
        snprintf(hd, sizeof(hd), "%s/win%s_hit", dir, sfx);
        cache_of(hd, hk, sizeof(hk));
        ASSERT_EQ(strlen(hk), 32);
        ASSERT_EQ(sqlv(ci, "SELECT raw_bytes / n_rows FROM token_cache_entries WHERE key = '%s'",
                       hk),
                  32 * (f32 ? 4 : 2));
    }
    /* the two precisions' answers are not the same computation (the comparison can fail) */
    {
        char b16[1200], f32[1200];
        snprintf(b16, sizeof(b16), "%s/vid_cold", dir);
        snprintf(f32, sizeof(f32), "%s/vid_f32_cold", dir);
        int same = files_equal(b16, f32, "vision_out.f32");
        ASSERT(!same);
    }

    /* a frame sequence: keyed by every file's content and timestamp */
    ASSERT_EQ(test_sh_loud(
                  "cd %s && mkdir -p frames && ffmpeg -v error -f lavfi -i testsrc=s=160x120:r=2 "
                  "-frames:v 3 -start_number 0 frames/frame_%%d.5.png",
                  dir),
              0);
    snprintf(a, sizeof(a), "--frames %s/frames --task caption", dir);
    if (cold_miss_hit(run, ci, dir, "frm", a))
        return 1;
    {
        char d[1200];
        ASSERT_EQ(test_sh_loud("cd %s/frames && cp frame_0.5.png frame_2.5.png", dir), 0);
        snprintf(d, sizeof(d), "%s/frm_changed", dir);
        ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, a, ci, d), 0);
        ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");
        ASSERT_EQ(test_sh_loud("cd %s/frames && mv frame_2.5.png frame_3.5.png", dir), 0);
        snprintf(d, sizeof(d), "%s/frm_renamed", dir); /* same bytes, other timestamp */
        ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, a, ci, d), 0);
        ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");
    }

    /* key sensitivity: another question or task hits; any keyed parameter misses */
    struct {
        const char *name, *runner, *args, *want;
    } cases[] = {
        {"q1", run, "--fps 2 --max-frames 6 --task qa --question 'What moves?'", "hit"},
        {"q2", run, "--fps 2 --max-frames 6 --task ocr", "hit"},
        {"fps", run, "--fps 1 --max-frames 6 --task caption", "miss"},
        {"maxf", run, "--fps 2 --max-frames 5 --task caption", "miss"},
        {"win0", run, "--fps 2 --window 2 --window-index 0 --task caption", "miss"},
        {"winlen", run, "--fps 2 --window 3 --window-index 1 --task caption", "miss"},
        {"difffp", run, "--fps 2 --max-frames 6 --no-difffp --task caption", "miss"},
        {"thr", run, "--fps 2 --max-frames 6 --difffp-threshold 0.2 --task caption", "miss"},
        {"model", run2, "--fps 2 --max-frames 6 --task caption", "miss"},
        {"model_again", run2, "--fps 2 --max-frames 6 --task qa --question 'Why?'", "hit"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[1200];
        snprintf(d, sizeof(d), "%s/k_%s", dir, cases[i].name);
        ASSERT_EQ(test_sh_loud("%s --video %s/clip.mp4 %s --cache '%s' --dump %s >/dev/null",
                               cases[i].runner, dir, cases[i].args, ci, d),
                  0);
        if (strcmp(cache_of(d, NULL, 0), cases[i].want) != 0)
            TEST__FAIL("case %s: cache %s, expected %s", cases[i].name, cache_of(d, NULL, 0),
                       cases[i].want);
    }

    /* a damaged chunk: the run recomputes (same answer as cold), the entry is replaced */
    char key[40] = "", d[1200], cold[1200];
    snprintf(d, sizeof(d), "%s/img_hit", dir);
    cache_of(d, key, sizeof(key));
    ASSERT_EQ(strlen(key), 32);
    ASSERT_EQ(sqlv(ci, "UPDATE token_cache_chunks SET data = set_byte(data, length(data) - 3, "
                       "get_byte(data, length(data) - 3) # 16) WHERE key = '%s'", key),
              1);
    snprintf(a, sizeof(a), "--image %s/img.png --task caption", dir);
    snprintf(d, sizeof(d), "%s/img_damaged", dir);
    snprintf(cold, sizeof(cold), "%s/img_cold", dir);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null 2>&1", run, a, ci, d), 0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");
    ASSERT(files_equal(cold, d, "logits.f32"));
    ASSERT(files_equal(cold, d, "generated.i32"));
    ASSERT_EQ(sqlv(ci, "SELECT value FROM token_cache_counters WHERE name = 'corrupt'"), 1);
    snprintf(d, sizeof(d), "%s/img_after", dir);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, a, ci, d), 0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "hit");
    ASSERT(files_equal(cold, d, "logits.f32"));

    /* the file replaced at the same path misses; the same bytes touched again hit */
    snprintf(a, sizeof(a), "--video %s/clip.mp4 --fps 2 --max-frames 6 --task caption", dir);
    ASSERT_EQ(test_sh_loud("touch %s/clip.mp4", dir), 0);
    snprintf(d, sizeof(d), "%s/touched", dir);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, a, ci, d), 0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "hit");
    ASSERT_EQ(test_sh_loud("cp %s/other.mp4 %s/clip.mp4", dir, dir), 0);
    snprintf(d, sizeof(d), "%s/replaced", dir);
    ASSERT_EQ(test_sh_loud("%s %s --cache '%s' --dump %s >/dev/null", run, a, ci, d), 0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");

    /* eviction under a small budget (a database of its own): room for one window's entry */
    snprintf(a, sizeof(a), "--video %s/other.mp4 --fps 2 --window 2 --task caption", dir);
    snprintf(d, sizeof(d), "%s/ev0", dir);
    ASSERT_EQ(
        test_sh_loud("%s %s --window-index 0 --cache '%s' --dump %s >/dev/null", run, a, ci2, d),
        0);
    long long one = sqlv(ci2, "SELECT bytes FROM token_cache_entries");
    ASSERT_GT(one, 0);
    snprintf(d, sizeof(d), "%s/ev1", dir);
    ASSERT_EQ(
        test_sh_loud("%s %s --window-index 1 --cache '%s' --cache-budget %lld --dump %s >/dev/null",
                     run, a, ci2, one * 3 / 2, d),
        0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");
    ASSERT_EQ(sqlv(ci2, "SELECT count(*) FROM token_cache_entries"), 1);
    ASSERT_EQ(sqlv(ci2, "SELECT value FROM token_cache_counters WHERE name = 'evictions'"), 1);
    snprintf(d, sizeof(d), "%s/ev2", dir);
    ASSERT_EQ(
        test_sh_loud("%s %s --window-index 1 --cache '%s' --dump %s >/dev/null", run, a, ci2, d),
        0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "hit");
    snprintf(d, sizeof(d), "%s/ev3", dir);
    ASSERT_EQ(
        test_sh_loud("%s %s --window-index 0 --cache '%s' --dump %s >/dev/null", run, a, ci2, d),
        0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss"); /* evicted */

    /* the server unreachable: the run answers as the cold path does */
    snprintf(a, sizeof(a), "--image %s/img.png --task caption", dir);
    snprintf(d, sizeof(d), "%s/down", dir);
    ASSERT_EQ(
        test_sh_loud("%s %s --cache 'host=127.0.0.1 port=1 dbname=x' --dump %s >/dev/null 2>&1",
                     run, a, d),
        0);
    ASSERT_STR_EQ(cache_of(d, NULL, 0), "miss");
    ASSERT(files_equal(cold, d, "logits.f32"));
    return 0;
}

TEST(run_cache_tiny_remote) { return run_cache_layout(0); }
TEST(run_cache_tiny_native) { return run_cache_layout(1); }
