"""A whole LSTM layer on the GPU: input projection, recurrence and gradients on device
arrays, with nothing copied between host and device.

The layer of :func:`fastlstm.dynamic_rnn` (time-major, TensorFlow 1.x ``LSTMCell``
arithmetic) for data that already lives on the device: the input projection ``x W_x + b``
and the gradients ``x^T dz``, ``h^T dz``, ``sum dz``, ``dz W_x^T`` as products of
:mod:`._cuda_gemm`, the recurrence as planned by :mod:`.cuda_backend`. Scratch comes
from the backend's workspace; results are fresh device arrays the caller keeps.
"""

import numpy as np
from numba import cuda

from . import _cuda_gemm, cuda_backend

_THREADS = 128


@cuda.jit
def _final_state(hs, seq_len, out):
    """``out[b] = hs[seq_len[b], b]``: each row's state after its last step."""
    H = out.shape[1]
    i = cuda.grid(1)
    if i < out.shape[0] * H:
        b = i // H
        out[b, i - b * H] = hs[seq_len[b], b, i - b * H]


@cuda.jit
def _sort_order(seq_len, order):
    """Rows by decreasing length, ties by row (:func:`.cuda_backend.sort_order` on the
    device): row ``b`` goes to its rank."""
    b = cuda.grid(1)
    if b < seq_len.shape[0]:
        rank = 0
        for other in range(seq_len.shape[0]):
            if seq_len[other] > seq_len[b] or (seq_len[other] == seq_len[b] and other < b):
                rank += 1
        order[rank] = b


@cuda.jit
def _peephole_sums(dz, cs, out):
    """``out[0] = sum dz_i c_prev``, ``out[1] = sum dz_f c_prev``, ``out[2] = sum dz_o c``
    over steps and rows, in order."""
    T, B = dz.shape[0], dz.shape[1]
    H = out.shape[1]
    i = cuda.grid(1)
    if i < 3 * H:
        g, u = i // H, i - (i // H) * H
        col = (0 if g == 0 else g + 1) * H + u      # gates i, f, o of (i, j, f, o)
        shift = 1 if g == 2 else 0          # the output gate's peephole sees the new cell
        acc = out[0, 0] * 0
        for t in range(T):
            for b in range(B):
                acc += dz[t, b, col] * cs[t + shift, b, u]
        out[g, u] = acc


