/* One forward LSTM step for a chunk of rows, float32, on packed weights in register
 * tiles: the product h W_h and the gate math fused, so the gate pre-activations never
 * leave L1.
 *
 * Why: with BLAS, each step of each chunk is one sgemm that re-packs all of W_h and writes
 * z (rows x 4H) to memory for the gate pass to read back. Here W_h is packed once per
 * call (fl_pack_fused) into groups of 16 units: for group g, H rows of 64 floats holding
 * the i, j, f, o columns of units 16g .. 16g+15. A tile of 4 rows x 64 columns is
 * accumulated in registers over k = 0 .. H-1 (in order: the result of a row does not
 * depend on the other rows), stored to a 4 x 64 scratch in L1, and the row gate function
 * (gate stride 16) finishes those 16 units. The backward's product dz W_h^T, the input
 * gradient and the weight gradients get the same packed-weight tiles, without the fusion.
 *
 * Two instruction sets, chosen at run time (fl_best_fused_isa): AVX-512
 * (fused_tiles_avx512.h, gate_math_avx512.h) and AVX2 + FMA for CPUs without it
 * (fused_tiles_avx2.h, gate_math_avx2.h). Their tiles keep every element's FMA chain and
 * the gate math's operations the same, so both give the same bits; the loops around the
 * tiles are written once (fused_step_isa.h). Other CPUs and float64 take the BLAS path. */
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

/* The ISA of the fused kernels: FL_ISA_AVX512, FL_ISA_AVX2 (AVX2 + FMA: CPUs without
 * AVX-512, most laptops) or FL_ISA_NONE (the BLAS path; the fused entry points are not
 * called). _recurrent.pyx picks it once at import (fl_best_fused_isa, or less by the
 * environment switches) and sets it with fl_set_fused_isa before any kernel runs. */
#define FL_ISA_NONE 0
#define FL_ISA_AVX2 1
#define FL_ISA_AVX512 2
/* The weight-gradient tiles' K block and tile group (also read by _recurrent.pyx). */
#define FL_TN_KS 128
#define FL_TN_GROUP 4
/* Dwords between rows of pairs (KP of them, and 8 of slack for whole 256-bit stores)
 * in the kernels' buffers: a multiple of 16, so that rows start on cache lines where the
 * buffer does. An AMX tile row that straddles two lines loads several times slower: tiles
 * of unaligned rows ran at 920 GFLOP/s per core, aligned at 2,490 (Intel Xeon). */
#define FL_PAIRS_LD(KP) (((KP) + 8 + 15) / 16 * 16)

#if defined(__GNUC__) && defined(__x86_64__)       /* GCC and clang */
#include <cpuid.h>
#include <immintrin.h>
#include <unistd.h>                                       /* sysconf: fl_l2_bytes */
/* The AVX-512 functions' target. GCC names the preference for 512-bit vectors (it would
 * otherwise auto-vectorize them 256 bits wide) in the target string; clang rejects it
 * there, dropping the whole attribute, and takes its own min_vector_width instead. */
#if defined(__clang__)
#define FL_AVX512_TARGET                                                                  \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma"), min_vector_width(512)))
#else
#define FL_AVX512_TARGET                                                                  \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,prefer-vector-width=512")))
#endif
#include "fused_tiles_avx512.h"
#include "fused_tiles_avx2.h"
#include "fused_tiles_bf16.h"
#define FL_HAVE_FUSED 1

static int fl_fused_isa = FL_ISA_NONE;

/* What the CPU and the OS support, read with CPUID and XGETBV rather than
 * __builtin_cpu_supports, whose runtime data some toolchains leave unset (zig cc's clang
 * reported no AVX at all). AVX-512 means the four subsets the AVX-512 functions are
 * compiled for (F, DQ, BW, VL) and an OS that saves the opmask and ZMM registers (XCR0
 * bits 5-7); AVX2 needs FMA and the YMM state (XCR0 bits 1-2). */
static unsigned long long fl_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int fl_best_fused_isa(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return FL_ISA_NONE;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx) || (fl_xcr0() & 0x6) != 0x6) return FL_ISA_NONE;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return FL_ISA_NONE;
    const int avx2 = (b >> 5) & 1;
    const int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1)     /* F, DQ */
                       && ((b >> 30) & 1) && ((b >> 31) & 1); /* BW, VL */
    if (avx512 && (fl_xcr0() & 0xE6) == 0xE6) return FL_ISA_AVX512;
    return avx2 ? FL_ISA_AVX2 : FL_ISA_NONE;
}

