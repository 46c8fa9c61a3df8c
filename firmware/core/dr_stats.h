/* Summary statistics of TIMED_RUN latencies (microseconds). Portable C99. */
#ifndef DR_STATS_H
#define DR_STATS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dr_stats {
    uint32_t median; /* odd n: middle value; even n: floor of the mean of the two middle ones */
    uint32_t max;
    uint32_t min;
    uint32_t mean; /* rounded half up: (sum + n / 2) / n, summed in 64 bits */
} dr_stats_t;

/* Sorts v[0..n) in place (heapsort: no recursion, no allocation) and fills out.
 * n == 0 gives all zeros. */
void dr_stats_compute(uint32_t *v, uint32_t n, dr_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
