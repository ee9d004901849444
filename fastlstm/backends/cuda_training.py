"""The estimators' training epochs on the GPU, with the data kept there for the whole fit.

:class:`DeviceTrainer` runs the epochs of ``LSTMClassifier.fit`` with ``backend="cuda"``
for the model it supports (:func:`unsupported` says why another is not): the training
set, the parameters, their gradients and the optimizer's state stay on the device; a
step is a batch gathered on the device, the input projection, the recurrent layer
(:mod:`.cuda_layer`: LSTM, peephole LSTM, GRU or basic RNN), the readout, the softmax
loss and one fused optimizer launch (:mod:`.cuda_optim`). Per epoch the host sends the
shuffled order of the rows (drawn from the estimator's generator exactly as the host
loop draws it) and reads back the loss, then the parameters and the optimizer state, so
that validation, early stopping, callbacks, persistence and ``warm_start`` see the
epoch's model as on the CPU. :func:`outputs` runs the same model for prediction.

The loss is checked once per epoch, not per batch: a fit that diverges stops at the end
of the epoch with the host loop's error.
"""

import math

import numpy as np
from numba import cuda

from . import cuda_backend, cuda_layer, cuda_optim
from ._cuda_gemm import column_sums, matmul

_THREADS = 128
_PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")


def unsupported_model(network):
    """Why ``network`` cannot run on the device (prediction and training): a sentence, or
    None when it can."""
    c = network.config
    found = [why for bad, why in [
        (c["num_layers"] != 1, f"num_layers={c['num_layers']}"),
        (c["bidirectional"], "bidirectional=True"),
        (c["readout"] != "last", f"readout={c['readout']!r}"),
    ] if bad]
    if found:
        return ("the device-resident model is one unidirectional recurrent layer read out "
                "at the last step; not " + ", ".join(found))
    return None


def unsupported(estimator, network):
    """Why ``estimator`` (about to train ``network``) cannot train on the device: a
    sentence, or None when it can."""
    from ..estimators import LSTMClassifier
    found = [why for bad, why in [
        (not isinstance(estimator, LSTMClassifier), "only LSTMClassifier trains there"),
        (estimator.dropout > 0, f"dropout={estimator.dropout}"),
        (estimator.augment is not None, "augment"),
        (estimator.clip_grad_norm is not None, "clip_grad_norm"),
        (estimator.compute_dtype == "bfloat16", "compute_dtype='bfloat16'"),
    ] if bad]
    model = unsupported_model(network)
    if found:
        return ((model + "; " if model else "") + "the device-resident fit has no "
                + ", ".join(found))
    return model


