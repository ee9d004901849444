# The kernels' float32 math elementwise, for tests/test_gate_math.py, and the barrier's
# spin count, for the tests of its sleeping path, and the L2 size the kernels plan for.

def expf_array(const float[::1] x):
    """The kernels' float32 exp, elementwise (for the accuracy test)."""
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] y = out
    if x.shape[0]:
        fl_expf_array(x.shape[0], &x[0], &y[0])
    return out


def fused_math_array(str isa, str name, const float[::1] x):
    """The fused step's float32 ``"exp"``, ``"tanh"`` or ``"sigmoid"`` of instruction set
    ``isa`` (``"avx512"``: gate_math_avx512.h, ``"avx2"``: gate_math_avx2.h), elementwise
    (for the accuracy tests); this CPU must have that instruction set."""
    cdef int which = ("exp", "tanh", "sigmoid").index(name)
    cdef int best = fl_best_fused_isa()
    if isa not in ("avx512", "avx2"):
        raise ValueError(f"isa must be 'avx512' or 'avx2', got {isa!r}")
    if best < (FL_ISA_AVX512 if isa == "avx512" else FL_ISA_AVX2):
        raise RuntimeError(f"this CPU has no {isa}: the fused step's math does not run")
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] y = out
    if x.shape[0]:
        if isa == "avx512":
            fl_avx512_math_array(which, x.shape[0], &x[0], &y[0])
        else:
            fl_avx2_math_array(which, x.shape[0], &x[0], &y[0])
    return out


def tanhf_array(const float[::1] x):
    """The kernels' float32 tanh, elementwise (for the accuracy test)."""
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] y = out
    if x.shape[0]:
        fl_tanhf_array(x.shape[0], &x[0], &y[0])
    return out


def set_barrier_spins(int spins, int yields=16):
    """Set how many times the per-step barrier's waiters spin (default 16384) and then
    yield (default 16) before they sleep; returns the previous ``(spins, yields)``.
    ``(0, 0)`` sends every wait to sleep at once (tests of that path: results must not
    change)."""
    global fastlstm_spins_before_yield, fastlstm_yields_before_sleep
    if spins < 0 or yields < 0:
        raise ValueError(f"spins and yields must be >= 0, got {spins} and {yields}")
    previous = (fastlstm_spins_before_yield, fastlstm_yields_before_sleep)
    fastlstm_spins_before_yield = spins
    fastlstm_yields_before_sleep = yields
    return previous


def set_steal_spins(int spins):
    """Set how long a thread of the fused forward's unit split waits for a step's other
    slices before it computes one that nobody took (default 2048 pauses); returns the
    previous count. 0 steals at once (tests of that path: results must not change)."""
    global fastlstm_spins_before_steal
    if spins < 0:
        raise ValueError(f"spins must be >= 0, got {spins}")
    previous = fastlstm_spins_before_steal
    fastlstm_spins_before_steal = spins
    return previous


def set_late_thread(int tid, int microseconds):
    """Make thread ``tid`` of the fused forward's unit split start ``microseconds`` late,
    as if its core were taken (tests of the slices the others take over); ``tid`` -1:
    none. Returns the previous ``(tid, microseconds)``."""
    global fastlstm_late_thread, fastlstm_late_us
    if microseconds < 0:
        raise ValueError(f"microseconds must be >= 0, got {microseconds}")
    previous = (fastlstm_late_thread, fastlstm_late_us)
    fastlstm_late_thread, fastlstm_late_us = tid, microseconds
    return previous


def set_l2_bytes(Py_ssize_t nbytes):
    """Make the fused kernels take this CPU's L2 cache as ``nbytes`` (0: detect it again),
    as on a CPU with another L2 (tests of choices made on it: results must not change);
    returns the previous size in bytes."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    return fl_set_l2_bytes(nbytes)
