"""How the compiled kernels cut a batch into chunks (one chunk = one thread's work).

Each chunk runs its whole time loop alone, so the per-step product ``h W_h`` is one GEMM
per chunk: fewer, larger chunks stream ``W_h`` fewer times per step (measured on the
2-core AVX-512 machine, seed size: 16-row chunks spent more time re-reading and packing
``W_h`` than computing). So the batch is split evenly over the machine's cores, with at
least ``MIN_CHUNK_ROWS`` rows per chunk.

The chunk size depends on the batch size and the machine, never on the thread count
asked for with ``fastlstm.threads``: the same chunks, hence the same bits, for any.
"""

from .._threads import default_num_threads

MIN_CHUNK_ROWS = 8


def chunk_rows(batch_size):
    """Rows per chunk for a batch of ``batch_size`` sequences."""
    return max(MIN_CHUNK_ROWS, -(-batch_size // default_num_threads()))


def n_chunks(batch_size):
    """Number of chunks of a batch of ``batch_size`` sequences."""
    return -(-batch_size // chunk_rows(batch_size))