def _grid(n):
    return max(1, -(-n // _THREADS)), _THREADS


class LSTMForward:
    """What :func:`lstm_forward` returns: device arrays.

    Attributes
    ----------
    outputs : device array, shape (T, B, H)
        Zero past each sequence's end (``hs[1:]``).
    h, c : device arrays, shape (B, H)
        The state after each sequence's last step.
    hs, cs, acts, c_unclipped, order, seq_len :
        The history the backward reads.
    """

    def __init__(self, **arrays):
        self.__dict__.update(arrays)


def lstm_forward(x, seq_len, h0, c0, kernel, recurrent_kernel, bias, peepholes=None,
                 forget_bias=1.0, cell_clip=0.0, training=False, workspace=None):
    """An LSTM layer's forward on device arrays.

    Parameters
    ----------
    x : device array, shape (T, B, I)
    seq_len : device array of int, shape (B,)
    h0, c0 : device arrays, shape (B, H)
    kernel : device array, shape (I, 4H)
    recurrent_kernel : device array, shape (H, 4H)
    bias : device array, shape (4H,)
    peepholes : device array, shape (3, H), optional
        ``w_i_diag, w_f_diag, w_o_diag``; None: no peepholes.
    forget_bias, cell_clip : float
    training : bool
        Keep the activations for :func:`lstm_backward`.
    workspace : cuda_backend.Workspace, optional
        Where the results go (reused by the next call with it: a training loop's);
        by default fresh device arrays.

    Returns
    -------
    LSTMForward
    """
    T, B, I = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    new = _allocator(workspace, "forward")
    xproj = cuda_backend.workspace().get("layer_xproj", (T, B, 4 * H), dtype)
    _cuda_gemm.matmul(x.reshape(T * B, I), kernel, xproj.reshape(T * B, 4 * H), bias=bias)
    clip = (cell_clip or 0.0) > 0
    hs = new("hs", (T + 1, B, H), dtype, zero=True)
    cs = new("cs", (T + 1, B, H), dtype, zero=True)
    acts = new("acts", (T, B, 4 * H) if training else (0, B, 4 * H), dtype, zero=True)
    c_unclipped = new("c_unclipped", (T, B, H) if clip else (0, B, H), dtype, zero=True)
    hs[0].copy_to_device(h0)
    cs[0].copy_to_device(c0)
    order = new("order", (B,), np.int64)
    _sort_order[_grid(B)](seq_len, order)
    use_peepholes = peepholes is not None
    if peepholes is None:
        peepholes = new("no_peepholes", (3, H), dtype, zero=True)
    cuda_backend.lstm_forward_device(xproj, recurrent_kernel, peepholes, use_peepholes,
                                     forget_bias, cell_clip or 0.0, seq_len, order, hs, cs,
                                     acts, c_unclipped)
    h = new("h", (B, H), dtype)
    c = new("c", (B, H), dtype)
    for src, dst in ((hs, h), (cs, c)):
        _final_state[_grid(B * H)](src, seq_len, dst)
    return LSTMForward(outputs=hs[1:], h=h, c=c, hs=hs, cs=cs, acts=acts,
                       c_unclipped=c_unclipped, order=order, seq_len=seq_len, x=x,
                       peepholes=peepholes, use_peepholes=use_peepholes,
                       cell_clip=cell_clip or 0.0)


def lstm_backward(fwd, kernel, recurrent_kernel, d_outputs=None, d_h=None, d_c=None,
                  input_gradient=True, out=None, workspace=None):
    """Gradients of an LSTM layer on device arrays.

    Parameters
    ----------
    fwd : LSTMForward
        From :func:`lstm_forward` with ``training=True``.
    kernel, recurrent_kernel : device arrays
        As passed to the forward.
    d_outputs : device array, shape (T, B, H), optional
        dL/d(outputs); zeros when None (a loss on the final state alone).
    d_h, d_c : device arrays, shape (B, H), optional
        dL/d(final state); zeros when None.
    input_gradient : bool
        Also compute dL/dx.
    out : dict of device arrays, optional
        Arrays to write gradients into (by the names returned; ``peepholes`` (3, H) for
        the three peephole gradients at once), e.g. views of one flat buffer.
    workspace : cuda_backend.Workspace, optional
        Where the other results go (see :func:`lstm_forward`).

    Returns
    -------
    dict of device arrays
        ``kernel``, ``recurrent_kernel``, ``bias``, ``initial_state`` (``(dh0, dc0)``),
        with peepholes ``w_i_diag``, ``w_f_diag``, ``w_o_diag``, and ``inputs`` (T, B, I)
        with ``input_gradient``.
    """
    if fwd.acts.shape[0] == 0 and fwd.hs.shape[0] > 1:
        raise ValueError("lstm_backward needs the forward's activations: call "
                         "lstm_forward(..., training=True)")
    T, B, I = fwd.x.shape
    H = recurrent_kernel.shape[0]
    dtype = fwd.hs.dtype
    out = dict(out or {})
    new = _allocator(workspace, "backward")
    scratch = cuda_backend.workspace()
    if d_outputs is None:
        d_outputs = scratch.zeros("layer_no_d_outputs", (T, B, H), dtype)
    dh = new("dh", (B, H), dtype)
    dc = new("dc", (B, H), dtype)
    for given, dst in ((d_h, dh), (d_c, dc)):
        if given is None:
            _zero(dst)
        else:
            dst.copy_to_device(given)
    dz = scratch.zeros("layer_dz", (T, B, 4 * H), dtype)
    cuda_backend.lstm_backward_device(recurrent_kernel, fwd.peepholes, fwd.use_peepholes,
                                      fwd.cell_clip, fwd.seq_len, fwd.order, fwd.cs,
                                      fwd.acts, fwd.c_unclipped, d_outputs, dh, dc, dz)
    dz2 = dz.reshape(T * B, 4 * H)

    def target(name, shape):
        return out[name] if out.get(name) is not None else new("d_" + name, shape, dtype)

    grads = {"kernel": target("kernel", (I, 4 * H)),
             "recurrent_kernel": target("recurrent_kernel", (H, 4 * H)),
             "bias": target("bias", (4 * H,)), "initial_state": (dh, dc)}
    _cuda_gemm.matmul(fwd.x.reshape(T * B, I), dz2, grads["kernel"], trans_a=True)
    _cuda_gemm.matmul(fwd.hs[:T].reshape(T * B, H), dz2, grads["recurrent_kernel"],
                      trans_a=True)
    _cuda_gemm.column_sums(dz2, grads["bias"])
    if fwd.use_peepholes:
        sums = target("peepholes", (3, H))
        _peephole_sums[_grid(3 * H)](dz, fwd.cs, sums)
        grads.update(w_i_diag=sums[0], w_f_diag=sums[1], w_o_diag=sums[2])
    if input_gradient:
        dx = target("inputs", (T, B, I))
        _cuda_gemm.matmul(dz2, kernel, dx.reshape(T * B, I), trans_b=True)
        grads["inputs"] = dx
    return grads


def _allocator(workspace, prefix):
    """``new(name, shape, dtype, zero=False)``: a device array from ``workspace`` (under
    ``prefix/name``) or, without one, a fresh one."""
    def new(name, shape, dtype, zero=False):
        if workspace is not None:
            arr = workspace.get(f"{prefix}/{name}", shape, dtype)
        else:
            arr = cuda.device_array(shape, dtype)
        if zero:
            _zero(arr)
        return arr
    return new


def _zero(arr):
    if arr.size:
        flat = arr.reshape(arr.size)
        cuda_backend._kernels.fill_zero[_grid(arr.size)](flat)


def to_device_params(cell):
    """A fastlstm LSTM cell's parameters as the device arrays :func:`lstm_forward` takes:
    ``kernel``, ``recurrent_kernel``, ``bias`` and ``peepholes`` (None without)."""
    p = cell.params
    peep = None
    if cell.use_peepholes:
        peep = cuda.to_device(np.stack([p["w_i_diag"], p["w_f_diag"], p["w_o_diag"]]))
    return {"kernel": cuda.to_device(p["kernel"]),
            "recurrent_kernel": cuda.to_device(p["recurrent_kernel"]),
            "bias": cuda.to_device(p["bias"]), "peepholes": peep}
