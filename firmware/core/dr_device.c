#include "dr_device.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dr_preprocess.h"
#include "dr_stats.h"

#define RAW_HEADER 5u
#define RESULT_HEADER 12u
#define TIMING_PAYLOAD 18u

const char *dr_fw_version(void) { return DR_FW_VERSION; }
int dr_proto_version(void) { return DR_PROTO_VERSION; }
size_t dr_device_sizeof(void) { return sizeof(dr_device_t); }

static const char *nz(const char *s) { return s ? s : ""; }

/* ------------------------------------------------------------------ JSON builder */
typedef struct jbuf {
    char *p;
    size_t cap, len;
    int overflow;
} jbuf_t;

static void jb_printf(jbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->overflow)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->overflow = 1;
    else
        b->len += (size_t)n;
}

/* Appends "key": "escaped value" with at most max bytes of escaped value (bounded INFO);
 * a UTF-8 sequence is kept whole so a truncated value stays valid UTF-8. */
static void jb_str(jbuf_t *b, const char *key, const char *s, size_t max)
{
    size_t i = 0, used = 0, k, need;
    jb_printf(b, "\"%s\": \"", key);
    while (s && s[i]) {
        unsigned char c = (unsigned char)s[i];
        int esc = c == '"' || c == '\\' || c < 0x20u;
        need = c == '"' || c == '\\' ? 2u : c < 0x20u ? 6u : c >= 0xF0u ? 4u : c >= 0xE0u ? 3u : c >= 0xC0u ? 2u : 1u;
        if (used + need > max)
            break;
        used += need;
        if (esc) {
            jb_printf(b, c < 0x20u ? "\\u%04x" : "\\%c", c);
            i++;
        } else {
            for (k = 0; k < need && s[i]; k++)
                jb_printf(b, "%c", s[i++]);
        }
    }
    jb_printf(b, "\", ");
}

static void jb_u32(jbuf_t *b, const char *key, uint32_t v)
{
    jb_printf(b, "\"%s\": %lu, ", key, (unsigned long)v);
}

static void info_json(dr_device_t *dev, jbuf_t *b)
{
    const dr_model_meta_t *m = &dev->model;
    const dr_status_t *st = &dev->status;
    const char *extra = nz(st->extra_json);
    jb_printf(b, "{\"proto\": %d, ", DR_PROTO_VERSION);
    jb_str(b, "fw", DR_FW_VERSION, 16);
    jb_str(b, "chip", st->chip, 32);
    jb_str(b, "board", st->board, 48);
    jb_u32(b, "cpu_mhz", st->cpu_mhz);
    jb_u32(b, "flash_bytes", st->flash_bytes);
    jb_u32(b, "psram_bytes", st->psram_bytes);
    jb_u32(b, "free_heap", st->free_heap);
    jb_str(b, "model", m->name, 64);
    jb_str(b, "model_sha256", m->sha256, 64);
    jb_u32(b, "classes", m->classes);
    jb_str(b, "color", m->color, 8);
    jb_printf(b, "\"input\": [%u, %u, %u], ", (unsigned)m->in_h, (unsigned)m->in_w, (unsigned)m->in_c);
    jb_printf(b, "\"in_scale\": %.17g, \"in_zp\": %ld, ", m->in_scale, (long)m->in_zp);
    jb_printf(b, "\"out_scale\": %.17g, \"out_zp\": %ld, ", m->out_scale, (long)m->out_zp);
    jb_u32(b, "arena_bytes", st->arena_bytes);
    jb_u32(b, "arena_used", st->arena_used);
    jb_u32(b, "boot_id", dev->boot_id);
    jb_u32(b, "uptime_ms", (uint32_t)(dev->port.now_us(dev->port.ctx) / 1000u));
    jb_u32(b, "max_runs", dev->max_runs);
    jb_u32(b, "rx_frames", dev->parser.frames);
    jb_u32(b, "rx_crc_errors", dev->parser.crc_errors);
    jb_u32(b, "rx_bad_headers", dev->parser.bad_headers);
    jb_u32(b, "rx_skipped_bytes", dev->parser.skipped_bytes);
    if (extra[0] && strlen(extra) <= 400u)
        jb_printf(b, "%s, ", extra);
    jb_printf(b, "\"ready\": %s, ", dr_device_is_ready(dev) ? "true" : "false");
    jb_str(b, "error", dr_device_is_ready(dev) ? "" : dev->error, 200);
    if (b->len >= 2u)
        b->len -= 2u; /* drop the trailing ", " */
    jb_printf(b, "}");
}

