"""The ``"cuda"`` backend's device code: tiled recurrences over device arrays.

Every kernel runs steps ``t`` of one direction for the tiles of a
:class:`~fastlstm.backends._cuda_plan.RecurrencePlan`; block ``k`` owns tiles ``k``,
``k + gridDim``, ... (exactly one on a real GPU; several only under the simulator, whose
cooperative grids have one block). A block that owns one tile loads its weight slice into
shared memory once per launch; one that owns several reloads it per tile.

Rows are addressed by their position ``p`` in the batch sorted by length (``order[p]`` is
the row of the caller's arrays), so the active rows of a tile at step ``t`` are a prefix
of it. One thread computes all gates of a (row, unit) pair, each sum over ``k`` in order
from zero: the same bits for every tiling and regime. Phases that need every unit of the
previous phase end with ``barrier`` (the grid's for a persistent plan; a block's, or the
kernel's end, otherwise); ``phases`` selects them so that a per-step plan can launch them
one by one.

Kernels are made per (kind, direction, dtype, barrier) by :func:`kernel` and kept.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda


@cuda.jit(device=True)
def _sigmoid(x, one):
    return one / (one + math.exp(-x))


@cuda.jit(device=True)
def _grid_barrier():
    cuda.cg.this_grid().sync()


@cuda.jit(device=True)
def _block_barrier():
    cuda.syncthreads()


@cuda.jit(device=True)
def _tile(tile, R, U, unit_tiles, B, H):
    """First sorted row, rows, first unit and units of ``tile`` (row tiles outer)."""
    rt = tile // unit_tiles
    ut = tile - rt * unit_tiles
    p0 = rt * R
    u0 = ut * U
    return p0, min(R, B - p0), u0, min(U, H - u0)


@cuda.jit(device=True)
def _active_rows(seq_len, order, p0, n_rows, t):
    """Rows of the tile that have step ``t`` (a prefix: rows are sorted by length)."""
    n = n_rows
    while n > 0 and seq_len[order[p0 + n - 1]] <= t:
        n -= 1
    return n


@cuda.jit(device=True)
def _tile_at(tile, R, U, unit_tiles, seq_len, order, H, t):
    """First sorted row, rows active at step ``t``, first unit and units of ``tile``."""
    p0, n_rows, u0, n_units = _tile(tile, R, U, unit_tiles, order.shape[0], H)
    return p0, _active_rows(seq_len, order, p0, n_rows, t), u0, n_units


@cuda.jit(device=True)
def _owns_one_tile(B, R, unit_tiles):
    """Whether every block owns one tile (at most): its slice then stays loaded."""
    return cuda.gridDim.x >= (B + R - 1) // R * unit_tiles


@cuda.jit(device=True)
def _load_own_columns(W, smem, G, B, R, U, unit_tiles):
    """The forward's slice of this block's tile, once, where it owns one; returns that."""
    resident = _owns_one_tile(B, R, unit_tiles)
    if resident and cuda.blockIdx.x < (B + R - 1) // R * unit_tiles:
        p0, n_rows, u0, n_units = _tile(cuda.blockIdx.x, R, U, unit_tiles, B, W.shape[0])
        _load_columns(W, smem, G, U, u0, n_units)
    cuda.syncthreads()
    return resident


@cuda.jit(device=True)
def _load_own_rows(W, smem, B, R, U, unit_tiles):
    """The backward's slice of this block's tile, as :func:`_load_own_columns`."""
    resident = _owns_one_tile(B, R, unit_tiles)
    if resident and cuda.blockIdx.x < (B + R - 1) // R * unit_tiles:
        p0, n_rows, u0, n_units = _tile(cuda.blockIdx.x, R, U, unit_tiles, B, W.shape[0])
        _load_rows(W, smem, u0, n_units)
    cuda.syncthreads()
    return resident


@cuda.jit(device=True)
def _load_columns(W, smem, G, U, u0, n_units):
    """The forward's slice: ``smem[k G U + g U + j] = W[k, g H + u0 + j]``."""
    H = W.shape[0]
    per_k = G * n_units
    for idx in range(cuda.threadIdx.x, H * per_k, cuda.blockDim.x):
        k = idx // per_k
        rem = idx - k * per_k
        g = rem // n_units
        j = rem - g * n_units
        smem[k * G * U + g * U + j] = W[k, g * H + u0 + j]


