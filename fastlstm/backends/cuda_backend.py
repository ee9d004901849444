"""The ``"cuda"`` backend: numba.cuda kernels that keep the whole time loop on the GPU.

Design: one kernel launch per layer and direction, not per step (a Numba launch costs
tens of microseconds, more than a small step). The batch, sorted by length, is cut into
blocks of ``ROWS_PER_BLOCK`` sequences; each CUDA block runs the whole time loop for its
sequences, its threads sharing the (row, unit) pairs, with one ``syncthreads`` per step:
blocks never wait for each other, so no grid-wide synchronisation is needed. Each thread
computes all four gates of its (row, unit) pairs, the recurrent product included, so no
reduction crosses threads. ``h`` is double-buffered in global memory.

The input projection and the weight gradients stay the layer's large GEMMs (done by
:mod:`fastlstm.rnn` on the host); this backend implements the same four-function kernel
contract as the CPU backends (fastlstm/reference.py), copying to and from the device.

Tested on the CPU under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, see
tests/test_cuda_sim.py). ``FASTLSTM_CUDA_THREADS`` / ``FASTLSTM_CUDA_ROWS`` set the
threads per block and the sequences per block.
"""

import math
import os

import numpy as np

try:
    from numba import cuda
except ImportError as exc:                      # numba without its CUDA target
    raise ImportError("numba.cuda is not importable: pip install 'fastlstm[cuda]'") from exc

if not cuda.is_available():
    raise ImportError("no usable CUDA GPU: numba.cuda.is_available() is False (set "
                      "NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator)")


def _check_kernels_compile():
    """Raise ImportError where numba.cuda imports but cannot compile a kernel.

    numba-cuda 0.30 (in maintenance mode) registers an overload of ``np.row_stack`` when
    it first compiles a kernel, and NumPy 2.5 removed ``row_stack``: every launch then
    fails with an AttributeError from deep inside numba (NVIDIA/numba-cuda#907; seen on
    an H100 with numba-cuda 0.30.4 and NumPy 2.5.2). Importing the module that does it
    here says so at import, where the backend is chosen, instead.
    """
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":   # the simulator compiles nothing
        return
    try:
        import numba.cuda.cudaimpl  # noqa: F401  (numba-cuda's NumPy overloads)
    except AttributeError as exc:
        raise ImportError(
            f"numba.cuda cannot compile kernels with NumPy {np.__version__} ({exc}; "
            "NVIDIA/numba-cuda#907): install 'numpy<2.5' (pip install 'fastlstm[cuda]' "
            "pins it)") from exc


_check_kernels_compile()

NAME = "cuda"
#: Cell kinds with kernels here.
CELLS = ("rnn", "lstm", "gru")
#: Its layer GEMMs: BLAS blocks on a thread pool (fastlstm._gemm with kernels=None).
GEMM_KERNELS = None
THREADS_PER_BLOCK = int(os.environ.get("FASTLSTM_CUDA_THREADS", "128"))
ROWS_PER_BLOCK = int(os.environ.get("FASTLSTM_CUDA_ROWS", "8"))


@cuda.jit(device=True)
def _sigmoid(x, one):
    return one / (one + math.exp(-x))


@cuda.jit
def _rnn_forward_kernel(xproj, W, seq_len, order, rows, hs, h_buf, zero):
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = hs.shape[2]
    for idx in range(tid, n_rows * H, nth):
        r, u = idx // H, idx % H
        h_buf[0, start + r, u] = hs[0, order[start + r], u]
    cuda.syncthreads()
    n_active = n_rows
    for t in range(seq_len[order[start]]):
        while seq_len[order[start + n_active - 1]] <= t:
            n_active -= 1
        src, dst = t % 2, 1 - t % 2
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            acc = zero
            for k in range(H):
                acc += h_buf[src, start + r, k] * W[k, u]
            h = math.tanh(xproj[t, b, u] + acc)
            hs[t + 1, b, u] = h
            h_buf[dst, start + r, u] = h
        cuda.syncthreads()


