/* Native unit tests of the portable firmware core. Exit status = number of failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr_crc.h"
#include "dr_device.h"
#include "dr_frame.h"
#include "dr_preprocess.h"
#include "dr_stats.h"

static int failures;
static int checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__,     \
                    __func__, #cond);                                                \
        }                                                                            \
    } while (0)

/* Deterministic xorshift PRNG (tests must not depend on libc rand()). */
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* ------------------------------------------------------------- event capture */
#define MAX_EVENTS 512
typedef struct capture {
    int n;
    int ev[MAX_EVENTS];
    uint8_t type[MAX_EVENTS];
    uint16_t seq[MAX_EVENTS];
    uint16_t len[MAX_EVENTS];
    uint32_t crc[MAX_EVENTS]; /* CRC-32 of the payload, to compare content cheaply */
} capture_t;

static void on_event(void *ctx, dr_event_t ev, const dr_frame_t *f)
{
    capture_t *c = (capture_t *)ctx;
    if (c->n >= MAX_EVENTS)
        return;
    c->ev[c->n] = (int)ev;
    c->type[c->n] = f->type;
    c->seq[c->n] = f->seq;
    c->len[c->n] = f->length;
    c->crc[c->n] = f->payload ? dr_crc32(0, f->payload, f->length) : 0u;
    c->n++;
}

static uint8_t big[4 * DR_MAX_FRAME];
static uint8_t payload[DR_MAX_PAYLOAD];

/* ------------------------------------------------------------------- CRC */
static void test_crc(void)
{
    const uint8_t *s = (const uint8_t *)"123456789";
    CHECK(dr_crc32(0, s, 9) == 0xCBF43926u);
    CHECK(dr_crc8(s, 9) == 0xF4u);
    CHECK(dr_crc32(0, s, 0) == 0u);
    CHECK(dr_crc8(s, 0) == 0u);
    CHECK(dr_crc32(dr_crc32(0, s, 4), s + 4, 5) == 0xCBF43926u); /* chaining like zlib */
}

/* --------------------------------------------------------------- frames */
static void test_encode_layout(void)
{
    uint8_t out[64];
    const uint8_t pl[3] = {1, 2, 3};
    size_t n = dr_frame_encode(0x82, 0x1234, pl, 3, out, sizeof out);
    CHECK(n == 15);
    CHECK(out[0] == 0xA5 && out[1] == 0x5A && out[2] == 0x82);
    CHECK(out[3] == 0x34 && out[4] == 0x12 && out[5] == 3 && out[6] == 0);
    CHECK(out[7] == dr_crc8(out + 2, 5));
    CHECK(dr_get_u32(out + 11) == dr_crc32(0, out + 2, 9));
    CHECK(dr_frame_encode(1, 0, NULL, 0, out, 11) == 0);               /* too small */
    CHECK(dr_frame_encode(1, 0, NULL, 0, out, 12) == 12);              /* empty frame */
    CHECK(dr_frame_encode(1, 0, payload, DR_MAX_PAYLOAD + 1, big, sizeof big) == 0);
}

static size_t put_frame(uint8_t *dst, uint8_t type, uint16_t seq, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        payload[i] = (uint8_t)rnd();
    return dr_frame_encode(type, seq, payload, len, dst, DR_MAX_FRAME);
}

static void test_round_trip(void)
{
    static const size_t lens[] = {0, 1, 2, 7, 255, 256, 1920, 4096, DR_MAX_PAYLOAD};
    size_t i, n, k, chunk;
    for (chunk = 1; chunk <= 4096; chunk *= 8) {
        for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            dr_parser_t *p = malloc(sizeof *p);
            capture_t c;
            uint32_t want;
            memset(&c, 0, sizeof c);
            dr_parser_init(p);
            n = put_frame(big, (uint8_t)(i + 1), (uint16_t)(1000 + i), lens[i]);
            want = dr_crc32(0, big + DR_HEADER_BYTES, lens[i]);
            for (k = 0; k < n; k += chunk)
                dr_parser_feed(p, big + k, n - k < chunk ? n - k : chunk, on_event, &c);
            CHECK(c.n == 1);
            CHECK(c.ev[0] == DR_EV_FRAME && c.type[0] == i + 1 && c.seq[0] == 1000 + i);
            CHECK(c.len[0] == lens[i] && c.crc[0] == want);
            CHECK(dr_parser_pending(p) == 0);
            free(p);
        }
    }
}

