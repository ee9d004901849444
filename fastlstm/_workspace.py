"""Reusable scratch arrays for the temporaries of one ``dynamic_rnn`` call.

Every call needs several multi-megabyte temporaries (the input projection, the gate
gradients, in inference the whole state history). Fresh ones come from ``mmap`` and pay a
page fault per 4 KiB page on first touch: measured at the seed's size (B=128, T=28,
I=H=128), a forward pass took 8.7 ms with fresh buffers and 4.6 ms without the faults.
So a temporary that never leaves the call is taken from here instead: one buffer per
name and thread, grown when a larger one is asked for, reused otherwise.

Only for arrays that are dead when the call returns: nothing handed to the caller (outputs,
states, caches, gradients) may come from here.

Every array made here starts on a cache line (``CACHE_LINE`` bytes; :func:`aligned_empty`
for arrays that leave the call): the kernels' threads write neighbouring slices of whole
16-float groups of the same rows, and with NumPy's 16-byte alignment the lines at the
slices' borders went back and forth between the cores every step (false sharing): the
hidden-unit split of (1, T, 8, 64) took 0.5 or 1.0 us per step depending only on where the
allocator had put its arrays.
"""

import math
import os
import threading

import numpy as np

_local = threading.local()

#: Bytes of a cache line: where every array of this module starts.
CACHE_LINE = 64


def _ctypes_address(arr):
    return arr.ctypes.data


_address = None


def _data_address(arr):
    """Address of ``arr``'s first byte: the compiled buffer look-up where it is built
    (fastlstm._buffers, 0.1 us; ``arr.ctypes.data`` takes 0.8, and a B=1 inference makes
    two aligned arrays), else ctypes. Looked up on first use."""
    global _address
    if _address is None:
        try:
            from ._buffers import data_address as _address
        except ImportError:                 # built without the extension
            _address = _ctypes_address
    return _address(arr)


def _aligned_owner(nbytes):
    """A fresh uint8 array of ``nbytes + CACHE_LINE`` and the offset of its first cache
    line boundary."""
    owner = np.empty(nbytes + CACHE_LINE, np.uint8)
    return owner, -_data_address(owner) % CACHE_LINE


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` starting on a cache line (see the module's text); for
    arrays handed to the caller."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    owner, offset = _aligned_owner(nbytes)
    return owner[offset:offset + nbytes].view(dtype).reshape(shape)


def scratch(name, shape, dtype, zero=False):
    """A C-contiguous array of ``shape`` and ``dtype`` that the caller may use until it
    asks for ``name`` again in this thread. Contents are undefined unless ``zero``."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize      # math.prod: 0.1 us, np.prod 2 us
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.size < size:
        owner, offset = _aligned_owner(size)
        buf = buffers[name] = owner[offset:offset + size]
    arr = buf[:size].view(dtype).reshape(shape)
    if zero:
        arr.fill(0)
    return arr


# ------------------------------------------------------------------- recycled buffers
# The forward's cache (hs, cs, acts: 11 MB at the seed's size) leaves the call, so it
# cannot be scratch; but in a training loop each cache dies after its backward. Fresh
# memory for it cost 4-5 ms of page faults per seed-size forward (the kernel took 6.4 ms
# with a cache against ~2 ms without). So the cache's arrays are views of pooled
# buffers, and a buffer is handed out again only when no array refers to it any more.
_POOL_PER_SIZE = 4
_POOL_SIZES = 16
_pool = {}           # nbytes -> [(uint8 owner, offset of its first cache line)], most
                     # recently used size last
_pool_lock = threading.Lock()


def _after_fork_in_child():
    global _pool_lock
    _pool_lock = threading.Lock()       # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def recycled(shape, dtype, zero=False):
    """A C-contiguous array of ``shape`` and ``dtype`` from a pooled buffer that nothing
    else refers to (or a new one). Safe to hand to callers: a buffer is reused only once
    every array made from it has been garbage-collected."""
    import sys
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    owner = None
    with _pool_lock:
        buffers = _pool.pop(nbytes, [])
        for candidate, candidate_offset in buffers:
            # referenced only by its tuple, `candidate` and getrefcount's argument
            if sys.getrefcount(candidate) == 3:
                owner, offset = candidate, candidate_offset
                break
        if owner is None and len(buffers) < _POOL_PER_SIZE:
            owner, offset = _aligned_owner(nbytes)
            buffers.append((owner, offset))
        _pool[nbytes] = buffers                       # most recently used size last
        while len(_pool) > _POOL_SIZES:
            del _pool[next(iter(_pool))]
    if owner is None:                                 # every pooled buffer is in use
        owner, offset = _aligned_owner(nbytes)
    arr = owner[offset:offset + nbytes].view(dtype).reshape(shape)
    if zero:
        arr.fill(0)
    return arr


def release_buffers():
    """Drop the pooled buffers and this thread's scratch buffers (they are made again
    when next needed): what stays allocated after one very large call."""
    with _pool_lock:
        _pool.clear()
    _local.buffers = {}
