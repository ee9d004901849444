/* One forward LSTM step for a chunk of rows, float32, AVX-512: the product h W_h and the
 * gate math fused, so the gate pre-activations never leave L1.
 *
 * Why: with BLAS, each step of each chunk is one sgemm that re-packs all of W_h and writes
 * z (rows x 4H) to memory for the gate pass to read back. Here W_h is packed once per
 * call (fl_pack_fused) into groups of 16 units: for group g, H rows of 64 floats holding
 * the i, j, f, o columns of units 16g .. 16g+15. A tile of 4 rows x 64 columns is
 * accumulated in 16 zmm registers over k = 0 .. H-1 (in order: the result of a row does
 * not depend on the other rows), stored to a 4 x 64 scratch in L1, and the row gate
 * function (gate_math_avx512.h, gate stride 16) finishes those 16 units.
 *
 * Chosen at run time when the CPU has AVX-512F (fl_have_avx512); the BLAS path remains
 * for every other CPU and for float64. The backward's product dz W_h^T gets the same
 * packed-weight microkernel (fl_gemm_dz_wt_f32), without the fusion (its gate math
 * comes before the product). */
#ifndef FASTLSTM_FUSED_STEP_H
#define FASTLSTM_FUSED_STEP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "gate_math.h"

/* Where the fused forward reads x_t of sequence b and writes its step t: x_t at
 * x + t * x_t + b * x_b (the fused input projection; time- or batch-major), h_t at
 * h + t * h_t + b * h_b, c_t at c + t * c_t + b * c_b. Training: the cache rows
 * hs[t + 1, b], cs[t + 1, b]. Inference: h into the caller's outputs in their own layout
 * (batch- or time-major: no transposing copy), c with c_t = 0 into one row per
 * sequence, which ends as its final cell state. */
typedef struct {
    ptrdiff_t x_t, x_b;
    float* h;
    ptrdiff_t h_t, h_b;
    float* c;
    ptrdiff_t c_t, c_b;
} fl_layout_f32;

/* The packed layouts, in C because packing per call in NumPy cost ~20 us, more than a
 * whole B=1 step sequence's arithmetic (fastlstm/backends/_chunking.py holds the same
 * layouts in NumPy, the reference the tests compare these with).
 *
 * fl_pack_fused_f32: [W_x; W_h] (I + H rows of 4H; I = 0: W_h alone) -> groups of 16
 * units, group g = I + H rows of 64 floats: [i, j, f, o] x units 16g .. 16g + 15, zero
 * past H. */
static void fl_pack_fused_rect_f32(ptrdiff_t I, const float* Wx, ptrdiff_t H,
                                   const float* Wh, float* out, ptrdiff_t k_lo,
                                   ptrdiff_t k_hi, ptrdiff_t g_lo, ptrdiff_t g_hi) {
    /* rows k_lo .. k_hi - 1 of [W_x; W_h], groups g_lo .. g_hi - 1 only (threads pack
     * disjoint row ranges, or each the groups it then reads): row by row of W (read in
     * order), each row's 16-unit pieces (fixed-size copies) to their groups: 7.1 ms for
     * I = H = 1024 group by group with variable-length loops */
    const ptrdiff_t K = I + H, G = 4 * H, full = H / 16;
    const ptrdiff_t g_full = g_hi < full ? g_hi : full;
    for (ptrdiff_t k = k_lo; k < k_hi; k++) {
        const float* row = k < I ? Wx + k * G : Wh + (k - I) * G;
        for (ptrdiff_t g = g_lo; g < g_full; g++) {
            float* dst = out + (g * K + k) * 64;
            for (ptrdiff_t gate = 0; gate < 4; gate++)
                memcpy(dst + gate * 16, row + gate * H + 16 * g, 16 * sizeof(float));
        }
        for (ptrdiff_t g = g_full > g_lo ? g_full : g_lo; g < g_hi; g++) {  /* partial */
            float* dst = out + (g * K + k) * 64;
            const ptrdiff_t u0 = 16 * g, n = H - u0;
            for (ptrdiff_t gate = 0; gate < 4; gate++)
                for (ptrdiff_t j = 0; j < 16; j++)
                    dst[gate * 16 + j] = j < n ? row[gate * H + u0 + j] : 0.0f;
        }
    }
}