static void fl_set_fused_isa(int isa) { fl_fused_isa = isa; }

/* The CPU has the AVX512-BF16 subset (vdpbf16ps, vcvtneps2bf16: CPUID leaf 7 subleaf 1,
 * EAX bit 5) on top of the AVX-512 the float32 kernels use, and the OS saves its state:
 * the bfloat16 kernels (fused_tiles_bf16.h) can run. */
static int fl_cpu_has_avx512_bf16(void) {
    unsigned int a, b, c, d;
    if (fl_best_fused_isa() != FL_ISA_AVX512) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
}

/* The CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22) beside
 * AVX512-BF16, and the OS supports the tile state (XCR0 bits 17-18). Using the tiles also
 * needs the process's request (fl_amx_request, amx_tiles.h). */
static int fl_cpu_has_amx(void) {
    unsigned int a, b, c, d;
    if (!FL_HAVE_AMX_BUILD || !fl_cpu_has_avx512_bf16()) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return ((d >> 24) & 1) && ((d >> 22) & 1) && (fl_xcr0() & 0x60000) == 0x60000;
}

/* Turn the AMX tiles on for the bfloat16 GEMMs (on: the CPU has them, and the request
 * to the OS was granted); returns whether they are on. */
static int fl_set_amx(int on) {
    fl_amx_on = on && fl_cpu_has_amx() && fl_amx_request();
    return fl_amx_on;
}

static long fl_amx_call_count(void) { return __atomic_load_n(&fl_amx_calls, __ATOMIC_RELAXED); }

/* Row i of a 4-row block starting at r0 with nr valid rows; rows past nr repeat the last
 * valid one (computed, never stored). */
static inline const float* fl_tile_row(const float* base, ptrdiff_t ld, ptrdiff_t r0,
                                       ptrdiff_t nr, ptrdiff_t i) {
    return base + (r0 + (i < nr ? i : nr - 1)) * ld;
}

/* Bytes of this core's L2 cache (glibc reads CPUID; 1 MB where it cannot tell), once:
 * 2 MB on the Intel Xeon here, 1 MB on AMD Zen 4 and 5, 512 KB on Zen 3. A property of
 * the CPU: fl_gemm_rows_wt_f32's passes (same bits either way) and the Python side's
 * widest input inside the step (max_fused_input_width: other sums) follow from it. */
static ptrdiff_t fl_l2_cache_bytes = 0;
static ptrdiff_t fl_l2_bytes(void) {
    ptrdiff_t b = __atomic_load_n(&fl_l2_cache_bytes, __ATOMIC_RELAXED);
    if (b == 0) {
#ifdef _SC_LEVEL2_CACHE_SIZE
        const long got = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
        const long got = 0;
#endif
        b = got >= (64 << 10) ? (ptrdiff_t)got : (ptrdiff_t)1 << 20;
        __atomic_store_n(&fl_l2_cache_bytes, b, __ATOMIC_RELAXED);
    }
    return b;
}

/* For tests: take the L2 as this many bytes (0: this CPU's again); returns the previous. */
static ptrdiff_t fl_set_l2_bytes(ptrdiff_t bytes) {
    const ptrdiff_t previous = fl_l2_bytes();
    __atomic_store_n(&fl_l2_cache_bytes, bytes, __ATOMIC_RELAXED);
    return previous;
}

/* Rows of k per pass of the float32 step's sums over all rows (16 KB of a group's packed
 * weights and 16 KB of 64 rows' activations: both in a 48 KB L1; passes of 128 read 64 KB),
 * where a group has more than FL_F32_ONE_PASS_ROWS (48 KB). */
#define FL_F32_PASS 64
#define FL_F32_ONE_PASS_ROWS 192

/* Rows ahead of the gate math whose xproj lines are being prefetched. */
#define FL_XPROJ_AHEAD 8

/* The four gate lines of one row's 16-unit group in xproj (p: its gate i, gates H floats
 * apart) toward L1, issued before that row's sums: read in place after them they were a
 * memory miss per gate call (rows 16 KB apart at H = 1024). */
static inline void fl_prefetch_gates(const float* p, ptrdiff_t H) {
    for (int gate = 0; gate < 4; gate++)
        _mm_prefetch((const char*)(p + gate * H), _MM_HINT_T0);
}

#define FL_ISA_CAT2(a, b) a##b
#define FL_ISA_CAT(a, b) FL_ISA_CAT2(a, b)

