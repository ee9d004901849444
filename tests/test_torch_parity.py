"""Independent oracle: torch.nn.LSTM / torch.nn.RNN with autograd, in float64, via interop."""

import numpy as np
import pytest

import fastlstm as fl
from fastlstm import _layout
from _helpers import loss_weights, make_case, make_cell, require

BACKENDS = ["numpy", "cython", "numba"]
TOL = dict(rtol=1e-10, atol=1e-10)


def torch_reference(module, x, lengths, state, R, S, kind):
    """Per-sequence torch forward + autograd (each sequence cut to its own length)."""
    torch = require("torch")
    B, T, _ = x.shape
    H = module.hidden_size
    outputs = np.zeros((B, T, H))
    finals = {"c": np.zeros((B, H)), "h": np.zeros((B, H))}
    grads_in = np.zeros_like(x)
    grads_state = {"c": np.zeros((B, H)), "h": np.zeros((B, H))}
    module.zero_grad()
    for b in range(B):
        L = int(lengths[b])
        h0 = torch.tensor(state.h[b] if kind == "lstm" else state[b])[None, None].requires_grad_()
        c0 = torch.tensor(state.c[b])[None, None].requires_grad_() if kind == "lstm" else None
        xb = torch.tensor(x[b, :L])[:, None].requires_grad_()       # time-major (L, 1, I)
        if L == 0:                                  # torch refuses empty sequences
            finals["h"][b] = h0.detach().numpy()[0, 0]
            grads_state["h"][b] = (S.h[b] if kind == "lstm" else S[b])
            if kind == "lstm":
                finals["c"][b] = c0.detach().numpy()[0, 0]
                grads_state["c"][b] = S.c[b]
            continue
        if kind == "lstm":
            out, (hn, cn) = module(xb, (h0, c0))
            loss = ((out[:, 0] * torch.tensor(R[b, :L])).sum()
                    + (cn[0, 0] * torch.tensor(S.c[b])).sum()
                    + (hn[0, 0] * torch.tensor(S.h[b])).sum())
        else:
            out, hn = module(xb, h0)
            loss = ((out[:, 0] * torch.tensor(R[b, :L])).sum()
                    + (hn[0, 0] * torch.tensor(S[b])).sum())
        loss.backward()
        outputs[b, :L] = out.detach().numpy()[:, 0]
        finals["h"][b] = hn.detach().numpy()[0, 0]
        grads_in[b, :L] = xb.grad.numpy()[:, 0]
        grads_state["h"][b] = h0.grad.numpy()[0, 0]
        if kind == "lstm":
            finals["c"][b] = cn.detach().numpy()[0, 0]
            grads_state["c"][b] = c0.grad.numpy()[0, 0]
    weights = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    return outputs, finals, grads_in, grads_state, weights


def torch_weight_grads_in_fastlstm_layout(weights, kind):
    """torch's weight gradients mapped to fastlstm's names, transposition and gate order."""
    grads = {"kernel": weights["weight_ih_l0"].T, "recurrent_kernel": weights["weight_hh_l0"].T,
             "bias": weights["bias_ih_l0"]}       # d b_ih = d b_hh = d (their sum)
    if kind == "lstm":
        grads = {k: _layout.permute_gates(v, _layout.TORCH_LSTM_GATES, _layout.LSTM_GATES)
                 for k, v in grads.items()}
    return grads


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_forward_and_gradients_equal_torch(kind, backend, time_major):
    torch = require("torch")
    torch.manual_seed(0)
    B, T, I, H = 5, 6, 4, 3
    module = (torch.nn.LSTM(I, H) if kind == "lstm" else torch.nn.RNN(I, H)).double()
    with torch.no_grad():                         # make the two biases differ
        module.bias_hh_l0.uniform_(-0.5, 0.5)
    cell = fl.interop.from_torch(module)
    assert cell.dtype == np.float64 and cell.forget_bias == 0.0
    x, lengths, state = make_case(cell, B, T, seed=3, lengths=[6, 0, 3, 1, 6])
    R, S = loss_weights(cell, B, T, seed=3)
    ref_out, ref_final, ref_dx, ref_dstate, ref_w = torch_reference(module, x, lengths, state,
                                                                    R, S, kind)
    args = (x.transpose(1, 0, 2).copy(), R.transpose(1, 0, 2).copy()) if time_major else (x, R)
    out, st, cache = fl.dynamic_rnn(cell, args[0], lengths, state, time_major, backend, True)
    grads = fl.dynamic_rnn_backward(cell, cache, args[1], S)
    if time_major:
        out = out.transpose(1, 0, 2)
        grads["inputs"] = grads["inputs"].transpose(1, 0, 2)
    np.testing.assert_allclose(out, ref_out, **TOL)
    np.testing.assert_allclose(grads["inputs"], ref_dx, **TOL)
    if kind == "lstm":
        np.testing.assert_allclose(st.c, ref_final["c"], **TOL)
        np.testing.assert_allclose(st.h, ref_final["h"], **TOL)
        np.testing.assert_allclose(grads["initial_state"].c, ref_dstate["c"], **TOL)
        np.testing.assert_allclose(grads["initial_state"].h, ref_dstate["h"], **TOL)
    else:
        np.testing.assert_allclose(st, ref_final["h"], **TOL)
        np.testing.assert_allclose(grads["initial_state"], ref_dstate["h"], **TOL)
    for name, g in torch_weight_grads_in_fastlstm_layout(ref_w, kind).items():
        np.testing.assert_allclose(grads[name], g, err_msg=name, **TOL)


def test_forget_bias_folds_into_torch_bias():
    torch = require("torch")
    cell = make_cell("lstm", 4, 3, seed=2)          # forget_bias=1.0, float64
    x, lengths, state = make_case(cell, 3, 5, seed=1, lengths=[5, 5, 5])
    out, st = fl.dynamic_rnn(cell, x, initial_state=state)
    module = fl.interop.to_torch(cell, batch_first=False)
    with torch.no_grad():
        t_out, (hn, cn) = module(torch.tensor(x.transpose(1, 0, 2)),
                                 (torch.tensor(state.h[None]), torch.tensor(state.c[None])))
    np.testing.assert_allclose(t_out.numpy().transpose(1, 0, 2), out, **TOL)
    np.testing.assert_allclose(cn.numpy()[0], st.c, **TOL)
