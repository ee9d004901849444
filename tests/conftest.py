"""pytest set-up: makes tests/_helpers.py importable from every test module, and holds the
kernels' default thread count to the cores whatever else runs on the machine (or has run
in this process)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _no_load_adaptation(monkeypatch):
    """Other processes on a shared test machine would otherwise take cores from the
    default thread count at random moments, and tests of the threaded schedules would
    run them or not by chance (results are the same either way); so would a unit split
    whose thread was late (its backoff). test_governor.py tests the adaptation itself."""
    from fastlstm import _governor
    monkeypatch.setattr(_governor, "free_cores", lambda cores: cores)
    monkeypatch.setattr(_governor, "late_threads", _NeverBackOff())


class _NeverBackOff:
    """A ``_governor.LateThreadBackoff`` that never backs off; ``counts`` holds the late
    counts it was shown."""

    def __init__(self):
        self.counts = []

    def active(self):
        return False

    def look(self, late_count, threads, given=False):
        self.counts.append(late_count)
        return threads
