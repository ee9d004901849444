"""The ``"cython"`` backend: OpenMP kernels compiled from ``src_cy/_recurrent.pyx``.

The kernels call SciPy's BLAS for the per-step product from inside their own parallel
region, so every call here limits BLAS to one thread for its duration.
"""

from .. import _recurrent
from .._threads import blas_threads
from ._chunking import chunk_rows

NAME = "cython"
openmp_enabled = _recurrent.openmp_enabled


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
lstm_forward = _single_threaded_blas(_recurrent.lstm_forward, 7)
lstm_backward = _single_threaded_blas(_recurrent.lstm_backward, 9)
