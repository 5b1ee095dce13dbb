/* AVX-512 (F, BW, VL, VNNI) dot products of quantized weight rows with q8x activations; compiled with
 * those flags and only called after br_k_init() has seen the CPU and OS support them. */
#include <immintrin.h>

#include "quant.h"

br_qdot_fn br_qdot_avx512(br_wtype wt) {
    (void)wt;
    return NULL;
}
