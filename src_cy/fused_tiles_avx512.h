/* The fused kernels' register tiles in AVX-512 (included by fused_step.h, which builds
 * fused_step_isa.h's loops on them; fused_tiles_avx2.h holds the same contracts for CPUs
 * without AVX-512). */
#ifndef FASTLSTM_FUSED_TILES_AVX512_H
#define FASTLSTM_FUSED_TILES_AVX512_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include "gate_math_avx512.h"

/* The register tile both kernels use: tile[i][0:64] = sum_k a_i[k] * W[k][0:64] for the
 * four rows a_0 .. a_3, accumulated in 16 zmm registers over k = 0 .. K-1 in order (so
 * a row's result does not depend on the other rows), then, when K2 > 0, on over the
 * rows b_0 .. b_3 with the next K2 rows of W: the forward's [x_t, h_{t-1}] [W_x; W_h]
 * as one sum, TensorFlow 1.x's own order. W holds K + K2 rows of 64 floats. */
/* Sixteen accumulators P00 .. P33 (row i, 16-column vector v: P##iv) into a 4 x 64
 * float array T (64-byte aligned). */
#define FL_STORE_4X64(T, P)                                                               \
    _mm512_store_ps(T[0], P##00); _mm512_store_ps(T[0] + 16, P##01);                      \
    _mm512_store_ps(T[0] + 32, P##02); _mm512_store_ps(T[0] + 48, P##03);                 \
    _mm512_store_ps(T[1], P##10); _mm512_store_ps(T[1] + 16, P##11);                      \
    _mm512_store_ps(T[1] + 32, P##12); _mm512_store_ps(T[1] + 48, P##13);                 \
    _mm512_store_ps(T[2], P##20); _mm512_store_ps(T[2] + 16, P##21);                      \
    _mm512_store_ps(T[2] + 32, P##22); _mm512_store_ps(T[2] + 48, P##23);                 \
    _mm512_store_ps(T[3], P##30); _mm512_store_ps(T[3] + 16, P##31);                      \
    _mm512_store_ps(T[3] + 32, P##32); _mm512_store_ps(T[3] + 48, P##33);

#define FL_TILE_STEP(A0, A1, A2, A3, w)                                                   \
    {                                                                                     \
        __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);                     \
        __m512 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);               \
        __m512 b = _mm512_set1_ps(A0);                                                    \
        a00 = _mm512_fmadd_ps(b, w0, a00); a01 = _mm512_fmadd_ps(b, w1, a01);             \
        a02 = _mm512_fmadd_ps(b, w2, a02); a03 = _mm512_fmadd_ps(b, w3, a03);             \
        b = _mm512_set1_ps(A1);                                                           \
        a10 = _mm512_fmadd_ps(b, w0, a10); a11 = _mm512_fmadd_ps(b, w1, a11);             \
        a12 = _mm512_fmadd_ps(b, w2, a12); a13 = _mm512_fmadd_ps(b, w3, a13);             \
        b = _mm512_set1_ps(A2);                                                           \
        a20 = _mm512_fmadd_ps(b, w0, a20); a21 = _mm512_fmadd_ps(b, w1, a21);             \
        a22 = _mm512_fmadd_ps(b, w2, a22); a23 = _mm512_fmadd_ps(b, w3, a23);             \
        b = _mm512_set1_ps(A3);                                                           \
        a30 = _mm512_fmadd_ps(b, w0, a30); a31 = _mm512_fmadd_ps(b, w1, a31);             \
        a32 = _mm512_fmadd_ps(b, w2, a32); a33 = _mm512_fmadd_ps(b, w3, a33);             \
    }

/* fl_tile_4x64_acc: the same sums continued from the values in tile (acc != 0) instead
 * of from zero: a sum in passes over k gives the bits of one pass (each element is one
 * FMA chain; the stored partial sums are exact). */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_4x64_acc_avx512(ptrdiff_t K, const float* restrict a0,
                                const float* restrict a1, const float* restrict a2,
                                const float* restrict a3, ptrdiff_t K2,
                                const float* restrict b0, const float* restrict b1,
                                const float* restrict b2, const float* restrict b3,
                                const float* restrict W, float tile[4][64], const int acc) {
#define FL_TILE_INIT(i, v) (acc ? _mm512_load_ps(tile[i] + 16 * v) : _mm512_setzero_ps())
    __m512 a00 = FL_TILE_INIT(0, 0), a01 = FL_TILE_INIT(0, 1);
    __m512 a02 = FL_TILE_INIT(0, 2), a03 = FL_TILE_INIT(0, 3);
    __m512 a10 = FL_TILE_INIT(1, 0), a11 = FL_TILE_INIT(1, 1);
    __m512 a12 = FL_TILE_INIT(1, 2), a13 = FL_TILE_INIT(1, 3);
    __m512 a20 = FL_TILE_INIT(2, 0), a21 = FL_TILE_INIT(2, 1);
    __m512 a22 = FL_TILE_INIT(2, 2), a23 = FL_TILE_INIT(2, 3);
    __m512 a30 = FL_TILE_INIT(3, 0), a31 = FL_TILE_INIT(3, 1);
    __m512 a32 = FL_TILE_INIT(3, 2), a33 = FL_TILE_INIT(3, 3);
#undef FL_TILE_INIT
    for (ptrdiff_t k = 0; k < K; k++)
        FL_TILE_STEP(a0[k], a1[k], a2[k], a3[k], W + k * 64)
    W += K * 64;
    for (ptrdiff_t k = 0; k < K2; k++)
        FL_TILE_STEP(b0[k], b1[k], b2[k], b3[k], W + k * 64)
    FL_STORE_4X64(tile, a)
}
#undef FL_TILE_STEP

__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_4x64_avx512(ptrdiff_t K, const float* restrict a0,
                                const float* restrict a1, const float* restrict a2,
                                const float* restrict a3, ptrdiff_t K2,
                                const float* restrict b0, const float* restrict b1,
                                const float* restrict b2, const float* restrict b3,
                                const float* restrict W, float tile[4][64]) {
    fl_tile_4x64_acc_avx512(K, a0, a1, a2, a3, K2, b0, b1, b2, b3, W, tile, 0);
}

/* fl_tile_nx64's contract (fused_tiles_avx2.h) as a 4-row tile: rows past nr are computed
 * from a[i], b[i] as given (the callers repeat row nr - 1), never read by the callers */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_nx64_avx512(ptrdiff_t nr, ptrdiff_t K, const float* const a[4],
                                       ptrdiff_t K2, const float* const b[4],
                                       const float* restrict W, float tile[4][64]) {
    (void)nr;
    fl_tile_4x64_avx512(K, a[0], a[1], a[2], a[3], K2, b[0], b[1], b[2], b[3], W, tile);
}

/* fl_tile_4x64_acc_avx512 for six rows a_0 .. a_5 (b_0 .. b_5): 24 accumulators, so each
 * weight vector loaded feeds six FMAs instead of four. Each element is the same in-order
 * FMA chain over k, so the bits do not depend on the rows per tile. Iteration k also
 * prefetches the line at pf + 16 k toward L1 (the caller's next pass of weights). */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_6x64_acc_avx512(ptrdiff_t K, const float* const a[6],
                                           ptrdiff_t K2, const float* const b[6],
                                           const float* restrict W, float tile[][64],
                                           const int acc, const float* pf) {
    __m512 c[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            c[i][v] = acc ? _mm512_load_ps(tile[i] + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 1
    for (int part = 0; part < 2; part++) {            /* a over W[0:K], b over the next K2 */
        const ptrdiff_t n = part ? K2 : K;
        const float* const* x = part ? b : a;
        const float* Wk = part ? W + K * 64 : W;
        const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5];
        for (ptrdiff_t k = 0; k < n; k++, Wk += 64, pf += 16) {
            _mm_prefetch((const char*)pf, _MM_HINT_T0);   /* to L2 instead: no faster */
            const __m512 w0 = _mm512_loadu_ps(Wk), w1 = _mm512_loadu_ps(Wk + 16);
            const __m512 w2 = _mm512_loadu_ps(Wk + 32), w3 = _mm512_loadu_ps(Wk + 48);
#define FL_ROW6(i, xi)                                                                    \
            {                                                                             \
                const __m512 s = _mm512_set1_ps(xi[k]);                                   \
                c[i][0] = _mm512_fmadd_ps(s, w0, c[i][0]);                                \
                c[i][1] = _mm512_fmadd_ps(s, w1, c[i][1]);                                \
                c[i][2] = _mm512_fmadd_ps(s, w2, c[i][2]);                                \
                c[i][3] = _mm512_fmadd_ps(s, w3, c[i][3]);                                \
            }
            FL_ROW6(0, x0) FL_ROW6(1, x1) FL_ROW6(2, x2)
            FL_ROW6(3, x3) FL_ROW6(4, x4) FL_ROW6(5, x5)
#undef FL_ROW6
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm512_store_ps(tile[i] + 16 * v, c[i][v]);
}

/* One row against NB <= 4 64-column blocks of W at once (block j at W + j * stride):
 * out[j] = the row's product with block j, over a[0:K] then b[0:K2] as in fl_tile_4x64_avx512.
 * Each output element is the same sequential FMA chain as there, so the bits are the
 * same; but the 4-row tile spent 3/4 of its FMAs on copies of a lone row, and its 4
 * chains per block waited on FMA latency. Here 4 NB independent chains (16 at NB = 4)
 * keep both FMA pipes busy (a batch of 1, or the last sequence of a chunk). NB is a
 * constant at every call (fl_row_blocks_avx512): a slice of two groups (B = 1, H = 64 on two
 * cores) computed two copies of its blocks as padding when this always ran four. */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_row_nblocks_avx512(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                  const float* restrict b, const float* restrict W,
                                  ptrdiff_t stride, const int NB, float out[4][64]) {
    const float* W0 = W;
    const float* W1 = W + (NB > 1 ? 1 : 0) * stride;
    const float* W2 = W + (NB > 2 ? 2 : 0) * stride;
    const float* W3 = W + (NB > 3 ? 3 : 0) * stride;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
#define FL_ROW_BLOCK(j, Wj, s, o)                                                         \
    if (NB > j) {                                                                         \
        c##j##0 = _mm512_fmadd_ps(s, _mm512_loadu_ps(Wj + o), c##j##0);                   \
        c##j##1 = _mm512_fmadd_ps(s, _mm512_loadu_ps(Wj + o + 16), c##j##1);              \
        c##j##2 = _mm512_fmadd_ps(s, _mm512_loadu_ps(Wj + o + 32), c##j##2);              \
        c##j##3 = _mm512_fmadd_ps(s, _mm512_loadu_ps(Wj + o + 48), c##j##3);              \
    }
#define FL_ROW_STEP(v, k)                                                                 \
    {                                                                                     \
        const __m512 s = _mm512_set1_ps(v);                                               \
        const ptrdiff_t o = (k) * 64;                                                     \
        FL_ROW_BLOCK(0, W0, s, o) FL_ROW_BLOCK(1, W1, s, o)                               \
        FL_ROW_BLOCK(2, W2, s, o) FL_ROW_BLOCK(3, W3, s, o)                               \
    }
    for (ptrdiff_t k = 0; k < K; k++) FL_ROW_STEP(a[k], k)
    for (ptrdiff_t k = 0; k < K2; k++) FL_ROW_STEP(b[k], K + k)
#undef FL_ROW_STEP
#undef FL_ROW_BLOCK
    FL_STORE_4X64(out, c)                 /* blocks >= NB: zeros, never read */
}

/* fl_row_nblocks_avx512 for a run-time nb (1 .. 4), each count its own specialised loop. */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_row_blocks_avx512(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                 const float* restrict b, const float* restrict W,
                                 ptrdiff_t stride, ptrdiff_t nb, float out[4][64]) {
    switch (nb) {
    case 1: fl_row_nblocks_avx512(K, a, K2, b, W, stride, 1, out); break;
    case 2: fl_row_nblocks_avx512(K, a, K2, b, W, stride, 2, out); break;
    case 3: fl_row_nblocks_avx512(K, a, K2, b, W, stride, 3, out); break;
    default: fl_row_nblocks_avx512(K, a, K2, b, W, stride, 4, out); break;
    }
}

/* The narrow tile: tile[i][0:16 V] = sum_k a_i[k] * W[k][0:16 V] for eight rows a_0 ..
 * a_7 and V (1 or 2) 16-column vectors, 8 V accumulators, each the same in-order FMA
 * chain over k as in fl_tile_4x64_avx512 (so the same bits). For a last block of W's packed
 * columns 32 or fewer wide: the 4 x 64 tile would compute 64 columns there (I = 28:
 * 56% of its FMAs on the zero padding; measured at the seed's size, 472 us against 396
 * for OpenBLAS and ~250 for this). W rows stay 64 floats apart (the packed layout). */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_8xv_avx512(ptrdiff_t K, const float* const a[8],
                               const float* restrict W, const int V, float tile[8][64]) {
    __m512 c0[8], c1[8];
    for (int i = 0; i < 8; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (ptrdiff_t k = 0; k < K; k++) {
        const __m512 w0 = _mm512_loadu_ps(W + k * 64);
        const __m512 w1 = V > 1 ? _mm512_loadu_ps(W + k * 64 + 16) : w0;
        for (int i = 0; i < 8; i++) {
            const __m512 s = _mm512_set1_ps(a[i][k]);
            c0[i] = _mm512_fmadd_ps(s, w0, c0[i]);
            if (V > 1) c1[i] = _mm512_fmadd_ps(s, w1, c1[i]);
        }
    }
    for (int i = 0; i < 8; i++) {
        _mm512_store_ps(tile[i], c0[i]);
        if (V > 1) _mm512_store_ps(tile[i] + 16, c1[i]);
    }
}

/* The weight gradient's piece (fl_gemm_tn_f32): tile[i][0:64] = sum over the ks rows k
 * of A^T's row i (a0[k * ld + o_i], o_0 = 0; row k = krows[k] where krows is not NULL)
 * times Wb[k][0:64] (the piece's copy of B's block, 64-byte aligned), each element an
 * in-order FMA chain from zero in 16 registers. */
#define FL_TN_STEP(r, a)                                                                  \
    {                                                                                     \
        const __m512 s = _mm512_set1_ps(a);                                               \
        t##r##0 = _mm512_fmadd_ps(s, w0, t##r##0); t##r##1 = _mm512_fmadd_ps(s, w1, t##r##1); \
        t##r##2 = _mm512_fmadd_ps(s, w2, t##r##2); t##r##3 = _mm512_fmadd_ps(s, w3, t##r##3); \
    }
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tn_tile_avx512(ptrdiff_t ks, const int64_t* restrict krows,
                                     const float* restrict a0, ptrdiff_t ld, ptrdiff_t o1,
                                     ptrdiff_t o2, ptrdiff_t o3, const float* restrict Wb,
                                     float tile[4][64]) {
    __m512 t00, t01, t02, t03, t10, t11, t12, t13;
    __m512 t20, t21, t22, t23, t30, t31, t32, t33;
    t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = _mm512_setzero_ps();
    t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = t00;
    for (ptrdiff_t k = 0; k < ks; k++) {
        const float* ak = a0 + (krows ? krows[k] : k) * ld;
        const float* w = Wb + k * 64;
        const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
        const __m512 w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
        FL_TN_STEP(0, ak[0]) FL_TN_STEP(1, ak[o1])
        FL_TN_STEP(2, ak[o2]) FL_TN_STEP(3, ak[o3])
    }
    FL_STORE_4X64(tile, t)
}
#undef FL_TN_STEP

/* C[0:16] += P[0:16] for the weight gradient's pieces (C unaligned, P aligned) */
__attribute__((target("avx512f"), always_inline))
static inline void fl_add16_avx512(float* C, const float* P) {
    _mm512_storeu_ps(C, _mm512_add_ps(_mm512_loadu_ps(C), _mm512_load_ps(P)));
}

/* exp (which 0), tanh (1) or sigmoid (2) of gate_math_avx512.h over an array, for
 * tests/test_gate_math.py. */
__attribute__((target("avx512f,avx512dq,fma")))
static void fl_avx512_math_array(int which, ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t k = 0; k < n; k += 16) {
        const __mmask16 m = (__mmask16)(n - k >= 16 ? 0xFFFF : (1u << (n - k)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
        _mm512_mask_storeu_ps(y + k, m, which == 0 ? fl_exp16(v)
                                        : which == 1 ? fl_tanh16(v) : fl_sigmoid16(v));
    }
}

/* The gate math of one row's 16-unit group for the fused step (n <= 16 units):
 * fl_lstm_gates16 (gate_math_avx512.h), the formulas of fl_lstm_fwd_row_f32 in AVX-512
 * intrinsics, 78 cycles per group where GCC's vectorization of the portable body took
 * 112 (measured alone, in L1). Not inlined: each inlined copy may be scheduled and
 * contracted differently, and a row must get the same bits from the one-row kernel and
 * from the 4-row tiles (tested). */
#define FL_GATES_CALL(P, C)                                                               \
    fl_lstm_gates16(n, S, xp, z, peep, P, forget_bias, C, clip, c_loc, h_loc, act,       \
                    cs_row, hs_row, cun_row)
FL_AVX512_TARGET __attribute__((noinline))
static void fl_fused_gates_avx512(ptrdiff_t n, ptrdiff_t S, const float* restrict xp,
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

#endif
