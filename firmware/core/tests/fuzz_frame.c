/* Fuzz target: arbitrary bytes into the frame parser and the request dispatcher.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined (-DDR_LIBFUZZER) it is a
 * libFuzzer target. Without libFuzzer, main() below drives the same function with a
 * seeded mutation loop (valid frames, bit flips, splices, truncations, garbage) for
 * argv[1] seconds; the sanitizers turn any memory or UB error into a crash.
 *
 * Invariants checked besides memory safety: every reply the device writes is one
 * well-formed frame, and the device answers exactly one frame per received frame
 * (good or CRC-damaged), plus the BOOT frame. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dr_crc.h"
#include "dr_device.h"
#include "dr_frame.h"

typedef struct fuzz_ctx {
    uint64_t now;
    unsigned replies;
} fuzz_ctx_t;

static int f_invoke(void *ctx, const int8_t *in, int8_t *out)
{
    int i;
    (void)ctx;
    for (i = 0; i < 10; i++)
        out[i] = (int8_t)(in[i * 7] ^ i);
    return in[0] == 0x7F ? 3 : 0; /* let some inputs take the INVOKE_FAILED path */
}

static uint64_t f_now(void *ctx) { return ((fuzz_ctx_t *)ctx)->now += 3; }

static void f_write(void *ctx, const uint8_t *d, size_t n)
{
    fuzz_ctx_t *c = (fuzz_ctx_t *)ctx;
    size_t len;
    /* each write is exactly one valid frame */
    if (n < DR_FRAME_OVERHEAD || d[0] != DR_SYNC0 || d[1] != DR_SYNC1 || dr_crc8(d + 2, 5) != d[7])
        abort();
    len = dr_get_u16(d + 5);
    if (n != len + DR_FRAME_OVERHEAD || dr_crc32(0, d + 2, len + 6) != dr_get_u32(d + 8 + len))
        abort();
    c->replies++;
}

static dr_device_t dev;
static uint32_t timings[64];

/* Structured mode (first byte odd): the input is a list of records
 *   kind u8 | len u16 | bytes[len]
 * kind % 4: 0 raw bytes, 1 a valid frame (type = bytes[0], seq = 7, payload = rest),
 * 2 the same frame with one payload bit flipped, 3 the frame cut in half. This lets a
 * coverage-guided fuzzer reach the dispatcher without forging CRC-32s. */
static size_t build_stream(const uint8_t *d, size_t n, uint8_t *out, size_t cap)
{
    size_t pos = 1, o = 0;
    while (pos + 3 <= n) {
        unsigned kind = d[pos];
        size_t len = dr_get_u16(d + pos + 1), fl;
        pos += 3;
        if (len > n - pos)
            len = n - pos;
        if (kind % 4u == 0u || len == 0u) {
            if (o + len > cap)
                break;
            memcpy(out + o, d + pos, len);
            o += len;
        } else {
            fl = dr_frame_encode(d[pos], 7, d + pos + 1, len - 1, out + o, cap - o);
            if (!fl)
                break;
            if (kind % 4u == 2u)
                out[o + DR_HEADER_BYTES + (len - 1) / 2] ^= 0x10; /* payload or CRC byte */
            o += kind % 4u == 3u ? fl / 2 : fl;
        }
        pos += len;
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const dr_model_meta_t model = {"fuzz", "00", "RGB", 10, 32, 20, 3, 0.0078125, 0, 0.00390625, -128};
    static uint8_t stream[4 * DR_MAX_FRAME];
    fuzz_ctx_t ctx = {0, 0};
    dr_port_t port;
    size_t pos = 0, step;
    port.ctx = &ctx;
    port.invoke = f_invoke;
    port.now_us = f_now;
    port.write = f_write;
    port.status = NULL;
    if (dr_device_init(&dev, &port, &model, 1u, timings, 64u) != DR_DEV_OK)
        abort();
    if (size > 0 && data[0] == 0xFF)
        dr_device_set_ready(&dev, 0, "fuzz: not ready");
    dr_device_boot(&dev);
    if (size > 0 && (data[0] & 1u)) {
        size = build_stream(data, size, stream, sizeof stream);
        data = stream;
    }
    /* feed in chunks whose sizes come from the data, so split points are explored too */
    while (pos < size) {
        step = 1u + (size_t)(data[pos] % 61u);
        if (step > size - pos)
            step = size - pos;
        dr_device_feed(&dev, data + pos, step);
        pos += step;
    }
    if (ctx.replies != 1u + dev.parser.frames + dev.parser.crc_errors) /* one reply per request */
        abort();
    return 0;
}

#ifndef DR_LIBFUZZER
/* ------------------------------------------------ standalone mutation driver */
static uint32_t seed = 0xC0FFEEu;
static uint32_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return seed;
}

