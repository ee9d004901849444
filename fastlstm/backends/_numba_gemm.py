"""The Numba backend's large GEMMs: BLAS blocks run on Numba's own threads.

:mod:`fastlstm._gemm` cuts a large product (the input projection, the weight and input
gradients) into one block per core, each one single-threaded BLAS call over the whole
sum, and hands the blocks to a backend's ``GEMM_KERNELS``. Run on a Python thread pool,
the blocks fought Numba's OpenMP workers, which spin for a while after each parallel
region: the input projection of (64, 25, 512, 512) took 14.3 ms right after the
recurrence against 8.0 ms alone (2-core AMD EPYC, Zen 5). Here a ``prange`` over the
blocks runs them on those same workers (7.6 ms right after the recurrence).

Each block is one call of SciPy's BLAS ``?gemm`` (the BLAS Numba's ``np.dot`` uses) on
the operands in place, with their leading dimensions: no block is copied. This module is
what ``_gemm`` asks of compiled kernels: :func:`gemm_blocks`, and the queries that say it
has none of the Cython extension's tiles.
"""

import numpy as np
from numba import prange, types
from numba.extending import get_cython_function_address

from .. import _thresholds
from .._workspace import scratch
from ._numba_jit import external_function, kernel, on_threads, parallel_kernel
from ._numba_tiles import MAX_TILE_ROWS, PANEL_WIDTH, _make_tile_tn, pack_panels, panel_product

_GEMM_SIGNATURE = types.void(*([types.voidptr] * 13))
_N, _T = ord("N"), ord("T")


def _make_blocks(routine, dtype):
    """The jitted block loop for the BLAS routine ``routine`` ("sgemm" / "dgemm")."""
    address = get_cython_function_address("scipy.linalg.cython_blas", routine)
    gemm = external_function("fastlstm_" + routine, address, _GEMM_SIGNATURE)

    @kernel
    def block(a, b, out, trans_a, trans_b, r0, r1, c0, c1):
        # BLAS is column-major: the C array out (M, N) is out^T, so the block is
        # out^T[c0:c1, r0:r1] = op(b)[:, c0:c1]^T @ op(a)[r0:r1]^T
        K = a.shape[0] if trans_a else a.shape[1]
        M, N = out.shape
        ints = np.empty(6, np.int32)
        ints[0], ints[1], ints[2] = c1 - c0, r1 - r0, K
        ints[3] = b.shape[1]                    # b's row length: its leading dimension
        ints[4] = a.shape[1]
        ints[5] = N
        flags = np.empty(2, np.uint8)
        flags[0] = _T if trans_b else _N
        flags[1] = _T if trans_a else _N
        scalars = np.empty(2, dtype)
        scalars[0], scalars[1] = 1, 0
        b_flat, a_flat, o_flat = b.reshape(-1), a.reshape(-1), out.reshape(-1)
        b_first = c0 * b.shape[1] if trans_b else c0
        a_first = r0 if trans_a else r0 * a.shape[1]
        gemm(flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
             ints[2:].ctypes, scalars[0:].ctypes, b_flat[b_first:].ctypes, ints[3:].ctypes,
             a_flat[a_first:].ctypes, ints[4:].ctypes, scalars[1:].ctypes,
             o_flat[r0 * N + c0:].ctypes, ints[5:].ctypes)

    @parallel_kernel
    def blocks(a, b, out, trans_a, trans_b, row_block, col_block):
        M, N = out.shape
        n_cb = (N + col_block - 1) // col_block
        n_blocks = (M + row_block - 1) // row_block * n_cb
        for k in prange(n_blocks):
            r0, c0 = k // n_cb * row_block, k % n_cb * col_block
            block(a, b, out, trans_a, trans_b, r0, min(r0 + row_block, M), c0,
                  min(c0 + col_block, N))

    return blocks


_BLOCKS = {}


