/* On-chip preprocessing, the bit-exact twin of host/digitrec/preprocess.py.
 *
 * raw crop (GRAY8 | RGB888 | RGB565) -> [grayscale] -> bilinear-q8 resize -> int8 LUT
 *
 * - RGB565 (little-endian u16, red in the high 5 bits) expands to RGB888 by bit
 *   replication; GRAY8 expands to RGB with R = G = B (as PIL's convert("RGB")).
 * - Grayscale Y = (77 R + 150 G + 29 B + 128) >> 8, applied before the resize.
 * - Resize: bilinear, half-pixel centres, Q8 coordinates, rounding +32768 >> 16.
 * - LUT: q[p] = clamp(floor(p / 255.0 / scale + 0.5) + zero_point, -128, 127) in double.
 * No scratch memory: source pixels are converted on the fly (at most 4 reads each per
 * output pixel), so a 128x128 RGB888 crop needs no extra buffer on the chip. */
#ifndef DR_PREPROCESS_H
#define DR_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DR_OUT_MAX_SIDE 64 /* largest out_h/out_w (the models use 32 x 20) */

typedef enum dr_pixfmt { DR_FMT_GRAY8 = 0, DR_FMT_RGB888 = 1, DR_FMT_RGB565 = 2 } dr_pixfmt_t;

typedef enum dr_pp_status {
    DR_PP_OK = 0,
    DR_PP_BAD_FORMAT = -1, /* unknown pixel format */
    DR_PP_BAD_SIZE = -2,   /* width/height outside 1..DR_MAX_RAW_SIDE, or bad out shape */
    DR_PP_BAD_LENGTH = -3  /* n != width * height * bytes_per_pixel */
} dr_pp_status_t;

/* Bytes per pixel of a raw format, 0 when unknown. */
int dr_bytes_per_pixel(int fmt);

/* The 256-entry pixel -> int8 table (IEEE double, as digitrec.preprocess.quant_lut). */
void dr_quant_lut(double scale, int32_t zero_point, int8_t lut[256]);

/* Raw crop -> out_h x out_w x out_c uint8 (HWC). out_c is 1 (gray) or 3 (rgb). */
int dr_prepare_u8(const uint8_t *pixels, size_t n, int fmt, int width, int height,
                  int out_h, int out_w, int out_c, uint8_t *out);

/* Same, then quantized through lut: the model's int8 input tensor. */
int dr_preprocess(const uint8_t *pixels, size_t n, int fmt, int width, int height,
                  int out_h, int out_w, int out_c, const int8_t lut[256], int8_t *out);

#ifdef __cplusplus
}
#endif
#endif
