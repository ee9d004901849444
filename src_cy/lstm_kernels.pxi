# The LSTM's kernels: batch chunks (fused step or BLAS per step) and the hidden-unit
# split.

# -------------------------------------------------------------------------------- LSTM
cdef void _lstm_forward_chunk(const floating* xproj, const floating* W,
                              const floating* W_fused, const floating* peep, bint use_peep,
                              floating forget_bias, floating clip, const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, floating* hs, floating* cs, floating* acts,
                              floating* c_unclipped, floating* h_loc, floating* h_alt,
                              floating* c_loc, floating* z_loc, floating* act_tmp,
                              Py_ssize_t I, const floating* x, const floating* bias,
                              const void* out_layout, bint bf16) noexcept nogil:
    # x != NULL (fused path only): z = [x_t, h] [W_x; W_h] + bias, xproj unused.
    # out_layout (fused path only): where h and c of each step go (fl_layout_f32); hs and cs
    # are only read at row 0, the initial state.
    # acts == NULL (inference): the activations go to act_tmp (4H, in L1), overwritten
    # every row. Not a separate no-store code path: that one rounded differently (GCC
    # contracts to FMA per code shape), and inference must equal the training forward.
    cdef Py_ssize_t r, u, t, b, n_active = n_rows, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so
    cdef floating* cun
    cdef floating* act
    cdef floating* swap
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
            c_loc[r * H + u] = cs[rows[r] * H + u]
    if floating is float:
        if W_fused != NULL:                # fused product + gate math (fused_step.h)
            for t in range(n_steps):
                while seq_len[rows[n_active - 1]] <= t:
                    n_active -= 1
                fl_lstm_fwd_fused_f32(n_active, H, h_loc, W_fused, rows, B, t, xproj, I, x,
                                      bias, peep, use_peep, forget_bias, clip, c_loc, h_alt,
                                      acts, act_tmp, <const fl_layout_f32*>out_layout,
                                      c_unclipped, 0, (H + 15) // 16, bf16)
                swap = h_loc                   # h_alt holds step t's h: read it next step
                h_loc = h_alt
                h_alt = swap
            return
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        _gemm_rowmajor(False, n_active, G, H, h_loc, H, W, G, z_loc, G)
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G            # offset of (t, b) in xproj / acts
            so = ((t + 1) * B + b) * H      # offset of (t + 1, b) in hs / cs
            cun = &c_unclipped[(t * B + b) * H] if clip > 0 else NULL
            act = &acts[xo] if acts != NULL else act_tmp
            if floating is float:
                fl_lstm_fwd_row_f32(H, H, H, &xproj[xo], &z_loc[r * G], peep, use_peep,
                                    forget_bias, clip, &c_loc[r * H], &h_loc[r * H],
                                    act, &cs[so], &hs[so], cun)
            else:
                fl_lstm_fwd_row_f64(H, H, H, &xproj[xo], &z_loc[r * G], peep, use_peep,
                                    forget_bias, clip, &c_loc[r * H], &h_loc[r * H],
                                    act, &cs[so], &hs[so], cun)


cdef void _lstm_backward_chunk(const floating* W, const floating* WT_fused,
                               const floating* W_t,
                               const floating* peep, bint use_peep,
                               floating clip, const int64_t* seq_len, const int64_t* rows,
                               Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                               const floating* cs, const floating* acts,
                               const floating* c_unclipped, const floating* d_out,
                               Py_ssize_t d_t, Py_ssize_t d_b,
                               floating* dh, floating* dc, floating* dz, floating* dh_loc,
                               floating* dc_loc, floating* dz_loc, bint bf16) noexcept nogil:
    # d_out row (t, b) at t * d_t + b * d_b: time- or batch-major, no transposing copy
    cdef Py_ssize_t r, u, t, b, n_active = 0, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so, do
    cdef const floating* cun
    # consecutive rows (equal lengths: _chunk_order): dz written once, into the cache, and
    # the product reads a step's rows there (no copy of a dz_loc into dz: 2-4% of a call)
    cdef bint in_place = True
    for r in range(n_rows):
        in_place = in_place and rows[r] == rows[0] + r
    for t in range(n_steps - 1, -1, -1):
        if in_place:
            dz_loc = &dz[(t * B + rows[0]) * G]
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            for u in range(H):
                dh_loc[n_active * H + u] = dh[rows[n_active] * H + u]
                dc_loc[n_active * H + u] = dc[rows[n_active] * H + u]
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G
            so = (t * B + b) * H           # offset of (t, b) in cs (c_prev)
            do = t * d_t + b * d_b
            cun = &c_unclipped[so] if clip > 0 else NULL
            if floating is float:
                fl_lstm_bwd_row_f32(H, H, &acts[xo], &cs[so], &cs[so + B * H], cun, peep,
                                    use_peep, clip, &d_out[do], &dh_loc[r * H],
                                    &dc_loc[r * H], &dz_loc[r * G], &dz[xo])
            else:
                fl_lstm_bwd_row_f64(H, H, &acts[xo], &cs[so], &cs[so + B * H], cun, peep,
                                    use_peep, clip, &d_out[do], &dh_loc[r * H],
                                    &dc_loc[r * H], &dz_loc[r * G], &dz[xo])
        if floating is float:
            if WT_fused != NULL:           # packed-tile product (fused_step.h)
                fl_gemm_dz_wt_f32(n_active, H, dz_loc, WT_fused, dh_loc, 0, (H + 63) // 64,
                                  bf16)
                continue
        if W_t != NULL:                    # dz (rows, 4H) @ W.T held as (4H, H)
            _gemm_rowmajor(False, n_active, H, G, dz_loc, G, W_t, H, dh_loc, H)
            continue
        _gemm_rowmajor(True, n_active, H, G, dz_loc, G, W, G, dh_loc, H)
    for r in range(n_active):          # rows of length 0 keep dh, dc as they came
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]
            dc[rows[r] * H + u] = dc_loc[r * H + u]


