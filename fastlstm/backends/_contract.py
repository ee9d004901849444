"""The backend contract: what a backend declares, and the object the layers are handed.

A backend is a module (``fastlstm/backends/<name>_backend.py``) that declares:

``NAME``
    Its name, which says what runs: ``"numpy"`` the reference, ``"numba"`` @njit kernels
    and BLAS, ``"cython"`` the compiled OpenMP kernels and their GEMM tiles, ``"cuda"``
    numba.cuda kernels.
``CELLS``
    The cell kinds (keys of :data:`fastlstm._layout.KINDS`) it has kernels for: for each,
    ``<kind>_forward`` and ``<kind>_backward`` with the signatures of
    :mod:`fastlstm.reference`.
``GEMM_KERNELS``
    What runs the layer's large products (the input projection before the recurrence,
    the weight and input gradients after it; :mod:`fastlstm._gemm`): ``None`` for BLAS
    blocks on a thread pool, ``"compiled"`` for the compiled extension's blocks and
    tiles, or a module of the backend's own with ``gemm_blocks`` (the numba backend's
    :mod:`._numba_gemm`, BLAS blocks on its own threads).

and optionally ``BF16_CELLS`` (the kinds whose kernels, and ``lstm_forward_input`` and
``lstm_infer_input``, take ``bf16=True`` for bfloat16 products on
this CPU; every other kind is emulated: :mod:`._bf16_emulation`), ``NEEDS_ZEROED_HISTORY``
(its kernels write every row of the history and of ``dz``, masked, and need them zeroed),
``LSTM_BACKWARD_STRIDED_D_OUTPUTS`` (its ``lstm_backward`` reads ``d_outputs`` through
their strides), ``swap_leading_axes`` (a threaded ``(T, B, X) <-> (B, T, X)`` copy) and the
fused LSTM paths ``fuses_input``, ``lstm_forward_input`` and ``lstm_infer_input``.
:class:`Backend` gives every optional part a default, so the layers never ask for a
backend by name or probe it.
"""

import functools

import numpy as np

from .. import _gemm


class Backend:
    """A backend, resolved once (per call of :func:`fastlstm.dynamic_rnn`, per fit of an
    estimator) and passed down.

    Parameters
    ----------
    module : module
        The backend module (see the module docstring for what it declares).

    Attributes
    ----------
    name : str
    cells : frozenset of str
        Cell kinds with kernels.
    gemm : fastlstm._gemm.Gemm
        The layer's large products.
    needs_zeroed_history : bool
    strided_d_outputs : bool
    fused_inference : bool
        ``lstm_infer_input`` exists (inference without a history, outputs written in the
        caller's layout).
    compute_dtype : str or None
        ``"bfloat16"`` for the variant of :meth:`computing`; None: products in the
        parameters' dtype.
    """

    def __init__(self, module, compute_dtype=None):
        self.module = module
        self.name = module.NAME
        self.cells = frozenset(module.CELLS)
        self.compute_dtype = compute_dtype
        bf16 = compute_dtype == "bfloat16"
        # bfloat16: the kinds with kernels of their own here, the rest emulated
        self._native = frozenset(getattr(module, "BF16_CELLS", ()) if bf16 else self.cells)
        self.gemm = (_gemm.BFloat16Gemm if bf16 else _gemm.Gemm)(module.GEMM_KERNELS)
        self._zeroed = getattr(module, "NEEDS_ZEROED_HISTORY", False)
        self.strided_d_outputs = getattr(module, "LSTM_BACKWARD_STRIDED_D_OUTPUTS", False)
        self.fused_inference = hasattr(module, "lstm_infer_input") and "lstm" in self._native
        self._fuses_input = (getattr(module, "fuses_input", None)
                             if "lstm" in self._native else None)
        self._swap = getattr(module, "swap_leading_axes", None)
        self._variants = {}

    def __repr__(self):
        products = f", {self.compute_dtype} products" if self.compute_dtype else ""
        return f"<fastlstm backend {self.name!r}: cells {sorted(self.cells)}{products}>"

    def computing(self, compute_dtype):
        """This backend with ``compute_dtype`` products (``"bfloat16"``), or itself for
        None; made once per backend and kept."""
        if compute_dtype == self.compute_dtype:
            return self
        if compute_dtype is None:
            from . import get_backend
            return get_backend(self.name)
        if compute_dtype not in self._variants:
            self._variants[compute_dtype] = Backend(self.module, compute_dtype)
        return self._variants[compute_dtype]

    def emulates(self, kind):
        """True when ``kind``'s recurrence runs the NumPy emulation of this backend's
        compute dtype (:mod:`._bf16_emulation`), not kernels of this backend."""
        return kind not in self._native

    def needs_zeroed_history(self, kind):
        """Whether ``kind``'s kernels here write every row, masked, and need the history
        and ``dz`` zeroed first."""
        return self._zeroed or self.emulates(kind)

    def _products(self, fn):
        """``fn`` of the module, with ``bf16=True`` for the bfloat16 variant."""
        return functools.partial(fn, bf16=True) if self.compute_dtype else fn

    def fused(self, name):
        """The fused LSTM path ``name`` (``"lstm_forward_input"``, ``"lstm_infer_input"``),
        with bfloat16 products for the bfloat16 variant."""
        return self._products(getattr(self.module, name))

    def kernel(self, kind, direction):
        """The ``<kind>_<direction>`` kernel (``direction``: "forward" or "backward").

        Raises
        ------
        ValueError
            This backend has no kernels for ``kind``.
        """
        if kind not in self.cells:
            raise ValueError(f"backend {self.name!r} has no kernels for {kind!r} cells "
                             f"(it runs {sorted(self.cells)})")
        name = f"{kind}_{direction}"
        if self.emulates(kind):
            from . import _bf16_emulation
            return getattr(_bf16_emulation, name)
        return self._products(getattr(self.module, name))

    def fuses_input(self, kind, dtype, batch_size, input_size, num_units):
        """Whether the LSTM step computes ``x W_x + b`` itself at these sizes (the
        ``lstm_forward_input`` path, with either compute dtype); False for every other
        kind and backend, and for an emulated LSTM."""
        return (kind == "lstm" and self._fuses_input is not None
                and self._fuses_input(dtype, batch_size, input_size, num_units))

    def swapped(self, src, n_threads):
        """A C-contiguous copy of ``src.transpose(1, 0, 2)`` (``src``'s last axis
        contiguous): by the backend's threads where it has them, else NumPy's copy."""
        if self._swap is None or src.dtype not in (np.float32, np.float64):
            return np.ascontiguousarray(src.transpose(1, 0, 2))
        out = np.empty((src.shape[1], src.shape[0], src.shape[2]), src.dtype)
        self._swap(src, out, n_threads)
        return out

