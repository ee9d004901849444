"""The large GEMMs outside the recurrence, deterministic for any thread count.

A multithreaded BLAS may split a product differently for 1 and 2 threads (OpenBLAS
does: ``hs.T @ dz`` came out different in the last bit), so fastlstm never lets BLAS
choose the split. The output is cut into one block per core of the machine (a count that
does not depend on ``fastlstm.threads``): row blocks for a tall output (the input
projection, dX), column blocks for a wide one (the weight gradients); see
:func:`block_shape`. Each block is one single-threaded BLAS call over the whole
reduction, so each output element is computed by the same call whatever the thread
count: same inputs, same bits. Never the reduction: that would need partial sums.

The blocks run on the Cython kernels' OpenMP threads (``_recurrent.gemm_blocks``) when
that extension is built: a second pool of threads would fight the OpenMP workers, which
spin for a while after each kernel, for the same cores. Without the extension a Python
thread pool runs column blocks (NumPy releases the GIL inside BLAS).

On AVX-512 CPUs the float32 weight gradients (``a.T @ b``: a long sum into a short, wide
result) run on the fused step's register tiles instead (``_recurrent.gemm_tn_tiles``):
64-column blocks per thread, each element one in-order sum, so also the same bits for any
thread count.
"""

from concurrent.futures import ThreadPoolExecutor
import os
import threading

import numpy as np

from . import _thresholds
from ._threads import blas_threads, default_num_threads
from ._workspace import aligned_empty, scratch


_pool = None
_pool_lock = threading.Lock()


def _after_fork_in_child():
    # the parent's pool threads do not exist in a child (work sent there would wait for
    # ever), and another thread may have held the lock at the fork
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=default_num_threads(),
                                       thread_name_prefix="fastlstm-gemm")
    return _pool


