"""Fitted models out of fastlstm: an ONNX graph for onnxruntime, a torch module.

:func:`to_onnx` writes the whole model (a :class:`~fastlstm.LSTMClassifier`,
:class:`~fastlstm.LSTMRegressor` or :class:`~fastlstm.SequenceScaler`, or a Pipeline of
them followed by scikit-learn steps that skl2onnx converts) with standard operators:

* inputs ``X`` (batch, steps, features) in the estimator's ``layout`` (``"nft"``:
  (batch, features, steps)), float32 (float64 for a float64 model), with dynamic batch
  and steps, and ``sequence_lens`` int32 (batch,): the valid steps of each sequence;
* the recurrent layers as ONNX's ``LSTM`` (gate order ``iofc``, ``forget_bias`` folded
  into the bias, peepholes in ``P``), ``GRU`` (``linear_before_reset=1``, the form of the
  estimators' ``GRUCell(reset_after=True)``) and ``RNN`` operators, both directions at
  once for a bidirectional layer. ONNX's ``clip`` bounds the gate inputs, not the cell state that
  TensorFlow 1.x's ``cell_clip`` bounds, so a clipped cell is written out step by step
  (a ``Scan`` over time), its backward direction reversed within each sequence's length
  (``ReverseSequence``) as fastlstm reads it;
* outputs named as skl2onnx names them: ``label`` and ``probabilities`` for a
  classifier, ``variable`` for a regressor or a transformer.

Importing this module registers the converters with skl2onnx (where it is installed), so
``skl2onnx.to_onnx(model, X)`` converts fastlstm estimators too (one input ``X``, every
sequence of full length).

:func:`to_torch` returns the same computation as a ``torch.nn.Module``.
"""

import numpy as np

from . import _layout

#: Gate order of ONNX's LSTM operator (input, output, forget, cell), in fastlstm's names.
ONNX_LSTM_GATES = ("i", "o", "f", "j")
#: ONNX's GRU gate order (z, r, h), in fastlstm's names.
ONNX_GRU_GATES = ("u", "r", "c")
#: Default opset: the first with every operator used here in its current form.
DEFAULT_OPSET = 17
#: Largest model one ONNX file holds (protobuf's limit); larger ones need external data.
MAX_MODEL_BYTES = 2 ** 31 - 1


def _steps(model):
    """The fastlstm steps of ``model`` (a fitted estimator or a Pipeline) and the
    scikit-learn steps after them."""
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    from .estimators import LSTMClassifier, LSTMRegressor, SequenceScaler

    ours = (LSTMClassifier, LSTMRegressor, SequenceScaler)
    steps = [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]
    steps = [s for s in steps if s not in (None, "passthrough")]
    k = 0
    while k < len(steps) and isinstance(steps[k], ours):
        k += 1
    if k == 0:
        raise ValueError(f"to_onnx exports fastlstm models (LSTMClassifier, LSTMRegressor, "
                         f"SequenceScaler) or Pipelines that start with them, got "
                         f"{type(model).__name__}")
    for step in steps[:k]:
        check_is_fitted(step)
    for step in steps[:k - 1]:
        if not isinstance(step, SequenceScaler):
            raise ValueError(f"{type(step).__name__} in the middle of a Pipeline of "
                             f"sequences: only SequenceScaler steps may come before the "
                             f"last fastlstm step")
    layouts = {s.layout for s in steps[:k]}
    if len(layouts) > 1:
        raise ValueError(f"the fastlstm steps disagree on layout: {sorted(layouts)}")
    for step in steps[:k]:
        if step.n_steps is not None and getattr(step, "_fit_kind_", "3d") == "2d":
            raise ValueError("models fitted on 2-D X (n_steps) export with 3-D input "
                             "(batch, steps, features): refit on 3-D X")
    return steps[:k], steps[k:]


