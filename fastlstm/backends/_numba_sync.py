"""A step barrier for Numba kernels: one parallel region over a whole time loop.

Numba has no barrier inside a ``prange``, so a kernel that splits each step's hidden
units over the threads used to open one parallel region per step (15.4 us a step for a
single sequence of 256 units on a 2-core AMD EPYC Zen 4, against 10.5 for the Cython
kernels' one region with a barrier per step). Here the slices of a ``prange`` meet at
:func:`barrier` after every step instead, through a counter in a small int64 array
(:func:`new_sync`) updated with atomic instructions written in LLVM IR.

A barrier inside a ``prange`` deadlocks if the runtime gives the region fewer threads
than slices (a nested region, a busy TBB arena): a thread would wait for a slice that
only it can run later. So every slice first counts itself in (:func:`enter`); a slice
that has waited long at a barrier while some slice has not even started gives up and
raises the abort flag, every slice then leaves, and the caller (:func:`aborted` true)
reruns the work another way. Waits spin briefly, then yield the core to the scheduler
(``sched_yield``), so a slice whose partner lost its core does not hold its own.
"""

import ctypes
import ctypes.util
import platform

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._numba_jit import external_function, kernel

#: Positions in the sync array, each on a cache line of its own (8 int64 apart).
ARRIVED, STARTED, ABORT = 0, 8, 16
#: Spins (each a load and a CPU pause) before a waiting slice starts yielding its core:
#: tens of microseconds, a few steps' worth.
SPINS_BEFORE_YIELD = 2000
#: Yields a slice waits, while some slice has not started, before it aborts the region
#: (milliseconds: a thread the OS has not yet run starts well within that on a quiet
#: machine; on a busy one an abort only costs the rerun).
YIELDS_BEFORE_ABORT = 20000


def new_sync():
    """A zeroed sync array for one run of a region (counters and the abort flag)."""
    import numpy as np
    return np.zeros(ABORT + 8, np.int64)


def _pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic
def _load_acquire(typingctx, sync, index):
    """``sync[index]``, read with acquire order (later reads see what was released)."""
    if not (isinstance(sync, types.Array) and sync.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(sync, types.intp), codegen


@intrinsic
def _add_acq_rel(typingctx, sync, index, value):
    """``sync[index] += value`` atomically (acquire and release), the old value back."""
    if not (isinstance(sync, types.Array) and sync.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "acq_rel")
    return types.int64(sync, types.intp, types.int64), codegen


def _pause_codegen(context, builder, signature, args):
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        pause = builder.module.declare_intrinsic("llvm.x86.sse2.pause", (),
                                                 ir.FunctionType(ir.VoidType(), ()))
        builder.call(pause, ())
    return context.get_dummy_value()


@intrinsic
def _cpu_pause(typingctx):
    """The CPU's spin-wait hint where it has one (x86 ``pause``), else nothing."""
    return types.void(), _pause_codegen


def _find_sched_yield():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).sched_yield
    except (OSError, AttributeError, TypeError):
        return None
    return external_function("fastlstm_sched_yield", ctypes.cast(fn, ctypes.c_void_p).value,
                             types.int32())


_sched_yield = _find_sched_yield()
if _sched_yield is None:                         # no libc call: keep spinning instead
    @kernel
    def _yield_core():
        _cpu_pause()
else:
    @kernel
    def _yield_core():
        _sched_yield()


@kernel
def enter(sync):
    """Count a slice in; False when the region was already aborted (skip the work)."""
    _add_acq_rel(sync, STARTED, 1)
    return _load_acquire(sync, ABORT) == 0


@kernel
def barrier(sync, step, n_slices):
    """Wait until all ``n_slices`` slices have finished step ``step`` (0, 1, ...); what
    they wrote before is then visible. False when the region is aborted: leave at once."""
    target = (step + 1) * n_slices
    _add_acq_rel(sync, ARRIVED, 1)
    waited = 0
    while _load_acquire(sync, ARRIVED) < target:
        if _load_acquire(sync, ABORT) != 0:
            return False
        waited += 1
        if waited < SPINS_BEFORE_YIELD:
            _cpu_pause()
            continue
        _yield_core()
        if (waited > SPINS_BEFORE_YIELD + YIELDS_BEFORE_ABORT
                and _load_acquire(sync, STARTED) < n_slices):
            _add_acq_rel(sync, ABORT, 1)       # a slice cannot start while we wait
            return False
    return True


def aborted(sync):
    """Whether the region run with ``sync`` gave up (its work must be redone)."""
    return bool(sync[ABORT])
