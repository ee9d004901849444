"""Reusable scratch arrays for the temporaries of one ``dynamic_rnn`` call.

Every call needs several multi-megabyte temporaries (the input projection, the gate
gradients, in inference the whole state history). Fresh ones come from ``mmap`` and pay a
page fault per 4 KiB page on first touch: measured at the seed's size (B=128, T=28,
I=H=128), a forward pass took 8.7 ms with fresh buffers and 4.6 ms without the faults.
So a temporary that never leaves the call is taken from here instead: one buffer per
name and thread, grown when a larger one is asked for, reused otherwise.

Only for arrays that are dead when the call returns: nothing handed to the caller (outputs,
states, caches, gradients) may come from here.
"""

import threading

import numpy as np

_local = threading.local()


def scratch(name, shape, dtype, zero=False):
    """A C-contiguous array of ``shape`` and ``dtype`` that the caller may use until it
    asks for ``name`` again in this thread. Contents are undefined unless ``zero``."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.size < size:
        buf = buffers[name] = np.empty(size, np.uint8)
    arr = buf[:size].view(dtype).reshape(shape)
    if zero:
        arr.fill(0)
    return arr