# ------------------------------------------------------------------------------ ONNX
class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with fresh names."""

    def __init__(self, dtype, opset=DEFAULT_OPSET, prefix="", container=None):
        from onnx import TensorProto, helper, numpy_helper

        self.opset, self.prefix, self.container = opset, prefix, container
        self.memo = {}             # tensors built once per graph (the length mask)
        self.helper, self.numpy_helper = helper, numpy_helper
        self.dtype = np.dtype(dtype)
        self.elem = TensorProto.FLOAT if self.dtype == np.float32 else TensorProto.DOUBLE
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def const(self, value, hint="c", dtype=None):
        arr = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.name(hint)
        # (np.ascontiguousarray would make a scalar 1-D)
        tensor = self.numpy_helper.from_array(arr.copy(order="C"), name)
        (self.container.initializers if self.container is not None
         else self.initializers).append(tensor)
        return name

    def op(self, op_type, inputs, n_out=1, hint=None, **attrs):
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        if self.container is not None:         # skl2onnx: it records each operator's opset
            self.container.add_node(op_type, list(inputs), outs, op_domain="",
                                    name=self.name("node"), **attrs)
        else:
            self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _lengths64(g, lens):
    """``lens`` as int64 (ReverseSequence and the comparisons need it), cast once."""
    from onnx import TensorProto

    key = ("lengths64", lens)
    if key not in g.memo:
        g.memo[key] = g.op("Cast", [lens], to=TensorProto.INT64)
    return g.memo[key]


def _valid_mask(g, lens, T_of):
    """(T, N, 1) bool: step t exists for sequence n (``T_of``: a time-major tensor; every
    one in a graph has the same T, so the mask is built once)."""
    key = ("mask", lens)
    if key not in g.memo:
        g.memo[key] = _build_valid_mask(g, lens, T_of)
    return g.memo[key]


def _build_valid_mask(g, lens, T_of):
    shape = g.op("Shape", [T_of])
    T = g.op("Gather", [shape, g.const(0, dtype=np.int64)], axis=0)
    steps = g.op("Range", [g.const(0, dtype=np.int64), T, g.const(1, dtype=np.int64)])
    lens64 = _lengths64(g, lens)
    mask = g.op("Less", [g.op("Unsqueeze", [steps, g.const([1], dtype=np.int64)]),
                         g.op("Unsqueeze", [lens64, g.const([0], dtype=np.int64)])])
    return g.op("Unsqueeze", [mask, g.const([2], dtype=np.int64)])


def _lstm_weights(cell):
    """ONNX's W (4H, I), R (4H, H), B (8H,) and P (3H,) of a fastlstm LSTM cell."""
    p, H = cell.params, cell.num_units
    bias = p["bias"].copy()
    bias[_layout.gate_slice("f", H)] += cell.forget_bias
    W, R, b = (_layout.permute_gates(v, _layout.LSTM_GATES, ONNX_LSTM_GATES)
               for v in (p["kernel"], p["recurrent_kernel"], bias))
    P = (np.concatenate([p["w_i_diag"], p["w_o_diag"], p["w_f_diag"]])
         if cell.use_peepholes else None)
    return W.T, R.T, np.concatenate([b, np.zeros_like(b)]), P


def _gru_weights(cell):
    """ONNX's W (3H, I), R (3H, H) and B (6H,) of a ``GRUCell(reset_after=True)``, whose
    form is ONNX's GRU with ``linear_before_reset=1``."""
    p = cell.params
    W, R, b, b_h = (_layout.permute_gates(v, _layout.GRU_GATES, ONNX_GRU_GATES)
                    for v in (p["kernel"], p["recurrent_kernel"], p["bias"],
                              p["recurrent_bias"]))
    return W.T, R.T, np.concatenate([b, b_h])


def _zeros_like_state(g, x, n_dirs, H):
    """Zeros (n_dirs, N, H) for time-major ``x`` (T, N, I)."""
    N = g.op("Gather", [g.op("Shape", [x]), g.const([1], dtype=np.int64)], axis=0)
    shape = g.op("Concat", [g.const([n_dirs], dtype=np.int64), N,
                            g.const([H], dtype=np.int64)], axis=0)
    return g.op("ConstantOfShape", [shape],
                value=g.numpy_helper.from_array(np.zeros(1, g.dtype)))


