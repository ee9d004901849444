"""Every compiled backend equals the reference: outputs, states and every gradient."""

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastlstm as fl
from fastlstm import _thresholds
from fastlstm.backends import get_backend
from fastlstm.backends._plans import ForwardPlan, LSTMCellArgs
from _helpers import (CELLS, assert_close, flat_grads, loss_weights, make_case, make_cell,
                      run_forward_backward)

COMPILED = ["cython", "numba"]
DTYPES = [np.float32, np.float64]
# (B, T, I, H): T=1, B=1, H=1, odd sizes, batches not divisible by 2 or by the chunk (16).
SHAPES = [(1, 1, 1, 1), (1, 7, 3, 5), (3, 1, 2, 1), (2, 6, 5, 3), (17, 5, 4, 7),
          (33, 9, 3, 6), (16, 4, 2, 9), (7, 5, 3, 20)]     # 7: fused chunks of 4 and 3


def compare(cell, backend, B, T, time_major=False, seed=0, lengths=None, zero_inputs=False,
            initial_state=True):
    x, lengths, state = make_case(cell, B, T, seed=seed, lengths=lengths,
                                  time_major=time_major, initial_state=initial_state)
    if zero_inputs:
        x[...] = 0
    R, S = loss_weights(cell, B, T, seed=seed, time_major=time_major)
    ref = run_forward_backward(cell, x, lengths, state, R, S, time_major, "numpy")
    got = run_forward_backward(cell, x, lengths, state, R, S, time_major, backend)
    assert_close(got[0], ref[0], cell.dtype, "outputs")
    for a, b in zip(fl_state_parts(got[1]), fl_state_parts(ref[1])):
        assert_close(a, b, cell.dtype, "final state")
    ref_grads, got_grads = flat_grads(ref[2]), flat_grads(got[2])
    assert set(ref_grads) == set(got_grads)
    for name in ref_grads:
        assert got_grads[name].dtype == cell.dtype, name
        assert np.all(np.isfinite(got_grads[name])), f"non-finite gradient {name}"
        assert_close(got_grads[name], ref_grads[name], cell.dtype, f"gradient {name}")
    return got


def fl_state_parts(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}I{}H{}".format(*s))
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("backend", COMPILED)
def test_backend_matches_reference(backend, cell_name, dtype, time_major, shape):
    B, T, I, H = shape
    cell = make_cell(cell_name, H, I, dtype=dtype, seed=B + T)
    compare(cell, backend, B, T, time_major, seed=H)


@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_input_projection_inside_the_step_or_before_it(cell_name, monkeypatch):
    """Cython float32 on the fused AVX-512 path computes x W_x + b inside the step (for
    these sizes) or, for wide inputs, as a GEMM before the loop: both equal the reference."""
    from fastlstm.backends import cython_backend as cb
    cell = make_cell(cell_name, 20, 5, dtype=np.float32, seed=2)
    assert cb.fuses_input(np.float32, 7, 5, 20) == cb.FUSED_STEP
    assert not cb.fuses_input(np.float32, 7, 2000, 100)
    # below MIN_BATCH_FUSED_WIDE_INPUT, wide inputs only in small cells (I + H <= 192)
    small = _thresholds.MAX_FUSED_SMALL_INPUT_WIDTH
    assert cb.fuses_input(np.float32, 1, small - 64, 64) == cb.FUSED_STEP
    assert not cb.fuses_input(np.float32, 1, small - 63, 64)
    assert cb.fuses_input(np.float32, _thresholds.MIN_BATCH_FUSED_WIDE_INPUT, small - 63,
                          64) == cb.FUSED_STEP
    compare(cell, "cython", 7, 6)
    monkeypatch.setattr(cb, "fuses_input", lambda *args: False)
    compare(cell, "cython", 7, 6)


# (2, 5): in the step (a small cell); (2, 200): xproj from a GEMM; (9, 5): in the step
@pytest.mark.parametrize("B, I", [(2, 5), (2, 200), (9, 5)])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell_name", ["lstm", "lstm_clip", "peephole_clip"])
def test_numba_lstm_inference_and_training_match_the_reference(cell_name, dtype, time_major,
                                                                B, I):
    """The numba LSTM's paths: inference straight into the caller's layout and the
    training forward with the input projection in the step (batches of a register tile
    or more, or small cells), xproj from a GEMM otherwise; variable lengths (one empty)
    and a given state."""
    from fastlstm.backends import numba_backend as nb
    cell = make_cell(cell_name, 20, I, dtype=dtype, seed=3)
    assert nb.fuses_input(dtype, B, I, 20) == (
        B >= _thresholds.MIN_BATCH_FUSED_INPUT_NUMBA
        or I + 20 <= _thresholds.MAX_FUSED_SMALL_INPUT_WIDTH)
    assert nb.fuses_input(dtype, B, I, 20) == (I == 5)
    x, lengths, state = make_case(cell, B, 6, seed=B, time_major=time_major)
    ref = fl.dynamic_rnn(cell, x, lengths, state, time_major, backend="numpy")
    got = fl.dynamic_rnn(cell, x, lengths, state, time_major, backend="numba")
    assert_close(got[0], ref[0], dtype, "outputs")
    for a, b in zip(got[1], ref[1]):
        assert_close(a, b, dtype, "final state")
    compare(cell, "numba", B, 6, time_major, seed=B)


class _Forced:
    """A split tuner that always answers ``schedule``."""

    def __init__(self, schedule):
        self.schedule = schedule

    def choose(self, key, candidates):
        assert self.schedule in candidates
        return self.schedule, False


@pytest.fixture
def split_calls(monkeypatch):
    """The names of the numba backend's LSTM split / one-core drivers, in the order they
    are called (skips where Numba has one thread: no unit split to compare)."""
    import numba
    from fastlstm.backends import numba_backend as nb
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: no unit split to compare")
    calls = []
    for name in ("_lstm_forward_split_region", "_lstm_forward_split",
                 "_lstm_backward_split_region", "_lstm_backward_chunk"):
        monkeypatch.setattr(nb, name, _spy(getattr(nb, name),
                                           lambda name, args: calls.append(name)))
    return calls


