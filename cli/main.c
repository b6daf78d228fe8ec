/* main.c: the vl3 command-line tool: runs one video locally, tokenizes, makes tiny models,
 * enqueues archives, reports status, searches the answers, migrates the database and benchmarks. One table maps
 * subcommand names to their cmd_* functions. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vl3/engine.h"

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct subcommand subcommands[] = {
    {"run", cmd_run, "run the model on a prompt, image, frames or video and print the answer"},
    {"tokenize", cmd_tokenize, "encode text to token ids (or decode ids to text)"},
    {"model", cmd_model, "model utilities: make a tiny random model, inspect a checkpoint"},
    {"enqueue", cmd_enqueue, "produce indexing jobs for files or directory trees to Kafka"},
    {"ask", cmd_ask, "ask one question about a file through vl3d and print the answer"},
    {"status", cmd_status, "show job counts and throughput from PostgreSQL"},
    {"search", cmd_search, "full-text search over the answers, with file and time range"},
    {"db", cmd_db, "database utilities: apply migrations"},
    {"bench", cmd_bench, "benchmarks: llm, decode"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vl3 [--version] [--help] <command> [<args>]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "\n'vl3 <command> --help' describes a command.\n");
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("vl3 %s\n", vl3_engine_version());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            return subcommands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vl3: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
