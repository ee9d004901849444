/* The fused kernels' register tiles in AVX2 + FMA, for CPUs without AVX-512 (included by
 * fused_step.h, which builds fused_step_isa.h's loops on them).
 *
 * The same contracts as fused_tiles_avx512.h, on the same packed layouts (rows of 64
 * floats), so the loops above them are shared. AVX2 has 16 ymm registers, so a 4 x 64
 * tile (32 accumulators) does not fit: it is passes of 4 rows x 24, 24 and 16 columns
 * (12 or 8 accumulators, 3 or 2 weight vectors, 1 broadcast), each pass reading its
 * columns of W's rows. Every output element is still one in-order FMA chain over k from zero, so the
 * results are the AVX-512 tiles' bits (tested where the CPU has both). */
#ifndef FASTLSTM_FUSED_TILES_AVX2_H
#define FASTLSTM_FUSED_TILES_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include "gate_math_avx2.h"

#define FL_AVX2_TILE static inline __attribute__((target("avx2,fma"), always_inline))

/* t_i[0:16] = sum_k a_i[k sa] W[k][0:16] over k < K, then on over b_i[k sa] and W's next
 * K2 rows (W rows 64 floats apart, already offset to the 16 columns; sa is a constant
 * where this is inlined: 1, or 4 for the weight gradient's gathered columns). */
FL_AVX2_TILE void fl_tile_4x16_avx2(ptrdiff_t K, const float* restrict a0,
                                    const float* restrict a1, const float* restrict a2,
                                    const float* restrict a3, ptrdiff_t K2,
                                    const float* restrict b0, const float* restrict b1,
                                    const float* restrict b2, const float* restrict b3,
                                    const float* restrict W, const ptrdiff_t sa,
                                    float* t0, float* t1, float* t2, float* t3) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00;
    __m256 c20 = c00, c21 = c00, c30 = c00, c31 = c00;
#define FL_TILE_STEP(A0, A1, A2, A3, w)                                                   \
    {                                                                                     \
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps((w) + 8);              \
        __m256 s = _mm256_set1_ps(A0);                                                    \
        c00 = _mm256_fmadd_ps(s, w0, c00); c01 = _mm256_fmadd_ps(s, w1, c01);             \
        s = _mm256_set1_ps(A1);                                                           \
        c10 = _mm256_fmadd_ps(s, w0, c10); c11 = _mm256_fmadd_ps(s, w1, c11);             \
        s = _mm256_set1_ps(A2);                                                           \
        c20 = _mm256_fmadd_ps(s, w0, c20); c21 = _mm256_fmadd_ps(s, w1, c21);             \
        s = _mm256_set1_ps(A3);                                                           \
        c30 = _mm256_fmadd_ps(s, w0, c30); c31 = _mm256_fmadd_ps(s, w1, c31);             \
    }
    for (ptrdiff_t k = 0; k < K; k++)
        FL_TILE_STEP(a0[k * sa], a1[k * sa], a2[k * sa], a3[k * sa], W + k * 64)
    W += K * 64;
    for (ptrdiff_t k = 0; k < K2; k++)
        FL_TILE_STEP(b0[k * sa], b1[k * sa], b2[k * sa], b3[k * sa], W + k * 64)
#undef FL_TILE_STEP
    _mm256_storeu_ps(t0, c00); _mm256_storeu_ps(t0 + 8, c01);
    _mm256_storeu_ps(t1, c10); _mm256_storeu_ps(t1 + 8, c11);
    _mm256_storeu_ps(t2, c20); _mm256_storeu_ps(t2 + 8, c21);
    _mm256_storeu_ps(t3, c30); _mm256_storeu_ps(t3 + 8, c31);
}

/* fl_tile_4x16_avx2 over 24 columns (the same arguments): 12 accumulators, 3 weight
 * vectors and the broadcast, all 16 ymm registers (12 independent FMA chains instead of 8:
 * the two FMA pipes times their latency of 4 left no slack for a load or a broadcast at
 * 8; simulated AVX2, inference 1.03-1.07x faster than with 16-column passes only). */
FL_AVX2_TILE void fl_tile_4x24_avx2(ptrdiff_t K, const float* restrict a0,
                                    const float* restrict a1, const float* restrict a2,
                                    const float* restrict a3, ptrdiff_t K2,
                                    const float* restrict b0, const float* restrict b1,
                                    const float* restrict b2, const float* restrict b3,
                                    const float* restrict W, const ptrdiff_t sa,
                                    float* t0, float* t1, float* t2, float* t3) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00;
    __m256 c12 = c00, c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
#define FL_TILE_ROW(i, A)                                                                 \
        s = _mm256_set1_ps(A);                                                            \
        c##i##0 = _mm256_fmadd_ps(s, w0, c##i##0);                                        \
        c##i##1 = _mm256_fmadd_ps(s, w1, c##i##1);                                        \
        c##i##2 = _mm256_fmadd_ps(s, w2, c##i##2);