def _spy(dispatcher, record):
    """A stand-in for a Numba ``dispatcher`` (called from Python, not from other kernels)
    that calls ``record(name, args)`` and runs it; it compiles as the dispatcher does."""
    def call(*args):
        record(dispatcher.__name__, args)
        return dispatcher(*args)
    call.__name__ = dispatcher.__name__
    call.compile = dispatcher.compile
    return call


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_numba_unit_split_gives_the_bits_of_one_core(cell_name, dtype, B, monkeypatch,
                                                     split_calls):
    """A one-chunk batch on the numba backend: its hidden units split over the threads,
    in one parallel region with a barrier per step, in a region per step (after the
    one-region form aborted), or all on one core, give the same bits (inference, the
    training forward and so the gradients) and match the reference."""
    from fastlstm.backends import _numba_tiles
    from fastlstm.backends import numba_backend as nb
    calls = split_calls
    H = 3 * _numba_tiles.PANEL_WIDTH              # three slices' worth: uneven over 2
    cell = make_cell(cell_name, H, 5, dtype=dtype, seed=4)
    x, lengths, state = make_case(cell, B, 7, seed=B)
    results = {}
    for schedule, aborts in (("split", 0), ("split", nb.MAX_REGION_ABORTS), ("one chunk", 0)):
        monkeypatch.setattr(nb, "_SPLIT_TUNER", _Forced(schedule))
        monkeypatch.setattr(nb, "_region_aborts", [aborts])
        with fl.threads(2):
            inference = fl.dynamic_rnn(cell, x, lengths, state, backend="numba")
            training = compare(cell, "numba", B, 7, seed=B)
        results[schedule, aborts] = [inference[0], *inference[1], training[0],
                                     *training[1], *flat_grads(training[2]).values()]
    # inference, the training forward and the backward, each in one region; after the
    # aborts, the forwards a region per step and the backward on one core; then one core
    assert calls == ["_lstm_forward_split_region", "_lstm_forward_split_region",
                     "_lstm_backward_split_region", "_lstm_forward_split",
                     "_lstm_forward_split", "_lstm_backward_chunk", "_lstm_backward_chunk"]
    for want in (results["split", 0], results["split", nb.MAX_REGION_ABORTS]):
        for a, b in zip(results["one chunk", 0], want):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_numba_unit_split_region_that_aborts_is_rerun_per_step(cell_name, monkeypatch,
                                                               split_calls):
    """When the runtime gives the one-region split fewer threads than slices (here: one),
    its barrier would wait forever for a slice that cannot start: the region aborts, the
    chunk is run again a region per step with the same bits, and after
    ``MAX_REGION_ABORTS`` aborts the process stops trying the one region."""
    from fastlstm.backends import _numba_tiles
    from fastlstm.backends import numba_backend as nb
    calls = split_calls
    with_threads = nb._with_threads
    regions = (nb._lstm_forward_split_region, nb._lstm_backward_split_region)
    monkeypatch.setattr(nb, "_with_threads", lambda threads, fn, *args: with_threads(
        1 if fn in regions else threads, fn, *args))
    monkeypatch.setattr(nb, "_region_aborts", [0])
    H = 2 * _numba_tiles.PANEL_WIDTH
    cell = make_cell(cell_name, H, 5, dtype=np.float32, seed=5)
    x, lengths, state = make_case(cell, 1, 6, seed=1)

    def train():
        out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="numba",
                                       return_cache=True)
        return [out, *flat_grads(fl.dynamic_rnn_backward(cell, cache,
                                                         np.ones_like(out))).values()]

    monkeypatch.setattr(nb, "_SPLIT_TUNER", _Forced("one chunk"))
    want = train()
    calls.clear()
    monkeypatch.setattr(nb, "_SPLIT_TUNER", _Forced("split"))
    for k in range(3):
        with fl.threads(2):
            got = train()
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert nb._region_aborts == [nb.MAX_REGION_ABORTS]
    # forward: aborted, rerun a region per step; backward: aborted, rerun on one core;
    # after the third abort no region of a whole time loop is opened any more
    assert calls == ["_lstm_forward_split_region", "_lstm_forward_split",
                     "_lstm_backward_split_region", "_lstm_backward_chunk",
                     "_lstm_forward_split_region", "_lstm_forward_split",
                     "_lstm_backward_chunk",
                     "_lstm_forward_split", "_lstm_backward_chunk"]
    assert nb.MAX_REGION_ABORTS == 3


def test_numba_split_candidates_compile_at_the_first_call(monkeypatch):
    """The split tuner probes the unit split on a shape's first calls and the one-core
    schedule on the third and fourth: both are compiled at the first call, for the types
    of the calls that run them, so no later call stalls compiling (5-8 s a schedule)."""
    import numba
    from fastlstm.backends import _numba_tiles
    from fastlstm.backends import numba_backend as nb
    from fastlstm.backends._split_tuner import SplitTuner
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: no unit split to tune")
    monkeypatch.setattr(nb, "_SPLIT_TUNER", SplitTuner(probes=1, reprobe_after=100))
    monkeypatch.setattr(nb, "_COMPILED_SCHEDULES", set())
    monkeypatch.setattr(nb, "_region_aborts", [0])
    compiled, ran = set(), set()
    compile_for = nb.compile_for

    def record_compile(fn, *args):
        compiled.add((fn.__name__, tuple(numba.typeof(a) for a in args)))
        compile_for(fn, *args)

    monkeypatch.setattr(nb, "compile_for", record_compile)
    for name in ("_lstm_forward_serial", "_lstm_forward_split_region",
                 "_lstm_backward_split_region", "_lstm_backward_chunk"):
        monkeypatch.setattr(nb, name, _spy(getattr(nb, name), lambda name, args: ran.add(
            (name, tuple(numba.typeof(a) for a in args)))))
    cell = make_cell("peephole_clip", 2 * _numba_tiles.PANEL_WIDTH, 5, dtype=np.float32,
                     seed=6)
    x, lengths, state = make_case(cell, 1, 6, seed=6)
    with fl.threads(2):
        for k in range(6):
            out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="numba",
                                           return_cache=True)
            fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
            fl.dynamic_rnn(cell, x, lengths, state, backend="numba")
            if k == 0:
                at_first_call = set(compiled)
    assert compiled == at_first_call
    assert {name for name, _ in ran} == {"_lstm_forward_serial", "_lstm_forward_split_region",
                                         "_lstm_backward_split_region",
                                         "_lstm_backward_chunk"}
    assert ran <= compiled


