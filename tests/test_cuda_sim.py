"""The "cuda" backend under Numba's CUDA simulator, on the CPU.

NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported, so the checks run in fresh
interpreters. Tiny shapes and blocks of 4 threads: several tiles, the last ones partial,
every thread looping over several (row, unit) pairs. The simulator's cooperative grids
have one block, so a persistent plan runs there as one block owning every tile; several
blocks waiting on each other are checked on a GPU by benchmarks/gpu_check.py.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

from _helpers import require

TESTS = pathlib.Path(__file__).resolve().parent

PRELUDE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastlstm as fl
from fastlstm.backends import cuda_backend as cb, _cuda_kernels
from test_backends import compare
from _helpers import CELLS, make_case, make_cell, loss_weights, run_forward_backward
from _helpers import flat_grads
assert "cuda" in fl.available_backends(), fl.available_backends()
"""

DEFAULT_PLANS = """
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
np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-4, atol=1e-5)
gpu.set_params(cell="gru").fit(X, y)
cpu.set_params(cell="gru").fit(X, y)
np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-4, atol=1e-5)
print(f"cuda simulator OK: {n} comparisons")
"""

REGIMES = """
# Every regime forced in turn, three cells (peepholes, clip and both GRU forms included),
# both dtypes, lengths 0..T: against the reference, and bit for bit against each other.
launched = []
original = _cuda_kernels.kernel
def spy(kind, direction, dtype, grid_barrier):
    launched.append((kind, direction, grid_barrier))
    return original(kind, direction, dtype, grid_barrier)
cb._kernels.kernel = spy
FORCED = {"block_local": dict(rows_per_tile=2),
          "persistent": dict(rows_per_tile=2, units_per_tile=2),
          "per_step": dict(rows_per_tile=3, units_per_tile=2)}
B, T, I, H = 5, 4, 2, 3
n = 0
for cell_name in sorted(CELLS):
    for dtype in (np.float32, np.float64):
        cell = make_cell(cell_name, H, I, dtype=dtype, seed=B + H)
        x, lengths, state = make_case(cell, B, T, seed=3)
        R, S = loss_weights(cell, B, T, seed=3)
        results = {}
        for regime, tile in FORCED.items():
            with cb.forced_plan(regime=regime, threads=4, **tile):
                compare(cell, "cuda", B, T, seed=3)
                results[regime] = run_forward_backward(cell, x, lengths, state, R, S,
                                                       backend="cuda")
            n += 1
        first = results["block_local"]
        for regime, got in results.items():
            np.testing.assert_array_equal(got[0], first[0], err_msg=regime)
            for name, g in flat_grads(got[2]).items():
                np.testing.assert_array_equal(g, flat_grads(first[2])[name],
                                              err_msg=f"{regime} {name}")
for kind in ("rnn", "lstm", "gru"):
    for direction in ("forward", "backward"):
        assert (kind, direction, True) in launched, (kind, direction, "grid barrier")
        assert (kind, direction, False) in launched, (kind, direction, "block barrier")
print(f"cuda regimes OK: {n} comparisons")
"""

