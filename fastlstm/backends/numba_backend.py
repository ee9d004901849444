"""The ``"numba"`` backend: ``@njit`` recurrence kernels, same design as the Cython ones.

The batch is sorted by length (longest first) and cut into fixed chunks of ``CHUNK`` rows;
each chunk runs its whole time loop alone (no per-step barrier), the rows that still
have a step form a prefix of the chunk, and the per-step product multiplies them by the
recurrent weights packed once per call, in register tiles (:mod:`._numba_tiles`; no BLAS
call per step). One chunk function holds the math; a serial and a ``parallel=True``
driver hand the chunks out. The chunking does not depend on the thread count, and a
product's bits not on its tiling, so results are bit-identical for any thread count.
The layer's large GEMMs run as BLAS blocks on Numba's threads (:mod:`._numba_gemm`).

Everything is compiled lazily at first call (``import fastlstm`` compiles nothing).
The compiled kernels are cached on disk unless ``FASTLSTM_NUMBA_CACHE=0``
(:mod:`._numba_jit`).
"""

import time

import numba
import numpy as np
from numba import prange

from .. import _thresholds
from . import _numba_gemm, _numba_sync
from ._chunking import chunk_rows
from ._split_tuner import SplitTuner
from ._numba_jit import compile_for, kernel, on_threads, parallel_kernel
from ._numba_math import sigmoid, tanh
from ._numba_tiles import PANEL_WIDTH, pack_panels, padded, panel_product

NAME = "numba"
#: Cell kinds with kernels here.
CELLS = ("rnn", "lstm", "gru")
#: Its layer GEMMs: BLAS blocks on Numba's threads.
GEMM_KERNELS = _numba_gemm


@kernel
def _copy(dst, src):
    """``dst[:] = src`` for 1-D arrays of one length. A slice assignment checks the shapes
    and formats its error message in compiled code, which took 1.7 s to compile in every
    process that ran the backend."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@kernel
def _sigmoid(x, one):
    return sigmoid(x)


# ---------------------------------------------------------------- per-step products
#: ``_rows_times(a, n, P, out)``: ``out[:n] = a[:n] @ W`` for ``P = pack_panels(W)``, in
#: register tiles (no BLAS call per step; ``out`` is :func:`padded` wide).
_rows_times = panel_product()
#: ``_rows_times_range(a, n, P, out, p0, p1)``: the panels ``p0 .. p1 - 1`` only.
_rows_times_range = panel_product(column_range=True)


# --------------------------------------------------------------------------- basic RNN
@kernel
def _rnn_forward_chunk(xproj, W, seq_len, rows, hs, h_loc, z_loc):
    n_rows, H = rows.shape[0], hs.shape[2]
    n_active = n_rows
    for r in range(n_rows):
        _copy(h_loc[r], hs[0, rows[r]])
    for t in range(seq_len[rows[0]]):
        while seq_len[rows[n_active - 1]] <= t:     # rows are sorted: drop the tail
            n_active -= 1
        _rows_times(h_loc, n_active, W, z_loc)
        for r in range(n_active):
            b = rows[r]
            for u in range(H):
                h_loc[r, u] = tanh(xproj[t, b, u] + z_loc[r, u])
                hs[t + 1, b, u] = h_loc[r, u]


@kernel
def _rnn_backward_chunk(WT, seq_len, rows, hs, d_out, dh, dz, dh_loc, dz_loc, one):
    n_rows, H = rows.shape[0], hs.shape[2]
    n_active = 0
    for t in range(seq_len[rows[0]] - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            _copy(dh_loc[n_active, :H], dh[rows[n_active]])
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            for u in range(H):
                h = hs[t + 1, b, u]
                dz_loc[r, u] = (dh_loc[r, u] + d_out[t, b, u]) * (one - h * h)
                dz[t, b, u] = dz_loc[r, u]
        _rows_times(dz_loc, n_active, WT, dh_loc)
    for r in range(n_active):          # rows of length 0 keep dh as it came
        _copy(dh[rows[r]], dh_loc[r, :H])


# -------------------------------------------------------------------------------- LSTM
@kernel
def _lstm_gates_row(x, z, c, h, peep, use_peep, forget_bias, clip, c_unclipped, store_cun,
                    u0, u1):
    """One row's LSTM step for the units ``u0 .. u1 - 1``, in passes LLVM vectorizes (each
    touches few arrays, so its runtime overlap checks stay within LLVM's limit). ``z``
    (4H) comes in holding ``h_{t-1} W_h`` and leaves holding the activations (i, j, f, o);
    ``c`` (H) goes from c_{t-1} to c_t, ``h`` (H) gets h_t. Same operation order as the
    reference."""
    H = c.shape[0]
    # one view per gate: indexing one z at u, H + u, ... vectorized only when the loop ran
    # over all H units (LLVM could not tell the gates apart otherwise: 8x slower, scalar)
    for g in range(4):
        x_g, z_g = x[g * H + u0:g * H + u1], z[g * H + u0:g * H + u1]
        for u in range(z_g.shape[0]):
            z_g[u] = x_g[u] + z_g[u]
    z_i, z_j, z_f, z_o = (z[u0:u1], z[H + u0:H + u1], z[2 * H + u0:2 * H + u1],
                          z[3 * H + u0:3 * H + u1])
    c, h, c_unclipped = c[u0:u1], h[u0:u1], c_unclipped[u0:u1]
    n = c.shape[0]
    for u in range(n):
        z_f[u] = z_f[u] + forget_bias
    if use_peep:
        p_i, p_f = peep[0, u0:u1], peep[1, u0:u1]
        for u in range(n):
            z_i[u] = z_i[u] + p_i[u] * c[u]
            z_f[u] = z_f[u] + p_f[u] * c[u]
    for u in range(n):
        i = sigmoid(z_i[u])
        j = tanh(z_j[u])
        f = sigmoid(z_f[u])
        z_i[u], z_j[u], z_f[u] = i, j, f
        c[u] = f * c[u] + i * j
    if store_cun:
        for u in range(n):
            c_unclipped[u] = c[u]
    if clip > 0:
        for u in range(n):
            c[u] = min(max(c[u], -clip), clip)
    if use_peep:
        p_o = peep[2, u0:u1]
        for u in range(n):
            z_o[u] = z_o[u] + p_o[u] * c[u]   # sees the new cell
    for u in range(n):
        o = sigmoid(z_o[u])
        z_o[u] = o
        h[u] = o * tanh(c[u])


@kernel
def _lstm_chunk_start(rows, h_init, c_init, a_loc, c_loc):
    """The chunk's rows of the initial state into its work rows (h after the inputs)."""
    I = a_loc.shape[1] - c_loc.shape[1]
    for r in range(rows.shape[0]):
        _copy(a_loc[r, I:], h_init[rows[r]])
        _copy(c_loc[r], c_init[rows[r]])


