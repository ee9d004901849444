"""The sequence model behind the estimators, forward and backward; no scikit-learn here.

::

    X (N, T, F) --[input projection: X W_in + b_in, optional, linear]--> (N, T, P)
      --[num_layers recurrent layers, each forward (+ backward) direction,
         dropout between layers]--> outputs (N, T, D), final states
      --[readout: "last" final h of each direction | "mean" | "max" over valid steps]-->
      features (N, D) --[dense: features W_out + b_out]--> (N, n_outputs)

The backward direction of a bidirectional layer reads each sequence reversed within its
own length (TensorFlow's ``reverse_sequence``), so padding never reaches it.

Everything between the input and the readout is kept time-major (T, N, ...), the
kernels' own layout, so no layer pays for a batch/time transpose (measured: the two
transposes per layer were 20% of a 1,000-sequence MNIST prediction).

The input projection is linear and the first layer's cells start with another linear
map, ``x_t W_x + b``, so where it saves work the two are folded into one:
``X (W_in W_x) + (b_in W_x + b)``, a product of the weights (F x P x G) instead of the
activations (T N x P x G), G being the cell's gate width. The gradients are unfolded by
the chain rule (:meth:`SequenceNetwork._unfold_gradients`). Exact in real arithmetic; in
floating point it rounds differently from projecting first. Measured for the seed's MNIST
model (F = 28, P = H = 128, batches of 128): a training step (forward and backward) took
13.7 ms projecting first, 8.75 ms folded (the first layer's input gradient, which only
the projection needed, is skipped too).
"""

import copy

import numpy as np

from . import _layout
from ._threads import kernel_threads
from ._workspace import scratch
from .backends import get_backend
from .cells import BasicRNNCell, GRUCell, LSTMCell
from .rnn import _dynamic_rnn, dynamic_rnn_backward

#: The estimators' ``cell`` choices: name -> (cell kind, its options).
CELLS = {"lstm": ("lstm", {}), "peephole": ("lstm", {"use_peepholes": True}),
         "gru": ("gru", {"reset_after": True}), "rnn": ("rnn", {})}
CELL_KINDS = tuple(CELLS)
READOUTS = ("last", "mean", "max")


def _reverse_index(lengths, n_steps):
    """(T, N) index that reverses each sequence within its length and fixes the padding."""
    t = np.arange(n_steps)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t)


def _take_steps(x, index):
    """``x`` (T, N, D) with step ``index[t, n]`` of sequence n at position t."""
    return np.take_along_axis(x, index[:, :, None], axis=0)


def _valid_steps(lengths, n_steps):
    """(T, N, 1) mask of the steps that exist."""
    return (np.arange(n_steps)[:, None] < lengths[None, :])[:, :, None]


def param_shapes(n_features, n_outputs, hidden_size, num_layers, cell, bidirectional,
                 input_projection, **_):
    """``name -> shape`` of every parameter of a :class:`SequenceNetwork` of this
    configuration, in the order of ``params``, without allocating anything (a model
    file's declared sizes are checked against it before any array is built)."""
    shapes = {}
    width = n_features
    if input_projection:
        shapes["input/kernel"] = (n_features, input_projection)
        shapes["input/bias"] = (input_projection,)
        width = input_projection
    directions = ("fw", "bw") if bidirectional else ("fw",)
    kind, options = CELLS[cell]
    for layer in range(num_layers):
        for d in directions:
            for name, shape in _layout.KINDS[kind].param_shapes(width, hidden_size,
                                                                **options).items():
                shapes[f"layer{layer}/{d}/{name}"] = shape
        width = hidden_size * len(directions)
    shapes["output/kernel"] = (width, n_outputs)
    shapes["output/bias"] = (n_outputs,)
    return shapes


try:
    from ._buffers import same_bytes as _same_bytes
except ImportError:                     # built without the extension
    _same_bytes = None


