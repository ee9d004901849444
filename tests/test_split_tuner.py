"""The split tuner: which of two schedules a small batch's fused forward runs, chosen by
timing both on live calls (fastlstm/backends/_split_tuner.py); the choice never changes
the bits."""

import os

import numpy as np
import pytest

import fastlstm as fl
from fastlstm import _thresholds
from fastlstm.backends._split_tuner import SplitTuner
from _helpers import make_case, make_cell


def probe_round(tuner, key, candidates, times):
    """Run calls until the tuner has chosen for ``key``; ``times[c]``: the time each timed
    call of c reports. Returns the calls as (candidate, timed)."""
    calls = []
    while True:
        c, timed = tuner.choose(key, candidates)
        calls.append((c, timed))
        if timed:
            tuner.record(key, c, times[c])
            if key in tuner.choices() and tuner._shapes[key].probe_calls == 0:
                return calls


def test_it_runs_the_candidates_in_pairs_and_keeps_the_faster():
    """Each candidate runs twice in a row, in the caller's order, both calls timed."""
    tuner = SplitTuner(probes=3, reprobe_after=4, decisive_ratio=float("inf"))
    calls = probe_round(tuner, "k", (2, 0), {2: 5e-6, 0: 3e-6})
    assert calls == [(2, True), (2, True), (0, True), (0, True)] * 3
    assert tuner.choices() == {"k": 0}
    assert [tuner.choose("k", (2, 0)) for _ in range(4)] == [(0, False)] * 4
    assert tuner.choose("k", (2, 0)) == (2, True)     # 4 calls used it: probe again


def test_a_pair_counts_its_lower_time():
    """A call pays for the lines the call before left in the other core: the first call
    of a pair after the other candidate's is slow, and the pair's lower time counts."""
    tuner = SplitTuner(probes=2, reprobe_after=10, decisive_ratio=float("inf"))
    # 2's pairs: 9, 1 and 8, 1; 0's pairs: 3, 2 and 3, 2 (by first calls 2 would lose)
    times = iter([9.0, 1.0, 3.0, 2.0, 8.0, 1.0, 3.0, 2.0])
    while "k" not in tuner.choices():
        c, timed = tuner.choose("k", (2, 0))
        assert timed
        tuner.record("k", c, next(times))
    assert tuner.choices() == {"k": 2}


def test_a_decisive_gap_ends_probing_after_one_round():
    """A candidate faster by TUNER_DECISIVE_RATIO in every round is chosen at once: with
    the expected winner last, every call from the third on runs it."""
    tuner = SplitTuner(probes=5, reprobe_after=10, decisive_ratio=1.3)
    calls = probe_round(tuner, "k", (0, 2), {2: 1.0, 0: 1.3})
    assert calls == [(0, True), (0, True), (2, True), (2, True)]
    assert tuner.choices() == {"k": 2}
    assert tuner.choose("k", (0, 2)) == (2, False)
    # a narrower gap runs every round
    calls = probe_round(SplitTuner(probes=5, reprobe_after=10, decisive_ratio=1.3), "k",
                        (0, 2), {2: 1.0, 0: 1.29})
    assert len(calls) == 4 * 5


def test_it_probes_again_after_reprobe_after_calls_and_follows_a_change():
    tuner = SplitTuner(probes=2, reprobe_after=3)
    probe_round(tuner, "k", (2, 0), {2: 1.0, 0: 1.1})
    assert tuner.choices() == {"k": 2}
    for _ in range(3):
        assert tuner.choose("k", (2, 0)) == (2, False)
    # the machine changed: the next round measures the other one faster
    calls = probe_round(tuner, "k", (2, 0), {2: 1.2, 0: 1.1})
    assert [c for c, timed in calls if timed] == [2, 2, 0, 0, 2, 2, 0, 0]
    assert tuner.choices() == {"k": 0}


def test_it_chooses_by_the_median_so_one_slow_round_does_not_decide():
    tuner = SplitTuner(probes=3, reprobe_after=10, decisive_ratio=float("inf"))
    # pairs (both calls alike) of 2: 9, 1, 1; of 0: 2, 2, 2
    times = iter(t for t in [9.0, 2.0, 1.0, 2.0, 1.0, 2.0] for _ in range(2))
    while "k" not in tuner.choices():
        c, timed = tuner.choose("k", (2, 0))
        if timed:
            tuner.record("k", c, next(times))
    assert tuner.choices() == {"k": 2}


