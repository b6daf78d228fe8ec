/* cuda_emu_selftest.h: the host entry points of the emulator self-test kernels
 * (cuda_emu_selftest.cu), called by test_cuda_emu.c. Each runs one kernel and returns 0 or the
 * launch's error. */
#ifndef VL3_CUDA_EMU_SELFTEST_H
#define VL3_CUDA_EMU_SELFTEST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int self_tree_sum(float *out, const float *x, int blocks);
int self_warp(float *xor_sum, float *down_sum, float *bcast, float *up, unsigned *ballot,
              int *any, int *all, const float *x);
int self_exchange(float *out, const float *x, int with_barrier);
int self_dyn_reverse(float *out, const float *x, int n);
int self_warp_exchange(float *out, const float *x);
int self_deadlock(float *out, int mode);
int self_wmma(float *d, const uint16_t *a, const uint16_t *b, const float *c, int b_col_major,
              const float *row_scale, int warps);
int self_oob(float *out, int n);
int self_launch_bad_config(void);

#ifdef __cplusplus
}
#endif

#endif
