/* The fused kernels' register tiles in AVX2 + FMA, for CPUs without AVX-512 (included by
 * fused_step.h, which builds fused_step_isa.h's loops on them).
 *
 * The same contracts as fused_tiles_avx512.h, on the same packed layouts (rows of 64
 * floats), so the loops above them are shared. AVX2 has 16 ymm registers, so a 4 x 64
 * tile (32 accumulators) does not fit: it is passes of 4 rows x 24, 24 and 16 columns
 * (fl_tile_rxv_avx2: 12 or 8 accumulators, 3 or 2 weight vectors, 1 broadcast), each
 * pass reading its columns of W's rows; tiles of fewer rows take passes of their own
 * (fl_tile_rx64_passes_avx2). Every output element is still one in-order FMA chain over
 * k from zero, so the results are the AVX-512 tiles' bits (tested where the CPU has
 * both). */
#ifndef FASTLSTM_FUSED_TILES_AVX2_H
#define FASTLSTM_FUSED_TILES_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include "gate_math_avx2.h"

#define FL_AVX2_TILE static inline __attribute__((target("avx2,fma"), always_inline))

/* t_i[0:8 V] = sum_k a_i[k sa] W[k][0:8 V] over k < K, then on over b_i[k sa] and W's
 * next K2 rows (W rows 64 floats apart, already offset to the columns), for the rows
 * i < R <= 4. R, V (up to 8 vectors of 8) and sa (1, or 4 for the weight gradient's
 * gathered columns) are constants where this is inlined, so the loops unroll and the
 * R V accumulators stay in registers. R = 4, V = 3 uses all 16 ymm registers (12
 * accumulators, 3 weight vectors, the broadcast): 12 independent FMA chains, where the 8
 * of V = 2 (the two FMA pipes times their latency of 4) left no slack for a load or a
 * broadcast (simulated AVX2, inference 1.03-1.07x faster with 24-column passes than with
 * 16-column passes only). */
