#include "dr_tflm.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

#include "esp_heap_caps.h"
#include "model_data.h"
#include "sdkconfig.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

// Number of ops in the single op list, counted by the preprocessor.
constexpr int kOpCount = 0
#define DR_OP(method, name) +1
#include "dr_ops.def"
#undef DR_OP
    ;

using Resolver = tflite::MicroMutableOpResolver<kOpCount>;

Resolver g_resolver;
alignas(tflite::MicroInterpreter) unsigned char g_interp_mem[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter *g_interp = nullptr;
uint8_t *g_arena = nullptr;
int8_t *g_in = nullptr;
const int8_t *g_out = nullptr;
size_t g_in_bytes = 0, g_out_bytes = 0;

void fail(DrTflmInfo *info, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->error, sizeof info->error, fmt, ap);
    va_end(ap);
    info->ready = false;
}

// Returns the name of the first op the resolver refused, or nullptr.
const char *register_ops(Resolver &r)
{
#define DR_OP(method, name) \
    if (r.method() != kTfLiteOk) \
        return #name;
#include "dr_ops.def"
#undef DR_OP
    return nullptr;
}

// PSRAM when present (keeps internal RAM for stacks and buffers), else internal.
// -DDR_ARENA_PREFER_INTERNAL=1 reverses the order: faster, if the arena fits.
uint8_t *alloc_arena(size_t n, bool *in_psram)
{
    const uint32_t psram = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
    const uint32_t internal = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
#if DR_ARENA_PREFER_INTERNAL
    const uint32_t order[2] = {internal, psram};
#else
    const uint32_t order[2] = {psram, internal};
#endif
    for (uint32_t caps : order) {
        void *p = heap_caps_malloc(n, caps);
        if (p) {
            *in_psram = caps == psram;
            return static_cast<uint8_t *>(p);
        }
    }
    return nullptr;
}

void release()
{
    if (g_interp) {
        g_interp->~MicroInterpreter();
        g_interp = nullptr;
    }
    heap_caps_free(g_arena);
    g_arena = nullptr;
}

enum class Attempt { kOk, kNoMemory, kTooSmall };

// One attempt with an arena of n bytes.
Attempt try_arena(const tflite::Model *model, size_t n, DrTflmInfo *info)
{
    g_arena = alloc_arena(n, &info->arena_in_psram);
    if (!g_arena) {
        fail(info, "cannot allocate a %u-byte tensor arena (largest free block %u)", (unsigned)n,
             (unsigned)heap_caps_get_largest_free_block(MALLOC_CAP_8BIT));
        return Attempt::kNoMemory;
    }
    g_interp = new (g_interp_mem) tflite::MicroInterpreter(model, g_resolver, g_arena, n);
    if (g_interp->AllocateTensors() != kTfLiteOk) {
        fail(info, "AllocateTensors failed with a %u-byte arena (card %u + margin %u)", (unsigned)n,
             (unsigned)DR_MODEL_ARENA_BYTES, (unsigned)DR_ARENA_MARGIN_BYTES);
        release();
        return Attempt::kTooSmall;
    }
    info->arena_bytes = n;
    info->arena_used = g_interp->arena_used_bytes();
    return Attempt::kOk;
}

// The model must take int8 [1, H, W, C] and give int8 [1, classes], as model_data.h says.
bool check_tensors(DrTflmInfo *info)
{
    TfLiteTensor *in = g_interp->input(0), *out = g_interp->output(0);
    const TfLiteIntArray *d = in ? in->dims : nullptr;
    if (!in || !out || in->type != kTfLiteInt8 || out->type != kTfLiteInt8) {
        fail(info, "model input and output must be int8 tensors");
        return false;
    }
    if (!d || d->size != 4 || d->data[0] != 1 || d->data[1] != DR_MODEL_INPUT_H ||
        d->data[2] != DR_MODEL_INPUT_W || d->data[3] != DR_MODEL_INPUT_C ||
        in->bytes != (size_t)DR_MODEL_INPUT_H * DR_MODEL_INPUT_W * DR_MODEL_INPUT_C) {
        fail(info, "model input shape differs from model_data.h (1x%dx%dx%d)", DR_MODEL_INPUT_H,
             DR_MODEL_INPUT_W, DR_MODEL_INPUT_C);
        return false;
    }
    if (out->bytes != (size_t)DR_MODEL_CLASSES) {
        fail(info, "model output has %u values, model_data.h says %d", (unsigned)out->bytes,
             DR_MODEL_CLASSES);
        return false;
    }
    g_in = in->data.int8;
    g_out = out->data.int8;
    g_in_bytes = in->bytes;
    g_out_bytes = out->bytes;
    info->in_scale = in->params.scale;
    info->in_zp = in->params.zero_point;
    info->out_scale = out->params.scale;
    info->out_zp = out->params.zero_point;
    return true;
}

}  // namespace

void dr_tflm_setup(DrTflmInfo *info)
{
    std::memset(info, 0, sizeof *info);
    info->in_scale = DR_MODEL_IN_SCALE;
    info->in_zp = DR_MODEL_IN_ZP;
    info->out_scale = DR_MODEL_OUT_SCALE;
    info->out_zp = DR_MODEL_OUT_ZP;
    tflite::InitializeTarget();
    const tflite::Model *model = tflite::GetModel(dr_model_data);
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        fail(info, "model schema %u, firmware supports %d", (unsigned)model->version(), TFLITE_SCHEMA_VERSION);
        return;
    }
    if (const char *op = register_ops(g_resolver)) {
        fail(info, "op resolver refused %s", op);
        return;
    }
    // Card + margin first; if ESP-NN needs more scratch than the margin, one retry
    // with twice that before giving up (the reason then goes to INFO.error).
    const size_t want = (size_t)DR_MODEL_ARENA_BYTES + DR_ARENA_MARGIN_BYTES;
    Attempt a = try_arena(model, want, info);
    if (a == Attempt::kTooSmall) {
        char first[sizeof info->error];
        std::memcpy(first, info->error, sizeof first);
        a = try_arena(model, 2 * want, info);
        if (a == Attempt::kNoMemory) {  // keep why the first arena failed, too
            char retry[sizeof info->error];
            std::memcpy(retry, info->error, sizeof retry);
            fail(info, "%s; retry: %s", first, retry);
        }
    }
    if (a != Attempt::kOk)
        return;
    if (!check_tensors(info)) {
        release();
        return;
    }
    info->ready = true;
    info->error[0] = '\0';
}

int dr_tflm_invoke(void *ctx, const int8_t *in, int8_t *out)
{
    (void)ctx;
    if (!g_interp)
        return -1;
    std::memcpy(g_in, in, g_in_bytes);  // the planner may reuse the input buffer: copy each time
    TfLiteStatus st = g_interp->Invoke();
    if (st != kTfLiteOk)
        return (int)st;
    std::memcpy(out, g_out, g_out_bytes);
    return 0;
}
