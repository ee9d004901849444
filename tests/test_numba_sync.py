"""The step barrier of the Numba kernels (fastlstm.backends._numba_sync): slices of one
parallel region that meet after every step see each other's writes of that step, and a
region given fewer threads than slices aborts instead of waiting forever."""

import numba
import numpy as np
import pytest
from numba import prange

from fastlstm.backends import _numba_sync
from fastlstm.backends._numba_jit import parallel_kernel


@parallel_kernel
def _steps(values, seen, sync):
    """Each slice s writes values[t, s] at step t, then, past the barrier, copies row t
    as it sees it into seen[t, s]."""
    n_steps, n_slices = values.shape
    for s in prange(n_slices):
        if _numba_sync.enter(sync):
            for t in range(n_steps):
                values[t, s] = t * n_slices + s + 1
                if not _numba_sync.barrier(sync, t, n_slices):
                    break
                total = 0
                for j in range(n_slices):
                    total += values[t, j]
                seen[t, s] = total


def _run(n_slices, threads, n_steps=2000):
    values = np.zeros((n_steps, n_slices), np.int64)
    seen = np.zeros((n_steps, n_slices), np.int64)
    sync = _numba_sync.new_sync()
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _steps(values, seen, sync)
    finally:
        numba.set_num_threads(previous)
    return values, seen, sync


def test_slices_see_every_write_of_the_step_before_they_go_on():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to synchronise")
    threads = min(4, numba.config.NUMBA_NUM_THREADS)
    values, seen, sync = _run(threads, threads)
    assert not _numba_sync.aborted(sync)
    want = values.sum(axis=1)
    np.testing.assert_array_equal(want, np.arange(2000) * threads ** 2
                                  + threads * (threads + 1) // 2)
    np.testing.assert_array_equal(seen, np.repeat(want[:, None], threads, axis=1))
    assert sync[_numba_sync.ARRIVED] == (2000) * threads
    assert sync[_numba_sync.STARTED] == threads


def test_a_region_with_fewer_threads_than_slices_aborts():
    values, seen, sync = _run(2, 1, n_steps=5)
    assert _numba_sync.aborted(sync)
    # slice 0 wrote its step 0 and gave up at the barrier; slice 1 never ran its steps
    np.testing.assert_array_equal(values[:, 1], 0)
    assert values[0, 0] == 1 and not values[1:, 0].any()
    assert sync[_numba_sync.STARTED] == 2
