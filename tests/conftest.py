"""pytest set-up: makes tests/_helpers.py importable from every test module, gives the run
a Numba kernel cache of its own, and holds the kernels' default thread count to the cores
whatever else runs on the machine (or has run in this process)."""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Before Numba is imported (it reads the variable once): every run compiles the Numba
# kernels afresh into an empty cache, whatever the user's cache holds, so the tests that
# read a kernel's LLVM IR have it; tests/test_numba_cache.py tests loading.
_NUMBA_CACHE = tempfile.mkdtemp(prefix="fastlstm-tests-numba-")
os.environ["NUMBA_CACHE_DIR"] = _NUMBA_CACHE
atexit.register(shutil.rmtree, _NUMBA_CACHE, True)


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
