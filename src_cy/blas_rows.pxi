# The float / double fused type and the row-major BLAS product of the per-step paths.

ctypedef fused floating:
    float
    double


cdef inline void _gemm_rowmajor(bint trans_b, int m, int n, int k, const floating* A,
                                int lda, const floating* B, int ldb, floating* C,
                                int ldc) noexcept nogil:
    """Row-major ``C (m, n) = A (m, k) @ op(B)``, ``op(B) = B (k, n)`` or ``B.T`` for B (n, k).

    BLAS is column-major, where a row-major matrix reads as its transpose, so this asks
    for ``C.T = op(B).T @ A.T``: the operands swap and A needs no transpose flag.

    A single row (a batch of one, the last sequence left in a chunk) is a matrix-vector
    product: OpenBLAS's gemm packs all of B for it on every call. Measured per step of
    (1, 150, 256, 256), one thread, gemm / gemv: 103 / 9 us with OpenBLAS's Haswell
    (AVX2) kernels, 15 / 5 us with its SkylakeX ones. A few rows, float32, ``B`` not
    transposed, on CPUs without AVX-512: small_gemm_avx2.h (``_SMALL_GEMM``).
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'N'
    cdef floating alpha = 1
    cdef floating beta = 0
    cdef int one = 1
    if m == 0:
        return
    if m == 1:
        # c (n) = op(B) applied to a: row-major B (k, n) is, column-major, an (n, k)
        # matrix with leading dimension ldb (so 'N'); B (n, k) is a (k, n) one ('T')
        if trans_b:
            if floating is float:
                sgemv(&ta, &k, &n, &alpha, <float*>B, &ldb, <float*>A, &one, &beta, C, &one)
            else:
                dgemv(&ta, &k, &n, &alpha, <double*>B, &ldb, <double*>A, &one, &beta, C,
                      &one)
        else:
            if floating is float:
                sgemv(&ta, &n, &k, &alpha, <float*>B, &ldb, <float*>A, &one, &beta, C, &one)
            else:
                dgemv(&ta, &n, &k, &alpha, <double*>B, &ldb, <double*>A, &one, &beta, C,
                      &one)
        return
    if floating is float:
        if _SMALL_GEMM and not trans_b and m <= FL_SMALL_GEMM_MAX_ROWS and n % 32 == 0:
            fl_small_gemm_f32(m, n, k, <float*>A, lda, <float*>B, ldb, C, ldc)
            return
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)
