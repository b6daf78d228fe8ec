/* bench_decode.c: `vl3 bench decode`. Placeholder until its issue lands. */
#include <stdio.h>

#include "cli.h"

int bench_decode(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: vl3 bench decode [options]\n\n(not implemented yet in this version)\n");
        return CLI_EXIT_OK;
    }
    fprintf(stderr, "vl3 bench decode: not implemented yet in this version\n");
    return CLI_EXIT_FAIL;
}