#define FL_PACKED_ROWS(K) (K)
#define FL_ISA(name) FL_ISA_CAT(name, _avx512)
#define FL_ISA_TARGET FL_AVX512_TARGET
#define FL_PASS_TILE_ROWS 6     /* fl_rows_passes: 24 of the 32 zmm registers accumulate */
#include "fused_step_isa.h"
#undef FL_PASS_TILE_ROWS
#undef FL_ISA
#undef FL_ISA_TARGET

#define FL_ISA(name) FL_ISA_CAT(name, _avx2)
#define FL_ISA_TARGET __attribute__((target("avx2,fma")))
#define FL_PASS_TILE_ROWS 4
#include "fused_step_isa.h"
#undef FL_PASS_TILE_ROWS
#undef FL_ISA
#undef FL_ISA_TARGET
#undef FL_PACKED_ROWS

/* bfloat16 products: weights in pair rows (fused_tiles_bf16.h), float32 elsewhere */
#define FL_PACKED_ROWS(K) FL_BF16_ROWS(K)
#define FL_NO_GEMM_TN
#define FL_PAIRS_PASSES
#define FL_ISA(name) FL_ISA_CAT(name, _bf16)
#define FL_ISA_TARGET FL_BF16_TARGET
#include "fused_step_isa.h"
#undef FL_ISA
#undef FL_ISA_TARGET
#undef FL_NO_GEMM_TN
#undef FL_PAIRS_PASSES
#undef FL_PACKED_ROWS

/* The public entry points: the copy of fused_step_isa.h for the chosen ISA, or, with
 * bf16 (weights packed in bfloat16 pairs), the AVX512-BF16 one. */
static void fl_lstm_fwd_fused_f32(
        ptrdiff_t n_rows, ptrdiff_t H, const float* h_old, const float* Wp,
        const int64_t* rows, ptrdiff_t B, ptrdiff_t t, const float* xproj, ptrdiff_t I,
        const float* x, const float* bias, const float* peep, int use_peep,
        float forget_bias, float clip, float* c_loc, float* h_new, float* acts,
        float* act_tmp, const fl_layout_f32* out, float* c_unclipped, ptrdiff_t g_lo,
        ptrdiff_t g_hi, int bf16) {
    (bf16 ? fl_lstm_fwd_fused_f32_bf16
     : fl_fused_isa == FL_ISA_AVX512 ? fl_lstm_fwd_fused_f32_avx512
                                     : fl_lstm_fwd_fused_f32_avx2)(
        n_rows, H, h_old, Wp, rows, B, t, xproj, I, x, bias, peep, use_peep, forget_bias,
        clip, c_loc, h_new, acts, act_tmp, out, c_unclipped, g_lo, g_hi);
}

static void fl_gemm_rows_wt_f32(ptrdiff_t n_rows, const int64_t* rows, ptrdiff_t K,
                                const float* A, ptrdiff_t lda, const float* WTp, ptrdiff_t N,
                                float* C, const int64_t* c_off, ptrdiff_t ldc, ptrdiff_t c_lo,
                                ptrdiff_t c_hi, int bf16) {
    (bf16 ? fl_gemm_rows_wt_f32_bf16
     : fl_fused_isa == FL_ISA_AVX512 ? fl_gemm_rows_wt_f32_avx512 : fl_gemm_rows_wt_f32_avx2)(
        n_rows, rows, K, A, lda, WTp, N, C, c_off, ldc, c_lo, c_hi);
}

static void fl_gemm_dz_wt_f32(ptrdiff_t n_rows, ptrdiff_t H, const float* dz,
                              const float* WTp, float* dh, ptrdiff_t c_lo, ptrdiff_t c_hi,
                              int bf16) {
    (bf16 ? fl_gemm_dz_wt_f32_bf16
     : fl_fused_isa == FL_ISA_AVX512 ? fl_gemm_dz_wt_f32_avx512 : fl_gemm_dz_wt_f32_avx2)(
        n_rows, H, dz, WTp, dh, c_lo, c_hi);
}

static void fl_gemm_tn_f32(ptrdiff_t K, const int64_t* krows, ptrdiff_t n_seg,
                           const float* const* A, const ptrdiff_t* lda, const ptrdiff_t* M,
                           const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc,
                           ptrdiff_t c_lo, ptrdiff_t c_hi, float* Bp) {
    (fl_fused_isa == FL_ISA_AVX512 ? fl_gemm_tn_f32_avx512 : fl_gemm_tn_f32_avx2)(
        K, krows, n_seg, A, lda, M, B, ldb, C, ldc, c_lo, c_hi, Bp);
}

