"""Register-tiled products for the Numba kernels: ``out[:n] = a[:n] @ W`` with no BLAS call.

A recurrence step multiplies a few rows (a chunk's states) by the same ``W_h`` every step.
A BLAS call per step packs ``W_h`` again each time and is tuned for large matrices: at 8
rows times (256, 1024), OpenBLAS on one core ran at 55 GFLOP/s. Here ``W`` is packed once
per call into *panels* of ``PANEL_WIDTH`` columns (:func:`pack_panels`), and each panel
is multiplied by up to 6 rows at a time with the rows x ``PANEL_WIDTH`` partial sums held
in vector registers over the whole sum over k (on one core of the 2-core AMD EPYC, Zen 5:
203 GFLOP/s at that size, 244-257 from 16 rows up; 4-row tiles gave 216-229 there).

Numba has no vector type and LLVM does not register-block the scalar form of this loop,
so the tile's loop is written in LLVM IR (a Numba intrinsic, :func:`_make_tile`) on
vectors of ``PANEL_WIDTH`` floats; LLVM splits them into the registers of the CPU it
compiles for (AVX-512, AVX2, NEON or SSE). The panel width follows the CPU's vector
registers (two registers per row, so six rows keep twelve independent FMA chains).

Every output element is one in-order sum over k, ``s = fma(a[r, k], W[k, j], s)`` from
``s = 0``, whatever the tile, the panel width or the row count: the bits of a product do
not depend on how it was tiled.
"""

import os
import platform

import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_jit import kernel, on_threads, parallel_kernel

#: Rows per register tile at most: 6 rows of two vector registers each keep 12 partial
#: sums in registers, with room for the panel's two vectors and a broadcast in the 16
#: registers of AVX2 and SSE (32 on AVX-512 and NEON).
MAX_TILE_ROWS = 6
#: Rows per register tile at most, used by the kernels.
TILE_ROWS = 6
#: Bytes of a panel's float32 rows per pass over k (in L1 while every tile of rows reads
#: them; the next pass's are prefetched meanwhile). Panels of up to 3 passes run whole.
PASS_BYTES = 16384
#: The L1 data cache that passes need: a pass, the next one arriving and the tiles' rows
#: of ``a`` for the pass (16 KB each at 32 rows). Intel Xeon (48 KB L1d): (64, 25, 512,
#: 512) inference 34.2 -> 27.5 ms with passes; AMD Zen 4 (32 KB): one core's product
#: 32 x (512, 2048) 707 -> 759 us, so there the panels stream from L2 whole.
PASS_MIN_L1D_BYTES = 48 << 10


def l1d_cache_bytes(root="/sys/devices/system/cpu/cpu0/cache"):
    """Bytes of a core's level-1 data cache as Linux reports it for CPU 0 (the
    ``index*/level``, ``type`` and ``size`` files under ``root``), or 0 where the size is
    not known (other systems, or no ``/sys``)."""
    def read(index, name):
        with open(os.path.join(root, index, name)) as f:
            return f.read().strip()
    try:
        for index in sorted(os.listdir(root)):
            if read(index, "level") == "1" and read(index, "type") in ("Data", "Unified"):
                size = read(index, "size")
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return 0


#: Whether panels past L1 are summed in passes over k (:data:`PASS_MIN_L1D_BYTES`): a
#: property of the CPU, and the bits are those of the whole panel's sum either way.
PASSES_OVER_K = l1d_cache_bytes() >= PASS_MIN_L1D_BYTES


def _panel_width():
    """Columns per panel: two of the CPU's float32 vector registers."""
    features = llvmlite.binding.get_host_cpu_features()
    if features.get("avx512f", False):
        return 32
    if features.get("avx", False) or platform.machine().lower() in ("aarch64", "arm64"):
        return 16                  # AVX2's 16 ymm; NEON's 32 q registers of 4
    return 8


#: Columns per panel of a packed weight matrix (and per register-tile row).
PANEL_WIDTH = _panel_width()