@cuda.jit
def _rnn_backward_kernel(W, seq_len, order, rows, hs, d_out, dh, dz, dh_buf, zero, one):
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = dh.shape[1]
    n_active = 0
    for t in range(seq_len[order[start]] - 1, -1, -1):
        n_before = n_active
        while n_active < n_rows and seq_len[order[start + n_active]] > t:
            n_active += 1
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            if r >= n_before:                       # the row's last step: load dL/dh
                dh_buf[start + r, u] = dh[b, u]
            h = hs[t + 1, b, u]
            dz[t, b, u] = (dh_buf[start + r, u] + d_out[t, b, u]) * (one - h * h)
        cuda.syncthreads()
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            acc = zero
            for k in range(H):
                acc += dz[t, b, k] * W[u, k]
            dh_buf[start + r, u] = acc
        cuda.syncthreads()
    for idx in range(tid, n_active * H, nth):
        r, u = idx // H, idx % H
        dh[order[start + r], u] = dh_buf[start + r, u]


@cuda.jit
def _lstm_forward_kernel(xproj, W, peep, use_peep, forget_bias, clip, seq_len, order, rows,
                         hs, cs, acts, cun, h_buf, c_buf, zero, one):
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = hs.shape[2]
    for idx in range(tid, n_rows * H, nth):
        r, u = idx // H, idx % H
        h_buf[0, start + r, u] = hs[0, order[start + r], u]
        c_buf[start + r, u] = cs[0, order[start + r], u]
    cuda.syncthreads()
    n_active = n_rows
    for t in range(seq_len[order[start]]):
        while seq_len[order[start + n_active - 1]] <= t:
            n_active -= 1
        src, dst = t % 2, 1 - t % 2
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            a_i, a_j, a_f, a_o = zero, zero, zero, zero
            for k in range(H):
                h_k = h_buf[src, start + r, k]
                a_i += h_k * W[k, u]
                a_j += h_k * W[k, H + u]
                a_f += h_k * W[k, 2 * H + u]
                a_o += h_k * W[k, 3 * H + u]
            # Same operation order as the reference (and TensorFlow).
            z_i = xproj[t, b, u] + a_i
            z_j = xproj[t, b, H + u] + a_j
            z_f = (xproj[t, b, 2 * H + u] + a_f) + forget_bias
            z_o = xproj[t, b, 3 * H + u] + a_o
            c_prev = c_buf[start + r, u]
            if use_peep:
                z_i = z_i + peep[0, u] * c_prev
                z_f = z_f + peep[1, u] * c_prev
            i = _sigmoid(z_i, one)
            j = math.tanh(z_j)
            f = _sigmoid(z_f, one)
            c = f * c_prev + i * j
            if clip > 0:
                cun[t, b, u] = c
                c = min(max(c, -clip), clip)
            if use_peep:
                z_o = z_o + peep[2, u] * c              # the output gate sees the new cell
            o = _sigmoid(z_o, one)
            h = o * math.tanh(c)
            if acts.shape[0] > 0:                     # empty: inference
                acts[t, b, u] = i
                acts[t, b, H + u] = j
                acts[t, b, 2 * H + u] = f
                acts[t, b, 3 * H + u] = o
            hs[t + 1, b, u] = h
            cs[t + 1, b, u] = c
            h_buf[dst, start + r, u] = h
            c_buf[start + r, u] = c
        cuda.syncthreads()


