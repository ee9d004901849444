# Checks of the entry points' arguments (the kernels index by them: a wrong shape would
# read or write out of bounds).

# ------------------------------------------------------------- checks of the entry points
# The Python layer validates every argument before a kernel runs; these checks stand
# behind it so that no call of an exported function, from anywhere, reads or writes out
# of bounds: a wrong shape or a length past T is a ValueError, not a crash. C compares
# only (tens of ns per call); the messages are built on failure alone.

cdef extern from "<limits.h>":
    enum: INT_MAX


cdef int _expect(str name, Py_ssize_t got0, Py_ssize_t got1, Py_ssize_t got2,
                 Py_ssize_t want0, Py_ssize_t want1, Py_ssize_t want2, int ndim) except -1:
    """``name`` must have the shape ``(want0, want1[, want2])``."""
    if got0 != want0 or got1 != want1 or (ndim == 3 and got2 != want2):
        want = (want0, want1, want2)[:ndim]
        got = (got0, got1, got2)[:ndim]
        raise ValueError(f"{name} must have shape {want}, got {got}")
    return 0


cdef int _check_lengths(const int64_t[::1] seq_len, Py_ssize_t B,
                        Py_ssize_t T) except -1:
    """``seq_len`` holds B lengths, each in 0..T (the kernels index steps by them)."""
    cdef Py_ssize_t b
    if seq_len.shape[0] != B:
        raise ValueError(f"seq_len must hold one length per sequence ({B}), got "
                         f"{seq_len.shape[0]}")
    for b in range(B):
        if seq_len[b] < 0 or seq_len[b] > T:
            raise ValueError(f"seq_len[{b}] = {seq_len[b]} is outside 0..{T} (the steps)")
    return 0


cdef int _check_counts(Py_ssize_t H, int n_threads, Py_ssize_t per_chunk) except -1:
    """Positive thread and chunk counts, and gate widths that BLAS's C ``int`` holds."""
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if per_chunk < 1:
        raise ValueError(f"chunk_rows (or width) must be at least 1, got {per_chunk}")
    if 4 * H > INT_MAX:
        raise ValueError(f"H = {H} is too large: 4H must fit a C int for BLAS")
    return 0


cdef int _check_lstm_history(const floating[:, :, ::1] acts,
                             const floating[:, :, ::1] c_unclipped, double cell_clip,
                             Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                             bint acts_required) except -1:
    """``acts`` (T, B, 4H), or empty where allowed (inference); ``c_unclipped`` (T, B,
    H) where the cell clips (it is read or written only then)."""
    if acts_required or acts.shape[0] > 0:
        _expect("acts", acts.shape[0], acts.shape[1], acts.shape[2], T, B, 4 * H, 3)
    if cell_clip > 0:
        _expect("c_unclipped", c_unclipped.shape[0], c_unclipped.shape[1],
                c_unclipped.shape[2], T, B, H, 3)
    return 0