@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("backend", COMPILED + ["numpy"])
def test_reused_buffers_leave_nothing_stale(backend, cell_name):
    """The kernels write only existing steps into reused buffers (scratch, recycled
    caches), and only the steps past each end are zeroed: after full-length calls have
    filled those buffers, a variable-length batch still gets zero outputs past its ends
    and the reference's gradients; inference (no cache, no activations stored) gives the
    training forward's outputs bit for bit."""
    cell = make_cell(cell_name, 6, 4, dtype=np.float32, seed=3)
    B, T = 9, 7
    for seed in range(2):                       # fill scratch and the recycled pool
        x_full, _, state = make_case(cell, B, T, seed=seed, lengths=[T] * B, scale=3.0)
        R, S = loss_weights(cell, B, T, seed=seed)
        run_forward_backward(cell, x_full, [T] * B, state, R, S, backend=backend)
        fl.dynamic_rnn(cell, x_full, initial_state=state, backend=backend)
    x, lengths, state = make_case(cell, B, T, seed=5)
    assert lengths.min() < T
    R, S = loss_weights(cell, B, T, seed=5)
    got = run_forward_backward(cell, x, lengths, state, R, S, backend=backend)
    fresh = run_forward_backward(cell, x, lengths, state, R, S, backend="numpy")
    past_end = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(got[0][past_end] == 0)
    assert_close(got[0], fresh[0], cell.dtype, "outputs")
    for name, arr in flat_grads(got[2]).items():
        assert np.all(np.isfinite(arr)), name
        assert_close(arr, flat_grads(fresh[2])[name], cell.dtype, f"gradient {name}")
    out, st = fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend=backend)
    np.testing.assert_array_equal(out, got[0])
    for a, b in zip(fl_state_parts(st), fl_state_parts(got[1])):
        np.testing.assert_array_equal(a, b)
    out_tm, st_tm = fl.dynamic_rnn(cell, x.transpose(1, 0, 2), lengths, initial_state=state,
                                   time_major=True, backend=backend)
    np.testing.assert_array_equal(out_tm.transpose(1, 0, 2), got[0])
    for a, b in zip(fl_state_parts(st_tm), fl_state_parts(got[1])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("backend", COMPILED)
def test_all_zero_inputs_and_default_state(backend, cell_name):
    cell = make_cell(cell_name, 5, 3, dtype=np.float32, seed=4)
    compare(cell, backend, 19, 6, zero_inputs=True, initial_state=False)


@pytest.mark.parametrize("backend", COMPILED)
def test_all_lengths_zero_returns_initial_state(backend):
    cell = make_cell("lstm", 4, 3, dtype=np.float64)
    x, _, state = make_case(cell, 5, 3)
    out, st = fl.dynamic_rnn(cell, x, sequence_length=np.zeros(5, int), initial_state=state,
                             backend=backend)
    assert np.all(out == 0)
    np.testing.assert_array_equal(st.c, state.c)
    np.testing.assert_array_equal(st.h, state.h)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 40), T=st.integers(1, 8), I=st.integers(1, 6), H=st.integers(1, 9),
       cell_name=st.sampled_from(sorted(CELLS)), backend=st.sampled_from(COMPILED),
       time_major=st.booleans(), seed=st.integers(0, 10_000))
def test_backend_matches_reference_on_random_shapes(B, T, I, H, cell_name, backend,
                                                    time_major, seed):
    cell = make_cell(cell_name, H, I, dtype=np.float64, seed=seed)
    compare(cell, backend, B, T, time_major, seed=seed)


# ------------------------------------------------------------------------- determinism
def _all_results(cell, backend, n_threads):
    # 53 x 45 = 2385 rows: more than one chunk of the weight-gradient reductions.
    x, lengths, state = make_case(cell, 53, 45, seed=9)
    R, S = loss_weights(cell, 53, 45, seed=9)
    with fl.threads(n_threads):
        out, st, grads = run_forward_backward(cell, x, lengths, state, R, S, False, backend)
    return [out] + fl_state_parts(st) + list(flat_grads(grads).values())


@pytest.mark.parametrize("cell_name", ["rnn", "lstm", "peephole_clip"])
@pytest.mark.parametrize("backend", COMPILED)
def test_bit_identical_across_thread_counts_and_calls(backend, cell_name):
    cell = make_cell(cell_name, 24, 5, dtype=np.float32, seed=2)
    one = _all_results(cell, backend, 1)
    two = _all_results(cell, backend, 2)
    again = _all_results(cell, backend, 2)
    for a, b, c in zip(one, two, again):
        assert np.all(np.isfinite(a))          # NaN == NaN for assert_array_equal
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)


def test_cython_build_has_openmp():
    # Without OpenMP the thread tests above would pass trivially (one thread always).
    assert get_backend("cython").module.openmp_enabled()


# ------------------------------------------------------------------------------ threads
def test_threads_sets_and_restores():
    before = fl.get_num_threads()
    with fl.threads(1):
        assert fl.get_num_threads() == 1
        with fl.threads(2):
            assert fl.get_num_threads() == 2
        assert fl.get_num_threads() == 1
    assert fl.get_num_threads() == before


def test_threads_restores_after_an_exception():
    before = fl.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with fl.threads(1):
            raise RuntimeError("boom")
    assert fl.get_num_threads() == before


def test_the_default_thread_count_follows_openmps_limit():
    """Unset, the thread count is the cores this process may use, capped by OpenMP's limit
    (threadpoolctl's here; OMP_NUM_THREADS below), as in scikit-learn's OpenMP
    estimators; -1 asks for all the cores whatever the limit. The cython build has
    OpenMP (test above)."""
    from threadpoolctl import threadpool_limits
    from fastlstm._threads import default_num_threads
    cores = default_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    unset = min(cores, int(omp)) if omp.isdigit() and int(omp) > 0 else cores
    assert fl.get_num_threads() == unset
    with threadpool_limits(1, user_api="openmp"):
        assert fl.get_num_threads() == 1
        with fl.threads(None) as n:
            assert n == 1
        with fl.threads(-1) as n:
            assert n == cores
        with fl.threads(2) as n:              # an explicit count is taken as asked
            assert n == 2
    assert fl.get_num_threads() == unset


