/* engine_header_c11.c: compiled with -std=c11 -pedantic-errors to prove engine.h is plain C. */
#include "vl3/engine.h"

int vl3__engine_header_is_c11(void);
int vl3__engine_header_is_c11(void)
{
    return VL3_BACKEND_KIND_COUNT;
}
