"""The cell registry: one table per cell kind, and the one place that defines gate order,
parameter names, shapes and initialisation.

Every other module asks this one; none of them hard-codes a gate order or a shape. A cell
kind is a :class:`CellKind` in :data:`KINDS`: its gate blocks, its state, the parameters
beyond the common three, its initialisation, its reference math
(:mod:`fastlstm.reference`), its layer glue (:mod:`fastlstm._recurrences`), the kernels a
backend implements for it (``<name>_forward`` / ``<name>_backward``) and the gate orders
of the frameworks it is exchanged with (:mod:`fastlstm.interop`).

Parameter names follow Keras / TensorFlow 1.x so that they read the same as the
frameworks users know:

==================  =======================  =========================================
name                shape                    meaning
==================  =======================  =========================================
``kernel``          ``(input_size, G*H)``    input weights ``W_x`` of every gate
``recurrent_kernel````(H, G*H)``             recurrent weights ``W_h`` of every gate
``bias``            ``(G*H,)``               one bias per gate unit
``w_i_diag``        ``(H,)``                 peephole of the input gate (peephole cell)
``w_f_diag``        ``(H,)``                 peephole of the forget gate (peephole cell)
``w_o_diag``        ``(H,)``                 peephole of the output gate (peephole cell)
``recurrent_bias``  ``(G*H,)``               bias of ``h W_h`` (GRU, ``reset_after``)
==================  =======================  =========================================

``G`` is the number of gate blocks: 1 for the basic RNN, 4 for the LSTMs, 3 for the GRU.
The gate blocks are packed side by side along the last axis. The LSTM's are in TensorFlow
1.x's order ``(i, j, f, o)``: input gate, candidate ("j", TF's name for the new input),
forget gate, output gate; exactly TF1's kernel over ``[x; h]`` split into its ``x`` rows
and ``h`` rows, so TF1 interop needs no permutation. The GRU's are ``(r, u, c)``: reset
gate, update gate, candidate (TF1's ``gates`` kernel, then its ``candidate`` kernel;
PyTorch's ``(r, z, n)``).
"""

from dataclasses import dataclass, field

import numpy as np

#: Gate order of the LSTM cells, along the last axis of kernel / recurrent_kernel / bias.
LSTM_GATES = ("i", "j", "f", "o")
#: Gate order of the peers, for interop (fastlstm.interop).
TORCH_LSTM_GATES = ("i", "f", "j", "o")   # PyTorch's (i, f, g, o); g is our j
KERAS_LSTM_GATES = ("i", "f", "j", "o")   # Keras's (i, f, c, o); c is our j

#: Gate order of the GRU, along the last axis of kernel / recurrent_kernel / bias.
GRU_GATES = ("r", "u", "c")
TORCH_GRU_GATES = ("r", "u", "c")        # PyTorch's (r, z, n)
KERAS_GRU_GATES = ("u", "r", "c")        # Keras's (z, r, h)
#: Names of the peephole weights, in the order the kernels receive them.
PEEPHOLE_NAMES = ("w_i_diag", "w_f_diag", "w_o_diag")

#: dtypes the cells and kernels support.
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def permute_gates(packed, src_order, dst_order, axis=-1):
    """Reorder the gate blocks of ``packed`` along ``axis`` from ``src_order`` to ``dst_order``.

    Parameters
    ----------
    packed : ndarray, shape (..., G*H, ...)
        Array whose ``axis`` holds ``G`` equal gate blocks.
    src_order, dst_order : sequence of str
        Gate names of the blocks as stored and as wanted (same set of names).

    Returns
    -------
    ndarray
        A new array with the blocks in ``dst_order``; same dtype, exact copy of values.
    """
    packed = np.asarray(packed)
    n_gates = len(src_order)
    if packed.shape[axis] % n_gates:
        raise ValueError(
            f"axis {axis} of length {packed.shape[axis]} does not split into {n_gates} gates")
    blocks = np.split(packed, n_gates, axis=axis)
    by_name = dict(zip(src_order, blocks))
    return np.concatenate([by_name[g] for g in dst_order], axis=axis)


def glorot_uniform(rng, shape, dtype):
    """Glorot (Xavier) uniform init, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``.

    A 1-D shape uses ``fan_in = fan_out = shape[0]``, as TensorFlow does.
    """
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def orthogonal(rng, shape, dtype):
    """Orthogonal init (Saxe et al.) of a 2-D ``shape``, as Keras's ``Orthogonal(gain=1)``.

    For ``(H, G*H)`` the rows are orthonormal; every square ``(H, H)`` gate block of a
    recurrent kernel built this way is a slice of one orthogonal matrix.
    """
    from ._threads import blas_threads
    rows, cols = shape
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    # one BLAS thread: a threaded QR left OpenBLAS's worker spinning ~0.1 s beside the
    # kernels' threads (seed-size inference after making cells: 5.6 ms calls among 1.6)
    with blas_threads(1):
        q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))          # make the decomposition unique (uniform over O(n))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q[:rows, :cols]).astype(dtype)