static size_t valid_request(uint8_t *out, size_t cap)
{
    static const uint8_t types[] = {DR_MSG_HELLO, DR_MSG_INFER_TENSOR, DR_MSG_INFER_RAW, DR_MSG_TIMED_RUN, 0x55};
    uint8_t pl[5 + 40 * 3];
    uint8_t type = types[rnd() % 5];
    size_t len = 0, i;
    if (type == DR_MSG_INFER_TENSOR)
        len = rnd() % 4 ? 1920 : rnd() % 2000;
    else if (type == DR_MSG_INFER_RAW) {
        unsigned w = 1 + rnd() % 8, h = 1 + rnd() % 5, fmt = rnd() % 4;
        pl[0] = (uint8_t)fmt;
        dr_put_u16(pl + 1, (uint16_t)w);
        dr_put_u16(pl + 3, (uint16_t)h);
        len = 5 + w * h * (fmt == 1 ? 3 : fmt == 2 ? 2 : 1) - (rnd() % 8 == 0);
        for (i = 5; i < len; i++)
            pl[i] = (uint8_t)rnd();
    } else if (type == DR_MSG_TIMED_RUN) {
        dr_put_u16(pl, (uint16_t)(rnd() % 3));
        dr_put_u16(pl + 2, (uint16_t)(rnd() % 70));
        len = rnd() % 8 ? 4 : rnd() % 6;
    }
    if (type == DR_MSG_INFER_TENSOR) {
        static uint8_t t[2000];
        for (i = 0; i < len; i++)
            t[i] = (uint8_t)rnd();
        return dr_frame_encode(type, (uint16_t)rnd(), t, len, out, cap);
    }
    return dr_frame_encode(type, (uint16_t)rnd(), pl, len, out, cap);
}

static size_t make_input(uint8_t *buf, size_t cap)
{
    size_t n = 0, k, i;
    unsigned parts = 1 + rnd() % 6;
    for (k = 0; k < parts && n + 2100 < cap; k++) {
        switch (rnd() % 4) {
        case 0: /* garbage, often with sync bytes */
            for (i = rnd() % 64; i > 0; i--)
                buf[n++] = rnd() % 3 ? (uint8_t)rnd() : (rnd() % 2 ? DR_SYNC0 : DR_SYNC1);
            break;
        case 1: /* truncated request */
            n += valid_request(buf + n, cap - n) * (rnd() % 100) / 100;
            break;
        default:
            n += valid_request(buf + n, cap - n);
        }
    }
    for (i = rnd() % 4; i > 0 && n; i--) /* bit flips */
        buf[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
    return n;
}

int main(int argc, char **argv)
{
    static uint8_t buf[16384];
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    clock_t end = clock() + (clock_t)(seconds * CLOCKS_PER_SEC);
    unsigned long runs = 0;
    while (clock() < end) {
        size_t n, k;
        int j;
        for (j = 0; j < 64; j++, runs++) {
            n = make_input(buf + 1, sizeof buf - 1);
            buf[0] = (uint8_t)(rnd() & 0xFEu); /* raw mode (even first byte) */
            LLVMFuzzerTestOneInput(buf, n + 1);
            n = 1 + rnd() % 512; /* structured mode: random records */
            for (k = 0; k < n; k++)
                buf[k] = (uint8_t)rnd();
            buf[0] |= 1u;
            LLVMFuzzerTestOneInput(buf, n);
        }
    }
    printf("fuzz_frame (mutation driver): %lu inputs, no crash\n", runs);
    return 0;
}
#endif
