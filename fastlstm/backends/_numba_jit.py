"""The jit options of every Numba kernel of fastlstm, in one place, and their disk cache.

Compiling the Numba backend's kernels for one call takes seconds (15 s for an LSTM's
first training call on a 2-core AMD EPYC Zen 4), paid again by every fresh process, so
the compiled kernels are cached on disk: that call takes 0.3 s in the next process.
``FASTLSTM_NUMBA_CACHE=0`` (or ``off``) turns the cache off. Numba keys a cached kernel
to its own source file only, while fastlstm's kernels inline code and constants from
other modules; so the cache lives in a directory named by a digest of all of fastlstm's
sources and of Numba's version: any change of either is a fresh directory, never a stale
kernel. The directory is under the user's cache folder (``~/.cache/fastlstm`` on Linux),
or under ``NUMBA_CACHE_DIR`` when that is set.

A loaded kernel gives the same bits as a freshly compiled one because LLVM chooses none
of the kernels' floating-point operations (:data:`FASTMATH`). With FMA contraction
allowed, float32 results of a compiling and a loading process differed in the last bit:
most likely a callee's copy linked into its caller was contracted differently from the
callee's own compiled copy, and the two processes called different copies.
"""

import hashlib
import os
import tempfile
from pathlib import Path
from types import CodeType, FunctionType

import llvmlite.binding
import numba
import numpy as np
from numba import njit, types
from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher
from numba.core.extending import _Intrinsic
from numba.misc.appdirs import AppDirs

#: The one fastmath setting of the project: no signed zeros, nothing else. Every fused
#: multiply-add is written out (``_numba_math.fma``, the tiles' IR), so that the bits of a
#: result never depend on how LLVM inlined and contracted the code around it; never
#: ``nnan`` / ``ninf`` either: the kernels must see and keep NaN and inf.
FASTMATH = {"nsz"}
#: Whether kernels are cached on disk (on unless ``FASTLSTM_NUMBA_CACHE=0``).
CACHE = (os.environ.get("FASTLSTM_NUMBA_CACHE", "1").strip().lower()
         not in ("0", "false", "no", "off"))


def sources_digest():
    """A digest of every Python source of the fastlstm package and of Numba's version."""
    digest = hashlib.sha256(numba.__version__.encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir():
    """The directory of this build's cached kernels, created; None when it cannot be
    written (the kernels are then compiled in every process, as with the cache off)."""
    root = (numba.config.CACHE_DIR
            or AppDirs(appname="fastlstm", appauthor=False).user_cache_dir)
    path = os.path.join(root, "fastlstm-numba-" + sources_digest())
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return path


_CACHE_DIR = cache_dir() if CACHE else None


def _jit(**options):
    """``njit`` with the project's options, its compiled code cached in :data:`_CACHE_DIR`
    under a key that is the same in every process (:class:`_StableKeyCache`)."""
    # error_model="numpy": a float division is IEEE's (no zero test raising Python's
    # ZeroDivisionError), which is what lets LLVM vectorize the gate math's loops.
    options = dict(nogil=True, fastmath=FASTMATH, error_model="numpy", **options)

    def decorate(fn):
        dispatcher = njit(**options)(fn)
        if _CACHE_DIR is not None:
            try:
                key = _describe(fn)
            except TypeError:                    # a closure over something not described
                return dispatcher
            previous, numba.config.CACHE_DIR = numba.config.CACHE_DIR, _CACHE_DIR
            try:                                 # the locator reads it here, once
                dispatcher._cache = _StableKeyCache(fn, key)
            finally:
                numba.config.CACHE_DIR = previous
        return dispatcher
    return decorate


class _StableKeyCache(FunctionCache):
    """Numba's function cache, keyed by a description of the function that is the same in
    every process. Numba's own key pickles a closure's variables, and a jitted function
    or intrinsic pickles with a fresh uuid in each process, so the kernels made by
    factories (tiles for a width, products for a tile shape) never hit it."""

    def __init__(self, py_func, description):
        super().__init__(py_func)
        self._description = hashlib.sha256(description.encode()).hexdigest()

    def _index_key(self, sig, codegen):
        return (sig, codegen.magic_tuple(), self._description)


def _describe(obj, _seen=None):
    """A text that names what compiled code ``obj`` stands for: a function by its name,
    bytecode, constants and (recursively) closure variables; a jitted function or
    intrinsic by its Python function. TypeError for anything else."""
    _seen = set() if _seen is None else _seen
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return repr(obj)
    if isinstance(obj, (tuple, list)):
        return "(" + ",".join(_describe(x, _seen) for x in obj) + ")"
    if isinstance(obj, CodeType):
        return (f"code {obj.co_name} {obj.co_code.hex()} {_describe(obj.co_names, _seen)}"
                f" {_describe(obj.co_consts, _seen)}")
    if isinstance(obj, FunctionType):
        if id(obj) in _seen:                     # reached again through a closure
            return "again " + obj.__qualname__
        _seen.add(id(obj))
        cells = tuple(c.cell_contents for c in obj.__closure__ or ())
        return (f"{obj.__module__}.{obj.__qualname__} {_describe(obj.__code__, _seen)} "
                f"{_describe(cells, _seen)}")
    if isinstance(obj, Dispatcher):
        return "jit " + _describe(obj.py_func, _seen)
    if isinstance(obj, _Intrinsic):
        return "intrinsic " + _describe(obj._defn, _seen)
    if isinstance(obj, types.Type):              # e.g. an external C function's symbol
        return f"type {obj} {getattr(obj, 'sig', '')}"
    if isinstance(obj, type) and issubclass(obj, np.generic):
        return "scalar " + obj.__name__
    raise TypeError(f"cannot describe {type(obj).__name__} for the kernel cache")


kernel = _jit()
parallel_kernel = _jit(parallel=True)


def external_function(name, address, signature):
    """The C function at ``address`` as a Numba callable of ``signature``, bound by
    symbol name: a kernel that calls it can be cached (a ctypes function pointer is a
    constant of the compiled code, which Numba cannot cache)."""
    llvmlite.binding.add_symbol(name, address)
    return types.ExternalFunction(name, signature)


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
