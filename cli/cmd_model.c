/* cmd_model.c: `vl3 model`: checkpoint utilities.
 *   vl3 model tiny --out DIR [--layout remote|native] [--seed N] [--tokenizer DIR] [--shards N]
 *       writes a tiny random checkpoint of the real architecture (tests, development);
 *   vl3 model info DIR
 *       loads a checkpoint (no backend) and prints its layout, sizes, tensors and special ids. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vl3/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vl3 model tiny --out DIR [--layout remote|native] [--seed N]\n"
            "                      [--tokenizer DIR] [--shards N] [--std X] [--size 2b]\n"
            "       vl3 model info DIR\n\n"
            "tiny  write a tiny randomly initialised VideoLLaMA3 checkpoint (bf16 safetensors,\n"
            "      config.json with the real keys, generation/preprocessor/processor configs,\n"
            "      tokenizer files). Sizes: LLM hidden 64, 2 layers, 4 heads, 2 kv heads,\n"
            "      intermediate 128; vision hidden 32, 2 layers, 2 heads, intermediate 64, patch 14.\n"
            "      --layout remote  DAMO hub layout (videollama3_qwen2), tied lm_head like the 2B\n"
            "                       (default)\n"
            "      --layout native  transformers layout (video_llama_3), separate lm_head like\n"
            "                       the 7B\n"
            "      --seed N         RNG seed (default 0); the same seed gives the same bytes\n"
            "      --tokenizer DIR  copy a Qwen2 tokenizer (vocab.json, merges.txt, added-token\n"
            "                       files) and use 151936 embedding rows; without it a small\n"
            "                       byte-level BPE is built\n"
            "      --std X          weight init standard deviation (default 0.02)\n"
            "      --shards N       split the weights into N files + model.safetensors.index.json\n"
            "      --size 2b        the 2B's sizes (LLM 1536 x 28 layers, vision 1152 x 27):\n"
            "                       a ~4 GB random checkpoint for benchmarks\n"
            "info  load DIR without a backend and print layout, sizes, tensor and parameter\n"
            "      counts, bytes and special token ids.\n");
}

static int parse_u64(const char *s, uint64_t *ret)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return -EINVAL;
    *ret = v;
    return 0;
}

static int cmd_tiny(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},    {"layout", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},   {"tokenizer", required_argument, NULL, 't'},
        {"shards", required_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'},
        {"std", required_argument, NULL, 'd'},    {"size", required_argument, NULL, 'z'},
        {NULL, 0, NULL, 0},
    };
    vl3_tiny_params p = vl3_tiny_params_default();
    const char *out = NULL;
    uint64_t v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:l:s:t:n:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'l':
            if (strcmp(optarg, "remote") == 0)
                p.native = 0;
            else if (strcmp(optarg, "native") == 0)
                p.native = 1;
            else {
                fprintf(stderr, "vl3 model tiny: --layout must be \"remote\" or \"native\"\n");
                return CLI_EXIT_USAGE;
            }
            break;
        case 's':
            if (parse_u64(optarg, &p.seed) < 0) {
                fprintf(stderr, "vl3 model tiny: invalid --seed \"%s\"\n", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 't':
            p.tokenizer_dir = optarg;
            break;
        case 'n':
            if (parse_u64(optarg, &v) < 0 || v < 1 || v > 64) {
                fprintf(stderr, "vl3 model tiny: --shards must be 1..64\n");
                return CLI_EXIT_USAGE;
            }
            p.n_shards = (int)v;
            break;
        case 'd': {
            char *end;
            errno = 0;
            p.std = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(p.std > 0 && p.std <= 1)) {
                fprintf(stderr, "vl3 model tiny: --std must be in (0, 1]\n");
                return CLI_EXIT_USAGE;
            }
            break;
        }
        case 'z':
            if (strcmp(optarg, "2b") != 0 && strcmp(optarg, "tiny") != 0) {
                fprintf(stderr, "vl3 model tiny: --size must be \"tiny\" or \"2b\"\n");
                return CLI_EXIT_USAGE;
            }
            p.full_2b = strcmp(optarg, "2b") == 0;
            break;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (!out || optind != argc) {
        fprintf(stderr, "vl3 model tiny: --out DIR is required (and nothing else)\n");
        return CLI_EXIT_USAGE;
    }
    vl3_error err = {0};
    int r = vl3_model_write_tiny(out, &p, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 model tiny: %s\n", vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    vl3_model_params mp = vl3_model_params_default();
    mp.dir = argv[1];
    mp.no_backend = 1;
    vl3_model *m = NULL;
    vl3_error err = {0};
    int r = vl3_model_load(&mp, &m, &err);
    if (r < 0) {
        fprintf(stderr, "vl3 model info: %s\n", vl3_error_text(&err, r));
        return CLI_EXIT_FAIL;
    }
    vl3_model_info i;
    (void)vl3_model_get_info(m, &i);
    printf("layout:        %s (%s)\n", i.layout, i.model_type);
    printf("llm:           hidden %d, layers %d, heads %d, kv heads %d, head dim %d, "
           "intermediate %d\n",
           i.llm_hidden, i.llm_layers, i.llm_heads, i.llm_kv_heads, i.llm_head_dim,
           i.llm_intermediate);
    printf("vocab rows:    %d\n", i.vocab_rows);
    printf("rope theta:    %g, rms eps %g, max positions %d\n", i.rope_theta, i.rms_eps,
           i.max_positions);
    printf("lm_head:       %s\n", i.tied_lm_head ? "tied to embed_tokens" : "separate");
    printf("vision:        hidden %d, layers %d, heads %d, intermediate %d, patch %d\n",
           i.vision_hidden, i.vision_layers, i.vision_heads, i.vision_intermediate, i.patch_size);
    printf("compression:   %s\n", i.use_token_compression ? "on" : "off");
    printf("tensors:       %d in %d file%s, dtype %s\n", i.n_tensors, i.n_files,
           i.n_files == 1 ? "" : "s", i.dtype);
    printf("parameters:    %" PRId64 "\n", i.n_params);
    printf("bytes:         %" PRId64 "\n", i.n_bytes);
    printf("tokenizer:     %s\n", i.has_tokenizer ? "loaded" : "not loaded");
    printf("special ids:   <|endoftext|> %d, <|im_start|> %d, <|im_end|> %d, <|image_pad|> %d, "
           "<|video_pad|> %d, <image> %d\n",
           i.id_endoftext, i.id_im_start, i.id_im_end, i.id_image_pad, i.id_video_pad, i.id_image);
    printf("placeholders:  image %d, video %d\n", i.image_token_id, i.video_token_id);
    vl3_model_free(m);
    return CLI_EXIT_OK;
}

int cmd_model(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "tiny") == 0)
        return cmd_tiny(argc - 1, argv + 1);
    if (strcmp(argv[1], "info") == 0) {
        if (cli_wants_help(argc - 1, argv + 1)) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        return cmd_info(argc - 1, argv + 1);
    }
    fprintf(stderr, "vl3 model: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