/* Garbage (with false syncs and fake headers) between frames: every frame is found, in order. */
static void test_resync_garbage(void)
{
    dr_parser_t *p = malloc(sizeof *p);
    capture_t c;
    size_t pos = 0, i, j, n_frames = 40;
    memset(&c, 0, sizeof c);
    dr_parser_init(p);
    for (i = 0; i < n_frames; i++) {
        size_t g = rnd() % 200;
        for (j = 0; j < g; j++) {
            uint8_t b = (uint8_t)rnd();
            big[pos++] = b == 0xA5 ? 0x00 : b; /* a lone A5 could start a real-looking header */
        }
        if (i % 5 == 0) { /* false syncs: A5 5A with a bad hcrc, and A5 5A with a huge length */
            static const uint8_t fake1[] = {0xA5, 0x5A, 1, 0, 0, 0, 0, 0x55};
            uint8_t fake2[8] = {0xA5, 0x5A, 2, 0, 0, 0xFF, 0xFF, 0};
            fake2[7] = dr_crc8(fake2 + 2, 5); /* good hcrc, length 65535 > MAX_PAYLOAD */
            memcpy(big + pos, fake1, 8);
            pos += 8;
            memcpy(big + pos, fake2, 8);
            pos += 8;
            big[pos++] = 0xA5;
        }
        pos += put_frame(big + pos, 0x01, (uint16_t)i, rnd() % 64);
    }
    for (i = 0; i < pos; i += 97)
        dr_parser_feed(p, big + i, pos - i < 97 ? pos - i : 97, on_event, &c);
    CHECK(c.n == (int)n_frames);
    for (i = 0; i < (size_t)c.n && i < n_frames; i++)
        CHECK(c.ev[i] == DR_EV_FRAME && c.seq[i] == i);
    CHECK(p->bad_headers >= 2 * (n_frames / 5));
    CHECK(p->skipped_bytes > 0);
    free(p);
}

/* A truncated frame swallows what follows until its declared length; then the CRC fails,
 * ERROR-worthy event with its seq, and the swallowed frames are recovered by rescanning. */
static void test_resync_truncated(void)
{
    dr_parser_t *p = malloc(sizeof *p);
    capture_t c;
    size_t pos, n, i;
    memset(&c, 0, sizeof c);
    dr_parser_init(p);
    n = put_frame(big, 0x02, 77, 600);
    pos = n / 2; /* cut in the middle of the payload */
    for (i = 0; i < 20; i++)
        pos += put_frame(big + pos, 0x01, (uint16_t)(i + 1), 40);
    dr_parser_feed(p, big, pos, on_event, &c);
    CHECK(c.n == 21);
    CHECK(c.ev[0] == DR_EV_CRC_ERROR && c.seq[0] == 77 && c.type[0] == 0x02);
    for (i = 1; i < (size_t)c.n; i++)
        CHECK(c.ev[i] == DR_EV_FRAME && c.seq[i] == i);
    /* a frame truncated inside its header is just skipped */
    memset(&c, 0, sizeof c);
    n = put_frame(big, 0x01, 5, 10);
    pos = 5;
    pos += put_frame(big + pos, 0x01, 6, 10);
    dr_parser_feed(p, big, pos, on_event, &c);
    CHECK(c.n == 1 && c.ev[0] == DR_EV_FRAME && c.seq[0] == 6);
    free(p);
}

/* Corrupting any single byte of a frame never yields a wrong frame. */
static void test_corruption(void)
{
    dr_parser_t *p = malloc(sizeof *p);
    uint8_t frame[64];
    size_t n = dr_frame_encode(0x03, 9, (const uint8_t *)"abcdefgh", 8, frame, sizeof frame), i;
    int bit;
    for (i = 0; i < n; i++) {
        for (bit = 0; bit < 8; bit++) {
            capture_t c;
            uint8_t tail[12];
            memset(&c, 0, sizeof c);
            dr_parser_init(p);
            frame[i] ^= (uint8_t)(1u << bit);
            dr_parser_feed(p, frame, n, on_event, &c);
            dr_frame_encode(0x01, 10, NULL, 0, tail, sizeof tail); /* a good frame after it */
            dr_parser_feed(p, tail, sizeof tail, on_event, &c);
            frame[i] ^= (uint8_t)(1u << bit);
            CHECK(c.n >= 1 && c.ev[c.n - 1] == DR_EV_FRAME && c.seq[c.n - 1] == 10);
            if (c.n == 2) /* only a payload/CRC hit gives a CRC error, with the header's seq */
                CHECK(c.ev[0] == DR_EV_CRC_ERROR && c.seq[0] == 9 && i >= DR_HEADER_BYTES);
            if (c.n > 2 || (c.n == 2 && c.ev[0] == DR_EV_FRAME))
                CHECK(0);
        }
    }
    free(p);
}