static void fl_pack_fused_f32(ptrdiff_t I, const float* Wx, ptrdiff_t H, const float* Wh,
                              float* out, ptrdiff_t k_lo, ptrdiff_t k_hi) {
    fl_pack_fused_rect_f32(I, Wx, H, Wh, out, k_lo, k_hi, 0, (H + 15) / 16);
}

/* fl_pack_fused_t_f32: W (n, K) -> W^T in blocks of 64 of its n rows: block c = K rows of
 * 64 floats, W[64c + j, k] at row k, column j (zero past n). W_h (H, 4H) for the
 * backward's dz W_h^T, W_x (I, 4H) for the input gradient dz W_x^T. */
static void fl_pack_fused_t_f32(ptrdiff_t n, ptrdiff_t K, const float* W, float* out,
                                ptrdiff_t c_lo, ptrdiff_t c_hi) {
    /* blocks c_lo .. c_hi - 1 only (threads pack disjoint blocks), in tiles of 16 k: a
     * tile reads one line of each of the block's 64 rows of W and writes 16 output rows,
     * 4 KB each way, all in L1 (row by row of W, each store 256 bytes from the last, it
     * took 32 us for W_h at H = 128) */
    for (ptrdiff_t c = c_lo; c < c_hi; c++) {
        const ptrdiff_t n_c = n - 64 * c < 64 ? n - 64 * c : 64;
        float* block = out + c * K * 64;
        for (ptrdiff_t k0 = 0; k0 < K; k0 += 16) {
            const ptrdiff_t k1 = K - k0 < 16 ? K : k0 + 16;
            for (ptrdiff_t j = 0; j < n_c; j++) {
                const float* src = W + (64 * c + j) * K;
                for (ptrdiff_t k = k0; k < k1; k++) block[k * 64 + j] = src[k];
            }
            for (ptrdiff_t j = n_c; j < 64; j++)             /* zero past n */
                for (ptrdiff_t k = k0; k < k1; k++) block[k * 64 + j] = 0.0f;
        }
    }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#include "gate_math_avx512.h"
#define FL_HAVE_FUSED 1
static int fl_have_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

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

__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_4x64(ptrdiff_t K, const float* restrict a0,
                                const float* restrict a1, const float* restrict a2,
                                const float* restrict a3, ptrdiff_t K2,
                                const float* restrict b0, const float* restrict b1,
                                const float* restrict b2, const float* restrict b3,
                                const float* restrict W, float tile[4][64]) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
    __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (ptrdiff_t k = 0; k < K; k++)
        FL_TILE_STEP(a0[k], a1[k], a2[k], a3[k], W + k * 64)
    W += K * 64;
    for (ptrdiff_t k = 0; k < K2; k++)
        FL_TILE_STEP(b0[k], b1[k], b2[k], b3[k], W + k * 64)
    FL_STORE_4X64(tile, a)
}
#undef FL_TILE_STEP

