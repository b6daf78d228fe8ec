/* fuzz_proto.c: libFuzzer harness for the daemon<->worker frame decoder (vl3/proto.h).
 * The input is split into chunks by its own first bytes (so the reader sees frames cut at
 * arbitrary places), fed to a reader, and every complete frame goes through the typed parser.
 * Successful parses are re-encoded where an encoder exists and must parse again (round trip).
 * Build: cmake -DVL3_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: fuzz_proto tests/fuzz/fuzz_proto/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const vl3_proto_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = -1;
    switch (m->type) {
    case VL3_PROTO_JOB: r = vl3_proto_encode_job(&m->u.job, &buf, &len, NULL); break;
    case VL3_PROTO_RESULT: r = vl3_proto_encode_result(&m->u.result, &buf, &len, NULL); break;
    case VL3_PROTO_ERROR: r = vl3_proto_encode_error(&m->u.error, &buf, &len, NULL); break;
    case VL3_PROTO_HELLO: r = vl3_proto_encode_hello(&m->u.hello, &buf, &len, NULL); break;
    case VL3_PROTO_PONG: r = vl3_proto_encode_pong(&m->u.pong, &buf, &len, NULL); break;
    default: return;
    }
    if (r < 0)
        abort(); /* what the decoder accepted, the encoder must accept */
    vl3_proto_reader rd;
    vl3_proto_reader_init(&rd);
    vl3_proto_frame f;
    vl3_proto_msg m2;
    if (vl3_proto_reader_feed(&rd, buf, len) < 0 || vl3_proto_reader_next(&rd, &f, NULL) != 1 ||
        vl3_proto_msg_parse(&f, &m2, NULL) < 0 || m2.type != m->type)
        abort();
    vl3_proto_msg_free(&m2);
    vl3_proto_reader_deinit(&rd);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 17 + 1;
    data++;
    size--;
    vl3_proto_reader rd;
    vl3_proto_reader_init(&rd);
    rd.max_tokens = 1 << 20; /* keep the fuzzer's memory small; same code path */
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (vl3_proto_reader_feed(&rd, data + off, n) < 0)
            break;
        vl3_proto_frame f;
        int r;
        while ((r = vl3_proto_reader_next(&rd, &f, NULL)) == 1) {
            vl3_proto_msg m;
            if (vl3_proto_msg_parse(&f, &m, NULL) == 0) {
                roundtrip(&m);
                vl3_proto_msg_free(&m);
            }
        }
        if (r < 0)
            break;
    }
    vl3_proto_reader_deinit(&rd);
    return 0;
}