/* ---------------------------------------------------------------- stats */
static void test_stats(void)
{
    uint32_t a[] = {5, 1, 4, 2, 3};
    uint32_t b[] = {10, 40, 20, 30};
    uint32_t c[] = {7};
    uint32_t d[] = {0xFFFFFFFFu, 0xFFFFFFFFu};
    uint32_t e[] = {1, 2};
    dr_stats_t s;
    dr_stats_compute(a, 5, &s);
    CHECK(s.median == 3 && s.max == 5 && s.min == 1 && s.mean == 3);
    dr_stats_compute(b, 4, &s);
    CHECK(s.median == 25 && s.max == 40 && s.min == 10 && s.mean == 25);
    dr_stats_compute(c, 1, &s);
    CHECK(s.median == 7 && s.max == 7 && s.min == 7 && s.mean == 7);
    dr_stats_compute(d, 2, &s);
    CHECK(s.median == 0xFFFFFFFFu && s.mean == 0xFFFFFFFFu);
    dr_stats_compute(e, 2, &s);
    CHECK(s.median == 1 && s.mean == 2); /* floor for the median, half up for the mean */
    dr_stats_compute(NULL, 0, &s);
    CHECK(s.median == 0 && s.max == 0 && s.min == 0 && s.mean == 0);
}

/* ------------------------------------------------------------ preprocess */
static void test_preprocess(void)
{
    static uint8_t px[128 * 128 * 3];
    uint8_t out[32 * 20 * 3];
    int8_t lut[256], q[32 * 20];
    int i;
    for (i = 0; i < 20 * 32; i++)
        px[i] = (uint8_t)rnd();
    /* same size: the resize is the identity */
    CHECK(dr_prepare_u8(px, 640, DR_FMT_GRAY8, 20, 32, 32, 20, 1, out) == DR_PP_OK);
    CHECK(memcmp(px, out, 640) == 0);
    /* LUT with scale 1/255, zp -128 maps p -> p - 128 */
    dr_quant_lut(1.0 / 255.0, -128, lut);
    for (i = 0; i < 256; i++)
        CHECK(lut[i] == i - 128);
    CHECK(dr_preprocess(px, 640, DR_FMT_GRAY8, 20, 32, 32, 20, 1, lut, q) == DR_PP_OK);
    CHECK(q[0] == (int8_t)(px[0] - 128) && q[639] == (int8_t)(px[639] - 128));
    dr_quant_lut(0.5, 126, lut); /* 255 -> 2 + 126 = 128 clamps to 127 */
    CHECK(lut[0] == 126 && lut[128] == 127 && lut[255] == 127);
    dr_quant_lut(0.0001, -128, lut);
    CHECK(lut[255] == 127);
    dr_quant_lut(0.0, 0, lut); /* a zero scale must not produce undefined casts */
    CHECK(lut[0] == -128);
    /* gray of an RGB pixel uses 77/150/29 with rounding: a 1x1 crop fills the output */
    px[0] = 200, px[1] = 100, px[2] = 50;
    CHECK(dr_prepare_u8(px, 3, DR_FMT_RGB888, 1, 1, 32, 20, 1, out) == DR_PP_OK);
    CHECK(out[0] == (77 * 200 + 150 * 100 + 29 * 50 + 128) >> 8 && out[639] == out[0]);
    CHECK(dr_prepare_u8(px, 3, DR_FMT_RGB888, 1, 1, 32, 20, 3, out) == DR_PP_OK);
    CHECK(out[0] == 200 && out[1] == 100 && out[2] == 50 && out[1919] == 50);
    /* RGB565 bit replication: 0xF800 is pure red 255 */
    px[0] = 0x00, px[1] = 0xF8;
    CHECK(dr_prepare_u8(px, 2, DR_FMT_RGB565, 1, 1, 32, 20, 3, out) == DR_PP_OK);
    CHECK(out[0] == 255 && out[1] == 0 && out[2] == 0);
    /* errors */
    CHECK(dr_prepare_u8(px, 1, 3, 1, 1, 32, 20, 1, out) == DR_PP_BAD_FORMAT);
    CHECK(dr_prepare_u8(px, 0, DR_FMT_GRAY8, 0, 1, 32, 20, 1, out) == DR_PP_BAD_SIZE);
    CHECK(dr_prepare_u8(px, 129, DR_FMT_GRAY8, 129, 1, 32, 20, 1, out) == DR_PP_BAD_SIZE);
    CHECK(dr_prepare_u8(px, 2, DR_FMT_GRAY8, 1, 1, 32, 20, 1, out) == DR_PP_BAD_LENGTH);
    CHECK(dr_prepare_u8(px, 1, DR_FMT_GRAY8, 1, 1, 32, 20, 2, out) == DR_PP_BAD_SIZE);
    CHECK(dr_prepare_u8(px, 1, DR_FMT_GRAY8, 1, 1, 0, 20, 1, out) == DR_PP_BAD_SIZE);
    CHECK(dr_prepare_u8(px, 128 * 128 * 3, DR_FMT_RGB888, 128, 128, 32, 20, 3, out) == DR_PP_OK);
}

