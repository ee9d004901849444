"""The Numba kernels' gate math (fastlstm/backends/_numba_math.py) against float64 libm
and against the Cython kernels' functions it copies, and the Numba step product."""

import re

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
    """Same formulas as src_cy/gate_math.h: the values agree to the last bit or two (the C
    compiler contracts that scalar code into FMAs as it sees fit)."""
    _recurrent = pytest.importorskip("fastlstm._recurrent")
    x = np.linspace(-20, 20, 400_001, dtype=np.float32)
    assert max_ulp_error(fast("exp", x), _recurrent.expf_array(x)) <= 2.0
    assert max_ulp_error(fast("tanh", x), _recurrent.tanhf_array(x)) <= 2.0


def _fused_isa():
    """The instruction set of this CPU's fused step math, or None (not x86, or no AVX2)."""
    try:
        from fastlstm import _recurrent
    except ImportError:
        return None
    for isa in ("avx512", "avx2"):
        try:
            _recurrent.fused_math_array(isa, "exp", np.zeros(1, np.float32))
            return isa
        except RuntimeError:
            pass
    return None


@pytest.mark.skipif(_fused_isa() is None, reason="no fused step math on this CPU (AVX2)")
@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid"])
def test_float32_math_is_the_fused_steps_to_the_last_bit(name):
    """Every multiply-add written as the FMA the vector intrinsics use, so the Numba gate
    math gives the Cython fused step's bits, NaN, infinities and saturation included."""
    from fastlstm import _recurrent
    x = np.concatenate([np.linspace(-100, 100, 400_001, dtype=np.float32),
                        np.float32(10.0) ** -np.arange(1, 38, dtype=np.float32),
                        [0.0, -0.0, 0.625, -0.625, 88, -87, 1e30, -1e30, np.inf, -np.inf,
                         np.nan]]).astype(np.float32)
    x = np.concatenate([x, -x])
    np.testing.assert_array_equal(fast(name, x),
                                  _recurrent.fused_math_array(_fused_isa(), name, x))


def test_float64_keeps_libm():
    x = np.linspace(-30, 30, 10_001)
    np.testing.assert_allclose(fast("tanh", x), np.tanh(x), rtol=1e-15)     # libm, 1 ulp
    np.testing.assert_allclose(fast("sigmoid", x), 1 / (1 + np.exp(-x)), rtol=1e-15)


def _vector_loops(dispatcher):
    """How many loops LLVM turned into vector code in ``dispatcher``'s first compiled
    signature (each vectorized loop gets a block named ``vector.body``)."""
    ir = dispatcher.inspect_llvm(dispatcher.signatures[0])
    return len(re.findall(r"^vector\.body[0-9]*:", ir, re.M))


def test_lstm_row_loops_compile_to_vector_code():
    """The Numba LSTM's per-row gate math and gate gradients are loops over units that
    LLVM vectorizes only while each touches few arrays (its runtime overlap checks have
    a limit): one more array in a loop and it silently stays scalar, 2x slower. Every
    loop over units of the two rows must be vector code (on any SIMD target)."""
    from fastlstm.backends import numba_backend as nb
    H = 64
    f32 = np.float32
    v = [np.zeros(H, f32) for _ in range(6)]
    a, z, peep = np.zeros(4 * H, f32), np.zeros(4 * H, f32), np.zeros((3, H), f32)
    rows = {nb._lstm_gates_row: 10, nb._lstm_grads_row: 10}   # loops over units in each
    nb._lstm_gates_row(a, z, v[0], v[1], peep, True, f32(1), f32(3), v[2], True, 0, H)
    nb._lstm_grads_row(v[0], v[1], v[2], v[3], a, v[4], peep, True, f32(3), v[5], z, f32(1),
                       0, H)
    for fn, n_loops in rows.items():
        assert _vector_loops(fn) >= n_loops, fn.__name__
