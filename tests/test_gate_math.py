"""The Cython kernels' float32 exp / tanh (src_cy/gate_math.h) against float64 libm."""

import numpy as np

from fastlstm import _recurrent

ULP = np.finfo(np.float32).eps          # 2^-23, relative spacing at 1


def max_ulp_error(fast, exact, x):
    got = fast(x).astype(np.float64)
    want = exact(x.astype(np.float64))
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    return rel.max() / ULP


def test_expf_is_accurate_to_2_ulp():
    x = np.linspace(-87, 88, 2_000_001, dtype=np.float32)
    assert max_ulp_error(_recurrent.expf_array, np.exp, x) < 2.0


def test_tanhf_is_accurate_to_3_ulp_including_near_zero():
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                        np.float32(10.0) ** -np.arange(1, 38, dtype=np.float32)])
    assert max_ulp_error(_recurrent.tanhf_array, np.tanh, x) < 3.0


def test_saturation_and_nan():
    big = np.array([100, 1e30, np.inf, -100, -1e30, -np.inf], np.float32)
    np.testing.assert_array_equal(_recurrent.tanhf_array(big), [1, 1, 1, -1, -1, -1])
    e = _recurrent.expf_array(big)
    assert np.all(np.isfinite(e)) and np.all(e[:3] > 1e38) and np.all(e[3:] < 2e-38)
    assert np.isnan(_recurrent.tanhf_array(np.array([np.nan], np.float32))[0])
    assert np.isnan(_recurrent.expf_array(np.array([np.nan], np.float32))[0])
