/* CRCs of the digitrec serial protocol (docs/protocol.md). Portable C99. */
#ifndef DR_CRC_H
#define DR_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-8, polynomial 0x07, init 0x00, no reflection, no final xor (header check). */
uint8_t dr_crc8(const uint8_t *data, size_t n);

/* CRC-32 IEEE 802.3, chained like zlib.crc32: dr_crc32(0, buf, n) == zlib.crc32(buf);
 * dr_crc32(dr_crc32(0, a, na), b, nb) == CRC of a||b. */
uint32_t dr_crc32(uint32_t crc, const uint8_t *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
