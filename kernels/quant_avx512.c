/* AVX-512 (F, BW, VL, VNNI) dot products of quantized weight rows with q8x activations: the AVX2 kernels
 * with each u8 x s8 multiply-add pair replaced by one VNNI vpdpbusd; compiled with those flags and only
 * called after br_k_init() has seen the CPU and OS support them. */
#define BR_QDOT_VNNI
#include "quant_avx2.c"