TRANSFERS = """
# The kernel contract copies each input in once and each output back once; output-only
# buffers are zeroed on the device; the workspace keeps its buffers between calls; the
# device-level kernels copy nothing.
rng = np.random.default_rng(0)
T, B, H = 3, 4, 2
f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
seq_len = np.array([3, 0, 2, 3])
xproj, W, peep = f32(T, B, 4 * H), f32(H, 4 * H), f32(3, H)
hs, cs = np.zeros((T + 1, B, H), np.float32), np.zeros((T + 1, B, H), np.float32)
acts, cun = np.zeros((T, B, 4 * H), np.float32), np.zeros((T, B, H), np.float32)

def counted(fn, *args):
    before = dict(cb.TRANSFERS)
    fn(*args)
    return {k: cb.TRANSFERS[k] - before.get(k, 0) for k in ("to_device", "to_host")}

args = (xproj, W, peep, True, 1.0, 0.5, seq_len, hs, cs, acts, cun)
# in: xproj, W, peepholes, seq_len, order, hs[0], cs[0]; out: hs, cs, acts, c_unclipped
assert counted(cb.lstm_forward, *args) == {"to_device": 7, "to_host": 4}
ws = cb.workspace()
kept = {name: id(buf) for name, buf in ws._buffers.items()}
assert counted(cb.lstm_forward, *args) == {"to_device": 7, "to_host": 4}
assert {name: id(buf) for name, buf in ws._buffers.items()} == kept, "reallocated"
# inference: no activations, no c_unclipped (cell_clip 0): nothing of theirs moves
empty = np.zeros((0, B, 4 * H), np.float32), np.zeros((0, B, H), np.float32)
args = (xproj, W, peep, False, 1.0, 0.0, seq_len, hs, cs) + empty
assert counted(cb.lstm_forward, *args) == {"to_device": 7, "to_host": 2}
dh, dc, dz = f32(B, H), f32(B, H), np.zeros((T, B, 4 * H), np.float32)
d_out = f32(T, B, H)
args = (W, peep, True, 0.5, seq_len, cs, acts, cun, d_out, dh, dc, dz)
# in: W, peepholes, seq_len, order, cs, acts, c_unclipped, d_outputs, dh, dc; out: dh, dc, dz
assert counted(cb.lstm_backward, *args) == {"to_device": 10, "to_host": 3}

dev = {name: cuda.to_device(a) for name, a in dict(
    xproj=xproj, W=W, peep=peep, seq_len=seq_len, order=cb.sort_order(seq_len), hs=hs,
    cs=cs, acts=acts, cun=cun).items()}
assert counted(cb.lstm_forward_device, dev["xproj"], dev["W"], dev["peep"], True, 1.0, 0.5,
               dev["seq_len"], dev["order"], dev["hs"], dev["cs"], dev["acts"],
               dev["cun"]) == {"to_device": 0, "to_host": 0}

# A persistent kernel that numba would not launch cooperatively (its grid barrier can
# hang outside one) runs a launch per step instead, with a warning, and the same bits.
import warnings
hs_ref = hs.copy()
with cb.forced_plan(regime="persistent", rows_per_tile=2, units_per_tile=1):
    cb.lstm_forward(xproj, W, peep, True, 1.0, 0.5, seq_len, hs_ref, cs, acts, cun)
    cb._cooperative_blocks = lambda *args: 0
    hs_fallback = hs.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb.lstm_forward(xproj, W, peep, True, 1.0, 0.5, seq_len, hs_fallback, cs, acts,
                        cun)
assert any("a launch per step" in str(w.message) for w in caught), caught
np.testing.assert_array_equal(hs_fallback, hs_ref)
print("cuda transfers OK")
"""


LAYER = """
# The device-resident layers (projection, recurrence, gradients on device arrays)
# against the host layer on the reference backend: basic RNN, LSTM with and without
# peepholes and clipping, GRU (reset_after).
from fastlstm.backends import cuda_layer as layer
B, T, I, H = 5, 4, 2, 3
for name in ("rnn", "lstm", "peephole_clip", "gru_reset_after"):
    for dtype in (np.float32, np.float64):
        cell = make_cell(name, H, I, dtype=dtype, seed=1)
        x, lengths, state = make_case(cell, B, T, seed=2, time_major=True)
        rng = np.random.default_rng(5)
        d_out, d_h, d_c = (rng.standard_normal(s).astype(dtype)
                           for s in ((T, B, H), (B, H), (B, H)))
        lstm = cell.kind == "lstm"
        h0 = state.h if lstm else state
        d_state = fl.LSTMStateTuple(d_c, d_h) if lstm else d_h
        out, st, cache = fl.dynamic_rnn(cell, x, sequence_length=lengths,
                                        initial_state=state, time_major=True,
                                        backend="numpy", return_cache=True)
        ref = fl.dynamic_rnn_backward(cell, cache, d_out, d_state, input_gradient=True)
        p = layer.to_device_params(cell)
        args = (cuda.to_device(x), cuda.to_device(lengths), cuda.to_device(h0))
        weights = (p["kernel"], p["recurrent_kernel"], p["bias"])
        dev = [cuda.to_device(a) for a in (d_out, d_h, d_c)]
        if lstm:
            fwd = layer.lstm_forward(*args, cuda.to_device(state.c), *weights,
                                     p["peepholes"], cell.forget_bias, cell.cell_clip or 0.0,
                                     training=True)
            got = layer.lstm_backward(fwd, *weights[:2], *dev)
        elif cell.kind == "gru":
            fwd = layer.gru_forward(*args, *weights, p["recurrent_bias"], training=True)
            got = layer.gru_backward(fwd, *weights[:2], *dev[:2])
        else:
            fwd = layer.rnn_forward(*args, *weights, training=True)
            got = layer.rnn_backward(fwd, *weights[:2], *dev[:2])
        tol = (dict(rtol=1e-4, atol=1e-5) if dtype == np.float32
               else dict(rtol=1e-10, atol=1e-12))
        pairs = [(fwd.outputs, out), (fwd.h, st.h if lstm else st),
                 (got["inputs"], ref["inputs"])]
        if lstm:
            pairs += [(fwd.c, st.c), (got["initial_state"][0], ref["initial_state"].h),
                      (got["initial_state"][1], ref["initial_state"].c)]
        else:
            pairs.append((got["initial_state"], ref["initial_state"]))
        names = [k for k in cell.params]
        pairs += [(got[k], ref[k]) for k in names]
        for i, (d, host) in enumerate(pairs):
            np.testing.assert_allclose(d.copy_to_host(), host, err_msg=f"{name} {i}", **tol)
        assert set(got) == set(names) | {"inputs", "initial_state"}, (name, sorted(got))
print("cuda layer OK")
"""