/* One row against NB <= 4 64-column blocks of W at once (block j at W + j * stride):
 * out[j] = the row's product with block j, over a[0:K] then b[0:K2] as in fl_tile_4x64.
 * Each output element is the same sequential FMA chain as there, so the bits are the
 * same; but the 4-row tile spent 3/4 of its FMAs on copies of a lone row, and its 4
 * chains per block waited on FMA latency. Here 4 NB independent chains (16 at NB = 4)
 * keep both FMA pipes busy (a batch of 1, or the last sequence of a chunk). NB is a
 * constant at every call (fl_row_blocks): a slice of two groups (B = 1, H = 64 on two
 * cores) computed two copies of its blocks as padding when this always ran four. */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_row_nblocks(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
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

/* fl_row_nblocks for a run-time nb (1 .. 4), each count its own specialised loop. */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_row_blocks(ptrdiff_t K, const float* restrict a, ptrdiff_t K2,
                                 const float* restrict b, const float* restrict W,
                                 ptrdiff_t stride, ptrdiff_t nb, float out[4][64]) {
    switch (nb) {
    case 1: fl_row_nblocks(K, a, K2, b, W, stride, 1, out); break;
    case 2: fl_row_nblocks(K, a, K2, b, W, stride, 2, out); break;
    case 3: fl_row_nblocks(K, a, K2, b, W, stride, 3, out); break;
    default: fl_row_nblocks(K, a, K2, b, W, stride, 4, out); break;
    }
}

/* Row i of a 4-row block starting at r0 with nr valid rows; rows past nr repeat the last
 * valid one (computed, never stored). */
static inline const float* fl_tile_row(const float* base, ptrdiff_t ld, ptrdiff_t r0,
                                       ptrdiff_t nr, ptrdiff_t i) {
    return base + (r0 + (i < nr ? i : nr - 1)) * ld;
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
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,prefer-vector-width=512"),
               noinline))
static void fl_fused_gates(ptrdiff_t n, ptrdiff_t S, const float* restrict xp,
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

/* The four gate lines of one row's 16-unit group in xproj (p: its gate i, gates H floats
 * apart) toward L1, issued before that row's sums: read in place after them they were a
 * memory miss per gate call (rows 16 KB apart at H = 1024). */
static inline void fl_prefetch_gates(const float* p, ptrdiff_t H) {
    for (int gate = 0; gate < 4; gate++)
        _mm_prefetch((const char*)(p + gate * H), _MM_HINT_T0);
}

/* x == NULL: z = xproj[t, b] + h W_h (xproj = x W_x + b from a GEMM before the loop).
 * x != NULL: z = [x_t, h] [W_x; W_h] + b in one sum, W_x packed above W_h in Wp (group g:
 * I + H rows), and xproj is not read (the input projection needs no pass of its own). */
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,prefer-vector-width=512")))
static void fl_lstm_fwd_fused_f32(
        ptrdiff_t n_rows, ptrdiff_t H, const float* restrict h_old,
        const float* restrict Wp, const int64_t* restrict rows, ptrdiff_t B, ptrdiff_t t,
        const float* restrict xproj, ptrdiff_t I, const float* restrict x,
        const float* restrict bias, const float* restrict peep, int use_peep,
        float forget_bias, float clip, float* restrict c_loc, float* restrict h_new,
        float* restrict acts, float* restrict act_tmp, const fl_layout_f32* out,
        float* restrict c_unclipped, ptrdiff_t g_lo, ptrdiff_t g_hi) {
    /* groups g_lo .. g_hi - 1 only (units 16 g_lo .. 16 g_hi - 1): the whole step is
     * 0 .. ceil(H / 16); the hidden-unit split gives each thread its own range */
    float ztile[4][64] __attribute__((aligned(64)));
    const ptrdiff_t G = 4 * H, KX = x ? I : 0;
    if (n_rows == 1) {                           /* up to four groups at once: fl_row_blocks */
        const ptrdiff_t b = rows[0];
        for (ptrdiff_t g0 = g_lo; g0 < g_hi; g0 += 4) {
            const ptrdiff_t nb = g_hi - g0 < 4 ? g_hi - g0 : 4;
            if (!x)
                for (ptrdiff_t j = 0; j < nb; j++)
                    fl_prefetch_gates(xproj + (t * B + b) * G + 16 * (g0 + j), H);
            fl_row_blocks(KX, x ? x + t * out->x_t + b * out->x_b : NULL, H, h_old,
                           Wp + g0 * (KX + H) * 64, (KX + H) * 64, nb, ztile);
            for (ptrdiff_t j = 0; j < nb; j++) {
                const ptrdiff_t u0 = 16 * (g0 + j), n = H - u0 < 16 ? H - u0 : 16;
                const ptrdiff_t xo = (t * B + b) * G + u0;
                fl_fused_gates(n, H, x ? bias + u0 : xproj + xo, ztile[j],
                                    peep + u0, use_peep, forget_bias, clip, c_loc + u0,
                                    h_new + u0, acts ? acts + xo : act_tmp + u0,
                                    out->c + t * out->c_t + b * out->c_b + u0,
                                    out->h + t * out->h_t + b * out->h_b + u0,
                                    clip > 0 ? c_unclipped + (t * B + b) * H + u0 : NULL);
            }
        }
        return;
    }
    for (ptrdiff_t g = g_lo; g < g_hi; g++) {
        const float* Wg = Wp + g * (KX + H) * 64;
        const ptrdiff_t u0 = 16 * g, n = H - u0 < 16 ? H - u0 : 16;
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += 4) {
            const ptrdiff_t nr = n_rows - r0 < 4 ? n_rows - r0 : 4;
            const float* xr[4] = {NULL, NULL, NULL, NULL};
            if (x)
                for (int i = 0; i < 4; i++)
                    xr[i] = x + t * out->x_t + rows[r0 + (i < nr ? i : nr - 1)] * out->x_b;
            else
                for (ptrdiff_t i = 0; i < nr; i++)
                    fl_prefetch_gates(xproj + (t * B + rows[r0 + i]) * G + u0, H);
            fl_tile_4x64(KX, xr[0], xr[1], xr[2], xr[3],
                         H, fl_tile_row(h_old, H, r0, nr, 0), fl_tile_row(h_old, H, r0, nr, 1),
                         fl_tile_row(h_old, H, r0, nr, 2), fl_tile_row(h_old, H, r0, nr, 3),
                         Wg, ztile);
            for (ptrdiff_t rr = 0; rr < nr; rr++) {
                const ptrdiff_t r = r0 + rr, b = rows[r];
                const ptrdiff_t xo = (t * B + b) * G + u0;
                fl_fused_gates(n, H, x ? bias + u0 : xproj + xo, ztile[rr],
                                    peep + u0, use_peep, forget_bias, clip,
                                    c_loc + r * H + u0, h_new + r * H + u0,
                                    acts ? acts + xo : act_tmp + u0,
                                    out->c + t * out->c_t + b * out->c_b + u0,
                                    out->h + t * out->h_t + b * out->h_b + u0,
                                    clip > 0 ? c_unclipped + (t * B + b) * H + u0 : NULL);
            }
        }
    }
}