def _layer_ops(g, row, x, lens, kind):
    """One layer with ONNX's LSTM / GRU / RNN operator: outputs (T, N, dirs * H), final h
    (N, dirs * H)."""
    dirs = list(row.values())
    H = dirs[0].num_units
    direction = "bidirectional" if len(dirs) == 2 else "forward"
    if kind == "rnn":
        W = np.stack([c.params["kernel"].T for c in dirs])
        R = np.stack([c.params["recurrent_kernel"].T for c in dirs])
        B = np.stack([np.concatenate([c.params["bias"], np.zeros(H)]) for c in dirs])
        Y, Y_h = g.op("RNN", [x, g.const(W, "W"), g.const(R, "R"), g.const(B, "B"), lens],
                      n_out=2, hidden_size=H, direction=direction,
                      activations=["Tanh"] * len(dirs))
    elif kind == "gru":
        weights = [_gru_weights(c) for c in dirs]
        Y, Y_h = g.op("GRU", [x] + [g.const(np.stack([w[k] for w in weights]), name)
                                    for k, name in enumerate("WRB")] + [lens],
                      n_out=2, hidden_size=H, direction=direction, linear_before_reset=1)
    else:
        weights = [_lstm_weights(c) for c in dirs]
        inputs = [x, g.const(np.stack([w[0] for w in weights]), "W"),
                  g.const(np.stack([w[1] for w in weights]), "R"),
                  g.const(np.stack([w[2] for w in weights]), "B"), lens]
        if weights[0][3] is not None:
            # P is the 8th input: initial_h and initial_c given as zeros, not left empty
            # (skl2onnx's graph sorting cannot take an empty input name)
            zeros = _zeros_like_state(g, x, len(dirs), H)
            inputs += [zeros, zeros, g.const(np.stack([w[3] for w in weights]), "P")]
        Y, Y_h = g.op("LSTM", inputs, n_out=3, hidden_size=H, direction=direction)[:2]
    # Y (T, dirs, N, H) -> (T, N, dirs * H); Y_h (dirs, N, H) -> (N, dirs * H)
    Y = g.op("Transpose", [Y], perm=[0, 2, 1, 3])
    Y = g.op("Reshape", [Y, g.const([0, 0, -1], dtype=np.int64)])
    Y_h = g.op("Transpose", [Y_h], perm=[1, 0, 2])
    Y_h = g.op("Reshape", [Y_h, g.const([0, -1], dtype=np.int64)])
    return Y, Y_h


