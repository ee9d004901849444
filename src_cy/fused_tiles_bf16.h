/* The fused kernels' register tiles with bfloat16 products (AVX512-BF16, vdpbf16ps):
 * the contracts of fused_tiles_avx512.h, on weights packed as bfloat16 pairs, for
 * compute_dtype="bfloat16" (float32 state and gate math, products of bfloat16 operands
 * summed in float32).
 *
 * The packed layout is fused_step.h's with two rows of k folded into one: row m of a
 * segment of K rows holds 64 dwords, dword j = (bf16(W[2m][j]), bf16(W[2m + 1][j])) in
 * its (low, high) halves, zero past K. vdpbf16ps adds both products of a pair to the
 * float32 accumulator (each product of two bfloat16 values is exact in float32), so a
 * tile does half the instructions of the float32 one and reads half the bytes. The
 * activations (h, x, dz) are float32; a tile rounds its rows to bfloat16 pairs once, on
 * entry, into a buffer on its stack. Rounding: to nearest even (vcvtneps2bf16), as the
 * NumPy emulation (fastlstm/_bfloat16.py) and the packers. */
#ifndef FASTLSTM_FUSED_TILES_BF16_H
#define FASTLSTM_FUSED_TILES_BF16_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#define FL_BF16_TARGET                                                                    \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma"),             \
                   min_vector_width(512)))
#else
#define FL_BF16_TARGET                                                                    \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma,"              \
                          "prefer-vector-width=512")))
#endif

/* Packed rows of a segment of K rows of k: two per dword row. */
#define FL_BF16_ROWS(K) (((K) + 1) / 2)

/* a[0:K] rounded to bfloat16, in pairs: p[m] = (a[2m], a[2m + 1]), zero past K. p holds
 * FL_BF16_ROWS(K) dwords plus 8 of slack (whole 256-bit stores). */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_bf16_row_pairs(ptrdiff_t K, const float* restrict a,
                                     uint32_t* restrict p) {
    for (ptrdiff_t k = 0; k < K; k += 16) {
        const __mmask16 m = (__mmask16)(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1u);
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a + k));
        _mm256_storeu_si256((__m256i*)(p + k / 2), (__m256i)v);
    }
}

#define FL_BF16_DOT(acc, s, w) acc = _mm512_dpbf16_ps(acc, (__m512bh)(s), (__m512bh)(w))

/* fl_tile_4x64 with bfloat16 products: tile[i][0:64] = sum over the pairs of [a_i, b_i]
 * (a: K, b: K2, each its own segment of W's pair rows) of both products, in order. */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_tile_4x64_bf16(ptrdiff_t K, const float* restrict a0,
                                     const float* restrict a1, const float* restrict a2,
                                     const float* restrict a3, ptrdiff_t K2,
                                     const float* restrict b0, const float* restrict b1,
                                     const float* restrict b2, const float* restrict b3,
                                     const float* restrict Wf, float tile[4][64]) {
    const ptrdiff_t KP = FL_BF16_ROWS(K), KP2 = FL_BF16_ROWS(K2), M = KP + KP2;
    const ptrdiff_t ld = M + 8;
    uint32_t p[4 * ld] __attribute__((aligned(64)));
    const float* a[4] = {a0, a1, a2, a3};
    const float* b[4] = {b0, b1, b2, b3};
    for (int i = 0; i < 4; i++) {
        if (K) fl_bf16_row_pairs(K, a[i], p + i * ld);
        if (K2) fl_bf16_row_pairs(K2, b[i], p + i * ld + KP);
    }
    const uint32_t* W = (const uint32_t*)Wf;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    for (ptrdiff_t m = 0; m < M; m++) {
        const uint32_t* w = W + m * 64;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 16);
        const __m512i w2 = _mm512_loadu_si512(w + 32), w3 = _mm512_loadu_si512(w + 48);
        __m512i s = _mm512_set1_epi32((int)p[m]);
        FL_BF16_DOT(c00, s, w0); FL_BF16_DOT(c01, s, w1);
        FL_BF16_DOT(c02, s, w2); FL_BF16_DOT(c03, s, w3);
        s = _mm512_set1_epi32((int)p[ld + m]);
        FL_BF16_DOT(c10, s, w0); FL_BF16_DOT(c11, s, w1);
        FL_BF16_DOT(c12, s, w2); FL_BF16_DOT(c13, s, w3);
        s = _mm512_set1_epi32((int)p[2 * ld + m]);
        FL_BF16_DOT(c20, s, w0); FL_BF16_DOT(c21, s, w1);
        FL_BF16_DOT(c22, s, w2); FL_BF16_DOT(c23, s, w3);
        s = _mm512_set1_epi32((int)p[3 * ld + m]);
        FL_BF16_DOT(c30, s, w0); FL_BF16_DOT(c31, s, w1);
        FL_BF16_DOT(c32, s, w2); FL_BF16_DOT(c33, s, w3);
    }
    FL_STORE_4X64(tile, c)
}

