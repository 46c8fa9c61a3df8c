#include "dr_preprocess.h"

#include <math.h>

#include "dr_frame.h"

int dr_bytes_per_pixel(int fmt)
{
    switch (fmt) {
    case DR_FMT_GRAY8: return 1;
    case DR_FMT_RGB888: return 3;
    case DR_FMT_RGB565: return 2;
    default: return 0;
    }
}

void dr_quant_lut(double scale, int32_t zero_point, int8_t lut[256])
{
    int p;
    for (p = 0; p < 256; p++) {
        /* same operation order as numpy: (p / 255) / scale, then + 0.5, floor, + zp */
        double v = floor((double)p / 255.0 / scale + 0.5) + (double)zero_point;
        if (!(v >= -128.0)) /* also catches NaN from a zero scale */
            v = -128.0;
        if (v > 127.0)
            v = 127.0;
        lut[p] = (int8_t)v;
    }
}

/* Per-axis sampling: source indices i0/i1 and the Q8 weight of i1. */
typedef struct axis {
    uint16_t i0[DR_OUT_MAX_SIDE], i1[DR_OUT_MAX_SIDE];
    uint16_t frac[DR_OUT_MAX_SIDE];
} axis_t;

static void axis_q8(int src, int dst, axis_t *a)
{
    int d;
    for (d = 0; d < dst; d++) {
        long s = ((2L * d + 1) * src * 256) / (2L * dst) - 128; /* operands >= 0: floor */
        long i0;
        if (s < 0)
            s = 0;
        i0 = s >> 8;
        a->frac[d] = (uint16_t)(s & 255);
        a->i1[d] = (uint16_t)(i0 + 1 < src ? i0 + 1 : src - 1);
        a->i0[d] = (uint16_t)(i0 < src ? i0 : src - 1);
    }
}

/* Channel c (0..2 = R,G,B; 3 = luma) of pixel idx, as uint8. */
static unsigned fetch(const uint8_t *px, int fmt, size_t idx, int c)
{
    unsigned r, g, b;
    if (fmt == DR_FMT_GRAY8)
        return px[idx]; /* R = G = B = Y, and luma(Y,Y,Y) == Y exactly */
    if (fmt == DR_FMT_RGB888) {
        r = px[3 * idx];
        g = px[3 * idx + 1];
        b = px[3 * idx + 2];
    } else {
        unsigned v = (unsigned)px[2 * idx] | ((unsigned)px[2 * idx + 1] << 8);
        unsigned r5 = (v >> 11) & 31u, g6 = (v >> 5) & 63u, b5 = v & 31u;
        r = (r5 << 3) | (r5 >> 2);
        g = (g6 << 2) | (g6 >> 4);
        b = (b5 << 3) | (b5 >> 2);
    }
    if (c == 0)
        return r;
    if (c == 1)
        return g;
    if (c == 2)
        return b;
    return (77u * r + 150u * g + 29u * b + 128u) >> 8;
}

static int check(size_t n, int fmt, int width, int height, int out_h, int out_w, int out_c)
{
    int bpp = dr_bytes_per_pixel(fmt);
    if (!bpp)
        return DR_PP_BAD_FORMAT;
    if (width < 1 || height < 1 || width > (int)DR_MAX_RAW_SIDE || height > (int)DR_MAX_RAW_SIDE)
        return DR_PP_BAD_SIZE;
    if (out_h < 1 || out_w < 1 || out_h > DR_OUT_MAX_SIDE || out_w > DR_OUT_MAX_SIDE ||
        (out_c != 1 && out_c != 3))
        return DR_PP_BAD_SIZE;
    if (n != (size_t)width * (size_t)height * (size_t)bpp)
        return DR_PP_BAD_LENGTH;
    return DR_PP_OK;
}

/* Shared body: writes uint8 pixels, or int8 through lut when lut is non-NULL. */
static int run(const uint8_t *px, size_t n, int fmt, int width, int height, int out_h,
               int out_w, int out_c, const int8_t *lut, uint8_t *out_u8, int8_t *out_i8)
{
    axis_t ax, ay; /* 768 bytes of stack; re-entrant (the virtual device may use threads) */
    int rc = check(n, fmt, width, height, out_h, out_w, out_c), y, x, c;
    size_t o = 0;
    if (rc != DR_PP_OK)
        return rc;
    axis_q8(height, out_h, &ay);
    axis_q8(width, out_w, &ax);
    for (y = 0; y < out_h; y++) {
        size_t r0 = (size_t)ay.i0[y] * (size_t)width, r1 = (size_t)ay.i1[y] * (size_t)width;
        uint32_t fy = ay.frac[y];
        for (x = 0; x < out_w; x++) {
            uint32_t fx = ax.frac[x];
            for (c = 0; c < out_c; c++) {
                int ch = out_c == 1 ? 3 : c;
                uint32_t top = fetch(px, fmt, r0 + ax.i0[x], ch) * (256u - fx) +
                               fetch(px, fmt, r0 + ax.i1[x], ch) * fx;
                uint32_t bot = fetch(px, fmt, r1 + ax.i0[x], ch) * (256u - fx) +
                               fetch(px, fmt, r1 + ax.i1[x], ch) * fx;
                uint32_t v = (top * (256u - fy) + bot * fy + 32768u) >> 16;
                if (lut)
                    out_i8[o++] = lut[v & 255u];
                else
                    out_u8[o++] = (uint8_t)v;
            }
        }
    }
    return DR_PP_OK;
}

int dr_prepare_u8(const uint8_t *pixels, size_t n, int fmt, int width, int height,
                  int out_h, int out_w, int out_c, uint8_t *out)
{
    return run(pixels, n, fmt, width, height, out_h, out_w, out_c, NULL, out, NULL);
}

int dr_preprocess(const uint8_t *pixels, size_t n, int fmt, int width, int height,
                  int out_h, int out_w, int out_c, const int8_t lut[256], int8_t *out)
{
    return run(pixels, n, fmt, width, height, out_h, out_w, out_c, lut, NULL, out);
}
