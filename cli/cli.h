/* cli.h: the vl3 command-line tool's subcommand table. Each subcommand lives in its own
 * cmd_<name>.c, parses its own options (getopt_long) and answers --help. Exit codes: 0 success,
 * 1 failure of the work, 2 usage error. */
#ifndef VL3_CLI_H
#define VL3_CLI_H

#include <stddef.h>
#include <stdint.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

int cmd_run(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_enqueue(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_db(int argc, char **argv);
int cmd_bench(int argc, char **argv);

int bench_llm(int argc, char **argv);
int bench_tokenize(int argc, char **argv);
int bench_decode(int argc, char **argv);
int bench_cpu(int argc, char **argv);
int bench_attention(int argc, char **argv);
int bench_gpu(int argc, char **argv);

/* bench_cpu.c: the highest honest read bandwidth in bytes/s of n_threads threads streaming a
 * buffer of `bytes` (best of several read methods; *ret_method names it); 0 on failure. */
double bench_read_bandwidth(int n_threads, unsigned long bytes, const char **ret_method);
/* Probes of that bandwidth over a benchmark (a shared host's rate moves by 20-30% within
 * minutes): the highest (the decode floor's) with its method, the lowest, how many. Start from
 * {0}, call bench_bw_probe before the runs and after them. */
struct bench_bw {
    double best, lowest;
    int n;
    char method[96];
};
void bench_bw_probe(struct bench_bw *b, int n_threads, unsigned long bytes);
/* One read pass to pair with a timed stretch of work (vl3 bench llm's paired decode windows):
 * a buffer of `bytes` in 2 MiB pages, read by n_threads with the most prefetching method (the
 * one the probe finds best on this project's machines), one pass: bytes/s. */
struct bench_reader {
    uint64_t *buf;
    void *map;
    size_t map_len, words_per;
    int n_threads, method;
};
int bench_reader_open(struct bench_reader *r, int n_threads, unsigned long bytes);
double bench_reader_pass(const struct bench_reader *r);
void bench_reader_close(struct bench_reader *r);
/* The median of v[0 .. n) (n >= 1), which it sorts ascending in place. */
double bench_median(double *v, int n);
/* bench_cpu.c: the weights that every token (LLM: q/k/v/o and the three MLP matrices of every
 * layer, lm_head excluded) or every patch (vision: the encoder layers' four attention and two MLP
 * matrices) multiplies, for the benchmarks' FLOP and byte counts (spec §12: 2 FLOPs a weight). */
struct vl3_model_info;
double bench_llm_matrix_params(const struct vl3_model_info *in);
double bench_vision_matrix_params(const struct vl3_model_info *in);
int bench_cache(int argc, char **argv);

/* Whether argv holds -h/--help anywhere before "--". */
int cli_wants_help(int argc, char **argv);

#endif
