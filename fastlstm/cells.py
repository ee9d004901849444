"""Recurrent cells: weights and hyper-parameters, no math.

The math lives in :mod:`fastlstm.reference` (the oracle) and the compiled backends;
:func:`fastlstm.dynamic_rnn` runs a cell over a sequence.
"""

from collections import namedtuple
import numbers

import numpy as np

from . import _layout


class LSTMStateTuple(namedtuple("LSTMStateTuple", ("c", "h"))):
    """State of an LSTM cell, ``(c, h)`` in TensorFlow 1.x's order.

    Attributes
    ----------
    c : ndarray, shape (batch_size, num_units)
        Cell state.
    h : ndarray, shape (batch_size, num_units)
        Output (hidden state).
    """

    __slots__ = ()


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dtype not in _layout.SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_random_state(seed):
    """RandomState from None / int / RandomState / Generator (scikit-learn's rule).

    Written here so that ``import fastlstm`` does not pay for importing scikit-learn.
    """
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    raise ValueError(f"random_state must be None, an int, a RandomState or a Generator, "
                     f"got {seed!r}")


class _Cell:
    """Common part of the cells: sizes, dtype, parameters and the zero state.

    Subclasses set ``kind`` (a key of :data:`fastlstm._layout.KINDS`) and their options.
    """

    kind = None
    use_peepholes = False
    cell_clip = None
    forget_bias = 0.0
    reset_after = False

    def __init__(self, num_units, input_size, dtype=np.float32, random_state=None):
        self.num_units = _check_positive_int(num_units, "num_units")
        self.input_size = _check_positive_int(input_size, "input_size")
        self.dtype = _check_dtype(dtype)
        rng = _check_random_state(random_state)
        self.params = self.kind_spec.init_params(self.input_size, self.num_units, self.dtype,
                                                 rng, **self._options())

    @property
    def kind_spec(self):
        """The :class:`fastlstm._layout.CellKind` of this cell (the registry's entry)."""
        return _layout.KINDS[self.kind]

    def _options(self):
        """The kind's parameter-changing options (``CellKind.options``) and their values."""
        return {name: getattr(self, name) for name in self.kind_spec.options}

    @property
    def n_gates(self):
        """Number of gate blocks packed in the kernels (1 RNN, 4 LSTM, 3 GRU)."""
        return self.kind_spec.n_gates

    @property
    def state_is_tuple(self):
        """True when the state is an :class:`LSTMStateTuple`, False for a plain array."""
        return self.kind_spec.state_is_tuple

    def param_shapes(self):
        """``name -> shape`` of every trainable parameter (see :mod:`fastlstm._layout`)."""
        return self.kind_spec.param_shapes(self.input_size, self.num_units, **self._options())

    def load_params(self, params):
        """Replace the parameters with copies of ``params``, checked and cast to ``dtype``.

        Parameters
        ----------
        params : dict of array-like
            Exactly the keys of :attr:`params`, with the shapes of :meth:`param_shapes`.

        Returns
        -------
        self
        """
        shapes = self.param_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"params must have the keys {sorted(shapes)}, got {sorted(params)}")
        new = {}
        for name, shape in shapes.items():
            arr = np.array(params[name], dtype=self.dtype, order="C", copy=True)
            if arr.shape != shape:
                raise ValueError(f"param {name!r} must have shape {shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"param {name!r} contains NaN or inf")
            new[name] = arr
        self.params = new      # all checked: replace at once, never half done
        return self

    def zero_state(self, batch_size):
        """All-zero initial state for ``batch_size`` sequences.

        Returns
        -------
        LSTMStateTuple of ndarray (batch_size, num_units) for LSTM cells, an ndarray
        (batch_size, num_units) for :class:`BasicRNNCell` and :class:`GRUCell`.
        """
        batch_size = _check_positive_int(batch_size, "batch_size")
        shape = (batch_size, self.num_units)
        if self.state_is_tuple:
            return LSTMStateTuple(np.zeros(shape, self.dtype), np.zeros(shape, self.dtype))
        return np.zeros(shape, self.dtype)

    def _options_repr(self):
        return ""

    def __repr__(self):
        return (f"{type(self).__name__}(num_units={self.num_units}, "
                f"input_size={self.input_size}{self._options_repr()}, "
                f"dtype={self.dtype.name})")


class BasicRNNCell(_Cell):
    """Basic RNN cell, ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)`` (TF1 ``BasicRNNCell``).

    Parameters
    ----------
    num_units : int
        Hidden size ``H``.
    input_size : int
        Features per step ``I``.
    dtype : {np.float32, np.float64}, default np.float32
    random_state : int, RandomState or None
        Seeds the initial weights.

    Attributes
    ----------
    params : dict
        ``kernel`` (I, H), ``recurrent_kernel`` (H, H), ``bias`` (H,).
    """

    kind = "rnn"


class LSTMCell(_Cell):
    """LSTM cell with optional peepholes and cell clipping (TF1 ``LSTMCell``).

    ``[i, j, f, o] = x_t W_x + h_{t-1} W_h + b`` and, with peepholes ``w_*``::

        c_t = sigmoid(f + forget_bias + w_f * c_{t-1}) * c_{t-1}
              + sigmoid(i + w_i * c_{t-1}) * tanh(j)
        c_t = clip(c_t, -cell_clip, cell_clip)       # when cell_clip is set
        h_t = sigmoid(o + w_o * c_t) * tanh(c_t)

    Parameters
    ----------
    num_units : int
        Hidden size ``H``.
    input_size : int
        Features per step ``I``.
    use_peepholes : bool, default False
        Adds the trainable vectors ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` (H,).
    cell_clip : float or None, default None
        Clip the cell state to ``[-cell_clip, cell_clip]`` after each step; positive.
        The gradient through a clipped value is zero, as in TensorFlow.
    forget_bias : float, default 1.0
        Constant added to the forget gate's pre-activation at every step (not trained).
    dtype : {np.float32, np.float64}, default np.float32
    random_state : int, RandomState or None
        Seeds the initial weights.

    Attributes
    ----------
    params : dict
        ``kernel`` (I, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,), plus the
        peephole vectors when ``use_peepholes``. Gate order (i, j, f, o).
    """

    kind = "lstm"

    def __init__(self, num_units, input_size, use_peepholes=False, cell_clip=None,
                 forget_bias=1.0, dtype=np.float32, random_state=None):
        if not isinstance(use_peepholes, (bool, np.bool_)):
            raise ValueError(f"use_peepholes must be a bool, got {use_peepholes!r}")
        if cell_clip is not None:
            if (isinstance(cell_clip, bool) or not isinstance(cell_clip, numbers.Real)
                    or not np.isfinite(cell_clip) or cell_clip <= 0):
                raise ValueError(f"cell_clip must be None or a positive finite number, "
                                 f"got {cell_clip!r}")
            cell_clip = float(cell_clip)
        if (isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real)
                or not np.isfinite(forget_bias)):
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias!r}")
        self.use_peepholes = bool(use_peepholes)
        self.cell_clip = cell_clip
        self.forget_bias = float(forget_bias)
        super().__init__(num_units, input_size, dtype=dtype, random_state=random_state)

    def _options_repr(self):
        return (f", use_peepholes={self.use_peepholes}, cell_clip={self.cell_clip}, "
                f"forget_bias={self.forget_bias}")


