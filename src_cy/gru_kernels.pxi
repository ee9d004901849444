# The GRU's kernels, included into _recurrent.pyx (they share its BLAS wrapper, chunking
# and checks). Batch chunks as the basic RNN's: rows sorted longest first, one chunk per
# thread for its whole time loop, the per-step products in single-threaded BLAS, the
# elementwise step in src_cy/gru_rows.h.

cdef extern from "gru_rows.h":
    void fl_gru_fwd_ra_row_f32(Py_ssize_t H, const float* xp, const float* z,
                               const float* b_h, float* h_loc, float* act, float* hzc_row,
                               float* hs_row) noexcept nogil
    void fl_gru_fwd_ra_row_f64(Py_ssize_t H, const double* xp, const double* z,
                               const double* b_h, double* h_loc, double* act,
                               double* hzc_row, double* hs_row) noexcept nogil
    void fl_gru_fwd_gates_row_f32(Py_ssize_t H, const float* xp, const float* z,
                                  const float* h_loc, float* act, float* u_loc,
                                  float* rh_loc) noexcept nogil
    void fl_gru_fwd_gates_row_f64(Py_ssize_t H, const double* xp, const double* z,
                                  const double* h_loc, double* act, double* u_loc,
                                  double* rh_loc) noexcept nogil
    void fl_gru_fwd_cand_row_f32(Py_ssize_t H, const float* xp, const float* g,
                                 const float* u_loc, float* h_loc, float* act,
                                 float* hs_row) noexcept nogil
    void fl_gru_fwd_cand_row_f64(Py_ssize_t H, const double* xp, const double* g,
                                 const double* u_loc, double* h_loc, double* act,
                                 double* hs_row) noexcept nogil
    void fl_gru_bwd_ra_row_f32(Py_ssize_t H, const float* act, const float* hzc,
                               const float* h_prev, const float* d_out, const float* dh,
                               float* dzh, float* dhu, float* dz_row) noexcept nogil
    void fl_gru_bwd_ra_row_f64(Py_ssize_t H, const double* act, const double* hzc,
                               const double* h_prev, const double* d_out, const double* dh,
                               double* dzh, double* dhu, double* dz_row) noexcept nogil
    void fl_gru_bwd_cand_row_f32(Py_ssize_t H, const float* act, const float* h_prev,
                                 const float* d_out, const float* dh, float* dzc,
                                 float* dzru, float* dhu, float* dz_row) noexcept nogil
    void fl_gru_bwd_cand_row_f64(Py_ssize_t H, const double* act, const double* h_prev,
                                 const double* d_out, const double* dh, double* dzc,
                                 double* dzru, double* dhu, double* dz_row) noexcept nogil
    void fl_gru_bwd_reset_row_f32(Py_ssize_t H, const float* act, const float* h_prev,
                                  const float* drh, float* dzru, float* dhu,
                                  float* dz_row) noexcept nogil
    void fl_gru_bwd_reset_row_f64(Py_ssize_t H, const double* act, const double* h_prev,
                                  const double* drh, double* dzru, double* dhu,
                                  double* dz_row) noexcept nogil


