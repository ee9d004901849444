"""The GEMMs outside the recurrence (fastlstm/_gemm.py): right, and the same bits for any
thread count, on BLAS blocks and on the fused kernels' tiles of the weight gradients
(AVX-512's, or AVX2's: the library routes the weight gradients to the tiles on AVX-512
only, _thresholds.WEIGHT_GRADIENT_TILE_ISAS; the routing tests widen it to this CPU's ISA)."""

import numpy as np
import pytest

from fastlstm import _gemm, _recurrent, _thresholds
from fastlstm.backends import _numba_gemm

needs_tiles = pytest.mark.skipif(not _recurrent.have_fused_step(),
                                  reason="this CPU has no fused kernels (the BLAS blocks run)")


@pytest.fixture
def tiles_route(monkeypatch):
    """The weight gradients on this CPU's tiles, whichever ISA they are."""
    monkeypatch.setattr(_thresholds, "WEIGHT_GRADIENT_TILE_ISAS", (_recurrent.fused_isa(),))


def _operands(K, M, N, seed, lda=None):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((K, lda or M)).astype(np.float32)[:, :M]   # rows lda apart
    b = rng.standard_normal((K, N)).astype(np.float32)
    return a, b


@needs_tiles
@pytest.mark.parametrize("K, M, N, lda", [
    (3584, 157, 512, None),     # the seed's [x, h, 1]^T dz
    (1, 1, 64, None), (127, 2, 128, None), (129, 3, 64, None), (300, 5, 192, None),
    (256, 28, 512, 157),        # x's columns of [x, h, 1]: a strided view
])
def test_weight_gradient_tiles_match_float64_and_any_thread_count(K, M, N, lda):
    a, b = _operands(K, M, N, seed=K + M, lda=lda)
    exact = a.astype(np.float64).T @ b.astype(np.float64)
    runs = []
    for n_threads in (1, 2, 3):
        out = np.full((M, N), np.nan, np.float32)
        _recurrent.gemm_tn_tiles(a, b, out, n_threads)
        runs.append(out)
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])
    # float32 sums over K terms: error like a BLAS's (same order of magnitude)
    blas_err = np.abs(a.T @ b - exact).max()
    assert np.abs(runs[0] - exact).max() <= 4 * blas_err + 1e-6 * np.sqrt(K)


@needs_tiles
def test_weight_gradient_tiles_are_what_matmul_tn_runs(tiles_route):
    a, b = _operands(3584, 157, 512, seed=1)
    want = np.empty((157, 512), np.float32)
    _recurrent.gemm_tn_tiles(a, b, want, 2)
    np.testing.assert_array_equal(_gemm.matmul_tn(np.ascontiguousarray(a), b, 2), want)
    np.testing.assert_array_equal(_gemm.matmul_tn(np.ascontiguousarray(a), b, 1), want)


@needs_tiles
def test_weight_gradient_tiles_take_the_parts_of_x_h_1_as_they_are(tiles_route):
    """[x, h, 1]^T dz from the parts (a column of ones as a broadcast view, rows 0 apart)
    gives the bits of the product over the concatenated copy."""
    rng = np.random.default_rng(3)
    K, I, H = 700, 5, 70                  # segments of 5, 70 and 1 rows: partial tiles
    x = rng.standard_normal((K, I)).astype(np.float32)
    h = rng.standard_normal((K, H)).astype(np.float32)
    dz = rng.standard_normal((K, 4 * 64)).astype(np.float32)
    ones = np.broadcast_to(np.ones(1, np.float32), (K, 1))
    whole = np.empty((I + H + 1, 256), np.float32)
    _recurrent.gemm_tn_tiles(np.concatenate([x, h, ones], axis=1), dz, whole, 2)
    parts = np.empty_like(whole)
    _recurrent.gemm_tn_tiles([x, h, ones], dz, parts, 2)
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(_gemm.matmul_tn_stacked([x, h, ones], dz, 1, merge=True),
                                  whole)