size_t dr_device_info_json(dr_device_t *dev, char *buf, size_t cap)
{
    jbuf_t b;
    b.p = buf;
    b.cap = cap;
    b.len = 0;
    b.overflow = cap == 0;
    if (dev->port.status)
        dev->port.status(dev->port.ctx, &dev->status);
    info_json(dev, &b);
    return b.overflow ? 0 : b.len;
}

/* ---------------------------------------------------------------------- replies */
static void send(dr_device_t *dev, uint8_t type, uint16_t seq, size_t len)
{
    /* the payload was built in place at tx + header */
    size_t n = dr_frame_encode(type, seq, dev->tx + DR_HEADER_BYTES, len, dev->tx, sizeof dev->tx);
    if (n)
        dev->port.write(dev->port.ctx, dev->tx, n);
}

static void send_error(dr_device_t *dev, uint16_t seq, uint8_t req, uint8_t code, const char *fmt, ...)
{
    uint8_t *p = dev->tx + DR_HEADER_BYTES;
    size_t room = DR_INFO_MAX - 2u;
    va_list ap;
    int n;
    p[0] = code;
    p[1] = req;
    va_start(ap, fmt);
    n = vsnprintf((char *)p + 2, room, fmt, ap); /* writes a NUL we do not send */
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= room)
        n = (int)room - 1;
    send(dev, DR_MSG_ERROR, seq, 2u + (size_t)n);
}

static void send_info(dr_device_t *dev, uint8_t type, uint16_t seq)
{
    size_t n = dr_device_info_json(dev, (char *)dev->tx + DR_HEADER_BYTES, DR_INFO_MAX + 1u);
    send(dev, type, seq, n); /* n <= DR_INFO_MAX: the NUL lands on the CRC slot, then is overwritten */
}

static uint32_t elapsed(uint64_t t0, uint64_t t1)
{
    uint64_t d = t1 >= t0 ? t1 - t0 : 0u;
    return d > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)d;
}

/* ---------------------------------------------------------------------- requests */
static int not_ready(dr_device_t *dev, const dr_frame_t *f)
{
    if (dr_device_is_ready(dev))
        return 0;
    send_error(dev, f->seq, f->type, DR_ERR_NOT_READY, "model not ready: %s", nz(dev->error));
    return 1;
}

uint16_t dr_read_class(const int8_t *scores, uint16_t n)
{
    uint16_t i, best = 0;
    int32_t best_key = INT32_MIN;
    for (i = 0; i < n; i++) {
        /* score first, then the two circular neighbours (sum <= 510 < 1024), then lower index */
        int32_t around = (int32_t)scores[(uint16_t)((i + n - 1u) % n)] + scores[(uint16_t)((i + 1u) % n)] + 256;
        int32_t key = ((int32_t)scores[i] + 128) * 1024 + around;
        if (key > best_key) {
            best_key = key;
            best = i;
        }
    }
    return best;
}

static void infer_and_reply(dr_device_t *dev, const dr_frame_t *f, uint32_t pre_us)
{
    uint8_t *p = dev->tx + DR_HEADER_BYTES;
    uint16_t best, n = dev->model.classes;
    uint64_t t0 = dev->port.now_us(dev->port.ctx);
    int rc = dev->port.invoke(dev->port.ctx, dev->in, dev->out);
    uint64_t t1 = dev->port.now_us(dev->port.ctx);
    if (rc != 0) {
        send_error(dev, f->seq, f->type, DR_ERR_INVOKE_FAILED, "invoke failed (status %d)", rc);
        return;
    }
    best = dr_read_class(dev->out, n);
    dr_put_u16(p, best);
    dr_put_u16(p + 2, n);
    dr_put_u32(p + 4, pre_us);
    dr_put_u32(p + 8, elapsed(t0, t1));
    memcpy(p + RESULT_HEADER, dev->out, n);
    send(dev, DR_MSG_RESULT, f->seq, RESULT_HEADER + n);
}