cdef void _gru_forward_chunk(const floating* xproj, const floating* W, const float* wpk0,
                             const float* wpk1, bint bf16, const floating* b_h,
                             bint reset_after, const int64_t* seq_len, const int64_t* rows,
                             Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H, floating* hs,
                             floating* acts, floating* hzc, floating* h_loc, floating* z_loc,
                             floating* rh_loc, floating* g_loc,
                             floating* u_loc) noexcept nogil:
    """``acts``/``hzc`` NULL: inference. ``z_loc`` (n, 3H) holds ``h W`` (reset_after) or
    ``h W_ru`` (n, 2H); ``g_loc`` (n, H) ``(r * h) W_c``."""
    cdef Py_ssize_t r, u, t, b, o, n_active = n_rows, n_steps = seq_len[rows[0]]
    cdef Py_ssize_t G = 3 * H
    cdef floating* act
    cdef floating* hz
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:       # rows are sorted: drop the tail
            n_active -= 1
        if reset_after:
            _step_product(wpk0, bf16, False, n_active, G, H, h_loc, H, W, G, z_loc, G)
        else:
            _step_product(wpk0, bf16, False, n_active, 2 * H, H, h_loc, H, W, G, z_loc,
                          2 * H)
        for r in range(n_active):
            b = rows[r]
            o = t * B + b
            act = &acts[o * G] if acts != NULL else NULL
            if reset_after:
                hz = &hzc[o * H] if hzc != NULL else NULL
                if floating is float:
                    fl_gru_fwd_ra_row_f32(H, &xproj[o * G], &z_loc[r * G], b_h, &h_loc[r * H],
                                          act, hz, &hs[(o + B) * H])
                else:
                    fl_gru_fwd_ra_row_f64(H, &xproj[o * G], &z_loc[r * G], b_h, &h_loc[r * H],
                                          act, hz, &hs[(o + B) * H])
            else:
                if floating is float:
                    fl_gru_fwd_gates_row_f32(H, &xproj[o * G], &z_loc[r * 2 * H],
                                             &h_loc[r * H], act, &u_loc[r * H],
                                             &rh_loc[r * H])
                else:
                    fl_gru_fwd_gates_row_f64(H, &xproj[o * G], &z_loc[r * 2 * H],
                                             &h_loc[r * H], act, &u_loc[r * H],
                                             &rh_loc[r * H])
        if reset_after:
            continue
        _step_product(wpk1, bf16, False, n_active, H, H, rh_loc, H, &W[2 * H], G, g_loc, H)
        for r in range(n_active):
            b = rows[r]
            o = t * B + b
            act = &acts[o * G] if acts != NULL else NULL
            if floating is float:
                fl_gru_fwd_cand_row_f32(H, &xproj[o * G], &g_loc[r * H], &u_loc[r * H],
                                        &h_loc[r * H], act, &hs[(o + B) * H])
            else:
                fl_gru_fwd_cand_row_f64(H, &xproj[o * G], &g_loc[r * H], &u_loc[r * H],
                                        &h_loc[r * H], act, &hs[(o + B) * H])


cdef void _gru_backward_chunk(const floating* W, const float* wpk0, const float* wpk1,
                              bint bf16, bint reset_after, const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, const floating* hs, const floating* acts,
                              const floating* hzc, const floating* d_out, floating* dh,
                              floating* dz, floating* dh_loc, floating* dzh_loc,
                              floating* dzc_loc, floating* drh_loc,
                              floating* dhu_loc) noexcept nogil:
    """``dzh_loc`` (n, 3H): [dz_r, dz_u, r dz_c] (reset_after) or [dz_r, dz_u] (n, 2H)."""
    cdef Py_ssize_t r, u, t, b, o, n_active = 0, n_steps = seq_len[rows[0]]
    cdef Py_ssize_t G = 3 * H
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            for u in range(H):
                dh_loc[n_active * H + u] = dh[rows[n_active] * H + u]
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            o = t * B + b
            if reset_after:
                if floating is float:
                    fl_gru_bwd_ra_row_f32(H, &acts[o * G], &hzc[o * H], &hs[o * H],
                                          &d_out[o * H], &dh_loc[r * H], &dzh_loc[r * G],
                                          &dhu_loc[r * H], &dz[o * G])
                else:
                    fl_gru_bwd_ra_row_f64(H, &acts[o * G], &hzc[o * H], &hs[o * H],
                                          &d_out[o * H], &dh_loc[r * H], &dzh_loc[r * G],
                                          &dhu_loc[r * H], &dz[o * G])
            else:
                if floating is float:
                    fl_gru_bwd_cand_row_f32(H, &acts[o * G], &hs[o * H], &d_out[o * H],
                                            &dh_loc[r * H], &dzc_loc[r * H],
                                            &dzh_loc[r * 2 * H], &dhu_loc[r * H], &dz[o * G])
                else:
                    fl_gru_bwd_cand_row_f64(H, &acts[o * G], &hs[o * H], &d_out[o * H],
                                            &dh_loc[r * H], &dzc_loc[r * H],
                                            &dzh_loc[r * 2 * H], &dhu_loc[r * H], &dz[o * G])
        if reset_after:
            _step_product(wpk0, bf16, True, n_active, H, G, dzh_loc, G, W, G, dh_loc, H)
        else:
            _step_product(wpk1, bf16, True, n_active, H, H, dzc_loc, H, &W[2 * H], G, drh_loc,
                          H)
            for r in range(n_active):
                b = rows[r]
                o = t * B + b
                if floating is float:
                    fl_gru_bwd_reset_row_f32(H, &acts[o * G], &hs[o * H], &drh_loc[r * H],
                                             &dzh_loc[r * 2 * H], &dhu_loc[r * H], &dz[o * G])
                else:
                    fl_gru_bwd_reset_row_f64(H, &acts[o * G], &hs[o * H], &drh_loc[r * H],
                                             &dzh_loc[r * 2 * H], &dhu_loc[r * H], &dz[o * G])
            _step_product(wpk0, bf16, True, n_active, H, 2 * H, dzh_loc, 2 * H, W, G, dh_loc,
                          H)
        for r in range(n_active):
            for u in range(H):
                dh_loc[r * H + u] = dhu_loc[r * H + u] + dh_loc[r * H + u]
    for r in range(n_active):          # rows of length 0 keep dh as it came
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]