/* fl_tile_nx64's contract (fused_tiles_avx2.h) as a 4-row tile: rows past nr are computed
 * from a[i], b[i] as given (the callers repeat row nr - 1), never read by the callers */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_tile_nx64_bf16(ptrdiff_t nr, ptrdiff_t K, const float* const a[4],
                                     ptrdiff_t K2, const float* const b[4],
                                     const float* restrict Wf, float tile[4][64]) {
    (void)nr;
    fl_tile_4x64_bf16(K, a[0], a[1], a[2], a[3], K2, b[0], b[1], b[2], b[3], Wf, tile);
}

/* fl_row_blocks with bfloat16 products: one row against nb <= 4 64-column blocks of the
 * pair rows (block j at Wf + j * stride floats), 4 nb independent chains. */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_row_nblocks_bf16(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                       const float* restrict b, const float* restrict Wf,
                                       ptrdiff_t stride, const int NB, float out[4][64]) {
    const ptrdiff_t KP = FL_BF16_ROWS(K), M = KP + FL_BF16_ROWS(K2);
    uint32_t p[M + 8] __attribute__((aligned(64)));
    if (K) fl_bf16_row_pairs(K, a, p);
    if (K2) fl_bf16_row_pairs(K2, b, p + KP);
    const uint32_t* W0 = (const uint32_t*)Wf;
    const uint32_t* W1 = W0 + (NB > 1 ? 1 : 0) * stride;
    const uint32_t* W2 = W0 + (NB > 2 ? 2 : 0) * stride;
    const uint32_t* W3 = W0 + (NB > 3 ? 3 : 0) * stride;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
#define FL_ROW_BLOCK_BF16(j, Wj)                                                          \
    if (NB > j) {                                                                         \
        FL_BF16_DOT(c##j##0, s, _mm512_loadu_si512(Wj + o));                              \
        FL_BF16_DOT(c##j##1, s, _mm512_loadu_si512(Wj + o + 16));                         \
        FL_BF16_DOT(c##j##2, s, _mm512_loadu_si512(Wj + o + 32));                         \
        FL_BF16_DOT(c##j##3, s, _mm512_loadu_si512(Wj + o + 48));                         \
    }
    for (ptrdiff_t m = 0; m < M; m++) {
        const __m512i s = _mm512_set1_epi32((int)p[m]);
        const ptrdiff_t o = m * 64;
        FL_ROW_BLOCK_BF16(0, W0) FL_ROW_BLOCK_BF16(1, W1)
        FL_ROW_BLOCK_BF16(2, W2) FL_ROW_BLOCK_BF16(3, W3)
    }
#undef FL_ROW_BLOCK_BF16
    FL_STORE_4X64(out, c)
}

FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_row_blocks_bf16(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                      const float* restrict b, const float* restrict W,
                                      ptrdiff_t stride, ptrdiff_t nb, float out[4][64]) {
    switch (nb) {
    case 1: fl_row_nblocks_bf16(K, a, K2, b, W, stride, 1, out); break;
    case 2: fl_row_nblocks_bf16(K, a, K2, b, W, stride, 2, out); break;
    case 3: fl_row_nblocks_bf16(K, a, K2, b, W, stride, 3, out); break;
    default: fl_row_nblocks_bf16(K, a, K2, b, W, stride, 4, out); break;
    }
}

/* fl_tile_8xv with bfloat16 products: eight rows, V (1 or 2) 16-column vectors. */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_tile_8xv_bf16(ptrdiff_t K, const float* const a[8],
                                    const float* restrict Wf, const int V,
                                    float tile[8][64]) {
    const ptrdiff_t M = FL_BF16_ROWS(K), ld = M + 8;
    uint32_t p[8 * ld] __attribute__((aligned(64)));
    for (int i = 0; i < 8; i++) fl_bf16_row_pairs(K, a[i], p + i * ld);
    const uint32_t* W = (const uint32_t*)Wf;
    __m512 c0[8], c1[8];
    for (int i = 0; i < 8; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (ptrdiff_t m = 0; m < M; m++) {
        const __m512i w0 = _mm512_loadu_si512(W + m * 64);
        const __m512i w1 = V > 1 ? _mm512_loadu_si512(W + m * 64 + 16) : w0;
        for (int i = 0; i < 8; i++) {
            const __m512i s = _mm512_set1_epi32((int)p[i * ld + m]);
            FL_BF16_DOT(c0[i], s, w0);
            if (V > 1) FL_BF16_DOT(c1[i], s, w1);
        }
    }
    for (int i = 0; i < 8; i++) {
        _mm512_store_ps(tile[i], c0[i]);
        if (V > 1) _mm512_store_ps(tile[i] + 16, c1[i]);
    }
}

/* The gate math is float32 whatever the products: the AVX-512 function itself. */
#define fl_fused_gates_bf16 fl_fused_gates_avx512

/* The packers: fl_pack_fused_rect_f32 and fl_pack_fused_t_f32 (fused_step.h) in pair
 * rows of bfloat16, rounded by vcvtneps2bf16. [W_x; W_h] (I + H rows of 4H) ->
 * groups of 16 units, group g = FL_BF16_ROWS(I) + FL_BF16_ROWS(H) pair rows of 64
 * dwords, each segment padded to an even count; groups g_lo .. g_hi - 1 only. */
FL_BF16_TARGET __attribute__((always_inline))
static inline __m512i fl_bf16_pairs16(__m512 lo, __m512 hi) {
    const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
    const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
    return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

FL_BF16_TARGET
static void fl_pack_fused_bf16(ptrdiff_t I, const float* Wx, ptrdiff_t H, const float* Wh,
                               uint32_t* out, ptrdiff_t g_lo, ptrdiff_t g_hi) {
    /* pair row by pair row of W (its rows read in order, this thread's units of them),
     * each to its groups: group by group, every 64-byte read was on another page of W
     * (1.25 ms for H = 1024 on 2 threads, against 0.46 for the same bytes in order) */
    const ptrdiff_t KPX = FL_BF16_ROWS(I), KP = KPX + FL_BF16_ROWS(H), G = 4 * H;
    for (ptrdiff_t m = 0; m < KP; m++) {
        const int in_x = m < KPX;
        const ptrdiff_t k = in_x ? 2 * m : 2 * (m - KPX), K = in_x ? I : H;
        const float* row = (in_x ? Wx : Wh) + k * G;
        for (ptrdiff_t g = g_lo; g < g_hi; g++) {
            const ptrdiff_t u0 = 16 * g, n = H - u0 < 16 ? H - u0 : 16;
            const __mmask16 mask = (__mmask16)((1u << n) - 1u);
            const float* W = row + u0;
            uint32_t* dst = out + (g * KP + m) * 64;
            for (ptrdiff_t gate = 0; gate < 4; gate++) {
                const __m512 lo = _mm512_maskz_loadu_ps(mask, W + gate * H);
                const __m512 hi = k + 1 < K ? _mm512_maskz_loadu_ps(mask, W + G + gate * H)
                                            : _mm512_setzero_ps();
                _mm512_storeu_si512(dst + gate * 16, fl_bf16_pairs16(lo, hi));
            }
        }
    }
}

/* W (n, K) -> W^T in blocks of 64 of its n rows, block c = FL_BF16_ROWS(K) pair rows of
 * 64 dwords: (W[64c + j, 2m], W[64c + j, 2m + 1]) at pair row m, column j (zero past n,
 * and past K); blocks c_lo .. c_hi - 1. */
FL_BF16_TARGET
static void fl_pack_fused_t_bf16(ptrdiff_t n, ptrdiff_t K, const float* W, uint32_t* out,
                                 ptrdiff_t c_lo, ptrdiff_t c_hi) {
    const ptrdiff_t KP = FL_BF16_ROWS(K);
    uint32_t pairs[16] __attribute__((aligned(64)));
    for (ptrdiff_t c = c_lo; c < c_hi; c++) {
        uint32_t* block = out + c * KP * 64;
        for (ptrdiff_t j = 0; j < 64; j++) {
            const ptrdiff_t r = 64 * c + j;
            if (r >= n) {
                for (ptrdiff_t m = 0; m < KP; m++) block[m * 64 + j] = 0;
                continue;
            }
            const float* src = W + r * K;
            for (ptrdiff_t k = 0; k < K; k += 32) {   /* 32 values: pair rows k/2 .. +15 */
                const ptrdiff_t left = K - k;
                const __mmask16 m0 = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1u);
                const __mmask16 m1 = (__mmask16)(left >= 32 ? 0xFFFF
                                                 : left > 16 ? (1u << (left - 16)) - 1u : 0);
                const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m0, src + k));
                const __m256bh w = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m1, src + k + 16));
                _mm256_store_si256((__m256i*)pairs, (__m256i)v);
                _mm256_store_si256((__m256i*)(pairs + 8), (__m256i)w);
                const ptrdiff_t np = (left + 1) / 2 < 16 ? (left + 1) / 2 : 16;
                for (ptrdiff_t q = 0; q < np; q++) block[(k / 2 + q) * 64 + j] = pairs[q];
            }
        }
    }
}

/* Pair rows of the operands of a weight gradient a^T b, summed over K_sum rows of k:
 * out[m * ld + j] = (bf16(A[r(2m)][j]), bf16(A[r(2m + 1)][j])) for j < n, with r(i) =
 * rows[i] (or i) and a zero half past K_sum; pair rows m_lo .. m_hi - 1. A's rows are lda
 * floats apart (0: one repeated row), its elements contiguous. */
FL_BF16_TARGET
static void fl_pack_row_pairs_bf16(ptrdiff_t K_sum, const int64_t* rows, const float* A,
                                   ptrdiff_t lda, ptrdiff_t n, uint32_t* out, ptrdiff_t ld,
                                   ptrdiff_t m_lo, ptrdiff_t m_hi) {
    for (ptrdiff_t m = m_lo; m < m_hi; m++) {
        const ptrdiff_t k0 = 2 * m, k1 = 2 * m + 1;
        const float* a0 = A + (rows ? rows[k0] : k0) * lda;
        const float* a1 = k1 < K_sum ? A + (rows ? rows[k1] : k1) * lda : NULL;
        for (ptrdiff_t j = 0; j < n; j += 16) {
            const __mmask16 mask = (__mmask16)(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1u);
            const __m512 lo = _mm512_maskz_loadu_ps(mask, a0 + j);
            const __m512 hi = a1 ? _mm512_maskz_loadu_ps(mask, a1 + j) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(out + m * ld + j, mask, fl_bf16_pairs16(lo, hi));
        }
    }
}

/* C[m0 + i][0:64] for i < nm (<= 4), summed over the pair rows p_lo .. p_hi - 1 in
 * order: both products of A's pair (m0 + i, p), at Ap[p * sp + (m0 + i) * sm], with the
 * pair row Bp[p * 64 .. + 63]. acc: the sum goes on from C's values (pair rows before
 * p_lo: the same in-order sum as one pass), else from zero. */
FL_BF16_TARGET __attribute__((always_inline))
static inline void fl_pairs_tile_bf16(ptrdiff_t p_lo, ptrdiff_t p_hi,
                                      const uint32_t* restrict Ap, ptrdiff_t sp,
                                      ptrdiff_t sm, ptrdiff_t m0, ptrdiff_t nm,
                                      const uint32_t* restrict Bp, float* restrict C,
                                      ptrdiff_t ldc, int acc) {
    /* rows past nm repeat the last one (in bounds), and are not stored */
    const ptrdiff_t i1 = nm > 1 ? 1 : 0, i2 = nm > 2 ? 2 : nm - 1, i3 = nm > 3 ? 3 : nm - 1;
    const uint32_t* a0 = Ap + m0 * sm;
    const ptrdiff_t o1 = i1 * sm, o2 = i2 * sm, o3 = i3 * sm;
    float* c0 = C + m0 * ldc;
    float* c1 = c0 + i1 * ldc;
    float* c2 = c0 + i2 * ldc;
    float* c3 = c0 + i3 * ldc;
    __m512 c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33;
    if (acc) {
        c00 = _mm512_loadu_ps(c0); c01 = _mm512_loadu_ps(c0 + 16);
        c02 = _mm512_loadu_ps(c0 + 32); c03 = _mm512_loadu_ps(c0 + 48);
        c10 = _mm512_loadu_ps(c1); c11 = _mm512_loadu_ps(c1 + 16);
        c12 = _mm512_loadu_ps(c1 + 32); c13 = _mm512_loadu_ps(c1 + 48);
        c20 = _mm512_loadu_ps(c2); c21 = _mm512_loadu_ps(c2 + 16);
        c22 = _mm512_loadu_ps(c2 + 32); c23 = _mm512_loadu_ps(c2 + 48);
        c30 = _mm512_loadu_ps(c3); c31 = _mm512_loadu_ps(c3 + 16);
        c32 = _mm512_loadu_ps(c3 + 32); c33 = _mm512_loadu_ps(c3 + 48);
    } else {
        c00 = _mm512_setzero_ps(); c01 = c00; c02 = c00; c03 = c00;
        c10 = c00; c11 = c00; c12 = c00; c13 = c00;
        c20 = c00; c21 = c00; c22 = c00; c23 = c00;
        c30 = c00; c31 = c00; c32 = c00; c33 = c00;
    }
    for (ptrdiff_t p = p_lo; p < p_hi; p++) {
        const uint32_t* w = Bp + p * 64;
        const uint32_t* a = a0 + p * sp;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 16);
        const __m512i w2 = _mm512_loadu_si512(w + 32), w3 = _mm512_loadu_si512(w + 48);
        __m512i s = _mm512_set1_epi32((int)a[0]);
        FL_BF16_DOT(c00, s, w0); FL_BF16_DOT(c01, s, w1);
        FL_BF16_DOT(c02, s, w2); FL_BF16_DOT(c03, s, w3);
        s = _mm512_set1_epi32((int)a[o1]);
        FL_BF16_DOT(c10, s, w0); FL_BF16_DOT(c11, s, w1);
        FL_BF16_DOT(c12, s, w2); FL_BF16_DOT(c13, s, w3);
        s = _mm512_set1_epi32((int)a[o2]);
        FL_BF16_DOT(c20, s, w0); FL_BF16_DOT(c21, s, w1);
        FL_BF16_DOT(c22, s, w2); FL_BF16_DOT(c23, s, w3);
        s = _mm512_set1_epi32((int)a[o3]);
        FL_BF16_DOT(c30, s, w0); FL_BF16_DOT(c31, s, w1);
        FL_BF16_DOT(c32, s, w2); FL_BF16_DOT(c33, s, w3);
    }
    /* the repeated rows are stored first, so row i's own store comes last */
    _mm512_storeu_ps(c3, c30); _mm512_storeu_ps(c3 + 16, c31);
    _mm512_storeu_ps(c3 + 32, c32); _mm512_storeu_ps(c3 + 48, c33);
    _mm512_storeu_ps(c2, c20); _mm512_storeu_ps(c2 + 16, c21);
    _mm512_storeu_ps(c2 + 32, c22); _mm512_storeu_ps(c2 + 48, c23);
    _mm512_storeu_ps(c1, c10); _mm512_storeu_ps(c1 + 16, c11);
    _mm512_storeu_ps(c1 + 32, c12); _mm512_storeu_ps(c1 + 48, c13);
    _mm512_storeu_ps(c0, c00); _mm512_storeu_ps(c0 + 16, c01);
    _mm512_storeu_ps(c0 + 32, c02); _mm512_storeu_ps(c0 + 48, c03);
}

