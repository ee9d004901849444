"""Every bad input raises ValueError naming the problem, before anything is computed."""

import numpy as np
import pytest

import fastlstm as fl
from _helpers import make_cell

B, T, I, H = 3, 4, 2, 5


@pytest.fixture
def lstm():
    return make_cell("lstm", H, I)


@pytest.fixture
def x():
    return np.zeros((B, T, I))


@pytest.mark.parametrize("inputs, match", [
    (np.zeros((B, T)), "must be 3-D"),
    (np.zeros((B, T, I, 1)), "must be 3-D"),
    (np.zeros((B, T, I + 1)), "3 features per step but the cell's input_size is 2"),
    (np.full((B, T, I), np.nan), "inputs contains NaN or inf"),
    (np.full((B, T, I), np.inf), "inputs contains NaN or inf"),
    (np.zeros((B, T, I), dtype=object), "real numbers"),
    (np.zeros((B, T, I), dtype=complex), "real numbers"),
    (np.zeros((0, T, I)), "empty batch"),
])
def test_bad_inputs(lstm, inputs, match):
    with pytest.raises(ValueError, match=match):
        fl.dynamic_rnn(lstm, inputs)


@pytest.mark.parametrize("lengths, match", [
    ([1, -1, 2], "must not be negative"),
    ([1, 5, 2], r"must not exceed the number of steps \(4\)"),
    ([1, 2], "one length per sequence"),
    ([[1, 2, 3]], "one length per sequence"),
    ([1.5, 2, 3], "whole numbers"),
    (["a", "b", "c"], "integers"),
])
def test_bad_sequence_length(lstm, x, lengths, match):
    with pytest.raises(ValueError, match=match):
        fl.dynamic_rnn(lstm, x, sequence_length=lengths)


def test_float_lengths_with_whole_values_are_accepted(lstm, x):
    fl.dynamic_rnn(lstm, x, sequence_length=np.array([1.0, 4.0, 0.0]))


@pytest.mark.parametrize("state, match", [
    (np.zeros((B, H)), "must be an LSTMStateTuple"),
    ((np.zeros((B, H)),), "must be an LSTMStateTuple"),
    (fl.LSTMStateTuple(np.zeros((B, H + 1)), np.zeros((B, H))), r"initial_state.c must have shape \(3, 5\)"),
    (fl.LSTMStateTuple(np.zeros((B, H)), np.zeros((B + 1, H))), r"initial_state.h must have shape"),
    (fl.LSTMStateTuple(np.zeros((B, H)), np.full((B, H), np.nan)), "initial_state.h contains NaN"),
])
def test_bad_lstm_initial_state(lstm, x, state, match):
    with pytest.raises(ValueError, match=match):
        fl.dynamic_rnn(lstm, x, initial_state=state)


def test_bad_rnn_initial_state(x):
    rnn = make_cell("rnn", H, I)
    with pytest.raises(ValueError, match="must be one array"):
        fl.dynamic_rnn(rnn, x, initial_state=fl.LSTMStateTuple(np.zeros((B, H)), np.zeros((B, H))))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        fl.dynamic_rnn(rnn, x, initial_state=np.zeros((B, H, 1)))


def test_bad_backend_and_cell(lstm, x):
    with pytest.raises(ValueError, match="unknown backend"):
        fl.dynamic_rnn(lstm, x, backend="fast")
    with pytest.raises(ValueError, match="must be a fastlstm cell"):
        fl.dynamic_rnn("lstm", x)


def test_output_gradients_past_a_sequence_end_are_not_read(lstm, x):
    lengths = np.array([T, 2, 0])
    out, _, cache = fl.dynamic_rnn(lstm, x, lengths, return_cache=True)
    d_out = np.ones_like(out)
    d_out[1, 2:] = 0
    d_out[2] = 0
    expected = fl.dynamic_rnn_backward(lstm, cache, d_out)
    d_out[1, 2:] = np.nan
    d_out[2] = np.inf
    got = fl.dynamic_rnn_backward(lstm, cache, d_out)
    for key, value in expected.items():
        if key != "initial_state":
            np.testing.assert_array_equal(got[key], value)


