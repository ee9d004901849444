"""The Numba kernels' gate math (fastlstm/backends/_numba_math.py) against float64 libm
and against the Cython kernels' functions it copies, and the Numba step product."""

import numpy as np
import pytest
from numba import njit

from fastlstm.backends import _numba_math
from fastlstm.backends import numba_backend as nb

ULP = np.finfo(np.float32).eps


def _loop(f):
    @njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = f(x[i])
    return apply


_KERNELS = {"exp": _loop(_numba_math._expf), "tanh": _loop(_numba_math.tanh),
            "sigmoid": _loop(_numba_math.sigmoid)}


def fast(name, x):
    out = np.empty_like(x)
    _KERNELS[name](x, out)
    return out


def max_ulp_error(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    return rel.max() / ULP


def test_float32_exp_tanh_sigmoid_are_accurate():
    x = np.linspace(-87, 88, 1_000_001, dtype=np.float32)
    assert max_ulp_error(fast("exp", x), np.exp(x.astype(np.float64))) < 2.0
    t = np.concatenate([np.linspace(-12, 12, 1_000_001, dtype=np.float32),
                        np.float32(10.0) ** -np.arange(1, 38, dtype=np.float32)])
    assert max_ulp_error(fast("tanh", t), np.tanh(t.astype(np.float64))) < 3.0
    s = np.linspace(-80, 80, 1_000_001, dtype=np.float32)
    want = 1 / (1 + np.exp(-s.astype(np.float64)))
    assert np.abs(fast("sigmoid", s) - want).max() < 2 * ULP


def test_float32_saturation_and_nan():
    big = np.array([100, 1e30, np.inf, -100, -1e30, -np.inf], np.float32)
    np.testing.assert_array_equal(fast("tanh", big), [1, 1, 1, -1, -1, -1])
    sig = fast("sigmoid", big)                  # exp saturates at e^-87: 0 within 1e-38
    assert np.all(sig[:3] == 1) and np.all((sig[3:] >= 0) & (sig[3:] < 1e-38))
    e = fast("exp", big)
    assert np.all(np.isfinite(e)) and np.all(e[:3] > 1e38) and np.all(e[3:] < 2e-38)
    nan = np.array([np.nan], np.float32)
    assert np.isnan(fast("tanh", nan)[0]) and np.isnan(fast("sigmoid", nan)[0])


def test_float32_math_is_the_cython_kernels_math():
    """Same formulas as src_cy/gate_math.h: the values agree to the last bit or two (the
    compilers may contract other products into FMAs)."""
    _recurrent = pytest.importorskip("fastlstm._recurrent")
    x = np.linspace(-20, 20, 400_001, dtype=np.float32)
    assert max_ulp_error(fast("exp", x), _recurrent.expf_array(x)) <= 2.0
    assert max_ulp_error(fast("tanh", x), _recurrent.tanhf_array(x)) <= 2.0


def test_float64_keeps_libm():
    x = np.linspace(-30, 30, 10_001)
    np.testing.assert_allclose(fast("tanh", x), np.tanh(x), rtol=1e-15)     # libm, 1 ulp
    np.testing.assert_allclose(fast("sigmoid", x), 1 / (1 + np.exp(-x)), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 3, nb.SMALL_PRODUCT_ROWS, nb.SMALL_PRODUCT_ROWS + 1, 9])
def test_step_product_loop_and_blas_agree(dtype, n):
    """A few rows run the vectorized loop, more one BLAS call; both are the product, and
    the rows past n are left alone."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((10, 37)).astype(dtype)
    W = rng.standard_normal((37, 70)).astype(dtype)
    out = np.full((10, 70), 7.0, dtype)
    nb._rows_times(a, n, W, out)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(out[:n], a[:n].astype(np.float64) @ W, **tol)
    assert np.all(out[n:] == 7.0)