OPTIMIZERS = """
# One launch per step updates every parameter, as fastlstm.optimizers does on the host
# (coefficients rounded to the parameters' dtype here: a last-bit difference in float32).
from fastlstm import optimizers
from fastlstm.backends import cuda_optim
rng = np.random.default_rng(0)
shapes = {"kernel": (3, 8), "bias": (8,), "dense": (2, 5)}
launches = []
for name in ("_adam", "_momentum"):
    kernel = getattr(cuda_optim, name)
    class Counted:
        def __init__(self, kernel):
            self.kernel = kernel
        def __getitem__(self, grid):
            launches.append(grid)
            return self.kernel[grid]
    setattr(cuda_optim, name, Counted(kernel))
for dtype in (np.float32, np.float64):
    host = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    for ref_opt, dev_opt in ((optimizers.Adam(0.01), cuda_optim.DeviceAdam(0.01)),
                             (optimizers.SGD(0.05, 0.8), cuda_optim.DeviceSGD(0.05, 0.8))):
        ref = {k: v.copy() for k, v in host.items()}
        dev = cuda_optim.DeviceParams.from_host(host)
        for step in range(3):
            g = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
            ref_opt.step(ref, g)
            before = len(launches)
            dev_opt.step(dev, cuda_optim.DeviceParams.from_host(g))
            assert len(launches) == before + 1, "one launch per step"
        tol = 2e-7 if dtype == np.float32 else 1e-15
        got = dev.to_host()
        for k in shapes:
            np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol, err_msg=k)
            np.testing.assert_array_equal(dev[k].copy_to_host(), got[k])
try:
    other = cuda_optim.DeviceParams.from_host({"kernel": host["kernel"]})
    cuda_optim.DeviceAdam().step(dev, other)
except ValueError as exc:
    assert "layout" in str(exc)
else:
    raise AssertionError("a gradient of another layout was accepted")
print("cuda optimizers OK")
"""


