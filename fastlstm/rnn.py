"""Layer math: ``dynamic_rnn`` and its backward, around a backend's recurrence kernels.

Validates once, converts to the time-major layout of the kernel contract (see
:mod:`fastlstm.reference`), runs the input projection ``x W_x + b`` for all steps as one
GEMM, lets the backend run the recurrence, and computes the weight gradients as GEMMs
over all steps afterwards. Knows nothing about scikit-learn.
"""

from dataclasses import dataclass, field
import functools

import numpy as np

from . import _thresholds
from . import _recurrences
from ._workspace import aligned_empty, recycled, scratch
from ._threads import blas_threads, kernel_threads
from ._bfloat16 import check_compute_dtype
from .backends import get_backend
from .cells import LSTMStateTuple, _Cell


@dataclass
class RNNCache:
    """What :func:`dynamic_rnn` keeps for :func:`dynamic_rnn_backward` (time-major).

    Attributes
    ----------
    backend : fastlstm.backends.Backend
        The backend that ran the forward pass; the backward uses the same one.
    time_major : bool
        Layout of the caller's ``inputs`` / ``outputs``.
    cell_signature : tuple
        Kind, sizes, dtype and options of the cell, checked by the backward.
    x : ndarray (T, B, I)
    seq_len : ndarray (B,) int64
    hs : ndarray (T+1, B, H)
        Outputs after each step, the initial state at index 0.
    history : dict of ndarray
        What the cell kind's forward keeps besides ``hs`` (:mod:`fastlstm._recurrences`):
        for the LSTMs ``cs`` (T+1, B, H), ``acts`` (T, B, 4H) and ``c_unclipped``
        (T, B, H) or (0, 0, 0) without clipping; for the GRU ``acts`` (T, B, 3H) and
        ``hzc`` (T, B, H) or (0, 0, 0) without ``reset_after``.
    """

    backend: object
    time_major: bool
    cell_signature: tuple
    x: np.ndarray
    seq_len: np.ndarray
    hs: np.ndarray
    history: dict = field(default_factory=dict)

    @property
    def cs(self):
        """The LSTM's cell states (T+1, B, H); None for other kinds."""
        return self.history.get("cs")

    @property
    def c_unclipped(self):
        """The LSTM's cell states before clipping (T, B, H), or (0, 0, 0)."""
        return self.history.get("c_unclipped")


def _signature(cell):
    return (cell.kind, cell.input_size, cell.num_units, cell.dtype.name,
            cell.use_peepholes, cell.cell_clip, cell.forget_bias, cell.reset_after)


def _check_cell(cell):
    if not isinstance(cell, _Cell):
        raise ValueError(f"cell must be a fastlstm cell (BasicRNNCell, BasicLSTMCell, "
                         f"LSTMCell or GRUCell), got {type(cell).__name__}")


def _as_float_array(value, name, dtype, contiguous=True, check_finite=True):
    """``value`` as a C-contiguous array of ``dtype`` (``contiguous=False``: only its last
    axis contiguous, a view where it already is), refusing non-numeric and (unless not
    ``check_finite``) non-finite values."""
    arr = np.asarray(value)
    if arr.dtype != dtype:                 # the cells' float dtypes need no more checks
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == np.bool_):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} must hold real numbers, got complex dtype "
                             f"{arr.dtype}")
    if contiguous or arr.dtype != dtype or (arr.shape[-1] > 1
                                            and arr.strides[-1] != arr.itemsize):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if check_finite:
        _check_finite(arr, name)
    return arr


def _check_finite(arr, name):
    if not np.isfinite(arr).all():         # the method: 0.6 us less than np.all's wrapper
        raise ValueError(f"{name} contains NaN or inf")


def _check_inputs(cell, inputs, time_major, contiguous=True):
    """Inputs as a time-major (T, B, I) C-contiguous array of the cell's dtype
    (``contiguous=False``: a transposed view of batch-major inputs where they are of the
    dtype and their last axis is contiguous)."""
    arr = np.asarray(inputs)
    if arr.ndim != 3:
        layout = "(T, B, I)" if time_major else "(B, T, I)"
        raise ValueError(f"inputs must be 3-D {layout} with time_major={time_major}, "
                         f"got {arr.ndim}-D array of shape {arr.shape}")
    if arr.shape[2] != cell.input_size:
        raise ValueError(f"inputs have {arr.shape[2]} features per step but the cell's "
                         f"input_size is {cell.input_size}")
    if not time_major:
        arr = arr.transpose(1, 0, 2)
    if arr.shape[1] == 0:
        raise ValueError("inputs hold an empty batch (batch size 0)")
    return _as_float_array(arr, "inputs", cell.dtype, contiguous=contiguous)