cdef int _check_gru_history(const floating[:, :, ::1] acts, const floating[:, :, ::1] hzc,
                            bint reset_after, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                            bint required) except -1:
    """``acts`` (T, B, 3H) and, with ``reset_after``, ``hzc`` (T, B, H); both may be empty
    (inference) unless ``required`` (the backward)."""
    if required or acts.shape[0] > 0:
        _expect("acts", acts.shape[0], acts.shape[1], acts.shape[2], T, B, 3 * H, 3)
        if reset_after:
            _expect("hzc", hzc.shape[0], hzc.shape[1], hzc.shape[2], T, B, H, 3)
    return 0


def gru_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                const floating[::1] recurrent_bias, bint reset_after,
                const int64_t[::1] seq_len, floating[:, :, ::1] hs,
                floating[:, :, ::1] acts, floating[:, :, ::1] hzc, int n_threads,
                Py_ssize_t chunk_rows, w_bf16=None, w_c_bf16=None, w_f32=None, w_c_f32=None):
    """GRU recurrence; see ``fastlstm.reference.gru_forward``. bfloat16 products: the
    per-step operand packed by ``pack_rows_bf16`` as ``w_bf16``, W (reset_after) or
    W[:, :2H] with W[:, 2H:] as ``w_c_bf16``. ``w_f32``, ``w_c_f32``: the same operands
    on the fused kernels' float32 tiles, ``pack_fused_t`` of their transposes."""
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_chunks, k, start
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    cdef Py_ssize_t T = hs.shape[0] - 1
    _check_counts(H, n_threads, chunk_rows)
    _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, 3 * H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, 3 * H, 0, 2)
    _expect("recurrent_bias", recurrent_bias.shape[0], 0, 0, 3 * H, 0, 0, 2)
    _check_gru_history(acts, hzc, reset_after, T, B, H, False)
    _check_lengths(seq_len, B, T)
    cdef bint bf16 = False, bf16_c = False
    cdef const float* wpk0 = _step_operand(w_bf16, w_f32, H, 3 * H if reset_after else 2 * H,
                                           floating is float, &bf16)
    cdef const float* wpk1 = (NULL if reset_after else
                              _step_operand(w_c_bf16, w_c_f32, H, H, floating is float,
                                            &bf16_c))
    if not reset_after and ((wpk0 == NULL) != (wpk1 == NULL) or bf16 != bf16_c):
        raise ValueError("packed products need both operands: w_bf16 and w_c_bf16, or "
                         "w_f32 and w_c_f32")
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # each chunk's rows written by one thread: cache-line aligned (_workspace)
    cdef floating[:, ::1] h_loc = scratch("gru_forward_h", (B, H), dtype)
    cdef floating[:, ::1] z_loc = scratch("gru_forward_z", (B, 3 * H), dtype)
    cdef floating[:, ::1] rh_loc = scratch("gru_forward_rh", (B, H), dtype)
    cdef floating[:, ::1] g_loc = scratch("gru_forward_g", (B, H), dtype)
    cdef floating[:, ::1] u_loc = scratch("gru_forward_u", (B, H), dtype)
    cdef floating* acts_p = &acts[0, 0, 0] if acts.shape[0] > 0 else NULL
    cdef floating* hzc_p = &hzc[0, 0, 0] if acts.shape[0] > 0 and reset_after else NULL
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _gru_forward_chunk(&xproj[0, 0, 0], &W[0, 0], wpk0, wpk1, bf16, &recurrent_bias[0],
                           reset_after,
                           &seq_len[0], &order[start], _chunk_start(k + 1, B, n_chunks) - start,
                           B, H, &hs[0, 0, 0], acts_p, hzc_p, &h_loc[start, 0],
                           &z_loc[start, 0], &rh_loc[start, 0], &g_loc[start, 0],
                           &u_loc[start, 0])