cdef void _lstm_forward_fused_units_thread(
        const float* W_fused, const float* xproj, Py_ssize_t I, const float* x,
        const float* bias, const float* peep, bint use_peep, float forget_bias, float clip,
        const int64_t* seq_len, const int64_t* rows, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t n_slices, Py_ssize_t slice_groups, float* acts, float* act_tmp,
        const fl_layout_f32* out, float* c_unclipped, float* h_buf,
        float* c_loc, fastlstm_slice_steps* steps, const float* pack_wh,
        const float* pack_wx, bint bf16) noexcept nogil:
    # The fused step with the hidden units split over threads: slice s = groups
    # s * slice_groups ..., all rows. Thread k computes slices k, k + n_threads, ... of a
    # step (the groups its core keeps in cache), then waits for the step's other slices,
    # computing any that nobody took for long (fastlstm_slice_wait): a thread that lost
    # its core holds up no step. With pack_wh, the first step packs each slice's groups
    # into W_fused. Each row's sums are the chunked path's whichever thread runs a slice,
    # so are its bits. h double-buffered in h_buf.
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef int patience = fastlstm_spins_before_steal
    cdef Py_ssize_t s, n_active = B, n_steps = seq_len[rows[0]]
    cdef long long step, t, first = 0 if pack_wh != NULL else 1
    cdef double wall0 = fastlstm_wall_clock(), cpu0 = fastlstm_thread_cpu_clock()
    fastlstm_maybe_late(tid)
    for step in range(first, n_steps + 1):
        t = step - 1                                  # -1: the packing step
        if t >= 0:
            while seq_len[rows[n_active - 1]] <= t:
                n_active -= 1
        s = tid
        while s < n_slices:
            if fastlstm_slice_take(steps, s, step - first):
                _fused_units_slice(s, t, W_fused, xproj, I, x, bias, peep, use_peep,
                                   forget_bias, clip, rows, n_active, B, H, slice_groups,
                                   acts, act_tmp, out, c_unclipped, h_buf, c_loc, pack_wh,
                                   pack_wx, bf16)
                fastlstm_slice_finish(steps)
            s = s + n_threads
        while True:
            s = fastlstm_slice_wait(steps, step - first, &patience)
            if s < 0:
                break
            _fused_units_slice(s, t, W_fused, xproj, I, x, bias, peep, use_peep, forget_bias,
                               clip, rows, n_active, B, H, slice_groups, acts, act_tmp, out,
                               c_unclipped, h_buf, c_loc, pack_wh, pack_wx, bf16)
            fastlstm_slice_finish(steps)
    fastlstm_check_lost_core(wall0, cpu0)     # descheduled for long inside the region


cdef inline void _fused_units_slice(
        Py_ssize_t s, long long t, const float* W_fused, const float* xproj, Py_ssize_t I,
        const float* x, const float* bias, const float* peep, bint use_peep,
        float forget_bias, float clip, const int64_t* rows, Py_ssize_t n_active,
        Py_ssize_t B, Py_ssize_t H, Py_ssize_t slice_groups, float* acts, float* act_tmp,
        const fl_layout_f32* out, float* c_unclipped, float* h_buf, float* c_loc,
        const float* pack_wh, const float* pack_wx, bint bf16) noexcept nogil:
    # Slice s of step t of _lstm_forward_fused_units_thread (t = -1: pack its groups).
    cdef Py_ssize_t groups = (H + 15) // 16
    cdef Py_ssize_t g_lo = s * slice_groups
    cdef Py_ssize_t g_hi = min(groups, g_lo + slice_groups)
    if t < 0:
        fl_pack_fused_rect_f32(I, pack_wx, H, pack_wh, <float*>W_fused, 0, I + H, g_lo, g_hi)
        return
    fl_lstm_fwd_fused_f32(n_active, H, &h_buf[(t % 2) * B * H], W_fused, rows, B, t, xproj,
                          I, x, bias, peep, use_peep, forget_bias, clip, c_loc,
                          &h_buf[((t + 1) % 2) * B * H], acts, act_tmp, out, c_unclipped,
                          g_lo, g_hi, bf16)


