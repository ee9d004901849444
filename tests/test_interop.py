"""Round trips through the peers' layouts return the same arrays."""

import numpy as np
import pytest

import fastlstm as fl
from fastlstm.interop import from_keras, from_tf1, from_torch, to_keras, to_tf1, to_torch
from _helpers import make_cell, require


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_torch_fastlstm_torch_round_trip(kind):
    torch = require("torch")
    torch.manual_seed(1)
    module = torch.nn.LSTM(3, 4) if kind == "lstm" else torch.nn.RNN(3, 4)
    back = to_torch(from_torch(module), batch_first=False)
    a, b = module.state_dict(), back.state_dict()
    for name in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
    # fastlstm keeps one bias: torch's two come back as their sum in bias_ih (exactly
    # the same sum, so the module computes the same function) and a zero bias_hh.
    np.testing.assert_array_equal((a["bias_ih_l0"] + a["bias_hh_l0"]).numpy(),
                                  (b["bias_ih_l0"] + b["bias_hh_l0"]).numpy())
    assert not b["bias_hh_l0"].any()


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_fastlstm_torch_fastlstm_round_trip(name):
    require("torch")
    cell = make_cell(name, 4, 3, dtype=np.float32)
    if name == "lstm":
        cell.forget_bias = 0.0       # torch has no forget_bias; it would fold into the bias
    back = from_torch(to_torch(cell, batch_first=False))
    for k, v in cell.params.items():
        np.testing.assert_array_equal(back.params[k], v)


def test_from_torch_accepts_a_state_dict_and_a_layer():
    torch = require("torch")
    module = torch.nn.LSTM(3, 4, num_layers=2)
    cell = from_torch(module.state_dict(), layer=1)
    assert (cell.input_size, cell.num_units) == (4, 4)
    with pytest.raises(ValueError, match="no layer 2"):
        from_torch(module, layer=2)


def test_torch_refuses_peepholes():
    require("torch")
    with pytest.raises(ValueError, match="peepholes"):
        to_torch(make_cell("peephole", 3, 2), batch_first=True)


def test_to_torch_makes_the_layout_explicit():
    """Batch-major input to a time-major module ran silently wrong: the layout is a
    choice now (omitted: time-major, with a FutureWarning)."""
    torch = require("torch")
    cell = make_cell("lstm", 4, 3, dtype=np.float32)
    x = np.random.RandomState(0).randn(5, 7, 3).astype(np.float32)      # (B, T, I)
    out, _ = fl.dynamic_rnn(cell, x)
    module = to_torch(cell, batch_first=True)
    assert module.batch_first
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x))[0].numpy(), out,
                                   rtol=1e-5, atol=1e-6)
    with pytest.warns(FutureWarning, match="batch_first"):
        assert not to_torch(cell).batch_first


def test_from_torch_takes_either_direction_and_never_drops_one_silently():
    torch = require("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, bidirectional=True, batch_first=True).double()
    with pytest.raises(ValueError, match="bidirectional: pass direction"):
        from_torch(module)
    fw = from_torch(module, direction="forward")
    bw = from_torch(module.state_dict(), direction="backward")
    fw.forget_bias = bw.forget_bias = 0.0
    x = np.random.RandomState(0).randn(2, 6, 3)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))[0].numpy()
    out_fw, _ = fl.dynamic_rnn(fw, x)
    out_bw, _ = fl.dynamic_rnn(bw, x[:, ::-1])
    np.testing.assert_allclose(out_fw, ref[:, :, :4], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out_bw[:, ::-1], ref[:, :, 4:], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="not bidirectional"):
        from_torch(torch.nn.LSTM(3, 4), direction="backward")


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_keras_round_trips(name):
    rng = np.random.default_rng(0)
    G = 4 if name == "lstm" else 1
    weights = [rng.standard_normal((3, G * 5)).astype(np.float32),
               rng.standard_normal((5, G * 5)).astype(np.float32),
               rng.standard_normal(G * 5).astype(np.float32)]
    cell = from_keras(weights)
    assert cell.kind == name and cell.dtype == np.float32
    for a, b in zip(to_keras(cell), weights):
        np.testing.assert_array_equal(a, b)
    again = from_keras(to_keras(cell))
    for k in cell.params:
        np.testing.assert_array_equal(again.params[k], cell.params[k])


