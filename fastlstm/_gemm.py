"""The large GEMMs outside the recurrence, deterministic for any thread count.

A multithreaded BLAS may split a product differently for 1 and 2 threads (OpenBLAS
does: ``hs.T @ dz`` came out different in the last bit), so fastlstm never lets BLAS
choose the split. Each product is cut into chunks whose size depends only on the shapes,
each chunk is one single-threaded BLAS call, the chunks run on up to ``n_threads``
Python threads (NumPy releases the GIL inside BLAS), and the partial sums of a
reduction are added in chunk order. Same inputs, same bits, whatever the thread count.
"""

from concurrent.futures import ThreadPoolExecutor
import threading

import numpy as np

from ._threads import blas_threads, default_num_threads

#: Rows per chunk of a row-split product, and the least rows per chunk of a reduction.
ROW_CHUNK = 2048
#: A reduction over rows uses at most this many partial buffers.
MAX_PARTIALS = 8

_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=default_num_threads(),
                                       thread_name_prefix="fastlstm-gemm")
    return _pool


def _run_chunks(work, n_chunks, n_threads):
    """Call ``work(k)`` for every chunk k on at most ``n_threads`` threads (BLAS at 1)."""
    n_threads = max(1, min(n_threads, n_chunks))
    with blas_threads(1):
        if n_threads == 1:
            for k in range(n_chunks):
                work(k)
            return

        def worker(first):
            for k in range(first, n_chunks, n_threads):
                work(k)

        futures = [_executor().submit(worker, w) for w in range(n_threads)]
        for f in futures:
            f.result()


def matmul(a, b, n_threads, out=None):
    """``a (M, K) @ b (K, N)`` split into fixed chunks of ``ROW_CHUNK`` rows of ``a``."""
    M = a.shape[0]
    if out is None:
        out = np.empty((M, b.shape[1]), np.result_type(a, b))
    n_chunks = max(1, -(-M // ROW_CHUNK))

    def work(k):
        rows = slice(k * ROW_CHUNK, (k + 1) * ROW_CHUNK)
        np.matmul(a[rows], b, out=out[rows])

    _run_chunks(work, n_chunks, n_threads)
    return out


def matmul_tn(a, b, n_threads):
    """``a.T @ b`` for ``a (K, M)``, ``b (K, N)``: a sum over the K rows, in fixed chunks.

    Chunks of at least ``ROW_CHUNK`` rows and at most ``MAX_PARTIALS`` of them; each
    chunk's product goes to its own buffer and the buffers are added in order.
    """
    K = a.shape[0]
    chunk = max(ROW_CHUNK, -(-K // MAX_PARTIALS))
    n_chunks = max(1, -(-K // chunk))
    partials = np.empty((n_chunks, a.shape[1], b.shape[1]), np.result_type(a, b))

    def work(k):
        rows = slice(k * chunk, (k + 1) * chunk)
        np.matmul(a[rows].T, b[rows], out=partials[k])

    _run_chunks(work, n_chunks, n_threads)
    total = partials[0]
    for k in range(1, n_chunks):          # fixed order: deterministic
        total += partials[k]
    return total
