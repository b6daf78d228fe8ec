/* cmd_bench.c: `vl3 bench <what>`: dispatches to the benchmark of each area (bench_*.c). Every
 * benchmark prints a table, runs the alternative a user would pick beside ours, and states the
 * hardware bound its numbers are measured against. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} benches[] = {
    {"llm", bench_llm, "prefill and decode tokens/s of a model, with the memory-traffic floor"},
    {"tokenize", bench_tokenize, "tokenizer throughput against the reference implementation"},
    {"decode", bench_decode, "video decode + sampling against the ffmpeg CLI"},
    {"cpu", bench_cpu, "vl3 run (bf16 mode) beside transformers bf16 on the CPU, phase by phase"},
    {"gpu", bench_gpu, "CUDA backend: vision, prefill, decode per batch size against the device's floors"},
    {"attention", bench_attention, "CPU attention kernels: f32 sgemm vs AMX bf16 (vs torch SDPA)"},
    {"cache", bench_cache, "token cache: entry size and speed, cached re-query against cold"},
};

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: vl3 bench <what> [options]\n\n");
        for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
            printf("  %-10s %s\n", benches[i].name, benches[i].summary);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            return benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vl3 bench: unknown benchmark \"%s\"\n", argv[1]);
    return CLI_EXIT_USAGE;
}