def test_keras_gate_order_is_i_f_c_o():
    H = 2
    bias = np.repeat(np.arange(4.0), H)             # Keras blocks i=0, f=1, c=2, o=3
    cell = from_keras([np.zeros((1, 4 * H)), np.zeros((H, 4 * H)), bias])
    # fastlstm order (i, j, f, o) with j = Keras's c
    np.testing.assert_array_equal(cell.params["bias"], np.repeat([0.0, 2.0, 1.0, 3.0], H))


@pytest.mark.parametrize("peepholes", [False, True])
def test_tf1_round_trip(peepholes):
    rng = np.random.default_rng(2)
    I, H = 3, 4
    kernel = rng.standard_normal((I + H, 4 * H))
    bias = rng.standard_normal(4 * H)
    diags = {k: rng.standard_normal(H) for k in ("w_i_diag", "w_f_diag", "w_o_diag")}
    cell = from_tf1(kernel, bias, forget_bias=0.7, cell_clip=2.0,
                    **(diags if peepholes else {}))
    assert cell.use_peepholes == peepholes and cell.cell_clip == 2.0
    assert cell.forget_bias == 0.7 and cell.dtype == np.float64
    out = to_tf1(cell)
    np.testing.assert_array_equal(out["kernel"], kernel)
    np.testing.assert_array_equal(out["bias"], bias)
    for k, v in (diags.items() if peepholes else []):
        np.testing.assert_array_equal(out[k], v)
    assert peepholes or "w_i_diag" not in out


def test_tf1_rnn_and_dtype():
    kernel = np.ones((5, 2), np.float32)
    cell = from_tf1(kernel, np.zeros(2, np.float32), cell="rnn", dtype=np.float64)
    assert cell.kind == "rnn" and cell.dtype == np.float64 and cell.input_size == 3


def test_tf1_matches_the_equations_by_hand():
    # One step of TF1's LSTMCell(use_peepholes=True, cell_clip) written out for a 1-unit cell.
    kernel = np.array([[0.5, -0.3, 0.2, 0.7], [0.1, 0.4, -0.6, 0.3]])   # [x; h] x (i,j,f,o)
    bias = np.array([0.1, -0.2, 0.3, 0.0])
    w = dict(w_i_diag=np.array([0.3]), w_f_diag=np.array([-0.2]), w_o_diag=np.array([0.5]))
    cell = from_tf1(kernel, bias, forget_bias=1.0, cell_clip=0.9, **w)
    x, h, c = 0.8, 0.2, 0.6
    sig = lambda v: 1 / (1 + np.exp(-v))
    z = np.array([x, h]) @ kernel + bias
    c_new = sig(z[2] + 1.0 + w["w_f_diag"][0] * c) * c + sig(z[0] + w["w_i_diag"][0] * c) * np.tanh(z[1])
    c_new = np.clip(c_new, -0.9, 0.9)
    h_new = sig(z[3] + w["w_o_diag"][0] * c_new) * np.tanh(c_new)
    out, st = fl.dynamic_rnn(cell, [[[x]]], initial_state=fl.LSTMStateTuple([[c]], [[h]]))
    np.testing.assert_allclose(st.c, [[c_new]], rtol=1e-14)
    np.testing.assert_allclose(out[0, 0], [h_new], rtol=1e-14)


def test_tf1_bad_arguments():
    with pytest.raises(ValueError, match="all three peephole"):
        from_tf1(np.ones((5, 8)), np.ones(8), w_i_diag=np.ones(2))
    with pytest.raises(ValueError, match="cell must be"):
        from_tf1(np.ones((5, 8)), np.ones(8), cell="lru")
    with pytest.raises(ValueError, match="does not split"):
        from_tf1(np.ones((5, 7)), np.ones(7))
