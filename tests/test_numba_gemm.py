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