@cuda.jit
def _lstm_backward_kernel(W, peep, use_peep, clip, seq_len, order, rows, cs, acts, cun,
                          d_out, dh, dc, dz, dh_buf, dc_buf, zero, one):
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = dh.shape[1]
    n_active = 0
    for t in range(seq_len[order[start]] - 1, -1, -1):
        n_before = n_active
        while n_active < n_rows and seq_len[order[start + n_active]] > t:
            n_active += 1
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            if r >= n_before:                       # the row's last step: load dL/dstate
                dh_buf[start + r, u] = dh[b, u]
                dc_buf[start + r, u] = dc[b, u]
            i = acts[t, b, u]
            j = acts[t, b, H + u]
            f = acts[t, b, 2 * H + u]
            o = acts[t, b, 3 * H + u]
            dh_t = dh_buf[start + r, u] + d_out[t, b, u]
            tanh_c = math.tanh(cs[t + 1, b, u])
            dz_o = dh_t * tanh_c * o * (one - o)
            dc_t = dc_buf[start + r, u] + dh_t * o * (one - tanh_c * tanh_c)
            if use_peep:
                dc_t = dc_t + dz_o * peep[2, u]
            if clip > 0:
                if cun[t, b, u] < -clip or cun[t, b, u] > clip:   # clipped: no gradient
                    dc_t = zero
            dz_i = dc_t * j * i * (one - i)
            dz_j = dc_t * i * (one - j * j)
            dz_f = dc_t * cs[t, b, u] * f * (one - f)
            if use_peep:
                dc_buf[start + r, u] = dc_t * f + dz_i * peep[0, u] + dz_f * peep[1, u]
            else:
                dc_buf[start + r, u] = dc_t * f
            dz[t, b, u] = dz_i
            dz[t, b, H + u] = dz_j
            dz[t, b, 2 * H + u] = dz_f
            dz[t, b, 3 * H + u] = dz_o
        cuda.syncthreads()
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            acc = zero
            for k in range(4 * H):
                acc += dz[t, b, k] * W[u, k]
            dh_buf[start + r, u] = acc
        cuda.syncthreads()
    for idx in range(tid, n_active * H, nth):
        r, u = idx // H, idx % H
        dh[order[start + r], u] = dh_buf[start + r, u]
        dc[order[start + r], u] = dc_buf[start + r, u]


@cuda.jit
def _gru_forward_kernel(xproj, W, b_h, reset_after, seq_len, order, rows, hs, acts, hzc,
                        h_buf, rh_buf, u_buf, zero, one):
    """Gate order (r, u, c); without ``reset_after`` two phases per step: the gates and
    ``r * h``, then (after a barrier) the candidate's product ``(r * h) W_c``."""
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = hs.shape[2]
    store_acts = acts.shape[0] > 0
    store_hzc = hzc.shape[0] > 0
    for idx in range(tid, n_rows * H, nth):
        r, u = idx // H, idx % H
        h_buf[0, start + r, u] = hs[0, order[start + r], u]
    cuda.syncthreads()
    n_active = n_rows
    for t in range(seq_len[order[start]]):
        while seq_len[order[start + n_active - 1]] <= t:
            n_active -= 1
        src, dst = t % 2, 1 - t % 2
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            a_r = zero
            a_u = zero
            a_c = zero
            for k in range(H):
                h_k = h_buf[src, start + r, k]
                a_r += h_k * W[k, u]
                a_u += h_k * W[k, H + u]
                if reset_after:
                    a_c += h_k * W[k, 2 * H + u]
            if reset_after:
                rg = _sigmoid(xproj[t, b, u] + (a_r + b_h[u]), one)
                ug = _sigmoid(xproj[t, b, H + u] + (a_u + b_h[H + u]), one)
                hz_c = a_c + b_h[2 * H + u]
                c = math.tanh(xproj[t, b, 2 * H + u] + rg * hz_c)
                h = ug * h_buf[src, start + r, u] + (one - ug) * c
                if store_acts:
                    acts[t, b, u] = rg
                    acts[t, b, H + u] = ug
                    acts[t, b, 2 * H + u] = c
                if store_hzc:
                    hzc[t, b, u] = hz_c
                hs[t + 1, b, u] = h
                h_buf[dst, start + r, u] = h
            else:
                rg = _sigmoid(xproj[t, b, u] + a_r, one)
                ug = _sigmoid(xproj[t, b, H + u] + a_u, one)
                if store_acts:
                    acts[t, b, u] = rg
                    acts[t, b, H + u] = ug
                u_buf[start + r, u] = ug
                rh_buf[start + r, u] = rg * h_buf[src, start + r, u]
        cuda.syncthreads()
        if reset_after:
            continue
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            a_c = zero
            for k in range(H):
                a_c += rh_buf[start + r, k] * W[k, 2 * H + u]
            ug = u_buf[start + r, u]
            c = math.tanh(xproj[t, b, 2 * H + u] + a_c)
            h = ug * h_buf[src, start + r, u] + (one - ug) * c
            if store_acts:
                acts[t, b, 2 * H + u] = c
            hs[t + 1, b, u] = h
            h_buf[dst, start + r, u] = h
        cuda.syncthreads()


