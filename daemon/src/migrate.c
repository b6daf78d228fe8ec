/* migrate.c: apply schema/NNNN_name.sql migrations in order, once, under an advisory lock.
 *
 * Blocking libpq (see migrate.h for when that is allowed). The checksum is the SHA-256 of the
 * file's bytes, computed by the server (sha256(bytea), PostgreSQL >= 11) so no hashing code or
 * library is needed here. Each migration runs in its own transaction together with the INSERT
 * into schema_migrations that records it, so a crash leaves it either applied and recorded or
 * neither. The session advisory lock serialises concurrent migrators (two vl3d starting at once,
 * or an operator running `vl3 db migrate`); the loser waits, then finds the work done. */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_conf.h"
#include "pg.h"
#include "vl3/util.h"

#define MIGRATE_MAX_FILES 1000
#define MIGRATE_MAX_BYTES (16u << 20) /* a migration file larger than this is a mistake */

struct mfile {
    int version;
    char name[256]; /* file name */
};

static int pq_err(vl3_error *reterr, const char *prefix, const char *msg)
{
    return pg_error_set(reterr, prefix, msg);
}

/* Run a command; on failure set reterr with prefix + server message. */
static int exec_ok(PGconn *pq, const char *sql, const char *prefix, vl3_error *reterr)
{
    PGresult *res = PQexec(pq, sql);
    ExecStatusType st = PQresultStatus(res);
    int r = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        r = pq_err(reterr, prefix, PQresultErrorMessage(res));
    PQclear(res);
    return r;
}

static int connect_db(const char *conninfo, PGconn **ret, vl3_error *reterr)
{
    PGconn *pq = PQconnectdb(conninfo);
    if (!pq)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    if (PQstatus(pq) != CONNECTION_OK) {
        int r = pq_err(reterr, "could not connect to PostgreSQL: ", PQerrorMessage(pq));
        PQfinish(pq);
        return r;
    }
    /* CREATE TABLE IF NOT EXISTS and friends send NOTICEs: not for the terminal */
    PQclear(PQexec(pq, "SET client_min_messages = warning"));
    *ret = pq;
    return 0;
}

/* NNNN_name.sql -> version; -1 if the name does not have that shape. */
static int parse_name(const char *name)
{
    size_t len = strlen(name);
    if (len < 10 || strcmp(name + len - 4, ".sql") != 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (name[i] < '0' || name[i] > '9')
            return -1;
    if (name[4] != '_')
        return -1;
    return (name[0] - '0') * 1000 + (name[1] - '0') * 100 + (name[2] - '0') * 10 + (name[3] - '0');
}

static int cmp_mfile(const void *a, const void *b)
{
    const struct mfile *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* List the migration files of dir sorted by version (owned array in *ret). */
static int list_files(const char *dir, struct mfile **ret, int *ret_n, vl3_error *reterr)
{
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return vl3_error_set(reterr, -e, "could not open schema directory \"%s\": %s", dir,
                             strerror(e));
    }
    struct mfile *files = NULL;
    int n = 0, r = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        int v = parse_name(e->d_name);
        if (v < 0 || len >= sizeof(files[0].name)) {
            r = vl3_error_set(reterr, VL3_E_FORMAT,
                              "migration file \"%s/%s\" is not named NNNN_name.sql", dir,
                              e->d_name);
            goto fail;
        }
        if (n >= MIGRATE_MAX_FILES) {
            r = vl3_error_set(reterr, VL3_E_LIMIT, "too many migration files in \"%s\"", dir);
            goto fail;
        }
        if (n % 16 == 0) {
            struct mfile *nf = realloc(files, (size_t)(n + 16) * sizeof(*files));
            if (!nf) {
                r = vl3_error_set(reterr, -ENOMEM, "out of memory");
                goto fail;
            }
            files = nf;
        }
        files[n].version = v;
        memcpy(files[n].name, e->d_name, len + 1);
        n++;
    }
    closedir(d);
    d = NULL;
    if (n > 0)
        qsort(files, (size_t)n, sizeof(*files), cmp_mfile);
    for (int i = 1; i < n; i++)
        if (files[i].version == files[i - 1].version) {
            r = vl3_error_set(reterr, VL3_E_FORMAT,
                              "migrations \"%s\" and \"%s\" have the same version %04d",
                              files[i - 1].name, files[i].name, files[i].version);
            goto fail;
        }
    *ret = files;
    *ret_n = n;
    return 0;
fail:
    if (d)
        closedir(d);
    free(files);
    return r;
}