/* The narrow tile: tile[i][0:16 V] = sum_k a_i[k] * W[k][0:16 V] for eight rows a_0 ..
 * a_7 and V (1 or 2) 16-column vectors, 8 V accumulators, each the same in-order FMA
 * chain over k as in fl_tile_4x64 (so the same bits). For a last block of W's packed
 * columns 32 or fewer wide: the 4 x 64 tile would compute 64 columns there (I = 28:
 * 56% of its FMAs on the zero padding; measured at the seed's size, 472 us against 396
 * for OpenBLAS and ~250 for this). W rows stay 64 floats apart (the packed layout). */
__attribute__((target("avx512f,fma"), always_inline))
static inline void fl_tile_8xv(ptrdiff_t K, const float* const a[8],
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

/* Rows of A W^T, for W (N x K) packed by fl_pack_fused_t_f32: row m of the result, from
 * row rows[m] of A (K wide, rows lda apart; rows NULL: row m), goes to C + c_off[m]
 * (c_off NULL: C + m * ldc), columns of blocks c_lo .. c_hi - 1 (N in all). A 4 x 64 tile
 * sums over k in order (fl_tile_4x64), or an 8 x 16 / 8 x 32 one (fl_tile_8xv) for a
 * last block 16 / 32 or fewer columns wide: the same bits for any split of the rows and
 * either tile. The backward's dz W_h^T (below), and the input gradient dz W_x^T: there,
 * for a variable-length batch, dz is read in place at the steps that exist and each row
 * written straight into the caller's layout (no gathered copy, no scatter, no
 * transposing copy). */
__attribute__((target("avx512f,fma")))
static void fl_gemm_rows_wt_f32(ptrdiff_t n_rows, const int64_t* restrict rows, ptrdiff_t K,
                                const float* restrict A, ptrdiff_t lda,
                                const float* restrict WTp, ptrdiff_t N, float* restrict C,
                                const int64_t* restrict c_off, ptrdiff_t ldc, ptrdiff_t c_lo,
                                ptrdiff_t c_hi) {
    float tile[8][64] __attribute__((aligned(64)));
    for (ptrdiff_t c = c_lo; c < c_hi; c++) {
        const float* Wc = WTp + c * K * 64;
        const ptrdiff_t u0 = 64 * c, n = N - u0 < 64 ? N - u0 : 64;
        const int R = n <= 32 ? 8 : 4;                  /* rows per tile */
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += R) {
            const ptrdiff_t nr = n_rows - r0 < R ? n_rows - r0 : R;
            const float* a[8];
            for (int i = 0; i < R; i++) {               /* rows past nr repeat the last */
                const ptrdiff_t m = r0 + (i < nr ? i : nr - 1);
                a[i] = A + (rows ? rows[m] : m) * lda;
            }
            if (n <= 16)
                fl_tile_8xv(K, a, Wc, 1, tile);
            else if (n <= 32)
                fl_tile_8xv(K, a, Wc, 2, tile);
            else
                fl_tile_4x64(K, a[0], a[1], a[2], a[3], 0, NULL, NULL, NULL, NULL, Wc,
                             tile);
            for (ptrdiff_t rr = 0; rr < nr; rr++)
                memcpy(C + (c_off ? c_off[r0 + rr] : (r0 + rr) * ldc) + u0, tile[rr],
                       n * sizeof(float));
        }
    }
}

