#include "dr_stats.h"

static void sift_down(uint32_t *v, uint32_t root, uint32_t n)
{
    for (;;) {
        uint32_t child = 2u * root + 1u, tmp;
        if (child >= n)
            return;
        if (child + 1u < n && v[child + 1u] > v[child])
            child++;
        if (v[root] >= v[child])
            return;
        tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

static void heapsort_u32(uint32_t *v, uint32_t n)
{
    uint32_t i, tmp;
    for (i = n / 2u; i-- > 0u;)
        sift_down(v, i, n);
    for (i = n; i-- > 1u;) {
        tmp = v[0];
        v[0] = v[i];
        v[i] = tmp;
        sift_down(v, 0u, i);
    }
}

void dr_stats_compute(uint32_t *v, uint32_t n, dr_stats_t *out)
{
    uint64_t sum = 0;
    uint32_t i;
    out->median = out->max = out->min = out->mean = 0;
    if (n == 0u)
        return;
    heapsort_u32(v, n);
    for (i = 0; i < n; i++)
        sum += v[i];
    out->min = v[0];
    out->max = v[n - 1u];
    out->median = (n & 1u) ? v[n / 2u]
                           : (uint32_t)(((uint64_t)v[n / 2u - 1u] + v[n / 2u]) / 2u);
    out->mean = (uint32_t)((sum + n / 2u) / n);
}
