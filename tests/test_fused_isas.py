"""The fused kernels' two instruction sets and the switches between them.

src_cy/fused_step.h runs its loops on AVX-512 tiles or, on CPUs without AVX-512, on AVX2
tiles that keep every element's FMA chain and the gate math's operations: the two must
give the same bits. On an AVX-512 CPU, FASTLSTM_NO_AVX512=1 at import runs the AVX2
kernels (in a subprocess here: the ISA is chosen once per process), and
FASTLSTM_NO_FUSED=1 the BLAS path.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fastlstm import _recurrent

TESTS = pathlib.Path(__file__).resolve().parent

#: Every fused entry point: batch chunks of 4-row tiles with a last partial tile, the
#: hidden-unit split (forward and backward), one row (fl_row_blocks) alone and split,
#: the input projection inside the step (I + H <= 1024) and before it (I + H > 2048),
#: the passes over k of 6-row tiles with a last tile of 5 rows or of 4 or fewer,
#: partial 16-unit groups and 64-unit blocks, the narrow input-gradient tiles (I % 64 <=
#: 32) and the weight-gradient tiles (gemm_tn), over variable lengths with empty rows.
SHAPES = [(9, 5, 3, 20), (2, 4, 3, 256), (1, 6, 3, 20), (1, 4, 3, 256),
          (33, 7, 28, 128), (64, 5, 64, 130), (5, 6, 100, 64), (12, 5, 2000, 96),
          (70, 3, 12, 40), (11, 4, 100, 100)]
CELLS = ("lstm", "lstm_clip", "peephole", "peephole_clip")    # each gate-math variant

RESULTS = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastlstm as fl
from fastlstm import _gemm, _recurrent, _thresholds
from _helpers import flat_grads, loss_weights, make_case, make_cell
from test_fused_isas import CELLS, SHAPES, fit_probabilities

if sys.argv[3] == "all tiles":     # the weight gradients too (on AVX2 they go to BLAS)
    _thresholds.WEIGHT_GRADIENT_TILE_ISAS = ("avx512", "avx2")

results = {"isa": np.array(_recurrent.fused_isa() or "blas")}
for name in CELLS:
    for B, T, I, H in SHAPES:
        cell = make_cell(name, H, I, dtype=np.float32, seed=B + H)
        x, lengths, state = make_case(cell, B, T, seed=I)
        key = f"{name} {B} {T} {I} {H}"
        out, st, cache = fl.dynamic_rnn(cell, x, lengths, state, return_cache=True,
                                        backend="cython")
        results[key + " inference"] = fl.dynamic_rnn(cell, x, lengths, state,
                                                     backend="cython")[0]
        results[key + " outputs"] = out
        for i, part in enumerate(st):
            results[key + f" state {i}"] = part
        R, S = loss_weights(cell, B, T, seed=H)
        for g, grad in flat_grads(fl.dynamic_rnn_backward(cell, cache, R, S)).items():
            results[key + " d" + g] = grad
results["classifier"] = fit_probabilities()
np.savez(sys.argv[2], **results)
"""


def fit_probabilities():
    """predict_proba of a small LSTMClassifier (input projection, two epochs of Adam)."""
    from fastlstm import LSTMClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 9, 7)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = LSTMClassifier(hidden_size=48, input_projection=32, max_iter=2,
                           batch_size=32, random_state=0).fit(X, y)
    return model.predict_proba(X)