#else
#define FL_HAVE_FUSED 0
static int fl_best_fused_isa(void) { return FL_ISA_NONE; }
static ptrdiff_t fl_l2_bytes(void) { return (ptrdiff_t)1 << 20; }
static ptrdiff_t fl_set_l2_bytes(ptrdiff_t bytes) { return 0; }
static int fl_cpu_has_avx512_bf16(void) { return 0; }
static int fl_cpu_has_amx(void) { return 0; }
static int fl_set_amx(int on) { return 0; }
static long fl_amx_call_count(void) { return 0; }
static void fl_pairs_transpose(ptrdiff_t K2, ptrdiff_t M, const uint32_t* src, uint32_t* dst,
                               ptrdiff_t ld, ptrdiff_t m_lo, ptrdiff_t m_hi) {}
static void fl_set_fused_isa(int isa) {}
static void fl_pack_fused_bf16(ptrdiff_t I, const float* Wx, ptrdiff_t H, const float* Wh,
                               uint32_t* out, ptrdiff_t g_lo, ptrdiff_t g_hi) {}
static void fl_pack_fused_t_bf16(ptrdiff_t n, ptrdiff_t K, const float* W, uint32_t* out,
                                 ptrdiff_t c_lo, ptrdiff_t c_hi) {}
static void fl_bf16_round_array(ptrdiff_t n, const float* a, float* out) {}
static void fl_pack_row_pairs_bf16(ptrdiff_t K_sum, const int64_t* rows, const float* A,
                                   ptrdiff_t lda, ptrdiff_t n, uint32_t* out, ptrdiff_t ld,
                                   ptrdiff_t m_lo, ptrdiff_t m_hi) {}
static void fl_gemm_pairs_bf16(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sp, ptrdiff_t sm,
                               const uint32_t* Bp, float* C, ptrdiff_t ldc, ptrdiff_t c_lo,
                               ptrdiff_t c_hi, ptrdiff_t m_lo, ptrdiff_t m_hi) {}
static void fl_gemm_pairs_bias_bf16(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sp,
                                    ptrdiff_t sm, const uint32_t* Bp, float* C, ptrdiff_t ldc,
                                    ptrdiff_t c_lo, ptrdiff_t c_hi, ptrdiff_t m_lo,
                                    ptrdiff_t m_hi, const float* bias) {}
static void fl_pack_pairs_of_rows_bf16(ptrdiff_t K, const float* A, ptrdiff_t lda,
                                       uint32_t* Ap, ptrdiff_t ld, ptrdiff_t m_lo,
                                       ptrdiff_t m_hi) {}
static void fl_avx2_math_array(int which, ptrdiff_t n, const float* x, float* y) {}
static void fl_lstm_fwd_fused_f32(
        ptrdiff_t n_rows, ptrdiff_t H, const float* h_old, const float* Wp,
        const int64_t* rows, ptrdiff_t B, ptrdiff_t t, const float* xproj, ptrdiff_t I,
        const float* x, const float* bias, const float* peep, int use_peep,
        float forget_bias, float clip, float* c_loc, float* h_new, float* acts,
        float* act_tmp, const fl_layout_f32* out, float* c_unclipped, ptrdiff_t g_lo,
        ptrdiff_t g_hi, int bf16) {}
static void fl_gemm_dz_wt_f32(ptrdiff_t n_rows, ptrdiff_t H, const float* dz,
                              const float* WTp, float* dh, ptrdiff_t c_lo, ptrdiff_t c_hi,
                              int bf16) {}
static void fl_avx512_math_array(int which, ptrdiff_t n, const float* x, float* y) {}
static void fl_gemm_rows_wt_f32(ptrdiff_t n_rows, const int64_t* rows, ptrdiff_t K,
                                const float* A, ptrdiff_t lda, const float* WTp, ptrdiff_t N,
                                float* C, const int64_t* c_off, ptrdiff_t ldc, ptrdiff_t c_lo,
                                ptrdiff_t c_hi, int bf16) {}
static void fl_gemm_tn_f32(ptrdiff_t K, const int64_t* krows, ptrdiff_t n_seg,
                           const float* const* A, const ptrdiff_t* lda, const ptrdiff_t* M,
                           const float* B, ptrdiff_t ldb, float* C, ptrdiff_t ldc,
                           ptrdiff_t c_lo, ptrdiff_t c_hi, float* Bp) {}
#endif

#endif