def _check_sequence_length(sequence_length, n_steps, batch_size):
    """Lengths as an int64 (B,) array with 0 <= L <= T; all T when None."""
    if sequence_length is None:
        lengths = np.empty(batch_size, np.int64)     # 0.25 us; np.full's wrapper 0.6
        lengths.fill(n_steps)
        return lengths
    arr = np.asarray(sequence_length)
    if arr.ndim != 1 or arr.shape[0] != batch_size:
        raise ValueError(f"sequence_length must be 1-D with one length per sequence "
                         f"({batch_size}), got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"sequence_length must hold integers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("sequence_length must hold whole numbers")
    # range-checked in the caller's dtype: a cast first wraps uint64 2**64 - 1 to -1
    if np.any(arr < 0):
        raise ValueError(f"sequence_length must not be negative, got min {arr.min()}")
    if np.any(arr > n_steps):
        raise ValueError(f"sequence_length must not exceed the number of steps "
                         f"({n_steps}), got max {arr.max()}")
    return arr.astype(np.int64)


def _check_state(cell, state, batch_size, name):
    """A state as contiguous ``(c, h)`` (LSTM, ``c`` None for the RNN) of shape (B, H)."""
    shape = (batch_size, cell.num_units)

    def one(value, part):
        arr = np.asarray(value)
        if arr.shape != shape:
            raise ValueError(f"{part} must have shape {shape}, got {arr.shape}")
        arr = _as_float_array(arr, part, cell.dtype)
        out = aligned_empty(shape, cell.dtype)        # the kernels' threads write it
        out[...] = arr
        return out

    if cell.state_is_tuple:
        if (not isinstance(state, (tuple, list)) or len(state) != 2
                or isinstance(state, np.ndarray)):
            raise ValueError(f"{name} of an LSTM cell must be an LSTMStateTuple(c, h) "
                             f"(or a pair of arrays), got {type(state).__name__}")
        return one(state[0], f"{name}.c"), one(state[1], f"{name}.h")
    if isinstance(state, (tuple, list)):
        raise ValueError(f"{name} of a BasicRNNCell must be one array of shape {shape}, "
                         f"got a {type(state).__name__}")
    return None, one(state, name)


def _zero_state(batch_size, num_units, dtype):
    """A fresh (B, H) zero cell state on a cache line: the final state of a fused inference
    is written there, side by side by the threads of a hidden-unit split (_workspace)."""
    state = aligned_empty((batch_size, num_units), dtype)
    state.fill(0)
    return state


def _under_one_blas_limit(fn):
    """Run ``fn`` with BLAS at one thread throughout: the kernels' and GEMMs' own limits
    nest in it for free (see :func:`fastlstm._threads.blas_threads`). For the backward,
    whose GEMMs follow each other; the forward limits only where it calls BLAS (its
    fused path calls none)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
            return fn(*args, **kwargs)
    return wrapper


def dynamic_rnn(cell, inputs, sequence_length=None, initial_state=None, time_major=False,
                backend="auto", return_cache=False, compute_dtype=None):
    """Run ``cell`` over batches of sequences, as TensorFlow 1.x's ``tf.nn.dynamic_rnn``.

    Parameters
    ----------
    cell : BasicRNNCell, BasicLSTMCell, LSTMCell or GRUCell
    inputs : array-like, shape (B, T, I), or (T, B, I) when ``time_major``
        Real, finite values; cast to ``cell.dtype``.
    sequence_length : array-like of int, shape (B,), optional
        Valid steps of each sequence, ``0 <= L_b <= T``; all ``T`` by default. Outputs
        at ``t >= L_b`` are zero and the state is carried unchanged past the end, so
        the returned state is the one after step ``L_b - 1`` (the initial state for
        ``L_b = 0``).
    initial_state : LSTMStateTuple (c, h) or ndarray (B, H), optional
        An ``LSTMStateTuple`` for the LSTM cells, one array for the others.
        Zero by default.
    time_major : bool, default False
        Layout of ``inputs`` and of the returned outputs.
    backend : str or Backend, default "auto"
        ``"auto"`` (fastest available CPU backend), ``"cython"``, ``"numba"``,
        ``"numpy"`` (the reference) or ``"cuda"``; see :func:`fastlstm.available_backends`.
        A :class:`fastlstm.backends.Backend` from :func:`fastlstm.backends.get_backend`
        is used as it is (resolved once by a caller that runs many layers).
    return_cache : bool, default False
        Also return the cache :func:`dynamic_rnn_backward` needs.
    compute_dtype : {None, "float32", "bfloat16"}, default None
        The products' arithmetic. None (or ``"float32"`` for a float32 cell): the
        cell's dtype. ``"bfloat16"`` (float32 cells; Keras's mixed precision): every
        product (input projection, recurrence, and in the backward the recurrent,
        weight and input gradients) multiplies operands rounded to bfloat16 (to nearest
        even) and sums in float32; the state, the gate math and the results stay
        float32. On CPUs with AVX512-BF16 every cell's recurrence runs on its own
        bfloat16 kernels (``backend="cython"``); other backends and CPUs run a NumPy
        emulation of the same arithmetic, which is slow. The backward uses the
        forward's compute dtype (it is kept in the cache). A ``Backend`` passed as
        ``backend`` with ``compute_dtype=None`` keeps its own (``Backend.computing``).

    Returns
    -------
    outputs : ndarray, shape (B, T, H), or (T, B, H) when ``time_major``
    state : LSTMStateTuple (c, h) of (B, H) arrays, or an (B, H) array for the RNN and GRU
    cache : RNNCache
        Only with ``return_cache=True``.

    Raises
    ------
    ValueError
        On any malformed argument, naming it; nothing is computed then.
    """
    return _dynamic_rnn(cell, inputs, sequence_length, initial_state, time_major, backend,
                        return_cache, compute_dtype=compute_dtype)


def _dynamic_rnn(cell, inputs, sequence_length, initial_state, time_major, backend,
                 return_cache, keep_outputs=True, compute_dtype=None):
    """:func:`dynamic_rnn`; ``keep_outputs=False`` returns ``None`` for the outputs of a
    training forward (a network's last layer read out at its final state does not need
    them: their copy was 1.8 MB per batch of the seed's model)."""
    _check_cell(cell)
    be = get_backend(backend)
    if compute_dtype is not None:   # None: a Backend passed in keeps its own products
        be = be.computing(check_compute_dtype(compute_dtype, cell.dtype))
    elif be.compute_dtype is not None:
        check_compute_dtype(be.compute_dtype, cell.dtype)
    if cell.kind not in be.cells:
        raise ValueError(f"backend {be.name!r} has no kernels for {cell.kind!r} cells "
                         f"(it runs {sorted(be.cells)})")
    # batch-major inputs stay a transposed view for the fused inference, which reads them
    # through their strides; everything else gets the time-major copy
    x = _check_inputs(cell, inputs, bool(time_major), contiguous=False)
    T, B, I = x.shape
    H, GH = cell.num_units, cell.n_gates * cell.num_units
    seq_len = _check_sequence_length(sequence_length, T, B)
    if initial_state is None:
        c0 = _zero_state(B, H, cell.dtype) if cell.state_is_tuple else None
        h0 = np.zeros((B, H), cell.dtype)            # only read
    else:
        c0, h0 = _check_state(cell, initial_state, B, "initial_state")

    p = cell.params
    n_threads = kernel_threads()
    rec = _recurrences.for_cell(cell)
    # A backend may compute x W_x + b inside its recurrence (Backend.fuses_input)
    fuse_input = be.fuses_input(cell.kind, cell.dtype, B, I, H)
    if fuse_input and be.fused_inference and not return_cache and T > 0:
        return _infer_fused(be, cell, x, seq_len, h0, c0, bool(time_major), n_threads,
                            full=sequence_length is None,
                            keep_outputs=keep_outputs)  # 0 steps: the generic path
    if not x.flags.c_contiguous:           # a transposed view of batch-major inputs
        x = be.swapped(x.transpose(1, 0, 2), n_threads)
    if not fuse_input:
        xproj = be.gemm.matmul(x.reshape(T * B, I), p["kernel"], n_threads,
                               out=scratch("xproj", (T * B, GH), cell.dtype), bias=p["bias"])
        xproj = xproj.reshape(T, B, GH)

    # The history goes to the cache (recycled buffers) or, without a cache, is scratch;
    # see _workspace: fresh buffers cost page faults. The kernels write only existing
    # steps, so what is read past a sequence's end is zeroed (_zero_tails): hs (outputs,
    # dW_h) and what the kind's gradients sum over; everything for a backend whose
    # kernels compute every row and mask (the reference).
    zero_all = be.needs_zeroed_history(cell.kind)

    def buffer(name, shape, history=False):
        if return_cache:
            arr = recycled(shape, cell.dtype, zero=zero_all)
        else:
            arr = scratch(name, shape, cell.dtype, zero=zero_all)
        if history and not zero_all:
            _zero_tails(arr[1:] if name in ("hs", "cs") else arr, seq_len)
        return arr

    hs = buffer("hs", (T + 1, B, H), history=True)
    hs[0] = h0
    hist = {name: buffer(name, shape, zero_tails)
            for name, (shape, zero_tails) in rec.history(cell, T, B, return_cache).items()}
    if "cs" in hist:
        hist["cs"][0] = c0
    cache = RNNCache(be, bool(time_major), _signature(cell), x, seq_len, hs, hist)
    if fuse_input:
        be.fused("lstm_forward_input")(x, p["kernel"], p["bias"],
                                       *rec.kernel_arguments(cell, seq_len, hs, hist,
                                                             n_threads))
    else:
        rec.forward(be, cell, xproj, seq_len, hs, hist, n_threads)

    outputs = None
    if keep_outputs or not return_cache:
        outputs = hs[1:].copy() if time_major else be.swapped(hs[1:], n_threads)
    batch = np.arange(B)
    h_final = hs[seq_len, batch]           # fancy indexing copies: the state at step L_b
    state = (LSTMStateTuple(hist["cs"][seq_len, batch], h_final) if cell.state_is_tuple
             else h_final)
    if return_cache:
        return outputs, state, cache
    return outputs, state


#: An empty (0, 0, 0) array per dtype: "no history" for the kernels' optional outputs.
_NO_HISTORY = {np.dtype(t): np.empty((0, 0, 0), t) for t in (np.float32, np.float64)}


def _infer_fused(be, cell, x, seq_len, h0, c0, time_major, n_threads, full=False,
                 keep_outputs=True):
    """:func:`dynamic_rnn` without a cache on a backend whose LSTM step computes the input
    projection and can write the outputs in the caller's layout (``lstm_infer_input``).
    ``full``: every sequence has all T steps (no tails to zero, the last step is the
    final one; ~5 us less of a ~80 us B=1 call). ``keep_outputs=False`` (a network's last
    layer read out at its final state) writes the outputs to a reused buffer and returns
    ``None`` for them: a fresh (T, B, H) array per batch faulted its pages in again
    wherever malloc returns freed memory to the OS at once (dask's workers set
    ``MALLOC_TRIM_THRESHOLD_=65536``)."""
    T, B, _ = x.shape
    H, p = cell.num_units, cell.params
    shape = (T, B, H) if time_major else (B, T, H)
    out = (aligned_empty(shape, cell.dtype) if keep_outputs
           else scratch("infer_outputs", shape, cell.dtype))
    clip = cell.cell_clip or 0.0
    c_unclipped = (scratch("c_unclipped", (T, B, H), cell.dtype) if clip > 0
                   else _NO_HISTORY[cell.dtype])
    c_state = c0             # a fresh, aligned array: becomes the final cell state
    be.fused("lstm_infer_input")(x, p["kernel"], p["bias"], p["recurrent_kernel"],
                                 _recurrences.peepholes(cell),
                                 cell.use_peepholes, cell.forget_bias, clip, seq_len, h0,
                                 c_state, out, not time_major, c_unclipped, n_threads)
    if full and T > 0:
        h_final = (out[-1] if time_major else out[:, -1]).copy()
    else:
        _zero_tails(out, seq_len, time_major)  # outputs past each end are zero
        batch = np.arange(B)
        last = np.maximum(seq_len - 1, 0)
        h_final = out[last, batch] if time_major else out[batch, last]
        h_final = np.where((seq_len > 0)[:, None], h_final, h0)
    return (out if keep_outputs else None), LSTMStateTuple(c_state, h_final)


_zero_buffers = {}


def _zeros(size, dtype):
    """A read-only 1-D array of ``size`` zeros, shared between calls (a network's last
    layer gets no output gradient, only a state gradient: a fresh (T, B, H) zero array
    per step cost its allocation and page faults)."""
    dtype = np.dtype(dtype)
    buf = _zero_buffers.get(dtype)
    if buf is None or buf.size < size:
        buf = np.zeros(max(size, 1), dtype)
        buf.flags.writeable = False
        _zero_buffers[dtype] = buf
    return buf[:size]




def _existing_rows(seq_len, n_steps):
    """Time-major row indices (t * B + b) of the steps that exist, or None when (almost)
    all do."""
    B = seq_len.shape[0]
    n_existing = int(seq_len.sum())
    if n_existing > _thresholds.MAX_SHARE_FOR_GATHER * n_steps * B:
        return None
    return np.flatnonzero((np.arange(n_steps)[:, None] < seq_len[None, :]).ravel())


def _zero_tails(arr, seq_len, time_major=True):
    """Zero ``arr`` (T, B, ...) or, with ``time_major=False``, (B, T, ...) at the steps
    past each sequence's end: one slice per short sequence, only those rows."""
    n_steps = arr.shape[0] if time_major else arr.shape[1]
    for b in np.flatnonzero(seq_len < n_steps):           # the short sequences
        if time_major:
            arr[seq_len[b]:, b] = 0
        else:
            arr[b, seq_len[b]:] = 0


@_under_one_blas_limit
def dynamic_rnn_backward(cell, cache, d_outputs, d_state=None, *, input_gradient=True):
    """Gradients of a loss through :func:`dynamic_rnn` (backpropagation through time).

    Parameters
    ----------
    cell : the cell passed to the forward call (same sizes, dtype and options)
    cache : RNNCache
        From ``dynamic_rnn(..., return_cache=True)``.
    d_outputs : array-like, shape of the forward outputs, or None
        dLoss/d outputs; ``None`` means zero. Values at steps past a sequence's end do
        not contribute (those outputs are constant zeros) and are not read; NaN or inf
        anywhere else raises ``ValueError``.
    d_state : like the forward state, or None
        dLoss/d final state; ``LSTMStateTuple(dc, dh)`` for LSTM cells.
    input_gradient : bool, default True
        Compute ``"inputs"``; a first layer, whose inputs are data, does not need it
        (it is one GEMM as large as the input projection).

    Returns
    -------
    dict
        ``"inputs"`` (shape of the forward inputs; only with ``input_gradient``),
        ``"initial_state"`` (structure of the state) and one entry per key of
        ``cell.params`` (same shape).
    """
    _check_cell(cell)
    if not isinstance(cache, RNNCache):
        raise ValueError(f"cache must come from dynamic_rnn(..., return_cache=True), "
                         f"got {type(cache).__name__}")
    if cache.cell_signature != _signature(cell):
        raise ValueError("cell does not match the cell of the forward pass "
                         f"(forward {cache.cell_signature}, now {_signature(cell)})")
    be = cache.backend
    x, seq_len = cache.x, cache.seq_len
    T, B, I = x.shape
    H, GH = cell.num_units, cell.n_gates * cell.num_units
    out_shape = (T, B, H) if cache.time_major else (B, T, H)
    if d_outputs is None:
        d_out = _zeros(T * B * H, cell.dtype).reshape(T, B, H)
    else:
        d_out = np.asarray(d_outputs)
        if d_out.shape != out_shape:
            raise ValueError(f"d_outputs must have the outputs' shape {out_shape}, "
                             f"got {d_out.shape}")
        if not cache.time_major:
            d_out = d_out.transpose(1, 0, 2)
        strided = cell.kind == "lstm" and be.strided_d_outputs
        # checked for NaN and inf after the backward, through the bias gradient, which
        # sums every dz the output gradients reach: checking these 1.8 MB first (cold in
        # cache after the forward) was 0.18 ms, 3% of a seed-size training step
        d_out = _as_float_array(d_out, "d_outputs", cell.dtype, contiguous=not strided,
                                check_finite=False)
    if d_state is None:
        dc = np.zeros((B, H), cell.dtype) if cell.state_is_tuple else None
        dh = np.zeros((B, H), cell.dtype)
    else:
        dc, dh = _check_state(cell, d_state, B, "d_state")

    p = cell.params
    n_threads = kernel_threads()
    rec = _recurrences.for_cell(cell)
    dz = scratch("dz", (T, B, GH), cell.dtype, zero=be.needs_zeroed_history(cell.kind))
    rows = _existing_rows(seq_len, T)
    if rows is None or rec.reads_dz_past_the_ends(cell):   # else nothing reads dz there
        _zero_tails(dz, seq_len)
    rec.backward(be, cell, cache, d_out, dh, dc, dz, n_threads)

    # Everything below sums over all steps at once: large GEMMs, not per-step work; over
    # the steps that exist only where rows is not None (see _existing_rows).
    grads = rec.parameter_gradients(be, cell, cache, dz, rows, n_threads)
    if d_outputs is not None and not np.all(np.isfinite(grads["bias"])):
        _check_finite(d_out, "d_outputs")   # else the gradients overflowed: returned as are
    if input_gradient:
        grads["inputs"] = be.gemm.input_gradient(dz.reshape(T * B, GH), p["kernel"], rows,
                                                 T, B, cache.time_major, n_threads)
    grads["initial_state"] = LSTMStateTuple(dc, dh) if cell.state_is_tuple else dh
    return grads
