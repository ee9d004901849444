"""The ``"numpy"`` backend: the reference recurrences themselves (always available)."""

from ..reference import (gru_backward, gru_forward, lstm_backward, lstm_forward,  # noqa: F401
                         rnn_backward, rnn_forward)

NAME = "numpy"
#: Cell kinds with kernels here.
CELLS = ("rnn", "lstm", "gru")
#: The reference computes every row at every step and masks: its history buffers and dz
#: must start at zero (the compiled kernels write only the steps that exist).
NEEDS_ZEROED_HISTORY = True
#: Its layer GEMMs: BLAS blocks on a thread pool (fastlstm._gemm with kernels=None).
GEMM_KERNELS = None
