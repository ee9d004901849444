"""Thread count of the kernels, and a scoped single-threaded BLAS.

``fastlstm.threads(n)`` sets how many threads the compiled kernels (and the GEMMs that
:func:`fastlstm.dynamic_rnn` runs around them) use, restoring the previous value on exit.
"""

import contextlib
import numbers
import os
import threading

_state = threading.local()


def default_num_threads():
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:            # not Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads the kernels use now: the innermost :func:`threads` setting, else all cores."""
    n = getattr(_state, "n_threads", None)
    return default_num_threads() if n is None else n


def check_n_threads(n, name="n"):
    """Validate a thread count: a positive int, or None / -1 for all cores."""
    if n is None or (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n == -1):
        return default_num_threads()
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive integer, -1 or None, got {n!r}")
    return int(n)


@contextlib.contextmanager
def threads(n):
    """Run the enclosed fastlstm calls with ``n`` kernel threads.

    Parameters
    ----------
    n : int or None
        Positive thread count; ``None`` or ``-1`` mean all cores.

    Examples
    --------
    >>> import fastlstm as fl
    >>> with fl.threads(1):
    ...     fl.get_num_threads()
    1

    The previous setting comes back on exit, also when the block raises.
    """
    n = check_n_threads(n)
    previous = getattr(_state, "n_threads", None)
    _state.n_threads = n
    try:
        yield n
    finally:
        _state.n_threads = previous


_controller = None
_controller_lock = threading.Lock()


def _blas_controller():
    # Built once: inspecting the loaded libraries costs milliseconds. SciPy's BLAS (which
    # the compiled kernels call per step) is imported first so that it is seen.
    global _controller
    with _controller_lock:
        if _controller is None:
            import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's OpenBLAS)
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_threads(n):
    """Context manager limiting every loaded BLAS to ``n`` threads.

    Nested uses with the same ``n`` cost nothing: the outermost one holds the limit. Why:
    restoring OpenBLAS to several threads wakes its worker threads, which then spin on
    the cores the kernels use (measured: in a seed-model fit, GEMMs of 4 MFLOP took
    130-200 us with a limit per GEMM, 50-70 us under one limit around the whole fit).
    The libraries' own get/set calls are used directly (threadpoolctl's ``limit()`` cost
    ~30 us per use, a quarter of a B=1 forward), and a library already at ``n`` is left
    alone.
    """
    held = getattr(_state, "blas_limit", None)
    if held == n:
        yield
        return
    libs = [lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    previous = [lib.num_threads for lib in libs]
    for lib, p in zip(libs, previous):
        if p != n:
            lib.set_num_threads(n)
    _state.blas_limit = n
    try:
        yield
    finally:
        _state.blas_limit = held
        for lib, p in zip(libs, previous):
            if p != n:
                lib.set_num_threads(p)