def gru_backward(const floating[:, ::1] W, bint reset_after, const int64_t[::1] seq_len,
                 const floating[:, :, ::1] hs, const floating[:, :, ::1] acts,
                 const floating[:, :, ::1] hzc, const floating[:, :, ::1] d_outputs,
                 floating[:, ::1] dh, floating[:, :, ::1] dz, int n_threads,
                 Py_ssize_t chunk_rows, w_bf16=None, w_c_bf16=None, w_f32=None,
                 w_c_f32=None):
    """Backward of the GRU; see ``fastlstm.reference.gru_backward``. bfloat16 products:
    ``pack_fused_t_bf16`` of W (reset_after) or of W[:, :2H] as ``w_bf16`` and of
    W[:, 2H:] as ``w_c_bf16``. ``w_f32``, ``w_c_f32``: the fused kernels' float32 tiles,
    ``pack_fused_t`` of the same blocks."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    cdef Py_ssize_t T = d_outputs.shape[0]
    _check_counts(H, n_threads, chunk_rows)
    _expect("d_outputs", d_outputs.shape[0], d_outputs.shape[1], d_outputs.shape[2],
            T, B, H, 3)
    _expect("hs", hs.shape[0], hs.shape[1], hs.shape[2], T + 1, B, H, 3)
    _expect("dz", dz.shape[0], dz.shape[1], dz.shape[2], T, B, 3 * H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, 3 * H, 0, 2)
    _check_gru_history(acts, hzc, reset_after, T, B, H, True)
    _check_lengths(seq_len, B, T)
    cdef bint bf16 = False, bf16_c = False
    cdef const float* wpk0 = _step_operand(w_bf16, w_f32, 3 * H if reset_after else 2 * H, H,
                                           floating is float, &bf16)
    cdef const float* wpk1 = (NULL if reset_after else
                              _step_operand(w_c_bf16, w_c_f32, H, H, floating is float,
                                            &bf16_c))
    if not reset_after and ((wpk0 == NULL) != (wpk1 == NULL) or bf16 != bf16_c):
        raise ValueError("packed products need both operands: w_bf16 and w_c_bf16, or "
                         "w_f32 and w_c_f32")
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] dh_loc = scratch("gru_backward_dh", (B, H), dtype)
    cdef floating[:, ::1] dzh_loc = scratch("gru_backward_dzh", (B, 3 * H), dtype)
    cdef floating[:, ::1] dzc_loc = scratch("gru_backward_dzc", (B, H), dtype)
    cdef floating[:, ::1] drh_loc = scratch("gru_backward_drh", (B, H), dtype)
    cdef floating[:, ::1] dhu_loc = scratch("gru_backward_dhu", (B, H), dtype)
    cdef const floating* hzc_p = &hzc[0, 0, 0] if reset_after else NULL
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _gru_backward_chunk(&W[0, 0], wpk0, wpk1, bf16, reset_after, &seq_len[0],
                            &order[start],
                            _chunk_start(k + 1, B, n_chunks) - start, B, H, &hs[0, 0, 0],
                            &acts[0, 0, 0], hzc_p, &d_outputs[0, 0, 0], &dh[0, 0],
                            &dz[0, 0, 0], &dh_loc[start, 0], &dzh_loc[start, 0],
                            &dzc_loc[start, 0], &drh_loc[start, 0], &dhu_loc[start, 0])