def column_blocks(n_columns):
    """Column slices of an output with ``n_columns``: one per core, at least 64 wide."""
    n_blocks = max(1, min(default_num_threads(), n_columns // _thresholds.MIN_BLOCK_COLUMNS))
    width = -(-n_columns // n_blocks)
    width = -(-width // 16) * 16                       # whole AVX-512 vectors
    return [slice(s, min(s + width, n_columns)) for s in range(0, n_columns, width)]


def block_shape(n_rows, n_columns):
    """(rows, columns) of the blocks of an (n_rows, n_columns) output: per-core row blocks
    for a tall output, per-core column blocks for a wide one.

    Measured on 2 cores (ms, row blocks / column blocks): the input projection x W_x,
    (3584, 512) with K = 28, 0.30 / 0.95, and (3200, 2048) with K = 512, 14.4 / 15.1;
    dX (3584, 28) 0.39 / 0.86; but the weight gradients h^T dz, (128, 512) with K = 3584,
    1.49 / 1.41, and (512, 2048), 19.2 / 17.2."""
    cores = default_num_threads()
    if n_rows >= max(n_columns, cores * _thresholds.MIN_BLOCK_COLUMNS):
        height = -(-n_rows // cores)
        return -(-height // 16) * 16, n_columns
    blocks = column_blocks(n_columns)
    return n_rows, blocks[0].stop - blocks[0].start


def _run_blocks(work, blocks, n_threads):
    """Call ``work(block)`` for every block on at most ``n_threads`` threads (BLAS at 1)."""
    n_threads = max(1, min(n_threads, len(blocks)))
    with blas_threads(1):
        if n_threads == 1:
            for block in blocks:
                work(block)
            return

        def worker(first):
            for k in range(first, len(blocks), n_threads):
                work(blocks[k])

        futures = [_executor().submit(worker, w) for w in range(n_threads)]
        for f in futures:
            f.result()


def _compiled():
    try:
        from . import _recurrent
    except ImportError:
        return None
    return _recurrent


#: ``kernels=COMPILED`` (the default of every product here): the compiled extension's
#: blocks and tiles where it is built, BLAS blocks on a thread pool where it is not.
#: ``kernels=None``: BLAS blocks on a thread pool (the NumPy backend's GEMMs); a backend's
#: own kernels module (the Numba backend's ``_numba_gemm``) runs the blocks on its threads.
COMPILED = "compiled"


def _kernels(kernels):
    return _compiled() if kernels == COMPILED else kernels


def _gemm(a, b, trans_a, trans_b, n_threads, out, kernels=COMPILED):
    """``op(a) @ op(b)`` into ``out`` (M, N), in per-core blocks unless small."""
    K = a.shape[0] if trans_a else a.shape[1]
    if out.shape[0] * out.shape[1] * K < _thresholds.MIN_BLOCKED_MACS:
        with blas_threads(1):           # one call: the same bits for any thread count
            np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        return out
    kernels = _kernels(kernels)
    if trans_a and not trans_b and _tiles_take(kernels, a, b, out):
        # the AVX-512 tiles beat OpenBLAS's single-threaded blocks on the weight
        # gradients' long, narrow sums (seed size: 1.20 against 1.44 ms); in-order sums
        kernels.gemm_tn_tiles(a, b, out, n_threads)
        return out
    if (trans_a and not trans_b and kernels is not None
            and getattr(kernels, "gemm_tn_takes", None) and kernels.gemm_tn_takes(a, b, out)):
        return kernels.gemm_tn(a, b, out, n_threads)     # a backend's own register tiles
    if kernels is not None and a.dtype == b.dtype == out.dtype and a.flags.c_contiguous \
            and b.flags.c_contiguous and out.flags.c_contiguous:
        rows, cols = block_shape(*out.shape)
        n_blocks = -(-out.shape[0] // rows) * -(-out.shape[1] // cols)
        with blas_threads(1):
            kernels.gemm_blocks(a, b, out, trans_a, trans_b, rows, cols,
                                max(1, min(n_threads, n_blocks)))
        return out
    blocks = column_blocks(out.shape[1])
    op_a = a.T if trans_a else a

    def work(cols):
        op_b = b[cols].T if trans_b else b[:, cols]
        np.matmul(op_a, op_b, out=out[:, cols])

    _run_blocks(work, blocks, n_threads)
    return out


def _tiles_take(kernels, parts, b, out):
    """Whether ``a.T @ b``, ``a`` the column-wise concatenation of ``parts`` (an array or a
    list), runs on the fused step's tiles: float32, an ISA of
    ``WEIGHT_GRADIENT_TILE_ISAS``, 64-column blocks, rows with contiguous elements, at
    most ``MAX_WEIGHT_GRADIENT_TILE_ROWS`` rows of the result."""
    parts = parts if isinstance(parts, list) else [parts]
    return (kernels is not None and b.dtype == out.dtype == np.float32
            and out.shape[0] <= _thresholds.MAX_WEIGHT_GRADIENT_TILE_ROWS
            and out.shape[1] % 64 == 0 and out.flags.c_contiguous and b.strides[1] == 4
            and all(p.dtype == np.float32 and (p.shape[1] < 2 or p.strides[1] == 4)
                    for p in parts)
            and kernels.fused_isa() in _thresholds.WEIGHT_GRADIENT_TILE_ISAS)


def matmul_tn_stacked(parts, b, n_threads, merge, rows=None, kernels=COMPILED):
    """``np.concatenate(parts, axis=1).T @ b`` for ``parts`` (K, M_s) and ``b`` (K, N),
    summed over ``rows`` of them only when given, without the concatenated copy (nor the
    gathered rows) where the tiles run: they take the parts as they are, a part's
    rows may even be 0 apart, as ``np.broadcast_to`` gives a column of ones. Elsewhere
    the rows are gathered, and ``merge`` says whether one BLAS product over a concatenated
    copy (worth it when the parts are narrow: a few rows and a long sum run far below the
    machine's rate) or one product per part."""
    M = sum(p.shape[1] for p in parts)
    out = np.empty((M, b.shape[1]), np.result_type(b, *parts))
    kernels = _kernels(kernels)
    if _tiles_take(kernels, list(parts), b, out):
        kernels.gemm_tn_tiles(list(parts), b, out, n_threads,
                              None if rows is None else np.ascontiguousarray(rows, np.int64))
        return out
    if rows is not None:                # a repeated row stays one (no gathered copy)
        parts = [p[:len(rows)] if p.strides[0] == 0 else p[rows] for p in parts]
        b = b[rows]
    if merge:
        stacked = scratch("stacked", (b.shape[0], M), out.dtype)
        np.concatenate(parts, axis=1, out=stacked)
        return _gemm(stacked, b, True, False, n_threads, out, kernels)
    r0 = 0
    for p in parts:
        if p.strides[0] == 0:                       # a repeated row: b's column sums
            out[r0:r0 + p.shape[1]] = np.outer(p[0], b.sum(axis=0))
        else:
            _gemm(np.ascontiguousarray(p), b, True, False, n_threads,
                  out[r0:r0 + p.shape[1]], kernels)
        r0 += p.shape[1]
    return out


def tiles_take_input_gradient(I):
    """Whether the input gradient of ``I`` inputs runs on the fused kernels' tiles (given
    float32 and the fused kernels): whole 64-column blocks and a tail of at most
    ``MAX_TILED_INPUT_GRADIENT_TAIL`` columns, up to ``MAX_TILED_INPUT_GRADIENT``.

    Small products too, although one BLAS call can be a little faster there ((T, B, I, H)
    = (100, 1, 32, 64): 17 us against 20 on Zen 5, 48 against 54 on Zen 3): the tiles give
    a row the same bits wherever it lies and however many rows there are, which OpenBLAS's
    Haswell kernels (every x86 CPU without AVX-512) do not, so a sequence's gradient would
    depend on the rest of its batch."""
    return (I <= _thresholds.MAX_TILED_INPUT_GRADIENT
            and I % 64 <= _thresholds.MAX_TILED_INPUT_GRADIENT_TAIL)


def _rows_in_place(rows, T, B, I, time_major, dtype):
    """For the input gradient written row by row into the caller's layout: the time-major
    row indices ``k`` (t * B + b) of the rows that exist (``rows``, or all T * B), each
    one's offset in the output, and the output, (T, B, I) or (B, T, I), zero where no row
    goes."""
    k = np.arange(T * B, dtype=np.int64) if rows is None else rows.astype(np.int64)
    t, b = np.divmod(k, B)
    shape = (T, B, I) if time_major else (B, T, I)
    out = np.empty(shape, dtype) if rows is None else np.zeros(shape, dtype)
    return k, (k if time_major else b * T + t) * I, out


def input_gradient(dz2, W_x, rows, T, B, time_major, n_threads, kernels=COMPILED,
                   bf16=False):
    """dL/dx = dz W_x^T for the rows (t * B + b) of ``dz2`` (T * B, 4H) that exist
    (``rows``, or all), in the caller's layout, (T, B, I) or (B, T, I), zero at the steps
    past each end. On the tiles where :func:`tiles_take_input_gradient`: dz read
    in place and each row written straight to its place (no gathered copy of dz, no
    scatter, no transposing copy); float32 on a backend's own panel tiles
    (``kernels.input_gradient_tiles``, Numba's) up to ``MAX_NUMBA_TILED_INPUT_GRADIENT``
    inputs, rows also
    written in place (both tiles: in-order sums, the same bits); elsewhere one BLAS
    product over the gathered rows. ``bf16``: on the bfloat16 tiles, always (``kernels``
    must have them)."""
    I = W_x.shape[0]
    kernels = _kernels(kernels)
    if bf16 or (kernels is not None and dz2.dtype == W_x.dtype == np.float32
                and tiles_take_input_gradient(I)
                and kernels.have_fused_step()):
        k, offsets, out = _rows_in_place(rows, T, B, I, time_major, np.float32)
        if bf16:
            packed = kernels.pack_fused_t_bf16(
                W_x, scratch("packed_x_t_bf16", (-(-I // 64), -(-W_x.shape[1] // 2), 64),
                             np.uint32), n_threads).view(np.float32)
        else:
            packed = kernels.pack_fused_t(W_x, scratch("packed_x_t", (-(-I // 64),
                                                                      W_x.shape[1], 64),
                                                       np.float32), n_threads)
        kernels.gemm_rows_wt(dz2, packed, I, out.reshape(-1), offsets,
                             None if rows is None else k, n_threads, bf16)
        return out
    if (kernels is not None and hasattr(kernels, "input_gradient_tiles")
            and dz2.dtype == W_x.dtype == np.float32 and dz2.flags.c_contiguous
            and I <= _thresholds.MAX_NUMBA_TILED_INPUT_GRADIENT):
        # a backend's own panel tiles (Numba): in-order sums, rows written in place
        _, offsets, out = _rows_in_place(rows, T, B, I, time_major, np.float32)
        kernels.input_gradient_tiles(dz2 if rows is None else dz2[rows], W_x,
                                     out.reshape(-1), offsets, n_threads)
        return out
    d_x = matmul_nt(dz2 if rows is None else dz2[rows], W_x, n_threads, kernels=kernels)
    if rows is not None:
        d_full = np.zeros((T * B, I), d_x.dtype)
        d_full[rows] = d_x
        d_x = d_full
    d_x = d_x.reshape(T, B, I)
    return d_x if time_major else np.ascontiguousarray(d_x.transpose(1, 0, 2))


def matmul(a, b, n_threads, out=None, kernels=COMPILED, bias=None):
    """``a (M, K) @ b (K, N)``, the columns of the result in per-core blocks; with ``bias``
    (N,), ``a @ b + bias`` (the bias added to the finished products, x W + b's order)."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    _gemm(a, b, False, False, n_threads, out, kernels)
    if bias is not None:
        out += bias
    return out


def matmul_nt(a, b, n_threads, out=None, kernels=COMPILED):
    """``a (M, K) @ b.T`` for ``b (N, K)``."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[0]), np.result_type(a, b))
    return _gemm(a, b, False, True, n_threads, out, kernels)


def matmul_tn(a, b, n_threads, out=None, kernels=COMPILED):
    """``a.T @ b`` for ``a (K, M)``, ``b (K, N)``: a sum over the K rows, whole in each call."""
    if out is None:
        out = np.empty((a.shape[1], b.shape[1]), np.result_type(a, b))
    return _gemm(a, b, True, False, n_threads, out, kernels)


class Gemm:
    """The GEMMs of one backend: the products above with their ``kernels`` bound.

    Parameters
    ----------
    kernels : module, None or COMPILED
        The compiled extension whose blocks and tiles run the products, ``None`` for
        BLAS blocks on a thread pool, ``COMPILED`` for the extension where it is built.
    """

    def __init__(self, kernels):
        self.kernels = kernels

    def matmul(self, a, b, n_threads, out=None, bias=None):
        return matmul(a, b, n_threads, out, self.kernels, bias)

    def matmul_nt(self, a, b, n_threads, out=None):
        return matmul_nt(a, b, n_threads, out, self.kernels)

    def matmul_tn(self, a, b, n_threads, out=None):
        return matmul_tn(a, b, n_threads, out, self.kernels)

    def matmul_tn_stacked(self, parts, b, n_threads, merge, rows=None):
        return matmul_tn_stacked(parts, b, n_threads, merge, rows, self.kernels)

    def input_gradient(self, dz2, W_x, rows, T, B, time_major, n_threads):
        return input_gradient(dz2, W_x, rows, T, B, time_major, n_threads, self.kernels)


class BFloat16Gemm(Gemm):
    """:class:`Gemm` with bfloat16 products: both operands rounded to bfloat16 (to nearest
    even), exact products summed in float32: the arithmetic of ``compute_dtype="bfloat16"``
    (:mod:`fastlstm._bfloat16`). Where the compiled extension has the bfloat16 kernels,
    the bfloat16 tiles (vdpbf16ps: ``gemm_rows_wt`` on weights packed in bfloat16 pairs,
    ``gemm_tn_bf16`` for the weight gradients); elsewhere both operands are rounded and
    multiplied in float32: the same values, summed in another order, at float32's rate."""

    def _tiles(self, *arrays):
        """The extension, when its bfloat16 tiles take these float32 operands."""
        kernels = _kernels(self.kernels)
        if (kernels is None or not kernels.have_bf16_kernels()
                or not all(a.dtype == np.float32 and a.ndim == 2 for a in arrays)):
            return None
        return kernels

    def _rounded(self, a, n_threads):
        if 0 in a.strides and a.size:   # a broadcast (the bias's column of ones) stays one
            lead = tuple(slice(0, 1) if s == 0 else slice(None) for s in a.strides)
            return np.broadcast_to(self._rounded(a[lead].copy(), n_threads), a.shape)
        kernels = _kernels(self.kernels)
        if kernels is not None and kernels.have_bf16_kernels():
            return kernels.round_bf16(a, n_threads)
        from ._bfloat16 import round_to_bfloat16
        return round_to_bfloat16(a)

    def _rows_times_wt(self, kernels, a, wt, n_threads, out, bias=None):
        """``a @ wt.T`` (``+ bias``, (n,)) on the tiles: ``wt`` (n, K) packed once (from its
        transpose's rows where that is the contiguous one), ``a``'s rows rounded in the
        tiles."""
        n = wt.shape[0]
        if out is None:         # on cache lines: the AMX tiles store C's rows whole
            out = aligned_empty((a.shape[0], n), np.float32)
        shape = (-(-n // 64), -(-wt.shape[1] // 2), 64)
        work = scratch("bf16_packed_b", shape, np.uint32)
        if wt.T.strides[1] == 4 or wt.shape[0] < 2:
            packed = kernels.pack_rows_bf16(wt.T, work, n_threads)
        else:
            packed = kernels.pack_fused_t_bf16(np.ascontiguousarray(wt), work, n_threads)
        if n % 64 == 0:         # whole blocks: a's rows rounded once, L1-sized passes
            if bias is not None:  # added by the tiles while each block's sums are in L2
                bias = np.ascontiguousarray(bias, np.float32)
            kernels.gemm_rows_bf16(a, packed, out.reshape(a.shape[0], n), n_threads, bias)
            return out
        kernels.gemm_rows_wt(a, packed.view(np.float32), n, out.reshape(-1),
                             np.arange(a.shape[0], dtype=np.int64) * n, None, n_threads, True)
        if bias is not None:
            out += bias
        return out

    def _rows_ok(self, a, out):
        return ((a.shape[1] < 2 or a.strides[1] == 4) and a.shape[1] > 0
                and (out is None or (out.dtype == np.float32 and out.flags.c_contiguous)))

    def matmul(self, a, b, n_threads, out=None, bias=None):
        kernels = self._tiles(a, b)
        if kernels is not None and self._rows_ok(a, out):
            return self._rows_times_wt(kernels, a, b.T, n_threads, out, bias)
        r = self._rounded
        return super().matmul(r(a, n_threads), r(b, n_threads), n_threads, out, bias)

    def matmul_nt(self, a, b, n_threads, out=None):
        kernels = self._tiles(a, b)
        if kernels is not None and self._rows_ok(a, out):
            return self._rows_times_wt(kernels, a, b, n_threads, out)
        r = self._rounded
        return super().matmul_nt(r(a, n_threads), r(b, n_threads), n_threads, out)

    def matmul_tn(self, a, b, n_threads, out=None):
        if out is None:
            return self.matmul_tn_stacked([a], b, n_threads, False)
        r = self._rounded
        return super().matmul_tn(r(a, n_threads), r(b, n_threads), n_threads, out)

    def matmul_tn_stacked(self, parts, b, n_threads, merge, rows=None):
        parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]
        kernels = self._tiles(b, *parts)
        if (kernels is not None and b.shape[1] % 64 == 0 and len(parts) <= 8
                and (b.shape[1] < 2 or b.strides[1] == 4)
                and all(p.shape[1] < 2 or p.strides[1] == 4 for p in parts)):
            out = np.empty((sum(p.shape[1] for p in parts), b.shape[1]), np.float32)
            kernels.gemm_tn_bf16(parts, b, out, n_threads,
                                 None if rows is None else np.ascontiguousarray(rows, np.int64))
            return out
        r = self._rounded
        return super().matmul_tn_stacked([r(p, n_threads) for p in parts], r(b, n_threads),
                                         n_threads, merge, rows)

    def input_gradient(self, dz2, W_x, rows, T, B, time_major, n_threads):
        kernels = self._tiles(dz2, W_x)
        if kernels is not None and dz2.strides[1] == 4 and W_x.shape[0] > 0:
            return input_gradient(dz2, W_x, rows, T, B, time_major, n_threads, kernels,
                                  bf16=True)
        r = self._rounded
        return super().input_gradient(r(dz2, n_threads), r(W_x, n_threads), rows, T, B,
                                      time_major, n_threads)
