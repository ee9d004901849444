# The float / double fused type and the row-major products of the per-step paths (BLAS,
# or bfloat16 tiles).

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


cdef inline void _step_product(const float* packed, bint bf16, bint trans_b, int m, int n,
                               int k, const floating* A, int lda, const floating* B, int ldb,
                               floating* C, int ldc) noexcept nogil:
    """:func:`_gemm_rowmajor`, or with ``packed`` (not NULL; float32 only) on the tiles of
    ``gemm_rows_wt``: ``op(B)`` (k, n) packed once per call, in float32 by ``pack_fused_t``
    of ``op(B).T`` or, ``bf16``, rounded by ``pack_rows_bf16`` (``op(B) = B``) or
    ``pack_fused_t_bf16`` (``op(B) = B.T``), A's rows then rounded in the tiles."""
    if packed != NULL:
        if floating is float:
            fl_gemm_rows_wt_f32(m, NULL, k, A, lda, packed, n, C, NULL, ldc, 0, (n + 63) // 64,
                                bf16)
        return
    _gemm_rowmajor(trans_b, m, n, k, A, lda, B, ldb, C, ldc)


cdef const float* _step_operand(w_bf16, w_f32, Py_ssize_t k, Py_ssize_t n, bint is_float,
                                bint* bf16) except? NULL:
    """The per-step operand ``op(B)`` (k, n), packed, checked: ``w_bf16`` (see
    :func:`_packed_bf16_or_null`; sets ``bf16``) or ``w_f32`` (float32, ``pack_fused_t`` of
    ``op(B).T``, for the fused kernels' tiles); NULL for neither (BLAS per step)."""
    bf16[0] = w_bf16 is not None
    if w_bf16 is not None and w_f32 is not None:
        raise ValueError("give the per-step operand packed once: w_bf16 or w_f32, not both")
    if w_f32 is None:
        return _packed_bf16_or_null(w_bf16, k, n, is_float)
    if not is_float:
        raise ValueError("float32 tiles (w_f32) need float32 arrays")
    if not _FUSED_STEP:
        raise ValueError("float32 tiles (w_f32) need the fused kernels (have_fused_step())")
    cdef const float[:, :, ::1] p = w_f32
    if p.shape[0] != (n + 63) // 64 or p.shape[1] != k or p.shape[2] != 64:
        raise ValueError(f"w_f32 must be ({(n + 63) // 64}, {k}, 64) (pack_fused_t of the "
                         f"({n}, {k}) operand op(B).T), got {np.shape(w_f32)}")
    return &p[0, 0, 0]


cdef const float* _packed_bf16_or_null(packed, Py_ssize_t k, Py_ssize_t n,
                                       bint is_float) except? NULL:
    """The address of ``packed`` (uint32 pair rows of a (k, n) operand, as ``pack_rows_bf16``
    gives them), checked; NULL for None."""
    if packed is None:
        return NULL
    if not is_float:
        raise ValueError("bfloat16 products need float32 arrays")
    _bf16_kernels_or_raise()
    cdef const uint32_t[:, :, ::1] p = packed
    if p.shape[0] != (n + 63) // 64 or p.shape[1] != (k + 1) // 2 or p.shape[2] != 64:
        raise ValueError(f"a packed operand must be ({(n + 63) // 64}, {(k + 1) // 2}, 64) "
                         f"(pack_rows_bf16 of the ({k}, {n}) operand), got "
                         f"{np.shape(packed)}")
    return <const float*>&p[0, 0, 0]
