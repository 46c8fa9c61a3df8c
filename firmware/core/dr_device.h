/* The device side of the digitrec serial protocol (docs/protocol.md): a request
 * dispatcher that owns the frame parser, the last input tensor and the reply
 * encoder, and reaches the board (or the virtual device) only through dr_port_t.
 *
 *   dr_device_t dev;                       // ~25 KB: static or heap, not the stack
 *   dr_device_init(&dev, &port, &model, boot_id, timings, max_runs);
 *   dr_device_set_ready(&dev, 0, "arena does not fit");   // only if setup failed
 *   dr_device_boot(&dev);                  // unsolicited BOOT frame (seq 0)
 *   for (;;) dr_device_feed(&dev, rx, n);  // replies go out through port.write
 *
 * Not re-entrant per device: feed one dr_device_t from one thread. Portable C99. */
#ifndef DR_DEVICE_H
#define DR_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "dr_frame.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DR_FW_VERSION "0.2.0" /* 0.2.0: tie-aware class readout (dr_read_class) */
#define DR_MAX_INPUT_BYTES 4096u /* h*w*c of the model input (32*20*3 = 1920 in use) */
#define DR_MAX_CLASSES 256u      /* n_scores of the model output */
#define DR_INFO_MAX 1536u        /* INFO/BOOT JSON payload capacity */

/* Model identity and tensor layout (model_data.h / card.json). Strings are borrowed:
 * they must outlive the device. */
typedef struct dr_model_meta {
    const char *name;
    const char *sha256; /* 64 hex digits of the .tflite file */
    const char *color;  /* "GRAY" or "RGB" */
    uint16_t classes;   /* number of int8 scores */
    uint16_t in_h, in_w, in_c;
    double in_scale;
    int32_t in_zp;
    double out_scale;
    int32_t out_zp;
} dr_model_meta_t;

/* Platform facts reported in INFO. Strings are borrowed; NULL prints "". extra_json,
 * if non-empty, is appended verbatim inside the object: `"key": value, ...` pairs. */
typedef struct dr_status {
    const char *chip;
    const char *board;
    const char *extra_json;
    uint32_t cpu_mhz, flash_bytes, psram_bytes, free_heap, arena_bytes, arena_used;
} dr_status_t;

typedef struct dr_port {
    void *ctx;
    /* Runs the model on in (h*w*c int8) writing classes int8 scores to out; 0 = ok. */
    int (*invoke)(void *ctx, const int8_t *in, int8_t *out);
    /* Microseconds since start-up (monotonic). */
    uint64_t (*now_us)(void *ctx);
    /* Sends bytes to the host (one call per complete frame). */
    void (*write)(void *ctx, const uint8_t *data, size_t n);
    /* Optional (may be NULL): refreshes dynamic fields (free_heap...) before INFO. */
    void (*status)(void *ctx, dr_status_t *st);
} dr_port_t;

typedef enum dr_device_rc {
    DR_DEV_OK = 0,
    DR_DEV_BAD_PORT = -1, /* invoke, now_us or write missing: device unusable */
    DR_DEV_BAD_MODEL = -2 /* shape/quant unusable: device answers, but is not ready */
} dr_device_rc_t;

typedef struct dr_device {
    dr_parser_t parser;
    dr_port_t port;
    dr_model_meta_t model;
    dr_status_t status;
    const char *error; /* why not ready ("" when ready) */
    int ready;         /* set_ready flag */
    int model_ok;      /* metadata accepted by init */
    uint32_t boot_id;
    uint32_t *timings; /* caller's buffer for TIMED_RUN samples */
    uint32_t max_runs;
    size_t in_bytes;
    int8_t lut[256];
    int8_t in[DR_MAX_INPUT_BYTES]; /* the last INFER input, zeros at start */
    int8_t out[DR_MAX_CLASSES];
    uint8_t tx[DR_INFO_MAX + DR_FRAME_OVERHEAD];
} dr_device_t;

/* timings: max_runs u32 slots (TIMED_RUN runs must be 1..max_runs). The device starts
 * ready when the model metadata is usable. */
int dr_device_init(dr_device_t *dev, const dr_port_t *port, const dr_model_meta_t *model,
                   uint32_t boot_id, uint32_t *timings, uint32_t max_runs);
/* ready = 0 makes every INFER / TIMED_RUN answer ERROR NOT_READY with error as message
 * (error is borrowed). */
void dr_device_set_ready(dr_device_t *dev, int ready, const char *error);
/* Copies the struct (its strings stay borrowed). */
void dr_device_set_status(dr_device_t *dev, const dr_status_t *st);
void dr_device_boot(dr_device_t *dev);
void dr_device_feed(dr_device_t *dev, const uint8_t *data, size_t n);
/* The INFO JSON (NUL-terminated if cap > 0); returns its length, or 0 if cap is too small. */
size_t dr_device_info_json(dr_device_t *dev, char *buf, size_t cap);
int dr_device_is_ready(const dr_device_t *dev);
size_t dr_device_sizeof(void);
/* The class an int8 output reads as: the maximum score; ties go to the class whose two
 * circular neighbours (class i-1 and i+1, wrapping) score more, then to the lower index.
 * An int8 softmax has steps of 1/256, so neighbouring tenths tie on a few % of images. */
uint16_t dr_read_class(const int8_t *scores, uint16_t n);
const char *dr_fw_version(void);
int dr_proto_version(void);

#ifdef __cplusplus
}
#endif
#endif
