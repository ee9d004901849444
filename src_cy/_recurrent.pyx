# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Recurrence kernels of the ``"cython"`` backend (kernel contract: fastlstm/reference.py).

Design (docs/design.md):

* The batch is sorted by length (longest first) and dealt round-robin into
  ceil(B / chunk_rows) chunks of near-equal size and work (``_chunk_order``). Each chunk
  runs its whole time loop on one thread with no per-step barrier, so the chunks are
  independent; ``prange`` hands them to the threads. Because the chunking does not depend
  on the thread count, every result is bit-identical for any thread count.
* Inside a chunk the rows that still have a step ``t`` are a prefix (sorted by length), so
  the per-step product ``h W`` is one product on the first ``n_active`` rows and no padded
  step is computed. It is the fused AVX-512 / AVX2 step of ``fused_step.h`` (float32 on CPUs
  that have it), else SciPy's BLAS (the Python wrapper limits it to one thread while
  these kernels run, so no multithreaded BLAS runs inside our parallel region).
* The state of a chunk lives in small contiguous buffers (``h_loc``, ``c_loc``) that the
  GEMM reads; the elementwise gate math of a row is one fused, vectorized C function
  (``gate_math.h``) that also writes the cache.
* ``chunk_rows`` comes from the caller (fastlstm.backends._chunking): it depends on the
  batch size and the machine, never on the requested thread count.
* ``floating`` is fused over float and double: one source, two compiled kernels.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

import os

import numpy as np

from fastlstm._workspace import CACHE_LINE, scratch

cdef extern from "small_gemm_avx2.h":
    void fl_small_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B,
                           int ldb, float* C, int ldc) noexcept nogil
    enum: FL_SMALL_GEMM_MAX_ROWS

cdef extern from "fused_step.h":
    int fl_best_fused_isa() noexcept nogil
    void fl_set_fused_isa(int isa) noexcept nogil
    enum: FL_ISA_NONE
    enum: FL_ISA_AVX2
    enum: FL_ISA_AVX512
    ctypedef struct fl_layout_f32:
        Py_ssize_t x_t, x_b
        float* h
        Py_ssize_t h_t, h_b
        float* c
        Py_ssize_t c_t, c_b
    void fl_lstm_fwd_fused_f32(Py_ssize_t n_rows, Py_ssize_t H, const float* h_old,
                               const float* Wp, const int64_t* rows, Py_ssize_t B,
                               Py_ssize_t t, const float* xproj, Py_ssize_t I,
                               const float* x, const float* bias, const float* peep,
                               int use_peep, float forget_bias, float clip, float* c_loc,
                               float* h_new, float* acts, float* act_tmp,
                               const fl_layout_f32* out, float* c_unclipped, Py_ssize_t g_lo,
                               Py_ssize_t g_hi) noexcept nogil

