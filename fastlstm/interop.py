"""Weights from and to PyTorch, Keras and TensorFlow 1.x layouts.

fastlstm stores TF1's gate order (i, j, f, o) with one bias for the LSTM and (r, u, c) for
the GRU (see :mod:`fastlstm._layout`, whose registry holds each peer's gate order); the
peers differ only in gate order, transposition and the number of biases, so every
conversion is a permutation of values (exact) except PyTorch's two LSTM / RNN biases,
which fastlstm adds into one (the GRU keeps both: ``reset_after``'s ``recurrent_bias``).
torch is imported only inside the torch functions.
"""

import numpy as np

from . import _layout
from .cells import BasicRNNCell, GRUCell, LSTMCell


def _matrix(value, name, ndim):
    arr = np.asarray(value)
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a {ndim}-D float array, got shape {arr.shape} "
                         f"and dtype {arr.dtype}")
    return arr


def _kind_from_widths(width, num_units, source):
    n_gates = width // num_units if num_units else 0
    kinds = {kind.n_gates: name for name, kind in _layout.KINDS.items()}
    if num_units == 0 or width % num_units or n_gates not in kinds:
        raise ValueError(f"{source}: weights of width {width} for {num_units} units are "
                         f"neither an RNN (1 gate), a GRU (3 gates) nor an LSTM (4 gates)")
    return kinds[n_gates]


def _permuted(params, kind, peer):
    """``params``' gate blocks from ``peer``'s order (``"torch"``, ``"keras"``) to ours."""
    spec = _layout.KINDS[kind]
    return {k: _layout.permute_gates(v, spec.peer_gates[peer], spec.gates)
            for k, v in params.items()}


def _to_peer(arrays, kind, peer):
    """Our gate order to ``peer``'s, for each array of ``arrays``."""
    spec = _layout.KINDS[kind]
    return [_layout.permute_gates(v, spec.gates, spec.peer_gates[peer]) for v in arrays]


def _make_cell(kind, params, dtype, *, use_peepholes=False, cell_clip=None, forget_bias=0.0):
    input_size, width = params["kernel"].shape
    num_units = params["recurrent_kernel"].shape[0]
    dtype = np.result_type(params["kernel"]) if dtype is None else dtype
    if kind == "rnn":
        cell = BasicRNNCell(num_units, input_size, dtype=dtype, random_state=0)
    elif kind == "gru":
        cell = GRUCell(num_units, input_size, reset_after="recurrent_bias" in params,
                       dtype=dtype, random_state=0)
    else:
        cell = LSTMCell(num_units, input_size, use_peepholes=use_peepholes,
                        cell_clip=cell_clip, forget_bias=forget_bias, dtype=dtype,
                        random_state=0)
    return cell.load_params(params)


