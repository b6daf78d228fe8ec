/* preprocess.h: internal pieces of the image preprocessor shared with tests and vision.c.
 *
 * The public entry points are in vl3/engine_vision.h; these expose the individual steps so that
 * tests can check each one against the Python/PIL reference. */
#ifndef VL3_PREPROCESS_H
#define VL3_PREPROCESS_H

#include <stdint.h>

#include "vl3/engine.h"

/* Python's round(x) for a double (half to even). */
double vl3__py_round(double x);

/* Remote rule for one call where every item has the same factor f = patch*merge
 * (simple_batched_resize). sizes_hw holds (H, W) per item, frames the frame count per item;
 * writes (h, w) per item into ret_hw. */
void vl3__resize_rule_simple(const int *sizes_hw, const int *frames, int n, int factor,
                             int64_t min_tokens, int64_t max_tokens, int *ret_hw);
/* Remote rule when merge sizes differ (batched_resize): per-item factors, no min clamp. */
void vl3__resize_rule_mixed(const int *sizes_hw, const int *frames, const int *factors, int n,
                            int64_t max_tokens, int *ret_hw);
/* Native smart_resize. Returns 0 or VL3_E_LIMIT (aspect ratio > 200). */
int vl3__smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                      int *ret_h, int *ret_w);

/* The 256-entry normalisation table: transformers' rescale (float64 multiply, cast to float32)
 * then normalize ((x - mean) / std in float32) for channel c. */
void vl3__norm_lut(const vl3_preprocess_params *p, int c, float lut[256]);

/* Write one resized frame (RGB, w x h pixels, stride bytes) into pixel_values rows in the
 * merge-aware order of spec §3.2; out points at the frame's first row. */
void vl3__patchify(const uint8_t *rgb, size_t stride, int h, int w, int patch, int merge,
                   const float lut[3][256], float *out);

/* Antialiased bicubic resize of 8-bit RGB, Pillow's fixed-point resampler (aten = 0, what
 * vl3_resize_bicubic_rgb does) or ATen's uint8 _upsample_bicubic2d_aa (aten = 1: torchvision's
 * resize on uint8 CPU tensors, which transformers 5's native processors use): int16 weights at
 * a per-axis precision, ATen's cubic expression, scale in double. 0 or -EINVAL / -ENOMEM. */
int vl3__resize_bicubic_rgb_ex(const vl3_image *src, uint8_t *dst, int ow, int oh,
                               size_t dst_stride, int aten);

#endif
