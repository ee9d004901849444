"""The "cuda" backend under Numba's CUDA simulator, on the CPU.

NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported, so the checks run in a fresh
interpreter. Tiny shapes, 4 threads and 2 sequences per block: several blocks run, the
last one partial, and every thread loops over several (row, unit) pairs.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

from _helpers import require

TESTS = pathlib.Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import fastlstm as fl
    from test_backends import compare
    from _helpers import CELLS, make_cell

    assert "cuda" in fl.available_backends(), fl.available_backends()
    n = 0
    for cell_name in sorted(CELLS):
        for dtype in (np.float32, np.float64):
            for time_major in (False, True):
                for B, T, I, H in ((5, 3, 2, 3), (1, 1, 1, 1), (4, 4, 3, 5)):
                    cell = make_cell(cell_name, H, I, dtype=dtype, seed=B + H)
                    compare(cell, "cuda", B, T, time_major=time_major, seed=T)
                    n += 1
    # the estimator on the cuda backend: same predictions as on the CPU
    rng = np.random.RandomState(0)
    X = rng.standard_normal((12, 4, 2)).astype(np.float32)
    y = (X[:, 0, 0] > 0).astype(int)
    gpu = fl.LSTMClassifier(hidden_size=3, max_iter=2, backend="cuda", random_state=0)
    cpu = fl.LSTMClassifier(hidden_size=3, max_iter=2, backend="numpy", random_state=0)
    gpu.fit(X, y)
    cpu.fit(X, y)
    assert gpu.backend_ == "cuda"
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-4,
                               atol=1e-5)
    gpu.set_params(cell="gru").fit(X, y)
    cpu.set_params(cell="gru").fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-4,
                               atol=1e-5)
    print(f"cuda simulator OK: {n} comparisons")
""")


def test_cuda_backend_matches_reference_in_the_simulator():
    require("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTLSTM_CUDA_THREADS="4",
               FASTLSTM_CUDA_ROWS="2")
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(TESTS)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "cuda simulator OK: 84 comparisons" in run.stdout
