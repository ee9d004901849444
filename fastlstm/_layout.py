"""The one place that defines gate order, parameter names, shapes, packing and init.

Every other module asks this one; none of them hard-codes a gate order or a shape.

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
==================  =======================  =========================================

``G`` is the number of gate blocks: 1 for the basic RNN, 4 for the LSTMs. The gate
blocks of the LSTM are packed side by side along the last axis in TensorFlow 1.x's
order ``(i, j, f, o)``: input gate, candidate ("j", TF's name for the new input),
forget gate, output gate. This is exactly TF1's kernel over ``[x; h]`` split into its
``x`` rows and ``h`` rows, so TF1 interop needs no permutation.
"""

import numpy as np

#: Gate order of the LSTM cells, along the last axis of kernel / recurrent_kernel / bias.
LSTM_GATES = ("i", "j", "f", "o")
#: Gate order of the peers, for interop (fastlstm.interop).
TORCH_LSTM_GATES = ("i", "f", "j", "o")   # PyTorch's (i, f, g, o); g is our j
KERAS_LSTM_GATES = ("i", "f", "j", "o")   # Keras's (i, f, c, o); c is our j

#: Cell kinds and their number of gate blocks.
N_GATES = {"rnn": 1, "lstm": 4}
#: Names of the peephole weights, in the order the kernels receive them.
PEEPHOLE_NAMES = ("w_i_diag", "w_f_diag", "w_o_diag")

#: dtypes the cells and kernels support.
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def gate_slice(gate, num_units):
    """Slice of the packed last axis that holds ``gate`` (one of :data:`LSTM_GATES`)."""
    k = LSTM_GATES.index(gate)
    return slice(k * num_units, (k + 1) * num_units)


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


def param_shapes(kind, input_size, num_units, use_peepholes=False):
    """Names and shapes of the trainable parameters of a cell, in a fixed order.

    Parameters
    ----------
    kind : {"rnn", "lstm"}
    input_size, num_units : int
    use_peepholes : bool
        Adds the three peephole vectors (LSTM only).

    Returns
    -------
    dict
        ``name -> shape`` in the order documented in the module docstring.
    """
    width = N_GATES[kind] * num_units
    shapes = {
        "kernel": (input_size, width),
        "recurrent_kernel": (num_units, width),
        "bias": (width,),
    }
    if use_peepholes:
        for name in PEEPHOLE_NAMES:
            shapes[name] = (num_units,)
    return shapes


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
    rows, cols = shape
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))          # make the decomposition unique (uniform over O(n))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q[:rows, :cols]).astype(dtype)


def init_params(kind, input_size, num_units, use_peepholes, dtype, rng):
    """Fresh parameters: Glorot-uniform ``kernel``, orthogonal ``recurrent_kernel``, zero ``bias``.

    Peephole vectors get Glorot-uniform values (TensorFlow's default initializer).

    Returns
    -------
    dict of ndarray
        C-contiguous arrays of ``dtype`` with the shapes of :func:`param_shapes`.
    """
    params = {}
    for name, shape in param_shapes(kind, input_size, num_units, use_peepholes).items():
        if name == "kernel" or name in PEEPHOLE_NAMES:
            params[name] = glorot_uniform(rng, shape, dtype)
        elif name == "recurrent_kernel":
            params[name] = orthogonal(rng, shape, dtype)
        else:
            params[name] = np.zeros(shape, dtype=dtype)
    return params