/* ---------------------------------------------------------------- device */
typedef struct fake {
    uint64_t now;
    uint32_t invoke_cost; /* microseconds added by each invoke */
    int invoke_rc;
    int fail_at; /* invoke call index that fails (-1: none) */
    int calls;
    int8_t last_in[DR_MAX_INPUT_BYTES];
    size_t in_bytes;
    uint8_t tx[8 * 2048];
    size_t tx_len;
    int writes;
} fake_t;

static int fake_invoke(void *ctx, const int8_t *in, int8_t *out)
{
    fake_t *f = (fake_t *)ctx;
    int i;
    memcpy(f->last_in, in, f->in_bytes);
    f->now += f->invoke_cost + (uint32_t)(f->calls % 3); /* varying cost: 0, +1, +2 */
    if (f->fail_at == f->calls++)
        return f->invoke_rc;
    for (i = 0; i < 10; i++)
        out[i] = (int8_t)(i == 7 ? 100 : i == 3 ? 100 : -i); /* tie: first max (3) wins */
    return 0;
}

static uint64_t fake_now(void *ctx)
{
    fake_t *f = (fake_t *)ctx;
    return f->now += 5; /* every clock read costs 5 us, so preprocess_us > 0 */
}

static void fake_write(void *ctx, const uint8_t *d, size_t n)
{
    fake_t *f = (fake_t *)ctx;
    if (f->tx_len + n <= sizeof f->tx) {
        memcpy(f->tx + f->tx_len, d, n);
        f->tx_len += n;
    }
    f->writes++;
}

static void fake_status(void *ctx, dr_status_t *st)
{
    (void)ctx;
    st->free_heap = 4242u;
}

static dr_device_t dev;
static fake_t fk;
static uint32_t timings[100];
static capture_t rx; /* the host's view of the replies */
static uint8_t reply_payload[MAX_EVENTS][64];

static void on_reply(void *ctx, dr_event_t ev, const dr_frame_t *f)
{
    int n = rx.n;
    on_event(ctx, ev, f);
    if (n < MAX_EVENTS && f->payload)
        memcpy(reply_payload[n], f->payload, f->length < 64 ? f->length : 64);
}

static const dr_model_meta_t gray_model = {"v4", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                                           "GRAY", 10, 32, 20, 1, 1.0 / 255.0, -128, 1.0 / 256.0, -128};

static void device_setup(const dr_model_meta_t *m)
{
    dr_port_t port;
    memset(&fk, 0, sizeof fk);
    fk.invoke_cost = 1000;
    fk.fail_at = -1;
    fk.in_bytes = (size_t)m->in_h * m->in_w * m->in_c;
    port.ctx = &fk;
    port.invoke = fake_invoke;
    port.now_us = fake_now;
    port.write = fake_write;
    port.status = fake_status;
    CHECK(dr_device_init(&dev, &port, m, 0xDEADBEEFu, timings, 100) == DR_DEV_OK);
}

/* Decodes all the device has written (fk.tx) into rx. */
static void decode_replies(void)
{
    dr_parser_t *p = malloc(sizeof *p);
    memset(&rx, 0, sizeof rx);
    dr_parser_init(p);
    dr_parser_feed(p, fk.tx, fk.tx_len, on_reply, &rx);
    free(p);
}

