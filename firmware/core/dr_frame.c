#include "dr_frame.h"

#include <string.h>

#include "dr_crc.h"

void dr_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void dr_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

uint16_t dr_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

uint32_t dr_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint32_t dr_frame_header(uint8_t type, uint16_t seq, uint16_t len, uint8_t hdr[DR_HEADER_BYTES])
{
    hdr[0] = DR_SYNC0;
    hdr[1] = DR_SYNC1;
    hdr[2] = type;
    dr_put_u16(hdr + 3, seq);
    dr_put_u16(hdr + 5, len);
    hdr[7] = dr_crc8(hdr + 2, 5);
    return dr_crc32(0, hdr + 2, 6);
}

size_t dr_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                       uint8_t *out, size_t cap)
{
    uint32_t crc;
    if (len > DR_MAX_PAYLOAD || cap < len + DR_FRAME_OVERHEAD || (len && !payload))
        return 0;
    crc = dr_frame_header(type, seq, (uint16_t)len, out);
    if (len) {
        memmove(out + DR_HEADER_BYTES, payload, len); /* payload may already sit there */
        crc = dr_crc32(crc, out + DR_HEADER_BYTES, len);
    }
    dr_put_u32(out + DR_HEADER_BYTES + len, crc);
    return len + DR_FRAME_OVERHEAD;
}

void dr_parser_init(dr_parser_t *p) { memset(p, 0, sizeof *p); }

size_t dr_parser_sizeof(void) { return sizeof(dr_parser_t); }

size_t dr_parser_pending(const dr_parser_t *p) { return p->len - p->start; }

/* Advances start to the next possible sync (A5 followed by 5A or by the buffer end). */
static void skip_to_sync(dr_parser_t *p)
{
    size_t i = p->start;
    while (i < p->len && !(p->buf[i] == DR_SYNC0 && (i + 1 == p->len || p->buf[i + 1] == DR_SYNC1)))
        i++;
    p->skipped_bytes += (uint32_t)(i - p->start);
    p->start = i;
}

/* One parsing step at start. Returns 0 when more bytes are needed, 1 to continue. */
static int parse_step(dr_parser_t *p, dr_frame_cb cb, void *ctx)
{
    const uint8_t *h;
    dr_frame_t f;
    size_t avail, total;

    skip_to_sync(p);
    avail = p->len - p->start;
    if (avail < DR_HEADER_BYTES)
        return 0;
    h = p->buf + p->start;
    f.type = h[2];
    f.seq = dr_get_u16(h + 3);
    f.length = dr_get_u16(h + 5);
    if (dr_crc8(h + 2, 5) != h[7] || f.length > DR_MAX_PAYLOAD) {
        p->bad_headers++;
        p->start++; /* false sync: rescan from the next byte */
        return 1;
    }
    total = (size_t)f.length + DR_FRAME_OVERHEAD;
    if (avail < total)
        return 0;
    if (dr_crc32(0, h + 2, (size_t)f.length + 6) != dr_get_u32(h + DR_HEADER_BYTES + f.length)) {
        p->crc_errors++;
        p->start++; /* the header is trusted for the reply, the bytes are rescanned */
        f.payload = NULL;
        if (cb)
            cb(ctx, DR_EV_CRC_ERROR, &f);
        return 1;
    }
    p->frames++;
    p->start += total;
    f.payload = h + DR_HEADER_BYTES;
    if (cb)
        cb(ctx, DR_EV_FRAME, &f);
    return 1;
}

static void compact(dr_parser_t *p)
{
    if (p->start == 0)
        return;
    memmove(p->buf, p->buf + p->start, p->len - p->start);
    p->len -= p->start;
    p->start = 0;
}

void dr_parser_feed(dr_parser_t *p, const uint8_t *data, size_t n, dr_frame_cb cb, void *ctx)
{
    while (n > 0) {
        size_t room = sizeof p->buf - p->len, take = n < room ? n : room;
        memcpy(p->buf + p->len, data, take);
        p->len += take;
        data += take;
        n -= take;
        while (parse_step(p, cb, ctx))
            ;
        compact(p); /* a full buffer always holds a decidable frame, so room reappears */
    }
}
