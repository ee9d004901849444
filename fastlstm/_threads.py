"""Thread count of the kernels, and a scoped single-threaded BLAS.

``fastlstm.threads(n)`` sets how many threads the compiled kernels (and the GEMMs that
:func:`fastlstm.dynamic_rnn` runs around them) use, restoring the previous value on exit.
Unset, they use the cores this process may run on, capped by OpenMP's limit (as joblib's
workers set it), less the cores other processes keep busy (:mod:`fastlstm._governor`),
and one thread in a process forked after threads ran (GNU OpenMP hangs there otherwise).
:func:`blas_threads` holds BLAS at one thread for the whole process while any thread
computes.
"""

import contextlib
import numbers
import os
import threading
import warnings

from . import _governor

_state = threading.local()


def default_num_threads():
    """Cores this process may run on (its CPU affinity), at least 1. The kernels' schedules
    (batch chunks, hidden-unit slices) follow this count, never the threads requested,
    so that results do not depend on the thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:            # not Linux
        return max(1, os.cpu_count() or 1)


_kernels = None


def _openmp_limit():
    """The OpenMP thread limit of the calling thread (``omp_get_max_threads`` of the
    compiled kernels' runtime: ``OMP_NUM_THREADS``, or what threadpoolctl set, as joblib
    does in its workers), or None without the compiled kernels or OpenMP."""
    kernels = _compiled_kernels()
    return (kernels.openmp_max_threads() or None) if kernels else None


def _compiled_kernels():
    """The compiled kernels' module, or False where it is not built."""
    global _kernels
    if _kernels is None:
        try:
            from . import _recurrent as _kernels
        except ImportError:
            _kernels = False
    return _kernels


def _default_threads():
    """Threads when none are requested: the cores, capped by the OpenMP limit (as
    scikit-learn's OpenMP estimators do). Two processes of two threads each on two cores
    -- GridSearchCV(n_jobs=2), whose workers joblib starts with OMP_NUM_THREADS=1 --
    fitted the seed's model 2-3x slower than with one thread each (0.8-0.9 s against 0.3
    for 1,024 sequences, 3 epochs): the spinning threads wait on descheduled ones."""
    cores = default_num_threads()
    limit = _openmp_limit()
    return cores if limit is None else max(1, min(cores, limit))


# GNU OpenMP cannot start a team in a process forked after its threads started: the
# child's first parallel region of two or more threads waits for ever on the parent's
# workers, which do not exist there (seen: a fit in a multiprocessing "fork" worker hung
# after the parent had fitted; one thread ran). So a child forked after threads ran
# runs the kernels on one thread.
_threads_ran = False            # this process asked for more than one thread
_forked_after_threads = False   # ... and this process is a child forked after that
_said_forked = False            # the warning about it was given


def _after_fork_in_child():
    global _forked_after_threads, _controller_lock, _blas_lock, _blas_holders, _blas_restore
    _forked_after_threads = _forked_after_threads or _threads_ran
    # another thread may have held these at the fork; its holds end with it
    _controller_lock, _blas_lock = threading.Lock(), threading.Lock()
    _blas_holders, _blas_restore = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _usable(n):
    """``n`` threads, or 1 in a child forked after threads ran (with one warning)."""
    global _threads_ran, _said_forked
    if n > 1:
        if _forked_after_threads:
            if not _said_forked:
                _said_forked = True
                warnings.warn(
                    "fastlstm runs its kernels on one thread in this process: it was forked "
                    "after OpenMP threads ran, and GNU OpenMP cannot start threads again "
                    "after a fork (they would wait for ever). For threaded fits in worker "
                    "processes use the 'spawn' or 'forkserver' start method, or joblib",
                    RuntimeWarning, stacklevel=3)
            return 1
        _threads_ran = True
    return n


def get_num_threads():
    """Threads the kernels use now: the innermost :func:`threads` setting, else the cores
    this process may run on, capped by OpenMP's limit (``OMP_NUM_THREADS``,
    threadpoolctl); 1 in a process forked after threads ran (GNU OpenMP cannot start
    threads there)."""
    n = getattr(_state, "n_threads", None)
    return _usable(_default_threads() if n is None else n)


def kernel_threads():
    """Threads for the kernel call about to run: the innermost :func:`threads` setting
    (or the count a :func:`chosen_threads` block chose), else the default less the cores
    that other processes keep busy now, or one while a late kernel thread is recent
    (``_governor.late_threads``)."""
    given = getattr(_state, "n_threads", None)
    n = _usable(_governor.free_cores(_default_threads()) if given is None else given)
    late = _late_count()
    if late is None:
        return n
    if n > _team_size[0]:               # the first call that may use n threads
        _team_size[0] = n
        _compiled_kernels().start_threads(n)
    return _governor.late_threads.look(late, n, given is not None)


#: The largest thread count the compiled kernels' OpenMP runtime has started.
_team_size = [1]