/* Pair rows of B per pass over the rows of C: 128 x 256 bytes, a quarter of a 48 KB L1
 * (a 1024-row block streamed from L2 for every 4 rows held the GEMM to ~70% of peak). */
#define FL_PAIRS_CHUNK 128

/* C (M x 64 (c_hi - c_lo), rows ldc apart, from column 64 c_lo) = A B over K2 pair rows,
 * rows m_lo .. m_hi - 1: A's pair (m, p) at Ap[p * sp + m * sm], B in blocks of 64
 * columns (block c: K2 pair rows of 64 dwords at Bp + c * K2 * 64). Each element is one
 * in-order sum over p (the chunks continue it), so any split of rows or blocks between
 * threads gives the same bits. */
FL_BF16_TARGET
static void fl_gemm_pairs_dp_bf16(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sp,
                                  ptrdiff_t sm, const uint32_t* Bp, float* C, ptrdiff_t ldc,
                                  ptrdiff_t c_lo, ptrdiff_t c_hi, ptrdiff_t m_lo,
                                  ptrdiff_t m_hi) {
    for (ptrdiff_t c = c_lo; c < c_hi; c++)
        for (ptrdiff_t p0 = 0; p0 < K2; p0 += FL_PAIRS_CHUNK) {
            const ptrdiff_t p1 = K2 - p0 < FL_PAIRS_CHUNK ? K2 : p0 + FL_PAIRS_CHUNK;
            for (ptrdiff_t m0 = m_lo; m0 < m_hi; m0 += 4)
                fl_pairs_tile_bf16(p0, p1, Ap, sp, sm, m0, m_hi - m0 < 4 ? m_hi - m0 : 4,
                                   Bp + c * K2 * 64, C + 64 * c, ldc, p0 > 0);
        }
}

