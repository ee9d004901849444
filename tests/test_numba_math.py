"""The Numba kernels' gate math (fastlstm/backends/_numba_math.py) against float64 libm
and against the Cython kernels' functions it copies, and the Numba step product."""

import numpy as np
import pytest
from numba import njit

from fastlstm.backends import _numba_math

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
