"""The Cython kernels' float32 exp / tanh / sigmoid (src_cy/gate_math.h and, for the fused
step, src_cy/gate_math_avx512.h and src_cy/gate_math_avx2.h) against float64 libm."""

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


# The fused step computes the gates with intrinsics: AVX-512 (src_cy/gate_math_avx512.h)
# or AVX2 (src_cy/gate_math_avx2.h) on CPUs without it. The same formulas, so the same
# accuracy and the same values as the portable functions, and the same bits as each other.
def _cpu_has(isa):
    try:
        _recurrent.fused_math_array(isa, "exp", np.zeros(1, np.float32))
    except RuntimeError:
        return False
    return True


ISAS = [pytest.param(isa, marks=pytest.mark.skipif(not _cpu_has(isa),
                                                   reason=f"this CPU has no {isa}"))
        for isa in ("avx512", "avx2")]


def _fused(isa, name):
    return lambda x: _recurrent.fused_math_array(isa, name, x)


def _sigmoid64(x):
    return 1 / (1 + np.exp(-x))


EXP_X = np.linspace(-87, 88, 2_000_001, dtype=np.float32)
TANH_X = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                         np.float32(10.0) ** -np.arange(1, 38, dtype=np.float32)])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name, portable, exact, x, bound", [
    ("exp", _recurrent.expf_array, np.exp, EXP_X, 2.0),
    ("tanh", _recurrent.tanhf_array, np.tanh, TANH_X, 3.0),
])
def test_fused_math_is_as_accurate_and_agrees_with_the_portable_one(isa, name, portable,
                                                                     exact, x, bound):
    fast = _fused(isa, name)
    assert max_ulp_error(fast, exact, x) < bound
    # same formulas and contractions: at most the last bit apart, almost always equal
    got, ref = fast(x), portable(x)
    apart = np.abs(got.view(np.int32).astype(np.int64) - ref.view(np.int32))
    assert apart.max() <= 1 and np.mean(apart == 0) > 0.999


@pytest.mark.parametrize("isa", ISAS)
def test_fused_sigmoid_is_accurate_and_saturates(isa):
    x = np.linspace(-80, 80, 2_000_001, dtype=np.float32)
    assert max_ulp_error(_fused(isa, "sigmoid"), _sigmoid64, x) < 3.0
    ends = _fused(isa, "sigmoid")(
        np.array([-np.inf, -1e30, 0, 1e30, np.inf], np.float32))
    assert np.all((ends[:2] >= 0) & (ends[:2] < 1e-37))     # e^-88: not below zero
    assert ends[2] == 0.5 and ends[3] == ends[4] == 1


@pytest.mark.parametrize("isa", ISAS)
def test_fused_saturation_and_nan_and_partial_vectors(isa):
    big = np.array([100, 1e30, np.inf, -100, -1e30, -np.inf], np.float32)
    np.testing.assert_array_equal(_fused(isa, "tanh")(big), [1, 1, 1, -1, -1, -1])
    e = _fused(isa, "exp")(big)
    assert np.all(np.isfinite(e)) and np.all(e[:3] > 1e38) and np.all(e[3:] < 2e-38)
    for name in ("exp", "tanh", "sigmoid"):
        assert np.isnan(_fused(isa, name)(np.array([np.nan], np.float32))[0])
        x = np.linspace(-3, 3, 37, dtype=np.float32)       # 16 + 16 + 5 (masked tail)
        np.testing.assert_array_equal(_fused(isa, name)(x)[32:], _fused(isa, name)(x[32:]))


@pytest.mark.skipif(not (_cpu_has("avx512") and _cpu_has("avx2")),
                    reason="needs a CPU with both AVX-512 and AVX2")
@pytest.mark.parametrize("name, x", [("exp", EXP_X), ("tanh", TANH_X),
                                     ("sigmoid", np.linspace(-90, 90, 2_000_001,
                                                             dtype=np.float32))])
def test_avx2_math_gives_the_avx512_bits(name, x):
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e30, -1e30],
                       np.float32)
    x = np.concatenate([x, special])
    np.testing.assert_array_equal(_fused("avx2", name)(x).view(np.int32),
                                  _fused("avx512", name)(x).view(np.int32))


def test_fused_math_array_rejects_an_unknown_isa():
    with pytest.raises(ValueError, match="isa must be"):
        _recurrent.fused_math_array("sse2", "exp", np.zeros(1, np.float32))