def padded(n, width=None):
    """``n`` rounded up to whole panels: the width an output of ``n`` columns needs."""
    width = PANEL_WIDTH if width is None else width
    return -(-n // width) * width


@parallel_kernel
def _pack_by_rows(W, P, k0):
    """Rows k0 .. k0 + K of the panels ``P`` from ``W`` (K, N) whose rows are contiguous:
    each of W's rows read once, in order, and dealt to every panel. Walking one panel
    down all of W instead (a row 4N bytes after the last: no stream the prefetcher
    follows) took 5.9 ms for W (1024, 2048) on one core of a Zen 4, against 0.6."""
    n_panels, width = P.shape[0], P.shape[2]
    K, N = W.shape
    full = N // width
    for k in prange(K):               # on the kernels' threads (not beside them, spinning)
        for p in range(full):
            j0 = p * width
            for c in range(width):
                P[p, k0 + k, c] = W[k, j0 + c]
        for p in range(full, n_panels):
            j0 = p * width
            for c in range(N - j0):
                P[p, k0 + k, c] = W[k, j0 + c]


@parallel_kernel
def _pack_by_columns(W, P, k0):
    """:func:`_pack_by_rows` for a ``W`` whose columns are contiguous (a transposed view,
    as the backward's ``W.T``): each panel's columns read down W's columns in order
    (1.9 -> 0.7 ms for W.T of (512, 2048), one core)."""
    n_panels, width = P.shape[0], P.shape[2]
    K, N = W.shape
    for p in prange(n_panels):
        j0 = p * width
        for c in range(min(width, N - j0)):
            for k in range(K):
                P[p, k0 + k, c] = W[k, j0 + c]


def pack_panels(*blocks, width=None, n_threads=1):
    """``W`` (K, N) -> panels (ceil(N / width), K, width): panel p, row k holds
    ``W[k, p*width : (p+1)*width]`` (zero past N), each panel contiguous. Several
    ``blocks`` (K_i, N) are packed as ``W = np.concatenate(blocks)``, without that copy.

    ``width`` defaults to :data:`PANEL_WIDTH`; the copy runs on ``n_threads`` of Numba's
    threads (the kernel call's own count), reading each block in its memory order (rows,
    or columns for a transposed view).
    """
    width = PANEL_WIDTH if width is None else width
    N = blocks[0].shape[1]
    if any(W.shape[1] != N or W.dtype != blocks[0].dtype for W in blocks):
        raise ValueError("pack_panels: blocks must have the same columns and dtype")
    P = np.zeros((-(-N // width), sum(W.shape[0] for W in blocks), width), blocks[0].dtype)
    k0 = 0
    for W in blocks:
        by_columns = W.shape[1] > 1 and W.strides[0] == W.itemsize
        on_threads(n_threads, _pack_by_columns if by_columns else _pack_by_rows, W, P, k0)
        k0 += W.shape[0]
    return P


def _emit_tile(context, builder, element, width, rows, panels, K, a_index, w_index,
               o_ptr, init=None, prefetch=None):
    """The IR of one register tile: ``rows * panels`` vectors of ``width`` sums over k in
    ``0 .. K - 1`` of ``a(r, k) * w(q, k)``, stored through ``o_ptr(r, q)``. ``a_index(r, k)``
    and ``w_index(q, k)`` give the element pointer of a row's scalar and of a panel's
    vector at k; ``init(r, q)``: the sums' starting vectors (default zero);
    ``prefetch(k)``: a pointer to prefetch toward L1 at iteration k (none by default)."""
    vector = ir.VectorType(element, width)
    intp = context.get_value_type(types.intp)

    def const(v):
        return ir.Constant(intp, v)
    suffix = "f32" if isinstance(element, ir.FloatType) else "f64"
    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{width}{suffix}")
    zero = ir.Constant(vector, None)
    splat = ir.Constant(ir.VectorType(ir.IntType(32), width), None)
    starts = [init(r, q) if init else zero for r in range(rows) for q in range(panels)]

    entry = builder.block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", K, const(0)), loop, done)

    builder.position_at_end(loop)
    k = builder.phi(intp)
    sums = [builder.phi(vector) for _ in range(rows * panels)]
    if prefetch is not None:
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(hint, [builder.bitcast(prefetch(k), i8p), ir.Constant(i32, 0),
                            ir.Constant(i32, 3), ir.Constant(i32, 1)])  # read, L1, data
    w = [builder.load(builder.bitcast(w_index(q, k), vector.as_pointer()), align=4)
         for q in range(panels)]
    new_sums = []
    for r in range(rows):
        scalar = builder.load(a_index(r, k))
        lane0 = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar,
                                       ir.Constant(ir.IntType(32), 0))
        broadcast = builder.shuffle_vector(lane0, ir.Constant(vector, ir.Undefined), splat)
        for q in range(panels):
            new_sums.append(builder.call(fmuladd, [broadcast, w[q], sums[r * panels + q]]))
    k_next = builder.add(k, const(1))
    k.add_incoming(const(0), entry)
    k.add_incoming(k_next, loop)
    for s, s_new, s0 in zip(sums, new_sums, starts):
        s.add_incoming(s0, entry)
        s.add_incoming(s_new, loop)
    builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)

    builder.position_at_end(done)
    results = []
    for s_new, s0 in zip(new_sums, starts):      # every phi first, then the stores
        result = builder.phi(vector)
        result.add_incoming(s0, entry)
        result.add_incoming(s_new, loop)
        results.append(result)
    for r in range(rows):
        for q in range(panels):
            builder.store(results[r * panels + q],
                          builder.bitcast(o_ptr(r, q), vector.as_pointer()), align=4)


def _make_tile(rows, width, panels=1, passes=False):
    """The intrinsic ``tile(a, a_off, P, w_off, K, out, o_off)``: rows ``0..rows-1`` of
    the tile start at element ``a_off`` of ``a`` (row stride ``a.shape[1]``), the panel
    at element ``w_off`` of ``P`` (K rows of ``width``; ``panels`` consecutive panels),
    and the result is stored at element ``o_off`` of ``out`` (row stride
    ``out.shape[1]``, ``panels * width`` columns).

    ``passes``: ``tile(a, a_off, P, w_off, K, out, o_off, acc, pf_off)`` for a pass over
    K rows of a longer sum: with ``acc`` true the sums go on from the values stored in
    ``out`` (each element's in-order sum continued: the bits of one pass), and iteration k
    prefetches the cache line at element ``pf_off + k * LINE`` of ``P`` (the next pass's
    weights while this one runs)."""

    def codegen(context, builder, signature, args):
        a, a_off, P, w_off, K, out, o_off = args[:7]
        a_arr = context.make_array(signature.args[0])(context, builder, a)
        p_arr = context.make_array(signature.args[2])(context, builder, P)
        o_arr = context.make_array(signature.args[5])(context, builder, out)
        intp = context.get_value_type(types.intp)

        def const(v):
            return ir.Constant(intp, v)
        lda = builder.extract_value(a_arr.shape, 1)
        ldo = builder.extract_value(o_arr.shape, 1)
        panel_size = builder.mul(K, const(width))

        def a_index(r, k):
            return builder.gep(a_arr.data, [builder.add(builder.add(
                a_off, builder.mul(lda, const(r))), k)])

        def w_index(q, k):
            return builder.gep(p_arr.data, [builder.add(builder.add(
                w_off, builder.mul(panel_size, const(q))), builder.mul(k, const(width)))])

        def o_ptr(r, q):
            return builder.gep(o_arr.data, [builder.add(builder.add(
                o_off, builder.mul(ldo, const(r))), const(q * width))])
        element = context.get_value_type(signature.args[0].dtype)
        init = prefetch = None
        if passes:
            acc, pf_off = args[7:]
            vector = ir.VectorType(element, width)
            line = 64 // context.get_abi_sizeof(element)

            def init(r, q):
                stored = builder.load(builder.bitcast(o_ptr(r, q), vector.as_pointer()),
                                      align=4)
                return builder.select(acc, stored, ir.Constant(vector, None))

            def prefetch(k):
                return builder.gep(p_arr.data, [builder.add(pf_off,
                                                            builder.mul(k, const(line)))])
        _emit_tile(context, builder, element, width, rows, panels, K, a_index, w_index,
                   o_ptr, init, prefetch)
        return context.get_dummy_value()

    def typed(a, P, out):
        if not all(isinstance(x, types.Array) for x in (a, P, out)):
            return None
        if not (a.dtype == P.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(a, types.intp, P, types.intp, types.intp, out, types.intp,
                         *((types.boolean, types.intp) if passes else ()))
        return sig, codegen

    if passes:
        @intrinsic
        def tile(typingctx, a, a_off, P, w_off, K, out, o_off, acc, pf_off):
            return typed(a, P, out)
    else:
        @intrinsic
        def tile(typingctx, a, a_off, P, w_off, K, out, o_off):
            return typed(a, P, out)

    return tile


def _make_tile_tn(rows, width):
    """The intrinsic ``tile(a, a_off, b, b_off, K, out, o_off, acc)`` of a product
    ``a.T @ b``: the sums over k in ``0 .. K - 1`` of ``a[a_off + k * lda + r]`` times the
    ``width`` elements at ``b[b_off + k * ldb]`` (``lda``, ``ldb``: the row lengths of the
    2-D arrays ``a`` and ``b``), for ``r < rows``, stored at element ``o_off + r * ldo``
    of ``out``; with ``acc`` true the sums go on from the values stored there (a pass
    over the next rows of k continues each element's in-order sum)."""

    @intrinsic
    def tile(typingctx, a, a_off, b, b_off, K, out, o_off, acc):
        if not all(isinstance(x, types.Array) for x in (a, b, out)):
            return None
        if not (a.dtype == b.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(a, types.intp, b, types.intp, types.intp, out, types.intp,
                         types.boolean)

        def codegen(context, builder, signature, args):
            a, a_off, b, b_off, K, out, o_off, acc = args
            a_arr = context.make_array(signature.args[0])(context, builder, a)
            b_arr = context.make_array(signature.args[2])(context, builder, b)
            o_arr = context.make_array(signature.args[5])(context, builder, out)
            element = context.get_value_type(signature.args[0].dtype)
            vector = ir.VectorType(element, width)
            intp = context.get_value_type(types.intp)

            def const(v):
                return ir.Constant(intp, v)
            lda = builder.extract_value(a_arr.shape, 1)
            ldb = builder.extract_value(b_arr.shape, 1)
            ldo = builder.extract_value(o_arr.shape, 1)

            def a_index(r, k):
                return builder.gep(a_arr.data, [builder.add(builder.add(
                    a_off, builder.mul(k, lda)), const(r))])

            def w_index(q, k):
                return builder.gep(b_arr.data, [builder.add(b_off, builder.mul(k, ldb))])

            def o_ptr(r, q):
                return builder.gep(o_arr.data, [builder.add(o_off, builder.mul(ldo, const(r)))])

            def init(r, q):
                stored = builder.load(builder.bitcast(o_ptr(r, q), vector.as_pointer()),
                                      align=4)
                return builder.select(acc, stored, ir.Constant(vector, None))
            _emit_tile(context, builder, element, width, rows, 1, K, a_index, w_index,
                       o_ptr, init)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_PRODUCTS = {}


def panel_product(width=None, tile_rows=None, column_range=False, passes=None):
    """The jitted ``rows_times(a, n, P, out)`` for panels of ``width`` columns (default
    :data:`PANEL_WIDTH`): ``out[:n, :N'] = a[:n, :K] @ W`` for ``P = pack_panels(W)``
    (K = P.shape[1], N' = P.shape[0] * width, the padding columns get zeros).

    The rows go in tiles of at most ``tile_rows`` (default :data:`TILE_ROWS`), as even as
    possible (8 rows: two tiles of 4, not 6 and 2). ``a`` and ``out`` are C-contiguous 2-D
    arrays of P's dtype, ``out`` at least N' wide; rows of ``out`` past ``n`` are left
    alone. Call it from other jitted code. ``column_range``: the function
    ``rows_times(a, n, P, out, p0, p1)`` instead, which computes the panels ``p0 .. p1 - 1``
    only (their columns of ``out``). ``passes``: sum panels of more than 3 passes of
    :data:`PASS_BYTES` in passes over k (default :data:`PASSES_OVER_K`); same bits.
    """
    width = PANEL_WIDTH if width is None else width
    tile_rows = TILE_ROWS if tile_rows is None else tile_rows
    if not 1 <= tile_rows <= MAX_TILE_ROWS:
        raise ValueError(f"tile_rows must be 1 to {MAX_TILE_ROWS}, got {tile_rows}")
    passes = PASSES_OVER_K if passes is None else bool(passes)
    key = (width, tile_rows, column_range, passes)
    if key in _PRODUCTS:
        return _PRODUCTS[key]
    t1, t2, t3, t4, t5, t6 = (_make_tile(r, width) for r in range(1, MAX_TILE_ROWS + 1))
    # one or two rows: several panels at once, for as many independent FMA chains as a
    # 4-row tile (one row and one panel waited on the FMA latency: 8.7 us for 1 x (256, 1024))
    t1x4, t2x2 = _make_tile(1, width, 4), _make_tile(2, width, 2)
    a1, a2, a3, a4, a5, a6 = (_make_tile(r, width, passes=True)
                              for r in range(1, MAX_TILE_ROWS + 1))
    pass_rows = PASS_BYTES // (4 * width)
    line_tiles = max(1, width // 16)     # tiles that prefetch a pass, a 64-byte line per k

    @kernel
    def tile(rows, a, a_off, P, w_off, K, out, o_off):
        if rows == 6:
            t6(a, a_off, P, w_off, K, out, o_off)
        elif rows == 5:
            t5(a, a_off, P, w_off, K, out, o_off)
        elif rows == 4:
            t4(a, a_off, P, w_off, K, out, o_off)
        elif rows == 3:
            t3(a, a_off, P, w_off, K, out, o_off)
        elif rows == 2:
            t2(a, a_off, P, w_off, K, out, o_off)
        else:
            t1(a, a_off, P, w_off, K, out, o_off)

    @kernel
    def tile_pass(rows, a, a_off, P, w_off, K, out, o_off, acc, pf_off):
        if rows == 6:
            a6(a, a_off, P, w_off, K, out, o_off, acc, pf_off)
        elif rows == 5:
            a5(a, a_off, P, w_off, K, out, o_off, acc, pf_off)
        elif rows == 4:
            a4(a, a_off, P, w_off, K, out, o_off, acc, pf_off)
        elif rows == 3:
            a3(a, a_off, P, w_off, K, out, o_off, acc, pf_off)
        elif rows == 2:
            a2(a, a_off, P, w_off, K, out, o_off, acc, pf_off)
        else:
            a1(a, a_off, P, w_off, K, out, o_off, acc, pf_off)

    @kernel
    def rows_times_range(a, n, P, out, p0, p1):
        K = P.shape[1]
        lda, ldo = a.shape[1], out.shape[1]
        if n == 1 or n == 2:
            p = p0
            while p + 4 // n <= p1:
                if n == 1:
                    t1x4(a, 0, P, p * K * width, K, out, p * width)
                else:
                    t2x2(a, 0, P, p * K * width, K, out, p * width)
                p += 4 // n
            for q in range(p, p1):
                tile(n, a, 0, P, q * K * width, K, out, q * width)
            return
        n_tiles = (n + tile_rows - 1) // tile_rows
        if passes and K > 3 * pass_rows:
            # a panel past L1 (read from L2 or L3 by every tile): in passes over k, each
            # pass's rows read from L1 by every tile, the next pass's prefetched by the
            # first tiles (every element's in-order sum continued: the bits of one pass)
            for p in range(p0, p1):
                w0 = p * K * width
                for k0 in range(0, K, pass_rows):
                    kk = min(pass_rows, K - k0)
                    r0 = 0
                    for i in range(n_tiles):
                        rows = (n - r0) // (n_tiles - i)
                        pf = w0 + (k0 + pass_rows) * width + (i % line_tiles) * pass_rows * 16
                        tile_pass(rows, a, r0 * lda + k0, P, w0 + k0 * width, kk, out,
                                  r0 * ldo + p * width, k0 > 0, pf)
                        r0 += rows
            return
        for p in range(p0, p1):
            r0 = 0
            for i in range(n_tiles):
                rows = (n - r0) // (n_tiles - i)     # the rows left over the tiles left
                tile(rows, a, r0 * lda, P, p * K * width, K, out, r0 * ldo + p * width)
                r0 += rows

    @kernel
    def rows_times(a, n, P, out):
        rows_times_range(a, n, P, out, 0, P.shape[0])

    if column_range:
        rows_times = rows_times_range
    _PRODUCTS[key] = rows_times
    return rows_times