def _threads_in_a_worker():
    import fastlstm
    return fastlstm.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_joblib_workers_do_not_oversubscribe_the_cores():
    """joblib's process workers start with OMP_NUM_THREADS = cores // n_jobs (what
    GridSearchCV(n_jobs=2) runs fits in); there each fit takes that many threads."""
    from joblib import Parallel, delayed
    from fastlstm._threads import default_num_threads
    results = Parallel(n_jobs=2, backend="loky")(delayed(_threads_in_a_worker)()
                                                  for _ in range(2))
    for n, omp in results:
        assert omp is not None, "joblib no longer limits its workers' OpenMP threads"
        assert n == max(1, min(default_num_threads(), int(omp)))
        assert n <= max(1, default_num_threads() // 2) or default_num_threads() == 1


def _fork_and_check(child, timeout=60):
    """Run ``child()`` in a forked process (it must return True); a hang ends in SIGALRM."""
    import signal
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            signal.alarm(timeout)
            ok = child()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_child_forked_after_threads_ran_runs_the_kernels_on_one_thread():
    """GNU OpenMP cannot start threads in a child forked after its threads ran (a fit in a
    multiprocessing 'fork' worker hung); there the kernels run on one thread, say so
    once, and give the same bits."""
    import warnings
    cell = make_cell("lstm", 64, 28)
    x, lengths, _ = make_case(cell, 16, 7)
    with fl.threads(2):
        want, _ = fl.dynamic_rnn(cell, x, lengths, backend="cython")

    def child():
        with warnings.catch_warnings(record=True) as caught, fl.threads(2):
            warnings.simplefilter("always")
            got, _ = fl.dynamic_rnn(cell, x, lengths, backend="cython")
            return (fl.get_num_threads() == 1 and np.array_equal(got, want)
                    and sum("forked" in str(w.message) for w in caught) == 1)

    ok, status = _fork_and_check(child)
    assert ok, f"the forked child failed or hung (status {status})"


def test_a_child_forked_before_threads_ran_keeps_them():
    """A process forked before any threads ran (here: right after import) may start its
    own: the cap is only for children of processes whose threads ran."""
    import subprocess
    import sys
    code = (
        "import os, sys, signal, numpy as np, fastlstm as fl\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    signal.alarm(60)\n"
        "    cell = fl.BasicLSTMCell(64, 28, random_state=0)\n"
        "    with fl.threads(2):\n"
        "        n = fl.get_num_threads()\n"
        "        fl.dynamic_rnn(cell, np.ones((16, 7, 28), np.float32), backend='cython')\n"
        "    os._exit(0 if n == 2 else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)\n")
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork (POSIX)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="positive integer"):
        with fl.threads(bad):
            pass


# ----------------------------------------------------------------------------- registry
def test_available_backends_and_auto():
    names = fl.available_backends()
    assert {"numpy", "cython", "numba"} <= set(names)
    assert "cuda" not in names
    from fastlstm.backends import cython_backend
    assert get_backend("auto").name == ("cython" if cython_backend.FUSED_STEP else "numba")


def test_auto_takes_numba_where_the_cython_extension_has_no_fused_step(monkeypatch):
    from fastlstm.backends import cython_backend
    monkeypatch.setattr(cython_backend, "FUSED_STEP", False)
    assert get_backend("auto").name == "numba"
    monkeypatch.setattr(cython_backend, "FUSED_STEP", True)
    assert get_backend("auto").name == "cython"


def test_cache_remembers_the_backend():
    cell = make_cell("lstm", 3, 2)
    x, lengths, state = make_case(cell, 3, 4)
    _, _, cache = fl.dynamic_rnn(cell, x, backend="numba", return_cache=True)
    assert cache.backend.name == "numba"
    _, _, cache = fl.dynamic_rnn(cell, x, return_cache=True)
    assert cache.backend.name == "cython"


def test_unknown_and_missing_backends_say_what_to_do():
    cell = make_cell("lstm", 3, 2)
    x = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        fl.dynamic_rnn(cell, x, backend="tensorflow")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":   # no GPU on the test machines
        with pytest.raises(ImportError, match="NVIDIA GPU"):
            fl.dynamic_rnn(cell, x, backend="cuda")



# ------------------------------------------------- small batches: hidden units over threads
@pytest.mark.parametrize("shape", [(1, 4, 3, 256), (3, 3, 4, 263), (4, 2, 2, 300)],
                         ids=lambda s: "B{}T{}I{}H{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip", "lstm_clip"])
def test_unit_split_matches_reference(cell_name, dtype, shape):
    from fastlstm.backends._chunking import unit_slices
    from fastlstm.backends.cython_backend import FUSED_STEP
    B, T, I, H = shape
    fused = FUSED_STEP and dtype == np.float32
    assert unit_slices(B, H, fused) is not None, "this shape should take the unit split"
    compare(make_cell(cell_name, H, I, dtype=dtype, seed=B), "cython", B, T, seed=T)


def test_unit_split_is_bit_identical_across_thread_counts():
    from fastlstm.backends._chunking import unit_slices
    cell = make_cell("peephole_clip", 270, 4, dtype=np.float32, seed=5)
    assert unit_slices(4, 270, fused=True) is not None
    x, lengths, state = make_case(cell, 4, 9, seed=2)
    R, S = loss_weights(cell, 4, 9, seed=2)
    runs = []
    for n in (1, 2, 2, 5):        # 5: more threads than slices and (here) than cores
        with fl.threads(n):
            out, st, grads = run_forward_backward(cell, x, lengths, state, R, S, False,
                                                  "cython")
            inferred, _ = fl.dynamic_rnn(cell, x, lengths, initial_state=state,
                                         backend="cython")
        np.testing.assert_array_equal(inferred, out)     # no activations stored: same bits
        runs.append([out] + fl_state_parts(st) + list(flat_grads(grads).values()))
    for first, *others in zip(*runs):
        assert np.all(np.isfinite(first))
        for other in others:
            np.testing.assert_array_equal(first, other)


