"""A fitted fastlstm model as a ``torch.nn.Module`` (see :func:`fastlstm.export.to_torch`).

Each layer's direction runs on torch's own recurrent module where torch computes the cell
(``torch.nn.LSTM`` / ``GRU`` / ``RNN`` from :func:`fastlstm.interop.to_torch`), ragged
batches packed: the step loop written in Python took 1.7 ms for one MNIST-sized sequence
(28 steps, 128 units) where ``torch.nn.LSTM`` takes 0.22. Cells torch has no module for
(peepholes, ``cell_clip``) are written out step by step with TensorFlow 1.x's equations
(those of :mod:`fastlstm.reference`), masked by each sequence's length. The backward
direction reads each sequence within its length. torch is imported here only.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import _layout, interop


def _torch_recurrence(cell):
    """torch's module computing ``cell`` (time-major), or None where torch has none."""
    if cell.kind == "lstm" and (cell.use_peepholes or cell.cell_clip is not None):
        return None
    if cell.kind == "gru" and not cell.reset_after:
        return None
    return interop.to_torch(cell, batch_first=False)


def _reverse_index(lengths, n_steps):
    """(T, N) index that reverses each sequence within its length, padding in place."""
    t = torch.arange(n_steps, device=lengths.device)[:, None]
    L = lengths[None, :]
    return torch.where(t < L, L - 1 - t, t)


