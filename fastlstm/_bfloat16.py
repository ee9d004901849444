"""bfloat16 rounding in NumPy: what ``compute_dtype="bfloat16"`` does to a product's
operands, and the emulation that the kernels are tested against.

bfloat16 is float32 with the low 16 bits of the significand dropped (8 bits of
precision, float32's range). A product of two bfloat16 values is exact in float32, so
"bfloat16 products with float32 accumulation" is, exactly, a float32 product of the
operands rounded to bfloat16: only the order of the sums can differ from the CPU's
``vdpbf16ps`` (which adds the two products of a pair to the running sum one after the
other, each rounded, as float32 FMAs would).

Rounding is to nearest, ties to even, as ``vcvtneps2bf16``; subnormal inputs become
zero of the same sign (the instruction's flush to zero), NaN stays a quiet NaN.
"""

import numpy as np

#: The names ``compute_dtype`` accepts, and what each means for the products.
COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(compute_dtype, dtype=np.float32):
    """``"bfloat16"`` or None (the products in the working dtype) for ``compute_dtype``
    (None, ``"float32"``, ``"bfloat16"`` or the NumPy-style dtype objects of those
    names), or a ``ValueError`` naming what is accepted. Only float32 parameters take
    other products than their own."""
    if compute_dtype is None:
        return None
    name = getattr(compute_dtype, "name", compute_dtype)
    if not isinstance(name, str) or name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be None, 'float32' or 'bfloat16'; got "
                         f"{compute_dtype!r}")
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"compute_dtype={name!r} needs float32 parameters; these are "
                         f"{np.dtype(dtype).name}")
    return "bfloat16" if name == "bfloat16" else None


def bfloat16_bits(a):
    """The bfloat16 bit patterns (uint16) of float32 ``a``, rounded to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    subnormal = (u & 0x7F800000) == 0
    rounded = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    bits = np.where(nan, (u >> 16) | 0x40, rounded)
    bits = np.where(subnormal, (u >> 16) & 0x8000, bits)
    return bits.astype(np.uint16)


def round_to_bfloat16(a):
    """``a`` (float32) rounded to bfloat16, returned as float32 values (low 16 bits
    zero), same shape."""
    a = np.asarray(a, np.float32)
    return (bfloat16_bits(a).astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
