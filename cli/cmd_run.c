/* cmd_run.c: `vl3 run`. Placeholder until its issue lands: answers --help and otherwise says
 * that the command is not available in this build (exit 1). */
#include <stdio.h>

#include "cli.h"

int cmd_run(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: vl3 run [options]\n\n(not implemented yet in this version)\n");
        return CLI_EXIT_OK;
    }
    fprintf(stderr, "vl3 run: not implemented yet in this version\n");
    return CLI_EXIT_FAIL;
}