@kernel
def _lstm_chunk_end(rows, c_loc, c_final):
    """Each row's last cell state into a non-empty ``c_final`` (a row that ended kept it)."""
    if c_final.shape[0] > 0:
        for r in range(rows.shape[0]):
            _copy(c_final[rows[r]], c_loc[r])


@kernel
def _lstm_store_row(t, b, u0, u1, h, c, z, h_out, out_shift, batch_major, cs, acts):
    """Row ``b``'s step-``t`` results for the units ``u0 .. u1 - 1``: h to ``h_out``
    (``[t + out_shift, b]``, or ``[b, t]`` with ``batch_major``), c to a non-empty ``cs``
    history, the activations ``z`` to a non-empty ``acts``."""
    H = c.shape[0]
    if batch_major:
        _copy(h_out[b, t, u0:u1], h[u0:u1])
    else:
        _copy(h_out[t + out_shift, b, u0:u1], h[u0:u1])
    if cs.shape[0] > 0:
        _copy(cs[t + 1, b, u0:u1], c[u0:u1])
    if acts.shape[0] > 0:
        for g in range(4):
            _copy(acts[t, b, g * H + u0:g * H + u1], z[g * H + u0:g * H + u1])


@kernel
def _lstm_forward_chunk(xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len, rows,
                        h_init, c_init, h_out, out_shift, batch_major, cs, c_final, acts,
                        c_unclipped, a_loc, c_loc, z_loc):
    """A chunk's LSTM time loop. Rows of ``a_loc`` hold ``[x_t, h]`` (``x`` (T, B, I) given:
    the step computes ``[x_t, h] [W_x; W_h] + bias``, TensorFlow's order, from the panels
    ``P`` of ``[W_x; W_h]``) or ``h`` alone (``x`` empty: ``xproj[t] + h W_h``). Outputs go
    to ``h_out[t + out_shift, b]`` (1: the history, ``h_out[0]`` the initial state) or,
    with ``batch_major``, to ``h_out[b, t]``; ``cs`` (history) and ``acts`` may be empty, and a
    non-empty ``c_final`` gets each row's last cell state."""
    n_rows, H, I = rows.shape[0], c_loc.shape[1], x.shape[2]
    fused = x.shape[0] > 0
    n_active = n_rows
    store_cun = clip > 0 and c_unclipped.shape[0] > 0
    _lstm_chunk_start(rows, h_init, c_init, a_loc, c_loc)
    for t in range(seq_len[rows[0]] if n_rows > 0 else 0):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        if fused:
            _copy_inputs(x, t, rows, n_active, a_loc)
        _rows_times(a_loc, n_active, P, z_loc)
        for r in range(n_active):
            b = rows[r]
            h = a_loc[r, I:I + H]
            _lstm_gates_row(bias if fused else xproj[t, b], z_loc[r], c_loc[r], h, peep,
                            use_peep, forget_bias, clip, c_unclipped[t, b] if store_cun
                            else c_loc[r], store_cun, 0, H)
            _lstm_store_row(t, b, 0, H, h, c_loc[r], z_loc[r], h_out, out_shift, batch_major,
                            cs, acts)
    _lstm_chunk_end(rows, c_loc, c_final)


