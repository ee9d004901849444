"""The jit options of every Numba kernel of fastlstm, in one place."""

import os

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