def test_large_weights_split_the_backward_with_the_same_bits(monkeypatch):
    # W_h^T of 16 MB (H = 1024) splits the hidden units of a batch of two chunks too
    from fastlstm.backends import cython_backend as cb
    from fastlstm.backends._chunking import n_chunks, unit_slices
    if not cb.FUSED_STEP or cb.default_num_threads() < 2:
        pytest.skip("the fused backward's split needs AVX-512 and 2 cores")
    cell = make_cell("lstm", 1024, 3, dtype=np.float32, seed=4)
    assert cell.params["recurrent_kernel"].nbytes >= _thresholds.UNIT_SPLIT_MIN_WEIGHT_BYTES
    assert n_chunks(9, True) > 1 and unit_slices(9, 1024, True) is None
    assert unit_slices(9, 1024, True, any_batch=True) is not None
    x, lengths, state = make_case(cell, 9, 3, seed=4)
    R, S = loss_weights(cell, 9, 3, seed=4)
    split = run_forward_backward(cell, x, lengths, state, R, S, False, "cython")[2]
    monkeypatch.setattr(_thresholds, "UNIT_SPLIT_MIN_WEIGHT_BYTES", 1 << 60)
    chunks = run_forward_backward(cell, x, lengths, state, R, S, False, "cython")[2]
    for key, value in flat_grads(chunks).items():
        np.testing.assert_array_equal(flat_grads(split)[key], value)


def test_work_arrays_start_on_a_cache_line():
    # the threads of a unit split write neighbouring slices of these arrays: a slice of
    # whole 16-float groups must be whole cache lines (no false sharing)
    from fastlstm._workspace import CACHE_LINE, aligned_empty, recycled, scratch
    arrays = [scratch("test_alignment", (3, 5), np.float32),
              scratch("test_alignment", (1000, 7), np.float64),      # grown
              recycled((4, 3), np.float32), recycled((4, 3), np.float32),
              aligned_empty((2, 3, 5), np.float32)]
    cell = make_cell("lstm", 32, 3, dtype=np.float32, seed=0)
    x, _, _ = make_case(cell, 2, 4, seed=0)
    out, state = fl.dynamic_rnn(cell, x, backend="cython")
    out_tm, state_tm = fl.dynamic_rnn(cell, x.transpose(1, 0, 2), time_major=True,
                                      backend="cython")
    from fastlstm.backends import cython_backend as cb
    if cb.fuses_input(np.float32, 2, 3, 32):     # the fused inference writes these itself
        arrays += [out, state.c, out_tm, state_tm.c]
    for arr in arrays:
        assert arr.ctypes.data % CACHE_LINE == 0
    assert arrays[2].shape == (4, 3) and not np.shares_memory(arrays[2], arrays[3])
    # the compiled address look-up behind the alignment is ctypes' address
    from fastlstm._workspace import _ctypes_address, _data_address
    for arr in (np.empty(100, np.uint8), np.empty(7, np.uint8)[3:], arrays[0]):
        assert _data_address(arr) == _ctypes_address(arr)


@pytest.mark.parametrize("lengths", [[5], [7, 7, 7, 7, 7], [9, 8, 8, 3, 0],
                                     [2, 9, 4, 9, 1, 0, 9], list(range(20))])
def test_chunk_order_sorts_longest_first_stably(lengths):
    # the kernels' row order: a stable sort by decreasing length, then dealt to chunks
    # (equal lengths: cut, each chunk's rows consecutive); lengths already in that order
    # skip the sort (same order)
    from fastlstm import _recurrent
    seq_len = np.array(lengths, np.int64)
    rows = np.argsort(-seq_len, kind="stable")
    np.testing.assert_array_equal(_recurrent._chunk_order(seq_len), rows)
    dealt = (rows if len(set(lengths)) == 1
             else np.concatenate([rows[0::2], rows[1::2]]))
    np.testing.assert_array_equal(_recurrent._chunk_order(seq_len, 2), dealt)


@pytest.mark.parametrize("dtype, compute_dtype", [(np.float32, None), (np.float64, None),
                                                   (np.float32, "bfloat16")])
def test_cut_and_dealt_chunks_give_the_same_bits(dtype, compute_dtype):
    # equal lengths: chunks of consecutive rows, whose backward reads dz in the cache;
    # one more sequence of length 0 makes the lengths unequal and the rows dealt (each
    # chunk's dz rows copied from a buffer). A row's results must not change by a bit
    # (the sums over rows, the weight gradients, are blocked by their row count).
    from fastlstm import _recurrent
    if compute_dtype == "bfloat16" and not _recurrent.have_bf16_kernels():
        pytest.skip("no AVX512-BF16 here: bfloat16 runs the NumPy emulation, which has no "
                    "chunks, and its rows' bits are the BLAS's (OpenBLAS's Haswell kernels "
                    "give a row other bits in another row count)")
    rng = np.random.default_rng(5)
    B, T, I, H = 64, 6, 12, 48
    cell = fl.LSTMCell(H, I, use_peepholes=True, cell_clip=2.0, random_state=0, dtype=dtype)
    x = rng.standard_normal((B + 1, T, I)).astype(dtype)
    d_out = rng.standard_normal((B + 1, T, H)).astype(dtype)
    grads = []
    for lengths, rows in ((np.full(B, T), B), (np.r_[np.full(B, T), 0], B + 1)):
        out, _, cache = fl.dynamic_rnn(cell, x[:rows], lengths, backend="cython",
                                       return_cache=True, compute_dtype=compute_dtype)
        grads.append(fl.dynamic_rnn_backward(cell, cache, d_out[:rows]))
    np.testing.assert_array_equal(grads[1]["inputs"][:B], grads[0]["inputs"])
    np.testing.assert_array_equal(np.asarray(grads[1]["initial_state"])[:, :B],
                                  np.asarray(grads[0]["initial_state"]))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name in set(grads[0]) - {"inputs", "initial_state"}:
        np.testing.assert_allclose(grads[1][name], grads[0][name], rtol=tol, atol=tol,
                                   err_msg=name)