@cuda.jit
def _gru_backward_kernel(W, reset_after, seq_len, order, rows, hs, acts, hzc, d_out, dh, dz,
                         dh_buf, dzh_buf, dhu_buf, zero, one):
    start = cuda.blockIdx.x * rows
    n_rows = min(rows, order.shape[0] - start)
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    H = dh.shape[1]
    n_active = 0
    for t in range(seq_len[order[start]] - 1, -1, -1):
        n_before = n_active
        while n_active < n_rows and seq_len[order[start + n_active]] > t:
            n_active += 1
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            b = order[start + r]
            if r >= n_before:                       # the row's last step: load dL/dh
                dh_buf[start + r, u] = dh[b, u]
            rg = acts[t, b, u]
            ug = acts[t, b, H + u]
            c = acts[t, b, 2 * H + u]
            dh_t = dh_buf[start + r, u] + d_out[t, b, u]
            dz_c = dh_t * (one - ug) * (one - c * c)
            dz_u = dh_t * (hs[t, b, u] - c) * ug * (one - ug)
            dz[t, b, H + u] = dz_u
            dz[t, b, 2 * H + u] = dz_c
            dhu_buf[start + r, u] = dh_t * ug
            if reset_after:
                dz_r = dz_c * hzc[t, b, u] * rg * (one - rg)
                dz[t, b, u] = dz_r
                dzh_buf[start + r, u] = dz_r
                dzh_buf[start + r, H + u] = dz_u
                dzh_buf[start + r, 2 * H + u] = dz_c * rg
        cuda.syncthreads()
        if not reset_after:                 # dz_r needs d(r h) = dz_c W_c^T first
            for idx in range(tid, n_active * H, nth):
                r, u = idx // H, idx % H
                b = order[start + r]
                d_rh = zero
                for k in range(H):
                    d_rh += dz[t, b, 2 * H + k] * W[u, 2 * H + k]
                rg = acts[t, b, u]
                dz_r = d_rh * hs[t, b, u] * rg * (one - rg)
                dz[t, b, u] = dz_r
                dzh_buf[start + r, u] = dz_r
                dzh_buf[start + r, H + u] = dz[t, b, H + u]
                dhu_buf[start + r, u] = dhu_buf[start + r, u] + d_rh * rg
            cuda.syncthreads()
        width = 3 * H if reset_after else 2 * H
        for idx in range(tid, n_active * H, nth):
            r, u = idx // H, idx % H
            acc = zero
            for k in range(width):
                acc += dzh_buf[start + r, k] * W[u, k]
            dh_buf[start + r, u] = dhu_buf[start + r, u] + acc
        cuda.syncthreads()
    for idx in range(tid, n_active * H, nth):
        r, u = idx // H, idx % H
        dh[order[start + r], u] = dh_buf[start + r, u]


