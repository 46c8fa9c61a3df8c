/* Frame codec of the digitrec serial protocol, version 1 (docs/protocol.md).
 *
 *   A5 5A | type u8 | seq u16 | length u16 | hcrc u8 | payload[length] | crc32 u32
 *
 * hcrc = CRC-8 of type..length; crc32 = CRC-32 of type..payload; little-endian. */
#ifndef DR_FRAME_H
#define DR_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DR_PROTO_VERSION 1
#define DR_SYNC0 0xA5u
#define DR_SYNC1 0x5Au
#define DR_HEADER_BYTES 8u
#define DR_FRAME_OVERHEAD 12u
#define DR_MAX_PAYLOAD 20480u
#define DR_MAX_FRAME (DR_MAX_PAYLOAD + DR_FRAME_OVERHEAD)
#define DR_MAX_RAW_SIDE 128u

enum dr_msg_type {
    DR_MSG_HELLO = 0x01,
    DR_MSG_INFER_TENSOR = 0x02,
    DR_MSG_INFER_RAW = 0x03,
    DR_MSG_TIMED_RUN = 0x04,
    DR_MSG_INFO = 0x81,
    DR_MSG_RESULT = 0x82,
    DR_MSG_TIMING = 0x84,
    DR_MSG_BOOT = 0x90,
    DR_MSG_ERROR = 0xEE
};

enum dr_error_code {
    DR_ERR_CRC = 1,
    DR_ERR_UNKNOWN_TYPE = 2,
    DR_ERR_BAD_LENGTH = 3,
    DR_ERR_BAD_IMAGE = 4,
    DR_ERR_INVOKE_FAILED = 5,
    DR_ERR_NOT_READY = 6
};

/* Little-endian helpers shared by the codec and the dispatcher. */
void dr_put_u16(uint8_t *p, uint16_t v);
void dr_put_u32(uint8_t *p, uint32_t v);
uint16_t dr_get_u16(const uint8_t *p);
uint32_t dr_get_u32(const uint8_t *p);

/* Writes one frame into out (capacity cap). Returns the frame size (len + 12), or 0
 * if len > DR_MAX_PAYLOAD or cap is too small. payload may be NULL when len == 0. */
size_t dr_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                       uint8_t *out, size_t cap);

/* Fills the 8 header bytes (sync..hcrc) for a payload of len bytes, and returns the
 * CRC-32 running value over type..length, to be continued over the payload with
 * dr_crc32 — lets a sender stream a large payload without copying it. */
uint32_t dr_frame_header(uint8_t type, uint16_t seq, uint16_t len, uint8_t hdr[DR_HEADER_BYTES]);

/* A decoded frame; payload points into the parser's buffer, valid during the callback. */
typedef struct dr_frame {
    uint8_t type;
    uint16_t seq;
    uint16_t length;
    const uint8_t *payload;
} dr_frame_t;

typedef enum dr_event {
    DR_EV_FRAME = 1,    /* a frame with good header and payload CRCs */
    DR_EV_CRC_ERROR = 2 /* good header, bad CRC-32: frame->type/seq valid, payload NULL */
} dr_event_t;

typedef void (*dr_frame_cb)(void *ctx, dr_event_t ev, const dr_frame_t *frame);

/* Incremental resynchronizing parser. It buffers at most one maximal frame; a false
 * sync (bad hcrc or length > DR_MAX_PAYLOAD) or a bad CRC-32 drops only the first
 * sync byte and rescans the bytes already received, so frames hidden behind garbage
 * or a truncated frame are still found. It never resets or waits on a bogus length. */
typedef struct dr_parser {
    uint8_t buf[DR_MAX_FRAME];
    size_t start; /* first unconsumed byte in buf */
    size_t len;   /* end of received bytes in buf */
    uint32_t frames, crc_errors, bad_headers, skipped_bytes; /* diagnostics */
} dr_parser_t;

void dr_parser_init(dr_parser_t *p);
size_t dr_parser_sizeof(void);
/* Feeds n bytes; cb is called for each event, in stream order, before returning.
 * The callback must not feed the same parser. */
void dr_parser_feed(dr_parser_t *p, const uint8_t *data, size_t n, dr_frame_cb cb, void *ctx);
/* Bytes held waiting for the rest of a frame (0 when idle between frames). */
size_t dr_parser_pending(const dr_parser_t *p);

#ifdef __cplusplus
}
#endif
#endif