#include "amx_tiles.h"

/* The GEMM of the pair rows: on AMX tiles where they are on and A's rows hold their
 * pairs contiguously (sp == 1), else on the vdpbf16ps tiles above. */
FL_BF16_TARGET
static void fl_gemm_pairs_bf16(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sp, ptrdiff_t sm,
                               const uint32_t* Bp, float* C, ptrdiff_t ldc, ptrdiff_t c_lo,
                               ptrdiff_t c_hi, ptrdiff_t m_lo, ptrdiff_t m_hi) {
    if (fl_amx_on && sp == 1)
        fl_gemm_pairs_amx(K2, Ap, sm, Bp, C, ldc, c_lo, c_hi, m_lo, m_hi);
    else
        fl_gemm_pairs_dp_bf16(K2, Ap, sp, sm, Bp, C, ldc, c_lo, c_hi, m_lo, m_hi);
}

/* C[m][64 c + j] += bias[64 c + j], rows m_lo .. m_hi - 1, blocks c_lo .. c_hi - 1: the
 * bias after the whole sum (x W + b, TensorFlow's order), one float32 add per element. */
FL_BF16_TARGET
static void fl_add_bias_blocks(float* C, ptrdiff_t ldc, const float* bias, ptrdiff_t c_lo,
                               ptrdiff_t c_hi, ptrdiff_t m_lo, ptrdiff_t m_hi) {
    for (ptrdiff_t m = m_lo; m < m_hi; m++)
        for (ptrdiff_t j = 64 * c_lo; j < 64 * c_hi; j += 16)
            _mm512_storeu_ps(C + m * ldc + j, _mm512_add_ps(_mm512_loadu_ps(C + m * ldc + j),
                                                            _mm512_loadu_ps(bias + j)));
}

