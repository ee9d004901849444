"""The default thread count, adapted by measurement to a machine that others share.

Two measurements, used only when no thread count was asked for (``fastlstm.threads``,
``n_jobs``): an explicit count is always taken as given. Neither changes a result: the
kernels' schedules follow the cores, never the threads that run them.

* :class:`LoadSampler` -- the cores other processes keep busy, from the kernel's CPU
  counters (``/proc/stat``) less this process's own CPU time, over windows of
  ``LOAD_WINDOW`` seconds. The kernels then use the cores left free (at least one): a thread
  whose core another process holds makes the others wait for it at every step's
  barrier (seed-size training on two threads with one busy process: 14.9 ms, against
  12.2 on one thread).
* :class:`LateThreadBackoff` -- a parallel region whose thread had lost its core, most
  often to a thread of this same process, which the CPU counters cannot tell from the
  kernels' own (OpenBLAS's workers spin for about 0.1 s after any multithreaded NumPy
  product). The kernels count it (``_recurrent.late_count``: slices of a unit split that
  another thread took over, batch chunks during which their thread was descheduled for
  long), and when the count rose since the last kernel call the default count is one
  thread for ``SPLIT_BACKOFF_MIN`` seconds, twice as long after each such call in a row,
  up to ``SPLIT_BACKOFF_MAX``: every region until then would wait for that thread (on
  2 cores after a 512 x 512 product, (1, 150, 256, 256) inference took 15-26 ms a call,
  the input GEMM and the weight packing most of it, against 1.6-2.2).
* :class:`ThreadChooser` -- for work repeated many times (the batches of a fit), times
  the work on the free cores and on one thread and keeps the faster, looking again now
  and then and at once when the chosen count slows down. Small work loses with threads
  even on a quiet machine: between the kernel calls, OpenMP's idle workers spin (about
  9 ms) beside the main thread's own work (digits, 5 epochs: 104 ms on two threads
  against 72 on one).
"""

import collections
import contextlib
import os
import threading
import time

from . import _thresholds

MAX_CHOOSERS = 64       # kinds of work remembered


class LoadSampler:
    """Cores of this process's CPU set that other processes keep busy.

    Parameters
    ----------
    cpus : set of int
        The CPUs this process may run on.
    stat_path : str
        The kernel's CPU counters (Linux ``/proc/stat``).
    clock, own_cpu_time : callable
        Wall clock and this process's CPU time (all its threads), in seconds;
        replaceable in tests.
    """

    def __init__(self, cpus, stat_path="/proc/stat", clock=time.monotonic,
                 own_cpu_time=time.process_time):
        self.cpus = frozenset(cpus)
        self.stat_path = stat_path
        self.clock = clock
        self.own_cpu_time = own_cpu_time
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self._lock = threading.Lock()
        self._last = None           # (wall, busy seconds of the CPUs, own CPU seconds)
        self.others = 0.0           # cores busy with other processes, last window

    def _busy_seconds(self):
        """CPU seconds the CPUs of ``cpus`` spent not idle since boot (stolen by the
        hypervisor included: a vCPU whose host core others run on is taken too)."""
        busy = 0
        with open(self.stat_path) as fh:
            for line in fh:
                name, _, values = line.partition(" ")
                if not name.startswith("cpu"):
                    break                        # the per-CPU lines come first
                if name == "cpu" or int(name[3:]) not in self.cpus:
                    continue
                ticks = [int(v) for v in values.split()[:8]]
                busy += sum(ticks) - ticks[3] - ticks[4]          # less idle and iowait
        return busy * self.tick

    def taken_cores(self):
        """Cores that other processes kept busy over the last window (0 until the first
        window has passed, or where the counters cannot be read)."""
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last[0] < _thresholds.LOAD_WINDOW:
                return self._taken()
            try:
                sample = (now, self._busy_seconds(), self.own_cpu_time())
            except (OSError, ValueError, IndexError):
                self.others = 0.0
                return 0
            if self._last is not None:
                wall = sample[0] - self._last[0]
                busy = sample[1] - self._last[1]
                own = sample[2] - self._last[2]
                self.others = max(0.0, (busy - own) / wall)
            self._last = sample
            return self._taken()

    def _taken(self):
        return int(self.others + (1.0 - _thresholds.BUSY_CORE))


_sampler = None
_sampler_lock = threading.Lock()


def _load_sampler():
    global _sampler
    with _sampler_lock:
        if _sampler is None:
            try:
                cpus = os.sched_getaffinity(0)
            except AttributeError:              # not Linux: no counters to read
                cpus = ()
            _sampler = LoadSampler(cpus) if os.path.exists("/proc/stat") and cpus else False
    return _sampler


def _after_fork_in_child():
    # a lock another thread held at the fork stays held in the child: start afresh
    global _sampler_lock, _choosers_lock
    _sampler_lock, _choosers_lock = threading.Lock(), threading.Lock()
    late_threads._lock = threading.Lock()
    _choosers.clear()