cdef extern from "fused_step.h":
    void fl_pack_fused_f32(Py_ssize_t I, const float* Wx, Py_ssize_t H, const float* Wh,
                           float* out, Py_ssize_t k_lo, Py_ssize_t k_hi) noexcept nogil
    void fl_pack_fused_rect_f32(Py_ssize_t I, const float* Wx, Py_ssize_t H,
                                const float* Wh, float* out, Py_ssize_t k_lo,
                                Py_ssize_t k_hi, Py_ssize_t g_lo,
                                Py_ssize_t g_hi) noexcept nogil
    void fl_pack_fused_t_f32(Py_ssize_t n, Py_ssize_t K, const float* W, float* out,
                             Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil
    void fl_gemm_rows_wt_f32(Py_ssize_t n_rows, const int64_t* rows, Py_ssize_t K,
                             const float* A, Py_ssize_t lda, const float* WTp, Py_ssize_t N,
                             float* C, const int64_t* c_off, Py_ssize_t ldc,
                             Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil
    void fl_avx512_math_array(int which, Py_ssize_t n, const float* x,
                              float* y) noexcept nogil
    void fl_avx2_math_array(int which, Py_ssize_t n, const float* x,
                            float* y) noexcept nogil
    void fl_gemm_tn_f32(Py_ssize_t K, const int64_t* krows, Py_ssize_t n_seg,
                        const float* const* A, const Py_ssize_t* lda, const Py_ssize_t* M,
                        const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc,
                        Py_ssize_t c_lo, Py_ssize_t c_hi, float* Bp) noexcept nogil
    enum: FL_TN_GROUP
    enum: FL_TN_KS
    void fl_gemm_dz_wt_f32(Py_ssize_t n_rows, Py_ssize_t H, const float* dz,
                           const float* WTp, float* dh, Py_ssize_t c_lo,
                           Py_ssize_t c_hi) noexcept nogil

cdef extern from "openmp_shim.h":
    int fastlstm_openmp_enabled() noexcept nogil
    int fastlstm_max_threads() noexcept nogil
    int fastlstm_num_threads() noexcept nogil
    ctypedef struct fastlstm_spin_barrier:
        pass
    void fastlstm_spin_barrier_init(fastlstm_spin_barrier* b) noexcept nogil
    void fastlstm_spin_barrier_wait(fastlstm_spin_barrier* b, int n_threads) noexcept nogil

cdef extern from "gate_math.h":
    void fl_lstm_fwd_row_f32(Py_ssize_t n, Py_ssize_t S, Py_ssize_t Z, const float* xp,
                             const float* z, const float* peep, int use_peep,
                             float forget_bias, float clip, float* c_loc, float* h_loc,
                             float* act, float* cs_row, float* hs_row,
                             float* cun_row) noexcept nogil
    void fl_lstm_fwd_row_f64(Py_ssize_t n, Py_ssize_t S, Py_ssize_t Z, const double* xp,
                             const double* z, const double* peep, int use_peep,
                             double forget_bias, double clip, double* c_loc, double* h_loc,
                             double* act, double* cs_row, double* hs_row,
                             double* cun_row) noexcept nogil
    void fl_lstm_bwd_row_f32(Py_ssize_t n, Py_ssize_t S, const float* act,
                             const float* c_prev, const float* c_new, const float* cun,
                             const float* peep, int use_peep, float clip, const float* d_out,
                             const float* dh, float* dc, float* dz_loc,
                             float* dz_row) noexcept nogil
    void fl_lstm_bwd_row_f64(Py_ssize_t n, Py_ssize_t S, const double* act,
                             const double* c_prev, const double* c_new, const double* cun,
                             const double* peep, int use_peep, double clip,
                             const double* d_out, const double* dh, double* dc,
                             double* dz_loc, double* dz_row) noexcept nogil
    void fl_rnn_fwd_row_f32(Py_ssize_t H, const float* xp, const float* z, float* h_loc,
                            float* hs_row) noexcept nogil
    void fl_rnn_fwd_row_f64(Py_ssize_t H, const double* xp, const double* z, double* h_loc,
                            double* hs_row) noexcept nogil
    void fl_rnn_bwd_row_f32(Py_ssize_t H, const float* h_new, const float* d_out,
                            const float* dh, float* dz_loc, float* dz_row) noexcept nogil
    void fl_rnn_bwd_row_f64(Py_ssize_t H, const double* h_new, const double* d_out,
                            const double* dh, double* dz_loc, double* dz_row) noexcept nogil
    void fl_expf_array(Py_ssize_t n, const float* x, float* y) noexcept nogil
    void fl_tanhf_array(Py_ssize_t n, const float* x, float* y) noexcept nogil


def _kernel_isa():
    """The instruction set of this process's own float32 kernels: the CPU's best
    (fl_best_fused_isa: AVX-512, AVX2 + FMA, or none), or AVX2 on an AVX-512 CPU where
    FASTLSTM_NO_AVX512=1 at import (to measure or compare the kernels of CPUs without
    AVX-512 on one machine)."""
    cdef int isa = fl_best_fused_isa()
    if isa == FL_ISA_AVX512 and os.environ.get("FASTLSTM_NO_AVX512", "") == "1":
        isa = FL_ISA_AVX2
    return isa


cdef int _KERNEL_ISA = _kernel_isa()
#: The fused float32 LSTM kernels (fused_step.h) run on _KERNEL_ISA, unless
#: FASTLSTM_NO_FUSED=1 at import puts every product on the BLAS path.
cdef int _FUSED_ISA = (FL_ISA_NONE if os.environ.get("FASTLSTM_NO_FUSED", "") == "1"
                       else _KERNEL_ISA)
fl_set_fused_isa(_FUSED_ISA)
_FUSED_STEP = _FUSED_ISA != FL_ISA_NONE


#: The BLAS path's per-step products of 2 .. FL_SMALL_GEMM_MAX_ROWS rows (the basic RNN,
#: and every float32 product where FASTLSTM_NO_FUSED=1) run on small_gemm_avx2.h where
#: the kernels' ISA is AVX2 (no AVX-512, or it switched off by FASTLSTM_NO_AVX512=1),
#: since OpenBLAS's sgemm packs all of W_h for each of them.
#: Measured (2 threads, ms, BLAS / small GEMM) with OpenBLAS's Haswell kernels: (8, 100,
#: 64, 128) inference 2.94 / 1.12, training 6.97 / 5.06, (4, ...) 2.68 / 1.08, basic RNN
#: (8, 100, 64, 128) 0.93 / 0.36, (32, 100, 64, 64) 2.00 / 1.59, larger batches 0.99-1.11x;
#: but OpenBLAS's SkylakeX kernels beat it (0.75 / 1.37 at (8, 100, 64, 128)): not on
#: AVX-512 CPUs. FASTLSTM_NO_SMALL_GEMM=1 at import leaves every product to BLAS.
cdef bint _SMALL_GEMM = (_KERNEL_ISA == FL_ISA_AVX2
                         and os.environ.get("FASTLSTM_NO_SMALL_GEMM", "") != "1")


def small_gemm_enabled():
    """True when the BLAS path's few-row float32 products run on the AVX2 kernel."""
    return bool(_SMALL_GEMM)


def have_fused_step():
    """True when the fused float32 kernels run here (fused_step.h): the CPU has AVX-512F,
    or AVX2 and FMA, and FASTLSTM_NO_FUSED=1 was not set at import."""
    return _FUSED_STEP


def fused_isa():
    """The fused kernels' instruction set here: ``"avx512"``, ``"avx2"`` or ``None``
    (the BLAS path)."""
    return {FL_ISA_AVX512: "avx512", FL_ISA_AVX2: "avx2"}.get(_FUSED_ISA)


def cpu_isa():
    """The best instruction set of the fused kernels that this CPU and its OS support
    (CPUID and XGETBV: ``"avx512"`` needs AVX-512 F, DQ, BW and VL, ``"avx2"`` AVX2 and
    FMA), whatever the switches say; ``None`` also where the build has no fused kernels
    (a compiler other than GCC or clang, or not x86-64)."""
    return {FL_ISA_AVX512: "avx512", FL_ISA_AVX2: "avx2"}.get(fl_best_fused_isa())


#: Packed weights of at least this many bytes are packed by all threads (row ranges):
#: (64, 25, 512, 512)'s 8 MB took 0.37 ms on one thread, ~2% of an inference.
PARALLEL_PACK_MIN_BYTES = 1 << 20


def pack_fused(const float[:, ::1] W_h, const float[:, ::1] W_x=None, out=None,
               int n_threads=1):
    """``[W_x; W_h]`` (or ``W_h``) packed for the fused step: see
    ``fastlstm.backends._chunking.pack_fused`` (the same layout, in NumPy). ``out``: a
    float32 array of that shape to pack into (a reused one spares the page faults of a
    fresh one: a few ms for multi-megabyte weights). ``n_threads`` pack row ranges of
    weights of ``PARALLEL_PACK_MIN_BYTES`` or more."""
    cdef Py_ssize_t H = W_h.shape[0], I = 0 if W_x is None else W_x.shape[0]
    if W_h.shape[1] != 4 * H or (W_x is not None and W_x.shape[1] != 4 * H):
        raise ValueError("W_h must be (H, 4H) and W_x (I, 4H)")
    if out is None:
        out = np.empty(((H + 15) // 16, (I + H) * 64), np.float32)
    cdef float[:, ::1] o = out
    if o.shape[0] != (H + 15) // 16 or o.shape[1] != (I + H) * 64:
        raise ValueError("out has the wrong shape")
    cdef Py_ssize_t K = I + H, n_parts = 1, part
    cdef const float* wx = &W_x[0, 0] if I > 0 else NULL
    if H == 0:
        return out
    if K * 4 * H * 4 >= PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, n_threads)
    if n_parts == 1:                   # no OpenMP region for one part (B=1: ~0.4 us)
        with nogil:
            fl_pack_fused_f32(I, wx, H, &W_h[0, 0], &o[0, 0], 0, K)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_f32(I, wx, H, &W_h[0, 0], &o[0, 0], part * K // n_parts,
                          (part + 1) * K // n_parts)
    return out


def pack_fused_t(const float[:, ::1] W, out=None, int n_threads=1):
    """``W.T`` for ``W`` (n, K) packed in blocks of 64 of its n rows, for the backward's
    products (``W_h`` (H, 4H): dz W_h^T; ``W_x`` (I, 4H): the input gradient): see
    ``fastlstm.backends._chunking.pack_fused_t`` (the same layout, in NumPy). ``out`` and
    ``n_threads`` as in :func:`pack_fused` (here the threads take whole blocks)."""
    cdef Py_ssize_t n = W.shape[0], K = W.shape[1], blocks = (n + 63) // 64, n_parts = 1
    cdef Py_ssize_t part
    if out is None:
        out = np.empty(((n + 63) // 64, K, 64), np.float32)
    cdef float[:, :, ::1] o = out
    if o.shape[0] != (n + 63) // 64 or o.shape[1] != K or o.shape[2] != 64:
        raise ValueError("out has the wrong shape")
    if n == 0 or K == 0:
        return out
    if n * K * 4 >= PARALLEL_PACK_MIN_BYTES:
        n_parts = max(1, min(n_threads, blocks))
    if n_parts == 1:
        with nogil:
            fl_pack_fused_t_f32(n, K, &W[0, 0], &o[0, 0, 0], 0, blocks)
        return out
    for part in prange(n_parts, nogil=True, num_threads=n_parts, schedule="static"):
        fl_pack_fused_t_f32(n, K, &W[0, 0], &o[0, 0, 0], part * blocks // n_parts,
                            (part + 1) * blocks // n_parts)
    return out


def gemm_rows_wt(const float[:, :] a, const float[:, :, ::1] wt_packed, Py_ssize_t n,
                 float[::1] out, const int64_t[::1] out_offsets,
                 const int64_t[::1] rows=None, int n_threads=1):
    """Rows of ``a @ W.T`` (``W`` (n, K) packed by :func:`pack_fused_t`) written to
    ``out[out_offsets[m]:][:n]``: row m from ``a``'s row ``rows[m]`` (or m), for m over
    ``out_offsets``; the fused kernels' tiles (where :func:`have_fused_step`), the rows
    dealt to the OpenMP threads, each element one in-order sum over K: the same bits for
    any count."""
    cdef Py_ssize_t m = out_offsets.shape[0], K = a.shape[1], k, per, lo, hi
    cdef Py_ssize_t n_blocks = (n + 63) // 64
    if not _FUSED_STEP:
        raise RuntimeError("the fused kernels do not run here: use the BLAS blocks")
    if wt_packed.shape[0] != n_blocks or wt_packed.shape[1] != K or wt_packed.shape[2] != 64:
        raise ValueError("wt_packed must be W (n, K) packed by pack_fused_t")
    if K > 1 and a.strides[1] != sizeof(float):
        raise ValueError("gemm_rows_wt needs rows with contiguous elements")
    if rows is not None and rows.shape[0] != m:
        raise ValueError("rows and out_offsets must have one entry per output row")
    if m == 0 or n == 0:
        return
    if (rows is not None and (np.min(rows) < 0 or np.max(rows) >= a.shape[0])) or (
            rows is None and m > a.shape[0]):
        raise ValueError("rows must index the rows of a")
    if np.min(out_offsets) < 0 or np.max(out_offsets) + n > out.shape[0]:
        raise ValueError("out_offsets must leave room for n values in out")
    cdef Py_ssize_t lda = a.strides[0] // <Py_ssize_t>sizeof(float)
    cdef const int64_t* rp = &rows[0] if rows is not None else NULL
    n_threads = max(1, min(n_threads, (m + 3) // 4))
    per = ((m + n_threads - 1) // n_threads + 7) // 8 * 8      # whole tiles per thread
    for k in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
        lo = k * per
        hi = min(m, lo + per)
        if lo < hi:
            fl_gemm_rows_wt_f32(hi - lo, rp + lo if rp != NULL else NULL, K,
                                &a[0, 0] if rp != NULL else &a[lo, 0], lda,
                                &wt_packed[0, 0, 0], n, &out[0], &out_offsets[lo], 0, 0,
                                n_blocks)


def data_address(obj):
    """Address of the first byte of ``obj``'s buffer (a contiguous array): for
    fastlstm._workspace's cache-line alignment, 0.1 us where ``arr.ctypes.data`` takes
    0.8 (two of them per B=1 inference of ~55 us)."""
    cdef Py_buffer view
    PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
    address = <size_t>view.buf
    PyBuffer_Release(&view)
    return address


def openmp_enabled():
    """True when this module was compiled with OpenMP (threads > 1 possible)."""
    return bool(fastlstm_openmp_enabled())


def openmp_max_threads():
    """``omp_get_max_threads()`` of this module's OpenMP runtime, for the calling thread:
    the size of its next parallel region without a ``num_threads`` (``OMP_NUM_THREADS``,
    or a limit that threadpoolctl set through ``omp_set_num_threads``); 0 in a build
    without OpenMP."""
    return fastlstm_max_threads() if fastlstm_openmp_enabled() else 0


ctypedef fused floating:
    float
    double


cdef inline void _gemm_rowmajor(bint trans_b, int m, int n, int k, const floating* A,
                                int lda, const floating* B, int ldb, floating* C,
                                int ldc) noexcept nogil:
    """Row-major ``C (m, n) = A (m, k) @ op(B)``, ``op(B) = B (k, n)`` or ``B.T`` for B (n, k).

    BLAS is column-major, where a row-major matrix reads as its transpose, so this asks
    for ``C.T = op(B).T @ A.T``: the operands swap and A needs no transpose flag.

    A single row (a batch of one, the last sequence left in a chunk) is a matrix-vector
    product: OpenBLAS's gemm packs all of B for it on every call. Measured per step of
    (1, 150, 256, 256), one thread, gemm / gemv: 103 / 9 us with OpenBLAS's Haswell
    (AVX2) kernels, 15 / 5 us with its SkylakeX ones. A few rows, float32, ``B`` not
    transposed, on CPUs without AVX-512: small_gemm_avx2.h (``_SMALL_GEMM``).
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'N'
    cdef floating alpha = 1
    cdef floating beta = 0
    cdef int one = 1
    if m == 0:
        return
    if m == 1:
        # c (n) = op(B) applied to a: row-major B (k, n) is, column-major, an (n, k)
        # matrix with leading dimension ldb (so 'N'); B (n, k) is a (k, n) one ('T')
        if trans_b:
            if floating is float:
                sgemv(&ta, &k, &n, &alpha, <float*>B, &ldb, <float*>A, &one, &beta, C, &one)
            else:
                dgemv(&ta, &k, &n, &alpha, <double*>B, &ldb, <double*>A, &one, &beta, C,
                      &one)
        else:
            if floating is float:
                sgemv(&ta, &n, &k, &alpha, <float*>B, &ldb, <float*>A, &one, &beta, C, &one)
            else:
                dgemv(&ta, &n, &k, &alpha, <double*>B, &ldb, <double*>A, &one, &beta, C,
                      &one)
        return
    if floating is float:
        if _SMALL_GEMM and not trans_b and m <= FL_SMALL_GEMM_MAX_ROWS and n % 32 == 0:
            fl_small_gemm_f32(m, n, k, <float*>A, lda, <float*>B, ldb, C, ldc)
            return
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


def _chunk_order(const int64_t[::1] seq_len, Py_ssize_t n_chunks=1):
    """Rows sorted by length, longest first (stable), dealt round-robin to ``n_chunks``
    chunks: chunk k holds ``order[_chunk_start(k) : _chunk_start(k + 1)]``, still sorted.

    Dealing balances the chunks for variable lengths: cut from the sorted batch, one
    chunk got all the long sequences and its thread ran alone at the end (64 sequences of
    25-100 steps: torch padded / fastlstm inference 0.55 measured with cut chunks).
    """
    cdef Py_ssize_t b, B = seq_len.shape[0]
    for b in range(1, B):
        if seq_len[b] > seq_len[b - 1]:
            rows = np.argsort(-np.asarray(seq_len), kind="stable").astype(np.int64)
            break
    else:      # already longest first (equal lengths, a batch of one): 1.7 -> 0.3 us
        rows = np.arange(B, dtype=np.int64)
    if n_chunks <= 1:
        return rows
    return np.concatenate([rows[k::n_chunks] for k in range(n_chunks)])


cdef inline Py_ssize_t _chunk_start(Py_ssize_t k, Py_ssize_t B, Py_ssize_t n) noexcept nogil:
    """First row (in the dealt order) of chunk k of n over B rows: sizes B // n or + 1."""
    return k * (B // n) + min(k, B % n)


cdef void _row_strides(const floating[:, :, :] rows, Py_ssize_t* along_0,
                       Py_ssize_t* along_1) except *:
    """Strides in elements of the first two axes of ``rows``, whose last is contiguous."""
    if rows.shape[2] > 1 and rows.strides[2] != sizeof(floating):
        raise ValueError("the last axis must be contiguous")
    along_0[0] = rows.strides[0] // <Py_ssize_t>sizeof(floating)
    along_1[0] = rows.strides[1] // <Py_ssize_t>sizeof(floating)


cdef void _load_sorted_state(const floating* h0, const floating* c0, const int64_t* order,
                             Py_ssize_t B, Py_ssize_t H, floating* h_dst,
                             floating* c_dst) noexcept nogil:
    """Rows ``order[r]`` of the initial state (B, H) into row r of ``h_dst`` and ``c_dst``:
    the sorted, contiguous state of the hidden-unit split."""
    cdef Py_ssize_t r, u
    for r in range(B):
        for u in range(H):
            h_dst[r * H + u] = h0[order[r] * H + u]
            c_dst[r * H + u] = c0[order[r] * H + u]


cdef object _work_arrays(str name, dtype, Py_ssize_t n, const Py_ssize_t* sizes,
                        Py_ssize_t* offsets):
    """One scratch array (fastlstm._workspace: cache-line aligned, reused between calls)
    for ``n`` arrays of ``sizes[i]`` items, array i at item ``offsets[i]``, each on a cache
    line of its own: the per-call buffers whose rows or slices the threads write side by
    side, in one allocation (five scratch calls cost ~4 us of a ~80 us B=1 inference)."""
    cdef Py_ssize_t per_line = CACHE_LINE // np.dtype(dtype).itemsize, total = 0, i
    for i in range(n):
        offsets[i] = total
        total += (sizes[i] + per_line - 1) // per_line * per_line
    return scratch(name, (max(total, 1),), dtype)


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
            if floating is float:
                fl_rnn_fwd_row_f32(H, &xproj[(t * B + b) * H], &z_loc[r * H], &h_loc[r * H],
                                   &hs[((t + 1) * B + b) * H])
            else:
                fl_rnn_fwd_row_f64(H, &xproj[(t * B + b) * H], &z_loc[r * H], &h_loc[r * H],
                                   &hs[((t + 1) * B + b) * H])


cdef void _rnn_backward_chunk(const floating* W, const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, const floating* hs, const floating* d_out,
                              floating* dh, floating* dz, floating* dh_loc,
                              floating* dz_loc) noexcept nogil:
    cdef Py_ssize_t r, u, t, b, o, n_active = 0, n_steps = seq_len[rows[0]]
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            for u in range(H):
                dh_loc[n_active * H + u] = dh[rows[n_active] * H + u]
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            o = (t * B + b) * H
            if floating is float:
                fl_rnn_bwd_row_f32(H, &hs[o + B * H], &d_out[o], &dh_loc[r * H],
                                   &dz_loc[r * H], &dz[o])
            else:
                fl_rnn_bwd_row_f64(H, &hs[o + B * H], &d_out[o], &dh_loc[r * H],
                                   &dz_loc[r * H], &dz[o])
        _gemm_rowmajor(True, n_active, H, H, dz_loc, H, W, H, dh_loc, H)
    for r in range(n_active):          # rows of length 0 keep dh as it came
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]


def rnn_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                const int64_t[::1] seq_len, floating[:, :, ::1] hs, int n_threads,
                Py_ssize_t chunk_rows):
    """Basic RNN recurrence; see ``fastlstm.reference.rnn_forward``."""
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_chunks, k, start
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    cdef Py_ssize_t T = hs.shape[0] - 1
    _check_counts(H, n_threads, chunk_rows)
    _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, H, 0, 2)
    _check_lengths(seq_len, B, T)
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # each chunk's rows written by one thread: cache-line aligned (_workspace)
    cdef floating[:, ::1] h_loc = scratch("rnn_forward_h", (B, H), dtype)
    cdef floating[:, ::1] z_loc = scratch("rnn_forward_z", (B, H), dtype)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _rnn_forward_chunk(&xproj[0, 0, 0], &W[0, 0], &seq_len[0], &order[start],
                           _chunk_start(k + 1, B, n_chunks) - start, B, H, &hs[0, 0, 0],
                           &h_loc[start, 0], &z_loc[start, 0])


def rnn_backward(const floating[:, ::1] W, const int64_t[::1] seq_len,
                 const floating[:, :, ::1] hs, const floating[:, :, ::1] d_outputs,
                 floating[:, ::1] dh, floating[:, :, ::1] dz, int n_threads,
                 Py_ssize_t chunk_rows):
    """Backward of the basic RNN; see ``fastlstm.reference.rnn_backward``."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    cdef Py_ssize_t T = d_outputs.shape[0]
    _check_counts(H, n_threads, chunk_rows)
    _expect("d_outputs", d_outputs.shape[0], d_outputs.shape[1], d_outputs.shape[2],
            T, B, H, 3)
    _expect("hs", hs.shape[0], hs.shape[1], hs.shape[2], T + 1, B, H, 3)
    _expect("dz", dz.shape[0], dz.shape[1], dz.shape[2], T, B, H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, H, 0, 2)
    _check_lengths(seq_len, B, T)
    if B == 0 or T == 0:
        return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # each chunk's rows written by one thread: cache-line aligned (_workspace)
    cdef floating[:, ::1] dh_loc = scratch("rnn_backward_dh", (B, H), dtype)
    cdef floating[:, ::1] dz_loc = scratch("rnn_backward_dz", (B, H), dtype)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _rnn_backward_chunk(&W[0, 0], &seq_len[0], &order[start],
                            _chunk_start(k + 1, B, n_chunks) - start,
                            B, H, &hs[0, 0, 0], &d_outputs[0, 0, 0], &dh[0, 0],
                            &dz[0, 0, 0], &dh_loc[start, 0], &dz_loc[start, 0])


# -------------------------------------------------------------------------------- LSTM
cdef void _lstm_forward_chunk(const floating* xproj, const floating* W,
                              const floating* W_fused, const floating* peep, bint use_peep,
                              floating forget_bias, floating clip, const int64_t* seq_len,
                              const int64_t* rows, Py_ssize_t n_rows, Py_ssize_t B,
                              Py_ssize_t H, floating* hs, floating* cs, floating* acts,
                              floating* c_unclipped, floating* h_loc, floating* h_alt,
                              floating* c_loc, floating* z_loc, floating* act_tmp,
                              Py_ssize_t I, const floating* x, const floating* bias,
                              const void* out_layout) noexcept nogil:
    # x != NULL (fused path only): z = [x_t, h] [W_x; W_h] + bias, xproj unused.
    # out_layout (fused path only): where h and c of each step go (fl_layout_f32); hs and cs
    # are only read at row 0, the initial state.
    # acts == NULL (inference): the activations go to act_tmp (4H, in L1), overwritten
    # every row. Not a separate no-store code path: that one rounded differently (GCC
    # contracts to FMA per code shape), and inference must equal the training forward.
    cdef Py_ssize_t r, u, t, b, n_active = n_rows, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so
    cdef floating* cun
    cdef floating* act
    cdef floating* swap
    for r in range(n_rows):
        for u in range(H):
            h_loc[r * H + u] = hs[rows[r] * H + u]
            c_loc[r * H + u] = cs[rows[r] * H + u]
    if floating is float:
        if W_fused != NULL:                # fused product + gate math (fused_step.h)
            for t in range(n_steps):
                while seq_len[rows[n_active - 1]] <= t:
                    n_active -= 1
                fl_lstm_fwd_fused_f32(n_active, H, h_loc, W_fused, rows, B, t, xproj, I, x,
                                      bias, peep, use_peep, forget_bias, clip, c_loc, h_alt,
                                      acts, act_tmp, <const fl_layout_f32*>out_layout,
                                      c_unclipped, 0, (H + 15) // 16)
                swap = h_loc                   # h_alt holds step t's h: read it next step
                h_loc = h_alt
                h_alt = swap
            return
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        _gemm_rowmajor(False, n_active, G, H, h_loc, H, W, G, z_loc, G)
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G            # offset of (t, b) in xproj / acts
            so = ((t + 1) * B + b) * H      # offset of (t + 1, b) in hs / cs
            cun = &c_unclipped[(t * B + b) * H] if clip > 0 else NULL
            act = &acts[xo] if acts != NULL else act_tmp
            if floating is float:
                fl_lstm_fwd_row_f32(H, H, H, &xproj[xo], &z_loc[r * G], peep, use_peep,
                                    forget_bias, clip, &c_loc[r * H], &h_loc[r * H],
                                    act, &cs[so], &hs[so], cun)
            else:
                fl_lstm_fwd_row_f64(H, H, H, &xproj[xo], &z_loc[r * G], peep, use_peep,
                                    forget_bias, clip, &c_loc[r * H], &h_loc[r * H],
                                    act, &cs[so], &hs[so], cun)


cdef void _lstm_backward_chunk(const floating* W, const floating* WT_fused,
                               const floating* W_t,
                               const floating* peep, bint use_peep,
                               floating clip, const int64_t* seq_len, const int64_t* rows,
                               Py_ssize_t n_rows, Py_ssize_t B, Py_ssize_t H,
                               const floating* cs, const floating* acts,
                               const floating* c_unclipped, const floating* d_out,
                               Py_ssize_t d_t, Py_ssize_t d_b,
                               floating* dh, floating* dc, floating* dz, floating* dh_loc,
                               floating* dc_loc, floating* dz_loc) noexcept nogil:
    # d_out row (t, b) at t * d_t + b * d_b: time- or batch-major, no transposing copy
    cdef Py_ssize_t r, u, t, b, n_active = 0, n_steps = seq_len[rows[0]], G = 4 * H
    cdef Py_ssize_t xo, so, do
    cdef const floating* cun
    for t in range(n_steps - 1, -1, -1):
        while n_active < n_rows and seq_len[rows[n_active]] > t:   # rows whose end is t
            for u in range(H):
                dh_loc[n_active * H + u] = dh[rows[n_active] * H + u]
                dc_loc[n_active * H + u] = dc[rows[n_active] * H + u]
            n_active += 1
        for r in range(n_active):
            b = rows[r]
            xo = (t * B + b) * G
            so = (t * B + b) * H           # offset of (t, b) in cs (c_prev)
            do = t * d_t + b * d_b
            cun = &c_unclipped[so] if clip > 0 else NULL
            if floating is float:
                fl_lstm_bwd_row_f32(H, H, &acts[xo], &cs[so], &cs[so + B * H], cun, peep,
                                    use_peep, clip, &d_out[do], &dh_loc[r * H],
                                    &dc_loc[r * H], &dz_loc[r * G], &dz[xo])
            else:
                fl_lstm_bwd_row_f64(H, H, &acts[xo], &cs[so], &cs[so + B * H], cun, peep,
                                    use_peep, clip, &d_out[do], &dh_loc[r * H],
                                    &dc_loc[r * H], &dz_loc[r * G], &dz[xo])
        if floating is float:
            if WT_fused != NULL:           # packed-tile product (fused_step.h)
                fl_gemm_dz_wt_f32(n_active, H, dz_loc, WT_fused, dh_loc, 0, (H + 63) // 64)
                continue
        if W_t != NULL:                    # dz (rows, 4H) @ W.T held as (4H, H)
            _gemm_rowmajor(False, n_active, H, G, dz_loc, G, W_t, H, dh_loc, H)
            continue
        _gemm_rowmajor(True, n_active, H, G, dz_loc, G, W, G, dh_loc, H)
    for r in range(n_active):          # rows of length 0 keep dh, dc as they came
        for u in range(H):
            dh[rows[r] * H + u] = dh_loc[r * H + u]
            dc[rows[r] * H + u] = dc_loc[r * H + u]


cdef void _lstm_forward_fused_units_thread(
        const float* W_fused, const float* xproj, Py_ssize_t I, const float* x,
        const float* bias, const float* peep, bint use_peep, float forget_bias, float clip,
        const int64_t* seq_len, const int64_t* rows, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t n_slices, Py_ssize_t slice_groups, float* acts, float* act_tmp,
        const fl_layout_f32* out, float* c_unclipped, float* h_buf,
        float* c_loc, fastlstm_spin_barrier* barrier, const float* pack_wh,
        const float* pack_wx) noexcept nogil:
    # The fused step with the hidden units split over threads: slice s = groups
    # s * slice_groups ..., all rows; thread k runs slices k, k + n_threads, ...; one
    # barrier per step lets every slice see the whole new h (double-buffered in h_buf).
    # Each row's sums are the chunked path's, so are its bits. With pack_wh, each thread
    # first packs the groups of its own slices into W_fused: the only groups it reads.
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef Py_ssize_t s, t, g_lo, g_hi, n_active = B, n_steps = seq_len[rows[0]]
    cdef Py_ssize_t groups = (H + 15) // 16
    if pack_wh != NULL:
        s = tid
        while s < n_slices:
            g_lo = s * slice_groups
            fl_pack_fused_rect_f32(I, pack_wx, H, pack_wh, <float*>W_fused, 0, I + H, g_lo,
                                   min(groups, g_lo + slice_groups))
            s = s + n_threads
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        s = tid
        while s < n_slices:
            g_lo = s * slice_groups
            g_hi = min(groups, g_lo + slice_groups)
            fl_lstm_fwd_fused_f32(n_active, H, &h_buf[(t % 2) * B * H], W_fused, rows, B, t,
                                  xproj, I, x, bias, peep, use_peep, forget_bias, clip,
                                  c_loc, &h_buf[((t + 1) % 2) * B * H], acts, act_tmp, out,
                                  c_unclipped, g_lo, g_hi)
            s = s + n_threads
        fastlstm_spin_barrier_wait(barrier, n_threads)


def lstm_forward(const floating[:, :, ::1] xproj, const floating[:, ::1] W,
                 const floating[:, ::1] peepholes, bint use_peepholes, double forget_bias,
                 double cell_clip, const int64_t[::1] seq_len, floating[:, :, ::1] hs,
                 floating[:, :, ::1] cs, floating[:, :, ::1] acts,
                 floating[:, :, ::1] c_unclipped, int n_threads, Py_ssize_t chunk_rows,
                 const floating[:, ::1] W_fused=None, const floating[:, :, :] x=None,
                 const floating[::1] bias=None, floating[:, :, ::1] out=None,
                 bint out_batch_major=False, floating[:, ::1] c_final=None,
                 Py_ssize_t unit_slices=0, floating[:, ::1] pack_into=None,
                 const floating[:, ::1] pack_wh=None, const floating[:, ::1] pack_wx=None):
    """LSTM recurrence; see ``fastlstm.reference.lstm_forward``.

    ``W_fused``: ``W`` packed by ``fastlstm.backends._chunking.pack_fused`` to run the
    fused step (float32 only, where :func:`have_fused_step`); None: BLAS.
    ``x`` (T, B, I) and ``bias`` (4H) with ``W_fused`` packed from ``[W_x; W_h]``: the
    fused step computes ``z = [x_t, h] [W_x; W_h] + bias`` itself and ``xproj`` is not
    read (it may be empty); ``x`` may be strided in T and B (a transposed view of
    batch-major inputs), not in I.
    ``out`` ((B, T, H) with ``out_batch_major``, else (T, B, H)) and ``c_final`` (B, H,
    holding the initial cell state on entry), fused path only: inference without a
    history. Outputs go straight to ``out`` (written at existing steps only), the last
    cell state of each sequence to ``c_final``; ``hs`` and ``cs`` are only read at row 0
    (the initial state) and ``acts`` must be empty.
    ``unit_slices`` > 0 (fused path only): the whole batch in one loop with the hidden
    units split into that many slices of 16-unit groups, one barrier per step, instead
    of batch chunks (``chunk_rows`` unused).
    ``pack_into`` (instead of ``W_fused``; float32, fused kernels) with ``pack_wh`` (W_h) and,
    with ``x``, ``pack_wx`` (W_x): the threads pack the weights themselves, each what it
    reads: with ``unit_slices``, the groups of its slices into ``pack_into`` ((H + 15) //
    16 rows of (I + H) * 64); in batch chunks, a whole copy of its own (copy k: rows
    k * groups ...; ``pack_into`` holds one per thread). A copy packed once and read by
    every core cost the next call's packing a wait on the other core for every line: 50
    us against 9.5 at (8, 100, 64, 128)'s 393 KB.
    """
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], T = hs.shape[0] - 1, n_chunks, k, start
    cdef Py_ssize_t I = 0, x_t = 0, x_b = 0
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], hs.shape[0], B, H, 3)
    if out is not None:
        T = out.shape[1] if out_batch_major else out.shape[0]
    _check_counts(H, n_threads, chunk_rows if unit_slices <= 0 else unit_slices)
    _expect("W", W.shape[0], W.shape[1], 0, H, 4 * H, 0, 2)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    if x is None:
        _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, 4 * H, 3)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, False)
    cdef const floating* xp = NULL
    cdef const floating* xx = NULL
    cdef const floating* bb = NULL
    if B == 0 or T == 0:
        return
    cdef bint fused_given = W_fused is not None or pack_into is not None
    if x is not None:
        if not fused_given or floating is not float or bias is None:
            raise ValueError("x needs W_fused (float32, fused kernels) and bias")
        I = x.shape[2]
        if x.shape[0] != T or x.shape[1] != B or bias.shape[0] != 4 * H:
            raise ValueError("x must be (T, B, I) and bias (4H,)")
        xx = &x[0, 0, 0] if I > 0 else NULL
        _row_strides(x, &x_t, &x_b)
        bb = &bias[0]
    else:
        xp = &xproj[0, 0, 0]
    dtype = np.float32 if floating is float else np.float64
    cdef int64_t[::1] order
    cdef Py_ssize_t sizes[5]
    cdef Py_ssize_t offs[5]
    cdef floating[::1] work
    cdef floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating* ac = &acts[0, 0, 0] if acts.shape[0] > 0 else NULL    # empty: inference
    cdef floating fb = <floating>forget_bias, clip = <floating>cell_clip
    cdef const floating* wf = NULL
    cdef fl_layout_f32 layout
    if floating is float:
        layout.x_t, layout.x_b = x_t, x_b
        if out is None:                    # the cache rows hs[t + 1, b], cs[t + 1, b]
            layout.h, layout.h_t, layout.h_b = &hs[1, 0, 0], B * H, H
            layout.c, layout.c_t, layout.c_b = &cs[1, 0, 0], B * H, H
        else:
            if not fused_given or x is None or c_final is None or ac != NULL:
                raise ValueError("out needs the fused path with x, c_final and no acts")
            if (out.shape[0], out.shape[1]) != ((B, T) if out_batch_major else (T, B)) \
                    or out.shape[2] != H or c_final.shape[0] != B or c_final.shape[1] != H:
                raise ValueError("out must be (B, T, H) or (T, B, H), c_final (B, H)")
            layout.h, layout.h_t, layout.h_b = &out[0, 0, 0], H, T * H
            if not out_batch_major:
                layout.h_t, layout.h_b = B * H, H
            layout.c, layout.c_t, layout.c_b = &c_final[0, 0], 0, H
    elif out is not None:
        raise ValueError("out is for the fused float32 path")
    if W_fused is not None and floating is float:
        if W_fused.shape[0] != (H + 15) // 16 or W_fused.shape[1] != (I + H) * 64:
            raise ValueError("W_fused is not W (or [W_x; W_h] with x) packed by pack_fused")
        wf = &W_fused[0, 0]
    cdef const floating* pwh = NULL
    cdef const floating* pwx = NULL
    cdef Py_ssize_t groups = (H + 15) // 16, copy_stride = groups * (I + H) * 64
    if pack_into is not None:
        if floating is not float or W_fused is not None or pack_wh is None:
            raise ValueError("pack_into needs float32, pack_wh and no W_fused")
        if pack_wh.shape[0] != H or pack_wh.shape[1] != 4 * H or (I > 0) != (
                pack_wx is not None) or (pack_wx is not None and (
                    pack_wx.shape[0] != I or pack_wx.shape[1] != 4 * H)):
            raise ValueError("pack_wh must be W_h (H, 4H) and pack_wx W_x (I, 4H), with x")
        if pack_into.shape[1] != (I + H) * 64 or pack_into.shape[0] < groups * (
                1 if unit_slices > 0 else min(n_threads, (B + chunk_rows - 1) // chunk_rows)):
            raise ValueError("pack_into must hold (H + 15) // 16 rows of (I + H) * 64 per "
                             "thread (one copy with unit_slices)")
        wf = &pack_into[0, 0]
        pwh = &pack_wh[0, 0]
        pwx = &pack_wx[0, 0] if I > 0 else NULL
    cdef Py_ssize_t slice_groups
    cdef fastlstm_spin_barrier barrier
    cdef float[::1] units_work
    if unit_slices > 0:
        if floating is not float:
            raise ValueError("unit_slices needs the fused float32 path")
        else:
            if wf == NULL:
                raise ValueError("unit_slices needs the fused float32 path")
            slice_groups = ((H + 15) // 16 + unit_slices - 1) // unit_slices
            order = _chunk_order(seq_len)
            # h (double-buffered), c and act written side by side by the threads
            sizes[0], sizes[1], sizes[2] = 2 * B * H, B * H, 4 * H
            units_work = _work_arrays("lstm_forward_units", np.float32, 3, sizes, offs)
            _load_sorted_state(&hs[0, 0, 0], &cs[0, 0, 0], &order[0], B, H,
                               &units_work[offs[0]], &units_work[offs[1]])
            fastlstm_spin_barrier_init(&barrier)
            with nogil, parallel(num_threads=min(n_threads, unit_slices)):
                _lstm_forward_fused_units_thread(
                    wf, xp, I, xx, bb, &peepholes[0, 0], use_peepholes, fb, clip,
                    &seq_len[0], &order[0], B, H, unit_slices, slice_groups, ac,
                    &units_work[offs[2]], &layout, cu, &units_work[offs[0]],
                    &units_work[offs[1]], &barrier, pwh, pwx)
            return
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    order = _chunk_order(seq_len, n_chunks)
    # h, h_alt, c, z and act: each chunk's rows written by one thread
    sizes[0], sizes[1], sizes[2], sizes[3] = B * H, B * H, B * H, B * 4 * H
    sizes[4] = n_chunks * 4 * H
    work = _work_arrays("lstm_forward", dtype, 5, sizes, offs)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    cdef int tid
    cdef const floating* own_wf
    with nogil, parallel(num_threads=n_threads):
        own_wf = wf
        if pwh != NULL:
            if floating is float:
                # each thread packs a copy of its own and reads only that one
                tid = threadid()
                own_wf = wf + tid * copy_stride
                fl_pack_fused_rect_f32(I, pwx, H, pwh, <float*>own_wf, 0, I + H, 0, groups)
        for k in prange(n_chunks, schedule="dynamic"):
            start = _chunk_start(k, B, n_chunks)
            _lstm_forward_chunk(xp, &W[0, 0], own_wf, &peepholes[0, 0], use_peepholes, fb,
                                clip, &seq_len[0], &order[start],
                                _chunk_start(k + 1, B, n_chunks) - start, B, H, &hs[0, 0, 0],
                                &cs[0, 0, 0], ac, cu, &work[offs[0] + start * H],
                                &work[offs[1] + start * H], &work[offs[2] + start * H],
                                &work[offs[3] + start * 4 * H], &work[offs[4] + k * 4 * H], I,
                                xx, bb, &layout)


cdef const floating* _transposed_weights(const floating[:, ::1] W_t,
                                         Py_ssize_t H) except? NULL:
    """The address of ``W_t`` (``W.T``, (4H, H), for the BLAS-path backward), or NULL for
    None."""
    if W_t is None:
        return NULL
    if W_t.shape[0] != 4 * H or W_t.shape[1] != H:
        raise ValueError("W_t must be W.T, (4H, H)")
    return &W_t[0, 0]


cdef int _check_lstm_backward(const floating[:, ::1] W, const floating[:, ::1] peepholes,
                              double cell_clip, const int64_t[::1] seq_len,
                              const floating[:, :, ::1] cs, const floating[:, :, ::1] acts,
                              const floating[:, :, ::1] c_unclipped,
                              const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                              floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads,
                              Py_ssize_t per_chunk) except -1:
    """The shapes both LSTM backward entry points rely on (T from ``d_outputs``, B and H
    from ``dh``)."""
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], T = d_outputs.shape[0]
    _check_counts(H, n_threads, per_chunk)
    _expect("d_outputs", d_outputs.shape[0], d_outputs.shape[1], d_outputs.shape[2],
            T, B, H, 3)
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], T + 1, B, H, 3)
    _expect("dc", dc.shape[0], dc.shape[1], 0, B, H, 0, 2)
    _expect("dz", dz.shape[0], dz.shape[1], dz.shape[2], T, B, 4 * H, 3)
    _expect("W", W.shape[0], W.shape[1], 0, H, 4 * H, 0, 2)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, True)
    return 0


def lstm_backward(const floating[:, ::1] W, const floating[:, ::1] peepholes,
                  bint use_peepholes, double cell_clip, const int64_t[::1] seq_len,
                  const floating[:, :, ::1] cs, const floating[:, :, ::1] acts,
                  const floating[:, :, ::1] c_unclipped,
                  const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                  floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads,
                  Py_ssize_t chunk_rows, const floating[:, :, ::1] WT_fused=None,
                  const floating[:, ::1] W_t=None):
    """Backward of the LSTM; see ``fastlstm.reference.lstm_backward``.

    ``d_outputs`` (T, B, H) may be strided in T and B (a transposed view of batch-major
    gradients), not in H. ``WT_fused``: ``W.T`` packed by
    ``fastlstm.backends._chunking.pack_fused_t`` for the fused float32 product (where
    :func:`have_fused_step`); None: BLAS. ``W_t``: ``W.T`` (4H, H), C-contiguous, for the
    BLAS path: its per-step product then has an untransposed B, which the few-row
    kernel of small_gemm_avx2.h takes (see :func:`small_gemm_enabled`).
    """
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1], n_chunks, k, start
    _check_lstm_backward(W, peepholes, cell_clip, seq_len, cs, acts, c_unclipped, d_outputs,
                         dh, dc, dz, n_threads, chunk_rows)
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef Py_ssize_t d_t, d_b
    _row_strides(d_outputs, &d_t, &d_b)
    n_chunks = (B + chunk_rows - 1) // chunk_rows
    cdef int64_t[::1] order = _chunk_order(seq_len, n_chunks)
    dtype = np.float32 if floating is float else np.float64
    # dh, dc and dz: each chunk's rows written by one thread
    cdef Py_ssize_t sizes[3]
    cdef Py_ssize_t offs[3]
    sizes[0], sizes[1], sizes[2] = B * H, B * H, B * 4 * H
    cdef floating[::1] work = _work_arrays("lstm_backward", dtype, 3, sizes, offs)
    cdef const floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating clip = <floating>cell_clip
    cdef const floating* wt = NULL
    if WT_fused is not None and floating is float:
        if WT_fused.shape[0] != (H + 63) // 64 or WT_fused.shape[1] != 4 * H \
                or WT_fused.shape[2] != 64:
            raise ValueError("WT_fused is not W.T packed by pack_fused_t")
        wt = &WT_fused[0, 0, 0]
    cdef const floating* w_t = _transposed_weights(W_t, H)
    n_threads = min(n_threads, n_chunks)         # a one-chunk batch wakes no other thread
    for k in prange(n_chunks, nogil=True, num_threads=n_threads, schedule="dynamic"):
        start = _chunk_start(k, B, n_chunks)
        _lstm_backward_chunk(&W[0, 0], wt, w_t, &peepholes[0, 0], use_peepholes, clip,
                             &seq_len[0],
                             &order[start], _chunk_start(k + 1, B, n_chunks) - start, B, H,
                             &cs[0, 0, 0],
                             &acts[0, 0, 0], cu, &d_outputs[0, 0, 0], d_t, d_b, &dh[0, 0],
                             &dc[0, 0], &dz[0, 0, 0], &work[offs[0] + start * H],
                             &work[offs[1] + start * H], &work[offs[2] + start * 4 * H])


# --------------------------------------------------------------- the GEMMs outside the loop
def gemm_tn_tiles(segments, const float[:, :] b, float[:, ::1] out, int n_threads,
                  const int64_t[::1] rows=None):
    """``out (M, N) = a.T @ b`` for ``a`` = the column-wise concatenation of
    ``segments`` (an array or a sequence of arrays, each (K, M_s), with M the sum of the
    M_s) and ``b`` (K, N) with contiguous rows, N a multiple of 64, by the register tiles
    of fused_step.h (where :func:`have_fused_step`). A segment's rows may be any distance
    apart, 0 included (``np.broadcast_to(ones, (K, 1))``: the bias gradient's column
    sums). ``rows``: sum over these rows of ``a`` and ``b`` only (no gathered copies).
    64-column blocks of ``out`` are dealt to the OpenMP threads; each element is one sum
    in fixed pieces, so any thread count gives the same bits."""
    if not _FUSED_STEP:
        raise RuntimeError("the fused kernels do not run here: use the BLAS blocks")
    if not isinstance(segments, (list, tuple)):
        segments = [segments]
    cdef Py_ssize_t K = b.shape[0], N = b.shape[1], n_seg = len(segments), s, M = 0
    cdef Py_ssize_t K_sum = K
    cdef const int64_t* krows = NULL
    if rows is not None:
        if rows.shape[0] and (np.min(rows) < 0 or np.max(rows) >= K):
            raise ValueError("rows must index the K rows of b")
        K_sum = rows.shape[0]
        krows = &rows[0] if K_sum else NULL
    if n_seg < 1 or n_seg > 8:
        raise ValueError("gemm_tn_tiles takes 1 to 8 segments")
    cdef const float* seg_ptr[8]
    cdef Py_ssize_t seg_ld[8]
    cdef Py_ssize_t seg_m[8]
    cdef const float[:, :] a
    for s in range(n_seg):
        a = segments[s]
        if a.shape[0] != K:
            raise ValueError("every segment needs the K rows of b")
        if a.shape[1] > 1 and a.strides[1] != sizeof(float):
            raise ValueError("gemm_tn_tiles needs rows with contiguous elements")
        seg_ptr[s] = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
        seg_ld[s] = a.strides[0] // <Py_ssize_t>sizeof(float)
        seg_m[s] = a.shape[1]
        M += a.shape[1]
    if out.shape[0] != M or out.shape[1] != N or N % 64:
        raise ValueError("gemm_tn_tiles needs out (M, N) and N % 64 == 0")
    if b.shape[1] > 1 and b.strides[1] != sizeof(float):
        raise ValueError("gemm_tn_tiles needs rows with contiguous elements")
    if M == 0 or N == 0:
        return
    if K_sum == 0:
        out[...] = 0
        return
    cdef Py_ssize_t ldb = b.strides[0] // <Py_ssize_t>sizeof(float)
    cdef Py_ssize_t n_blocks = N // 64, per, k
    n_threads = max(1, min(n_threads, n_blocks))
    per = (n_blocks + n_threads - 1) // n_threads
    # each thread's copies of B's pieces (128 KB rows, on cache lines: _workspace)
    cdef float[:, ::1] pieces = scratch("gemm_tn_pieces",
                                        (n_threads, FL_TN_GROUP * FL_TN_KS * 64), np.float32)
    for k in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
        if k * per < n_blocks:
            fl_gemm_tn_f32(K_sum, krows, n_seg, seg_ptr, seg_ld, seg_m, &b[0, 0], ldb,
                           &out[0, 0], N, k * per, min(n_blocks, (k + 1) * per),
                           &pieces[k, 0])


def swap_leading_axes(const floating[:, :, :] src, floating[:, :, ::1] out, int n_threads):
    """``out[j, i] = src[i, j]``: (A, B, C) with a contiguous last axis into (B, A, C), rows
    of C copied by ``n_threads`` threads (split over B). The batch-major outputs of a
    training forward from its time-major history, and the time-major copy of batch-major
    inputs: NumPy's single-threaded copy was ~50 us of a seed-size training step, while
    the other core waited."""
    cdef Py_ssize_t A = src.shape[0], B = src.shape[1], C = src.shape[2], i, j, s_a, s_b
    if out.shape[0] != B or out.shape[1] != A or out.shape[2] != C:
        raise ValueError("out must be (B, A, C) for src (A, B, C)")
    _row_strides(src, &s_a, &s_b)                # checks the last axis
    if A == 0 or B == 0 or C == 0:
        return
    for j in prange(B, nogil=True, num_threads=max(1, min(n_threads, B)),
                    schedule="static"):
        for i in range(A):
            memcpy(&out[j, i, 0], &src[i, j, 0], C * sizeof(floating))


def gemm_blocks(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
                bint trans_a, bint trans_b, Py_ssize_t row_block, Py_ssize_t col_block,
                int n_threads):
    """``out (M, N) = op(a) @ op(b)`` cut into blocks of ``row_block`` x ``col_block``,
    one single-threaded BLAS call per block, blocks over the OpenMP threads (the kernels'
    own pool: a second pool would fight the spinning OpenMP workers for the cores;
    measured 12.1 ms against 8.4 ms for a seed-size backward).

    ``op(a)`` is ``a`` (M, K) or, with ``trans_a``, ``a.T`` for ``a`` (K, M); ``op(b)`` is
    ``b`` (K, N) or, with ``trans_b``, ``b.T`` for ``b`` (N, K). Each block computes its
    elements over the whole K, so the split never changes a bit of the result.
    """
    cdef Py_ssize_t M = out.shape[0], N = out.shape[1], K
    cdef Py_ssize_t n_rb, n_cb, k, r0, c0
    cdef int lda, ldb, ldc
    cdef char ta = b'T' if trans_b else b'N'     # column-major view: out.T = op(b).T op(a).T
    cdef char tb = b'T' if trans_a else b'N'
    K = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != M or \
            (b.shape[1] if trans_b else b.shape[0]) != K or \
            (b.shape[0] if trans_b else b.shape[1]) != N:
        raise ValueError(f"gemm_blocks: op(a) {a.shape[0], a.shape[1]} (trans {trans_a}) "
                         f"@ op(b) {b.shape[0], b.shape[1]} (trans {trans_b}) does not give "
                         f"out {M, N}")
    if row_block < 1 or col_block < 1 or n_threads < 1:
        raise ValueError("row_block, col_block and n_threads must be at least 1")
    if max(M, N, K, a.shape[1], b.shape[1]) > INT_MAX:
        raise ValueError("gemm_blocks: a size does not fit BLAS's C int")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[...] = 0
        return
    n_rb = (M + row_block - 1) // row_block
    n_cb = (N + col_block - 1) // col_block
    lda = <int>a.shape[1]
    ldb = <int>b.shape[1]
    ldc = <int>N
    for k in prange(n_rb * n_cb, nogil=True, num_threads=n_threads, schedule="static"):
        r0 = (k // n_cb) * row_block
        c0 = (k % n_cb) * col_block
        _gemm_block(ta, tb, <int>min(col_block, N - c0), <int>min(row_block, M - r0), <int>K,
                    &b[c0, 0] if trans_b else &b[0, c0], ldb,
                    &a[0, r0] if trans_a else &a[r0, 0], lda, &out[r0, c0], ldc)


cdef inline void _gemm_block(char ta, char tb, int n, int m, int k, const floating* B, int ldb,
                             const floating* A, int lda, floating* C,
                             int ldc) noexcept nogil:
    cdef floating alpha = 1, beta = 0
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)



# ------------------------------------------------------- LSTM, hidden units over threads
# For a batch too small to cut into chunks (one chunk = one thread), the hidden units are
# cut into ``n_slices`` slices instead (fixed by the caller from the machine's cores, never
# from the thread count, so the bits do not depend on it). Every step, each slice computes
# its units' four gates for all rows (one GEMM with its packed columns of W_h) and their
# gate math; one barrier per step lets every slice see the whole new h. Thread k runs
# slices k, k + n_threads, ...; h (forward) and dz (backward) are double-buffered so a
# slice writing step t's values never races one still reading step t - 1's.

cdef void _slice_bounds(Py_ssize_t s, Py_ssize_t width, Py_ssize_t H,
                        Py_ssize_t* u0, Py_ssize_t* n) noexcept nogil:
    u0[0] = s * width
    n[0] = min(width, H - s * width)


cdef void _lstm_forward_units_thread(
        const floating* xproj, const floating* W_packed, const floating* peep, bint use_peep,
        floating forget_bias, floating clip, const int64_t* seq_len, const int64_t* rows,
        Py_ssize_t B, Py_ssize_t H, Py_ssize_t n_slices, Py_ssize_t width, floating* hs,
        floating* cs, floating* acts, floating* c_unclipped, floating* h_buf,
        floating* c_loc, floating* z_buf, floating* act_tmp,
        fastlstm_spin_barrier* barrier) noexcept nogil:
    # acts == NULL: as in _lstm_forward_chunk (slices write disjoint units of act_tmp)
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef Py_ssize_t s, r, t, b, u0, n, n_active = B, n_steps = seq_len[rows[0]], G = 4 * H
    cdef floating* h_old
    cdef floating* h_new
    cdef floating* z
    cdef floating* cun
    cdef floating* act
    for t in range(n_steps):
        while seq_len[rows[n_active - 1]] <= t:
            n_active -= 1
        h_old = &h_buf[(t % 2) * B * H]
        h_new = &h_buf[((t + 1) % 2) * B * H]
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            z = &z_buf[s * B * 4 * width]
            _gemm_rowmajor(False, n_active, 4 * n, H, h_old, H, &W_packed[s * H * 4 * width],
                           4 * n, z, 4 * n)
            for r in range(n_active):
                b = rows[r]
                cun = &c_unclipped[(t * B + b) * H + u0] if clip > 0 else NULL
                act = &acts[(t * B + b) * G + u0] if acts != NULL else &act_tmp[u0]
                if floating is float:
                    fl_lstm_fwd_row_f32(n, H, n, &xproj[(t * B + b) * G + u0], &z[r * 4 * n],
                                        &peep[u0], use_peep, forget_bias, clip,
                                        &c_loc[r * H + u0], &h_new[r * H + u0], act,
                                        &cs[((t + 1) * B + b) * H + u0],
                                        &hs[((t + 1) * B + b) * H + u0], cun)
                else:
                    fl_lstm_fwd_row_f64(n, H, n, &xproj[(t * B + b) * G + u0], &z[r * 4 * n],
                                        &peep[u0], use_peep, forget_bias, clip,
                                        &c_loc[r * H + u0], &h_new[r * H + u0], act,
                                        &cs[((t + 1) * B + b) * H + u0],
                                        &hs[((t + 1) * B + b) * H + u0], cun)
            s = s + n_threads
        fastlstm_spin_barrier_wait(barrier, n_threads)


cdef int _check_slices(Py_ssize_t n_slices, Py_ssize_t width, Py_ssize_t H) except -1:
    """``n_slices`` slices of ``width`` units cover the H units, the last one not empty."""
    if n_slices < 1 or n_slices * width < H or (n_slices - 1) * width >= max(H, 1):
        raise ValueError(f"{n_slices} slices of {width} units do not cover H = {H}")
    return 0


def lstm_forward_units(const floating[:, :, ::1] xproj, const floating[:, ::1] W_packed,
                       const floating[:, ::1] peepholes, bint use_peepholes,
                       double forget_bias, double cell_clip, const int64_t[::1] seq_len,
                       floating[:, :, ::1] hs, floating[:, :, ::1] cs,
                       floating[:, :, ::1] acts, floating[:, :, ::1] c_unclipped,
                       int n_threads, Py_ssize_t width):
    """LSTM recurrence with the hidden units split over threads (see above).

    ``W_packed`` (n_slices, H * 4 * width): slice s's columns of ``W`` as an (H, 4 n_s)
    row-major block at the start of row s, gates side by side (n_s = its units).
    Otherwise as ``fastlstm.reference.lstm_forward``.
    """
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2], n_slices = W_packed.shape[0]
    if hs.shape[0] < 1:
        raise ValueError("hs must hold T + 1 rows (the initial state first)")
    cdef Py_ssize_t T = hs.shape[0] - 1
    _check_counts(H, n_threads, width)
    _check_slices(n_slices, width, H)
    _expect("W_packed", W_packed.shape[0], W_packed.shape[1], 0, n_slices, H * 4 * width, 0,
            2)
    _expect("cs", cs.shape[0], cs.shape[1], cs.shape[2], T + 1, B, H, 3)
    _expect("xproj", xproj.shape[0], xproj.shape[1], xproj.shape[2], T, B, 4 * H, 3)
    _expect("peepholes", peepholes.shape[0], peepholes.shape[1], 0, 3, H, 0, 2)
    _check_lengths(seq_len, B, T)
    _check_lstm_history(acts, c_unclipped, cell_clip, T, B, H, False)
    if B == 0 or T == 0:
        return
    cdef int64_t[::1] order = _chunk_order(seq_len)
    dtype = np.float32 if floating is float else np.float64
    # h (double-buffered), c, z and act, written side by side by the threads
    cdef Py_ssize_t sizes[4]
    cdef Py_ssize_t offs[4]
    sizes[0], sizes[1], sizes[2] = 2 * B * H, B * H, n_slices * B * 4 * width
    sizes[3] = 4 * H
    cdef floating[::1] work = _work_arrays("lstm_forward_units_blas", dtype, 4, sizes, offs)
    _load_sorted_state(&hs[0, 0, 0], &cs[0, 0, 0], &order[0], B, H, &work[offs[0]],
                       &work[offs[1]])
    cdef floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating* ac = &acts[0, 0, 0] if acts.shape[0] > 0 else NULL    # empty: inference
    cdef floating fb = <floating>forget_bias, clip = <floating>cell_clip
    cdef fastlstm_spin_barrier barrier
    fastlstm_spin_barrier_init(&barrier)
    with nogil, parallel(num_threads=n_threads):
        _lstm_forward_units_thread(&xproj[0, 0, 0], &W_packed[0, 0], &peepholes[0, 0],
                                   use_peepholes, fb, clip, &seq_len[0], &order[0], B, H,
                                   n_slices, width, &hs[0, 0, 0], &cs[0, 0, 0],
                                   ac, cu, &work[offs[0]], &work[offs[1]], &work[offs[2]],
                                   &work[offs[3]], &barrier)


cdef void _lstm_backward_units_thread(
        const floating* W, const floating* peep, bint use_peep, floating clip,
        const int64_t* seq_len, const int64_t* rows, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t n_slices, Py_ssize_t width, const floating* cs, const floating* acts,
        const floating* c_unclipped, const floating* d_out, Py_ssize_t d_t, Py_ssize_t d_b,
        floating* dh, floating* dc, floating* dz, floating* dh_loc, floating* dc_loc,
        floating* dz_buf, const floating* WT_fused, const floating* W_t,
        fastlstm_spin_barrier* barrier) noexcept nogil:
    # WT_fused != NULL (float32, fused kernels): the slice's dz W_h^T by the packed tiles of
    # fused_step.h (slices are whole 64-unit blocks then), else one BLAS call per slice.
    cdef int tid = threadid(), n_threads = fastlstm_num_threads()
    cdef Py_ssize_t s, r, t, b, u, u0, n, xo, so, do, G = 4 * H
    cdef Py_ssize_t n_active = 0, n_steps = seq_len[rows[0]], n_before
    cdef floating* dzl
    cdef const floating* cun
    for t in range(n_steps - 1, -1, -1):
        n_before = n_active
        while n_active < B and seq_len[rows[n_active]] > t:     # rows whose end is t
            n_active += 1
        dzl = &dz_buf[(t % 2) * B * G]
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            for r in range(n_before, n_active):      # each slice loads its own units
                for u in range(u0, u0 + n):
                    dh_loc[r * H + u] = dh[rows[r] * H + u]
                    dc_loc[r * H + u] = dc[rows[r] * H + u]
            for r in range(n_active):
                b = rows[r]
                xo = (t * B + b) * G + u0
                so = (t * B + b) * H + u0
                do = t * d_t + b * d_b + u0
                cun = &c_unclipped[so] if clip > 0 else NULL
                if floating is float:
                    fl_lstm_bwd_row_f32(n, H, &acts[xo], &cs[so], &cs[so + B * H], cun,
                                        &peep[u0], use_peep, clip, &d_out[do],
                                        &dh_loc[r * H + u0], &dc_loc[r * H + u0],
                                        &dzl[r * G + u0], &dz[xo])
                else:
                    fl_lstm_bwd_row_f64(n, H, &acts[xo], &cs[so], &cs[so + B * H], cun,
                                        &peep[u0], use_peep, clip, &d_out[do],
                                        &dh_loc[r * H + u0], &dc_loc[r * H + u0],
                                        &dzl[r * G + u0], &dz[xo])
            s = s + n_threads
        fastlstm_spin_barrier_wait(barrier, n_threads)   # every slice's dz of step t is written
        s = tid
        while s < n_slices:
            _slice_bounds(s, width, H, &u0, &n)
            # dh[:, slice] = dz (n_active, 4H) @ W[slice rows, :].T: whole 4H sum per call
            if floating is float:
                if WT_fused != NULL:
                    fl_gemm_dz_wt_f32(n_active, H, dzl, WT_fused, dh_loc, u0 // 64,
                                      (u0 + n + 63) // 64)
                    s = s + n_threads
                    continue
            if W_t != NULL:                # the slice's columns of W.T (4H, H)
                _gemm_rowmajor(False, n_active, n, G, dzl, G, &W_t[u0], H, &dh_loc[u0], H)
            else:
                _gemm_rowmajor(True, n_active, n, G, dzl, G, &W[u0 * G], G, &dh_loc[u0], H)
            s = s + n_threads
    s = tid
    while s < n_slices:
        _slice_bounds(s, width, H, &u0, &n)
        for r in range(n_active):          # rows of length 0 keep dh, dc as they came
            for u in range(u0, u0 + n):
                dh[rows[r] * H + u] = dh_loc[r * H + u]
                dc[rows[r] * H + u] = dc_loc[r * H + u]
        s = s + n_threads


def lstm_backward_units(const floating[:, ::1] W, const floating[:, ::1] peepholes,
                        bint use_peepholes, double cell_clip, const int64_t[::1] seq_len,
                        const floating[:, :, ::1] cs, const floating[:, :, ::1] acts,
                        const floating[:, :, ::1] c_unclipped,
                        const floating[:, :, :] d_outputs, floating[:, ::1] dh,
                        floating[:, ::1] dc, floating[:, :, ::1] dz, int n_threads,
                        Py_ssize_t n_slices, Py_ssize_t width,
                        const floating[:, :, ::1] WT_fused=None,
                        const floating[:, ::1] W_t=None):
    """Backward with the hidden units split over threads; as
    ``fastlstm.reference.lstm_backward``.

    ``d_outputs`` as in :func:`lstm_backward`. ``WT_fused`` (float32, fused kernels): ``W.T``
    packed by ``pack_fused_t`` for the products; ``width`` must then be a multiple of 64
    (whole packed blocks per slice). ``W_t``: as in :func:`lstm_backward`.
    """
    cdef Py_ssize_t B = dh.shape[0], H = dh.shape[1]
    _check_lstm_backward(W, peepholes, cell_clip, seq_len, cs, acts, c_unclipped, d_outputs,
                         dh, dc, dz, n_threads, width)
    _check_slices(n_slices, width, H)
    cdef const floating* wt = NULL
    cdef const floating* w_t = _transposed_weights(W_t, H)
    if B == 0 or d_outputs.shape[0] == 0:
        return
    cdef Py_ssize_t d_t, d_b
    _row_strides(d_outputs, &d_t, &d_b)
    if WT_fused is not None:
        if floating is not float or width % 64 != 0 or WT_fused.shape[0] != (H + 63) // 64 \
                or WT_fused.shape[1] != 4 * H:
            raise ValueError("WT_fused needs float32, W.T packed by pack_fused_t and "
                             "slices of whole 64-unit blocks")
        wt = &WT_fused[0, 0, 0]
    cdef int64_t[::1] order = _chunk_order(seq_len)
    dtype = np.float32 if floating is float else np.float64
    # dh, dc and dz (double-buffered), written side by side by the threads
    cdef Py_ssize_t sizes[3]
    cdef Py_ssize_t offs[3]
    sizes[0], sizes[1], sizes[2] = B * H, B * H, 2 * B * 4 * H
    cdef floating[::1] work = _work_arrays("lstm_backward_units", dtype, 3, sizes, offs)
    cdef const floating* cu = &c_unclipped[0, 0, 0] if cell_clip > 0 else NULL
    cdef floating clip = <floating>cell_clip
    cdef fastlstm_spin_barrier barrier
    fastlstm_spin_barrier_init(&barrier)
    with nogil, parallel(num_threads=n_threads):
        _lstm_backward_units_thread(&W[0, 0], &peepholes[0, 0], use_peepholes, clip,
                                    &seq_len[0], &order[0], B, H, n_slices, width,
                                    &cs[0, 0, 0], &acts[0, 0, 0], cu, &d_outputs[0, 0, 0],
                                    d_t, d_b, &dh[0, 0], &dc[0, 0], &dz[0, 0, 0],
                                    &work[offs[0]], &work[offs[1]], &work[offs[2]], wt,
                                    w_t, &barrier)


include "gru_kernels.pxi"