/* fl_gemm_pairs_bf16, then C += bias (NULL: none). On the vdpbf16ps tiles block by block,
 * each block's bias added while its C (M x 64) is in L2: a separate pass over an input
 * projection of 1600 x 4096 took 2.7 ms of a 72 ms inference (AMD EPYC Zen 4). On AMX
 * after the whole range, whose B groups span several blocks (not measured there). */
FL_BF16_TARGET
static void fl_gemm_pairs_bias_bf16(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sp,
                                    ptrdiff_t sm, const uint32_t* Bp, float* C, ptrdiff_t ldc,
                                    ptrdiff_t c_lo, ptrdiff_t c_hi, ptrdiff_t m_lo,
                                    ptrdiff_t m_hi, const float* bias) {
    if (!bias || (fl_amx_on && sp == 1)) {
        fl_gemm_pairs_bf16(K2, Ap, sp, sm, Bp, C, ldc, c_lo, c_hi, m_lo, m_hi);
        if (bias) fl_add_bias_blocks(C, ldc, bias, c_lo, c_hi, m_lo, m_hi);
        return;
    }
    for (ptrdiff_t c = c_lo; c < c_hi; c++) {
        fl_gemm_pairs_dp_bf16(K2, Ap, sp, sm, Bp, C, ldc, c, c + 1, m_lo, m_hi);
        fl_add_bias_blocks(C, ldc, bias, c, c + 1, m_lo, m_hi);
    }
}