# ----------------------------------------------------------------------------- PyTorch
def from_torch(module_or_state_dict, layer=0, dtype=None, direction=None):
    """A cell holding one direction of layer ``layer`` of a ``torch.nn.LSTM``,
    ``torch.nn.GRU`` or ``torch.nn.RNN`` (tanh).

    Parameters
    ----------
    module_or_state_dict : torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN or its ``state_dict()``
    layer : int, default 0
        Which stacked layer.
    dtype : numpy dtype, optional
        Default: the dtype of the torch weights.
    direction : {"forward", "backward"}, optional
        Which direction of a bidirectional module (required for one: a fastlstm cell
        holds one direction, and neither is dropped silently); a unidirectional module
        has only "forward".

    Returns
    -------
    LSTMCell (``forget_bias=0``: torch has none; its two biases are added into one),
    GRUCell (``reset_after=True``; ``bias_hh`` is its ``recurrent_bias``) or BasicRNNCell.
    """
    state = module_or_state_dict
    if hasattr(state, "state_dict"):
        if getattr(state, "proj_size", 0):
            raise ValueError("LSTMs with proj_size > 0 have no fastlstm equivalent")
        if getattr(state, "nonlinearity", "tanh") != "tanh":
            raise ValueError("only tanh RNNs have a fastlstm equivalent (BasicRNNCell)")
        state = state.state_dict()
    key = f"weight_ih_l{layer}"
    if key not in state:
        raise ValueError(f"no layer {layer} in the torch weights (missing {key!r})")
    bidirectional = f"{key}_reverse" in state
    if direction not in (None, "forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if bidirectional and direction is None:
        raise ValueError("the torch module is bidirectional: pass direction='forward' or "
                         "direction='backward' (a fastlstm cell holds one direction; build "
                         "a bidirectional layer from both)")
    if not bidirectional and direction == "backward":
        raise ValueError("the torch module is not bidirectional: it has no 'backward' "
                         "direction")
    suffix = f"l{layer}_reverse" if direction == "backward" else f"l{layer}"

    def arr(name):
        return state[name].detach().cpu().numpy()

    w_ih, w_hh = arr(f"weight_ih_{suffix}"), arr(f"weight_hh_{suffix}")
    num_units = w_hh.shape[1]
    kind = _kind_from_widths(w_ih.shape[0], num_units, "from_torch")
    b_ih = b_hh = np.zeros(w_ih.shape[0], w_ih.dtype)
    if f"bias_ih_{suffix}" in state:
        b_ih, b_hh = arr(f"bias_ih_{suffix}"), arr(f"bias_hh_{suffix}")
    if kind == "gru":          # b_hn acts inside r * (...): the two biases stay apart
        params = {"kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": b_ih,
                  "recurrent_bias": b_hh}
    else:
        params = {"kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": b_ih + b_hh}
    return _make_cell(kind, _permuted(params, kind, "torch"), dtype)


def to_torch(cell, batch_first=None):
    """A ``torch.nn.LSTM`` / ``torch.nn.GRU`` / ``torch.nn.RNN`` (one layer) computing
    ``cell``.

    Parameters
    ----------
    cell : BasicRNNCell, BasicLSTMCell, LSTMCell without peepholes or clipping, or
        GRUCell with ``reset_after=True`` (torch's GRU form)
    batch_first : bool
        The module's input layout: True for (batch, steps, features), as fastlstm's
        ``dynamic_rnn`` takes by default; False for time-major (steps, batch, features),
        torch's default. Say which: batch-major input to a time-major module runs without
        an error and gives wrong results. Omitted, it is False, with a FutureWarning.

    The whole bias, with ``forget_bias`` folded into the forget gate's entries, goes into
    ``bias_ih_l0``; ``bias_hh_l0`` is zero. Peephole and clipped cells have no torch
    equivalent and are refused. The whole estimator network converts with
    :func:`fastlstm.export.to_torch`.
    """
    import torch

    if batch_first is None:
        import warnings
        warnings.warn("interop.to_torch(cell) without batch_first returns a time-major "
                      "module (input (steps, batch, features)); pass batch_first=True for "
                      "batch-major input or batch_first=False to keep this, and silence "
                      "this warning", FutureWarning, stacklevel=2)
        batch_first = False
    if cell.kind == "lstm" and (cell.use_peepholes or cell.cell_clip is not None):
        raise ValueError("torch.nn.LSTM has no peepholes or cell clipping: "
                         "only cells without them convert to torch")
    if cell.kind == "gru" and not cell.reset_after:
        raise ValueError("torch.nn.GRU applies the reset gate after the recurrent product: "
                         "only GRUCell(reset_after=True) converts to torch")
    p = cell.params
    bias = p["bias"].copy()
    recurrent_bias = np.zeros_like(bias)
    if cell.kind == "lstm":
        bias[_layout.gate_slice("f", cell.num_units)] += cell.forget_bias
        kernel, recurrent, bias = _to_peer((p["kernel"], p["recurrent_kernel"], bias),
                                           "lstm", "torch")
        module = torch.nn.LSTM(cell.input_size, cell.num_units, batch_first=batch_first)
    elif cell.kind == "gru":
        kernel, recurrent, bias, recurrent_bias = _to_peer(
            (p["kernel"], p["recurrent_kernel"], bias, p["recurrent_bias"]), "gru", "torch")
        module = torch.nn.GRU(cell.input_size, cell.num_units, batch_first=batch_first)
    else:
        kernel, recurrent = p["kernel"], p["recurrent_kernel"]
        module = torch.nn.RNN(cell.input_size, cell.num_units, nonlinearity="tanh",
                              batch_first=batch_first)
    module = module.to(torch.float64 if cell.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
        module.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(recurrent.T)))
        module.bias_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
        module.bias_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(recurrent_bias)))
    return module


