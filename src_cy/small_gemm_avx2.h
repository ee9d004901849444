/* The per-step product of a few rows on the BLAS path, float32, AVX2 + FMA: row-major
 * C (m x n) = A (m x k) @ B (k x n), B read where it lies.
 *
 * Why: on CPUs without AVX-512 each step of each chunk is one product h W_h, and
 * OpenBLAS's sgemm packs all of W_h for every call, which for a few rows costs more than
 * the arithmetic: measured with OpenBLAS's Haswell kernels, (8, 100, 64, 128) inference
 * took 3.2 ms against torch's 1.9. Here two rows at a time run over 32 columns of B (eight
 * ymm accumulators, each an in-order FMA chain over k), and the k x 32 block of B they
 * read stays in L1 for the next pair of rows.
 *
 * Used for 2 .. FL_SMALL_GEMM_MAX_ROWS rows and n a multiple of 32 (a single row is a
 * gemv; more rows amortise BLAS's packing). */
#ifndef FASTLSTM_SMALL_GEMM_AVX2_H
#define FASTLSTM_SMALL_GEMM_AVX2_H

#include <stddef.h>

#define FL_SMALL_GEMM_MAX_ROWS 16

#if defined(__GNUC__) && defined(__x86_64__)       /* GCC and clang */
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static void fl_small_gemm_f32(int m, int n, int k, const float* restrict A, int lda,
                              const float* restrict B, int ldb, float* restrict C,
                              int ldc) {
    for (int j0 = 0; j0 < n; j0 += 32) {
        const float* Bj = B + j0;
        int r = 0;
        for (; r + 2 <= m; r += 2) {
            const float* a0 = A + (ptrdiff_t)r * lda;
            const float* a1 = a0 + lda;
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
            __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            for (int kk = 0; kk < k; kk++) {
                const float* b = Bj + (ptrdiff_t)kk * ldb;
                const __m256 w0 = _mm256_loadu_ps(b), w1 = _mm256_loadu_ps(b + 8);
                const __m256 w2 = _mm256_loadu_ps(b + 16), w3 = _mm256_loadu_ps(b + 24);
                __m256 s = _mm256_set1_ps(a0[kk]);
                c00 = _mm256_fmadd_ps(s, w0, c00); c01 = _mm256_fmadd_ps(s, w1, c01);
                c02 = _mm256_fmadd_ps(s, w2, c02); c03 = _mm256_fmadd_ps(s, w3, c03);
                s = _mm256_set1_ps(a1[kk]);
                c10 = _mm256_fmadd_ps(s, w0, c10); c11 = _mm256_fmadd_ps(s, w1, c11);
                c12 = _mm256_fmadd_ps(s, w2, c12); c13 = _mm256_fmadd_ps(s, w3, c13);
            }
            float* c0 = C + (ptrdiff_t)r * ldc + j0;
            float* c1 = c0 + ldc;
            _mm256_storeu_ps(c0, c00); _mm256_storeu_ps(c0 + 8, c01);
            _mm256_storeu_ps(c0 + 16, c02); _mm256_storeu_ps(c0 + 24, c03);
            _mm256_storeu_ps(c1, c10); _mm256_storeu_ps(c1 + 8, c11);
            _mm256_storeu_ps(c1 + 16, c12); _mm256_storeu_ps(c1 + 24, c13);
        }
        if (r < m) {                                   /* an odd last row */
            const float* a0 = A + (ptrdiff_t)r * lda;
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
            for (int kk = 0; kk < k; kk++) {
                const float* b = Bj + (ptrdiff_t)kk * ldb;
                const __m256 s = _mm256_set1_ps(a0[kk]);
                c00 = _mm256_fmadd_ps(s, _mm256_loadu_ps(b), c00);
                c01 = _mm256_fmadd_ps(s, _mm256_loadu_ps(b + 8), c01);
                c02 = _mm256_fmadd_ps(s, _mm256_loadu_ps(b + 16), c02);
                c03 = _mm256_fmadd_ps(s, _mm256_loadu_ps(b + 24), c03);
            }
            float* c0 = C + (ptrdiff_t)r * ldc + j0;
            _mm256_storeu_ps(c0, c00); _mm256_storeu_ps(c0 + 8, c01);
            _mm256_storeu_ps(c0 + 16, c02); _mm256_storeu_ps(c0 + 24, c03);
        }
    }
}
#else
static void fl_small_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B,
                              int ldb, float* C, int ldc) {}
#endif

#endif