/* The backward's per-step product dh (rows x H) = dz (rows x 4H) @ W_h^T, float32,
 * AVX-512, with W_h^T packed once per call (fl: pack_fused_t) into blocks of 64 units:
 * block c holds 4H rows of 64 floats, W_h[64c + j, k] at row k, column j (zero past H).
 * A 4 x 64 tile of dh accumulates over k = 0 .. 4H-1 in order, as in the forward. */
__attribute__((target("avx512f,fma")))
static void fl_gemm_dz_wt_f32(ptrdiff_t n_rows, ptrdiff_t H, const float* restrict dz,
                              const float* restrict WTp, float* restrict dh, ptrdiff_t c_lo,
                              ptrdiff_t c_hi) {
    /* blocks c_lo .. c_hi - 1 only (units 64 c_lo .. 64 c_hi - 1): the whole product is
     * 0 .. ceil(H / 64); the hidden-unit split gives each thread its own range */
    float tile[4][64] __attribute__((aligned(64)));
    const ptrdiff_t K = 4 * H;
    if (n_rows == 1) {                           /* up to four blocks at once: fl_row_blocks */
        for (ptrdiff_t c0 = c_lo; c0 < c_hi; c0 += 4) {
            const ptrdiff_t nb = c_hi - c0 < 4 ? c_hi - c0 : 4;
            fl_row_blocks(K, dz, 0, NULL, WTp + c0 * K * 64, K * 64, nb, tile);
            for (ptrdiff_t j = 0; j < nb; j++) {
                const ptrdiff_t u0 = 64 * (c0 + j), n = H - u0 < 64 ? H - u0 : 64;
                for (ptrdiff_t u = 0; u < n; u++) dh[u0 + u] = tile[j][u];
            }
        }
        return;
    }
    fl_gemm_rows_wt_f32(n_rows, NULL, K, dz, K, WTp, H, dh, NULL, H, c_lo, c_hi);
}