def _results_in_a_subprocess(tmp_path, tiles="default", **env):
    path = tmp_path / "results.npz"
    run = subprocess.run([sys.executable, "-c", RESULTS, str(TESTS), str(path), tiles],
                         env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


@pytest.mark.skipif(_recurrent.fused_isa() != "avx512",
                    reason="compares the AVX2 kernels with the AVX-512 ones on a CPU "
                           "that runs both")
def test_the_avx2_kernels_give_the_avx512_bits(tmp_path):
    """Every output, state and gradient, with the weight gradients on the tiles too (by
    default AVX2 leaves them to BLAS: see _thresholds.WEIGHT_GRADIENT_TILE_ISAS)."""
    avx512 = _results_in_a_subprocess(tmp_path, "all tiles")
    avx2 = _results_in_a_subprocess(tmp_path, "all tiles", FASTLSTM_NO_AVX512="1")
    assert str(avx512.pop("isa")) == "avx512" and str(avx2.pop("isa")) == "avx2"
    assert avx512.keys() == avx2.keys() and len(avx512) > 200
    for key, want in avx512.items():
        assert np.all(np.isfinite(want)), key
        np.testing.assert_array_equal(avx2[key], want, err_msg=key)


@pytest.mark.skipif(_recurrent.fused_isa() is None,
                    reason="the fused kernels do not run on this CPU")
def test_fastlstm_no_fused_takes_the_blas_path_with_the_same_results(tmp_path):
    """FASTLSTM_NO_FUSED=1: every float32 product on the BLAS path (other sums, so close
    to the fused kernels' results, not equal)."""
    fused = _results_in_a_subprocess(tmp_path)
    blas = _results_in_a_subprocess(tmp_path, FASTLSTM_NO_FUSED="1")
    assert str(blas.pop("isa")) == "blas" and str(fused.pop("isa")) != "blas"
    for key, want in fused.items():
        np.testing.assert_allclose(blas[key], want, rtol=2e-4, atol=2e-5, err_msg=key)


def _proc_cpuinfo_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return None if line is None else set(line.split(":", 1)[1].split())


@pytest.mark.skipif(_proc_cpuinfo_flags() is None or not sys.platform.startswith("linux"),
                    reason="reads the CPU's features from Linux's /proc/cpuinfo")
def test_the_kernels_read_the_cpus_features_as_linux_does():
    """fl_best_fused_isa reads CPUID and XGETBV itself; Linux's flags (which also drop
    what the OS does not save) are the oracle. AVX-512 needs all four subsets the
    kernels are compiled for, not AVX-512 F alone."""
    flags = _proc_cpuinfo_flags()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        want = "avx512"
    elif {"avx2", "fma"} <= flags:
        want = "avx2"
    else:
        want = None
    assert _recurrent.cpu_isa() == want
    env_switches = os.environ.get("FASTLSTM_NO_FUSED") == "1" or \
        os.environ.get("FASTLSTM_NO_AVX512") == "1"
    if not env_switches:
        assert _recurrent.fused_isa() == want


@pytest.mark.skipif(_recurrent.fused_isa() is None,
                    reason="the fused kernels do not run on this CPU")
@pytest.mark.parametrize("B", [13, 64])
def test_the_backwards_passes_over_k_give_the_bits_of_one_pass(B):
    """dz W_h^T and the input gradient sum in passes over k over all rows where the
    call's blocks are more than half of L2, one pass per tile where they fit: as on a
    CPU with a small L2 (set_l2_bytes) and with a large one, the same bits."""
    from _helpers import flat_grads, loss_weights, make_case, make_cell
    import fastlstm as fl
    cell = make_cell("peephole_clip", 96, 70, dtype=np.float32, seed=B)
    x, lengths, state = make_case(cell, B, 4, seed=B)
    R, S = loss_weights(cell, B, 4, seed=1)
    runs = []
    for l2 in (1 << 30, 64 << 10):        # blocks of W^T: 192 KB (H = 96, 4H = 384 rows)
        _recurrent.set_l2_bytes(l2)
        try:
            _, _, cache = fl.dynamic_rnn(cell, x, lengths, state, return_cache=True,
                                         backend="cython")
            runs.append(flat_grads(fl.dynamic_rnn_backward(cell, cache, R, S)))
        finally:
            _recurrent.set_l2_bytes(0)
    assert runs[0].keys() == runs[1].keys()
    for key, want in runs[0].items():
        np.testing.assert_array_equal(runs[1][key], want, err_msg=key)


@pytest.mark.skipif(_recurrent.fused_isa() is None,
                    reason="the fused kernels do not run on this CPU")
@pytest.mark.parametrize("name", ["lstm", "peephole_clip"])
@pytest.mark.parametrize("I, H", [(3, 20), (28, 130), (40, 200), (100, 64)])
def test_a_rows_results_do_not_depend_on_the_rows_beside_it(name, I, H):
    """Every sequence's outputs, final state and initial state's gradient (the backward's
    steps, dz W_h^T) are the same bits in a batch of 1 to 9 rows: tiles of 1, 2, 3 or 4
    rows (AVX2 computes only the rows it has; AVX-512 a 4-row tile of copies), the
    one-row path, the unit split and the passes over k (I + H > 192) all sum each element
    in the same order. (Not so where a BLAS GEMM takes part, whose blocking follows its
    sizes: the input projection before the step (B < 8 with 2 I > H and I + H > 192; here
    it runs inside at every batch) and some input gradients.)"""
    from _helpers import loss_weights, make_case, make_cell
    import fastlstm as fl
    cell = make_cell(name, H, I, dtype=np.float32, seed=H)
    x, lengths, state = make_case(cell, 9, 6, seed=I)
    R, S = loss_weights(cell, 9, 6, seed=1)

    def run(rows):
        st = fl.LSTMStateTuple(state[0][rows], state[1][rows])
        out, final, cache = fl.dynamic_rnn(cell, x[rows], lengths[rows], st,
                                           return_cache=True, backend="cython")
        grads = fl.dynamic_rnn_backward(cell, cache, R[rows],
                                        fl.LSTMStateTuple(S[0][rows], S[1][rows]))
        return [out, *final, *grads["initial_state"]]

    whole = run(np.arange(9))
    for n in range(1, 9):
        for first in sorted({0, 9 - n}):
            rows = np.arange(first, first + n)
            for got, want in zip(run(rows), whole):
                np.testing.assert_array_equal(got, want[rows], err_msg=f"rows {rows}")