/* Feeds raw bytes to the device in chunks of at most `chunk`, then decodes its replies. */
static void feed_raw(const uint8_t *b, size_t n, size_t chunk)
{
    size_t i;
    fk.tx_len = 0;
    for (i = 0; i < n; i += chunk)
        dr_device_feed(&dev, b + i, n - i < chunk ? n - i : chunk);
    decode_replies();
}

/* Sends one request frame, then decodes the replies into rx. */
static void request(uint8_t type, uint16_t seq, const uint8_t *pl, size_t len)
{
    size_t n = dr_frame_encode(type, seq, pl, len, big, sizeof big);
    feed_raw(big, n, n);
}

static int is_error(int i, uint16_t seq, uint8_t req, uint8_t code)
{
    return rx.ev[i] == DR_EV_FRAME && rx.type[i] == DR_MSG_ERROR && rx.seq[i] == seq &&
           reply_payload[i][0] == code && reply_payload[i][1] == req;
}

static void test_device_hello_boot(void)
{
    char json[DR_INFO_MAX + 1];
    size_t n;
    device_setup(&gray_model);
    dr_device_boot(&dev);
    decode_replies();
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_BOOT && rx.seq[0] == 0);
    request(DR_MSG_HELLO, 42, NULL, 0);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_INFO && rx.seq[0] == 42);
    n = dr_device_info_json(&dev, json, sizeof json);
    CHECK(n > 100 && json[0] == '{' && json[n - 1] == '}' && strlen(json) == n);
    CHECK(strstr(json, "\"proto\": 1,") != NULL);
    CHECK(strstr(json, "\"boot_id\": 3735928559,") != NULL);
    CHECK(strstr(json, "\"free_heap\": 4242,") != NULL);
    CHECK(strstr(json, "\"input\": [32, 20, 1],") != NULL);
    CHECK(strstr(json, "\"ready\": true, \"error\": \"\"}") != NULL);
    CHECK(dr_device_info_json(&dev, json, 10) == 0);
    request(DR_MSG_HELLO, 43, (const uint8_t *)"x", 1);
    CHECK(rx.n == 1 && is_error(0, 43, DR_MSG_HELLO, DR_ERR_BAD_LENGTH));
}

static void test_device_infer(void)
{
    uint8_t t[640], raw[5 + 3 * 4];
    size_t i;
    device_setup(&gray_model);
    for (i = 0; i < sizeof t; i++)
        t[i] = (uint8_t)i;
    request(DR_MSG_INFER_TENSOR, 7, t, sizeof t);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_RESULT && rx.seq[0] == 7 && rx.len[0] == 12 + 10);
    CHECK(dr_get_u16(reply_payload[0]) == 3 && dr_get_u16(reply_payload[0] + 2) == 10);
    CHECK(dr_get_u32(reply_payload[0] + 4) == 0);            /* no preprocessing */
    CHECK(dr_get_u32(reply_payload[0] + 8) == 1000 + 5);     /* invoke cost + one clock read */
    CHECK((int8_t)reply_payload[0][12 + 7] == 100 && (int8_t)reply_payload[0][12 + 9] == -9);
    CHECK(memcmp(fk.last_in, t, sizeof t) == 0);
    /* raw: 2x2 RGB888 -> preprocessed tensor, preprocess_us measured by the device clock */
    raw[0] = DR_FMT_RGB888;
    dr_put_u16(raw + 1, 2);
    dr_put_u16(raw + 3, 2);
    for (i = 5; i < sizeof raw; i++)
        raw[i] = (uint8_t)(i * 20);
    request(DR_MSG_INFER_RAW, 8, raw, sizeof raw);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_RESULT && rx.seq[0] == 8);
    CHECK(dr_get_u32(reply_payload[0] + 4) == 5);
    {
        int8_t lut[256], want[640];
        dr_quant_lut(1.0 / 255.0, -128, lut);
        dr_preprocess(raw + 5, 12, DR_FMT_RGB888, 2, 2, 32, 20, 1, lut, want);
        CHECK(memcmp(fk.last_in, want, sizeof want) == 0);
    }
}

