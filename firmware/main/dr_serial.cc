// Thin wrapper over the ESP-IDF UART / USB-Serial-JTAG drivers.
#include "dr_serial.h"

#include "soc/soc_caps.h"

#if DR_SERIAL_USB_JTAG
#if !SOC_USB_SERIAL_JTAG_SUPPORTED
#error "DIGITREC_USB_JTAG=1 needs a chip with USB-Serial-JTAG (ESP32-S3), not this target"
#endif
#include "driver/usb_serial_jtag.h"
#else
#include "driver/uart.h"
#include "driver/uart_vfs.h"
#endif
#include "esp_err.h"

#if DR_SERIAL_USB_JTAG

void dr_serial_init(void)
{
    usb_serial_jtag_driver_config_t cfg = {};
    cfg.tx_buffer_size = DR_TX_BUFFER;
    cfg.rx_buffer_size = DR_RX_BUFFER;
    ESP_ERROR_CHECK(usb_serial_jtag_driver_install(&cfg));
}

int dr_serial_read(uint8_t *buf, size_t n, TickType_t wait)
{
    int k = usb_serial_jtag_read_bytes(buf, (uint32_t)n, wait);
    return k < 0 ? 0 : k;
}

void dr_serial_write(const uint8_t *data, size_t n)
{
    // Bounded wait: with no USB host attached the bytes are dropped instead of
    // blocking the benchmark loop forever.
    while (n > 0) {
        int k = usb_serial_jtag_write_bytes(data, n, pdMS_TO_TICKS(200));
        if (k <= 0)
            return;
        data += k;
        n -= (size_t)k;
    }
}

const char *dr_serial_name(void) { return "usb_serial_jtag"; }

#else  // UART0: the console UART, wired to the board's USB-serial bridge

static const uart_port_t kPort = UART_NUM_0;

void dr_serial_init(void)
{
    uart_config_t cfg = {};
    cfg.baud_rate = DR_BAUD;
    cfg.data_bits = UART_DATA_8_BITS;
    cfg.parity = UART_PARITY_DISABLE;
    cfg.stop_bits = UART_STOP_BITS_1;
    cfg.flow_ctrl = UART_HW_FLOWCTRL_DISABLE;
    cfg.source_clk = UART_SCLK_DEFAULT;
    // Called from app_main on core 0, so the RX interrupt is serviced on core 0 while
    // inference runs on core 1 (see main.cc) and does not perturb its timing.
    ESP_ERROR_CHECK(uart_driver_install(kPort, DR_RX_BUFFER, DR_TX_BUFFER, 0, nullptr, 0));
    ESP_ERROR_CHECK(uart_param_config(kPort, &cfg));
    // stdio (TFLM's DebugLog, printf) would otherwise write the FIFO directly and could
    // land inside a frame; through the driver each write is whole, between frames.
    uart_vfs_dev_use_driver(kPort);
}

int dr_serial_read(uint8_t *buf, size_t n, TickType_t wait)
{
    // uart_read_bytes returns only once it has `n` bytes or a wait times out, so ask
    // for what is buffered (or one byte, waiting for it): a frame is parsed as it lands.
    size_t avail = 0;
    uart_get_buffered_data_len(kPort, &avail);
    size_t want = avail == 0 ? 1 : (avail < n ? avail : n);
    int k = uart_read_bytes(kPort, buf, (uint32_t)want, avail == 0 ? wait : 0);
    return k < 0 ? 0 : k;
}

void dr_serial_write(const uint8_t *data, size_t n)
{
    uart_write_bytes(kPort, data, n);  // copies into the TX ring buffer; blocks only when full
}

const char *dr_serial_name(void) { return "uart0"; }

#endif
