"""Dense products on the device for the ``"cuda"`` backend's layers (numba.cuda).

``C = op(A) op(B) (+ bias) (+ C)`` in 64 x 64 tiles of ``C``, 16 steps of ``k`` at a time
through shared memory, 256 threads each owning a 4 x 4 block of outputs. Every output is
one thread's sum over ``k`` in order from zero (bias and accumulation added after):
deterministic, no atomics. Column sums (the bias gradient, the peepholes') likewise.
"""

import functools

import numba
import numpy as np
from numba import cuda

TILE = 64
STEP = 16
THREADS = 256                        # 16 x 16 threads, 4 x 4 outputs each


def _gemm(sdt):
    @cuda.jit
    def gemm(A, B, C, trans_a, trans_b, bias, accumulate, zero):
        a_tile = cuda.shared.array((STEP, TILE), sdt)      # [k, m]
        b_tile = cuda.shared.array((STEP, TILE), sdt)      # [k, n]
        acc = cuda.local.array((4, 4), sdt)
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        tid = cuda.threadIdx.x
        row4 = (tid // 16) * 4
        col4 = (tid % 16) * 4
        m0 = cuda.blockIdx.y * TILE
        n0 = cuda.blockIdx.x * TILE
        for i in range(4):
            for j in range(4):
                acc[i, j] = zero
        for k0 in range(0, K, STEP):
            for part in range(4):           # 1024 elements of each tile, 4 per thread
                idx = tid + part * THREADS
                if trans_a:                 # A[k, m]: m contiguous
                    kk, mm = idx // TILE, idx % TILE
                    ok = k0 + kk < K and m0 + mm < M
                    a_tile[kk, mm] = A[k0 + kk, m0 + mm] if ok else zero
                else:                       # A[m, k]: k contiguous
                    mm, kk = idx // STEP, idx % STEP
                    ok = k0 + kk < K and m0 + mm < M
                    a_tile[kk, mm] = A[m0 + mm, k0 + kk] if ok else zero
                if trans_b:                 # B[n, k]: k contiguous
                    nn, kk = idx // STEP, idx % STEP
                    ok = k0 + kk < K and n0 + nn < N
                    b_tile[kk, nn] = B[n0 + nn, k0 + kk] if ok else zero
                else:                       # B[k, n]: n contiguous
                    kk, nn = idx // TILE, idx % TILE
                    ok = k0 + kk < K and n0 + nn < N
                    b_tile[kk, nn] = B[k0 + kk, n0 + nn] if ok else zero
            cuda.syncthreads()
            for kk in range(min(STEP, K - k0)):
                for i in range(4):
                    a = a_tile[kk, row4 + i]
                    for j in range(4):
                        acc[i, j] += a * b_tile[kk, col4 + j]
            cuda.syncthreads()
        for i in range(4):
            m = m0 + row4 + i
            for j in range(4):
                n = n0 + col4 + j
                if m < M and n < N:
                    value = acc[i, j]
                    if bias.shape[0] > 0:
                        value = value + bias[n]
                    if accumulate:
                        value = C[m, n] + value
                    C[m, n] = value
    return gemm


@cuda.jit
def _column_sums(A, B, out, accumulate):
    """``out[n] (+)= sum_m A[m, n] (* B[m, n] when B is not empty)``, ``m`` in order."""
    n = cuda.grid(1)
    if n < out.shape[0]:
        acc = out[n] * 0
        if B.shape[0] > 0:
            for m in range(A.shape[0]):
                acc += A[m, n] * B[m, n]
        else:
            for m in range(A.shape[0]):
                acc += A[m, n]
        out[n] = out[n] + acc if accumulate else acc


@functools.lru_cache(maxsize=None)
def _kernel(dtype):
    return _gemm(numba.from_dtype(np.dtype(dtype)))


def matmul(A, B, C, trans_a=False, trans_b=False, bias=None, accumulate=False):
    """``C = op(A) @ op(B) (+ bias) (+ C if accumulate)`` on 2-D device arrays.

    Parameters
    ----------
    A : device array, shape (M, K), or (K, M) with ``trans_a``
    B : device array, shape (K, N), or (N, K) with ``trans_b``
    C : device array, shape (M, N)
    bias : device array, shape (N,), optional
    """
    M, N = C.shape
    (a_rows, K), (b_rows, b_cols) = A.shape[::-1] if trans_a else A.shape, B.shape
    if trans_b:
        b_rows, b_cols = b_cols, b_rows
    if (a_rows, b_rows, b_cols) != (M, K, N):
        raise ValueError(f"matmul shapes do not agree: A {A.shape} (trans {trans_a}), "
                         f"B {B.shape} (trans {trans_b}), C {C.shape}")
    if M == 0 or N == 0:
        return C
    if bias is None:
        bias = cuda.device_array(0, C.dtype)
    grid = (-(-N // TILE), -(-M // TILE))
    _kernel(C.dtype)[grid, THREADS](A, B, C, bool(trans_a), bool(trans_b), bias,
                                    bool(accumulate), C.dtype.type(0))
    return C


def column_sums(A, out, weights=None, accumulate=False):
    """``out (+)= A.sum(0)``, or ``(A * weights).sum(0)``, on device arrays (M, N) -> (N,)."""
    if weights is None:
        weights = cuda.device_array((0, 0), A.dtype)
    n = out.shape[0]
    if n:
        _column_sums[max(1, -(-n // 128)), 128](A, weights, out, bool(accumulate))
    return out
