"""The ``"cython"`` backend: OpenMP kernels compiled from ``src_cy/_recurrent.pyx``.

The kernels call SciPy's BLAS for the per-step product from inside their own parallel
region, so every call here limits BLAS to one thread for its duration.
"""

from .. import _recurrent
from .._threads import blas_threads
import numpy as np

from ._chunking import chunk_rows, pack_fused, pack_fused_t, pack_unit_slices, unit_slices

NAME = "cython"
openmp_enabled = _recurrent.openmp_enabled
#: The fused AVX-512 float32 forward step runs on this CPU (src_cy/fused_step.h).
FUSED_STEP = _recurrent.have_fused_step()


def _single_threaded_blas(kernel, batch_axis):
    """Wrap a kernel: BLAS at one thread, and the chunk size of this batch appended."""
    def run(*args):
        with blas_threads(1):
            kernel(*args, chunk_rows(args[batch_axis].shape[-2]))
    run.__name__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run


# The argument whose second-to-last axis is the batch: hs / dh in the contract.
rnn_forward = _single_threaded_blas(_recurrent.rnn_forward, 3)
rnn_backward = _single_threaded_blas(_recurrent.rnn_backward, 4)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1):
    """LSTM recurrence; see :func:`fastlstm.reference.lstm_forward`.

    Batches of one chunk split the hidden units over the cores instead of the batch.
    """
    fused = FUSED_STEP and W.dtype == np.float32
    plan = unit_slices(hs.shape[1], hs.shape[2], fused)
    if plan is None:
        with blas_threads(1):
            _recurrent.lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias,
                                    cell_clip, seq_len, hs, cs, acts, c_unclipped, n_threads,
                                    chunk_rows(hs.shape[1], fused),
                                    pack_fused(W) if fused else None)
        return
    n_slices, width = plan
    with blas_threads(1):
        _recurrent.lstm_forward_units(xproj, pack_unit_slices(W, n_slices, width), peepholes,
                                      use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                                      acts, c_unclipped, n_threads, width)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1):
    """Backward of the LSTM; see :func:`fastlstm.reference.lstm_backward`."""
    fused = FUSED_STEP and W.dtype == np.float32
    plan = unit_slices(dh.shape[0], dh.shape[1], fused)
    if plan is None:
        with blas_threads(1):
            _recurrent.lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts,
                                     c_unclipped, d_outputs, dh, dc, dz, n_threads,
                                     chunk_rows(dh.shape[0], fused),
                                     pack_fused_t(W) if fused else None)
        return
    n_slices, width = plan
    with blas_threads(1):
        _recurrent.lstm_backward_units(W, peepholes, use_peepholes, cell_clip, seq_len, cs,
                                       acts, c_unclipped, d_outputs, dh, dc, dz, n_threads,
                                       n_slices, width)