DEVICE_FIT = """
# LSTMClassifier(backend="cuda") trains on the device (data, parameters, gradients and
# optimizer state there; one fused optimizer launch a step) and reaches the CPU fit's
# model: same batches, same updates. Ragged lengths, a partial last batch, the input
# projection, peepholes with clipping, L2, label smoothing and sample weights; then a
# warm start from the downloaded state; the GRU and the basic RNN. A model it does not
# support runs the host loop.
from fastlstm.backends import cuda_training
epochs = []
original = cuda_training.DeviceTrainer.epoch
def spy(self, *args):
    epochs.append(args)
    return original(self, *args)
cuda_training.DeviceTrainer.epoch = spy
rng = np.random.RandomState(0)
X = [rng.standard_normal((n, 2)).astype(np.float32) for n in rng.randint(1, 6, 13)]
y = np.array([int(x[0, 0] > 0) + (2 if len(x) > 3 else 0) for x in X])
sw = rng.uniform(0.5, 2, 13)
common = dict(hidden_size=3, max_iter=2, batch_size=7, random_state=0, cell="peephole",
              cell_clip=0.8, input_projection=4, alpha=1e-2, label_smoothing=0.1,
              learning_rate=0.05)
gpu = fl.LSTMClassifier(backend="cuda", **common).fit(X, y, sample_weight=sw)
cpu = fl.LSTMClassifier(backend="numpy", **common).fit(X, y, sample_weight=sw)
assert len(epochs) == 2, len(epochs)
np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-5)
for name, value in cpu.network_.params.items():
    np.testing.assert_allclose(gpu.network_.params[name], value, rtol=1e-4, atol=1e-5,
                               err_msg=name)
    np.testing.assert_allclose(gpu._optimizer_.m[name], cpu._optimizer_.m[name], rtol=1e-4,
                               atol=1e-6, err_msg=name)
assert gpu._optimizer_.t == cpu._optimizer_.t == 4
gpu.set_params(warm_start=True, max_iter=1).fit(X, y, sample_weight=sw)
cpu.set_params(warm_start=True, max_iter=1).fit(X, y, sample_weight=sw)
assert len(epochs) == 3
# prediction on the device too, in batches (the last one partial): probabilities and
# the readout features as the CPU computes them from the same parameters
predicted = []
original_outputs = cuda_training.outputs
cuda_training.outputs = lambda *args: predicted.append(args) or original_outputs(*args)
from fastlstm import _thresholds
_thresholds.PREDICT_BATCH = 5
cpu.network_.set_params(gpu.network_.copy_params())
np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-5,
                           atol=1e-6)
np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), rtol=1e-5, atol=1e-6)
assert len(predicted) == 2
# the GRU (reset_after) and the basic RNN train there too
for cell in ("gru", "rnn"):
    kw = dict(hidden_size=3, max_iter=1, batch_size=7, cell=cell, random_state=0)
    gpu_cell = fl.LSTMClassifier(backend="cuda", **kw).fit(X, y)
    cpu_cell = fl.LSTMClassifier(backend="numpy", **kw).fit(X, y)
    np.testing.assert_allclose(gpu_cell.loss_curve_, cpu_cell.loss_curve_, rtol=1e-5)
    for name, value in cpu_cell.network_.params.items():
        np.testing.assert_allclose(gpu_cell.network_.params[name], value, rtol=1e-4,
                                   atol=1e-5, err_msg=f"{cell} {name}")
assert len(epochs) == 5
# what the device fit does not cover runs the host loop, with the reason available
two = fl.LSTMClassifier(hidden_size=3, max_iter=1, num_layers=2, backend="cuda",
                        random_state=0).fit(X, y)
assert len(epochs) == 5 and two.backend_ == "cuda"
assert "num_layers=2" in cuda_training.unsupported(two, two.network_)
assert "dropout" in cuda_training.unsupported(fl.LSTMClassifier(dropout=0.5), gpu.network_)
print("cuda device fit OK")
"""


def run_in_simulator(body):
    require("numba.cuda")
    # The planner's own tiles (on the simulator's limits); 4 threads a block, set through
    # the environment as gpu_check does.
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTLSTM_CUDA_THREADS="4")
    script = textwrap.dedent(PRELUDE) + "from numba import cuda\n" + textwrap.dedent(body)
    run = subprocess.run([sys.executable, "-c", script, str(TESTS)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_cuda_backend_matches_reference_in_the_simulator():
    assert "cuda simulator OK: 84 comparisons" in run_in_simulator(DEFAULT_PLANS)


def test_every_regime_matches_reference_and_gives_the_same_bits():
    assert "cuda regimes OK: 42 comparisons" in run_in_simulator(REGIMES)


def test_each_input_and_output_crosses_once():
    assert "cuda transfers OK" in run_in_simulator(TRANSFERS)


def test_the_device_layer_matches_the_host_layer():
    assert "cuda layer OK" in run_in_simulator(LAYER)


def test_the_optimizer_kernels_match_the_host_optimizers():
    assert "cuda optimizers OK" in run_in_simulator(OPTIMIZERS)


def test_the_device_fit_reaches_the_cpu_fit():
    assert "cuda device fit OK" in run_in_simulator(DEVICE_FIT)


def test_the_gpu_check_script_runs():
    """benchmarks/gpu_check.py can only be measured on a GPU; here it must at least run
    (tiny shapes) and pass its agreement checks, so that it is ready when one is lent."""
    require("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTLSTM_CUDA_THREADS="4")
    script = TESTS.parent / "benchmarks" / "gpu_check.py"
    run = subprocess.run([sys.executable, "-W", "ignore", str(script), "--smoke"], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gpu_check: all agreement checks passed" in run.stdout
