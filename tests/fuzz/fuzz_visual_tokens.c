/* fuzz_visual_tokens.c: libFuzzer driver for vl3_visual_tokens_decode (token cache entries read
 * back from PostgreSQL are untrusted bytes). Invariants on success: the counts agree (rows = kept
 * tokens = sum of kept per frame, frames = sum of item frames), re-encoding and decoding again
 * gives the same rows; failures leave a message. Built only with -DVL3_FUZZ=ON (clang), see
 * visual_tokens.cmake. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/visual_tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vl3_visual_tokens vt = {0}, again = {0};
    vl3_error e = {0};
    int r = vl3_visual_tokens_decode(data, size, &vt, &e);
    if (r < 0) {
        if (!e.msg[0] || vt.rows)
            abort();
        return 0;
    }
    int64_t kept = 0, frames = 0;
    for (int f = 0; f < vt.mask.n_frames; f++)
        kept += vt.mask.kept_per_frame[f];
    for (int i = 0; i < vt.n_items; i++)
        frames += vt.item_frames[i];
    if (kept != vt.n_rows || vt.mask.n_kept != vt.n_rows || frames != vt.mask.n_frames)
        abort();
    uint8_t *buf = NULL;
    size_t len = 0;
    if (vl3_visual_tokens_encode(&vt, NULL, &buf, &len, NULL, &e) < 0 ||
        vl3_visual_tokens_decode(buf, len, &again, &e) < 0 || again.n_rows != vt.n_rows ||
        memcmp(again.rows, vt.rows, (size_t)vt.n_rows * (size_t)vt.dim * 4) != 0)
        abort();
    free(buf);
    vl3_visual_tokens_deinit(&again);
    vl3_visual_tokens_deinit(&vt);
    return 0;
}
