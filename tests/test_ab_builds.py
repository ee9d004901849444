"""benchmarks/ab_builds.py: two copies of the package loaded side by side, each on its own
code and kernels (the backends load relative to their package)."""

import importlib.util
import pathlib
import shutil
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import _recurrent  # noqa: F401 -- the copies need the built extension

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _ab_builds():
    spec = importlib.util.spec_from_file_location(
        "ab_builds", ROOT / "benchmarks" / "ab_builds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_package(dest):
    shutil.copytree(pathlib.Path(fastlstm.__file__).parent, dest,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(dest)


def test_a_renamed_copy_runs_its_own_backend_and_kernels(tmp_path):
    ab = _ab_builds()
    name = "fastlstm_ab_test_copy"
    copy = ab.load_build(_copy_package(tmp_path / "copy"), name)
    try:
        cell = copy.LSTMCell(20, 6, random_state=0, dtype=np.float32)
        x = np.random.default_rng(0).standard_normal((3, 5, 6)).astype(np.float32)
        got = copy.dynamic_rnn(cell, x, None, backend="cython")[0]
        backend = sys.modules[name + ".backends.cython_backend"]
        assert backend._recurrent is sys.modules[name + "._recurrent"]
        assert backend._recurrent.__file__.startswith(str(tmp_path))
        ref_cell = fastlstm.LSTMCell(20, 6, random_state=0, dtype=np.float32)
        want = fastlstm.dynamic_rnn(ref_cell, x, None, backend="cython")[0]
        np.testing.assert_array_equal(got, want)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_two_copies_of_one_build_give_the_same_bits(tmp_path, capsys):
    ab = _ab_builds()
    a, b = _copy_package(tmp_path / "a"), _copy_package(tmp_path / "b")
    try:
        ab.main([a, b, "--configs", "3,4,5,16;2,3,4,20", "--threads", "1,2",
                 "--seconds", "0.001"])
    finally:
        for key in [k for k in sys.modules if k.startswith("fastlstm_ab_")]:
            del sys.modules[key]
    rows = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("(")]
    assert len(rows) == 2 * 2 * 2                     # configs x modes x thread counts
    assert all(row.rstrip().endswith("yes") for row in rows)


def test_bad_arguments_are_refused(tmp_path):
    ab = _ab_builds()
    for argv, says in ((["x", "y", "--configs", "1,2,3"], "--configs"),
                       (["x", "y", "--modes", "fit"], "--modes"),
                       (["x", "y", "--threads", "0"], "--threads")):
        with pytest.raises(SystemExit, match=says):
            ab.main(argv)
    with pytest.raises(SystemExit, match="not a copy of the fastlstm package"):
        ab.load_build(str(tmp_path), "fastlstm_ab_nothing")