class FastlstmModule(torch.nn.Module):
    """SequenceScaler steps and, optionally, one fastlstm estimator, in torch.

    Attributes
    ----------
    classes_ : ndarray or None
        The classifier's labels (``predict`` maps the most probable column to them).
    """

    def __init__(self, steps):
        super().__init__()
        dtype = torch.float64 if any(
            getattr(s, "dtype", "float32") == "float64" for s in steps) else torch.float32
        self.layout = steps[0].layout
        self.scalers = []
        est = None
        for k, step in enumerate(steps):
            if hasattr(step, "mean_"):
                self.register_buffer(f"mean_{k}", torch.tensor(step.mean_, dtype=dtype))
                self.register_buffer(f"scale_{k}", torch.tensor(step.scale_, dtype=dtype))
                self.scalers.append(k)
            else:
                est = step
        self.classes_ = getattr(est, "classes_", None)
        self.estimator_kind = (None if est is None else
                               "classifier" if self.classes_ is not None else "regressor")
        self.y_ndim = getattr(est, "_y_ndim_", 2)
        if self.estimator_kind == "regressor":       # the network predicts standardized y
            self.register_buffer("y_mean", torch.tensor(est.y_mean_, dtype=dtype))
            self.register_buffer("y_scale", torch.tensor(est.y_scale_, dtype=dtype))
        self.params = torch.nn.ParameterDict()       # those not in a torch module
        self.recurrences = torch.nn.ModuleDict()     # "layer{k}__{direction}"
        if est is not None:
            net = est.network_
            self.config = dict(net.config)
            in_modules = set()
            for layer, row in enumerate(net.cells):
                for d, cell in row.items():
                    module = _torch_recurrence(cell)
                    if module is not None:
                        self.recurrences[f"layer{layer}__{d}"] = module.to(dtype)
                        in_modules.update(f"layer{layer}/{d}/{n}" for n in cell.params)
            for name, arr in net.params.items():
                if name not in in_modules:
                    self.params[name.replace("/", "__")] = torch.nn.Parameter(
                        torch.tensor(np.asarray(arr), dtype=dtype))
            self.directions = net.directions
        self.dtype_ = dtype

    def _p(self, name):
        return self.params[name.replace("/", "__")]

    def _direction(self, x, lengths, prefix, reverse):
        """One direction of a layer over time-major ``x`` (T, N, I): outputs (T, N, H),
        zero past each end, and the final h (N, H)."""
        T, N, _ = x.shape
        H = self.config["hidden_size"]
        if reverse:
            rev = _reverse_index(lengths, T)
            x = torch.gather(x, 0, rev[:, :, None].expand(-1, -1, x.shape[2]))
        key = prefix.replace("/", "__")
        module = self.recurrences[key] if key in self.recurrences else None
        if T == 0:
            Y, h = x.new_zeros(0, N, H), x.new_zeros(N, H)
        elif module is not None:
            Y, h = _run_module(module, x, lengths)
        else:
            Y, h = self._steps(x, lengths, prefix)
        if reverse:
            Y = torch.gather(Y, 0, rev[:, :, None].expand(-1, -1, H))
        return Y, h

    def _steps(self, x, lengths, prefix):
        """:meth:`_direction`'s recurrence written out step by step (any cell)."""
        T, N, _ = x.shape
        cfg = self.config
        H = cfg["hidden_size"]
        Wx, Wh, b = (self._p(f"{prefix}/{n}") for n in ("kernel", "recurrent_kernel",
                                                         "bias"))
        h = x.new_zeros(N, H)
        c = x.new_zeros(N, H)
        lstm = cfg["cell"] in ("lstm", "peephole")
        peep = cfg["cell"] == "peephole"
        gru = cfg["cell"] == "gru"                    # GRUCell(reset_after=True)
        xw = x @ Wx + b                               # all steps' input products at once
        ys = []
        for t in range(T):
            z = h @ Wh + self._p(f"{prefix}/recurrent_bias") if gru else xw[t] + h @ Wh
            valid = (t < lengths)[:, None]
            if gru:
                r = torch.sigmoid(xw[t, :, :H] + z[:, :H])
                u = torch.sigmoid(xw[t, :, H:2 * H] + z[:, H:2 * H])
                cand = torch.tanh(xw[t, :, 2 * H:] + r * z[:, 2 * H:])
                h_new = u * h + (1 - u) * cand
            elif lstm:
                i, j, f, o = (z[:, k * H:(k + 1) * H] for k in
                              (_layout.LSTM_GATES.index(g) for g in "ijfo"))
                if peep:
                    i = i + self._p(f"{prefix}/w_i_diag") * c
                    f = f + self._p(f"{prefix}/w_f_diag") * c
                c_new = (torch.sigmoid(f + cfg["forget_bias"]) * c
                         + torch.sigmoid(i) * torch.tanh(j))
                if cfg["cell_clip"] is not None:
                    c_new = torch.clamp(c_new, -cfg["cell_clip"], cfg["cell_clip"])
                if peep:
                    o = o + self._p(f"{prefix}/w_o_diag") * c_new
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                c = torch.where(valid, c_new, c)
            else:
                h_new = torch.tanh(z)
            h = torch.where(valid, h_new, h)
            ys.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
        return torch.stack(ys), h

    def forward(self, x, lengths=None):
        """What the model predicts (see :func:`fastlstm.export.to_torch`)."""
        x = torch.as_tensor(x, dtype=self.dtype_)
        if self.layout == "nft":
            x = x.transpose(1, 2)
        N, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((N,), T, dtype=torch.int64, device=x.device)
        lengths = torch.as_tensor(lengths, dtype=torch.int64).to(x.device)
        if lengths.shape != (N,):
            raise ValueError(f"lengths must hold one step count per sequence of x ({N}), "
                             f"got shape {tuple(lengths.shape)}")
        if N and bool(((lengths < 0) | (lengths > T)).any()):
            raise ValueError(f"lengths must be in [0, {T}] (the steps of x), got "
                             f"{int(lengths.min())} to {int(lengths.max())}")
        x = x.transpose(0, 1)                                      # (T, N, F)
        mask = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[:, :, None]
        for k in self.scalers:
            x = torch.where(mask, (x - getattr(self, f"mean_{k}")) /
                            getattr(self, f"scale_{k}"), torch.zeros_like(x))
        if self.estimator_kind is None:
            x = x.transpose(0, 1)
            return x.transpose(1, 2) if self.layout == "nft" else x
        cfg = self.config
        if cfg["input_projection"]:
            x = x @ self._p("input/kernel") + self._p("input/bias")
        finals = None
        for layer in range(cfg["num_layers"]):
            outs, finals = [], []
            for d in self.directions:
                Y, h = self._direction(x, lengths, f"layer{layer}/{d}", d == "bw")
                outs.append(Y)
                finals.append(h)
            x = torch.cat(outs, dim=2)
        if cfg["readout"] == "last":
            features = torch.cat(finals, dim=1)
        elif cfg["readout"] == "mean":
            features = x.sum(dim=0) / lengths[:, None].to(x.dtype)
        else:
            features = torch.where(mask, x, torch.full_like(x, -torch.inf)).amax(dim=0)
        out = features @ self._p("output/kernel") + self._p("output/bias")
        if self.estimator_kind == "classifier":
            return torch.softmax(out, dim=1)
        out = out * self.y_scale + self.y_mean
        return out[:, 0] if self.y_ndim == 1 else out

    def predict(self, x, lengths=None):
        """Labels (classifier) or predictions (regressor), as NumPy arrays."""
        with torch.no_grad():
            out = self.forward(x, lengths)
        if self.estimator_kind == "classifier":
            return self.classes_[out.argmax(dim=1).cpu().numpy()]
        return out.cpu().numpy()


def _run_module(module, x, lengths):
    """``module`` (a time-major torch.nn.LSTM / GRU / RNN) over ``x`` (T, N, I), T >= 1:
    outputs (T, N, H), zero past each end, and the final h (N, H), zero for a sequence of
    no steps. A ragged batch runs packed (no step past an end is computed)."""
    T = x.shape[0]
    if bool((lengths == T).all()):
        Y, state = module(x)
    else:
        # packing takes lengths of at least one step; an empty sequence's first output
        # and final state are masked to zero below
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), enforce_sorted=False)
        Y, state = module(packed)
        Y, _ = pad_packed_sequence(Y, total_length=T)
    h = (state[0] if isinstance(state, tuple) else state)[0]
    if bool((lengths == 0).any()):
        empty = (lengths == 0)[:, None]
        h = torch.where(empty, torch.zeros_like(h), h)
        Y = torch.where(empty[None], torch.zeros_like(Y), Y)
    return Y, h


def build_module(steps):
    return FastlstmModule(steps).eval()
