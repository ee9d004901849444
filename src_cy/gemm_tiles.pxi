# The GEMMs outside the recurrence: the weight gradients' and the input gradient's tiles,
# BLAS blocks on the kernels' OpenMP threads, the threaded axis swap.

def gemm_rows_wt(const float[:, :] a, const float[:, :, ::1] wt_packed, Py_ssize_t n,
                 float[::1] out, const int64_t[::1] out_offsets,
                 const int64_t[::1] rows=None, int n_threads=1, bint bf16=False):
    """Rows of ``a @ W.T`` (``W`` (n, K) packed by :func:`pack_fused_t`) written to
    ``out[out_offsets[m]:][:n]``: row m from ``a``'s row ``rows[m]`` (or m), for m over
    ``out_offsets``; the fused kernels' tiles (where :func:`have_fused_step`), the rows
    dealt to the OpenMP threads, each element one in-order sum over K: the same bits for
    any count. ``bf16``: bfloat16 products, ``W`` packed by :func:`pack_fused_t_bf16`
    (viewed as float32) and ``a``'s rows rounded in the tiles."""
    cdef Py_ssize_t m = out_offsets.shape[0], K = a.shape[1], k, per, lo, hi
    cdef Py_ssize_t n_blocks = (n + 63) // 64
    if not _FUSED_STEP:
        raise RuntimeError("the fused kernels do not run here: use the BLAS blocks")
    if bf16:
        _bf16_kernels_or_raise()
    if (wt_packed.shape[0] != n_blocks or wt_packed.shape[2] != 64
            or wt_packed.shape[1] != ((K + 1) // 2 if bf16 else K)):
        raise ValueError("wt_packed must be W (n, K) packed by pack_fused_t"
                         + ("_bf16" if bf16 else ""))
    if K > 1 and a.strides[1] != sizeof(float):
        raise ValueError("gemm_rows_wt needs rows with contiguous elements")
    if rows is not None and rows.shape[0] != m:
        raise ValueError("rows and out_offsets must have one entry per output row")
    if m == 0 or n == 0:
        return
    if (rows is not None and (np.min(rows) < 0 or np.max(rows) >= a.shape[0])) or (
            rows is None and m > a.shape[0]):
        raise ValueError("rows must index the rows of a")
    if np.min(out_offsets) < 0 or np.max(out_offsets) + n > out.shape[0]:
        raise ValueError("out_offsets must leave room for n values in out")
    cdef Py_ssize_t lda = a.strides[0] // <Py_ssize_t>sizeof(float)
    cdef const int64_t* rp = &rows[0] if rows is not None else NULL
    n_threads = max(1, min(n_threads, (m + 3) // 4))
    per = ((m + n_threads - 1) // n_threads + 7) // 8 * 8      # whole tiles per thread
    for k in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
        lo = k * per
        hi = min(m, lo + per)
        if lo < hi:
            fl_gemm_rows_wt_f32(hi - lo, rp + lo if rp != NULL else NULL, K,
                                &a[0, 0] if rp != NULL else &a[lo, 0], lda,
                                &wt_packed[0, 0, 0], n, &out[0], &out_offsets[lo], 0, 0,
                                n_blocks, bf16)


# --------------------------------------------------------------- the GEMMs outside the loop
def gemm_tn_tiles(segments, const float[:, :] b, float[:, ::1] out, int n_threads,
                  const int64_t[::1] rows=None):
    """``out (M, N) = a.T @ b`` for ``a`` = the column-wise concatenation of
    ``segments`` (an array or a sequence of arrays, each (K, M_s), with M the sum of the
    M_s) and ``b`` (K, N) with contiguous rows, N a multiple of 64, by the register tiles
    of fused_step.h (where :func:`have_fused_step`). A segment's rows may be any distance
    apart, 0 included (``np.broadcast_to(ones, (K, 1))``: the bias gradient's column
    sums). ``rows``: sum over these rows of ``a`` and ``b`` only (no gathered copies).
    64-column blocks of ``out`` are dealt to the OpenMP threads; each element is one sum
    in fixed pieces, so any thread count gives the same bits."""
    if not _FUSED_STEP:
        raise RuntimeError("the fused kernels do not run here: use the BLAS blocks")
    if not isinstance(segments, (list, tuple)):
        segments = [segments]
    cdef Py_ssize_t K = b.shape[0], N = b.shape[1], n_seg = len(segments), s, M = 0
    cdef Py_ssize_t K_sum = K
    cdef const int64_t* krows = NULL
    if rows is not None:
        if rows.shape[0] and (np.min(rows) < 0 or np.max(rows) >= K):
            raise ValueError("rows must index the K rows of b")
        K_sum = rows.shape[0]
        krows = &rows[0] if K_sum else NULL
    if n_seg < 1 or n_seg > 8:
        raise ValueError("gemm_tn_tiles takes 1 to 8 segments")
    cdef const float* seg_ptr[8]
    cdef Py_ssize_t seg_ld[8]
    cdef Py_ssize_t seg_m[8]
    cdef const float[:, :] a
    for s in range(n_seg):
        a = segments[s]
        if a.shape[0] != K:
            raise ValueError("every segment needs the K rows of b")
        if a.shape[1] > 1 and a.strides[1] != sizeof(float):
            raise ValueError("gemm_tn_tiles needs rows with contiguous elements")
        seg_ptr[s] = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
        seg_ld[s] = a.strides[0] // <Py_ssize_t>sizeof(float)
        seg_m[s] = a.shape[1]
        M += a.shape[1]
    if out.shape[0] != M or out.shape[1] != N or N % 64:
        raise ValueError("gemm_tn_tiles needs out (M, N) and N % 64 == 0")
    if b.shape[1] > 1 and b.strides[1] != sizeof(float):
        raise ValueError("gemm_tn_tiles needs rows with contiguous elements")
    if M == 0 or N == 0:
        return
    if K_sum == 0:
        out[...] = 0
        return
    cdef Py_ssize_t ldb = b.strides[0] // <Py_ssize_t>sizeof(float)
    cdef Py_ssize_t n_blocks = N // 64, per, k
    n_threads = max(1, min(n_threads, n_blocks))
    per = (n_blocks + n_threads - 1) // n_threads
    # each thread's copies of B's pieces (128 KB rows, on cache lines: _workspace)
    cdef float[:, ::1] pieces = scratch("gemm_tn_pieces",
                                        (n_threads, FL_TN_GROUP * FL_TN_KS * 64), np.float32)
    for k in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
        if k * per < n_blocks:
            fl_gemm_tn_f32(K_sum, krows, n_seg, seg_ptr, seg_ld, seg_m, &b[0, 0], ldb,
                           &out[0, 0], N, k * per, min(n_blocks, (k + 1) * per),
                           &pieces[k, 0])


def gemm_tn_bf16(segments, const float[:, :] b, float[:, ::1] out, int n_threads,
                 const int64_t[::1] rows=None):
    """:func:`gemm_tn_tiles` with bfloat16 products (both operands rounded to nearest
    even, float32 sums): the segments and ``b`` are first rounded into pair rows (two
    rows of k per dword, threads split over the pairs), then tiles of 4 rows of ``out``
    by 64 columns, dealt to the threads, sum the pairs in order: the same bits for any
    thread count. Needs the bfloat16 kernels."""
    _bf16_kernels_or_raise()
    if not isinstance(segments, (list, tuple)):
        segments = [segments]
    cdef Py_ssize_t K = b.shape[0], N = b.shape[1], n_seg = len(segments), s, M = 0
    cdef Py_ssize_t K_sum = K, K2, lo, hi, part
    cdef const int64_t* krows = NULL
    if rows is not None:
        if rows.shape[0] and (np.min(rows) < 0 or np.max(rows) >= K):
            raise ValueError("rows must index the K rows of b")
        K_sum = rows.shape[0]
        krows = &rows[0] if K_sum else NULL
    if n_seg < 1 or n_seg > 8:
        raise ValueError("gemm_tn_bf16 takes 1 to 8 segments")
    cdef const float* seg_ptr[8]
    cdef Py_ssize_t seg_ld[8]
    cdef Py_ssize_t seg_m[8]
    cdef Py_ssize_t seg_off[8]
    cdef const float[:, :] a
    for s in range(n_seg):
        a = segments[s]
        if a.shape[0] != K:
            raise ValueError("every segment needs the K rows of b")
        if a.shape[1] > 1 and a.strides[1] != sizeof(float):
            raise ValueError("gemm_tn_bf16 needs rows with contiguous elements")
        seg_ptr[s] = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
        seg_ld[s] = a.strides[0] // <Py_ssize_t>sizeof(float)
        seg_m[s] = a.shape[1]
        seg_off[s] = M
        M += a.shape[1]
    if out.shape[0] != M or out.shape[1] != N or N % 64:
        raise ValueError("gemm_tn_bf16 needs out (M, N) and N % 64 == 0")
    if N > 1 and b.strides[1] != sizeof(float):
        raise ValueError("gemm_tn_bf16 needs rows with contiguous elements")
    if M == 0 or N == 0:
        return
    if K_sum == 0:
        out[...] = 0
        return
    K2 = (K_sum + 1) // 2
    # this thread's scratch buffers: fresh pages would cost a fault each
    cdef uint32_t[:, ::1] a_pairs = scratch("gemm_tn_bf16_a", (K2, M), np.uint32)
    cdef uint32_t[:, :, ::1] b_pairs = scratch("gemm_tn_bf16_b", (N // 64, K2, 64), np.uint32)
    cdef Py_ssize_t ldb = b.strides[0] // <Py_ssize_t>sizeof(float), n_parts, c
    n_parts = max(1, min(n_threads, K2))
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        lo = K2 * part // n_parts
        hi = K2 * (part + 1) // n_parts
        for s in range(n_seg):
            if seg_m[s]:
                fl_pack_row_pairs_bf16(K_sum, krows, seg_ptr[s], seg_ld[s], seg_m[s],
                                       &a_pairs[0, seg_off[s]], M, lo, hi)
        for c in range(N // 64):
            fl_pack_row_pairs_bf16(K_sum, krows, &b[0, 64 * c], ldb, 64, &b_pairs[c, 0, 0],
                                   64, lo, hi)
    if not _AMX:
        _pairs_product(K2, &a_pairs[0, 0], M, 1, &b_pairs[0, 0, 0], &out[0, 0], M, N,
                       n_threads)
        return
    # AMX tiles read A's pairs along its rows: the pair rows transposed first
    cdef Py_ssize_t ld = FL_PAIRS_LD(K2)             # rows on cache lines
    cdef uint32_t[:, ::1] a_rows = scratch("gemm_tn_bf16_at", (M, ld), np.uint32)
    n_parts = max(1, min(n_threads, M))
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pairs_transpose(K2, M, &a_pairs[0, 0], &a_rows[0, 0], ld, M * part // n_parts,
                           M * (part + 1) // n_parts)
    _pairs_product(K2, &a_rows[0, 0], 1, ld, &b_pairs[0, 0, 0], &out[0, 0], M, N,
                   n_threads)


cdef void _pairs_product(Py_ssize_t K2, const uint32_t* ap, Py_ssize_t sp, Py_ssize_t sm,
                         const uint32_t* bp, float* c, Py_ssize_t M, Py_ssize_t N,
                         int n_threads, const float* bias=NULL) noexcept:
    """fl_gemm_pairs_bf16 over all of C (M, N), N % 64 == 0, then C += bias (N,) where it
    is not NULL: the 64-column blocks dealt to the threads where there are enough of them,
    else rows in whole tiles."""
    cdef Py_ssize_t blocks = N // 64, n_parts, part, lo, hi
    if blocks >= n_threads or M < 8 * n_threads:
        n_parts = max(1, min(n_threads, blocks))
        for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
            fl_gemm_pairs_bias_bf16(K2, ap, sp, sm, bp, c, N, blocks * part // n_parts,
                                    blocks * (part + 1) // n_parts, 0, M, bias)
    else:
        n_parts = n_threads
        for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
            lo = (M * part // n_parts) // 4 * 4
            hi = M if part == n_parts - 1 else (M * (part + 1) // n_parts) // 4 * 4
            if hi > lo:
                fl_gemm_pairs_bias_bf16(K2, ap, sp, sm, bp, c, N, 0, blocks, lo, hi, bias)


def gemm_rows_bf16(const float[:, :] a, const uint32_t[:, :, ::1] b_packed,
                   float[:, ::1] out, int n_threads=1, const float[::1] bias=None):
    """``out (M, N) = a (M, K) @ B`` with bfloat16 products, for ``B`` (K, N) packed by
    :func:`pack_rows_bf16` (or ``B = W.T`` by :func:`pack_fused_t_bf16`) and N a multiple
    of 64: ``a``'s rows rounded into pair rows once (threads split over them), then the
    tiles of :func:`gemm_tn_bf16`. The input projection ``x W_x`` of a whole sequence
    batch; any thread count gives the same bits. ``bias`` (N,): ``out = a @ B + bias``,
    the bias added to the finished sums (the bits of NumPy's ``out += bias``)."""
    _bf16_kernels_or_raise()
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = out.shape[1], K2 = (K + 1) // 2
    cdef Py_ssize_t n_parts, part
    if K > 1 and a.strides[1] != sizeof(float):
        raise ValueError("gemm_rows_bf16 needs rows with contiguous elements")
    if (N % 64 or out.shape[0] != M or b_packed.shape[0] != N // 64
            or b_packed.shape[1] != K2 or b_packed.shape[2] != 64):
        raise ValueError("gemm_rows_bf16 needs out (M, N), N % 64 == 0 and B (K, N) packed "
                         "by pack_rows_bf16")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"bias must have {N} elements, not {bias.shape[0]}")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[...] = 0
        if bias is not None:
            np.asarray(out)[...] += np.asarray(bias)
        return
    cdef Py_ssize_t ld = FL_PAIRS_LD(K2)    # rows on cache lines (AMX loads them faster)
    cdef Py_ssize_t lda = a.strides[0] // <Py_ssize_t>sizeof(float)
    cdef uint32_t[:, ::1] a_pairs = scratch("gemm_rows_bf16_a", (M, ld), np.uint32)
    n_parts = max(1, min(n_threads, M))
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_pairs_of_rows_bf16(K, &a[0, 0], lda, &a_pairs[0, 0], ld, M * part // n_parts,
                                   M * (part + 1) // n_parts)
    _pairs_product(K2, &a_pairs[0, 0], 1, ld, &b_packed[0, 0, 0], &out[0, 0], M, N,
                   n_threads, NULL if bias is None else &bias[0])


def swap_leading_axes(const floating[:, :, :] src, floating[:, :, ::1] out, int n_threads):
    """``out[j, i] = src[i, j]``: (A, B, C) with a contiguous last axis into (B, A, C), rows
    of C copied by ``n_threads`` threads (split over B). The batch-major outputs of a
    training forward from its time-major history, and the time-major copy of batch-major
    inputs: NumPy's single-threaded copy was ~50 us of a seed-size training step, while
    the other core waited."""
    cdef Py_ssize_t A = src.shape[0], B = src.shape[1], C = src.shape[2], i, j, s_a, s_b
    if out.shape[0] != B or out.shape[1] != A or out.shape[2] != C:
        raise ValueError("out must be (B, A, C) for src (A, B, C)")
    _row_strides(src, &s_a, &s_b)                # checks the last axis
    if A == 0 or B == 0 or C == 0:
        return
    for j in prange(B, nogil=True, num_threads=max(1, min(n_threads, B)),
                    schedule="static"):
        for i in range(A):
            memcpy(&out[j, i, 0], &src[i, j, 0], C * sizeof(floating))


def gemm_blocks(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
                bint trans_a, bint trans_b, Py_ssize_t row_block, Py_ssize_t col_block,
                int n_threads):
    """``out (M, N) = op(a) @ op(b)`` cut into blocks of ``row_block`` x ``col_block``,
    one single-threaded BLAS call per block, blocks over the OpenMP threads (the kernels'
    own pool: a second pool would fight the spinning OpenMP workers for the cores;
    measured 12.1 ms against 8.4 ms for a seed-size backward).

    ``op(a)`` is ``a`` (M, K) or, with ``trans_a``, ``a.T`` for ``a`` (K, M); ``op(b)`` is
    ``b`` (K, N) or, with ``trans_b``, ``b.T`` for ``b`` (N, K). Each block computes its
    elements over the whole K, so the split never changes a bit of the result.
    """
    cdef Py_ssize_t M = out.shape[0], N = out.shape[1], K
    cdef Py_ssize_t n_rb, n_cb, k, r0, c0
    cdef int lda, ldb, ldc
    cdef char ta = b'T' if trans_b else b'N'     # column-major view: out.T = op(b).T op(a).T
    cdef char tb = b'T' if trans_a else b'N'
    K = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != M or \
            (b.shape[1] if trans_b else b.shape[0]) != K or \
            (b.shape[0] if trans_b else b.shape[1]) != N:
        raise ValueError(f"gemm_blocks: op(a) {a.shape[0], a.shape[1]} (trans {trans_a}) "
                         f"@ op(b) {b.shape[0], b.shape[1]} (trans {trans_b}) does not give "
                         f"out {M, N}")
    if row_block < 1 or col_block < 1 or n_threads < 1:
        raise ValueError("row_block, col_block and n_threads must be at least 1")
    if max(M, N, K, a.shape[1], b.shape[1]) > INT_MAX:
        raise ValueError("gemm_blocks: a size does not fit BLAS's C int")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[...] = 0
        return
    n_rb = (M + row_block - 1) // row_block
    n_cb = (N + col_block - 1) // col_block
    lda = <int>a.shape[1]
    ldb = <int>b.shape[1]
    ldc = <int>N
    for k in prange(n_rb * n_cb, nogil=True, num_threads=n_threads, schedule="static"):
        r0 = (k // n_cb) * row_block
        c0 = (k % n_cb) * col_block
        _gemm_block(ta, tb, <int>min(col_block, N - c0), <int>min(row_block, M - r0), <int>K,
                    &b[c0, 0] if trans_b else &b[0, c0], ldb,
                    &a[0, r0] if trans_a else &a[r0, 0], lda, &out[r0, c0], ldc)


cdef inline void _gemm_block(char ta, char tb, int n, int m, int k, const floating* B, int ldb,
                             const floating* A, int lda, floating* C,
                             int ldc) noexcept nogil:
    cdef floating alpha = 1, beta = 0
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)