def test_bad_backward_arguments(lstm, x):
    out, state, cache = fl.dynamic_rnn(lstm, x, return_cache=True)
    with pytest.raises(ValueError, match="outputs' shape"):
        fl.dynamic_rnn_backward(lstm, cache, np.zeros((T, B, H)))
    with pytest.raises(ValueError, match="d_outputs contains NaN"):
        fl.dynamic_rnn_backward(lstm, cache, np.full_like(out, np.nan))
    for bad in (np.nan, np.inf):                 # one value at a step that exists
        d_out = np.zeros_like(out)
        d_out[1, T - 1, 2] = bad
        with pytest.raises(ValueError, match="d_outputs contains NaN or inf"):
            fl.dynamic_rnn_backward(lstm, cache, d_out)
    with pytest.raises(ValueError, match="d_state.h must have shape"):
        fl.dynamic_rnn_backward(lstm, cache, out, fl.LSTMStateTuple(state.c, state.h[:1]))
    with pytest.raises(ValueError, match="cache must come from dynamic_rnn"):
        fl.dynamic_rnn_backward(lstm, {"x": x}, out)
    other = make_cell("lstm", H + 1, I)
    with pytest.raises(ValueError, match="does not match the cell of the forward pass"):
        fl.dynamic_rnn_backward(other, cache, out)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_units=0), "num_units must be a positive integer"),
    (dict(num_units=2.5), "num_units must be a positive integer"),
    (dict(input_size=-1), "input_size must be a positive integer"),
    (dict(dtype=np.int32), "dtype must be float32 or float64"),
    (dict(dtype="float16"), "dtype must be float32 or float64"),
    (dict(cell_clip=0), "cell_clip must be None or a positive"),
    (dict(cell_clip=np.inf), "cell_clip must be None or a positive"),
    (dict(forget_bias=np.nan), "forget_bias must be a finite number"),
    (dict(use_peepholes="yes"), "use_peepholes must be a bool"),
    (dict(random_state="seed"), "random_state must be"),
])
def test_bad_cell_arguments(kwargs, match):
    args = dict(num_units=3, input_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fl.LSTMCell(**args)


def test_load_params_is_all_or_nothing(lstm):
    before = {k: v.copy() for k, v in lstm.params.items()}
    bad = dict(lstm.params)
    bad["kernel"] = np.ones_like(bad["kernel"])
    bad["bias"] = np.ones(3)                      # wrong shape: nothing may change
    with pytest.raises(ValueError, match="param 'bias' must have shape"):
        lstm.load_params(bad)
    for k, v in before.items():
        np.testing.assert_array_equal(lstm.params[k], v)
    with pytest.raises(ValueError, match="must have the keys"):
        lstm.load_params({"kernel": bad["kernel"]})


@pytest.mark.parametrize("lengths, match", [
    (np.array([1, 2**64 - 1, 2], np.uint64), r"must not exceed.*got max 18446744073709551615"),
    (np.array([1, 2**63 - 1, 2], np.int64), r"must not exceed.*got max 9223372036854775807"),
    (np.array([1, 1e30, 2]), "must not exceed"),
])
def test_out_of_range_lengths_are_named(lstm, x, lengths, match):
    """Range-checked before the cast to int64 (uint64 2**64 - 1 used to wrap to -1)."""
    with pytest.raises(ValueError, match=match):
        fl.dynamic_rnn(lstm, x, sequence_length=lengths)


@pytest.mark.parametrize("backend", fl.available_backends())
@pytest.mark.parametrize("cell_name", ["rnn", "lstm", "peephole_clip"])
@pytest.mark.parametrize("B, I, H", [(1, 32, 64), (64, 28, 128), (3, 2, 5)])
def test_zero_time_steps_give_the_initial_state_on_every_backend(backend, cell_name, B, I, H):
    """0 steps: empty outputs, the initial state back, its gradient passed straight
    through, on every backend and path (the fused inference raised IndexError)."""
    cell = make_cell(cell_name, H, I, dtype=np.float32)
    rng = np.random.RandomState(0)
    h0 = rng.randn(B, H).astype(np.float32)
    state = fl.LSTMStateTuple(rng.randn(B, H).astype(np.float32), h0) \
        if cell.state_is_tuple else h0
    for time_major in (False, True):
        shape = (0, B, I) if time_major else (B, 0, I)
        for lengths in (None, np.zeros(B, int)):
            out, final = fl.dynamic_rnn(cell, np.zeros(shape, np.float32), lengths, state,
                                        time_major=time_major, backend=backend)
            assert out.shape == ((0, B, H) if time_major else (B, 0, H))
            for got, want in zip(np.atleast_1d(final) if not cell.state_is_tuple else final,
                                 np.atleast_1d(state) if not cell.state_is_tuple else state):
                np.testing.assert_array_equal(got, want)
    out, final, cache = fl.dynamic_rnn(cell, np.zeros((B, 0, I), np.float32), None, state,
                                       backend=backend, return_cache=True)
    d_state = state
    grads = fl.dynamic_rnn_backward(cell, cache, np.zeros((B, 0, H), np.float32), d_state)
    assert grads["inputs"].shape == (B, 0, I)
    for name, g in cell.params.items():
        np.testing.assert_array_equal(grads[name], np.zeros_like(g))
    if cell.state_is_tuple:
        np.testing.assert_array_equal(grads["initial_state"].c, state.c)
        np.testing.assert_array_equal(grads["initial_state"].h, state.h)
    else:
        np.testing.assert_array_equal(grads["initial_state"], state)
