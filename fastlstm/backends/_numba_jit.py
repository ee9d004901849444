"""The jit options of every Numba kernel of fastlstm, in one place."""

import os

import numba
from numba import njit

#: The one fastmath setting of the project: contraction to FMA, reciprocal, no signed
#: zeros. Never ``nnan`` / ``ninf``: the kernels must see and keep NaN and inf.
FASTMATH = {"contract", "arcp", "nsz"}
#: ``FASTLSTM_NUMBA_CACHE=1`` caches the compiled kernels on disk.
CACHE = os.environ.get("FASTLSTM_NUMBA_CACHE", "0") not in ("", "0")

# error_model="numpy": a float division is IEEE's (no zero test raising Python's
# ZeroDivisionError), which is what lets LLVM vectorize the gate math's loops.
kernel = njit(nogil=True, fastmath=FASTMATH, cache=CACHE, error_model="numpy")
parallel_kernel = njit(nogil=True, fastmath=FASTMATH, cache=CACHE, parallel=True,
                       error_model="numpy")


def on_threads(n_threads, fn, *args):
    """``fn(*args)`` with Numba's parallel regions on ``n_threads`` threads (at most
    Numba's pool; the count put back after). Every parallel kernel runs through here: one
    left at Numba's default count waits, on a machine whose other core is busy, for a
    thread that has no core (a single sequence's pack of W_h: 7 ms a call against 4.5)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(previous)


def compile_for(dispatcher, *args):
    """Compile ``dispatcher`` for the types of ``args`` without running it (a lookup when
    it is compiled already): for a schedule that a later call may take, so that the
    compile does not land on that call."""
    dispatcher.compile(tuple(numba.typeof(a) for a in args))