def _same_bits(a, b):
    """True when arrays ``a`` and ``b`` have one shape and the same bits (NaN equal to
    itself, -0.0 not to 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if _same_bytes is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        return _same_bytes(a, b)
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))


class SequenceNetwork:
    """Parameters and math of the estimators' model.

    Parameters
    ----------
    n_features, n_outputs : int
    hidden_size, num_layers : int
    cell : {"lstm", "peephole", "gru", "rnn"}
        TF1 ``BasicLSTMCell``, ``LSTMCell(use_peepholes=True)``,
        ``GRUCell(reset_after=True)`` (PyTorch's and Keras's GRU) or ``BasicRNNCell``.
    bidirectional : bool
    forget_bias : float
    cell_clip : float or None
    input_projection : int or None
    readout : {"last", "mean", "max"}
    dtype : numpy float dtype
    rng : numpy RandomState
        Draws the initial weights.

    Attributes
    ----------
    params : dict name -> ndarray
        Every trainable array, by a stable name (``"input/kernel"``,
        ``"layer0/fw/kernel"``, ``"output/bias"``, ...). Cells hold the same arrays.
    """

    def __init__(self, n_features, n_outputs, hidden_size, num_layers, cell, bidirectional,
                 forget_bias, cell_clip, input_projection, readout, dtype, rng):
        self.config = dict(n_features=n_features, n_outputs=n_outputs,
                           hidden_size=hidden_size, num_layers=num_layers, cell=cell,
                           bidirectional=bidirectional, forget_bias=forget_bias,
                           cell_clip=cell_clip, input_projection=input_projection,
                           readout=readout, dtype=np.dtype(dtype).name)
        self.dtype = np.dtype(dtype)
        self.readout = readout
        self.directions = ("fw", "bw") if bidirectional else ("fw",)
        self.params = {}
        width = n_features
        if input_projection:
            self.params["input/kernel"] = _layout.glorot_uniform(
                rng, (n_features, input_projection), self.dtype)
            self.params["input/bias"] = np.zeros(input_projection, self.dtype)
            width = input_projection
        self.cells = []
        for layer in range(num_layers):
            row = {}
            for d in self.directions:
                if cell == "rnn":
                    c = BasicRNNCell(hidden_size, width, dtype=self.dtype, random_state=rng)
                elif cell == "gru":
                    c = GRUCell(hidden_size, width, reset_after=True, dtype=self.dtype,
                                random_state=rng)
                else:
                    c = LSTMCell(hidden_size, width, use_peepholes=(cell == "peephole"),
                                 cell_clip=cell_clip, forget_bias=forget_bias,
                                 dtype=self.dtype, random_state=rng)
                row[d] = c
                for name, arr in c.params.items():
                    self.params[f"layer{layer}/{d}/{name}"] = arr
            self.cells.append(row)
            width = hidden_size * len(self.directions)
        self.n_readout_features = width
        self.params["output/kernel"] = _layout.glorot_uniform(rng, (width, n_outputs),
                                                              self.dtype)
        self.params["output/bias"] = np.zeros(n_outputs, self.dtype)

    # ------------------------------------------------------------------ parameters
    def set_params(self, values):
        """Copy ``values`` (name -> array) into the parameter arrays, in place.

        ``values`` must hold exactly the names of ``params``, each an array of the same
        shape and dtype (no broadcasting, no casting); else ``ValueError`` and nothing is
        changed.
        """
        if set(values) != set(self.params):
            raise ValueError(f"parameters {sorted(set(self.params) - set(values))} are "
                             f"missing and {sorted(set(values) - set(self.params))} unknown")
        for name, arr in self.params.items():
            value = values[name]
            if (not isinstance(value, np.ndarray) or value.shape != arr.shape
                    or value.dtype != arr.dtype):
                raise ValueError(f"parameter {name!r} must be an array of shape {arr.shape} "
                                 f"and dtype {arr.dtype}, got "
                                 f"{getattr(value, 'shape', type(value).__name__)} "
                                 f"{getattr(value, 'dtype', '')}".rstrip())
        for name, arr in self.params.items():
            arr[...] = values[name]

    def copy_params(self):
        return {name: arr.copy() for name, arr in self.params.items()}

    # ------------------------------------------------------ folded input projection
    def _folds_projection(self):
        """True when folding the input projection into the first layer saves work:
        F G <= F P + P G multiplications per step and sequence."""
        if "input/kernel" not in self.params:
            return False
        F, P = self.params["input/kernel"].shape
        G = self.cells[0]["fw"].params["kernel"].shape[1]
        return F * G <= F * P + P * G

    def _folded_cells(self, be, reuse=False):
        """The first layer's cells with the projection folded in, from the current
        parameters: same recurrent weights (shared arrays), input kernel ``W_in W_x``
        (F, G) and bias ``b_in W_x + b``, in new arrays. Nothing is refreshed in place on
        the network: a folded copy kept there and refreshed in place by each forward was
        read half-refreshed by concurrent predictions from other threads (wrong
        probabilities in 54 of 120 calls, 4 threads).

        ``reuse`` (predictions): the folded arrays of an earlier call, only read, while
        the four arrays they came from hold the same bits (compared with the copies kept
        beside them: ~5 us for the MNIST model, where its fold took ~60-90 us of a
        ~350 us one-sequence ``predict_proba``). Each direction's entry is replaced
        whole, never changed, so a concurrent call reads an old entry or a new one."""
        W_in, b_in = self.params["input/kernel"], self.params["input/bias"]
        cache = self.__dict__.setdefault("_fold_cache", {})
        folded = {}
        for d, cell in self.cells[0].items():
            f = copy.copy(cell)
            f.input_size = W_in.shape[0]
            f.params = dict(cell.params)                    # shares the recurrent arrays
            sources = (W_in, b_in, cell.params["kernel"], cell.params["bias"])
            entry = cache.get(d) if reuse else None
            if entry is None or not all(map(_same_bits, sources, entry[0])):
                # the backend's GEMMs, not np.matmul: NumPy's BLAS threads would wake up
                # and fight the kernels' spinning OpenMP workers (a 5-epoch fit 2.2 -> 4.1 s)
                kernel = be.gemm.matmul(W_in, cell.params["kernel"], kernel_threads())
                bias = be.gemm.matmul(b_in[None], cell.params["kernel"], 1)[0]
                bias += cell.params["bias"]
                if reuse:      # (not flagged read-only: Numba would compile for that)
                    cache[d] = entry = (tuple(a.copy() for a in sources), kernel, bias)
                else:
                    entry = (None, kernel, bias)
            f.params["kernel"], f.params["bias"] = entry[1], entry[2]
            folded[d] = f
        return folded

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_fold_cache", None)        # derived; rebuilt by the next prediction
        return state

    def _unfold_gradients(self, be, d, g, grads):
        """Chain rule through ``W_eff = W_in W_x``, ``b_eff = b_in W_x + b``: the first
        layer's kernel and bias gradients of direction ``d`` from the folded cell's, and
        its share of the projection's gradients (summed over directions).

        The projected inputs are ``X W_in + b_in``, so ``dW_x = (X W_in + b_in)^T dz =
        W_in^T dW_eff + b_in (sum dz)^T``."""
        W_in, W_x = self.params["input/kernel"], self.cells[0][d].params["kernel"]
        n_threads = kernel_threads()
        d_w_x = be.gemm.matmul_tn(W_in, g["kernel"], n_threads)
        d_w_x += np.outer(self.params["input/bias"], g["bias"])
        grads[f"layer0/{d}/kernel"] = d_w_x
        grads[f"layer0/{d}/bias"] = g["bias"]
        d_w_in = be.gemm.matmul_nt(np.ascontiguousarray(g["kernel"]), W_x, n_threads)
        d_b_in = be.gemm.matmul_nt(g["bias"][None], W_x, 1)[0]
        if "input/kernel" in grads:
            grads["input/kernel"] += d_w_in
            grads["input/bias"] += d_b_in
        else:
            grads["input/kernel"], grads["input/bias"] = d_w_in, d_b_in

    def weight_names(self):
        """Names of the matrices that the L2 penalty acts on (not biases, not peepholes)."""
        return [n for n in self.params if n.endswith("kernel")]

    # --------------------------------------------------------------------- forward
    def forward(self, X, lengths, backend="auto", dropout=0.0, rng=None, keep_cache=True):
        """Outputs (N, n_outputs) and the cache for :meth:`backward`.

        Parameters
        ----------
        X : ndarray (N, T, F) of ``dtype``, zero-padded (batch-major, as users have it)
        lengths : ndarray (N,) int64, all >= 1
        dropout : float
            Inverted dropout between recurrent layers (training only; needs ``rng``).
        keep_cache : bool, default True
            Keep what :meth:`backward` needs. Without it (prediction) the layers store no
            history beyond their outputs, and the cache holds only ``"features"``.
        """
        n_threads = kernel_threads()
        be = get_backend(backend)
        N, T, F = X.shape
        if keep_cache:
            Xt = np.ascontiguousarray(X.transpose(1, 0, 2))         # (T, N, F)
        else:     # prediction: a reused buffer (a fresh one faults its pages in again
            Xt = scratch("network_inputs", (T, N, F), X.dtype)      # where malloc trims)
            np.copyto(Xt, X.transpose(1, 0, 2))
        cache = {"Xt": Xt, "lengths": lengths, "layers": [], "masks": [], "backend": be}
        h = Xt
        folds = self._folds_projection()
        cache["folded"] = folds
        if "input/kernel" in self.params and not folds:
            h = be.gemm.matmul(Xt.reshape(T * N, F), self.params["input/kernel"], n_threads,
                               bias=self.params["input/bias"])
            h = h.reshape(T, N, -1)
        rev = _reverse_index(lengths, T) if len(self.directions) == 2 else None
        finals = None
        for layer, row in enumerate(self.cells):
            if layer == 0 and folds:
                row = cache["folded_cells"] = self._folded_cells(be, reuse=not keep_cache)
            if layer > 0 and dropout > 0:
                mask = (rng.uniform(size=h.shape) >= dropout).astype(self.dtype) / (1 - dropout)
                h = h * mask
                cache["masks"].append(mask)
            outs, finals, caches = [], [], []
            # the last layer's outputs are read out only for "mean" and "max"
            keep_outputs = layer < len(self.cells) - 1 or self.readout != "last"
            for d in self.directions:
                inp = h if d == "fw" else _take_steps(h, rev)
                out, state, *c = _dynamic_rnn(row[d], inp, lengths, initial_state=None,
                                              time_major=True, backend=be,
                                              return_cache=keep_cache,
                                              keep_outputs=keep_outputs)
                if keep_outputs:
                    outs.append(out if d == "fw" else _take_steps(out, rev))
                finals.append(state.h if isinstance(state, tuple) else state)
                caches.extend(c)
            cache["layers"].append(caches)
            if keep_outputs:
                h = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
        features = self._readout(h, finals, lengths, cache)
        cache["features"] = features
        logits = be.gemm.matmul(features, self.params["output/kernel"], n_threads,
                                bias=self.params["output/bias"])
        return logits, cache

    def _readout(self, outputs, finals, lengths, cache):
        """Features (N, D) from the last layer's time-major outputs (T, N, D)."""
        if self.readout == "last":
            return np.concatenate(finals, axis=1)
        if self.readout == "mean":
            return outputs.sum(axis=0) / lengths[:, None].astype(self.dtype)
        masked = np.where(_valid_steps(lengths, outputs.shape[0]), outputs, -np.inf)
        cache["argmax"] = masked.argmax(axis=0)                      # (N, D)
        return np.take_along_axis(outputs, cache["argmax"][None], axis=0)[0]

    # -------------------------------------------------------------------- backward
    def backward(self, cache, d_logits):
        """Gradients of every parameter (name -> array) from dLoss/d outputs (N, n_outputs)."""
        n_threads = kernel_threads()
        be = cache["backend"]
        grads = {}
        Xt, lengths = cache["Xt"], cache["lengths"]
        T, N, F = Xt.shape
        H = self.cells[0]["fw"].num_units
        features = cache["features"]
        grads["output/kernel"] = be.gemm.matmul_tn(features, d_logits, n_threads)
        grads["output/bias"] = d_logits.sum(axis=0)
        d_features = be.gemm.matmul_nt(d_logits, self.params["output/kernel"], n_threads)

        n_dir = len(self.directions)
        rev = _reverse_index(lengths, T) if n_dir == 2 else None
        d_out = None                                      # dLoss/d last layer outputs
        d_final = [None] * n_dir
        if self.readout == "last":
            d_final = [np.ascontiguousarray(d_features[:, k * H:(k + 1) * H])
                       for k in range(n_dir)]
        else:
            d_out = np.zeros((T, N, n_dir * H), self.dtype)
            if self.readout == "mean":
                d_out += (d_features / lengths[:, None].astype(self.dtype))[None, :, :]
                d_out *= _valid_steps(lengths, T)
            else:
                np.put_along_axis(d_out, cache["argmax"][None], d_features[None], axis=0)

        folded = cache.get("folded", False)
        for layer in reversed(range(len(self.cells))):
            row, caches = self.cells[layer], cache["layers"][layer]
            if layer == 0 and folded:
                row = cache["folded_cells"]        # the forward's
            # the first layer's inputs are data (or, unfolded, the projection's outputs)
            need_inputs = layer > 0 or ("input/kernel" in self.params and not folded)
            d_in = None
            for k, d in enumerate(self.directions):
                cell = row[d]
                d_o = None
                if d_out is not None:
                    d_o = d_out[:, :, k * H:(k + 1) * H]
                    d_o = d_o if d == "fw" else _take_steps(d_o, rev)
                d_state = None
                if d_final[k] is not None:
                    zero = np.zeros_like(d_final[k])
                    d_state = (zero, d_final[k]) if cell.state_is_tuple else d_final[k]
                g = dynamic_rnn_backward(cell, caches[k], d_o, d_state,
                                         input_gradient=need_inputs)
                for name in cell.params:
                    grads[f"layer{layer}/{d}/{name}"] = g[name]
                if layer == 0 and folded:
                    self._unfold_gradients(be, d, g, grads)
                if need_inputs:
                    gi = g["inputs"] if d == "fw" else _take_steps(g["inputs"], rev)
                    d_in = gi if d_in is None else d_in + gi
            d_final = [None] * n_dir
            if layer > 0:
                if cache["masks"]:
                    d_in = d_in * cache["masks"][layer - 1]
                d_out = d_in
        if "input/kernel" in self.params and not folded:
            d_in2 = d_in.reshape(T * N, -1)
            grads["input/kernel"] = be.gemm.matmul_tn(Xt.reshape(T * N, F), d_in2, n_threads)
            grads["input/bias"] = d_in2.sum(axis=0)
        return grads