def lstm_forward(cell, const floating[:, :, ::1] xproj, const int64_t[::1] seq_len,
                 floating[:, :, ::1] hs, floating[:, :, ::1] cs, floating[:, :, ::1] acts,
                 floating[:, :, ::1] c_unclipped, int n_threads, plan):
    """LSTM recurrence; see ``fastlstm.reference.lstm_forward``.

    ``cell``: a ``fastlstm.backends._plans.LSTMCellArgs`` (``W``, ``peepholes``,
    ``use_peepholes``, ``forget_bias``, ``cell_clip``); ``plan``: a ``ForwardPlan``, whose
    fields are these:
    ``chunk_rows``: rows per batch chunk.
    ``W_fused``: ``W`` packed by ``fastlstm.backends._chunking.pack_fused`` to run the
    fused step (float32 only, where :func:`have_fused_step`); None: BLAS.
    ``x`` (T, B, I) and ``bias`` (4H) with ``W_fused`` packed from ``[W_x; W_h]``: the
    fused step computes ``z = [x_t, h] [W_x; W_h] + bias`` itself and ``xproj`` is not
    read (it may be empty); ``x`` may be strided in T and B (a transposed view of
    batch-major inputs), not in I.
    ``out`` ((B, T, H) with ``out_batch_major``, else (T, B, H)) and ``c_final`` (B, H,
    holding the initial cell state on entry), fused path only: inference without a
    history. Outputs go straight to ``out`` (written at existing steps only), the last
    cell state of each sequence to ``c_final``; ``hs`` and ``cs`` are only read at row 0
    (the initial state) and ``acts`` must be empty.
    ``unit_slices`` > 0 (fused path only): the whole batch in one loop with the hidden
    units split into that many slices of 16-unit groups, one barrier per step, instead
    of batch chunks (``chunk_rows`` unused).
    ``pack_into`` (instead of ``W_fused``; float32, fused kernels) with ``pack_wh`` (W_h) and,
    with ``x``, ``pack_wx`` (W_x): the threads pack the weights themselves, each what it
    reads: with ``unit_slices``, the groups of its slices into ``pack_into`` ((H + 15) //
    16 rows of (I + H) * 64); in batch chunks, a whole copy of its own (copy k: rows
    k * groups ...; ``pack_into`` holds one per thread). A copy packed once and read by
    every core cost the next call's packing a wait on the other core for every line: 50
    us against 9.5 at (8, 100, 64, 128)'s 393 KB.
    """
    cdef const floating[:, ::1] W = cell.W
    cdef const floating[:, ::1] peepholes = cell.peepholes
    cdef bint use_peepholes = cell.use_peepholes
    cdef double forget_bias = cell.forget_bias, cell_clip = cell.cell_clip
    cdef Py_ssize_t chunk_rows = plan.chunk_rows, unit_slices = plan.unit_slices
    cdef const floating[:, ::1] W_fused = plan.W_fused
    cdef const floating[:, :, :] x = plan.x
    cdef const floating[::1] bias = plan.bias
    cdef floating[:, :, ::1] out = plan.out
    cdef bint out_batch_major = plan.out_batch_major
    cdef floating[:, ::1] c_final = plan.c_final
    cdef floating[:, ::1] pack_into = plan.pack_into
    cdef const floating[:, ::1] pack_wh = plan.pack_wh
    cdef const floating[:, ::1] pack_wx = plan.pack_wx
    cdef bint bf16 = plan.bf16
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], T = hs.shape[0] - 1, n_chunks, k, start
    cdef double wall0, cpu0                    # a chunk's start, for fastlstm_check_lost_core
    cdef Py_ssize_t I = 0, x_t = 0, x_b = 0
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], hs.shape[0], B, H, 3)
    if out is not None:
        T = out.shape[1] if out_batch_major else out.shape[0]
    _check_counts(H, n_threads, chunk_rows if unit_slices <= 0 else unit_slices)
    _expect("W", W.shape[0], W.shape[1], 0, H, 4 * H, 0, 2)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    if x is None:
        _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, 4 * H, 3)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, False)
    cdef const floating* xp = NULL
    cdef const floating* xx = NULL
    cdef const floating* bb = NULL
    if B == 0 or T == 0:
        return
    cdef bint fused_given = W_fused is not None or pack_into is not None
    if x is not None:
        if not fused_given or floating is not float or bias is None:
            raise ValueError("x needs W_fused (float32, fused kernels) and bias")
        I = x.shape[2]
        if x.shape[0] != T or x.shape[1] != B or bias.shape[0] != 4 * H:
            raise ValueError("x must be (T, B, I) and bias (4H,)")
        xx = &x[0, 0, 0] if I > 0 else NULL
        _row_strides(x, &x_t, &x_b)
        bb = &bias[0]
    else:
        xp = &xproj[0, 0, 0]
    dtype = np.float32 if floating is float else np.float64
    cdef int64_t[::1] order
    cdef Py_ssize_t sizes[5]
    cdef Py_ssize_t offs[5]
    cdef floating[::1] work
    cdef floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating* ac = &acts[0, 0, 0] if acts.shape[0] > 0 else NULL    # empty: inference
    cdef floating fb = <floating>forget_bias, clip = <floating>cell_clip
    cdef const floating* wf = NULL
    cdef fl_layout_f32 layout
    if floating is float:
        layout.x_t, layout.x_b = x_t, x_b
        if out is None:                    # the cache rows hs[t + 1, b], cs[t + 1, b]
            layout.h, layout.h_t, layout.h_b = &hs[1, 0, 0], B * H, H
            layout.c, layout.c_t, layout.c_b = &cs[1, 0, 0], B * H, H
        else:
            if not fused_given or x is None or c_final is None or ac != NULL:
                raise ValueError("out needs the fused path with x, c_final and no acts")
            if (out.shape[0], out.shape[1]) != ((B, T) if out_batch_major else (T, B)) \
                    or out.shape[2] != H or c_final.shape[0] != B or c_final.shape[1] != H:
                raise ValueError("out must be (B, T, H) or (T, B, H), c_final (B, H)")
            layout.h, layout.h_t, layout.h_b = &out[0, 0, 0], H, T * H
            if not out_batch_major:
                layout.h_t, layout.h_b = B * H, H
            layout.c, layout.c_t, layout.c_b = &c_final[0, 0], 0, H
    elif out is not None:
        raise ValueError("out is for the fused float32 path")
    if bf16 and (floating is not float or W_fused is None or not _BF16_KERNELS):
        raise ValueError("bf16 needs float32, W_fused packed by pack_fused_bf16 and a CPU "
                         "with AVX512-BF16 (have_bf16_kernels())")
    if W_fused is not None and floating is float:
        if W_fused.shape[0] != (H + 15) // 16 or W_fused.shape[1] != (
                (I + 1) // 2 + (H + 1) // 2 if bf16 else I + H) * 64:
            raise ValueError("W_fused is not W (or [W_x; W_h] with x) packed by pack_fused"
                             + ("_bf16" if bf16 else ""))
        wf = &W_fused[0, 0]
    cdef const floating* pwh = NULL
    cdef const floating* pwx = NULL
    cdef Py_ssize_t groups = (H + 15) // 16, copy_stride = groups * (I + H) * 64
    if pack_into is not None:
        if floating is not float or W_fused is not None or pack_wh is None:
            raise ValueError("pack_into needs float32, pack_wh and no W_fused")
        if pack_wh.shape[0] != H or pack_wh.shape[1] != 4 * H or (I > 0) != (
                pack_wx is not None) or (pack_wx is not None and (
                    pack_wx.shape[0] != I or pack_wx.shape[1] != 4 * H)):
            raise ValueError("pack_wh must be W_h (H, 4H) and pack_wx W_x (I, 4H), with x")
        if pack_into.shape[1] != (I + H) * 64 or pack_into.shape[0] < groups * (
                1 if unit_slices > 0 else min(n_threads, (B + chunk_rows - 1) // chunk_rows)):
            raise ValueError("pack_into must hold (H + 15) // 16 rows of (I + H) * 64 per "
                             "thread (one copy with unit_slices)")
        wf = &pack_into[0, 0]
        pwh = &pack_wh[0, 0]
        pwx = &pack_wx[0, 0] if I > 0 else NULL
    cdef Py_ssize_t slice_groups
    cdef fastlstm_slice_steps steps
    cdef int64_t[::1] claims
    cdef float[::1] units_work
    if unit_slices > 0:
        if floating is not float:
            raise ValueError("unit_slices needs the fused float32 path")
        else:
            if wf == NULL:
                raise ValueError("unit_slices needs the fused float32 path")
            slice_groups = ((H + 15) // 16 + unit_slices - 1) // unit_slices
            order = _chunk_order(seq_len)
            # h (double-buffered), c and act written side by side by the threads
            sizes[0], sizes[1], sizes[2] = 2 * B * H, B * H, 4 * H
            units_work = _work_arrays("lstm_forward_units", np.float32, 3, sizes, offs)
            _load_sorted_state(&hs[0, 0, 0], &cs[0, 0, 0], &order[0], B, H,
                               &units_work[offs[0]], &units_work[offs[1]])
            claims = np.empty((unit_slices + 1) * 8, np.int64)
            fastlstm_slice_steps_init(&steps, _aligned_64(&claims[0]), unit_slices)
            with nogil, parallel(num_threads=min(n_threads, unit_slices)):
                _lstm_forward_fused_units_thread(
                    wf, xp, I, xx, bb, &peepholes[0, 0], use_peepholes, fb, clip,
                    &seq_len[0], &order[0], B, H, unit_slices, slice_groups, ac,
                    &units_work[offs[2]], &layout, cu, &units_work[offs[0]],
                    &units_work[offs[1]], &steps, pwh, pwx, bf16)
            fastlstm_check_stolen(&steps, seq_len[order[0]] + (pwh != NULL))
            return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    order = _chunk_order(seq_len, n_chunks)
    # h, h_alt, c, z and act: each chunk's rows written by one thread
    sizes[0], sizes[1], sizes[2], sizes[3] = B * H, B * H, B * H, B * 4 * H
    sizes[4] = n_chunks * 4 * H
    work = _work_arrays("lstm_forward", dtype, 5, sizes, offs)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    cdef int tid
    cdef const floating* own_wf
    with nogil, parallel(num_threads=n_threads):
        own_wf = wf
        if pwh != NULL:
            if floating is float:
                # each thread packs a copy of its own and reads only that one
                tid = threadid()
                own_wf = wf + tid * copy_stride
                fl_pack_fused_rect_f32(I, pwx, H, pwh, <float*>own_wf, 0, I + H, 0, groups)
        for k in prange(n_chunks, schedule="dynamic"):
            start = _chunk_start(k, B, n_chunks)
            wall0, cpu0 = fastlstm_wall_clock(), fastlstm_thread_cpu_clock()
            _lstm_forward_chunk(xp, &W[0, 0], own_wf, &peepholes[0, 0], use_peepholes, fb,
                                clip, &seq_len[0], &order[start],
                                _chunk_start(k + 1, B, n_chunks) - start, B, H, &hs[0, 0, 0],
                                &cs[0, 0, 0], ac, cu, &work[offs[0] + start * H],
                                &work[offs[1] + start * H], &work[offs[2] + start * H],
                                &work[offs[3] + start * 4 * H], &work[offs[4] + k * 4 * H], I,
                                xx, bb, &layout, bf16)
            if n_threads > 1:
                fastlstm_check_lost_core(wall0, cpu0)


cdef const floating* _transposed_weights(const floating[:, ::1] W_t,
                                         Py_ssize_t H) except? NULL:
    """The address of ``W_t`` (``W.T``, (4H, H), for the BLAS-path backward), or NULL for
    None."""
    if W_t is None:
        return NULL
    if W_t.shape[0] != 4 * H or W_t.shape[1] != H:
        raise ValueError("W_t must be W.T, (4H, H)")
    return &W_t[0, 0]


cdef bint _check_packed_t(WT_fused, bf16, Py_ssize_t H) except -1:
    """``bf16`` as a C flag, after checking that ``WT_fused`` is ``W_h.T`` packed by
    ``pack_fused_t`` (``pack_fused_t_bf16`` with ``bf16``: half the rows, in pairs), and
    that bfloat16 products have their packed weights and kernels."""
    if bf16 and (WT_fused is None or not _BF16_KERNELS):
        raise ValueError("bf16 needs WT_fused packed by pack_fused_t_bf16 and a CPU with "
                         "AVX512-BF16 (have_bf16_kernels())")
    if WT_fused is not None and (
            WT_fused.shape[0] != (H + 63) // 64 or WT_fused.shape[2] != 64
            or WT_fused.shape[1] != (2 * H if bf16 else 4 * H)):
        raise ValueError("WT_fused is not W.T packed by pack_fused_t"
                         + ("_bf16" if bf16 else ""))
    return bool(bf16)


cdef int _check_lstm_backward(const floating[:, ::1] W, const floating[:, ::1] peepholes,
                              double cell_clip, const int64_t[::1] seq_len,
                              const floating[:, :, ::1] cs, const floating[:, :, ::1] acts,
                              const floating[:, :, ::1] c_unclipped,
                              const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                              floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads,
                              Py_ssize_t per_chunk) except -1:
    """The shapes both LSTM backward entry points rely on (T from ``d_outputs``, B and H
    from ``dh``)."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], T = d_outputs.shape[0]
    _check_counts(H, n_threads, per_chunk)
    _expect("d_outputs", d_outputs.shape[0], d_outputs.shape[1], d_outputs.shape[2],
            T, B, H, 3)
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], T + 1, B, H, 3)
    _expect("dc", dc.shape[0], dc.shape[1], 0, B, H, 0, 2)
    _expect("dz", dz.shape[0], dz.shape[1], dz.shape[2], T, B, 4 * H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, 4 * H, 0, 2)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, True)
    return 0


def lstm_backward(cell, const int64_t[::1] seq_len, const floating[:, :, ::1] cs,
                  const floating[:, :, ::1] acts, const floating[:, :, ::1] c_unclipped,
                  const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                  floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads, plan):
    """Backward of the LSTM; see ``fastlstm.reference.lstm_backward``.

    ``cell``: an ``LSTMCellArgs`` (``forget_bias`` unused); ``plan``: a ``BackwardPlan``
    (``chunk_rows``, ``WT_fused``, ``W_t``).
    ``d_outputs`` (T, B, H) may be strided in T and B (a transposed view of batch-major
    gradients), not in H. ``WT_fused``: ``W.T`` packed by
    ``fastlstm.backends._chunking.pack_fused_t`` for the fused float32 product (where
    :func:`have_fused_step`); None: BLAS. ``W_t``: ``W.T`` (4H, H), C-contiguous, for the
    BLAS path: its per-step product then has an untransposed B, which the few-row
    kernel of small_gemm_avx2.h takes (see :func:`small_gemm_enabled`).
    """
    cdef const floating[:, ::1] W = cell.W
    cdef const floating[:, ::1] peepholes = cell.peepholes
    cdef bint use_peepholes = cell.use_peepholes
    cdef double cell_clip = cell.cell_clip
    cdef Py_ssize_t chunk_rows = plan.chunk_rows
    cdef const floating[:, :, ::1] WT_fused = plan.WT_fused
    cdef const floating[:, ::1] W_t = plan.W_t
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    cdef double wall0, cpu0                    # a chunk's start, for fastlstm_check_lost_core
    _check_lstm_backward(W, peepholes, cell_clip, seq_len, cs, acts, c_unclipped, d_outputs,
                         dh, dc, dz, n_threads, chunk_rows)
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef Py_ssize_t d_t, d_b
    _row_strides(d_outputs, &d_t, &d_b)
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # dh, dc and dz: each chunk's rows written by one thread
    cdef Py_ssize_t sizes[3]
    cdef Py_ssize_t offs[3]
    sizes[0], sizes[1], sizes[2] = B * H, B * H, B * 4 * H
    cdef floating[::1] work = _work_arrays("lstm_backward", dtype, 3, sizes, offs)
    cdef const floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating clip = <floating>cell_clip
    cdef const floating* wt = NULL
    cdef bint bf16 = _check_packed_t(WT_fused, plan.bf16, H)
    if WT_fused is not None and floating is float:
        wt = &WT_fused[0, 0, 0]
    cdef const floating* w_t = _transposed_weights(W_t, H)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        wall0, cpu0 = fastlstm_wall_clock(), fastlstm_thread_cpu_clock()
        _lstm_backward_chunk(&W[0, 0], wt, w_t, &peepholes[0, 0], use_peepholes, clip,
                             &seq_len[0],
                             &order[start], _chunk_start(k + 1, B, n_chunks) - start, B, H,
                             &cs[0, 0, 0],
                             &acts[0, 0, 0], cu, &d_outputs[0, 0, 0], d_t, d_b, &dh[0, 0],
                             &dc[0, 0], &dz[0, 0, 0], &work[offs[0] + start * H],
                             &work[offs[1] + start * H], &work[offs[2] + start * 4 * H],
                             bf16)
        if n_threads > 1:
            fastlstm_check_lost_core(wall0, cpu0)


# ------------------------------------------------------- LSTM, hidden units over threads
# For a batch too small to cut into chunks (one chunk = one thread), the hidden units are
# cut into ``n_slices`` slices instead (fixed by the caller from the machine's cores, never
# from the thread count, so the bits do not depend on it). Every step, each slice computes
# its units' four gates for all rows (one GEMM with its packed columns of W_h) and their
# gate math; one barrier per step lets every slice see the whole new h. Thread k runs
# slices k, k + n_threads, ...; h (forward) and dz (backward) are double-buffered so a
# slice writing step t's values never races one still reading step t - 1's.

cdef void _slice_bounds(Py_ssize_t s, Py_ssize_t width, Py_ssize_t H,
                        Py_ssize_t* u0, Py_ssize_t* n) noexcept nogil:
    u0[0] = s * width
    n[0] = min(width, H - s * width)


cdef void _lstm_forward_units_thread(
        const floating* xproj, const floating* W_packed, const floating* peep, bint use_peep,
        floating forget_bias, floating clip, const int64_t* seq_len, const int64_t* rows,
        Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_slices, Py_ssize_t width, floating* hs,
        floating* cs, floating* acts, floating* c_unclipped, floating* h_buf,
        floating* c_loc, floating* z_buf, floating* act_tmp,
        fastlstm_spin_barrier* barrier) noexcept nogil:
    # acts == NULL: as in _lstm_forward_chunk (slices write disjoint units of act_tmp)
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef Py_ssize_t s, r, t, b, u0, n, n_active = B, n_steps = seq_len[rows[0]], G = 4 * H
    cdef floating* h_old
    cdef floating* h_new
    cdef floating* z
    cdef floating* cun
    cdef floating* act
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        h_old = &h_buf[(t % 2) * B * H]
        h_new = &h_buf[((t + 1) % 2) * B * H]
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            z = &z_buf[s * B * 4 * width]
            _gemm_rowmajor(False, n_active, 4 * n, H, h_old, H, &W_packed[s * H * 4 * width],
                           4 * n, z, 4 * n)
            for r in range(n_active):
                b = rows[r]
                cun = &c_unclipped[(t * B + b) * H + u0] if clip > 0 else NULL
                act = &acts[(t * B + b) * G + u0] if acts != NULL else &act_tmp[u0]
                if floating is float:
                    fl_lstm_fwd_row_f32(n, H, n, &xproj[(t * B + b) * G + u0], &z[r * 4 * n],
                                        &peep[u0], use_peep, forget_bias, clip,
                                        &c_loc[r * H + u0], &h_new[r * H + u0], act,
                                        &cs[((t + 1) * B + b) * H + u0],
                                        &hs[((t + 1) * B + b) * H + u0], cun)
                else:
                    fl_lstm_fwd_row_f64(n, H, n, &xproj[(t * B + b) * G + u0], &z[r * 4 * n],
                                        &peep[u0], use_peep, forget_bias, clip,
                                        &c_loc[r * H + u0], &h_new[r * H + u0], act,
                                        &cs[((t + 1) * B + b) * H + u0],
                                        &hs[((t + 1) * B + b) * H + u0], cun)
            s = s + n_threads
        fastlstm_spin_barrier_wait(barrier, n_threads)


cdef int _check_slices(Py_ssize_t n_slices, Py_ssize_t width, Py_ssize_t H) except -1:
    """``n_slices`` slices of ``width`` units cover the H units, the last one not empty."""
    if n_slices < 1 or n_slices * width < H or (n_slices - 1) * width >= max(H, 1):
        raise ValueError(f"{n_slices} slices of {width} units do not cover H = {H}")
    return 0


def lstm_forward_units(cell, const floating[:, :, ::1] xproj, const int64_t[::1] seq_len,
                       floating[:, :, ::1] hs, floating[:, :, ::1] cs,
                       floating[:, :, ::1] acts, floating[:, :, ::1] c_unclipped,
                       int n_threads, plan):
    """LSTM recurrence with the hidden units split over threads (see above).

    ``cell``: an ``LSTMCellArgs`` (``W`` unused); ``plan``: a ``ForwardPlan`` with
    ``W_packed`` and ``width``, the slice width. ``W_packed`` (n_slices, H * 4 * width):
    slice s's columns of ``W`` as an (H, 4 n_s) row-major block at the start of row s,
    gates side by side (n_s = its units).
    Otherwise as ``fastlstm.reference.lstm_forward``.
    """
    cdef const floating[:, ::1] W_packed = plan.W_packed
    cdef const floating[:, ::1] peepholes = cell.peepholes
    cdef bint use_peepholes = cell.use_peepholes
    cdef double forget_bias = cell.forget_bias, cell_clip = cell.cell_clip
    cdef Py_ssize_t width = plan.width
    if W_packed is None:
        raise ValueError("plan.W_packed must hold the slices' columns of W")
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_slices = W_packed.shape[0]
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    cdef Py_ssize_t T = hs.shape[0] - 1
    _check_counts(H, n_threads, width)
    _check_slices(n_slices, width, H)
    _expect("W_packed", W_packed.shape[0], W_packed.shape[1], 0, n_slices, H * 4 * width, 0,
            2)
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], T + 1, B, H, 3)
    _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, 4 * H, 3)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, False)
    if B == 0 or T == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    dtype = np.float32 if floating is float else np.float64
    # h (double-buffered), c, z and act, written side by side by the threads
    cdef Py_ssize_t sizes[4]
    cdef Py_ssize_t offs[4]
    sizes[0], sizes[1], sizes[2] = 2 * B * H, B * H, n_slices * B * 4 * width
    sizes[3] = 4 * H
    cdef floating[::1] work = _work_arrays("lstm_forward_units_blas", dtype, 4, sizes, offs)
    _load_sorted_state(&hs[0, 0, 0], &cs[0, 0, 0], &order[0], B, H, &work[offs[0]],
                       &work[offs[1]])
    cdef floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating* ac = &acts[0, 0, 0] if acts.shape[0] > 0 else NULL    # empty: inference
    cdef floating fb = <floating>forget_bias, clip = <floating>cell_clip
    cdef fastlstm_spin_barrier barrier
    fastlstm_spin_barrier_init(&barrier)
    with nogil, parallel(num_threads=n_threads):
        _lstm_forward_units_thread(&xproj[0, 0, 0], &W_packed[0, 0], &peepholes[0, 0],
                                   use_peepholes, fb, clip, &seq_len[0], &order[0], B, H,
                                   n_slices, width, &hs[0, 0, 0], &cs[0, 0, 0],
                                   ac, cu, &work[offs[0]], &work[offs[1]], &work[offs[2]],
                                   &work[offs[3]], &barrier)


cdef void _lstm_backward_units_thread(
        const floating* W, const floating* peep, bint use_peep, floating clip,
        const int64_t* seq_len, const int64_t* rows, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t n_slices, Py_ssize_t width, const floating* cs, const floating* acts,
        const floating* c_unclipped, const floating* d_out, Py_ssize_t d_t, Py_ssize_t d_b,
        floating* dh, floating* dc, floating* dz, floating* dh_loc, floating* dc_loc,
        floating* dz_buf, const floating* WT_fused, const floating* W_t,
        fastlstm_spin_barrier* barrier, bint bf16) noexcept nogil:
    # WT_fused != NULL (float32, fused kernels): the slice's dz W_h^T by the packed tiles of
    # fused_step.h (slices are whole 64-unit blocks then), else one BLAS call per slice.
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef Py_ssize_t s, r, t, b, u, u0, n, xo, so, do, G = 4 * H
    cdef Py_ssize_t n_active = 0, n_steps = seq_len[rows[0]], n_before
    cdef floating* dzl
    cdef const floating* cun
    for t in range(n_steps - 1, -1, -1):
        n_before = n_active
        while n_active < B and seq_len[rows[n_active]] > t:     # rows whose end is t
            n_active += 1
        dzl = &dz_buf[(t % 2) * B * G]
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            for r in range(n_before, n_active):      # each slice loads its own units
                for u in range(u0, u0 + n):
                    dh_loc[r * H + u] = dh[rows[r] * H + u]
                    dc_loc[r * H + u] = dc[rows[r] * H + u]
            for r in range(n_active):
                b = rows[r]
                xo = (t * B + b) * G + u0
                so = (t * B + b) * H + u0
                do = t * d_t + b * d_b + u0
                cun = &c_unclipped[so] if clip > 0 else NULL
                if floating is float:
                    fl_lstm_bwd_row_f32(n, H, &acts[xo], &cs[so], &cs[so + B * H], cun,
                                        &peep[u0], use_peep, clip, &d_out[do],
                                        &dh_loc[r * H + u0], &dc_loc[r * H + u0],
                                        &dzl[r * G + u0], &dz[xo])
                else:
                    fl_lstm_bwd_row_f64(n, H, &acts[xo], &cs[so], &cs[so + B * H], cun,
                                        &peep[u0], use_peep, clip, &d_out[do],
                                        &dh_loc[r * H + u0], &dc_loc[r * H + u0],
                                        &dzl[r * G + u0], &dz[xo])
            s = s + n_threads
        fastlstm_spin_barrier_wait(barrier, n_threads)   # every slice's dz of step t is written
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            # dh[:, slice] = dz (n_active, 4H) @ W[slice rows, :].T: whole 4H sum per call
            if floating is float:
                if WT_fused != NULL:
                    fl_gemm_dz_wt_f32(n_active, H, dzl, WT_fused, dh_loc, u0 // 64,
                                      (u0 + n + 63) // 64, bf16)
                    s = s + n_threads
                    continue
            if W_t != NULL:                # the slice's columns of W.T (4H, H)
                _gemm_rowmajor(False, n_active, n, G, dzl, G, &W_t[u0], H, &dh_loc[u0], H)
            else:
                _gemm_rowmajor(True, n_active, n, G, dzl, G, &W[u0 * G], G, &dh_loc[u0], H)
            s = s + n_threads
    s = tid
    while s < n_slices:
        _slice_bounds(s, width, H, &u0, &n)
        for r in range(n_active):          # rows of length 0 keep dh, dc as they came
            for u in range(u0, u0 + n):
                dh[rows[r] * H + u] = dh_loc[r * H + u]
                dc[rows[r] * H + u] = dc_loc[r * H + u]
        s = s + n_threads


def lstm_backward_units(cell, const int64_t[::1] seq_len, const floating[:, :, ::1] cs,
                        const floating[:, :, ::1] acts, const floating[:, :, ::1] c_unclipped,
                        const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                        floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads, plan):
    """Backward with the hidden units split over threads; as
    ``fastlstm.reference.lstm_backward``. ``plan``: a ``BackwardPlan`` with ``n_slices``
    and ``width``.

    ``d_outputs`` as in :func:`lstm_backward`. ``WT_fused`` (float32, fused kernels): ``W.T``
    packed by ``pack_fused_t`` for the products; ``width`` must then be a multiple of 64
    (whole packed blocks per slice). ``W_t``: as in :func:`lstm_backward`.
    """
    cdef const floating[:, ::1] W = cell.W
    cdef const floating[:, ::1] peepholes = cell.peepholes
    cdef bint use_peepholes = cell.use_peepholes
    cdef double cell_clip = cell.cell_clip
    cdef Py_ssize_t n_slices = plan.n_slices, width = plan.width
    cdef const floating[:, :, ::1] WT_fused = plan.WT_fused
    cdef const floating[:, ::1] W_t = plan.W_t
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1]
    _check_lstm_backward(W, peepholes, cell_clip, seq_len, cs, acts, c_unclipped, d_outputs,
                         dh, dc, dz, n_threads, width)
    _check_slices(n_slices, width, H)
    cdef const floating* wt = NULL
    cdef const floating* w_t = _transposed_weights(W_t, H)
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef Py_ssize_t d_t, d_b
    _row_strides(d_outputs, &d_t, &d_b)
    cdef bint bf16 = _check_packed_t(WT_fused, plan.bf16, H)
    if WT_fused is not None:
        if floating is not float or width % 64 != 0:
            raise ValueError("WT_fused needs float32 and slices of whole 64-unit blocks")
        wt = &WT_fused[0, 0, 0]
    cdef int64_t[::1] order = _chunk_order(seq_len)
    dtype = np.float32 if floating is float else np.float64
    # dh, dc and dz (double-buffered), written side by side by the threads
    cdef Py_ssize_t sizes[3]
    cdef Py_ssize_t offs[3]
    sizes[0], sizes[1], sizes[2] = B * H, B * H, 2 * B * 4 * H
    cdef floating[::1] work = _work_arrays("lstm_backward_units", dtype, 3, sizes, offs)
    cdef const floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating clip = <floating>cell_clip
    cdef fastlstm_spin_barrier barrier
    fastlstm_spin_barrier_init(&barrier)
    with nogil, parallel(num_threads=n_threads):
        _lstm_backward_units_thread(&W[0, 0], &peepholes[0, 0], use_peepholes, clip,
                                    &seq_len[0], &order[0], B, H, n_slices, width,
                                    &cs[0, 0, 0], &acts[0, 0, 0], cu, &d_outputs[0, 0, 0],
                                    d_t, d_b, &dh[0, 0], &dc[0, 0], &dz[0, 0, 0],
                                    &work[offs[0]], &work[offs[1]], &work[offs[2]], wt,
                                    w_t, &barrier, bf16)