def _scan_direction(g, cell, x, lens, reverse):
    """One direction of a layer written out step by step (a ``Scan`` over time): for
    clipped LSTMs, whose clip ONNX's LSTM operator cannot express, and for float64, which
    onnxruntime's LSTM and RNN kernels do not run. Returns the outputs (T, N, H), zero
    past each sequence's end, and the final h (N, H). ``reverse``: each sequence read
    backwards within its own length, outputs put back in place."""
    from onnx import TensorProto

    h = g.helper
    H, p = cell.num_units, cell.params
    lstm, gru = cell.kind == "lstm", cell.kind == "gru"
    lens64 = _lengths64(g, lens)
    if reverse:
        x = g.op("ReverseSequence", [x, lens64], batch_axis=1, time_axis=0)
    Wx, Wh, b = g.const(p["kernel"], "Wx"), g.const(p["recurrent_kernel"], "Wh"), \
        g.const(p["bias"], "b")
    shape = g.op("Shape", [x])
    T = g.op("Gather", [shape, g.const(0, dtype=np.int64)], axis=0)
    steps = g.op("Range", [g.const(0, dtype=np.int64), T, g.const(1, dtype=np.int64)])
    N = g.op("Gather", [shape, g.const(1, dtype=np.int64)], axis=0)
    zeros_shape = g.op("Concat", [g.op("Unsqueeze", [N, g.const([0], dtype=np.int64)]),
                                  g.const([H], dtype=np.int64)], axis=0)
    zero_state = g.op("ConstantOfShape", [zeros_shape],
                      value=g.numpy_helper.from_array(np.zeros(1, g.dtype)))

    # the body: one step for all sequences, its weights read from the outer graph
    body = _Graph(g.dtype, g.opset)
    body.count = g.count + 10000
    if gru:            # reset_after: the candidate's recurrent part apart, as r scales it
        xz = body.op("Split", [body.op("Add", [body.op("MatMul", ["x_t", Wx]), b]),
                               body.const([H] * 3, dtype=np.int64)], n_out=3, axis=1)
        hz = body.op("Split", [body.op("Add", [body.op("MatMul", ["h_in", Wh]),
                                               g.const(p["recurrent_bias"], "b_h")]),
                               body.const([H] * 3, dtype=np.int64)], n_out=3, axis=1)
    else:
        z = body.op("Add", [body.op("Add", [body.op("MatMul", ["x_t", Wx]),
                                            body.op("MatMul", ["h_in", Wh])]), b])
    valid = body.op("Unsqueeze", [body.op("Less", ["t", lens64]),
                                  body.const([1], dtype=np.int64)])

    def vt(name, shape, elem=g.elem):
        return h.make_tensor_value_info(name, elem, shape)

    states_in, states_out = [vt("h_in", ["N", H])], [vt("h_out", ["N", H])]
    if lstm:
        i, j, f, o = body.op("Split", [z, body.const([H] * 4, dtype=np.int64)], n_out=4,
                             axis=1)
        if cell.use_peepholes:
            wi, wf, wo = (g.const(p[n], n) for n in _layout.PEEPHOLE_NAMES)
            i = body.op("Add", [i, body.op("Mul", ["c_in", wi])])
            f = body.op("Add", [f, body.op("Mul", ["c_in", wf])])
        i = body.op("Sigmoid", [i])
        f = body.op("Sigmoid", [body.op("Add", [f, body.const(cell.forget_bias)])])
        c_new = body.op("Add", [body.op("Mul", [f, "c_in"]),
                                body.op("Mul", [i, body.op("Tanh", [j])])])
        if cell.cell_clip is not None:
            c_new = body.op("Clip", [c_new, body.const(-cell.cell_clip),
                                     body.const(cell.cell_clip)])
        if cell.use_peepholes:
            o = body.op("Add", [o, body.op("Mul", [c_new, wo])])
        h_new = body.op("Mul", [body.op("Sigmoid", [o]), body.op("Tanh", [c_new])])
        body.nodes.append(h.make_node("Where", [valid, c_new, "c_in"], ["c_out"]))
        states_in.append(vt("c_in", ["N", H]))
        states_out.append(vt("c_out", ["N", H]))
    elif gru:
        r = body.op("Sigmoid", [body.op("Add", [xz[0], hz[0]])])
        u = body.op("Sigmoid", [body.op("Add", [xz[1], hz[1]])])
        cand = body.op("Tanh", [body.op("Add", [xz[2], body.op("Mul", [r, hz[2]])])])
        h_new = body.op("Add", [body.op("Mul", [u, "h_in"]),
                                body.op("Mul", [body.op("Sub", [body.const(1.0), u]), cand])])
    else:
        h_new = body.op("Tanh", [z])
    body.nodes += [h.make_node("Where", [valid, h_new, "h_in"], ["h_out"]),
                   h.make_node("Where", [valid, h_new, body.const(0.0)], ["y_t"])]
    graph = h.make_graph(
        body.nodes, g.name("step"),
        states_in + [vt("x_t", ["N", None]), vt("t", [], TensorProto.INT64)],
        states_out + [vt("y_t", ["N", H])], body.initializers)
    n_states = len(states_in)
    outs = g.op("Scan", [zero_state] * n_states + [x, steps], n_out=n_states + 1,
                body=graph, num_scan_inputs=2)
    h_T, Y = outs[0], outs[-1]
    if reverse:
        Y = g.op("ReverseSequence", [Y, lens64], batch_axis=1, time_axis=0)
    return Y, h_T