/* C (M x N, row stride ldc) = A^T B for A (K x M) and B (K x N), rows lda and ldb floats
 * apart, float32, AVX-512: the weight gradients [x, h_{t-1}, 1]^T dz, a long sum (K = T B
 * rows) into a short, wide result; A may come in segments (x, h_{t-1} and the ones, with
 * no copy into one [x, h_{t-1}, 1] array). Column blocks c_lo .. c_hi - 1 of 64 (N a
 * multiple of 64).
 *
 * The sum over k goes in pieces of FL_TN_KS rows. A piece of up to FL_TN_GROUP blocks of
 * B is first copied into contiguous 32 KB buffers, one per block: B's rows are 2^n floats
 * apart, rows that far apart share a few L1 sets, and read in place a piece did not stay
 * in L1. Then every 4 x 64 tile of C sums its block's piece in order in 16 registers and
 * adds it to C. The group's blocks share each piece of A, read once from memory instead
 * of once per block (in a fit, where A and B come cold from the backward: 1.37 ms
 * against 1.59 for OpenBLAS's blocks, 1.80 one block at a time). Summing by pieces, as
 * BLAS does, keeps float32's error growing with K / 128 + 128 terms, not K (one running
 * sum was 5x less accurate than OpenBLAS at the seed's size); the pieces and their order
 * do not depend on the threads: same bits for any count. Measured alone at the seed's
 * size (M = 157, N = 512, K = 3584, 2 threads): 1.20-1.26 ms against 1.44-1.49 for
 * OpenBLAS's blocks; (1025, 2048, K = 3200) 30.3 against 30.5. */
#define FL_TN_KS 128
#define FL_TN_GROUP 4
#define FL_TN_STEP(r, a)                                                                  \
    {                                                                                     \
        const __m512 s = _mm512_set1_ps(a);                                               \
        t##r##0 = _mm512_fmadd_ps(s, w0, t##r##0); t##r##1 = _mm512_fmadd_ps(s, w1, t##r##1); \
        t##r##2 = _mm512_fmadd_ps(s, w2, t##r##2); t##r##3 = _mm512_fmadd_ps(s, w3, t##r##3); \
    }
