// digitrec firmware entry point: board facts, start-up banner, and the serial loop.
//
// app_main (core 0) installs the serial driver, so its interrupt runs on core 0, then
// starts the worker task on core 1: model setup, BOOT frame, and
// read -> dr_device_feed -> replies. The protocol logic lives in firmware/core/.
#include <cstdio>
#include <cstring>

#include "dr_device.h"
#include "dr_serial.h"
#include "dr_tflm.h"
#include "esp_chip_info.h"
#include "esp_flash.h"
#include "esp_heap_caps.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_random.h"
#include "esp_rom_sys.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "model_data.h"
#include "sdkconfig.h"
#if CONFIG_SPIRAM
#include "esp_psram.h"
#endif

#ifndef DR_BOARD
#define DR_BOARD CONFIG_IDF_TARGET
#endif
#if CONFIG_FREERTOS_UNICORE
#define DR_WORKER_CORE 0
#else
#define DR_WORKER_CORE 1  // away from the serial interrupt and the system tasks on core 0
#endif
#define DR_WORKER_STACK (16 * 1024)
#define DR_MAX_RUNS_PSRAM 65535u  // the protocol's u16 limit, 256 KB of samples
#define DR_MAX_RUNS_INTERNAL 4096u  // 16 KB when there is no PSRAM

