/* cmd_db.c: `vl3 db migrate` applies the SQL migrations of schema/ (daemon/src/migrate.c does the
 * work under an advisory lock, so it is safe next to a starting vl3d); `vl3 db status` lists the
 * applied migrations. The connection string comes from --conninfo, else the vl3d config. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "migrate.h"

#define DB_STATUS_MAX 1000

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 db migrate [--conninfo STR | -c vl3d.conf] [--schema-dir DIR]\n"
               "       vl3 db status  [--conninfo STR | -c vl3d.conf]\n\n"
               "  migrate   apply the schema migrations (NNNN_name.sql) not applied yet,\n"
               "            each in its own transaction, under an advisory lock; re-running\n"
               "            is a no-op, and a changed applied migration is refused\n"
               "  status    list the applied migrations\n\n"
               "  --conninfo STR    libpq connection string (e.g. \"host=db dbname=vl3\")\n"
               "  -c, --config FILE take pg.conninfo from this vl3d configuration file\n"
               "                    (default: /etc/vl3/vl3d.conf if it exists, else\n"
               "                    \"dbname=vl3\"; libpq's PGHOST, PGUSER, ... apply)\n"
               "  --schema-dir DIR  migrations directory (default: the source tree's schema/ when\n"
               "                    run from a build tree, else the installed share/vl3/schema)\n"
               "  -h, --help        show this help\n");
}

int cmd_db(int argc, char **argv)
{
    static const struct option opts[] = {
        {"conninfo", required_argument, NULL, 'C'},
        {"config", required_argument, NULL, 'c'},
        {"schema-dir", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *arg_conninfo = NULL, *arg_config = NULL, *arg_dir = NULL;
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'C': arg_conninfo = optarg; break;
        case 'c': arg_config = optarg; break;
        case 'S': arg_dir = optarg; break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "vl3 db: missing subcommand (migrate or status)\n");
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *sub = argv[optind++];
    /* options may also follow the subcommand */
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'C': arg_conninfo = optarg; break;
        case 'c': arg_config = optarg; break;
        case 'S': arg_dir = optarg; break;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vl3 db: unexpected argument \"%s\"\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    int is_migrate = strcmp(sub, "migrate") == 0;
    if (!is_migrate && strcmp(sub, "status") != 0) {
        fprintf(stderr, "vl3 db: unknown subcommand \"%s\" (migrate or status)\n", sub);
        return CLI_EXIT_USAGE;
    }
    if (arg_conninfo && arg_config) {
        fprintf(stderr, "vl3 db: --conninfo and --config cannot be used together\n");
        return CLI_EXIT_USAGE;
    }
    vl3_error err = {0};
    char *conninfo = NULL;
    int r = migrate_conninfo_resolve(arg_conninfo, arg_config, &conninfo, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 db: %s\n", vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    int ret = CLI_EXIT_FAIL;
    if (is_migrate) {
        char dir[PATH_MAX];
        if (arg_dir) {
            snprintf(dir, sizeof(dir), "%s", arg_dir);
        } else if ((r = migrate_default_dir(dir, sizeof(dir))) < 0) {
            fprintf(stderr, "vl3 db: cannot find the schema directory: %s (use --schema-dir)\n",
                    vl3_strerror(r));
            goto out;
        }
        migrate_report rep;
        r = migrate_apply(conninfo, dir, &rep, &err);
        if (r < 0) {
            fprintf(stderr, "vl3 db migrate: %s\n", vl3_error_text(&err, r));
            goto out;
        }
        if (rep.applied == 0)
            printf("schema is up to date (version %04d, %d migrations in \"%s\")\n",
                   rep.last_version, rep.found, dir);
        else
            printf("applied %d migration%s, schema is now at version %04d\n", rep.applied,
                   rep.applied == 1 ? "" : "s", rep.last_version);
        if (rep.unknown > 0)
            fprintf(stderr,
                    "vl3 db migrate: warning: the database has %d migration%s not in \"%s\" "
                    "(a newer vl3?)\n",
                    rep.unknown, rep.unknown == 1 ? "" : "s", dir);
        ret = CLI_EXIT_OK;
    } else {
        migrate_entry *e = calloc(DB_STATUS_MAX, sizeof(*e));
        if (!e) {
            fprintf(stderr, "vl3 db status: out of memory\n");
            goto out;
        }
        int n = migrate_list(conninfo, e, DB_STATUS_MAX, &err);
        if (n < 0) {
            fprintf(stderr, "vl3 db status: %s\n", vl3_error_text(&err, n));
            free(e);
            goto out;
        }
        if (n == 0)
            printf("no migrations applied (run \"vl3 db migrate\")\n");
        for (int i = 0; i < n; i++)
            printf("%04d  %-32s  %s  sha256:%.12s\n", e[i].version, e[i].name, e[i].applied_at,
                   e[i].checksum);
        free(e);
        ret = CLI_EXIT_OK;
    }
out:
    free(conninfo);
    return ret;
}
