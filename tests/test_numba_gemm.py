"""The Numba backend's GEMM blocks (fastlstm/backends/_numba_gemm.py)."""

import numpy as np
import pytest

from fastlstm import _gemm
from fastlstm.backends import _numba_gemm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("blocks", [(16, 50), (50, 16), (7, 9), (100, 100)])
def test_blocks_are_the_product_with_the_same_bits_for_any_thread_count(
        dtype, trans_a, trans_b, blocks):
    rng = np.random.default_rng(0)
    M, K, N = 50, 33, 40
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    results = []
    for n_threads in (1, 2, 3):
        out = np.full((M, N), np.nan, dtype)
        _numba_gemm.gemm_blocks(a, b, out, trans_a, trans_b, *blocks, n_threads)
        results.append(out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_gemm_runs_the_numba_blocks_above_the_blocking_threshold(monkeypatch):
    """``fastlstm._gemm`` hands the numba backend's large products to these blocks."""
    calls = []
    original = _numba_gemm.gemm_blocks
    monkeypatch.setattr(_numba_gemm, "gemm_blocks",
                        lambda *args: calls.append(args[5:7]) or original(*args))
    rng = np.random.default_rng(1)
    a = rng.standard_normal((512, 128)).astype(np.float32)
    b = rng.standard_normal((128, 256)).astype(np.float32)
    out = _gemm.matmul(a, b, 2, kernels=_numba_gemm)
    assert calls, "the product did not reach the numba blocks"
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K, M, n_panels", [(600, 13, 2), (1, 1, 1), (257, 7, 3), (50, 6, 1),
                                         (40, 2, 1)])
def test_weight_gradient_tiles_match_float64_and_any_thread_count(dtype, K, M, n_panels):
    """``gemm_tn``: rows of the result in tiles of 1-6, passes of TN_K_CHUNK rows of k
    (K = 600: three), the same bits for any thread count."""
    from fastlstm.backends._numba_tiles import PANEL_WIDTH
    rng = np.random.default_rng(K + M)
    N = n_panels * PANEL_WIDTH
    a = rng.standard_normal((K, M)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    results = []
    for n_threads in (1, 2, 3):
        out = np.full((M, N), np.nan, dtype)
        _numba_gemm.gemm_tn(a, b, out, n_threads)
        results.append(out)
    exact = a.astype(np.float64).T @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)).T @ np.abs(b.astype(np.float64))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(results[0] - exact) <= K * eps * scale)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_weight_gradient_tiles_refuse_what_they_cannot_do():
    from fastlstm.backends._numba_tiles import PANEL_WIDTH
    a, b = np.ones((5, 3), np.float32), np.ones((5, PANEL_WIDTH), np.float32)
    with pytest.raises(ValueError, match="whole panels"):
        _numba_gemm.gemm_tn(a, b[:, :-1], np.empty((3, PANEL_WIDTH - 1), np.float32), 1)
    with pytest.raises(ValueError, match="does not give"):
        _numba_gemm.gemm_tn(a, b, np.empty((4, PANEL_WIDTH), np.float32), 1)
    out = np.full((3, PANEL_WIDTH), np.nan, np.float32)
    _numba_gemm.gemm_tn(a[:0], b[:0], out, 2)                     # K = 0: zeros
    np.testing.assert_array_equal(out, 0)


def test_matmul_tn_takes_the_tiles_for_narrow_results_and_blas_blocks_for_wide(monkeypatch):
    """``fastlstm._gemm`` routes the numba backend's weight gradients: up to
    ``max_tn_tile_rows()`` rows of whole panels on the tiles, else the BLAS blocks."""
    from fastlstm.backends._numba_tiles import PANEL_WIDTH
    calls = []
    for name in ("gemm_tn", "gemm_blocks"):
        original = getattr(_numba_gemm, name)
        monkeypatch.setattr(_numba_gemm, name,
                            lambda *args, _o=original, _n=name: calls.append(_n) or _o(*args))
    rng = np.random.default_rng(3)
    b = rng.standard_normal((3000, 4 * PANEL_WIDTH)).astype(np.float32)
    for M, route in ((40, "gemm_tn"), (_numba_gemm.max_tn_tile_rows() + 1, "gemm_blocks")):
        a = rng.standard_normal((3000, M)).astype(np.float32)
        calls.clear()
        out = _gemm.matmul_tn(a, b, 2, kernels=_numba_gemm)
        assert calls == [route]
        np.testing.assert_allclose(out, a.astype(np.float64).T @ b, rtol=1e-4, atol=1e-3)