static void handle_tensor(dr_device_t *dev, const dr_frame_t *f)
{
    if (not_ready(dev, f))
        return;
    if (f->length != dev->in_bytes) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "INFER_TENSOR needs %lu bytes (%ux%ux%u), got %u",
                   (unsigned long)dev->in_bytes, (unsigned)dev->model.in_h, (unsigned)dev->model.in_w,
                   (unsigned)dev->model.in_c, (unsigned)f->length);
        return;
    }
    memcpy(dev->in, f->payload, f->length);
    infer_and_reply(dev, f, 0u);
}

static void handle_raw(dr_device_t *dev, const dr_frame_t *f)
{
    unsigned fmt, w, h, bpp;
    uint64_t t0, t1;
    int rc;
    if (not_ready(dev, f))
        return;
    if (f->length < RAW_HEADER) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "INFER_RAW needs a 5-byte header, got %u bytes",
                   (unsigned)f->length);
        return;
    }
    fmt = f->payload[0];
    w = dr_get_u16(f->payload + 1);
    h = dr_get_u16(f->payload + 3);
    bpp = (unsigned)dr_bytes_per_pixel((int)fmt);
    if (!bpp) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_IMAGE, "unknown raw format %u (0 GRAY8, 1 RGB888, 2 RGB565)", fmt);
        return;
    }
    if (w < 1 || h < 1 || w > DR_MAX_RAW_SIDE || h > DR_MAX_RAW_SIDE) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_IMAGE, "raw size %ux%u outside 1..%u", w, h,
                   (unsigned)DR_MAX_RAW_SIDE);
        return;
    }
    if ((unsigned long)f->length - RAW_HEADER != (unsigned long)w * h * bpp) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "raw %ux%u format %u needs %lu pixel bytes, got %u", w,
                   h, fmt, (unsigned long)w * h * bpp, (unsigned)(f->length - RAW_HEADER));
        return;
    }
    t0 = dev->port.now_us(dev->port.ctx);
    rc = dr_preprocess(f->payload + RAW_HEADER, f->length - RAW_HEADER, (int)fmt, (int)w, (int)h,
                       dev->model.in_h, dev->model.in_w, dev->model.in_c, dev->lut, dev->in);
    t1 = dev->port.now_us(dev->port.ctx);
    if (rc != DR_PP_OK) { /* unreachable after the checks above; kept as a guard */
        send_error(dev, f->seq, f->type, DR_ERR_BAD_IMAGE, "preprocessing rejected the image (%d)", rc);
        return;
    }
    infer_and_reply(dev, f, elapsed(t0, t1));
}

static void handle_timed(dr_device_t *dev, const dr_frame_t *f)
{
    uint8_t *p = dev->tx + DR_HEADER_BYTES;
    unsigned warmup, runs, i;
    dr_stats_t s;
    if (not_ready(dev, f))
        return;
    if (f->length != 4u) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "TIMED_RUN needs 4 bytes, got %u", (unsigned)f->length);
        return;
    }
    warmup = dr_get_u16(f->payload);
    runs = dr_get_u16(f->payload + 2);
    if (runs < 1u || runs > dev->max_runs) {
        send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "TIMED_RUN runs must be 1..%lu, got %u",
                   (unsigned long)dev->max_runs, runs);
        return;
    }
    for (i = 0; i < warmup + runs; i++) {
        uint64_t t0 = dev->port.now_us(dev->port.ctx);
        int rc = dev->port.invoke(dev->port.ctx, dev->in, dev->out);
        uint64_t t1 = dev->port.now_us(dev->port.ctx);
        if (rc != 0) {
            send_error(dev, f->seq, f->type, DR_ERR_INVOKE_FAILED, "invoke failed (status %d) at run %u", rc, i);
            return;
        }
        if (i >= warmup)
            dev->timings[i - warmup] = elapsed(t0, t1);
    }
    dr_stats_compute(dev->timings, runs, &s);
    dr_put_u16(p, (uint16_t)runs);
    dr_put_u32(p + 2, s.median);
    dr_put_u32(p + 6, s.max);
    dr_put_u32(p + 10, s.min);
    dr_put_u32(p + 14, s.mean);
    send(dev, DR_MSG_TIMING, f->seq, TIMING_PAYLOAD);
}