@needs_tiles
def test_weight_gradient_tiles_sum_over_chosen_rows_as_over_gathered_ones(tiles_route):
    """The steps that exist of a variable-length batch: rows chosen by index give the
    bits of the product over the gathered copies; out-of-range rows are refused."""
    rng = np.random.default_rng(5)
    K = 900
    x = rng.standard_normal((K, 6)).astype(np.float32)
    h = rng.standard_normal((K, 64)).astype(np.float32)
    dz = rng.standard_normal((K, 256)).astype(np.float32)
    ones = np.broadcast_to(np.ones(1, np.float32), (K, 1))
    rows = np.flatnonzero(rng.uniform(size=K) < 0.6)
    want = np.empty((71, 256), np.float32)
    _recurrent.gemm_tn_tiles([x[rows], h[rows], ones[:len(rows)]], dz[rows], want, 2)
    got = np.empty_like(want)
    _recurrent.gemm_tn_tiles([x, h, ones], dz, got, 2, rows)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        _gemm.matmul_tn_stacked([x, h, ones], dz, 1, merge=True, rows=rows), want)
    with pytest.raises(ValueError, match="rows"):
        _recurrent.gemm_tn_tiles([x], dz, np.empty((6, 256), np.float32), 2,
                                 np.array([0, K], np.int64))


@needs_tiles
@needs_tiles
def test_weight_gradients_wider_than_the_tile_limit_run_as_blas_blocks(monkeypatch, tiles_route):
    """Results with more rows than MAX_WEIGHT_GRADIENT_TILE_ROWS go to the BLAS blocks
    (OpenBLAS's cache blocking wins there); up to it, to the tiles."""
    from fastlstm import _thresholds
    monkeypatch.setattr(_thresholds, "MAX_WEIGHT_GRADIENT_TILE_ROWS", 70)
    tiled = []
    tiles = _recurrent.gemm_tn_tiles
    kernels = _gemm._kernels(_gemm.COMPILED)
    monkeypatch.setattr(kernels, "gemm_tn_tiles", lambda *args: tiled.append(1) or tiles(*args))
    rng = np.random.default_rng(6)
    K = 600
    h = rng.standard_normal((K, 70)).astype(np.float32)
    dz = rng.standard_normal((K, 128)).astype(np.float32)
    for parts in ([h], [h, np.broadcast_to(np.ones(1, np.float32), (K, 1))]):
        exact = np.concatenate(parts, axis=1).astype(np.float64).T @ dz
        got = _gemm.matmul_tn_stacked(parts, dz, 2, merge=True)
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    assert tiled == [1]                        # 70 rows on the tiles, 71 not


@pytest.mark.parametrize("merge", [True, False])
def test_stacked_products_on_blas_match_float64(merge, monkeypatch):
    """The BLAS fallback of matmul_tn_stacked (CPUs without AVX-512, or N % 64 != 0):
    one product over a concatenated copy, or one per part and column sums for the ones."""
    monkeypatch.setattr(_gemm, "_tiles_take", lambda *args: False)
    rng = np.random.default_rng(4)
    K = 500
    x = rng.standard_normal((K, 7)).astype(np.float32)
    h = rng.standard_normal((K, 40)).astype(np.float32)
    ones = np.broadcast_to(np.ones(1, np.float32), (K, 1))
    dz = rng.standard_normal((K, 160)).astype(np.float32)
    exact = np.concatenate([x, h, ones], axis=1).astype(np.float64).T @ dz
    got = _gemm.matmul_tn_stacked([x, h, ones], dz, 2, merge=merge)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    rows = np.arange(0, K, 3)                               # a subset of the rows
    exact = np.concatenate([x, h, ones], axis=1)[rows].astype(np.float64).T @ dz[rows]
    got = _gemm.matmul_tn_stacked([x, h, ones], dz, 2, merge=merge, rows=rows)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