__attribute__((target("avx512f,fma")))
static void fl_gemm_tn_f32(ptrdiff_t K, const int64_t* restrict krows, ptrdiff_t n_seg,
                           const float* const* A, const ptrdiff_t* lda, const ptrdiff_t* M,
                           const float* restrict B, ptrdiff_t ldb, float* restrict C,
                           ptrdiff_t ldc, ptrdiff_t c_lo, ptrdiff_t c_hi, float* restrict Bp) {
    /* A in n_seg segments stacked along C's rows: segment s, (rows x M[s]) with rows
     * lda[s] apart (lda 0: one row repeated, e.g. ones for the bias gradient), gives C's
     * next M[s] rows. The sum runs over K rows of A and B: rows krows[0 .. K-1], or
     * 0 .. K-1 when krows is NULL (the steps that exist of a variable-length batch, with
     * no gathered copies). Bp: FL_TN_GROUP * FL_TN_KS * 64 floats of scratch, 64-byte
     * aligned. */
    float tile[4][64] __attribute__((aligned(64)));
    for (ptrdiff_t g0 = c_lo; g0 < c_hi; g0 += FL_TN_GROUP)
        for (ptrdiff_t k0 = 0; k0 < K; k0 += FL_TN_KS) {
            const ptrdiff_t ks = K - k0 < FL_TN_KS ? K - k0 : FL_TN_KS;
            const ptrdiff_t g1 = c_hi - g0 < FL_TN_GROUP ? c_hi : g0 + FL_TN_GROUP;
            for (ptrdiff_t c = g0; c < g1; c++)
                for (ptrdiff_t k = 0; k < ks; k++)
                    memcpy(Bp + ((c - g0) * FL_TN_KS + k) * 64,
                           B + (krows ? krows[k0 + k] : k0 + k) * ldb + 64 * c,
                           64 * sizeof(float));
            for (ptrdiff_t s = 0, row0 = 0; s < n_seg; row0 += M[s], s++)
            for (ptrdiff_t c = g0; c < g1; c++)
            for (ptrdiff_t i0 = 0; i0 < M[s]; i0 += 4) {
                /* columns of A past M repeat the last one (computed, never stored) */
                const ptrdiff_t nr = M[s] - i0 < 4 ? M[s] - i0 : 4;
                const ptrdiff_t o1 = nr > 1 ? 1 : 0, o2 = nr > 2 ? 2 : nr - 1;
                const ptrdiff_t o3 = nr > 3 ? 3 : nr - 1;
                float* Ct = C + (row0 + i0) * ldc + 64 * c;
                __m512 t00, t01, t02, t03, t10, t11, t12, t13;
                __m512 t20, t21, t22, t23, t30, t31, t32, t33;
                t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = _mm512_setzero_ps();
                t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = t00;
                const ptrdiff_t ld = lda[s];
                const float* a0 = A[s] + i0;
                for (ptrdiff_t k = 0; k < ks; k++) {
                    const float* ak = a0 + (krows ? krows[k0 + k] : k0 + k) * ld;
                    const float* w = Bp + ((c - g0) * FL_TN_KS + k) * 64;
                    const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
                    const __m512 w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
                    FL_TN_STEP(0, ak[0]) FL_TN_STEP(1, ak[o1])
                    FL_TN_STEP(2, ak[o2]) FL_TN_STEP(3, ak[o3])
                }
                FL_STORE_4X64(tile, t)
                for (ptrdiff_t r = 0; r < nr; r++) {
                    if (k0 == 0) {
                        memcpy(Ct + r * ldc, tile[r], 64 * sizeof(float));
                        continue;
                    }
                    for (int v = 0; v < 64; v += 16)         /* C += this piece's sum */
                        _mm512_storeu_ps(Ct + r * ldc + v,
                                         _mm512_add_ps(_mm512_loadu_ps(Ct + r * ldc + v),
                                                       _mm512_load_ps(tile[r] + v)));
                }
            }
        }
}
#undef FL_TN_STEP

#else
#define FL_HAVE_FUSED 0
static int fl_have_avx512(void) { return 0; }
static void fl_lstm_fwd_fused_f32(
        ptrdiff_t n_rows, ptrdiff_t H, const float* h_old, const float* Wp,
        const int64_t* rows, ptrdiff_t B, ptrdiff_t t, const float* xproj, ptrdiff_t I,
        const float* x, const float* bias, const float* peep, int use_peep,
        float forget_bias, float clip, float* c_loc, float* h_new, float* acts,
        float* act_tmp, const fl_layout_f32* out, float* c_unclipped, ptrdiff_t g_lo,
        ptrdiff_t g_hi) {}
static void fl_gemm_dz_wt_f32(ptrdiff_t n_rows, ptrdiff_t H, const float* dz,
                              const float* WTp, float* dh, ptrdiff_t c_lo, ptrdiff_t c_hi) {}
static void fl_avx512_math_array(int which, ptrdiff_t n, const float* x, float* y) {}
static void fl_gemm_rows_wt_f32(ptrdiff_t n_rows, const int64_t* rows, ptrdiff_t K,
                                const float* A, ptrdiff_t lda, const float* WTp, ptrdiff_t N,
                                float* C, const int64_t* c_off, ptrdiff_t ldc, ptrdiff_t c_lo,
                                ptrdiff_t c_hi) {}
static void fl_gemm_tn_f32(ptrdiff_t K, const int64_t* krows, ptrdiff_t n_seg,
                           const float* const* A, const ptrdiff_t* lda, const ptrdiff_t* M,
                           const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc,
                           ptrdiff_t c_lo, ptrdiff_t c_hi, float* Bp) {}
#endif

#endif