@kernel
def _lstm_slice_step(s, width, t, n_active, rows, a_in, a_out, xproj, x, bias, P, peep,
                     use_peep, forget_bias, clip, h_out, out_shift, batch_major, cs, acts,
                     c_unclipped, c_loc, z_loc):
    """Slice ``s`` of one step of the rows ``rows[:n_active]`` with the hidden units split
    over the threads, ``width`` units a slice (whole panels): the slice multiplies
    ``a_in`` (the rows' ``[x_t, h_{t-1}]``) by its units' panels of the four gates, then
    runs their gate math, writing its units of h_t into ``a_out``."""
    H, I = c_loc.shape[1], a_in.shape[1] - c_loc.shape[1]
    fused = x.shape[0] > 0
    store_cun = clip > 0 and c_unclipped.shape[0] > 0
    per_gate = H // PANEL_WIDTH
    u0, u1 = s * width, min(s * width + width, H)
    for g in range(4):
        _rows_times_range(a_in, n_active, P, z_loc, g * per_gate + u0 // PANEL_WIDTH,
                          g * per_gate + u1 // PANEL_WIDTH)
    for r in range(n_active):
        b = rows[r]
        h = a_out[r, I:I + H]
        _lstm_gates_row(bias if fused else xproj[t, b], z_loc[r], c_loc[r], h, peep,
                        use_peep, forget_bias, clip, c_unclipped[t, b] if store_cun
                        else c_loc[r], store_cun, u0, u1)
        _lstm_store_row(t, b, u0, u1, h, c_loc[r], z_loc[r], h_out, out_shift,
                        batch_major, cs, acts)


@parallel_kernel
def _lstm_split_step(t, n_active, rows, a_in, a_out, xproj, x, bias, P, peep, use_peep,
                     forget_bias, clip, h_out, out_shift, batch_major, cs, acts, c_unclipped,
                     c_loc, z_loc, width):
    """One step of :func:`_lstm_slice_step`'s slices over the threads; the parallel
    region's end is the step's barrier."""
    H = c_loc.shape[1]
    for s in prange((H + width - 1) // width):
        _lstm_slice_step(s, width, t, n_active, rows, a_in, a_out, xproj, x, bias, P, peep,
                         use_peep, forget_bias, clip, h_out, out_shift, batch_major, cs,
                         acts, c_unclipped, c_loc, z_loc)


@kernel
def _active_rows(seq_len, rows, n_active, t):
    """How many of the (longest first) ``rows`` still have step ``t``."""
    while n_active > 0 and seq_len[rows[n_active - 1]] <= t:
        n_active -= 1
    return n_active


@kernel
def _copy_inputs(x, t, rows, n_active, a):
    """``x_t`` of the rows ``rows[:n_active]`` into the input columns of ``a``'s rows."""
    I = x.shape[2]
    for r in range(n_active):
        _copy(a[r, :I], x[t, rows[r]])


@kernel
def _lstm_forward_split(xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len, rows,
                        h_init, c_init, h_out, out_shift, batch_major, cs, c_final, acts,
                        c_unclipped, a_loc, c_loc, z_loc, width):
    """:func:`_lstm_forward_chunk` for one chunk with its hidden units split over the
    threads, one parallel region a step (:func:`_lstm_split_step`; ``a_loc`` (2, rows,
    I + H): ``[x_t, h]`` of this step and the next, in turn). The same sums in the same
    order: the same bits."""
    n_rows = rows.shape[0]
    n_active = n_rows
    _lstm_chunk_start(rows, h_init, c_init, a_loc[0], c_loc)
    cur = 0
    for t in range(seq_len[rows[0]] if n_rows > 0 else 0):
        n_active = _active_rows(seq_len, rows, n_active, t)
        if x.shape[0] > 0:
            _copy_inputs(x, t, rows, n_active, a_loc[cur])
        _lstm_split_step(t, n_active, rows, a_loc[cur], a_loc[1 - cur], xproj, x, bias, P,
                         peep, use_peep, forget_bias, clip, h_out, out_shift, batch_major,
                         cs, acts, c_unclipped, c_loc, z_loc, width)
        cur = 1 - cur
    _lstm_chunk_end(rows, c_loc, c_final)


@parallel_kernel
def _lstm_forward_split_region(xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len,
                               rows, h_out, out_shift, batch_major, cs, acts, c_unclipped,
                               a_loc, c_loc, z_loc, width, sync):
    """The time loop of :func:`_lstm_forward_split` in one parallel region: the slices
    meet at :func:`._numba_sync.barrier` after each step instead of at a region's end.
    ``a_loc[0]`` and ``c_loc`` hold the chunk's start (``[x_0, h_0]``, ``c_0``); slice 0
    copies each next step's inputs while the step runs (into the other ``a_loc`` row
    block, which nobody reads then). When the region aborts (see ``_numba_sync``) the
    outputs are incomplete and the chunk's start state is lost: the caller reruns it."""
    n_rows, H = rows.shape[0], c_loc.shape[1]
    T = seq_len[rows[0]] if n_rows > 0 else 0
    n_slices = (H + width - 1) // width
    for s in prange(n_slices):
        if _numba_sync.enter(sync):
            n_active = n_rows
            cur = 0
            for t in range(T):
                n_active = _active_rows(seq_len, rows, n_active, t)
                _lstm_slice_step(s, width, t, n_active, rows, a_loc[cur], a_loc[1 - cur],
                                 xproj, x, bias, P, peep, use_peep, forget_bias, clip, h_out,
                                 out_shift, batch_major, cs, acts, c_unclipped, c_loc, z_loc)
                if t + 1 == T:
                    break
                if s == 0 and x.shape[0] > 0:
                    _copy_inputs(x, t + 1, rows, _active_rows(seq_len, rows, n_active, t + 1),
                                 a_loc[1 - cur])
                if not _numba_sync.barrier(sync, t, n_slices):
                    break
                cur = 1 - cur


@kernel
def _lstm_split_start(x, rows, h_init, c_init, a_loc, c_loc):
    """The chunk's start state for :func:`_lstm_forward_split_region`."""
    _lstm_chunk_start(rows, h_init, c_init, a_loc[0], c_loc)
    if x.shape[0] > 0 and rows.shape[0] > 0:
        _copy_inputs(x, 0, rows, rows.shape[0], a_loc[0])


@kernel
def _lstm_grads_row(dh, d_out, c, c_prev, a, cun, peep, use_peep, clip, dc, dz, one, u0, u1):
    """One row's LSTM backward step for the units ``u0 .. u1 - 1``: ``dh`` (H), ``dc`` (H)
    come in as the gradients from step t+1 (``dc`` leaves as the one to step t-1), ``a``
    (4H) the step's activations, ``dz`` (4H) gets the gate pre-activation gradients. Same
    operation order as the reference.

    Written as :func:`_lstm_gates_row` is, in passes over one view per gate that each touch
    few arrays: with every array in one loop, LLVM's runtime overlap checks passed its limit
    and the loops stayed scalar. ``dz``'s o and i slices hold ``dh_t`` and ``tanh(c_t)``
    until the gradients overwrite them (in the working dtype, as they were held before:
    the same bits)."""
    H = c.shape[0]
    zero = one - one
    a_i, a_j, a_f, a_o = (a[u0:u1], a[H + u0:H + u1], a[2 * H + u0:2 * H + u1],
                          a[3 * H + u0:3 * H + u1])
    z_i, z_j, z_f, z_o = (dz[u0:u1], dz[H + u0:H + u1], dz[2 * H + u0:2 * H + u1],
                          dz[3 * H + u0:3 * H + u1])
    dh, d_out, c, c_prev, cun, dc = (dh[u0:u1], d_out[u0:u1], c[u0:u1], c_prev[u0:u1],
                                     cun[u0:u1], dc[u0:u1])
    n = c.shape[0]
    for u in range(n):
        z_o[u] = dh[u] + d_out[u]                 # dh_t
    for u in range(n):
        z_i[u] = tanh(c[u])
    for u in range(n):
        dh_t, tanh_c, o = z_o[u], z_i[u], a_o[u]
        z_o[u] = dh_t * tanh_c * o * (one - o)
        dc[u] = dc[u] + dh_t * o * (one - tanh_c * tanh_c)
    if use_peep:
        p_o = peep[2, u0:u1]
        for u in range(n):
            dc[u] = dc[u] + z_o[u] * p_o[u]
    if clip > 0:
        for u in range(n):                        # clipped: no gradient passes
            dc[u] = zero if (cun[u] < -clip or cun[u] > clip) else dc[u]
    for u in range(n):
        z_i[u] = dc[u] * a_j[u] * a_i[u] * (one - a_i[u])
    for u in range(n):
        z_j[u] = dc[u] * a_i[u] * (one - a_j[u] * a_j[u])
    for u in range(n):
        z_f[u] = dc[u] * c_prev[u] * a_f[u] * (one - a_f[u])
    if use_peep:
        p_i, p_f = peep[0, u0:u1], peep[1, u0:u1]
        for u in range(n):   # i's product first: LLVM fuses it (dc f rounded), as before
            dc[u] = z_i[u] * p_i[u] + dc[u] * a_f[u] + z_f[u] * p_f[u]
    else:
        for u in range(n):
            dc[u] = dc[u] * a_f[u]


@kernel
def _lstm_backward_chunk(WT, peep, use_peep, clip, seq_len, rows, cs, acts, c_unclipped,
                         d_out, dh, dc, dz, dh_loc, dc_loc, dz_loc, one):
    n_rows, H = rows.shape[0], dh.shape[1]
    n_active = 0
    for t in range(seq_len[rows[0]] - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            _copy(dh_loc[n_active, :H], dh[rows[n_active]])
            _copy(dc_loc[n_active], dc[rows[n_active]])
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            _lstm_grads_row(dh_loc[r], d_out[t, b], cs[t + 1, b], cs[t, b], acts[t, b],
                            c_unclipped[t, b] if clip > 0 else cs[t, b], peep, use_peep,
                            clip, dc_loc[r], dz_loc[r], one, 0, H)
            _copy(dz[t, b], dz_loc[r])
        _rows_times(dz_loc, n_active, WT, dh_loc)
    for r in range(n_active):          # rows of length 0 keep dh, dc as they came
        _copy(dh[rows[r]], dh_loc[r, :H])
        _copy(dc[rows[r]], dc_loc[r])


@parallel_kernel
def _lstm_backward_split_region(WT, peep, use_peep, clip, seq_len, rows, cs, acts,
                                c_unclipped, d_out, dh, dc, dz, dh_loc, dc_loc, dz_loc, one,
                                width, sync):
    """:func:`_lstm_backward_chunk` for one chunk with its hidden units split over the
    threads, in one parallel region (see :func:`_lstm_forward_split_region`): each step,
    a slice computes its units' gate gradients, all meet at the barrier, then each
    multiplies the whole ``dz`` by its units' panels of ``W^T``. ``dz_loc`` (2, rows, 4H)
    alternates between steps, so a slice may write the next step's while another still
    reads this one's. The same sums in the same order: the same bits. ``dh`` and ``dc``
    are written only when the region did not abort."""
    n_rows, H = rows.shape[0], dh.shape[1]
    T = seq_len[rows[0]] if n_rows > 0 else 0
    n_slices = (H + width - 1) // width
    for s in prange(n_slices):
        if _numba_sync.enter(sync):
            u0, u1 = s * width, min(s * width + width, H)
            n_active = 0
            cur = 0
            finished = True
            for t in range(T - 1, -1, -1):
                while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows ending at t
                    _copy(dh_loc[n_active, u0:u1], dh[rows[n_active], u0:u1])
                    _copy(dc_loc[n_active, u0:u1], dc[rows[n_active], u0:u1])
                    n_active += 1
                for r in range(n_active):
                    b = rows[r]
                    _lstm_grads_row(dh_loc[r], d_out[t, b], cs[t + 1, b], cs[t, b], acts[t, b],
                                    c_unclipped[t, b] if clip > 0 else cs[t, b], peep,
                                    use_peep, clip, dc_loc[r], dz_loc[cur, r], one, u0, u1)
                    for g in range(4):
                        _copy(dz[t, b, g * H + u0:g * H + u1],
                              dz_loc[cur, r, g * H + u0:g * H + u1])
                if not _numba_sync.barrier(sync, T - 1 - t, n_slices):
                    finished = False
                    break
                _rows_times_range(dz_loc[cur], n_active, WT, dh_loc, u0 // PANEL_WIDTH,
                                  u1 // PANEL_WIDTH)
                cur = 1 - cur
            if finished:
                for r in range(n_active):   # rows of length 0 keep dh, dc as they came
                    _copy(dh[rows[r], u0:u1], dh_loc[r, u0:u1])
                    _copy(dc[rows[r], u0:u1], dc_loc[r, u0:u1])


# --------------------------------------------------------------------------------- GRU
@kernel
def _gru_forward_chunk(xproj, W, W_ru, W_c, b_h, reset_after, seq_len, rows, hs, acts, hzc,
                       h_loc, z_loc, zru_loc, rh_loc, g_loc, u_loc, one):
    """Gate order (r, u, c). ``reset_after``: one product ``h W`` per step (``z_loc``,
    3H); else ``h W_ru`` (``zru_loc``, 2H) and then ``(r * h) W_c`` (``g_loc``, H)."""
    n_rows, H = rows.shape[0], hs.shape[2]
    n_active = n_rows
    store_acts = acts.shape[0] > 0          # empty: inference
    store_hzc = hzc.shape[0] > 0
    for r in range(n_rows):
        _copy(h_loc[r], hs[0, rows[r]])
    for t in range(seq_len[rows[0]]):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        if reset_after:
            _rows_times(h_loc, n_active, W, z_loc)
            for r in range(n_active):
                b = rows[r]
                for u in range(H):
                    rg = _sigmoid(xproj[t, b, u] + (z_loc[r, u] + b_h[u]), one)
                    ug = _sigmoid(xproj[t, b, H + u] + (z_loc[r, H + u] + b_h[H + u]), one)
                    hz_c = z_loc[r, 2 * H + u] + b_h[2 * H + u]
                    c = tanh(xproj[t, b, 2 * H + u] + rg * hz_c)
                    h = ug * h_loc[r, u] + (one - ug) * c
                    if store_acts:
                        acts[t, b, u] = rg
                        acts[t, b, H + u] = ug
                        acts[t, b, 2 * H + u] = c
                    if store_hzc:
                        hzc[t, b, u] = hz_c
                    hs[t + 1, b, u] = h
                    h_loc[r, u] = h
        else:
            _rows_times(h_loc, n_active, W_ru, zru_loc)
            for r in range(n_active):
                b = rows[r]
                for u in range(H):
                    rg = _sigmoid(xproj[t, b, u] + zru_loc[r, u], one)
                    u_loc[r, u] = _sigmoid(xproj[t, b, H + u] + zru_loc[r, H + u], one)
                    if store_acts:
                        acts[t, b, u] = rg
                        acts[t, b, H + u] = u_loc[r, u]
                    rh_loc[r, u] = rg * h_loc[r, u]
            _rows_times(rh_loc, n_active, W_c, g_loc)
            for r in range(n_active):
                b = rows[r]
                for u in range(H):
                    ug = u_loc[r, u]
                    c = tanh(xproj[t, b, 2 * H + u] + g_loc[r, u])
                    h = ug * h_loc[r, u] + (one - ug) * c
                    if store_acts:
                        acts[t, b, 2 * H + u] = c
                    hs[t + 1, b, u] = h
                    h_loc[r, u] = h


@kernel
def _gru_backward_chunk(WT, W_ruT, W_cT, reset_after, seq_len, rows, hs, acts, hzc, d_out,
                        dh, dz, dh_loc, dzh_loc, dzru_loc, dzc_loc, drh_loc, dhu_loc, one):
    n_rows, H = rows.shape[0], hs.shape[2]
    n_active = 0
    for t in range(seq_len[rows[0]] - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            _copy(dh_loc[n_active, :H], dh[rows[n_active]])
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            for u in range(H):
                rg = acts[t, b, u]
                ug = acts[t, b, H + u]
                c = acts[t, b, 2 * H + u]
                dh_t = dh_loc[r, u] + d_out[t, b, u]
                dz_c = dh_t * (one - ug) * (one - c * c)
                dz_u = dh_t * (hs[t, b, u] - c) * ug * (one - ug)
                dz[t, b, H + u] = dz_u
                dz[t, b, 2 * H + u] = dz_c
                dhu_loc[r, u] = dh_t * ug
                if reset_after:
                    dz_r = dz_c * hzc[t, b, u] * rg * (one - rg)
                    dz[t, b, u] = dz_r
                    dzh_loc[r, u] = dz_r
                    dzh_loc[r, H + u] = dz_u
                    dzh_loc[r, 2 * H + u] = dz_c * rg
                else:
                    dzru_loc[r, H + u] = dz_u
                    dzc_loc[r, u] = dz_c
        if reset_after:
            _rows_times(dzh_loc, n_active, WT, dh_loc)
        else:
            _rows_times(dzc_loc, n_active, W_cT, drh_loc)
            for r in range(n_active):
                b = rows[r]
                for u in range(H):
                    rg = acts[t, b, u]
                    dz_r = drh_loc[r, u] * hs[t, b, u] * rg * (one - rg)
                    dz[t, b, u] = dz_r
                    dzru_loc[r, u] = dz_r
                    dhu_loc[r, u] = dhu_loc[r, u] + drh_loc[r, u] * rg
            _rows_times(dzru_loc, n_active, W_ruT, dh_loc)
        for r in range(n_active):
            for u in range(H):
                dh_loc[r, u] = dhu_loc[r, u] + dh_loc[r, u]
    for r in range(n_active):          # rows of length 0 keep dh as it came
        _copy(dh[rows[r]], dh_loc[r, :H])


# ------------------------------------------------------------- drivers: chunks -> threads
# Chunk k owns rows order[k*chunk : (k+1)*chunk] and the same rows of the work
# buffers. The serial and parallel drivers differ only in range / prange.
@kernel
def _span(k, chunk, n):
    """Rows of the batch order (and of the work buffers) that chunk ``k`` owns."""
    s, e = k * chunk, min(k * chunk + chunk, n)
    return s, e


@kernel
def _rnn_forward_serial(xproj, W, seq_len, order, chunk, hs, h_w, z_w):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _rnn_forward_chunk(xproj, W, seq_len, order[s:e], hs, h_w[s:e], z_w[s:e])


@parallel_kernel
def _rnn_forward_parallel(xproj, W, seq_len, order, chunk, hs, h_w, z_w):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _rnn_forward_chunk(xproj, W, seq_len, order[s:e], hs, h_w[s:e], z_w[s:e])


@kernel
def _rnn_backward_serial(WT, seq_len, order, chunk, hs, d_out, dh, dz, dh_w, dz_w, one):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _rnn_backward_chunk(WT, seq_len, order[s:e], hs, d_out, dh, dz, dh_w[s:e], dz_w[s:e],
                            one)


@parallel_kernel
def _rnn_backward_parallel(WT, seq_len, order, chunk, hs, d_out, dh, dz, dh_w, dz_w, one):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _rnn_backward_chunk(WT, seq_len, order[s:e], hs, d_out, dh, dz, dh_w[s:e], dz_w[s:e],
                            one)


@kernel
def _lstm_forward_serial(order, chunk, args, work):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _lstm_forward_chunk(*args[:9], order[s:e], *args[9:], work[0][s:e], work[1][s:e],
                            work[2][s:e])


@parallel_kernel
def _lstm_forward_parallel(order, chunk, args, work):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _lstm_forward_chunk(*args[:9], order[s:e], *args[9:], work[0][s:e], work[1][s:e],
                            work[2][s:e])


@kernel
def _lstm_backward_serial(WT, peep, use_peep, clip, seq_len, order, chunk, cs, acts, cun,
                          d_out, dh, dc, dz, dh_w, dc_w, dz_w, one):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _lstm_backward_chunk(WT, peep, use_peep, clip, seq_len, order[s:e], cs, acts, cun,
                             d_out, dh, dc, dz, dh_w[s:e], dc_w[s:e], dz_w[s:e], one)


@parallel_kernel
def _lstm_backward_parallel(WT, peep, use_peep, clip, seq_len, order, chunk, cs, acts, cun,
                            d_out, dh, dc, dz, dh_w, dc_w, dz_w, one):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _lstm_backward_chunk(WT, peep, use_peep, clip, seq_len, order[s:e], cs, acts, cun,
                             d_out, dh, dc, dz, dh_w[s:e], dc_w[s:e], dz_w[s:e], one)


@kernel
def _gru_forward_serial(xproj, W, W_ru, W_c, b_h, ra, seq_len, order, chunk, hs, acts, hzc,
                        w, one):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _gru_forward_chunk(xproj, W, W_ru, W_c, b_h, ra, seq_len, order[s:e], hs, acts, hzc,
                           w[0][s:e], w[1][s:e], w[2][s:e], w[3][s:e], w[4][s:e], w[5][s:e],
                           one)


@parallel_kernel
def _gru_forward_parallel(xproj, W, W_ru, W_c, b_h, ra, seq_len, order, chunk, hs, acts, hzc,
                          w, one):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _gru_forward_chunk(xproj, W, W_ru, W_c, b_h, ra, seq_len, order[s:e], hs, acts, hzc,
                           w[0][s:e], w[1][s:e], w[2][s:e], w[3][s:e], w[4][s:e], w[5][s:e],
                           one)


@kernel
def _gru_backward_serial(WT, W_ruT, W_cT, ra, seq_len, order, chunk, hs, acts, hzc, d_out, dh,
                         dz, w, one):
    for k in range((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _gru_backward_chunk(WT, W_ruT, W_cT, ra, seq_len, order[s:e], hs, acts, hzc, d_out, dh,
                            dz, w[0][s:e], w[1][s:e], w[2][s:e], w[3][s:e], w[4][s:e],
                            w[5][s:e], one)


@parallel_kernel
def _gru_backward_parallel(WT, W_ruT, W_cT, ra, seq_len, order, chunk, hs, acts, hzc, d_out,
                           dh, dz, w, one):
    for k in prange((order.shape[0] + chunk - 1) // chunk):
        s, e = _span(k, chunk, order.shape[0])
        _gru_backward_chunk(WT, W_ruT, W_cT, ra, seq_len, order[s:e], hs, acts, hzc, d_out, dh,
                            dz, w[0][s:e], w[1][s:e], w[2][s:e], w[3][s:e], w[4][s:e],
                            w[5][s:e], one)


# --------------------------------------------------------- the kernel contract (Python)
def _plan(seq_len, n_threads):
    """Row order (longest first), rows per chunk, batch size, threads to use."""
    order = np.argsort(-seq_len, kind="stable").astype(np.int64)
    chunk = chunk_rows(order.shape[0])
    n_chunks = -(-order.shape[0] // chunk)
    threads = min(n_threads, n_chunks, numba.config.NUMBA_NUM_THREADS)
    return order, chunk, order.shape[0], threads


def _with_threads(threads, fn, *args):
    """``fn(*args)`` with Numba's parallel regions on ``threads`` threads."""
    on_threads(threads, fn, *args)


def _run(serial, parallel, threads, *args):
    if threads > 1:
        _with_threads(threads, parallel, *args)
    else:
        serial(*args)


#: Per shape, one core or the unit split (same bits; see :func:`_lstm_forward`).
_SPLIT_TUNER = SplitTuner()
#: The tuner's keys whose candidate schedules are compiled: all of them at a key's first
#: call, so that the tuner's first probe of the other one does not stall 5-8 s compiling.
_COMPILED_SCHEDULES = set()


def _work(n_rows, width, dtype):
    """A chunk work buffer that a step's product writes: rows of whole panels."""
    return np.empty((n_rows, padded(width)), dtype)


def rnn_forward(xproj, W, seq_len, hs, n_threads=1):
    """Basic RNN recurrence; see :func:`fastlstm.reference.rnn_forward`."""
    if xproj.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H = hs.shape[2]
    _run(_rnn_forward_serial, _rnn_forward_parallel, threads,
         xproj, pack_panels(W, n_threads=n_threads), seq_len, order, chunk, hs,
         np.empty((n_work, H), hs.dtype),
         _work(n_work, H, hs.dtype))


def rnn_backward(W, seq_len, hs, d_outputs, dh, dz, n_threads=1):
    """Backward of the basic RNN; see :func:`fastlstm.reference.rnn_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H = dh.shape[1]
    _run(_rnn_backward_serial, _rnn_backward_parallel, threads,
         pack_panels(W.T, n_threads=n_threads), seq_len, order, chunk, hs, d_outputs, dh, dz,
         _work(n_work, H, dh.dtype), np.empty((n_work, H), dh.dtype), dh.dtype.type(1))


def _lstm_forward(xproj, x, bias, W_blocks, peepholes, use_peepholes, forget_bias,
                  cell_clip, seq_len, h_init, c_init, h_out, out_shift, batch_major, cs,
                  c_final, acts, c_unclipped, n_threads):
    """Every LSTM forward entry point: the arguments of :func:`_lstm_forward_chunk`, the
    weights as the row blocks of the stacked matrix (``(W_x, W_h)`` or ``(W_h,)``).

    A batch that forms one chunk runs either on one core or with its hidden units split
    over the threads (:func:`_lstm_forward_split`): the same bits, so the split tuner
    chooses by timing the caller's own calls (a parallel region per step costs ~1 us with
    Numba's OpenMP layer, more with others; measure, do not guess)."""
    if seq_len.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H, I, dtype = c_init.shape[1], x.shape[2], c_init.dtype
    dt = dtype.type
    args = (xproj, x, bias, pack_panels(*W_blocks, n_threads=n_threads), peepholes,
            bool(use_peepholes), dt(forget_bias), dt(cell_clip), seq_len, h_init, c_init,
            h_out, out_shift, bool(batch_major), cs, c_final, acts, c_unclipped)
    slice_threads = _slice_threads(n_threads, H)
    if order.shape[0] <= chunk and slice_threads >= 2 and H % PANEL_WIDTH == 0:
        width = _slice_width(H, slice_threads)
        key = ("lstm_forward", dtype.str, x.shape[0] > 0, seq_len.shape[0],
               xproj.shape[0] or x.shape[0], I, H, acts.shape[0] > 0, slice_threads)
        if key not in _COMPILED_SCHEDULES:
            work = _lstm_split_work(n_work, I, H, dtype)
            compile_for(_lstm_split_start, x, order, h_init, c_init, *work[:2])
            compile_for(_lstm_forward_split_region,
                        *_lstm_region_args(args, order, work, width, _numba_sync.new_sync()))
            compile_for(_lstm_chunk_end, order, work[1], c_final)
            compile_for(_lstm_forward_serial, order, chunk, args,
                        _lstm_work(n_work, I, H, dtype))
            _COMPILED_SCHEDULES.add(key)
        # the expected winner last (see _split_tuner): the split, which a batch of one
        # chunk takes on (1, 150, 256, 256) at 0.6 of one core's time
        schedule, timed = _SPLIT_TUNER.choose(key, ("one chunk", "split"))
        if schedule == "split":
            work = _lstm_split_work(n_work, I, H, dtype)
            start = time.perf_counter()
            _lstm_split(args, order, work, width, slice_threads)
        else:
            start = time.perf_counter()
            _lstm_forward_serial(order, chunk, args, _lstm_work(n_work, I, H, dtype))
        if timed:
            steps = max(1, int(seq_len.max()))
            _SPLIT_TUNER.record(key, schedule, (time.perf_counter() - start) / steps)
        return
    _run(_lstm_forward_serial, _lstm_forward_parallel, threads, order, chunk, args,
         _lstm_work(n_work, I, H, dtype))


#: Aborted runs of the one-region split (see ``_numba_sync``) after which this process
#: opens a region per step instead: the runtime does not give the region its threads.
MAX_REGION_ABORTS = 3
_region_aborts = [0]


def _lstm_split(args, rows, work, width, threads):
    """One chunk's forward with its hidden units split over ``threads`` threads: in one
    parallel region with a barrier per step, or, once that aborted ``MAX_REGION_ABORTS``
    times, one region per step. A region that aborts is run again per step (the same
    bits either way)."""
    (xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len, h_init, c_init, h_out,
     out_shift, batch_major, cs, c_final, acts, c_unclipped) = args
    a_loc, c_loc, z_loc = work
    if _region_aborts[0] < MAX_REGION_ABORTS:
        _lstm_split_start(x, rows, h_init, c_init, a_loc, c_loc)
        sync = _numba_sync.new_sync()
        _with_threads(threads, _lstm_forward_split_region,
                      *_lstm_region_args(args, rows, work, width, sync))
        if not _numba_sync.aborted(sync):
            _lstm_chunk_end(rows, c_loc, c_final)
            return
        _region_aborts[0] += 1
    _with_threads(threads, _lstm_forward_split, *args[:9], rows, *args[9:], *work, width)


def _lstm_region_args(args, rows, work, width, sync):
    """The arguments of :func:`_lstm_forward_split_region` from those of
    :func:`_lstm_forward`'s kernels, the chunk's rows and :func:`_lstm_split_work`."""
    (xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len, h_init, c_init, h_out,
     out_shift, batch_major, cs, c_final, acts, c_unclipped) = args
    return (xproj, x, bias, P, peep, use_peep, forget_bias, clip, seq_len, rows, h_out,
            out_shift, batch_major, cs, acts, c_unclipped, *work, width, sync)


def _lstm_split_work(n_work, I, H, dtype):
    """The unit split's work rows: ``[x_t, h]`` of a step and the next, c, the product."""
    return (np.empty((2, n_work, I + H), dtype), np.empty((n_work, H), dtype),
            _work(n_work, 4 * H, dtype))


def _lstm_work(n_work, I, H, dtype):
    """The chunks' work rows: ``[x_t, h]``, c, and the step's product (whole panels)."""
    return (np.empty((n_work, I + H), dtype), np.empty((n_work, H), dtype),
            _work(n_work, 4 * H, dtype))


def _none(dtype, ndim):
    """An empty array: "not given" for the chunk's optional arrays."""
    return np.empty((0,) * ndim, dtype)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1):
    """LSTM recurrence; see :func:`fastlstm.reference.lstm_forward`."""
    if xproj.shape[0] == 0:
        return
    _lstm_forward(xproj, _none(hs.dtype, 3), _none(hs.dtype, 1), (W,), peepholes, use_peepholes,
                  forget_bias, cell_clip, seq_len, hs[0], cs[0], hs, 1, False, cs,
                  _none(hs.dtype, 2), acts, c_unclipped, n_threads)


def fuses_input(dtype, batch_size, input_size, num_units):
    """True when :func:`lstm_forward_input` runs these sizes: the step's product takes
    ``[x_t, h]`` when ``input_size + num_units`` is at most ``MAX_FUSED_INPUT_WIDTH_NUMBA``
    and the batch fills a register tile (a few rows per step multiply ``W_x`` at a
    fraction of the rate of one GEMM over all steps: (1, 150, 256, 256) 3.3 ms fused
    against 1.7), or the cell is small (``input_size + num_units`` at most
    ``MAX_FUSED_SMALL_INPUT_WIDTH``, where the GEMM and its xproj cost more)."""
    return (input_size + num_units <= _thresholds.MAX_FUSED_INPUT_WIDTH_NUMBA
            and (batch_size >= _thresholds.MIN_BATCH_FUSED_INPUT_NUMBA
                 or input_size + num_units <= _thresholds.MAX_FUSED_SMALL_INPUT_WIDTH))


def lstm_forward_input(x, W_x, bias, W, peepholes, use_peepholes, forget_bias, cell_clip,
                       seq_len, hs, cs, acts, c_unclipped, n_threads=1):
    """:func:`lstm_forward` with the input projection inside the step: ``z = [x_t, h]
    [W_x; W_h] + bias`` (TensorFlow 1.x's order of the sum), no ``xproj`` from a GEMM
    before the loop (its bias pass and its (T, B, 4H) round trip). x (T, B, I)."""
    if x.shape[0] == 0:
        return
    _lstm_forward(_none(hs.dtype, 3), x, bias, (W_x, W), peepholes,
                  use_peepholes, forget_bias, cell_clip, seq_len, hs[0], cs[0], hs, 1, False,
                  cs, _none(hs.dtype, 2), acts, c_unclipped, n_threads)


def lstm_infer_input(x, W_x, bias, W, peepholes, use_peepholes, forget_bias, cell_clip,
                     seq_len, h0, c_state, out, out_batch_major, c_unclipped, n_threads=1):
    """Inference without a history: as :func:`lstm_forward_input`, but the outputs go
    straight to ``out`` ((B, T, H) with ``out_batch_major``, else (T, B, H); written at
    existing steps only) and no hs / cs / acts are kept. ``c_state`` (B, H) holds the
    initial cell state on entry and each sequence's final one on return; ``h0`` (B, H)
    is the initial output."""
    _lstm_forward(_none(h0.dtype, 3), x, bias, (W_x, W), peepholes,
                  use_peepholes, forget_bias, cell_clip, seq_len, h0, c_state, out, 0,
                  out_batch_major, _none(h0.dtype, 3), c_state, _none(h0.dtype, 3),
                  c_unclipped, n_threads)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1):
    """Backward of the LSTM; see :func:`fastlstm.reference.lstm_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H, dt = dh.shape[1], dh.dtype.type
    args = (pack_panels(W.T, n_threads=n_threads), peepholes, bool(use_peepholes),
            dt(cell_clip), seq_len, order, cs, acts, c_unclipped, d_outputs, dh, dc, dz)
    dc_w = np.empty((n_work, H), dh.dtype)
    slice_threads = _slice_threads(n_threads, H)
    if order.shape[0] <= chunk and slice_threads >= 2 and H % PANEL_WIDTH == 0:
        key = ("lstm_backward", dh.dtype.str, seq_len.shape[0], d_outputs.shape[0], H,
               slice_threads)
        width = _slice_width(H, slice_threads)
        if key not in _COMPILED_SCHEDULES:
            compile_for(_lstm_backward_split_region, *args, _work(n_work, H, dh.dtype), dc_w,
                        np.empty((2, n_work, 4 * H), dh.dtype), dt(1), width,
                        _numba_sync.new_sync())
            compile_for(_lstm_backward_chunk, *args, _work(n_work, H, dh.dtype), dc_w,
                        np.empty((n_work, 4 * H), dh.dtype), dt(1))
            _COMPILED_SCHEDULES.add(key)
        schedule, timed = _SPLIT_TUNER.choose(key, ("one chunk", "split"))
        start = time.perf_counter()
        on_one_core = schedule != "split" or _region_aborts[0] >= MAX_REGION_ABORTS
        if not on_one_core:
            sync = _numba_sync.new_sync()
            _with_threads(slice_threads, _lstm_backward_split_region, *args,
                          _work(n_work, H, dh.dtype), dc_w,
                          np.empty((2, n_work, 4 * H), dh.dtype), dt(1), width, sync)
            if _numba_sync.aborted(sync):    # dh, dc untouched: run it on one core
                _region_aborts[0] += 1
                on_one_core = True
        if on_one_core:
            _lstm_backward_chunk(*args, _work(n_work, H, dh.dtype), dc_w,
                                 np.empty((n_work, 4 * H), dh.dtype), dt(1))
        if timed:
            _SPLIT_TUNER.record(key, schedule, (time.perf_counter() - start)
                                / max(1, int(seq_len.max())))
        return
    _run(_lstm_backward_serial, _lstm_backward_parallel, threads, *args[:6], chunk,
         *args[6:], _work(n_work, H, dh.dtype), dc_w,
         np.empty((n_work, 4 * H), dh.dtype), dt(1))


def _slice_threads(n_threads, H):
    """Threads a unit split of H units can use: whole panels each."""
    return min(n_threads, numba.config.NUMBA_NUM_THREADS, H // PANEL_WIDTH)


def _slice_width(H, threads):
    """Units per slice of a unit split over ``threads``: whole panels."""
    return -(-H // threads // PANEL_WIDTH) * PANEL_WIDTH


def gru_forward(xproj, W, recurrent_bias, reset_after, seq_len, hs, acts, hzc, n_threads=1):
    """GRU recurrence; see :func:`fastlstm.reference.gru_forward`."""
    if xproj.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H, dt = hs.shape[2], hs.dtype.type
    # h, h W (3H), h W_ru (2H), r * h, (r * h) W_c, u
    work = (np.empty((n_work, H), hs.dtype), _work(n_work, 3 * H, hs.dtype),
            _work(n_work, 2 * H, hs.dtype), np.empty((n_work, H), hs.dtype),
            _work(n_work, H, hs.dtype), np.empty((n_work, H), hs.dtype))
    if reset_after:            # one product per step: W_ru, W_c are not read
        panels = (pack_panels(W, n_threads=n_threads),) + (np.empty((0, 0, 0), W.dtype),) * 2
    else:
        panels = (np.empty((0, 0, 0), W.dtype), pack_panels(W[:, :2 * H], n_threads=n_threads),
                  pack_panels(W[:, 2 * H:], n_threads=n_threads))
    _run(_gru_forward_serial, _gru_forward_parallel, threads,
         xproj, *panels, recurrent_bias, bool(reset_after), seq_len, order, chunk, hs,
         acts, hzc, work, dt(1))


def gru_backward(W, reset_after, seq_len, hs, acts, hzc, d_outputs, dh, dz, n_threads=1):
    """Backward of the GRU; see :func:`fastlstm.reference.gru_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, chunk, n_work, threads = _plan(seq_len, n_threads)
    H, dt = dh.shape[1], dh.dtype.type
    # dh, dzh (3H), dz_ru (2H), dz_c, d(r * h), dh * u
    work = (_work(n_work, H, dh.dtype), np.empty((n_work, 3 * H), dh.dtype),
            np.empty((n_work, 2 * H), dh.dtype), np.empty((n_work, H), dh.dtype),
            _work(n_work, H, dh.dtype), np.empty((n_work, H), dh.dtype))
    WT = W.T
    if reset_after:
        panels = (pack_panels(WT, n_threads=n_threads),) + (np.empty((0, 0, 0), W.dtype),) * 2
    else:
        panels = (np.empty((0, 0, 0), W.dtype), pack_panels(WT[:2 * H], n_threads=n_threads),
                  pack_panels(WT[2 * H:], n_threads=n_threads))
    _run(_gru_backward_serial, _gru_backward_parallel, threads,
         *panels, bool(reset_after), seq_len, order, chunk, hs, acts, hzc, d_outputs, dh,
         dz, work, dt(1))