def test_the_weight_gradients_tile_limit_follows_the_cpus_vectors():
    """Panels of 32 floats (AVX-512) take results of up to ``MAX_NUMBA_TN_TILE_ROWS`` rows on
    the tiles; narrower panels (AVX2 and NEON 16, SSE 8) only up to
    ``MAX_NUMBA_TN_TILE_ROWS_NARROW_PANELS``, fewer; this CPU's limit is its panels'."""
    from fastlstm import _thresholds
    from fastlstm.backends._numba_tiles import PANEL_WIDTH
    wide, narrow = (_thresholds.MAX_NUMBA_TN_TILE_ROWS,
                    _thresholds.MAX_NUMBA_TN_TILE_ROWS_NARROW_PANELS)
    assert narrow < wide
    assert _numba_gemm.max_tn_tile_rows(32) == wide
    assert _numba_gemm.max_tn_tile_rows(16) == _numba_gemm.max_tn_tile_rows(8) == narrow
    assert _numba_gemm.max_tn_tile_rows() == _numba_gemm.max_tn_tile_rows(PANEL_WIDTH)
    assert _numba_gemm.max_tn_tile_rows() == (wide if PANEL_WIDTH >= 32 else narrow)


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("I", [28, 70])
def test_input_gradient_on_the_panel_tiles(time_major, varlen, I, monkeypatch):
    """dz W_x^T on the Numba backend's panel tiles, each row written straight into the
    caller's layout: the product (against float64), exact zeros past each end, the same
    bits for any thread count, and the bits of the Cython kernels' tiles (both are
    in-order FMA chains over k) where those run; the route: the tiles at every size up
    to ``MAX_NUMBA_TILED_INPUT_GRADIENT`` inputs, the BLAS blocks past it."""
    from fastlstm import _thresholds
    calls = []
    original = _numba_gemm.input_gradient_tiles
    monkeypatch.setattr(_numba_gemm, "input_gradient_tiles",
                        lambda *args: calls.append(1) or original(*args))
    rng = np.random.default_rng(8)
    T, B, H = 9, 13, 40
    dz = rng.standard_normal((T * B, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32)
    lengths = rng.integers(0, T + 1, size=B) if varlen else np.full(B, T)
    exists = np.arange(T)[:, None] < lengths[None, :]                  # (T, B)
    rows = np.flatnonzero(exists.ravel()) if varlen else None
    got = [_gemm.input_gradient(dz, W_x, rows, T, B, time_major, n, kernels=_numba_gemm)
           for n in (1, 2, 3)]
    assert len(calls) == 3
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])
    want = (dz.astype(np.float64) @ W_x.T.astype(np.float64)).reshape(T, B, I)
    want[~exists] = 0
    if not time_major:
        want = want.transpose(1, 0, 2)
    assert got[0].shape == want.shape
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[0] == 0, want == 0)
    from fastlstm import _recurrent
    if _recurrent.have_fused_step():
        if _gemm.tiles_take_input_gradient(I):
            np.testing.assert_array_equal(
                got[0], _gemm.input_gradient(dz, W_x, rows, T, B, time_major, 2))
    monkeypatch.setattr(_thresholds, "MAX_NUMBA_TILED_INPUT_GRADIENT", I - 1)
    calls.clear()
    blas = _gemm.input_gradient(dz, W_x, rows, T, B, time_major, 2, kernels=_numba_gemm)
    assert calls == []
    np.testing.assert_allclose(blas, want, rtol=1e-4, atol=1e-4)


def test_input_gradient_tiles_refuse_what_they_cannot_do():
    dz = np.zeros((6, 8), np.float32)
    out = np.zeros(6 * 3, np.float32)
    offsets = np.arange(6) * 3
    with pytest.raises(ValueError, match="input_gradient_tiles"):
        _numba_gemm.input_gradient_tiles(dz, np.zeros((3, 7), np.float32), out, offsets, 1)
    with pytest.raises(ValueError, match="input_gradient_tiles"):
        _numba_gemm.input_gradient_tiles(dz[:, ::2], np.zeros((3, 4), np.float32), out,
                                         offsets, 1)
    with pytest.raises(ValueError, match="input_gradient_tiles"):
        _numba_gemm.input_gradient_tiles(dz, np.zeros((3, 8), np.float64), out, offsets, 1)