def _network(g, est, x, lens):
    """The estimator's network on time-major ``x`` (T, N, F): the readout features
    (N, D), what ``transform`` returns, and the outputs (N, k) of the dense layer."""
    net = est.network_
    cfg = net.config
    if "input/kernel" in net.params:
        x = g.op("Add", [g.op("MatMul", [x, g.const(net.params["input/kernel"])]),
                         g.const(net.params["input/bias"])])
    finals = None
    for row in net.cells:
        kind = row["fw"].kind
        if g.dtype == np.float64 or (kind == "lstm" and cfg["cell_clip"] is not None):
            outs, finals = [], []
            for d, cell in row.items():
                Y, h_T = _scan_direction(g, cell, x, lens, reverse=(d == "bw"))
                outs.append(Y)
                finals.append(h_T)
            x = outs[0] if len(outs) == 1 else g.op("Concat", outs, axis=2)
            finals = finals[0] if len(finals) == 1 else g.op("Concat", finals, axis=1)
        else:
            x, finals = _layer_ops(g, row, x, lens, kind)
            # zero past each end, whatever the runtime leaves there
            x = g.op("Where", [_valid_mask(g, lens, x), x, g.const(0.0)])
    if cfg["readout"] == "last":
        features = finals
    elif cfg["readout"] == "mean":
        total = g.op("ReduceSum", [x, g.const([0], dtype=np.int64)], keepdims=0)
        count = g.op("Cast", [g.op("Unsqueeze", [lens, g.const([1], dtype=np.int64)])],
                     to=g.elem)
        features = g.op("Div", [total, count])
    else:
        masked = g.op("Where", [_valid_mask(g, lens, x), x, g.const(-np.inf)])
        if g.opset >= 18:                                  # axes became an input
            features = g.op("ReduceMax", [masked, g.const([0], dtype=np.int64)],
                            keepdims=0)
        else:
            features = g.op("ReduceMax", [masked], axes=[0], keepdims=0)
    return features, g.op("Add", [g.op("MatMul", [features, g.const(
        net.params["output/kernel"])]), g.const(net.params["output/bias"])])


def _build(g, steps, X, lens, with_transform_output):
    """Nodes for the fastlstm steps; returns ``{output name: tensor}``."""
    from .estimators import LSTMClassifier, SequenceScaler

    x = X
    if steps[0].layout == "nft":
        x = g.op("Transpose", [x], perm=[0, 2, 1])
    x = g.op("Transpose", [x], perm=[1, 0, 2])                   # time-major (T, N, F)
    for step in steps:
        if isinstance(step, SequenceScaler):
            x = g.op("Div", [g.op("Sub", [x, g.const(step.mean_)]), g.const(step.scale_)])
            x = g.op("Where", [_valid_mask(g, lens, x), x, g.const(0.0)])
            continue
        features, out = _network(g, step, x, lens)
        if with_transform_output:
            return {"variable": features}
        if isinstance(step, LSTMClassifier):
            proba = g.op("Softmax", [out], axis=1)
            index = g.op("ArgMax", [out], axis=1, keepdims=0)
            classes = step.classes_
            if classes.dtype.kind in "OUS":
                table = g.const(classes.astype(str).astype(object), "classes", dtype=object)
            else:
                table = g.const(classes.astype(np.int64), "classes", dtype=np.int64)
            return {"label": g.op("Gather", [table, index], axis=0), "probabilities": proba}
        # the network predicts standardized targets
        out = g.op("Add", [g.op("Mul", [out, g.const(step.y_scale_)]),
                           g.const(step.y_mean_)])
        if getattr(step, "_y_ndim_", 2) == 1:
            out = g.op("Reshape", [out, g.const([-1, 1], dtype=np.int64)])
        return {"variable": out}
    # scaler alone: back to the input's layout
    x = g.op("Transpose", [x], perm=[1, 0, 2])
    if steps[0].layout == "nft":
        x = g.op("Transpose", [x], perm=[0, 2, 1])
    return {"variable": x}


def _float_dtype(steps):
    dtypes = {np.dtype(getattr(s, "dtype", "float32")) for s in steps
              if not hasattr(s, "mean_")}
    return dtypes.pop() if dtypes else np.dtype(np.float32)


def save_onnx(model, path, *, n_steps=None, opset=None):
    """Export ``model`` (as :func:`to_onnx`) to the file ``path``; a model over ONNX's
    2 GB limit for one file keeps its weights beside it, in ``path + ".data"`` (ONNX's
    external data, which onnxruntime reads when it opens ``path``).

    Returns
    -------
    str
        ``path``.
    """
    import os

    import onnx

    proto = _to_onnx(model, n_steps, opset, check=False)
    path = os.fspath(path)
    large = proto.ByteSize() > MAX_MODEL_BYTES
    onnx.save_model(proto, path, save_as_external_data=large, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data" if large else None,
                    size_threshold=1024)     # small tensors (shapes) stay inline
    onnx.checker.check_model(path)
    return path