@cuda.jit(device=True)
def _load_rows(W, smem, u0, n_units):
    """The backward's slice: ``smem[j GH + k] = W[u0 + j, k]``."""
    width = W.shape[1]
    for idx in range(cuda.threadIdx.x, n_units * width, cuda.blockDim.x):
        j = idx // width
        smem[idx] = W[u0 + j, idx - j * width]


@cuda.jit(device=True)
def _row_product(buf, s, p, smem, j, k0, width, stride, zero):
    """``sum_k buf[s, p, k0 + k] * smem[j stride + k0 + k]`` over ``k < width``."""
    acc = zero
    base = j * stride + k0
    for k in range(width):
        acc += buf[s, p, k0 + k] * smem[base + k]
    return acc


@cuda.jit
def gather_rows(src, order, dst):
    """``dst[p, :] = src[order[p], :]``: the initial state in sorted order."""
    H = src.shape[1]
    i = cuda.grid(1)
    if i < dst.shape[0] * H:
        p = i // H
        dst[p, i - p * H] = src[order[p], i - p * H]


@cuda.jit
def scatter_rows(src, order, seq_len, dst):
    """``dst[order[p], :] = src[p, :]`` for rows with at least one step."""
    H = src.shape[1]
    i = cuda.grid(1)
    if i < src.shape[0] * H:
        p = i // H
        b = order[p]
        if seq_len[b] > 0:
            dst[b, i - p * H] = src[p, i - p * H]


@cuda.jit
def fill_zero(flat):
    i = cuda.grid(1)
    if i < flat.shape[0]:
        flat[i] = 0


# ------------------------------------------------------------------ the basic RNN
def _rnn_forward(sdt, barrier):
    @cuda.jit
    def rnn_forward(xproj, W, seq_len, order, R, U, unit_tiles, t0, t1, hs, h_buf, zero):
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_columns(W, smem, 1, B, R, U, unit_tiles)
        for t in range(t0, t1):
            s = t % 2
            for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len, order,
                                                     H, t)
                if n_active > 0:
                    if not resident:
                        _load_columns(W, smem, 1, U, u0, n_units)
                        cuda.syncthreads()
                    for idx in range(cuda.threadIdx.x, n_active * n_units, cuda.blockDim.x):
                        r = idx // n_units
                        j = idx - r * n_units
                        p = p0 + r
                        b = order[p]
                        u = u0 + j
                        acc = zero
                        for k in range(H):
                            acc += h_buf[s, p, k] * smem[k * U + j]
                        h = math.tanh(xproj[t, b, u] + acc)
                        hs[t + 1, b, u] = h
                        h_buf[1 - s, p, u] = h
                    if not resident:
                        cuda.syncthreads()
            barrier()
    return rnn_forward