# --------------------------------------------------------- the kernel contract (host)
def _launch(seq_len):
    order = np.argsort(-seq_len, kind="stable").astype(np.int64)
    blocks = max(1, -(-order.shape[0] // ROWS_PER_BLOCK))
    return order, (blocks, THREADS_PER_BLOCK)


def _to_device(*arrays):
    """Host arrays -> device copies (the kernel contract works on host arrays)."""
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def _to_host(*pairs):
    """Copy each ``(device, host)`` pair's device array back into its host array."""
    for dev, host in pairs:
        dev.copy_to_host(host)


def rnn_forward(xproj, W, seq_len, hs, n_threads=1):
    """Basic RNN recurrence; see :func:`fastlstm.reference.rnn_forward`."""
    if xproj.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    d = _to_device(xproj, W, seq_len, order, hs)
    h_buf = cuda.device_array((2,) + hs.shape[1:], hs.dtype)
    _rnn_forward_kernel[grid](*d[:4], ROWS_PER_BLOCK, d[4], h_buf, hs.dtype.type(0))
    _to_host((d[4], hs))


def rnn_backward(W, seq_len, hs, d_outputs, dh, dz, n_threads=1):
    """Backward of the basic RNN; see :func:`fastlstm.reference.rnn_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    dW, dlen, dord, dhs, dout, ddh, ddz = _to_device(W, seq_len, order, hs, d_outputs, dh, dz)
    dh_buf = cuda.device_array(dh.shape, dh.dtype)
    dt = dh.dtype.type
    _rnn_backward_kernel[grid](dW, dlen, dord, ROWS_PER_BLOCK, dhs, dout, ddh, ddz, dh_buf,
                               dt(0), dt(1))
    _to_host((ddh, dh), (ddz, dz))


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1):
    """LSTM recurrence; see :func:`fastlstm.reference.lstm_forward`."""
    if xproj.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    dxp, dW, dpeep, dlen, dord, dhs, dcs, dacts, dcun = _to_device(
        xproj, W, peepholes, seq_len, order, hs, cs, acts, c_unclipped)
    h_buf = cuda.device_array((2,) + hs.shape[1:], hs.dtype)
    c_buf = cuda.device_array(hs.shape[1:], hs.dtype)
    dt = hs.dtype.type
    _lstm_forward_kernel[grid](dxp, dW, dpeep, bool(use_peepholes), dt(forget_bias),
                               dt(cell_clip), dlen, dord, ROWS_PER_BLOCK, dhs, dcs, dacts,
                               dcun, h_buf, c_buf, dt(0), dt(1))
    _to_host((dhs, hs), (dcs, cs), (dacts, acts), (dcun, c_unclipped))


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1):
    """Backward of the LSTM; see :func:`fastlstm.reference.lstm_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    dW, dpeep, dlen, dord, dcs, dacts, dcun, dout, ddh, ddc, ddz = _to_device(
        W, peepholes, seq_len, order, cs, acts, c_unclipped, d_outputs, dh, dc, dz)
    dh_buf = cuda.device_array(dh.shape, dh.dtype)
    dc_buf = cuda.device_array(dh.shape, dh.dtype)
    dt = dh.dtype.type
    _lstm_backward_kernel[grid](dW, dpeep, bool(use_peepholes), dt(cell_clip), dlen, dord,
                                ROWS_PER_BLOCK, dcs, dacts, dcun, dout, ddh, ddc, ddz,
                                dh_buf, dc_buf, dt(0), dt(1))
    _to_host((ddh, dh), (ddc, dc), (ddz, dz))


def gru_forward(xproj, W, recurrent_bias, reset_after, seq_len, hs, acts, hzc, n_threads=1):
    """GRU recurrence; see :func:`fastlstm.reference.gru_forward`."""
    if xproj.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    dxp, dW, dbh, dlen, dord, dhs, dacts, dhzc = _to_device(
        xproj, W, recurrent_bias, seq_len, order, hs, acts, hzc)
    h_buf = cuda.device_array((2,) + hs.shape[1:], hs.dtype)
    rh_buf = cuda.device_array(hs.shape[1:], hs.dtype)
    u_buf = cuda.device_array(hs.shape[1:], hs.dtype)
    dt = hs.dtype.type
    _gru_forward_kernel[grid](dxp, dW, dbh, bool(reset_after), dlen, dord, ROWS_PER_BLOCK, dhs,
                              dacts, dhzc, h_buf, rh_buf, u_buf, dt(0), dt(1))
    _to_host((dhs, hs), (dacts, acts), (dhzc, hzc))


def gru_backward(W, reset_after, seq_len, hs, acts, hzc, d_outputs, dh, dz, n_threads=1):
    """Backward of the GRU; see :func:`fastlstm.reference.gru_backward`."""
    if d_outputs.shape[0] == 0:
        return
    order, grid = _launch(seq_len)
    dW, dlen, dord, dhs, dacts, dhzc, dout, ddh, ddz = _to_device(
        W, seq_len, order, hs, acts, hzc, d_outputs, dh, dz)
    B, H = dh.shape
    dh_buf = cuda.device_array((B, H), dh.dtype)
    dzh_buf = cuda.device_array((B, 3 * H), dh.dtype)
    dhu_buf = cuda.device_array((B, H), dh.dtype)
    dt = dh.dtype.type
    _gru_backward_kernel[grid](dW, bool(reset_after), dlen, dord, ROWS_PER_BLOCK, dhs, dacts,
                               dhzc, dout, ddh, ddz, dh_buf, dzh_buf, dhu_buf, dt(0), dt(1))
    _to_host((ddh, dh), (ddz, dz))
