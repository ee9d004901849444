"""A whole recurrent layer on the GPU (basic RNN, LSTM, GRU with ``reset_after``): input
projection, recurrence and gradients on device arrays, nothing copied between host and
device.

The layer of :func:`fastlstm.dynamic_rnn` (time-major, the cells' own arithmetic) for
data that already lives on the device: the input projection ``x W_x + b``
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


@cuda.jit
def _candidate_scaled(dz, acts, dzh):
    """``dzh = dz`` with the GRU candidate's block times ``r`` (``reset_after``: the
    candidate's recurrent part is ``r * (h W_c + b_hc)``)."""
    T, B, G = dz.shape
    H = G // 3
    i = cuda.grid(1)
    if i < T * B * G:
        t = i // (B * G)
        rem = i - t * B * G
        b = rem // G
        k = rem - b * G
        v = dz[t, b, k]
        if k >= 2 * H:
            v = v * acts[t, b, k - 2 * H]
        dzh[t, b, k] = v


def _grid(n):
    return max(1, -(-n // _THREADS)), _THREADS


class LayerForward:
    """What the ``*_forward`` functions return: device arrays.

    Attributes
    ----------
    kind : {"rnn", "lstm", "gru"}
    outputs : device array, shape (T, B, H)
        Zero past each sequence's end (``hs[1:]``).
    h : device array, shape (B, H)
        The hidden state after each sequence's last step (``c``: the LSTM's cell state).
    hs, cs, acts, c_unclipped, hzc, order, seq_len, x :
        The history the backward reads.
    """

    def __init__(self, **arrays):
        self.__dict__.update(arrays)


#: The LSTM's forward result (an alias kept for its name in the docs).
LSTMForward = LayerForward


def _start(kind, x, seq_len, h0, kernel, bias, training, workspace):
    """The shared start of a forward: the input projection ``x W_x + b`` (T, B, GH), the
    history ``hs`` with ``h0`` in front, the activations' buffer and the sorted rows."""
    T, B, I = x.shape
    GH = kernel.shape[1]
    H = h0.shape[1]
    new = _allocator(workspace, "forward")
    xproj = cuda_backend.workspace().get("layer_xproj", (T, B, GH), x.dtype)
    _cuda_gemm.matmul(x.reshape(T * B, I), kernel, xproj.reshape(T * B, GH), bias=bias)
    hs = new("hs", (T + 1, B, H), x.dtype, zero=True)
    hs[0].copy_to_device(h0)
    width = GH if kind != "rnn" else 0
    acts = new("acts", (T if training else 0, B, width), x.dtype, zero=True)
    order = new("order", (B,), np.int64)
    _sort_order[_grid(B)](seq_len, order)
    return new, xproj, hs, acts, order


def _final(new, name, history, seq_len):
    B, H = history.shape[1:]
    out = new(name, (B, H), history.dtype)
    _final_state[_grid(B * H)](history, seq_len, out)
    return out


def rnn_forward(x, seq_len, h0, kernel, recurrent_kernel, bias, training=False,
                workspace=None):
    """A basic RNN layer's forward on device arrays; see :func:`lstm_forward`."""
    new, xproj, hs, _, order = _start("rnn", x, seq_len, h0, kernel, bias, training,
                                      workspace)
    cuda_backend.rnn_forward_device(xproj, recurrent_kernel, seq_len, order, hs)
    return LayerForward(kind="rnn", outputs=hs[1:], h=_final(new, "h", hs, seq_len), hs=hs,
                        order=order, seq_len=seq_len, x=x)


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
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    new, xproj, hs, acts, order = _start("lstm", x, seq_len, h0, kernel, bias, training,
                                         workspace)
    clip = (cell_clip or 0.0) > 0
    cs = new("cs", (T + 1, B, H), dtype, zero=True)
    c_unclipped = new("c_unclipped", (T, B, H) if clip else (0, B, H), dtype, zero=True)
    cs[0].copy_to_device(c0)
    use_peepholes = peepholes is not None
    if peepholes is None:
        peepholes = new("no_peepholes", (3, H), dtype, zero=True)
    cuda_backend.lstm_forward_device(xproj, recurrent_kernel, peepholes, use_peepholes,
                                     forget_bias, cell_clip or 0.0, seq_len, order, hs, cs,
                                     acts, c_unclipped)
    return LayerForward(kind="lstm", outputs=hs[1:], h=_final(new, "h", hs, seq_len),
                        c=_final(new, "c", cs, seq_len), hs=hs, cs=cs, acts=acts,
                        c_unclipped=c_unclipped, order=order, seq_len=seq_len, x=x,
                        peepholes=peepholes, use_peepholes=use_peepholes,
                        cell_clip=cell_clip or 0.0)


def _backward_start(fwd, recurrent_kernel, d_outputs, d_h, workspace, names):
    """The shared start of a backward: ``d_outputs`` (zeros when None) and the state
    gradients ``names`` (``dh``, and ``dc`` for the LSTM) as device arrays of this call,
    from ``d_h`` (a sequence of given arrays or None), and a zeroed ``dz``."""
    if fwd.hs.shape[0] > 1 and fwd.kind != "rnn" and fwd.acts.shape[0] == 0:
        raise ValueError(f"{fwd.kind}_backward needs the forward's activations: call "
                         f"{fwd.kind}_forward(..., training=True)")
    T, B, _ = fwd.x.shape
    H = recurrent_kernel.shape[0]
    dtype = fwd.hs.dtype
    new = _allocator(workspace, "backward")
    scratch = cuda_backend.workspace()
    if d_outputs is None:
        d_outputs = scratch.zeros("layer_no_d_outputs", (T, B, H), dtype)
    states = []
    for name, given in zip(names, d_h):
        dst = new(name, (B, H), dtype)
        if given is None:
            _zero(dst)
        else:
            dst.copy_to_device(given)
        states.append(dst)
    dz = scratch.zeros("layer_dz", (T, B, recurrent_kernel.shape[1]), dtype)
    return new, d_outputs, states, dz


def _gradients(fwd, kernel, recurrent_kernel, dz, out, new, input_gradient, dzh=None):
    """``kernel = x^T dz``, ``recurrent_kernel = h_prev^T dzh`` (``dzh``: ``dz`` unless
    given), ``bias = sum dz`` and, with ``input_gradient``, ``inputs = dz W_x^T``, into
    the arrays of ``out`` where given."""
    T, B, I = fwd.x.shape
    H, GH = recurrent_kernel.shape
    dtype = dz.dtype
    dz2 = dz.reshape(T * B, GH)
    dzh2 = dz2 if dzh is None else dzh.reshape(T * B, GH)

    def target(name, shape):
        return out[name] if out.get(name) is not None else new("d_" + name, shape, dtype)

    grads = {"kernel": target("kernel", (I, GH)),
             "recurrent_kernel": target("recurrent_kernel", (H, GH)),
             "bias": target("bias", (GH,))}
    _cuda_gemm.matmul(fwd.x.reshape(T * B, I), dz2, grads["kernel"], trans_a=True)
    _cuda_gemm.matmul(fwd.hs[:T].reshape(T * B, H), dzh2, grads["recurrent_kernel"],
                      trans_a=True)
    _cuda_gemm.column_sums(dz2, grads["bias"])
    if input_gradient:
        dx = target("inputs", (T, B, I))
        _cuda_gemm.matmul(dz2, kernel, dx.reshape(T * B, I), trans_b=True)
        grads["inputs"] = dx
    return grads, target


def rnn_backward(fwd, kernel, recurrent_kernel, d_outputs=None, d_h=None,
                 input_gradient=True, out=None, workspace=None):
    """Gradients of a basic RNN layer on device arrays; see :func:`lstm_backward`
    (``initial_state``: dh0)."""
    new, d_outputs, (dh,), dz = _backward_start(fwd, recurrent_kernel, d_outputs, (d_h,),
                                                workspace, ("dh",))
    cuda_backend.rnn_backward_device(recurrent_kernel, fwd.seq_len, fwd.order, fwd.hs,
                                     d_outputs, dh, dz)
    grads, _ = _gradients(fwd, kernel, recurrent_kernel, dz, dict(out or {}), new,
                          input_gradient)
    grads["initial_state"] = dh
    return grads


def lstm_backward(fwd, kernel, recurrent_kernel, d_outputs=None, d_h=None, d_c=None,
                  input_gradient=True, out=None, workspace=None):
    """Gradients of an LSTM layer on device arrays.

    Parameters
    ----------
    fwd : LayerForward
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
    new, d_outputs, (dh, dc), dz = _backward_start(fwd, recurrent_kernel, d_outputs,
                                                   (d_h, d_c), workspace, ("dh", "dc"))
    cuda_backend.lstm_backward_device(recurrent_kernel, fwd.peepholes, fwd.use_peepholes,
                                      fwd.cell_clip, fwd.seq_len, fwd.order, fwd.cs,
                                      fwd.acts, fwd.c_unclipped, d_outputs, dh, dc, dz)
    grads, target = _gradients(fwd, kernel, recurrent_kernel, dz, dict(out or {}), new,
                               input_gradient)
    grads["initial_state"] = (dh, dc)
    if fwd.use_peepholes:
        sums = target("peepholes", (3, recurrent_kernel.shape[0]))
        _peephole_sums[_grid(sums.size)](dz, fwd.cs, sums)
        grads.update(w_i_diag=sums[0], w_f_diag=sums[1], w_o_diag=sums[2])
    return grads


def gru_backward(fwd, kernel, recurrent_kernel, d_outputs=None, d_h=None,
                 input_gradient=True, out=None, workspace=None):
    """Gradients of a GRU layer (``reset_after``) on device arrays; see
    :func:`lstm_backward`. The candidate's recurrent kernel block and the recurrent bias
    get theirs from ``dz_c * r``; ``recurrent_bias`` is returned too."""
    new, d_outputs, (dh,), dz = _backward_start(fwd, recurrent_kernel, d_outputs, (d_h,),
                                                workspace, ("dh",))
    cuda_backend.gru_backward_device(recurrent_kernel, True, fwd.seq_len, fwd.order, fwd.hs,
                                     fwd.acts, fwd.hzc, d_outputs, dh, dz)
    dzh = cuda_backend.workspace().get("layer_dzh", dz.shape, dz.dtype)
    _candidate_scaled[_grid(dz.size)](dz, fwd.acts, dzh)
    out = dict(out or {})
    grads, target = _gradients(fwd, kernel, recurrent_kernel, dz, out, new,
                               input_gradient, dzh=dzh)
    T, B, GH = dz.shape
    grads["recurrent_bias"] = target("recurrent_bias", (GH,))
    _cuda_gemm.column_sums(dzh.reshape(T * B, GH), grads["recurrent_bias"])
    grads["initial_state"] = dh
    return grads


def gru_forward(x, seq_len, h0, kernel, recurrent_kernel, bias, recurrent_bias,
                training=False, workspace=None):
    """A GRU layer's forward on device arrays (``GRUCell(reset_after=True)``, PyTorch's
    and Keras's form, with its ``recurrent_bias`` (3H,)); see :func:`lstm_forward`."""
    T, B, _ = x.shape
    H = h0.shape[1]
    new, xproj, hs, acts, order = _start("gru", x, seq_len, h0, kernel, bias, training,
                                         workspace)
    hzc = new("hzc", (T if training else 0, B, H), x.dtype, zero=True)
    cuda_backend.gru_forward_device(xproj, recurrent_kernel, recurrent_bias, True, seq_len,
                                    order, hs, acts, hzc)
    return LayerForward(kind="gru", outputs=hs[1:], h=_final(new, "h", hs, seq_len), hs=hs,
                        acts=acts, hzc=hzc, order=order, seq_len=seq_len, x=x)


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
    """A fastlstm cell's parameters as the device arrays the layer functions take:
    ``kernel``, ``recurrent_kernel``, ``bias``; for an LSTM ``peepholes`` (None without),
    for a GRU ``recurrent_bias``."""
    p = cell.params
    params = {name: cuda.to_device(p[name]) for name in ("kernel", "recurrent_kernel", "bias")}
    if cell.kind == "lstm":
        params["peepholes"] = (cuda.to_device(np.stack([p[n] for n in
                                                        ("w_i_diag", "w_f_diag", "w_o_diag")]))
                               if cell.use_peepholes else None)
    if cell.kind == "gru":
        if not cell.reset_after:
            raise ValueError("the device layer runs GRUCell(reset_after=True) only")
        params["recurrent_bias"] = cuda.to_device(p["recurrent_bias"])
    return params