# ------------------------------------------------------------------------------- Keras
def from_keras(weights, dtype=None):
    """A cell from a Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` layer's ``get_weights()``.

    Parameters
    ----------
    weights : sequence of 3 arrays
        ``[kernel (I, G*H), recurrent_kernel (H, G*H), bias]``, Keras gate order
        (i, f, c, o) for the LSTM, (z, r, h) for the GRU. ``bias`` is (G*H,), or (2, 3H)
        for a ``GRU(reset_after=True)`` (input bias, recurrent bias).
    dtype : numpy dtype, optional

    Returns
    -------
    LSTMCell (``forget_bias=0``: Keras folds it into the bias at init), GRUCell
    (``reset_after`` as the bias's shape says) or BasicRNNCell.
    """
    if len(weights) != 3:
        raise ValueError("weights must be [kernel, recurrent_kernel, bias] "
                         f"(a layer with use_bias=True), got {len(weights)} arrays")
    kernel = _matrix(weights[0], "kernel", 2)
    recurrent = _matrix(weights[1], "recurrent_kernel", 2)
    kind = _kind_from_widths(kernel.shape[1], recurrent.shape[0], "from_keras")
    two_biases = kind == "gru" and np.ndim(weights[2]) == 2
    bias = _matrix(weights[2], "bias", 2 if two_biases else 1)
    params = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
    if two_biases:
        if bias.shape[0] != 2:
            raise ValueError(f"a reset_after GRU's bias must have shape (2, 3H), got "
                             f"{bias.shape}")
        params["bias"], params["recurrent_bias"] = bias[0], bias[1]
    return _make_cell(kind, _permuted(params, kind, "keras"), dtype)


def to_keras(cell):
    """``[kernel, recurrent_kernel, bias]`` for a Keras ``LSTM`` / ``GRU`` / ``SimpleRNN``
    layer.

    ``forget_bias`` is folded into the forget gate's bias (Keras adds none at run time);
    peephole and clipped cells are refused. A ``GRUCell(reset_after=True)``'s bias is
    (2, 3H), input bias then recurrent bias, as Keras's ``GRU(reset_after=True)``.
    """
    if cell.kind == "lstm" and (cell.use_peepholes or cell.cell_clip is not None):
        raise ValueError("Keras's LSTM has no peepholes or cell clipping: "
                         "only cells without them convert to Keras")
    p = cell.params
    if cell.kind == "rnn":
        return [p["kernel"].copy(), p["recurrent_kernel"].copy(), p["bias"].copy()]
    if cell.kind == "gru":
        biases = [p["bias"]] + ([p["recurrent_bias"]] if cell.reset_after else [])
        out = _to_peer([p["kernel"], p["recurrent_kernel"]] + biases, "gru", "keras")
        return out[:2] + [np.stack(out[2:]) if cell.reset_after else out[2]]
    bias = p["bias"].copy()
    bias[_layout.gate_slice("f", cell.num_units)] += cell.forget_bias
    return [_layout.permute_gates(v, _layout.LSTM_GATES, _layout.KERAS_LSTM_GATES)
            for v in (p["kernel"], p["recurrent_kernel"], bias)]


