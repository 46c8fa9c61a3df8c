#!/usr/bin/env bash
# Host-side check of the ESP-IDF glue (firmware/main/*.cc) against the real, pinned headers,
# for machines without the Xtensa toolchain. It is a syntax and type check (g++ -m32
# -fsyntax-only -Wall -Wextra -Werror), not a build: it catches wrong API names, signatures
# and types, not link or code-generation problems. `pio run` (or the GitHub workflow) builds.
#
#   tools/fw_header_check.sh IDF_DIR TFLM_DIR
#
# IDF_DIR: an ESP-IDF checkout at v5.5 (espressif32 6.12.0's framework); TFLM_DIR: an
# espressif/esp-tflite-micro checkout at v1.3.4. Needs g++ with 32-bit support (g++-multilib).
set -euo pipefail
IDF=${1:?usage: $0 IDF_DIR TFLM_DIR}/components
TFLM=${2:?usage: $0 IDF_DIR TFLM_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Stand-ins for what the IDF build generates or takes from newlib: a few sdkconfig values
# the headers test, and newlib's struct _reent (only its size is used).
mkdir -p "$WORK/sys"
printf '#pragma once\nstruct _reent { int _errno; char _pad[236]; };\n' >"$WORK/sys/reent.h"
cp "$IDF/newlib/platform_include/esp_newlib.h" "$WORK/"

sdkconfig() {  # target, extra lines
    cat <<EOF
#define CONFIG_IDF_TARGET "$1"
#define CONFIG_IDF_TARGET_${1^^} 1
#define CONFIG_IDF_TARGET_ARCH_XTENSA 1
#define CONFIG_FREERTOS_HZ 1000
#define CONFIG_FREERTOS_NUMBER_OF_CORES 2
#define CONFIG_FREERTOS_MAX_TASK_NAME_LEN 16
#define CONFIG_FREERTOS_TASK_NOTIFICATION_ARRAY_ENTRIES 1
#define CONFIG_FREERTOS_THREAD_LOCAL_STORAGE_POINTERS 1
#define CONFIG_FREERTOS_SUPPORT_STATIC_ALLOCATION 1
#define CONFIG_FREERTOS_NO_AFFINITY 0x7FFFFFFF
#define CONFIG_FREERTOS_USE_TIMERS 1
#define CONFIG_LOG_DEFAULT_LEVEL 3
#define CONFIG_LOG_MAXIMUM_LEVEL 3
#define CONFIG_LOG_VERSION 1
#define CONFIG_LOG_VERSION_1 1
#define CONFIG_LOG_TIMESTAMP_SOURCE_RTOS 1
#define CONFIG_ESP_CONSOLE_UART_NUM 0
#define CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ 240
#define CONFIG_ESP_MAIN_TASK_STACK_SIZE 3584
#define CONFIG_XTAL_FREQ 40
$2
EOF
}

check() {  # target, sdkconfig extra lines, extra compiler flags
    local target=$1 dir="$WORK/$1"
    mkdir -p "$dir"
    sdkconfig "$target" "$2" >"$dir/sdkconfig.h"
    local inc=(-I"$dir" -I"$ROOT/firmware/main" -I"$ROOT/firmware/core" -I"$ROOT/exported_models/10cls_GRAY/dr")
    local d
    for d in esp_common/include esp_system/include esp_hw_support/include esp_hw_support/include/soc \
        esp_hw_support/port/$target/include esp_hw_support/dma/include esp_hw_support/etm/include \
        esp_hw_support/ldo/include esp_hw_support/mspi_timing_tuning/include esp_timer/include heap/include \
        log/include esp_psram/include spi_flash/include soc/include soc/$target/include soc/$target/register \
        hal/include hal/$target/include hal/platform_port/include esp_rom/include esp_rom/$target/include \
        esp_rom/$target esp_rom/$target/include/$target xtensa/include xtensa/$target/include \
        xtensa/deprecated_include freertos/FreeRTOS-Kernel/include freertos/FreeRTOS-Kernel/include/freertos \
        freertos/FreeRTOS-Kernel/portable/xtensa/include freertos/FreeRTOS-Kernel/portable/xtensa/include/freertos \
        freertos/config/include freertos/config/include/freertos freertos/config/xtensa/include \
        freertos/esp_additions/include esp_driver_uart/include esp_driver_usb_serial_jtag/include \
        esp_driver_gpio/include driver/deprecated esp_pm/include esp_ringbuf/include esp_mm/include \
        esp_security/include esp_app_format/include bootloader_support/include efuse/include \
        efuse/$target/include vfs/include; do
        inc+=(-isystem "$IDF/$d")
    done
    for d in "" third_party/flatbuffers/include third_party/gemmlowp third_party/ruy third_party/kissfft; do
        inc+=(-isystem "$TFLM/$d")
    done
    inc+=(-isystem "$WORK")
    local f
    for f in main.cc dr_tflm.cc dr_serial.cc; do
        echo "check $target ${3:-} $f"
        g++ -m32 -D__XTENSA__=1 -std=gnu++2b -fsyntax-only -Wall -Wextra -Werror -DESP_PLATFORM \
            -DIDF_VER='"v5.5"' -DDR_BOARD='"check"' -DTF_LITE_STATIC_MEMORY -DESP_NN ${3:-} "${inc[@]}" \
            "$ROOT/firmware/main/$f"
    done
}

check esp32 "#define CONFIG_SPIRAM 1"
check esp32s3 "" "-DDR_SERIAL_USB_JTAG=1 -DDR_ARENA_PREFER_INTERNAL=1"
check esp32s3 "#define CONFIG_FREERTOS_UNICORE 1"
echo "firmware glue: OK against $IDF and $TFLM"
