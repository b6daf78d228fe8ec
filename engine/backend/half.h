/* half.h: IEEE half (f16) to f32, exact (subnormals normalised, inf and NaN kept), for every
 * place that widens f16 checkpoint data: the CPU backend's weight conversion, the loader's
 * staging and the CUDA module (a separate library, hence a header). */
#ifndef VL3_HALF_H
#define VL3_HALF_H

#include <stdint.h>
#include <string.h>

static inline float vl3__half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            u = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

#endif