# ------------------------------------------------------------------------- TensorFlow 1
def from_tf1(kernel, bias, *, cell="lstm", w_i_diag=None, w_f_diag=None, w_o_diag=None,
             forget_bias=1.0, cell_clip=None, candidate_kernel=None, candidate_bias=None,
             dtype=None):
    """A cell from TensorFlow 1.x's variables (``BasicLSTMCell``, ``LSTMCell``,
    ``GRUCell``, ``BasicRNNCell``).

    Parameters
    ----------
    kernel : ndarray, shape (input_size + num_units, G*H)
        TF1's kernel over ``[x; h]``, gate order (i, j, f, o) for the LSTM; for the GRU its
        ``gates/kernel`` (input_size + num_units, 2H), gate order (r, u).
    bias : ndarray, shape (G*H,)
        For the GRU its ``gates/bias`` (2H,).
    cell : {"lstm", "gru", "rnn"}
    w_i_diag, w_f_diag, w_o_diag : ndarray (H,), optional
        Peephole weights; give all three or none.
    forget_bias, cell_clip : as in :class:`LSTMCell` (LSTM only).
    candidate_kernel, candidate_bias : ndarray, shapes (input_size + num_units, H) and (H,)
        The GRU's ``candidate/kernel`` and ``candidate/bias`` (GRU only, required).
    dtype : numpy dtype, optional
        Default: the kernel's dtype.
    """
    if cell not in _layout.KINDS:
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
    kernel = _matrix(kernel, "kernel", 2)
    bias = _matrix(bias, "bias", 1)
    if cell == "gru":
        if candidate_kernel is None or candidate_bias is None:
            raise ValueError("a GRU needs candidate_kernel and candidate_bias "
                             "(TF1's candidate/kernel and candidate/bias)")
        cand_kernel = _matrix(candidate_kernel, "candidate_kernel", 2)
        cand_bias = _matrix(candidate_bias, "candidate_bias", 1)
        if cand_kernel.shape[0] != kernel.shape[0] or 2 * cand_kernel.shape[1] != \
                kernel.shape[1]:
            raise ValueError(f"gates kernel {kernel.shape} and candidate kernel "
                             f"{cand_kernel.shape} do not belong to one GRU ((I + H, 2H) "
                             f"and (I + H, H))")
        kernel = np.concatenate([kernel, cand_kernel], axis=1)
        bias = np.concatenate([bias, cand_bias])
    elif candidate_kernel is not None or candidate_bias is not None:
        raise ValueError("candidate_kernel and candidate_bias belong to a GRU (cell='gru')")
    n_gates = _layout.N_GATES[cell]
    if kernel.shape[1] % n_gates:
        raise ValueError(f"kernel width {kernel.shape[1]} does not split into {n_gates} gates")
    num_units = kernel.shape[1] // n_gates
    input_size = kernel.shape[0] - num_units
    if input_size < 1:
        raise ValueError(f"kernel of shape {kernel.shape} has no input rows for "
                         f"{num_units} units")
    params = {"kernel": kernel[:input_size], "recurrent_kernel": kernel[input_size:],
              "bias": bias}
    diags = (w_i_diag, w_f_diag, w_o_diag)
    given = [d is not None for d in diags]
    if any(given) and not all(given):
        raise ValueError("give all three peephole weights (w_i_diag, w_f_diag, w_o_diag) "
                         "or none")
    if cell != "lstm":
        if any(given) or cell_clip is not None:
            raise ValueError(f"a {cell.upper()} cell has no peepholes or cell_clip")
        return _make_cell(cell, params, dtype)
    for name, d in zip(_layout.PEEPHOLE_NAMES, diags):
        if d is not None:
            params[name] = _matrix(d, name, 1)
    return _make_cell("lstm", params, dtype, use_peepholes=all(given), cell_clip=cell_clip,
                      forget_bias=forget_bias)


def to_tf1(cell):
    """TensorFlow 1.x's variables of ``cell``.

    Returns
    -------
    dict
        ``"kernel"`` (input_size + num_units, G*H) over ``[x; h]``, ``"bias"`` (G*H,)
        and, for peephole cells, ``"w_i_diag"``, ``"w_f_diag"``, ``"w_o_diag"``.
        ``forget_bias`` and ``cell_clip`` stay attributes of the cell (TF1 keeps them in
        the cell's constructor too). For a GRU, TF1's ``"gates/kernel"`` (I + H, 2H),
        ``"gates/bias"``, ``"candidate/kernel"`` (I + H, H) and ``"candidate/bias"``;
        ``reset_after`` cells have no TF1 equivalent and are refused.
    """
    p = cell.params
    kernel = np.concatenate([p["kernel"], p["recurrent_kernel"]], axis=0)
    if cell.kind == "gru":
        if cell.reset_after:
            raise ValueError("TF1's GRUCell applies the reset gate before the recurrent "
                             "product: only GRUCell(reset_after=False) converts to TF1")
        H = cell.num_units
        return {"gates/kernel": kernel[:, :2 * H].copy(),
                "gates/bias": p["bias"][:2 * H].copy(),
                "candidate/kernel": kernel[:, 2 * H:].copy(),
                "candidate/bias": p["bias"][2 * H:].copy()}
    out = {"kernel": kernel, "bias": p["bias"].copy()}
    for name in _layout.PEEPHOLE_NAMES:
        if name in p:
            out[name] = p[name].copy()
    return out
