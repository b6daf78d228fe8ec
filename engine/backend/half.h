/* half.h: IEEE half (f16) to f32, exact (subnormals normalised, inf and NaN kept), and f32 to
 * bf16 rounded to nearest even (NaN kept quiet), for every place that converts checkpoint data:
 * the CPU backend's weight conversion, the loader's staging and the CUDA module (a separate
 * library, hence a header). */
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

/* f32 -> bf16, round to nearest even; a NaN stays a (quiet) NaN. */
static inline uint16_t vl3__f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

#endif