def _rnn_backward(sdt, barrier):
    @cuda.jit
    def rnn_backward(W, seq_len, order, R, U, unit_tiles, t_hi, t_lo, phases, hs, d_out, dh,
                     dz, dh_buf, dz_buf, zero, one):
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_rows(W, smem, B, R, U, unit_tiles)
        for t in range(t_hi - 1, t_lo - 1, -1):
            s = t % 2
            if phases & 1:                      # dz of the tile's units
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    for idx in range(cuda.threadIdx.x, n_active * n_units, cuda.blockDim.x):
                        r = idx // n_units
                        p = p0 + r
                        b = order[p]
                        u = u0 + idx - r * n_units
                        if seq_len[b] == t + 1:     # the row's last step: load dL/dh
                            dh_buf[p, u] = dh[b, u]
                        h = hs[t + 1, b, u]
                        d = (dh_buf[p, u] + d_out[t, b, u]) * (one - h * h)
                        dz[t, b, u] = d
                        dz_buf[s, p, u] = d
                barrier()
            if phases & 2:                      # dh = dz W^T for the tile's units
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_rows(W, smem, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            dh_buf[p0 + r, u0 + j] = _row_product(dz_buf, s, p0 + r, smem, j,
                                                                  0, H, H, zero)
                        cuda.syncthreads()
                cuda.syncthreads()
    return rnn_backward


# ------------------------------------------------------------------------- the LSTM
def _lstm_forward(sdt, barrier):
    @cuda.jit
    def lstm_forward(xproj, W, peep, use_peep, forget_bias, clip, seq_len, order, R, U,
                     unit_tiles, t0, t1, hs, cs, acts, cun, h_buf, c_buf, zero, one):
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        GU = 4 * U
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_columns(W, smem, 4, B, R, U, unit_tiles)
        for t in range(t0, t1):
            s = t % 2
            for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len, order,
                                                     H, t)
                if n_active > 0:
                    if not resident:
                        _load_columns(W, smem, 4, U, u0, n_units)
                        cuda.syncthreads()
                    for idx in range(cuda.threadIdx.x, n_active * n_units, cuda.blockDim.x):
                        r = idx // n_units
                        j = idx - r * n_units
                        p = p0 + r
                        b = order[p]
                        u = u0 + j
                        a_i, a_j, a_f, a_o = zero, zero, zero, zero
                        for k in range(H):
                            h_k = h_buf[s, p, k]
                            w = k * GU + j
                            a_i += h_k * smem[w]
                            a_j += h_k * smem[w + U]
                            a_f += h_k * smem[w + 2 * U]
                            a_o += h_k * smem[w + 3 * U]
                        # The reference's (and TensorFlow's) order of additions.
                        z_i = xproj[t, b, u] + a_i
                        z_j = xproj[t, b, H + u] + a_j
                        z_f = (xproj[t, b, 2 * H + u] + a_f) + forget_bias
                        z_o = xproj[t, b, 3 * H + u] + a_o
                        c_prev = c_buf[p, u]
                        if use_peep:
                            z_i = z_i + peep[0, u] * c_prev
                            z_f = z_f + peep[1, u] * c_prev
                        i = _sigmoid(z_i, one)
                        g = math.tanh(z_j)
                        f = _sigmoid(z_f, one)
                        c = f * c_prev + i * g
                        if clip > 0:
                            cun[t, b, u] = c
                            c = min(max(c, -clip), clip)
                        if use_peep:
                            z_o = z_o + peep[2, u] * c      # the output gate sees the new c
                        o = _sigmoid(z_o, one)
                        h = o * math.tanh(c)
                        if acts.shape[0] > 0:             # empty: inference
                            acts[t, b, u] = i
                            acts[t, b, H + u] = g
                            acts[t, b, 2 * H + u] = f
                            acts[t, b, 3 * H + u] = o
                        hs[t + 1, b, u] = h
                        cs[t + 1, b, u] = c
                        h_buf[1 - s, p, u] = h
                        c_buf[p, u] = c
                    if not resident:
                        cuda.syncthreads()
            barrier()
    return lstm_forward