/* Rows m_lo .. m_hi - 1 of A (K wide, rows lda floats apart) rounded into pair rows:
 * Ap[m * ld + p] = (bf16(A[m][2p]), bf16(A[m][2p + 1])), zero past K; ld >= FL_BF16_ROWS(K)
 * + 8 (whole 256-bit stores). */
FL_BF16_TARGET
static void fl_pack_pairs_of_rows_bf16(ptrdiff_t K, const float* A, ptrdiff_t lda,
                                       uint32_t* Ap, ptrdiff_t ld, ptrdiff_t m_lo,
                                       ptrdiff_t m_hi) {
    for (ptrdiff_t m = m_lo; m < m_hi; m++) fl_bf16_row_pairs(K, A + m * lda, Ap + m * ld);
}

/* a[0:n] rounded to bfloat16 by the kernels' own instruction (vcvtneps2bf16), as float32
 * values: for the test that the NumPy emulation rounds as the CPU does. */
FL_BF16_TARGET
static void fl_bf16_round_array(ptrdiff_t n, const float* a, float* out) {
    for (ptrdiff_t k = 0; k < n; k += 16) {
        const __mmask16 m = (__mmask16)(n - k >= 16 ? 0xFFFF : (1u << (n - k)) - 1u);
        const __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, a + k));
        const __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16);
        _mm512_mask_storeu_ps(out + k, m, _mm512_castsi512_ps(w));
    }
}

#undef FL_BF16_DOT

#endif
