"""The Cython kernels' float32 exp / tanh / sigmoid (src_cy/gate_math.h and, for the fused
AVX-512 step, src_cy/gate_math_avx512.h) against float64 libm."""

import numpy as np
import pytest

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


# The fused AVX-512 step computes the gates with intrinsics (src_cy/gate_math_avx512.h):
# the same formulas, so the same accuracy, and the same values as the portable functions.
needs_avx512 = pytest.mark.skipif(not _recurrent.have_fused_step(),
                                  reason="this CPU has no AVX-512 (the portable math runs)")


def _avx512(name):
    return lambda x: _recurrent.avx512_math_array(name, x)


def _sigmoid64(x):
    return 1 / (1 + np.exp(-x))


@needs_avx512
@pytest.mark.parametrize("name, portable, exact, x, bound", [
    ("exp", _recurrent.expf_array, np.exp,
     np.linspace(-87, 88, 2_000_001, dtype=np.float32), 2.0),
    ("tanh", _recurrent.tanhf_array, np.tanh,
     np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                     np.float32(10.0) ** -np.arange(1, 38, dtype=np.float32)]), 3.0),
])
def test_avx512_math_is_as_accurate_and_agrees_with_the_portable_one(name, portable,
                                                                      exact, x, bound):
    fast = _avx512(name)
    assert max_ulp_error(fast, exact, x) < bound
    # same formulas and contractions: at most the last bit apart, almost always equal
    got, ref = fast(x), portable(x)
    apart = np.abs(got.view(np.int32).astype(np.int64) - ref.view(np.int32))
    assert apart.max() <= 1 and np.mean(apart == 0) > 0.999


@needs_avx512
def test_avx512_sigmoid_is_accurate_and_saturates():
    x = np.linspace(-80, 80, 2_000_001, dtype=np.float32)
    assert max_ulp_error(_avx512("sigmoid"), _sigmoid64, x) < 3.0
    ends = _recurrent.avx512_math_array(
        "sigmoid", np.array([-np.inf, -1e30, 0, 1e30, np.inf], np.float32))
    assert np.all((ends[:2] >= 0) & (ends[:2] < 1e-37))     # e^-88: not below zero
    assert ends[2] == 0.5 and ends[3] == ends[4] == 1


@needs_avx512
def test_avx512_saturation_and_nan_and_partial_vectors():
    big = np.array([100, 1e30, np.inf, -100, -1e30, -np.inf], np.float32)
    np.testing.assert_array_equal(_avx512("tanh")(big), [1, 1, 1, -1, -1, -1])
    e = _avx512("exp")(big)
    assert np.all(np.isfinite(e)) and np.all(e[:3] > 1e38) and np.all(e[3:] < 2e-38)
    for name in ("exp", "tanh", "sigmoid"):
        assert np.isnan(_avx512(name)(np.array([np.nan], np.float32))[0])
        x = np.linspace(-3, 3, 37, dtype=np.float32)       # 16 + 16 + 5 (masked tail)
        np.testing.assert_array_equal(_avx512(name)(x)[32:], _avx512(name)(x[32:]))
