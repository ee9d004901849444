"""How the compiled kernels cut a batch into chunks (one chunk = one thread's work).

Each chunk runs its whole time loop alone, so the per-step product ``h W_h`` is one GEMM
per chunk: fewer, larger chunks stream ``W_h`` fewer times per step (measured on the
2-core AVX-512 machine, seed size: 16-row chunks spent more time re-reading and packing
``W_h`` than computing). So the batch is split evenly over the machine's cores, with at
least ``MIN_CHUNK_ROWS`` rows per chunk.

The chunk size depends on the batch size and the machine, never on the thread count
asked for with ``fastlstm.threads``: the same chunks, hence the same bits, for any.
"""

import numpy as np

from .. import _thresholds
from .._threads import default_num_threads





def chunk_rows(batch_size, fused=False, cores=None):
    """Rows per chunk for a batch of ``batch_size`` sequences (``fused``: for the fused
    AVX-512 kernels) on ``cores`` cores (default: :func:`default_num_threads`)."""
    minimum = _thresholds.MIN_CHUNK_ROWS_FUSED if fused else _thresholds.MIN_CHUNK_ROWS
    if cores is None:
        cores = default_num_threads()
    return max(minimum, -(-batch_size // cores))


def n_chunks(batch_size, fused=False, cores=None):
    """Number of chunks of a batch of ``batch_size`` sequences (``cores`` as in
    :func:`chunk_rows`)."""
    return -(-batch_size // chunk_rows(batch_size, fused, cores))





def unit_slices(batch_size, num_units, fused=False, any_batch=False, cores=None):
    """``(n_slices, width)`` to split the hidden units over the cores, or None.

    Only for batches that form a single chunk (the batch split would leave all but one core
    idle; on the BLAS path, batches of up to ``MAX_BATCH_UNIT_SPLIT``), unless
    ``any_batch`` (weights so large that each core streaming all of them every step costs
    more than a barrier). ``width`` is a multiple of 16 (whole AVX-512
    vectors); like the chunks, the slices depend on the machine and the sizes, never on
    the requested thread count. ``cores``: as in :func:`chunk_rows` (a caller that looks
    once per call passes what it saw: each look is a system call, ~0.3 us).
    """
    if cores is None:
        cores = default_num_threads()
    one_chunk = (n_chunks(batch_size, fused, cores) == 1 if fused
                 else batch_size <= _thresholds.MAX_BATCH_UNIT_SPLIT)
    if cores < 2 or (not one_chunk and not any_batch):
        return None
    if fused:
        if num_units < 2 * _thresholds.MIN_UNITS_PER_SLICE_FUSED or (
                batch_size == 1 and num_units <= 2 * _thresholds.MIN_UNITS_PER_SLICE_FUSED):
            return None
    elif num_units < 2 * _thresholds.MIN_UNITS_PER_SLICE:
        return None
    width = -(-num_units // cores)
    width = -(-width // 16) * 16
    return -(-num_units // width), width


def pack_unit_slices(W, n_slices, width):
    """``W`` (H, 4H) -> (n_slices, H * 4 * width): slice s's gate columns, row-major (H, 4 n_s)."""
    H = W.shape[0]
    gates = W.reshape(H, 4, H)
    packed = np.zeros((n_slices, H * 4 * width), W.dtype)
    for s in range(n_slices):
        u0, u1 = s * width, min(H, (s + 1) * width)
        packed[s, :H * 4 * (u1 - u0)] = gates[:, :, u0:u1].reshape(-1)
    return packed


def pack_fused(W):
    """``W`` (K, 4H) float32 -> (ceil(H/16), K * 64) for the fused step.

    Group g holds K rows of 64 floats: the i, j, f, o columns of units 16g .. 16g + 15
    (zero columns past H). ``W`` is ``W_h`` (K = H), or ``[W_x; W_h]`` (K = I + H) when
    the step computes the input projection itself.

    The layout's statement in NumPy: the kernels pack with the same layout in C
    (``fastlstm._recurrent.pack_fused``), and the tests compare the two.
    """
    K, H = W.shape[0], W.shape[1] // 4
    groups = -(-H // 16)
    gates = np.zeros((K, 4, groups * 16), W.dtype)
    gates[:, :, :H] = W.reshape(K, 4, H)
    return np.ascontiguousarray(
        gates.reshape(K, 4, groups, 16).transpose(2, 0, 1, 3).reshape(groups, K * 64))


def pack_fused_t(W):
    """``W`` (n, K) float32 -> (ceil(n/64), K, 64): ``W.T`` in blocks of 64 of W's rows
    (block c, row k, column j holds ``W[64c + j, k]``; zero past n), for the backward's
    packed products (``W_h`` (H, 4H): dz W_h^T; ``W_x`` (I, 4H): the input gradient). As
    :func:`pack_fused`, the NumPy statement of the C packing."""
    H, K = W.shape
    blocks = -(-H // 64)
    padded = np.zeros((blocks * 64, K), W.dtype)
    padded[:H] = W
    return np.ascontiguousarray(padded.reshape(blocks, 64, K).transpose(0, 2, 1))