static void test_device_errors(void)
{
    uint8_t t[641] = {0}, raw[5 + 16], timed[4];
    device_setup(&gray_model);
    request(0x7F, 1, NULL, 0);
    CHECK(rx.n == 1 && is_error(0, 1, 0x7F, DR_ERR_UNKNOWN_TYPE));
    request(DR_MSG_RESULT, 2, NULL, 0); /* a device->host type sent to the device */
    CHECK(rx.n == 1 && is_error(0, 2, DR_MSG_RESULT, DR_ERR_UNKNOWN_TYPE));
    request(DR_MSG_INFER_TENSOR, 3, t, 641);
    CHECK(rx.n == 1 && is_error(0, 3, DR_MSG_INFER_TENSOR, DR_ERR_BAD_LENGTH));
    request(DR_MSG_INFER_TENSOR, 4, t, 0);
    CHECK(rx.n == 1 && is_error(0, 4, DR_MSG_INFER_TENSOR, DR_ERR_BAD_LENGTH));
    request(DR_MSG_INFER_RAW, 5, raw, 4);
    CHECK(rx.n == 1 && is_error(0, 5, DR_MSG_INFER_RAW, DR_ERR_BAD_LENGTH));
    raw[0] = 3; /* unknown format */
    dr_put_u16(raw + 1, 2);
    dr_put_u16(raw + 3, 2);
    request(DR_MSG_INFER_RAW, 6, raw, 9);
    CHECK(rx.n == 1 && is_error(0, 6, DR_MSG_INFER_RAW, DR_ERR_BAD_IMAGE));
    raw[0] = DR_FMT_GRAY8;
    dr_put_u16(raw + 1, 0);
    request(DR_MSG_INFER_RAW, 7, raw, 5);
    CHECK(rx.n == 1 && is_error(0, 7, DR_MSG_INFER_RAW, DR_ERR_BAD_IMAGE));
    dr_put_u16(raw + 1, 129);
    dr_put_u16(raw + 3, 1);
    request(DR_MSG_INFER_RAW, 8, raw, 5);
    CHECK(rx.n == 1 && is_error(0, 8, DR_MSG_INFER_RAW, DR_ERR_BAD_IMAGE));
    dr_put_u16(raw + 1, 2);
    dr_put_u16(raw + 3, 2);
    request(DR_MSG_INFER_RAW, 9, raw, 5 + 5); /* 2x2 GRAY8 needs 4 pixel bytes */
    CHECK(rx.n == 1 && is_error(0, 9, DR_MSG_INFER_RAW, DR_ERR_BAD_LENGTH));
    request(DR_MSG_TIMED_RUN, 10, timed, 3);
    CHECK(rx.n == 1 && is_error(0, 10, DR_MSG_TIMED_RUN, DR_ERR_BAD_LENGTH));
    dr_put_u16(timed, 0);
    dr_put_u16(timed + 2, 0);
    request(DR_MSG_TIMED_RUN, 11, timed, 4);
    CHECK(rx.n == 1 && is_error(0, 11, DR_MSG_TIMED_RUN, DR_ERR_BAD_LENGTH));
    dr_put_u16(timed + 2, 101); /* more than the 100 timing slots */
    request(DR_MSG_TIMED_RUN, 12, timed, 4);
    CHECK(rx.n == 1 && is_error(0, 12, DR_MSG_TIMED_RUN, DR_ERR_BAD_LENGTH));
    /* invoke failures, in every request that invokes */
    fk.fail_at = fk.calls;
    fk.invoke_rc = 7;
    request(DR_MSG_INFER_TENSOR, 13, t, 640);
    CHECK(rx.n == 1 && is_error(0, 13, DR_MSG_INFER_TENSOR, DR_ERR_INVOKE_FAILED));
    CHECK(strstr((const char *)reply_payload[0] + 2, "status 7") != NULL);
    fk.fail_at = fk.calls;
    request(DR_MSG_INFER_RAW, 14, raw, 9);
    CHECK(rx.n == 1 && is_error(0, 14, DR_MSG_INFER_RAW, DR_ERR_INVOKE_FAILED));
    dr_put_u16(timed, 2);
    dr_put_u16(timed + 2, 3);
    fk.fail_at = fk.calls + 1; /* during warm-up */
    request(DR_MSG_TIMED_RUN, 15, timed, 4);
    CHECK(rx.n == 1 && is_error(0, 15, DR_MSG_TIMED_RUN, DR_ERR_INVOKE_FAILED));
    fk.fail_at = fk.calls + 4; /* during the timed runs */
    request(DR_MSG_TIMED_RUN, 16, timed, 4);
    CHECK(rx.n == 1 && is_error(0, 16, DR_MSG_TIMED_RUN, DR_ERR_INVOKE_FAILED));
    /* payload CRC error: answered with the header's seq and type */
    {
        size_t n = dr_frame_encode(DR_MSG_INFER_TENSOR, 17, t, 640, big, sizeof big);
        big[100] ^= 1;
        feed_raw(big, n, n);
        CHECK(rx.n == 1 && is_error(0, 17, DR_MSG_INFER_TENSOR, DR_ERR_CRC));
    }
}