FL_AVX2_TILE void fl_tile_rxv_avx2(const int R, ptrdiff_t K, const float* const a[4],
                                   ptrdiff_t K2, const float* const b[4],
                                   const float* restrict W, const ptrdiff_t sa, const int V,
                                   float* const t[4], const int acc, const float* pf) {
    __m256 c[4][8];       /* acc: the sums continue from t's values */
    for (int i = 0; i < R; i++)
        for (int v = 0; v < V; v++)
            c[i][v] = acc ? _mm256_loadu_ps(t[i] + 8 * v) : _mm256_setzero_ps();
    for (int part = 0; part < 2; part++) {            /* a over W[0:K], b over the next K2 */
        const ptrdiff_t n = part ? K2 : K;
        const float* const* x = part ? b : a;
        const float* Wp = part ? W + K * 64 : W;
        for (ptrdiff_t k = 0; k < n; k++) {
            if (pf) {           /* pf: a line of the caller's next pass per row of k */
                _mm_prefetch((const char*)pf, _MM_HINT_T0);
                pf += 16;
            }
            __m256 w[8];
            for (int v = 0; v < V; v++) w[v] = _mm256_loadu_ps(Wp + k * 64 + 8 * v);
            for (int i = 0; i < R; i++) {
                const __m256 s = _mm256_set1_ps(x[i][k * sa]);
                for (int v = 0; v < V; v++) c[i][v] = _mm256_fmadd_ps(s, w[v], c[i][v]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int v = 0; v < V; v++) _mm256_storeu_ps(t[i] + 8 * v, c[i][v]);
}

/* An R x 64 tile (R <= 4, a constant where inlined) as passes over its columns of at
 * least 8 independent FMA chains each where the rows allow: 4 or 3 rows in passes of 24,
 * 24 and 16 columns, 2 rows in two of 32, one row in one of 64 (its weight vectors read
 * by the FMAs themselves: 17 registers would not fit). Rows past R are neither computed
 * nor written: 2 rows as a 4-row tile of copies did twice the work. a_i[k sa]: see above;
 * pf (or NULL): the first pass prefetches a line at pf + 16 k per row of k. */
FL_AVX2_TILE void fl_tile_rx64_passes_avx2(const int R, ptrdiff_t K, const float* const a[4],
                                           ptrdiff_t K2, const float* const b[4],
                                           const float* restrict W, const ptrdiff_t sa,
                                           float tile[4][64], const int acc,
                                           const float* pf) {
    /* each pass a call of its own with constant columns: in a loop over the passes, the
     * compiler kept the accumulators in memory (4-row tiles took twice as long) */
#define FL_PASS(q, V, p)                                                                  \
    {                                                                                     \
        float* const t[4] = {tile[0] + (q), tile[1] + (q), tile[2] + (q), tile[3] + (q)}; \
        fl_tile_rxv_avx2(R, K, a, K2, b, W + (q), sa, V, t, acc, p);                      \
    }
    if (R >= 3) {
        FL_PASS(0, 3, pf)
        FL_PASS(24, 3, NULL)
        FL_PASS(48, 2, NULL)
    } else if (R == 2) {
        FL_PASS(0, 4, pf)
        FL_PASS(32, 4, NULL)
    } else {
        FL_PASS(0, 8, pf)
    }
#undef FL_PASS
}

/* fl_tile_rx64_passes_avx2 (sa = 1) for a row count known at run time, 1 <= nr <= 4 */
FL_AVX2_TILE void fl_tile_nx64_passes_avx2(ptrdiff_t nr, ptrdiff_t K, const float* const a[4],
                                           ptrdiff_t K2, const float* const b[4],
                                           const float* restrict W, float tile[4][64],
                                           const int acc, const float* pf) {
    switch (nr) {
    case 1: fl_tile_rx64_passes_avx2(1, K, a, K2, b, W, 1, tile, acc, pf); break;
    case 2: fl_tile_rx64_passes_avx2(2, K, a, K2, b, W, 1, tile, acc, pf); break;
    case 3: fl_tile_rx64_passes_avx2(3, K, a, K2, b, W, 1, tile, acc, pf); break;
    default: fl_tile_rx64_passes_avx2(4, K, a, K2, b, W, 1, tile, acc, pf); break;
    }
}

/* fl_tile_nx64's contract: rows 0 .. nr - 1 (1 <= nr <= 4) of a 4 x 64 tile over a[0:K]
 * then b[0:K2] (a_i, b_i for i < nr read); tile's other rows are left as they were */
FL_AVX2_TILE void fl_tile_nx64_avx2(ptrdiff_t nr, ptrdiff_t K, const float* const a[4],
                                    ptrdiff_t K2, const float* const b[4],
                                    const float* restrict W, float tile[4][64]) {
    fl_tile_nx64_passes_avx2(nr, K, a, K2, b, W, tile, 0, NULL);
}

/* fl_tile_8xv's contract: eight rows, the first 16 V columns (V = 1 or 2) */
FL_AVX2_TILE void fl_tile_8xv_avx2(ptrdiff_t K, const float* const a[8],
                                   const float* restrict W, const int V, float tile[8][64]) {
    for (int r = 0; r < 8; r += 4)
        for (int q = 0; q < 16 * V; q += 16) {
            float* const t[4] = {tile[r] + q, tile[r + 1] + q, tile[r + 2] + q,
                                 tile[r + 3] + q};
            fl_tile_rxv_avx2(4, K, a + r, 0, a + r, W + q, 1, 2, t, 0, NULL);
        }
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
    const float* const cols[4] = {&ap[0][0], &ap[0][1], &ap[0][2], &ap[0][3]};
    fl_tile_rx64_passes_avx2(4, ks, cols, 0, cols, Wb, 4, tile, 0, NULL);
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