def _late_count():
    """The compiled kernels' count of late threads (``_recurrent.late_count``), or None
    without them."""
    kernels = _compiled_kernels()
    return kernels.late_count() if kernels else None


@contextlib.contextmanager
def chosen_threads(key):
    """Run the enclosed work -- one of many alike, such as a fit's batches -- on the
    threads that :class:`fastlstm._governor.ThreadChooser` chooses for ``key`` (the
    free cores, or one thread where that was faster), when no count was asked for."""
    if getattr(_state, "n_threads", None) is not None:
        yield
        return
    with _governor.timed_choice(_governor.chooser(key), kernel_threads()) as n:
        _state.n_threads = n
        try:
            yield
        finally:
            _state.n_threads = None


def check_n_threads(n, name="n"):
    """Validate a thread count: a positive int, None (the default: the cores, capped by
    OpenMP's limit) or -1 (all cores, whatever the limit)."""
    if n is None:
        return _default_threads()
    if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n == -1:
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
        Positive thread count; ``None``: the default (the cores this process may run
        on, capped by ``OMP_NUM_THREADS`` or a threadpoolctl limit, less those that
        other processes keep busy; for a fit's batches, one thread where that is
        measured to be faster); ``-1``: all of those cores, whatever the limit. A count
        given is used as given.

    Examples
    --------
    >>> import fastlstm as fl
    >>> with fl.threads(1):
    ...     fl.get_num_threads()
    1

    The previous setting comes back on exit, also when the block raises.
    """
    asked = n
    n = check_n_threads(n)
    previous = getattr(_state, "n_threads", None)
    _state.n_threads = None if asked is None else n     # None: the adaptive default
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


# One BLAS limit for the whole process: the libraries' thread count is process-wide, so
# a limit that each Python thread set and restored on its own was undone by one thread
# while another still computed (concurrent fits in four threads: 1-3 of 180 weight
# gradients took other bits, run on two BLAS threads). The first holder sets it, the last
# one out restores it.
_blas_lock = threading.Lock()
_blas_holders = 0
_blas_restore = None            # what the last holder out puts back


@contextlib.contextmanager
def blas_threads(n):
    """Context manager limiting every loaded BLAS to ``n`` threads, process-wide.

    Nested uses in one thread cost nothing: the outermost one holds the limit. Across
    threads, the first holder sets the limit and the last one out restores the previous
    counts (a holder asking for another ``n`` meanwhile gets the one in force). Why hold
    it: restoring OpenBLAS to several threads wakes its worker threads, which then spin
    on the cores the kernels use (measured: in a seed-model fit, GEMMs of 4 MFLOP took
    130-200 us with a limit per GEMM, 50-70 us under one limit around the whole fit).
    The libraries' own get/set calls are used directly (threadpoolctl's ``limit()`` cost
    ~30 us per use, a quarter of a B=1 forward), and a library already at ``n`` is left
    alone.
    """
    global _blas_holders, _blas_restore
    held = getattr(_state, "blas_limit", None)
    if held is not None:
        yield
        return
    with _blas_lock:
        if _blas_holders == 0:
            _blas_restore = _set_blas_threads(n)
        _blas_holders += 1
    _state.blas_limit = n
    try:
        yield
    finally:
        _state.blas_limit = held
        with _blas_lock:
            if _blas_holders > 0:         # 0: a hold from before a fork, reset there
                _blas_holders -= 1
                if _blas_holders == 0:
                    _blas_restore()
                    _blas_restore = None


def _set_blas_threads(n):
    """Set every loaded BLAS to ``n`` threads; returns the function that restores them.
    OpenBLAS (0.3.30) ignores its usual setter when called off the main thread (a product
    limited to one thread there ran on two, with other bits than on the main thread); its
    ``openblas_set_num_threads_local`` is obeyed from any thread (and acts process-wide
    there), so off the main thread it is set alongside."""
    libs = [lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    previous = [lib.num_threads for lib in libs]
    for lib, p in zip(libs, previous):
        if p != n:
            lib.set_num_threads(n)
    local = [] if threading.current_thread() is threading.main_thread() else _local_setters()
    local_previous = [set_local(n) for set_local in local]

    def restore():
        for lib, p in zip(libs, previous):
            if p != n:
                lib.set_num_threads(p)
        for set_local, p in zip(local, local_previous):
            set_local(p)
    return restore


_local_setters_found = None


def _local_setters():
    """``openblas_set_num_threads_local`` of every loaded OpenBLAS that has it (0.3.26+):
    sets the calling thread's own limit, returns the previous one."""
    global _local_setters_found
    if _local_setters_found is None:
        import ctypes
        found = []
        for lib in _blas_controller().lib_controllers:
            fn = getattr(getattr(lib, "dynlib", None), "openblas_set_num_threads_local",
                         None) if lib.user_api == "blas" else None
            if fn is not None:
                fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
                found.append(fn)
        _local_setters_found = found
    return _local_setters_found