static const char sql_create_table[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "  version integer PRIMARY KEY,"
    "  name text NOT NULL,"
    "  checksum text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now())";

/* checksum of data as computed by the server, into out[65]. */
static int server_sha256(PGconn *pq, const char *data, size_t len, char out[65], vl3_error *reterr)
{
    const char *params[1] = {data};
    int lens[1] = {(int)len};
    int formats[1] = {1};
    PGresult *res = PQexecParams(pq, "SELECT encode(sha256($1::bytea), 'hex')", 1, NULL, params,
                                 lens, formats, 0);
    int r = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        r = pq_err(reterr, "could not compute a migration checksum: ", PQresultErrorMessage(res));
    else
        snprintf(out, 65, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return r;
}

/* Apply one file in its own transaction. */
static int apply_one(PGconn *pq, const struct mfile *f, const char *sql, const char *checksum,
                     vl3_error *reterr)
{
    char prefix[400];
    snprintf(prefix, sizeof(prefix), "could not apply migration \"%s\": ", f->name);
    int r = exec_ok(pq, "BEGIN", prefix, reterr);
    if (r < 0)
        return r;
    r = exec_ok(pq, sql, prefix, reterr);
    if (r == 0) {
        char version[16];
        snprintf(version, sizeof(version), "%d", f->version);
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(strlen(f->name) - 4), f->name);
        const char *params[3] = {version, name, checksum};
        PGresult *res = PQexecParams(pq,
                                     "INSERT INTO schema_migrations (version, name, checksum) "
                                     "VALUES ($1::integer, $2, $3)",
                                     3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            r = pq_err(reterr, prefix, PQresultErrorMessage(res));
        PQclear(res);
    }
    if (r == 0)
        r = exec_ok(pq, "COMMIT", prefix, reterr);
    if (r < 0)
        PQclear(PQexec(pq, "ROLLBACK"));
    return r;
}

int migrate_apply(const char *conninfo, const char *dir, migrate_report *ret_report,
                  vl3_error *reterr)
{
    VL3_RETURN_IF(!conninfo || !dir, -EINVAL);
    migrate_report rep = {0};
    struct mfile *files = NULL;
    int nfiles = 0, locked = 0;
    char *sql = NULL;
    PGconn *pq = NULL;
    PGresult *applied = NULL;
    int r = list_files(dir, &files, &nfiles, reterr);
    if (r < 0)
        return r;
    rep.found = nfiles;
    r = connect_db(conninfo, &pq, reterr);
    if (r < 0)
        goto out;
    char lock_sql[96];
    snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
    r = exec_ok(pq, lock_sql, "could not take the migration lock: ", reterr);
    if (r < 0)
        goto out;
    locked = 1;
    r = exec_ok(pq, sql_create_table, "could not create \"schema_migrations\": ", reterr);
    if (r < 0)
        goto out;
    applied = PQexec(pq, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (PQresultStatus(applied) != PGRES_TUPLES_OK) {
        r = pq_err(reterr, "could not read \"schema_migrations\": ",
                   PQresultErrorMessage(applied));
        goto out;
    }
    int napplied = PQntuples(applied);
    for (int k = 0; k < napplied; k++) {
        int v = (int)strtol(PQgetvalue(applied, k, 0), NULL, 10);
        int have = 0;
        for (int i = 0; i < nfiles; i++)
            have |= files[i].version == v;
        if (!have)
            rep.unknown++;
        if (v > rep.last_version)
            rep.last_version = v;
    }
    for (int i = 0; i < nfiles; i++) {
        const struct mfile *f = &files[i];
        char path[PATH_MAX], checksum[65];
        size_t len = 0;
        if (snprintf(path, sizeof(path), "%s/%s", dir, f->name) >= (int)sizeof(path)) {
            r = vl3_error_set(reterr, -ENAMETOOLONG, "path of \"%s\" is too long", f->name);
            goto out;
        }
        r = vl3_file_read(path, MIGRATE_MAX_BYTES, &sql, &len, reterr);
        if (r < 0)
            goto out;
        if (strlen(sql) != len) {
            r = vl3_error_set(reterr, VL3_E_FORMAT, "migration \"%s\" contains a NUL byte", path);
            goto out;
        }
        r = server_sha256(pq, sql, len, checksum, reterr);
        if (r < 0)
            goto out;
        int row = -1;
        for (int k = 0; k < napplied; k++)
            if ((int)strtol(PQgetvalue(applied, k, 0), NULL, 10) == f->version)
                row = k;
        if (row >= 0) {
            if (strcmp(PQgetvalue(applied, row, 2), checksum) != 0) {
                r = vl3_error_set(reterr, VL3_E_FORMAT,
                                  "migration \"%s\" was changed after it was applied "
                                  "(recorded checksum %.12s..., file %.12s...); applied "
                                  "migrations must never change: add a new one instead",
                                  path, PQgetvalue(applied, row, 2), checksum);
                goto out;
            }
            rep.skipped++;
        } else {
            r = apply_one(pq, f, sql, checksum, reterr);
            if (r < 0)
                goto out;
            rep.applied++;
            if (f->version > rep.last_version)
                rep.last_version = f->version;
        }
        VL3_FREE(sql);
    }
    if (ret_report)
        *ret_report = rep;
out:
    free(sql);
    PQclear(applied);
    if (locked) {
        snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_unlock(%lld)", MIGRATE_LOCK_KEY);
        PQclear(PQexec(pq, lock_sql));
    }
    if (pq)
        PQfinish(pq);
    free(files);
    return r;
}

int migrate_list(const char *conninfo, migrate_entry *entries, int max, vl3_error *reterr)
{
    VL3_RETURN_IF(!conninfo || (max > 0 && !entries), -EINVAL);
    PGconn *pq = NULL;
    int r = connect_db(conninfo, &pq, reterr);
    if (r < 0)
        return r;
    PGresult *res = PQexec(pq, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        r = pq_err(reterr, "could not read \"schema_migrations\": ", PQresultErrorMessage(res));
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        goto out; /* r = 0: nothing applied yet */
    PQclear(res);
    res = PQexec(pq, "SELECT version, name, checksum, "
                     "to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ') "
                     "FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        r = pq_err(reterr, "could not read \"schema_migrations\": ", PQresultErrorMessage(res));
        goto out;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n && i < max; i++) {
        entries[i].version = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(entries[i].name, sizeof(entries[i].name), "%s", PQgetvalue(res, i, 1));
        snprintf(entries[i].checksum, sizeof(entries[i].checksum), "%s", PQgetvalue(res, i, 2));
        snprintf(entries[i].applied_at, sizeof(entries[i].applied_at), "%s",
                 PQgetvalue(res, i, 3));
    }
    r = n < max ? n : max;
out:
    PQclear(res);
    PQfinish(pq);
    return r;
}

int migrate_default_dir(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0)
        return -errno;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -ENOENT;
    *slash = '\0'; /* exe = directory of the executable */

    /* a build tree: <build>/bin/vl3 with <build>/CMakeCache.txt naming the source tree */
    char cache[PATH_MAX + 32];
    snprintf(cache, sizeof(cache), "%s/../CMakeCache.txt", exe);
    FILE *f = fopen(cache, "re");
    if (f) {
        static const char key[] = "CMAKE_HOME_DIRECTORY:INTERNAL=";
        char line[PATH_MAX + 64];
        int found = 0;
        while (!found && fgets(line, sizeof(line), f)) {
            if (strncmp(line, key, sizeof(key) - 1) == 0) {
                char *src = line + sizeof(key) - 1;
                src[strcspn(src, "\r\n")] = '\0';
                if (snprintf(buf, len, "%s/schema", src) >= (int)len) {
                    fclose(f);
                    return -ENAMETOOLONG;
                }
                found = 1;
            }
        }
        fclose(f);
        if (found)
            return 0;
    }
#ifdef VL3_SCHEMA_DIR
    if (snprintf(buf, len, "%s", VL3_SCHEMA_DIR) >= (int)len)
        return -ENAMETOOLONG;
#else
    if (snprintf(buf, len, "%s/../share/vl3/schema", exe) >= (int)len)
        return -ENAMETOOLONG;
#endif
    return 0;
}

#define MIGRATE_DEFAULT_CONFIG "/etc/vl3/vl3d.conf"

int migrate_conninfo_resolve(const char *conninfo_arg, const char *config_path,
                             char **ret_conninfo, vl3_error *reterr)
{
    VL3_RETURN_IF(!ret_conninfo, -EINVAL);
    char *out = NULL;
    if (conninfo_arg) {
        out = strdup(conninfo_arg);
        goto done;
    }
    if (!config_path && access(MIGRATE_DEFAULT_CONFIG, R_OK) == 0)
        config_path = MIGRATE_DEFAULT_CONFIG;
    /* daemon_conf_load, not the bare table: it also takes the kafka property lines */
    struct daemon_conf conf;
    int r = daemon_conf_load(&conf, config_path, reterr);
    if (r == 0)
        out = strdup(conf.pg_conninfo ? conf.pg_conninfo : "");
    daemon_conf_free(&conf);
    if (r < 0)
        return r;
done:
    if (!out)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    *ret_conninfo = out;
    return 0;
}
