# cython: language_level=3
"""Buffer addresses for fastlstm._workspace's cache-line alignment, in a module of its own
that imports nothing from fastlstm: the kernels' extension imports _workspace, which
therefore cannot import the kernels' extension back."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer


def data_address(obj):
    """Address of the first byte of ``obj``'s buffer (a contiguous array): 0.1 us where
    ``arr.ctypes.data`` takes 0.8 (two of them per B=1 inference of ~55 us)."""
    cdef Py_buffer view
    PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
    address = <size_t>view.buf
    PyBuffer_Release(&view)
    return address


from libc.string cimport memcmp


def same_bytes(a, b):
    """True when the contiguous buffers ``a`` and ``b`` hold the same bytes (memcmp: ~3 us
    for the 256 KB of a 128 x 512 float32 kernel, where NumPy's array_equal of integer
    views takes ~10 plus ~3 of overhead per array)."""
    cdef Py_buffer va, vb
    PyObject_GetBuffer(a, &va, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(b, &vb, PyBUF_SIMPLE)
        try:
            return va.len == vb.len and memcmp(va.buf, vb.buf, va.len) == 0
        finally:
            PyBuffer_Release(&vb)
    finally:
        PyBuffer_Release(&va)
