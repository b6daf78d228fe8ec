/* fuzz_media.c: libFuzzer harness for the worker's media adapter: arbitrary bytes are opened from
 * memory under the default policy (tight limits so each input stays cheap), sampled in exact and
 * fast mode, and every picture converted. Any crash, hang or sanitizer report is a bug; refusals
 * are the expected outcome for most inputs. */
#include <stddef.h>
#include <stdint.h>

#include "media.h"
#include "sample.h"

static void run(const uint8_t *data, size_t size, enum sample_mode mode)
{
    struct media_policy pol;
    media_policy_default(&pol);
    pol.max_pixels = 1 << 20;
    pol.max_frames = 2000;
    pol.max_duration_ms = 3600 * 1000;
    pol.decode_timeout_ms = 2000;
    pol.threads = 1;
    pol.max_decode_errors = -1;
    media_input *m = NULL;
    vl3_error err = {0};
    if (media_open_memory(data, size, "fuzz.bin", &pol, &m, &err) < 0)
        return;
    struct sample_params p;
    sample_params_default(&p);
    p.fps_num = 4;
    p.max_frames = 16;
    p.mode = mode;
    struct sample_result *res = NULL;
    if (sample_video(m, &p, &res, &err) == 0)
        sample_result_free(res);
    media_close(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size, SAMPLE_MODE_EXACT);
    run(data, size, SAMPLE_MODE_FAST);
    return 0;
}
