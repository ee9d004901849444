"""Choose between two schedules of the same computation by timing both on live calls.

Why: whether a small batch's fused LSTM step should split its hidden units over the cores
(each core computes part of every step, then all wait at a barrier) or run on one core
depends on how long a cache line takes to travel between cores, and on the shared
machines this project runs on that moves by 2x and more within a day: a thread
ping-pong measured 360-420 ns a round trip in one session where, in earlier ones, the
split of (1, 100, 32, 64) had been faster than one core (68-72 against 85-88 us); in
that session it was slower (122 against 81 us), as were (2, 100, 32, 64) (164 / 114) and
(4, 100, 64, 64) (275 / 218). No fixed threshold is right on both days.

The two schedules give the same bits (every unit's sums run in the same order either
way; the tests check it), so the choice may follow the clock: the tuner times each
candidate on the caller's own calls, in rounds, and keeps the one of lower median time per
step for the next ``TUNER_REPROBE_AFTER`` calls of that shape, and then probes again, so
it follows the machine when that changes. A round runs each candidate for a pair of
calls, in the caller's order, and takes the lower of the pair's two times: a call pays
for the cache lines the call before it left in the other core, so the first call of a
pair is charged for the other schedule's lines (timing the calls in strict alternation,
the T = 1 inference of (1, T, 32, 64) chose the split, 11.4 against 11.6 us timed, though
back to back the split took 19.6 us a call and one core 17.6), and a pair's lower time
is also spared one call's noise.

Probing is the only cost, paid on a shape's first calls (the slower schedule of
(1, 150, 256, 256) took 1.6 times as long a call): it stops after ``TUNER_PROBES`` rounds,
or as soon as every round of one candidate was ``TUNER_DECISIVE_RATIO`` times faster than
every round of the others, after one round where the gap is that wide. The caller puts
the candidate its rules expect to win last, so that, when they are right and the gap
decisive, every call from the third on runs it.
"""

import os
import statistics
import threading
import weakref

from .. import _thresholds


class SplitTuner:
    """Per shape (any hashable key), the candidate schedule of lowest measured time.

    :meth:`choose` returns ``(candidate, timed)``; when ``timed`` is true the caller
    times its call and reports the time with :meth:`record`. ``decisive_ratio``: the gap
    that ends probing early (``float("inf")``: never). Thread-safe; timings of calls that
    overlap in several Python threads are only noisier.
    """

    def __init__(self, probes=None, reprobe_after=None, decisive_ratio=None):
        probes = _thresholds.TUNER_PROBES if probes is None else probes
        reprobe_after = (_thresholds.TUNER_REPROBE_AFTER if reprobe_after is None
                         else reprobe_after)
        decisive_ratio = (_thresholds.TUNER_DECISIVE_RATIO if decisive_ratio is None
                          else decisive_ratio)
        if probes < 1 or reprobe_after < 0:
            raise ValueError("probes must be >= 1 and reprobe_after >= 0")
        if not decisive_ratio >= 1:
            raise ValueError(f"decisive_ratio must be >= 1, got {decisive_ratio!r}")
        self.probes = probes
        self.reprobe_after = reprobe_after
        self.decisive_ratio = decisive_ratio
        self._lock = threading.Lock()
        self._shapes = {}           # key -> _Shape
        _TUNERS.add(self)

    def choose(self, key, candidates):
        """The candidate to run for ``key`` (``candidates``: a tuple, in the same order on
        every call), and whether this call is to be timed and given to :meth:`record`."""
        shape = self._shapes.get(key)
        if shape is not None and shape.calls_left > 0:
            # the common case, without the lock (0.2 of a B=1 call's ~0.5 us here): a
            # decrement lost to another thread's only delays the next probe by a call
            shape.calls_left -= 1
            return shape.choice, False
        with self._lock:
            shape = self._shapes.get(key)
            if shape is None:
                shape = self._shapes[key] = _Shape(candidates)
            if shape.calls_left > 0:
                shape.calls_left -= 1
                return shape.choice, False
            # probing: pairs of calls per candidate in turn, both timed
            i = shape.probe_calls
            shape.probe_calls += 1
            return candidates[(i // 2) % len(candidates)], True

    def record(self, key, candidate, seconds_per_step):
        """Report the time per step of a probe call of ``candidate`` for ``key``."""
        with self._lock:
            shape = self._shapes.get(key)
            if shape is None:                  # reset() since the call was chosen
                return
            if candidate not in shape.first_of_pair:
                shape.first_of_pair[candidate] = seconds_per_step
                return
            times = shape.times[candidate]
            times.append(min(shape.first_of_pair.pop(candidate), seconds_per_step))
            rounds = min(len(t) for t in shape.times.values())
            if rounds == 0 or any(len(t) > rounds for t in shape.times.values()):
                return                          # the round is not complete
            best = min(shape.times, key=lambda c: statistics.median(shape.times[c]))
            decisive = all(max(shape.times[best]) * self.decisive_ratio <= min(t)
                           for c, t in shape.times.items() if c != best)
            if rounds >= self.probes or decisive:
                shape.choice = best
                shape.calls_left = self.reprobe_after
                shape.times = {c: [] for c in shape.times}
                shape.first_of_pair.clear()
                shape.probe_calls = 0

    def choices(self):
        """``{key: candidate}`` of the shapes decided so far (for inspection and tests)."""
        with self._lock:
            return {k: s.choice for k, s in self._shapes.items() if s.choice is not None}

    def reset(self):
        """Forget every timing and choice."""
        with self._lock:
            self._shapes.clear()


#: Every tuner, so that a forked child gets fresh locks (one held by another thread at
#: the fork would never be released there).
_TUNERS = weakref.WeakSet()


def _after_fork_in_child():
    for tuner in list(_TUNERS):
        tuner._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Shape:
    __slots__ = ("times", "first_of_pair", "choice", "calls_left", "probe_calls")

    def __init__(self, candidates):
        self.times = {c: [] for c in candidates}    # per candidate, its pairs' lower time
        self.first_of_pair = {}                      # candidate -> its pair's first time
        self.choice = None
        self.calls_left = 0                          # calls before the next probing round
        self.probe_calls = 0                         # calls of this probing round so far