def _lstm_backward(sdt, barrier):
    @cuda.jit
    def lstm_backward(W, peep, use_peep, clip, seq_len, order, R, U, unit_tiles, t_hi, t_lo,
                      phases, cs, acts, cun, d_out, dh, dc, dz, dh_buf, dc_buf, dz_buf, zero,
                      one):
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_rows(W, smem, B, R, U, unit_tiles)
        for t in range(t_hi - 1, t_lo - 1, -1):
            s = t % 2
            if phases & 1:                      # dz of the tile's units, dc carried
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    for idx in range(cuda.threadIdx.x, n_active * n_units, cuda.blockDim.x):
                        r = idx // n_units
                        p = p0 + r
                        b = order[p]
                        u = u0 + idx - r * n_units
                        if seq_len[b] == t + 1:     # the row's last step: load dL/dstate
                            dh_buf[p, u] = dh[b, u]
                            dc_buf[p, u] = dc[b, u]
                        i = acts[t, b, u]
                        g = acts[t, b, H + u]
                        f = acts[t, b, 2 * H + u]
                        o = acts[t, b, 3 * H + u]
                        dh_t = dh_buf[p, u] + d_out[t, b, u]
                        tanh_c = math.tanh(cs[t + 1, b, u])
                        dz_o = dh_t * tanh_c * o * (one - o)
                        dc_t = dc_buf[p, u] + dh_t * o * (one - tanh_c * tanh_c)
                        if use_peep:
                            dc_t = dc_t + dz_o * peep[2, u]
                        if clip > 0:
                            if cun[t, b, u] < -clip or cun[t, b, u] > clip:   # no gradient
                                dc_t = zero
                        dz_i = dc_t * g * i * (one - i)
                        dz_j = dc_t * i * (one - g * g)
                        dz_f = dc_t * cs[t, b, u] * f * (one - f)
                        if use_peep:
                            dc_buf[p, u] = dc_t * f + dz_i * peep[0, u] + dz_f * peep[1, u]
                        else:
                            dc_buf[p, u] = dc_t * f
                        dz[t, b, u] = dz_i
                        dz[t, b, H + u] = dz_j
                        dz[t, b, 2 * H + u] = dz_f
                        dz[t, b, 3 * H + u] = dz_o
                        dz_buf[s, p, u] = dz_i
                        dz_buf[s, p, H + u] = dz_j
                        dz_buf[s, p, 2 * H + u] = dz_f
                        dz_buf[s, p, 3 * H + u] = dz_o
                barrier()
            if phases & 2:                      # dh = dz W^T for the tile's units
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_rows(W, smem, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            dh_buf[p0 + r, u0 + j] = _row_product(dz_buf, s, p0 + r, smem, j,
                                                                  0, 4 * H, 4 * H, zero)
                        cuda.syncthreads()
                cuda.syncthreads()
    return lstm_backward


# -------------------------------------------------------------------------- the GRU
def _gru_forward(sdt, barrier):
    @cuda.jit
    def gru_forward(xproj, W, b_h, reset_after, seq_len, order, R, U, unit_tiles, t0, t1,
                    phases, hs, acts, hzc, h_buf, rh_buf, u_buf, zero, one):
        """Gate order (r, u, c). ``reset_after``: one phase. TF1 form: phase 1 the gates
        and ``r * h``, phase 2 (after a barrier) the candidate's product ``(r h) W_c``."""
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        GU = 3 * U
        store_acts = acts.shape[0] > 0
        store_hzc = hzc.shape[0] > 0
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_columns(W, smem, 3, B, R, U, unit_tiles)
        for t in range(t0, t1):
            s = t % 2
            if phases & 1:
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_columns(W, smem, 3, U, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            p = p0 + r
                            b = order[p]
                            u = u0 + j
                            a_r, a_u, a_c = zero, zero, zero
                            for k in range(H):
                                h_k = h_buf[s, p, k]
                                w = k * GU + j
                                a_r += h_k * smem[w]
                                a_u += h_k * smem[w + U]
                                if reset_after:
                                    a_c += h_k * smem[w + 2 * U]
                            h_prev = h_buf[s, p, u]
                            if reset_after:
                                rg = _sigmoid(xproj[t, b, u] + (a_r + b_h[u]), one)
                                ug = _sigmoid(xproj[t, b, H + u] + (a_u + b_h[H + u]), one)
                                hz_c = a_c + b_h[2 * H + u]
                                c = math.tanh(xproj[t, b, 2 * H + u] + rg * hz_c)
                                h = ug * h_prev + (one - ug) * c
                                if store_acts:
                                    acts[t, b, 2 * H + u] = c
                                if store_hzc:
                                    hzc[t, b, u] = hz_c
                                hs[t + 1, b, u] = h
                                h_buf[1 - s, p, u] = h
                            else:
                                rg = _sigmoid(xproj[t, b, u] + a_r, one)
                                ug = _sigmoid(xproj[t, b, H + u] + a_u, one)
                                u_buf[p, u] = ug
                                rh_buf[0, p, u] = rg * h_prev
                            if store_acts:
                                acts[t, b, u] = rg
                                acts[t, b, H + u] = ug
                        if not resident:
                            cuda.syncthreads()
                barrier()
            if phases & 2:                      # TF1 form: c from every unit's r * h
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_columns(W, smem, 3, U, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            p = p0 + r
                            b = order[p]
                            u = u0 + j
                            a_c = zero
                            for k in range(H):
                                a_c += rh_buf[0, p, k] * smem[k * GU + 2 * U + j]
                            ug = u_buf[p, u]
                            c = math.tanh(xproj[t, b, 2 * H + u] + a_c)
                            h = ug * h_buf[s, p, u] + (one - ug) * c
                            if store_acts:
                                acts[t, b, 2 * H + u] = c
                            hs[t + 1, b, u] = h
                            h_buf[1 - s, p, u] = h
                        if not resident:
                            cuda.syncthreads()
                barrier()
    return gru_forward


def _gru_backward(sdt, barrier):
    @cuda.jit
    def gru_backward(W, reset_after, seq_len, order, R, U, unit_tiles, t_hi, t_lo, phases, hs,
                     acts, hzc, d_out, dh, dz, dh_buf, dz_buf, dhu_buf, zero, one):
        """Phase 1 the elementwise part; phase 2 (TF1 form) ``d(r h) = dz_c W_c^T`` and
        ``dz_r``; phase 4 ``dh = dL/dh through u + dz_h W^T`` (``dz_h`` is ``(dz_r, dz_u,
        dz_c r)`` with ``reset_after``, ``(dz_r, dz_u)`` in the TF1 form)."""
        smem = cuda.shared.array(0, sdt)
        B, H = order.shape[0], W.shape[0]
        GH = 3 * H
        n_tiles = (B + R - 1) // R * unit_tiles
        resident = _load_own_rows(W, smem, B, R, U, unit_tiles)
        for t in range(t_hi - 1, t_lo - 1, -1):
            s = t % 2
            if phases & 1:
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    for idx in range(cuda.threadIdx.x, n_active * n_units, cuda.blockDim.x):
                        r = idx // n_units
                        p = p0 + r
                        b = order[p]
                        u = u0 + idx - r * n_units
                        if seq_len[b] == t + 1:     # the row's last step: load dL/dh
                            dh_buf[p, u] = dh[b, u]
                        rg = acts[t, b, u]
                        ug = acts[t, b, H + u]
                        c = acts[t, b, 2 * H + u]
                        dh_t = dh_buf[p, u] + d_out[t, b, u]
                        dz_c = dh_t * (one - ug) * (one - c * c)
                        dz_u = dh_t * (hs[t, b, u] - c) * ug * (one - ug)
                        dz[t, b, H + u] = dz_u
                        dz[t, b, 2 * H + u] = dz_c
                        dhu_buf[p, u] = dh_t * ug
                        dz_buf[s, p, H + u] = dz_u
                        if reset_after:
                            dz_r = dz_c * hzc[t, b, u] * rg * (one - rg)
                            dz[t, b, u] = dz_r
                            dz_buf[s, p, u] = dz_r
                            dz_buf[s, p, 2 * H + u] = dz_c * rg
                        else:
                            dz_buf[s, p, 2 * H + u] = dz_c
                barrier()
            if phases & 2:                      # TF1 form: dz_r needs d(r h) first
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_rows(W, smem, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            p = p0 + r
                            b = order[p]
                            u = u0 + j
                            d_rh = _row_product(dz_buf, s, p, smem, j, 2 * H, H, GH, zero)
                            rg = acts[t, b, u]
                            dz_r = d_rh * hs[t, b, u] * rg * (one - rg)
                            dz[t, b, u] = dz_r
                            dz_buf[s, p, u] = dz_r
                            dhu_buf[p, u] = dhu_buf[p, u] + d_rh * rg
                        if not resident:
                            cuda.syncthreads()
                barrier()
            if phases & 4:
                width = GH if reset_after else 2 * H
                for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
                    p0, n_active, u0, n_units = _tile_at(tile, R, U, unit_tiles, seq_len,
                                                         order, H, t)
                    if n_active > 0:
                        if not resident:
                            _load_rows(W, smem, u0, n_units)
                            cuda.syncthreads()
                        for idx in range(cuda.threadIdx.x, n_active * n_units,
                                         cuda.blockDim.x):
                            r = idx // n_units
                            j = idx - r * n_units
                            p = p0 + r
                            acc = _row_product(dz_buf, s, p, smem, j, 0, width, GH, zero)
                            dh_buf[p, u0 + j] = dhu_buf[p, u0 + j] + acc
                        cuda.syncthreads()
                cuda.syncthreads()
    return gru_backward


_FACTORIES = {("rnn", "forward"): _rnn_forward, ("rnn", "backward"): _rnn_backward,
              ("lstm", "forward"): _lstm_forward, ("lstm", "backward"): _lstm_backward,
              ("gru", "forward"): _gru_forward, ("gru", "backward"): _gru_backward}


@functools.lru_cache(maxsize=None)
def kernel(kind, direction, dtype, grid_barrier):
    """The ``kind`` ``direction`` kernel for ``dtype`` (``np.dtype``) with the grid's
    barrier (a persistent plan's single launch) or a block's (every other plan)."""
    barrier = _grid_barrier if grid_barrier else _block_barrier
    return _FACTORIES[kind, direction](numba.from_dtype(np.dtype(dtype)), barrier)