static void on_event(void *ctx, dr_event_t ev, const dr_frame_t *f)
{
    dr_device_t *dev = (dr_device_t *)ctx;
    if (ev == DR_EV_CRC_ERROR) {
        send_error(dev, f->seq, f->type, DR_ERR_CRC, "payload CRC-32 mismatch");
        return;
    }
    switch (f->type) {
    case DR_MSG_HELLO:
        if (f->length)
            send_error(dev, f->seq, f->type, DR_ERR_BAD_LENGTH, "HELLO has no payload, got %u bytes",
                       (unsigned)f->length);
        else
            send_info(dev, DR_MSG_INFO, f->seq);
        break;
    case DR_MSG_INFER_TENSOR: handle_tensor(dev, f); break;
    case DR_MSG_INFER_RAW: handle_raw(dev, f); break;
    case DR_MSG_TIMED_RUN: handle_timed(dev, f); break;
    default:
        send_error(dev, f->seq, f->type, DR_ERR_UNKNOWN_TYPE, "unknown message type 0x%02X", (unsigned)f->type);
    }
}

/* ------------------------------------------------------------------------ public */
static const char *check_model(const dr_model_meta_t *m)
{
    size_t bytes = (size_t)m->in_h * m->in_w * m->in_c;
    if (m->in_c != 1 && m->in_c != 3)
        return "model input channels must be 1 or 3";
    if (!m->in_h || !m->in_w || m->in_h > DR_OUT_MAX_SIDE || m->in_w > DR_OUT_MAX_SIDE ||
        bytes > DR_MAX_INPUT_BYTES)
        return "model input shape too large for the firmware core";
    if (!m->classes || m->classes > DR_MAX_CLASSES)
        return "model output size outside 1..256";
    if (!(m->in_scale > 0.0))
        return "model input scale must be positive";
    return NULL;
}

int dr_device_init(dr_device_t *dev, const dr_port_t *port, const dr_model_meta_t *model,
                   uint32_t boot_id, uint32_t *timings, uint32_t max_runs)
{
    const char *bad;
    memset(dev, 0, sizeof *dev);
    dr_parser_init(&dev->parser);
    if (!port || !port->invoke || !port->now_us || !port->write || !model)
        return DR_DEV_BAD_PORT;
    dev->port = *port;
    dev->model = *model;
    dev->boot_id = boot_id;
    dev->timings = timings;
    dev->max_runs = timings ? (max_runs > 65535u ? 65535u : max_runs) : 0u;
    dev->ready = 1;
    dev->error = "";
    bad = check_model(model);
    dev->model_ok = bad == NULL;
    if (bad) {
        dev->error = bad;
        return DR_DEV_BAD_MODEL;
    }
    dev->in_bytes = (size_t)model->in_h * model->in_w * model->in_c;
    dr_quant_lut(model->in_scale, model->in_zp, dev->lut);
    return DR_DEV_OK;
}

int dr_device_is_ready(const dr_device_t *dev) { return dev->ready && dev->model_ok; }

void dr_device_set_ready(dr_device_t *dev, int ready, const char *error)
{
    if (!dev->model_ok)
        return; /* keep the metadata error: it is the real reason */
    dev->ready = ready != 0;
    dev->error = ready ? "" : (error && error[0] ? error : "model setup failed");
}

void dr_device_set_status(dr_device_t *dev, const dr_status_t *st) { dev->status = *st; }

void dr_device_boot(dr_device_t *dev) { send_info(dev, DR_MSG_BOOT, 0u); }

void dr_device_feed(dr_device_t *dev, const uint8_t *data, size_t n)
{
    dr_parser_feed(&dev->parser, data, n, on_event, dev);
}
