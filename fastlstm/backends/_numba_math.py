"""Gate math for the Numba kernels: ``sigmoid`` and ``tanh`` that LLVM can vectorize.

Numba's ``np.exp`` / ``np.tanh`` on a float32 are calls to libm's ``expf`` / ``tanhf``,
one element at a time, which LLVM cannot turn into vector code: they were most of a
Numba LSTM step (seed size, 28 steps of 128 x 128 units: 14.5 ms per inference against
1.6 for torch). For float32 these are the Cython kernels' functions (src_cy/gate_math.h,
Cephes's method: ``exp`` by a degree-7 polynomial with ``2^n`` put into the exponent
bits, ``tanh`` by an odd polynomial near 0 and ``1 - 2 / (e^2x + 1)`` elsewhere; ~1.3 ulp)
in branch-free form, so a loop over units becomes vector code on any CPU LLVM targets
(AVX-512, AVX2, NEON). Their multiply-adds are the explicit FMAs of the fused step's
vector math (src_cy/gate_math_avx512.h), so the values are that math's to the last bit.
float64 keeps libm's ``exp`` / ``tanh`` (accuracy first: float64 is for gradient checks).

``sigmoid(x)`` and ``tanh(x)`` pick the form by the argument's type at compile time.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._numba_jit import FASTMATH

_F32 = np.float32
_EXP_HI, _EXP_LO = _F32(88.0), _F32(-87.0)
_MAGIC = _F32(12582912.0)                   # 1.5 * 2^23: adding it rounds to an integer
_MAGIC_BITS = 0x4B400000
_LOG2E = _F32(1.44269504088896341)
_LN2_HI, _LN2_LO = _F32(0.693359375), _F32(-2.12194440e-4)
_P = tuple(_F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                             4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_T = tuple(_F32(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                             1.33314422036e-1, -3.33332819422e-1))
_ONE, _TWO, _ZERO, _TANH_SMALL = _F32(1.0), _F32(2.0), _F32(0.0), _F32(0.625)


@intrinsic
def _bits_of(typingctx, x):
    """The bits of a float32 as an int64 (sign-extended int32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.sext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))
    return types.int64(types.float32), codegen


@intrinsic
def _float_of(typingctx, n):
    """The float32 whose bits are the low 32 bits of the int64 ``n``."""
    if n != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
    return types.float32(types.int64), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma``; one instruction on CPUs with FMA),
    for float32 or float64 operands of one type."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        return builder.fma(*args)
    return a(a, a, a), codegen


@njit(fastmath=FASTMATH, error_model="numpy")
def _exp_parts(x):
    """``exp(x) = p * scale`` with ``scale = 2^n``, as ``fl_exp16_parts``."""
    x = _EXP_HI if x > _EXP_HI else x            # NaN fails both tests and stays NaN
    x = _EXP_LO if x < _EXP_LO else x
    t = fma(x, _LOG2E, _MAGIC)
    fn = t - _MAGIC
    r = fma(-fn, _LN2_HI, x)
    r = fma(-fn, _LN2_LO, r)
    r2 = r * r
    p = _P[0]
    p = fma(p, r, _P[1])
    p = fma(p, r, _P[2])
    p = fma(p, r, _P[3])
    p = fma(p, r, _P[4])
    p = fma(p, r, _P[5])
    p = fma(p, r2, r) + _ONE
    return p, _float_of((_bits_of(t) - _MAGIC_BITS + 127) << 23)


@njit(fastmath=FASTMATH, error_model="numpy")
def _expf(x):
    p, scale = _exp_parts(x)
    return p * scale


@njit(fastmath=FASTMATH, error_model="numpy")
def _sigmoidf(x):
    p, scale = _exp_parts(-x)
    return _ONE / fma(p, scale, _ONE)


@njit(fastmath=FASTMATH, error_model="numpy")
def _tanhf(x):
    ax = -x if x < _ZERO else x
    z = x * x
    q = fma(fma(fma(fma(_T[0], z, _T[1]), z, _T[2]), z, _T[3]), z, _T[4])
    small = fma(q * z, x, x)
    p, scale = _exp_parts(ax + ax)
    big = _ONE - _TWO / fma(p, scale, _ONE)
    big = -big if x < _ZERO else big
    return small if ax < _TANH_SMALL else big


def sigmoid(x):
    """``1 / (1 + exp(-x))``; vectorizable for float32 (use inside njit code)."""
    return 1.0 / (1.0 + np.exp(-x))


def tanh(x):
    """``tanh(x)``; vectorizable for float32 (use inside njit code)."""
    return np.tanh(x)


@overload(sigmoid)
def _sigmoid_overload(x):
    if x == types.float32:
        return lambda x: _sigmoidf(x)
    return lambda x: 1.0 / (1.0 + np.exp(-x))


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanhf(x)
    return lambda x: np.tanh(x)
