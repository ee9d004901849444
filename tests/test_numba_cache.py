"""The Numba backend's disk cache of compiled kernels (fastlstm/backends/_numba_jit.py, on
unless ``FASTLSTM_NUMBA_CACHE=0``): a second process loads every kernel the first
compiled and gets the same bits, and the cache can be off or unwritable without harm."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastlstm.backends import _numba_jit

# One small training step of every cell on the Numba backend, in a fresh process: prints
# the results' checksums, which kernels compiled (cache misses) and which loaded (hits).
# Two threads, given: the default count drops to one while other processes keep the
# cores busy (two children running at once do), and one thread runs other kernels (the
# serial schedules), so a child's set of compiled kernels would depend on the load.
_CHILD = """
import json, sys, numpy as np, fastlstm as fl
from numba.core.dispatcher import Dispatcher
from fastlstm.backends._numba_jit import _CACHE_DIR, _StableKeyCache
rng = np.random.default_rng(0)
sums = []
for cell in (fl.BasicLSTMCell(16, 8, random_state=0),
             fl.LSTMCell(16, 8, use_peepholes=True, cell_clip=3.0, random_state=0),
             fl.GRUCell(16, 8, reset_after=True, random_state=0),
             fl.BasicRNNCell(16, 8, random_state=0))[:int(sys.argv[1])]:
    x = rng.standard_normal((9, 5, 8)).astype(np.float32)
    with fl.threads(2):
        out, _, cache = fl.dynamic_rnn(cell, x, np.arange(9) % 5 + 1, backend="numba",
                                       return_cache=True)
        grads = fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    sums += [out.tobytes().hex()] + [np.asarray(g).tobytes().hex() for g in grads.values()]
import gc
cached = [d for d in gc.get_objects() if isinstance(d, Dispatcher)
          and isinstance(d._cache, _StableKeyCache)]
print(json.dumps({"dir": _CACHE_DIR, "sums": sums,
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in cached),
                  "misses": sorted(d.py_func.__qualname__ for d in cached
                                   if sum(d.stats.cache_misses.values()))}))
"""


def _start_child(env_extra, cells=4):
    env = dict(os.environ, **env_extra)
    env = {k: v for k, v in env.items() if v is not None}    # None: unset
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(cells)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(child):
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _run_child(env_extra, cells=4):
    return _result(_start_child(env_extra, cells))


def _values(sums):
    return [np.frombuffer(bytes.fromhex(s), np.float32) for s in sums]


def test_a_second_process_loads_every_kernel(tmp_path):
    first = _run_child({"NUMBA_CACHE_DIR": str(tmp_path), "FASTLSTM_NUMBA_CACHE": "1"})
    assert first["dir"].startswith(str(tmp_path))
    assert first["misses"], "the first process compiled nothing: the test saw no kernel"
    second = _run_child({"NUMBA_CACHE_DIR": str(tmp_path), "FASTLSTM_NUMBA_CACHE": "1"})
    assert second["misses"] == [], f"compiled again instead of loaded: {second['misses']}"
    assert second["hits"] > 0        # the entry kernels (what they call is inside them)
    # a model must not depend on whether the cache was warm: the same bits, not close ones
    for loaded, compiled in zip(second["sums"], first["sums"]):
        if loaded != compiled:
            diff = np.abs(_values([loaded])[0] - _values([compiled])[0]).max()
            pytest.fail(f"a loaded kernel's results differ from the compiled one's by {diff}")


def test_processes_filling_one_cache_at_once(tmp_path):
    """Two processes compiling and saving the same kernels at the same time (the first
    fit of a GridSearchCV with n_jobs=2): both run, and a third loads everything."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "FASTLSTM_NUMBA_CACHE": None}
    first, second = [_result(child) for child in
                     [_start_child(env, cells=1), _start_child(env, cells=1)]]
    assert first["misses"] and second["misses"] and first["sums"] == second["sums"]
    third = _run_child(env, cells=1)
    assert third["misses"] == [] and third["sums"] == first["sums"]


def test_the_cache_is_on_by_default(tmp_path):
    child = _run_child({"NUMBA_CACHE_DIR": str(tmp_path), "FASTLSTM_NUMBA_CACHE": None},
                       cells=1)
    assert child["dir"].startswith(str(tmp_path)) and child["misses"]
    assert any(name.endswith(".nbi") for _, _, names in os.walk(child["dir"])
               for name in names)


@pytest.mark.parametrize("setting", ["0", "Off"])
def test_the_cache_is_off_with_0(tmp_path, setting):
    child = _run_child({"NUMBA_CACHE_DIR": str(tmp_path), "FASTLSTM_NUMBA_CACHE": setting},
                       cells=1)
    assert child["dir"] is None and child["hits"] == 0 and child["misses"] == []
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_directory_means_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(_numba_jit.numba.config, "CACHE_DIR", str(blocker / "below"))
    assert _numba_jit.cache_dir() is None


def test_the_cache_directory_is_named_by_the_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(_numba_jit.numba.config, "CACHE_DIR", str(tmp_path))
    path = _numba_jit.cache_dir()
    assert path == str(tmp_path / ("fastlstm-numba-" + _numba_jit.sources_digest()))
    assert os.path.isdir(path)


def test_kernels_made_by_factories_are_told_apart():
    """Two tile products of other shapes are other kernels; the same shape is the same
    kernel (it pickles with a fresh uuid per process, which the description leaves out)."""
    from fastlstm.backends import _numba_tiles
    narrow = _numba_tiles.panel_product(width=8, tile_rows=2)
    wide = _numba_tiles.panel_product(width=16, tile_rows=2)
    assert _numba_jit._describe(narrow) != _numba_jit._describe(wide)
    tile, tile_again = _numba_tiles._make_tile(2, 8), _numba_tiles._make_tile(2, 8)
    assert tile is not tile_again
    assert _numba_jit._describe(tile) == _numba_jit._describe(tile_again)
    assert _numba_jit._describe(tile) != _numba_jit._describe(_numba_tiles._make_tile(3, 8))


def test_a_closure_over_an_unknown_object_is_not_cached():
    marker = object()

    def uses_marker(x):
        return x if marker is None else x + 1

    with pytest.raises(TypeError, match="cannot describe"):
        _numba_jit._describe(uses_marker)
