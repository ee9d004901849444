# What the Python side asks of the compiled runtime: OpenMP's presence and limits.

cdef extern from *:
    """
    #ifndef FASTLSTM_SOURCE_HASH
    #define FASTLSTM_SOURCE_HASH "unknown"
    #endif
    """
    const char* FASTLSTM_SOURCE_HASH


def source_hash():
    """The fingerprint of the sources this module was compiled from (setup.py computes it
    with fastlstm._build_source.source_hash; "unknown" when built without setup.py)."""
    return FASTLSTM_SOURCE_HASH.decode("ascii")


def openmp_enabled():
    """True when this module was compiled with OpenMP (threads > 1 possible)."""
    return bool(fastlstm_openmp_enabled())


def openmp_max_threads():
    """``omp_get_max_threads()`` of this module's OpenMP runtime, for the calling thread:
    the size of its next parallel region without a ``num_threads`` (``OMP_NUM_THREADS``,
    or a limit that threadpoolctl set through ``omp_set_num_threads``); 0 in a build
    without OpenMP."""
    return fastlstm_max_threads() if fastlstm_openmp_enabled() else 0


def start_threads(int n):
    """Open a parallel region of ``n`` threads that does nothing: OpenMP creates its
    threads at the first region that needs them (0.1-0.3 ms), which would otherwise fall
    on a later call (the third of a single sequence, whose first two the split tuner runs
    on one core: 3.7 times its steady time)."""
    cdef int tid
    with nogil, parallel(num_threads=max(1, n)):
        tid = threadid()


def steal_count():
    """Slices of the fused forward's unit split that a thread computed for another (whose
    thread was late: its core taken), since the module was loaded."""
    return fastlstm_steal_count()


def late_count():
    """Parallel regions of the kernels in which a thread lost its core for long, since
    the module was loaded: a batch chunk whose thread was descheduled over 1 ms, or a unit
    split with slices of an eighth of its steps taken over (:func:`steal_count`). Whether
    it grew across calls is what ``fastlstm._governor.late_threads`` is told."""
    return fastlstm_late_count()


cdef inline void* _aligned_64(void* p) noexcept nogil:
    """``p`` rounded up to a multiple of 64 bytes (a cache line)."""
    return <void*>((<size_t>p + 63) & ~(<size_t>63))
