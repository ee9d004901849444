# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Recurrence kernels of the ``"cython"`` backend (kernel contract: fastlstm/reference.py).

Design (DESIGN.md section 5):

* The batch is sorted by length (longest first) and cut into fixed chunks of CHUNK rows.
  Each chunk runs its whole time loop on one thread with no per-step barrier, so the
  chunks are independent; ``prange`` hands them to the threads. Because the chunking does
  not depend on the thread count, every result is bit-identical for any thread count.
* Inside a chunk the rows that still have a step ``t`` are a prefix (sorted by length), so
  the per-step product ``h W`` is one GEMM on the first ``n_active`` rows and no padded
  step is computed. The GEMM is SciPy's BLAS (the Python wrapper limits it to one thread
  while these kernels run, so no multithreaded BLAS runs inside our parallel region).
* The state of a chunk lives in small contiguous buffers (``h_loc``, ``c_loc``) that the
  GEMM reads; the elementwise gate math is fused in one pass that also writes the cache.
* ``floating`` is fused over float and double: one source, two compiled kernels.
"""

cimport cython
from cython.parallel cimport prange
from libc.math cimport exp, expf, tanh, tanhf
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

cdef extern from "openmp_shim.h":
    int fastlstm_openmp_enabled() noexcept nogil
    int fastlstm_max_threads() noexcept nogil

#: Rows per chunk. Fixed (not derived from the thread count) for determinism.
CHUNK = 16
cdef Py_ssize_t _CHUNK = 16


def openmp_enabled():
    """True when this module was compiled with OpenMP (threads > 1 possible)."""
    return bool(fastlstm_openmp_enabled())


ctypedef fused floating:
    float
    double


cdef inline floating _sigmoid(floating x) noexcept nogil:
    cdef floating one = 1
    if floating is float:
        return one / (one + expf(-x))
    else:
        return one / (one + exp(-x))


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline void _gemm_rowmajor(bint trans_b, int m, int n, int k, const floating* A,
                                int lda, const floating* B, int ldb, floating* C,
                                int ldc) noexcept nogil:
    """Row-major ``C (m, n) = A (m, k) @ op(B)``, ``op(B) = B (k, n)`` or ``B.T`` for B (n, k).

    BLAS is column-major, where a row-major matrix reads as its transpose, so this asks
    for ``C.T = op(B).T @ A.T``: the operands swap and A needs no transpose flag.
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'N'
    cdef floating alpha = 1
    cdef floating beta = 0
    if m == 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


def _chunk_order(const int64_t[::1] seq_len):
    """Rows sorted by length, longest first (stable), as int64."""
    return np.argsort(-np.asarray(seq_len), kind="stable").astype(np.int64)


# --------------------------------------------------------------------------- basic RNN
cdef void _rnn_forward_chunk(const floating* xproj, const floating* W,
                             const int64_t* seq_len, const int64_t* rows,
                             Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                             floating* hs, floating* h_loc, floating* z_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, n_active = n_rows, n_steps = seq_len[rows[0]]
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:       # rows are sorted: drop the tail
            n_active -= 1
        _gemm_rowmajor(False, n_active, H, H, h_loc, H, W, H, z_loc, H)
        for r in range(n_active):
            b = rows[r]
            for u in range(H):
                h_loc[r * H + u] = _tanh(xproj[(t * B + b) * H + u] + z_loc[r * H + u])
                hs[((t + 1) * B + b) * H + u] = h_loc[r * H + u]


cdef void _rnn_backward_chunk(const floating* W, const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, const floating* hs, const floating* d_out,
                              floating* dh, floating* dz, floating* dh_loc,
                              floating* dz_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, n_active = 0, n_steps = seq_len[rows[0]]
    cdef floating h, one = 1
    for r in range(n_rows):
        for u in range(H):
            dh_loc[r * H + u] = dh[rows[r] * H + u]
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            for u in range(H):
                h = hs[((t + 1) * B + b) * H + u]
                dz_loc[r * H + u] = (dh_loc[r * H + u] + d_out[(t * B + b) * H + u]) * (one - h * h)
                dz[(t * B + b) * H + u] = dz_loc[r * H + u]
        _gemm_rowmajor(True, n_active, H, H, dz_loc, H, W, H, dh_loc, H)
    for r in range(n_rows):
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]


def rnn_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                const int64_t[::1] seq_len, floating[:, :, ::1] hs, int n_threads=1):
    """Basic RNN recurrence; see ``fastlstm.reference.rnn_forward``."""
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_chunks, k, start
    if B == 0 or xproj.shape[0] == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    n_chunks = (B + _CHUNK - 1) // _CHUNK
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] h_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] z_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = k * _CHUNK
        _rnn_forward_chunk(&xproj[0, 0, 0], &W[0, 0], &seq_len[0], &order[start],
                           min(_CHUNK, B - start), B, H, &hs[0, 0, 0],
                           &h_loc[start, 0], &z_loc[start, 0])


