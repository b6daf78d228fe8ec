/* bench_llm.c: `vl3 bench llm`. Placeholder until its issue lands. */
#include <stdio.h>

#include "cli.h"

int bench_llm(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: vl3 bench llm [options]\n\n(not implemented yet in this version)\n");
        return CLI_EXIT_OK;
    }
    fprintf(stderr, "vl3 bench llm: not implemented yet in this version\n");
    return CLI_EXIT_FAIL;
}
