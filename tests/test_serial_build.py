"""The serial build (FASTLSTM_NO_OPENMP=1) compiles and still equals the reference.

Builds the Cython kernels into a temporary folder, then, in a fresh interpreter, puts that
module in place of the "cython" backend's kernels and runs the backend comparison.
"""

import os
import pathlib
import subprocess
import sys
import textwrap


from _helpers import require

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    spec = importlib.util.spec_from_file_location("_recurrent", sys.argv[1])
    serial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serial)
    assert not serial.openmp_enabled(), "FASTLSTM_NO_OPENMP=1 still built with OpenMP"

    import fastlstm as fl
    from fastlstm.backends import cython_backend as cb
    cb._recurrent = serial                  # the unit-split path calls it directly
    cb.rnn_forward = cb._single_threaded_blas(serial.rnn_forward, 3)
    cb.rnn_backward = cb._single_threaded_blas(serial.rnn_backward, 4)
    cb.openmp_enabled = serial.openmp_enabled

    sys.path.insert(0, sys.argv[2])
    from test_backends import compare
    from _helpers import make_cell, CELLS
    for cell_name in sorted(CELLS):
        for dtype in (np.float32, np.float64):
            for B, T, H in ((1, 1, 5), (17, 5, 5), (40, 7, 5), (3, 4, 260)):
                with fl.threads(2):     # H=260, B=3: the hidden-unit split, serially
                    compare(make_cell(cell_name, H, 3, dtype=dtype), "cython", B, T, seed=B)
    print("serial build OK")
""")


def test_serial_build_matches_reference(tmp_path):
    require("Cython")
    env = dict(os.environ, FASTLSTM_NO_OPENMP="1",
               FASTLSTM_CYTHON_BUILD_DIR=str(tmp_path / "cython"))
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "FASTLSTM_NO_OPENMP set" in build.stderr
    built = list((tmp_path / "lib" / "fastlstm").glob("_recurrent*.so"))
    assert len(built) == 1, built
    check = subprocess.run([sys.executable, "-c", CHECK, str(built[0]), str(ROOT / "tests")],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "serial build OK" in check.stdout