namespace {

dr_device_t g_dev;  // ~25 KB, static: the parser holds one maximal frame
DrTflmInfo g_tflm;
dr_status_t g_status;
char g_chip[24];
char g_extra[200];

uint64_t now_us(void *) { return (uint64_t)esp_timer_get_time(); }

void write_bytes(void *, const uint8_t *data, size_t n) { dr_serial_write(data, n); }

void refresh_status(void *, dr_status_t *st) { st->free_heap = esp_get_free_heap_size(); }

const char *chip_name(const esp_chip_info_t &ci)
{
    switch (ci.model) {
    case CHIP_ESP32: return "ESP32";
    case CHIP_ESP32S3: return "ESP32-S3";
    default: return CONFIG_IDF_TARGET;
    }
}

uint32_t psram_bytes()
{
#if CONFIG_SPIRAM
    return esp_psram_is_initialized() ? (uint32_t)esp_psram_get_size() : 0u;
#else
    return 0u;
#endif
}

void fill_status()
{
    esp_chip_info_t ci;
    uint32_t flash = 0;
    esp_chip_info(&ci);
    esp_flash_get_size(esp_flash_default_chip, &flash);
    snprintf(g_chip, sizeof g_chip, "%s", chip_name(ci));
    snprintf(g_extra, sizeof g_extra,
             "\"chip_rev\": %u, \"idf\": \"%s\", \"transport\": \"%s\", \"baud\": %d, "
             "\"rx_buffer\": %d, \"arena_psram\": %s, \"arena_margin\": %d",
             (unsigned)ci.revision, esp_get_idf_version(), dr_serial_name(), DR_BAUD, DR_RX_BUFFER,
             g_tflm.arena_in_psram ? "true" : "false", DR_ARENA_MARGIN_BYTES);
    g_status.chip = g_chip;
    g_status.board = DR_BOARD;
    g_status.extra_json = g_extra;
    g_status.cpu_mhz = esp_rom_get_cpu_ticks_per_us();
    g_status.flash_bytes = flash;
    g_status.psram_bytes = psram_bytes();
    g_status.free_heap = esp_get_free_heap_size();
    g_status.arena_bytes = (uint32_t)g_tflm.arena_bytes;
    g_status.arena_used = (uint32_t)g_tflm.arena_used;
}

// TIMED_RUN samples: PSRAM allows the protocol's full 65535 runs.
uint32_t *alloc_timings(uint32_t *max_runs)
{
    void *p = heap_caps_malloc(DR_MAX_RUNS_PSRAM * sizeof(uint32_t), MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
    *max_runs = DR_MAX_RUNS_PSRAM;
    if (!p) {
        p = heap_caps_malloc(DR_MAX_RUNS_INTERNAL * sizeof(uint32_t), MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT);
        *max_runs = p ? DR_MAX_RUNS_INTERNAL : 0u;
    }
    return static_cast<uint32_t *>(p);
}

// Writes what snprintf put into `line` (of `cap` bytes), clamped if it was truncated.
void write_line(const char *line, int n, size_t cap)
{
    if (n > 0)
        dr_serial_write((const uint8_t *)line, (size_t)n < cap ? (size_t)n : cap - 1);
}

// Human-readable lines before the BOOT frame; the host skips them as garbage.
void banner(uint32_t max_runs)
{
    char line[256];
    int n = snprintf(line, sizeof line,
                     "\r\ndigitrec fw %s proto %d | %s %lu MHz | flash %lu KB psram %lu KB | %s %d baud\r\n",
                     DR_FW_VERSION, DR_PROTO_VERSION, g_status.chip, (unsigned long)g_status.cpu_mhz,
                     (unsigned long)(g_status.flash_bytes / 1024), (unsigned long)(g_status.psram_bytes / 1024),
                     dr_serial_name(), DR_BAUD);
    write_line(line, n, sizeof line);
    n = snprintf(line, sizeof line, "model %s (%d classes %s %dx%dx%d) sha256 %.16s...\r\n", DR_MODEL_NAME,
                 DR_MODEL_CLASSES, DR_MODEL_COLOR, DR_MODEL_INPUT_H, DR_MODEL_INPUT_W, DR_MODEL_INPUT_C,
                 DR_MODEL_SHA256);
    write_line(line, n, sizeof line);
    if (g_tflm.ready)
        n = snprintf(line, sizeof line, "arena %u B in %s, used %u B | timed runs <= %lu | ready\r\n",
                     (unsigned)g_tflm.arena_bytes, g_tflm.arena_in_psram ? "PSRAM" : "internal RAM",
                     (unsigned)g_tflm.arena_used, (unsigned long)max_runs);
    else
        n = snprintf(line, sizeof line, "NOT READY: %s\r\n", g_tflm.error);
    write_line(line, n, sizeof line);
}

void worker(void *)
{
    static uint8_t rx[1024];
    uint32_t max_runs = 0;
    dr_port_t port;
    dr_model_meta_t meta;

    dr_tflm_setup(&g_tflm);
    uint32_t *timings = alloc_timings(&max_runs);
    fill_status();

    port.ctx = nullptr;
    port.invoke = dr_tflm_invoke;
    port.now_us = now_us;
    port.write = write_bytes;
    port.status = refresh_status;
    meta.name = DR_MODEL_NAME;
    meta.sha256 = DR_MODEL_SHA256;
    meta.color = DR_MODEL_COLOR;
    meta.classes = DR_MODEL_CLASSES;
    meta.in_h = DR_MODEL_INPUT_H;
    meta.in_w = DR_MODEL_INPUT_W;
    meta.in_c = DR_MODEL_INPUT_C;
    meta.in_scale = g_tflm.in_scale;  // the interpreter's own tensor parameters
    meta.in_zp = g_tflm.in_zp;
    meta.out_scale = g_tflm.out_scale;
    meta.out_zp = g_tflm.out_zp;

    dr_device_init(&g_dev, &port, &meta, esp_random(), timings, max_runs);
    dr_device_set_status(&g_dev, &g_status);
    if (!g_tflm.ready)
        dr_device_set_ready(&g_dev, 0, g_tflm.error);  // keep answering: INFO + NOT_READY

    banner(max_runs);
    esp_log_level_set("*", ESP_LOG_NONE);  // from here on the link carries frames only
    dr_device_boot(&g_dev);
    for (;;) {
        int n = dr_serial_read(rx, sizeof rx, pdMS_TO_TICKS(20));
        if (n > 0)
            dr_device_feed(&g_dev, rx, (size_t)n);
    }
}

}  // namespace

extern "C" void app_main(void)
{
    dr_serial_init();
    if (xTaskCreatePinnedToCore(worker, "digitrec", DR_WORKER_STACK, nullptr, 5, nullptr, DR_WORKER_CORE) != pdPASS) {
        static const char msg[] = "\r\nNOT READY: cannot start the digitrec task (out of memory)\r\n";
        dr_serial_write((const uint8_t *)msg, sizeof msg - 1);
    }
}
