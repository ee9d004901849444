# [W_x; W_h] and W^T packed into the fused step's tile layout.



def pack_fused(const float[:, ::1] W_h, const float[:, ::1] W_x=None, out=None,
               int n_threads=1):
    """``[W_x; W_h]`` (or ``W_h``) packed for the fused step: see
    ``fastlstm.backends._chunking.pack_fused`` (the same layout, in NumPy). ``out``: a
    float32 array of that shape to pack into (a reused one spares the page faults of a
    fresh one: a few ms for multi-megabyte weights). ``n_threads`` pack row ranges of
    weights of ``PARALLEL_PACK_MIN_BYTES`` or more."""
    cdef Py_ssize_t H = W_h.shape[0], I = 0 if W_x is None else W_x.shape[0]
    if W_h.shape[1] != 4 * H or (W_x is not None and W_x.shape[1] != 4 * H):
        raise ValueError("W_h must be (H, 4H) and W_x (I, 4H)")
    if out is None:
        out = np.empty(((H + 15) // 16, (I + H) * 64), np.float32)
    cdef float[:, ::1] o = out
    if o.shape[0] != (H + 15) // 16 or o.shape[1] != (I + H) * 64:
        raise ValueError("out has the wrong shape")
    cdef Py_ssize_t K = I + H, n_parts = 1, part
    cdef const float* wx = &W_x[0, 0] if I > 0 else NULL
    if H == 0:
        return out
    if K * 4 * H * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, n_threads)
    if n_parts == 1:                   # no OpenMP region for one part (B=1: ~0.4 us)
        with nogil:
            fl_pack_fused_f32(I, wx, H, &W_h[0, 0], &o[0, 0], 0, K)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_f32(I, wx, H, &W_h[0, 0], &o[0, 0], part * K // n_parts,
                          (part + 1) * K // n_parts)
    return out


def pack_fused_t(const float[:, ::1] W, out=None, int n_threads=1):
    """``W.T`` for ``W`` (n, K) packed in blocks of 64 of its n rows, for the backward's
    products (``W_h`` (H, 4H): dz W_h^T; ``W_x`` (I, 4H): the input gradient): see
    ``fastlstm.backends._chunking.pack_fused_t`` (the same layout, in NumPy). ``out`` and
    ``n_threads`` as in :func:`pack_fused` (here the threads take whole blocks)."""
    cdef Py_ssize_t n = W.shape[0], K = W.shape[1], blocks = (n + 63) // 64, n_parts = 1
    cdef Py_ssize_t part
    if out is None:
        out = np.empty(((n + 63) // 64, K, 64), np.float32)
    cdef float[:, :, ::1] o = out
    if o.shape[0] != (n + 63) // 64 or o.shape[1] != K or o.shape[2] != 64:
        raise ValueError("out has the wrong shape")
    if n == 0 or K == 0:
        return out
    if n * K * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, min(n_threads, blocks))
    if n_parts == 1:
        with nogil:
            fl_pack_fused_t_f32(n, K, &W[0, 0], &o[0, 0, 0], 0, blocks)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_t_f32(n, K, &W[0, 0], &o[0, 0, 0], part * blocks // n_parts,
                            (part + 1) * blocks // n_parts)
    return out


def _bf16_kernels_or_raise():
    if not _BF16_KERNELS:
        raise ValueError("the bfloat16 kernels need a CPU with AVX512-BF16 "
                         "(have_bf16_kernels() is False here)")


def pack_fused_bf16(const float[:, ::1] W_h, const float[:, ::1] W_x=None, out=None,
                    int n_threads=1):
    """``[W_x; W_h]`` (or ``W_h``) rounded to bfloat16 (to nearest even) and packed for
    the fused bfloat16 step: :func:`pack_fused`'s groups of 16 units with two rows of k
    in each dword row, ``(bf16(W[2m, j]), bf16(W[2m + 1, j]))`` in its (low, high)
    halves, W_x's and W_h's rows each padded to an even count with zeros: (ceil(H / 16),
    (ceil(I / 2) + ceil(H / 2)) * 64) uint32 (see ``fastlstm.backends._chunking``'s
    NumPy layout). ``out``: such an array to pack into; ``n_threads`` pack the groups
    of weights of ``PARALLEL_PACK_MIN_BYTES`` or more."""
    _bf16_kernels_or_raise()
    cdef Py_ssize_t H = W_h.shape[0], I = 0 if W_x is None else W_x.shape[0]
    if W_h.shape[1] != 4 * H or (W_x is not None and W_x.shape[1] != 4 * H):
        raise ValueError("W_h must be (H, 4H) and W_x (I, 4H)")
    cdef Py_ssize_t groups = (H + 15) // 16, width = ((I + 1) // 2 + (H + 1) // 2) * 64
    if out is None:
        out = aligned_empty((groups, width), np.uint32)
    cdef uint32_t[:, ::1] o = out
    if o.shape[0] != groups or o.shape[1] != width:
        raise ValueError("out has the wrong shape")
    cdef const float* wx = &W_x[0, 0] if I > 0 else NULL
    cdef Py_ssize_t n_parts = 1, part
    if H == 0:
        return out
    if (I + H) * 4 * H * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, min(n_threads, groups))
    if n_parts == 1:
        with nogil:
            fl_pack_fused_bf16(I, wx, H, &W_h[0, 0], &o[0, 0], 0, groups)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_bf16(I, wx, H, &W_h[0, 0], &o[0, 0], part * groups // n_parts,
                           (part + 1) * groups // n_parts)
    return out


def round_bf16(a, int n_threads=1):
    """``a`` (float32, any shape) rounded to bfloat16 by the CPU's vcvtneps2bf16 (to nearest
    even; the bits of :func:`fastlstm._bfloat16.round_to_bfloat16`), as a new C-contiguous
    float32 array whose values have their low 16 bits zero. Split over ``n_threads`` from
    ``PARALLEL_PACK_MIN_BYTES``: a pass over memory, like packing."""
    _bf16_kernels_or_raise()
    src = np.ascontiguousarray(a, np.float32)
    out = np.empty_like(src)
    cdef const float[::1] x = src.reshape(-1)
    cdef float[::1] y = out.reshape(-1)
    cdef Py_ssize_t n = x.shape[0], n_parts = 1, part, lo, hi
    if n == 0:
        return out
    if 4 * n >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, n_threads)
    if n_parts == 1:
        with nogil:
            fl_bf16_round_array(n, &x[0], &y[0])
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        # 16-value boundaries: each part's vectors whole
        lo = (n * part // n_parts) // 16 * 16
        hi = n if part == n_parts - 1 else (n * (part + 1) // n_parts) // 16 * 16
        if hi > lo:
            fl_bf16_round_array(hi - lo, &x[lo], &y[lo])
    return out


def pack_rows_bf16(const float[:, :] B, out=None, int n_threads=1):
    """``B`` (K, n), rows with contiguous elements, rounded to bfloat16 and packed as
    :func:`pack_fused_t_bf16` packs ``B.T``: ((n + 63) // 64, ceil(K / 2), 64) uint32,
    ``(bf16(B[2m, 64c + j]), bf16(B[2m + 1, 64c + j]))`` at block c, pair row m, column j
    (zero past n and K). Two rows of B make a pair row, with no transposing copy (16 ms
    for a 1024 x 4096 B on the AMD EPYC here). ``out`` and ``n_threads`` as in
    :func:`pack_fused_t_bf16` (the threads split the pair rows)."""
    _bf16_kernels_or_raise()
    cdef Py_ssize_t K = B.shape[0], n = B.shape[1], K2 = (K + 1) // 2
    cdef Py_ssize_t blocks = (n + 63) // 64, c, part, n_parts, lo, hi
    if n > 1 and B.strides[1] != sizeof(float):
        raise ValueError("pack_rows_bf16 needs rows with contiguous elements")
    if out is None:
        out = aligned_empty((blocks, K2, 64), np.uint32)
    cdef uint32_t[:, :, ::1] o = out
    if o.shape[0] != blocks or o.shape[1] != K2 or o.shape[2] != 64:
        raise ValueError("out has the wrong shape")
    if n % 64:                  # the last block's columns past n
        out[blocks - 1] = 0
    if K == 0 or n == 0:
        return out
    cdef Py_ssize_t ld = B.strides[0] // <Py_ssize_t>sizeof(float)
    n_parts = 1
    if K * n * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, min(n_threads, K2))
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        lo = K2 * part // n_parts
        hi = K2 * (part + 1) // n_parts
        for c in range(blocks):
            fl_pack_row_pairs_bf16(K, NULL, &B[0, 64 * c], ld, min(64, n - 64 * c),
                                   &o[c, 0, 0], 64, lo, hi)
    return out


def pack_fused_t_bf16(const float[:, ::1] W, out=None, int n_threads=1):
    """``W.T`` for ``W`` (n, K) rounded to bfloat16 and packed as :func:`pack_fused_t`'s
    blocks of 64 of its n rows, two values of k per dword: ((n + 63) // 64, ceil(K / 2),
    64) uint32, ``(bf16(W[64c + j, 2m]), bf16(W[64c + j, 2m + 1]))`` at block c, row m,
    column j (zero past n and K). ``out`` and ``n_threads`` as in :func:`pack_fused_t`."""
    _bf16_kernels_or_raise()
    cdef Py_ssize_t n = W.shape[0], K = W.shape[1], blocks = (n + 63) // 64, n_parts = 1
    cdef Py_ssize_t part
    if out is None:
        out = aligned_empty((blocks, (K + 1) // 2, 64), np.uint32)
    cdef uint32_t[:, :, ::1] o = out
    if o.shape[0] != blocks or o.shape[1] != (K + 1) // 2 or o.shape[2] != 64:
        raise ValueError("out has the wrong shape")
    if n == 0 or K == 0:
        return out
    if n * K * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, min(n_threads, blocks))
    if n_parts == 1:
        with nogil:
            fl_pack_fused_t_bf16(n, K, &W[0, 0], &o[0, 0, 0], 0, blocks)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_t_bf16(n, K, &W[0, 0], &o[0, 0, 0], part * blocks // n_parts,
                             (part + 1) * blocks // n_parts)
    return out
