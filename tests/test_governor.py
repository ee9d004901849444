"""The adaptive default thread count (fastlstm._governor): the load sampler on made-up
CPU counters, the chooser's decisions on made-up run times, and how the estimators and
``fastlstm.threads`` use them. No timing of real work is asserted."""

import numpy as np
import pytest

import fastlstm as fl
from fastlstm import _governor, _thresholds, _threads

_free_cores = _governor.free_cores       # conftest.py holds it to the cores in other tests


def _write_stat(path, per_cpu_busy, idle=1000):
    """A /proc/stat with each CPU's busy ticks as user time."""
    total = sum(per_cpu_busy)
    lines = [f"cpu  {total} 0 0 {idle * len(per_cpu_busy)} 0 0 0 0 0 0"]
    lines += [f"cpu{k} {b} 0 0 {idle} 0 0 0 0 0 0" for k, b in enumerate(per_cpu_busy)]
    lines += ["intr 12345", "ctxt 678"]
    path.write_text("\n".join(lines) + "\n")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_load_sampler_counts_other_processes_cores(tmp_path):
    stat = tmp_path / "stat"
    wall, own = _Clock(), _Clock()
    sampler = _governor.LoadSampler({0, 1}, stat_path=str(stat), clock=wall,
                                    own_cpu_time=own)
    sampler.tick = 0.01
    _write_stat(stat, [0, 0, 0])
    assert sampler.taken_cores() == 0                      # no window yet
    # one second: CPUs 0 and 1 busy 1.5 s together, of which this process 0.5 s;
    # CPU 2 (not ours) fully busy, ignored
    _write_stat(stat, [100, 50, 100])
    wall.now, own.now = 1.0, 0.5
    assert sampler.taken_cores() == 1
    assert sampler.others == pytest.approx(1.0)
    # within the window the last estimate stands, the file is not read
    stat.write_text("garbage")
    wall.now = 1.0 + _thresholds.LOAD_WINDOW / 2
    assert sampler.taken_cores() == 1
    # a quiet window: only this process ran
    _write_stat(stat, [200, 50, 200])
    wall.now, own.now = 2.0, 1.5
    assert sampler.taken_cores() == 0
    # a little load (under BUSY_CORE of a core) does not take a core; more does
    _write_stat(stat, [210, 60, 200])
    wall.now, own.now = 3.0, 1.5
    assert sampler.taken_cores() == 0 and sampler.others == pytest.approx(0.2)
    _write_stat(stat, [250, 60, 200])
    wall.now = 4.0
    assert sampler.taken_cores() == 1 and sampler.others == pytest.approx(0.4)


def test_load_sampler_unreadable_counters_take_no_core(tmp_path):
    sampler = _governor.LoadSampler({0}, stat_path=str(tmp_path / "missing"))
    assert sampler.taken_cores() == 0


def test_free_cores_keeps_one(monkeypatch):
    class Taken:
        def __init__(self, n):
            self.n = n

        def taken_cores(self):
            return self.n

    monkeypatch.setattr(_governor, "_sampler", Taken(1))
    assert _free_cores(4) == 3
    monkeypatch.setattr(_governor, "_sampler", Taken(5))
    assert _free_cores(4) == 1
    assert _free_cores(1) == 1


def _run(chooser, cost, runs, clock, gap=0.0005):
    """``runs`` runs on what ``chooser`` picks out of 2 threads; ``cost(threads, k)`` is
    the k-th run's seconds. Returns the thread counts used."""
    used = []
    for k in range(runs):
        n = chooser.choose(2)
        start = clock.now
        clock.now += cost(n, k)
        chooser.record(n, start, clock.now)
        clock.now += gap
        used.append(n)
    return used


def test_chooser_keeps_threads_that_are_faster():
    clock, chooser = _Clock(), _governor.ThreadChooser()
    used = _run(chooser, lambda n, k: 0.005 if n > 1 else 0.010, 200, clock)
    assert chooser.use_threads is True
    assert used[-50:] == [2] * 50
    assert 1 in used                           # one thread was measured


def test_chooser_takes_one_thread_when_threads_lose_by_rare_long_runs():
    """Medians would keep the threads (most runs 0.7 ms against 0.9); their mean is
    worse, as the fit's total time."""
    clock, chooser = _Clock(), _governor.ThreadChooser()

    def cost(n, k):
        if n > 1:
            return 0.005 if k % 5 == 4 else 0.0007
        return 0.0009
    used = _run(chooser, cost, 300, clock)
    assert chooser.use_threads is False
    assert used[-20:] == [1] * 20