class LateThreadBackoff:
    """When the default thread count may be more than one again, from the kernels' count
    of late threads (see the module's docstring). ``clock``: replaceable in tests."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.until = -float("inf")
        self.length = _thresholds.SPLIT_BACKOFF_MIN
        self.seen = None                # the late count at the last look
        self.threads = 1                # the threads of the last call looked at
        self._lock = threading.Lock()

    def active(self):
        """True while the kernels are to run on one thread."""
        return self.clock() < self.until

    def look(self, late_count, threads, given=False):
        """The threads for a kernel call that would run on ``threads``: one while backing
        off, unless the count was ``given`` by the caller. ``late_count``: the kernels'
        count of late threads now; a rise since the last look (a call since then had a
        late thread) backs off, a look after a call on several threads without one resets
        the length."""
        with self._lock:
            if self.seen is not None and late_count != self.seen:
                self.until = self.clock() + self.length
                self.length = min(2 * self.length, _thresholds.SPLIT_BACKOFF_MAX)
            elif self.threads > 1:
                self.length = _thresholds.SPLIT_BACKOFF_MIN
            if not given and self.clock() < self.until:
                threads = 1
            self.seen, self.threads = late_count, threads
            return threads


#: The process's one backoff (the kernels' threads are shared by every caller).
late_threads = LateThreadBackoff()


def free_cores(cores):
    """``cores`` less those other processes keep busy, at least 1."""
    sampler = _load_sampler()
    if not sampler or cores <= 1:
        return cores
    return max(1, cores - sampler.taken_cores())


class _Tally:
    """Runs counted and seconds summed: means, not medians, because threads lose by
    their rare long runs (digits: most batches 0.7 ms on two threads against 0.9 on one,
    one in five 2.5-5 ms; the fit took 118 ms against 69)."""

    __slots__ = ("runs", "seconds")

    def __init__(self):
        self.runs, self.seconds = 0, 0.0

    def add(self, seconds):
        self.runs += 1
        self.seconds += seconds

    def enough(self):
        return (self.runs >= _thresholds.THREAD_PROBE_RUNS
                and self.seconds >= _thresholds.THREAD_PROBE_TIME)

    def mean(self):
        return self.seconds / self.runs


class ThreadChooser:
    """Picks, for one kind of repeated work, between ``n`` threads and one, by timing it.

    Call :meth:`choose` before each run with the threads available now and
    :meth:`record` after it with its start and end times. Each candidate is timed in
    turn, threads first, for ``THREAD_PROBE_RUNS`` runs and ``THREAD_PROBE_TIME`` seconds
    (one-thread runs count only ``THREAD_SETTLE`` seconds after the last threaded one, once
    OpenMP's idle
    workers have stopped spinning); threads are kept when their mean time is at most
    ``PREFER_THREADS`` of one thread's. The choice stands for ``FIRST_LOOK_AFTER`` runs,
    twice as long each time a look confirms it (up to ``LAST_LOOK_AFTER``), and is
    looked at again at once when the chosen count's runs take ``THREAD_SLOWDOWN`` times as
    long as when it was chosen. The first run is not timed (allocations, compilation).
    """

    def __init__(self):
        self.use_threads = None        # the choice: True, False, None while measuring
        self.previous = None           # the choice before this look
        self.reference = None          # the chosen count's mean when chosen
        self.threaded = _Tally()       # this look's runs on several threads
        self.single = _Tally()         # ... and on one
        self.recent = _Tally()         # the chosen count's runs since the last check
        self.runs_left = 0
        self.look_after = _thresholds.FIRST_LOOK_AFTER
        self.threaded_until = -float("inf")   # end of the last run on several threads
        self.warm = False
        self._lock = threading.Lock()

    def choose(self, n):
        """Threads for the next run, ``n`` (> 1) or 1."""
        with self._lock:
            return self._choose(n)

    def record(self, threads, start, end):
        """The run on ``threads`` threads took from ``start`` to ``end`` (seconds)."""
        with self._lock:                 # fits in several Python threads share a key
            self._record(threads, start, end)

    def _choose(self, n):
        if self.use_threads is not None:
            return n if self.use_threads else 1
        return n if not (self.warm and self.threaded.enough()) else 1

    def _record(self, threads, start, end):
        if threads > 1:
            self.threaded_until = end
        if not self.warm:
            self.warm = True
            return
        seconds = end - start
        if self.use_threads is not None:
            self.recent.add(seconds)
            self.runs_left -= 1
            slowed = (self.recent.enough() and
                      self.recent.mean() > _thresholds.THREAD_SLOWDOWN * self.reference)
            if self.recent.enough():
                self.recent = _Tally()
            if self.runs_left <= 0 or slowed:
                self._look_again(slowed)
        elif threads > 1:
            self.threaded.add(seconds)
        elif start >= self.threaded_until + _thresholds.THREAD_SETTLE:
            self.single.add(seconds)
            if self.single.enough():
                self._decide()

    def _decide(self):
        threaded = self.threaded.mean() if self.threaded.runs else float("inf")
        single = self.single.mean()
        self.use_threads = threaded <= _thresholds.PREFER_THREADS * single
        if self.previous is not None and self.use_threads != self.previous:
            self.look_after = _thresholds.FIRST_LOOK_AFTER  # it changed: look again soon
        self.reference = min(threaded, single)
        self.recent = _Tally()
        self.runs_left = self.look_after

    def _look_again(self, slowed):
        self.previous, self.use_threads = self.use_threads, None
        self.threaded, self.single = _Tally(), _Tally()
        # a confirmed choice stands longer; after a slowdown look again soon
        self.look_after = (_thresholds.FIRST_LOOK_AFTER if slowed else
                           min(_thresholds.LAST_LOOK_AFTER, 2 * self.look_after))


_choosers = collections.OrderedDict()
_choosers_lock = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def chooser(key):
    """The :class:`ThreadChooser` of the work ``key`` (the last ``MAX_CHOOSERS`` kept)."""
    with _choosers_lock:
        found = _choosers.get(key)
        if found is None:
            found = _choosers[key] = ThreadChooser()
            if len(_choosers) > MAX_CHOOSERS:
                _choosers.popitem(last=False)
        else:
            _choosers.move_to_end(key)
        return found


@contextlib.contextmanager
def timed_choice(found, n, clock=time.perf_counter):
    """Run the enclosed work on the threads ``found`` chooses out of ``n``; yields them."""
    threads = found.choose(n) if n > 1 else 1
    start = clock()
    yield threads
    if n > 1:
        found.record(threads, start, clock())
