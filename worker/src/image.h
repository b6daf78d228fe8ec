/* image.h: still images and decoded video frames -> 8-bit RGB, as PIL's
 * Image.open(p).convert('RGB') would give (see image.c for each pixel format). */
#ifndef VL3_WORKER_IMAGE_H
#define VL3_WORKER_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/engine.h"

struct AVFrame;

/* An owned RGB24 image (R,G,B per pixel, rows `stride` bytes apart). alpha: the source's 8-bit
 * alpha plane (width x height) when it had one (RGBA family, grey + alpha), else NULL; the RGB
 * values are those of convert('RGB'), which drops alpha. */
typedef struct image_rgb {
    uint8_t *data;
    int width, height;
    size_t stride;
    uint8_t *alpha;
} image_rgb;

/* Composite an image with alpha onto opaque white, as transformers' convert_to_rgb does
 * (PIL Image.alpha_composite over a white RGBA background, then RGB: PIL's integer formula, so
 * the bytes are PIL's), and drop the alpha plane. No-op without alpha. The native (transformers)
 * flavour does this; the DAMO processor's convert('RGB') keeps the RGB values as decoded. */
void image_rgb_composite_white(image_rgb *im);

/* Decode the first frame of an image file (PNG, JPEG, WebP, BMP, TIFF: MEDIA_IMAGE_FORMATS)
 * into *ret (owned; free with image_rgb_free). max_pixels > 0 refuses larger images with
 * VL3_E_LIMIT before allocating. Returns 0, -errno (open), VL3_E_POLICY (not one of those
 * formats), VL3_E_DECODE (not a decodable image), VL3_E_UNSUPPORTED (pixel format without an RGB
 * rule), VL3_E_LIMIT, -ENOMEM. */
int image_load(const char *path, int64_t max_pixels, image_rgb *ret, vl3_error *reterr);

/* Convert a decoded still image (borrowed) to RGB24 into *ret (owned). Palette, grey,
 * grey+alpha, RGB(A) and 16-bit RGB formats are converted exactly as PIL; YUV formats go through
 * libswscale with the settings measured closest to libjpeg/libwebp. (Video frames are converted
 * by media_pic_to_rgb as the ffmpeg CLI does.) Returns 0, VL3_E_UNSUPPORTED, -ENOMEM. */
int image_from_avframe(const struct AVFrame *f, image_rgb *ret, vl3_error *reterr);

void image_rgb_free(image_rgb *im);

/* A borrowed engine view of an RGB image. */
vl3_image image_rgb_view(const image_rgb *im);

/* Frames of a "video" given as still images: a directory whose image files (png, jpg, jpeg,
 * webp, bmp) carry their timestamp in seconds as the last number of the name
 * ("frame_12.5.png", "f-3.png"), or a list file with one "path timestamp" per line (relative
 * paths are relative to the list's directory; '#' starts a comment). Frames are sorted by
 * timestamp. In a directory where a name has no number, every frame gets its index (1 fps) in
 * name order. Returns 0 with owned arrays (free with image_frames_free), -errno, VL3_E_FORMAT
 * (bad list line, no frames), VL3_E_LIMIT (more than max_frames > 0). */
typedef struct image_frames {
    char **paths;
    double *timestamps;
    int n;
} image_frames;
int image_frames_list(const char *path, int max_frames, image_frames *ret, vl3_error *reterr);
void image_frames_free(image_frames *f);

#endif