@needs_tiles
def test_weight_gradient_tiles_refuse_what_they_cannot_do():
    a, b = _operands(10, 4, 96, seed=2)
    with pytest.raises(ValueError, match="N % 64"):
        _recurrent.gemm_tn_tiles(a, b, np.empty((4, 96), np.float32), 2)
    a, b = _operands(10, 4, 64, seed=2)
    with pytest.raises(ValueError, match="contiguous"):
        _recurrent.gemm_tn_tiles(a[:, ::2], b, np.empty((2, 64), np.float32), 2)


@pytest.mark.parametrize("K, M, N", [(3584, 157, 512), (3584, 157, 500), (900, 600, 28),
                                     (20, 30, 40)])
def test_products_match_float64_and_any_thread_count(K, M, N):
    """matmul_tn (tiles or BLAS blocks), matmul and matmul_nt, blocked or not."""
    rng = np.random.default_rng(K)
    a = rng.standard_normal((K, M)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    a_t = np.ascontiguousarray(a.T)                                   # (M, K)
    b_t = np.ascontiguousarray(b.T)                                   # (N, K)
    exact = a.astype(np.float64).T @ b.astype(np.float64)            # (M, N) every time
    for fn, args in ((_gemm.matmul_tn, (a, b)), (_gemm.matmul, (a_t, b)),
                     (_gemm.matmul_nt, (a_t, b_t))):
        got = [fn(*args, n) for n in (1, 2)]
        np.testing.assert_array_equal(got[0], got[1], err_msg=fn.__name__)
        np.testing.assert_allclose(got[0], exact, rtol=0, atol=1e-5 * np.abs(exact).max(),
                                   err_msg=fn.__name__)


@pytest.mark.parametrize("kernels", ["compiled", None, "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", [(1600, 64, 300), (3, 5, 7), (40, 0, 9)])
def test_matmul_with_a_bias_adds_it_to_the_finished_products(kernels, dtype, M, K, N):
    """``matmul(bias=...)``: the bits of ``matmul(...) + bias`` (x W + b's order), whether
    the blocks' threads add it (blocked products) or NumPy does, for any thread count."""
    if kernels == "numba":
        kernels = pytest.importorskip("fastlstm.backends._numba_gemm")
    rng = np.random.default_rng(M + K)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    for n_threads in (1, 2):
        plain = _gemm.matmul(a, b, n_threads, kernels=kernels)
        got = _gemm.matmul(a, b, n_threads, kernels=kernels, bias=bias)
        np.testing.assert_array_equal(got, plain + bias)


@pytest.mark.parametrize("kernels", [
    pytest.param(_gemm.COMPILED, marks=needs_tiles, id="cython"),
    pytest.param(_numba_gemm, id="numba")])
@pytest.mark.parametrize("I", [12, 28, 64])
def test_a_rows_input_gradient_does_not_depend_on_the_other_rows(I, kernels):
    # OpenBLAS's Haswell kernels (x86 CPUs without AVX-512) give a row other bits when it
    # lies elsewhere or the product has another row count; both backends' tiles take even
    # the small products, so a sequence's gradient is the same in any batch
    rng = np.random.default_rng(7)
    T, B, H = 5, 11, 24
    dz = rng.standard_normal((T * B, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32)
    full = _gemm.input_gradient(dz, W_x, None, T, B, True, 2, kernels=kernels)
    for keep in (np.arange(1, B), np.array([3]), np.array([0, 2, 3, 7, 10])):
        part = dz.reshape(T, B, -1)[:, keep].reshape(T * len(keep), -1)
        got = _gemm.input_gradient(part, W_x, None, T, len(keep), True, 2, kernels=kernels)
        np.testing.assert_array_equal(got, full[:, keep])


@needs_tiles
@pytest.mark.parametrize("I", [128, 96, 28, 12])
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("varlen", [False, True])
def test_input_gradient_tiles_match_blas_and_any_thread_count(I, time_major, varlen,
                                                              monkeypatch):
    """dz W_x^T on the tiles (whole 64-column blocks, and narrow tails: I = 96 = 64 + 32,
    28, 12), read in place at the steps that exist and written straight into the caller's
    layout, against the BLAS path (gather, product, scatter, transpose); the same bits
    for any thread count; exact zeros at the steps past each end."""
    rng = np.random.default_rng(6)
    T, B, H = 9, 13, 40
    assert _gemm.tiles_take_input_gradient(I)
    dz = rng.standard_normal((T * B, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32)
    rows = None
    if varlen:
        lengths = rng.integers(0, T + 1, size=B)
        rows = np.flatnonzero((np.arange(T)[:, None] < lengths[None, :]).ravel())
    got = [_gemm.input_gradient(dz, W_x, rows, T, B, time_major, n) for n in (1, 2, 3)]
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])
    monkeypatch.setattr(_thresholds, "MAX_TILED_INPUT_GRADIENT", 0)       # the BLAS path
    want = _gemm.input_gradient(dz, W_x, rows, T, B, time_major, 2)
    assert got[0].shape == want.shape == ((T, B, I) if time_major else (B, T, I))
    np.testing.assert_allclose(got[0], want, rtol=0, atol=2e-6 * np.abs(want).max())
    np.testing.assert_array_equal(got[0] == 0, want == 0)


@needs_tiles
@pytest.mark.parametrize("n", [12, 16, 28, 32, 96, 100])
def test_narrow_tiles_give_the_bits_of_the_wide_tile(n):
    """A last block of 32 or fewer columns runs on the 8-row narrow tile; each element is
    the same in-order sum over K as in the 4 x 64 tile, so W padded with zero rows to
    whole 64-column blocks (the wide tile everywhere) gives the same bits. Row counts
    that fill no whole tile, rows read through an index, both thread counts."""
    rng = np.random.default_rng(n)
    K, m = 200, 29
    a = rng.standard_normal((40, K)).astype(np.float32)
    W = rng.standard_normal((n, K)).astype(np.float32)
    wide = -(-n // 64) * 64
    W_pad = np.zeros((wide, K), np.float32)
    W_pad[:n] = W
    rows = rng.permutation(40)[:m].astype(np.int64)
    for n_threads in (1, 2):
        got = np.full(m * n, np.nan, np.float32)
        want = np.full(m * wide, np.nan, np.float32)
        _recurrent.gemm_rows_wt(a, _recurrent.pack_fused_t(W), n, got,
                                np.arange(m, dtype=np.int64) * n, rows, n_threads)
        _recurrent.gemm_rows_wt(a, _recurrent.pack_fused_t(W_pad), wide, want,
                                np.arange(m, dtype=np.int64) * wide, rows, n_threads)
        np.testing.assert_array_equal(got.reshape(m, n), want.reshape(m, wide)[:, :n])
        np.testing.assert_allclose(got.reshape(m, n), a[rows] @ W.T, rtol=1e-4, atol=1e-4)


@needs_tiles
def test_input_gradient_rows_refuse_what_they_cannot_do():
    a = np.ones((8, 64), np.float32)
    packed = _recurrent.pack_fused_t(np.ones((64, 64), np.float32))
    out = np.zeros(8 * 64, np.float32)
    offsets = np.arange(8, dtype=np.int64) * 64
    with pytest.raises(ValueError, match="rows must index"):
        _recurrent.gemm_rows_wt(a, packed, 64, out, offsets, offsets // 64 + 1, 2)
    with pytest.raises(ValueError, match="room"):
        _recurrent.gemm_rows_wt(a, packed, 64, out, offsets + 64, None, 2)
    with pytest.raises(ValueError, match="packed"):
        _recurrent.gemm_rows_wt(a, packed[:, :32], 64, out, offsets, None, 2)
