# The basic RNN's kernels: batch chunks, BLAS or the fused kernels' tiles (float32 or
# bfloat16) per step.

# --------------------------------------------------------------------------- basic RNN
cdef void _rnn_forward_chunk(const floating* xproj, const floating* W, const float* wpk,
                             bint bf16, const int64_t* seq_len, const int64_t* rows,
                             Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                             floating* hs, floating* h_loc, floating* z_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, n_active = n_rows, n_steps = seq_len[rows[0]]
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:       # rows are sorted: drop the tail
            n_active -= 1
        _step_product(wpk, bf16, False, n_active, H, H, h_loc, H, W, H, z_loc, H)
        for r in range(n_active):
            b = rows[r]
            if floating is float:
                fl_rnn_fwd_row_f32(H, &xproj[(t * B + b) * H], &z_loc[r * H], &h_loc[r * H],
                                   &hs[((t + 1) * B + b) * H])
            else:
                fl_rnn_fwd_row_f64(H, &xproj[(t * B + b) * H], &z_loc[r * H], &h_loc[r * H],
                                   &hs[((t + 1) * B + b) * H])


cdef void _rnn_backward_chunk(const floating* W, const float* wpk, bint bf16,
                              const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, const floating* hs, const floating* d_out,
                              floating* dh, floating* dz, floating* dh_loc,
                              floating* dz_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, o, n_active = 0, n_steps = seq_len[rows[0]]
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            for u in range(H):
                dh_loc[n_active * H + u] = dh[rows[n_active] * H + u]
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            o = (t * B + b) * H
            if floating is float:
                fl_rnn_bwd_row_f32(H, &hs[o + B * H], &d_out[o], &dh_loc[r * H],
                                   &dz_loc[r * H], &dz[o])
            else:
                fl_rnn_bwd_row_f64(H, &hs[o + B * H], &d_out[o], &dh_loc[r * H],
                                   &dz_loc[r * H], &dz[o])
        _step_product(wpk, bf16, True, n_active, H, H, dz_loc, H, W, H, dh_loc, H)
    for r in range(n_active):          # rows of length 0 keep dh as it came
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]


def rnn_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                const int64_t[::1] seq_len, floating[:, :, ::1] hs, int n_threads,
                Py_ssize_t chunk_rows, w_bf16=None, w_f32=None):
    """Basic RNN recurrence; see ``fastlstm.reference.rnn_forward``. ``w_bf16``: bfloat16
    products, W packed by ``pack_rows_bf16``; ``w_f32``: the fused kernels' float32 tiles,
    ``pack_fused_t(W.T)``."""
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_chunks, k, start
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    cdef Py_ssize_t T = hs.shape[0] - 1
    _check_counts(H, n_threads, chunk_rows)
    _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, H, 0, 2)
    _check_lengths(seq_len, B, T)
    cdef bint bf16
    cdef const float* wpk = _step_operand(w_bf16, w_f32, H, H, floating is float, &bf16)
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # each chunk's rows written by one thread: cache-line aligned (_workspace)
    cdef floating[:, ::1] h_loc = scratch("rnn_forward_h", (B, H), dtype)
    cdef floating[:, ::1] z_loc = scratch("rnn_forward_z", (B, H), dtype)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _rnn_forward_chunk(&xproj[0, 0, 0], &W[0, 0], wpk, bf16, &seq_len[0], &order[start],
                           _chunk_start(k + 1, B, n_chunks) - start, B, H, &hs[0, 0, 0],
                           &h_loc[start, 0], &z_loc[start, 0])


def rnn_backward(const floating[:, ::1] W, const int64_t[::1] seq_len,
                 const floating[:, :, ::1] hs, const floating[:, :, ::1] d_outputs,
                 floating[:, ::1] dh, floating[:, :, ::1] dz, int n_threads,
                 Py_ssize_t chunk_rows, w_bf16=None, w_f32=None):
    """Backward of the basic RNN; see ``fastlstm.reference.rnn_backward``. ``w_bf16``:
    bfloat16 products, W packed by ``pack_fused_t_bf16`` (the pair rows of W.T);
    ``w_f32``: the fused kernels' float32 tiles, ``pack_fused_t(W)``."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    cdef Py_ssize_t T = d_outputs.shape[0]
    _check_counts(H, n_threads, chunk_rows)
    _expect("d_outputs", d_outputs.shape[0], d_outputs.shape[1], d_outputs.shape[2],
            T, B, H, 3)
    _expect("hs", hs.shape[0], hs.shape[1], hs.shape[2], T + 1, B, H, 3)
    _expect("dz", dz.shape[0], dz.shape[1], dz.shape[2], T, B, H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, H, 0, 2)
    _check_lengths(seq_len, B, T)
    cdef bint bf16
    cdef const float* wpk = _step_operand(w_bf16, w_f32, H, H, floating is float, &bf16)
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # each chunk's rows written by one thread: cache-line aligned (_workspace)
    cdef floating[:, ::1] dh_loc = scratch("rnn_backward_dh", (B, H), dtype)
    cdef floating[:, ::1] dz_loc = scratch("rnn_backward_dz", (B, H), dtype)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _rnn_backward_chunk(&W[0, 0], wpk, bf16, &seq_len[0], &order[start],
                            _chunk_start(k + 1, B, n_chunks) - start,
                            B, H, &hs[0, 0, 0], &d_outputs[0, 0, 0], &dh[0, 0],
                            &dz[0, 0, 0], &dh_loc[start, 0], &dz_loc[start, 0])
