"""The ``"cython"`` backend: OpenMP kernels compiled from ``src_cy/_recurrent.pyx``.

The kernels call SciPy's BLAS for the per-step product from inside their own parallel
region, so every call here limits BLAS to one thread for its duration.
"""

from .. import _recurrent
from .._threads import blas_threads

NAME = "cython"
openmp_enabled = _recurrent.openmp_enabled


def _single_threaded_blas(kernel):
    def run(*args):
        with blas_threads(1):
            kernel(*args)
    run.__name__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run


rnn_forward = _single_threaded_blas(_recurrent.rnn_forward)
rnn_backward = _single_threaded_blas(_recurrent.rnn_backward)
lstm_forward = _single_threaded_blas(_recurrent.lstm_forward)
lstm_backward = _single_threaded_blas(_recurrent.lstm_backward)