def rnn_backward(const floating[:, ::1] W, const int64_t[::1] seq_len,
                 const floating[:, :, ::1] hs, const floating[:, :, ::1] d_outputs,
                 floating[:, ::1] dh, floating[:, :, ::1] dz, int n_threads=1):
    """Backward of the basic RNN; see ``fastlstm.reference.rnn_backward``."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    n_chunks = (B + _CHUNK - 1) // _CHUNK
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] dh_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] dz_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = k * _CHUNK
        _rnn_backward_chunk(&W[0, 0], &seq_len[0], &order[start], min(_CHUNK, B - start),
                            B, H, &hs[0, 0, 0], &d_outputs[0, 0, 0], &dh[0, 0],
                            &dz[0, 0, 0], &dh_loc[start, 0], &dz_loc[start, 0])


# -------------------------------------------------------------------------------- LSTM
cdef void _lstm_forward_chunk(const floating* xproj, const floating* W,
                              const floating* peep, bint use_peep, floating forget_bias,
                              floating clip, const int64_t* seq_len, const int64_t* rows,
                              Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                              floating* hs, floating* cs, floating* acts, floating* c_unclipped,
                              floating* h_loc, floating* c_loc,
                              floating* z_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, n_active = n_rows, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so
    cdef floating z_i, z_j, z_f, z_o, i, j, f, o, c, c_prev, h
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
            c_loc[r * H + u] = cs[rows[r] * H + u]
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        _gemm_rowmajor(False, n_active, G, H, h_loc, H, W, G, z_loc, G)
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G            # offset of (t, b) in xproj / acts
            so = ((t + 1) * B + b) * H      # offset of (t + 1, b) in hs / cs
            for u in range(H):
                # Same operation order as the reference (and TensorFlow).
                z_i = xproj[xo + u] + z_loc[r * G + u]
                z_j = xproj[xo + H + u] + z_loc[r * G + H + u]
                z_f = (xproj[xo + 2 * H + u] + z_loc[r * G + 2 * H + u]) + forget_bias
                z_o = xproj[xo + 3 * H + u] + z_loc[r * G + 3 * H + u]
                c_prev = c_loc[r * H + u]
                if use_peep:
                    z_i = z_i + peep[u] * c_prev
                    z_f = z_f + peep[H + u] * c_prev
                i = _sigmoid(z_i)
                j = _tanh(z_j)
                f = _sigmoid(z_f)
                c = f * c_prev + i * j
                if clip > 0:
                    c_unclipped[(t * B + b) * H + u] = c
                    c = min(max(c, -clip), clip)
                if use_peep:
                    z_o = z_o + peep[2 * H + u] * c      # output gate sees the new cell
                o = _sigmoid(z_o)
                h = o * _tanh(c)
                acts[xo + u] = i
                acts[xo + H + u] = j
                acts[xo + 2 * H + u] = f
                acts[xo + 3 * H + u] = o
                hs[so + u] = h
                cs[so + u] = c
                h_loc[r * H + u] = h
                c_loc[r * H + u] = c


cdef void _lstm_backward_chunk(const floating* W, const floating* peep, bint use_peep,
                               floating clip, const int64_t* seq_len, const int64_t* rows,
                               Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                               const floating* cs, const floating* acts,
                               const floating* c_unclipped, const floating* d_out,
                               floating* dh, floating* dc, floating* dz, floating* dh_loc,
                               floating* dc_loc, floating* dz_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, n_active = 0, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so
    cdef floating i, j, f, o, tanh_c, dh_t, dc_t, dz_i, dz_j, dz_f, dz_o, uc, one = 1
    for r in range(n_rows):
        for u in range(H):
            dh_loc[r * H + u] = dh[rows[r] * H + u]
            dc_loc[r * H + u] = dc[rows[r] * H + u]
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G
            so = (t * B + b) * H           # offset of (t, b) in cs (c_prev) / d_out
            for u in range(H):
                i = acts[xo + u]
                j = acts[xo + H + u]
                f = acts[xo + 2 * H + u]
                o = acts[xo + 3 * H + u]
                dh_t = dh_loc[r * H + u] + d_out[so + u]
                tanh_c = _tanh(cs[so + B * H + u])
                dz_o = dh_t * tanh_c * o * (one - o)
                dc_t = dc_loc[r * H + u] + dh_t * o * (one - tanh_c * tanh_c)
                if use_peep:
                    dc_t = dc_t + dz_o * peep[2 * H + u]
                if clip > 0:
                    uc = c_unclipped[so + u]
                    if uc < -clip or uc > clip:          # clipped: no gradient passes
                        dc_t = 0
                dz_i = dc_t * j * i * (one - i)
                dz_j = dc_t * i * (one - j * j)
                dz_f = dc_t * cs[so + u] * f * (one - f)
                if use_peep:
                    dc_loc[r * H + u] = dc_t * f + dz_i * peep[u] + dz_f * peep[H + u]
                else:
                    dc_loc[r * H + u] = dc_t * f
                dz_loc[r * G + u] = dz_i
                dz_loc[r * G + H + u] = dz_j
                dz_loc[r * G + 2 * H + u] = dz_f
                dz_loc[r * G + 3 * H + u] = dz_o
                dz[xo + u] = dz_i
                dz[xo + H + u] = dz_j
                dz[xo + 2 * H + u] = dz_f
                dz[xo + 3 * H + u] = dz_o
        _gemm_rowmajor(True, n_active, H, G, dz_loc, G, W, G, dh_loc, H)
    for r in range(n_rows):
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]
            dc[rows[r] * H + u] = dc_loc[r * H + u]


def lstm_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                 const floating[:, ::1] peepholes, bint use_peepholes, double forget_bias,
                 double cell_clip, const int64_t[::1] seq_len, floating[:, :, ::1] hs,
                 floating[:, :, ::1] cs, floating[:, :, ::1] acts,
                 floating[:, :, ::1] c_unclipped, int n_threads=1):
    """LSTM recurrence; see ``fastlstm.reference.lstm_forward``."""
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_chunks, k, start
    if B == 0 or xproj.shape[0] == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    n_chunks = (B + _CHUNK - 1) // _CHUNK
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] h_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] c_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] z_loc = np.empty((n_chunks * _CHUNK, 4 * H), dtype)
    cdef floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating fb = <floating>forget_bias, clip = <floating>cell_clip
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = k * _CHUNK
        _lstm_forward_chunk(&xproj[0, 0, 0], &W[0, 0], &peepholes[0, 0], use_peepholes,
                            fb, clip, &seq_len[0], &order[start], min(_CHUNK, B - start),
                            B, H, &hs[0, 0, 0], &cs[0, 0, 0], &acts[0, 0, 0], cu,
                            &h_loc[start, 0], &c_loc[start, 0], &z_loc[start, 0])


def lstm_backward(const floating[:, ::1] W, const floating[:, ::1] peepholes,
                  bint use_peepholes, double cell_clip, const int64_t[::1] seq_len,
                  const floating[:, :, ::1] cs, const floating[:, :, ::1] acts,
                  const floating[:, :, ::1] c_unclipped,
                  const floating[:, :, ::1] d_outputs, floating[:, ::1] dh,
                  floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads=1):
    """Backward of the LSTM; see ``fastlstm.reference.lstm_backward``."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    n_chunks = (B + _CHUNK - 1) // _CHUNK
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] dh_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] dc_loc = np.empty((n_chunks * _CHUNK, H), dtype)
    cdef floating[:, ::1] dz_loc = np.empty((n_chunks * _CHUNK, 4 * H), dtype)
    cdef const floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating clip = <floating>cell_clip
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = k * _CHUNK
        _lstm_backward_chunk(&W[0, 0], &peepholes[0, 0], use_peepholes, clip, &seq_len[0],
                             &order[start], min(_CHUNK, B - start), B, H, &cs[0, 0, 0],
                             &acts[0, 0, 0], cu, &d_outputs[0, 0, 0], &dh[0, 0], &dc[0, 0],
                             &dz[0, 0, 0], &dh_loc[start, 0], &dc_loc[start, 0],
                             &dz_loc[start, 0])