def gemm_blocks(a, b, out, trans_a, trans_b, row_block, col_block, n_threads):
    """``out (M, N) = op(a) @ op(b)`` in blocks of ``row_block`` x ``col_block``, one
    single-threaded BLAS call per block (the caller limits BLAS to one thread), the blocks
    over ``n_threads`` of Numba's threads. As the Cython extension's ``gemm_blocks``:
    ``op(a)`` is ``a`` (M, K) or, with ``trans_a``, ``a.T`` for ``a`` (K, M), likewise
    ``op(b)``; all three C-contiguous, one float dtype. Each block sums over the whole K,
    so the split never changes a bit of the result."""
    dtype = np.dtype(out.dtype)
    if not (a.dtype == b.dtype == dtype and dtype in (np.float32, np.float64)
            and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("gemm_blocks: a, b and out must be C-contiguous, all float32 or "
                         "all float64")
    K = a.shape[0] if trans_a else a.shape[1]
    if ((a.shape[1] if trans_a else a.shape[0]) != out.shape[0]
            or (b.shape[1] if trans_b else b.shape[0]) != K
            or (b.shape[0] if trans_b else b.shape[1]) != out.shape[1]):
        raise ValueError(f"gemm_blocks: op(a) of {a.shape} (trans {trans_a}) @ op(b) of "
                         f"{b.shape} (trans {trans_b}) does not give out {out.shape}")
    if _nothing_to_multiply(out, K):
        return out
    if dtype not in _BLOCKS:
        _BLOCKS[dtype] = _make_blocks("sgemm" if dtype == np.float32 else "dgemm",
                                      dtype.type)
    on_threads(n_threads, _BLOCKS[dtype], a, b, out, bool(trans_a), bool(trans_b),
                row_block, col_block)
    return out


def _nothing_to_multiply(out, K):
    """True (``out`` zeroed where K = 0) when the product has no sums to run."""
    if K == 0:
        out[...] = 0
    return out.size == 0 or K == 0


#: Rows of k per pass of the weight gradients' tiles: a panel's slice of ``b``
#: (TN_K_CHUNK x PANEL_WIDTH) stays in L1 while every row tile of ``a`` takes it.
TN_K_CHUNK = 256

_TN = {}


def _tn_product():
    """The jitted ``tn(a, b, out)``: ``out = a.T @ b`` on register tiles, column panels
    over the threads, passes of TN_K_CHUNK rows of k continuing each element's in-order
    sum (the same bits as one pass, for any thread count)."""
    if "tn" in _TN:
        return _TN["tn"]
    width = PANEL_WIDTH
    t1, t2, t3, t4, t5, t6 = (_make_tile_tn(r, width) for r in range(1, MAX_TILE_ROWS + 1))

    @kernel
    def tile(rows, a, a_off, b, b_off, K, out, o_off, acc):
        if rows == 6:
            t6(a, a_off, b, b_off, K, out, o_off, acc)
        elif rows == 5:
            t5(a, a_off, b, b_off, K, out, o_off, acc)
        elif rows == 4:
            t4(a, a_off, b, b_off, K, out, o_off, acc)
        elif rows == 3:
            t3(a, a_off, b, b_off, K, out, o_off, acc)
        elif rows == 2:
            t2(a, a_off, b, b_off, K, out, o_off, acc)
        else:
            t1(a, a_off, b, b_off, K, out, o_off, acc)

    @parallel_kernel
    def tn(a, b, out):
        K, M = a.shape
        N = b.shape[1]
        n_tiles = (M + MAX_TILE_ROWS - 1) // MAX_TILE_ROWS
        for p in prange(N // width):
            c0 = p * width
            for k0 in range(0, K, TN_K_CHUNK):
                kc = min(K - k0, TN_K_CHUNK)
                r0 = 0
                for i in range(n_tiles):
                    rows = (M - r0) // (n_tiles - i)     # the rows left over the tiles left
                    tile(rows, a, k0 * M + r0, b, k0 * N + c0, kc, out, r0 * N + c0, k0 > 0)
                    r0 += rows

    _TN["tn"] = tn
    return tn


def max_tn_tile_rows(panel_width=PANEL_WIDTH):
    """Most rows of a weight gradient's result that :func:`gemm_tn` takes on this CPU:
    ``MAX_NUMBA_TN_TILE_ROWS`` with panels of 32 floats or more (AVX-512), else
    ``MAX_NUMBA_TN_TILE_ROWS_NARROW_PANELS`` (AVX2, NEON, SSE: there OpenBLAS's blocking
    wins from fewer rows). A property of the CPU's vectors, never of a timing: the tiles
    and BLAS sum in different orders."""
    if panel_width >= 32:
        return _thresholds.MAX_NUMBA_TN_TILE_ROWS
    return _thresholds.MAX_NUMBA_TN_TILE_ROWS_NARROW_PANELS


def gemm_tn_takes(a, b, out):
    """Whether ``fastlstm._gemm`` sends ``out = a.T @ b`` to :func:`gemm_tn`: one float
    dtype, all three C-contiguous, whole panels of columns, and at most
    :func:`max_tn_tile_rows` rows of ``out`` (wider, BLAS's blocking wins)."""
    return _tiles_can_take(a, b, out) and 0 < out.shape[0] <= max_tn_tile_rows()


def _tiles_can_take(a, b, out):
    """One float dtype, 2-D, all three C-contiguous, whole panels of columns."""
    return (a.dtype == b.dtype == out.dtype and out.dtype in (np.float32, np.float64)
            and a.ndim == b.ndim == out.ndim == 2 and out.shape[1] % PANEL_WIDTH == 0
            and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous)


def gemm_tn(a, b, out, n_threads):
    """``out (M, N) = a.T @ b`` for ``a`` (K, M), ``b`` (K, N): the weight gradients'
    long sums on register tiles (every element one in-order FMA chain over k), the column
    panels over ``n_threads`` of Numba's threads. Measured alone, as fast as the BLAS
    blocks at the seed's [x, h, 1]^T dz (K = 3584, 157 x 512); in training steps 3-7%
    faster where the result has up to 513 rows (``MAX_NUMBA_TN_TILE_ROWS``)."""
    if not _tiles_can_take(a, b, out):
        raise ValueError("gemm_tn needs one float dtype, C-contiguous operands and "
                         f"whole panels of {PANEL_WIDTH} columns")
    K, M = a.shape
    if b.shape[0] != K or out.shape != (M, b.shape[1]):
        raise ValueError(f"gemm_tn: a.T of {a.shape} @ b of {b.shape} does not give "
                         f"out {out.shape}")
    if not _nothing_to_multiply(out, K):
        on_threads(n_threads, _tn_product(), a, b, out)
    return out


#: Rows of ``a`` per parallel block of :func:`input_gradient_tiles` (whole register
#: tiles of 6 rows, a few blocks per thread at the seed's 3584 rows).
INPUT_GRADIENT_BLOCK_ROWS = 120

_ROWS_WT = {}


def _rows_wt_into():
    """The jitted ``rows_wt(a, P, z, offsets, out, n_cols)``: ``z = a @ W`` for
    ``P = pack_panels(W)`` on the panel tiles, blocks of rows over the threads, and row m's
    first ``n_cols`` values copied to ``out[offsets[m]:]``."""
    if "rows_wt" in _ROWS_WT:
        return _ROWS_WT["rows_wt"]
    rows_times = panel_product()
    block = INPUT_GRADIENT_BLOCK_ROWS

    @parallel_kernel
    def rows_wt(a, P, z, offsets, out, n_cols):
        n = a.shape[0]
        for i in prange((n + block - 1) // block):
            r0 = i * block
            r1 = min(n, r0 + block)
            rows_times(a[r0:r1], r1 - r0, P, z[r0:r1])
            for r in range(r0, r1):
                o = offsets[r]
                for c in range(n_cols):
                    out[o + c] = z[r, c]

    _ROWS_WT["rows_wt"] = rows_wt
    return rows_wt


def input_gradient_tiles(dz, W_x, out, offsets, n_threads):
    """The input gradient ``dz @ W_x.T`` for ``dz`` (n, K) and ``W_x`` (I, K), row m's I
    values written at ``out[offsets[m]:]`` (``out`` 1-D: the caller's layout, each row
    straight to its place, no transposing copy) on the panel tiles, the blocks of rows over
    ``n_threads`` of Numba's threads. Each element is one in-order FMA chain over k, as
    in the Cython kernels' ``gemm_rows_wt``: the same bits as those, for any thread count.
    At the seed's size (3584 x 512 @ 512 x 28), 2 threads, Zen 4: 0.68 ms against
    0.84-0.91 for the BLAS blocks (a 28-column product runs far below BLAS's rate)."""
    n, I = dz.shape[0], W_x.shape[0]
    if not (dz.dtype == W_x.dtype == out.dtype and dz.dtype in (np.float32, np.float64)
            and dz.ndim == 2 and W_x.ndim == 2 and dz.shape[1] == W_x.shape[1]
            and dz.flags.c_contiguous and out.ndim == 1 and offsets.shape == (n,)):
        raise ValueError("input_gradient_tiles needs dz (n, K), W_x (I, K) and a 1-D out of "
                         "one float dtype, dz C-contiguous, and an offset per row")
    if n == 0 or I == 0:
        return out
    P = pack_panels(W_x.T, n_threads=n_threads)
    z = scratch("numba_input_gradient", (n, P.shape[0] * P.shape[2]), dz.dtype)
    on_threads(n_threads, _rows_wt_into(), dz, P, z, np.ascontiguousarray(offsets, np.int64),
               out, I)
    return out


def fused_isa():
    """No fused-step tiles here (``_gemm`` asks before using them)."""
    return "none"


def have_fused_step():
    return False


def have_bf16_kernels():
    return False