#define FL_TILE_STEP(A0, A1, A2, A3, w)                                                   \
    {                                                                                     \
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps((w) + 8);              \
        const __m256 w2 = _mm256_loadu_ps((w) + 16);                                      \
        __m256 s;                                                                         \
        FL_TILE_ROW(0, A0) FL_TILE_ROW(1, A1) FL_TILE_ROW(2, A2) FL_TILE_ROW(3, A3)       \
    }
    for (ptrdiff_t k = 0; k < K; k++)
        FL_TILE_STEP(a0[k * sa], a1[k * sa], a2[k * sa], a3[k * sa], W + k * 64)
    W += K * 64;
    for (ptrdiff_t k = 0; k < K2; k++)
        FL_TILE_STEP(b0[k * sa], b1[k * sa], b2[k * sa], b3[k * sa], W + k * 64)
#undef FL_TILE_STEP
#undef FL_TILE_ROW
    _mm256_storeu_ps(t0, c00); _mm256_storeu_ps(t0 + 8, c01); _mm256_storeu_ps(t0 + 16, c02);
    _mm256_storeu_ps(t1, c10); _mm256_storeu_ps(t1 + 8, c11); _mm256_storeu_ps(t1 + 16, c12);
    _mm256_storeu_ps(t2, c20); _mm256_storeu_ps(t2 + 8, c21); _mm256_storeu_ps(t2 + 16, c22);
    _mm256_storeu_ps(t3, c30); _mm256_storeu_ps(t3 + 8, c31); _mm256_storeu_ps(t3 + 16, c32);
}

/* fl_tile_4x64's contract: four rows, 64 columns, over a[0:K] then b[0:K2]: columns
 * 0-23, 24-47, 48-63 */
FL_AVX2_TILE void fl_tile_4x64_avx2(ptrdiff_t K, const float* restrict a0,
                                    const float* restrict a1, const float* restrict a2,
                                    const float* restrict a3, ptrdiff_t K2,
                                    const float* restrict b0, const float* restrict b1,
                                    const float* restrict b2, const float* restrict b3,
                                    const float* restrict W, float tile[4][64]) {
    for (int q = 0; q < 48; q += 24)
        fl_tile_4x24_avx2(K, a0, a1, a2, a3, K2, b0, b1, b2, b3, W + q, 1, tile[0] + q,
                          tile[1] + q, tile[2] + q, tile[3] + q);
    fl_tile_4x16_avx2(K, a0, a1, a2, a3, K2, b0, b1, b2, b3, W + 48, 1, tile[0] + 48,
                      tile[1] + 48, tile[2] + 48, tile[3] + 48);
}

/* fl_tile_8xv's contract: eight rows, the first 16 V columns (V = 1 or 2) */
FL_AVX2_TILE void fl_tile_8xv_avx2(ptrdiff_t K, const float* const a[8],
                                   const float* restrict W, const int V, float tile[8][64]) {
    for (int r = 0; r < 8; r += 4)
        for (int q = 0; q < 16 * V; q += 16)
            fl_tile_4x16_avx2(K, a[r], a[r + 1], a[r + 2], a[r + 3], 0, NULL, NULL, NULL,
                              NULL, W + q, 1, tile[r] + q, tile[r + 1] + q, tile[r + 2] + q,
                              tile[r + 3] + q);
}

/* fl_row_blocks's contract: one row against nb <= 4 64-column blocks (block j at
 * W + j * stride), out[j] its product with block j. One block at a time in 8 chains
 * (the two FMA pipes times their latency of 4), W's 8 vectors read from L1 / L2. */
FL_AVX2_TILE void fl_row_blocks_avx2(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                     const float* restrict b, const float* restrict W,
                                     ptrdiff_t stride, ptrdiff_t nb, float out[4][64]) {
    for (ptrdiff_t j = 0; j < nb; j++) {
        const float* Wj = W + j * stride;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        __m256 c4 = c0, c5 = c0, c6 = c0, c7 = c0;
#define FL_ROW_STEP(v, w)                                                                 \
        {                                                                                 \
            const __m256 s = _mm256_set1_ps(v);                                           \
            c0 = _mm256_fmadd_ps(s, _mm256_loadu_ps(w), c0);                              \
            c1 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 8), c1);                        \
            c2 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 16), c2);                       \
            c3 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 24), c3);                       \
            c4 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 32), c4);                       \
            c5 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 40), c5);                       \
            c6 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 48), c6);                       \
            c7 = _mm256_fmadd_ps(s, _mm256_loadu_ps((w) + 56), c7);                       \
        }
        for (ptrdiff_t k = 0; k < K; k++) FL_ROW_STEP(a[k], Wj + k * 64)
        for (ptrdiff_t k = 0; k < K2; k++) FL_ROW_STEP(b[k], Wj + (K + k) * 64)