def test_chooser_times_one_thread_only_after_the_workers_settle():
    clock, chooser = _Clock(), _governor.ThreadChooser()
    used = []
    while chooser.use_threads is None:      # back-to-back runs: threads 9 ms, one 1 ms
        used += _run(chooser, lambda n, k: 0.009 if n > 1 else 0.001, 1, clock, gap=0.0)
    assert chooser.use_threads is False
    # the one-thread runs of the first THREAD_SETTLE seconds were run but not counted
    skipped = used.count(1) - chooser.single.runs
    assert abs(skipped * 0.001 - _thresholds.THREAD_SETTLE) <= 0.0011
    assert chooser.single.enough()


def test_chooser_looks_again_when_the_choice_slows_down_and_backs_off_when_confirmed():
    clock, chooser = _Clock(), _governor.ThreadChooser()
    load = {"on": False}

    def cost(n, k):
        if n > 1:
            return 0.020 if load["on"] else 0.004
        return 0.008
    _run(chooser, cost, 100, clock)
    assert chooser.use_threads is True
    first = chooser.look_after
    # another process takes a core: the threads slow down 5x, the next look is at once
    load["on"] = True
    used = _run(chooser, cost, 40, clock)
    assert chooser.use_threads is False
    assert used.count(2) < 15                  # well before look_after runs
    # confirmed looks stand longer and longer (up to LAST_LOOK_AFTER)
    _run(chooser, cost, 3 * first, clock)
    assert chooser.look_after > _thresholds.FIRST_LOOK_AFTER
    _run(chooser, cost, 40 * _thresholds.LAST_LOOK_AFTER // 10, clock)
    assert chooser.look_after <= _thresholds.LAST_LOOK_AFTER


def test_chooser_drops_the_first_run():
    chooser = _governor.ThreadChooser()
    chooser.record(2, 0.0, 10.0)                         # compilation, allocations
    assert chooser.threaded.runs == 0 and chooser.warm


def test_choosers_are_kept_per_key_and_bounded():
    _governor._choosers.clear()
    a = _governor.chooser(("fit", 1))
    assert _governor.chooser(("fit", 1)) is a
    for k in range(_governor.MAX_CHOOSERS + 5):
        _governor.chooser(("other", k))
    assert len(_governor._choosers) == _governor.MAX_CHOOSERS
    assert ("fit", 1) not in _governor._choosers


class _Recording(_governor.ThreadChooser):
    def __init__(self, pick):
        super().__init__()
        self.pick, self.asked, self.recorded = pick, [], []

    def choose(self, n):
        self.asked.append(n)
        return self.pick if n > 1 else 1

    def record(self, threads, start, end):
        self.recorded.append(threads)


def test_chosen_threads_sets_the_kernels_threads_only_by_default(monkeypatch):
    rec = _Recording(pick=1)
    monkeypatch.setattr(_governor, "chooser", lambda key: rec)
    monkeypatch.setattr(_governor, "free_cores", lambda cores: 2)
    monkeypatch.setattr(_threads, "_default_threads", lambda: 2)
    with _threads.chosen_threads("work"):
        assert _threads.kernel_threads() == 1
    assert rec.asked == [2] and rec.recorded == [1]
    assert _threads.kernel_threads() == 2
    with fl.threads(2):                                  # an explicit count stands
        with _threads.chosen_threads("work"):
            assert _threads.kernel_threads() == 2
    assert rec.asked == [2]
    with pytest.raises(RuntimeError):                    # a failed run is not timed
        with _threads.chosen_threads("work"):
            raise RuntimeError
    assert rec.recorded == [1] and _threads.kernel_threads() == 2


def test_kernel_threads_leave_the_cores_others_hold(monkeypatch):
    monkeypatch.setattr(_threads, "_default_threads", lambda: 4)
    monkeypatch.setattr(_governor, "free_cores", lambda cores: cores - 3)
    assert _threads.kernel_threads() == 1
    assert fl.get_num_threads() == 4                     # the limit, not the load
    with fl.threads(None):
        assert _threads.kernel_threads() == 1
    with fl.threads(3):
        assert _threads.kernel_threads() == 3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_follows_an_enclosing_threads_block(monkeypatch):
    """n_jobs=None takes what the caller set; the default chooser runs otherwise. The
    threads chosen never change the model (the schedules follow the cores)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    rec = _Recording(pick=1)
    monkeypatch.setattr(_governor, "chooser", lambda key: rec)
    monkeypatch.setattr(_governor, "free_cores", lambda cores: 2)
    monkeypatch.setattr(_threads, "_default_threads", lambda: 2)
    kwargs = dict(hidden_size=8, max_iter=3, tol=0.0, batch_size=16, random_state=0)
    with fl.threads(1):
        enclosed = fl.LSTMClassifier(**kwargs).fit(X, y)
    assert rec.asked == []
    chosen = fl.LSTMClassifier(**kwargs).fit(X, y)
    assert len(rec.asked) == 3 * 4 and set(rec.recorded) == {1}
    chosen.predict_proba(X)
    assert len(rec.asked) == 3 * 4 + 1
    threaded = fl.LSTMClassifier(n_jobs=2, **kwargs).fit(X, y)
    for name, p in enclosed.network_.params.items():
        np.testing.assert_array_equal(p, chosen.network_.params[name])
        np.testing.assert_array_equal(p, threaded.network_.params[name])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_predictions_keep_a_thread_choice_per_size_class(monkeypatch):
    """One thread can win on a few sequences and lose on many: predictions of 1, 3 and 64
    sequences (and a second call of 3) ask the choosers of three size classes."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6, 3)).astype(np.float32)
    clf = fl.LSTMClassifier(hidden_size=8, max_iter=1, random_state=0).fit(X, X[:, 0, 0] > 0)
    keys = []

    def chooser(key):
        keys.append(key)
        return _Recording(pick=1)

    monkeypatch.setattr(_governor, "chooser", chooser)
    for n in (1, 3, 3, 64):
        clf.predict_proba(X[:n])
    assert len(keys) == 4 and keys[1] == keys[2]
    assert len(set(keys)) == 3 and len({k[:-1] for k in keys}) == 1


def test_the_real_counters_are_read_on_linux():
    """This machine's own /proc/stat parses (a count of cores, none on a quiet one is
    not asserted: the machine is shared)."""
    import os
    import time
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat: the default thread count does not follow the load here")
    sampler = _governor.LoadSampler(os.sched_getaffinity(0))
    assert sampler.taken_cores() == 0                    # first look: no window yet
    assert sampler._busy_seconds() > 0
    time.sleep(_thresholds.LOAD_WINDOW * 1.2)
    taken = sampler.taken_cores()
    assert 0 <= taken <= len(os.sched_getaffinity(0)) and sampler.others >= 0.0


def test_making_a_cell_leaves_no_blas_threads_spinning(monkeypatch):
    """The orthogonal init's QR runs on one BLAS thread: a threaded one left OpenBLAS's
    worker spinning for ~0.1 s beside the kernels' threads (the next kernel calls took
    5.6 ms instead of 1.6 in turns)."""
    from threadpoolctl import threadpool_info
    seen = []
    qr = np.linalg.qr

    def recording_qr(a):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return qr(a)
    monkeypatch.setattr(np.linalg, "qr", recording_qr)
    fl.BasicLSTMCell(16, 4, random_state=0)
    assert seen and all(s == {1} for s in seen)


def test_late_thread_backoff_doubles_while_calls_are_late_and_resets():
    clock = _Clock()
    backoff = _governor.LateThreadBackoff(clock=clock)
    shortest = _thresholds.SPLIT_BACKOFF_MIN
    assert backoff.look(0, 2) == 2                 # the first look: nothing to compare
    assert backoff.look(0, 2) == 2 and not backoff.active()
    assert backoff.look(3, 2) == 1                 # the last call had a late thread
    assert backoff.active()
    clock.now += shortest
    assert not backoff.active() and backoff.look(3, 2) == 2
    assert backoff.look(4, 2) == 1                 # late again: twice as long
    clock.now += 1.5 * shortest
    assert backoff.look(4, 2) == 1
    clock.now += shortest
    assert backoff.look(4, 2) == 2                 # a call on one thread resets nothing
    assert backoff.look(4, 2) == 2                 # ... one on two threads on time does
    assert backoff.look(5, 2) == 1
    clock.now += 1.5 * shortest
    assert not backoff.active()
    for k in range(40):
        backoff.look(6 + k, 2)
    assert backoff.length == _thresholds.SPLIT_BACKOFF_MAX
    assert backoff.active() and backoff.look(46, 4, given=True) == 4   # a count given is kept


def test_kernel_threads_are_one_while_late_threads_back_off(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_governor, "late_threads", _governor.LateThreadBackoff(clock=clock))
    monkeypatch.setattr(_threads, "_default_threads", lambda: 2)
    late = [0]
    monkeypatch.setattr(_threads, "_late_count", lambda: late[0])
    assert _threads.kernel_threads() == 2
    late[0] += 1                                   # that call had a late thread
    assert _threads.kernel_threads() == 1
    with fl.threads(2):
        assert _threads.kernel_threads() == 2
    clock.now += _thresholds.SPLIT_BACKOFF_MAX
    assert _threads.kernel_threads() == 2