def test_shapes_are_tuned_apart_and_reset_forgets():
    tuner = SplitTuner(probes=1, reprobe_after=10)
    probe_round(tuner, "a", (2, 0), {2: 1.0, 0: 2.0})
    probe_round(tuner, "b", (2, 0), {2: 2.0, 0: 1.0})
    assert tuner.choices() == {"a": 2, "b": 0}
    tuner.reset()
    assert tuner.choices() == {}
    tuner.record("a", 2, 1.0)          # a call chosen before the reset: ignored
    assert tuner.choose("a", (2, 0)) == (2, True)     # a new round begins


@pytest.mark.parametrize("probes, reprobe_after", [(0, 5), (1, -1)])
def test_bad_settings_are_refused(probes, reprobe_after):
    with pytest.raises(ValueError, match="probes"):
        SplitTuner(probes, reprobe_after)
    with pytest.raises(ValueError, match="decisive_ratio"):
        SplitTuner(decisive_ratio=0.9)


@pytest.fixture
def two_cores():
    """This thread limited to two CPUs where it may use more: the shapes below are the
    tuned ones on two cores (their hidden units split into one slice per core; on a
    16-core host, 3 groups of 16 units could not, and every call took the fixed rules).
    fastlstm counts the cores it may use by this affinity (fastlstm._threads)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    if len(before) > 2:
        os.sched_setaffinity(0, sorted(before)[:2])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# (B, T, I, H): fused input projection, inference and training forward (I <= H / 2), and
# the GEMM-first forward (I > H / 2 at B < 8); one chunk on two cores, 3 groups of 16;
# H = 130 also splits the backward (slices of 128 and 2 units: whole 64-unit blocks);
# B = 9: two chunks of 5 rows (forward only)
@pytest.mark.parametrize("shape", [(1, 9, 5, 40), (1, 9, 40, 40), (3, 9, 5, 40),
                                   (2, 7, 5, 130), (9, 7, 5, 40)])
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_the_tuned_steps_give_the_same_bits_whichever_schedule_runs(
        cell_name, shape, monkeypatch, two_cores):
    """A tuner that probes every other call runs both schedules (split over the cores and
    one core) on the same inputs: outputs, states and gradients are equal bit for bit in
    every call, and equal to the fixed rules'."""
    from fastlstm.backends import cython_backend as cb
    if not cb.FUSED_STEP:
        pytest.skip("this CPU has no AVX-512: the tuner only schedules the fused step")
    tuner = SplitTuner(probes=2, reprobe_after=1)
    ran = []
    record = tuner.record
    monkeypatch.setattr(tuner, "record", lambda k, c, t: (ran.append((k[0][0], c)),
                                                           record(k, c, t)))
    monkeypatch.setattr(cb, "_split_tuner", tuner)
    B, T, I, H = shape
    cell = make_cell(cell_name, H, I, dtype=np.float32, seed=2)
    x, lengths, state = make_case(cell, B, T, seed=4)

    def run():
        out, st = fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend="cython")
        t_out, t_st, cache = fl.dynamic_rnn(cell, x, lengths, initial_state=state,
                                            backend="cython", return_cache=True)
        grads = fl.dynamic_rnn_backward(cell, cache, np.ones_like(t_out))
        return [out, st.c, st.h, t_out, t_st.c, grads["kernel"], grads["recurrent_kernel"],
                grads["inputs"]]

    monkeypatch.setattr(_thresholds, "TUNE_UNIT_SPLIT", False)
    fixed = run()
    monkeypatch.setattr(_thresholds, "TUNE_UNIT_SPLIT", True)
    for _ in range(8):
        for got, want in zip(run(), fixed):
            np.testing.assert_array_equal(got, want)
    cores = cb.default_num_threads()
    if cores >= 2:
        kinds = {"forward_input", "infer_input"} if cb.fuses_input(np.float32, B, I, H) \
            else {"forward"}
        if -(-H // cores) <= H - 64 and cb.n_chunks(B, True) == 1:   # 2+ slices
            kinds.add("backward")
        schedules = {k: {c for kk, c in ran if kk == k} for k in kinds}
        assert {k for k, _ in ran} == kinds
        for kind, ran_here in schedules.items():
            # the split (slices for the forward, a slice width for the backward) and 0
            assert len(ran_here) == 2 and 0 in ran_here, (kind, ran_here)
    else:
        assert ran == []                 # one core: nothing to choose


def test_one_thread_and_batch_chunks_are_not_tuned(monkeypatch, two_cores):
    """With one kernel thread (fastlstm.threads(1)), or chunks of more than
    MAX_CHUNK_ROWS_FOR_UNIT_SPLIT rows, the fixed rules schedule the step: the tuner is
    not asked."""
    from fastlstm.backends import cython_backend as cb
    if not cb.FUSED_STEP:
        pytest.skip("this CPU has no AVX-512: the tuner only schedules the fused step")
    tuner = SplitTuner()
    monkeypatch.setattr(cb, "_split_tuner", tuner)
    cell = make_cell("lstm", 40, 5, dtype=np.float32)
    x, lengths, state = make_case(cell, 1, 6)
    with fl.threads(1):
        fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend="cython")
    assert cb.chunk_rows(40, True) > _thresholds.MAX_CHUNK_ROWS_FOR_UNIT_SPLIT
    big = make_case(cell, 40, 6)
    fl.dynamic_rnn(cell, big[0], big[1], initial_state=big[2], backend="cython")
    assert tuner._shapes == {}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_gets_a_free_lock():
    """A lock another thread holds at a fork stays held in the child for ever; the tuner
    gives the child a fresh one."""
    import os
    import signal
    tuner = SplitTuner()
    tuner._lock.acquire()                  # as if another thread were inside choose()
    try:
        pid = os.fork()
        if pid == 0:                       # the child: must not hang
            try:
                signal.alarm(10)           # a hang ends in SIGALRM: the test fails
                tuner.choose("k", (2, 0))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        tuner._lock.release()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


