// The TensorFlow Lite Micro side of the firmware: tensor arena, op resolver built
// from firmware/core/dr_ops.def, interpreter, and the invoke hook of dr_port_t.
#pragma once

#include <cstddef>
#include <cstdint>

// Extra arena bytes on top of the model card's DR_MODEL_ARENA_BYTES. The card is
// measured with the reference kernels of PyPI tflite-micro; ESP-NN's optimized
// CONV_2D / DEPTHWISE_CONV_2D ask for scratch buffers on top (on the ESP32-S3 about
// the padded input plus a copy of the filter of the largest conv, a few KB to a few
// tens of KB for 32x20 digit models). docs/firmware.md explains how to size it.
#ifndef DR_ARENA_MARGIN_BYTES
#define DR_ARENA_MARGIN_BYTES (48 * 1024)
#endif

struct DrTflmInfo {
    bool ready;
    char error[160];        // why not ready ("" when ready)
    size_t arena_bytes;     // allocated arena
    size_t arena_used;      // interpreter.arena_used_bytes() after AllocateTensors
    bool arena_in_psram;
    double in_scale, out_scale;  // from the interpreter's tensors (authoritative)
    int32_t in_zp, out_zp;
};

// Sets up the interpreter; never aborts. On failure info->ready is false and
// info->error says why, so the firmware can keep answering the host.
void dr_tflm_setup(DrTflmInfo *info);

// dr_port_t.invoke: copies `in` into the input tensor, runs Invoke(), copies the
// output scores to `out`. Returns 0, or the TfLiteStatus / -1 when not set up.
int dr_tflm_invoke(void *ctx, const int8_t *in, int8_t *out);
