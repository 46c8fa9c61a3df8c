// Byte transport of the serial protocol: UART0 (default) or, with
// -DDR_SERIAL_USB_JTAG=1 on an ESP32-S3, the chip's USB-Serial-JTAG port.
#pragma once

#include <cstddef>
#include <cstdint>

#include "freertos/FreeRTOS.h"

#ifndef DR_BAUD
#define DR_BAUD 921600  // docs/firmware.md: 92 KB/s payload ceiling, CP2102/CH340-safe
#endif
#ifndef DR_RX_BUFFER
#define DR_RX_BUFFER (32 * 1024)  // bytes the host may have in flight beyond the parser's frame
#endif
#define DR_TX_BUFFER 4096

void dr_serial_init(void);
// Up to n bytes, waiting at most `wait` ticks; returns the count (0 on timeout).
int dr_serial_read(uint8_t *buf, size_t n, TickType_t wait);
// Queues all n bytes (one frame per call, so frames are never interleaved).
void dr_serial_write(const uint8_t *data, size_t n);
const char *dr_serial_name(void);