def to_onnx(model, *, n_steps=None, opset=None):
    """The fitted ``model`` as an ONNX model, for onnxruntime and other ONNX runtimes.

    Parameters
    ----------
    model : LSTMClassifier, LSTMRegressor, SequenceScaler or Pipeline
        Fitted. A Pipeline: SequenceScaler steps, then one fastlstm estimator, then any
        scikit-learn steps that skl2onnx converts (they see the estimator's ``transform``
        features).
    n_steps : int, optional
        Fix the steps axis of ``X`` to this length (default: dynamic).
    opset : int, optional
        ONNX opset (default :data:`DEFAULT_OPSET`).

    Returns
    -------
    onnx.ModelProto
        Inputs ``X`` (batch, steps, features) in the model's ``layout``, float32 (float64
        for float64 models), and ``sequence_lens`` int32 (batch,), each at least 1 and at
        most the steps of ``X``. Outputs ``label`` (batch,) and ``probabilities`` (batch,
        n_classes) for a classifier; ``variable`` (batch, n_outputs) for a regressor,
        (batch, steps, features) for a SequenceScaler alone.

    Raises
    ------
    ValueError
        For a model over ONNX's 2 GB limit for one in-memory model (:func:`save_onnx`
        writes it with external data), an opset before 14, or a model that is not a
        fitted fastlstm model or Pipeline of them.
    """
    return _to_onnx(model, n_steps, opset, check=True)


def _to_onnx(model, n_steps, opset, check):
    import onnx
    from onnx import TensorProto, helper

    steps, rest = _steps(model)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < 14:
        raise ValueError(f"opset must be 14 or later (Reshape with 0 dims, Where, Scan-9, "
                         f"LSTM-14), got {opset}")
    dtype = _float_dtype(steps)
    g = _Graph(dtype, opset)
    F = steps[0].n_features_per_step_
    T = n_steps if n_steps is not None else "steps"
    x_shape = ["batch", T, F] if steps[0].layout == "ntf" else ["batch", F, T]
    outputs = _build(g, steps, "X", "sequence_lens", with_transform_output=bool(rest))
    inputs = [helper.make_tensor_value_info("X", g.elem, x_shape),
              helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"])]
    last = steps[-1]
    n_out = (last.network_.n_readout_features if rest else
             last.network_.config["n_outputs"]) if hasattr(last, "network_") else None
    shapes = {"label": ["batch"], "probabilities": ["batch", n_out],
              "variable": ["batch", n_out] if n_out else x_shape}
    out_infos = []
    for name, tensor in outputs.items():
        g.nodes.append(helper.make_node("Identity", [tensor], [name]))
        elem = g.elem
        if name == "label":
            elem = TensorProto.STRING if last.classes_.dtype.kind in "OUS" \
                else TensorProto.INT64
        out_infos.append(helper.make_tensor_value_info(name, elem, shapes[name]))
    graph = helper.make_graph(g.nodes, "fastlstm", inputs, out_infos, g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries the opset: what most runtimes load
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastlstm",
                              ir_version=helper.find_min_ir_version_for(opsets))
    if rest:
        proto = _append_sklearn(proto, rest, outputs, dtype, opset)
    if check:
        if proto.ByteSize() > MAX_MODEL_BYTES:
            raise ValueError(f"the model ({proto.ByteSize() / 2 ** 30:.1f} GB) exceeds "
                             f"ONNX's 2 GB limit for one model in memory: write it with "
                             f"fastlstm.export.save_onnx(model, path), which keeps the "
                             f"weights in an external data file")
        onnx.checker.check_model(proto)
    return proto


def _append_sklearn(proto, rest, outputs, dtype, opset):
    """The scikit-learn steps after the fastlstm ones, converted by skl2onnx on the
    readout features and joined to the graph."""
    import onnx.compose
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.pipeline import make_pipeline

    tail = rest[0] if len(rest) == 1 else make_pipeline(*rest)
    n_in = getattr(rest[0], "n_features_in_", None)
    kind = FloatTensorType if np.dtype(dtype) == np.float32 else DoubleTensorType
    tail_proto = skl_to_onnx(tail, initial_types=[("features", kind([None, n_in]))],
                             target_opset={"": opset, "ai.onnx.ml": 3},
                             options={id(tail): {"zipmap": False}} if hasattr(
                                 tail, "predict_proba") else None)
    proto.ir_version = tail_proto.ir_version = max(proto.ir_version,
                                                   tail_proto.ir_version)
    return onnx.compose.merge_models(proto, tail_proto,
                                     io_map=[("variable", "features")])


# ------------------------------------------------------------------ skl2onnx converters
def _full_lengths(g, X, layout):
    """``sequence_lens`` (N,) int32 of a batch whose sequences all have every step."""
    from onnx import TensorProto

    shape = g.op("Shape", [X])
    T = g.op("Gather", [shape, g.const([1 if layout == "ntf" else 2], dtype=np.int64)],
             axis=0)
    N = g.op("Gather", [shape, g.const([0], dtype=np.int64)], axis=0)
    return g.op("Cast", [g.op("Expand", [T, N])], to=TensorProto.INT32)


def _skl2onnx_shape(operator):
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)

    est = operator.raw_operator
    N = operator.inputs[0].get_first_dimension()
    kind = DoubleTensorType if _float_dtype([est]) == np.float64 else FloatTensorType
    if hasattr(est, "classes_"):
        label = StringTensorType if est.classes_.dtype.kind in "OUS" else Int64TensorType
        operator.outputs[0].type = label([N])
        operator.outputs[1].type = kind([N, len(est.classes_)])
    elif hasattr(est, "network_"):
        operator.outputs[0].type = kind([N, est.network_.config["n_outputs"]])
    else:
        operator.outputs[0].type = kind(operator.inputs[0].type.shape)


