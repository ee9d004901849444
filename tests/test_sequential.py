"""T one-step calls that carry the state equal one T-step call (Karpathy's self-test)."""

import numpy as np
import pytest

import fastlstm as fl
from _helpers import (CELLS, assert_close, flat_grads, loss_weights, make_case, make_cell,
                      run_forward_backward)

BACKENDS = [b for b in ("numpy", "cython", "numba")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_stepwise_calls_equal_one_call(cell_name, backend):
    B, T, I, H = 5, 4, 3, 4
    cell = make_cell(cell_name, H, I, seed=1)
    x, lengths, state = make_case(cell, B, T, seed=2, lengths=[4, 0, 1, 3, 4])
    R, S = loss_weights(cell, B, T)
    out, st, grads = run_forward_backward(cell, x, lengths, state, R, S, backend=backend)

    # Forward, one step at a time: a sequence whose end has passed gets length 0 there.
    step_caches, step_outputs, s = [], [], state
    for t in range(T):
        o, s, c = fl.dynamic_rnn(cell, x[:, t:t + 1], sequence_length=(lengths > t).astype(int),
                                 initial_state=s, backend=backend, return_cache=True)
        step_outputs.append(o)
        step_caches.append(c)
    assert_close(np.concatenate(step_outputs, axis=1), out, cell.dtype, "outputs")
    for a, b in zip(s if cell.state_is_tuple else [s], st if cell.state_is_tuple else [st]):
        assert_close(a, b, cell.dtype, "final state")

    # Backward, one step at a time, carrying d_state and summing the weight gradients.
    d_state, summed, d_inputs = S, {}, [None] * T
    for t in reversed(range(T)):
        g = fl.dynamic_rnn_backward(cell, step_caches[t], R[:, t:t + 1], d_state)
        d_state = g["initial_state"]
        d_inputs[t] = g["inputs"]
        for name in cell.params:
            summed[name] = summed.get(name, 0) + g[name]
    flat = flat_grads(grads)
    assert_close(np.concatenate(d_inputs, axis=1), flat["inputs"], cell.dtype, "d inputs")
    for name in cell.params:
        assert_close(summed[name], flat[name], cell.dtype, f"d {name}")
    parts = d_state if cell.state_is_tuple else [d_state]
    full = grads["initial_state"] if cell.state_is_tuple else [grads["initial_state"]]
    for a, b in zip(parts, full):
        assert_close(a, b, cell.dtype, "d initial state")
