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
    blocks, ``"compiled"`` for the compiled extension's blocks and tiles.

and optionally ``NEEDS_ZEROED_HISTORY`` (its kernels write every row of the history and
of ``dz``, masked, and need them zeroed), ``LSTM_BACKWARD_STRIDED_D_OUTPUTS`` (its
``lstm_backward`` reads ``d_outputs`` through their strides), ``swap_leading_axes``
(a threaded ``(T, B, X) <-> (B, T, X)`` copy) and the fused LSTM paths ``fuses_input``,
``lstm_forward_input`` and ``lstm_infer_input``. :class:`Backend` gives every optional
part a default, so the layers never ask for a backend by name or probe it.
"""

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
    """

    def __init__(self, module):
        self.module = module
        self.name = module.NAME
        self.cells = frozenset(module.CELLS)
        self.gemm = _gemm.Gemm(module.GEMM_KERNELS)
        self.needs_zeroed_history = getattr(module, "NEEDS_ZEROED_HISTORY", False)
        self.strided_d_outputs = getattr(module, "LSTM_BACKWARD_STRIDED_D_OUTPUTS", False)
        self.fused_inference = hasattr(module, "lstm_infer_input")
        self._fuses_input = getattr(module, "fuses_input", None)
        self._swap = getattr(module, "swap_leading_axes", None)

    def __repr__(self):
        return f"<fastlstm backend {self.name!r}: cells {sorted(self.cells)}>"

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
        return getattr(self.module, f"{kind}_{direction}")

    def fuses_input(self, kind, dtype, batch_size, input_size, num_units):
        """Whether the LSTM step computes ``x W_x + b`` itself at these sizes (the
        ``lstm_forward_input`` path); False for every other kind and backend."""
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