def test_import_loads_no_backend_and_no_scikit_learn():
    # `import fastlstm` stays fast: no JIT, no numba, no scikit-learn until used.
    import subprocess
    import sys
    code = ("import sys, fastlstm; "
            "print(sorted(m for m in ('numba', 'sklearn', 'fastlstm._recurrent', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_compiled_packing_matches_the_numpy_layouts():
    """The fused kernels' weight packing, done in C per call, equals the layouts that
    fastlstm.backends._chunking states in NumPy (zero columns past H included)."""
    from fastlstm import _recurrent
    from fastlstm.backends import _chunking
    rng = np.random.default_rng(0)
    for I, H in [(0, 1), (3, 5), (28, 128), (7, 70)]:
        W_h = rng.standard_normal((H, 4 * H)).astype(np.float32)
        W_x = rng.standard_normal((I, 4 * H)).astype(np.float32) if I else None
        stacked = W_h if W_x is None else np.concatenate([W_x, W_h])
        np.testing.assert_array_equal(_recurrent.pack_fused(W_h, W_x),
                                      _chunking.pack_fused(stacked))
        np.testing.assert_array_equal(_recurrent.pack_fused_t(W_h),
                                      _chunking.pack_fused_t(W_h))
        if W_x is not None:                                  # (I, 4H): the input gradient
            np.testing.assert_array_equal(_recurrent.pack_fused_t(W_x),
                                          _chunking.pack_fused_t(W_x))
    # weights of PARALLEL_PACK_MIN_BYTES or more: packed in row ranges by the threads
    I, H = 401, 130
    W_h = rng.standard_normal((H, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32)
    assert W_h.nbytes + W_x.nbytes >= _thresholds.PARALLEL_PACK_MIN_BYTES
    expected = _chunking.pack_fused(np.concatenate([W_x, W_h]))
    W_t = rng.standard_normal((200, 1400)).astype(np.float32)   # 4 blocks of 64 rows
    assert W_t.nbytes >= _thresholds.PARALLEL_PACK_MIN_BYTES
    expected_t = _chunking.pack_fused_t(W_t)
    for n_threads in (1, 2, 3):
        np.testing.assert_array_equal(_recurrent.pack_fused(W_h, W_x, None, n_threads),
                                      expected)
        np.testing.assert_array_equal(_recurrent.pack_fused_t(W_t, None, n_threads),
                                      expected_t)


@pytest.mark.parametrize("B, unit_slices", [(1, 2), (9, 0), (40, 0), (40, 3)])
@pytest.mark.parametrize("I", [0, 7])
def test_weights_packed_by_the_kernels_threads_give_the_bits_of_a_packed_copy(B, unit_slices,
                                                                               I):
    """The fused forward's threads may pack the weights themselves (``pack_into``: each
    thread a copy of its own in batch chunks, the groups of its slices with the units
    split) instead of reading one copy packed before the call (``W_fused``): the same
    packed values, so the same bits; and the copy each thread packed is the NumPy layout.
    A ``pack_into`` too small for one copy per thread, or weights of the wrong shape, are
    refused before anything runs."""
    from fastlstm import _recurrent
    from fastlstm.backends import _chunking, cython_backend as cb
    if not cb.FUSED_STEP:
        pytest.skip("this CPU has no AVX-512: no fused step")
    T, H, n_threads, rows = 5, 70, 2, 4
    groups = -(-H // 16)
    rng = np.random.default_rng(1)
    W_h = (rng.standard_normal((H, 4 * H)) * 0.3).astype(np.float32)
    W_x = (rng.standard_normal((I, 4 * H)) * 0.3).astype(np.float32) if I else None
    bias = rng.standard_normal(4 * H).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    xproj = (rng.standard_normal((T, B, 4 * H))).astype(np.float32)
    seq_len = rng.integers(1, T + 1, B).astype(np.int64)
    peep = np.zeros((3, H), np.float32)

    def run(**weights):
        hs = np.zeros((T + 1, B, H), np.float32)
        cs = np.zeros((T + 1, B, H), np.float32)
        hs[0] = rng.standard_normal((B, H))
        acts = np.zeros((T, B, 4 * H), np.float32)
        fused_x = dict(x=x, bias=bias) if I else {}
        _recurrent.lstm_forward(LSTMCellArgs(W_h, peep, False, 1.0, 0.0),
                                xproj if not I else cb._NO_XPROJ, seq_len, hs, cs, acts,
                                cb._NO_XPROJ, n_threads,
                                ForwardPlan(rows, unit_slices=unit_slices, **fused_x,
                                            **weights))
        return hs, cs, acts

    state = rng.bit_generator.state
    want = run(W_fused=_recurrent.pack_fused(W_h, W_x))
    copies = 1 if unit_slices else min(n_threads, -(-B // rows))
    into = np.full((copies * groups, (I + H) * 64), np.nan, np.float32)
    rng.bit_generator.state = state
    got = run(pack_into=into, pack_wh=W_h, pack_wx=W_x)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    stacked = W_h if W_x is None else np.concatenate([W_x, W_h])
    expected = _chunking.pack_fused(stacked)
    np.testing.assert_array_equal(into[:groups], expected)        # every group packed
    if copies > 1:
        np.testing.assert_array_equal(into[groups:], expected)
    with pytest.raises(ValueError, match="pack_into must hold"):
        run(pack_into=into[:groups * copies - 1], pack_wh=W_h, pack_wx=W_x)
    with pytest.raises(ValueError, match="pack_wh must be"):
        run(pack_into=into, pack_wh=np.ascontiguousarray(W_h[:, :-4]), pack_wx=W_x)


@pytest.mark.parametrize("B", [9, 40])
@pytest.mark.parametrize("H", [40, 70, 130])
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_a_sequence_alone_gets_the_bits_it_gets_in_a_batch(cell_name, H, B, monkeypatch):
    """The fused AVX-512 float32 step runs a lone row (a batch of one, or the last
    sequence left in a chunk) with its one-row kernel, rows in 4-row tiles otherwise; with
    H = 130 a batch of one or of 9 splits the hidden units over the cores, 40 sequences
    go in batch chunks: the same sequential sums everywhere, so the same bits. The
    one-row kernel takes 1 to 4 groups of 16 units at once (H = 40: 3 groups; H = 70 on
    two cores: slices of 3 and 2; H = 130: 4 + 1 and 4). The fixed rules schedule here
    (the split tuner would pick by the clock; test_split_tuner runs both of its choices)."""
    from fastlstm.backends import cython_backend as cb
    if not cb.FUSED_STEP:
        pytest.skip("this CPU has no AVX-512: BLAS path, whose rounding may follow M")
    monkeypatch.setattr(_thresholds, "TUNE_UNIT_SPLIT", False)
    if H == 130 and cb.default_num_threads() == 2:
        assert cb.fused_unit_slices(1, H) > 0 and cb.fused_unit_slices(9, H) > 0
        assert cb.fused_unit_slices(40, H) == 0
        assert cb.fused_unit_slices(40, 1024, 2048) > 0       # 32 MB of packed weights
    cell = make_cell(cell_name, H, 5, dtype=np.float32, seed=1)
    x, lengths, state = make_case(cell, B, 6, seed=3)
    out, st = fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend="cython")
    for b in range(B):
        alone = fl.LSTMStateTuple(state.c[b:b + 1], state.h[b:b + 1])
        one, one_st = fl.dynamic_rnn(cell, x[b:b + 1], lengths[b:b + 1], initial_state=alone,
                                     backend="cython")
        np.testing.assert_array_equal(one[0], out[b])
        np.testing.assert_array_equal(one_st.c[0], st.c[b])


def test_blas_thread_limit_is_restored_after_calls_and_errors():
    """fastlstm holds BLAS at one thread only while it runs (one limit per call, nested
    limits free); the caller's BLAS threads come back, also after a ValueError."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    cell = make_cell("lstm", 4, 3, dtype=np.float32)
    x, lengths, state = make_case(cell, 5, 3)
    fl.dynamic_rnn(cell, x, lengths, state)          # loads every BLAS the kernels use
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        assert before
        out, st, cache = fl.dynamic_rnn(cell, x, lengths, state, return_cache=True)
        fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
        assert blas_threads() == before
        with pytest.raises(ValueError):
            fl.dynamic_rnn(cell, x[:, :, :2], lengths, state)
        assert blas_threads() == before


@pytest.mark.skipif(not get_backend("cython").module.FUSED_STEP,
                    reason="the fused kernels do not run on this CPU")
def test_the_widest_input_inside_the_step_follows_the_l2_cache():
    """I + H up to 1024 inside the step, up to 2048 where a core's L2 holds 2 MB: a
    property of the CPU (set_l2_bytes stands in for another one), never of a timing."""
    from fastlstm import _recurrent
    from fastlstm.backends import cython_backend as cb
    try:
        _recurrent.set_l2_bytes(1 << 20)
        assert _recurrent.l2_cache_bytes() == 1 << 20
        assert cb.fuses_input(np.float32, 64, 512, 512)
        assert not cb.fuses_input(np.float32, 64, 1024, 1024)
        _recurrent.set_l2_bytes(2 << 20)
        assert cb.fuses_input(np.float32, 64, 1024, 1024)
        assert not cb.fuses_input(np.float32, 64, 1025, 1024)
    finally:
        _recurrent.set_l2_bytes(0)
    assert _recurrent.l2_cache_bytes() >= 64 << 10


@pytest.mark.parametrize("shape", [(9, 5, 3, 20), (2, 4, 3, 256), (1, 6, 3, 20),
                                   (1, 4, 3, 256)],
                         ids=["chunks", "unit_split", "one_row", "one_row_unit_split"])
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_float32_blas_path_of_cpus_without_avx512(cell_name, shape, monkeypatch):
    """On a CPU without AVX2 float32 LSTMs take the BLAS path (per-step sgemm, or sgemv
    for a single row; batch chunks or the BLAS hidden-unit split): forced here, it equals
    the reference too."""
    from fastlstm.backends import cython_backend as cb
    monkeypatch.setattr(cb, "FUSED_STEP", False)
    B, T, I, H = shape
    assert not cb.fuses_input(np.float32, B, I, H)
    compare(make_cell(cell_name, H, I, dtype=np.float32, seed=3), "cython", B, T, seed=2)


def test_fastlstm_no_avx512_switches_the_avx512_kernels_off():
    """FASTLSTM_NO_AVX512=1 at import: the fused kernels of CPUs without AVX-512 run
    (AVX2; for measuring those CPUs here), and the results still match the reference."""
    import subprocess
    import sys
    code = (
        "import numpy as np, fastlstm as fl\n"
        "from fastlstm import _recurrent\n"
        "assert _recurrent.fused_isa() == 'avx2', _recurrent.fused_isa()\n"
        "cell = fl.BasicLSTMCell(40, 28, random_state=0)\n"
        "x = np.random.default_rng(0).standard_normal((5, 6, 28)).astype(np.float32)\n"
        "got = fl.dynamic_rnn(cell, x, backend='cython')[0]\n"
        "want = fl.dynamic_rnn(cell, x, backend='numpy')[0]\n"
        "np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)\n")
    from fastlstm import _recurrent
    if _recurrent.fused_isa() != "avx512":
        pytest.skip("switches AVX-512 off on a CPU that has it")
    env = dict(os.environ, FASTLSTM_NO_AVX512="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


SMALL_GEMM_CHECK = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from fastlstm import _recurrent
from test_backends import compare
from _helpers import make_cell
assert _recurrent.small_gemm_enabled()
n = 0
for cell_name in ("lstm", "peephole_clip", "rnn"):
    for H in (8, 20, 40):        # products 32 and 160 wide (the kernel), 80 (BLAS)
        for B in (2, 3, 5, 9, 17, 33):       # pairs of rows, an odd last row, > 16 rows
            compare(make_cell(cell_name, H, 3, dtype=np.float32, seed=B), "cython", B, 6,
                    seed=H)
            n += 1
print("small gemm OK", n)
"""


def test_the_small_gemm_of_cpus_without_avx512_matches_the_reference():
    """On CPUs with AVX2 but not AVX-512, the BLAS path's products of 2-16 rows run on
    small_gemm_avx2.h (the basic RNN's; the LSTMs' too where FASTLSTM_NO_FUSED=1;
    FASTLSTM_NO_AVX512=1 turns it on here): outputs, states and every
    gradient match the reference, for row counts that pair up, leave an odd last row,
    or exceed the kernel's 16 (variable lengths: the active rows shrink step by step)."""
    import pathlib
    import subprocess
    import sys
    from fastlstm import _recurrent
    if _recurrent.fused_isa() is None:
        pytest.skip("this CPU has no AVX2 (or FASTLSTM_NO_FUSED=1 hides what it has)")
    tests = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ, FASTLSTM_NO_AVX512="1", FASTLSTM_NO_FUSED="1")
    run = subprocess.run([sys.executable, "-c", SMALL_GEMM_CHECK, str(tests)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "small gemm OK 54" in run.stdout


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("B, H", [(6, 20), (2, 130)])     # batch chunks / unit split
def test_output_gradients_in_any_memory_layout_give_the_same_gradients(backend, B, H):
    """Batch-major output gradients reach the Cython LSTM backward as a transposed view
    (read through their strides); every layout and dtype a caller may hold them in gives
    the bits of the C-contiguous float32 array."""
    cell = make_cell("peephole_clip", H, 3, dtype=np.float32, seed=4)
    x, lengths, state = make_case(cell, B, 7, seed=6)
    _, _, cache = fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend=backend,
                                 return_cache=True)
    d_out = np.random.default_rng(7).standard_normal((B, 7, H)).astype(np.float32)
    layouts = {
        "fortran": np.asfortranarray(d_out),                    # last axis strided
        "view of time-major": np.ascontiguousarray(d_out.transpose(1, 0, 2)).transpose(1, 0, 2),
        "every other of twice as many steps": np.repeat(d_out, 2, axis=1)[:, ::2],
        "float64": d_out.astype(np.float64),
        "list": d_out.tolist(),
    }
    want = flat_grads(fl.dynamic_rnn_backward(cell, cache, d_out))
    for name, held in layouts.items():
        got = flat_grads(fl.dynamic_rnn_backward(cell, cache, held))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}: {key}")
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = np.repeat(d_out, 2, axis=1)[:, ::2]
        bad[0, 3, 1] = np.nan
        fl.dynamic_rnn_backward(cell, cache, bad)


@pytest.mark.parametrize("B, H", [(6, 20), (2, 130), (40, 70)])  # chunks / units / chunks
def test_inputs_in_any_memory_layout_give_the_same_outputs(B, H):
    """The fused inference reads batch-major inputs through their strides (no transposing
    copy); every layout and dtype a caller may hold them in gives the bits of the
    C-contiguous float32 array, and the bits of the training forward."""
    cell = make_cell("peephole_clip", H, 3, dtype=np.float32, seed=8)
    x, lengths, state = make_case(cell, B, 7, seed=9)
    want, want_st = fl.dynamic_rnn(cell, x, lengths, initial_state=state)
    trained, _, _ = fl.dynamic_rnn(cell, x, lengths, initial_state=state, return_cache=True)
    np.testing.assert_array_equal(trained, want)
    layouts = {
        "fortran": np.asfortranarray(x),
        "view of time-major": np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2),
        "every other of twice as many steps": np.repeat(x, 2, axis=1)[:, ::2],
        "float64": x.astype(np.float64),
        "list": x.tolist(),
    }
    for name, held in layouts.items():
        got, got_st = fl.dynamic_rnn(cell, held, lengths, initial_state=state)
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(got_st.c, want_st.c, err_msg=name)
        np.testing.assert_array_equal(got_st.h, want_st.h, err_msg=name)
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = np.repeat(x, 2, axis=1)[:, ::2]
        bad[1, 2, 0] = np.inf
        fl.dynamic_rnn(cell, bad, lengths, initial_state=state)


@pytest.mark.parametrize("shape", [(1, 30, 16, 256), (8, 20, 16, 128), (2, 25, 8, 192)])
def test_barrier_sleeping_waiters_change_nothing(shape, monkeypatch):
    """The per-step barrier of a hidden-unit split sends a waiter to sleep (a futex)
    after spinning; with no spinning at all every wait sleeps, and outputs, states and
    gradients are the bits of the spinning barrier and of one thread."""
    from fastlstm import _recurrent
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the kernels split no units, there is no barrier")
    B, T, I, H = shape
    cell = make_cell("lstm", H, I, dtype=np.float32, seed=3)
    x, lengths, state = make_case(cell, B, T, seed=5)

    def run(n):
        with fl.threads(n):
            out, st, cache = fl.dynamic_rnn(cell, x, lengths, initial_state=state,
                                            backend="cython", return_cache=True)
            grads = fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
        return [out, st.c, st.h, grads["kernel"], grads["recurrent_kernel"], grads["inputs"]]

    spinning, single = run(2), run(1)
    previous = _recurrent.set_barrier_spins(0, 0)
    try:
        sleeping = run(2)
    finally:
        _recurrent.set_barrier_spins(*previous)
    for a, b, c in zip(sleeping, spinning, single):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="spins and yields must be"):
        _recurrent.set_barrier_spins(-1)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
@pytest.mark.parametrize("B", [1, 9])
def test_numba_parallel_kernels_run_on_the_calls_thread_count(cell_name, B, monkeypatch):
    """Every Numba parallel region of a call (the drivers, the weight packing, the layer
    GEMMs) runs on the call's thread count, not on Numba's default: with one thread asked
    for, a region on two would wait, on a machine whose other core is busy, for a thread
    that has no core (a single sequence's packing cost 7 ms a call against 4.5)."""
    from fastlstm.backends import _numba_gemm, _numba_tiles
    from fastlstm.backends import numba_backend as nb
    from fastlstm.backends._numba_jit import on_threads
    counts = []

    def counting(n_threads, fn, *args):
        counts.append(n_threads)
        return on_threads(n_threads, fn, *args)
    for module, name in ((_numba_tiles, "on_threads"), (nb, "on_threads"),
                         (_numba_gemm, "on_threads")):
        monkeypatch.setattr(module, name, counting)
    cell = make_cell(cell_name, 40, 5, dtype=np.float32, seed=1)
    x, lengths, state = make_case(cell, B, 6, seed=2)
    with fl.threads(1):
        out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="numba",
                                       return_cache=True)
        fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    assert counts and set(counts) == {1}