static void test_device_not_ready(void)
{
    uint8_t t[640] = {0}, raw[6] = {0, 1, 0, 1, 0, 9}, timed[4] = {0, 0, 1, 0};
    char json[DR_INFO_MAX + 1];
    device_setup(&gray_model);
    dr_device_set_ready(&dev, 0, "arena of 1000 bytes too small");
    request(DR_MSG_INFER_TENSOR, 1, t, sizeof t);
    CHECK(rx.n == 1 && is_error(0, 1, DR_MSG_INFER_TENSOR, DR_ERR_NOT_READY));
    request(DR_MSG_INFER_RAW, 2, raw, sizeof raw);
    CHECK(rx.n == 1 && is_error(0, 2, DR_MSG_INFER_RAW, DR_ERR_NOT_READY));
    request(DR_MSG_TIMED_RUN, 3, timed, sizeof timed);
    CHECK(rx.n == 1 && is_error(0, 3, DR_MSG_TIMED_RUN, DR_ERR_NOT_READY));
    request(DR_MSG_HELLO, 4, NULL, 0);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_INFO);
    dr_device_info_json(&dev, json, sizeof json);
    CHECK(strstr(json, "\"ready\": false, \"error\": \"arena of 1000 bytes too small\"") != NULL);
    CHECK(fk.calls == 0);
    dr_device_set_ready(&dev, 1, NULL);
    request(DR_MSG_INFER_TENSOR, 5, t, sizeof t);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_RESULT);
}

static void test_device_bad_model_and_port(void)
{
    dr_model_meta_t m = gray_model;
    dr_port_t port;
    char json[DR_INFO_MAX + 1];
    uint8_t t[640] = {0};
    m.in_c = 2;
    device_setup(&gray_model);
    port = dev.port;
    CHECK(dr_device_init(&dev, &port, &m, 1, timings, 100) == DR_DEV_BAD_MODEL);
    dr_device_set_ready(&dev, 1, NULL); /* cannot override a metadata error */
    request(DR_MSG_INFER_TENSOR, 1, t, sizeof t);
    CHECK(rx.n == 1 && is_error(0, 1, DR_MSG_INFER_TENSOR, DR_ERR_NOT_READY));
    dr_device_info_json(&dev, json, sizeof json);
    CHECK(strstr(json, "channels must be 1 or 3") != NULL);
    m = gray_model;
    m.classes = 0;
    CHECK(dr_device_init(&dev, &port, &m, 1, timings, 100) == DR_DEV_BAD_MODEL);
    m = gray_model;
    m.in_scale = 0.0;
    CHECK(dr_device_init(&dev, &port, &m, 1, timings, 100) == DR_DEV_BAD_MODEL);
    port.write = NULL;
    CHECK(dr_device_init(&dev, &port, &gray_model, 1, timings, 100) == DR_DEV_BAD_PORT);
}

static void test_device_timed_run(void)
{
    uint8_t t[640], timed[4];
    size_t i;
    device_setup(&gray_model);
    /* before any INFER the input is all zeros */
    dr_put_u16(timed, 0);
    dr_put_u16(timed + 2, 1);
    request(DR_MSG_TIMED_RUN, 1, timed, 4);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_TIMING);
    for (i = 0; i < 640; i++)
        CHECK(fk.last_in[i] == 0);
    for (i = 0; i < sizeof t; i++)
        t[i] = (uint8_t)(255 - i);
    request(DR_MSG_INFER_TENSOR, 2, t, sizeof t);
    fk.calls = 0;
    dr_put_u16(timed, 2);
    dr_put_u16(timed + 2, 5);
    request(DR_MSG_TIMED_RUN, 3, timed, 4);
    CHECK(rx.n == 1 && rx.type[0] == DR_MSG_TIMING && rx.seq[0] == 3 && rx.len[0] == 18);
    CHECK(fk.calls == 7);
    CHECK(memcmp(fk.last_in, t, sizeof t) == 0); /* the last INFER's input */
    /* runs are calls 2..6: cost 1000 + (call % 3) + 5 (one clock read inside) */
    CHECK(dr_get_u16(reply_payload[0]) == 5);
    CHECK(dr_get_u32(reply_payload[0] + 2) == 1006);  /* median of 1007,1005,1006,1007,1005 */
    CHECK(dr_get_u32(reply_payload[0] + 6) == 1007);  /* max */
    CHECK(dr_get_u32(reply_payload[0] + 10) == 1005); /* min */
    CHECK(dr_get_u32(reply_payload[0] + 14) == 1006); /* mean 5030 / 5 */
}