#undef FL_ROW_STEP
        float* o = out[j];
        _mm256_storeu_ps(o, c0); _mm256_storeu_ps(o + 8, c1);
        _mm256_storeu_ps(o + 16, c2); _mm256_storeu_ps(o + 24, c3);
        _mm256_storeu_ps(o + 32, c4); _mm256_storeu_ps(o + 40, c5);
        _mm256_storeu_ps(o + 48, c6); _mm256_storeu_ps(o + 56, c7);
    }
}

/* fl_tn_tile's contract (fused_tiles_avx512.h): the 4 x 64 piece sum of the weight
 * gradient over ks <= FL_TN_KS rows, in passes of 24, 24 and 16 columns. The piece's four
 * columns of A are first gathered into a contiguous 2 KB buffer: read in place, A's rows are H or
 * I + H floats apart (2^n at the usual sizes), its 128 lines fell into a few L1 sets,
 * and the four passes re-read them from L2 (measured at (64, 25, 1024, 1024): the whole
 * backward 358 ms against 262 with OpenBLAS's weight gradients). */
FL_AVX2_TILE void fl_tn_tile_avx2(ptrdiff_t ks, const int64_t* restrict krows,
                                  const float* restrict a0, ptrdiff_t ld, ptrdiff_t o1,
                                  ptrdiff_t o2, ptrdiff_t o3, const float* restrict Wb,
                                  float tile[4][64]) {
    float ap[FL_TN_KS][4] __attribute__((aligned(16)));
    for (ptrdiff_t k = 0; k < ks; k++) {
        const float* ak = a0 + (krows ? krows[k] : k) * ld;
        ap[k][0] = ak[0]; ap[k][1] = ak[o1]; ap[k][2] = ak[o2]; ap[k][3] = ak[o3];
    }
    for (int q = 0; q < 48; q += 24)
        fl_tile_4x24_avx2(ks, &ap[0][0], &ap[0][1], &ap[0][2], &ap[0][3], 0, NULL, NULL,
                          NULL, NULL, Wb + q, 4, tile[0] + q, tile[1] + q, tile[2] + q,
                          tile[3] + q);
    fl_tile_4x16_avx2(ks, &ap[0][0], &ap[0][1], &ap[0][2], &ap[0][3], 0, NULL, NULL, NULL,
                      NULL, Wb + 48, 4, tile[0] + 48, tile[1] + 48, tile[2] + 48,
                      tile[3] + 48);
}

/* C[0:16] += P[0:16] for the weight gradient's pieces (C unaligned, P aligned) */
FL_AVX2_TILE void fl_add16_avx2(float* C, const float* P) {
    _mm256_storeu_ps(C, _mm256_add_ps(_mm256_loadu_ps(C), _mm256_load_ps(P)));
    _mm256_storeu_ps(C + 8, _mm256_add_ps(_mm256_loadu_ps(C + 8), _mm256_load_ps(P + 8)));
}

/* The forward's gate math of one row's 16-unit group: fl_fused_gates's contract. */
#define FL_GATES_CALL(P, C)                                                               \
    fl_lstm_gates16_avx2(n, S, xp, z, peep, P, forget_bias, C, clip, c_loc, h_loc, act,  \
                         cs_row, hs_row, cun_row)
__attribute__((target("avx2,fma"), noinline))
static void fl_fused_gates_avx2(ptrdiff_t n, ptrdiff_t S, const float* restrict xp,
                                const float* restrict z, const float* restrict peep,
                                int use_peep, float forget_bias, float clip,
                                float* restrict c_loc, float* restrict h_loc,
                                float* restrict act, float* restrict cs_row,
                                float* restrict hs_row, float* restrict cun_row) {
    if (use_peep && clip > 0) FL_GATES_CALL(1, 1);
    else if (use_peep) FL_GATES_CALL(1, 0);
    else if (clip > 0) FL_GATES_CALL(0, 1);
    else FL_GATES_CALL(0, 0);
}
#undef FL_GATES_CALL

/* exp (which 0), tanh (1) or sigmoid (2) of gate_math_avx2.h over an array (tests) */
__attribute__((target("avx2,fma")))
static void fl_avx2_math_array(int which, ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t k = 0; k < n; k += 8) {
        const __m256i m = fl_lanes8(n - k);
        const __m256 v = _mm256_maskload_ps(x + k, m);
        _mm256_maskstore_ps(y + k, m, which == 0 ? fl_exp8(v)
                                      : which == 1 ? fl_tanh8(v) : fl_sigmoid8(v));
    }
}

#endif