class BasicLSTMCell(LSTMCell):
    """LSTM cell without peepholes or clipping (TF1 ``BasicLSTMCell``).

    Same math and parameters as ``LSTMCell(use_peepholes=False, cell_clip=None)``.

    Parameters
    ----------
    num_units : int
    input_size : int
    forget_bias : float, default 1.0
        Constant added to the forget gate's pre-activation at every step.
    dtype : {np.float32, np.float64}, default np.float32
    random_state : int, RandomState or None
    """

    def __init__(self, num_units, input_size, forget_bias=1.0, dtype=np.float32,
                 random_state=None):
        super().__init__(num_units, input_size, use_peepholes=False, cell_clip=None,
                         forget_bias=forget_bias, dtype=dtype, random_state=random_state)

    def _options_repr(self):
        return f", forget_bias={self.forget_bias}"


class GRUCell(_Cell):
    """Gated recurrent unit, TF1 ``GRUCell`` or, with ``reset_after``, PyTorch's ``GRU``.

    Gate order (r, u, c): reset gate, update gate, candidate. With ``reset_after=False``
    (TensorFlow 1.x's ``GRUCell``, Keras's ``GRU(reset_after=False)``)::

        r, u = sigmoid(x_t W_x[r, u] + h_{t-1} W_h[r, u] + b[r, u])
        c = tanh(x_t W_x[c] + (r * h_{t-1}) W_h[c] + b[c])
        h_t = u * h_{t-1} + (1 - u) * c

    With ``reset_after=True`` (``torch.nn.GRU``, Keras's ``GRU(reset_after=True)``) the
    reset gate acts after the recurrent product, which has a bias of its own ``b_h``::

        r, u = sigmoid(x_t W_x[r, u] + b[r, u] + h_{t-1} W_h[r, u] + b_h[r, u])
        c = tanh(x_t W_x[c] + b[c] + r * (h_{t-1} W_h[c] + b_h[c]))

    Parameters
    ----------
    num_units : int
        Hidden size ``H``.
    input_size : int
        Features per step ``I``.
    reset_after : bool, default False
        The PyTorch / Keras form above; adds the trainable ``recurrent_bias`` (3H,).
    dtype : {np.float32, np.float64}, default np.float32
    random_state : int, RandomState or None
        Seeds the initial weights.

    Attributes
    ----------
    params : dict
        ``kernel`` (I, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (3H,), plus
        ``recurrent_bias`` (3H,) with ``reset_after``. Gate order (r, u, c). The gates'
        bias starts at 1.0 without ``reset_after`` (TF1's ``GRUCell``), at 0 with it
        (Keras, PyTorch start near 0).
    """

    kind = "gru"

    def __init__(self, num_units, input_size, reset_after=False, dtype=np.float32,
                 random_state=None):
        if not isinstance(reset_after, (bool, np.bool_)):
            raise ValueError(f"reset_after must be a bool, got {reset_after!r}")
        self.reset_after = bool(reset_after)
        super().__init__(num_units, input_size, dtype=dtype, random_state=random_state)

    def _options_repr(self):
        return f", reset_after={self.reset_after}"