@dataclass(frozen=True)
class CellKind:
    """Everything fastlstm knows about one kind of cell, in one place.

    Attributes
    ----------
    name : str
        ``"rnn"``, ``"lstm"`` or ``"gru"``: the key of :data:`KINDS`, the prefix of the
        backends' kernels (``<name>_forward``, ``<name>_backward``) and of the reference's.
    gates : tuple of str
        Gate blocks in packing order along the last axis of the kernels and the bias.
    state_is_tuple : bool
        The state is an ``LSTMStateTuple(c, h)`` (else one ``h`` array).
    options : dict
        Constructor options of the cells that change the parameters: option name ->
        the names of the extra parameters it adds, each of shape ``(H,)`` or ``(G*H,)``
        as ``extra_shapes`` says.
    extra_shapes : dict
        Extra parameter name -> ``"units"`` (shape ``(H,)``) or ``"gates"`` (``(G*H,)``).
    gate_bias_init : dict
        Gate name -> constant the ``bias`` block starts at (0 where absent); may depend on
        an option: ``(option, value_if_true, value_if_false)``.
    peer_gates : dict
        Framework (``"torch"``, ``"keras"``) -> its gate order, for :mod:`fastlstm.interop`.
    """

    name: str
    gates: tuple
    state_is_tuple: bool
    options: dict = field(default_factory=dict)
    extra_shapes: dict = field(default_factory=dict)
    gate_bias_init: dict = field(default_factory=dict)
    peer_gates: dict = field(default_factory=dict)

    @property
    def n_gates(self):
        """Number of gate blocks packed side by side."""
        return len(self.gates)

    def gate_slice(self, gate, num_units):
        """Slice of the packed last axis that holds ``gate``."""
        k = self.gates.index(gate)
        return slice(k * num_units, (k + 1) * num_units)

    def param_shapes(self, input_size, num_units, **options):
        """``name -> shape`` of the trainable parameters, in a fixed order.

        Parameters
        ----------
        input_size, num_units : int
        **options
            The kind's options (:attr:`options`) that are set; others are refused.
        """
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"cell kind {self.name!r} has no option(s) {sorted(unknown)}")
        width = self.n_gates * num_units
        shapes = {"kernel": (input_size, width), "recurrent_kernel": (num_units, width),
                  "bias": (width,)}
        for option, names in self.options.items():
            if options.get(option):
                for name in names:
                    shapes[name] = ((num_units,) if self.extra_shapes[name] == "units"
                                    else (width,))
        return shapes

    def init_params(self, input_size, num_units, dtype, rng, **options):
        """Fresh parameters: Glorot-uniform ``kernel`` and unit vectors (TensorFlow's
        default), orthogonal ``recurrent_kernel``, biases at :attr:`gate_bias_init`.

        Returns
        -------
        dict of ndarray
            C-contiguous arrays of ``dtype`` with the shapes of :meth:`param_shapes`.
        """
        params = {}
        for name, shape in self.param_shapes(input_size, num_units, **options).items():
            if name == "recurrent_kernel":
                params[name] = orthogonal(rng, shape, dtype)
            elif name == "bias":
                params[name] = np.zeros(shape, dtype=dtype)
                for gate, value in self.gate_bias_init.items():
                    if isinstance(value, tuple):
                        option, if_set, if_not = value
                        value = if_set if options.get(option) else if_not
                    params[name][self.gate_slice(gate, num_units)] = value
            elif name == "kernel" or self.extra_shapes.get(name) == "units":
                params[name] = glorot_uniform(rng, shape, dtype)
            else:                                   # a bias vector of every gate
                params[name] = np.zeros(shape, dtype=dtype)
        return params


#: The cell kinds. A new kind is an entry here, its reference math in
#: :mod:`fastlstm.reference`, its glue in :mod:`fastlstm._recurrences`, its cell class in
#: :mod:`fastlstm.cells` and the kernels of the backends that implement it.
KINDS = {
    "rnn": CellKind("rnn", ("h",), False,
                    peer_gates={"torch": ("h",), "keras": ("h",)}),
    "lstm": CellKind("lstm", LSTM_GATES, True,
                     options={"use_peepholes": PEEPHOLE_NAMES},
                     extra_shapes={name: "units" for name in PEEPHOLE_NAMES},
                     peer_gates={"torch": TORCH_LSTM_GATES, "keras": KERAS_LSTM_GATES}),
    # TF1's GRUCell starts its gates' bias at 1.0 (reset and update mostly open); Keras
    # and PyTorch, whose form reset_after is, at 0.
    "gru": CellKind("gru", GRU_GATES, False,
                    options={"reset_after": ("recurrent_bias",)},
                    extra_shapes={"recurrent_bias": "gates"},
                    gate_bias_init={"r": ("reset_after", 0.0, 1.0),
                                    "u": ("reset_after", 0.0, 1.0)},
                    peer_gates={"torch": TORCH_GRU_GATES, "keras": KERAS_GRU_GATES}),
}

#: Cell kinds and their number of gate blocks.
N_GATES = {name: kind.n_gates for name, kind in KINDS.items()}


def gate_slice(gate, num_units):
    """Slice of the LSTM's packed last axis that holds ``gate`` (one of :data:`LSTM_GATES`)."""
    return KINDS["lstm"].gate_slice(gate, num_units)
