"""Cells: parameter layout, initialisation, zero state, dtypes."""

import numpy as np
import pytest

import fastlstm as fl
from fastlstm import _layout


def test_lstm_param_shapes_and_init():
    cell = fl.LSTMCell(6, 4, use_peepholes=True, random_state=0)
    assert {k: v.shape for k, v in cell.params.items()} == {
        "kernel": (4, 24), "recurrent_kernel": (6, 24), "bias": (24,),
        "w_i_diag": (6,), "w_f_diag": (6,), "w_o_diag": (6,)}
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in cell.params.values())
    assert not cell.params["bias"].any()
    limit = np.sqrt(6 / (4 + 24))
    assert np.abs(cell.params["kernel"]).max() <= limit
    W = cell.params["recurrent_kernel"].astype(np.float64)
    np.testing.assert_allclose(W @ W.T, np.eye(6), atol=1e-5)   # orthonormal rows


def test_rnn_cell_and_states():
    cell = fl.BasicRNNCell(3, 2, dtype=np.float64)
    assert cell.params["kernel"].shape == (2, 3)
    z = cell.zero_state(4)
    assert isinstance(z, np.ndarray) and z.shape == (4, 3) and z.dtype == np.float64
    s = fl.BasicLSTMCell(3, 2).zero_state(2)
    assert isinstance(s, fl.LSTMStateTuple) and s.c.shape == (2, 3) and not s.h.any()


def test_random_state_reproducible():
    a = fl.BasicLSTMCell(5, 3, random_state=7).params
    b = fl.BasicLSTMCell(5, 3, random_state=7).params
    c = fl.BasicLSTMCell(5, 3, random_state=8).params
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["kernel"], c["kernel"])


def test_basic_lstm_equals_lstm_cell_without_options():
    a = fl.BasicLSTMCell(4, 3, forget_bias=0.3, random_state=1)
    b = fl.LSTMCell(4, 3, forget_bias=0.3, random_state=1)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_array_equal(fl.dynamic_rnn(a, x)[0], fl.dynamic_rnn(b, x)[0])


def test_forget_bias_is_added_at_every_step():
    # A cell whose only non-zero weight is forget_bias: c_t = sigmoid(fb) * c_{t-1}.
    cell = fl.BasicLSTMCell(1, 1, forget_bias=2.0, dtype=np.float64)
    cell.load_params({k: np.zeros_like(v) for k, v in cell.params.items()})
    _, st = fl.dynamic_rnn(cell, np.zeros((1, 3, 1)),
                           initial_state=fl.LSTMStateTuple([[1.0]], [[0.0]]))
    np.testing.assert_allclose(st.c, [[(1 / (1 + np.exp(-2.0))) ** 3]], rtol=1e-14)


def test_permute_gates_round_trip():
    a = np.arange(8.0)
    b = _layout.permute_gates(a, _layout.LSTM_GATES, _layout.TORCH_LSTM_GATES)
    np.testing.assert_array_equal(b, [0, 1, 4, 5, 2, 3, 6, 7])
    np.testing.assert_array_equal(
        _layout.permute_gates(b, _layout.TORCH_LSTM_GATES, _layout.LSTM_GATES), a)


def test_dynamic_rnn_semantics_past_the_end():
    cell = fl.BasicLSTMCell(3, 2, dtype=np.float64, random_state=0)
    x = np.random.default_rng(1).standard_normal((2, 5, 2))
    out, st = fl.dynamic_rnn(cell, x, sequence_length=[2, 5])
    out2, st2 = fl.dynamic_rnn(cell, x[:1, :2])
    assert np.all(out[0, 2:] == 0)
    np.testing.assert_array_equal(out[0, :2], out2[0])
    np.testing.assert_array_equal(st.h[0], st2.h[0])
    np.testing.assert_array_equal(st.h[0], out[0, 1])      # the last valid output


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_cell_dtype(dtype):
    cell = fl.LSTMCell(3, 2, dtype=dtype)
    out, st = fl.dynamic_rnn(cell, np.zeros((1, 2, 2), np.float64))
    assert out.dtype == dtype and st.c.dtype == dtype