def _skl2onnx_convert(scope, operator, container):
    est = operator.raw_operator
    opset = container.target_opset_any_domain("") or DEFAULT_OPSET
    g = _Graph(_float_dtype([est]), opset, scope.get_unique_variable_name("fastlstm") + "_",
               container)
    X = operator.inputs[0].full_name
    lens = _full_lengths(g, X, est.layout)
    outputs = _build(g, [est], X, lens, with_transform_output=False)
    names = ["label", "probabilities"] if "label" in outputs else ["variable"]
    for name, variable in zip(names, operator.outputs):
        container.add_node("Identity", [outputs[name]], [variable.full_name],
                           name=g.name("output"))


def register_skl2onnx():
    """Register the converters of LSTMClassifier, LSTMRegressor and SequenceScaler with
    skl2onnx (done on import of this module where skl2onnx is installed).

    ``skl2onnx.to_onnx(model, X[:1])`` then converts them with one input ``X``, every
    sequence of full length; :func:`to_onnx` adds ``sequence_lens`` for ragged batches.
    """
    from skl2onnx import update_registered_converter

    from .estimators import LSTMClassifier, LSTMRegressor, SequenceScaler

    for cls in (LSTMClassifier, LSTMRegressor, SequenceScaler):
        options = {"zipmap": [True, False, "columns"], "nocl": [True, False]} \
            if cls is LSTMClassifier else None
        update_registered_converter(cls, f"Fastlstm{cls.__name__}", _skl2onnx_shape,
                                    _skl2onnx_convert, options=options)


try:
    register_skl2onnx()
except ImportError:            # skl2onnx is optional: to_onnx needs only onnx
    pass


# ----------------------------------------------------------------------------- torch
def to_torch(model):
    """The fitted ``model`` as a ``torch.nn.Module`` computing what it predicts.

    Parameters
    ----------
    model : LSTMClassifier, LSTMRegressor, SequenceScaler or a Pipeline of them
        (SequenceScaler steps, then at most one estimator).

    Returns
    -------
    torch.nn.Module
        ``module(x, lengths=None)``: ``x`` a (batch, steps, features) tensor in the
        model's ``layout`` (float32 or float64, as the model), ``lengths`` the valid steps
        of each sequence (all steps by default). It returns what ``predict_proba``
        (classifier), ``predict`` (regressor) or ``transform`` (SequenceScaler alone)
        return, as a tensor; a classifier's ``module.predict(x, lengths)`` gives the
        labels (a NumPy array of ``classes_``). The weights are the module's parameters,
        so it can be fine-tuned or traced further. Layers of cells torch has run on
        ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` (``module.recurrences``; ragged batches
        packed); peephole and clipped cells on a step loop of TensorFlow 1.x's equations.
    """
    steps, rest = _steps(model)
    if rest:
        raise ValueError(f"to_torch converts fastlstm steps only; "
                         f"{[type(s).__name__ for s in rest]} after them have no torch "
                         f"equivalent here: export with to_onnx instead")
    from ._torch_model import build_module
    return build_module(steps)
