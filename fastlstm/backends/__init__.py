"""Interchangeable implementations of the kernel contract of :mod:`fastlstm.reference`.

:func:`get_backend` resolves a name once into a :class:`Backend` (the contract object of
``_contract``: what a backend module declares, with defaults for what it leaves out),
which the layers are handed. Backends are imported lazily: ``import fastlstm`` compiles
and loads nothing.
"""

import importlib

from ._contract import Backend

#: Backends in the order ``"auto"`` tries them; the first that loads wins. The order is a
#: measurement, not a guess: see ``AUTO_ORDER_MEASUREMENT``.
AUTO_ORDER = ("cython", "numba", "numpy")
#: The order on a CPU where the Cython extension has no fused step kernels (neither
#: AVX-512 nor AVX2 + FMA: ARM, older x86), whose per-step products go through BLAS.
AUTO_ORDER_WITHOUT_FUSED_STEP = ("numba", "cython", "numpy")
AUTO_ORDER_MEASUREMENT = (
    "benchmarks/bench_kernels.py, 2026-11-27, 2-core AMD EPYC (AVX-512), 2 threads, float32: "
    "Cython was faster than Numba in all 20 rows (seed size 128x28x28x128: inference "
    "1.79 ms vs 13.9 ms, training 8.2 vs 22.8 ms; 64x25x1024x1024 training 220 vs 348 ms); "
    "the NumPy reference is the fallback. Without the fused kernels (FASTLSTM_NO_FUSED=1 "
    "FASTLSTM_NO_SMALL_GEMM=1, the Cython BLAS path), 2026-12-05, same CPU: see "
    "docs/benchmarks.md, 'The Numba backend'")

#: Every backend fastlstm knows, with its module (relative to this package, so that a
#: renamed copy of fastlstm, as benchmarks/ab_builds.py loads, runs its own backends and
#: kernels) and how to get it.
_KNOWN = {
    "numpy": (".numpy_backend", "always available"),
    "cython": (".cython_backend",
               "the compiled extension fastlstm._recurrent is missing: reinstall fastlstm "
               "from source with a C compiler (pip install -e .)"),
    "numba": (".numba_backend",
              "numba is not installed: pip install numba"),
    "cuda": (".cuda_backend",
             "it needs numba.cuda and an NVIDIA GPU (pip install 'fastlstm[cuda]')"),
}

_loaded = {}
_failed = {}


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        raise _failed[name]
    module_name, hint = _KNOWN[name]
    try:
        module = importlib.import_module(module_name, __package__)
    except ImportError as exc:
        err = ImportError(f"fastlstm backend {name!r} is not available: {hint} ({exc})")
        _failed[name] = err
        raise err from exc
    _loaded[name] = Backend(module)
    return _loaded[name]


def available_backends():
    """Names of the backends that load on this machine, sorted.

    Returns
    -------
    list of str
        Always contains ``"numpy"``; ``"cython"`` and ``"numba"`` where they load;
        ``"cuda"`` only where numba-cuda sees a usable GPU.
    """
    names = []
    for name in _KNOWN:
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return sorted(names)


def _auto_order():
    try:
        fused = _load("cython").module.FUSED_STEP
    except ImportError:
        fused = False
    return AUTO_ORDER if fused else AUTO_ORDER_WITHOUT_FUSED_STEP


def get_backend(name="auto"):
    """The :class:`Backend` called ``name``; ``"auto"`` is the fastest CPU backend that
    loads; a :class:`Backend` is returned as it is.

    Raises
    ------
    ValueError
        ``name`` is not a backend fastlstm knows.
    ImportError
        The backend is known but cannot load here; the message says how to get it.
    """
    if isinstance(name, Backend):
        return name
    if name == "auto":
        for candidate in _auto_order():
            try:
                return _load(candidate)
            except ImportError:
                continue
    if not isinstance(name, str) or name not in _KNOWN:
        raise ValueError(f"unknown backend {name!r}; choose 'auto' or one of {sorted(_KNOWN)}")
    return _load(name)