class _AlwaysSplit:
    """A split tuner that always answers the split (the nonzero candidate), untimed."""

    def choose(self, key, candidates):
        return max(candidates), False


@pytest.mark.parametrize("shape", [(1, 12, 5, 64), (1, 9, 40, 48), (3, 8, 5, 96)])
@pytest.mark.parametrize("cell_name", ["lstm", "peephole_clip"])
def test_a_late_threads_slices_are_taken_over_with_the_same_bits(cell_name, shape,
                                                                 monkeypatch, two_cores):
    """A thread of the fused forward's unit split that starts late (as if its core were
    taken) has its slices computed by the other thread: the outputs, states and gradients
    are one thread's bits, and ``steal_count`` counts the slices taken over, as does the
    ``late_count`` that the next kernel call shows the late-thread backoff (which then
    holds the default count to one thread for a while: tests/test_governor.py)."""
    from fastlstm import _governor, _recurrent
    from fastlstm.backends import cython_backend as cb
    if not cb.FUSED_STEP:
        pytest.skip("this CPU has no AVX-512 or AVX2: no fused step to split")
    if cb.default_num_threads() < 2:
        pytest.skip("one core: the kernels split no units")
    B, T, I, H = shape
    cell = make_cell(cell_name, H, I, dtype=np.float32, seed=7)
    x, lengths, state = make_case(cell, B, T, seed=8)

    def run(n):
        with fl.threads(n):
            out, st = fl.dynamic_rnn(cell, x, lengths, initial_state=state, backend="cython")
            t_out, t_st, cache = fl.dynamic_rnn(cell, x, lengths, initial_state=state,
                                                backend="cython", return_cache=True)
            grads = fl.dynamic_rnn_backward(cell, cache, np.ones_like(t_out))
        return [out, st.c, st.h, t_out, t_st.c, *grads.values()]

    want = run(1)
    monkeypatch.setattr(cb, "_split_tuner", _AlwaysSplit())
    steals = _recurrent.steal_count()
    previous = _recurrent.set_late_thread(1, 20000)           # 20 ms late
    try:
        got = run(2)
    finally:
        _recurrent.set_late_thread(*previous)
    # inference and the training forward, each: thread 1's slice of (nearly) every step
    assert _recurrent.steal_count() - steals >= T
    counts = _governor.late_threads.counts        # shown at each kernel call's start
    assert counts[-1] > counts[0]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # a thread that takes over whatever is not taken yet at once: the same bits
    previous = _recurrent.set_steal_spins(0)
    try:
        eager = run(2)
    finally:
        _recurrent.set_steal_spins(previous)
    for a, b in zip(eager, want):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="must be >= 0"):
        _recurrent.set_steal_spins(-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        _recurrent.set_late_thread(1, -5)
