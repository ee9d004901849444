# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Recurrence kernels of the ``"cython"`` backend (kernel contract: fastlstm/reference.py).

Design (docs/design.md):

* The batch is sorted by length (longest first) and dealt round-robin into
  ceil(B / chunk_rows) chunks of near-equal size and work (``_chunk_order``). Each chunk
  runs its whole time loop on one thread with no per-step barrier, so the chunks are
  independent; ``prange`` hands them to the threads. Because the chunking does not depend
  on the thread count, every result is bit-identical for any thread count.
* Inside a chunk the rows that still have a step ``t`` are a prefix (sorted by length), so
  the per-step product ``h W`` is one product on the first ``n_active`` rows and no padded
  step is computed. It is the fused AVX-512 / AVX2 step of ``fused_step.h`` (float32 on CPUs
  that have it), else SciPy's BLAS (the Python wrapper limits it to one thread while
  these kernels run, so no multithreaded BLAS runs inside our parallel region).
* The state of a chunk lives in small contiguous buffers (``h_loc``, ``c_loc``) that the
  GEMM reads; the elementwise gate math of a row is one fused, vectorized C function
  (``gate_math.h``) that also writes the cache.
* ``chunk_rows`` comes from the caller (fastlstm.backends._chunking): it depends on the
  batch size and the machine, never on the requested thread count.
* ``floating`` is fused over float and double: one source, two compiled kernels.
"""

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t, uint32_t
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

import os

import numpy as np

from fastlstm import _thresholds
from fastlstm._workspace import CACHE_LINE, aligned_empty, scratch

# The engine by concern, one source file each (one extension module: they share the
# fused type, the BLAS wrapper, the chunking and the checks):
include "c_headers.pxi"
include "cpu_features.pxi"
include "runtime.pxi"
include "blas_rows.pxi"
include "chunking.pxi"
include "checks.pxi"
include "packing.pxi"
include "gemm_tiles.pxi"
include "rnn_kernels.pxi"
include "lstm_kernels.pxi"
include "gru_kernels.pxi"
include "test_helpers.pxi"
