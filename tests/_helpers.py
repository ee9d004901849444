"""Test helpers: the one tolerance table, case builders, and the loss used everywhere."""

import numpy as np

import fastlstm as fl

#: The one tolerance table of the suite, keyed by dtype.
TOLERANCES = {
    np.dtype(np.float64): dict(rtol=1e-7, atol=1e-9),
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
}

#: Cells by name: (constructor, kwargs).
CELLS = {
    "rnn": lambda H, I, **kw: fl.BasicRNNCell(H, I, **kw),
    "lstm": lambda H, I, **kw: fl.BasicLSTMCell(H, I, forget_bias=1.0, **kw),
    "lstm_clip": lambda H, I, **kw: fl.LSTMCell(H, I, cell_clip=0.4, forget_bias=0.5, **kw),
    "peephole": lambda H, I, **kw: fl.LSTMCell(H, I, use_peepholes=True, forget_bias=1.0, **kw),
    "peephole_clip": lambda H, I, **kw: fl.LSTMCell(H, I, use_peepholes=True, cell_clip=0.4,
                                                    forget_bias=1.0, **kw),
    "gru": lambda H, I, **kw: fl.GRUCell(H, I, **kw),
    "gru_reset_after": lambda H, I, **kw: fl.GRUCell(H, I, reset_after=True, **kw),
}


def assert_close(actual, desired, dtype, what=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired),
                               err_msg=what, **TOLERANCES[np.dtype(dtype)])


def make_cell(name, H, I, dtype=np.float64, seed=0, bias_scale=0.5):
    """A cell with random (non-zero) biases and peepholes so that every path is exercised."""
    cell = CELLS[name](H, I, dtype=dtype, random_state=seed)
    rng = np.random.default_rng(seed + 1000)
    params = dict(cell.params)
    params["bias"] = rng.uniform(-bias_scale, bias_scale, params["bias"].shape)
    for k in ("w_i_diag", "w_f_diag", "w_o_diag", "recurrent_bias"):
        if k in params:
            params[k] = rng.uniform(-1, 1, params[k].shape)
    return cell.load_params(params)


def make_case(cell, B, T, seed=0, lengths=None, time_major=False, scale=1.5,
              initial_state=True):
    """Random inputs (B, T, I) or (T, B, I), lengths and initial state for ``cell``."""
    rng = np.random.default_rng(seed)
    shape = (T, B, cell.input_size) if time_major else (B, T, cell.input_size)
    x = (scale * rng.standard_normal(shape)).astype(cell.dtype)
    if lengths is None:
        lengths = rng.integers(0, T + 1, size=B)
        lengths[0] = T                 # always one full-length and (if B > 1) one empty
        if B > 1:
            lengths[1] = 0
    state = None
    if initial_state:
        H = cell.num_units
        if cell.state_is_tuple:
            state = fl.LSTMStateTuple(rng.uniform(-1, 1, (B, H)).astype(cell.dtype),
                                      rng.uniform(-1, 1, (B, H)).astype(cell.dtype))
        else:
            state = rng.uniform(-1, 1, (B, H)).astype(cell.dtype)
    return x, np.asarray(lengths), state


def loss_weights(cell, B, T, seed=0, time_major=False):
    """Random projections R (outputs) and S (state) of the loss sum(out*R) + sum(state*S)."""
    rng = np.random.default_rng(seed + 7)
    H = cell.num_units
    R = rng.standard_normal((T, B, H) if time_major else (B, T, H)).astype(cell.dtype)
    if cell.state_is_tuple:
        S = fl.LSTMStateTuple(rng.standard_normal((B, H)).astype(cell.dtype),
                              rng.standard_normal((B, H)).astype(cell.dtype))
    else:
        S = rng.standard_normal((B, H)).astype(cell.dtype)
    return R, S


def state_parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def projected_loss(outputs, state, R, S):
    total = float(np.sum(outputs.astype(np.float64) * R))
    for part, weight in zip(state_parts(state), state_parts(S)):
        total += float(np.sum(part.astype(np.float64) * weight))
    return total


def run_forward_backward(cell, x, lengths, state, R, S, time_major=False, backend="numpy"):
    """Outputs, state and every gradient of the projected loss."""
    out, st, cache = fl.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state,
                                    time_major=time_major, backend=backend, return_cache=True)
    grads = fl.dynamic_rnn_backward(cell, cache, R, S)
    return out, st, grads


def flat_grads(grads):
    """Gradient dict as name -> array, the state tuple split into its parts."""
    flat = {}
    for k, v in grads.items():
        if isinstance(v, tuple):
            for part, arr in zip(v._fields, v):
                flat[f"{k}.{part}"] = arr
        else:
            flat[k] = v
    return flat


def require(module_name):
    """Import an optional test dependency, or skip; with ``FASTLSTM_REQUIRE_ALL=1``
    (set by .ci/run) a missing one fails the test instead, so CI cannot pass by skipping."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if os.environ.get("FASTLSTM_REQUIRE_ALL") == "1":
            pytest.fail(f"{module_name} is required in CI (FASTLSTM_REQUIRE_ALL=1): {exc}")
        pytest.skip(f"{module_name} not installed: {exc}")


def numeric_gradient(f, arr, eps=1e-6):
    """Central differences of scalar ``f()`` w.r.t. every entry of ``arr`` (perturbed in
    place and restored)."""
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        saved = arr[idx]
        arr[idx] = saved + eps
        up = f()
        arr[idx] = saved - eps
        down = f()
        arr[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad


def step_kernel_arrays(H=16, B=3, T=4):
    """Small float32 arguments for calling the GRU / RNN kernels of ``_recurrent``
    directly: W (H, 3H), seq_len (all T), hs (T + 1, B, H), xproj (T, B, 3H) and an empty
    history."""
    W = np.random.default_rng(0).standard_normal((H, 3 * H)).astype(np.float32)
    return (W, np.full(B, T, np.int64), np.zeros((T + 1, B, H), np.float32),
            np.zeros((T, B, 3 * H), np.float32), np.zeros((0, 0, 0), np.float32))