static void test_device_pipelined(void)
{
    uint8_t t[640] = {0};
    size_t pos = 0, i;
    device_setup(&gray_model);
    for (i = 0; i < 6; i++) {
        size_t g = (size_t)rnd() % 5, k;
        for (k = 0; k < g; k++) /* some garbage between requests */
            big[pos++] = (uint8_t)"log\n"[k % 4];
        pos += dr_frame_encode(i % 2 ? DR_MSG_HELLO : DR_MSG_INFER_TENSOR, (uint16_t)(100 + i), t,
                               i % 2 ? 0 : 640, big + pos, DR_MAX_FRAME);
    }
    feed_raw(big, pos, 1000);
    CHECK(rx.n == 6);
    for (i = 0; i < 6 && i < (size_t)rx.n; i++)
        CHECK(rx.seq[i] == 100 + i && rx.type[i] == (i % 2 ? DR_MSG_INFO : DR_MSG_RESULT));
}

static void test_json_escaping(void)
{
    dr_model_meta_t m = gray_model;
    char json[DR_INFO_MAX + 1], longname[300];
    dr_status_t st;
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    m.name = "a\"b\\c\n\xc3\xa9";
    device_setup(&m);
    memset(&st, 0, sizeof st);
    st.chip = "virtual";
    st.extra_json = "\"note\": \"host timings\"";
    dr_device_set_status(&dev, &st);
    dr_device_info_json(&dev, json, sizeof json);
    CHECK(strstr(json, "\"model\": \"a\\\"b\\\\c\\u000a\xc3\xa9\",") != NULL);
    CHECK(strstr(json, "\"note\": \"host timings\", \"ready\"") != NULL);
    CHECK(strstr(json, "\"chip\": \"virtual\",") != NULL);
    m.name = longname; /* truncated to 64 bytes, the JSON still fits */
    device_setup(&m);
    CHECK(dr_device_info_json(&dev, json, sizeof json) > 0);
    CHECK(strstr(json, longname + 300 - 1 - 64) != NULL && strstr(json, longname + 300 - 1 - 65) == NULL);
}

/* Same vectors as tests/test_labels.py::test_read_class_breaks_ties_like_the_firmware. */
static void test_read_class(void)
{
    static const int8_t a[6] = {1, 7, 7, 3, 0, 0};           /* tie 1/2: 2 has more around */
    static const int8_t b[6] = {5, 9, 9, 5, 0, 0};           /* tie around too: lower index */
    static const int8_t c[6] = {9, 0, 0, 0, 4, 9};           /* 0/5 tie across the wrap: 5 */
    static const int8_t d[6] = {-128, -5, 127, -128, 3, 0};  /* plain maximum */
    static const int8_t e[6] = {-128, -128, -128, -128, -128, -128};
    CHECK(dr_read_class(a, 6) == 2);
    CHECK(dr_read_class(b, 6) == 1);
    CHECK(dr_read_class(c, 6) == 5);
    CHECK(dr_read_class(d, 6) == 2);
    CHECK(dr_read_class(e, 6) == 0);
    CHECK(dr_read_class(d, 1) == 0);
}

int main(void)
{
    test_crc();
    test_read_class();
    test_encode_layout();
    test_round_trip();
    test_resync_garbage();
    test_resync_truncated();
    test_corruption();
    test_stats();
    test_preprocess();
    test_device_hello_boot();
    test_device_infer();
    test_device_errors();
    test_device_not_ready();
    test_device_bad_model_and_port();
    test_device_timed_run();
    test_device_pipelined();
    test_json_escaping();
    printf("test_core: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