def _grid(n):
    return max(1, -(-n // _THREADS)), _THREADS


@cuda.jit
def _gather_batch(X, lengths, targets, weights, order, start, xb, len_b, tgt_b, w_b):
    """Rows ``order[start:start + B]`` of the training set, time-major ``xb (T_b, B, F)``
    (steps past ``T_b`` are padding and are not read)."""
    T_b, B, F = xb.shape
    i = cuda.grid(1)
    if i < T_b * B * F:
        t = i // (B * F)
        rem = i - t * B * F
        r = rem // F
        f = rem - r * F
        n = order[start + r]
        xb[t, r, f] = X[n, t, f]
        if t == 0 and f == 0:
            len_b[r] = lengths[n]
            tgt_b[r] = targets[n]
            w_b[r] = weights[n]


@cuda.jit
def _softmax_loss(logits, targets, weights, wsum, smoothing, d_logits, per_row):
    """Row ``r``: the weighted cross-entropy of the softmax against the smoothed one-hot
    target (in float64, as the host's ``_loss``), ``w_r * loss_r`` into ``per_row`` and
    ``(p - q) w_r / wsum`` into ``d_logits``."""
    r = cuda.grid(1)
    B, K = logits.shape
    if r < B:
        top = float(logits[r, 0])
        for k in range(1, K):
            top = max(top, float(logits[r, k]))
        total = 0.0
        for k in range(K):
            total += math.exp(float(logits[r, k]) - top)
        loss = 0.0
        scale = weights[r] / wsum
        for k in range(K):
            p = math.exp(float(logits[r, k]) - top) / total
            log_p = math.log(max(p, 1e-300))
            q = smoothing / K
            if k == targets[r]:
                q += 1.0 - smoothing
            loss -= q * log_p
            d_logits[r, k] = (p - q) * scale
        per_row[r] = weights[r] * loss


@cuda.jit
def _add_l2(param, grad, coef):
    i = cuda.grid(1)
    if i < param.shape[0]:
        grad[i] = grad[i] + coef * param[i]


@cuda.jit
def _sum_squares(a, out):
    """``out[0] += sum a^2`` by one block: strided partial sums, then a fixed tree."""
    partial = cuda.shared.array(_THREADS, np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(tid, a.shape[0], _THREADS):
        acc += float(a[i]) * float(a[i])
    partial[tid] = acc
    cuda.syncthreads()
    step = _THREADS // 2
    while step > 0:
        if tid < step:
            partial[tid] += partial[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        out[0] += partial[0]


@cuda.jit
def _add_batch_loss(per_row, squares, l2_coef, total):
    """``total[0] += sum per_row + l2_coef * squares[0]`` (one thread, rows in order)."""
    if cuda.grid(1) == 0:
        acc = 0.0
        for r in range(per_row.shape[0]):
            acc += per_row[r]
        total[0] += acc + l2_coef * squares[0]
        squares[0] = 0.0


def _forward(P, cell, xb, len_b, ws, training):
    """The model on a gathered batch ``xb (T_b, B, F)``: the input projection (where the
    network has one), the recurrent layer and the readout's logits ``(B, K)``; returns the
    layer's input, the layer's :class:`.cuda_layer.LSTMForward` and the logits."""
    T_b, B, F = xb.shape
    dt = xb.dtype
    layer_in = xb
    if "input/kernel" in P.shapes:
        width = P["input/kernel"].shape[1]
        layer_in = ws.get("projected", (T_b, B, width), dt)
        matmul(xb.reshape(T_b * B, F), P["input/kernel"], layer_in.reshape(T_b * B, width),
               bias=P["input/bias"])
    zeros = ws.zeros("zero_state", (B, cell.num_units), dt)
    weights = (P["layer0/fw/kernel"], P["layer0/fw/recurrent_kernel"], P["layer0/fw/bias"])
    if cell.kind == "lstm":
        fwd = cuda_layer.lstm_forward(layer_in, len_b, zeros, zeros, *weights,
                                      _peepholes(P, cell), cell.forget_bias,
                                      cell.cell_clip or 0.0, training=training, workspace=ws)
    elif cell.kind == "gru":
        fwd = cuda_layer.gru_forward(layer_in, len_b, zeros, *weights,
                                     P["layer0/fw/recurrent_bias"], training=training,
                                     workspace=ws)
    else:
        fwd = cuda_layer.rnn_forward(layer_in, len_b, zeros, *weights, training=training,
                                     workspace=ws)
    logits = ws.get("logits", (B, P["output/kernel"].shape[1]), dt)
    matmul(fwd.h, P["output/kernel"], logits, bias=P["output/bias"])
    return layer_in, fwd, logits


def _peepholes(packed, cell):
    """The three peephole vectors of ``packed`` as one (3, H) view (packed last, in
    order: :func:`_packing_order`), or None without peepholes."""
    if cell.kind != "lstm" or not cell.use_peepholes:
        return None
    start = packed.offset("layer0/fw/w_i_diag")
    return packed.flat[start:start + 3 * cell.num_units].reshape(3, cell.num_units)


def _packing_order(network):
    """The parameter names with the peepholes last, so that they form one (3, H) view."""
    names = [n for n in network.params if not n.endswith(_PEEPHOLES)]
    return names + [n for n in network.params if n.endswith(_PEEPHOLES)]


def outputs(network, seq, idx, batch_size, features=False):
    """The logits (or, with ``features``, the final hidden states) of the sequences
    ``idx`` of ``seq``, computed on the device in batches of ``batch_size``: one upload
    of the parameters and of the rows, one download of the result.

    Returns
    -------
    ndarray (len(idx), n_outputs or hidden_size)
    """
    cell = network.cells[0]["fw"]
    dt = network.dtype
    P = cuda_optim.DeviceParams.from_host({n: network.params[n]
                                           for n in _packing_order(network)})
    X = cuda.to_device(np.ascontiguousarray(seq.values[idx], dtype=dt))
    host_lengths = np.asarray(seq.lengths[idx], np.int64)
    lengths = cuda.to_device(host_lengths)
    n = len(idx)
    order = cuda.to_device(np.arange(n, dtype=np.int64))
    width = cell.num_units if features else network.params["output/kernel"].shape[1]
    result = cuda.device_array((n, width), dt)
    ws = cuda_backend.Workspace()
    unused = cuda.device_array(n, np.int64), cuda.device_array(n, np.float64)
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        T_b = int(host_lengths[start:start + B].max())
        xb = ws.get("xb", (T_b, B, X.shape[2]), dt)
        len_b = ws.get("len_b", (B,), np.int64)
        _gather_batch[_grid(T_b * B * X.shape[2])](
            X, lengths, unused[0], unused[1], order, start, xb, len_b,
            ws.get("tgt_b", (B,), np.int64), ws.get("w_b", (B,), np.float64))
        _, fwd, logits = _forward(P, cell, xb, len_b, ws, training=False)
        result[start:start + B].copy_to_device(fwd.h if features else logits)
    return result.copy_to_host()


class DeviceTrainer:
    """Epochs of an estimator's fit on the device (see the module docstring).

    Parameters
    ----------
    estimator : LSTMClassifier
    network : fastlstm.network.SequenceNetwork
    optimizer : fastlstm.optimizers.Adam or SGD
        Its state (a warm start's) is uploaded; :meth:`download` writes it back.
    seq : Sequences
        The training set (uploaded once).
    targets : ndarray of int, shape (n_samples,)
    weights : ndarray of float64, shape (n_samples,)
    """

    def __init__(self, estimator, network, optimizer, seq, targets, weights):
        self.estimator = estimator
        self.network = network
        self.dtype = network.dtype
        self.X = cuda.to_device(np.ascontiguousarray(seq.values, dtype=self.dtype))
        self.lengths = cuda.to_device(np.asarray(seq.lengths, np.int64))
        self.host_lengths = np.asarray(seq.lengths, np.int64)
        self.targets = cuda.to_device(np.asarray(targets, np.int64))
        self.host_weights = np.asarray(weights, np.float64)
        self.weights = cuda.to_device(self.host_weights)
        self.params = cuda_optim.DeviceParams.from_host(
            {n: network.params[n] for n in _packing_order(network)})
        self.grads = self.params.zeros_like()
        self.optimizer = self._device_optimizer(optimizer)
        self.workspace = cuda_backend.Workspace()
        self.total = cuda.device_array(1, np.float64)
        self.squares = cuda.to_device(np.zeros(1, np.float64))
        self.cell = network.cells[0]["fw"]

    def _device_optimizer(self, optimizer):
        from ..optimizers import Adam
        if isinstance(optimizer, Adam):
            dev = cuda_optim.DeviceAdam(optimizer.learning_rate, optimizer.beta_1,
                                        optimizer.beta_2, optimizer.epsilon)
            dev.t = optimizer.t
            if optimizer.m:
                dev.m = self._packed(optimizer.m)
                dev.v = self._packed(optimizer.v)
            return dev
        dev = cuda_optim.DeviceSGD(optimizer.learning_rate, optimizer.momentum)
        if optimizer.velocity:
            dev.velocity = self._packed(optimizer.velocity)
        return dev

    def _packed(self, state):
        return cuda_optim.DeviceParams.from_host(
            {n: state.get(n, np.zeros(s, self.dtype)) for n, s in self.params.shapes.items()})

    def epoch(self, idx, rng, learning_rate):
        """One epoch over the rows ``idx``, shuffled from ``rng`` as the host loop does;
        returns the mean training loss (what ``_epoch`` returns)."""
        est = self.estimator
        if est.shuffle:
            idx = idx[rng.permutation(len(idx))]
        order = cuda.to_device(np.ascontiguousarray(idx, np.int64))
        self.optimizer.learning_rate = learning_rate
        self.total.copy_to_device(np.zeros(1, np.float64))
        seen = 0.0
        for start in range(0, len(idx), est.batch_size):
            rows = idx[start:start + est.batch_size]
            wsum = float(self.host_weights[rows].sum())
            self._step(order, start, len(rows), int(self.host_lengths[rows].max()), wsum)
            seen += wsum
        loss = float(self.total.copy_to_host()[0]) / seen
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss}: lower learning_rate (now "
                f"{est.learning_rate}) or set clip_grad_norm")
        return loss

    def _step(self, order, start, B, T_b, wsum):
        est, ws, net, dt = self.estimator, self.workspace, self.network, self.dtype
        P, G = self.params, self.grads
        F = self.X.shape[2]
        H = self.cell.num_units
        xb = ws.get("xb", (T_b, B, F), dt)
        len_b = ws.get("len_b", (B,), np.int64)
        tgt_b = ws.get("tgt_b", (B,), np.int64)
        w_b = ws.get("w_b", (B,), np.float64)
        _gather_batch[_grid(T_b * B * F)](self.X, self.lengths, self.targets, self.weights,
                                          order, start, xb, len_b, tgt_b, w_b)
        projected = "input/kernel" in net.params
        layer_in, fwd, logits = _forward(P, self.cell, xb, len_b, ws, training=True)
        K = logits.shape[1]
        d_logits = ws.get("d_logits", (B, K), dt)
        per_row = ws.get("per_row", (B,), np.float64)
        _softmax_loss[_grid(B)](logits, tgt_b, w_b, wsum, float(est.label_smoothing),
                                d_logits, per_row)
        matmul(fwd.h, d_logits, G["output/kernel"], trans_a=True)
        column_sums(d_logits, G["output/bias"])
        d_features = ws.get("d_features", (B, H), dt)
        matmul(d_logits, P["output/kernel"], d_features, trans_b=True)
        kind = self.cell.kind
        out = {name: G[f"layer0/fw/{name}"] for name in ("kernel", "recurrent_kernel", "bias")}
        if kind == "lstm":
            out["peepholes"] = _peepholes(G, self.cell)
        if kind == "gru":
            out["recurrent_bias"] = G["layer0/fw/recurrent_bias"]
        backward = {"lstm": cuda_layer.lstm_backward, "gru": cuda_layer.gru_backward,
                    "rnn": cuda_layer.rnn_backward}[kind]
        grads = backward(fwd, P["layer0/fw/kernel"], P["layer0/fw/recurrent_kernel"], None,
                         d_h=d_features, input_gradient=projected, out=out, workspace=ws)
        if projected:
            d_in = grads["inputs"].reshape(T_b * B, -1)
            matmul(xb.reshape(T_b * B, F), d_in, G["input/kernel"], trans_a=True)
            column_sums(d_in, G["input/bias"])
        l2_coef = 0.0
        if est.alpha:
            for name in net.weight_names():
                p_flat, g_flat = P[name].reshape(P[name].size), G[name].reshape(G[name].size)
                _add_l2[_grid(p_flat.size)](p_flat, g_flat, dt.type(est.alpha / B))
                _sum_squares[1, _THREADS](p_flat, self.squares)
            l2_coef = wsum * 0.5 * est.alpha / B
        _add_batch_loss[1, 1](per_row, self.squares, l2_coef, self.total)
        self.optimizer.step(P, G)

    def download(self, network, optimizer):
        """The device's parameters into ``network`` and its optimizer state into
        ``optimizer`` (host objects, in place): one download each."""
        network.set_params(self.params.to_host())
        dev = self.optimizer
        if hasattr(dev, "t"):
            optimizer.t = dev.t
            if dev.m is not None:
                optimizer.m, optimizer.v = dev.m.to_host(), dev.v.to_host()
        elif dev.velocity is not None:
            optimizer.velocity = dev.velocity.to_host()
