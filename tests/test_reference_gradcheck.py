"""float64 central-difference gradient check of the reference, against every input."""

import numpy as np
import pytest

import fastlstm as fl
from _helpers import (CELLS, flat_grads, loss_weights, make_case, make_cell, numeric_gradient,
                      projected_loss, run_forward_backward)

@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_reference_gradients_match_central_differences(cell_name, time_major):
    B, T, I, H = 4, 5, 3, 3
    cell = make_cell(cell_name, H, I, seed=3)
    x, lengths, state = make_case(cell, B, T, seed=5, lengths=[5, 0, 2, 4],
                                  time_major=time_major)
    R, S = loss_weights(cell, B, T, time_major=time_major)
    out, st, grads = run_forward_backward(cell, x, lengths, state, R, S, time_major)
    flat = flat_grads(grads)

    if cell.cell_clip is not None:
        _, _, cache = fl.dynamic_rnn(cell, x, lengths, state, time_major, "numpy", True)
        unclipped = np.abs(cache.c_unclipped)
        assert np.any(unclipped > cell.cell_clip), "the clip never acts: the test is vacuous"
        assert np.all(np.abs(unclipped - cell.cell_clip) > 1e-4), "too close to the kink"

    def loss():
        o, s = fl.dynamic_rnn(cell, x, lengths, state, time_major, "numpy")
        return projected_loss(o, s, R, S)

    checked = {"inputs": x}
    checked.update({name: cell.params[name] for name in cell.params})
    for part, arr in zip(("c", "h"), state if cell.state_is_tuple else [None, state]):
        if arr is not None:
            checked[f"initial_state.{part}" if cell.state_is_tuple else "initial_state"] = arr
    assert set(checked) == set(flat)
    for name, arr in checked.items():
        expected = numeric_gradient(loss, arr)
        np.testing.assert_allclose(flat[name], expected, rtol=1e-6, atol=1e-8,
                                   err_msg=f"gradient of {name}")


def test_gradient_is_zero_where_the_clip_acts():
    # A huge input gate drives the cell far past the clip at every step: then nothing
    # flows back through the cell, exactly as TensorFlow's clip_by_value gradient.
    cell = make_cell("peephole_clip", 2, 1, seed=0)
    params = dict(cell.params)
    params["bias"] = np.array([50, 50, 50, 50, 50, 50, 0, 0], float)   # i, j, f, o
    params["w_i_diag"] = np.zeros(2)
    params["w_f_diag"] = np.zeros(2)
    cell.load_params(params)
    x = np.ones((1, 3, 1))
    _, state, cache = fl.dynamic_rnn(cell, x, backend="numpy", return_cache=True)
    assert np.all(np.abs(cache.c_unclipped) > cell.cell_clip)
    grads = fl.dynamic_rnn_backward(
        cell, cache, None, fl.LSTMStateTuple(np.ones((1, 2)), np.zeros((1, 2))))
    assert np.all(grads["initial_state"].c == 0)
