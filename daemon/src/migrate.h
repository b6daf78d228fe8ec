/* migrate.h: apply the SQL migrations of schema/ (NNNN_name.sql) to a PostgreSQL database.
 *
 * Blocking libpq on purpose: it runs in `vl3 db migrate`, and in vl3d at start BEFORE the event
 * loop runs (pg.migrate_on_start), never from a loop callback.
 *
 * Protocol: connect; take pg_advisory_lock(MIGRATE_LOCK_KEY) (session lock, so two concurrent
 * migrators serialise and the second one finds everything applied); create schema_migrations if
 * missing; for each file in version order: if its version is recorded, its SHA-256 must match
 * the recorded checksum (else error naming the file: an applied migration must never change),
 * otherwise run it and record (version, name, checksum) in its own transaction. Migration files
 * must not contain transaction control (BEGIN/COMMIT). Re-running is a no-op. */
#ifndef VL3D_MIGRATE_H
#define VL3D_MIGRATE_H

#include <stddef.h>

#include "vl3/err.h"

/* The advisory lock key: ASCII "vl3schem" read as a big-endian int64. */
#define MIGRATE_LOCK_KEY 0x766c33736368656dLL

typedef struct migrate_report {
    int found;    /* migration files in the directory */
    int applied;  /* applied by this call */
    int skipped;  /* already applied, checksum verified */
    int unknown;  /* versions recorded in the database with no file in the directory */
    int last_version; /* highest version present after the call, 0 if none */
} migrate_report;

/* Apply the migrations of dir to the database at conninfo. Returns 0 and fills ret_report (may be
 * NULL); VL3_E_PG when the server is unreachable or a migration fails (the message names the
 * file; that migration is rolled back, earlier ones stay); VL3_E_FORMAT for a changed applied
 * migration, two files with one version, or a bad file name; -ENOENT/-errno for the directory. */
int migrate_apply(const char *conninfo, const char *dir, migrate_report *ret_report,
                  vl3_error *reterr);

/* One applied migration as recorded. */
typedef struct migrate_entry {
    int version;
    char name[128];
    char checksum[65];
    char applied_at[40];
} migrate_entry;

/* Read schema_migrations (blocking). Fills up to max entries in version order and returns their
 * count (0 if the table does not exist yet), or VL3_E_PG. */
int migrate_list(const char *conninfo, migrate_entry *entries, int max, vl3_error *reterr);

/* The default schema directory for this executable: "<source>/schema" when the executable runs
 * from a CMake build tree (its directory's parent holds CMakeCache.txt), else VL3_SCHEMA_DIR when
 * that is defined at compile time, else "<exe dir>/../share/vl3/schema" (a relocatable install).
 * Writes into buf (len bytes). Returns 0, -ENAMETOOLONG or -errno. */
int migrate_default_dir(char *buf, size_t len);

/* The conninfo the tools use: conninfo_arg when not NULL; else pg.conninfo of the vl3d config
 * file config_path when not NULL; else that of /etc/vl3/vl3d.conf when the file exists; else the
 * daemon's default ("dbname=vl3"; libpq's PG* environment variables still apply). Returns 0 and an
 * owned string in *ret_conninfo, or the config error (VL3_E_CONFIG citing file:line, -errno). */
int migrate_conninfo_resolve(const char *conninfo_arg, const char *config_path,
                             char **ret_conninfo, vl3_error *reterr);

#endif
